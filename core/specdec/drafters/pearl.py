"""PEARL: parallel speculative decoding with adaptive draft length (Liu et al., ICLR 2025), around a chain drafter.

Every round the target's forward and the drafter's next draft run at the same time, on two threads each pinned to
one core (``parallel``), or one after the other on the same thread (``parallel=False``: the same tokens, the same
random draws, for comparison):

- *pre-verify* (the first round, and after every rejection): nothing is pending. The target runs on the last committed
  token alone, which gives p at the next position, while the drafter drafts γ tokens d_1..d_γ. Only d_1 is checked
  (the usual rule: accept with min(1, p/q), else a residual sample). Accepted: d_1 is committed and d_2..d_γ become
  the pending drafts → post-verify. Rejected: the residual token is committed, the drafts are dropped.
- *post-verify*: the pending drafts d_2..d_γ are verified by one target forward while the drafter, assuming they will
  all be accepted, already drafts e_1..e_γ after them. The forward's last row is p at e_1's position, so d_2..d_γ and
  e_1 are checked in order (γ checks). All accepted: they are committed (no bonus token: the target never saw e_1) and
  e_2..e_γ are pending → post-verify again, so the draft keeps growing by γ while drafts are accepted (the paper's
  "adaptive draft length"). A rejection: the accepted ones plus a residual sample are committed → pre-verify.

Every committed token passed the standard speculative check against the target's own distribution at its position,
so the output is the target's: token-identical to greedy decoding at T = 0, the target's law when sampling.

How the threads share this machine: ``threads`` cores in all (the machine's cores at most). In parallel mode torch's
intra-op pool is set to ``threads // 2`` for the round and each lane's thread is pinned to its own half of the cores
(``sched_setaffinity``; on this 2-core machine one core each), both lanes inside this process (torch releases the
GIL inside its kernels; the Python between them does not run in parallel). In serial mode the pool has ``threads``.
The drafter's thread is started and joined within the round, so a failed or stopped round never leaves it running.
The reference runs the two models on separate GPUs (two processes); here both share one CPU's memory bandwidth.

Draft.info (JSON): mode (pre / post), parallel, the two lanes' [start, end] in ms from the round's start
(``draft_lane``, ``target_lane``), ``pending`` (drafts verified this round), ``ahead`` (drafted for the next).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Literal

import torch

from core.errors import DraftScopeError
from core.runtime.devices import offloaded
from core.runtime.models import has_sliding_layers
from core.specdec.drafters.base import (
    Draft,
    DraftContext,
    Drafter,
    Pipelined,
    ReadsTargetHidden,
    SharesTargetCache,
    verify_forward,
)

BASES = ("fastdraft", "early-exit", "model", "sorted", "easyspec", "ngram", "aded")


def available_cores() -> int:
    return len(usable_cores()) or os.cpu_count() or 1


@dataclass
class Lane:
    start_ms: float = 0.0
    end_ms: float = 0.0

    def as_list(self) -> list[float]:
        return [round(self.start_ms, 3), round(self.end_ms, 3)]


class PearlDrafter(Drafter, Pipelined):
    name = "pearl"

    @dataclass
    class Options:
        base: Literal[BASES] = "fastdraft"  # the wrapped chain drafter
        base_options: str = ""  # the wrapped drafter's options as JSON, e.g. {"exit_layer": 6}
        parallel: bool = True  # drafter and target on two threads at once (False: one after the other)
        threads: int = 2  # cores in all: half per lane in parallel mode (at most this machine's cores)

        def __post_init__(self):
            if isinstance(self.base, str) and self.base not in BASES:  # (tests pass a built drafter)
                raise DraftScopeError(f"PEARL wraps a chain drafter with its own state: one of {', '.join(BASES)}; "
                                      f"'{self.base}' cannot be wrapped")
            cores = available_cores()
            if isinstance(self.threads, bool) or not isinstance(self.threads, int) or not 1 <= self.threads <= cores:
                raise DraftScopeError(f"PEARL threads must be in 1..{cores} (this machine's cores), got "
                                      f"{self.threads!r}")
            if self.parallel and self.threads < 2:
                raise DraftScopeError("parallel PEARL needs 2 threads (one per lane); use parallel=False for one")
            _parse_base_options(self.base_options)

    def __init__(self, target, options=None, **kw):
        super().__init__(target, options, **kw)
        from core.specdec.drafters import build_drafter
        inner = self.options.base
        if isinstance(inner, Drafter):  # a drafter built in memory (tests)
            self.inner = inner
        else:
            self.inner = build_drafter(inner, target, _parse_base_options(self.options.base_options),
                                       allow_local=self.allow_local)
        if isinstance(self.inner, (SharesTargetCache, ReadsTargetHidden)) or self.inner.name in ("pearl", "none"):
            raise DraftScopeError(f"PEARL cannot wrap the '{self.inner.name}' drafter: it needs the target's "
                                  "verification of the very tokens it drafts ahead")
        if has_sliding_layers(target.model):
            # its drafter's cache must go back past drafts it was fed a round earlier, which a sliding-window cache,
            # trimmed to its window every round, cannot do
            raise DraftScopeError(f"PEARL is not available for '{target.name}' yet: its sliding-window layers cannot "
                                  "roll back across rounds; use a plain chain drafter")
        if self.options.parallel and offloaded(target.model):  # offload hooks swap weights in and out per call
            raise DraftScopeError("PEARL's two threads cannot share blocks that the device map offloads (cpu/disk): "
                                  "use parallel=False, or place every block on a device")
        self.restart()

    # ------------------------------------------------------------------------------------------ state
    def restart(self) -> None:
        super().restart()
        self.inner.restart()
        self.pending = Draft(tokens=[])

    def prefill(self, tokens: list[int]) -> None:
        self.pending = Draft(tokens=[])
        self.inner.prefill(tokens)

    def propose(self, ctx: DraftContext) -> Draft:
        """The drafts pending from the previous round (none in pre-verify mode), cut to what the budget allows."""
        n = min(len(self.pending.tokens), ctx.room if ctx.room is not None else ctx.gamma)
        return _part(self.pending, slice(0, n), info={})

    @property
    def cache_len(self) -> int | None:
        return self.inner.cache_len

    @property
    def cost(self) -> float | None:
        return self.inner.cost

    # ------------------------------------------------------------------------------------------ one round
    def overlap(self, target_kv, tokens: list[int], draft: list[int], ctx: DraftContext,
                t0: float) -> tuple[torch.Tensor, Draft, dict]:
        """The target's forward over the pending committed token and ``draft`` and, at the same time, the wrapped
        drafter's γ tokens after ``tokens + draft``: (logits (len(draft) + 1, V), the new draft, the lanes)."""
        ahead_ctx = self.inner.plan(replace(ctx, tokens=tokens + draft, room=ctx.gamma))
        lanes = {"draft": Lane(), "target": Lane()}
        box: dict = {}

        def draft_lane():
            lanes["draft"].start_ms = (time.perf_counter() - t0) * 1e3
            try:
                with torch.inference_mode():
                    box["draft"] = self.inner.propose(ahead_ctx)
            except BaseException as exc:  # handed to the main thread
                box["error"] = exc
            lanes["draft"].end_ms = (time.perf_counter() - t0) * 1e3

        def target_lane():
            lanes["target"].start_ms = (time.perf_counter() - t0) * 1e3
            box["logits"] = verify_forward(target_kv, tokens, draft)
            lanes["target"].end_ms = (time.perf_counter() - t0) * 1e3

        threads = self.options.threads
        if self.options.parallel:
            per_lane = threads // 2
            cores = usable_cores()[: 2 * per_lane]
            with intra_op_threads(per_lane):
                worker = threading.Thread(target=_pinned(draft_lane, cores[per_lane:]), name="pearl-draft",
                                          daemon=True)
                worker.start()
                try:
                    _pinned(target_lane, cores[:per_lane])()
                finally:
                    worker.join()  # never leave the drafter's thread running, even when the target failed
        else:
            with intra_op_threads(threads):
                target_lane()
                draft_lane()
        if "error" in box:
            raise box["error"]
        ahead = box["draft"]
        ahead.tokens = ahead.tokens[:ahead_ctx.gamma]
        info = {"mode": "post" if draft else "pre", "parallel": self.options.parallel, "base": self.inner.name,
                "draft_lane": lanes["draft"].as_list(), "target_lane": lanes["target"].as_list(),
                "pending": len(draft), "ahead": len(ahead.tokens), "threads": self.options.threads}
        return box["logits"], ahead, info

    def settle(self, tokens: list[int], ahead: Draft, n_checked: int, all_accepted: bool) -> None:
        """After the checks: keep e_2..e_γ pending when everything (e_1 included) was accepted, else drop them and
        roll the wrapped drafter back to the committed tokens."""
        if all_accepted and n_checked and len(ahead.tokens) > 1:
            self.pending = _part(ahead, slice(1, None), info=dict(ahead.info))
            # the wrapped drafter keeps what it drafted (the pending drafts are its next context): it observes the
            # sequence as after a full acceptance, which drops nothing from its cache
            self.inner.observe(tokens + self.pending.tokens, len(ahead.tokens))
        else:
            self.pending = Draft(tokens=[])
            self.inner.observe(tokens, 0)


def _part(draft: Draft, part: slice, info: dict) -> Draft:
    """The tokens ``part`` of a draft with their q rows."""
    q = draft.q_nV[part] if draft.q_nV is not None else None
    show = draft.q_show_nV[part] if draft.q_show_nV is not None else None
    return Draft(draft.tokens[part], q, show, info, draft.vocab_V)


def _parse_base_options(text) -> dict:
    if isinstance(text, dict):
        return text
    if not text or not str(text).strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise DraftScopeError(f"PEARL's base options must be a JSON object like {{\"exit_layer\": 6}}, got "
                              f"{text!r}") from None
    if not isinstance(value, dict):
        raise DraftScopeError(f"PEARL's base options must be a JSON object, got {text!r}")
    return value


_THREADS_LOCK = threading.Lock()


class intra_op_threads:
    """torch's intra-op pool at ``n`` threads for the section (each lane's thread computes with its own team)."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        _THREADS_LOCK.acquire()
        self.before = torch.get_num_threads()
        if self.before != self.n:
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if self.before != self.n:
            torch.set_num_threads(self.before)
        _THREADS_LOCK.release()
        return False


def usable_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no pinning
        return []


def _pinned(fn, cores: list[int]):
    """``fn`` run with its thread on ``cores`` (where the platform can pin), its affinity restored after."""
    def run():
        if not cores or not hasattr(os, "sched_setaffinity"):
            return fn()
        tid = threading.get_native_id()
        before = os.sched_getaffinity(tid)
        os.sched_setaffinity(tid, set(cores))
        try:
            return fn()
        finally:
            os.sched_setaffinity(tid, before)
    return run
