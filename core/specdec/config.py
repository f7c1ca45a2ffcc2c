"""``SessionConfig``: what every speculative decoding run has (models, γ, sampling, seed, budget, tree shape) plus the
chosen drafter's and verifier's own options, which live on those methods (``Drafter.Options``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.checks import SEED_MAX, whole
from core.errors import DraftScopeError
from core.options import as_dict
from core.runtime.models import DEFAULT_TARGET
from core.specdec.drafters import drafter_options
from core.specdec.sampling import SamplingConfig
from core.specdec.trees.grow import TreeSpec
from core.specdec.verify import TreeVerifier, verifier_class

MAX_NEW_TOKENS = 4096
MAX_GAMMA = 64


@dataclass
class SessionConfig:
    """Everything that defines a run (model names and settings, no tensors)."""

    target: str = DEFAULT_TARGET
    drafter: str = "ngram"
    verifier: str = "greedy"
    gamma: int = 5  # draft length γ (upper bound per round)
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    max_new_tokens: int = 128
    drafter_options: dict = field(default_factory=dict)  # the drafter's Options fields (others are an error)
    verifier_options: dict = field(default_factory=dict)  # the verifier's Options fields
    topk_alternatives: int = 5  # top-k lists kept in the records
    record: bool = True  # build step records (False: the same loop recording nothing, for overhead measurements)
    stop_at_eos: bool = True
    tree: str = ""  # "" = a chain; "3,2,1,1" = children per depth; "[[0],[1],[0,0]]" = top-k paths; "budget:N"
    tree_branch: int = 4  # budget trees: frontier nodes expanded per depth and children per node (depth ≤ γ)
    children: str = "auto"  # "topk" | "iid" | "without-replacement"; auto: what the verifier needs
    alpha_star: bool = True  # tree rounds with a sampled verifier: record α* per sibling group

    def validate(self) -> None:
        """Check the run settings (the drafter's options are checked when it is built: ``options()``)."""
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise DraftScopeError(f"max new tokens must be in 1..{MAX_NEW_TOKENS}, got {self.max_new_tokens}")
        if not 1 <= self.gamma <= MAX_GAMMA:
            raise DraftScopeError(f"gamma must be in 1..{MAX_GAMMA}, got {self.gamma}")
        whole("seed", self.seed, 0, SEED_MAX)
        if not 0 <= self.topk_alternatives <= 50:
            raise DraftScopeError(f"top-k alternatives must be in 0..50, got {self.topk_alternatives}")
        _ = self.sampling  # building it checks temperature / top-k / top-p
        if self.tree:
            _ = self.tree_spec  # parsing it checks the shape and the verifier / children pairing

    def options(self):
        """The registered drafter's ``Options`` from ``drafter_options`` (unknown drafter or option: an error)."""
        return drafter_options(self.drafter, self.drafter_options)

    @property
    def children_mode(self) -> str:
        if self.children != "auto":
            return self.children
        return {"rrs": "iid", "rsd": "without-replacement"}.get(self.verifier, "topk")

    @property
    def tree_spec(self) -> TreeSpec | None:
        if not self.tree:
            return None
        spec = TreeSpec.parse(self.tree, depth=self.gamma, branch=self.tree_branch, children=self.children_mode)
        if spec.depth > self.gamma:
            raise DraftScopeError(f"the tree is {spec.depth} levels deep, more than the draft depth γ = {self.gamma} "
                                  "(the most tokens a round drafts): raise γ (max depth) or give a shallower tree")
        verifier = verifier_class(self.verifier)
        if not issubclass(verifier, TreeVerifier):
            raise DraftScopeError(f"the '{self.verifier}' verifier checks a chain; for a tree use greedy, match "
                                  "(any children), rrs (i.i.d. children) or rsd (children without replacement)")
        if spec.children not in verifier.tree_children:
            raise DraftScopeError(f"the '{self.verifier}' verifier is lossless only with "
                                  f"{' or '.join(verifier.tree_children)} children, not '{spec.children}'")
        if self.temperature == 0 and "topk" not in verifier.tree_children:  # rrs / rsd: their children are drawn
            raise DraftScopeError(f"'{self.verifier}' samples: set a temperature above 0 (at 0 use greedy)")
        return spec

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_k, self.top_p)

    def changes(self, other: SessionConfig) -> list[str]:
        """The settings that differ from ``other``: field names, with the drafter's and verifier's options named one
        by one (``eta``, not ``drafter_options``); the same drafter's options are compared resolved (an option left
        out is its default)."""
        changed = []
        for name, value in vars(self).items():
            before = getattr(other, name)
            if name == "drafter_options" and self.drafter == other.drafter:
                mine, theirs = as_dict(self.options()), as_dict(other.options())
                changed += [k for k in mine if mine[k] != theirs[k]]
            elif name in ("drafter_options", "verifier_options"):
                changed += [k for k in dict.fromkeys([*value, *before]) if value.get(k) != before.get(k)]
            elif value != before:
                changed.append(name)
        return changed
