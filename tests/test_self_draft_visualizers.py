"""Self-drafting visualizers on real records (tiny-llama + its shipped Kangaroo adapter): the confidence figure, the
η sweep figure and the exit summary; EasySpec's timeline on hand-made sublayer times."""

from __future__ import annotations

import pytest

from core.specdec import Session, SessionConfig
from core.specdec.drafters.easyspec import modelled_latency
from core.specdec.records import StepRecord
from visualizers.self_draft import (
    OUTCOMES,
    confidence_figure,
    easyspec_timeline_figure,
    eta_sweep_figure,
    exit_summary_html,
    exit_token_figure,
    theta_sweep_figure,
)

PROMPT = "the cat sat on the mat. the cat sat on the"


def _run(drafter: str = "kangaroo", eta: float | None = None, gamma: int = 4, n: int = 10,
         thresholds: str = "") -> Session:
    options = {"eta": eta} if drafter == "kangaroo" else {"thresholds": thresholds} if drafter == "sorted" else {}
    config = SessionConfig(target="tiny-llama", drafter=drafter, gamma=gamma, max_new_tokens=n,
                           drafter_options=options)
    session = Session.from_config(config, prompt=PROMPT)
    for _ in session.run():
        pass
    return session


@pytest.fixture(scope="module")
def eta0() -> Session:
    return _run(eta=0.0)  # the tiny random model is never confident: η = 0 lets it draft


@pytest.fixture(scope="module")
def eta05() -> Session:
    return _run(eta=0.5)


def _trace(fig, meta):
    return next((t for t in fig.data if t.meta == meta), None)


def _points(fig) -> int:
    return sum(len(t.x) for t in fig.data if t.meta in OUTCOMES)


def test_confidence_figure_eta_zero_plots_every_draft_step(eta0):
    records = eta0.records
    steps = sum(len(r.draft_info.get("confidences", [])) for r in records)
    assert steps > 0 and all(r.draft_info.get("stopped_by") == "gamma" for r in records if r.draft_info)
    fig = confidence_figure(records, 0.0)
    assert _points(fig) == steps
    assert _trace(fig, "stopped") is None  # η = 0 never stops drafting
    drafted = {t.decision for r in records for t in r.drafted}
    assert {t.meta for t in fig.data if t.meta in OUTCOMES} == drafted
    rejected = _trace(fig, "rejected")
    first = records[0]
    assert rejected.y[0] == pytest.approx(first.draft_info["confidences"][0])
    assert rejected.customdata[0][0] == first.step and rejected.customdata[0][1] == 1
    eta_line = _trace(fig, "eta")
    assert eta_line is not None and set(eta_line.y) == {0.0} and eta_line.line.dash == "dash"
    assert fig.layout.height and "η = 0.00" in fig.layout.title.text


def test_confidence_figure_marks_the_step_that_stopped_drafting(eta05):
    records = [r for r in eta05.records if r.draft_info]
    assert records and all(r.draft_info["stopped_by"] == "eta" and not r.drafted for r in records)
    fig = confidence_figure(eta05.records, 0.5)
    stopped = _trace(fig, "stopped")
    assert stopped is not None and len(stopped.x) == len(records)
    assert all(y < 0.5 for y in stopped.y) and stopped.marker.symbol == "circle-open"
    assert "below η" in stopped.customdata[0][3]
    assert set(_trace(fig, "eta").y) == {0.5}
    assert f"stopped by η in {len(records)}" in fig.layout.title.text


def test_eta_moved_between_rounds_steps_the_line(eta05):
    fig = confidence_figure(eta05.records, 0.3)  # the slider moved: 0.3 applies from the next round
    assert list(_trace(fig, "eta").y)[-2:] == [0.3, 0.3] and 0.5 in _trace(fig, "eta").y


def test_records_round_trip_through_json(eta0):
    records = [StepRecord.from_dict(r.to_dict()) for r in eta0.records]
    assert _points(confidence_figure(records, 0.0)) == _points(confidence_figure(eta0.records, 0.0))


def test_ngram_records_get_an_explanation_and_early_exit_falls_back_to_q():
    ngram = _run(drafter="ngram", n=6)
    fig = confidence_figure(ngram.records, None)
    assert not fig.data and "no confidence" in fig.layout.annotations[0].text.replace("<br>", " ")
    assert "no second early exit" in exit_summary_html(ngram.records, ngram.stats.summary())

    early = _run(drafter="early-exit", n=6)
    fig = confidence_figure(early.records, None)
    assert _points(fig) == sum(len(r.drafted) for r in early.records) > 0
    assert _trace(fig, "eta") is None and "q of each drafted token" in fig.layout.title.text


def test_empty_figures():
    assert "Step or Run" in confidence_figure([], 0.6).layout.annotations[0].text
    assert "η sweep" in eta_sweep_figure([]).layout.annotations[0].text
    assert "No round yet" in exit_summary_html([], {})


def test_exit_summary_counts_and_escapes(eta0, eta05):
    html0 = exit_summary_html(eta0.records, eta0.stats.summary())
    n = sum(1 for r in eta0.records if r.draft_info)
    assert f"by η in 0, after γ tokens in {n}" in html0 and "ℓ = 2, η = 0.00" in html0
    assert "τ (tokens per target call)" in html0 and "tokens / s" in html0
    html5 = exit_summary_html(eta05.records, eta05.stats.summary())
    assert "after γ tokens in 0" in html5
    records = [StepRecord.from_dict(r.to_dict()) for r in eta0.records]
    records[-1].drafter = "<b>evil</b>"
    assert "<b>evil</b>" not in exit_summary_html(records, {}) and "&lt;b&gt;evil" in exit_summary_html(records, {})


def test_eta_sweep_figure_from_rows():
    rows = [{"eta": eta, "tau": 1 + 2 * (1 - eta), "alpha": 0.6, "tokens_per_second": 20 + 10 * eta,
             "mean_draft_len": 4 * (1 - eta), "plain_tokens_per_second": 25.0} for eta in (0.8, 0.0, 0.4)]
    fig = eta_sweep_figure(rows)
    tau, length, speed, plain = (_trace(fig, k) for k in ("tau", "mean_draft_len", "tokens_per_second", "plain"))
    assert list(tau.x) == [0.0, 0.4, 0.8] and tau.y[0] == pytest.approx(3.0)
    assert list(length.y) == pytest.approx([4.0, 2.4, 0.8])
    assert speed.xaxis == plain.xaxis == "x2" and tau.xaxis == length.xaxis == "x"
    assert set(plain.y) == {25.0} and plain.line.dash == "dash"
    assert fig.layout.height
    # a plain-decoding row (drafter "none") is the reference when present
    fig = eta_sweep_figure([{**r, "plain_tokens_per_second": None} for r in rows]
                           + [{"drafter": "none", "eta": None, "tokens_per_second": 30.0}])
    assert set(_trace(fig, "plain").y) == {30.0} and len(_trace(fig, "tau").x) == 3


def test_easyspec_timeline_figure_from_times():
    times = {"attention_ms": [1.0, 2.0, 3.0, 4.0], "mlp_ms": [1.0, 1.5, 1.0, 0.5], "head_ms": 0.5}
    latency = modelled_latency(times, 2, 2)  # groups [0] · [1, 2] · [3]
    fig = easyspec_timeline_figure(times, group_size=2, devices=2, calibration_ms=1.25)
    rows = ("1 device (sequential)", "2 devices (layer-parallel)", "calibration pass (exact, once per round)")
    counts = {(t.meta, row): sum(y == row for y in t.y) for t in fig.data for row in rows}
    for row in rows[:2]:
        assert (counts[("attention", row)], counts[("mlp", row)], counts[("head", row)]) == (4, 4, 1)
    assert counts[("calibration", rows[2])] == 1 and sum(counts[(t.meta, rows[2])] for t in fig.data) == 1
    ends = {row: max(b + x for t in fig.data for y, b, x in zip(t.y, t.base, t.x) if y == row) for row in rows}
    assert ends[rows[0]] == pytest.approx(latency["sequential_ms"]) and ends[rows[1]] == pytest.approx(
        latency["parallel_ms"]) and ends[rows[2]] == pytest.approx(1.25)
    attention = _trace(fig, "attention")
    parallel = [(b, o) for y, b, o in zip(attention.y, attention.base, attention.offset) if y == rows[1]]
    assert parallel[1][0] == parallel[2][0] and parallel[1][1] != parallel[2][1]  # layers 1 and 2 side by side
    title = fig.layout.title.text
    assert f"{latency['sequential_ms']:.3f} ms" in title and f"{latency['parallel_ms']:.3f} ms" in title
    assert f"{latency['speedup']:.2f}×" in title and fig.layout.height
    assert fig.layout.xaxis.title.text == "ms (modelled from measured sublayer times)"
    assert len(easyspec_timeline_figure(times, 2, 2).data) == 3  # no calibration row without calibration_ms
    assert "EasySpec timeline" in easyspec_timeline_figure(None, 4, 4).layout.annotations[0].text


def test_exit_token_figure_marks_the_exit_of_every_draft():
    """S2D on tiny-llama (untrained exits 1/2/3, confidences ≈ 1e-4): θ between them mixes the exits."""
    session = _run("sorted", thresholds="0,1", n=12)  # θ₁ = 0: every token leaves at exit 1
    records = session.records
    fig = exit_token_figure(records)
    heat = _trace(fig, "confidence")
    infos = [r.draft_info for r in records if r.draft_info]
    steps = sum(len(i["exits"]) for i in infos)
    assert len(heat.x) == steps and len(heat.z) == 3
    assert all(v is None for v in heat.z[1]) and all(v is not None for v in heat.z[0])
    assert _points(fig) == steps and all(y == 0 for t in fig.data if t.meta in OUTCOMES for y in t.y)
    assert list(fig.layout.yaxis.ticktext) == ["exit 1 · layer 1 · θ 0", "exit 2 · layer 2 · θ 1",
                                               "exit 3 · layer 3 · always"]
    assert "untrained exits" in fig.layout.title.text and f"layer 1: {steps}" in fig.layout.title.text
    deep = exit_token_figure(_run("sorted", thresholds="1", n=6).records)
    assert all(y == 2 for t in deep.data if t.meta in OUTCOMES for y in t.y)
    assert all(v is not None for v in _trace(deep, "confidence").z[2])
    assert "Choose the sorted drafter" in exit_token_figure([]).layout.annotations[0].text
    html = exit_summary_html(records, session.stats.summary())
    assert "exits used, θ" in html and f"layer 1: {steps} · layer 2: 0 · layer 3: 0 · θ = 0, 1" in html


def test_theta_sweep_figure_from_rows():
    rows = [{"drafter": "sorted", "theta": t, "tau": 1 + t, "mean_draft_len": 4, "tokens_per_second": 10 + t,
             "alpha": 0.5, "generated": 8, "rounds": 4} for t in (0.0, 0.5, 1.0)]
    rows.append({"drafter": "none", "theta": None, "tokens_per_second": 9.0, "tau": 1.0})
    fig = theta_sweep_figure(rows)
    assert list(_trace(fig, "tau").x) == [0.0, 0.5, 1.0] and fig.layout.xaxis.title.text == "θ"
    assert list(_trace(fig, "plain").y) == [9.0, 9.0] and _trace(fig, "tokens_per_second").name == "sorted tokens/s"
    assert "θ" in theta_sweep_figure([]).layout.annotations[0].text
