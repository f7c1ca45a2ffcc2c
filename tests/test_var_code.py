"""CoDe splits, the classifier and the VAR bundle, on tiny random checkpoints (fast) — same seed, exact equalities."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from core.errors import DraftScopeError
from core.var.bundle import load_bundle
from core.var.classifier import ImageClassifier, train_classifier
from core.var.code import code_generate, compare_splits, psnr
from tests.helpers import tiny_bundle, write_tiny_checkpoints


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("var"))


def _plain(model, vq, class_id, seed, n):
    gen = torch.Generator().manual_seed(seed)
    return model.generate(vq, torch.full((n,), class_id), generator=gen)


def test_split_k_equals_large_only_and_split_0_equals_small_only(bundle):
    K = bundle.num_scales
    for seed in (0, 7):
        large = code_generate(bundle.large, bundle.small, bundle.vq, 3, seed, K, n=2)
        small = code_generate(bundle.large, bundle.small, bundle.vq, 3, seed, 0, n=2)
        for run, model in ((large, bundle.large), (small, bundle.small)):
            ref = _plain(model, bundle.vq, 3, seed, 2)
            assert all(np.array_equal(a, b.numpy()) for a, b in zip(run.indices, ref))
        assert [s.model for s in large.scales] == ["large"] * K
        assert [s.model for s in small.scales] == ["small"] * K
        assert large.tokens_small == 0 and small.tokens_large == 0
        assert large.label == "large-only" and small.label == "small-only"


def test_split_hands_over_at_n_and_keeps_the_drafter_scales(bundle):
    K = bundle.num_scales
    large = code_generate(bundle.large, bundle.small, bundle.vq, 5, 11, K, n=2)
    for split in range(1, K):
        run = code_generate(bundle.large, bundle.small, bundle.vq, 5, 11, split, n=2)
        assert [s.model for s in run.scales] == ["large"] * split + ["small"] * (K - split)
        assert [s.index for s in run.scales] == list(range(K))
        # the drafter's scales are the large-only run's (same seed, same draws), the rest is the refiner's
        assert all(np.array_equal(run.indices[k], large.indices[k]) for k in range(split))
        assert run.tokens_large == 2 * sum(s * s for s in bundle.vq.scales[:split])
        assert run.tokens_small == 2 * sum(s * s for s in bundle.vq.scales[split:])
        assert run.prefill_ms > 0 and run.total_ms >= sum(s.ms for s in run.scales)
        assert len(run.canvases) == K and run.canvases[-1].shape == (2, 32, 32, 3)
        assert np.array_equal(run.canvases[-1], run.images)


def test_refiner_continuation_equals_a_manual_handover(bundle):
    """The refiner's part equals prefilling the drafter's maps and sampling on with the same generator."""
    N = 3
    run = code_generate(bundle.large, bundle.small, bundle.vq, 1, 4, N, n=1)
    gen = torch.Generator().manual_seed(4)
    cls = torch.tensor([1])
    draft = bundle.large.generate(bundle.vq, cls, generator=gen, stop_scale=N)
    rest = bundle.small.generate(bundle.vq, cls, generator=gen, start_scale=N, prefix_idx=draft, cache=False)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(run.indices, rest))


def test_step_mode_replays_the_same_prefix(bundle):
    full = code_generate(bundle.large, bundle.small, bundle.vq, 2, 9, 2, n=1)
    for stop in range(1, bundle.num_scales + 1):
        part = code_generate(bundle.large, bundle.small, bundle.vq, 2, 9, 2, n=1, stop_scale=stop)
        assert len(part.scales) == stop and len(part.indices) == stop
        assert all(np.array_equal(a, b) for a, b in zip(part.indices, full.indices[:stop]))
        assert np.array_equal(part.images, full.canvases[stop - 1])


def test_compare_splits_measures_against_large_only(bundle):
    runs = compare_splits(bundle.large, bundle.small, bundle.vq, 0, 3, [0, 3], n=2, classifier=bundle.classifier)
    assert [r.label for r in runs] == ["large-only", "small-only", "CoDe N=3"]
    assert runs[0].psnr_vs_large is None
    for run in runs[1:]:
        assert run.psnr_vs_large == pytest.approx(psnr(run.images, runs[0].images))
    assert all(r.class_accuracy is not None and 0 <= r.class_accuracy <= 1 for r in runs)
    # memory: the weights that ran + the largest KV cache (CPU); large-only holds the large model's weights
    w_large = sum(p.numel() * p.element_size() for p in bundle.large.parameters())
    assert runs[0].peak_memory_bytes == w_large + runs[0].kv_bytes
    assert runs[1].peak_memory_bytes < runs[0].peak_memory_bytes


def test_psnr():
    a = np.zeros((1, 4, 4, 3), np.uint8)
    b = a.copy()
    assert math.isinf(psnr(a, b))
    b[0, 0, 0, 0] = 255
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / (255 ** 2 / 48)))


@pytest.mark.parametrize("kwargs, message", [({"split": 7}, "split"), ({"split": -1}, "split"),
                                              ({"class_id": 10}, "class"), ({"n": 0}, "n must"),
                                              ({"stop_scale": 0}, "stop_scale")])
def test_bad_arguments_raise_clear_errors(bundle, kwargs, message):
    args = {"class_id": 0, "seed": 0, "split": 2, **kwargs}
    with pytest.raises(DraftScopeError, match=message):
        code_generate(bundle.large, bundle.small, bundle.vq, **args)


def test_to_json_has_the_cli_fields(bundle):
    run = code_generate(bundle.large, bundle.small, bundle.vq, 0, 0, 2, n=1)
    out = json.loads(json.dumps(run.to_json()))
    assert {"scales", "total_ms", "peak_memory_bytes", "kv_bytes", "psnr_vs_large", "class_accuracy"} <= set(out)
    assert out["scales"][0] == {"index": 0, "side": 1, "model": "large", "ms": out["scales"][0]["ms"], "tokens": 1}


def test_missing_checkpoints_name_the_training_command(tmp_path):
    with pytest.raises(DraftScopeError, match=r"python -m core\.train\.var"):
        load_bundle(tmp_path / "nothing")


def test_bundle_rejects_a_mismatched_tokenizer(tmp_path):
    from core.var.model import VAR, VARConfig

    write_tiny_checkpoints(tmp_path)
    VAR(VARConfig(32, 8, (1, 2, 3, 4, 6, 8), depth=1, width=16, heads=2)).save(tmp_path / "var-small.safetensors")
    with pytest.raises(DraftScopeError, match="does not match"):
        load_bundle(tmp_path, device="cpu")


def test_classifier_learns_the_procedural_classes_and_round_trips(tmp_path):
    from core.var.data import make_dataset

    x, y = make_dataset(12, seed=1)
    x_val, y_val = make_dataset(6, seed=2)
    untrained = ImageClassifier().eval()
    model = train_classifier(x, y, steps=60, batch=64)
    acc = model.accuracy(x_val, y_val)
    assert acc >= untrained.accuracy(x_val, y_val) + 0.15  # 60 steps: well above chance (10 %), not converged
    path = model.save(tmp_path / "c.safetensors", {"acc": acc})
    loaded, meta = ImageClassifier.load(path)
    assert meta["acc"] == acc and torch.equal(loaded.predict(x_val), model.predict(x_val))
    with pytest.raises(DraftScopeError, match="not a DraftScope"):
        from core.var.model import VAR, VARConfig

        VAR(VARConfig(16, 8, (1, 2), depth=1, width=8, heads=2)).save(tmp_path / "v.safetensors")
        ImageClassifier.load(tmp_path / "v.safetensors")
