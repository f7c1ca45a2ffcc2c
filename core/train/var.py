"""Train everything the VAR tab ships: ``python -m core.train.var all`` (or one stage at a time).

Stages, each with tqdm progress and one JSON line of results:
  tokenizer   the multi-scale residual VQ-VAE            (``core.train.var_vqvae``)  → assets/var/vqvae.safetensors
  large       the CoDe drafter, a 4.2 M-parameter VAR    (``core.train.var_model``)  → assets/var/var-large.safetensors
  small       the CoDe refiner, a 0.56 M-parameter VAR   (``core.train.var_model``)  → assets/var/var-small.safetensors
  classifier  the judge of sample quality (a small CNN)  (``core.var.classifier``)   → assets/var/classifier.safetensors
``all`` runs them in that order. The VARs need the tokenizer; every stage reads the procedural image set of
``core.var.data`` (seeded, generated on the fly: nothing is downloaded).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from core.errors import DraftScopeError
from core.runtime.timing import elapsed
from core.train.loop import print_summary, run_script

ASSETS = Path("assets") / "var"
STAGES = ("tokenizer", "large", "small", "classifier")


def _reconstruct(vq, x_B3PP: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """The tokenizer's round trip of each image (what every generated image also goes through)."""
    with torch.no_grad():
        return torch.cat([vq.decode_indices(vq.encode_indices(x_B3PP[i:i + chunk]))
                          for i in range(0, x_B3PP.shape[0], chunk)]).clamp(-1, 1)


def train_classifier_stage(n_per_class: int = 300, steps: int = 600, seed: int = 0,
                           out: str | Path | None = ASSETS / "classifier.safetensors", progress: bool = True,
                           vqvae: str | Path | None = None) -> dict:
    """Train and save the classifier; returns its meta (held-out accuracy on a different seed's images).

    vqvae: a tokenizer checkpoint; when given, the training set also holds every image's VQ reconstruction, so the
    classifier judges generated images (always decoded by that tokenizer) without a domain gap, and the meta reports
    held-out accuracy on reconstructions too."""
    from core.var.classifier import train_classifier
    from core.var.data import make_dataset

    t0 = time.perf_counter()
    x, y = make_dataset(n_per_class, seed)
    x_val, y_val = make_dataset(max(10, n_per_class // 5), seed + 20_000)
    vq = None
    if vqvae is not None:
        from core.var.vqvae import MultiScaleVQVAE

        vq, _ = MultiScaleVQVAE.load(vqvae)
        x, y = torch.cat([x, _reconstruct(vq, x)]), torch.cat([y, y])
    model = train_classifier(x, y, steps=steps, seed=seed, progress=progress)
    meta = {"kind": "classifier", "n_per_class": n_per_class, "steps": steps, "seed": seed,
            "held_out_accuracy": round(model.accuracy(x_val, y_val), 4), "held_out_images": int(y_val.shape[0]),
            "params": sum(p.numel() for p in model.parameters()), "seconds": round(elapsed(t0, "cpu"), 1)}
    if vq is not None:
        meta["held_out_accuracy_reconstructed"] = round(model.accuracy(_reconstruct(vq, x_val), y_val), 4)
        meta["trained_on_reconstructions"] = True
    if out is not None:
        model.save(out, meta)
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train.var", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=(*STAGES, "all"))
    parser.add_argument("--tokenizer-steps", type=int, default=1500)
    parser.add_argument("--large-steps", type=int, default=1800)
    parser.add_argument("--small-steps", type=int, default=3000)
    parser.add_argument("--classifier-steps", type=int, default=600)
    parser.add_argument("--n-per-class", type=int, default=400, help="training images per class (VARs)")
    parser.add_argument("--batch", type=int, default=48, help="VAR batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=str(ASSETS))
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    stages = STAGES if args.stage == "all" else (args.stage,)
    torch.manual_seed(args.seed)

    def body() -> None:
        for stage in stages:
            if stage == "tokenizer":
                from core.train.var_vqvae import train as train_vq

                _, meta = train_vq(200, args.tokenizer_steps, seed=args.seed, out=out_dir / "vqvae.safetensors")
                meta = {k: meta[k] for k in ("steps", "psnr", "mse", "codebook_usage", "seconds")}
            elif stage in ("large", "small"):
                from core.train.var_model import train as train_var
                from core.var.vqvae import MultiScaleVQVAE

                vq, _ = MultiScaleVQVAE.load(out_dir / "vqvae.safetensors")
                steps = args.large_steps if stage == "large" else args.small_steps
                model, meta = train_var(vq, stage, steps, n_per_class=args.n_per_class, batch=args.batch,
                                        seed=args.seed)
                meta["vqvae"] = "vqvae.safetensors"
                model.save(out_dir / f"var-{stage}.safetensors", meta)
            else:
                vq_path = out_dir / "vqvae.safetensors"
                meta = train_classifier_stage(steps=args.classifier_steps, seed=args.seed,
                                              out=out_dir / "classifier.safetensors",
                                              vqvae=vq_path if vq_path.exists() else None)
            print_summary({"stage": stage, **meta})

    return run_script(body, (DraftScopeError, ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
