"""Token trees: linearised nodes, the tree attention mask and position ids, one target forward over all nodes, and
keeping only the accepted path in the KV cache.

A tree is a list of nodes in topological order (every parent before its children); ``parents[i]`` is the index of
node i's parent, or -1 for children of the last committed token. Node i sits at position ``prefix_len + depth(i)``
and attends to the whole cached prefix plus its ancestors and itself (SpecInfer's tree attention).

On a model with sliding-window layers (Gemma 3) those layers attend, as in a plain decode of the node's path, only
to the prefix positions and ancestors within the window of the node's position; they hold only the prefix's tail, so
the forward gets one mask per layer type and a cache view that hands them every key they hold (tree nodes fed in
earlier forwards included), and ``keep`` leaves them the tail of the kept sequence.

Hybrid tree attention (LongSpec's verification; ``TreeCache(kv, attention="hybrid")``, full-attention models only):
every node sees the whole cached prefix, so each layer attends to the prefix without a mask and to the tree's keys
(nodes fed earlier, then these) with the small (nodes × tree keys) ancestor mask, and merges the two by log-sum-exp
(``core.runtime.attention_merge``): the (nodes × prefix) mask is never built. The hook: ``hybrid_tree_attention`` is
registered as a transformers attention function (``AttentionInterface``) under ``HYBRID_ATTENTION``; for the tree
forward only, the model's ``config._attn_implementation`` names it (``attention_implementation``), and the forward's
``attention_mask`` is the 4-D ancestor mask, which transformers' mask builder hands through unchanged (a 4-D mask is
taken as prepared) to every layer's attention function. A model with sliding-window layers keeps the masked path.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from transformers import AttentionInterface

from core.errors import DraftScopeError
from core.runtime.attention_merge import split_attention
from core.runtime.cache import WholeStatesView, keep_positions, sliding_state
from core.runtime.cached_lm import CachedLM
from core.runtime.masks import additive, layer_type_masks
from core.runtime.models import has_sliding_layers

TREE_ATTENTION = ("masked", "hybrid")  # how a tree forward attends (TreeCache's ``attention``)
HYBRID_ATTENTION = "draftscope_hybrid_tree"  # the name of hybrid_tree_attention in transformers' registry


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
                          nodes: list[int] | None = None, slots: dict[int, int] | None = None,
                          sliding: tuple[int, int] | None = None) -> tuple[torch.Tensor | dict, torch.Tensor]:
    """The 4-D additive mask (1, 1, n, cache_len + n) — 0 where attention is allowed, the dtype's minimum elsewhere —
    and the position ids (1, n) for a forward of ``nodes`` (default: all, in order) on top of the cache.

    The cache holds ``prefix_len`` committed tokens followed by tree nodes fed earlier; ``slots`` maps each of those
    nodes to its cache index. Every ancestor of a node in ``nodes`` must be cached already or come earlier in
    ``nodes``. ``sliding``: (window, positions held) of the model's sliding-window layers (``sliding_state``); the
    mask is then a dict by layer type whose sliding mask covers the held positions and the new ones."""
    nodes = list(range(len(tree))) if nodes is None else nodes
    allowed_nm, key_positions_m = _tree_allowed(tree, prefix_len, nodes, slots or {})
    positions_n = key_positions_m[len(key_positions_m) - len(nodes):]  # the new nodes' columns come last
    if sliding is None:
        mask = additive(allowed_nm, dtype)[None, None].to(device)
    else:
        window, held = sliding
        masks = layer_type_masks(allowed_nm, positions_n, key_positions_m, window, held + len(nodes), dtype)
        mask = {kind: m.to(device) for kind, m in masks.items()}
    return mask, positions_n[None].to(device)


def _tree_allowed(tree: TokenTree, prefix_len: int, nodes: list[int],
                  slots: dict[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, m) bool: which of the m keys (the cache, then ``nodes``) each of ``nodes`` may see — the prefix, its
    ancestors and itself — and (m,) the keys' positions (a node's: prefix_len + its depth)."""
    tree_allowed_nt, tree_positions_t = tree_part_allowed(tree, prefix_len, nodes, slots)
    allowed_nm = torch.cat([torch.ones(len(nodes), prefix_len, dtype=torch.bool), tree_allowed_nt], dim=1)
    return allowed_nm, torch.cat([torch.arange(prefix_len), tree_positions_t])


def tree_part_allowed(tree: TokenTree, prefix_len: int, nodes: list[int],
                      slots: dict[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The tree's part of the mask: (n, t) bool over the t tree keys the cache holds after the forward (the nodes in
    ``slots``, fed earlier at cache indices prefix_len.., then ``nodes``) — True where the key is the node's ancestor
    or itself — and (t,) those keys' positions (prefix_len + depth)."""
    column = {node: slot - prefix_len for node, slot in slots.items()}
    column.update({node: len(slots) + j for j, node in enumerate(nodes)})
    allowed_nt = torch.zeros(len(nodes), len(column), dtype=torch.bool)
    for j, node in enumerate(nodes):
        for ancestor in tree.path(node):
            if ancestor not in column:
                raise ValueError(f"node {node}: ancestor {ancestor} is neither cached nor fed before it")
            allowed_nt[j, column[ancestor]] = True
    depths = tree.depths()
    positions_t = torch.zeros(len(column), dtype=torch.long)
    for node, col in column.items():
        positions_t[col] = prefix_len + depths[node]
    return allowed_nt, positions_t


# ------------------------------------------------------------------------------------------------ hybrid attention
def hybrid_tree_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          **kwargs) -> tuple[torch.Tensor, None]:
    """A transformers attention function for a tree forward. ``query`` (B, Hq, n, d); ``key``, ``value`` (B, Hkv,
    P + t, d): the cached prefix (P keys), then the tree's t keys; ``attention_mask`` (B, 1, n, t) bool: the tree
    part's ancestor mask (the prefix is seen whole). Attention over the prefix without a mask and over the tree with
    its mask, merged by log-sum-exp, in float32. Returns (output (B, n, Hq, d), None), as transformers' own do."""
    if attention_mask is None or attention_mask.dtype != torch.bool or attention_mask.dim() != 4:
        raise DraftScopeError("the hybrid tree attention needs the tree's 4-D bool ancestor mask")
    unsupported = [name for name in ("sliding_window", "softcap", "s_aux") if kwargs.get(name) is not None]
    if unsupported or dropout:
        raise DraftScopeError(f"the hybrid tree attention does not support {unsupported or 'dropout'}")
    t = attention_mask.shape[-1]
    prefix = key.shape[2] - t
    k, v = key.float(), value.float()
    parts = [(k[:, :, :prefix], v[:, :, :prefix], None), (k[:, :, prefix:], v[:, :, prefix:], attention_mask[:, 0])]
    out_BHnd, _ = split_attention(query.float(), parts, scaling)
    return out_BHnd.to(query.dtype).transpose(1, 2).contiguous(), None


AttentionInterface.register(HYBRID_ATTENTION, hybrid_tree_attention)


@contextlib.contextmanager
def attention_implementation(model: torch.nn.Module, name: str):
    """Run ``model``'s attention layers with the registered attention function ``name`` inside the block (they read
    ``config._attn_implementation`` at every call); the previous one is restored on the way out."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = before


def supports_hybrid(model: torch.nn.Module) -> bool:
    """The hybrid path needs every layer to see the whole prefix: no sliding-window layers."""
    return not has_sliding_layers(model)


class TreeCache:
    """A model's cache while a tree is fed into it, possibly over several forwards (a drafter expands it depth by
    depth): the committed prefix, then tree nodes in the order they were fed. ``keep`` leaves prefix + one path.
    Sliding-window layers hold the prefix's tail and every node fed (they record their past until the next crop,
    which ``CachedLM.rollback`` does).

    ``attention``: "masked" — one additive (nodes × cache + nodes) mask — or "hybrid" — the prefix unmasked and the
    tree with its ancestor mask, merged by log-sum-exp; a model with sliding-window layers always takes the masked
    path (``self.attention`` says which is used)."""

    def __init__(self, kv: CachedLM, attention: str = "masked"):
        if attention not in TREE_ATTENTION:
            raise DraftScopeError(f"tree attention must be one of {', '.join(TREE_ATTENTION)}, got {attention!r}")
        if kv.cache is None:
            kv.reset()
        self.kv = kv
        self.prefix_len = len(kv)
        self.slots: dict[int, int] = {}
        self.attention = "hybrid" if attention == "hybrid" and supports_hybrid(kv.model) else "masked"

    @torch.inference_mode()
    def forward(self, tree: TokenTree, nodes: list[int] | None = None) -> torch.Tensor:
        """Feed ``nodes`` (default: every node not fed yet) in one forward; return their logits (n, V), float32: row
        j is the next-token distribution after node ``nodes[j]``'s path."""
        nodes = [i for i in range(len(tree)) if i not in self.slots] if nodes is None else nodes
        kv = self.kv
        input_ids = torch.tensor([[tree.tokens[i] for i in nodes]], device=kv.device)
        if self.attention == "hybrid":
            allowed_nt, positions_t = tree_part_allowed(tree, self.prefix_len, nodes, self.slots)
            positions = positions_t[len(positions_t) - len(nodes):][None].to(kv.device)
            with attention_implementation(kv.model, HYBRID_ATTENTION):
                out = kv.model(input_ids=input_ids, attention_mask=allowed_nt[None, None].to(kv.device),
                               position_ids=positions, use_cache=True, past_key_values=kv.cache)
        else:
            dtype = next(kv.model.parameters()).dtype
            sliding = sliding_state(kv.cache)
            mask, positions = tree_attention_inputs(tree, self.prefix_len, dtype, kv.device, nodes, self.slots,
                                                    sliding)
            out = kv.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                           past_key_values=kv.cache if sliding is None else WholeStatesView(kv.cache))
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
