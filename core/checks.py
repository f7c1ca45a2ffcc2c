"""Checks of plain values that come from outside (app fields, API clients, JSON): a whole number in a range, a finite
number in a range, a bounded text. Each returns the value as the right type or raises a DraftScopeError that names
the setting and what it got, never a Python error from deeper down (``int(1e20)`` overflowing a seed, ``int(5.5)``
silently becoming 5, NaN passing every comparison)."""

from __future__ import annotations

import math

from core.errors import DraftScopeError


def _shown(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def whole(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int: an int, or a float / numeric string with no fractional part; within [lo, hi]."""
    if isinstance(value, bool) or value is None:
        raise DraftScopeError(f"{name} must be a whole number, got {_shown(value)}")
    if isinstance(value, str):
        try:
            value = float(value.strip()) if any(c in value for c in ".eE") else int(value.strip())
        except ValueError:
            raise DraftScopeError(f"{name} must be a whole number, got {_shown(value)}") from None
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise DraftScopeError(f"{name} must be a whole number, got {_shown(value)}")
        value = int(value)
    if not isinstance(value, int):
        raise DraftScopeError(f"{name} must be a whole number, got {type(value).__name__}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise DraftScopeError(f"{name} must be in {lo if lo is not None else '…'}..{hi if hi is not None else '…'}, "
                              f"got {_shown(value)}")
    return value


def finite(name: str, value, lo: float | None = None, hi: float | None = None) -> float:
    """``value`` as a finite float (an int, a float or a numeric string) within [lo, hi]."""
    if isinstance(value, bool) or value is None:
        raise DraftScopeError(f"{name} must be a number, got {_shown(value)}")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise DraftScopeError(f"{name} must be a number, got {_shown(value)}") from None
    if not math.isfinite(number):
        raise DraftScopeError(f"{name} must be a finite number, got {_shown(value)}")
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        bounds = f"{'…' if lo is None else f'{lo:g}'}..{'…' if hi is None else f'{hi:g}'}"
        raise DraftScopeError(f"{name} must be in {bounds}, got {_shown(value)}")
    return number


def text(name: str, value, max_chars: int, required: bool = False) -> str:
    """``value`` as a string of at most ``max_chars`` characters (None: ""); ``required``: not blank."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise DraftScopeError(f"{name} must be text, got {type(value).__name__}")
    if len(value) > max_chars:
        raise DraftScopeError(f"{name} is {len(value):,} characters; the limit here is {max_chars:,}")
    if required and not value.strip():
        raise DraftScopeError(f"{name} is empty")
    return value


SHORT_TEXT = 2000  # a short text field (a tree shape, an option such as thresholds): refused beyond this
SEED_MAX = 2 ** 63 - 1  # torch.Generator.manual_seed takes a signed 64-bit value
