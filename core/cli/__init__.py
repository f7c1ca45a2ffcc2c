"""Command line: ``python -m core.cli generate|bench|optimal-acceptance|easyspec-report|kv|var|models|export``.

One module per subcommand (``NAME``, ``HELP``, ``add_arguments(parser)``, ``run(args) -> exit code``), listed in
``COMMANDS``. Bad input exits 2 with one line on stderr (``error: …``), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from core.cli import bench, easyspec, export, generate, kv, models, optimal, var
from core.cli.options import apply_placement
from core.errors import DraftScopeError

COMMANDS = (generate, bench, optimal, easyspec, kv, var, models, export)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise DraftScopeError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core.cli", description="DraftScope speculative decoding engine")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.NAME, help=command.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        apply_placement(args, os.environ)
        return next(c for c in COMMANDS if c.NAME == args.command).run(args)
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


__all__ = ["build_parser", "main"]
