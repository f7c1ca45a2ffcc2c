"""The official VAR transformers (VAR-d16 … d30, Tian et al. 2024) rebuilt with the official state-dict layout.

Names and shapes follow FoundationVision/VAR's ``VAR`` so ``var_d{16,20,24,30}.pth`` load strictly: ``word_embed``
(C → D), ``class_emb`` (1000 classes + the null class), ``pos_start`` (1, 1, D), ``pos_1LC`` (1, 680, D),
``lvl_embed`` (10 × D), the buffers ``lvl_1L`` and ``attn_bias_for_masking`` (1, 1, 680, 680), ``blocks.{i}`` and the
AdaLN head ``head_nm`` + ``head`` (D → 4096). ``build_vae_var`` sets width D = 64·depth and heads = depth (head size
64); ``shared_aln`` (one AdaLN projection for all blocks plus a learned per-block offset ``ada_gss``) is only used by
d36 and off for d16–d30.

Each block: LayerNorm without affine; from the class embedding c, ``ada_lin`` = SiLU → Linear(D, 6D) gives
(γ1, γ2, scale1, scale2, shift1, shift2); x += γ1·attn(LN(x)·(1 + scale1) + shift1); x += γ2·ffn(LN(x)·(1 + scale2) +
shift2) with a tanh-GELU MLP of ratio 4. Attention is cosine attention: q and k are L2-normalised per head, q is
multiplied by a learned per-head exp(min(``scale_mul_1H11``, ln 100)), and the softmax scale is 1; the qkv
projection has no bias of its own but a learned ``q_bias`` and ``v_bias`` with a zero k bias. The head is
LN(x)·(1 + scale) + shift from SiLU → Linear(D, 2D) of c, then Linear(D, V), in float32.

Generation is ``NextScaleModel.generate`` (the same loop, KV cache list, ScaleKV hook, CoDe prefill and attention
capture as our own small VAR), with the official token sampling (``sample_like_var``): top-k, then top-p on what is
left, then one ``torch.multinomial`` draw per position with replacement, from the caller's generator — so with the
same seed the draws line up with the official ``autoregressive_infer_cfg``. The guidance ramp t = cfg·k/(K−1) is the
same as ours. Not reproduced: the Gumbel ``more_smooth`` option (off by default and for FID), drop-path and the
flash/xformers kernels (the same math through PyTorch's attention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import DraftScopeError
from core.var.model import NextScaleModel, _modulate, attend
from core.var.official_vq import PATCH_NUMS

DEPTHS = (16, 20, 24, 30)  # the released 256-px transformers (d36 is 512 px)
NORM_EPS = 1e-6


@dataclass
class OfficialVARConfig:
    depth: int = 16  # transformer blocks (the released 16, 20, 24, 30)
    width: int = 0  # model width D; 0 = 64·depth, as ``build_vae_var``
    heads: int = 0  # attention heads; 0 = depth (head size 64)
    vocab_size: int = 4096  # codebook size K of the tokenizer (the head's outputs)
    embed_dim: int = 32  # tokenizer latent width C (``Cvae``)
    scales: tuple[int, ...] = PATCH_NUMS  # token-map sides, coarse to fine
    num_classes: int = 1000  # ImageNet classes; index num_classes is the null class of classifier-free guidance
    mlp_ratio: float = 4.0  # MLP hidden width / D
    shared_aln: bool = False  # one shared AdaLN projection + per-block ``ada_gss`` (d36 only)
    attn_l2_norm: bool = True  # cosine attention with a learned per-head scale (all released models)
    cond_dropout: float = 0.1  # training-time probability of the null class (teacher-forced forward only)

    def __post_init__(self) -> None:
        self.scales = tuple(int(s) for s in self.scales)
        self.width = self.width or 64 * self.depth
        self.heads = self.heads or self.depth
        if self.width % self.heads:
            raise DraftScopeError(f"width {self.width} is not divisible by heads {self.heads}")
        if not self.scales or self.scales[0] != 1:
            raise DraftScopeError(f"scales must start at 1, got {self.scales}")

    @property
    def seq_len(self) -> int:
        """L = Σ_k s_k² (680 for the official 10 scales)."""
        return sum(s * s for s in self.scales)


def sample_like_var(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """The official sampling rule: (B, l, V) logits → (B, l) indices. top_k > 0 keeps logits ≥ the k-th largest;
    top_p > 0 then drops the least likely tokens whose cumulative probability (ascending) is ≤ 1 − top_p, never the
    most likely; one multinomial draw with replacement per position."""
    B, l, V = logits_BlV.shape  # noqa: E741 - l is one scale's tokens (the shape legend's letter)
    logits_BlV = logits_BlV.float()
    if top_k > 0:
        kth_Bl1 = logits_BlV.topk(min(top_k, V), dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
        logits_BlV = logits_BlV.masked_fill(logits_BlV < kth_Bl1, float("-inf"))
    if top_p > 0:
        sorted_BlV, order_BlV = logits_BlV.sort(dim=-1, descending=False)
        drop_sorted = sorted_BlV.softmax(-1).cumsum(-1) <= (1 - top_p)
        drop_sorted[..., -1:] = False
        logits_BlV = logits_BlV.masked_fill(drop_sorted.scatter(-1, order_BlV, drop_sorted), float("-inf"))
    probs_nV = logits_BlV.softmax(-1).view(-1, V)
    return torch.multinomial(probs_nV, 1, replacement=True, generator=generator).view(B, l)


# --------------------------------------------------------------------------------------------- layers
class CosineAttention(nn.Module):
    """Attention of the official blocks (see the module docstring); ``override`` is DraftAttention's hook."""

    def __init__(self, width: int, heads: int, l2_norm: bool = True):
        super().__init__()
        self.heads, self.head_dim, self.l2_norm = heads, width // heads, l2_norm
        if l2_norm:
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, heads, 1, 1), 4.0).log())
        self.scale = 1.0 if l2_norm else 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(width)), nn.Parameter(torch.zeros(width))
        self.register_buffer("zero_k_bias", torch.zeros(width))
        self.proj = nn.Linear(width, width)
        self.override = None  # (q, k, v) → out (B, H, n, d), or None for dense attention

    def forward(self, x_BnD: torch.Tensor, mask_nm: torch.Tensor | None, past: tuple | None, want_probs: bool):
        """Returns (out (B, n, D), (k, v) each (B, H, m, d) including the past (k normalised), probs or None)."""
        B, n, D = x_BnD.shape
        bias = torch.cat([self.q_bias, self.zero_k_bias, self.v_bias])
        qkv = F.linear(x_BnD, self.mat_qkv.weight, bias).view(B, n, 3, self.heads, self.head_dim)
        q_BHnd, k_BHmd, v_BHmd = qkv.permute(2, 0, 3, 1, 4)
        if self.l2_norm:
            gain_1H11 = self.scale_mul_1H11.clamp_max(math.log(100)).exp()
            q_BHnd, k_BHmd = F.normalize(q_BHnd, dim=-1) * gain_1H11, F.normalize(k_BHmd, dim=-1)
        if past is not None:
            k_BHmd, v_BHmd = torch.cat([past[0], k_BHmd], dim=2), torch.cat([past[1], v_BHmd], dim=2)
        out_BHnd, probs = attend(q_BHnd, k_BHmd, v_BHmd, mask_nm, self.scale, want_probs, self.override)
        return self.proj(out_BHnd.transpose(1, 2).reshape(B, n, D)), (k_BHmd, v_BHmd), probs


class FFN(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class OfficialBlock(nn.Module):
    """AdaLN self-attention block with the official names (``attn``, ``ffn``, ``ada_lin`` or ``ada_gss``)."""

    def __init__(self, cfg: OfficialVARConfig):
        super().__init__()
        D = cfg.width
        self.attn = CosineAttention(D, cfg.heads, cfg.attn_l2_norm)
        self.ffn = FFN(D, round(D * cfg.mlp_ratio))
        self.ln_wo_grad = nn.LayerNorm(D, eps=NORM_EPS, elementwise_affine=False)
        self.shared_aln = cfg.shared_aln
        if cfg.shared_aln:
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, D) / D ** 0.5)
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))

    def forward(self, x_BnD: torch.Tensor, cond: torch.Tensor, mask_nm: torch.Tensor | None, past: tuple | None,
                want_probs: bool):
        """cond: the class embedding (B, D), or with shared_aln the shared projection (B, 1, 6, D)."""
        mod_B16D = self.ada_gss + cond if self.shared_aln else self.ada_lin(cond).view(-1, 1, 6, x_BnD.shape[-1])
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mod_B16D.unbind(2)
        a_BnD, kv, probs = self.attn(_modulate(self.ln_wo_grad(x_BnD), shift1, scale1), mask_nm, past, want_probs)
        x_BnD = x_BnD + a_BnD * gamma1
        x_BnD = x_BnD + self.ffn(_modulate(self.ln_wo_grad(x_BnD), shift2, scale2)) * gamma2
        return x_BnD, kv, probs


class AdaLNHead(nn.Module):
    """``head_nm``: LN(x)·(1 + scale) + shift with (scale, shift) from SiLU → Linear(D, 2D) of the class embedding."""

    def __init__(self, width: int):
        super().__init__()
        self.ln_wo_grad = nn.LayerNorm(width, eps=NORM_EPS, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x_BlD: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, x_BlD.shape[-1]).unbind(2)
        return _modulate(self.ln_wo_grad(x_BlD), shift, scale)


class SharedAdaLin(nn.Linear):
    """d36's shared AdaLN projection: (B, D) → (B, 1, 6, D)."""

    def forward(self, cond_BD: torch.Tensor) -> torch.Tensor:
        return super().forward(cond_BD).view(-1, 1, 6, self.weight.shape[0] // 6)


# --------------------------------------------------------------------------------------------- the model
class OfficialVAR(NextScaleModel):
    """A class-conditional VAR whose ``state_dict`` is the official one (keys and shapes)."""

    SAMPLING: ClassVar[dict] = {"top_k": 900, "top_p": 0.96}  # the official demo's and the paper's FID sampling

    def __init__(self, config: OfficialVARConfig):
        super().__init__()
        self.config = config
        D, L, K = config.width, config.seq_len, len(config.scales)

        # 1. input (word) embedding of the next-scale maps
        self.word_embed = nn.Linear(config.embed_dim, D)

        # 2. class embedding (start token and AdaLN condition; last row = null class) and the start token's position
        self.class_emb = nn.Embedding(config.num_classes + 1, D)
        self.pos_start = nn.Parameter(torch.zeros(1, 1, D))

        # 3. absolute positions of all L tokens and the level (scale) embedding
        self.pos_1LC = nn.Parameter(torch.zeros(1, L, D))
        self.lvl_embed = nn.Embedding(K, D)

        # 4. blocks (with d36's shared AdaLN projection)
        if config.shared_aln:
            self.shared_ada_lin = nn.Sequential(nn.SiLU(), SharedAdaLin(D, 6 * D))
        self.blocks = nn.ModuleList(OfficialBlock(config) for _ in range(config.depth))

        # 5. buffers the official checkpoints carry: level of each position, the block-causal training mask
        level_n = torch.tensor([k for k, s in enumerate(config.scales) for _ in range(s * s)])  # (L,)
        self.register_buffer("lvl_1L", level_n[None])
        mask_LL = level_n[:, None] >= level_n[None, :]
        bias_11LL = torch.zeros(L, L).masked_fill(~mask_LL, float("-inf"))[None, None]  # 0 where allowed, else −∞
        self.register_buffer("attn_bias_for_masking", bias_11LL)

        # 6. head
        self.head_nm = AdaLNHead(D)
        self.head = nn.Linear(D, config.vocab_size)

        self._init_weights()
        self._init_state()

    def _init_weights(self) -> None:
        """Random weights for tests (the official automated std √(1/3D)); real use loads a checkpoint."""
        std = (1 / self.config.width / 3) ** 0.5
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        for p in (self.pos_start, self.pos_1LC):
            nn.init.trunc_normal_(p, std=std)

    def _condition(self, cls_B: torch.Tensor) -> torch.Tensor:
        return self.class_emb(cls_B)

    def _start_token(self, cond_BD: torch.Tensor) -> torch.Tensor:
        return cond_BD[:, None] + self.pos_start

    def _embed_inputs(self, x_BlC: torch.Tensor) -> torch.Tensor:
        return self.word_embed(x_BlC)

    def _add_positions(self, h_BlD: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return h_BlD + (self.lvl_embed(self.lvl_1L[0, lo:hi]) + self.pos_1LC[0, lo:hi])

    def _block_condition(self, cond_BD: torch.Tensor) -> torch.Tensor:
        return self.shared_ada_lin(cond_BD) if self.config.shared_aln else cond_BD

    def _logits(self, h_BlD: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_nm(h_BlD, cond_BD)).float()

    def _sample(self, logits_BlV: torch.Tensor, top_k: int, top_p: float,
                generator: torch.Generator | None) -> torch.Tensor:
        return sample_like_var(logits_BlV, top_k, top_p, generator)
