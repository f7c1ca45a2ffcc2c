"""The Benchmark tab: the matrix of every drafter configuration against HF greedy per prompt category
(``core.specdec.matrix``). The matrix shipped for the chosen target shows at once; "Run matrix" measures the chosen
configurations on this machine (cached per configuration) and replaces the view. A rejected-token example opens in
the Speculative decoding tab's step view: that prompt replayed with that configuration up to that round
(``link_step_view``, wired by ``app.main`` once both tabs exist)."""

from __future__ import annotations

import threading
import time

import gradio as gr

from app import common, generate_tab, limits, options, widgets
from core import checks
from core.budget import check_count
from core.errors import DraftScopeError
from core.options import option_fields
from core.prompts import load_prompts
from core.specdec import MODEL_LOCK
from core.specdec.bench import first_per_category
from core.specdec.drafters import DRAFTERS, drafter_class
from core.specdec.matrix import example_session, format_matrix, matrix_configs, run_matrix, shipped_matrix
from core.specdec.recommend import Recommender, holdout_halves
from visualizers.format import shown
from visualizers.matrix import heatmap_figure, position_figure, rejection_figure, skipped_html, top_rejected_html
from visualizers.recommend import holdout_figure, recommendation_card, recommendation_figure

DEFAULT_RUN = ("none", "ngram")
POSITION_DEFAULT = 4  # configurations drawn in the per-position chart at first
MAX_PER_CATEGORY = 4  # the shipped prompts have four per category

INTRO = ("Every drafter configuration that can run on the target, side by side with Hugging Face greedy in one "
         "process, per Spec-Bench category: the speed-up over HF greedy measured in the same run (✗ marks an output "
         "that was not token-identical to it), acceptance by draft position in both conventions, and where drafts "
         "are rejected. The shipped matrix shows at once; **Run matrix** measures the chosen configurations (or "
         "drafters) here, loading any already measured with the same settings from the cache.")


def _config_choices(matrix: dict | None) -> list[str]:
    """What the run picker offers: the configurations of the shown matrix, then every drafter's name (its default
    configuration)."""
    names = [r["config"] for r in (matrix or {}).get("rows") or []]
    return list(dict.fromkeys([*DEFAULT_RUN, *names, *DRAFTERS]))


def _status(matrix: dict | None, source: str) -> str:
    if not matrix:
        return source
    rows = matrix["rows"]
    failed = [r["config"] for r in rows if not r["overall"]["identical"]]
    note = f" **Not lossless:** {', '.join(failed)}." if failed else " Every output identical to HF greedy."
    return (f"{source}: {matrix['target']}, {len(rows)} configurations × {len(matrix['categories'])} categories, "
            f"{len(matrix['prompts'])} prompts, {matrix['max_new_tokens']} new tokens, created {matrix['created']} "
            f"on {matrix['machine'].get('cpu_count')} CPUs ({matrix['machine'].get('device')}).{note}")


def example_choices(rejections: dict | None) -> list[tuple[str, str]]:
    """The most-rejected tokens' examples as dropdown choices: (label, "prompt id|round|draft position")."""
    out = []
    for row in (rejections or {}).get("top_rejected") or []:
        for e in row["examples"]:
            label = (f"{shown(e['drafted'])} → {shown(e['preferred'])}: prompt {e['prompt_id']}, round "
                     f"{e['round']}, position {e['position'] + 1}")
            out.append((label, f"{e['prompt_id']}|{e['round']}|{e['position']}"))
    return out


def _examples_update(rejections: dict | None) -> dict:
    choices = example_choices(rejections)
    return gr.update(choices=choices, value=choices[0][1] if choices else None)


def views(matrix: dict | None, status: str) -> tuple:
    """(state, status, heatmap, table, position picker, position chart, rejection picker, rejection chart, most
    rejected tokens, skipped, examples picker) for ``matrix`` (None: the empty views)."""
    rows = (matrix or {}).get("rows") or []
    names = [r["config"] for r in rows]
    shown = names[:POSITION_DEFAULT]
    first = names[0] if names else None
    rejections = rows[0].get("rejections") if rows else None
    return (matrix, status, heatmap_figure(matrix), format_matrix(matrix) if rows else "",
            gr.update(choices=names, value=shown), position_figure(matrix, shown),
            gr.update(choices=names, value=first), rejection_figure(rejections, first or ""),
            top_rejected_html(rejections), skipped_html(matrix), _examples_update(rejections))


# ------------------------------------------------------------------------------------------------ recommender
YOUR_RUNS = "your runs"  # the workload of the user's own prompts: every finished run of the session tabs
ALL = "all categories"
_RECOMMENDERS: dict[str, Recommender] = {}  # per target: the shipped matrix, then every run users finish here
_RECOMMENDERS_LOCK = threading.Lock()


def recommender(target: str) -> Recommender:
    """The process's recommender for ``target``: fitted on its shipped matrix (empty where none ships), then
    updated by ``observe_session``."""
    name = (target or "").strip()
    with _RECOMMENDERS_LOCK:
        if name not in _RECOMMENDERS:
            matrix = shipped_matrix(name)
            _RECOMMENDERS[name] = Recommender.from_matrix(matrix) if matrix else Recommender(name)
        return _RECOMMENDERS[name]


def observe_session(session) -> None:
    """Learn from a finished run of a session tab (its accepted and rejected rounds and its timings) as a run of
    the user's own workload. Runs the recommender cannot use (a target without a matrix, no rounds) are left out."""
    try:
        if not session.records or session.stats.target_calls == 0:
            return
        rec = recommender(session.config.target)
        if not rec.configs:
            return  # no matrix: no plain-decoding reference to turn acceptance into a speed-up
        with _RECOMMENDERS_LOCK:
            rec.observe(session.config, YOUR_RUNS, session.stats.summary())
    except Exception:  # learning is a side effect: it never breaks the run that fed it
        common.log.exception("the recommender could not learn from a run")


def recommend(target, category, temperature, top) -> tuple:
    """(figure, reasons card, status): the ranked settings for the workload on this target and machine."""
    try:
        rec = recommender(target)
        if not rec.configs:
            raise DraftScopeError(f"no benchmark matrix for '{(target or '').strip()}' yet: the recommender needs "
                                  "measured acceptance and costs (Run matrix, or bench --matrix)")
        chosen = None if category in (None, "", ALL) else category
        with _RECOMMENDERS_LOCK:  # observe_session may be adding a run of another visitor meanwhile
            if chosen == YOUR_RUNS and YOUR_RUNS not in rec.categories:
                raise DraftScopeError("no runs of yours yet: finish a run in a session tab (Speculative decoding, "
                                      "Compare, …) on this target, then ask again")
            recs = rec.recommend(chosen, float(temperature or 0.0), int(top or 3))
        best = recs[0]
        status = (f"For {chosen or 'all categories'} at T = {float(temperature or 0):g}: **{best.config}**, "
                  f"predicted {best.speedup:.2f}× ({best.interval[0]:.2f}–{best.interval[1]:.2f}).")
        return recommendation_figure(recs), recommendation_card(recs), status
    except Exception as exc:
        raise common.failure(exc) from None


def holdout(state) -> tuple:
    """(figure, summary): the recommender's accuracy on held-out prompts of the shown matrix."""
    try:
        if not state:
            raise DraftScopeError("no matrix shown: pick a target with a shipped matrix or run one")
        r = holdout_halves(state)
        summary = (f"Fit on half of each category's prompts, measured on the other half, both ways: **{r['within']} "
                   f"of {r['n']}** predictions within ±15 % of the measured speed-up ({r['share_within']:.0%}); "
                   f"mean absolute error {r['mape_pct']:.1f} %; the 10–90 % interval held the measurement "
                   f"{r['interval_coverage']:.0%} of the time; the top pick was the measured best in "
                   f"{r['top_is_best_share']:.0%} of categories (mean regret {r['mean_regret']:.3f}×).")
        return holdout_figure(r), summary
    except Exception as exc:
        raise common.failure(exc) from None


def _categories(target: str) -> list[str]:
    try:
        rec = recommender(target)
        with _RECOMMENDERS_LOCK:
            return [ALL, *rec.categories]
    except Exception:  # a broken shipped matrix is reported by the views already
        return [ALL]


def _row(matrix: dict | None, config: str | None) -> dict | None:
    return next((r for r in (matrix or {}).get("rows") or [] if r["config"] == config), None)


class Handlers:
    """Event handlers. ``allow_local`` lets the target field name Hugging Face ids or local directories."""

    def __init__(self, allow_local: bool = False):
        self.allow_local = allow_local

    def show(self, target) -> tuple:
        """The matrix shipped for the target (nothing runs): the views, or empty views saying there is none."""
        try:
            name = (target or "").strip()
            matrix = shipped_matrix(name)
            status = "Shipped matrix" if matrix else (f"No matrix ships for '{name}': choose configurations and press "
                                                     "Run matrix.")
            return views(matrix, _status(matrix, status) if matrix else status)
        except Exception as exc:  # a broken shipped file: one message, the page stays usable
            raise common.failure(exc) from None

    def run(self, target, configs, per_category, max_new_tokens, progress=gr.Progress()) -> tuple:
        """Run the chosen configurations (names or drafters) on the first N prompts of each category beside HF
        greedy, loading cached ones; replace the views."""
        try:
            chosen = [c for c in configs or [] if str(c).strip()]
            if not chosen:
                raise DraftScopeError("choose at least one configuration or drafter to run")
            caps = limits.limits()
            per_category = checks.whole("prompts per category", per_category, 1, MAX_PER_CATEGORY)
            max_new_tokens = checks.whole("max new tokens", max_new_tokens, 1, min(4096, caps.max_new_tokens))
            prompts = first_per_category(load_prompts(), per_category)

            def report(done: int, total: int, label: str) -> None:
                progress(done / max(total, 1), desc=f"{label} ({done} of {total} runs)")

            progress(0.0, desc="Loading the target…")
            t0 = time.perf_counter()
            name = (target or "").strip()
            picked = matrix_configs(name, chosen)
            check_count("the matrix", len(picked) * len(prompts), caps.max_sweep_points, "runs (configurations × "
                        "prompts)", "pick fewer configurations or prompts per category")
            with MODEL_LOCK:  # the whole run: other tabs' forwards would distort its timings
                matrix = run_matrix(name, picked, prompts, max_new_tokens, progress=report)
            seconds = time.perf_counter() - t0
            cached = sum(r["cached"] for r in matrix["rows"])
            source = f"Measured here in {seconds:.0f} s" + (f" ({cached} loaded from the cache)" if cached else "")
            return views(matrix, _status(matrix, source))
        except Exception as exc:  # every failure becomes a message, the page stays usable
            raise common.failure(exc) from None

    def positions(self, state, configs) -> object:
        """Acceptance by draft position for the chosen configurations of the shown matrix."""
        try:
            return position_figure(state, list(configs or []))
        except Exception as exc:
            raise common.failure(exc) from None

    def rejections(self, state, config) -> tuple:
        """Where the chosen configuration's drafts were rejected: (chart, most-rejected tokens table, examples)."""
        try:
            row = _row(state, config)
            rejections = row.get("rejections") if row else None
            return rejection_figure(rejections, config or ""), top_rejected_html(rejections), \
                _examples_update(rejections)
        except Exception as exc:
            raise common.failure(exc) from None


def build(allow_local_models: bool = False) -> dict:
    """Create the tab's components in the current Blocks context and wire them; return the components."""
    handlers = Handlers(allow_local=allow_local_models)
    start = handlers.show(common.default_target())
    matrix = start[0] if isinstance(start[0], dict) else None
    gr.Markdown(INTRO)
    with gr.Row():
        target = widgets.target_picker("bench-", allow_local_models)
        configs = gr.Dropdown(_config_choices(matrix), value=list(DEFAULT_RUN), multiselect=True, scale=3,
                              allow_custom_value=True, elem_id="bench-configs",
                              label="Configurations to run (a drafter's name is its defaults; type early-exit* for "
                                    "all of a drafter's)")
    with gr.Row():
        per_category = gr.Slider(1, MAX_PER_CATEGORY, value=1, step=1, label="Prompts per category",
                                 elem_id="bench-per-category")
        max_new_tokens = gr.Slider(8, 256, value=64, step=8, label="Max new tokens", elem_id="bench-max-new-tokens")
        run = gr.Button("Run matrix", variant="primary", elem_id="bench-run")
    state = gr.State(matrix, time_to_live=common.state_ttl())
    status = gr.Markdown(start[1], elem_id="bench-status")
    heatmap = gr.Plot(start[2], elem_id="bench-heatmap")
    table = gr.Markdown(start[3], elem_id="bench-table")
    skipped = gr.HTML(start[9], elem_id="bench-skipped")
    shown = gr.Dropdown(multiselect=True, label="Configurations in the per-position chart", elem_id="bench-positions",
                        **_update_args(start[4]))
    positions = gr.Plot(start[5], elem_id="bench-position-chart")
    rejected_of = gr.Dropdown(label="Rejection statistics of", elem_id="bench-rejections", **_update_args(start[6]))
    rejections = gr.Plot(start[7], elem_id="bench-rejection-chart")
    top = gr.HTML(start[8], elem_id="bench-top-rejected")
    with gr.Row(equal_height=True):
        example = gr.Dropdown(label="Open a rejection in the step view (drafted → the target's token)", scale=4,
                              elem_id="bench-example", **_update_args(start[10]))
        open_example = gr.Button("Open in the step view", scale=1, elem_id="bench-open-example")
    example_status = gr.Markdown(elem_id="bench-example-status")
    with gr.Accordion("Recommender: which drafter, with which settings, on this machine", open=True):
        gr.Markdown("Predicted speed-up of each drafter family's best setting from the matrix's measured acceptance "
                    "per draft position (Beta posteriors of accepted and rejected rounds) and its measured costs per "
                    "round: τ = Σ<sub>i=0..γ</sub> Π<sub>j&lt;i</sub> a<sub>j</sub> tokens per round, speed-up = "
                    "(τ / round time) × plain time per token. It also learns "
                    f"from every run you finish in the session tabs on this target (the workload “{YOUR_RUNS}”).")
        with gr.Row():
            workload = gr.Dropdown(_categories(common.default_target()), value=ALL, label="Workload",
                                   allow_custom_value=False, elem_id="bench-workload")
            temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature", elem_id="bench-temperature")
            ranked = gr.Slider(1, 6, value=3, step=1, label="Settings to rank", elem_id="bench-top")
            advise = gr.Button("Recommend", variant="primary", elem_id="bench-recommend")
        advice_status = gr.Markdown(elem_id="bench-recommend-status")
        with gr.Row():
            advice_plot = gr.Plot(recommendation_figure([]), show_label=False, elem_id="bench-recommend-chart")
            advice = gr.HTML(recommendation_card([]), elem_id="bench-recommend-card")
        check = gr.Button("Held-out accuracy of the recommender on the shown matrix", elem_id="bench-holdout")
        check_summary = gr.Markdown(elem_id="bench-holdout-summary")
        check_plot = gr.Plot(holdout_figure({}), show_label=False, elem_id="bench-holdout-chart")
    outputs = [state, status, heatmap, table, shown, positions, rejected_of, rejections, top, skipped, example]
    target.change(handlers.show, [target], outputs, api_name="bench_show").then(
        lambda t: gr.update(choices=_categories(t), value=ALL), [target], workload, api_visibility="private")
    advise.click(recommend, [target, workload, temperature, ranked], [advice_plot, advice, advice_status],
                 api_name="bench_recommend")
    workload.focus(lambda t, w: gr.update(choices=_categories(t), value=w), [target, workload], workload,
                   api_visibility="private", queue=False)  # picks up "your runs" once there are some
    check.click(holdout, [state], [check_plot, check_summary], api_name="bench_holdout")
    run.click(handlers.run, [target, configs, per_category, max_new_tokens], outputs, api_name="bench_run",
              **limits.long_work())
    shown.input(handlers.positions, [state, shown], positions, api_name="bench_positions", queue=False)
    rejected_of.input(handlers.rejections, [state, rejected_of], [rejections, top, example],
                      api_name="bench_rejections", queue=False)
    return {"target": target, "configs": configs, "run": run, "status": status, "state": state,
            "rejected_of": rejected_of, "example": example, "open_example": open_example,
            "example_status": example_status, "handlers": handlers}


def _update_args(update: dict) -> dict:
    """choices and value of a ``gr.update`` dict, for building the component with them."""
    return {k: update[k] for k in ("choices", "value") if k in update}


# ------------------------------------------------------------------------------------------------ step view link
STEP_TAB = "generate"  # the tab id (app.main) whose step view opens an example


def _control_updates(drafter: str, values: dict, names: list[str]) -> tuple[list, list[str]]:
    """Updates of the step view's option controls for ``drafter`` with ``values`` (its other options at their
    defaults; other drafters' controls as they are), and the names of values that have no control there."""
    fields = {f.name: f for f in option_fields(drafter_class(drafter).Options)}
    updates = [gr.update(value=options.control_value(fields[n], values.get(n, fields[n].default)))
               if n in fields else gr.skip() for n in names]
    return updates, [n for n in values if n not in names]


def open_in_step_view(matrix, config, example, step_state, allow_local: bool, step_handlers, names: list[str],
                      progress) -> tuple:
    """Replay a rejection example in the step view: (step state, its outputs…, its status, its records, its
    controls…, the tabs, this tab's status). Its controls are set to the configuration, so Step goes on from there."""
    if not matrix:
        raise DraftScopeError("no matrix is shown: choose a target with a shipped matrix, or Run matrix")
    if not example:
        raise DraftScopeError("choose an example of a rejected token first")
    try:
        prompt_id, round_text, position_text = str(example).rsplit("|", 2)
        round_index, position = int(round_text), int(position_text)
    except ValueError:
        raise DraftScopeError(f"not an example: '{example}'") from None
    row = _row(matrix, config)
    if row is None:
        raise DraftScopeError(f"the shown matrix has no configuration '{config}'")
    if row.get("tree"):
        raise DraftScopeError(f"'{config}' drafts trees, which the step view does not show: open the Draft trees tab "
                              f"with its drafter ({row['drafter']}) and tree {row['tree']}")
    progress(0.1, desc=f"Replaying {config} on prompt {prompt_id} to round {round_index}…")
    with MODEL_LOCK:
        session = example_session(matrix, config, prompt_id, round_index, allow_local=allow_local)
    records = session.records
    shown = min(round_index, len(records) - 1)
    wanted = next((e for r in row["rejections"].get("top_rejected") or [] for e in r["examples"]
                   if (e["prompt_id"], e["round"], e["position"]) == (prompt_id, round_index, position)), None)
    drafted = records[shown].drafted if records else []
    replayed = drafted[position].text if position < len(drafted) else None
    same = wanted is not None and shown == round_index and replayed == wanted["drafted"] and \
        drafted[position].decision == "rejected"
    prompt = next(p for p in load_prompts() if p.id == prompt_id)
    settings = {"prompt": prompt.prompt, "chat": bool(matrix.get("chat")), "target": matrix["target"],
                "drafter": row["drafter"], "verifier": "greedy", "gamma": int(row["gamma"]), "temperature": 0.0,
                "top_p": 1.0, "top_k": 0, "seed": 0, "max_new_tokens": int(matrix["max_new_tokens"])}
    updates, hidden = _control_updates(row["drafter"], dict(row.get("options") or {}), names)
    sid = common.new_sid()
    common.put_session(sid, session)
    old = (step_state or {}).get("sid")
    if old and old != sid:
        common.forget({"sid": old})
    state = {**(step_state or {}), **settings, "sid": sid}
    note = (f"Opened from the Benchmark tab: {config} on prompt {prompt_id}, round {shown} (position "
            f"{position + 1}). " + ("The replay drafted the same rejected token as the benchmark run."
                                    if same else "The replay differs from the benchmark run here (the drafter's "
                                    "state or timing differs): this is the round as replayed now."))
    if hidden:
        note += f" Option(s) {', '.join(hidden)} have no control here: Step goes on with the drafter's defaults."
    outputs = generate_tab.render(session, shown)
    status = generate_tab._status(session, note)
    return (state, *outputs, status, step_handlers.records(session),
            *[gr.update(value=settings[k]) for k in generate_tab.RUN_SETTINGS], *updates,
            gr.Tabs(selected=STEP_TAB), f"Opened in the step view: {config}, prompt {prompt_id}, round {shown}.")


def link_step_view(bench: dict, step: dict, tabs: gr.Tabs) -> None:
    """Wire the Benchmark tab's "Open in the step view" to the Speculative decoding tab (``step``: what its
    ``build`` returned) and switch ``tabs`` to it."""
    controls = step["controls"]
    names = [n for n in controls if n not in generate_tab.RUN_SETTINGS]
    allow_local = bench["handlers"].allow_local
    outputs = [step["state"], *step["outputs"][1:], *[controls[k] for k in generate_tab.RUN_SETTINGS],
               *[controls[n] for n in names], tabs, bench["example_status"]]

    def handler(matrix, config, example, step_state, progress=gr.Progress()):
        try:
            return open_in_step_view(matrix, config, example, step_state, allow_local, step["handlers"], names,
                                     progress)
        except Exception as exc:  # one message, both tabs stay as they were
            raise common.failure(exc) from None

    bench["open_example"].click(handler, [bench["state"], bench["rejected_of"], bench["example"], step["state"]],
                                outputs, api_name="bench_open_example", **limits.model_work())
