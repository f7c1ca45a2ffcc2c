"""RRS without replacement (RSD, "Recursive Speculative Decoding"): siblings are distinct draws from q.

Sibling j was drawn from q restricted to the tokens not drawn before it, renormalised; that q_j enters both the
acceptance ratio min(1, r_j(x_j)/q_j(x_j)) and the residual r_{j+1} = norm(max(0, r_j − q_j)). Lossless when the
children were drawn without replacement. On a chain it is the standard sampling rule. The tree walk is RRS's, with
this rule at each node."""

from __future__ import annotations

from core.specdec.verify.multidraft import rsd_step
from core.specdec.verify.rrs import RRSVerifier


class RSDVerifier(RRSVerifier):
    name = "rsd"
    tree_children = ("without-replacement",)
    sibling_step = staticmethod(rsd_step)
