"""Draft trees: the tree of one round as a graph, its attention mask, acceptance against the optimum α*, tree vs
chain, and short HTML summaries.

Input is ``TreeStepRecord``s (and ``Stats.summary()`` dicts); nothing here touches a model. The graph is laid out
left to right by depth: a virtual root (the last committed token), the drafted nodes, and the target's own token
(bonus or resample) hanging off the end of the accepted path.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import networkx as nx
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.specdec.records import TreeNode, TreeStepRecord
from core.specdec.trees.tree import ancestor_matrix
from visualizers.format import MISSING, count as _count, empty_figure, esc as _esc, num as _num

ROOT = "root"
EMITTED = "emitted"
LABEL_CHARS = 14
EMPTY_ROUND = "Step or Run to see a draft tree"

# The token strip's palette: (background, border, font) per node kind.
NODE_STYLE = {
    "accepted": ("#d3f2d8", "#1e8e3e", "#0b5d1e"),
    "rejected": ("#fbd5d5", "#d93025", "#a01919"),
    "skipped": ("#ffffff", "#9aa0a6", "#5f6368"),
    "unreached": ("#f5f6f7", "#dadce0", "#a8adb3"),
    "resampled": ("#ffe0b8", "#e8710a", "#8a4b00"),
    "bonus": ("#d4e4ff", "#1a73e8", "#123f8c"),
    ROOT: ("#3c4a5c", "#3c4a5c", "#ffffff"),
}
EDGE_COLOR = {"accepted": "#1e8e3e", "rejected": "#ee9a93", "skipped": "#b9bec5", "unreached": "#e3e6ea",
              "resampled": "#e8710a", "bonus": "#1a73e8"}
DECISIONS = ("accepted", "rejected", "skipped", "unreached")
ROW_PX, SMALL_ROW_PX, SMALL_FROM = 30, 20, 40  # px per leaf row; smaller rows (and font) from 40 leaves on
MIN_HEIGHT, MAX_HEIGHT, MAX_TREE_HEIGHT = 320, 1800, 4000

# Mask cell values: blocked, ancestor-or-self, ancestor-or-self on an accepted-path row, the committed prefix.
BLOCKED, ALLOWED, ON_PATH, PREFIX = 0, 1, 2, 3
MASK_COLORS = ("#f1f3f4", "#3c4a5c", "#1e8e3e", "#9aa9bc")
MASK_HOVER_MAX = 64  # per-cell hover text up to this many nodes (N² strings beyond that)

SERIES_COLORS = {"achieved": "#d93025", "exact_rsd": "#e8710a", "exact_rrs": "#f6b26b",
                 "alpha_star_without": "#1e8e3e", "alpha_star_with": "#1a73e8", "single_draft": "#9aa0a6"}


# ------------------------------------------------------------------------------------------------ tree graph
@dataclass
class _Layout:
    graph: nx.DiGraph  # node keys: ROOT, the node indices, EMITTED
    pos: dict  # key → (x, y): x = depth + 1 (root 0), y = leaf slot (top to bottom)
    leaves: int


def tree_figure(record: TreeStepRecord | None) -> go.Figure:
    """The round's draft tree: token boxes coloured by decision, edge width ∝ q, the accepted path in green and the
    target's own token as a diamond-edged box after it. Hover a node for p, q, path q, min(1, r/q) and U."""
    if record is None:
        return _empty_figure(EMPTY_ROUND)
    layout = _layout(record)
    fig = go.Figure()
    _add_edges(fig, record, layout)
    _add_nodes(fig, record, layout, font_size=12 if layout.leaves < SMALL_FROM else 10)
    depth = max((x for x, _ in layout.pos.values()), default=0)
    row_px = ROW_PX if layout.leaves < SMALL_FROM else SMALL_ROW_PX
    height = int(min(MAX_TREE_HEIGHT, max(MIN_HEIGHT, row_px * layout.leaves + 130)))
    ticks = ["committed"] + [f"depth {d}" for d in range(1, int(depth) + 1)]
    fig.update_layout(
        height=height, template="plotly_white", showlegend=False, margin={"l": 20, "r": 20, "t": 90, "b": 20},
        title={"text": _tree_title(record), "x": 0, "xanchor": "left", "font": {"size": 14}},
        hoverlabel={"font": {"family": "ui-monospace, monospace", "size": 12}},
        xaxis={"range": [-0.6, depth + 0.6], "tickvals": list(range(len(ticks))), "ticktext": ticks, "side": "top",
               "showgrid": False, "zeroline": False, "fixedrange": True},
        yaxis={"range": [layout.leaves - 0.4, -0.6], "visible": False, "fixedrange": True})
    return fig


def _layout(record: TreeStepRecord) -> _Layout:
    """A tidy layered layout: leaves take consecutive rows in drafting order, a parent sits midway between its first
    and last child. The emitted token is one more child of the last accepted node."""
    graph = nx.DiGraph()
    graph.add_node(ROOT)
    for node in record.nodes:
        graph.add_edge(ROOT if node.parent < 0 else node.parent, node.index)
    if record.emitted is not None:
        graph.add_edge(record.path[-1] if record.path else ROOT, EMITTED)
    pos: dict = {}
    row = 0

    def place(key, x: int) -> float:
        nonlocal row
        kids = list(graph.successors(key))  # insertion order: drafting order, the emitted token last
        if not kids:
            y, row = row, row + 1
        else:
            ys = [place(kid, x + 1) for kid in kids]
            y = (ys[0] + ys[-1]) / 2
        pos[key] = (x, y)
        return y

    place(ROOT, 0)
    return _Layout(graph, pos, max(row, 1))


def _add_edges(fig: go.Figure, record: TreeStepRecord, layout: _Layout) -> None:
    """One line trace per (colour, width): edges into a node take its decision's colour and a width ∝ q."""
    by_index = {n.index: n for n in record.nodes}
    groups: dict[tuple[str, float, str], tuple[list, list]] = {}
    for parent, child in layout.graph.edges():
        if child == EMITTED:
            kind, width, dash = record.emitted.kind, 2.5, "dot"
        else:
            node = by_index[child]
            kind, dash = node.decision, "solid"
            width = 1.0 + 7.0 * (node.q if node.q is not None else 0.1)
            if kind == "accepted":
                width = max(width, 3.5)
        key = (EDGE_COLOR.get(kind, "#b9bec5"), round(width * 2) / 2, dash)
        xs, ys = groups.setdefault(key, ([], []))
        (x0, y0), (x1, y1) = layout.pos[parent], layout.pos[child]
        xs += [x0, x1, None]
        ys += [y0, y1, None]
    # thin edges first so the highlighted path stays on top
    for (color, width, dash), (xs, ys) in sorted(groups.items(), key=lambda kv: (kv[0][0] == EDGE_COLOR["accepted"],
                                                                                 kv[0][1])):
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="edge", hoverinfo="skip",
                                 line={"color": color, "width": width, "dash": dash}))


def _add_nodes(fig: go.Figure, record: TreeStepRecord, layout: _Layout, font_size: int = 12) -> None:
    """Token boxes as annotations, plus one invisible hover marker trace per kind (named after the kind)."""
    points: dict[str, tuple[list, list, list, list]] = {}
    boxes = []  # set in one go: adding annotations one by one copies the list each time (slow for 200 nodes)

    def add(kind: str, key, label: str, hover: str, border_width: int = 1) -> None:
        x, y = layout.pos[key]
        bg, border, font = NODE_STYLE[kind]
        boxes.append({"x": x, "y": y, "text": label, "showarrow": False, "bgcolor": bg, "bordercolor": border,
                      "borderwidth": border_width, "borderpad": 3,
                      "font": {"color": font, "size": font_size, "family": "ui-monospace, monospace"}})
        xs, ys, texts, ids = points.setdefault(kind, ([], [], [], []))
        xs.append(x)
        ys.append(y)
        texts.append(hover)
        ids.append(key if isinstance(key, int) else -1)

    add(ROOT, ROOT, "▶", "the last committed token: every node attends to the whole prefix", 1)
    for node in record.nodes:
        add(node.decision, node.index, _esc(_visible(node.text, LABEL_CHARS)), _node_hover(node),
            2 if node.decision in ("accepted", "rejected") else 1)
    if record.emitted is not None:
        e = record.emitted
        why = "the path has no more children: a bonus" if e.kind == "bonus" else "every child was rejected"
        hover = (f"<b>target: {e.kind}</b> {_esc(repr(e.text))} (id {e.id})<br>p = {_num(e.p)} · rank in p {e.rank_p}"
                 f"<br>{why}")
        add(e.kind, EMITTED, f"◆ {_esc(_visible(e.text, LABEL_CHARS))}", hover, 2)
    for kind, (xs, ys, texts, ids) in points.items():
        name = EMITTED if kind in ("bonus", "resampled") else kind
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=name, customdata=ids, hovertext=texts,
                                 hoverinfo="text", marker={"size": 22, "opacity": 0, "color": NODE_STYLE[kind][1]}))
    fig.update_layout(annotations=boxes)


def _node_hover(node: TreeNode) -> str:
    lines = [f"<b>node {node.index}</b> {_esc(repr(node.text))} (id {node.id})",
             f"depth {node.depth + 1} · parent {'▶' if node.parent < 0 else node.parent} · {node.decision}",
             f"p = {_num(node.p)} · q = {_num(node.q)} · path q = {_num(node.path_q)}"]
    if node.accept_prob is not None or node.u is not None:
        lines.append(f"min(1, r/q) = {_num(node.accept_prob)} · U = {_num(node.u)}")
    elif node.tried:
        lines.append("compared with the target's argmax (greedy)")
    return "<br>".join(lines)


def _tree_title(record: TreeStepRecord) -> str:
    e = record.emitted
    target = f" + {e.kind} {_esc(repr(e.text))}" if e is not None else ""
    head = (f"round {record.step} · {record.shape} ({record.children_mode} children, {record.verifier}) · "
            f"{len(record.nodes)} nodes · accepted depth {record.accepted}{target}")
    keys = " ".join(f"<span style='color:{NODE_STYLE[k][1]}'>■</span> {k}" for k in (*DECISIONS, "resampled", "bonus"))
    return f"{head}<br><span style='font-size:12px'>{keys} · edge width ∝ q</span>"


# ------------------------------------------------------------------------------------------------ mask
def tree_mask_figure(record: TreeStepRecord | None) -> go.Figure:
    """The tree attention mask: a narrow band "all committed tokens" (every node sees the prefix), then nodes ×
    nodes, dark where node i (row) may attend to node j (column); rows of the accepted path in green."""
    if record is None:
        return _empty_figure(EMPTY_ROUND)
    n = len(record.nodes)
    if n == 0:
        return _empty_figure("No draft tree this round (the token budget left room for the target's token only)")
    z_NN = ancestor_matrix([node.parent for node in record.nodes]).numpy().astype(int)
    for i in record.path:
        z_NN[i][z_NN[i] > 0] = ON_PATH
    labels = [f"{node.index} {_esc(_visible(node.text, 10))}" for node in record.nodes]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.05, 0.95], horizontal_spacing=0.01)
    common = {"colorscale": _stepped(MASK_COLORS), "zmin": 0, "zmax": PREFIX, "showscale": False, "xgap": 1,
              "ygap": 1}
    fig.add_trace(go.Heatmap(z=[[PREFIX] for _ in range(n)], x=["prefix"], y=labels, name="prefix",
                             hovertemplate="%{y} attends to every committed token<extra></extra>", **common),
                  row=1, col=1)
    hover = None
    if n <= MASK_HOVER_MAX:
        hover = [[f"{labels[i]} → {labels[j]}: {'allowed' if z_NN[i, j] else 'blocked'}" for j in range(n)]
                 for i in range(n)]
    fig.add_trace(go.Heatmap(z=z_NN.tolist(), x=labels, y=labels, name="tree mask", text=hover,
                             hovertemplate="%{text}<extra></extra>" if hover else "%{y} → %{x}<extra></extra>",
                             **common), row=1, col=2)
    height = int(min(MAX_HEIGHT, max(MIN_HEIGHT, 16 * n + 190)))
    keys = (f"<span style='color:{MASK_COLORS[ALLOWED]}'>■</span> ancestor or self · "
            f"<span style='color:{MASK_COLORS[ON_PATH]}'>■</span> accepted path · "
            f"<span style='color:{MASK_COLORS[PREFIX]}'>■</span> committed prefix · "
            f"<span style='color:#c5c9ce'>■</span> blocked")
    fig.update_layout(
        height=height, template="plotly_white", margin={"l": 20, "r": 20, "t": 70, "b": 110}, font={"size": 11},
        title={"text": f"tree attention mask · {n} nodes (row attends to column)<br>"
                       f"<span style='font-size:12px'>{keys}</span>", "x": 0, "xanchor": "left",
               "font": {"size": 14}})
    fig.update_yaxes(autorange="reversed", tickfont={"family": "ui-monospace, monospace"}, type="category")
    fig.update_xaxes(tickangle=-60, tickfont={"family": "ui-monospace, monospace"}, type="category")
    return fig


def _stepped(colors: tuple[str, ...]) -> list:
    """A colorscale of flat bands, one colour per integer value 0..len(colors) - 1 (with zmin 0, zmax len - 1)."""
    n = len(colors)
    out = []
    for k, color in enumerate(colors):
        out += [[k / n, color], [(k + 1) / n, color]]
    return out


# ------------------------------------------------------------------------------------------------ α*
SERIES = (  # (key, legend name): the per-group fields averaged per round
    ("exact_rsd", "exact RSD acceptance (without replacement)"),
    ("exact_rrs", "exact RRS acceptance (i.i.d.)"),
    ("alpha_star_without", "α* (drafts without replacement)"),
    ("alpha_star_with", "α* (i.i.d. drafts)"),
    ("single_draft", "one draft: Σ min(p, q)"),
)


def alpha_star_figure(records: list[TreeStepRecord]) -> go.Figure:
    """Per round, the mean over its sibling groups of the optimal multi-draft acceptance α*, the exact acceptance of
    RRS / RSD, one draft's Σ min(p, q), and the realised acceptance (groups where a child was accepted)."""
    records = [r for r in records or [] if r is not None]
    if not records:
        return _empty_figure("Step or Run to compare acceptance with α*")
    per_round = [(r.step, [g for g in r.groups if g.alpha_star_with is not None or g.alpha_star_without is not None])
                 for r in records]
    per_round = [(step, groups) for step, groups in per_round if groups]
    if not per_round:
        return _empty_figure("α* (optimal multi-draft acceptance) applies to sampled verifiers: choose rrs or rsd at "
                             f"a temperature above 0 (this run: {records[-1].verifier}, temperature "
                             f"{(records[-1].settings or {}).get('temperature', MISSING)})")
    verifier = records[-1].verifier
    own = {"rrs": "exact_rrs", "rsd": "exact_rsd"}.get(verifier)
    rounds = [step for step, _ in per_round]
    counts = [len(groups) for _, groups in per_round]
    fig = go.Figure()
    for key, name in SERIES:
        ys = [_mean(getattr(g, key) for g in groups) for _, groups in per_round]
        if all(y is None for y in ys):
            continue
        mine = key == own
        fig.add_trace(go.Scatter(
            x=rounds, y=ys, name=name + (" ← this verifier" if mine else ""), mode="lines+markers", meta=key,
            line={"color": SERIES_COLORS[key], "width": 3 if mine else 1.5,
                  "dash": "solid" if mine or key.startswith("alpha") else "dot"},
            customdata=counts, hovertemplate=f"round %{{x}}<br>{name}: %{{y:.3f}}<br>mean of %{{customdata}} "
                                             "sibling groups<extra></extra>"))
    achieved = [sum(g.accepted_child is not None for g in groups) / len(groups) for _, groups in per_round]
    fig.add_trace(go.Scatter(
        x=rounds, y=achieved, name="achieved (groups with an accepted child)", mode="markers", meta="achieved",
        marker={"color": SERIES_COLORS["achieved"], "size": 9, "symbol": "x"}, customdata=counts,
        hovertemplate="round %{x}<br>achieved: %{y:.2f} of %{customdata} sibling groups<extra></extra>"))
    all_groups = [g for _, groups in per_round for g in groups]
    star_key = "alpha_star_without" if verifier == "rsd" else "alpha_star_with"
    overall = (f"over {len(all_groups)} sibling groups: achieved "
               f"{_num(_mean(g.accepted_child is not None for g in all_groups), 2)}, "
               f"exact {_num(_mean(getattr(g, own) for g in all_groups) if own else None, 2)}, "
               f"α* {_num(_mean(getattr(g, star_key) for g in all_groups), 2)}")
    fig.update_layout(
        height=470, template="plotly_white", margin={"l": 60, "r": 20, "t": 70, "b": 40}, font={"size": 12},
        title={"text": f"acceptance per sibling group vs the optimum α* ({verifier})<br>"
                       f"<span style='font-size:12px'>{overall} · p, q truncated to their top tokens</span>",
               "x": 0, "xanchor": "left", "font": {"size": 14}},
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.2, "yanchor": "top", "font": {"size": 11}},
        xaxis={"title": {"text": "round", "standoff": 4}, **({"dtick": 1} if len(rounds) <= 20 else {})},
        yaxis={"title": "acceptance probability", "range": [0, 1.05]})
    return fig


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


# ------------------------------------------------------------------------------------------------ tree vs chain
def tree_vs_chain_figure(tree_stats: dict, chain_stats: dict | None, tree_label: str = "tree",
                         chain_label: str = "chain") -> go.Figure:
    """τ and tokens/s of the tree run beside a chain run with the same node budget (both ``Stats.summary()``)."""
    if not (tree_stats or {}).get("rounds"):
        return _empty_figure("Step or Run to compare the tree with a chain")
    runs = [(tree_label, tree_stats, "#1e8e3e")]
    if chain_stats and chain_stats.get("rounds"):
        runs.append((chain_label, chain_stats, "#3c4a5c"))
    fig = make_subplots(rows=1, cols=2, subplot_titles=["τ: tokens per target call", "tokens / s (this machine)"],
                        horizontal_spacing=0.14)
    for col, key, digits in ((1, "tau", 2), (2, "tokens_per_second", 1)):
        values = [s.get(key) or 0.0 for _, s, _ in runs]
        fig.add_trace(go.Bar(
            x=[label for label, _, _ in runs], y=values, marker_color=[c for _, _, c in runs], showlegend=False,
            name=key, text=[f"{v:.{digits}f}" for v in values], textposition="outside", cliponaxis=False,
            customdata=[[s.get("rounds"), s.get("generated"), _num(s.get("mean_draft_len"), 1), _num(s.get("alpha"))]
                        for _, s, _ in runs],
            hovertemplate=("%{x}: %{y:." + str(digits) + "f}<br>%{customdata[0]} rounds, %{customdata[1]} tokens<br>"
                           "%{customdata[2]} drafted tokens a round, α = %{customdata[3]}<extra></extra>")),
            row=1, col=col)
        fig.update_yaxes(range=[0, max(values + [1e-9]) * 1.25], row=1, col=col)
    note = "" if len(runs) > 1 else "chain comparison off (tick it to run a chain of the same node budget)"
    if note:
        fig.add_annotation(text=note, x=0.5, y=-0.18, xref="paper", yref="paper", showarrow=False,
                           font={"size": 12, "color": "#80868b"})
    fig.update_layout(height=300, template="plotly_white", font={"size": 12}, bargap=0.4,
                      margin={"l": 50, "r": 20, "t": 50, "b": 60 if note else 30})
    return fig


# ------------------------------------------------------------------------------------------------ HTML
_STYLE = """<style>
.ds-tree { font-size: 14px; line-height: 1.6; }
.ds-tree .strip { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre-wrap;
  word-break: break-word; line-height: 1.9; }
.ds-tree .tok { border-radius: 3px; padding: 0 1px; margin-right: 1px; }
.ds-tree .accepted { background: #d3f2d8; color: #0b5d1e; }
.ds-tree .resampled { background: #ffe0b8; color: #8a4b00; }
.ds-tree .bonus { background: #d4e4ff; color: #123f8c; }
.ds-tree .round-sep { border-left: 2px solid #9aa0a6; margin-left: 4px; padding-left: 2px; color: #80868b;
  font-size: 0.65em; vertical-align: super; }
.ds-tree .prompt, .ds-tree .muted { color: #80868b; }
.ds-tree table { border-collapse: collapse; }
.ds-tree th { text-align: left; font-weight: normal; color: #80868b; padding: 1px 12px 1px 0; }
.ds-tree td { font-family: ui-monospace, monospace; padding: 1px 0; }
</style>"""
PROMPT_CHARS = 160


def tree_text_html(records: list[TreeStepRecord], prompt_text: str | None = None) -> str:
    """The committed text, token by token: accepted path tokens in green, then the target's token (orange when
    resampled, blue when a bonus); a small number opens each round."""
    parts = []
    if prompt_text:
        shown = prompt_text if len(prompt_text) <= PROMPT_CHARS else "…" + prompt_text[-PROMPT_CHARS:]
        parts.append(f'<span class="prompt" title="{_attr(prompt_text)}">{_esc(shown)}</span>')
    for record in records or []:
        nodes = {n.index: n for n in record.nodes}
        title = (f"round {record.step}: {len(record.nodes)} nodes, accepted depth {record.accepted}, "
                 f"committed {len(record.committed_ids)}")
        parts.append(f'<span class="round-sep" title="{_attr(title)}">{record.step}</span>')
        tokens = [("accepted", nodes[i].text, f"node {i}: p={_num(nodes[i].p)} q={_num(nodes[i].q)}")
                  for i in record.path]
        if record.emitted is not None:
            e = record.emitted
            tokens.append((e.kind, e.text, f"target {e.kind}: p={_num(e.p)}, rank {e.rank_p}"))
        for kind, text, hover in tokens[: len(record.committed_ids)]:
            parts.append(f'<span class="tok {kind}" title="{_attr(hover)}">{_esc(text) or "∅"}</span>')
    if records and records[-1].finished:
        parts.append(f'<span class="muted"> ■ finished: {_esc(records[-1].finish_reason or "done")}</span>')
    if not records:
        parts.append('<span class="muted">No tokens yet: press Step or Run.</span>')
    return f'<div class="ds-tree">{_STYLE}<div class="strip">{"".join(parts)}</div></div>'


def tree_summary_html(record: TreeStepRecord | None, stats_summary: dict) -> str:
    """Round, shape, nodes, accepted depth, committed text, τ so far, and this round's mean α* vs achieved."""
    s = stats_summary or {}
    if record is None:
        return f'<div class="ds-tree">{_STYLE}<span class="muted">No round yet: press Step or Run.</span></div>'
    groups = [g for g in record.groups if g.alpha_star_with is not None or g.alpha_star_without is not None]
    star_key = "alpha_star_without" if record.verifier == "rsd" else "alpha_star_with"
    if groups:
        star = (f"α* {_num(_mean(getattr(g, star_key) for g in groups), 2)} vs achieved "
                f"{sum(g.accepted_child is not None for g in groups)}/{len(groups)} sibling groups")
    else:
        star = "— (α* applies to rrs / rsd at temperature > 0)"
    e = record.emitted
    depth = max((n.depth + 1 for n in record.nodes), default=0)
    rows = [
        ("round", f"{record.step} · {record.verifier} verifier, {record.children_mode} children"),
        ("tree", f"{record.shape} · {len(record.nodes)} nodes, depth {depth}"),
        ("accepted depth", f"{record.accepted}" + (f" + {e.kind} token" if e is not None else "")),
        ("committed", repr(record.committed_text)),
        ("τ so far", f"{_num(s.get('tau'), 2)} tokens per target call over {_count(s.get('rounds') or 0, 'round')}"),
        ("mean α* (this round)", star),
        ("time", f"draft {record.draft_ms:.1f} ms · verify {record.verify_ms:.1f} ms"),
    ]
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f'<div class="ds-tree">{_STYLE}<table>{body}</table></div>'


# ------------------------------------------------------------------------------------------------ helpers
def _empty_figure(text: str) -> go.Figure:
    return empty_figure(text, MIN_HEIGHT - 60, 14, wrap=60)  # half-width plots stay readable


_VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\r": "", "\t": "⇥"})


def _visible(text: str, limit: int) -> str:
    """Token text with whitespace made visible (␣ ↵ ⇥), cut to ``limit`` characters; ∅ when empty."""
    shown = (text or "").translate(_VISIBLE) or "∅"
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _attr(text) -> str:
    return html.escape(str(text), quote=True)


__all__ = ["alpha_star_figure", "tree_figure", "tree_mask_figure", "tree_summary_html",
           "tree_text_html", "tree_vs_chain_figure"]
