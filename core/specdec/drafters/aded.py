"""ADED: adaptive draft-verification without training (Liu et al., AAAI 2025): a tri-gram stand-in for the target that
adapts to what the target emits, searched by Monte Carlo tree search to build a draft tree.

The store ("LLM representative"): for every bigram (a, b) seen in text the target generated, the probabilities
P(c | a, b) of its successors, keeping the 12 most likely. ``python -m core.train.aded`` counts them from the
distillation corpus (the target's own answers); the shipped store is ``assets/aded/``. ``store="empty"`` starts from
nothing and learns from the answer only (with ``learn_prompt``, from the prompt too).

Adaptation (``adapt``, the paper's online part). Before every draft the trigrams of the last 16 committed tokens are
boosted by +0.04 (capped at 3.0), without renormalising: the scores drift towards what this run has produced. A
trigram the store lacks is added at 0.04 (the reference only boosts stored entries; without this the empty store
could never learn). The boosts belong to this drafter (one session), never to the shared store.

Ours, off by default: ``learn_prompt`` adds +1.0 for every trigram of the prompt before the first draft, so ADED can
copy from the prompt as prompt lookup does; ``min_share`` ends a chain at a child with less than that share of its
parent's visits (a rejected draft token is not free on a CPU: verifying 6 tokens costs ~1.5 single-token forwards).

Search (from the last committed bigram): a node is a bigram state, its children are the store's successors with
their scores as priors. Each of ``iterations`` simulations selects down the tree by
    PUCT = W/N + (c1 + ln((N_parent + c2 + 1) / c2)) · prior · √N_parent / (1 + N),   c1 = 32, c2 = 8
(an unvisited child first), expands a leaf's successors all at once and goes on from the last of them, rolls out to
depth 4 by sampling successors in proportion to their scores, and backs up the value 1 + Σ scores along the path.
The draft: the 24 most visited nodes' paths, each extended by its best successor, merged into a tree until the node
budget is spent (a chain: the most visited child at every depth, then best successors up to γ).

What differs from the reference (Rust ``draftretriever``): its store is built from UltraChat / ShareGPT / The Stack
(ours from the target's own answers to our corpus prompts); its trees hold up to 64 nodes (ours take the tree
setting's budget, 16 by default on this CPU); at T > 0 it accepts a path where a per-path sample from a top-p filtered
target matches, which is not an exact sampler, while ours is verified by the lossless rules (greedy, or ``match``:
draw y ~ p and descend into the child equal to y); when the store has no successor it drafts nothing instead of a
fixed token.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from core.errors import DraftScopeError
from core.options import LocalPath, Range
from core.runtime.models import LoadedModel
from core.specdec.drafters.base import BuildsTree, Draft, DraftContext, Drafter, LengthOptions

ASSETS = Path(__file__).resolve().parents[3] / "assets" / "aded"
TOP_SUCCESSORS = 12  # successors kept per bigram (the reference keeps 12)
BOOST, BOOST_CAP, BOOST_WINDOW = 0.04, 3.0, 16  # the reference's online update
PROMPT_BOOST = 1.0  # ours (learn_prompt): a prompt trigram weighs as much as a certain successor in the store
C1, C2 = 32.0, 8.0  # its PUCT constants
ROLLOUT_DEPTH = 4  # states per rollout path
TOP_PATHS = 24  # most visited paths turned into the draft
BUILD_HINT = "python -m core.train.aded --target TARGET"


def default_store(target_name: str) -> Path:
    return ASSETS / f"{target_name}-trigrams.npz"


# --------------------------------------------------------------------------------------------- the store
class TrigramStore:
    """{(a, b): (successor ids, scores)}, the top ``TOP_SUCCESSORS`` by score, read-only once built."""

    def __init__(self, table: dict[tuple[int, int], tuple[list[int], list[float]]], meta: dict | None = None):
        self.table = table
        self.meta = meta or {}

    def __len__(self) -> int:
        return len(self.table)

    @classmethod
    def count(cls, sequences, top: int = TOP_SUCCESSORS, meta: dict | None = None) -> TrigramStore:
        """Count the trigrams of token sequences; P(c | a, b) over every successor, then keep the ``top``."""
        counts: dict[tuple[int, int], dict[int, int]] = {}
        for seq in sequences:
            for a, b, c in zip(seq, seq[1:], seq[2:]):
                row = counts.setdefault((a, b), {})
                row[c] = row.get(c, 0) + 1
        table = {}
        for key, row in counts.items():
            total = sum(row.values())
            best = sorted(row.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
            table[key] = ([c for c, _ in best], [n / total for _, n in best])
        return cls(table, meta)

    def save(self, path: str | Path) -> Path:
        """One .npz: keys (K, 2), offsets (K + 1), successors, fp16 probabilities, and the meta as JSON."""
        rows = list(self.table.values())
        keys = np.array(list(self.table), dtype=np.int32).reshape(-1, 2)
        offsets = np.concatenate([[0], np.cumsum([len(ids) for ids, _ in rows])]).astype(np.int64)
        succ = np.array([c for ids, _ in rows for c in ids], dtype=np.int32)
        prob = np.array([p for _, scores in rows for p in scores], dtype=np.float16)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, keys=keys, offsets=offsets, succ=succ, prob=prob,
                            meta=np.array(json.dumps(self.meta)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrigramStore:
        try:
            with np.load(path, allow_pickle=False) as z:
                keys, offsets, succ, prob = z["keys"], z["offsets"], z["succ"], z["prob"].astype(np.float32)
                meta = json.loads(str(z["meta"]))
        except (OSError, KeyError, ValueError) as e:
            raise DraftScopeError(f"{path} is not an ADED trigram store ({e})") from None
        table, off = {}, offsets.tolist()
        succ_l, prob_l = succ.tolist(), prob.tolist()
        for i, (a, b) in enumerate(keys.tolist()):
            table[(a, b)] = (succ_l[off[i]:off[i + 1]], prob_l[off[i]:off[i + 1]])
        return cls(table, meta)


_STORES: dict[str, TrigramStore] = {}
_STORES_LOCK = threading.Lock()


def shared_store(path: Path) -> TrigramStore:
    """A store file loaded once per process (sessions only read it; their boosts live on their drafter)."""
    key = str(path.resolve())
    with _STORES_LOCK:
        if key not in _STORES:
            _STORES[key] = TrigramStore.load(path)
        return _STORES[key]


class AdaptiveStore:
    """A read-only base store plus this run's boosted rows (copied on first write)."""

    def __init__(self, base: TrigramStore | None):
        self.base = base.table if base is not None else {}
        self.rows: dict[tuple[int, int], dict[int, float]] = {}  # boosted keys: successor → score
        self._sorted: dict[tuple[int, int], tuple[list[int], list[float]]] = {}
        self.boosts = 0  # trigram updates so far
        self.added = 0  # trigrams the base store lacked

    def successors(self, a: int, b: int) -> tuple[list[int], list[float]]:
        key = (a, b)
        if key in self._sorted:
            return self._sorted[key]
        return self.base.get(key, ((), ()))

    def boost(self, tokens: list[int], amount: float = BOOST, window: int = BOOST_WINDOW) -> None:
        window = tokens[-window:]
        touched = set()
        for a, b, c in zip(window, window[1:], window[2:]):
            key = (a, b)
            row = self.rows.get(key)
            if row is None:
                ids, scores = self.base.get(key, ((), ()))
                row = self.rows[key] = dict(zip(ids, scores))
            if c not in row:
                self.added += 1
            row[c] = min(BOOST_CAP, row.get(c, 0.0) + amount)
            self.boosts += 1
            touched.add(key)
        for key in touched:
            best = sorted(self.rows[key].items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_SUCCESSORS]
            self._sorted[key] = ([c for c, _ in best], [s for _, s in best])

    def best(self, a: int, b: int) -> int | None:
        ids = self.successors(a, b)[0]
        return ids[0] if ids else None


# --------------------------------------------------------------------------------------------- the search
@dataclass
class Search:
    """The search tree: node 0 is the root state (the last committed bigram); arrays indexed by node."""

    token: list[int]
    prev: list[int]
    parent: list[int]
    depth: list[int]
    prior: list[float]
    visits: list[int]
    value: list[float]  # summed backed-up values (W)
    kids: list[list[int] | None]

    def path(self, node: int) -> list[int]:
        out = []
        while node > 0:
            out.append(node)
            node = self.parent[node]
        return out[::-1]


def mcts(store: AdaptiveStore, a: int, b: int, iterations: int, max_depth: int, rng: random.Random) -> Search:
    s = Search([b], [a], [-1], [0], [1.0], [0], [0.0], [None])

    def expand(node: int) -> bool:
        ids, scores = store.successors(s.prev[node], s.token[node])
        s.kids[node] = []
        for c, score in zip(ids, scores):
            s.kids[node].append(len(s.token))
            s.token.append(c)
            s.prev.append(s.token[node])
            s.parent.append(node)
            s.depth.append(s.depth[node] + 1)
            s.prior.append(score)
            s.visits.append(0)
            s.value.append(0.0)
            s.kids.append(None)
        return bool(s.kids[node])

    for _ in range(iterations):
        node, path, gained = 0, [0], 0.0
        while True:
            if s.kids[node] is None:
                if s.depth[node] < max_depth and expand(node):
                    node = s.kids[node][-1]  # go on from the last child
                    path.append(node)
                    gained += s.prior[node]
                break
            if not s.kids[node]:
                break
            n_parent = s.visits[node]
            explore = (C1 + math.log((n_parent + C2 + 1) / C2)) * math.sqrt(n_parent)
            best, best_score = -1, -math.inf
            for k in s.kids[node]:
                n = s.visits[k]
                if n == 0:
                    best = k
                    break
                score = s.value[k] / n + explore * s.prior[k] / (1 + n)
                if score > best_score:
                    best, best_score = k, score
            node = best
            path.append(node)
            gained += s.prior[node]
        prev, cur, depth = s.prev[node], s.token[node], s.depth[node]
        while depth < ROLLOUT_DEPTH:  # rollout: successors drawn in proportion to their scores
            ids, scores = store.successors(prev, cur)
            if not ids:
                break
            nxt = rng.choices(range(len(ids)), weights=scores)[0]
            gained += scores[nxt]
            prev, cur, depth = cur, ids[nxt], depth + 1
        value = 1.0 + gained
        for n in path:
            s.visits[n] += 1
            s.value[n] += value
    return s


def extract_tree(search: Search, store: AdaptiveStore, budget: int,
                 max_depth: int) -> tuple[list[int], list[int], list[int]]:
    """(tokens, parents, search node or -1 for a greedy extension) of the draft tree: the ``TOP_PATHS`` most visited
    paths, each extended by its best successor, merged while the node budget lasts."""
    ranked = sorted((n for n in range(1, len(search.token)) if search.visits[n] > 0),
                    key=lambda n: (-search.visits[n], n))[:TOP_PATHS]
    tokens: list[int] = []
    parents: list[int] = []
    origin: list[int] = []
    index: dict[tuple[int, ...], int] = {}  # token path → tree node
    for node in ranked:
        steps = [(search.token[n], n) for n in search.path(node)]
        if len(steps) < max_depth:
            ext = store.best(search.prev[node], search.token[node])
            if ext is not None:
                steps.append((ext, -1))
        steps = steps[:max_depth]
        keys = [tuple(t for t, _ in steps[: i + 1]) for i in range(len(steps))]
        missing = sum(k not in index for k in keys)
        if len(tokens) + missing > budget:
            continue
        for key, (tok, origin_node) in zip(keys, steps):
            if key in index and origin[index[key]] < 0 <= origin_node:
                origin[index[key]] = origin_node  # an earlier path's extension that the search also visited
            if key not in index:
                index[key] = len(tokens)
                tokens.append(tok)
                parents.append(index[key[:-1]] if len(key) > 1 else -1)
                origin.append(origin_node)
        if len(tokens) >= budget:
            break
    return tokens, parents, origin


def extract_chain(search: Search, store: AdaptiveStore, gamma: int,
                  min_share: float = 0.0) -> tuple[list[int], list[int]]:
    """(tokens, search node or -1): the most visited child at every depth, then best successors up to γ. With
    ``min_share`` the chain stops at a child holding less than that share of its parent's visits."""
    tokens, origin, node = [], [], 0
    while len(tokens) < gamma and search.kids[node]:
        visited = [k for k in search.kids[node] if search.visits[k] > 0]
        if not visited:
            break
        best = max(visited, key=lambda k: (search.visits[k], -k))
        if min_share and search.visits[best] < min_share * search.visits[node]:
            return tokens, origin
        node = best
        tokens.append(search.token[node])
        origin.append(node)
    prev, cur = search.prev[node], search.token[node]
    while len(tokens) < gamma and not min_share:
        nxt = store.best(prev, cur)
        if nxt is None:
            break
        tokens.append(nxt)
        origin.append(-1)
        prev, cur = cur, nxt
    return tokens, origin


# --------------------------------------------------------------------------------------------- the drafter
class ADEDDrafter(Drafter, BuildsTree):
    name = "aded"

    @dataclass
    class Options(LengthOptions):
        store: Literal["corpus", "empty"] = "corpus"  # start from the shipped trigram store, or from nothing
        store_file: Annotated[str | None, LocalPath] = None  # a trigram store file (None: the shipped one)
        adapt: bool = True  # boost the trigrams of the last 16 tokens before every draft (the online part)
        iterations: Annotated[int, Range(1, 500, 1)] = 150  # MCTS simulations per draft
        min_share: Annotated[float, Range(0.0, 0.95, 0.05)] = 0.0  # chain: stop below this share of the parent's visits
        learn_prompt: bool = False  # add +1.0 per prompt trigram before the first draft (ours; the paper skips it)

        def __post_init__(self):
            if self.store not in ("corpus", "empty"):
                raise DraftScopeError(f"the ADED store must be corpus or empty, got {self.store!r}")
            if not 0.0 <= self.min_share < 1.0:
                raise DraftScopeError(f"ADED's minimum visit share must be in [0, 1), got {self.min_share}")
            if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or \
                    not 1 <= self.iterations <= 500:
                raise DraftScopeError(f"ADED iterations must be in 1..500, got {self.iterations!r}")
            super().__post_init__()

    def __init__(self, target: LoadedModel, options=None, **kw):
        super().__init__(target, options, **kw)
        base = None
        if self.options.store == "corpus":
            source = self.options.store_file
            if isinstance(source, TrigramStore):  # built in memory (tests)
                base = source
            else:
                path = Path(source) if source else default_store(target.name)
                if not path.is_file():
                    raise DraftScopeError(f"no ADED trigram store for '{target.name}' at {path} (build one with "
                                          f"{BUILD_HINT.replace('TARGET', target.name)}, or use store=empty)")
                base = shared_store(path)
                if base.meta.get("tokenizer") not in (None, target.tokenizer_id()):
                    raise DraftScopeError(f"{path} was counted with '{base.meta.get('target')}''s tokenizer, not "
                                          f"'{target.name}''s")
        self.base = base
        self.restart()

    def restart(self) -> None:
        super().restart()
        self.store = AdaptiveStore(self.base)
        self.rng = random.Random(0)

    def prefill(self, tokens: list[int]) -> None:
        if self.options.learn_prompt:
            self._learn_prompt(tokens)

    def _learn_prompt(self, tokens: list[int]) -> None:
        """Every trigram of the prompt counts as one observation (+``PROMPT_BOOST``, as a probability-1 successor)."""
        self.store.boost(tokens, PROMPT_BOOST, len(tokens))

    def _search(self, ctx: DraftContext, depth: int) -> tuple[Search | None, dict]:
        t = time.perf_counter()
        if self.options.adapt:
            self.store.boost(ctx.tokens)
        info = {"boost_ms": round((time.perf_counter() - t) * 1e3, 3), "boosted_keys": len(self.store.rows),
                "boosts": self.store.boosts, "added": self.store.added, "store_keys": len(self.store.base)}
        if len(ctx.tokens) < 2 or depth <= 0:
            return None, info
        a, b = ctx.tokens[-2], ctx.tokens[-1]
        t = time.perf_counter()
        search = mcts(self.store, a, b, self.options.iterations, depth, self.rng)
        info.update(search_ms=round((time.perf_counter() - t) * 1e3, 3), iterations=self.options.iterations,
                    root_successors=len(search.kids[0] or []), search_nodes=len(search.token))
        return search, info

    def propose(self, ctx: DraftContext) -> Draft:
        search, info = self._search(ctx, ctx.gamma)
        if search is None:
            return Draft([], info=info)
        tokens, origin = extract_chain(search, self.store, ctx.gamma, self.options.min_share)
        info["nodes"] = _node_info(search, origin)
        return Draft(tokens, info=info)

    def draft_tree(self, ctx: DraftContext, budget: int, max_depth: int):
        from core.specdec.trees.grow import DraftTree
        from core.specdec.trees.tree import TokenTree
        search, info = self._search(ctx, max_depth)
        if search is None:
            return DraftTree(TokenTree([], []), {}, {}, [], info)
        tokens, parents, origin = extract_tree(search, self.store, budget, max_depth)
        info["nodes"] = _node_info(search, origin)
        info["root_visits"] = search.visits[0]
        return DraftTree(TokenTree(tokens, parents), {}, {}, list(range(len(tokens))), info)

    def tree_end(self, tokens: list[int], path: list[int]) -> None:
        """Nothing to roll back: the store learns from the committed tokens before the next draft."""


def _node_info(search: Search, origin: list[int]) -> list[dict]:
    """Per draft token: the search's visits, mean value and prior (None for a greedy extension past the search)."""
    out = []
    for n in origin:
        if n < 0:
            out.append({"visits": 0, "value": None, "prior": None, "extension": True})
        else:
            v = search.visits[n]
            out.append({"visits": v, "value": round(search.value[n] / v, 4) if v else None,
                        "prior": round(search.prior[n], 4), "extension": False})
    return out
