"""The shipped VAR models, loaded once per process: tokenizer, large drafter, small refiner and the classifier.

``load_bundle()`` reads ``assets/var/*.safetensors`` (fp16 on disk, float32 in memory) onto the default device
(``cuda`` when present). A missing file is a ``DraftScopeError`` that names the command which trains it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from core import ASSETS_DIR
from core.errors import DraftScopeError
from core.var.data import CLASS_NAMES

ASSET_DIR = ASSETS_DIR / "var"
ENV_DIR = "DRAFTSCOPE_VAR_ASSETS"  # another directory of the four checkpoints (tests use tiny random ones)
FILES = {"vq": "vqvae.safetensors", "large": "var-large.safetensors", "small": "var-small.safetensors",
         "classifier": "classifier.safetensors"}
TINY = "tiny"  # the name of the shipped bundle
_LOCK = threading.Lock()
_CACHE: dict = {}


@dataclass
class VARBundle:
    vq: object  # MultiScaleVQVAE (or the official tokenizer)
    large: object  # VAR (the drafter)
    small: object  # VAR (the refiner)
    classifier: object  # ImageClassifier, or None where there is no judge (the official ImageNet models)
    meta: dict  # per file: the training meta stored in its header
    device: torch.device
    name: str = TINY  # "tiny" (the shipped models) or "official-d30-d16" …
    class_names: tuple[str, ...] = CLASS_NAMES  # names of the classes 0..n−1; () where classes are only numbers

    @property
    def num_scales(self) -> int:
        return len(self.vq.scales)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_bundle(asset_dir: str | Path | None = None, device: str | torch.device | None = None) -> VARBundle:
    """Load (once per directory and device) the four checkpoints."""
    from core.var.classifier import ImageClassifier
    from core.var.model import VAR
    from core.var.vqvae import MultiScaleVQVAE

    root = Path(asset_dir) if asset_dir is not None else Path(os.environ.get(ENV_DIR) or ASSET_DIR)
    dev = torch.device(device) if device is not None else default_device()
    key = (str(root.resolve()), str(dev))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        missing = [name for name in FILES.values() if not (root / name).is_file()]
        if missing:
            raise DraftScopeError(f"VAR checkpoints missing in {root}: {', '.join(missing)}; train them with "
                                  "`python -m core.train.var all`")
        vq, vq_meta = MultiScaleVQVAE.load(root / FILES["vq"], device=dev)
        large, large_meta = VAR.load(root / FILES["large"], device=dev)
        small, small_meta = VAR.load(root / FILES["small"], device=dev)
        clf, clf_meta = ImageClassifier.load(root / FILES["classifier"], device=dev)
        large._check_vq(vq)
        small._check_vq(vq)
        bundle = VARBundle(vq.eval(), large, small, clf, {"vq": vq_meta, "large": large_meta, "small": small_meta,
                                                           "classifier": clf_meta}, dev)
        _CACHE[key] = bundle
        return bundle


def get_bundle(name: str | None = None, official_dir: str | Path | None = None,
               device: str | torch.device | None = None) -> VARBundle:
    """A bundle by name: "tiny" (None: the shipped models) or "official-d<drafter>-d<refiner>" (``load_official``,
    from ``official_dir``, the default directory or the Hub)."""
    if name in (None, "", TINY):
        return load_bundle(device=device)
    from core.var.official_load import load_official, parse_bundle_name

    drafter, refiner = parse_bundle_name(name)
    return load_official(drafter, refiner, source=official_dir, device=device)


def bundle_choices() -> list[str]:
    """The bundles a user may pick here: the shipped one, and the paper's official pair where its files are local or
    the Hub is the model source."""
    from core.var.official_load import bundle_name, where

    return [TINY] + ([bundle_name()] if where() else [])
