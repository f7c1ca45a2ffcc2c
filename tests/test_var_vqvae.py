"""VAR tokenizer: procedural data, multi-scale residual quantisation bookkeeping, tiny training, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.errors import DraftScopeError
from core.train.var_vqvae import main as train_main, train
from core.var.data import CLASS_NAMES, draw, make_dataset, to_uint8
from core.var.vqvae import MultiScaleVQVAE, VQVAEConfig, reconstruction_error

TINY = VQVAEConfig(hidden=16)
TINY_MSE_MAX = 0.4  # 150 tiny steps on the palette images: measured 0.31 (untrained 0.58)


@pytest.fixture(scope="module")
def trained() -> tuple[MultiScaleVQVAE, dict]:
    return train(n_per_class=5, steps=150, batch=16, lr=5e-3, seed=0, config=TINY, n_val_per_class=4, progress=False)


@pytest.fixture(scope="module")
def untrained() -> MultiScaleVQVAE:
    torch.manual_seed(0)
    return MultiScaleVQVAE(TINY).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return make_dataset(2, seed=3)[0]


# ------------------------------------------------------------------------------------------------------------ data
def test_dataset_shapes_and_determinism():
    x, y = make_dataset(3, seed=0)
    assert len(CLASS_NAMES) == 10 and len(set(CLASS_NAMES)) == 10
    assert x.shape == (30, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert y.tolist() == list(range(10)) * 3
    x2, y2 = make_dataset(3, seed=0)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, make_dataset(3, seed=1)[0])
    # a class's first samples do not depend on how many are drawn
    assert torch.equal(make_dataset(1, seed=0)[0], x[:10])
    # to_uint8 undoes the [-1, 1] scaling exactly
    rng = np.random.default_rng([0, 4])
    assert np.array_equal(to_uint8(x[4:5])[0], draw(4, rng))


def test_draw_same_class_seed_equal_and_classes_differ():
    imgs = []
    for c in range(len(CLASS_NAMES)):
        a, b = draw(c, np.random.default_rng(7)), draw(c, np.random.default_rng(7))
        assert a.shape == (32, 32, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b)
        imgs.append(a)
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            assert not np.array_equal(imgs[i], imgs[j]), (CLASS_NAMES[i], CLASS_NAMES[j])
    with pytest.raises(ValueError):
        draw(10, np.random.default_rng(0))


def test_stripes_have_their_orientation():
    """Horizontal stripes change colour along y, vertical ones along x (a structural check of two classes)."""
    x, _ = make_dataset(8, seed=2)
    # count only steps larger than the pixel noise can make (2·3σ in [-1, 1] units)
    dy = ((x[:, :, 1:] - x[:, :, :-1]).abs() > 0.25).float().mean(dim=(1, 2, 3))
    dx = ((x[:, :, :, 1:] - x[:, :, :, :-1]).abs() > 0.25).float().mean(dim=(1, 2, 3))
    h, v = CLASS_NAMES.index("h-stripes"), CLASS_NAMES.index("v-stripes")
    assert (dy[h::10] > 3 * dx[h::10]).all() and (dx[v::10] > 3 * dy[v::10]).all()


# ----------------------------------------------------------------------------------------------- quantisation
def test_residual_bookkeeping(untrained, images):
    m = untrained
    assert m.scales == (1, 2, 3, 4, 6, 8) and m.latent_side == 8 and m.vocab_size == 256 and m.embed_dim == 32
    assert tuple(m.codebook.weight.shape) == (256, 32)
    with torch.no_grad():
        f = m.encode(images)
        assert f.shape == (images.shape[0], 32, 8, 8)
        idx_list, f_hat, loss, info = m.quantize(f)
        assert [tuple(i.shape) for i in idx_list] == [(images.shape[0], s, s) for s in m.scales]
        assert all(i.dtype == torch.long and 0 <= int(i.min()) and int(i.max()) < 256 for i in idx_list)
        assert len(info["contributions"]) == len(m.scales) and float(loss) >= 0
        torch.testing.assert_close(torch.stack(info["contributions"]).sum(0), f_hat, atol=1e-5, rtol=0)
        torch.testing.assert_close(m.indices_to_latent(m.encode_indices(images)), f_hat, atol=1e-5, rtol=0)
        # indices_to_latent is a loop of add_scale from zeros, and each add_scale adds one contribution
        acc = torch.zeros_like(f)
        for k, idx in enumerate(idx_list):
            acc = m.add_scale(acc, idx, k)
            torch.testing.assert_close(acc, torch.stack(info["contributions"][:k + 1]).sum(0), atol=1e-5, rtol=0)
        assert m.decode_indices(idx_list).shape == images.shape
        assert m.decode_indices(idx_list).abs().max() <= 1.0
    # with gradients: same value (straight-through), and the encoder receives a gradient
    f = m.encode(images)
    _, f_hat_st, loss, _ = m.quantize(f)
    torch.testing.assert_close(f_hat_st.detach(), f_hat, atol=1e-5, rtol=0)
    (m.decode_latent(f_hat_st).square().mean() + loss).backward()
    assert m.encoder[0].weight.grad is not None and m.codebook.weight.grad is not None
    m.zero_grad(set_to_none=True)


def test_next_scale_input_and_teacher_inputs(untrained, images):
    m = untrained
    b = images.shape[0]
    with torch.no_grad():
        idx_list = m.encode_indices(images)
        f_hat = torch.zeros(b, 32, 8, 8)
        chunks = []
        for k in range(len(m.scales) - 1):
            f_hat = m.add_scale(f_hat, idx_list[k], k)
            nxt = m.next_scale_input(f_hat, k)
            assert nxt.shape == (b, 32, m.scales[k + 1], m.scales[k + 1])
            chunks.append(nxt.flatten(2).transpose(1, 2))
        x = m.teacher_inputs(idx_list)
        assert x.shape == (b, sum(s * s for s in m.scales[1:]), 32)
        torch.testing.assert_close(x, torch.cat(chunks, 1))
        # the last chunk is f̂ after all but the last scale, at full latent resolution
        torch.testing.assert_close(x[:, -64:], m.indices_to_latent(idx_list[:-1]).flatten(2).transpose(1, 2))
        # teacher_inputs only needs the first K-1 maps
        torch.testing.assert_close(m.teacher_inputs(idx_list[:-1]), x)
    with pytest.raises(ValueError):
        m.next_scale_input(f_hat, len(m.scales) - 1)


# ------------------------------------------------------------------------------------------------- training
def test_tiny_training_lowers_error(trained, untrained):
    model, meta = trained
    x_val, _ = make_dataset(4, seed=10_000)
    err = reconstruction_error(model, x_val)
    assert err == pytest.approx(meta["mse"], rel=1e-4)
    assert err < reconstruction_error(untrained, x_val)
    assert err < meta["untrained_mse"] and err < TINY_MSE_MAX, meta
    assert 0 < meta["codebook_usage"] <= 1 and meta["psnr"] > 0
    assert not model.training


def test_prefix_reconstruction_improves(trained, images):
    model, meta = trained
    with torch.no_grad():
        f = model.encode(images)
        idx_list = model.encode_indices(images)
        errs = [float((model.indices_to_latent(idx_list[:k + 1]) - f).square().mean()) for k in range(6)]
    assert errs[-1] <= errs[0], errs
    assert meta["prefix_mse"][-1] < meta["prefix_mse"][0]


def test_save_load_round_trip(trained, images, tmp_path):
    model, meta = trained
    path = tmp_path / "vqvae.safetensors"
    model.save(path, meta)
    loaded, meta2 = MultiScaleVQVAE.load(path)
    assert meta2["config"]["scales"] == [1, 2, 3, 4, 6, 8] and meta2["steps"] == 150
    assert loaded.config == model.config and not loaded.training
    with torch.no_grad():
        for a, b in zip(model.encode_indices(images), loaded.encode_indices(images)):
            assert torch.equal(a, b)
        torch.testing.assert_close(loaded.decode_indices(model.encode_indices(images)),
                                   model.decode_indices(model.encode_indices(images)))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    with pytest.raises(DraftScopeError):
        MultiScaleVQVAE.load(tmp_path / "missing.safetensors")


def test_checkpoint_format_and_errors(untrained, tmp_path):
    """One header key ("draftscope": kind + meta), fp16 floats, other dtypes kept; clear errors for a missing file
    (naming the training command), a file of another kind and an unreadable one; no temporary file left behind."""
    from safetensors import safe_open

    from core.runtime import checkpoint

    path = checkpoint.save(tmp_path / "c.safetensors", {"w": torch.randn(2, 3), "n": torch.tensor(7)}, {"a": 1}, "var")
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["draftscope"]) == {"kind": "var", "meta": {"a": 1}} and len(f.metadata()) == 1
    state, meta = checkpoint.load(path, "var", "python -m core.train.var")
    assert meta == {"a": 1} and state["w"].dtype == torch.float16 and state["n"].dtype == torch.int64
    assert checkpoint.read_meta(path, "var", "x") == {"a": 1}
    with pytest.raises(DraftScopeError, match=r"not found.*python -m core\.train\.var_vqvae"):
        MultiScaleVQVAE.load(tmp_path / "missing.safetensors")
    with pytest.raises(DraftScopeError, match="not a DraftScope VAR tokenizer"):
        MultiScaleVQVAE.load(path)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DraftScopeError, match="cannot read"):
        MultiScaleVQVAE.load(tmp_path / "bad.safetensors")
    untrained.save(tmp_path / "v.safetensors", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors", "c.safetensors", "v.safetensors"]


def test_cli(tmp_path, capsys):
    out = tmp_path / "v.safetensors"
    assert train_main(["--n-per-class", "1", "--steps", "2", "--batch", "4", "--hidden", "8", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert out.is_file() and {"mse", "psnr", "codebook_usage", "seconds"} <= report.keys()
    assert train_main(["--steps", "0", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error:")
