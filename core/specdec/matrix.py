"""The benchmark matrix: every drafter configuration that can run on a target, side by side with Hugging Face greedy,
per prompt category (``bench --matrix``, the Benchmark tab).

Greedy only, one process, the ``core.specdec.bench`` pattern: a warm-up, then every prompt through every method with
the order rotated from prompt to prompt. tokens/s = generated tokens / wall time of the whole call (session build and
prefill included), summed over prompts. Per configuration and per category (and overall) a block holds the raw counts
(``RAW_KEYS`` plus ``draft_rounds``, ``draft_s``, ``verify_s``, ``hf_tokens``, ``hf_seconds``) and what follows from
them: tokens/s, the speed-up over HF greedy, τ = generated / target calls, α = accepted / drafted, MBSU, and the
acceptance at each draft position in both conventions:

- conditional (EAGLE, DraftScope): ``accepted_at[i] / reached[i]`` — P(accept at i | positions < i accepted);
- unconditional (vLLM, llama.cpp): ``accepted_at[i] / draft_rounds`` — accepted at i per round that drafted
  (``draft_rounds`` = rounds whose first draft was verified = ``reached[0]``).

Results are cached per configuration on disk (``cache_dir``, default ``$DRAFTSCOPE_CACHE/matrix``), keyed by the
target, the configuration, the prompts, the token budget, the chat setting and ``CODE_VERSION`` with the torch and
transformers versions: a rerun loads what it has and runs only the rest. HF greedy is measured again in every run that
runs anything, and each configuration keeps the HF time of its own run (``hf_seconds``), so every speed-up is a ratio
within one run even when the rows of a matrix come from different runs (each row says when it was measured).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import platform
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
import transformers

from core import ASSETS_DIR
from core.errors import DraftScopeError
from core.prompts import Prompt, load_prompts
from core.runtime.files import atomic_write_text
from core.runtime.models import LoadedModel, cache_dir as draftscope_cache, has_sliding_layers, load_model
from core.specdec import rejection
from core.specdec.bench import _has_counts, _hf, _ours, default_tree_exit_layer, side_by_side, warm_up
from core.specdec.drafters import DRAFTERS

SCHEMA, VERSION = "draftscope.matrix", 1
CODE_VERSION = "1"  # part of the cache key: bump it when a change to the engine or drafters changes results
RAW_KEYS = ("rounds", "drafted", "accepted", "reached", "accepted_at", "target_calls", "generated", "tokens",
            "seconds")
EXTRA_KEYS = ("draft_rounds", "draft_s", "verify_s", "hf_tokens", "hf_seconds")
REFERENCE = "hf-greedy"
VOCAB_TRIM = 8192  # VocabTrim k of the trimmed variants
HEAD_TREE_NODES = 8  # node budget of the draft heads' static trees
Progress = Callable[[int, int, str], None]  # (done, total, label)


@dataclass
class ConfigSpec:
    """One drafter configuration of the matrix: the registered drafter, its options (the rest at their defaults),
    the draft length γ and the tree shape ("" = a chain)."""

    name: str
    drafter: str
    options: dict = field(default_factory=dict)
    gamma: int = 5
    tree: str = ""
    tree_branch: int = 4
    note: str = ""  # what the variant is, for a reader

    def to_dict(self) -> dict:
        return asdict(self)

    def settings(self) -> dict:
        """The SessionConfig fields besides the drafter and its options."""
        return {"gamma": self.gamma, "tree": self.tree, "tree_branch": self.tree_branch}


class ConfigSet(dict):
    """name → ConfigSpec, with ``skipped``: name → why that configuration cannot run on the target."""

    def __init__(self, configs=(), skipped: dict[str, str] | None = None):
        super().__init__(configs)
        self.skipped = dict(skipped or {})


# ------------------------------------------------------------------------------------------------ configurations
def _model(target) -> LoadedModel:
    return target if isinstance(target, LoadedModel) else load_model(str(target).strip())


def _plan(model: LoadedModel) -> tuple[dict[str, ConfigSpec], dict[str, str]]:
    """Every configuration of the matrix for ``model``, and the ones that cannot run there with the reason."""
    from core.specdec.drafters.aded import default_store
    from core.specdec.drafters.falcon import default_checkpoint as falcon_checkpoint
    from core.specdec.drafters.fastdraft import default_checkpoint as fastdraft_checkpoint
    from core.specdec.drafters.heads import default_checkpoint as heads_checkpoint, shipped_meta, suggested_paths
    from core.specdec.drafters.kangaroo import default_adapter_path
    from core.specdec.drafters.longspec import default_checkpoint as longspec_checkpoint

    configs: dict[str, ConfigSpec] = {}
    skipped: dict[str, str] = {}
    name = model.name
    sliding = has_sliding_layers(model)
    counts = _has_counts(model)
    deep = default_tree_exit_layer(model.n_layers)
    trim = {"vocab_trim": VOCAB_TRIM}

    def add(label: str, drafter: str, options: dict | None = None, gamma: int = 5, tree: str = "", note: str = "",
            missing: str | None = None) -> None:
        if missing:
            skipped[label] = missing
        else:
            configs[label] = ConfigSpec(label, drafter, dict(options or {}), gamma, tree, note=note)

    def file_missing(path: Path, what: str) -> str | None:
        return None if path.is_file() else f"{what} not shipped for '{name}' ({path.name} not found)"

    no_counts = None if counts else f"no shipped token counts for '{name}''s tokenizer (VocabTrim)"
    not_sliding = f"'{name}' has sliding-window layers" if sliding else None
    add("none", "none", gamma=1, note="the target alone, through our engine")
    add("ngram", "ngram", note="prompt lookup: γ 5, suffixes of 3 down to 2 tokens")
    add("ngram-g2", "ngram", gamma=2, note="γ 2")
    add("ngram-heuristic", "ngram", {"schedule": "heuristic"}, note="γ +2 after full acceptance, −1 otherwise")
    add("early-exit", "early-exit", note="untrained exit at a fifth of the depth, γ 5")
    add(f"early-exit-{deep}-g4", "early-exit", {"exit_layer": deep}, gamma=4, note="exit at four fifths, γ 4")
    add(f"early-exit-{deep}-tree-3.1.1.1", "early-exit", {"exit_layer": deep}, gamma=4, tree="3,1,1,1",
        note="the same exit, a 6-node tree")
    add(f"early-exit-{deep}-g4-vt8k", "early-exit", {"exit_layer": deep, **trim}, gamma=4, missing=no_counts,
        note="the same with its head trimmed to the 8k most frequent tokens")
    add("easyspec", "easyspec", note="the early exit run layer-parallel in groups of 4, γ 5")
    add("sorted", "sorted", gamma=4, note="S2D nested exits, θ 0.5, γ 4")
    kangaroo = file_missing(default_adapter_path(name), "Kangaroo adapter")
    add("kangaroo", "kangaroo", gamma=6, missing=kangaroo, note="the paper's γ 6, η 0.6")
    add("kangaroo-vt8k", "kangaroo", trim, gamma=6, missing=kangaroo or no_counts, note="VocabTrim 8k")
    fastdraft = file_missing(fastdraft_checkpoint(name), "FastDraft drafter")
    add("fastdraft", "fastdraft", gamma=4, missing=fastdraft, note="γ 4")
    add("fastdraft-g2", "fastdraft", gamma=2, missing=fastdraft, note="γ 2")
    metas = shipped_meta(name)
    for arch in ("medusa", "hydra", "hydra++"):
        drafter, options = ("hydra", {"plus": True}) if arch == "hydra++" else (arch, {})
        meta = metas.get(arch)
        missing = None if meta else file_missing(heads_checkpoint(arch, name), f"{arch} heads")
        k = int(meta["n_heads"]) if meta else 4
        add(arch, drafter, options, gamma=k, missing=missing, note=f"a chain of all {k} heads")
        rank_acc = ((meta or {}).get("val") or {}).get("rank_acc")
        if arch != "hydra" and (rank_acc or missing):
            tree = json.dumps([list(p) for p in suggested_paths(rank_acc, HEAD_TREE_NODES)],
                              separators=(",", ":")) if rank_acc else ""
            add(f"{arch}-tree{HEAD_TREE_NODES}", drafter, options, gamma=k, tree=tree, missing=missing,
                note=f"Medusa's {HEAD_TREE_NODES}-node static tree from held-out rank accuracies")
    falcon = file_missing(falcon_checkpoint(name), "Falcon drafter")
    add("falcon", "falcon", gamma=4, missing=falcon, note="two tokens per drafter forward, γ 4")
    add("falcon-tree-3.1", "falcon", tree="3,1", missing=falcon, note="a 6-node tree")
    aded = file_missing(default_store(name), "ADED trigram store")
    add("aded", "aded", missing=aded, note="the paper's 150 simulations, γ 5")
    add("aded-prompt", "aded", {"learn_prompt": True}, missing=aded, note="also learns the prompt's trigrams")
    add("aded-empty-prompt", "aded", {"store": "empty", "learn_prompt": True}, note="no corpus: the prompt only")
    add("pearl", "pearl", gamma=4, missing=fastdraft or not_sliding, note="PEARL around FastDraft, two threads")
    add("pearl-serial", "pearl", {"parallel": False}, gamma=4, missing=fastdraft or not_sliding,
        note="the same, one thread")
    longspec = file_missing(longspec_checkpoint(name), "LongSpec drafter") or not_sliding
    add("longspec", "longspec", gamma=4, missing=longspec, note="γ 4")
    add("longspec-vt8k-g2", "longspec", trim, gamma=2, missing=longspec or no_counts, note="VocabTrim 8k, γ 2")
    needs = "needs a draft model of its own (bench --draft-model); the matrix runs self-contained drafters"
    add("model", "model", missing=needs)
    add("omnidraft", "omnidraft", missing=needs.replace("of its own", "of another family"))
    return configs, skipped


def matrix_configs(target, subset: Iterable[str] | None = None) -> ConfigSet:
    """The matrix's configurations that can run on ``target`` (a name or a loaded model): each registered drafter at
    its defaults and a few variants (γ, a tree, VocabTrim k), those whose shipped checkpoint is missing for the target
    left out and listed in ``.skipped`` with the reason. ``subset`` picks by configuration name (a drafter's name is
    its default configuration's), by pattern (``early-exit*``: every configuration of that drafter) or by a drafter
    name that names no configuration (all of its configurations)."""
    model = _model(target)
    configs, skipped = _plan(model)
    if subset is None:
        return ConfigSet(configs, skipped)
    picked: dict[str, ConfigSpec] = {}
    for raw in subset:
        item = raw.strip()
        if not item:
            continue
        if item in configs:
            picked[item] = configs[item]
        elif item in skipped:
            raise DraftScopeError(f"'{item}' cannot run on '{model.name}': {skipped[item]}")
        elif "*" in item or "?" in item:
            found = {n: c for n, c in configs.items() if fnmatch.fnmatchcase(n, item)}
            if not found:
                raise DraftScopeError(f"no configuration that can run on '{model.name}' matches '{item}'; choose "
                                      f"from {', '.join(configs)}")
            picked.update(found)
        elif item in DRAFTERS:
            found = {n: c for n, c in configs.items() if c.drafter == item}
            if not found:
                reasons = "; ".join(f"{n}: {r}" for n, r in skipped.items() if n == item or n.startswith(f"{item}-"))
                raise DraftScopeError(f"no '{item}' configuration can run on '{model.name}' ({reasons or 'none'})")
            picked.update(found)
        else:
            raise DraftScopeError(f"unknown matrix configuration '{item}'; choose from {', '.join(configs)} "
                                  f"(or a pattern such as 'early-exit*')")
    if not picked:
        raise DraftScopeError("no configurations chosen")
    return ConfigSet({n: c for n, c in configs.items() if n in picked}, {})


# ------------------------------------------------------------------------------------------------ cache
def default_cache_dir() -> Path:
    return draftscope_cache() / "matrix"


def cache_key(target: str, spec: ConfigSpec, prompts: Sequence[Prompt], max_new_tokens: int, chat: bool) -> str:
    """A hash of everything a configuration's numbers depend on (the machine aside)."""
    payload = {"target": target, "config": spec.to_dict(), "prompts": [[p.id, p.category, p.prompt] for p in prompts],
               "max_new_tokens": max_new_tokens, "chat": chat,
               "code": [CODE_VERSION, torch.__version__, transformers.__version__]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _read_entry(path: Path) -> dict | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and entry.get("code_version") == CODE_VERSION else None


def atomic_write(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, making its folder first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, text)


# ------------------------------------------------------------------------------------------------ running
def machine(model: LoadedModel) -> dict:
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(model.device),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__}


def _prompt_result(prompt: Prompt, out: list[int], info: dict, seconds: float, reference: list[int],
                   hf_seconds: float) -> dict:
    s = info["stats"]
    return {"id": prompt.id, "category": prompt.category, "rounds": s.rounds, "drafted": s.drafted,
            "accepted": s.accepted, "reached": list(s.reached), "accepted_at": list(s.accepted_at),
            "target_calls": s.target_calls, "generated": s.generated, "tokens": len(out), "seconds": seconds,
            "draft_rounds": s.reached[0] if s.reached else 0, "draft_s": s.draft_s, "verify_s": s.verify_s,
            "hf_tokens": len(reference), "hf_seconds": hf_seconds, "identical": out == reference,
            "cost": info.get("cost")}


def run_matrix(target, configs: dict[str, ConfigSpec] | Sequence[ConfigSpec], prompts: Sequence[Prompt] | None,
               max_new_tokens: int, progress: Progress | None = None, cache_dir: str | Path | None = None,
               use_cache: bool = True, chat: bool = True) -> dict:
    """Run (or load from the cache) every configuration on every prompt beside HF greedy; return the matrix dict
    (``SCHEMA``). ``configs`` is ``matrix_configs``' answer (its ``skipped`` are carried into the result) or any
    ConfigSpecs; ``prompts`` None = the shipped ones; ``progress(done, total, label)`` after each call."""
    if not 1 <= int(max_new_tokens) <= 4096:
        raise DraftScopeError(f"max new tokens must be in 1..4096, got {max_new_tokens}")
    specs = dict(configs) if isinstance(configs, dict) else {c.name: c for c in configs}
    if not specs:
        raise DraftScopeError("no configurations to run")
    prompts = list(prompts) if prompts is not None else load_prompts()
    if not prompts:
        raise DraftScopeError("no prompts to run")
    model = _model(target)
    use_chat = chat and bool(getattr(model.tokenizer, "chat_template", None))
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    keys = {n: cache_key(model.name, s, prompts, max_new_tokens, use_chat) for n, s in specs.items()}
    entries = {n: e for n in specs if use_cache and (e := _read_entry(folder / f"{keys[n]}.json"))}
    skipped = dict(getattr(configs, "skipped", {}))
    pending = {n: s for n, s in specs.items() if n not in entries}
    if pending:
        fresh = _run(model, pending, prompts, max_new_tokens, use_chat, progress, skipped)
        for name, entry in fresh.items():
            entry.update(key=keys[name], code_version=CODE_VERSION)
            if use_cache:
                atomic_write(folder / f"{keys[name]}.json", json.dumps(entry))
            entries[name] = entry
    elif progress:
        progress(1, 1, "all configurations loaded from the cache")
    categories = list(dict.fromkeys(p.category for p in prompts))
    rows = [_row(specs[n], entries[n], categories, cached=n not in pending) for n in specs if n in entries]
    return {"schema": SCHEMA, "version": VERSION, "target": model.name, "created": _now(), "machine": machine(model),
            "max_new_tokens": int(max_new_tokens), "temperature": 0.0, "chat": use_chat, "code_version": CODE_VERSION,
            "categories": categories, "prompts": [p.id for p in prompts], "skipped": skipped, "rows": rows}


def _run(model: LoadedModel, specs: dict[str, ConfigSpec], prompts: list[Prompt], max_new_tokens: int, chat: bool,
         progress: Progress | None, skipped: dict[str, str]) -> dict[str, dict]:
    """Warm-up, then every prompt through HF greedy and each configuration (order rotated per prompt): one cache
    entry per configuration, with its HF reference time from this run."""
    encoded = [model.encode(p.prompt, chat=chat) for p in prompts]
    table = {REFERENCE: _hf(model)}
    table.update({n: _ours(model, s.drafter, s.options, **s.settings()) for n, s in specs.items()})
    if progress:
        progress(0, len(encoded) * len(table), "warm-up")
    warm_up(table, encoded[0], errors=skipped)  # a configuration that cannot run here is skipped with its message
    special = list(getattr(model.tokenizer, "all_special_ids", []) or [])
    names = [n for n in table if n != REFERENCE]
    per_prompt: dict[str, list[dict]] = {n: [] for n in names}
    events: dict[str, list[dict]] = {n: [] for n in names}
    total, done, label = len(encoded) * len(table), [0], [""]

    def started(name: str) -> None:
        label[0] = name

    def ended() -> None:
        done[0] += 1
        if progress:
            progress(done[0], total, label[0])

    measured = _now()
    for i, results in side_by_side(table, encoded, max_new_tokens, on_start=started, on_end=ended):
        reference, _, hf_seconds = results[REFERENCE]
        for name in names:
            out, info, seconds = results[name]
            per_prompt[name].append(_prompt_result(prompts[i], out, info, seconds, reference, hf_seconds))
            events[name] += rejection.events(prompts[i].id, prompts[i].category, info["records"], special)
    return {n: {"config": specs[n].to_dict(), "target": model.name, "max_new_tokens": max_new_tokens,
                "prompts": [p.id for p in prompts], "measured": measured, "machine": machine(model),
                "per_prompt": per_prompt[n], "rejections": rejection.summarize(events[n])} for n in names}


# ------------------------------------------------------------------------------------------------ blocks
def block(results: Sequence[dict]) -> dict:
    """Per-prompt results summed (``RAW_KEYS`` and ``EXTRA_KEYS``) with what follows from them."""
    b: dict = {k: 0 for k in (*RAW_KEYS, *EXTRA_KEYS) if k not in ("reached", "accepted_at")}
    b.update(reached=[], accepted_at=[])
    cost_x_drafted, costed = 0.0, False
    for r in results:
        for k in b:
            if k in ("reached", "accepted_at"):
                b[k] = _add_lists(b[k], r[k])
            else:
                b[k] += r[k]
        if r.get("cost") is not None:
            cost_x_drafted, costed = cost_x_drafted + r["drafted"] * r["cost"], True
    for k in ("seconds", "hf_seconds", "draft_s", "verify_s"):
        b[k] = round(b[k], 4)
    tps = b["tokens"] / b["seconds"] if b["seconds"] else None
    hf_tps = b["hf_tokens"] / b["hf_seconds"] if b["hf_seconds"] else None
    tau = b["generated"] / b["target_calls"] if b["target_calls"] else None
    mbsu = tau / (1 + cost_x_drafted / b["target_calls"]) if costed and tau is not None else None
    b.update(prompts=len(results), identical=all(r["identical"] for r in results),
             tokens_per_second=_round(tps), hf_tokens_per_second=_round(hf_tps),
             speedup=_round(tps / hf_tps if tps and hf_tps else None), tau=_round(tau),
             alpha=_round(b["accepted"] / b["drafted"] if b["drafted"] else None), mbsu=_round(mbsu),
             acceptance_conditional=[round(a / r, 4) if r else None for a, r in zip(b["accepted_at"], b["reached"])],
             acceptance_unconditional=[round(a / b["draft_rounds"], 4) if b["draft_rounds"] else None
                                       for a in b["accepted_at"]])
    return b


def _add_lists(a: list[int], b: list[int]) -> list[int]:
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n)]


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _row(spec: ConfigSpec, entry: dict, categories: list[str], cached: bool) -> dict:
    results = entry["per_prompt"]
    by_category = {c: block([r for r in results if r["category"] == c]) for c in categories}
    by_category = {c: b for c, b in by_category.items() if b["prompts"]}

    def mean(key: str) -> float | None:
        values = [b[key] for b in by_category.values() if b[key] is not None]
        return _round(sum(values) / len(values)) if values else None

    return {"config": spec.name, "drafter": spec.drafter, "options": spec.options, "gamma": spec.gamma,
            "tree": spec.tree, "note": spec.note, "cached": cached, "measured": entry.get("measured"),
            "overall": block(results), "by_category": by_category,
            "mean_over_categories": {k: mean(k) for k in ("speedup", "tokens_per_second", "tau", "alpha")},
            "rejections": entry["rejections"], "per_prompt": results}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def example_session(result: dict, config: str, prompt_id: str, round_index: int,
                    allow_local: bool = False):
    """A live session of the matrix's configuration ``config`` on its prompt ``prompt_id``, as the matrix ran it
    (greedy, its token budget and chat setting), stepped through round ``round_index`` (0-based, as the rejection
    examples name rounds) or to its end if it finishes first: a rejection example opened in the step view. The
    rounds repeat the matrix's as long as the drafter is deterministic and starts as it did there (a caller compares
    the example's token with the replayed one)."""
    from core.specdec.config import SessionConfig
    from core.specdec.engine import Session

    row = next((r for r in result.get("rows") or [] if r["config"] == config), None)
    if row is None:
        raise DraftScopeError(f"the matrix has no configuration '{config}'")
    prompt = next((p for p in load_prompts() if p.id == prompt_id), None)
    if prompt is None or prompt_id not in (result.get("prompts") or []):
        raise DraftScopeError(f"prompt '{prompt_id}' is not one of this matrix's prompts")
    if not 0 <= int(round_index) < 10_000:
        raise DraftScopeError(f"round must be in 0..9999, got {round_index}")
    spec = ConfigSpec(config, row["drafter"], dict(row.get("options") or {}), int(row["gamma"]), row.get("tree") or "")
    session_config = SessionConfig(target=result["target"], drafter=spec.drafter, drafter_options=spec.options,
                                   max_new_tokens=int(result["max_new_tokens"]), temperature=0.0, **spec.settings())
    session = Session.from_config(session_config, prompt=prompt.prompt, chat=bool(result.get("chat")),
                                  allow_local=allow_local)
    while len(session.records) <= int(round_index) and not session.done:
        session.step()
    return session


def select_prompts(result: dict, prompt_ids: Iterable[str]) -> dict:
    """The matrix restricted to some of its prompts: every row's blocks rebuilt from its per-prompt results (what a
    held-out check fits on one half and measures on the other). Rejection statistics are left out (they are not kept
    per prompt)."""
    wanted = [str(i) for i in prompt_ids]
    unknown = [i for i in wanted if i not in result["prompts"]]
    if unknown or not wanted:
        raise DraftScopeError(f"prompt(s) {', '.join(unknown) or '(none)'} not in this matrix; it has "
                              f"{', '.join(result['prompts'])}")
    rows = []
    for row in result["rows"]:
        if "per_prompt" not in row:
            raise DraftScopeError(f"row '{row['config']}' has no per-prompt results (a matrix from before they were "
                                  "kept): regenerate it")
        spec = ConfigSpec(row["config"], row["drafter"], row.get("options", {}), row.get("gamma", 5),
                          row.get("tree", ""), note=row.get("note", ""))
        entry = {"per_prompt": [r for r in row["per_prompt"] if str(r["id"]) in wanted], "rejections": None,
                 "measured": row.get("measured")}
        categories = list(dict.fromkeys(r["category"] for r in entry["per_prompt"]))
        rows.append(_row(spec, entry, categories, cached=row.get("cached", False)))
    categories = [c for c in result["categories"] if any(c in r["by_category"] for r in rows)]
    return {**result, "prompts": wanted, "categories": categories, "rows": rows}


# ------------------------------------------------------------------------------------------------ files
def validate_matrix(data, source: str = "the matrix") -> dict:
    """``data`` if it is a matrix dict of this schema and version, else a DraftScopeError saying what is wrong."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise DraftScopeError(f"{source} is not a DraftScope matrix (schema '{SCHEMA}' expected)")
    if data.get("version") != VERSION:
        raise DraftScopeError(f"{source} is matrix version {data.get('version')!r}; this DraftScope reads version "
                              f"{VERSION} (regenerate it with python -m core.cli bench --matrix)")
    missing = [k for k in ("target", "categories", "prompts", "rows", "max_new_tokens") if k not in data]
    if missing or not isinstance(data["rows"], list):
        raise DraftScopeError(f"{source} lacks {', '.join(missing) or 'a list of rows'}")
    for row in data["rows"]:
        if not isinstance(row, dict) or not {"config", "overall", "by_category"} <= set(row):
            raise DraftScopeError(f"{source} has a row without config / overall / by_category")
    return data


def save_matrix(result: dict, path: str | Path) -> Path:
    """Write a matrix (validated) as JSON, atomically."""
    validate_matrix(result)
    return atomic_write(path, json.dumps(result, indent=1, ensure_ascii=False) + "\n")


def load_matrix(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DraftScopeError(f"matrix file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DraftScopeError(f"{path} is not JSON ({exc})") from None
    return validate_matrix(data, str(path))


def shipped_path(target: str) -> Path:
    return ASSETS_DIR / "bench" / f"matrix-{target}.json"


def shipped_matrix(target: str) -> dict | None:
    """The matrix shipped for ``target`` (``assets/bench/matrix-<target>.json``), or None."""
    path = shipped_path(str(target).strip())
    return load_matrix(path) if path.is_file() else None


# ------------------------------------------------------------------------------------------------ table
def format_matrix(result: dict, per_category: bool = True) -> str:
    """A markdown table: config × category speed-ups (and their mean), then tokens/s, τ, α, MBSU and lossless."""
    categories = result["categories"] if per_category else []
    head = ["config", *categories, *(["mean"] if categories else []), "speed-up", "tokens/s", "τ", "α", "MBSU",
            "identical"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["rows"]:
        o = row["overall"]
        cells = [row["config"], *(_x(row["by_category"].get(c, {}).get("speedup")) for c in categories)]
        if categories:
            cells.append(_x(row["mean_over_categories"]["speedup"]))
        cells += [_x(o["speedup"]), _f(o["tokens_per_second"], 1), _f(o["tau"]), _f(o["alpha"]), _f(o["mbsu"]),
                  "yes" if o["identical"] else "NO"]
        lines.append("| " + " | ".join(cells) + " |")
    reference = [r["overall"]["hf_tokens_per_second"] for r in result["rows"]]
    notes = [f"\n{result['target']}, {len(result['prompts'])} prompts, {result['max_new_tokens']} new tokens, greedy; "
             f"speed-up over HF greedy measured in the same run as each row (HF greedy "
             f"{_f(min(reference), 1)}–{_f(max(reference), 1)} tokens/s)." if reference else ""]
    notes += [f"skipped {name}: {why}" for name, why in result.get("skipped", {}).items()]
    return "\n".join(lines + notes)


def _x(value) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _f(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


__all__ = ["CODE_VERSION", "RAW_KEYS", "SCHEMA", "VERSION", "ConfigSet", "ConfigSpec", "block", "cache_key",
           "default_cache_dir", "format_matrix", "load_matrix", "matrix_configs", "run_matrix", "save_matrix",
           "select_prompts", "shipped_matrix", "shipped_path", "validate_matrix"]
