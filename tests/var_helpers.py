"""Tiny random VAR checkpoints (tokenizer, large, small, classifier) for fast tests of the VAR code paths."""

from __future__ import annotations

from pathlib import Path

import torch

from core.var.bundle import FILES, load_bundle
from core.var.classifier import ImageClassifier
from core.var.model import VAR, VARConfig
from core.var.vqvae import MultiScaleVQVAE, VQVAEConfig


def write_tiny_checkpoints(root: str | Path, seed: int = 0) -> Path:
    """Write four tiny random checkpoints (K=64, C=8, scales 1..8) to ``root``; returns it."""
    root = Path(root)
    torch.manual_seed(seed)
    vq = MultiScaleVQVAE(VQVAEConfig(vocab_size=64, hidden=16, embed_dim=8)).eval()
    vq.save(root / FILES["vq"], {"kind": "tiny"})
    large = VAR(VARConfig(64, 8, vq.scales, depth=3, width=32, heads=4)).eval()
    large.save(root / FILES["large"], {"kind": "tiny"})
    small = VAR(VARConfig(64, 8, vq.scales, depth=2, width=16, heads=2)).eval()
    small.save(root / FILES["small"], {"kind": "tiny"})
    ImageClassifier(width=4).eval().save(root / FILES["classifier"], {"kind": "tiny"})
    return root


def tiny_bundle(root: str | Path):
    """Write (if needed) and load a tiny bundle from ``root`` on the CPU."""
    root = Path(root)
    if not (root / FILES["classifier"]).is_file():
        write_tiny_checkpoints(root)
    return load_bundle(root, device="cpu")
