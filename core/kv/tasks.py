"""Long-context tasks for the KV methods, generated procedurally or shipped: pass-key and multi-key retrieval in
filler text at a chosen token length, a multi-constraint travel-planning task (our reading of TravelPlanner: eight
requirements of one traveller scattered through long listings, all needed for the plan), questions over a shipped
document, the shipped summarization / RAG prompts, or a text file. Prompts are plain text that ends where the answer
starts (no chat template), so base and instruct models complete them the same way and two tokenizers see the same
characters."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from core import ASSETS_DIR
from core.errors import DraftScopeError
from core.prompts import load_prompts

ASSETS = ASSETS_DIR / "kv"
FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ")
TASKS = ("passkey", "multikey", "travel", "doc-qa", "summarization", "rag")
LENGTH_TASKS = ("passkey", "multikey", "travel")  # the tasks whose prompt length can be set
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


CITIES = ("Boston", "Denver", "Austin", "Seattle", "Chicago", "Phoenix", "Portland", "Atlanta", "Dallas", "Miami",
          "Memphis", "Tucson")
CUISINES = ("Thai", "Italian", "Mexican", "Indian", "Greek", "Japanese", "French", "Korean")
ROOMS = ("entire home", "private room", "shared room")
TRANSPORT = ("train", "bus", "car", "flight")
NUMBERS = ("two", "three", "four", "five", "six")
FORM = {"origin": "Origin", "destination": "Destination", "days": "Days", "travellers": "Travellers",
        "budget": "Budget", "cuisine": "Cuisine", "room": "Room", "transport": "Transport"}  # the plan form's fields
HOTEL_NAMES = ("Aster", "Birch", "Cedar", "Harbor", "Linden", "Maple", "Summit", "Willow", "Juniper", "Beacon")
FOOD_NAMES = ("Lotus", "Olive", "Saffron", "Basil", "Pepper", "Ember", "Fig", "Ginger", "Clover", "Sage")


@dataclass
class Constraint:
    """One of a multi-constraint task's requirements: its ``name``, the ``label`` of its field on the plan form, the
    ``value`` the plan must give there, and the ``statement`` that says it in the prompt (unique there; ``value``
    occurs in it). A cache is asked for it by appending ``probe`` after the prompt (``core.kv.run``)."""

    name: str
    label: str
    value: str
    statement: str

    @property
    def probe(self) -> str:
        """The text appended after the prompt to ask for this requirement alone."""
        return f"\nFrom the traveller's notes. {self.label}:"


@dataclass
class Task:
    name: str
    prompt: str
    answer: str | None  # None: no checkable answer (accuracy is not reported)
    constraints: list[Constraint] = field(default_factory=list)  # multi-constraint tasks: every one is checked

    def correct(self, output: str) -> bool | None:
        if self.answer is None:
            return None
        return self.answer.lower() in output.lower()

    def answered(self, constraint: Constraint, output: str) -> bool:
        """Whether ``output``, the continuation of ``constraint.probe`` after the prompt, begins with its value."""
        return re.match(rf"\s*{re.escape(constraint.value)}(?!\w)", output, re.IGNORECASE) is not None

    def score(self, output: str, answers: list[str] | None = None) -> float | None:
        """The accuracy: for a multi-constraint task the fraction of ``answers`` (the continuations of each
        constraint's probe) that give its value; else 1.0 / 0.0 for the answer found in ``output`` or not; None
        without a checkable answer."""
        if self.constraints:
            if answers is None:
                return None
            return sum(self.answered(c, a) for c, a in zip(self.constraints, answers, strict=True)) / len(answers)
        correct = self.correct(output)
        return None if correct is None else float(correct)


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
    if name in LENGTH_TASKS and not MIN_LENGTH <= length <= MAX_LENGTH:
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
    if name == "travel":
        return _travel(tokenizer, length, rng)
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


def _listing(rng: random.Random) -> str:
    """One line of the agency's listings: a flight, a hotel or a restaurant in some city (distractors: every city,
    cuisine, room type and price appears in them)."""
    a, b = rng.sample(CITIES, 2)
    kind = rng.randrange(3)
    if kind == 0:
        mode = rng.choice(TRANSPORT)
        return f"Listing: {mode} from {a} to {b}, ${rng.randint(40, 400)} a seat. "
    if kind == 1:
        return (f"Listing: Hotel {rng.choice(HOTEL_NAMES)} in {a}, {rng.choice(ROOMS)}, ${rng.randint(60, 300)} a "
                f"night. ")
    return (f"Listing: {rng.choice(FOOD_NAMES)} in {a} serves {rng.choice(CUISINES)} food, ${rng.randint(10, 60)} a "
            "person. ")


def _travel(tokenizer, length: int, rng: random.Random) -> Task:
    """Our small reading of TravelPlanner: eight requirements of one traveller (origin, destination, days, travellers,
    budget, cuisine, room, transport), each said once in a note at a random depth of about ``length`` tokens of the
    agency's listings, which name every city, cuisine, room type and price too. The prompt ends by asking for the plan
    form, which needs all eight, so a compressed cache must keep every note, not one answer; each is then asked for
    alone by its ``probe`` (``core.kv.run``). Accuracy is the fraction of the eight a cache gives back."""
    origin, destination = rng.sample(CITIES, 2)
    values = {"origin": origin, "destination": destination, "days": str(rng.randint(3, 9)),
              "travellers": rng.choice(NUMBERS), "budget": f"${rng.randrange(1200, 6000, 100):,}",
              "cuisine": rng.choice(CUISINES), "room": rng.choice(ROOMS), "transport": rng.choice(TRANSPORT)}
    constraints = [Constraint(name, label, values[name], f"Note from the traveller. {label}: {values[name]}.")
                   for name, label in FORM.items()]
    intro = ("A travel agent fills in a plan form from the traveller's notes, which are scattered among the agency's "
             "listings below.\n")
    tail = ("\nThe plan form needs every requirement from the traveller's notes: " + ", ".join(FORM.values())
            + ".")
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    budget = length - count(intro + tail + " ".join(c.statement for c in constraints))
    pieces: list[str] = []
    while budget > 0:
        pieces.append(_listing(rng))
        budget -= count(pieces[-1])
    for c in constraints:
        pieces.insert(rng.randint(0, len(pieces)), c.statement + " ")
    return Task("travel", intro + "".join(pieces) + tail, None, constraints)


def constraint_tokens(tokens: list[str], constraint: Constraint) -> list[int]:
    """Indices of the prompt tokens (their texts, in order) that overlap ``constraint.value`` inside its statement;
    [] when the statement is not in the text."""
    starts, text = [], ""
    for token in tokens:
        starts.append(len(text))
        text += token
    at = text.find(constraint.statement)
    if at < 0:
        return []
    lo = at + constraint.statement.index(constraint.value)
    hi = lo + len(constraint.value)
    return [i for i, s in enumerate(starts) if s < hi and s + len(tokens[i]) > lo]
