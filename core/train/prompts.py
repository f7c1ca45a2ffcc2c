"""A deterministic set of training prompts, written for this project (no dataset can be downloaded here): task
templates crossed with topics. Disjoint from the evaluation prompts in assets/prompts/specbench_mini.jsonl."""

from __future__ import annotations

import random

TOPICS = [
    "volcanoes", "honeybees", "the water cycle", "public libraries", "electric cars", "the Roman Empire",
    "photosynthesis", "chess openings", "sourdough bread", "solar panels", "coral reefs", "the printing press",
    "black holes", "urban gardening", "the human heart", "jazz music", "recycling plastic", "earthquakes",
    "the Silk Road", "machine learning", "penguins", "time zones", "vaccines", "the Moon landing", "rainforests",
    "credit cards", "origami", "wind turbines", "the French Revolution", "sleep", "octopuses", "cloud computing",
    "marathon training", "the periodic table", "tea ceremonies", "bridges", "the immune system", "board games",
    "glaciers", "podcasts", "ancient Egypt", "bicycles", "composting", "the stock market", "lighthouses",
    "dinosaurs", "remote work", "rainbows",
]

TEMPLATES = [
    "Explain {t} to a ten-year-old.",
    "Write a short poem about {t}.",
    "List five interesting facts about {t}.",
    "Give me three tips for someone who wants to learn about {t}.",
    "Write a short story that involves {t}.",
    "What are the main advantages and disadvantages of {t}?",
    "Summarize the history of {t} in one paragraph.",
    "Write a friendly email inviting a colleague to a talk about {t}.",
    "Describe {t} in exactly three sentences.",
    "What is a common misconception about {t}? Explain why it is wrong.",
    "Write a haiku about {t}, then explain the imagery.",
    "Create a short quiz with three questions about {t}, with answers.",
]

MATH = [
    "A shop sells pencils at {a} cents each. How much do {b} pencils cost in dollars? Explain step by step.",
    "A train travels {a} kilometres in {b} hours. What is its average speed? Show your work.",
    "If a recipe needs {a} grams of flour for {b} people, how much flour is needed for {c} people?",
    "What is {a} multiplied by {b}, plus {c}? Show each step.",
]

CODE = [
    "Write a Python function that returns the {w} of a list of numbers, with a docstring.",
    "Write a Python function that checks whether a string is a {p}, and explain it briefly.",
    "Explain what a {d} is in programming, with a small Python example.",
]


def training_prompts(n: int | None = None, seed: int = 0) -> list[str]:
    """All template × topic prompts plus math and code prompts, shuffled deterministically (first n if given)."""
    rng = random.Random(seed)
    prompts = [tpl.format(t=topic) for tpl in TEMPLATES for topic in TOPICS]
    for tpl in MATH * 8:
        a, b, c = rng.randint(2, 90), rng.randint(2, 12), rng.randint(2, 30)
        prompts.append(tpl.format(a=a, b=b, c=c))
    for w in ("median", "mean", "largest gap between neighbours", "running total", "mode"):
        prompts.append(CODE[0].format(w=w))
    for p in ("palindrome", "valid email address", "pangram", "number", "valid hexadecimal colour"):
        prompts.append(CODE[1].format(p=p))
    for d in ("dictionary", "loop", "class", "recursion", "list comprehension", "generator", "exception"):
        prompts.append(CODE[2].format(d=d))
    prompts = list(dict.fromkeys(p.strip() for p in prompts))
    rng.shuffle(prompts)
    return prompts[:n] if n else prompts
