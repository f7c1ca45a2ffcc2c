"""``export``: a trained drafter as a folder a serving engine loads (vLLM's ``--speculative-config``), see
``core.export``."""

from __future__ import annotations

from core.cli.options import integer
from core.export import MAX_GAMMA, export
from core.export.fastdraft import FILLS
from core.runtime.models import DEFAULT_TARGET

NAME, HELP = "export", "export a trained drafter for vLLM (a Medusa folder, a draft model, or an n-gram config)"


def add_arguments(parser) -> None:
    parser.add_argument("--drafter", required=True, help="medusa, fastdraft or ngram")
    parser.add_argument("--target", default=DEFAULT_TARGET, help="the target preset the drafter was trained for")
    parser.add_argument("--out", required=True, help="the folder to write (must not exist or be empty)")
    parser.add_argument("--gamma", type=integer(1, MAX_GAMMA), default=None,
                        help="num_speculative_tokens (default: the benchmark matrix's γ for that drafter)")
    parser.add_argument("--checkpoint", default=None, help="a trained file other than the shipped one")
    parser.add_argument("--trimmed-rows", choices=FILLS, default=FILLS[0],
                        help="fastdraft: what the LM-head rows outside the VocabTrim'd tokens hold")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out folder")


def run(args) -> int:
    result = export(args.drafter, args.target, args.out, args.gamma, args.checkpoint, args.force, args.trimmed_rows)
    row = result.record["matrix_row"]
    print(f"wrote {result.out}")
    print(f"vllm serve {result.record['target_checkpoint'] or result.target} --speculative-config "
          f"\"$(cat {result.out}/speculative_config.json)\"")
    print(f"Production metrics tab: compare with '{row['label']}'" if row else
          "no shipped benchmark-matrix row ran this drafter so; see README.md in the folder")
    return 0
