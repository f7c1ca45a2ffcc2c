"""The press protocol: a method scores the prompt, the engine keeps a budget and decodes on what was kept.

Two levels, as in the papers:
- ``kv`` presses (SnapKV, StreamingLLM, H2O, TOVA, SpecKV) prefill the whole prompt into the target's cache, score
  every (layer, KV head, position) and keep, per layer and KV head, ``budget`` positions: the top ``budget − window``
  of the prefix plus the last ``window`` prompt tokens (the observation window); the rest is evicted before decoding.
- ``tokens`` presses (SpecPC) score prompt *tokens* before the target sees them; the target prefills only the kept
  tokens, so prefill is cheaper too.

A press is a dataclass whose fields are its options, with the paper's defaults and one comment each, as in kvpress
(``SnapKVPress(window=32, kernel=7)``); its ``Options`` is the class itself, so ``core.options`` and the CLI read a
press's options as they read a drafter's. Bounds are checked in ``__post_init__`` (``DraftScopeError``).
A new kv method is usually a ``ScorerPress``: say what it captures (``queries``, ``column_sums``) and write ``score``;
a new token method is a ``TokenPress`` with ``select``. Then one registry line in ``core/kv/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F

from core.errors import DraftScopeError
from core.options import Range
from core.runtime.models import LoadedModel, has_sliding_layers


@dataclass
class PressContext:
    """What a press may use: the target and its prompt, the budget, and (draft-guided presses) a drafter."""

    target: LoadedModel
    prompt_ids: list[int]
    prompt_text: str  # the prompt as text (cross-tokenizer drafters re-tokenize it)
    budget: int  # positions kept per layer and KV head (tokens level: prompt tokens kept)
    max_new_tokens: int
    drafter: LoadedModel | None = None
    info: dict = field(default_factory=dict)  # what the press reports back (draft_ms, lookahead text, notes)


@dataclass
class Prefilled:
    """A kv press's prefill: the target's cache over exactly the prompt, the logits after it, the scores."""

    cache: object  # DynamicCache holding the n prompt positions
    first_logits: torch.Tensor  # (V,) next-token logits after the prompt
    scores_LHn: torch.Tensor | None  # (layers, KV heads, n) float32 on the CPU; None = keep everything


def check_range(name: str, value, lo: int, hi: int) -> None:
    """A press option's bounds: ``DraftScopeError`` unless lo ≤ value ≤ hi."""
    if not lo <= value <= hi:
        raise DraftScopeError(f"{name} must be in {lo}..{hi}, got {value}")


class Press:
    """What every press has: its registry ``name``, its ``level``, and ``Options``: the press class itself."""

    name = "base"
    level = "kv"
    draft_guided = False  # needs a drafter (``PressContext.drafter``)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.Options = cls  # the press is its own options dataclass (``core.options.option_fields(cls.Options)``)


@dataclass
class KVPress(Press):
    """A press over the target's cache: ``prefill`` gives the cache over the prompt and per-head scores; the runner
    keeps the last ``window`` positions and the best-scored earlier ones up to the budget (``select_kv``)."""

    level = "kv"

    window: Annotated[int, Range(1, 512, 1)] = 32  # the last prompt positions always kept (at most half the budget)

    def __post_init__(self):
        check_range("window", self.window, 1, 512)

    def prefill(self, ctx: PressContext) -> Prefilled:
        raise NotImplementedError


@dataclass
class ScorerPress(KVPress):
    """A kv press that only scores (kvpress's ``ScorerPress``). This base prefills the prompt and the ``lookahead``
    tokens, if any, capturing the attention of the last ``queries`` prompt queries and of every lookahead query (and,
    with ``column_sums``, every query's attention summed per key), drops the lookahead from the cache again and wraps
    ``score``'s (layers, KV heads, n) in a ``Prefilled``."""

    queries = 0  # how many of the prompt's last queries have their attention captured (0: none)
    column_sums = False  # capture every query's attention summed per key too (H2O)

    def lookahead(self, ctx: PressContext) -> list[int]:
        """Target tokens appended to the prompt whose queries vote too, then dropped (SpecKV's drafted answer)."""
        return []

    def score(self, ctx: PressContext, captured) -> torch.Tensor:
        """(layers, KV heads, n) importance of the n prompt positions from ``captured`` (a ``Captured``; None when
        nothing was asked for): ``window_probs[layer]`` (Hq, queries + lookahead, m), ``column_sums[layer]`` (Hq, m),
        m ≥ n keys."""
        raise NotImplementedError

    def prefill(self, ctx: PressContext) -> Prefilled:
        extra = self.lookahead(ctx)
        cache, logits, captured = prefill(ctx.target, ctx.prompt_ids + extra, window=self.queries + len(extra),
                                          column_sums=self.column_sums, logits_to_keep=len(extra) + 1)
        if extra:
            cache.crop(-len(extra))  # the lookahead only votes; decoding starts right after the prompt
        return Prefilled(cache, logits[0], self.score(ctx, captured))


@dataclass
class TokenPress(Press):
    """A press over prompt tokens: ``select`` says which tokens the target prefills at all."""

    level = "tokens"

    def select(self, ctx: PressContext) -> tuple[list[int], torch.Tensor]:
        """(kept prompt positions in order, per-token scores (n,) float32)."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------- helpers
def group_max(scores_LHqn: torch.Tensor, n_kv_heads: int) -> torch.Tensor:
    """(L, Hq, n) → (L, Hkv, n): the max over each KV head's group of query heads (GQA)."""
    L, hq, n = scores_LHqn.shape
    return scores_LHqn.view(L, n_kv_heads, hq // n_kv_heads, n).amax(dim=2)


def max_pool(scores: torch.Tensor, kernel: int) -> torch.Tensor:
    """1-D max-pool over the last dimension, stride 1, same length (kernel rounded up to odd)."""
    if kernel <= 1:
        return scores
    kernel += 1 - kernel % 2
    shape = scores.shape
    pooled = F.max_pool1d(scores.reshape(-1, 1, shape[-1]), kernel, stride=1, padding=kernel // 2)
    return pooled.reshape(shape)


def kept_window(window: int, budget: int) -> int:
    """The observation window kept at a budget: at most half of it (so small budgets still keep scored positions)."""
    return min(window, max(1, budget // 2))


def select_kv(scores_LHn: torch.Tensor, budget: int, window: int) -> torch.Tensor:
    """Per (layer, KV head): the last ``window`` positions (at most half the budget) plus the best-scored earlier ones
    up to ``budget``, sorted. Returns (L, Hkv, budget) long; with budget ≥ n every position."""
    L, H, n = scores_LHn.shape
    if budget >= n:
        return torch.arange(n).expand(L, H, n).clone()
    window = kept_window(window, budget)
    prefix = n - window
    top = scores_LHn[..., :prefix].topk(budget - window, dim=-1).indices
    recent = torch.arange(prefix, n).expand(L, H, window)
    return torch.cat([top, recent], dim=-1).sort(dim=-1).values


def select_tokens(scores_n: torch.Tensor, budget: int, window: int) -> list[int]:
    """The last ``window`` tokens plus the ``budget − window`` best-scored earlier ones, in prompt order."""
    n = scores_n.shape[0]
    if budget >= n:
        return list(range(n))
    window = kept_window(window, budget)
    prefix = n - window
    top = scores_n[:prefix].topk(budget - window).indices.tolist()
    return sorted(top) + list(range(prefix, n))


def check_kv_target(target: LoadedModel) -> None:
    if has_sliding_layers(target):
        raise DraftScopeError(f"KV eviction on '{target.name}' is not supported: its sliding-window layers keep their "
                              "own recent window; use a token-level method (specpc) with this target")


@torch.inference_mode()
def prefill(model: LoadedModel, ids: list[int], window: int = 0, column_sums: bool = False, logits_to_keep: int = 1):
    """Prefill ``ids`` into a fresh cache: (cache, logits (logits_to_keep, V) float32, Captured or None). With
    ``window`` the attention of the last ``window`` queries per layer is captured (``core.attention.capture``)."""
    from transformers import DynamicCache

    from core.attention.capture import capture_attention

    cache = DynamicCache(config=model.model.config)
    x = torch.tensor([ids], dtype=torch.long, device=model.device)
    if not window and not column_sums:
        out = model.model(input_ids=x, past_key_values=cache, use_cache=True, logits_to_keep=logits_to_keep)
        return cache, out.logits[0].float(), None
    with capture_attention(model.model, window=max(1, window), column_sums=column_sums) as captured:
        out = model.model(input_ids=x, past_key_values=cache, use_cache=True, logits_to_keep=logits_to_keep)
    return cache, out.logits[0].float(), captured


def stacked(per_layer: dict[int, torch.Tensor]) -> torch.Tensor:
    """{layer: tensor} → one tensor with layers first, in layer order."""
    return torch.stack([per_layer[k] for k in sorted(per_layer)])
