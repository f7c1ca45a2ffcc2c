"""The main tab: pick a target, a drafter and a verifier, then step through speculative decoding round by round.

Step runs one draft → verify round; Run streams rounds to the end (Stop halts it after the current round); Reset
starts over. Settings changed between rounds (γ, temperature, top-p, seed, the drafter and its options, the
verifier) apply from the next round on; a new target, prompt or chat setting starts a new session. The drafter's
options are generated from its ``Options`` (``app.options``): only the chosen drafter's are shown.
"""

from __future__ import annotations

import gradio as gr

from app import common, limits, options, widgets
from core.errors import DraftScopeError
from core.runtime.models import suggested_draft
from core.specdec import MAX_GAMMA, MODEL_LOCK, Session
from core.specdec.cost_model import measure
from core.specdec.drafters import DRAFTERS, build_drafter
from core.specdec.lossless import check_lossless
from core.specdec.trace import Trace
from core.specdec.verify import VERIFIERS
from visualizers.compare import lossless_html
from visualizers.round_inspector import round_inspector_figure
from visualizers.stats_charts import stats_figure
from visualizers.token_strip import stats_html, token_strip_html
from visualizers.train_draft import cost_model_html

# the run settings; the drafters' options follow them (app.options: one per option name, in registry order)
RUN_SETTINGS = ("prompt", "chat", "target", "drafter", "verifier", "gamma", "temperature", "top_p", "top_k", "seed",
                "max_new_tokens")


# ------------------------------------------------------------------------------------------------ rendering
def render(session: Session | Trace | None, round_index: int | None = None, figures: bool = True) -> tuple:
    """(strip, stats, stats chart, inspector, round slider) for a session or a loaded trace; the inspector shows
    ``round_index`` (default: the latest round). ``figures=False`` leaves the two figures and the slider as they
    are."""
    if session is not None and not figures:
        return (token_strip_html(session.records, session.prompt_text),
                stats_html(session.stats.summary()), gr.skip(), gr.skip(), gr.skip())
    if session is None:
        return (token_strip_html([]), stats_html({}), stats_figure({}), round_inspector_figure(None),
                gr.update(value=0, maximum=1, interactive=False))
    records = session.records
    n = len(records)
    index = n - 1 if round_index is None or not 0 <= round_index < n else round_index
    summary = session.stats.summary()
    return (token_strip_html(records, session.prompt_text), stats_html(summary),
            stats_figure(summary), round_inspector_figure(records[index] if n else None),
            gr.update(value=max(index, 0), maximum=max(n - 1, 1), interactive=n > 1))


def _status(session: Session, note: str = "") -> str:
    rounds, tokens = len(session.records), len(session.generated_ids)
    head = f"{rounds} round{'s' * (rounds != 1)}, {tokens} token{'s' * (tokens != 1)}"
    if session.done:
        head = f"Finished ({session.finish_reason}) after {head}."
    else:
        head += " so far."
    return f"{head} {note}".strip()


# ------------------------------------------------------------------------------------------------ handlers
class Handlers(common.SessionHandlers):
    """Event handlers. ``allow_local`` lets model fields name Hugging Face ids or local directories."""

    @property
    def setting_names(self) -> tuple[str, ...]:
        return (*RUN_SETTINGS, *options.option_names(DRAFTERS, self.allow_local))

    def render(self, session, figures: bool = True) -> tuple:
        return render(session, figures=figures)

    def status(self, session, note: str = "") -> str:
        return _status(session, note)

    def inspect(self, state, round_index):
        """Show another round in the inspector."""
        session = common.get_session((state or {}).get("sid"))
        if session is None or not session.records:
            return round_inspector_figure(None)
        index = min(max(int(round_index or 0), 0), len(session.records) - 1)
        return round_inspector_figure(session.records[index])

    def lossless(self, state, progress=gr.Progress()):
        """Decode the prompt with the target alone and compare."""
        try:
            session = _live(state)
            progress(0.2, desc="Decoding with the target alone…")
            return lossless_html(check_lossless(session).to_dict()), ""
        except Exception as exc:
            raise common.failure(exc) from None

    def cost(self, state, progress=gr.Progress()):
        """Measure this session's drafter (a fresh copy, so the session's caches stay as they are) and the target on
        this machine: the break-even τ per γ beside the session's τ."""
        try:
            session = _live(state)
            config = session.config
            if config.drafter == "none":
                raise DraftScopeError("plain decoding has no drafter to measure")
            progress(0.2, desc="Timing the drafter and the target…")
            with MODEL_LOCK:
                drafter = build_drafter(config.drafter, session.target, config.drafter_options, self.allow_local)
                model = measure(session.target, drafter).to_dict()
            taus = {config.gamma: session.stats.tau} if session.stats.target_calls else None
            return cost_model_html(model, taus), ""
        except Exception as exc:
            raise common.failure(exc) from None


def _live(state) -> Session:
    """The user's live session (a loaded trace has no model to check or time)."""
    session = common.get_session((state or {}).get("sid"))
    if session is None:
        raise DraftScopeError("nothing generated yet: press Step or Run first")
    if isinstance(session, Trace):
        raise DraftScopeError("a loaded trace has no model: Reset to start a live session, then Step or Run")
    return session


# ------------------------------------------------------------------------------------------------ layout
def build(allow_local_models: bool = False) -> dict:
    """Create the tab's components in the current Blocks context and wire them; return the components."""
    handlers = Handlers(allow_local=allow_local_models)
    state = gr.State({}, time_to_live=common.state_ttl(), delete_callback=common.forget)
    prompt, chat = widgets.prompt_row()
    with gr.Row():
        target = widgets.target_picker(allow_local=allow_local_models)
        paired = suggested_draft(target.value) is not None  # a Hub pair (a GPU Space): start with its draft model
        drafter = gr.Dropdown(list(DRAFTERS), value="model" if paired else "ngram", label="Drafter", elem_id="drafter")
        verifier = gr.Dropdown(list(VERIFIERS), value="greedy", label="Verifier", elem_id="verifier")
    with gr.Row():
        gamma = gr.Slider(1, min(16, MAX_GAMMA), value=5, step=1, label="γ (draft length)", elem_id="gamma")
        temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0 = greedy)", elem_id="temperature")
        top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="Top-p", elem_id="top-p")
        top_k = gr.Number(value=0, precision=0, minimum=0, label="Top-k (0 = off)", elem_id="top-k")
        seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
    with gr.Row():
        max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="Max new tokens", elem_id="max-new-tokens")
        drafter_options = options.build(DRAFTERS, drafter.value, drafter, allow_local=allow_local_models)
        drafter_options.pair_with(target)
    with gr.Row():
        buttons = widgets.session_buttons()
    status = gr.Markdown("Step runs one draft → verify round; Run streams rounds to the end.", elem_id="status")
    trace = widgets.trace_row()
    strip = gr.HTML(token_strip_html([]), elem_id="token-strip")
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            stats = gr.HTML(stats_html({}), elem_id="stats")
            lossless_button = gr.Button("Lossless check: decode with the target alone", elem_id="lossless-check")
            lossless_result = gr.HTML("", elem_id="lossless-result")
            cost_button = gr.Button("Cost model: why this drafter pays or not", elem_id="cost-model")
            cost_result = gr.HTML("", elem_id="cost-model-result")
        with gr.Column(scale=3):
            stats_chart = gr.Plot(stats_figure({}), show_label=False, elem_id="stats-chart")
    gr.Markdown("### Round inspector\np (target) and q (drafter) over their top tokens at every drafted position; at "
                "a sampled rejection, the residual norm(max(0, p − q)) the replacement is drawn from.")
    round_slider = gr.Slider(0, 1, value=0, step=1, label="Round to inspect", interactive=False,
                             elem_id="inspect-round")
    inspector = gr.Plot(round_inspector_figure(None), show_label=False, elem_id="round-inspector")

    controls = {"prompt": prompt, "chat": chat, "target": target, "drafter": drafter, "verifier": verifier,
                "gamma": gamma, "temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed,
                "max_new_tokens": max_new_tokens, **drafter_options.components}
    outputs = [state, strip, stats, stats_chart, inspector, round_slider, status, trace.records]
    buttons.wire(handlers, state, [controls[name] for name in handlers.setting_names], outputs)
    trace.wire(handlers, state, outputs, status)
    round_slider.release(handlers.inspect, [state, round_slider], [inspector], api_name="inspect_round")
    lossless_button.click(handlers.lossless, [state], [lossless_result, status], api_name="lossless_check",
                          **limits.long_work())
    cost_button.click(handlers.cost, [state], [cost_result, status], api_name="cost_model", **limits.long_work())
    return {"state": state, "prompt": prompt, "target": target, "drafter": drafter, "verifier": verifier,
            "status": status, "token_strip": strip, "controls": controls, "outputs": outputs, "handlers": handlers}
