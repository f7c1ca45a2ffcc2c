"""Comparing runs: a one-line verdict between two runs' statistics, and the lossless check's badge."""

from __future__ import annotations

import html

MISSING = "—"

_STYLE = """<style>
.ds-vis .ds-lossless { font-size: 14px; line-height: 1.6; }
.ds-vis .ds-badge { display: inline-block; border-radius: 4px; padding: 2px 8px; font-weight: 600; }
.ds-vis .ds-badge.same { background: #d3f2d8; color: #0b5d1e; }
.ds-vis .ds-badge.differs { background: #fbd5d5; color: #a01919; }
.ds-vis .ds-badge.expected { background: #ffe0b8; color: #8a4b00; }
.ds-vis .ds-lossless .mode { color: #80868b; margin-left: 8px; }
.ds-vis .ds-lossless .message { margin-top: 4px; }
.ds-vis .ds-lossless .timing { color: #80868b; font-size: 0.9em; }
</style>"""


def compare_verdict(name_a: str, summary_a: dict, name_b: str, summary_b: dict) -> str:
    """One plain-text line: which run was faster and by how much, then tokens/s, τ and α for both.

    e.g. "ngram (γ=5) is 1.42× faster than early-exit (γ=5): 36.1 vs 25.4 tok/s; τ 1.90 vs 1.10, α 0.41 vs 0.02".
    """
    a, b = summary_a or {}, summary_b or {}
    speed_a, speed_b = a.get("tokens_per_second"), b.get("tokens_per_second")
    tail = (f"τ {_num(a.get('tau'), 2)} vs {_num(b.get('tau'), 2)}, "
            f"α {_num(a.get('alpha'), 2)} vs {_num(b.get('alpha'), 2)}")
    speeds = f"{_num(speed_a, 1)} vs {_num(speed_b, 1)} tok/s"
    if not speed_a or not speed_b or speed_a <= 0 or speed_b <= 0:
        return f"{name_a} vs {name_b}: speed could not be compared ({speeds}); {tail}"
    ratio = speed_a / speed_b
    if f"{ratio:.2f}" == "1.00":
        head = f"{name_a} is about as fast as {name_b}"
    elif ratio > 1:
        head = f"{name_a} is {ratio:.2f}× faster than {name_b}"
    else:
        head = f"{name_a} is {1 / ratio:.2f}× slower than {name_b}"
    return f"{head}: {speeds}; {tail}"


def lossless_html(report_dict: dict) -> str:
    """A ``LosslessReport.to_dict()`` as a badge (identical / first divergence), the mode, the message, the timing.

    A divergence is red under the greedy rule (identity is the claim) and amber under sampling (not expected there).
    """
    r = report_dict or {}
    mode = str(r.get("mode") or "greedy")
    if r.get("identical"):
        badge = f'<span class="ds-badge same">✓ identical: {_esc(r.get("compared", MISSING))} tokens match</span>'
    else:
        first = r.get("first_divergence")
        text = (f"✗ first divergence at token {_esc(MISSING if first is None else first)}: "
                f"{_esc(_token(r.get('speculative_token')))} vs {_esc(_token(r.get('target_token')))}")
        kind = "expected" if mode == "sampling" else "differs"
        badge = f'<span class="ds-badge {kind}">{text}</span>'
    seconds = r.get("target_seconds")
    n = len(r.get("target_ids") or [])
    timing = (f"target-only decoding: {seconds:.3f} s for {n} tokens" if isinstance(seconds, (int, float))
              else f"target-only decoding: {MISSING}")
    return (f'<div class="ds-vis">{_STYLE}<div class="ds-lossless">{badge}'
            f'<span class="mode">mode: {_esc(mode)}</span>'
            f'<div class="message">{_esc(r.get("message", ""))}</div>'
            f'<div class="timing">{_esc(timing)}</div></div></div>')


def _token(text: str | None) -> str:
    return MISSING if text is None else repr(text)


def _num(value: float | None, digits: int) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


__all__ = ["compare_verdict", "lossless_html"]
