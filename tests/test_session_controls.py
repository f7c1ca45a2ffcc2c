"""Live reconfiguration between rounds and the lossless check."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.errors import DraftScopeError
from core.specdec import Session, SessionConfig
from core.specdec.lossless import check_lossless


def _session(target, **cfg):
    config = SessionConfig(target=target.name, **{"drafter": "ngram", "max_new_tokens": 30, **cfg})
    return Session.from_config(config, prompt_ids=target.encode("a b c a b c a b c a b"))


def test_changes_apply_to_next_rounds_and_stay_lossless(tiny_llama):
    session = _session(tiny_llama, gamma=2)
    for _ in range(3):
        session.step()
    changed = session.reconfigure(replace(session.config, gamma=6, drafter="early-exit",
                                                 drafter_options={"exit_layer": 2}))
    assert set(changed) == {"gamma", "drafter", "exit_layer"}
    session.step()
    assert session.records[-1].settings["gamma"] == 6 and session.records[-1].drafter == "early-exit"
    assert len(session.records[-1].drafted) <= 6
    session.reconfigure(replace(session.config, verifier="sampling", drafter="ngram",
                                    drafter_options={"ngram_size": 2}))
    for _ in session.run():
        pass
    report = check_lossless(session)
    assert report.mode == "greedy" and report.identical, report.message


def test_invalid_or_restarting_changes_apply_nothing(tiny_llama):
    session = _session(tiny_llama)
    session.step()
    before = session.config
    with pytest.raises(DraftScopeError, match="gamma"):
        session.reconfigure(replace(before, gamma=0))
    with pytest.raises(DraftScopeError, match="new session"):
        session.reconfigure(replace(before, target="tiny-gemma"))
    with pytest.raises(DraftScopeError, match="tokenizer"):
        session.reconfigure(replace(before, drafter="model", drafter_options={"draft_model": "tiny-gemma"}))
    with pytest.raises(DraftScopeError, match="unknown option 'ngram_sze' for the 'ngram' drafter"):
        session.reconfigure(replace(before, drafter_options={"ngram_sze": 2}))
    assert session.config is before


def test_larger_budget_continues_a_finished_run(tiny_llama):
    session = _session(tiny_llama, max_new_tokens=5)
    list(session.run())
    assert session.finish_reason == "max_new_tokens"
    session.reconfigure(replace(session.config, max_new_tokens=9))
    assert not session.done
    list(session.run())
    assert len(session.generated_ids) == 9


def test_lossless_check_detects_a_divergence(tiny_llama):
    session = _session(tiny_llama)
    list(session.run())
    session.tokens[-3] = (session.tokens[-3] + 1) % tiny_llama.vocab_size  # tamper with the output
    report = check_lossless(session)
    assert not report.identical and report.first_divergence == len(session.generated_ids) - 3


def test_lossless_check_in_sampling_mode(tiny_llama):
    session = _session(tiny_llama, verifier="sampling", temperature=0.7)
    list(session.run())
    report = check_lossless(session)
    assert report.mode == "sampling" and "not expected" in report.message


def test_lossless_check_needs_output(tiny_llama):
    with pytest.raises(DraftScopeError, match="nothing generated"):
        check_lossless(_session(tiny_llama))
