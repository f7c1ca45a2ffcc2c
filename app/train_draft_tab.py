"""The "Train your draft" tab: how the shipped FastDraft / Direct Alignment drafters were aligned (curves and the loss
table per loss), VocabTrim's coverage for a chosen k, and a cost model measured on this machine: the drafter's cost per
token, the target's verification cost and the break-even τ, so a user sees why a drafter pays or not.

Training itself runs from the command line (``python -m core.train.fastdraft``, under an hour here); this tab shows
its stored results and measures the cost of any drafter with a head on the spot.
"""

from __future__ import annotations

import gradio as gr

from app import common, limits, options, widgets
from core.errors import DraftScopeError
from core.runtime.models import load_model
from core.specdec import MODEL_LOCK
from core.specdec.cost_model import measure
from core.specdec.drafters import DRAFTERS, build_drafter
from core.specdec.vocab_trim import VocabTrimOptions, coverage_curve
from core.train.fastdraft import shipped_results
from visualizers.train_draft import (
    LOSS_NAMES,
    alignment_curves_figure,
    cost_model_figure,
    cost_model_html,
    coverage_figure,
    loss_table_html,
    tau_by_gamma_figure,
)

HEAD_DRAFTERS = tuple(name for name, cls in DRAFTERS.items() if issubclass(cls.Options, VocabTrimOptions))
DEFAULT_DRAFTER = "fastdraft"


def _results(target: str) -> tuple[dict, dict, str | None]:
    data = shipped_results(target)
    return data.get("losses", {}), data.get("bench", {}), data.get("shipped_loss")


def _loss_taus(target: str, loss: str | None) -> dict[int, float] | None:
    losses, _, _ = _results(target)
    after = (losses.get(loss or "") or {}).get("after") or {}
    taus = {int(k[len("tau_g"):]): v for k, v in after.items() if k.startswith("tau_g")}
    return taus or None


def show_results(target: str, k) -> tuple:
    """The static part: alignment curves, τ per γ, the loss table and the coverage curve for k."""
    losses, bench, shipped = _results(target)
    try:
        model = load_model(target)
        ks, coverage = coverage_curve(model)
        vocab = model.vocab_size
    except DraftScopeError:
        ks, coverage, vocab = [], [], 1
    k = options.to_option(_k_field(), k)
    note = ("No trained drafter ships for this target yet." if not losses else
            f"Shipped drafter: aligned with **{LOSS_NAMES.get(shipped, shipped)}**. τ and α are exact greedy replays "
            "on held-out target answers; tokens/s come from the benchmark run on the project's machine.")
    return (alignment_curves_figure(losses), tau_by_gamma_figure(losses), loss_table_html(losses, bench),
            coverage_figure(ks, coverage, k, vocab), note, gr.update(choices=list(losses) or ["—"],
                                                                     value=shipped or (next(iter(losses), "—"))))


def _k_field():
    from core.options import option_fields

    return next(f for f in option_fields(VocabTrimOptions) if f.name == "vocab_trim")


def measure_cost(target: str, drafter: str, loss: str, k, progress=gr.Progress()) -> tuple:
    """Measure the drafter's and the target's costs here and show the break-even τ (with the loss's τ for
    FastDraft)."""
    try:
        if drafter not in HEAD_DRAFTERS:
            raise DraftScopeError(f"pick a drafter with a head: {', '.join(HEAD_DRAFTERS)}")
        progress(0.1, desc="loading")
        k = options.to_option(_k_field(), k)
        with MODEL_LOCK:
            model = load_model(target)
            draft = build_drafter(drafter, model, {"vocab_trim": k})
            progress(0.4, desc="timing the drafter and the target")
            cost = measure(model, draft).to_dict()
        taus = _loss_taus(target, loss) if drafter == "fastdraft" and k is None else None
        return cost_model_figure(cost, taus), cost_model_html(cost, taus), ""
    except Exception as exc:  # every failure becomes one line on the page
        raise common.failure(exc) from None


def build(allow_local_models: bool = False) -> dict:
    gr.Markdown("A drafter pays only when its tokens per round τ beat the cost of a round: γ drafter steps plus one "
                "verification of γ + 1 tokens, in units of one plain decoding step. **FastDraft** (Intel) and "
                "**Direct Alignment** (Qualcomm) train a small drafter with the target's tokenizer on text the target "
                "wrote; the losses differ (sequence-level KD, forward KL, TVD, TVD++). **VocabTrim** keeps only the "
                "k tokens the target writes most often in a drafter's head (q = 0 elsewhere; output still lossless). "
                "In the Speculative decoding tab, a token outside a trimmed head is outlined in purple.")
    with gr.Row():
        target = widgets.target_picker("train-", allow_local_models)
        drafter = gr.Dropdown(list(HEAD_DRAFTERS), value=DEFAULT_DRAFTER, label="Drafter (with a head)",
                              elem_id="train-drafter")
        loss = gr.Dropdown(["—"], value="—", label="Alignment loss (FastDraft)", elem_id="train-loss")
        k = options.control(_k_field(), elem_id="train-vocab-trim", label="VocabTrim k (lowest = full head)")
    note = gr.Markdown(elem_id="train-note")
    with gr.Row():
        curves = gr.Plot(alignment_curves_figure({}), show_label=False, elem_id="train-curves")
        taus = gr.Plot(tau_by_gamma_figure({}), show_label=False, elem_id="train-taus")
    table = gr.HTML(loss_table_html({}), elem_id="train-table")
    coverage = gr.Plot(coverage_figure([], [], None, 1), show_label=False, elem_id="train-coverage")
    gr.Markdown("### Cost model on this machine\nTimes one drafter step (through the drafter itself, on a "
                "200-token prefix) and target forwards of 1–7 tokens, then draws the break-even τ per γ.")
    with gr.Row():
        run = gr.Button("Measure cost model", elem_id="train-measure")
        status = gr.Markdown(elem_id="train-status")
    with gr.Row():
        cost_plot = gr.Plot(cost_model_figure(None), show_label=False, elem_id="train-cost-plot")
        cost_table = gr.HTML(cost_model_html(None), elem_id="train-cost-table")

    static = [curves, taus, table, coverage, note, loss]
    gr.on(None, show_results, [target, k], static, api_visibility="private")  # on load and on every change
    run.click(measure_cost, [target, drafter, loss, k], [cost_plot, cost_table, status], api_name="train_cost_model",
              **limits.long_work())
    return {"target": target, "drafter": drafter, "loss": loss, "k": k, "curves": curves, "taus": taus,
            "table": table, "coverage": coverage, "cost_plot": cost_plot, "cost_table": cost_table, "status": status,
            "static": static}
