"""StreamingLLM (Xiao et al., 2024): keep the first ``sinks`` positions (attention sinks) and the most recent ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from core.kv.base import PressContext, ScorerPress, check_range
from core.options import Range


@dataclass
class StreamingLLMPress(ScorerPress):
    name = "streamingllm"

    sinks: Annotated[int, Range(0, 64, 1)] = 4  # the first prompt positions, always kept (attention sinks)

    def __post_init__(self):
        super().__post_init__()
        check_range("sinks", self.sinks, 0, 64)

    def score(self, ctx: PressContext, captured) -> torch.Tensor:
        """Recency, with the sinks above everything: (L, Hkv, n), the same for every head."""
        n = len(ctx.prompt_ids)
        scores = torch.arange(n, dtype=torch.float32) / max(n, 1)
        scores[:self.sinks] = 2.0
        L, H = ctx.target.n_layers, ctx.target.config.num_key_value_heads
        return scores.expand(L, H, n).clone()
