"""Production metrics: engines' Prometheus dumps (tests/data/metrics, written in each engine's exposition format) as
acceptance profiles, DraftScope's own statistics as the same profiles, the comparison figure and the tab's handler."""

from __future__ import annotations

import json
from pathlib import Path

import plotly.graph_objects as go
import pytest

from app import metrics_tab as tab
from core.errors import DraftScopeError
from core.specdec import Session, SessionConfig
from core.specdec.prod_metrics import (
    MAX_DUMP_BYTES,
    AcceptanceProfile,
    load_matrix,
    matrix_choices,
    parse_metrics,
    profile_for_choice,
    profile_from_matrix_row,
    profile_from_stats,
    shipped_matrices,
)
from core.specdec.records import Stats
from tests.helpers import app_error
from visualizers.acceptance import acceptance_compare_figure, metrics_table_html

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a request warns instead

DATA = Path(__file__).parent / "data" / "metrics"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def dump(name: str) -> str:
    return (DATA / name).read_text()


def vllm_counters(drafts: int, draft_tokens: int, per_pos: list[int], accepted: int | None = None) -> str:
    """A minimal vLLM dump with one label set, as prometheus_client writes it."""
    lines = []
    labels = f'engine="0",model_name="{MODEL}"'
    for name, value in (("drafts", drafts), ("draft_tokens", draft_tokens),
                        ("accepted_tokens", sum(per_pos) if accepted is None else accepted)):
        lines += [f"# TYPE vllm:spec_decode_num_{name}_total counter",
                  f"vllm:spec_decode_num_{name}_total{{{labels}}} {float(value)}"]
    lines.append("# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter")
    lines += [f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{labels},position="{i}"}} {float(v)}'
              for i, v in enumerate(per_pos)]
    return "\n".join(lines) + "\n"


def stats_of(rounds: list[tuple[int, int, int, int]]) -> Stats:
    """A real Stats fed (drafted, accepted, committed, verified) per round."""
    stats = Stats()
    for drafted, accepted, committed, verified in rounds:
        stats.add_round(drafted, accepted, committed, verified, 0.0, 0.0, 0.0)
    return stats


# ------------------------------------------------------------------------------------------------ each engine's dump
def test_vllm_dump_gives_one_profile_per_engine_label_set():
    engine0, engine1 = parse_metrics(dump("vllm_eagle3_dp2.txt"))
    assert (engine0.source, engine0.labels) == ("vllm", {"model_name": MODEL, "engine": "0"})
    assert "engine 0" in engine0.label and MODEL in engine0.label
    assert (engine0.drafts, engine0.draft_tokens, engine0.accepted_tokens) == (12000, 36000, 19844)
    assert engine0.accepted_per_pos == [9120, 6384, 4340] and engine0.reached_per_pos is None
    assert (engine1.drafts, engine1.accepted_per_pos) == (11500, [8740, 6120, 4150])
    assert engine0.alpha == pytest.approx(19844 / 36000) and engine0.mean_length == pytest.approx(1 + 19844 / 12000)
    assert not engine0.notes  # fixed 3-token drafts: the derived conditional rates are exact


def test_vllm_engines_are_added_up_when_asked():
    (both,) = parse_metrics(dump("vllm_eagle3_dp2.txt"), engine="vllm", sum_engines=True)
    assert (both.drafts, both.draft_tokens, both.accepted_tokens) == (23500, 70500, 19844 + 19010)
    assert both.accepted_per_pos == [9120 + 8740, 6384 + 6120, 4340 + 4150]
    assert both.labels == {"model_name": MODEL} and "2 engines" in both.label
    assert any("summed over engines 0, 1" in n for n in both.notes)


def test_llamacpp_dump_has_per_position_counters_and_variable_drafts():
    (p,) = parse_metrics(dump("llamacpp_draft.txt"))
    assert (p.source, p.label, p.labels) == ("llamacpp", "llama.cpp", {})
    assert (p.drafts, p.draft_tokens, p.accepted_tokens) == (2400, 11850, 6600)
    assert p.accepted_per_pos == [1850, 1420, 1090, 820, 600, 410, 260, 150]
    assert sum(p.accepted_per_pos) == p.accepted_tokens
    assert any("lower bounds" in n for n in p.notes)  # 4.94 tokens per draft on average, not a fixed 8


def test_sglang_dump_gives_only_length_and_rate():
    (p,) = parse_metrics(dump("sglang_eagle.txt"))
    assert p.source == "sglang" and p.label == f"SGLang · {MODEL}"  # rank labels at 0 are not shown
    assert p.mean_length == 3.12 and p.alpha == 0.706
    assert p.drafts is None and p.accepted_per_pos == [] and p.conditional == [] and p.unconditional == []
    assert any("per-position acceptance is not available" in n for n in p.notes)
    assert any("= 3.00" in n for n in p.notes)  # (3.12 − 1) / 0.706


def test_auto_finds_every_engine_and_an_explicit_engine_only_its_own():
    both = parse_metrics(dump("llamacpp_draft.txt") + dump("sglang_eagle.txt"))
    assert [p.source for p in both] == ["llamacpp", "sglang"]
    assert [p.source for p in parse_metrics(dump("llamacpp_draft.txt") + dump("sglang_eagle.txt"), "sglang")] == [
        "sglang"]
    with pytest.raises(DraftScopeError, match="no SGLang speculative-decoding counters"):
        parse_metrics(dump("vllm_eagle3_dp2.txt"), engine="sglang")


# ------------------------------------------------------------------------------------------------ the two conventions
def test_conversion_between_conventions_on_a_hand_computed_example():
    (p,) = parse_metrics(vllm_counters(drafts=10, draft_tokens=30, per_pos=[8, 6, 3]))
    assert p.unconditional == pytest.approx([0.8, 0.6, 0.3])  # accepted at i / drafts
    assert p.reached == [10, 8, 6]  # reached(0) = drafts, reached(i) = accepted(i − 1)
    assert p.conditional == pytest.approx([0.8, 0.75, 0.5])
    assert p.alpha == pytest.approx(17 / 30) and p.mean_length == pytest.approx(2.7)
    back = AcceptanceProfile.from_dict(json.loads(json.dumps(p.to_dict())))
    assert back == p and back.to_dict()["conditional"] == pytest.approx([0.8, 0.75, 0.5])


def test_derived_reached_equals_measured_for_fixed_length_drafts():
    """With γ = 3 drafts every round, reached(i) = accepted(i − 1): the engine convention loses nothing."""
    stats = stats_of([(3, a, a + 1, min(a + 1, 3)) for a in (0, 3, 1, 2, 3, 0, 2)])
    measured = profile_from_stats(stats.summary(), "fixed γ")
    derived = AcceptanceProfile.from_dict({**measured.to_dict(), "reached_per_pos": None})
    assert derived.reached == measured.reached == stats.reached
    assert derived.conditional == pytest.approx(stats.per_position_acceptance)


def test_profile_from_stats_keeps_measured_reached_counts():
    # rounds: 2 of 3 accepted; all 3 accepted; the first rejected; no draft at all
    stats = stats_of([(3, 2, 3, 3), (3, 3, 4, 3), (3, 0, 1, 1), (0, 0, 1, 0)])
    p = profile_from_stats(stats.summary(), "DraftScope · hand")
    assert (p.drafts, p.draft_tokens, p.accepted_tokens) == (3, 9, 5)
    assert (p.accepted_per_pos, p.reached_per_pos) == ([2, 2, 1], [3, 2, 2])
    assert p.conditional == pytest.approx(stats.per_position_acceptance)
    assert p.conditional == pytest.approx([2 / 3, 1.0, 0.5])
    assert p.unconditional == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    assert p.mean_length == pytest.approx(1 + 5 / 3) and p.tau == stats.tau == 9 / 4
    assert any("1 of 4 rounds verified no draft token" in n for n in p.notes)


def test_profile_from_a_real_tiny_model_session(tiny_llama):
    session = Session.from_config(SessionConfig(target="tiny-llama", drafter="ngram", max_new_tokens=24),
                                  prompt="the cat sat on the mat. the cat sat on the mat. the cat sat on the")
    for _ in session.run():
        pass
    summary = session.stats.summary()
    p = profile_from_stats(summary, "DraftScope · tiny-llama · ngram")
    assert p.source == "draftscope" and p.tau == summary["tau"]
    assert p.drafts == (summary["reached"] or [0])[0] <= summary["rounds"]
    assert (p.draft_tokens, p.accepted_tokens) == (summary["drafted"], summary["accepted"])
    assert sum(p.accepted_per_pos) == p.accepted_tokens <= p.draft_tokens
    assert p.reached_per_pos == summary["reached"]
    assert p.conditional == pytest.approx(summary["per_position_acceptance"])


def test_matrix_rows_and_shipped_files(tmp_path):
    block = {k: v for k, v in stats_of([(3, 2, 3, 3), (3, 0, 1, 1)]).summary().items()
             if k in ("rounds", "drafted", "accepted", "reached", "accepted_at", "target_calls", "generated")}
    row = {"config": "ngram-g3", "drafter": "ngram", "overall": block, "by_category": {"math": block}}
    p = profile_from_matrix_row(row, target="tiny-llama")
    assert p.label == "DraftScope · tiny-llama · ngram-g3" and p.accepted_per_pos == [1, 1, 0]
    assert profile_from_matrix_row(row, "math").label.endswith("math")
    with pytest.raises(DraftScopeError, match="has no block for category 'code'"):
        profile_from_matrix_row(row, "code")
    baseline = {"config": "none", "drafter": "none", "overall": {**block, "drafted": 0}, "by_category": {}}
    matrix = {"schema": "draftscope.matrix", "version": 1, "target": "tiny-llama", "rows": [baseline, row],
              "categories": ["math"], "prompts": ["1"], "max_new_tokens": 8}
    (tmp_path / "matrix-tiny-llama.json").write_text(json.dumps(matrix))
    matrices = shipped_matrices(tmp_path)
    choices = matrix_choices(matrices)
    assert [label for label, _ in choices] == ["tiny-llama · ngram-g3 · all prompts", "tiny-llama · ngram-g3 · math"]
    assert profile_for_choice(matrices, choices[1][1]).accepted_per_pos == [1, 1, 0]
    assert shipped_matrices(tmp_path / "nothing-here") == {}
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(DraftScopeError, match=r"not a DraftScope matrix"):
        load_matrix(tmp_path / "bad.json")


# ------------------------------------------------------------------------------------------------ bad input
BAD = [
    (dump("garbage.html"), "not Prometheus text format"),
    ("", "empty"),
    ("  \n\t\n", "empty"),
    ("# HELP nothing here\n", "no metric samples"),
    (dump("vllm_no_spec.txt"), "this dump has no speculative-decoding counters; found: .*vllm:num_requests_running"),
    (dump("vllm_inconsistent.txt"), "41,000 accepted tokens but only 34,500 draft tokens"),
    (vllm_counters(10, 30, [8, 6, 3], accepted=20), "per-position counts add up to 17, the accepted tokens are 20"),
    (vllm_counters(10, 30, [8, 9, 3]), "must not grow with the position"),
    (vllm_counters(10, 5, [3, 1, 1]), "10 drafts but only 5 draft tokens"),
    (vllm_counters(10, 30, [8, 6, 3]).replace('position="1"', 'position="4"'), "skip positions"),
    (vllm_counters(10, 30, [8, 6, 3]).replace("17.0", "NaN"), "not a number"),
    (vllm_counters(10, 30, [8, 6, 3]).replace("30.0", "30.5"), "whole number"),
    ("\n".join(x for x in vllm_counters(10, 30, [8]).splitlines() if "num_drafts" not in x),
     "incomplete .* no vllm:spec_decode_num_drafts_total"),
    (dump("llamacpp_draft.txt").replace("11850", "0").replace("6600", "0").replace("2400", "0").replace(
        "\nllamacpp:spec_decode_num_accepted_tokens_per_pos", "\n#"), "all 0"),
    (dump("sglang_eagle.txt").replace("} 3.12", "} 0.0"), "read 0"),
    (dump("sglang_eagle.txt").replace("} 0.706", "} 1.7"), "not a rate between 0 and 1"),
    ("x" * (MAX_DUMP_BYTES + 1), "limit is 4.0 MiB"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=range(len(BAD)))
def test_each_bad_dump_raises_one_clear_error(text, message):
    with pytest.raises(DraftScopeError, match=message):
        parse_metrics(text)


def test_bad_statistics_raise_clear_errors():
    good = stats_of([(3, 2, 3, 3)]).summary()
    with pytest.raises(DraftScopeError, match="lacks accepted_at"):
        profile_from_stats({k: v for k, v in good.items() if k != "accepted_at"}, "x")
    with pytest.raises(DraftScopeError, match="add up to 2, the accepted tokens are 3"):
        profile_from_stats({**good, "accepted": 3}, "x")
    with pytest.raises(DraftScopeError, match="accepted more often than reached"):
        profile_from_stats({**good, "accepted_at": [1, 2, 0]}, "x")
    with pytest.raises(DraftScopeError, match="unknown engine"):
        parse_metrics(dump("llamacpp_draft.txt"), engine="tgi")


# ------------------------------------------------------------------------------------------------ figure and table
def test_figure_has_both_conventions_per_profile():
    stats = stats_of([(3, 2, 3, 3), (3, 3, 4, 3), (3, 0, 1, 1)])
    profiles = [*parse_metrics(dump("vllm_eagle3_dp2.txt"), sum_engines=True), *parse_metrics(dump("sglang_eagle.txt")),
                profile_from_stats(stats.summary(), "DraftScope · hand")]
    fig = acceptance_compare_figure([p.to_dict() for p in profiles])  # the app passes plain dicts
    assert isinstance(fig, go.Figure)
    vllm = [t for t in fig.data if t.name and t.name.startswith("vLLM")]
    assert len(vllm) == 2 and {t.xaxis for t in vllm} == {"x", "x2"}  # conditional | unconditional
    assert "α 0.551" in vllm[0].name and "mean acceptance length 2.65" in vllm[0].name
    assert list(vllm[0].y) == pytest.approx([17860 / 23500, 12504 / 17860, 8490 / 12504])
    assert list(vllm[1].y) == pytest.approx([17860 / 23500, 12504 / 23500, 8490 / 23500])
    assert vllm[0].line.dash == "dash"  # derived from the counts
    ours = [t for t in fig.data if t.name and t.name.startswith("DraftScope")]
    assert len(ours) == 2 and ours[0].line.dash == "solid" and list(ours[0].y) == pytest.approx([2 / 3, 1.0, 0.5])
    (sglang,) = [t for t in fig.data if t.name and t.name.startswith("SGLang")]
    assert "no per-position data" in sglang.name and "α 0.706" in sglang.name
    assert "not available from SGLang" in fig.layout.title.text and "dashed: derived" in fig.layout.title.text
    html = metrics_table_html(profiles)
    assert "23,500" in html and "not available" in html and "2.667" in html  # τ of the hand-fed run: 8 tokens / 3 calls
    assert not acceptance_compare_figure([]).data and "No profiles" in metrics_table_html([])


# ------------------------------------------------------------------------------------------------ the tab's handler
def test_tab_compares_a_good_dump_and_warns_on_a_bad_one(tmp_path, monkeypatch):
    fig, table, status = tab.compare(dump("vllm_eagle3_dp2.txt"), None, "auto", True, None)
    assert status.startswith("Showing vLLM") and len(fig.data) == 2 and "70,500" in table
    upload = tmp_path / "metrics.txt"
    upload.write_text(dump("llamacpp_draft.txt"))
    fig, _, status = tab.compare("ignored when a file is uploaded", str(upload), "auto", False, None)
    assert "llama.cpp" in status and len(fig.data) == 2
    for text in (dump("garbage.html"), dump("vllm_no_spec.txt"), ""):
        app_error(tab.compare, text, None, "auto", False, None)  # a gr.Error: the previous outputs stay
    block = stats_of([(3, 2, 3, 3)]).summary()
    (tmp_path / "matrix-tiny-llama.json").write_text(json.dumps({
        "schema": "draftscope.matrix", "version": 1, "target": "tiny-llama", "categories": [], "prompts": ["1"],
        "max_new_tokens": 8,
        "rows": [{"config": "ngram-g3", "drafter": "ngram", "overall": block, "by_category": {}}]}))
    monkeypatch.setattr(tab, "shipped_matrices", lambda: shipped_matrices(tmp_path))
    (choice,) = [key for _, key in tab.matrix_choices(tab._matrices()[0])]
    fig, _, status = tab.compare(dump("vllm_eagle3_dp2.txt"), None, "vllm", True, choice)
    assert "DraftScope · tiny-llama · ngram-g3" in status and len(fig.data) == 4
    example = tab.load_example()  # the shipped row's real counts, written in vLLM's format, parse back to the same
    (parsed,) = parse_metrics(example)
    assert parsed.source == "vllm" and "ngram-g3" in parsed.label
    assert (parsed.drafts, parsed.draft_tokens, parsed.accepted_tokens) == (
        block["reached"][0], block["drafted"], block["accepted"])
    assert parsed.accepted_per_pos == block["accepted_at"]
    monkeypatch.setattr(tab, "shipped_matrices", lambda: shipped_matrices(tmp_path / "none"))
    assert tab._matrices() == ({}, tab.NO_MATRIX)
    assert "No benchmark matrix" in app_error(tab.load_example)  # no matrix: an error, the text box kept
