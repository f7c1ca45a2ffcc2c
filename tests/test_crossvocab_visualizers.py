"""The Across tokenizers views on hand-built OmniDraft records (no model): merge brackets, the cut, unused drafter
tokens, q' as a product, decisions, HTML escaping, the cache table and figure, acceptance over time."""

from __future__ import annotations

import pytest

from core.specdec.records import StepRecord
from visualizers.crossvocab import (
    acceptance_figure,
    alignment_html,
    cache_figure,
    cache_rows,
    cache_table_html,
    distill_rounds,
    piece,
    round_acceptance,
    running_acceptance,
)

DECISIONS = ("accepted", "rejected", "unverified")


def _token(k: int, text: str, decision: str) -> dict:
    return {"position": 20 + k, "id": 100 + k, "text": text, "decision": decision, "q": None}


def _draft(text: str, q: float, used: bool = True, chance: float = 0.9) -> dict:
    return {"id": 7, "text": text, "q": q, "used": used, "chance": chance}


def record(step: int = 3, draft=None, groups=None, decisions=None, stop: str = "no mapping", emitted="resampled",
           accepted: int | None = None, info: dict | None = None, **more) -> StepRecord:
    """A StepRecord built from plain dicts, as it comes back from JSON; by default: drafter tokens ' Mill' 'brook'
    (one n-gram group), ' is' and '<script>' (direct), then an unmapped token (the cut)."""
    draft = draft if draft is not None else [_draft(" Mill", 0.5), _draft("brook", 0.4), _draft(" is", 0.9),
                                             _draft("<script>", 0.25), _draft('a"b', 0.1, used=False)]
    groups = groups if groups is not None else [
        {"kind": "ngram", "draft": [0, 1], "target": 11, "text": " Millbrook", "q": 0.2},
        {"kind": "direct", "draft": [2], "target": 12, "text": " is", "q": 0.9},
        {"kind": "direct", "draft": [3], "target": 13, "text": "<script>", "q": 0.25}]
    decisions = decisions if decisions is not None else DECISIONS[: len(groups)]
    drafted = [_token(k, g["text"], d) for k, (g, d) in enumerate(zip(groups, decisions, strict=True))]
    n_accepted = sum(d == "accepted" for d in decisions) if accepted is None else accepted
    omni = {"draft": draft, "groups": groups, "stop": stop, "cache_size": 4, "cache_new": [],
            "distill_steps": 1, "head_steps": 2, **(info or {})}
    d = {"step": step, "drafter": "omnidraft", "verifier": "greedy", "start_position": 20, "drafted": drafted,
         "emitted": {"position": 21, "id": 99, "text": " was", "kind": emitted, "p": 0.7, "rank_p": 1}
         if emitted else None,
         "accepted": n_accepted, "committed_ids": [11] * n_accepted + [99], "committed_text": "",
         "draft_ms": 1.0, "verify_ms": 1.0, "prefill_ms": 0.0, "total_ms": 2.0, "target_cache_len": 22,
         "drafter_cache_len": None, "finished": False, "draft_info": {"omnidraft": omni}, **more}
    return StepRecord.from_dict(d)


def test_an_ngram_group_is_one_bracket_over_its_drafter_tokens():
    html = alignment_html(record())
    assert html.count('class="cv-tok cv-draft') == 5 and html.count('class="cv-tok cv-target') == 3
    assert '<div class="cv-bracket ngram" style="grid-row:2;grid-column:2/span 2">' in html
    assert 'class="cv-tok cv-target ngram accepted" style="grid-row:3;grid-column:2/span 2"' in html
    assert '<div class="cv-bracket direct" style="grid-row:2;grid-column:4/span 1">' in html
    assert "q′ = 0.500 · 0.400 = 0.200" in html  # q' as the product of the sub-tokens' q
    assert "q′ = 0.900" in html and "q 0.500" in html and "head 0.90" in html
    assert "✓ accepted" in html and "✗ rejected" in html and "· not verified" in html
    assert "␣Mill" in html and "␣Millbrook" in html  # spaces made visible
    assert "1 n-gram, 2 direct" in html and "1 of 3 accepted" in html and "cache 4 entries" in html


def test_the_cut_is_marked_and_unused_drafter_tokens_are_grey():
    html = alignment_html(record())
    assert html.count("cv-draft unused") == 1
    assert 'class="cv-tok cv-draft unused cv-cut" style="grid-row:1;grid-column:6"' in html
    assert '<div class="cv-cut-label" style="grid-row:2/4;grid-column:6;align-self:center">✂ cut' in html
    assert "cut: a drafter token spells no target token" in html  # the headline's stop reason
    assert 'class="cv-tok cv-emitted resampled" style="grid-row:3;grid-column:7"' in html  # the target's own token

    beyond = alignment_html(record(stop="γ"))  # unused past γ: greyed, marked, not a cut
    assert "cv-draft unused cv-gamma" in beyond and "beyond γ" in beyond and "✂" not in beyond.split("cv-legend")[0]

    full = record(draft=[_draft(" is", 0.9)], groups=[{"kind": "direct", "draft": [0], "target": 12, "text": " is",
                                                      "q": 0.9}], decisions=["accepted"], stop="γ", emitted="bonus")
    html = alignment_html(full)
    assert "unused" not in html.split("</style>")[1].split("cv-legend")[0] and "cv-emitted bonus" in html


def test_token_texts_are_escaped():
    html = alignment_html(record())
    body = html.split("</style>", 1)[1]
    assert "<script>" not in body and "&lt;script&gt;" in body
    assert 'title="drafter token 4: &#x27;a&quot;b&#x27; id 7' in body  # quotes in a title attribute
    assert piece("x<y & z\n") == "x&lt;y␣&amp;␣z↵" and piece("") == "∅"
    rec = record(info={"cache_new": [["<b>", ["<", "b>"]]]})
    table = cache_table_html([rec])
    assert "<b>" not in table.split("</style>", 1)[1] and "&lt;b&gt;" in table


def test_rounds_without_a_draft_and_no_round():
    assert "No round yet" in alignment_html(None)
    empty = record(draft=[], groups=[], decisions=[], stop="no mapping")
    html = alignment_html(empty)
    assert "0 drafter tokens → 0 target tokens" in html and "cv-emitted resampled" in html
    bare = record(draft_info={})
    assert "not asked to draft" in alignment_html(bare) and "cv-emitted" in alignment_html(bare)


def test_cache_rows_table_and_figure():
    records = [record(step=0, info={"cache_size": 0}),
               record(step=1, info={"cache_size": 2, "cache_new": [[" Millbrook", [" Mill", "brook"]],
                                                                    ["ing", ["in", "g"]]]}),
               record(step=2, draft_info={}),  # a round with no draft: not in the cache figure
               record(step=3, info={"cache_size": 3, "cache_new": [["ville", ["vil", "le"]]]})]
    rows = cache_rows(records)
    assert [(r["round"], r["target"], r["run"]) for r in rows] == [
        (1, " Millbrook", [" Mill", "brook"]), (1, "ing", ["in", "g"]), (3, "ville", ["vil", "le"])]
    table = cache_table_html(records)
    assert table.index("ville") < table.index("Millbrook")  # newest first
    assert "3 cache entries learned" in table and table.count("<tr>") == 4
    fig = cache_figure(records)
    assert [t.meta for t in fig.data] == ["cache_new", "cache_size"]
    assert list(fig.data[0].x) == [0, 1, 3] and list(fig.data[0].y) == [0, 2, 1] and list(fig.data[1].y) == [0, 2, 3]
    assert "No n-gram cache entries yet" in cache_table_html(records[:1])
    assert "No rounds yet" in cache_table_html([]) and not cache_figure([]).data


def test_acceptance_per_round_running_mean_and_distillation_marks():
    on = [record(step=0, decisions=["accepted", "rejected", "unverified"], info={"distill_steps": 0}),
          record(step=1, draft=[_draft("x", 0.1, used=False)], groups=[], decisions=[], info={"distill_steps": 1,
                                                                                                "distill_loss": 2.5}),
          record(step=2, decisions=["accepted", "accepted", "accepted"], emitted="bonus", info={"distill_steps": 1}),
          record(step=3, draft_info={}, drafted=[], accepted=0),
          record(step=4, decisions=["accepted", "accepted", "rejected"], info={"distill_steps": 2})]
    assert round_acceptance(on) == [pytest.approx(1 / 3), None, 1.0, None, pytest.approx(2 / 3)]
    assert running_acceptance(on) == [pytest.approx(1 / 3), pytest.approx(1 / 3), pytest.approx(4 / 6),
                                      pytest.approx(4 / 6), pytest.approx(6 / 9)]
    assert distill_rounds(on) == [(1, 1, 2.5), (4, 2, None)]
    off = [record(step=k, decisions=["rejected", "unverified", "unverified"], info={"distill_steps": 0})
           for k in range(3)]
    fig = acceptance_figure({"learning on": on, "learning off": off})
    assert [t.meta for t in fig.data] == ["acceptance", "running", "distill", "acceptance", "running"]
    assert [t.name for t in fig.data if t.meta == "acceptance"] == ["learning on: per round", "learning off: per round"]
    marks = next(t for t in fig.data if t.meta == "distill")
    assert list(marks.x) == [1, 4] and "loss 2.500" in marks.hovertext[0]
    assert "nothing drafted" in fig.data[0].hovertext[1]
    assert not acceptance_figure({}).data and not acceptance_figure({"learning on": []}).data
