"""Draft heads on the target's own last hidden state (Medusa, Hydra): what the two share.

The target's forward at position t gives its last hidden state h_t (the final norm's output) and, through its LM
head, the token x_{t+1}. Head k (k = 0..K−1) reads h_t and proposes x_{t+k+2}, so after a round whose last committed
token is x_{t+1} the heads draft up to K tokens without any model call but their own: a small residual MLP each and a
shared copy of the target's LM head (VocabTrim'd: only the rows of the k most frequent target tokens). The engine
hands the drafter h_t after every verification (``ReadsTargetHidden``).

- Medusa (Cai et al., 2024): head k = residual blocks x + SiLU(W x + b) (W zero-initialised) on h_t alone.
- Hydra (Ankner et al., 2024): head k also reads the input embeddings of the tokens before its own on the branch:
  concat(h_t, E(x_{t+1}), …, E(x_{t+k+1})), so its proposals are *sequentially dependent*.

Both grow trees (``TreeDrafting``): depth k of the tree is head k's proposals. For Medusa every node at one depth gets
the same top-k (the heads do not see the branch); for Hydra each expanded node feeds its own branch. The checkpoint
(kind ``draft-heads``) holds the heads and the kept token ids; the target supplies its embedding and LM head.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import torch
from torch import nn
from transformers import DynamicCache

from core import ASSETS_DIR
from core.errors import DraftScopeError
from core.options import LocalPath
from core.runtime import checkpoint
from core.runtime.devices import module_device, plain_deepcopy
from core.runtime.layers import capture_final_hidden, check_layer_slicing, run_layers
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
from core.specdec.vocab_trim import VocabTrimOptions, stored_head, vocab_mask

KIND = "draft-heads"
ARCHS = ("medusa", "hydra")
TRAIN_HINT = "python -m core.train.heads --arch ARCH --target TARGET"


def default_checkpoint(arch: str, target_name: str) -> Path:
    return ASSETS_DIR / "heads" / f"{arch}-{target_name}.safetensors"


# ------------------------------------------------------------------------------------------------ the networks
class ResBlock(nn.Module):
    """Medusa's block: x + SiLU(W x + b), W zero-initialised. With ``d_in`` ≠ d (Hydra's first block) the residual
    path is a learned projection d_in → d; we start it at [I, 0, …] (h_t passes through), so a fresh Hydra head
    is the target's own head on h_t, like a fresh Medusa head (the reference code initialises it at random)."""

    def __init__(self, d: int, d_in: int | None = None):
        super().__init__()
        d_in = d_in or d
        self.linear = nn.Linear(d_in, d)
        nn.init.zeros_(self.linear.weight)
        self.skip = None
        if d_in != d:
            self.skip = nn.Linear(d_in, d, bias=False)
            with torch.no_grad():
                self.skip.weight.zero_()
                self.skip.weight[:, :d] = torch.eye(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x if self.skip is None else self.skip(x)) + nn.functional.silu(self.linear(x))


@dataclass
class HeadsConfig:
    arch: str  # "medusa" | "hydra"
    n_heads: int  # K: head k proposes the token k + 2 ahead of h_t
    n_layers: int = 1  # residual blocks per head
    hidden_size: int = 576  # d, the target's width
    prefix: bool = False  # Hydra++: one decoder layer over the target's hidden states before the heads

    def check(self) -> None:
        if self.arch not in ARCHS:
            raise DraftScopeError(f"unknown head architecture '{self.arch}' (choose from {', '.join(ARCHS)})")
        if not 1 <= self.n_heads <= 16 or not 1 <= self.n_layers <= 8:
            raise DraftScopeError(f"draft heads: 1..16 heads of 1..8 blocks, got {self.n_heads} × {self.n_layers}")
        if self.prefix and self.arch != "hydra":
            raise DraftScopeError("the prefix layer is Hydra++'s: use it with hydra heads")


def prefix_layer(target: LoadedModel) -> nn.Module:
    """Hydra++'s prefix layer: one decoder layer of the target's kind over the target's last hidden states (its own
    KV cache, the target's rotary embedding). It starts as a copy of the target's last layer with its two output
    projections zeroed, i.e. as the identity (g_t = h_t)."""
    check_layer_slicing(target.model)
    layer = plain_deepcopy(target.model.model.layers[-1])  # without a device map's hooks
    layer.self_attn.layer_idx = 0
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    return layer


def prefix_config(target: LoadedModel):
    """A one-layer copy of the target's config whose layer is of the kind of the target's last layer (the one
    Hydra++'s prefix layer and Falcon's block copy): what their caches are built from."""
    config = copy.deepcopy(target.model.config)
    config.num_hidden_layers = 1
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = list(config.layer_types[-1:])
    return config


class DraftHeads(nn.Module):
    """K heads; ``features(k, h_nD, emb_nXD)`` is head k's output (n, d), which the (shared) LM head turns into
    logits. ``emb_nXD`` (Hydra only): the embeddings of x_{t+1} … x_{t+k+1}, (n, k + 1, d).

    Hydra's deeper heads repeat one block instance after the first (its reference code builds the stack by list
    multiplication, which shares the module); we do the same, so a Hydra head of L blocks has 2 distinct ones."""

    def __init__(self, config: HeadsConfig, prefix: nn.Module | None = None):
        super().__init__()
        config.check()
        if config.prefix and prefix is None:
            raise ValueError("Hydra++ heads need their prefix layer (prefix_layer(target))")
        self.config = config
        self.prefix = prefix if config.prefix else None
        d, heads = config.hidden_size, []
        for k in range(config.n_heads):
            if config.arch == "medusa":
                blocks = [ResBlock(d) for _ in range(config.n_layers)]
            else:
                first = ResBlock(d, (k + 2) * d)
                blocks = [first] + ([ResBlock(d)] * (config.n_layers - 1) if config.n_layers > 1 else [])
            heads.append(nn.Sequential(*blocks))
        self.heads = nn.ModuleList(heads)

    @property
    def grounded(self) -> bool:
        return self.config.arch == "hydra"

    def features(self, k: int, h_nD: torch.Tensor, emb_nXD: torch.Tensor | None = None) -> torch.Tensor:
        x = h_nD
        if self.grounded:
            if emb_nXD is None or emb_nXD.shape[1] != k + 1:
                raise ValueError(f"Hydra head {k} reads {k + 1} token embeddings")
            x = torch.cat([h_nD, emb_nXD.flatten(1)], dim=-1)
        return self.heads[k](x)


# ------------------------------------------------------------------------------------------------ checkpoints
def save(path: str | Path, heads: DraftHeads, keep: torch.Tensor, target: LoadedModel, meta: dict) -> Path:
    c = heads.config
    meta = {**meta, "arch": c.arch, "n_heads": c.n_heads, "n_layers": c.n_layers, "hidden_size": c.hidden_size,
            "prefix": c.prefix, "target": target.name, "tokenizer": target.tokenizer_id()}
    state = {f"heads.{k}": v for k, v in heads.state_dict().items()}
    state["keep"] = keep.to(torch.int32)
    return checkpoint.save(path, state, meta, KIND)


def load(path: str | Path, target: LoadedModel, arch: str) -> tuple[DraftHeads, torch.Tensor, dict]:
    """(heads, kept token ids, meta) stored at ``path`` for ``target``; heads of another architecture, target
    tokenizer or width raise ``DraftScopeError``."""
    hint = TRAIN_HINT.replace("ARCH", arch).replace("TARGET", target.name)
    state, meta = checkpoint.load(path, KIND, hint)
    if meta.get("arch") != arch:
        raise DraftScopeError(f"{path} holds {meta.get('arch')} heads, not {arch} heads")
    if meta.get("tokenizer") != target.tokenizer_id() or meta.get("hidden_size") != target.model.config.hidden_size:
        raise DraftScopeError(f"{path} holds draft heads for '{meta.get('target')}', not for '{target.name}' "
                              f"(another vocabulary or width); train heads for it with {hint}")
    config = HeadsConfig(arch, int(meta["n_heads"]), int(meta["n_layers"]), int(meta["hidden_size"]),
                         bool(meta.get("prefix")))
    heads = DraftHeads(config, prefix_layer(target) if config.prefix else None)
    param = next(target.model.parameters())
    device = module_device(target.model.model.norm)  # they read the final norm's states (a device map: its device)
    heads.load_state_dict({k[len("heads."):]: v.float() for k, v in state.items() if k.startswith("heads.")})
    keep = state["keep"].long()
    if keep.numel() and int(keep.max()) >= target.vocab_size:
        raise DraftScopeError(f"{path}: its kept token ids exceed '{target.name}''s vocabulary")
    return heads.to(device=device, dtype=param.dtype).eval(), keep, meta


def shipped_meta(target_name: str) -> dict[str, dict]:
    """arch → the meta of the heads shipped for ``target_name`` (their held-out evaluation under ``val``)."""
    found = {}
    for arch in (*ARCHS, "hydra++"):
        path = default_checkpoint(arch, target_name)
        if path.is_file():
            try:
                found[arch] = checkpoint.read_meta(path, KIND, TRAIN_HINT)
            except DraftScopeError:
                continue
    return found


# ------------------------------------------------------------------------------------------------ static trees
def suggested_paths(rank_acc: list[list[float]], nodes: int) -> list[tuple[int, ...]]:
    """A static tree of ``nodes`` nodes in Medusa's path format, built as Medusa built its trees: starting from the
    root, repeatedly add the node with the largest expected acceptance — the product of the per-head accuracies of
    the ranks along its path (``rank_acc[k][r]``: how often head k's r-th candidate was right, held out) — whose
    parent is already in the tree. The expected accepted length of the tree is the sum over its nodes."""
    value = {(): 1.0}
    chosen: list[tuple[int, ...]] = []
    while len(chosen) < nodes:
        best, best_value = None, 0.0
        for parent in [(), *chosen]:
            k = len(parent)
            if k >= len(rank_acc):
                continue
            for r, acc in enumerate(rank_acc[k]):
                path = (*parent, r)
                if path not in value and value[parent] * acc > best_value:
                    best, best_value = path, value[parent] * acc
        if best is None:
            break
        value[best] = best_value
        chosen.append(best)
    return sorted(chosen, key=lambda p: (len(p), p))


# ------------------------------------------------------------------------------------------------ the drafter
class HeadsDrafter(Drafter, TreeDrafting, ReadsTargetHidden):
    """Shared by ``medusa`` and ``hydra``: drafts up to K tokens per round (a chain: each head's pick) or a tree
    (depth k: head k's top-k under each expanded node), from the h_t the engine handed over."""

    arch: ClassVar[str] = ""

    @dataclass
    class Options(VocabTrimOptions, ConfidenceOptions):
        checkpoint: Annotated[str | None, LocalPath] = None  # trained heads file (None: the shipped ones)

    def __init__(self, target: LoadedModel, options=None, **kw):
        super().__init__(target, options, **kw)
        source = self.options.checkpoint
        if isinstance(source, tuple):  # (heads, kept ids) built in memory (tests, the training script)
            (self.heads, keep), self.meta = source, {"trained": False}
        else:
            self.heads, keep, self.meta = load(source or self.default_path(target.name), target, self.arch)
        if self.heads.config.arch != self.arch:
            raise DraftScopeError(f"the '{self.name}' drafter needs {self.arch} heads, got {self.heads.config.arch}")
        if self.heads.config.hidden_size != target.model.config.hidden_size:
            raise DraftScopeError(f"draft heads of width {self.heads.config.hidden_size} do not fit '{target.name}' "
                                  f"(width {target.model.config.hidden_size})")
        self.head, self.trim = stored_head(target, keep, self.options, float(self.meta.get("coverage", "nan")))
        self.vocab_V = vocab_mask(self.head)
        self.embed = target.model.get_input_embeddings()
        self._h: tuple[int, torch.Tensor] | None = None  # (position, h (1, d)) handed over by the engine
        self._prefix_config = prefix_config(target) if self.heads.prefix is not None else None
        self._prefix_cache: DynamicCache | None = None  # Hydra++: the prefix layer's cache and its length
        self._prefix_len = 0
        self._tree_h: torch.Tensor | None = None

    def default_path(self, target_name: str) -> Path:
        return default_checkpoint(self.arch, target_name)

    @property
    def n_heads(self) -> int:
        return self.heads.config.n_heads

    @property
    def max_tree_depth(self) -> int:
        return self.n_heads

    # ------------------------------------------------------------------------------------------ h_t
    def see_hidden(self, hidden_nD: torch.Tensor, first_position: int) -> None:
        last = first_position + hidden_nD.shape[0] - 1
        if self.heads.prefix is None:
            self._h = (last, hidden_nD[-1:].clone())
            return
        if self._prefix_len < first_position:  # a gap in the prefix layer's input: recompute when drafting
            self._h = None
            return
        self._h = (last, self._run_prefix(hidden_nD, first_position)[-1:])

    def _run_prefix(self, hidden_nD: torch.Tensor, first_position: int) -> torch.Tensor:
        """Hydra++: feed the target's states at ``first_position``.. to the prefix layer (dropping what its cache
        held from there on); its outputs (n, d)."""
        if self._prefix_cache is None or first_position == 0:
            self._prefix_cache, self._prefix_len = DynamicCache(config=self._prefix_config), 0
        if self._prefix_len > first_position:
            self._prefix_cache.crop(first_position - self._prefix_len)
            self._prefix_len = first_position
        out = run_layers(self.target.model, hidden_nD[None], 0, 1, self._prefix_cache, first_position,
                         layers=[self.heads.prefix])
        self._prefix_len += hidden_nD.shape[0]
        return out[0]

    def prefill(self, tokens: list[int]) -> None:
        """Nothing to fill: h_t comes from the target's forwards (a drafter switched in mid-run fetches it once)."""
        if self._h is not None and self._h[0] != len(tokens) - 2:
            self._h = None

    def _hidden(self, ctx: DraftContext) -> torch.Tensor:
        """h (Hydra++: the prefix layer's output) at position len(tokens) − 2. When the engine has not handed it
        over (a drafter switched in mid-run), target forwards recompute it: of the token there in the target's own
        cache, or for Hydra++ of every committed token but the last on a scratch cache (the prefix layer reads them
        all)."""
        position = len(ctx.tokens) - 2
        if self._h is not None and self._h[0] == position:
            return self._h[1]
        kv = ctx.target_kv
        if kv is None or position < 0:
            raise DraftScopeError(f"the '{self.name}' drafter reads the target's hidden state, which this round lacks")
        if self.heads.prefix is not None:
            with capture_final_hidden(self.target.model) as seen:
                self.target.model(torch.tensor([ctx.tokens[:-1]], device=kv.device), logits_to_keep=1)
            self.see_hidden(seen[-1][0], 0)
            return self._h[1]
        kv.sync(ctx.tokens)
        kv.rollback(min(len(kv), position))
        with capture_final_hidden(self.target.model) as seen:
            kv.forward(ctx.tokens[len(kv):position + 1])
        self._h = (position, seen[-1][0, -1:].clone())
        return self._h[1]

    # ------------------------------------------------------------------------------------------ heads
    def _embed(self, tokens_nX: list[list[int]]) -> torch.Tensor:
        ids = torch.tensor(tokens_nX, dtype=torch.long, device=module_device(self.embed))
        return self.embed(ids)

    def _logits(self, k: int, h_1D: torch.Tensor, branches: list[list[int]]) -> torch.Tensor:
        """Head k's logits (n, V) float32 for n branches; a branch is x_{t+1} … x_{t+k+1} (Hydra reads it)."""
        n = len(branches)
        emb = self._embed(branches) if self.heads.grounded else None
        feats = self.heads.features(k, h_1D.expand(n, -1), emb)
        return self.head(feats).float()

    # ------------------------------------------------------------------------------------------ a chain
    def propose(self, ctx: DraftContext) -> Draft:
        h = self._hidden(ctx)
        branch, rows, shows = [ctx.tokens[-1]], [], []
        n = min(ctx.gamma, self.n_heads)
        medusa_logits = None
        if not self.heads.grounded:  # the heads do not see the branch: one LM-head product for all of them
            feats = torch.cat([self.heads.features(k, h) for k in range(n)])
            medusa_logits = self.head(feats).float()
        for k in range(n):
            logits_V = medusa_logits[k] if medusa_logits is not None else self._logits(k, h, [branch])[0]
            token, q_V, show_V = ctx.pick(logits_V)
            if ctx.unsure(show_V):
                break
            branch.append(token)
            rows.append(q_V)
            shows.append(show_V)
        tokens = branch[1:]
        info = {"heads": self.n_heads, "arch": self.arch, "hidden_position": len(ctx.tokens) - 2,
                **({"vocab_trim": self.trim.as_info()} if self.trim is not None else {})}
        return Draft(tokens, stack_or_none(rows), stack_or_none(shows), info, self.vocab_V)

    # ------------------------------------------------------------------------------------------ a tree
    def tree_begin(self, ctx: DraftContext) -> torch.Tensor:
        self._tree_h = self._hidden(ctx)
        self._tree_root = ctx.tokens[-1]
        return self._logits(0, self._tree_h, [[self._tree_root]])[0]

    def tree_expand(self, tree, nodes: list[int]) -> torch.Tensor:
        depths = tree.depths()
        k = depths[nodes[0]] + 1
        if any(depths[n] + 1 != k for n in nodes):
            raise ValueError("draft heads expand one depth at a time")
        if k >= self.n_heads:
            raise DraftScopeError(f"the '{self.name}' drafter has {self.n_heads} heads: a tree can be at most "
                                  f"{self.n_heads} deep")
        if not self.heads.grounded:
            return self._logits(k, self._tree_h, [[self._tree_root]]).expand(len(nodes), -1)
        branches = [[self._tree_root] + [tree.tokens[i] for i in tree.path(n)] for n in nodes]
        return self._logits(k, self._tree_h, branches)

    def tree_end(self, tokens: list[int], path: list[int]) -> None:
        self._tree_h = None

    # ------------------------------------------------------------------------------------------ cost
    @property
    def cost(self) -> float:
        """Bytes read per drafted token relative to the target's: one head's blocks and the (trimmed) LM head."""
        prefix = module_param_bytes(self.heads.prefix) if self.heads.prefix is not None else 0
        blocks = (module_param_bytes(self.heads) - prefix) / self.n_heads  # the prefix layer runs at verification
        return (blocks + module_param_bytes(self.head)) / self.target.param_bytes
