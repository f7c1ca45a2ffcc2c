"""Operations on a transformers ``DynamicCache`` (layers with ``keys`` / ``values`` of shape (B, H_kv, T, d)):
keeping some positions, the state of sliding-window layers, a view that hands attention every key those layers hold,
and counting bytes.

A sliding-window layer (Gemma 3) holds only the sequence's last positions: ``keys.shape[-2]`` of its
``cumulative_length``. After a crop that is the last window − 1 (fewer while the sequence is shorter); while it
records its past (``activate_past_recording``) every forward until the next crop adds to it.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache


def keep_positions(cache, index: list[int] | torch.Tensor) -> None:
    """Keep only the sequence positions ``index`` (the same for every layer and head), in that order. A
    sliding-window layer keeps those of them it holds and counts ``len(index)`` positions from then on, so there
    ``index`` must be ascending: what it then holds is again the sequence's tail."""
    for layer in cache.layers:
        if getattr(layer, "keys", None) is None:
            continue
        idx = torch.as_tensor(index, dtype=torch.long, device=layer.keys.device)
        if getattr(layer, "is_sliding", False):
            first = layer.cumulative_length - layer.keys.shape[-2]  # the first position it holds
            idx = idx[idx >= first] - first
            layer.cumulative_length = len(index)
        layer.keys = layer.keys.index_select(-2, idx)
        layer.values = layer.values.index_select(-2, idx)


def sliding_state(cache) -> tuple[int, int] | None:
    """(window, positions held) of a cache's sliding-window layers, which all hold the same tail of the sequence;
    None when it has none."""
    for layer in cache.layers:
        if getattr(layer, "is_sliding", False):
            keys = getattr(layer, "keys", None)
            return layer.sliding_window, 0 if keys is None else int(keys.shape[-2])
    return None


class WholeStatesView(Cache):
    """The layers of a cache as a forward with its own per-layer-type mask sees them: every layer, sliding-window
    ones included, hands attention all the keys it holds after the update (a sliding layer's recorded past: window
    − 1 positions and whatever was fed since the last crop), where a plain ``DynamicCache`` hands a sliding layer's
    attention only its last window − 1 + n. The mask must window them (``masks.layer_type_masks``). Updates go to
    the cache's own layers."""

    def __init__(self, cache):
        if any(getattr(layer, "is_sliding", False) and not layer.record_past for layer in cache.layers):
            raise ValueError("the sliding-window layers must record their past (activate_past_recording)")
        super().__init__(layers=cache.layers)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args,
               **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.layers[layer_idx]
        layer.update(key_states, value_states, *args, **kwargs)
        return layer.keys, layer.values


def trim_windows(cache) -> None:
    """Restrict every sliding-window layer that records its past back to its window (the last window − 1 positions
    it saw), as ``CachedLM.rollback`` does after every round. From then on a crop may remove only positions fed after
    this call: those are the only ones such a layer can give back."""
    for layer in cache.layers:
        if getattr(layer, "is_sliding", False) and getattr(layer, "record_past", False) and layer.is_initialized:
            layer.crop(0)


def keep_per_head(cache, keep_LHk: torch.Tensor) -> None:
    """Keep, in every layer and per KV head, only the positions ``keep_LHk[layer, head]`` (L, H_kv, k)."""
    for layer, keep_Hk in zip(cache.layers, keep_LHk):
        idx = keep_Hk.to(layer.keys.device)[None, :, :, None]  # (1, H, k, 1)
        layer.keys = layer.keys.gather(2, idx.expand(-1, -1, -1, layer.keys.shape[-1])).contiguous()
        layer.values = layer.values.gather(2, idx.expand(-1, -1, -1, layer.values.shape[-1])).contiguous()


def tensor_bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def cache_bytes(cache) -> int:
    """Bytes of the keys and values a cache holds."""
    return sum(tensor_bytes(layer.keys, layer.values) for layer in cache.layers
               if getattr(layer, "keys", None) is not None)
