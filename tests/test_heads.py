"""Draft heads (Medusa, Hydra): the hidden state the engine hands over, trees from heads (Medusa's path format), the
draw-and-match and typical-acceptance verifiers, checkpoints and bad input, the trainer on a tiny corpus."""

from __future__ import annotations

import pytest
import torch

from core.errors import DraftScopeError
from core.specdec import Session, SessionConfig
from core.specdec.drafters import build_drafter, heads as heads_mod
from core.specdec.trees.grow import TreeSpec
from core.specdec.verify import build_verifier
from core.train import heads as trainer
from core.train.corpus import CorpusSettings, build
from tests.helpers import hf_greedy, random_heads, sampled_law, table_drafter

PROMPT = "the cat sat on the mat and the cat sat on the"
PATHS = "[[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]]"


def _session(target, drafter, verifier="greedy", n=24, **config):
    config = SessionConfig(target=target.name, drafter=drafter.name, verifier=verifier, max_new_tokens=n,
                           **{"gamma": 3, **config})
    session = Session(target, drafter, build_verifier(verifier), target.encode(PROMPT), config)
    for _ in session.run():
        pass
    return session


@pytest.mark.parametrize("arch", ["medusa", "hydra"])
@pytest.mark.parametrize("tree", ["", "2,1"])
def test_heads_read_the_state_behind_the_last_committed_token(tiny_llama, arch, tree):
    """Identity heads return h_t itself, so through the target's head they propose x_{t+1} — the last committed
    token, the target's greedy choice there — at the first depth of every round after the first (the prompt's last
    token is not the target's choice). Any other state (one position late, a stale round) would propose something
    else."""
    drafter = build_drafter(arch, tiny_llama, {"checkpoint": (random_heads(tiny_llama, arch, identity=True), None)})
    session = _session(tiny_llama, drafter, tree=tree)
    assert len(session.records) > 3
    for record in session.records[1:]:
        first = [n.id for n in record.nodes if n.depth == 0] if tree else [d.id for d in record.drafted[:1]]
        if not first:
            continue  # the last round of the budget drafts nothing
        last = session.tokens[record.start_position - 1]
        assert last in first, (record.step, first, last)


def test_a_drafter_switched_in_mid_run_fetches_the_state_itself(tiny_llama):
    """After ``reconfigure`` to heads no hidden state was handed over: the drafter recomputes it in the target's cache,
    and the output stays identical to greedy."""
    ids = tiny_llama.encode(PROMPT)
    config = SessionConfig(target=tiny_llama.name, drafter="ngram", max_new_tokens=24, gamma=3)
    session = Session(tiny_llama, build_drafter("ngram", tiny_llama), build_verifier("greedy"), ids, config)
    for _ in session.run(6):
        pass
    heads = random_heads(tiny_llama, "medusa", identity=True)
    session.reconfigure(SessionConfig(target=tiny_llama.name, drafter="medusa", max_new_tokens=24, gamma=3,
                                      drafter_options={"checkpoint": (heads, None)}))
    record = session.step()
    assert record.drafted[0].id == session.tokens[record.start_position - 1]
    for _ in session.run():
        pass
    assert session.generated_ids == hf_greedy(tiny_llama, ids, 24)


@pytest.mark.parametrize("arch", ["medusa", "hydra"])
def test_medusa_paths_tree_is_identical_to_greedy(tiny_llama, arch):
    session = _session(tiny_llama, table_drafter(arch, tiny_llama, None), tree=PATHS)
    assert session.generated_ids == hf_greedy(tiny_llama, tiny_llama.encode(PROMPT), 24)
    shape = [(n.depth, n.parent) for n in session.records[0].nodes]
    assert len(shape) == 6 and [d for d, _ in shape].count(0) == 2


def test_medusa_heads_ignore_the_branch_hydra_heads_read_it(tiny_llama):
    """At one depth Medusa gives every node the same candidates; Hydra's depend on the node's branch."""
    tokens = tiny_llama.encode(PROMPT)
    seen = {}
    for arch in ("medusa", "hydra"):
        session = _session(tiny_llama, table_drafter(arch, tiny_llama, None), n=8, tree="3,2")
        nodes = session.records[0].nodes
        seen[arch] = [tuple(n.id for n in nodes if n.parent == p) for p in (0, 1, 2)]
    assert len(set(seen["medusa"])) == 1
    assert len(set(seen["hydra"])) > 1, seen
    assert tokens


def test_tree_paths_parse_and_refuse_bad_specs():
    spec = TreeSpec.parse(PATHS)
    assert spec.depth == 3 and spec.max_nodes == 6 and spec.branch == 2
    for bad, message in [("[[0], [0, 1, 2]]", "parent path"), ("[[0], [0]]", "twice"), ("[[0], []]", "non-empty"),
                         ("[[0], [x]]", "list of lists"), ("[[0], [99]]", r"0\.\.15"), ("[[1]]", None)]:
        if message is None:
            assert TreeSpec.parse(bad).max_nodes == 1  # the second-best root child alone is allowed
            with pytest.raises(DraftScopeError, match=r"0\.\.n−1"):
                TreeSpec.parse(bad, children="iid")
            continue
        with pytest.raises(DraftScopeError, match=message):
            TreeSpec.parse(bad)


def test_trees_deeper_than_the_heads_are_refused(tiny_llama):
    drafter = table_drafter("hydra", tiny_llama, None)  # three heads
    for tree in ("[[0], [0, 0], [0, 0, 0], [0, 0, 0, 0]]", "1,1,1,1"):
        with pytest.raises(DraftScopeError, match="3 heads"):
            _session(tiny_llama, drafter, tree=tree, gamma=4)
    chain = _session(tiny_llama, drafter, gamma=8)  # a chain just drafts K tokens
    assert max(len(r.drafted) for r in chain.records) == 3


def test_bad_head_files(tiny_llama, tiny_gemma, smollm2, tmp_path):
    keep = torch.arange(tiny_llama.vocab_size)
    path = heads_mod.save(tmp_path / "h.safetensors", random_heads(tiny_llama, "medusa"), keep, tiny_llama, {})
    assert build_drafter("medusa", tiny_llama, {"checkpoint": str(path)}).n_heads == 3
    with pytest.raises(DraftScopeError, match="medusa heads, not hydra"):
        build_drafter("hydra", tiny_llama, {"checkpoint": str(path)})
    with pytest.raises(DraftScopeError, match="not for 'tiny-gemma'"):
        build_drafter("medusa", tiny_gemma, {"checkpoint": str(path)})
    with pytest.raises(DraftScopeError, match="not found"):
        build_drafter("medusa", tiny_llama, {"checkpoint": str(tmp_path / "missing.safetensors")})
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(DraftScopeError):
        build_drafter("medusa", tiny_llama, {"checkpoint": str(tmp_path / "junk.safetensors")})
    assert build_drafter("hydra", smollm2).n_heads >= 3  # the shipped heads load


# ------------------------------------------------------------------------------------------------ verifiers
def test_match_verifier_is_greedy_at_temperature_zero(tiny_llama):
    ids = tiny_llama.encode(PROMPT)
    for tree in ("", PATHS):
        session = _session(tiny_llama, table_drafter("medusa", tiny_llama, None), verifier="match", tree=tree)
        assert session.generated_ids == hf_greedy(tiny_llama, ids, 24)


def test_typical_acceptance_drifts_from_the_target(vocab6, noisy_vocab6):
    """Typical acceptance is not lossless: on the 6-token model at T = 1 it accepts drafts the target would reject
    often enough that the two-token law moves well past the sampled-law table's bound (0.11), where draw-and-match
    with the same drafts stays inside it."""
    prompt = [1, 4, 2, 3, 1, 4, 2]
    settings = dict(temperature=1.0, top_k=3, gamma=2, max_new_tokens=3)
    drafter = table_drafter("model", vocab6, noisy_vocab6)
    typical = sampled_law(vocab6, drafter, "typical", prompt, 400, **settings)
    match = sampled_law(vocab6, drafter, "match", prompt, 400, **settings)
    assert match.tv < 0.11 < typical.tv, (match.tv, typical.tv)


# ------------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def states_corpus(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("heads-corpus")
    build("tiny-llama", CorpusSettings(prompts=12, max_new_tokens=24, batch=6, modes=("greedy",), states=True),
          out=folder, target=tiny_llama)
    return folder


@pytest.mark.parametrize("arch, loss", [("medusa", "ce"), ("hydra", "ce"), ("hydra", "teacher")])
def test_training_lowers_the_loss_and_the_heads_load(tiny_llama, states_corpus, tmp_path, arch, loss):
    out = tmp_path / f"{arch}.safetensors"
    summary = trainer.train("tiny-llama", arch, n_heads=2, loss=loss, epochs=3, lr=3e-3, batch=32, vocab_trim=2048,
                            corpus=str(states_corpus), out=str(out), target=tiny_llama, holdout=0.2,
                            state_dir=tmp_path)
    losses = [h["train_loss"] for h in summary["history"]]
    assert losses[-1] < losses[0], losses
    val = summary["val"]
    assert len(val["top1"]) == 2 and all(0 <= a <= b <= 1 for a, b in zip(val["top1"], val["top5"]))
    assert 1.0 <= val["chain_tau"] <= 3.0
    drafter = build_drafter(arch, tiny_llama, {"checkpoint": str(out)})
    assert drafter.trim is not None and drafter.trim.k == 2048
    session = _session(tiny_llama, drafter, tree="2,1")
    assert session.generated_ids == hf_greedy(tiny_llama, tiny_llama.encode(PROMPT), 24)


def test_training_resumes_after_the_last_epoch(tiny_llama, states_corpus, tmp_path):
    args = dict(n_heads=2, epochs=2, batch=32, vocab_trim=2048, corpus=str(states_corpus), target=tiny_llama,
                out=str(tmp_path / "m.safetensors"), holdout=0.2, state_dir=tmp_path)
    first = trainer.train("tiny-llama", "medusa", **args)
    again = trainer.train("tiny-llama", "medusa", **args)  # both epochs stored: nothing left to train
    assert again["history"] == first["history"]


def test_trainer_cli_errors(states_corpus, tiny_llama, tmp_path, capsys):
    assert trainer.main(["--target", "tiny-llama", "--corpus", "/nonexistent/corpus"]) == 2
    assert "error:" in capsys.readouterr().err
    assert trainer.main(["--target", "tiny-llama", "--corpus", str(states_corpus), "--epochs", "0"]) == 2
    plain = tmp_path / "plain"
    build("tiny-llama", CorpusSettings(prompts=2, max_new_tokens=4, batch=2, modes=("greedy",)), out=plain,
          target=tiny_llama)
    assert trainer.main(["--target", "tiny-llama", "--corpus", str(plain)]) == 2
    assert "no hidden states" in capsys.readouterr().err


def test_suggested_paths_follow_the_accuracies():
    from core.specdec.drafters.heads import suggested_paths

    acc = [[0.6, 0.2, 0.05], [0.5, 0.1, 0.05], [0.4, 0.1, 0.0]]
    # expected acceptances: (0,) .6, (0,0) .3, (1,) .2, (0,0,0) .12, (1,0) .1, (0,0,1) .03 … (2,) .05
    paths = suggested_paths(acc, 5)
    assert paths == [(0,), (1,), (0, 0), (1, 0), (0, 0, 0)]
    spec = TreeSpec.parse(str([list(p) for p in paths]))
    assert spec.max_nodes == 5 and spec.depth == 3
    every = suggested_paths(acc, 100)  # capped by the candidates with a non-zero value
    assert len(every) == len(set(every)) and all(p[:-1] in set(every) | {()} for p in every)


# ------------------------------------------------------------------------------------------------ Hydra++
def _plus(target, identity=False):
    return build_drafter("hydra", target, {"checkpoint": (random_heads(target, "hydra", identity=identity,
                                                                       prefix=True), None)})


@pytest.mark.parametrize("tree", ["", "2,1"])
def test_hydra_plus_prefix_layer_matches_a_full_recompute(tiny_llama, tree):
    """The prefix layer's cache is fed the committed positions round by round (rejected drafts dropped); its output
    behind the last committed token must equal the layer run from scratch over the target's states of the whole
    sequence. The output stays identical to greedy."""
    from core.runtime.layers import capture_final_hidden, run_layers

    drafter = _plus(tiny_llama)
    session = _session(tiny_llama, drafter, tree=tree, n=20)
    assert session.generated_ids == hf_greedy(tiny_llama, tiny_llama.encode(PROMPT), 20)
    tokens = session.tokens
    drafter._hidden(type("Ctx", (), {"tokens": tokens, "target_kv": session.target_kv})())
    with torch.inference_mode(), capture_final_hidden(tiny_llama.model) as seen:
        tiny_llama.model(torch.tensor([tokens[:-1]]), logits_to_keep=1)
        full = run_layers(tiny_llama.model, seen[-1], 0, 1, None, 0, layers=[drafter.heads.prefix])[0, -1]
    position, g = drafter._h
    assert position == len(tokens) - 2
    torch.testing.assert_close(g[0], full, atol=1e-4, rtol=1e-4)


def test_hydra_plus_identity_heads_and_a_mid_run_switch(tiny_llama):
    ids = tiny_llama.encode(PROMPT)
    session = _session(tiny_llama, _plus(tiny_llama, identity=True))
    for record in session.records[1:]:
        if record.drafted:
            assert record.drafted[0].id == session.tokens[record.start_position - 1]
    config = SessionConfig(target=tiny_llama.name, drafter="ngram", max_new_tokens=24, gamma=3)
    switched = Session(tiny_llama, build_drafter("ngram", tiny_llama), build_verifier("greedy"), ids, config)
    for _ in switched.run(5):
        pass
    heads = random_heads(tiny_llama, "hydra", prefix=True)
    switched.reconfigure(SessionConfig(target=tiny_llama.name, drafter="hydra", max_new_tokens=24, gamma=3,
                                       drafter_options={"checkpoint": (heads, None)}))
    for _ in switched.run():
        pass
    assert switched.generated_ids == hf_greedy(tiny_llama, ids, 24)


@pytest.mark.parametrize("verifier, tree", [("sampling", ""), ("rrs", "2,2"), ("match", "2,2")])
def test_hydra_plus_sampled_output_follows_the_target(vocab6, verifier, tree):
    from tests.helpers import assert_follows_target

    drafter = build_drafter("hydra", vocab6, {"checkpoint": (random_heads(vocab6, "hydra", prefix=True),
                                                             None)})
    law = sampled_law(vocab6, drafter, verifier, [1, 4, 2, 3, 1, 4, 2], 400, temperature=1.0, top_k=3, gamma=2,
                      tree=tree, max_new_tokens=3)
    assert_follows_target(law, 0.11)


def test_hydra_plus_needs_a_prefix_layer(tiny_llama, tiny_gemma):
    with pytest.raises(DraftScopeError, match="prefix layer"):
        build_drafter("hydra", tiny_llama, {"plus": True, "checkpoint": (random_heads(tiny_llama, "hydra"), None)})
    with pytest.raises(DraftScopeError, match="sliding-window"):
        random_heads(tiny_gemma, "hydra", prefix=True)
    with pytest.raises(DraftScopeError, match="Hydra"):
        heads_mod.HeadsConfig("medusa", 2, 1, 64, prefix=True).check()


# ------------------------------------------------------------------------------------------------ Falcon
def _falcon(target):
    from tests.helpers import random_falcon

    return build_drafter("falcon", target, {"checkpoint": (random_falcon(target), None)})


@pytest.mark.parametrize("tree", ["", "2,2,1", PATHS])
def test_falcon_block_matches_a_full_recompute(tiny_llama, tree):
    """Round after round the drafter keeps the committed positions in its cache (fed with the target's real states)
    and feeds the last block again; its block output must equal one relaxed-mask pass over the whole sequence from
    scratch. The output stays identical to greedy."""
    from core.runtime.layers import capture_final_hidden

    drafter = _falcon(tiny_llama)
    session = _session(tiny_llama, drafter, tree=tree, n=20, gamma=5)
    assert session.generated_ids == hf_greedy(tiny_llama, tiny_llama.encode(PROMPT), 20)
    tokens = session.tokens
    ctx = type("Ctx", (), {"tokens": tokens, "target_kv": session.target_kv})()
    drafter._states(ctx)
    with torch.inference_mode():
        pred, _ = drafter._root(tokens)
        with capture_final_hidden(tiny_llama.model) as seen:
            tiny_llama.model(torch.tensor([tokens[:-1]]), logits_to_keep=1)
        n = len(tokens) - 1
        allowed = torch.ones(n, n, dtype=torch.bool).tril()
        allowed[-2, -1] = True
        x = drafter.net.inputs(seen[-1][0], drafter._embed(tokens[1:]))
        full = drafter.net.run(tiny_llama.model, x, None, torch.arange(n), allowed)[-2:]
    torch.testing.assert_close(pred, full, atol=1e-4, rtol=1e-4)


def test_falcon_drafts_two_tokens_per_forward(tiny_llama):
    session = _session(tiny_llama, _falcon(tiny_llama), gamma=5, n=12)
    drafted = [r for r in session.records if len(r.drafted) == 5]
    assert drafted and all(r.draft_info["forwards"] == 3 for r in drafted)


def test_falcon_bad_input(tiny_llama, tiny_gemma, tmp_path):
    from core.specdec.drafters import falcon as falcon_mod
    from tests.helpers import random_falcon

    path = falcon_mod.save(tmp_path / "f.safetensors", random_falcon(tiny_llama), torch.arange(100), tiny_llama, {})
    assert build_drafter("falcon", tiny_llama, {"checkpoint": str(path)}).trim.k == 100
    random_falcon(tiny_gemma)  # Gemma 3's last layer is full attention: Falcon builds on it
    with pytest.raises(DraftScopeError, match="not found"):
        build_drafter("falcon", tiny_llama, {"checkpoint": str(tmp_path / "none.safetensors")})
    heads = heads_mod.save(tmp_path / "h.safetensors", random_heads(tiny_llama, "medusa"), torch.arange(10),
                           tiny_llama, {})
    with pytest.raises(DraftScopeError):
        build_drafter("falcon", tiny_llama, {"checkpoint": str(heads)})


@pytest.mark.parametrize("csgd", [True, False])
def test_falcon_training_lowers_the_loss(tiny_llama, states_corpus, tmp_path, csgd):
    from core.train import falcon as falcon_trainer

    out = tmp_path / "falcon.safetensors"
    summary = falcon_trainer.train("tiny-llama", csgd=csgd, epochs=3, lr=3e-3, accumulate=2, vocab_trim=2048,
                                   corpus=str(states_corpus), out=str(out), target=tiny_llama, holdout=0.2,
                                   state_dir=tmp_path)
    losses = [h["train_loss"] for h in summary["history"]]
    assert losses[-1] < losses[0], losses
    assert [h["glance_lambda"] > 0 for h in summary["history"]] == [csgd] * 3
    val = summary["val"]
    assert 0 <= val["top1_pos1"] <= 1 and 1 <= val["tau_g2"] <= 3
    drafter = build_drafter("falcon", tiny_llama, {"checkpoint": str(out)})
    session = _session(tiny_llama, drafter, tree="2,1,1")
    assert session.generated_ids == hf_greedy(tiny_llama, tiny_llama.encode(PROMPT), 24)


def test_training_on_every_position_with_the_targets_distribution(tiny_llama, states_corpus, tmp_path):
    """--positions all: every position, prompt included, against softmax(W f) of the target's own state there."""
    rows_seen = {}
    for positions in ("answers", "all"):
        summary = trainer.train("tiny-llama", "hydra", n_heads=2, loss="teacher", epochs=2, lr=3e-3, batch=32,
                                vocab_trim=2048, corpus=str(states_corpus), out=str(tmp_path / f"{positions}.st"),
                                target=tiny_llama, holdout=0.2, state_dir=tmp_path, positions=positions)
        losses = [h["train_loss"] for h in summary["history"]]
        assert losses[-1] < losses[0], losses
        rows_seen[positions] = summary["train_rows"]
    assert rows_seen["all"] > 2 * rows_seen["answers"]  # the prompts' positions count too
    with pytest.raises(DraftScopeError, match="--positions all"):
        trainer.train("tiny-llama", "hydra", loss="ce", positions="all", corpus=str(states_corpus),
                      target=tiny_llama, state_dir=tmp_path)
