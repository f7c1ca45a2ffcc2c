"""Tree attention: mask and positions against a brute-force reference, node logits against plain forwards of each
node's path, and the cache after keeping one path against a plain decode of that path."""

from __future__ import annotations

import pytest
import torch

from core.runtime.cached_lm import CachedLM
from core.specdec.trees.tree import TokenTree, TreeCache, tree_attention_inputs

# a 3,2,1-style tree: three roots, two children under root 0, one under root 1, a grandchild under node 3
TREE_PARENTS = [-1, -1, -1, 0, 0, 1, 3]


def test_mask_and_positions_brute_force():
    tree = TokenTree(tokens=list(range(10, 17)), parents=TREE_PARENTS)
    mask, positions = tree_attention_inputs(tree, prefix_len=4, dtype=torch.float32)
    assert mask.shape == (1, 1, 7, 11) and positions.tolist() == [[4, 4, 4, 5, 5, 5, 6]]
    for i in range(7):
        ancestors = set(tree.path(i))
        for j in range(11):
            allowed = j < 4 or (j - 4) in ancestors
            assert (mask[0, 0, i, j] == 0) == allowed, (i, j)
    with pytest.raises(ValueError, match="topological"):
        TokenTree(tokens=[1, 2], parents=[1, -1])


def _plain_logits(model, ids):
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0, -1].float()


@pytest.mark.parametrize("name, atol", [("tiny_llama", 1e-4), ("smollm2", 2e-3)])
def test_tree_forward_and_keep_path(request, name, atol):
    lm = request.getfixturevalue(name)
    prefix = lm.encode("The quick brown fox jumps over the lazy dog. The quick brown")
    tokens = lm.encode(" fox dog cat jumps runs sits over")[:7]
    tree = TokenTree(tokens=tokens, parents=TREE_PARENTS)
    kv = CachedLM(lm.model)
    kv.reset()
    kv.forward(prefix)
    cache = TreeCache(kv)
    logits = cache.forward(tree)
    for i in range(len(tree)):
        path_ids = prefix + [tokens[j] for j in tree.path(i)]
        torch.testing.assert_close(logits[i], _plain_logits(lm.model, path_ids), atol=atol, rtol=0)
    path = tree.path(6)  # nodes 0 → 3 → 6
    assert cache.keep(path) == len(path)
    kept = prefix + [tokens[j] for j in path]
    assert kv.ids == kept
    nxt = lm.encode(" again")[:1]
    torch.testing.assert_close(kv.forward(nxt)[-1], _plain_logits(lm.model, kept + nxt), atol=atol, rtol=0)
