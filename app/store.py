"""The per-process store of what visitors keep between requests (live sessions with their KV caches, loaded traces,
the KV / VAR / ADED / heads tabs' last results), budgeted in bytes and time, fairly between visitors.

- Every entry is measured in bytes (``core.runtime.memory.footprint``: KV caches and records; the shared models are
  not counted) when it is put and again after each round (``remeasure``).
- Over the byte budget (or the entry count), the visitor holding the most bytes loses their least recently used
  entry first: a visitor who fills memory evicts their own work before anyone else's.
- One visitor (one address) may hold at most ``per_visitor_items`` entries and ``per_visitor_bytes``.
- An entry unused for ``ttl_s`` seconds is dropped.
- The entry being put (or stepped) is never the one evicted to make room for itself; an entry that alone exceeds the
  per-visitor or total budget is refused (``TooLarge``) rather than kept.
- A dropped key keeps a short note of why (``gone``), so the visitor's next request says what happened instead of
  silently starting over.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from core.errors import DraftScopeError
from core.runtime.memory import footprint, human


class TooLarge(DraftScopeError):
    """One entry alone exceeds what one visitor (or the whole process) may keep."""


@dataclass
class Entry:
    value: object
    owner: str
    nbytes: int
    used: float  # monotonic time of the last get or put
    measured: float  # monotonic time of the last measurement


@dataclass(frozen=True)
class Budget:
    total_bytes: int
    max_items: int
    ttl_s: float
    per_visitor_items: int
    per_visitor_bytes: int


class Store:
    """Key → value with byte, count, time and per-visitor budgets (see the module docstring). Thread-safe."""

    gone_kept = 4096  # how many eviction notes are remembered

    def __init__(self, budget: Budget, measure: Callable[[object], int] = footprint,
                 clock: Callable[[], float] = time.monotonic, on_drop: Callable[[str], None] | None = None):
        self.budget, self.measure, self.clock, self.on_drop = budget, measure, clock, on_drop
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # least recently used first
        self._gone: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.RLock()

    # -------------------------------------------------------------------------------------------- reading
    def get(self, key: str | None):
        if not key:
            return None
        with self._lock:
            self._expire()
            entry = self._entries.get(key)
            if entry is None:
                return None
            entry.used = self.clock()
            self._entries.move_to_end(key)
            return entry.value

    def gone(self, key: str | None) -> str | None:
        """Why ``key`` was dropped (None if it was not, or was put again since)."""
        with self._lock:
            self._expire()
            return self._gone.get(key) if key else None

    def owner(self, key: str) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
            return entry.owner if entry else None

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def usage(self) -> dict:
        """Totals for the status and the load script: entries, bytes, visitors, bytes of the largest visitor."""
        with self._lock:
            per = self._per_owner()
            return {"entries": len(self._entries), "bytes": sum(e.nbytes for e in self._entries.values()),
                    "visitors": len(per), "largest_visitor_bytes": max((b for _, b in per.values()), default=0)}

    # -------------------------------------------------------------------------------------------- writing
    def put(self, key: str, value, owner: str = "local") -> None:
        """Keep ``value`` under ``key`` for ``owner``; makes room by the rules above (other entries may be dropped,
        each with a note). Raises ``TooLarge`` (and keeps nothing under ``key``) when it alone is over budget."""
        nbytes = self.measure(value)
        with self._lock:
            self._gone.pop(key, None)
            self._check_size(nbytes)
            self._entries.pop(key, None)  # replaced (a Reset, a new session): not a drop
            now = self.clock()
            self._entries[key] = Entry(value, owner, nbytes, now, now)
            self._make_room(key)

    def remeasure(self, key: str, every_s: float = 0.0) -> int:
        """Measure ``key``'s entry again (after a round grew its caches) and make room; returns its bytes. Skipped
        when it was measured less than ``every_s`` seconds ago (a walk over a long session's records costs
        milliseconds per thousand rounds). An entry grown past its visitor's (or the total) budget is dropped with a
        note and ``TooLarge`` is raised."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return 0
        if self.clock() - entry.measured < every_s:
            return entry.nbytes
        nbytes = self.measure(entry.value)
        with self._lock:
            if self._entries.get(key) is not entry:
                return nbytes
            entry.nbytes = nbytes
            entry.used = entry.measured = self.clock()
            self._entries.move_to_end(key)
            try:
                self._check_size(nbytes)
            except TooLarge as exc:
                self._evict(key, str(exc))
                raise
            self._make_room(key)
            return nbytes

    def pop(self, key: str | None, note: str | None = None) -> None:
        """Drop ``key`` (its owner asked: no note unless ``note``)."""
        if not key:
            return
        with self._lock:
            if key in self._entries:
                if note:
                    self._evict(key, note)
                else:
                    self._entries.pop(key)
                    self._dropped(key)
            if not note:
                self._gone.pop(key, None)

    # -------------------------------------------------------------------------------------------- rules
    def _check_size(self, nbytes: int) -> None:
        b = self.budget
        if nbytes > b.total_bytes:
            raise TooLarge(f"this needs {human(nbytes)} of memory to keep; the limit here is {human(b.total_bytes)}: "
                           "use a shorter prompt or fewer new tokens")
        if nbytes > b.per_visitor_bytes:
            raise TooLarge(f"this needs {human(nbytes)} of memory to keep; one visitor may keep "
                           f"{human(b.per_visitor_bytes)} here: use a shorter prompt or fewer new tokens")

    def _per_owner(self) -> dict[str, tuple[int, int]]:
        per: dict[str, tuple[int, int]] = {}
        for e in self._entries.values():
            n, b = per.get(e.owner, (0, 0))
            per[e.owner] = (n + 1, b + e.nbytes)
        return per

    def _make_room(self, keep: str) -> None:
        b = self.budget
        owner = self._entries[keep].owner
        while True:  # the visitor's own limits: their least recently used entries go first
            n, used = self._per_owner()[owner]
            if n <= b.per_visitor_items and used <= b.per_visitor_bytes:
                break
            victim = next(k for k, e in self._entries.items() if e.owner == owner and k != keep)
            why = (f"you had more than {b.per_visitor_items} sessions or results open"
                   if n > b.per_visitor_items else f"your sessions and results passed {human(b.per_visitor_bytes)}")
            self._evict(victim, f"dropped because {why} (older ones go first)")
        while True:  # the whole process: the visitor holding the most bytes gives up their oldest entry
            total = sum(e.nbytes for e in self._entries.values())
            if len(self._entries) <= b.max_items and total <= b.total_bytes:
                break
            per = self._per_owner()
            order = sorted(per, key=lambda o: (-per[o][1], o))
            victim = None
            for o in order:
                victim = next((k for k, e in self._entries.items() if e.owner == o and k != keep), None)
                if victim is not None:
                    break
            if victim is None:
                break
            self._evict(victim, "dropped to make room for other visitors (the server's memory budget "
                                f"of {human(b.total_bytes)} / {b.max_items} sessions was full)")

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, e in self._entries.items() if now - e.used > self.budget.ttl_s]:
            self._evict(key, f"dropped after {self.budget.ttl_s / 60:.0f} minutes without use")

    def _evict(self, key: str, why: str) -> None:
        self._entries.pop(key, None)
        self._gone[key] = why
        while len(self._gone) > self.gone_kept:
            self._gone.popitem(last=False)
        self._dropped(key)

    def _dropped(self, key: str) -> None:
        if self.on_drop is not None:
            self.on_drop(key)


__all__ = ["Budget", "Entry", "Store", "TooLarge"]
