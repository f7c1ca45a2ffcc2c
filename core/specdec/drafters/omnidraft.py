"""OmniDraft: one drafter for a target with another tokenizer, adapting online (Qualcomm, NeurIPS 2025).

The drafter reads the committed text re-tokenised with its own tokenizer and drafts its own tokens; the cross-
vocabulary translator (``core.specdec.crossvocab``) turns them into target tokens (n-gram cache runs, direct matches,
a cut where neither applies) and the target verifies those in its own vocabulary. Verification treats each proposal
as given (q one-hot on it: accepted with probability p(t), a rejection drawn from p without t), which keeps sampled
output exactly the target's whatever the translation did; the paper's q'(t) = Π q(d_j) is shown, not used.

Online, after every round (all three reset at every run unless ``keep_learning``):
- the **n-gram cache** grows with each committed target token that has no one-token drafter equivalent;
- **hybrid distillation**: a low-rank adapter on the drafter's last hidden state (the head's input; a LoRA of the
  head's input rather than of every projection, so a step needs no backward through the layers) is trained every
  ``distill_every`` committed tokens on λ · KD(p → q) at directly mapped tokens + (1 − λ) · −log Π q(d_j) at tokens
  reached through the cache;
- **adaptive drafting**: a linear head on the same hidden state predicts that the next drafter token will be
  accepted (trained on each round's outcomes, a merged token's outcome given to its sub-tokens); drafting stops when
  the running product falls below ``accept_stop``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from core.errors import DraftScopeError
from core.options import ModelName, Range
from core.runtime.cached_lm import CachedLM
from core.runtime.models import LoadedModel, has_sliding_layers, load_model
from core.specdec.crossvocab import NgramCache, VocabMap, decode_text, encode_text, translate
from core.specdec.drafters.base import ConfidenceOptions, Draft, DraftContext, Drafter, LearnsFromTarget
from core.specdec.drafters.model import network_cost

MIN_COVERAGE = 0.05  # below this share of directly mapped drafter tokens the pair has no usable mapping
KD_TOP = 32  # the target's top tokens kept per committed position for distillation
KD_MIN_MASS = 0.3  # distil a position only when its top tokens that map to drafter tokens hold this much of p
HEAD_BIAS = 2.0  # the acceptance head starts at σ(2) ≈ 0.88 everywhere, so early rounds draft their full length
MAX_BACKOFF = 16  # the most rounds the backoff skips in a row
HEAD_LR = 0.5  # the acceptance head's SGD step (on unit-length hidden states)
_KEPT: dict[tuple, Learned] = {}  # what ``keep_learning`` keeps between runs and sessions, per pair and settings


def _unit(h: torch.Tensor) -> torch.Tensor:
    """Hidden states scaled to unit length: the acceptance head's features (raw norms reach the hundreds)."""
    return h / h.norm(dim=-1, keepdim=True).clamp_min(1e-6)


class LowRank(nn.Module):
    """h + (α/r) · B A h: a LoRA update of the head's input, B zero so it starts as the identity."""

    def __init__(self, dim: int, rank: int, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.a = nn.Parameter(torch.randn(rank, dim, generator=gen) / dim ** 0.5)
        self.b = nn.Parameter(torch.zeros(dim, rank))
        self.scale = 1.0  # α / r with α = r

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.scale * (h @ self.a.T) @ self.b.T


@dataclass
class Learned:
    """What the drafter learns online for one pair: the n-gram cache, the adapter, the acceptance head."""

    cache: NgramCache
    adapter: LowRank
    head: nn.Linear
    optimizer: torch.optim.Optimizer
    distill_steps: int = 0
    head_steps: int = 0

    @classmethod
    def fresh(cls, dim: int, rank: int, lr: float, device, dtype) -> Learned:
        with torch.inference_mode(False):
            adapter = LowRank(dim, rank).to(device=device, dtype=dtype)
            head = nn.Linear(dim, 1).to(device=device, dtype=dtype)
            with torch.no_grad():
                head.weight.zero_()
                head.bias.fill_(HEAD_BIAS)
            optimizer = torch.optim.Adam(adapter.parameters(), lr=lr)
        return cls(NgramCache(), adapter, head, optimizer)


class _HiddenLM(CachedLM):
    """A ``CachedLM`` whose forward returns the last hidden states (the final norm's output), not logits."""

    def hidden(self, new_ids: list[int]) -> torch.Tensor:
        if self.cache is None:
            self.reset()
        ids = torch.tensor([new_ids], dtype=torch.long, device=self.device)
        out = self.model.model(input_ids=ids, past_key_values=self.cache, use_cache=True)
        self.ids.extend(new_ids)
        return out.last_hidden_state[0]


class OmniDraftDrafter(Drafter, LearnsFromTarget):
    name = "omnidraft"

    @dataclass
    class Options(ConfidenceOptions):
        draft_model: Annotated[str | None, ModelName] = None  # the draft model: a preset with any tokenizer
        fastdraft: bool = False  # draft with the FastDraft network trained for the draft model, not the model itself
        ngram_cache: bool = True  # merge runs of drafter tokens into one target token (the online n-gram cache)
        distill: bool = True  # online hybrid distillation of a low-rank adapter on the drafter's last hidden state
        distill_every: Annotated[int, Range(1, 64, 1)] = 8  # one distillation step per this many committed tokens
        lam: Annotated[float, Range(0.0, 1.0, 0.05)] = 0.5  # λ: weight of the direct KD term (1 − λ: n-gram term)
        lr: Annotated[float, Range(0.0001, 0.05, 0.0001)] = 0.001  # the adapter's learning rate (Adam)
        rank: Annotated[int, Range(1, 64, 1)] = 8  # the adapter's rank
        accept_stop: Annotated[float, Range(0.0, 0.95, 0.05)] = 0.3  # stop drafting when the acceptance head's
        # predicted chance that the whole draft is accepted falls below this (0: off)
        keep_learning: bool = False  # keep the cache, adapter and head for later runs of this pair (else reset)
        backoff: bool = True  # (ours) after a round the head expected to fail and that did, skip drafting for 1, 2,
        # 4 … 16 rounds (no drafter work at all), back to 0 after an accepted draft

        def __post_init__(self):
            super().__post_init__()
            if not 0.0 <= float(self.lam) <= 1.0:
                raise DraftScopeError(f"λ must be in [0, 1], got {self.lam}")
            if not 0.0 <= float(self.accept_stop) < 1.0:
                raise DraftScopeError(f"the acceptance stop must be in [0, 1), got {self.accept_stop}")
            for name in ("distill_every", "rank"):
                value = getattr(self, name)
                if isinstance(value, bool) or int(value) != value or value < 1:
                    raise DraftScopeError(f"{name} must be a positive whole number, got {value!r}")
            if not 0.0 < float(self.lr) <= 1.0:
                raise DraftScopeError(f"the learning rate must be in (0, 1], got {self.lr}")

    def __init__(self, target: LoadedModel, options=None, **kw):
        super().__init__(target, options, **kw)
        o = self.options
        if o.draft_model is None:
            raise DraftScopeError("the 'omnidraft' drafter needs a draft model (--draft-model PRESET), with any "
                                  "tokenizer")
        draft = o.draft_model if isinstance(o.draft_model, LoadedModel) else load_model(
            o.draft_model, device=target.device, dtype=target.dtype, allow_local=self.allow_local)
        net = draft.model
        if o.fastdraft:
            from core.specdec.drafters.fastdraft import default_checkpoint, load

            path = default_checkpoint(draft.name)
            if not path.is_file():
                raise DraftScopeError(f"there is no trained FastDraft drafter for '{draft.name}' (train one with "
                                      f"python -m core.train.fastdraft --target {draft.name}); drop --fastdraft")
            net, _ = load(path, draft)
        self.draft, self.net = draft, net
        key = ("vocab-map", draft.vocab_fingerprint())
        if key not in target._memo:
            target._memo[key] = VocabMap.between(draft, target)
        self.vmap: VocabMap = target._memo[key]
        if self.vmap.coverage < MIN_COVERAGE:
            raise DraftScopeError(
                f"'{draft.name}' and '{target.name}' have no usable token mapping: only "
                f"{self.vmap.coverage:.1%} of the drafter's tokens spell a target token (at least "
                f"{MIN_COVERAGE:.0%} needed)")
        self.can_distill = not has_sliding_layers(net)  # a re-fed window must roll back across rounds
        self.kv = _HiddenLM(net)
        self.n_prompt, self.prompt_ids = 0, []
        self.restart()  # the learned state and the per-run state

    # --------------------------------------------------------------------------------------------- learned state
    def _learned(self) -> Learned:
        """A fresh learned state, or (``keep_learning``) the one kept for this pair and these settings."""
        o = self.options
        param = next(self.net.parameters())
        make = lambda: Learned.fresh(self.net.config.hidden_size, int(o.rank), float(o.lr), param.device,  # noqa: E731
                                     param.dtype)
        if not o.keep_learning:
            return make()
        key = (self.draft.name, bool(o.fastdraft), self.target.name, int(o.rank), float(o.lr))
        if key not in _KEPT:
            _KEPT[key] = make()
        return _KEPT[key]

    def restart(self) -> None:
        super().restart()
        self.learned = self._learned()
        self.pending: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []  # (start, end, top ids, top p)
        self.round: dict | None = None  # the last draft: groups, drafter hidden states, head predictions
        self.cache_new: list = []  # the cache entries the last round added
        self.backoff = self.rest = 0  # the backoff's current length and the rounds it still skips

    # --------------------------------------------------------------------------------------------- text ↔ tokens
    def prefill(self, tokens: list[int]) -> None:
        """Everything committed so far becomes the drafter's fixed prompt, in its own tokens."""
        self.n_prompt = len(tokens)
        self.prompt_ids = encode_text(self.draft, decode_text(self.target, tokens), special=True)
        if not self.prompt_ids:
            self.prompt_ids = encode_text(self.draft, " ", special=True)
        limit = self.draft.max_context
        if len(self.prompt_ids) >= limit:
            raise DraftScopeError(f"the prompt is {len(self.prompt_ids)} tokens for the drafter '{self.draft.name}', "
                                  f"beyond its context ({limit} tokens); shorten the prompt")
        self.kv.reset()
        if len(self.prompt_ids) > 1:
            self.kv.hidden(self.prompt_ids[:-1])

    def _drafter_ids(self, tokens: list[int]) -> tuple[list[int], list[int]]:
        """(the drafter's whole context, its generated part): the generated text re-tokenised by the drafter."""
        generated = encode_text(self.draft, decode_text(self.target, tokens[self.n_prompt:]))
        return self.prompt_ids + generated, generated

    # --------------------------------------------------------------------------------------------- drafting
    def _logits(self, h_D: torch.Tensor) -> torch.Tensor:
        logits = self.net.lm_head(self.learned.adapter(h_D)).float()
        cap = getattr(self.net.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def propose(self, ctx: DraftContext) -> Draft:
        t0 = time.perf_counter()
        if self.rest > 0:  # backing off: the target decodes alone this round, the drafter does nothing
            self.rest -= 1
            return Draft([], info={"backoff": self.rest + 1})
        ids, generated = self._drafter_ids(ctx.tokens)
        learn = self._distill(ids, generated) if self._distill_due() else {}
        longest = min(2 * ctx.gamma + 2, self.draft.max_context - len(ids) - 1)
        feed = self.kv.sync(ids)
        h = self.kv.hidden(feed)[-1]
        o, head = self.options, self.learned.head
        drafted, q_sub, hs, chances, stop = [], [], [], [], ""
        groups, chance_all = [], 1.0
        while len(drafted) < longest:
            chance = float(torch.sigmoid(head(_unit(h).to(head.weight.dtype))))
            if drafted and o.accept_stop and chance_all * chance < o.accept_stop:
                stop = "acceptance head"
                break
            token, q_V, show_V = ctx.pick(self._logits(h))
            if ctx.unsure(show_V):
                stop = "confidence"
                break
            drafted.append(token)
            q_sub.append(float(show_V[token]) if ctx.sampling.greedy or ctx.greedy_draft else float(q_V[token]))
            hs.append(h)
            chances.append(round(chance, 4))
            chance_all *= chance
            groups, cut = translate(drafted, self.vmap, self.learned.cache if o.ngram_cache else None)
            if cut is not None:
                stop = "no mapping"
                break
            if len(groups) > ctx.gamma or (len(groups) == ctx.gamma and not (
                    o.ngram_cache and self.learned.cache.open_prefix(drafted))):
                stop = "γ"
                break
            if len(drafted) < longest:
                h = self.kv.hidden([token])[-1]
        groups = groups[: ctx.gamma]
        self.round = {"groups": groups, "hs": hs, "chances": chances}
        info = self._info(drafted, q_sub, chances, groups, stop, learn, time.perf_counter() - t0)
        return Draft([g.target for g in groups], info=info)

    def _info(self, drafted, q_sub, chances, groups, stop, learn, seconds) -> dict:
        """The round's facts for the record: the drafter's tokens, how they became target tokens, what was learned."""
        used = {i for g in groups for i in g.draft}
        q_prime = []
        for g in groups:
            q = 1.0
            for i in g.draft:
                q *= q_sub[i]
            q_prime.append(q)
        learned = self.learned
        return {"omnidraft": {
            "draft": [{"id": d, "text": self.draft.token_text(d), "q": round(q_sub[i], 5), "used": i in used,
                       "chance": chances[i]} for i, d in enumerate(drafted)],
            "groups": [{"kind": g.kind, "draft": g.draft, "target": g.target,
                        "text": self.target.token_text(g.target), "q": round(q, 6)}
                       for g, q in zip(groups, q_prime, strict=True)],
            "stop": stop, "cache_size": len(learned.cache),
            "cache_new": [[self.target.token_text(t), [self.draft.token_text(d) for d in run]]
                          for t, run in self.cache_new],
            "distill_steps": learned.distill_steps, "head_steps": learned.head_steps, **learn,
            "draft_ms": round(seconds * 1e3, 3)}}

    # --------------------------------------------------------------------------------------------- learning
    def learn(self, tokens: list[int], n_new: int, logits_nV: torch.Tensor, n_accepted: int) -> None:
        """After a round: grow the cache, train the acceptance head, and queue the target's distributions at the
        committed positions for the next distillation step."""
        new = tokens[len(tokens) - n_new:]
        o = self.options
        self.cache_new = self.learned.cache.learn(new, self.vmap, self.draft) if o.ngram_cache else []
        if self.round is not None and o.accept_stop:
            self._train_head(self.round, n_accepted)
        self._back_off(self.round, n_accepted)
        self.round = None
        if o.distill and self.can_distill and n_new:
            self._queue(tokens, n_new, logits_nV)

    def _back_off(self, round_: dict | None, n_accepted: int) -> None:
        """(ours) A round whose first token the head gave less than ``accept_stop`` and the target rejected makes the
        drafter sit out twice as many rounds as last time (1, 2, 4 … 16); an accepted draft ends the backoff."""
        o = self.options
        if round_ is None or not round_["groups"]:
            return
        if n_accepted > 0:
            self.backoff = 0
        elif o.backoff and o.accept_stop and round_["chances"][0] < o.accept_stop:
            self.backoff = min(max(1, 2 * self.backoff), MAX_BACKOFF)
            self.rest = self.backoff

    def _train_head(self, round_: dict, n_accepted: int) -> None:
        """One SGD step of the acceptance head: drafter tokens of accepted target tokens are 1, those of the first
        rejected one 0, later ones (never verified) and unused ones are left out."""
        rows, labels = [], []
        for gi, g in enumerate(round_["groups"]):
            if gi > n_accepted:
                break
            for i in g.draft:
                rows.append(round_["hs"][i])
                labels.append(1.0 if gi < n_accepted else 0.0)
        if not rows:
            return
        head = self.learned.head
        with torch.inference_mode(False), torch.enable_grad():
            x = _unit(torch.stack([r.detach().clone() for r in rows])).to(head.weight.dtype)
            y = torch.tensor(labels, dtype=head.weight.dtype, device=x.device)
            loss = nn.functional.binary_cross_entropy_with_logits(head(x)[:, 0], y)
            grads = torch.autograd.grad(loss, list(head.parameters()))
            with torch.no_grad():
                for p, g in zip(head.parameters(), grads, strict=True):
                    p.sub_(HEAD_LR * g)
        self.learned.head_steps += 1

    def _queue(self, tokens: list[int], n_new: int, logits_nV: torch.Tensor) -> None:
        """Remember each new committed token's character span in the generated text and the target's top tokens."""
        generated = tokens[self.n_prompt:]
        first = len(generated) - n_new
        end = len(decode_text(self.target, generated[:first]))
        probs = torch.softmax(logits_nV.float(), dim=-1)
        top_p, top_i = probs.topk(min(KD_TOP, probs.shape[-1]), dim=-1)
        for k in range(n_new):
            start, end = end, len(decode_text(self.target, generated[: first + k + 1]))
            if end > start:
                self.pending.append((start, end, top_i[k], top_p[k]))

    def _distill_due(self) -> bool:
        return bool(self.options.distill and self.can_distill and len(self.pending) >= self.options.distill_every)

    def _distill(self, ids: list[int], generated: list[int]) -> dict:
        """One hybrid distillation step on the queued positions: re-feed the drafter's window that spells them (its
        cache ends up as before), then one Adam step on λ · KD + (1 − λ) · n-gram NLL."""
        pending, self.pending = self.pending, []
        first_char = pending[0][0]
        ends: dict[int, int] = {}  # drafter generated index → character end of its text
        k = len(generated) - 1
        while k >= 0:
            ends[k] = len(decode_text(self.draft, generated[: k + 1]))
            if ends[k] <= first_char:
                break
            k -= 1
        if k < 0:
            ends[-1] = 0  # the generated text starts here
        window = sorted(i for i in ends if ends[i] > first_char and i - 1 in ends)
        if not window:
            return {}
        base = len(self.prompt_ids)
        start = base + window[0] - 1  # the position whose hidden state predicts the window's first token
        self.kv.rollback(min(len(self.kv), start))
        feed = self.kv.sync(ids)
        h_nD = self.kv.hidden(feed)
        offset = len(ids) - len(feed)  # h_nD row r is at position offset + r and predicts ids[offset + r + 1]
        spans = {(s, e): (ti, tp) for s, e, ti, tp in pending}
        bounds = set(ends.values())
        direct, ngram = [], []  # (row, drafter ids, their target probabilities) / (row, drafter token)
        for i in window:
            row = base + i - 1 - offset
            if not 0 <= row < h_nD.shape[0]:
                continue
            span = (ends[i - 1], ends[i])
            if span in spans:  # one drafter token spells this target token: KD on the directly mapped top tokens
                top_i, top_p = spans[span]
                ids_d = [self.vmap.to_draft.get(int(t), -1) for t in top_i]
                keep = [j for j, d in enumerate(ids_d) if d >= 0]
                if keep and float(top_p[keep].sum()) >= KD_MIN_MASS:
                    direct.append((row, [ids_d[j] for j in keep], top_p[keep] / top_p[keep].sum()))
                continue
            # a run of drafter tokens spells one target token (both ends are drafter boundaries): its sub-token NLL
            if any(a <= span[0] and span[1] <= b and a in bounds and b in bounds for a, b in spans):
                ngram.append((row, generated[i]))
        if not direct and not ngram:
            return {"distill_loss": None}
        return {"distill_loss": self._step(h_nD, direct, ngram)}

    def _step(self, h_nD: torch.Tensor, direct: list, ngram: list) -> float:
        lam = float(self.options.lam)
        learned = self.learned
        with torch.inference_mode(False), torch.enable_grad():
            h = h_nD.detach().clone()
            terms = []
            if direct:
                rows = torch.tensor([r for r, _, _ in direct])
                logq = torch.log_softmax(self._logits(h[rows]), dim=-1)
                kd = torch.stack([-(p.clone().to(device=logq.device, dtype=logq.dtype) * logq[j, d]).sum()
                                  for j, (_, d, p) in enumerate(direct)]).mean()
                terms.append((lam if ngram else 1.0) * kd)
            if ngram:
                rows = torch.tensor([r for r, _ in ngram])
                logq = torch.log_softmax(self._logits(h[rows]), dim=-1)
                nll = -logq[torch.arange(len(ngram)), torch.tensor([d for _, d in ngram])].mean()
                terms.append(((1.0 - lam) if direct else 1.0) * nll)
            loss = sum(terms)
            learned.optimizer.zero_grad()
            loss.backward()
            learned.optimizer.step()
        learned.distill_steps += 1
        return round(float(loss), 4)

    # --------------------------------------------------------------------------------------------- bookkeeping
    def observe(self, tokens: list[int], n_accepted: int) -> None:
        """Nothing to roll back now: the next round re-tokenises the committed text and syncs the cache."""

    @property
    def cache_len(self) -> int:
        return len(self.kv)

    @property
    def cost(self) -> float:
        return network_cost(self.net, self.target)
