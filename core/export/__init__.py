"""Exporting DraftScope's trained drafters for a serving engine (vLLM's ``--speculative-config``).

One module per exportable drafter (``EXPORTERS``): each writes its model files (if any) into a staging folder and
says what the engine's drafter does differently from ours. ``export`` adds, in every folder:

- ``speculative_config.json``: the exact dict for ``vllm serve TARGET --speculative-config``;
- ``draftscope.json``: what was exported from what, the self-checks, and the benchmark-matrix row of the Production
  metrics tab that measured the same drafter offline (None when no shipped row ran it that way);
- ``README.md``: the same for a reader, with the commands.

Drafters without a faithful engine format (``REFUSED``) are refused with the reason.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import DraftScopeError
from core.export import fastdraft, medusa, ngram
from core.export.writing import check_destination, staged_dir, write_json
from core.runtime.models import PRESETS, LoadedModel, load_model

EXPORTERS = {"medusa": medusa, "fastdraft": fastdraft, "ngram": ngram}
REFUSED = {
    "hydra": "Hydra heads also read the embeddings of the tokens drafted before them; vLLM's Medusa heads read the "
             "hidden state alone, and no vLLM method runs sequentially dependent heads",
    "hydra++": "Hydra++ adds a prefix decoder layer to Hydra's sequentially dependent heads; no vLLM method runs them",
    "falcon": "Falcon's semi-autoregressive block (two tokens per forward, glancing at the target's states) has no "
              "vLLM format; EAGLE is a different architecture trained differently",
    "kangaroo": "Kangaroo drafts with the target's own first layers plus an adapter (self-speculative early exit); "
                "no serving engine runs it",
}
MAX_GAMMA = 16
SCHEMA, VERSION = "draftscope.export", 1


@dataclass
class ExportResult:
    out: Path
    drafter: str
    target: str
    gamma: int
    speculative_config: dict
    record: dict  # what draftscope.json holds


def supported() -> str:
    return ", ".join(EXPORTERS)


def check_request(drafter: str, gamma: int | None, checkpoint: str | None, fill: str) -> None:
    """Refuse bad requests before anything loads."""
    if drafter in REFUSED:
        raise DraftScopeError(f"cannot export '{drafter}' for vLLM: {REFUSED[drafter]}. Exportable: {supported()}")
    if drafter not in EXPORTERS:
        raise DraftScopeError(f"no serving-engine format for the '{drafter}' drafter; exportable: {supported()}")
    if gamma is not None and not 1 <= gamma <= MAX_GAMMA:
        raise DraftScopeError(f"--gamma must be in 1..{MAX_GAMMA}, got {gamma}")
    if checkpoint is not None and drafter == "ngram":
        raise DraftScopeError("the ngram drafter has no checkpoint: drop --checkpoint")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise DraftScopeError(f"checkpoint not found: {checkpoint}")
    if fill not in fastdraft.FILLS:
        raise DraftScopeError(f"unknown --trimmed-rows '{fill}'; choose from {', '.join(fastdraft.FILLS)}")
    if fill != fastdraft.FILLS[0] and drafter != "fastdraft":
        raise DraftScopeError("--trimmed-rows applies to the fastdraft export only")


def matrix_row(target: str, drafter: str, gamma: int, checkpoint: str | None) -> dict | None:
    """The shipped benchmark-matrix row that measured this drafter as the engine will run it (the shipped checkpoint,
    default options, a chain of ``gamma``), as the Production metrics tab lists it."""
    from core.specdec.prod_metrics import choice_for_drafter, shipped_matrices

    if checkpoint is not None:
        return None  # the matrix ran the shipped checkpoints
    try:
        choice = choice_for_drafter(shipped_matrices(), target, drafter, gamma)
    except DraftScopeError:
        return None
    if choice is None:
        return None
    label, key = choice
    index = json.loads(key)[1]
    return {"label": label, "key": key, "row": index}


def export(drafter: str, target: str, out: str | Path, gamma: int | None = None, checkpoint: str | None = None,
           force: bool = False, fill: str = fastdraft.FILLS[0], loaded: LoadedModel | None = None) -> ExportResult:
    """Export ``drafter`` (trained for ``target``; ``checkpoint`` None: the shipped file) to the folder ``out``.
    ``loaded``: the target already loaded (tests). Nothing is left behind on failure."""
    check_request(drafter, gamma, checkpoint, fill)
    out = check_destination(out, force)
    module = EXPORTERS[drafter]
    target_model = loaded or (load_model(target, allow_local=True) if module.NEEDS_TARGET else None)
    target_name = target_model.name if target_model is not None else target
    with staged_dir(out, force) as stage:
        info = module.write(stage, target_model, gamma, checkpoint, fill) if drafter == "fastdraft" else \
            module.write(stage, target_model, gamma, checkpoint)
        spec = {"method": module.METHOD}
        if (stage / "model.safetensors").is_file():
            spec["model"] = str(out)
        spec["num_speculative_tokens"] = info["gamma"]
        spec.update(info.get("speculative", {}))
        record = {"schema": SCHEMA, "version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "drafter": drafter, "target": target_name, "target_checkpoint": _hub_id(target_name),
                  "engine": "vllm", "gamma": info["gamma"], "source": info["source"], "speculative_config": spec,
                  "matrix_row": matrix_row(target_name, drafter, info["gamma"], checkpoint),
                  "differences": info["differences"], "details": info.get("details", {})}
        (stage / "speculative_config.json").write_text(json.dumps(spec) + "\n", encoding="utf-8")
        write_json(stage / "draftscope.json", record)
        (stage / "README.md").write_text(readme(record, info, out), encoding="utf-8")
    return ExportResult(out, drafter, target_name, info["gamma"], spec, record)


def _hub_id(target: str) -> str | None:
    preset = PRESETS.get(target)
    return preset.hub_id if preset is not None else None


def readme(record: dict, info: dict, out: Path) -> str:
    target = record["target_checkpoint"] or f"<the checkpoint of '{record['target']}'>"
    row = record["matrix_row"]
    compare = (f"In DraftScope's Production metrics tab, paste the dump and pick **{row['label']}** as DraftScope's "
               "offline measurement: the shipped benchmark matrix's run of this drafter as vLLM runs it (the same "
               "checkpoint, default options, a chain of the same length)."
               if row else "No row of the shipped benchmark matrix ran this drafter exactly so (another checkpoint "
               "or another γ); measure it with `python -m core.cli bench --matrix` first.")
    lines = [
        f"# {info['source_kind']} of DraftScope, exported for vLLM",
        "",
        f"- Drafter: `{record['drafter']}`, γ = {record['gamma']} (`num_speculative_tokens`)",
        f"- Source: `{record['source']}`",
        f"- Target: `{record['target']}` (serve `{target}`)",
        f"- vLLM method: `{record['speculative_config']['method']}`",
        "",
        "## Serve it",
        "",
        "```bash",
        f"vllm serve {target} --speculative-config \"$(cat {out}/speculative_config.json)\"",
        "curl -s localhost:8000/metrics > metrics.txt   # after some requests",
        "```",
        "",
        "`speculative_config.json` names this folder by its absolute path: edit `model` there if you move it.",
        "",
        compare,
        "",
        "## What differs from DraftScope's drafter",
        "",
        *[f"- {d}" for d in record["differences"]],
        "",
        "Nothing here was run in vLLM (DraftScope's machine has no GPU): the layout follows vLLM's source as read "
        "(see DraftScope's README, \"Serving engines: exporting drafters\").",
        "",
    ]
    return "\n".join(lines)


__all__ = ["EXPORTERS", "REFUSED", "ExportResult", "check_request", "export", "matrix_row", "supported"]
