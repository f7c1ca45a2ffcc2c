"""Prompt lookup (n-gram) drafting: find the latest earlier occurrence of the last n tokens and propose what followed.

Model-free, so q is one-hot on the proposed token (the sampling rule's ratio becomes p(x)).
Defaults: suffixes of 3 down to 2 tokens. Single-token matches ("the", ",") are mostly wrong, and on a CPU a rejected
draft is not free (verifying several tokens costs clearly more than one: see the README's benchmark), so they are off
unless ``min_ngram_size=1``; Hugging Face's prompt lookup matches 2 down to 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np

from core.errors import DraftScopeError
from core.options import Range
from core.specdec.drafters.base import Draft, DraftContext, Drafter, LengthOptions


class NgramDrafter(Drafter):
    name = "ngram"

    @dataclass
    class Options(LengthOptions):
        ngram_size: Annotated[int, Range(1, 16, 1)] = 3  # longest suffix n-gram the prompt lookup matches
        min_ngram_size: Annotated[int, Range(1, 16, 1)] = 2  # shortest one (1: single tokens too, as Hugging Face)

        def __post_init__(self):
            n, low = self.ngram_size, self.min_ngram_size
            if not 1 <= low <= n <= 16:
                raise DraftScopeError(f"n-gram size must satisfy 1 <= min ({low}) <= n ({n}) <= 16")
            super().__post_init__()

    def propose(self, ctx: DraftContext) -> Draft:
        return Draft(tokens=lookup(ctx.tokens, ctx.gamma, self.options.ngram_size, self.options.min_ngram_size))


def lookup(tokens: list[int], max_len: int, ngram_size: int, min_ngram_size: int = 1) -> list[int]:
    """Continuation (≤ max_len tokens) of the most recent earlier match of the longest suffix n-gram
    (min_ngram_size ≤ n ≤ ngram_size)."""
    if max_len <= 0 or len(tokens) < 2:
        return []
    seq = np.asarray(tokens, dtype=np.int64)
    for n in range(min(ngram_size, len(seq) - 1), min_ngram_size - 1, -1):
        windows = np.lib.stride_tricks.sliding_window_view(seq[:-1], n)  # every n-gram that has a successor
        hits = np.flatnonzero((windows == seq[-n:]).all(axis=1))
        if hits.size:
            start = int(hits[-1]) + n
            return seq[start:start + max_len].tolist()
    return []
