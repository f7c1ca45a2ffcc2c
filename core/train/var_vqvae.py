"""Train the VAR tokenizer (multi-scale residual VQ-VAE) on procedural images:
``python -m core.train.var_vqvae --n-per-class 200 --steps 3000 --out assets/var/vqvae.safetensors``.

Adam on the pixel MSE plus the quantiser's codebook + commitment loss, random batches from ``core.var.data``, with
dead-code restarts (codes unused since the last check are re-seeded from residual vectors of the current batch, one
scale drawn uniformly per new code) during the first 80% of the steps so the shared codebook stays in use. Held-out
images (a different seed) report the reconstruction MSE / PSNR, the per-prefix MSE (decoding scales 0..k) and the
share of the codebook used. Weights are rounded to fp16 before evaluation, so the report matches the saved file.
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
from core.var.data import make_dataset
from core.var.vqvae import MultiScaleVQVAE, VQVAEConfig, reconstruction_error

DEFAULT_OUT = Path("assets/var/vqvae.safetensors")
RESTART_EVERY = 50  # steps between dead-code checks
RESTART_UNTIL = 0.8  # fraction of the steps after which codes are no longer restarted


def psnr(mse: float) -> float:
    """PSNR in dB for images in [-1, 1] (peak-to-peak 2)."""
    return 10.0 * math.log10(4.0 / max(mse, 1e-12))


def _restart_dead_codes(model: MultiScaleVQVAE, optim: torch.optim.Optimizer, dead_K: torch.Tensor,
                        residuals: list[torch.Tensor], gen: torch.Generator) -> int:
    """Re-seed the codes flagged in ``dead_K`` (K,) bool with residual vectors (one scale drawn uniformly, then a
    position); their Adam moments are cleared. Returns how many were restarted."""
    dead = dead_K.nonzero().flatten()
    if dead.numel() == 0:
        return 0
    pools = [r.permute(0, 2, 3, 1).reshape(-1, r.shape[1]) for r in residuals]
    which = torch.randint(len(pools), (dead.numel(),), generator=gen)
    new_NC = torch.stack([pools[int(w)][int(torch.randint(pools[int(w)].shape[0], (1,), generator=gen))]
                          for w in which])
    weight = model.codebook.weight
    with torch.no_grad():
        weight[dead] = new_NC.to(weight) + 1e-3 * torch.randn(new_NC.shape, generator=gen).to(weight)
    state = optim.state.get(weight, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key][dead] = 0.0
    return int(dead.numel())


@torch.no_grad()
def evaluate(model: MultiScaleVQVAE, imgs: torch.Tensor) -> dict:
    """Held-out metrics: MSE / PSNR of the full reconstruction, MSE after each prefix of scales, codebook usage."""
    model.eval()
    idx_list = model.encode_indices(imgs)
    mse = reconstruction_error(model, imgs)
    prefix = [float(F.mse_loss(model.decode_indices(idx_list[:k + 1]), imgs)) for k in range(len(model.scales))]
    used = torch.unique(torch.cat([i.flatten() for i in idx_list])).numel()
    return {"mse": mse, "psnr": psnr(mse), "prefix_mse": [round(m, 5) for m in prefix],
            "codebook_usage": used / model.vocab_size, "codes_used": used}


def train(n_per_class: int = 200, steps: int = 3000, batch: int = 64, lr: float = 2e-3, seed: int = 0,
          out: str | Path | None = None, config: VQVAEConfig | None = None, n_val_per_class: int = 20,
          progress: bool = True) -> tuple[MultiScaleVQVAE, dict]:
    """Train a tokenizer; saved to ``out`` when given. Returns (model in eval mode, meta with the held-out metrics)."""
    if n_per_class < 1 or steps < 1 or batch < 1 or n_val_per_class < 1:
        raise DraftScopeError("n-per-class, steps, batch and the held-out size must all be ≥ 1")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_train, _ = make_dataset(n_per_class, seed)
    x_val, _ = make_dataset(n_val_per_class, seed + 10_000)
    model = MultiScaleVQVAE(config or VQVAEConfig()).train()
    before = reconstruction_error(model, x_val)
    model.train()
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    warmup = max(1, min(100, steps // 10))

    def lr_factor(s: int) -> float:  # linear warm-up, then cosine decay to 10% of lr
        return min(1.0, (s + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(s, steps) / steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_factor)
    used_K = torch.zeros(model.vocab_size, dtype=torch.bool)
    restarted = 0
    bar = tqdm(range(steps), desc="vqvae", unit="step", disable=not progress)
    for step in bar:
        x = x_train[torch.randint(x_train.shape[0], (batch,), generator=gen)]
        rec, vq_loss, idx_list, info = model(x)
        rec_loss = F.mse_loss(rec, x)
        loss = rec_loss + vq_loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        for idx in idx_list:
            used_K[idx.flatten()] = True
        if (step + 1) % RESTART_EVERY == 0 and step + 1 < RESTART_UNTIL * steps:
            restarted += _restart_dead_codes(model, optim, ~used_K, info["residuals"], gen)
            used_K.zero_()
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix(rec=f"{float(rec_loss.detach()):.4f}", vq=f"{float(vq_loss.detach()):.4f}")
    bar.close()
    model.round_to_fp16().eval()
    metrics = evaluate(model, x_val)
    seconds = elapsed(t0, "cpu")
    cfg = model.config
    meta = {"method": "var-vqvae", "n_per_class": n_per_class, "steps": steps, "batch": batch, "lr": lr, "seed": seed,
            "val_images": int(x_val.shape[0]), "untrained_mse": before, **metrics, "codes_restarted": restarted,
            "seconds": round(seconds, 1), "scales": list(cfg.scales), "vocab_size": cfg.vocab_size}
    if out is not None:
        model.save(out, meta)
    return model, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train.var_vqvae", description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-class", type=int, default=200, help="training images per class")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=VQVAEConfig.hidden, help="conv width")
    parser.add_argument("--vocab-size", type=int, default=VQVAEConfig.vocab_size, help="codebook entries K")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"output file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    keys = ("steps", "n_per_class", "untrained_mse", "mse", "psnr", "prefix_mse", "codebook_usage", "codes_used",
            "codes_restarted", "seconds")

    def body() -> None:
        config = VQVAEConfig(hidden=args.hidden, vocab_size=args.vocab_size)
        _, meta = train(args.n_per_class, args.steps, args.batch, args.lr, args.seed, args.out, config)
        print_summary({"saved": args.out, **{k: meta[k] for k in keys}}, indent=1)

    return run_script(body, (DraftScopeError, ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
