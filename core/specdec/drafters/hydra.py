"""Hydra heads (Ankner et al., 2024): Medusa's heads made sequentially dependent. Head k reads h_t and the input
embeddings of the branch so far, concat(h_t, E(x_{t+1}), …, E(x_{t+k+1})), so a tree node's candidates depend on
its ancestors. Trained with ``python -m core.train.heads --arch hydra`` (teacher-forced on the target's own tokens,
optionally against the target's distribution: Hydra++'s teacher loss); see ``heads.py``."""

from __future__ import annotations

from core.specdec.drafters.heads import HeadsDrafter


class HydraDrafter(HeadsDrafter):
    name = "hydra"
    arch = "hydra"
