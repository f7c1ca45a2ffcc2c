"""Assemble the FastDraft loss table that ships with the app, and ship one drafter:
``python -m core.train.fastdraft_report --target smollm2-135m --checkpoints A.safetensors,B.safetensors
--bench bench.json --ship tvdpp``.

Reads each trained checkpoint's stored results (its training meta: held-out α, τ at γ = 2..6, the curve, MBSU,
drafter ms) and the rows of a ``core.cli bench --json`` run (methods ``ours-fastdraft-LOSS-gG``: the best γ per loss
is kept), writes ``assets/fastdraft/TARGET-results.json`` (what the Train your draft tab shows) and copies the
checkpoint of ``--ship`` to ``assets/fastdraft/TARGET.safetensors`` (the drafter's default).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from core.errors import DraftScopeError
from core.runtime import checkpoint
from core.specdec.drafters import fastdraft
from core.train.fastdraft import results_path
from core.train.loop import print_summary, run_script

KEPT = ("stage", "loss", "init_layers", "vocab_trim", "coverage", "modes", "train_tokens", "train_sequences", "epochs",
        "lr", "batch", "before", "after", "curve", "drafter_ms", "target_ms", "cost", "mbsu_g2", "mbsu_g3", "mbsu_g4",
        "mbsu_g5", "mbsu_g6", "seconds", "corpus", "command")


METHOD = re.compile(r"^ours-fastdraft(?:-(.+))?-g(\d+)$")


def _label(meta: dict) -> str:
    return "pretrained" if meta.get("stage") == "pretrain" else str(meta.get("loss"))


def report(target: str, checkpoints: list[str], bench: str | None, ship: str | None) -> dict:
    losses = {}
    paths = {}
    for item in checkpoints:
        given, _, raw = item.rpartition("=")  # LABEL=PATH, or PATH (labelled by its loss)
        meta = checkpoint.read_meta(raw, fastdraft.KIND, fastdraft.TRAIN_HINT)
        if meta.get("target") != target:
            raise DraftScopeError(f"{raw} was trained for '{meta.get('target')}', not '{target}'")
        label = given or _label(meta)
        losses[label] = {k: meta[k] for k in KEPT if k in meta}
        paths[label] = Path(raw)
    rows = {}
    if bench:
        data = json.loads(Path(bench).read_text())
        data = data["rows"] if isinstance(data, dict) else data
        base = next((r for r in data if r["method"] == "hf-greedy"), None)
        for r in data:
            match = METHOD.match(r["method"])  # ours-fastdraft[-LABEL]-gN (no LABEL: the shipped drafter)
            if not match:
                continue
            label = match.group(1) or ship
            if label in losses and (label not in rows or r["speedup"] > rows[label]["speedup"]):
                rows[label] = {**r, "gamma": int(match.group(2))}
        if base:
            rows["hf-greedy"] = base
    out = {"target": target, "losses": losses, "bench": rows, "shipped_loss": ship}
    if ship:
        if ship not in paths:
            raise DraftScopeError(f"--ship {ship}: no checkpoint of that loss among {', '.join(paths)}")
        dest = fastdraft.default_checkpoint(target)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(paths[ship], dest)
        out["shipped_bytes"] = dest.stat().st_size
    path = results_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return {"results": str(path), "losses": list(losses), "bench": list(rows), "shipped": ship}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train.fastdraft_report", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m")
    parser.add_argument("--checkpoints", required=True, help="comma-separated trained checkpoints, each PATH or "
                                                             "LABEL=PATH")
    parser.add_argument("--bench", default=None, help="a `core.cli bench --json` output file")
    parser.add_argument("--ship", default=None, help="the label whose drafter becomes the target's default")
    args = parser.parse_args(argv)
    return run_script(lambda: print_summary(report(args.target, args.checkpoints.split(","), args.bench, args.ship)))


if __name__ == "__main__":
    sys.exit(main())
