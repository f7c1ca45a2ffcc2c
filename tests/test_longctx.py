"""Drafting against context length (``core.specdec.longctx``): on tiny-llama with an untrained LongSpec block and an
FastDraft network copying the target, LongSpec's KV bytes stay flat while the normal drafter's grow, outputs match
the plain run, and bad input is one message; the figures and the table read the rows."""

from __future__ import annotations

import re

import pytest
import torch

from core.errors import DraftScopeError
from core.specdec import longctx
from core.specdec.drafters import build_drafter
from core.specdec.drafters.fastdraft import build_network
from tests.helpers import random_longspec
from visualizers.longctx import acceptance_figure, memory_figure, rows_frame

LENGTHS = (64, 128)  # the task builder's minimum is 64 tokens


def tiny_options(target) -> dict:
    """In-memory networks for tiny-llama (neither ships for it): an untrained LongSpec block (window 16), and a
    FastDraft network that copies every target layer, so it drafts exactly what the target says (α = 1)."""
    layers = list(range(target.n_layers))
    return {"longspec": {"checkpoint": random_longspec(target), "window": 16},
            "fastdraft": {"checkpoint": build_network(target, len(layers), torch.arange(target.vocab_size), layers)}}


@pytest.fixture(scope="module")
def rows(tiny_llama) -> list[longctx.ContextRow]:
    calls = []
    out = longctx.context_sweep(tiny_llama, lengths=LENGTHS, new_tokens=8, gamma=3, options=tiny_options(tiny_llama),
                                progress=lambda done, total, label: calls.append((done, total, label)))
    assert calls[0] == (0, 6, "warm-up") and calls[-1] == (6, 6, "done")  # 2 lengths × (plain + 2 drafters)
    assert [c[0] for c in calls[1:-1]] == list(range(6))
    return out


def _by(rows, drafter: str) -> list[longctx.ContextRow]:
    return sorted((r for r in rows if r.drafter == drafter), key=lambda r: r.length)


def test_longspec_stays_flat_and_the_normal_drafter_grows(rows, tiny_llama):
    assert [(r.drafter, r.requested) for r in rows] == [("longspec", 64), ("fastdraft", 64), ("longspec", 128),
                                                        ("fastdraft", 128)]
    ls, fd = _by(rows, "longspec"), _by(rows, "fastdraft")
    assert ls[0].drafter_kv_bytes == ls[1].drafter_kv_bytes > 0 and {r.drafter_kv_kind for r in ls} == {"ring"}
    c = tiny_llama.config
    assert ls[0].drafter_kv_bytes == 2 * 16 * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads) * 4
    assert {r.drafter_kv_tokens for r in ls} == {16}
    assert fd[1].drafter_kv_bytes > fd[0].drafter_kv_bytes > 0 and {r.drafter_kv_kind for r in fd} == {"cache"}
    assert fd[1].drafter_kv_tokens >= fd[1].length - 1
    for short, long in (ls, fd):
        assert long.length > short.length and long.target_kv_bytes > short.target_kv_bytes


def test_outputs_match_the_plain_run_and_the_numbers_are_sane(rows):
    for r in rows:
        assert r.identical_to_target, r
        assert r.alpha is not None and 0.0 <= r.alpha <= 1.0
        if r.drafter == "fastdraft":  # the target's own layers: every draft is accepted
            assert r.alpha == 1.0 and r.tau > 3.0, r
        assert r.tau is not None and 1.0 <= r.tau <= 4.0  # γ = 3 drafts + the bonus token
        assert 1 <= r.generated <= 8  # EOS may come first
        assert r.tokens_per_second > 0 and r.target_tokens_per_second > 0
        assert r.speedup == pytest.approx(r.tokens_per_second / r.target_tokens_per_second)
        assert r.prefill_s > 0 and r.target_prefill_s > 0
    assert longctx.ContextRow.from_dict(rows[0].to_dict()) == rows[0]


@pytest.mark.parametrize("kw, message", [
    ({"lengths": (64, 4000)}, "context length 4000 + 8 new tokens exceeds the context of 'tiny-llama' (2048"),
    ({"lengths": ()}, "choose at least one context length"),
    ({"lengths": (32,)}, "context lengths must be in 64..8192"),
    ({"task": "summarization"}, "a task whose length can be set: passkey, multikey"),
    ({"drafters": ("none",)}, "choose at least one drafter"),
    ({"new_tokens": 0}, "new tokens must be in 1..1024"),
    ({"drafters": ("nope",)}, "unknown drafter 'nope'"),
])
def test_bad_input_is_one_error(tiny_llama, kw, message):
    with pytest.raises(DraftScopeError, match=re.escape(message)):
        longctx.context_sweep(tiny_llama, **{"lengths": LENGTHS, "new_tokens": 8, **kw})


def test_a_missing_longspec_checkpoint_names_the_training_command(tiny_llama):
    with pytest.raises(DraftScopeError, match=re.escape("python -m core.train.longspec --target tiny-llama")):
        longctx.context_sweep(tiny_llama, lengths=LENGTHS, new_tokens=8)


def test_parse_lengths():
    assert longctx.parse_lengths("2048, 1024,1024") == [1024, 2048]
    for bad, message in (("1k,2k", "comma-separated whole numbers"), ("", "at least one"), ("10", "64..8192")):
        with pytest.raises(DraftScopeError, match=message):
            longctx.parse_lengths(bad)


def test_drafter_kv_bytes_of_a_drafter_without_a_cache(tiny_llama):
    assert longctx.drafter_kv_bytes(build_drafter("none", tiny_llama)) == (None, "none")


# ------------------------------------------------------------------------------------------------ visualizers
def test_memory_figure(rows):
    fig = memory_figure(rows)
    metas = [t.meta for t in fig.data]
    assert metas == ["drafter:longspec", "drafter:fastdraft", "target"]
    ls, fd, target = fig.data
    assert list(ls.x) == [r.length for r in _by(rows, "longspec")]
    assert ls.y[0] == ls.y[1] and fd.y[1] > fd.y[0]
    assert target.line.dash == "dash" and target.y[1] > target.y[0]
    assert fig.layout.yaxis.type == "log" and "context length" in fig.layout.xaxis.title.text
    assert "ring" in ls.hovertemplate or "ring" in str(ls.customdata)


def test_acceptance_figure(rows):
    fig = acceptance_figure(rows)
    metas = [t.meta for t in fig.data]
    assert metas == ["alpha:longspec", "alpha:fastdraft", "speedup:longspec", "speedup:fastdraft", "parity"]
    alpha = fig.data[0]
    assert list(alpha.y) == pytest.approx([r.alpha for r in _by(rows, "longspec")])
    speed = fig.data[2]
    assert list(speed.y) == pytest.approx([r.speedup for r in _by(rows, "longspec")])
    assert list(fig.data[-1].y) == [1, 1]


def test_empty_figures_and_table():
    for fig in (memory_figure([]), acceptance_figure(None)):
        assert not fig.data and fig.layout.annotations
    assert list(rows_frame([]).columns)[:3] == ["drafter", "prompt tokens", "drafter KV (MiB)"]


def test_table(rows):
    frame = rows_frame(rows)
    assert len(frame) == 4 and list(frame["drafter"]) == ["longspec", "fastdraft"] * 2
    assert list(frame["identical"]) == ["yes"] * 4
