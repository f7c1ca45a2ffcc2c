"""DraftAttention: pooling, block selection and masked attention against brute-force loops; the registered attention
function on the tiny llama; the three-panel figure."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.attention.draft_attention import (
    ATTN_NAME,
    DraftAttentionMap,
    draft_attention,
    draft_attention_map,
    draft_attention_mode,
    flop_sparsity_of,
    pool_blocks,
    relative_error,
    select_blocks,
)
from core.errors import DraftScopeError
from visualizers.draft_attention import draft_attention_figure

PROMPT = "The quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill. " * 6


def _qkv(*shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=gen, dtype=torch.float64) for _ in range(3))


# ------------------------------------------------------------------------------------------------ brute force
def _blocks_1d(n, block):
    return [list(range(s, min(s + block, n))) for s in range(0, n, block)]


def _tiles(grid, tile):
    nf, nh, nw = grid
    bf, bh, bw = tile
    tiles = []
    for f0 in range(0, nf, bf):
        for y0 in range(0, nh, bh):
            for x0 in range(0, nw, bw):
                tiles.append([(f * nh + y) * nw + x for f in range(f0, min(f0 + bf, nf))
                              for y in range(y0, min(y0 + bh, nh)) for x in range(x0, min(x0 + bw, nw))])
    return tiles


def _brute_pool(x, groups):
    out = torch.zeros(*x.shape[:2], len(groups), x.shape[-1], dtype=x.dtype)
    for b in range(x.shape[0]):
        for h in range(x.shape[1]):
            for i, tokens in enumerate(groups):
                out[b, h, i] = sum(x[b, h, t] for t in tokens) / len(tokens)
    return out


def _brute_keep(q, k, groups, sparsity, causal):
    """Per (b, h): draft map by loops, the top ceil((1 − r)·N) allowed pairs (ties: lower flat index), + diagonal."""
    qp, kp = _brute_pool(q, groups), _brute_pool(k, groups)
    nb, scale = len(groups), 1 / math.sqrt(q.shape[-1])
    keep = torch.zeros(q.shape[0], q.shape[1], nb, nb, dtype=torch.bool)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            probs = {}
            for i in range(nb):
                cols = [j for j in range(nb) if not causal or j <= i]
                logits = [float(qp[b, h, i] @ kp[b, h, j]) * scale for j in cols]
                z = sum(math.exp(v - max(logits)) for v in logits)
                probs.update({(i, j): math.exp(v - max(logits)) / z for j, v in zip(cols, logits)})
            ranked = sorted(probs, key=lambda ij: (-probs[ij], ij[0] * nb + ij[1]))
            for i, j in ranked[:math.ceil((1 - sparsity) * len(probs) - 1e-9)]:
                keep[b, h, i, j] = True
            for i in range(nb) if causal else ():
                keep[b, h, i, i] = True
    return keep


def _brute_attention(q, k, v, keep, groups, causal):
    block_of = {t: i for i, tokens in enumerate(groups) for t in tokens}
    out = torch.zeros_like(q)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            for i in range(q.shape[2]):
                cols = [j for j in range(k.shape[2])
                        if (not causal or j <= i) and keep[b, h, block_of[i], block_of[j]]]
                w = torch.softmax(torch.stack([q[b, h, i] @ k[b, h, j] for j in cols]) / math.sqrt(q.shape[-1]), 0)
                out[b, h, i] = sum(wj * v[b, h, j] for wj, j in zip(w, cols))
    return out


# ------------------------------------------------------------------------------------------------ tensors
def test_pool_1d_partial_last_block():
    x, _, _ = _qkv(2, 3, 10, 4)
    pooled, blk = pool_blocks(x, 4)
    assert blk.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    torch.testing.assert_close(pooled, _brute_pool(x, _blocks_1d(10, 4)))


def test_pool_grid_tiles():
    x, _, _ = _qkv(1, 2, 32, 3)
    pooled, blk = pool_blocks(x, (1, 2, 2), grid=(2, 4, 4))
    tiles = _tiles((2, 4, 4), (1, 2, 2))
    assert pooled.shape == (1, 2, 8, 3)
    assert all(blk[t].item() == i for i, tokens in enumerate(tiles) for t in tokens)
    torch.testing.assert_close(pooled, _brute_pool(x, tiles))
    pooled_edge, _ = pool_blocks(x[..., :24, :], (2, 2, 3), grid=(2, 3, 4))  # partial tiles on every axis
    torch.testing.assert_close(pooled_edge, _brute_pool(x[..., :24, :], _tiles((2, 3, 4), (2, 2, 3))))


def test_r0_equals_full_attention_1d_and_grid():
    q, k, v = (t.float() for t in _qkv(2, 3, 37, 8))
    out, info = draft_attention(q, k, v, 0.0, 8)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5, rtol=0)
    assert info.flop_sparsity == 0.0 and info.keep.sum().item() == 2 * 3 * (5 * 6 // 2)  # every causal pair kept
    q, k, v = (t.float() for t in _qkv(1, 2, 32, 8, seed=1))
    out, info = draft_attention(q, k, v, 0.0, (1, 2, 2), grid=(2, 4, 4))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=0)
    assert info.keep.all()


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.75, 0.9])
@pytest.mark.parametrize("seed", [0, 1])
def test_selection_matches_brute_force_1d(sparsity, seed):
    q, k, _ = _qkv(2, 2, 22, 4, seed=seed)  # 6 blocks of 4, the last one partial; 21 causal pairs
    sel = select_blocks(q, k, sparsity, 4)
    assert sel.allowed.tolist() == torch.ones(6, 6, dtype=torch.bool).tril().tolist()
    assert torch.equal(sel.keep, _brute_keep(q, k, _blocks_1d(22, 4), sparsity, causal=True))
    assert not (sel.keep & ~sel.allowed).any() and sel.keep.diagonal(dim1=-2, dim2=-1).all()
    torch.testing.assert_close(sel.pooled.sum(-1), torch.ones(2, 2, 6))


@pytest.mark.parametrize("sparsity", [0.5, 0.8])
def test_selection_matches_brute_force_grid(sparsity):
    q, k, _ = _qkv(1, 2, 32, 4, seed=3)
    sel = select_blocks(q, k, sparsity, (1, 2, 2), grid=(2, 4, 4))
    expected = _brute_keep(q, k, _tiles((2, 4, 4), (1, 2, 2)), sparsity, causal=False)
    assert torch.equal(sel.keep, expected)
    assert sel.keep.sum().item() == 2 * math.ceil((1 - sparsity) * 64)  # non-causal: no diagonal rule


def test_r05_output_equals_brute_force_masked_softmax():
    q, k, v = _qkv(1, 2, 14, 4, seed=2)
    out, info = draft_attention(q, k, v, 0.5, 4)
    expected = _brute_attention(q, k, v, info.keep, _blocks_1d(14, 4), causal=True)
    torch.testing.assert_close(out, expected)
    assert torch.equal(info.keep, _brute_keep(q, k, _blocks_1d(14, 4), 0.5, causal=True))
    assert 0 < info.flop_sparsity < 1


def test_flop_sparsity_hand_computed():
    # n = 8, blocks of 4, causal: 36 dense pairs; the diagonal block pairs hold 10 + 10 of them, (1, 0) holds 16
    blk = torch.arange(8) // 4
    causal = torch.ones(8, 8, dtype=torch.bool).tril()
    keep = torch.tensor([[True, False], [False, True]])
    assert flop_sparsity_of(keep[blk[:, None], blk[None, :]] & causal, causal) == pytest.approx(16 / 36)
    # the same selection from draft_attention: q matches key block 1 only, so (1, 1) outranks (1, 0) and r = 0.5 keeps
    # ceil(0.5·3) = 2 pairs: (0, 0) (probability 1) and (1, 1)
    q = torch.zeros(1, 1, 8, 2)
    q[..., 0] = 3.0
    k = torch.zeros(1, 1, 8, 2)
    k[..., 4:, 0] = 3.0
    _, info = draft_attention(q, k, torch.randn(1, 1, 8, 2), 0.5, 4)
    assert info.keep[0, 0].tolist() == keep.tolist()
    assert info.flop_sparsity == pytest.approx(16 / 36)


def test_relative_error():
    b = torch.tensor([3.0, 4.0])
    assert relative_error(b + torch.tensor([0.0, 0.5]), b) == pytest.approx(0.1)
    assert relative_error(b, b) == 0.0


# ------------------------------------------------------------------------------------------------ tiny model
def _ids(tiny_llama):
    return torch.tensor([tiny_llama.encode(PROMPT)])


def test_mode_r0_matches_sdpa_and_restores(tiny_llama):
    model, ids = tiny_llama.model, _ids(tiny_llama)
    before = model.config._attn_implementation
    with torch.inference_mode():
        ref = model(ids).logits
        with draft_attention_mode(model, 0.0, 16) as state:
            assert model.config._attn_implementation == ATTN_NAME
            out = model(ids).logits
        assert model.config._attn_implementation == before
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
        assert len(state.stats) == model.config.num_hidden_layers
        with pytest.raises(RuntimeError), draft_attention_mode(model, 0.5, 16):
            raise RuntimeError("boom")
        assert model.config._attn_implementation == before


def test_mode_keeps_padding_mask_and_decodes(tiny_llama):
    """Left padding reaches the registered function (the mask interface is registered too); decoding is dense."""
    model, ids = tiny_llama.model, _ids(tiny_llama)[:, :40]
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.inference_mode():
        ref = model(ids, attention_mask=mask, use_cache=True)
        ref_step = model(ids[:, -1:], attention_mask=torch.cat([mask, mask[:, -1:]], 1),
                         past_key_values=ref.past_key_values).logits
        with draft_attention_mode(model, 0.0, 8):
            out = model(ids, attention_mask=mask, use_cache=True)
            step = model(ids[:, -1:], attention_mask=torch.cat([mask, mask[:, -1:]], 1),
                         past_key_values=out.past_key_values).logits
    torch.testing.assert_close(out.logits[:, 3:], ref.logits[:, 3:], atol=1e-4, rtol=0)
    torch.testing.assert_close(step, ref_step, atol=1e-4, rtol=0)


def test_mode_sparse_changes_logits(tiny_llama):
    model, ids = tiny_llama.model, _ids(tiny_llama)
    with torch.inference_mode():
        ref = model(ids).logits
        with draft_attention_mode(model, 0.75, 16) as state:
            out = model(ids).logits
    assert (out - ref).abs().max().item() > 1e-3
    assert all(0 < s.flop_sparsity < 1 for s in state.stats) and 0 < state.mean_flop_sparsity() < 1


def test_draft_attention_map_record(tiny_llama):
    ids = tiny_llama.encode(PROMPT)
    n, nb = len(ids), math.ceil(len(ids) / 16)
    record = draft_attention_map(tiny_llama.model, ids, layer=1, head=3, sparsity=0.75, block=16)
    assert tiny_llama.model.config._attn_implementation == "sdpa"
    assert record.n_tokens == n and (record.layer, record.head, record.block) == (1, 3, 16)
    cells = math.ceil(n / math.ceil(n / 128))
    assert len(record.full_map) == cells and all(len(row) == cells for row in record.full_map)
    assert len(record.pooled_map) == nb and all(len(row) == nb for row in record.pooled_map)
    assert len(record.keep) == nb and all(len(row) == nb for row in record.keep)
    assert record.output_error > 0 and 0 < record.flop_sparsity < 1
    assert 0 < record.model_flop_sparsity < 1 and record.logits_max_abs_diff > 0 and record.kl_last >= 0
    assert 0 <= record.top1_agreement <= 1
    assert all(abs(sum(row) - 1) < 1e-4 for row in record.pooled_map)
    with pytest.raises(DraftScopeError):
        draft_attention_map(tiny_llama.model, ids, layer=9, head=0)


def test_downsampled_full_map(tiny_llama):
    ids = tiny_llama.encode(PROMPT * 2)[:200]
    record = draft_attention_map(tiny_llama.model, ids, layer=0, head=0, sparsity=0.5, block=32)
    assert record.full_map_cell == 2 and len(record.full_map) == 100
    assert sum(map(sum, record.full_map)) == pytest.approx(200 / 4, rel=1e-4)  # rows sum to 1, cells average 2 × 2


# ------------------------------------------------------------------------------------------------ figure
def test_figure(tiny_llama):
    record = draft_attention_map(tiny_llama.model, tiny_llama.encode(PROMPT), layer=0, head=1, sparsity=0.9, block=16)
    fig = draft_attention_figure(record)
    assert [t.meta for t in fig.data] == ["full", "pooled", "selected"]
    assert fig.layout.height and "layer 0" in fig.layout.title.text and "r=0.90" in fig.layout.title.text
    selected = fig.data[2].z
    assert selected[0][1] is None and {c for row in selected for c in row} <= {None, 0, 1}
    fig.to_json()
    empty = draft_attention_figure(None)
    assert not empty.data and empty.layout.annotations and empty.layout.height
    assert isinstance(record, DraftAttentionMap)


def test_one_attention_registry_for_capture_and_draft_attention(tiny_llama):
    """Capture inside a DraftAttention block switches the model to the capture and back; errors restore too."""
    from core.attention.capture import NAME, capture_attention

    model, ids = tiny_llama.model, _ids(tiny_llama)[:, :24]
    with torch.inference_mode():
        with draft_attention_mode(model, 0.0, 8) as state:
            with capture_attention(model, window=2) as captured:
                assert model.config._attn_implementation == NAME
                model(ids)
            assert model.config._attn_implementation == ATTN_NAME
            model(ids)
        with pytest.raises(RuntimeError), capture_attention(model, window=2):
            raise RuntimeError("boom")
    assert sorted(captured.window_probs) == list(range(model.config.num_hidden_layers))
    assert len(state.stats) == model.config.num_hidden_layers  # only the second forward ran draft attention
    assert {m.config._attn_implementation for m in model.modules() if hasattr(m, "config")} == {"sdpa"}
