"""Drafter registry: one file per method; adding one is a new file plus one line here."""

from __future__ import annotations

from core import registry
from core.errors import DraftScopeError
from core.options import resolve
from core.specdec.drafters.base import Draft, DraftContext, Drafter, SharesTargetCache, TreeDrafting

DRAFTERS: dict[str, type[Drafter]] = registry.load(__name__, (
    "none:NoDrafter",
    "ngram:NgramDrafter",
    "model:ModelDrafter",
    "early_exit:EarlyExitDrafter",
    "kangaroo:KangarooDrafter",
    "easyspec:EasySpecDrafter",
    "sorted:SortedDrafter",
))


def drafter_class(name: str) -> type[Drafter]:
    if name not in DRAFTERS:
        raise DraftScopeError(f"unknown drafter '{name}'; choose one of {', '.join(DRAFTERS)}")
    return DRAFTERS[name]


def drafter_options(name: str, values=None):
    """The ``Options`` of drafter ``name`` from a mapping (unknown names are an error, None keeps a default)."""
    return resolve(drafter_class(name).Options, values, f"the '{name}' drafter")


def build_drafter(name: str, target, options=None, allow_local: bool = False) -> Drafter:
    """Instantiate a registered drafter with its options (an ``Options`` instance or a mapping of its fields)."""
    return drafter_class(name)(target, drafter_options(name, options), allow_local=allow_local)


__all__ = ["DRAFTERS", "Draft", "DraftContext", "Drafter", "SharesTargetCache", "TreeDrafting", "build_drafter",
           "drafter_class", "drafter_options"]
