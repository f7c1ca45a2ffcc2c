"""The Self-drafting tab's handlers called directly (tiny model): step, live settings, errors, the η sweep, reset,
the EasySpec timeline."""

from __future__ import annotations

import functools
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest

import core.specdec.drafters.kangaroo as kangaroo
from app import self_draft_tab
from app.main import build_demo
from tests.helpers import app_error, assert_error_then_usable, call_handler, no_progress, tab_session
from visualizers.self_draft import OUTCOMES

SETTINGS = {"prompt": "the cat sat on the mat. the cat sat on the", "chat": False, "target": "tiny-llama",
            "drafter": "kangaroo", "gamma": 4, "eta": 0.0, "theta1": 0.5, "theta2": 0.5, "exit_layer": 0,
            "temperature": 0.0, "seed": 0, "max_new_tokens": 12}
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a request warns instead
OUTPUTS = ("state", "strip", "confidence", "summary", "status", "records")


@pytest.fixture()
def handlers() -> self_draft_tab.Handlers:
    return self_draft_tab.Handlers()


def _step(handlers, state=None, **kw) -> dict:
    return call_handler(handlers.step, OUTPUTS, SETTINGS, state, **kw)


def _points(fig) -> int:
    return sum(len(t.x) for t in fig.data if t.meta in OUTCOMES)


def test_step_plots_the_confidence_and_eta_applies_live(handlers):
    first = _step(handlers)
    assert not first["status"].startswith("**Error"), first["status"]
    session = tab_session(first)
    config = session.config
    assert config.drafter == "kangaroo" and config.drafter_options == {"eta": 0.0} and config.verifier == "greedy"
    record = session.records[0]
    assert _points(first["confidence"]) == len(record.draft_info["confidences"]) == 4
    assert first["strip"].count('class="round-sep" title=') == 1
    assert "after γ tokens in 1" in first["summary"] and "(γ tokens)" in first["status"]

    second = _step(handlers, first["state"], eta=0.5, exit_layer=3)  # ℓ belongs to early exit: ignored here
    assert "Changed eta from round 1 on" in second["status"], second["status"]
    assert session.config.drafter_options == {"eta": 0.5}  # ℓ belongs to early exit
    assert session.records[-1].draft_info["stopped_by"] == "eta" and "below η = 0.50" in second["status"]
    assert any(t.meta == "stopped" for t in second["confidence"].data)

    third = _step(handlers, second["state"], eta=0.5, exit_layer=3, drafter="early-exit", temperature=0.5)
    assert not third["status"].startswith("**Error"), third["status"]
    assert session.config.drafter_options == {"exit_layer": 3} and session.config.verifier == "sampling"
    assert len(session.records) == 3 and not session.records[-1].draft_info


@pytest.mark.parametrize("kw, message", [
    ({"target": "tiny-gemma"}, "Kangaroo adapter not found"),
    ({"prompt": ""}, "prompt is empty"),
    ({"gamma": 0}, "γ must be in"),
])
def test_invalid_settings_are_a_message_and_the_tab_stays_usable(handlers, kw, message):
    assert_error_then_usable(functools.partial(_step, handlers), kw, message)


def test_missing_adapter_is_a_message(handlers, monkeypatch, tmp_path):
    monkeypatch.setattr(kangaroo, "ASSETS", tmp_path)  # no adapter for any target
    message = app_error(_step, handlers)
    assert message.startswith("Kangaroo adapter not found") and "choose early-exit" in message, message
    assert _step(handlers, None, drafter="early-exit")["status"].startswith("1 round")


def test_sweep_runs_every_eta_and_plain_decoding(handlers):
    rows = self_draft_tab.eta_sweep({**SETTINGS, "max_new_tokens": 8})
    assert len(rows) == 6 and [r["eta"] for r in rows] == [0.0, 0.2, 0.4, 0.6, 0.8, None]
    assert rows[-1]["drafter"] == "none" and rows[-1]["mean_draft_len"] == 0
    assert all(r["generated"] == 8 for r in rows)
    assert rows[0]["mean_draft_len"] > 0 and rows[0]["plain_tokens_per_second"] == rows[-1]["tokens_per_second"]
    figure, status = handlers.sweep({}, **{**SETTINGS, "max_new_tokens": 8, "drafter": "early-exit"},
                                    progress=no_progress)
    assert len(next(t for t in figure.data if t.meta == "tau").x) == 5
    assert status.startswith("η sweep over 8 new tokens") and "whatever the drafter" in status


def test_sweep_errors_are_a_message(handlers):
    assert "Kangaroo adapter not found" in app_error(handlers.sweep, {}, **{**SETTINGS, "target": "tiny-gemma"},
                                                     progress=no_progress)


def test_reset_starts_over(handlers):
    first = _step(handlers)
    old = tab_session(first)
    out = dict(zip(OUTPUTS, handlers.reset(first["state"], **SETTINGS, progress=no_progress), strict=True))
    session = tab_session(out)
    assert session is not old and not session.records and out["status"].startswith("Ready")
    assert "No tokens yet" in out["strip"] and "Step or Run" in out["confidence"].layout.annotations[0].text
    assert _step(handlers, out["state"])["status"].startswith("1 round")


def test_run_finishes(handlers):
    outs = list(handlers.run({}, **SETTINGS, progress=no_progress))
    final = dict(zip(OUTPUTS, outs[-1], strict=True))
    assert final["status"].startswith("Finished"), final["status"]
    session = tab_session(final)
    assert session.done and len(session.generated_ids) == SETTINGS["max_new_tokens"]
    assert _points(final["confidence"]) == sum(len(r.draft_info.get("confidences", [])) for r in session.records)


def test_easyspec_timeline(handlers):
    figure, status = handlers.easyspec("tiny-llama", 0, 2, 2, progress=no_progress)
    assert status.startswith("EasySpec timeline for tiny-llama: early exit at ℓ = 3"), status
    assert {t.meta for t in figure.data} == {"attention", "mlp", "head", "calibration"}
    assert "2 devices" in figure.layout.title.text
    figure, status = handlers.easyspec("tiny-gemma", 0, 2, 2, progress=no_progress)  # sliding-window layers
    assert status.startswith("EasySpec timeline for tiny-gemma"), status


def test_endpoints_and_element_ids():
    demo = build_demo()
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"self_draft_step", "self_draft_run", "self_draft_stop", "self_draft_reset", "self_draft_sweep",
            "self_draft_easyspec"} <= names
    ids = {c["props"].get("elem_id") for c in demo.config["components"]}
    assert {"self-draft-prompt", "self-draft-drafter", "self-draft-eta", "self-draft-gamma", "self-draft-step",
            "self-draft-run", "self-draft-stop", "self-draft-reset", "self-draft-sweep", "self-draft-status",
            "self-draft-strip", "self-draft-confidence", "self-draft-summary", "self-draft-sweep-plot", "eta",
            "self-draft-theta1", "self-draft-theta2",
            "self-draft-easyspec", "self-draft-group-size", "self-draft-devices", "self-draft-timeline"} <= ids
    drafter = next(c for c in demo.config["components"] if c["props"].get("elem_id") == "self-draft-drafter")
    assert [choice[1] for choice in drafter["props"]["choices"]] == ["kangaroo", "sorted", "early-exit"]


def test_sorted_drafter_shows_exits_per_token_and_thresholds_apply_live(handlers):
    first = _step(handlers, drafter="sorted", theta1=0.0)  # θ₁ = 0: every token from the first exit
    assert not first["status"].startswith("**Error"), first["status"]
    session = tab_session(first)
    assert session.config.drafter_options == {"thresholds": "0,0.5"}
    info = session.records[0].draft_info
    assert info["exits"] == [0, 0, 0, 0] and "Last round: drafted from layer 1, layer 1" in first["status"]
    heat = next(t for t in first["confidence"].data if t.meta == "confidence")
    assert len(heat.z) == 3 and heat.z[0][0] == info["confidences"][0][0] and heat.z[1][0] is None
    assert sum(len(t.x) for t in first["confidence"].data if t.meta in OUTCOMES) == 4
    assert "exits used, θ" in first["summary"] and "layer 1: 4" in first["summary"]

    second = _step(handlers, first["state"], drafter="sorted", theta1=1.0, theta2=1.0)  # always the deepest exit
    assert "Changed thresholds from round 2 on" in second["status"] or "Changed thresholds" in second["status"]
    assert session.records[-1].draft_info["exits"] == [2] * len(session.records[-1].draft_info["exits"])
    assert session.generated_ids  # and the output stays the target's (checked in tests/test_sorted.py)


def test_theta_sweep_runs_every_theta_and_plain_decoding(handlers):
    figure, status = handlers.sweep({}, **{**SETTINGS, "drafter": "sorted", "max_new_tokens": 6},
                                    progress=no_progress)
    assert status.startswith("θ sweep over 6 new tokens"), status
    tau = next(t for t in figure.data if t.meta == "tau")
    assert list(tau.x) == list(self_draft_tab.SWEEP_THETAS)
    assert any(t.meta == "plain" for t in figure.data)
