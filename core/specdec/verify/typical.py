"""Medusa's *typical acceptance* (Cai et al., 2024) — NOT lossless: the output does not follow the target's
distribution at a temperature above 0 (it is faster because it accepts more).

A draft x is accepted where the target finds it plausible enough: p(x) > min(ε, δ · exp(−H(p))), H the entropy of p
(ε = posterior_threshold 0.09, δ = posterior_alpha 0.3, the defaults of Medusa's evaluation code). On a tree the
longest accepted path wins, ties broken by its likelihood Σ log p. The target's own token after the path is drawn
from p. At temperature 0 p is one-hot, so only the argmax passes: greedy verification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from core.errors import DraftScopeError
from core.options import Range
from core.specdec.sampling import sample
from core.specdec.verify.base import TreeVerdict, TreeVerifier, Verdict


def threshold(p_V: torch.Tensor, epsilon: float, delta: float) -> float:
    """min(ε, δ · exp(−H(p)))."""
    logp = torch.log(p_V.clamp_min(1e-30))
    entropy = float(-(p_V * logp).sum())
    return min(epsilon, delta * float(torch.exp(torch.tensor(-entropy))))


class TypicalVerifier(TreeVerifier):
    name = "typical"
    lossless = False
    tree_children = ("topk", "iid", "without-replacement")

    @dataclass
    class Options:
        epsilon: Annotated[float, Range(0.0, 1.0, 0.01)] = 0.09  # ε: the hard threshold on p(x) (posterior_threshold)
        delta: Annotated[float, Range(0.0, 1.0, 0.05)] = 0.3  # δ: the entropy-scaled threshold (posterior_alpha)

        def __post_init__(self):
            if not (0.0 <= self.epsilon <= 1.0 and 0.0 <= self.delta <= 1.0):
                raise DraftScopeError(f"typical acceptance: ε and δ must be in [0, 1], got {self.epsilon}, "
                                      f"{self.delta}")

    def _passes(self, p_V: torch.Tensor, x: int) -> bool:
        return float(p_V[x]) > threshold(p_V, self.options.epsilon, self.options.delta)

    def verify(self, draft, p_nV, q_nV, generator) -> Verdict:
        accepted = []
        for i, x in enumerate(draft):
            ok = self._passes(p_nV[i], x)
            accepted.append(1.0 if ok else 0.0)
            if not ok:
                return Verdict(i, sample(p_nV[i], generator), "resampled", accepted, [None] * len(accepted))
        return Verdict(len(draft), sample(p_nV[len(draft)], generator), "bonus", accepted, [None] * len(accepted))

    def verify_tree(self, tree, p_rows, q_rows, generator) -> TreeVerdict:
        tried, best, best_key = {}, [], (0, 0.0)
        score: dict[int, float] = {-1: 0.0}
        alive = {-1}
        for i, (x, parent) in enumerate(zip(tree.tokens, tree.parents)):
            if parent not in alive:
                continue
            p_V = p_rows[parent + 1]
            ok = self._passes(p_V, x)
            tried[i] = (1.0 if ok else 0.0, None)
            if ok:
                alive.add(i)
                score[i] = score[parent] + float(torch.log(p_V[x]))
                path = tree.path(i)
                key = (len(path), score[i])
                if key > best_key:
                    best, best_key = path, key
        end = best[-1] if best else -1
        has_kids = end in tree.parents
        token = sample(p_rows[end + 1], generator)
        return TreeVerdict(best, token, "resampled" if has_kids else "bonus", tried)
