"""The session store's budgets (bytes, entries, idle time, per visitor) and what a visitor is told when their session
or result was dropped; the byte measure itself on real sessions."""

from __future__ import annotations

import pytest

from app import common
from app.store import Budget, Store, TooLarge
from core.runtime.cache import cache_bytes
from core.runtime.memory import footprint, human
from core.runtime.models import load_model
from core.specdec import Session, SessionConfig
from tests.helpers import call_session

GB = 10**9


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Blob:
    def __init__(self, nbytes: int):
        self.nbytes = nbytes


def store(total=100, items=10, ttl=60.0, visitor_items=10, visitor_bytes=100, clock=None, dropped=None) -> Store:
    budget = Budget(total_bytes=total, max_items=items, ttl_s=ttl, per_visitor_items=visitor_items,
                    per_visitor_bytes=visitor_bytes)
    return Store(budget, measure=lambda v: v.nbytes, clock=clock or Clock(),
                 on_drop=None if dropped is None else dropped.append)


def test_over_the_byte_budget_the_heaviest_visitor_loses_their_oldest_entry():
    dropped = []
    s = store(total=100, dropped=dropped)
    s.put("a1", Blob(30), "alice")
    s.put("b1", Blob(20), "bob")
    s.put("a2", Blob(30), "alice")
    s.put("b2", Blob(30), "bob")  # 110 bytes: alice holds 60, bob 50 → alice's oldest goes
    assert "a1" not in s and {"b1", "a2", "b2"} <= {k for k in ("a1", "b1", "a2", "b2") if k in s}
    assert "memory budget" in s.gone("a1") and dropped == ["a1"]
    assert s.usage() == {"entries": 3, "bytes": 80, "visitors": 2, "largest_visitor_bytes": 50}


def test_one_visitor_cannot_push_out_everyone_else():
    s = store(total=100, items=10, visitor_items=3, visitor_bytes=60)
    s.put("bob", Blob(30), "bob")
    for i in range(6):
        s.put(f"m{i}", Blob(15), "mallory")  # count and bytes capped for mallory: only her own entries go
    assert "bob" in s and [f"m{i}" in s for i in range(6)] == [False] * 3 + [True] * 3
    assert "more than 3 sessions" in s.gone("m0")
    s.put("big", Blob(50), "mallory")  # 45 + 50 > 60: her older ones go first, never the one being put
    assert "big" in s and "bob" in s and "passed 60 B" in s.gone("m4")


def test_an_entry_too_large_alone_is_refused_and_nothing_is_kept():
    s = store(total=100, visitor_bytes=60)
    s.put("a", Blob(10), "alice")
    with pytest.raises(TooLarge, match="one visitor may keep 60 B"):
        s.put("huge", Blob(70), "alice")
    with pytest.raises(TooLarge, match="the limit here is 100 B"):
        s.put("huger", Blob(170), "alice")
    assert "huge" not in s and "a" in s


def test_idle_entries_expire_with_a_note_and_use_keeps_them():
    clock = Clock()
    s = store(ttl=60, clock=clock)
    s.put("used", Blob(1), "a")
    s.put("idle", Blob(1), "a")
    clock.t = 50
    assert s.get("used") is not None
    clock.t = 100
    assert s.get("used") is not None and s.get("idle") is None
    assert s.gone("idle") == "dropped after 1 minutes without use"
    s.put("idle", Blob(1), "a")  # put again: no note any more
    assert s.gone("idle") is None


def test_a_grown_entry_is_remeasured_and_makes_room_or_is_dropped():
    clock = Clock()
    s = store(total=100, visitor_bytes=80, clock=clock)
    s.put("other", Blob(40), "bob")
    grow = Blob(10)
    s.put("mine", grow, "alice")
    grow.nbytes = 70  # its KV cache grew: 110 in all
    assert s.remeasure("mine", every_s=5) == 10  # measured just now: skipped
    clock.t = 10
    assert s.remeasure("mine", every_s=5) == 70 and "other" not in s and "mine" in s
    grow.nbytes = 90
    with pytest.raises(TooLarge):
        s.remeasure("mine")
    assert "mine" not in s and "one visitor may keep" in s.gone("mine")


def test_replacing_and_popping_are_not_drops():
    dropped = []
    s = store(dropped=dropped)
    s.put("k", Blob(1), "a")
    s.put("k", Blob(2), "a")  # a Reset: same key, new value
    assert dropped == [] and s.get("k").nbytes == 2
    s.pop("k")
    assert dropped == ["k"] and s.gone("k") is None and "k" not in s


def test_human_sizes():
    assert [human(n) for n in (512, 12_300, 3_400_000, 1.25 * GB, 7000 * GB)] == [
        "512 B", "12.3 KB", "3.4 MB", "1.2 GB", "7,000.0 GB"]


# ------------------------------------------------------------------------------------------------ real sessions
def _session(max_new: int = 12, prompt: str = "The capital of France is") -> Session:
    config = SessionConfig(target="tiny-llama", drafter="ngram", verifier="greedy", gamma=3, max_new_tokens=max_new)
    return Session.from_config(config, prompt=prompt)


def test_footprint_counts_the_kv_cache_and_not_the_shared_weights():
    session = _session()
    empty = footprint(session)
    for _ in session.run():
        pass
    kv = cache_bytes(session.target_kv.cache)
    full = footprint(session)
    assert kv > 0 and full - empty >= kv  # the cache it grew is counted
    assert full < load_model("tiny-llama").param_bytes  # the model it reads is not
    assert footprint([session, session]) < full + 1000  # what two references share is counted once


@pytest.fixture
def small_store(monkeypatch):
    """The app's store with a tiny budget (the real budget would need gigabytes to fill)."""
    fresh = Store(Budget(total_bytes=GB, max_items=3, ttl_s=3600, per_visitor_items=3, per_visitor_bytes=GB),
                  measure=common._measure, on_drop=common._dropped)
    monkeypatch.setattr(common, "STORE", fresh)
    return fresh


def test_a_dropped_session_is_named_on_the_next_step(small_store):
    from app.generate_tab import RUN_SETTINGS, Handlers

    handlers = Handlers()
    settings = {**dict.fromkeys(RUN_SETTINGS), "target": "tiny-llama", "drafter": "ngram", "verifier": "greedy",
                "prompt": "Once upon a time", "chat": False, "gamma": 3, "temperature": 0.0, "top_k": 0,
                "top_p": 1.0, "seed": 0, "max_new_tokens": 16}
    first = call_session(handlers.step, handlers.setting_names, settings)
    state = first[0]
    assert small_store.get(state["sid"]) is not None
    for i in range(3):  # three other sessions of the same visitor push the first out
        small_store.put(f"other{i}", _session(), common.visitor())
    assert small_store.get(state["sid"]) is None
    again = call_session(handlers.step, handlers.setting_names, settings, state)
    status = again[-2]
    assert "Your previous session was dropped because you had more than 3 sessions" in status, status
    assert again[0]["sid"] == state["sid"] and small_store.get(state["sid"]) is not None


def test_a_dropped_result_says_run_it_again(small_store):
    kept = common.hold({"report": "r"}, "the KV run")
    assert common.held(kept) == {"report": "r"}
    small_store.pop(kept["held"], note="dropped after 30 minutes without use")
    assert str(_error(common.held, kept)) == "the KV run was dropped after 30 minutes without use: run it again"
    assert common.held({}, required=False) is None
    again = common.hold({"report": "s"}, "the KV run", kept)  # the same key, kept again
    assert again["held"] == kept["held"] and common.held(again) == {"report": "s"}


def _error(fn, *args) -> Exception:
    try:
        fn(*args)
    except Exception as exc:
        return exc
    raise AssertionError("no error")


def test_visitor_is_the_address_and_the_forwarded_one_only_in_public(monkeypatch):
    from types import SimpleNamespace

    from gradio.context import LocalContext

    request = SimpleNamespace(headers={"x-forwarded-for": "203.0.113.7, 10.0.0.1"},
                              client=SimpleNamespace(host="10.0.0.1"))
    assert common.visitor() == "local"
    token = LocalContext.request.set(request)
    try:
        monkeypatch.delenv("SPACE_ID", raising=False)
        monkeypatch.setenv("DRAFTSCOPE_PUBLIC", "0")
        assert common.visitor() == "10.0.0.1"
        monkeypatch.setenv("DRAFTSCOPE_PUBLIC", "1")
        assert common.visitor() == "203.0.113.7"
    finally:
        LocalContext.request.reset(token)
