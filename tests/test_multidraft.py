"""Sibling-draft verification (RRS, RSD): the emitted token follows p; the acceptance rate matches the exact one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.specdec.optimal import rrs_acceptance, rsd_acceptance
from core.specdec.verify.multidraft import rrs_step, rsd_step, without_replacement_qs

P = torch.tensor([0.45, 0.25, 0.15, 0.1, 0.05])
Q = torch.tensor([0.05, 0.1, 0.2, 0.3, 0.35])


def _draw(q: torch.Tensor, n: int, without: bool, gen: torch.Generator) -> list[int]:
    return torch.multinomial(q, n, replacement=not without, generator=gen).tolist()


@pytest.mark.parametrize("step, without, exact", [(rrs_step, False, rrs_acceptance), (rsd_step, True, rsd_acceptance)])
@pytest.mark.parametrize("n", [2, 3])
def test_output_follows_p_and_acceptance_is_exact(step, without, exact, n):
    gen = torch.Generator().manual_seed(n)
    trials, counts, accepted = 20000, torch.zeros(5), 0
    for _ in range(trials):
        verdict = step(P, _draw(Q, n, without, gen), Q, gen)
        counts[verdict.token] += 1
        accepted += verdict.accepted_index is not None
    tv = 0.5 * (counts / trials - P).abs().sum().item()
    assert tv < 0.03, (tv, counts / trials)
    assert abs(accepted / trials - exact(P.numpy(), Q.numpy(), n)) < 0.015


def test_a_biased_sibling_rule_fails_the_same_bound():
    """Test of the test: 'emit the first draft whose p ≥ q, else the first draft' is not lossless."""
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(5)
    for _ in range(20000):
        drafts = _draw(Q, 2, False, gen)
        counts[next((x for x in drafts if P[x] >= Q[x]), drafts[0])] += 1
    assert 0.5 * (counts / 20000 - P).abs().sum().item() > 0.03


def test_without_replacement_qs():
    qs = without_replacement_qs(Q, [4, 3])
    assert torch.allclose(qs[0], Q)
    assert qs[1][4] == 0 and torch.isclose(qs[1].sum(), torch.tensor(1.0))
    assert np.isclose(float(qs[1][3]), 0.3 / 0.65)
