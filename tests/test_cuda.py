"""The greedy-identity table on a CUDA GPU (issue 22): every registered drafter on the tiny models, greedy, against
Hugging Face greedy of the same model on the same GPU — in float32 token for token, in bfloat16 token for token up
to the first position where the target's own top two logits are within bf16 rounding of each other (there a
batched verification and a one-token decode may legitimately pick different tokens) — and the static-shape path
(``DRAFTSCOPE_STATIC_CACHE``, with ``DRAFTSCOPE_COMPILE`` CUDA graphs) alike. Skipped without CUDA, with the reason;
scripts/device_check.py runs it on a GPU machine. The verifiers are not repeated here: at temperature 0 each
reduces to the greedy rule on the logits brought back to the CPU, which the CPU table checks for all of them."""

from __future__ import annotations

import copy

import pytest
import torch

from core.runtime.models import LoadedModel, load_model
from core.specdec import Session, SessionConfig
from core.specdec.drafters import DRAFTERS
from core.specdec.fastpath import StaticCachedLM
from core.specdec.verify import build_verifier
from tests.helpers import table_drafter

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/device_check.py)")]

PROMPTS = ["the cat sat on the mat and the cat sat on the", "1 2 3 4 5 6 7 8 9 10 11 12 13"]
N = 24
TIE_ULPS = 8  # bf16: a divergence is allowed where the two tokens' logits are within 8 bf16 steps of each other


def noisy(model: LoadedModel, scale: float = 0.02, seed: int = 1) -> LoadedModel:
    net = copy.deepcopy(model.model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            noise = torch.randn(p.shape, generator=gen) * scale * p.float().std().clamp_min(1e-3).cpu()
            p.add_(noise.to(p.device, p.dtype))
    return LoadedModel(name=f"{model.name}-noisy", model=net, tokenizer=model.tokenizer, source="test")


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def models(request):
    dtype = getattr(torch, request.param)
    llama = load_model("tiny-llama", device="cuda", dtype=dtype)
    gemma = load_model("tiny-gemma", device="cuda", dtype=dtype)
    return {"tiny_llama": (llama, noisy(llama)), "tiny_gemma": (gemma, gemma), "dtype": dtype}


def reference(model: LoadedModel, ids: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        out = model.model.generate(torch.tensor([ids], device=model.device), max_new_tokens=n, do_sample=False,
                                   pad_token_id=model.model.generation_config.pad_token_id)
    return out[0, len(ids):].tolist()


def check(target: LoadedModel, ids: list[int], got: list[int], want: list[int], compiled: bool = False) -> None:
    """``got`` == ``want``; in bf16 (or compiled kernels: other float32 rounding) equal up to a first divergence at
    a near-tie of the target's logits."""
    if got == want[: len(got)] and len(got) == len(want):
        return
    i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    step = 2 ** -7 if target.dtype == torch.bfloat16 else 1e-5 if compiled else 0.0
    assert step and i < min(len(got), len(want)), (i, got, want)
    with torch.inference_mode():
        logits = target.model(torch.tensor([ids + want[:i]], device=target.device)).logits[0, -1].float()
    gap = abs(float(logits[got[i]] - logits[want[i]]))
    tolerance = TIE_ULPS * step * max(1.0, float(logits.abs().max()))
    assert gap <= tolerance, f"diverged at {i} with a logit gap of {gap:.5f} (> {tolerance:.5f})"


def run(target, drafter, ids, **settings) -> Session:
    config = SessionConfig(target=target.name, drafter=drafter.name, verifier="greedy", gamma=4, max_new_tokens=N,
                           **settings)
    session = Session(target, drafter, build_verifier("greedy"), ids, config)
    for _ in session.run():
        pass
    return session


@pytest.mark.parametrize("drafter", list(DRAFTERS))
@pytest.mark.parametrize("target_name", ["tiny_llama", "tiny_gemma"])
def test_cuda_greedy_identity(models, target_name, drafter):
    target, draft = models[target_name]
    for text in PROMPTS:
        ids = target.encode(text)
        check(target, ids, run(target, table_drafter(drafter, target, draft), ids).generated_ids,
              reference(target, ids, N))


@pytest.mark.parametrize("tree", ["3,2,1", "budget:8"])
def test_cuda_tree_identity(models, tree):
    target, draft = models["tiny_llama"]
    ids = target.encode(PROMPTS[0])
    got = run(target, table_drafter("model", target, draft), ids, tree=tree).generated_ids
    check(target, ids, got, reference(target, ids, N))


@pytest.mark.parametrize("compiled", ["0", "1"])
@pytest.mark.parametrize("drafter", ["none", "ngram", "model", "early-exit"])
def test_cuda_static_cache_identity(models, drafter, compiled, monkeypatch):
    monkeypatch.setenv("DRAFTSCOPE_STATIC_CACHE", "1")
    monkeypatch.setenv("DRAFTSCOPE_COMPILE", compiled)
    target, draft = models["tiny_llama"]
    for text in PROMPTS:
        ids = target.encode(text)
        session = run(target, table_drafter(drafter, target, draft), ids)
        assert isinstance(session.target_kv, StaticCachedLM)
        check(target, ids, session.generated_ids, reference(target, ids, N), compiled=compiled == "1")
