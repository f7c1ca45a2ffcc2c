"""Running a llama-family decoder a slice of layers at a time, on one shared KV cache.

Self-drafters that reuse the target's own shallow layers (Kangaroo) run layers [0, ℓ) while drafting and layers
[ℓ, L) at verification, on the same ``DynamicCache``: the slices may hold different numbers of tokens in between,
so every call builds its own causal mask from the cache length of the first layer it runs.
Supported: models whose inner module has ``embed_tokens``, ``layers``, ``norm`` and ``rotary_emb`` with all layers
full attention (Llama, SmolLM2, Qwen2-style); other models raise DraftScopeError.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from core.errors import DraftScopeError
from core.runtime.masks import causal_mask
from core.runtime.models import has_sliding_layers

SHALLOW_EXIT = 0.2  # a fifth of the depth: early exit's default ℓ (6 of SmolLM2's 30, as HF's assistant_early_exit)
DEEP_EXIT = 0.8  # four fifths: an untrained exit deep enough to be accepted sometimes (trees, EasySpec)


def exit_layer_at(n_layers: int, fraction: float) -> int:
    """The exit layer at ``fraction`` of the depth, rounded down and kept in 1..n_layers − 1 (the one rule every
    "a fifth" / "four fifths of the depth" default uses: 6 and 24 of SmolLM2's 30 layers)."""
    return max(1, min(n_layers - 1, math.floor(n_layers * fraction + 1e-9)))


def check_layer_slicing(model: nn.Module) -> None:
    inner = getattr(model, "model", None)
    if inner is None or not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        raise DraftScopeError(f"{type(model).__name__} is not a llama-style decoder; layer slicing needs one")
    if has_sliding_layers(model):
        raise DraftScopeError("layer slicing is not available for models with sliding-window layers (Gemma 3)")


def layer_cache_len(cache, layer: int) -> int:
    if cache is None or len(cache.layers) <= layer or not cache.layers[layer].is_initialized:
        return 0
    return int(cache.layers[layer].keys.shape[-2])


def embed(model: nn.Module, ids: list[int]) -> torch.Tensor:
    device = next(model.parameters()).device
    return model.model.embed_tokens(torch.tensor([ids], dtype=torch.long, device=device))


def run_layers(model: nn.Module, hidden: torch.Tensor, start: int, stop: int, cache, position0: int,
               layers=None, mask: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Layers [start, stop) on ``hidden`` (1, n, d) at positions position0.., appending to ``cache``'s layers
    (``cache`` None: no cache, a plain causal pass). ``layers`` replaces the model's own layer list (tuned copies of
    them, as S2D's exits use); the model still gives the rotary embedding. ``mask`` (an additive (1, 1, n, cache + n)
    mask) and ``positions`` (1, n) replace the causal mask and the consecutive positions (Falcon's block mask)."""
    inner = model.model
    n = hidden.shape[1]
    if positions is None:
        positions = torch.arange(position0, position0 + n, device=hidden.device)[None]
    if mask is None:
        mask = causal_mask(n, layer_cache_len(cache, start), hidden.dtype, hidden.device)
    rotary = inner.rotary_emb(hidden, position_ids=positions)
    for layer in (inner.layers if layers is None else layers)[start:stop]:
        hidden = layer(hidden, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                       position_embeddings=rotary)
    return hidden


def head(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Final norm and LM head: (1, n, d) → (n, V) float32 logits."""
    return model.lm_head(model.model.norm(hidden))[0].float()


@contextmanager
def capture_final_hidden(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the output of the model's final norm (its last hidden state, (1, n, d): what the LM head reads) during
    the block: the yielded list gets one tensor per call of the norm. Draft heads read it from verification."""
    seen: list[torch.Tensor] = []
    handle = model.model.norm.register_forward_hook(lambda _module, _args, out: seen.append(out.detach()))
    try:
        yield seen
    finally:
        handle.remove()
