"""Drafter registry: one file per method; adding one is a new file plus one line here."""

from __future__ import annotations

import inspect

from core.drafters.base import Draft, DraftContext, Drafter
from core.drafters.early_exit import EarlyExitDrafter
from core.drafters.easyspec import EasySpecDrafter
from core.drafters.kangaroo import KangarooDrafter
from core.drafters.model import ModelDrafter
from core.drafters.ngram import NgramDrafter
from core.drafters.none import NoDrafter
from core.drafters.sorted import SortedDrafter
from core.errors import DraftScopeError

DRAFTERS: dict[str, type[Drafter]] = {
    "none": NoDrafter,
    "ngram": NgramDrafter,
    "model": ModelDrafter,
    "early-exit": EarlyExitDrafter,
    "kangaroo": KangarooDrafter,
    "easyspec": EasySpecDrafter,
    "sorted": SortedDrafter,
}


def build_drafter(name: str, target, **options) -> Drafter:
    """Instantiate a registered drafter, passing only the options its constructor takes (None means default)."""
    if name not in DRAFTERS:
        raise DraftScopeError(f"unknown drafter '{name}'; choose one of {', '.join(DRAFTERS)}")
    cls = DRAFTERS[name]
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in options.items() if k in accepted and v is not None}
    return cls(target, **kwargs)


__all__ = ["DRAFTERS", "Draft", "DraftContext", "Drafter", "build_drafter"]
