"""The main tab: pick a target, a drafter and a verifier, then step through speculative decoding round by round.

Step runs one draft → verify round; Run streams rounds to the end (Stop halts it after the current round); Reset
starts over. Settings changed between rounds (γ, temperature, top-p, seed, ℓ, η, n-gram size, drafter, verifier)
apply from the next round on; a new target, prompt or chat setting starts a new session.
"""

from __future__ import annotations

from typing import Iterator

import gradio as gr

from app import common
from core.errors import DraftScopeError
from core.prompts import load_prompts
from core.runtime.models import preset_names
from core.specdec import MAX_GAMMA, Session
from core.specdec.drafters import DRAFTERS
from core.specdec.drafters.kangaroo import KangarooDrafter
from core.specdec.lossless import check_lossless
from core.specdec.verify import VERIFIERS
from visualizers.compare import lossless_html
from visualizers.round_inspector import round_inspector_figure
from visualizers.stats_charts import stats_figure
from visualizers.token_strip import stats_html, token_strip_html

SETTING_NAMES = ("prompt", "chat", "target", "drafter", "verifier", "draft_model", "gamma", "temperature", "top_p",
                 "top_k", "seed", "exit_layer", "ngram_size", "max_new_tokens", "eta")
RESTART_ON = ("prompt", "chat", "target")  # everything else changes live between rounds


# ------------------------------------------------------------------------------------------------ rendering
def render(session: Session | None, round_index: int | None = None, figures: bool = True) -> tuple:
    """(strip, stats, stats chart, inspector, round slider) for a session; the inspector shows ``round_index``
    (default: the latest round). ``figures=False`` leaves the two figures and the slider as they are."""
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

    setting_names = SETTING_NAMES
    restart_on = RESTART_ON

    def render(self, session, figures: bool = True) -> tuple:
        return render(session, figures=figures)

    def status(self, session, note: str = "") -> str:
        return _status(session, note)

    def step(self, state, prompt, chat, target, drafter, verifier, draft_model, gamma, temperature, top_p, top_k,
             seed, exit_layer, ngram_size, max_new_tokens, eta=KangarooDrafter.Options.eta, progress=gr.Progress()):
        """One draft → verify round."""
        return self._step(state, self._settings(locals()), progress)

    def run(self, state, prompt, chat, target, drafter, verifier, draft_model, gamma, temperature, top_p, top_k,
            seed, exit_layer, ngram_size, max_new_tokens, eta=KangarooDrafter.Options.eta, progress=gr.Progress()) -> Iterator[tuple]:
        """Rounds one after another until EOS or max new tokens (continuing the current session); Stop halts."""
        yield from self._stream(state, self._settings(locals()), progress)

    def reset(self, state, prompt, chat, target, drafter, verifier, draft_model, gamma, temperature, top_p, top_k,
              seed, exit_layer, ngram_size, max_new_tokens, eta=KangarooDrafter.Options.eta, progress=gr.Progress()):
        """Start over with the current settings (and seed): nothing generated yet."""
        return self._reset(state, self._settings(locals()), progress)

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
            session = common.get_session((state or {}).get("sid"))
            if session is None:
                raise DraftScopeError("nothing generated yet: press Step or Run first")
            progress(0.2, desc="Decoding with the target alone…")
            return lossless_html(check_lossless(session).to_dict()), ""
        except Exception as exc:  # noqa: BLE001
            return "", common.warn(exc)


# ------------------------------------------------------------------------------------------------ layout
def build(allow_local_models: bool = False) -> dict:
    """Create the tab's components in the current Blocks context and wire them; return the components."""
    examples = load_prompts()
    presets = preset_names()
    handlers = Handlers(allow_local=allow_local_models)
    custom = allow_local_models
    info = "a preset" + (", a Hugging Face id or a local directory" if custom else "")

    state = gr.State({}, delete_callback=common.forget)
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", lines=3, scale=3, elem_id="prompt",
                            placeholder="Type a prompt, or pick an example")
        with gr.Column(scale=1):
            example = gr.Dropdown([(f"{e.category} · {e.id}", e.id) for e in examples], value=None,
                                  label="Example prompts (Spec-Bench categories)", elem_id="examples")
            chat = gr.Checkbox(value=True, label="Chat template", elem_id="chat")
    with gr.Row():
        target = gr.Dropdown(presets, value=common.default_target(), label="Target", info=info,
                             allow_custom_value=custom, elem_id="target")
        drafter = gr.Dropdown(list(DRAFTERS), value="ngram", label="Drafter", elem_id="drafter")
        verifier = gr.Dropdown(list(VERIFIERS), value="greedy", label="Verifier", elem_id="verifier")
        draft_model = gr.Dropdown(presets, value="tiny-llama", label="Draft model", info="for the 'model' drafter",
                                  allow_custom_value=custom, elem_id="draft-model")
    with gr.Row():
        gamma = gr.Slider(1, min(16, MAX_GAMMA), value=5, step=1, label="γ (draft length)", elem_id="gamma")
        temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0 = greedy)", elem_id="temperature")
        top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="Top-p", elem_id="top-p")
        top_k = gr.Number(value=0, precision=0, minimum=0, label="Top-k (0 = off)", elem_id="top-k")
        seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
    with gr.Row():
        exit_layer = gr.Slider(0, 29, value=0, step=1, label="ℓ: early-exit layer (0 = a fifth of the depth)",
                               elem_id="exit-layer")
        ngram_size = gr.Slider(1, 8, value=3, step=1, label="n-gram size (prompt lookup)", elem_id="ngram-size")
        max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="Max new tokens", elem_id="max-new-tokens")
        eta = gr.Slider(0, 0.99, value=KangarooDrafter.Options.eta, step=0.05, elem_id="eta",
                        label="η: kangaroo stops drafting below this confidence")
    with gr.Row():
        step = gr.Button("Step", variant="primary", elem_id="step")
        run = gr.Button("Run", elem_id="run")
        stop = gr.Button("Stop", variant="stop", elem_id="stop")
        reset = gr.Button("Reset", elem_id="reset")
    status = gr.Markdown("Step runs one draft → verify round; Run streams rounds to the end.", elem_id="status")
    strip = gr.HTML(token_strip_html([]), elem_id="token-strip")
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            stats = gr.HTML(stats_html({}), elem_id="stats")
            lossless_button = gr.Button("Lossless check: decode with the target alone", elem_id="lossless-check")
            lossless_result = gr.HTML("", elem_id="lossless-result")
        with gr.Column(scale=3):
            stats_chart = gr.Plot(stats_figure({}), show_label=False, elem_id="stats-chart")
    gr.Markdown("### Round inspector\np (target) and q (drafter) over their top tokens at every drafted position; at "
                "a sampled rejection, the residual norm(max(0, p − q)) the replacement is drawn from.")
    round_slider = gr.Slider(0, 1, value=0, step=1, label="Round to inspect", interactive=False,
                             elem_id="inspect-round")
    inspector = gr.Plot(round_inspector_figure(None), show_label=False, elem_id="round-inspector")

    settings = [prompt, chat, target, drafter, verifier, draft_model, gamma, temperature, top_p, top_k, seed,
                exit_layer, ngram_size, max_new_tokens, eta]
    outputs = [state, strip, stats, stats_chart, inspector, round_slider, status]
    step.click(handlers.step, [state, *settings], outputs, api_name="step", concurrency_limit=None)
    run.click(handlers.run, [state, *settings], outputs, api_name="run", concurrency_limit=None)
    # Stop sets a flag that Run reads between rounds, so the page keeps the last round's records and figures
    stop.click(handlers.stop, [state], None, api_name="stop", queue=False)
    reset.click(handlers.reset, [state, *settings], outputs, api_name="reset", concurrency_limit=None)
    round_slider.release(handlers.inspect, [state, round_slider], [inspector], api_name="inspect_round")
    lossless_button.click(handlers.lossless, [state], [lossless_result, status], api_name="lossless_check",
                          concurrency_limit=None)
    example.input(lambda example_id: next((e.prompt for e in examples if e.id == example_id), gr.skip()),
                  example, prompt, api_name="example_prompt", queue=False)
    return {"state": state, "prompt": prompt, "target": target, "drafter": drafter, "verifier": verifier,
            "status": status, "token_strip": strip}
