"""Drafting against context length (``core.specdec.longctx`` rows): the drafter's own KV bytes per context length
(LongSpec's ring flat, a normal drafter's cache growing, the target's cache as a dashed reference), α and the speed-up
over the target alone per length, and the rows as a table. Rows are ``ContextRow`` records or their dicts (JSON)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from visualizers.format import MISSING, empty_figure, num

HEIGHT, EMPTY_HEIGHT = 380, 240
MIB = 2 ** 20
DRAFTER_COLORS = {"longspec": "#1a73e8", "fastdraft": "#e8710a"}
OTHER_COLORS = ("#8e24aa", "#1e8e3e", "#d93025", "#00897b")
TARGET_COLOR = "#9aa0a6"
KIND_TEXT = {"ring": "fixed ring (allocated once)", "cache": "own KV cache, its peak between rounds",
             "none": "no cache of its own"}
TABLE_COLUMNS = ["drafter", "prompt tokens", "drafter KV (MiB)", "target KV (MiB)", "α", "τ", "tokens/s",
                 "target-only tokens/s", "speed-up", "prefill s", "identical"]
EMPTY_TEXT = "Run the sweep to draft at each context length with LongSpec and a normal drafter."


def _dicts(rows) -> list[dict]:
    return [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in rows or []]


def _by_drafter(rows: list[dict]) -> dict[str, list[dict]]:
    """{drafter: its rows by length}, drafters in the order they first appear."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["drafter"], []).append(r)
    return {name: sorted(rs, key=lambda r: r["length"]) for name, rs in groups.items()}


def _color(name: str, k: int) -> str:
    return DRAFTER_COLORS.get(name) or OTHER_COLORS[k % len(OTHER_COLORS)]


def _lengths_axis(fig: go.Figure, rows: list[dict], **where) -> None:
    lengths = sorted({r["length"] for r in rows})
    fig.update_xaxes(title={"text": "context length (prompt tokens)", "standoff": 4}, tickvals=lengths,
                     ticktext=[f"{n:,}" for n in lengths], **where)


def _layout(fig: go.Figure, title: str) -> None:
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=HEIGHT, template="plotly_white",
                      font={"size": 12}, margin={"l": 60, "r": 20, "t": 70, "b": 90},
                      legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.25, "yanchor": "top"})


def memory_figure(rows: Sequence) -> go.Figure:
    """The drafter's own KV cache (MiB, log scale) against the context length, one line per drafter; the target's KV
    cache after the same run as a dashed reference."""
    rows = _dicts(rows)
    groups = {name: [r for r in rs if r.get("drafter_kv_bytes") is not None]
              for name, rs in _by_drafter(rows).items()}
    groups = {name: rs for name, rs in groups.items() if rs}
    if not groups:
        return empty_figure(EMPTY_TEXT, EMPTY_HEIGHT, wrap=70)
    fig = go.Figure()
    for k, (name, rs) in enumerate(groups.items()):
        fig.add_trace(go.Scatter(
            x=[r["length"] for r in rs], y=[r["drafter_kv_bytes"] / MIB for r in rs], mode="lines+markers",
            name=f"{name}: own KV", meta=f"drafter:{name}", line={"color": _color(name, k), "width": 3},
            marker={"size": 9},
            customdata=[[KIND_TEXT.get(r.get("drafter_kv_kind"), MISSING), r.get("drafter_kv_tokens", 0)]
                        for r in rs],
            hovertemplate=f"<b>{name}</b> at %{{x:,}} prompt tokens<br>own KV: %{{y:.3f}} MiB<br>"
                          "%{customdata[0]}, %{customdata[1]:,} positions held<extra></extra>"))
    target = {}
    for r in rows:
        target[r["length"]] = max(target.get(r["length"], 0), r.get("target_kv_bytes") or 0)
    lengths = sorted(n for n, b in target.items() if b)
    if lengths:
        fig.add_trace(go.Scatter(
            x=lengths, y=[target[n] / MIB for n in lengths], mode="lines+markers", name="target's KV (reference)",
            meta="target", line={"color": TARGET_COLOR, "width": 2, "dash": "dash"}, marker={"size": 6},
            hovertemplate="target's KV cache at %{x:,} prompt tokens: %{y:.1f} MiB<extra></extra>"))
    _lengths_axis(fig, rows)
    fig.update_yaxes(type="log", dtick=1, title={"text": "KV cache (MiB, log scale)", "standoff": 4})
    _layout(fig, "Drafter memory against context length<br><span style='font-size:12px'>LongSpec's ring is fixed "
                 "by its window; a normal drafter keeps keys and values for every position</span>")
    return fig


def acceptance_figure(rows: Sequence) -> go.Figure:
    """Left: α (accepted / drafted) against the context length, one line per drafter; right: the speed-up over the
    target alone at the same length (decode tokens/s), with parity (1×) dashed."""
    rows = _dicts(rows)
    groups = _by_drafter(rows)
    if not groups:
        return empty_figure(EMPTY_TEXT, EMPTY_HEIGHT, wrap=70)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=["α: accepted / drafted", "speed-up over the target alone (decode tokens/s)"])
    for key, col in (("alpha", 1), ("speedup", 2)):
        for k, (name, rs) in enumerate(groups.items()):
            custom = [[num(r.get("tau"), 2), num(r.get("tokens_per_second"), 1),
                       num(r.get("target_tokens_per_second"), 1), "yes" if r.get("identical_to_target") else "NO"]
                      for r in rs]
            value = "α = %{y:.3f}" if key == "alpha" else "%{y:.2f}×"
            fig.add_trace(go.Scatter(
                x=[r["length"] for r in rs], y=[r.get(key) for r in rs], mode="lines+markers", name=name,
                meta=f"{key}:{name}", legendgroup=name, showlegend=col == 1, customdata=custom,
                line={"color": _color(name, k), "width": 3}, marker={"size": 9},
                hovertemplate=f"<b>{name}</b> at %{{x:,}} prompt tokens: {value}<br>τ = %{{customdata[0]}} · "
                              "%{customdata[1]} tokens/s vs %{customdata[2]} alone · identical to the target: "
                              "%{customdata[3]}<extra></extra>"), row=1, col=col)
    lengths = sorted({r["length"] for r in rows})
    span = [lengths[0], lengths[-1]] if len(lengths) > 1 else [lengths[0] * 0.9, lengths[0] * 1.1]
    fig.add_trace(go.Scatter(x=span, y=[1, 1], mode="lines", name="the target alone (1×)", meta="parity",
                             line={"color": TARGET_COLOR, "width": 2, "dash": "dash"},
                             hovertemplate="the target alone: 1×<extra></extra>"), row=1, col=2)
    _lengths_axis(fig, rows)
    fig.update_yaxes(range=[0, 1.05], title={"text": "α", "standoff": 4}, row=1, col=1)
    speeds = [r.get("speedup") or 0 for r in rows]
    fig.update_yaxes(range=[0, max(speeds + [1.0]) * 1.15], title={"text": "× tokens/s", "standoff": 4}, row=1,
                     col=2)
    _layout(fig, "Acceptance and speed against context length")
    return fig


def rows_frame(rows: Sequence) -> pd.DataFrame:
    """One line per (drafter, length): memory, α, τ, tokens/s beside the target alone's, prefill, identity."""
    lines = []
    for r in _dicts(rows):
        kv = r.get("drafter_kv_bytes")
        lines.append({"drafter": r["drafter"], "prompt tokens": r["length"],
                      "drafter KV (MiB)": MISSING if kv is None else round(kv / MIB, 3),
                      "target KV (MiB)": round((r.get("target_kv_bytes") or 0) / MIB, 2),
                      "α": num(r.get("alpha")), "τ": num(r.get("tau"), 2),
                      "tokens/s": num(r.get("tokens_per_second"), 1),
                      "target-only tokens/s": num(r.get("target_tokens_per_second"), 1),
                      "speed-up": num(r.get("speedup"), 2), "prefill s": num(r.get("prefill_s"), 2),
                      "identical": "yes" if r.get("identical_to_target") else "no"})
    return pd.DataFrame(lines, columns=TABLE_COLUMNS)
