"""The invariant table: every registered drafter × verifier, greedy, is token-identical to target-only greedy."""

from __future__ import annotations

import pytest

from core.specdec import Session, SessionConfig
from core.specdec.drafters import DRAFTERS
from core.specdec.verify import VERIFIERS, build_verifier
from tests.helpers import TRIMMABLE, hf_greedy, table_drafter

TINY_PROMPTS = ["the cat sat on the mat and the cat sat on the", "1 2 3 4 5 6 7 8 9 10 11 12 13"]
SMOL_PROMPTS = [
    "Repeat exactly: the quick brown fox jumps over the lazy dog. The quick brown fox",
    "Summarize: Anna planted tomatoes, beans and basil in her garden in May. By July the tomatoes, beans and basil "
    "were ready, and Anna shared the tomatoes with her neighbours.",
]


def _run(target, drafter, verifier, ids, n, gamma=4):
    config = SessionConfig(target=target.name, drafter=drafter.name, verifier=verifier, gamma=gamma,
                           max_new_tokens=n, temperature=0.0)
    session = Session(target, drafter, build_verifier(verifier), ids, config)
    for _ in session.run():
        pass
    return session


def _check(session, reference):
    out = session.generated_ids
    assert out == reference[: len(out)]
    assert len(out) == len(reference), (session.finish_reason, len(out), len(reference))
    s = session.stats
    assert s.generated == len(out)
    assert s.accepted <= s.drafted


@pytest.mark.parametrize("verifier", list(VERIFIERS))
@pytest.mark.parametrize("drafter", list(DRAFTERS))
@pytest.mark.parametrize("target_name", ["tiny_llama", "tiny_gemma"])
def test_tiny_greedy_identity(request, target_name, drafter, verifier, noisy_tiny_llama):
    target = request.getfixturevalue(target_name)
    draft_model = noisy_tiny_llama if target_name == "tiny_llama" else target  # tiny-gemma drafts for itself
    for text in TINY_PROMPTS:
        ids = target.encode(text)
        reference = hf_greedy(target, ids, 30)
        session = _run(target, table_drafter(drafter, target, draft_model), verifier, ids, 30)
        _check(session, reference)


@pytest.mark.parametrize("verifier", list(VERIFIERS))
@pytest.mark.parametrize("drafter", TRIMMABLE)
@pytest.mark.parametrize("target_name", ["tiny_llama", "tiny_gemma"])
def test_tiny_greedy_identity_vocab_trimmed(request, target_name, drafter, verifier, noisy_tiny_llama):
    """VocabTrim'd heads: the kept set holds every other token of the reference, so drafts are accepted where the
    target's token was kept and must be rejected where it was trimmed."""
    target = request.getfixturevalue(target_name)
    draft_model = noisy_tiny_llama if target_name == "tiny_llama" else target
    for text in TINY_PROMPTS:
        ids = target.encode(text)
        reference = hf_greedy(target, ids, 30)
        favoured = tuple(dict.fromkeys(reference[::2]))
        drafter_ = table_drafter(drafter, target, draft_model, trim=len(favoured), favoured=favoured)
        session = _run(target, drafter_, verifier, ids, 30)
        _check(session, reference)
        drafts = [d.id for r in session.records for d in getattr(r, "drafted", [])]
        assert drafts and set(drafts) <= set(favoured), "a trimmed head proposed a token outside its kept set"


@pytest.mark.slow
@pytest.mark.parametrize("verifier", list(VERIFIERS))
@pytest.mark.parametrize("drafter", list(DRAFTERS))
def test_smollm2_greedy_identity(smollm2, tiny_llama, drafter, verifier):
    # the 'model' drafter: tiny-llama shares SmolLM2's tokenizer (random weights: mostly rejections, which is the
    # harder path for the cache rollback)
    for text in SMOL_PROMPTS:
        ids = smollm2.encode(text, chat=True)
        reference = hf_greedy(smollm2, ids, 24)
        session = _run(smollm2, table_drafter(drafter, smollm2, tiny_llama), verifier, ids, 24, gamma=5)
        _check(session, reference)


def test_ngram_accepts_on_repetitive_text(smollm2):
    """Prompt lookup must actually speed up copying: τ > 1 on a prompt asking to repeat a sentence."""
    ids = smollm2.encode(SMOL_PROMPTS[0], chat=True)
    session = _run(smollm2, table_drafter("ngram", smollm2, None), "greedy", ids, 24, gamma=8)
    assert session.stats.tau > 1.3, session.stats.summary()


def test_partial_acceptance_is_exercised(tiny_llama, noisy_tiny_llama):
    """The noisy drafter is neither always right nor always wrong, so both branches of the rule are covered."""
    ids = tiny_llama.encode(TINY_PROMPTS[0])
    session = _run(tiny_llama, table_drafter("model", tiny_llama, noisy_tiny_llama), "greedy", ids, 40)
    assert 0.1 < session.stats.alpha < 0.95, session.stats.summary()


@pytest.fixture(scope="module")
def gemma3():
    from core.runtime.models import load_model

    return load_model("gemma3-270m", device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("drafter", ["ngram", "early-exit"])
def test_gemma3_past_its_sliding_window(gemma3, drafter):
    """The real Gemma-3-270M (sliding window 512): a prompt longer than the window, rollbacks across it."""
    passage = ("The lighthouse keeper of Carrow Point wrote the weather in a green notebook every evening. "
               "Storms came from the west in autumn, and the keeper counted the ships that passed the point. ")
    ids = gemma3.encode(passage * 13 + "The lighthouse keeper of Carrow Point")
    window = gemma3.config.sliding_window
    assert len(ids) < window < len(ids) + 40 - 10  # the window is crossed while decoding, with rollbacks around it
    reference = hf_greedy(gemma3, ids, 40)
    session = _run(gemma3, table_drafter(drafter, gemma3, None), "greedy", ids, 40, gamma=6)
    _check(session, reference)
    if drafter == "ngram":
        assert session.stats.accepted > 0  # the passage repeats, so the lookup drafts get accepted
