"""Token trees: linearised nodes, the tree attention mask and position ids, one target forward over all nodes, and
keeping only the accepted path in the KV cache.

A tree is a list of nodes in topological order (every parent before its children); ``parents[i]`` is the index of
node i's parent, or -1 for children of the last committed token. Node i sits at position ``prefix_len + depth(i)``
and attends to the whole cached prefix plus its ancestors and itself (SpecInfer's tree attention).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.kv import CachedLM


@dataclass
class TokenTree:
    tokens: list[int]
    parents: list[int]  # -1 = a root (its parent is the last committed token)

    def __post_init__(self):
        if len(self.tokens) != len(self.parents):
            raise ValueError("tokens and parents differ in length")
        for i, parent in enumerate(self.parents):
            if not -1 <= parent < i:
                raise ValueError(f"node {i}: parent {parent} must come earlier (topological order)")

    def __len__(self) -> int:
        return len(self.tokens)

    def depths(self) -> list[int]:
        depth: list[int] = []
        for parent in self.parents:
            depth.append(0 if parent < 0 else depth[parent] + 1)
        return depth

    def path(self, node: int) -> list[int]:
        """Node indices from a root down to ``node``."""
        out = []
        while node >= 0:
            out.append(node)
            node = self.parents[node]
        return out[::-1]

    def ancestor_matrix(self) -> torch.Tensor:
        """(N, N) bool: [i, j] is True iff node j is node i or one of its ancestors."""
        n = len(self)
        allowed = torch.zeros(n, n, dtype=torch.bool)
        for i, parent in enumerate(self.parents):
            allowed[i, i] = True
            if parent >= 0:
                allowed[i] |= allowed[parent]
        return allowed


def tree_attention_inputs(tree: TokenTree, prefix_len: int, dtype: torch.dtype,
                          device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The 4-D additive mask (1, 1, N, prefix_len + N) — 0 where attention is allowed, the dtype's minimum elsewhere —
    and the position ids (1, N) for a forward of the tree's nodes on top of ``prefix_len`` cached tokens."""
    n = len(tree)
    allowed = torch.cat([torch.ones(n, prefix_len, dtype=torch.bool), tree.ancestor_matrix()], dim=1)
    mask = torch.zeros(n, prefix_len + n, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    positions = torch.tensor(tree.depths(), dtype=torch.long) + prefix_len
    return mask[None, None].to(device), positions[None].to(device)


@torch.inference_mode()
def tree_forward(kv: CachedLM, tree: TokenTree) -> torch.Tensor:
    """Append every node to ``kv`` in one forward with tree attention; return the logits (N, V), float32: row i is
    the next-token distribution after node i's path. Afterwards the cache holds the prefix plus all nodes."""
    prefix_len = len(kv)
    dtype = next(kv.model.parameters()).dtype
    mask, positions = tree_attention_inputs(tree, prefix_len, dtype, kv.device)
    if kv.cache is None:
        kv.reset()
    out = kv.model(input_ids=torch.tensor([tree.tokens], device=kv.device), attention_mask=mask,
                   position_ids=positions, past_key_values=kv.cache, use_cache=True)
    kv.ids.extend(tree.tokens)
    return out.logits[0].float()


def keep_path(kv: CachedLM, prefix_len: int, nodes: list[int]) -> None:
    """After a tree forward, keep in the cache the prefix plus only the given nodes (an accepted path, in order)."""
    if kv.has_sliding_layers:  # their cache holds only the window's tail: the indices below would not apply
        raise NotImplementedError("keeping a tree path is not implemented for sliding-window caches yet")
    keep = torch.tensor(list(range(prefix_len)) + [prefix_len + i for i in nodes], device=kv.device)
    for layer in kv.cache.layers:
        layer.keys = layer.keys.index_select(-2, keep)
        layer.values = layer.values.index_select(-2, keep)
    kv.ids = [kv.ids[i] for i in keep.tolist()]
