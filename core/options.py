"""Method options: every drafter, verifier and KV press declares its own as a dataclass, kvpress style.

    @dataclass
    class Options:
        ngram_size: Annotated[int, Range(1, 16)] = 3  # longest suffix n-gram matched
        min_ngram_size: Annotated[int, Range(1, 16)] = 2  # shortest suffix n-gram matched

Defaults are the paper's. The comment after a field is its help text (CLI ``--help``, the app's label); the
``Annotated`` extras are hints for the controls the app draws (``Range`` for sliders, ``ModelName`` for a model
dropdown, ``LocalPath`` for a server-side file that a public page must not expose). Checking the values is the
dataclass's own ``__post_init__`` (raise ``DraftScopeError``), so every entry point refuses the same things.

``resolve`` turns a mapping into the dataclass and refuses names it does not declare; ``option_fields`` describes the
fields for the CLI (``core.cli``) and the app (``app.options``), which build their flags and controls from it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import DraftScopeError


@dataclass(frozen=True)
class Range:
    """The values a control offers: a slider from ``lo`` to ``hi`` (the method still checks its own bounds)."""

    lo: float
    hi: float
    step: float | None = None


class ModelName:
    """Marks a ``str`` option naming a model preset (a Hugging Face id or a directory where local models are on)."""


class LocalPath:
    """Marks a ``str`` option naming a file on the machine that runs the engine (hidden on a public page)."""


@dataclass(frozen=True)
class Flag:
    """The option's command-line flag when ``--field-name`` would be too vague (``Flag("--easyspec-base")``)."""

    name: str


@dataclass
class NoOptions:
    """A method without options."""


@dataclass(frozen=True)
class OptionField:
    """One declared option, as the CLI and the app need it."""

    name: str
    kind: type  # int | float | bool | str
    default: Any
    optional: bool  # None is a value (it usually means "derive it", e.g. a fifth of the depth)
    help: str
    choices: tuple | None = None  # a Literal[...] type
    range: Range | None = None
    model_name: bool = False
    local_path: bool = False
    flag: str = ""  # the command-line flag: --field-name unless the field says otherwise


def resolve(options_cls: type, values: Mapping | object | None, owner: str):
    """An instance of ``options_cls`` from ``values``: None (the defaults), an instance (as it is) or a mapping of
    field names (a None value keeps that field's default). Unknown names are a ``DraftScopeError`` naming ``owner``
    (e.g. "the 'ngram' drafter") and the options it has."""
    if values is None:
        return options_cls()
    if isinstance(values, options_cls):
        return values
    if not isinstance(values, Mapping):
        raise DraftScopeError(f"options of {owner} must be a mapping or {options_cls.__qualname__}, "
                              f"got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(options_cls)}
    unknown = [k for k in values if k not in names]
    if unknown:
        have = ", ".join(sorted(names)) or "none"
        raise DraftScopeError(f"unknown option{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} for "
                              f"{owner}; its options: {have}")
    given = {k: v for k, v in values.items() if v is not None or _admits_none(options_cls, k)}
    return options_cls(**given)


def as_dict(options) -> dict:
    """The fields of an options instance as a plain dict (values as they are: strings, numbers, or objects)."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


@functools.cache
def option_fields(options_cls: type) -> tuple[OptionField, ...]:
    """Every field of ``options_cls`` with its base type, default, help comment and control hints; the class's own
    fields first, then those it inherits (shared option sets such as VocabTrim's)."""
    hints = typing.get_type_hints(options_cls, include_extras=True)
    comments = {}
    for klass in reversed(options_cls.__mro__):  # an inherited field keeps its base's comment unless redeclared
        comments.update(_field_comments(klass))
    out = []
    own = set(inspect.get_annotations(options_cls))  # declared in the class itself: listed first
    fields = dataclasses.fields(options_cls)
    for f in [f for f in fields if f.name in own] + [f for f in fields if f.name not in own]:
        hint, extras = hints[f.name], ()
        if typing.get_origin(hint) is typing.Annotated:
            hint, *extras = typing.get_args(hint)
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        args = typing.get_args(hint) if union else ()
        optional = type(None) in args
        base = next(a for a in args if a is not type(None)) if union else hint
        choices = tuple(typing.get_args(base)) if typing.get_origin(base) is typing.Literal else None
        kind = type(choices[0]) if choices else base if isinstance(base, type) else str
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append(OptionField(
            name=f.name, kind=kind, default=default, optional=optional, help=comments.get(f.name, f.name),
            choices=choices, range=next((e for e in extras if isinstance(e, Range)), None),
            model_name=ModelName in extras, local_path=LocalPath in extras,
            flag=next((e.name for e in extras if isinstance(e, Flag)), "--" + f.name.replace("_", "-"))))
    return tuple(out)


def _admits_none(options_cls: type, name: str) -> bool:
    return next(f.optional for f in option_fields(options_cls) if f.name == name)


def _field_comments(options_cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each ``name: type = default`` line in the class body."""
    try:
        source = inspect.getsource(options_cls)
    except (OSError, TypeError):
        return {}
    comments, name = {}, None
    for tok in tokenize.generate_tokens(io.StringIO(textwrap.dedent(source)).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and name is None:
            name = tok.string  # the first name on a field line (indented once inside the class)
        elif tok.type == tokenize.COMMENT and name is not None:
            comments.setdefault(name, tok.string.lstrip("# ").strip())
        elif tok.type in (tokenize.NEWLINE, tokenize.NL):
            name = None
    return comments


__all__ = ["Flag", "LocalPath", "ModelName", "NoOptions", "OptionField", "Range", "as_dict", "option_fields", "resolve"]
