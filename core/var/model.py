"""A small class-conditional VAR transformer (next-scale prediction, Tian et al. 2024), written for DraftScope.

Token layout: scale k of the multi-scale VQ tokenizer has ``s_k × s_k`` tokens, flattened row-major, and the scales
are concatenated coarse to fine, so a full sequence has ``seq_len = Σ_k s_k²`` tokens. Token 0 (scale 0, 1×1) is the
start token, the class embedding; the tokens of scale k ≥ 1 are the tokenizer's ``next_scale_input`` map after scales
0..k−1, projected C → width. A block-causal mask lets every token see its own scale and all coarser scales.
Each pre-norm block is conditioned on the class through AdaLN (shift / scale / gate from the class embedding).

Generation runs scale by scale with a per-layer KV cache (a plain list of ``(k, v)`` tensors shaped (B, H, m, d), so
ScaleKV can prune it layer by layer through ``kv_hook``), classifier-free guidance ramped linearly over the scales,
and top-k / top-p sampling with a caller's ``torch.Generator``. ``start_scale`` / ``prefix_idx`` prefill the cache
with scales produced by another model (CoDe's refiner continues a drafter's coarse scales).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import DraftScopeError
from core.runtime import checkpoint
from core.runtime.cache import tensor_bytes
from core.runtime.timing import elapsed
from core.specdec.sampling import SamplingConfig, warp

KIND, TRAIN_COMMAND = "var", "python -m core.train.var large (or small)"  # checkpoint kind, what trains one

KVCache = list  # per layer: (k_BHmd, v_BHmd) or None before the first forward
KVHook = Callable[[list, int], "list | None"]  # (cache, scale k) -> pruned cache (or None to keep it as is)
ScaleCallback = Callable[[int, torch.Tensor, torch.Tensor, float], None]  # (k, idx_Bss, f_hat_BCSS, ms)


# --------------------------------------------------------------------------------------------- configuration
@dataclass
class VARConfig:
    vocab_size: int  # codebook size K of the VQ tokenizer (the output classes of the head)
    embed_dim: int  # channels C of the VQ latent (the width of the next-scale input maps)
    scales: tuple[int, ...]  # side s_k of each scale's square token map, coarse to fine, e.g. (1, 2, 3, 4, 6, 8)
    num_classes: int = 10  # image classes; index num_classes is the "null" class used for classifier-free guidance
    depth: int = 8  # number of transformer blocks
    width: int = 256  # model width D
    heads: int = 8  # attention heads (width must be divisible by heads)
    mlp_ratio: float = 4.0  # hidden width of the MLP relative to the model width
    cond_dropout: float = 0.1  # training-time probability of replacing the class label by the null class

    def __post_init__(self):
        self.scales = tuple(int(s) for s in self.scales)
        if self.width % self.heads:
            raise DraftScopeError(f"width {self.width} is not divisible by heads {self.heads}")
        if not self.scales or any(s < 1 for s in self.scales) or self.scales[0] != 1:
            raise DraftScopeError(f"scales must start at 1 and be positive, got {self.scales}")

    @property
    def seq_len(self) -> int:
        """Total tokens Σ_k s_k² over all scales."""
        return sum(s * s for s in self.scales)

    @classmethod
    def large(cls, vocab_size: int, embed_dim: int, scales: tuple[int, ...], **overrides) -> "VARConfig":
        """The drafter of CoDe: depth 6, width 192, 6 heads (≈4.2 M parameters for K=256, ≈7× the small one)."""
        return cls(vocab_size, embed_dim, tuple(scales), **{"depth": 6, "width": 192, "heads": 6, **overrides})

    @classmethod
    def small(cls, vocab_size: int, embed_dim: int, scales: tuple[int, ...], **overrides) -> "VARConfig":
        """The refiner of CoDe: depth 3, width 96, 4 heads (≈0.56 M parameters for K=256)."""
        return cls(vocab_size, embed_dim, tuple(scales), **{"depth": 3, "width": 96, "heads": 4, **overrides})

    @classmethod
    def preset(cls, size: str, vocab_size: int, embed_dim: int, scales: tuple[int, ...], **overrides) -> "VARConfig":
        """``large`` or ``small`` by name."""
        if size not in ("large", "small"):
            raise DraftScopeError(f"unknown VAR size '{size}'; choose large or small")
        return getattr(cls, size)(vocab_size, embed_dim, scales, **overrides)


# --------------------------------------------------------------------------------------------- helpers
def scale_levels(scales: tuple[int, ...]) -> torch.Tensor:
    """Scale index of every token position: LongTensor (n,)."""
    return torch.repeat_interleave(torch.arange(len(scales)), torch.tensor([s * s for s in scales]))


def block_causal_mask(scales: tuple[int, ...]) -> torch.Tensor:
    """Bool (n, n): ``mask[i, j]`` is True when token i may attend to token j (j's scale ≤ i's scale)."""
    level_n = scale_levels(tuple(scales))
    return level_n[:, None] >= level_n[None, :]


def scale_offsets(scales: tuple[int, ...]) -> list[int]:
    """Start position of each scale in the token sequence, plus the sequence length n at the end: K + 1 ints."""
    out = [0]
    for s in scales:
        out.append(out[-1] + s * s)
    return out


def sample_tokens(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample one index per position from logits (B, l, V) at temperature 1 with top-k / top-p (0 = off): (B, l)."""
    B, l, V = logits_BlV.shape  # noqa: E741 - l is one scale's tokens (the shape legend's letter)
    cfg = SamplingConfig(temperature=1.0, top_k=int(top_k), top_p=float(top_p) if 0.0 < top_p < 1.0 else 1.0)
    probs_nV = warp(logits_BlV.reshape(B * l, V), cfg)
    return torch.multinomial(probs_nV, 1, generator=generator).view(B, l)


def _modulate(x_BnD: torch.Tensor, shift_B1D: torch.Tensor, scale_B1D: torch.Tensor) -> torch.Tensor:
    return x_BnD * (1 + scale_B1D) + shift_B1D


def _flat(map_BCss: torch.Tensor) -> torch.Tensor:
    """(B, C, s, s) → (B, s², C), row-major."""
    return map_BCss.flatten(2).transpose(1, 2)


def attend(q_BHnd: torch.Tensor, k_BHmd: torch.Tensor, v_BHmd: torch.Tensor, mask_nm: torch.Tensor | None,
           scale: float | None, want_probs: bool, override: Callable | None = None) -> tuple[torch.Tensor, ...]:
    """softmax(scale·q·kᵀ)·v (scale None: 1/√d): (out (B, H, n, d), probs (B, H, n, m) in float32 when
    ``want_probs`` else None).

    ``override(q, k, v)`` (DraftAttention's hook) may replace dense attention; it assumes the standard 1/√d softmax
    scale, so under another scale it is handed q multiplied by scale·√d (the same logits)."""
    if override is not None:
        q_in = q_BHnd if scale is None else q_BHnd * (scale * q_BHnd.shape[-1] ** 0.5)
        out_BHnd = override(q_in, k_BHmd, v_BHmd)
        if out_BHnd is not None:
            return out_BHnd, None
    if want_probs:
        scale = q_BHnd.shape[-1] ** -0.5 if scale is None else scale
        scores_BHnm = (q_BHnd.float() @ k_BHmd.float().transpose(-1, -2)) * scale
        if mask_nm is not None:
            scores_BHnm = scores_BHnm.masked_fill(~mask_nm, float("-inf"))
        probs_BHnm = scores_BHnm.softmax(-1)
        return (probs_BHnm @ v_BHmd.float()).to(q_BHnd.dtype), probs_BHnm
    return F.scaled_dot_product_attention(q_BHnd, k_BHmd, v_BHmd, attn_mask=mask_nm, scale=scale), None


# --------------------------------------------------------------------------------------------- layers
class SelfAttention(nn.Module):
    """Multi-head attention that can append its keys/values to a past (k, v) and return the probabilities."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.override: Callable | None = None  # (q, k, v) → out (B, H, n, d), or None for dense attention

    def forward(self, x_BnD: torch.Tensor, mask_nm: torch.Tensor | None, past: tuple | None, want_probs: bool):
        """Returns (out (B, n, D), (k, v) each (B, H, m, d) including the past, probs (B, H, n, m) or None)."""
        B, n, D = x_BnD.shape
        q_BHnd, k_BHmd, v_BHmd = self.qkv(x_BnD).view(B, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if past is not None:
            k_BHmd = torch.cat([past[0], k_BHmd], dim=2)
            v_BHmd = torch.cat([past[1], v_BHmd], dim=2)
        out_BHnd, probs_BHnm = attend(q_BHnd, k_BHmd, v_BHmd, mask_nm, None, want_probs, self.override)
        return self.proj(out_BHnd.transpose(1, 2).reshape(B, n, D)), (k_BHmd, v_BHmd), probs_BHnm


class AdaLNBlock(nn.Module):
    """Pre-norm transformer block whose norms are modulated (shift, scale) and residuals gated by the class."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = round(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))  # → shift1, scale1, gate1, shift2, ...

    def forward(self, x_BnD: torch.Tensor, cond_BD: torch.Tensor, mask_nm: torch.Tensor | None, past: tuple | None,
                want_probs: bool):
        """Returns (x (B, n, D), (k, v) of this layer, attention probs or None)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(cond_BD)[:, None].chunk(6, dim=-1)
        a_BnD, kv, probs = self.attn(_modulate(self.norm1(x_BnD), shift1, scale1), mask_nm, past, want_probs)
        x_BnD = x_BnD + gate1 * a_BnD
        x_BnD = x_BnD + gate2 * self.mlp(_modulate(self.norm2(x_BnD), shift2, scale2))
        return x_BnD, kv, probs


# --------------------------------------------------------------------------------------------- the model
class NextScaleModel(nn.Module):
    """What every next-scale transformer here shares: token bookkeeping, the teacher-forced forward, the KV-cached
    generation loop and its cache accounting. A subclass builds its layers, sets ``config`` (vocab_size, embed_dim,
    scales, num_classes, cond_dropout, depth, width, heads, mlp_ratio, seq_len), ``blocks`` (each
    ``block(h, cond, mask, past, want_probs) → (h, (k, v), probs)``) and ``head``, calls ``_init_state`` and provides
    ``_condition``, ``_start_token``, ``_embed_inputs``, ``_add_positions`` and ``_logits``."""

    config: object
    blocks: nn.ModuleList
    head: nn.Linear
    SAMPLING: ClassVar[dict] = {"top_k": 0, "top_p": 0.0}  # generate's top-k / top-p when not given (0 = off)

    def _init_state(self) -> None:
        """Scale bookkeeping and the state of the last generation (KV cache, its size, attention per scale)."""
        self.scales = tuple(self.config.scales)
        self.offsets = scale_offsets(self.scales)
        self.null_class = self.config.num_classes
        self.kv_cache: KVCache | None = None
        self.last_attention: dict[int, list[torch.Tensor]] = {}
        self.kv_bytes_per_scale: dict[int, int] = {}
        self._kv_bytes = 0

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    # ----------------------------------------------------------------------------------------- subclass hooks
    def _condition(self, cls_B: torch.Tensor) -> torch.Tensor:
        """Class indices (B,) → condition (B, D) (the start token and the AdaLN input)."""
        raise NotImplementedError

    def _start_token(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """The hidden state (B, 1, D) of scale 0's token before positions are added."""
        return cond_BD[:, None]

    def _embed_inputs(self, x_BlC: torch.Tensor) -> torch.Tensor:
        """Next-scale input maps (B, l, C) → (B, l, D)."""
        raise NotImplementedError

    def _add_positions(self, h_BlD: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """h (B, l, D) of token positions lo..hi−1 plus their position and level embeddings."""
        raise NotImplementedError

    def _block_condition(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """What the blocks receive as their condition (the class embedding unless a subclass shares an AdaLN)."""
        return cond_BD

    def _logits(self, h_BlD: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, l, D) → logits (B, l, V)."""
        raise NotImplementedError

    def _sample(self, logits_BlV: torch.Tensor, top_k: int, top_p: float,
                generator: torch.Generator | None) -> torch.Tensor:
        """One index per position (B, l)."""
        return sample_tokens(logits_BlV, top_k, top_p, generator)

    # ----------------------------------------------------------------------------------------- building blocks
    def param_count(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters())

    def _tokens(self, cond_BD: torch.Tensor, x_BlC: torch.Tensor | None, first: int, stop: int) -> torch.Tensor:
        """Hidden states (B, l, D) of the tokens of scales first..stop−1; x_BlC holds the input maps of those scales
        ≥ 1 (flattened, concatenated), the start token of scale 0 being the class embedding."""
        parts = [self._start_token(cond_BD)] if first == 0 else []
        if x_BlC is not None and x_BlC.shape[1]:
            parts.append(self._embed_inputs(x_BlC.to(cond_BD.dtype)))
        h_BlD = torch.cat(parts, dim=1)
        lo, hi = self.offsets[first], self.offsets[stop]
        if h_BlD.shape[1] != hi - lo:
            raise DraftScopeError(f"expected {hi - lo} tokens for scales {first}..{stop - 1}, got {h_BlD.shape[1]}")
        return self._add_positions(h_BlD, lo, hi)

    def _run(self, h_BlD: torch.Tensor, cond_BD: torch.Tensor, mask_nm: torch.Tensor | None, use_cache: bool,
             want_probs: bool = False) -> tuple[torch.Tensor, list]:
        """Blocks + head: logits (B, l, V) and per-layer attention probs (empty unless want_probs). With use_cache the
        new keys/values are appended to ``self.kv_cache`` and attention covers the cached positions."""
        probs = []
        block_cond = self._block_condition(cond_BD)
        for i, block in enumerate(self.blocks):
            past = self.kv_cache[i] if use_cache else None
            h_BlD, kv, p = block(h_BlD, block_cond, mask_nm, past, want_probs)
            if use_cache:
                self.kv_cache[i] = kv
            if want_probs:
                probs.append(p)
        return self._logits(h_BlD, cond_BD), probs

    def _n_scales(self, n_tokens: int) -> int:
        """Number of scales whose tokens add up to n_tokens (must end on a scale boundary)."""
        if n_tokens not in self.offsets[1:]:
            raise DraftScopeError(f"{n_tokens} tokens do not end on a scale boundary of {self.scales}")
        return self.offsets.index(n_tokens)

    # ----------------------------------------------------------------------------------------- training
    def forward(self, cls_B: torch.Tensor, x_BnC: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, n, V) at the n tokens of scales 0..k−1 from input maps x (B, n−1, C) of scales
        1..k−1 (``vq.teacher_inputs``; a prefix of scales also works). In training mode labels are dropped to the null
        class with probability ``cond_dropout``."""
        if self.training and self.config.cond_dropout > 0:
            drop_B = torch.rand(cls_B.shape, device=cls_B.device) < self.config.cond_dropout
            cls_B = torch.where(drop_B, torch.full_like(cls_B, self.null_class), cls_B)
        n = self._n_scales(x_BnC.shape[1] + 1)
        cond_BD = self._condition(cls_B)
        h_BnD = self._tokens(cond_BD, x_BnC, 0, n)
        mask_nn = block_causal_mask(self.scales[:n]).to(h_BnD.device)
        logits_BnV, _ = self._run(h_BnD, cond_BD, mask_nn, use_cache=False)
        return logits_BnV

    # ----------------------------------------------------------------------------------------- generation
    def _check_vq(self, vq) -> None:
        if tuple(vq.scales) != self.scales or vq.vocab_size != self.config.vocab_size or \
                vq.embed_dim != self.config.embed_dim:
            raise DraftScopeError(f"tokenizer (scales {tuple(vq.scales)}, K={vq.vocab_size}, C={vq.embed_dim}) does "
                                  f"not match the VAR (scales {self.scales}, K={self.config.vocab_size}, "
                                  f"C={self.config.embed_dim})")

    def _prefix_length(self, start_scale: int, prefix_idx: list | None) -> int:
        """Number of scales taken from prefix_idx (start_scale, or all of prefix_idx when start_scale is 0)."""
        if prefix_idx is None:
            if start_scale:
                raise DraftScopeError("start_scale > 0 needs prefix_idx (the first scales' indices)")
            return 0
        n = start_scale or len(prefix_idx)
        if not 1 <= n <= min(len(prefix_idx), len(self.scales)):
            raise DraftScopeError(f"start_scale {n} needs 1..{len(self.scales)} scales of prefix_idx "
                                  f"(got {len(prefix_idx)})")
        return n

    def _cache_bytes(self) -> int:
        return sum(tensor_bytes(*kv) for kv in (self.kv_cache or []) if kv is not None)

    def kv_cache_bytes(self) -> int:
        """Bytes of keys/values held by the KV cache at the end of the last generation (0 if uncached)."""
        return self._kv_bytes

    def clear_cache(self) -> None:
        """Drop the last generation's KV cache and attention probabilities."""
        self.kv_cache, self.last_attention, self.kv_bytes_per_scale, self._kv_bytes = None, {}, {}, 0

    @torch.no_grad()
    def generate(self, vq, cls_B: torch.Tensor, cfg: float = 1.5, top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, cache: bool = True, start_scale: int = 0,
                 prefix_idx: list[torch.Tensor] | None = None, on_scale: ScaleCallback | None = None,
                 attention_scores: bool = False, kv_hook: KVHook | None = None,
                 stop_scale: int | None = None) -> list[torch.Tensor]:
        """Sample every scale's indices: a list of K LongTensors (B, s_k, s_k), the prefix scales included.

        cfg: guidance strength, ramped as t = cfg·k/(K−1) at scale k; logits = (1+t)·cond − t·uncond (0 = off).
        top_k / top_p: 0 = off, None = the model's ``SAMPLING`` (what its paper samples with).
        generator: a seeded torch.Generator on the model's device (reproducible draws).
        cache: keep a per-layer KV cache and feed only the new scale's tokens (False: recompute the whole prefix).
        start_scale / prefix_idx: take the first N scales from prefix_idx (another model's output), prefill them in
        one forward and generate scales N..K−1. on_scale(k, idx_k, f_hat, ms) is called after each generated scale.
        attention_scores: keep per-layer attention probabilities (B', H, s_k², T) of each generated scale's queries
        in ``self.last_attention[k]`` (B' = 2B under guidance: conditional rows first).
        kv_hook(cache, k) → cache: called after scale k's keys/values are cached (e.g. ScaleKV pruning).
        stop_scale: generate only scales < stop_scale (CoDe's drafter stops at the hand-over scale); the list is
        then stop_scale long. The guidance ramp still uses the full K.
        """
        self._check_vq(vq)
        top_k = self.SAMPLING["top_k"] if top_k is None else top_k
        top_p = self.SAMPLING["top_p"] if top_p is None else top_p
        K, B = len(self.scales), cls_B.shape[0]
        n_prefix = self._prefix_length(start_scale, prefix_idx)
        stop = K if stop_scale is None else int(stop_scale)
        if not max(n_prefix, 1) <= stop <= K:
            raise DraftScopeError(f"stop_scale must be in {max(n_prefix, 1)}..{K}, got {stop_scale}")
        device = self.device
        guided = cfg != 0
        cls_B = cls_B.to(device=device, dtype=torch.long)
        cls_run = torch.cat([cls_B, torch.full_like(cls_B, self.null_class)]) if guided else cls_B
        cond_BD = self._condition(cls_run)
        double = (lambda t: torch.cat([t, t])) if guided else (lambda t: t)
        self.kv_cache = [None] * len(self.blocks) if cache else None
        self.last_attention, self.kv_bytes_per_scale = {}, {}

        f_hat = torch.zeros(B, vq.embed_dim, vq.latent_side, vq.latent_side, device=device)
        idx_list: list[torch.Tensor] = []
        inputs: list[torch.Tensor] = []  # inputs[k−1] = flattened input map (B', s_k², C) of scale k
        for k in range(n_prefix):
            idx_k = prefix_idx[k].to(device=device, dtype=torch.long)
            f_hat = vq.add_scale(f_hat, idx_k, k)
            idx_list.append(idx_k)
            if k + 1 < K:
                inputs.append(double(_flat(vq.next_scale_input(f_hat, k))))
        if cache and n_prefix:
            x = torch.cat(inputs[:n_prefix - 1], dim=1) if n_prefix > 1 else None
            mask = block_causal_mask(self.scales[:n_prefix]).to(device)
            self._run(self._tokens(cond_BD, x, 0, n_prefix), cond_BD, mask, use_cache=True)

        for k in range(n_prefix, stop):
            t0 = time.perf_counter()
            if cache:
                h = self._tokens(cond_BD, inputs[k - 1] if k else None, k, k + 1)
                logits, probs = self._run(h, cond_BD, None, use_cache=True, want_probs=attention_scores)
            else:
                x = torch.cat(inputs[:k], dim=1) if k else None
                mask = block_causal_mask(self.scales[:k + 1]).to(device)
                logits, probs = self._run(self._tokens(cond_BD, x, 0, k + 1), cond_BD, mask, use_cache=False,
                                          want_probs=attention_scores)
                logits = logits[:, self.offsets[k]:]
                probs = [p[:, :, self.offsets[k]:] for p in probs]
            if guided:
                t = cfg * k / (K - 1) if K > 1 else 0.0
                logits = (1 + t) * logits[:B] - t * logits[B:]
            s = self.scales[k]
            idx_k = self._sample(logits, top_k, top_p, generator).view(B, s, s)
            f_hat = vq.add_scale(f_hat, idx_k, k)
            idx_list.append(idx_k)
            if k + 1 < K:
                inputs.append(double(_flat(vq.next_scale_input(f_hat, k))))
            if attention_scores:
                self.last_attention[k] = probs
            if cache:
                self.kv_bytes_per_scale[k] = self._cache_bytes()
                if kv_hook is not None:
                    self.kv_cache = kv_hook(self.kv_cache, k) or self.kv_cache
            ms = elapsed(t0, device) * 1000
            if on_scale is not None:
                on_scale(k, idx_k, f_hat, ms)
        self._kv_bytes = self._cache_bytes() if cache else 0
        return idx_list


class VAR(NextScaleModel):
    """Class-conditional next-scale prediction transformer."""

    def __init__(self, config: VARConfig):
        super().__init__()
        self.config = config
        D, K = config.width, len(config.scales)

        # 1. token bookkeeping: start offset of each scale and the scale index of each position
        self.register_buffer("level_n", scale_levels(config.scales), persistent=False)

        # 2. embeddings: class (start token + AdaLN condition; last row = null class), input maps, positions, levels
        self.class_embed = nn.Embedding(config.num_classes + 1, D)
        self.input_proj = nn.Linear(config.embed_dim, D)
        self.pos_nD = nn.Parameter(torch.zeros(config.seq_len, D))
        self.level_embed = nn.Embedding(K, D)

        # 3. transformer blocks
        self.blocks = nn.ModuleList(AdaLNBlock(D, config.heads, config.mlp_ratio) for _ in range(config.depth))

        # 4. output head: AdaLN-modulated norm, then width → vocab_size
        self.head_norm = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.head_ada = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))
        self.head = nn.Linear(D, config.vocab_size)

        # 5. initialisation
        self._init_weights()

        # 6. scale bookkeeping and the state of the last generation
        self._init_state()

    def _init_weights(self) -> None:
        """Truncated-normal(0.02) weights, zero biases; residual projections scaled by 1/√(2·depth); gates at 1."""
        std = 0.02
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
        nn.init.trunc_normal_(self.pos_nD, std=std)
        D = self.config.width
        for block in self.blocks:
            block.attn.proj.weight.data.mul_((2 * self.config.depth) ** -0.5)
            block.mlp[2].weight.data.mul_((2 * self.config.depth) ** -0.5)
            block.ada[1].bias.data[2 * D:3 * D] = 1.0  # gate1
            block.ada[1].bias.data[5 * D:6 * D] = 1.0  # gate2

    def _condition(self, cls_B: torch.Tensor) -> torch.Tensor:
        return self.class_embed(cls_B)

    def _embed_inputs(self, x_BlC: torch.Tensor) -> torch.Tensor:
        return self.input_proj(x_BlC)

    def _add_positions(self, h_BlD: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return h_BlD + self.pos_nD[lo:hi] + self.level_embed(self.level_n[lo:hi])

    def _logits(self, h_BlD: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        shift, scale = self.head_ada(cond_BD)[:, None].chunk(2, dim=-1)
        return self.head(_modulate(self.head_norm(h_BlD), shift, scale))

    # ----------------------------------------------------------------------------------------- persistence
    def round_to_fp16(self) -> "VAR":
        """Round every parameter to fp16-representable values in place, so this model and its saved file agree."""
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(p.to(torch.float16).to(p.dtype))
        return self

    def save(self, path: str | Path, meta: dict | None = None) -> Path:
        """Write fp16 weights to a checkpoint whose meta holds ``meta`` and the config."""
        return checkpoint.save(path, self, {**(meta or {}), "config": asdict(self.config)}, KIND)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> tuple["VAR", dict]:
        """Read a file written by ``save``: (model in eval mode, the meta it was saved with)."""
        state, meta = checkpoint.load(path, KIND, TRAIN_COMMAND)
        model = cls(VARConfig(**meta.pop("config")))
        model.load_state_dict(state)
        return model.to(device=device, dtype=dtype).eval(), meta


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[VAR, dict]:
    """Load a saved VAR: (model, meta)."""
    return VAR.load(path, device)
