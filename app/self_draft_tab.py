"""The Self-drafting tab: the target drafts for itself (Kangaroo: its first ℓ layers + a trained adapter + its own
LM head; S2D: nested exits over its first layers, each token drafted by the first exit whose confidence reaches θ;
early exit: its first ℓ layers + its head), and Kangaroo stops drafting once its confidence falls below η.

Step runs one round; Run streams rounds to the end (Stop halts it after the current round); Reset starts over.
Settings other than the prompt, chat template and target apply from the next round on. The sweep runs the prompt
with Kangaroo at several η (or, with the sorted drafter chosen, S2D at several θ) and once with plain decoding on the
same token budget and plots τ and tokens/s. The
EasySpec timeline measures the early-exit drafter's sublayers on this machine and models its layer-parallel forward on
N devices.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import gradio as gr
import torch
from transformers import DynamicCache

from app import common, limits, options, widgets
from core.errors import DraftScopeError
from core.runtime.layers import DEEP_EXIT, embed, exit_layer_at, head, run_layers
from core.runtime.models import load_model
from core.specdec import MAX_GAMMA, MODEL_LOCK, Session, SessionConfig
from core.specdec.drafters.easyspec import EasySpecDrafter, modelled_latency
from core.specdec.drafters.kangaroo import KangarooDrafter
from core.specdec.drafters.sorted import SortedDrafter, parse_thresholds
from core.specdec.trace import Trace
from visualizers.self_draft import (
    confidence_figure,
    easyspec_timeline_figure,
    eta_sweep_figure,
    exit_summary_html,
    exit_token_figure,
    theta_sweep_figure,
)
from visualizers.token_strip import token_strip_html

SETTING_NAMES = ("prompt", "chat", "target", "drafter", "gamma", "eta", "theta1", "theta2", "exit_layer",
                 "temperature", "seed", "max_new_tokens")
SELF_DRAFTERS = ("kangaroo", "sorted", "early-exit")
SWEEP_ETAS = (0.0, 0.2, 0.4, 0.6, 0.8)
SWEEP_THETAS = (0.0, 0.25, 0.5, 0.75, 1.0)  # S2D: the same θ at every exit but the last (1 = always the deepest)
SWEEP_MAX_NEW_TOKENS = 64
WARM_UP_TOKENS = 4  # a short untimed run before the sweep, so the first η does not pay for warm-up
TIMING_REPEATS = 3  # timed runs per sublayer (and of the calibration pass); the median counts
CALIBRATION_TOKENS, SCRATCH_CONTEXT = 2, 32  # the calibration pass timed: 2 tokens on a short scratch cache
DEFAULT_THETAS = tuple(parse_thresholds(SortedDrafter.Options().thresholds, 3))  # θ₁, θ₂ of S2D's three exits


# ------------------------------------------------------------------------------------------------ configuration
def self_draft_config(settings: dict) -> SessionConfig:
    """Engine settings: greedy verification at temperature 0, else the sampling rule; θ₁, θ₂ become S2D's
    thresholds. Each option reaches only the drafter that declares it (``common.build_config``: η Kangaroo, ℓ early
    exit with 0 = a fifth of the depth, the thresholds S2D), so moving another drafter's slider rebuilds nothing."""
    verifier = "greedy" if float(settings["temperature"]) == 0 else "sampling"
    theta1, theta2 = (float(settings.get(k, d)) for k, d in zip(("theta1", "theta2"), DEFAULT_THETAS, strict=True))
    return common.build_config({**settings, "verifier": verifier, "thresholds": f"{theta1:g},{theta2:g}"})


def eta_sweep(settings: dict, progress=None, allow_local: bool = False) -> list[dict]:
    """Run the prompt with Kangaroo at each η in ``SWEEP_ETAS`` and once with plain decoding (drafter "none"), all on
    the same budget (max new tokens, at most ``SWEEP_MAX_NEW_TOKENS``) and seed; one row of statistics per run, the
    plain run last. Each η row also carries the plain run's tokens/s."""
    return _sweep(settings, "kangaroo", "eta", SWEEP_ETAS, progress, allow_local)


def theta_sweep(settings: dict, progress=None, allow_local: bool = False) -> list[dict]:
    """The same for S2D: the sorted drafter with one θ at every exit but the last, for each θ in ``SWEEP_THETAS``."""
    return _sweep(settings, "sorted", "theta", SWEEP_THETAS, progress, allow_local)


def _sweep(settings: dict, drafter: str, key: str, values, progress, allow_local: bool) -> list[dict]:
    common.check_prompt(settings["prompt"])
    budget = min(int(settings["max_new_tokens"]), SWEEP_MAX_NEW_TOKENS)
    base = {**settings, "drafter": drafter, "max_new_tokens": budget}
    configs = [self_draft_config({**base, "eta": v, "theta1": v, "theta2": v}) for v in values]
    configs.append(dataclasses.replace(configs[0], drafter="none", drafter_options={}))
    progress = progress or (lambda *args, **kwargs: None)
    progress(0.0, desc="Loading models and warming up…")
    warm = Session.from_config(dataclasses.replace(configs[0], max_new_tokens=min(budget, WARM_UP_TOKENS)),
                               prompt=settings["prompt"], chat=settings["chat"], allow_local=allow_local)
    for _ in warm.run():
        pass
    symbol = {"eta": "η", "theta": "θ"}[key]
    rows = []
    for k, (config, value) in enumerate(zip(configs, [*values, None], strict=True)):
        label = "plain decoding" if config.drafter == "none" else f"{symbol} = {value:.2f}"
        progress((k + 1) / (len(configs) + 1), desc=f"{label} ({k + 1} of {len(configs)})…")
        session = Session.from_config(config, prompt_ids=warm.prompt_ids, allow_local=allow_local)
        for _ in session.run():
            pass
        s = session.stats.summary()
        rows.append({"drafter": config.drafter, key: value, "tau": s["tau"], "alpha": s["alpha"],
                     "tokens_per_second": s["tokens_per_second"], "mean_draft_len": s["mean_draft_len"],
                     "generated": s["generated"], "rounds": s["rounds"]})
    for row in rows[:-1]:
        row["plain_tokens_per_second"] = rows[-1]["tokens_per_second"]
    return rows


def easyspec_exit_layer(exit_layer, n_layers: int) -> int:
    """The early-exit drafter EasySpec runs layer-parallel: the tab's ℓ when set, else four fifths of the depth (a
    fifth, early exit's default, leaves too few layers to group)."""
    return int(exit_layer or 0) or exit_layer_at(n_layers, DEEP_EXIT)


@torch.inference_mode()
def calibration_ms(drafter: EasySpecDrafter, repeats: int = TIMING_REPEATS) -> float:
    """Median wall time (ms) of one exact forward of ``CALIBRATION_TOKENS`` tokens through the drafter's network,
    head included, on a ``SCRATCH_CONTEXT``-token scratch cache (one warm-up run, not counted)."""
    net = drafter.net
    vocab = net.get_input_embeddings().weight.shape[0]
    cache = DynamicCache(config=net.config)
    cache.activate_past_recording()  # sliding-window layers keep their past, so the crop below can cut back to it
    run_layers(net, embed(net, [i % vocab for i in range(1, SCRATCH_CONTEXT + 1)]), 0, drafter.n_layers, cache, 0)
    ids = [(SCRATCH_CONTEXT + i) % vocab for i in range(CALIBRATION_TOKENS)]
    device = next(net.parameters()).device

    def forward() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        head(net, run_layers(net, embed(net, ids), 0, drafter.n_layers, cache, SCRATCH_CONTEXT))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ms = (time.perf_counter() - t) * 1e3
        cache.crop(-CALIBRATION_TOKENS)  # back to the scratch context for the next run
        return ms

    return statistics.median([forward() for _ in range(repeats + 1)][1:])


def _easyspec_status(target: str, drafter: EasySpecDrafter, times: dict, devices: int, calibration: float) -> str:
    latency = modelled_latency(times, drafter.group_size, devices)
    return (f"EasySpec timeline for {target}: early exit at ℓ = {drafter.n_layers}, group size {drafter.group_size}, "
            f"{devices} device{'s' * (devices != 1)}: {latency['sequential_ms']:.3f} → {latency['parallel_ms']:.3f} "
            f"ms per drafted token ({latency['speedup']:.2f}×, modelled); calibration pass {calibration:.3f} ms once "
            f"per round. Sublayers measured on {times['device']}.")


def _sweep_status(rows: list[dict], note: str = "", key: str = "eta") -> str:
    symbol = {"eta": "η", "theta": "θ"}[key]
    plain, swept = rows[-1], [r for r in rows[:-1] if r["tokens_per_second"] is not None]
    best = max(swept, key=lambda r: r["tokens_per_second"], default=None)
    head = f"{symbol} sweep over {plain['generated']} new tokens"
    if best is None or plain["tokens_per_second"] is None:
        return f"{head}: done. {note}".strip()
    return (f"{head}: fastest at {symbol} = {best[key]:.2f} with {best['tokens_per_second']:.1f} tokens/s (τ "
            f"{best['tau']:.2f}); plain decoding {plain['tokens_per_second']:.1f} tokens/s. {note}").strip()


# ------------------------------------------------------------------------------------------------ rendering
def render(session: Session | Trace | None, figures: bool = True) -> tuple:
    """(token strip, confidence figure, summary) for a session or a loaded trace; ``figures=False`` leaves the figure
    as it is."""
    if session is None:
        return token_strip_html([]), confidence_figure([], None), exit_summary_html([], {})
    records = session.records
    strip = token_strip_html(records, session.prompt_text)
    summary = exit_summary_html(records, session.stats.summary())
    if not figures:
        return strip, gr.skip(), summary
    config = session.config
    if any("exits" in (r.draft_info or {}) for r in records[-1:]) or (config.drafter == "sorted" and not records):
        return strip, exit_token_figure(records), summary
    return strip, confidence_figure(records, _eta(session)), summary


def _eta(session: Session | Trace) -> float | None:
    """Kangaroo's η (None for other drafters); a trace has it in its settings, else its default."""
    if isinstance(session, Trace):
        if session.config.drafter != "kangaroo":
            return None
        eta = session.config.drafter_options.get("eta")
        return float(eta) if isinstance(eta, int | float) else KangarooDrafter.Options().eta
    return session.drafter.eta if isinstance(session.drafter, KangarooDrafter) else None


def _status(session: Session, note: str = "") -> str:
    rounds, tokens = len(session.records), len(session.generated_ids)
    head = f"{rounds} round{'s' * (rounds != 1)}, {tokens} token{'s' * (tokens != 1)}"
    head = f"Finished ({session.finish_reason}) after {head}." if session.done else f"{head} so far."
    info = session.records[-1].draft_info if session.records else {}
    if info.get("exits") is not None:
        used = ", ".join(f"layer {info['exit_layers'][k]}" for k in info["exits"])
        head += f" Last round: drafted from {used or 'no exit'}."
    elif info.get("stopped_by"):
        drafted = len(session.records[-1].drafted)
        why = f"its confidence fell below η = {info['eta']:.2f}" if info["stopped_by"] == "eta" else "γ tokens"
        head += f" Last round: drafting stopped after {drafted} token{'s' * (drafted != 1)} ({why})."
    return f"{head} {note}".strip()


# ------------------------------------------------------------------------------------------------ handlers
class Handlers(common.SessionHandlers):
    """Event handlers. ``allow_local`` lets model fields name Hugging Face ids or local directories."""

    setting_names = SETTING_NAMES

    def __init__(self, allow_local: bool = False):
        super().__init__(allow_local)
        self.sweep = self.endpoint(self._sweep_plot, "Kangaroo at each η of the sweep (S2D at each θ when the sorted "
                                   "drafter is chosen) and plain decoding, on the current prompt and settings: "
                                   "(figure, status).")

    def config(self, settings: dict) -> SessionConfig:
        return self_draft_config(settings)

    def render(self, session, figures: bool = True) -> tuple:
        return render(session, figures=figures)

    def status(self, session, note: str = "") -> str:
        return _status(session, note)

    def explain(self, exc: Exception) -> Exception:
        return _explain(exc)

    def _sweep_plot(self, state, settings: dict, progress):
        try:
            drafter, max_new_tokens = settings["drafter"], settings["max_new_tokens"]
            if drafter == "sorted":
                rows, key, figure = theta_sweep(settings, progress, self.allow_local), "theta", theta_sweep_figure
                note = ""
            else:
                rows, key, figure = eta_sweep(settings, progress, self.allow_local), "eta", eta_sweep_figure
                note = "" if drafter == "kangaroo" else "(The sweep varies Kangaroo's η, whatever the drafter above.)"
            if int(max_new_tokens) > SWEEP_MAX_NEW_TOKENS:
                note = f"{note} Capped at {SWEEP_MAX_NEW_TOKENS} new tokens a run.".strip()
            return figure(rows), _sweep_status(rows, note, key)
        except Exception as exc:
            raise common.failure(_explain(exc)) from None

    def easyspec(self, target, exit_layer, group_size, devices, progress=gr.Progress()):
        """Measure the early-exit drafter's sublayers and calibration pass for ``target`` and model EasySpec's
        layer-parallel forward on ``devices`` devices: (figure, status)."""
        try:
            progress(0.1, desc="Loading the target…")
            loaded = load_model(target, allow_local=self.allow_local)
            group_size, devices = int(group_size), int(devices)
            progress(0.5, desc="Measuring sublayer times…")
            with MODEL_LOCK:
                drafter = EasySpecDrafter(loaded, base="early-exit", group_size=group_size,
                                          exit_layer=easyspec_exit_layer(exit_layer, loaded.n_layers))
                times = drafter.layer_times(n_tokens=1, repeats=TIMING_REPEATS)
                calibration = calibration_ms(drafter)
            progress(1.0, desc="Done")
            return (easyspec_timeline_figure(times, group_size, devices, calibration),
                    _easyspec_status(loaded.name, drafter, times, devices, calibration))
        except Exception as exc:
            raise common.failure(_explain(exc)) from None


def _explain(exc: Exception) -> Exception:
    """A missing adapter says what to do instead."""
    if isinstance(exc, DraftScopeError) and "adapter not found" in str(exc):
        return DraftScopeError(f"{exc}. Early exit drafts without an adapter: choose early-exit, or another target")
    return exc


# ------------------------------------------------------------------------------------------------ layout
def build(allow_local_models: bool = False) -> dict:
    """Create the tab's components in the current Blocks context and wire them; return the components."""
    handlers = Handlers(allow_local=allow_local_models)
    gr.Markdown("The target drafts for itself. **Kangaroo** (Liu et al., 2024) runs its first ℓ layers, a small "
                "trained adapter and its own LM head; the shallow layers' cache is shared, so verification runs "
                "only the deep layers. Drafting stops as soon as the drafter's top probability falls below **η** "
                "(or after γ tokens). **S2D** (sorted, Kavehzadeh et al., 2024) is one drafter with nested exits "
                "over the first third of the layers (5, 7 and 10 of SmolLM2's 30), trained together and sharing the "
                "head: each token comes from the first exit whose confidence reaches its **θ**, deeper layers of "
                "early-exited tokens are filled later; it serves any target with its tokenizer. **Early exit** uses "
                "the first ℓ layers and the head, with no adapter and no η. Verification is greedy at temperature 0, "
                "the sampling rule above it.")
    state = gr.State({}, time_to_live=common.state_ttl(), delete_callback=common.forget)
    prompt, chat = widgets.prompt_row("self-draft-")
    with gr.Row():
        target = widgets.target_picker("self-draft-", allow_local_models)
        drafter = gr.Dropdown(list(SELF_DRAFTERS), value="kangaroo", label="Drafter",
                              info="kangaroo needs a trained adapter for the target; sorted uses the exits "
                              "shipped for it, untrained early exits otherwise", elem_id="self-draft-drafter")
        gamma = gr.Slider(1, min(16, MAX_GAMMA), value=6, step=1, label="γ (most drafts a round)",
                          elem_id="self-draft-gamma")
        eta = options.field_control("kangaroo", "eta", label="η: stop drafting below this confidence (kangaroo)",
                                    elem_id="self-draft-eta")
    with gr.Row():  # θ is a probability: 0..1 (parse_thresholds checks it)
        theta1 = gr.Slider(0, 1, value=DEFAULT_THETAS[0], step=0.05, label="θ₁: draft from exit 1 at this "
                           "confidence (sorted)", elem_id="self-draft-theta1")
        theta2 = gr.Slider(0, 1, value=DEFAULT_THETAS[1], step=0.05, label="θ₂: else from exit 2 at this confidence "
                           "(sorted; exit 3 always drafts)", elem_id="self-draft-theta2")
    with gr.Row():
        exit_layer = options.field_control("early-exit", "exit_layer", label="ℓ for early-exit (0 = a fifth of the "
                                           "depth; Kangaroo's ℓ comes with its adapter)",
                                           elem_id="self-draft-exit-layer")
        temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0 = greedy)",
                                elem_id="self-draft-temperature")
        seed = gr.Number(value=0, precision=0, label="Seed", elem_id="self-draft-seed")
        max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="Max new tokens",
                                   elem_id="self-draft-max-new-tokens")
    with gr.Row():
        buttons = widgets.session_buttons("self-draft-")
        sweep = gr.Button("η / θ sweep", elem_id="self-draft-sweep")
    status = gr.Markdown("Step runs one draft → verify round; Run streams rounds to the end.",
                         elem_id="self-draft-status")
    trace = widgets.trace_row("self-draft-")
    strip = gr.HTML(token_strip_html([]), elem_id="self-draft-strip")
    with gr.Row():
        with gr.Column(scale=1, min_width=340):
            summary = gr.HTML(exit_summary_html([], {}), elem_id="self-draft-summary")
        with gr.Column(scale=2):
            confidence = gr.Plot(confidence_figure([], None), show_label=False, elem_id="self-draft-confidence")
    gr.Markdown("### η / θ sweep\nThe prompt with Kangaroo at η = " + ", ".join(f"{e:g}" for e in SWEEP_ETAS)
                + " (with the sorted drafter chosen: S2D at θ = " + ", ".join(f"{t:g}" for t in SWEEP_THETAS)
                + f" at both exits) and once with plain decoding (no drafter), same seed and budget (max new tokens, "
                f"at most {SWEEP_MAX_NEW_TOKENS}): a low η drafts more but wastes work on rejected tokens, a high η "
                "drafts little; a low θ drafts from the cheap shallow exit, a high θ from the deeper, better one.")
    sweep_plot = gr.Plot(eta_sweep_figure([]), show_label=False, elem_id="self-draft-sweep-plot")
    gr.Markdown("### EasySpec timeline\nEasySpec runs the drafter's layers in groups whose attention "
                "sublayers all read the group's input, so N devices can run them at once; one exact calibration "
                "pass per round repairs the drafter's cache. The drafter here is the target's first ℓ layers (the ℓ "
                "slider; 0 = four fifths of the depth).")
    with gr.Row():
        group_size = options.field_control("easyspec", "group_size", label="Group size (layers per parallel group)",
                                           elem_id="self-draft-group-size")
        devices = gr.Slider(1, 8, value=4, step=1, label="Devices", elem_id="self-draft-devices")
        easyspec = gr.Button("EasySpec timeline", elem_id="self-draft-easyspec")
    timeline = gr.Plot(easyspec_timeline_figure(None, 4, 4), show_label=False, elem_id="self-draft-timeline")
    gr.Markdown("A model, not a measurement of multi-device hardware: every bar is a sublayer time measured on this "
                "single device, arranged as N devices would run them; transfers and synchronisation are not "
                "modelled.")

    settings = [prompt, chat, target, drafter, gamma, eta, theta1, theta2, exit_layer, temperature, seed,
                max_new_tokens]
    outputs = [state, strip, confidence, summary, status, trace.records]
    buttons.wire(handlers, state, settings, outputs, "self-draft-")
    trace.wire(handlers, state, outputs, status, "self-draft-")
    sweep.click(handlers.sweep, [state, *settings], [sweep_plot, status], api_name="self_draft_sweep",
                **limits.long_work())
    easyspec.click(handlers.easyspec, [target, exit_layer, group_size, devices], [timeline, status],
                   api_name="self_draft_easyspec", **limits.long_work())
    return {"state": state, "prompt": prompt, "target": target, "drafter": drafter, "eta": eta, "theta1": theta1,
            "theta2": theta2, "status": status, "confidence": confidence}
