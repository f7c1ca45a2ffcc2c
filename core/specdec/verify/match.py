"""Draw-and-match verification: at each position draw y ~ p and accept the draft equal to y (on a tree: descend into
the child equal to y), else emit y. It is speculative sampling with one-hot drafts — accept x with probability p(x),
else draw from p without x — so the output follows p exactly whatever the drafts are: the lossless rule for
deterministic children (a drafter's top-k, e.g. Medusa's or Hydra's static head trees) at a temperature above 0.
At temperature 0 y is the argmax, so it is greedy verification."""

from __future__ import annotations

import torch

from core.specdec.sampling import sample
from core.specdec.verify.base import TreeVerifier, Verdict, walk_tree
from core.specdec.verify.multidraft import SiblingVerdict


def without(p_V: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """p with ``tokens`` removed, renormalised: the law of the draw y given that it matched none of them."""
    r_V = p_V.clone()
    r_V[list(set(tokens))] = 0.0
    total = r_V.sum()
    return r_V / total if total > 0 else p_V


class MatchVerifier(TreeVerifier):
    name = "match"
    tree_children = ("topk", "iid", "without-replacement")

    def verify(self, draft, p_nV, q_nV, generator) -> Verdict:
        accept_probs, uniforms = [], []
        for i, x in enumerate(draft):
            y = sample(p_nV[i], generator)
            accept_probs.append(float(p_nV[i, x]))  # P(y = x): the acceptance probability of a one-hot draft
            uniforms.append(None)
            if y != x:
                return Verdict(i, y, "resampled", accept_probs, uniforms, without(p_nV[i], [x]))
        return Verdict(len(draft), sample(p_nV[len(draft)], generator), "bonus", accept_probs, uniforms)

    def verify_tree(self, tree, p_rows, q_rows, generator):
        def step(p_V, node, kids, kid_tokens):
            y = sample(p_V, generator)
            hit = kid_tokens.index(y) if y in kid_tokens else None
            tried = len(kid_tokens) if hit is None else hit + 1
            probs = [float(p_V[t]) for t in kid_tokens[:tried]]
            residual = without(p_V, kid_tokens) if hit is None and kids else None
            return SiblingVerdict(y, hit, probs, [None] * tried, residual)
        return walk_tree(tree.parents, tree.tokens, p_rows, step)
