"""Prompt-lookup matching."""

from core.specdec.drafters.ngram import lookup


def test_longest_suffix_most_recent_match():
    seq = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 2, 3]
    assert lookup(seq, 3, ngram_size=3) == [7, 8, 5]  # suffix [2, 3] matches at 6 (the latest) before 1
    assert lookup(seq, 1, ngram_size=3) == [7]


def test_falls_back_to_shorter_ngrams_and_to_nothing():
    assert lookup([4, 5, 6, 1, 5], 2, ngram_size=3) == [6, 1]  # only the 1-gram [5] matches
    assert lookup([1, 2, 3], 4, ngram_size=3) == []
    assert lookup([1, 2, 3], 4, ngram_size=3, min_ngram_size=2) == []
    assert lookup([7], 4, ngram_size=3) == []


def test_continuation_stops_at_the_end():
    assert lookup([1, 2, 1], 5, ngram_size=1) == [2, 1]
