"""Train Medusa or Hydra draft heads on the distillation corpus: ``python -m core.train.heads --arch medusa``.

The target stays frozen (Medusa-1). The corpus (``python -m core.train.corpus --modes greedy --states``) holds, for
each answer token a_i, the target's last hidden state h at the position that predicts it; so row i is (h_t, x_{t+1} =
a_i), head k's label is a_{i+k+1} and Hydra's head k reads the embeddings of a_i … a_{i+k} (teacher forcing: the
target's own tokens stand for the heads' earlier picks). Loss: Σ_k 0.8^k · CE(head k) over the VocabTrim'd head
(``--vocab-trim`` rows, the shipped token counts; labels outside it are skipped), or with ``--loss teacher`` the
cross-entropy against the target's own distribution at that position (its top 64 in the corpus, renormalised over the
kept rows): Hydra++'s teacher loss. Medusa and Hydra trained with the same command and data are comparable.

Held-out prompts (5 %) are never trained on; per head they give top-1 / top-5 accuracy (teacher-forced) and, for the
chain the heads draft greedily (each head's top-1 after the previous heads' own picks), the accepted run length: τ of
greedy speculative decoding with γ = K on the target's own greedy answers. Each epoch is saved in the user cache and a
rerun of the same command resumes after the last finished epoch. Ends with one JSON summary line.
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
from core.runtime.layers import capture_final_hidden, run_layers
from core.runtime.models import cache_dir, load_model
from core.specdec.drafters import heads as heads_mod
from core.specdec.drafters.heads import ARCHS, DraftHeads, HeadsConfig, prefix_layer
from core.specdec.vocab_trim import keep_set
from core.train.corpus import default_corpus, load_corpus
from core.train.loop import EpochState, print_summary, run_script, warmup_cosine

LOSSES = ("ce", "teacher")
HEAD_DECAY = 0.8  # Medusa's λ_k = 0.8^k
TOPK_ACC = 5
RANKS = 8  # per-rank accuracies kept for choosing a static tree (core.specdec.drafters.heads.suggested_paths)


# ------------------------------------------------------------------------------------------------ data
class HeadRows:
    """Every answer position of some corpus sequences: h (N, d) float32 and the window of K + 1 answer tokens from
    a_i (N, K + 1), −1 past the answer's end; with the teacher loss also the target's top-64 at each of those
    positions."""

    def __init__(self, sequences: list, n_heads: int, teacher: bool):
        hs, windows, t_ids, t_p = [], [], [], []
        for s in sequences:
            n = len(s.answer)
            answer = torch.tensor(s.answer + [-1] * (n_heads + 1), dtype=torch.long)
            hs.append(s.extra["hidden"].float())
            windows.append(torch.stack([answer[j:j + n] for j in range(n_heads + 1)], dim=1))
            if teacher:
                pad = n_heads + 1
                ids = torch.cat([s.ids.long(), torch.zeros(pad, s.ids.shape[1], dtype=torch.long)])
                p = torch.cat([s.p.float(), torch.zeros(pad, s.p.shape[1])])
                t_ids.append(torch.stack([ids[j:j + n] for j in range(1, n_heads + 1)], dim=1))
                t_p.append(torch.stack([p[j:j + n] for j in range(1, n_heads + 1)], dim=1))
        self.h = torch.cat(hs)  # (N, d)
        self.offsets = [0]  # sequence j's rows are offsets[j] .. offsets[j + 1] − 1
        for h in hs:
            self.offsets.append(self.offsets[-1] + h.shape[0])
        self.window = torch.cat(windows)  # (N, K + 1): a_i … a_{i+K}
        self.teacher_ids = torch.cat(t_ids) if teacher else None  # (N, K, 64): the target's top ids for head k
        self.teacher_p = torch.cat(t_p) if teacher else None

    def __len__(self) -> int:
        return self.h.shape[0]


class AllRows(HeadRows):
    """Every position of some sequences, prompt included (``--positions all``): h = the target's state f_j (fp16),
    the window x_{j+1} … x_{j+K+1}, and for head k the row of f_{j+k+1}, whose distribution softmax(W f) is the
    teacher (the target's own, given the true prefix); −1 past a sequence's end."""

    def __init__(self, states: list[torch.Tensor], sequences: list, n_heads: int):
        windows, nexts, base = [], [], 0
        self.offsets = [0]
        for h, s in zip(states, sequences):
            n = h.shape[0]
            tokens = torch.tensor(s.tokens[1:] + [-1] * (n_heads + 1), dtype=torch.long)
            windows.append(torch.stack([tokens[i:i + n] for i in range(n_heads + 1)], dim=1))
            j = torch.arange(n)
            nexts.append(torch.stack([torch.where(j + k + 1 < n, base + j + k + 1, -1) for k in range(n_heads)], 1))
            base += n
            self.offsets.append(base)
        self.h = torch.cat(states)  # (N, d) fp16
        self.window = torch.cat(windows)
        self.next_row = torch.cat(nexts)  # (N, K)
        self.teacher_ids = self.teacher_p = None


def _check_corpus(corpus) -> None:
    if not corpus.sequences or "hidden" not in corpus.sequences[0].extra:
        raise DraftScopeError(f"the corpus at {corpus.folder} has no hidden states; build one with "
                              "python -m core.train.corpus --modes greedy --states")


def split_sequences(sequences: list, holdout: float, seed: int) -> tuple[list, list]:
    """(held-out, training): whole prompts, chosen by a seeded shuffle."""
    order = list(range(len(sequences)))
    random.Random(seed).shuffle(order)
    n_val = max(1, int(len(order) * holdout)) if len(order) > 1 else 0
    val = set(order[:n_val])
    return ([s for i, s in enumerate(sequences) if i in val],
            [s for i, s in enumerate(sequences) if i not in val] or sequences)


# ------------------------------------------------------------------------------------------------ model pieces
class FrozenPieces:
    """What a trainer on the target's states keeps frozen: the kept rows of the target's LM head (kept, d) float32,
    its input embedding, and the map token id → kept index (−1 outside). The heads and Falcon trainers share it."""

    def __init__(self, target, keep: torch.Tensor):
        self.target = target
        self.keep = keep
        self.weight_kD = target.model.lm_head.weight.detach()[keep].float()
        self.embed = target.model.get_input_embeddings()
        self.where = torch.full((target.vocab_size,), -1, dtype=torch.long)
        self.where[keep] = torch.arange(keep.numel())


class Trainable(FrozenPieces):
    """Heads on the frozen pieces."""

    def __init__(self, target, heads: DraftHeads, keep: torch.Tensor):
        super().__init__(target, keep)
        self.heads = heads

    def logits(self, k: int, h_nD: torch.Tensor, window_nX: torch.Tensor) -> torch.Tensor:
        """Head k's trimmed logits (n, kept) with the branch a_i … a_{i+k} (teacher-forced)."""
        emb = None
        if self.heads.grounded:
            with torch.no_grad():
                emb = self.embed(window_nX[:, :k + 1].clamp_min(0)).float()
        return self.heads.features(k, h_nD, emb) @ self.weight_kD.T


def batch_loss(model: Trainable, rows: HeadRows, idx: torch.Tensor, loss: str,
               h: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_k 0.8^k · (head k's loss) over the rows ``idx``; ``h`` replaces their stored states (Hydra++: the prefix
    layer's outputs)."""
    h, window = (rows.h[idx].float() if h is None else h), rows.window[idx]
    total = h.new_zeros(())
    for k in range(model.heads.config.n_heads):
        label = window[:, k + 1]
        valid = label >= 0
        if loss == "ce":
            mapped = model.where[label.clamp_min(0)]
            valid &= mapped >= 0
        if not valid.any():
            continue
        logits = model.logits(k, h[valid], window[valid])
        if loss == "ce":
            term = torch.nn.functional.cross_entropy(logits, mapped[valid])
        elif isinstance(rows, AllRows):  # the target's distribution from its own state at that position
            nxt = rows.next_row[idx][valid, k]
            ok = nxt >= 0
            with torch.no_grad():
                p = torch.softmax(rows.h[nxt.clamp_min(0)].float() @ model.weight_kD.T, -1)
            term = -(p[ok] * torch.log_softmax(logits[ok], -1)).sum(-1).mean() if ok.any() else logits.sum() * 0
        else:  # the target's top-64 at that position, restricted to the kept rows and renormalised
            ids, p = rows.teacher_ids[idx][valid, k], rows.teacher_p[idx][valid, k]
            cols = model.where[ids]
            p = torch.where(cols >= 0, p, torch.zeros_like(p))
            p = p / p.sum(-1, keepdim=True).clamp_min(1e-8)
            logq = torch.log_softmax(logits, -1).gather(1, cols.clamp_min(0))
            term = -(p * logq).sum(-1).mean()
        total = total + HEAD_DECAY ** k * term
    return total


@torch.no_grad()
def evaluate(model: Trainable, rows: HeadRows, batch: int = 2048, h: torch.Tensor | None = None) -> dict:
    """Per head: teacher-forced top-1 / top-5 accuracy on kept and unkept labels alike (an unkept label is a miss);
    the greedy chain's mean accepted run (each head after the heads' own earlier picks) and τ = 1 + that run."""
    n_heads = model.heads.config.n_heads
    top1, top5, seen = [0] * n_heads, [0] * n_heads, [0] * n_heads
    at_rank = [[0] * RANKS for _ in range(n_heads)]  # label = the head's r-th candidate
    run_total, run_rows = 0, 0
    for lo in range(0, len(rows), batch):
        h_nD, window = (rows.h if h is None else h)[lo:lo + batch], rows.window[lo:lo + batch]
        alive = torch.ones(h_nD.shape[0], dtype=torch.bool)
        own = window.clone()  # the branch the greedy chain feeds: the heads' own picks
        run = torch.zeros(h_nD.shape[0], dtype=torch.long)
        for k in range(n_heads):
            label = window[:, k + 1]
            valid = label >= 0
            logits = model.logits(k, h_nD, window)
            top = model.keep[logits.topk(RANKS, -1).indices]  # (n, RANKS) token ids, best first
            hits = (top == label[:, None]) & valid[:, None]
            top1[k] += int(hits[:, 0].sum())
            top5[k] += int(hits[:, :TOPK_ACC].any(-1).sum())
            for r in range(RANKS):
                at_rank[k][r] += int(hits[:, r].sum())
            seen[k] += int(valid.sum())
            pick = model.keep[model.logits(k, h_nD, own).argmax(-1)] if model.heads.grounded else top[:, 0]  # (n,)
            alive &= (pick == label) & valid
            run += alive.long()
            own[:, k + 1] = pick
        full = window[:, n_heads] >= 0  # rows where every head has a label
        run_total += int(run[full].sum())
        run_rows += int(full.sum())
    mean_run = run_total / max(1, run_rows)
    return {"top1": [round(a / max(1, s), 4) for a, s in zip(top1, seen)],
            "top5": [round(a / max(1, s), 4) for a, s in zip(top5, seen)],
            "rank_acc": [[round(a / max(1, s), 4) for a in row] for row, s in zip(at_rank, seen)],
            "chain_accepted": round(mean_run, 4), "chain_tau": round(1 + mean_run, 4), "rows": run_rows}


# ------------------------------------------------------------------------------------------------ Hydra++
@torch.no_grad()
def full_states(target, sequences: list, cache: str | Path | None = None) -> list[torch.Tensor]:
    """The target's last hidden state at every position but the last of each sequence (prompt included: the prefix
    layer and Falcon attend to all of them), fp16, one teacher-forced forward each; kept in ``cache`` (a file) when
    given, so a rerun or another trainer reads them back."""
    cache = Path(cache) if cache else None
    if cache is not None and cache.is_file():
        stored = torch.load(cache, weights_only=True)
        if len(stored) == len(sequences) and all(len(h) == len(s.tokens) - 1 for h, s in zip(stored, sequences)):
            return stored
    out = []
    for s in tqdm(sequences, desc="target states", unit="seq"):
        with capture_final_hidden(target.model) as seen:
            target.model(torch.tensor([s.tokens[:-1]], device=target.device), logits_to_keep=1)
        out.append(seen[-1][0].to(torch.float16).cpu())
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.tmp")
        torch.save(out, tmp)
        tmp.replace(cache)
    return out


def states_cache(corpus_folder: Path, part: str, holdout: float, seed: int, state_dir=None) -> Path:
    """Where the full states of one split of a corpus are kept (the heads and Falcon trainers share them)."""
    root = Path(state_dir) if state_dir else cache_dir() / "heads-train"
    return root / f"states-{corpus_folder.name}-{part}-h{holdout:g}-s{seed}.pt"


def prefix_rows(model: Trainable, target, states: list[torch.Tensor], sequences: list,
                which: list[int]) -> torch.Tensor:
    """The prefix layer over sequences ``which`` (causal, no cache); its outputs at their answer rows, stacked in
    HeadRows order (n, d)."""
    out = []
    for j in which:
        g = run_layers(target.model, states[j].float()[None], 0, 1, None, 0, layers=[model.heads.prefix])[0]
        first = len(sequences[j].prompt) - 1
        out.append(g[first:first + len(sequences[j].answer)])
    return torch.cat(out)


def _rows_of(rows: HeadRows, which: list[int]) -> torch.Tensor:
    return torch.cat([torch.arange(rows.offsets[j], rows.offsets[j + 1]) for j in which])


# ------------------------------------------------------------------------------------------------ training
def train(target_name: str = "smollm2-135m", arch: str = "medusa", n_heads: int = 4, n_layers: int = 1,
          loss: str = "ce", epochs: int = 2, lr: float = 1e-3, batch: int = 256, vocab_trim: int = 8192,
          corpus: str | None = None, holdout: float = 0.05, seed: int = 0, max_rows: int | None = None,
          out: str | None = None, target=None, corpus_obj=None, state_dir: str | Path | None = None,
          prefix: bool = False, positions: str = "answers") -> dict:
    """Train heads and save them (``out``, default the shipped path); the JSON summary. ``state_dir`` holds the
    per-epoch training state a rerun resumes from (default: the user cache). ``prefix``: Hydra++'s prefix layer
    (trained with the heads, on whole sequences: a step takes about ``batch`` answer positions' worth of them).
    ``positions="all"``: train on every position, prompt included, against the target's own distribution there (the
    teacher loss, from the target's states; no prefix layer)."""
    if arch not in ARCHS:
        raise DraftScopeError(f"unknown head architecture '{arch}' (choose from {', '.join(ARCHS)})")
    if loss not in LOSSES:
        raise DraftScopeError(f"unknown loss '{loss}' (choose from {', '.join(LOSSES)})")
    if epochs < 1 or batch < 1 or lr <= 0:
        raise DraftScopeError("--epochs and --batch must be at least 1 and --lr above 0")
    if positions not in ("answers", "all") or (positions == "all" and (loss != "teacher" or prefix)):
        raise DraftScopeError("--positions all trains with --loss teacher and without --prefix")
    t0 = time.perf_counter()
    target = target or load_model(target_name)
    corpus_obj = corpus_obj or load_corpus(target, corpus or default_corpus(target.name), modes=("greedy",))
    _check_corpus(corpus_obj)
    val_seqs, train_seqs = split_sequences(corpus_obj.sequences, holdout, seed)
    keep, trim = keep_set(target, min(vocab_trim, target.vocab_size))
    config = HeadsConfig(arch, n_heads, n_layers, target.model.config.hidden_size, prefix)
    config.check()
    torch.manual_seed(seed)
    heads = DraftHeads(config, prefix_layer(target).float() if prefix else None).float().train()
    model = Trainable(target, heads, keep)
    if positions == "all":
        train_states = full_states(target, train_seqs,
                                   states_cache(corpus_obj.folder, "train", holdout, seed, state_dir))
        rows = AllRows(train_states, train_seqs, n_heads)
    else:
        rows = HeadRows(train_seqs, n_heads, loss == "teacher")
    val_rows = HeadRows(val_seqs, n_heads, False)
    n_rows = min(len(rows), max_rows) if max_rows else len(rows)
    states = val_states = None
    if prefix:
        where = corpus_obj.folder
        states = full_states(target, train_seqs, states_cache(where, "train", holdout, seed, state_dir))
        val_states = full_states(target, val_seqs, states_cache(where, "val", holdout, seed, state_dir))
        per_step = max(1, round(batch * len(train_seqs) / len(rows)))  # sequences per step
        steps_per_epoch = math.ceil(len(train_seqs) * n_rows / len(rows) / per_step)
    else:
        steps_per_epoch = math.ceil(n_rows / batch)
    steps = epochs * steps_per_epoch
    optim = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10)  # Medusa's scripts: 10 % warm-up, then cosine
    sched = warmup_cosine(optim, steps, warmup)
    settings = {"target": target.name, "arch": arch, "n_heads": n_heads, "n_layers": n_layers, "loss": loss,
                "epochs": epochs, "lr": lr, "batch": batch, "vocab_trim": int(keep.numel()), "holdout": holdout,
                "seed": seed, "max_rows": max_rows, "corpus": corpus_obj.folder.name, "prefix": prefix,
                "positions": positions}
    state = EpochState(Path(state_dir) if state_dir else cache_dir() / "heads-train", "heads", settings)
    history, start_epoch = state.resume(heads, optim, sched)
    gen = torch.Generator().manual_seed(seed)
    order_all = [torch.randperm(len(train_seqs) if prefix else len(rows), generator=gen) for _ in range(epochs)]

    def step_loss(order: torch.Tensor, s: int) -> torch.Tensor:
        if not prefix:
            return batch_loss(model, rows, order[:n_rows][s * batch:(s + 1) * batch], loss)
        which = order[s * per_step:(s + 1) * per_step].tolist()
        return batch_loss(model, rows, _rows_of(rows, which), loss, prefix_rows(model, target, states, train_seqs,
                                                                             which))

    def validate() -> dict:
        if not prefix:
            return evaluate(model, val_rows)
        with torch.no_grad():
            g = prefix_rows(model, target, val_states, val_seqs, list(range(len(val_seqs))))
        return evaluate(model, val_rows, h=g)

    bar = tqdm(total=steps, initial=start_epoch * steps_per_epoch, desc=f"{arch} heads", unit="batch")
    for epoch in range(start_epoch, epochs):
        t_epoch, total = time.perf_counter(), 0.0
        order = order_all[epoch]
        for s in range(steps_per_epoch):
            value = step_loss(order, s)
            optim.zero_grad(set_to_none=True)
            if value.requires_grad:  # else no label of the batch is in the kept vocabulary
                value.backward()
                torch.nn.utils.clip_grad_norm_(heads.parameters(), 1.0)
                optim.step()
            sched.step()
            total += float(value.detach())
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / (s + 1):.3f}")
        heads.eval()
        history.append({"epoch": epoch + 1, "train_loss": round(total / steps_per_epoch, 4),
                        "seconds": round(time.perf_counter() - t_epoch, 1), "val": validate()})
        heads.train()
        state.save(heads, optim, sched, history)
    bar.close()
    heads.eval()
    final = history[-1]["val"]
    meta = {"trained": True, "loss": loss, "positions": positions, "epochs": epochs, "train_rows": n_rows,
            "coverage": trim.coverage,
            "val": final, "corpus": corpus_obj.folder.name}
    path = Path(out) if out else heads_mod.default_checkpoint(arch, target.name)
    heads_mod.save(path, heads, keep, target, meta)
    return {"checkpoint": str(path), **settings, "train_rows": n_rows, "val_rows": len(val_rows),
            "history": history, "val": final, "bytes": path.stat().st_size,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train.heads", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m")
    parser.add_argument("--arch", default="medusa", choices=ARCHS)
    parser.add_argument("--heads", type=int, default=4, help="K heads (head k proposes the token k + 2 ahead)")
    parser.add_argument("--layers", type=int, default=1, help="residual blocks per head")
    parser.add_argument("--loss", default="ce", choices=LOSSES, help="ce: the target's tokens; teacher: its top-64")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--prefix", action="store_true", help="Hydra++: a decoder layer before the heads")
    parser.add_argument("--positions", default="answers", choices=("answers", "all"),
                        help="all: every position, prompt included, with the teacher loss")
    parser.add_argument("--vocab-trim", type=int, default=8192, help="rows of the target's LM head the heads use")
    parser.add_argument("--corpus", default=None, help="corpus folder (default: the newest finished one)")
    parser.add_argument("--max-rows", type=int, default=None, help="train on at most N positions per epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="checkpoint path (default: assets/heads/ARCH-TARGET.safetensors)")
    args = parser.parse_args(argv)

    def body():
        print_summary(train(args.target, args.arch, args.heads, args.layers, args.loss, args.epochs, args.lr,
                            args.batch, args.vocab_trim, args.corpus, seed=args.seed, max_rows=args.max_rows,
                            out=args.out, prefix=args.prefix, positions=args.positions))

    return run_script(body)


if __name__ == "__main__":
    sys.exit(main())
