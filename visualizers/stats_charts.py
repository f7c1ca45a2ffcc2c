"""The run's statistics as three small charts: acceptance by draft position, accepted lengths, and the time split.

Input is ``Stats.summary()`` (a flat dict); the definitions are the ones in ``core.specdec.records.Stats``.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from visualizers.format import empty_figure

EMPTY_TEXT = "No statistics yet: press Step or Run"
HEIGHT = 300
ACCEPT_COLOR, HIST_COLOR = "#1e8e3e", "#3c4a5c"
# The time split: draft (the drafter's colour in the inspector), verify (the target's), other, prefill.
TIME_PARTS = (("draft", "draft_s", "#9aa9bc"), ("verify", "verify_s", "#3c4a5c"), ("other", None, "#dadce0"),
              ("prefill", "prefill_s", "#f6b26b"))


def stats_figure(summary: dict) -> go.Figure:
    """Per-position acceptance | histogram of accepted lengths | time split (stacked, ms), side by side."""
    s = summary or {}
    if not s.get("rounds"):
        return _empty_figure(EMPTY_TEXT)
    fig = make_subplots(rows=1, cols=3, column_widths=[0.36, 0.36, 0.28], horizontal_spacing=0.08,
                        subplot_titles=["acceptance by draft position", "accepted drafts per round",
                                        "time split (ms)"])
    _acceptance(fig, s)
    _histogram(fig, s)
    _time_split(fig, s)
    for annotation in fig.layout.annotations[:3]:
        annotation.font.size = 13
    fig.update_xaxes(title_font={"size": 12})
    fig.update_yaxes(title_font={"size": 12})
    fig.update_layout(height=HEIGHT, barmode="stack", template="plotly_white", showlegend=True, font={"size": 12},
                      margin={"l": 50, "r": 20, "t": 50, "b": 80}, bargap=0.25,
                      legend={"orientation": "h", "x": 1, "xanchor": "right", "y": -0.22, "yanchor": "top",
                              "traceorder": "normal"})
    return fig


def _acceptance(fig: go.Figure, s: dict) -> None:
    rates = list(s.get("per_position_acceptance") or [])
    reached = list(s.get("reached") or [])
    accepted = list(s.get("accepted_at") or [])
    positions = list(range(1, len(rates) + 1))
    custom = [[_at(reached, i), _at(accepted, i)] for i in range(len(rates))]
    fig.add_trace(go.Bar(
        x=positions, y=rates, marker_color=ACCEPT_COLOR, showlegend=False, name="acceptance",
        text=[f"{r:.2f}" for r in rates], textposition="outside", cliponaxis=False, customdata=custom,
        hovertemplate=("draft position %{x}<br>P(accept | reached) = %{y:.3f}<br>"
                       "accepted %{customdata[1]} of %{customdata[0]} rounds that reached it<extra></extra>")),
        row=1, col=1)
    fig.update_xaxes(title_text="draft position i", tickmode="linear", dtick=1 if len(rates) <= 16 else None,
                     row=1, col=1)
    fig.update_yaxes(title_text="P(accept at i)", range=[0, 1.15], tickvals=[0, 0.25, 0.5, 0.75, 1], row=1, col=1)


def _histogram(fig: go.Figure, s: dict) -> None:
    hist = {int(k): int(v) for k, v in (s.get("accepted_hist") or {}).items()}
    longest = max(hist, default=0)
    lengths = list(range(longest + 1))
    counts = [hist.get(n, 0) for n in lengths]
    rounds = sum(counts) or 1
    fig.add_trace(go.Bar(
        x=lengths, y=counts, marker_color=HIST_COLOR, showlegend=False, name="rounds",
        text=[str(c) if c else "" for c in counts], textposition="outside", cliponaxis=False,
        customdata=[100 * c / rounds for c in counts],
        hovertemplate="%{x} drafts accepted: %{y} rounds (%{customdata:.0f}%)<extra></extra>"), row=1, col=2)
    fig.update_xaxes(title_text="accepted drafts in the round", tickmode="linear", dtick=1 if longest <= 16 else None,
                     row=1, col=2)
    fig.update_yaxes(title_text="rounds", range=[0, max(counts + [1]) * 1.18], row=1, col=2)


def _time_split(fig: go.Figure, s: dict) -> None:
    seconds = {key: float(s.get(key) or 0.0) for _, key, _ in TIME_PARTS if key}
    other = max(0.0, float(s.get("total_s") or 0.0) - seconds["draft_s"] - seconds["verify_s"])
    whole = sum(seconds.values()) + other or 1.0
    for name, key, color in TIME_PARTS:
        value = seconds[key] if key else other
        ms = 1e3 * value
        fig.add_trace(go.Bar(
            x=[ms], y=["run"], orientation="h", name=name, marker_color=color, legendgroup=name,
            text=[f"{100 * value / whole:.0f}%" if value / whole >= 0.12 else ""], textposition="inside",
            insidetextanchor="middle", customdata=[[100 * value / whole]],
            hovertemplate=f"{name}: %{{x:.1f}} ms (%{{customdata[0]:.0f}}%)<extra></extra>"), row=1, col=3)
    fig.update_xaxes(title_text="milliseconds", row=1, col=3)
    fig.update_yaxes(showticklabels=False, row=1, col=3)


def _at(values: list, i: int):
    return values[i] if i < len(values) else "—"


def _empty_figure(text: str) -> go.Figure:
    return empty_figure(text, HEIGHT)


__all__ = ["stats_figure"]
