"""Attention masks: which (query, key) pairs may attend, as a bool matrix, and its additive float form.

Transformers models take a 4-D additive mask (batch, 1, queries, keys): 0 where attention is allowed, the dtype's
minimum elsewhere (not -inf, so a fully masked row stays finite).
"""

from __future__ import annotations

import torch


def causal_allowed(n_new: int, past: int, device=None) -> torch.Tensor:
    """(n_new, past + n_new) bool: new token i (at position past + i) sees the ``past`` cached keys and the new
    tokens up to itself."""
    return torch.ones(n_new, past + n_new, dtype=torch.bool, device=device).tril(diagonal=past)


def additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool mask → additive float mask of the same shape (0 allowed, the dtype's minimum elsewhere)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def causal_mask(n_new: int, past: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """(1, 1, n_new, past + n_new) additive causal mask over a cache of ``past`` keys."""
    return additive(causal_allowed(n_new, past, device), dtype)[None, None]
