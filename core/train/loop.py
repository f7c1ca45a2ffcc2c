"""What the training scripts share: a held-out split, AdamW with a cosine schedule (the self-drafters), the per-epoch
state a rerun resumes from (the heads and Falcon), and the command-line tail (a JSON summary on stdout; an ``error:``
line on stderr and exit status 2)."""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from core.errors import DraftScopeError


def split_holdout(items: list, holdout: float) -> tuple[list, list]:
    """(held-out, training) items: the first ``holdout`` fraction (at least one when there are two or more)."""
    n_val = max(1, int(len(items) * holdout)) if len(items) > 1 else 0
    return items[:n_val], items[n_val:] or items


def fit(params: list[torch.nn.Parameter], train_set: list, loss_of: Callable[[object], torch.Tensor], epochs: int,
        lr: float, accumulate: int, rng: random.Random, validate: Callable[[], object] | None = None,
        after_item: Callable[[int], None] | None = None) -> list[dict]:
    """``epochs`` shuffled passes over ``train_set``: gradients of ``loss_of(item)`` accumulated over ``accumulate``
    items and clipped at norm 1, AdamW (no weight decay) with a cosine schedule to zero. Returns one dict per epoch:
    the mean training loss and, with ``validate``, its result. ``after_item(n)`` is called after each item with
    the number of items seen so far (after the optimiser step when one was due). tqdm shows progress."""
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps = max(1, epochs * math.ceil(len(train_set) / accumulate))
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    history = []
    bar = tqdm(total=epochs * len(train_set), desc="train", unit="seq")
    for epoch in range(epochs):
        rng.shuffle(train_set)
        total = 0.0
        for i, item in enumerate(train_set):
            loss = loss_of(item)
            (loss / accumulate).backward()
            total += float(loss.detach())
            if (i + 1) % accumulate == 0 or i + 1 == len(train_set):
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optim.step()
                sched.step()
                optim.zero_grad(set_to_none=True)
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / (i + 1):.3f}")
            if after_item is not None:
                after_item(epoch * len(train_set) + i + 1)
        history.append({"epoch": epoch + 1, "train_loss": round(total / len(train_set), 4),
                        **({"val": validate()} if validate else {})})
    bar.close()
    return history


def warmup_cosine(optim, steps: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A linear warm-up over ``warmup`` steps, then a cosine to zero at ``steps`` (the heads and Falcon trainers)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))


class EpochState:
    """A resumable run's state after each finished epoch, in one file named by the run's settings: the network, the
    optimiser, the schedule and the history. ``resume`` returns (history, epochs done); ``save`` writes atomically."""

    def __init__(self, folder: Path, name: str, settings: dict):
        tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        self.path = Path(folder) / f"{name}-{tag}.pt"

    def resume(self, net: torch.nn.Module, optim, sched) -> tuple[list[dict], int]:
        if not self.path.is_file():
            return [], 0
        state = torch.load(self.path, weights_only=True)
        net.load_state_dict(state["net"])
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        return json.loads(state["history"]), int(state["epoch"])

    def save(self, net: torch.nn.Module, optim, sched, history: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        torch.save({"net": net.state_dict(), "optim": optim.state_dict(), "sched": sched.state_dict(),
                    "history": json.dumps(history), "epoch": len(history)}, tmp)
        tmp.replace(self.path)


def print_summary(summary: dict, indent: int | None = None) -> None:
    """A script's results as JSON on stdout (one line unless ``indent``)."""
    print(json.dumps(summary, indent=indent), flush=True)


def run_script(body: Callable[[], object], errors: tuple[type[Exception], ...] = (DraftScopeError,)) -> int:
    """A training script's exit status: 0 once ``body()`` returns; 2 after an ``errors`` exception, reported as one
    ``error: …`` line (its first line) on stderr."""
    try:
        body()
    except errors as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    return 0
