"""Method registries: a package lists its methods one line each as ``"module:Class"``; ``load`` imports them into a
``{name: class}`` dict keyed by each class's ``name``, in the listed order (the order menus and tables use)."""

from __future__ import annotations

import importlib


def load(package: str, entries: tuple[str, ...]) -> dict[str, type]:
    """``load("core.specdec.drafters", ("ngram:NgramDrafter", ...))`` → {"ngram": NgramDrafter, ...}."""
    table: dict[str, type] = {}
    for entry in entries:
        module, _, cls_name = entry.partition(":")
        cls = getattr(importlib.import_module(f"{package}.{module}"), cls_name)
        if cls.name in table:
            raise ValueError(f"{package}: two methods are named '{cls.name}'")
        table[cls.name] = cls
    return table
