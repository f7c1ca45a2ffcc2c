"""Kangaroo's adapter: one attention block (input norm, self-attention, residual; no MLP) and a final norm, mapping
the target's layer-ℓ hidden states to states its frozen LM head reads. Saved as a ``core.runtime.checkpoint`` file.

The attention and the norms are of the target's own kinds (Llama's, or Gemma 3's with query/key norms and its own
scaling), so an adapter initialised from layer ℓ starts as that layer's attention. The adapter always attends to
every earlier position (full attention, the target's global rotary embedding), also on targets with sliding-window
layers."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRMSNorm

from core.errors import DraftScopeError
from core.runtime import checkpoint
from core.runtime.devices import input_device, plain_deepcopy
from core.runtime.layers import FULL, layer_cache_len
from core.runtime.masks import causal_mask

KIND, TRAIN_COMMAND = "kangaroo-adapter", "python -m core.train.kangaroo"  # checkpoint kind, what trains one


def block_classes(model: nn.Module) -> tuple[type, type]:
    """(attention class, norm class) of the target's decoder layers."""
    layer = model.model.layers[0]
    return type(layer.self_attn), type(layer.input_layernorm)


class KangarooAdapter(nn.Module):
    def __init__(self, config, attention: type = LlamaAttention, norm: type = LlamaRMSNorm):
        super().__init__()
        cfg = copy.deepcopy(config)
        cfg.num_hidden_layers = 1
        if getattr(cfg, "layer_types", None) is not None:
            cfg.layer_types = [FULL]
        self.config = cfg
        self.input_norm = norm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.attn = attention(cfg, layer_idx=0)
        self.final_norm = norm(cfg.hidden_size, eps=cfg.rms_norm_eps)

    @classmethod
    def from_target(cls, model: nn.Module, exit_layer: int) -> "KangarooAdapter":
        """Initialised from the target: attention and input norm of layer ℓ, the target's final norm."""
        adapter = cls(model.config, *block_classes(model)).to(next(model.parameters()).dtype)
        layer = plain_deepcopy(model.model.layers[exit_layer])  # its weights, also where a device map offloads them
        adapter.attn.load_state_dict(layer.self_attn.state_dict())
        adapter.input_norm.load_state_dict(layer.input_layernorm.state_dict())
        adapter.final_norm.load_state_dict(plain_deepcopy(model.model.norm).state_dict())
        adapter.exit_layer = exit_layer
        return adapter

    def forward(self, hidden: torch.Tensor, rotary, cache=None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """hidden (b, n, d) layer-ℓ states → (b, n, d) states for the LM head. ``rotary``: the target's full-attention
        rotary embedding at the tokens' positions. With ``cache`` the new tokens are appended to it (incremental
        drafting); without, ``mask`` is the full causal mask (training)."""
        if mask is None:
            mask = causal_mask(hidden.shape[1], layer_cache_len(cache, 0), hidden.dtype, hidden.device)
        out, _ = self.attn(self.input_norm(hidden), position_embeddings=rotary, attention_mask=mask,
                           past_key_values=cache)
        return self.final_norm(hidden + out)

    def save(self, path: str | Path, meta: dict) -> None:
        checkpoint.save(path, self, meta, KIND)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module) -> tuple["KangarooAdapter", dict]:
        path = Path(path)
        state, meta = checkpoint.load(path, KIND, TRAIN_COMMAND)
        adapter = cls(model.config, *block_classes(model))
        try:
            adapter.load_state_dict(state)
        except RuntimeError as exc:
            raise DraftScopeError(f"the adapter {path.name} does not fit '{meta.get('target', '?')}' shapes: "
                                  f"{str(exc).splitlines()[0]}") from None
        dtype = next(model.parameters()).dtype  # the device: the input embedding's (the drafter moves it to layer ℓ's)
        return adapter.to(device=input_device(model), dtype=dtype).eval(), meta
