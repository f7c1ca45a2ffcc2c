"""Running a decoder a slice of layers at a time, on one shared KV cache.

Self-drafters that reuse the target's own shallow layers (Kangaroo) run layers [0, ℓ) while drafting and layers
[ℓ, L) at verification, on the same ``DynamicCache``: the slices may hold different numbers of tokens in between,
so every call builds its masks from the cache slots of the layers it runs.
Supported: models whose inner module has ``embed_tokens``, ``layers``, ``norm`` and ``rotary_emb`` (Llama, SmolLM2,
Qwen2-style, Gemma 3); other models raise DraftScopeError.

Sliding-window layers (Gemma 3) see only the keys within their window, and their cache slot holds only the
sequence's tail (``cumulative_length`` positions seen, the last of them kept), so every layer gets the mask of its
own kind over the keys its own slot hands attention; Gemma 3 also rotates local and global layers with different
RoPE bases, so every layer gets the rotary embedding of its kind.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from core.errors import DraftScopeError
from core.runtime.devices import input_device, module_device, to_device
from core.runtime.masks import additive, causal_allowed, within_window
from core.runtime.models import has_sliding_layers

SHALLOW_EXIT = 0.2  # a fifth of the depth: early exit's default ℓ (6 of SmolLM2's 30, as HF's assistant_early_exit)
DEEP_EXIT = 0.8  # four fifths: an untrained exit deep enough to be accepted sometimes (trees, EasySpec)
FULL, SLIDING = "full_attention", "sliding_attention"  # the layer kinds (transformers' layer_types)


def exit_layer_at(n_layers: int, fraction: float) -> int:
    """The exit layer at ``fraction`` of the depth, rounded down and kept in 1..n_layers − 1 (the one rule every
    "a fifth" / "four fifths of the depth" default uses: 6 and 24 of SmolLM2's 30 layers)."""
    return max(1, min(n_layers - 1, math.floor(n_layers * fraction + 1e-9)))


def check_layer_slicing(model: nn.Module, sliding_ok: bool = False) -> None:
    """Raise DraftScopeError unless ``model`` is a decoder this module can slice. Models with sliding-window layers
    pass only for callers that handle them (``sliding_ok``: they run their layers through ``run_layers`` or keep
    their sliding caches consistent themselves)."""
    inner = getattr(model, "model", None)
    if inner is None or not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        raise DraftScopeError(f"{type(model).__name__} is not a llama-style decoder; layer slicing needs one")
    if has_sliding_layers(model) and not sliding_ok:
        raise DraftScopeError("layer slicing is not available for models with sliding-window layers (Gemma 3)")


# ------------------------------------------------------------------------------------------------ layer kinds
def layer_kind(layer: nn.Module) -> str:
    """FULL or SLIDING: the attention of a decoder layer (or of an attention module)."""
    attn = getattr(layer, "self_attn", layer)
    kind = getattr(attn, "layer_type", None)
    if kind in (FULL, SLIDING):
        return kind
    return SLIDING if getattr(attn, "is_sliding", False) else FULL


def layer_window(layer: nn.Module) -> int:
    """The sliding window (positions) of a sliding-window layer."""
    attn = getattr(layer, "self_attn", layer)
    return int(getattr(attn, "sliding_window", None) or attn.config.sliding_window)


def rotary(model: nn.Module, hidden: torch.Tensor, positions: torch.Tensor, kind: str = FULL):
    """The rotary embedding (cos, sin) at ``positions`` (1, n) for layers of ``kind``: Gemma 3 rotates its
    sliding-window layers with a local base and its full ones with a global base; other models have one."""
    emb = model.model.rotary_emb
    if hasattr(emb, "layer_types"):
        return emb(hidden, positions, kind)
    return emb(hidden, position_ids=positions)


# ------------------------------------------------------------------------------------------------ cache slots
def cache_slot(cache, index: int) -> tuple[int, int]:
    """(positions seen, keys its update hands attention besides the new ones) of cache layer ``index``; (0, 0) when
    there is none. A full layer hands every position it saw; a sliding-window layer only the last window − 1 it
    holds (transformers' ``DynamicSlidingWindowLayer.update``, recording its past or not)."""
    if cache is None or len(cache.layers) <= index or not cache.layers[index].is_initialized:
        return 0, 0
    layer = cache.layers[index]
    held = int(layer.keys.shape[-2])
    if getattr(layer, "is_sliding", False):
        return int(layer.cumulative_length), min(held, layer.sliding_window - 1)
    return held, held


def layer_cache_len(cache, layer: int) -> int:
    """Positions cache layer ``layer`` has seen (a sliding-window layer holds only the last of them)."""
    return cache_slot(cache, layer)[0]


def slot_mask(kind: str, window: int | None, seen: int, visible: int, positions_n: torch.Tensor,
              dtype: torch.dtype) -> torch.Tensor:
    """(1, 1, n, visible + n) additive mask of n new tokens at ``positions_n`` (in feeding order) for a layer of
    ``kind`` whose cache slot saw ``seen`` positions and hands attention the last ``visible`` of them: causal, and
    for a sliding-window layer only keys within ``window`` of the query. Raises ValueError when the slot no longer
    holds a key the layer must see."""
    n = positions_n.shape[0]
    allowed_nm = causal_allowed(n, visible, positions_n.device)
    if kind == SLIDING:
        first = seen - visible  # the first position the slot hands over
        key_positions_m = torch.cat([torch.arange(first, seen, device=positions_n.device), positions_n])
        allowed_nm &= within_window(positions_n, key_positions_m, window)
        if first > max(0, int(positions_n.min()) - window + 1):
            raise ValueError(f"a sliding-window layer's cache holds positions from {first}: the window of position "
                             f"{int(positions_n.min())} reaches before them")
    elif visible != seen:
        raise ValueError("a full-attention layer's cache slot slides: it no longer holds every key")
    return additive(allowed_nm, dtype)[None, None]


def layer_inputs(model: nn.Module, layers, hidden: torch.Tensor, cache, positions: torch.Tensor,
                 mask: torch.Tensor | dict | None = None) -> list[tuple[torch.Tensor, tuple]]:
    """(attention mask, rotary embedding) for each of ``layers`` on a forward of ``hidden`` (1, n, d) at
    ``positions`` (1, n), read from the cache slots before any of them is updated. ``mask`` (one additive mask, or
    a dict by layer kind) replaces the masks built from the slots."""
    rotaries, masks, out = {}, {}, []
    for i, layer in enumerate(layers):
        kind = layer_kind(layer)
        if kind not in rotaries:
            rotaries[kind] = rotary(model, hidden, positions, kind)
        given = mask.get(kind) if isinstance(mask, dict) else mask
        if given is None:
            seen, visible = cache_slot(cache, getattr(getattr(layer, "self_attn", None), "layer_idx", i))
            window = layer_window(layer) if kind == SLIDING else None
            key = (kind, window, seen, visible)
            if key not in masks:
                masks[key] = slot_mask(kind, window, seen, visible, positions[0], hidden.dtype)
            given = masks[key]
        out.append((given, rotaries[kind]))
    return out


# ------------------------------------------------------------------------------------------------ forwards
def embed(model: nn.Module, ids: list[int]) -> torch.Tensor:
    """Input embeddings (1, n, d), scaled where the model scales them (Gemma's ``embed_tokens`` does it itself)."""
    return model.model.embed_tokens(torch.tensor([ids], dtype=torch.long, device=input_device(model)))


def run_layers(model: nn.Module, hidden: torch.Tensor, start: int, stop: int, cache, position0: int,
               layers=None, mask: torch.Tensor | dict | None = None,
               positions: torch.Tensor | None = None) -> torch.Tensor:
    """Layers [start, stop) on ``hidden`` (1, n, d) at positions position0.., appending to ``cache``'s layers
    (``cache`` None: no cache, a plain causal pass). ``layers`` replaces the model's own layer list (tuned copies of
    them, as S2D's exits use); the model still gives the rotary embedding. ``mask`` (an additive (1, 1, n, cache + n)
    mask, or a dict of them by layer kind) and ``positions`` (1, n) replace the masks built from the cache slots and
    the consecutive positions (Falcon's block mask). Layers on other devices (a device map) get their inputs moved
    there; the output is on the last layer's device."""
    n = hidden.shape[1]
    if positions is None:
        positions = torch.arange(position0, position0 + n, device=hidden.device)[None]
    chosen = list((model.model.layers if layers is None else layers)[start:stop])
    for layer, (layer_mask, layer_rotary) in zip(chosen, layer_inputs(model, chosen, hidden, cache, positions, mask)):
        device = module_device(layer)
        hidden, layer_mask, layer_rotary, positions = to_device((hidden, layer_mask, layer_rotary, positions), device)
        hidden = layer(hidden, attention_mask=layer_mask, position_ids=positions, past_key_values=cache, use_cache=True,
                       position_embeddings=layer_rotary)
    return hidden


def head(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Final norm and LM head (with the model's final logit soft-capping, Gemma's): (1, n, d) → (n, V) float32, on
    the head's device."""
    hidden = model.model.norm(hidden.to(module_device(model.model.norm)))
    logits = model.lm_head(hidden.to(module_device(model.lm_head)))
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits[0].float()


@contextmanager
def capture_final_hidden(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the output of the model's final norm (its last hidden state, (1, n, d): what the LM head reads) during
    the block: the yielded list gets one tensor per call of the norm. Draft heads read it from verification."""
    seen: list[torch.Tensor] = []
    handle = model.model.norm.register_forward_hook(lambda _module, _args, out: seen.append(out.detach()))
    try:
        yield seen
    finally:
        handle.remove()
