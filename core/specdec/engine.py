"""The step-by-step speculative decoding engine.

A ``Session`` holds the target, a drafter, a verifier and the settings. ``step()`` runs one draft → verify round and
returns a ``StepRecord``; ``run()`` yields rounds until EOS or the token budget; ``reset()`` starts over.

Cache invariant: between rounds the target's cache holds every committed token but the last one; the next round feeds
that last token plus the drafts in one forward, which yields p at every drafted position and at the bonus position.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict

import torch

from core.errors import DraftScopeError
from core.runtime.cached_lm import CachedLM
from core.runtime.layers import capture_final_hidden
from core.runtime.models import LoadedModel, load_model
from core.runtime.timing import elapsed
from core.specdec.config import SessionConfig
from core.specdec.drafters import (
    BuildsTree,
    Draft,
    DraftContext,
    Drafter,
    LearnsFromTarget,
    Pipelined,
    ReadsTargetHidden,
    SharesTargetCache,
    TreeDrafting,
    build_drafter,
)
from core.specdec.drafters.base import verify_forward
from core.specdec.fastpath import StaticCachedLM, fits, target_cache
from core.specdec.recorder import Recorder, RoundTrace
from core.specdec.records import Stats, StepRecord, TreeStepRecord
from core.specdec.sampling import warp
from core.specdec.trees.grow import build_tree
from core.specdec.trees.tree import TokenTree, TreeCache
from core.specdec.verify import Verifier, build_verifier

# One lock for every forward pass in the process: models are shared between sessions (app users), and on a small
# machine two concurrent forwards only slow each other down.
MODEL_LOCK = threading.RLock()


class Session:
    """One user's decoding run: target + drafter + verifier + settings + the committed tokens so far.

    ``allow_local`` lets drafter options that name models load Hugging Face ids or local directories (kept for the
    drafters ``reconfigure`` builds)."""

    def __init__(self, target: LoadedModel, drafter: Drafter, verifier: Verifier, prompt_ids: list[int],
                 config: SessionConfig, allow_local: bool = False):
        config.validate()
        if not prompt_ids:
            raise DraftScopeError("the prompt is empty")
        limit = target.max_context
        if len(prompt_ids) + config.max_new_tokens > limit:
            raise DraftScopeError(f"prompt ({len(prompt_ids)} tokens) + max new tokens ({config.max_new_tokens}) "
                                  f"exceeds the context of '{target.name}' ({limit} tokens)")
        _check_tree(config, drafter)
        self.target, self.drafter, self.verifier, self.config = target, drafter, verifier, config
        self.allow_local = allow_local
        self.recorder = Recorder(target)
        self.prompt_ids = list(prompt_ids)
        self._prompt_text: str | None = None
        self.reset()

    @classmethod
    def from_config(cls, config: SessionConfig, prompt: str | None = None, prompt_ids: list[int] | None = None,
                    chat: bool = False, allow_local: bool = False) -> "Session":
        """Load the models (once per process), tokenize the prompt and build the session."""
        config.validate()
        options = config.options()  # an unknown drafter or option fails before any model loads
        verifier = build_verifier(config.verifier, config.verifier_options)
        if prompt_ids is None and not (prompt or "").strip():
            raise DraftScopeError("the prompt is empty")
        target = load_model(config.target, allow_local=allow_local)
        drafter = build_drafter(config.drafter, target, options, allow_local=allow_local)
        ids = prompt_ids if prompt_ids is not None else target.encode(prompt, chat=chat)
        return cls(target, drafter, verifier, ids, config, allow_local=allow_local)

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
        changed = config.changes(self.config)
        drafter = verifier = None
        if config.drafter != self.config.drafter or config.options() != self.config.options():  # resolved: {} and
            #   the defaults spelled out are the same drafter
            drafter = build_drafter(config.drafter, self.target, config.options(), allow_local=self.allow_local)
        _check_tree(config, drafter or self.drafter)
        if config.verifier != self.config.verifier or config.verifier_options != self.config.verifier_options:
            verifier = build_verifier(config.verifier, config.verifier_options)
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
        if isinstance(self.target_kv, StaticCachedLM) and not self._static_still_fits():
            self.target_kv = CachedLM(self.target.model)  # the dynamic cache, filled again by the next round
            self._prefilled = False
        if self.finish_reason == "max_new_tokens" and len(self.generated_ids) < config.max_new_tokens:
            self.finish_reason = None  # a larger budget lets the run go on
        return changed

    def _static_still_fits(self) -> bool:
        """Whether the static target cache (``core.specdec.fastpath``) suits the new settings: its drafter, chains,
        its padded width (γ + 1) and room for the new budget."""
        kv, config = self.target_kv, self.config
        return (fits(self.target, self.drafter, bool(config.tree)) and kv.width == config.gamma + 1
                and min(self.target.max_context, len(self.prompt_ids) + config.max_new_tokens + kv.width)
                <= kv.max_len)

    # ------------------------------------------------------------------------------------------------ state
    def reset(self) -> None:
        """Start over from the prompt with the same settings (and the same seed)."""
        self.tokens: list[int] = list(self.prompt_ids)
        self.target_kv = target_cache(self.target, self.drafter, self.config, len(self.prompt_ids))
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.stats = Stats(draft_cost=self.drafter.cost)
        self.records: list[StepRecord | TreeStepRecord] = []
        self.finish_reason: str | None = None
        self._prefilled = False
        self.drafter.restart()

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

    def run(self, max_new_tokens: int | None = None) -> Iterator[StepRecord | TreeStepRecord | None]:
        """Yield rounds until EOS, the configured budget, or ``max_new_tokens`` more tokens."""
        stop_at = len(self.generated_ids) + (max_new_tokens or self.config.max_new_tokens)
        while not self.done and len(self.generated_ids) < stop_at:
            yield self.step()

    # ------------------------------------------------------------------------------------------------ one round
    def step(self) -> StepRecord | TreeStepRecord | None:
        """One draft → verify round. Returns its record (None when ``config.record`` is off or the run is done)."""
        if self.done:
            return None
        with MODEL_LOCK, torch.inference_mode():
            if self.config.tree:
                return self._tree_round()
            return self._pipelined_round() if isinstance(self.drafter, Pipelined) else self._chain_round()

    def _prefill(self) -> float:
        t = time.perf_counter()
        self.target_kv.reset()
        if len(self.tokens) > 1:
            with self._hidden() as seen:
                self.target_kv.forward(self.tokens[:-1])
            self._hand_hidden(seen, 0, len(self.tokens) - 1)
        self.drafter.prefill(self.tokens)
        self._prefilled = True
        return elapsed(t, self.target.device)

    def _begin(self) -> tuple[float, float, int, int, int]:
        """(round start time, prefill seconds (first round only), sequence length, tokens left in the budget, the most
        drafts the budget and the context leave room for: the target adds one token after them)."""
        t0 = time.perf_counter()
        prefill_s = 0.0 if self._prefilled else self._prefill()
        self.stats.prefill_s += prefill_s
        start, budget = len(self.tokens), self.config.max_new_tokens - len(self.generated_ids)
        return t0, prefill_s, start, budget, max(0, min(budget - 1, self.target.max_context - start - 1))

    def _chain_round(self) -> StepRecord | None:
        """Draft a chain of up to γ tokens, verify them in one target forward, commit the accepted prefix + one."""
        t0, prefill_s, start, budget, room = self._begin()

        t1 = time.perf_counter()
        ctx = self.drafter.plan(DraftContext(self.tokens, min(self.config.gamma, room), self.config.sampling,
                                             self.generator, self.target_kv, room=room))
        draft = self.drafter.propose(ctx) if ctx.gamma > 0 else Draft(tokens=[])
        draft.tokens = draft.tokens[:ctx.gamma]
        if getattr(self.drafter.options, "schedule", "constant") != "constant" or ctx.stop_below:
            draft.info = {**draft.info, "gamma": ctx.gamma}  # this round's γ under an adaptive length
        draft_s = elapsed(t1, self.target.device)

        t2 = time.perf_counter()
        forward = self.drafter.verify_forward if isinstance(self.drafter, SharesTargetCache) else verify_forward
        end = len(self.tokens) + len(draft.tokens)  # the forward's positions end here
        with self._hidden() as seen:
            logits_nV = forward(self.target_kv, self.tokens, draft.tokens).cpu()
        p_nV = warp(logits_nV, self.config.sampling)
        q_nV = draft.q_nV[: len(draft.tokens)] if draft.q_nV is not None else None
        verdict = self.verifier.verify(draft.tokens, p_nV, q_nV, self.generator)
        new = self._cut(draft.tokens[: verdict.n_accepted] + [verdict.token], budget)
        self.tokens.extend(new)
        self.target_kv.rollback(len(self.tokens) - 1)
        if seen:  # the committed positions among those the forward computed: up to the last committed token's
            first = end - seen[-1].shape[1]
            self._hand_hidden(seen, first, len(self.tokens) - 1 - first)
        self.drafter.observe(self.tokens, verdict.n_accepted)
        self.drafter.adapt(len(draft.tokens), verdict.n_accepted)
        if isinstance(self.drafter, LearnsFromTarget) and new:
            self.drafter.learn(self.tokens, len(new), logits_nV[: len(new)], min(verdict.n_accepted, len(new)))
        verify_s = elapsed(t2, self.target.device)

        trace = self._trace(t0, start, logits_nV, p_nV, verdict, new, draft_s, verify_s, prefill_s, draft=draft)
        # An EOS among the accepted drafts ends the round there: later positions count as never reached.
        return self._end(t0, trace, len(draft.tokens), min(verdict.n_accepted, len(new)),
                         min(verdict.n_verified, len(new)))

    def _pipelined_round(self) -> StepRecord | None:
        """PEARL's round: verify the pending drafts (none in pre-verify mode) while the drafter drafts the next ones;
        check the pending drafts and the first new one (whose p is the forward's last row); commit. When all of them
        pass there is no bonus token (the target never saw past the first new draft): the rest stays pending."""
        t0, prefill_s, start, budget, room = self._begin()
        ctx = DraftContext(self.tokens, min(self.config.gamma, room), self.config.sampling, self.generator,
                           self.target_kv, room=room)
        t1 = time.perf_counter()
        pending = self.drafter.propose(ctx)
        draft_s = elapsed(t1, self.target.device)

        t2 = time.perf_counter()
        logits_nV, ahead, info = self.drafter.overlap(self.target_kv, self.tokens, pending.tokens, ctx, t0)
        logits_nV = logits_nV.cpu()
        look = ahead.tokens[:1] if len(pending.tokens) < room else []
        checked = Draft(pending.tokens + look, _q_rows(pending, ahead, len(look), self.target.vocab_size),
                        _q_rows(pending, ahead, len(look), self.target.vocab_size, show=True), info, pending.vocab_V)
        # The verifier wants a bonus row after the last checked draft; when a look-ahead draft is checked there is
        # none (the target did not see it), so the last row stands in and a bonus drawn from it is never committed.
        rows_nV = torch.cat([logits_nV, logits_nV[-1:]]) if look else logits_nV
        p_nV = warp(rows_nV, self.config.sampling)
        verdict = self.verifier.verify(checked.tokens, p_nV, checked.q_nV, self.generator)
        all_accepted = bool(look) and verdict.n_accepted == len(checked.tokens)
        committed = checked.tokens[: verdict.n_accepted] + ([] if all_accepted else [verdict.token])
        new = self._cut(committed, budget)
        self.tokens.extend(new)
        self.target_kv.rollback(min(len(self.tokens) - 1, len(self.target_kv)))
        self.drafter.settle(self.tokens, ahead, len(look), all_accepted and not self.done)
        verify_s = elapsed(t2, self.target.device)
        info["verify_end"] = round((time.perf_counter() - t0) * 1e3, 3)

        trace = self._trace(t0, start, rows_nV, p_nV, verdict, new, draft_s, verify_s, prefill_s, draft=checked)
        return self._end(t0, trace, len(checked.tokens), min(verdict.n_accepted, len(new)),
                         min(verdict.n_verified, len(new)))

    def _tree_round(self) -> TreeStepRecord | None:
        """Grow a tree with the drafter, verify every node in one target forward, walk it, commit the path + one."""
        t0, prefill_s, start, budget, max_depth = self._begin()

        t1 = time.perf_counter()
        ctx = DraftContext(self.tokens, max_depth, self.config.sampling, self.generator, self.target_kv)
        spec = self.config.tree_spec
        grown = build_tree(self.drafter, ctx, spec, max_depth)
        tree = grown.tree
        draft_s = elapsed(t1, self.target.device)

        # Target: the pending committed tokens as a chain, then the tree under the last of them, in one forward.
        t2 = time.perf_counter()
        pending = self.target_kv.sync(self.tokens)
        m = len(pending)
        full = TokenTree(pending + tree.tokens, list(range(-1, m - 1)) + [m - 1 if p < 0 else m + p
                                                                          for p in tree.parents])
        # the drafter may ask for the hybrid (log-sum-exp) tree attention (LongSpec does); the record says which ran
        cache = TreeCache(self.target_kv, attention=getattr(self.drafter, "tree_attention", "masked"))
        grown.info = {**grown.info, "tree_attention": cache.attention}
        with self._hidden() as seen:
            logits_nV = cache.forward(full)[m - 1:].cpu()  # row 0: after the committed tokens; row i + 1: after node i
        p_nV = warp(logits_nV, self.config.sampling)
        verdict = self.verifier.verify_tree(tree, p_nV, grown.q_rows, self.generator)
        new = self._cut([tree.tokens[i] for i in verdict.path] + [verdict.token], budget)
        cache.keep(list(range(m)) + [m + i for i in verdict.path])
        self.tokens.extend(new)
        self.target_kv.rollback(len(self.tokens) - 1)
        if seen:  # the pending tokens and the accepted nodes but the last committed token
            kept = verdict.path[: len(new) - 1]
            self._hand_hidden(seen, start - m, m + len(kept), rows=list(range(m)) + [m + i for i in kept])
        self.drafter.tree_end(self.tokens, [grown.source[i] for i in verdict.path])
        verify_s = elapsed(t2, self.target.device)

        path = verdict.path[: len(new)]  # an accepted EOS ends the round there
        stopped_at = path[-1] if path else -1
        has_children = stopped_at in tree.parents
        trace = self._trace(t0, start, logits_nV, p_nV, verdict, new, draft_s, verify_s, prefill_s, grown=grown,
                            path=path, spec=spec)
        return self._end(t0, trace, len(tree), len(path), len(path) + int(len(new) > len(path) and has_children))

    def _hidden(self):
        """Capture the target's last hidden states during a forward, for drafters that read them (else nothing)."""
        if isinstance(self.drafter, ReadsTargetHidden):
            return capture_final_hidden(self.target.model)
        return contextlib.nullcontext([])

    def _hand_hidden(self, seen: list[torch.Tensor], first: int, n: int, rows: list[int] | None = None) -> None:
        """Give a ``ReadsTargetHidden`` drafter the states of the committed positions ``first`` .. ``first + n - 1``
        (the last one behind the last committed token): the forward's first ``n`` rows, or ``rows`` of it."""
        if seen and n > 0 and isinstance(self.drafter, ReadsTargetHidden):
            states_nD = seen[-1][0]
            self.drafter.see_hidden(states_nD[rows] if rows is not None else states_nD[:n], first)

    def _trace(self, t0: float, start: int, logits_nV, p_nV, verdict, new, draft_s, verify_s, prefill_s,
               **round_kind) -> RoundTrace:
        return RoundTrace(
            step=len(self.records), start=start, logits_nV=logits_nV, p_nV=p_nV, verdict=verdict, new=new,
            draft_s=draft_s, verify_s=verify_s, prefill_s=prefill_s, total_ms=(time.perf_counter() - t0) * 1e3,
            drafter=self.drafter.name, verifier=self.verifier.name, target_cache_len=len(self.target_kv),
            drafter_cache_len=self.drafter.cache_len, finished=self.done, finish_reason=self.finish_reason,
            **round_kind)

    def _end(self, t0: float, trace: RoundTrace, n_drafted: int, n_accepted: int, n_verified: int):
        """Record the round (when records are on) and add it to the running statistics (its time includes the
        record's, which ``record=False`` measures)."""
        record = None
        if self.config.record:
            record = self.recorder.record(trace, self.config)
            self.records.append(record)
        self.stats.add_round(n_drafted, n_accepted, len(trace.new), n_verified, trace.draft_s, trace.verify_s,
                             time.perf_counter() - t0 - trace.prefill_s)
        return record

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

    def summary(self) -> dict:
        return {"config": asdict(self.config), "prompt_tokens": len(self.prompt_ids),
                "token_ids": self.generated_ids, "text": self.text, "finish_reason": self.finish_reason,
                "stats": self.stats.summary()}


def _q_rows(pending: Draft, ahead: Draft, n_look: int, vocab: int, show: bool = False) -> torch.Tensor | None:
    """The q rows of the pending drafts then the first ``n_look`` new ones (one-hot where a drafter has none)."""
    parts = []
    for draft, n in ((pending, len(pending.tokens)), (ahead, n_look)):
        rows = draft.q_show_nV if show else draft.q_nV
        if n == 0:
            continue
        if rows is None:
            rows = torch.nn.functional.one_hot(torch.tensor(draft.tokens[:n]), vocab).float()
        parts.append(rows[:n].float().cpu())
    if not parts or (pending.q_nV is None and (ahead.q_nV is None or n_look == 0)):
        return None
    return torch.cat(parts)


def _check_tree(config: SessionConfig, drafter: Drafter) -> None:
    if not config.tree:
        return
    if isinstance(drafter, BuildsTree):
        if config.tree_spec.children != "topk":
            raise DraftScopeError(f"the '{drafter.name}' drafter builds a deterministic tree: verify it with greedy "
                                  "or match, not with drawn children")
    elif not isinstance(drafter, TreeDrafting):
        raise DraftScopeError(f"the '{drafter.name}' drafter gives no probabilities, so it cannot grow a tree; "
                              "use 'model' or 'early-exit', or a chain (no tree)")
    deepest = getattr(drafter, "max_tree_depth", None)
    depth = config.tree_spec.depth
    if deepest is not None and depth > deepest:
        raise DraftScopeError(f"the '{drafter.name}' drafter has {deepest} heads, so its trees are at most {deepest} "
                              f"deep; the tree '{config.tree}' (with γ = {config.gamma}) is {depth} deep")


def generate(config: SessionConfig, prompt: str | None = None, prompt_ids: list[int] | None = None,
             chat: bool = False, allow_local: bool = False) -> Session:
    """Run a whole generation; return the finished session (records, stats, text)."""
    session = Session.from_config(config, prompt=prompt, prompt_ids=prompt_ids, chat=chat, allow_local=allow_local)
    for _ in session.run():
        pass
    return session


__all__ = ["MODEL_LOCK", "Session", "generate"]
