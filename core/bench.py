"""Side-by-side throughput benchmark: Hugging Face ``generate`` and its built-in speculative modes vs our engine.

All methods run in one process on the same prompts, alternating (the order rotates from prompt to prompt), after a
warm-up. tokens/s = generated tokens / wall time of the whole call (prefill included), summed over prompts;
speedup is relative to Hugging Face plain greedy measured in the same run. Everything is greedy, so every method's
output must be token-identical to the plain one (``identical_to_target``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm import tqdm

from core.drafters.early_exit import default_exit_layer
from core.engine import Session, SessionConfig
from core.errors import DraftScopeError
from core.models import load_model
from core.prompts import load_prompts

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


def _hf(target, **kwargs) -> Callable[[list[int], int], tuple[list[int], dict]]:
    def run(ids: list[int], n: int):
        with torch.inference_mode():
            out = target.model.generate(torch.tensor([ids], device=target.device), max_new_tokens=n, do_sample=False,
                                        pad_token_id=target.model.generation_config.pad_token_id, **kwargs)
        return out[0, len(ids):].tolist(), {}
    return run


def _ours(target, drafter: str, record: bool = True, **options) -> Callable:
    def run(ids: list[int], n: int):
        config = SessionConfig(target=target.name, drafter=drafter, max_new_tokens=n, record=record, **options)
        session = Session.from_config(config, prompt_ids=ids)
        for _ in session.run():
            pass
        s = session.stats
        return session.generated_ids, {"drafted": s.drafted, "accepted": s.accepted, "target_calls": s.target_calls}
    return run


def build_methods(target, draft_model: str | None, exit_layer: int | None) -> dict[str, Callable]:
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
        "ours-ngram-hf-settings": _ours(target, "ngram", gamma=PROMPT_LOOKUP_TOKENS, ngram_size=PROMPT_LOOKUP_NGRAM,
                                        min_ngram_size=1),  # like for like with hf-prompt-lookup
        f"ours-early-exit-{ell}": _ours(target, "early-exit", exit_layer=ell),
    }
    if draft_model:
        drafter = load_model(draft_model, device=target.device, dtype=target.dtype)
        methods["hf-assisted"] = _hf(target, assistant_model=drafter.model)
        methods["ours-model"] = _ours(target, "model", draft_model=draft_model)
    return methods


def run_bench(target: str = "smollm2-135m", prompts_path: str | None = None, limit: int | None = None,
              per_category: int | None = None, max_new_tokens: int = 128, draft_model: str | None = None,
              exit_layer: int | None = None, methods: list[str] | None = None, chat: bool = True) -> list[dict]:
    if not 1 <= max_new_tokens <= 4096:
        raise DraftScopeError(f"max new tokens must be in 1..4096, got {max_new_tokens}")
    model = load_model(target)
    prompts = load_prompts(prompts_path)
    if per_category:
        prompts = [p for i, p in enumerate(prompts)
                   if sum(q.category == p.category for q in prompts[:i]) < per_category]
    prompts = prompts[:limit] if limit else prompts
    use_chat = chat and bool(getattr(model.tokenizer, "chat_template", None))
    encoded = [model.encode(p.prompt, chat=use_chat) for p in prompts]
    table = build_methods(model, draft_model, exit_layer)
    if methods:
        unknown = [m for m in methods if m not in table]
        if unknown:
            raise DraftScopeError(f"unknown bench method(s) {', '.join(unknown)}; choose from {', '.join(table)}")
        table = {m: table[m] for m in ["hf-greedy", *methods] if m in table}  # hf-greedy is the reference
    names = list(table)
    for name in tqdm(names, desc="warm-up", leave=False):
        table[name](encoded[0], 8)
    tallies = {name: _Tally() for name in names}
    bar = tqdm(total=len(encoded) * len(names), desc="bench")
    for i, ids in enumerate(encoded):
        order = names[i % len(names):] + names[: i % len(names)]
        results = {}
        for name in order:
            bar.set_postfix_str(name)
            t = time.perf_counter()
            out, info = table[name](ids, max_new_tokens)
            results[name] = (out, info, time.perf_counter() - t)
            bar.update()
        reference = results["hf-greedy"][0]
        for name, (out, info, seconds) in results.items():
            tally = tallies[name]
            tally.tokens += len(out)
            tally.seconds += seconds
            tally.identical &= out == reference
            tally.drafted += info.get("drafted", 0)
            tally.accepted += info.get("accepted", 0)
            tally.target_calls += info.get("target_calls", 0)
    bar.close()
    base = tallies["hf-greedy"].tokens / tallies["hf-greedy"].seconds
    rows = []
    for name in names:
        t = tallies[name]
        tps = t.tokens / t.seconds
        ours = name.startswith("ours-")
        rows.append({
            "method": name, "tokens_per_second": round(tps, 2), "speedup": round(tps / base, 3),
            "tau": round(t.tokens / t.target_calls, 3) if ours and t.target_calls else None,
            "alpha": round(t.accepted / t.drafted, 3) if ours and t.drafted else None,
            "identical_to_target": t.identical, "tokens": t.tokens, "seconds": round(t.seconds, 2),
            "prompts": len(encoded), "max_new_tokens": max_new_tokens, "target": target,
        })
    return rows


def format_table(rows: list[dict]) -> str:
    def fmt(v):
        return "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    cols = ["method", "tokens_per_second", "speedup", "tau", "alpha", "identical_to_target"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
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
    return "\n".join(lines + [""] + notes)
