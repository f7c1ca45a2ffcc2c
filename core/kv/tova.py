"""TOVA (Oren et al., 2024), applied once after prefill: the last prompt token's attention (GQA group max) ranks the
positions; no pooling."""

from __future__ import annotations

from core.kv.base import KVPress, Prefilled, PressContext, group_max, prefill, stacked


class TOVAPress(KVPress):
    name = "tova"

    def prefill(self, ctx: PressContext) -> Prefilled:
        cache, logits, captured = prefill(ctx.target, ctx.prompt_ids, window=1)
        n = len(ctx.prompt_ids)
        scores = group_max(stacked(captured.window_probs)[:, :, -1, :n], ctx.target.config.num_key_value_heads)
        return Prefilled(cache, logits[-1], scores)
