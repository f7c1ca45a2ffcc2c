"""Train S2D's nested exits for a base model: ``python -m core.train.sorted --base smollm2-135m``.

1. Text the base model writes itself from the project's prompts (shared with ``core.train.kangaroo``, cached).
2. The teacher: the full base model's next-token probabilities over its top 64 tokens, renormalised.
3. Sorted training: LoRA factors on the first F layers (shared by every exit) and one norm per exit, with the frozen
   embedding and LM head, minimise the mean over exits of the soft cross-entropy against the teacher. Every exit is
   trained at once, on the same shared layers, as in S2D's sorted fine-tuning; what is saved is only the factors and
   the norms (``core.specdec.drafters.sorted_exits``).
Held-out sequences report, per exit, top-1 agreement with the teacher and Σ min(p, q) over the teacher's top 64,
before and after training. Progress goes through tqdm.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from core.errors import DraftScopeError
from core.runtime.layers import check_layer_slicing, embed, run_layers
from core.runtime.models import load_model
from core.runtime.timing import elapsed
from core.specdec.drafters.sorted import default_exits_path
from core.specdec.drafters.sorted_exits import DEFAULT_RANK, SortedExits, default_exit_layers
from core.train.data import TEACHER_TOPK, teacher_topk, training_sequences
from core.train.loop import fit, print_summary, run_script, split_holdout


def exit_log_probs(model, exits: SortedExits, ids: list[int]) -> list[torch.Tensor]:
    """log q at every position of ``ids`` from every exit: a list of (n, V) float32, shallowest exit first."""
    with torch.no_grad():
        x = embed(model, ids)
    out, start = [], 0
    for k, stop in enumerate(exits.exit_layers):
        x = run_layers(model, x, start, stop, None, 0, layers=exits.layers)
        out.append(torch.log_softmax(model.lm_head(exits.norms[k](x))[0].float(), -1))
        start = stop
    return out


def _loss_and_metrics(model, exits: SortedExits, feat: dict) -> tuple[torch.Tensor, list[float], list[float], int]:
    """Mean soft cross-entropy over exits, and per exit the top-1 agreements and Σ min(p, q) summed over tokens."""
    device = next(model.parameters()).device
    p = feat["p"].to(device)
    p = p / p.sum(-1, keepdim=True)
    idx = feat["idx"].to(device)
    losses, agree, overlap = [], [], []
    for logq in exit_log_probs(model, exits, feat["ids"]):
        logq_top = logq.gather(-1, idx)
        losses.append(-(p * logq_top).sum(-1).mean())
        with torch.no_grad():
            agree.append(float((logq.argmax(-1) == idx[:, 0]).float().sum()))
            overlap.append(float(torch.minimum(p, logq_top.exp()).sum()))
    return torch.stack(losses).mean(), agree, overlap, len(feat["ids"])


def evaluate(model, exits: SortedExits, feats: list[dict]) -> list[dict]:
    """Per exit: held-out top-1 agreement and Σ min(p, q) over the teacher's top k, per token."""
    k = len(exits.exit_layers)
    agree, overlap, n = [0.0] * k, [0.0] * k, 0
    with torch.no_grad():
        for feat in feats:
            _, a, o, m = _loss_and_metrics(model, exits, feat)
            agree = [x + y for x, y in zip(agree, a)]
            overlap = [x + y for x, y in zip(overlap, o)]
            n += m
    return [{"exit_layer": e, "top1_agreement": round(a / max(n, 1), 4), "sum_min_pq_topk": round(o / max(n, 1), 4)}
            for e, a, o in zip(exits.exit_layers, agree, overlap)]


def train(base_name: str = "smollm2-135m", exit_layers: list[int] | None = None, n_prompts: int | None = None,
          max_new_tokens: int = 160, batch: int = 16, epochs: int = 1, lr: float = 1e-3, accumulate: int = 8,
          seed: int = 0, out: str | Path | None = None, max_len: int = 256, holdout: float = 0.05,
          rank: int = DEFAULT_RANK, max_sequences: int | None = None) -> dict:
    t0 = time.perf_counter()
    base = load_model(base_name)
    check_layer_slicing(base.model, sliding_ok=True)
    exit_layers = exit_layers or default_exit_layers(base.n_layers)
    if epochs < 1 or rank < 1:
        raise DraftScopeError("epochs and rank must be at least 1")
    prompts, sequences = training_sequences(base, n_prompts, max_new_tokens, batch, seed)
    t_gen = elapsed(t0, base.device)
    rng = random.Random(seed)
    sequences = [s[:max_len] for s in sequences]
    rng.shuffle(sequences)
    sequences = sequences[:max_sequences] if max_sequences else sequences
    feats = []
    for seq in tqdm(sequences, desc="teacher", unit="seq"):
        p, idx = teacher_topk(base, seq)
        feats.append({"ids": seq, "p": p, "idx": idx})
    val, train_set = split_holdout(feats, holdout)

    base.model.requires_grad_(False)
    exits = SortedExits(base.model, exit_layers, rank=rank).train()
    before = evaluate(base.model, exits, val) if val else []
    params = [p for p in exits.parameters() if p.requires_grad]
    history = fit(params, train_set, lambda feat: _loss_and_metrics(base.model, exits, feat)[0], epochs, lr, accumulate,
                  rng, (lambda: evaluate(base.model, exits, val)) if val else None)
    exits.eval()
    seconds = elapsed(t0, base.device)
    meta = {"method": "sorted", "base": base.name, "n_layers": base.n_layers, "vocab": base.vocab_size,
            "prompts": len(prompts), "sequences": len(sequences), "train_tokens": sum(len(f["ids"]) for f in train_set),
            "epochs": epochs, "lr": lr, "teacher_topk": TEACHER_TOPK, "seed": seed, "max_len": max_len,
            "before": before, "history": history, "generate_seconds": round(t_gen, 1),
            "total_seconds": round(seconds, 1), "device": str(base.device)}
    path = Path(out) if out else default_exits_path(base.name)
    exits.save(path, meta)
    print_summary({"saved": str(path), "exit_layers": exit_layers, "train_tokens": meta["train_tokens"],
                   "before": before, "after": history[-1].get("val"), "total_seconds": meta["total_seconds"]}, indent=1)
    return meta


def _layers(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise DraftScopeError(f"--exit-layers takes integers separated by commas, got '{text}'") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train.sorted", description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="smollm2-135m", help="the model whose first layers become the exits")
    parser.add_argument("--exit-layers", default=None, help="e.g. 5,7,10 (default: half, three quarters and all of "
                                                            "the first third)")
    parser.add_argument("--prompts", type=int, default=None, help="use the first N training prompts (default all)")
    parser.add_argument("--max-sequences", type=int, default=None, help="train on at most N generated sequences")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--max-len", type=int, default=256, help="cut sequences to this many tokens")
    parser.add_argument("--batch", type=int, default=16, help="generation batch size")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--accumulate", type=int, default=8, help="sequences per optimizer step")
    parser.add_argument("--rank", type=int, default=DEFAULT_RANK)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="exits file (default assets/sorted/BASE.safetensors)")
    args = parser.parse_args(argv)
    return run_script(lambda: train(args.base, _layers(args.exit_layers), args.prompts, args.max_new_tokens,
                                    args.batch, args.epochs, args.lr, accumulate=args.accumulate, seed=args.seed,
                                    out=args.out, max_len=args.max_len, rank=args.rank,
                                    max_sequences=args.max_sequences))


if __name__ == "__main__":
    sys.exit(main())
