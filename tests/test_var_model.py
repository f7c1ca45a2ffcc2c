"""The small VAR transformer: block-causal mask, causality, KV-cached generation = uncached, prefix continuation
(CoDe's refiner), guidance ramp, training, presets and save/load."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from core.errors import DraftScopeError
from core.var.model import VAR, VARConfig, block_causal_mask, sample_tokens, scale_offsets

SCALES = (1, 2, 3, 4)
VOCAB, EMBED = 16, 8


class StandInVQ:
    """Test-only multi-scale residual tokenizer with the MultiScaleVQVAE interface: random codebook, nearest
    upsampling into the latent, area downsampling for the next scale's input."""

    def __init__(self, scales=SCALES, vocab_size=VOCAB, embed_dim=EMBED, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.scales, self.vocab_size, self.embed_dim = tuple(scales), vocab_size, embed_dim
        self.latent_side = self.scales[-1]
        self.codebook_VC = torch.randn(vocab_size, embed_dim, generator=gen)
        self.rgb_C3 = torch.randn(embed_dim, 3, generator=gen)

    def _embed(self, idx_Bss):
        return self.codebook_VC.to(idx_Bss.device)[idx_Bss].permute(0, 3, 1, 2)

    def add_scale(self, f_hat_BCSS, idx_k, k):
        up = F.interpolate(self._embed(idx_k), size=self.latent_side, mode="nearest")
        return f_hat_BCSS + up

    def next_scale_input(self, f_hat_BCSS, k):
        return F.interpolate(f_hat_BCSS, size=self.scales[k + 1], mode="area")

    def teacher_inputs(self, idx_list):
        B = idx_list[0].shape[0]
        f_hat = torch.zeros(B, self.embed_dim, self.latent_side, self.latent_side)
        out = []
        for k in range(len(self.scales) - 1):
            f_hat = self.add_scale(f_hat, idx_list[k], k)
            out.append(self.next_scale_input(f_hat, k).flatten(2).transpose(1, 2))
        return torch.cat(out, dim=1)

    def encode_indices(self, img):
        f_BCSS = torch.einsum("cr,brhw->bchw", self.rgb_C3, F.interpolate(img, size=self.latent_side, mode="area"))
        f_hat, idx_list = torch.zeros_like(f_BCSS), []
        for k, s in enumerate(self.scales):
            r_BCss = F.interpolate(f_BCSS - f_hat, size=s, mode="area")
            d = torch.cdist(r_BCss.flatten(2).transpose(1, 2), self.codebook_VC[None])
            idx = d.argmin(-1).view(-1, s, s)
            f_hat = self.add_scale(f_hat, idx, k)
            idx_list.append(idx)
        return idx_list

    def decode_indices(self, idx_list):
        f_hat = torch.zeros(idx_list[0].shape[0], self.embed_dim, self.latent_side, self.latent_side)
        for k, idx in enumerate(idx_list):
            f_hat = self.add_scale(f_hat, idx, k)
        return torch.einsum("cr,bchw->brhw", self.rgb_C3, f_hat).tanh()


def tiny_config(**kw) -> VARConfig:
    return VARConfig(VOCAB, EMBED, SCALES, **{"depth": 2, "width": 32, "heads": 4, **kw})


@pytest.fixture(scope="module")
def vq():
    return StandInVQ()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VAR(tiny_config()).eval()


def random_indices(B, seed=0, scales=SCALES, vocab=VOCAB):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (B, s, s), generator=gen) for s in scales]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------- mask and forward
def test_block_causal_mask_matches_brute_force():
    scales = (1, 2, 3, 5)
    level = [k for k, s in enumerate(scales) for _ in range(s * s)]
    want = torch.tensor([[level[j] <= level[i] for j in range(len(level))] for i in range(len(level))])
    got = block_causal_mask(scales)
    assert got.dtype == torch.bool and got.shape == (39, 39)
    assert torch.equal(got, want)
    assert scale_offsets(scales) == [0, 1, 5, 14, 39]


def test_forward_shapes(model, vq):
    idx = random_indices(3)
    x = vq.teacher_inputs(idx)
    assert x.shape == (3, 29, EMBED)
    logits = model(torch.tensor([0, 1, 2]), x)
    assert logits.shape == (3, 30, VOCAB)
    assert model(torch.tensor([0, 1, 2]), x[:, :4]).shape == (3, 5, VOCAB)  # a prefix of scales
    with pytest.raises(DraftScopeError):
        model(torch.tensor([0, 1, 2]), x[:, :6])  # not a scale boundary


def test_logits_of_a_scale_ignore_finer_scales(model, vq):
    cls = torch.tensor([3, 7])
    x = vq.teacher_inputs(random_indices(2))
    base = model(cls, x)
    off = scale_offsets(SCALES)
    for k in range(len(SCALES) - 1):
        changed = x.clone()
        changed[:, off[k + 1] - 1:] += torch.randn_like(changed[:, off[k + 1] - 1:])  # inputs of scales > k
        out = model(cls, changed)
        assert torch.equal(out[:, :off[k + 1]], base[:, :off[k + 1]])
        assert not torch.allclose(out[:, off[k + 1]:], base[:, off[k + 1]:])


# --------------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize("cfg,top_k,top_p", [(0.0, 0, 0.0), (2.0, 0, 0.0), (1.5, 5, 0.0), (1.5, 0, 0.8),
                                             (3.0, 4, 0.9)])
def test_cached_generation_equals_uncached(model, vq, cfg, top_k, top_p):
    cls = torch.tensor([0, 4, 9])
    a = model.generate(vq, cls, cfg=cfg, top_k=top_k, top_p=top_p, generator=gen(5), cache=True)
    assert model.kv_cache_bytes() > 0
    b = model.generate(vq, cls, cfg=cfg, top_k=top_k, top_p=top_p, generator=gen(5), cache=False)
    assert model.kv_cache_bytes() == 0
    assert [t.shape for t in a] == [(3, s, s) for s in SCALES]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = model.generate(vq, cls, cfg=cfg, top_k=top_k, top_p=top_p, generator=gen(6), cache=True)
    assert not all(torch.equal(x, y) for x, y in zip(a, c))  # the seed matters


def test_cached_step_logits_match_teacher_forced(model, vq):
    """The cached scale-by-scale logits equal a teacher-forced forward over the generated indices."""
    cls = torch.tensor([1, 2])
    seen = {}
    idx = model.generate(vq, cls, cfg=0.0, top_k=1, generator=gen(0),
                         on_scale=lambda k, i, f, ms: seen.setdefault(k, ms))
    assert sorted(seen) == list(range(len(SCALES))) and all(ms >= 0 for ms in seen.values())
    with torch.no_grad():
        logits = model(cls, vq.teacher_inputs(idx))
    greedy = torch.cat([t.flatten(1) for t in idx], dim=1)
    assert torch.equal(logits.argmax(-1), greedy)


def test_kv_cache_shape_and_bytes(model, vq):
    model.generate(vq, torch.tensor([0, 1]), cfg=1.5, generator=gen(0))
    L = sum(s * s for s in SCALES)
    assert len(model.kv_cache) == model.config.depth
    k, v = model.kv_cache[0]
    assert k.shape == v.shape == (4, 4, L, 8)  # (2B under guidance, heads, m keys, head dim)
    assert model.kv_cache_bytes() == model.config.depth * 2 * k.numel() * 4
    assert list(model.kv_bytes_per_scale) == list(range(len(SCALES)))


def test_prefix_continuation_reproduces_full_generation(model, vq):
    cls = torch.tensor([2, 5, 8])
    # greedy: continuing from the first N scales of a full generation gives the same later scales
    full = model.generate(vq, cls, cfg=2.0, top_k=1, generator=gen(0))
    for n in (1, 2, 3):
        for cache in (True, False):
            cont = model.generate(vq, cls, cfg=2.0, top_k=1, generator=gen(0), start_scale=n, prefix_idx=full,
                                  cache=cache)
            assert all(torch.equal(x, y) for x, y in zip(full, cont))
    # sampling: continuing with the generator state the full run had after scale N−1 reproduces it exactly
    states = {}
    g3 = gen(3)
    full = model.generate(vq, cls, cfg=2.0, top_p=0.9, generator=g3,
                          on_scale=lambda k, i, f, ms: states.__setitem__(k, g3.get_state()))
    for n in (1, 2, 3):
        g = torch.Generator()
        g.set_state(states[n - 1])
        seen = []
        cont = model.generate(vq, cls, cfg=2.0, top_p=0.9, generator=g, start_scale=n, prefix_idx=full[:n],
                              on_scale=lambda k, i, f, ms, seen=seen: seen.append(k))
        assert seen == list(range(n, len(SCALES)))
        assert all(torch.equal(x, y) for x, y in zip(full, cont))
    with pytest.raises(DraftScopeError):
        model.generate(vq, cls, start_scale=2)


def test_stop_scale_gives_the_first_scales(model, vq):
    cls = torch.tensor([4, 1])
    full = model.generate(vq, cls, cfg=1.5, top_k=6, generator=gen(2))
    for stop in (1, 3):
        part = model.generate(vq, cls, cfg=1.5, top_k=6, generator=gen(2), stop_scale=stop)
        assert len(part) == stop and all(torch.equal(x, y) for x, y in zip(full, part))
    with pytest.raises(DraftScopeError):
        model.generate(vq, cls, prefix_idx=full, start_scale=3, stop_scale=2)


def test_prefix_from_another_model_is_kept(vq):
    """CoDe: a small model continues a large model's coarse scales; the prefix is returned unchanged."""
    torch.manual_seed(1)
    big = VAR(tiny_config(depth=3)).eval()
    small = VAR(tiny_config(depth=1, width=16)).eval()
    cls = torch.tensor([0, 3])
    draft = big.generate(vq, cls, cfg=1.5, generator=gen(0), stop_scale=2)
    out = small.generate(vq, cls, cfg=1.5, generator=gen(1), start_scale=2, prefix_idx=draft[:2])
    assert all(torch.equal(x, y) for x, y in zip(draft[:2], out[:2]))
    assert len(draft) == 2 and [t.shape for t in out] == [(2, s, s) for s in SCALES]


def test_guidance_ramp(model, vq):
    cls = torch.tensor([0, 6, 9])
    # cfg = 0 is the conditional model alone: greedy generation equals a greedy loop over teacher-forced logits
    out = model.generate(vq, cls, cfg=0.0, top_k=1, generator=gen(0), cache=False)
    idx = []
    with torch.no_grad():
        for k, s in enumerate(SCALES):
            x = vq.teacher_inputs(idx + random_indices(3, scales=SCALES[k:]))[:, :scale_offsets(SCALES)[k + 1] - 1]
            idx.append(model(cls, x)[:, scale_offsets(SCALES)[k]:].argmax(-1).view(3, s, s))
    assert all(torch.equal(a, b) for a, b in zip(out, idx))
    # the ramp starts at 0: scale 0 is unguided whatever cfg; later scales feel the guidance
    seen = {}
    guided = model.generate(vq, cls, cfg=8.0, top_k=1, generator=gen(0), attention_scores=True,
                            on_scale=lambda k, i, f, ms: seen.setdefault(k, i))
    assert torch.equal(guided[0], out[0])
    assert not all(torch.equal(a, b) for a, b in zip(guided, out))
    # attention probabilities of each generated scale's queries over the cache (conditional and null rows)
    probs = model.last_attention[2]
    assert len(probs) == model.config.depth and probs[0].shape == (6, 4, 9, 14)
    assert torch.allclose(probs[0].sum(-1), torch.ones(6, 4, 9))


def test_kv_hook_can_prune(model, vq):
    def keep_last_8(cache, k):
        return [(kk[:, :, -8:], vv[:, :, -8:]) for kk, vv in cache]

    model.generate(vq, torch.tensor([1]), cfg=0.0, generator=gen(0), kv_hook=keep_last_8)
    assert model.kv_cache[0][0].shape[2] == 8
    assert model.kv_cache_bytes() == model.config.depth * 2 * 8 * 32 * 4


def test_sample_tokens_top_k_and_top_p():
    logits = torch.tensor([[[3.0, 2.0, 1.0, -5.0]]]).expand(1, 200, 4)
    assert set(sample_tokens(logits, top_k=2, generator=gen(0)).unique().tolist()) == {0, 1}
    assert set(sample_tokens(logits, top_k=1, generator=gen(0)).unique().tolist()) == {0}
    assert set(sample_tokens(logits, top_p=0.5, generator=gen(0)).unique().tolist()) == {0}
    assert sample_tokens(logits, generator=gen(0)).unique().numel() >= 3


# --------------------------------------------------------------------------------------------- training, sizes, io
def test_training_steps_reduce_loss(vq):
    from core.train.var_model import batch_loss, train_step

    torch.manual_seed(0)
    model = VAR(tiny_config(cond_dropout=0.0))
    imgs = torch.rand(16, 3, 32, 32) * 2 - 1
    labels = torch.arange(16) % 10
    idx = vq.encode_indices(imgs)
    x = vq.teacher_inputs(idx)
    target = torch.cat([t.flatten(1) for t in idx], dim=1)
    with torch.no_grad():
        before, _ = batch_loss(model.eval(), labels, x, target)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(20):
        train_step(model, opt, labels, x, target)
    with torch.no_grad():
        after, acc = batch_loss(model.eval(), labels, x, target)
    assert after < 0.7 * before and 0.0 <= acc <= 1.0


def test_train_function_smoke(vq):
    from core.train.var_model import train

    imgs = torch.rand(20, 3, 32, 32) * 2 - 1
    model, meta = train(vq, "small", steps=3, batch=8, data=(imgs, torch.arange(20) % 10), progress=False,
                        overrides={"depth": 1, "width": 16, "heads": 2})
    assert meta["steps"] == 3 and meta["size"] == "small" and meta["loss"] > 0
    assert not model.training


def test_large_preset_is_clearly_bigger():
    large = VAR(VARConfig.large(512, 32, (1, 2, 3, 4, 6, 8)))
    small = VAR(VARConfig.small(512, 32, (1, 2, 3, 4, 6, 8)))
    assert large.param_count() > 6 * small.param_count()
    with pytest.raises(DraftScopeError):
        VARConfig.preset("medium", 512, 32, (1, 2))


def test_save_load_round_trip(tmp_path, model, vq):
    path = model.save(tmp_path / "var.safetensors", {"size": "tiny", "loss": 1.25})
    loaded, meta = VAR.load(path)
    assert meta == {"size": "tiny", "loss": 1.25}
    assert loaded.config == model.config and not loaded.training
    cls = torch.tensor([0, 5])
    x = vq.teacher_inputs(random_indices(2))
    with torch.no_grad():
        a, b = model(cls, x), loaded(cls, x)
    assert torch.allclose(a, b, atol=2e-2, rtol=1e-2)
    half = VAR(model.config).eval()
    half.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    with torch.no_grad():
        assert torch.equal(half(cls, x), b)  # exactly the fp16-rounded weights
    with pytest.raises(DraftScopeError):
        VAR.load(tmp_path / "missing.safetensors")


@pytest.mark.skipif(importlib.util.find_spec("core.var.vqvae") is None, reason="core/var/vqvae.py not written yet")
def test_with_real_tokenizer():
    from core.var.vqvae import MultiScaleVQVAE

    torch.manual_seed(0)
    real = MultiScaleVQVAE().eval()
    model = VAR(VARConfig(real.vocab_size, real.embed_dim, real.scales, depth=1, width=32, heads=2)).eval()
    cls = torch.tensor([1, 2])
    a = model.generate(real, cls, cfg=1.5, top_k=8, generator=gen(0))
    b = model.generate(real, cls, cfg=1.5, top_k=8, generator=gen(0), cache=False)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with torch.no_grad():
        imgs = torch.rand(2, 3, 32, 32) * 2 - 1
        idx = real.encode_indices(imgs)
        logits = model(cls, real.teacher_inputs(idx))
        assert real.decode_indices(a).shape == (2, 3, 32, 32)
    assert logits.shape == (2, sum(s * s for s in real.scales), real.vocab_size)
