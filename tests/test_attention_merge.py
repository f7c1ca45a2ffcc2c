"""LongSpec's hybrid tree attention: prefix attention (no mask) and tree attention (ancestor mask) computed apart and
merged by log-sum-exp equal one masked attention over every key."""

from __future__ import annotations

import math

import pytest
import torch

from core.runtime.attention_merge import merge, partial_attention
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
