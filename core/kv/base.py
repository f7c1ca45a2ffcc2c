"""The press protocol: a method scores the prompt, the engine keeps a budget and decodes on what was kept.

Two levels, as in the papers:
- ``kv`` presses (SnapKV, StreamingLLM, H2O, TOVA, SpecKV) prefill the whole prompt into the target's cache, score
  every (layer, KV head, position) and keep, per layer and KV head, ``budget`` positions: the top ``budget − window``
  of the prefix plus the last ``window`` prompt tokens (the observation window); the rest is evicted before decoding.
- ``tokens`` presses (SpecPC) score prompt *tokens* before the target sees them; the target prefills only the kept
  tokens, so prefill is cheaper too.
A new method is one file with a subclass of ``KVPress`` (``score``) or ``TokenPress`` (``select``) plus one registry
line in ``core/presses/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from core.errors import DraftScopeError
from core.runtime.models import LoadedModel

DEFAULT_WINDOW, DEFAULT_KERNEL = 32, 7  # SpecKV's defaults (SnapKV's own: window 32–64, kernel 5–7)


@dataclass
class PressContext:
    """What a press may use: the target and its prompt, the budget, and (draft-guided presses) a drafter."""

    target: LoadedModel
    prompt_ids: list[int]
    prompt_text: str  # the prompt as text (cross-tokenizer drafters re-tokenize it)
    budget: int  # positions kept per layer and KV head (tokens level: prompt tokens kept)
    max_new_tokens: int
    window: int = DEFAULT_WINDOW
    kernel: int = DEFAULT_KERNEL
    drafter: LoadedModel | None = None
    info: dict = field(default_factory=dict)  # what the press reports back (draft_ms, lookahead text, notes)


@dataclass
class Prefilled:
    """A kv press's prefill: the target's cache over exactly the prompt, the logits after it, the scores."""

    cache: object  # DynamicCache holding the n prompt positions
    first_logits: torch.Tensor  # (V,) next-token logits after the prompt
    scores_LHn: torch.Tensor | None  # (layers, KV heads, n) float32 on the CPU; None = keep everything


class KVPress:
    name = "base"
    level = "kv"

    def prefill(self, ctx: PressContext) -> Prefilled:
        raise NotImplementedError


class TokenPress:
    name = "base"
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


def compress_cache(cache, keep_LHk: torch.Tensor) -> None:
    """Keep, in every layer of ``cache`` and per KV head, only the positions ``keep_LHk[layer, head]``."""
    for layer, keep_Hk in zip(cache.layers, keep_LHk):
        idx = keep_Hk.to(layer.keys.device)[None, :, :, None]  # (1, H, k, 1)
        layer.keys = layer.keys.gather(2, idx.expand(-1, -1, -1, layer.keys.shape[-1])).contiguous()
        layer.values = layer.values.gather(2, idx.expand(-1, -1, -1, layer.values.shape[-1])).contiguous()


def cache_bytes(cache) -> int:
    return sum(layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
               for layer in cache.layers if getattr(layer, "keys", None) is not None)


def check_kv_target(target: LoadedModel) -> None:
    if "sliding_attention" in (getattr(target.config, "layer_types", None) or []):
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
