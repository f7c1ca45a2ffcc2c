"""Hydra heads (Ankner et al., 2024): Medusa's heads made sequentially dependent. Head k reads h_t and the input
embeddings of the branch so far, concat(h_t, E(x_{t+1}), …, E(x_{t+k+1})), so a tree node's candidates depend on
its ancestors. Trained with ``python -m core.train.heads --arch hydra`` (teacher-forced on the target's own tokens).

Hydra++ (``plus``): one decoder layer of the target's kind runs over the target's hidden states before the heads
(its own KV cache, fed the committed positions after every verification) and the heads are trained against the
target's distribution (the teacher loss): ``python -m core.train.heads --arch hydra --prefix --loss teacher --out
assets/heads/hydra++-TARGET.safetensors``. See ``heads.py``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import DraftScopeError
from core.specdec.drafters.heads import HeadsDrafter, default_checkpoint


class HydraDrafter(HeadsDrafter):
    name = "hydra"
    arch = "hydra"

    @dataclass
    class Options(HeadsDrafter.Options):
        plus: bool = False  # Hydra++: the shipped heads with a prefix layer and the teacher loss

    def __init__(self, target, options=None, **kw):
        super().__init__(target, options, **kw)
        if self.options.plus and self.heads.prefix is None:
            raise DraftScopeError("Hydra++ needs heads trained with a prefix layer (--prefix); these have none")

    def default_path(self, target_name: str) -> Path:
        return default_checkpoint("hydra++" if self.options.plus else "hydra", target_name)
