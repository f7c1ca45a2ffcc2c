"""Command-line flags generated from method options (``core.options``): one flag per option name across a family
of methods, so a new option needs no edit here. A flag that the chosen method does not declare is an error."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from core import checks
from core.errors import DraftScopeError
from core.options import OptionField, option_fields


def _checked(check, name: str, lo, hi):
    """An argparse ``type`` that parses with ``check`` (``core.checks.whole`` or ``finite``) within [lo, hi]; a bad
    value is argparse's one-line error (exit 2)."""
    def parse(text: str):
        try:
            return check("the value", text, lo, hi)
        except DraftScopeError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("the value ")) from None
    parse.__name__ = name
    return parse


def integer(lo: int | None = None, hi: int | None = None):
    """An argparse ``type``: a whole number in [lo, hi] (``--per-category -1`` is one error line, exit 2)."""
    return _checked(checks.whole, "integer", lo, hi)


def number(lo: float | None = None, hi: float | None = None):
    """An argparse ``type``: a finite number in [lo, hi] (no NaN, no inf)."""
    return _checked(checks.finite, "number", lo, hi)


COUNT = integer(1)  # how many: prompts, samples, tokens, images, repeats
SEED = integer(0, checks.SEED_MAX)
PLACEMENT_ENV = {"device_map": "DRAFTSCOPE_DEVICE_MAP", "max_memory": "DRAFTSCOPE_MAX_MEMORY"}


def add_placement_flags(parser: argparse.ArgumentParser) -> None:
    """``--device-map`` / ``--max-memory``: spread the target over devices (``core.runtime.sharded``), the same values
    as the environment variables they stand for."""
    group = parser.add_argument_group("placement (a target too big for one device)")
    group.add_argument("--device-map", default=None, help="auto, balanced, sequential, a JSON object or "
                                                          "module=device pairs (as DRAFTSCOPE_DEVICE_MAP)")
    group.add_argument("--max-memory", default=None, help="device=size pairs, e.g. 0=20GiB,1=20GiB,cpu=60GiB (as "
                                                          "DRAFTSCOPE_MAX_MEMORY; needs a device map)")


def apply_placement(args: argparse.Namespace, environ: dict) -> None:
    """Check ``--device-map`` / ``--max-memory`` and set them in ``environ`` (``os.environ`` for this process), where
    every model load reads them; absent flags change nothing."""
    from core.runtime.sharded import parse_device_map, parse_max_memory

    device_map, max_memory = getattr(args, "device_map", None), getattr(args, "max_memory", None)
    if max_memory and not (device_map or environ.get(PLACEMENT_ENV["device_map"])):
        raise DraftScopeError("--max-memory needs --device-map (auto spreads the layers under those bounds)")
    if device_map:
        parse_device_map(device_map)
    if max_memory:
        parse_max_memory(max_memory)
    for key, value in (("device_map", device_map), ("max_memory", max_memory)):  # both checked before either is set
        if value:
            environ[PLACEMENT_ENV[key]] = value


@dataclass
class OptionFlags:
    """The flags one ``add_option_flags`` call added: flag → the (method, field) pairs that declare it."""

    uses: dict[str, list[tuple[str, OptionField]]]

    def values(self, args: argparse.Namespace, method: str) -> dict:
        """The options given for ``method`` (field name → value); flags left out keep the method's defaults."""
        values = {}
        for flag, uses in self.uses.items():
            value = getattr(args, _dest(flag))
            if value is None:
                continue
            field = next((f for m, f in uses if m == method), None)
            if field is None:
                owners = ", ".join(m for m, _ in uses)
                raise DraftScopeError(f"{flag} is not an option of '{method}' (it is one of {owners})")
            values[field.name] = value
        return values

    def values_for(self, args: argparse.Namespace, methods: list[str]) -> dict[str, dict]:
        """The options given for several chosen methods at once ({method: {field name: value}}, every chosen method
        present): a flag sets its field in every chosen method that declares it, and is an error only when none does."""
        values: dict[str, dict] = {method: {} for method in methods}
        for flag, uses in self.uses.items():
            value = getattr(args, _dest(flag))
            if value is None:
                continue
            chosen = [(m, f) for m, f in uses if m in values]
            if not chosen:
                owners = ", ".join(m for m, _ in uses)
                raise DraftScopeError(f"{flag} is not an option of {', '.join(map(repr, methods))} (it is one of "
                                      f"{owners})")
            for method, field in chosen:
                values[method][field.name] = value
        return values


def add_option_flags(parser: argparse.ArgumentParser, methods: dict[str, type], title: str) -> OptionFlags:
    """Add every option of ``methods`` (name → class with an ``Options`` dataclass) to ``parser`` in a group named
    ``title``. Methods sharing an option name share its flag (and must agree on its type)."""
    uses: dict[str, list[tuple[str, OptionField]]] = {}
    for method, cls in methods.items():
        for f in option_fields(cls.Options):
            uses.setdefault(f.flag, []).append((method, f))
    group = parser.add_argument_group(title)
    for flag, declared in uses.items():
        kinds = {f.kind for _, f in declared}
        if len(kinds) > 1:
            raise TypeError(f"{flag} has different types in {', '.join(m for m, _ in declared)}")
        first = declared[0][1]
        texts: dict[str, list[str]] = {}  # one help text → the methods it describes (shared base options)
        for m, f in declared:
            texts.setdefault(f.help + (f" (default {f.default!r})" if f.default is not None else ""), []).append(m)
        help_text = "; ".join(f"{', '.join(ms)}: {text}" for text, ms in texts.items()).replace("%", "%%")
        if first.kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, type=first.kind, default=None, choices=first.choices, help=help_text)
    return OptionFlags(uses)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")
