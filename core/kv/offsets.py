"""Moving per-token values between two tokenizers through character offsets (cross-tokenizer draft guidance)."""

from __future__ import annotations

import torch


def char_spans(tokenizer, text: str) -> list[tuple[int, int]]:
    """(start, end) character span of every token of ``text`` (no special tokens added)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [tuple(span) for span in enc["offset_mapping"]]


def transfer_scores(src_spans: list[tuple[int, int]], src_scores: torch.Tensor,
                    dst_spans: list[tuple[int, int]]) -> torch.Tensor:
    """Scores of the destination tokens: for each, the max over the source tokens whose spans overlap it (a
    destination token overlapping none, e.g. an empty span, takes the nearest source token before it)."""
    text_len = max([e for _, e in src_spans + dst_spans] + [0])
    per_char = torch.full((text_len + 1,), float("nan"))
    for (s, e), score in zip(src_spans, src_scores.tolist(), strict=False):
        for c in range(s, max(e, s + 1)):
            per_char[c] = score if torch.isnan(per_char[c]) else max(float(per_char[c]), score)
    filled, last = per_char.clone(), 0.0
    for c in range(len(filled)):  # characters no source token covers inherit the value before them
        if torch.isnan(filled[c]):
            filled[c] = last
        last = float(filled[c])
    out = torch.zeros(len(dst_spans))
    for i, (s, e) in enumerate(dst_spans):
        out[i] = filled[s:max(e, s + 1)].max()
    return out
