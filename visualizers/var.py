"""VAR (next-scale prediction) records drawn: CoDe's large drafter and small refiner, ScaleKV's per-layer cache budgets
and DraftAttention on the scale grids.

Pure functions: a ``VARRun`` (``core.var.code``), ``ASIReport`` / ``BudgetPlan`` / ``KVRun`` (``core.var.scalekv``)
or ``VARDraftRun`` / ``GridMap`` (``core.var.draft_attention``) in, a plotly figure or a pandas DataFrame out. Nothing
here touches a model. Every function accepts None (or an empty list) and then explains what to do instead.

Colours are fixed across every chart: the large drafter blue, the small refiner orange.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.var.code import VARRun, psnr
from core.var.data import CLASS_NAMES
from core.var.draft_attention import GridMap, VARDraftRun
from visualizers.format import MISSING, empty_figure, esc as _esc, num as _num

LARGE_COLOR, SMALL_COLOR = "#1a73e8", "#e8710a"
PREFILL_COLOR, OTHER_COLOR, KV_COLOR, WEIGHTS_COLOR = "#f6c28b", "#bdc1c6", "#a142f4", "#5f6368"
MODEL_COLORS = {"large": LARGE_COLOR, "small": SMALL_COLOR}
MODEL_ROLES = {"large": "large drafter", "small": "small refiner"}
ROLE_LETTERS = {"drafter": "D", "refiner": "R"}
POLICY_NAMES = {"full": "full cache", "scalekv": "ScaleKV", "uniform": "uniform (SnapKV style)"}
KEPT_COLOR, SKIPPED_COLOR = "#1a73e8", "#e3e6ea"
SELECTED_SCALE = [[0.0, SKIPPED_COLOR], [0.5, SKIPPED_COLOR], [0.5, KEPT_COLOR], [1.0, KEPT_COLOR]]
EMPTY_HEIGHT = 260
CELL_PX = 150  # height of one row of images
FRAME_WIDTH = 4
METRIC_COLUMNS = ["run", "large scales", "small scales", "ms", "peak memory (MiB)", "KV (KiB)", "tokens large",
                  "tokens small", "PSNR vs large (dB)", "class accuracy"]
KV_COLUMNS = ["policy", "budget", "KV kept (KiB)", "vs full", "KV peak (KiB)", "PSNR vs full (dB)",
              "class accuracy", "ms"]
DRAFT_COLUMNS = ["scale", "layer", "FLOP sparsity", "relative error"]


# ------------------------------------------------------------------------------------------------ helpers
def model_color(model: str) -> str:
    """The colour of the model that made a scale ("large" or "small"; grey for anything else)."""
    return MODEL_COLORS.get(model, OTHER_COLOR)


def _empty_figure(text: str, height: int = EMPTY_HEIGHT) -> go.Figure:
    return empty_figure(text, height)


def _layout(fig: go.Figure, title: str, height: int, **kwargs) -> go.Figure:
    fig.update_layout(height=height, template="plotly_white", font={"size": 12},
                      title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 14}}, **kwargs)
    return fig


def _class_name(class_id: int) -> str:
    return CLASS_NAMES[class_id] if 0 <= class_id < len(CLASS_NAMES) else str(class_id)


def _span(text: str, color: str) -> str:
    return f'<span style="color:{color}"><b>{_esc(text)}</b></span>'


def _scale_range(indices: list[int]) -> str:
    """[0, 1, 2, 3] → '0–3'; [] → '—'."""
    if not indices:
        return MISSING
    return str(indices[0]) if len(indices) == 1 else f"{indices[0]}–{indices[-1]}"


def _psnr_text(value: float | None, reference: str = "reference") -> str:
    if value is None:
        return reference
    return "identical" if math.isinf(value) else f"{value:.2f}"


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{value:.0%}"


def _split_text(run: VARRun) -> str:
    large = [s.index for s in run.scales if s.model == "large"]
    small = [s.index for s in run.scales if s.model == "small"]
    if not small:
        return f"{run.label}: the large drafter makes every scale"
    if not large:
        return f"{run.label}: the small refiner makes every scale"
    return (f"{run.label}: the large drafter makes scales {_scale_range(large)}, "
            f"the small refiner {_scale_range(small)}")


def _model_ms(run: VARRun, model: str) -> float:
    return sum(s.ms for s in run.scales if s.model == model)


def _hide_axes(fig: go.Figure) -> None:
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, ticks="")
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, ticks="")


def _legend_entries(fig: go.Figure, models: Sequence[str] = ("large", "small")) -> None:
    """Legend keys for the model colours (markers without data: they draw nothing)."""
    for model in models:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=MODEL_ROLES[model], meta=f"key-{model}",
                                 marker={"color": model_color(model), "size": 12, "symbol": "square"},
                                 hoverinfo="skip", showlegend=True))


def _frame(fig: go.Figure, row: int, col: int, color: str, name: str) -> None:
    fig.add_shape(type="rect", xref="x domain", yref="y domain", x0=0, x1=1, y0=0, y1=1, row=row, col=col,
                  line={"color": color, "width": FRAME_WIDTH}, fillcolor="rgba(0,0,0,0)", name=name)


def _abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel mean absolute difference over the colour channels, (…, P, P) float in 0..255."""
    return np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(-1)


def _image_columns_figure(columns: list[dict], n_images: int, title: str, row_label: str = "image") -> go.Figure:
    """Rows = images of the batch, columns = what each shows: {"title", "images" (n,H,W,3) uint8 or "diff" (n,H,W),
    "meta"}; difference columns share one colour range so they compare."""
    cols = len(columns)
    diffs = [c["diff"] for c in columns if "diff" in c]
    zmax = max([1.0] + [float(d[:n_images].max()) for d in diffs])
    titles = [c["title"] for c in columns] + [""] * (cols * (n_images - 1))
    fig = make_subplots(rows=n_images, cols=cols, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=0.02 if n_images > 1 else 0.0)
    for r in range(n_images):
        for c, column in enumerate(columns):
            if "diff" in column:
                fig.add_trace(go.Heatmap(z=column["diff"][r], colorscale="Reds", zmin=0, zmax=zmax, showscale=False,
                                         meta=column["meta"], name=column["meta"],
                                         hovertemplate="x %{x} · y %{y}<br>|Δ| = %{z:.1f} of 255<extra></extra>"),
                              row=r + 1, col=c + 1)
                fig.update_xaxes(constrain="domain", row=r + 1, col=c + 1)
                fig.update_yaxes(autorange="reversed", scaleanchor=f"x{r * cols + c + 1}" if r or c else "x",
                                 constrain="domain", row=r + 1, col=c + 1)
            else:
                fig.add_trace(go.Image(z=column["images"][r], meta=column["meta"], name=column["meta"],
                                       hovertemplate=f"{row_label} {r + 1}<extra></extra>"), row=r + 1, col=c + 1)
    _hide_axes(fig)
    for annotation in fig.layout.annotations:
        annotation.font.size = 11
    return _layout(fig, title, 110 + max(1, n_images) * CELL_PX, margin={"l": 20, "r": 20, "t": 110, "b": 20},
                   showlegend=False)


# ------------------------------------------------------------------------------------------------ CoDe
def canvas_grid_figure(runs: Sequence[VARRun] | None, image: int = 0) -> go.Figure:
    """Rows = runs, columns = scales: the image decoded from scales 0..k of each run, framed in the colour of the
    model that made scale k (legend), with the scale's side and milliseconds above it."""
    runs = [r for r in (runs or []) if r is not None and r.canvases]
    if not runs:
        return _empty_figure("Click Generate to watch each run's image grow, scale by scale.")
    K = max(len(r.canvases) for r in runs)
    n = min(r.n for r in runs)
    image = min(max(int(image or 0), 0), n - 1)
    titles = []
    for run in runs:
        for k in range(K):
            step = run.scales[k] if k < len(run.scales) else None
            titles.append("" if step is None else
                          f"{_span(step.model[0].upper(), model_color(step.model))} scale {k} · "
                          f"{step.side}×{step.side}<br>{step.ms:.1f} ms")
    fig = make_subplots(rows=len(runs), cols=K, subplot_titles=titles, horizontal_spacing=0.012,
                        vertical_spacing=0.09 if len(runs) > 1 else 0.0)
    for r, run in enumerate(runs):
        for k, canvas in enumerate(run.canvases[:K]):
            step = run.scales[k]
            fig.add_trace(go.Image(z=canvas[image], name=f"{run.label} · scale {k}",
                                   meta={"run": run.label, "scale": k, "model": step.model},
                                   hovertemplate=(f"{_esc(run.label)}<br>scale {k} ({step.side}×{step.side}) by the "
                                                  f"{MODEL_ROLES.get(step.model, step.model)}<br>{step.ms:.1f} ms"
                                                  "<extra></extra>")),
                          row=r + 1, col=k + 1)
            _frame(fig, r + 1, k + 1, model_color(step.model), f"{run.label} · scale {k} · {step.model}")
        fig.update_yaxes(title_text=f"<b>{_esc(run.label)}</b><br>{run.total_ms:.0f} ms", title_font={"size": 12},
                         row=r + 1, col=1)
    _legend_entries(fig)
    _hide_axes(fig)
    for annotation in fig.layout.annotations:
        annotation.font.size = 11
    first = runs[0]
    splits = "; ".join(_esc(_split_text(run)) for run in runs if run.tokens_large and run.tokens_small) or \
        "large-only vs small-only"
    title = (f"Canvas after each scale · class “{_esc(_class_name(first.class_id))}”, seed {first.seed}, image "
             f"{image + 1} of {n}<br><sup>{splits}</sup>")
    return _layout(fig, title, 150 + len(runs) * (CELL_PX + 20),
                   margin={"l": 90, "r": 20, "t": 130, "b": 20},
                   legend={"orientation": "h", "x": 1, "xanchor": "right", "yanchor": "bottom",
                           "y": 1.0 + 45 / (len(runs) * (CELL_PX + 20))})  # above the first row's titles


def final_images_figure(runs: Sequence[VARRun] | None, max_images: int = 16) -> go.Figure:
    """Rows = runs, columns = the batch's final images; each row says its PSNR vs large-only and class accuracy."""
    runs = [r for r in (runs or []) if r is not None]
    if not runs:
        return _empty_figure("Click Generate to see the final images of every run.")
    n = min(min(r.images.shape[0] for r in runs), max_images)
    fig = make_subplots(rows=len(runs), cols=n, horizontal_spacing=0.006,
                        vertical_spacing=0.04 if len(runs) > 1 else 0.0)
    for r, run in enumerate(runs):
        for b in range(n):
            fig.add_trace(go.Image(z=run.images[b], name=run.label, meta={"run": run.label, "image": b},
                                   hovertemplate=f"{_esc(run.label)} · image {b + 1}<extra></extra>"),
                          row=r + 1, col=b + 1)
        fig.update_yaxes(title_text=(f"<b>{_esc(run.label)}</b><br>PSNR {_psnr_text(run.psnr_vs_large, 'ref.')}"
                                     f"<br>acc. {_percent(run.class_accuracy)}"), title_font={"size": 11},
                         row=r + 1, col=1)
    _hide_axes(fig)
    cell = max(40, min(110, 1100 // max(n, 1)))
    return _layout(fig, f"Final images ({n} of the batch) · PSNR in dB against large-only, accuracy of the "
                        "classifier", 80 + len(runs) * (cell + 12), margin={"l": 90, "r": 10, "t": 60, "b": 10},
                   showlegend=False)


def latency_memory_figure(runs: Sequence[VARRun] | None) -> go.Figure:
    """Left: each run's latency per batch, stacked by who spent it (large drafter's scales, small refiner's scales,
    the refiner's prefill of the drafter's maps, the rest). Right: peak memory, weights (+ activations on a GPU) and
    the largest KV cache."""
    runs = [r for r in (runs or []) if r is not None]
    if not runs:
        return _empty_figure("Click Generate to compare latency and memory of the runs.")
    labels = [r.label for r in runs]
    tokens = [[r.tokens_large, r.tokens_small] for r in runs]
    large = [_model_ms(r, "large") for r in runs]
    small = [_model_ms(r, "small") for r in runs]
    prefill = [r.prefill_ms for r in runs]
    other = [max(0.0, r.total_ms - a - b - c) for r, a, b, c in zip(runs, large, small, prefill)]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                        subplot_titles=["latency per batch (ms)", "peak memory (MiB)"])
    hover = ("%{x}<br>{what}: %{y:.1f} ms<br>tokens: large %{customdata[0]:,} · small %{customdata[1]:,}"
             "<extra></extra>")
    for name, values, color, meta in (("large drafter", large, LARGE_COLOR, "large"),
                                      ("small refiner", small, SMALL_COLOR, "small"),
                                      ("refiner prefill", prefill, PREFILL_COLOR, "prefill"),
                                      ("other (hand-over, sampling)", other, OTHER_COLOR, "other")):
        fig.add_trace(go.Bar(x=labels, y=values, name=name, meta=meta, marker_color=color, customdata=tokens,
                             legendgroup="latency", hovertemplate=hover.replace("{what}", name)), row=1, col=1)
    gpu = any(not r.memory_source.startswith("weights") for r in runs)
    kv = [r.kv_bytes / 2 ** 20 for r in runs]
    rest = [max(0.0, r.peak_memory_bytes / 2 ** 20 - k) for r, k in zip(runs, kv)]
    rest_name = "weights + activations" if gpu else "weights"
    for name, values, color, meta in ((rest_name, rest, WEIGHTS_COLOR, "weights"),
                                      ("largest KV cache", kv, KV_COLOR, "kv")):
        fig.add_trace(go.Bar(x=labels, y=values, name=name, meta=meta, marker_color=color, customdata=tokens,
                             legendgroup="memory",
                             hovertemplate=(f"%{{x}}<br>{name}: %{{y:.3f}} MiB<br>tokens: large %{{customdata[0]:,}}"
                                            " · small %{customdata[1]:,}<extra></extra>")), row=1, col=2)
    fig.update_yaxes(title_text="ms", row=1, col=1)
    fig.update_yaxes(title_text="MiB", row=1, col=2)
    source = "; ".join(sorted({r.memory_source for r in runs if r.memory_source}))
    title = "Latency and memory per run" + (f"<br><sup>memory: {_esc(source)}</sup>" if source else "")
    return _layout(fig, title, 400, barmode="stack", margin={"l": 60, "r": 20, "t": 90, "b": 50},
                   legend={"orientation": "h", "y": -0.15})


def metrics_frame(runs: Sequence[VARRun] | None) -> pd.DataFrame:
    """One row per run: which scales each model made, latency, memory, tokens, PSNR vs large-only, accuracy."""
    rows = []
    for run in runs or []:
        if run is None:
            continue
        rows.append({"run": run.label,
                     "large scales": _scale_range([s.index for s in run.scales if s.model == "large"]),
                     "small scales": _scale_range([s.index for s in run.scales if s.model == "small"]),
                     "ms": round(run.total_ms, 1),
                     "peak memory (MiB)": round(run.peak_memory_bytes / 2 ** 20, 2),
                     "KV (KiB)": round(run.kv_bytes / 1024, 1),
                     "tokens large": run.tokens_large, "tokens small": run.tokens_small,
                     "PSNR vs large (dB)": _psnr_text(run.psnr_vs_large),
                     "class accuracy": _percent(run.class_accuracy)})
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def step_figure(run: VARRun | None, k: int | None = None, num_scales: int | None = None,
                image: int = 0) -> go.Figure:
    """Step mode: the canvas after scale k (image ``image`` of the batch) next to scale k's token map (codebook
    indices), captioned in the colour of the model that made it."""
    if run is None or not run.scales:
        return _empty_figure("Press Step ▶ to make scale 0 (the 1×1 start), then the next scale with each press.")
    k = len(run.scales) - 1 if k is None else min(max(int(k), 0), len(run.scales) - 1)
    step = run.scales[k]
    image = min(max(int(image or 0), 0), run.n - 1)
    canvas = run.canvases[k][image] if len(run.canvases) > k else run.images[image]
    color = model_color(step.model)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, column_widths=[0.5, 0.5],
                        subplot_titles=[f"canvas after scales 0–{k}" if k else "canvas after scale 0",
                                        f"scale {k}'s token map ({step.side}×{step.side} codebook indices)"])
    fig.add_trace(go.Image(z=canvas, meta="canvas", name="canvas",
                           hovertemplate=f"image {image + 1}, decoded from scales 0..{k}<extra></extra>"), row=1, col=1)
    tokens = run.indices[k][image] if len(run.indices) > k else np.zeros((step.side, step.side), dtype=int)
    fig.add_trace(go.Heatmap(z=tokens.tolist(), colorscale="Viridis", showscale=False, meta="tokens", name="tokens",
                             texttemplate="%{z}" if step.side <= 8 else None, textfont={"size": 10},
                             hovertemplate="row %{y} · col %{x}<br>token %{z}<extra></extra>"), row=1, col=2)
    fig.update_xaxes(constrain="domain", row=1, col=2)
    fig.update_yaxes(autorange="reversed", scaleanchor="x2", constrain="domain", row=1, col=2)
    _frame(fig, 1, 1, color, f"scale {k} · {step.model}")
    _frame(fig, 1, 2, color, f"tokens {k} · {step.model}")
    _hide_axes(fig)
    K = num_scales or len(run.scales)
    title = (f"Scale {k} ({step.side}×{step.side}) made by the {_span(MODEL_ROLES.get(step.model, step.model), color)}"
             f" in {step.ms:.1f} ms · step {k + 1} of {K}<br><sup>{_esc(_split_hint(run, K))}</sup>")
    return _layout(fig, title, 420, margin={"l": 20, "r": 20, "t": 100, "b": 20}, showlegend=False)


def _split_hint(run: VARRun, K: int) -> str:
    if run.split >= K:
        return f"N = {K}: the large drafter makes every scale (large-only)"
    if run.split <= 0:
        return "N = 0: the small refiner makes every scale (small-only)"
    N = run.split
    return f"N = {N}: the large drafter makes scales 0–{N - 1}, the small refiner {N}–{K - 1}"


# ------------------------------------------------------------------------------------------------ ScaleKV
def _scale_labels(K: int, scales: Sequence[int] | None) -> list[str]:
    if scales is not None and len(scales) == K:
        return [f"{k} ({s}×{s})" for k, s in enumerate(scales)]
    return [f"scale {k}" for k in range(K)]


def asi_heatmap(report, scales: Sequence[int] | None = None) -> go.Figure:
    """Layers × scales Attention Selectivity Index of an ``ASIReport``; every cell marked D (drafter: dispersed
    attention, keeps a large cache) or R (refiner: local attention, a small cache does); scale 0 reads nothing."""
    if report is None or getattr(report, "asi", None) is None or np.size(report.asi) == 0:
        return _empty_figure("Click Run ScaleKV to calibrate the large model and see each layer's role per scale.")
    asi = np.asarray(report.asi, dtype=np.float64)
    depth, K = asi.shape
    z = [[None if not math.isfinite(v) else float(v) for v in row] for row in asi]
    text = [[ROLE_LETTERS.get(report.labels[layer][k], "") for k in range(K)] for layer in range(depth)]
    custom = [[report.labels[layer][k] or "nothing to read" for k in range(K)] for layer in range(depth)]
    fig = go.Figure(go.Heatmap(z=z, x=_scale_labels(K, scales), y=[f"layer {layer}" for layer in range(depth)],
                               text=text, texttemplate="%{text}", textfont={"size": 13}, customdata=custom,
                               colorscale="Viridis", colorbar={"title": {"text": "ASI"}}, meta="asi", name="ASI",
                               hoverongaps=False,
                               hovertemplate="%{y} · scale %{x}<br>ASI %{z:.3f}<br>%{customdata}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="scale (its queries read scales 0..k)")
    title = (f"Attention Selectivity Index · {report.samples} calibration samples<br><sup>D = drafter (low ASI: "
             "attention spread over the history, gets a large cache) · R = refiner (high ASI: local, a small cache "
             "does)</sup>")
    return _layout(fig, title, 160 + 34 * depth, margin={"l": 70, "r": 20, "t": 90, "b": 60})


def budget_figure(plan, scales: Sequence[int] | None = None) -> go.Figure:
    """Layers × scales KV entries each layer keeps of the history scale j reads (numbers in the cells), with the
    uniform policy's equal per-layer budget U_j as the bottom row; columns name the history H_j."""
    if plan is None or not getattr(plan, "budgets", None):
        return _empty_figure("Click Run ScaleKV to see how many cached entries each layer keeps per scale.")
    budgets = np.asarray(plan.budgets, dtype=np.int64)
    depth, K = budgets.shape
    x = [f"{label}<br>H={plan.history[k]}" for k, label in enumerate(_scale_labels(K, scales))]
    frac = [[None if k == 0 or not plan.history[k] else budgets[layer, k] / plan.history[k] for k in range(K)]
            for layer in range(depth)]
    text = [["" if k == 0 else str(int(budgets[layer, k])) for k in range(K)] for layer in range(depth)]
    roles = plan.labels or [[""] * K for _ in range(depth)]
    custom = [[(roles[layer][k] or "—") if k else "—" for k in range(K)] for layer in range(depth)]
    fig = make_subplots(rows=2, cols=1, row_heights=[depth / (depth + 1.6), 1.6 / (depth + 1.6)], shared_xaxes=True,
                        vertical_spacing=0.06)
    fig.add_trace(go.Heatmap(z=frac, x=x, y=[f"layer {layer}" for layer in range(depth)], text=text,
                             texttemplate="%{text}", customdata=custom, colorscale="Blues", zmin=0, zmax=1,
                             meta="budgets", name="budgets", hoverongaps=False,
                             colorbar={"title": {"text": "kept / H"}, "len": 0.7, "y": 0.6},
                             hovertemplate="%{y} · scale %{x}<br>keeps %{text} (%{z:.0%} of the history)<br>"
                                           "%{customdata}<extra></extra>"), row=1, col=1)
    uniform_frac = [[None if k == 0 or not plan.history[k] else plan.uniform[k] / plan.history[k] for k in range(K)]]
    fig.add_trace(go.Heatmap(z=uniform_frac, x=x, y=["uniform (each layer)"],
                             text=[["" if k == 0 else str(plan.uniform[k]) for k in range(K)]], texttemplate="%{text}",
                             colorscale="Greys", zmin=0, zmax=1.6, showscale=False, meta="uniform", name="uniform",
                             hoverongaps=False,
                             hovertemplate="uniform budget at scale %{x}<br>every layer keeps %{text}<extra></extra>"),
                  row=2, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    policy = "ScaleKV" if plan.policy == "scalekv" else "uniform"
    title = (f"KV entries kept per layer · {policy} at β = {plan.beta:.0%} of the history<br><sup>each column's "
             "total equals the uniform row × layers: same memory, given to the drafters</sup>")
    return _layout(fig, title, 200 + 34 * (depth + 1), margin={"l": 130, "r": 20, "t": 90, "b": 60})


def _kv_title(run, full) -> str:
    name = POLICY_NAMES.get(run.policy, run.policy)
    head = name if run.policy == "full" else f"{name} {run.beta:.0%}"
    if full is None or run is full:
        return f"{head}<br>KV {run.kv_bytes / 1024:.1f} KiB"
    value = run.psnr_vs_full if run.psnr_vs_full is not None else psnr(run.images, full.images)
    share = f" ({run.kv_bytes / full.kv_bytes:.0%})" if full.kv_bytes else ""
    return f"{head}<br>KV {run.kv_bytes / 1024:.1f} KiB{share} · PSNR {_psnr_text(value)}"


def kv_images_figure(full, compressed, uniform=None, max_images: int = 4) -> go.Figure:
    """Full-cache images next to ScaleKV's (and the uniform baseline's) at the same class and seed, with the
    per-pixel absolute difference to the full cache; column titles give the KV kept between scales and PSNR."""
    if full is None or compressed is None:
        return _empty_figure("Click Run ScaleKV to compare full-cache images with compressed-cache ones.")
    n = min(full.images.shape[0], compressed.images.shape[0], max_images,
            uniform.images.shape[0] if uniform is not None else max_images)
    columns = [{"title": _kv_title(full, None), "images": full.images, "meta": "full"},
               {"title": _kv_title(compressed, full), "images": compressed.images, "meta": compressed.policy},
               {"title": f"|{POLICY_NAMES.get(compressed.policy, compressed.policy)} − full|",
                "diff": _abs_diff(compressed.images, full.images), "meta": f"diff-{compressed.policy}"}]
    if uniform is not None:
        columns += [{"title": _kv_title(uniform, full), "images": uniform.images, "meta": uniform.policy},
                    {"title": "|uniform − full|", "diff": _abs_diff(uniform.images, full.images),
                     "meta": f"diff-{uniform.policy}"}]
    title = (f"Full cache vs compressed cache · class “{_esc(_class_name(full.class_id))}”, seed {full.seed}"
             "<br><sup>red: pixels that changed (0 = identical)</sup>")
    return _image_columns_figure(columns, n, title)


def kv_frame(full, compressed=None, uniform=None, classifier_accuracy: dict | None = None) -> pd.DataFrame:
    """One row per policy: budget, KV kept between scales (and its share of the full cache), the peak during a
    forward, PSNR vs the full cache, class accuracy, milliseconds."""
    rows = []
    for run in (full, compressed, uniform):
        if run is None:
            continue
        value = None if run is full or full is None else (
            run.psnr_vs_full if run.psnr_vs_full is not None else psnr(run.images, full.images))
        rows.append({"policy": POLICY_NAMES.get(run.policy, run.policy), "budget": f"{run.beta:.0%}",
                     "KV kept (KiB)": round(run.kv_bytes / 1024, 1),
                     "vs full": (f"{run.kv_bytes / full.kv_bytes:.0%}" if full is not None and full.kv_bytes
                                 else MISSING),
                     "KV peak (KiB)": round(run.kv_peak_bytes / 1024, 1),
                     "PSNR vs full (dB)": "reference" if run is full else _psnr_text(value),
                     "class accuracy": _percent(run.class_accuracy), "ms": round(run.total_ms, 1)})
    return pd.DataFrame(rows, columns=KV_COLUMNS)


# ------------------------------------------------------------------------------------------------ DraftAttention
def tile_attention(grid_map: GridMap) -> np.ndarray:
    """The true attention of the scale's queries over its own tokens, averaged per (query tile, key tile): mean over
    a tile's queries of the attention summed over a key tile, each row normalised to sum to 1 (the draft map is a
    distribution over key tiles too). Tiles are raster-ordered like the draft map's."""
    side, tile = grid_map.side, grid_map.tile
    per_row = math.ceil(side / tile)
    pos = np.arange(side * side)
    blocks = (pos // side // tile) * per_row + (pos % side) // tile
    nb = per_row * per_row
    att = np.asarray(grid_map.attention, dtype=np.float64)
    onehot = np.zeros((side * side, nb))
    onehot[pos, blocks] = 1.0
    summed = att @ onehot  # (n, nb): attention of each query on each key tile
    counts = onehot.sum(0)
    pooled = (onehot.T @ summed) / np.maximum(counts, 1)[:, None]  # (nb, nb) mean over the tile's queries
    return pooled / np.maximum(pooled.sum(1, keepdims=True), 1e-12)


def grid_attention_figure(grid_map: GridMap | None) -> go.Figure:
    """For one scale of a DraftAttention run: the true attention over the scale's tiles, the pooled draft map, and
    the tile pairs computed at full resolution (blue); the title gives the share of true attention they hold."""
    if grid_map is None:
        return _empty_figure("Click Run DraftAttention to see the draft map of the 6×6 and 8×8 scales.")
    true = tile_attention(grid_map)
    keep = np.asarray(grid_map.keep, dtype=bool)
    covered = float((true * keep).sum() / max(true.sum(), 1e-12))
    nb = true.shape[0]
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07,
                        subplot_titles=["true attention (tile-averaged)",
                                        f"draft map ({grid_map.tile}×{grid_map.tile}-token tiles)",
                                        "selected tiles (blue: computed)"])
    hover = "query tile %{y} · key tile %{x}<br>{what} = %{z:.4f}<extra></extra>"
    fig.add_trace(go.Heatmap(z=true.tolist(), colorscale="Blues", zmin=0, showscale=False, meta="true", name="true",
                             hovertemplate=hover.replace("{what}", "p")), row=1, col=1)
    fig.add_trace(go.Heatmap(z=np.asarray(grid_map.pooled, dtype=np.float64).tolist(), colorscale="Blues", zmin=0,
                             showscale=False, meta="pooled", name="pooled",
                             hovertemplate=hover.replace("{what}", "draft p")), row=1, col=2)
    fig.add_trace(go.Heatmap(z=keep.astype(int).tolist(), colorscale=SELECTED_SCALE, zmin=0, zmax=1, xgap=1, ygap=1,
                             showscale=False, meta="selected", name="selected",
                             text=[["computed" if v else "skipped" for v in row] for row in keep],
                             hovertemplate="query tile %{y} · key tile %{x}<br>%{text}<extra></extra>"), row=1, col=3)
    for col in (1, 2, 3):
        fig.update_xaxes(title_text="key tile", row=1, col=col, constrain="domain")
        fig.update_yaxes(title_text="query tile", row=1, col=col, autorange="reversed",
                         scaleanchor="x" if col == 1 else f"x{col}")
    title = (f"DraftAttention · scale {grid_map.scale} ({grid_map.side}×{grid_map.side}, {nb} tiles) · layer "
             f"{grid_map.layer} · head {grid_map.head}<br><sup>{int(keep.sum())} of {keep.size} tile pairs computed; "
             f"they hold {covered:.0%} of the true attention on this scale (coarser scales are always read in "
             "full)</sup>")
    return _layout(fig, title, 430, margin={"l": 60, "r": 20, "t": 100, "b": 60})


def draft_attention_frame(run: VARDraftRun | None) -> pd.DataFrame:
    """Per (scale, layer) of a DraftAttention run: the share of query·key pairs skipped and the relative error of the
    layer's attention output against dense attention."""
    rows = [] if run is None else [
        {"scale": s.scale, "layer": s.layer, "FLOP sparsity": round(s.flop_sparsity, 4),
         "relative error": round(s.rel_error, 4)} for s in run.stats]
    return pd.DataFrame(rows, columns=DRAFT_COLUMNS)


def draft_images_figure(run: VARDraftRun | None, max_images: int = 4) -> go.Figure:
    """Dense-attention images next to DraftAttention's (same class and seed) and their absolute difference."""
    if run is None:
        return _empty_figure("Click Run DraftAttention to compare dense and sparse images.")
    n = min(run.images.shape[0], max_images)
    columns = [{"title": f"dense<br>{run.dense_ms:.0f} ms", "images": run.dense_images, "meta": "dense"},
               {"title": f"DraftAttention r={_num(run.sparsity, 2)}<br>{run.ms:.0f} ms · PSNR "
                         f"{_psnr_text(run.psnr_vs_dense)}", "images": run.images, "meta": "sparse"},
               {"title": "|sparse − dense|", "diff": _abs_diff(run.images, run.dense_images), "meta": "diff"}]
    title = (f"Dense vs DraftAttention · class “{_esc(_class_name(run.class_id))}”, seed {run.seed}<br><sup>FLOP "
             f"sparsity {run.flop_sparsity:.0%} on the scales of side ≥ {run.min_side} · mean relative output error "
             f"{_num(run.mean_rel_error)}</sup>")
    return _image_columns_figure(columns, n, title)
