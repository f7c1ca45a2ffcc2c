"""Standard speculative sampling (Leviathan et al.; Chen et al.): lossless with respect to p."""

from __future__ import annotations

import torch

from core.specdec.sampling import sample
from core.specdec.verify.base import Verdict, Verifier


def residual(p_V: torch.Tensor, q_V: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)): the distribution to resample from after a rejection."""
    r = (p_V - q_V).clamp_min(0.0)
    total = r.sum()
    return r / total if total > 0 else p_V  # total = 0 only if p == q, where no rejection can happen


class SamplingVerifier(Verifier):
    name = "sampling"

    def verify(self, draft, p_nV, q_nV, generator) -> Verdict:
        # Accept x ~ q with probability min(1, p(x)/q(x)); on rejection draw from norm(max(0, p - q)).
        # Then P(emit y) = min(p, q)(y) + (1 - Σ min(p, q)) · residual(y) = p(y): the output follows p exactly.
        accept_probs, uniforms = [], []
        for i, x in enumerate(draft):
            p_x = float(p_nV[i, x])
            q_x = float(q_nV[i, x]) if q_nV is not None else 1.0
            a = min(1.0, p_x / q_x) if q_x > 0 else 0.0
            u = float(torch.rand((), generator=generator))
            accept_probs.append(a)
            uniforms.append(u)
            if u >= a:
                q_V = q_nV[i] if q_nV is not None else torch.nn.functional.one_hot(
                    torch.tensor(x), p_nV.shape[-1]).to(p_nV.dtype)
                r_V = residual(p_nV[i], q_V)
                return Verdict(i, sample(r_V, generator), "resampled", accept_probs, uniforms, r_V)
        return Verdict(len(draft), sample(p_nV[len(draft)], generator), "bonus", accept_probs, uniforms)
