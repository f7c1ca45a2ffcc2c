"""Saved traces: the JSON round trip (records, stats, settings), the same figures from a live session and from its
loaded trace, one clear error per bad file with nothing loaded, ``generate --json`` / ``--trace``, and the README's
gradio_client example run as written."""

from __future__ import annotations

import json
import os
import re
import runpy
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest

from app import common, compare_tab, crossvocab_tab, generate_tab, heads_tab, self_draft_tab, trees_tab
from core.cli import main
from core.errors import DraftScopeError
from core.specdec import Session, SessionConfig, trace as tr
from tests.helpers import app_error, call_handler, tab_session

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "examples" / "client_records.py"
PROMPT = "the cat sat on the mat. the cat sat on the"
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::UserWarning")]  # gr.Warning outside a request warns instead


@pytest.fixture(scope="module")
def chain(tiny_llama) -> Session:
    config = SessionConfig(target="tiny-llama", drafter="ngram", gamma=4, max_new_tokens=12)
    session = Session.from_config(config, prompt_ids=tiny_llama.encode(PROMPT))
    list(session.run())
    return session


@pytest.fixture(scope="module")
def tree(tiny_llama) -> Session:
    config = SessionConfig(target="tiny-llama", drafter="early-exit", drafter_options={"exit_layer": 2}, tree="3,2",
                           verifier="rsd", temperature=1.0, max_new_tokens=10)
    session = Session.from_config(config, prompt_ids=tiny_llama.encode(PROMPT))
    list(session.run())
    return session


def _plain(value):
    """A render output as comparable plain data (figures as their JSON)."""
    return json.loads(value.to_json()) if hasattr(value, "to_json") else value


# ------------------------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("name", ["chain", "tree"])
def test_round_trip_gives_the_same_records_stats_and_settings(request, name):
    session = request.getfixturevalue(name)
    text = tr.dumps(tr.trace_of(session))
    data = json.loads(text)
    assert data["schema"] == tr.SCHEMA and data["version"] == tr.VERSION and data["target"] == "tiny-llama"
    assert {r["type"] for r in data["records"]} == {"step" if name == "chain" else "tree"}
    loaded = tr.load_trace(text)
    assert loaded.records == session.records and len(loaded.records) == len(session.records) > 1
    assert loaded.stats == session.stats and loaded.stats.summary() == session.stats.summary()
    assert loaded.config == session.config and loaded.finish_reason == session.finish_reason == "max_new_tokens"
    assert (loaded.prompt_ids, loaded.generated_ids, loaded.prompt_text) == (session.prompt_ids,
                                                                              session.generated_ids,
                                                                              session.prompt_text)
    assert loaded.done and loaded.text == session.text
    assert tr.load_trace(text.encode()).records == session.records  # bytes too
    assert tr.trace_of(loaded) == data  # a loaded trace saves as it was loaded


def test_generate_tab_renders_a_trace_like_its_session_and_steps_through_it(chain, tmp_path):
    live = [_plain(v) for v in generate_tab.render(chain)]
    handlers = generate_tab.Handlers()
    path = tr.save_trace(tr.trace_of(chain), tmp_path / "chain.json")
    state, *outputs, status, records = handlers.load_trace({}, str(path))
    assert [_plain(v) for v in outputs] == live
    assert status.startswith(f"Loaded trace: {len(chain.records)} rounds of ngram on tiny-llama (no model).")
    assert records["records"] == tr.trace_of(chain)["records"]
    for i, record in list(enumerate(chain.records))[::5]:  # the round slider's inspector, with no model
        assert _plain(handlers.inspect(state, i)) == _plain(generate_tab.round_inspector_figure(record))
    settings = {"prompt": PROMPT, "chat": False, "target": "tiny-llama", "drafter": "ngram", "verifier": "greedy",
                "gamma": 4, "temperature": 0, "top_p": 1, "top_k": 0, "seed": 0, "max_new_tokens": 12}
    out = handlers._step(state, settings, lambda *a, **k: None)  # read-only: Step says so, nothing runs
    assert "read-only" in out[-2] and common.get_session(state["sid"]).records == chain.records
    saved, note = handlers.save_trace(state)
    assert tr.load_trace(Path(saved)).records == chain.records and f"{len(chain.records)} rounds" in note


def test_trees_tab_renders_a_trace_like_its_session_with_the_chain(tmp_path):
    handlers = trees_tab.Handlers()
    outputs = ("state", "text", "graph", "mask", "alpha", "compare", "summary", "round", "status", "records")
    settings = {"prompt": PROMPT, "chat": False, "target": "tiny-llama", "drafter": "early-exit",
                "draft_model": "tiny-llama", "exit_layer": 2, "vocab_trim": 0, "eta": 0.0, "lookup": False,
                "plus": False, "schedule": "constant", "confidence": 0.0, "greedy_draft": False, "shape": "3,2",
                "window": 256, "tree_attention": "hybrid", "tree_branch": 4, "max_depth": 5, "children": "auto",
                "verifier": "rsd", "temperature": 1.0, "seed": 0, "max_new_tokens": 8, "compare": True}
    first = call_handler(handlers.step, outputs, settings)
    out = call_handler(handlers.step, outputs, settings, first["state"])
    session = tab_session(out)
    assert set(out["records"]["extra"]["companions"]) == {"chain"}  # the chain rides along in the trace
    live = [_plain(v) for v in trees_tab.render(session)]
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(out["records"]))
    loaded = dict(zip(outputs, handlers.load_trace({}, str(path)), strict=True))
    assert [_plain(loaded[k]) for k in outputs[1:8]] == live
    assert loaded["status"].startswith("Loaded trace: 2 rounds of early-exit on tiny-llama (no model).")
    assert "chain comparison is not" not in loaded["status"]
    for i, record in enumerate(session.records):
        assert [_plain(v) for v in handlers.show_round(loaded["state"], i)] == [
            _plain(trees_tab.tree_figure(record)), _plain(trees_tab.tree_mask_figure(record)),
            trees_tab.tree_summary_html(record, session.stats.summary())]
    alone = out["records"]
    del alone["extra"]["companions"]  # without its chain: the rest shows, the status names what is missing
    path.write_text(json.dumps(alone))
    loaded = dict(zip(outputs, handlers.load_trace({}, str(path)), strict=True))
    assert "chain comparison is not in this trace" in loaded["status"]
    assert _plain(loaded["graph"]) == live[1]
    chain_trace = tmp_path / "chain.json"  # a chain trace is refused here, and says where it goes
    chain_trace.write_text(tr.dumps(tr.trace_of(trees_tab._chain_of(session))))
    state = dict(loaded["state"])
    assert "chain rounds" in app_error(handlers.load_trace, loaded["state"], str(chain_trace))
    assert loaded["state"] == state


@pytest.mark.parametrize("tab", [generate_tab, self_draft_tab, crossvocab_tab])
def test_every_chain_tab_loads_a_chain_trace_as_it_renders_the_session(chain, tree, tab, tmp_path):
    path = tr.save_trace(tr.trace_of(chain), tmp_path / "chain.json")
    handlers = tab.Handlers()
    _state, *outputs, status, _records = handlers.load_trace({}, str(path))
    assert [_plain(v) for v in outputs] == [_plain(v) for v in tab.render(chain)]
    assert status.startswith("Loaded trace: "), status
    path = tr.save_trace(tr.trace_of(tree), tmp_path / "tree.json")  # tree rounds: refused, with where to go
    message = app_error(handlers.load_trace, {}, str(path))
    assert "tree rounds" in message and "Draft trees" in message, message


def test_compare_and_heads_tabs_load_traces(chain, tmp_path):
    pair = tr.trace_of(chain, {"verdict": "A and B agree"}, {"B": chain})
    path = tr.save_trace(pair, tmp_path / "pair.json")
    strip_a, _, strip_b, _, status, records = compare_tab.CompareHandlers.load_trace(str(path))
    assert strip_a == strip_b == compare_tab.token_strip_html(chain.records, chain.prompt_text)
    assert "A and B agree" in status and records == pair
    assert "'ngram' drafter" in app_error(heads_tab.load_trace, str(path))  # an n-gram run is not the heads'


# ------------------------------------------------------------------------------------------------ bad input
def _bad(data: dict, how: str) -> str:
    data = json.loads(json.dumps(data))
    if how == "malformed":
        return '{"schema": "draftscope.trace", "version": 1,,}'
    if how == "truncated":
        text = json.dumps(data)
        return text[: len(text) // 2]
    if how == "version":
        data["version"] = 2
    elif how == "schema":
        data["schema"] = "something.else"
    elif how == "missing":
        del data["records"]
    elif how == "ill-typed":
        data["prompt_ids"] = "the cat"
    elif how == "record type":
        data["records"][1]["type"] = "banana"
    elif how == "record field":
        del data["records"][1]["data"]["accepted"]
    elif how == "record value":
        data["records"][1]["data"]["drafted"] = [{"position": "x"}]
    elif how == "stats":
        data["stats"]["rounds"] = "many"
    return json.dumps(data)


BAD = {"malformed": "malformed JSON", "truncated": "malformed JSON", "version": "version 2; this build of "
       "DraftScope reads version 1", "schema": "the schema is 'something.else'", "missing": "'records' is missing",
       "ill-typed": "'prompt_ids' should be a list", "record type": "record 1 has the unknown type 'banana'",
       "record field": "record 1 (step)", "record value": "record 1 (step)", "stats": "'stats.rounds' should be an "
       "integer"}


@pytest.mark.parametrize("how", list(BAD))
def test_each_bad_trace_is_one_clear_error(chain, how):
    with pytest.raises(DraftScopeError, match=re.escape(BAD[how])) as info:
        tr.load_trace(_bad(tr.trace_of(chain), how))
    assert "\n" not in str(info.value)


def test_size_limit_and_missing_file(chain, tmp_path, monkeypatch):
    path = tr.save_trace(tr.trace_of(chain), tmp_path / "t.json")
    monkeypatch.setattr(tr, "MAX_TRACE_BYTES", 1000)
    with pytest.raises(DraftScopeError, match="the limit is"):
        tr.load_trace(path)
    with pytest.raises(DraftScopeError, match="not found"):
        tr.load_trace(tmp_path / "nothing.json")


def test_a_bad_file_in_the_app_leaves_the_tab_as_it_was(chain, tmp_path):
    handlers = generate_tab.Handlers()
    good = tr.save_trace(tr.trace_of(chain), tmp_path / "good.json")
    state, *_ = handlers.load_trace({}, str(good))
    for how in ("version", "truncated", "record type"):
        path = tmp_path / f"{how}.json"
        path.write_text(_bad(tr.trace_of(chain), how))
        before = dict(state)
        assert BAD[how] in app_error(handlers.load_trace, state, str(path))  # the page keeps its content
        assert state == before and common.get_session(state["sid"]).records == chain.records  # nothing replaced


# ------------------------------------------------------------------------------------------------ CLI
def test_generate_json_is_a_trace_and_trace_writes_it(capsys, tmp_path):
    path = tmp_path / "run.json"
    code = main(["generate", "--target", "tiny-llama", "--drafter", "ngram", "--prompt", "a b a b a b a b",
                 "--max-new-tokens", "8", "--json", "--trace", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    trace = tr.load_trace(out)
    assert len(trace.generated_ids) == 8 and trace.stats.generated == 8 and trace.config.drafter == "ngram"
    assert sum(len(r.committed_ids) for r in trace.records) == 8
    assert json.loads(path.read_text()) == json.loads(out)
    assert not [p for p in tmp_path.iterdir() if p.name != "run.json"]  # no temporary file left behind
    code = main(["generate", "--target", "tiny-llama", "--drafter", "none", "--prompt", "hello", "--max-new-tokens",
                 "3", "--trace", str(path)])  # text output, the trace beside it
    out, err = capsys.readouterr()
    assert code == 0 and out.strip() and tr.load_trace(path).records[0].drafter == "none"


@pytest.mark.parametrize("where", ["no/such/folder/run.json", "."])
def test_trace_to_a_bad_path_exits_2_with_one_line(capsys, tmp_path, where):
    code = main(["generate", "--target", "tiny-llama", "--prompt", "hello", "--max-new-tokens", "2", "--trace",
                 str(tmp_path / where)])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err


# ------------------------------------------------------------------------------------------------ README example
def test_readme_shows_the_client_example_verbatim():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert EXAMPLE.read_text(encoding="utf-8") in blocks, "README.md must show tests/examples/client_records.py"


def test_client_example_runs(capsys):
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert re.search(r"^1 round, \d+ tokens? so far\.$", out, flags=re.M), out
    assert re.search(r"^round 0: drafted \[.*\], accepted \d+, committed '", out, flags=re.M), out
    assert "1 round of ngram on tiny-llama" in out
