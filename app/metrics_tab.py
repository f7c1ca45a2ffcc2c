"""The "Production metrics" tab: a serving engine's speculative-decoding counters (a Prometheus ``/metrics`` dump from
vLLM, SGLang or llama.cpp server, pasted or uploaded) drawn as the acceptance charts DraftScope draws for its own
runs, beside DraftScope's offline measurement of the same pairing from the shipped benchmark matrix.

Parsing and checks live in ``core.specdec.prod_metrics``; this module wires the controls.
"""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr

from app import common
from core import checks
from core.errors import DraftScopeError
from core.specdec.prod_metrics import (
    ENGINES,
    MAX_DUMP_BYTES,
    matrix_choices,
    parse_metrics,
    profile_for_choice,
    profile_from_matrix_row,
    shipped_matrices,
    vllm_exposition,
)
from visualizers.acceptance import acceptance_compare_figure, metrics_table_html

EXAMPLE_CONFIG = "ngram"  # the shipped matrix's row the example writes in vLLM's format
NO_MATRIX = "No benchmark matrix ships yet (assets/bench/matrix-<target>.json): only the dump's side is shown."
INTRO = (
    "Paste a server's `GET /metrics` text (or upload it) to see its speculative-decoding counters as acceptance per "
    "draft position, in both conventions: **conditional** (EAGLE / Spec-Bench, what DraftScope measures: accepted at i "
    "/ rounds that reached i) and **unconditional** (vLLM: accepted at i / drafts). From counters, reached(i) = "
    "accepted(i − 1), exact for fixed-length drafts (dashed lines). α = accepted / draft tokens; mean acceptance "
    "length = 1 + accepted / drafts (bonus token included). vLLM and llama.cpp export per-position counters; SGLang "
    "exports only its mean acceptance length and acceptance rate.")


def _matrices() -> tuple[dict, str]:
    """The shipped benchmark matrices and a note for the picker ("" when they load)."""
    try:
        matrices = shipped_matrices()
    except DraftScopeError as exc:
        return {}, f"The shipped benchmark matrix cannot be read: {exc}"
    return matrices, "" if matrices else NO_MATRIX


def _dump_text(text: str | None, file) -> str | bytes | None:
    """The uploaded file's bytes (checked for size before reading) or the pasted text; None when neither."""
    path = getattr(file, "name", file)
    if path:
        size = os.path.getsize(path)
        if size > MAX_DUMP_BYTES:
            raise DraftScopeError(f"the file is {size / 2 ** 20:.1f} MiB; the limit is "
                                  f"{MAX_DUMP_BYTES / 2 ** 20:.1f} MiB")
        return Path(path).read_bytes()
    text = checks.text("the pasted dump", text, MAX_DUMP_BYTES)
    return text if text.strip() else None


def compare(text: str | None, file, engine: str, sum_engines: bool, offline: str | None) -> tuple:
    """Parse the dump (the upload wins over the pasted text) and add the chosen DraftScope measurement. On bad input:
    a warning, and the figure and table stay as they were."""
    try:
        dump = _dump_text(text, file)
        profiles = parse_metrics(dump, engine or "auto", bool(sum_engines)) if dump is not None else []
        if offline:
            profiles.append(profile_for_choice(_matrices()[0], offline))
        if not profiles:
            raise DraftScopeError("nothing to compare: paste or upload a /metrics dump, or pick DraftScope's "
                                  "measurement")
        dicts = [p.to_dict() for p in profiles]
        sources = ", ".join(p.label for p in profiles)
        return acceptance_compare_figure(dicts), metrics_table_html(dicts), f"Showing {sources}."
    except Exception as exc:  # every failure becomes one line on the page; the previous charts stay
        raise common.failure(exc) from None


def load_example() -> str:
    """A real measurement in vLLM's format: the shipped matrix's n-gram row (DraftScope's own run on this machine,
    not a vLLM server), written by ``vllm_exposition`` as vLLM exposes its counters."""
    try:
        matrices, note = _matrices()
        if not matrices:
            raise DraftScopeError(note)
        target, matrix = next(iter(matrices.items()))
        rows = [r for r in matrix["rows"] if (r.get("overall") or {}).get("drafted")]
        if not rows:
            raise DraftScopeError(f"the shipped matrix of {target} has no row that drafted")
        row = next((r for r in rows if r["config"] == EXAMPLE_CONFIG), rows[0])
        profile = profile_from_matrix_row(row, target=target)
        return vllm_exposition(profile, f"{target} + {row['config']} (DraftScope shipped matrix)")
    except Exception as exc:
        raise common.failure(exc) from None


def build(allow_local_models: bool = False) -> dict:
    matrices, note = _matrices()
    choices = matrix_choices(matrices)
    gr.Markdown(INTRO)
    with gr.Row():
        dump = gr.Textbox(label="Prometheus /metrics dump", lines=10, max_lines=20, scale=3, elem_id="metrics-dump",
                          max_length=MAX_DUMP_BYTES,
                          placeholder="# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.\n…")
        with gr.Column(scale=1):
            upload = gr.File(label="…or upload it (text, up to 4 MiB)", type="filepath", elem_id="metrics-file")
            engine = gr.Dropdown(["auto", *ENGINES], value="auto", label="Engine", elem_id="metrics-engine")
            sum_engines = gr.Checkbox(False, label="Add up vLLM's data-parallel engines", elem_id="metrics-sum")
            offline = gr.Dropdown(choices, value=None, label="DraftScope's offline measurement",
                                  info=note or "a row of the shipped benchmark matrix", interactive=bool(choices),
                                  elem_id="metrics-offline")
    with gr.Row():
        run = gr.Button("Compare", variant="primary", elem_id="metrics-compare")
        example = gr.Button("Example: our n-gram run, written as vLLM's /metrics", elem_id="metrics-example")
    status = gr.Markdown(elem_id="metrics-status")
    figure = gr.Plot(acceptance_compare_figure([]), show_label=False, elem_id="metrics-figure")
    table = gr.HTML(metrics_table_html([]), elem_id="metrics-table")

    inputs, outputs = [dump, upload, engine, sum_engines, offline], [figure, table, status]
    run.click(compare, inputs, outputs, api_name="metrics_parse")
    upload.upload(compare, inputs, outputs, api_visibility="private")
    example.click(load_example, None, dump, api_name="metrics_example", queue=False).then(
        compare, inputs, outputs, api_visibility="private")
    return {"dump": dump, "upload": upload, "engine": engine, "sum_engines": sum_engines, "offline": offline,
            "run": run, "example": example, "status": status, "figure": figure, "table": table}
