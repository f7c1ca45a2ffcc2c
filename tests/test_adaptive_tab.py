"""The Adaptive & parallel tab's handlers and figures, called directly on the tiny random target (the browser test
drives the page). ADED starts from an empty store that learns the prompt (the shipped store is SmolLM2's); PEARL wraps
the n-gram drafter. Wall-clock numbers are shown, never asserted."""

from __future__ import annotations

import json
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import plotly.graph_objects as go
import pytest

from app import adaptive_tab as tab, common
from core.specdec.records import TreeStepRecord
from visualizers.adaptive import (
    adaptation_figure,
    aded_round_figure,
    gamma_figure,
    measured_segments,
    modelled_segments,
    pearl_gantt_figure,
    rolling_mean,
    round_gammas,
    sweep_heatmaps,
)

PROMPT = "the cat sat on the mat. the cat sat on the"  # repeats itself: n-grams and ADED find drafts
SHARED = {"target": "tiny-llama", "prompt": PROMPT, "chat": False, "max_new_tokens": 10, "temperature": 0.0,
          "seed": 0}
ADED = {"gamma": 4, "shape": "budget:8", "store": "empty", "iterations": 40, "learn_prompt": True, "min_share": 0.0}
PEARL = {"gamma": 3, "base": "ngram", "base_options": "", "threads": 2}
GAMMA = {"drafter": "ngram", "gamma": 3, "schedule": "heuristic", "confidence": 0.0, "greedy_draft": False}


def no_progress(*args, **kwargs) -> None:
    """Stands in for gr.Progress."""


@pytest.fixture(scope="module")
def handlers() -> tab.Handlers:
    return tab.Handlers()


def _metas(fig: go.Figure) -> list:
    return [t.meta for t in fig.data]


def _aded(handlers, **kw) -> dict:
    names = ("state", "view", "slider", "graph", "curve", "status", "records")
    return dict(zip(names, handlers.run_aded(**{**SHARED, **ADED, **kw}, progress=no_progress), strict=True))


def test_aded_compares_adaptation_and_shows_each_rounds_search(handlers, tmp_path):
    out = _aded(handlers)
    runs = common.held(out["state"])["runs"]
    assert list(runs) == ["adapt on", "adapt off"] and all(runs.values())
    path = tmp_path / "aded.json"  # the records JSON is a trace that loads back into the same views, with no model
    path.write_text(json.dumps(out["records"]))
    names = ("state", "view", "slider", "graph", "curve", "status", "records")
    loaded = dict(zip(names, handlers.load_aded(str(path)), strict=True))
    assert common.held(loaded["state"])["runs"] == runs and loaded["curve"].to_json() == out["curve"].to_json()
    assert loaded["status"].startswith("Loaded trace: ") and "adapt off" in loaded["status"]
    assert out["view"]["value"] == "adapt on" and out["slider"]["maximum"] >= 1
    assert "mean search" in out["status"] and "ms per round" in out["status"] and "adapt off" in out["status"]

    record = runs["adapt on"][out["slider"]["value"]]
    assert isinstance(record, TreeStepRecord) and record.nodes  # the first round that drafted
    nodes = record.draft_info["nodes"]
    assert len(nodes) == len(record.nodes) and {"visits", "value", "prior", "extension"} <= set(nodes[0])
    graph = out["graph"]
    assert "visits" in _metas(graph) and "root" in [t.name for t in graph.data]
    labelled = [a.text for a in graph.layout.annotations if "<sub>" in a.text]
    assert len(labelled) == sum(not n["extension"] for n in nodes)  # every searched node shows its visits
    assert "ADED search" in graph.layout.title.text

    curve = out["curve"]  # per run: accepted, its rolling mean, the boosted rows
    assert _metas(curve) == ["accepted", "rolling", "boosted_keys"] * 2
    boosted_on, boosted_off = (t.y for t in curve.data if t.meta == "boosted_keys")
    assert boosted_on[-1] > boosted_off[-1]  # adapt off: only the prompt's rows, learned once
    assert len(set(boosted_off)) == 1

    slider, figure = handlers.show_run(out["state"], "adapt off")
    assert slider["maximum"] == max(len(runs["adapt off"]) - 1, 1) and isinstance(figure, go.Figure)
    assert handlers.show_round(out["state"], "adapt off", 999).data  # clamped to the last round


def test_aded_chain_rounds_plot_visits_value_and_prior(handlers):
    out = _aded(handlers, shape="chain")
    record = common.held(out["state"])["runs"]["adapt on"][out["slider"]["value"]]
    assert record.drafted and not isinstance(record, TreeStepRecord)
    fig = aded_round_figure(record)
    assert {"visits", "value", "prior"} <= set(_metas(fig))
    assert sum(len(t.x) for t in fig.data if t.meta == "visits") == len(record.drafted)
    assert "Chain rounds" in out["status"]


def test_pearl_runs_parallel_and_serial_and_models_two_devices(handlers):
    figure, status, _records = handlers.run_pearl(**{**SHARED, **PEARL}, progress=no_progress)
    titles = [a.text for a in figure.layout.annotations]
    assert titles[0].startswith("Measured, parallel") and titles[1].startswith("Measured, serial")
    assert titles[2].startswith("Model (not measured): two devices") and all(" ms" in t for t in titles)
    assert "pre" in _metas(figure) and {"draft", "target"} == {y for t in figure.data for y in t.y}
    assert "same tokens" in status, status


def test_gantt_segments_follow_the_lanes(handlers):
    from core.specdec import Session, SessionConfig

    config = SessionConfig(target="tiny-llama", drafter="pearl", gamma=3, max_new_tokens=8,
                           drafter_options={"base": "ngram", "parallel": False, "threads": 2})
    session = Session.from_config(config, prompt=PROMPT)
    for _ in session.run():
        pass
    records = session.records
    measured, total = measured_segments(records)
    assert total >= sum(r.total_ms for r in records) - 1e-6
    assert all(s.lane in ("draft", "target") and s.end >= s.start for s in measured)
    assert {s.kind for s in measured} >= {"pre", "prefill", "checks"}
    modelled, model_total = modelled_segments(records)
    expected = records[0].prefill_ms
    for r in records:
        (d0, d1), (t0, t1) = r.draft_info["draft_lane"], r.draft_info["target_lane"]
        expected += max(d1 - d0, t1 - t0) + r.draft_info["verify_end"] - max(d1, t1)
    assert model_total == pytest.approx(expected)
    for r in records:  # both lanes of a modelled round start together
        starts = {s.start for s in modelled if s.round == r.step and s.kind not in ("checks", "prefill")}
        assert len(starts) == 1
    assert len(pearl_gantt_figure(None, records).layout.annotations) == 2  # serial only: measured + model


def test_adaptive_gamma_per_round(handlers):
    figure, status, _records = handlers.run_gamma(**{**SHARED, **GAMMA}, progress=no_progress)
    assert _metas(figure) == ["drafted", "accepted", "gamma"] and "schedule heuristic" in status
    gammas = list(figure.data[2].y)
    assert gammas[0] == 3 and figure.data[2].name == "γ this round"
    for before, after, drafted, accepted in zip(gammas, gammas[1:], figure.data[0].y, figure.data[1].y):
        if drafted:  # the heuristic: +2 after a fully accepted draft, −1 otherwise (at least 1)
            assert after == (before + 2 if accepted == drafted else max(1, before - 1))
    figure, status, _records = handlers.run_gamma(**{**SHARED, **GAMMA, "schedule": "constant", "confidence": 0.5},
                                        progress=no_progress)
    assert "no probabilities" in status  # n-grams have no confidence to stop on
    assert set(figure.data[2].y) == {3} and figure.data[2].name.startswith("γ (constant")


def test_sweep_heatmaps(handlers, monkeypatch):
    monkeypatch.setattr(tab, "SWEEP_GAMMAS", (1, 3))
    monkeypatch.setattr(tab, "SWEEP_SIZES", (1, 3))
    figure, status = handlers.run_sweep(SHARED["target"], PROMPT, False, 3, 0.0, 0, progress=no_progress)
    assert _metas(figure) == ["tokens_per_second", "tau"] and "4 runs of 3 new tokens" in status
    for trace in figure.data:
        assert list(trace.x) == ["γ=1", "γ=3"] and list(trace.y) == ["n=1", "n=3"]
        assert all(v is not None for row in trace.z for v in row) and trace.texttemplate
    assert [tab.min_ngram_size(n) for n in (1, 2, 3, 4)] == [1, 2, 2, 2]


def test_figures_on_plain_data():
    rows = [{"gamma": g, "ngram_size": n, "tau": 1 + g / 10, "tokens_per_second": 10.0 * n + g}
            for g in tab.SWEEP_GAMMAS for n in tab.SWEEP_SIZES]
    fig = sweep_heatmaps(rows)
    assert [len(t.z) for t in fig.data] == [4, 4] and [len(t.z[0]) for t in fig.data] == [5, 5]
    assert "γ = 8, n = 4" in fig.layout.title.text
    assert rolling_mean([0, 2, 4, 6, 8, 10], 3) == [0, 1, 2, 4, 6, 8]
    for empty in (sweep_heatmaps([]), gamma_figure([]), adaptation_figure({}), pearl_gantt_figure(None, None),
                  aded_round_figure(None)):
        assert not empty.data and empty.layout.annotations
    assert round_gammas([]) == ([], False)


@pytest.mark.parametrize(("handler", "kw", "message"), [
    ("run_pearl", {**PEARL, "base_options": "{exit_layer: 2"}, "JSON object"),
    ("run_pearl", {**PEARL, "base_options": "[1, 2]"}, "JSON object"),
    ("run_pearl", {**PEARL, "gamma": 0}, "γ must be a whole number in 1..64"),
    ("run_aded", {**ADED, "prompt": "   "}, "prompt is empty"),
    ("run_aded", {**ADED, "gamma": 65}, "γ must be a whole number"),
    ("run_aded", {**ADED, "store": "corpus"}, "store=empty"),
    ("run_aded", {**ADED, "shape": "budget:x"}, "tree"),
    ("run_gamma", {**GAMMA, "gamma": 2.5}, "γ must be a whole number"),
    ("run_gamma", {**GAMMA, "max_new_tokens": 9999}, "max new tokens"),
    ("run_gamma", {**GAMMA, "confidence": 1.0}, "confidence threshold"),
    ("run_gamma", {**GAMMA, "drafter": "pearl"}, "pick a chain drafter"),
])
def test_bad_input_is_a_gr_error(handlers, handler, kw, message):
    with pytest.raises(gr.Error) as caught:
        getattr(handlers, handler)(**{**SHARED, **kw}, progress=no_progress)
    assert message in caught.value.message and "Traceback" not in caught.value.message


def test_bad_sweep_input_is_a_gr_error(handlers):
    with pytest.raises(gr.Error, match="sweep tokens"):
        handlers.run_sweep("tiny-llama", PROMPT, False, 500, 0.0, 0, progress=no_progress)
    with pytest.raises(gr.Error, match="prompt is empty"):
        handlers.run_sweep("tiny-llama", "", False, 4, 0.0, 0, progress=no_progress)
