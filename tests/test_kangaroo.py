"""Kangaroo: the shared cache (deep-layers-only verification equals a full forward), greedy identity, the second early
exit, adapter files, and a tiny run of the training script (the sampled law: tests/test_sampled_law.py)."""

from __future__ import annotations

import pytest
import torch

from core.errors import DraftScopeError
from core.runtime.cached_lm import CachedLM
from core.specdec import Session, SessionConfig
from core.specdec.drafters.base import DraftContext
from core.specdec.drafters.kangaroo import KangarooDrafter, default_adapter_path
from core.specdec.drafters.kangaroo_adapter import KangarooAdapter
from core.specdec.drafters.none import NoDrafter
from core.specdec.sampling import SamplingConfig
from core.specdec.verify import build_verifier
from tests.helpers import assert_follows_target, greedy_acceptance, hf_greedy, sampled_law, vocab6_model

PROMPT = "The quick brown fox jumps over the lazy dog and then the quick brown fox"


def _noisy_adapter(target, ell, scale=0.3, seed=0):
    """An adapter initialised from the target and perturbed: it drafts, and disagrees with the target in part."""
    adapter = KangarooAdapter.from_target(target.model, ell)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.attn.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.std())
    return adapter


def _prefilled(target, eta):
    """A Kangaroo drafter (noisy adapter at layer 2) and the target's cache, both prefilled on PROMPT."""
    ids = target.encode(PROMPT)
    drafter = KangarooDrafter(target, adapter=_noisy_adapter(target, 2), eta=eta)
    kv = CachedLM(target.model)
    kv.forward(ids[:-1])
    drafter.prefill(ids)
    return ids, drafter, kv


def test_shared_cache_verification_equals_full_forward(tiny_llama):
    ids, drafter, kv = _prefilled(tiny_llama, eta=0.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):  # several rounds: the caches stay aligned after partial acceptance
        ctx = DraftContext(ids, 4, SamplingConfig(), gen, kv)
        draft = drafter.propose(ctx)
        assert len(draft.tokens) == 4
        logits = drafter.verify_forward(kv, ids, draft.tokens)
        with torch.inference_mode():
            full = tiny_llama.model(torch.tensor([ids + draft.tokens])).logits[0, -5:].float()
        torch.testing.assert_close(logits, full, atol=1e-4, rtol=0)
        ids = ids + draft.tokens[:2] + [int(full[2].argmax())]  # accept two, then the target's token
        kv.rollback(len(ids) - 1)
        drafter.observe(ids, 2)
        assert drafter.adapter_len == len(ids) - 1 == len(kv)


@pytest.mark.parametrize("gamma, eta", [(1, 0.0), (4, 0.0), (6, 0.6), (6, 0.05)])
def test_greedy_identity_tiny(tiny_llama, gamma, eta):
    ids = tiny_llama.encode(PROMPT)
    drafter = KangarooDrafter(tiny_llama, adapter=_noisy_adapter(tiny_llama, 2, scale=0.1), eta=eta)
    config = SessionConfig(target=tiny_llama.name, drafter="kangaroo", gamma=gamma, max_new_tokens=40)
    session = Session(tiny_llama, drafter, build_verifier("greedy"), ids, config)
    for _ in session.run():
        pass
    assert session.generated_ids == hf_greedy(tiny_llama, ids, 40)[: len(session.generated_ids)]
    assert len(session.generated_ids) == 40
    if eta == 0.0:
        assert session.stats.drafted > 0 and session.stats.accepted > 0


def test_second_early_exit_stops_unconfident_drafts(tiny_llama):
    ids, drafter, kv = _prefilled(tiny_llama, eta=0.999)
    draft = drafter.propose(DraftContext(ids, 6, SamplingConfig(), torch.Generator(), kv))
    confidences = drafter.last_confidences
    assert len(draft.tokens) < 6 and confidences[len(draft.tokens)] < 0.999
    assert all(c >= 0.999 for c in confidences[: len(draft.tokens)])


def test_shipped_adapter_greedy_identity_and_acceptance(smollm2):
    """The shipped adapter is lossless and its training shows: at η = 0 and γ = 1 (one draft every round) its draft
    is accepted far more often than that of the same adapter before training (initialised from layer ℓ)."""
    path = default_adapter_path("smollm2-135m")
    if not path.is_file():
        pytest.fail(f"the trained adapter must ship in {path}")
    trained = KangarooDrafter(smollm2)
    assert trained.exit_layer == trained.meta["exit_layer"] and trained.cost < 0.5
    untrained_adapter = KangarooAdapter.from_target(smollm2.model, trained.exit_layer)
    alphas = {}
    for name, drafter in (("trained", KangarooDrafter(smollm2, eta=0.0)),
                          ("untrained", KangarooDrafter(smollm2, adapter=untrained_adapter, eta=0.0))):
        alphas[name] = greedy_acceptance(smollm2, drafter, 32)
    assert alphas["trained"] > max(0.1, 5 * alphas["untrained"]), alphas  # measured 0.21 vs 0.016


def test_sampled_output_follows_the_target():
    """Kangaroo under the sampling rule (1200 seeds, γ = 3, T = 1, η = 0): the first two tokens agree with plain
    sampling and follow the target's exact law (TV < 0.07), with the drafter both accepted and rejected."""
    target = vocab6_model(0, layers=2)
    drafter = KangarooDrafter(target, adapter=_noisy_adapter(target, 1, scale=0.5), eta=0.0)
    settings = dict(temperature=1.0, gamma=3, max_new_tokens=4)
    law = sampled_law(target, drafter, "sampling", [1, 4, 2], 1200, **settings)
    plain = sampled_law(target, NoDrafter(target), "sampling", [1, 4, 2], 1200, **settings)
    assert_follows_target(law, 0.07, plain)
    assert 0.05 * law.drafted < law.accepted < 0.95 * law.drafted, (law.drafted, law.accepted)


def test_adapter_file_round_trip_and_errors(tmp_path, tiny_llama, tiny_gemma):
    adapter = _noisy_adapter(tiny_llama, 2)
    path = tmp_path / "a.safetensors"
    adapter.save(path, {"exit_layer": 2, "target": tiny_llama.name})
    loaded, meta = KangarooAdapter.load(path, tiny_llama.model)
    assert meta["exit_layer"] == 2
    for (k, v), (k2, v2) in zip(adapter.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.allclose(v.half().float(), v2.float())
    with pytest.raises(DraftScopeError, match="not found"):
        KangarooDrafter(tiny_llama, adapter=tmp_path / "missing.safetensors")
    with pytest.raises(DraftScopeError, match="does not fit 'tiny-llama' shapes"):  # Gemma's attention differs
        KangarooDrafter(tiny_gemma, adapter=path)
    with pytest.raises(DraftScopeError, match="η"):
        KangarooDrafter(tiny_llama, adapter=path, eta=1.5)


def test_training_script_tiny(tmp_path, tiny_llama, monkeypatch):
    from core.train import kangaroo as train_kangaroo

    monkeypatch.setenv("DRAFTSCOPE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tiny.safetensors"
    meta = train_kangaroo.train("tiny-llama", exit_layer=2, n_prompts=4, max_new_tokens=6, batch=2, epochs=1,
                                out=out)
    assert out.is_file() and meta["sequences"] == 4 and meta["train_tokens"] > 0
    assert set(meta["before"]) == {"top1_agreement", "sum_min_pq_topk", "tokens"}
    drafter = KangarooDrafter(tiny_llama, adapter=out)
    assert drafter.exit_layer == 2
