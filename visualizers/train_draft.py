"""The "Train your draft" view: alignment curves and the loss table of the trained drafters, VocabTrim's coverage
curve, and the cost model that says why a drafter pays or not.

Inputs are plain dicts and lists (a trained drafter's results as ``core.train.fastdraft`` stores them, a coverage
curve from token counts, a ``CostModel``); nothing here touches a model.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from visualizers.format import empty_figure, esc, num

HEIGHT, EMPTY_HEIGHT = 380, 240
GAMMAS = (2, 3, 4, 5, 6)
LOSS_COLORS = {"pretrained": "#9aa0a6", "seqkd": "#1a73e8", "fkl": "#1e8e3e", "tvd": "#e8710a", "tvdpp": "#d93025",
               "tvdpp-vocab": "#8e24aa", "seqkd-176k": "#0b5d1e"}
LOSS_NAMES = {"pretrained": "stage 1 only (pre-trained)", "seqkd": "seqKD (FastDraft)", "fkl": "forward KL",
              "tvd": "TVD", "tvdpp": "TVD++ (Direct Alignment)", "tvdpp-vocab": "TVD++, vocabulary-axis variant",
              "seqkd-176k": "seqKD on 176 k tokens (shipped)"}


def _color(loss: str) -> str:
    return LOSS_COLORS.get(loss, "#3c4a5c")


def alignment_curves_figure(results: dict[str, dict]) -> go.Figure:
    """Held-out greedy agreement α and τ at γ = 4 against alignment tokens seen, one line per loss."""
    curves = {loss: r.get("curve") or [] for loss, r in results.items() if r.get("curve")}
    if not curves:
        return empty_figure("No alignment curves yet: train with --curve N (python -m core.train.fastdraft)",
                            EMPTY_HEIGHT)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("held-out greedy agreement α", "τ at γ = 4 (greedy replay)"))
    for loss, points in curves.items():
        start = results[loss].get("before") or {}
        xs = [0] + [p["tokens_seen"] for p in points]
        for col, key in ((1, "top1_agreement"), (2, "tau_g4")):
            ys = [start.get(key)] + [p.get(key) for p in points]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=LOSS_NAMES.get(loss, loss),
                                     legendgroup=loss, showlegend=col == 1, line={"color": _color(loss)},
                                     hovertemplate=f"{esc(loss)}<br>%{{x:,}} tokens<br>%{{y:.3f}}<extra></extra>"),
                          row=1, col=col)
    fig.update_xaxes(title_text="alignment tokens seen (one pass)")
    fig.update_layout(height=HEIGHT, margin={"l": 50, "r": 20, "t": 50, "b": 50},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def tau_by_gamma_figure(results: dict[str, dict]) -> go.Figure:
    """τ against γ per loss (held-out greedy replay), with the break-even τ of the measured cost model if given."""
    if not results:
        return empty_figure("No trained drafter results", EMPTY_HEIGHT)
    fig = go.Figure()
    for loss, r in results.items():
        after = r.get("after") or {}
        ys = [after.get(f"tau_g{g}") for g in GAMMAS]
        fig.add_trace(go.Scatter(x=list(GAMMAS), y=ys, mode="lines+markers", name=LOSS_NAMES.get(loss, loss),
                                 line={"color": _color(loss)}))
    fig.update_layout(height=HEIGHT, xaxis_title="γ (drafts per round)", yaxis_title="τ (tokens per target call)",
                      margin={"l": 50, "r": 20, "t": 40, "b": 50}, title="τ per loss (held-out greedy replay)")
    return fig


def loss_table_html(results: dict[str, dict], bench: dict[str, dict] | None = None) -> str:
    """α, τ at γ = 2..6, MBSU, drafter ms per token and (from a benchmark) tokens/s and speedup, per loss."""
    if not results:
        return "<p><i>No trained drafter results.</i></p>"
    bench = bench or {}
    head = ["loss", "α (greedy)", "Σmin(p,q)", *[f"τ γ={g}" for g in GAMMAS], "MBSU γ=4", "drafter ms/token",
            "tokens/s", "vs HF greedy"]
    rows = []
    for loss, r in results.items():
        after, b = r.get("after") or {}, bench.get(loss) or {}
        cells = [LOSS_NAMES.get(loss, loss), num(after.get("top1_agreement")), num(after.get("sum_min_pq")),
                 *[num(after.get(f"tau_g{g}")) for g in GAMMAS], num(r.get("mbsu_g4")), num(r.get("drafter_ms")),
                 num(b.get("tokens_per_second")), f"{b['speedup']:.2f}×" if b.get("speedup") else "—"]
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return ('<div class="ds-vis"><table class="ds-stats"><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head)
            + "</tr>" + "".join(rows) + "</table></div>")


def coverage_figure(ks: list[int], coverage: list[float], chosen: int | None, vocab: int) -> go.Figure:
    """Fraction of target-generated tokens inside the top-k, against k, with the chosen k marked."""
    if not ks:
        return empty_figure("No token counts for this target's tokenizer", EMPTY_HEIGHT)
    fig = go.Figure(go.Scatter(x=ks, y=coverage, mode="lines", name="coverage", line={"color": "#1a73e8"},
                               hovertemplate="k = %{x:,}<br>coverage %{y:.4f}<extra></extra>"))
    title = f"VocabTrim coverage of target-generated tokens (vocabulary {vocab:,})"
    if chosen:
        at = next((c for k, c in zip(ks, coverage) if k >= chosen), coverage[-1])
        fig.add_trace(go.Scatter(x=[chosen], y=[at], mode="markers", name=f"k = {chosen:,}",
                                 marker={"size": 11, "color": "#d93025"}))
        title += f" · k = {chosen:,}: {at:.2%} covered, head {chosen / vocab:.1%} of its rows"
    fig.update_layout(height=HEIGHT, title=title, xaxis={"type": "log", "title": "k (kept tokens)"},
                      yaxis={"title": "coverage", "range": [0, 1.01]}, margin={"l": 50, "r": 20, "t": 50, "b": 50})
    return fig


def cost_model_figure(cost: dict | None, taus: dict[int, float] | None = None) -> go.Figure:
    """Per γ: the round's cost split (γ drafter steps + one verification of γ + 1 tokens) in units of one plain
    decoding step, i.e. the break-even τ; the drafter's τ where known, so the gap shows whether it pays."""
    if not cost or not cost.get("verify_ms"):
        return empty_figure("Measure the cost model to see the break-even τ on this machine", EMPTY_HEIGHT)
    verify, draft = cost["verify_ms"], cost["draft_ms"]
    gammas = [g for g in range(1, 7) if g < len(verify)]
    one = verify[0]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=gammas, y=[g * draft / one for g in gammas], name="γ drafter steps",
                         marker_color="#1a73e8"))
    fig.add_trace(go.Bar(x=gammas, y=[verify[g] / one for g in gammas], name="verify γ + 1 tokens",
                         marker_color="#3c4a5c"))
    if taus:
        fig.add_trace(go.Scatter(x=[g for g in gammas if g in taus], y=[taus[g] for g in gammas if g in taus],
                                 mode="lines+markers", name="its τ (held-out replay)", line={"color": "#1e8e3e"}))
    fig.update_layout(barmode="stack", height=HEIGHT, xaxis_title="γ", margin={"l": 50, "r": 20, "t": 50, "b": 50},
                      yaxis_title="plain decoding steps", title=(
                          f"break-even τ = stacked bar (draft {draft:.1f} ms/token, target {one:.1f} ms for one "
                          f"token): it pays where τ is above the bar"))
    return fig


def cost_model_html(cost: dict | None, taus: dict[int, float] | None = None) -> str:
    if not cost or not cost.get("verify_ms"):
        return "<p><i>Not measured yet.</i></p>"
    verify, draft, one = cost["verify_ms"], cost["draft_ms"], cost["verify_ms"][0]
    rows = []
    for g in range(1, min(7, len(verify))):
        be = (g * draft + verify[g]) / one
        tau = (taus or {}).get(g)
        pays = "—" if tau is None else f"{tau / be:.2f}× ({'pays' if tau > be else 'loses'})"
        rows.append(f"<tr><td>{g}</td><td>{verify[g]:.1f}</td><td>{g * draft + verify[g]:.1f}</td>"
                    f"<td>{be:.2f}</td><td>{num(tau)}</td><td>{pays}</td></tr>")
    c = cost.get("cost")
    return ('<div class="ds-vis"><p>drafter <b>' + esc(cost.get("drafter", "")) + f"</b>: {draft:.2f} ms per drafted "
            f"token; target: {one:.2f} ms for one token on a {cost.get('context')}-token prefix"
            + (f"; parameter bytes per token c = {c:.3f} of the target's" if c else "") + "</p>"
            '<table class="ds-stats"><tr><th>γ</th><th>verify γ+1 (ms)</th><th>round (ms)</th>'
            "<th>break-even τ</th><th>τ</th><th>predicted speedup</th></tr>" + "".join(rows) + "</table></div>")
