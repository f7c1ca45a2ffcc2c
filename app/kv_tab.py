"""The KV importance tab: run KV-cache methods against the full cache on one long prompt and see what each kept.

Run computes a ``KVReport`` (``core.kv.run.kv_report``): the target's full-cache answer and its true importance
of every prompt token, then each ticked method at the budget. The report stays in the user's ``gr.State``, so picking
another method to view, another layer or KV head re-renders from it without recomputing. DraftAttention runs
separately on the same prompt: one layer / head's full attention map, its pooled draft map and the blocks selected.
The long-context section drafts the task's prompt at several lengths with LongSpec and a normal drafter
(``core.specdec.longctx.context_sweep``): drafter memory, α and speed-up against the context length.
"""

from __future__ import annotations

import time

import gradio as gr

from app import common, limits
from core import checks
from core.budget import Shape, check_count, context_sweep as estimate_context_sweep, draft_attention as estimate_draft
from core.errors import DraftScopeError
from core.kv import DRAFT_GUIDED, PRESSES
from core.kv.records import KVReport
from core.kv.run import DEFAULT_METHODS, guide_model, kv_report
from core.kv.tasks import LENGTH_TASKS, TASKS, Task, make_task
from core.runtime.models import load_model, preset_names
from core.specdec import MODEL_LOCK
from core.specdec.longctx import DEFAULT_DRAFTERS as LONG_DRAFTERS, check_lengths, context_sweep
from visualizers.kv_importance import (
    constraints_figure,
    correlation_figure,
    find_run,
    head_map_figure,
    kept_grid_figure,
    outputs_html,
    prompt_heatmap_html,
)
from visualizers.longctx import acceptance_figure, memory_figure, rows_frame

CUSTOM = "custom"  # the task choice that takes the custom prompt (a non-empty custom prompt overrides any task)
SHOW_CHOICES = [("method scores", "method"), ("true importance", "true"), ("both (true = underline)", "both")]
DEFAULT_LENGTH, DEFAULT_BUDGET, DEFAULT_MAX_NEW = 1024, 128, 16
DEFAULT_LAYERS, DEFAULT_KV_HEADS, DEFAULT_HEADS = 30, 3, 9  # smollm2-135m, until a run tells the real numbers

INTRO = (
    "Long prompts make the KV cache the bottleneck, so these methods keep only a **budget** of prompt entries per "
    "layer and KV head. **SnapKV** ranks prompt positions by the attention the prompt's last few queries pay them; "
    "**StreamingLLM** simply keeps the first few tokens (attention sinks) and the most recent ones; **H2O** keeps the "
    "heavy hitters, the positions that collected the most attention over the whole prompt; **TOVA** trusts the last "
    "query alone. The draft-guided methods (★) first let a small draft model guess the answer: **SpecKV** adds the "
    "guess's queries to SnapKV's vote, and **SpecPC** uses the draft's own attention to drop prompt tokens before the "
    "target reads them. Every method is judged against the *true importance*, the attention the target's full-cache "
    "answer paid each prompt token. **DraftAttention** (at the bottom) works on attention itself rather than the "
    "cache: pooled queries and keys give a coarse map, and only its highest-ranked blocks are computed in full.")

SELF_GUIDE = "self:"  # drafter values naming a self-drafter of the target (core.kv.run.guide_model)
GUIDES = (("the target's S2D exit (trained, its first 10 of 30 layers)", SELF_GUIDE + "sorted"),
          ("the target's early exit (a quarter of its layers, untrained)", SELF_GUIDE + "early-exit"))


LONG_LENGTHS = [("1k", 1024), ("2k", 2048), ("4k", 4096), ("8k", 8000)]  # 8000 + new tokens fits SmolLM2's 8192
DEFAULT_LONG_LENGTHS, DEFAULT_LONG_NEW, DEFAULT_LONG_GAMMA = [1024, 2048], 32, 4
LONG_INTRO = (
    "LongSpec's drafter is one block that cross-attends to the target's own KV cache and keeps only a ring of its "
    "last *window* positions (256 by default), so its memory does not grow with the context. A normal drafter "
    "(FastDraft, a small model of its own) keeps keys and values for every position. Run drafts the task's prompt "
    "(passkey or multikey; the target, task and seed above) at each ticked length with both, and once with the "
    "target alone: drafter memory, α and the speed-up per length (decode tokens/s; the prefill is timed apart). "
    "Everything is greedy, so every output must match the target alone's. Each length runs three prefills: on "
    "smollm2-135m here, about a minute for 1k–2k, several more with 4k and 8k.")


# ------------------------------------------------------------------------------------------------ helpers
def _report(state) -> KVReport | None:
    """The report of the visitor's last run (kept in the session store), None before the first run."""
    return (common.held(state, required=False) or {}).get("report")


def _prompt_override(task: str, prompt: str | None) -> str | None:
    """The custom prompt when it is set (it overrides the task), None to use the task; refuses an empty custom one."""
    text = prompt or ""
    if text.strip():
        return common.check_prompt(text)
    if task == CUSTOM:
        raise DraftScopeError("the custom prompt is empty: type one, or choose a task")
    return None


def _check_inputs(methods, task: str) -> list[str]:
    methods = list(methods or [])
    if not methods:
        raise DraftScopeError("choose at least one method")
    for name in methods:
        PRESSES.lookup(name)  # an unknown name is a message listing the methods
    if task not in (*TASKS, CUSTOM):
        raise DraftScopeError(f"unknown task '{task}'; choose from {', '.join((*TASKS, CUSTOM))}")
    return methods


def _check_length(task: str, override: str | None, length: int) -> None:
    """The task's prompt length against the KV cap, before anything is built (a custom prompt's tokens are counted
    by ``kv_report``, against the same cap)."""
    if override is None and task in LENGTH_TASKS:
        check_count("the prompt length", length, limits.limits().kv_max_length, "tokens", "lower the length")


def _run_status(report: KVReport, seconds: float, budget: int, task: str, length: int, overridden: bool) -> str:
    n = len(report.prompt_ids)
    source = "custom prompt" if overridden else f"{report.task} prompt"
    head = (f"Done in {seconds:.1f} s: {source} of {n} tokens on {report.target}"
            + (f", draft model {report.drafter}" if report.drafter else "")
            + (f"; budget {budget} ({budget / max(n, 1):.0%} of the prompt)." if budget < n else
               f"; budget {budget}."))
    notes = []
    if budget >= n:
        notes.append(f"The budget is at least the prompt's {n} tokens, so every method keeps everything: lower it to "
                     "see evictions.")
    elif report.runs:
        best = max(report.runs, key=lambda r: r.recall)
        notes.append(f"Best recall of the true top-{budget}: {best.method} ({best.recall:.2f}).")
    if report.constraints:
        total = len(report.constraints)
        gave = lambda run: sum(c["met"] for c in run.constraints)  # noqa: E731
        notes.append(f"Asked for each of the traveller's {total} requirements, the full cache gives back "
                     f"{gave(report.full)}; " + ", ".join(f"{r.method} {gave(r)}" for r in report.runs) + ".")
    elif report.answer:
        solved = [r.method for r in report.runs if r.accuracy]
        full = "finds" if report.full.accuracy else "misses"
        notes.append(f"The full cache {full} the answer “{report.answer}”; "
                     + (f"found by {', '.join(solved)}." if solved else "no method finds it."))
    if not overridden and task not in LENGTH_TASKS and length != DEFAULT_LENGTH:
        notes.append(f"(The length slider applies to {', '.join(LENGTH_TASKS)} only.)")
    return " ".join([head, *notes])


def _views(state, view_method, show, layer, head) -> tuple:
    """(heatmap, grid, head map, correlation) of the stored report for the chosen method, layer and head."""
    report = _report(state)
    run = find_run(report, view_method)
    if report is not None and run is None and report.runs:
        run = report.runs[0]
    return (prompt_heatmap_html(report, run, show or "method"),
            kept_grid_figure(run, report.n_layers if report else 0, report.n_kv_heads if report else 0),
            _head_map(report, run, layer, head), correlation_figure(report, run))


def _head_map(report: KVReport | None, run, layer, head) -> object:
    return head_map_figure(report, run, int(layer or 0), int(head or 0))


def _draft_attention_placeholder():
    """DraftAttention's empty figure (None where its visualizer is missing: the Plot then shows no value)."""
    try:
        from visualizers.draft_attention import draft_attention_figure
    except ImportError:
        return None
    return draft_attention_figure(None)


def _long_status(rows: list, seconds: float) -> str:
    """One paragraph on a context sweep: how each drafter's memory and α moved from the shortest length to the
    longest, and whether every output matched the target alone."""
    if not rows:
        return "No runs."
    lengths = sorted({r.length for r in rows})
    parts = [f"Done in {seconds:.1f} s: {len(lengths)} context length{'s' * (len(lengths) != 1)} from "
             f"{lengths[0]:,} to {lengths[-1]:,} prompt tokens."]
    for name in dict.fromkeys(r.drafter for r in rows):
        mine = sorted((r for r in rows if r.drafter == name), key=lambda r: r.length)
        first, last = mine[0], mine[-1]
        memory = ("keeps no cache" if first.drafter_kv_bytes is None else
                  f"KV {first.drafter_kv_bytes / 2 ** 20:.2f} → {last.drafter_kv_bytes / 2 ** 20:.2f} MiB")
        alpha = " → ".join("—" if r.alpha is None else f"{r.alpha:.2f}" for r in mine)
        speed = " → ".join("—" if r.speedup is None else f"{r.speedup:.2f}×" for r in mine)
        parts.append(f"**{name}**: {memory}; α {alpha}; speed-up {speed}.")
    differ = [f"{r.drafter} at {r.length:,}" for r in rows if not r.identical_to_target]
    parts.append("Every output matched the target alone." if not differ else
                 f"Outputs differing from the target alone (a bug): {', '.join(differ)}.")
    return " ".join(parts)


def _explain(exc: Exception) -> Exception:
    """ValueErrors from the DraftAttention code read as plain messages."""
    return DraftScopeError(str(exc)) if isinstance(exc, ValueError) else exc


# ------------------------------------------------------------------------------------------------ handlers
class Handlers:
    """Event handlers. ``allow_local`` lets model fields name Hugging Face ids or local directories."""

    def __init__(self, allow_local: bool = False):
        self.allow_local = allow_local

    def run(self, state, target, drafter, task, prompt, length, methods, budget, max_new_tokens, seed, view_method,
            show, layer, head, progress=gr.Progress()) -> tuple:
        """The full cache and every chosen method at the budget on the task's prompt (or the custom prompt):
        (state, status, heatmap, grid, head map, correlation, outputs, requirements, view method, layer, head,
        DraftAttention layer, DraftAttention head)."""
        state = dict(state or {})
        try:
            methods = _check_inputs(methods, task)
            override = _prompt_override(task, prompt)
            budget, length = int(budget), int(length)
            _check_length(task, override, length)
            caps = limits.limits()
            t0 = time.perf_counter()
            with MODEL_LOCK:
                guide = (drafter or "").strip() or None
                if guide and guide.startswith(SELF_GUIDE):  # a self-drafter of the target guides
                    loaded = load_model((target or "").strip(), allow_local=self.allow_local)
                    guide = guide_model(loaded, guide[len(SELF_GUIDE):], None)
                report = kv_report((target or "").strip(), guide, task=task,
                                   length=length, methods=methods, budgets=[budget], seed=int(seed or 0),
                                   max_new_tokens=int(max_new_tokens), prompt=override, progress=progress,
                                   allow_local=self.allow_local, max_prompt_tokens=caps.kv_max_length,
                                   max_bytes=caps.job_bytes)
                model = load_model((target or "").strip(), allow_local=self.allow_local)  # cached by kv_report
                tokens = {i: model.token_text(i) for run in [report.full, *report.runs] for i in run.output_ids}
                n_heads = int(model.config.num_attention_heads)
            seconds = time.perf_counter() - t0
            state = common.hold({"report": report, "tokens": tokens}, "the KV run")
            ran = [r.method for r in report.runs]
            view = view_method if view_method in ran else ran[0]
            L, H = report.n_layers, report.n_kv_heads
            layer, head = min(int(layer or 0), L - 1), min(int(head or 0), H - 1)
            views = _views(state, view, show, layer, head)
            return (state, _run_status(report, seconds, budget, task, length, override is not None), views[0],
                    views[1], views[2], views[3], outputs_html(report, tokens), constraints_figure(report),
                    gr.update(choices=list(dict.fromkeys(ran)), value=view),
                    gr.update(maximum=max(L - 1, 1), value=layer), gr.update(maximum=max(H - 1, 1), value=head),
                    gr.update(maximum=max(L - 1, 1)), gr.update(maximum=max(n_heads - 1, 1)))
        except Exception as exc:  # every failure becomes a message, the page stays usable
            raise common.failure(_explain(exc)) from None

    def view(self, state, view_method, show, layer, head) -> tuple:
        """Re-render the heatmap, grid, head map and correlation of the stored report for another method or shading
        (nothing is recomputed): (heatmap, grid, head map, correlation)."""
        try:
            return _views(state, view_method, show, layer, head)
        except Exception as exc:
            raise common.failure(exc) from None

    def head_view(self, state, view_method, layer, head) -> object:
        """Re-render the head map of the stored report for another layer / KV head (nothing is recomputed)."""
        try:
            report = _report(state)
            run = find_run(report, view_method) or (report.runs[0] if report and report.runs else None)
            return _head_map(report, run, layer, head)
        except Exception as exc:
            raise common.failure(exc) from None

    def long_context(self, target, task, seed, lengths, new_tokens, gamma, progress=gr.Progress()) -> tuple:
        """LongSpec and a normal drafter (FastDraft) on the task's prompt at each ticked length, beside the target
        alone: (memory figure, α and speed-up figure, table, status). A failure is a gr.Error with one line (a missing
        LongSpec drafter names the command that trains one)."""
        try:
            def report(done: int, total: int, label: str) -> None:
                progress(done / max(total, 1), desc=f"{label} ({done + 1} of {total})…" if done < total else "Done")

            lengths = check_lengths(list(lengths or []))
            caps = limits.limits()
            check_count("the longest context length", lengths[-1], caps.kv_max_length, "tokens",
                        "untick the longer lengths")
            new_tokens = checks.whole("new tokens", new_tokens, 1, caps.max_new_tokens)
            check_count("the sweep", len(lengths) * (len(LONG_DRAFTERS) + 1), caps.max_sweep_points, "runs",
                        "tick fewer lengths")
            model = load_model((target or "").strip(), allow_local=self.allow_local)
            estimate_context_sweep(Shape.of(model), lengths, new_tokens, len(LONG_DRAFTERS),
                                   int(gamma)).check(caps.job_bytes)
            t0 = time.perf_counter()
            with MODEL_LOCK:
                rows = context_sweep(model, LONG_DRAFTERS, task, lengths, new_tokens, int(gamma),
                                     int(seed or 0), progress=report, allow_local=self.allow_local)
            seconds = time.perf_counter() - t0
            return memory_figure(rows), acceptance_figure(rows), rows_frame(rows), _long_status(rows, seconds)
        except Exception as exc:
            raise common.failure(exc) from None

    def draft_attention(self, target, task, prompt, length, seed, layer, head, sparsity, block,
                        progress=gr.Progress()) -> tuple:
        """DraftAttention on the target's prefill of the current prompt (the custom one, else the task's): one layer
        and query head's full map, draft map and selected blocks, and the effect on the logits: (figure, status)."""
        try:
            from core.attention.draft_attention import draft_attention_map
            from visualizers.draft_attention import draft_attention_figure

            override = _prompt_override(task, prompt)
            if task not in (*TASKS, CUSTOM):
                raise DraftScopeError(f"unknown task '{task}'; choose from {', '.join((*TASKS, CUSTOM))}")
            sparsity, block = float(sparsity), int(block)
            if not 0 <= sparsity < 1:
                raise DraftScopeError(f"sparsity must be in [0, 1), got {sparsity}")
            if block < 1:
                raise DraftScopeError(f"block size must be at least 1, got {block}")
            _check_length(task, override, int(length))
            progress(0.1, desc="Loading the target…")
            model = load_model((target or "").strip(), allow_local=self.allow_local)
            the_task = Task("prompt", override, None) if override is not None else \
                make_task(task, model.tokenizer, int(length), int(seed or 0))
            ids = model.encode(the_task.prompt)
            layers, heads = model.n_layers, int(model.config.num_attention_heads)
            layer, head = int(layer or 0), int(head or 0)
            if not 0 <= layer < layers or not 0 <= head < heads:
                raise DraftScopeError(f"{model.name} has layers 0..{layers - 1} and query heads 0..{heads - 1}; got "
                                      f"layer {layer}, head {head}")
            if len(ids) > min(model.max_context, 8192):
                raise DraftScopeError(f"the prompt has {len(ids)} tokens, more than {model.name} can read")
            caps = limits.limits()
            check_count("the prompt", len(ids), caps.kv_max_length, "tokens", "shorten the prompt or lower the length")
            estimate_draft(Shape.of(model), len(ids), block).check(caps.job_bytes)
            progress(0.4, desc=f"Dense and sparse prefill of {len(ids)} tokens…")
            t0 = time.perf_counter()
            with MODEL_LOCK:
                record = draft_attention_map(model.model, ids, layer, head, sparsity=sparsity, block=block)
            seconds = time.perf_counter() - t0
            progress(1.0, desc="Done")
            status = (f"DraftAttention on {model.name}, {len(ids)} tokens, layer {layer}, head {head}, r = "
                      f"{sparsity:.2f}, {block}-token blocks ({seconds:.1f} s): head output error "
                      f"{record.output_error:.3g}, {record.flop_sparsity:.0%} of this head's causal pairs skipped; "
                      f"with every layer sparse, top-1 agreement {record.top1_agreement:.3f} and KL(last) "
                      f"{record.kl_last:.3g}.")
            return draft_attention_figure(record), status
        except Exception as exc:
            raise common.failure(_explain(exc)) from None


# ------------------------------------------------------------------------------------------------ layout
def build(allow_local_models: bool = False) -> dict:
    """Create the tab's components in the current Blocks context and wire them; return the components."""
    presets = preset_names()
    handlers = Handlers(allow_local=allow_local_models)
    custom = allow_local_models
    info = "a preset" + (", a Hugging Face id or a local directory" if custom else "")
    default = common.default_target()

    gr.Markdown(INTRO, elem_id="kv-intro")
    state = gr.State({}, time_to_live=common.state_ttl(), delete_callback=common.forget)
    with gr.Row():
        target = gr.Dropdown(presets, value=default, label="Target", info=info, allow_custom_value=custom,
                             elem_id="kv-target")
        drafter = gr.Dropdown([(p, p) for p in presets] + list(GUIDES), value=default,
                              label="Draft model (guides speckv and specpc)", info=info,
                              allow_custom_value=custom, elem_id="kv-drafter")
        task = gr.Dropdown([*TASKS, CUSTOM], value=TASKS[0], label="Task",
                           info="custom: type the prompt below (any text there overrides the task)",
                           elem_id="kv-task")
    prompt = gr.Textbox(label="Custom prompt (optional: overrides the task)", lines=2, elem_id="kv-prompt",
                        max_length=common.MAX_PROMPT_CHARS,
                        placeholder="Leave empty to use the task's prompt")
    with gr.Row():
        length = gr.Slider(128, min(4096, limits.limits().kv_max_length), value=DEFAULT_LENGTH, step=64,
                           label="Prompt length in tokens (passkey, multikey, travel)", elem_id="kv-length")
        budget = gr.Slider(16, 2048, value=DEFAULT_BUDGET, step=16, label="Budget: KV entries kept per layer and "
                           "head", elem_id="kv-budget")
        max_new_tokens = gr.Slider(1, 64, value=DEFAULT_MAX_NEW, step=1, label="Max new tokens",
                                   elem_id="kv-max-new-tokens")
        seed = gr.Number(value=0, precision=0, label="Seed (task instance)", elem_id="kv-seed")
    methods = gr.CheckboxGroup([(f"{m} ★" if m in DRAFT_GUIDED else m, m) for m in PRESSES],
                               value=list(DEFAULT_METHODS), label="Methods (★ draft-guided)", elem_id="kv-methods")
    run = gr.Button("Run", variant="primary", elem_id="kv-run")
    status = gr.Markdown("Run compares every ticked method with the full cache on the prompt "
                         "(smollm2-135m: about 30 s at 1k tokens).", elem_id="kv-status")

    gr.Markdown("### Which prompt tokens matter, and what each method kept")
    with gr.Row():
        view_method = gr.Dropdown(list(PRESSES), value=DEFAULT_METHODS[0], label="Method to view",
                                  elem_id="kv-view-method")
        show = gr.Radio(SHOW_CHOICES, value="both", label="Shade the prompt by", elem_id="kv-show")
    heatmap = gr.HTML(prompt_heatmap_html(None), elem_id="kv-heatmap")
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            grid = gr.Plot(kept_grid_figure(None, 0, 0), show_label=False, elem_id="kv-grid")
        with gr.Column(scale=3):
            with gr.Row():
                layer = gr.Slider(0, DEFAULT_LAYERS - 1, value=0, step=1, label="Layer", elem_id="kv-layer")
                head = gr.Slider(0, DEFAULT_KV_HEADS - 1, value=0, step=1, label="KV head", elem_id="kv-head")
            head_map = gr.Plot(head_map_figure(None, None, 0, 0), show_label=False, elem_id="kv-head-map")
    correlation = gr.Plot(correlation_figure(None), show_label=False, elem_id="kv-correlation")
    gr.Markdown("### Outputs")
    outputs = gr.HTML(outputs_html(None), elem_id="kv-outputs")
    constraints = gr.Plot(constraints_figure(None), show_label=False, elem_id="kv-constraints")

    gr.Markdown("### DraftAttention\nOn the target's prefill of the same prompt: queries and keys are averaged over "
                "blocks of tokens, the pooled queries attend to the pooled keys (the draft map), and only the top "
                "1 − r of block pairs are computed in full. The map shows one layer and query head; the numbers "
                "also give the effect on the model's logits with every layer sparse.")
    with gr.Row():
        da_layer = gr.Slider(0, DEFAULT_LAYERS - 1, value=0, step=1, label="Layer", elem_id="kv-da-layer")
        da_head = gr.Slider(0, DEFAULT_HEADS - 1, value=0, step=1, label="Query head", elem_id="kv-da-head")
        sparsity = gr.Slider(0, 0.95, value=0.9, step=0.05, label="Sparsity r (block pairs skipped)",
                             elem_id="kv-da-sparsity")
        block = gr.Slider(4, 64, value=16, step=4, label="Block size (tokens)", elem_id="kv-da-block")
        da_run = gr.Button("DraftAttention", elem_id="kv-da-run")
    da_status = gr.Markdown("", elem_id="kv-da-status")
    da_plot = gr.Plot(_draft_attention_placeholder(), show_label=False, elem_id="kv-da-plot")

    with gr.Accordion("Drafting at long context: LongSpec vs a normal drafter", open=False, elem_id="kv-long"):
        gr.Markdown(LONG_INTRO)
        with gr.Row():
            long_lengths = gr.CheckboxGroup([c for c in LONG_LENGTHS if c[1] <= limits.limits().kv_max_length],
                                            value=DEFAULT_LONG_LENGTHS,
                                            label="Context lengths (prompt tokens)", elem_id="kv-long-lengths")
            long_new_tokens = gr.Slider(8, 128, value=DEFAULT_LONG_NEW, step=8, label="New tokens",
                                        elem_id="kv-long-new-tokens")
            long_gamma = gr.Slider(1, 8, value=DEFAULT_LONG_GAMMA, step=1, label="γ: tokens drafted per round",
                                   elem_id="kv-long-gamma")
            long_run = gr.Button("Run at each length", elem_id="kv-long-run")
        long_status = gr.Markdown("", elem_id="kv-long-status")
        long_memory = gr.Plot(memory_figure([]), show_label=False, elem_id="kv-long-memory")
        long_acceptance = gr.Plot(acceptance_figure([]), show_label=False, elem_id="kv-long-acceptance")
        long_table = gr.Dataframe(rows_frame([]), label="Per drafter and length", interactive=False, wrap=True,
                                  elem_id="kv-long-table")

    run.click(handlers.run, [state, target, drafter, task, prompt, length, methods, budget, max_new_tokens, seed,
                             view_method, show, layer, head],
              [state, status, heatmap, grid, head_map, correlation, outputs, constraints, view_method, layer, head,
               da_layer, da_head], api_name="kv_run", **limits.long_work())
    view_inputs = [state, view_method, show, layer, head]
    view_outputs = [heatmap, grid, head_map, correlation]
    view_method.input(handlers.view, view_inputs, view_outputs, api_name="kv_view", queue=False)
    show.input(handlers.view, view_inputs, view_outputs, api_name=False, queue=False)
    layer.input(handlers.head_view, [state, view_method, layer, head], head_map, api_name="kv_head_map", queue=False)
    head.input(handlers.head_view, [state, view_method, layer, head], head_map, api_name=False, queue=False)
    da_run.click(handlers.draft_attention, [target, task, prompt, length, seed, da_layer, da_head, sparsity, block],
                 [da_plot, da_status], api_name="kv_draft_attention", **limits.long_work())
    long_run.click(handlers.long_context, [target, task, seed, long_lengths, long_new_tokens, long_gamma],
                   [long_memory, long_acceptance, long_table, long_status], api_name="kv_long_context",
                   **limits.long_work())
    return {"state": state, "target": target, "drafter": drafter, "task": task, "prompt": prompt, "length": length,
            "methods": methods, "budget": budget, "status": status, "heatmap": heatmap, "grid": grid,
            "head_map": head_map, "correlation": correlation, "outputs": outputs, "constraints": constraints,
            "layer": layer, "head": head,
            "da_plot": da_plot, "da_status": da_status, "long_lengths": long_lengths, "long_run": long_run,
            "long_memory": long_memory, "long_acceptance": long_acceptance, "long_table": long_table,
            "long_status": long_status}
