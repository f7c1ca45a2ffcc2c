"""Command line: ``python -m core.cli generate|bench|optimal-acceptance|easyspec-report|kv|var|models``.

Bad input exits non-zero with one line on stderr (``error: …``), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.drafters import DRAFTERS
from core.errors import DraftScopeError
from core.models import DEFAULT_TARGET, PRESETS, load_model
from core.records import alpha_star_summary
from core.verify import VERIFIERS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise DraftScopeError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core.cli", description="DraftScope speculative decoding engine")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = sub.add_parser("generate", help="generate with a target, a drafter and a verifier")
    gen.add_argument("--target", default=DEFAULT_TARGET, help=f"preset ({', '.join(PRESETS)}) or HF id/local dir")
    gen.add_argument("--drafter", default="ngram", help=f"one of {', '.join(DRAFTERS)}")
    gen.add_argument("--verifier", default=None, help=f"one of {', '.join(VERIFIERS)} (default: greedy at "
                                                      "temperature 0, else sampling, or rrs with a tree)")
    gen.add_argument("--draft-model", default=None, help="draft model preset for --drafter model (and the base of "
                                                         "--drafter sorted: default the target)")
    gen.add_argument("--gamma", type=int, default=5, help="draft length γ")
    gen.add_argument("--ngram-size", type=int, default=3, help="longest n-gram the ngram drafter matches")
    gen.add_argument("--min-ngram-size", type=int, default=2, help="shortest n-gram the ngram drafter matches")
    gen.add_argument("--exit-layer", type=int, default=None, help="ℓ for the early-exit drafter")
    gen.add_argument("--eta", type=float, default=None, help="kangaroo: stop drafting below this top probability "
                                                             "(default 0.6)")
    gen.add_argument("--easyspec-base", default="early-exit", help="easyspec: the drafter it runs layer-parallel "
                                                                    "(early-exit or model)")
    gen.add_argument("--group-size", type=int, default=4, help="easyspec: layers per fuzzy group")
    gen.add_argument("--no-calibrate", action="store_true", help="easyspec: keep the fuzzy drafter cache (no bonus "
                                                                 "calibration)")
    gen.add_argument("--adapter", default=None, help="kangaroo: adapter file (default: the one shipped for the "
                                                     "target in assets/kangaroo/)")
    gen.add_argument("--exits", default=None, help="sorted: trained exits file (default: the one shipped for the "
                                                   "draft model in assets/sorted/, else untrained exits)")
    gen.add_argument("--thresholds", default="", help="sorted: θ per exit but the last, e.g. 0.5,0.5 (default 0.5)")
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--tree", default="", help="draft a tree: children per depth (3,2,1,1) or budget:N (EAGLE-2 "
                                                 "style, depth ≤ --gamma); needs a model or early-exit drafter")
    gen.add_argument("--tree-branch", type=int, default=4, help="budget trees: nodes expanded per depth and "
                                                                 "children per node")
    gen.add_argument("--children", default="auto", help="tree children: topk, iid or without-replacement (auto: "
                                                        "what the verifier needs)")
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt")
    source.add_argument("--prompt-file")
    gen.add_argument("--chat", action="store_true", help="apply the model's chat template")
    gen.add_argument("--json", action="store_true", help="print one JSON object (token_ids, text, steps, stats)")

    bench = sub.add_parser("bench", help="tokens/s of Hugging Face generate vs our drafters, side by side")
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
    bench.add_argument("--json", action="store_true")

    opt = sub.add_parser("optimal-acceptance", help="α* for n drafts (exact LP and dual) and RRS / RSD acceptance")
    opt.add_argument("--p", required=True, help="target distribution, comma-separated (renormalised)")
    opt.add_argument("--q", required=True, help="draft distribution, comma-separated (renormalised)")
    opt.add_argument("--drafts", type=int, default=2, help="number of drafts n")
    opt.add_argument("--without-replacement", action="store_true", help="drafts are distinct (sampled without "
                                                                        "replacement)")
    opt.add_argument("--json", action="store_true")

    easy = sub.add_parser("easyspec-report", help="EasySpec: α/τ with and without calibration, fuzzy vs exact "
                                                  "cosine, modelled multi-device latency")
    easy.add_argument("--target", default=DEFAULT_TARGET)
    easy.add_argument("--exit-layer", type=int, default=None, help="early exit wrapped (default 4/5 of depth)")
    easy.add_argument("--group-size", type=int, default=4)
    easy.add_argument("--per-category", type=int, default=1)
    easy.add_argument("--max-new-tokens", type=int, default=64)

    kv = sub.add_parser("kv", help="KV importance: SnapKV, StreamingLLM, H2O, TOVA, SpecKV, SpecPC against the full "
                                   "cache on a long-context task")
    kv.add_argument("--target", default=DEFAULT_TARGET)
    kv.add_argument("--drafter", default="model", help="what guides speckv/specpc: model (--draft-model), "
                                                       "early-exit (the target's first --exit-layer layers) or sorted "
                                                       "(S2D's trained deepest exit)")
    kv.add_argument("--draft-model", default=None, help="draft model preset (default: the target itself)")
    kv.add_argument("--exit-layer", type=int, default=None, help="early-exit guide: ℓ (default a quarter)")
    kv.add_argument("--task", default="passkey", help="passkey, multikey, doc-qa, summarization, rag or a text file")
    kv.add_argument("--length", type=int, default=1024, help="prompt length in tokens (passkey, multikey)")
    kv.add_argument("--methods", default="snapkv,streamingllm,speckv,specpc")
    kv.add_argument("--budget", default="128", help="KV entries kept per head: a count, a ratio, or several (64,128)")
    kv.add_argument("--max-new-tokens", type=int, default=16)
    kv.add_argument("--window", type=int, default=32, help="observation window (SnapKV / SpecKV)")
    kv.add_argument("--kernel", type=int, default=7, help="max-pool kernel (SnapKV / SpecKV)")
    kv.add_argument("--samples", type=int, default=1, help="task instances (seeds seed, seed+1, …), rows averaged")
    kv.add_argument("--seed", type=int, default=0)
    kv.add_argument("--json", action="store_true", help="print the rows as JSON")

    var = sub.add_parser("var", help="visual autoregressive models: CoDe splits, ScaleKV, DraftAttention")
    var_sub = var.add_subparsers(dest="var_command", required=True, parser_class=_Parser)
    vg = var_sub.add_parser("generate", help="one class and seed: large drafter on scales < N, small refiner after")
    vg.add_argument("--class", dest="class_name", default="0", help="class index or name (e.g. 3 or triangle)")
    vg.add_argument("--seed", type=int, default=0)
    vg.add_argument("--split", type=int, default=None, help="N: scales made by the large model (default K−2; "
                    "K = large-only, 0 = small-only)")
    vg.add_argument("--scalekv", default=None, help="KV budget for ScaleKV on both models: 0.1, 10%% …")
    vg.add_argument("--n", type=int, default=1, help="images in the batch (class accuracy is reported when > 1)")
    vg.add_argument("--cfg", type=float, default=1.5, help="classifier-free guidance, ramped over the scales")
    vg.add_argument("--top-k", type=int, default=0)
    vg.add_argument("--top-p", type=float, default=0.0)
    vg.add_argument("--json", action="store_true", help="print the record as JSON")
    vg.add_argument("--out", default=None, help="write the image(s) to this PNG")
    vg.add_argument("--canvases", action="store_true", help="with --out: one row per image, a canvas per scale")
    vr = var_sub.add_parser("report", help="the measured tables: CoDe per N, ScaleKV budgets, DraftAttention")
    vr.add_argument("--what", default="code,scalekv,draft-attention", help="code, scalekv, draft-attention")
    vr.add_argument("--n", type=int, default=4, help="images per class")
    vr.add_argument("--classes", default="all", help="class indices (0,3,7) or all")
    vr.add_argument("--seed", type=int, default=0)
    vr.add_argument("--repeats", type=int, default=3, help="timing repeats (the median is reported)")
    vr.add_argument("--json", action="store_true")

    sub.add_parser("models", help="list the model presets")
    return parser


def cmd_generate(args) -> int:
    from core.engine import Session, SessionConfig

    if args.prompt_file:
        path = Path(args.prompt_file)
        if not path.is_file():
            raise DraftScopeError(f"prompt file not found: {path}")
        prompt = path.read_text(encoding="utf-8")
    else:
        prompt = args.prompt
    if not prompt.strip():
        raise DraftScopeError("the prompt is empty")
    verifier = args.verifier or ("greedy" if args.temperature == 0 else "rrs" if args.tree else "sampling")
    config = SessionConfig(target=args.target, drafter=args.drafter, verifier=verifier, gamma=args.gamma,
                           temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                           max_new_tokens=args.max_new_tokens, draft_model=args.draft_model,
                           ngram_size=args.ngram_size, min_ngram_size=args.min_ngram_size,
                           exit_layer=args.exit_layer, adapter=args.adapter, eta=args.eta,
                           easyspec_base=args.easyspec_base, group_size=args.group_size,
                           calibrate=not args.no_calibrate, tree=args.tree, tree_branch=args.tree_branch,
                           children=args.children, exits=args.exits, thresholds=args.thresholds)
    session = Session.from_config(config, prompt=prompt, chat=args.chat, allow_local=True)
    if args.json:
        for _ in session.run():
            pass
        out = session.summary()
        out["steps"] = [r.to_dict() for r in session.records]
        print(json.dumps(out))
        return 0
    for record in session.run():
        sys.stdout.write(record.committed_text)
        sys.stdout.flush()
    s = session.stats
    alpha = f"{s.alpha:.3f}" if s.alpha is not None else "—"
    print(f"\n[{s.generated} tokens, {s.tokens_per_second:.1f} tok/s, τ={s.tau:.2f}, α={alpha}, "
          f"{s.target_calls} target calls, finish={session.finish_reason}]", file=sys.stderr)
    bounds = alpha_star_summary(session.records)
    if bounds["groups"]:
        def fmt(key):
            return "—" if bounds[key] is None else f"{bounds[key]:.3f}"
        print(f"[{bounds['groups']} sibling groups: acceptance realised {fmt('realised')}, exact RRS "
              f"{fmt('exact_rrs')}, RSD {fmt('exact_rsd')}; α* with replacement {fmt('alpha_star_with')}, "
              f"without {fmt('alpha_star_without')}; one draft Σmin(p,q) {fmt('single_draft')}]", file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    from core.bench import format_table, forward_cost, run_bench

    rows = run_bench(target=args.target, prompts_path=args.prompts, limit=args.limit, per_category=args.per_category,
                     max_new_tokens=args.max_new_tokens, draft_model=args.draft_model, exit_layer=args.exit_layer,
                     methods=args.methods.split(",") if args.methods else None, chat=not args.no_chat,
                     tree_exit_layer=args.tree_exit_layer)
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


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise DraftScopeError(f"--{name} must be comma-separated numbers, got '{text}'") from exc


def cmd_optimal_acceptance(args) -> int:
    from core.optimal import report

    out = report(_floats(args.p, "p"), _floats(args.q, "q"), args.drafts, args.without_replacement)
    if args.json:
        print(json.dumps(out))
        return 0
    for key in ("alpha_star", "alpha_star_lp", "alpha_star_with_replacement", "alpha_star_without_replacement",
                "single_draft", "rrs_acceptance", "rsd_acceptance"):
        value = out[key]
        print(f"{key:32s} {'—' if value is None else f'{value:.6f}'}")
    return 0


def cmd_easyspec_report(args) -> int:
    from core.bench import easyspec_report

    print(json.dumps(easyspec_report(args.target, args.exit_layer, args.group_size, args.per_category,
                                     args.max_new_tokens), indent=1))
    return 0


def cmd_kv(args) -> int:
    from tqdm import tqdm

    from core.presses.run import guide_model, kv_table

    from core.presses import build_press

    methods = [m for m in args.methods.split(",") if m]
    for name in methods:
        build_press(name)  # unknown names fail before any model loads
    budgets = [b for b in str(args.budget).split(",") if b]
    target = load_model(args.target, allow_local=True)
    guide = guide_model(target, args.drafter, args.draft_model, args.exit_layer, allow_local=True)
    bar = tqdm(total=100, desc="kv", unit="%", disable=args.json and not sys.stderr.isatty())

    def progress(fraction, desc=""):
        bar.n = int(100 * fraction)
        bar.set_description(desc[:40] or "kv")
        bar.refresh()

    rows = kv_table(samples=args.samples, seed=args.seed, target=target, drafter=guide, task=args.task,
                    length=args.length, methods=methods, budgets=budgets, max_new_tokens=args.max_new_tokens,
                    window=args.window, kernel=args.kernel, progress=progress)
    bar.close()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    keys = ["method", "budget", "accuracy", "agreement", "recall", "correlation", "prefill_ms", "draft_ms",
            "decode_ms", "kv_bytes"]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join("—" if row.get(k) is None else str(row[k]) for k in keys) + " |")
    return 0


def cmd_var(args) -> int:
    from core.var.report import var_generate_cli, var_report_cli

    return var_generate_cli(args) if args.var_command == "generate" else var_report_cli(args)


def cmd_models(args) -> int:
    for preset in PRESETS.values():
        print(f"{preset.name:14s} {preset.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        commands = {"generate": cmd_generate, "bench": cmd_bench, "optimal-acceptance": cmd_optimal_acceptance,
                    "easyspec-report": cmd_easyspec_report, "kv": cmd_kv, "var": cmd_var,
                    "models": cmd_models}
        return commands[args.command](args)
    except DraftScopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # never a traceback for the user; the message says what broke
        print(f"error: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
