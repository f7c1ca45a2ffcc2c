"""H2O (Zhang et al., 2023), applied once after prefill as in kvpress: "heavy hitters" are the positions with the
largest attention accumulated over every prompt query (GQA group max); kept with the recent window."""

from __future__ import annotations

from core.kv.base import KVPress, Prefilled, PressContext, group_max, prefill, stacked


class H2OPress(KVPress):
    name = "h2o"

    def prefill(self, ctx: PressContext) -> Prefilled:
        cache, logits, captured = prefill(ctx.target, ctx.prompt_ids, window=1, column_sums=True)
        n = len(ctx.prompt_ids)
        scores = group_max(stacked(captured.column_sums)[..., :n], ctx.target.config.num_key_value_heads)
        return Prefilled(cache, logits[-1], scores)
