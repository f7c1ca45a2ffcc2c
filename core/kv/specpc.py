"""SpecPC (Galim et al., 2025): prompt compression guided by the drafter's own attention.

The drafter prefills the prompt and writes a lookahead answer; the attention of its last ``window`` prompt queries
and of every lookahead query, weighted by linspace(0, 1) over those queries (later ones count more), is maxed over
heads, queries and the layers from the 8th on (a quarter of the depth for shallower drafters) into one score per
prompt token; a 1-D max-pool (``kernel``) spreads each strong token to its neighbours; the top ``budget − window``
tokens and the last ``window`` are kept in order, and the target prefills only those. A drafter with another
tokenizer scores its own tokens; the scores move to the target's tokens through character offsets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import torch

from core.kv.base import PressContext, TokenPress, check_range, max_pool, prefill, select_tokens
from core.kv.offsets import char_spans, transfer_scores
from core.kv.speckv import draft_lookahead
from core.options import Flag, Range

Window = Annotated[int, Range(1, 512, 1), Flag("--specpc-window")]
Kernel = Annotated[int, Range(1, 129, 1), Flag("--specpc-kernel")]


def first_scored_layer(n_layers: int) -> int:
    return min(8, n_layers // 4)


@torch.inference_mode()
def drafter_scores(ctx: PressContext, ids: list[int], lookahead: list[int], window: int) -> torch.Tensor:
    """Per drafter prompt token: max over layers ≥ 8, heads and queries of weight × attention, (n,) float32. The
    queries are the last ``window`` prompt positions and every lookahead step (its tokens but the last fed, as when
    drafting it); one causal forward over prompt + lookahead gives them all at once."""
    drafter = ctx.drafter
    n = len(ids)
    fed = lookahead[:-1]
    _, _, captured = prefill(drafter, ids + fed, window=min(window, n) + len(fed))
    start = first_scored_layer(drafter.n_layers)
    score = torch.zeros(n)
    for layer in sorted(captured.window_probs):
        if layer < start:
            continue
        probs_Hqn = captured.window_probs[layer][..., :n]  # (Hq, queries, n)
        weights = torch.linspace(0, 1, probs_Hqn.shape[1] + 1)[1:]  # later queries weigh more; none weighs 0
        score = torch.maximum(score, (probs_Hqn * weights[None, :, None]).amax(dim=(0, 1)))
    return score


@dataclass
class SpecPCPress(TokenPress):
    name = "specpc"
    draft_guided = True

    window: Window = 64  # the drafter's last prompt queries that vote; the last tokens kept (≤ half the budget)
    kernel: Kernel = 32  # max-pool width over token scores (rounded up to odd; 1: none)

    def __post_init__(self):
        check_range("window", self.window, 1, 512)
        check_range("kernel", self.kernel, 1, 129)

    def select(self, ctx: PressContext) -> tuple[list[int], torch.Tensor]:
        t0 = time.perf_counter()
        drafter, target = ctx.drafter, ctx.target
        lookahead = draft_lookahead(ctx)  # as target ids; re-encode for the drafter when tokenizers differ
        same = drafter.vocab_fingerprint() == target.vocab_fingerprint()
        if same:
            pooled = max_pool(drafter_scores(ctx, ctx.prompt_ids, lookahead, self.window), self.kernel)
        else:
            d_ids = drafter.encode(ctx.prompt_text)
            d_look = list(drafter.tokenizer(ctx.info.get("lookahead_text", ""), add_special_tokens=False)["input_ids"])
            d_scores = drafter_scores(ctx, d_ids, d_look, self.window)
            d_spans = char_spans(drafter.tokenizer, ctx.prompt_text)
            t_spans = char_spans(target.tokenizer, ctx.prompt_text)
            d_scores = d_scores[len(d_scores) - len(d_spans):]  # the drafter's own special tokens lead: drop them
            pooled = max_pool(transfer_scores(d_spans, d_scores, t_spans), self.kernel)
            n = len(ctx.prompt_ids)
            front = torch.full((max(0, n - len(pooled)),), float(pooled.max()) + 1.0 if len(pooled) else 1.0)
            pooled = torch.cat([front, pooled])[-n:]  # the target's special tokens in front (BOS, a sink): kept
        ctx.info["draft_ms"] = (time.perf_counter() - t0) * 1e3
        return select_tokens(pooled, ctx.budget, self.window), pooled
