"""Early-exit self-drafting (LayerSkip style, no training): the target's first ℓ layers, its final norm and its head."""

from __future__ import annotations

from core.drafters.model import ModelDrafter
from core.errors import DraftScopeError
from core.kv import CachedLM
from core.models import LoadedModel, module_param_bytes, truncated_view


def default_exit_layer(n_layers: int) -> int:
    """A fifth of the depth (6 of SmolLM2's 30 layers, as in Hugging Face's ``assistant_early_exit`` examples)."""
    return max(1, n_layers // 5)


class EarlyExitDrafter(ModelDrafter):
    name = "early-exit"

    def __init__(self, target: LoadedModel, exit_layer: int | None = None):
        ell = exit_layer or default_exit_layer(target.n_layers)
        if not 1 <= ell < target.n_layers:
            raise DraftScopeError(f"exit layer must be in 1..{target.n_layers - 1} for '{target.name}', got {ell}")
        self.target = target
        self.drafter = target
        self.exit_layer = ell
        self.view = truncated_view(target.model, ell)
        self.kv = CachedLM(self.view)
        self._tree_cache = None

    def network(self):
        return self.view

    @property
    def cost(self) -> float:
        return module_param_bytes(self.view) / self.target.param_bytes
