"""S2D's nested exits: the first F layers of a base model, tuned once for every exit, a small head per exit
(translator + norm) and the base model's frozen LM head.

Sorted training (S2D's SoFT) fine-tunes the shared layers so that every exit e_1 < … < e_K = F is a usable model.
What we ship stays small: low-rank (LoRA) factors on every linear map of those F layers, shared by all exits (exit k
runs layers [0, e_k) of the same tuned stack), and a small head per exit. Untrained exits (LoRA B = 0, norms copied
from the base model's final norm, translators zero) are plain early exits at e_1..e_K. Each exit also has a
residual d × d translator before its norm (0.33 M parameters for SmolLM2), which turns the intermediate stream into
what the head reads far faster than the shared factors alone. Saved as a ``core.runtime.checkpoint`` file; at
load time the factors are merged into copies of the F layers, so drafting costs what the base layers cost.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import nn

from core.errors import DraftScopeError
from core.runtime import checkpoint
from core.runtime.devices import module_device, plain_deepcopy

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_RANK, DEFAULT_ALPHA = 8, 16
KIND, TRAIN_COMMAND = "sorted-exits", "python -m core.train.sorted"  # checkpoint kind, what trains one


def default_exit_layers(n_layers: int) -> list[int]:
    """Three exits over the first third of the depth, at half, three quarters and all of it, as S2D's 6/9/12 over
    Vicuna's first 12 layers: 5, 7, 10 of SmolLM2's 30; 1, 2, 3 of a 4-layer test model."""
    depth = max(3, n_layers // 3)
    if depth >= n_layers:
        raise DraftScopeError(f"a {n_layers}-layer model is too shallow for nested exits")
    return sorted({max(1, depth // 2), max(2, (3 * depth) // 4), depth})


class LoRALinear(nn.Module):
    """y = W x + (α / r) · B A x with W frozen; B starts at zero, so the untrained map is W."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_features, dtype=base.weight.dtype,
                                               device=base.weight.device) / math.sqrt(base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype,
                                               device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

    def merged(self) -> nn.Linear:
        out = copy.deepcopy(self.base)
        with torch.no_grad():
            out.weight += (self.lora_b @ self.lora_a * self.scale).to(out.weight.dtype)
        return out


class ExitHead(nn.Module):
    """What exit k adds before the shared LM head: a residual linear map (a tuned-lens style translator from the
    layer-e_k stream to the last layer's; zero at first) and a final norm (the base model's at first)."""

    def __init__(self, norm: nn.Module, hidden_size: int):
        super().__init__()
        self.translate = nn.Linear(hidden_size, hidden_size, bias=False)
        nn.init.zeros_(self.translate.weight)
        self.norm = norm

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden + self.translate(hidden))


class SortedExits(nn.Module):
    """``layers``: tuned copies of the base model's first ``exit_layers[-1]`` layers; ``norms[k]``: exit k's
    translator and norm (``ExitHead``)."""

    def __init__(self, base_model: nn.Module, exit_layers: list[int], rank: int = DEFAULT_RANK,
                 alpha: float = DEFAULT_ALPHA):
        super().__init__()
        n_layers = base_model.config.num_hidden_layers
        if not exit_layers or list(exit_layers) != sorted(set(exit_layers)) or not 1 <= exit_layers[0] \
                or exit_layers[-1] >= n_layers:
            raise DraftScopeError(f"exit layers must be increasing and within 1..{n_layers - 1}, got {exit_layers}")
        self.exit_layers, self.rank, self.alpha = list(exit_layers), rank, alpha
        # tuned copies: each on its layer's (execution) device under a device map, without the original's hooks
        self.layers = nn.ModuleList(plain_deepcopy(layer) for layer in base_model.model.layers[: exit_layers[-1]])
        norm = plain_deepcopy(base_model.model.norm)
        hidden, dtype = base_model.config.hidden_size, next(base_model.parameters()).dtype
        self.norms = nn.ModuleList(ExitHead(copy.deepcopy(norm), hidden).to(module_device(self.layers[e - 1]), dtype)
                                   for e in exit_layers)  # beside the exit's last layer
        self.requires_grad_(False)
        for layer in self.layers:
            for parent in layer.modules():
                for name, child in list(parent.named_children()):
                    if name in LORA_TARGETS and isinstance(child, nn.Linear):
                        setattr(parent, name, LoRALinear(child, rank, alpha))
        for name, param in self.named_parameters():
            param.requires_grad_(name.startswith("norms.") or "lora_" in name)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith("norms.") or "lora_" in k}

    def merge(self) -> "SortedExits":
        """Fold every LoRA pair into its frozen weight (inference: no extra matmuls)."""
        for layer in self.layers:
            for parent in list(layer.modules()):
                for name, child in list(parent.named_children()):
                    if isinstance(child, LoRALinear):
                        setattr(parent, name, child.merged())
        self.requires_grad_(False)
        return self

    def save(self, path: str | Path, meta: dict) -> None:
        meta = {**meta, "exit_layers": self.exit_layers, "rank": self.rank, "alpha": self.alpha}
        checkpoint.save(path, self.trainable_state(), meta, KIND)

    @staticmethod
    def read_meta(path: str | Path) -> dict:
        return checkpoint.read_meta(path, KIND, TRAIN_COMMAND)

    @classmethod
    def load(cls, path: str | Path, base_model: nn.Module) -> tuple["SortedExits", dict]:
        """Build the exits on ``base_model`` from a saved file (merged, eval mode, the base model's dtype)."""
        state, meta = checkpoint.load(path, KIND, TRAIN_COMMAND)
        exits = cls(base_model, meta.get("exit_layers") or [], int(meta.get("rank", DEFAULT_RANK)),
                    float(meta.get("alpha", DEFAULT_ALPHA)))
        expected = exits.trainable_state()
        if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in state):
            raise DraftScopeError(f"the exits in {Path(path).name} (trained on '{meta.get('base', '?')}') do not fit "
                                  "this model's shapes")
        dtype = next(base_model.parameters()).dtype
        exits.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)  # onto each part's device
        return exits.merge().eval(), meta
