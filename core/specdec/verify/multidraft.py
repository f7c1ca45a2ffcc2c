"""Verification of several sibling drafts at one position (the step a tree verifier repeats at every node).

``rrs_step``: recursive rejection sampling over drafts drawn i.i.d. from q; ``rsd_step``: the same without replacement
(draft j comes from q restricted to the tokens not drawn yet, renormalised, and that q_j enters ratio and residual).
Both are lossless: the emitted token follows p exactly, whatever q is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from core.specdec.sampling import sample
from core.specdec.verify.sampling import residual


@dataclass
class SiblingVerdict:
    token: int  # the token emitted at this position
    accepted_index: int | None  # which sibling was accepted (None: all rejected, token drawn from the last residual)
    accept_probs: list[float] = field(default_factory=list)  # min(1, r_j(x_j)/q_j(x_j)) per sibling tried
    uniforms: list[float] = field(default_factory=list)
    residual_V: torch.Tensor | None = None  # the last residual, drawn from when every sibling was rejected


def without_replacement_qs(q_V: torch.Tensor, drafts: list[int]) -> list[torch.Tensor]:
    """q_j for each sibling: q with the earlier siblings' tokens removed, renormalised."""
    qs, q_j = [], q_V.clone()
    for x in drafts:
        qs.append(q_j / q_j.sum())
        q_j = q_j.clone()
        q_j[x] = 0.0
    return qs


def _recursive_step(p_V: torch.Tensor, drafts: list[int], qs: list[torch.Tensor],
                    generator: torch.Generator | None) -> SiblingVerdict:
    # Accept x_j with probability min(1, r_j(x_j)/q_j(x_j)), r_1 = p;
    # a rejection sets r_{j+1} = norm(max(0, r_j − q_j)).
    # Each step is one standard speculative-sampling step against the current residual, so the output follows p.
    r_V, probs, us = p_V, [], []
    for j, (x, q_j) in enumerate(zip(drafts, qs)):
        q_x = float(q_j[x])
        a = min(1.0, float(r_V[x]) / q_x) if q_x > 0 else 0.0
        u = float(torch.rand((), generator=generator))
        probs.append(a)
        us.append(u)
        if u < a:
            return SiblingVerdict(x, j, probs, us)
        r_V = residual(r_V, q_j)
    return SiblingVerdict(sample(r_V, generator), None, probs, us, r_V)


def rrs_step(p_V: torch.Tensor, drafts: list[int], q_V: torch.Tensor,
             generator: torch.Generator | None = None) -> SiblingVerdict:
    """Siblings drawn i.i.d. from q_V."""
    return _recursive_step(p_V, drafts, [q_V] * len(drafts), generator)


def rsd_step(p_V: torch.Tensor, drafts: list[int], q_V: torch.Tensor,
             generator: torch.Generator | None = None) -> SiblingVerdict:
    """Siblings drawn without replacement from q_V."""
    return _recursive_step(p_V, drafts, without_replacement_qs(q_V, drafts), generator)
