"""Turning logits into the distributions that drafting and verification use.

The same warper (temperature, top-k, top-p) is applied to the target's p and the drafter's q, so the acceptance
ratio min(1, p/q) compares like with like. Temperature 0 means greedy: the warped distribution is one-hot on argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.errors import DraftScopeError


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0  # 0 = greedy (one-hot on argmax)
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off

    def __post_init__(self):
        if not 0.0 <= self.temperature <= 10.0:
            raise DraftScopeError(f"temperature must be in [0, 10], got {self.temperature}")
        if self.top_k < 0:
            raise DraftScopeError(f"top-k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise DraftScopeError(f"top-p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def warp(logits_nV: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Logits (n, V) → probabilities (n, V) in float32 after temperature, top-k and top-p."""
    logits_nV = logits_nV.float()
    if cfg.greedy:
        out = torch.zeros_like(logits_nV)
        out.scatter_(-1, logits_nV.argmax(-1, keepdim=True), 1.0)
        return out
    logits_nV = logits_nV / cfg.temperature
    if cfg.top_k and cfg.top_k < logits_nV.shape[-1]:
        kth = torch.topk(logits_nV, cfg.top_k, dim=-1).values[..., -1:]
        logits_nV = logits_nV.masked_fill(logits_nV < kth, float("-inf"))
    probs_nV = torch.softmax(logits_nV, dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, order = torch.sort(probs_nV, dim=-1, descending=True)
        mass_before = sorted_p.cumsum(-1) - sorted_p  # mass of strictly more likely tokens
        drop_sorted = mass_before >= cfg.top_p  # the smallest prefix reaching top_p is kept (at least one token)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs_nV = probs_nV.masked_fill(drop, 0.0)
        probs_nV = probs_nV / probs_nV.sum(-1, keepdim=True)
    return probs_nV


def display_probs(logits_nV: torch.Tensor, warped_nV: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """What the records show as p or q: the model's own softmax when greedy (a one-hot says nothing), else the warped
    distribution that the decision used."""
    return torch.softmax(logits_nV.float(), dim=-1) if cfg.greedy else warped_nV


def sample(probs_V: torch.Tensor, generator: torch.Generator | None) -> int:
    """One draw from a probability vector (V,)."""
    return int(torch.multinomial(probs_V, 1, generator=generator).item())
