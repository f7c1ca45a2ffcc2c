"""Self-drafting (Kangaroo, early exit): the drafter's confidence at every draft step against the threshold η, an η
sweep, a short HTML summary of why drafting stopped, and EasySpec's modelled timeline.

Input is ``StepRecord``s (Kangaroo's carry ``draft_info``: exit layer, η, what stopped drafting and the top q of each
draft step), ``Stats.summary()`` dicts, sweep rows and measured sublayer times; nothing here touches a model.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.specdec.drafters.easyspec import layer_groups, modelled_latency
from core.specdec.records import StepRecord
from visualizers.format import MISSING, count as _count, empty_figure, esc as _esc, num as _num

HEIGHT, SWEEP_HEIGHT, EMPTY_HEIGHT, TIMELINE_HEIGHT = 400, 360, 260, 340
MAX_ROUND_TICKS = 24  # beyond this many rounds, label every k-th round only
TEXT_CHARS = 24

# The token strip's palette: accepted green, rejected red, unverified grey; the step that stopped drafting orange.
OUTCOMES = {  # outcome → (legend name, marker)
    "accepted": ("accepted", {"color": "#1e8e3e", "size": 10, "symbol": "circle"}),
    "rejected": ("rejected", {"color": "#d93025", "size": 10, "symbol": "circle"}),
    "unverified": ("unverified (after a rejection)", {"color": "#9aa0a6", "size": 9, "symbol": "circle"}),
    "stopped": ("stopped by η (not drafted)",
                {"color": "rgba(0,0,0,0)", "size": 11, "symbol": "circle-open", "line": {"color": "#e8710a",
                                                                                           "width": 2.5}}),
}
ETA_COLOR, PATH_COLOR, SEPARATOR_COLOR = "#e8710a", "#c4c9cf", "#e3e6ea"
SWEEP_COLORS = {"tau": "#1e8e3e", "mean_draft_len": "#1a73e8", "tokens_per_second": "#3c4a5c", "plain": "#9aa0a6"}
TIMELINE_PARTS = {  # kind → (legend name, colour)
    "attention": ("attention sublayer", "#1a73e8"),
    "mlp": ("MLP sublayer", "#1e8e3e"),
    "head": ("final norm + LM head", "#3c4a5c"),
    "calibration": ("calibration pass (2 tokens, exact)", "#e8710a"),
}
ROW_SEQUENTIAL, ROW_CALIBRATION = "1 device (sequential)", "calibration pass (exact, once per round)"
BAR_WIDTH = 0.8  # of a row; parallel attention sublayers share it in lanes


# ------------------------------------------------------------------------------------------------ confidence
def _points(records: list[StepRecord]) -> tuple[list[dict], str]:
    """One dict per draft step (round, step, x, confidence, outcome, token text) and the source of the confidences:
    "top-q" (Kangaroo's ``draft_info``), "q" (the drafted tokens' q, for drafters without it) or "" (none)."""
    source = ("top-q" if any("confidences" in (r.draft_info or {}) for r in records)
              else "q" if any(t.q is not None for r in records for t in r.drafted) else "")
    points, x = [], 0
    for record in records:
        info = record.draft_info or {}
        if source == "top-q":
            steps = [c[-1] if isinstance(c, list) else c for c in info.get("confidences") or []]  # S2D: per exit
            stopped_by = info.get("stopped_by")
        else:
            steps = [t.q for t in record.drafted] if source == "q" else []
            stopped_by = None
        for i, confidence in enumerate(steps):
            if confidence is None:
                continue
            if i < len(record.drafted):
                token = record.drafted[i]
                outcome, text = token.decision, token.text
            elif stopped_by == "eta" and i == len(record.drafted):
                outcome, text = "stopped", None
            else:
                continue
            x += 1
            points.append({"round": record.step, "step": i + 1, "x": x, "confidence": float(confidence),
                           "outcome": outcome, "text": text, "eta": info.get("eta")})
    return points, source


def confidence_figure(records: list[StepRecord], eta: float | None) -> go.Figure:
    """The drafter's confidence (top q) at each draft step, round after round (x: draft steps in order, a thin line
    opens each round), coloured by what the target decided; a hollow orange ring marks the step whose confidence fell
    below η and stopped drafting. The dashed line is the η in force in each round (``eta`` where a record has none).
    Records without Kangaroo's ``draft_info`` show the q of each drafted token instead (no second early exit), or an
    explanatory note when the drafter has no probabilities at all."""
    records = [r for r in records or [] if r is not None]
    if not records:
        return _empty_figure("Step or Run to see the drafter's confidence at each draft step")
    points, source = _points(records)
    if not source:
        return _empty_figure(f"The '{records[-1].drafter}' drafter reports no confidence: it drafts without "
                             "probabilities and has no second early exit. Choose kangaroo (or early-exit) to see "
                             "the confidence at each draft step.")
    if not points:
        return _empty_figure("No draft steps yet: every round so far had no room to draft")
    fig = go.Figure()
    _add_round_paths(fig, points)
    for outcome, (name, marker) in OUTCOMES.items():
        chosen = [p for p in points if p["outcome"] == outcome]
        if not chosen:
            continue
        fig.add_trace(go.Scatter(
            x=[p["x"] for p in chosen], y=[p["confidence"] for p in chosen], mode="markers", name=name,
            meta=outcome, marker=marker, customdata=[_hover_data(p) for p in chosen],
            hovertemplate=("round %{customdata[0]} · draft step %{customdata[1]}<br>token %{customdata[2]}<br>"
                           "confidence (top q) %{y:.4f}<br>%{customdata[3]}<extra></extra>")))
    right = _add_eta_line(fig, points, eta if source == "top-q" else None)
    _round_axis(fig, points, right)
    fig.update_layout(
        height=HEIGHT, template="plotly_white", font={"size": 12}, margin={"l": 60, "r": 20, "t": 70, "b": 90},
        title={"text": _confidence_title(records, source, eta), "x": 0, "xanchor": "left", "font": {"size": 14}},
        hoverlabel={"font": {"family": "ui-monospace, monospace", "size": 12}},
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.2, "yanchor": "top", "font": {"size": 11}},
        yaxis={"title": "confidence: top q" if source == "top-q" else "q of the drafted token", "range": [-0.03, 1.05]})
    return fig


def _add_round_paths(fig: go.Figure, points: list[dict]) -> None:
    """A thin grey line through each round's steps (broken between rounds) and a light rule at each round's start."""
    xs, ys, previous = [], [], None
    for p in points:
        if previous is not None and p["round"] != previous:
            xs.append(None)
            ys.append(None)
            fig.add_vline(x=p["x"] - 0.5, line={"color": SEPARATOR_COLOR, "width": 1})
        xs.append(p["x"])
        ys.append(p["confidence"])
        previous = p["round"]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": PATH_COLOR, "width": 1}, hoverinfo="skip",
                             showlegend=False, name="round path", meta="path"))


def _add_eta_line(fig: go.Figure, points: list[dict], eta: float | None) -> float | None:
    """The threshold in force round by round, as one dashed line across the plot (steps where η changed), then the
    new ``eta`` for half a step when it differs from the last round's (it applies from the next round); return the
    line's right end."""
    xs, ys = [], []
    for p in points:
        level = p["eta"] if p["eta"] is not None else eta
        if level is None:
            continue
        if ys and ys[-1] == level and xs[-1] == p["x"] - 0.5:
            xs[-1] = p["x"] + 0.5  # extend the current segment
            continue
        xs += [p["x"] - 0.5, p["x"] + 0.5]
        ys += [level, level]
    if not xs:
        return None
    if eta is not None and ys[-1] != eta:  # the slider moved: the new η applies from the next round
        xs += [xs[-1], xs[-1] + 0.5]
        ys += [eta, eta]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="η (threshold)", meta="eta",
                             line={"color": ETA_COLOR, "width": 1.5, "dash": "dash"},
                             hovertemplate="η = %{y:.2f}<extra></extra>"))
    return xs[-1]


def _round_axis(fig: go.Figure, points: list[dict], right: float | None = None) -> None:
    """x ticks at the first step of each round, labelled with the round number (every k-th round when many)."""
    starts = {}
    for p in points:
        starts.setdefault(p["round"], p["x"])
    every = max(1, -(-len(starts) // MAX_ROUND_TICKS))
    ticks = [(x, str(r)) for k, (r, x) in enumerate(starts.items()) if k % every == 0]
    fig.update_xaxes(title={"text": "draft steps, round by round (tick: the round's first step)", "standoff": 4},
                     tickvals=[x for x, _ in ticks], ticktext=[t for _, t in ticks], showgrid=False,
                     range=[0.4, max(points[-1]["x"] + 0.6, (right or 0) + 0.1)], zeroline=False)


def _hover_data(p: dict) -> list:
    text = repr(p["text"]) if p["text"] is not None else "(not drafted)"
    if p["outcome"] == "stopped":
        what = "below η: drafting stopped here" + (f" (η = {p['eta']:.2f})" if p["eta"] is not None else "")
    else:
        what = p["outcome"]
    return [p["round"], p["step"], _esc(_cut(text, TEXT_CHARS)), what]


def _confidence_title(records: list[StepRecord], source: str, eta: float | None) -> str:
    if source != "top-q":
        return (f"q of each drafted token ({_esc(records[-1].drafter)}: no second early exit)<br>"
                "<span style='font-size:12px'>kangaroo stops drafting when its top q falls below η; this drafter "
                "always drafts γ tokens</span>")
    infos = [r.draft_info for r in records if r.draft_info]
    by_eta = sum(i.get("stopped_by") == "eta" for i in infos)
    by_gamma = sum(i.get("stopped_by") == "gamma" for i in infos)
    shown = eta if eta is not None else (infos[-1].get("eta") if infos else None)
    ell = infos[-1].get("exit_layer") if infos else None
    head = "drafter confidence (top q) at each draft step" + (f" · η = {shown:.2f}" if shown is not None else "")
    detail = (f"{_count(len(infos), 'round')}: drafting stopped by η in {by_eta}, after γ tokens in {by_gamma}"
              + (f" · exit layer ℓ = {ell}" if ell is not None else ""))
    return f"{head}<br><span style='font-size:12px'>{_esc(detail)}</span>"


# ------------------------------------------------------------------------------------------------ η sweep
def eta_sweep_figure(rows: list[dict]) -> go.Figure:
    """Kangaroo's η sweep: ``sweep_figure`` over the rows' ``eta``."""
    return sweep_figure(rows, "eta", "η", "kangaroo", "Press η sweep to run the prompt at η = 0, 0.2, 0.4, 0.6 and "
                        "0.8 and once with plain decoding")


def theta_sweep_figure(rows: list[dict]) -> go.Figure:
    """S2D's threshold sweep (one θ for every exit but the last): ``sweep_figure`` over the rows' ``theta``."""
    return sweep_figure(rows, "theta", "θ", "sorted", "Choose the sorted drafter and press the sweep to run the prompt "
                        "at several θ and once with plain decoding")


def sweep_figure(rows: list[dict], key: str, symbol: str, drafter: str, empty: str) -> go.Figure:
    """Left: τ and the mean draft length against the swept setting ``key`` (shown as ``symbol``); right: tokens/s
    against it, with plain decoding (the row with drafter "none" or no ``key``, else the rows'
    ``plain_tokens_per_second``) as a dashed reference line."""
    rows = list(rows or [])
    swept = sorted((r for r in rows if r.get(key) is not None and r.get("drafter", drafter) != "none"),
                   key=lambda r: r[key])
    if not swept:
        return _empty_figure(empty)
    plain = next((r.get("tokens_per_second") for r in rows if r.get(key) is None or r.get("drafter") == "none"),
                 None)
    if plain is None:
        plain = next((r.get("plain_tokens_per_second") for r in swept if r.get("plain_tokens_per_second")), None)
    values = [r[key] for r in swept]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=["τ and mean draft length", "tokens / s (this machine)"])
    custom = [[_num(r.get("alpha")), r.get("generated", MISSING), r.get("rounds", MISSING)] for r in swept]
    hover_tail = "<br>α = %{customdata[0]} · %{customdata[1]} tokens in %{customdata[2]} rounds<extra></extra>"
    for name_key, name, digits in (("tau", "τ: tokens per target call", 2), ("mean_draft_len", "mean draft length",
                                                                             2)):
        fig.add_trace(go.Scatter(
            x=values, y=[r.get(name_key) for r in swept], mode="lines+markers", name=name, meta=name_key,
            customdata=custom, line={"color": SWEEP_COLORS[name_key], "width": 2}, marker={"size": 8},
            hovertemplate=f"{symbol} = %{{x:.2f}}<br>{name}: %{{y:.{digits}f}}" + hover_tail), row=1, col=1)
    fig.add_trace(go.Scatter(
        x=values, y=[r.get("tokens_per_second") for r in swept], mode="lines+markers", name=f"{drafter} tokens/s",
        meta="tokens_per_second", customdata=custom, line={"color": SWEEP_COLORS["tokens_per_second"], "width": 2},
        marker={"size": 8}, hovertemplate=f"{symbol} = %{{x:.2f}}<br>%{{y:.1f}} tokens/s" + hover_tail), row=1, col=2)
    if plain is not None:
        fig.add_trace(go.Scatter(
            x=[min(values), max(values)] if len(values) > 1 else [values[0] - 0.1, values[0] + 0.1],
            y=[plain, plain], mode="lines", name="plain decoding tokens/s", meta="plain",
            line={"color": SWEEP_COLORS["plain"], "width": 2, "dash": "dash"},
            hovertemplate="plain decoding: %{y:.1f} tokens/s<extra></extra>"), row=1, col=2)
    speeds = [v for v in [r.get("tokens_per_second") for r in swept] + [plain] if v is not None]
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[0, max(speeds + [1e-9]) * 1.15], row=1, col=2)
    fig.update_xaxes(title={"text": symbol, "standoff": 4}, tickvals=values)
    fig.update_layout(height=SWEEP_HEIGHT, template="plotly_white", font={"size": 12},
                      margin={"l": 50, "r": 20, "t": 50, "b": 90},
                      legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.25, "yanchor": "top",
                              "font": {"size": 11}})
    return fig


# ------------------------------------------------------------------------------------------------ S2D exits
def exit_token_figure(records: list[StepRecord]) -> go.Figure:
    """S2D's exit × token chart: one column per draft step (round by round), one row per exit (shallowest at the
    bottom). A cell is the exit's confidence (top q) where the token reached that exit, blank where it left earlier;
    the marker sits on the exit the token was drafted from, coloured by what the target decided. Each row's label
    carries its layer and the threshold θ in force in the last round (the last exit always emits)."""
    records = [r for r in records or [] if r is not None]
    infos = [(r, r.draft_info) for r in records if (r.draft_info or {}).get("exits") is not None]
    if not infos:
        return _empty_figure("Choose the sorted drafter and Step or Run to see which exit drafted each token")
    layers = list(infos[-1][1]["exit_layers"])
    thresholds = list(infos[-1][1].get("thresholds") or [])
    columns, x, starts = [], 0, {}
    for record, info in infos:
        for i, (k, seen) in enumerate(zip(info["exits"], info["confidences"])):
            token = record.drafted[i] if i < len(record.drafted) else None
            x += 1
            starts.setdefault(record.step, x)
            columns.append({"x": x, "round": record.step, "exit": k, "seen": seen,
                            "outcome": token.decision if token else "unverified",
                            "text": token.text if token else None})
    z = [[c["seen"][k] if k < len(c["seen"]) else None for c in columns] for k in range(len(layers))]
    fig = go.Figure(go.Heatmap(
        x=[c["x"] for c in columns], y=list(range(len(layers))), z=z, zmin=0, zmax=1, colorscale="Blues",
        colorbar={"title": {"text": "top q", "side": "right"}, "thickness": 12, "len": 0.8}, meta="confidence",
        xgap=1, ygap=1, hovertemplate="draft step %{x} · exit %{y}<br>confidence %{z:.4f}<extra></extra>"))
    for outcome, (name, marker) in OUTCOMES.items():
        chosen = [c for c in columns if c["outcome"] == outcome]
        if not chosen or outcome == "stopped":
            continue
        fig.add_trace(go.Scatter(
            x=[c["x"] for c in chosen], y=[c["exit"] for c in chosen], mode="markers", name=f"drafted here, {name}",
            meta=outcome, marker={**marker, "line": {"color": "white", "width": 1.5}},
            customdata=[[c["round"], _esc(_cut(repr(c["text"]), TEXT_CHARS)) if c["text"] is not None else MISSING,
                         layers[c["exit"]], _num(c["seen"][c["exit"]])] for c in chosen],
            hovertemplate=("round %{customdata[0]} · token %{customdata[1]}<br>drafted at layer %{customdata[2]} "
                           "(top q %{customdata[3]})<br>" + name + "<extra></extra>")))
    labels = [f"exit {k + 1} · layer {e}" + (f" · θ {thresholds[k]:g}" if k < len(thresholds) else " · always")
              for k, e in enumerate(layers)]
    every = max(1, -(-len(starts) // MAX_ROUND_TICKS))
    ticks = [(x0, str(r)) for n, (r, x0) in enumerate(starts.items()) if n % every == 0]
    counts = [sum(c["exit"] == k for c in columns) for k in range(len(layers))]
    share = " · ".join(f"layer {e}: {n}" for e, n in zip(layers, counts))
    lazy = sum(int(info.get("lazy_rows") or 0) for _, info in infos)
    trained = "trained exits" if infos[-1][1].get("trained") else "untrained exits (plain early exits)"
    fig.update_layout(
        height=HEIGHT, template="plotly_white", font={"size": 12}, margin={"l": 150, "r": 20, "t": 70, "b": 90},
        title={"text": f"which exit drafted each token ({_esc(trained)})<br><span style='font-size:12px'>"
                       f"{_esc(share)} · {lazy} rows filled lazily in deeper layers</span>",
               "x": 0, "xanchor": "left", "font": {"size": 14}},
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.2, "yanchor": "top", "font": {"size": 11}},
        yaxis={"tickvals": list(range(len(layers))), "ticktext": labels, "range": [-0.5, len(layers) - 0.5]},
        xaxis={"title": {"text": "draft steps, round by round (tick: the round's first step)", "standoff": 4},
               "tickvals": [t for t, _ in ticks], "ticktext": [s for _, s in ticks], "showgrid": False})
    return fig


# ------------------------------------------------------------------------------------------------ EasySpec timeline
def easyspec_timeline_figure(times: dict | None, group_size: int, devices: int,
                             calibration_ms: float | None = None) -> go.Figure:
    """EasySpec's per-token drafting forward as a Gantt chart, built only from measured sublayer ``times`` (as
    ``EasySpecDrafter.layer_times`` returns): one device runs every layer's attention then MLP, then the head; with
    ``devices`` devices each layer group's attention sublayers run side by side (in lanes, ``devices`` at a time, a
    wave costing its slowest), then its MLPs in sequence, then the head. ``calibration_ms`` adds a row with the exact
    calibration pass. Totals in the title come from ``modelled_latency``, so the two agree."""
    if not times:
        return _empty_figure("Press EasySpec timeline to measure the drafter's sublayers and model the layer-parallel "
                             "forward")
    latency = modelled_latency(times, group_size, devices)
    attn, mlp, head_ms = list(times["attention_ms"]), list(times["mlp_ms"]), float(times.get("head_ms", 0.0))
    parallel_row = f"{_count(devices, 'device')} (layer-parallel)"
    bars = _sequential_bars(attn, mlp, head_ms, ROW_SEQUENTIAL)
    bars += _parallel_bars(attn, mlp, head_ms, layer_groups(len(attn), group_size), devices, parallel_row)
    rows = [ROW_SEQUENTIAL, parallel_row]
    if calibration_ms is not None:
        rows.append(ROW_CALIBRATION)
        bars.append(_bar("calibration", ROW_CALIBRATION, 0.0, float(calibration_ms), "exact forward of 2 tokens"))
    fig = go.Figure()
    for kind, (name, color) in TIMELINE_PARTS.items():
        chosen = [b for b in bars if b["kind"] == kind]
        if not chosen:
            continue
        fig.add_trace(go.Bar(
            y=[b["row"] for b in chosen], x=[b["ms"] for b in chosen], base=[b["start"] for b in chosen],
            width=[b["width"] for b in chosen], offset=[b["offset"] for b in chosen], orientation="h", name=name,
            meta=kind, marker={"color": color, "line": {"color": "white", "width": 1}},
            customdata=[[b["label"], b["start"], b["start"] + b["ms"]] for b in chosen],
            hovertemplate=("%{customdata[0]}<br>%{x:.4f} ms (from %{customdata[1]:.4f} to %{customdata[2]:.4f} ms)"
                           "<extra>%{y}</extra>")))
    fig.update_yaxes(categoryorder="array", categoryarray=rows, autorange="reversed", title=None,
                     automargin=True)
    fig.update_xaxes(title={"text": "ms (modelled from measured sublayer times)", "standoff": 4}, rangemode="tozero")
    fig.update_layout(
        height=TIMELINE_HEIGHT, template="plotly_white", font={"size": 12}, barmode="overlay", bargap=0,
        margin={"l": 20, "r": 20, "t": 70, "b": 90},
        title={"text": _timeline_title(latency, group_size, devices, calibration_ms), "x": 0, "xanchor": "left",
               "font": {"size": 14}},
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.3, "yanchor": "top", "font": {"size": 11}})
    return fig


def _bar(kind: str, row: str, start: float, ms: float, label: str, lane: int = 0, lanes: int = 1) -> dict:
    width = BAR_WIDTH / lanes
    return {"kind": kind, "row": row, "start": float(start), "ms": float(ms), "label": label, "width": width,
            "offset": -BAR_WIDTH / 2 + lane * width}


def _sequential_bars(attn: list[float], mlp: list[float], head_ms: float, row: str) -> list[dict]:
    bars, t = [], 0.0
    for j, (a, m) in enumerate(zip(attn, mlp)):
        bars.append(_bar("attention", row, t, a, f"layer {j} attention"))
        bars.append(_bar("mlp", row, t + a, m, f"layer {j} MLP"))
        t += a + m
    return bars + [_bar("head", row, t, head_ms, "final norm + LM head")]


def _parallel_bars(attn: list[float], mlp: list[float], head_ms: float, groups: list[tuple[int, int]],
                   devices: int, row: str) -> list[dict]:
    """A group's attention sublayers in waves of ``devices`` lanes (a wave ends with its slowest), then its MLPs."""
    lanes = min(devices, max(last - first + 1 for first, last in groups))
    bars, t = [], 0.0
    for first, last in groups:
        layers = list(range(first, last + 1))
        group = f"group {first}" if first == last else f"group {first}–{last}"
        for w in range(0, len(layers), devices):
            wave = layers[w:w + devices]
            for lane, j in enumerate(wave):
                bars.append(_bar("attention", row, t, attn[j], f"layer {j} attention ({group}, device {lane + 1})",
                                 lane, lanes))
            t += max(attn[j] for j in wave)
        for j in layers:
            bars.append(_bar("mlp", row, t, mlp[j], f"layer {j} MLP ({group})"))
            t += mlp[j]
    return bars + [_bar("head", row, t, head_ms, "final norm + LM head")]


def _timeline_title(latency: dict, group_size: int, devices: int, calibration_ms: float | None) -> str:
    head = (f"EasySpec per drafted token: {latency['sequential_ms']:.3f} ms on 1 device → "
            f"{latency['parallel_ms']:.3f} ms on {_count(devices, 'device')} ({latency['speedup']:.2f}×)")
    detail = f"group size {group_size}, {len(latency['groups'])} layer groups"
    if calibration_ms is not None:
        detail += f" · calibration pass {float(calibration_ms):.3f} ms once per round"
    return f"{head}<br><span style='font-size:12px'>{_esc(detail)}</span>"


# ------------------------------------------------------------------------------------------------ summary
_STYLE = """<style>
.ds-self { font-size: 14px; line-height: 1.6; }
.ds-self .muted { color: #80868b; }
.ds-self table { border-collapse: collapse; }
.ds-self th { text-align: left; font-weight: normal; color: #80868b; padding: 1px 12px 1px 0; }
.ds-self td { font-family: ui-monospace, monospace; padding: 1px 0; }
</style>"""


def exit_summary_html(records: list[StepRecord], stats_summary: dict) -> str:
    """Rounds, what stopped drafting (η or γ), mean confidence of accepted vs rejected drafts, τ, α, tokens/s."""
    records = [r for r in records or [] if r is not None]
    s = stats_summary or {}
    if not records:
        return f'<div class="ds-self">{_STYLE}<span class="muted">No round yet: press Step or Run.</span></div>'
    points, source = _points(records)
    infos = [r.draft_info for r in records if r.draft_info]
    if infos and "exits" in infos[-1]:  # S2D: a fixed γ, each token from the first exit confident enough
        layers = infos[-1]["exit_layers"]
        used = [sum(k == e for i in infos for k in i.get("exits", [])) for e in range(len(layers))]
        stops = "after γ tokens (S2D has no second early exit)"
        layer = (" · ".join(f"layer {e}: {n}" for e, n in zip(layers, used)) + " · θ = "
                 + ", ".join(f"{t:g}" for t in infos[-1].get("thresholds") or []))
    elif source == "top-q":
        stops = (f"by η in {sum(i.get('stopped_by') == 'eta' for i in infos)}, after γ tokens in "
                 f"{sum(i.get('stopped_by') == 'gamma' for i in infos)}")
        ell = infos[-1].get("exit_layer")
        layer = f"ℓ = {ell}, η = {_num(infos[-1].get('eta'), 2)}"
    else:
        stops = f"{MISSING} ({records[-1].drafter} has no second early exit)"
        layer = MISSING
    label = "top q" if source == "top-q" else "q"
    mean = {o: _mean(p["confidence"] for p in points if p["outcome"] == o) for o in ("accepted", "rejected")}
    rows = [
        ("rounds", f"{len(records)} · {records[-1].drafter} drafter, {records[-1].verifier} verifier"),
        ("drafting stopped", stops),
        ("exits used, θ" if infos and "exits" in infos[-1] else "exit layer, η", layer),
        (f"mean {label}: accepted", f"{_num(mean['accepted'])} over {_count(_n(points, 'accepted'), 'draft')}"),
        (f"mean {label}: rejected", f"{_num(mean['rejected'])} over {_count(_n(points, 'rejected'), 'draft')}"),
        ("τ (tokens per target call)", _num(s.get("tau"), 2)),
        ("α (acceptance rate)", _num(s.get("alpha"))),
        ("mean draft length", _num(s.get("mean_draft_len"), 2)),
        ("tokens / s", _num(s.get("tokens_per_second"), 1)),
    ]
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f'<div class="ds-self">{_STYLE}<table>{body}</table></div>'


# ------------------------------------------------------------------------------------------------ helpers
def _empty_figure(text: str) -> go.Figure:
    return empty_figure(text, EMPTY_HEIGHT, 14, wrap=70)


def _n(points: list[dict], outcome: str) -> int:
    return sum(p["outcome"] == outcome for p in points)


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["confidence_figure", "easyspec_timeline_figure", "eta_sweep_figure", "exit_summary_html",
           "exit_token_figure", "sweep_figure", "theta_sweep_figure"]
