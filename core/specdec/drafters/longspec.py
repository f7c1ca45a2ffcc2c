"""LongSpec (Yang et al., 2025): a one-block drafter with constant memory that cross-attends to the target's own
last-layer KV cache (``python -m core.train.longspec`` trains it).

The block sits on the frozen target: its input is the target's token embedding (shared, not stored), then
RMSNorm → self-attention over the drafter's own states in a sliding window of ``window`` positions → RMSNorm →
cross-attention (its own q_proj) whose keys/values are the target's last-layer KV cache, read from the engine's
``CachedLM`` as the cache holds them (post-RoPE keys, the target's GQA heads) → RMSNorm → MLP, a residual around each.
Its output goes through the target's frozen final norm into the target's (optionally VocabTrim'd) LM head. Width, heads
and MLP size are the target's (SmolLM2: d = 576, 9 query / 3 KV heads, MLP 1536: ~4.2M parameters).

Final norm: the reference feeds the block's output straight into the LM head (no final norm, [C compute_fused_loss]).
We apply the target's frozen final norm by default, so a drafter trained for minutes on a CPU starts at the scale the
head expects; a checkpoint records which (``final_norm`` in its meta; ``--no-final-norm`` trains the reference's).

The drafter's own cache, a constant-size ring buffer (``RingCache``). In one layer the self-attention keys/values of a
token depend only on its embedding and its position, not on the context, so the ring holds exactly the K/V rows of the
last ``window`` *committed* positions (slot = position mod window): its memory is fixed at construction whatever the
context length. Rollback design: drafted tokens never enter the ring. A round keeps its drafts' rows in a scratch list
of at most γ − 1 rows (``_Round``) that the draft queries see beside the ring; ``observe`` moves the rows of the
accepted drafts into the ring and drops the rest, so a rejection needs no undo. Any other mismatch (a drafter switched
in mid-run, a shorter sequence) refills the ring from the committed tokens: only the last ``window`` positions are
needed, and refilling them is a projection, not a forward over the context.

The lag: between rounds the target's cache holds every committed token but the last, so the query of the last committed
token x_{T−1} sees target KV at positions ≤ T − 2 (lag 1) and the i-th draft's query, lag 1 + i; drafted tokens beyond
the target cache see only the verified KV. Training simulates lags 1..4 (``core.train.longspec``).

Trees (``TreeDrafting``, grown by ``core.specdec.trees.grow``): node i at depth k (roots: depth 0) sits at position
T + k, as the k-th draft of a chain would (T committed tokens; the root's query is x_{T−1} at T − 1, the chain's
first). Each expansion feeds its nodes' rows into a per-round tree scratch (never into the ring) and attends, as the
paper's hybrid tree attention does, to two key sets apart, merged by log-sum-exp (``core.runtime.attention_merge``):
the ring — every committed position in the node's window, no ancestor mask — and the tree scratch with the small
(nodes × fed nodes) ancestor mask (ancestors and itself, within the window). The cross-attention reads the target's
verified cache, as in a chain. So a node's logits are its root-to-node path's logits drafted as a chain.
``tree_end`` moves the rows of the accepted path into the ring and drops the rest.

Verification: by default the target verifies LongSpec's trees with the same split (``tree_attention = "hybrid"``,
``core.specdec.trees.tree``): the cached prefix without a mask, the tree nodes with the ancestor mask, merged by
log-sum-exp; ``"masked"`` uses one (nodes × prefix + nodes) mask.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from core import ASSETS_DIR
from core.errors import DraftScopeError
from core.options import LocalPath, Range
from core.runtime import checkpoint
from core.runtime.attention_merge import split_attention
from core.runtime.devices import input_device, module_device, plain_deepcopy
from core.runtime.layers import check_layer_slicing
from core.runtime.models import LoadedModel, has_sliding_layers, module_param_bytes
from core.specdec.drafters.base import ConfidenceOptions, Draft, DraftContext, Drafter, TreeDrafting, stack_or_none
from core.specdec.drafters.model import fit_vocab
from core.specdec.vocab_trim import VocabTrimOptions, draft_head, vocab_mask

KIND = "longspec"
TRAIN_HINT = "python -m core.train.longspec --target TARGET"
WINDOW = 256  # our default sliding window of the drafter's self-attention (the paper's: 512)


def default_checkpoint(target_name: str) -> Path:
    return ASSETS_DIR / "longspec" / f"{target_name}.safetensors"


# ------------------------------------------------------------------------------------------------ shapes
@dataclass(frozen=True)
class NetShape:
    """The block's sizes, all the target's (the checkpoint's meta holds them)."""

    hidden_size: int  # D
    n_heads: int  # Hq: query heads of both attentions
    n_kv_heads: int  # Hkv: the drafter's own KV heads, as many as the target's (whose KV the cross-attention reads)
    head_dim: int  # d
    intermediate_size: int  # MLP width
    eps: float  # RMSNorm ε
    act: str  # MLP activation
    attention_bias: bool = False
    mlp_bias: bool = False

    @classmethod
    def of(cls, target: LoadedModel) -> NetShape:
        check_target(target)
        c = target.model.config
        heads = c.num_attention_heads
        return cls(c.hidden_size, heads, c.num_key_value_heads, getattr(c, "head_dim", None) or c.hidden_size // heads,
                   c.intermediate_size, float(c.rms_norm_eps), c.hidden_act, bool(getattr(c, "attention_bias", False)),
                   bool(getattr(c, "mlp_bias", False)))


def check_target(target: LoadedModel) -> None:
    """LongSpec reads the target's last-layer KV cache as a llama-style full-attention layer leaves it."""
    if has_sliding_layers(target.model):
        raise DraftScopeError(f"the LongSpec drafter needs a full-attention target (it reads the last layer's whole "
                              f"KV cache); '{target.name}' has sliding-window layers")
    check_layer_slicing(target.model)
    attn = target.model.model.layers[-1].self_attn
    if any(hasattr(attn, name) for name in ("q_norm", "k_norm")):
        raise DraftScopeError(f"the LongSpec drafter supports llama-style attention; '{target.name}' normalises its "
                              "queries and keys")


# ------------------------------------------------------------------------------------------------ the network
def rope(x_BHnd: torch.Tensor, cos_Bnd: torch.Tensor, sin_Bnd: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding as the target applies it (rotate-half convention)."""
    cos, sin = cos_Bnd.unsqueeze(1), sin_Bnd.unsqueeze(1)
    half = x_BHnd.shape[-1] // 2
    rotated = torch.cat((-x_BHnd[..., half:], x_BHnd[..., :half]), dim=-1)
    return x_BHnd * cos + rotated * sin


KeySet = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # keys, values (B, Hkv, m, d), allowed (B, n, m)


def gqa_attention(q_BHnd: torch.Tensor, k_BHmd: torch.Tensor, v_BHmd: torch.Tensor, allowed_Bnm: torch.Tensor,
                  *more: KeySet) -> torch.Tensor:
    """Softmax attention (scale 1/√d) of Hq query heads over Hkv key heads (query head h reads key head h // g),
    only where ``allowed`` (B, n, m); a query with no allowed key gets 0. Computed in float32, without copying keys.
    ``more``: further disjoint key sets, each attended apart and merged by log-sum-exp (the hybrid tree attention)."""
    parts = [(k.float(), v.float(), allowed) for k, v, allowed in ((k_BHmd, v_BHmd, allowed_Bnm), *more)]
    out, _ = split_attention(q_BHnd.float(), parts)
    return out.to(q_BHnd.dtype)


def _heads(x_BnX: torch.Tensor, d: int) -> torch.Tensor:
    B, n, _ = x_BnX.shape
    return x_BnX.view(B, n, -1, d).transpose(1, 2)  # (B, heads, n, d)


def _merge_heads(x_BHnd: torch.Tensor) -> torch.Tensor:
    B, H, n, d = x_BHnd.shape
    return x_BHnd.transpose(1, 2).reshape(B, n, H * d)


class SelfAttention(nn.Module):
    """The drafter's own attention; ``kv`` gives a token's key/value rows (they depend on its input and position
    only), ``forward`` attends over keys given by the caller (the ring, this round's drafts, the new rows)."""

    def __init__(self, s: NetShape):
        super().__init__()
        self.head_dim = s.head_dim
        self.q_proj = nn.Linear(s.hidden_size, s.n_heads * s.head_dim, bias=s.attention_bias)
        self.k_proj = nn.Linear(s.hidden_size, s.n_kv_heads * s.head_dim, bias=s.attention_bias)
        self.v_proj = nn.Linear(s.hidden_size, s.n_kv_heads * s.head_dim, bias=s.attention_bias)
        self.o_proj = nn.Linear(s.n_heads * s.head_dim, s.hidden_size, bias=s.attention_bias)

    def kv(self, h_BnD: torch.Tensor, cos, sin) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys (B, Hkv, n, d) after RoPE, values (B, Hkv, n, d)) of normed inputs."""
        return rope(_heads(self.k_proj(h_BnD), self.head_dim), cos, sin), _heads(self.v_proj(h_BnD), self.head_dim)

    def forward(self, h_BnD, cos, sin, k_BHmd, v_BHmd, allowed_Bnm, tree: KeySet | None = None) -> torch.Tensor:
        """``tree``: a second key set (the tree's rows), attended apart and merged by log-sum-exp."""
        q = rope(_heads(self.q_proj(h_BnD), self.head_dim), cos, sin)
        more = (tree,) if tree is not None else ()
        return self.o_proj(_merge_heads(gqa_attention(q, k_BHmd, v_BHmd, allowed_Bnm, *more)))


class CrossAttention(nn.Module):
    """Queries of the drafter (own q_proj, RoPE at the drafter's positions) over the target's last-layer keys/values
    (post-RoPE, as its cache holds them), then the drafter's o_proj."""

    def __init__(self, s: NetShape):
        super().__init__()
        self.head_dim = s.head_dim
        self.q_proj = nn.Linear(s.hidden_size, s.n_heads * s.head_dim, bias=s.attention_bias)
        self.o_proj = nn.Linear(s.n_heads * s.head_dim, s.hidden_size, bias=s.attention_bias)

    def forward(self, h_BnD, cos, sin, k_BHmd, v_BHmd, allowed_Bnm) -> torch.Tensor:
        q = rope(_heads(self.q_proj(h_BnD), self.head_dim), cos, sin)
        return self.o_proj(_merge_heads(gqa_attention(q, k_BHmd, v_BHmd, allowed_Bnm)))


class MLP(nn.Module):
    def __init__(self, s: NetShape):
        super().__init__()
        self.gate_proj = nn.Linear(s.hidden_size, s.intermediate_size, bias=s.mlp_bias)
        self.up_proj = nn.Linear(s.hidden_size, s.intermediate_size, bias=s.mlp_bias)
        self.down_proj = nn.Linear(s.intermediate_size, s.hidden_size, bias=s.mlp_bias)
        self.act = ACT2FN[s.act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class LongSpecNet(nn.Module):
    """The drafter's one block (own weights only: the target supplies embedding, RoPE, final norm and head).

    ``final_norm``: the output goes through the target's final norm before its head (ours) or straight in (the
    reference's)."""

    def __init__(self, shape: NetShape, final_norm: bool = True):
        super().__init__()
        self.shape, self.final_norm = shape, final_norm
        self.norm_self = LlamaRMSNorm(shape.hidden_size, eps=shape.eps)
        self.self_attn = SelfAttention(shape)
        self.norm_cross = LlamaRMSNorm(shape.hidden_size, eps=shape.eps)
        self.cross_attn = CrossAttention(shape)
        self.norm_mlp = LlamaRMSNorm(shape.hidden_size, eps=shape.eps)
        self.mlp = MLP(shape)

    @classmethod
    def from_target(cls, target: LoadedModel, final_norm: bool = True) -> LongSpecNet:
        """A fresh block for training: its weights copied from the target's last layer (whose q_proj is made for the
        very keys the cross-attention reads, so the cross-attention starts from it too) with the three output
        projections zeroed, so the block starts as the identity (the head reads the token's own embedding)."""
        net = cls(NetShape.of(target), final_norm)
        last = plain_deepcopy(target.model.model.layers[-1])  # its weights, also where a device map offloads them
        with torch.no_grad():
            net.norm_self.load_state_dict(last.input_layernorm.state_dict())
            net.norm_cross.load_state_dict(last.input_layernorm.state_dict())
            net.norm_mlp.load_state_dict(last.post_attention_layernorm.state_dict())
            net.self_attn.load_state_dict(last.self_attn.state_dict())
            net.cross_attn.q_proj.load_state_dict(last.self_attn.q_proj.state_dict())
            net.mlp.load_state_dict(last.mlp.state_dict())
            for proj in (net.self_attn.o_proj, net.cross_attn.o_proj, net.mlp.down_proj):
                proj.weight.zero_()
        param = next(target.model.parameters())
        return net.to(device=input_device(target.model), dtype=param.dtype)

    def own_kv(self, x_BnD: torch.Tensor, cos, sin) -> tuple[torch.Tensor, torch.Tensor]:
        """The self-attention key/value rows of inputs (token embeddings) x at the positions of cos/sin."""
        return self.self_attn.kv(self.norm_self(x_BnD), cos, sin)

    def forward(self, x_BnD, cos, sin, self_k, self_v, self_allowed_Bnm, target_k, target_v,
                cross_allowed_Bnm, tree: KeySet | None = None) -> torch.Tensor:
        """The block on inputs x (B, n, D): self-attention over (self_k, self_v) (B, Hkv, m, d), cross-attention over
        the target's (target_k, target_v) (B, Hkv, m', d), each where its mask allows; the output states (B, n, D).
        ``tree``: more self-attention keys (a draft tree's rows with their ancestor mask), merged by log-sum-exp."""
        x = x_BnD + self.self_attn(self.norm_self(x_BnD), cos, sin, self_k, self_v, self_allowed_Bnm, tree)
        x = x + self.cross_attn(self.norm_cross(x), cos, sin, target_k, target_v, cross_allowed_Bnm)
        return x + self.mlp(self.norm_mlp(x))


def random_outputs(net: LongSpecNet, scale: float = 0.5, seed: int = 0) -> LongSpecNet:
    """Perturb the three output projections at random (an untrained drafter whose output depends on both attentions;
    the tests use it)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for proj in (net.self_attn.o_proj, net.cross_attn.o_proj, net.mlp.down_proj):
            noise = torch.randn(proj.weight.shape, generator=gen) * scale / proj.in_features ** 0.5
            proj.weight.add_(noise.to(proj.weight))
    return net


# ------------------------------------------------------------------------------------------------ checkpoint
def save(path: str | Path, net: LongSpecNet, target: LoadedModel, meta: dict) -> Path:
    meta = {**meta, "target": target.name, "tokenizer": target.tokenizer_id(), **asdict(net.shape),
            "final_norm": net.final_norm}
    return checkpoint.save(path, net.state_dict(), meta, KIND)


def load(path: str | Path, target: LoadedModel) -> tuple[LongSpecNet, dict]:
    """The drafter stored at ``path``, rebuilt on ``target``; a checkpoint for another target (another tokenizer or
    another width) raises ``DraftScopeError``."""
    hint = TRAIN_HINT.replace("TARGET", target.name)
    state, meta = checkpoint.load(path, KIND, hint)
    if meta.get("tokenizer") != target.tokenizer_id() or meta.get("hidden_size") != target.config.hidden_size:
        raise DraftScopeError(f"{path} is a LongSpec drafter for '{meta.get('target')}', not for '{target.name}' "
                              f"(another tokenizer or width); train one with {hint}")
    shape = NetShape.of(target)
    stored = {k: meta.get(k) for k in ("n_heads", "n_kv_heads", "head_dim", "intermediate_size")}
    if stored != {k: getattr(shape, k) for k in stored}:
        raise DraftScopeError(f"{path} is a LongSpec drafter of another shape ({stored}) than '{target.name}''s; "
                              f"train one with {hint}")
    net = LongSpecNet(shape, bool(meta.get("final_norm", True)))
    param = next(target.model.parameters())
    net.load_state_dict({k: v.to(param.dtype) for k, v in state.items()})
    return net.to(input_device(target.model)).eval(), meta


# ------------------------------------------------------------------------------------------------ the ring
class RingCache:
    """The K/V rows of the last ``window`` committed positions, in a buffer allocated once: slot = position mod
    window. Positions ``start`` .. length − 1 were written since the last ``clear``; the last ``window`` of them are
    held."""

    def __init__(self, window: int, n_kv: int, head_dim: int, dtype: torch.dtype, device):
        self.window = window
        self.k_Hkd = torch.zeros(n_kv, window, head_dim, dtype=dtype, device=device)
        self.v_Hkd = torch.zeros_like(self.k_Hkd)
        self.pos_k = torch.full((window,), -1, dtype=torch.long, device=device)  # position held by each slot
        self.tokens_k = [-1] * window  # the token of each slot (to check the ring against the committed tokens)
        self.start = self.length = 0

    @property
    def nbytes(self) -> int:
        return self.k_Hkd.nbytes + self.v_Hkd.nbytes

    @property
    def held(self) -> int:
        return min(self.length - self.start, self.window)

    def clear(self, start: int = 0) -> None:
        """Hold nothing; the next write is position ``start`` (positions before it are outside every later window)."""
        self.pos_k.fill_(-1)
        self.tokens_k = [-1] * self.window
        self.start = self.length = start

    def write(self, tokens: list[int], k_Hnd: torch.Tensor, v_Hnd: torch.Tensor) -> None:
        """Append the rows of ``tokens`` at positions length, length + 1, …; only the last ``window`` are kept."""
        n = len(tokens)
        first = max(0, n - self.window)
        positions = torch.arange(self.length + first, self.length + n, device=self.pos_k.device)
        slots = positions % self.window
        self.k_Hkd[:, slots] = k_Hnd[:, first:].to(self.k_Hkd.dtype)
        self.v_Hkd[:, slots] = v_Hnd[:, first:].to(self.v_Hkd.dtype)
        self.pos_k[slots] = positions
        for p, tok in zip(positions.tolist(), tokens[first:]):
            self.tokens_k[p % self.window] = tok
        self.length += n

    def matches(self, tokens: list[int]) -> bool:
        """The held rows are those of ``tokens`` (the ring is not ahead of them and holds their tokens)."""
        if self.length > len(tokens):
            return False
        return all(self.tokens_k[p % self.window] == tokens[p] for p in range(self.length - self.held, self.length))


@dataclass
class _Round:
    base: int  # committed tokens when the round began (T)
    tokens: list[int] = field(default_factory=list)  # drafts whose K/V rows were computed (fed as queries)
    k: list[torch.Tensor] = field(default_factory=list)  # their rows, (Hkv, 1, d) each
    v: list[torch.Tensor] = field(default_factory=list)


@dataclass
class _TreeRound:
    """A tree round's scratch: the rows of the nodes fed so far (never in the ring), in the order they were fed."""

    base: int  # committed tokens when the round began (T)
    target_k: torch.Tensor | None  # the target's verified last-layer keys (1, Hkv, m, d), read once per round
    target_v: torch.Tensor | None
    column: dict[int, int] = field(default_factory=dict)  # node (growth index) → its row among the fed ones
    tokens: list[int] = field(default_factory=list)  # the fed nodes' tokens
    positions: list[int] = field(default_factory=list)  # and positions (T + depth)
    k: list[torch.Tensor] = field(default_factory=list)  # their rows, (Hkv, n, d) per expansion
    v: list[torch.Tensor] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ the drafter
class LongSpecDrafter(Drafter, TreeDrafting):
    name = "longspec"

    @dataclass
    class Options(VocabTrimOptions, ConfidenceOptions):
        checkpoint: Annotated[str | None, LocalPath] = None  # trained LongSpec drafter file (None: the shipped one)
        window: Annotated[int, Range(16, 1024, 16)] = WINDOW  # sliding window of the drafter's self-attention
        tree_attention: Literal["hybrid", "masked"] = "hybrid"  # target's tree verification: by log-sum-exp, or masked

        def __post_init__(self):
            super().__post_init__()
            if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
                raise DraftScopeError(f"the LongSpec window must be a whole number of at least 1, got {self.window!r}")
            if self.tree_attention not in ("hybrid", "masked"):
                raise DraftScopeError(f"the tree attention must be hybrid or masked, got {self.tree_attention!r}")

    def __init__(self, target: LoadedModel, options=None, **kw):
        super().__init__(target, options, **kw)
        source = self.options.checkpoint
        if isinstance(source, nn.Module):  # a network built in memory (tests, the training script)
            self.net, self.meta = source, {"trained": False}
        else:  # a checkpoint for another target is named as such before the target's own checks
            self.net, self.meta = load(source or default_checkpoint(target.name), target)
        shape = NetShape.of(target)  # checks the target (full attention, llama-style)
        if self.net.shape != shape:
            raise DraftScopeError(f"this LongSpec network was built for another target than '{target.name}'")
        self.net.eval().requires_grad_(False)
        inner = target.model.model
        self.embed, self.rotary = inner.embed_tokens, inner.rotary_emb
        self.final_norm = inner.norm if self.net.final_norm else nn.Identity()
        self.head, self.trim = draft_head(target.model.lm_head, target, self.options)
        self.vocab_V = vocab_mask(self.head)
        param = next(target.model.parameters())
        self.ring = RingCache(self.options.window, shape.n_kv_heads, shape.head_dim, param.dtype,
                              module_device(self.net))
        self._round: _Round | None = None
        self._tree: _TreeRound | None = None
        self.tree_info: dict = {}  # the last tree round's facts for its record (as a chain round's draft info)
        self.last_logits_nV: torch.Tensor | None = None  # the drafter's logits of the last round (float32, inspection)

    # ------------------------------------------------------------------------------------------ pieces
    def _inputs(self, tokens: list[int], position0: int | list[int]):
        """Embeddings (1, n, D) and RoPE (cos, sin) of ``tokens`` at positions position0.. (or at each of a list)."""
        ids = torch.tensor([tokens], dtype=torch.long, device=module_device(self.embed))
        x = self.embed(ids)
        if isinstance(position0, int):
            positions = torch.arange(position0, position0 + len(tokens), device=x.device)[None]
        else:
            positions = torch.tensor([position0], dtype=torch.long, device=x.device)
        cos, sin = self.rotary(x, position_ids=positions)
        return x, cos, sin

    def _window(self, key_pos_m: torch.Tensor, query_pos_n: torch.Tensor) -> torch.Tensor:
        """(n, m) bool: the keys at ``key_pos_m`` (−1: an empty slot) within each query's window (causal)."""
        k, q = key_pos_m[None], query_pos_n[:, None]
        return (k >= 0) & (k <= q) & (k > q - self.ring.window)

    def _cross(self, target_k, target_v, n: int):
        """The cross-attention's keys, values and mask (1, n, m) (no verified key yet: zero keys, output 0)."""
        if target_k is None:
            shape = self.ring.k_Hkd.shape
            target_k = target_v = self.ring.k_Hkd.new_zeros((1, shape[0], 0, shape[-1]))
        return target_k, target_v, torch.ones((1, n, target_k.shape[2]), dtype=torch.bool, device=target_k.device)

    def _head(self, h_BnD: torch.Tensor) -> torch.Tensor:
        """Logits (n, V) of the block's output states, float32, fitted to the target's vocabulary."""
        logits_nV = self.head(self.final_norm(h_BnD))[0].float()
        return torch.stack([fit_vocab(row, self.target.vocab_size) for row in logits_nV])

    def _fill(self, tokens: list[int]) -> None:
        """Write the rows of ``tokens`` (the next committed positions) into the ring."""
        if tokens:
            x, cos, sin = self._inputs(tokens, self.ring.length)
            k, v = self.net.own_kv(x, cos, sin)
            self.ring.write(tokens, k[0], v[0])

    def _sync(self, tokens: list[int]) -> None:
        """Bring the ring up to every committed token; refill it from the last ``window`` of them when it holds rows
        of another sequence."""
        if not self.ring.matches(tokens):
            start = max(0, len(tokens) - self.ring.window)
            self.ring.clear(start)
        self._fill(tokens[self.ring.length:])

    @staticmethod
    def target_cache(target_kv, tokens: list[int]) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
        """The target's last-layer keys and values (1, Hkv, m, d) of its verified positions 0 .. m − 1 that match
        ``tokens`` (a view of its DynamicCache, no copy), and m."""
        cache = getattr(target_kv, "cache", None)
        if cache is None or not cache.layers or not getattr(cache.layers[-1], "is_initialized", False):
            return None, None, 0
        ids = target_kv.ids
        m = min(len(ids), len(tokens) - 1)
        if ids[:m] != tokens[:m]:
            m = next(i for i, (a, b) in enumerate(zip(ids, tokens)) if a != b)
        layer = cache.layers[-1]
        return layer.keys[:, :, :m], layer.values[:, :, :m], m

    def _logits(self, token: int, position: int, round_: _Round, target_k, target_v) -> torch.Tensor:
        """The block on one token at ``position`` (its row already in the ring or the round's scratch): logits (V,)."""
        x, cos, sin = self._inputs([token], position)
        keys_k = [self.ring.k_Hkd] + round_.k
        keys_v = [self.ring.v_Hkd] + round_.v
        pos = torch.cat([self.ring.pos_k, torch.arange(round_.base, round_.base + len(round_.k),
                                                       device=self.ring.pos_k.device)])
        self_allowed = self._window(pos, torch.tensor([position], device=pos.device))[None]
        k = torch.cat(keys_k, dim=1)[None]
        v = torch.cat(keys_v, dim=1)[None]
        h = self.net(x, cos, sin, k, v, self_allowed, *self._cross(target_k, target_v, 1))
        return self._head(h)[-1]

    def _extend(self, round_: _Round, token: int, position: int, target_k, target_v) -> torch.Tensor:
        """A chain draft at ``position``: its row into the round's scratch, then the block on it; logits (V,)."""
        x, cos, sin = self._inputs([token], position)
        k, v = self.net.own_kv(x, cos, sin)
        round_.tokens.append(token)
        round_.k.append(k[0])
        round_.v.append(v[0])
        return self._logits(token, position, round_, target_k, target_v)

    # ------------------------------------------------------------------------------------------ the protocol
    @torch.inference_mode()
    def prefill(self, tokens: list[int]) -> None:
        """Fill the ring with the rows of the prompt but its last token (only the last ``window`` positions)."""
        self._round = self._tree = None
        self.ring.clear(max(0, len(tokens) - 1 - self.ring.window))
        self._fill(tokens[self.ring.length:len(tokens) - 1])

    def _begin(self, ctx: DraftContext) -> tuple[torch.Tensor | None, torch.Tensor | None, int, int]:
        """A round's start, chain or tree: the target's verified K/V (and how many positions), the ring brought up to
        the committed tokens, and T, their count."""
        if ctx.target_kv is None:
            raise DraftScopeError("the LongSpec drafter cross-attends to the target's KV cache and needs the "
                                  "engine's target_kv")
        target_k, target_v, m = self.target_cache(ctx.target_kv, ctx.tokens)
        self._sync(ctx.tokens)
        return target_k, target_v, m, len(ctx.tokens)

    def _info(self, m: int) -> dict:
        """A round's facts for its record (chain or tree): the ring's bytes and fill, the target positions read."""
        info = {"drafter_cache_bytes": self.memory_bytes, "target_cache_read": m, "window": self.ring.window,
                "ring_tokens": self.ring.held}
        if self.trim is not None:
            info["vocab_trim"] = self.trim.as_info()
        return info

    @torch.inference_mode()
    def propose(self, ctx: DraftContext) -> Draft:
        target_k, target_v, m, T = self._begin(ctx)
        round_ = self._round = _Round(base=T)
        logits_V = self._logits(ctx.tokens[-1], T - 1, round_, target_k, target_v)
        tokens, rows, shows, raw = [], [], [], [logits_V]
        for i in range(ctx.gamma):
            token, q_V, show_V = ctx.pick(logits_V)
            if ctx.unsure(show_V):
                break
            tokens.append(token)
            rows.append(q_V)
            shows.append(show_V)
            if i == ctx.gamma - 1:
                break  # the last draft's row is never read this round
            logits_V = self._extend(round_, token, T + i, target_k, target_v)
            raw.append(logits_V)
        self.last_logits_nV = torch.stack(raw)
        return Draft(tokens, stack_or_none(rows), stack_or_none(shows), self._info(m), self.vocab_V)

    @torch.inference_mode()
    def observe(self, tokens: list[int], n_accepted: int) -> None:
        """Move the rows of the accepted drafts into the ring and drop the rest (the rejected ones never entered it)."""
        round_, self._round = self._round, None
        if round_ is None or self.ring.length != round_.base or not self.ring.matches(tokens):
            return  # the next round's sync rebuilds what is needed
        keep = 0
        while (keep < min(n_accepted, len(round_.tokens)) and round_.base + keep < len(tokens)
               and tokens[round_.base + keep] == round_.tokens[keep]):
            keep += 1
        if keep:
            self.ring.write(round_.tokens[:keep], torch.cat(round_.k[:keep], dim=1), torch.cat(round_.v[:keep], dim=1))

    # ------------------------------------------------------------------------------------------ trees
    @torch.inference_mode()
    def tree_begin(self, ctx: DraftContext) -> torch.Tensor:
        """The logits (V,) after the committed tokens (the query of x_{T−1}, as a chain's first); opens the round's
        tree scratch."""
        target_k, target_v, m, T = self._begin(ctx)
        self._round = None
        self._tree = _TreeRound(T, target_k, target_v)
        self.tree_info = self._info(m)
        return self._logits(ctx.tokens[-1], T - 1, _Round(base=T), target_k, target_v)

    @torch.inference_mode()
    def tree_expand(self, tree, nodes: list[int]) -> torch.Tensor:
        """Feed ``nodes`` (each at position T + its depth) into the tree scratch; their logits (n, V). Self-attention
        over two key sets merged by log-sum-exp: the ring (each node's window, no ancestor mask) and the fed nodes
        (ancestors and itself, within the window)."""
        state = self._tree
        depths = tree.depths()
        positions = [state.base + depths[i] for i in nodes]
        tokens = [tree.tokens[i] for i in nodes]
        x, cos, sin = self._inputs(tokens, positions)
        k, v = self.net.own_kv(x, cos, sin)
        for node in nodes:
            state.column[node] = len(state.column)
        state.tokens += tokens
        state.positions += positions
        state.k.append(k[0])
        state.v.append(v[0])

        device = self.ring.pos_k.device
        query_pos_n = torch.tensor(positions, device=device)
        ancestors_nF = torch.zeros(len(nodes), len(state.column), dtype=torch.bool)
        for j, node in enumerate(nodes):
            ancestors_nF[j, [state.column[a] for a in tree.path(node)]] = True
        tree_allowed = ancestors_nF.to(device) & self._window(torch.tensor(state.positions, device=device),
                                                              query_pos_n)
        tree_keys = (torch.cat(state.k, dim=1)[None], torch.cat(state.v, dim=1)[None], tree_allowed[None])
        ring_allowed = self._window(self.ring.pos_k, query_pos_n)[None]
        h = self.net(x, cos, sin, self.ring.k_Hkd[None], self.ring.v_Hkd[None], ring_allowed,
                     *self._cross(state.target_k, state.target_v, len(nodes)), tree=tree_keys)
        return self._head(h)

    @torch.inference_mode()
    def tree_end(self, tokens: list[int], path: list[int]) -> None:
        """Move the rows of the accepted path's fed nodes into the ring (they sit at their committed positions) and
        drop the rest of the tree."""
        state, self._tree = self._tree, None
        if state is None or self.ring.length != state.base or not self.ring.matches(tokens):
            return  # the next round's sync rebuilds what is needed
        rows = []
        for i, node in enumerate(path):
            row = state.column.get(node)
            if row is None or state.base + i >= len(tokens) or tokens[state.base + i] != state.tokens[row]:
                break
            rows.append(row)
        if rows:
            k, v = torch.cat(state.k, dim=1), torch.cat(state.v, dim=1)
            self.ring.write([state.tokens[r] for r in rows], k[:, rows], v[:, rows])

    @property
    def tree_attention(self) -> str:
        """How the target verifies this drafter's trees (``core.specdec.trees.tree.TreeCache``)."""
        return self.options.tree_attention

    def restart(self) -> None:
        super().restart()
        self._round = self._tree = None

    @property
    def memory_bytes(self) -> int:
        """Bytes of the drafter's own cache: the ring's K/V, fixed by the window (the context length does not enter)."""
        return self.ring.nbytes

    @property
    def cache_len(self) -> int:
        return self.ring.held

    @property
    def cost(self) -> float:
        """Parameter bytes read per drafted token relative to the target's: the block and the head (the embedding is a
        one-row gather; the final norm is negligible)."""
        return (module_param_bytes(self.net) + module_param_bytes(self.head)) / self.target.param_bytes
