"""The Compare tab: two drafter configurations on the same prompt and target, side by side, with a verdict."""

from __future__ import annotations

from typing import Iterator

import gradio as gr

from app import common
from core.runtime.models import preset_names
from core.specdec import MAX_GAMMA, Session
from core.specdec.drafters import DRAFTERS
from core.specdec.verify import VERIFIERS
from visualizers.compare import compare_verdict
from visualizers.token_strip import stats_html, token_strip_html

SIDE_NAMES = ("drafter", "verifier", "draft_model", "gamma", "exit_layer", "ngram_size")


def _label(settings: dict) -> str:
    extra = {"model": f", {settings['draft_model']}", "early-exit": f", ℓ={settings['exit_layer'] or 'auto'}",
             "ngram": f", n={settings['ngram_size']}"}.get(settings["drafter"], "")
    return f"{settings['drafter']} (γ={settings['gamma']}{extra}, {settings['verifier']})"


class CompareHandlers:
    def __init__(self, allow_local: bool = False):
        self.allow_local = allow_local

    def compare(self, prompt, chat, target, temperature, seed, max_new_tokens, a_drafter, a_verifier,
                a_draft_model, a_gamma, a_exit_layer, a_ngram_size, b_drafter, b_verifier, b_draft_model, b_gamma,
                b_exit_layer, b_ngram_size, progress=gr.Progress()) -> Iterator[tuple]:
        """Run configuration A to the end, then B, streaming both strips; then the verdict."""
        values = locals()
        shared = {k: values[k] for k in ("prompt", "chat", "target", "temperature", "seed", "max_new_tokens")}
        a = {**shared, **{k: values[f"a_{k}"] for k in SIDE_NAMES}}
        b = {**shared, **{k: values[f"b_{k}"] for k in SIDE_NAMES}}
        empty = (token_strip_html([]), stats_html({}))
        try:
            common.check_prompt(prompt)
            progress(0.1, desc="Loading models…")
            sessions = [Session.from_config(common.build_config(s), prompt=prompt, chat=chat,
                                            allow_local=self.allow_local) for s in (a, b)]
            views = [empty, empty]
            for side, session in enumerate(sessions):
                for _ in session.run():
                    views[side] = (token_strip_html(session.records), stats_html(session.stats.summary()))
                    yield (*views[0], *views[1], f"Running {'AB'[side]}…")
            verdict = compare_verdict(_label(a), sessions[0].stats.summary(), _label(b), sessions[1].stats.summary())
            same = sessions[0].generated_ids == sessions[1].generated_ids
            if float(temperature) == 0.0:
                verdict += " · outputs identical" if same else " · outputs differ (!)"
            yield (*views[0], *views[1], verdict)
        except Exception as exc:  # noqa: BLE001 - one message, the page stays usable
            yield (*empty, *empty, common.warn(exc))


def _side(name: str, drafter: str, gamma: int) -> list:
    presets = preset_names()
    with gr.Column():
        gr.Markdown(f"**Configuration {name}**")
        return [
            gr.Dropdown(list(DRAFTERS), value=drafter, label="Drafter", elem_id=f"compare-{name}-drafter"),
            gr.Dropdown(list(VERIFIERS), value="greedy", label="Verifier", elem_id=f"compare-{name}-verifier"),
            gr.Dropdown(presets, value="tiny-llama", label="Draft model (for 'model')",
                        elem_id=f"compare-{name}-draft-model"),
            gr.Slider(1, min(16, MAX_GAMMA), value=gamma, step=1, label="γ", elem_id=f"compare-{name}-gamma"),
            gr.Slider(0, 29, value=0, step=1, label="ℓ (early-exit; 0 = auto)", elem_id=f"compare-{name}-exit-layer"),
            gr.Slider(1, 8, value=3, step=1, label="n-gram size", elem_id=f"compare-{name}-ngram-size"),
        ]


def build(allow_local_models: bool = False) -> dict:
    handlers = CompareHandlers(allow_local=allow_local_models)
    gr.Markdown("Two drafter configurations, the same prompt, target and seed. They run one after the other on this "
                "machine; tokens/s is measured per run.")
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", lines=3, scale=3, elem_id="compare-prompt")
        with gr.Column(scale=1):
            chat = gr.Checkbox(value=True, label="Chat template", elem_id="compare-chat")
            target = gr.Dropdown(preset_names(), value=common.default_target(), label="Target",
                                 allow_custom_value=allow_local_models, elem_id="compare-target")
    with gr.Row():
        temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature", elem_id="compare-temperature")
        seed = gr.Number(value=0, precision=0, label="Seed", elem_id="compare-seed")
        max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="Max new tokens", elem_id="compare-max-new-tokens")
    with gr.Row():
        side_a = _side("A", "ngram", 5)
        side_b = _side("B", "early-exit", 5)
    button = gr.Button("Compare", variant="primary", elem_id="compare-run")
    verdict = gr.Markdown("", elem_id="compare-verdict")
    with gr.Row():
        with gr.Column():
            strip_a = gr.HTML(token_strip_html([]), elem_id="compare-A-strip")
            stats_a = gr.HTML(stats_html({}), elem_id="compare-A-stats")
        with gr.Column():
            strip_b = gr.HTML(token_strip_html([]), elem_id="compare-B-strip")
            stats_b = gr.HTML(stats_html({}), elem_id="compare-B-stats")
    button.click(handlers.compare, [prompt, chat, target, temperature, seed, max_new_tokens, *side_a, *side_b],
                 [strip_a, stats_a, strip_b, stats_b, verdict], api_name="compare", concurrency_limit=None)
    return {"prompt": prompt, "verdict": verdict}
