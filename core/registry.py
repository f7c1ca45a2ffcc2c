"""Method registries: a package lists its methods one line each as ``"module:Class"``; ``load`` imports them into a
``Registry`` ({name: class}, keyed by each class's ``name``, in the listed order: the order menus and tables use)."""

from __future__ import annotations

import importlib

from core.errors import DraftScopeError
from core.options import resolve


class Registry(dict):
    """{name: class} of one kind of method ("drafter", "verifier", "KV method"), with lookups that explain a miss."""

    def __init__(self, kind: str, table: dict[str, type]):
        super().__init__(table)
        self.kind = kind

    def lookup(self, name: str) -> type:
        if name not in self:
            raise DraftScopeError(f"unknown {self.kind} '{name}'; choose one of {', '.join(self)}")
        return self[name]

    def options(self, name: str, values=None):
        """The method's ``Options`` from a mapping or instance (an unknown method or option name is an error)."""
        return resolve(self.lookup(name).Options, values, f"the '{name}' {self.kind}")


def load(package: str, entries: tuple[str, ...], kind: str = "method") -> Registry:
    """``load("core.specdec.drafters", ("ngram:NgramDrafter", ...), "drafter")`` → {"ngram": NgramDrafter, ...}."""
    table: dict[str, type] = {}
    for entry in entries:
        module, _, cls_name = entry.partition(":")
        cls = getattr(importlib.import_module(f"{package}.{module}"), cls_name)
        if cls.name in table:
            raise ValueError(f"{package}: two methods are named '{cls.name}'")
        table[cls.name] = cls
    return Registry(kind, table)
