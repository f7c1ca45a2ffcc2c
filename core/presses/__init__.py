"""KV presses and prompt compression: one file per method, a registry, and ``core.presses.run`` to run them."""

from __future__ import annotations

from core.errors import DraftScopeError
from core.presses.h2o import H2OPress
from core.presses.snapkv import SnapKVPress
from core.presses.speckv import SpecKVPress
from core.presses.specpc import SpecPCPress
from core.presses.streamingllm import StreamingLLMPress
from core.presses.tova import TOVAPress

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
