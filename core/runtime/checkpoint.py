"""The one file format of every checkpoint DraftScope ships or trains: a safetensors file whose metadata holds a single
key, ``"draftscope"``, with the JSON ``{"kind": KIND, "meta": META}``.

KIND says what the file is (one of ``KINDS``), so a file of another kind is refused with a clear message; META is
the caller's dict (training facts, and the config a model is rebuilt from). Floating-point tensors are stored as fp16,
others (e.g. BatchNorm's step counter) as they are. Files are written to a temporary name in the same folder and
renamed into place, so an interrupted save never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from core.errors import DraftScopeError

HEADER_KEY = "draftscope"  # the one safetensors metadata key
KINDS = {  # kind → what the user reads in messages
    "kangaroo-adapter": "Kangaroo adapter",
    "sorted-exits": "S2D exits file",
    "var-vqvae": "VAR tokenizer",
    "var": "VAR transformer",
    "var-classifier": "image classifier",
    "vocab-counts": "token-count file",
    "fastdraft": "FastDraft drafter",
    "draft-heads": "draft heads file",
    "falcon": "Falcon drafter",
    "longspec": "LongSpec drafter",
}


def _describe(kind: str) -> str:
    return KINDS.get(kind, f"'{kind}' checkpoint")


def save(path: str | Path, tensors: dict[str, torch.Tensor] | nn.Module, meta: dict, kind: str) -> Path:
    """Write ``tensors`` (a state dict, or a module whose state dict is taken) and ``meta`` (JSON-serialisable) as a
    checkpoint of ``kind``, atomically. Returns the path."""
    path = Path(path)
    state = tensors.state_dict() if isinstance(tensors, nn.Module) else tensors
    stored = {name: t.detach().to("cpu", torch.float16 if t.is_floating_point() else t.dtype).contiguous()
              for name, t in state.items()}
    header = json.dumps({"kind": kind, "meta": meta})
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(stored, str(tmp), metadata={HEADER_KEY: header})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _header(path: Path, kind: str, hint: str) -> dict:
    """The checked header of a checkpoint of ``kind``; ``hint`` is the command that trains one."""
    if not path.is_file():
        raise DraftScopeError(f"{_describe(kind)} not found: {path} (train one with {hint})")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(HEADER_KEY)
        header = json.loads(raw) if raw is not None else None
    except Exception as exc:  # a truncated or foreign file
        raise _unreadable(path, kind, exc) from None
    found = header.get("kind") if isinstance(header, dict) and isinstance(header.get("meta"), dict) else None
    if found != kind:
        says = f"its header says kind '{found}'" if found else "its header names no DraftScope kind"
        raise DraftScopeError(f"{path} is not a DraftScope {_describe(kind)} ({says}; train one with {hint})")
    return header


def _unreadable(path: Path, kind: str, exc: Exception) -> DraftScopeError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DraftScopeError(f"cannot read the {_describe(kind)} {path}: {first}")


def read_meta(path: str | Path, kind: str, hint: str) -> dict:
    """The meta of a checkpoint of ``kind`` (its tensors are not read)."""
    return _header(Path(path), kind, hint)["meta"]


def load(path: str | Path, kind: str, hint: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict as stored, on the CPU; meta) of a checkpoint of ``kind``. A missing file, a file of another kind
    and an unreadable file raise ``DraftScopeError``; the first two name ``hint``, the command that trains one."""
    path = Path(path)
    meta = _header(path, kind, hint)["meta"]
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:
        raise _unreadable(path, kind, exc) from None
    return state, meta
