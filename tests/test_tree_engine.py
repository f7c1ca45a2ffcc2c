"""Draft trees end to end: greedy tree output token-identical to target-only greedy, the tree verifiers' output
following p (Monte Carlo over synthetic p/q, with a biased rule as a control that must fail), incremental tree
forwards in the drafter, tree shapes, records with α* and validation messages."""

from __future__ import annotations

import json

import pytest
import torch

from core.errors import DraftScopeError
from core.runtime.cached_lm import CachedLM
from core.specdec import Session, SessionConfig
from core.specdec.drafters.early_exit import EarlyExitDrafter
from core.specdec.drafters.model import ModelDrafter
from core.specdec.records import TreeStepRecord, alpha_star_summary
from core.specdec.trees.grow import TreeSpec
from core.specdec.trees.tree import TokenTree, TreeCache
from core.specdec.verify import build_verifier
from core.specdec.verify.greedy import GreedyVerifier
from core.specdec.verify.rrs import RRSVerifier
from core.specdec.verify.rsd import RSDVerifier
from tests.helpers import hf_greedy, perturbed

PROMPT = "The quick brown fox jumps over the lazy dog. Then the fox"


def _session(target, drafter, tree, verifier="greedy", n=32, **kw):
    config = SessionConfig(target=target.name, drafter=drafter.name, verifier=verifier, tree=tree,
                           max_new_tokens=n, **kw)
    return Session(target, drafter, build_verifier(verifier), target.encode(PROMPT), config)


@pytest.mark.parametrize("tree, children, gamma", [("3,2,1,1", "auto", 5), ("budget:10", "topk", 4),
                                                   ("2,2", "iid", 5), ("1,1,1", "auto", 5),
                                                   ("budget:6", "without-replacement", 3)])
def test_greedy_tree_identity_tiny(tiny_llama, tree, children, gamma):
    drafter = ModelDrafter(tiny_llama, draft_model=perturbed(tiny_llama, 0.05))
    session = _session(tiny_llama, drafter, tree, children=children, gamma=gamma, n=40)
    for _ in session.run():
        pass
    assert session.generated_ids == hf_greedy(tiny_llama, session.prompt_ids, 40)[: len(session.generated_ids)]
    assert len(session.generated_ids) == 40 or session.finish_reason == "eos"
    assert session.stats.tau > 1.0  # some tree nodes were accepted
    assert all(isinstance(r, TreeStepRecord) for r in session.records)
    spec = session.config.tree_spec
    for r in session.records:
        assert len(r.nodes) <= spec.max_nodes and max((n.depth for n in r.nodes), default=0) < spec.depth
        assert all(n.parent < n.index for n in r.nodes)  # parents kept, topological order


def test_greedy_tree_identity_smollm2(smollm2):
    drafter = EarlyExitDrafter(smollm2, exit_layer=24)
    for text in ["Write a haiku about autumn.", "List three uses of a paperclip."]:
        ids = smollm2.encode(text, chat=True)
        config = SessionConfig(target=smollm2.name, drafter="early-exit", drafter_options={"exit_layer": 24},
                               tree="4,2,1", max_new_tokens=24)
        session = Session(smollm2, drafter, GreedyVerifier(), ids, config)
        for _ in session.run():
            pass
        assert session.generated_ids == hf_greedy(smollm2, ids, 24)[: len(session.generated_ids)]
        assert session.stats.accepted > 0


def test_switching_between_tree_and_chain_keeps_identity(tiny_llama):
    drafter = ModelDrafter(tiny_llama, draft_model=perturbed(tiny_llama, 0.05))
    session = _session(tiny_llama, drafter, "3,2", n=36, gamma=4)
    for i in range(6):
        session.step()
        config = SessionConfig(**{**session.config.__dict__, "tree": "" if i % 2 == 0 else "2,2,1"})
        session.reconfigure(config)
    for _ in session.run():
        pass
    assert session.generated_ids == hf_greedy(tiny_llama, session.prompt_ids, 36)[: len(session.generated_ids)]


def test_drafter_cache_after_a_tree_round(tiny_llama):
    """After tree_end the drafter's cache holds the committed prefix only (accepted nodes gathered), and its next
    logits equal a plain forward of the committed tokens."""
    drafter = ModelDrafter(tiny_llama, draft_model=perturbed(tiny_llama, 0.05))
    session = _session(tiny_llama, drafter, "3,2,1", n=20, gamma=4)
    for _ in range(4):
        session.step()
        kv = drafter.kv
        assert kv.ids == session.tokens[: len(kv.ids)] and len(kv.ids) >= len(session.tokens) - 1
        logits = kv.forward(kv.sync(session.tokens))[-1]
        with torch.inference_mode():
            ref = drafter.drafter.model(torch.tensor([session.tokens])).logits[0, -1].float()
        torch.testing.assert_close(logits, ref, atol=1e-4, rtol=0)


def test_incremental_tree_forward_matches_one_forward(tiny_llama):
    prefix = tiny_llama.encode(PROMPT)
    tree = TokenTree(tiny_llama.encode(" a b c d e f g")[:7], [-1, -1, 0, 0, 1, 2, 4])
    one = CachedLM(tiny_llama.model)
    one.forward(prefix)
    all_logits = TreeCache(one).forward(tree)
    inc = CachedLM(tiny_llama.model)
    inc.forward(prefix)
    cache = TreeCache(inc)
    rows = {}
    for nodes in ([0, 1], [2, 3, 4], [5, 6]):  # depth by depth, as a drafter grows a tree
        rows.update(zip(nodes, cache.forward(tree, nodes)))
    for i in range(len(tree)):
        torch.testing.assert_close(rows[i], all_logits[i], atol=1e-4, rtol=0)
    assert cache.keep([1, 4, 6]) == 3 and inc.ids == prefix + [tree.tokens[i] for i in (1, 4, 6)]


# ----------------------------------------------------------------------------------------- sampled tree verifiers
V = 4
P1 = torch.tensor([0.5, 0.3, 0.15, 0.05])
Q1 = torch.tensor([0.1, 0.2, 0.3, 0.4])
P2 = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25], [0.05, 0.05, 0.1, 0.8]])
Q2 = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.4, 0.1, 0.4, 0.1], [0.7, 0.1, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4]])


def _draw(q, n, mode, gen):
    if mode == "iid":
        return torch.multinomial(q, n, replacement=True, generator=gen).tolist()
    return torch.multinomial(q, n, replacement=False, generator=gen).tolist()


def _two_token_law(verifier, mode, trials=12000, seed=0):
    """Grow a 3,2 tree from synthetic q, walk it with synthetic p; tally the first token, and the second token when
    the first was accepted from the tree."""
    gen = torch.Generator().manual_seed(seed)
    first = torch.zeros(V)
    second = torch.zeros(V, V)
    for _ in range(trials):
        roots = _draw(Q1, 3, mode, gen)
        tokens, parents = list(roots), [-1] * 3
        for j, t in enumerate(roots):
            kids = _draw(Q2[t], 2, mode, gen)
            tokens += kids
            parents += [j, j]
        tree = TokenTree(tokens, parents)
        p_rows = torch.stack([P1] + [P2[t] if parents[i] < 0 else P1 for i, t in enumerate(tokens)])
        q_rows = {-1: Q1, **{j: Q2[t] for j, t in enumerate(roots)}}
        verdict = verifier.verify_tree(tree, p_rows, q_rows, gen)
        out = [tokens[i] for i in verdict.path] + [verdict.token]
        first[out[0]] += 1
        if verdict.path:
            second[out[0], out[1]] += 1
    return first / trials, second / second.sum(-1, keepdim=True).clamp_min(1)


@pytest.mark.parametrize("verifier, mode", [(RRSVerifier(), "iid"), (RSDVerifier(), "without-replacement")])
def test_tree_verifiers_follow_p(verifier, mode):
    first, second = _two_token_law(verifier, mode)
    assert 0.5 * (first - P1).abs().sum() < 0.02
    for t in range(V):
        assert 0.5 * (second[t] - P2[t]).abs().sum() < 0.05, t


def test_mismatched_rule_is_caught():
    """Control: RRS's rule on children drawn without replacement is biased, and the same bound catches it."""
    first, _ = _two_token_law(RRSVerifier(), "without-replacement")
    assert 0.5 * (first - P1).abs().sum() > 0.02


def test_sampled_tree_records_alpha_star(tiny_llama):
    drafter = ModelDrafter(tiny_llama, draft_model=perturbed(tiny_llama, 0.05))
    for verifier in ("rrs", "rsd"):
        session = _session(tiny_llama, drafter, "3,2,1", verifier=verifier, temperature=1.0, n=24, gamma=4)
        for _ in session.run():
            pass
        groups = [g for r in session.records for g in r.groups]
        assert groups and all(g.alpha_star_with is not None for g in groups if len(g.children) <= 3)
        for g in groups:
            assert g.single_draft <= g.alpha_star_with + 1e-9 and g.exact_rrs <= g.alpha_star_with + 1e-9
            if g.alpha_star_without is not None:
                assert g.exact_rsd <= g.alpha_star_without + 1e-9
        summary = alpha_star_summary(session.records)
        assert summary["groups"] == len(groups) and 0 <= summary["realised"] <= 1
        record = session.records[0]
        again = TreeStepRecord.from_dict(json.loads(json.dumps(record.to_dict())))
        assert again == record
        decisions = {n.decision for r in session.records for n in r.nodes}
        assert "accepted" in decisions and decisions <= {"accepted", "rejected", "skipped", "unreached"}


def test_tree_spec_parsing():
    spec = TreeSpec.parse("3,2,1,1")
    assert spec.shape == (3, 2, 1, 1) and spec.max_nodes == 3 + 6 + 6 + 6 and spec.label == "3,2,1,1"
    assert TreeSpec.parse("budget:24", depth=6, branch=3).max_nodes == 24
    for bad in ("", "3,,1", "0,1", "budget:0", "budget:x", "99", "16,16,16"):
        with pytest.raises(DraftScopeError):
            TreeSpec.parse(bad)
    with pytest.raises(DraftScopeError):
        TreeSpec.parse("2,2", children="random")


@pytest.mark.parametrize("kw, message", [
    ({"drafter": "ngram", "drafter_options": {}}, "cannot grow a tree"),
    ({"verifier": "rrs"}, "temperature above 0"),
    ({"verifier": "sampling", "temperature": 1.0}, "checks a chain"),
    ({"verifier": "rsd", "children": "iid", "temperature": 1.0}, "lossless only with"),
])
def test_invalid_tree_settings(kw, message):
    config = SessionConfig(**{"target": "tiny-llama", "drafter": "early-exit", "drafter_options": {"exit_layer": 2},
                              "tree": "2,2", **kw})
    with pytest.raises(DraftScopeError, match=message):
        Session.from_config(config, prompt="hello")
