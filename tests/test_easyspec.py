"""EasySpec: the fuzzy forward (exact at group size 1, approximate but finite above), greedy identity through a Session
with and without bonus calibration, the calibrated cache equal to an exact forward, the latency model, layer timing,
and option errors."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import DynamicCache

from core.errors import DraftScopeError
from core.runtime.cached_lm import CachedLM
from core.runtime.layers import embed, head
from core.specdec import Session, SessionConfig
from core.specdec.drafters.base import DraftContext
from core.specdec.drafters.easyspec import EasySpecDrafter, fuzzy_layers, layer_groups, modelled_latency
from core.specdec.sampling import SamplingConfig
from core.specdec.verify import build_verifier
from tests.helpers import hf_greedy, perturbed

PROMPT = "The quick brown fox jumps over the lazy dog and then the quick brown fox"
N_NEW = 30


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def noisy(tiny_llama):
    return perturbed(tiny_llama, 0.05)


@pytest.fixture(scope="module")
def reference(tiny_llama):
    ids = tiny_llama.encode(PROMPT)
    return ids, hf_greedy(tiny_llama, ids, N_NEW)


def _fuzzy_logits(drafter: EasySpecDrafter, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(fuzzy, exact) logits (n, V) of the drafter network over ``ids`` from an empty cache."""
    net = drafter.net
    with torch.inference_mode():
        cache = DynamicCache(config=net.config)
        fuzzy = head(net, fuzzy_layers(net, embed(net, ids), drafter.groups, cache, 0))
        exact = net(torch.tensor([ids])).logits[0].float()
    return fuzzy, exact


def test_layer_groups():
    assert layer_groups(4, 2) == [(0, 0), (1, 2), (3, 3)]
    assert layer_groups(24, 4) == [(0, 0), (1, 4), (5, 8), (9, 12), (13, 16), (17, 20), (21, 22), (23, 23)]
    assert layer_groups(3, 4) == [(0, 0), (1, 1), (2, 2)]
    assert layer_groups(2, 4) == [(0, 0), (1, 1)] and layer_groups(1, 4) == [(0, 0)]
    assert layer_groups(6, 1) == [(i, i) for i in range(6)]


def test_group_size_one_is_the_exact_forward(tiny_llama, noisy):
    ids = tiny_llama.encode(PROMPT)
    drafter = EasySpecDrafter(tiny_llama, base="model", draft_model=noisy, group_size=1)
    fuzzy, exact = _fuzzy_logits(drafter, ids)
    torch.testing.assert_close(fuzzy, exact, atol=1e-4, rtol=0)


def test_group_size_two_is_fuzzy_but_finite(tiny_llama, noisy):
    ids = tiny_llama.encode(PROMPT)
    drafter = EasySpecDrafter(tiny_llama, base="model", draft_model=noisy, group_size=2)
    assert drafter.groups == [(0, 0), (1, 2), (3, 3)]
    fuzzy, exact = _fuzzy_logits(drafter, ids)
    assert torch.isfinite(fuzzy).all()
    cosine = torch.cosine_similarity(fuzzy.flatten(), exact.flatten(), dim=0)
    assert cosine < 1 - 1e-6, float(cosine)


@pytest.mark.parametrize("base", ["model", "early-exit"])
@pytest.mark.parametrize("calibrate", [True, False])
def test_greedy_identity(tiny_llama, noisy, reference, base, calibrate):
    ids, expected = reference
    options = {"draft_model": noisy} if base == "model" else {"exit_layer": 3}
    drafter = EasySpecDrafter(tiny_llama, base=base, group_size=2, calibrate=calibrate, measure=True, **options)
    config = SessionConfig(target=tiny_llama.name, drafter="easyspec", gamma=4, max_new_tokens=N_NEW,
                           record=base == "model")
    session = Session(tiny_llama, drafter, build_verifier("greedy"), ids, config)
    for _ in session.run():
        pass
    assert session.generated_ids == expected[: len(session.generated_ids)]
    assert len(session.generated_ids) == N_NEW and session.stats.drafted > 0
    if base == "model":  # the facts EasySpec adds to each record
        info = session.records[1].draft_info
        assert info["group_size"] == 2 and info["calibrate"] is calibrate and info["groups"] == [[0, 0], [1, 2], [3, 3]]
        assert info["fuzzy_forwards"] == 3 and 0.0 < info["cosine"] < 1.0 and info["cosine_draft"] == 1


@pytest.mark.parametrize("calibrate", [True, False])
def test_calibrated_cache_is_exact(tiny_llama, noisy, calibrate):
    ids = tiny_llama.encode(PROMPT)
    drafter = EasySpecDrafter(tiny_llama, base="model", draft_model=noisy, group_size=2, calibrate=calibrate)
    drafter.prefill(ids)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):  # accept two drafts and add a bonus token, three rounds in a row
        draft = drafter.propose(DraftContext(ids, 4, SamplingConfig(), gen))
        assert len(draft.tokens) == 4 and drafter.cache_len == len(ids) + 3  # three fuzzy feeds
        ids = ids + draft.tokens[:2] + [(draft.tokens[2] + 1) % tiny_llama.vocab_size]
        drafter.observe(ids, 2)
    exact_kv = CachedLM(drafter.net)
    exact_V = exact_kv.forward(ids)[-1]
    if calibrate:
        assert drafter.kv.ids == ids and drafter.exact_len == len(ids)
        torch.testing.assert_close(drafter._next, exact_V, atol=1e-4, rtol=0)
        for mine, ref in zip(drafter.kv.cache.layers, exact_kv.cache.layers):
            torch.testing.assert_close(mine.keys, ref.keys, atol=1e-4, rtol=0)
            torch.testing.assert_close(mine.values, ref.values, atol=1e-4, rtol=0)
    else:  # the accepted drafts keep their fuzzy entries: the deep layers differ from an exact cache
        assert drafter.kv.ids == ids[:-1] and drafter._next is None
        assert not torch.allclose(drafter.kv.cache.layers[2].keys, exact_kv.cache.layers[2].keys[..., :-1, :],
                                  atol=1e-4)
        torch.testing.assert_close(drafter.kv.cache.layers[0].keys, exact_kv.cache.layers[0].keys[..., :-1, :],
                                   atol=1e-4, rtol=0)  # layer 0 is exact and reads only the embeddings


def test_modelled_latency_arithmetic():
    times = {"attention_ms": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "mlp_ms": [1.0] * 6, "head_ms": 0.5}
    # groups for 6 layers, group size 4: [0] [1..4] [5]
    one = modelled_latency(times, group_size=4, devices=1)
    assert one["sequential_ms"] == pytest.approx(21 + 6 + 0.5) and one["parallel_ms"] == pytest.approx(27.5)
    four = modelled_latency(times, group_size=4, devices=4)
    assert four["groups"] == [[0, 0], [1, 4], [5, 5]]
    assert four["parallel_ms"] == pytest.approx(0.5 + (1 + 1) + (5 + 4) + (6 + 1))  # max(2, 3, 4, 5) + 4 MLPs
    assert four["speedup"] == pytest.approx(27.5 / 18.5)
    two = modelled_latency(times, group_size=4, devices=2, sync_ms=0.25)
    assert two["parallel_ms"] == pytest.approx(0.5 + 2 + (3 + 5 + 4 + 0.25) + 7)  # waves max(2, 3), max(4, 5)
    exact = modelled_latency(times, group_size=1, devices=8)
    assert exact["parallel_ms"] == pytest.approx(exact["sequential_ms"])
    with pytest.raises(DraftScopeError):
        modelled_latency(times, group_size=4, devices=0)


def test_layer_times_positive(tiny_llama):
    drafter = EasySpecDrafter(tiny_llama, base="early-exit", exit_layer=3)
    times = drafter.layer_times(n_tokens=1, repeats=3, context=16)
    assert len(times["attention_ms"]) == len(times["mlp_ms"]) == 3
    assert all(t > 0 and math.isfinite(t) for t in times["attention_ms"] + times["mlp_ms"] + [times["head_ms"]])
    assert modelled_latency(times, 4, 4)["parallel_ms"] > 0


def test_option_errors(tiny_llama):
    for bad in (0, 17, -1):
        with pytest.raises(DraftScopeError, match="group size"):
            EasySpecDrafter(tiny_llama, group_size=bad)
    with pytest.raises(DraftScopeError, match="base"):
        EasySpecDrafter(tiny_llama, base="ngram")
    with pytest.raises(DraftScopeError, match="draft model"):
        EasySpecDrafter(tiny_llama, base="model")
    with pytest.raises(DraftScopeError, match="exit layer"):
        EasySpecDrafter(tiny_llama, exit_layer=4)
