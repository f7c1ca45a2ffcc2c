"""``models``: the model presets."""

from __future__ import annotations

from core.runtime.models import PRESETS

NAME, HELP = "models", "list the model presets"


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    for preset in PRESETS.values():
        drafts = f"; drafts: {', '.join(preset.drafts)}" if preset.drafts else ""
        print(f"{preset.name:14s} {preset.description}{drafts}")
    return 0
