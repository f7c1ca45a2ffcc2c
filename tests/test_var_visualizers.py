"""VAR visualizers on real records from the tiny random bundle (fast): the canvas grid's cells, colours and frames,
latency / memory bars that add up, the metrics table, step mode's token map, ASI roles, ScaleKV budgets, full vs
compressed images, DraftAttention's tile maps — and a message for every empty input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from core.var.code import code_generate, compare_splits
from core.var.draft_attention import GridMap, draft_attention_generate
from core.var.report import calibrate
from core.var.scalekv import kv_generate, scale_budgets
from tests.helpers import tiny_bundle
from visualizers import var as vis

SPLIT, N_IMAGES, CLASS, SEED = 4, 3, 2, 5


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("var-vis"))


@pytest.fixture(scope="module")
def runs(bundle):
    return compare_splits(bundle.large, bundle.small, bundle.vq, CLASS, SEED, [0, SPLIT], N_IMAGES,
                          classifier=bundle.classifier)


@pytest.fixture(scope="module")
def report(bundle):
    return calibrate(bundle.large, bundle.vq)


@pytest.fixture(scope="module")
def draft(bundle):
    return draft_attention_generate(bundle.large, bundle.vq, CLASS, SEED, 0.75, n=2, map_layer=1)


def _images(fig) -> list:
    return [t for t in fig.data if t.type == "image"]


def _message(fig) -> str:
    return fig.layout.annotations[0].text


# ------------------------------------------------------------------------------------------------ CoDe
def test_canvas_grid_has_a_cell_per_run_and_scale_framed_by_its_model(runs, bundle):
    K = bundle.num_scales
    fig = vis.canvas_grid_figure(runs, image=1)
    cells = _images(fig)
    assert len(cells) == len(runs) * K == 18
    for cell, (run, k) in zip(cells, [(r, k) for r in runs for k in range(K)]):
        assert cell.meta == {"run": run.label, "scale": k, "model": run.scales[k].model}
        assert np.array_equal(np.asarray(cell.z, dtype=np.uint8), run.canvases[k][1])  # image 1 of the batch
    frames = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(frames) == len(cells)
    expected = [vis.model_color(s.model) for r in runs for s in r.scales]
    assert [f.line.color for f in frames] == expected
    code = runs[2]
    assert expected[2 * K:] == [vis.LARGE_COLOR] * SPLIT + [vis.SMALL_COLOR] * (K - SPLIT)
    assert expected[:K] == [vis.LARGE_COLOR] * K and expected[K:2 * K] == [vis.SMALL_COLOR] * K
    legend = {t.name: t.marker.color for t in fig.data if t.type == "scatter"}
    assert legend == {"large drafter": vis.LARGE_COLOR, "small refiner": vis.SMALL_COLOR}
    title = fig.layout.title.text
    assert "CoDe N=4: the large drafter makes scales 0–3, the small refiner 4–5" in title
    assert "image 2 of 3" in title and "seed 5" in title
    assert f"{code.scales[4].ms:.1f} ms" in " ".join(a.text for a in fig.layout.annotations)


def test_canvas_grid_clamps_the_image_and_skips_empty_runs(runs):
    fig = vis.canvas_grid_figure([None, *runs[:1]], image=99)
    assert len(_images(fig)) == 6 and "image 3 of 3" in fig.layout.title.text


def test_final_images(runs):
    fig = vis.final_images_figure(runs)
    assert len(_images(fig)) == len(runs) * N_IMAGES
    for cell in _images(fig):
        run = next(r for r in runs if r.label == cell.meta["run"])
        assert np.array_equal(np.asarray(cell.z, dtype=np.uint8), run.images[cell.meta["image"]])
    titles = [fig.layout[f"yaxis{'' if i == 0 else i * N_IMAGES + 1}"].title.text for i in range(len(runs))]
    assert "large-only" in titles[0] and "PSNR ref." in titles[0]
    assert f"PSNR {runs[2].psnr_vs_large:.2f}" in titles[2]


def test_latency_and_memory_bars_add_up(runs):
    fig = vis.latency_memory_figure(runs)
    bars = {t.meta: t for t in fig.data if t.type == "bar"}
    assert set(bars) == {"large", "small", "prefill", "other", "weights", "kv"}
    for i, run in enumerate(runs):
        latency = sum(bars[m].y[i] for m in ("large", "small", "prefill", "other"))
        assert latency == pytest.approx(run.total_ms)
        assert bars["large"].y[i] == pytest.approx(sum(s.ms for s in run.scales if s.model == "large"))
        assert bars["prefill"].y[i] == pytest.approx(run.prefill_ms)
        assert bars["weights"].y[i] + bars["kv"].y[i] == pytest.approx(run.peak_memory_bytes / 2 ** 20)
        assert bars["kv"].y[i] == pytest.approx(run.kv_bytes / 2 ** 20)
        assert list(bars["large"].customdata[i]) == [run.tokens_large, run.tokens_small]
    assert bars["large"].marker.color == vis.LARGE_COLOR and bars["small"].marker.color == vis.SMALL_COLOR
    assert runs[2].prefill_ms > 0 and runs[0].prefill_ms == 0
    assert fig.layout.barmode == "stack"


def test_metrics_frame(runs):
    frame = vis.metrics_frame(runs)
    assert list(frame.columns) == vis.METRIC_COLUMNS and len(frame) == 3
    assert list(frame["run"]) == ["large-only", "small-only", "CoDe N=4"]
    assert list(frame["large scales"]) == ["0–5", "—", "0–3"]
    assert list(frame["small scales"]) == ["—", "0–5", "4–5"]
    assert list(frame["tokens large"]) == [r.tokens_large for r in runs]
    assert frame["PSNR vs large (dB)"][0] == "reference"
    assert frame["PSNR vs large (dB)"][2] == f"{runs[2].psnr_vs_large:.2f}"
    assert frame["peak memory (MiB)"][1] == round(runs[1].peak_memory_bytes / 2 ** 20, 2)
    same = dataclasses.replace(runs[2], psnr_vs_large=math.inf, class_accuracy=0.5)
    row = vis.metrics_frame([same]).iloc[0]
    assert row["PSNR vs large (dB)"] == "identical" and row["class accuracy"] == "50%"


def test_step_figure_shows_the_canvas_and_the_token_map(bundle, runs):
    K = bundle.num_scales
    full = runs[2]
    for k in (0, SPLIT - 1, SPLIT, K - 1):
        run = code_generate(bundle.large, bundle.small, bundle.vq, CLASS, SEED, SPLIT, N_IMAGES, stop_scale=k + 1)
        fig = vis.step_figure(run, k, K)
        tokens = next(t for t in fig.data if t.meta == "tokens")
        assert np.array_equal(np.asarray(tokens.z), full.indices[k][0])  # the same seed replays the same scale
        canvas = next(t for t in fig.data if t.meta == "canvas")
        assert np.array_equal(np.asarray(canvas.z, dtype=np.uint8), full.canvases[k][0])
        model = "large" if k < SPLIT else "small"
        assert {s.line.color for s in fig.layout.shapes} == {vis.model_color(model)}
        assert vis.MODEL_ROLES[model] in fig.layout.title.text and f"step {k + 1} of {K}" in fig.layout.title.text


# ------------------------------------------------------------------------------------------------ ScaleKV
def test_asi_heatmap_marks_every_role(report, bundle):
    fig = vis.asi_heatmap(report, bundle.vq.scales)
    heat = fig.data[0]
    text = [list(row) for row in heat.text]
    labels = report.labels
    assert sum(row.count("D") for row in text) == sum(row.count("drafter") for row in labels)
    assert sum(row.count("R") for row in text) == sum(row.count("refiner") for row in labels)
    for layer, row in enumerate(labels):
        assert text[layer] == [vis.ROLE_LETTERS.get(label, "") for label in row]
        assert heat.z[layer][0] is None and text[layer][0] == ""
        assert heat.z[layer][1:] == pytest.approx(list(report.asi[layer, 1:]))
    assert list(heat.x)[-1] == "5 (8×8)" and len(heat.y) == len(bundle.large.blocks)


def test_budget_figure_numbers_equal_the_plan(report, bundle):
    plan = scale_budgets(tuple(bundle.vq.scales), len(bundle.large.blocks), 0.2, report.labels)
    fig = vis.budget_figure(plan, bundle.vq.scales)
    budgets = next(t for t in fig.data if t.meta == "budgets")
    uniform = next(t for t in fig.data if t.meta == "uniform")
    assert [[int(v) for v in row[1:]] for row in budgets.text] == [row[1:] for row in plan.budgets]
    assert [int(v) for v in uniform.text[0][1:]] == plan.uniform[1:]
    assert all(row[0] == "" for row in budgets.text)
    assert [x.split("<br>")[1] for x in budgets.x] == [f"H={h}" for h in plan.history]
    for layer, row in enumerate(plan.budgets):  # colour: the share of the history kept
        assert budgets.z[layer][1:] == pytest.approx([b / h for b, h in zip(row[1:], plan.history[1:])])
    assert "β = 20%" in fig.layout.title.text


def test_kv_images_at_full_budget_are_identical(bundle, report):
    full = kv_generate(bundle.large, bundle.vq, CLASS, SEED, "full", n=2)
    same = kv_generate(bundle.large, bundle.vq, CLASS, SEED, "scalekv", 1.0, report, n=2)
    fig = vis.kv_images_figure(full, same)
    diffs = [t for t in fig.data if t.type == "heatmap"]
    assert len(_images(fig)) == 2 * 2 and len(diffs) == 2 and all(np.asarray(d.z).max() == 0 for d in diffs)
    titles = " ".join(a.text for a in fig.layout.annotations)
    assert "PSNR identical" in titles and f"KV {full.kv_bytes / 1024:.1f} KiB" in titles
    frame = vis.kv_frame(full, same)
    assert list(frame["PSNR vs full (dB)"]) == ["reference", "identical"] and list(frame["vs full"]) == ["100%"] * 2


def test_kv_images_with_a_small_budget_and_the_uniform_baseline(bundle, report):
    full = kv_generate(bundle.large, bundle.vq, CLASS, SEED, "full", n=3)
    scalekv = kv_generate(bundle.large, bundle.vq, CLASS, SEED, "scalekv", 0.1, report, n=3)
    uniform = kv_generate(bundle.large, bundle.vq, CLASS, SEED, "uniform", 0.1, report, n=3)
    fig = vis.kv_images_figure(full, scalekv, uniform, max_images=2)
    assert [t.meta for t in fig.data[:5]] == ["full", "scalekv", "diff-scalekv", "uniform", "diff-uniform"]
    assert len(fig.data) == 5 * 2  # five columns, two of the three images
    diff = next(t for t in fig.data if t.meta == "diff-uniform")
    assert np.asarray(diff.z) == pytest.approx(np.abs(uniform.images[0].astype(float) - full.images[0]).mean(-1))
    titles = [a.text for a in fig.layout.annotations]
    share = f"({scalekv.kv_bytes / full.kv_bytes:.0%})"
    assert scalekv.kv_bytes < full.kv_bytes and any("ScaleKV 10%" in t and share in t for t in titles)
    frame = vis.kv_frame(full, scalekv, uniform)
    assert list(frame["policy"]) == ["full cache", "ScaleKV", "uniform (SnapKV style)"]
    assert frame["KV kept (KiB)"][1] == round(scalekv.kv_bytes / 1024, 1) and frame["vs full"][1] == share[1:-1]


# ------------------------------------------------------------------------------------------------ DraftAttention
def test_tile_attention_pools_the_true_map():
    side, tile = 4, 2
    att = np.eye(side * side)  # every query attends to itself only → each query tile to itself
    gmap = GridMap(5, side, 0, 0, tile, np.full((4, 4), 0.25), np.eye(4, dtype=bool), att)
    assert vis.tile_attention(gmap) == pytest.approx(np.eye(4))
    att = np.zeros((16, 16))
    att[:, 3] = 0.5  # every query puts half its mass on token 3 (row 0, col 3 → tile 1)
    gmap = dataclasses.replace(gmap, attention=att)
    expected = np.zeros((4, 4))
    expected[:, 1] = 1.0
    assert vis.tile_attention(gmap) == pytest.approx(expected)


def test_grid_attention_figure(draft):
    assert [m.side for m in draft.maps] == [6, 8]
    for gmap in draft.maps:
        fig = vis.grid_attention_figure(gmap)
        traces = {t.meta: t for t in fig.data}
        assert set(traces) == {"true", "pooled", "selected"}
        nb = (gmap.side // gmap.tile) ** 2
        assert np.asarray(traces["true"].z).shape == (nb, nb)
        assert np.asarray(traces["true"].z).sum(1) == pytest.approx(np.ones(nb))
        assert np.asarray(traces["pooled"].z) == pytest.approx(gmap.pooled)
        assert np.array_equal(np.asarray(traces["selected"].z), gmap.keep.astype(int))
        title = fig.layout.title.text
        assert f"{gmap.side}×{gmap.side}" in title and f"{int(gmap.keep.sum())} of {nb * nb} tile pairs" in title


def test_draft_attention_frame_and_images(draft):
    frame = vis.draft_attention_frame(draft)
    assert list(frame.columns) == vis.DRAFT_COLUMNS and len(frame) == len(draft.stats) == 2 * 3  # 2 scales × 3 layers
    assert list(frame["scale"]) == [s.scale for s in draft.stats]
    assert list(frame["relative error"]) == [round(s.rel_error, 4) for s in draft.stats]
    fig = vis.draft_images_figure(draft)
    assert [t.meta for t in fig.data] == ["dense", "sparse", "diff"] * 2
    assert np.array_equal(np.asarray(fig.data[1].z, dtype=np.uint8), draft.images[0])


# ------------------------------------------------------------------------------------------------ empty inputs
@pytest.mark.parametrize("figure, words", [
    (lambda: vis.canvas_grid_figure(None), "Click Generate"),
    (lambda: vis.canvas_grid_figure([]), "Click Generate"),
    (lambda: vis.final_images_figure(None), "Click Generate"),
    (lambda: vis.latency_memory_figure([]), "Click Generate"),
    (lambda: vis.step_figure(None), "Press Step"),
    (lambda: vis.asi_heatmap(None), "Run ScaleKV"),
    (lambda: vis.budget_figure(None), "Run ScaleKV"),
    (lambda: vis.kv_images_figure(None, None), "Run ScaleKV"),
    (lambda: vis.grid_attention_figure(None), "Run DraftAttention"),
    (lambda: vis.draft_images_figure(None), "Run DraftAttention"),
])
def test_empty_inputs_explain_what_to_do(figure, words):
    fig = figure()
    assert not fig.data and words in _message(fig)


def test_empty_frames_keep_their_columns():
    assert list(vis.metrics_frame(None).columns) == vis.METRIC_COLUMNS and vis.metrics_frame([]).empty
    assert list(vis.kv_frame(None).columns) == vis.KV_COLUMNS and vis.kv_frame(None).empty
    assert list(vis.draft_attention_frame(None).columns) == vis.DRAFT_COLUMNS
