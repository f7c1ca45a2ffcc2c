"""``optimal-acceptance``: α* for n drafts (exact LP and its dual) beside the exact RRS / RSD acceptance."""

from __future__ import annotations

import json

from core.cli.options import COUNT
from core.errors import DraftScopeError

NAME, HELP = "optimal-acceptance", "α* for n drafts (exact LP and dual) and RRS / RSD acceptance"


def add_arguments(opt) -> None:
    opt.add_argument("--p", required=True, help="target distribution, comma-separated (renormalised)")
    opt.add_argument("--q", required=True, help="draft distribution, comma-separated (renormalised)")
    opt.add_argument("--drafts", type=COUNT, default=2, help="number of drafts n")
    opt.add_argument("--without-replacement", action="store_true", help="drafts are distinct (sampled without "
                                                                        "replacement)")
    opt.add_argument("--json", action="store_true")


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise DraftScopeError(f"--{name} must be comma-separated numbers, got '{text}'") from exc


def run(args) -> int:
    from core.specdec.optimal import report

    out = report(_floats(args.p, "p"), _floats(args.q, "q"), args.drafts, args.without_replacement)
    if args.json:
        print(json.dumps(out))
        return 0
    for key in ("alpha_star", "alpha_star_lp", "alpha_star_with_replacement", "alpha_star_without_replacement",
                "single_draft", "rrs_acceptance", "rsd_acceptance"):
        value = out[key]
        print(f"{key:32s} {'—' if value is None else f'{value:.6f}'}")
    return 0
