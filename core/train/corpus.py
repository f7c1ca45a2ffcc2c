"""The distillation corpus: the target answers the project's prompts, and every later trainer reads what it stored.

``python -m core.train.corpus --target smollm2-135m --prompts 1000`` generates, in batches, a greedy and a sampled
answer to each prompt (``core.train.prompts.corpus_prompts``, disjoint from the evaluation prompts) and stores per
generated token: the token, the target's top-64 next-token probabilities (fp16, of the unwarped distribution, at
temperature 1) and, with ``--states``, the last hidden state at the position that predicts it and the last layer's
K/V over the whole sequence (fp16). It is cached outside the repository (``~/.cache/draftscope/corpus/…``) in one
shard file per batch, each written atomically, so an interrupted run resumes where it stopped: run the same command
again. The corpus also counts the generated tokens (``vocab-counts`` file): VocabTrim's calibration.

Layout of a corpus folder: ``corpus.json`` (target, tokenizer fingerprint, settings) and ``shard-MODE-NNNNN.pt``,
each a dict of lists, one entry per sequence: ``prompt`` and ``answer`` token ids, ``p`` (n, 64) fp16 and ``ids``
(n, 64) int32 where row i is the target's distribution that answer token i was drawn from (greedy: its argmax),
and with states ``hidden`` (n, d) fp16 aligned with ``p``, ``k`` / ``v`` (kv heads, prompt + n, head dim) fp16.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from core.errors import DraftScopeError
from core.runtime import checkpoint
from core.runtime.files import atomic_write_text
from core.runtime.models import cache_dir, load_model
from core.specdec.vocab_trim import COUNTS_KIND
from core.train.loop import print_summary, run_script
from core.train.prompts import corpus_prompts

CORPUS_TOPK = 64
MODES = ("greedy", "sampled")
BUILD_HINT = "python -m core.train.corpus --target TARGET"


@dataclass(frozen=True)
class CorpusSettings:
    prompts: int  # N corpus prompts (from ``start``)
    max_new_tokens: int = 160
    batch: int = 32
    temperature: float = 1.0  # of the sampled answers (top-p 1, top-k off: the target's own distribution)
    seed: int = 0
    states: bool = False  # also store last hidden states and last-layer K/V
    modes: tuple[str, ...] = MODES
    start: int = 0  # the first corpus prompt used (another folder can continue where one ends)

    def tag(self) -> str:
        states = "-states" if self.states else ""
        first = f"-from{self.start}" if self.start else ""
        return (f"p{self.prompts}{first}-n{self.max_new_tokens}-t{self.temperature:g}-s{self.seed}-"
                f"{'+'.join(self.modes)}{states}")


@dataclass
class CorpusSequence:
    mode: str
    prompt: list[int]
    answer: list[int]
    p: torch.Tensor  # (n, 64) fp16: the target's top-64 probabilities for each answer token
    ids: torch.Tensor  # (n, 64) int32: their token ids
    extra: dict = field(default_factory=dict)  # hidden / k / v with --states

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.answer


def corpus_dir(target_name: str, settings: CorpusSettings) -> Path:
    return cache_dir() / "corpus" / f"{target_name}-{settings.tag()}"


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


@torch.inference_mode()
def _generate_batch(target, prompts: list[list[int]], mode: str, settings: CorpusSettings,
                    seed: int) -> dict[str, list]:
    pad = target.tokenizer.pad_token_id
    pad = pad if pad is not None else sorted(target.eos_ids)[0]
    width = max(map(len, prompts))
    device = target.device
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in prompts], device=device)
    sampling = ({"do_sample": True, "temperature": settings.temperature, "top_p": 1.0, "top_k": 0}
                if mode == "sampled" else {"do_sample": False})
    torch.manual_seed(seed)
    out = target.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens,
                                pad_token_id=pad, output_logits=True, return_dict_in_generate=True, **sampling)
    new = out.sequences[:, width:].tolist()
    # (steps, B, V) → top-64 of the unwarped distribution per step, (B, steps, 64)
    top_p, top_ids = [], []
    for step_logits in out.logits:
        top = torch.topk(torch.softmax(step_logits.float(), -1), CORPUS_TOPK, dim=-1)
        top_p.append(top.values.to(torch.float16).cpu())
        top_ids.append(top.indices.to(torch.int32).cpu())
    top_p, top_ids = torch.stack(top_p, 1), torch.stack(top_ids, 1)
    shard = {"prompt": [], "answer": [], "p": [], "ids": []}
    for b, (prompt, row) in enumerate(zip(prompts, new)):
        answer = []
        for tok in row:
            answer.append(tok)
            if tok in target.eos_ids:
                break
        shard["prompt"].append(prompt)
        shard["answer"].append(answer)
        shard["p"].append(top_p[b, :len(answer)].clone())
        shard["ids"].append(top_ids[b, :len(answer)].clone())
    if settings.states:
        shard.update(_states(target, shard["prompt"], shard["answer"]))
    return shard


@torch.inference_mode()
def _states(target, prompts: list[list[int]], answers: list[list[int]]) -> dict[str, list]:
    """Last hidden states (aligned with ``p``) and last-layer K/V of each sequence, one teacher-forced forward each."""
    from transformers import DynamicCache

    hidden, keys, values = [], [], []
    for prompt, answer in zip(prompts, answers):
        seq = torch.tensor([prompt + answer], device=target.device)
        cache = DynamicCache(config=target.model.config)
        out = target.model(seq, past_key_values=cache, use_cache=True, output_hidden_states=True,
                           logits_to_keep=1)
        h = out.hidden_states[-1][0]
        hidden.append(h[len(prompt) - 1:len(prompt) - 1 + len(answer)].to(torch.float16).cpu())
        layer = cache.layers[-1]
        keys.append(layer.keys[0].to(torch.float16).cpu())
        values.append(layer.values[0].to(torch.float16).cpu())
    return {"hidden": hidden, "k": keys, "v": values}


def build(target_name: str = "smollm2-135m", settings: CorpusSettings | None = None, out: str | Path | None = None,
          stop_after: int | None = None, target=None) -> dict:
    """Generate (or finish) the corpus; returns the JSON summary. ``stop_after`` ends the run after that many new
    shards (an interruption, for tests and for splitting a long run)."""
    settings = settings or CorpusSettings(prompts=1000)
    for mode in settings.modes:
        if mode not in MODES:
            raise DraftScopeError(f"unknown corpus mode '{mode}' (choose from {', '.join(MODES)})")
    if settings.prompts < 1 or settings.max_new_tokens < 1 or settings.batch < 1 or settings.start < 0:
        raise DraftScopeError("--prompts, --max-new-tokens and --batch must be at least 1 and --start at least 0")
    if settings.temperature <= 0:
        raise DraftScopeError("--temperature must be above 0")
    t0 = time.perf_counter()
    target = target or load_model(target_name)
    prompts_text = corpus_prompts(settings.seed)
    if settings.start + settings.prompts > len(prompts_text):
        raise DraftScopeError(f"--start {settings.start} --prompts {settings.prompts}: the project has "
                              f"{len(prompts_text)} corpus prompts")
    prompts = [target.encode(p, chat=bool(getattr(target.tokenizer, "chat_template", None)))
               for p in prompts_text[settings.start:settings.start + settings.prompts]]
    folder = Path(out) if out else corpus_dir(target.name, settings)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"target": target.name, "tokenizer": target.tokenizer_id(), "settings": asdict(settings),
                "topk": CORPUS_TOPK, "format": 1}
    existing = folder / "corpus.json"
    if existing.is_file():
        old = json.loads(existing.read_text())
        if {k: old.get(k) for k in ("target", "tokenizer", "settings")} != \
                {k: json.loads(json.dumps(manifest[k])) for k in ("target", "tokenizer", "settings")}:
            raise DraftScopeError(f"{folder} holds a corpus of other settings or another target; pass another --out")
    else:
        _write_json(existing, manifest)
    jobs = [(mode, i) for i in range(0, len(prompts), settings.batch) for mode in settings.modes]
    todo = [(m, i) for m, i in jobs if not _shard_path(folder, m, i, settings.batch).is_file()]
    made = 0
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="corpus", unit="batch")
    for mode, i in todo:
        if stop_after is not None and made >= stop_after:
            break
        shard = _generate_batch(target, prompts[i:i + settings.batch], mode, settings, settings.seed * 100003 + i)
        _atomic_torch_save(shard, _shard_path(folder, mode, i, settings.batch))
        made += 1
        bar.update()
        bar.set_postfix(tokens=sum(map(len, shard["answer"])))
    bar.close()
    complete = made == len(todo)
    summary = {"corpus": str(folder), "target": target.name, "complete": complete,
               "shards": len(jobs) - len(todo) + made, "of": len(jobs), "new_shards": made,
               "seconds_this_run": round(time.perf_counter() - t0, 1)}
    if complete:
        corpus = load_corpus(target, folder)
        counts = corpus.token_counts(target.vocab_size)
        write_counts(folder / "vocab-counts.safetensors", counts, target, f"corpus {folder.name}")
        summary.update(sequences=len(corpus.sequences), answer_tokens=corpus.n_tokens,
                       bytes=sum(f.stat().st_size for f in folder.iterdir()),
                       by_mode={m: sum(len(s.answer) for s in corpus.sequences if s.mode == m)
                                for m in settings.modes})
        manifest.update(summary={k: summary[k] for k in ("sequences", "answer_tokens", "bytes", "by_mode")})
        _write_json(existing, manifest)
    return summary


def _shard_path(folder: Path, mode: str, start: int, batch: int) -> Path:
    return folder / f"shard-{mode}-{start // batch:05d}.pt"


# --------------------------------------------------------------------------------------------- reading
@dataclass
class Corpus:
    folder: Path
    manifest: dict
    sequences: list[CorpusSequence]

    @property
    def n_tokens(self) -> int:
        return sum(len(s.answer) for s in self.sequences)

    def token_counts(self, vocab_size: int) -> torch.Tensor:
        """How often the target generated each token id, (V,) int64."""
        counts = torch.zeros(vocab_size, dtype=torch.int64)
        for s in self.sequences:
            counts += torch.bincount(torch.tensor(s.answer, dtype=torch.int64), minlength=vocab_size)[:vocab_size]
        return counts

    def select(self, modes: tuple[str, ...]) -> list[CorpusSequence]:
        return [s for s in self.sequences if s.mode in modes]


def load_corpus(target, folder: str | Path, modes: tuple[str, ...] | None = None) -> Corpus:
    """Read a corpus made by ``build`` for ``target``'s tokenizer; a missing, unfinished or foreign corpus raises
    ``DraftScopeError``."""
    folder = Path(folder)
    manifest_path = folder / "corpus.json"
    if not manifest_path.is_file():
        raise DraftScopeError(f"no distillation corpus at {folder} (build one with {BUILD_HINT})")
    try:
        manifest = json.loads(manifest_path.read_text())
        settings = manifest["settings"]
    except (ValueError, KeyError):
        raise DraftScopeError(f"{manifest_path} is not a DraftScope corpus manifest") from None
    if manifest.get("tokenizer") != target.tokenizer_id():
        raise DraftScopeError(f"the corpus at {folder} was generated by '{manifest.get('target')}', whose tokenizer "
                              f"differs from '{target.name}''s; build one for this target with {BUILD_HINT}")
    sequences = []
    n_batches = -(-settings["prompts"] // settings["batch"])
    for mode in settings["modes"]:
        if modes is not None and mode not in modes:
            continue
        for b in range(n_batches):
            path = folder / f"shard-{mode}-{b:05d}.pt"
            if not path.is_file():
                raise DraftScopeError(f"the corpus at {folder} is unfinished ({path.name} missing); run its command "
                                      "again to resume")
            shard = torch.load(path, weights_only=True)
            extra_keys = [k for k in ("hidden", "k", "v") if k in shard]
            for j in range(len(shard["answer"])):
                sequences.append(CorpusSequence(mode, shard["prompt"][j], shard["answer"][j], shard["p"][j],
                                                shard["ids"][j], {k: shard[k][j] for k in extra_keys}))
    return Corpus(folder, manifest, sequences)


def default_corpus(target_name: str) -> Path:
    """The newest complete corpus folder of ``target_name`` in the cache (the one trainers read by default)."""
    root = cache_dir() / "corpus"
    found = sorted((p for p in root.glob(f"{target_name}-p*") if (p / "vocab-counts.safetensors").is_file()),
                   key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not found:
        raise DraftScopeError(f"no finished distillation corpus for '{target_name}' in {root} (build one with "
                              f"{BUILD_HINT.replace('TARGET', target_name)})")
    return found[-1]


# --------------------------------------------------------------------------------------------- token counts
def write_counts(path: str | Path, counts: torch.Tensor, target, source: str) -> Path:
    """Token frequencies in target-generated text (VocabTrim's calibration), as int32, with the tokenizer's
    fingerprint."""
    return checkpoint.save(path, {"counts": counts.to(torch.int32)},
                           {"target": target.name, "tokenizer": target.tokenizer_id(), "source": source,
                            "tokens": int(counts.sum())}, COUNTS_KIND)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train.corpus", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=1000, help="N corpus prompts (from --start)")
    parser.add_argument("--start", type=int, default=0, help="the first corpus prompt (continue another corpus)")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--batch", type=int, default=32, help="generation batch size")
    parser.add_argument("--temperature", type=float, default=1.0, help="of the sampled answers")
    parser.add_argument("--modes", default="greedy,sampled", help="greedy, sampled or both (comma-separated)")
    parser.add_argument("--states", action="store_true", help="also store last hidden states and last-layer K/V")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="corpus folder (default: in the user cache, named by settings)")
    parser.add_argument("--stop-after", type=int, default=None, help="stop after N new shards (resume later)")
    args = parser.parse_args(argv)

    def body():
        modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
        settings = CorpusSettings(args.prompts, args.max_new_tokens, args.batch, args.temperature, args.seed,
                                  args.states, modes, args.start)
        summary = build(args.target, settings, args.out, args.stop_after)
        print_summary(summary)

    return run_script(body)


if __name__ == "__main__":
    sys.exit(main())
