"""The KV importance tab's handlers called directly (tiny-llama target and drafter, short prompts): Run renders every
view, the method / layer / head views re-render from the stored report, bad input is a message, DraftAttention;
and the endpoints and element ids exist in the app."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest

from app import kv_tab
from app.main import build_demo
from core.kv.records import KVReport
from tests.helpers import app_error

SETTINGS = {"target": "tiny-llama", "drafter": "tiny-llama", "task": "passkey", "prompt": "", "length": 192,
            "methods": ["snapkv", "streamingllm", "speckv", "specpc"], "budget": 32, "max_new_tokens": 6, "seed": 0,
            "view_method": "snapkv", "show": "both", "layer": 1, "head": 1}
OUTPUTS = ("state", "status", "heatmap", "grid", "head_map", "correlation", "outputs", "constraints", "view_method",
           "layer", "head", "da_layer", "da_head")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a request warns instead


def _progress(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def handlers() -> kv_tab.Handlers:
    return kv_tab.Handlers()


def _run(handlers, state=None, **kw) -> dict:
    return dict(zip(OUTPUTS, handlers.run(state or {}, **{**SETTINGS, **kw}, progress=_progress), strict=True))


@pytest.fixture(scope="module")
def first(handlers) -> dict:
    return _run(handlers)


def _metas(fig) -> list:
    return [t.meta for t in fig.data]


def test_run_renders_every_view(first):
    assert first["status"].startswith("Done in"), first["status"]
    assert "passkey prompt of" in first["status"] and "budget 32" in first["status"]
    report = kv_tab._report(first["state"])
    assert isinstance(report, KVReport) and [r.method for r in report.runs] == SETTINGS["methods"]
    assert 'class="kvt' in first["heatmap"] and "snapkv at budget 32" in first["heatmap"]
    grid = next(t for t in first["grid"].data if t.meta == "grid")
    assert len(grid.z) == report.n_layers == 4 and len(grid.z[0]) == report.n_kv_heads == 2
    assert _metas(first["head_map"]) == ["scores", "true", "kept", "top"]
    assert "layer 1 · KV head 1" in first["head_map"].layout.title.text
    assert "scatter" in _metas(first["correlation"])
    assert first["outputs"].count('<tr class="kv-run"') == 4 and 'class="kvo' in first["outputs"]
    assert first["view_method"]["choices"] == SETTINGS["methods"] and first["view_method"]["value"] == "snapkv"
    assert first["layer"]["maximum"] == 3 and first["head"]["maximum"] == 1
    assert first["da_head"]["maximum"] == 3  # tiny-llama's 4 query heads


def test_views_rerender_from_the_stored_report(handlers, first, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("re-rendering must not recompute")

    monkeypatch.setattr(kv_tab, "kv_report", refuse)
    state = first["state"]
    report = kv_tab._report(state)
    head_map = handlers.head_view(state, "speckv", 3, 0)
    assert "speckv @ budget 32 · layer 3 · KV head 0" in head_map.layout.title.text
    speckv = next(r for r in report.runs if r.method == "speckv")
    assert list(head_map.data[0].y) == pytest.approx(speckv.head_scores[3][0])
    heatmap, grid, head_map, correlation = handlers.view(state, "specpc", "method", 0, 1)
    specpc = next(r for r in report.runs if r.method == "specpc")
    assert heatmap.count('class="kvt ev') == sum(1 for k in specpc.kept if k == 0)
    assert "every head keeps the same tokens" in grid.layout.title.text
    assert "token-level" in head_map.data[0].name
    assert "specpc: score vs true importance" in correlation.layout.annotations[1].text
    heatmap, *_ = handlers.view(state, "snapkv", "true", 0, 0)
    assert 'class="kvt ev' not in heatmap and "true importance" in heatmap
    nothing = handlers.view({}, "snapkv", "both", 0, 0)
    assert "Run the methods" in nothing[0] and "Run a method" in nothing[1].layout.annotations[0].text


@pytest.mark.parametrize("kw, message", [
    ({"methods": []}, "choose at least one method"),
    ({"task": "custom", "prompt": "   "}, "custom prompt is empty"),
    ({"target": "no-such-model"}, "unknown model 'no-such-model'"),
    ({"target": "tiny-gemma", "methods": ["snapkv"]}, "sliding-window"),
])
def test_bad_input_is_a_message(handlers, first, kw, message):
    report = kv_tab._report(first["state"])
    assert message in app_error(_run, handlers, first["state"], **kw)
    assert kv_tab._report(first["state"]) is report  # the last report stays on show


def test_custom_prompt_and_a_budget_beyond_the_prompt(handlers):
    prompt = "The <b>blue</b> door opens at noon. " * 6 + "When does the door open? At"
    out = _run(handlers, task="custom", prompt=prompt, methods=["snapkv", "h2o"], budget=1024, view_method="tova")
    assert out["status"].startswith("Done in") and "custom prompt of" in out["status"], out["status"]
    assert "keeps everything" in out["status"]
    assert out["view_method"]["value"] == "snapkv"  # tova did not run: the first method that did
    body = out["heatmap"].split('<div class="kv-prompt">', 1)[1]
    assert 'class="kvt ev' not in body and "&lt;" in body and "<b>" not in body
    assert out["outputs"].count('class="kvo diff"') == 0  # everything kept: the outputs match the full cache


def test_draft_attention(handlers):
    figure, status = handlers.draft_attention("tiny-llama", "passkey", "", 192, 0, 1, 2, 0.9, 16, progress=_progress)
    assert status.startswith("DraftAttention on tiny-llama") and "layer 1, head 2" in status, status
    assert set(_metas(figure)) == {"full", "pooled", "selected"}
    assert "layers 0..3" in app_error(handlers.draft_attention, "tiny-llama", "passkey", "", 192, 0, 9, 0, 0.9, 16,
                                      progress=_progress)
    assert "custom prompt is empty" in app_error(handlers.draft_attention, "tiny-llama", "custom", "", 192, 0, 0, 0,
                                                 0.9, 16, progress=_progress)


def test_endpoints_and_element_ids():
    demo = build_demo()
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"kv_run", "kv_view", "kv_head_map", "kv_draft_attention"} <= names
    ids = {c["props"].get("elem_id") for c in demo.config["components"]}
    assert {"kv-target", "kv-drafter", "kv-task", "kv-prompt", "kv-length", "kv-methods", "kv-budget",
            "kv-max-new-tokens", "kv-seed", "kv-run", "kv-status", "kv-view-method", "kv-show", "kv-heatmap",
            "kv-grid", "kv-layer", "kv-head", "kv-head-map", "kv-correlation", "kv-outputs", "kv-da-layer",
            "kv-da-head", "kv-da-sparsity", "kv-da-block", "kv-da-run", "kv-da-plot", "kv-da-status"} <= ids
    methods = next(c for c in demo.config["components"] if c["props"].get("elem_id") == "kv-methods")
    assert [choice[1] for choice in methods["props"]["choices"]] == ["snapkv", "streamingllm", "h2o", "tova",
                                                                     "speckv", "specpc"]
    assert methods["props"]["value"] == ["snapkv", "streamingllm", "speckv", "specpc"]
    tabs = [c["props"].get("label") for c in demo.config["components"] if c.get("type") == "tabitem"]
    assert "KV importance" in tabs and "KV importance (coming)" not in tabs


def test_self_drafter_guides(tmp_path):
    """The drafter choice can name a self-drafter of the target (S2D's exit, untrained on the tiny model)."""
    from app import kv_tab

    handlers = kv_tab.Handlers()
    out = handlers.run({}, "tiny-llama", kv_tab.SELF_GUIDE + "sorted", "passkey", "", 200, ["speckv"], 32, 4, 0,
                       "speckv", "both", 0, 0, progress=lambda *a, **k: None)
    report = kv_tab._report(out[0])
    assert report.drafter == "tiny-llama@sorted3" and report.runs[0].method == "speckv"


# ------------------------------------------------------------------------------------------------ long context
LONG = {"target": "tiny-llama", "task": "passkey", "seed": 0, "lengths": [64, 128], "new_tokens": 8, "gamma": 3}


def test_long_context_plots_and_table(handlers, monkeypatch):
    """With in-memory networks for tiny-llama (an untrained LongSpec block, a FastDraft copy of the target's layers):
    the memory plot shows LongSpec flat and FastDraft growing, the α / speed-up plot and the table one entry each."""
    import functools

    import torch

    from core.runtime.models import load_model
    from core.specdec.drafters.fastdraft import build_network
    from tests.helpers import random_longspec

    target = load_model("tiny-llama")
    layers = list(range(target.n_layers))
    options = {"longspec": {"checkpoint": random_longspec(target), "window": 16},
               "fastdraft": {"checkpoint": build_network(target, len(layers), torch.arange(target.vocab_size), layers)}}
    monkeypatch.setattr(kv_tab, "context_sweep", functools.partial(kv_tab.context_sweep, options=options))
    memory, acceptance, table, status = handlers.long_context(**LONG, progress=_progress)
    longspec, fastdraft, reference = memory.data
    assert (longspec.meta, fastdraft.meta, reference.meta) == ("drafter:longspec", "drafter:fastdraft", "target")
    assert longspec.y[0] == longspec.y[1] and fastdraft.y[1] > fastdraft.y[0]
    assert [t.meta for t in acceptance.data][-1] == "parity" and len(acceptance.data) == 5
    assert len(table) == 4 and list(table["identical"]) == ["yes"] * 4
    assert status.startswith("Done in") and "**longspec**" in status and "Every output matched" in status, status


@pytest.mark.parametrize("kw, message", [
    ({}, "python -m core.train.longspec --target tiny-llama"),  # no LongSpec drafter ships for the tiny model
    ({"task": "rag"}, "a task whose length can be set"),
    ({"lengths": []}, "choose at least one context length"),
    ({"lengths": [64, 4096]}, "exceeds the context of 'tiny-llama'"),
])
def test_long_context_errors_are_gr_errors(handlers, kw, message):
    import gradio as gr

    with pytest.raises(gr.Error) as raised:
        handlers.long_context(**{**LONG, **kw}, progress=_progress)
    assert message in str(raised.value.message), raised.value.message


def test_long_context_endpoint_and_element_ids():
    demo = build_demo()
    assert "kv_long_context" in {fn.api_name for fn in demo.fns.values()}
    ids = {c["props"].get("elem_id") for c in demo.config["components"]}
    assert {"kv-long", "kv-long-lengths", "kv-long-new-tokens", "kv-long-gamma", "kv-long-run", "kv-long-status",
            "kv-long-memory", "kv-long-acceptance", "kv-long-table"} <= ids
    lengths = next(c for c in demo.config["components"] if c["props"].get("elem_id") == "kv-long-lengths")
    assert [choice[1] for choice in lengths["props"]["choices"]] == [1024, 2048, 4096, 8000]
