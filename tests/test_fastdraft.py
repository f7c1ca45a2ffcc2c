"""The FastDraft drafter and its trainer: tiny runs of every loss, checkpoints, and refusing bad input."""

from __future__ import annotations

import pytest
import torch

from core.errors import DraftScopeError
from core.specdec.drafters import build_drafter, fastdraft as fd
from core.train import fastdraft as trainer
from core.train.corpus import CorpusSettings, build
from core.train.losses import LOSSES
from tests.helpers import counts_file


@pytest.fixture(scope="module")
def tiny_corpus(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    build("tiny-llama", CorpusSettings(prompts=8, max_new_tokens=12, batch=4), folder, target=tiny_llama)
    return folder


@pytest.fixture(scope="module")
def stage1(tiny_llama, tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("fd") / "stage1.safetensors"
    meta = trainer.train("tiny-llama", "pretrain", corpus_path=str(tiny_corpus), n_layers=2, vocab_trim=2048,
                         batch=2, holdout=0.25, lr=3e-3, epochs=3, out=str(out), target=tiny_llama)
    return out, meta


def test_pretraining_lowers_the_loss_and_saves_a_small_checkpoint(stage1, tiny_llama):
    path, meta = stage1
    history = meta["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert meta["after"]["greedy_tokens"] > 0 and 0 <= meta["after"]["top1_agreement"] <= 1
    assert meta["init_layers"] == [0, tiny_llama.n_layers - 1] and meta["vocab_trim"] == 2048
    net, loaded = fd.load(path, tiny_llama)
    assert net.lm_head.k == 2048 and len(net.model.layers) == 2 and loaded["stage"] == "pretrain"
    state = fd.trained_state(net)
    assert not any("embed" in k for k in state)  # the target supplies the embedding and the head rows


@pytest.mark.parametrize("loss_name", LOSSES)
def test_alignment_runs_with_every_loss(stage1, tiny_llama, tiny_corpus, tmp_path, loss_name):
    path, _ = stage1
    meta = trainer.train("tiny-llama", "align", loss_name, corpus_path=str(tiny_corpus), start=str(path), batch=2,
                         holdout=0.25, curve=2, lr=3e-3, out=str(tmp_path / "a.safetensors"), target=tiny_llama)
    assert meta["loss"] == loss_name and len(meta["curve"]) == 2
    assert meta["curve"][0]["tokens_seen"] < meta["curve"][1]["tokens_seen"] == meta["train_tokens"]
    assert meta["history"][0]["train_loss"] == meta["history"][0]["train_loss"]  # not NaN
    drafter = build_drafter("fastdraft", tiny_llama, {"checkpoint": str(tmp_path / "a.safetensors")})
    assert drafter.trim.k == 2048 and drafter.cost < 1


def test_greedy_replay_counts_rounds():
    acc = [0, 0, 0]
    trainer._replay([True, True, False, True, True, True, True], 2, acc)
    # rounds: accept 2 (+1 token: 3 used), then bits[3:]: accept 2 (+1), then bits[6:]: 0 drafted (+1)
    assert acc == [3, 4, 4]


def test_bad_checkpoints_and_options(stage1, tiny_llama, vocab6, tmp_path):
    path, _ = stage1
    with pytest.raises(DraftScopeError, match="not for 'vocab6"):
        build_drafter("fastdraft", vocab6, {"checkpoint": str(path)})
    with pytest.raises(DraftScopeError, match="not found"):
        build_drafter("fastdraft", tiny_llama, {"checkpoint": str(tmp_path / "none.safetensors")})
    kangaroo = next((p for p in (fd.ASSETS_DIR / "kangaroo").glob("tiny-llama*")), None)
    with pytest.raises(DraftScopeError, match="not a DraftScope FastDraft"):
        build_drafter("fastdraft", tiny_llama, {"checkpoint": str(kangaroo)})
    with pytest.raises(DraftScopeError, match="holds only 2048"):  # VocabTrim can only shrink a trimmed head
        build_drafter("fastdraft", tiny_llama, {"checkpoint": str(path), "vocab_trim": 4096,
                                                "vocab_counts": str(counts_file(tiny_llama))})


def test_trainer_cli_errors(tiny_corpus, capsys):
    assert trainer.main(["--target", "tiny-llama", "--corpus", str(tiny_corpus), "--stage", "align"]) == 2
    assert "needs --from" in capsys.readouterr().err
    assert trainer.main(["--target", "tiny-llama", "--corpus", str(tiny_corpus), "--loss", "rkl"]) == 2
    assert trainer.main(["--target", "tiny-llama", "--corpus", "/nonexistent/corpus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("error:") for line in err) and len(err) == 2


def test_network_shares_the_targets_embedding(tiny_llama):
    net = fd.build_network(tiny_llama, 2, torch.arange(100), [0, 1])
    assert net.model.embed_tokens is tiny_llama.model.model.embed_tokens
    for a, b in zip(net.model.layers[1].parameters(), tiny_llama.model.model.layers[1].parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()  # copied, not shared


def test_confidence_stop_and_prompt_lookup_stay_lossless(tiny_llama):
    """η stops drafting at a low top probability (the random tiny drafter is never confident: nothing is drafted);
    with lookup on, a repeated 3-gram drafts its continuation and the model drafts the rest. Both stay identical to
    target-only greedy."""
    from core.specdec import Session, SessionConfig
    from core.specdec.verify import build_verifier
    from tests.helpers import hf_greedy

    net = fd.build_network(tiny_llama, 2, torch.arange(tiny_llama.vocab_size), [0, tiny_llama.n_layers - 1])
    ids = tiny_llama.encode("the cat sat on the mat and the cat sat on the")
    reference = hf_greedy(tiny_llama, ids, 30)
    sources = {}
    for name, extra in (("eta", {"eta": 0.9}), ("lookup", {"lookup": True})):
        drafter = build_drafter("fastdraft", tiny_llama, {"checkpoint": net, **extra})
        config = SessionConfig(target=tiny_llama.name, drafter="fastdraft", gamma=4, max_new_tokens=30)
        session = Session(tiny_llama, drafter, build_verifier("greedy"), ids, config)
        for _ in session.run():
            pass
        assert session.generated_ids == reference, name
        sources[name] = [r.draft_info.get("source") for r in session.records if r.drafted]
    assert sources["eta"] == []  # never confident enough
    assert "lookup" in sources["lookup"] and "model" in sources["lookup"]
    with pytest.raises(DraftScopeError, match="η"):
        build_drafter("fastdraft", tiny_llama, {"checkpoint": net, "eta": 1.0})
