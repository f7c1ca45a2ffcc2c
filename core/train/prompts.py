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


# The distillation corpus widens the training prompts to the benchmark's six kinds of task (chat, translation,
# summarization, QA, math, RAG) with prompts of its own; none is an evaluation prompt.
MORE_TOPICS = [
    "hot air balloons", "the Great Wall of China", "submarines", "wolves", "paper money", "thunderstorms",
    "the Olympic Games", "mushrooms", "telescopes", "the Amazon river", "bees' dances", "windmills", "ocean tides",
    "the internet", "ants", "the Eiffel Tower", "clocks", "deserts", "whales", "trains", "coffee", "maps",
    "snowflakes", "castles",
]

CHAT = [
    "Give me four tips for keeping {t} interesting for a school project.",
    "Write a short message to a friend recommending a documentary about {t}.",
    "I am giving a five-minute talk about {t}. Suggest an outline.",
    "What questions would a curious child ask about {t}? List three and answer them.",
    "Write a short product description for a board game themed around {t}.",
]

QA = [
    "What is {t}?", "Why is {t} important?", "How does {t} work?", "Who first studied {t}, and what did they find?",
    "What would happen if {t} disappeared tomorrow?",
]

SENTENCES = [
    "The {n} is next to the {m}.", "We are going to visit the {n} on Sunday.", "My brother forgot his {n} at home.",
    "Could you please close the {n}?", "The children are playing near the {m}.",
    "Every morning I drink a glass of water before I open the {n}.", "Our teacher found a {n} under the {m}.",
    "It is raining, so we will stay inside and clean the {n}.",
]
NOUNS = ["window", "garden", "kitchen", "bicycle", "market", "school", "bridge", "bakery", "river", "door", "bus",
         "umbrella", "library", "table"]
LANGUAGES = ["French", "Spanish", "German", "Italian"]

FACTS = [
    "{T} has been studied for many years by scientists and hobbyists.",
    "Many people first learn about {t} at school.",
    "In recent years, new tools have made it easier to observe {t}.",
    "Some experts argue that {t} is often misunderstood.",
    "A local museum opened an exhibition about {t} last spring, and more than {a} visitors came in the first month.",
    "The exhibition cost {b} thousand dollars and was paid for by the city.",
    "Visitors said the best part was a hands-on room where children could build small models.",
    "The organisers plan to take the exhibition to {c} other cities next year.",
]


def _passage(topic: str, rng: random.Random) -> str:
    a, b, c = rng.randint(200, 9000), rng.randint(10, 900), rng.randint(2, 9)
    facts = rng.sample(FACTS, 5)
    return " ".join(f.format(t=topic, T=topic[0].upper() + topic[1:], a=a, b=b, c=c) for f in facts)


def corpus_prompts(seed: int = 0) -> list[str]:
    """The distillation corpus's prompts: the training prompts, then chat, QA, translation, summarization and
    RAG-style prompts over more topics, all shuffled together deterministically (a prefix is a mix of every kind).
    Disjoint from the evaluation prompts."""
    rng = random.Random(seed + 1)
    topics = TOPICS + MORE_TOPICS
    extra = [tpl.format(t=t) for tpl in CHAT + QA for t in topics]
    for s in SENTENCES:
        for lang in LANGUAGES:
            n, m = rng.sample(NOUNS, 2)
            extra.append(f"Translate to {lang}: " + s.format(n=n, m=m))
    for t in topics:
        extra.append(f"Summarize the following text in two sentences.\n\n{_passage(t, rng)}")
        passage = _passage(t, rng)
        extra.append(f"Answer the question using only the context.\n\nContext: {passage}\n\n"
                     f"Question: How many other cities will the exhibition about {t} visit?")
    for tpl in MATH * 6:
        a, b, c = rng.randint(2, 90), rng.randint(2, 12), rng.randint(2, 30)
        extra.append(tpl.format(a=a, b=b, c=c))
    prompts = list(dict.fromkeys([*training_prompts(seed=seed), *(p.strip() for p in extra)]))
    rng.shuffle(prompts)
    return prompts
