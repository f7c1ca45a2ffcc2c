"""On/off switches read from environment variables, parsed one way everywhere."""

from __future__ import annotations

import os

from core.errors import DraftScopeError

ON, OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_flag(name: str, default: bool | None = False) -> bool | None:
    """``name``'s value as a switch: 1/true/yes/on → True, 0/false/no/off → False (any case, spaces ignored); unset or
    empty → ``default`` (None lets a caller fall back to another variable). Any other value is a DraftScopeError that
    names the variable and the words it takes, rather than a guess."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ON or value in OFF:
        return value in ON
    raise DraftScopeError(f"{name}={os.environ[name]!r} is not a switch: use one of {', '.join(ON)} "
                          f"or {', '.join(OFF)}")
