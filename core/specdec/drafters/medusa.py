"""Medusa heads (Cai et al., 2024): K residual heads on the target's last hidden state h_t, head k proposing the token
k + 2 ahead, through a shared (VocabTrim'd) copy of the target's LM head. The heads do not see what the others
proposed, so at one tree depth every node gets the same candidates. Trained with ``python -m core.train.heads --arch
medusa`` (Medusa-1: the target frozen, cross-entropy per head weighted 0.8^k); see ``heads.py``."""

from __future__ import annotations

from core.specdec.drafters.heads import HeadsDrafter


class MedusaDrafter(HeadsDrafter):
    name = "medusa"
    arch = "medusa"
