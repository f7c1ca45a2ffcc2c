"""The travel task (our reading of TravelPlanner): eight requirements of one traveller scattered through long listings.
The generator, where each requirement sits in the prompt, the per-requirement probes of each compressed cache (the
full cache's answers equal decoding prompt + probe from scratch), what each run reports kept, the CLI's per-requirement
columns, the requirements chart and the KV tab's status (tiny-llama: random weights, so only the mechanics count)."""

from __future__ import annotations

import json

import pytest
import torch

from core.cli import main as cli_main
from core.kv.base import prefill
from core.kv.run import PROBE_TOKENS, decode, kv_report
from core.kv.tasks import FORM, LENGTH_TASKS, Constraint, Task, constraint_tokens, make_task
from visualizers.kv_importance import constraints_figure, prompt_heatmap_html

METHODS = ["snapkv", "streamingllm", "specpc"]


@pytest.fixture(scope="module")
def report(tiny_llama):
    return kv_report(tiny_llama, tiny_llama, task="travel", length=320, methods=METHODS, budgets=[48],
                     max_new_tokens=4, seed=1)


def test_travel_task(tiny_llama):
    tok = tiny_llama.tokenizer
    task = make_task("travel", tok, length=400, seed=5)
    assert "travel" in LENGTH_TASKS and task.answer is None
    assert [c.name for c in task.constraints] == list(FORM) and len(task.constraints) == 8
    n = len(tok(task.prompt)["input_ids"])
    assert 360 <= n <= 440, n
    for c in task.constraints:
        assert task.prompt.count(c.statement) == 1 and c.value in c.statement and c.label == FORM[c.name]
        assert c.label in c.probe
    assert task.prompt.index(task.constraints[0].statement) > 0  # among the listings, not first
    assert make_task("travel", tok, length=400, seed=5).prompt == task.prompt  # a seed is one instance
    assert make_task("travel", tok, length=400, seed=6).prompt != task.prompt
    tokens = [tiny_llama.token_text(t) for t in tiny_llama.encode(task.prompt)]
    for c in task.constraints:
        span = constraint_tokens(tokens, c)
        assert span and c.value in "".join(tokens[i] for i in span)
        assert len("".join(tokens[i] for i in span)) < len(c.value) + 12  # the value's tokens, not the sentence
    assert constraint_tokens(tokens, Constraint("x", "X", "Mars", "Note from the traveller. X: Mars.")) == []


def test_answers_and_score():
    c = [Constraint("days", "Days", "5", "Days: 5."), Constraint("cuisine", "Cuisine", "Thai", "Cuisine: Thai.")]
    task = Task("travel", "prompt", None, c)
    assert task.answered(c[0], " 5 days") and not task.answered(c[0], " 52") and not task.answered(c[0], " five")
    assert task.answered(c[1], " thai.") and not task.answered(c[1], " Thailand") and not task.answered(c[1], " no")
    assert task.score("", [" 5.", " Greek"]) == 0.5 and task.score("") is None
    assert Task("passkey", "p", "123").score("it is 123") == 1.0


def test_full_cache_probes_equal_decoding_from_scratch(report, tiny_llama):
    """The probes are appended to the cache at the right positions: the full cache's answer to each equals a greedy
    decode of prompt + probe from an empty cache."""
    task = make_task("travel", tiny_llama.tokenizer, 320, 1)
    for c, row in zip(task.constraints, report.full.constraints, strict=True):
        ids = report.prompt_ids + tiny_llama.tokenizer(c.probe, add_special_tokens=False)["input_ids"]
        cache, logits, _ = prefill(tiny_llama, ids)
        expected = tiny_llama.decode(decode(tiny_llama, cache, logits[-1], len(ids), PROBE_TOKENS))
        assert row["answer"] == expected and row["met"] == task.answered(c, expected)
        assert row["kept"] == 1.0
    assert report.full.accuracy == pytest.approx(sum(r["met"] for r in report.full.constraints) / 8)


def test_runs_report_what_they_kept(report):
    L, H = report.n_layers, report.n_kv_heads
    assert [c["name"] for c in report.constraints] == list(FORM)
    for run in report.runs:
        assert [c["name"] for c in run.constraints] == list(FORM)
        for spec, row in zip(report.constraints, run.constraints, strict=True):
            assert spec["tokens"] and row["kept"] == pytest.approx(
                sum(run.kept[i] for i in spec["tokens"]) / (len(spec["tokens"]) * L * H), abs=1e-4)
        assert run.accuracy == pytest.approx(sum(c["met"] for c in run.constraints) / 8)
        assert run.to_row()["constraints"] == {c["name"]: c["met"] for c in run.constraints}
    streaming = next(r for r in report.runs if r.method == "streamingllm")
    n = len(report.prompt_ids)
    for spec, row in zip(report.constraints, streaming.constraints, strict=True):  # sinks + the last positions only
        inside = all(4 <= i < n - 44 for i in spec["tokens"])
        assert (row["kept"] == 0) if inside else True


def test_probing_leaves_the_cache_alone(tiny_llama):
    from core.kv.run import probe_constraints

    task = make_task("travel", tiny_llama.tokenizer, 200, 0)
    ids = tiny_llama.encode(task.prompt)
    cache, _, _ = prefill(tiny_llama, ids)
    before = [layer.keys.clone() for layer in cache.layers]
    answers = probe_constraints(tiny_llama, cache, len(ids), task)
    assert len(answers) == 8 and all(isinstance(a, str) for a in answers)
    assert all(torch.equal(a, layer.keys) for a, layer in zip(before, cache.layers, strict=True))


def test_chart_and_heatmap(report):
    fig = constraints_figure(report)
    heat = fig.data[0]
    assert len(heat.y) == 8 and len(heat.x) == 1 + len(METHODS) and heat.x[0].startswith("full cache")
    assert heat.z[0][0] == 1.0 and {t for row in heat.text for t in row} <= {"✓", "✗"}
    assert all("of 8 ✓" in x for x in heat.x)
    assert "Choose the travel task" in constraints_figure(None).layout.annotations[0].text
    html = prompt_heatmap_html(report, "snapkv")
    assert html.count(" ans\"") + html.count(" ans ") >= 8 and "traveller" in html


def test_cli_columns(capsys):
    code = cli_main(["kv", "--target", "tiny-llama", "--task", "travel", "--length", "200", "--budget", "32",
                     "--max-new-tokens", "2", "--methods", "snapkv", "--samples", "2", "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert {f"met {name}" for name in FORM} <= set(rows[0]) and rows[0]["samples"] == 2
    for row in rows:
        assert all(row[f"met {name}"] in (0, 0.5, 1) for name in FORM)
        assert row["accuracy"] == pytest.approx(sum(row[f"met {name}"] for name in FORM) / 8, abs=1e-3)


def test_tab_status(report):
    from app import kv_tab

    status = kv_tab._run_status(report, 1.0, 48, "travel", 320, False)
    assert "each of the traveller's 8 requirements" in status and "snapkv" in status
