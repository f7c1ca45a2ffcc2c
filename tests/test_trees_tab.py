"""The Draft trees tab's handlers called directly (tiny model): step, run, errors, reset, the chain comparison."""

from __future__ import annotations

import functools
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest

from app import trees_tab
from app.main import build_demo
from tests.helpers import assert_error_then_usable, call_handler, no_progress, tab_session
from visualizers.tree_graph import DECISIONS

SETTINGS = {"prompt": "the cat sat on the mat. the cat sat on the", "chat": False, "target": "tiny-llama",
            "drafter": "early-exit", "draft_model": "tiny-llama", "exit_layer": 0, "vocab_trim": 0,
            "eta": 0.0, "lookup": False, "plus": False, "schedule": "constant", "confidence": 0.0,
            "greedy_draft": False, "shape": "4,2,1", "window": 256, "tree_attention": "hybrid",
            "tree_branch": 4, "max_depth": 5, "children": "auto", "verifier": "rsd", "temperature": 1.0, "seed": 0,
            "max_new_tokens": 12, "compare": True}
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a request warns instead
OUTPUTS = ("state", "text", "graph", "mask", "alpha", "compare", "summary", "round", "status", "records")


@pytest.fixture()
def handlers() -> trees_tab.Handlers:
    return trees_tab.Handlers()


def _step(handlers, state=None, **kw) -> dict:
    return call_handler(handlers.step, OUTPUTS, SETTINGS, state, **kw)


def test_step_draws_a_tree_and_steps_the_chain_alongside(handlers):
    first = _step(handlers)
    assert not first["status"].startswith("**Error"), first["status"]
    session = tab_session(first)
    assert len(session.records) == 1 and session.config.tree == "4,2,1"
    assert session.config.drafter_options["exit_layer"] == 3  # auto: four fifths of tiny-llama's 4 layers
    nodes = sum(len(t.x) for t in first["graph"].data if t.name in DECISIONS)
    assert nodes == len(session.records[0].nodes) > 0
    assert first["text"].count('class="round-sep"') == 1
    chain = trees_tab._chain_of(session)
    assert chain is not None and not chain.config.tree and chain.config.gamma == 4 + 8 + 8
    assert chain.config.verifier == "sampling" and len(chain.records) == 1
    assert "Chain (γ=20)" in first["status"]
    tau = next(t for t in first["compare"].data if t.name == "tau")
    assert len(tau.x) == 2 and tau.x[1] == "chain γ=20"

    second = _step(handlers, first["state"], shape="2,2")
    assert "Changed tree" in second["status"], second["status"]
    assert len(session.records) == 2 and session.records[-1].shape == "2,2"
    assert chain.config.gamma == 2 + 4 and (len(chain.records) == 2 or chain.done)
    assert trees_tab.chain_config(session.config).gamma == 6


def test_greedy_tree_and_chain(handlers):
    out = _step(handlers, verifier="greedy", temperature=0.0, shape="budget:6", max_depth=3, tree_branch=2)
    assert not out["status"].startswith("**Error"), out["status"]
    session = tab_session(out)
    assert session.records[0].shape == "budget:6" and session.records[0].children_mode == "topk"
    assert trees_tab._chain_of(session).config.verifier == "greedy"
    assert "sampled verifiers" in out["alpha"].layout.annotations[0].text.replace("<br>", " ")


def test_a_sliding_window_target_grows_trees(handlers):
    """Gemma 3's sliding-window layers get their own tree mask: the tab steps on tiny-gemma like on any target."""
    out = _step(handlers, target="tiny-gemma")
    assert not out["status"].startswith("**Error"), out["status"]
    assert len(tab_session(out).records) == 1 and tab_session(out).config.target == "tiny-gemma"


@pytest.mark.parametrize("kw, message", [
    ({"verifier": "rrs", "temperature": 0.0}, "set a temperature above 0"),
    ({"drafter": "ngram"}, "no probabilities"),
    ({"shape": "4,x"}, "tree shape"),
    ({"shape": " "}, "tree shape is empty"),
    ({"prompt": ""}, "prompt is empty"),
    ({"verifier": "rsd", "children": "iid"}, "without-replacement"),
])
def test_invalid_settings_are_a_message_and_the_tab_stays_usable(handlers, kw, message):
    assert_error_then_usable(functools.partial(_step, handlers), kw, message)


def test_reset_starts_over_and_compare_off_drops_the_chain(handlers):
    first = _step(handlers)
    old = tab_session(first)
    out = handlers.reset(first["state"], **{**SETTINGS, "compare": False}, progress=no_progress)
    out = dict(zip(OUTPUTS, out, strict=True))
    session = tab_session(out)
    assert session is not old and not session.records and out["status"].startswith("Ready")
    assert "No tokens yet" in out["text"]
    assert trees_tab._chain_of(session) is None
    step = _step(handlers, out["state"], compare=False)
    assert "Chain" not in step["status"]
    assert any("chain comparison off" in a.text for a in step["compare"].layout.annotations)


def test_run_finishes_with_the_chain_on_the_same_budget(handlers):
    outs = list(handlers.run({}, **SETTINGS, progress=no_progress))
    final = dict(zip(OUTPUTS, outs[-1], strict=True))
    assert final["status"].startswith("Finished"), final["status"]
    session = tab_session(final)
    chain = trees_tab._chain_of(session)
    assert session.done and chain.done and len(outs) >= len(session.records) + 1
    assert len(chain.generated_ids) <= SETTINGS["max_new_tokens"]
    graph, _mask, summary = handlers.show_round(final["state"], 0)
    assert f"round</th><td>{session.records[0].step} " in summary
    assert sum(len(t.x) for t in graph.data if t.name in DECISIONS) == len(session.records[0].nodes)


def test_endpoints_and_element_ids():
    demo = build_demo()
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"trees_step", "trees_run", "trees_stop", "trees_reset", "trees_show_round"} <= names
    ids = {c["props"].get("elem_id") for c in demo.config["components"]}
    assert {"trees-prompt", "trees-shape", "trees-verifier", "trees-step", "trees-run", "trees-reset",
            "trees-status", "trees-graph", "trees-mask", "trees-alpha", "trees-compare", "trees-summary",
            "trees-round"} <= ids
