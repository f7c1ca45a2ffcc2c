"""The token strip: the generated text, token by token, coloured by what speculative decoding did with each one.

Per round, in order: the accepted drafts (green), the rejected draft (red, struck through; it never enters the text),
then the target's own token (orange when resampled at a rejection, blue when a bonus after full acceptance).
Unverified drafts (after the first rejection) are not shown. A small marker opens every round.
"""

from __future__ import annotations

import html

from core.specdec.records import DraftedToken, EmittedToken, StepRecord

MISSING = "—"
PROMPT_CHARS = 160  # the prompt's tail shown before the generated tokens (hover shows all of it)

_STYLE = """<style>
.ds-vis { font-size: 14px; }
.ds-vis .ds-strip { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; line-height: 1.9;
  white-space: pre-wrap; word-break: break-word; }
.ds-vis .tok, .ds-vis .key { border-radius: 3px; padding: 0 1px; margin: 0 1px 0 0; }
.ds-vis .accepted { background: #d3f2d8; color: #0b5d1e; }
.ds-vis .rejected { background: #fbd5d5; color: #a01919; text-decoration: line-through; }
.ds-vis .resampled { background: #ffe0b8; color: #8a4b00; }
.ds-vis .bonus { background: #d4e4ff; color: #123f8c; }
.ds-vis .trimmed { outline: 2px dashed #7b1fa2; outline-offset: -1px; }
.ds-vis .round-sep { border-left: 2px solid #9aa0a6; margin-left: 4px; padding-left: 2px; color: #80868b;
  font-size: 0.65em; vertical-align: super; }
.ds-vis .prompt { color: #80868b; }
.ds-vis .finish, .ds-vis .empty { color: #80868b; font-style: italic; }
.ds-vis .ds-legend { margin-bottom: 6px; font-size: 0.85em; }
.ds-vis table.ds-stats { border-collapse: collapse; }
.ds-vis table.ds-stats th { text-align: left; font-weight: normal; color: #80868b; padding: 1px 12px 1px 0; }
.ds-vis table.ds-stats td { font-family: ui-monospace, monospace; padding: 1px 0; }
</style>"""

_LEGEND = ('<div class="ds-legend"><span class="key accepted">accepted draft</span> '
           '<span class="key rejected">rejected draft</span> '
           '<span class="key resampled">target: resampled</span> '
           '<span class="key bonus">target: bonus</span> '
           '<span class="key trimmed">outside a trimmed draft vocabulary</span> '
           '<span class="round-sep">n</span> start of round n · hover a token for p, q, U and ranks</div>')


def token_strip_html(records: list[StepRecord], prompt_text: str | None = None) -> str:
    """HTML of the committed text of ``records`` plus the rejected drafts: one ``<span class="tok KIND">`` a token."""
    parts = []
    if prompt_text:
        shown = prompt_text if len(prompt_text) <= PROMPT_CHARS else "…" + prompt_text[-PROMPT_CHARS:]
        parts.append(f'<span class="prompt" title="{_esc(prompt_text)}">{_visible(shown)}</span>')
    for record in records:
        parts.append(_round_html(record))
    if records and records[-1].finished:
        parts.append(f'<span class="finish"> ■ finished: {_esc(records[-1].finish_reason or "done")}</span>')
    if not records:
        parts.append('<span class="empty">No tokens yet: press Step or Generate.</span>')
    return f'<div class="ds-vis">{_STYLE}{_LEGEND}<div class="ds-strip">{"".join(parts)}</div></div>'


def _round_html(record: StepRecord) -> str:
    """Marker, accepted drafts, rejected draft, emitted token; only what the round committed (cut at EOS) as text."""
    n_drafted = len(record.drafted)
    title = (f"round {record.step}: drafted {n_drafted}, accepted {record.accepted}, "
             f"committed {len(record.committed_ids)}")
    parts = [f'<span class="round-sep" title="{_esc(title)}">{record.step}</span>']
    n_accepted_drafts = sum(t.decision == "accepted" for t in record.drafted)
    cut_in_drafts = record.accepted < n_accepted_drafts  # EOS among the accepted drafts: nothing after it counts
    shown = 0
    for token in record.drafted:
        if token.decision == "accepted" and shown < record.accepted:
            parts.append(_drafted_span(token))
            shown += 1
        elif token.decision == "rejected" and not cut_in_drafts:
            parts.append(_drafted_span(token))
    if record.emitted is not None and len(record.committed_ids) > record.accepted:
        parts.append(_emitted_span(record.emitted))
    return "".join(parts)


def _drafted_span(token: DraftedToken) -> str:
    title = f"draft #{token.position} ({token.decision}): {token.text!r} id {token.id}"
    return _span(token.decision, token.text, title, token.p, token.q, token.accept_prob, token.u, token.rank_p,
                 token.rank_q)


def _emitted_span(token: EmittedToken) -> str:
    header = f"target #{token.position} ({token.kind}): {token.text!r} id {token.id}"
    kind = token.kind
    if token.outside_draft_vocab:
        header += "\noutside the drafter's trimmed vocabulary (VocabTrim): no draft could have matched it"
        kind += " trimmed"
    return _span(kind, token.text, header, token.p, None, None, None, token.rank_p, None)


def _span(kind: str, text: str, header: str, p, q, accept_prob, u, rank_p, rank_q) -> str:
    """One token; its hover title lists p, q, min(1, p/q), U and the ranks (— where the token has none)."""
    title = "\n".join([
        header,
        f"p = {_num(p)}   q = {_num(q)}",
        f"min(1,p/q) = {_num(accept_prob)}   U = {_num(u)}",
        f"rank in p = {_num(rank_p)}   rank in q = {_num(rank_q)}",
    ])
    return f'<span class="tok {kind}" title="{_esc(title)}">{_visible(text) if text else "∅"}</span>'


def _visible(text: str) -> str:
    """Escaped text with newlines shown as ↵ plus a line break (spaces survive through white-space: pre-wrap)."""
    return _esc(text).replace("\r\n", "\n").replace("\n", "↵<br>")


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return MISSING
    if isinstance(value, int):
        return str(value)
    if 0 < abs(value) < 0.5 * 10 ** -digits:  # would print as 0.000: keep the magnitude
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


# ------------------------------------------------------------------------------------------------ statistics
def stats_html(summary: dict) -> str:
    """A small table of the run's headline metrics (``Stats.summary()``); missing or None values show as —."""
    s = summary or {}
    draft_s, verify_s = s.get("draft_s"), s.get("verify_s")
    rows = [
        ("α (acceptance rate)", _num(s.get("alpha"))),
        ("τ (tokens per target call)", _num(s.get("tau"), 2)),
        ("tokens / s", _num(s.get("tokens_per_second"), 1)),
        ("generated tokens", _num(s.get("generated"))),
        ("rounds", _num(s.get("rounds"))),
        ("target calls", _num(s.get("target_calls"))),
        ("draft time", _seconds(draft_s, draft_s, verify_s)),
        ("verify time", _seconds(verify_s, draft_s, verify_s)),
        ("prefill time", _seconds(s.get("prefill_s"))),
        ("MBSU", _num(s.get("mbsu"), 2)),
    ]
    per_position = s.get("per_position_acceptance")
    if per_position:
        rows.append(("acceptance by position", " · ".join(f"{a:.2f}" for a in per_position)))
    body = "".join(f"<tr><th>{_esc(name)}</th><td>{_esc(value)}</td></tr>" for name, value in rows)
    return f'<div class="ds-vis">{_STYLE}<table class="ds-stats">{body}</table></div>'


def _seconds(value: float | None, draft_s: float | None = None, verify_s: float | None = None) -> str:
    """'0.123 s', plus the share of draft + verify time when both are known."""
    if value is None:
        return MISSING
    text = f"{value:.3f} s"
    if draft_s is not None and verify_s is not None and draft_s + verify_s > 0:
        text += f" ({100 * value / (draft_s + verify_s):.0f}%)"
    return text


__all__ = ["stats_html", "token_strip_html"]
