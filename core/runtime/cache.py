"""Operations on a transformers ``DynamicCache`` (layers with ``keys`` / ``values`` of shape (B, H_kv, T, d)):
keeping some positions, and counting bytes."""

from __future__ import annotations

import torch


def keep_positions(cache, index: list[int] | torch.Tensor) -> None:
    """Keep only the positions ``index`` (the same for every layer and head), in that order."""
    for layer in cache.layers:
        idx = torch.as_tensor(index, dtype=torch.long, device=layer.keys.device)
        layer.keys = layer.keys.index_select(-2, idx)
        layer.values = layer.values.index_select(-2, idx)


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
