"""The "Draft heads" view: per-head accuracy against draft depth (Medusa vs Hydra), which head proposed each node of a
round and what it read, and where a round's time goes.

Inputs are plain dicts (the held-out evaluation the heads trainer stores in a checkpoint's meta) and step records;
nothing here touches a model.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.specdec.records import StepRecord, TreeStepRecord
from visualizers.format import empty_figure, esc, num

HEIGHT, EMPTY_HEIGHT = 360, 240
ARCH_COLORS = {"medusa": "#1a73e8", "hydra": "#d93025", "hydra++": "#8e24aa", "falcon": "#1e8e3e"}
DECISION_COLORS = {"accepted": "#1e8e3e", "rejected": "#d93025", "skipped": "#9aa0a6", "unreached": "#c7cbd1",
                   "unverified": "#c7cbd1"}


def head_accuracy_figure(results: dict[str, dict]) -> go.Figure:
    """Held-out top-1 and top-5 accuracy of each head against its depth (head k proposes the token k + 2 ahead of
    the hidden state), one line per head architecture. ``results``: name → the trainer's ``val`` dict (Falcon: the
    two positions of a block as depths 1 and 2, top-1 only)."""
    results = {name: r for name, r in results.items() if r and r.get("top1")}
    if not results:
        return empty_figure("No trained heads yet: python -m core.train.heads --arch medusa (and --arch hydra)",
                            EMPTY_HEIGHT)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("top-1 accuracy", "top-5 accuracy"))
    for name, r in results.items():
        depths = [k + 1 for k in range(len(r["top1"]))]
        for col, key in ((1, "top1"), (2, "top5")):
            if not r.get(key):
                continue
            fig.add_trace(go.Scatter(
                x=depths, y=r[key], mode="lines+markers", meta=name,
                name=f"{name} (chain τ {num(r.get('chain_tau'), 2)})",
                legendgroup=name, showlegend=col == 1, line={"color": ARCH_COLORS.get(name, "#3c4a5c")},
                hovertemplate=f"{esc(name)} head %{{x}}<br>{key} %{{y:.3f}}<extra></extra>"), row=1, col=col)
    fig.update_xaxes(title_text="head = draft depth (tokens past the target's own)", dtick=1)
    fig.update_yaxes(range=[0, 1])
    fig.update_layout(height=HEIGHT, margin={"l": 50, "r": 20, "t": 50, "b": 50},
                      legend={"orientation": "h", "y": -0.3})
    return fig


READS = {"medusa": "h<sub>t</sub>", "hydra": "h<sub>t</sub> + ", "hydra++": "g<sub>t</sub> (prefix layer) + ",
         "falcon": "f, f̂ + "}


def head_round_html(record: StepRecord | TreeStepRecord | None, committed_before: str = "",
                    arch: str = "medusa") -> str:
    """One round as a table: each drafted token (chain) or node (tree), the head (depth) that proposed it, what it
    read (Medusa: h_t only; Hydra: h_t and the branch's tokens; Hydra++: its prefix layer's output and the branch;
    Falcon: the target's states, then its own predicted features, with the branch) and its q and p and the
    target's decision. ``committed_before``: the text of the last committed token, x_{t+1}, every branch's start."""
    if record is None:
        return "<div class='heads-round'>Run the heads to see a round.</div>"
    rows = _rows(record)
    x_next = esc(repr(committed_before)) if committed_before else "x<sub>t+1</sub>"
    out = ["<div class='heads-round'><table><tr><th>node</th><th>head</th><th>token</th><th>read</th>"
           "<th>q</th><th>p</th><th>decision</th></tr>"]
    for index, depth, text, branch, q, p, decision in rows:
        reads = READS.get(arch, READS["medusa"])
        if arch != "medusa":
            reads += " ".join([x_next, *[esc(repr(t)) for t in branch]])
        color = DECISION_COLORS.get(decision, "#3c4a5c")
        out.append(f"<tr><td>{index}</td><td>{depth}</td><td><code>{esc(repr(text))}</code></td><td>{reads}</td>"
                   f"<td>{num(q)}</td><td>{num(p)}</td><td style='color:{color}'>{esc(decision)}</td></tr>")
    out.append("</table></div>")
    return "".join(out)


def _rows(record) -> list[tuple]:
    """(node, head index, text, texts of its ancestors, q, p, decision) per drafted token or tree node."""
    if isinstance(record, TreeStepRecord):
        by_index = {n.index: n for n in record.nodes}
        rows = []
        for n in record.nodes:
            branch, parent = [], n.parent
            while parent >= 0:
                branch.append(by_index[parent].text)
                parent = by_index[parent].parent
            rows.append((n.index, n.depth, n.text, branch[::-1], n.q, n.p, n.decision))
        return rows
    return [(i, i, d.text, [e.text for e in record.drafted[:i]], d.q, d.p, d.decision)
            for i, d in enumerate(record.drafted)]


def time_split_figure(records: list) -> go.Figure:
    """Per round: the heads' drafting time, the target's verification forward (which also gives the next h_t) and
    the rest (verifying, recording), stacked, in ms."""
    records = [r for r in records if r is not None]
    if not records:
        return empty_figure("Run the heads to see where the time goes", EMPTY_HEIGHT)
    steps = [r.step for r in records]
    draft = [r.draft_ms for r in records]
    verify = [r.verify_ms for r in records]
    other = [max(0.0, r.total_ms - r.draft_ms - r.verify_ms - r.prefill_ms) for r in records]
    fig = go.Figure()
    for name, ys, color in (("heads (drafting)", draft, "#e8710a"), ("target forward + verification", verify,
                                                                      "#1a73e8"), ("other", other, "#9aa0a6")):
        fig.add_trace(go.Bar(x=steps, y=ys, name=name, meta=name.split(" ")[0], marker_color=color,
                             hovertemplate=f"round %{{x}}<br>{name}: %{{y:.2f}} ms<extra></extra>"))
    total = sum(draft) + sum(verify) + sum(other)
    share = 100 * sum(draft) / total if total else 0.0
    fig.update_layout(barmode="stack", height=HEIGHT, xaxis_title="round", yaxis_title="ms",
                      title=f"time per round: the heads take {share:.1f} % of it",
                      margin={"l": 50, "r": 20, "t": 50, "b": 50}, legend={"orientation": "h", "y": -0.25})
    return fig
