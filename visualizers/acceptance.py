"""Acceptance per draft position from several measurements side by side: a serving engine's Prometheus counters and
DraftScope's offline run of the same pairing, in both conventions.

Input: ``AcceptanceProfile`` objects or their ``to_dict()`` dicts (``core.specdec.prod_metrics``); the derived values
are recomputed from the counts, so a dict from the browser cannot disagree with them.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.specdec.prod_metrics import ENGINE_NAMES, AcceptanceProfile, as_profile
from visualizers.format import MISSING, empty_figure, esc, num

HEIGHT = 380
EMPTY_TEXT = "Paste or upload a /metrics dump, or pick DraftScope's measurement"
COLORS = ("#1a73e8", "#1e8e3e", "#d93025", "#f29900", "#9334e6", "#12b5cb", "#e52592", "#5f6368")
TITLES = ("conditional: P(accept at i | positions < i accepted)", "unconditional: accepted at i / drafts (vLLM)")


def legend_name(p: AcceptanceProfile) -> str:
    alpha = num(p.alpha, 3) if p.alpha is not None else MISSING
    length = num(p.mean_length, 2) if p.mean_length is not None else MISSING
    return f"{p.label} — α {alpha}, mean acceptance length {length}"


def acceptance_compare_figure(profiles: list) -> go.Figure:
    """Two panels (conditional | unconditional), one line per profile with α and the mean acceptance length in its
    legend entry. A dashed conditional line is derived from the counts with reached(i) = accepted(i − 1); a solid one
    is measured. Profiles with no per-position data (SGLang) appear in the legend and in a note, not as lines."""
    ps = [as_profile(p) for p in profiles or []]
    if not ps:
        return empty_figure(EMPTY_TEXT, HEIGHT)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=TITLES, shared_yaxes=True)
    missing = []
    for k, p in enumerate(ps):
        color = COLORS[k % len(COLORS)]
        if not p.accepted_per_pos:
            missing.append(p)
            name = legend_name(p) + " (no per-position data)"
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, legendgroup=str(k),
                                     marker={"color": color, "symbol": "x"}), row=1, col=1)
            continue
        _lines(fig, p, k, color)
    for annotation in fig.layout.annotations[:2]:
        annotation.font.size = 13
    for col in (1, 2):
        fig.update_xaxes(title_text="draft position i (vLLM's position label + 1)", tickmode="linear", dtick=1,
                         row=1, col=col)
    fig.update_yaxes(title_text="acceptance", range=[0, 1.05], tickvals=[0, 0.25, 0.5, 0.75, 1], row=1, col=1)
    fig.update_yaxes(range=[0, 1.05], row=1, col=2)
    notes = []
    if any(p.accepted_per_pos and p.reached_derived for p in ps):
        notes.append("dashed: derived from counters with reached(i) = accepted(i − 1) (exact for fixed-length "
                     "drafts); solid: measured")
    notes += [f"{esc(p.label)}: per-position acceptance is not available from {ENGINE_NAMES.get(p.source, p.source)}"
              for p in missing]
    fig.update_layout(height=HEIGHT + 20 * len(ps) + 18 * len(notes), template="plotly_white", font={"size": 12},
                      margin={"l": 60, "r": 20, "t": 50 + 18 * len(notes), "b": 60},
                      legend={"orientation": "h", "x": 0, "y": -0.18, "yanchor": "top"},
                      title={"text": "<br>".join(notes), "font": {"size": 12, "color": "#5f6368"}, "x": 0.01,
                             "xanchor": "left", "yref": "container", "y": 1, "yanchor": "top", "pad": {"t": 10}}
                      if notes else None)
    return fig


def _lines(fig: go.Figure, p: AcceptanceProfile, k: int, color: str) -> None:
    positions = list(range(1, len(p.accepted_per_pos) + 1))
    reached = p.reached
    custom = [[a, r] for a, r in zip(p.accepted_per_pos, reached)]
    how = "derived: reached(i) = accepted(i − 1)" if p.reached_derived else "measured"
    fig.add_trace(go.Scatter(
        x=positions, y=p.conditional, mode="lines+markers", name=legend_name(p), legendgroup=str(k),
        line={"color": color, "dash": "dash" if p.reached_derived else "solid"}, customdata=custom,
        hovertemplate=(f"{esc(p.label)}<br>position %{{x}}: %{{y:.3f}}<br>accepted %{{customdata[0]:,}} of "
                       f"%{{customdata[1]:,}} that reached it ({how})<extra></extra>")), row=1, col=1)
    fig.add_trace(go.Scatter(
        x=positions, y=p.unconditional, mode="lines+markers", name=legend_name(p), legendgroup=str(k),
        showlegend=False, line={"color": color}, customdata=custom,
        hovertemplate=(f"{esc(p.label)}<br>position %{{x}}: %{{y:.3f}}<br>accepted %{{customdata[0]:,}} of "
                       f"{p.drafts:,} drafts<extra></extra>")), row=1, col=2)


def metrics_table_html(profiles: list) -> str:
    """One row per profile: counts, α, mean acceptance length (bonus included), τ where measured, and the notes."""
    ps = [as_profile(p) for p in profiles or []]
    if not ps:
        return "<p><i>No profiles yet.</i></p>"
    head = ["profile", "source", "drafts", "draft tokens", "accepted", "α", "mean acceptance length", "τ",
            "positions", "notes"]
    rows = []
    for p in ps:
        positions = (f"{len(p.accepted_per_pos)} ({'measured' if not p.reached_derived else 'counts'})"
                     if p.accepted_per_pos else "not available")
        cells = [p.label, ENGINE_NAMES.get(p.source, p.source), _int(p.drafts), _int(p.draft_tokens),
                 _int(p.accepted_tokens), num(p.alpha), num(p.mean_length), num(p.tau), positions,
                 "; ".join(p.notes) or ""]
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return ('<div class="ds-vis"><table class="ds-stats"><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head)
            + "</tr>" + "".join(rows) + "</table></div>")


def _int(value) -> str:
    return MISSING if value is None else f"{int(value):,}"
