"""Layer-sliced self-drafters on Gemma 3 (tiny-gemma: layers sliding, full, sliding, full; window 8 positions).

``run_layers`` slice by slice equals one full forward past the window (every layer with the mask and rotary embedding
of its kind), also with the shallow layers ahead of the deep ones on the target's own cache and rollbacks between
rounds (Kangaroo's shared cache); S2D's exits and EasySpec's forward at group size 1 equal plain forwards while their
caches are cut back across the window; Kangaroo, S2D and EasySpec are token-identical to plain greedy over runs that
cross the window five times, with rejected drafts; FastDraft and Falcon build on Gemma; what still refuses says so.

tiny-gemma's random weights repeat one token under greedy decoding, so the logit checks, not the greedy runs, are
what would catch a wrong window or rotary base.
"""

from __future__ import annotations

import random

import pytest
import torch
from transformers import DynamicCache

from core.errors import DraftScopeError
from core.runtime.cached_lm import CachedLM
from core.runtime.layers import embed, head, run_layers
from core.specdec import Session, SessionConfig
from core.specdec.drafters.base import DraftContext
from core.specdec.drafters.easyspec import EasySpecDrafter, fuzzy_layers
from core.specdec.drafters.falcon import FalconNet
from core.specdec.drafters.fastdraft import build_network, load as load_fastdraft, save as save_fastdraft
from core.specdec.drafters.kangaroo import KangarooDrafter
from core.specdec.drafters.kangaroo_adapter import KangarooAdapter
from core.specdec.drafters.sorted import SortedDrafter
from core.specdec.drafters.sorted_exits import SortedExits, default_exit_layers
from core.specdec.sampling import SamplingConfig
from core.specdec.verify import build_verifier
from tests.helpers import hf_greedy, perturbed, vocab6_model

PROMPT = "The quick brown fox jumps over the lazy dog. Then the fox ran into the woods and"  # 19 tokens: past 8
N = 40  # new tokens: the window is crossed five times over


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def noisy_gemma(tiny_gemma):
    return perturbed(tiny_gemma, 0.2)  # a draft model that disagrees with tiny-gemma now and then


@pytest.fixture(scope="module")
def reference(tiny_gemma):
    ids = tiny_gemma.encode(PROMPT)
    return ids, hf_greedy(tiny_gemma, ids, N)


def _plain_logits(model, ids: list[int]) -> torch.Tensor:
    """(len(ids), V) logits of one plain forward."""
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].float()


# ------------------------------------------------------------------------------------------------ run_layers
@pytest.mark.parametrize("record", [False, True], ids=["plain-cache", "recording-cache"])
def test_run_layers_slice_by_slice_equals_a_full_forward(tiny_gemma, record):
    """Chunks of 1..6 tokens through the slices [0, 1), [1, 3), [3, 4) on one cache (its sliding layers keeping the
    window's tail, or recording their past as the target's cache does): the logits of one full forward."""
    model = tiny_gemma.model
    ids = tiny_gemma.encode(PROMPT)
    full = _plain_logits(model, ids)
    cache = DynamicCache(config=model.config)
    if record:
        cache.activate_past_recording()
    out, position = [], 0
    with torch.inference_mode():
        torch.testing.assert_close(head(model, run_layers(model, embed(model, ids), 0, 4, None, 0)), full,
                                   atol=1e-4, rtol=0)  # no cache
        for chunk in (5, 1, 3, 1, 1, 6, 2):
            x = embed(model, ids[position:position + chunk])
            for start, stop in ((0, 1), (1, 3), (3, 4)):
                x = run_layers(model, x, start, stop, cache, position)
            out.append(head(model, x))
            position += chunk
    assert position == len(ids) > 2 * model.config.sliding_window
    torch.testing.assert_close(torch.cat(out), full, atol=1e-4, rtol=0)


def test_shallow_layers_ahead_of_deep_ones_on_the_target_cache(tiny_gemma):
    """Kangaroo's rounds by hand on the target's cache: drafting runs layers [0, 2) token by token, verification
    the deep layers over the round; rounds keep 0..4 of 4 drafts and the rollback trims every layer to its window.
    Every verification's logits equal a full forward, across the window many times."""
    ids = tiny_gemma.encode(PROMPT)
    adapter = KangarooAdapter.from_target(tiny_gemma.model, 2)
    drafter = KangarooDrafter(tiny_gemma, adapter=adapter, eta=0.0)
    kv = CachedLM(tiny_gemma.model)
    kv.forward(ids[:-1])
    drafter.prefill(ids)
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for keep in (2, 0, 4, 1, 3, 2, 4, 0, 1, 3):
            draft = drafter.propose(DraftContext(ids, 4, SamplingConfig(), gen, kv))
            assert len(draft.tokens) == 4
            logits = drafter.verify_forward(kv, ids, draft.tokens)
            full = _plain_logits(tiny_gemma.model, ids + draft.tokens)[-5:]
            torch.testing.assert_close(logits, full, atol=1e-4, rtol=0)
            token = (int(full[keep].argmax()) + 1) % tiny_gemma.vocab_size  # a token the target did not pick
            ids = ids + draft.tokens[:keep] + [token]
            kv.rollback(len(ids) - 1)
            drafter.observe(ids, keep)
            assert drafter.adapter_len == len(ids) - 1 == len(kv)
    assert len(ids) > 4 * tiny_gemma.config.sliding_window


# ------------------------------------------------------------------------------------------------ drafter caches
def _noisy_exits(target, scale=0.05, seed=0) -> SortedExits:
    """Exits with random LoRA factors and translators (the same whatever ran before: LoRA's A draws from the global
    generator)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        exits = SortedExits(target.model, default_exit_layers(target.n_layers))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in exits.named_parameters():
            if "lora_b" in name or "translate" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return exits.merge().eval()


def test_sorted_exits_equal_plain_passes_across_the_window(tiny_gemma):
    """Tokens leave at random exits (deeper layers filled lazily) and rounds are cut back through ``_sync`` (the
    crops and window trims of a real run): every exit's logits equal a from-scratch pass over the kept tokens."""
    exits = _noisy_exits(tiny_gemma)
    drafter = SortedDrafter(tiny_gemma, exits=exits)
    rng = random.Random(0)
    tokens = tiny_gemma.encode(PROMPT)
    feed = drafter._sync(tokens)
    with torch.inference_mode():
        for step in range(30):
            drafter.thresholds = [rng.choice([0.0, 1.0]) for _ in drafter.thresholds]  # 0: leave here, 1: go on
            logits, k, _ = drafter._advance(feed)
            ids = drafter.ids
            x = run_layers(tiny_gemma.model, embed(tiny_gemma.model, ids), 0, exits.exit_layers[k], None, 0,
                           layers=exits.layers)
            reference = tiny_gemma.model.lm_head(exits.norms[k](x[:, -1:]))[0, -1].float()
            torch.testing.assert_close(logits, reference, atol=1e-4, rtol=0)
            draft = rng.randrange(1000, 2000)
            if step % 4 == 3:  # a verification that kept only part of the round, then the target's token
                tokens = ids[: len(ids) - rng.randint(0, 2)] + [rng.randrange(1000)]
                feed = drafter._sync(tokens)
            else:
                feed = [draft]
    assert len(drafter.ids) > 4 * tiny_gemma.config.sliding_window


def test_fuzzy_forward_at_group_size_one_is_exact_across_the_window(tiny_gemma):
    """EasySpec's forward with one-layer groups (Gemma's sublayer norms included) on the drafter's recording cache,
    token by token with rollbacks: the logits of a plain forward; with two-layer groups it is fuzzy."""
    drafter = EasySpecDrafter(tiny_gemma, base="model", draft_model=tiny_gemma, group_size=1)
    net, kv = drafter.net, drafter.kv
    ids = tiny_gemma.encode(PROMPT)[:6]
    kv.reset()
    kv.forward(ids)
    with torch.inference_mode():
        for round_ in range(10):
            for j in range(3):  # three drafts a round, fed one by one
                token = 1000 + 37 * (3 * round_ + j)
                out = fuzzy_layers(net, embed(net, [token]), drafter.groups, kv.cache, len(kv))
                kv.ids.append(token)
                torch.testing.assert_close(head(net, out)[-1], _plain_logits(net, kv.ids)[-1], atol=1e-4, rtol=0)
            kv.rollback(len(kv) - round_ % 3)  # 0..2 of them rejected; the rollback also trims the windows
        fuzzy = fuzzy_layers(net, embed(net, [7]), [(0, 0), (1, 2), (3, 3)], kv.cache, len(kv))
    assert len(kv) > 2 * tiny_gemma.config.sliding_window
    cosine = torch.cosine_similarity(head(net, fuzzy)[-1], _plain_logits(net, kv.ids + [7])[-1], dim=0)
    assert cosine < 1 - 1e-6


def test_layer_times_on_gemma(tiny_gemma):
    """EasySpec's sublayer timing (the self-drafting tab's timeline) runs on a sliding-window model, past the window."""
    drafter = EasySpecDrafter(tiny_gemma, exit_layer=3)
    times = drafter.layer_times(n_tokens=2, repeats=1, context=20)
    assert len(times["attention_ms"]) == len(times["mlp_ms"]) == 3 and times["head_ms"] > 0


# ------------------------------------------------------------------------------------------------ greedy identity
def _kangaroo(target, noisy):
    adapter = KangarooAdapter.from_target(target.model, 2)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in adapter.attn.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1 * p.std())
    return KangarooDrafter(target, adapter=adapter, eta=0.0)


DRAFTERS = {
    "kangaroo": _kangaroo,
    "sorted": lambda target, noisy: SortedDrafter(target, exits=_noisy_exits(target), thresholds="0.002,0.004"),
    "easyspec": lambda target, noisy: EasySpecDrafter(target, base="model", draft_model=noisy, group_size=2),
    "easyspec-nocal": lambda target, noisy: EasySpecDrafter(target, base="model", draft_model=noisy, group_size=2,
                                                            calibrate=False),
}


@pytest.mark.parametrize("name", list(DRAFTERS))
def test_greedy_identity_across_the_window(tiny_gemma, noisy_gemma, reference, name):
    ids, expected = reference
    drafter = DRAFTERS[name](tiny_gemma, noisy_gemma)
    config = SessionConfig(target=tiny_gemma.name, drafter=drafter.name, gamma=4, max_new_tokens=N)
    session = Session(tiny_gemma, drafter, build_verifier("greedy"), ids, config)
    for _ in session.run():
        pass
    assert session.generated_ids == expected
    s = session.stats
    assert 0 < s.accepted < s.drafted, s.summary()  # drafts both accepted and rejected
    if name == "sorted":
        assert len({k for r in session.records for k in r.draft_info.get("exits", [])}) >= 2  # several exits in use


# ------------------------------------------------------------------------------------------------ the others
def test_fastdraft_layers_take_the_kinds_of_the_layers_they_copy(tiny_gemma, tmp_path):
    keep = torch.arange(tiny_gemma.vocab_size)
    net = build_network(tiny_gemma, 2, keep, [1, 2])  # target layers: full, sliding
    assert net.config.layer_types == ["full_attention", "sliding_attention"]
    assert [layer.self_attn.is_sliding for layer in net.model.layers] == [False, True]
    path = save_fastdraft(tmp_path / "fd.safetensors", net, tiny_gemma, {})
    loaded, meta = load_fastdraft(path, tiny_gemma)
    assert meta["layer_types"] == loaded.config.layer_types == net.config.layer_types
    ids = tiny_gemma.encode(PROMPT)
    torch.testing.assert_close(_plain_logits(loaded, ids), _plain_logits(net, ids), atol=5e-2, rtol=0)  # fp16 file


def test_what_refuses_says_why(tiny_gemma):
    with pytest.raises(DraftScopeError, match="Kangaroo adapter not found for 'tiny-gemma' \\(none ships for it\\)"):
        KangarooDrafter(tiny_gemma)
    assert SortedDrafter(tiny_gemma).meta == {"trained": False}  # no exits ship for Gemma: untrained ones
    falcon = FalconNet(tiny_gemma)  # its layer copies the target's last layer, full attention
    assert falcon.layer.self_attn.is_sliding is False
    last_slides = vocab6_model(0, layers=3, window=3)  # sliding, full, sliding
    with pytest.raises(DraftScopeError, match="sliding-window one"):
        FalconNet(last_slides)
