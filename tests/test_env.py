"""One parser for every on/off environment variable (core.runtime.env.env_flag) and the switches that use it."""

import pytest

from app import gpu, limits
from core.errors import DraftScopeError
from core.runtime.env import env_flag
from core.specdec import fastpath


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), (" Yes ", True), ("ON", True),
                                             ("0", False), ("false", False), ("No", False), ("off", False)])
def test_words_on_and_off(monkeypatch, value, expected):
    monkeypatch.setenv("DRAFTSCOPE_TEST_FLAG", value)
    assert env_flag("DRAFTSCOPE_TEST_FLAG") is expected


def test_unset_or_empty_gives_the_default(monkeypatch):
    monkeypatch.delenv("DRAFTSCOPE_TEST_FLAG", raising=False)
    assert env_flag("DRAFTSCOPE_TEST_FLAG") is False
    assert env_flag("DRAFTSCOPE_TEST_FLAG", None) is None
    monkeypatch.setenv("DRAFTSCOPE_TEST_FLAG", "  ")
    assert env_flag("DRAFTSCOPE_TEST_FLAG", True) is True


def test_an_unknown_word_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("DRAFTSCOPE_TEST_FLAG", "maybe")
    with pytest.raises(DraftScopeError, match=r"DRAFTSCOPE_TEST_FLAG='maybe' is not a switch: use one of 1, true"):
        env_flag("DRAFTSCOPE_TEST_FLAG")


@pytest.mark.parametrize("switch, name", [(fastpath.static_enabled, "DRAFTSCOPE_STATIC_CACHE"),
                                          (fastpath.compile_enabled, "DRAFTSCOPE_COMPILE"),
                                          (limits.public, "DRAFTSCOPE_PUBLIC"), (gpu.enabled, "DRAFTSCOPE_ZEROGPU")])
def test_every_switch_reads_false_as_off(monkeypatch, switch, name):
    """``DRAFTSCOPE_STATIC_CACHE=false`` once turned the static cache on (any value but 0 counted as on)."""
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.setenv(name, "false")
    assert switch() is False
    monkeypatch.setenv(name, "on")
    assert switch() is True


def test_explicit_off_wins_over_the_platform(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/draftscope")
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setenv("DRAFTSCOPE_PUBLIC", "no")
    monkeypatch.setenv("DRAFTSCOPE_ZEROGPU", "off")
    assert limits.public() is False and gpu.enabled() is False
    monkeypatch.delenv("DRAFTSCOPE_PUBLIC")
    monkeypatch.delenv("DRAFTSCOPE_ZEROGPU")
    assert limits.public() is True and gpu.enabled() is True
