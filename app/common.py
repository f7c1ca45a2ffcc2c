"""What the tabs share: the per-process session store, settings → engine config, and error messages.

Per-user state (a ``gr.State``) is a plain dict of settings plus a session id, so it is light and deep-copyable.
The live ``Session`` objects hold KV caches, so they stay here, keyed by that id; models themselves are loaded once per
process by ``core.runtime.models.load_model`` and shared by every session.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import re
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import gradio as gr
from gradio.context import LocalContext

from app import limits, options
from app.store import Budget, Store
from core import checks
from core.errors import DraftScopeError
from core.runtime import models
from core.runtime.memory import footprint
from core.specdec import MAX_GAMMA, MAX_NEW_TOKENS, Session, SessionConfig
from core.specdec.trace import TYPE_OF_RECORD, Trace, load_trace, parse_trace, save_trace, trace_of

log = logging.getLogger("draftscope.app")

MAX_PROMPT_CHARS = limits.limits().max_prompt_chars  # refused before tokenizing (the context check then counts tokens)

_STOPS: set[str] = set()  # session ids whose Run should stop after the current round
_ROUND_LOCKS: dict[str, threading.Lock] = {}  # per session id: its rounds and settings changes, one at a time
_LOCK = threading.Lock()


def _dropped(key: str) -> None:
    """The store dropped ``key``: forget its Stop and (unless a round holds it) its round lock."""
    with _LOCK:
        _STOPS.discard(key)
        lock = _ROUND_LOCKS.get(key)
        if lock is not None and lock.acquire(blocking=False):
            lock.release()
            _ROUND_LOCKS.pop(key, None)


def _budget() -> Budget:
    lim = limits.limits()
    return Budget(total_bytes=lim.keep_bytes, max_items=lim.max_sessions, ttl_s=lim.idle_minutes * 60,
                  per_visitor_items=lim.visitor_entries, per_visitor_bytes=lim.visitor_bytes)


def _measure(value) -> int:
    """Bytes a stored value keeps: a session with its companion runs (they live as long as it does)."""
    total = footprint(value)
    if isinstance(value, Session):
        for runs in list(_COMPANIONS):
            if (run := runs.get(value)) is not None:
                total += footprint(run)
    return total


_COMPANIONS: weakref.WeakSet = weakref.WeakSet()  # every CompanionRuns (their runs count with their session)
STORE = Store(_budget(), measure=_measure, on_drop=_dropped)  # sessions, traces and the tabs' results (``hold``)


def state_ttl() -> float:
    """``time_to_live`` of every ``gr.State``: longer than the store's idle time, so the store drops an entry first
    and the page, still holding its key, is told why."""
    return 2 * STORE.budget.ttl_s


def visitor() -> str:
    """Who is asking: the address of the current request (on a Space the first ``x-forwarded-for`` hop, the proxy's
    own address otherwise), "local" outside a request. Per-visitor budgets count by it."""
    request = LocalContext.request.get(None)
    if request is None:
        return "local"
    if limits.public():
        forwarded = (request.headers.get("x-forwarded-for") or "").split(",")[0].strip()
        if forwarded:
            return forwarded
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "local"


def default_target() -> str:
    """The target a fresh page starts on (``models.default_target``: ``$DRAFTSCOPE_DEFAULT_TARGET``, else the Space's
    pair where the Hub and a large enough GPU are there, else the offline default)."""
    return models.default_target()


def new_sid() -> str:
    return uuid.uuid4().hex


def get_session(sid: str | None) -> Session | Trace | None:
    value = STORE.get(sid)
    return value if isinstance(value, (Session, Trace)) else None


def put_session(sid: str, session: Session | Trace) -> None:
    """Keep ``session`` for the current visitor (``TooLarge`` when it alone is over their budget)."""
    STORE.put(sid, session, visitor())


def kept(sid: str, final: bool = False) -> None:
    """Measure ``sid``'s session again after rounds: its KV cache grew. At most every 2 s after Steps and while a Run
    streams (the walk grows with the session's records), always when ``final`` (a Run's end). A session grown past
    the visitor's budget is dropped with a ``TooLarge`` error."""
    STORE.remeasure(sid, every_s=0.0 if final else 2.0)


def dropped_note(sid: str | None) -> str:
    """"Your previous session was dropped (why)." when the store dropped ``sid``, else ""."""
    why = STORE.gone(sid)
    return f"Your previous session was {why}; this is a new one." if why else ""


def round_lock(sid: str) -> threading.Lock:
    """The lock that serialises one session's rounds and settings changes (a Step pressed while Run streams the same
    session waits for the round in progress instead of reconfiguring it halfway)."""
    with _LOCK:
        return _ROUND_LOCKS.setdefault(sid, threading.Lock())


def forget(state: dict | None) -> None:
    """``gr.State`` delete callback (and Reset): drop the session or result (``hold``) of a state Gradio discarded."""
    if isinstance(state, dict):
        STORE.pop(state.get("sid"))
        STORE.pop(state.get("held"))


def hold(value, what: str, replace=None) -> dict:
    """Keep a tab's result (a KV report, VAR runs, …) in the store for the current visitor; the ``gr.State`` holds
    only the returned key. ``what`` names it in messages ("the KV run"); ``replace`` is the state it replaces (its
    key is reused, so a visitor's repeated runs take one place)."""
    old = replace.get("held") if isinstance(replace, dict) else None
    key = old if isinstance(old, str) and STORE.owner(old) in (None, visitor()) else new_sid()
    STORE.put(key, value, visitor())
    return {"held": key, "what": what}


def held(state, required: bool = True):
    """The result ``hold`` kept for ``state`` (None when there is none yet and not ``required``). A result the store
    dropped is a ``DraftScopeError`` saying why, whatever ``required``."""
    key = state.get("held") if isinstance(state, dict) else None
    value = STORE.get(key)
    if value is not None:
        return value
    why = STORE.gone(key)
    if why:
        raise DraftScopeError(f"{state.get('what') or 'that result'} was {why}: run it again")
    if required:
        raise DraftScopeError("nothing to show yet: run it first")
    return None


def request_stop(sid: str | None) -> None:
    if sid:
        with _LOCK:
            _STOPS.add(sid)


def take_stop(sid: str | None) -> bool:
    """True once if a stop was requested for ``sid``."""
    with _LOCK:
        if sid in _STOPS:
            _STOPS.discard(sid)
            return True
        return False


def clear_stop(sid: str | None) -> None:
    with _LOCK:
        _STOPS.discard(sid)


# ------------------------------------------------------------------------------------------------ Cancel
class Cancelled(DraftScopeError):
    """The page pressed Cancel: the long job stops at its next progress report."""


_RUNNING: dict[str, set[str]] = {}  # page (Gradio session hash) → its long jobs running now (one token each)
_CANCELS: set[str] = set()  # tokens of running jobs whose page pressed Cancel (a later job of the page is not one)


def page() -> str | None:
    """The page (browser tab) of the current request: Gradio's session hash; None outside a request."""
    return getattr(LocalContext.request.get(None), "session_hash", None)


class _Checked:
    """A progress tracker that raises ``Cancelled`` once Cancel was pressed for its job (at the job's next report)."""

    def __init__(self, progress, token: str):
        self.progress, self.token = progress, token

    def check(self) -> None:
        with _LOCK:
            if self.token in _CANCELS:
                raise Cancelled("cancelled: the job stopped at its last progress step; nothing was kept from it")

    def __call__(self, *args, **kwargs):
        self.check()
        return self.progress(*args, **kwargs)

    def tqdm(self, iterable, *args, **kwargs):
        wrapped = self.progress.tqdm(iterable, *args, **kwargs) if hasattr(self.progress, "tqdm") else iterable
        for item in wrapped:
            self.check()
            yield item

    def __getattr__(self, name):
        return getattr(self.progress, name)


def cancellable(fn: Callable) -> Callable:
    """``fn`` (a long job with a ``progress`` parameter) made to stop when its page presses Cancel while it runs: its
    progress tracker raises ``Cancelled`` at the next report. Gradio still sees ``fn``'s own signature."""
    signature = inspect.signature(fn)
    if "progress" not in signature.parameters:
        return fn

    @contextlib.contextmanager
    def running(args, kwargs):
        """The job registered under its page while it runs; yields ``fn``'s arguments with the checked tracker."""
        key, token = page(), new_sid()
        with _LOCK:
            if key is not None:
                _RUNNING.setdefault(key, set()).add(token)
        try:
            arguments = signature.bind(*args, **kwargs)
            arguments.apply_defaults()
            arguments.arguments["progress"] = _Checked(arguments.arguments["progress"], token)
            yield arguments.args, arguments.kwargs
        finally:
            with _LOCK:
                _CANCELS.discard(token)
                if key in _RUNNING:
                    _RUNNING[key].discard(token)
                    if not _RUNNING[key]:
                        del _RUNNING[key]

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with running(args, kwargs) as (a, k):
                yield from fn(*a, **k)
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with running(args, kwargs) as (a, k):
                return fn(*a, **k)
    return wrapper


def request_cancel() -> str:
    """Cancel: the page's long jobs running now stop at their next progress report (queued ones are dropped by the
    button's ``cancels``; jobs started later are not touched); returns the line shown beside the button."""
    key = page()
    with _LOCK:
        running = _RUNNING.get(key, set()) if key is not None else set()
        _CANCELS.update(running)
    return ("Cancelling: the job stops at its next progress step, keeping nothing." if running else
            "Nothing of this page was running (a queued job, if any, is dropped).")


_LEARNED: weakref.WeakSet = weakref.WeakSet()  # finished sessions the recommender has already learned from


def learn_from(session: Session) -> None:
    """Once a session tab's run finishes, the Benchmark tab's recommender learns from it (once per session)."""
    if not session.done or session in _LEARNED:
        return
    _LEARNED.add(session)
    from app.bench_tab import observe_session  # the tab that owns the recommender; imported late (no cycle)

    observe_session(session)


def build_config(settings: dict) -> SessionConfig:
    """Engine settings from the UI values (already plain Python types). Only the chosen drafter's options reach the
    config (``app.options.drafter_values``: moving another drafter's control changes nothing)."""
    drafter = settings["drafter"]
    return SessionConfig(
        target=checks.text("target", settings.get("target"), 400).strip(), drafter=drafter,
        verifier=settings["verifier"], gamma=checks.whole("γ", settings["gamma"], 1, MAX_GAMMA),
        temperature=checks.finite("temperature", settings["temperature"]),  # its range: SamplingConfig's check
        top_k=checks.whole("top-k", settings.get("top_k") or 0, 0), top_p=checks.finite("top-p", settings.get("top_p")
                                                                                   or 1.0),
        seed=checks.whole("seed", settings.get("seed") or 0, 0, checks.SEED_MAX),
        max_new_tokens=checks.whole("max new tokens", settings["max_new_tokens"], 1,
                                    min(MAX_NEW_TOKENS, limits.limits().max_new_tokens)),
        drafter_options=options.drafter_values(drafter, settings))


def named_endpoint(fn: Callable, head: Sequence[str], names: Sequence[str], doc: str) -> Callable:
    """``fn(*head values, {name: value}, progress)`` as a handler whose parameters are ``head``, ``names`` and
    ``progress=gr.Progress()``. Gradio names a handler's API parameters after its signature (and injects the progress
    tracker where the signature has it), so handlers over generated controls get this explicit one; a generator
    ``fn`` stays a generator, so Gradio still streams it."""
    every = (*head, *names)
    if len(set(every)) < len(every) or "progress" in every:
        raise TypeError(f"parameter names must be distinct and not 'progress': {every}")
    parameters = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in every]
    signature = inspect.Signature([*parameters, inspect.Parameter(
        "progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress())])

    def split(args, kwargs) -> tuple:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        progress = values.pop("progress")
        return (*(values.pop(n) for n in head), values, progress)

    if inspect.isgeneratorfunction(fn):
        def handler(*args, **kwargs):
            yield from fn(*split(args, kwargs))
    else:
        def handler(*args, **kwargs):
            return fn(*split(args, kwargs))
    handler.__signature__ = signature
    handler.__doc__, handler.__name__, handler.__qualname__ = doc, fn.__name__.lstrip("_"), fn.__qualname__
    return handler


def check_prompt(prompt: str | None) -> str:
    prompt = checks.text("the prompt", prompt, MAX_PROMPT_CHARS)
    if not prompt.strip():
        raise DraftScopeError("the prompt is empty: type one or pick an example")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise DraftScopeError(f"the prompt is {len(prompt):,} characters; the limit here is {MAX_PROMPT_CHARS:,}")
    return prompt


def error_text(exc: Exception) -> str:
    """One line for the page, without server paths; unexpected errors also go to the server log with their
    traceback."""
    if isinstance(exc, DraftScopeError):
        message = str(exc)
    elif isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        message = "out of memory: try a shorter prompt, fewer new tokens or a smaller model"
    else:
        log.exception("unexpected error")
        message = f"{type(exc).__name__}: {exc}"
    line = (message.strip().splitlines() or [type(exc).__name__])[0]
    return hide_paths(line)[:300]


_PATH = re.compile(r"(?<![\w:/.])(?:~|[A-Za-z]:)?(?:[/\\][\w.@+-]+){2,}[/\\]?")  # /a/b or C:\\a\\b, 2+ parts


def hide_paths(text: str) -> str:
    """``text`` with every absolute file path cut to its last part (…/name): a visitor sees which file, not where
    the server keeps it."""
    def short(match: re.Match) -> str:
        parts = [p for p in re.split(r"[/\\]", match.group(0)) if p]
        return "…/" + parts[-1] if parts else match.group(0)

    return _PATH.sub(short, text)


def failure(exc: Exception) -> gr.Error:
    """The ``gr.Error`` to raise for ``exc``: the page shows its line (the previous outputs stay), an API client gets
    it as an error, not as a successful status."""
    return gr.Error(error_text(exc), print_exception=False)


# ------------------------------------------------------------------------------------------------ traces
READ_ONLY = ("This is a loaded trace: read-only, with no model. Step through its rounds with the slider; Reset starts "
             "a live session with the settings above.")
_TRACE_DIR: str | None = None


def trace_file(trace: dict) -> str:
    """Write ``trace`` to a new file in this process's temporary folder (for a download); return its path."""
    global _TRACE_DIR
    if _TRACE_DIR is None or not os.path.isdir(_TRACE_DIR):
        _TRACE_DIR = tempfile.mkdtemp(prefix="draftscope-traces-")
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "-", f"{trace.get('drafter') or 'session'}-on-{trace.get('target') or ''}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return str(save_trace(trace, os.path.join(_TRACE_DIR, f"draftscope-trace-{name}-{stamp}-{new_sid()[:6]}.json")))


def read_trace(path) -> Trace:
    """The trace in an uploaded file (``gr.File`` gives its path)."""
    if not path:
        raise DraftScopeError("no file: pick a trace (.json) saved by DraftScope")
    return load_trace(Path(getattr(path, "name", path)))


def save_records(records) -> tuple:
    """Save trace for the tabs whose records JSON holds their last run (it is checked first): (file, status)."""
    try:
        if not records:
            raise DraftScopeError("nothing to save yet: run it first")
        n = len(parse_trace(records).records)
        return trace_file(records), f"Trace saved: {n} round{'s' * (n != 1)}, download it below."
    except Exception as exc:
        raise failure(exc) from None


def loaded_status(trace: Trace, missing: str = "") -> str:
    return f"Loaded trace: {trace.describe()} (no model). {missing} {READ_ONLY}".replace("  ", " ")


class SessionHandlers:
    """What every session tab's handlers share: Step, Run and Reset endpoints over the tab's settings, finding the
    user's session (reconfigured live, or rebuilt when a ``restart_on`` setting changed) and making a new one.

    Subclasses set ``setting_names`` (the API parameters after ``state``; a property where they are generated) and
    may override ``config`` (settings → SessionConfig) and ``prepared`` (called with every session handed out, e.g.
    to keep a companion run in step)."""

    setting_names: tuple[str, ...] = ()
    restart_on: tuple[str, ...] = ("prompt", "chat", "target")  # everything else changes live between rounds
    docs: ClassVar[dict[str, str]] = {  # the step / run / reset endpoints' descriptions
        "step": "One draft → verify round.",
        "run": "Rounds one after another until EOS or max new tokens (continuing the current session); Stop halts.",
        "reset": "Start over with the current settings (and seed): nothing generated yet."
    }

    def __init__(self, allow_local: bool = False):
        self.allow_local = allow_local  # model fields may name Hugging Face ids or local directories
        self.step = self.endpoint(self._step, self.docs["step"])
        self.run = self.endpoint(self._stream, self.docs["run"])
        self.reset = self.endpoint(self._reset, self.docs["reset"])

    def endpoint(self, fn: Callable, doc: str) -> Callable:
        """``fn(state, settings, progress)`` as a handler with the parameters state, the settings and progress."""
        return named_endpoint(fn, ("state",), self.setting_names, doc)

    def config(self, settings: dict) -> SessionConfig:
        return build_config(settings)

    def prepared(self, session: Session, settings: dict) -> None:
        """Hook: the session about to be used with these settings."""

    # rendering hooks: the tab's outputs after the state, and its status line
    plot_interval_s = 1.0  # while Run streams, figures refresh at most this often (the text every round)

    def render(self, session: Session | Trace | None, figures: bool = True) -> tuple:
        raise NotImplementedError

    def status(self, session: Session, note: str = "") -> str:
        raise NotImplementedError

    def advanced(self, session: Session) -> None:
        """Hook: called after every round Run makes."""

    def explain(self, exc: Exception) -> Exception:
        """Hook: a clearer exception to show for ``exc``."""
        return exc

    # trace hooks: what a saved trace holds beyond the session, and what a loaded one lacks
    def companions(self, session: Session) -> dict:
        """Hook: runs shown beside ``session`` (label → Session), saved inside its trace."""
        return {}

    def trace_extra(self, session: Session) -> dict:
        """Hook: tab-specific data for the trace's ``extra``."""
        return {}

    def trace_missing(self, trace: Trace) -> str:
        """Hook: a sentence naming what this tab shows that ``trace`` does not hold ("" when nothing)."""
        return ""

    def records(self, session: Session | Trace | None) -> dict | None:
        """The session as a trace dict (the records JSON output)."""
        if session is None:
            return None
        if isinstance(session, Trace):
            return session.as_dict()
        return trace_of(session, self.trace_extra(session), self.companions(session))

    def _out(self, state: dict, session, status: str, figures: bool = True, records: bool = True) -> tuple:
        """(state, the tab's outputs, status, records JSON): the records only when ``records``, else left as they
        are (a streaming Run sends them with the figures)."""
        return (state, *self.render(session, figures=figures), status,
                self.records(session) if records else gr.skip())

    def _failed(self, state: dict, exc: Exception) -> tuple:
        raise failure(self.explain(exc)) from None

    def _read_only(self, state: dict) -> tuple | None:
        """The outputs for Step / Run on a loaded trace (it stays as it is), or None for a live session."""
        trace = get_session(state.get("sid"))
        if not isinstance(trace, Trace):
            return None
        return self._out(state, trace, READ_ONLY, records=False)

    ready_message = "Ready: Step for one round, Run to go to the end."

    def _step(self, state, settings: dict, progress) -> tuple:
        """Step: one round of the user's session (``advanced`` runs after it, and also when the run is finished)."""
        state = dict(state or {})
        try:
            if (out := self._read_only(state)) is not None:
                return out
            state.setdefault("sid", new_sid())
            with round_lock(state["sid"]):
                state, session, note = self._session_for(state, settings, progress)
                if session.done:
                    self.advanced(session)
                    return self._out(state, session, f"Already finished ({session.finish_reason}). Raise max new "
                                     "tokens, or Reset to start over.")
                session.step()
                self.advanced(session)
                kept(state["sid"])
            learn_from(session)
            return self._out(state, session, self.status(session, note))
        except Exception as exc:  # every failure becomes a message, the page stays usable
            return self._failed(state, exc)

    def _reset(self, state, settings: dict, progress) -> tuple:
        """Reset: start over with the current settings (and seed)."""
        state = dict(state or {})
        try:
            state.setdefault("sid", new_sid())
            with round_lock(state["sid"]):
                state, session = self._new_session(state, settings, progress)
            return self._out(state, session, self.ready_message)
        except Exception as exc:
            return self._failed(state, exc)

    def stop(self, state):
        """Ask the running Run to stop after its current round; Run itself then writes the final status (writing it
        here too could land after Run's last update and overwrite it)."""
        request_stop((state or {}).get("sid"))
        gr.Info("Stopping after the current round…")

    def _stream(self, state, settings: dict, progress):
        """Run: rounds one after another until EOS or max new tokens (continuing the current session); Stop halts
        after the current round; a Reset or restart elsewhere ends it quietly. The records JSON goes out once, with
        the last update (at the end or at a Stop): a whole trace every refresh costs the server an O(rounds) encode
        and the page a large message while the user is trying to press Stop."""
        state = dict(state or {})
        try:
            if (out := self._read_only(state)) is not None:
                yield out
                return
            sid = state.setdefault("sid", new_sid())
            clear_stop(sid)
            if self._restarts(state, settings):  # models to load: the page learns the session id first, so a Stop
                #   pressed while they load reaches this run
                yield (state, *[gr.skip()] * self.n_outputs, "Loading models…", gr.skip())
            with round_lock(sid):
                state, session, note = self._session_for(state, settings, progress)
            if take_stop(sid):
                yield self._out(state, session, self.status(session, "Stopped before the first round: Step or Run "
                                                                     "to go on."))
                return
            if session.done:
                yield self._out(state, session, "Already finished: Reset to start over.")
                return
            yield self._out(state, session, f"Running… {note}".strip(), records=False)
            last_plot = time.monotonic()
            while not session.done:
                with round_lock(sid):
                    if get_session(sid) is not session:  # replaced by Reset or a restart (quietly), or dropped
                        if why := STORE.gone(sid):
                            yield self._out(state, session, f"Stopped: this session was {why}. Step or Run starts "
                                                            "a new one.")
                        return
                    session.step()
                    self.advanced(session)
                    kept(sid)
                learn_from(session)
                if take_stop(sid):
                    yield self._out(state, session, self.status(session, "Stopped: Step or Run to go on."))
                    return
                figures = time.monotonic() - last_plot >= self.plot_interval_s  # keeps the browser responsive
                if figures:
                    last_plot = time.monotonic()
                yield self._out(state, session, "Running… " + self.status(session), figures, records=False)
            kept(sid, final=True)
            yield self._out(state, session, self.status(session, note))
        except Exception as exc:  # every failure becomes a message, the page stays usable
            yield self._failed(state, exc)

    @property
    def n_outputs(self) -> int:
        """How many outputs the tab's render gives (between the state and the status)."""
        if not hasattr(self, "_n_outputs"):
            self._n_outputs = len(self.render(None))
        return self._n_outputs

    def _restarts(self, state: dict, settings: dict) -> bool:
        """Whether these settings need a new session (none yet, or a ``restart_on`` setting changed)."""
        return get_session(state.get("sid")) is None or any(state.get(k) != settings.get(k) for k in self.restart_on)

    # -------------------------------------------------------------------------------------------- traces
    def save_trace(self, state) -> tuple:
        """Save trace: the user's session (or loaded trace) as a JSON trace file to download: (file, status)."""
        try:
            session = get_session((state or {}).get("sid"))
            if session is None:
                raise DraftScopeError("nothing to save yet: Step or Run first")
            trace = self.records(session)
            n = len(trace["records"])
            return trace_file(trace), f"Trace saved: {n} round{'s' * (n != 1)}, download it below."
        except Exception as exc:
            raise failure(exc) from None

    def load_trace(self, state, file) -> tuple:
        """Load trace: show a saved trace (no model) in place of the session: (state, the tab's outputs, status,
        records JSON). A bad file is one message and the page stays as it was."""
        state = dict(state or {})
        try:
            trace = read_trace(file)
            self.check_trace(trace)
            outputs = self.render(trace)  # rendered before anything is replaced: a failure leaves the page as it was
            sid = new_sid()  # a new id: a Run still streaming the previous session sees it replaced and stops
            old = state.get("sid")
            put_session(sid, trace)
            if old:
                STORE.pop(old)
            state = {**state, "sid": sid}
            return (state, *outputs, loaded_status(trace, self.trace_missing(trace)), trace.as_dict())
        except Exception as exc:
            raise failure(exc) from None

    trace_kinds: ClassVar[tuple[str, ...]] = ("step",)  # the record types this tab's render shows
    trace_elsewhere = "the Draft trees tab"  # where to load traces of the other kind

    def check_trace(self, trace: Trace) -> None:
        """Refuse a trace whose rounds this tab cannot show (chain rounds on the trees tab, tree rounds elsewhere)."""
        kinds = {TYPE_OF_RECORD[type(r)] for r in trace.records}
        if not kinds <= set(self.trace_kinds):
            other = "tree" if "tree" in kinds - set(self.trace_kinds) else "chain"
            raise DraftScopeError(f"this trace holds {other} rounds, which this tab does not show: load it in "
                                  f"{self.trace_elsewhere}")

    def _session_for(self, state: dict, settings: dict, progress) -> tuple[dict, Session, str]:
        """The user's session, reconfigured to ``settings``, or a new one when there is none or it must restart."""
        check_prompt(settings["prompt"])
        session = get_session(state.get("sid"))
        if session is not None and all(state.get(k) == settings[k] for k in self.restart_on):
            changed = session.reconfigure(self.config(settings))
            self.prepared(session, settings)
            shown = [k for k in changed if k not in ("record", "topk_alternatives")]
            note = f"Changed {', '.join(shown)} from round {len(session.records)} on." if shown else ""
            return {**state, **settings}, session, note
        note = dropped_note(state.get("sid"))
        return (*self._new_session(state, settings, progress), note)

    def _new_session(self, state: dict, settings: dict, progress) -> tuple[dict, Session]:
        check_prompt(settings["prompt"])
        progress(0.1, desc="Loading models (the first time takes a while)…")
        session = Session.from_config(self.config(settings), prompt=settings["prompt"], chat=settings["chat"],
                                      allow_local=self.allow_local)
        self.prepared(session, settings)
        progress(1.0, desc="Models ready")
        sid = state.get("sid") or new_sid()
        put_session(sid, session)  # a pending Stop stays: a Run pressed Stop while this loaded reads it next
        return {**state, **settings, "sid": sid}, session


class CompanionRuns:
    """A second, real session kept beside each user session to compare with it (the trees tab's chain, the
    cross-vocabulary tab's learning-off run): ``sync`` creates, reconfigures or drops it to follow the settings,
    ``advance`` steps it once per round of its session and to the same budget once that one is done. It lives as
    long as its session."""

    def __init__(self, config_of: Callable[[SessionConfig], SessionConfig]):
        self.config_of = config_of  # the companion's settings from its session's
        _COMPANIONS.add(self)
        self._runs: weakref.WeakKeyDictionary[Session, Session] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, session: Session) -> Session | None:
        with self._lock:
            return self._runs.get(session)

    def drop(self, session: Session) -> None:
        with self._lock:
            self._runs.pop(session, None)

    def sync(self, session: Session, enabled: bool, allow_local: bool) -> None:
        """Follow the settings (without stepping): none when ``enabled`` is off, else reconfigured, or started over
        when it cannot be (e.g. a budget below what it already generated)."""
        if not enabled:
            self.drop(session)
            return
        config = self.config_of(session.config)
        run = self.get(session)
        if run is not None:
            try:
                run.reconfigure(config)
                return
            except DraftScopeError:
                self.drop(session)
        run = Session.from_config(config, prompt_ids=session.prompt_ids, allow_local=allow_local)
        with self._lock:
            self._runs[session] = run

    def advance(self, session: Session) -> None:
        """One round per round of ``session``; once that one is done, to the end of the same budget."""
        run = self.get(session)
        while run is not None and not run.done and (len(run.records) < len(session.records) or session.done):
            run.step()
