"""Long-context tasks for the KV methods, generated procedurally or shipped: pass-key and multi-key retrieval in
filler text at a chosen token length, questions over a shipped document, the shipped summarization / RAG prompts,
or a text file. Prompts are plain text that ends where the answer starts (no chat template), so base and instruct
models complete them the same way and two tokenizers see the same characters."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from core import ASSETS_DIR
from core.errors import DraftScopeError
from core.prompts import load_prompts

ASSETS = ASSETS_DIR / "kv"
FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ")
TASKS = ("passkey", "multikey", "doc-qa", "summarization", "rag")
MIN_LENGTH, MAX_LENGTH = 64, 8192
COLOURS = ("red", "blue", "green", "amber", "violet", "silver", "orange", "white")
DOC_QUESTIONS = (  # (question, answer) over assets/kv/document.txt
    ("How many visitors did the observatory welcome this year?", "4,318"),
    ("What is the name of the 40-centimetre telescope?", "Harrow"),
    ("Who is the observatory's treasurer?", "Margaret Okafor"),
    ("Which star's brightness did members estimate?", "Chi Cygni"),
    ("How much did the rotation motor repair cost?", "3,600"),
    ("Which asteroid occulted a faint star in June?", "Hebe"),
)


@dataclass
class Task:
    name: str
    prompt: str
    answer: str | None  # None: no checkable answer (accuracy is not reported)

    def correct(self, output: str) -> bool | None:
        if self.answer is None:
            return None
        return self.answer.lower() in output.lower()


def _fill(tokenizer, length: int, inserts: list[str], rng: random.Random, tail: str) -> str:
    """Filler text of about ``length`` tokens (the tail included) with ``inserts`` at random depths."""
    unit = len(tokenizer(FILLER, add_special_tokens=False)["input_ids"])
    budget = length - len(tokenizer(tail + " ".join(inserts), add_special_tokens=False)["input_ids"])
    pieces = [FILLER] * max(1, budget // unit)
    for sentence in inserts:
        pieces.insert(rng.randint(0, len(pieces)), sentence + " ")
    return "".join(pieces) + tail


def make_task(name: str, tokenizer, length: int = 1024, seed: int = 0) -> Task:
    """One task instance; ``length`` is in tokens of ``tokenizer`` (procedural tasks only)."""
    rng = random.Random(seed)
    if name in ("passkey", "multikey") and not MIN_LENGTH <= length <= MAX_LENGTH:
        raise DraftScopeError(f"length must be in {MIN_LENGTH}..{MAX_LENGTH} tokens, got {length}")
    if name == "passkey":
        key = str(rng.randint(10000, 99999))
        intro = "There is a pass key hidden in the text below. Find it and remember it. "
        inserts = [f"The pass key is {key}. Remember it. {key} is the pass key."]
        return Task(name, intro + _fill(tokenizer, length, inserts, rng, "\nWhat is the pass key? The pass key is"),
                    key)
    if name == "multikey":
        keys = {c: str(rng.randint(10000, 99999)) for c in rng.sample(COLOURS, 4)}
        asked = rng.choice(list(keys))
        intro = "Several pass keys are hidden in the text below, one for each colour. Remember them. "
        inserts = [f"The pass key for {c} is {k}." for c, k in keys.items()]
        tail = f"\nWhat is the pass key for {asked}? The pass key for {asked} is"
        return Task(name, intro + _fill(tokenizer, length, inserts, rng, tail), keys[asked])
    if name == "doc-qa":
        question, answer = DOC_QUESTIONS[seed % len(DOC_QUESTIONS)]
        document = (ASSETS / "document.txt").read_text()
        return Task(name, f"{document}\nQuestion: {question}\nAnswer:", answer)
    if name in ("summarization", "rag"):
        prompts = [p for p in load_prompts() if p.category == name]
        chosen = prompts[seed % len(prompts)]
        return Task(name, chosen.prompt + "\n", None)
    path = Path(name)
    if path.is_file():
        text = path.read_text()
        if not text.strip():
            raise DraftScopeError(f"{name} is empty")
        return Task(path.name, text, None)
    raise DraftScopeError(f"unknown task '{name}'; choose one of {', '.join(TASKS)} or give a text file")
