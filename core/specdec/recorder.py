"""Building step records: the decode loop hands over one ``RoundTrace`` per round, the ``Recorder`` turns it into a
``StepRecord`` (a chain) or a ``TreeStepRecord`` (a tree) of plain numbers and strings."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from core.runtime.models import LoadedModel
from core.specdec.config import SessionConfig
from core.specdec.drafters import Draft
from core.specdec.optimal import sibling_bounds
from core.specdec.records import (
    Alternative,
    Candidate,
    DraftedToken,
    EmittedToken,
    SiblingGroup,
    StepRecord,
    TreeNode,
    TreeStepRecord,
)
from core.specdec.sampling import display_probs
from core.specdec.trees.grow import DraftTree, TreeSpec
from core.specdec.verify import TreeVerdict, Verdict


@dataclass
class RoundTrace:
    """What one round did: the target's distributions at the verified positions, the verdict, what was committed.

    A chain round has ``draft`` (γ tokens, logits rows 0..γ); a tree round has ``grown`` (N nodes, logits rows 0..N:
    row 0 after the committed tokens, row i + 1 after node i) and the accepted ``path`` cut at an accepted EOS."""

    step: int  # the round's index in the session
    start: int  # sequence length before the round
    logits_nV: torch.Tensor  # the target's logits at the verified positions, (rows, V) on the CPU
    p_nV: torch.Tensor  # the same after the sampling warper (what the verifier used)
    verdict: Verdict | TreeVerdict
    new: list[int]  # tokens committed this round (accepted drafts + the target's own), cut at EOS / the budget
    draft_s: float
    verify_s: float
    prefill_s: float  # the prompt prefill, on the first round only
    total_ms: float
    drafter: str
    verifier: str
    target_cache_len: int
    drafter_cache_len: int | None
    finished: bool
    finish_reason: str | None
    draft: Draft | None = None  # chain rounds
    grown: DraftTree | None = None  # tree rounds
    path: list[int] = field(default_factory=list)  # tree rounds: accepted node indices, cut at an accepted EOS
    spec: TreeSpec | None = None  # tree rounds: the shape the tree was grown to


class Recorder:
    """Records for one target: token texts, top-k lists and p / q / residual side by side."""

    def __init__(self, target: LoadedModel):
        self.target = target

    def record(self, trace: RoundTrace, config: SessionConfig) -> StepRecord | TreeStepRecord:
        return self.tree(trace, config) if trace.grown is not None else self.chain(trace, config)

    # ------------------------------------------------------------------------------------------------ chains
    def chain(self, t: RoundTrace, config: SessionConfig) -> StepRecord:
        k, draft, verdict, new = config.topk_alternatives, t.draft, t.verdict, t.new
        p_show = display_probs(t.logits_nV, t.p_nV, config.sampling)  # (γ+1, V)
        p_top = self._topk(p_show, k)
        entropy_n = _entropies(p_show)
        q_show = draft.q_show_nV
        q_top = self._topk(q_show, k) if q_show is not None else [[] for _ in draft.tokens]
        n_ver = min(verdict.n_verified, len(new))  # a round cut at an accepted EOS never reaches later drafts
        n_acc = min(verdict.n_accepted, len(new))
        drafted = []
        for i, tok in enumerate(draft.tokens):
            verified = i < n_ver
            decision = "accepted" if i < n_acc else ("rejected" if verified else "unverified")
            drafted.append(DraftedToken(
                position=t.start + i, id=tok, text=self.target.token_text(tok), decision=decision,
                q=float(q_show[i, tok]) if q_show is not None else None,
                p=float(p_show[i, tok]) if verified else None,
                accept_prob=verdict.accept_probs[i] if verified else None,
                u=verdict.uniforms[i] if verified else None,
                rank_p=_rank(p_show[i], tok) if verified else None,
                rank_q=_rank(q_show[i], tok) if q_show is not None else None,
                p_entropy=entropy_n[i] if verified else None, q_topk=q_top[i], p_topk=p_top[i] if verified else [],
                candidates=self._candidates(p_show[i], q_show[i] if q_show is not None else None, None, tok,
                                            p_top[i], q_top[i]) if verified else []))
        j = verdict.n_accepted  # the position the target's own token fills
        emitted = None
        if len(new) > j:
            residual_V = verdict.residual_V
            residual_top = self._topk(residual_V.unsqueeze(0), k)[0] if residual_V is not None else []
            q_at_j = q_show[j] if q_show is not None and j < len(draft.tokens) else None
            emitted = self._emitted(t.start + j, verdict, p_show[j], p_top[j], q_at_j,
                                    q_top[j] if q_at_j is not None else [], residual_top)
            if draft.vocab_V is not None:
                emitted.outside_draft_vocab = not bool(draft.vocab_V[emitted.id])
        return StepRecord(
            step=t.step, drafter=t.drafter, verifier=t.verifier, start_position=t.start, drafted=drafted,
            emitted=emitted, accepted=n_acc, committed_ids=list(new), committed_text=self.target.decode(new),
            **self._common(t), settings=_settings(config), draft_info=dict(draft.info))

    # ------------------------------------------------------------------------------------------------ trees
    def tree(self, t: RoundTrace, config: SessionConfig) -> TreeStepRecord:
        grown, verdict, path, new, spec = t.grown, t.verdict, t.path, t.new, t.spec
        tree, cfg = grown.tree, config.sampling
        p_show = display_probs(t.logits_nV, t.p_nV, cfg)
        visited = {-1} | set(path)  # the nodes whose children the walk looked at
        if path and len(new) == len(path):
            visited.discard(path[-1])  # the round ended on an accepted EOS (or the budget) there
        nodes = self._tree_nodes(grown, verdict, set(path), visited, p_show)
        groups = [self._sibling_group(parent, grown, t.p_nV, set(path), config)
                  for parent in sorted(visited) if parent in tree.parents]
        k = config.topk_alternatives
        emitted = None
        if len(new) > len(path):
            row = (path[-1] if path else -1) + 1
            residual_V = verdict.residual_V
            p_top = self._topk(p_show[row:row + 1], k)[0]
            residual_top = self._topk(residual_V.unsqueeze(0), k)[0] if residual_V is not None else []
            q_V = grown.q_show.get(row - 1) if verdict.kind == "resampled" else None
            emitted = self._emitted(t.start + len(path), verdict, p_show[row], p_top, q_V, residual_top)
        return TreeStepRecord(
            step=t.step, drafter=t.drafter, verifier=t.verifier, shape=spec.label, children_mode=spec.children,
            start_position=t.start, nodes=nodes, groups=groups, path=list(path), emitted=emitted,
            accepted=len(path), committed_ids=list(new), committed_text=self.target.decode(new), **self._common(t),
            settings={**_settings(config), "tree": spec.label, "tree_branch": config.tree_branch},
            draft_info=dict(grown.info))

    def _tree_nodes(self, grown: DraftTree, verdict: TreeVerdict, on_path: set[int], visited: set[int],
                    p_show: torch.Tensor) -> list[TreeNode]:
        tree = grown.tree
        depths = tree.depths()
        entropy_n = _entropies(p_show)  # row parent + 1: the target's distribution where node i sits
        nodes, score = [], {}
        for i, (tok, parent) in enumerate(zip(tree.tokens, tree.parents)):
            q_row = grown.q_show.get(parent)
            q = float(q_row[tok]) if q_row is not None else None
            score[i] = (score.get(parent, 1.0) if parent >= 0 else 1.0) * (q if q is not None else 1.0)
            tried = i in verdict.tried and parent in visited
            decision = ("accepted" if i in on_path else "rejected" if tried else "skipped" if parent in visited
                        else "unreached")
            a, u = verdict.tried.get(i, (None, None)) if tried else (None, None)
            nodes.append(TreeNode(index=i, parent=parent, depth=depths[i], id=tok, text=self.target.token_text(tok),
                                  q=q, path_q=score[i], p=float(p_show[parent + 1, tok]), decision=decision,
                                  tried=tried, accept_prob=a, u=u, p_entropy=entropy_n[parent + 1]))
        return nodes

    @staticmethod
    def _sibling_group(parent: int, grown: DraftTree, p_nV: torch.Tensor, on_path: set[int],
                       config: SessionConfig) -> SiblingGroup:
        """The children of a visited node, with α* and the exact RRS / RSD rates beside the outcome (sampled)."""
        tree = grown.tree
        kids = [i for i, p in enumerate(tree.parents) if p == parent]
        hit = next((k for k in kids if k in on_path), None)
        group = SiblingGroup(parent=parent, children=kids, accepted_child=hit)
        if config.alpha_star and not config.sampling.greedy and parent in grown.q_rows:
            bounds = sibling_bounds(p_nV[parent + 1].numpy(), grown.q_rows[parent].numpy(), len(kids),
                                    [tree.tokens[k] for k in kids])
            for key, value in (bounds or {}).items():
                setattr(group, key, None if value is None else (int(value) if key == "support" else float(value)))
        return group

    # ------------------------------------------------------------------------------------------------ shared
    def _emitted(self, position: int, verdict, p_V, p_top, q_V, *tops) -> EmittedToken:
        """The target's own token: p, its rank and p / q / the residual over the top-k lists and the token."""
        residual_V = verdict.residual_V
        residual_top = tops[-1]
        return EmittedToken(
            position=position, id=verdict.token, text=self.target.token_text(verdict.token), kind=verdict.kind,
            p=float(p_V[verdict.token]), rank_p=_rank(p_V, verdict.token), p_topk=p_top, residual_topk=residual_top,
            candidates=self._candidates(p_V, q_V, residual_V, verdict.token, p_top, *tops))

    @staticmethod
    def _common(t: RoundTrace) -> dict:
        return dict(draft_ms=t.draft_s * 1e3, verify_ms=t.verify_s * 1e3, prefill_ms=t.prefill_s * 1e3,
                    total_ms=t.total_ms, target_cache_len=t.target_cache_len, drafter_cache_len=t.drafter_cache_len,
                    finished=t.finished, finish_reason=t.finish_reason)

    def _candidates(self, p_V, q_V, residual_V, token: int, *tops: list[Alternative]) -> list[Candidate]:
        """p, q and the residual side by side over the union of the given top-k lists and ``token``, by p."""
        ids = list(dict.fromkeys([token] + [a.id for top in tops for a in top]))
        rows = [Candidate(i, self.target.token_text(i), float(p_V[i]), float(q_V[i]) if q_V is not None else None,
                          float(residual_V[i]) if residual_V is not None else None) for i in ids]
        return sorted(rows, key=lambda c: -(c.p or 0.0))

    def _topk(self, probs_nV: torch.Tensor, k: int) -> list[list[Alternative]]:
        if k == 0:
            return [[] for _ in range(probs_nV.shape[0])]
        values, indices = torch.topk(probs_nV, min(k, probs_nV.shape[-1]), dim=-1)
        return [[Alternative(i, self.target.token_text(i), v) for i, v in zip(row_i, row_v) if v > 0]
                for row_i, row_v in zip(indices.tolist(), values.tolist())]


def _entropies(probs_nV: torch.Tensor) -> list[float]:
    """The entropy (nats) of each row of ``probs_nV`` (rows, V): one pass over probabilities already computed."""
    return torch.special.entr(probs_nV).sum(-1, dtype=torch.float64).tolist()


def _rank(probs_V: torch.Tensor, token: int) -> int:
    return int((probs_V > probs_V[token]).sum()) + 1


def _settings(config: SessionConfig) -> dict:
    return {"gamma": config.gamma, "temperature": config.temperature, "top_k": config.top_k, "top_p": config.top_p}
