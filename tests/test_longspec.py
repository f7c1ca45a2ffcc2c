"""The LongSpec drafter: flat memory, what its cross-attention reads, the ring's rollback, anchor-offset positions,
the trainer's tiny run, and refusing checkpoints of other targets and bad options."""

from __future__ import annotations

import json
import random

import pytest
import torch

from core.errors import DraftScopeError
from core.runtime.cached_lm import CachedLM
from core.runtime.models import LoadedModel
from core.specdec import Session, SessionConfig
from core.specdec.drafters import build_drafter, drafter_options, longspec as ls
from core.specdec.drafters.base import DraftContext
from core.specdec.sampling import SamplingConfig
from core.specdec.trees.tree import TokenTree
from core.specdec.verify import build_verifier
from core.train import longspec as trainer
from core.train.corpus import CorpusSettings, build
from tests.helpers import hf_greedy, random_longspec


def _drafter(target, window: int = 8, **options) -> ls.LongSpecDrafter:
    return build_drafter("longspec", target, {"checkpoint": random_longspec(target), "window": window, **options})


PROMPT6 = [1, 4, 2, 3, 1, 4, 2]  # for the 6-token model


def _tokens(n: int, seed: int = 0) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return [int(t) for t in torch.randint(100, 5000, (n,), generator=gen)]


def _round(drafter, target, tokens: list[int], gamma: int = 4):
    """One drafting round as the engine runs it: the target's cache holds every committed token but the last."""
    kv = CachedLM(target.model)
    if len(tokens) > 1:
        kv.forward(tokens[:-1])
    ctx = DraftContext(tokens, gamma, SamplingConfig(temperature=0.0), torch.Generator().manual_seed(0), kv)
    return drafter.propose(ctx)


def _ring_rows(ring: ls.RingCache) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    return {int(p): (ring.k_Hkd[:, s].clone(), ring.v_Hkd[:, s].clone()) for s, p in enumerate(ring.pos_k.tolist())
            if p >= 0}


# ------------------------------------------------------------------------------------------------ memory
def test_the_drafter_cache_is_the_same_size_after_40_and_400_tokens(tiny_llama):
    sizes = []
    for n in (40, 400):
        drafter = _drafter(tiny_llama, window=16)
        tokens = _tokens(n)
        drafter.prefill(tokens)
        draft = _round(drafter, tiny_llama, tokens)
        sizes.append((drafter.memory_bytes, drafter.cache_len, tuple(drafter.ring.k_Hkd.shape)))
        assert draft.info["drafter_cache_bytes"] == drafter.memory_bytes
        assert draft.info["target_cache_read"] == n - 1  # the target's verified positions: all but the last token
    assert sizes[0] == sizes[1]
    shape = ls.NetShape.of(tiny_llama)
    assert sizes[0][0] == 2 * 16 * shape.n_kv_heads * shape.head_dim * 4  # K and V, window × heads × d, fp32
    assert sizes[0][1] == 16


def test_a_session_keeps_the_ring_at_the_window_and_records_its_bytes(tiny_llama):
    drafter = _drafter(tiny_llama, window=8)
    ids = tiny_llama.encode("the cat sat on the mat and the cat sat on the")
    config = SessionConfig(target=tiny_llama.name, drafter="longspec", gamma=3, max_new_tokens=24, temperature=0.0)
    session = Session(tiny_llama, drafter, build_verifier("greedy"), ids, config)
    records = list(session.run())
    out = session.generated_ids
    assert out and out == hf_greedy(tiny_llama, ids, 24)[:len(out)]
    records = [r for r in records if r.draft_info]  # a last round with no room for drafts does not call the drafter
    assert {r.draft_info["drafter_cache_bytes"] for r in records} == {drafter.memory_bytes}
    assert all(r.drafter_cache_len == 8 for r in records)
    starts = [r.draft_info["target_cache_read"] for r in records]
    assert starts[0] == len(ids) - 1 and starts == sorted(starts)


# ------------------------------------------------------------------------------------------------ cross-attention
def test_cross_attention_reads_exactly_the_target_last_layer_cache(tiny_llama):
    model, tokens = tiny_llama.model, _tokens(30, seed=1)
    n = len(tokens) - 1
    seen_input = []
    hook = model.model.layers[-1].register_forward_pre_hook(lambda _m, args, kwargs: seen_input.append(args[0]
                                                            if args else kwargs["hidden_states"]), with_kwargs=True)
    with torch.no_grad():
        model(torch.tensor([tokens[:-1]]))
    hook.remove()
    last = model.model.layers[-1]
    shape = ls.NetShape.of(tiny_llama)
    with torch.no_grad():  # the last layer's keys and values, computed by hand from its input
        h = last.input_layernorm(seen_input[0])
        cos, sin = model.model.rotary_emb(h, position_ids=torch.arange(n)[None])
        k_manual = ls.rope(last.self_attn.k_proj(h).view(1, n, -1, shape.head_dim).transpose(1, 2), cos, sin)
        v_manual = last.self_attn.v_proj(h).view(1, n, -1, shape.head_dim).transpose(1, 2)

    drafter = _drafter(tiny_llama)
    calls = []
    hook = drafter.net.cross_attn.register_forward_hook(lambda _m, args, out: calls.append((args, out)))
    drafter.prefill(tokens)
    draft = _round(drafter, tiny_llama, tokens, gamma=3)
    hook.remove()
    assert len(calls) == len(draft.tokens)  # one query per round step; every one sees the same verified cache
    for (h_in, cos_q, sin_q, k, v, allowed), out in calls:
        assert k.shape[2] == n and bool(allowed.all())
        torch.testing.assert_close(k, k_manual, atol=1e-5, rtol=0)
        torch.testing.assert_close(v, v_manual, atol=1e-5, rtol=0)
        with torch.no_grad():  # the attention by hand: query head h reads KV head h // g
            cross = drafter.net.cross_attn
            q = ls.rope(cross.q_proj(h_in).view(1, 1, -1, shape.head_dim).transpose(1, 2), cos_q, sin_q)
            g = shape.n_heads // shape.n_kv_heads
            heads = []
            for hq in range(shape.n_heads):
                kh, vh = k_manual[0, hq // g], v_manual[0, hq // g]
                w = torch.softmax(q[0, hq] @ kh.T / shape.head_dim ** 0.5, dim=-1)
                heads.append(w @ vh)
            expected = cross.o_proj(torch.cat(heads, dim=-1))[None]
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_without_a_verified_cache_the_cross_attention_gives_zero(tiny_llama):
    drafter = _drafter(tiny_llama)
    calls = []
    hook = drafter.net.cross_attn.register_forward_hook(lambda _m, args, out: calls.append(out))
    drafter.prefill([5])
    draft = _round(drafter, tiny_llama, [5], gamma=2)
    hook.remove()
    assert draft.info["target_cache_read"] == 0 and len(draft.tokens) == 2
    assert all(float(out.abs().max()) == 0.0 for out in calls)
    with pytest.raises(DraftScopeError, match="needs the engine's target_kv"):
        drafter.propose(DraftContext([5, 6], 2, SamplingConfig(), torch.Generator()))


# ------------------------------------------------------------------------------------------------ the ring
@pytest.mark.parametrize("accepted", [0, 1, 2, 4])
def test_ring_rollback_after_a_rejection_equals_recomputing_from_scratch(tiny_llama, accepted):
    window, tokens = 8, _tokens(21, seed=2)  # the ring wraps: 21 tokens through 8 slots
    drafter = _drafter(tiny_llama, window=window)
    drafter.prefill(tokens)
    draft = _round(drafter, tiny_llama, tokens, gamma=4)
    assert len(draft.tokens) == 4 and drafter.ring.length == len(tokens)  # drafts never enter the ring
    wrong = next(t for t in _tokens(10, seed=3) if accepted == 4 or t != draft.tokens[accepted])
    new = tokens + draft.tokens[:accepted] + [wrong]
    drafter.observe(new, accepted)
    again = _round(drafter, tiny_llama, new, gamma=4)

    fresh = _drafter(tiny_llama, window=window)
    fresh.net = drafter.net  # the same weights
    fresh.prefill(new)
    reference = _round(fresh, tiny_llama, new, gamma=4)
    assert again.tokens == reference.tokens
    torch.testing.assert_close(drafter.last_logits_nV, fresh.last_logits_nV, atol=1e-4, rtol=0)
    rows, rows_ref = _ring_rows(drafter.ring), _ring_rows(fresh.ring)
    assert rows.keys() == rows_ref.keys() == set(range(len(new) - window, len(new)))
    for p in rows:
        torch.testing.assert_close(rows[p], rows_ref[p], atol=1e-5, rtol=0)


def test_the_ring_is_refilled_for_another_sequence(tiny_llama):
    drafter = _drafter(tiny_llama, window=8)
    tokens = _tokens(20, seed=4)
    drafter.prefill(tokens)
    _round(drafter, tiny_llama, tokens)
    other = _tokens(15, seed=5)  # a shorter, different sequence without a prefill (a drafter switched in)
    _round(drafter, tiny_llama, other)
    fresh = _drafter(tiny_llama, window=8)
    fresh.net = drafter.net
    fresh.prefill(other)
    _round(fresh, tiny_llama, other)
    torch.testing.assert_close(drafter.last_logits_nV, fresh.last_logits_nV, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------------ trees
def _random_tree(n: int, seed: int) -> TokenTree:
    """n nodes, each under one of the three nodes before it or a root (so some paths run deep)."""
    gen = torch.Generator().manual_seed(seed)
    parents = [-1] + [int(torch.randint(max(-1, i - 3), i, (1,), generator=gen)) for i in range(1, n)]
    return TokenTree(_tokens(n, seed=seed + 100), parents)


def _chain_logits(drafter, tokens: list[int], kv, path_tokens: list[int]) -> list[torch.Tensor]:
    """The chain path's logits after x_{T−1} and after each of ``path_tokens`` drafted as a chain."""
    target_k, target_v, _ = drafter.target_cache(kv, tokens)
    T, round_ = len(tokens), ls._Round(base=len(tokens))
    rows = [drafter._logits(tokens[-1], T - 1, round_, target_k, target_v)]
    return rows + [drafter._extend(round_, tok, T + i, target_k, target_v) for i, tok in enumerate(path_tokens)]


def _masked_reference(drafter, tokens: list[int], kv, tree: TokenTree) -> torch.Tensor:
    """Every node's logits (N, V) from one masked self-attention over the ring and the whole tree's rows (no merge),
    the rows recomputed from scratch at positions T + depth."""
    ring, W, n = drafter.ring, drafter.ring.window, len(tree)
    pos_n = torch.tensor([len(tokens) + d for d in tree.depths()])
    x, cos, sin = drafter._inputs(tree.tokens, pos_n.tolist())
    k, v = drafter.net.own_kv(x, cos, sin)
    key_pos = torch.cat([ring.pos_k, pos_n])[None]
    window = (key_pos >= 0) & (key_pos <= pos_n[:, None]) & (key_pos > pos_n[:, None] - W)
    allowed = window & torch.cat([torch.ones(n, W, dtype=torch.bool), tree.ancestor_matrix()], dim=1)
    target_k, target_v, m = drafter.target_cache(kv, tokens)
    h = drafter.net(x, cos, sin, torch.cat([ring.k_Hkd, k[0]], 1)[None], torch.cat([ring.v_Hkd, v[0]], 1)[None],
                    allowed[None], target_k, target_v, torch.ones(1, n, m, dtype=torch.bool))
    return drafter._head(h)


def _tree_ctx(target, tokens: list[int]) -> DraftContext:
    kv = CachedLM(target.model)
    kv.forward(tokens[:-1])
    return DraftContext(tokens, 4, SamplingConfig(temperature=0.0), torch.Generator().manual_seed(0), kv)


@pytest.mark.parametrize("window, n_ctx, seed", [(4, 11, 0), (16, 30, 1), (8, 40, 2)])
def test_tree_node_logits_equal_the_chain_and_one_masked_attention(tiny_llama, window, n_ctx, seed):
    """Random trees, each depth fed in two expansions: every node's logits (the ring and the tree merged by
    log-sum-exp) equal its root-to-node path drafted as a chain, and one masked attention over the ring and the whole
    tree; window 4 cuts into both parts."""
    tokens, tree = _tokens(n_ctx, seed=seed), _random_tree(12, seed)
    depths = tree.depths()
    assert max(depths) >= 4
    drafter = _drafter(tiny_llama, window=window)
    drafter.prefill(tokens)
    ctx = _tree_ctx(tiny_llama, tokens)
    root = drafter.tree_begin(ctx)
    rows = {}
    for depth in range(max(depths) + 1):
        level = [i for i in range(len(tree)) if depths[i] == depth]
        for nodes in (level[1::2], level[::2]):
            if nodes:
                rows.update(zip(nodes, drafter.tree_expand(tree, nodes)))
    assert drafter.ring.length == n_ctx  # the tree never entered the ring
    with torch.inference_mode():
        torch.testing.assert_close(torch.stack([rows[i] for i in range(len(tree))]),
                                   _masked_reference(drafter, tokens, ctx.target_kv, tree), atol=1e-5, rtol=1e-5)
        for node in range(len(tree)):
            chain = _chain_logits(drafter, tokens, ctx.target_kv, [tree.tokens[i] for i in tree.path(node)])
            torch.testing.assert_close(rows[node], chain[-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(root, chain[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("accepted", [0, 2, 4])
def test_tree_end_moves_the_accepted_path_into_the_ring(tiny_llama, accepted):
    """After a tree round the ring equals a fresh drafter's on the new sequence (the accepted path's fed rows moved
    in; its unfed leaf and the rest of the tree dropped), and the next round drafts the same."""
    window, tokens = 8, _tokens(21, seed=2)
    tree = TokenTree(_tokens(6, seed=9), [-1, -1, 0, 2, 3, 0])  # the path 0 → 2 → 3 → 4
    drafter = _drafter(tiny_llama, window=window)
    drafter.prefill(tokens)
    drafter.tree_begin(_tree_ctx(tiny_llama, tokens))
    for nodes in ([0, 1], [2, 5], [3]):  # the leaf 4 is never fed
        drafter.tree_expand(tree, nodes)
    path = [0, 2, 3, 4][:accepted]
    new = tokens + [tree.tokens[i] for i in path] + [77]
    drafter.tree_end(new, path)
    assert drafter.ring.length == len(tokens) + min(accepted, 3) and drafter._tree is None
    again = _round(drafter, tiny_llama, new, gamma=4)

    fresh = _drafter(tiny_llama, window=window)
    fresh.net = drafter.net
    fresh.prefill(new)
    reference = _round(fresh, tiny_llama, new, gamma=4)
    assert again.tokens == reference.tokens
    torch.testing.assert_close(drafter.last_logits_nV, fresh.last_logits_nV, atol=1e-4, rtol=0)
    rows, rows_ref = _ring_rows(drafter.ring), _ring_rows(fresh.ring)
    assert rows.keys() == rows_ref.keys()
    for p in rows:
        torch.testing.assert_close(rows[p], rows_ref[p], atol=1e-5, rtol=0)


@pytest.mark.parametrize("tree", ["2,2,1", "budget:6"])
@pytest.mark.parametrize("target_name", ["tiny_llama", "vocab6"])
def test_greedy_trees_give_the_target_output(request, target_name, tree):
    """Tree rounds with LongSpec: token-identical to target-only greedy, verified with the hybrid attention (the
    default; the records say so and carry the drafter's constant memory). On the 6-token model nodes are accepted
    (their rows move into the ring), and the masked verification gives the same run."""
    target = request.getfixturevalue(target_name)
    ids = target.encode("the cat sat on the mat and the cat sat on the") if target_name == "tiny_llama" else PROMPT6
    reference = hf_greedy(target, ids, 20)
    runs = {}
    for attention in ("hybrid", "masked") if target_name == "vocab6" else ("hybrid",):
        drafter = _drafter(target, window=8, tree_attention=attention)
        config = SessionConfig(target=target.name, drafter="longspec", tree=tree, gamma=4, max_new_tokens=20,
                               temperature=0.0)
        session = Session(target, drafter, build_verifier("greedy"), ids, config)
        records = list(session.run())
        assert session.generated_ids == reference
        assert {r.draft_info["tree_attention"] for r in records} == {attention}
        drafted = [r for r in records if r.nodes]
        assert drafted and {r.draft_info["drafter_cache_bytes"] for r in drafted} == {drafter.memory_bytes}
        assert all(r.drafter_cache_len <= 8 for r in records) and records[-1].drafter_cache_len == 8
        runs[attention] = (session.stats.accepted, [r.path for r in records])
    if target_name == "vocab6":
        assert runs["hybrid"][0] > 0 and runs["hybrid"] == runs["masked"]


# ------------------------------------------------------------------------------------------------ positions and lag
def test_anchor_offset_positions_have_anchors_then_a_shifted_body():
    assert trainer.anchor_offset_positions(8, 3, 100).tolist() == [0, 1, 2, 103, 104, 105, 106, 107]
    assert trainer.anchor_offset_positions(5, 0, 7).tolist() == [7, 8, 9, 10, 11]
    rng, max_len = random.Random(0), 8192
    sinks, offsets = set(), []
    for _ in range(300):
        n = rng.randint(2, 600)
        pos, sink, offset = trainer.draw_positions(n, max_len, rng)
        sinks.add(sink)
        offsets.append(offset)
        assert pos.shape == (n,) and 0 <= sink <= 4
        assert pos[:sink].tolist() == list(range(min(sink, n)))
        body = pos[sink:]
        assert body.tolist() == list(range(offset + sink, offset + n))
        assert 0 <= offset <= min(30000, max_len - 1000) - n and int(pos.max()) < max_len - 1000
    assert sinks == {0, 1, 2, 3, 4} and max(offsets) > 1000
    pos, sink, offset = trainer.draw_positions(1500, max_len, rng)  # past 1200 tokens: ordinary positions
    assert pos.tolist() == list(range(1500)) and (sink, offset) == (0, 0)
    pos, _, offset = trainer.draw_positions(30, 64, rng)  # a short context: no room for an offset
    assert offset == 0 and int(pos.max()) == 29


def test_lag_and_window_masks():
    cross = trainer.cross_allowed(6, torch.tensor([1, 3]), torch.tensor([6, 4]))
    assert cross[0, 4].tolist() == [True, True, True, True, False, False]  # query 4, lag 1: keys ≤ 3
    assert cross[1, 3].tolist() == [True, False, False, False, False, False]  # lag 3: keys ≤ 0
    assert not cross[:, 0].any() and not cross[1, :, 4:].any()  # nothing before the lag, nothing past the length
    own = trainer.self_allowed(6, 2, torch.tensor([6]))
    assert own[0, 4].tolist() == [False, False, False, True, True, False]  # window 2: itself and one before


def test_the_target_forward_uses_the_drafter_positions(tiny_llama):
    """With no anchors the block is offset-invariant (RoPE sees only distances) — only if the target's KV was made at
    the same shifted positions as the drafter's queries; with anchors the output changes."""
    net = random_longspec(tiny_llama)
    frozen = trainer.Frozen(tiny_llama)
    tokens = _tokens(24, seed=6)
    ids, lengths = trainer.batch_tensors(frozen, [tokens])
    pads = torch.tensor([2])
    with torch.no_grad():
        base = trainer.states(net, frozen, ids, lengths, torch.arange(24)[None], pads, 8)
        shifted = trainer.states(net, frozen, ids, lengths, trainer.anchor_offset_positions(24, 0, 500)[None], pads, 8)
        anchored = trainer.states(net, frozen, ids, lengths, trainer.anchor_offset_positions(24, 2, 500)[None], pads,
                                  8)
    torch.testing.assert_close(shifted, base, atol=2e-4, rtol=1e-4)
    assert float((anchored[0, 2:] - base[0, 2:]).abs().max()) > 1e-3


def test_training_states_match_the_drafter_at_lag_one(tiny_llama):
    """The trainer's teacher-forced block at lag 1 gives the drafter's first logits of a round."""
    net = random_longspec(tiny_llama)
    frozen = trainer.Frozen(tiny_llama)
    tokens = _tokens(20, seed=7)
    ids, lengths = trainer.batch_tensors(frozen, [tokens])
    with torch.no_grad():
        h = trainer.states(net, frozen, ids, lengths, torch.arange(20)[None], torch.tensor([1]), 8)
        logits = trainer.logits_of(net, frozen, h[0, -1:])[0]
    drafter = build_drafter("longspec", tiny_llama, {"checkpoint": net, "window": 8})
    drafter.prefill(tokens)
    _round(drafter, tiny_llama, tokens, gamma=1)
    torch.testing.assert_close(drafter.last_logits_nV[0], logits, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def tiny_corpus(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    build("tiny-llama", CorpusSettings(prompts=8, max_new_tokens=12, batch=4), folder, target=tiny_llama)
    return folder


def test_a_tiny_training_run_writes_a_checkpoint_that_loads_drafts_and_resumes(tiny_llama, tiny_corpus, tmp_path,
                                                                               capsys):
    out, state = tmp_path / "longspec.safetensors", tmp_path / "state"
    argv = ["--target", "tiny-llama", "--corpus", str(tiny_corpus), "--steps", "3", "--batch", "4", "--window", "16",
            "--lr", "3e-3", "--out", str(out), "--state-dir", str(state), "--save-every", "2"]
    assert trainer.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps_done"] == 3 and summary["resumed_from"] == 0 and summary["stopped_by"] == "steps"
    assert summary["history"][-1]["train_loss"] == summary["history"][-1]["train_loss"]  # not NaN
    assert {"top1_lag1", "top1_lag4", "tau_g4"} <= set(summary["after"]) and summary["after"]["tokens"] > 0
    _, meta = ls.load(out, tiny_llama)
    assert meta["steps_done"] == 3 and meta["complete"] is True
    assert meta["final_norm"] is True and meta["window"] == 16 and meta["hidden_size"] == 64
    drafter = build_drafter("longspec", tiny_llama, {"checkpoint": str(out), "window": 16})
    ids = tiny_llama.encode("1 2 3 4 5 6 7 8 9 10 11 12 13")
    config = SessionConfig(target=tiny_llama.name, drafter="longspec", gamma=3, max_new_tokens=12, temperature=0.0)
    session = Session(tiny_llama, drafter, build_verifier("greedy"), ids, config)
    for _ in session.run():
        pass
    out = session.generated_ids
    assert out and out == hf_greedy(tiny_llama, ids, 12)[:len(out)] and session.stats.drafted > 0

    assert trainer.main(argv) == 0  # the same command again: resumes at the end and only writes the checkpoint
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["resumed_from"] == 3 and again["steps_done"] == 3


def test_a_time_bound_stops_and_saves(tiny_llama, tiny_corpus, tmp_path):
    summary = trainer.train("tiny-llama", str(tiny_corpus), steps=50, max_minutes=1e-6, batch=2, window=8,
                            out=str(tmp_path / "t.safetensors"), state_dir=tmp_path / "s", target=tiny_llama)
    assert summary["stopped_by"] == "time" and summary["steps_done"] == 1
    _, meta = ls.load(tmp_path / "t.safetensors", tiny_llama)
    assert meta["complete"] is False and meta["steps_done"] == 1


# ------------------------------------------------------------------------------------------------ refusals
@pytest.fixture(scope="module")
def saved(tiny_llama, tmp_path_factory):
    path = tmp_path_factory.mktemp("ls") / "tiny.safetensors"
    ls.save(path, random_longspec(tiny_llama), tiny_llama, {"trained": False})
    return path


def _narrow_llama(tiny_llama) -> LoadedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=tiny_llama.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
    return LoadedModel(name="narrow-llama", model=model, tokenizer=tiny_llama.tokenizer, source="test")


def test_a_checkpoint_for_another_target_is_refused(tiny_llama, tiny_gemma, saved):
    net, _ = ls.load(saved, tiny_llama)
    assert net.shape == ls.NetShape.of(tiny_llama)
    with pytest.raises(DraftScopeError, match="LongSpec drafter for 'tiny-llama', not for 'tiny-gemma'"):
        build_drafter("longspec", tiny_gemma, {"checkpoint": str(saved)})
    narrow = _narrow_llama(tiny_llama)  # the same tokenizer, another width
    with pytest.raises(DraftScopeError, match=r"not for 'narrow-llama' \(another tokenizer or width"):
        build_drafter("longspec", narrow, {"checkpoint": str(saved)})
    with pytest.raises(DraftScopeError, match="built for another target"):
        build_drafter("longspec", narrow, {"checkpoint": random_longspec(tiny_llama)})
    with pytest.raises(DraftScopeError, match="has sliding-window layers"):
        build_drafter("longspec", tiny_gemma, {"checkpoint": random_longspec(tiny_llama)})
    with pytest.raises(DraftScopeError, match=r"not found.*core\.train\.longspec --target tiny-llama"):
        build_drafter("longspec", tiny_llama, {"checkpoint": str(saved.parent / "none.safetensors")})


@pytest.mark.parametrize("options, message", [
    ({"window": 0}, "window must be a whole number of at least 1"),
    ({"window": -4}, "window must be a whole number of at least 1"),
    ({"window": True}, "window must be a whole number of at least 1"),
    ({"window": 2.5}, "window must be a whole number of at least 1"),
    ({"confidence": 1.5}, "confidence threshold"),
    ({"vocab_trim": 0}, "VocabTrim k"),
    ({"wndow": 8}, "unknown option 'wndow'"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(DraftScopeError, match=message):
        drafter_options("longspec", options)


def test_trainer_refuses_bad_arguments(tiny_corpus, capsys):
    assert trainer.main(["--target", "tiny-llama", "--corpus", str(tiny_corpus), "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err
    assert trainer.main(["--target", "tiny-gemma", "--steps", "1"]) == 2
    assert "sliding-window" in capsys.readouterr().err
    assert trainer.main(["--target", "tiny-llama", "--corpus", "/nonexistent/corpus", "--steps", "1"]) == 2
