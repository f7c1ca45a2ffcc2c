"""Exact attention over two key sets computed apart, merged by log-sum-exp (LongSpec's hybrid tree attention).

Softmax attention over keys K = K_a ∪ K_b splits exactly: with s = q·k / √d (plus an additive mask) and, per query,
ℓ_a = log Σ_{k ∈ K_a} exp(s_k) and o_a = Σ_{k ∈ K_a} softmax_a(s)_k v_k (likewise for b),

    o = (e^{ℓ_a} o_a + e^{ℓ_b} o_b) / (e^{ℓ_a} + e^{ℓ_b}),    ℓ = log(e^{ℓ_a} + e^{ℓ_b}).

So a tree round can attend to the long cached prefix without any mask (every node sees all of it) and to the few
tree nodes with the small ancestor mask, and merge the two: no (nodes × prefix) mask is ever built. A query that sees
no key of one part has ℓ = −inf there and takes the other part alone.

This module holds the two pieces (``partial_attention``, ``merge``); ``tests/test_attention_merge.py`` checks them
against one masked attention over all keys. The LongSpec drafter and its verification are issue 19's work.
"""

from __future__ import annotations

import math

import torch


def partial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      allowed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of queries q (..., n, d) over keys k and values v (..., m, d), only where ``allowed`` (n, m) or
    (..., n, m) is True (None: every key). Returns (output (..., n, d), log-sum-exp of the scores (..., n)); a query
    with no allowed key gets output 0 and log-sum-exp −inf."""
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    weights = torch.exp(scores - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse).unsqueeze(-1))
    return weights @ v, lse


def merge(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor,
          lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two partial attentions over disjoint key sets → the attention over their union: (output, log-sum-exp)."""
    lse = torch.logaddexp(lse_a, lse_b)
    safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)  # no key at all: both weights are 0
    w_a = torch.exp(lse_a - safe).unsqueeze(-1)
    w_b = torch.exp(lse_b - safe).unsqueeze(-1)
    return w_a * out_a + w_b * out_b, lse


__all__ = ["merge", "partial_attention"]
