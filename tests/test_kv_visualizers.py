"""KV-importance visualizers on a real small report (tiny-llama target and drafter, two budgets) and on None: trace
metas, heatmap escaping and eviction marks, the kept grid's shape, the outputs table's marks."""

from __future__ import annotations

import dataclasses
import re

import pytest

from core.kv.records import KVReport
from core.kv.run import kv_report
from core.runtime.models import load_model
from visualizers.kv_importance import (
    budget_figure,
    correlation_figure,
    find_run,
    head_map_figure,
    kept_grid_figure,
    outputs_html,
    prompt_heatmap_html,
)

METHODS = ("snapkv", "streamingllm", "speckv", "specpc")


@pytest.fixture(scope="module")
def report() -> KVReport:
    return kv_report("tiny-llama", "tiny-llama", length=200, budgets=[32, 64], max_new_tokens=6)


@pytest.fixture(scope="module")
def token_text(report) -> dict[int, str]:
    model = load_model("tiny-llama")
    return {i: model.token_text(i) for run in [report.full, *report.runs] for i in run.output_ids}


def _metas(fig) -> list:
    return [t.meta for t in fig.data]


def _annotation(fig) -> str:
    return fig.layout.annotations[0].text


def test_report_shape(report):
    assert [r.method for r in report.runs] == [*METHODS, *METHODS]
    assert {r.budget for r in report.runs} == {32, 64}
    assert report.n_layers == 4 and report.n_kv_heads == 2


@pytest.mark.parametrize("method", METHODS)
def test_heatmap_marks_every_evicted_token(report, method):
    run = find_run(report, method, 32)
    html = prompt_heatmap_html(report, method, "method", budget=32)
    evicted = sum(1 for k in run.kept if k == 0)
    assert 0 < evicted < len(run.kept)
    assert html.count('class="kvt ev') == evicted
    assert html.count('class="kvt') == len(report.prompt_tokens)
    assert f"{evicted} of {len(report.prompt_tokens)} tokens evicted" in html


def test_heatmap_true_mode_marks_nothing_and_highlights_the_answer(report):
    html = prompt_heatmap_html(report, None, "true")
    assert 'class="kvt ev' not in html and html.count('class="kvt') == len(report.prompt_tokens)
    answer_tokens = len(re.findall(r'class="kvt[^"]* ans"', html))
    assert answer_tokens >= len(report.answer) // 2 and "answer</span>" in html  # the pass key appears twice
    both = prompt_heatmap_html(report, "speckv", "both")
    assert "box-shadow:inset" in both and "underline: true importance" in both


def test_heatmap_of_a_method_that_did_not_run_falls_back_to_the_truth(report):
    html = prompt_heatmap_html(report, "h2o", "method")
    assert "h2o was not run" in html and 'class="kvt ev' not in html


def test_heatmap_escapes_tokens_and_keeps_newlines(report):
    tokens = ["Hello", " <b>", "bold", "</b>", "\n", "x", ' "q"', " &"]
    n = len(tokens)
    run = dataclasses.replace(report.runs[0], scores=[0.5] * n, kept=[8, 0, 3, 8, 8, 0, 8, 8])
    small = dataclasses.replace(report, prompt_ids=list(range(n)), prompt_tokens=tokens, answer="bold",
                                true_importance=[0.1] * n, runs=[run])
    html = prompt_heatmap_html(small, run.method, "method")
    assert "&lt;b&gt;" in html and "&lt;/b&gt;" in html
    body = html.split('<div class="kv-prompt">', 1)[1]
    assert "<b>" not in body and "</b>" not in body and "&amp;" in body
    assert "↵</span>\n" in body  # the newline token shows a marker, then breaks the line
    assert body.count('class="kvt ev') == 2
    assert "kept in 3 of 8 caches" in body and "&quot;q&quot;" in body  # title attributes escape quotes
    assert len(re.findall(r'class="kvt[^"]* ans"', body)) == 1


def test_kept_grid_is_layers_by_heads(report):
    for run in report.runs:
        fig = kept_grid_figure(run, report.n_layers, report.n_kv_heads)
        grid = next(t for t in fig.data if t.meta == "grid")
        assert len(grid.z) == report.n_layers and all(len(row) == report.n_kv_heads for row in grid.z)
        assert grid.z[0][0] == pytest.approx(run.recall_lh[0][0])
        assert fig.layout.height and "kept fraction of the true top-" in fig.layout.title.text
        assert ("every head keeps the same tokens" in fig.layout.title.text) == (run.level == "tokens")


def test_head_map_kv_and_token_level(report):
    snap = find_run(report, "snapkv", 64)
    fig = head_map_figure(report, snap, 2, 1)
    assert _metas(fig) == ["scores", "true", "kept", "top"]
    scores, true, kept, top = fig.data
    assert list(scores.y) == pytest.approx(snap.head_scores[2][1])
    assert list(true.y) == pytest.approx(report.true_layer_importance[2])
    assert sorted(kept.x) == sorted(set(snap.head_kept[2][1])) and len(top.x) == 64
    assert fig.layout.height
    spec = find_run(report, "specpc", 32)
    fig = head_map_figure(report, spec, 0, 0)
    assert list(fig.data[0].y) == pytest.approx(spec.scores)
    assert len(fig.data[2].x) == sum(1 for k in spec.kept if k > 0)
    assert "Layer must be in 0..3" in _annotation(head_map_figure(report, snap, 7, 0))


def test_correlation_figure(report):
    fig = correlation_figure(report)
    assert _metas(fig) == [f"corr:{m}" for m in METHODS]  # scores do not depend on the budget here: one line each
    speckv = next(t for t in fig.data if t.meta == "corr:speckv")
    snapkv = next(t for t in fig.data if t.meta == "corr:snapkv")
    assert len(speckv.y) == report.n_layers and speckv.line.width > snapkv.line.width
    run = find_run(report, "speckv")
    fig = correlation_figure(report, run)
    scatter = next(t for t in fig.data if t.meta == "scatter")
    assert len(scatter.x) == len(report.prompt_tokens) and list(scatter.y) == pytest.approx(run.scores)
    assert fig.layout.height


def test_budget_figure(report):
    fig = budget_figure(report)
    metas = _metas(fig)
    for metric in ("accuracy", "agreement", "recall"):
        for method in METHODS:
            assert f"{metric}:{method}" in metas
    recall = next(t for t in fig.data if t.meta == "recall:snapkv")
    assert list(recall.x) == [32, 64]
    assert list(recall.y) == pytest.approx([find_run(report, "snapkv", b).recall for b in (32, 64)])
    averaged = budget_figure([report, report])  # two "seeds": the same averages
    assert list(next(t for t in averaged.data if t.meta == "recall:snapkv").y) == pytest.approx(list(recall.y))
    assert "two budgets" in _annotation(budget_figure(report.runs[:4]))


def test_outputs_table_marks_differing_tokens(report, token_text):
    html = outputs_html(report, token_text)
    reference = report.full.output_ids
    differ = sum(1 for run in report.runs for k, t in enumerate(run.output_ids)
                 if k >= len(reference) or reference[k] != t)
    assert html.count('class="kvo diff"') == differ
    same = sum(len(run.output_ids) for run in report.runs) - differ
    assert html.count('class="kvo same"') == same
    assert html.count('<tr class="kv-run"') == len(report.runs) and html.count('<tr class="kv-full"') == 1
    for method in METHODS:
        assert f'data-method="{method}"' in html
    assert "KiB" in html and "agreement" in html
    # a run that reproduces the full output has no marks
    copy = dataclasses.replace(report, runs=[dataclasses.replace(report.runs[0], output_ids=list(reference))])
    assert 'class="kvo diff"' not in outputs_html(copy, token_text)


def test_outputs_table_without_token_texts_counts_the_differences(report):
    html = outputs_html(report)
    assert "tokens differ)" in html or 'class="kvo' in html
    assert html.count('<tr class="kv-run"') == len(report.runs)


def test_none_and_empty_inputs_explain_themselves(report):
    assert "Run the methods" in prompt_heatmap_html(None)
    assert "Run the methods" in outputs_html(None)
    for fig in (kept_grid_figure(None, 0, 0), head_map_figure(None, None, 0, 0), correlation_figure(None),
                budget_figure(None), budget_figure([]), kept_grid_figure(report.full, 4, 2),
                head_map_figure(report, None, 0, 0),
                correlation_figure(dataclasses.replace(report, runs=[]))):
        assert fig.layout.height and fig.layout.annotations and not fig.data
    empty = dataclasses.replace(report, prompt_ids=[], prompt_tokens=[], runs=[])
    assert "Run the methods" in prompt_heatmap_html(empty)
    assert "No method ran" in outputs_html(empty)
