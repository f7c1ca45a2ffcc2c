"""Small text helpers shared by the visualizers."""

from __future__ import annotations

import html

MISSING = "—"


def esc(text) -> str:
    """Plotly labels and HTML both render tags: escape token text so '<b>' shows as itself."""
    return html.escape(str(text), quote=False)


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def num(value, digits: int = 3) -> str:
    """A number with ``digits`` decimals (scientific below the last one), or MISSING for None."""
    if value is None:
        return MISSING
    value = float(value)
    if 0 < abs(value) < 0.5 * 10 ** -digits:
        return f"{value:.1e}"
    return f"{value:.{digits}f}"
