"""Draft-tree figures and HTML from real tree rounds of the tiny model (greedy, and rsd at temperature 1)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from core.specdec import Session, SessionConfig
from core.specdec.records import TreeStepRecord
from core.specdec.trees.tree import TokenTree
from visualizers.tree_graph import (
    DECISIONS,
    EMITTED,
    MASK_COLORS,
    NODE_STYLE,
    ON_PATH,
    PREFIX,
    ROOT,
    alpha_star_figure,
    tree_figure,
    tree_mask_figure,
    tree_summary_html,
    tree_text_html,
    tree_vs_chain_figure,
)

PROMPT = "the cat sat on the mat. the cat sat on the"
RUNS = {"greedy": ("greedy", 0.0), "rsd": ("rsd", 1.0)}


def _session(verifier: str, temperature: float, rounds: int = 4) -> Session:
    config = SessionConfig(target="tiny-llama", drafter="early-exit", drafter_options={"exit_layer": 2}, tree="4,2,1",
                           verifier=verifier,
                           temperature=temperature, max_new_tokens=24, seed=3)
    session = Session.from_config(config, prompt=PROMPT)
    for _ in range(rounds):
        session.step()
    return session


@pytest.fixture(scope="module")
def sessions() -> dict[str, Session]:
    return {name: _session(*args) for name, args in RUNS.items()}


@pytest.fixture(scope="module", params=list(RUNS))
def session(request, sessions) -> Session:
    return sessions[request.param]


def _points(fig, names) -> int:
    return sum(len(t.x) for t in fig.data if t.name in names)


def _trace(fig, name):
    return next(t for t in fig.data if t.name == name)


# ------------------------------------------------------------------------------------------------ tree graph
def test_tree_figure_has_every_node_and_marks_the_path(session):
    for record in session.records:
        fig = tree_figure(record)
        assert fig.layout.height and fig.layout.height >= 300
        assert _points(fig, DECISIONS) == len(record.nodes)
        for decision in DECISIONS:
            expected = sorted(n.index for n in record.nodes if n.decision == decision)
            got = sorted(_trace(fig, decision).customdata) if expected else []
            assert got == expected, decision
        assert sorted(_trace(fig, "accepted").customdata if record.path else []) == sorted(record.path)
        assert _points(fig, [ROOT]) == 1
        assert _points(fig, [EMITTED]) == int(record.emitted is not None)
        # one box per node, plus the root and the target's token
        assert len(fig.layout.annotations) == len(record.nodes) + 1 + int(record.emitted is not None)
        edges = [t for t in fig.data if t.name == "edge"]
        assert sum(len(t.x) // 3 for t in edges) == len(record.nodes) + int(record.emitted is not None)
        green = [t for t in edges if t.line.color == NODE_STYLE["accepted"][1]]
        assert sum(len(t.x) // 3 for t in green) == len(record.path)


def test_tree_figure_hover_and_labels_are_escaped(sessions):
    record = sessions["rsd"].records[0]
    odd = dataclasses.replace(record.nodes[0], text="<b>&")
    fig = tree_figure(dataclasses.replace(record, nodes=[odd, *record.nodes[1:]]))
    texts = [a.text for a in fig.layout.annotations]
    assert "&lt;b&gt;&amp;" in texts and "<b>&" not in texts
    hovers = [h for t in fig.data if t.name in DECISIONS for h in t.hovertext]
    assert any("min(1, r/q)" in h and "U =" in h for h in hovers)  # a node the sampled verifier tried
    assert all("p = " in h and "q = " in h and "path q" in h for h in hovers)


def test_tree_figure_handles_an_empty_tree_and_no_record(sessions):
    record = sessions["rsd"].records[0]
    empty = dataclasses.replace(record, nodes=[], groups=[], path=[], accepted=0)
    fig = tree_figure(empty)
    assert _points(fig, DECISIONS) == 0 and _points(fig, [ROOT]) == 1 and _points(fig, [EMITTED]) == 1
    assert "No draft tree" in tree_mask_figure(empty).layout.annotations[0].text
    for figure in (tree_figure(None), tree_mask_figure(None), alpha_star_figure([])):
        assert not figure.data and figure.layout.annotations


# ------------------------------------------------------------------------------------------------ mask
def test_mask_is_the_ancestor_matrix(session):
    for record in session.records:
        if not record.nodes:
            continue
        fig = tree_mask_figure(record)
        z = np.array(_trace(fig, "tree mask").z)
        tree = TokenTree([n.id for n in record.nodes], [n.parent for n in record.nodes])
        np.testing.assert_array_equal(z > 0, tree.ancestor_matrix().numpy())
        for i in record.path:
            assert set(z[i][z[i] > 0]) == {ON_PATH}
        labels = list(_trace(fig, "tree mask").y)
        assert [int(label.split(" ")[0]) for label in labels] == [n.index for n in record.nodes]
        prefix = np.array(_trace(fig, "prefix").z)
        assert prefix.shape == (len(record.nodes), 1) and (prefix == PREFIX).all()
        assert fig.layout.height


def test_mask_colours_cover_every_value():
    assert len(MASK_COLORS) == PREFIX + 1


# ------------------------------------------------------------------------------------------------ α*
def test_alpha_star_figure_for_rsd(sessions):
    records = sessions["rsd"].records
    fig = alpha_star_figure(records)
    series = {t.meta: t for t in fig.data}
    expected = {"exact_rsd", "exact_rrs", "alpha_star_with", "alpha_star_without", "single_draft", "achieved"}
    assert expected <= set(series)
    with_star = [r for r in records if any(g.alpha_star_with is not None for g in r.groups)]
    assert list(series["achieved"].x) == [r.step for r in with_star]
    for r, y in zip(with_star, series["achieved"].y, strict=True):
        groups = [g for g in r.groups if g.alpha_star_with is not None]
        assert y == pytest.approx(sum(g.accepted_child is not None for g in groups) / len(groups))
    for r, y in zip(with_star, series["exact_rsd"].y, strict=True):
        values = [g.exact_rsd for g in r.groups if g.exact_rsd is not None]
        assert y == pytest.approx(sum(values) / len(values))
    for key in ("exact_rsd", "alpha_star_without", "single_draft"):
        assert all(0 <= y <= 1 + 1e-9 for y in series[key].y if y is not None)
    assert "this verifier" in series["exact_rsd"].name and series["exact_rsd"].line.width == 3


def test_alpha_star_figure_for_greedy_explains_itself(sessions):
    fig = alpha_star_figure(sessions["greedy"].records)
    assert not fig.data
    note = fig.layout.annotations[0].text.replace("<br>", " ")
    assert "sampled verifiers" in note and "greedy" in note


# ------------------------------------------------------------------------------------------------ JSON
def test_figures_survive_a_json_round_trip(session):
    records = session.records
    again = [TreeStepRecord.from_dict(json.loads(json.dumps(r.to_dict()))) for r in records]
    assert again == records
    for before, after in zip(records, again, strict=True):
        assert tree_figure(after).to_plotly_json() == tree_figure(before).to_plotly_json()
        assert tree_mask_figure(after).to_plotly_json() == tree_mask_figure(before).to_plotly_json()
    assert alpha_star_figure(again).to_plotly_json() == alpha_star_figure(records).to_plotly_json()


# ------------------------------------------------------------------------------------------------ tree vs chain
def test_tree_vs_chain_figure(sessions):
    tree, chain = sessions["rsd"].stats.summary(), sessions["greedy"].stats.summary()
    fig = tree_vs_chain_figure(tree, chain, tree_label="tree", chain_label="chain")
    tau = next(t for t in fig.data if t.name == "tau")
    assert list(tau.x) == ["tree", "chain"] and list(tau.y) == pytest.approx([tree["tau"], chain["tau"]])
    alone = tree_vs_chain_figure(tree, None)
    assert all(len(t.x) == 1 for t in alone.data)
    assert any("chain comparison off" in a.text for a in alone.layout.annotations)
    assert not tree_vs_chain_figure({}, None).data


# ------------------------------------------------------------------------------------------------ HTML
def test_summary_and_text_html(session):
    record = session.records[-1]
    summary = session.stats.summary()
    page = tree_summary_html(dataclasses.replace(record, committed_text="<b>&"), summary)
    assert "&lt;b&gt;&amp;" in page and "<b>&" not in page
    assert f"{summary['tau']:.2f}" in page and record.shape in page and f"{len(record.nodes)} nodes" in page
    has_star = any(g.alpha_star_with is not None for g in record.groups)
    assert ("vs achieved" in page) == has_star and ("α* applies" in page) == (not has_star)
    assert has_star == (record.verifier == "rsd")
    text = tree_text_html(session.records, session.prompt_text)
    assert text.count('class="tok ') == sum(len(r.committed_ids) for r in session.records)
    assert text.count('class="round-sep"') == len(session.records)
    assert "No round yet" in tree_summary_html(None, {})
