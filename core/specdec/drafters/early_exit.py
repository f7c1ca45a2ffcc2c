"""Early-exit self-drafting (LayerSkip style, no training): the target's first ℓ layers, its final norm and its head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from core.errors import DraftScopeError
from core.options import Range
from core.runtime.layers import SHALLOW_EXIT, exit_layer_at
from core.runtime.models import LoadedModel, truncated_view
from core.specdec.drafters.base import ConfidenceOptions, Drafter
from core.specdec.drafters.model import ModelDrafter
from core.specdec.vocab_trim import VocabTrimOptions


def default_exit_layer(n_layers: int) -> int:
    return exit_layer_at(n_layers, SHALLOW_EXIT)


class EarlyExitDrafter(ModelDrafter):
    name = "early-exit"

    @dataclass
    class Options(VocabTrimOptions, ConfidenceOptions):
        exit_layer: Annotated[int | None, Range(1, 31, 1)] = None  # ℓ: target layers the draft runs (None: a fifth)

    def __init__(self, target: LoadedModel, options=None, **kw):
        Drafter.__init__(self, target, options, **kw)
        ell = self.options.exit_layer or default_exit_layer(target.n_layers)
        if not 1 <= ell < target.n_layers:
            raise DraftScopeError(f"exit layer must be in 1..{target.n_layers - 1} for '{target.name}', got {ell}")
        self.exit_layer = ell
        self.attach(target, truncated_view(target.model, ell))
