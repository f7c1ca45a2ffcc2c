"""Train a Kangaroo adapter for a target: ``python -m core.train.kangaroo --target smollm2-135m``.

1. Generate training text with the target itself (sampled, chat template) from ``core.train.prompts``.
2. Record, per token, the target's layer-ℓ hidden state (the adapter's input) and its top-k next-token
   probabilities (the teacher, renormalised over the top k).
3. Train the adapter (initialised from layer ℓ's attention and the final norm) with the soft cross-entropy between
   the teacher and softmax(head(adapter(h_ℓ))); the target, its shallow layers and its head stay frozen.
Held-out sequences report top-1 agreement and Σ min(p, q) over the teacher's top k (a lower bound of the
acceptance rate α of greedy-free sampling) before and after training. Progress goes through tqdm.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import DynamicCache

from core.errors import DraftScopeError
from core.runtime.layers import FULL, check_layer_slicing, embed, rotary, run_layers
from core.runtime.models import load_model
from core.runtime.timing import elapsed
from core.specdec.drafters.kangaroo import default_adapter_path
from core.specdec.drafters.kangaroo_adapter import KangarooAdapter
from core.train.data import TEACHER_TOPK, teacher_topk, training_sequences
from core.train.loop import fit, print_summary, run_script, split_holdout


@torch.no_grad()  # not inference_mode: these tensors feed autograd later
def record_features(target, sequences: list[list[int]], exit_layer: int) -> list[dict]:
    """Per sequence: layer-ℓ states (n, d) in fp16 and the teacher's top-k probabilities and ids (n, k)."""
    feats = []
    for seq in tqdm(sequences, desc="record", unit="seq"):
        hidden = run_layers(target.model, embed(target.model, seq), 0, exit_layer,
                            DynamicCache(config=target.model.config), 0)
        p, idx = teacher_topk(target, seq)
        feats.append({"h": hidden[0].to(torch.float16).cpu(), "p": p, "idx": idx})
    return feats


def _loss_and_metrics(target, adapter, feat: dict) -> tuple[torch.Tensor, float, float, int]:
    model = target.model
    param = next(model.parameters())
    h = feat["h"].to(device=param.device, dtype=param.dtype)[None]
    positions = torch.arange(h.shape[1], device=h.device)[None]
    logq = torch.log_softmax(model.lm_head(adapter(h, rotary(model, h, positions, FULL))).float()[0], -1)
    p = feat["p"].to(h.device)
    p = p / p.sum(-1, keepdim=True)
    idx = feat["idx"].to(h.device)
    logq_top = logq.gather(-1, idx)
    loss = -(p * logq_top).sum(-1).mean()
    with torch.no_grad():
        agree = float((logq.argmax(-1) == idx[:, 0]).float().sum())
        overlap = float(torch.minimum(p, logq_top.exp()).sum())
    return loss, agree, overlap, h.shape[1]


def evaluate(target, adapter, feats: list[dict]) -> dict:
    agree = overlap = n = 0.0
    with torch.no_grad():
        for feat in feats:
            _, a, o, k = _loss_and_metrics(target, adapter, feat)
            agree, overlap, n = agree + a, overlap + o, n + k
    return {"top1_agreement": agree / max(n, 1), "sum_min_pq_topk": overlap / max(n, 1), "tokens": int(n)}


def train(target_name: str = "smollm2-135m", exit_layer: int = 6, n_prompts: int | None = None,
          max_new_tokens: int = 160, batch: int = 16, epochs: int = 8, lr: float = 1e-3, accumulate: int = 8,
          seed: int = 0, out: str | Path | None = None, max_len: int = 384, holdout: float = 0.05) -> dict:
    t0 = time.perf_counter()
    target = load_model(target_name)
    check_layer_slicing(target.model, sliding_ok=True)
    if not 1 <= exit_layer < target.n_layers:
        raise DraftScopeError(f"exit layer must be in 1..{target.n_layers - 1}, got {exit_layer}")
    prompts, sequences = training_sequences(target, n_prompts, max_new_tokens, batch, seed)
    t_gen = elapsed(t0, target.device)
    sequences = [s[:max_len] for s in sequences]
    feats = record_features(target, sequences, exit_layer)
    rng = random.Random(seed)
    rng.shuffle(feats)
    val, train_set = split_holdout(feats, holdout)

    target.model.requires_grad_(False)
    adapter = KangarooAdapter.from_target(target.model, exit_layer).train()
    before = evaluate(target, adapter, val) if val else {}
    history = fit(list(adapter.parameters()), train_set, lambda feat: _loss_and_metrics(target, adapter, feat)[0],
                  epochs, lr, accumulate, rng, (lambda: evaluate(target, adapter, val)) if val else None)
    adapter.eval()
    seconds = elapsed(t0, target.device)
    meta = {"method": "kangaroo", "target": target.name, "exit_layer": exit_layer, "n_layers": target.n_layers,
            "hidden_size": target.model.config.hidden_size, "vocab": target.vocab_size,
            "prompts": len(prompts), "sequences": len(sequences), "train_tokens": sum(len(f["p"]) for f in train_set),
            "epochs": epochs, "lr": lr, "teacher_topk": TEACHER_TOPK, "seed": seed, "before": before,
            "history": history, "generate_seconds": round(t_gen, 1), "total_seconds": round(seconds, 1),
            "device": str(target.device)}
    path = Path(out) if out else default_adapter_path(target.name)
    adapter.save(path, meta)
    print_summary({"saved": str(path), **{k: meta[k] for k in ("exit_layer", "sequences", "train_tokens", "before",
                                                                 "total_seconds")},
                   "after": history[-1].get("val")}, indent=1)
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train.kangaroo", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m")
    parser.add_argument("--exit-layer", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=None, help="use the first N training prompts (default all)")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--batch", type=int, default=16, help="generation batch size")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="adapter file (default assets/kangaroo/TARGET.safetensors)")
    args = parser.parse_args(argv)
    return run_script(lambda: train(args.target, args.exit_layer, args.prompts, args.max_new_tokens, args.batch,
                                    args.epochs, args.lr, seed=args.seed, out=args.out))


if __name__ == "__main__":
    sys.exit(main())
