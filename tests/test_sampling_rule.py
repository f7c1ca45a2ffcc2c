"""The sampling rule preserves the target distribution: exact on synthetic p/q, and end to end on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

from conftest import perturbed
from core.specdec.drafters.model import ModelDrafter
from core.specdec.drafters.none import NoDrafter
from core.specdec import Session, SessionConfig
from core.runtime.models import LoadedModel
from core.specdec.sampling import SamplingConfig, warp
from core.specdec.verify.greedy import GreedyVerifier
from core.specdec.verify.sampling import SamplingVerifier, residual


def _random_dist(gen, v, peaky=2.0):
    return torch.softmax(torch.randn(v, generator=gen) * peaky, -1)


def _emitted_first(p_nV, q_nV, draws, n, seed):
    """Empirical law of the first committed token when drafts are drawn from q and verified against p."""
    gen = torch.Generator().manual_seed(seed)
    verifier = SamplingVerifier()
    counts = torch.zeros(p_nV.shape[-1])
    for _ in range(n):
        draft = [int(torch.multinomial(q_nV[i], 1, generator=gen)) for i in range(draws)]
        verdict = verifier.verify(draft, p_nV, q_nV, gen)
        first = draft[0] if verdict.n_accepted > 0 else verdict.token
        counts[first] += 1
    return counts / n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_first_token_follows_p(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    v, gamma, n = 8, 3, 20000
    p = torch.stack([_random_dist(gen, v) for _ in range(gamma + 1)])
    q = torch.stack([_random_dist(gen, v) for _ in range(gamma)])
    emp = _emitted_first(p, q, gamma, n, seed)
    tv = 0.5 * (emp - p[0]).abs().sum().item()
    # E[TV] ≈ Σ sqrt(p(1-p)/(2πn))·... ≤ 0.5·sqrt(V/n) ≈ 0.01 here; 0.03 leaves no room for a biased rule
    assert tv < 0.03, (tv, emp, p[0])
    # and the drafter's own law is clearly different, so the test can tell the two apart
    assert 0.5 * (q[0] - p[0]).abs().sum().item() > 0.1


def test_biased_rule_is_detected():
    """Sanity check of the test itself: emitting the draft token always (no rejection) fails the same bound."""
    gen = torch.Generator().manual_seed(7)
    p, q = _random_dist(gen, 8), _random_dist(gen, 8)
    emp = torch.bincount(torch.multinomial(q, 20000, replacement=True, generator=gen), minlength=8) / 20000
    assert 0.5 * (emp - p).abs().sum().item() > 0.03


def test_residual_and_acceptance_exact():
    """P(emit y) = min(p, q)(y) + (1 - Σ min(p, q)) · residual(y) = p(y), computed exactly."""
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        p, q = _random_dist(gen, 11), _random_dist(gen, 11)
        reject_mass = 1 - torch.minimum(p, q).sum()
        law = torch.minimum(p, q) + reject_mass * residual(p, q)
        assert torch.allclose(law, p, atol=1e-6)


def test_one_hot_drafts_follow_p():
    """Model-free drafters (q one-hot): the accepted-or-resampled token still follows p."""
    gen = torch.Generator().manual_seed(5)
    p = torch.stack([_random_dist(gen, 6), _random_dist(gen, 6)])
    verifier, counts, n = SamplingVerifier(), torch.zeros(6), 20000
    for _ in range(n):
        verdict = verifier.verify([2], p, None, gen)
        counts[2 if verdict.n_accepted else verdict.token] += 1
    assert 0.5 * (counts / n - p[0]).abs().sum().item() < 0.03


def test_greedy_sampling_agree_at_temperature_zero():
    gen = torch.Generator().manual_seed(9)
    logits = torch.randn(4, 50, generator=gen)
    p = warp(logits, SamplingConfig(temperature=0.0))
    draft = [int(p[0].argmax()), int(p[1].argmax()), (int(p[2].argmax()) + 1) % 50]  # two right, one wrong
    q = torch.nn.functional.one_hot(torch.tensor(draft), 50).float()  # greedy drafts: q one-hot on the draft
    a = GreedyVerifier().verify(draft, p, q, gen)
    b = SamplingVerifier().verify(draft, p, q, gen)
    assert (a.n_accepted, a.token) == (b.n_accepted, b.token) == (2, int(p[2].argmax()))


def test_warp_top_k_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    top_p = warp(logits, SamplingConfig(temperature=1.0, top_p=0.8))
    assert torch.allclose(top_p, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    top_k = warp(logits, SamplingConfig(temperature=1.0, top_k=3))
    assert torch.allclose(top_k, torch.tensor([[0.5, 0.3, 0.15, 0.0]]) / 0.95)


# ------------------------------------------------------------------------------------------- end to end, tiny vocab
class _DigitTokenizer:
    """A 6-token vocabulary for the end-to-end distribution test (test-only stand-in for a real tokenizer)."""

    eos_token_id = None
    chat_template = None

    def get_vocab(self):
        return {str(i): i for i in range(6)}

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(str(i) for i in ids)


def _tiny_vocab_model(seed: int) -> LoadedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=6, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         initializer_range=0.2, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    return LoadedModel(name=f"vocab6-{seed}", model=model, tokenizer=_DigitTokenizer(), source="test")


def _continuations(session: Session, n: int) -> tuple[np.ndarray, int, int]:
    """Counts of the first two generated tokens over n seeds, plus total drafted and accepted tokens."""
    counts, drafted, accepted = np.zeros(36), 0, 0
    for seed in range(n):
        session.config.seed = seed
        session.reset()
        for _ in session.run():
            pass
        a, b = session.generated_ids[:2]
        counts[a * 6 + b] += 1
        drafted, accepted = drafted + session.stats.drafted, accepted + session.stats.accepted
    return counts, drafted, accepted


def test_end_to_end_distribution_matches_target():
    target = _tiny_vocab_model(0)
    drafter = perturbed(target, 0.2)  # agrees with the target only in part (α ≈ 0.5)
    prompt = [1, 4, 2]
    cfg = dict(verifier="sampling", temperature=1.0, max_new_tokens=4, record=False)  # first round drafts γ = 3
    plain = Session(target, NoDrafter(target), SamplingVerifier(), prompt, SessionConfig(drafter="none", **cfg))
    spec = Session(target, ModelDrafter(target, draft_model=drafter), SamplingVerifier(), prompt,
                   SessionConfig(drafter="model", gamma=3, **cfg))
    n = 1500
    a, _, _ = _continuations(plain, n)
    b, drafted, accepted = _continuations(spec, n)
    keep = (a + b) > 0
    _, pvalue, _, _ = chi2_contingency(np.stack([a[keep], b[keep]]))
    assert pvalue > 1e-3, (pvalue, a, b)
    # the speculative path really drafted, accepted and rejected (it is not plain decoding in disguise)
    assert 0.1 * drafted < accepted < 0.9 * drafted, (drafted, accepted)
    # and the exact two-token law of the target is what both follow
    exact = _exact_two_token_law(target, prompt)
    for counts in (a, b):
        assert 0.5 * np.abs(counts / n - exact).sum() < 0.06


def _exact_two_token_law(model: LoadedModel, prompt: list[int]) -> np.ndarray:
    with torch.no_grad():
        p1 = torch.softmax(model.model(torch.tensor([prompt])).logits[0, -1], -1)
        law = np.zeros(36)
        for a in range(6):
            p2 = torch.softmax(model.model(torch.tensor([prompt + [a]])).logits[0, -1], -1)
            law[a * 6: a * 6 + 6] = (p1[a] * p2).numpy()
    return law


def assert_first_two_tokens_follow_target(target: LoadedModel, drafter, n: int = 1200) -> None:
    """Over ``n`` seeds, the first two tokens sampled with ``drafter`` (γ = 3, T = 1) follow the target's exact law
    (chi² against plain sampling, TV against the exact law), with the drafter both accepted and rejected."""
    cfg = dict(verifier="sampling", temperature=1.0, max_new_tokens=4, record=False)
    plain = Session(target, NoDrafter(target), SamplingVerifier(), [1, 4, 2], SessionConfig(drafter="none", **cfg))
    spec = Session(target, drafter, SamplingVerifier(), [1, 4, 2], SessionConfig(drafter=drafter.name, gamma=3,
                                                                                  **cfg))
    a, _, _ = _continuations(plain, n)
    b, drafted, accepted = _continuations(spec, n)
    keep = (a + b) > 0
    _, pvalue, _, _ = chi2_contingency(np.stack([a[keep], b[keep]]))
    assert pvalue > 1e-3, (pvalue, a, b)
    assert 0.05 * drafted < accepted < 0.95 * drafted, (drafted, accepted)
    exact = _exact_two_token_law(target, [1, 4, 2])
    assert 0.5 * np.abs(b / n - exact).sum() < 0.07
