"""Train a Falcon drafter on the distillation corpus: ``python -m core.train.falcon [--no-csgd]``.

Data: the target's last hidden state f_j at every position of the corpus's greedy sequences (one teacher-forced
target forward each, kept in the user cache and shared with the heads trainer) and the tokens. Position j reads
(f_j, x_{j+1}) and predicts f_{j+2} and, through the target's VocabTrim'd head, x_{j+3}, under the relaxed causal
mask (blocks of k = 2). Loss (the paper's): SmoothL1(f̂, f) + 0.1 · (0.9 · KL(p ‖ q) + 0.1 · CE(x, q)), p the target's
own distribution from f_{j+2} over the kept rows, q the drafter's.

Coupled Sequential Glancing Distillation (CSGD), our reading of the paper and its code: a first forward without
gradient counts the wrong tokens N; then ⌊λ · N⌋ block starts, chosen at random, get the ground truth of their own
prediction (f_{j+2}, x_{j+3}) as input — feature and token together ("coupled"), so the other position of the block
learns from a correct partner — and a second forward trains on the rest (glanced positions are left out of the loss,
as GLAT does; the released code keeps them). λ = 0.4 · (E − e) / E decays over the epochs E. ``--no-csgd`` trains the
same drafter without glancing: the paper's ablation.

Held out (5 % of the prompts): top-1 accuracy of the first and the second position of a block (teacher-forced), and
τ of a γ = 2 round at every answer position (1 + P(first right) + P(both right)). One JSON summary line; each epoch
is saved, a rerun resumes.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from core.errors import DraftScopeError
from core.runtime.models import cache_dir, load_model
from core.specdec.drafters import falcon as falcon_mod
from core.specdec.drafters.falcon import BLOCK, FalconNet, relaxed_allowed
from core.specdec.vocab_trim import keep_set
from core.train.corpus import default_corpus, load_corpus
from core.train.heads import FrozenPieces, _check_corpus, full_states, split_sequences, states_cache
from core.train.loop import EpochState, print_summary, run_script, warmup_cosine

DIST_WEIGHT, KL_BETA = 0.1, 0.9  # ω_dist and β (the paper's)
GLANCE_LAMBDA = 0.4  # λ at the first epoch


def _sequence_tensors(frozen: FrozenPieces, states: torch.Tensor, tokens: list[int]):
    """(f_j (n, d), E(x_{j+1}) (n, d), target features f_{j+2} (n, d), labels x_{j+3} as kept indices (n,))."""
    n = len(tokens) - 3
    f = states.float()
    ids = torch.tensor(tokens, dtype=torch.long)
    with torch.no_grad():
        emb = frozen.embed(ids[1:n + 1]).float()
    return f[:n], emb, f[2:n + 2], frozen.where[ids[3:n + 3]]


def _forward(net: FalconNet, frozen: FrozenPieces, feats, emb, allowed) -> torch.Tensor:
    x = net.inputs(feats, emb)
    return net.run(frozen.target.model, x, None, torch.arange(x.shape[0]), allowed)


def sequence_loss(net: FalconNet, frozen: FrozenPieces, states: torch.Tensor, tokens: list[int], glance: float,
                  rng: random.Random) -> torch.Tensor | None:
    if len(tokens) < 5:
        return None
    feats, emb, target_f, labels = _sequence_tensors(frozen, states, tokens)
    n = feats.shape[0]
    allowed = relaxed_allowed(n)
    use = torch.ones(n, dtype=torch.bool)
    if glance > 0:  # CSGD: glance at the answers of ⌊λ · wrong⌋ block starts
        with torch.no_grad():
            guess = (_forward(net, frozen, feats, emb, allowed) @ frozen.weight_kD.T).argmax(-1)
        wrong = int((guess != labels).sum())
        starts = list(range(0, n, BLOCK))
        chosen = rng.sample(starts, min(len(starts), int(glance * wrong)))
        if chosen:
            feats, emb = feats.clone(), emb.clone()
            for j in chosen:
                feats[j] = target_f[j]
                with torch.no_grad():
                    emb[j] = frozen.embed(torch.tensor(tokens[j + 3])).float()
                use[j] = False
    pred = _forward(net, frozen, feats, emb, allowed)[use]
    goal = target_f[use]
    logq = torch.log_softmax(pred @ frozen.weight_kD.T, -1)
    with torch.no_grad():
        p = torch.softmax(goal @ frozen.weight_kD.T, -1)
    kl = (p * (torch.log(p.clamp_min(1e-12)) - logq)).sum(-1).mean()
    lab = labels[use]
    ce = torch.nn.functional.nll_loss(logq[lab >= 0], lab[lab >= 0]) if (lab >= 0).any() else logq.new_zeros(())
    reg = torch.nn.functional.smooth_l1_loss(pred, goal)
    return reg + DIST_WEIGHT * (KL_BETA * kl + (1 - KL_BETA) * ce)


@torch.no_grad()
def evaluate(net: FalconNet, frozen: FrozenPieces, states: list[torch.Tensor], sequences: list) -> dict:
    """Teacher-forced held-out top-1 accuracy of the first and second position of a block, on answer positions;
    τ of a γ = 2 round = 1 + P(first right) + P(first and second right), averaged over the blocks."""
    first = second = both = blocks = 0
    for h, s in zip(states, sequences):
        if len(s.tokens) < 5:
            continue
        feats, emb, _, _ = _sequence_tensors(frozen, h, s.tokens)
        n = feats.shape[0]
        pred = _forward(net, frozen, feats, emb, relaxed_allowed(n))
        right = frozen.keep[(pred @ frozen.weight_kD.T).argmax(-1)] == torch.tensor(s.tokens[3:n + 3])
        lo = max(0, len(s.prompt) - 3)  # blocks whose first prediction is an answer token
        lo += lo % BLOCK
        for j in range(lo, n - 1, BLOCK):
            a, b = bool(right[j]), bool(right[j + 1])
            first += a
            second += b
            both += a and b
            blocks += 1
    blocks = max(1, blocks)
    return {"top1_pos1": round(first / blocks, 4), "top1_pos2": round(second / blocks, 4),
            "pos2_given_pos1": round(both / max(1, first), 4), "tau_g2": round(1 + (first + both) / blocks, 4),
            "blocks": blocks}


def train(target_name: str = "smollm2-135m", csgd: bool = True, epochs: int = 4, lr: float = 1e-3,
          accumulate: int = 4, vocab_trim: int = 8192, corpus: str | None = None, holdout: float = 0.05,
          seed: int = 0, max_sequences: int | None = None, out: str | None = None, target=None, corpus_obj=None,
          state_dir: str | Path | None = None) -> dict:
    if epochs < 1 or accumulate < 1 or lr <= 0:
        raise DraftScopeError("--epochs and --accumulate must be at least 1 and --lr above 0")
    t0 = time.perf_counter()
    target = target or load_model(target_name)
    corpus_obj = corpus_obj or load_corpus(target, corpus or default_corpus(target.name), modes=("greedy",))
    _check_corpus(corpus_obj)
    val_seqs, train_seqs = split_sequences(corpus_obj.sequences, holdout, seed)
    states = full_states(target, train_seqs, states_cache(corpus_obj.folder, "train", holdout, seed, state_dir))
    val_states = full_states(target, val_seqs, states_cache(corpus_obj.folder, "val", holdout, seed, state_dir))
    keep, trim = keep_set(target, min(vocab_trim, target.vocab_size))
    torch.manual_seed(seed)
    net = FalconNet(target).float().train()
    frozen = FrozenPieces(target, keep)
    order_n = min(len(train_seqs), max_sequences) if max_sequences else len(train_seqs)
    steps = epochs * math.ceil(order_n / accumulate)
    optim = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    sched = warmup_cosine(optim, steps, warmup)
    settings = {"target": target.name, "csgd": csgd, "epochs": epochs, "lr": lr, "accumulate": accumulate,
                "vocab_trim": int(keep.numel()), "holdout": holdout, "seed": seed, "max_sequences": max_sequences,
                "corpus": corpus_obj.folder.name}
    state = EpochState(Path(state_dir) if state_dir else cache_dir() / "heads-train", "falcon", settings)
    history, start = state.resume(net, optim, sched)
    rng = random.Random(seed)
    orders = [rng.sample(range(len(train_seqs)), order_n) for _ in range(epochs)]
    bar = tqdm(total=epochs * order_n, initial=start * order_n, desc="falcon" + (" csgd" if csgd else ""),
               unit="seq")
    for epoch in range(start, epochs):
        glance = GLANCE_LAMBDA * (epochs - epoch) / epochs if csgd else 0.0
        t_epoch, total, counted = time.perf_counter(), 0.0, 0
        glance_rng = random.Random(seed * 1000 + epoch)
        for i, j in enumerate(orders[epoch]):
            loss = sequence_loss(net, frozen, states[j], train_seqs[j].tokens, glance, glance_rng)
            if loss is not None:
                (loss / accumulate).backward()
                total, counted = total + float(loss.detach()), counted + 1
            if (i + 1) % accumulate == 0 or i + 1 == order_n:
                torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
                optim.step()
                sched.step()
                optim.zero_grad(set_to_none=True)
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / max(1, counted):.4f}", glance=f"{glance:.2f}")
        net.eval()
        history.append({"epoch": epoch + 1, "glance_lambda": round(glance, 3),
                        "train_loss": round(total / max(1, counted), 5),
                        "seconds": round(time.perf_counter() - t_epoch, 1),
                        "val": evaluate(net, frozen, val_states, val_seqs)})
        net.train()
        state.save(net, optim, sched, history)
    bar.close()
    net.eval()
    final = history[-1]["val"]
    path = Path(out) if out else falcon_mod.default_checkpoint(target.name)
    falcon_mod.save(path, net, keep, target, {"trained": True, "csgd": csgd, "epochs": epochs, "val": final,
                                               "coverage": trim.coverage, "corpus": corpus_obj.folder.name})
    return {"checkpoint": str(path), **settings, "train_sequences": order_n, "history": history, "val": final,
            "bytes": path.stat().st_size, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train.falcon", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m")
    parser.add_argument("--no-csgd", action="store_true", help="train without glancing (the paper's ablation)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--accumulate", type=int, default=4, help="sequences per optimiser step")
    parser.add_argument("--vocab-trim", type=int, default=8192)
    parser.add_argument("--corpus", default=None)
    parser.add_argument("--max-sequences", type=int, default=None, help="train on at most N sequences per epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="checkpoint (default: assets/heads/falcon-TARGET.safetensors)")
    args = parser.parse_args(argv)

    def body():
        print_summary(train(args.target, not args.no_csgd, args.epochs, args.lr, args.accumulate, args.vocab_trim,
                            args.corpus, seed=args.seed, max_sequences=args.max_sequences, out=args.out))

    return run_script(body)


if __name__ == "__main__":
    sys.exit(main())
