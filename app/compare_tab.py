"""The Compare tab: two drafter configurations on the same prompt and target, side by side, with a verdict."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from app import common, limits, options, widgets
from core.errors import DraftScopeError
from core.options import option_fields
from core.specdec import MAX_GAMMA, Session
from core.specdec.drafters import DRAFTERS, drafter_class
from core.specdec.trace import Trace, trace_of
from core.specdec.verify import VERIFIERS
from visualizers.compare import compare_verdict
from visualizers.token_strip import stats_html, token_strip_html

SHARED_NAMES = ("prompt", "chat", "target", "temperature", "seed", "max_new_tokens")
SIDE_RUN_NAMES = ("drafter", "verifier", "gamma")  # then the drafters' options (app.options), per side a_… and b_…
OTHER = "B"  # configuration B's label among the trace's companions (the trace is A's)


def side_names(allow_local: bool = False) -> tuple[str, ...]:
    return (*SIDE_RUN_NAMES, *options.option_names(DRAFTERS, allow_local))


def _label(config) -> str:
    """e.g. "model (γ=4, draft_model=tiny-llama, greedy)": the options that differ from the drafter's defaults."""
    defaults = {f.name: f.default for f in option_fields(drafter_class(config.drafter).Options)}
    extra = "".join(f", {k}={v}" for k, v in config.drafter_options.items() if v is not None and v != defaults[k])
    return f"{config.drafter} (γ={config.gamma}{extra}, {config.verifier})"


class CompareHandlers:
    def __init__(self, allow_local: bool = False):
        self.allow_local = allow_local
        names = (*SHARED_NAMES, *(f"{side}_{name}" for side in "ab" for name in side_names(allow_local)))
        self.compare = common.named_endpoint(self._compare, (), names, "Run configuration A to the end, then B, "
                                             "streaming both strips; then the verdict.")

    def _compare(self, values: dict, progress) -> Iterator[tuple]:
        """(strip A, stats A, strip B, stats B, verdict, records JSON): the records (A's trace, B inside it) come with
        the verdict."""
        shared = {k: values[k] for k in SHARED_NAMES}
        a, b = ({**shared, **{k[2:]: v for k, v in values.items() if k.startswith(f"{side}_")}} for side in "ab")
        empty = (token_strip_html([]), stats_html({}))
        try:
            common.check_prompt(shared["prompt"])
            progress(0.1, desc="Loading models…")
            configs = [common.build_config(s) for s in (a, b)]
            sessions = [Session.from_config(config, prompt=shared["prompt"], chat=shared["chat"],
                                            allow_local=self.allow_local) for config in configs]
            views = [empty, empty]
            for side, session in enumerate(sessions):
                for _ in session.run():
                    views[side] = (token_strip_html(session.records), stats_html(session.stats.summary()))
                    yield (*views[0], *views[1], f"Running {'AB'[side]}…", gr.skip())
            verdict = compare_verdict(_label(configs[0]), sessions[0].stats.summary(), _label(configs[1]),
                                      sessions[1].stats.summary())
            same = sessions[0].generated_ids == sessions[1].generated_ids
            if float(shared["temperature"]) == 0.0:
                verdict += " · outputs identical" if same else " · outputs differ (!)"
            trace = trace_of(sessions[0], {"labels": {"A": _label(configs[0]), OTHER: _label(configs[1])},
                                           "verdict": verdict}, {OTHER: sessions[1]})
            yield (*views[0], *views[1], verdict, trace)
        except Exception as exc:  # one message, the page stays usable
            raise common.failure(exc) from None

    @staticmethod
    def load_trace(file) -> tuple:
        """Show a saved comparison (or any chain trace, as A) with no model: the same outputs as Compare."""
        try:
            trace = common.read_trace(file)
            if any(hasattr(r, "nodes") for r in trace.records):
                raise DraftScopeError("this trace holds tree rounds: load it in the Draft trees tab")
            other: Trace | None = trace.companions.get(OTHER)
            views = [(token_strip_html(run.records, run.prompt_text), stats_html(run.stats.summary())) if run
                     else (token_strip_html([]), stats_html({})) for run in (trace, other)]
            verdict = trace.extra.get("verdict") if isinstance(trace.extra.get("verdict"), str) else ""
            missing = "" if other is not None else "Configuration B is not in this trace."
            status = f"{common.loaded_status(trace, missing)} {verdict}".strip()
            return (*views[0], *views[1], status, trace.as_dict())
        except Exception as exc:
            raise common.failure(exc) from None


def _side(name: str, drafter: str, gamma: int, allow_local: bool) -> list:
    """Configuration ``name``'s controls, in ``side_names`` order."""
    with gr.Column():
        gr.Markdown(f"**Configuration {name}**")
        picker = gr.Dropdown(list(DRAFTERS), value=drafter, label="Drafter", elem_id=f"compare-{name}-drafter")
        verifier = gr.Dropdown(list(VERIFIERS), value="greedy", label="Verifier", elem_id=f"compare-{name}-verifier")
        gamma = gr.Slider(1, min(16, MAX_GAMMA), value=gamma, step=1, label="γ", elem_id=f"compare-{name}-gamma")
        controls = options.build(DRAFTERS, drafter, picker, prefix=f"compare-{name}-", allow_local=allow_local)
    return [picker, verifier, gamma, *controls.components.values()]


def build(allow_local_models: bool = False) -> dict:
    handlers = CompareHandlers(allow_local=allow_local_models)
    gr.Markdown("Two drafter configurations, the same prompt, target and seed. They run one after the other on this "
                "machine; tokens/s is measured per run.")
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", lines=3, scale=3, elem_id="compare-prompt",
                            max_length=common.MAX_PROMPT_CHARS)
        with gr.Column(scale=1):
            chat = gr.Checkbox(value=True, label="Chat template", elem_id="compare-chat")
            target = widgets.target_picker("compare-", allow_local_models)
    with gr.Row():
        temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature", elem_id="compare-temperature")
        seed = gr.Number(value=0, precision=0, label="Seed", elem_id="compare-seed")
        max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="Max new tokens", elem_id="compare-max-new-tokens")
    with gr.Row():
        side_a = _side("A", "ngram", 5, allow_local_models)
        side_b = _side("B", "early-exit", 5, allow_local_models)
    button = gr.Button("Compare", variant="primary", elem_id="compare-run")
    verdict = gr.Markdown("", elem_id="compare-verdict")
    trace = widgets.trace_row("compare-")
    with gr.Row():
        with gr.Column():
            strip_a = gr.HTML(token_strip_html([]), elem_id="compare-A-strip")
            stats_a = gr.HTML(stats_html({}), elem_id="compare-A-stats")
        with gr.Column():
            strip_b = gr.HTML(token_strip_html([]), elem_id="compare-B-strip")
            stats_b = gr.HTML(stats_html({}), elem_id="compare-B-stats")
    button.click(handlers.compare, [prompt, chat, target, temperature, seed, max_new_tokens, *side_a, *side_b],
                 [strip_a, stats_a, strip_b, stats_b, verdict, trace.records], api_name="compare",
                 **limits.long_work())
    trace.wire_records(handlers.load_trace, [strip_a, stats_a, strip_b, stats_b, verdict, trace.records], verdict,
                       "compare-")
    return {"prompt": prompt, "verdict": verdict}
