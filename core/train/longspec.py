"""Train a LongSpec drafter on the distillation corpus: ``python -m core.train.longspec --target smollm2-135m``.

The block (``core.specdec.drafters.longspec``) learns next-token cross-entropy on the corpus's sequences (prompt and
answer; the loss on the answer tokens) through the target's frozen final norm (unless ``--no-final-norm``) and LM head,
the paper's objective (no logit distillation). Each sequence of a batch draws, as the reference does:
- a lag pad ∈ {1..4}: query t cross-attends only to target KV at positions ≤ t − pad, as at inference, where the
  target's cache covers only verified tokens while the drafter runs ahead (queries with t < pad see none: output 0);
- anchor-offset position ids (``anchor_offset_positions``): sink ∈ {0..4} anchors at 0..sink − 1, the rest at
  offset + i with a random offset, for sequences of at most ``ANCHOR_MAX_LEN`` tokens (longer ones keep 0..n − 1).
The target's KV is computed per batch, by a target forward with the *same* position ids (no cache of pre-RoPE keys:
rotating cached keys is exact only for sink = 0, and the corpus stores post-RoPE K/V at ordinary positions).

Bounded by ``--steps`` (default: one pass over the training sequences) and ``--max-minutes``; the state (network,
optimiser, schedule, history) is saved every ``--save-every`` steps and when the run stops, so the same command
resumes. Held out (5 % of the prompts): teacher-forced top-1 accuracy of the next token at each lag 1..4 and the greedy
replay of chain rounds (round i's k-th draft sees target KV up to its start: lag k) → τ at γ = 2..4. One JSON summary
line on stdout; the checkpoint is fp16 (``core.runtime.checkpoint``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import DynamicCache

from core.errors import DraftScopeError
from core.runtime.models import cache_dir, load_model
from core.specdec.drafters import longspec as ls
from core.specdec.drafters.longspec import LongSpecNet
from core.train.corpus import MODES, default_corpus, load_corpus
from core.train.loop import EpochState, print_summary, run_script, warmup_cosine

MAX_PAD = 4  # lags 1..4
MAX_SINK = 4  # anchors 0..4
ANCHOR_MAX_LEN = 1200  # longer sequences keep ordinary positions
MAX_OFFSET = 30000  # the reference's cap on the offset
OFFSET_MARGIN = 1000  # and its margin below the model's context
GAMMAS = (2, 3, 4)


# ------------------------------------------------------------------------------------------------ positions and masks
def anchor_offset_positions(n: int, sink: int, offset: int) -> torch.Tensor:
    """(n,) position ids: the first ``sink`` tokens at 0..sink − 1 (anchors), token i ≥ sink at offset + i."""
    i = torch.arange(n)
    return torch.where(i < sink, i, i + offset)


def draw_positions(n: int, max_len: int, rng: random.Random) -> tuple[torch.Tensor, int, int]:
    """(positions (n,), sink, offset) of a training sequence of n tokens for a model of context ``max_len``:
    sink ∈ {0..4}, offset ∈ [0, min(30000, max_len − 1000) − n] (0 when that is negative); n > 1200: 0..n − 1."""
    if n > ANCHOR_MAX_LEN:
        return torch.arange(n), 0, 0
    sink = rng.randint(0, MAX_SINK)
    offset = rng.randint(0, max(0, min(MAX_OFFSET, max_len - OFFSET_MARGIN) - n))
    return anchor_offset_positions(n, sink, offset), sink, offset


def self_allowed(n: int, window: int, lengths: torch.Tensor) -> torch.Tensor:
    """(B, n, n) bool: query i sees its own keys j with i − window < j ≤ i inside its sequence."""
    i = torch.arange(n)
    causal = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)
    return causal[None] & (i[None, None, :] < lengths[:, None, None])


def cross_allowed(n: int, pads: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, n, n) bool: query i sees the target's KV at j ≤ i − pad (its sequence's lag) inside its sequence."""
    i = torch.arange(n)
    return (i[None, None, :] <= i[None, :, None] - pads[:, None, None]) & (i[None, None, :] < lengths[:, None, None])


# ------------------------------------------------------------------------------------------------ one batch
class Frozen:
    """The target's pieces the drafter trains through: embedding, RoPE, final norm, LM head, and its KV."""

    def __init__(self, target):
        self.target = target
        inner = target.model.model
        self.embed, self.rotary, self.norm, self.head = inner.embed_tokens, inner.rotary_emb, inner.norm, \
            target.model.lm_head
        self.device = next(target.model.parameters()).device

    @torch.no_grad()
    def target_kv(self, ids_Bn: torch.Tensor, positions_Bn: torch.Tensor, mask_Bn: torch.Tensor):
        """The target's last-layer keys (post-RoPE at ``positions``) and values (B, Hkv, n, d)."""
        cache = DynamicCache(config=self.target.model.config)
        self.target.model(input_ids=ids_Bn, attention_mask=mask_Bn, position_ids=positions_Bn, past_key_values=cache,
                          use_cache=True, logits_to_keep=1)
        layer = cache.layers[-1]
        return layer.keys, layer.values


def batch_tensors(frozen: Frozen, seqs: list[list[int]]):
    """Right-padded ids (B, n), lengths (B,)."""
    n = max(map(len, seqs))
    ids = torch.zeros((len(seqs), n), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.tensor(s)
    return ids.to(frozen.device), torch.tensor([len(s) for s in seqs])


def states(net: LongSpecNet, frozen: Frozen, ids_Bn, lengths, positions_Bn, pads, window: int,
           target_kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The block's output states (B, n, D) over a batch, every query under its sequence's lag; the target's KV comes
    from a forward at the same positions (or ``target_kv``, made so)."""
    n = ids_Bn.shape[1]
    positions_Bn = positions_Bn.to(ids_Bn.device)
    if target_kv is None:
        target_kv = frozen.target_kv(ids_Bn, positions_Bn, padding_mask(n, lengths).to(ids_Bn.device))
    target_k, target_v = target_kv
    x = frozen.embed(ids_Bn).detach()
    cos, sin = frozen.rotary(x, position_ids=positions_Bn)
    k, v = net.own_kv(x, cos, sin)
    dev = x.device
    return net(x, cos, sin, k, v, self_allowed(n, window, lengths).to(dev), target_k, target_v,
               cross_allowed(n, pads, lengths).to(dev))


def padding_mask(n: int, lengths: torch.Tensor) -> torch.Tensor:
    return (torch.arange(n)[None] < lengths[:, None]).long()


def logits_of(net: LongSpecNet, frozen: Frozen, h_ND: torch.Tensor) -> torch.Tensor:
    """(N, V) float32 logits of output states through the target's final norm (unless the net has none) and head,
    with the target's weights detached (gradients reach the drafter only)."""
    if net.final_norm:
        h_ND = h_ND * torch.rsqrt(h_ND.float().pow(2).mean(-1, keepdim=True) + frozen.norm.variance_epsilon)
        h_ND = h_ND * frozen.norm.weight.detach().to(h_ND.dtype)
    bias = getattr(frozen.head, "bias", None)
    return torch.nn.functional.linear(h_ND, frozen.head.weight.detach().to(h_ND.dtype),
                                      None if bias is None else bias.detach().to(h_ND.dtype)).float()


def answer_rows(seqs: list[tuple[list[int], int]]) -> tuple[list[int], list[int], list[int]]:
    """(batch rows, query columns, labels) of every answer token: query t predicts token t + 1."""
    rows, cols, labels = [], [], []
    for b, (tokens, start) in enumerate(seqs):
        for t in range(max(0, start - 1), len(tokens) - 1):
            rows.append(b)
            cols.append(t)
            labels.append(tokens[t + 1])
    return rows, cols, labels


def batch_loss(net, frozen, group: list[tuple[list[int], int]], window: int, max_len: int,
               rng: random.Random) -> torch.Tensor:
    ids, lengths = batch_tensors(frozen, [t for t, _ in group])
    n = ids.shape[1]
    positions = torch.zeros((len(group), n), dtype=torch.long)
    for b, (tokens, _) in enumerate(group):
        pos, _, _ = draw_positions(len(tokens), max_len, rng)
        positions[b, :len(tokens)] = pos
        positions[b, len(tokens):] = pos[-1] + 1 + torch.arange(n - len(tokens))  # padding: after the sequence
    pads = torch.tensor([rng.randint(1, MAX_PAD) for _ in group])
    h = states(net, frozen, ids, lengths, positions, pads, window)
    rows, cols, labels = answer_rows(group)
    logits = logits_of(net, frozen, h[rows, cols])
    return torch.nn.functional.cross_entropy(logits, torch.tensor(labels, device=logits.device))


# ------------------------------------------------------------------------------------------------ held out
@torch.no_grad()
def evaluate(net, frozen, held: list[tuple[list[int], int]], window: int, batch: int = 8) -> dict:
    """Teacher-forced top-1 at each lag 1..4 (ordinary positions) and the greedy chain replay (τ at γ = 2..4)."""
    net.eval()
    hits = {p: [] for p in range(1, MAX_PAD + 1)}  # per lag: one list of bools per sequence (its answer tokens)
    ce, count = 0.0, 0
    for i in range(0, len(held), batch):
        group = held[i:i + batch]
        ids, lengths = batch_tensors(frozen, [t for t, _ in group])
        positions = torch.arange(ids.shape[1])[None].expand(len(group), -1)
        rows, cols, labels = answer_rows(group)
        y = torch.tensor(labels, device=ids.device)
        kv = frozen.target_kv(ids, positions.to(ids.device), padding_mask(ids.shape[1], lengths).to(ids.device))
        for p in hits:
            h = states(net, frozen, ids, lengths, positions, torch.full((len(group),), p), window, kv)
            logits = logits_of(net, frozen, h[rows, cols])
            if p == 1:
                ce += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
                count += len(labels)
            right = (logits.argmax(-1) == y).tolist()
            at = 0
            for tokens, start in group:
                k = len(tokens) - max(1, start)
                hits[p].append(right[at:at + k])
                at += k
    out = {f"top1_lag{p}": round(sum(map(sum, h)) / max(1, sum(map(len, h))), 4) for p, h in hits.items()}
    out["ce_lag1"] = round(ce / max(1, count), 4)
    for g in GAMMAS:
        rounds = accepted = 0
        for s in range(len(held)):
            r, a = replay([hits[p][s] for p in range(1, MAX_PAD + 1)], g)
            rounds, accepted = rounds + r, accepted + a
        out[f"tau_g{g}"] = round((rounds + accepted) / max(1, rounds), 3)
    out["tokens"] = count
    return out


def replay(bits_by_lag: list[list[bool]], gamma: int) -> tuple[int, int]:
    """Greedy chain rounds along a sequence: a round starting at answer token i drafts min(γ, left − 1) tokens; draft
    k (k = 0..) is the query at i + k with lag k + 1 (it sees target KV up to the round's start), accepted while every
    earlier one was. (rounds, accepted drafts)."""
    n = len(bits_by_lag[0])
    i = rounds = accepted = 0
    while i < n:
        drafted = min(gamma, n - i - 1)
        run = 0
        while run < drafted and bits_by_lag[min(run, len(bits_by_lag) - 1)][i + run]:
            run += 1
        rounds, accepted = rounds + 1, accepted + run
        i += run + 1
    return rounds, accepted


# ------------------------------------------------------------------------------------------------ the run
def _sequences(corpus, max_len: int) -> list[tuple[tuple[int, ...], list[int], int]]:
    """(prompt key, tokens, answer start) of every corpus sequence, cut to its last ``max_len`` tokens."""
    out = []
    for s in corpus.sequences:
        tokens = s.tokens
        cut = max(0, len(tokens) - max_len)
        if len(s.answer) and len(tokens) - cut >= 2:
            out.append((tuple(s.prompt), tokens[cut:], max(1, len(s.prompt) - cut)))
    return out


def _resume(path: Path, net, optim, sched) -> tuple[list[dict], int]:
    """(history, optimiser steps done) of a saved run with the same settings, loaded into net/optim/sched."""
    if not path.is_file():
        return [], 0
    saved = torch.load(path, weights_only=True)
    net.load_state_dict(saved["net"])
    optim.load_state_dict(saved["optim"])
    sched.load_state_dict(saved["sched"])
    return json.loads(saved["history"]), int(saved["step"])


def _save(path: Path, net, optim, sched, history: list[dict], step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"net": net.state_dict(), "optim": optim.state_dict(), "sched": sched.state_dict(),
                "history": json.dumps(history), "step": step}, tmp)
    tmp.replace(path)


def train(target_name: str = "smollm2-135m", corpus: str | None = None, modes: tuple[str, ...] = MODES,
          steps: int | None = None, max_minutes: float | None = None, batch: int = 8, lr: float = 5e-4,
          weight_decay: float = 0.1, window: int = ls.WINDOW, max_len: int = 512, final_norm: bool = True,
          holdout: float = 0.05, seed: int = 0, save_every: int = 50, out: str | None = None,
          state_dir: str | Path | None = None, target=None) -> dict:
    t0 = time.perf_counter()
    if batch < 1 or lr <= 0 or window < 1 or max_len < 2 or (steps is not None and steps < 1):
        raise DraftScopeError("--batch, --window and --steps must be at least 1, --max-len at least 2, --lr above 0")
    if max_minutes is not None and max_minutes <= 0:
        raise DraftScopeError("--max-minutes must be above 0")
    target = target or load_model(target_name)
    net = LongSpecNet.from_target(target, final_norm).float().train()  # checks the target first
    corpus_obj = load_corpus(target, corpus or default_corpus(target.name), modes=modes)
    seqs = _sequences(corpus_obj, max_len)
    prompts = sorted({key for key, _, _ in seqs})
    random.Random(seed).shuffle(prompts)
    val_prompts = set(prompts[:max(1, int(len(prompts) * holdout))]) if len(prompts) > 1 else set()
    held = [(t, a) for key, t, a in seqs if key in val_prompts]
    train_seqs = [(t, a) for key, t, a in seqs if key not in val_prompts]
    if not train_seqs:
        raise DraftScopeError(f"the corpus at {corpus_obj.folder} has no training sequences of mode {', '.join(modes)}")
    per_epoch = math.ceil(len(train_seqs) / batch)
    steps = steps or per_epoch
    frozen = Frozen(target)
    params = list(net.parameters())
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = warmup_cosine(optim, steps, max(1, steps // 10))
    settings = {"target": target.name, "corpus": corpus_obj.folder.name, "modes": list(modes), "steps": steps,
                "batch": batch, "lr": lr, "weight_decay": weight_decay, "window": window, "max_len": max_len,
                "final_norm": final_norm, "holdout": holdout, "seed": seed}
    state = EpochState(Path(state_dir) if state_dir else cache_dir() / "longspec-train", "longspec", settings).path
    history, done = _resume(state, net, optim, sched)
    before = evaluate(net, frozen, held, window) if held and done == 0 else None
    max_pos = target.max_context
    bar = tqdm(total=steps, initial=done, desc="longspec", unit="step")
    stopped, step, total, counted = "steps", done, 0.0, 0
    net.train()
    while step < steps:
        epoch, j = divmod(step, per_epoch)
        order = list(range(len(train_seqs)))
        random.Random(seed * 7919 + epoch).shuffle(order)
        group = [train_seqs[i] for i in order[j * batch:(j + 1) * batch]]
        loss = batch_loss(net, frozen, group, window, max_pos, random.Random(seed * 1_000_003 + step))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        step += 1
        total, counted = total + float(loss.detach()), counted + 1
        bar.update()
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        timed_out = max_minutes is not None and time.perf_counter() - t0 > max_minutes * 60
        if step % save_every == 0 or step == steps or timed_out:
            history.append({"step": step, "train_loss": round(total / max(1, counted), 4)})
            total, counted = 0.0, 0
            _save(state, net, optim, sched, history, step)
        if timed_out and step < steps:
            stopped = "time"
            break
    bar.close()
    net.eval()
    after = evaluate(net, frozen, held, window) if held else None
    path = Path(out) if out else ls.default_checkpoint(target.name)
    meta = {"trained": True, "steps_done": step, "complete": step >= steps, "window": window, "val": after,
            "before": before, "corpus": corpus_obj.folder.name, "modes": list(modes), "lr": lr, "batch": batch,
            "max_len": max_len, "seed": seed, "kv_source": "target forward per batch"}
    ls.save(path, net, target, meta)
    drafter = ls.LongSpecDrafter(target, checkpoint=net, window=window)
    return {"checkpoint": str(path), **settings, "steps_done": step, "resumed_from": done, "stopped_by": stopped,
            "train_sequences": len(train_seqs), "held_out_sequences": len(held), "history": history,
            "before": before, "after": after, "params": sum(p.numel() for p in net.parameters()),
            "drafter_cache_bytes": drafter.memory_bytes, "cost": round(drafter.cost, 4),
            "bytes": path.stat().st_size, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train.longspec", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m")
    parser.add_argument("--corpus", default=None, help="corpus folder (default: the newest finished one)")
    parser.add_argument("--modes", default="greedy,sampled", help="corpus answers to train on")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default: one pass)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this long")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--window", type=int, default=ls.WINDOW, help="sliding window of the self-attention")
    parser.add_argument("--max-len", type=int, default=512, help="cut sequences to their last N tokens")
    parser.add_argument("--no-final-norm", action="store_true", help="feed the head without the target's final norm "
                                                                      "(the reference's drafter)")
    parser.add_argument("--save-every", type=int, default=50, help="save the resumable state every N steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="checkpoint (default: assets/longspec/TARGET.safetensors)")
    parser.add_argument("--state-dir", default=None, help="resumable state folder (default: in the user cache)")
    args = parser.parse_args(argv)

    def body():
        modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
        print_summary(train(args.target, args.corpus, modes, args.steps, args.max_minutes, args.batch, args.lr,
                            args.weight_decay, args.window, args.max_len, not args.no_final_norm, seed=args.seed,
                            save_every=args.save_every, out=args.out, state_dir=args.state_dir))

    return run_script(body, (DraftScopeError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
