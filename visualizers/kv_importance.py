"""KV importance: how KV-cache methods (SnapKV, StreamingLLM, H2O, TOVA, SpecKV, SpecPC) score and keep prompt tokens
against the target's true importance (the attention its full-cache output paid each prompt token).

Pure functions, a ``KVReport`` / ``PressRun`` in, a plotly figure or an HTML string out: the prompt shaded by
importance with evicted tokens struck through, the layer × KV-head kept fraction of the true top-budget positions,
one head's scores over the prompt, each method's per-layer correlation with the truth, accuracy / agreement / recall
against the budget, every method's output next to the full-cache one, and for the travel task which of the traveller's
requirements each compressed cache kept and gave back. Nothing here touches a model; every
function accepts None (or an empty report) and then explains what to do instead.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.kv.records import KVReport, PressRun
from visualizers.format import MISSING, count as _count, empty_figure, esc as _esc, num as _num

EMPTY_HEIGHT, HEAD_HEIGHT, CORRELATION_HEIGHT, BUDGET_HEIGHT = 260, 380, 400, 380
CONSTRAINT_ROW_PX, CONSTRAINT_MIN_HEIGHT = 34, 300
GRID_ROW_PX, GRID_MIN_HEIGHT, GRID_MAX_HEIGHT = 18, 320, 720
DRAFT_GUIDED = ("speckv", "specpc")  # the methods whose scores come from a draft model (emphasised)
METHOD_COLORS = {"full": "#3c4a5c", "snapkv": "#1a73e8", "streamingllm": "#9aa0a6", "h2o": "#a142f4",
                 "tova": "#12b5cb", "speckv": "#e8710a", "specpc": "#d93025"}
TRUE_COLOR, SCORE_RGB, TRUE_RGB = "#3c4a5c", (26, 115, 232), (232, 113, 10)
KEPT_COLOR, TOP_COLOR = "#1e8e3e", "#3c4a5c"
SHOW_MODES = ("method", "true", "both")
MAX_OUTPUT_CHARS = 400  # an output token's text is cut beyond this in the outputs table (never in practice)


# ------------------------------------------------------------------------------------------------ helpers
def method_color(method: str) -> str:
    """The colour a method has in every chart (grey for an unknown one)."""
    return METHOD_COLORS.get(method, "#5f6368")


def find_run(report: KVReport | None, method: str | PressRun | None, budget: int | None = None) -> PressRun | None:
    """The run of ``method`` in ``report`` (at ``budget`` when given, else its first budget); a PressRun is returned
    as it is, "full" is the full-cache reference, None or an absent method gives None."""
    if isinstance(method, PressRun):
        return method
    if report is None or not method:
        return None
    if method == "full":
        return report.full
    for run in report.runs:
        if run.method == method and (budget is None or run.budget == budget):
            return run
    return None


def _attr(text) -> str:
    """Escape for an HTML attribute (quotes too)."""
    return html.escape(str(text), quote=True)


def _empty_figure(text: str, height: int = EMPTY_HEIGHT) -> go.Figure:
    return empty_figure(text, height)


def _empty_html(text: str) -> str:
    return f'<div class="kv-vis">{_STYLE}<p class="kv-empty">{_esc(text)}</p></div>'


def _layout(fig: go.Figure, title: str, height: int, **kwargs) -> go.Figure:
    fig.update_layout(height=height, template="plotly_white", font={"size": 12},
                      title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 14}},
                      hoverlabel={"font": {"family": "ui-monospace, monospace", "size": 12}}, **kwargs)
    return fig


def _short(text: str, limit: int = 24) -> str:
    """Token text for hover labels: newlines visible, long pieces cut."""
    text = str(text).replace("\n", "↵").replace("\t", "⇥")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _label(run: PressRun) -> str:
    return f"{run.method} @ {run.budget}"


def _caches(report: KVReport) -> int:
    """Number of (layer, KV head) caches a token can be kept in."""
    return max(1, report.n_layers * report.n_kv_heads)


# ------------------------------------------------------------------------------------------------ prompt heatmap
_STYLE = """<style>
.kv-vis { font-size: 14px; }
.kv-vis .kv-legend { margin-bottom: 6px; font-size: 0.85em; color: #5f6368; }
.kv-vis .kv-prompt { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; line-height: 1.85;
  white-space: pre-wrap; word-break: break-word; max-height: 520px; overflow-y: auto; padding: 6px;
  border: 1px solid #e3e6ea; border-radius: 4px; }
.kv-vis .kvt { border-radius: 2px; }
.kv-vis .kvt.ev, .kv-vis .kvl.ev { text-decoration: line-through; color: #9aa0a6; }
.kv-vis .kvt.ans, .kv-vis .kvl.ans { outline: 2px solid #1e8e3e; outline-offset: -1px; }
.kv-vis .kvl { border-radius: 2px; padding: 0 3px; margin-right: 6px; }
.kv-vis .nl { color: #9aa0a6; }
.kv-vis .kv-empty { color: #80868b; font-style: italic; }
.kv-vis table.kv-out { border-collapse: collapse; width: 100%; }
.kv-vis table.kv-out th { text-align: left; font-weight: 600; color: #5f6368; padding: 3px 8px;
  border-bottom: 1px solid #dadce0; white-space: nowrap; }
.kv-vis table.kv-out td { padding: 3px 8px; border-bottom: 1px solid #f1f3f4; vertical-align: top; }
.kv-vis table.kv-out td.num { font-family: ui-monospace, monospace; text-align: right; white-space: nowrap; }
.kv-vis table.kv-out td.text { font-family: ui-monospace, monospace; white-space: pre-wrap; word-break: break-word; }
.kv-vis .kvo.diff { background: #fbd5d5; color: #a01919; border-radius: 2px; }
.kv-vis .kvo.same { background: #e6f4ea; border-radius: 2px; }
.kv-vis .kv-note { color: #80868b; font-size: 0.85em; }
</style>"""


LEVELS = 10  # shading steps: a token's shade is a CSS class, which keeps 4k-token prompts small


def _alpha(level: int) -> float:
    return 0.85 * level / LEVELS


def _level(value: float) -> int:
    """The shading step of a value in [0, 1]: ∝ √value (attention is heavy-tailed: most tokens get very little)."""
    return round(LEVELS * math.sqrt(min(1.0, max(0.0, float(value)))))


def _shade(rgb: tuple[int, int, int], value: float) -> str:
    """The rgba colour of ``value``'s shading step."""
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{_alpha(_level(value)):.2f})"


def _shade_css() -> str:
    """Classes s0..s10 (method score background), t0..t10 (true importance background), u0..u10 (underline)."""
    rules = []
    for k in range(LEVELS + 1):
        a = f"{_alpha(k):.2f}"
        rules.append(f".kv-vis .s{k}{{background:rgba({SCORE_RGB[0]},{SCORE_RGB[1]},{SCORE_RGB[2]},{a})}}"
                     f".kv-vis .t{k}{{background:rgba({TRUE_RGB[0]},{TRUE_RGB[1]},{TRUE_RGB[2]},{a})}}"
                     f".kv-vis .u{k}{{box-shadow:inset 0 -3px rgba({TRUE_RGB[0]},{TRUE_RGB[1]},{TRUE_RGB[2]},"
                     f"{_alpha(max(k, 3) if k else 0):.2f})}}")
    return "<style>" + "".join(rules) + "</style>"


def _answer_tokens(tokens: list[str], answer: str | None) -> set[int]:
    """Indices of the prompt tokens that overlap an occurrence of ``answer`` (case-insensitive)."""
    if not answer or not answer.strip():
        return set()
    starts, text = [], ""
    for token in tokens:
        starts.append(len(text))
        text += token
    needle, haystack, found = answer.strip().lower(), text.lower(), set()
    at = haystack.find(needle)
    while at >= 0:
        end = at + len(needle)
        found.update(i for i, s in enumerate(starts) if s < end and s + len(tokens[i]) > at)
        at = haystack.find(needle, at + 1)
    return found


def _constraint_tokens(report: KVReport) -> set[int]:
    """Indices of the prompt tokens holding a multi-constraint task's values (inside their statements)."""
    return {i for c in report.constraints for i in c.get("tokens", [])}


def _token_html(text: str) -> str:
    """A token's visible text, escaped; a newline shows as ↵ before the line break."""
    out = _esc(text)
    return out.replace("\n", '<span class="nl">↵</span>\n') if "\n" in out else out


def prompt_heatmap_html(report: KVReport | None, method: str | PressRun | None = None, show: str = "method",
                        budget: int | None = None) -> str:
    """The prompt as text, one ``<span class="kvt">`` a token, its background shaded by importance.

    ``show``: "true" shades by the target's true importance, "method" by the chosen method's scores (``method``: a
    registry name, at ``budget`` or its first budget, or a PressRun), "both" by the method's scores with the true
    importance as an orange underline. With a method, tokens kept in no (layer, head) cache are struck through in grey
    (``class="kvt ev"``); the hover title says in how many caches each token is kept. Tokens of the task's answer get a
    green outline. Without a method (or one that did not run) the true importance is shown."""
    if report is None or not report.prompt_tokens:
        return _empty_html("Run the methods on a prompt to see which of its tokens the target attends to and which "
                           "ones each method keeps.")
    show = show if show in SHOW_MODES else "method"
    run = find_run(report, method, budget) if show != "true" else None
    missing_note = ""
    if show != "true" and run is None:
        if method:
            missing_note = f" ({_esc(method)} was not run on this prompt: showing the true importance.)"
        show = "true"
    tokens, true = report.prompt_tokens, report.true_importance
    scores = run.scores if run is not None else []
    kept = run.kept if run is not None else []
    caches = _caches(report) if run is None or run.level == "kv" else max([1, *kept])
    answer = _answer_tokens(tokens, report.answer) | _constraint_tokens(report)
    parts = []
    for i, text in enumerate(tokens):
        t = true[i] if i < len(true) else 0.0
        title = f"#{i} {text!r} · true {_num(t)}"
        if run is not None:
            s = scores[i] if i < len(scores) else 0.0
            k = kept[i] if i < len(kept) else 0
            classes = "kvt ev" if k == 0 else "kvt"  # "ev" first: evicted tokens all start class="kvt ev
            classes += f" s{_level(s)}" + (f" u{_level(t)}" if show == "both" else "")
            title += f" · {run.method} {_num(s)} · kept in {k} of {caches} caches"
            if k == 0:
                title += " (evicted everywhere)"
        else:
            classes = f"kvt t{_level(t)}"
        if i in answer:
            classes += " ans"
            title += " · answer"
        parts.append(f'<span class="{classes}" title="{_attr(title)}">{_token_html(text)}</span>')
    legend = _heatmap_legend(report, run, show, answer, caches) + missing_note
    return (f'<div class="kv-vis">{_STYLE}{_shade_css()}<div class="kv-legend">{legend}</div>'
            f'<div class="kv-prompt">{"".join(parts)}</div></div>')


def _heatmap_legend(report: KVReport, run: PressRun | None, show: str, answer: set[int], caches: int) -> str:
    n = len(report.prompt_tokens)
    keys = []
    if show in ("true", "both"):
        keys.append(f'<span class="kvl" style="background:{_shade(TRUE_RGB, 0.6)}">true importance</span>'
                    if show == "true" else
                    f'<span class="kvl" style="box-shadow:inset 0 -3px {_shade(TRUE_RGB, 0.8)}">underline: true '
                    'importance</span>')
    if run is not None:
        evicted = sum(1 for k in run.kept if k == 0)
        partial = sum(1 for k in run.kept if 0 < k < caches)
        keys.append(f'<span class="kvl" style="background:{_shade(SCORE_RGB, 0.6)}">{_esc(run.method)} score</span>')
        keys.append('<span class="kvl ev">evicted from every cache</span>')
        summary = (f"{_esc(run.method)} at budget {run.budget}: {evicted} of {_count(n, 'token')} evicted from every "
                   f"(layer, KV head) cache, {partial} kept in some of them only")
    else:
        summary = (f"{_count(n, 'prompt token')}: the attention the full-cache output paid each one (max over a GQA "
                   "group, mean over heads and layers)")
    if report.constraints:
        keys.append('<span class="kvl ans">the traveller\'s requirements</span>')
    elif report.answer:
        keys.append('<span class="kvl ans">answer</span>' if answer else
                    f'<span class="kv-note">(answer “{_esc(report.answer)}” not found in the prompt text)</span>')
    return " ".join(keys) + f" · shade ∝ √value · {summary} · hover a token for its numbers"


# ------------------------------------------------------------------------------------------------ kept grid
def kept_grid_figure(run: PressRun | None, n_layers: int, n_kv_heads: int) -> go.Figure:
    """Layer × KV-head heatmap of ``run.recall_lh``: per head, the kept fraction of the true top-budget positions.
    Token-level methods keep one set of tokens for every head (the title says so); their values still differ per head
    because each head's true top-budget differs."""
    if run is None:
        return _empty_figure("Run a method to see, per layer and KV head, how much of the true top-budget it kept.")
    if run.method == "full" or not run.recall_lh or not run.recall_lh[0]:
        return _empty_figure(f"{run.method} has no per-head kept fractions (the full cache keeps everything).")
    z = [list(row) for row in run.recall_lh]
    layers, heads = len(z), len(z[0])
    shape_note = "" if (layers, heads) == (n_layers, n_kv_heads) or not n_layers else \
        f" (report says {n_layers}×{n_kv_heads})"
    hover = [[f"layer {layer} · KV head {head}<br>kept fraction of the true top-{run.budget} positions: "
              f"{_num(value)}" for head, value in enumerate(row)] for layer, row in enumerate(z)]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(heads)), y=list(range(layers)), zmin=0, zmax=1, colorscale="Greens", meta="grid",
        name="kept fraction", text=hover, hovertemplate="%{text}<extra></extra>", xgap=2, ygap=2,
        texttemplate="%{z:.2f}" if layers * heads <= 160 else None,
        colorbar={"title": {"text": "kept", "side": "right"}, "thickness": 12}))
    level = (" · token-level: every head keeps the same tokens (values differ only as each head's true top differs)"
             if run.level == "tokens" else "")
    title = (f"{_esc(run.method)} @ budget {run.budget}: kept fraction of the true top-{run.budget} positions "
             f"(mean {_num(run.recall)}){_esc(shape_note)}<br><sup>rows: target layers · columns: KV heads"
             f"{level}</sup>")
    height = max(GRID_MIN_HEIGHT, min(GRID_MAX_HEIGHT, GRID_ROW_PX * layers + 150))
    _layout(fig, title, height, margin={"l": 60, "r": 20, "t": 80, "b": 50},
            xaxis={"title": "KV head", "tickmode": "array", "tickvals": list(range(heads)), "side": "bottom"},
            yaxis={"title": "layer", "autorange": "reversed", "dtick": 1 if layers <= 32 else None})
    return fig


# ------------------------------------------------------------------------------------------------ head map
def head_map_figure(report: KVReport | None, run: PressRun | None, layer: int, head: int) -> go.Figure:
    """One (layer, KV head): the method's scores over the prompt positions (its per-head scores, or its per-token
    scores for token-level methods), the target's true importance at that layer, the positions the head kept (green
    ticks below the axis) and the true top-budget positions (dark ticks)."""
    if report is None or not report.prompt_tokens:
        return _empty_figure("Run the methods, then pick a layer and a head to see that head's scores.")
    if run is None:
        return _empty_figure("Pick a method that ran on this prompt to see its scores for one head.")
    n, layers = len(report.prompt_tokens), len(report.true_layer_importance)
    heads = report.n_kv_heads or (len(run.head_scores[0]) if run.head_scores else 1)
    layer, head = int(layer), int(head)
    if not 0 <= layer < max(layers, 1) or not 0 <= head < max(heads, 1):
        return _empty_figure(f"Layer must be in 0..{max(layers, 1) - 1} and KV head in 0..{max(heads, 1) - 1} "
                             f"(got layer {layer}, head {head}).")
    if run.level == "kv" and run.head_scores:
        scores, kept = run.head_scores[layer][head], sorted(set(run.head_kept[layer][head]))
        what = f"{run.method} score of layer {layer}, KV head {head}"
    else:
        scores, kept = run.scores, [i for i, k in enumerate(run.kept) if k > 0]
        what = f"{run.method} score (token-level: the same for every head)"
    true = report.true_layer_importance[layer] if layers else report.true_importance
    top = sorted(range(len(true)), key=lambda i: -true[i])[:min(run.budget, len(true))]
    xs = list(range(n))
    texts = [_esc(_short(t)) for t in report.prompt_tokens]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=scores, mode="lines", name=what, meta="scores", customdata=texts,
                             line={"color": method_color(run.method), "width": 1.5}, fill="tozeroy",
                             hovertemplate="#%{x} %{customdata}<br>score %{y:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=xs, y=true, mode="lines", name=f"true importance, layer {layer}", meta="true",
                             customdata=texts, line={"color": TRUE_COLOR, "width": 1.2, "dash": "dot"},
                             hovertemplate="#%{x} %{customdata}<br>true %{y:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=kept, y=[-0.07] * len(kept), mode="markers", name=f"kept ({len(kept)})", meta="kept",
                             customdata=[texts[i] for i in kept if i < n],
                             marker={"symbol": "line-ns-open", "size": 9, "color": KEPT_COLOR},
                             hovertemplate="#%{x} %{customdata}: kept<extra></extra>"))
    fig.add_trace(go.Scatter(x=top, y=[-0.15] * len(top), mode="markers", name=f"true top-{len(top)}", meta="top",
                             customdata=[texts[i] for i in top],
                             marker={"symbol": "line-ns-open", "size": 9, "color": TOP_COLOR},
                             hovertemplate="#%{x} %{customdata}: in the true top-budget<extra></extra>"))
    hit = len(set(kept) & set(top))
    title = (f"{_esc(run.method)} @ budget {run.budget} · layer {layer} · KV head {head}: {hit} of the true "
             f"top-{len(top)} kept")
    _layout(fig, title, HEAD_HEIGHT, margin={"l": 60, "r": 20, "t": 50, "b": 90},
            xaxis={"title": "prompt position", "range": [-0.5, n - 0.5]},
            yaxis={"title": "importance (per-row max = 1)", "range": [-0.2, 1.05]},
            legend={"orientation": "h", "x": 0, "y": -0.22, "yanchor": "top", "font": {"size": 11}})
    return fig


# ------------------------------------------------------------------------------------------------ correlation
def _distinct_runs(report: KVReport) -> list[PressRun]:
    """One run per method (its first budget), plus other budgets only where the correlations differ."""
    seen: dict[str, list[tuple]] = {}
    chosen = []
    for run in report.runs:
        key = tuple(round(r, 6) for r in run.layer_correlation)
        if key in seen.setdefault(run.method, []):
            continue
        seen[run.method].append(key)
        chosen.append(run)
    return chosen


def correlation_figure(report: KVReport | None, run: PressRun | None = None) -> go.Figure:
    """Per target layer, the Pearson r between each method's per-token scores and the true importance at that layer
    (one line per method, the draft-guided ones thick); with ``run``, a second panel scatters that method's score of
    every prompt token against its true importance."""
    if report is None or not report.runs:
        return _empty_figure("Run the methods to see how well each one's scores track the target's true importance.")
    runs = [r for r in _distinct_runs(report) if r.layer_correlation]
    if not runs:
        return _empty_figure("No method reported per-layer correlations.")
    several = len({r.method for r in runs}) < len(runs)
    cols = 2 if run is not None and run.scores else 1
    fig = make_subplots(rows=1, cols=cols, column_widths=[0.58, 0.42] if cols == 2 else None,
                        horizontal_spacing=0.1,
                        subplot_titles=["Pearson r with the true importance, per layer"]
                        + ([f"{_esc(run.method)}: score vs true importance, per token"] if cols == 2 else []))
    for r in runs:
        guided = r.method in DRAFT_GUIDED
        name = _label(r) if several else r.method
        fig.add_trace(go.Scatter(
            x=list(range(len(r.layer_correlation))), y=r.layer_correlation, mode="lines+markers",
            name=name + (" (draft-guided)" if guided else ""), meta=f"corr:{r.method}",
            line={"color": method_color(r.method), "width": 3.5 if guided else 1.5,
                  "dash": "solid" if guided else "dot"},
            marker={"size": 7 if guided else 4}, legendgroup="corr",
            hovertemplate=f"{_esc(name)}<br>layer %{{x}}: r = %{{y:.3f}}<extra></extra>"), row=1, col=1)
    fig.add_hline(y=0, line={"color": "#dadce0", "width": 1}, row=1, col=1)
    if cols == 2:
        n = min(len(run.scores), len(report.true_importance))
        texts = [_esc(_short(t)) for t in report.prompt_tokens[:n]]
        r_all = _pearson(run.scores[:n], report.true_importance[:n])
        fig.add_trace(go.Scatter(
            x=report.true_importance[:n], y=run.scores[:n], mode="markers", name=f"{run.method} tokens (r = "
            f"{_num(r_all, 2)})", meta="scatter", customdata=[[i, t] for i, t in enumerate(texts)],
            marker={"size": 5, "color": method_color(run.method), "opacity": 0.6},
            hovertemplate="#%{customdata[0]} %{customdata[1]}<br>true %{x:.4f} · score %{y:.4f}<extra></extra>"),
            row=1, col=2)
        fig.update_xaxes(title_text="true importance", row=1, col=2)
        fig.update_yaxes(title_text=f"{_esc(run.method)} score", row=1, col=2)
    fig.update_xaxes(title_text="target layer", dtick=1 if report.n_layers <= 32 else None, row=1, col=1)
    fig.update_yaxes(title_text="Pearson r", range=[-1.05, 1.05], row=1, col=1)
    title = (f"Do the scores track the target's attention? {_esc(report.target)}"
             + (f", guided by {_esc(report.drafter)}" if report.drafter else ""))
    _layout(fig, title, CORRELATION_HEIGHT, margin={"l": 60, "r": 20, "t": 80, "b": 90},
            legend={"orientation": "h", "x": 0, "y": -0.2, "yanchor": "top", "font": {"size": 11}})
    return fig


def _pearson(a: list[float], b: list[float]) -> float | None:
    n = min(len(a), len(b))
    if n < 2:
        return None
    ma, mb = sum(a[:n]) / n, sum(b[:n]) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a[:n], b[:n]))
    va, vb = sum((x - ma) ** 2 for x in a[:n]), sum((y - mb) ** 2 for y in b[:n])
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else None


# ------------------------------------------------------------------------------------------------ constraints
def constraints_figure(report: KVReport | None) -> go.Figure:
    """Multi-constraint tasks (travel): one row per requirement, one column per run (the full cache first); the cell
    is the fraction of the requirement's value tokens the run kept over its (layer, KV head) caches, marked ✓ where
    the cache, asked for that requirement alone, gave its value back and ✗ where not (hover: what it answered)."""
    if report is None or not report.constraints:
        return _empty_figure("Choose the travel task and Run: eight requirements of one traveller are scattered "
                             "through long listings, and this chart shows which ones each compressed cache keeps and "
                             "gives back.")
    runs = [report.full, *report.runs]
    names = [c["name"] for c in report.constraints]
    rows = [f"{_esc(c['label'])}: {_esc(c['value'])}" for c in report.constraints]
    columns = [("full cache" if r.method == "full" else _label(r))
               + f"<br>{sum(c['met'] for c in r.constraints)} of {len(names)} ✓" for r in runs]
    z, text, hover = [], [], []
    for name in names:
        z_row, text_row, hover_row = [], [], []
        for run in runs:
            cell = next((c for c in run.constraints if c["name"] == name), None)
            if cell is None:
                z_row.append(None)
                text_row.append("")
                hover_row.append("not measured")
                continue
            z_row.append(cell["kept"])
            text_row.append("✓" if cell["met"] else "✗")
            kept = "value not found in the prompt" if cell["kept"] is None else f"{cell['kept']:.0%} of its value's " \
                   "tokens kept over the caches"
            hover_row.append(f"{kept}<br>asked for it, answered “{_esc(_short(cell['answer'].strip(), 40))}” "
                             f"({'right' if cell['met'] else 'wrong'})")
        z.append(z_row)
        text.append(text_row)
        hover.append(hover_row)
    fig = go.Figure(go.Heatmap(
        z=z, x=columns, y=rows, text=text, texttemplate="%{text}", textfont={"size": 16}, customdata=hover,
        zmin=0, zmax=1, colorscale=[[0, "#f1f3f4"], [1, KEPT_COLOR]], xgap=2, ygap=2,
        colorbar={"title": {"text": "kept"}, "tickformat": ".0%", "len": 0.8},
        hovertemplate="%{x} · %{y}<br>%{customdata}<extra></extra>"))
    _layout(fig, "Which of the traveller's requirements each cache kept (shade) and gave back when asked (✓)",
            max(CONSTRAINT_MIN_HEIGHT, CONSTRAINT_ROW_PX * len(names) + 140),
            margin={"l": 170, "r": 20, "t": 70, "b": 80}, yaxis={"autorange": "reversed"})
    return fig


# ------------------------------------------------------------------------------------------------ budgets
BUDGET_METRICS = (("accuracy", "accuracy (answer found)"), ("agreement", "agreement with the full cache"),
                  ("recall", "recall of the true top-budget"))


def _collect_runs(reports_or_runs) -> list[PressRun]:
    if reports_or_runs is None:
        return []
    items = [reports_or_runs] if isinstance(reports_or_runs, (KVReport, PressRun)) else list(reports_or_runs)
    runs = []
    for item in items:
        if isinstance(item, KVReport):
            runs.extend(item.runs)
        elif isinstance(item, PressRun) and item.method != "full":
            runs.append(item)
    return runs


def budget_figure(reports_or_runs: KVReport | PressRun | Iterable[KVReport | PressRun] | None) -> go.Figure:
    """Accuracy, agreement and recall against the budget, one line per method (averaged where several reports hold
    the same method and budget, e.g. several seeds); needs at least two budgets."""
    runs = _collect_runs(reports_or_runs)
    budgets = sorted({r.budget for r in runs})
    if len(budgets) < 2:
        return _empty_figure("Run the methods at two budgets or more to see quality against the budget.")
    groups: dict[str, dict[int, list[PressRun]]] = {}
    for r in runs:
        groups.setdefault(r.method, {}).setdefault(r.budget, []).append(r)
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08, subplot_titles=[t for _, t in BUDGET_METRICS])
    for col, (metric, _) in enumerate(BUDGET_METRICS, start=1):
        for method, by_budget in groups.items():
            xs, ys, ns = [], [], []
            for budget in sorted(by_budget):
                values = [getattr(r, metric) for r in by_budget[budget] if getattr(r, metric) is not None]
                if values:
                    xs.append(budget)
                    ys.append(sum(values) / len(values))
                    ns.append(len(values))
            if not xs:
                continue
            guided = method in DRAFT_GUIDED
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="lines+markers", name=method, meta=f"{metric}:{method}", legendgroup=method,
                showlegend=col == 1, customdata=ns, line={"color": method_color(method), "width": 3 if guided else 1.5},
                marker={"size": 7}, hovertemplate=f"{method} · budget %{{x}}<br>{metric} %{{y:.3f}} "
                                                  f"(%{{customdata}} run(s))<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="budget (KV entries per head)", type="log", tickvals=budgets, row=1, col=col)
        fig.update_yaxes(range=[-0.05, 1.05], row=1, col=col)
    _layout(fig, f"Quality against the budget ({_count(len(budgets), 'budget')})", BUDGET_HEIGHT,
            margin={"l": 50, "r": 20, "t": 80, "b": 90},
            legend={"orientation": "h", "x": 0, "y": -0.25, "yanchor": "top", "font": {"size": 11}})
    return fig


# ------------------------------------------------------------------------------------------------ outputs
def _token_texts(report: KVReport, token_text: Mapping[int, str] | None) -> Mapping[int, str]:
    """Known token texts: ``token_text`` where given, else the prompt's own tokens."""
    known = dict(zip(report.prompt_ids, report.prompt_tokens))
    if token_text:
        known.update(token_text)
    return known


def _output_cell(run: PressRun, reference: list[int], texts: Mapping[int, str], is_reference: bool) -> str:
    """The output token by token; tokens that differ from the full-cache output at the same position get
    ``class="kvo diff"``. Without every token's text, the decoded string with the number of differing tokens."""
    ids = run.output_ids
    if not ids:
        return '<span class="kv-note">(no output)</span>'
    if any(i not in texts for i in ids):
        differ = sum(1 for k, i in enumerate(ids) if k >= len(reference) or reference[k] != i)
        note = "" if is_reference else f' <span class="kv-note">({differ} of {len(ids)} tokens differ)</span>'
        return f"{_token_html(run.output_text[:MAX_OUTPUT_CHARS])}{note}"
    parts = []
    for k, token_id in enumerate(ids):
        text = texts[token_id][:MAX_OUTPUT_CHARS]
        if is_reference:
            parts.append(f'<span class="kvo" title="{_attr(f"#{k} id {token_id}")}">{_token_html(text)}</span>')
            continue
        same = k < len(reference) and reference[k] == token_id
        title = f"#{k} id {token_id}" + ("" if same else " · differs from the full cache"
                                         + (f" ({texts.get(reference[k], reference[k])!r})" if k < len(reference)
                                            else " (past its end)"))
        parts.append(f'<span class="kvo {"same" if same else "diff"}" title="{_attr(title)}">'
                     f"{_token_html(text)}</span>")
    return "".join(parts)


def _accuracy_cell(value: float | None) -> str:
    return MISSING if value is None else ("✓ found" if value >= 1 else "✗ not found" if value <= 0 else _num(value, 2))


def _bytes(n: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def outputs_html(report: KVReport | None, token_text: Mapping[int, str] | None = None) -> str:
    """A table: the full-cache output, then each method's output (tokens that differ from the full-cache output at
    the same position marked red), with accuracy, agreement, recall, prefill (drafting share), decode time and the
    KV bytes kept. ``token_text`` maps output token ids to their text (the prompt's tokens are known already); where a
    token's text is unknown the decoded output is shown whole with the number of differing tokens."""
    if report is None:
        return _empty_html("Run the methods to compare their outputs with the full cache's.")
    texts = _token_texts(report, token_text)
    reference = report.full.output_ids
    head = ("<tr><th>method</th><th>budget</th><th>output (red: differs from the full cache)</th><th>accuracy</th>"
            "<th>agreement</th><th>recall</th><th>prefill ms (draft)</th><th>decode ms</th><th>KV kept</th></tr>")
    rows = []
    for run in [report.full, *report.runs]:
        is_reference = run is report.full
        prefill = _num(run.prefill_ms, 1) + (f" ({_num(run.draft_ms, 1)})" if run.draft_ms else "")
        note = f'<div class="kv-note">{_esc(run.note)}</div>' if run.note else ""
        name = "full cache" if is_reference else run.method + (" ★" if run.method in DRAFT_GUIDED else "")
        rows.append(
            f'<tr class="{"kv-full" if is_reference else "kv-run"}" data-method="{_attr(run.method)}" '
            f'data-budget="{run.budget}"><td style="color:{method_color(run.method)};font-weight:600">{_esc(name)}'
            f'{note}</td><td class="num">{run.budget}</td>'
            f'<td class="text">{_output_cell(run, reference, texts, is_reference)}</td>'
            f'<td class="num">{_accuracy_cell(run.accuracy)}</td><td class="num">{_num(run.agreement, 3)}</td>'
            f'<td class="num">{_num(run.recall, 3)}</td><td class="num">{prefill}</td>'
            f'<td class="num">{_num(run.decode_ms, 1)}</td><td class="num">{_bytes(run.kv_bytes)}</td></tr>')
    answer = f" · answer: “{_esc(report.answer)}”" if report.answer else ""
    caption = (f'<div class="kv-legend">{_esc(report.task)} · {_count(len(report.prompt_ids), "prompt token")}'
               f"{answer} · ★ draft-guided · agreement: the full-cache output's tokens matched position by position"
               " · recall: kept share of the true top-budget positions, mean over (layer, KV head)</div>")
    if not report.runs:
        rows.append('<tr><td colspan="9" class="kv-note">No method ran.</td></tr>')
    return f'<div class="kv-vis">{_STYLE}{caption}<table class="kv-out">{head}{"".join(rows)}</table></div>'
