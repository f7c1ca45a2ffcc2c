"""TOVA (Oren et al., 2024), applied once after prefill: the last prompt token's attention (GQA group max) ranks the
positions; no pooling."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.kv.base import PressContext, ScorerPress, group_max, stacked


@dataclass
class TOVAPress(ScorerPress):
    name = "tova"
    queries = 1

    def score(self, ctx: PressContext, captured) -> torch.Tensor:
        probs_LHqn = stacked(captured.window_probs)[:, :, -1, :len(ctx.prompt_ids)]
        return group_max(probs_LHqn, ctx.target.config.num_key_value_heads)
