"""``easyspec-report``: EasySpec's α / τ with and without calibration, fuzzy vs exact cosine, modelled latency."""

from __future__ import annotations

import json

from core.cli.options import COUNT, integer
from core.runtime.models import DEFAULT_TARGET

NAME, HELP = "easyspec-report", "EasySpec: α/τ with and without calibration, fuzzy vs exact cosine, modelled " \
                                "multi-device latency"


def add_arguments(easy) -> None:
    easy.add_argument("--target", default=DEFAULT_TARGET)
    easy.add_argument("--exit-layer", type=integer(1), default=None, help="early exit wrapped (default 4/5 of depth)")
    easy.add_argument("--group-size", type=COUNT, default=4)
    easy.add_argument("--per-category", type=COUNT, default=1)
    easy.add_argument("--max-new-tokens", type=COUNT, default=64)


def run(args) -> int:
    from core.specdec.bench import easyspec_report

    print(json.dumps(easyspec_report(args.target, args.exit_layer, args.group_size, args.per_category,
                                     args.max_new_tokens), indent=1))
    return 0
