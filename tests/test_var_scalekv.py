"""ScaleKV and DraftAttention on the VAR's scale grids, on tiny random checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.errors import DraftScopeError
from core.var.draft_attention import draft_attention_generate
from core.var.scalekv import ScaleKVPress, attention_selectivity, kv_generate, scale_budgets, window_positions
from tests.helpers import tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("var"))


@pytest.fixture(scope="module")
def report(bundle):
    return attention_selectivity(bundle.large, bundle.vq, [0, 1, 2], [0])


def test_asi_is_the_product_of_share_and_concentration(bundle, report):
    depth, K = len(bundle.large.blocks), bundle.num_scales
    assert report.asi.shape == (depth, K) and np.isnan(report.asi[:, 0]).all()
    assert np.allclose(report.asi[:, 1:], report.current_share[:, 1:] * report.concentration[:, 1:])
    assert ((report.current_share[:, 1:] > 0) & (report.current_share[:, 1:] <= 1 + 1e-9)).all()
    # scale 1 reads one history token: its top-k mass is the whole history
    assert np.allclose(report.concentration[:, 1], 1.0)
    for k in range(1, K):  # the lowest-ASI layers are the drafters
        drafters = report.drafters(k)
        assert drafters and len(drafters) < depth
        assert max(report.asi[drafters, k]) <= min(report.asi[[i for i in range(depth) if i not in drafters], k])


def test_asi_matches_a_hand_computation(bundle):
    model, vq = bundle.small, bundle.vq
    rep = attention_selectivity(model, vq, [4], [3], topk_frac=0.5)
    gen = torch.Generator().manual_seed(3)
    model.generate(vq, torch.tensor([4]), generator=gen, attention_scores=True)
    k, layer = 3, 1
    p = model.last_attention[k][layer].double()  # (2, H, 16, 14 + 16)
    off = model.offsets
    share = p[..., off[k]:].sum(-1).mean().item()
    hist = p[..., :off[k]]
    conc = (hist.topk(math.ceil(0.5 * off[k]), dim=-1).values.sum(-1) / hist.sum(-1)).mean().item()
    assert rep.asi[layer, k] == pytest.approx(share * conc, rel=1e-9)
    model.clear_cache()


@pytest.mark.parametrize("beta", [0.1, 0.2, 0.4, 0.75])
def test_budgets_keep_the_uniform_total_and_favour_drafters(bundle, report, beta):
    scales, depth = bundle.vq.scales, len(bundle.large.blocks)
    plan = scale_budgets(scales, depth, beta, report.labels)
    uni = scale_budgets(scales, depth, beta, policy="uniform")
    for j in range(1, len(scales)):
        assert plan.total(j) == uni.total(j) == depth * plan.uniform[j]  # equal memory at every scale
        assert plan.uniform[j] == min(plan.history[j], max(1, round(beta * plan.history[j])))
        for layer in range(depth):  # nobody keeps more than it holds
            cap = plan.history[j] if j == 1 else plan.budgets[layer][j - 1] + scales[j - 1] ** 2
            assert 1 <= plan.budgets[layer][j] <= min(cap, plan.history[j])
    # refiners aim at ρ_j·U_j with ρ decaying over the scales; they get at least that unless they hold less
    assert all(a >= b for a, b in zip(plan.rho[1:], plan.rho[2:])) and plan.rho[-1] == pytest.approx(0.5)
    for j in range(1, len(scales)):
        for layer in range(depth):
            cap = plan.history[j] if j == 1 else plan.budgets[layer][j - 1] + scales[j - 1] ** 2
            if report.labels[layer][j] == "refiner" and report.drafters(j):
                assert plan.budgets[layer][j] >= min(cap, max(1, int(plan.rho[j] * plan.uniform[j])))


def test_full_budget_equals_the_full_cache(bundle, report):
    for seed in (0, 5):
        full = kv_generate(bundle.large, bundle.vq, 2, seed, "full", n=2)
        same = kv_generate(bundle.large, bundle.vq, 2, seed, "scalekv", 1.0, report, n=2)
        assert np.array_equal(full.images, same.images)
        assert same.kv_bytes == full.kv_bytes


def test_pruned_caches_have_the_planned_sizes_and_keep_the_window(bundle, report):
    model, vq = bundle.large, bundle.vq
    plan = scale_budgets(vq.scales, len(model.blocks), 0.2, report.labels)
    press = ScaleKVPress(model, plan)
    sizes = {}

    def hook(cache, k):
        out = press(cache, k)
        sizes[k] = [kv[0].shape[2] for kv in out]
        return out

    model.generate(vq, torch.tensor([3]), generator=torch.Generator().manual_seed(1), attention_scores=True,
                   kv_hook=hook)
    K = len(vq.scales)
    for k in range(K - 1):
        assert sizes[k] == [plan.budgets[layer][k + 1] for layer in range(len(model.blocks))]
        win = window_positions(vq.scales[k])
        off = model.offsets
        for layer, kept in enumerate(press.kept[k]):
            kept = kept[0]  # (H, budget) absolute positions, sorted
            assert (kept.diff(dim=-1) > 0).all()
            if len(win) <= plan.budgets[layer][k + 1]:
                assert set((off[k] + torch.tensor(win)).tolist()) <= set(kept[0].tolist())
    model.clear_cache()


def test_compression_saves_memory_and_the_uniform_baseline_matches_it(bundle, report):
    full = kv_generate(bundle.large, bundle.vq, 1, 2, "full")
    for beta in (0.1, 0.4):
        sk = kv_generate(bundle.large, bundle.vq, 1, 2, "scalekv", beta, report)
        uni = kv_generate(bundle.large, bundle.vq, 1, 2, "uniform", beta, report)
        assert sk.kv_bytes == uni.kv_bytes < full.kv_bytes
        assert sk.kv_bytes / full.kv_bytes < beta + 0.1
        assert sk.kv_peak_bytes < full.kv_peak_bytes


def test_window_positions_are_centroids_of_a_4x4_partition():
    assert window_positions(3) == list(range(9))
    assert window_positions(4) == list(range(16))
    assert window_positions(8) == [y * 8 + x for y in (1, 3, 5, 7) for x in (1, 3, 5, 7)]


@pytest.mark.parametrize("kwargs, message", [({"beta": 0.0}, "budget"), ({"beta": 1.5}, "budget"),
                                              ({"policy": "magic"}, "policy")])
def test_budget_errors(kwargs, message):
    args = {"scales": (1, 2, 3), "depth": 2, "beta": 0.5, "policy": "uniform", **kwargs}
    with pytest.raises(DraftScopeError, match=message):
        scale_budgets(**args)


def test_scalekv_needs_a_report(bundle):
    with pytest.raises(DraftScopeError, match="calibration"):
        kv_generate(bundle.large, bundle.vq, 0, 0, "scalekv", 0.5)


# ------------------------------------------------------------------------------------------ DraftAttention
def test_draft_attention_at_zero_sparsity_is_dense(bundle):
    run = draft_attention_generate(bundle.large, bundle.vq, 3, 1, 0.0, n=2)
    assert run.flop_sparsity == 0 and run.mean_rel_error < 1e-5
    assert math.isinf(run.psnr_vs_dense) and np.array_equal(run.images, run.dense_images)


def test_draft_attention_selects_tiles_on_the_largest_grids(bundle):
    depth = len(bundle.large.blocks)
    run = draft_attention_generate(bundle.large, bundle.vq, 3, 1, 0.75, tile=2, min_side=6, n=1, map_layer=1)
    assert sorted({(s.scale, s.layer) for s in run.stats}) == [(k, layer) for k in (4, 5) for layer in range(depth)]
    assert [(m.scale, m.side, m.layer) for m in run.maps] == [(4, 6, 1), (5, 8, 1)]
    for m in run.maps:
        nb = (m.side // 2) ** 2
        assert m.pooled.shape == m.keep.shape == (nb, nb)
        assert m.keep.sum() == math.ceil(0.25 * nb * nb)
        assert np.allclose(m.pooled.sum(-1), 1.0, atol=1e-5)
        assert m.attention.shape == (m.side ** 2, m.side ** 2)
    # coarser-scale keys stay dense: the skipped share is below the share of current-scale pairs
    for s in run.stats:
        side = bundle.vq.scales[s.scale]
        total = bundle.large.offsets[s.scale + 1]
        assert 0 < s.flop_sparsity <= 0.75 * side * side / total + 1e-9
        assert s.rel_error > 0
    for block in bundle.large.blocks:
        assert block.attn.override is None  # restored


def test_draft_attention_errors(bundle):
    with pytest.raises(DraftScopeError, match="sparsity"):
        draft_attention_generate(bundle.large, bundle.vq, 0, 0, 1.0)
    with pytest.raises(DraftScopeError, match="side"):
        draft_attention_generate(bundle.large, bundle.vq, 0, 0, 0.5, min_side=20)
