"""The drafter protocol: propose up to γ tokens (with their q when the drafter has one), then learn the outcome.

A drafter is one class with a ``name``, an ``Options`` dataclass (its settings, the paper's defaults; see
``core.options``) and ``propose``. Two optional protocols, declared by inheriting them:
- ``TreeDrafting``: the drafter gives probabilities and can grow a draft tree (``core.specdec.trees.grow``);
- ``BuildsTree``: a drafter without probabilities builds its whole draft tree itself (ADED);
- ``Pipelined``: the next draft is made while the target verifies this one (PEARL);
- ``SharesTargetCache``: drafting runs inside the target's KV cache (Kangaroo), so the drafter also does the
  verification forward, on what drafting left there;
- ``LearnsFromTarget``: the drafter learns from each chain round's verification (OmniDraft);
- ``ReadsTargetHidden``: the drafter reads the target's last hidden state (draft heads: Medusa, Hydra), which the
  engine hands over after every target forward.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Annotated, ClassVar, Literal

import torch

from core.errors import DraftScopeError
from core.options import NoOptions, Range, as_dict, resolve
from core.specdec.sampling import SamplingConfig, display_probs, sample, warp


@dataclass
class Draft:
    tokens: list[int]
    q_nV: torch.Tensor | None = None  # (γ, V) distributions the tokens were drawn from; None = one-hot (no model)
    q_show_nV: torch.Tensor | None = None  # (γ, V) what the records show as q (model softmax when greedy)
    info: dict = field(default_factory=dict)  # drafter-specific facts for the record (JSON-friendly)
    vocab_V: torch.Tensor | None = None  # (V,) bool: the tokens the drafter can propose (VocabTrim); None = all


@dataclass
class DraftContext:
    tokens: list[int]  # the committed sequence, prompt included
    gamma: int  # propose at most this many tokens
    sampling: SamplingConfig
    generator: torch.Generator
    target_kv: object | None = None  # the target's CachedLM (what a SharesTargetCache drafter drafts in)
    room: int | None = None  # the most tokens the budget and the context leave for this round (None: γ)
    stop_below: float = 0.0  # confidence stop: end the draft at a token whose top draft probability is below this
    greedy_draft: bool = False  # draft the argmax even when sampling (q is then one-hot on it)

    def pick(self, logits_V: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Choose the next draft token from drafter logits (V,): (token, q used for the choice, q to show)."""
        logits_1V = logits_V.detach().float().cpu().unsqueeze(0)
        q_1V = warp(logits_1V, self.sampling)
        show_V = display_probs(logits_1V, q_1V, self.sampling)[0]
        if self.greedy_draft and not self.sampling.greedy:
            token = int(q_1V[0].argmax())  # vLLM's greedy drafting: the draft is deterministic, so q is one-hot
            return token, torch.nn.functional.one_hot(torch.tensor(token), q_1V.shape[-1]).float(), show_V
        token = int(q_1V[0].argmax()) if self.sampling.greedy else sample(q_1V[0], self.generator)
        return token, q_1V[0], show_V

    def unsure(self, show_V: torch.Tensor, threshold: float = 0.0) -> bool:
        """The confidence stop: the drafter's top probability here is below ``stop_below`` (or ``threshold``)."""
        limit = max(self.stop_below, threshold)
        return limit > 0 and float(show_V.max()) < limit


@dataclass
class LengthOptions:
    """How long each round's draft is, for every chain drafter (transformers' ``num_assistant_tokens_schedule``)."""

    schedule: Literal["constant", "heuristic"] = "constant"  # γ per round: constant, or heuristic (+2/−1)

    def __post_init__(self):
        if self.schedule not in ("constant", "heuristic"):
            raise DraftScopeError(f"the draft-length schedule must be constant or heuristic, got {self.schedule!r}")
        parent = super()
        if hasattr(parent, "__post_init__"):
            parent.__post_init__()


@dataclass
class ConfidenceOptions(LengthOptions):
    """Adaptive length for drafters with probabilities: a confidence stop and vLLM's greedy drafting."""

    confidence: Annotated[float, Range(0.0, 0.95, 0.05)] = 0.0  # stop drafting below this top probability (0: off)
    greedy_draft: bool = False  # draft the drafter's argmax even when sampling (vLLM); q is one-hot, still lossless

    def __post_init__(self):
        if isinstance(self.confidence, bool) or not 0.0 <= float(self.confidence) < 1.0:
            raise DraftScopeError(f"the confidence threshold must be in [0, 1), got {self.confidence!r}")
        super().__post_init__()


HEURISTIC_UP, HEURISTIC_DOWN, HEURISTIC_MAX = 2, 1, 64  # transformers' heuristic schedule (its γ is unbounded)


class Drafter(ABC):
    """Base class. Subclasses set ``name`` (the registry key) and ``Options``, and implement ``propose``; drafters
    with a cache also ``prefill`` and ``observe``.

    ``options`` is an ``Options`` instance or a mapping of its fields; keyword ``values`` override fields on top
    (``EarlyExitDrafter(target, exit_layer=6)``). Unknown names are an error. ``allow_local`` lets options that name
    models load Hugging Face ids or local directories."""

    name: ClassVar[str] = "base"
    Options: ClassVar[type] = NoOptions

    def __init__(self, target, options=None, *, allow_local: bool = False, **values):
        owner = f"the '{self.name}' drafter"
        self.options = resolve(self.Options, options, owner)
        if values:
            self.options = resolve(self.Options, {**as_dict(self.options), **values}, owner)
        self.target = target
        self.allow_local = allow_local

    def prefill(self, tokens: list[int]) -> None:
        """Called once before the first round with the prompt (lets model drafters fill their cache)."""

    # ------------------------------------------------------------------------------------------ draft length
    def plan(self, ctx: DraftContext) -> DraftContext:
        """This round's context under the drafter's length options: γ from its schedule, the confidence stop and
        greedy drafting. Drafters without ``LengthOptions`` draft ``ctx.gamma`` as they are."""
        opts = self.options
        if not isinstance(opts, LengthOptions):
            return ctx
        room = ctx.gamma if ctx.room is None else ctx.room
        gamma = ctx.gamma
        if opts.schedule == "heuristic":
            if getattr(self, "_gamma_next", None) is None:
                self._gamma_next = ctx.gamma  # starts at the configured γ, as transformers' num_assistant_tokens
            gamma = self._gamma_next
        gamma = max(0, min(gamma, room))
        if isinstance(opts, ConfidenceOptions):
            return replace(ctx, gamma=gamma, stop_below=float(opts.confidence), greedy_draft=bool(opts.greedy_draft))
        return replace(ctx, gamma=gamma)

    def adapt(self, n_drafted: int, n_accepted: int) -> None:
        """After a chain round: move the heuristic schedule (every draft accepted: γ + 2, else γ − 1, at least 1)."""
        opts = self.options
        if not isinstance(opts, LengthOptions) or opts.schedule != "heuristic" or n_drafted == 0:
            return
        now = getattr(self, "_gamma_next", None) or n_drafted
        self._gamma_next = (min(now + HEURISTIC_UP, HEURISTIC_MAX) if n_accepted == n_drafted
                            else max(1, now - HEURISTIC_DOWN))

    def restart(self) -> None:
        """A new run from the prompt: the schedule starts again from γ."""
        self._gamma_next = None

    @abstractmethod
    def propose(self, ctx: DraftContext) -> Draft:
        """Up to ``ctx.gamma`` draft tokens after ``ctx.tokens``."""

    def observe(self, tokens: list[int], n_accepted: int) -> None:
        """Called after each verification with the new committed sequence (roll back caches, adapt)."""

    @property
    def cache_len(self) -> int | None:
        return None

    @property
    def cost(self) -> float | None:
        """Drafter cost per token relative to the target's (for MBSU); None when negligible / model-free."""
        return None


class TreeDrafting(ABC):
    """Optional protocol of drafters that give probabilities: grow a draft tree one drafter forward per depth."""

    @abstractmethod
    def tree_begin(self, ctx: DraftContext) -> torch.Tensor:
        """The drafter's logits (V,) after the committed tokens."""

    @abstractmethod
    def tree_expand(self, tree, nodes: list[int]) -> torch.Tensor:
        """Feed ``nodes`` of the tree grown so far (their ancestors were fed before); their logits (n, V)."""

    @abstractmethod
    def tree_end(self, tokens: list[int], path: list[int]) -> None:
        """After a tree round: the new committed sequence and the accepted path (growth indices); keep only it."""


class BuildsTree(ABC):
    """Optional protocol of drafters without probabilities that build a whole draft tree themselves (ADED's search):
    the tree is deterministic given the context, so greedy or draw-and-match verification keeps it lossless."""

    @abstractmethod
    def draft_tree(self, ctx: DraftContext, budget: int, max_depth: int):
        """A ``core.specdec.trees.grow.DraftTree`` of at most ``budget`` nodes and ``max_depth`` depths."""

    @abstractmethod
    def tree_end(self, tokens: list[int], path: list[int]) -> None:
        """After a tree round: the new committed sequence and the accepted path (node indices)."""


class Pipelined(ABC):
    """Optional protocol of drafters whose next draft is made while the target verifies this one (PEARL): the engine
    runs a pipelined round (``Session._pipelined_round``) instead of draft-then-verify."""

    @abstractmethod
    def overlap(self, target_kv, tokens: list[int], draft: list[int], ctx: DraftContext, t0: float):
        """The verification forward of ``draft`` and, alongside it, the next draft: (logits (len(draft) + 1, V), the
        next Draft, the round's facts for the record)."""

    @abstractmethod
    def settle(self, tokens: list[int], ahead, n_checked: int, all_accepted: bool) -> None:
        """After the checks: what stays pending for the next round."""


class SharesTargetCache(ABC):
    """Optional protocol of drafters that draft inside the target's KV cache (``DraftContext.target_kv``)."""

    @abstractmethod
    def verify_forward(self, target_kv, tokens: list[int], draft: list[int]) -> torch.Tensor:
        """The verification forward on what drafting left in the cache: the logits (len(draft) + 1, V) at every
        drafted position and the bonus position, as ``verify_forward`` gives them for other drafters."""


class LearnsFromTarget(ABC):
    """Optional protocol of drafters that learn online from verification (OmniDraft): after every chain round the
    engine hands over the target's logits at the committed positions."""

    @abstractmethod
    def learn(self, tokens: list[int], n_new: int, logits_nV: torch.Tensor, n_accepted: int) -> None:
        """``tokens``: the committed sequence, whose last ``n_new`` tokens this round added; ``logits_nV``: the
        target's logits (n_new, V) at their positions; ``n_accepted``: how many of them were accepted drafts."""


class ReadsTargetHidden(ABC):
    """Optional protocol of drafters that draft from the target's last hidden state (the final norm's output, what
    the LM head reads). After the prefill and after every verification the engine calls ``see_hidden`` with the states
    of the committed positions that forward computed; the last row is the state whose logits gave the last committed
    token, at position ``len(tokens) - 2``."""

    @abstractmethod
    def see_hidden(self, hidden_nD: torch.Tensor, first_position: int) -> None:
        """The target's last hidden states (n, d) at positions ``first_position`` .. ``first_position + n - 1``."""


def verify_forward(target_kv, tokens: list[int], draft: list[int]) -> torch.Tensor:
    """The target's verification forward: bring its cache up to ``tokens`` and feed the drafts; the logits
    (len(draft) + 1, V) at every drafted position and the bonus position."""
    feed = target_kv.sync(tokens) + draft
    return target_kv.forward(feed, logits_to_keep=len(draft) + 1)


def stack_or_none(rows: list[torch.Tensor]) -> torch.Tensor | None:
    return torch.stack(rows) if rows else None
