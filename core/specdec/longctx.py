"""Speculative decoding against context length: each drafter on one long-context task at several prompt lengths,
beside a plain greedy run at each length (``context_sweep``; the KV tab and ``core.cli bench --long-context`` call it).

Per (drafter, length): the drafter's own KV bytes (LongSpec: its ring, fixed at construction; a model drafter: its
own KV cache, which grows with the context), the target's KV bytes for reference, α, τ, tokens/s and whether the
output equals the plain run's (everything is greedy, so it must).

Prompts are the KV tab's procedural tasks (``core.kv.tasks``), encoded as the KV tab encodes them (``kv_report``):
plain text that ends where the answer starts, no chat template. All prompts are built and checked against the target's
context before anything runs, so a bad length is one error, not a failure halfway through the sweep.

tokens/s is the decode phase: generated tokens / the rounds' wall time, the prefill (target + drafter) timed apart
(``prefill_s``). At 8k tokens one prefill costs more than the 64 decoded tokens, so whole-call rates would all read
≈ 1× and hide what drafting does; the prefill seconds show what a drafter's own prefill adds (a model drafter reads
the whole prompt, LongSpec only its last ``window`` positions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from core.errors import DraftScopeError
from core.kv.tasks import MAX_LENGTH, MIN_LENGTH, make_task
from core.runtime.cache import cache_bytes
from core.runtime.cached_lm import CachedLM
from core.runtime.models import LoadedModel, load_model
from core.runtime.records import Record
from core.specdec.config import SessionConfig
from core.specdec.drafters import Drafter, build_drafter
from core.specdec.engine import MODEL_LOCK, Session
from core.specdec.records import Stats
from core.specdec.verify import build_verifier

SWEEP_TASKS = ("passkey", "multikey")  # the tasks whose prompt length can be set
DEFAULT_DRAFTERS = ("longspec", "fastdraft")  # constant-memory drafter vs a normal drafter with a growing cache
DEFAULT_LENGTHS = (1024, 2048, 4096, 8000)  # 8000 + 64 new tokens fits SmolLM2's 8192
MAX_NEW_TOKENS = 1024
WARM_UP_PROMPT, WARM_UP_TOKENS = 64, 4  # a short untimed run of every method first (first-call costs)
PLAIN = "none"  # the plain greedy run: the target alone, through the same engine

Progress = Callable[[int, int, str], None]  # (runs done, runs in all, what runs next)


@dataclass
class ContextRow(Record):
    """One drafter at one context length."""

    drafter: str
    length: int  # prompt tokens actually used (the task builder hits the requested length only roughly)
    requested: int  # the length asked of the task builder
    drafter_kv_bytes: int | None  # the drafter's own cache (``drafter_kv_bytes``); None: it keeps none
    drafter_kv_kind: str  # "ring": fixed at construction; "cache": the most it held between rounds; "none"
    drafter_kv_tokens: int  # positions its cache held after the run
    target_kv_bytes: int  # the target's KV cache after the run (every committed token but the last)
    alpha: float | None  # accepted / drafted
    tau: float | None  # tokens per target call, bonus included (mean accepted + 1 per round)
    tokens_per_second: float  # decode phase: generated / the rounds' wall time
    target_tokens_per_second: float  # the plain greedy run at this length, measured the same way
    speedup: float | None  # tokens_per_second / target_tokens_per_second
    prefill_s: float  # this run's prefill: the target's and the drafter's
    target_prefill_s: float  # the plain run's prefill (the target's alone)
    generated: int
    rounds: int
    identical_to_target: bool  # the output equals the plain run's token for token


def drafter_kv_bytes(drafter: Drafter) -> tuple[int | None, str]:
    """(bytes of the drafter's own KV cache, its kind): ``memory_bytes`` where the drafter declares a fixed cache
    (LongSpec's ring) → "ring"; the keys and values in a model drafter's own ``CachedLM`` → "cache"; else (None,
    "none")."""
    fixed = getattr(drafter, "memory_bytes", None)
    if isinstance(fixed, int):
        return fixed, "ring"
    kv = getattr(drafter, "kv", None)
    if isinstance(kv, CachedLM):
        return (cache_bytes(kv.cache) if kv.cache is not None else 0), "cache"
    return None, "none"


def parse_lengths(text: str) -> list[int]:
    """"1024,2048" → [1024, 2048] (sorted, duplicates dropped); anything else is a DraftScopeError."""
    parts = [p.strip() for p in str(text or "").split(",") if p.strip()]
    try:
        lengths = [int(p) for p in parts]
    except ValueError:
        raise DraftScopeError(f"lengths must be comma-separated whole numbers of tokens (e.g. 1024,2048), got "
                              f"'{text}'") from None
    return check_lengths(lengths)


def check_lengths(lengths: Sequence[int]) -> list[int]:
    """The lengths sorted without duplicates, each in the task builder's range."""
    if isinstance(lengths, (str, bytes)) or not lengths:
        raise DraftScopeError("choose at least one context length")
    out = []
    for length in lengths:
        if isinstance(length, bool) or not float(length).is_integer():
            raise DraftScopeError(f"a context length must be a whole number of tokens, got {length!r}")
        if not MIN_LENGTH <= int(length) <= MAX_LENGTH:
            raise DraftScopeError(f"context lengths must be in {MIN_LENGTH}..{MAX_LENGTH} tokens, got {length}")
        out.append(int(length))
    return sorted(set(out))


def _check_task(task: str) -> None:
    if task not in SWEEP_TASKS:
        raise DraftScopeError(f"the context sweep needs a task whose length can be set: {', '.join(SWEEP_TASKS)}; "
                              f"got '{task}'")


def _prompts(model: LoadedModel, task: str, lengths: list[int], new_tokens: int, seed: int) -> list[list[int]]:
    """The task's prompt at each length, encoded as the KV tab does; any that leaves no room for ``new_tokens`` in the
    target's context is an error (before anything runs)."""
    limit = model.max_context
    too_long = [n for n in lengths if n + new_tokens > limit]
    if too_long:
        raise DraftScopeError(f"context length {too_long[0]} + {new_tokens} new tokens exceeds the context of "
                              f"'{model.name}' ({limit} tokens); use lengths up to {limit - new_tokens}")
    prompts = []
    for n in lengths:
        ids = model.encode(make_task(task, model.tokenizer, n, seed).prompt)
        if len(ids) + new_tokens > limit:
            raise DraftScopeError(f"the {task} prompt asked at {n} tokens came out at {len(ids)}; with {new_tokens} "
                                  f"new tokens that exceeds the context of '{model.name}' ({limit} tokens): ask for "
                                  "a shorter length")
        prompts.append(ids)
    return prompts


@dataclass
class _Run:
    """What one session left (not the session: its target cache is freed before the next run)."""

    stats: Stats
    output: list[int]
    drafter_bytes: int | None  # the most the drafter's own cache held between rounds
    drafter_kind: str
    drafter_tokens: int  # positions the drafter's cache held at the end
    target_bytes: int  # the target's KV cache at the end


def _run(model: LoadedModel, drafter: Drafter, ids: list[int], config: SessionConfig) -> _Run:
    """One greedy session to the end, measuring the drafter's own KV bytes after every round (the peak is kept)."""
    session = Session(model, drafter, build_verifier("greedy"), ids, config)
    peak, kind = None, "none"
    for _ in session.run():
        size, kind = drafter_kv_bytes(drafter)
        if size is not None:
            peak = size if peak is None else max(peak, size)
    cache = session.target_kv.cache
    return _Run(session.stats, session.generated_ids, peak, kind, drafter.cache_len,
                cache_bytes(cache) if cache is not None else 0)


def context_sweep(target: str | LoadedModel = "smollm2-135m", drafters: Sequence[str] = DEFAULT_DRAFTERS,
                  task: str = "passkey", lengths: Sequence[int] = DEFAULT_LENGTHS, new_tokens: int = 64,
                  gamma: int = 4, seed: int = 0, progress: Progress | None = None,
                  options: dict[str, dict] | None = None, allow_local: bool = False) -> list[ContextRow]:
    """Each drafter (greedy, chains of ``gamma``) and a plain greedy run on ``task``'s prompt at each length,
    ``new_tokens`` each; one row per (drafter, length), ordered by length then drafter. ``options`` = {drafter: its
    options} (e.g. {"longspec": {"checkpoint": path or network}}). ``progress(done, total, label)`` is called before
    each run and at the end. Bad input (lengths, task, a length beyond the target's context, a drafter that cannot
    load) raises DraftScopeError before anything runs."""
    report = progress or (lambda done, total, label: None)
    drafters = list(drafters)
    if not drafters or PLAIN in drafters:
        raise DraftScopeError("choose at least one drafter (the plain run, 'none', is always included)")
    lengths = check_lengths(lengths)
    _check_task(task)
    if isinstance(new_tokens, bool) or not 1 <= int(new_tokens) <= MAX_NEW_TOKENS:
        raise DraftScopeError(f"new tokens must be in 1..{MAX_NEW_TOKENS}, got {new_tokens}")
    model = target if isinstance(target, LoadedModel) else load_model(target, allow_local=allow_local)
    config = SessionConfig(target=model.name, drafter=PLAIN, gamma=int(gamma), max_new_tokens=int(new_tokens),
                           seed=int(seed), record=False)
    config.validate()
    prompts = _prompts(model, task, lengths, int(new_tokens), int(seed))
    built = {name: build_drafter(name, model, (options or {}).get(name), allow_local=allow_local)
             for name in drafters}
    built = {PLAIN: build_drafter(PLAIN, model), **built}
    configs = {name: replace(config, drafter=name) for name in built}

    total = len(lengths) * len(built)
    report(0, total, "warm-up")
    warm_ids = prompts[0][:WARM_UP_PROMPT]
    with MODEL_LOCK:
        for name, drafter in built.items():
            _run(model, drafter, warm_ids, replace(configs[name], max_new_tokens=WARM_UP_TOKENS))
        rows, done = [], 0
        for requested, ids in zip(lengths, prompts, strict=True):
            runs = {}
            for name, drafter in built.items():
                report(done, total, f"{'the target alone' if name == PLAIN else name} at {len(ids):,} tokens")
                runs[name] = _run(model, drafter, ids, configs[name])
                done += 1
            rows += [_row(name, requested, ids, runs[name], runs[PLAIN]) for name in drafters]
    report(total, total, "done")
    return rows


def _row(name: str, requested: int, ids: list[int], run: _Run, plain: _Run) -> ContextRow:
    s, p = run.stats, plain.stats
    tps = s.generated / s.total_s if s.total_s else 0.0
    base = p.generated / p.total_s if p.total_s else 0.0
    return ContextRow(
        drafter=name, length=len(ids), requested=requested, drafter_kv_bytes=run.drafter_bytes,
        drafter_kv_kind=run.drafter_kind, drafter_kv_tokens=run.drafter_tokens, target_kv_bytes=run.target_bytes,
        alpha=s.alpha, tau=s.tau, tokens_per_second=tps, target_tokens_per_second=base,
        speedup=tps / base if base else None, prefill_s=s.prefill_s, target_prefill_s=p.prefill_s,
        generated=s.generated, rounds=s.rounds, identical_to_target=run.output == plain.output)
