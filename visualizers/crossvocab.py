"""The "Across tokenizers" views of the OmniDraft drafter (a drafter with another tokenizer than the target):

- the alignment of one round: the drafter's own tokens on top (q and the acceptance head's chance each), the target
  tokens they became below, joined by merge brackets (n-gram cache runs and direct matches in two colours), the cut
  or γ point marked, unused drafter tokens greyed, q' = Π q of each target token, and the target's decisions;
- the n-gram cache over the session: the entries each round added, and its size against rounds;
- acceptance over time: accepted / drafted per round with a running mean, one run per label (learning on / off), the
  distillation steps marked.

Inputs are ``StepRecord``s whose ``draft_info["omnidraft"]`` the drafter filled; nothing here touches a model.
"""

from __future__ import annotations

import html

import plotly.graph_objects as go

from core.specdec.records import StepRecord
from visualizers.format import MISSING, count, empty_figure, esc, num

HEIGHT, EMPTY_HEIGHT = 360, 240
MAX_CACHE_ROWS = 200  # the cache table shows the newest entries first, at most this many
KIND_COLORS = {"ngram": "#8e24aa", "direct": "#00897b"}  # merge brackets and target tokens, by how they were made
KIND_NAMES = {"ngram": "n-gram cache", "direct": "direct match"}
RUN_COLORS = ("#1a73e8", "#e8710a", "#1e8e3e", "#d93025")  # one per compared run, in order
STOPS = {  # draft_info "stop" → why drafting stopped, for a reader
    "γ": "γ target tokens (or the room left in the token budget) reached",
    "no mapping": "cut: a drafter token spells no target token",
    "acceptance head": "the acceptance head's predicted chance fell below the stop",
    "confidence": "the drafter's confidence fell below the threshold",
    "": "the drafter's longest run or the context",
}
DECISION_MARKS = {"accepted": "✓ accepted", "rejected": "✗ rejected", "unverified": "· not verified"}

_STYLE = """<style>
.cv-vis { font-size: 13px; }
.cv-vis .cv-head { margin-bottom: 6px; }
.cv-vis .cv-grid { display: grid; gap: 2px 4px; align-items: stretch; justify-content: start; overflow-x: auto;
  padding-bottom: 4px; }
.cv-vis .cv-label { color: #80868b; font-size: 0.85em; align-self: center; padding-right: 6px; white-space: nowrap; }
.cv-vis .cv-tok { border-radius: 4px; padding: 2px 5px; text-align: center; white-space: nowrap; }
.cv-vis .cv-text { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 1.05em; }
.cv-vis .cv-sub { display: block; color: #5f6368; font-size: 0.8em; }
.cv-vis .cv-draft { background: #eef1f5; border: 1px solid #c7cbd1; }
.cv-vis .cv-draft.unused { background: #f8f9fa; color: #b0b4ba; border-style: dashed; }
.cv-vis .cv-draft.unused .cv-sub { color: #b0b4ba; }
.cv-vis .cv-bracket { height: 9px; border: 2px solid; border-top: none; border-radius: 0 0 5px 5px; margin: 0 3px; }
.cv-vis .cv-bracket.ngram { border-color: #8e24aa; }
.cv-vis .cv-bracket.direct { border-color: #00897b; }
.cv-vis .cv-target { border: 2px solid; background: #fff; }
.cv-vis .cv-target.ngram { border-color: #8e24aa; background: #f3e5f5; }
.cv-vis .cv-target.direct { border-color: #00897b; background: #e0f2f1; }
.cv-vis .cv-target.unverified { opacity: 0.55; }
.cv-vis .cv-mark { display: block; font-size: 0.8em; font-weight: 600; }
.cv-vis .cv-mark.accepted { color: #1e8e3e; }
.cv-vis .cv-mark.rejected { color: #d93025; }
.cv-vis .cv-mark.unverified { color: #80868b; font-weight: normal; }
.cv-vis .cv-emitted { border: 2px dotted #3c4a5c; background: #fff; }
.cv-vis .cv-emitted.bonus { background: #d4e4ff; }
.cv-vis .cv-emitted.resampled { background: #ffe0b8; }
.cv-vis .cv-cut { border-left: 3px dashed #d93025; }
.cv-vis .cv-cut-label { color: #d93025; font-size: 0.8em; white-space: nowrap; }
.cv-vis .cv-gamma { border-left: 3px dashed #80868b; }
.cv-vis .cv-gamma-label { color: #80868b; font-size: 0.8em; white-space: nowrap; }
.cv-vis .cv-legend { margin-top: 6px; font-size: 0.85em; color: #5f6368; }
.cv-vis .cv-key { border-radius: 3px; padding: 0 4px; border: 2px solid; }
.cv-vis .cv-empty { color: #80868b; font-style: italic; }
.cv-vis table.cv-cache { border-collapse: collapse; }
.cv-vis table.cv-cache th { text-align: left; font-weight: normal; color: #80868b; padding: 2px 12px 2px 0;
  border-bottom: 1px solid #dadce0; }
.cv-vis table.cv-cache td { padding: 2px 12px 2px 0; vertical-align: top; }
.cv-vis .cv-piece { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #eef1f5;
  border: 1px solid #c7cbd1; border-radius: 3px; padding: 0 3px; margin-right: 2px; white-space: pre; }
.cv-vis .cv-piece.target { background: #f3e5f5; border-color: #8e24aa; }
</style>"""

_LEGEND = ('<div class="cv-legend"><span class="cv-key" style="border-color:#8e24aa;background:#f3e5f5">n-gram cache: '
           'a run of drafter tokens → one target token</span> <span class="cv-key" style="border-color:#00897b;'
           'background:#e0f2f1">direct match: the same text</span> <span class="cv-key" style="border-color:#b0b4ba;'
           'border-style:dashed;color:#b0b4ba">drafter token not used</span> <span class="cv-cut-label">┆ cut</span> '
           '· q′ = Π q of the drafter tokens under a target token (shown, not used: verification treats each target '
           'token as given, so the output is exactly the target\'s) · ␣ = a space · hover for ids</div>')


# ------------------------------------------------------------------------------------------------ record access
def omni_info(record: StepRecord | None) -> dict | None:
    """The OmniDraft part of a round's ``draft_info`` (None for a round that did not draft with it)."""
    if record is None:
        return None
    return (record.draft_info or {}).get("omnidraft")


def piece(text: str) -> str:
    """A token's text as HTML with its whitespace visible (␣ a space, ↵ a newline, ⇥ a tab; ∅ when empty)."""
    if not text:
        return "∅"
    return esc(text).replace(" ", "␣").replace("\r", "").replace("\n", "↵").replace("\t", "⇥")


def _attr(text: str) -> str:
    return html.escape(str(text), quote=True)


# ------------------------------------------------------------------------------------------------ alignment
def alignment_html(record: StepRecord | None) -> str:
    """One round's translation as an HTML grid: a column per drafter token (plus one for the target's own token),
    the drafter's row on top, merge brackets, the target tokens (each spanning the drafter tokens it came from)."""
    if record is None:
        return _wrap('<div class="cv-empty">No round yet: press Step or Run.</div>')
    info = omni_info(record)
    if info is None:
        line = (f"Round {record.step}: the drafter was not asked to draft (one token of budget left: the target "
                "adds it alone).")
        return _wrap(f'<div class="cv-empty">{esc(line)}</div>' + _grid(record, [], [], "", None))
    draft, groups = list(info.get("draft") or []), list(info.get("groups") or [])
    return _wrap(f'<div class="cv-head">{_headline(record, info)}</div>'
                 + _grid(record, draft, groups, info.get("stop") or "", _first_unused(draft)) + _LEGEND)


def _wrap(body: str) -> str:
    return f'<div class="cv-vis">{_STYLE}{body}</div>'


def _first_unused(draft: list[dict]) -> int | None:
    return next((i for i, d in enumerate(draft) if not d.get("used")), None)


def _headline(record: StepRecord, info: dict) -> str:
    groups = info.get("groups") or []
    kinds = [g.get("kind") for g in groups]
    decisions = [d.decision for d in record.drafted]
    stop = info.get("stop") or ""
    parts = [f"<b>round {record.step}</b>",
             f"{count(len(info.get('draft') or []), 'drafter token')} → {count(len(groups), 'target token')} "
             f"({kinds.count('ngram')} n-gram, {kinds.count('direct')} direct)",
             f"stopped: {esc(STOPS.get(stop, stop))}",
             f"{decisions.count('accepted')} of {len(decisions)} accepted",
             f"cache {info.get('cache_size', MISSING)} entries (+{len(info.get('cache_new') or [])})",
             f"distillation steps {info.get('distill_steps', MISSING)}"
             + (f" (last loss {num(info['distill_loss'])})" if info.get("distill_loss") is not None else ""),
             f"acceptance-head steps {info.get('head_steps', MISSING)}"]
    return " · ".join(parts)


def _grid(record: StepRecord, draft: list[dict], groups: list[dict], stop: str, unused: int | None) -> str:
    """Column 1: row labels; columns 2..n+1: the drafter tokens; the last column: the target's own token."""
    n = len(draft)
    emitted = record.emitted if record.emitted is not None and len(record.committed_ids) > record.accepted else None
    cells = ['<div class="cv-label" style="grid-row:1;grid-column:1">drafter</div>',
             '<div class="cv-label" style="grid-row:3;grid-column:1">target</div>']
    for i, d in enumerate(draft):
        cells.append(_draft_cell(i, d, stop, unused))
    for k, g in enumerate(groups):
        decision = record.drafted[k].decision if k < len(record.drafted) else "unverified"
        cells.extend(_group_cells(g, draft, decision))
    if unused is not None:
        label = ("✂ cut: no target token" if stop == "no mapping" else
                 "beyond γ" if stop == "γ" else "not used")
        css = "cv-cut-label" if stop == "no mapping" else "cv-gamma-label"
        cells.append(f'<div class="{css}" style="grid-row:2/4;grid-column:{unused + 2};align-self:center">'
                     f'{esc(label)}</div>')
    if emitted is not None:
        title = f"the target's own token ({emitted.kind}): {emitted.text!r} id {emitted.id} · p = {num(emitted.p)}"
        cells.append(f'<div class="cv-tok cv-emitted {emitted.kind}" style="grid-row:3;grid-column:{n + 2}" '
                     f'title="{_attr(title)}"><span class="cv-text">{piece(emitted.text)}</span>'
                     f'<span class="cv-mark">+ {esc(emitted.kind)}</span>'
                     '<span class="cv-sub">target\'s own</span></div>')
    columns = f"max-content repeat({n + 1}, minmax(48px, max-content))"
    return f'<div class="cv-grid" style="grid-template-columns:{columns}">{"".join(cells)}</div>'


def _draft_cell(i: int, d: dict, stop: str, unused: int | None) -> str:
    used = bool(d.get("used"))
    css = "cv-tok cv-draft" + ("" if used else " unused")
    if unused is not None and i == unused:
        css += " cv-cut" if stop == "no mapping" else " cv-gamma"
    title = (f"drafter token {i}: {d.get('text', '')!r} id {d.get('id', MISSING)} · q = {num(d.get('q'))} · "
             f"acceptance head: {num(d.get('chance'))}" + ("" if used else " · not used"))
    return (f'<div class="{css}" style="grid-row:1;grid-column:{i + 2}" title="{_attr(title)}">'
            f'<span class="cv-text">{piece(d.get("text", ""))}</span>'
            f'<span class="cv-sub">q {num(d.get("q"))}</span><span class="cv-sub">head {num(d.get("chance"), 2)}</span>'
            '</div>')


def _group_cells(g: dict, draft: list[dict], decision: str) -> list[str]:
    """The merge bracket under the group's drafter tokens and its target token, spanning them."""
    positions = list(g.get("draft") or [])
    if not positions:
        return []
    start, span = min(positions) + 2, max(positions) - min(positions) + 1
    kind = g.get("kind") if g.get("kind") in KIND_COLORS else "direct"
    qs = [draft[p].get("q") for p in positions if p < len(draft)]
    product = " · ".join(num(q) for q in qs)
    q_text = f"q′ = {num(g.get('q'))}" if len(qs) < 2 else f"q′ = {product} = {num(g.get('q'))}"
    title = (f"target token {g.get('text', '')!r} id {g.get('target', MISSING)} · {KIND_NAMES[kind]} of drafter "
             f"tokens {', '.join(map(str, positions))} · {q_text} · {decision}")
    place = f"grid-column:{start}/span {span}"
    return [f'<div class="cv-bracket {kind}" style="grid-row:2;{place}"></div>',
            f'<div class="cv-tok cv-target {kind} {decision}" style="grid-row:3;{place}" title="{_attr(title)}">'
            f'<span class="cv-text">{piece(g.get("text", ""))}</span>'
            f'<span class="cv-mark {decision}">{esc(DECISION_MARKS.get(decision, decision))}</span>'
            f'<span class="cv-sub">{esc(q_text)}</span></div>']


# ------------------------------------------------------------------------------------------------ the cache
def cache_rows(records: list[StepRecord]) -> list[dict]:
    """Every n-gram cache entry in the order it was added: {round, target, run}. ``round`` is the round whose
    record reports it: the entry was learned from the tokens committed before that round and is usable from it."""
    rows = []
    for r in records:
        for target, run in (omni_info(r) or {}).get("cache_new") or []:
            rows.append({"round": r.step, "target": target, "run": list(run)})
    return rows


def cache_table_html(records: list[StepRecord]) -> str:
    """The cache entries as a table, newest first (at most ``MAX_CACHE_ROWS``)."""
    rows = cache_rows(records)
    if not rows:
        text = ("No n-gram cache entries yet: each round adds the committed target tokens that no single drafter "
                "token spells." if any(omni_info(r) for r in records) else "No rounds yet: press Step or Run.")
        return _wrap(f'<div class="cv-empty">{esc(text)}</div>')
    shown = rows[::-1][:MAX_CACHE_ROWS]
    body = "".join(f"<tr><td>{row['round']}</td><td>{_chip(row['target'], ' target')}</td>"
                   f"<td>{''.join(_chip(p) for p in row['run'])}</td><td>{len(row['run'])}</td></tr>" for row in shown)
    more = (f'<div class="cv-empty">… {len(rows) - len(shown)} older entries not shown</div>'
            if len(rows) > len(shown) else "")
    head = "<tr><th>added before round</th><th>target token</th><th>drafter run</th><th>length</th></tr>"
    entries = f"{len(rows)} cache entr{'y' if len(rows) == 1 else 'ies'}"
    return _wrap(f'<div class="cv-head">{entries} learned this run, newest first</div>'
                 f'<table class="cv-cache">{head}{body}</table>{more}')


def _chip(text: str, extra: str = "") -> str:
    return f'<span class="cv-piece{extra}" title="{_attr(repr(text))}">{piece(text)}</span>'


def cache_figure(records: list[StepRecord]) -> go.Figure:
    """The n-gram cache's size at each round's drafting (line) and the entries added before it (bars)."""
    rounds = [(r.step, info) for r in records if (info := omni_info(r)) is not None]
    if not rounds:
        return empty_figure("Step or Run to see the n-gram cache grow", EMPTY_HEIGHT)
    xs = [step for step, _ in rounds]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=xs, y=[len(info.get("cache_new") or []) for _, info in rounds], name="entries added",
                         meta="cache_new", marker_color="#ce93d8", hovertemplate="round %{x}: +%{y}<extra></extra>"))
    fig.add_trace(go.Scatter(x=xs, y=[info.get("cache_size") for _, info in rounds], name="cache size",
                             meta="cache_size", mode="lines+markers", line={"color": KIND_COLORS["ngram"],
                                                                             "shape": "hv"},
                             hovertemplate="round %{x}: %{y} entries<extra></extra>"))
    fig.update_layout(height=HEIGHT - 60, template="plotly_white",
                      title={"text": "n-gram cache: size against rounds", "x": 0, "xanchor": "left",
                             "font": {"size": 14}},
                      xaxis={"title": "round"}, yaxis={"title": "entries", "rangemode": "tozero"},
                      margin={"l": 50, "r": 20, "t": 50, "b": 50}, legend={"orientation": "h", "y": -0.3})
    return fig


# ------------------------------------------------------------------------------------------------ acceptance
def round_acceptance(records: list[StepRecord]) -> list[float | None]:
    """accepted / drafted target tokens per round (None where nothing was drafted)."""
    return [r.accepted / len(r.drafted) if r.drafted else None for r in records]


def running_acceptance(records: list[StepRecord]) -> list[float | None]:
    """Σ accepted / Σ drafted up to each round (None until something was drafted)."""
    out, accepted, drafted = [], 0, 0
    for r in records:
        accepted, drafted = accepted + r.accepted, drafted + len(r.drafted)
        out.append(accepted / drafted if drafted else None)
    return out


def distill_rounds(records: list[StepRecord]) -> list[tuple[int, int, float | None]]:
    """(round, distillation steps so far, the step's loss) for every round that began with a distillation step."""
    out, last = [], 0
    for r in records:
        info = omni_info(r)
        if info is None:
            continue
        steps = int(info.get("distill_steps") or 0)
        if steps > last:
            out.append((r.step, steps, info.get("distill_loss")))
        last = max(last, steps)
    return out


def acceptance_figure(runs: dict[str, list[StepRecord]]) -> go.Figure:
    """Per run (label → records): accepted / drafted per round (markers), the running Σ accepted / Σ drafted (line),
    and the rounds that began with a distillation step (triangles above the plot area)."""
    runs = {label: records for label, records in runs.items() if records}
    if not runs:
        return empty_figure("Step or Run to see the acceptance per round", EMPTY_HEIGHT)
    fig = go.Figure()
    for (label, records), color in zip(runs.items(), RUN_COLORS, strict=False):
        xs = [r.step for r in records]
        hover = [f"{label} · round {r.step}: {r.accepted} of {len(r.drafted)} accepted"
                 + ("" if r.drafted else f" (nothing drafted: {_stop_text(r)})") for r in records]
        fig.add_trace(go.Scatter(x=xs, y=round_acceptance(records), name=f"{label}: per round", meta="acceptance",
                                 legendgroup=label, mode="markers", marker={"color": color, "size": 8, "opacity": 0.6},
                                 hovertext=hover, hoverinfo="text"))
        fig.add_trace(go.Scatter(x=xs, y=running_acceptance(records), name=f"{label}: running Σacc/Σdrafted",
                                 meta="running", legendgroup=label, mode="lines", line={"color": color, "width": 3},
                                 hovertemplate=f"{esc(label)} · round %{{x}}: running %{{y:.3f}}<extra></extra>"))
        marks = distill_rounds(records)
        if marks:
            fig.add_trace(go.Scatter(
                x=[m[0] for m in marks], y=[1.08] * len(marks), name=f"{label}: distillation step", meta="distill",
                legendgroup=label, mode="markers", marker={"symbol": "triangle-down", "size": 10, "color": color},
                hovertext=[f"{label} · distillation step {k} before round {step} (loss {num(loss)})"
                           for step, k, loss in marks], hoverinfo="text"))
    fig.update_layout(height=HEIGHT, template="plotly_white",
                      title={"text": "Acceptance per round (accepted / drafted target tokens)", "x": 0,
                             "xanchor": "left", "font": {"size": 14}},
                      xaxis={"title": "round"}, yaxis={"title": "accepted / drafted", "range": [-0.05, 1.15]},
                      margin={"l": 50, "r": 20, "t": 50, "b": 50}, legend={"orientation": "h", "y": -0.25})
    return fig


def _stop_text(record: StepRecord) -> str:
    info = omni_info(record)
    if info is None:
        return "not asked to draft"
    stop = info.get("stop") or ""
    return STOPS.get(stop, stop)


__all__ = ["acceptance_figure", "alignment_html", "cache_figure", "cache_rows", "cache_table_html", "distill_rounds",
           "omni_info", "piece", "round_acceptance", "running_acceptance"]
