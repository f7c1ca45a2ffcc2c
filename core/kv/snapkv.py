"""SnapKV (Li et al., 2024): the prompt's last ``window`` queries vote for the prefix positions each KV head keeps.

Score of position j in (layer, KV head) = mean over the window's queries of their softmax attention to j, max over
the head's group of query heads (GQA), then a 1-D max-pool (``kernel``) so neighbours of a strong position survive
together. Kept: the top ``budget − window`` prefix positions plus the window itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from core.kv.base import PressContext, ScorerPress, check_range, group_max, max_pool, stacked
from core.options import Range


@dataclass
class SnapKVPress(ScorerPress):
    name = "snapkv"

    window: Annotated[int, Range(1, 512, 1)] = 32  # the last prompt queries, which vote; kept too (≤ half the budget)
    kernel: Annotated[int, Range(1, 129, 2)] = 7  # max-pool width over positions (rounded up to odd; 1: none)

    def __post_init__(self):
        super().__post_init__()
        check_range("kernel", self.kernel, 1, 129)

    @property
    def queries(self) -> int:
        return self.window

    def score(self, ctx: PressContext, captured) -> torch.Tensor:
        """(L, Hkv, n): mean attention of the captured queries to the n prompt positions, group max, max-pool."""
        probs_LHqn = stacked(captured.window_probs)[..., :len(ctx.prompt_ids)].mean(dim=2)
        return max_pool(group_max(probs_LHqn, ctx.target.config.num_key_value_heads), self.kernel)
