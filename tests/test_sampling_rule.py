"""The sampling rule preserves the target distribution, exactly and by Monte Carlo on synthetic p/q (end to end on a
model, for every drafter and sampling verifier: tests/test_sampled_law.py)."""

from __future__ import annotations

import pytest
import torch

from core.specdec.drafters.model import ModelDrafter
from core.specdec.drafters.none import NoDrafter
from core.specdec.sampling import SamplingConfig, warp
from core.specdec.verify.greedy import GreedyVerifier
from core.specdec.verify.sampling import SamplingVerifier, residual
from tests.helpers import perturbed, sampled_law, vocab6_model


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


def test_end_to_end_distribution_matches_target():
    """The model drafter with the sampling rule, end to end on a 6-token model: over 1500 seeds the first two tokens
    agree with plain sampling (chi²) and both follow the target's exact two-token law (TV < 0.06); the drafter was
    really accepted and rejected."""
    target = vocab6_model(0, layers=2)
    drafter = ModelDrafter(target, draft_model=perturbed(target, 0.2))  # agrees with the target only in part
    settings = dict(temperature=1.0, gamma=3, max_new_tokens=4)  # the first round drafts γ = 3
    plain = sampled_law(target, NoDrafter(target), "sampling", [1, 4, 2], 1500, **settings)
    spec = sampled_law(target, drafter, "sampling", [1, 4, 2], 1500, **settings)
    assert spec.chi2_pvalue(plain) > 1e-3, (spec.chi2_pvalue(plain), spec.counts, plain.counts)
    assert 0.1 * spec.drafted < spec.accepted < 0.9 * spec.drafted, (spec.drafted, spec.accepted)
    for law in (plain, spec):
        assert law.tv < 0.06, (law.tv, law.counts, law.exact)
