"""The recommender: the τ formula, Beta updates, ranking (plain decoding included), held-out accuracy, errors, figures.

Synthetic matrices are simulated round by round from a known per-position acceptance and known costs, so the true
speedup of every config is known in closed form."""

from __future__ import annotations

import random

import pytest

from core.errors import DraftScopeError
from core.specdec.recommend import Recommender, expected_tau, holdout_accuracy, temperature_bucket
from core.specdec.records import Stats
from visualizers.recommend import holdout_figure, recommendation_card, recommendation_figure

PLAIN_MS = 30.0  # plain decoding, ms per token
VERIFY = (28.0, 3.0)  # a target call of w tokens: 28 + 3·w ms
OTHER_MS = 1.0  # per round
CATEGORIES = ("code", "chat")


def _round(rng: random.Random, accept, gamma: int, draft_prob: float = 1.0) -> tuple[int, int, int]:
    """(drafted, accepted, verified positions) of one chain round."""
    drafted = gamma if rng.random() < draft_prob else 0
    k = 0
    while k < drafted and rng.random() < accept[k]:
        k += 1
    return drafted, k, (k + 1 if k < drafted else drafted)


def simulate(rng, accept, gamma, rounds=400, draft_ms=2.0, draft_prob=1.0, noise=0.0) -> dict:
    """A matrix block of ``rounds`` simulated rounds."""
    s = Stats()
    for _ in range(rounds):
        d, k, v = _round(rng, accept, gamma, draft_prob)
        verify = (VERIFY[0] + VERIFY[1] * (d + 1)) / 1e3
        s.add_round(d, k, k + 1, v, d * draft_ms / 1e3, verify, (d * draft_ms + OTHER_MS) / 1e3 + verify)
    seconds = s.total_s * (1 + noise * rng.uniform(-1, 1))
    tps, hf = s.generated / seconds, 1e3 / PLAIN_MS
    return {"rounds": s.rounds, "drafted": s.drafted, "accepted": s.accepted, "reached": s.reached,
            "accepted_at": s.accepted_at, "target_calls": s.target_calls, "generated": s.generated,
            "tokens": s.generated, "seconds": seconds, "draft_s": s.draft_s, "verify_s": s.verify_s,
            "tokens_per_second": tps, "speedup": tps / hf, "tau": s.tau, "alpha": s.alpha, "mbsu": None,
            "identical": True, "hf_tokens_per_second": hf}


def true_speedup(accept, gamma, draft_ms=2.0, draft_prob=1.0) -> float:
    tau = 1 + draft_prob * (expected_tau(accept[:gamma]) - 1)
    d = draft_prob * gamma
    round_ms = d * draft_ms + VERIFY[0] + VERIFY[1] * (d + 1) + OTHER_MS
    return tau * PLAIN_MS / round_ms


# config name → (drafter, γ, draft ms, per-category acceptance); "slow" never pays
CONFIGS = {
    "good g4": ("model", 4, 2.0, {"code": [0.9, 0.85, 0.8, 0.75], "chat": [0.8, 0.7, 0.6, 0.5]}),
    "ngram g3": ("ngram", 3, 0.1, {"code": [0.7, 0.6, 0.5], "chat": [0.3, 0.25, 0.2]}),
    "slow g2": ("slow", 2, 40.0, {"code": [0.5, 0.4], "chat": [0.4, 0.3]}),
}


def make_matrix(seed=0, configs=CONFIGS, rounds=400, scale=1.0, target="tiny", noise=0.02) -> dict:
    rng = random.Random(seed)
    rows = []
    for name, (drafter, gamma, draft_ms, accept) in configs.items():
        by_cat = {c: simulate(rng, [a * scale for a in accept[c]], gamma, rounds, draft_ms, noise=noise)
                  for c in CATEGORIES}
        rows.append({"config": name, "drafter": drafter, "options": {}, "gamma": gamma, "tree": "",
                     "overall": _merge(by_cat.values()), "by_category": by_cat})
    return {"schema": "draftscope.matrix", "version": 1, "target": target, "machine": "test", "max_new_tokens": 64,
            "categories": list(CATEGORIES), "prompts": [], "rows": rows}


def _merge(blocks) -> dict:
    blocks = list(blocks)
    out = {k: sum(b[k] for b in blocks) for k in ("rounds", "drafted", "accepted", "target_calls", "generated",
                                                  "tokens", "seconds", "draft_s", "verify_s")}
    n = max(len(b["reached"]) for b in blocks)
    for key in ("reached", "accepted_at"):
        out[key] = [sum(b[key][i] if i < len(b[key]) else 0 for b in blocks) for i in range(n)]
    out["tokens_per_second"] = out["tokens"] / out["seconds"]
    out["hf_tokens_per_second"] = 1e3 / PLAIN_MS
    out["speedup"] = out["tokens_per_second"] / out["hf_tokens_per_second"]
    return out


def summary(rounds: int, gamma: int, accepted: int, round_ms: float = 50.0) -> dict:
    """Stats.summary() of ``rounds`` identical rounds that each accept ``accepted`` of ``gamma`` drafts."""
    s = Stats()
    for _ in range(rounds):
        s.add_round(gamma, accepted, accepted + 1, accepted + 1 if accepted < gamma else gamma, 0.002 * gamma,
                    0.04, round_ms / 1e3)
    return s.summary()


# ---- the formula ---------------------------------------------------------------------------------------------------


def test_tau_formula_by_hand():
    assert expected_tau([]) == 1.0
    assert expected_tau([0.8, 0.5, 0.25]) == pytest.approx(1 + 0.8 + 0.8 * 0.5 + 0.8 * 0.5 * 0.25)
    assert expected_tau([1.0] * 4) == 5.0  # everything accepted: γ drafts + the bonus


def test_tau_formula_matches_monte_carlo():
    rng, accept = random.Random(1), [0.9, 0.7, 0.5, 0.3]
    n = 40_000
    committed = sum(_round(rng, accept, 4)[1] + 1 for _ in range(n))
    assert committed / n == pytest.approx(expected_tau(accept), abs=0.03)


def test_prediction_reproduces_known_speedups():
    rec = Recommender.from_matrix(make_matrix(rounds=2000, noise=0.0))
    for name, (_, gamma, draft_ms, accept) in CONFIGS.items():
        for cat in CATEGORIES:
            p = rec.predict(name, cat)
            assert p.speedup == pytest.approx(true_speedup(accept[cat], gamma, draft_ms), rel=0.04), (name, cat)
            assert p.interval[0] <= p.speedup <= p.interval[1]
            assert p.evidence == "category" and not p.extrapolated


def test_ngram_drafting_only_sometimes_is_modelled():
    """Rounds with no draft (an n-gram without a match) cost a plain step and commit one token."""
    rng, accept = random.Random(2), [0.8, 0.7, 0.6]
    block = simulate(rng, accept, 3, rounds=3000, draft_ms=0.1, draft_prob=0.4)
    matrix = make_matrix(configs={})
    matrix["rows"] = [{"config": "ng", "drafter": "ngram", "gamma": 3, "overall": block,
                       "by_category": {"code": block}}]
    p = Recommender.from_matrix(matrix).predict("ng", "code")
    assert p.speedup == pytest.approx(true_speedup(accept, 3, 0.1, draft_prob=0.4), rel=0.04)
    assert any("drafts at all in 4" in r for r in p.reasons)


def test_other_gamma_truncates_and_extrapolates():
    accept = [0.8] * 6
    configs = {"m g4": ("model", 4, 2.0, dict.fromkeys(CATEGORIES, accept))}
    rec = Recommender.from_matrix(make_matrix(configs=configs, rounds=3000, noise=0.0))
    shorter = rec.predict("m g4", "code", gamma=2)
    assert shorter.speedup == pytest.approx(true_speedup(accept, 2), rel=0.05) and not shorter.extrapolated
    longer = rec.predict("m g4", "code", gamma=6)
    assert longer.extrapolated == [5, 6]
    assert longer.speedup == pytest.approx(true_speedup(accept, 6), rel=0.08)
    width = lambda p: p.interval[1] - p.interval[0]  # noqa: E731
    assert width(longer) > width(rec.predict("m g4", "code"))
    assert any("never measured" in r for r in longer.reasons)


def test_cost_model_curve_drives_other_gamma():
    configs = {"m g2": ("model", 2, 2.0, {c: [0.9] * 4 for c in CATEGORIES})}
    matrix = make_matrix(configs=configs, rounds=2000, noise=0.0)
    flat = Recommender.from_matrix(matrix, [{"target": "tiny", "verify_ms": [30.0] * 8}])
    steep = Recommender.from_matrix(matrix, [{"target": "tiny", "verify_ms": [30.0 + 20 * k for k in range(8)]}])
    assert steep.predict("m g2", "code", gamma=4).speedup < flat.predict("m g2", "code", gamma=4).speedup
    assert steep.predict("m g2", "code").speedup == pytest.approx(flat.predict("m g2", "code").speedup)


# ---- learning from runs --------------------------------------------------------------------------------------------


def test_observed_rejections_lower_and_acceptances_raise_the_prediction():
    matrix = make_matrix()
    before = Recommender.from_matrix(matrix).predict("good g4", "code").speedup
    rejected = Recommender.from_matrix(matrix)
    name = rejected.observe({"drafter": "model", "gamma": 4}, "code", summary(2000, 4, 0))
    assert name == "good g4"  # matched to the matrix row by drafter, options, γ and tree
    assert rejected.predict("good g4", "code").speedup < 0.8 * before
    accepted = Recommender.from_matrix(matrix)
    accepted.observe("good g4", "code", summary(2000, 4, 4))
    assert accepted.predict("good g4", "code").speedup > before
    # the other category learns only through the shared overall prior, i.e. little
    assert rejected.predict("good g4", "chat").speedup == pytest.approx(
        Recommender.from_matrix(matrix).predict("good g4", "chat").speedup, rel=0.1)


def test_observe_a_new_config_and_a_new_category():
    rec = Recommender.from_matrix(make_matrix())
    name = rec.observe({"drafter": "model", "gamma": 6, "drafter_options": {"vocab_trim": 4096}}, "mine",
                       summary(50, 6, 3), hf_ms_per_token=PLAIN_MS)
    assert name == "model g6 vocab_trim=4096" and "mine" in rec.categories
    p = rec.predict(name, "mine")
    assert p.tau == pytest.approx(4.0, abs=0.3) and p.measured_speedup is not None
    assert p.settings["drafter_options"] == {"vocab_trim": 4096}
    assert rec.recommend("mine")  # the other configs fall back to their overall counts there
    assert any("none on mine" in r for r in rec.predict("good g4", "mine").reasons)


def test_saved_state_predicts_the_same():
    rec = Recommender.from_matrix(make_matrix())
    rec.observe("ngram g3", "code", summary(30, 3, 1), hf_ms_per_token=PLAIN_MS)
    again = Recommender.from_dict(rec.to_dict())
    assert again.predict("ngram g3", "code").to_dict() == rec.predict("ngram g3", "code").to_dict()


# ---- recommending --------------------------------------------------------------------------------------------------


def test_recommend_ranks_and_explains():
    rec = Recommender.from_matrix(make_matrix())
    recs = rec.recommend("code", top=4)
    assert recs[0].config == "good g4" and [r.speedup for r in recs] == sorted((r.speedup for r in recs), reverse=True)
    assert recs[0].speedup > 1.0 and {r.config for r in recs} >= {"good g4", "ngram g3", "none"}
    text = " ".join(recs[0].reasons)
    assert "acceptance 0.9" in text and "on code" in text and "predicted" in text and "beats ngram g3" in text
    assert "γ" in text and "ms" in text
    assert len(rec.recommend("code", top=1)) == 1


def test_recommends_none_when_every_config_is_slower():
    configs = {"slow g2": CONFIGS["slow g2"], "bad g4": ("model", 4, 30.0, {c: [0.1] * 4 for c in CATEGORIES})}
    recs = Recommender.from_matrix(make_matrix(configs=configs)).recommend("chat")
    assert recs[0].config == "none" and recs[0].speedup == 1.0
    assert "no drafter is predicted to beat plain decoding on chat" in recs[0].reasons[0]
    assert all(r.speedup < 1.0 for r in recs[1:])


def test_sampling_without_sampled_runs_says_so_and_widens():
    rec = Recommender.from_matrix(make_matrix())
    greedy = rec.predict("good g4", "chat")
    sampled = rec.predict("good g4", "chat", temperature=0.8)
    assert sampled.interval[1] - sampled.interval[0] > 1.5 * (greedy.interval[1] - greedy.interval[0])
    assert any("no runs of this config at temperature 0.8" in r for r in sampled.reasons)
    rec.observe({"drafter": "model", "gamma": 4, "temperature": 0.8}, "chat", summary(300, 4, 1),
                hf_ms_per_token=PLAIN_MS)
    learned = rec.predict("good g4", "chat", temperature=0.8)
    assert not any("no runs of this config" in r for r in learned.reasons) and learned.tau < greedy.tau
    assert temperature_bucket(0) == "greedy" and temperature_bucket(0.7) == "T≤1"


# ---- held-out accuracy ---------------------------------------------------------------------------------------------


def test_holdout_accuracy_on_disjoint_runs():
    result = holdout_accuracy(make_matrix(seed=1), make_matrix(seed=2))
    assert result["n"] == len(CONFIGS) * (len(CATEGORIES) + 1)
    assert result["share_within"] >= 0.8 and result["mape_pct"] < 10
    assert all(t["top_is_best"] for t in result["top"].values()) and result["mean_regret"] == 0


def test_holdout_metric_fails_when_the_workload_changed():
    """Held-out runs whose acceptance is far lower than the fitted one: most predictions are wrong."""
    result = holdout_accuracy(make_matrix(seed=1), make_matrix(seed=2, scale=0.4))
    assert result["share_within"] < 0.5 and result["mape_pct"] > 15
    assert result["top_is_best_share"] < 1 and result["mean_regret"] > 0


# ---- errors --------------------------------------------------------------------------------------------------------


def test_errors_are_clear():
    matrix = make_matrix()
    rec = Recommender.from_matrix(matrix)
    with pytest.raises(DraftScopeError, match="unknown category 'poetry'"):
        rec.recommend("poetry")
    with pytest.raises(DraftScopeError, match="no rows"):
        Recommender.from_matrix({**matrix, "rows": []})
    with pytest.raises(DraftScopeError, match="not a DraftScope matrix"):
        Recommender.from_matrix({"rows": []})
    with pytest.raises(DraftScopeError, match="target 'other'"):
        rec.add_matrix(make_matrix(target="other"))
    with pytest.raises(DraftScopeError, match="target 'other'"):
        holdout_accuracy(matrix, make_matrix(target="other"))
    with pytest.raises(DraftScopeError, match="target 'other'"):
        rec.observe({"target": "other", "drafter": "ngram", "gamma": 3}, "code", summary(5, 3, 1))
    with pytest.raises(DraftScopeError, match="no rounds"):
        rec.observe("ngram g3", "code", Stats().summary())
    with pytest.raises(DraftScopeError, match="need"):
        rec.observe("ngram g3", "code", {"rounds": 3})
    with pytest.raises(DraftScopeError, match="unknown config"):
        rec.predict("nope")


def test_missing_keys_are_reported_not_guessed():
    matrix = make_matrix()
    for block in [matrix["rows"][1]["overall"], *matrix["rows"][1]["by_category"].values()]:
        del block["hf_tokens_per_second"], block["speedup"]
    rec = Recommender.from_matrix(matrix)
    assert any("ngram g3" in n and "hf_tokens_per_second unavailable" in n for n in rec.notes)
    p = rec.predict("ngram g3", "code")  # the other configs' plain reference stands in, and the reasons say so
    assert any("other configs'" in r for r in p.reasons)


# ---- figures -------------------------------------------------------------------------------------------------------


def test_figures_build():
    rec = Recommender.from_matrix(make_matrix())
    recs = rec.recommend("code")
    fig = recommendation_figure(recs)
    assert fig.data[0].y[-1].startswith("good g4") and len(fig.data[0].error_x.array) == len(recs)
    html = recommendation_card([r.to_dict() for r in recs])
    assert "Recommended on code" in html and "Runners-up" in html and "&lt;" not in html.split("<li>")[1][:5]
    assert "<script" not in recommendation_card([{**recs[0].to_dict(), "reasons": ["<script>x</script>"]}])
    scatter = holdout_figure(holdout_accuracy(make_matrix(seed=1), make_matrix(seed=2)))
    assert len(scatter.data) >= 3 and "within ±15%" in scatter.layout.title.text
    assert recommendation_figure([]).layout.annotations and holdout_figure({}).layout.annotations
    assert "No recommendation" in recommendation_card([])


# ---- a real run ----------------------------------------------------------------------------------------------------


def test_observe_a_real_session(tiny_llama):
    from core.specdec import Session, SessionConfig

    config = SessionConfig(target="tiny-llama", drafter="ngram", gamma=3, max_new_tokens=12, record=False)
    session = Session.from_config(config, prompt_ids=tiny_llama.encode("a b c a b c a b c a b"))
    for _ in session.run():
        pass
    rec = Recommender("tiny-llama")
    name = rec.observe(config, "mine", session.stats.summary(), hf_ms_per_token=5.0)
    p = rec.predict(name, "mine")
    assert name == "ngram g3" and p.tau >= 1.0 and p.costs["round"] > 0 and p.reasons
    with pytest.raises(DraftScopeError, match="target 'tiny-llama'"):
        Recommender("smollm2-135m").observe(config, "mine", session.stats.summary())


def test_trees_are_predicted_only_as_measured():
    matrix = make_matrix()
    tree = {**matrix["rows"][0], "config": "good tree", "tree": "3,2,1,1"}
    matrix["rows"].append(tree)
    rec = Recommender.from_matrix(matrix)
    assert rec.predict("good tree", "code").speedup == pytest.approx(rec.predict("good g4", "code").speedup)
    with pytest.raises(DraftScopeError, match="only its measured γ 4"):
        rec.predict("good tree", "code", gamma=3)
    picks = [(r.config, r.settings["gamma"]) for r in rec.recommend("code", top=5)]
    assert ("good tree", 4) in picks and not any(c == "good tree" and g != 4 for c, g in picks)


def test_a_drafter_that_never_drafts_is_a_plain_step():
    """An n-gram drafter that never finds a match: τ = 1 and the round costs one target call (no 'unavailable')."""
    block = simulate(random.Random(3), [0.9] * 3, 3, rounds=200, draft_ms=0.1, draft_prob=0.0)
    matrix = make_matrix(configs={})
    matrix["rows"] = [{"config": "ng", "drafter": "ngram", "gamma": 3, "overall": block,
                       "by_category": {"code": block}}]
    p = Recommender.from_matrix(matrix).predict("ng", "code")
    assert p.tau == pytest.approx(1.0, abs=0.02)
    assert p.speedup == pytest.approx(true_speedup([0.9] * 3, 3, 0.1, draft_prob=0.0), rel=0.03)
    assert any("no draft was ever verified" in r for r in p.reasons) and "rounds on code" in p.reasons[0]
