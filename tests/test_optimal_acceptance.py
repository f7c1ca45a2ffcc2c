"""Optimal multi-draft acceptance: LP and dual agree, known special cases, the verifiers stay below the bound."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import DraftScopeError
from core.specdec.optimal import alpha_star_dual, alpha_star_lp, draft_tuples, report, rrs_acceptance, rsd_acceptance


def _cases(seed: int, count: int, vmax: int = 5):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        v = int(rng.integers(2, vmax + 1))
        yield rng.dirichlet(np.ones(v) * 0.7), rng.dirichlet(np.ones(v) * 0.7), int(rng.integers(1, 4))


@pytest.mark.parametrize("without", [False, True])
def test_lp_and_dual_agree(without):
    for p, q, n in _cases(0, 25):
        if without and n > len(p):
            continue
        assert abs(alpha_star_lp(p, q, n, without) - alpha_star_dual(p, q, n, without)) < 1e-7, (p, q, n)


def test_one_draft_is_total_variation():
    for p, q, _ in _cases(1, 20):
        expected = np.minimum(p, q).sum()
        for without in (False, True):
            assert abs(alpha_star_dual(p, q, 1, without) - expected) < 1e-9
            assert abs(alpha_star_lp(p, q, 1, without) - expected) < 1e-7
        assert abs(rrs_acceptance(p, q, 1) - expected) < 1e-9 and abs(rsd_acceptance(p, q, 1) - expected) < 1e-9


def test_verifiers_never_exceed_the_bound_and_without_replacement_helps():
    for p, q, n in _cases(2, 40):
        with_r, without_r = alpha_star_dual(p, q, n, False), alpha_star_dual(p, q, n, True) if n <= len(p) else None
        assert rrs_acceptance(p, q, n) <= with_r + 1e-9
        if without_r is not None:
            assert rsd_acceptance(p, q, n) <= without_r + 1e-9
            assert without_r >= with_r - 1e-9  # distinct drafts cover at least as much of p


def test_paper_kind_of_case_shows_a_gap():
    """A drafter that is confident on the wrong token: more drafts help, RRS stays strictly below α*."""
    p, q = [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]
    r = report(p, q, 2)
    assert r["single_draft"] == pytest.approx(0.7)
    assert r["alpha_star_without_replacement"] > r["alpha_star_with_replacement"] > r["single_draft"]
    assert r["rrs_acceptance"] < r["alpha_star_with_replacement"] - 1e-3


def test_rrs_acceptance_matches_simulation():
    """The exact rate equals the empirical rate of the sampling rule run on i.i.d. drafts (Monte Carlo)."""
    rng = np.random.default_rng(5)
    p, q, n, trials = np.array([0.45, 0.35, 0.15, 0.05]), np.array([0.1, 0.2, 0.3, 0.4]), 2, 40000
    accepted = 0
    for _ in range(trials):
        r = p.copy()
        for x in rng.choice(4, size=n, p=q):
            if rng.random() < min(1.0, r[x] / q[x]):
                accepted += 1
                break
            r = np.clip(r - q, 0, None)
            r /= r.sum()
    assert abs(accepted / trials - rrs_acceptance(p, q, n)) < 0.01


def test_draft_tuple_laws_sum_to_one():
    q = np.array([0.5, 0.3, 0.2])
    for without in (False, True):
        assert sum(prob for _, prob in draft_tuples(q, 2, without)) == pytest.approx(1.0)


def test_bad_input():
    with pytest.raises(DraftScopeError, match="same length"):
        alpha_star_dual([0.5, 0.5], [1.0], 1)
    with pytest.raises(DraftScopeError, match="at most 16"):
        alpha_star_dual(np.ones(17), np.ones(17), 1)


def test_cli_json_and_errors(capsys):
    import json

    from core.cli import main

    assert main(["optimal-acceptance", "--p", "0.5,0.3,0.2", "--q", "0.2,0.3,0.5", "--drafts", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["alpha_star"] == pytest.approx(out["alpha_star_lp"], abs=1e-7)
    assert out["rrs_acceptance"] <= out["alpha_star_with_replacement"] + 1e-9
    assert out["rsd_acceptance"] <= out["alpha_star_without_replacement"] + 1e-9
    assert main(["optimal-acceptance", "--p", "0.5,x", "--q", "1,1"]) == 2
    assert "comma-separated numbers" in capsys.readouterr().err
    assert main(["optimal-acceptance", "--p", "1,1", "--q", "1,1", "--drafts", "3", "--without-replacement"]) == 2
    assert "distinct drafts" in capsys.readouterr().err
