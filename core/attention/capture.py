"""Attention scores without materialising every attention map: an attention function (``core.attention.registry``)
computes the usual SDPA output and, on the side, the softmax attention of the last ``window`` queries of each forward
over all keys (and optionally the column sums over every query, for H2O).

``capture_attention(model, window=32, column_sums=False)`` is a context manager that switches ``model`` to it and
yields a ``Captured`` whose ``window_probs[layer]`` is (Hq, w, m) and ``column_sums[layer]`` (Hq, m), float32 on the
CPU; the model's attention implementation is restored on exit.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass, field

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from core.attention.registry import attention_function

NAME = "draftscope_capture"
CHUNK = 256  # query rows per chunk when summing every query's attention (bounds memory at long prompts)


@dataclass
class Captured:
    window: int
    column_sums_wanted: bool = False
    window_probs: dict[int, torch.Tensor] = field(default_factory=dict)  # layer → (Hq, w, m)
    column_sums: dict[int, torch.Tensor] = field(default_factory=dict)  # layer → (Hq, m)


_STATE: contextvars.ContextVar[Captured | None] = contextvars.ContextVar(NAME, default=None)


def _probs(q_Hwd: torch.Tensor, k_Hmd: torch.Tensor, offset: int, scaling: float,
           sliding_window: int | None = None) -> torch.Tensor:
    """Causal softmax attention of queries at positions offset.. over keys 0..m−1 (only the last ``sliding_window``
    keys up to each query for sliding-window layers): (H, w, m) float32."""
    scores = (q_Hwd.float() @ k_Hmd.float().transpose(-1, -2)) * scaling
    w, m = scores.shape[-2:]
    keys = torch.arange(m, device=scores.device)[None, :]
    queries = (offset + torch.arange(w, device=scores.device))[:, None]
    allowed = keys <= queries
    if sliding_window:
        allowed &= keys > queries - sliding_window
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)


def _capture_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """sdpa's output; inside a ``capture_attention`` block also the layer's attention probabilities, stored."""
    out = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                 **kwargs)
    state = _STATE.get()
    if state is not None:
        groups = getattr(module, "num_key_value_groups", 1)
        k = key[0].repeat_interleave(groups, dim=0) if groups > 1 else key[0]  # (Hq, m, d)
        q = query[0]  # (Hq, n, d)
        n, m = q.shape[1], k.shape[1]
        scale = scaling if scaling is not None else 1.0 / math.sqrt(q.shape[-1])
        w = min(state.window, n)
        window = getattr(module, "sliding_window", None)
        state.window_probs[module.layer_idx] = _probs(q[:, n - w:], k, m - w, scale, window).cpu()
        if state.column_sums_wanted:
            total = torch.zeros(k.shape[0], m)
            for lo in range(0, n, CHUNK):
                hi = min(n, lo + CHUNK)
                total += _probs(q[:, lo:hi], k, m - n + lo, scale, window).sum(1).cpu()
            state.column_sums[module.layer_idx] = total
    return out


def capture_attention(model, window: int = 32, column_sums: bool = False) -> contextlib.AbstractContextManager:
    """Within the block, every forward of ``model`` records the attention of its last ``window`` queries per layer
    (a later forward overwrites an earlier one's layers); the block yields the ``Captured``."""
    return attention_function(model, NAME, _capture_attention, _STATE,
                              Captured(window=window, column_sums_wanted=column_sums))
