"""SnapKV (Li et al., 2024): the prompt's last ``window`` queries vote for the prefix positions each KV head keeps.

Score of position j in (layer, KV head) = mean over the window's queries of their softmax attention to j, max over
the head's group of query heads (GQA), then a 1-D max-pool (kernel 7) so neighbours of a strong position survive
together. Kept: the top ``budget − window`` prefix positions plus the window itself.
"""

from __future__ import annotations

import torch

from core.kv.base import KVPress, Prefilled, PressContext, group_max, max_pool, prefill, stacked


class SnapKVPress(KVPress):
    name = "snapkv"
    pool = True

    def prefill(self, ctx: PressContext) -> Prefilled:
        cache, logits, captured = prefill(ctx.target, ctx.prompt_ids, window=ctx.window)
        return Prefilled(cache, logits[-1], self.scores(ctx, captured.window_probs, len(ctx.prompt_ids)))

    def scores(self, ctx: PressContext, window_probs: dict, n: int) -> torch.Tensor:
        """(L, Hkv, n): mean attention of the captured queries to the n prompt positions, group max, max-pool."""
        probs_LHqn = stacked(window_probs)[..., :n].mean(dim=2)
        scores = group_max(probs_LHqn, ctx.target.config.num_key_value_heads)
        return max_pool(scores, ctx.kernel) if self.pool else scores
