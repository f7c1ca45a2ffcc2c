"""``generate``: one generation with a target, a drafter and a verifier; text streams, or ``--json``."""

from __future__ import annotations

import sys
from pathlib import Path

from core.cli.options import COUNT, SEED, add_option_flags, add_placement_flags, integer, number
from core.errors import DraftScopeError
from core.runtime.models import DEFAULT_TARGET, PRESETS
from core.specdec.config import MAX_GAMMA, MAX_NEW_TOKENS
from core.specdec.drafters import DRAFTERS, drafter_class
from core.specdec.records import alpha_star_summary
from core.specdec.trace import dumps, save_trace, trace_of
from core.specdec.verify import VERIFIERS

NAME, HELP = "generate", "generate with a target, a drafter and a verifier"


def add_arguments(gen) -> None:
    gen.add_argument("--target", default=DEFAULT_TARGET, help=f"preset ({', '.join(PRESETS)}) or HF id/local dir")
    add_placement_flags(gen)
    gen.add_argument("--drafter", default="ngram", help=f"one of {', '.join(DRAFTERS)}")
    gen.add_argument("--verifier", default=None, help=f"one of {', '.join(VERIFIERS)} (default: greedy at "
                                                      "temperature 0, else sampling, or rrs with a tree)")
    gen.add_argument("--gamma", type=integer(1, MAX_GAMMA), default=5, help="draft length γ")
    gen.add_argument("--temperature", type=number(), default=0.0)
    gen.add_argument("--top-k", type=integer(0), default=0)
    gen.add_argument("--top-p", type=number(), default=1.0)
    gen.add_argument("--seed", type=SEED, default=0)
    gen.add_argument("--max-new-tokens", type=integer(1, MAX_NEW_TOKENS), default=128)
    gen.add_argument("--tree", default="", help="draft a tree: children per depth (3,2,1,1), paths of top-k indices "
                                                 "([[0],[1],[0,0]], Medusa's format) or budget:N (EAGLE-2 style, "
                                                 "depth ≤ --gamma); needs a drafter with probabilities")
    gen.add_argument("--tree-branch", type=COUNT, default=4, help="budget trees: nodes expanded per depth and "
                                                                 "children per node")
    gen.add_argument("--children", default="auto", help="tree children: topk, iid or without-replacement (auto: "
                                                        "what the verifier needs)")
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt")
    source.add_argument("--prompt-file")
    gen.add_argument("--chat", action="store_true", help="apply the model's chat template")
    gen.add_argument("--json", action="store_true", help="print the session as one JSON trace (draftscope.trace: "
                                                         "settings, prompt, generated ids, text, stats, records)")
    gen.add_argument("--trace", metavar="FILE", help="also write the trace to FILE (atomically; the app's session "
                                                     "tabs load it)")
    flags = add_option_flags(gen, DRAFTERS, "drafter options (each applies to the drafters named in its help)")
    verifier_flags = add_option_flags(gen, VERIFIERS, "verifier options (each applies to the verifiers named in its "
                                                      "help)")
    gen.set_defaults(drafter_flags=flags, verifier_flags=verifier_flags)


def run(args) -> int:
    from core.specdec import Session, SessionConfig

    if args.prompt_file:
        path = Path(args.prompt_file)
        if not path.is_file():
            raise DraftScopeError(f"prompt file not found: {path}")
        prompt = path.read_text(encoding="utf-8")
    else:
        prompt = args.prompt
    if not prompt.strip():
        raise DraftScopeError("the prompt is empty")
    drafter_class(args.drafter)  # an unknown drafter is named before its options are read
    verifier = args.verifier or ("greedy" if args.temperature == 0 else "rrs" if args.tree else "sampling")
    config = SessionConfig(target=args.target, drafter=args.drafter, verifier=verifier, gamma=args.gamma,
                           temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                           max_new_tokens=args.max_new_tokens, tree=args.tree, tree_branch=args.tree_branch,
                           children=args.children, drafter_options=args.drafter_flags.values(args, args.drafter),
                           verifier_options=args.verifier_flags.values(args, verifier))
    if args.trace:
        _check_trace_path(Path(args.trace))
    session = Session.from_config(config, prompt=prompt, chat=args.chat, allow_local=True)
    if args.json:
        for _ in session.run():
            pass
        trace = trace_of(session)
        if args.trace:
            save_trace(trace, args.trace)
        print(dumps(trace))
        return 0
    for record in session.run():
        sys.stdout.write(record.committed_text)
        sys.stdout.flush()
    if args.trace:
        save_trace(trace_of(session), args.trace)
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


def _check_trace_path(path: Path) -> None:
    """Refuse a trace path that cannot be written before any model loads."""
    if path.is_dir():
        raise DraftScopeError(f"--trace {path}: a folder, name a file")
    if not path.parent.is_dir():
        raise DraftScopeError(f"cannot write the trace to {path}: no folder {path.parent}")
