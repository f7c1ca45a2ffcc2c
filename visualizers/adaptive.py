"""The "Adaptive & parallel" views: ADED's search per round and its online adaptation over a session, PEARL's two
lanes as Gantt charts (measured, and a two-device model built from measured per-call times), the draft length γ per
round under an adaptive schedule, and the n-gram drafter's γ × n sweep as heatmaps.

Inputs are step records (``StepRecord`` / ``TreeStepRecord``) and plain dicts of run statistics; nothing here
touches a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.specdec.records import StepRecord, TreeStepRecord
from visualizers.format import MISSING, empty_figure, esc, num
from visualizers.tree_graph import tree_figure

HEIGHT, EMPTY_HEIGHT, GANTT_ROW_HEIGHT = 380, 240, 190
ROLLING = 5  # rounds in the rolling mean of accepted drafts
DECISION_COLORS = {"accepted": "#1e8e3e", "rejected": "#d93025", "unverified": "#c7cbd1"}
RUN_COLORS = ("#1a73e8", "#e8710a", "#8e24aa", "#1e8e3e")  # one per compared run, in order
LANE_PARTS = {  # Gantt bar kind → (legend name, colour)
    "pre": ("pre-verify round (nothing pending)", "#e8710a"),
    "post": ("post-verify round (pending drafts verified)", "#1a73e8"),
    "prefill": ("prompt prefill", "#9aa0a6"),
    "checks": ("checks + commit", "#c7cbd1"),
}
LANES = ("draft", "target")


# ------------------------------------------------------------------------------------------------ ADED: one round
def aded_round_figure(record: StepRecord | TreeStepRecord | None) -> go.Figure:
    """One ADED round with its search statistics: a tree round is the draft tree (``tree_graph.tree_figure``) with each
    node's MCTS visits as a subscript and a halo whose size grows with them, visits / mean value / prior on hover; a
    chain round is a bar per drafted token (visits, coloured by the target's decision) with the mean value W/N and
    the prior on a second axis. Tokens past the search (its best-successor extension) have no statistics."""
    if record is None:
        return empty_figure("Run ADED to see a round's search", EMPTY_HEIGHT)
    if isinstance(record, TreeStepRecord):
        return _aded_tree_figure(record)
    return _aded_chain_figure(record)


def _node_stats(record) -> list[dict]:
    return list((record.draft_info or {}).get("nodes") or [])


def _stats_hover(stats: dict | None) -> str:
    if not stats or stats.get("extension"):
        return "best successor past the search (no visits)"
    return f"MCTS: N = {stats['visits']} visits · W/N = {num(stats['value'])} · prior = {num(stats['prior'])}"


def _search_line(info: dict) -> str:
    return (f"ADED search: {info.get('iterations', MISSING)} simulations in {num(info.get('search_ms'), 2)} ms · "
            f"{info.get('search_nodes', MISSING)} search nodes · {info.get('boosted_keys', MISSING)} bigram rows "
            f"boosted so far")


def _aded_tree_figure(record: TreeStepRecord) -> go.Figure:
    fig = tree_figure(record)
    stats = _node_stats(record)
    where: dict[int, tuple[float, float]] = {}  # node index → its (x, y) in the tree figure
    for trace in fig.data:
        if trace.mode == "markers" and trace.customdata is not None:
            for x, y, key in zip(trace.x, trace.y, trace.customdata):
                if key is not None and key >= 0:
                    where[int(key)] = (x, y)
            trace.hovertext = [f"{text}<br>{_stats_hover(stats[k] if k < len(stats) else None)}" if k >= 0 else text
                               for text, k in zip(trace.hovertext, trace.customdata)]
    at = {xy: k for k, xy in where.items()}
    boxes = []
    for box in fig.layout.annotations:
        k = at.get((box.x, box.y))
        if k is not None and k < len(stats) and not stats[k].get("extension"):
            box.text = f"{box.text} <sub>{stats[k]['visits']}</sub>"
        boxes.append(box)
    fig.layout.annotations = boxes
    searched = [(k, s) for k, s in enumerate(stats) if k in where and not s.get("extension")]
    top = max((s["visits"] for _, s in searched), default=0)
    if searched and top > 0:
        halo = go.Scatter(
            x=[where[k][0] for k, _ in searched], y=[where[k][1] for k, _ in searched], mode="markers",
            name="visits", meta="visits", hoverinfo="skip", showlegend=False,
            marker={"size": [12 + 28 * math.sqrt(s["visits"] / top) for _, s in searched], "color": "#f9ab00",
                    "opacity": 0.3, "line": {"width": 0}})
        fig.add_trace(halo)
        fig.data = (fig.data[-1], *fig.data[:-1])  # under the edges and the hover markers
    info = record.draft_info or {}
    line = f"{_search_line(info)} · root visits {info.get('root_visits', MISSING)} · subscript = visits"
    fig.update_layout(title={"text": f"{fig.layout.title.text}<br><span style='font-size:12px'>{esc(line)}</span>"},
                      margin={"t": 110})
    return fig


def _aded_chain_figure(record: StepRecord) -> go.Figure:
    drafted = record.drafted
    if not drafted:
        return empty_figure(f"Round {record.step}: nothing drafted (the store had no successor for the last bigram)",
                            EMPTY_HEIGHT)
    stats = _node_stats(record)
    stats += [{"visits": 0, "value": None, "prior": None, "extension": True}] * (len(drafted) - len(stats))
    xs = list(range(1, len(drafted) + 1))
    ticks = [f"{i}<br>{esc(repr(d.text))}{'*' if s.get('extension') else ''}"
             for i, d, s in zip(xs, drafted, stats)]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for decision, color in DECISION_COLORS.items():
        chosen = [(x, d, s) for x, d, s in zip(xs, drafted, stats) if d.decision == decision]
        if not chosen:
            continue
        fig.add_trace(go.Bar(
            x=[x for x, _, _ in chosen], y=[s["visits"] for _, _, s in chosen], name=f"visits ({decision})",
            meta="visits", marker_color=color, hovertext=[f"{esc(repr(d.text))} · {decision}<br>{_stats_hover(s)}"
                                                          for _, d, s in chosen], hoverinfo="text"),
            secondary_y=False)
    for key, name, color, mode in (("value", "mean value W/N", "#3c4a5c", "lines+markers"),
                                   ("prior", "prior (store score)", "#f9ab00", "markers")):
        fig.add_trace(go.Scatter(
            x=xs, y=[s.get(key) for s in stats], name=name, meta=key, mode=mode, line={"color": color},
            marker={"size": 9, "color": color}, hovertemplate=f"token %{{x}}<br>{name}: %{{y:.3f}}<extra></extra>"),
            secondary_y=True)
    fig.update_xaxes(tickvals=xs, ticktext=ticks, title_text="drafted token (* = past the search)")
    fig.update_yaxes(title_text="visits N", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="W/N · prior", rangemode="tozero", secondary_y=True)
    head = f"round {record.step} · {len(drafted)} drafted · {record.accepted} accepted"
    fig.update_layout(height=HEIGHT, template="plotly_white", barmode="overlay",
                      title={"text": f"{head}<br><span style='font-size:12px'>"
                                     f"{esc(_search_line(record.draft_info or {}))}</span>",
                             "x": 0, "xanchor": "left", "font": {"size": 14}},
                      margin={"l": 50, "r": 50, "t": 80, "b": 60}, legend={"orientation": "h", "y": -0.3})
    return fig


# ------------------------------------------------------------------------------------------------ ADED: the session
def rolling_mean(values: list[float], window: int = ROLLING) -> list[float]:
    """The mean of each value and the ``window - 1`` before it (fewer at the start)."""
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1): i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def boosted_rows(records: list) -> list[int | None]:
    """``boosted_keys`` per round, carried over rounds that did not search (a round with no room left to draft)."""
    out, last = [], None
    for r in records:
        last = (r.draft_info or {}).get("boosted_keys", last)
        out.append(last)
    return out


def adaptation_figure(runs: dict[str, list]) -> go.Figure:
    """Accepted drafts per round (points) and their rolling mean (line) against the round, one colour per run
    (label → records), with ``boosted_keys`` — the bigram rows the online update has changed so far — dashed on the
    second axis: how the tri-gram statistics move as the session goes on, and what that does to acceptance."""
    runs = {label: [r for r in records if r is not None] for label, records in (runs or {}).items()}
    runs = {label: records for label, records in runs.items() if records}
    if not runs:
        return empty_figure("Run ADED to compare adaptation on and off", EMPTY_HEIGHT)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for k, (label, records) in enumerate(runs.items()):
        color = RUN_COLORS[k % len(RUN_COLORS)]
        steps = [r.step for r in records]
        accepted = [r.accepted for r in records]
        fig.add_trace(go.Scatter(x=steps, y=accepted, mode="markers", name=f"{label}: accepted", meta="accepted",
                                 legendgroup=label, marker={"color": color, "opacity": 0.35, "size": 7},
                                 hovertemplate=f"{esc(label)}<br>round %{{x}}: %{{y}} accepted<extra></extra>"),
                      secondary_y=False)
        fig.add_trace(go.Scatter(x=steps, y=rolling_mean(accepted), mode="lines", meta="rolling",
                                 name=f"{label}: rolling mean ({ROLLING} rounds)", legendgroup=label,
                                 line={"color": color, "width": 2.5},
                                 hovertemplate=f"{esc(label)}<br>round %{{x}}: mean %{{y:.2f}}<extra></extra>"),
                      secondary_y=False)
        fig.add_trace(go.Scatter(x=steps, y=boosted_rows(records),
                                 mode="lines", meta="boosted_keys", name=f"{label}: bigram rows boosted",
                                 legendgroup=label, line={"color": color, "width": 1.5, "dash": "dash"},
                                 hovertemplate=f"{esc(label)}<br>round %{{x}}: %{{y}} rows boosted<extra></extra>"),
                      secondary_y=True)
    fig.update_xaxes(title_text="round")
    fig.update_yaxes(title_text="accepted drafts", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="bigram rows boosted (dashed)", rangemode="tozero", secondary_y=True)
    fig.update_layout(height=HEIGHT, template="plotly_white",
                      title={"text": "accepted drafts per round, and the store rows the online update changed",
                             "x": 0, "xanchor": "left", "font": {"size": 14}},
                      margin={"l": 50, "r": 60, "t": 50, "b": 60}, legend={"orientation": "h", "y": -0.25})
    return fig


def aded_summary(runs: dict[str, list], stats: dict[str, dict]) -> str:
    """One line per run (Markdown): rounds, τ, tokens/s, the mean search and boost time per round, and how much of
    the store the online update touched. ``stats``: label → ``Stats.summary()``."""
    lines = []
    for label, records in (runs or {}).items():
        infos = [r.draft_info or {} for r in records if r is not None]
        search = [i["search_ms"] for i in infos if i.get("search_ms") is not None]
        boost = [i["boost_ms"] for i in infos if i.get("boost_ms") is not None]
        last = next((i for i in reversed(infos) if "boosted_keys" in i), {})
        s = (stats or {}).get(label) or {}
        lines.append(f"**{esc(label)}**: {len(infos)} rounds, τ {num(s.get('tau'), 2)}, "
                     f"{num(s.get('tokens_per_second'), 1)} tokens/s, mean search "
                     f"{num(sum(search) / len(search) if search else None, 2)} ms per round (+ "
                     f"{num(sum(boost) / len(boost) if boost else None, 3)} ms boosting), "
                     f"{last.get('boosted_keys', 0)} bigram rows boosted ({last.get('added', 0)} new trigrams, "
                     f"{last.get('boosts', 0)} updates; store: {last.get('store_keys', 0):,} rows).")
    return "  \n".join(lines)


# ------------------------------------------------------------------------------------------------ PEARL
@dataclass
class Segment:
    """One Gantt bar: ``lane`` (draft / target) busy from ``start`` to ``end`` ms (rounds laid back to back)."""

    lane: str
    kind: str  # pre | post (the round's mode) | prefill | checks
    start: float
    end: float
    round: int
    note: str = ""


def _lanes(record) -> tuple[dict, tuple[float, float], tuple[float, float], float]:
    info = record.draft_info or {}
    if "draft_lane" not in info or "target_lane" not in info:
        raise ValueError(f"round {record.step} is not a PEARL round (no draft_lane / target_lane)")
    draft, target = (tuple(map(float, info[k])) for k in ("draft_lane", "target_lane"))
    lanes_end = max(draft[1], target[1])
    return info, draft, target, max(float(info.get("verify_end", lanes_end)), lanes_end)


def _note(record, info: dict) -> str:
    return (f"round {record.step} · {info.get('mode', '?')}-verify · {info.get('pending', 0)} pending verified, "
            f"{info.get('ahead', 0)} drafted ahead · {record.accepted} accepted")


def measured_segments(records: list) -> tuple[list[Segment], float]:
    """The lanes as measured, each round starting where the previous one ended (its ``total_ms``): the prefill on
    the target row, each lane's busy span coloured by the round's mode, the checks after both lanes. Returns the
    bars and the total (ms)."""
    segments, offset = [], 0.0
    for r in records:
        info, draft, target, verify_end = _lanes(r)
        mode, note = info.get("mode", "pre"), _note(r, info)
        if r.prefill_ms:
            segments.append(Segment("target", "prefill", offset, offset + r.prefill_ms, r.step, "prompt prefill"))
        segments.append(Segment("draft", mode, offset + draft[0], offset + draft[1], r.step, note))
        segments.append(Segment("target", mode, offset + target[0], offset + target[1], r.step, note))
        segments.append(Segment("target", "checks", offset + max(draft[1], target[1]), offset + verify_end, r.step,
                                f"round {r.step}: checks + commit"))
        offset += max(float(r.total_ms), verify_end)
    return segments, offset


def modelled_segments(records: list) -> tuple[list[Segment], float]:
    """A model, not a measurement: the measured per-call times of a serial run placed as two devices would run them.
    Each round takes max(draft duration, target duration) + (verify_end − max(lane ends)): both lanes start together
    and the checks follow the slower one. The prefill is the measured one; nothing else between rounds counts."""
    segments, offset = [], 0.0
    for r in records:
        info, draft, target, verify_end = _lanes(r)
        mode, note = info.get("mode", "pre"), _note(r, info)
        if r.prefill_ms:
            segments.append(Segment("target", "prefill", offset, offset + r.prefill_ms, r.step, "prompt prefill"))
            offset += r.prefill_ms
        d, t = draft[1] - draft[0], target[1] - target[0]
        span, checks = max(d, t), verify_end - max(draft[1], target[1])
        segments.append(Segment("draft", mode, offset, offset + d, r.step, note))
        segments.append(Segment("target", mode, offset, offset + t, r.step, note))
        segments.append(Segment("target", "checks", offset + span, offset + span + checks, r.step,
                                f"round {r.step}: checks + commit"))
        offset += span + checks
    return segments, offset


def pearl_gantt_figure(parallel: list | None, serial: list | None) -> go.Figure:
    """Three Gantt charts one above the other on one time axis (rows "draft" and "target", bars coloured by the
    round's mode, idle gaps left blank): the parallel run as measured, the serial run as measured, and a model of two
    devices built from the serial run's measured per-call times. Totals in the titles."""
    parallel = [r for r in parallel or [] if r is not None]
    serial = [r for r in serial or [] if r is not None]
    if not parallel and not serial:
        return empty_figure("Run PEARL to see the draft and target lanes, parallel and serial", EMPTY_HEIGHT)
    charts = []
    if parallel:
        segs, total = measured_segments(parallel)
        charts.append((segs, f"Measured, parallel (two threads): {total:.0f} ms over {len(parallel)} rounds"))
    if serial:
        segs, total = measured_segments(serial)
        charts.append((segs, f"Measured, serial (one thread): {total:.0f} ms over {len(serial)} rounds"))
        segs, total = modelled_segments(serial)
        charts.append((segs, f"Model (not measured): two devices — {total:.0f} ms, computed from the serial run's "
                             "measured per-call times"))
    fig = make_subplots(rows=len(charts), cols=1, shared_xaxes=True, vertical_spacing=0.14,
                        subplot_titles=[title for _, title in charts])
    shown = set()
    for row, (segs, _) in enumerate(charts, start=1):
        for kind, (name, color) in LANE_PARTS.items():
            chosen = [s for s in segs if s.kind == kind and s.end > s.start]
            if not chosen:
                continue
            fig.add_trace(go.Bar(
                y=[s.lane for s in chosen], x=[s.end - s.start for s in chosen], base=[s.start for s in chosen],
                orientation="h", name=name, meta=kind, legendgroup=kind, showlegend=kind not in shown,
                marker={"color": color, "line": {"color": "white", "width": 0.5}},
                customdata=[[esc(s.note), s.start, s.end] for s in chosen],
                hovertemplate=("%{customdata[0]}<br>%{y}: %{customdata[1]:.1f}–%{customdata[2]:.1f} ms "
                               "(%{x:.1f} ms)<extra></extra>")), row=row, col=1)
            shown.add(kind)
        fig.update_yaxes(categoryorder="array", categoryarray=list(LANES[::-1]), row=row, col=1)
    fig.update_xaxes(title_text="ms (rounds back to back)", rangemode="tozero", row=len(charts), col=1)
    fig.update_layout(height=GANTT_ROW_HEIGHT * len(charts) + 120, template="plotly_white", barmode="overlay",
                      bargap=0.25, margin={"l": 60, "r": 20, "t": 40, "b": 90},
                      legend={"orientation": "h", "x": 0, "y": -0.12, "yanchor": "top"})
    return fig


# ------------------------------------------------------------------------------------------------ adaptive γ
def round_gammas(records: list) -> tuple[list[int], bool]:
    """Each round's γ: the adaptive one the drafter recorded (``draft_info["gamma"]``), else the configured γ;
    and whether any round recorded one."""
    adaptive = any("gamma" in (r.draft_info or {}) for r in records)
    return [int((r.draft_info or {}).get("gamma", (r.settings or {}).get("gamma", 0))) for r in records], adaptive


def gamma_figure(records: list, drafter: str = "") -> go.Figure:
    """γ per round (line) with the drafted and accepted tokens per round (bars): a heuristic schedule grows γ by 2
    after a fully accepted draft and shrinks it by 1 otherwise; a confidence stop drafts fewer than γ."""
    records = [r for r in records or [] if r is not None]
    if not records:
        return empty_figure("Run a drafter to see γ per round", EMPTY_HEIGHT)
    steps = [r.step for r in records]
    gammas, adaptive = round_gammas(records)
    drafted = [len(r.drafted) for r in records]
    accepted = [r.accepted for r in records]
    fig = go.Figure()
    for name, ys, color in (("drafted", drafted, "#9aa9bc"), ("accepted", accepted, "#1e8e3e")):
        fig.add_trace(go.Bar(x=steps, y=ys, name=name, meta=name, marker_color=color,
                             hovertemplate=f"round %{{x}}: %{{y}} {name}<extra></extra>"))
    fig.add_trace(go.Scatter(x=steps, y=gammas, mode="lines+markers", meta="gamma",
                             name="γ this round" if adaptive else "γ (constant: no adaptive length)",
                             line={"color": "#e8710a", "width": 2.5, "shape": "hv"}, marker={"size": 6},
                             hovertemplate="round %{x}: γ = %{y}<extra></extra>"))
    n = len(records)
    head = (f"{esc(drafter) + ': ' if drafter else ''}mean γ {sum(gammas) / n:.2f}, drafted {sum(drafted) / n:.2f} "
            f"and accepted {sum(accepted) / n:.2f} per round over {n} rounds")
    fig.update_layout(height=HEIGHT, template="plotly_white", barmode="group", xaxis_title="round",
                      yaxis_title="tokens", title={"text": head, "x": 0, "xanchor": "left", "font": {"size": 14}},
                      margin={"l": 50, "r": 20, "t": 50, "b": 60}, legend={"orientation": "h", "y": -0.25})
    return fig


# ------------------------------------------------------------------------------------------------ n-gram sweep
def sweep_heatmaps(rows: list[dict]) -> go.Figure:
    """Two heatmaps over γ (columns) × n-gram size n (rows), each cell annotated with its value: tokens/s on this
    machine (left) and τ, tokens per target call (right). ``rows``: dicts with gamma, ngram_size,
    tokens_per_second and tau."""
    rows = [r for r in rows or [] if r.get("gamma") is not None and r.get("ngram_size") is not None]
    if not rows:
        return empty_figure("Run the sweep to see tokens/s and τ for every γ and n", EMPTY_HEIGHT)
    gammas = sorted({int(r["gamma"]) for r in rows})
    sizes = sorted({int(r["ngram_size"]) for r in rows})
    cell = {(int(r["ngram_size"]), int(r["gamma"])): r for r in rows}

    def grid(key):
        return [[(cell.get((n, g)) or {}).get(key) for g in gammas] for n in sizes]

    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                        subplot_titles=["tokens / s (this machine)", "τ: tokens per target call"])
    x, y = [f"γ={g}" for g in gammas], [f"n={n}" for n in sizes]
    for col, (key, digits, scale, bar_x) in enumerate((("tokens_per_second", 1, "Blues", 0.43),
                                                       ("tau", 2, "Greens", 1.0)), start=1):
        fig.add_trace(go.Heatmap(
            z=grid(key), x=x, y=y, name=key, meta=key, colorscale=scale, texttemplate=f"%{{z:.{digits}f}}",
            colorbar={"x": bar_x, "len": 0.9, "thickness": 12},
            hovertemplate=f"%{{x}}, %{{y}}: %{{z:.{digits}f}}<extra></extra>"), row=1, col=col)
    best = max(rows, key=lambda r: r.get("tokens_per_second") or 0.0)
    title = (f"fastest: γ = {best['gamma']}, n = {best['ngram_size']} at {num(best.get('tokens_per_second'), 1)} "
             f"tokens/s (τ {num(best.get('tau'), 2)})")
    fig.update_xaxes(title_text="γ (draft length)")
    fig.update_yaxes(title_text="n (longest n-gram matched)", col=1)
    fig.update_layout(height=HEIGHT, template="plotly_white",
                      title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 14}},
                      margin={"l": 60, "r": 40, "t": 80, "b": 60})
    return fig
