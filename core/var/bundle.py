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

ASSET_DIR = ASSETS_DIR / "var"
ENV_DIR = "DRAFTSCOPE_VAR_ASSETS"  # another directory of the four checkpoints (tests use tiny random ones)
FILES = {"vq": "vqvae.safetensors", "large": "var-large.safetensors", "small": "var-small.safetensors",
         "classifier": "classifier.safetensors"}
_LOCK = threading.Lock()
_CACHE: dict = {}


@dataclass
class VARBundle:
    vq: object  # MultiScaleVQVAE
    large: object  # VAR (the drafter)
    small: object  # VAR (the refiner)
    classifier: object  # ImageClassifier
    meta: dict  # per file: the training meta stored in its header
    device: torch.device

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
