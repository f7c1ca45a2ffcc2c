"""Hardening for a public Space (issue 21): the concurrency groups and the bounded queue, Stop while Run is still
loading models, one session's rounds and settings changes taken one at a time, error lines without server paths, the
public caps."""

from __future__ import annotations

import os
import threading
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest

from app import common, generate_tab, limits
from app.main import build_demo
from tests.helpers import call_session, no_progress

PROMPT = "one two three four five, one two three four five, one two"
SETTINGS = {"prompt": PROMPT, "chat": False, "target": "tiny-llama", "drafter": "ngram", "verifier": "greedy",
            "gamma": 3, "temperature": 0, "top_p": 1, "top_k": 0, "seed": 0, "max_new_tokens": 24}
MODEL_EVENTS = ("step", "run", "reset", "trees_step", "trees_run", "crossvocab_step", "self_draft_run", "var_step",
                "bench_open_example")
LONG_EVENTS = ("kv_run", "kv_draft_attention", "kv_long_context", "bench_run", "compare", "adaptive_aded",
               "adaptive_pearl", "adaptive_sweep", "var_generate", "var_scalekv", "heads_run", "lossless_check",
               "cost_model", "train_cost_model")


@pytest.fixture(scope="module")
def demo():
    return build_demo()


def _fns(demo) -> dict:
    return {fn.api_name: fn for fn in demo.fns.values()}


def test_model_work_and_long_jobs_are_bounded_groups(demo):
    fns, caps = _fns(demo), limits.limits()
    for name in MODEL_EVENTS:
        assert (fns[name].concurrency_id, fns[name].concurrency_limit) == ("model", caps.model_slots), name
    for name in LONG_EVENTS:
        assert (fns[name].concurrency_id, fns[name].concurrency_limit) == ("long", caps.long_slots), name
    assert demo._queue.max_size == caps.queue_size
    unlimited = {name for name, fn in fns.items() if fn.concurrency_limit is None}
    assert all(name.endswith(("save_trace", "load_trace")) for name in unlimited), unlimited  # no model work there
    for name in ("stop", "trees_stop", "crossvocab_stop", "self_draft_stop"):  # Stop never waits in the queue
        assert fns[name].queue is False, name


def test_public_caps_follow_the_environment(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("DRAFTSCOPE_PUBLIC", raising=False)
    assert limits.limits() is limits.LOCAL and not limits.public()
    monkeypatch.setenv("SPACE_ID", "someone/draftscope")
    assert limits.limits() is limits.PUBLIC
    monkeypatch.setenv("DRAFTSCOPE_PUBLIC", "0")  # an explicit no wins
    assert limits.limits() is limits.LOCAL
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.setenv("DRAFTSCOPE_PUBLIC", "1")
    assert limits.limits() is limits.PUBLIC
    strict, local = limits.PUBLIC, limits.LOCAL
    assert strict.queue_size <= local.queue_size and strict.model_slots <= local.model_slots
    assert strict.max_new_tokens < local.max_new_tokens and strict.max_prompt_chars < local.max_prompt_chars


def _run(handlers, state, **kw):
    return call_session(handlers.run, handlers.setting_names, {**SETTINGS, **kw}, state)


def test_stop_pressed_while_run_loads_models_is_kept():
    """Run on a fresh page first sends the session id (status "Loading models…"), so a Stop pressed before the first
    round reaches it: no round runs, and the status says so."""
    handlers = generate_tab.Handlers()
    run = _run(handlers, {})
    first = next(run)
    state, status = first[0], first[-2]
    assert state["sid"] and status == "Loading models…"
    handlers.stop(state)
    rest = list(run)
    assert "Stopped before the first round" in rest[-1][-2]
    assert len(common.get_session(state["sid"]).records) == 0
    again = list(_run(handlers, rest[-1][0]))  # Run again: goes on to the end
    assert common.get_session(state["sid"]).done and "Finished" in again[-1][-2]


def test_a_step_waits_for_the_round_in_progress():
    """A session's rounds and settings changes take turns: while its round lock is held (a Run's round in
    progress), a Step of the same session waits, then runs."""
    handlers = generate_tab.Handlers()
    names = handlers.setting_names
    values = [{**dict.fromkeys(names), **SETTINGS}[n] for n in names]
    state = handlers.step({}, *values, progress=no_progress)[0]
    session = common.get_session(state["sid"])
    done = threading.Event()

    def step():
        handlers.step(state, *values, progress=no_progress)
        done.set()

    with common.round_lock(state["sid"]):
        thread = threading.Thread(target=step)
        thread.start()
        time.sleep(0.5)
        assert not done.is_set() and len(session.records) == 1  # waiting for the lock
    thread.join(30)
    assert done.is_set() and len(session.records) == 2


@pytest.mark.parametrize("text, shown", [
    ("prompt file not found: /work/main/assets/prompts/x.jsonl", "prompt file not found: …/x.jsonl"),
    (r"no such file C:\Users\me\trace.json here", "no such file …/trace.json here"),
    ("see ~/.cache/draftscope/matrix/abc.json", "see …/abc.json"),
    ("ratio 1/2, a/b and https://example.org/a/b stay", "ratio 1/2, a/b and https://example.org/a/b stay"),
])
def test_error_lines_hide_server_paths(text, shown):
    assert common.hide_paths(text) == shown
    assert common.error_text(FileNotFoundError(text)).endswith(shown)


def test_share_with_local_models_is_refused(capsys):
    from app.main import main

    with pytest.raises(SystemExit) as info:
        main(["--share", "--allow-local-models"])
    assert info.value.code == 2 and "drop one of the two" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ faults
def test_stop_in_every_state_leaves_the_session_usable():
    """Stop before any session, on an idle one, during a Run, after a finished Run and on a loaded trace: never an
    error, and the next Step / Run does what it says."""
    handlers = generate_tab.Handlers()
    names = handlers.setting_names
    values = [{**dict.fromkeys(names), **SETTINGS}[n] for n in names]

    def step(state):
        return handlers.step(state, *values, progress=no_progress)

    handlers.stop({})  # no session yet
    handlers.stop(None)
    first = step({})
    state = first[0]
    assert first[-2].startswith("1 round"), first[-2]
    handlers.stop(state)  # idle: nothing to stop, and a stale Stop must not cut the next Run short
    assert step(state)[-2].startswith("2 rounds")
    run = _run(handlers, state)  # during a Run: after the round in progress
    next(run)
    handlers.stop(state)
    rest = list(run)
    assert "Stopped: Step or Run to go on." in rest[-1][-2]
    finished = list(_run(handlers, state))  # to the end, then Stop on a finished session
    assert common.get_session(state["sid"]).done and "Finished" in finished[-1][-2]
    handlers.stop(state)
    assert "Already finished" in step(state)[-2]
    assert "Already finished" in list(_run(handlers, state))[-1][-2]
    handlers.stop({"sid": "no-such-session"})  # a Stop for a session this process does not have
    assert "Finished" in list(_run(handlers, {"sid": "no-such-session"}))[-1][-2]  # a new one, run to the end


def test_a_client_that_disconnects_mid_run_frees_its_worker():
    """A browser closed during Run (the event stream dropped, as a raw HTTP client does here): the server stops that
    Run at its next update instead of computing to the end, and other visitors' Steps answer at once."""
    from gradio_client import Client

    from tests.load import _free_port, disconnect_mid_run

    app = build_demo()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True)
    try:
        url = app.local_url.rstrip("/")
        before = set(common.STORE._entries)
        assert disconnect_mid_run(url, {**SETTINGS, "target": "smollm2-135m", "max_new_tokens": 512})
        # the connection is closed here, mid-run: find the session it was running
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (set(common.STORE._entries) - before):
            time.sleep(0.1)
        session = common.get_session(next(iter(set(common.STORE._entries) - before)))
        time.sleep(3)  # the server notices the dropped stream and stops the generator at its next update
        rounds = len(session.records)
        time.sleep(3)
        assert len(session.records) == rounds, "the Run went on after its client disconnected"
        assert not session.done and len(session.generated_ids) < 512
        t = time.perf_counter()
        out = Client(url, verbose=False).predict(prompt=PROMPT, target="tiny-llama", drafter="ngram", chat=False,
                                                 max_new_tokens=4, api_name="/step")
        assert "round" in str(out[-2]) and time.perf_counter() - t < 30
    finally:
        app.close()


def test_cancel_stops_a_running_long_job_and_the_next_one_runs(monkeypatch):
    """Every tab with long jobs has a Cancel button: the running job of that page stops at its next progress report
    (an error line saying so), another page's job is untouched, and the page's next job runs to the end. The KV run
    here reports progress every 0.1 s until cancelled (a real tiny-model run can end before the Cancel arrives; the
    browser test cancels a real SmolLM2 run)."""
    from gradio_client import Client

    from app import kv_tab
    from tests.load import _free_port

    real_report = kv_tab.kv_report

    def endless_report(*args, progress, **kwargs):
        for step in range(1200):
            progress(step / 1200, desc="working…")
            time.sleep(0.1)
        raise AssertionError("never cancelled")

    app = build_demo()
    long_jobs = [fn for fn in app.fns.values() if fn.concurrency_id == limits.LONG]
    assert long_jobs and all(hasattr(fn.fn, "__wrapped__") for fn in long_jobs)  # every long job can be cancelled
    cancels = {fn.api_name for fn in app.fns.values() if (fn.api_name or "").endswith("_cancel")}
    assert {"kv_cancel", "compare_cancel", "bench_cancel", "var_cancel", "adaptive_cancel"} <= cancels
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True)
    try:
        kv = {"target": "tiny-llama", "drafter": "tiny-llama", "task": "passkey", "prompt": "", "length": 200,
              "budget": 64, "methods": ["snapkv"], "max_new_tokens": 4}
        mine, other = Client(app.local_url, verbose=False), Client(app.local_url, verbose=False)
        mine.predict(api_name="/kv_cancel")  # nothing running: no error, and nothing kept for the next job
        monkeypatch.setattr(kv_tab, "kv_report", endless_report)
        job = mine.submit(**kv, api_name="/kv_run")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not common._RUNNING:
            time.sleep(0.05)
        assert common._RUNNING, "the KV run never started"
        other.predict(api_name="/kv_cancel")  # another page's Cancel does not touch it
        time.sleep(0.5)
        assert not job.done() and common._RUNNING and not common._CANCELS
        mine.predict(api_name="/kv_cancel")
        t = time.monotonic()
        with pytest.raises(Exception, match="cancelled"):
            job.result(timeout=120)
        assert time.monotonic() - t < 60 and not common._RUNNING and not common._CANCELS
        monkeypatch.setattr(kv_tab, "kv_report", real_report)
        out = mine.predict(**kv, api_name="/kv_run")
        assert str(out[0]).startswith("Done in"), out[0]
    finally:
        app.close()
