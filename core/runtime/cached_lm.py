"""A model together with its KV cache and the token ids that cache holds, with rollback to an absolute length."""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache

from core.runtime.devices import input_device
from core.runtime.models import has_sliding_layers


class CachedLM:
    """Incremental decoding state of one model.

    ``ids`` are the tokens whose keys/values are in ``cache``. ``forward`` appends tokens and returns their logits;
    ``rollback(n)`` keeps only the first ``n``. Sliding-window layers (Gemma 3) record their past so that a rollback
    after a multi-token forward is exact; every rollback then trims them back to the window. A cache that cannot be
    cropped (recurrent layers) is rebuilt from the kept tokens instead.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.device = input_device(model)  # the embedding's device, also when a device map spreads the layers
        self.cache: DynamicCache | None = None
        self.ids: list[int] = []

    @property
    def has_sliding_layers(self) -> bool:
        return has_sliding_layers(self.model)

    def reset(self) -> None:
        self.cache = DynamicCache(config=self.model.config)
        if self.has_sliding_layers:
            self.cache.activate_past_recording()
        self.ids = []

    def __len__(self) -> int:
        return len(self.ids)

    @torch.inference_mode()
    def forward(self, new_ids: list[int], logits_to_keep: int = 1) -> torch.Tensor:
        """Append ``new_ids``; return the logits (logits_to_keep, V) of the last positions, float32."""
        if self.cache is None:
            self.reset()
        input_ids = torch.tensor([new_ids], dtype=torch.long, device=self.device)
        out = self.model(input_ids=input_ids, past_key_values=self.cache, use_cache=True,
                         logits_to_keep=logits_to_keep)
        self.ids.extend(new_ids)
        return out.logits[0].float()

    def rollback(self, n: int) -> None:
        """Keep the first ``n`` cached tokens (``n`` ≤ len). Always called once per round: it also trims windows."""
        if self.cache is None or not self.ids:
            return
        remove = len(self.ids) - n
        if remove < 0:
            raise ValueError(f"cannot roll back to {n}: the cache holds {len(self.ids)} tokens")
        if not self.can_crop():  # e.g. recurrent layers: rebuild the cache from the kept tokens
            kept = self.ids[:n]
            self.reset()
            if kept:
                self.forward(kept)
            return
        if remove or self.has_sliding_layers:
            self.cache.crop(-remove)
        del self.ids[n:]

    def can_crop(self) -> bool:
        return bool(getattr(self.cache, "is_croppable", True))

    def sync(self, ids: list[int]) -> list[int]:
        """Roll back to the longest common prefix with ``ids`` that leaves at least one token to feed; return the
        tokens of ``ids`` that must still be fed to bring the cache up to ``ids``."""
        n = min(len(self.ids), len(ids) - 1)
        if self.ids[:n] != ids[:n]:
            n = next(i for i, (a, b) in enumerate(zip(self.ids, ids)) if a != b)
        self.rollback(n)
        return ids[n:]
