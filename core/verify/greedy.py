"""Greedy verification: accept while the draft equals the target's argmax; at a mismatch emit the argmax."""

from __future__ import annotations

import torch

from core.verify.base import Verdict


class GreedyVerifier:
    name = "greedy"

    def verify(self, draft, p_nV, q_nV, generator) -> Verdict:
        target_choice = p_nV.argmax(-1).tolist()  # (γ+1,)
        n = 0
        while n < len(draft) and draft[n] == target_choice[n]:
            n += 1
        verified = min(n + 1, len(draft))
        return Verdict(n_accepted=n, token=target_choice[n], kind="bonus" if n == len(draft) else "resampled",
                       accept_probs=[None] * verified, uniforms=[None] * verified)
