"""Recursive rejection sampling (RRS) over sibling drafts drawn i.i.d. from q (SpecTr / SpecInfer's multi-draft rule).

At each visited node its children are tried in order: accept x_j with probability min(1, r_j(x_j)/q(x_j)), r_1 = p;
after a rejection r_{j+1} = norm(max(0, r_j − q)). If every child is rejected the token is drawn from the last
residual. Lossless when the children are i.i.d. draws from q. On a chain it is the standard sampling rule."""

from __future__ import annotations

from core.specdec.verify.base import TreeVerifier, walk_tree
from core.specdec.verify.multidraft import rrs_step
from core.specdec.verify.sampling import SamplingVerifier


class RRSVerifier(SamplingVerifier, TreeVerifier):
    name = "rrs"
    tree_children = ("iid",)

    sibling_step = staticmethod(rrs_step)  # the rule at one node: (p, sibling tokens, q, generator) → verdict

    def verify_tree(self, tree, p_rows, q_rows, generator):
        def step(p_V, node, kids, kid_tokens):
            return self.sibling_step(p_V, kid_tokens, q_rows[node] if kids else p_V, generator)
        return walk_tree(tree.parents, tree.tokens, p_rows, step)
