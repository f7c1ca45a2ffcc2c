"""StreamingLLM (Xiao et al., 2024): keep the first 4 positions (attention sinks) and the most recent ones."""

from __future__ import annotations

import torch

from core.kv.base import KVPress, Prefilled, PressContext, prefill

SINKS = 4


class StreamingLLMPress(KVPress):
    name = "streamingllm"

    def prefill(self, ctx: PressContext) -> Prefilled:
        cache, logits, _ = prefill(ctx.target, ctx.prompt_ids)
        n = len(ctx.prompt_ids)
        scores = torch.arange(n, dtype=torch.float32) / max(n, 1)  # recency
        scores[:SINKS] = 2.0  # sinks outrank everything
        L, H = ctx.target.n_layers, ctx.target.config.num_key_value_heads
        return Prefilled(cache, logits[-1], scores.expand(L, H, n).clone())
