"""The Draft heads tab's handlers and figures, called directly (the browser test drives the page)."""

from __future__ import annotations

import json

import plotly.graph_objects as go

from app import common, heads_tab as tab
from core.specdec.drafters.heads import shipped_meta
from tests.helpers import app_error
from visualizers.heads import head_accuracy_figure, head_round_html, time_split_figure

PROMPT = "Give me three tips for staying focused while studying at home."


def test_accuracy_view_for_shipped_and_missing_heads():
    fig, note = tab.show_accuracy("smollm2-135m")
    names = {t.name.split(" ")[0] for t in fig.data}
    assert {"medusa", "hydra", "hydra++", "falcon"} <= names and "Held-out accuracy" in note
    fig, note = tab.show_accuracy("tiny-llama")
    assert not fig.data and "No trained heads" in note


def test_suggested_tree_comes_from_the_shipped_accuracies():
    tree = json.loads(tab.default_tree("smollm2-135m", "hydra", 6))
    assert len(tree) == 6 and [0] in tree
    assert max(map(len, tree)) <= shipped_meta("smollm2-135m")["hydra"]["n_heads"]
    assert tab.default_tree("tiny-llama", "hydra") == ""


def test_run_shows_each_nodes_head_and_what_it_read():
    tree = tab.default_tree("smollm2-135m", "hydra", 6)
    state, table, graph, split, slider, status, records = tab.run_heads("smollm2-135m", "hydra", tree, "greedy", 0.0,
                                                                       PROMPT, True, 16)
    assert "τ" in status and "tokens/s" in status and "Error" not in status, status
    assert slider["maximum"] == len(common.held(state)["records"]) - 1
    assert len(records["records"]) == len(common.held(state)["records"]) and records["extra"]["arch"] == "hydra"
    kept = common.held(state)
    records, before, arch = kept["records"], kept["before"], kept["arch"]
    assert records and arch == "hydra" and len(before) == len(records)
    assert "h<sub>t</sub> + " in table and "<th>head</th>" in table  # Hydra's heads read the branch
    assert isinstance(graph, go.Figure) and graph.data and split.data
    table2, _ = tab.show_round(state, len(records) - 1)
    assert "<table>" in table2
    _, medusa_table, *_ = tab.run_heads("smollm2-135m", "medusa", "", "typical", 0.7, PROMPT, True, 8)
    assert "h<sub>t</sub></td>" in medusa_table  # Medusa's read h_t only (a chain: no tree)
    _, falcon_table, falcon_graph, *_, status, _ = tab.run_heads("smollm2-135m", "falcon", "3,2", "match", 0.7, PROMPT,
                                                              True, 8)
    assert "f, f̂ + " in falcon_table and falcon_graph.data and "Error" not in status, status
    _, plus_table, *_, status, _ = tab.run_heads("smollm2-135m", "hydra++", "", "greedy", 0.0, PROMPT, True, 8)
    assert "prefix layer" in plus_table and "Error" not in status, status


def test_run_refuses_bad_input_with_one_line():
    for args, message in [(("smollm2-135m", "hydra", "[[0],[0,1,2]]", "greedy", 0.0, PROMPT, True, 8), "parent path"),
                          (("tiny-llama", "hydra", "", "greedy", 0.0, PROMPT, True, 8), "not found"),
                          (("smollm2-135m", "hydra", "", "greedy", 0.0, "   ", True, 8), "prompt is empty"),
                          (("smollm2-135m", "hydra", "", "greedy", 0.0, PROMPT, True, 9999), "max new tokens")]:
        assert message in app_error(tab.run_heads, *args)


def test_figures_without_data():
    assert "No trained heads" in head_accuracy_figure({}).layout.annotations[0].text
    assert "Run the heads" in head_round_html(None)
    assert not time_split_figure([]).data
