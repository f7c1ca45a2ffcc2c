"""The step-by-step speculative decoding engine.

A ``Session`` holds the target, a drafter, a verifier and the settings. ``step()`` runs one draft → verify round and
returns a ``StepRecord``; ``run()`` yields rounds until EOS or the token budget; ``reset()`` starts over.

Cache invariant: between rounds the target's cache holds every committed token but the last one; the next round feeds
that last token plus the drafts in one forward, which yields p at every drafted position and at the bonus position.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, fields
from typing import Iterator

import torch

from core.drafters import Draft, DraftContext, Drafter, build_drafter
from core.errors import DraftScopeError
from core.kv import CachedLM
from core.models import DEFAULT_TARGET, LoadedModel, load_model
from core.optimal import sibling_bounds
from core.records import (Alternative, Candidate, DraftedToken, EmittedToken, SiblingGroup, Stats, StepRecord,
                           TreeNode, TreeStepRecord)
from core.sampling import SamplingConfig, display_probs, warp
from core.tree import TokenTree, TreeCache
from core.tree_draft import DraftTree, TreeSpec, build_tree
from core.verify import VERIFIERS, Verdict, Verifier, build_verifier

MAX_NEW_TOKENS = 4096
MAX_GAMMA = 64
# One lock for every forward pass in the process: models are shared between sessions (app users), and on a small
# machine two concurrent forwards only slow each other down.
MODEL_LOCK = threading.RLock()
# SessionConfig fields that define the drafter: changing one between rounds builds a new drafter
DRAFTER_FIELDS = ("drafter", "draft_model", "ngram_size", "min_ngram_size", "exit_layer", "adapter", "eta",
                  "easyspec_base", "group_size", "calibrate", "exits", "thresholds")


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
    draft_model: str | None = None  # for the 'model' drafter
    ngram_size: int = 3  # for the 'ngram' drafter: longest suffix n-gram to match
    min_ngram_size: int = 2  # ... and the shortest
    exit_layer: int | None = None  # ℓ for the 'early-exit' drafter (None = a fifth of the depth)
    adapter: str | None = None  # 'kangaroo': a trained adapter file (None = the one shipped for the target)
    eta: float | None = None  # 'kangaroo': stop drafting when the top draft probability is below η (None = 0.6)
    easyspec_base: str = "early-exit"  # 'easyspec': the drafter it runs layer-parallel ('early-exit' or 'model')
    group_size: int = 4  # 'easyspec': layers per fuzzy group
    calibrate: bool = True  # 'easyspec': recompute the drafter cache exactly over the accepted tokens each round
    exits: str | None = None  # 'sorted': a trained exits file (None = the one shipped for the base model, if any)
    thresholds: str = ""  # 'sorted': θ per exit but the last, "0.5,0.5" ("" = 0.5 each; one number = all)
    topk_alternatives: int = 5  # top-k lists kept in the records
    record: bool = True  # build step records (False: the same loop recording nothing, for overhead measurements)
    stop_at_eos: bool = True
    tree: str = ""  # "" = a chain of γ drafts; "3,2,1,1" = children per depth; "budget:N" = EAGLE-2 style
    tree_branch: int = 4  # budget trees: frontier nodes expanded per depth and children per node (depth ≤ γ)
    children: str = "auto"  # "topk" | "iid" | "without-replacement"; auto: what the verifier needs
    alpha_star: bool = True  # tree rounds with a sampled verifier: record α* per sibling group

    def validate(self) -> None:
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise DraftScopeError(f"max new tokens must be in 1..{MAX_NEW_TOKENS}, got {self.max_new_tokens}")
        if not 1 <= self.gamma <= MAX_GAMMA:
            raise DraftScopeError(f"gamma must be in 1..{MAX_GAMMA}, got {self.gamma}")
        if not 0 <= self.topk_alternatives <= 50:
            raise DraftScopeError(f"top-k alternatives must be in 0..50, got {self.topk_alternatives}")
        self.sampling  # validates temperature / top-k / top-p
        if self.tree:
            self.tree_spec  # validates the shape and the verifier / children pairing

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
        verifier = VERIFIERS.get(self.verifier)
        if verifier is None:
            raise DraftScopeError(f"unknown verifier '{self.verifier}'; choose one of {', '.join(VERIFIERS)}")
        allowed = getattr(verifier, "tree_children", ())
        if not allowed:
            raise DraftScopeError(f"the '{self.verifier}' verifier checks a chain; for a tree use greedy, rrs "
                                  "(i.i.d. children) or rsd (children without replacement)")
        if spec.children not in allowed:
            raise DraftScopeError(f"the '{self.verifier}' verifier is lossless only with {' or '.join(allowed)} "
                                  f"children, not '{spec.children}'")
        if self.verifier != "greedy" and self.temperature == 0:
            raise DraftScopeError(f"'{self.verifier}' samples: set a temperature above 0 (at 0 use greedy)")
        return spec

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_k, self.top_p)

    def drafter_options(self) -> dict:
        return {"draft_model": self.draft_model, "ngram_size": self.ngram_size, "min_ngram_size": self.min_ngram_size,
                "exit_layer": self.exit_layer, "adapter": self.adapter, "eta": self.eta, "base": self.easyspec_base,
                "group_size": self.group_size, "calibrate": self.calibrate, "exits": self.exits,
                "thresholds": self.thresholds}


class Session:
    """One user's decoding run: target + drafter + verifier + settings + the committed tokens so far."""

    def __init__(self, target: LoadedModel, drafter: Drafter, verifier: Verifier, prompt_ids: list[int],
                 config: SessionConfig):
        config.validate()
        if not prompt_ids:
            raise DraftScopeError("the prompt is empty")
        limit = target.max_context
        if len(prompt_ids) + config.max_new_tokens > limit:
            raise DraftScopeError(f"prompt ({len(prompt_ids)} tokens) + max new tokens ({config.max_new_tokens}) "
                                  f"exceeds the context of '{target.name}' ({limit} tokens)")
        _check_tree(config, target, drafter)
        self.target, self.drafter, self.verifier, self.config = target, drafter, verifier, config
        self.prompt_ids = list(prompt_ids)
        self._prompt_text: str | None = None
        self.reset()

    @classmethod
    def from_config(cls, config: SessionConfig, prompt: str | None = None, prompt_ids: list[int] | None = None,
                    chat: bool = False, allow_local: bool = False) -> "Session":
        """Load the models (once per process), tokenize the prompt and build the session."""
        config.validate()
        if prompt_ids is None and not (prompt or "").strip():
            raise DraftScopeError("the prompt is empty")
        target = load_model(config.target, allow_local=allow_local)
        options = config.drafter_options()
        if config.drafter in ("model", "easyspec", "sorted"):
            options["allow_local"] = allow_local
        drafter = build_drafter(config.drafter, target, **options)
        ids = prompt_ids if prompt_ids is not None else target.encode(prompt, chat=chat)
        return cls(target, drafter, build_verifier(config.verifier), ids, config)

    # ------------------------------------------------------------------------------------------------ settings
    def reconfigure(self, config: SessionConfig) -> list[str]:
        """Apply new settings from the next round on, keeping what was generated; return the names that changed.

        γ, temperature, top-k/p, seed, the drafter and its options, the verifier and the budget change live (a new
        drafter is prefilled on the tokens so far). Another target needs a new session: DraftScopeError.
        Nothing is applied if the new settings are invalid.
        """
        config.validate()
        if config.target != self.config.target:
            raise DraftScopeError("a different target needs a new session (Reset)")
        if config.max_new_tokens < len(self.generated_ids):
            raise DraftScopeError(f"max new tokens ({config.max_new_tokens}) is below what was already generated "
                                  f"({len(self.generated_ids)})")
        changed = [f.name for f in fields(SessionConfig) if getattr(config, f.name) != getattr(self.config, f.name)]
        drafter = verifier = None
        if set(DRAFTER_FIELDS) & set(changed):
            drafter = build_drafter(config.drafter, self.target, **config.drafter_options())
        _check_tree(config, self.target, drafter or self.drafter)
        if "verifier" in changed:
            verifier = build_verifier(config.verifier)
        self.config = config
        if verifier is not None:
            self.verifier = verifier
        if drafter is not None:
            self.drafter = drafter
            self.stats.draft_cost = drafter.cost
            if self._prefilled:
                with MODEL_LOCK, torch.inference_mode():
                    drafter.prefill(self.tokens)
        if "seed" in changed:
            self.generator = torch.Generator().manual_seed(config.seed)
        if self.finish_reason == "max_new_tokens" and len(self.generated_ids) < config.max_new_tokens:
            self.finish_reason = None  # a larger budget lets the run go on
        return changed

    # ------------------------------------------------------------------------------------------------ state
    def reset(self) -> None:
        """Start over from the prompt with the same settings (and the same seed)."""
        self.tokens: list[int] = list(self.prompt_ids)
        self.target_kv = CachedLM(self.target.model)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.stats = Stats(draft_cost=self.drafter.cost)
        self.records: list[StepRecord] = []
        self.finish_reason: str | None = None
        self._prefilled = False

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def generated_ids(self) -> list[int]:
        return self.tokens[len(self.prompt_ids):]

    @property
    def prompt_text(self) -> str:
        """The prompt as the target's tokenizer decodes it (chat template included), decoded once."""
        if self._prompt_text is None:
            self._prompt_text = self.target.decode(self.prompt_ids)
        return self._prompt_text

    @property
    def text(self) -> str:
        return self.target.decode(self.generated_ids)

    def run(self, max_new_tokens: int | None = None) -> Iterator[StepRecord | None]:
        """Yield rounds until EOS, the configured budget, or ``max_new_tokens`` more tokens."""
        stop_at = len(self.generated_ids) + (max_new_tokens or self.config.max_new_tokens)
        while not self.done and len(self.generated_ids) < stop_at:
            yield self.step()

    # ------------------------------------------------------------------------------------------------ one round
    def step(self) -> StepRecord | None:
        """One draft → verify round. Returns its record (None when ``config.record`` is off or the run is done)."""
        if self.done:
            return None
        with MODEL_LOCK, torch.inference_mode():
            return self._step()

    def _prefill(self) -> float:
        t = time.perf_counter()
        self.target_kv.reset()
        if len(self.tokens) > 1:
            self.target_kv.forward(self.tokens[:-1])
        self.drafter.prefill(self.tokens)
        self._prefilled = True
        return _elapsed(t, self.target.device)

    def _step(self) -> StepRecord | TreeStepRecord | None:
        if self.config.tree:
            return self._tree_step()
        t0 = time.perf_counter()
        prefill_s = 0.0 if self._prefilled else self._prefill()
        self.stats.prefill_s += prefill_s
        start = len(self.tokens)
        budget = self.config.max_new_tokens - len(self.generated_ids)
        gamma = max(0, min(self.config.gamma, budget - 1, self.target.max_context - start - 1))

        t1 = time.perf_counter()
        ctx = DraftContext(self.tokens, gamma, self.config.sampling, self.generator, self.target_kv)
        draft = self.drafter.propose(ctx) if gamma > 0 else Draft(tokens=[])
        draft.tokens = draft.tokens[:gamma]
        draft_s = _elapsed(t1, self.target.device)

        t2 = time.perf_counter()
        logits_nV = self.drafter.verify_forward(self.target_kv, self.tokens, draft.tokens).cpu()
        p_nV = warp(logits_nV, self.config.sampling)
        q_nV = draft.q_nV[: len(draft.tokens)] if draft.q_nV is not None else None
        verdict = self.verifier.verify(draft.tokens, p_nV, q_nV, self.generator)
        new = draft.tokens[: verdict.n_accepted] + [verdict.token]
        new = self._cut(new, budget)
        self.tokens.extend(new)
        self.target_kv.rollback(len(self.tokens) - 1)
        self.drafter.observe(self.tokens, verdict.n_accepted)
        verify_s = _elapsed(t2, self.target.device)
        core_ms = (time.perf_counter() - t0) * 1e3

        record = None
        if self.config.record:
            record = self._record(start, draft, logits_nV, p_nV, verdict, new, draft_s, verify_s, prefill_s, core_ms)
            self.records.append(record)
        # An EOS among the accepted drafts ends the round there: later positions count as never reached.
        self.stats.add_round(len(draft.tokens), min(verdict.n_accepted, len(new)), len(new),
                             min(verdict.n_verified, len(new)), draft_s, verify_s,
                             time.perf_counter() - t0 - prefill_s)
        return record

    def _tree_step(self) -> TreeStepRecord | None:
        """One tree round: grow the tree with the drafter, verify every node in one target forward, walk it."""
        spec = self.config.tree_spec
        t0 = time.perf_counter()
        prefill_s = 0.0 if self._prefilled else self._prefill()
        self.stats.prefill_s += prefill_s
        start = len(self.tokens)
        budget = self.config.max_new_tokens - len(self.generated_ids)
        max_depth = max(0, min(budget - 1, self.target.max_context - start - 1))

        t1 = time.perf_counter()
        ctx = DraftContext(self.tokens, max_depth, self.config.sampling, self.generator)
        grown = build_tree(self.drafter, ctx, spec, max_depth)
        tree = grown.tree
        draft_s = _elapsed(t1, self.target.device)

        # Target: the pending committed tokens as a chain, then the tree under the last of them, in one forward.
        t2 = time.perf_counter()
        pending = self.target_kv.sync(self.tokens)
        m = len(pending)
        full = TokenTree(pending + tree.tokens, list(range(-1, m - 1)) + [m - 1 if p < 0 else m + p
                                                                          for p in tree.parents])
        cache = TreeCache(self.target_kv)
        logits_nV = cache.forward(full)[m - 1:].cpu()  # row 0: after the committed tokens; row i + 1: after node i
        p_nV = warp(logits_nV, self.config.sampling)
        verdict = self.verifier.verify_tree(tree, p_nV, grown.q_rows, self.generator)
        new = [tree.tokens[i] for i in verdict.path] + [verdict.token]
        new = self._cut(new, budget)
        cache.keep(list(range(m)) + [m + i for i in verdict.path])
        self.tokens.extend(new)
        self.target_kv.rollback(len(self.tokens) - 1)
        self.drafter.tree_end(self.tokens, [grown.source[i] for i in verdict.path])
        verify_s = _elapsed(t2, self.target.device)
        core_ms = (time.perf_counter() - t0) * 1e3

        path = verdict.path[: len(new)]  # an accepted EOS ends the round there
        stopped_at = path[-1] if path else -1
        has_children = any(p == stopped_at for p in tree.parents)
        n_verified = len(path) + int(len(new) > len(path) and has_children)
        record = None
        if self.config.record:
            record = self._tree_record(spec, start, grown, logits_nV, p_nV, verdict, path, new, draft_s, verify_s,
                                       prefill_s, core_ms)
            self.records.append(record)
        self.stats.add_round(len(tree), len(path), len(new), n_verified, draft_s, verify_s,
                             time.perf_counter() - t0 - prefill_s)
        return record

    def _tree_record(self, spec: TreeSpec, start: int, grown: DraftTree, logits_nV, p_nV, verdict, path, new,
                     draft_s, verify_s, prefill_s, core_ms) -> TreeStepRecord:
        tree, cfg = grown.tree, self.config.sampling
        p_show = display_probs(logits_nV, p_nV, cfg)
        depths = tree.depths()
        on_path = set(path)
        visited = {-1} | set(path)  # the nodes whose children the walk looked at
        if path and len(new) == len(path):
            visited.discard(path[-1])  # the round ended on an accepted EOS (or the budget) there
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
                                  tried=tried, accept_prob=a, u=u))
        groups = []
        for parent in sorted(visited):
            kids = [i for i, p in enumerate(tree.parents) if p == parent]
            if not kids:
                continue
            hit = next((k for k in kids if k in on_path), None)
            group = SiblingGroup(parent=parent, children=kids, accepted_child=hit)
            if self.config.alpha_star and not cfg.greedy and parent in grown.q_rows:
                bounds = sibling_bounds(p_nV[parent + 1].numpy(), grown.q_rows[parent].numpy(), len(kids),
                                        [tree.tokens[k] for k in kids])
                if bounds is not None:
                    for key, value in bounds.items():
                        setattr(group, key, None if value is None else (int(value) if key == "support"
                                                                        else float(value)))
            groups.append(group)
        k = self.config.topk_alternatives
        emitted = None
        if len(new) > len(path):
            row = (path[-1] if path else -1) + 1
            residual_V = verdict.residual_V
            p_top = _topk(p_show[row:row + 1], k, self.target)[0]
            residual_top = _topk(residual_V.unsqueeze(0), k, self.target)[0] if residual_V is not None else []
            emitted = EmittedToken(
                position=start + len(path), id=verdict.token, text=self.target.token_text(verdict.token),
                kind=verdict.kind, p=float(p_show[row, verdict.token]), rank_p=_rank(p_show[row], verdict.token),
                p_topk=p_top, residual_topk=residual_top,
                candidates=self._candidates(p_show[row], grown.q_show.get(row - 1) if verdict.kind == "resampled"
                                            else None, residual_V, verdict.token, p_top, residual_top))
        return TreeStepRecord(
            step=len(self.records), drafter=self.drafter.name, verifier=self.verifier.name, shape=spec.label,
            children_mode=spec.children, start_position=start, nodes=nodes, groups=groups, path=list(path),
            emitted=emitted, accepted=len(path), committed_ids=list(new), committed_text=self.target.decode(new),
            draft_ms=draft_s * 1e3, verify_ms=verify_s * 1e3, prefill_ms=prefill_s * 1e3, total_ms=core_ms,
            target_cache_len=len(self.target_kv), drafter_cache_len=self.drafter.cache_len, finished=self.done,
            finish_reason=self.finish_reason,
            settings={"gamma": self.config.gamma, "temperature": self.config.temperature, "top_k": self.config.top_k,
                      "top_p": self.config.top_p, "tree": spec.label, "tree_branch": self.config.tree_branch})

    def _cut(self, new: list[int], budget: int) -> list[int]:
        """Stop the committed tokens at EOS, the token budget or the context limit; set the finish reason."""
        if self.config.stop_at_eos:
            eos = self.target.eos_ids
            for j, tok in enumerate(new):
                if tok in eos:
                    new = new[: j + 1]
                    self.finish_reason = "eos"
                    break
        if len(new) >= budget:
            new = new[:budget]
            self.finish_reason = self.finish_reason or "max_new_tokens"
        if len(self.tokens) + len(new) >= self.target.max_context:
            self.finish_reason = self.finish_reason or "context"
        return new

    # ------------------------------------------------------------------------------------------------ records
    def _record(self, start: int, draft: Draft, logits_nV, p_nV, verdict: Verdict, new: list[int], draft_s: float,
                verify_s: float, prefill_s: float, core_ms: float) -> StepRecord:
        k = self.config.topk_alternatives
        p_show = display_probs(logits_nV, p_nV, self.config.sampling)  # (γ+1, V)
        p_top = _topk(p_show, k, self.target)
        q_show = draft.q_show_nV
        q_top = _topk(q_show, k, self.target) if q_show is not None else [[] for _ in draft.tokens]
        n_ver = min(verdict.n_verified, len(new))  # a round cut at an accepted EOS never reaches later drafts
        n_acc = min(verdict.n_accepted, len(new))
        drafted = []
        for i, tok in enumerate(draft.tokens):
            verified = i < n_ver
            decision = "accepted" if i < n_acc else ("rejected" if verified else "unverified")
            drafted.append(DraftedToken(
                position=start + i, id=tok, text=self.target.token_text(tok), decision=decision,
                q=float(q_show[i, tok]) if q_show is not None else None,
                p=float(p_show[i, tok]) if verified else None,
                accept_prob=verdict.accept_probs[i] if verified else None,
                u=verdict.uniforms[i] if verified else None,
                rank_p=_rank(p_show[i], tok) if verified else None,
                rank_q=_rank(q_show[i], tok) if q_show is not None else None,
                q_topk=q_top[i], p_topk=p_top[i] if verified else [],
                candidates=self._candidates(p_show[i], q_show[i] if q_show is not None else None, None, tok,
                                            p_top[i], q_top[i]) if verified else []))
        j = verdict.n_accepted  # the position the target's own token fills
        emitted = None
        if len(new) > j:
            residual_V = verdict.residual_V
            residual_top = _topk(residual_V.unsqueeze(0), k, self.target)[0] if residual_V is not None else []
            q_at_j = q_show[j] if q_show is not None and j < len(draft.tokens) else None
            emitted = EmittedToken(
                position=start + j, id=verdict.token, text=self.target.token_text(verdict.token), kind=verdict.kind,
                p=float(p_show[j, verdict.token]), rank_p=_rank(p_show[j], verdict.token), p_topk=p_top[j],
                residual_topk=residual_top,
                candidates=self._candidates(p_show[j], q_at_j, residual_V, verdict.token, p_top[j],
                                            q_top[j] if q_at_j is not None else [], residual_top))
        return StepRecord(
            step=len(self.records), drafter=self.drafter.name, verifier=self.verifier.name, start_position=start,
            drafted=drafted, emitted=emitted, accepted=n_acc, committed_ids=list(new),
            committed_text=self.target.decode(new), draft_ms=draft_s * 1e3, verify_ms=verify_s * 1e3,
            prefill_ms=prefill_s * 1e3, total_ms=core_ms, target_cache_len=len(self.target_kv),
            drafter_cache_len=self.drafter.cache_len, finished=self.done, finish_reason=self.finish_reason,
            settings={"gamma": self.config.gamma, "temperature": self.config.temperature, "top_k": self.config.top_k,
                      "top_p": self.config.top_p},
            draft_info=dict(draft.info))

    def _candidates(self, p_V, q_V, residual_V, token: int, *tops: list[Alternative]) -> list[Candidate]:
        """p, q and the residual side by side over the union of the given top-k lists and ``token``, by p."""
        ids = list(dict.fromkeys([token] + [a.id for top in tops for a in top]))
        rows = [Candidate(i, self.target.token_text(i), float(p_V[i]), float(q_V[i]) if q_V is not None else None,
                          float(residual_V[i]) if residual_V is not None else None) for i in ids]
        return sorted(rows, key=lambda c: -(c.p or 0.0))

    def summary(self) -> dict:
        return {"config": asdict(self.config), "prompt_tokens": len(self.prompt_ids),
                "token_ids": self.generated_ids, "text": self.text, "finish_reason": self.finish_reason,
                "stats": self.stats.summary()}


def _check_tree(config: SessionConfig, target: LoadedModel, drafter: Drafter) -> None:
    if not config.tree:
        return
    if not drafter.supports_tree:
        raise DraftScopeError(f"the '{drafter.name}' drafter gives no probabilities, so it cannot grow a tree; "
                              "use 'model' or 'early-exit', or a chain (no tree)")
    if "sliding_attention" in (getattr(target.model.config, "layer_types", None) or []):
        raise DraftScopeError(f"draft trees are not available for '{target.name}' yet: its sliding-window layers "
                              "need their own tree mask; use a chain (no tree)")


def _elapsed(t: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


def _rank(probs_V: torch.Tensor, token: int) -> int:
    return int((probs_V > probs_V[token]).sum()) + 1


def _topk(probs_nV: torch.Tensor, k: int, model: LoadedModel) -> list[list[Alternative]]:
    if k == 0:
        return [[] for _ in range(probs_nV.shape[0])]
    values, indices = torch.topk(probs_nV, min(k, probs_nV.shape[-1]), dim=-1)
    return [[Alternative(i, model.token_text(i), v) for i, v in zip(row_i, row_v) if v > 0]
            for row_i, row_v in zip(indices.tolist(), values.tolist())]


def generate(config: SessionConfig, prompt: str | None = None, prompt_ids: list[int] | None = None,
             chat: bool = False, allow_local: bool = False) -> Session:
    """Run a whole generation; return the finished session (records, stats, text)."""
    session = Session.from_config(config, prompt=prompt, prompt_ids=prompt_ids, chat=chat, allow_local=allow_local)
    for _ in session.run():
        pass
    return session


__all__ = ["MODEL_LOCK", "Session", "SessionConfig", "generate"]
