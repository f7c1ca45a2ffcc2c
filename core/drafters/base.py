"""The drafter protocol: propose up to γ tokens (with their q when the drafter has one), then learn the outcome."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from core.sampling import SamplingConfig, display_probs, sample, warp


@dataclass
class Draft:
    tokens: list[int]
    q_nV: torch.Tensor | None = None  # (γ, V) distributions the tokens were drawn from; None = one-hot (no model)
    q_show_nV: torch.Tensor | None = None  # (γ, V) what the records show as q (model softmax when greedy)
    info: dict = field(default_factory=dict)  # drafter-specific facts for the record (JSON-friendly)


@dataclass
class DraftContext:
    tokens: list[int]  # the committed sequence, prompt included
    gamma: int  # propose at most this many tokens
    sampling: SamplingConfig
    generator: torch.Generator
    target_kv: object | None = None  # the target's CachedLM, for drafters that share its cache (Kangaroo)

    def pick(self, logits_V: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Choose the next draft token from drafter logits (V,): (token, q used for the choice, q to show)."""
        logits_1V = logits_V.detach().float().cpu().unsqueeze(0)
        q_1V = warp(logits_1V, self.sampling)
        token = int(q_1V[0].argmax()) if self.sampling.greedy else sample(q_1V[0], self.generator)
        return token, q_1V[0], display_probs(logits_1V, q_1V, self.sampling)[0]


class Drafter:
    """Base class. Subclasses set ``name`` and implement ``propose``; model drafters also ``prefill``/``observe``."""

    name = "base"

    def prefill(self, tokens: list[int]) -> None:
        """Called once before the first round with the prompt (lets model drafters fill their cache)."""

    def propose(self, ctx: DraftContext) -> Draft:
        raise NotImplementedError

    def verify_forward(self, target_kv, tokens: list[int], draft: list[int]) -> torch.Tensor:
        """The target's verification forward: bring its cache up to ``tokens`` and feed the drafts; return the
        logits (len(draft) + 1, V) at every drafted position and the bonus position. Drafters that share the
        target's cache (Kangaroo) override it to skip work drafting already did."""
        feed = target_kv.sync(tokens) + draft
        return target_kv.forward(feed, logits_to_keep=len(draft) + 1)

    def observe(self, tokens: list[int], n_accepted: int) -> None:
        """Called after each verification with the new committed sequence (roll back caches, adapt)."""

    # Tree drafting (core.tree_draft), for drafters that give probabilities: ``tree_begin`` returns the logits (V,)
    # after the committed tokens; ``tree_expand`` feeds the given nodes of the tree grown so far (their ancestors
    # were fed before) and returns their logits (n, V); ``tree_end`` keeps only the accepted path.
    supports_tree = False

    def tree_begin(self, ctx: DraftContext) -> torch.Tensor:
        raise NotImplementedError

    def tree_expand(self, tree, nodes: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def tree_end(self, tokens: list[int], path: list[int]) -> None:
        """Called after a tree round with the new committed sequence and the accepted path (growth indices)."""

    @property
    def cache_len(self) -> int | None:
        return None

    @property
    def cost(self) -> float | None:
        """Drafter cost per token relative to the target's (for MBSU); None when negligible / model-free."""
        return None


def stack_or_none(rows: list[torch.Tensor]) -> torch.Tensor | None:
    return torch.stack(rows) if rows else None
