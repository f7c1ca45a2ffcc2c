"""Why a drafter pays or not on this machine: measured costs and the break-even acceptance length.

A chain round with γ drafts costs γ·t_d + t_v(γ + 1): γ drafter steps and one target forward of γ + 1 tokens. Plain
decoding costs t_v(1) per token. The round commits τ tokens on average, so speculative decoding pays exactly when
τ > τ* = (γ·t_d + t_v(γ + 1)) / t_v(1), and its speedup is τ / τ*. Both times are measured here, on a cached prefix
of ``context`` tokens (``measure``); the drafter step is timed through the drafter's own ``propose``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

from core.runtime.cached_lm import CachedLM
from core.runtime.records import Record
from core.runtime.timing import synchronize
from core.specdec.drafters.base import DraftContext, SharesTargetCache
from core.specdec.sampling import SamplingConfig


@dataclass
class CostModel(Record):
    target: str
    drafter: str
    context: int  # prefix length the costs were measured on
    draft_ms: float  # one drafter step (ms per drafted token)
    verify_ms: list[float] = field(default_factory=list)  # [k - 1]: target forward of k new tokens (ms)
    cost: float | None = None  # the drafter's parameter bytes per token relative to the target's (MBSU's c)

    def round_ms(self, gamma: int) -> float:
        return gamma * self.draft_ms + self.verify_ms[gamma]

    def break_even_tau(self, gamma: int) -> float:
        """The mean tokens per round above which a chain of γ drafts beats plain decoding."""
        return self.round_ms(gamma) / self.verify_ms[0]

    def speedup(self, tau: float, gamma: int) -> float:
        """Predicted speedup over plain decoding for a measured τ."""
        return tau / self.break_even_tau(gamma)

    def table(self, gammas=(1, 2, 3, 4, 5, 6)) -> list[dict]:
        return [{"gamma": g, "round_ms": round(self.round_ms(g), 2), "break_even_tau": round(self.break_even_tau(g), 3)}
                for g in gammas if g < len(self.verify_ms)]


def _median_ms(fn, device, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        synchronize(device)
        t = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times[1:])


@torch.inference_mode()
def verify_ms(target, context: int = 200, sizes=range(1, 8), repeats: int = 5) -> list[float]:
    """Median ms of one target forward of k new tokens on a cached ``context``-token prefix, for each k in
    ``sizes`` (1, 2, … for ``CostModel``)."""
    gen = torch.Generator().manual_seed(0)
    ids = [int(i) for i in torch.randint(100, min(1000, target.vocab_size), (context + max(sizes),), generator=gen)]
    kv = CachedLM(target.model)
    kv.forward(ids[:context])
    out = []
    for k in sizes:
        def step(k=k):
            kv.forward(ids[context:context + k])
            kv.rollback(context)
        out.append(round(_median_ms(step, target.device, repeats), 3))
    return out


@torch.inference_mode()
def drafter_step_ms(target, drafter, context: int = 200, gamma: int = 4, repeats: int = 5) -> float:
    """Median ms per drafted token of ``drafter.propose`` for γ tokens after a ``context``-token prefix (the drafter
    rolls back to the prefix each time, as after a rejection). Drafters that draft in the target's cache get it."""
    gen = torch.Generator().manual_seed(0)
    ids = [int(i) for i in torch.randint(100, min(1000, target.vocab_size), (context,), generator=gen)]
    shares = isinstance(drafter, SharesTargetCache)  # it drafts into the target's cache: a fresh one per call
    target_kv = CachedLM(target.model)
    target_kv.forward(ids[:-1])
    drafter.prefill(ids)
    times, drafted = [], 1
    for _ in range(repeats + 1):
        if shares:
            target_kv.reset()
            target_kv.forward(ids[:-1])
        ctx = DraftContext(ids, gamma, SamplingConfig(), torch.Generator().manual_seed(0), target_kv)
        synchronize(target.device)
        t = time.perf_counter()
        draft = drafter.propose(ctx)
        synchronize(target.device)
        times.append((time.perf_counter() - t) * 1e3)
        drafted = max(1, len(draft.tokens))
        if shares:
            drafter.prefill(ids)
        else:
            drafter.observe(ids, 0)
    return round(statistics.median(times[1:]) / drafted, 3)


def measure(target, drafter, context: int = 200, gamma: int = 4, max_k: int = 7, repeats: int = 5) -> CostModel:
    """The measured cost model of ``drafter`` for ``target`` on this machine."""
    draft = drafter_step_ms(target, drafter, context, gamma, repeats) if drafter.name != "none" else 0.0
    return CostModel(target.name, drafter.name, context, draft, verify_ms(target, context, range(1, max_k + 1),
                                                                          repeats), drafter.cost)
