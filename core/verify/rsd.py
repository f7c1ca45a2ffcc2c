"""RRS without replacement (RSD, "Recursive Speculative Decoding"): siblings are distinct draws from q.

Sibling j was drawn from q restricted to the tokens not drawn before it, renormalised; that q_j enters both the
acceptance ratio min(1, r_j(x_j)/q_j(x_j)) and the residual r_{j+1} = norm(max(0, r_j − q_j)). Lossless when the
children were drawn without replacement. On a chain it is the standard sampling rule."""

from __future__ import annotations

from core.verify.base import walk_tree
from core.verify.multidraft import rsd_step
from core.verify.sampling import SamplingVerifier


class RSDVerifier(SamplingVerifier):
    name = "rsd"
    tree_children = ("without-replacement",)

    def verify_tree(self, tree, p_rows, q_rows, generator):
        def step(p_V, node, kids, kid_tokens):
            return rsd_step(p_V, kid_tokens, q_rows[node] if kids else p_V, generator)
        return walk_tree(tree.parents, tree.tokens, p_rows, step)
