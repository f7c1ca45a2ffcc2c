"""H2O (Zhang et al., 2023), applied once after prefill as in kvpress: "heavy hitters" are the positions with the
largest attention accumulated over every prompt query (GQA group max); kept with the recent window."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.kv.base import PressContext, ScorerPress, group_max, stacked


@dataclass
class H2OPress(ScorerPress):
    name = "h2o"
    column_sums = True

    def score(self, ctx: PressContext, captured) -> torch.Tensor:
        sums_LHqn = stacked(captured.column_sums)[..., :len(ctx.prompt_ids)]
        return group_max(sums_LHqn, ctx.target.config.num_key_value_heads)
