"""LongSpec's hybrid tree attention: prefix attention (no mask) and tree attention (ancestor mask) computed apart and
merged by log-sum-exp equal one masked attention over every key; the grouped-query form reads each query head's key
head. The transformers attention function built on them: tests/test_hybrid_tree.py."""

from __future__ import annotations

import math

import pytest
import torch

from core.runtime.attention_merge import grouped_partial_attention, merge, partial_attention, split_attention
from core.specdec.trees.tree import ancestor_matrix


def _full(q, k, v, allowed):
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v


@pytest.mark.parametrize("prefix", [1, 7, 300])
def test_prefix_and_tree_merged_equal_masked_attention(prefix):
    gen = torch.Generator().manual_seed(prefix)
    parents = [-1, -1, 0, 0, 1, 2, 5]  # a 7-node tree
    n, heads, d = len(parents), 3, 16
    q = torch.randn(heads, n, d, generator=gen) * 2
    k = torch.randn(heads, prefix + n, d, generator=gen) * 2
    v = torch.randn(heads, prefix + n, d, generator=gen)
    tree_mask = ancestor_matrix(parents)
    allowed = torch.cat([torch.ones(n, prefix, dtype=torch.bool), tree_mask], dim=1)
    out_p, lse_p = partial_attention(q, k[:, :prefix], v[:, :prefix])
    out_t, lse_t = partial_attention(q, k[:, prefix:], v[:, prefix:], tree_mask)
    merged, lse = merge(out_p, lse_p, out_t, lse_t)
    torch.testing.assert_close(merged, _full(q, k, v, allowed), atol=1e-5, rtol=1e-5)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    torch.testing.assert_close(lse, torch.logsumexp(scores.masked_fill(~allowed, float("-inf")), -1))


def test_a_part_with_no_visible_key_is_ignored():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 8, generator=gen) for _ in range(3))
    nothing = torch.zeros(4, 4, dtype=torch.bool)
    out_a, lse_a = partial_attention(q, k, v)
    out_b, lse_b = partial_attention(q, k, v, nothing)
    assert torch.isneginf(lse_b).all() and not out_b.isnan().any() and (out_b == 0).all()
    merged, lse = merge(out_a, lse_a, out_b, lse_b)
    torch.testing.assert_close(merged, out_a)
    torch.testing.assert_close(lse, lse_a)
    empty, lse_empty = merge(out_b, lse_b, out_b, lse_b)
    assert (empty == 0).all() and torch.isneginf(lse_empty).all()


@pytest.mark.parametrize("per_batch", [False, True])
def test_grouped_query_heads_read_their_key_head(per_batch):
    """Six query heads over two key heads: query head h reads key head h // 3, as with the keys repeated per head."""
    gen = torch.Generator().manual_seed(1)
    B, H, K, n, m, d = 2, 6, 2, 5, 9, 8
    q = torch.randn(B, H, n, d, generator=gen)
    k, v = torch.randn(B, K, m, d, generator=gen), torch.randn(B, K, m, d, generator=gen)
    allowed = torch.rand((B, n, m) if per_batch else (n, m), generator=gen) < 0.6
    allowed[..., 0] = True
    out, lse = grouped_partial_attention(q, k, v, allowed, scale=0.3)
    mask = (allowed if per_batch else allowed.expand(B, n, m))[:, None]
    ref, ref_lse = partial_attention(q, k.repeat_interleave(H // K, 1), v.repeat_interleave(H // K, 1), mask,
                                     scale=0.3)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(lse, ref_lse)


def test_split_attention_over_three_parts_equals_one_attention():
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(1, 4, 3, 8, generator=gen)
    k, v = torch.randn(1, 2, 12, 8, generator=gen), torch.randn(1, 2, 12, 8, generator=gen)
    allowed = torch.rand(3, 12, generator=gen) < 0.5
    allowed[:, 4:8] = False  # the middle part is invisible to every query
    allowed[:, 0] = True
    cuts = [(0, 4), (4, 8), (8, 12)]
    out, lse = split_attention(q, [(k[:, :, a:b], v[:, :, a:b], allowed[:, a:b]) for a, b in cuts])
    ref, ref_lse = grouped_partial_attention(q, k, v, allowed)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(lse, ref_lse)
