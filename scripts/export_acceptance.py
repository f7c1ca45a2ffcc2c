"""What a serving engine would see of the exported FastDraft drafter: export it as a plain draft model (both fills of
the rows outside VocabTrim's kept tokens), load each folder as the ``model`` drafter (a local draft model, as vLLM's
``draft_model`` method loads it) and run it beside our native ``fastdraft`` drafter on the same prompts, greedy.

    PYTHONPATH=. python scripts/export_acceptance.py [--per-category 1] [--max-new-tokens 64] [--gamma 4]

Prints α (accepted / drafted), τ (tokens per target call), the counts, and whether every output matches the native
drafter's (it must: greedy verification keeps the target's own decoding whatever the drafter proposes).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from core.export import export
from core.export.fastdraft import FILLS
from core.prompts import load_prompts
from core.runtime.models import load_model
from core.specdec import Session, SessionConfig
from core.specdec.bench import first_per_category


def run(target: str, drafter: str, options: dict, prompts, gamma: int, max_new_tokens: int) -> dict:
    totals = {"drafted": 0, "accepted": 0, "target_calls": 0, "generated": 0, "outputs": [], "seconds": 0.0}
    for prompt in prompts:
        config = SessionConfig(target=target, drafter=drafter, drafter_options=options, gamma=gamma,
                               max_new_tokens=max_new_tokens)
        start = time.perf_counter()
        session = Session.from_config(config, prompt=prompt.prompt, chat=True, allow_local=True)
        list(session.run())
        totals["seconds"] += time.perf_counter() - start
        stats = session.stats
        for key in ("drafted", "accepted", "target_calls"):
            totals[key] += getattr(stats, key)
        totals["generated"] += len(session.generated_ids)
        totals["outputs"].append(session.generated_ids)
    totals["alpha"] = totals["accepted"] / totals["drafted"] if totals["drafted"] else None
    totals["tau"] = totals["generated"] / totals["target_calls"] if totals["target_calls"] else None
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m")
    parser.add_argument("--per-category", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--gamma", type=int, default=4)
    args = parser.parse_args()
    load_model(args.target)
    prompts = first_per_category(load_prompts(), args.per_category)
    print(f"{args.target}, {len(prompts)} prompts ({', '.join(p.id for p in prompts)}), chat, greedy, "
          f"{args.max_new_tokens} new tokens, γ {args.gamma}")
    print("| drafter | α | τ | drafted | accepted | target calls | same output as native | s |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    native = run(args.target, "fastdraft", {}, prompts, args.gamma, args.max_new_tokens)
    show("native fastdraft (VocabTrim'd head, -inf outside)", native, native)
    with tempfile.TemporaryDirectory() as tmp:
        for fill in FILLS:
            folder = Path(tmp) / f"fastdraft-{fill}"
            export("fastdraft", args.target, folder, gamma=args.gamma, fill=fill)
            row = run(args.target, "model", {"draft_model": str(folder)}, prompts, args.gamma, args.max_new_tokens)
            show(f"exported draft model, rows outside kept = {fill}", row, native)


def show(name: str, r: dict, native: dict) -> None:
    """One table row; the outputs must all be the target's greedy decoding, so they must equal the native run's."""
    same = "yes" if r["outputs"] == native["outputs"] else "NO"
    print(f"| {name} | {r['alpha']:.4f} | {r['tau']:.4f} | {r['drafted']} | {r['accepted']} | {r['target_calls']} | "
          f"{same} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
