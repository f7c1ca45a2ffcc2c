"""Bad input, table-driven (issue 21): every row is one bad value given to an app endpoint (its handler called as
Gradio calls it, tiny models) or to a CLI command, and must give one clear line — a ``gr.Error`` in the app (so API
clients see a failure), exit code 2 and one ``error:`` line on the CLI — with no traceback and no server path, before
any long work; after each app error the same page keeps working (a good call right after it succeeds)."""

from __future__ import annotations

import math

import pytest

from app import bench_tab, generate_tab, kv_tab, metrics_tab, trees_tab, var_tab
from core.cli import main as cli_main
from tests.helpers import app_error, call_session, tab_session

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PROMPT = "one two three four five, one two three four five, one two"
STEP = {"prompt": PROMPT, "chat": False, "target": "tiny-llama", "drafter": "ngram", "verifier": "greedy", "gamma": 3,
        "temperature": 0, "top_p": 1, "top_k": 0, "seed": 0, "max_new_tokens": 256}


def _no_progress(*args, **kwargs):
    pass


# ------------------------------------------------------------------------------------------------ the step endpoint
STEP_CASES = [
    ({"prompt": ""}, "prompt is empty"),
    ({"prompt": "   \n "}, "prompt is empty"),
    ({"prompt": None}, "prompt is empty"),
    ({"prompt": 12345}, "the prompt must be text"),
    ({"prompt": "x" * 70_000}, "characters; the limit here is"),
    ({"gamma": 5.5}, "γ must be a whole number, got 5.5"),
    ({"gamma": 0}, "γ must be in 1..64"),
    ({"gamma": 10 ** 6}, "γ must be in 1..64"),
    ({"gamma": "three"}, "γ must be a whole number"),
    ({"gamma": math.nan}, "γ must be a whole number"),
    ({"seed": 1e20}, "seed must be in 0..9223372036854775807"),
    ({"seed": -3}, "seed must be in 0.."),
    ({"seed": 2.5}, "seed must be a whole number"),
    ({"seed": math.inf}, "seed must be a whole number"),
    ({"temperature": math.nan}, "temperature must be a finite number"),
    ({"temperature": math.inf}, "temperature must be a finite number"),
    ({"temperature": -1}, "temperature must be in [0, 10]"),
    ({"temperature": "hot"}, "temperature must be a number"),
    ({"top_p": 1.5}, "top-p must be in (0, 1]"),
    ({"top_p": math.nan}, "top-p must be a finite number"),
    ({"top_k": -1}, "top-k must be in 0.."),
    ({"top_k": 2.5}, "top-k must be a whole number"),
    ({"max_new_tokens": 0}, "max new tokens must be in 1.."),
    ({"max_new_tokens": 10 ** 9}, "max new tokens must be in 1.."),
    ({"max_new_tokens": None}, "max new tokens must be a whole number"),
    ({"target": "no-such-model"}, "unknown model 'no-such-model'"),
    ({"target": "/etc/passwd"}, "unknown model"),
    ({"target": None}, "no model given"),
    ({"drafter": "nope"}, "unknown drafter 'nope'"),
    ({"verifier": "nope"}, "unknown verifier 'nope'"),
    ({"gamma": True}, "γ must be a whole number, got True"),
    ({"drafter": "early-exit", "exit_layer": 99}, "exit layer"),
    ({"drafter": "sorted", "thresholds": "0.5," * 1000}, "thresholds is 4,000 characters; the limit here is 2,000"),
    ({"drafter": "model", "draft_model": "/etc"}, "--allow-local-models"),
]


@pytest.fixture(scope="module")
def step_tab():
    handlers = generate_tab.Handlers()
    names = handlers.setting_names

    def step(state, **kw):
        return dict(zip(("state", "strip", "stats", "chart", "inspector", "slider", "status", "records"),
                        call_session(handlers.step, names, {**STEP, **kw}, state), strict=True))
    first = step(None)
    assert first["status"].startswith("1 round"), first["status"]
    return step, first["state"]


@pytest.mark.parametrize("kw, message", STEP_CASES, ids=[f"step-{i}" for i in range(len(STEP_CASES))])
def test_step(step_tab, kw, message):
    step, state = step_tab
    session = tab_session({"state": state})
    rounds = len(session.records)
    assert message in app_error(step, state, **kw)
    assert tab_session({"state": state}) is session and len(session.records) == rounds  # nothing half-done
    again = step(state)  # the page keeps working with good settings
    assert tab_session(again) is session and len(session.records) == rounds + 1, again["status"]


# ------------------------------------------------------------------------------------------------ other endpoints
TREES = {"prompt": PROMPT, "chat": False, "target": "tiny-llama", "drafter": "early-exit", "draft_model": "tiny-llama",
         "exit_layer": 0, "vocab_trim": 0, "eta": 0.0, "lookup": False, "plus": False, "schedule": "constant",
         "confidence": 0.0, "greedy_draft": False, "shape": "2,1", "window": 256, "tree_attention": "hybrid",
         "tree_branch": 4, "max_depth": 5, "children": "auto", "verifier": "greedy", "temperature": 0.0, "seed": 0,
         "max_new_tokens": 8, "compare": False}


def _trees(**kw):
    handlers = trees_tab.Handlers()
    return call_session(handlers.step, handlers.setting_names, {**TREES, **kw})


def _kv(**kw):
    s = {"target": "tiny-llama", "drafter": "tiny-llama", "task": "passkey", "prompt": "", "length": 160,
         "methods": ["snapkv"], "budget": 32, "max_new_tokens": 4, "seed": 0, "view_method": "snapkv", "show": "both",
         "layer": 0, "head": 0, **kw}
    return kv_tab.Handlers().run({}, **s, progress=_no_progress)


def _var(**kw):
    s = {"class_name": "ring", "seed": 3, "split": 4, "n": 1, "cfg": 1.5, **kw}
    return var_tab.generate({}, s["class_name"], s["seed"], s["split"], s["n"], s["cfg"], 1, progress=_no_progress)


def _bench(**kw):
    s = {"target": "tiny-llama", "configs": ["ngram"], "per_category": 1, "max_new_tokens": 8, **kw}
    return bench_tab.Handlers().run(s["target"], s["configs"], s["per_category"], s["max_new_tokens"],
                                    progress=_no_progress)


OTHER_CASES = [
    (lambda: _trees(shape="1," * 199 + "1"), "levels deep, more than the draft depth"),
    (lambda: _trees(shape="2,x"), "tree shape must be"),
    (lambda: _trees(shape=""), "tree shape is empty"),
    (lambda: _trees(shape="[[0],[1,2]"), "list of lists"),
    (lambda: _trees(tree_branch=2.5), "tree branch must be a whole number"),
    (lambda: _trees(shape="4," * 5000), "the tree shape is 10,000 characters; the limit here is 2,000"),
    (lambda: _trees(shape=["4", "2"]), "the tree shape must be text"),
    (lambda: _trees(exit_layer=-1), "exit layer must be in 0.."),
    (lambda: _kv(methods=[]), "choose at least one method"),
    (lambda: _kv(methods=["nope"]), "unknown method"),
    (lambda: _kv(task="nope"), "unknown task"),
    (lambda: _kv(length=10), "length must be in"),
    (lambda: _kv(budget=0), "budget"),
    (lambda: _kv(max_new_tokens=0), "max new tokens must be in"),
    (lambda: _kv(task="custom", prompt="  "), "custom prompt is empty"),
    (lambda: _var(n=0), "1..16"),
    (lambda: _var(split=9), "0..6"),
    (lambda: _var(seed=1.5), "whole number"),
    (lambda: _var(cfg=99), "cfg must be in"),
    (lambda: _bench(configs=[]), "choose at least one configuration"),
    (lambda: _bench(per_category=0), "prompts per category must be in 1.."),
    (lambda: _bench(per_category=2.5), "prompts per category must be a whole number"),
    (lambda: _bench(max_new_tokens=-5), "max new tokens must be in"),
    (lambda: _bench(configs=["nope"]), "nope"),
    (lambda: metrics_tab.compare("", None, "auto", False, None), "paste"),
    (lambda: metrics_tab.compare("<html>not metrics</html>", None, "auto", False, None), "metrics"),
    (lambda: metrics_tab.compare("x" * (metrics_tab.MAX_DUMP_BYTES + 1), None, "auto", False, None),
     "the pasted dump is"),
    (lambda: bench_tab.holdout(None), "no matrix shown"),
    (lambda: generate_tab.Handlers().load_trace({}, None), "no file"),
    (lambda: generate_tab.Handlers().load_trace({}, "/nonexistent/trace.json"), "trace.json"),
    (lambda: generate_tab.Handlers().lossless({}), "nothing generated yet"),
]


@pytest.mark.parametrize("call, message", OTHER_CASES, ids=[f"other-{i}" for i in range(len(OTHER_CASES))])
def test_other_endpoints(call, message):
    assert message in app_error(call)


def test_a_good_call_after_errors_works():
    """The endpoints above keep working after their errors (one good call each, cheap settings)."""
    assert "1 round" in _trees()[-2]
    assert _kv()[1].startswith("Done in")


def test_the_table_is_large_enough():
    assert len(STEP_CASES) + len(OTHER_CASES) + len(CLI_CASES) >= 60


# ------------------------------------------------------------------------------------------------ the CLI
CLI_CASES = [
    (["generate", "--prompt", "hi", "--gamma", "5.5"], "whole number"),
    (["generate", "--prompt", "hi", "--gamma", "0"], "must be in 1.."),
    (["generate", "--prompt", "hi", "--seed", "1e20"], "must be in 0..9223372036854775807"),
    (["generate", "--prompt", "hi", "--seed", "-1"], "must be in 0.."),
    (["generate", "--prompt", "hi", "--temperature", "nan"], "finite number"),
    (["generate", "--prompt", "hi", "--temperature", "inf"], "finite number"),
    (["generate", "--prompt", "hi", "--top-p", "2"], "top-p"),
    (["generate", "--prompt", "hi", "--top-k", "-1"], "must be in 0.."),
    (["generate", "--prompt", "hi", "--max-new-tokens", "0"], "must be in 1.."),
    (["generate", "--prompt", "hi", "--max-new-tokens", "abc"], "whole number"),
    (["generate", "--prompt", "hi", "--drafter", "early-exit", "--tree", ",".join(["1"] * 200)],
     "levels deep, more than the draft depth"),
    (["generate", "--prompt", "hi", "--drafter", "nope"], "unknown drafter"),
    (["generate", "--prompt", "hi", "--verifier", "nope"], "unknown verifier"),
    (["generate", "--prompt", "hi", "--target", "no-such-model"], "unknown model"),
    (["generate", "--prompt", ""], "empty"),
    (["bench", "--per-category", "-1"], "must be in 1.."),
    (["bench", "--per-category", "0"], "must be in 1.."),
    (["bench", "--limit", "0"], "must be in 1.."),
    (["bench", "--max-new-tokens", "-5"], "must be in 1.."),
    (["easyspec-report", "--per-category", "0"], "must be in 1.."),
    (["kv", "--samples", "0"], "must be in 1.."),
    (["kv", "--budget", "0"], "budget"),
    (["kv", "--methods", "nope"], "unknown method"),
    (["var", "generate", "--n", "0"], "must be in 1.."),
    (["var", "generate", "--cfg", "nan"], "finite number"),
    (["optimal-acceptance", "--p", "0.5,0.5", "--q", "0.5,0.5", "--drafts", "0"], "must be in 1.."),
    (["nope"], "invalid choice"),
]


@pytest.mark.parametrize("argv, message", CLI_CASES, ids=[f"cli-{i}" for i in range(len(CLI_CASES))])
def test_cli(capsys, argv, message):
    argv = [*argv, "--target", "tiny-llama"] if argv[0] in ("generate", "kv") and "--target" not in argv else argv
    code = cli_main(argv)
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    assert message in err and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
