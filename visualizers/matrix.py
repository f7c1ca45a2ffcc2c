"""The benchmark matrix (``core.specdec.matrix`` dicts): a config × category heatmap of the speed-up over HF greedy,
acceptance by draft position in both conventions, where drafts get rejected (``core.specdec.rejection`` summaries),
the most-rejected tokens as an HTML table, and the skipped configurations. Pure functions: dicts in, figures out."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from visualizers.format import MISSING, empty_figure, esc, num, shown

HEATMAP_ROW_PX, HEIGHT, EMPTY_HEIGHT = 26, 380, 240
ACCEPT_COLOR, REJECT_COLOR = "#1e8e3e", "#d93025"
LINE_COLORS = ("#1a73e8", "#e8710a", "#8e24aa", "#1e8e3e", "#d93025", "#00897b", "#5f6368", "#f9ab00")
EMPTY_TEXT = "No matrix for this target yet: run one (Run matrix), or generate the shipped one with bench --matrix."
OVERALL, MEAN = "overall", "mean of categories"


def _rows(matrix: dict | None, configs: Sequence[str] | None = None) -> list[dict]:
    rows = list((matrix or {}).get("rows") or [])
    if configs:
        wanted = set(configs)
        rows = [r for r in rows if r["config"] in wanted]
    return rows


def _layout(fig: go.Figure, title: str, height: int = HEIGHT) -> None:
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=height, template="plotly_white",
                      font={"size": 12}, margin={"l": 60, "r": 20, "t": 60, "b": 60},
                      legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.18, "yanchor": "top"})


# ------------------------------------------------------------------------------------------------ heatmap
def heatmap_figure(matrix: dict | None) -> go.Figure:
    """Speed-up over HF greedy (same run, same category), one row per configuration, one column per category plus
    the overall and the mean of categories; α, τ and tokens/s in the hover; ✗ marks a cell whose output was not
    token-identical to HF greedy."""
    rows = _rows(matrix)
    if not rows:
        return empty_figure(EMPTY_TEXT, EMPTY_HEIGHT, wrap=70)
    columns = [*matrix["categories"], OVERALL, MEAN]
    z, text, hover = [], [], []
    for row in rows:
        z_row, text_row, hover_row = [], [], []
        for col in columns:
            b = _cell_block(row, col)
            value = b.get("speedup") if b else None
            z_row.append(value)
            lossless = b.get("identical", True) if b else True
            text_row.append(MISSING if value is None else f"{value:.2f}×" + ("" if lossless else " ✗"))
            hover_row.append(_hover(row, col, b))
        z.append(z_row)
        text.append(text_row)
        hover.append(hover_row)
    values = [v for r in z for v in r if v is not None]
    span = max([abs(v - 1) for v in values] + [0.25])
    fig = go.Figure(go.Heatmap(
        z=z, x=columns, y=[r["config"] for r in rows], text=text, texttemplate="%{text}", customdata=hover,
        hovertemplate="%{customdata}<extra></extra>", colorscale="RdBu", zmid=1.0, zmin=1 - span, zmax=1 + span,
        colorbar={"title": {"text": "× HF greedy"}}))
    fig.update_yaxes(autorange="reversed", tickfont={"size": 11})
    fig.update_xaxes(side="top")
    title = (f"Speed-up over HF greedy on {esc(matrix['target'])} ({len(matrix['prompts'])} prompts, "
             f"{matrix['max_new_tokens']} new tokens, greedy; ✗ = output differs from HF greedy)")
    _layout(fig, title, height=max(HEIGHT, 120 + HEATMAP_ROW_PX * len(rows)))
    fig.update_layout(margin={"l": 200, "r": 20, "t": 100, "b": 20})
    return fig


def _cell_block(row: dict, column: str) -> dict | None:
    if column == OVERALL:
        return row["overall"]
    if column == MEAN:
        mean = row.get("mean_over_categories") or {}
        return {**mean, "identical": all(b.get("identical", True) for b in row["by_category"].values())}
    return row["by_category"].get(column)


def _hover(row: dict, column: str, b: dict | None) -> str:
    head = f"<b>{esc(row['config'])}</b> · {esc(column)}"
    if not b:
        return head + "<br>no prompts"
    lines = [head, f"speed-up {num(b.get('speedup'), 2)}×", f"tokens/s {num(b.get('tokens_per_second'), 1)}",
             f"τ {num(b.get('tau'))} · α {num(b.get('alpha'))}"]
    if b.get("hf_tokens_per_second") is not None:
        lines.append(f"HF greedy {num(b['hf_tokens_per_second'], 1)} tokens/s (same run)")
    if b.get("mbsu") is not None:
        lines.append(f"MBSU {num(b['mbsu'])}")
    if not b.get("identical", True):
        lines.append("<b>output NOT identical to HF greedy</b>")
    if row.get("measured"):
        lines.append(f"measured {esc(row['measured'])}" + (" (cached)" if row.get("cached") else ""))
    return "<br>".join(lines)


# ------------------------------------------------------------------------------------------------ per position
def position_figure(matrix: dict | None, configs: Sequence[str] | None = None) -> go.Figure:
    """Acceptance at each draft position (overall), per chosen configuration: conditional (solid: accepted at i /
    rounds that reached i) and unconditional (dashed, vLLM's: accepted at i / rounds that drafted)."""
    rows = [r for r in _rows(matrix, configs) if r["overall"].get("reached")]
    if not rows:
        return empty_figure("No drafted positions to show for these configurations.", EMPTY_HEIGHT)
    fig = go.Figure()
    for k, row in enumerate(rows):
        b, color = row["overall"], LINE_COLORS[k % len(LINE_COLORS)]
        positions = list(range(1, len(b["reached"]) + 1))
        for key, dash, label in (("acceptance_conditional", "solid", "conditional"),
                                 ("acceptance_unconditional", "dash", "unconditional")):
            custom = [[reached, acc, b["draft_rounds"]] for reached, acc in zip(b["reached"], b["accepted_at"])]
            fig.add_trace(go.Scatter(
                x=positions, y=b[key], mode="lines+markers", name=f"{row['config']} · {label}",
                line={"color": color, "dash": dash}, customdata=custom, legendgroup=row["config"],
                hovertemplate=(f"{esc(row['config'])} · {label}<br>position %{{x}}: %{{y:.3f}}<br>accepted "
                               "%{customdata[1]} of %{customdata[0]} reached (%{customdata[2]} rounds drafted)"
                               "<extra></extra>")))
    fig.update_xaxes(title_text="draft position i", tickmode="linear", dtick=1)
    fig.update_yaxes(title_text="acceptance", range=[0, 1.05])
    _layout(fig, "Acceptance by draft position — solid: P(accept i | i−1 accepted); dashed: accepted at i per "
                 "drafting round (vLLM)")
    return fig


# ------------------------------------------------------------------------------------------------ rejections
REJECTION_PANELS = (("by_position", "draft position"), ("by_entropy", "target entropy (nats)"),
                    ("by_confidence", "drafter confidence q"), ("by_token_class", "token class"))


def rejection_figure(rejections: dict | None, config: str = "") -> go.Figure:
    """Accepted and rejected drafts (stacked counts, the acceptance rate on each bar) by draft position, by the
    target's entropy there, by the drafter's q of its token and by the drafted token's class."""
    if not rejections or not (rejections.get("totals") or {}).get("verified"):
        return empty_figure("No verified drafts for this configuration.", EMPTY_HEIGHT)
    fig = make_subplots(rows=2, cols=2, subplot_titles=[title for _, title in REJECTION_PANELS],
                        vertical_spacing=0.22, horizontal_spacing=0.1)
    for k, (key, _) in enumerate(REJECTION_PANELS):
        bins = rejections.get(key) or []
        labels = [str(b["position"] + 1) if key == "by_position" else b["bin"] for b in bins]
        rates = [b["acceptance"] for b in bins]
        where = {"row": k // 2 + 1, "col": k % 2 + 1}
        for name, field, color in (("accepted", "accepted", ACCEPT_COLOR), ("rejected", "rejected", REJECT_COLOR)):
            fig.add_trace(go.Bar(
                x=labels, y=[b[field] for b in bins], name=name, marker_color=color, showlegend=k == 0,
                legendgroup=name, customdata=[[b["verified"], r] for b, r in zip(bins, rates)],
                text=[f"{r:.0%}" if name == "accepted" and r is not None else "" for r in rates],
                textposition="inside",
                hovertemplate=(f"%{{x}}: {name} %{{y}} of %{{customdata[0]}} compared<br>acceptance "
                               "%{customdata[1]:.3f}<extra></extra>")), **where)
        fig.update_xaxes(type="category", **where)
        fig.update_yaxes(title_text="drafts", **where)
    totals = rejections["totals"]
    title = (f"Where drafts are rejected{' — ' + esc(config) if config else ''}: {totals['rejected']} of "
             f"{totals['verified']} compared drafts (acceptance {num(totals['acceptance'])})")
    _layout(fig, title, height=560)
    fig.update_layout(barmode="stack", margin={"l": 60, "r": 20, "t": 80, "b": 60})
    return fig


def top_rejected_html(rejections: dict | None, limit: int = 20) -> str:
    """The most-rejected drafted tokens: text, class, rejections, times compared, rejection rate, and examples as
    "prompt ID, round R, position I: drafted → target's token" (round and prompt as the app's round inspector names
    them)."""
    rows = list((rejections or {}).get("top_rejected") or [])[:limit]
    if not rows:
        return "<p><i>No rejected drafts.</i></p>"
    head = ("<tr><th>token</th><th>class</th><th>rejected</th><th>compared</th><th>rejection rate</th>"
            "<th>examples</th></tr>")
    body = []
    for r in rows:
        examples = "<br>".join(
            f"prompt {esc(e['prompt_id'])}, round {e['round']}, position {e['position'] + 1}: "
            f"<code>{_visible(e['drafted'])}</code> → <code>{_visible(e['preferred'])}</code>"
            for e in r["examples"])
        body.append(f"<tr><td><code>{_visible(r['text'])}</code></td><td>{esc(r['token_class'])}</td>"
                    f"<td>{r['rejected']}</td><td>{r['verified']}</td><td>{r['rejection_rate']:.0%}</td>"
                    f"<td>{examples}</td></tr>")
    return ("<table class='matrix-rejected'><thead>" + head + "</thead><tbody>" + "".join(body) +
            "</tbody></table><p><small>Examples: drafted → the target's token at that position (top of p).</small>"
            "</p>")


def _visible(text: str | None) -> str:
    """Token text with its whitespace shown (``format.shown``), escaped for HTML."""
    return esc(shown(text))


def skipped_html(matrix: dict | None) -> str:
    skipped = (matrix or {}).get("skipped") or {}
    if not skipped:
        return ""
    items = "".join(f"<li><code>{esc(name)}</code>: {esc(why)}</li>" for name, why in skipped.items())
    return f"<details><summary>{len(skipped)} configurations not run on this target</summary><ul>{items}</ul></details>"
