"""Falcon (Gao et al., 2025): a semi-autoregressive drafter on the target's features that drafts k = 2 tokens per
forward, trained with Coupled Sequential Glancing Distillation (``python -m core.train.falcon``).

At position j the drafter reads the target's last hidden state f_j and the embedding of the next token x_{j+1}
(EAGLE's "one step ahead" input), fused to width d, then one decoder layer of the target's kind with a *relaxed
causal mask*: the k positions of a block see each other and everything before. Position j predicts the feature
f_{j+k}, and the target's (VocabTrim'd) LM head turns it into the token x_{j+k+1}. So when a round starts with the
committed tokens x_0 … x_{T−1} (the target's states known up to f_{T−2}), the block of positions T−3, T−2 predicts
x_T and x_{T+1} in one forward; the next block feeds those predicted features with the drafted tokens, and so on.

Differences from the paper, at our scale: the fusion is one linear layer (the paper describes an LSTM; its released
code feeds a 2-layer LSTM in a way that recurs over the batch, not the tokens), and one decoder layer (the paper's
drafter is "equivalent to two Transformer layers"). With one layer the keys/values of a position depend only on its
input, so the committed positions stay in the drafter's cache across rounds whatever block they were fed in; only
the last k positions (and anything drafted) are fed again each round, with the target's real features.

Trees (the paper's custom decoding tree): a forward from a branch gives the candidates of two depths at once; the
first depth's children come from its first row, and every node of that depth gets the same children from the second
row (the block predicted them together), so a new forward — one block per expanded branch, with tree attention — is
needed only every second depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from torch import nn
from transformers import DynamicCache

from core import ASSETS_DIR
from core.errors import DraftScopeError
from core.options import LocalPath
from core.runtime import checkpoint
from core.runtime.devices import input_device, module_device, plain_deepcopy
from core.runtime.layers import FULL, capture_final_hidden, check_layer_slicing, layer_kind, run_layers
from core.runtime.masks import additive
from core.runtime.models import LoadedModel, module_param_bytes
from core.specdec.drafters.base import (
    ConfidenceOptions,
    Draft,
    DraftContext,
    Drafter,
    ReadsTargetHidden,
    TreeDrafting,
    stack_or_none,
)
from core.specdec.drafters.heads import prefix_config
from core.specdec.vocab_trim import VocabTrimOptions, stored_head, vocab_mask

KIND = "falcon"
BLOCK = 2  # k: tokens per drafter forward (the paper's default)
TRAIN_HINT = "python -m core.train.falcon --target TARGET"


def default_checkpoint(target_name: str) -> Path:
    return ASSETS_DIR / "heads" / f"falcon-{target_name}.safetensors"


# ------------------------------------------------------------------------------------------------ the network
class FalconNet(nn.Module):
    """fuse: (f_j, E(x_{j+1})) (2d) → d; then one decoder layer (a copy of the target's last layer whose output
    projections start at zero: the copied layer's own output on these inputs is far off, a 100-nat KL at the start).
    ``forward`` returns the predicted features (n, d) — read them with the target's LM head."""

    def __init__(self, target: LoadedModel):
        super().__init__()
        check_layer_slicing(target.model, sliding_ok=True)
        if layer_kind(target.model.model.layers[-1]) != FULL:
            raise DraftScopeError(f"the Falcon drafter copies the target's last layer, a sliding-window one in "
                                  f"'{target.name}': its block masks need a full-attention layer")
        d = target.model.config.hidden_size
        self.fuse = nn.Linear(2 * d, d)
        with torch.no_grad():  # start by passing f_j through
            self.fuse.weight.zero_()
            self.fuse.weight[:, :d] = torch.eye(d)
            self.fuse.bias.zero_()
        self.layer = plain_deepcopy(target.model.model.layers[-1])  # without a device map's hooks
        self.layer.self_attn.layer_idx = 0
        with torch.no_grad():  # and its output projections zeroed: the layer starts as the identity (f̂ = f_j)
            self.layer.self_attn.o_proj.weight.zero_()
            self.layer.mlp.down_proj.weight.zero_()
        self.block = BLOCK

    def inputs(self, feats_nD: torch.Tensor, emb_nD: torch.Tensor) -> torch.Tensor:
        device = self.fuse.weight.device  # a device map: the features come from the final norm's device
        return self.fuse(torch.cat([feats_nD.to(device), emb_nD.to(device)], dim=-1))

    def run(self, target_model: nn.Module, x_nD: torch.Tensor, cache, positions: torch.Tensor,
            allowed: torch.Tensor) -> torch.Tensor:
        """The decoder layer on fused inputs (n, d) at ``positions`` (n,), ``allowed`` (n, cache + n) bool."""
        mask = additive(allowed, x_nD.dtype)[None, None]
        return run_layers(target_model, x_nD[None], 0, 1, cache, 0, layers=[self.layer], mask=mask,
                          positions=positions[None])[0]


def relaxed_allowed(n: int, block: int = BLOCK, device=None) -> torch.Tensor:
    """(n, n) bool: the relaxed causal mask of training — position i sees j ≤ i and the rest of its block
    (blocks [0, k), [k, 2k), …)."""
    idx = torch.arange(n, device=device)
    return (idx[None, :] <= idx[:, None]) | (idx[None, :] // block == idx[:, None] // block)


def shipped_meta(target_name: str) -> dict:
    """The meta of the Falcon drafter shipped for ``target_name`` (its held-out evaluation under ``val``), or {}."""
    path = default_checkpoint(target_name)
    try:
        return checkpoint.read_meta(path, KIND, TRAIN_HINT) if path.is_file() else {}
    except DraftScopeError:
        return {}


def save(path: str | Path, net: FalconNet, keep: torch.Tensor, target: LoadedModel, meta: dict) -> Path:
    meta = {**meta, "block": net.block, "hidden_size": target.model.config.hidden_size, "target": target.name,
            "tokenizer": target.tokenizer_id()}
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state["keep"] = keep.to(torch.int32)
    return checkpoint.save(path, state, meta, KIND)


def load(path: str | Path, target: LoadedModel) -> tuple[FalconNet, torch.Tensor, dict]:
    hint = TRAIN_HINT.replace("TARGET", target.name)
    state, meta = checkpoint.load(path, KIND, hint)
    if meta.get("tokenizer") != target.tokenizer_id() or meta.get("hidden_size") != target.model.config.hidden_size:
        raise DraftScopeError(f"{path} is a Falcon drafter for '{meta.get('target')}', not for '{target.name}' "
                              f"(another vocabulary or width); train one with {hint}")
    net = FalconNet(target)
    param = next(target.model.parameters())
    net.load_state_dict({k[len("net."):]: v.float() for k, v in state.items() if k.startswith("net.")})
    return net.to(device=input_device(target.model), dtype=param.dtype).eval(), state["keep"].long(), meta


# ------------------------------------------------------------------------------------------------ the drafter
class FalconDrafter(Drafter, TreeDrafting, ReadsTargetHidden):
    name = "falcon"

    @dataclass
    class Options(VocabTrimOptions, ConfidenceOptions):
        checkpoint: Annotated[str | None, LocalPath] = None  # trained Falcon drafter (None: the shipped one)

    def __init__(self, target: LoadedModel, options=None, **kw):
        super().__init__(target, options, **kw)
        source = self.options.checkpoint
        if isinstance(source, tuple):  # (network, kept ids) built in memory (tests, the trainer)
            (self.net, keep), self.meta = source, {"trained": False}
        else:
            self.net, keep, self.meta = load(source or default_checkpoint(target.name), target)
        self.head, self.trim = stored_head(target, keep, self.options, float(self.meta.get("coverage", "nan")))
        self.vocab_V = vocab_mask(self.head)
        self.embed = target.model.get_input_embeddings()
        self._config = prefix_config(target)
        self.cache: DynamicCache | None = None
        self.fed = 0  # committed positions 0 .. fed − 1, fed with the target's real features
        self.real: list[torch.Tensor] = []  # the target's state f_j (d,) of every committed position j ≤ T − 2
        self._tree: dict | None = None

    # ------------------------------------------------------------------------------------------ the target's states
    def see_hidden(self, hidden_nD: torch.Tensor, first_position: int) -> None:
        if first_position > len(self.real):  # a gap: recomputed when drafting
            self.real = []
            return
        del self.real[first_position:]
        self.real.extend(hidden_nD.detach().clone().unbind(0))

    def prefill(self, tokens: list[int]) -> None:
        self.cache, self.fed = None, 0
        del self.real[max(0, len(tokens) - 1):]

    def _states(self, ctx: DraftContext) -> None:
        """Make sure the states of positions 0 … T − 2 are known (a drafter switched in mid-run recomputes them)."""
        need = len(ctx.tokens) - 1
        if len(self.real) >= need:
            del self.real[need:]
            return
        with capture_final_hidden(self.target.model) as seen:
            self.target.model(torch.tensor([ctx.tokens[:-1]], device=self.target.device), logits_to_keep=1)
        self.real = list(seen[-1][0].unbind(0))
        self.cache, self.fed = None, 0

    # ------------------------------------------------------------------------------------------ forwards
    def _embed(self, tokens: list[int]) -> torch.Tensor:
        return self.embed(torch.tensor(tokens, dtype=torch.long, device=module_device(self.embed)))

    def _crop(self, n: int) -> None:
        """Keep the first ``n`` cache entries (drafted blocks included in what is dropped)."""
        size = self._cache_size()
        if size > n:
            self.cache.crop(n - size)
        self.fed = min(self.fed, n)

    def _cache_size(self) -> int:
        return 0 if self.cache is None else self.cache.get_seq_length()

    def _root(self, tokens: list[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Feed the committed positions the cache lacks and the block of the last two (T − 3, T − 2), all with real
        features; the block's predicted features (2, d) and logits (2, V), or None for a prompt too short."""
        T = len(tokens)
        if T < 3:
            return None
        if self.cache is None:
            self.cache, self.fed = DynamicCache(config=self._config), 0
        self._crop(T - 3)  # keep positions ≤ T − 4; the block is fed again with its real features
        lo = self.fed
        feats = torch.stack(self.real[lo:T - 1])
        x = self.net.inputs(feats.to(self.embed.weight.dtype), self._embed(tokens[lo + 1:T]))
        n = T - 1 - lo
        allowed = torch.ones(n, lo + n, dtype=torch.bool).tril(diagonal=lo)
        allowed[-2, -1] = True  # the block's first position sees its partner
        out = self.net.run(self.target.model, x, self.cache, torch.arange(lo, T - 1), allowed)
        self.fed = T - 1
        pred = out[-2:]
        return pred, self.head(pred).float()

    def _blocks(self, pairs: list[tuple[torch.Tensor, int, torch.Tensor, int]], positions: list[int],
                sees: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward of several two-position blocks: block b is (feature, token) × 2 at positions
        (positions[b], positions[b] + 1) and sees the committed prefix plus the cache slots ``sees[b]``; the
        predicted features (2B, d) and logits (2B, V). The blocks' slots are appended to the cache."""
        feats = torch.stack([f for f0, _, f1, _ in pairs for f in (f0, f1)])
        toks = [t for _, t0, _, t1 in pairs for t in (t0, t1)]
        x = self.net.inputs(feats, self._embed(toks))
        past, n = self._cache_size(), 2 * len(pairs)
        allowed = torch.zeros(n, past + n, dtype=torch.bool)
        allowed[:, :self._prefix] = True
        for b, slots in enumerate(sees):
            for row in (2 * b, 2 * b + 1):
                allowed[row, slots] = True
                allowed[row, past + 2 * b: past + 2 * b + 2] = True
        pos = torch.tensor([p + i for p in positions for i in (0, 1)])
        out = self.net.run(self.target.model, x, self.cache, pos, allowed)
        return out, self.head(out).float()

    # ------------------------------------------------------------------------------------------ a chain
    def propose(self, ctx: DraftContext) -> Draft:
        self._states(ctx)
        root = self._root(ctx.tokens)
        self._prefix = self.fed
        tokens, rows, shows, forwards = [], [], [], 0
        if root is not None:
            pred, logits = root
            forwards = 1
            slots: list[int] = []
            position = len(ctx.tokens) - 1
            while True:
                picked = []
                for i in range(2):
                    if len(tokens) >= ctx.gamma:
                        break
                    token, q_V, show_V = ctx.pick(logits[i])
                    if ctx.unsure(show_V):
                        break
                    tokens.append(token)
                    picked.append(token)
                    rows.append(q_V)
                    shows.append(show_V)
                if len(tokens) >= ctx.gamma or len(picked) < 2:
                    break
                past = self._cache_size()
                pred, logits = self._blocks([(pred[0], picked[0], pred[1], picked[1])], [position], [slots])
                slots = [*slots, past, past + 1]
                position += 2
                forwards += 1
            self._crop(self._prefix)  # drop what was drafted: fed again with real features when accepted
        info = {"block": BLOCK, "forwards": forwards, **({"vocab_trim": self.trim.as_info()} if self.trim else {})}
        return Draft(tokens, stack_or_none(rows), stack_or_none(shows), info, self.vocab_V)

    # ------------------------------------------------------------------------------------------ a tree
    def tree_begin(self, ctx: DraftContext) -> torch.Tensor:
        self._states(ctx)
        root = self._root(ctx.tokens)
        if root is None:
            raise DraftScopeError("the Falcon drafter needs at least 3 committed tokens to draft a tree")
        self._prefix = self.fed
        pred, logits = root
        # producer → (features (2, d), logits (2, V), cache slots of its block and its ancestors')
        self._tree = {"T": len(ctx.tokens), "rows": {-1: (pred, logits, [])}}
        return logits[0]

    def tree_expand(self, tree, nodes: list[int]) -> torch.Tensor:
        depths = tree.depths()
        rows = self._tree["rows"]
        depth = depths[nodes[0]]
        if depth % 2 == 0:  # the children were predicted with the node: the second row of its parent's block
            return torch.stack([rows[tree.parents[n]][1][1] for n in nodes])
        pairs, positions, sees = [], [], []
        for n in nodes:  # a new block per node: (parent, node) with the features their producer predicted
            parent = tree.parents[n]
            feats, _, slots = rows[_producer(tree, parent)]
            pairs.append((feats[0], tree.tokens[parent], feats[1], tree.tokens[n]))
            positions.append(self._tree["T"] - 1 + depth - 1)
            sees.append(slots)
        past = self._cache_size()
        out, logits = self._blocks(pairs, positions, sees)
        for b, n in enumerate(nodes):
            slots = [*sees[b], past + 2 * b, past + 2 * b + 1]
            rows[n] = (out[2 * b:2 * b + 2], logits[2 * b:2 * b + 2], slots)
        return logits[0::2]

    def tree_end(self, tokens: list[int], path: list[int]) -> None:
        self._tree = None
        self._crop(self._prefix)

    @property
    def cache_len(self) -> int:
        return self.fed

    @property
    def cost(self) -> float:
        """Bytes read per drafted token relative to the target's: half a forward (two tokens each) plus the head."""
        net = module_param_bytes(self.net) / BLOCK
        return (net + module_param_bytes(self.head)) / self.target.param_bytes


def _producer(tree, node: int) -> int:
    """The node whose block predicted ``node``'s children's parent row: the root block for depths 0 and 1, else the
    ancestor at the odd depth just above."""
    depth = tree.depths()[node] if node >= 0 else -1
    while node >= 0 and depth % 2 == 0:
        node, depth = tree.parents[node], depth - 1
    return node
