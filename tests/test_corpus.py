"""The distillation corpus: what it stores, resuming after an interruption, and refusing bad input."""

from __future__ import annotations

import json

import pytest
import torch

from core.errors import DraftScopeError
from core.train import corpus as corpus_mod
from core.train.corpus import CorpusSettings, build, load_corpus
from core.train.prompts import corpus_prompts

SETTINGS = CorpusSettings(prompts=5, max_new_tokens=6, batch=2, states=True)


def test_corpus_prompts_are_disjoint_from_the_evaluation_prompts():
    from core import ASSETS_DIR

    evaluation = {json.loads(line)["prompt"] for line in (ASSETS_DIR / "prompts" / "specbench_mini.jsonl").open()}
    prompts = corpus_prompts()
    assert len(prompts) > 1000 and len(set(prompts)) == len(prompts)
    assert not set(prompts) & evaluation


def test_an_interrupted_corpus_resumes_to_the_same_result(tiny_llama, tmp_path):
    whole = build("tiny-llama", SETTINGS, tmp_path / "whole", target=tiny_llama)
    part = build("tiny-llama", SETTINGS, tmp_path / "part", stop_after=2, target=tiny_llama)
    assert not part["complete"] and part["shards"] == 2
    with pytest.raises(DraftScopeError, match="unfinished"):
        load_corpus(tiny_llama, tmp_path / "part")
    rest = build("tiny-llama", SETTINGS, tmp_path / "part", target=tiny_llama)
    assert rest["complete"] and rest["new_shards"] == whole["shards"] - 2
    a, b = load_corpus(tiny_llama, tmp_path / "whole"), load_corpus(tiny_llama, tmp_path / "part")
    assert [s.tokens for s in a.sequences] == [s.tokens for s in b.sequences]
    assert all(torch.equal(x.p, y.p) for x, y in zip(a.sequences, b.sequences))
    assert whole["sequences"] == 10 and {s.mode for s in a.sequences} == {"greedy", "sampled"}


def test_what_a_corpus_stores(tiny_llama, tmp_path):
    build("tiny-llama", SETTINGS, tmp_path, target=tiny_llama)
    corpus = load_corpus(tiny_llama, tmp_path)
    for s in corpus.sequences:
        n = len(s.answer)
        assert s.p.shape == (n, 64) and s.ids.shape == (n, 64) and s.p.dtype == torch.float16
        assert s.extra["hidden"].shape == (n, tiny_llama.config.hidden_size)
        assert s.extra["k"].shape[1] == len(s.tokens)
        # row i is the distribution answer token i came from: the greedy answer is its argmax
        if s.mode == "greedy":
            assert s.ids[:, 0].tolist() == s.answer
        # the stored top-64 agree with a teacher-forced forward of the target
        with torch.no_grad():
            logits = tiny_llama.model(torch.tensor([s.tokens])).logits[0, len(s.prompt) - 1:-1]
        top = torch.topk(torch.softmax(logits, -1), 64)
        assert torch.allclose(top.values, s.p.float(), atol=2e-3)
    assert int(corpus.token_counts(tiny_llama.vocab_size).sum()) == corpus.n_tokens
    assert (tmp_path / "vocab-counts.safetensors").is_file()


def test_bad_corpus_input(tiny_llama, vocab6, tmp_path):
    with pytest.raises(DraftScopeError, match="no distillation corpus"):
        load_corpus(tiny_llama, tmp_path / "missing")
    build("tiny-llama", CorpusSettings(prompts=2, max_new_tokens=3, batch=2, modes=("greedy",)), tmp_path / "c",
          target=tiny_llama)
    with pytest.raises(DraftScopeError, match="tokenizer"):
        load_corpus(vocab6, tmp_path / "c")
    with pytest.raises(DraftScopeError, match="other settings"):
        build("tiny-llama", CorpusSettings(prompts=3, max_new_tokens=3, batch=2), tmp_path / "c", target=tiny_llama)
    with pytest.raises(DraftScopeError, match="unknown corpus mode"):
        build("tiny-llama", CorpusSettings(prompts=2, modes=("beam",)), tmp_path / "d", target=tiny_llama)
    assert not (tmp_path / "d").exists()


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert corpus_mod.main(["--target", "tiny-llama", "--prompts", "0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
