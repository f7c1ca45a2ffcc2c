"""Drafting across tokenizers (OmniDraft): the string-level map between two vocabularies and the online n-gram cache.

A drafter with its own tokenizer proposes its tokens d_1..d_k; they become target tokens by
- an **n-gram cache** entry: a run of drafter tokens that spells exactly one target token (learned online: whenever
  the target emits a token with no one-token drafter equivalent, its text tokenised by the drafter is inserted);
- a **direct** match: the drafter token's text (leading space included) is itself a target token;
- otherwise the proposal is **cut** there.
Longest cache match first. Texts are compared as decoded strings, so SentencePiece's '▁' and byte-level BPE's 'Ġ' meet
as the same space; byte pieces (a part of a multi-byte character) and special tokens never map directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.runtime.models import LoadedModel

MAX_NGRAM = 8  # the longest drafter run one cache entry may hold


def token_pieces(model: LoadedModel) -> list[str | None]:
    """The decoded text of every token id of ``model``'s tokenizer alone (None where it cannot stand for text: special
    tokens, byte pieces of a multi-byte character, empty pieces). Memoised on the model."""
    memo = model._memo
    if "pieces" not in memo:
        tok = model.tokenizer
        size = len(tok) if hasattr(tok, "__len__") else len(tok.get_vocab())
        pieces = tok.batch_decode([[i] for i in range(size)]) if hasattr(tok, "batch_decode") else [
            tok.decode([i]) for i in range(size)]
        banned = set(getattr(tok, "all_special_ids", []) or [])
        added = getattr(tok, "added_tokens_decoder", None) or {}  # Gemma adds "\n", runs of spaces…: those map
        banned.update(i for i, token in added.items() if getattr(token, "special", True))
        memo["pieces"] = [None if i in banned or not p or "\ufffd" in p else p for i, p in enumerate(pieces)]
    return memo["pieces"]


def encode_text(model: LoadedModel, text: str, special: bool = False) -> list[int]:
    """``text`` in ``model``'s tokens (``special``: with the tokenizer's own BOS etc.)."""
    if not text:
        return []
    return list(model.tokenizer(text, add_special_tokens=special)["input_ids"])


def decode_text(model: LoadedModel, ids: list[int]) -> str:
    """The text of ``ids`` without special tokens (what the other model reads)."""
    return model.tokenizer.decode(ids, skip_special_tokens=True) if ids else ""


def _ids_by_text(model: LoadedModel, pieces: list[str | None]) -> dict[str, int]:
    """Each text a token decodes to → the id ``model``'s tokenizer gives that text alone when that is one token of the
    text, else the lowest id that decodes to it."""
    out: dict[str, int] = {}
    for i, piece in enumerate(pieces):
        if piece is not None:
            out.setdefault(piece, i)
    texts = list(out)
    tok = model.tokenizer
    try:  # one batched call where the tokenizer takes a list (the real ones: fast, in Rust)
        encoded = tok(texts, add_special_tokens=False)["input_ids"]
        if len(encoded) != len(texts) or not all(isinstance(e, list) for e in encoded):
            raise TypeError
    except (TypeError, ValueError, AttributeError):
        encoded = [encode_text(model, text) for text in texts]
    for text, ids in zip(texts, encoded, strict=True):
        if len(ids) == 1 and pieces[ids[0]] == text:
            out[text] = ids[0]
    return out


@dataclass
class VocabMap:
    """The direct map between a drafter's and a target's vocabularies, by decoded text."""

    to_target: list[int]  # drafter id → target id with the same text, or -1
    to_draft: dict[int, int]  # target id → drafter id with the same text
    draft_pieces: list[str | None]
    target_pieces: list[str | None]

    @classmethod
    def between(cls, drafter: LoadedModel, target: LoadedModel) -> VocabMap:
        """Match the two vocabularies by text. A text several ids decode to (Gemma has duplicates of '.', ',' …)
        maps to the id the tokenizer itself gives that text alone, so a direct match proposes what the target
        would write; every id with the text maps back."""
        d_pieces, t_pieces = token_pieces(drafter), token_pieces(target)
        d_ids, t_ids = _ids_by_text(drafter, d_pieces), _ids_by_text(target, t_pieces)
        to_target = [t_ids.get(p, -1) if p is not None else -1 for p in d_pieces]
        to_draft = {t: d_ids[p] for t, p in enumerate(t_pieces) if p is not None and p in d_ids}
        return cls(to_target, to_draft, d_pieces, t_pieces)

    @property
    def coverage(self) -> float:
        """The share of the drafter's text tokens that map directly to a target token."""
        usable = sum(p is not None for p in self.draft_pieces)
        return sum(t >= 0 for t in self.to_target) / max(usable, 1)


@dataclass
class Group:
    """One target token of a translated proposal: the drafter positions it came from and how."""

    kind: str  # "direct" | "ngram"
    draft: list[int]  # positions in the drafted run
    target: int  # the target token id


@dataclass
class NgramCache:
    """Runs of drafter tokens that spell one target token, growing online (``learn``), with the insertion log."""

    entries: dict[tuple[int, ...], int] = field(default_factory=dict)
    prefixes: set[tuple[int, ...]] = field(default_factory=set)  # every proper prefix of a key (for drafting)
    log: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)  # (target id, drafter run) in order

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, run: tuple[int, ...], target: int) -> bool:
        if len(run) < 2 or len(run) > MAX_NGRAM or run in self.entries:
            return False
        self.entries[run] = target
        self.prefixes.update(run[:i] for i in range(1, len(run)))
        self.log.append((target, run))
        return True

    def learn(self, target_ids: list[int], vmap: VocabMap, drafter: LoadedModel) -> list[tuple[int, tuple[int, ...]]]:
        """Insert the target tokens among ``target_ids`` that have no one-token drafter equivalent, as the drafter
        tokenises their text; return the new entries."""
        new = []
        for t in target_ids:
            piece = vmap.target_pieces[t] if 0 <= t < len(vmap.target_pieces) else None
            if piece is None or t in vmap.to_draft:
                continue
            run = tuple(encode_text(drafter, piece))
            if self.add(run, t):
                new.append((t, run))
        return new

    def open_prefix(self, run: list[int]) -> bool:
        """The end of ``run`` could still grow into a cache entry (a proper prefix of a key)."""
        return any(tuple(run[len(run) - n:]) in self.prefixes for n in range(1, min(len(run), MAX_NGRAM) + 1))


def translate(draft: list[int], vmap: VocabMap, cache: NgramCache | None) -> tuple[list[Group], int | None]:
    """The target tokens a drafted run stands for: longest n-gram cache match, else a direct match, else a cut.
    Returns (groups, the position of the cut or None)."""
    groups: list[Group] = []
    i = 0
    while i < len(draft):
        hit = None
        if cache is not None and cache.entries:
            for n in range(min(MAX_NGRAM, len(draft) - i), 1, -1):
                target = cache.entries.get(tuple(draft[i:i + n]))
                if target is not None:
                    hit = Group("ngram", list(range(i, i + n)), target)
                    break
        if hit is None:
            target = vmap.to_target[draft[i]] if 0 <= draft[i] < len(vmap.to_target) else -1
            if target < 0:
                return groups, i
            hit = Group("direct", [i], target)
        groups.append(hit)
        i += len(hit.draft)
    return groups, None
