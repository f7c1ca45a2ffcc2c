"""Greedy verification: accept while the draft equals the target's argmax; at a mismatch emit the argmax.

On a tree: walk from the root into the child that equals the target's argmax, if any (SpecInfer / EAGLE's greedy
tree walk). Lossless with any children, so the output is token-identical to target-only greedy decoding."""

from __future__ import annotations

import torch

from core.specdec.verify.base import TreeVerifier, Verdict, walk_tree
from core.specdec.verify.multidraft import SiblingVerdict


class GreedyVerifier(TreeVerifier):
    name = "greedy"
    tree_children = ("topk", "iid", "without-replacement")

    def verify(self, draft, p_nV, q_nV, generator) -> Verdict:
        target_choice = p_nV.argmax(-1).tolist()  # (γ+1,)
        n = 0
        while n < len(draft) and draft[n] == target_choice[n]:
            n += 1
        verified = min(n + 1, len(draft))
        return Verdict(n_accepted=n, token=target_choice[n], kind="bonus" if n == len(draft) else "resampled",
                       accept_probs=[None] * verified, uniforms=[None] * verified)

    def verify_tree(self, tree, p_rows: torch.Tensor, q_rows, generator):
        def step(p_V, node, kids, kid_tokens):
            best = int(p_V.argmax())
            hit = kid_tokens.index(best) if best in kid_tokens else None
            tried = len(kid_tokens) if hit is None else hit + 1  # siblings compared before the match, and it
            return SiblingVerdict(best, hit, [None] * tried, [None] * tried)
        return walk_tree(tree.parents, tree.tokens, p_rows, step)
