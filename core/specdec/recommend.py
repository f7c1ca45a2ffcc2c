"""Recommend a drafter and its settings for a target, a workload and this machine, from measured acceptance and cost.

The model (README "Recommender"):
- Acceptance. Position i of a round (0 = the first draft) is accepted with probability a_i = c_i · p_i: c_i, the
  chance the drafter drafts position i at all once i − 1 was accepted (n-gram drafters often draft fewer than γ
  tokens), and p_i, the chance the target accepts it there. Both are Beta posteriors of run counts: p_i of
  accepted_at[i] accepted in reached[i] tries, c_i of reached[i] in accepted_at[i − 1] (the rounds, for i = 0) — every
  accepted and every rejected round is evidence. Pooling: a category's counts shrink towards the config's overall rate,
  the config's towards the drafter's other configs, those towards ½, with PRIOR pseudo-rounds at each level; where a
  level has no data the next more general one stands in.
- Tokens per round (bonus included): τ = Σ_{i=0..γ} Π_{j<i} a_j.
- Time per round: d·t_d + t_v(w) + t_o — d drafted tokens at t_d ms each, one target forward of w = d + 1 tokens
  (measured at the config's own width; for another γ moved along the target's verify curve) and t_o other time per
  round (bookkeeping, the prefill shared out). Plain decoding: t_plain ms per token (Hugging Face greedy, same run).
- Speedup = (τ / round ms) / (1 / t_plain).
- Uncertainty: DRAWS draws of every Beta posterior (acceptance), each times a log-normal cost factor whose spread is
  that of the measured plain-to-round time ratio across categories; the interval is the draws' 10–90 % range.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from core.errors import DraftScopeError
from core.runtime.records import Record

PRIOR = 2.0  # pseudo-rounds of each pooling level's prior
DRAWS = 200  # posterior draws behind an interval
INTERVAL = (10, 90)  # percentiles of the interval
RIGHT_WITHIN = 0.15  # a prediction within 15 % of the measured speedup counts as right (issue 20)
EXTRA_GAMMA = 2  # a chain config is extrapolated this far beyond its family's longest measured γ
EXTRAPOLATED_TRIALS = 8.0  # an unmeasured position borrows the last measured one's posterior, capped at this many
UNSAMPLED_TRIALS = 4.0  # greedy acceptance standing in for sampling: capped at this many trials per position
DEFAULT_COST_SPREAD = 0.05  # log-sd of the cost ratio when fewer than two categories measure it
COST_SPREAD_RANGE = (0.01, 0.5)
OVERALL = None  # the category key of a config's overall counts


def temperature_bucket(temperature: float) -> str:
    """Acceptance is pooled per temperature bucket: greedy, T ≤ 0.5, T ≤ 1, T > 1."""
    if temperature < 0:
        raise DraftScopeError(f"temperature must be ≥ 0, got {temperature}")
    if temperature == 0:
        return "greedy"
    return "T≤0.5" if temperature <= 0.5 else "T≤1" if temperature <= 1.0 else "T>1"


def expected_tau(acceptance) -> float:
    """Expected tokens per round, bonus included: τ = Σ_{i=0..γ} Π_{j<i} a_j for per-position acceptance a_0..a_{γ−1}
    (a_j: accepted at j given every earlier draft was)."""
    tau, reach = 1.0, 1.0
    for a in acceptance:
        reach *= a
        tau += reach
    return tau


@dataclass
class Tally(Record):
    """Counts and times of one config on one category and temperature bucket (a matrix block or observed runs)."""

    rounds: float = 0.0
    drafted: float = 0.0
    accepted: float = 0.0
    target_calls: float = 0.0
    tokens: float = 0.0
    seconds: float = 0.0  # wall time, prefill included
    draft_s: float = 0.0
    verify_s: float = 0.0
    reached: list[float] = field(default_factory=list)  # reached[i]: rounds whose position i was verified
    accepted_at: list[float] = field(default_factory=list)  # of those, accepted
    hf_ms_x_tokens: float = 0.0  # Σ plain ms per token · tokens (weights the plain reference by tokens)
    hf_tokens: float = 0.0
    timed: bool = False  # the times above are available
    runs: int = 0

    def add(self, other: Tally) -> None:
        for name in ("rounds", "drafted", "accepted", "target_calls", "tokens", "seconds", "draft_s", "verify_s",
                     "hf_ms_x_tokens", "hf_tokens", "runs"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reached = _add_lists(self.reached, other.reached)
        self.accepted_at = _add_lists(self.accepted_at, other.accepted_at)
        self.timed = self.timed or other.timed

    @property
    def plain_ms(self) -> float | None:
        return self.hf_ms_x_tokens / self.hf_tokens if self.hf_tokens else None

    @property
    def has_costs(self) -> bool:
        return self.timed and self.rounds > 0 and self.target_calls > 0 and self.seconds > 0

    def counts(self, i: int, depth: int) -> tuple[float, float, float, float]:
        """At position i: (accepted, verified) for p_i and (drafted there, reached i − 1 accepted) for c_i; zeros
        past ``depth`` (the config's γ: a chain of γ never drafts position γ, which is no evidence about it)."""
        if i >= depth:
            return 0.0, 0.0, 0.0, 0.0
        n = _at(self.reached, i)
        before = self.rounds if i == 0 else _at(self.accepted_at, i - 1)
        return _at(self.accepted_at, i), n, n, before


@dataclass
class ConfigInfo(Record):
    """A drafter configuration as the matrix names it."""

    name: str
    drafter: str
    options: dict = field(default_factory=dict)
    gamma: int = 1
    tree: str = ""

    @property
    def family(self) -> tuple[str, str, str]:
        """Configs of one family differ only in γ (chains; a tree is its own family)."""
        shape = f"{self.tree}@{self.gamma}" if self.tree else ""
        return self.drafter, json.dumps(self.options, sort_keys=True), shape

    @property
    def key(self) -> tuple:
        return (*self.family, self.gamma)


@dataclass
class Recommendation(Record):
    """One ranked setting: what to run, what it is predicted to give, and why."""

    config: str  # the matrix's config name, or "none" (plain decoding)
    drafter: str
    settings: dict  # SessionConfig fields: drafter, gamma, tree, temperature, drafter_options
    speedup: float  # predicted, over plain decoding (Hugging Face greedy on this machine)
    interval: list[float]  # 10–90 % of the posterior draws × cost spread
    tau: float  # expected tokens per round, bonus included
    alpha: float | None  # expected accepted / drafted
    acceptance: list[float] = field(default_factory=list)  # a_i per position (posterior means)
    costs: dict = field(default_factory=dict)  # ms: draft (per round), draft_per_token, verify, other, round, plain
    category: str | None = None
    evidence: str = ""  # the most specific counts used: "category" | "overall" | "family" ("definition": none)
    rounds: float = 0.0  # rounds of evidence behind the acceptance
    extrapolated: list[int] = field(default_factory=list)  # positions (1-based) with no measurement
    measured_speedup: float | None = None  # measured at exactly this setting and category, when it was
    reasons: list[str] = field(default_factory=list)


class Recommender:
    """Acceptance posteriors and costs per config, category and temperature bucket; learns from every run."""

    def __init__(self, target: str, machine: dict | str | None = None):
        self.target = target
        self.machine = machine
        self.categories: list[str] = []
        self.configs: dict[str, ConfigInfo] = {}
        self.tallies: dict[tuple[str, str | None, str], Tally] = {}
        self.verify_ms: list[float] | None = None  # target forward of k new tokens (k = 1, 2, …), when measured
        self.draft_ms: dict[str, float] = {}  # drafter → measured ms per drafted token (cost_model.measure)
        self.notes: list[str] = []  # what was missing from the inputs
        self._cache: dict = {}  # derived from the tallies (timed configs, cost spread); cleared when they change

    # ---- building -------------------------------------------------------------------------------------------------

    @classmethod
    def from_matrix(cls, matrix: dict, cost_models=None) -> Recommender:
        """Fit on a ``draftscope.matrix`` result; ``cost_models``: ``CostModel``s (or their dicts) of this target."""
        _check_matrix(matrix)
        rec = cls(matrix["target"], matrix.get("machine"))
        rec.add_matrix(matrix)
        for cm in cost_models or []:
            rec.add_cost_model(cm)
        return rec

    def add_matrix(self, matrix: dict) -> None:
        """Add a matrix's counts (another run of the same target)."""
        _check_matrix(matrix)
        self._check_target(matrix["target"], "the matrix")
        bucket = temperature_bucket(float(matrix.get("temperature", 0.0)))
        for c in matrix.get("categories") or []:
            self._add_category(c)
        for row in matrix["rows"]:
            if not isinstance(row, dict) or "config" not in row or "drafter" not in row:
                raise DraftScopeError("a matrix row needs at least 'config' and 'drafter'")
            info = self._config(ConfigInfo(str(row["config"]), str(row["drafter"]), dict(row.get("options") or {}),
                                           int(row.get("gamma") or 1), str(row.get("tree") or "")))
            if row.get("overall") is not None:
                self._tally(info.name, OVERALL, bucket).add(self._block(row["overall"], f"{info.name} overall"))
            for cat, block in (row.get("by_category") or {}).items():
                self._add_category(cat)
                self._tally(info.name, cat, bucket).add(self._block(block, f"{info.name} on {cat}"))

    def add_cost_model(self, cost_model) -> None:
        """Use a measured ``CostModel`` (``core.specdec.cost_model.measure``): its verify curve shapes t_v(w) for
        other γ; its draft ms stands in for configs of that drafter whose runs drafted nothing."""
        cm = cost_model.to_dict() if hasattr(cost_model, "to_dict") else dict(cost_model)
        self._check_target(cm.get("target", self.target), "the cost model")
        if cm.get("verify_ms"):
            self.verify_ms = [float(v) for v in cm["verify_ms"]]
        if cm.get("drafter") and cm.get("draft_ms") is not None:
            self.draft_ms[cm["drafter"]] = float(cm["draft_ms"])

    def observe(self, config_spec, category: str | None, stats_summary: dict,
                hf_ms_per_token: float | None = None) -> str:
        """Learn from one run: ``config_spec`` is a config name, a ``SessionConfig`` or a dict of its fields (drafter,
        gamma, tree, temperature, drafter_options); ``stats_summary`` is ``Stats.summary()``; ``hf_ms_per_token`` the
        plain reference measured beside it, if any. Returns the config's name (a new one if no row matches)."""
        info, temperature = self._spec(config_spec)
        required = ("rounds", "drafted", "accepted", "target_calls", "generated", "reached", "accepted_at",
                    "draft_s", "verify_s", "total_s")
        missing = [k for k in required if k not in (stats_summary or {})]
        if missing:
            raise DraftScopeError(f"a run's statistics need {', '.join(missing)} (Stats.summary())")
        s = stats_summary
        if not s["rounds"]:
            raise DraftScopeError("the run has no rounds yet: nothing to learn from")
        if hf_ms_per_token is not None and hf_ms_per_token <= 0:
            raise DraftScopeError(f"the plain ms per token must be > 0, got {hf_ms_per_token}")
        tally = Tally(rounds=s["rounds"], drafted=s["drafted"], accepted=s["accepted"], target_calls=s["target_calls"],
                      tokens=s["generated"], seconds=s["total_s"] + s.get("prefill_s", 0.0), draft_s=s["draft_s"],
                      verify_s=s["verify_s"], reached=list(s["reached"]), accepted_at=list(s["accepted_at"]),
                      timed=True, runs=1)
        if hf_ms_per_token:
            tally.hf_ms_x_tokens, tally.hf_tokens = hf_ms_per_token * s["generated"], float(s["generated"])
        bucket = temperature_bucket(temperature)
        self._tally(info.name, OVERALL, bucket).add(tally)
        if category is not None:
            self._add_category(category)
            self._tally(info.name, category, bucket).add(tally)
        return info.name

    # ---- prediction ------------------------------------------------------------------------------------------------

    def predict(self, config: str, category: str | None = None, gamma: int | None = None,
                temperature: float = 0.0) -> Recommendation:
        """The predicted speedup of ``config`` (at ``gamma``, default its own) on ``category`` (None: overall)."""
        if config not in self.configs:
            raise DraftScopeError(f"unknown config '{config}'; known: {', '.join(self.configs) or 'none'}")
        self._check_category(category)
        info = self.configs[config]
        gamma = info.gamma if gamma is None else int(gamma)
        if gamma < 1:
            raise DraftScopeError(f"gamma must be ≥ 1, got {gamma}")
        if info.tree and gamma != info.gamma:
            raise DraftScopeError(f"'{config}' is a tree: only its measured γ {info.gamma} can be predicted")
        source = self._source(info, gamma)
        return _Predictor(self, source, category, gamma, temperature).run()

    def recommend(self, category: str | None = None, temperature: float = 0.0, top: int = 3) -> list[Recommendation]:
        """The ``top`` settings, best first: each family's best γ, and plain decoding ("none") where it ranks — first
        when nothing is predicted to beat 1.0×. The first one's reasons say why the others lost."""
        self._check_category(category)
        if top < 1:
            raise DraftScopeError(f"top must be ≥ 1, got {top}")
        best: list[tuple[Recommendation, list[Recommendation]]] = []
        for family in dict.fromkeys(c.family for c in self.configs.values() if c.drafter != "none"):
            preds = [p for p in self._family_predictions(family, category, temperature) if p is not None]
            if preds:  # an extrapolated γ must beat the measured ones by over 1 %
                best.append((max(preds, key=lambda p: p.speedup * (0.99 if p.extrapolated else 1.0)), preds))
        if not best:
            raise DraftScopeError("no drafter config has timed runs to predict from")
        for rec, preds in best:
            _explain_gamma(rec, preds)
        ranked = sorted([r for r, _ in best], key=lambda r: -r.speedup)
        plain = self._plain(category, temperature, ranked[0])
        ranked = sorted([*ranked, plain], key=lambda r: (-r.speedup, r.config != "none"))  # a tie: plain first
        _explain_runners_up(ranked)
        return ranked[:top]

    # ---- persistence ----------------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"schema": "draftscope.recommender", "version": 1, "target": self.target, "machine": self.machine,
                "categories": self.categories, "configs": [c.to_dict() for c in self.configs.values()],
                "tallies": [{"config": k[0], "category": k[1], "bucket": k[2], **t.to_dict()}
                            for k, t in self.tallies.items()],
                "verify_ms": self.verify_ms, "draft_ms": self.draft_ms, "notes": self.notes}

    @classmethod
    def from_dict(cls, d: dict) -> Recommender:
        if not isinstance(d, dict) or d.get("schema") != "draftscope.recommender":
            raise DraftScopeError("not a saved DraftScope recommender (schema draftscope.recommender)")
        rec = cls(d["target"], d.get("machine"))
        rec.categories = list(d.get("categories") or [])
        for c in d.get("configs") or []:
            rec.configs[c["name"]] = ConfigInfo.from_dict(c)
        for t in d.get("tallies") or []:
            rec.tallies[(t["config"], t["category"], t["bucket"])] = Tally.from_dict(t)
        rec.verify_ms, rec.draft_ms, rec.notes = d.get("verify_ms"), dict(d.get("draft_ms") or {}), d.get("notes", [])
        return rec

    # ---- internals ------------------------------------------------------------------------------------------------

    def _check_target(self, target: str, what: str) -> None:
        if target != self.target:
            raise DraftScopeError(f"{what} is for target '{target}', this recommender for '{self.target}'")

    def _check_category(self, category: str | None) -> None:
        if category is not None and category not in self.categories:
            raise DraftScopeError(f"unknown category '{category}'; known: {', '.join(self.categories) or 'none'}")

    def _add_category(self, category: str) -> None:
        if category not in self.categories:
            self.categories.append(category)

    def _config(self, info: ConfigInfo) -> ConfigInfo:
        known = self.configs.get(info.name)
        if known is not None and known.key != info.key:
            raise DraftScopeError(f"two different configs are both named '{info.name}'")
        return self.configs.setdefault(info.name, info)

    def _tally(self, name: str, category: str | None, bucket: str) -> Tally:
        self._cache.clear()  # the caller adds to it
        return self.tallies.setdefault((name, category, bucket), Tally())

    def _cached(self, key: str, compute):
        if key not in self._cache:
            self._cache[key] = compute(self)
        return self._cache[key]

    def _block(self, block: dict, where: str) -> Tally:
        """A matrix block as a Tally; missing keys make their part unavailable (and a note says so)."""
        if not isinstance(block, dict):
            raise DraftScopeError(f"matrix block {where} is not a mapping")
        t = Tally(runs=1)
        absent = [k for k in ("rounds", "reached", "accepted_at") if block.get(k) is None]
        if not absent:
            t.rounds, t.reached, t.accepted_at = float(block["rounds"]), list(block["reached"]), \
                list(block["accepted_at"])
            t.drafted, t.accepted = float(block.get("drafted") or 0), float(block.get("accepted") or 0)
        timing = [k for k in ("rounds", "target_calls", "seconds", "draft_s", "verify_s") if block.get(k) is None]
        if not timing and (block.get("tokens") is not None or block.get("generated") is not None):
            t.rounds = float(block["rounds"])
            t.target_calls, t.seconds = float(block["target_calls"]), float(block["seconds"])
            t.draft_s, t.verify_s = float(block["draft_s"]), float(block["verify_s"])
            t.tokens = float(block["tokens"] if block.get("tokens") is not None else block["generated"])
            t.timed = True
        else:
            absent += timing or ["tokens"]
        hf = block.get("hf_tokens_per_second")
        if not hf and block.get("tokens_per_second") and block.get("speedup"):
            hf = block["tokens_per_second"] / block["speedup"]
        if hf:
            weight = t.tokens or 1.0
            t.hf_ms_x_tokens, t.hf_tokens = 1e3 / hf * weight, weight
        else:
            absent.append("hf_tokens_per_second")
        if absent:
            self.notes.append(f"{where}: {', '.join(dict.fromkeys(absent))} unavailable")
        return t

    def _spec(self, spec) -> tuple[ConfigInfo, float]:
        if isinstance(spec, str):
            if spec not in self.configs:
                raise DraftScopeError(f"unknown config '{spec}'; known: {', '.join(self.configs) or 'none'}")
            return self.configs[spec], 0.0
        d = spec if isinstance(spec, dict) else {k: getattr(spec, k) for k in
                                                 ("target", "drafter", "gamma", "tree", "temperature",
                                                  "drafter_options") if hasattr(spec, k)}
        if "drafter" not in d:
            raise DraftScopeError("a run's config needs at least its drafter")
        if d.get("target") is not None:
            self._check_target(d["target"], "the run")
        options = dict(d.get("drafter_options", d.get("options")) or {})
        gamma, tree = int(d.get("gamma") or 1), str(d.get("tree") or "")
        info = ConfigInfo("", d["drafter"], options, gamma, tree)
        known = next((c for c in self.configs.values() if c.key == info.key), None)
        if known is None:
            base = d.get("config") or f"{d['drafter']} g{gamma}" + (f" tree {tree}" if tree else "") + "".join(
                f" {k}={v}" for k, v in sorted(options.items()))
            info.name = next(n for n in (base, *(f"{base} #{i}" for i in range(2, 10_000))) if n not in self.configs)
            known = self._config(info)
        return known, float(d.get("temperature") or 0.0)

    def _source(self, info: ConfigInfo, gamma: int) -> ConfigInfo:
        """The measured config a setting is predicted from: γ itself, else the shortest longer one (truncated), else
        the longest (extrapolated)."""
        if info.gamma == gamma or info.tree:
            return info
        family = [c for c in self.configs.values() if c.family == info.family and self._has_data(c)]
        exact = [c for c in family if c.gamma == gamma]
        longer = sorted((c for c in family if c.gamma > gamma), key=lambda c: c.gamma)
        return (exact or longer or sorted(family, key=lambda c: -c.gamma) or [info])[0]

    def _has_data(self, info: ConfigInfo) -> bool:
        timed = self._cached("timed", lambda rec: {k[0] for k, t in rec.tallies.items() if t.has_costs})
        return info.name in timed

    def _family_predictions(self, family, category, temperature) -> list[Recommendation | None]:
        members = [c for c in self.configs.values() if c.family == family and self._has_data(c)]
        if not members:
            return []
        if members[0].tree:
            return [self._try(members[0], category, members[0].gamma, temperature)]
        top = max(c.gamma for c in members) + EXTRA_GAMMA
        by_gamma = {c.gamma: c for c in members}
        return [self._try(by_gamma.get(g, members[0]), category, g, temperature) for g in range(1, top + 1)]

    def _try(self, info, category, gamma, temperature) -> Recommendation | None:
        try:
            return _Predictor(self, self._source(info, gamma), category, gamma, temperature).run()
        except _Unavailable:
            return None

    def _plain(self, category, temperature, best: Recommendation) -> Recommendation:
        plain_ms = best.costs.get("plain")
        verdict = (f"no drafter is predicted to beat plain decoding {_on(category)}: the best, {best.config} γ "
                   f"{best.settings['gamma']}, predicts {best.speedup:.2f}× ({best.interval[0]:.2f}–"
                   f"{best.interval[1]:.2f})" if best.speedup <= 1.0 else
                   f"plain decoding: {_ms(plain_ms)} per token (Hugging Face greedy on this machine)")
        reasons = [verdict]
        if best.speedup <= 1.0:
            reasons.append(f"its τ {best.tau:.2f} is below its break-even τ {best.costs['round'] / plain_ms:.2f} "
                           f"({_ms(best.costs['round'])} per round / {_ms(plain_ms)} per plain token)")
        return Recommendation("none", "none", {"drafter": "none", "gamma": 1, "tree": "", "temperature": temperature,
                                               "drafter_options": {}},
                              1.0, [1.0, 1.0], 1.0, None, [], {"plain": plain_ms}, category, "definition", 0.0,
                              reasons=reasons)


class _Unavailable(DraftScopeError):
    """A config without the counts or times a prediction needs (it drops out of the ranking)."""


@dataclass
class _Beta:
    a: float
    b: float

    @property
    def mean(self) -> float:
        return self.a / (self.a + self.b)

    def capped(self, trials: float) -> _Beta:
        n = self.a + self.b
        return self if n <= trials else _Beta(self.a * trials / n, self.b * trials / n)


class _Predictor:
    """One prediction: the posterior of each position, the costs, the draws, the reasons."""

    def __init__(self, rec: Recommender, source: ConfigInfo, category: str | None, gamma: int, temperature: float):
        self.rec, self.source, self.category, self.gamma, self.temperature = rec, source, category, gamma, temperature
        self.bucket = temperature_bucket(temperature)
        self.spread = rec._cached("spread", _cost_spread)
        self.notes: list[str] = []

    def run(self) -> Recommendation:
        bucket, borrowed = self._bucket()
        p, c, evidence, rounds, extrapolated = self._posteriors(bucket, borrowed)
        costs = self._costs(bucket)
        mean_a = [pi.mean * ci.mean for pi, ci in zip(p, c)]
        tau = expected_tau(mean_a)
        speedup = tau * costs["plain"] / costs["round"]
        draws = self._draws(p, c, costs)
        lo, hi = (float(np.percentile(draws, q)) for q in INTERVAL)
        drafted = costs["drafted"]
        info = self.source
        out = Recommendation(
            config=info.name, drafter=info.drafter,
            settings={"drafter": info.drafter, "gamma": self.gamma, "tree": info.tree, "temperature": self.temperature,
                      "drafter_options": dict(info.options)},
            speedup=round(speedup, 4), interval=[round(min(lo, speedup), 4), round(max(hi, speedup), 4)],
            tau=round(tau, 4), alpha=round((tau - 1) / drafted, 4) if drafted else None,
            acceptance=[round(a, 4) for a in mean_a], costs={k: round(v, 4) for k, v in costs.items()},
            category=self.category, evidence=evidence, rounds=rounds, extrapolated=extrapolated,
            measured_speedup=self._measured(bucket))
        out.reasons = self._reasons(out, c, borrowed)
        return out

    # the counts

    def _bucket(self) -> tuple[str, str | None]:
        """The requested bucket when this config has counts there, else the one it has most of (greedy first)."""
        rec, name = self.rec, self.source.name
        have: dict[str, float] = {}
        for (n, _, bucket), t in rec.tallies.items():
            if n == name and t.rounds:
                have[bucket] = have.get(bucket, 0.0) + t.rounds
        if self.bucket in have:
            return self.bucket, None
        if not have:
            raise _Unavailable(f"'{name}' has no runs to predict from")
        other = "greedy" if "greedy" in have else max(have, key=have.get)
        return other, other

    def _levels(self, bucket: str) -> list[tuple[str, list[tuple[Tally, int]]]]:
        """Pooling levels from general to specific: (name, [(tally, depth)])."""
        rec, info = self.rec, self.source
        siblings = [c for c in rec.configs.values() if c.drafter == info.drafter and c.name != info.name
                    and bool(c.tree) == bool(info.tree)]
        family = []
        for s in siblings:
            t = rec.tallies.get((s.name, self.category, bucket)) or rec.tallies.get((s.name, OVERALL, bucket))
            if t is not None:
                family.append((t, _depth(s, t)))
        levels = [("family", family)]
        overall = rec.tallies.get((info.name, OVERALL, bucket))
        levels.append(("overall", [(overall, _depth(info, overall))] if overall else []))
        if self.category is not None:
            t = rec.tallies.get((info.name, self.category, bucket))
            levels.append(("category", [(t, _depth(info, t))] if t else []))
        return levels

    def _posteriors(self, bucket: str, borrowed: str | None):
        levels = self._levels(bucket)
        p, c, used, rounds, extrapolated = [], [], set(), 0.0, []
        for i in range(self.gamma):
            pi, p_level = _pooled(levels, i, accept=True)
            ci, c_level = _pooled(levels, i, accept=False)
            if ci is None and i == 0:
                raise _Unavailable(f"'{self.source.name}' has no acceptance counts {_on(self.category)}")
            if pi is None and i == 0:  # rounds but no draft ever verified: c_0 (measured) is what matters
                pi = _Beta(PRIOR / 2, PRIOR / 2)
                used.add(c_level)
                self.notes.append("no draft was ever verified here: position 1's acceptance is only the prior ½")
            elif pi is None:  # never verified here: the last measured position stands in, with less certainty
                extrapolated.append(i + 1)
                pi = p[-1].capped(EXTRAPOLATED_TRIALS)
                ci = ci or c[-1].capped(EXTRAPOLATED_TRIALS)
            else:
                used.add(p_level)
            if borrowed:
                pi, ci = pi.capped(UNSAMPLED_TRIALS), ci.capped(UNSAMPLED_TRIALS)
            p.append(pi)
            c.append(ci)
        for name, tallies in reversed(levels):
            if name in used:
                rounds = sum(t.rounds for t, _ in tallies)
                break
        evidence = next((name for name, _ in reversed(levels) if name in used), "none")
        return p, c, evidence, rounds, extrapolated

    # the costs

    def _cost_tally(self, bucket: str) -> Tally:
        rec, name = self.rec, self.source.name
        for key in ((name, self.category, bucket), (name, OVERALL, bucket), (name, self.category, "greedy"),
                    (name, OVERALL, "greedy")):
            t = rec.tallies.get(key)
            if t is not None and t.has_costs:
                return t
        raise _Unavailable(f"'{name}' has no timed runs {_on(self.category)}")

    def _plain_ms(self, t: Tally) -> float:
        if t.plain_ms:
            return t.plain_ms
        rec = self.rec
        for cat in (self.category, OVERALL):
            pooled = Tally()
            for (_, c, _), other in rec.tallies.items():
                if c == cat:
                    pooled.add(other)
            if pooled.plain_ms:
                self.notes.append("no plain reference beside this config's runs: the other configs' is used")
                return pooled.plain_ms
        raise _Unavailable("no plain (Hugging Face greedy) reference was measured")

    def _costs(self, bucket: str) -> dict:
        t, info = self._cost_tally(bucket), self.source
        per_round = t.rounds
        drafted_src = t.drafted / t.target_calls if t.target_calls else 0.0
        draft_tok = t.draft_s * 1e3 / t.drafted if t.drafted else self.rec.draft_ms.get(info.drafter, 0.0)
        verify = t.verify_s * 1e3 / t.target_calls
        other = max(0.0, (t.seconds - t.draft_s - t.verify_s) * 1e3 / per_round)
        drafted = drafted_src * self.gamma / info.gamma
        width_src, width = 1 + drafted_src, 1 + drafted
        if self.gamma != info.gamma:
            verify += self._verify_curve(width, t) - self._verify_curve(width_src, t)
        calls = t.target_calls / per_round
        round_ms = drafted * draft_tok + verify * calls + other
        return {"drafted": drafted, "draft_per_token": draft_tok, "draft": drafted * draft_tok, "verify": verify,
                "width": width, "other": other, "round": round_ms, "plain": self._plain_ms(t)}

    def _verify_curve(self, width: float, t: Tally) -> float:
        """t_v(w) up to a constant: the measured forward costs when given, else the slope fitted over the matrix's
        configs (width vs ms per target call), else the line from the plain step to this config's call."""
        vm = self.rec.verify_ms
        if vm:
            k = min(max(width, 1.0), float(len(vm)))
            lo = math.floor(k)
            base = vm[lo - 1] + (vm[min(lo, len(vm) - 1)] - vm[lo - 1]) * (k - lo)
            slope = (vm[-1] - vm[-2]) if len(vm) > 1 else 0.0
            return base + slope * max(0.0, width - len(vm))
        return _verify_slope(self.rec, t, self._plain_ms(t)) * width

    # the uncertainty

    def _draws(self, p: list[_Beta], c: list[_Beta], costs: dict) -> np.ndarray:
        rng = np.random.default_rng(0)
        a = np.stack([rng.beta(pi.a, pi.b, DRAWS) * rng.beta(ci.a, ci.b, DRAWS) for pi, ci in zip(p, c)], axis=1)
        tau = 1.0 + np.cumprod(a, axis=1).sum(axis=1)
        return tau * costs["plain"] / costs["round"] * np.exp(rng.normal(0.0, self.spread, DRAWS))

    def _measured(self, bucket: str) -> float | None:
        if self.gamma != self.source.gamma:
            return None
        t = self.rec.tallies.get((self.source.name, self.category, bucket))
        if t is None or not t.has_costs or not t.plain_ms:
            return None
        return round(t.tokens / t.seconds * t.plain_ms / 1e3, 4)

    # the words

    def _reasons(self, r: Recommendation, c: list[_Beta], borrowed: str | None) -> list[str]:
        k = r.costs
        where = _on(self.category)
        name = f"{r.config}" + (f" at γ {self.gamma}" if self.gamma != self.source.gamma else "")
        a = r.acceptance
        first, last = round(a[0], 2), round(a[-1], 2)
        trend = "" if len(a) == 1 else (f" {'falling to' if last < first else 'rising to' if last > first else 'and'}"
                                        f" {a[-1]:.2f} at position {len(a)}")
        source = {"category": f"{r.rounds:.0f} rounds {where}",
                  "overall": f"the config's {r.rounds:.0f} rounds over all categories (none {where})"
                  if self.category else f"{r.rounds:.0f} rounds",
                  "family": f"the {r.drafter} drafter's other configs ({r.rounds:.0f} rounds; this one has none)"}
        reasons = [f"{name}: acceptance {a[0]:.2f} at position 1{trend} {where}, from {source.get(r.evidence, '')}"]
        if c and c[0].mean < 0.95:
            reasons.append(f"it drafts at all in {c[0].mean:.0%} of rounds (else the round is one plain step)")
        if r.extrapolated:
            reasons.append(f"position{'s' * (len(r.extrapolated) > 1)} {_span(r.extrapolated)} never measured: "
                           f"extrapolated from position {r.extrapolated[0] - 1} with its certainty capped at "
                           f"{EXTRAPOLATED_TRIALS:.0f} rounds")
        reasons.append(f"each round drafts {k['drafted']:.1f} tokens ({_ms(k['draft_per_token'])} each, "
                       f"{_ms(k['draft'])}) and runs 1 target forward of {k['width']:.1f} tokens ({_ms(k['verify'])} "
                       f"vs {_ms(k['plain'])} per plain token)"
                       + (f", plus {_ms(k['other'])} other" if k["other"] >= 0.05 * k["round"] else ""))
        measured = f"; measured {r.measured_speedup:.2f}× at this setting" if r.measured_speedup else ""
        reasons.append(f"τ {r.tau:.2f} tokens per {_ms(k['round'])} round (break-even τ "
                       f"{k['round'] / k['plain']:.2f}): predicted {r.speedup:.2f}× ({r.interval[0]:.2f}–"
                       f"{r.interval[1]:.2f}){measured}")
        if r.interval[0] < 1.0 < r.speedup:
            reasons.append("its interval reaches below 1.0×: it may not pay on every run")
        if borrowed:
            reasons.append(f"no runs of this config at temperature {self.temperature:g} ({self.bucket}): acceptance "
                           f"is taken from its {borrowed} runs, which may differ from sampled acceptance, and its "
                           f"interval is widened (at most {UNSAMPLED_TRIALS:.0f} rounds of certainty per position); "
                           "costs and the plain reference are the greedy ones")
        reasons.append(f"interval: 10–90 % of {DRAWS} draws of the acceptance posteriors, each times a cost factor "
                       f"of ±{self.spread:.0%} (the measured cost ratio's spread across categories); "
                       "it does not cover changes in machine load")
        return reasons + self.notes


# ---- pooling, costs, explanations ----------------------------------------------------------------------------------


def _pooled(levels, i: int, accept: bool) -> tuple[_Beta | None, str | None]:
    """The Beta posterior at position i (p: accept=True; c: accept=False): each level's counts with the level above's
    posterior mean as a PRIOR-strength prior; the most specific level with counts wins."""
    mean, post, level = 0.5, None, None
    for name, tallies in levels:
        k = n = 0.0
        for t, depth in tallies:
            acc, tried, drafted, before = t.counts(i, depth)
            k, n = (k + acc, n + tried) if accept else (k + drafted, n + before)
        if n > 0:
            post, level = _Beta(k + PRIOR * mean, n - k + PRIOR * (1 - mean)), name
            mean = post.mean
    return post, level


def _depth(info: ConfigInfo, t: Tally) -> int:
    return len(t.reached) if info.tree else info.gamma


def _verify_slope(rec: Recommender, t: Tally, plain_ms: float) -> float:
    """ms per extra token in a target call: least squares over every config's (width, ms per call), else the line
    from the plain step (width 1) to this config's call."""
    points = [(1 + s.drafted / s.target_calls, s.verify_s * 1e3 / s.target_calls)
              for (_, cat, _), s in rec.tallies.items() if cat is OVERALL and s.has_costs]
    if len(points) >= 2:
        w, ms = np.array(points).T
        if np.ptp(w) >= 0.5:
            slope = float(np.polyfit(w, ms, 1)[0])
            if slope > 0:
                return slope
    width = 1 + t.drafted / t.target_calls
    return max(0.0, (t.verify_s * 1e3 / t.target_calls - plain_ms) / (width - 1)) if width > 1 else 0.0


def _cost_spread(rec: Recommender) -> float:
    """Log-sd of plain ms / round ms per token across categories, the median over configs."""
    spreads = []
    for name in rec.configs:
        ratios = []
        for (n, cat, _), t in rec.tallies.items():
            if n == name and cat is not OVERALL and t.has_costs and t.plain_ms:
                ratios.append(math.log(t.plain_ms * t.rounds / (t.seconds * 1e3)))  # plain ms / round ms
        if len(ratios) >= 2:
            spreads.append(float(np.std(ratios)))
    if not spreads:
        return DEFAULT_COST_SPREAD
    return min(max(float(np.median(spreads)), COST_SPREAD_RANGE[0]), COST_SPREAD_RANGE[1])


def _explain_gamma(best: Recommendation, preds: list[Recommendation]) -> None:
    g = best.settings["gamma"]
    near = [p for p in preds if abs(p.settings["gamma"] - g) == 1]
    if near:
        best.reasons.append(f"γ {g} beats " + " and ".join(
            f"γ {p.settings['gamma']} ({p.speedup:.2f}×{', extrapolated' if p.extrapolated else ''})" for p in near))


def _explain_runners_up(ranked: list[Recommendation]) -> None:
    """The winner's reasons end with why each runner-up lost (acceptance or cost, whichever weighs more)."""
    win = ranked[0]
    for other in ranked[1:]:
        if other.config == "none" or win.config == "none":
            continue
        why = []
        acc = math.log(win.tau / other.tau)
        cost = math.log(other.costs["round"] / win.costs["round"])
        if acc > 0:
            why.append(f"lower acceptance (τ {other.tau:.2f} vs {win.tau:.2f})")
        if cost > 0:
            why.append(f"costlier rounds ({_ms(other.costs['round'])} vs {_ms(win.costs['round'])})")
        if acc > 0 > cost:
            why.append(f"despite cheaper rounds ({_ms(other.costs['round'])})")
        if cost > 0 > acc:
            why.append(f"despite higher τ {other.tau:.2f}")
        win.reasons.append(f"beats {other.config} γ {other.settings['gamma']} ({other.speedup:.2f}×): "
                           + ", ".join(why or ["a tie within rounding"]))


def _on(category: str | None) -> str:
    return f"on {category}" if category else "over all categories"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms" if value >= 0.95 else f"{value:.2f} ms"


def _span(positions: list[int]) -> str:
    return str(positions[0]) if len(positions) == 1 else f"{positions[0]}–{positions[-1]}"


def _at(values: list, i: int) -> float:
    return float(values[i]) if i < len(values) else 0.0


def _add_lists(a: list, b: list) -> list:
    n = max(len(a), len(b))
    return [_at(a, i) + _at(b, i) for i in range(n)]


def _check_matrix(matrix) -> None:
    from core.specdec.matrix import validate_matrix  # the matrix's own check (a late import: torch and the engine)

    validate_matrix(matrix)
    if not matrix.get("target"):
        raise DraftScopeError("the matrix names no target")
    if not matrix.get("rows"):
        raise DraftScopeError("the matrix has no rows: run the matrix first")


# ---- accuracy on held-out runs -------------------------------------------------------------------------------------


def holdout_accuracy(matrix_a: dict, matrix_b: dict, temperature: float = 0.0, cost_models=None) -> dict:
    """Fit on ``matrix_a``; predict every config × category (and overall) that ``matrix_b`` measured, at its γ; compare
    with ``matrix_b``'s measured speedups. A prediction within 15 % of the measurement counts as right. Per category,
    also whether the top prediction (plain decoding included at 1.0×) was the measured best, and its regret (measured
    best − measured speedup of the pick)."""
    rec = Recommender.from_matrix(matrix_a, cost_models)
    _check_matrix(matrix_b)
    rec._check_target(matrix_b["target"], "the held-out matrix")
    rows, skipped = [], []
    for row in matrix_b["rows"]:
        if row.get("drafter") == "none":
            continue
        key = ConfigInfo("", str(row["drafter"]), dict(row.get("options") or {}), int(row.get("gamma") or 1),
                         str(row.get("tree") or "")).key
        same = rec.configs.get(str(row["config"]))
        name = same.name if same is not None and same.key == key else next(
            (c.name for c in rec.configs.values() if c.key == key), None)
        if name is None:
            skipped.append(f"{row['config']}: not in the fitting matrix")
            continue
        blocks = [(None, row.get("overall"))] + list((row.get("by_category") or {}).items())
        for cat, block in blocks:
            measured = _measured_speedup(block)
            if measured is None:
                skipped.append(f"{row['config']} {_on(cat)}: no measured speedup")
                continue
            if cat is not None and cat not in rec.categories:
                skipped.append(f"{row['config']} {_on(cat)}: category not in the fitting matrix")
                continue
            try:
                p = rec.predict(name, cat, temperature=temperature)
            except (DraftScopeError, _Unavailable):
                skipped.append(f"{row['config']} {_on(cat)}: nothing to predict from")
                continue
            error = (p.speedup - measured) / measured
            rows.append({"config": row["config"], "category": cat or "overall", "predicted": p.speedup,
                         "interval": p.interval, "measured": measured, "error_pct": round(100 * error, 2),
                         "within": abs(error) <= RIGHT_WITHIN,
                         "covered": p.interval[0] <= measured <= p.interval[1]})
    if not rows:
        raise DraftScopeError("the two matrices share no config and category to compare")
    top, right = _top_picks(rows), sum(r["within"] for r in rows)
    return {"target": rec.target, "n": len(rows), "right_within": RIGHT_WITHIN,
            "within": right, "share_within": round(right / len(rows), 4),
            "mape_pct": round(sum(abs(r["error_pct"]) for r in rows) / len(rows), 2),
            "interval_coverage": round(sum(r["covered"] for r in rows) / len(rows), 4),
            "top": top, "top_is_best_share": round(sum(t["top_is_best"] for t in top.values()) / len(top), 4),
            "mean_regret": round(sum(t["regret"] for t in top.values()) / len(top), 4),
            "rows": rows, "skipped": skipped}


def holdout_halves(matrix: dict, temperature: float = 0.0) -> dict:
    """Held-out accuracy from one matrix run: each category's prompts split in two halves (alternating, in the
    matrix's order), fit on one half and measured on the other, then the other way round; the two answers pooled
    (``holdout_accuracy``'s keys; ``folds`` holds each direction's own answer)."""
    from core.specdec.matrix import select_prompts

    _check_matrix(matrix)
    by_category: dict[str, list[str]] = {}
    for row in matrix["rows"][:1]:
        for r in row.get("per_prompt") or []:
            by_category.setdefault(r["category"], []).append(str(r["id"]))
    halves = [[ids[i] for ids in by_category.values() for i in range(part, len(ids), 2)] for part in (0, 1)]
    if not all(halves):
        raise DraftScopeError("a held-out check needs at least two prompts in a category, with per-prompt results "
                              "(bench --matrix --per-category 2 or more)")
    a, b = (select_prompts(matrix, ids) for ids in halves)
    folds = [holdout_accuracy(a, b, temperature), holdout_accuracy(b, a, temperature)]
    rows = [r for f in folds for r in f["rows"]]
    top = [t for f in folds for t in f["top"].values()]
    right = sum(r["within"] for r in rows)
    return {"target": folds[0]["target"], "n": len(rows), "right_within": RIGHT_WITHIN, "within": right,
            "share_within": round(right / len(rows), 4),
            "mape_pct": round(sum(abs(r["error_pct"]) for r in rows) / len(rows), 2),
            "interval_coverage": round(sum(r["covered"] for r in rows) / len(rows), 4),
            "top_is_best_share": round(sum(t["top_is_best"] for t in top) / len(top), 4),
            "mean_regret": round(sum(t["regret"] for t in top) / len(top), 4),
            "halves": halves, "rows": rows, "folds": folds}


def _measured_speedup(block) -> float | None:
    if not isinstance(block, dict):
        return None
    if block.get("speedup"):
        return float(block["speedup"])
    if block.get("tokens_per_second") and block.get("hf_tokens_per_second"):
        return block["tokens_per_second"] / block["hf_tokens_per_second"]
    return None


def _top_picks(rows: list[dict]) -> dict:
    out = {}
    for cat in dict.fromkeys(r["category"] for r in rows):
        here = [r for r in rows if r["category"] == cat]
        none = {"config": "none", "predicted": 1.0, "measured": 1.0}
        pick = max([*here, none], key=lambda r: r["predicted"])
        best = max([*here, none], key=lambda r: r["measured"])
        out[cat] = {"recommended": pick["config"], "predicted": pick["predicted"], "measured": pick["measured"],
                    "best": best["config"], "best_measured": best["measured"],
                    "top_is_best": pick["config"] == best["config"],
                    "regret": round(best["measured"] - pick["measured"], 4)}
    return out
