"""Train a VAR transformer: ``python -m core.train.var_model --vqvae PATH --size large|small --steps N --out PATH``.

1. Make the procedural 10-class images (``core.var.data.make_dataset``) and tokenize them once with the multi-scale
   VQ-VAE: every image becomes K token maps; the teacher-forcing inputs (``vq.teacher_inputs``) are kept alongside.
2. Train with AdamW (warm-up, cosine decay, gradient clipping) on the cross-entropy of every scale's tokens at once
   (block-causal teacher forcing); labels are dropped to the null class at the config's ``cond_dropout`` rate so the
   model also learns the unconditional distribution that classifier-free guidance needs.
3. Report loss and top-1 token accuracy (overall and per scale) on a held-out tenth, round the weights to fp16 and
   save. Prints one JSON line; errors print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from core.errors import DraftScopeError
from core.runtime.timing import elapsed
from core.train.loop import print_summary, run_script
from core.var.model import VAR, VARConfig, scale_offsets

DEFAULT_LR = {"large": 8e-4, "small": 1e-3}  # peak learning rate per preset


def default_out(size: str) -> Path:
    """Where a preset's checkpoint goes by default: assets/var/var-SIZE.safetensors."""
    return Path("assets") / "var" / f"var-{size}.safetensors"


@torch.no_grad()
def encode_dataset(vq, imgs_N3PP: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Images → teacher inputs x (N, n−1, C) and target indices (N, n) of all n tokens, flattened row-major."""
    xs, targets = [], []
    for i in range(0, imgs_N3PP.shape[0], batch):
        idx_list = vq.encode_indices(imgs_N3PP[i:i + batch])
        xs.append(vq.teacher_inputs(idx_list).float().cpu())
        targets.append(torch.cat([t.flatten(1) for t in idx_list], dim=1).cpu())
    return torch.cat(xs), torch.cat(targets)


def batch_loss(model: VAR, cls_B: torch.Tensor, x_BnC: torch.Tensor, target_Bn: torch.Tensor):
    """Mean cross-entropy over all tokens (a scalar tensor) and top-1 accuracy (float)."""
    logits_BnV = model(cls_B, x_BnC)
    loss = F.cross_entropy(logits_BnV.flatten(0, 1).float(), target_Bn.flatten())
    acc = (logits_BnV.argmax(-1) == target_Bn).float().mean().item()
    return loss, acc


def train_step(model: VAR, opt: torch.optim.Optimizer, cls_B: torch.Tensor, x_BnC: torch.Tensor,
               target_Bn: torch.Tensor, clip: float = 1.0) -> float:
    """One AdamW step on a batch; returns the loss."""
    loss, _ = batch_loss(model, cls_B, x_BnC, target_Bn)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.item()


@torch.no_grad()
def evaluate(model: VAR, cls_N: torch.Tensor, x_NnC: torch.Tensor, target_Nn: torch.Tensor,
             batch: int = 256) -> dict:
    """Held-out loss, top-1 accuracy and accuracy per scale (conditional, eval mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll, correct_Nn = 0.0, []
    for i in range(0, cls_N.shape[0], batch):
        logits = model(cls_N[i:i + batch].to(device), x_NnC[i:i + batch].to(device))
        tgt = target_Nn[i:i + batch].to(device)
        nll += F.cross_entropy(logits.flatten(0, 1).float(), tgt.flatten(), reduction="sum").item()
        correct_Nn.append((logits.argmax(-1) == tgt).cpu())
    model.train(was_training)
    correct = torch.cat(correct_Nn).float()
    off = scale_offsets(model.scales)
    return {"loss": nll / correct.numel(), "accuracy": correct.mean().item(),
            "accuracy_per_scale": [round(correct[:, off[k]:off[k + 1]].mean().item(), 4)
                                   for k in range(len(model.scales))]}


def _lr_at(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 5 % of steps, then cosine decay to 10 % of the peak."""
    warm = max(1, steps // 20)
    if step < warm:
        return peak * (step + 1) / warm
    frac = (step - warm) / max(1, steps - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def train(vq, size: str, steps: int, n_per_class: int = 200, batch: int = 64, lr: float | None = None,
          seed: int = 0, device: str | torch.device = "cpu", data: tuple[torch.Tensor, torch.Tensor] | None = None,
          overrides: dict | None = None, progress: bool = True) -> tuple[VAR, dict]:
    """Train a ``size`` preset ("large" / "small") for ``steps`` AdamW steps on tokenized images; returns the model
    (eval mode, fp16-rounded weights) and its meta (config-independent facts: losses, accuracy, timings).
    data: (imgs (N, 3, 32, 32) in [-1, 1], labels (N,)) instead of ``make_dataset(n_per_class, seed)``."""
    if steps < 1:
        raise DraftScopeError(f"steps must be >= 1, got {steps}")
    t0 = time.perf_counter()
    if data is None:
        from core.var.data import make_dataset

        data = make_dataset(n_per_class, seed)
    imgs, labels = data
    vq_param = next(vq.parameters(), None) if hasattr(vq, "parameters") else None
    x_NnC, target_Nn = encode_dataset(vq, imgs if vq_param is None else imgs.to(vq_param.device))
    n_hold = max(1, labels.shape[0] // 10)
    tr, ho = slice(0, labels.shape[0] - n_hold), slice(labels.shape[0] - n_hold, None)
    t_data = elapsed(t0, device)

    torch.manual_seed(seed)
    config = VARConfig.preset(size, vq.vocab_size, vq.embed_dim, tuple(vq.scales), **(overrides or {}))
    model = VAR(config).to(device).train()
    peak = lr or DEFAULT_LR[size]
    opt = torch.optim.AdamW(model.parameters(), lr=peak, betas=(0.9, 0.95), weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    n_train = tr.stop
    running = None
    bar = tqdm(range(steps), desc=f"var-{size}", unit="step", disable=not progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, peak)
        pick = torch.randint(0, n_train, (min(batch, n_train),), generator=gen)
        loss = train_step(model, opt, labels[pick].to(device), x_NnC[pick].to(device), target_Nn[pick].to(device))
        running = loss if running is None else 0.95 * running + 0.05 * loss
        bar.set_postfix(loss=f"{running:.3f}")
    model.round_to_fp16().eval()
    held = evaluate(model, labels[ho], x_NnC[ho], target_Nn[ho])
    meta = {"kind": "var", "size": size, "steps": steps, "batch": batch, "lr": peak, "seed": seed,
            "images": int(labels.shape[0]), "held_out": n_hold, "train_loss": round(running, 4),
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in held.items()},
            "params": model.param_count(), "data_seconds": round(t_data, 2),
            "seconds": round(elapsed(t0, device), 2)}
    return model, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train.var_model", description=__doc__.splitlines()[0])
    parser.add_argument("--vqvae", required=True, help="trained MultiScaleVQVAE checkpoint (safetensors)")
    parser.add_argument("--size", choices=("large", "small"), default="large")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--n-per-class", type=int, default=200, help="training images per class")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default by size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="checkpoint path (default assets/var/var-SIZE.safetensors)")
    args = parser.parse_args(argv)

    def body() -> None:
        from core.var.vqvae import MultiScaleVQVAE

        vq, _ = MultiScaleVQVAE.load(args.vqvae, device=args.device)
        model, meta = train(vq, args.size, args.steps, args.n_per_class, args.batch, args.lr, args.seed,
                            args.device)
        meta["vqvae"] = Path(args.vqvae).name
        out = model.save(args.out or default_out(args.size), meta)
        print_summary({**meta, "out": str(out)})

    return run_script(body, (DraftScopeError, ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
