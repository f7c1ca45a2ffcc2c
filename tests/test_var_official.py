"""The official-VAR loader, offline: random models in the official state-dict layout at reduced width, saved under the
official file names, loaded by ``load_official`` and run through CoDe, ScaleKV, DraftAttention and the CLI.

The expected layouts below are written out from the official code (FoundationVision/VAR ``models/``), so a drift
of our modules' names or shapes fails here. (The numeric comparison with the official code itself is a one-off:
the README's VAR section gives its numbers.)"""

from __future__ import annotations

import json

import pytest
import torch

from core.cli import main
from core.errors import DraftScopeError
from core.var import official_load
from core.var.code import code_generate
from core.var.official import OfficialVAR, OfficialVARConfig, sample_like_var
from core.var.official_load import VQ_FILE, load_official, var_file
from core.var.official_vq import PATCH_NUMS, OfficialVQConfig, OfficialVQVAE, phi_index
from tests.helpers import OFFICIAL_C as C, OFFICIAL_DEPTHS, OFFICIAL_V as V, write_official

DRAFTER, REFINER = OFFICIAL_DEPTHS  # depths of the reduced drafter and refiner


def var_layout(depth: int, D: int, H: int, V: int, C: int, L: int, K: int, classes: int = 1000) -> dict:
    """The official VAR (shared_aln=False, attn_l2_norm=True) state dict: key → shape."""
    out = {"word_embed.weight": (D, C), "word_embed.bias": (D,), "class_emb.weight": (classes + 1, D),
           "pos_start": (1, 1, D), "pos_1LC": (1, L, D), "lvl_embed.weight": (K, D), "lvl_1L": (1, L),
           "attn_bias_for_masking": (1, 1, L, L), "head_nm.ada_lin.1.weight": (2 * D, D),
           "head_nm.ada_lin.1.bias": (2 * D,), "head.weight": (V, D), "head.bias": (V,)}
    for i in range(depth):
        b = f"blocks.{i}."
        out.update({b + "attn.scale_mul_1H11": (1, H, 1, 1), b + "attn.q_bias": (D,), b + "attn.v_bias": (D,),
                    b + "attn.zero_k_bias": (D,), b + "attn.mat_qkv.weight": (3 * D, D), b + "attn.proj.weight": (D, D),
                    b + "attn.proj.bias": (D,), b + "ffn.fc1.weight": (4 * D, D), b + "ffn.fc1.bias": (4 * D,),
                    b + "ffn.fc2.weight": (D, 4 * D), b + "ffn.fc2.bias": (D,), b + "ada_lin.1.weight": (6 * D, D),
                    b + "ada_lin.1.bias": (6 * D,)})
    return out


def _res(prefix: str, c_in: int, c_out: int) -> dict:
    out = {prefix + "norm1.weight": (c_in,), prefix + "norm1.bias": (c_in,),
           prefix + "conv1.weight": (c_out, c_in, 3, 3), prefix + "conv1.bias": (c_out,),
           prefix + "norm2.weight": (c_out,), prefix + "norm2.bias": (c_out,),
           prefix + "conv2.weight": (c_out, c_out, 3, 3), prefix + "conv2.bias": (c_out,)}
    if c_in != c_out:
        out.update({prefix + "nin_shortcut.weight": (c_out, c_in, 1, 1), prefix + "nin_shortcut.bias": (c_out,)})
    return out


def _attn(prefix: str, c: int) -> dict:
    return {prefix + "norm.weight": (c,), prefix + "norm.bias": (c,), prefix + "qkv.weight": (3 * c, c, 1, 1),
            prefix + "qkv.bias": (3 * c,), prefix + "proj_out.weight": (c, c, 1, 1), prefix + "proj_out.bias": (c,)}


def vq_layout(ch: int, mult: tuple, V: int, C: int, K: int, blocks: int = 2) -> dict:
    """The official VQVAE (using_sa, using_mid_sa, share_quant_resi=4) state dict: key → shape."""
    top, last = ch * mult[-1], len(mult) - 1
    out = {"encoder.conv_in.weight": (ch, 3, 3, 3), "encoder.conv_in.bias": (ch,),
           "encoder.norm_out.weight": (top,), "encoder.norm_out.bias": (top,),
           "encoder.conv_out.weight": (C, top, 3, 3), "encoder.conv_out.bias": (C,),
           "decoder.conv_in.weight": (top, C, 3, 3), "decoder.conv_in.bias": (top,),
           "decoder.norm_out.weight": (ch,), "decoder.norm_out.bias": (ch,), "decoder.conv_out.weight": (3, ch, 3, 3),
           "decoder.conv_out.bias": (3,), "quantize.embedding.weight": (V, C), "quantize.ema_vocab_hit_SV": (K, V),
           "quant_conv.weight": (C, C, 3, 3), "quant_conv.bias": (C,), "post_quant_conv.weight": (C, C, 3, 3),
           "post_quant_conv.bias": (C,)}
    for i in range(4):
        out.update({f"quantize.quant_resi.qresi_ls.{i}.weight": (C, C, 3, 3),
                    f"quantize.quant_resi.qresi_ls.{i}.bias": (C,)})
    for part in ("encoder", "decoder"):
        out.update(_res(f"{part}.mid.block_1.", top, top) | _attn(f"{part}.mid.attn_1.", top)
                   | _res(f"{part}.mid.block_2.", top, top))
    c_in = ch
    for i, m in enumerate(mult):  # encoder: level i from ch·(1, *mult)[i] to ch·mult[i]
        for j in range(blocks):
            out.update(_res(f"encoder.down.{i}.block.{j}.", c_in, ch * m))
            c_in = ch * m
            if i == last:
                out.update(_attn(f"encoder.down.{i}.attn.{j}.", c_in))
        if i != last:
            out.update({f"encoder.down.{i}.downsample.conv.weight": (c_in, c_in, 3, 3),
                        f"encoder.down.{i}.downsample.conv.bias": (c_in,)})
    c_in = top
    for i in reversed(range(len(mult))):  # decoder: up[i], run from the last level down, one block more
        for j in range(blocks + 1):
            out.update(_res(f"decoder.up.{i}.block.{j}.", c_in, ch * mult[i]))
            c_in = ch * mult[i]
            if i == last:
                out.update(_attn(f"decoder.up.{i}.attn.{j}.", c_in))
        if i != 0:
            out.update({f"decoder.up.{i}.upsample.conv.weight": (c_in, c_in, 3, 3),
                        f"decoder.up.{i}.upsample.conv.bias": (c_in,)})
    return out


def _shapes(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_official(tmp_path_factory.mktemp("var-official"))


@pytest.fixture(scope="module")
def bundle(files):
    return load_official(DRAFTER, REFINER, source=files, device="cpu")


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    """Three scales (1, 2, 4) on a 4×4 latent: 8-px images."""
    root = write_official(tmp_path_factory.mktemp("var-official-3"), scales=(1, 2, 4))
    return load_official(DRAFTER, REFINER, source=root, device="cpu", scales=(1, 2, 4))


# ------------------------------------------------------------------------------------------------ layout
def test_transformer_layout_is_the_official_one():
    model = OfficialVAR(OfficialVARConfig(depth=2, width=64, heads=2, vocab_size=V, embed_dim=C))
    assert _shapes(model) == var_layout(2, 64, 2, V, C, 680, 10)
    with torch.device("meta"):  # the released sizes: width 64·depth, heads = depth
        for depth, millions in ((16, 310.3), (30, 2010.0)):
            full = OfficialVAR(OfficialVARConfig(depth=depth))
            assert _shapes(full) == var_layout(depth, 64 * depth, depth, 4096, 32, 680, 10)
            assert len(full.state_dict()) == 12 + 13 * depth
            assert round(full.param_count() / 1e6, 1) == millions  # the README's 310M and 2.0B


def test_tokenizer_layout_is_the_official_one():
    vq = OfficialVQVAE(OfficialVQConfig(vocab_size=V, embed_dim=C, ch=32))
    assert _shapes(vq) == vq_layout(32, (1, 1, 2, 2, 4), V, C, 10)
    with torch.device("meta"):
        full = OfficialVQVAE()
    assert _shapes(full) == vq_layout(160, (1, 1, 2, 2, 4), 4096, 32, 10) and len(full.state_dict()) == 324
    assert full.image_side == 256 and full.latent_side == 16
    assert [phi_index(k, 10, 4) for k in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


def test_official_sampling_rule():
    logits = torch.tensor([[[3.0, 2.0, 1.0, -5.0]]]).expand(1, 400, 4)
    gen = torch.Generator().manual_seed(0)
    assert set(sample_like_var(logits, top_k=2, generator=gen).unique().tolist()) == {0, 1}
    assert set(sample_like_var(logits, top_p=0.5, generator=gen).unique().tolist()) == {0}
    assert sample_like_var(logits, generator=gen).unique().numel() >= 3


def test_generation_samples_as_the_models_paper_unless_told(small_bundle):
    """top_k / top_p left out: the official models sample with top-k 900, top-p 0.96 (the CLI, the app's tab and the
    reports alike); explicit values still win."""
    model, vq, cls = small_bundle.large, small_bundle.vq, torch.tensor([1, 999])

    def run(**sampling):
        return model.generate(vq, cls, generator=torch.Generator().manual_seed(3), **sampling)

    assert OfficialVAR.SAMPLING == {"top_k": 900, "top_p": 0.96}
    default, paper, plain = run(), run(top_k=900, top_p=0.96), run(top_k=0, top_p=0.0)
    assert all(torch.equal(a, b) for a, b in zip(default, paper, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(default, plain, strict=True))


# ------------------------------------------------------------------------------------------------ loading
def test_loader_reads_sizes_and_builds_a_bundle(bundle):
    assert bundle.name == "official-d4-d2" and bundle.classifier is None and bundle.class_names == ()
    assert bundle.large.config.depth == DRAFTER and bundle.small.config.width == 32
    assert bundle.large.config.num_classes == 1000 and bundle.num_scales == 10
    assert bundle.vq.image_side == 32 and bundle.meta["official"] and bundle.meta["dtype"] == "float32"
    assert not any(p.requires_grad for p in bundle.large.parameters())
    assert load_official(DRAFTER, REFINER, source=bundle.meta["source"], device="cpu") is bundle  # loaded once


def test_code_hands_over_from_drafter_to_refiner(bundle):
    run = code_generate(bundle.large, bundle.small, bundle.vq, 207, 3, 8, n=2, top_k=20, top_p=0.9, canvases=False)
    assert [s.model for s in run.scales] == ["large"] * 8 + ["small"] * 2
    assert run.images.shape == (2, 32, 32, 3) and run.class_accuracy is None
    gen = torch.Generator().manual_seed(3)  # the same as a manual hand-over with one generator
    cls = torch.full((2,), 207)
    first = bundle.large.generate(bundle.vq, cls, top_k=20, top_p=0.9, generator=gen, stop_scale=8)
    idx = bundle.small.generate(bundle.vq, cls, top_k=20, top_p=0.9, generator=gen, start_scale=8, prefix_idx=first)
    assert all((a.numpy() == b).all() for a, b in zip(idx, run.indices))
    bundle.large.clear_cache()
    bundle.small.clear_cache()


def test_cached_and_uncached_generation_agree_on_three_scales(small_bundle):
    model, vq = small_bundle.large, small_bundle.vq
    out = [model.generate(vq, torch.tensor([1, 999]), cfg=2.0, generator=torch.Generator().manual_seed(5),
                          cache=cache) for cache in (True, False)]
    assert [t.shape[-1] for t in out[0]] == [1, 2, 4]
    assert all(torch.equal(a, b) for a, b in zip(*out))
    assert vq.decode_indices(out[0]).shape == (2, 3, 8, 8)
    idx = vq.encode_indices(torch.rand(2, 3, 8, 8) * 2 - 1)
    assert model(torch.tensor([0, 1]), vq.teacher_inputs(idx)).shape == (2, 21, V)


def test_scalekv_prunes_the_official_cache(bundle):
    from core.var.scalekv import attention_selectivity, kv_generate

    model, vq = bundle.small, bundle.vq
    report = attention_selectivity(model, vq, [3, 500], [0])
    full = kv_generate(model, vq, 3, 1, "full")
    same = kv_generate(model, vq, 3, 1, "scalekv", 1.0, report)
    pressed = kv_generate(model, vq, 3, 1, "scalekv", 0.2, report)
    assert (same.images == full.images).all()  # a 100 % budget changes nothing
    assert pressed.kv_bytes < 0.3 * full.kv_bytes


def test_draft_attention_hook_sees_the_cosine_logits(bundle):
    """An override that recomputes dense attention with the standard 1/√d scale reproduces the model exactly."""
    from core.var.draft_attention import draft_attention_generate

    model, vq = bundle.small, bundle.vq
    plain = model.generate(vq, torch.tensor([7]), generator=torch.Generator().manual_seed(2), attention_scores=True)
    try:
        for block in model.blocks:
            block.attn.override = lambda q, k, v: (q.float() @ k.float().transpose(-1, -2) / q.shape[-1] ** 0.5)\
                .softmax(-1) @ v.float()
        hooked = model.generate(vq, torch.tensor([7]), generator=torch.Generator().manual_seed(2))
    finally:
        for block in model.blocks:
            block.attn.override = None
    assert all(torch.equal(a, b) for a, b in zip(plain, hooked))
    run = draft_attention_generate(model, vq, 7, 2, sparsity=0.5, min_side=10)
    assert {s.scale for s in run.stats} == {7, 8, 9} and 0 < run.flop_sparsity < 1
    assert run.images.shape == run.dense_images.shape == (1, 32, 32, 3)


@pytest.mark.parametrize("case, message", [
    ("depth", "holds a VAR with 4 blocks"), ("missing", "missing: blocks.1.attn.q_bias"),
    ("unexpected", "unexpected: extra.weight"), ("vocab", "does not fit vae_ch160v4096z32.pth"),
    ("garbage", "not a readable PyTorch checkpoint"), ("absent", "var_d2.pth is missing")])
def test_bad_files_are_one_clear_error(files, tmp_path, case, message):
    for name in (VQ_FILE, var_file(DRAFTER), var_file(REFINER)):
        (tmp_path / name).write_bytes((files / name).read_bytes())
    refiner = torch.load(files / var_file(REFINER), weights_only=True)
    if case == "depth":  # a d4 file given as the d2 refiner
        (tmp_path / var_file(REFINER)).write_bytes((files / var_file(DRAFTER)).read_bytes())
    elif case == "missing":
        torch.save({k: v for k, v in refiner.items() if k != "blocks.1.attn.q_bias"}, tmp_path / var_file(REFINER))
    elif case == "unexpected":
        torch.save({**refiner, "extra.weight": torch.zeros(2)}, tmp_path / var_file(REFINER))
    elif case == "vocab":
        torch.save({**refiner, "head.weight": torch.zeros(V + 1, 32), "head.bias": torch.zeros(V + 1)},
                   tmp_path / var_file(REFINER))
    elif case == "garbage":
        (tmp_path / var_file(REFINER)).write_bytes(b"not a checkpoint")
    else:
        (tmp_path / var_file(REFINER)).unlink()
    with pytest.raises(DraftScopeError, match=message):
        load_official(DRAFTER, REFINER, source=tmp_path, device="cpu")


def test_memory_is_checked_before_loading(files, monkeypatch):
    monkeypatch.setattr(official_load, "free_bytes", lambda device: 1000)
    with pytest.raises(DraftScopeError, match="loading VAR-d4 \\+ VAR-d2 \\+ the tokenizer would need about"):
        load_official(DRAFTER, REFINER, source=files, device="cpu", dtype=torch.float64)


def test_hub_mode_downloads_the_official_names(files, monkeypatch, tmp_path):
    import huggingface_hub

    asked = []

    def fake_download(repo, filename):
        asked.append((repo, filename))
        return str(files / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setenv("DRAFTSCOPE_MODEL_SOURCE", "hub")
    monkeypatch.setenv(official_load.ENV_DIR, str(tmp_path))  # nothing local
    assert official_load.where() == "hub" and official_load.where(DRAFTER, REFINER) is None  # d4/d2 are not on the Hub
    monkeypatch.setattr(official_load, "_check_memory", lambda *args: None)  # the real d30 sizes would be checked
    bundle = official_load.load_official(DRAFTER, REFINER, source="hub", device="cpu", dtype=torch.float64)
    assert bundle.large.config.depth == DRAFTER
    assert asked == [("FoundationVision/var", f) for f in (VQ_FILE, "var_d4.pth", "var_d2.pth")]
    monkeypatch.setenv("DRAFTSCOPE_MODEL_SOURCE", "gguf")
    assert official_load.where() is None


# ------------------------------------------------------------------------------------------------ CLI
def _cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_runs_code_on_the_official_files(files, capsys):
    code, out, err = _cli(capsys, "var", "generate", "--official", str(files), "--bundle", "official-d4-d2",
                          "--class", "980", "--split", "8", "--n", "2", "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["bundle"] == "official-d4-d2" and rec["class"] == 980 and rec["num_scales"] == 10
    assert [s["side"] for s in rec["scales"]] == list(PATCH_NUMS)
    assert [s["model"] for s in rec["scales"]] == ["large"] * 8 + ["small"] * 2
    assert rec["class_accuracy"] is None and "no classifier" in rec["class_accuracy_note"]


@pytest.mark.parametrize("argv, message", [
    (["--official", "/nonexistent/dir"], "is not a directory"),
    (["--bundle", "official-big"], "unknown VAR bundle"),
    (["--official", "{files}", "--bundle", "official-d4-d2", "--class", "triangle"], "unknown class"),
    (["--official", "{files}", "--bundle", "official-d4-d2", "--class", "1000"], "class must be in 0..999"),
    (["--official", "{files}"], "var_d30.pth is missing")])
def test_cli_bad_official_input_exits_2(files, capsys, argv, message):
    code, _out, err = _cli(capsys, "var", "generate", *[a.replace("{files}", str(files)) for a in argv])
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err


# ------------------------------------------------------------------------------------------------ app
def test_app_offers_and_runs_the_official_bundle(files, monkeypatch):
    import gradio as gr

    from app import var_tab
    from core.var import bundle as bundle_module
    from tests.helpers import app_error

    monkeypatch.setenv(official_load.ENV_DIR, str(files))
    monkeypatch.setattr(bundle_module, "bundle_choices", lambda: ["tiny", "official-d4-d2"])
    out = var_tab.generate({}, "980 volcano", 1, 8, 1, 1.5, 1, models="official-d4-d2", progress=lambda *a, **k: None)
    assert "“volcano”" in out[1] and "No class accuracy" in out[1], out[1]
    assert len([t for t in out[2].data if t.type == "image"]) == 3 * 10
    split = var_tab.update_split(out[0], 5, 1, progress=lambda *a, **k: None)
    assert "N = 5: re-ran CoDe only" in split[1]
    classes, slider, _layer, grids = var_tab.switch_models("official-d4-d2")
    assert "980 volcano" in [c[0] if isinstance(c, tuple) else c for c in classes["choices"]]
    assert slider["maximum"] == 10 and grids["value"] == 9
    assert "not available here" in app_error(var_tab.generate, {}, "0", 1, 8, 1, 1.5, 1, models="official-d30-d16",
                                             progress=lambda *a, **k: None)
    with gr.Blocks():
        parts = var_tab.build()
    assert parts["models"] is not None and parts["models"].value == "tiny"
    monkeypatch.setattr(bundle_module, "bundle_choices", lambda: ["tiny"])
    with gr.Blocks():
        assert var_tab.build()["models"] is None  # offline without the files: the tab is unchanged


# ------------------------------------------------------------------------------------------------ CUDA (device check)
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/device_check.py)")
def test_official_bundle_on_cuda_matches_the_cpu(files, bundle):
    """Loaded on CUDA (bf16 transformers by default, float32 on request): teacher-forced logits close to the CPU's,
    and CoDe's hand-over and ScaleKV run on the GPU."""
    from core.var.scalekv import attention_selectivity, kv_generate

    idx = bundle.vq.encode_indices(torch.rand(2, 3, 32, 32) * 2 - 1)
    cls = torch.tensor([207, 980])
    with torch.no_grad():
        want = bundle.large(cls, bundle.vq.teacher_inputs(idx)).float()
    for dtype, tol in ((torch.float32, 1e-3), (None, 0.1)):  # None: the loader's choice, bf16 on CUDA
        gpu = load_official(DRAFTER, REFINER, source=files, device="cuda", dtype=dtype)
        assert gpu.large.pos_1LC.dtype == (dtype or torch.bfloat16)
        gidx = [t.cuda() for t in idx]
        with torch.no_grad():
            got = gpu.large(cls.cuda(), gpu.vq.teacher_inputs(gidx)).float().cpu()
        assert (got - want).abs().max().item() <= tol * want.abs().max().item()
        run = code_generate(gpu.large, gpu.small, gpu.vq, 207, 3, 8, n=2, top_k=20, top_p=0.9, canvases=False)
        assert [s.model for s in run.scales] == ["large"] * 8 + ["small"] * 2 and run.images.shape == (2, 32, 32, 3)
        report = attention_selectivity(gpu.small, gpu.vq, [3, 500], [0])
        full = kv_generate(gpu.small, gpu.vq, 3, 1, "full")
        pressed = kv_generate(gpu.small, gpu.vq, 3, 1, "scalekv", 0.2, report)
        assert pressed.kv_bytes < 0.3 * full.kv_bytes
