"""The JSON round trip every record dataclass shares: ``to_dict`` (plain dicts and lists) and ``from_dict`` (nested
records rebuilt from the field types, so a record read back from JSON equals the one written)."""

from __future__ import annotations

import dataclasses
import types
import typing


class Record:
    """Mixin for record dataclasses whose fields are numbers, strings, lists, dicts and other records."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return _build(cls, d)


def _build(cls: type, d: dict):
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _value(hints[f.name], d[f.name]) for f in dataclasses.fields(cls) if f.name in d})


def _value(tp, value):
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _value(inner[0], value) if len(inner) == 1 else value
    if origin is list:
        (item,) = typing.get_args(tp)
        return [_value(item, v) for v in value]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value)
    return value
