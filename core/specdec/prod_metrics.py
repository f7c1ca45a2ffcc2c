"""Speculative-decoding counters from a serving engine's Prometheus ``/metrics`` dump, as acceptance profiles that
compare with DraftScope's own offline measurement.

What each engine exports (read from their sources; see the README's "Production metrics" section):

- vLLM (``vllm/v1/spec_decode/metrics.py``): counters ``vllm:spec_decode_num_drafts``, ``…_num_draft_tokens``,
  ``…_num_accepted_tokens`` and ``…_num_accepted_tokens_per_pos`` (label ``position``, 0-based), each ``_total`` in
  the exposition, labelled ``model_name`` and ``engine`` (one label set per data-parallel engine).
- llama.cpp server (``tools/server``, ``--metrics``): the same four counters under ``llamacpp:``, without labels
  (``position`` on the per-position one, which is absent until a speculative request has finished).
- SGLang (``python/sglang/srt/metrics/collector.py``): only two gauges, ``sglang:spec_accept_length`` (accepted
  draft tokens + 1 per verification step, averaged over the last decode log interval) and ``sglang:spec_accept_rate``
  (accepted / drafted tokens over that interval). No counts and nothing per position.

Two per-position conventions (both are kept; see ``AcceptanceProfile``):

- conditional (EAGLE / Spec-Bench, ``Stats.per_position_acceptance``): accepted at i / rounds that reached i, i.e.
  whose positions < i were all accepted;
- unconditional (vLLM, llama.cpp): accepted at i / number of drafts.

With fixed-length drafts they convert exactly: reached(0) = drafts, reached(i) = accepted(i − 1). With drafts of
varying length (n-gram, llama.cpp's ``--draft-min``/``--draft-p-min``) accepted(i − 1) only bounds reached(i) from
above, so the conditional rates derived from engine counters are lower bounds there.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from itertools import pairwise
from pathlib import Path

from core import ASSETS_DIR
from core.errors import DraftScopeError

MAX_DUMP_BYTES = 4 * 1024 * 1024  # a busy vLLM server's /metrics is ~100 KiB; this leaves room without risking memory
MAX_POSITIONS = 256  # draft positions per profile (vLLM's num_speculative_tokens is a handful)
MAX_PROFILES = 64  # label sets per dump
ENGINES = ("vllm", "sglang", "llamacpp")
ENGINE_NAMES = {"vllm": "vLLM", "sglang": "SGLang", "llamacpp": "llama.cpp", "draftscope": "DraftScope"}
PREFIXES = {"vllm": "vllm:", "sglang": "sglang:", "llamacpp": "llamacpp:"}
# the counters vLLM and llama.cpp share (family names, i.e. without the exposition's _total)
DRAFTS, DRAFT_TOKENS, ACCEPTED, PER_POS = ("spec_decode_num_drafts", "spec_decode_num_draft_tokens",
                                           "spec_decode_num_accepted_tokens", "spec_decode_num_accepted_tokens_per_pos")
SGLANG_LENGTH, SGLANG_RATE = "spec_accept_length", "spec_accept_rate"
COUNTERS = (DRAFTS, DRAFT_TOKENS, ACCEPTED, PER_POS)
SPEC_FAMILIES = {"vllm": COUNTERS, "llamacpp": COUNTERS, "sglang": (SGLANG_LENGTH, SGLANG_RATE)}
STATS_KEYS = ("rounds", "drafted", "accepted", "reached", "accepted_at", "target_calls", "generated")
BENCH_DIR = ASSETS_DIR / "bench"


@dataclass
class AcceptanceProfile:
    """One measurement of a drafter / target pairing's acceptance, from an engine's counters or DraftScope's run.

    ``accepted_per_pos[i]`` counts drafts whose position i (0-based) was accepted (vLLM's numerator; positions < i
    were accepted too). ``reached_per_pos[i]`` counts rounds that verified position i; only DraftScope measures it,
    engines leave it None and it is derived (see ``reached``). ``mean_acceptance_length`` is an engine's reported
    value where it reports no counts (SGLang); otherwise the property ``mean_length`` derives it from the counts."""

    label: str
    source: str  # "vllm" | "sglang" | "llamacpp" | "draftscope"
    drafts: int | None = None  # verification steps that carried at least one draft token
    draft_tokens: int | None = None
    accepted_tokens: int | None = None
    accepted_per_pos: list[int] = field(default_factory=list)
    reached_per_pos: list[int] | None = None
    mean_acceptance_length: float | None = None  # as reported (SGLang), bonus token included
    reported_alpha: float | None = None  # as reported (SGLang's spec_accept_rate)
    tau: float | None = None  # DraftScope: tokens committed per target call, every round included
    labels: dict[str, str] = field(default_factory=dict)  # the engine's label set
    notes: list[str] = field(default_factory=list)

    # -------------------------------------------------------------------------------------------- derived values
    @property
    def alpha(self) -> float | None:
        """α = accepted tokens / draft tokens (SGLang: its reported rate)."""
        if self.draft_tokens:
            return self.accepted_tokens / self.draft_tokens
        return self.reported_alpha

    @property
    def mean_length(self) -> float | None:
        """Mean acceptance length, bonus token included: 1 + accepted / drafts (vLLM's definition)."""
        if self.drafts:
            return 1.0 + self.accepted_tokens / self.drafts
        return self.mean_acceptance_length

    @property
    def reached_derived(self) -> bool:
        """True when ``reached`` is derived from the counts (exact only for fixed-length drafts)."""
        return self.reached_per_pos is None

    @property
    def reached(self) -> list[int]:
        """Rounds that reached each position: measured, or reached(0) = drafts, reached(i) = accepted(i − 1)."""
        if self.reached_per_pos is not None:
            return list(self.reached_per_pos)
        if not self.accepted_per_pos or not self.drafts:
            return []
        return [self.drafts, *self.accepted_per_pos[:-1]]

    @property
    def conditional(self) -> list[float | None]:
        """P(accept at i | positions < i accepted): accepted(i) / reached(i) (None where nothing reached i)."""
        return [a / r if r else None for a, r in zip(self.accepted_per_pos, self.reached)]

    @property
    def unconditional(self) -> list[float]:
        """Accepted at i / drafts (vLLM's per-position acceptance rate)."""
        if not self.drafts:
            return []
        return [a / self.drafts for a in self.accepted_per_pos]

    def to_dict(self) -> dict:
        """JSON-friendly: the fields plus the derived values (what the visualizers and the app pass around)."""
        return {**asdict(self), "alpha": self.alpha, "mean_length": self.mean_length, "reached": self.reached,
                "reached_derived": self.reached_derived, "conditional": self.conditional,
                "unconditional": self.unconditional}

    @classmethod
    def from_dict(cls, data: dict) -> AcceptanceProfile:
        """The inverse of ``to_dict`` (derived keys are recomputed, not trusted)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def as_profile(profile: AcceptanceProfile | dict) -> AcceptanceProfile:
    return profile if isinstance(profile, AcceptanceProfile) else AcceptanceProfile.from_dict(profile)


# ------------------------------------------------------------------------------------------------ parsing a dump
def parse_metrics(text: str | bytes, engine: str = "auto", sum_engines: bool = False) -> list[AcceptanceProfile]:
    """The speculative-decoding profiles in a Prometheus text dump: one per label set (e.g. per ``model_name`` and
    vLLM ``engine``), for ``engine`` ("auto" finds every engine whose counters are there). ``sum_engines`` adds up
    vLLM's data-parallel engines (label ``engine``) of the same model into one profile. Raises one DraftScopeError
    for anything that is not a complete, consistent dump."""
    if engine not in ("auto", *ENGINES):
        raise DraftScopeError(f"unknown engine {engine!r}: pick auto, {', '.join(ENGINES)}")
    families = _families(_text(text))
    present = {e for e in ENGINES if any(_base(f.name, e) in SPEC_FAMILIES[e] for f in families)}
    wanted = sorted(present) if engine == "auto" else [engine] if engine in present else []
    if not wanted:
        names = sorted({f.name for f in families if not f.name.endswith("_created")})
        shown = ", ".join(names[:6]) + (f" … ({len(names)} families)" if len(names) > 6 else "")
        whose = "" if engine == "auto" else f"{ENGINE_NAMES[engine]} "
        raise DraftScopeError(f"this dump has no {whose}speculative-decoding counters; found: {shown}")
    profiles = []
    for name in wanted:
        picked = [f for f in families if _base(f.name, name) is not None]
        profiles += _sglang(picked) if name == "sglang" else _counters(picked, name, sum_engines)
    if len(profiles) > MAX_PROFILES:
        raise DraftScopeError(f"the dump has {len(profiles)} label sets with speculative counters; the limit is "
                              f"{MAX_PROFILES}")
    return profiles


def _text(text: str | bytes) -> str:
    if isinstance(text, bytes):
        if len(text) > MAX_DUMP_BYTES:
            raise DraftScopeError(f"the dump is {_mib(len(text))}; the limit is {_mib(MAX_DUMP_BYTES)}")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DraftScopeError("the dump is not UTF-8 text: upload the text of GET /metrics") from exc
    if not isinstance(text, str):
        raise DraftScopeError("the dump must be text")
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_DUMP_BYTES:
        raise DraftScopeError(f"the dump is {_mib(size)}; the limit is {_mib(MAX_DUMP_BYTES)}")
    if not text.strip():
        raise DraftScopeError("the metrics dump is empty: paste the text of GET /metrics, or upload it")
    return text


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB"


def _families(text: str) -> list:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        families = list(text_string_to_metric_families(text))
    except Exception as exc:  # the parser raises ValueError, and others on some malformed lines
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise DraftScopeError(f"this is not Prometheus text format (GET /metrics): {detail}") from exc
    if not any(f.samples for f in families):
        raise DraftScopeError("the dump holds no metric samples: paste the text of GET /metrics, or upload it")
    return families


def _base(name: str, engine: str) -> str | None:
    """A family's name without the engine prefix and a _total suffix (untyped dumps keep it), or None."""
    prefix = PREFIXES[engine]
    if not name.startswith(prefix):
        return None
    base = name[len(prefix):]
    return base[:-len("_total")] if base.endswith("_total") else base


def _value(sample, what: str) -> float:
    value = float(sample.value)
    if not math.isfinite(value):
        raise DraftScopeError(f"{what} is {value}, not a number")
    return value


def _count(sample, what: str) -> int:
    value = _value(sample, what)
    if value < 0 or value != int(value):
        raise DraftScopeError(f"{what} is {value:g}: a counter of tokens or drafts must be a whole number ≥ 0")
    return int(value)


def _counters(families: list, engine: str, sum_engines: bool) -> list[AcceptanceProfile]:
    """vLLM / llama.cpp: the four counters per label set (``position`` split off the per-position one)."""
    groups: dict[tuple, dict] = {}
    for family in families:
        base = _base(family.name, engine)
        if base not in SPEC_FAMILIES[engine]:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = dict(sample.labels)
            position = labels.pop("position", None)
            what = f"{sample.name}{_label_text(sample.labels)}"
            group = groups.setdefault(_key(labels), {"labels": labels, "pos": {}})
            if base == PER_POS:
                group["pos"][_position(position, what)] = _count(sample, what)
            else:
                group[base] = _count(sample, what)
    if sum_engines:
        groups = _sum_engines(groups)
    profiles = [_counter_profile(engine, g) for g in groups.values()]
    active = [p for p in profiles if p.drafts]
    if not active:  # llama.cpp exports the counters at 0 when speculative decoding is off
        raise DraftScopeError(f"the {ENGINE_NAMES[engine]} speculative-decoding counters are all 0: speculative "
                              "decoding is off, or no request has used it since the server started")
    return active


def _key(labels: dict) -> tuple:
    return tuple(sorted(labels.items()))


def _label_text(labels: dict) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""


def _position(value: str | None, what: str) -> int:
    try:
        position = int(value)
    except (TypeError, ValueError):
        raise DraftScopeError(f"{what} has no whole-number position label") from None
    if not 0 <= position < MAX_POSITIONS:
        raise DraftScopeError(f"{what}: position {position} is outside 0–{MAX_POSITIONS - 1}")
    return position


def _sum_engines(groups: dict[tuple, dict]) -> dict[tuple, dict]:
    """Label sets that differ only in vLLM's ``engine`` label, added up (per-position counts position by position)."""
    summed: dict[tuple, dict] = {}
    for group in groups.values():
        labels = {k: v for k, v in group["labels"].items() if k != "engine"}
        engines = [group["labels"]["engine"]] if "engine" in group["labels"] else []
        into = summed.setdefault(_key(labels), {"labels": labels, "pos": {}, "engines": []})
        into["engines"] += engines
        for name in (DRAFTS, DRAFT_TOKENS, ACCEPTED):
            if name in group:
                into[name] = into.get(name, 0) + group[name]
            else:
                into.setdefault("missing", set()).add(name)
        for position, count in group["pos"].items():
            into["pos"][position] = into["pos"].get(position, 0) + count
    for into in summed.values():
        for name in into.pop("missing", ()):
            into.pop(name, None)  # one engine without it: the sum is not complete either
    return summed


def _counter_profile(engine: str, group: dict) -> AcceptanceProfile:
    labels, where = group["labels"], _label_text(group["labels"]) or " (no labels)"
    missing = [PREFIXES[engine] + n + "_total" for n in (DRAFTS, DRAFT_TOKENS, ACCEPTED) if n not in group]
    if missing:
        raise DraftScopeError(f"the {ENGINE_NAMES[engine]} counters are incomplete for {where}: no "
                              f"{', '.join(missing)}")
    drafts, draft_tokens, accepted = group[DRAFTS], group[DRAFT_TOKENS], group[ACCEPTED]
    positions = sorted(group["pos"])
    if positions and positions != list(range(len(positions))):
        raise DraftScopeError(f"the per-position counters for {where} skip positions: {positions}")
    per_pos = [group["pos"][i] for i in positions]
    _check_counts(drafts, draft_tokens, accepted, per_pos, where)
    notes = []
    if not per_pos:
        notes.append("no per-position counters in this dump (llama.cpp adds them after the first speculative request "
                     "finishes): per-position acceptance is not available")
    elif drafts and draft_tokens != drafts * len(per_pos):
        notes.append(f"drafts average {draft_tokens / drafts:.2f} tokens, not a fixed {len(per_pos)}: reached(i) = "
                     "accepted(i − 1) is an upper bound, so the conditional rates are lower bounds")
    if group.get("engines"):
        notes.append(f"summed over engines {', '.join(sorted(group['engines']))}")
    return AcceptanceProfile(label=_label(engine, labels, group.get("engines")), source=engine, drafts=drafts,
                             draft_tokens=draft_tokens, accepted_tokens=accepted, accepted_per_pos=per_pos,
                             labels=labels, notes=notes)


def _check_counts(drafts: int, draft_tokens: int, accepted: int, per_pos: list[int], where: str) -> None:
    """The invariants of the counters (each draft has ≥ 1 token, acceptance is a prefix of the draft)."""
    if accepted > draft_tokens:
        raise DraftScopeError(f"inconsistent counts for {where}: {accepted:,} accepted tokens but only "
                              f"{draft_tokens:,} draft tokens")
    if drafts > draft_tokens:
        raise DraftScopeError(f"inconsistent counts for {where}: {drafts:,} drafts but only {draft_tokens:,} draft "
                              "tokens (a draft has at least one)")
    if draft_tokens and not drafts:
        raise DraftScopeError(f"inconsistent counts for {where}: {draft_tokens:,} draft tokens in 0 drafts")
    if not per_pos:
        return
    if sum(per_pos) != accepted:
        raise DraftScopeError(f"inconsistent counts for {where}: the per-position counts add up to {sum(per_pos):,}, "
                              f"the accepted tokens are {accepted:,}")
    if per_pos[0] > drafts or any(b > a for a, b in pairwise(per_pos)):
        raise DraftScopeError(f"inconsistent counts for {where}: accepted per position {per_pos} must not grow with "
                              f"the position nor exceed the {drafts:,} drafts")


def _label(engine: str, labels: dict, engines: list | None = None) -> str:
    model = labels.get("model_name")
    parts = [ENGINE_NAMES[engine]] + ([model] if model else [])
    extra = {k: v for k, v in labels.items() if k != "model_name"}
    if "engine" in extra:
        parts.append(f"engine {extra.pop('engine')}")
    elif engines and len(engines) > 1:
        parts.append(f"{len(engines)} engines")
    if engine == "sglang":  # the scheduler's rank labels: only worth showing when they tell label sets apart
        extra = {k: v for k, v in extra.items() if not (k.endswith("_rank") and v == "0") and k != "engine_type"}
    parts += [f"{k}={v}" for k, v in sorted(extra.items())]
    return " · ".join(parts)


def _sglang(families: list) -> list[AcceptanceProfile]:
    """SGLang: the two gauges per label set; nothing per position and no counts exist to derive it from."""
    groups: dict[tuple, dict] = {}
    for family in families:
        base = _base(family.name, "sglang")
        if base not in SPEC_FAMILIES["sglang"]:
            continue
        for sample in family.samples:
            labels = dict(sample.labels)
            what = f"{sample.name}{_label_text(labels)}"
            groups.setdefault(_key(labels), {"labels": labels})[base] = _value(sample, what)
    profiles = []
    for group in groups.values():
        where = _label_text(group["labels"]) or " (no labels)"
        length, rate = group.get(SGLANG_LENGTH), group.get(SGLANG_RATE)
        if length is not None and length != 0 and length < 1:
            raise DraftScopeError(f"sglang:spec_accept_length{where} is {length:g}: an acceptance length counts the "
                                  "bonus token, so it is at least 1")
        if rate is not None and not 0 <= rate <= 1:
            raise DraftScopeError(f"sglang:spec_accept_rate{where} is {rate:g}, not a rate between 0 and 1")
        if not length:  # SGLang's gauges start at 0 and stay there without speculative decode batches
            continue
        notes = ["SGLang exports only the mean acceptance length and the acceptance rate, averaged over its last "
                 "decode log interval: no counts, so per-position acceptance is not available from this engine"]
        if rate:
            notes.append(f"implied draft tokens per verification step: (length − 1) / rate = {(length - 1) / rate:.2f}")
        profiles.append(AcceptanceProfile(label=_label("sglang", group["labels"]), source="sglang",
                                          mean_acceptance_length=length, reported_alpha=rate,
                                          labels=group["labels"], notes=notes))
    if not profiles:
        raise DraftScopeError("the SGLang speculative gauges read 0: speculative decoding is off, or no decode batch "
                              "has been logged yet")
    return profiles


# ------------------------------------------------------------------------------------------------ DraftScope's side
def profile_from_stats(stats_summary: dict, label: str) -> AcceptanceProfile:
    """DraftScope's measurement (``Stats.summary()`` or a block with the same keys) as a profile: drafts are the
    rounds that verified a draft token (reached[0]), and the per-position counts are measured, not derived."""
    if not isinstance(stats_summary, dict):
        raise DraftScopeError("a DraftScope measurement must be a dict of statistics")
    missing = [k for k in STATS_KEYS if k not in stats_summary]
    if missing:
        raise DraftScopeError(f"the DraftScope measurement lacks {', '.join(missing)}")
    s = stats_summary
    try:
        reached, accepted_at = [int(v) for v in s["reached"]], [int(v) for v in s["accepted_at"]]
        rounds, drafted, accepted = int(s["rounds"]), int(s["drafted"]), int(s["accepted"])
        target_calls, generated = int(s["target_calls"]), int(s["generated"])
    except (TypeError, ValueError) as exc:
        raise DraftScopeError(f"the DraftScope measurement holds a value that is not a count: {exc}") from None
    where = f"'{label}'"
    if len(reached) != len(accepted_at):
        raise DraftScopeError(f"inconsistent measurement {where}: {len(reached)} reached counts, {len(accepted_at)} "
                              "accepted ones")
    if len(reached) > MAX_POSITIONS:
        raise DraftScopeError(f"measurement {where} has {len(reached)} draft positions; the limit is {MAX_POSITIONS}")
    if min([rounds, drafted, accepted, target_calls, generated, *reached, *accepted_at], default=0) < 0:
        raise DraftScopeError(f"inconsistent measurement {where}: a count is negative")
    drafts = reached[0] if reached else 0
    over = any(a > r for a, r in zip(accepted_at, reached))
    if over or any(r > a for a, r in zip(accepted_at, reached[1:], strict=False)):
        raise DraftScopeError(f"inconsistent measurement {where}: position i is accepted more often than reached, or "
                              "reached more often than position i − 1 was accepted")
    if drafts > rounds:
        raise DraftScopeError(f"inconsistent measurement {where}: {drafts} rounds reached a draft of {rounds}")
    _check_counts(drafts, drafted, accepted, accepted_at, where)
    tau = generated / target_calls if target_calls else None
    notes = [] if drafts == rounds else [f"{rounds - drafts} of {rounds} rounds verified no draft token (τ counts "
                                         "them, the mean acceptance length does not)"]
    return AcceptanceProfile(label=label, source="draftscope", drafts=drafts, draft_tokens=drafted,
                             accepted_tokens=accepted, accepted_per_pos=accepted_at, reached_per_pos=reached,
                             tau=tau, notes=notes)


def profile_from_matrix_row(row: dict, category: str | None = None, target: str | None = None) -> AcceptanceProfile:
    """A benchmark-matrix row (``{"config", "drafter", "overall": block, "by_category": {cat: block}}``, blocks with
    exactly the keys of ``STATS_KEYS``) as a profile: its overall block, or one category's."""
    if not isinstance(row, dict) or "config" not in row:
        raise DraftScopeError("a benchmark-matrix row must be a dict with a 'config'")
    block = row.get("overall") if category is None else (row.get("by_category") or {}).get(category)
    if not isinstance(block, dict):
        where = "overall block" if category is None else f"block for category {category!r}"
        raise DraftScopeError(f"benchmark-matrix row {row['config']!r} has no {where}")
    label = " · ".join(x for x in ("DraftScope", target, str(row["config"]), category) if x)
    return profile_from_stats(block, label)


def load_matrix(path: str | Path) -> dict:
    """A benchmark-matrix file, checked (``core.specdec.matrix.load_matrix``)."""
    from core.specdec.matrix import load_matrix as load

    return load(path)


def vllm_exposition(profile: AcceptanceProfile | dict, model_name: str) -> str:
    """A profile's counts written as vLLM's ``/metrics`` exposition (its four speculative-decoding counters, labelled
    ``model_name`` and ``engine``), by ``prometheus_client`` as vLLM writes it: DraftScope's own measurement in the
    format a production dashboard reads, and parsed back by ``parse_metrics`` to the same counts."""
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    p = as_profile(profile)
    if not p.drafts or p.draft_tokens is None or p.accepted_tokens is None:
        raise DraftScopeError(f"{p.label} has no draft counts to write")
    registry, labels = CollectorRegistry(), {"model_name": model_name, "engine": "0"}

    def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
        return Counter(f"vllm:{name}", doc, [*labels, *extra], registry=registry)

    counter(DRAFTS, "Number of spec decoding drafts.").labels(**labels).inc(p.drafts)
    counter(DRAFT_TOKENS, "Number of draft tokens.").labels(**labels).inc(p.draft_tokens)
    counter(ACCEPTED, "Number of accepted tokens.").labels(**labels).inc(p.accepted_tokens)
    per_pos = counter(PER_POS, "Accepted tokens per draft position.", ("position",))
    for i, accepted in enumerate(p.accepted_per_pos):
        per_pos.labels(**labels, position=str(i)).inc(accepted)
    return generate_latest(registry).decode()


def shipped_matrices(directory: str | Path = BENCH_DIR) -> dict[str, dict]:
    """The benchmark matrices shipped as ``matrix-<target>.json``, by target (none yet: an empty dict)."""
    return {m["target"]: m for m in (load_matrix(p) for p in sorted(Path(directory).glob("matrix-*.json")))}


def matrix_choices(matrices: dict[str, dict]) -> list[tuple[str, str]]:
    """(label, key) for every row that drafted and its categories; ``profile_for_choice`` turns a key into a
    profile."""
    choices = []
    for target, matrix in matrices.items():
        for i, row in enumerate(matrix["rows"]):
            if not isinstance(row, dict) or not (row.get("overall") or {}).get("drafted"):
                continue  # the no-drafter baseline has no acceptance to compare
            name = f"{target} · {row.get('config', i)}"
            choices.append((f"{name} · all prompts", json.dumps([target, i, None])))
            for category in sorted(row.get("by_category") or {}):
                choices.append((f"{name} · {category}", json.dumps([target, i, category])))
    return choices


def choice_for_drafter(matrices: dict[str, dict], target: str, drafter: str, gamma: int) -> tuple[str, str] | None:
    """The ``matrix_choices`` entry (all prompts) of the row that ran ``drafter`` on ``target`` as a serving engine
    runs an export of it: its default options, a chain (no tree) of ``gamma`` tokens; None when no row did."""
    for i, row in enumerate((matrices.get(target) or {}).get("rows", [])):
        if (isinstance(row, dict) and row.get("drafter") == drafter and not row.get("options")
                and not row.get("tree") and row.get("gamma") == gamma
                and (row.get("overall") or {}).get("drafted")):
            key = json.dumps([target, i, None])
            return next((c for c in matrix_choices({target: matrices[target]}) if c[1] == key), None)
    return None


def profile_for_choice(matrices: dict[str, dict], key: str) -> AcceptanceProfile:
    try:
        target, index, category = json.loads(key)
        row = matrices[target]["rows"][index]
    except (ValueError, TypeError, KeyError, IndexError):
        raise DraftScopeError(f"no benchmark-matrix row {key!r}") from None
    return profile_from_matrix_row(row, category, target)
