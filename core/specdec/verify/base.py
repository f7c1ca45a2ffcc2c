"""The verifier protocol: draft tokens plus p and q in, a verdict out.

A verifier is one class with a ``name``, an ``Options`` dataclass and ``verify`` (a chain of drafts). Verifiers that
can also walk a draft tree inherit ``TreeVerifier``: ``verify_tree`` and the children modes they are lossless with.

Glossary (vLLM's): the output of a round is the *accepted* drafts, then one token of the target's own: *resampled*
from the residual at the first rejection, or the *bonus* token after every draft was accepted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from core.options import NoOptions, as_dict, resolve


@dataclass
class Verdict:
    n_accepted: int  # leading drafted tokens accepted
    token: int  # the token the target adds: resampled at the first rejection, or the bonus after full acceptance
    kind: str  # "resampled" | "bonus"
    accept_probs: list[float | None] = field(default_factory=list)  # per verified position (sampling rule only)
    uniforms: list[float | None] = field(default_factory=list)  # the U compared with it
    residual_V: torch.Tensor | None = None  # norm(max(0, p - q)) at the rejection (sampling rule only)

    @property
    def n_verified(self) -> int:
        """Drafted positions the target looked at: the accepted ones plus the rejected one, if any."""
        return len(self.accept_probs)


class Verifier(ABC):
    """Base class: ``verify`` a chain of drafts. ``options`` / keyword ``values`` fill the ``Options`` dataclass."""

    name: ClassVar[str] = "base"
    Options: ClassVar[type] = NoOptions
    lossless: ClassVar[bool] = True  # the output follows the target's distribution (False: Medusa's typical acceptance)

    def __init__(self, options=None, **values):
        owner = f"the '{self.name}' verifier"
        self.options = resolve(self.Options, options, owner)
        if values:
            self.options = resolve(self.Options, {**as_dict(self.options), **values}, owner)

    @abstractmethod
    def verify(self, draft: list[int], p_nV: torch.Tensor, q_nV: torch.Tensor | None,
               generator: torch.Generator) -> Verdict:
        """draft: γ token ids; p_nV: (γ+1, V) target distributions at each drafted position and the bonus position;
        q_nV: (γ, V) the drafter's distributions, or None for a drafter without probabilities (one-hot q)."""


@dataclass
class TreeVerdict:
    """The outcome of walking a draft tree: the accepted path, the token the target adds, and every comparison."""

    path: list[int]  # accepted node indices, root to leaf
    token: int
    kind: str  # "resampled" (the walk stopped at a node whose children were all rejected) | "bonus" (at a leaf)
    tried: dict[int, tuple[float | None, float | None]] = field(default_factory=dict)  # node → (accept prob, U)
    residual_V: torch.Tensor | None = None  # the distribution the token was drawn from after rejections (sampled)


class TreeVerifier(Verifier):
    """Verifiers that also walk a draft tree."""

    tree_children: ClassVar[tuple[str, ...]] = ()  # the children modes (core.specdec.trees.grow) it is lossless with

    @abstractmethod
    def verify_tree(self, tree, p_rows: torch.Tensor, q_rows: dict, generator: torch.Generator) -> TreeVerdict:
        """tree: a TokenTree; p_rows: (N+1, V) target distributions, row 0 after the committed tokens and row i+1
        after node i; q_rows: node (-1 for the root) → the distribution that node's children were drawn from."""


def walk_tree(parents: list[int], tokens: list[int], p_rows: torch.Tensor, step) -> TreeVerdict:
    """Walk from the root: at each node run ``step(p_V, parent, children, child_tokens)`` → SiblingVerdict-like
    (token, accepted_index, accept_probs, uniforms, residual_V); follow the accepted child or stop.

    p_rows: (N+1, V) target distributions: row 0 after the committed tokens, row i+1 after node i."""
    children: dict[int, list[int]] = {}
    for i, parent in enumerate(parents):
        children.setdefault(parent, []).append(i)
    node, path, tried = -1, [], {}
    while True:
        kids = children.get(node, [])
        p_V = p_rows[node + 1]
        result = step(p_V, node, kids, [tokens[i] for i in kids])
        for j, (a, u) in enumerate(zip(result.accept_probs, result.uniforms)):
            tried[kids[j]] = (a, u)
        if result.accepted_index is None:
            return TreeVerdict(path, result.token, "resampled" if kids else "bonus", tried,
                               result.residual_V if kids else None)
        node = kids[result.accepted_index]
        path.append(node)
