"""KV presses and prompt compression: one file per method, a registry, and ``core.kv.run`` to run them."""

from __future__ import annotations

from core.errors import DraftScopeError
from core.kv.h2o import H2OPress
from core.kv.snapkv import SnapKVPress
from core.kv.speckv import SpecKVPress
from core.kv.specpc import SpecPCPress
from core.kv.streamingllm import StreamingLLMPress
from core.kv.tova import TOVAPress

PRESSES = {
    "snapkv": SnapKVPress,
    "streamingllm": StreamingLLMPress,
    "h2o": H2OPress,
    "tova": TOVAPress,
    "speckv": SpecKVPress,
    "specpc": SpecPCPress,
}
DRAFT_GUIDED = ("speckv", "specpc")


def build_press(name: str):
    if name not in PRESSES:
        raise DraftScopeError(f"unknown method '{name}'; choose from {', '.join(PRESSES)}")
    return PRESSES[name]()


__all__ = ["DRAFT_GUIDED", "PRESSES", "build_press"]
