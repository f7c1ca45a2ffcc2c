"""Growing a token tree from a drafter that gives probabilities.

Shapes: a fixed branching list per depth (``3,2,1,1``: three children at the first position, two under each of
them, then one), Medusa's static format — a list of paths of top-k indices, ``[[0], [1], [0, 0], [0, 1], [0, 0, 0]]``
(path (i, j) is the (j+1)-th best child of the (i+1)-th best root child; every path's parent path must be listed) —
or ``budget:N`` — EAGLE-2 style: at every depth the ``branch`` frontier nodes with the highest
cumulative draft probability are expanded, each with ``branch`` children, up to depth γ.
Children of a node are the drafter's top-k ("topk"), drawn i.i.d. from q ("iid", what RRS needs) or drawn without
replacement ("without-replacement", what RSD needs).

With top-k children a budget tree is then re-ranked as in EAGLE-2 (keep the N best nodes by cumulative probability,
ancestors before descendants). With sampled children that re-ranking would pick children by their drawn values and
break the law the sampled verifiers rely on, so a budget tree stops adding children once N nodes are drawn instead:
how many children a node gets is fixed before they are drawn.

The drafter expands the tree in one forward per depth (tree attention over the nodes fed so far); leaves are never
fed. Drafters that can do this inherit ``TreeDrafting`` (``tree_begin`` / ``tree_expand`` / ``tree_end``); one with a
``tree_info`` dict (LongSpec: its cache's bytes) has it copied into the tree's ``info`` for the record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from core.errors import DraftScopeError
from core.specdec.drafters.base import BuildsTree, DraftContext, Drafter, TreeDrafting
from core.specdec.sampling import display_probs, sample, warp
from core.specdec.trees.tree import TokenTree

CHILDREN_MODES = ("topk", "iid", "without-replacement")
MAX_TREE_NODES = 256
MAX_BRANCH = 16


@dataclass(frozen=True)
class TreeSpec:
    shape: tuple[int, ...] | None  # children per node at each depth; None: budget mode
    budget: int | None  # total nodes (budget mode)
    branch: int  # budget mode: frontier nodes expanded per depth, and children per expanded node
    depth: int  # budget mode: maximum depth
    children: str  # "topk" | "iid" | "without-replacement"
    paths: tuple[tuple[int, ...], ...] | None = None  # Medusa's format: each node as the ranks along its path

    @classmethod
    def parse(cls, text: str, depth: int = 5, branch: int = 4, children: str = "topk") -> "TreeSpec":
        """``"3,2,1,1"``, ``"[[0], [1], [0, 0]]"`` (paths of top-k indices) or ``"budget:24"`` (then ``depth`` and
        ``branch`` apply)."""
        text = (text or "").strip().replace(" ", "")
        if children not in CHILDREN_MODES:
            raise DraftScopeError(f"children must be one of {', '.join(CHILDREN_MODES)}, got '{children}'")
        if text.startswith("["):
            return cls._parse_paths(text, children)
        if text.startswith("budget:"):
            try:
                budget = int(text.split(":", 1)[1])
            except ValueError:
                raise DraftScopeError(f"tree budget must be an integer, e.g. budget:24 (got '{text}')") from None
            if not 1 <= budget <= MAX_TREE_NODES:
                raise DraftScopeError(f"tree node budget must be in 1..{MAX_TREE_NODES}, got {budget}")
            if not 1 <= branch <= MAX_BRANCH:
                raise DraftScopeError(f"tree branch must be in 1..{MAX_BRANCH}, got {branch}")
            if not 1 <= depth <= 64:
                raise DraftScopeError(f"tree depth must be in 1..64, got {depth}")
            return cls(None, budget, branch, depth, children)
        try:
            shape = tuple(int(x) for x in text.split(","))
        except ValueError:
            raise DraftScopeError(f"tree shape must be comma-separated integers like 3,2,1,1 or budget:N "
                                  f"(got '{text}')") from None
        if not shape or any(not 1 <= b <= MAX_BRANCH for b in shape):
            raise DraftScopeError(f"each tree branching factor must be in 1..{MAX_BRANCH} (got '{text}')")
        spec = cls(shape, None, max(shape), len(shape), children)
        if spec.max_nodes > MAX_TREE_NODES:
            raise DraftScopeError(f"tree shape {text} has {spec.max_nodes} nodes; at most {MAX_TREE_NODES}")
        return spec

    @classmethod
    def _parse_paths(cls, text: str, children: str) -> "TreeSpec":
        try:
            raw = json.loads(text)
            paths = tuple(tuple(int(r) for r in path) for path in raw)
            if not all(isinstance(r, int) and not isinstance(r, bool) for path in raw for r in path):
                raise ValueError
        except (ValueError, TypeError):
            raise DraftScopeError(f"tree paths must be a list of lists of top-k indices like [[0], [1], [0, 0]] "
                                  f"(got '{text}')") from None
        if not paths or any(not path for path in paths):
            raise DraftScopeError("tree paths must be non-empty lists of top-k indices, e.g. [[0], [1], [0, 0]]")
        if len(set(paths)) != len(paths):
            raise DraftScopeError("tree paths list a node twice")
        if any(not 0 <= r < MAX_BRANCH for path in paths for r in path):
            raise DraftScopeError(f"tree path indices must be in 0..{MAX_BRANCH - 1} (top-{MAX_BRANCH})")
        if len(paths) > MAX_TREE_NODES:
            raise DraftScopeError(f"tree paths give {len(paths)} nodes; at most {MAX_TREE_NODES}")
        listed = set(paths)
        for path in paths:
            if len(path) > 1 and path[:-1] not in listed:
                raise DraftScopeError(f"tree path {list(path)} needs its parent path {list(path[:-1])} listed too")
        if children != "topk":  # drawn children: the ranks under a node must be the first draws, 0..n−1
            for parent in {path[:-1] for path in paths}:
                ranks = sorted(path[-1] for path in paths if path[:-1] == parent)
                if ranks != list(range(len(ranks))):
                    raise DraftScopeError(f"with {children} children the indices under a node must be 0..n−1, got "
                                          f"{ranks} under {list(parent)}")
        paths = tuple(sorted(paths, key=lambda p: (len(p), p)))
        return cls(None, None, max(r for p in paths for r in p) + 1, max(map(len, paths)), children, paths)

    @property
    def max_nodes(self) -> int:
        if self.paths is not None:
            return len(self.paths)
        if self.shape is None:
            return self.budget
        total, width = 0, 1
        for b in self.shape:
            width *= b
            total += width
        return total

    @property
    def label(self) -> str:
        if self.paths is not None:
            return json.dumps([list(p) for p in self.paths], separators=(",", ":"))
        return ",".join(map(str, self.shape)) if self.shape is not None else f"budget:{self.budget}"

    @property
    def budget_mode(self) -> bool:
        return self.shape is None and self.paths is None


@dataclass
class DraftTree:
    tree: TokenTree
    q_rows: dict[int, torch.Tensor]  # node (-1: the root) → the distribution its children were drawn from (V,)
    q_show: dict[int, torch.Tensor]  # node → what the records show as q there (model softmax when greedy)
    source: list[int] = field(default_factory=list)  # node → its index while the drafter grew the tree
    info: dict = field(default_factory=dict)  # drafter-specific facts for the record (JSON-friendly; ADED's search)


def build_tree(drafter: Drafter, ctx: DraftContext, spec: TreeSpec, max_depth: int) -> DraftTree:
    """Grow a tree of depth ≤ ``max_depth`` (≤ spec depth) from the drafter's distributions (a ``BuildsTree``
    drafter builds its own, with at most the spec's number of nodes)."""
    if not isinstance(drafter, (TreeDrafting, BuildsTree)):
        raise DraftScopeError(f"the '{drafter.name}' drafter gives no probabilities, so it cannot grow a tree; "
                              "use 'model' or 'early-exit', or a chain")
    depth_limit = min(spec.depth, max_depth)
    if depth_limit <= 0:
        return DraftTree(TokenTree([], []), {}, {}, [])
    if isinstance(drafter, BuildsTree):
        return drafter.draft_tree(ctx, spec.max_nodes, depth_limit)
    tokens: list[int] = []
    parents: list[int] = []
    ranks: dict[int, tuple[int, ...]] = {-1: ()}  # node → its path as ranks among siblings (paths mode)
    score: list[float] = []  # cumulative probability along the path (by the shown q)
    q_rows: dict[int, torch.Tensor] = {}
    q_show: dict[int, torch.Tensor] = {}
    root_logits = drafter.tree_begin(ctx)
    frontier = [-1]
    logits_of = {-1: root_logits}
    for depth in range(depth_limit):
        if depth > 0:
            expand = _choose_expansions(frontier, score, spec, ranks)
            if not expand:
                break
            rows = drafter.tree_expand(TokenTree(list(tokens), list(parents)), expand)
            logits_of = dict(zip(expand, rows))
        else:
            expand = [-1]
        new_frontier = []
        for node in expand:
            logits_1V = logits_of[node].detach().float().cpu().unsqueeze(0)
            q_V = warp(logits_1V, ctx.sampling)[0]
            show_V = display_probs(logits_1V, q_V.unsqueeze(0), ctx.sampling)[0]
            q_rows[node], q_show[node] = q_V, show_V
            wanted = _wanted_ranks(spec, ranks[node]) if spec.paths is not None else None
            n = spec.shape[depth] if spec.shape is not None else spec.branch
            if wanted is not None:
                n = max(wanted) + 1
            elif spec.budget_mode and spec.children != "topk":
                n = min(n, spec.budget - len(tokens))  # fixed before drawing: the law of the drawn children holds
            base = score[node] if node >= 0 else 1.0
            for rank, tok in enumerate(_children(q_V, show_V, n, spec.children, ctx)):
                if wanted is not None and rank not in wanted:
                    continue
                tokens.append(tok)
                parents.append(node)
                score.append(base * float(show_V[tok]))
                ranks[len(tokens) - 1] = (*ranks[node], rank)
                new_frontier.append(len(tokens) - 1)
        frontier = new_frontier
        if spec.budget_mode and spec.children != "topk" and len(tokens) >= spec.budget:
            break
    keep = list(range(len(tokens)))
    if spec.budget_mode and spec.children == "topk" and len(tokens) > spec.budget:
        # EAGLE-2 re-ranking: the N best nodes by cumulative probability. A child never beats its parent (q ≤ 1),
        # and ties go to the shallower, earlier node, so every kept node's ancestors are kept too.
        keep = sorted(sorted(keep, key=lambda i: (-score[i], i))[: spec.budget])
    remap = {old: new for new, old in enumerate(keep)}
    remap[-1] = -1
    tree = TokenTree([tokens[i] for i in keep], [remap[parents[i]] for i in keep])
    rows = {remap[k]: v for k, v in q_rows.items() if k in remap}
    shows = {remap[k]: v for k, v in q_show.items() if k in remap}
    return DraftTree(tree, rows, shows, keep, dict(getattr(drafter, "tree_info", None) or {}))


def _wanted_ranks(spec: TreeSpec, path: tuple[int, ...]) -> set[int]:
    """Paths mode: the sibling ranks listed under the node whose path is ``path``."""
    return {p[-1] for p in spec.paths if len(p) == len(path) + 1 and p[:-1] == path}


def _choose_expansions(frontier: list[int], score: list[float], spec: TreeSpec,
                       ranks: dict[int, tuple[int, ...]]) -> list[int]:
    if spec.paths is not None:
        return [node for node in frontier if _wanted_ranks(spec, ranks[node])]
    if spec.shape is not None:
        return frontier
    ranked = sorted(frontier, key=lambda i: (-score[i], i))
    return sorted(ranked[: spec.branch])


def _children(q_V: torch.Tensor, show_V: torch.Tensor, n: int, mode: str, ctx: DraftContext) -> list[int]:
    if n <= 0:
        return []
    if mode == "topk" or ctx.sampling.greedy:
        # at temperature 0 q is one-hot: every draw would give the argmax, so the drafter's top-k are taken
        rank_V = show_V if ctx.sampling.greedy else q_V
        n = min(n, int((rank_V > 0).sum()))
        return torch.topk(rank_V, n).indices.tolist()
    if mode == "iid":
        return [sample(q_V, ctx.generator) for _ in range(n)]
    drawn, left = [], q_V.clone()  # without replacement: each draw from q minus the tokens drawn, renormalised
    for _ in range(min(n, int((q_V > 0).sum()))):
        tok = sample(left / left.sum(), ctx.generator)
        drawn.append(tok)
        left[tok] = 0.0
    return drawn
