"""KV presses and prompt compression: one file per method, a registry, and ``core.kv.run`` to run them.

Adding a method is a new file (a ``ScorerPress`` with ``score``, or a ``TokenPress`` with ``select``: ``core.kv.base``)
plus one line here."""

from __future__ import annotations

from core import registry
from core.kv.base import KVPress, Press, PressContext, ScorerPress, TokenPress

PRESSES: registry.Registry = registry.load(__name__, (
    "snapkv:SnapKVPress",
    "streamingllm:StreamingLLMPress",
    "h2o:H2OPress",
    "tova:TOVAPress",
    "speckv:SpecKVPress",
    "specpc:SpecPCPress",
), "method")
DRAFT_GUIDED = tuple(name for name, cls in PRESSES.items() if cls.draft_guided)


press_class = PRESSES.lookup  # name → class (an unknown name is a DraftScopeError listing the methods)


def build_press(name: str, options=None) -> Press:
    """The press ``name`` with its options (a mapping of its fields, or a press instance; unknown names are an error,
    None keeps a default)."""
    return PRESSES.options(name, options)


__all__ = ["DRAFT_GUIDED", "PRESSES", "KVPress", "Press", "PressContext", "ScorerPress", "TokenPress", "build_press",
           "press_class"]
