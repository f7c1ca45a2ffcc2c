"""Small helpers shared by the visualizers: text escaping and number formats, and the placeholder figure."""

from __future__ import annotations

import html
import textwrap

import plotly.graph_objects as go

MISSING = "—"


def esc(text) -> str:
    """Plotly labels and HTML both render tags: escape token text so '<b>' shows as itself."""
    return html.escape(str(text), quote=False)


def shown(text: str | None) -> str:
    """Token text with its whitespace made visible (· space, ↵ newline, → tab), plain (not escaped: for labels);
    ``MISSING`` for None."""
    return MISSING if text is None else text.replace(" ", "·").replace("\n", "↵").replace("\t", "→")


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


def empty_figure(text: str, height: int, font_size: int = 15, wrap: int = 0) -> go.Figure:
    """A figure that only says ``text`` (centred, grey; wrapped at ``wrap`` characters when > 0), no axes."""
    label = "<br>".join(esc(line) for line in textwrap.wrap(text, wrap)) if wrap else esc(text)
    fig = go.Figure()
    fig.add_annotation(text=label, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font={"size": font_size, "color": "#80868b"})
    fig.update_layout(height=height, template="plotly_white", xaxis={"visible": False}, yaxis={"visible": False},
                      margin={"l": 20, "r": 20, "t": 20, "b": 20})
    return fig
