"""No drafter: plain target decoding, one token per target call (the baseline every speedup is measured against)."""

from core.drafters.base import Draft, DraftContext, Drafter


class NoDrafter(Drafter):
    name = "none"

    def __init__(self, target):
        self.target = target

    def propose(self, ctx: DraftContext) -> Draft:
        return Draft(tokens=[])
