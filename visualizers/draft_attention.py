"""DraftAttention: one head's full attention map, its pooled low-resolution draft map and the block pairs the draft map
selects, side by side. Input is a ``DraftAttentionMap`` record; nothing here touches a model."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.attention.draft_attention import DraftAttentionMap
from visualizers.format import empty_figure, esc as _esc, num as _num

HEIGHT, EMPTY_HEIGHT = 440, 260
MAP_SCALE = "Blues"
KEPT_COLOR, SKIPPED_COLOR = "#1a73e8", "#e3e6ea"
SELECTED_SCALE = [[0.0, SKIPPED_COLOR], [0.5, SKIPPED_COLOR], [0.5, KEPT_COLOR], [1.0, KEPT_COLOR]]


def draft_attention_figure(record: DraftAttentionMap | None) -> go.Figure:
    """Three heatmaps (full attention, pooled draft map, selected blocks) for one layer / head; None → a placeholder."""
    if record is None:
        return _empty_figure("Run DraftAttention on a prompt to see the draft map and the blocks it selects.")
    cell = record.full_map_cell
    full_title = "full attention" + (f" ({cell}×{cell}-token cells)" if cell > 1 else "")
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07,
                        subplot_titles=[_esc(full_title), _esc(f"draft map ({record.block}-token blocks)"),
                                        _esc("selected blocks (blue: computed)")])
    fig.add_trace(_full_trace(record), row=1, col=1)
    fig.add_trace(_pooled_trace(record), row=1, col=2)
    fig.add_trace(_selected_trace(record), row=1, col=3)
    for col, unit in ((1, "token" if cell == 1 else "cell"), (2, "block"), (3, "block")):
        fig.update_xaxes(title_text=f"key {unit}", row=1, col=col, constrain="domain")
        fig.update_yaxes(title_text=f"query {unit}", row=1, col=col, autorange="reversed",
                         scaleanchor="x" if col == 1 else f"x{col}")
    fig.update_layout(height=HEIGHT, template="plotly_white", font={"size": 12},
                      margin={"l": 60, "r": 20, "t": 100, "b": 60},
                      title={"text": _title(record), "x": 0, "xanchor": "left", "font": {"size": 14}})
    return fig


def _title(record: DraftAttentionMap) -> str:
    head = (f"DraftAttention · layer {record.layer} · head {record.head} · r={_num(record.sparsity, 2)} · "
            f"block {record.block} · {record.n_tokens} tokens")
    model_flop = "" if record.model_flop_sparsity is None else \
        f" (all layers {_num(record.model_flop_sparsity, 3)})"
    detail = (f"head output error {_num(record.output_error)} · FLOP sparsity {_num(record.flop_sparsity)}{model_flop}"
              f" · top-1 agreement {_num(record.top1_agreement)} · KL(last) {_num(record.kl_last)}"
              f" · max |Δlogit| {_num(record.logits_max_abs_diff)}")
    return f"{_esc(head)}<br><sup>{_esc(detail)}</sup>"


def _full_trace(record: DraftAttentionMap) -> go.Heatmap:
    unit = "token" if record.full_map_cell == 1 else "cell"
    return go.Heatmap(z=record.full_map, colorscale=MAP_SCALE, zmin=0, showscale=False, meta="full", name="full",
                      hovertemplate=f"query {unit} %{{y}} · key {unit} %{{x}}<br>p = %{{z:.4f}}<extra></extra>")


def _pooled_trace(record: DraftAttentionMap) -> go.Heatmap:
    return go.Heatmap(z=record.pooled_map, colorscale=MAP_SCALE, zmin=0, showscale=False, meta="pooled",
                      name="pooled",
                      hovertemplate="query block %{y} · key block %{x}<br>draft p = %{z:.4f}<extra></extra>")


def _selected_trace(record: DraftAttentionMap) -> go.Heatmap:
    """1 = computed, 0 = skipped, gap = not allowed (causal: key block after query block)."""
    z, text = [], []
    for i, row in enumerate(record.keep):
        z.append([None if record.causal and j > i else int(kept) for j, kept in enumerate(row)])
        text.append(["" if cell is None else "computed" if cell else "skipped" for cell in z[-1]])
    return go.Heatmap(z=z, text=text, colorscale=SELECTED_SCALE, zmin=0, zmax=1, showscale=False, meta="selected",
                      name="selected", xgap=1, ygap=1,
                      hovertemplate="query block %{y} · key block %{x}<br>%{text}<extra></extra>")


def _empty_figure(text: str) -> go.Figure:
    return empty_figure(text, EMPTY_HEIGHT, 16)
