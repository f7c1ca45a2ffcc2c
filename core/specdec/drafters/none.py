"""No drafter: plain target decoding, one token per target call (the baseline every speedup is measured against)."""

from core.specdec.drafters.base import Draft, DraftContext, Drafter


class NoDrafter(Drafter):
    name = "none"

    def propose(self, ctx: DraftContext) -> Draft:
        return Draft(tokens=[])
