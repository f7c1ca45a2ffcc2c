"""Run KV methods against the full cache on one prompt: ``kv_report`` (the app and ``core.cli kv`` call it).

1. Full cache: prefill, greedy decode; then one capture pass over prompt + output gives the target's *true*
   importance of every prompt position: the attention the output's queries paid it, per layer and KV head.
2. Each method at each budget: its own prefill / compression (timed, drafting included), greedy decode on what it
   kept (timed), then agreement with the full-cache output, recall of the true top-budget positions per head, the
   task's answer, the KV bytes kept, and per target layer the correlation of its scores with the true importance.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping

import torch

from core.budget import Shape, check_count, kv_run as estimate_kv_run
from core.errors import DraftScopeError
from core.kv import DRAFT_GUIDED, build_press, press_class
from core.kv.base import Press, PressContext, check_kv_target, group_max, prefill, select_kv, stacked
from core.kv.records import KVReport, PressRun
from core.kv.tasks import Task, constraint_tokens, make_task
from core.options import as_dict
from core.runtime.cache import cache_bytes, keep_per_head
from core.runtime.layers import exit_layer_at
from core.runtime.models import LoadedModel, load_model
from core.runtime.timing import elapsed, synchronize

DEFAULT_METHODS = ("snapkv", "streamingllm", "speckv", "specpc")
MAX_PROMPT = 8192
GUIDE_EXIT = 0.25  # the early-exit guide's default ℓ: a quarter of the target's depth


def parse_budget(value, n_prompt: int) -> int:
    """An absolute token count (≥ 1) or a ratio in (0, 1) of the prompt length."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DraftScopeError(f"budget must be a token count or a ratio in (0, 1), got '{value}'") from None
    if 0 < number < 1:
        return max(1, round(number * n_prompt))
    if number >= 1 and number == int(number):
        return int(number)
    raise DraftScopeError(f"budget must be a token count ≥ 1 or a ratio in (0, 1), got '{value}'")


@torch.inference_mode()
def decode(target: LoadedModel, cache, first_logits: torch.Tensor, position: int, n: int) -> list[int]:
    """Greedy: the first token from ``first_logits``, then n − 1 more on ``cache`` with positions from ``position``
    (the cache may hold fewer entries than ``position`` after eviction); stops at EOS."""
    out = [int(first_logits.argmax())]
    while len(out) < n and out[-1] not in target.eos_ids:
        x = torch.tensor([[out[-1]]], device=target.device)
        pos = torch.tensor([[position + len(out) - 1]], device=target.device)
        logits = target.model(input_ids=x, position_ids=pos, past_key_values=cache, use_cache=True).logits
        out.append(int(logits[0, -1].argmax()))
    return out


PROBE_TOKENS = 6  # greedy tokens decoded after each constraint's probe


@torch.inference_mode()
def probe_constraints(target: LoadedModel, cache, position: int, task: Task) -> list[str]:
    """A multi-constraint task's question for each constraint, asked of a copy of ``cache`` (the prompt as this
    method kept it, positions continuing from ``position``): the probe's tokens, then ``PROBE_TOKENS`` greedy ones.
    Returns the decoded continuations (``Task.answered`` checks them); the cache itself is left as it was."""
    answers = []
    for constraint in task.constraints:
        ids = target.tokenizer(constraint.probe, add_special_tokens=False)["input_ids"]
        mine = copy.deepcopy(cache)
        x = torch.tensor([ids], device=target.device)
        pos = torch.arange(position, position + len(ids), device=target.device)[None]
        logits = target.model(input_ids=x, position_ids=pos, past_key_values=mine, use_cache=True).logits
        answers.append(target.decode(decode(target, mine, logits[0, -1], position + len(ids), PROBE_TOKENS)))
    return answers


def constraint_rows(task: Task, spans: list[list[int]], kept: list[int], caches: int,
                    answers: list[str]) -> list[dict]:
    """Per constraint of ``task``: the fraction of its value's prompt tokens kept over the (layer, KV head) caches
    (``kept`` per prompt token, out of ``caches``), the probe's answer and whether it gives the value."""
    rows = []
    for constraint, span, answer in zip(task.constraints, spans, answers, strict=True):
        share = sum(kept[i] for i in span) / (len(span) * caches) if span else None
        rows.append({"name": constraint.name, "kept": None if share is None else round(share, 4),
                     "answer": answer, "met": task.answered(constraint, answer)})
    return rows


def true_importance(target: LoadedModel, prompt_ids: list[int], output: list[int]) -> torch.Tensor:
    """(L, Hkv, n): attention each prompt position receives from the queries that produced ``output`` (the prompt's
    last position and each output token but the last), summed over them, GQA group max."""
    n = len(prompt_ids)
    _, _, captured = prefill(target, prompt_ids + output[:-1], window=len(output))
    probs = stacked(captured.window_probs)[..., :n].sum(dim=2)  # (L, Hq, n)
    return group_max(probs, target.config.num_key_value_heads)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """Scale the last dimension to [0, 1] by its max (a zero row stays zero)."""
    top = x.amax(dim=-1, keepdim=True).clamp_min(1e-12)
    return (x / top).clamp(0, 1)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else 0.0


def _recall(keep_LHk: torch.Tensor, true_LHn: torch.Tensor, budget: int) -> torch.Tensor:
    """(L, Hkv): |kept ∩ true top-budget| / budget per head."""
    L, H, n = true_LHn.shape
    k = min(budget, n)
    top = true_LHn.topk(k, dim=-1).indices
    kept = torch.zeros(L, H, n, dtype=torch.bool).scatter_(-1, keep_LHk, True)
    return kept.gather(-1, top).float().mean(dim=-1)


def _agreement(output: list[int], reference: list[int]) -> float:
    return sum(a == b for a, b in zip(output, reference, strict=False)) / max(len(reference), 1)


def build_presses(methods, press_options: Mapping[str, Mapping | Press] | None = None, window: int | None = None,
                  kernel: int | None = None) -> dict[str, Press]:
    """{method: press} with its options: ``press_options[method]`` (a mapping of its fields, or a press) over
    ``window`` / ``kernel``, which set that field of every chosen kv-level press declaring it, as ``--window`` /
    ``--kernel`` do (SpecPC's own window and kernel come only from its press_options). Unknown methods and option
    names are errors; options of a registered method that was not chosen are checked, then unused."""
    press_options = dict(press_options or {})
    shared = {k: v for k, v in (("window", window), ("kernel", kernel)) if v is not None}
    for name, given in press_options.items():
        if name not in methods:
            build_press(name, given)
    presses = {}
    for name in methods:
        cls, given = press_class(name), press_options.get(name)
        if isinstance(given, Press):
            presses[name] = build_press(name, given)
            continue
        declared = {f.name for f in dataclasses.fields(cls)} if cls.level == "kv" else set()
        presses[name] = build_press(name, {**{k: v for k, v in shared.items() if k in declared}, **(given or {})})
    return presses


def run_method(press: Press | str, ctx: PressContext, task: Task, reference: list[int],
               true_LHn: torch.Tensor, spans: list[list[int]] | None = None) -> PressRun:
    """One method (a press, or a registry name for its defaults) at ctx.budget: compress, decode, measure; a
    multi-constraint task's constraints (their value tokens at ``spans``) are each probed on what was kept."""
    target, n = ctx.target, len(ctx.prompt_ids)
    press = build_press(press) if isinstance(press, str) else press
    L, H = true_LHn.shape[:2]
    synchronize(target.device)
    t0 = time.perf_counter()
    if press.level == "kv":
        check_kv_target(target)
        pre = press.prefill(ctx)
        scores_LHn = pre.scores_LHn
        keep_LHk = select_kv(scores_LHn, ctx.budget, press.window)
        keep_per_head(pre.cache, keep_LHk)
        cache, first_logits = pre.cache, pre.first_logits
        token_scores = _normalise(scores_LHn.mean(dim=(0, 1)))
        n_cached = n  # positions continue after the whole prompt
    else:
        kept_tokens, scores_n = press.select(ctx)
        cache, logits, _ = prefill(target, [ctx.prompt_ids[i] for i in kept_tokens])
        first_logits, n_cached = logits[-1], len(kept_tokens)
        keep_LHk = torch.tensor(kept_tokens).expand(L, H, len(kept_tokens))
        scores_LHn = scores_n.expand(L, H, n)
        token_scores = _normalise(scores_n)
    prefill_ms = elapsed(t0, target.device) * 1e3
    kv_bytes = cache_bytes(cache)
    answers = probe_constraints(target, cache, n_cached, task) if task.constraints else []
    t1 = time.perf_counter()
    output = decode(target, cache, first_logits, n_cached, len(reference))
    decode_ms = elapsed(t1, target.device) * 1e3
    recall_lh = _recall(keep_LHk, true_LHn, ctx.budget)
    kept = torch.zeros(L, H, n, dtype=torch.bool).scatter_(-1, keep_LHk, True).sum(dim=(0, 1))
    constraints = constraint_rows(task, spans or [[] for _ in answers], kept.tolist(), L * H, answers)
    true_layer = true_LHn.mean(dim=1)  # (L, n)
    per_layer_scores = scores_LHn.mean(dim=1) if press.level == "kv" else scores_n.expand(L, n)
    text = target.decode(output)
    return PressRun(
        method=press.name, budget=ctx.budget, level=press.level, scores=token_scores.tolist(), kept=kept.tolist(),
        output_ids=output, output_text=text, agreement=_agreement(output, reference),
        recall=float(recall_lh.mean()), accuracy=_accuracy(task, text, answers), prefill_ms=prefill_ms,
        decode_ms=decode_ms, kv_bytes=kv_bytes, constraints=constraints, draft_ms=float(ctx.info.get("draft_ms", 0.0)),
        recall_lh=recall_lh.tolist(),
        head_scores=_normalise(scores_LHn).tolist() if press.level == "kv" else [],
        head_kept=keep_LHk.tolist() if press.level == "kv" else [],
        layer_correlation=[_pearson(per_layer_scores[layer], true_layer[layer]) for layer in range(L)],
        note=str(ctx.info.get("note", "")))


def _accuracy(task: Task, text: str, answers: list[str]) -> float | None:
    return task.score(text, answers if task.constraints else None)


def kv_report(target: str | LoadedModel = "smollm2-135m", drafter: str | LoadedModel | None = "smollm2-135m",
              task: str = "passkey", length: int = 1024, methods=DEFAULT_METHODS, budgets=(256,), seed: int = 0,
              max_new_tokens: int = 24, window: int | None = None, kernel: int | None = None,
              press_options: Mapping[str, Mapping | Press] | None = None, prompt: str | None = None, progress=None,
              allow_local: bool = False, max_prompt_tokens: int | None = None,
              max_bytes: int | None = None) -> KVReport:
    """The full-cache reference and every method × budget on one prompt (``prompt`` overrides ``task``).
    ``max_prompt_tokens`` and ``max_bytes`` (the app's caps; None: none) refuse a longer prompt, or a run whose
    memory estimate (``core.budget.kv_run``) is larger, before the first prefill.
    ``press_options`` = {method: {option: value}}; ``window`` / ``kernel`` set those options of every chosen kv-level
    press (``build_presses``; None: each press's default). ``progress(fraction, desc)`` is called between steps (the
    app's gr.Progress, tqdm on the CLI)."""
    progress = progress or (lambda *a, **k: None)
    methods = list(methods)
    if not methods:
        raise DraftScopeError("choose at least one method")
    presses = build_presses(methods, press_options, window=window, kernel=kernel)
    if not 1 <= max_new_tokens <= 256:
        raise DraftScopeError(f"max new tokens must be in 1..256, got {max_new_tokens}")
    progress(0.0, desc="Loading models…")
    model = target if isinstance(target, LoadedModel) else load_model(target, allow_local=allow_local)
    guide = None
    if any(m in DRAFT_GUIDED for m in methods):
        if drafter is None:
            raise DraftScopeError(f"{', '.join(m for m in methods if m in DRAFT_GUIDED)} need a draft model")
        guide = drafter if isinstance(drafter, LoadedModel) else load_model(
            drafter, device=model.device, dtype=model.dtype, allow_local=allow_local)
    if any(press.level == "kv" for press in presses.values()):
        check_kv_target(model)
    the_task = Task("prompt", prompt, None) if prompt is not None else make_task(task, model.tokenizer, length, seed)
    if not the_task.prompt.strip():
        raise DraftScopeError("the prompt is empty")
    prompt_ids = model.encode(the_task.prompt)
    n = len(prompt_ids)
    if n + max_new_tokens > min(MAX_PROMPT, model.max_context):
        raise DraftScopeError(f"the prompt has {n} tokens; with {max_new_tokens} new tokens that exceeds "
                              f"{min(MAX_PROMPT, model.max_context)}")
    budgets = [parse_budget(b, n) for b in budgets]
    check_count("the prompt", n, max_prompt_tokens, "tokens", "shorten the prompt or lower the length")
    estimate_kv_run(Shape.of(model), n, max_new_tokens, presses, Shape.of(guide) if guide else None,
                    len(the_task.constraints), len(budgets)).check(max_bytes)

    progress(0.05, desc="Full cache…")
    synchronize(model.device)
    t0 = time.perf_counter()
    cache, logits, _ = prefill(model, prompt_ids)
    prefill_ms = elapsed(t0, model.device) * 1e3
    kv_bytes = cache_bytes(cache)
    answers = probe_constraints(model, cache, n, the_task) if the_task.constraints else []
    t1 = time.perf_counter()
    reference = decode(model, cache, logits[-1], n, max_new_tokens)
    decode_ms = elapsed(t1, model.device) * 1e3
    true_LHn = true_importance(model, prompt_ids, reference)
    L, H = true_LHn.shape[:2]
    text = model.decode(reference)
    everything = torch.arange(n).expand(L, H, n)
    prompt_tokens = [model.token_text(t) for t in prompt_ids]
    spans = [constraint_tokens(prompt_tokens, c) for c in the_task.constraints]
    full = PressRun(method="full", budget=n, level="kv", scores=_normalise(true_LHn.mean(dim=(0, 1))).tolist(),
                    kept=[L * H] * n, output_ids=reference, output_text=text, agreement=1.0,
                    recall=float(_recall(everything, true_LHn, n).mean()),
                    accuracy=_accuracy(the_task, text, answers), prefill_ms=prefill_ms, decode_ms=decode_ms,
                    kv_bytes=kv_bytes, constraints=constraint_rows(the_task, spans, [L * H] * n, L * H, answers))
    report = KVReport(target=model.name, drafter=guide.name if guide else None, task=the_task.name,
                      prompt_ids=prompt_ids, prompt_tokens=prompt_tokens,
                      answer=the_task.answer, true_importance=full.scores,
                      true_layer_importance=_normalise(true_LHn.mean(dim=1)).tolist(), full=full, n_layers=L,
                      n_kv_heads=H, constraints=[{"name": c.name, "label": c.label, "value": c.value,
                                                  "statement": c.statement, "tokens": span}
                                                 for c, span in zip(the_task.constraints, spans, strict=True)],
                      settings={"window": window, "kernel": kernel, "seed": seed, "length": length,
                                              "max_new_tokens": max_new_tokens, "prompt_tokens": n,
                                              "press_options": {m: as_dict(p) for m, p in presses.items()}})
    jobs = [(m, b) for b in budgets for m in methods]
    for k, (name, budget) in enumerate(jobs):
        progress(0.1 + 0.9 * k / len(jobs), desc=f"{name} at budget {budget} ({k + 1} of {len(jobs)})…")
        ctx = PressContext(target=model, prompt_ids=prompt_ids, prompt_text=the_task.prompt, budget=budget,
                           max_new_tokens=max_new_tokens, drafter=guide)
        report.runs.append(run_method(presses[name], ctx, the_task, reference, true_LHn, spans))
    progress(1.0, desc="Done")
    return report


def guide_model(target: LoadedModel, drafter: str, draft_model: str | None, exit_layer: int | None = None,
                allow_local: bool = False) -> LoadedModel:
    """The model whose draft guides speckv / specpc: ``model`` = the preset ``draft_model`` (default the target);
    ``early-exit`` = the target's own first ℓ layers + its head (a self-drafter; ℓ default a quarter of the depth);
    ``sorted`` = S2D's deepest exit (layer 10 of SmolLM2's 30, trained to match the target)."""
    from core.runtime.models import truncated_view

    if drafter == "model":
        name = draft_model or target.name
        return target if name == target.name else load_model(name, device=target.device, dtype=target.dtype,
                                                              allow_local=allow_local)
    if drafter == "early-exit":
        ell = exit_layer or exit_layer_at(target.n_layers, GUIDE_EXIT)
        if not 1 <= ell < target.n_layers:
            raise DraftScopeError(f"exit layer must be in 1..{target.n_layers - 1}, got {ell}")
        return LoadedModel(name=f"{target.name}@{ell}", model=truncated_view(target.model, ell),
                           tokenizer=target.tokenizer, source="view")
    if drafter == "sorted":  # S2D's deepest trained exit: the target's first layers, tuned, + that exit's head
        from core.runtime.layers import check_layer_slicing
        from core.specdec.drafters.sorted import shared_exits

        check_layer_slicing(target.model)
        exits, meta = shared_exits(target, None)
        view = truncated_view(target.model, exits.exit_layers[-1])
        view.model.layers = exits.layers
        view.model.norm = exits.norms[-1]
        trained = "trained" if meta.get("trained") else "untrained"
        return LoadedModel(name=f"{target.name}@sorted{exits.exit_layers[-1]}", model=view,
                           tokenizer=target.tokenizer, source=f"view ({trained} S2D exit)")
    raise DraftScopeError(f"guiding drafter must be 'model', 'early-exit' or 'sorted', got '{drafter}'")


def kv_table(samples: int = 1, seed: int = 0, **kwargs) -> list[dict]:
    """``kv_report`` over seeds seed..seed+samples−1 (a new task instance each), rows averaged per method and budget
    (numbers; the accuracy is the fraction solved; a multi-constraint task adds "met <name>": the fraction of samples
    whose probe of that constraint gave its value)."""
    if not 1 <= samples <= 100:
        raise DraftScopeError(f"samples must be in 1..100, got {samples}")
    groups: dict[tuple, list[dict]] = {}
    outer = kwargs.pop("progress", None) or (lambda *a, **k: None)
    for k in range(samples):
        def progress(fraction, desc="", k=k):
            outer((k + fraction) / samples, desc=f"[{k + 1}/{samples}] {desc}" if samples > 1 else desc)

        report = kv_report(seed=seed + k, progress=progress, **kwargs)
        for row in report.rows():
            groups.setdefault((row["method"], row["budget"] if row["method"] != "full" else 0), []).append(row)
    table = []
    for (method, _), rows in groups.items():
        merged = {"method": method, "budget": rows[0]["budget"] if len(rows) == 1 else
                  round(sum(r["budget"] for r in rows) / len(rows)), "samples": len(rows)}
        for key in ("accuracy", "agreement", "recall", "prefill_ms", "decode_ms", "draft_ms", "kv_bytes",
                    "correlation"):
            values = [r[key] for r in rows if r.get(key) is not None]
            merged[key] = round(sum(values) / len(values), 4) if values else None
        for name in rows[0].get("constraints", {}):  # multi-constraint tasks: per constraint, the fraction met
            merged[f"met {name}"] = round(sum(bool(r["constraints"].get(name)) for r in rows) / len(rows), 4)
        table.append(merged)
    return table
