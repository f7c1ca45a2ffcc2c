"""Example prompts shipped in ``assets/prompts`` (Spec-Bench's six categories, written for this project)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core import ASSETS_DIR
from core.errors import DraftScopeError

ASSETS = ASSETS_DIR
DEFAULT_PROMPTS = ASSETS / "prompts" / "specbench_mini.jsonl"
CATEGORIES = ("chat", "translation", "summarization", "qa", "math", "rag")


@dataclass(frozen=True)
class Prompt:
    id: str
    category: str
    prompt: str


def load_prompts(path: str | Path | None = None) -> list[Prompt]:
    """Read a .jsonl file (keys id, category, prompt) or a plain text file (one prompt per non-empty line)."""
    path = Path(path) if path else DEFAULT_PROMPTS
    if not path.is_file():
        raise DraftScopeError(f"prompt file not found: {path}")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = []
    for n, line in enumerate(lines, 1):
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
                prompts.append(Prompt(str(row.get("id", n)), str(row.get("category", "other")), str(row["prompt"])))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DraftScopeError(f"{path}:{n}: expected a JSON object with a 'prompt' key") from exc
        else:
            prompts.append(Prompt(str(n), "other", line))
    if not prompts:
        raise DraftScopeError(f"no prompts in {path}")
    return prompts
