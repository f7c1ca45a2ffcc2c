"""The "Across tokenizers" tab: OmniDraft, a drafter with another tokenizer than the target, learning online.

Each round the drafter drafts its own tokens; they become target tokens through the n-gram cache (a run of drafter
tokens → one target token), a direct match (the same text), or a cut where neither applies; the target verifies them
in its own vocabulary, so the output is exactly the target's. The views: one round's alignment, the n-gram cache's
entries and size, and acceptance per round with a second run of the same prompt with the learning off (no cache, no
distillation, no acceptance head), so a user sees whether learning helps.

Step runs one round; Run streams rounds to the end (Stop halts it after the current round); Reset starts over.
Settings other than the prompt, chat template and target apply from the next round on (a changed drafter option
builds a new drafter, whose learned state starts over unless it is kept). The learning-off run is a second, real
session stepped once per round and run to the same token budget when the first one finishes.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import gradio as gr

from app import common, options, widgets
from core.runtime.models import preset_names
from core.specdec import Session, SessionConfig
from core.specdec.trace import Trace
from visualizers.crossvocab import acceptance_figure, alignment_html, cache_figure, cache_table_html, omni_info
from visualizers.token_strip import token_strip_html

DRAFTER = "omnidraft"
DEFAULT_TARGET, DEFAULT_DRAFT = "gemma3-270m", "smollm2-135m"  # two tokenizers; SmolLM2 has a FastDraft network
DEFAULT_PROMPT = "summarization-1"  # the answer repeats the prompt's names: the n-gram cache has something to learn
MAX_TOKENS, DEFAULT_TOKENS = 256, 48
HEAD_SETTINGS = ("prompt", "chat", "target")
TAIL_SETTINGS = ("gamma", "temperature", "seed", "max_new_tokens", "compare")
SHOWN_OPTIONS = ("draft_model", "fastdraft", "ngram_cache", "distill", "accept_stop", "keep_learning")  # in view
LEARNING_OFF = {"ngram_cache": False, "distill": False, "accept_stop": 0.0, "keep_learning": False}
RUN_LABELS = ("learning on", "learning off")
OPTION_LABELS = {  # shorter labels than the options' help texts where the tab has room for less
    "draft_model": "Draft model (another tokenizer)",
    "fastdraft": "FastDraft: draft with the draft model's small trained network (smollm2-135m only)",
    "ngram_cache": "n-gram cache: merge drafter runs into one target token",
    "distill": "Online distillation (low-rank adapter)",
    "accept_stop": "Acceptance head: stop below this chance (0 = off)",
    "keep_learning": "Keep what was learned for later runs of this pair",
}


# ------------------------------------------------------------------------------------------------ configuration
def crossvocab_config(settings: dict) -> SessionConfig:
    """Engine settings: the OmniDraft drafter with this tab's options; greedy verification at temperature 0, else the
    sampling rule (OmniDraft's proposals count as given: q one-hot, so both keep the target's output)."""
    verifier = "greedy" if float(settings["temperature"]) == 0 else "sampling"
    return common.build_config({**settings, "drafter": DRAFTER, "verifier": verifier})


def learning_off_config(config: SessionConfig) -> SessionConfig:
    """The same run with the online learning off: no n-gram cache, no distillation, no acceptance head."""
    return dataclasses.replace(config, drafter_options={**config.drafter_options, **LEARNING_OFF})


# ------------------------------------------------------------------------------------------------ the learning-off run
# The learning-off run compared with each session: a second session that lives as long as its session.
_BASELINES = common.CompanionRuns(learning_off_config)


def _baseline_of(session: Session | Trace) -> Session | Trace | None:
    """The learning-off run: the live companion, or a loaded trace's companion of that label."""
    if isinstance(session, Trace):
        return session.companions.get(RUN_LABELS[1])
    return _BASELINES.get(session)


# ------------------------------------------------------------------------------------------------ rendering
def render(session: Session | Trace | None, round_index: int | None = None, figures: bool = True) -> tuple:
    """(token strip, alignment of ``round_index`` (default the latest round that drafted), round slider, acceptance
    figure, cache figure, cache table); ``figures=False`` updates the strip and the alignment only."""
    if session is None:
        return (token_strip_html([]), alignment_html(None), gr.update(value=0, maximum=1, interactive=False),
                acceptance_figure({}), cache_figure([]), cache_table_html([]))
    records = session.records
    n = len(records)
    index = _latest_draft(records) if round_index is None or not 0 <= round_index < n else round_index
    strip = token_strip_html(records, session.prompt_text)
    alignment = alignment_html(records[index] if n else None)
    if not figures:
        return strip, alignment, *[gr.skip()] * 4
    runs = {RUN_LABELS[0]: records}
    baseline = _baseline_of(session)
    if baseline is not None:
        runs[RUN_LABELS[1]] = baseline.records
    return (strip, alignment, gr.update(value=max(index, 0), maximum=max(n - 1, 1), interactive=n > 1),
            acceptance_figure(runs), cache_figure(records), cache_table_html(records))


def _latest_draft(records: list) -> int:
    """The last round that drafted (the last round of a run often has one token of budget left and drafts nothing),
    or the last round (-1 when there is none)."""
    return next((i for i in range(len(records) - 1, -1, -1) if omni_info(records[i]) is not None), len(records) - 1)


def _run_line(session: Session) -> str:
    s = session.stats
    return (f"α {s.alpha:.2f}, τ {s.tau:.2f}" if s.alpha is not None and s.tau is not None else "nothing drafted yet")


def _status(session: Session, note: str = "") -> str:
    rounds, tokens = len(session.records), len(session.generated_ids)
    head = f"{rounds} round{'s' * (rounds != 1)}, {tokens} token{'s' * (tokens != 1)}"
    head = f"Finished ({session.finish_reason}) after {head}." if session.done else f"{head} so far."
    head += f" Learning on: {_run_line(session)}."
    info = next((i for r in reversed(session.records) if (i := omni_info(r)) is not None), None)
    if info is not None:
        head += (f" Cache {info.get('cache_size', 0)} entries, {info.get('distill_steps', 0)} distillation steps; "
                 f"last round stopped: {info.get('stop') or 'longest run'}.")
    baseline = _baseline_of(session)
    if baseline is not None:
        n = len(baseline.records)
        head += f" Learning off, {n} round{'s' * (n != 1)}: {_run_line(baseline)}."
    return f"{head} {note}".strip()


# ------------------------------------------------------------------------------------------------ handlers
class Handlers(common.SessionHandlers):
    """Event handlers. ``allow_local`` lets model fields name Hugging Face ids or local directories."""

    ready_message = "Ready: Step for one round, Run to go to the end."
    docs: ClassVar[dict[str, str]] = {  # the step / run / reset endpoints' descriptions
        "step": "One OmniDraft round (and one round of the learning-off run when the comparison is on).",
        "run": common.SessionHandlers.docs["run"],
        "reset": "Start over with the current settings (and seed): nothing generated yet, nothing learned (unless "
        "kept), the learning-off run started over too."
    }

    @property
    def setting_names(self) -> tuple[str, ...]:
        return (*HEAD_SETTINGS, *options.option_names((DRAFTER,), self.allow_local), *TAIL_SETTINGS)

    def config(self, settings: dict) -> SessionConfig:
        return crossvocab_config(settings)

    def prepared(self, session: Session, settings: dict) -> None:
        _BASELINES.sync(session, settings["compare"], self.allow_local)  # the learning-off run follows the settings

    def render(self, session, figures: bool = True) -> tuple:
        return render(session, figures=figures)

    def status(self, session, note: str = "") -> str:
        return _status(session, note)

    def advanced(self, session) -> None:
        _BASELINES.advance(session)

    def companions(self, session) -> dict:
        baseline = _baseline_of(session)
        return {RUN_LABELS[1]: baseline} if baseline is not None else {}

    def trace_missing(self, trace: Trace) -> str:
        return "" if RUN_LABELS[1] in trace.companions else "The learning-off run is not in this trace (it was off)."

    @staticmethod
    def show_round(state, round_index):
        """Show another round's alignment."""
        session = common.get_session((state or {}).get("sid"))
        if session is None or not session.records:
            return alignment_html(None)
        index = min(max(int(round_index or 0), 0), len(session.records) - 1)
        return alignment_html(session.records[index])


# ------------------------------------------------------------------------------------------------ layout
INTRO = """A drafter with **another tokenizer** than the target (OmniDraft, Qualcomm 2025). Each round the draft model \
proposes tokens in its own vocabulary; they become target tokens by the **n-gram cache** (a run of drafter tokens that \
spells one target token), a **direct match** (the same text), or a **cut** where neither applies. The target verifies \
those target tokens as usual, so **the output is exactly the target's**, whatever the translation did. The drafter \
learns online: the cache grows with every committed target token no single drafter token spells, a low-rank adapter is \
**distilled** from the target's distributions, and an **acceptance head** learns when to stop drafting.

Below: the round's **alignment** (drafter tokens with q and the head's chance; merge brackets; the target tokens with \
q′ = Π q, shown but not used, and the target's decisions), the **cache** entries per round and its size, and \
**acceptance over time** beside a second run of the same prompt with the learning off."""


def _option_control(f, allow_local: bool) -> gr.components.Component:
    return options.control(f, elem_id="crossvocab-" + f.name.replace("_", "-"), label=OPTION_LABELS.get(f.name, f.help),
                           allow_local=allow_local, **({"value": DEFAULT_DRAFT} if f.name == "draft_model" else {}))


def build(allow_local_models: bool = False) -> dict:
    """Create the tab's components in the current Blocks context and wire them; return the components."""
    handlers = Handlers(allow_local=allow_local_models)
    gr.Markdown(INTRO)
    state = gr.State({}, time_to_live=common.state_ttl(), delete_callback=common.forget)
    prompt, chat = widgets.prompt_row("crossvocab-", start_with=DEFAULT_PROMPT)
    fields = {o.name: o.field(DRAFTER) for o in options.gather((DRAFTER,), allow_local_models)}
    controls: dict[str, gr.components.Component] = {}
    with gr.Row():
        info = "a preset" + (", a Hugging Face id or a local directory" if allow_local_models else "")
        target = gr.Dropdown(preset_names(), value=DEFAULT_TARGET, label="Target", info=info,
                             allow_custom_value=allow_local_models, elem_id="crossvocab-target")
        for name in ("draft_model", "fastdraft"):
            controls[name] = _option_control(fields[name], allow_local_models)
        gamma = gr.Slider(1, 16, value=5, step=1, label="γ (target tokens drafted a round)", elem_id="crossvocab-gamma")
    with gr.Row():
        for name in SHOWN_OPTIONS[2:]:
            controls[name] = _option_control(fields[name], allow_local_models)
    with gr.Accordion("More drafter options", open=False):
        with gr.Row():
            for name, f in fields.items():  # every other option of the drafter, generated from its fields
                if name not in controls:
                    controls[name] = _option_control(f, allow_local_models)
    with gr.Row():
        temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0 = greedy)",
                                elem_id="crossvocab-temperature")
        seed = gr.Number(value=0, precision=0, label="Seed", elem_id="crossvocab-seed")
        max_new_tokens = gr.Slider(1, MAX_TOKENS, value=DEFAULT_TOKENS, step=1, label="Max new tokens",
                                   elem_id="crossvocab-max-new-tokens")
        compare = gr.Checkbox(value=True, label="Compare with learning off (no cache, no distillation, no head; "
                              "runs it too)", elem_id="crossvocab-compare")
    with gr.Row():
        buttons = widgets.session_buttons("crossvocab-")
    status = gr.Markdown("Step runs one round; Run streams rounds to the end.", elem_id="crossvocab-status")
    trace = widgets.trace_row("crossvocab-")
    strip = gr.HTML(token_strip_html([]), elem_id="crossvocab-strip")
    gr.Markdown("### Alignment of a round")
    round_slider = gr.Slider(0, 1, value=0, step=1, label="Round to show", interactive=False,
                             elem_id="crossvocab-round")
    alignment = gr.HTML(alignment_html(None), elem_id="crossvocab-alignment")
    gr.Markdown("### Acceptance over time, learning on vs off")
    acceptance = gr.Plot(acceptance_figure({}), show_label=False, elem_id="crossvocab-acceptance")
    gr.Markdown("### The n-gram cache")
    with gr.Row():
        with gr.Column(scale=1):
            cache_plot = gr.Plot(cache_figure([]), show_label=False, elem_id="crossvocab-cache-plot")
        with gr.Column(scale=1):
            cache_table = gr.HTML(cache_table_html([]), elem_id="crossvocab-cache-table")

    controls.update({"prompt": prompt, "chat": chat, "target": target, "gamma": gamma, "temperature": temperature,
                     "seed": seed, "max_new_tokens": max_new_tokens, "compare": compare})
    outputs = [state, strip, alignment, round_slider, acceptance, cache_plot, cache_table, status, trace.records]
    buttons.wire(handlers, state, [controls[name] for name in handlers.setting_names], outputs, "crossvocab-")
    trace.wire(handlers, state, outputs, status, "crossvocab-")
    round_slider.release(handlers.show_round, [state, round_slider], alignment, api_name="crossvocab_show_round")
    return {"state": state, "prompt": prompt, "target": target, "status": status, "alignment": alignment,
            "acceptance": acceptance, **controls}
