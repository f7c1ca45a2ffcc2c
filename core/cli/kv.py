"""``kv``: KV importance methods (SnapKV, StreamingLLM, H2O, TOVA, SpecKV, SpecPC) against the full cache."""

from __future__ import annotations

import json
import sys

from core.cli.options import COUNT, SEED, add_option_flags, add_placement_flags, integer
from core.cli.table import markdown_table
from core.kv import PRESSES
from core.runtime.models import DEFAULT_TARGET, load_model

NAME, HELP = "kv", "KV importance: SnapKV, StreamingLLM, H2O, TOVA, SpecKV, SpecPC against the full cache on a " \
                   "long-context task"


def add_arguments(kv) -> None:
    kv.add_argument("--target", default=DEFAULT_TARGET)
    add_placement_flags(kv)
    kv.add_argument("--drafter", default="model", help="what guides speckv/specpc: model (--draft-model), "
                                                       "early-exit (the target's first --exit-layer layers) or sorted "
                                                       "(S2D's trained deepest exit)")
    kv.add_argument("--draft-model", default=None, help="draft model preset (default: the target itself)")
    kv.add_argument("--exit-layer", type=integer(1), default=None, help="early-exit guide: ℓ (default a quarter)")
    kv.add_argument("--task", default="passkey", help="passkey, multikey, travel, doc-qa, summarization, rag or a "
                                                         "text file")
    kv.add_argument("--length", type=COUNT, default=1024, help="prompt length in tokens (passkey, multikey, travel)")
    kv.add_argument("--methods", default="snapkv,streamingllm,speckv,specpc")
    kv.add_argument("--budget", default="128", help="KV entries kept per head: a count, a ratio, or several (64,128)")
    kv.add_argument("--max-new-tokens", type=COUNT, default=16)
    kv.add_argument("--samples", type=COUNT, default=1, help="task instances (seeds seed, seed+1, …), rows averaged")
    kv.add_argument("--seed", type=SEED, default=0)
    kv.add_argument("--json", action="store_true", help="print the rows as JSON")
    flags = add_option_flags(kv, PRESSES, "press options (each sets its option in every chosen method named in its "
                                          "help; unset: the method's default)")
    kv.set_defaults(press_flags=flags)


def run(args) -> int:
    from tqdm import tqdm

    from core.kv import build_press
    from core.kv.run import guide_model, kv_table, parse_budget

    methods = [m for m in args.methods.split(",") if m]
    for name in methods:
        build_press(name)  # unknown names fail before any model loads
    press_options = args.press_flags.values_for(args, methods)
    for name in methods:
        build_press(name, press_options[name])  # so do bad option values
    budgets = [b for b in str(args.budget).split(",") if b]
    for budget in budgets:
        parse_budget(budget, 1 << 30)  # a bad budget fails before any model loads (ratios are checked again later)
    target = load_model(args.target, allow_local=True)
    guide = guide_model(target, args.drafter, args.draft_model, args.exit_layer, allow_local=True)
    bar = tqdm(total=100, desc="kv", unit="%", disable=args.json and not sys.stderr.isatty())

    def progress(fraction, desc=""):
        bar.n = int(100 * fraction)
        bar.set_description(desc[:40] or "kv")
        bar.refresh()

    rows = kv_table(samples=args.samples, seed=args.seed, target=target, drafter=guide, task=args.task,
                    length=args.length, methods=methods, budgets=budgets, max_new_tokens=args.max_new_tokens,
                    press_options=press_options, progress=progress)
    bar.close()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    met = [key for key in rows[0] if key.startswith("met ")] if rows else []  # travel: per constraint
    print(markdown_table(rows, ["method", "budget", "accuracy", "agreement", "recall", "correlation", "prefill_ms",
                                "draft_ms", "decode_ms", "kv_bytes", *met]))
    return 0
