"""Saved traces: a whole session (settings, prompt, records, statistics) as one versioned JSON object, and ``Trace``,
the read-only replay that renderers take in place of a live ``Session`` (no model needed).

The format (version 1)::

    {"schema": "draftscope.trace", "version": 1, "created": ISO time, "target": name, "drafter": name,
     "settings": SessionConfig as a dict, "prompt_text", "prompt_ids", "generated_ids", "text", "finish_reason",
     "stats": Stats.summary() (the raw Stats fields and the derived metrics),
     "records": [{"type": "step" | "tree", "data": record.to_dict()}, ...],
     "extra": {tab-specific; "companions": {label: a nested trace} for runs shown beside this one}}

``load_trace`` checks everything and builds the whole ``Trace`` before returning it: a bad file raises one
``DraftScopeError`` and nothing is half loaded. Record fields are read generically from the record dataclasses, so a
field added to them later needs no change here (fields a trace lacks take their defaults; unknown ones are ignored).
"""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from core.errors import DraftScopeError
from core.runtime.files import atomic_write_text
from core.runtime.records import check_types
from core.specdec.config import SessionConfig
from core.specdec.records import Stats, StepRecord, TreeStepRecord

SCHEMA = "draftscope.trace"
VERSION = 1
MAX_TRACE_BYTES = 50 * 2**20  # a 4096-token session with top-k lists is a few MB
MAX_COMPANION_DEPTH = 2  # companions may have companions this deep (none of ours do)
RECORD_TYPES: dict[str, type] = {"step": StepRecord, "tree": TreeStepRecord}
TYPE_OF_RECORD = {cls: name for name, cls in RECORD_TYPES.items()}
REQUIRED = {"created": str, "target": str, "settings": dict, "prompt_text": str, "prompt_ids": list,
            "generated_ids": list, "finish_reason": (str, type(None)), "stats": dict, "records": list}


# ------------------------------------------------------------------------------------------------ writing
def trace_of(session, extra: dict | None = None, companions: dict | None = None) -> dict:
    """``session`` (a live ``Session`` or a loaded ``Trace``) as a trace dict; ``companions`` (label → session or
    trace) are nested in ``extra["companions"]``."""
    if isinstance(session, Trace) and extra is None and companions is None:
        return session.as_dict()
    extra = dict(extra or {})
    if companions:
        extra["companions"] = {label: trace_of(run) for label, run in companions.items() if run is not None}
    return {
        "schema": SCHEMA, "version": VERSION, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "target": getattr(getattr(session, "target", None), "name", None) or session.config.target,
        "drafter": session.config.drafter, "settings": dataclasses.asdict(session.config),
        "prompt_text": session.prompt_text, "prompt_ids": list(session.prompt_ids),
        "generated_ids": list(session.generated_ids), "text": _text(session),
        "finish_reason": session.finish_reason, "stats": session.stats.summary(),
        "records": [{"type": TYPE_OF_RECORD[type(r)], "data": r.to_dict()} for r in session.records],
        "extra": extra,
    }


def _text(session) -> str:
    """The generated text: the session's own decode, or the records' committed text when there is no model."""
    text = getattr(session, "text", None)
    return text if isinstance(text, str) else "".join(r.committed_text for r in session.records)


def dumps(trace: dict) -> str:
    return json.dumps(trace, ensure_ascii=False, separators=(",", ":"))


def save_trace(trace: dict, path: str | os.PathLike) -> Path:
    """Write ``trace`` to ``path`` atomically (a temporary file in the same folder, then a rename); an unwritable
    path is a DraftScopeError naming it."""
    path = Path(path)
    text = dumps(trace)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise DraftScopeError(f"cannot write the trace to {path}: no folder {folder}")
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise DraftScopeError(f"cannot write the trace to {path}: {exc.strerror or exc}") from None
    return path


# ------------------------------------------------------------------------------------------------ reading
class Trace:
    """A loaded trace: what renderers read from a ``Session`` (records, stats, config, prompt and generated ids, the
    finish reason), read-only and model-free. ``done`` is True: nothing more can happen to it. ``companions``: the
    runs saved beside it (label → Trace); ``extra``: the rest of the tab-specific data."""

    done = True
    is_trace = True

    def __init__(self, data: dict, config: SessionConfig, stats: Stats, records: list, companions: dict):
        self._data = data
        self.config, self.stats, self.companions = config, stats, companions
        self.records = records
        self.version: int = data["version"]
        self.created: str = data["created"]
        self.target_name: str = data["target"]
        self.drafter_name: str = data.get("drafter") or config.drafter
        self.prompt_text: str = data["prompt_text"]
        self.prompt_ids: list[int] = list(data["prompt_ids"])
        self.generated_ids: list[int] = list(data["generated_ids"])
        self.tokens: list[int] = self.prompt_ids + self.generated_ids
        self.finish_reason: str | None = data["finish_reason"]
        self.text: str = data.get("text") if isinstance(data.get("text"), str) else "".join(
            r.committed_text for r in records)
        self.extra: dict = {k: v for k, v in data.get("extra", {}).items() if k != "companions"}

    def as_dict(self) -> dict:
        """The trace as it was loaded (a copy)."""
        return json.loads(json.dumps(self._data))

    def describe(self) -> str:
        """"N rounds of <drafter> on <target>"."""
        n = len(self.records)
        return f"{n} round{'s' * (n != 1)} of {self.drafter_name} on {self.target_name}"

    def summary(self) -> dict:
        return {"config": dataclasses.asdict(self.config), "prompt_tokens": len(self.prompt_ids),
                "token_ids": self.generated_ids, "text": self.text, "finish_reason": self.finish_reason,
                "stats": self.stats.summary()}


def load_trace(source: str | bytes | os.PathLike) -> Trace:
    """A ``Trace`` from JSON text, bytes, or a file path (a ``Path``, or a string that does not start with '{').
    Every problem is one DraftScopeError: too large, not JSON, another schema or version, a missing or ill-typed
    field, an unknown record type, a record that does not rebuild."""
    if isinstance(source, os.PathLike) or (isinstance(source, str) and not source.lstrip().startswith("{")):
        source = _read(Path(source))
    if isinstance(source, bytes | bytearray):
        if len(source) > MAX_TRACE_BYTES:
            raise DraftScopeError(_too_large(len(source)))
        try:
            source = bytes(source).decode("utf-8")
        except UnicodeDecodeError:
            raise DraftScopeError("not a trace: the file is not UTF-8 text") from None
    if not isinstance(source, str):
        raise DraftScopeError(f"not a trace: expected JSON text, bytes or a path, got {type(source).__name__}")
    if len(source) > MAX_TRACE_BYTES:
        raise DraftScopeError(_too_large(len(source)))
    try:
        data = json.loads(source)
    except json.JSONDecodeError as exc:
        raise DraftScopeError(f"not a trace: malformed JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}; "
                              "a truncated file?)") from None
    return parse_trace(data)


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise DraftScopeError(f"trace file not found: {path}")
    size = path.stat().st_size
    if size > MAX_TRACE_BYTES:
        raise DraftScopeError(_too_large(size))
    return path.read_bytes()


def _too_large(n: int) -> str:
    return f"the trace is {n / 2**20:.1f} MB; the limit is {MAX_TRACE_BYTES // 2**20} MB"


def parse_trace(data, _depth: int = 0, _where: str = "") -> Trace:
    """A ``Trace`` from an already parsed trace dict (``load_trace`` without the JSON step)."""
    where = f" in {_where}" if _where else ""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else None
        raise DraftScopeError(f"not a DraftScope trace{where}: the schema is {found!r}, expected '{SCHEMA}'")
    version = data.get("version")
    if version != VERSION:
        raise DraftScopeError(f"this trace{where} is version {version!r}; this build of DraftScope reads version "
                              f"{VERSION}")
    for key, kind in REQUIRED.items():
        if key not in data:
            raise DraftScopeError(f"bad trace{where}: the field '{key}' is missing")
        if not isinstance(data[key], kind):
            raise DraftScopeError(f"bad trace{where}: '{key}' should be {_kind_name(kind)}, got "
                                  f"{type(data[key]).__name__}")
    for key in ("prompt_ids", "generated_ids"):
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in data[key]):
            raise DraftScopeError(f"bad trace{where}: '{key}' should hold token ids (integers)")
    extra = data.get("extra", {})
    if not isinstance(extra, dict):
        raise DraftScopeError(f"bad trace{where}: 'extra' should be an object, got {type(extra).__name__}")
    config = _config(data["settings"], where)
    stats = _stats(data["stats"], where)
    records = [_record(i, entry, where) for i, entry in enumerate(data["records"])]
    companions = {}
    nested = extra.get("companions", {})
    if not isinstance(nested, dict) or (nested and _depth >= MAX_COMPANION_DEPTH):
        raise DraftScopeError(f"bad trace{where}: 'extra.companions' should be an object of traces")
    for label, sub in nested.items():
        companions[label] = parse_trace(sub, _depth + 1, f"companion '{label}'")
    return Trace(data, config, stats, records, companions)


def _kind_name(kind) -> str:
    names = {str: "a string", dict: "an object", list: "a list", int: "an integer", float: "a number",
             bool: "true or false", type(None): "null"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _config(settings: dict, where: str) -> SessionConfig:
    """The settings as a SessionConfig (fields this build does not know are ignored; missing ones take defaults).
    Not validated against this build's drafters: a trace is only looked at."""
    try:
        known = {f.name for f in dataclasses.fields(SessionConfig)}
        values = {k: v for k, v in settings.items() if k in known}
        config = SessionConfig(**values)
        check_types(config, "settings")
    except DraftScopeError as exc:
        raise DraftScopeError(f"bad trace{where}: {exc}") from None
    return config


def _stats(summary: dict, where: str) -> Stats:
    """Stats rebuilt from its raw fields in ``summary`` (accepted_hist's keys back to ints)."""
    try:
        values = {}
        for f in dataclasses.fields(Stats):
            if f.name not in summary:
                raise DraftScopeError(f"'stats.{f.name}' is missing")
            values[f.name] = summary[f.name]
        hist = values["accepted_hist"]
        if not isinstance(hist, dict):
            raise DraftScopeError("'stats.accepted_hist' should be an object")
        values["accepted_hist"] = {int(k): v for k, v in hist.items()}
        stats = Stats(**values)
        check_types(stats, "stats")
        stats.summary()  # the derived metrics compute
    except DraftScopeError as exc:
        raise DraftScopeError(f"bad trace{where}: {exc}") from None
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise DraftScopeError(f"bad trace{where}: the statistics do not rebuild ({exc})") from None
    return stats


def _record(i: int, entry, where: str):
    if not isinstance(entry, dict) or not isinstance(entry.get("data"), dict):
        raise DraftScopeError(f"bad trace{where}: record {i} should be {{\"type\": ..., \"data\": {{...}}}}")
    kind = entry.get("type")
    if kind not in RECORD_TYPES:
        raise DraftScopeError(f"bad trace{where}: record {i} has the unknown type {kind!r} (this build reads "
                              f"{', '.join(RECORD_TYPES)})")
    cls = RECORD_TYPES[kind]
    try:
        record = cls.from_dict(entry["data"], strict=True)
    except DraftScopeError as exc:
        raise DraftScopeError(f"bad trace{where}: record {i} ({kind}): {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise DraftScopeError(f"bad trace{where}: record {i} ({kind}) does not rebuild: {_missing(exc)}") from None
    return record


def _missing(exc: Exception) -> str:
    text = str(exc)
    if "missing" in text and "required" in text:  # "__init__() missing 1 required positional argument: 'step'"
        return "a field is missing: " + text.split(":", 1)[-1].strip()
    return text


__all__ = ["MAX_TRACE_BYTES", "SCHEMA", "VERSION", "Trace", "dumps", "load_trace", "parse_trace", "save_trace",
           "trace_of"]
