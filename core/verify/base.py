"""The verifier protocol: draft tokens plus p and q in, a verdict out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass
class Verdict:
    n_accepted: int  # leading drafted tokens accepted
    token: int  # the token the target adds: resampled at the first rejection, or the bonus after full acceptance
    kind: str  # "resampled" | "bonus"
    accept_probs: list[float | None] = field(default_factory=list)  # per verified position (sampling rule only)
    uniforms: list[float | None] = field(default_factory=list)  # the U compared with it
    residual_V: torch.Tensor | None = None  # norm(max(0, p - q)) at the rejection (sampling rule only)

    @property
    def n_verified(self) -> int:
        """Drafted positions the target looked at: the accepted ones plus the rejected one, if any."""
        return len(self.accept_probs)


class Verifier(Protocol):
    name: str

    def verify(self, draft: list[int], p_nV: torch.Tensor, q_nV: torch.Tensor | None,
               generator: torch.Generator) -> Verdict:
        """draft: γ token ids; p_nV: (γ+1, V) target distributions at each drafted position and the bonus position;
        q_nV: (γ, V) the drafter's distributions, or None for a drafter without probabilities (one-hot q)."""
        ...
