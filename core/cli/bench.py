"""``bench``: tokens/s of Hugging Face ``generate`` and our drafters side by side (``core.specdec.bench``)."""

from __future__ import annotations

import json

from core.runtime.models import DEFAULT_TARGET

NAME, HELP = "bench", "tokens/s of Hugging Face generate vs our drafters, side by side"


def add_arguments(bench) -> None:
    bench.add_argument("--target", default=DEFAULT_TARGET)
    bench.add_argument("--prompts", default=None, help="a .jsonl (id, category, prompt) or .txt file")
    bench.add_argument("--limit", type=int, default=None, help="use the first N prompts only")
    bench.add_argument("--per-category", type=int, default=None, help="use the first N prompts of each category")
    bench.add_argument("--max-new-tokens", type=int, default=128)
    bench.add_argument("--draft-model", default=None, help="also bench a model drafter (and HF assisted generation)")
    bench.add_argument("--exit-layer", type=int, default=None)
    bench.add_argument("--methods", default=None, help="comma-separated subset of the method names")
    bench.add_argument("--tree-exit-layer", type=int, default=None, help="ℓ of the early-exit drafter in the tree "
                                                                         "vs chain methods (default: 4/5 of depth)")
    bench.add_argument("--forward-cost", action="store_true", help="also time one target forward of 1..32 new "
                                                                   "tokens (the cost of verifying that many)")
    bench.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
    bench.add_argument("--fastdraft", default=None, help="also bench these FastDraft checkpoints (comma-separated)")
    bench.add_argument("--typical-drift", action="store_true", help="only: typical acceptance vs draw-and-match with "
                                                                    "the shipped Hydra heads at T = 0.7 (speed, τ, "
                                                                    "TV drift per token)")
    bench.add_argument("--pearl-timeline", action="store_true", help="only: where PEARL's time goes (two threads vs "
                                                                      "serial, per mode, and a two-device model)")
    bench.add_argument("--json", action="store_true")


def run(args) -> int:
    from core.specdec.bench import format_table, forward_cost, pearl_timeline, run_bench, typical_drift

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
