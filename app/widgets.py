"""Widgets the session tabs share: the prompt row (prompt, example picker, chat template), the target picker, the
Step / Run / Stop / Reset buttons with their events, and the trace row (save the session as a JSON trace, load one to
step through with no model, and the records JSON every session endpoint returns).

``prefix`` starts every elem_id ("" on the main tab: ``#prompt``; "trees-": ``#trees-prompt``) and, with "_" for "-",
every api_name (``/example_prompt``, ``/trees_step``).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app import common, limits
from core.prompts import load_prompts
from core.runtime.models import preset_names


def api_prefix(prefix: str) -> str:
    return prefix.replace("-", "_")


def prompt_row(prefix: str = "", start_with: str | None = None) -> tuple[gr.Textbox, gr.Checkbox]:
    """A row with the prompt box, the Spec-Bench example picker (it fills the prompt) and the chat-template box;
    ``start_with`` (an example id) fills the box with that example."""
    examples = load_prompts()
    start = next((e for e in examples if e.id == start_with), None)
    with gr.Row():
        prompt = gr.Textbox(value=start.prompt if start else "", label="Prompt", lines=3, scale=3,
                            max_length=common.MAX_PROMPT_CHARS,
                            elem_id=f"{prefix}prompt", placeholder="Type a prompt, or pick an example")
        with gr.Column(scale=1):
            example = gr.Dropdown([(f"{e.category} · {e.id}", e.id) for e in examples],
                                  value=start.id if start else None,
                                  label="Example prompts (Spec-Bench categories)", elem_id=f"{prefix}examples")
            chat = gr.Checkbox(value=True, label="Chat template", elem_id=f"{prefix}chat")
    example.input(lambda example_id: next((e.prompt for e in examples if e.id == example_id), gr.skip()),
                  example, prompt, api_name=f"{api_prefix(prefix)}example_prompt", queue=False)
    return prompt, chat


def target_picker(prefix: str = "", allow_local: bool = False) -> gr.Dropdown:
    """The target model: a preset (or, with local models allowed, a Hugging Face id or a directory)."""
    info = "a preset" + (", a Hugging Face id or a local directory" if allow_local else "")
    return gr.Dropdown(preset_names(), value=common.default_target(), label="Target", info=info,
                       allow_custom_value=allow_local, elem_id=f"{prefix}target")


@dataclass
class SessionButtons:
    step: gr.Button
    run: gr.Button
    stop: gr.Button
    reset: gr.Button

    def wire(self, handlers: common.SessionHandlers, state: gr.State, settings: list, outputs: list,
             prefix: str = "") -> None:
        """Step, Run and Reset on ``[state, *settings]``; Stop sets the flag Run reads between rounds, so the page
        keeps the last round's records and figures."""
        api = api_prefix(prefix)
        inputs = [state, *settings]
        self.step.click(handlers.step, inputs, outputs, api_name=f"{api}step", **limits.model_work())
        self.run.click(handlers.run, inputs, outputs, api_name=f"{api}run", **limits.model_work())
        self.stop.click(handlers.stop, [state], None, api_name=f"{api}stop", queue=False)
        self.reset.click(handlers.reset, inputs, outputs, api_name=f"{api}reset", **limits.model_work())


def session_buttons(prefix: str = "") -> SessionButtons:
    """The Step / Run / Stop / Reset buttons, in the current row."""
    return SessionButtons(gr.Button("Step", variant="primary", elem_id=f"{prefix}step"),
                          gr.Button("Run", elem_id=f"{prefix}run"),
                          gr.Button("Stop", variant="stop", elem_id=f"{prefix}stop"),
                          gr.Button("Reset", elem_id=f"{prefix}reset"))


@dataclass
class TraceRow:
    save: gr.Button
    saved: gr.File  # the file Save trace wrote, to download
    upload: gr.File  # a trace to load
    records: gr.JSON  # hidden: the session as a trace, returned by every session endpoint (gradio_client users)

    def wire(self, handlers: common.SessionHandlers, state: gr.State, outputs: list, status, prefix: str = "") -> None:
        """Save trace → (file, status); an uploaded trace → ``outputs`` (the same as Step's: state first, the records
        JSON last). ``api_name``s: ``<prefix>save_trace``, ``<prefix>load_trace``."""
        api = api_prefix(prefix)
        self.save.click(handlers.save_trace, [state], [self.saved, status], api_name=f"{api}save_trace",
                        concurrency_limit=None)
        self.upload.upload(handlers.load_trace, [state, self.upload], outputs, api_name=f"{api}load_trace",
                           concurrency_limit=None)

    def wire_records(self, load, outputs: list, status, prefix: str = "") -> None:
        """The same for a tab without live sessions: Save trace writes the records JSON of its last run; ``load(file)``
        fills ``outputs`` (the records JSON among them)."""
        api = api_prefix(prefix)
        self.save.click(common.save_records, [self.records], [self.saved, status], api_name=f"{api}save_trace",
                        concurrency_limit=None)
        self.upload.upload(load, [self.upload], outputs, api_name=f"{api}load_trace", concurrency_limit=None)


def trace_row(prefix: str = "") -> TraceRow:
    """A row: Save trace (a JSON file to download) and Load trace (a .json saved here or by ``generate --trace``);
    the hidden records JSON is created with it. Place ``records`` last in the session endpoints' outputs."""
    with gr.Row(equal_height=True):
        save = gr.Button("Save trace", size="sm", scale=0, min_width=120, elem_id=f"{prefix}save-trace")
        saved = gr.File(label="Saved trace (JSON)", interactive=False, height=90, elem_id=f"{prefix}saved-trace")
        upload = gr.File(label="Load a trace (.json): step through it with no model", file_types=[".json"],
                         type="filepath", height=90, elem_id=f"{prefix}load-trace")
    records = gr.JSON(visible=False, label="Records (JSON)", elem_id=f"{prefix}records-json")
    return TraceRow(save, saved, upload, records)
