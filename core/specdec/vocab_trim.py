"""VocabTrim (Goel et al., 2025): a drafter's LM head that covers only the k tokens the target writes most often.

Token frequencies come from target-generated text (the distillation corpus, ``core.train.corpus``); the drafter's head
keeps those k rows, so a draft step evaluates k instead of V output rows. The drafter then puts q = 0 on every other
token: its logits are -inf there. Verification is unchanged, so the output stays lossless (greedy: an argmax inside
the kept set is still checked against the target's; sampled: the residual max(0, p - q) keeps p's mass on trimmed
tokens). Only the output projection is trimmed; the input embedding still reads any token the target emits.

Every drafter that owns a head takes the options of ``VocabTrimOptions`` (its ``Options`` inherit them) and builds its
head with ``draft_head``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from torch import nn

from core import ASSETS_DIR
from core.errors import DraftScopeError
from core.options import LocalPath, Range
from core.runtime import checkpoint
from core.runtime.devices import module_device, plain_deepcopy, shallow_copy

COUNTS_KIND = "vocab-counts"
COUNTS_HINT = "python -m core.train.corpus --target TARGET (it writes vocab-counts.safetensors in the corpus folder)"
SHIPPED_DIR = ASSETS_DIR / "vocab"


@dataclass
class VocabTrimOptions:
    vocab_trim: Annotated[int | None, Range(1024, 65536, 1024)] = None  # VocabTrim: head keeps the k top target tokens
    vocab_counts: Annotated[str | None, LocalPath] = None  # token counts of target-generated text (None: shipped)

    def __post_init__(self):
        k = self.vocab_trim
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise DraftScopeError(f"VocabTrim k must be a whole number of at least 1, got {k!r}")
        parent = super()
        if hasattr(parent, "__post_init__"):  # cooperative: drafters mix these options with others
            parent.__post_init__()


class TrimmedHead(nn.Module):
    """An LM head restricted to the token ids ``keep``: ``forward`` gives logits over the whole vocabulary, -inf
    outside ``keep``; ``trimmed`` gives the (…, k) logits of the kept rows only (for training)."""

    def __init__(self, weight_VD: torch.Tensor, keep: torch.Tensor, vocab: int, bias_V: torch.Tensor | None = None):
        super().__init__()
        keep = keep.to(device=weight_VD.device, dtype=torch.long)
        self.register_buffer("keep", keep, persistent=False)
        self.weight = nn.Parameter(weight_VD.detach()[keep].clone(), requires_grad=False)
        self.bias = None if bias_V is None else nn.Parameter(bias_V.detach()[keep].clone(), requires_grad=False)
        self.vocab = vocab

    @classmethod
    def of(cls, head: nn.Module, keep: torch.Tensor) -> TrimmedHead:
        if isinstance(head, TrimmedHead):  # trim further: keep ⊆ head.keep
            full = head.weight.new_zeros((head.vocab, head.weight.shape[1]))
            full[head.keep] = head.weight
            return cls(full, keep, head.vocab)
        if head.weight.device.type == "meta":  # a head the device map offloads: its rows from the offload storage
            head = plain_deepcopy(head)
        return cls(head.weight, keep, head.weight.shape[0], getattr(head, "bias", None))

    @property
    def k(self) -> int:
        return int(self.keep.numel())

    def trimmed(self, hidden: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(hidden.to(self.weight.device), self.weight, self.bias)  # a device map's stream

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        small = self.trimmed(hidden)
        out = small.new_full((*small.shape[:-1], self.vocab), float("-inf"))
        return out.index_copy_(-1, self.keep, small)


def read_counts(path: str | Path, target) -> tuple[torch.Tensor, dict]:
    """(counts (V,) int64, meta) of a token-count file written for ``target``'s tokenizer."""
    state, meta = checkpoint.load(path, COUNTS_KIND, COUNTS_HINT.replace("TARGET", target.name))
    if meta.get("tokenizer") != target.tokenizer_id():
        raise DraftScopeError(f"the token counts in {path} were made with another tokenizer ('{meta.get('target')}') "
                              f"than '{target.name}''s; use counts of text this target generated")
    return state["counts"].to(torch.int64), meta


def shipped_counts_path(target) -> Path:
    """The shipped count file whose tokenizer is ``target``'s (assets/vocab/)."""
    for path in sorted(SHIPPED_DIR.glob("*.safetensors")):
        try:
            meta = checkpoint.read_meta(path, COUNTS_KIND, COUNTS_HINT)
        except DraftScopeError:
            continue
        if meta.get("tokenizer") == target.tokenizer_id():
            return path
    raise DraftScopeError(f"no shipped token counts for '{target.name}''s tokenizer in {SHIPPED_DIR}; pass "
                          f"--vocab-counts FILE (made by {COUNTS_HINT.replace('TARGET', target.name)})")


def ranked_tokens(counts: torch.Tensor) -> torch.Tensor:
    """Token ids by descending count, ties by ascending id (deterministic)."""
    return torch.argsort(-counts, stable=True)


@dataclass
class TrimInfo:
    k: int
    vocab: int
    coverage: float  # fraction of the calibration tokens inside the kept set
    source: str

    def as_info(self) -> dict:
        return {"k": self.k, "vocab": self.vocab, "coverage": round(self.coverage, 4), "source": self.source}


def keep_set(target, k: int, counts_path: str | Path | None = None,
             within: torch.Tensor | None = None) -> tuple[torch.Tensor, TrimInfo]:
    """The k most frequent token ids (sorted) and how much of the calibration text they cover. ``within`` restricts
    the choice to a set (a head trimmed already)."""
    vocab = target.vocab_size
    if k > vocab:
        raise DraftScopeError(f"VocabTrim k = {k} is larger than '{target.name}''s vocabulary ({vocab} tokens)")
    path = Path(counts_path) if counts_path else shipped_counts_path(target)
    counts, meta = read_counts(path, target)
    counts = counts[:vocab] if counts.numel() >= vocab else torch.cat(
        [counts, counts.new_zeros(vocab - counts.numel())])
    ranked = ranked_tokens(counts)
    if within is not None:
        allowed = torch.zeros(vocab, dtype=torch.bool)
        allowed[within.cpu().long()] = True
        ranked = ranked[allowed[ranked]]
        if k > ranked.numel():
            raise DraftScopeError(f"VocabTrim k = {k}: this drafter's head holds only {ranked.numel()} tokens")
    keep = torch.sort(ranked[:k]).values
    total = int(counts.sum())
    coverage = float(counts[keep].sum()) / total if total else 0.0
    return keep, TrimInfo(k, vocab, coverage, str(meta.get("source", path.name)))


def draft_head(head: nn.Module, target, options: VocabTrimOptions) -> tuple[nn.Module, TrimInfo | None]:
    """The head a drafter drafts with: ``head`` itself, or its VocabTrim'd copy when ``options.vocab_trim`` is set."""
    k = options.vocab_trim
    if k is None:
        return head, None
    within = head.keep if isinstance(head, TrimmedHead) else None
    keep, info = keep_set(target, k, options.vocab_counts, within)
    return TrimmedHead.of(head, keep.to(module_device(head))), info


def stored_head(target, keep: torch.Tensor | None, options: VocabTrimOptions,
                coverage: float = float("nan")) -> tuple[nn.Module, TrimInfo | None]:
    """The head of a drafter whose checkpoint stores the ids it was trained with (draft heads, Falcon): the target's
    LM head restricted to ``keep`` (None or the whole vocabulary: the full head), trimmed further by the VocabTrim
    options; the trim it reports is the checkpoint's when the options ask for none."""
    lm_head = target.model.lm_head
    own = TrimmedHead.of(lm_head, keep) if keep is not None and keep.numel() < target.vocab_size else lm_head
    head, trim = draft_head(own, target, options)
    if trim is None and isinstance(own, TrimmedHead):
        trim = TrimInfo(own.k, own.vocab, coverage, "checkpoint")
    return head, trim


def vocab_mask(head: nn.Module) -> torch.Tensor | None:
    """(V,) bool on the CPU: the tokens a trimmed head can propose; None for a full head."""
    if not isinstance(head, TrimmedHead):
        return None
    mask = torch.zeros(head.vocab, dtype=torch.bool)
    mask[head.keep.cpu()] = True
    return mask


def with_head(model: nn.Module, head: nn.Module) -> nn.Module:
    """A shallow view of an HF causal LM whose ``lm_head`` is ``head`` (the model itself is left untouched)."""
    if getattr(model, "lm_head", None) is head:
        return model
    view = shallow_copy(model)  # a dispatched model's hooked forward is rebound to the view
    view.lm_head = head
    return view


def coverage_curve(target, counts_path: str | Path | None = None,
                   points: int = 64) -> tuple[list[int], list[float]]:
    """(k values, coverage at each k) of the token counts (shipped ones by default), k from 1 to the vocabulary on a
    log scale; ([], []) when there are no counts for the target's tokenizer."""
    try:
        counts, _ = read_counts(Path(counts_path) if counts_path else shipped_counts_path(target), target)
    except DraftScopeError:
        return [], []
    ranked = counts[ranked_tokens(counts)].double().cumsum(0)
    total = float(ranked[-1]) or 1.0
    n = counts.numel()
    ks = sorted({max(1, min(n, round(n ** (i / (points - 1))))) for i in range(points)})
    return ks, [round(float(ranked[k - 1]) / total, 5) for k in ks]
