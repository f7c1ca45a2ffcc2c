"""The static-shape verification path (``DRAFTSCOPE_STATIC_CACHE=1``, core.specdec.fastpath): padded fixed-width
forwards on a preallocated cache give the dynamic path's logits and token-identical greedy output, and sessions
that do not fit it fall back to the dynamic cache. (On a GPU it is meant to run under CUDA graphs; here only its
correctness is checked: it does not pay on a CPU.)"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from core.runtime.cached_lm import CachedLM
from core.specdec import Session, SessionConfig
from core.specdec.fastpath import StaticCachedLM
from core.specdec.verify import build_verifier
from tests.helpers import hf_greedy, table_drafter

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["the cat sat on the mat and the cat sat on the", "1 2 3 4 5 6 7 8 9 10 11 12 13"]


@pytest.fixture
def static(monkeypatch):
    monkeypatch.setenv("DRAFTSCOPE_STATIC_CACHE", "1")


def _session(target, drafter, ids, n=30, gamma=4, tree="", verifier="greedy", **config):
    config = SessionConfig(target=target.name, drafter=drafter.name, verifier=verifier, gamma=gamma,
                           max_new_tokens=n, tree=tree, **config)
    return Session(target, drafter, build_verifier(verifier), ids, config)


def _run(session):
    for _ in session.run():
        pass
    return session


def test_padded_forwards_match_the_dynamic_cache(tiny_llama):
    ids = tiny_llama.encode(PROMPTS[0])
    dynamic, static = CachedLM(tiny_llama.model), StaticCachedLM(tiny_llama.model, max_len=64, width=5)
    for kv in (dynamic, static):
        kv.reset()
    steps = [(ids, 1), ([5, 6, 7], 3), ("rollback", len(ids) + 1), ([8, 9, 10, 11, 12], 5), ("rollback", len(ids) + 2),
             ([13], 1)]
    for feed, keep in steps:
        if feed == "rollback":
            dynamic.rollback(keep)
            static.rollback(keep)
            continue
        torch.testing.assert_close(static.forward(feed, keep), dynamic.forward(feed, keep), atol=1e-5, rtol=1e-5)
    assert static.ids == dynamic.ids


@pytest.mark.parametrize("drafter", ["none", "ngram", "model", "early-exit", "easyspec", "sorted"])
def test_static_sessions_are_greedy_identical(static, tiny_llama, noisy_tiny_llama, drafter):
    for text in PROMPTS:
        ids = tiny_llama.encode(text)
        session = _session(tiny_llama, table_drafter(drafter, tiny_llama, noisy_tiny_llama), ids)
        assert isinstance(session.target_kv, StaticCachedLM)
        assert _run(session).generated_ids == hf_greedy(tiny_llama, ids, 30), (drafter, text)


def test_sessions_that_do_not_fit_fall_back(static, tiny_llama, tiny_gemma, noisy_tiny_llama):
    ids = tiny_llama.encode(PROMPTS[0])
    tree = _session(tiny_llama, table_drafter("model", tiny_llama, noisy_tiny_llama), ids, tree="2,1")
    kangaroo = _session(tiny_llama, table_drafter("kangaroo", tiny_llama, None), ids)
    gemma = _session(tiny_gemma, table_drafter("ngram", tiny_gemma, None), tiny_gemma.encode(PROMPTS[0]))
    for session in (tree, kangaroo, gemma):
        assert type(session.target_kv) is CachedLM


def test_reconfigured_mid_run_falls_back_and_stays_identical(static, tiny_llama, noisy_tiny_llama):
    ids = tiny_llama.encode(PROMPTS[1])
    session = _session(tiny_llama, table_drafter("model", tiny_llama, noisy_tiny_llama), ids, n=30)
    assert isinstance(session.target_kv, StaticCachedLM)
    for _ in range(3):
        session.step()
    session.reconfigure(replace(session.config, gamma=6))  # another width: the dynamic cache
    assert type(session.target_kv) is CachedLM
    assert _run(session).generated_ids == hf_greedy(tiny_llama, ids, 30)


def test_sampled_static_session_matches_the_dynamic_one(static, tiny_llama, noisy_tiny_llama, monkeypatch):
    """At a temperature the padded path draws the same tokens from the same seed (its p agrees to ~1e-6)."""
    ids = tiny_llama.encode(PROMPTS[0])
    runs = {}
    for mode in ("1", "0"):
        monkeypatch.setenv("DRAFTSCOPE_STATIC_CACHE", mode)
        session = _session(tiny_llama, table_drafter("model", tiny_llama, noisy_tiny_llama), ids, verifier="sampling",
                           temperature=0.8, seed=3)
        runs[mode] = _run(session).generated_ids
    assert runs["1"] == runs["0"]


def test_compiled_sessions_share_one_buffer(static, tiny_llama, noisy_tiny_llama, monkeypatch):
    """Compiled sessions of a target share its buffer (their CUDA graphs were recorded on it): two sessions whose
    rounds interleave each feed their own tokens again when they find the other's there, and stay identical. (The
    compiler is replaced by the plain forward here: the sharing is what is checked.)"""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    sessions = []
    for text in PROMPTS:
        ids = tiny_llama.encode(text)
        session = _session(tiny_llama, table_drafter("model", tiny_llama, noisy_tiny_llama), ids)
        session.target_kv = StaticCachedLM(tiny_llama.model, 256, 5, compiled=True)
        sessions.append(session)
    assert sessions[0].target_kv._buffer is sessions[1].target_kv._buffer
    while not all(s.done for s in sessions):
        for s in sessions:
            s.step()
    for s in sessions:
        assert s.generated_ids == hf_greedy(tiny_llama, s.prompt_ids, 30)
