"""The Across tokenizers tab's handlers called directly: OmniDraft with the tiny Gemma target and the tiny llama
(SmolLM2's tokenizer) as draft model. Step shows the round's alignment, the learning-off run follows, Run goes to the
end with both runs on the acceptance figure, Reset starts over, bad settings are a message and the tab stays usable."""

from __future__ import annotations

import functools
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest

from app import crossvocab_tab as tab
from app.main import build_demo
from core.options import option_fields
from core.specdec.drafters import drafter_class
from tests.helpers import app_error, assert_error_then_usable, call_handler, no_progress, tab_session
from visualizers.crossvocab import omni_info

OPTIONS = {f.name: f.default for f in option_fields(drafter_class("omnidraft").Options)}
SETTINGS = {"prompt": "the cat sat on the mat. the cat sat on the", "chat": False, "target": "tiny-gemma",
            **OPTIONS, "draft_model": "tiny-llama", "distill_every": 2, "gamma": 3, "temperature": 0.0, "seed": 0,
            "max_new_tokens": 6, "compare": True}
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a request warns instead
OUTPUTS = ("state", "strip", "alignment", "round", "acceptance", "cache_plot", "cache_table", "status",
           "records")


@pytest.fixture()
def handlers() -> tab.Handlers:
    return tab.Handlers()


def _step(handlers, state=None, **kw) -> dict:
    return call_handler(handlers.step, OUTPUTS, SETTINGS, state, **kw)


def _metas(fig) -> list:
    return [t.meta for t in fig.data]


def test_settings_are_the_handlers_parameters(handlers):
    assert set(handlers.setting_names) == set(SETTINGS)
    assert handlers.setting_names[:3] == ("prompt", "chat", "target") and handlers.setting_names[-1] == "compare"


def test_step_shows_the_alignment_and_the_learning_off_run_follows(handlers):
    first = _step(handlers)
    assert first["status"].startswith("1 round"), first["status"]
    session = tab_session(first)
    config = session.config
    assert config.drafter == "omnidraft" and config.verifier == "greedy"
    assert config.drafter_options["draft_model"] == "tiny-llama" and config.drafter_options["ngram_cache"]
    info = omni_info(session.records[0])
    html = first["alignment"]
    assert '"cv-label" style="grid-row:1;grid-column:1">drafter' in html
    assert '"cv-label" style="grid-row:3;grid-column:1">target' in html
    assert html.count('class="cv-tok cv-draft') == len(info["draft"]) > 0
    assert html.count('class="cv-tok cv-target') == len(info["groups"]) == len(session.records[0].drafted)
    assert html.count('class="cv-bracket') == len(info["groups"])
    assert "cv-emitted" in html and "round 0" in html  # the target's own token after the drafts

    baseline = tab._baseline_of(session)
    assert baseline is not None and len(baseline.records) == 1
    assert {k: baseline.config.drafter_options[k] for k in tab.LEARNING_OFF} == tab.LEARNING_OFF
    assert "Learning off, 1 round:" in first["status"]

    second = _step(handlers, first["state"], ngram_cache=False)  # an option changes live, the baseline keeps up
    assert "Changed ngram_cache from round 1 on" in second["status"], second["status"]
    assert len(session.records) == 2 and len(baseline.records) == 2 and tab._baseline_of(session) is baseline
    assert second["round"]["maximum"] == 1 and second["round"]["interactive"]
    assert "round 0" in handlers.show_round(second["state"], 0) and "round 1" in handlers.show_round(
        second["state"], 99)  # clamped to the last round

    third = _step(handlers, second["state"], compare=False)  # the comparison off: the learning-off run is dropped
    assert tab._baseline_of(session) is None and "Learning off" not in third["status"]
    assert _metas(third["acceptance"]).count("acceptance") == 1


def test_run_compares_learning_on_and_off(handlers):
    outs = list(handlers.run({}, **SETTINGS, progress=no_progress))
    final = dict(zip(OUTPUTS, outs[-1], strict=True))
    assert final["status"].startswith("Finished"), final["status"]
    session = tab_session(final)
    baseline = tab._baseline_of(session)
    assert session.done and baseline.done
    assert baseline.generated_ids == session.generated_ids  # greedy: both are exactly the target's output
    figure = final["acceptance"]
    per_round = [t for t in figure.data if t.meta == "acceptance"]
    assert [t.name for t in per_round] == ["learning on: per round", "learning off: per round"]
    assert _metas(figure).count("running") == 2
    distilled = [t for t in figure.data if t.meta == "distill"]
    assert [t.legendgroup for t in distilled] == ["learning on"]  # only the learning run distils
    assert _metas(final["cache_plot"]) == ["cache_new", "cache_size"]
    shown = final["round"]["value"]  # the last round that drafted (the last round may have had no room to draft)
    assert omni_info(session.records[shown]) is not None and f"round {shown}</b>" in final["alignment"]
    assert "cache entr" in final["cache_table"] or "No n-gram cache entries yet" in final["cache_table"]


def test_reset_starts_over(handlers):
    first = _step(handlers)
    old = tab_session(first)
    out = call_handler(handlers.reset, OUTPUTS, SETTINGS, first["state"])
    session = tab_session(out)
    assert session is not old and not session.records and out["status"].startswith("Ready")
    assert "No round yet" in out["alignment"] and not out["acceptance"].data
    assert tab._baseline_of(session) is not None and not tab._baseline_of(session).records
    assert _step(handlers, out["state"])["status"].startswith("1 round")


@pytest.mark.parametrize("kw, message", [
    ({"fastdraft": True}, "no trained FastDraft drafter for 'tiny-llama'"),
    ({"lam": 1.5}, "λ must be in [0, 1]"),
    ({"draft_model": ""}, "needs a draft model"),
    ({"gamma": 0}, "γ must be in"),
    ({"prompt": "  "}, "prompt is empty"),
])
def test_bad_settings_are_a_message_and_the_tab_stays_usable(handlers, kw, message):
    assert_error_then_usable(functools.partial(_step, handlers), kw, message)


def test_a_bad_option_midway_keeps_the_session(handlers):
    first = _step(handlers)
    session = tab_session(first)
    assert "λ" in app_error(_step, handlers, first["state"], lam=-1)
    assert tab_session(first) is session
    assert _step(handlers, first["state"])["status"].startswith("2 rounds")


def test_the_tab_is_in_the_app():
    demo = build_demo()
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"crossvocab_step", "crossvocab_run", "crossvocab_stop", "crossvocab_reset", "crossvocab_show_round",
            "crossvocab_example_prompt"} <= names
    ids = {c["props"].get("elem_id"): c["props"] for c in demo.config["components"]}
    assert ids["crossvocab-target"]["value"] == "gemma3-270m"
    assert ids["crossvocab-draft-model"]["value"] == "smollm2-135m"
    assert {"crossvocab-fastdraft", "crossvocab-ngram-cache", "crossvocab-distill", "crossvocab-accept-stop",
            "crossvocab-keep-learning", "crossvocab-gamma", "crossvocab-alignment", "crossvocab-acceptance",
            "crossvocab-cache-plot", "crossvocab-cache-table", "crossvocab-round", "crossvocab-step"} <= set(ids)
