"""Running a llama-family decoder a slice of layers at a time, on one shared KV cache.

Self-drafters that reuse the target's own shallow layers (Kangaroo) run layers [0, ℓ) while drafting and layers
[ℓ, L) at verification, on the same ``DynamicCache``: the slices may hold different numbers of tokens in between,
so every call builds its own causal mask from the cache length of the first layer it runs.
Supported: models whose inner module has ``embed_tokens``, ``layers``, ``norm`` and ``rotary_emb`` with all layers
full attention (Llama, SmolLM2, Qwen2-style); other models raise DraftScopeError.
"""

from __future__ import annotations

import torch
from torch import nn

from core.errors import DraftScopeError


def check_layer_slicing(model: nn.Module) -> None:
    inner = getattr(model, "model", None)
    if inner is None or not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        raise DraftScopeError(f"{type(model).__name__} is not a llama-style decoder; layer slicing needs one")
    if "sliding_attention" in (getattr(model.config, "layer_types", None) or []):
        raise DraftScopeError("layer slicing is not available for models with sliding-window layers (Gemma 3)")


def causal_mask(n_new: int, past: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(1, 1, n_new, past + n_new) additive mask: every new token sees the cache and the new tokens up to itself."""
    allowed = torch.ones(n_new, past + n_new, dtype=torch.bool, device=device).tril(diagonal=past)
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)[
        None, None]


def layer_cache_len(cache, layer: int) -> int:
    if cache is None or len(cache.layers) <= layer or not cache.layers[layer].is_initialized:
        return 0
    return int(cache.layers[layer].keys.shape[-2])


def embed(model: nn.Module, ids: list[int]) -> torch.Tensor:
    device = next(model.parameters()).device
    return model.model.embed_tokens(torch.tensor([ids], dtype=torch.long, device=device))


def run_layers(model: nn.Module, hidden: torch.Tensor, start: int, stop: int, cache, position0: int,
               layers=None) -> torch.Tensor:
    """Layers [start, stop) on ``hidden`` (1, n, d) at positions position0.., appending to ``cache``'s layers
    (``cache`` None: no cache, a plain causal pass). ``layers`` replaces the model's own layer list (tuned copies of
    them, as S2D's exits use); the model still gives the rotary embedding."""
    inner = model.model
    n = hidden.shape[1]
    positions = torch.arange(position0, position0 + n, device=hidden.device)[None]
    mask = causal_mask(n, layer_cache_len(cache, start), hidden.dtype, hidden.device)
    rotary = inner.rotary_emb(hidden, position_ids=positions)
    for layer in (inner.layers if layers is None else layers)[start:stop]:
        hidden = layer(hidden, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                       position_embeddings=rotary)
    return hidden


def head(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Final norm and LM head: (1, n, d) → (n, V) float32 logits."""
    return model.lm_head(model.model.norm(hidden))[0].float()
