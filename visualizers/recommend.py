"""The recommender's output: ranked settings with their intervals, a card of the reasons, and the held-out check.

Inputs are ``core.specdec.recommend.Recommendation``s (or their ``to_dict()``) and ``holdout_accuracy``'s dict.
"""

from __future__ import annotations

import plotly.graph_objects as go

from visualizers.format import empty_figure, esc

HEIGHT = 320
BEST_COLOR, OTHER_COLOR, PLAIN_COLOR = "#1e8e3e", "#9aa9bc", "#80868b"
RIGHT_COLOR, WRONG_COLOR = "#1e8e3e", "#d93025"


def _as_dict(r) -> dict:
    return r.to_dict() if hasattr(r, "to_dict") else dict(r)


def _label(r: dict) -> str:
    if r["config"] == "none":
        return "none (plain decoding)"
    s = r.get("settings") or {}
    return f"{r['config']} · γ {s.get('gamma', '?')}"


def recommendation_figure(recommendations: list) -> go.Figure:
    """Predicted speedup of each ranked setting (best on top) with its 10–90 % interval; the dashed line is plain
    decoding (1.0×); a diamond marks a measured speedup at exactly that setting."""
    recs = [_as_dict(r) for r in recommendations or []]
    if not recs:
        return empty_figure("No recommendation yet: load a matrix or make a run", HEIGHT)
    recs = recs[::-1]  # best at the top of a horizontal bar chart
    labels = [_label(r) for r in recs]
    colors = [PLAIN_COLOR if r["config"] == "none" else BEST_COLOR if i == len(recs) - 1 else OTHER_COLOR
              for i, r in enumerate(recs)]
    speed = [r["speedup"] for r in recs]
    hover = [f"{esc(_label(r))}<br>predicted {r['speedup']:.2f}× ({r['interval'][0]:.2f}–{r['interval'][1]:.2f})"
             f"<br>τ {r['tau']:.2f}" for r in recs]
    fig = go.Figure(go.Bar(
        x=speed, y=labels, orientation="h", marker_color=colors, name="predicted",
        error_x={"type": "data", "symmetric": False, "array": [r["interval"][1] - r["speedup"] for r in recs],
                 "arrayminus": [r["speedup"] - r["interval"][0] for r in recs], "color": "#3c4a5c", "thickness": 1.5},
        text=[f"{s:.2f}×" for s in speed], textposition="inside", insidetextanchor="start",
        hovertext=hover, hoverinfo="text"))
    measured = [(r["measured_speedup"], _label(r)) for r in recs if r.get("measured_speedup")]
    if measured:
        fig.add_trace(go.Scatter(x=[m for m, _ in measured], y=[lab for _, lab in measured], mode="markers",
                                 marker={"symbol": "diamond", "size": 10, "color": "#f6b26b",
                                         "line": {"color": "#3c4a5c", "width": 1}},
                                 name="measured at this setting", hovertemplate="measured %{x:.2f}×<extra></extra>"))
    fig.add_vline(x=1.0, line_dash="dash", line_color=PLAIN_COLOR)
    fig.update_layout(height=max(HEIGHT, 70 * len(recs) + 110), template="plotly_white", font={"size": 12},
                      xaxis={"title": "predicted speedup over plain decoding (×)", "rangemode": "tozero"},
                      margin={"l": 20, "r": 20, "t": 30, "b": 60}, showlegend=bool(measured),
                      legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"})
    return fig


def recommendation_card(recommendations: list) -> str:
    """An HTML card: the pick with its settings and every reason, then one line per runner-up."""
    recs = [_as_dict(r) for r in recommendations or []]
    if not recs:
        return "<div class='ds-recommend'><p>No recommendation yet: load a matrix or make a run.</p></div>"
    best = recs[0]
    settings = best.get("settings") or {}
    shown = ", ".join(f"{esc(k)} {esc(v)}" for k, v in settings.items() if v not in ("", {}, None))
    where = esc(best.get("category") or "all categories")
    head = (f"<h4 style='margin:0 0 4px'>Recommended on {where}: {esc(_label(best))} — "
            f"{best['speedup']:.2f}× ({best['interval'][0]:.2f}–{best['interval'][1]:.2f})</h4>"
            f"<div style='color:#5f6368;margin-bottom:6px'>{shown}</div>")
    reasons = "".join(f"<li>{esc(r)}</li>" for r in best.get("reasons") or [])
    others = "".join(f"<li><b>{esc(_label(r))}</b>: {r['speedup']:.2f}× ({r['interval'][0]:.2f}–"
                     f"{r['interval'][1]:.2f}), τ {r['tau']:.2f}</li>" for r in recs[1:])
    runners = f"<div style='margin-top:6px'>Runners-up</div><ul style='margin:2px 0'>{others}</ul>" if others else ""
    return (f"<div class='ds-recommend' style='border:1px solid #dadce0;border-radius:8px;padding:10px 14px'>"
            f"{head}<ul style='margin:2px 0'>{reasons}</ul>{runners}</div>")


def holdout_figure(result: dict) -> go.Figure:
    """Predicted vs measured speedup on held-out runs, one point per config × category; the band is ±15 % of the
    measured value (inside it a prediction counts as right)."""
    rows = (result or {}).get("rows") or []
    if not rows:
        return empty_figure("No held-out comparison yet", HEIGHT)
    measured = [r["measured"] for r in rows]
    top = max(max(measured), max(r["predicted"] for r in rows)) * 1.1
    within = result.get("right_within", 0.15)
    grid = [0.0, top]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=grid + grid[::-1], y=[g * (1 + within) for g in grid] +
                             [g * (1 - within) for g in grid[::-1]], fill="toself", fillcolor="rgba(30,142,62,0.12)",
                             line={"width": 0}, hoverinfo="skip", name=f"±{within:.0%} of measured"))
    fig.add_trace(go.Scatter(x=grid, y=grid, mode="lines", line={"color": "#80868b", "dash": "dot"},
                             hoverinfo="skip", name="predicted = measured"))
    for ok, color, name in ((True, RIGHT_COLOR, "right"), (False, WRONG_COLOR, "off by more")):
        pts = [r for r in rows if bool(r["within"]) == ok]
        if pts:
            fig.add_trace(go.Scatter(
                x=[r["measured"] for r in pts], y=[r["predicted"] for r in pts], mode="markers", name=name,
                marker={"color": color, "size": 9},
                error_y={"type": "data", "symmetric": False, "color": color, "thickness": 1,
                         "array": [r["interval"][1] - r["predicted"] for r in pts],
                         "arrayminus": [r["predicted"] - r["interval"][0] for r in pts]},
                hovertext=[f"{esc(r['config'])} on {esc(r['category'])}<br>predicted {r['predicted']:.2f}×, "
                           f"measured {r['measured']:.2f}× ({r['error_pct']:+.1f} %)" for r in pts],
                hoverinfo="text"))
    title = (f"{result.get('within', 0)}/{result.get('n', len(rows))} within ±{within:.0%} · mean abs error "
             f"{result.get('mape_pct', 0):.1f} % · interval covers {result.get('interval_coverage', 0):.0%}")
    fig.update_layout(height=HEIGHT + 80, template="plotly_white", font={"size": 12},
                      title={"text": title, "font": {"size": 13}},
                      xaxis={"title": "measured speedup (held-out runs)", "range": [0, top]},
                      yaxis={"title": "predicted speedup", "range": [0, top]},
                      margin={"l": 60, "r": 20, "t": 50, "b": 60},
                      legend={"orientation": "h", "x": 1, "xanchor": "right", "y": -0.2, "yanchor": "top"})
    return fig
