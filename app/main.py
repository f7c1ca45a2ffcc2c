"""The DraftScope app: the Blocks layout (one module per tab) and the command line that launches it."""

from __future__ import annotations

import argparse
import os

import gradio as gr

from app import (
    adaptive_tab,
    bench_tab,
    common,
    compare_tab,
    crossvocab_tab,
    generate_tab,
    gpu,
    heads_tab,
    kv_tab,
    limits,
    metrics_tab,
    self_draft_tab,
    train_draft_tab,
    trees_tab,
    var_tab,
)
from core.runtime import models

TABS = (("Speculative decoding", "generate", generate_tab), ("Compare", "compare", compare_tab),
        ("Draft trees", "trees", trees_tab), ("Draft heads", "heads", heads_tab),
        ("Adaptive & parallel", "adaptive", adaptive_tab),
        ("Across tokenizers", "crossvocab", crossvocab_tab),
        ("Self-drafting", "self-draft", self_draft_tab),
        ("Train your draft", "train", train_draft_tab), ("Benchmark", "bench", bench_tab),
        ("Production metrics", "metrics", metrics_tab), ("KV importance", "kv", kv_tab),
        ("VAR", "var", var_tab))  # (title, id, module with build)

INTRO = ("# DraftScope\nSpeculative decoding, one round at a time: a drafter proposes γ tokens, the target checks "
         "them all in one forward pass, keeps the longest accepted prefix and adds one token of its own — resampled "
         "from the residual at a rejection, or a bonus after full acceptance. Hover a token for p, q, min(1, p/q) "
         "and U.")


def build_demo(allow_local_models: bool = False) -> gr.Blocks:
    """The whole app; ``allow_local_models`` lets users type Hugging Face ids or local model directories. Building
    sets the process-wide policy either way (``models.set_presets_only``): without the flag every model lookup in the
    process loads presets only, also in handlers that pass no ``allow_local``."""
    models.set_presets_only(not allow_local_models)
    with gr.Blocks(title="DraftScope") as demo:
        gr.Markdown(INTRO)
        with gr.Tabs(overflow_behavior="wrap") as tabs:  # twelve tabs: every title stays in view, in two rows
            built = {}
            for title, tab_id, module in TABS:
                with gr.Tab(title, id=tab_id):
                    before = set(demo.fns)
                    built[tab_id] = module.build(allow_local_models=allow_local_models)
                    _cancel_button(tab_id, [demo.fns[i] for i in sorted(set(demo.fns) - before)
                                            if demo.fns[i].concurrency_id == limits.LONG])
        bench_tab.link_step_view(built["bench"], built["generate"], tabs)  # a rejection example → the step view
    gpu.wrap_model_events(demo)  # ZeroGPU only (app/gpu.py): the events that run models get the GPU per call
    caps = limits.limits()
    # every event not in a group of its own runs at most model_slots at a time; max_size bounds the waiting line
    demo.queue(default_concurrency_limit=caps.model_slots, max_size=caps.queue_size)
    return demo


def _cancel_button(tab_id: str, long_jobs: list) -> None:
    """A Cancel button under a tab with long jobs: queued ones are dropped (``cancels``), a running one stops at its
    next progress report (``common.cancellable``, which wraps each job here)."""
    if not long_jobs:
        return
    for job in long_jobs:
        job.fn = common.cancellable(job.fn)
    with gr.Row():
        cancel = gr.Button("Cancel", variant="stop", size="sm", scale=1, elem_id=f"{tab_id}-cancel")
        note = gr.Markdown(elem_id=f"{tab_id}-cancel-note")
    cancel.click(common.request_cancel, None, note, cancels=[job.get_config() for job in long_jobs], queue=False,
                 api_name=f"{tab_id}_cancel")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="app.py", description="Launch the DraftScope web app.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to listen on (default 127.0.0.1, or $GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port (default 7860, or $GRADIO_SERVER_PORT)")
    parser.add_argument("--allow-local-models", action="store_true",
                        help="let model fields take Hugging Face ids and local directories, not only presets")
    parser.add_argument("--share", action="store_true", help="open a public gradio.live link (off by default)")
    args = parser.parse_args(argv)
    if args.share and args.allow_local_models:  # a public link must not let strangers name files on this machine
        parser.error("--share opens a public link; with --allow-local-models anyone could load files from this "
                     "machine: drop one of the two")
    demo = build_demo(allow_local_models=args.allow_local_models)
    if gpu.active():  # ZeroGPU: weights loaded before launch reach every GPU worker (app/gpu.py)
        gpu.preload([common.default_target()])
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
