"""Multi-scale residual VQ-VAE: VAR's tokenizer (Tian et al. 2024), small enough to train on CPU.

A conv encoder maps a 32×32 image to an S×S×C latent f (S = 8). Quantisation is residual over scales s_1 < … < s_K
with one shared codebook: the residual r (initially f) is area-downsampled to s_k×s_k, each position takes its
nearest codebook entry (idx_k, s_k×s_k tokens), the chosen codes are upsampled back to S×S and passed through a small
residual conv φ_k, and that contribution z_k is added to f̂ and subtracted from r. A prefix of the token maps
therefore gives a coarse-to-fine partial reconstruction, and the transformer's input for scale k+1 is f̂ after
scales ≤ k area-downsampled to s_{k+1}. Saved as a ``core.runtime.checkpoint`` file, the config in its meta.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import DraftScopeError
from core.runtime import checkpoint

KIND, TRAIN_COMMAND = "var-vqvae", "python -m core.train.var_vqvae"  # checkpoint kind, what trains one


@dataclass
class VQVAEConfig:
    image: int = 32  # input image side in pixels (square images)
    channels: int = 3  # image channels (RGB)
    hidden: int = 64  # conv width at 16×16 and 8×8; the 32×32 convs use hidden // 2
    embed_dim: int = 32  # C: latent / codebook vector dimension
    vocab_size: int = 256  # K: codebook entries, shared by all scales
    scales: tuple[int, ...] = (1, 2, 3, 4, 6, 8)  # token-map sides, coarse to fine; the last is the latent side S
    beta: float = 0.25  # commitment-loss weight
    use_phi: bool = True  # apply φ_k (a residual 3×3 conv) to each upsampled code map before accumulating
    phi_mix: float = 0.5  # φ_k(h) = (1 - phi_mix)·h + phi_mix·conv3×3(h)
    upsample: str = "bicubic"  # how code maps are brought to S×S: "bicubic" or "bilinear"

    def __post_init__(self) -> None:
        self.scales = tuple(int(s) for s in self.scales)
        if list(self.scales) != sorted(set(self.scales)) or self.scales[0] < 1:
            raise ValueError(f"scales must be strictly increasing positive sides, got {self.scales}")
        if self.image != 4 * self.scales[-1]:
            raise ValueError(f"the encoder downsamples by 4: the last scale must be image / 4 = {self.image // 4}, "
                             f"got {self.scales[-1]}")
        if self.upsample not in ("bicubic", "bilinear"):
            raise ValueError(f"upsample must be 'bicubic' or 'bilinear', got {self.upsample!r}")


class _ResBlock(nn.Module):
    """x + conv(act(conv(act(x)))) at constant width. No normalisation layers anywhere: an image's flat colours are
    most of its content here, and GroupNorm normalises them away (a short training run ended clearly worse with it)."""

    def __init__(self, ch: int):
        super().__init__()
        self.block = nn.Sequential(nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
                                   nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class _Up(nn.Module):
    """Nearest ×2 upsampling then a 3×3 conv."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Phi(nn.Module):
    """VAR's φ: (1 - mix)·h + mix·conv3×3(h), a residual refinement of an upsampled code map."""

    def __init__(self, ch: int, mix: float):
        super().__init__()
        self.mix = mix
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * (1.0 - self.mix) + self.conv(h) * self.mix


class ScaleTokenizer(nn.Module):
    """The multi-scale residual quantiser and its token methods, shared by every tokenizer here. A subclass builds its
    layers and sets ``scales``, ``vocab_size``, ``embed_dim``, ``latent_side``, ``beta`` (commitment weight) and
    ``upsample_mode``, and provides ``codebook`` (nn.Embedding K × C), ``phi(k)`` (φ of scale k, or None),
    ``encode`` and ``decode_latent``."""

    scales: tuple[int, ...]
    vocab_size: int
    embed_dim: int
    latent_side: int
    beta: float
    upsample_mode: str

    def encode(self, img_B3PP: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (B, 3, P, P) → continuous latent f (B, C, S, S)."""
        raise NotImplementedError

    def decode_latent(self, f_hat_BCSS: torch.Tensor) -> torch.Tensor:
        """Latent (B, C, S, S) → images (B, 3, P, P) in [-1, 1]."""
        raise NotImplementedError

    def phi(self, k: int) -> nn.Module | None:
        """φ applied to scale k's upsampled code map (None: none)."""
        return None

    @property
    def image_side(self) -> int:
        """P: the side of the images this tokenizer reads and writes."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------------------- quantisation
    def _lookup(self, r_BCss: torch.Tensor) -> torch.Tensor:
        """Nearest codebook entry (squared L2) per position: (B, C, s, s) → idx (B, s, s)."""
        b, c, s, _ = r_BCss.shape
        q_NC = r_BCss.permute(0, 2, 3, 1).reshape(-1, c)
        e_KC = self.codebook.weight
        d_NK = q_NC.pow(2).sum(1, keepdim=True) - 2.0 * q_NC @ e_KC.t() + e_KC.pow(2).sum(1)[None]
        return d_NK.argmin(1).view(b, s, s)

    def scale_contribution(self, idx_Bss: torch.Tensor, k: int) -> torch.Tensor:
        """z_k: scale k's token map (B, s_k, s_k) → its contribution to f̂ (B, C, S, S): codes, upsampled, φ_k."""
        if idx_Bss.shape[-1] != self.scales[k] or idx_Bss.shape[-2] != self.scales[k]:
            raise ValueError(f"scale {k} expects {self.scales[k]}×{self.scales[k]} tokens, got {tuple(idx_Bss.shape)}")
        h_BCss = self.codebook(idx_Bss).permute(0, 3, 1, 2)
        side = self.latent_side
        if self.scales[k] != side:
            h_BCss = F.interpolate(h_BCss, size=(side, side), mode=self.upsample_mode, align_corners=False)
        phi = self.phi(k)
        return phi(h_BCss) if phi is not None else h_BCss.contiguous()

    def add_scale(self, f_hat_BCSS: torch.Tensor, idx_k: torch.Tensor, k: int) -> torch.Tensor:
        """f̂ after scales < k (B, C, S, S) plus scale k's contribution from idx_k (B, s_k, s_k) → (B, C, S, S)."""
        return f_hat_BCSS + self.scale_contribution(idx_k, k)

    def quantize(self, f_BCSS: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, dict]:
        """Multi-scale residual quantisation of f (B, C, S, S).

        Returns (idx_list, f_hat, loss, info): idx_list[k] (B, s_k, s_k) long, coarse to fine; f_hat (B, C, S, S) the
        sum of the contributions (with a straight-through gradient to f when f requires grad); loss the codebook +
        β·commitment loss on the running f̂, averaged over scales; info["contributions"] the z_k (B, C, S, S) with
        Σ z_k = f̂, info["residuals"] the area-downsampled residuals r_k (B, C, s_k, s_k) that were looked up,
        info["codebook_loss"] / info["commit_loss"] the two parts (floats)."""
        f_sg = f_BCSS.detach()
        side = self.latent_side
        r_BCSS = f_sg.clone()
        f_hat_BCSS = torch.zeros_like(f_sg)
        idx_list, contribs, residuals = [], [], []
        codebook_loss = commit_loss = f_BCSS.new_zeros(())
        for k, s in enumerate(self.scales):
            r_BCss = r_BCSS if s == side else F.interpolate(r_BCSS, size=(s, s), mode="area")
            with torch.no_grad():
                idx_Bss = self._lookup(r_BCss)
            z_BCSS = self.scale_contribution(idx_Bss, k)
            f_hat_BCSS = f_hat_BCSS + z_BCSS
            r_BCSS = r_BCSS - z_BCSS.detach()
            codebook_loss = codebook_loss + F.mse_loss(f_hat_BCSS, f_sg)
            commit_loss = commit_loss + F.mse_loss(f_hat_BCSS.detach(), f_BCSS)
            idx_list.append(idx_Bss)
            contribs.append(z_BCSS)
            residuals.append(r_BCss.detach())
        n = len(self.scales)
        loss = (codebook_loss + self.beta * commit_loss) / n
        if f_BCSS.requires_grad:  # straight-through: value f̂, gradient to the encoder as if identity (as in VAR)
            f_hat_BCSS = f_BCSS + (f_hat_BCSS - f_BCSS).detach()
        info = {"contributions": contribs, "residuals": residuals,
                "codebook_loss": float(codebook_loss.detach()) / n, "commit_loss": float(commit_loss.detach()) / n}
        return idx_list, f_hat_BCSS, loss, info

    def forward(self, img_B3PP: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], dict]:
        """Training pass: images (B, 3, P, P) → (reconstruction (B, 3, P, P), vq loss, idx_list, info)."""
        idx_list, f_hat_BCSS, vq_loss, info = self.quantize(self.encode(img_B3PP))
        return self.decode_latent(f_hat_BCSS), vq_loss, idx_list, info

    # ------------------------------------------------------------------------------------------------- tokens
    @torch.no_grad()
    def encode_indices(self, img_B3PP: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, 3, P, P) → token maps, one (B, s_k, s_k) long per scale, coarse to fine."""
        return self.quantize(self.encode(img_B3PP))[0]

    def indices_to_latent(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Token maps for scales 0..m-1 (any prefix, m ≥ 1) → f̂ (B, C, S, S): the sum of their contributions."""
        if not idx_list or len(idx_list) > len(self.scales):
            raise ValueError(f"expected 1..{len(self.scales)} token maps, got {len(idx_list)}")
        b, side = idx_list[0].shape[0], self.latent_side
        f_hat_BCSS = self.codebook.weight.new_zeros(b, self.embed_dim, side, side)
        for k, idx_Bss in enumerate(idx_list):
            f_hat_BCSS = self.add_scale(f_hat_BCSS, idx_Bss, k)
        return f_hat_BCSS

    def next_scale_input(self, f_hat_BCSS: torch.Tensor, k: int) -> torch.Tensor:
        """f̂ after scales 0..k (B, C, S, S) → the input for predicting scale k+1: area-downsampled to
        (B, C, s_{k+1}, s_{k+1}); k in 0..len(scales)-2."""
        if not 0 <= k < len(self.scales) - 1:
            raise ValueError(f"k must be in 0..{len(self.scales) - 2}, got {k}")
        s = self.scales[k + 1]
        return f_hat_BCSS if s == self.latent_side else F.interpolate(f_hat_BCSS, size=(s, s), mode="area")

    def teacher_inputs(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing inputs for scales 1..K-1: token maps (at least the first K-1) → x (B, Σ_{k≥1} s_k², C),
        the concatenation of next_scale_input after each scale k = 0..K-2, each flattened row-major."""
        n = len(self.scales)
        if len(idx_list) < n - 1:
            raise ValueError(f"teacher_inputs needs the first {n - 1} token maps, got {len(idx_list)}")
        b, side = idx_list[0].shape[0], self.latent_side
        f_hat_BCSS = self.codebook.weight.new_zeros(b, self.embed_dim, side, side)
        chunks = []
        for k in range(n - 1):
            f_hat_BCSS = self.add_scale(f_hat_BCSS, idx_list[k], k)
            chunks.append(self.next_scale_input(f_hat_BCSS, k).flatten(2).transpose(1, 2))
        return torch.cat(chunks, dim=1)

    def decode_indices(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Token maps (all scales, or a prefix for a coarse preview) → images (B, 3, P, P) in [-1, 1]."""
        return self.decode_latent(self.indices_to_latent(idx_list))


class MultiScaleVQVAE(ScaleTokenizer):
    """Encoder (B, 3, P, P) → f (B, C, S, S); multi-scale residual quantiser; decoder f̂ → image in [-1, 1]."""

    def __init__(self, config: VQVAEConfig | None = None):
        super().__init__()
        cfg = config or VQVAEConfig()
        self.config = cfg
        self.scales: tuple[int, ...] = tuple(cfg.scales)
        self.vocab_size: int = cfg.vocab_size
        self.embed_dim: int = cfg.embed_dim
        self.latent_side: int = cfg.scales[-1]
        self.beta, self.upsample_mode = cfg.beta, cfg.upsample
        h, h2, c = cfg.hidden, cfg.hidden // 2, cfg.embed_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(cfg.channels, h2, 3, padding=1), nn.SiLU(),  # 32×32 (no block here: the costliest resolution)
            nn.Conv2d(h2, h, 4, stride=2, padding=1), _ResBlock(h),  # 16×16
            nn.Conv2d(h, h, 4, stride=2, padding=1), _ResBlock(h), _ResBlock(h),  # 8×8
            nn.SiLU(), nn.Conv2d(h, c, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(c, h, 3, padding=1), _ResBlock(h), _ResBlock(h),  # 8×8
            _Up(h, h), _ResBlock(h),  # 16×16
            _Up(h, h2),  # 32×32
            nn.SiLU(), nn.Conv2d(h2, cfg.channels, 3, padding=1))
        self.codebook = nn.Embedding(cfg.vocab_size, c)
        nn.init.uniform_(self.codebook.weight, -1.0 / cfg.vocab_size, 1.0 / cfg.vocab_size)
        self.phis = nn.ModuleList([_Phi(c, cfg.phi_mix) for _ in self.scales]) if cfg.use_phi else None

    # ----------------------------------------------------------------------------------------------- autoencoder
    def encode(self, img_B3PP: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (B, 3, P, P) → continuous latent f (B, C, S, S)."""
        return self.encoder(img_B3PP)

    def decode_latent(self, f_hat_BCSS: torch.Tensor) -> torch.Tensor:
        """Latent (B, C, S, S) → images (B, 3, P, P) in [-1, 1] (tanh)."""
        return torch.tanh(self.decoder(f_hat_BCSS))

    def phi(self, k: int) -> nn.Module | None:
        return self.phis[k] if self.phis is not None else None

    @property
    def image_side(self) -> int:
        return self.config.image

    # ------------------------------------------------------------------------------------------------ storage
    def round_to_fp16(self) -> "MultiScaleVQVAE":
        """Round every parameter to fp16-representable values in place, so this model and its saved file agree."""
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(p.to(torch.float16).to(p.dtype))
        return self

    def save(self, path: str | Path, meta: dict) -> None:
        """Weights as fp16; the checkpoint's meta is ``meta`` plus the config under "config"."""
        checkpoint.save(path, self, {**meta, "config": {**asdict(self.config), "scales": list(self.config.scales)}},
                        KIND)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> tuple["MultiScaleVQVAE", dict]:
        """A saved tokenizer (float32, eval mode, on ``device`` or CPU) and its meta (with "config")."""
        path = Path(path)
        state, meta = checkpoint.load(path, KIND, TRAIN_COMMAND)
        known = {f.name for f in fields(VQVAEConfig)}
        try:
            config = VQVAEConfig(**{k: v for k, v in meta.get("config", {}).items() if k in known})
            model = cls(config)
            model.load_state_dict({k: v.float() for k, v in state.items()})
        except (RuntimeError, ValueError, TypeError) as exc:
            raise DraftScopeError(f"the tokenizer {path.name} does not fit its config: "
                                  f"{str(exc).splitlines()[0]}") from None
        return model.to(device or "cpu").eval(), meta


@torch.no_grad()
def reconstruction_error(model: MultiScaleVQVAE, imgs: torch.Tensor, batch: int = 256) -> float:
    """Mean squared error (in [-1, 1] pixel space) between images (N, 3, P, P) and their tokenised reconstructions."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, imgs.shape[0], batch):
        x = imgs[i:i + batch].to(device)
        rec = model.decode_indices(model.encode_indices(x))
        total += float((rec - x).pow(2).sum())
        count += x.numel()
    model.train(was_training)
    return total / max(count, 1)
