"""Attention masks: which (query, key) pairs may attend, as a bool matrix, and its additive float form.

Transformers models take a 4-D additive mask (batch, 1, queries, keys): 0 where attention is allowed, the dtype's
minimum elsewhere (not -inf, so a fully masked row stays finite). Models with sliding-window layers (Gemma 3) take a
dict of such masks keyed by layer type instead, since those layers see fewer keys: ``layer_type_masks``.
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


def within_window(positions_n: torch.Tensor, key_positions_m: torch.Tensor, window: int) -> torch.Tensor:
    """(n, m) bool: key j lies in query i's sliding window, i.e. at a position above the query's minus ``window``
    (transformers' ``sliding_window_overlay``: the query and the window − 1 positions before it). Causality, and
    which keys a query may see at all, are the caller's mask."""
    return key_positions_m[None, :] > positions_n[:, None] - window


def layer_type_masks(allowed_nm: torch.Tensor, positions_n: torch.Tensor, key_positions_m: torch.Tensor, window: int,
                     sliding_keys: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The ``attention_mask`` dict of a model with sliding-window layers: additive 4-D masks by layer type.

    ``allowed_nm`` says which of the m keys (at ``key_positions_m``) each query (at ``positions_n``) may see: that
    is the full-attention layers' mask. The sliding-window layers see only the last ``sliding_keys`` of those keys
    (what they hold plus the new ones), and of them only the ones within ``window`` of the query. Raises ValueError
    when a query's window reaches a key those layers no longer hold."""
    sliding_nm = allowed_nm & within_window(positions_n, key_positions_m, window)
    dropped = allowed_nm.shape[1] - sliding_keys
    if dropped < 0 or sliding_nm[:, :dropped].any():
        raise ValueError(f"the sliding-window layers hold {sliding_keys} of {allowed_nm.shape[1]} keys: a query's "
                         "window reaches beyond them")
    return {"full_attention": additive(allowed_nm, dtype)[None, None],
            "sliding_attention": additive(sliding_nm[:, dropped:], dtype)[None, None]}
