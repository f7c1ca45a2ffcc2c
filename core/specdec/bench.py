"""Side-by-side throughput benchmark: Hugging Face ``generate`` and its built-in speculative modes vs our engine.

All methods run in one process on the same prompts, alternating (the order rotates from prompt to prompt), after a
warm-up. tokens/s = generated tokens / wall time of the whole call (prefill included), summed over prompts;
speedup is relative to Hugging Face plain greedy measured in the same run, overall and per prompt category
(``by_category``); ``speedup_avg`` is the mean of the per-category speedups. Everything is greedy, so every method's
output must be token-identical to the plain one (``identical_to_target``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from core.errors import DraftScopeError
from core.prompts import load_prompts
from core.runtime.layers import DEEP_EXIT, exit_layer_at
from core.runtime.models import has_sliding_layers, load_model
from core.specdec import Session, SessionConfig
from core.specdec.drafters.early_exit import default_exit_layer
from core.specdec.drafters.kangaroo import default_adapter_path

PROMPT_LOOKUP_TOKENS = 10  # Hugging Face's usual prompt_lookup_num_tokens
PROMPT_LOOKUP_NGRAM = 2  # Hugging Face's default max_matching_ngram_size (it falls back to 1-grams)


@dataclass
class _Tally:
    tokens: int = 0
    seconds: float = 0.0
    identical: bool = True
    drafted: int = 0
    accepted: int = 0
    target_calls: int = 0
    cost_x_drafted: float = 0.0  # Σ drafted · c (the drafter's cost per token relative to the target's)

    def add(self, out: list[int], info: dict, seconds: float, identical: bool) -> None:
        self.tokens += len(out)
        self.seconds += seconds
        self.identical &= identical
        self.drafted += info.get("drafted", 0)
        self.accepted += info.get("accepted", 0)
        self.target_calls += info.get("target_calls", 0)
        self.cost_x_drafted += info.get("drafted", 0) * (info.get("cost") or 0.0)

    def summary(self, base_tps: float, ours: bool) -> dict:
        tps = self.tokens / self.seconds if self.seconds else 0.0
        tau = self.tokens / self.target_calls if ours and self.target_calls else None
        mbsu = None
        if tau is not None and self.drafted and self.cost_x_drafted:
            mbsu = tau / (1 + self.cost_x_drafted / self.target_calls)  # τ / (1 + γ̄ c)
        return {"tokens_per_second": round(tps, 2), "speedup": round(tps / base_tps, 3) if base_tps else None,
                "tau": round(tau, 3) if tau is not None else None,
                "alpha": round(self.accepted / self.drafted, 3) if ours and self.drafted else None,
                "mbsu": round(mbsu, 3) if mbsu is not None else None}


def _hf(target, **kwargs) -> Callable[[list[int], int], tuple[list[int], dict]]:
    def run(ids: list[int], n: int):
        with torch.inference_mode():
            out = target.model.generate(torch.tensor([ids], device=target.device), max_new_tokens=n, do_sample=False,
                                        pad_token_id=target.model.generation_config.pad_token_id, **kwargs)
        return out[0, len(ids):].tolist(), {}
    return run


def _ours(target, drafter: str, options: dict | None = None, **settings) -> Callable:
    """Our engine with ``drafter`` and its ``options``; ``settings`` are other SessionConfig fields (γ, tree)."""
    def run(ids: list[int], n: int):
        config = SessionConfig(target=target.name, drafter=drafter, max_new_tokens=n, drafter_options=options or {},
                               **settings)
        session = Session.from_config(config, prompt_ids=ids)
        for _ in session.run():
            pass
        s = session.stats
        return session.generated_ids, {"drafted": s.drafted, "accepted": s.accepted, "target_calls": s.target_calls,
                                       "cost": session.drafter.cost, "stats": s, "records": session.records}
    return run


def default_tree_exit_layer(n_layers: int) -> int:
    """Four fifths of the depth (24 of SmolLM2's 30): shallower untrained exits are almost never accepted."""
    return exit_layer_at(n_layers, DEEP_EXIT)


def build_methods(target, draft_model: str | None, exit_layer: int | None, tree_exit_layer: int | None = None,
                  fastdraft_paths: list[str] | None = None) -> dict[str, Callable]:
    ell = exit_layer or default_exit_layer(target.n_layers)
    methods = {
        "hf-greedy": _hf(target),
        "hf-prompt-lookup": _hf(target, prompt_lookup_num_tokens=PROMPT_LOOKUP_TOKENS,
                                max_matching_ngram_size=PROMPT_LOOKUP_NGRAM),
        f"hf-early-exit-{ell}": _hf(target, assistant_early_exit=ell),
        "ours-none": _ours(target, "none"),
        "ours-none-norecord": _ours(target, "none", record=False),
        "ours-ngram": _ours(target, "ngram"),  # our defaults: γ = 5, suffix 3..2 tokens
        "ours-ngram-norecord": _ours(target, "ngram", record=False),
        "ours-ngram-hf-settings": _ours(target, "ngram", {"ngram_size": PROMPT_LOOKUP_NGRAM, "min_ngram_size": 1},
                                        gamma=PROMPT_LOOKUP_TOKENS),  # like for like with hf-prompt-lookup
        f"ours-early-exit-{ell}": _ours(target, "early-exit", {"exit_layer": ell}),
    }
    # Trees vs chains with the untrained early exit deep enough to be accepted sometimes: equal node budgets
    # (12 nodes) and the chain of the trees' depth (4).
    tl = tree_exit_layer or default_tree_exit_layer(target.n_layers)
    ee = {"exit_layer": tl}
    methods.update({
        f"ours-ee{tl}-chain-g4": _ours(target, "early-exit", ee, gamma=4),
        f"ours-ee{tl}-chain-g12": _ours(target, "early-exit", ee, gamma=12),
        f"ours-ee{tl}-tree-3.1.1.1": _ours(target, "early-exit", ee, tree="3,1,1,1"),
        f"ours-ee{tl}-tree-budget12": _ours(target, "early-exit", ee, tree="budget:12", gamma=4,
                                            tree_branch=3),
    })
    # EasySpec: the same early exit run layer-parallel in groups of 4, with and without bonus calibration
    methods[f"ours-easyspec-ee{tl}-g4"] = _ours(target, "easyspec", ee, gamma=4)
    methods[f"ours-easyspec-ee{tl}-g4-nocal"] = _ours(target, "easyspec", {**ee, "calibrate": False}, gamma=4)
    if default_adapter_path(target.name).is_file():  # a trained Kangaroo adapter ships for this target
        methods["ours-kangaroo"] = _ours(target, "kangaroo", gamma=6)
        methods["ours-kangaroo-norecord"] = _ours(target, "kangaroo", gamma=6, record=False)
    # S2D: nested exits (5/7/10 on SmolLM2) with the paper's θ = 0.5, and with θ = 1 (always the deepest exit);
    # trained exits when they ship for the target, else plain early exits at those layers
    if not has_sliding_layers(target):
        methods["ours-sorted"] = _ours(target, "sorted", gamma=4)
        methods["ours-sorted-theta1"] = _ours(target, "sorted", {"thresholds": "1"}, gamma=4)
        methods["ours-sorted-g1"] = _ours(target, "sorted", gamma=1)
        methods["ours-sorted-g2-theta0"] = _ours(target, "sorted", {"thresholds": "0"}, gamma=2)  # always exit 1
    # VocabTrim on the self-drafters' heads (shipped counts of the target's tokenizer) and the trained FastDraft
    for k in VOCAB_TRIM_KS if _has_counts(target) else ():
        vt, tag = {"vocab_trim": k}, f"vt{k // 1024}k"
        methods[f"ours-early-exit-{ell}-{tag}"] = _ours(target, "early-exit", {"exit_layer": ell, **vt})
        methods[f"ours-ee{tl}-chain-g4-{tag}"] = _ours(target, "early-exit", {**ee, **vt}, gamma=4)
        if default_adapter_path(target.name).is_file():
            methods[f"ours-kangaroo-{tag}"] = _ours(target, "kangaroo", vt, gamma=6)
        if not has_sliding_layers(target):
            methods[f"ours-sorted-{tag}"] = _ours(target, "sorted", vt, gamma=4)
    for stem, path in fastdraft_checkpoints(target.name, fastdraft_paths).items():
        for gamma in FASTDRAFT_GAMMAS:
            methods[f"ours-{stem}-g{gamma}"] = _ours(target, "fastdraft", {"checkpoint": str(path)}, gamma=gamma)
        # Hugging Face assisted generation with the same drafter network (its own default schedule for γ)
        methods[f"hf-assisted-{stem}"] = _hf_assisted_fastdraft(target, path)
        if stem == "fastdraft":  # the shipped drafter: its confidence stop, and with prompt lookup first
            fd = {"checkpoint": str(path)}
            methods["ours-fastdraft-g5-eta0.4"] = _ours(target, "fastdraft", {**fd, "eta": 0.4}, gamma=5)
            methods["ours-fastdraft-lookup-g2"] = _ours(target, "fastdraft", {**fd, "lookup": True}, gamma=2)
            methods["ours-fastdraft-lookup-g5-eta0.4"] = _ours(target, "fastdraft", {**fd, "lookup": True,
                                                                                   "eta": 0.4}, gamma=5)
    methods.update(head_methods(target))
    methods.update(adaptive_methods(target))
    methods.update(crossvocab_methods(target))
    methods.update(longspec_methods(target))
    if draft_model:
        drafter = load_model(draft_model, device=target.device, dtype=target.dtype)
        methods["hf-assisted"] = _hf(target, assistant_model=drafter.model)
        methods["ours-model"] = _ours(target, "model", {"draft_model": draft_model})
    return methods


HEAD_TREE_NODES = (2, 3, 4, 6, 8, 12, 16)  # node budgets of the heads' static trees (verification is not free here)


def head_methods(target) -> dict[str, Callable]:
    """The draft heads shipped for the target (Medusa, Hydra, Hydra++): a chain of K, and the static trees Medusa's
    recipe picks from their held-out per-rank accuracies at each node budget; and Falcon's chains and trees."""
    import json

    from core.specdec.drafters.heads import shipped_meta, suggested_paths

    methods = {}
    for arch, meta in shipped_meta(target.name).items():
        drafter, options = ("hydra", {"plus": True}) if arch == "hydra++" else (arch, {})
        k = int(meta["n_heads"])
        methods[f"ours-{arch}-chain"] = _ours(target, drafter, options, gamma=k)
        for gamma in range(1, min(k, 3)):  # short chains: a forward of 4+ new tokens costs ~1.5 steps here
            methods[f"ours-{arch}-g{gamma}"] = _ours(target, drafter, options, gamma=gamma)
        rank_acc = (meta.get("val") or {}).get("rank_acc")
        for nodes in HEAD_TREE_NODES if rank_acc else ():
            tree = json.dumps([list(p) for p in suggested_paths(rank_acc, nodes)], separators=(",", ":"))
            methods[f"ours-{arch}-tree{nodes}"] = _ours(target, drafter, options, gamma=k, tree=tree)
    from core.specdec.drafters.falcon import default_checkpoint as falcon_checkpoint

    if falcon_checkpoint(target.name).is_file():  # two tokens per drafter forward: chains of 2 and 4, two trees
        for gamma in (2, 4):
            methods[f"ours-falcon-g{gamma}"] = _ours(target, "falcon", gamma=gamma)
        for tree in FALCON_TREES:
            methods[f"ours-falcon-tree-{tree.replace(',', '.')}"] = _ours(target, "falcon", tree=tree)
    return methods


FALCON_TREES = ("3,1", "3,2", "2,2,1,1")
NGRAM_GAMMAS = (1, 2, 3, 5, 8)  # the n-gram drafter's γ × n sweep
NGRAM_SIZES = (1, 2, 3, 4)  # n = 1 matches single tokens; larger n match n down to 2


def adaptive_methods(target) -> dict[str, Callable]:
    """Issue 18: ADED (chains and small trees), PEARL around FastDraft (two threads and serial, vs FastDraft's own
    serial speculative decoding), the adaptive draft lengths, and the n-gram drafter's γ × n grid."""
    from core.specdec.drafters.aded import default_store
    from core.specdec.drafters.fastdraft import default_checkpoint as fastdraft_checkpoint

    methods = {}
    for gamma in NGRAM_GAMMAS:
        for n in NGRAM_SIZES:
            options = {"ngram_size": n, "min_ngram_size": 1 if n == 1 else 2}
            methods[f"ours-ngram-g{gamma}-n{n}"] = _ours(target, "ngram", options, gamma=gamma)
    methods["ours-ngram-heuristic"] = _ours(target, "ngram", {"schedule": "heuristic"})
    if default_store(target.name).is_file():
        methods["ours-aded"] = _ours(target, "aded")  # the paper's settings: 150 simulations, γ = 5
        methods["ours-aded-it50"] = _ours(target, "aded", {"iterations": 50})
        methods["ours-aded-noadapt"] = _ours(target, "aded", {"adapt": False})
        methods["ours-aded-prompt"] = _ours(target, "aded", {"learn_prompt": True})
        methods["ours-aded-prompt-share0.5"] = _ours(target, "aded", {"learn_prompt": True, "min_share": 0.5})
        methods["ours-aded-prompt-tree8"] = _ours(target, "aded", {"learn_prompt": True}, tree="budget:8", gamma=4)
    methods["ours-aded-empty-prompt"] = _ours(target, "aded", {"store": "empty", "learn_prompt": True})
    if fastdraft_checkpoint(target.name).is_file() and not has_sliding_layers(target):
        for gamma in (3, 4, 6):
            methods[f"ours-pearl-fastdraft-g{gamma}"] = _ours(target, "pearl", {"parallel": True}, gamma=gamma)
            methods[f"ours-pearl-fastdraft-g{gamma}-serial"] = _ours(target, "pearl", {"parallel": False},
                                                                     gamma=gamma)
        methods["ours-fastdraft-g6"] = _ours(target, "fastdraft", gamma=6)
        methods["ours-fastdraft-g4-heuristic"] = _ours(target, "fastdraft", {"schedule": "heuristic"}, gamma=4)
        methods["ours-fastdraft-g4-conf0.4"] = _ours(target, "fastdraft", {"confidence": 0.4}, gamma=4)
        # Hugging Face's own: the same network as its assistant, γ = 4 with its heuristic schedule (reset every call,
        # as ours is every session) or its confidence threshold (which it also tunes online; ours stays fixed)
        path = fastdraft_checkpoint(target.name)
        methods["hf-assisted-fastdraft-g4"] = _hf_assisted_fastdraft(
            target, path, num_assistant_tokens=4, num_assistant_tokens_schedule="constant",
            assistant_confidence_threshold=0.0)
        methods["hf-assisted-fastdraft-g4-heuristic"] = _hf_assisted_fastdraft(
            target, path, num_assistant_tokens=4, num_assistant_tokens_schedule="heuristic_transient",
            assistant_confidence_threshold=0.0)
        methods["hf-assisted-fastdraft-g4-conf0.4"] = _hf_assisted_fastdraft(
            target, path, num_assistant_tokens=4, num_assistant_tokens_schedule="constant",
            assistant_confidence_threshold=0.4)
    return methods  # one drafter forward, one, two (the second per expanded branch)


CROSS_FAMILY = {"gemma3-270m": "smollm2-135m", "smollm2-135m": "gemma3-270m"}  # a draft model with another tokenizer
# direct string matches only (≈ UAG, the vocabulary-intersection drafting HF's universal assisted decoding also does)
OMNIDRAFT_PLAIN = {"ngram_cache": False, "distill": False, "accept_stop": 0.0, "backoff": False}


def crossvocab_methods(target) -> dict[str, Callable]:
    """Issue 19: OmniDraft with a draft model of the other family (another tokenizer) against Hugging Face's universal
    assisted decoding (``assistant_model`` + ``assistant_tokenizer``) with the same draft model; on Gemma also with
    SmolLM2's trained FastDraft network as the draft model, in both engines. Ours: the paper's three mechanisms on,
    each one off, our backoff off, with Hugging Face's default confidence stop (0.4), and all off (``direct``)."""
    from core.specdec.drafters.fastdraft import default_checkpoint as fastdraft_checkpoint

    other = CROSS_FAMILY.get(target.name)
    if other is None:
        return {}
    short = other.split("-")[0]
    variants = [(short, {"draft_model": other})]
    if fastdraft_checkpoint(other).is_file() and target.name == "gemma3-270m":
        variants.append((f"{short}-fastdraft", {"draft_model": other, "fastdraft": True}))
    methods = {}
    for label, base in variants:
        methods[f"hf-uad-{label}"] = _hf_universal(target, other, bool(base.get("fastdraft")))
        methods[f"ours-omnidraft-{label}"] = _ours(target, "omnidraft", base)
        methods[f"ours-omnidraft-{label}-nocache"] = _ours(target, "omnidraft", {**base, "ngram_cache": False})
        methods[f"ours-omnidraft-{label}-nodistill"] = _ours(target, "omnidraft", {**base, "distill": False})
        methods[f"ours-omnidraft-{label}-nohead"] = _ours(target, "omnidraft", {**base, "accept_stop": 0.0})
        methods[f"ours-omnidraft-{label}-nobackoff"] = _ours(target, "omnidraft", {**base, "backoff": False})
        methods[f"ours-omnidraft-{label}-conf0.4"] = _ours(target, "omnidraft", {**base, "confidence": 0.4})
        methods[f"ours-omnidraft-{label}-direct"] = _ours(target, "omnidraft", {**base, **OMNIDRAFT_PLAIN})
    return methods


LONGSPEC_TRIM = 8192  # VocabTrim k for the LongSpec rows (its full 49k head is most of its cost)
LONGSPEC_TREES = ("2,1,1", "2,2,1")


def longspec_methods(target) -> dict[str, Callable]:
    """Issue 19: the shipped LongSpec drafter, chains of 1, 2 and 4, with its full head and VocabTrim'd to 8k tokens,
    and small trees (its self-attention merges the ring and the tree part by log-sum-exp)."""
    from core.specdec.drafters.longspec import default_checkpoint as longspec_checkpoint

    if not longspec_checkpoint(target.name).is_file():
        return {}
    methods = {}
    trim = {"vocab_trim": LONGSPEC_TRIM} if _has_counts(target) else None
    for gamma in (1, 2, 4):
        methods[f"ours-longspec-g{gamma}"] = _ours(target, "longspec", gamma=gamma)
        if trim:
            methods[f"ours-longspec-vt8k-g{gamma}"] = _ours(target, "longspec", trim, gamma=gamma)
    for tree in LONGSPEC_TREES:
        label = "vt8k-" if trim else ""
        methods[f"ours-longspec-{label}tree-{tree.replace(',', '.')}"] = _ours(target, "longspec", trim, tree=tree)
    return methods


def _hf_universal(target, draft_name: str, fastdraft: bool) -> Callable:
    """Hugging Face's universal assisted decoding with ``draft_name`` (or its FastDraft network) as the assistant, at
    Hugging Face's defaults for the assistant; loaded at the first call."""
    loaded: dict = {}

    def run(ids: list[int], n: int):
        if not loaded:
            draft = load_model(draft_name, device=target.device, dtype=target.dtype)
            net = draft.model
            if fastdraft:
                from core.specdec.drafters.fastdraft import default_checkpoint, load

                net, _ = load(default_checkpoint(draft_name), draft)
                net.generation_config = copy.deepcopy(draft.model.generation_config)
            loaded.update(assistant_model=net, tokenizer=target.tokenizer, assistant_tokenizer=draft.tokenizer)
        return _hf(target, **loaded)(ids, n)
    return run


VOCAB_TRIM_KS = (4096, 8192, 16384)  # VocabTrim's k in the benchmark
FASTDRAFT_GAMMAS = (2, 3, 4)


def _has_counts(target) -> bool:
    from core.specdec.vocab_trim import shipped_counts_path

    try:
        shipped_counts_path(target)
    except DraftScopeError:
        return False
    return True


def fastdraft_checkpoints(target_name: str, extra: list[str] | None = None) -> dict[str, Path]:
    """FastDraft drafters to bench: ``fastdraft`` (the one shipped for the target) and each of ``extra`` as
    ``fastdraft-LABEL`` (LABEL: its alignment loss, or ``pretrained`` after stage 1 only)."""
    from core.runtime import checkpoint
    from core.specdec.drafters.fastdraft import KIND, TRAIN_HINT, default_checkpoint

    main = default_checkpoint(target_name)
    found = {"fastdraft": main} if main.is_file() else {}
    for raw in extra or []:
        meta = checkpoint.read_meta(raw, KIND, TRAIN_HINT)
        label = "pretrained" if meta.get("stage") == "pretrain" else meta.get("loss", Path(raw).stem)
        found[f"fastdraft-{label}"] = Path(raw)
    return found


def _hf_assisted_fastdraft(target, path: Path, **assistant) -> Callable:
    """Hugging Face assisted generation (``assistant_model``) with our FastDraft network as the assistant;
    ``assistant``: its generation settings (``num_assistant_tokens``, ``num_assistant_tokens_schedule``,
    ``assistant_confidence_threshold``), on a copy of the network of its own."""
    from core.specdec.drafters.fastdraft import load as load_fastdraft

    net, _ = load_fastdraft(path, target)
    net.generation_config = copy.deepcopy(target.model.generation_config)  # HF adapts it (γ schedule) in place
    for key, value in assistant.items():
        setattr(net.generation_config, key, value)
    return _hf(target, assistant_model=net)


def first_per_category(prompts: list, n: int) -> list:
    """The first ``n`` prompts of each category, in their order."""
    seen: dict[str, int] = {}
    out = []
    for p in prompts:
        seen[p.category] = seen.get(p.category, 0) + 1
        if seen[p.category] <= n:
            out.append(p)
    return out


WARM_UP_TOKENS = 8


def warm_up(table: dict[str, Callable], ids: list[int], errors: dict[str, str] | None = None) -> None:
    """One short run of every method on ``ids`` (first calls pay one-off costs). With ``errors``, a method that
    fails with a DraftScopeError is dropped from ``table`` and its message kept there, instead of raising."""
    for name in tqdm(list(table), desc="warm-up", leave=False):
        try:
            table[name](ids, WARM_UP_TOKENS)
        except DraftScopeError as exc:
            if errors is None:
                raise
            errors[name] = str(exc)
            del table[name]


def side_by_side(table: dict[str, Callable], encoded: list[list[int]], max_new_tokens: int,
                 on_start: Callable[[str], object] | None = None, on_end: Callable[[], object] | None = None):
    """Every method on every prompt, the order rotated from prompt to prompt (no method always runs first): yields
    (prompt index, {name: (output ids, info, wall seconds of the whole call)}) once per prompt."""
    names = list(table)
    for i, ids in enumerate(encoded):
        results = {}
        for name in names[i % len(names):] + names[: i % len(names)]:
            if on_start:
                on_start(name)
            t = time.perf_counter()
            out, info = table[name](ids, max_new_tokens)
            results[name] = (out, info, time.perf_counter() - t)
            if on_end:
                on_end()
        yield i, results


def run_bench(target: str = "smollm2-135m", prompts_path: str | None = None, limit: int | None = None,
              per_category: int | None = None, max_new_tokens: int = 128, draft_model: str | None = None,
              exit_layer: int | None = None, methods: list[str] | None = None, chat: bool = True,
              tree_exit_layer: int | None = None, fastdraft: list[str] | None = None) -> list[dict]:
    if not 1 <= max_new_tokens <= 4096:
        raise DraftScopeError(f"max new tokens must be in 1..4096, got {max_new_tokens}")
    model = load_model(target)
    prompts = load_prompts(prompts_path)
    if per_category:
        prompts = first_per_category(prompts, per_category)
    prompts = prompts[:limit] if limit else prompts
    use_chat = chat and bool(getattr(model.tokenizer, "chat_template", None))
    encoded = [model.encode(p.prompt, chat=use_chat) for p in prompts]
    table = build_methods(model, draft_model, exit_layer, tree_exit_layer, fastdraft)
    if methods:
        unknown = [m for m in methods if m not in table]
        if unknown:
            raise DraftScopeError(f"unknown bench method(s) {', '.join(unknown)}; choose from {', '.join(table)}")
        table = {m: table[m] for m in ["hf-greedy", *methods] if m in table}  # hf-greedy is the reference
    names = list(table)
    warm_up(table, encoded[0])
    tallies = {name: _Tally() for name in names}
    categories = list(dict.fromkeys(p.category for p in prompts))
    per_cat = {name: {c: _Tally() for c in categories} for name in names}
    bar = tqdm(total=len(encoded) * len(names), desc="bench")
    for i, results in side_by_side(table, encoded, max_new_tokens, on_start=bar.set_postfix_str, on_end=bar.update):
        reference = results["hf-greedy"][0]
        for name, (out, info, seconds) in results.items():
            tallies[name].add(out, info, seconds, out == reference)
            per_cat[name][prompts[i].category].add(out, info, seconds, out == reference)
    bar.close()
    base = tallies["hf-greedy"].tokens / tallies["hf-greedy"].seconds
    base_cat = {c: t.tokens / t.seconds for c, t in per_cat["hf-greedy"].items()}
    rows = []
    for name in names:
        t = tallies[name]
        ours = name.startswith("ours-")
        by_category = {c: per_cat[name][c].summary(base_cat[c], ours) for c in categories}
        rows.append({
            "method": name, **t.summary(base, ours),
            "speedup_avg": round(sum(v["speedup"] for v in by_category.values()) / len(by_category), 3),
            "identical_to_target": t.identical, "tokens": t.tokens, "seconds": round(t.seconds, 2),
            "prompts": len(encoded), "max_new_tokens": max_new_tokens, "target": target,
            "by_category": by_category,
        })
    return rows


FORWARD_SIZES = (1, 2, 3, 4, 5, 7, 9, 13, 17, 20, 32)  # up to 16 tree nodes + the bonus row, then larger


def forward_cost(target: str = "smollm2-135m", prefix_len: int = 200, sizes=FORWARD_SIZES,
                 repeats: int = 5) -> dict[int, float]:
    """Median ms of one target forward of k new tokens on a cached prefix (what verifying k drafts or tree nodes
    costs), for each k (``core.specdec.cost_model.verify_ms``)."""
    from core.specdec.cost_model import verify_ms

    return dict(zip(sizes, verify_ms(load_model(target), prefix_len, sizes, repeats), strict=True))


def format_table(rows: list[dict]) -> str:
    def fmt(v):
        return "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    cols = ["method", "tokens_per_second", "speedup", "tau", "alpha", "mbsu", "identical_to_target"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    categories = list(rows[0].get("by_category", {})) if rows else []
    if len(categories) > 1:  # speedup over HF greedy per category, and their mean
        lines += ["", "| method | " + " | ".join(categories) + " | mean |", "|" + "---|" * (len(categories) + 2)]
        lines += ["| " + " | ".join([r["method"], *(f"{r['by_category'][c]['speedup']:.2f}×" for c in categories),
                                     f"{r['speedup_avg']:.2f}×"]) + " |" for r in rows]
    by = {r["method"]: r for r in rows}
    notes = []
    for plain, norec in (("ours-none", "ours-none-norecord"), ("ours-ngram", "ours-ngram-norecord")):
        if plain in by and norec in by:
            cost = 1 - by[plain]["tokens_per_second"] / by[norec]["tokens_per_second"]
            notes.append(f"record overhead ({plain}): {cost * 100:+.1f}% of throughput")
    if "ours-ngram" in by and "hf-prompt-lookup" in by:
        notes.append(f"ours-ngram / hf-prompt-lookup: "
                     f"{by['ours-ngram']['tokens_per_second'] / by['hf-prompt-lookup']['tokens_per_second']:.3f}")
    if "ours-none" in by:
        notes.append(f"ours-none / hf-greedy: {by['ours-none']['speedup']:.3f}")
    chains = {r["method"].rsplit("-chain-", 1)[0]: r for r in rows if "-chain-g12" in r["method"]}
    for r in rows:
        chain = chains.get(r["method"].rsplit("-tree-", 1)[0]) if "-tree-" in r["method"] else None
        if chain and r["tau"] and chain["tau"]:
            notes.append(f"{r['method']} / {chain['method']} (12 nodes each): τ {r['tau'] / chain['tau']:.3f}, "
                         f"tokens/s {r['tokens_per_second'] / chain['tokens_per_second']:.3f}")
    return "\n".join(lines + [""] + notes)


def easyspec_report(target: str = "smollm2-135m", exit_layer: int | None = None, group_size: int = 4,
                    per_category: int = 1, max_new_tokens: int = 64) -> dict:
    """EasySpec on this machine: α and τ of the exact early-exit drafter vs its fuzzy version with and without
    bonus calibration (greedy, the shipped prompts), the cosine between fuzzy and exact hidden states, and the
    modelled per-token drafter latency on 1 device vs ``group_size`` devices from measured sublayer times."""
    from core.specdec.drafters.early_exit import EarlyExitDrafter
    from core.specdec.drafters.easyspec import EasySpecDrafter, modelled_latency
    from core.specdec.verify import build_verifier

    model = load_model(target)
    ell = exit_layer or default_tree_exit_layer(model.n_layers)
    prompts = first_per_category(load_prompts(), per_category)
    variants = {"exact early exit": lambda: EarlyExitDrafter(model, exit_layer=ell),
                "easyspec, calibrated": lambda: EasySpecDrafter(model, exit_layer=ell, group_size=group_size,
                                                                measure=True),
                "easyspec, no calibration": lambda: EasySpecDrafter(model, exit_layer=ell, group_size=group_size,
                                                                    calibrate=False, measure=True)}
    rows = []
    for name, make in tqdm(variants.items(), desc="easyspec"):
        drafted = accepted = generated = calls = 0
        cosines = []
        for p in prompts:
            drafter = make()
            config = SessionConfig(target=model.name, drafter=drafter.name, gamma=4, max_new_tokens=max_new_tokens)
            session = Session(model, drafter, build_verifier("greedy"), model.encode(p.prompt, chat=True), config)
            for record in session.run():
                if record is not None and "cosine" in record.draft_info:
                    cosines.append(record.draft_info["cosine"])
            s = session.stats
            drafted, accepted, generated, calls = (drafted + s.drafted, accepted + s.accepted,
                                                   generated + s.generated, calls + s.target_calls)
        rows.append({"drafter": name, "alpha": accepted / drafted if drafted else None, "tau": generated / calls,
                     "cosine_mean": sum(cosines) / len(cosines) if cosines else None,
                     "cosine_min": min(cosines) if cosines else None})
    times = EasySpecDrafter(model, exit_layer=ell, group_size=group_size).layer_times()
    latency = {n: modelled_latency(times, group_size, n) for n in (1, 2, group_size)}
    return {"target": model.name, "exit_layer": ell, "group_size": group_size, "prompts": len(prompts),
            "max_new_tokens": max_new_tokens, "rows": rows, "layer_times": times,
            "modelled_latency": {n: {k: v for k, v in lat.items() if k in ("sequential_ms", "parallel_ms", "speedup")}
                                 for n, lat in latency.items()}}


def typical_drift(target: str = "smollm2-135m", drafter: str = "hydra", tree: str | None = None,
                  temperature: float = 0.7, per_category: int = 1, max_new_tokens: int = 96, seeds: int = 2) -> dict:
    """Typical acceptance against the lossless draw-and-match rule with the same drafter and static tree, sampled at
    ``temperature``: tokens/s, τ and the total-variation drift of typical acceptance's output.

    With deterministic drafts (top-k children) typical acceptance emits an accepted draft x with certainty, where the
    target would emit it with probability p(x): that token's law is δ_x, at TV 1 − p(x) from the target's law given
    the same prefix; its own token after the path is drawn from p (TV 0). The drift is the mean of that TV over every
    generated token — exact per token, no sampling error. ``match`` is lossless: its drift is 0 by construction."""
    from core.specdec.drafters.heads import shipped_meta, suggested_paths

    model = load_model(target)
    if tree is None:
        import json

        meta = shipped_meta(model.name).get(drafter) or {}
        rank_acc = (meta.get("val") or {}).get("rank_acc")
        if not rank_acc:
            raise DraftScopeError(f"no shipped {drafter} heads for '{model.name}' to choose a tree from")
        tree = json.dumps([list(p) for p in suggested_paths(rank_acc, 8)], separators=(",", ":"))
    prompts = first_per_category(load_prompts(), per_category)
    encoded = [model.encode(p.prompt, chat=True) for p in prompts]
    out = {"drafter": drafter, "tree": tree, "temperature": temperature, "prompts": len(encoded), "seeds": seeds}
    for verifier in ("match", "typical"):
        tokens = seconds = calls = 0
        drift = 0.0
        for seed in range(seeds):
            for ids in encoded:
                config = SessionConfig(target=model.name, drafter=drafter, verifier=verifier, tree=tree,
                                       temperature=temperature, seed=seed, max_new_tokens=max_new_tokens, gamma=4,
                                       alpha_star=False)  # the α* LPs would dominate the round time
                session = Session.from_config(config, prompt_ids=ids)
                t = time.perf_counter()
                for _ in session.run():
                    pass
                seconds += time.perf_counter() - t
                tokens += len(session.generated_ids)
                calls += session.stats.target_calls
                drift += sum(1.0 - n.p for r in session.records for n in r.nodes if n.decision == "accepted")
        out[verifier] = {"tokens_per_second": round(tokens / seconds, 2), "tau": round(tokens / calls, 3),
                         "tv_per_token": round(drift / tokens, 4) if verifier == "typical" else 0.0}
    return out


def pearl_timeline(target: str = "smollm2-135m", gamma: int = 4, per_category: int = 1,
                   max_new_tokens: int = 96) -> dict:
    """Where PEARL's time goes on this machine: PEARL around the shipped FastDraft, on two threads and serially, on
    one prompt per category. Per mode (pre / post): rounds, mean lane times (ms) and how long each lane waits for the
    other; the target's one-token forward at the machine's threads and at one thread alone; and the modelled
    two-device clock (each round max(draft lane, target lane) of the serial run + its checks), labelled as a model."""
    import statistics

    from core.specdec.drafters import build_drafter
    from core.specdec.verify import build_verifier

    model = load_model(target)
    prompts = first_per_category(load_prompts(), per_category)
    runs: dict[str, dict] = {}
    for parallel in (True, False):
        rounds, wall, tokens = [], 0.0, 0
        for p in tqdm(prompts, desc=f"pearl parallel={parallel}"):
            drafter = build_drafter("pearl", model, {"parallel": parallel})
            config = SessionConfig(target=model.name, drafter="pearl", gamma=gamma, max_new_tokens=max_new_tokens)
            session = Session(model, drafter, build_verifier("greedy"), model.encode(p.prompt, chat=True), config)
            t = time.perf_counter()
            rounds += [r for r in session.run() if r is not None]
            wall += time.perf_counter() - t
            tokens += len(session.generated_ids)
        lanes = [_lane_ms(r.draft_info) for r in rounds]  # (draft, target, checks) per round
        by_mode = {}
        for mode in ("pre", "post"):
            picked = [(r, lane) for r, lane in zip(rounds, lanes, strict=True) if r.draft_info["mode"] == mode]
            if not picked:
                continue
            draft_ms, target_ms, checks_ms = zip(*(lane for _, lane in picked), strict=True)
            by_mode[mode] = {"rounds": len(picked), "draft_ms": round(statistics.mean(draft_ms), 2),
                             "target_ms": round(statistics.mean(target_ms), 2),
                             "checks_ms": round(statistics.mean(checks_ms), 2),
                             "tokens_per_round": round(statistics.mean(len(r.committed_ids) for r, _ in picked), 3)}
        modelled = sum(max(d, t) + checks for d, t, checks in lanes) / 1e3
        runs["parallel" if parallel else "serial"] = {
            "tokens": tokens, "seconds": round(wall, 2), "tokens_per_second": round(tokens / wall, 2),
            "rounds": len(rounds), "by_mode": by_mode,
            "modelled_two_devices_tokens_per_second": None if parallel else round(tokens / modelled, 2)}
    from core.specdec.cost_model import verify_ms

    prefix = len(model.encode(prompts[0].prompt, chat=True))  # the first prompt's length, as the runs above
    one_token = {}
    before = torch.get_num_threads()
    for threads in (before, 1):
        torch.set_num_threads(threads)
        try:
            one_token[threads] = round(verify_ms(model, prefix - 1, sizes=(1,), repeats=20)[0], 2)
        finally:
            torch.set_num_threads(before)
    return {"target": model.name, "gamma": gamma, "prompts": len(prompts), "max_new_tokens": max_new_tokens,
            "runs": runs, "target_one_token_ms_by_threads": one_token}


def _lane_ms(info: dict) -> tuple[float, float, float]:
    """A PEARL round's (draft lane, target lane, checks after the later lane) in ms, from its record."""
    draft, target = info["draft_lane"], info["target_lane"]
    return draft[1] - draft[0], target[1] - target[0], info["verify_end"] - max(draft[1], target[1])
