"""The token strip and stats table, from hand-built step records (no model)."""

from __future__ import annotations

import html
import re

import pytest

from core.specdec.records import DraftedToken, EmittedToken, StepRecord
from visualizers.token_strip import stats_html, token_strip_html

TOKEN_SPAN = re.compile(r'<span class="tok ([a-z]+)" title="([^"]*)">(.*?)</span>', re.S)


def _draft(position: int, text: str, decision: str, p: float | None = 0.5, q: float | None = None) -> DraftedToken:
    verified = decision != "unverified"
    return DraftedToken(position=position, id=100 + position, text=text, decision=decision, q=q,
                        p=p if verified else None, accept_prob=None, u=None, rank_p=1 if verified else None)


def _emit(position: int, text: str, kind: str) -> EmittedToken:
    return EmittedToken(position=position, id=200 + position, text=text, kind=kind, p=0.25, rank_p=2)


def _record(step: int, start: int, drafted: list[DraftedToken], emitted: EmittedToken | None, accepted: int,
            committed: int, finished: bool = False, reason: str | None = None) -> StepRecord:
    return StepRecord(step=step, drafter="ngram", verifier="greedy", start_position=start, drafted=drafted,
                      emitted=emitted, accepted=accepted, committed_ids=list(range(committed)), committed_text="",
                      draft_ms=1.0, verify_ms=2.0, prefill_ms=0.0, total_ms=3.0, target_cache_len=start,
                      drafter_cache_len=None, finished=finished, finish_reason=reason)


@pytest.fixture
def records() -> list[StepRecord]:
    return [
        # round 0: two accepted, one rejected, one unverified, then the target's resample
        _record(0, 10, [_draft(10, "The", "accepted"), _draft(11, " cat", "accepted"), _draft(12, " <b>&", "rejected"),
                        _draft(13, " never", "unverified")], _emit(12, " dog", "resampled"), accepted=2, committed=3),
        # round 1: everything accepted, then a bonus token that is a newline
        _record(1, 13, [_draft(13, " sat", "accepted")], _emit(14, "\n", "bonus"), accepted=1, committed=2),
        # round 2: EOS among the accepted drafts cuts the round; the emitted token and later drafts are not committed
        _record(2, 15, [_draft(15, " ok", "accepted"), _draft(16, "</s>", "accepted"),
                        _draft(17, " after", "accepted")], _emit(18, " ghost", "bonus"), accepted=2, committed=2,
                finished=True, reason="eos"),
    ]


def _tokens(markup: str) -> list[tuple[str, str]]:
    return [(kind, text) for kind, _, text in TOKEN_SPAN.findall(markup)]


def test_every_token_has_its_class_in_order(records):
    assert _tokens(token_strip_html(records)) == [
        ("accepted", "The"), ("accepted", " cat"), ("rejected", " &lt;b&gt;&amp;"), ("resampled", " dog"),
        ("accepted", " sat"), ("bonus", "↵<br>"),
        ("accepted", " ok"), ("accepted", "&lt;/s&gt;"),
    ]


def test_exactly_one_kind_class_per_token(records):
    markup = token_strip_html(records)
    classes = re.findall(r'<span class="(tok[^"]*)"', markup)
    assert classes and all(len(c.split()) == 2 and c.split()[1] in {"accepted", "rejected", "resampled", "bonus"}
                           for c in classes)


def test_rejected_shown_unverified_hidden(records):
    markup = token_strip_html(records)
    assert 'class="tok rejected"' in markup
    assert "never" not in markup


def test_eos_cut_skips_emitted_and_later_drafts(records):
    markup = token_strip_html(records)
    assert "ghost" not in markup
    assert " after" not in markup
    assert "finished: eos" in markup


def test_eos_cut_hides_rejected_draft_after_the_cut():
    drafted = [_draft(0, "</s>", "accepted"), _draft(1, " x", "accepted"), _draft(2, " late", "rejected")]
    markup = token_strip_html([_record(0, 0, drafted, _emit(2, " y", "resampled"), accepted=1, committed=1)])
    assert _tokens(markup) == [("accepted", "&lt;/s&gt;")]


def test_text_is_escaped():
    evil = '<script>alert("x")</script>'
    drafted = [_draft(0, evil, "accepted")]
    markup = token_strip_html([_record(0, 0, drafted, _emit(1, "'\"", "bonus"), accepted=1, committed=2)],
                              prompt_text="<i>prompt</i>")
    assert "<script>" not in markup and "<i>" not in markup
    assert html.escape(evil) in markup
    assert "&lt;i&gt;prompt&lt;/i&gt;" in markup


def test_newline_becomes_arrow_and_break():
    markup = token_strip_html([_record(0, 0, [], _emit(0, "a\nb", "bonus"), accepted=0, committed=1)])
    assert _tokens(markup) == [("bonus", "a↵<br>b")]


def test_titles_carry_numbers_and_dashes(records):
    titles = {text: html.unescape(title) for _, title, text in TOKEN_SPAN.findall(token_strip_html(records))}
    assert "p = 0.500" in titles["The"]
    assert "q = —" in titles["The"]
    assert "U = —" in titles["The"]
    assert "min(1,p/q) = —" in titles["The"]
    assert "rank in p = 1" in titles["The"]
    assert "p = 0.250" in titles[" dog"] and "rank in p = 2" in titles[" dog"]


def test_round_markers_and_legend(records):
    markup = token_strip_html(records)
    assert markup.count('class="round-sep" title=') == len(records)
    assert "<style>" in markup
    for kind in ("accepted", "rejected", "resampled", "bonus"):
        assert f'class="key {kind}"' in markup


def test_no_records_shows_placeholder():
    markup = token_strip_html([])
    assert _tokens(markup) == []
    assert "No tokens yet" in markup


def test_round_trip_records_render_the_same(records):
    again = [StepRecord.from_dict(r.to_dict()) for r in records]
    assert token_strip_html(again) == token_strip_html(records)


def test_stats_table_formats_and_dashes():
    summary = {"alpha": 0.75, "tau": 2.5, "tokens_per_second": 12.345, "target_calls": 4, "rounds": 4,
               "draft_s": 0.1, "verify_s": 0.3, "total_s": 0.5, "prefill_s": 0.05, "generated": 10, "mbsu": None,
               "per_position_acceptance": [1.0, 0.5]}
    markup = stats_html(summary)
    assert "0.750" in markup and "2.50" in markup and "12.3" in markup
    assert "0.100 s (25%)" in markup and "0.300 s (75%)" in markup
    assert "1.00 · 0.50" in markup
    assert "<td>—</td>" in markup  # mbsu


def test_tiny_probabilities_keep_their_magnitude():
    drafted = [_draft(0, "x", "rejected", p=2.5e-6), _draft(1, "y", "unverified")]
    markup = html.unescape(token_strip_html([_record(0, 0, drafted, _emit(0, "z", "resampled"), 0, 1)]))
    assert "p = 2.5e-06" in markup


def test_stats_table_all_missing():
    markup = stats_html({"alpha": None, "tau": None, "tokens_per_second": None})
    assert markup.count("<td>—</td>") >= 9
