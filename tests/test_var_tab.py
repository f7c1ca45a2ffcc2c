"""The VAR tab's handlers called directly on the tiny random bundle (``$DRAFTSCOPE_VAR_ASSETS``): Generate, the N slider
re-running only CoDe, step mode through every scale, ScaleKV, DraftAttention, bad input and missing checkpoints as
messages; and the tab, its endpoints and element ids in the app."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np
import pytest

from app import common, var_tab
from app.common import held
from core.var.bundle import ENV_DIR
from core.var.code import code_generate
from tests.helpers import app_error, tiny_bundle, write_tiny_checkpoints

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a request warns instead
CODE_OUTPUTS = ("state", "status", "canvas", "images", "latency", "metrics", "image")
SETTINGS = {"class_name": "ring", "seed": 3, "split": 4, "n": 3, "cfg": 1.5}
K = 6


def _progress(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def asset_dir(tmp_path_factory):
    return write_tiny_checkpoints(tmp_path_factory.mktemp("var-tab"))


@pytest.fixture(autouse=True)
def tiny_assets(asset_dir, monkeypatch):
    monkeypatch.setenv(ENV_DIR, str(asset_dir))
    return asset_dir


@pytest.fixture(scope="module")
def bundle(asset_dir):
    return tiny_bundle(asset_dir)


def _generate(state=None, image=1, **kw) -> dict:
    s = {**SETTINGS, **kw}
    out = var_tab.generate(state or {}, s["class_name"], s["seed"], s["split"], s["n"], s["cfg"], image,
                           progress=_progress)
    return dict(zip(CODE_OUTPUTS, out, strict=True))


@pytest.fixture(scope="module")
def first(asset_dir) -> dict:
    mp = pytest.MonkeyPatch()
    mp.setenv(ENV_DIR, str(asset_dir))
    try:
        return _generate()
    finally:
        mp.undo()


def _images(fig) -> list:
    return [t for t in fig.data if t.type == "image"]


def _raises(fn, *args, **kwargs) -> str:
    """The message of the gr.Error ``fn`` raises (one line, no traceback)."""
    return app_error(fn, *args, **kwargs)


# ------------------------------------------------------------------------------------------------ Generate / N
def test_generate_renders_three_runs(first, bundle):
    assert first["status"].startswith("Done in") and "CoDe N=4" in first["status"], first["status"]
    runs = held(first["state"])["runs"]
    assert [r.label for r in runs] == ["large-only", "small-only", "CoDe N=4"]
    assert held(first["state"])["settings"] == {"class_id": 1, "seed": 3, "split": 4, "n": 3, "cfg": 1.5}
    assert all(r.class_accuracy is not None for r in runs) and runs[2].psnr_vs_large is not None
    assert len(_images(first["canvas"])) == 3 * K
    assert len(_images(first["images"])) == 3 * 3
    assert {t.meta for t in first["latency"].data} >= {"large", "small", "prefill", "kv"}
    assert list(first["metrics"]["run"]) == ["large-only", "small-only", "CoDe N=4"]
    assert first["image"]["maximum"] == 3 and first["image"]["value"] == 1
    # the same generation as the core call with the same settings
    again = code_generate(bundle.large, bundle.small, bundle.vq, 1, 3, 4, 3)
    assert np.array_equal(again.images, runs[2].images)


def test_split_slider_reruns_only_code(first, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("moving N must not re-run large-only and small-only")

    monkeypatch.setattr("core.var.code.compare_splits", refuse)
    state = common.hold(dict(held(first["state"])), "the CoDe images")  # its own entry: moving N replaces it
    before = held(state)["runs"]
    out = dict(zip(CODE_OUTPUTS, var_tab.update_split(state, 2, 2, progress=_progress), strict=True))
    assert "N = 2: re-ran CoDe only" in out["status"], out["status"]
    runs = held(out["state"])["runs"]
    assert [r.label for r in runs] == ["large-only", "small-only", "CoDe N=2"]
    assert runs[0] is before[0] and runs[1] is before[1]
    assert [s.model for s in runs[2].scales] == ["large"] * 2 + ["small"] * 4
    assert runs[2].psnr_vs_large is not None and runs[2].class_accuracy is not None
    assert held(out["state"])["settings"]["split"] == 2 and out["state"]["held"] == state["held"]  # one entry, replaced
    assert held(first["state"])["settings"]["split"] == 4
    assert list(out["metrics"]["run"])[-1] == "CoDe N=2"
    assert "image 2 of 3" in out["canvas"].layout.title.text
    for edge, only in ((K, "large model alone"), (0, "small model alone")):
        out = dict(zip(CODE_OUTPUTS, var_tab.update_split(state, edge, 1, progress=_progress), strict=True))
        assert [r.label for r in held(out["state"])["runs"]] == ["large-only", "small-only"] and only in out["status"]
        assert len(_images(out["canvas"])) == 2 * K


def test_split_slider_before_generate_and_out_of_range(first):
    out = var_tab.update_split({}, 3, 1, progress=_progress)
    assert out[0] == {} and "Generate" in out[1] and not out[1].startswith("**Error:**")
    assert "0..6" in _raises(var_tab.update_split, first["state"], 9, 1, progress=_progress)


def test_show_image_redraws_without_recomputing(first):
    fig = var_tab.show_image(first["state"], 3)
    cell = _images(fig)[0]
    assert np.array_equal(np.asarray(cell.z, dtype=np.uint8), held(first["state"])["runs"][0].canvases[0][2])
    assert "Click Generate" in var_tab.show_image({}, 1).layout.annotations[0].text


# ------------------------------------------------------------------------------------------------ step mode
def test_step_mode_makes_one_scale_at_a_time(first):
    full = held(first["state"])["runs"][2]  # CoDe N=4 of the same class, seed, n and cfg
    state, models = {}, []
    for k in range(K):
        state, fig, status = var_tab.step(state, **SETTINGS, progress=_progress)
        assert held(state)["k"] == k + 1 and len(held(state)["run"].scales) == k + 1
        model = held(state)["run"].scales[k].model
        models.append(model)
        role = "large drafter" if model == "large" else "small refiner"
        assert status.startswith(f"Scale {k} of {K - 1}") and role in status, status
        tokens = next(t for t in fig.data if t.meta == "tokens")
        assert np.array_equal(np.asarray(tokens.z), full.indices[k][0])  # the same seed replays the same scales
        if k == 4:
            assert "takes over" in status
    assert models == ["large"] * 4 + ["small"] * 2
    assert "last scale" in status
    again, fig, status = var_tab.step(state, **SETTINGS, progress=_progress)
    assert held(again)["k"] == K and f"All {K} scales" in status
    state, fig, status = var_tab.reset(state)
    assert state == {} and "Press Step" in fig.layout.annotations[0].text and status == var_tab.STEP_READY


def test_step_mode_starts_over_when_a_setting_changes():
    state, _, _ = var_tab.step({}, **SETTINGS, progress=_progress)
    state, _, _ = var_tab.step(state, **SETTINGS, progress=_progress)
    assert held(state)["k"] == 2
    state, _, status = var_tab.step(state, **{**SETTINGS, "seed": 4}, progress=_progress)
    assert held(state)["k"] == 1 and "started over" in status


def test_step_mode_small_only_and_bad_input():
    state, _, status = var_tab.step({}, **{**SETTINGS, "split": 0}, progress=_progress)
    assert held(state)["run"].scales[0].model == "small" and "small refiner" in status
    assert "1..16" in _raises(var_tab.step, state, **{**SETTINGS, "n": 0}, progress=_progress)


# ------------------------------------------------------------------------------------------------ ScaleKV
def test_scalekv_at_full_budget_is_identical():
    asi, budget, images, table, status = var_tab.run_scalekv("ring", 3, "100%", 2, 1.5, progress=_progress)
    assert status.startswith("ScaleKV at 100%") and "ScaleKV identical, uniform identical" in status, status
    assert list(table["PSNR vs full (dB)"]) == ["reference", "identical", "identical"]
    diffs = [t for t in images.data if t.type == "heatmap"]
    assert len(diffs) == 2 * 2 and all(np.asarray(d.z).max() == 0 for d in diffs)
    assert asi.data[0].meta == "asi" and {t.meta for t in budget.data} == {"budgets", "uniform"}


def test_scalekv_small_budget_keeps_less(bundle):
    _asi, budget, _images, table, status = var_tab.run_scalekv("square", 1, "10%", 2, 1.5, progress=_progress)
    assert status.startswith("ScaleKV at 10%"), status
    full_kib, scalekv_kib, uniform_kib = table["KV kept (KiB)"]
    assert scalekv_kib < full_kib and scalekv_kib == uniform_kib  # the same memory, shared out differently
    budgets = next(t for t in budget.data if t.meta == "budgets")
    from core.var.report import calibrate
    from core.var.scalekv import scale_budgets

    plan = scale_budgets(tuple(bundle.vq.scales), len(bundle.large.blocks), 0.1,
                         calibrate(bundle.large, bundle.vq).labels)
    assert [[int(v) for v in row[1:]] for row in budgets.text] == [row[1:] for row in plan.budgets]


# ------------------------------------------------------------------------------------------------ DraftAttention
def test_draft_attention_and_the_grid_dropdown():
    state, grid, table, images, status, scale, layer = var_tab.run_draft_attention("cross", 2, 0.75, 1, 2, 1.5,
                                                                                   None, progress=_progress)
    assert status.startswith("DraftAttention r = 0.75") and "layer 1 shown" in status, status
    assert {t.meta for t in grid.data} == {"true", "pooled", "selected"} and "8×8" in grid.layout.title.text
    assert len(table) == 2 * 3 and set(table["scale"]) == {4, 5}
    assert {t.meta for t in images.data} == {"dense", "sparse", "diff"}
    assert scale["choices"] == [("8×8 (scale 5)", 5), ("6×6 (scale 4)", 4)] and scale["value"] == 5
    assert layer["maximum"] == 2
    fig = var_tab.show_grid(state, 4)
    assert "6×6" in fig.layout.title.text and "layer 1" in fig.layout.title.text
    assert "Run DraftAttention" in var_tab.show_grid({}, 4).layout.annotations[0].text


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kw, message", [
    ({"class_name": "unicorn"}, "unknown class 'unicorn'"),
    ({"class_name": None}, "unknown class"),
    ({"n": 0}, "1..16"),
    ({"n": 17}, "1..16"),
    ({"split": 7}, "0..6"),
    ({"seed": -1}, "seed must be ≥ 0"),
    ({"seed": 1.5}, "whole number"),
    ({"cfg": 99}, "cfg must be in"),
])
def test_bad_generate_input_is_a_message(first, kw, message):
    runs = held(first["state"])["runs"]
    assert message in _raises(_generate, first["state"], **kw)
    assert held(first["state"])["runs"] is runs  # the last runs stay on show


@pytest.mark.parametrize("call, message", [
    (lambda: var_tab.run_scalekv("ring", 0, "0%", 2, 1.5, progress=_progress), "KV budget must be in (0, 1]"),
    (lambda: var_tab.run_scalekv("ring", 0, "lots", 2, 1.5, progress=_progress), "not a fraction"),
    (lambda: var_tab.run_draft_attention("ring", 0, 1.0, 1, 2, 1.5, None, progress=_progress),
     "sparsity must be in [0, 1)"),
    (lambda: var_tab.run_draft_attention("ring", 0, 0.75, 9, 2, 1.5, None, progress=_progress), "layers 0..2"),
])
def test_bad_scalekv_and_draft_attention_input_is_a_message(call, message):
    assert message in _raises(call)


def test_missing_checkpoints_are_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "nothing-here"))
    messages = [_raises(_generate), _raises(var_tab.step, {}, **SETTINGS, progress=_progress),
                _raises(var_tab.run_scalekv, "ring", 0, "20%", 2, 1.5, progress=_progress),
                _raises(var_tab.run_draft_attention, "ring", 0, 0.75, 1, 2, 1.5, None, progress=_progress)]
    for message in messages:
        assert "VAR checkpoints missing" in message and "python -m core.train.var all" in message, message


# ------------------------------------------------------------------------------------------------ the app
def test_the_app_has_the_var_tab():
    from app.main import build_demo

    demo = build_demo()
    tabs = [c["props"].get("label") for c in demo.config["components"] if c.get("type") == "tabitem"]
    assert "VAR" in tabs and not any("(coming)" in (t or "") for t in tabs)
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"var_generate", "var_split", "var_image", "var_step", "var_reset", "var_scalekv", "var_draft_attention",
            "var_da_scale"} <= names
    ids = {c["props"].get("elem_id") for c in demo.config["components"]}
    assert {"var-intro", "var-class", "var-seed", "var-split", "var-n", "var-cfg", "var-generate", "var-status",
            "var-canvas", "var-image", "var-images", "var-latency", "var-metrics", "var-step", "var-reset",
            "var-step-status", "var-step-plot", "var-kv-budget", "var-kv-run", "var-kv-status", "var-asi",
            "var-budget-plot", "var-kv-images", "var-kv-table", "var-da-sparsity", "var-da-layer", "var-da-scale",
            "var-da-run", "var-da-status", "var-da-grid", "var-da-table", "var-da-images"} <= ids
    split = next(c for c in demo.config["components"] if c["props"].get("elem_id") == "var-split")
    assert (split["props"]["minimum"], split["props"]["maximum"], split["props"]["value"]) == (0, 6, 4)
    classes = next(c for c in demo.config["components"] if c["props"].get("elem_id") == "var-class")
    assert [choice[1] for choice in classes["props"]["choices"]][:2] == ["circle", "ring"]
