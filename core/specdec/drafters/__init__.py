"""Drafter registry: one file per method; adding one is a new file plus one line here."""

from __future__ import annotations

from core import registry
from core.specdec.drafters.base import (
    BuildsTree,
    Draft,
    DraftContext,
    Drafter,
    LearnsFromTarget,
    Pipelined,
    ReadsTargetHidden,
    SharesTargetCache,
    TreeDrafting,
)

DRAFTERS: registry.Registry = registry.load(__name__, (
    "none:NoDrafter",
    "ngram:NgramDrafter",
    "model:ModelDrafter",
    "early_exit:EarlyExitDrafter",
    "kangaroo:KangarooDrafter",
    "easyspec:EasySpecDrafter",
    "sorted:SortedDrafter",
    "fastdraft:FastDraftDrafter",
    "medusa:MedusaDrafter",
    "hydra:HydraDrafter",
    "falcon:FalconDrafter",
    "aded:ADEDDrafter",
    "pearl:PearlDrafter",
    "omnidraft:OmniDraftDrafter",
    "longspec:LongSpecDrafter",
), "drafter")

drafter_class = DRAFTERS.lookup  # name → class (an unknown name is a DraftScopeError listing the drafters)
drafter_options = DRAFTERS.options  # (name, mapping) → that drafter's Options


def build_drafter(name: str, target, options=None, allow_local: bool = False) -> Drafter:
    """Instantiate a registered drafter with its options (an ``Options`` instance or a mapping of its fields)."""
    return drafter_class(name)(target, drafter_options(name, options), allow_local=allow_local)


__all__ = ["DRAFTERS", "BuildsTree", "Draft", "DraftContext", "Drafter", "LearnsFromTarget", "Pipelined",
           "ReadsTargetHidden", "SharesTargetCache", "TreeDrafting", "build_drafter", "drafter_class",
           "drafter_options"]
