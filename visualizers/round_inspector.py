"""The round inspector: p against q at every position one draft → verify round looked at.

The picture that explains why speculative sampling is lossless. One subplot row per verified drafted position (the
accept test: keep the draft with probability min(1, p/q)), then one row for the target's own token: the resample
from norm(max(0, p − q)) at a rejection, the argmax under the greedy rule, or the bonus token after full acceptance.
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.specdec.records import Candidate, StepRecord
from visualizers.format import empty_figure, esc as _esc

MISSING = "—"
EMPTY_TEXT = "Step or Run to see a round"

# Fixed colours, the token strip's palette: outlines / labels for the decision, bars for the distributions.
DECISION_COLORS = {"accepted": "#1e8e3e", "rejected": "#d93025", "resampled": "#e8710a", "bonus": "#1a73e8"}
P_COLOR, Q_COLOR, RESIDUAL_COLOR = "#3c4a5c", "#b4bfcc", "#f6b26b"
ROW_PX, MIN_HEIGHT, TOP_PX, BOTTOM_PX, GAP_PX = 220, 300, 96, 40, 86
TICK_CHARS = 14


@dataclass
class _Row:
    """One subplot: the candidates at one position and what to mark among them."""

    title: str
    candidates: list[Candidate]
    mark_id: int
    mark_color: str
    mark_label: str
    note: str | None = None
    also_id: int | None = None  # the rejected draft, marked too in the resample row
    residual: bool = False


def round_inspector_figure(record: StepRecord | None, max_candidates: int = 8) -> go.Figure:
    """Grouped bars of p (target), q (drafter) and, at a sampled rejection, the residual, one row per position."""
    rows = _rows(record, max(1, max_candidates)) if record is not None else []
    if not rows:
        return _empty_figure(EMPTY_TEXT)
    n = len(rows)
    height = max(MIN_HEIGHT, ROW_PX * n + TOP_PX)
    plot_px = height - TOP_PX - BOTTOM_PX
    spacing = min(GAP_PX / plot_px, 0.9 / (n - 1)) if n > 1 else 0.0
    fig = make_subplots(rows=n, cols=1, subplot_titles=[_esc(r.title) for r in rows], vertical_spacing=spacing)
    shown: set[str] = set()
    for i, row in enumerate(rows, start=1):
        _add_row(fig, i, row, shown)
    for annotation in fig.layout.annotations[:n]:  # the subplot titles
        annotation.update(font={"size": 13}, x=0, xanchor="left", yshift=10)
    fig.update_layout(
        height=height, barmode="group", bargap=0.25, bargroupgap=0.05, template="plotly_white",
        margin={"l": 60, "r": 40, "t": TOP_PX, "b": BOTTOM_PX}, font={"size": 12},
        title={"text": _esc(_headline(record)), "x": 0, "xanchor": "left", "y": 1 - 14 / height, "yanchor": "top",
               "font": {"size": 15}},
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1 + 44 / plot_px, "yanchor": "bottom"},
        hoverlabel={"font": {"family": "ui-monospace, monospace"}})
    fig.update_yaxes(title_text="probability", title_font={"size": 11}, rangemode="tozero", gridcolor="#eceff1")
    fig.update_xaxes(tickfont={"size": 12, "family": "ui-monospace, Menlo, Consolas, monospace"})
    return fig


# ------------------------------------------------------------------------------------------------ rows
def _rows(record: StepRecord, k: int) -> list[_Row]:
    # greedy rule, or the sampling rule at temperature 0 (one-hot p and q; the bars show the models' softmax)
    greedy = record.verifier == "greedy" or (record.settings or {}).get("temperature") == 0
    rows = []
    rejected_id = None
    for token in record.drafted:
        if token.decision not in ("accepted", "rejected"):
            continue
        ok = token.decision == "accepted"
        rejected_id = None if ok else token.id
        numbers = [f"p={_short(token.p)}", f"q={_short(token.q)}" if token.q is not None else "q one-hot"]
        if token.accept_prob is not None:
            numbers.append(f"min(1,p/q)={_short(token.accept_prob)}")
        if token.u is not None:
            numbers.append(f"U={_short(token.u)}")
        if greedy and token.rank_p is not None:
            numbers.append(f"rank in p={token.rank_p}")
        title = (f"position {token.position} · draft {_quoted(token.text)} · {token.decision} "
                 f"({', '.join(numbers)})")
        note = "q is one-hot on the drafted token" if token.q is None else None
        if greedy:
            test = "greedy: kept only if it is the target's argmax"
            note = f"{note}<br>{test}" if note else test
        elif token.accept_prob is not None and token.u is not None:
            test = (f"U={_short(token.u)} {'<' if ok else '≥'} min(1,p/q)={_short(token.accept_prob)}"
                    f" → {'keep' if ok else 'reject'}")
            note = f"{note}<br>{test}" if note else test
        candidates = _with(token.candidates, Candidate(token.id, token.text, token.p, token.q))
        rows.append(_Row(title, _cut(candidates, k, token.id), token.id, DECISION_COLORS[token.decision],
                         f"drafted {'✓ accepted' if ok else '✗ rejected'}", note))
    if record.emitted is not None:
        rows.append(_emitted_row(record, greedy, rejected_id, k))
    return rows


def _emitted_row(record: StepRecord, greedy: bool, rejected_id: int | None, k: int) -> _Row:
    e = record.emitted
    sampled_rejection = e.kind == "resampled" and any(c.residual is not None for c in e.candidates)
    has_q = any(c.q is not None for c in e.candidates)
    mine = next((c for c in e.candidates if c.id == e.id), None)
    numbers = [f"p={_short(e.p)}"]
    if mine is not None and mine.q is not None:
        numbers.append(f"q={_short(mine.q)}")
    if mine is not None and mine.residual is not None:
        numbers.append(f"residual={_short(mine.residual)}")
    if e.kind == "bonus":
        how = "the target's argmax" if greedy else "sampled from p"
        why = "every draft accepted, one more token" if record.drafted else "nothing drafted, the target's own token"
        head = f"bonus {_quoted(e.text)} · {why}: {how}"
        label = "target argmax (bonus)" if greedy else "bonus ★ from p"
        note = "no draft here: only p counts"
    elif sampled_rejection:
        head = f"resampled {_quoted(e.text)} from norm(max(0,p−q))"
        label = "resampled ↻"
        note = "residual = the mass p has beyond q:<br>p = min(p,q) + P(reject)·residual"
    else:
        head = f"target argmax {_quoted(e.text)} · replaces the rejected draft"
        label = "target argmax"
        note = "greedy: the target's argmax is emitted"
    if e.kind == "resampled" and not has_q:
        note += "<br>q is one-hot on the drafted token"
    if e.outside_draft_vocab:
        head += " · outside the drafter's trimmed vocabulary (VocabTrim: q = 0, no draft could match it)"
        note += "<br>VocabTrim: this token is not in the drafter's head"
    keep = [e.id] + ([rejected_id] if rejected_id is not None else [])
    candidates = _cut(_with(e.candidates, Candidate(e.id, e.text, e.p, None)), k, *keep)
    also = rejected_id if rejected_id is not None and any(c.id == rejected_id for c in candidates) else None
    return _Row(f"position {e.position} · {head} ({', '.join(numbers)})", candidates, e.id,
                DECISION_COLORS[e.kind], label, note, also, sampled_rejection)


def _with(candidates: list[Candidate], token: Candidate) -> list[Candidate]:
    """The candidates, plus the marked token itself if a (hand-made) record left it out."""
    return candidates if any(c.id == token.id for c in candidates) else [*candidates, token]


def _cut(candidates: list[Candidate], k: int, *keep: int) -> list[Candidate]:
    """The k most likely under p (the records' order), keeping the tokens in ``keep`` even beyond the cut."""
    ordered = sorted(candidates, key=lambda c: -(c.p or 0.0))
    kept = [c for c in ordered if c.id in keep]
    others = [c for c in ordered if c.id not in keep][: max(0, k - len(kept))]
    ids = {c.id for c in kept + others}
    return [c for c in ordered if c.id in ids]


# ------------------------------------------------------------------------------------------------ drawing
def _add_row(fig: go.Figure, i: int, row: _Row, shown: set[str]) -> None:
    cands = row.candidates
    xs = list(range(len(cands)))
    custom = [[_esc(repr(c.text)), c.id, _exact(c.p), _exact(c.q), _exact(c.residual)] for c in cands]
    hover = ("<b>%{customdata[0]}</b>  id %{customdata[1]}<br>p = %{customdata[2]}<br>q = %{customdata[3]}"
             "<br>residual = %{customdata[4]}<extra>%{fullData.name}</extra>")
    series = [("p (target)", P_COLOR, [c.p for c in cands])]
    if any(c.q is not None for c in cands):
        series.append(("q (drafter)", Q_COLOR, [c.q for c in cands]))
    if row.residual:
        series.append(("residual norm(max(0,p−q))", RESIDUAL_COLOR, [c.residual for c in cands]))
    widths = [3 if c.id in (row.mark_id, row.also_id) else 0 for c in cands]
    lines = [row.mark_color if c.id == row.mark_id else DECISION_COLORS["rejected"] for c in cands]
    for name, color, values in series:
        if name not in shown:  # a clean legend swatch (the real bars carry per-bar outlines)
            fig.add_trace(go.Bar(x=[None], y=[None], name=name, legendgroup=name, offsetgroup=name, marker_color=color,
                                 hoverinfo="skip"), row=i, col=1)
            shown.add(name)
        fig.add_trace(go.Bar(
            x=xs, y=[v if v is not None else 0.0 for v in values], name=name, legendgroup=name, offsetgroup=name,
            showlegend=False,
            marker={"color": color, "line": {"color": lines, "width": widths}}, customdata=custom,
            hovertemplate=hover), row=i, col=1)
    ticks = [_tick(c, row) for c in cands]
    fig.update_xaxes(tickmode="array", tickvals=xs, ticktext=ticks, range=[-0.5, len(cands) - 0.5], row=i, col=1)
    top = max([v or 0.0 for _, _, values in series for v in values] + [1e-9])
    fig.update_yaxes(range=[0, top * 1.32], row=i, col=1)
    ax = "" if i == 1 else str(i)
    marks = [(row.mark_id, row.mark_label, row.mark_color)]
    if row.also_id is not None and row.also_id != row.mark_id:
        marks.append((row.also_id, "rejected draft", DECISION_COLORS["rejected"]))
    for token_id, label, color in marks:
        j = next((j for j, c in enumerate(cands) if c.id == token_id), None)
        if j is None:
            continue
        height = max((values[j] or 0.0) for _, _, values in series)
        fig.add_annotation(x=j, y=height, xref=f"x{ax}", yref=f"y{ax}", text=f"<b>{label}</b>", showarrow=False,
                           yanchor="bottom", yshift=3, font={"color": color, "size": 12})
    if row.note:
        fig.add_annotation(x=0.995, y=0.98, xref=f"x{ax} domain", yref=f"y{ax} domain", text=row.note,
                           showarrow=False, xanchor="right", yanchor="top", align="right",
                           font={"size": 11, "color": "#5f6368"}, bgcolor="rgba(255,255,255,0.8)")


def _tick(c: Candidate, row: _Row) -> str:
    text = _esc(_visible(c.text, TICK_CHARS))
    if c.id == row.mark_id:
        return f'<span style="color:{row.mark_color}"><b>{text}</b></span>'
    if c.id == row.also_id:
        return f'<span style="color:{DECISION_COLORS["rejected"]}"><b>{text}</b></span>'
    return text


def _headline(record: StepRecord) -> str:
    verified = sum(t.decision != "unverified" for t in record.drafted)
    parts = [f"round {record.step}", f"{record.drafter} drafter", f"{record.verifier} verifier",
             f"accepted {record.accepted} of {len(record.drafted)} drafted ({verified} verified)"]
    temperature = (record.settings or {}).get("temperature")
    if temperature is not None:
        parts.append(f"T={temperature:g}")
    return " · ".join(parts)


def _empty_figure(text: str) -> go.Figure:
    return empty_figure(text, MIN_HEIGHT, 16)


# ------------------------------------------------------------------------------------------------ text
def _visible(text: str, limit: int | None = None) -> str:
    """Token text with spaces as ␣, newlines as ↵, tabs as ⇥, other control characters as \\xNN; empty as ∅."""
    if not text:
        return "∅"
    out = []
    for ch in text.replace("\r\n", "\n"):
        if ch == " ":
            out.append("␣")
        elif ch in "\n\r":
            out.append("↵")
        elif ch == "\t":
            out.append("⇥")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    shown = "".join(out)
    if limit is not None and len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return shown


def _quoted(text: str) -> str:
    return f"'{_visible(text, 24)}'"


def _short(value: float | None) -> str:
    if value is None:
        return MISSING
    if value == 0 or abs(value) >= 0.01:
        return f"{value:.2f}"
    return f"{value:.2g}"


def _exact(value: float | None) -> str:
    return MISSING if value is None else f"{value:.6g}"


__all__ = ["round_inspector_figure"]
