"""The "Adaptive & parallel" tab: drafters that change how they draft as the session goes on, and a drafter that runs
beside the target.

- ADED (a tri-gram store searched by MCTS, boosted online by what the target emits): one round's search (visits, mean
  value, prior per node) and, over the session, acceptance against how many store rows the online update changed,
  with adaptation on and off on the same prompt;
- PEARL (the next draft made while the target verifies this one): the two lanes as Gantt charts, parallel (two
  threads) and serial on the same prompt and seed, plus a two-device model built from the serial run's times;
- adaptive draft length (a heuristic γ schedule, a confidence stop): γ, drafted and accepted tokens per round;
- the n-gram drafter's γ × n sweep: tokens/s and τ as heatmaps.

Every run here goes to the end of the prompt's token budget at once (no stepping). Verification is greedy at
temperature 0; above it the sampling rule (ADED, which has no probabilities: draw-and-match).
"""

from __future__ import annotations

import dataclasses
import math

import gradio as gr

from app import common, limits, options, widgets
from core.errors import DraftScopeError
from core.runtime.models import LoadedModel, load_model
from core.specdec import MAX_GAMMA, Session, SessionConfig
from core.specdec.drafters import DRAFTERS
from core.specdec.drafters.base import ConfidenceOptions, LengthOptions
from core.specdec.trace import Trace, trace_of
from visualizers.adaptive import (
    adaptation_figure,
    aded_round_figure,
    aded_summary,
    gamma_figure,
    measured_segments,
    modelled_segments,
    pearl_gantt_figure,
    sweep_heatmaps,
)

MAX_RUN_TOKENS = 256
DEFAULT_TOKENS = 48  # every section runs the prompt to this many new tokens by default: quick on a CPU
DEFAULT_PROMPT = "summarization-1"  # a long prompt whose answer repeats it: n-grams and ADED find something to copy
ADAPT_RUNS = {"adapt on": True, "adapt off": False}  # the ADED runs compared: label → the adapt option
ADED_SHAPES = ("chain", "budget:8", "budget:16", "budget:32")  # "chain": no tree
SWEEP_GAMMAS = (1, 2, 3, 5, 8)
SWEEP_SIZES = (1, 2, 3, 4)
SWEEP_TOKENS, SWEEP_MAX_TOKENS = 32, 64
WARM_UP_TOKENS = 4  # an untimed short run before timed comparisons, so the first one does not pay for warm-up
LENGTH_DRAFTERS = tuple(name for name, cls in DRAFTERS.items() if issubclass(cls.Options, LengthOptions))


# ------------------------------------------------------------------------------------------------ checks
def whole(value, name: str, lo: int, hi: int) -> int:
    """``value`` as an int in ``lo``..``hi`` (a DraftScopeError naming ``name`` otherwise)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (number.is_integer() and lo <= number <= hi):
        raise DraftScopeError(f"{name} must be a whole number in {lo}..{hi}, got {value!r}")
    return int(number)


def number(value, name: str, lo: float, hi: float) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if not lo <= out <= hi:
        raise DraftScopeError(f"{name} must be in [{lo:g}, {hi:g}], got {value!r}")
    return out


def min_ngram_size(n: int) -> int:
    """The sweep's shortest match for longest match ``n``: single tokens only when n = 1, else 2 (the drafter's
    default: single-token matches are mostly wrong)."""
    return 1 if n == 1 else 2


def verifier_for(drafter: str, temperature: float) -> str:
    """Greedy at temperature 0; above it the sampling rule, or draw-and-match for ADED (no q: its drafts are
    deterministic, and match also verifies its trees)."""
    if temperature == 0:
        return "greedy"
    return "match" if drafter == "aded" else "sampling"


def as_gr_error(exc: Exception) -> gr.Error:
    """Any failure as a gr.Error with one clear line (the page shows it as a toast, never a traceback)."""
    if isinstance(exc, gr.Error):
        return exc
    return gr.Error(common.error_text(exc), print_exception=not isinstance(exc, DraftScopeError))


def _first_drafted(records: list) -> int:
    """The first round that drafted something (0 when none did): a better first view than an empty round."""
    return next((i for i, r in enumerate(records) if getattr(r, "nodes", None) or getattr(r, "drafted", None)), 0)


# ------------------------------------------------------------------------------------------------ handlers
class Handlers:
    """The tab's event handlers. ``allow_local`` lets the target field name Hugging Face ids or local directories."""

    def __init__(self, allow_local: bool = False):
        self.allow_local = allow_local

    def _setup(self, target, prompt, chat, max_new_tokens, temperature, seed,
               progress) -> tuple[LoadedModel, list[int], dict]:
        """The shared settings, checked: (the target, the prompt's ids, SessionConfig fields)."""
        prompt = common.check_prompt(prompt)
        fields = {"max_new_tokens": whole(max_new_tokens, "max new tokens", 1, MAX_RUN_TOKENS),
                  "temperature": number(temperature, "temperature", 0.0, 2.0),
                  "seed": whole(seed if seed is not None else 0, "seed", 0, 2**31 - 1)}
        progress(0.02, desc="Loading the target (the first time takes a while)…")
        model = load_model((target or "").strip(), allow_local=self.allow_local)
        return model, model.encode(prompt, chat=bool(chat)), fields

    def _run(self, config: SessionConfig, ids: list[int], progress, desc: str, lo: float = 0.0,
             hi: float = 1.0) -> Session:
        """One session to the end, the progress bar moving from ``lo`` to ``hi`` as tokens come."""
        session = Session.from_config(config, prompt_ids=ids, allow_local=self.allow_local)
        progress(lo, desc=desc)
        for _ in session.run():
            progress(lo + (hi - lo) * len(session.generated_ids) / config.max_new_tokens, desc=desc)
        return session

    @staticmethod
    def _config(model: LoadedModel, drafter: str, drafter_options: dict, gamma: int, fields: dict,
                **more) -> SessionConfig:
        return SessionConfig(target=model.name, drafter=drafter, verifier=verifier_for(drafter, fields["temperature"]),
                             gamma=gamma, drafter_options=drafter_options, **fields, **more)

    # -------------------------------------------------------------------------------------------- ADED
    def run_aded(self, target, prompt, chat, max_new_tokens, temperature, seed, gamma, shape, store, iterations,
                 learn_prompt, min_share, state=None, progress=gr.Progress()) -> tuple:
        """ADED on the prompt twice, online adaptation on and off: (state, run picker, round slider, the round's
        search, acceptance and boosted rows per round, summary, records JSON: the adapt-on run's trace with the
        adapt-off run inside it)."""
        try:
            model, ids, fields = self._setup(target, prompt, chat, max_new_tokens, temperature, seed, progress)
            gamma = whole(gamma, "γ", 1, MAX_GAMMA)
            shape = (shape or "").strip()
            tree = "" if shape in ("", "chain") else shape
            base = {"store": store, "iterations": whole(iterations, "ADED iterations", 1, 500),
                    "learn_prompt": bool(learn_prompt), "min_share": number(min_share, "minimum visit share", 0, 0.95)}
            sessions = {}
            for k, (label, adapt) in enumerate(ADAPT_RUNS.items()):
                config = self._config(model, "aded", {**base, "adapt": adapt}, gamma, fields, tree=tree)
                limits.check_tree(config)
                sessions[label] = self._run(config, ids, progress, f"ADED, {label}…", (k + 0.1) / len(ADAPT_RUNS),
                                            (k + 1) / len(ADAPT_RUNS))
        except Exception as exc:
            raise as_gr_error(exc) from None
        note = (f"  \n{'Tree ' + tree if tree else 'Chain'} rounds, {config.verifier} verification, "
                f"{len(ids)} prompt tokens.")
        first, *others = sessions
        trace = trace_of(sessions[first], {"label": first, "note": note},
                         {label: sessions[label] for label in others})
        return (*self._aded_views(sessions, state), aded_summary(*_runs_and_stats(sessions)) + note, trace)

    def _aded_views(self, sessions: dict, state=None) -> tuple:
        """(state, run picker, round slider, round figure, adaptation figure) for ADED runs (label → session or
        trace); their records are kept in the session store (in place of ``state``'s)."""
        runs, _ = _runs_and_stats(sessions)
        state = common.hold({"runs": runs}, "the ADED runs", state)
        view = next(iter(runs))
        slider, figure = self.show_run(state, view)
        return state, gr.update(choices=list(runs), value=view), slider, figure, adaptation_figure(runs)

    def load_aded(self, file) -> tuple:
        """Show a saved ADED comparison with no model: the same outputs as Run ADED."""
        try:
            trace: Trace = common.read_trace(file)
            if trace.config.drafter != "aded":
                raise DraftScopeError(f"this trace is of the '{trace.config.drafter}' drafter, not ADED")
            label = trace.extra.get("label") if isinstance(trace.extra.get("label"), str) else "loaded"
            sessions = {label: trace, **trace.companions}
            note = trace.extra.get("note") if isinstance(trace.extra.get("note"), str) else ""
            missing = "" if trace.companions else "Only one run is in this trace: nothing to compare it with."
            status = f"{common.loaded_status(trace, missing)}  \n{aded_summary(*_runs_and_stats(sessions))}{note}"
            return (*self._aded_views(sessions), status, trace.as_dict())
        except Exception as exc:
            raise common.failure(exc) from None

    @staticmethod
    def show_run(state, view) -> tuple:
        """(round slider, figure) for the run ``view`` of the last ADED comparison, at its first drafting round."""
        records = ((common.held(state, required=False) or {}).get("runs") or {}).get(view) or []
        if not records:
            return gr.update(value=0, maximum=1, interactive=False), aded_round_figure(None)
        index = _first_drafted(records)
        return (gr.update(value=index, maximum=max(len(records) - 1, 1), interactive=len(records) > 1),
                aded_round_figure(records[index]))

    @staticmethod
    def show_round(state, view, index):
        """The search of round ``index`` of the run ``view``."""
        records = ((common.held(state, required=False) or {}).get("runs") or {}).get(view) or []
        if not records:
            return aded_round_figure(None)
        return aded_round_figure(records[max(0, min(int(index or 0), len(records) - 1))])

    # -------------------------------------------------------------------------------------------- PEARL
    def run_pearl(self, target, prompt, chat, max_new_tokens, temperature, seed, gamma, base, base_options, threads,
                  progress=gr.Progress()) -> tuple:
        """PEARL on the prompt twice with the same seed, parallel (two threads) and serial: (Gantt charts, status,
        records JSON: the parallel run's trace with the serial run inside it)."""
        try:
            model, ids, fields = self._setup(target, prompt, chat, max_new_tokens, temperature, seed, progress)
            gamma = whole(gamma, "γ", 1, MAX_GAMMA)
            pearl = {"base": base, "base_options": (base_options or "").strip(),
                     "threads": whole(threads, "PEARL threads", 1, 1024)}
            configs = {mode: self._config(model, "pearl", {**pearl, "parallel": mode == "parallel"}, gamma, fields)
                       for mode in ("parallel", "serial")}
            for config in configs.values():
                config.options()  # both option sets are checked before anything runs
            warm = dataclasses.replace(configs["serial"], max_new_tokens=min(WARM_UP_TOKENS, fields["max_new_tokens"]))
            self._run(warm, ids, progress, "Warming up…", 0.05, 0.1)
            runs = {mode: self._run(config, ids, progress, f"PEARL, {mode}…", 0.1 + 0.45 * k, 0.55 + 0.45 * k)
                    for k, (mode, config) in enumerate(configs.items())}
        except Exception as exc:
            raise as_gr_error(exc) from None
        parallel, serial = runs["parallel"], runs["serial"]
        figure = pearl_gantt_figure(parallel.records, serial.records)
        return figure, _pearl_status(parallel, serial), trace_of(parallel, {"label": "parallel"}, {"serial": serial})

    # -------------------------------------------------------------------------------------------- adaptive γ
    def run_gamma(self, target, prompt, chat, max_new_tokens, temperature, seed, drafter, gamma, schedule,
                  confidence, greedy_draft, progress=gr.Progress()) -> tuple:
        """One run of a chain drafter under an adaptive draft length: (γ / drafted / accepted per round, status,
        records JSON)."""
        try:
            if drafter not in LENGTH_DRAFTERS:
                raise DraftScopeError(f"pick a chain drafter: {', '.join(LENGTH_DRAFTERS)}")
            model, ids, fields = self._setup(target, prompt, chat, max_new_tokens, temperature, seed, progress)
            gamma = whole(gamma, "γ", 1, MAX_GAMMA)
            confidence = number(confidence, "the confidence threshold", 0.0, 0.95)
            values = {"schedule": schedule, "confidence": confidence, "greedy_draft": bool(greedy_draft)}
            chosen = options.drafter_values(drafter, values)
            config = self._config(model, drafter, chosen, gamma, fields)
            session = self._run(config, ids, progress, f"{drafter}…", 0.1, 1.0)
        except Exception as exc:
            raise as_gr_error(exc) from None
        s = session.stats.summary()
        note = ("" if issubclass(DRAFTERS[drafter].Options, ConfidenceOptions) or (not confidence and not greedy_draft)
                else f" ({drafter} has no probabilities: the confidence stop and greedy drafting do not apply.)")
        status = (f"{drafter}, schedule {chosen.get('schedule', 'constant')}: {len(session.records)} rounds, "
                  f"{len(session.generated_ids)} tokens, τ {s['tau'] or 0:.2f}, "
                  f"{s['tokens_per_second'] or 0:.1f} tokens/s.{note}")
        return gamma_figure(session.records, drafter), status, trace_of(session)

    # -------------------------------------------------------------------------------------------- sweep
    def run_sweep(self, target, prompt, chat, sweep_tokens, temperature, seed, progress=gr.Progress()) -> tuple:
        """The n-gram drafter at every γ in ``SWEEP_GAMMAS`` and n in ``SWEEP_SIZES``: (heatmaps, status)."""
        try:
            tokens = whole(sweep_tokens, "sweep tokens", 1, SWEEP_MAX_TOKENS)
            model, ids, fields = self._setup(target, prompt, chat, tokens, temperature, seed, progress)
            grid = [(g, n) for n in SWEEP_SIZES for g in SWEEP_GAMMAS]
            warm = self._config(model, "ngram", {}, SWEEP_GAMMAS[0], {**fields, "max_new_tokens": WARM_UP_TOKENS})
            self._run(warm, ids, progress, "Warming up…", 0.02, 0.05)
            rows = []
            for k, (g, n) in enumerate(grid):
                config = self._config(model, "ngram", {"ngram_size": n, "min_ngram_size": min_ngram_size(n)}, g,
                                      fields)
                session = self._run(config, ids, progress, f"γ = {g}, n = {n} ({k + 1} of {len(grid)})…",
                                    0.05 + 0.95 * k / len(grid), 0.05 + 0.95 * (k + 1) / len(grid))
                s = session.stats.summary()
                rows.append({"gamma": g, "ngram_size": n, "tau": s["tau"], "tokens_per_second": s["tokens_per_second"],
                             "alpha": s["alpha"], "generated": s["generated"]})
        except Exception as exc:
            raise as_gr_error(exc) from None
        best = max(rows, key=lambda r: r["tokens_per_second"] or 0.0)
        status = (f"{len(rows)} runs of {tokens} new tokens: fastest at γ = {best['gamma']}, n = {best['ngram_size']} "
                  f"({best['tokens_per_second'] or 0:.1f} tokens/s, τ {best['tau'] or 0:.2f}). Wall-clock numbers "
                  "from this machine: they move with its load.")
        return sweep_heatmaps(rows), status


def _runs_and_stats(sessions: dict) -> tuple[dict, dict]:
    """(label → records, label → stats summary) of runs (label → session or trace)."""
    return ({label: s.records for label, s in sessions.items()},
            {label: s.stats.summary() for label, s in sessions.items()})


def _pearl_status(parallel: Session, serial: Session) -> str:
    (_, t_par), (_, t_ser), (_, t_model) = (measured_segments(parallel.records), measured_segments(serial.records),
                                            modelled_segments(serial.records))
    same = parallel.generated_ids == serial.generated_ids
    info = parallel.records[0].draft_info if parallel.records else {}
    return (f"{len(parallel.generated_ids)} tokens each, base drafter {info.get('base', '?')}, "
            f"{info.get('threads', '?')} threads: parallel {t_par:.0f} ms, serial {t_ser:.0f} ms "
            f"({t_ser / t_par if t_par else 0:.2f}× the parallel time); the two-device model {t_model:.0f} ms. "
            + ("Both runs committed the same tokens." if same else
               "**The two runs committed different tokens** (they should not: same seed, same draws)."))


# ------------------------------------------------------------------------------------------------ layout
def build(allow_local_models: bool = False) -> dict:
    """Create the tab's components in the current Blocks context and wire them; return the components."""
    handlers = Handlers(allow_local=allow_local_models)
    gr.Markdown("Drafters that **adapt** while the session runs, and one that runs **in parallel** with the target. "
                "Each button runs the prompt to the end (max new tokens). Verification is greedy at temperature 0; "
                "above it the sampling rule (ADED, which has no probabilities: draw-and-match), so every output is "
                "the target's own.")
    prompt, chat = widgets.prompt_row("adaptive-", start_with=DEFAULT_PROMPT)
    with gr.Row():
        target = widgets.target_picker("adaptive-", allow_local_models)
        max_new = gr.Slider(8, MAX_RUN_TOKENS, value=DEFAULT_TOKENS, step=1, label="Max new tokens",
                            elem_id="adaptive-max-new")
        temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0 = greedy)",
                                elem_id="adaptive-temperature")
        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="adaptive-seed")
    shared = [target, prompt, chat, max_new, temperature, seed]

    # ---------------------------------------------------------------------------------------- ADED
    gr.Markdown("### ADED: a tri-gram store that adapts, searched by MCTS\nADED drafts from a table of P(c | a, b) "
                "(counted from the target's own answers; `empty` starts from nothing) by Monte Carlo tree search from "
                "the last two tokens. With **adapt** on, the trigrams of the last 16 committed tokens are boosted "
                "before every draft, so the table drifts towards what this run produces. The run below goes twice, "
                "adapt on and off; pick a run and a round to see its search (visits N, mean value W/N, prior).")
    with gr.Row():
        aded_gamma = gr.Slider(1, 16, value=5, step=1, label="γ (chain length / tree depth)",
                               elem_id="adaptive-aded-gamma")
        shape = gr.Dropdown(list(ADED_SHAPES), value="budget:16", allow_custom_value=True, label="Draft shape",
                            info="a chain, or a tree of at most N nodes (or children per depth, e.g. 3,2,1)",
                            elem_id="adaptive-aded-shape")
        store = options.field_control("aded", "store", label="Store (corpus: shipped for SmolLM2 only)",
                                      elem_id="adaptive-aded-store")
        iterations = options.field_control("aded", "iterations", label="MCTS simulations per draft",
                                           elem_id="adaptive-aded-iterations")
    with gr.Row():
        learn_prompt = options.field_control("aded", "learn_prompt", label="Learn the prompt's trigrams first",
                                             elem_id="adaptive-aded-learn-prompt")
        min_share = options.field_control("aded", "min_share", label="Chain: stop below this share of the parent's "
                                          "visits", elem_id="adaptive-aded-min-share")
        aded_run = gr.Button("Run ADED: adapt on vs off", variant="primary", elem_id="adaptive-aded-run")
    aded_status = gr.Markdown(elem_id="adaptive-aded-status")
    aded_trace = widgets.trace_row("adaptive-aded-")
    aded_state = gr.State({}, time_to_live=common.state_ttl(), delete_callback=common.forget)
    with gr.Row():
        view = gr.Radio(list(ADAPT_RUNS), value="adapt on", label="Run to inspect", elem_id="adaptive-aded-view")
        round_slider = gr.Slider(0, 1, value=0, step=1, label="Round", interactive=False,
                                 elem_id="adaptive-aded-round")
    aded_graph = gr.Plot(aded_round_figure(None), show_label=False, elem_id="adaptive-aded-graph")
    adaptation = gr.Plot(adaptation_figure({}), show_label=False, elem_id="adaptive-aded-curve")

    # ---------------------------------------------------------------------------------------- PEARL
    gr.Markdown("### PEARL: drafting while the target verifies\nEach round the target verifies the pending drafts "
                "while the drafter already drafts the next ones (post-verify); after a rejection only the first draft "
                "is checked while the drafter drafts the rest (pre-verify). The run below goes twice with the same "
                "seed: **parallel** (two threads, one core each) and **serial** (one after the other). The third "
                "chart is a model, not a measurement: the serial run's measured per-call times placed as two devices "
                "would run them (each round: max(draft, target) + the checks).")
    with gr.Row():
        pearl_gamma = gr.Slider(1, 16, value=5, step=1, label="γ (drafts per round)", elem_id="adaptive-pearl-gamma")
        base = options.field_control("pearl", "base", label="Wrapped drafter", elem_id="adaptive-pearl-base")
        base_options = options.field_control("pearl", "base_options", label="Its options (JSON)",
                                             elem_id="adaptive-pearl-base-options")
        threads = options.field_control("pearl", "threads", label="Threads (cores in all)",
                                        elem_id="adaptive-pearl-threads")
        pearl_run = gr.Button("Run PEARL: parallel vs serial", variant="primary", elem_id="adaptive-pearl-run")
    pearl_status = gr.Markdown(elem_id="adaptive-pearl-status")
    pearl_records = gr.JSON(visible=False, label="Records (JSON)", elem_id="adaptive-pearl-records-json")
    gantt = gr.Plot(pearl_gantt_figure(None, None), show_label=False, elem_id="adaptive-pearl-gantt")

    # ---------------------------------------------------------------------------------------- adaptive γ
    gr.Markdown("### Adaptive draft length\nThe **heuristic** schedule (transformers') starts at γ and adds 2 after a "
                "fully accepted draft, takes 1 off otherwise; drafters with probabilities can also stop drafting "
                "below a **confidence** and draft their argmax even when sampling (**greedy drafting**).")
    with gr.Row():
        len_drafter = gr.Dropdown(list(LENGTH_DRAFTERS), value="ngram", label="Drafter", elem_id="adaptive-len-drafter")
        len_gamma = gr.Slider(1, 16, value=5, step=1, label="γ (where the schedule starts)",
                              elem_id="adaptive-len-gamma")
        schedule = options.field_control("ngram", "schedule", value="heuristic", label="Schedule",
                                         elem_id="adaptive-len-schedule")
        confidence = options.field_control("early-exit", "confidence", label="Confidence stop (drafters with "
                                           "probabilities; 0: off)", elem_id="adaptive-len-confidence")
        greedy_draft = options.field_control("early-exit", "greedy_draft", label="Greedy drafting",
                                             elem_id="adaptive-len-greedy-draft")
        len_run = gr.Button("Run", variant="primary", elem_id="adaptive-len-run")
    len_status = gr.Markdown(elem_id="adaptive-len-status")
    len_records = gr.JSON(visible=False, label="Records (JSON)", elem_id="adaptive-len-records-json")
    len_plot = gr.Plot(gamma_figure([]), show_label=False, elem_id="adaptive-len-plot")

    # ---------------------------------------------------------------------------------------- sweep
    gr.Markdown(f"### n-gram drafting: γ × n\nPrompt lookup at γ = {', '.join(map(str, SWEEP_GAMMAS))} and longest "
                f"match n = {', '.join(map(str, SWEEP_SIZES))}, {len(SWEEP_GAMMAS) * len(SWEEP_SIZES)} runs on the "
                "prompt above. The shortest match is 1 token when n = 1 and 2 tokens otherwise (the drafter's "
                "default: single-token matches are mostly wrong). Tokens/s is wall-clock on this machine.")
    with gr.Row():
        sweep_tokens = gr.Slider(8, SWEEP_MAX_TOKENS, value=SWEEP_TOKENS, step=1, label="New tokens per run",
                                 elem_id="adaptive-sweep-tokens")
        sweep_run = gr.Button("Run the sweep", variant="primary", elem_id="adaptive-sweep-run")
    sweep_status = gr.Markdown(elem_id="adaptive-sweep-status")
    sweep_plot = gr.Plot(sweep_heatmaps([]), show_label=False, elem_id="adaptive-sweep-plot")

    aded_outputs = [aded_state, view, round_slider, aded_graph, adaptation, aded_status, aded_trace.records]
    aded_run.click(handlers.run_aded, [*shared, aded_gamma, shape, store, iterations, learn_prompt, min_share,
                                       aded_state],
                   aded_outputs, api_name="adaptive_aded", **limits.long_work())
    aded_trace.wire_records(handlers.load_aded, aded_outputs, aded_status, "adaptive-aded-")
    view.input(handlers.show_run, [aded_state, view], [round_slider, aded_graph], api_visibility="private")
    round_slider.input(handlers.show_round, [aded_state, view, round_slider], aded_graph, api_visibility="private")
    pearl_run.click(handlers.run_pearl, [*shared, pearl_gamma, base, base_options, threads],
                    [gantt, pearl_status, pearl_records], api_name="adaptive_pearl", **limits.long_work())
    len_run.click(handlers.run_gamma, [*shared, len_drafter, len_gamma, schedule, confidence, greedy_draft],
                  [len_plot, len_status, len_records], api_name="adaptive_gamma", **limits.long_work())
    sweep_run.click(handlers.run_sweep, [target, prompt, chat, sweep_tokens, temperature, seed],
                    [sweep_plot, sweep_status], api_name="adaptive_sweep", **limits.long_work())
    return {"target": target, "prompt": prompt, "chat": chat, "max_new": max_new, "temperature": temperature,
            "seed": seed, "aded_run": aded_run, "aded_status": aded_status, "aded_graph": aded_graph,
            "adaptation": adaptation, "view": view, "round": round_slider, "pearl_run": pearl_run, "gantt": gantt,
            "len_run": len_run, "len_plot": len_plot, "sweep_run": sweep_run, "sweep_plot": sweep_plot}
