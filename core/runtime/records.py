"""The JSON round trip every record dataclass shares: ``to_dict`` (plain dicts and lists) and ``from_dict`` (nested
records rebuilt from the field types, so a record read back from JSON equals the one written; ``strict=True`` also
checks every value against its field's type, for JSON from outside such as a loaded trace)."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing

from core.errors import DraftScopeError

KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_IS = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
       float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
       str: lambda v: isinstance(v, str), bool: lambda v: isinstance(v, bool)}


class Record:
    """Mixin for record dataclasses whose fields are numbers, strings, lists, dicts and other records."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, strict: bool = False):
        """The record from its ``to_dict`` form. ``strict``: a value of the wrong type (a string for a number, a list
        of the wrong things, null where a field has no None) is a DraftScopeError naming its path (``drafted[2].p``);
        a missing field is the dataclass's own TypeError."""
        return _build(cls, d, strict, "")


def check_types(obj, path: str = "") -> None:
    """A DraftScopeError naming the first field of the dataclass ``obj`` (any dataclass, e.g. a config read from
    JSON) whose value does not have its annotated type, as ``Record.from_dict(..., strict=True)`` checks."""
    _build(type(obj), dataclasses.asdict(obj), True, path)


@functools.cache
def _hints(cls: type) -> tuple[tuple[str, object], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


def _build(cls: type, d: dict, strict: bool, path: str):
    return cls(**{name: _value(tp, d[name], strict, f"{path}.{name}" if path else name)
                  for name, tp in _hints(cls) if name in d})


def _value(tp, value, strict: bool, path: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        inner = [a for a in options if a is not type(None)]
        return _value(inner[0], value, strict, path) if len(inner) == 1 else value
    if value is None and not strict:
        return None
    if origin is list or tp is list:
        if strict and not isinstance(value, list):
            raise DraftScopeError(f"'{path}' should be a list, got {type(value).__name__}")
        args = typing.get_args(tp)
        return [_value(args[0], v, strict, f"{path}[{k}]") for k, v in enumerate(value)] if args else value
    if dataclasses.is_dataclass(tp) or origin is dict or tp is dict:
        if strict and not isinstance(value, dict):
            raise DraftScopeError(f"'{path}' should be an object, got {type(value).__name__}")
        return _build(tp, value, strict, path) if dataclasses.is_dataclass(tp) else value
    if strict and tp in _IS and not _IS[tp](value):
        raise DraftScopeError(f"'{path}' should be {KIND_NAMES[tp]}, got {type(value).__name__}")
    return value
