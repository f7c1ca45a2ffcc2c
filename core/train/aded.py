"""Count ADED's trigram store from the distillation corpus: ``python -m core.train.aded --target smollm2-135m``.

The corpus (``python -m core.train.corpus``) holds the target's own answers to the project's corpus prompts; every
trigram of each answer (with the prompt's last two tokens in front, so the first answer tokens have a context) is
counted, P(c | a, b) is normalised over all successors of (a, b) and the 12 most likely are kept
(``core.specdec.drafters.aded``). No model runs: the tokens are already there. Ends with one JSON summary line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from core.runtime.models import load_model
from core.specdec.drafters.aded import TrigramStore, default_store
from core.train.corpus import default_corpus, load_corpus
from core.train.loop import print_summary, run_script


def build_store(target, corpus_folder: str | Path, modes: tuple[str, ...] | None = None) -> TrigramStore:
    corpus = load_corpus(target, corpus_folder, modes)
    sequences = [s.prompt[-2:] + s.answer for s in tqdm(corpus.sequences, desc="trigrams", unit="answer")]
    meta = {"target": target.name, "tokenizer": target.tokenizer_id(), "source": str(Path(corpus_folder).name),
            "answers": len(sequences), "tokens": sum(len(s.answer) for s in corpus.sequences)}
    return TrigramStore.count(sequences, meta=meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train.aded", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m")
    parser.add_argument("--corpus", default=None, help="corpus folder (default: the newest finished one)")
    parser.add_argument("--modes", default=None, help="corpus modes to count (default: all it has)")
    parser.add_argument("--out", default=None, help="store file (default: the shipped assets/aded/ path)")
    args = parser.parse_args(argv)

    def body():
        t = time.perf_counter()
        target = load_model(args.target)
        folder = args.corpus or default_corpus(target.name)
        modes = tuple(m for m in args.modes.split(",") if m) if args.modes else None
        store = build_store(target, folder, modes)
        out = store.save(args.out or default_store(target.name))
        print_summary({"store": str(out), "keys": len(store), "bytes": out.stat().st_size,
                       "successors": sum(len(v[0]) for v in store.table.values()), **store.meta,
                       "seconds": round(time.perf_counter() - t, 1)})

    return run_script(body)


if __name__ == "__main__":
    sys.exit(main())
