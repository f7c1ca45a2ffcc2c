"""Plain dataclass trace records: what each engine step returns, and the running statistics.

Records hold only ints, floats, strings and lists of them, so ``to_dict``/``from_dict`` (``core.runtime.records``)
round-trip through JSON.
Visualizers read these; they never touch a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from core.runtime.records import Record


@dataclass
class Alternative:
    """One entry of a top-k list."""

    id: int
    text: str
    prob: float


@dataclass
class Candidate:
    """A token with its probability under p, q and (at a sampled rejection) the residual: one bar of the inspector."""

    id: int
    text: str
    p: float | None
    q: float | None
    residual: float | None = None


@dataclass
class DraftedToken:
    """One token the drafter proposed, and what the target decided about it.

    decision: "accepted" | "rejected" | "unverified" (after the first rejection nothing else is looked at).
    p/q are the probabilities of this token under the target/drafter (the model's softmax when greedy, else the warped
    distributions the decision used); q is None for drafters without probabilities (treated as one-hot).
    """

    position: int  # absolute index in the sequence (prompt included)
    id: int
    text: str
    decision: str
    q: float | None
    p: float | None = None
    accept_prob: float | None = None  # min(1, p/q) under the decision distributions (sampling verifier)
    u: float | None = None  # the uniform draw compared with accept_prob (sampling verifier)
    rank_p: int | None = None  # 1 = the target's most likely token
    rank_q: int | None = None
    p_entropy: float | None = None  # entropy (nats) of the target's distribution here (the one p comes from)
    q_topk: list[Alternative] = field(default_factory=list)
    p_topk: list[Alternative] = field(default_factory=list)
    # p and q side by side over the union of both top-k lists and the drafted token (verified positions only)
    candidates: list[Candidate] = field(default_factory=list)


@dataclass
class EmittedToken:
    """The token the target contributes each round: a bonus after full acceptance, or a resample at a rejection."""

    position: int
    id: int
    text: str
    kind: str  # "bonus" | "resampled"
    p: float  # probability of this token under p (model softmax when greedy)
    rank_p: int
    p_topk: list[Alternative] = field(default_factory=list)
    residual_topk: list[Alternative] = field(default_factory=list)  # norm(max(0, p - q)) at a sampled rejection
    # p, q (at a rejection) and the residual over the union of their top-k lists and the emitted token
    candidates: list[Candidate] = field(default_factory=list)
    outside_draft_vocab: bool = False  # the drafter's (VocabTrim'd) head cannot propose this token: q = 0 there


@dataclass
class StepRecord(Record):
    """One draft → verify round."""

    step: int
    drafter: str
    verifier: str
    start_position: int  # sequence length before the round
    drafted: list[DraftedToken]
    emitted: EmittedToken | None  # None only if the round ended on EOS among the accepted drafts
    accepted: int
    committed_ids: list[int]  # tokens this round added (accepted drafts + emitted), cut at EOS / the token budget
    committed_text: str
    draft_ms: float
    verify_ms: float
    prefill_ms: float  # the prompt prefill, on the first round only
    total_ms: float
    target_cache_len: int
    drafter_cache_len: int | None
    finished: bool
    finish_reason: str | None = None  # "eos" | "max_new_tokens" | "context"
    settings: dict = field(default_factory=dict)  # γ, temperature, top-k, top-p in force for this round
    draft_info: dict = field(default_factory=dict)  # drafter-specific (Kangaroo: exit layer, η, confidences)



@dataclass
class Stats:
    """Running statistics with the standard definitions (vLLM / EAGLE / Spec-Bench).

    α = accepted / drafted; τ = tokens committed per target verification call, bonus included;
    per-position acceptance i = P(accept at i | positions < i accepted); MBSU = τ / (1 + γ̄·c), γ̄ = mean draft length,
    c = drafter cost per token relative to the target (parameter bytes read).
    """

    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    generated: int = 0
    target_calls: int = 0  # verification forwards (the prompt prefill is counted apart)
    draft_s: float = 0.0
    verify_s: float = 0.0
    prefill_s: float = 0.0
    total_s: float = 0.0
    reached: list[int] = field(default_factory=list)  # reached[i]: rounds whose position i was verified
    accepted_at: list[int] = field(default_factory=list)  # accepted_at[i]: of those, accepted
    accepted_hist: dict[int, int] = field(default_factory=dict)  # accepted length → rounds
    draft_cost: float | None = None  # c for MBSU; None for model-free drafters

    def add_round(self, n_drafted: int, n_accepted: int, n_committed: int, n_verified: int, draft_s: float,
                  verify_s: float, total_s: float) -> None:
        self.rounds += 1
        self.drafted += n_drafted
        self.accepted += n_accepted
        self.generated += n_committed
        self.target_calls += 1
        self.draft_s += draft_s
        self.verify_s += verify_s
        self.total_s += total_s
        while len(self.reached) < n_verified:
            self.reached.append(0)
            self.accepted_at.append(0)
        for i in range(n_verified):
            self.reached[i] += 1
            self.accepted_at[i] += int(i < n_accepted)
        self.accepted_hist[n_accepted] = self.accepted_hist.get(n_accepted, 0) + 1

    @property
    def alpha(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    @property
    def tau(self) -> float | None:
        return self.generated / self.target_calls if self.target_calls else None

    @property
    def per_position_acceptance(self) -> list[float]:
        return [a / r if r else 0.0 for a, r in zip(self.accepted_at, self.reached)]

    @property
    def tokens_per_second(self) -> float | None:
        elapsed = self.total_s + self.prefill_s
        return self.generated / elapsed if elapsed > 0 else None

    @property
    def mean_draft_len(self) -> float:
        return self.drafted / self.rounds if self.rounds else 0.0

    @property
    def mbsu(self) -> float | None:
        if self.draft_cost is None or self.tau is None:
            return None
        return self.tau / (1.0 + self.mean_draft_len * self.draft_cost)

    def summary(self) -> dict:
        """Flat JSON-friendly view (the derived metrics included)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["accepted_hist"] = {str(k): v for k, v in sorted(self.accepted_hist.items())}
        d.update(alpha=self.alpha, tau=self.tau, per_position_acceptance=self.per_position_acceptance,
                 tokens_per_second=self.tokens_per_second, mean_draft_len=self.mean_draft_len, mbsu=self.mbsu)
        return d


@dataclass
class TreeNode:
    """One node of a round's draft tree: a drafted token, where it hangs, and what the target decided about it.

    decision: "accepted" (on the accepted path) | "rejected" (the verifier tried it and turned it down) | "skipped"
    (its parent was reached but an earlier sibling was accepted first) | "unreached" (its parent was not accepted).
    """

    index: int
    parent: int  # -1: hangs off the last committed token
    depth: int  # 0 = the first drafted position
    id: int
    text: str
    q: float | None  # drafter probability of this token at its parent (model softmax when greedy)
    path_q: float | None  # product of q along the path (the draft-side score EAGLE-2 ranks by)
    p: float  # target probability of this token at its parent (model softmax when greedy)
    decision: str
    tried: bool = False  # the verifier compared this node (accepted or rejected it explicitly)
    accept_prob: float | None = None  # min(1, r(x)/q(x)) when tried by a sampled verifier
    u: float | None = None
    p_entropy: float | None = None  # entropy (nats) of the target's distribution at its parent (the one p comes from)


@dataclass
class SiblingGroup:
    """The children of one visited node, verified together, with the optimal multi-draft acceptance beside what the
    verifier achieves. α* and the exact rates are computed on p and q truncated to their top tokens (``support``)
    and renormalised; None where they do not apply (greedy) or the enumeration would be too large."""

    parent: int  # -1: the last committed token
    children: list[int]
    accepted_child: int | None  # None: every child rejected, the target's token was drawn instead
    support: int = 0
    single_draft: float | None = None  # Σ min(p, q): one draft
    alpha_star_with: float | None = None  # α* for n drafts i.i.d. from q
    alpha_star_without: float | None = None  # α* for n drafts without replacement
    exact_rrs: float | None = None  # exact acceptance of RRS (i.i.d. drafts) for this p, q, n
    exact_rsd: float | None = None  # exact acceptance of RSD (without replacement)


@dataclass
class TreeStepRecord(Record):
    """One tree draft → verify round."""

    step: int
    drafter: str
    verifier: str
    shape: str  # "3,2,1,1" or "budget:N"
    children_mode: str  # "topk" | "iid" | "without-replacement"
    start_position: int
    nodes: list[TreeNode]
    groups: list[SiblingGroup]
    path: list[int]  # accepted node indices, root to leaf
    emitted: EmittedToken | None
    accepted: int
    committed_ids: list[int]
    committed_text: str
    draft_ms: float
    verify_ms: float
    prefill_ms: float
    total_ms: float
    target_cache_len: int
    drafter_cache_len: int | None
    finished: bool
    finish_reason: str | None = None
    settings: dict = field(default_factory=dict)
    draft_info: dict = field(default_factory=dict)  # drafter-specific (ADED: its search's visits and values)



def alpha_star_summary(records: list) -> dict:
    """Over the tree rounds' sibling groups that carry α*: how many, the means of α* (with / without replacement),
    of Σ min(p, q), of the exact RRS / RSD rates, and the realised acceptance (share of groups where a child was
    accepted). Means are over groups; None where no group has the value."""
    groups = [g for r in records for g in getattr(r, "groups", []) if g.alpha_star_with is not None]

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    return {"groups": len(groups), "alpha_star_with": mean(g.alpha_star_with for g in groups),
            "alpha_star_without": mean(g.alpha_star_without for g in groups),
            "single_draft": mean(g.single_draft for g in groups), "exact_rrs": mean(g.exact_rrs for g in groups),
            "exact_rsd": mean(g.exact_rsd for g in groups),
            "realised": mean(float(g.accepted_child is not None) for g in groups)}
