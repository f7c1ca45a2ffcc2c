"""Hybrid tree verification: the target attends to its cached prefix without a mask and to the tree's nodes with the
small ancestor mask, merged by log-sum-exp. The attention function alone equals one masked attention over every key;
a tree fed over several forwards gives the masked path's logits and cache; the engine records which path ran."""

from __future__ import annotations

import math

import pytest
import torch

from core.errors import DraftScopeError
from core.runtime.cached_lm import CachedLM
from core.specdec import Session, SessionConfig
from core.specdec.drafters.model import ModelDrafter
from core.specdec.trees.tree import (
    HYBRID_ATTENTION,
    TokenTree,
    TreeCache,
    attention_implementation,
    hybrid_tree_attention,
    tree_part_allowed,
)
from core.specdec.verify import build_verifier
from tests.helpers import hf_greedy, perturbed


def _masked_attention(q, k, v, allowed_nm, scale):
    """One softmax attention over all keys (repeated per query head) with the full (n, m) mask: (B, n, Hq, d)."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    scores = (q @ k.transpose(-1, -2)) * scale
    return (torch.softmax(scores.masked_fill(~allowed_nm, float("-inf")), -1) @ v).transpose(1, 2)


@pytest.mark.parametrize("prefix", [0, 1, 23])
def test_the_attention_function_equals_one_masked_attention(prefix):
    """GQA (6 query heads over 2 key heads), nodes fed earlier (slots) beside the new ones, a new root that sees no
    tree key but itself, and an empty prefix."""
    gen = torch.Generator().manual_seed(prefix)
    tree = TokenTree(list(range(9)), [-1, -1, 0, 0, 1, 2, 3, -1, 6])
    slots = {i: prefix + i for i in range(4)}  # nodes 0..3 are cached after the prefix
    nodes = [4, 5, 6, 7, 8]  # node 7 is a root: of the tree keys it sees only itself
    allowed_nt, positions_t = tree_part_allowed(tree, prefix, nodes, slots)
    assert allowed_nt[nodes.index(7)].tolist() == [False] * 7 + [True, False]
    assert positions_t.tolist() == [prefix + d for d in (0, 0, 1, 1, 1, 2, 2, 0, 3)]
    B, H, K, d, t = 1, 6, 2, 16, allowed_nt.shape[1]
    q = torch.randn(B, H, len(nodes), d, generator=gen) * 2
    k, v = torch.randn(B, K, prefix + t, d, generator=gen) * 2, torch.randn(B, K, prefix + t, d, generator=gen)
    out, weights = hybrid_tree_attention(None, q, k, v, allowed_nt[None, None], scaling=d ** -0.5)
    full = torch.cat([torch.ones(len(nodes), prefix, dtype=torch.bool), allowed_nt], dim=1)
    assert weights is None and out.shape == (B, len(nodes), H, d)
    torch.testing.assert_close(out, _masked_attention(q, k, v, full, 1 / math.sqrt(d)), atol=1e-5, rtol=1e-5)


def test_the_attention_function_refuses_what_it_does_not_compute():
    q, k = torch.zeros(1, 2, 1, 4), torch.zeros(1, 1, 3, 4)
    mask = torch.ones(1, 1, 1, 1, dtype=torch.bool)
    with pytest.raises(DraftScopeError, match="ancestor mask"):
        hybrid_tree_attention(None, q, k, k, None)
    with pytest.raises(DraftScopeError, match="sliding_window"):
        hybrid_tree_attention(None, q, k, k, mask, sliding_window=4)


def _feed(target, prefix, tree, attention, feeds):
    kv = CachedLM(target.model)
    kv.forward(prefix)
    cache = TreeCache(kv, attention=attention)
    rows = {}
    for nodes in feeds:
        rows.update(zip(nodes, cache.forward(tree, nodes)))
    return cache, torch.stack([rows[i] for i in range(len(tree))])


def test_hybrid_verification_equals_the_masked_path_over_two_forwards(tiny_llama):
    """The nodes fed over two forwards (the second sees the first's through the slots): the same logits and the same
    cache as the masked path, and the attention implementation is restored after each forward."""
    prefix = tiny_llama.encode("The quick brown fox jumps over the lazy dog. Then the fox")
    tree = TokenTree(tiny_llama.encode(" a b c d e f g h")[:8], [-1, -1, 0, 0, 1, 2, 4, -1])
    feeds = ([0, 1, 7], [2, 3, 4, 5, 6])
    masked, masked_nV = _feed(tiny_llama, prefix, tree, "masked", feeds)
    hybrid, hybrid_nV = _feed(tiny_llama, prefix, tree, "hybrid", feeds)
    assert (masked.attention, hybrid.attention) == ("masked", "hybrid")
    assert tiny_llama.model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(hybrid_nV, masked_nV, atol=1e-4, rtol=0)  # float32; CPU kernels differ
    for a, b in zip(masked.kv.cache.layers, hybrid.kv.cache.layers):
        torch.testing.assert_close(b.keys, a.keys, atol=1e-4, rtol=0)
        torch.testing.assert_close(b.values, a.values, atol=1e-4, rtol=0)
    assert hybrid.keep([1, 4, 6]) == 3 and hybrid.kv.ids == prefix + [tree.tokens[i] for i in (1, 4, 6)]


def test_the_implementation_is_restored_after_a_failing_forward(tiny_llama):
    with pytest.raises(RuntimeError, match="boom"), attention_implementation(tiny_llama.model, HYBRID_ATTENTION):
        assert tiny_llama.model.config._attn_implementation == HYBRID_ATTENTION
        raise RuntimeError("boom")
    assert tiny_llama.model.config._attn_implementation == "sdpa"
    with pytest.raises(DraftScopeError, match="tree attention must be"):
        TreeCache(CachedLM(tiny_llama.model), attention="flash")


def test_a_sliding_window_target_keeps_the_masked_path(tiny_gemma):
    assert TreeCache(CachedLM(tiny_gemma.model), attention="hybrid").attention == "masked"


@pytest.mark.parametrize("attention", ["hybrid", "masked"])
def test_a_tree_session_records_which_attention_verified(tiny_llama, attention):
    """Any drafter may ask for the hybrid verification (an attribute); greedy output stays the target's own."""
    drafter = ModelDrafter(tiny_llama, draft_model=perturbed(tiny_llama, 0.05))
    drafter.tree_attention = attention
    config = SessionConfig(target=tiny_llama.name, drafter="model", tree="2,2,1", gamma=4, max_new_tokens=20)
    ids = tiny_llama.encode("the cat sat on the mat and the cat sat on the")
    session = Session(tiny_llama, drafter, build_verifier("greedy"), ids, config)
    records = list(session.run())
    assert session.generated_ids == hf_greedy(tiny_llama, ids, 20)[: len(session.generated_ids)]
    assert session.stats.accepted > 0
    assert {r.draft_info["tree_attention"] for r in records} == {attention}
