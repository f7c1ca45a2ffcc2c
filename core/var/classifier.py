"""A small CNN that names the class of a 32×32 procedural image: the quality judge of CoDe and ScaleKV samples.

Trained on the same procedural image set as the VAR (``core.var.data``), with a held-out accuracy reported in its
checkpoint. A generated image counts as "of its class" when the classifier's top-1 matches the requested class; the
accuracy over a batch is a cheap stand-in for the FID / GenEval the papers report. Saved as a
``core.runtime.checkpoint`` file.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import DraftScopeError
from core.runtime import checkpoint

KIND, TRAIN_COMMAND = "var-classifier", "python -m core.train.var classifier"  # checkpoint kind, what trains one


class ImageClassifier(nn.Module):
    """conv(3→32) · conv(32→32) · pool · conv(32→64) · conv(64→64) · pool · conv(64→128) · global mean · linear."""

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.num_classes, self.width = num_classes, width
        w = width

        def conv(c_in: int, c_out: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.SiLU())

        self.features = nn.Sequential(conv(3, w), conv(w, w), nn.MaxPool2d(2), conv(w, 2 * w), conv(2 * w, 2 * w),
                                      nn.MaxPool2d(2), conv(2 * w, 4 * w))
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, img_B3PP: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) for images in [-1, 1]."""
        return self.head(self.features(img_B3PP).mean(dim=(2, 3)))

    @torch.no_grad()
    def predict(self, img_B3PP: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """Top-1 class of each image: (B,) long."""
        device = next(self.parameters()).device
        out = [self(img_B3PP[i:i + batch].to(device).float()).argmax(-1).cpu()
               for i in range(0, img_B3PP.shape[0], batch)]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

    def accuracy(self, img_B3PP: torch.Tensor, labels_B: torch.Tensor) -> float:
        """Share of images whose top-1 class equals their label."""
        if img_B3PP.shape[0] == 0:
            raise DraftScopeError("accuracy of an empty batch")
        return float((self.predict(img_B3PP) == labels_B.cpu()).float().mean())

    def save(self, path: str | Path, meta: dict | None = None) -> Path:
        """fp16 weights (BatchNorm's step counters as they are); the meta holds ``meta`` and the config."""
        config = {"num_classes": self.num_classes, "width": self.width}
        return checkpoint.save(path, self, {**(meta or {}), "config": config}, KIND)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> tuple["ImageClassifier", dict]:
        """A saved classifier (float32, eval mode) and the meta it was saved with."""
        state, meta = checkpoint.load(path, KIND, TRAIN_COMMAND)
        config = meta.pop("config")
        model = cls(**config)
        model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()})
        return model.to(device).eval(), meta


def train_classifier(x_B3PP: torch.Tensor, y_B: torch.Tensor, steps: int = 600, batch: int = 128, lr: float = 2e-3,
                     seed: int = 0, progress: bool = False, augment: bool = True) -> ImageClassifier:
    """Adam with cosine decay on random batches; light augmentation (random flips and ±2-pixel shifts, which keep
    every class's identity). Returns the model in eval mode with fp16-rounded weights."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ImageClassifier().train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in tqdm(range(steps), desc="classifier", unit="step", disable=not progress):
        pick = torch.randint(0, x_B3PP.shape[0], (min(batch, x_B3PP.shape[0]),), generator=gen)
        x = x_B3PP[pick]
        if augment:
            if torch.rand((), generator=gen) < 0.5:
                x = x.flip(-1)
            dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
            x = torch.roll(x, (dy, dx), dims=(2, 3))
        loss = F.cross_entropy(model(x), y_B[pick])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.float16).float())
    return model
