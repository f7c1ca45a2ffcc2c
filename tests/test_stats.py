"""Statistics follow the standard definitions (vLLM / EAGLE / Spec-Bench)."""

from core.specdec.records import Stats


def test_definitions():
    s = Stats(draft_cost=0.1)
    # round 1: 4 drafted, 2 accepted, then a resample → 3 tokens; positions 0,1,2 verified
    s.add_round(4, 2, 3, 3, 0.1, 0.2, 0.4)
    # round 2: 4 drafted, all accepted + bonus → 5 tokens
    s.add_round(4, 4, 5, 4, 0.1, 0.2, 0.4)
    # round 3: 4 drafted, first rejected → 1 token
    s.add_round(4, 0, 1, 1, 0.1, 0.2, 0.4)
    assert s.alpha == 6 / 12
    assert s.tau == 9 / 3  # tokens per target call, bonus included
    assert s.per_position_acceptance == [2 / 3, 2 / 2, 1 / 2, 1 / 1]
    assert s.accepted_hist == {2: 1, 4: 1, 0: 1}
    assert s.mean_draft_len == 4
    assert abs(s.mbsu - 3 / (1 + 4 * 0.1)) < 1e-12
    assert abs(s.tokens_per_second - 9 / 1.2) < 1e-9


def test_plain_decoding_has_tau_one():
    s = Stats()
    for _ in range(5):
        s.add_round(0, 0, 1, 0, 0.0, 0.05, 0.05)
    assert s.tau == 1 and s.alpha is None and s.mbsu is None and s.per_position_acceptance == []
