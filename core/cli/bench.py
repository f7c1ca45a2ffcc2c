"""``bench``: tokens/s of Hugging Face ``generate`` and our drafters side by side (``core.specdec.bench``)."""

from __future__ import annotations

import json

from core.cli.options import COUNT, add_placement_flags, integer, number
from core.cli.table import markdown_table
from core.errors import DraftScopeError
from core.runtime.models import DEFAULT_TARGET
from core.specdec.longctx import DEFAULT_DRAFTERS, DEFAULT_LENGTHS, SWEEP_TASKS

NAME, HELP = "bench", "tokens/s of Hugging Face generate vs our drafters, side by side"


def add_arguments(bench) -> None:
    bench.add_argument("--target", default=DEFAULT_TARGET)
    add_placement_flags(bench)
    bench.add_argument("--prompts", default=None, help="a .jsonl (id, category, prompt) or .txt file")
    bench.add_argument("--limit", type=COUNT, default=None, help="use the first N prompts only")
    bench.add_argument("--per-category", type=COUNT, default=None, help="use the first N prompts of each category")
    bench.add_argument("--max-new-tokens", type=integer(1, 4096), default=128)
    bench.add_argument("--draft-model", default=None, help="also bench a model drafter (and HF assisted generation)")
    bench.add_argument("--exit-layer", type=integer(1), default=None)
    bench.add_argument("--methods", default=None, help="comma-separated subset of the method names")
    bench.add_argument("--tree-exit-layer", type=integer(1), default=None,
                       help="ℓ of the early-exit drafter in the tree vs chain methods (default: 4/5 of depth)")
    bench.add_argument("--forward-cost", action="store_true", help="also time one target forward of 1..32 new "
                                                                   "tokens (the cost of verifying that many)")
    bench.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
    bench.add_argument("--fastdraft", default=None, help="also bench these FastDraft checkpoints (comma-separated)")
    bench.add_argument("--typical-drift", action="store_true", help="only: typical acceptance vs draw-and-match with "
                                                                    "the shipped Hydra heads at T = 0.7 (speed, τ, "
                                                                    "TV drift per token)")
    bench.add_argument("--pearl-timeline", action="store_true", help="only: where PEARL's time goes (two threads vs "
                                                                      "serial, per mode, and a two-device model)")
    bench.add_argument("--long-context", action="store_true",
                       help="only: each --drafters drafter on --task at each of --lengths beside the target alone "
                            "(drafter KV bytes, α, τ, tokens/s per length; --max-new-tokens new tokens each)")
    bench.add_argument("--lengths", default=",".join(map(str, DEFAULT_LENGTHS)),
                       help="--long-context: comma-separated prompt lengths in tokens")
    bench.add_argument("--task", default="passkey", help=f"--long-context: {' or '.join(SWEEP_TASKS)}")
    bench.add_argument("--drafters", default=",".join(DEFAULT_DRAFTERS), help="--long-context: drafters to compare")
    bench.add_argument("--gamma", type=COUNT, default=4, help="--long-context: γ of the drafters' chains")
    bench.add_argument("--longspec-checkpoint", default=None, help="--long-context: a LongSpec drafter file (default: "
                                                                   "the shipped one)")
    bench.add_argument("--matrix", action="store_true",
                       help="only: every drafter configuration that can run on --target beside HF greedy, per prompt "
                            "category (core.specdec.matrix; cached per configuration)")
    bench.add_argument("--configs", default=None, help="--matrix: comma-separated configuration or drafter names")
    bench.add_argument("--out", default=None, help="--matrix: also write the matrix JSON to this file")
    bench.add_argument("--no-cache", action="store_true", help="--matrix: run everything again, cache nothing")
    bench.add_argument("--recommend", action="store_true",
                       help="only: recommend a drafter and its settings for --target from its benchmark matrix (the "
                            "shipped one, or --matrix-file), with the predicted speed-up, its interval and the reasons")
    bench.add_argument("--matrix-file", default=None, help="--recommend: a matrix JSON (bench --matrix --out)")
    bench.add_argument("--category", default=None, help="--recommend: the workload's prompt category (default: all)")
    bench.add_argument("--temperature", type=number(), default=0.0, help="--recommend: the sampling temperature")
    bench.add_argument("--top", type=COUNT, default=3, help="--recommend: how many settings to rank")
    bench.add_argument("--holdout", action="store_true", help="--recommend: instead, the recommender's accuracy on "
                                                              "held-out prompts (fit on half of each category's "
                                                              "prompts, measured on the other half, both ways)")
    bench.add_argument("--json", action="store_true")


def run(args) -> int:
    from core.specdec.bench import format_table, forward_cost, pearl_timeline, run_bench, typical_drift

    if args.long_context:
        return long_context(args)

    if args.matrix:
        return matrix(args)

    if args.recommend:
        return recommend(args)

    if args.pearl_timeline:
        print(json.dumps(pearl_timeline(args.target, per_category=args.per_category or 1,
                                        max_new_tokens=args.max_new_tokens), indent=1))
        return 0

    if args.typical_drift:
        print(json.dumps(typical_drift(args.target, per_category=args.per_category or 1,
                                       max_new_tokens=args.max_new_tokens), indent=1))
        return 0

    rows = run_bench(target=args.target, prompts_path=args.prompts, limit=args.limit, per_category=args.per_category,
                     max_new_tokens=args.max_new_tokens, draft_model=args.draft_model, exit_layer=args.exit_layer,
                     methods=args.methods.split(",") if args.methods else None, chat=not args.no_chat,
                     tree_exit_layer=args.tree_exit_layer,
                     fastdraft=args.fastdraft.split(",") if args.fastdraft else None)
    cost = forward_cost(args.target) if args.forward_cost else None
    if args.json:
        print(json.dumps({"rows": rows, "forward_ms": cost} if cost else rows, indent=1))
        return 0
    print(format_table(rows))
    if cost:
        one = cost[min(cost)]
        print("target forward of k new tokens (ms, × one token): " +
              ", ".join(f"k={k}: {ms:.1f} ({ms / one:.2f}×)" for k, ms in cost.items()))
    return 0


def matrix(args) -> int:
    """``--matrix``: ``core.specdec.matrix.run_matrix`` on the chosen configurations, printed as a markdown table (or
    the matrix JSON), optionally written to ``--out``."""
    from tqdm import tqdm

    from core.prompts import load_prompts
    from core.specdec.bench import first_per_category
    from core.specdec.matrix import format_matrix, matrix_configs, run_matrix, save_matrix

    prompts = load_prompts(args.prompts)
    if args.per_category:
        prompts = first_per_category(prompts, args.per_category)
    prompts = prompts[: args.limit] if args.limit else prompts
    subset = [c for c in args.configs.split(",") if c.strip()] if args.configs is not None else None
    if subset == []:
        raise DraftScopeError("--configs names no configuration")
    configs = matrix_configs(args.target, subset)
    bars: list = []

    def progress(done: int, total: int, label: str) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="matrix", leave=False))
        bars[0].n = done
        bars[0].set_postfix_str(label)
        bars[0].refresh()

    try:
        result = run_matrix(args.target, configs, prompts, args.max_new_tokens, progress=progress,
                            use_cache=not args.no_cache, chat=not args.no_chat)
    finally:
        for bar in bars:
            bar.close()
    if args.out:
        save_matrix(result, args.out)
    print(json.dumps(result, indent=1, ensure_ascii=False) if args.json else format_matrix(result))
    return 0


def recommend(args) -> int:
    """``--recommend``: ``core.specdec.recommend`` fitted on the matrix, its ranked settings and reasons (or, with
    ``--holdout``, its accuracy on held-out prompts)."""
    from core.specdec.matrix import load_matrix, shipped_matrix
    from core.specdec.recommend import Recommender, holdout_halves

    matrix = load_matrix(args.matrix_file) if args.matrix_file else shipped_matrix(args.target)
    if matrix is None:
        raise DraftScopeError(f"no benchmark matrix ships for '{args.target}': run bench --matrix --out FILE and pass "
                              "--matrix-file FILE")
    if args.holdout:
        result = holdout_halves(matrix, args.temperature)
        if args.json:
            print(json.dumps(result, indent=1))
            return 0
        print(markdown_table([{"config": r["config"], "category": r["category"], "predicted": r["predicted"],
                               "measured": r["measured"], "error %": r["error_pct"], "right": r["within"]}
                              for r in result["rows"]],
                             ["config", "category", "predicted", "measured", "error %", "right"], _cell))
        print(f"\n{result['within']} of {result['n']} predictions within ±{result['right_within']:.0%} of the measured "
              f"speed-up ({result['share_within']:.0%}); mean absolute error {result['mape_pct']:.1f} %; interval "
              f"coverage {result['interval_coverage']:.0%}; top pick was the measured best in "
              f"{result['top_is_best_share']:.0%} of categories (mean regret {result['mean_regret']:.3f}×).")
        return 0
    recs = Recommender.from_matrix(matrix).recommend(args.category, args.temperature, args.top)
    if args.json:
        print(json.dumps([r.to_dict() for r in recs], indent=1))
        return 0
    for rank, r in enumerate(recs, 1):
        low, high = r.interval
        print(f"{rank}. {r.config}: predicted {r.speedup:.2f}× ({low:.2f}–{high:.2f}), τ {r.tau:.2f}"
              + (f", α {r.alpha:.2f}" if r.alpha is not None else ""))
        for reason in r.reasons:
            print(f"   - {reason}")
    return 0


LONG_CONTEXT_COLUMNS = {"drafter": "drafter", "length": "prompt tokens", "drafter_kv_bytes": "drafter KV bytes",
                        "target_kv_bytes": "target KV bytes", "alpha": "α", "tau": "τ",
                        "tokens_per_second": "tokens/s", "target_tokens_per_second": "target-only tokens/s",
                        "speedup": "speed-up", "prefill_s": "prefill s", "target_prefill_s": "target prefill s",
                        "identical_to_target": "identical"}


def long_context(args) -> int:
    """``--long-context``: ``core.specdec.longctx.context_sweep``, printed as a table (or JSON rows)."""
    from tqdm import tqdm

    from core.specdec.longctx import context_sweep, parse_lengths

    lengths = parse_lengths(args.lengths)  # bad input fails before any model loads
    drafters = [d.strip() for d in args.drafters.split(",") if d.strip()]
    options = {"longspec": {"checkpoint": args.longspec_checkpoint}} if args.longspec_checkpoint else None
    bars: list = []  # made at the first report, after every check passed (an error stays one line)

    def progress(done: int, total: int, label: str) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="long context", leave=False))
        bars[0].n = done
        bars[0].set_postfix_str(label)

    try:
        rows = context_sweep(args.target, drafters, args.task, lengths, args.max_new_tokens, args.gamma,
                             progress=progress, options=options)
    finally:
        for bar in bars:
            bar.close()
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=1))
        return 0
    table = [{LONG_CONTEXT_COLUMNS[k]: v for k, v in r.to_dict().items() if k in LONG_CONTEXT_COLUMNS} for r in rows]
    print(markdown_table(table, list(LONG_CONTEXT_COLUMNS.values()), _cell))
    print(f"\n{args.task} on {args.target}, {args.max_new_tokens} new tokens, γ = {args.gamma}, greedy. Drafter KV: "
          "LongSpec's ring (fixed at construction); a model drafter's own KV cache at its peak between rounds. "
          "tokens/s: the decode phase (prefill timed apart); speed-up over the target alone at the same length.")
    return 0


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
