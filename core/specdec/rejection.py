"""Where drafts get rejected: pure Python over step records (chain ``StepRecord`` and tree ``TreeStepRecord``).

Every drafted token the target actually compared counts once — chain drafts with decision accepted / rejected (not the
unverified ones after a rejection), tree nodes with ``tried`` set. ``events`` turns one prompt's records into light
dicts (kept instead of the records in long runs); ``summarize`` counts them: by draft position (0 = the first drafted
token; a tree node's depth), by the target's entropy there, by the drafter's confidence q, by the drafted token's class,
by prompt category, and the most-rejected tokens with up to three examples each (prompt, round, position, the drafted
text and the target's token there) so a viewer can link to the round. ``rejection_stats`` does both.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from itertools import pairwise

ENTROPY_EDGES = (0.0, 0.25, 0.5, 1.0, 2.0, 3.0, math.inf)  # nats
Q_EDGES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)  # the drafter's probability of its token (the last bin includes 1)
NO_Q, UNKNOWN = "no q (model-free)", "unknown"
TOKEN_CLASSES = ("special", "whitespace/newline", "digits", "punctuation", "code symbols", "word start",
                 "word continuation", "other")
CODE_CHARS = set("{}[]<>=+*/\\|&^%$#@~`_;")
WORD_START = (" ", "\u0120", "\u2581")  # a leading space, byte-level BPE's Ġ, SentencePiece's ▁
SPECIAL_TEXT = re.compile(r"^(<\|[^|<>]*\|>|</?[A-Za-z_][A-Za-z0-9_]*>|\[/?INST\])$")  # <|im_start|>, <eos>, </s>
TOP_TOKENS = 20
EXAMPLES = 3


def token_class(text: str, token_id: int | None = None, special_ids: Iterable[int] | None = None) -> str:
    """The class of one token: a special / chat-template token (by id when ``special_ids`` is given, else by text
    patterns such as ``<|im_start|>``), whitespace or newlines, digits, punctuation, code symbols, a word start (a
    leading space, Ġ or ▁ before letters), a word continuation (letters without one), or other (e.g. a partial
    UTF-8 byte shown as �)."""
    if special_ids is not None and token_id is not None and token_id in set(special_ids):
        return "special"
    if SPECIAL_TEXT.match(text.strip()):
        return "special"
    if not text.strip():
        return "whitespace/newline"
    starts_word = text[0] in WORD_START or text[0].isspace()
    body = text.lstrip(" \u0120\u2581\t")
    if any(c.isdigit() for c in body) and all(c.isdigit() or c in ".,:/" for c in body):
        return "digits"
    if any(c.isalpha() for c in body):
        return "word start" if starts_word else "word continuation"
    if any(c in CODE_CHARS for c in body):
        return "code symbols"
    if all(unicodedata.category(c).startswith(("P", "S")) or c.isspace() for c in body) and "\ufffd" not in body:
        return "punctuation"
    return "other"


def _bin(value: float | None, edges: Sequence[float], missing: str) -> str:
    if value is None:
        return missing
    for lo, hi in pairwise(edges):
        if value < hi or (hi == edges[-1] and value <= hi):
            return _label(lo, hi)
    return _label(edges[-2], edges[-1])


def _label(lo: float, hi: float) -> str:
    return f"≥ {lo:g}" if math.isinf(hi) else f"{lo:g}–{hi:g}"


def entropy_bins() -> list[str]:
    return [_label(lo, hi) for lo, hi in pairwise(ENTROPY_EDGES)]


def q_bins() -> list[str]:
    return [_label(lo, hi) for lo, hi in pairwise(Q_EDGES)]


# ------------------------------------------------------------------------------------------------ records → events
def events(prompt_id: str, category: str, records: Sequence, special_ids: Iterable[int] | None = None) -> list[dict]:
    """One dict per drafted token the target compared in these records (one prompt's run): where (prompt, round,
    draft position, token position), what (id, text, class), the decision, p, q, the target's entropy there and the
    target's own token at that position (top of p for a chain; for a tree the accepted sibling, else the token the
    target emitted after the path)."""
    special = set(special_ids) if special_ids is not None else None
    out = []
    for record in records:
        if record is None:
            continue
        for item in _compared(record):
            item.update(prompt_id=str(prompt_id), category=category, round=record.step,
                        token_class=token_class(item["text"], item["id"], special))
            out.append(item)
    return out


def _compared(record) -> list[dict]:
    if hasattr(record, "nodes"):  # a tree round
        return _tree_compared(record)
    return [{"position": i, "token_position": d.position, "id": d.id, "text": d.text,
             "accepted": d.decision == "accepted", "p": d.p, "q": d.q, "p_entropy": d.p_entropy,
             "preferred": d.p_topk[0].text if d.p_topk else None}
            for i, d in enumerate(record.drafted) if d.decision in ("accepted", "rejected")]


def _tree_compared(record) -> list[dict]:
    emitted = record.emitted
    out = []
    for node in record.nodes:
        if not node.tried or node.decision not in ("accepted", "rejected"):
            continue
        winner = next((n for n in record.nodes if n.parent == node.parent and n.decision == "accepted"), None)
        if winner is not None:
            preferred = winner.text
        elif emitted is not None and emitted.position == record.start_position + node.depth:
            preferred = emitted.text
        else:
            preferred = None
        out.append({"position": node.depth, "token_position": record.start_position + node.depth, "id": node.id,
                    "text": node.text, "accepted": node.decision == "accepted", "p": node.p, "q": node.q,
                    "p_entropy": node.p_entropy, "preferred": preferred})
    return out


# ------------------------------------------------------------------------------------------------ events → statistics
def _counts(items: Iterable[dict]) -> dict:
    items = list(items)
    accepted = sum(e["accepted"] for e in items)
    return {"verified": len(items), "accepted": accepted, "rejected": len(items) - accepted,
            "acceptance": accepted / len(items) if items else None}


def _grouped(items: list[dict], key, order: Sequence[str] | None = None) -> list[dict]:
    groups: dict = defaultdict(list)
    for e in items:
        groups[key(e)].append(e)
    keys = [k for k in order if k in groups] + [k for k in groups if k not in order] if order else sorted(groups)
    return [{"bin": k, **_counts(groups[k])} for k in keys]


def summarize(items: Iterable[dict], top: int = TOP_TOKENS) -> dict:
    """Counts over events (``events``): totals, and lists of {bin, verified, accepted, rejected, acceptance} by
    position, entropy bin, q bin, token class and category; ``top_rejected``: the ``top`` tokens rejected most
    often (text, rejections, times compared, rejection rate, up to three examples)."""
    items = list(items)
    by_position = _grouped(items, lambda e: e["position"])
    for row in by_position:
        row["position"] = row.pop("bin")
    return {
        "totals": _counts(items),
        "by_position": by_position,
        "by_entropy": _grouped(items, lambda e: _bin(e["p_entropy"], ENTROPY_EDGES, UNKNOWN),
                               [*entropy_bins(), UNKNOWN]),
        "by_confidence": _grouped(items, lambda e: _bin(e["q"], Q_EDGES, NO_Q), [*q_bins(), NO_Q]),
        "by_token_class": _grouped(items, lambda e: e["token_class"], TOKEN_CLASSES),
        "by_category": _grouped(items, lambda e: e["category"], list(dict.fromkeys(e["category"] for e in items))),
        "top_rejected": _top_rejected(items, top),
    }


def _top_rejected(items: list[dict], top: int) -> list[dict]:
    seen = Counter(e["text"] for e in items)
    rejected = [e for e in items if not e["accepted"]]
    counts = Counter(e["text"] for e in rejected)
    rows = []
    for text, n in sorted(counts.items(), key=lambda kv: (-kv[1], -kv[1] / seen[kv[0]], kv[0]))[:top]:
        examples = [{"prompt_id": e["prompt_id"], "round": e["round"], "position": e["position"],
                     "token_position": e["token_position"], "drafted": e["text"], "preferred": e["preferred"]}
                    for e in rejected if e["text"] == text][:EXAMPLES]
        rows.append({"text": text, "token_class": next(e["token_class"] for e in rejected if e["text"] == text),
                     "rejected": n, "verified": seen[text], "rejection_rate": n / seen[text], "examples": examples})
    return rows


def rejection_stats(runs: Iterable[tuple[str, str, Sequence]], special_ids: Iterable[int] | None = None,
                    top: int = TOP_TOKENS) -> dict:
    """``summarize`` over the records of several prompts: ``runs`` is (prompt id, category, records) per prompt."""
    special = list(special_ids) if special_ids is not None else None
    return summarize([e for pid, cat, records in runs for e in events(pid, cat, records, special)], top)
