"""The plotly visualizers (round inspector, stats charts) and the comparison texts, from real tiny-model runs."""

from __future__ import annotations

import json

import pytest

from core.specdec import Session, SessionConfig
from core.specdec.drafters import build_drafter
from core.specdec.drafters.model import ModelDrafter
from core.specdec.lossless import check_lossless
from core.specdec.records import Candidate, DraftedToken, EmittedToken, StepRecord
from core.specdec.verify.greedy import GreedyVerifier
from core.specdec.verify.sampling import SamplingVerifier
from visualizers.compare import compare_verdict, lossless_html
from visualizers.round_inspector import round_inspector_figure
from visualizers.stats_charts import stats_figure

PROMPT = "The quick brown fox jumps over the lazy dog. The quick brown fox"
REPEATING = "the cat sat on the mat and the cat sat on the"
RESIDUAL = "residual norm(max(0,p−q))"


def _run(target, drafter, verifier, config: SessionConfig, prompt: str = PROMPT) -> Session:
    session = Session(target, drafter, verifier, target.encode(prompt), config)
    for _ in session.run():
        pass
    return session


@pytest.fixture(scope="module")
def sampled(tiny_llama, noisy_tiny_llama) -> Session:
    config = SessionConfig(target=tiny_llama.name, drafter="model", verifier="sampling", temperature=0.3, gamma=4,
                           max_new_tokens=24, seed=3)
    return _run(tiny_llama, ModelDrafter(tiny_llama, draft_model=noisy_tiny_llama), SamplingVerifier(), config)


@pytest.fixture(scope="module")
def greedy(tiny_llama, noisy_tiny_llama) -> Session:
    config = SessionConfig(target=tiny_llama.name, drafter="model", verifier="greedy", gamma=4, max_new_tokens=24,
                           seed=3)
    return _run(tiny_llama, ModelDrafter(tiny_llama, draft_model=noisy_tiny_llama), GreedyVerifier(), config)


@pytest.fixture(scope="module", params=["greedy", "sampling"])
def ngram(request, tiny_llama) -> Session:
    verifier = GreedyVerifier() if request.param == "greedy" else SamplingVerifier()
    config = SessionConfig(target=tiny_llama.name, drafter="ngram", verifier=request.param, gamma=4,
                           temperature=0.0 if request.param == "greedy" else 0.3, max_new_tokens=16, seed=3)
    return _run(tiny_llama, build_drafter("ngram", tiny_llama), verifier, config, REPEATING)


# ------------------------------------------------------------------------------------------------ helpers
def _n_rows(fig) -> int:
    return sum(1 for key in fig.layout.to_plotly_json() if key.startswith("yaxis"))


def _expected_rows(record: StepRecord) -> int:
    return sum(t.decision in ("accepted", "rejected") for t in record.drafted) + (record.emitted is not None)


def _sampled_rejection(record: StepRecord) -> bool:
    e = record.emitted
    return e is not None and e.kind == "resampled" and any(c.residual is not None for c in e.candidates)


def _bars(fig, name: str) -> list:
    """The data traces of a series (the legend-only swatches hold no points)."""
    return [t for t in fig.data if t.name == name and any(x is not None for x in t.x)]


def _texts(fig) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def _subplot_titles(fig, record: StepRecord) -> list[str]:
    return _texts(fig)[: _expected_rows(record)]


# ------------------------------------------------------------------------------------------------ inspector
def test_sampling_run_has_both_kinds_of_round(sampled):
    kinds = {r.emitted.kind for r in sampled.records if r.emitted is not None}
    assert kinds == {"bonus", "resampled"}
    assert any(t.decision == "accepted" for r in sampled.records for t in r.drafted)
    assert any(_sampled_rejection(r) for r in sampled.records)


def test_inspector_rows_height_and_json(sampled, greedy, ngram):
    for record in sampled.records + greedy.records + ngram.records:
        fig = round_inspector_figure(record)
        rows = _expected_rows(record)
        assert _n_rows(fig) == rows
        assert fig.layout.height >= max(300, 220 * rows)
        assert fig.layout.height <= 220 * rows + 150
        data = json.loads(fig.to_json())
        assert data["layout"]["height"] == fig.layout.height


def test_residual_series_exactly_at_sampled_rejections(sampled, greedy, ngram):
    seen = 0
    for record in sampled.records + greedy.records + ngram.records:
        fig = round_inspector_figure(record)
        residual = _bars(fig, RESIDUAL)
        if _sampled_rejection(record):
            seen += 1
            assert len(residual) == 1
            last = "y" if _expected_rows(record) == 1 else f"y{_expected_rows(record)}"
            assert residual[0].yaxis == last  # only in the resample row
            assert "resampled ↻" in " ".join(_texts(fig))
        else:
            assert residual == []
    assert seen >= 2


def test_sampling_titles_and_marks(sampled):
    for record in sampled.records:
        fig = round_inspector_figure(record)
        titles = _subplot_titles(fig, record)
        verified = [t for t in record.drafted if t.decision != "unverified"]
        for title, token in zip(titles, verified):
            assert title.startswith(f"position {token.position} · draft '")
            assert f"· {token.decision} (p=" in title
            assert "min(1,p/q)=" in title and "U=" in title
        marks = " ".join(_texts(fig))
        assert marks.count("drafted ✓ accepted") == sum(t.decision == "accepted" for t in verified)
        assert marks.count("drafted ✗ rejected") == sum(t.decision == "rejected" for t in verified)
        if record.emitted is not None and record.emitted.kind == "bonus":
            assert "bonus ★ from p" in marks
            assert titles[-1].startswith(f"position {record.emitted.position} · bonus '")


def test_marked_token_kept_beyond_the_cut(sampled):
    for record in sampled.records:
        fig = round_inspector_figure(record, max_candidates=2)
        p_bars = _bars(fig, "p (target)")
        verified = [t for t in record.drafted if t.decision != "unverified"]
        for trace, token in zip(p_bars, verified):
            ids = [row[1] for row in trace.customdata]
            assert token.id in ids and len(ids) <= 2
        if record.emitted is not None:
            ids = [row[1] for row in p_bars[-1].customdata]
            assert record.emitted.id in ids and len(ids) <= 3  # the emitted token (+ the rejected draft)


def test_hover_has_exact_numbers(sampled):
    record = next(r for r in sampled.records if _sampled_rejection(r))
    fig = round_inspector_figure(record)
    trace = _bars(fig, "p (target)")[-1]
    assert "p = %{customdata[2]}" in trace.hovertemplate and "residual = %{customdata[4]}" in trace.hovertemplate
    row = next(row for row in trace.customdata if row[1] == record.emitted.id)
    cand = next(c for c in record.emitted.candidates if c.id == record.emitted.id)
    assert float(row[2]) == pytest.approx(cand.p, rel=1e-5)
    assert float(row[4]) == pytest.approx(cand.residual, rel=1e-5, abs=1e-12)


def test_greedy_shows_q_no_residual_and_target_argmax(greedy):
    rejected = [r for r in greedy.records if r.emitted is not None and r.emitted.kind == "resampled"]
    assert rejected
    for record in rejected:
        fig = round_inspector_figure(record)
        assert _bars(fig, RESIDUAL) == []
        assert _bars(fig, "q (drafter)")
        assert "<b>target argmax</b>" in _texts(fig)
        titles = _subplot_titles(fig, record)
        assert "U=" not in titles[0] and "rank in p=" in titles[0]
        assert titles[-1].startswith(f"position {record.emitted.position} · target argmax")


def test_ngram_has_no_q_series_and_says_one_hot(ngram):
    drafted = [r for r in ngram.records if any(t.decision != "unverified" for t in r.drafted)]
    assert drafted
    for record in drafted:
        fig = round_inspector_figure(record)
        assert _bars(fig, "q (drafter)") == []
        assert "q (drafter)" not in {t.name for t in fig.data}
        assert any("q is one-hot on the drafted token" in text for text in _texts(fig))


def test_round_trip_record_gives_the_same_figure(sampled):
    record = sampled.records[0]
    again = StepRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert round_inspector_figure(again).to_json() == round_inspector_figure(record).to_json()


def test_inspector_empty_state():
    fig = round_inspector_figure(None)
    assert not fig.data
    assert fig.layout.height >= 300
    assert [a.text for a in fig.layout.annotations] == ["Step or Run to see a round"]
    json.loads(fig.to_json())


def test_inspector_escapes_and_shows_invisible_text():
    cands = [Candidate(1, "<b>x", 0.5, 0.4), Candidate(2, " a\n", 0.3, 0.3), Candidate(3, "", 0.2, 0.3)]
    token = DraftedToken(position=5, id=1, text="<b>x", decision="accepted", q=0.4, p=0.5, accept_prob=1.0, u=0.2,
                         candidates=cands)
    emitted = EmittedToken(position=6, id=3, text="", kind="bonus", p=0.2, rank_p=3,
                           candidates=[Candidate(3, "", 0.2, None), Candidate(2, " a\n", 0.1, None)])
    record = StepRecord(step=0, drafter="model", verifier="sampling", start_position=5, drafted=[token],
                        emitted=emitted, accepted=1, committed_ids=[1, 3], committed_text="", draft_ms=1.0,
                        verify_ms=1.0, prefill_ms=0.0, total_ms=2.0, target_cache_len=6, drafter_cache_len=6,
                        finished=False)
    fig = round_inspector_figure(record)
    ticks = " ".join(fig.layout.xaxis.ticktext)
    assert "&lt;b&gt;x" in ticks and "<b>x" not in ticks.replace("<b>&lt;", "")
    assert "␣a↵" in ticks and "∅" in ticks
    assert "'&lt;b&gt;x'" in _texts(fig)[0]


# ------------------------------------------------------------------------------------------------ stats
def test_stats_figure_from_a_real_run(sampled):
    summary = sampled.stats.summary()
    fig = stats_figure(summary)
    assert fig.layout.height == 300
    layout = fig.layout.to_plotly_json()
    assert {"xaxis", "xaxis2", "xaxis3"} <= set(layout)
    accept = next(t for t in fig.data if t.name == "acceptance")
    assert list(accept.x) == list(range(1, len(summary["per_position_acceptance"]) + 1))
    assert list(accept.y) == pytest.approx(summary["per_position_acceptance"])
    assert [row[0] for row in accept.customdata] == summary["reached"]
    hist = next(t for t in fig.data if t.name == "rounds")
    assert sum(hist.y) == summary["rounds"]
    assert list(hist.x) == list(range(max(int(k) for k in summary["accepted_hist"]) + 1))
    parts = {t.name: t.x[0] for t in fig.data if t.name in ("draft", "verify", "other", "prefill")}
    assert set(parts) == {"draft", "verify", "other", "prefill"}
    assert parts["draft"] == pytest.approx(1e3 * summary["draft_s"])
    assert sum(parts.values()) == pytest.approx(1e3 * (summary["total_s"] + summary["prefill_s"]))
    json.loads(fig.to_json())


@pytest.mark.parametrize("summary", [{}, None, {"rounds": 0}])
def test_stats_figure_empty(summary):
    fig = stats_figure(summary)
    assert not fig.data and fig.layout.height >= 300
    assert "No statistics yet" in fig.layout.annotations[0].text


# ------------------------------------------------------------------------------------------------ compare
def _summary(tps, tau=1.5, alpha=0.4):
    return {"tokens_per_second": tps, "tau": tau, "alpha": alpha}


def test_verdict_faster():
    text = compare_verdict("ngram (γ=5)", _summary(36.1, 1.9, 0.41), "early-exit (γ=5)", _summary(25.4, 1.1, 0.02))
    assert text == ("ngram (γ=5) is 1.42× faster than early-exit (γ=5): 36.1 vs 25.4 tok/s; "
                    "τ 1.90 vs 1.10, α 0.41 vs 0.02")


def test_verdict_slower_and_equal():
    assert compare_verdict("a", _summary(10.0), "b", _summary(20.0)).startswith("a is 2.00× slower than b: 10.0 vs")
    assert compare_verdict("a", _summary(10.0), "b", _summary(10.001)).startswith("a is about as fast as b")


def test_verdict_missing_values():
    text = compare_verdict("a", _summary(12.0, alpha=None), "b", _summary(None, tau=None))
    assert "could not be compared" in text and "12.0 vs — tok/s" in text
    assert "α — vs 0.40" in text and "τ 1.50 vs —" in text
    assert "could not be compared" in compare_verdict("a", _summary(0.0), "b", _summary(5.0))
    assert "could not be compared" in compare_verdict("a", {}, "b", {})


def test_verdict_from_real_summaries(sampled, greedy):
    text = compare_verdict("sampling", sampled.stats.summary(), "greedy", greedy.stats.summary())
    assert ("faster than greedy" in text or "slower than greedy" in text or "as fast as" in text)
    assert "tok/s; τ " in text and ", α " in text


def test_lossless_identical(greedy):
    html = lossless_html(check_lossless(greedy).to_dict())
    assert 'class="ds-badge same"' in html and "identical" in html
    assert "mode: greedy" in html and "target-only decoding:" in html and " s for 24 tokens" in html


def test_lossless_divergent_is_escaped():
    report = {"mode": "greedy", "identical": False, "compared": 10, "first_divergence": 3,
              "speculative_token": "<x>", "target_token": " y&", "target_ids": [1, 2, 3, 4], "target_seconds": 0.25,
              "message": "first divergence at generated token 3: speculative '<x>' vs target-only ' y&'"}
    html = lossless_html(report)
    assert 'class="ds-badge differs"' in html
    assert "first divergence at token 3: &#x27;&lt;x&gt;&#x27; vs &#x27; y&amp;&#x27;" in html
    assert "<x>" not in html
    assert "0.250 s for 4 tokens" in html
    sampling = lossless_html({**report, "mode": "sampling"})
    assert 'class="ds-badge expected"' in sampling and "mode: sampling" in sampling
