"""The official VAR tokenizer (``vae_ch160v4096z32.pth``, Tian et al. 2024) rebuilt with the official state-dict layout.

The layers are named and shaped exactly as FoundationVision/VAR's ``VQVAE``, so the released file loads strictly:
``encoder.*`` / ``decoder.*`` (the latent-diffusion VQ-f16 conv stacks: GroupNorm(32) + SiLU residual blocks,
self-attention at the lowest resolution and in the middle, ch 160, ch_mult (1, 1, 2, 2, 4), two residual blocks per
level), ``quant_conv`` / ``post_quant_conv`` (3×3, C → C), and ``quantize.*``: the shared codebook
``quantize.embedding`` (4096 × 32), four partially shared φ convs ``quantize.quant_resi.qresi_ls.{0..3}`` and the
training statistic ``quantize.ema_vocab_hit_SV`` (scales × K, unused here).

The quantisation itself is ``ScaleTokenizer``'s (area-downsampled residual, nearest code by squared L2, bicubic
upsampling, φ, accumulate), so the transformer-facing methods (``add_scale``, ``next_scale_input``, ``decode_indices``,
``encode_indices`` …) are the same code for both tokenizers. What is official-specific: φ is chosen per scale from
four shared convs by the scale's position k/(K−1) against fixed ticks (``phi_index``), the encoder output passes
``quant_conv`` and the decoder input ``post_quant_conv``, and images are clamped to [-1, 1] (no tanh).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import DraftScopeError
from core.var.vqvae import ScaleTokenizer

PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # the official 10 scales at 256 px (680 tokens)


@dataclass
class OfficialVQConfig:
    vocab_size: int = 4096  # K: codebook entries, shared by all scales
    embed_dim: int = 32  # C (the official ``Cvae`` / ``z_channels``): codebook and latent width
    ch: int = 160  # base conv width of encoder and decoder
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # width multiplier per resolution; downsampling = 2^(levels − 1)
    num_res_blocks: int = 2  # residual blocks per encoder level (the decoder has one more)
    using_sa: bool = True  # self-attention after each block of the lowest-resolution level
    using_mid_sa: bool = True  # self-attention between the two middle blocks
    share_quant_resi: int = 4  # φ convs shared across the scales (the official 4: ``PhiPartiallyShared``)
    quant_resi: float = 0.5  # φ(h) = (1 − quant_resi)·h + quant_resi·conv3×3(h)
    beta: float = 0.25  # commitment-loss weight (training only)
    scales: tuple[int, ...] = PATCH_NUMS  # token-map sides, coarse to fine; the last is the latent side

    def __post_init__(self) -> None:
        self.ch_mult, self.scales = tuple(int(m) for m in self.ch_mult), tuple(int(s) for s in self.scales)
        if self.share_quant_resi < 2:
            raise DraftScopeError("only partially shared φ (share_quant_resi ≥ 2, the official 4) is supported")
        if any(self.ch * m % 32 for m in self.ch_mult):
            raise DraftScopeError(f"GroupNorm(32) needs every width ch·mult divisible by 32, got ch={self.ch}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def phi_index(k: int, num_scales: int, shared: int) -> int:
    """Which of the ``shared`` φ convs scale k of ``num_scales`` uses: the tick nearest to k/(K−1) (first on a tie),
    the ticks being evenly spaced with a margin of 1/(3·shared) for 4 convs and 1/(2·shared) otherwise (float64, as
    the official ``PhiPartiallyShared``: scales 0..9 of 10 map to 0 0 1 1 1 2 2 3 3 3)."""
    margin = 1 / 3 / shared if shared == 4 else 1 / 2 / shared
    ticks = np.linspace(margin, 1 - margin, shared)
    at = k / (num_scales - 1) if num_scales > 1 else 0.0
    return int(np.argmin(np.abs(ticks - at)))


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, ch, eps=1e-6, affine=True)


class _Phi(nn.Conv2d):
    """φ: (1 − r)·h + r·conv3×3(h); a Conv2d subclass so its keys are ``weight`` and ``bias``."""

    def __init__(self, ch: int, ratio: float):
        super().__init__(ch, ch, 3, padding=1)
        self.ratio = abs(ratio)

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        return h_BChw * (1 - self.ratio) + super().forward(h_BChw) * self.ratio


class _SharedPhis(nn.Module):
    def __init__(self, convs: list[_Phi]):
        super().__init__()
        self.qresi_ls = nn.ModuleList(convs)


class _Quantizer(nn.Module):
    """Holds the official ``quantize.*`` tensors: codebook, shared φ convs, the training hit statistic."""

    def __init__(self, cfg: OfficialVQConfig):
        super().__init__()
        self.quant_resi = _SharedPhis([_Phi(cfg.embed_dim, cfg.quant_resi) for _ in range(cfg.share_quant_resi)])
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(cfg.scales), cfg.vocab_size))
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embed_dim)


class _ResnetBlock(nn.Module):
    """GroupNorm → SiLU → 3×3 conv, twice, plus the input (through a 1×1 conv when the width changes)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.nin_shortcut(x) + self.conv2(F.silu(self.norm2(h)))


class _AttnBlock(nn.Module):
    """Single-head self-attention over the h·w positions (1×1 convs for q, k, v and the output), residual."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm, self.qkv, self.proj_out = _norm(ch), nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        B, C, h, w = x_BChw.shape
        q, k, v = self.qkv(self.norm(x_BChw)).reshape(B, 3, C, h * w).transpose(-1, -2).unbind(1)  # each (B, hw, C)
        out_BnC = F.scaled_dot_product_attention(q, k, v)  # softmax(q·kᵀ/√C)·v
        return x_BChw + self.proj_out(out_BnC.transpose(1, 2).reshape(B, C, h, w))


class _Resample(nn.Module):
    """×2 down (pad right/bottom by 1, 3×3 stride-2 conv) or up (nearest, then 3×3 conv)."""

    def __init__(self, ch: int, up: bool):
        super().__init__()
        self.up = up
        self.conv = nn.Conv2d(ch, ch, 3, stride=1 if up else 2, padding=1 if up else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class _Level(nn.Module):
    """One resolution: residual blocks, each followed by attention where ``attn`` has entries."""

    def __init__(self, c_in: int, c_out: int, blocks: int, attention: bool):
        super().__init__()
        self.block = nn.ModuleList(_ResnetBlock(c_in if i == 0 else c_out, c_out) for i in range(blocks))
        self.attn = nn.ModuleList(_AttnBlock(c_out) for _ in range(blocks if attention else 0))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class _Middle(nn.Module):
    def __init__(self, ch: int, attention: bool):
        super().__init__()
        self.block_1, self.block_2 = _ResnetBlock(ch, ch), _ResnetBlock(ch, ch)
        self.attn_1 = _AttnBlock(ch) if attention else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class _Encoder(nn.Module):
    """(B, 3, P, P) → (B, C, P/2^(L−1), P/2^(L−1))."""

    def __init__(self, cfg: OfficialVQConfig):
        super().__init__()
        mult, last = (1, *cfg.ch_mult), len(cfg.ch_mult) - 1
        self.conv_in = nn.Conv2d(3, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        for i, m in enumerate(cfg.ch_mult):
            level = _Level(cfg.ch * mult[i], cfg.ch * m, cfg.num_res_blocks, cfg.using_sa and i == last)
            if i != last:
                level.downsample = _Resample(cfg.ch * m, up=False)
            self.down.append(level)
        top = cfg.ch * cfg.ch_mult[-1]
        self.mid = _Middle(top, cfg.using_mid_sa)
        self.norm_out, self.conv_out = _norm(top), nn.Conv2d(top, cfg.embed_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class _Decoder(nn.Module):
    """(B, C, S, S) → (B, 3, S·2^(L−1), S·2^(L−1)); ``up[i]`` is resolution level i (run from the last to 0)."""

    def __init__(self, cfg: OfficialVQConfig):
        super().__init__()
        last = len(cfg.ch_mult) - 1
        c_in = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.embed_dim, c_in, 3, padding=1)
        self.mid = _Middle(c_in, cfg.using_mid_sa)
        levels = {}
        for i in reversed(range(len(cfg.ch_mult))):
            c_out = cfg.ch * cfg.ch_mult[i]
            levels[i] = _Level(c_in, c_out, cfg.num_res_blocks + 1, cfg.using_sa and i == last)
            if i != 0:
                levels[i].upsample = _Resample(c_out, up=True)
            c_in = c_out
        self.up = nn.ModuleList(levels[i] for i in range(len(cfg.ch_mult)))
        self.norm_out, self.conv_out = _norm(c_in), nn.Conv2d(c_in, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class OfficialVQVAE(ScaleTokenizer):
    """The official multi-scale VQ-VAE: images (B, 3, P, P) in [-1, 1] ↔ token maps on ``scales``."""

    def __init__(self, config: OfficialVQConfig | None = None):
        super().__init__()
        cfg = config or OfficialVQConfig()
        self.config = cfg
        self.scales, self.vocab_size, self.embed_dim = cfg.scales, cfg.vocab_size, cfg.embed_dim
        self.latent_side, self.beta, self.upsample_mode = cfg.scales[-1], cfg.beta, "bicubic"
        self.encoder, self.decoder = _Encoder(cfg), _Decoder(cfg)
        self._modules["quantize"] = _Quantizer(cfg)  # the official name; ``self.quantize`` stays the method
        self.quant_conv = nn.Conv2d(cfg.embed_dim, cfg.embed_dim, 3, padding=1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.embed_dim, 3, padding=1)
        self.phi_of_scale = [phi_index(k, len(cfg.scales), cfg.share_quant_resi) for k in range(len(cfg.scales))]

    @property
    def quantizer(self) -> _Quantizer:
        """The ``quantize.*`` submodule (its official name is shadowed by ``ScaleTokenizer.quantize``)."""
        return self._modules["quantize"]

    @property
    def codebook(self) -> nn.Embedding:
        return self.quantizer.embedding

    def phi(self, k: int) -> nn.Module:
        return self.quantizer.quant_resi.qresi_ls[self.phi_of_scale[k]]

    @property
    def image_side(self) -> int:
        return self.latent_side * self.config.downsample

    def encode(self, img_B3PP: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(img_B3PP))

    def decode_latent(self, f_hat_BCSS: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(f_hat_BCSS)).clamp(-1, 1)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module's, except that a hit statistic of another shape (a training leftover) is replaced, as the
        official loader does."""
        key = "quantize.ema_vocab_hit_SV"
        hits = self.quantizer.ema_vocab_hit_SV
        if key in state_dict and state_dict[key].shape != hits.shape:
            state_dict = {**state_dict, key: torch.zeros(hits.shape)}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def vq_config_from_state(state: dict, scales: tuple[int, ...] = PATCH_NUMS) -> OfficialVQConfig:
    """Read the tokenizer's sizes off an official state dict (so reduced-width files in the official layout load too);
    ``scales`` are not stored in the file, only their count."""
    try:
        ch = state["encoder.conv_in.weight"].shape[0]
        levels = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.down."))
        ch_mult = tuple(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in range(levels))
        blocks = 1 + max(int(k.split(".")[4]) for k in state if k.startswith("encoder.down.0.block."))
        vocab, embed_dim = state["quantize.embedding.weight"].shape
        shared = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("quantize.quant_resi.qresi_ls."))
    except (KeyError, ValueError, IndexError) as exc:
        raise DraftScopeError(f"not an official VAR tokenizer state dict (missing or odd key: {exc})") from None
    using_sa = f"encoder.down.{levels - 1}.attn.0.qkv.weight" in state
    return OfficialVQConfig(vocab_size=int(vocab), embed_dim=int(embed_dim), ch=int(ch), ch_mult=ch_mult,
                            num_res_blocks=blocks, using_sa=using_sa, using_mid_sa="encoder.mid.attn_1.qkv.weight"
                            in state, share_quant_resi=shared, scales=tuple(scales))
