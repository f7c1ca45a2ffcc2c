"""OmniDraft: the cross-vocabulary map and n-gram cache, lossless drafting across tokenizers (greedy identity in both
directions, the sampled law with merged tokens and online learning), the online learning itself, and its errors.
(The registry tables also hold it: tests/test_greedy_identity.py and tests/test_sampled_law.py.)"""

from __future__ import annotations

import pytest
import torch

from core.errors import DraftScopeError
from core.runtime.models import LoadedModel
from core.specdec import Session, SessionConfig
from core.specdec.crossvocab import NgramCache, VocabMap, token_pieces, translate
from core.specdec.drafters import build_drafter
from core.specdec.drafters.omnidraft import _KEPT, OmniDraftDrafter
from core.specdec.verify import build_verifier
from tests.helpers import assert_follows_target, hf_greedy, sampled_law, table_drafter


class StringTokenizer:
    """A test tokenizer over a list of pieces: decode joins them, encoding is greedy longest match."""

    eos_token_id = None
    chat_template = None
    all_special_ids = ()

    def __init__(self, pieces: list[str]):
        self.pieces = pieces

    def __len__(self):
        return len(self.pieces)

    def get_vocab(self):
        return {p: i for i, p in enumerate(self.pieces)}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.pieces[i] for i in ids)

    def batch_decode(self, rows):
        return [self.decode(r) for r in rows]

    def __call__(self, text, add_special_tokens=True):
        ids, i = [], 0
        while i < len(text):
            best = max((j for j, p in enumerate(self.pieces) if p and text.startswith(p, i)),
                       key=lambda j: len(self.pieces[j]), default=None)
            if best is None:
                raise ValueError(f"cannot tokenise {text[i:]!r}")
            ids.append(best)
            i += len(self.pieces[best])
        return {"input_ids": ids}


def with_pieces(model: LoadedModel, pieces: list[str], name: str) -> LoadedModel:
    return LoadedModel(name=name, model=model.model, tokenizer=StringTokenizer(pieces), source="test")


TARGET_PIECES = ["0", "1", "2", "3", "4", "12"]  # target token 5 spells "12": two drafter tokens
DRAFT_PIECES = ["0", "1", "2", "3", "4", "5"]  # drafter token 5 ("5") spells no target token: a cut


@pytest.fixture()
def pair(vocab6, noisy_vocab6):
    return with_pieces(vocab6, TARGET_PIECES, "t6"), with_pieces(noisy_vocab6, DRAFT_PIECES, "d6")


# ------------------------------------------------------------------------------------------------ the map
def test_vocab_map_and_cache_on_the_real_tokenizers(smollm2):
    from core.runtime.models import load_model

    gemma = load_model("tiny-gemma", device="cpu")  # Gemma 3's real tokenizer
    vmap = VocabMap.between(smollm2, gemma)
    assert vmap.coverage > 0.5
    pieces = token_pieces(smollm2)
    the = smollm2.tokenizer(" the", add_special_tokens=False)["input_ids"]
    assert len(the) == 1 and gemma.token_text(vmap.to_target[the[0]]) == " the"  # 'Ġthe' meets '▁the'
    assert all(p is None or "\ufffd" not in p for p in pieces)  # byte pieces never map
    assert all(vmap.to_target[i] < 0 for i in smollm2.tokenizer.all_special_ids)
    for text in (".", ",", "\n", " I"):  # Gemma has several ids that decode to these: the one its tokenizer writes
        d = smollm2.tokenizer(text, add_special_tokens=False)["input_ids"]
        t = gemma.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(d) == len(t) == 1 and vmap.to_target[d[0]] == t[0] and vmap.to_draft[t[0]] == d[0], text
    # a Gemma token that SmolLM2 spells with several tokens enters the cache and merges them back
    word = next(w for w in (" übermäßig", " naïve", " photosynthesis", " antidisestablishment")
                if len(gemma.tokenizer(w, add_special_tokens=False)["input_ids"]) == 1
                and len(smollm2.tokenizer(w, add_special_tokens=False)["input_ids"]) > 1)
    t = gemma.tokenizer(word, add_special_tokens=False)["input_ids"][0]
    cache = NgramCache()
    spelled = tuple(smollm2.tokenizer(word, add_special_tokens=False)["input_ids"])
    assert cache.learn([t], vmap, smollm2) == [(t, spelled)]
    run = list(cache.log[0][1])
    groups, cut = translate(run + the, vmap, cache)
    assert cut is None and [(g.kind, g.target) for g in groups] == [("ngram", t), ("direct", vmap.to_target[the[0]])]
    assert cache.open_prefix(run[:1]) and not cache.open_prefix(the)


def test_translation_cuts_where_nothing_maps(pair):
    target, drafter = pair
    vmap = VocabMap.between(drafter, target)
    assert vmap.to_target == [0, 1, 2, 3, 4, -1] and 5 not in vmap.to_draft
    cache = NgramCache()
    groups, cut = translate([1, 2, 3], vmap, cache)
    assert [g.target for g in groups] == [1, 2, 3] and cut is None
    assert cache.learn([5, 3], vmap, drafter) == [(5, (1, 2))]  # "12" = "1" "2"; "3" maps directly
    groups, cut = translate([3, 1, 2, 5, 0], vmap, cache)
    assert [(g.kind, g.draft, g.target) for g in groups] == [("direct", [0], 3), ("ngram", [1, 2], 5)] and cut == 3


# ------------------------------------------------------------------------------------------------ lossless
@pytest.mark.parametrize("direction, options", [  # (the registry table runs both directions at the defaults)
    ("gemma-drafts-for-llama", {"distill_every": 2}),
    ("llama-drafts-for-gemma", {"ngram_cache": False, "distill": False, "accept_stop": 0.0, "backoff": False}),
])
def test_greedy_identity_across_tokenizers(tiny_llama, tiny_gemma, direction, options):
    target, draft = (tiny_llama, tiny_gemma) if direction.endswith("llama") else (tiny_gemma, tiny_llama)
    drafter = build_drafter("omnidraft", target, {"draft_model": draft, **options})
    for text in ("the cat sat on the mat and the cat sat on the", "1 2 3 4 5 6 7 8 9 10 11 12 13"):
        ids = target.encode(text)
        config = SessionConfig(target=target.name, drafter="omnidraft", gamma=3, max_new_tokens=30)
        session = Session(target, drafter, build_verifier("greedy"), ids, config)
        for _ in session.run():
            pass
        assert session.generated_ids == hf_greedy(target, ids, 30)
        assert session.stats.drafted > 0


def test_greedy_identity_with_merges_and_learning(pair):
    """The digit pair drafts merged tokens (its cache fills from the target's "12"s) and keeps learning."""
    target, drafter_model = pair
    drafter = build_drafter("omnidraft", target, {"draft_model": drafter_model, "distill_every": 2})
    ids = [1, 4, 2, 3, 1, 4, 2]
    config = SessionConfig(target=target.name, drafter="omnidraft", gamma=3, max_new_tokens=40)
    session = Session(target, drafter, build_verifier("greedy"), ids, config)
    for _ in session.run():
        pass
    assert session.generated_ids == hf_greedy(target, ids, 40)
    info = [r.draft_info["omnidraft"] for r in session.records if "omnidraft" in r.draft_info]
    assert any(g["kind"] == "ngram" for i in info for g in i["groups"]) or 5 not in session.generated_ids
    assert info[-1]["distill_steps"] > 0 and info[-1]["head_steps"] > 0


def test_sampled_law_across_tokenizers_while_learning(pair, vocab6):
    """Sampling with merged tokens, cuts and every kind of online learning (kept across the seeds, so the cache is
    full and the adapter has moved): the first two tokens still follow the target's exact law."""
    target, drafter_model = pair
    _KEPT.clear()
    drafter = build_drafter("omnidraft", target, {"draft_model": drafter_model, "keep_learning": True,
                                                  "distill_every": 1})
    law = sampled_law(target, drafter, "sampling", [1, 4, 2, 3, 1, 4, 2], 400, temperature=1.0, top_k=3, gamma=2,
                      max_new_tokens=3)
    plain = sampled_law(target, table_drafter("none", target, None), "sampling", [1, 4, 2, 3, 1, 4, 2], 400,
                        temperature=1.0, top_k=3, gamma=2, max_new_tokens=3)
    assert_follows_target(law, 0.11, plain)
    learned = drafter.learned
    assert learned.distill_steps > 0 and learned.head_steps > 0
    assert float(learned.adapter.b.detach().abs().sum()) > 0  # the adapter moved
    _KEPT.clear()


# ------------------------------------------------------------------------------------------------ learning
def test_learning_resets_per_run_unless_kept(pair):
    target, drafter_model = pair
    _KEPT.clear()
    ids = [1, 4, 2, 3, 1, 4, 2]
    for keep in (False, True):
        drafter = build_drafter("omnidraft", target, {"draft_model": drafter_model, "distill_every": 1,
                                                      "keep_learning": keep})
        config = SessionConfig(target=target.name, drafter="omnidraft", gamma=3, max_new_tokens=12)
        session = Session(target, drafter, build_verifier("greedy"), ids, config)
        for _ in session.run():
            pass
        steps = drafter.learned.distill_steps
        assert steps > 0
        session.reset()
        assert (drafter.learned.distill_steps == steps) is keep
        again = build_drafter("omnidraft", target, {"draft_model": drafter_model, "distill_every": 1,
                                                    "keep_learning": keep})
        assert (again.learned is drafter.learned) is keep  # a new session of the same pair continues
    _KEPT.clear()


def test_acceptance_head_learns_and_stops_drafting(pair):
    target, drafter_model = pair
    drafter = build_drafter("omnidraft", target, {"draft_model": drafter_model, "accept_stop": 0.5})
    h = torch.randn(8, drafter.net.config.hidden_size)
    groups = [type("G", (), {"draft": [i]})() for i in range(8)]
    for _ in range(30):  # every draft rejected at its first token
        drafter._train_head({"groups": groups, "hs": list(h)}, 0)
    chance = torch.sigmoid(drafter.learned.head(h / h.norm(dim=-1, keepdim=True))).mean()
    assert chance < 0.5
    session = Session(target, drafter, build_verifier("greedy"), [1, 4, 2, 3, 1, 4, 2],
                      SessionConfig(target=target.name, drafter="omnidraft", gamma=4, max_new_tokens=6))
    with torch.no_grad():  # (a new run starts a fresh head) one that expects every draft to fail: one token, stop
        drafter.learned.head.weight.zero_()
        drafter.learned.head.bias.fill_(-3.0)
    info = session.step().draft_info["omnidraft"]
    assert len(info["draft"]) == 1 and info["stop"] == "acceptance head", info


# ------------------------------------------------------------------------------------------------ errors
def test_bad_pairs_and_options(tiny_llama, pair):
    target, _ = pair
    with pytest.raises(DraftScopeError, match="needs a draft model"):
        build_drafter("omnidraft", target, {})
    letters = with_pieces(target, list("abcdef"), "letters")
    with pytest.raises(DraftScopeError, match="no usable token mapping"):
        build_drafter("omnidraft", target, {"draft_model": letters})
    with pytest.raises(DraftScopeError, match="no trained FastDraft drafter"):
        build_drafter("omnidraft", tiny_llama, {"draft_model": "tiny-gemma", "fastdraft": True})
    for bad in ({"lam": 1.5}, {"accept_stop": 1.0}, {"distill_every": 0}, {"rank": 2.5}, {"lr": 0.0}):
        with pytest.raises(DraftScopeError):
            OmniDraftDrafter.Options(**bad)


def test_prompt_beyond_the_drafters_context(tiny_llama, tiny_gemma):
    class Short(LoadedModel):
        @property
        def max_context(self) -> int:
            return 12

    short = Short(name="short-gemma", model=tiny_gemma.model, tokenizer=tiny_gemma.tokenizer, source="test")
    drafter = build_drafter("omnidraft", tiny_llama, {"draft_model": short})
    ids = tiny_llama.encode("one two three four five six seven eight nine ten eleven twelve thirteen")
    session = Session(tiny_llama, drafter, build_verifier("greedy"), ids,
                      SessionConfig(target=tiny_llama.name, drafter="omnidraft", max_new_tokens=4))
    with pytest.raises(DraftScopeError, match="beyond its context"):
        session.step()
