"""Step records are complete and round-trip through JSON."""

from __future__ import annotations

import json

from core.specdec import Session, SessionConfig
from core.specdec.drafters.model import ModelDrafter
from core.specdec.records import StepRecord
from core.specdec.verify.sampling import SamplingVerifier


def _session(target, drafter_model, **cfg):
    config = SessionConfig(target=target.name, drafter="model", verifier="sampling", temperature=0.3, top_p=0.95,
                           gamma=4, max_new_tokens=24, seed=3, **cfg)
    drafter = ModelDrafter(target, draft_model=drafter_model)
    return Session(target, drafter, SamplingVerifier(), target.encode("a b c d e f"), config)


def test_json_round_trip_and_content(tiny_llama, noisy_tiny_llama):
    session = _session(tiny_llama, noisy_tiny_llama)
    records = list(session.run())
    assert records and all(isinstance(r, StepRecord) for r in records)
    for r in records:
        back = StepRecord.from_dict(json.loads(json.dumps(r.to_dict())))
        assert back == r
    # everything a visualizer needs is there
    saw_reject = saw_bonus = False
    for r in records:
        assert r.verify_ms > 0 and r.target_cache_len == r.start_position + len(r.committed_ids) - 1
        for t in r.drafted:
            assert t.q is not None and t.q_topk and t.rank_q >= 1
            if t.decision in ("accepted", "rejected"):
                assert t.p is not None and t.p_topk and 0 <= t.u < 1 and 0 <= t.accept_prob <= 1
                assert (t.u < t.accept_prob) == (t.decision == "accepted")
        if r.emitted and r.emitted.kind == "resampled":
            saw_reject = True
            assert r.emitted.residual_topk and abs(sum(a.prob for a in r.emitted.residual_topk)) <= 1 + 1e-6
        saw_bonus |= bool(r.emitted and r.emitted.kind == "bonus")
    assert saw_reject and saw_bonus
    assert records[0].prefill_ms > 0 and all(r.prefill_ms == 0 for r in records[1:])
    assert sum(len(r.committed_ids) for r in records) == len(session.generated_ids)


def test_reset_replays_the_same_run(tiny_llama, noisy_tiny_llama):
    session = _session(tiny_llama, noisy_tiny_llama)
    first = [r.committed_ids for r in session.run()]
    session.reset()
    assert [r.committed_ids for r in session.run()] == first


def test_no_records_mode(tiny_llama, noisy_tiny_llama):
    session = _session(tiny_llama, noisy_tiny_llama, record=False)
    assert all(r is None for r in session.run())
    assert session.records == [] and session.stats.generated == len(session.generated_ids) > 0
