"""Train a FastDraft / Direct Alignment drafter on the distillation corpus: ``python -m core.train.fastdraft``.

Stage 1 (``--stage pretrain``): the drafter (``core.specdec.drafters.fastdraft``: ``--layers`` decoder layers of the
target's width copied from target layers ``--init-layers``, the target's embedding, a VocabTrim'd head of
``--vocab-trim`` rows calibrated on the corpus) learns next-token prediction on the corpus's *sampled* answers
(temperature 1: the widest text the target writes; the papers pre-train on web text, which cannot be downloaded here).
Stage 2 (``--stage align --from STAGE1``): alignment on the corpus's answers with ``--loss`` (``core.train.losses``):
``seqkd`` (FastDraft: cross-entropy on target answers), ``fkl``, ``tvd``, ``tvdpp`` (Direct Alignment), ``tvdpp-vocab``.

Held-out prompts (both their answers) are never trained on. They give: greedy top-1 agreement; the exact greedy
replay of speculative decoding on the target's own greedy answers (τ and α at γ = 2..6: with greedy decoding a round
accepts the drafter's run of agreements, capped at γ, plus one token); Σ min(p, q) over the target's top 64 on the
sampled answers (a lower bound of the sampled acceptance rate at T = 1); and MBSU from the parameter-byte ratio. With
``--curve N`` the run is evaluated N times along training (α and τ against training tokens seen); the curve against
the alignment-set size comes from separate runs with ``--max-tokens``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

from core.errors import DraftScopeError
from core.runtime.models import load_model
from core.runtime.timing import elapsed
from core.specdec.cost_model import drafter_step_ms, verify_ms
from core.specdec.drafters import fastdraft
from core.specdec.drafters.fastdraft import FastDraftDrafter
from core.specdec.vocab_trim import keep_set
from core.train.corpus import Corpus, default_corpus, load_corpus
from core.train.loop import fit, print_summary, run_script
from core.train.losses import LOSSES, loss

GAMMAS = (2, 3, 4, 5, 6)


def _batches(seqs: list, batch: int) -> list[list]:
    """Sequences grouped by length (little padding), in batches of ``batch``."""
    order = sorted(seqs, key=lambda s: len(s.tokens))
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def _positions(net, group: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher-forced drafter over a right-padded batch: trimmed logits (N, k) at every answer position, the target's
    probabilities on the same k tokens (N, k) and the hard labels (N,) (-1 where not kept)."""
    device = next(net.model.layers.parameters()).device
    keep = net.lm_head.keep
    where = torch.full((net.lm_head.vocab,), -1, dtype=torch.long, device=device)
    where[keep] = torch.arange(keep.numel(), device=device)
    width = max(len(s.tokens) for s in group)
    ids = torch.zeros((len(group), width), dtype=torch.long, device=device)
    mask = torch.zeros((len(group), width), dtype=torch.long, device=device)
    for b, s in enumerate(group):
        ids[b, :len(s.tokens)] = torch.tensor(s.tokens, device=device)
        mask[b, :len(s.tokens)] = 1
    hidden = net.model(input_ids=ids, attention_mask=mask).last_hidden_state
    rows, ps, ys = [], [], []
    for b, s in enumerate(group):
        lo, n = len(s.prompt) - 1, len(s.answer)
        rows.append(hidden[b, lo:lo + n])
        col = where[s.ids.to(device).long()]  # (n, 64) kept index or -1
        p = torch.zeros((n, keep.numel()), device=device)
        p.scatter_add_(1, col.clamp(min=0), s.p.to(device).float() * (col >= 0))
        ps.append(p)
        ys.append(where[torch.tensor(s.answer, device=device)])
    return net.lm_head.trimmed(torch.cat(rows)), torch.cat(ps), torch.cat(ys)


@torch.no_grad()
def evaluate(net, greedy: list, sampled: list, batch: int = 8) -> dict:
    """Held-out metrics (see the module doc)."""
    agree = n = 0
    replay = {g: [0, 0, 0] for g in GAMMAS}  # rounds, accepted, drafted
    for group in _batches(greedy, batch):
        logits, _, y = _positions(net, group)
        hits = (logits.argmax(-1) == y).tolist()
        agree, n = agree + sum(hits), n + len(hits)
        start = 0
        for s in group:
            bits = hits[start:start + len(s.answer)]
            start += len(s.answer)
            for g in GAMMAS:
                _replay(bits, g, replay[g])
    overlap = m = 0.0
    for group in _batches(sampled, batch):
        logits, p, _ = _positions(net, group)
        overlap += float(torch.minimum(p, torch.softmax(logits.float(), -1)).sum())
        m += logits.shape[0]
    out = {"top1_agreement": round(agree / max(n, 1), 4), "sum_min_pq": round(overlap / max(m, 1), 4),
           "greedy_tokens": n, "sampled_tokens": int(m)}
    for g, (rounds, acc, drafted) in replay.items():
        out[f"tau_g{g}"] = round((rounds + acc) / max(rounds, 1), 3)
        out[f"alpha_g{g}"] = round(acc / max(drafted, 1), 4)
    return out


def _replay(bits: list[bool], gamma: int, acc: list[int]) -> None:
    """Greedy speculative decoding along a target-greedy answer: each round drafts min(γ, tokens left − 1) tokens and
    accepts the run of drafter agreements; the target adds one token."""
    i = 0
    while i < len(bits):
        drafted = min(gamma, len(bits) - i - 1)
        run = 0
        while run < drafted and bits[i + run]:
            run += 1
        acc[0], acc[1], acc[2] = acc[0] + 1, acc[1] + run, acc[2] + drafted
        i += run + 1


def _split(corpus: Corpus, holdout: float, seed: int) -> tuple[set, set]:
    prompts = sorted({tuple(s.prompt) for s in corpus.sequences})
    random.Random(seed).shuffle(prompts)
    n_val = max(1, int(len(prompts) * holdout))
    return set(prompts[:n_val]), set(prompts[n_val:])


def drafter_ms(target, net) -> float:
    """Median ms of one drafter step on a 200-token cache, as decoding runs it (``core.specdec.cost_model``)."""
    return drafter_step_ms(target, FastDraftDrafter(target, checkpoint=net), gamma=1, repeats=20)


def train(target_name: str = "smollm2-135m", stage: str = "pretrain", loss_name: str = "seqkd",
          corpus_path: str | None = None, start: str | None = None, n_layers: int = 3,
          init_layers: list[int] | None = None, vocab_trim: int = 8192, modes: tuple[str, ...] | None = None,
          epochs: int = 1, lr: float = 3e-4, batch: int = 8, accumulate: int = 1, max_tokens: int | None = None,
          holdout: float = 0.05, curve: int = 0, seed: int = 0, out: str | None = None, target=None) -> dict:
    t0 = time.perf_counter()
    if stage not in ("pretrain", "align"):
        raise DraftScopeError(f"--stage must be pretrain or align, got '{stage}'")
    if loss_name not in LOSSES:
        raise DraftScopeError(f"unknown loss '{loss_name}' (choose from {', '.join(LOSSES)})")
    if epochs < 1 or batch < 1 or lr <= 0:
        raise DraftScopeError("--epochs and --batch must be at least 1 and --lr above 0")
    target = target or load_model(target_name)
    folders = [p for p in (corpus_path or "").split(",") if p] or [default_corpus(target.name)]
    corpus = load_corpus(target, folders[0])
    val_prompts, _ = _split(corpus, holdout, seed)  # held out from the first corpus, so runs stay comparable
    for extra in folders[1:]:  # more training corpora (e.g. one that continues the prompts where the first ends)
        corpus.sequences += load_corpus(target, extra).sequences
    torch.manual_seed(seed)
    if stage == "pretrain":
        init_layers = init_layers if init_layers is not None else default_init_layers(target.n_layers, n_layers)
        keep, info = keep_set(target, vocab_trim, corpus.folder / "vocab-counts.safetensors")
        net = fastdraft.build_network(target, len(init_layers), keep, init_layers)
        meta_in = {"init_layers": init_layers, "vocab_trim": vocab_trim, "coverage": round(info.coverage, 4)}
    else:
        if not start:
            raise DraftScopeError("--stage align needs --from, the stage-1 checkpoint")
        net, meta_in = fastdraft.load(start, target)
        meta_in = {k: meta_in[k] for k in ("init_layers", "vocab_trim", "coverage", "history") if k in meta_in}
    modes = modes or (("sampled",) if stage == "pretrain" else ("greedy",))
    held = [s for s in corpus.sequences if tuple(s.prompt) in val_prompts]
    val_greedy = [s for s in held if s.mode == "greedy"]
    val_sampled = [s for s in held if s.mode == "sampled"]
    train_seqs = [s for s in corpus.sequences if tuple(s.prompt) not in val_prompts and s.mode in modes]
    if not train_seqs:
        raise DraftScopeError(f"the corpus has no training answers of mode {', '.join(modes)}")
    rng = random.Random(seed)
    rng.shuffle(train_seqs)
    if max_tokens is not None:
        kept, total = [], 0
        for s in train_seqs:
            if total >= max_tokens:
                break
            kept.append(s)
            total += len(s.answer)
        train_seqs = kept
    tokens = sum(len(s.answer) for s in train_seqs)
    batches = [train_seqs[i:i + batch] for i in range(0, len(train_seqs), batch)]

    params = [*net.model.layers.parameters(), *net.model.norm.parameters()]
    net.model.layers.requires_grad_(True)
    net.model.norm.requires_grad_(True)
    net.model.embed_tokens.requires_grad_(False)
    before = evaluate(net.eval(), val_greedy, val_sampled)
    points: list[dict] = []
    total_items = epochs * len(batches)
    marks = sorted({max(1, round(total_items * (j + 1) / curve)) for j in range(curve)}) if curve else []

    def after(n_items: int) -> None:  # tokens seen: whole passes plus the share of the current one
        if n_items in marks:
            net.eval()
            points.append({"tokens_seen": round(tokens * n_items / len(batches)),
                           **evaluate(net, val_greedy, val_sampled)})
            net.train()

    def loss_of(group: list) -> torch.Tensor:
        logits, p, y = _positions(net, group)
        return loss(loss_name if stage == "align" else "seqkd", logits, p, y)

    net.train()
    history = fit(params, batches, loss_of, epochs, lr, accumulate, rng, after_item=after if curve else None)
    net.eval().requires_grad_(False)
    after_eval = evaluate(net, val_greedy, val_sampled)
    ms = drafter_ms(target, net)
    target_ms = _target_ms(target)
    drafter = FastDraftDrafter(target, checkpoint=net)
    c = drafter.cost
    mbsu = {f"mbsu_g{g}": round(after_eval[f"tau_g{g}"] / (1 + g * c), 3) for g in GAMMAS}
    seconds = elapsed(t0, target.device)
    meta = {"method": "fastdraft", "stage": stage, "loss": loss_name if stage == "align" else "seqkd",
            **meta_in, "modes": list(modes), "train_tokens": tokens, "train_sequences": len(train_seqs),
            "epochs": epochs, "lr": lr, "batch": batch, "seed": seed, "corpus": ",".join(Path(f).name for f in folders),
            "before": before, "after": after_eval, "curve": points, "history": history,
            "drafter_ms": ms, "target_ms": target_ms, "cost": round(c, 4), **mbsu,
            "seconds": round(seconds, 1), "device": str(target.device)}
    path = Path(out) if out else default_output(target.name, stage, meta["loss"])
    fastdraft.save(path, net, target, meta)
    print_summary({"saved": str(path), **{k: meta[k] for k in ("stage", "loss", "train_tokens", "drafter_ms",
                                                                 "target_ms", "cost", "seconds")},
                   "before": before, "after": after_eval, **mbsu})
    return meta


def default_init_layers(total: int, n: int) -> list[int]:
    """Target layers the drafter's layers start from: the first n - 1 and the last (the last layer maps the residual
    stream onto the head's space)."""
    return [*range(n - 1), total - 1] if n > 1 else [0]


def default_output(target_name: str, stage: str, loss_name: str) -> Path:
    from core.runtime.models import cache_dir

    return cache_dir() / "train" / f"fastdraft-{target_name}-{stage}{'' if stage == 'pretrain' else '-' + loss_name}" \
        ".safetensors"


def _target_ms(target) -> float:
    return verify_ms(target, sizes=[1], repeats=20)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train.fastdraft", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m")
    parser.add_argument("--stage", choices=("pretrain", "align"), default="pretrain")
    parser.add_argument("--loss", default="seqkd", help=f"stage 2 loss: {', '.join(LOSSES)}")
    parser.add_argument("--corpus", default=None, help="corpus folder(s), comma-separated (default: the newest "
                                                       "finished one)")
    parser.add_argument("--from", dest="start", default=None, help="stage 2: the stage-1 checkpoint")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--init-layers", default=None, help="target layers to copy, e.g. 0,1,29")
    parser.add_argument("--vocab-trim", type=int, default=8192, help="VocabTrim k of the drafter's head")
    parser.add_argument("--modes", default=None, help="corpus answers to train on (pretrain: sampled; align: greedy)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--max-tokens", type=int, default=None, help="cap on training answer tokens")
    parser.add_argument("--curve", type=int, default=0, help="evaluate N times along the pass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="checkpoint file (default: in the user cache)")
    args = parser.parse_args(argv)

    def body():
        init = [int(x) for x in args.init_layers.split(",")] if args.init_layers else None
        if init is not None and len(init) != args.layers:
            raise DraftScopeError(f"--init-layers names {len(init)} layers but --layers is {args.layers}")
        modes = tuple(m.strip() for m in args.modes.split(",")) if args.modes else None
        train(args.target, args.stage, args.loss, args.corpus, args.start, args.layers, init, args.vocab_trim, modes,
              args.epochs, args.lr, args.batch, max_tokens=args.max_tokens, curve=args.curve, seed=args.seed,
              out=args.out)

    return run_script(body, (DraftScopeError, ValueError))


if __name__ == "__main__":
    sys.exit(main())


def results_path(target_name: str) -> Path:
    return fastdraft.ASSETS_DIR / "fastdraft" / f"{target_name}-results.json"


def shipped_results(target_name: str) -> dict:
    """The loss table shipped for ``target_name`` (``scripts/fastdraft_results.py``): {"losses": {loss: training
    results}, "bench": {loss: benchmark row}, ...}; empty when none ships."""
    import json

    path = results_path(target_name)
    if not path.is_file():
        return {"losses": {}, "bench": {}}
    return json.loads(path.read_text())
