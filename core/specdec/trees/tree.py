"""Token trees: linearised nodes, the tree attention mask and position ids, one target forward over all nodes, and
keeping only the accepted path in the KV cache.

A tree is a list of nodes in topological order (every parent before its children); ``parents[i]`` is the index of
node i's parent, or -1 for children of the last committed token. Node i sits at position ``prefix_len + depth(i)``
and attends to the whole cached prefix plus its ancestors and itself (SpecInfer's tree attention).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.errors import DraftScopeError
from core.runtime.cache import keep_positions
from core.runtime.cached_lm import CachedLM
from core.runtime.masks import additive


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
        return ancestor_matrix(self.parents)


def ancestor_matrix(parents: list[int]) -> torch.Tensor:
    """(N, N) bool over nodes in topological order (``parents[i]`` < i, -1 for a root): [i, j] is True iff node j is
    node i or one of its ancestors, i.e. the node-to-node part of the tree attention mask."""
    n = len(parents)
    allowed_NN = torch.zeros(n, n, dtype=torch.bool)
    for i, parent in enumerate(parents):
        allowed_NN[i, i] = True
        if parent >= 0:
            allowed_NN[i] |= allowed_NN[parent]
    return allowed_NN


def tree_attention_inputs(tree: TokenTree, prefix_len: int, dtype: torch.dtype, device: torch.device | str = "cpu",
                          nodes: list[int] | None = None,
                          slots: dict[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4-D additive mask (1, 1, n, cache_len + n) — 0 where attention is allowed, the dtype's minimum elsewhere —
    and the position ids (1, n) for a forward of ``nodes`` (default: all, in order) on top of the cache.

    The cache holds ``prefix_len`` committed tokens followed by tree nodes fed earlier; ``slots`` maps each of those
    nodes to its cache index. Every ancestor of a node in ``nodes`` must be cached already or come earlier in
    ``nodes``."""
    nodes = list(range(len(tree))) if nodes is None else nodes
    slots = slots or {}
    cache_len = prefix_len + len(slots)
    column = dict(slots)
    column.update({node: cache_len + j for j, node in enumerate(nodes)})
    allowed = torch.zeros(len(nodes), cache_len + len(nodes), dtype=torch.bool)
    allowed[:, :prefix_len] = True
    for j, node in enumerate(nodes):
        for ancestor in tree.path(node):
            if ancestor not in column:
                raise ValueError(f"node {node}: ancestor {ancestor} is neither cached nor fed before it")
            allowed[j, column[ancestor]] = True
    mask = additive(allowed, dtype)
    depths = tree.depths()
    positions = torch.tensor([prefix_len + depths[node] for node in nodes], dtype=torch.long)
    return mask[None, None].to(device), positions[None].to(device)


class TreeCache:
    """A model's cache while a tree is fed into it, possibly over several forwards (a drafter expands it depth by
    depth): the committed prefix, then tree nodes in the order they were fed. ``keep`` leaves prefix + one path."""

    def __init__(self, kv: CachedLM):
        if kv.cache is None:
            kv.reset()
        if kv.has_sliding_layers:  # their cache keeps only the window's tail: the slot indices would not apply
            raise DraftScopeError("draft trees are not available for models with sliding-window layers "
                                  "(Gemma 3) yet; use a chain (no tree)")
        self.kv = kv
        self.prefix_len = len(kv)
        self.slots: dict[int, int] = {}

    @torch.inference_mode()
    def forward(self, tree: TokenTree, nodes: list[int] | None = None) -> torch.Tensor:
        """Feed ``nodes`` (default: every node not fed yet) in one forward; return their logits (n, V), float32: row
        j is the next-token distribution after node ``nodes[j]``'s path."""
        nodes = [i for i in range(len(tree)) if i not in self.slots] if nodes is None else nodes
        kv = self.kv
        dtype = next(kv.model.parameters()).dtype
        mask, positions = tree_attention_inputs(tree, self.prefix_len, dtype, kv.device, nodes, self.slots)
        out = kv.model(input_ids=torch.tensor([[tree.tokens[i] for i in nodes]], device=kv.device),
                       attention_mask=mask, position_ids=positions, past_key_values=kv.cache, use_cache=True)
        for node in nodes:
            self.slots[node] = len(kv.ids)
            kv.ids.append(tree.tokens[node])
        return out.logits[0].float()

    def keep(self, path: list[int]) -> int:
        """Keep the prefix plus the longest leading part of ``path`` (root to leaf) that was fed; return its length."""
        kept = []
        for node in path:
            if node not in self.slots:
                break
            kept.append(self.slots[node])
        _gather(self.kv, list(range(self.prefix_len)) + kept)
        self.slots = {}
        return len(kept)


def _gather(kv: CachedLM, keep: list[int]) -> None:
    keep_positions(kv.cache, keep)
    kv.ids = [kv.ids[i] for i in keep]
