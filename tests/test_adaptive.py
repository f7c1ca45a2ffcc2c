"""Issue 18: adaptive draft length (schedule, confidence stop, greedy drafting), ADED and PEARL beyond the registry
tables (greedy identity and sampled law cover every drafter there)."""

from __future__ import annotations

import itertools
import threading

import pytest

from core.errors import DraftScopeError
from core.specdec import Session, SessionConfig
from core.specdec.drafters import build_drafter
from core.specdec.drafters.aded import AdaptiveStore, TrigramStore, extract_tree, mcts
from core.specdec.verify import build_verifier
from tests.helpers import assert_follows_target, hf_greedy, sampled_law, table_drafter

PROMPT = "the cat sat on the mat and the cat sat on the"


def _session(target, drafter, n=30, verifier="greedy", **settings):
    config = SessionConfig(target=target.name, drafter=drafter.name, verifier=verifier, max_new_tokens=n,
                           **{"gamma": 4, **settings})
    return Session(target, drafter, build_verifier(verifier), target.encode(PROMPT), config)


def _run(session):
    for _ in session.run():
        pass
    return session


# ------------------------------------------------------------------------------------------------ draft length
def test_heuristic_schedule_moves_gamma_by_the_rule(tiny_llama, noisy_tiny_llama):
    drafter = build_drafter("model", tiny_llama, {"draft_model": noisy_tiny_llama, "schedule": "heuristic"})
    session = _run(_session(tiny_llama, drafter, n=60, gamma=3))
    records = [r for r in session.records if r.drafted]
    gammas = [r.draft_info["gamma"] for r in records]
    assert gammas[0] == 3
    for before, after in itertools.pairwise(records):
        full = before.accepted == len(before.drafted)
        expected = before.draft_info["gamma"] + 2 if full else max(1, before.draft_info["gamma"] - 1)
        room = 60 - (after.start_position - len(session.prompt_ids)) - 1  # the budget may cut the last rounds
        assert after.draft_info["gamma"] == min(expected, room), (before, after)
    assert len(set(gammas)) > 1, "the schedule never moved"
    assert session.generated_ids == hf_greedy(tiny_llama, session.prompt_ids, 60)[: len(session.generated_ids)]


def test_confidence_stop_shortens_drafts(tiny_llama, noisy_tiny_llama):
    plain = _run(_session(tiny_llama, build_drafter("model", tiny_llama, {"draft_model": noisy_tiny_llama})))
    stopped = _run(_session(tiny_llama, build_drafter("model", tiny_llama, {"draft_model": noisy_tiny_llama,
                                                                            "confidence": 0.9})))
    assert stopped.generated_ids == plain.generated_ids
    assert stopped.stats.drafted < plain.stats.drafted
    assert stopped.records[0].draft_info["gamma"] == 4  # γ stays the cap; the stop cuts below it
    assert any(len(r.drafted) < r.draft_info["gamma"] for r in stopped.records)


def test_greedy_draft_is_deterministic_and_one_hot(tiny_llama, noisy_tiny_llama):
    drafter = build_drafter("model", tiny_llama, {"draft_model": noisy_tiny_llama, "greedy_draft": True})
    session = _run(_session(tiny_llama, drafter, verifier="sampling", temperature=1.0, seed=3))
    drafted = [d for r in session.records for d in r.drafted]
    assert drafted and all(d.rank_q == 1 for d in drafted)  # always the drafter's argmax


@pytest.mark.parametrize("options", [{"greedy_draft": True}, {"confidence": 0.3}])
def test_adaptive_options_keep_the_law(vocab6, noisy_vocab6, options):
    drafter = build_drafter("model", vocab6, {"draft_model": noisy_vocab6, **options})
    law = sampled_law(vocab6, drafter, "sampling", [1, 4, 2, 3, 1, 4, 2], 400, temperature=1.0, top_k=3, gamma=2)
    plain = sampled_law(vocab6, table_drafter("none", vocab6, None), "sampling", [1, 4, 2, 3, 1, 4, 2], 400,
                        temperature=1.0, top_k=3, gamma=2)
    assert_follows_target(law, 0.11, plain)


@pytest.mark.parametrize("drafter, options, message", [
    ("model", {"confidence": 1.5}, "confidence threshold must be in"),
    ("ngram", {"schedule": "fast"}, "schedule must be constant or heuristic"),
    ("aded", {"iterations": 0}, "iterations must be in 1..500"),
    ("aded", {"min_share": 1.0}, "visit share"),
    ("pearl", {"threads": 99}, "threads must be in 1.."),
    ("pearl", {"parallel": True, "threads": 1}, "needs 2 threads"),
    ("pearl", {"base": "kangaroo"}, "cannot be wrapped"),
    ("pearl", {"base_options": "{exit_layer: 3"}, "JSON object"),
])
def test_bad_options_are_clear_errors(drafter, options, message):
    from core.specdec.drafters import drafter_options
    with pytest.raises(DraftScopeError, match=message):
        drafter_options(drafter, options)


# ------------------------------------------------------------------------------------------------ ADED
def test_mcts_prefers_the_likely_successor():
    store = AdaptiveStore(TrigramStore({(1, 2): ([3, 4], [0.9, 0.1]), (2, 3): ([5], [1.0]), (3, 5): ([6], [1.0])}))
    import random
    search = mcts(store, 1, 2, 60, 4, random.Random(0))
    first = {search.token[k]: search.visits[k] for k in search.kids[0]}
    assert first[3] > first[4] > 0
    tokens, parents, _ = extract_tree(search, store, 4, 4)
    assert tokens[:3] == [3, 5, 6] and parents[:3] == [-1, 0, 1] and len(tokens) <= 4


def test_aded_online_update_changes_drafts_not_outputs(vocab6):
    """From an empty store, only the online update can give ADED anything to draft: with it the drafts change (they
    appear), the output does not."""
    runs = {}
    for adapt in (True, False):
        drafter = build_drafter("aded", vocab6, {"store": "empty", "adapt": adapt})
        config = SessionConfig(target=vocab6.name, drafter="aded", max_new_tokens=30, gamma=3)
        runs[adapt] = _run(Session(vocab6, drafter, build_verifier("greedy"), [1, 4, 2, 3, 1, 4, 2], config))
    assert runs[True].generated_ids == runs[False].generated_ids == hf_greedy(vocab6, [1, 4, 2, 3, 1, 4, 2], 30)
    assert runs[False].stats.drafted == 0 and runs[True].stats.drafted > 0
    boosts = {k: max(r.draft_info.get("boosts", 0) for r in s.records) for k, s in runs.items()}
    assert boosts[True] > 0 and boosts[False] == 0


@pytest.mark.parametrize("verifier", ["greedy", "match"])
def test_aded_tree_is_greedy_identical(tiny_llama, verifier):
    drafter = build_drafter("aded", tiny_llama, {"store": "empty", "learn_prompt": True})
    session = _run(_session(tiny_llama, drafter, n=30, verifier=verifier, tree="budget:8", gamma=4))
    assert session.generated_ids == hf_greedy(tiny_llama, session.prompt_ids, 30)
    assert any(len(r.nodes) > 1 for r in session.records)
    info = next(r.draft_info for r in session.records if r.nodes)
    assert len(info["nodes"]) == len(next(r.nodes for r in session.records if r.nodes))
    assert {"search_ms", "visits"} <= set(info) | set(info["nodes"][0])


def test_aded_tree_refuses_drawn_children(tiny_llama):
    drafter = build_drafter("aded", tiny_llama, {"store": "empty"})
    with pytest.raises(DraftScopeError, match="deterministic tree"):
        _session(tiny_llama, drafter, verifier="rrs", tree="2,2", temperature=1.0)


def test_aded_store_round_trips(tmp_path):
    store = TrigramStore.count([[1, 2, 3, 1, 2, 4, 1, 2, 3]], meta={"target": "x"})
    assert store.table[(1, 2)][0] == [3, 4]
    loaded = TrigramStore.load(store.save(tmp_path / "s.npz"))
    assert loaded.table[(1, 2)][0] == [3, 4] and loaded.meta == {"target": "x"}
    with pytest.raises(DraftScopeError, match="not an ADED trigram store"):
        (tmp_path / "bad.npz").write_bytes(b"nope")
        TrigramStore.load(tmp_path / "bad.npz")


# ------------------------------------------------------------------------------------------------ PEARL
def _pearl(target, parallel, **extra):
    base = table_drafter("early-exit", target, None)
    return build_drafter("pearl", target, {"base": base, "parallel": parallel, **extra})


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_pearl_parallel_matches_serial(tiny_llama, temperature):
    verifier = "greedy" if temperature == 0 else "sampling"
    out = {}
    for parallel in (True, False):
        session = _run(_session(tiny_llama, _pearl(tiny_llama, parallel), n=40, verifier=verifier,
                                temperature=temperature, seed=7))
        out[parallel] = session
    assert out[True].generated_ids == out[False].generated_ids
    modes = [r.draft_info["mode"] for r in out[True].records]
    assert modes[0] == "pre" and all(r.draft_info["parallel"] for r in out[True].records)
    lanes = out[True].records[1].draft_info
    assert lanes["draft_lane"][0] <= lanes["draft_lane"][1] and lanes["target_lane"][0] <= lanes["target_lane"][1]
    if temperature == 0:
        assert out[True].generated_ids == hf_greedy(tiny_llama, out[True].prompt_ids, 40)


def test_pearl_post_mode_grows_the_draft(tiny_llama):
    """With the target as its own drafter every draft passes: after the first round PEARL stays in post-verify mode and
    commits γ tokens per target forward, without a bonus token."""
    from tests.helpers import perturbed  # noqa: F401  (the exact copy: the target itself)
    base = build_drafter("model", tiny_llama, {"draft_model": tiny_llama})
    drafter = build_drafter("pearl", tiny_llama, {"base": base, "parallel": False})
    session = _run(_session(tiny_llama, drafter, n=21, gamma=4))
    modes = [r.draft_info["mode"] for r in session.records]
    assert modes[0] == "pre" and set(modes[1:]) == {"post"}
    assert all(len(r.committed_ids) == 4 and r.emitted is None for r in session.records[1:-1])


@pytest.mark.parametrize("fail", ["drafter", "target"])
def test_a_failed_pearl_round_leaves_no_thread(tiny_llama, monkeypatch, fail):
    drafter = _pearl(tiny_llama, True)
    session = _session(tiny_llama, drafter, n=20)
    if fail == "drafter":
        monkeypatch.setattr(drafter.inner, "propose", lambda ctx: (_ for _ in ()).throw(RuntimeError("boom")))
    else:
        import core.specdec.drafters.pearl as pearl
        monkeypatch.setattr(pearl, "verify_forward", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        session.step()
    assert not [t for t in threading.enumerate() if t.name == "pearl-draft"]
    import torch
    assert torch.get_num_threads() >= 1
    monkeypatch.undo()
    session.reset()
    _run(session)  # the session stays usable
    assert session.generated_ids == hf_greedy(tiny_llama, session.prompt_ids, 20)


def test_pearl_refuses_drafters_it_cannot_wrap(tiny_llama):
    heads = table_drafter("medusa", tiny_llama, None)
    with pytest.raises(DraftScopeError, match="cannot wrap the 'medusa'"):
        build_drafter("pearl", tiny_llama, {"base": heads})


def test_pearl_says_it_cannot_run_on_sliding_windows(tiny_gemma):
    with pytest.raises(DraftScopeError, match="sliding-window"):
        build_drafter("pearl", tiny_gemma, {"base": "ngram"})
