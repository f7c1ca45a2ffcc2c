"""One way to run a transformers model on an attention function of ours, for the length of a ``with`` block.

``attention_function(model, name, forward, state, value)`` registers ``forward`` under ``name`` with transformers'
``AttentionInterface`` and sdpa's mask builder under the same name with ``AttentionMaskInterface`` (without a mask
function transformers passes no mask to an unknown implementation, dropping padding), sets the context variable
``state`` to ``value``, and switches every config the model's modules use to ``name`` (layers copied into a view,
as S2D's tuned exits, carry their own config copy). On exit, exceptions included, the variable and every config are
restored. No model code is patched.

The attention function reads ``state.get()``: None outside a block of this context (another thread calling the same
model meanwhile), where it should behave as sdpa. Users: ``core.attention.capture`` and
``core.attention.draft_attention``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import TypeVar

from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

T = TypeVar("T")


def register(name: str, forward: Callable) -> None:
    """Register ``forward`` as attention implementation ``name``, with sdpa's mask builder. Idempotent."""
    AttentionInterface.register(name, forward)
    AttentionMaskInterface.register(name, sdpa_mask)


def _configs(model) -> dict[int, object]:
    """Every distinct config object the model's modules carry (the model's own included)."""
    found = (getattr(m, "config", None) for m in model.modules())
    return {id(c): c for c in found if c is not None and hasattr(c, "_attn_implementation")}


@contextlib.contextmanager
def attention_function(model, name: str, forward: Callable, state: contextvars.ContextVar, value: T) -> Iterator[T]:
    """Within the block, every attention call of ``model`` (a transformers PreTrainedModel) goes to ``forward`` and
    ``state.get()`` is ``value``; yields ``value``. Nesting over the same model is fine (each block restores what it
    found); several threads switching one model at once are not (the model object is switched for everyone)."""
    register(name, forward)
    configs = _configs(model)
    before = {key: c._attn_implementation for key, c in configs.items()}
    previous = model.config._attn_implementation
    token = state.set(value)
    try:
        model.set_attn_implementation(name)
        for c in configs.values():
            c._attn_implementation = name
        yield value
    finally:
        state.reset(token)
        model.set_attn_implementation(previous)
        for key, c in configs.items():
            c._attn_implementation = before[key]
