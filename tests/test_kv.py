"""Rollback of KV caches: after a crop, decoding on matches a fresh forward of the kept tokens (sliding windows
included)."""

from __future__ import annotations

import pytest
import torch

from core.runtime.cached_lm import CachedLM


def _fresh_logits(model, ids):
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].float()


def _check_rollbacks(model, seq, schedule, atol, kv_class=CachedLM):
    """Feed chunks, roll back, feed others; at every step compare the last logits with a full recompute."""
    kv = kv_class(model)
    kv.reset()
    committed = []
    for chunk, keep_after in schedule:
        tokens = seq[len(committed): len(committed) + chunk]
        logits = kv.forward(tokens, logits_to_keep=len(tokens))
        full = _fresh_logits(model, committed + tokens)[-len(tokens):]
        torch.testing.assert_close(logits, full, atol=atol, rtol=0)
        committed = (committed + tokens)[: len(committed) + keep_after]
        kv.rollback(len(committed))
        assert kv.ids == committed


# (tokens fed, how many of them are kept): multi-token forwards followed by partial rejections, like verification
SCHEDULE = [(5, 5), (4, 1), (6, 2), (1, 1), (7, 7), (3, 0), (5, 3), (2, 2), (6, 1), (4, 4)]


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma"])
def test_rollback_matches_recompute(request, name):
    model = request.getfixturevalue(name)
    seq = model.encode("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                       "sixteen seventeen eighteen nineteen twenty twenty-one twenty-two twenty-three twenty-four")
    assert len(seq) > 30  # well past tiny-gemma's sliding window of 8
    _check_rollbacks(model.model, seq, SCHEDULE, atol=1e-4)


def test_rollback_smollm2(smollm2):
    seq = smollm2.encode("The history of the bicycle begins in 1817, when Karl Drais built a running machine "
                         "with two wheels and no pedals, steered by handlebars.")
    _check_rollbacks(smollm2.model, seq, SCHEDULE[:6], atol=2e-3)


def test_sync_finds_common_prefix(tiny_llama):
    kv = CachedLM(tiny_llama.model)
    kv.reset()
    kv.forward([5, 6, 7, 8, 9])
    assert kv.sync([5, 6, 7, 8, 9, 10]) == [10]  # extends: nothing to roll back
    assert kv.sync([5, 6, 1, 2]) == [1, 2]  # diverged at index 2
    assert kv.ids == [5, 6]
    assert kv.sync([5, 6]) == [6]  # always leaves one token to feed
    assert kv.ids == [5]


class _UncroppableLM(CachedLM):
    def can_crop(self) -> bool:
        return False


def test_rollback_by_recompute_when_cache_cannot_crop(tiny_gemma):
    seq = tiny_gemma.encode("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
                            "sigma tau upsilon phi chi psi omega")
    _check_rollbacks(tiny_gemma.model, seq, SCHEDULE[:6], atol=1e-4, kv_class=_UncroppableLM)
