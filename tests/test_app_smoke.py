"""Every API endpoint of the app over HTTP with gradio_client (tiny model): launch, call, close."""

from __future__ import annotations

import os
import socket
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from app import options
from app.main import build_demo

TINY = {"target": "tiny-llama", "drafter": "ngram", "verifier": "greedy", "max_new_tokens": 8, "chat": False}
PROMPT = "the cat sat on the mat. the cat sat on the"
ROUND = 'class="round-sep" title='


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo():
    demo = build_demo()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True)
    yield demo
    demo.close()


@pytest.fixture()
def client(demo):
    return Client(demo.local_url, verbose=False)  # a fresh client = a fresh user session


def _call(client, endpoint, **kw):
    strip, stats, chart, inspector, _round_slider, status, records = client.predict(**{**TINY, **kw},
                                                                                    api_name=endpoint)
    return {"strip": strip, "stats": stats, "chart": chart, "inspector": inspector, "status": status,
            "records": records}


def test_endpoints_are_named(client):
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/step", "/run", "/stop", "/reset", "/inspect_round", "/lossless_check", "/example_prompt",
            "/compare"} <= endpoints


def test_run_renders_everything(client):
    out = _call(client, "/run", prompt=PROMPT)
    assert 'class="tok ' in out["strip"] and "target calls" in out["stats"]
    assert out["status"].startswith("Finished"), out["status"]
    assert out["inspector"] and out["chart"]  # plotly figures come back as JSON payloads


def test_step_adds_one_round_at_a_time_and_settings_apply_live(client):
    _call(client, "/reset", prompt=PROMPT)
    first = _call(client, "/step", prompt=PROMPT)
    second = _call(client, "/step", prompt=PROMPT, gamma=2)
    assert first["strip"].count(ROUND) == 1 and second["strip"].count(ROUND) == 2
    assert [len(out["records"]["records"]) for out in (first, second)] == [1, 2]
    assert second["records"]["records"][1]["data"]["settings"]["gamma"] == 2
    assert "Changed gamma from round 1 on" in second["status"]
    third = _call(client, "/step", prompt=PROMPT + " again")  # a new prompt restarts
    assert third["strip"].count(ROUND) == 1


def test_lossless_check_and_inspect_round(client):
    _call(client, "/run", prompt=PROMPT)
    result, status = client.predict(api_name="/lossless_check")
    assert "identical" in result and not status
    assert client.predict(0, api_name="/inspect_round")


def test_lossless_before_anything_is_a_message(client):
    with pytest.raises(AppError, match="nothing generated yet"):
        client.predict(api_name="/lossless_check")


def test_stop_endpoint_halts_a_run(client):
    job = client.submit(**{**TINY, "max_new_tokens": 400, "gamma": 1}, prompt=PROMPT, api_name="/run")
    while len(job.outputs()) < 3 and not job.done():
        time.sleep(0.05)
    client.predict(api_name="/stop")
    job.result()
    status = job.outputs()[-1][-2]  # the records JSON follows the status
    assert status.startswith("Stopped") or "Stopped:" in status, status


@pytest.mark.parametrize("kw, message", [
    ({"prompt": ""}, "prompt is empty"),
    ({"prompt": PROMPT, "drafter": "model", "draft_model": "tiny-gemma"}, "tokenizer"),
    ({"prompt": "word " * 3000}, "exceeds the context"),
])
def test_bad_input_is_a_message(client, kw, message):
    with pytest.raises(AppError, match=message) as info:  # an API client sees a failure, not a successful status
        _call(client, "/step", **kw)
    assert "Traceback" not in str(info.value)
    assert _call(client, "/step", prompt=PROMPT)["strip"].count(ROUND) == 1  # still usable


@pytest.mark.parametrize("kw, message", [({"gamma": 0}, "less than minimum value 1"),
                                         ({"temperature": 50}, "greater than maximum value 2"),
                                         ({"target": "no/such-model"}, "not in the list of choices")])
def test_out_of_range_settings_are_refused_by_the_page(client, kw, message):
    """Gradio checks slider bounds before our handler runs: the page shows its error; the session goes on."""
    with pytest.raises(Exception, match=message):
        _call(client, "/step", prompt=PROMPT, **kw)
    assert _call(client, "/step", prompt=PROMPT)["strip"].count(ROUND) == 1


def test_compare_gives_a_verdict(client):
    strip_a, _stats_a, strip_b, _stats_b, verdict, records = client.predict(
        prompt=PROMPT, chat=False, target="tiny-llama", temperature=0, seed=0, max_new_tokens=8,
        a_drafter="ngram", a_verifier="greedy", a_draft_model="tiny-llama", a_gamma=4, a_exit_layer=0, a_ngram_size=3,
        b_drafter="none", b_verifier="greedy", b_draft_model="tiny-llama", b_gamma=4, b_exit_layer=0, b_ngram_size=3,
        api_name="/compare")
    assert 'class="tok ' in strip_a and 'class="tok ' in strip_b
    assert "faster" in verdict or "slower" in verdict or "tok/s" in verdict
    assert "outputs identical" in verdict
    assert records["drafter"] == "ngram" and records["extra"]["companions"]["B"]["drafter"] == "none"


def test_run_streams_every_round(client):
    job = client.submit(**TINY, prompt=PROMPT, api_name="/run")
    job.result()
    rounds = [out[0].count(ROUND) for out in job.outputs() if isinstance(out[0], str)]  # not "Loading models…"
    assert len(rounds) >= 3 and rounds == sorted(rounds) and rounds[-1] >= 2
    final = job.outputs()[-1][-1]  # the records JSON comes with the last update: every round, as a trace
    assert final["schema"] == "draftscope.trace" and len(final["records"]) == rounds[-1]


# the parameters of /step before its drafter options were generated: every one still exists, with the same meaning
OLD_STEP_PARAMETERS = ("prompt", "chat", "target", "drafter", "verifier", "draft_model", "gamma", "temperature",
                       "top_p", "top_k", "seed", "exit_layer", "ngram_size", "max_new_tokens", "eta")


def test_old_parameters_are_still_named(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for endpoint in ("/step", "/run", "/reset"):
        names = [p["parameter_name"] for p in api[endpoint]["parameters"]]
        assert set(OLD_STEP_PARAMETERS) <= set(names), names
        assert "adapter" not in names and "exits" not in names  # server files: only with --allow-local-models
    compare = {p["parameter_name"] for p in api["/compare"]["parameters"]}
    assert {f"{side}_{name}" for side in "ab" for name in ("drafter", "verifier", "draft_model", "gamma", "exit_layer",
                                                           "ngram_size")} <= compare


def test_named_drafter_options_reach_the_chosen_drafter(client):
    _call(client, "/reset", prompt=PROMPT, drafter="early-exit", exit_layer=2, eta=0.3)
    out = _call(client, "/step", prompt=PROMPT, drafter="early-exit", exit_layer=2, eta=0.3)
    assert out["status"].startswith("1 round"), out["status"]
    out = _call(client, "/step", prompt=PROMPT, drafter="early-exit", exit_layer=3, eta=0.5)  # η is Kangaroo's
    assert "Changed exit_layer from round 1 on" in out["status"], out["status"]
    out = _call(client, "/step", prompt=PROMPT, drafter="ngram", ngram_size=1, min_ngram_size=1)
    assert "Changed drafter, ngram_size, min_ngram_size" in out["status"], out["status"]
    with pytest.raises(AppError, match="n-gram size must satisfy"):  # min 2 > n 1: the drafter says so
        _call(client, "/step", prompt=PROMPT, drafter="ngram", ngram_size=1)


def test_option_controls_follow_the_drafter():
    with gr.Blocks():
        picker = gr.Dropdown(["ngram", "early-exit", "easyspec"], value="ngram")
        controls = options.build(["ngram", "early-exit", "easyspec"], "ngram", picker, prefix="t-")
    assert list(controls.components) == ["ngram_size", "min_ngram_size", "schedule", "exit_layer", "confidence",
                                         "greedy_draft", "vocab_trim", "base", "draft_model", "group_size",
                                         "calibrate", "measure"]  # vocab_counts: local
    assert [c.visible for c in controls.components.values()] == [True, True, True] + [False] * 9
    exit_layer = controls.components["exit_layer"]
    assert (exit_layer.elem_id, exit_layer.minimum, exit_layer.value) == ("t-exit-layer", 0, 0)  # 0: the default
    assert "early-exit, easyspec" in exit_layer.label
    shown = dict(zip(controls.components, controls.show("early-exit"), strict=True))
    assert [name for name, update in shown.items() if update["visible"]] == ["schedule", "exit_layer", "confidence",
                                                                             "greedy_draft", "vocab_trim"]
    assert options.drafter_values("early-exit", {"exit_layer": 0, "eta": 0.2}) == {"exit_layer": None}
    assert options.drafter_values("early-exit", {"exit_layer": 5.0}) == {"exit_layer": 5}
    assert options.drafter_values("sorted", {"draft_model": " ", "thresholds": ""}) == {"draft_model": None,
                                                                                        "thresholds": ""}
