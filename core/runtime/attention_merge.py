"""Exact attention over two key sets computed apart, merged by log-sum-exp (LongSpec's hybrid tree attention).

Softmax attention over keys K = K_a ∪ K_b splits exactly: with s = q·k / √d (plus an additive mask) and, per query,
ℓ_a = log Σ_{k ∈ K_a} exp(s_k) and o_a = Σ_{k ∈ K_a} softmax_a(s)_k v_k (likewise for b),

    o = (e^{ℓ_a} o_a + e^{ℓ_b} o_b) / (e^{ℓ_a} + e^{ℓ_b}),    ℓ = log(e^{ℓ_a} + e^{ℓ_b}).

So a tree round can attend to the long cached prefix without any mask (every node sees all of it) and to the few
tree nodes with the small ancestor mask, and merge the two: no (nodes × prefix) mask is ever built. A query that sees
no key of one part has ℓ = −inf there and takes the other part alone.

The pieces: ``partial_attention`` and ``merge``; ``grouped_partial_attention`` runs the first on grouped-query heads
(query head h reads key head h // g) without repeating keys, and ``split_attention`` merges any number of parts.
``tests/test_attention_merge.py`` checks them against one masked attention over all keys. Users: the LongSpec drafter's
self-attention while it drafts a tree (its ring of committed rows + the tree's rows, ``core.specdec.drafters.longspec``)
and the target's hybrid tree verification (the cached prefix + the tree's nodes, ``core.specdec.trees.tree``).
"""

from __future__ import annotations

import math

import torch


def partial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None = None,
                      scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of queries q (..., n, d) over keys k and values v (..., m, d), only where ``allowed`` (n, m) or
    (..., n, m) is True (None: every key), scores scaled by ``scale`` (None: 1/√d). Returns (output (..., n, d),
    log-sum-exp of the scores (..., n)); a query with no allowed key (or no key at all) gets output 0 and
    log-sum-exp −inf."""
    scores = q @ k.transpose(-1, -2)
    scores = scores / math.sqrt(q.shape[-1]) if scale is None else scores * scale
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


def grouped_partial_attention(q_BHnd: torch.Tensor, k_BKmd: torch.Tensor, v_BKmd: torch.Tensor,
                              allowed: torch.Tensor | None = None,
                              scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``partial_attention`` of H query heads over K key heads (grouped-query attention: query head h reads key head
    h // g, g = H / K), without copying keys. ``allowed``: (n, m) or (B, n, m), the same for every head (None: every
    key). Returns (output (B, H, n, d), log-sum-exp (B, H, n))."""
    B, H, n, d = q_BHnd.shape
    K = k_BKmd.shape[1]
    g = H // K
    q_BKrd = q_BHnd.reshape(B, K, g * n, d)  # rows: group member r, then query i (row r·n + i)
    allowed_b1rm = None
    if allowed is not None:
        allowed_bnm = allowed[None] if allowed.dim() == 2 else allowed
        allowed_b1rm = allowed_bnm[:, None].repeat(1, 1, g, 1)  # the same rows as the queries
    out, lse = partial_attention(q_BKrd, k_BKmd, v_BKmd, allowed_b1rm, scale)
    return out.reshape(B, H, n, d), lse.reshape(B, H, n)


def split_attention(q_BHnd: torch.Tensor, parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]],
                    scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Grouped-query attention over the union of disjoint key sets given apart, ``parts`` = [(keys (B, K, m, d),
    values, allowed (n, m) / (B, n, m) / None), …], each attended alone and the results merged by log-sum-exp:
    (output (B, H, n, d), log-sum-exp (B, H, n))."""
    out = lse = None
    for k, v, allowed in parts:
        part_out, part_lse = grouped_partial_attention(q_BHnd, k, v, allowed, scale)
        out, lse = (part_out, part_lse) if out is None else merge(out, lse, part_out, part_lse)
    return out, lse


__all__ = ["grouped_partial_attention", "merge", "partial_attention", "split_attention"]
