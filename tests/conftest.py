"""Shared fixtures: models are loaded once per test session (load_model caches them per process)."""

from __future__ import annotations

import copy
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from core.runtime.models import LoadedModel, load_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama() -> LoadedModel:
    return load_model("tiny-llama", device="cpu")


@pytest.fixture(scope="session")
def tiny_gemma() -> LoadedModel:
    return load_model("tiny-gemma", device="cpu")


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    return load_model("smollm2-135m", device="cpu")


def perturbed(model: LoadedModel, scale: float, seed: int = 1) -> LoadedModel:
    """A copy of a model with Gaussian noise added to every weight: a drafter that agrees with it only partly."""
    net = copy.deepcopy(model.model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.std().clamp_min(1e-3))
    return LoadedModel(name=f"{model.name}-noisy", model=net, tokenizer=model.tokenizer, source="test")


@pytest.fixture(scope="session")
def noisy_tiny_llama(tiny_llama) -> LoadedModel:
    return perturbed(tiny_llama, 0.02)


def hf_greedy(model: LoadedModel, ids: list[int], n: int) -> list[int]:
    """Reference: Hugging Face generate, plain greedy (stops at EOS)."""
    with torch.inference_mode():
        out = model.model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                                   pad_token_id=model.model.generation_config.pad_token_id)
    return out[0, len(ids):].tolist()


ACCEPTANCE_PROMPTS = ("Write a haiku about autumn.", "Explain what a rainbow is in two sentences.")


def greedy_acceptance(target: LoadedModel, drafter, n: int, gamma: int = 1) -> float:
    """α of ``drafter`` on the two acceptance prompts (chat template, greedy, ``n`` tokens each), after checking that
    each output equals Hugging Face greedy."""
    from core.specdec import Session, SessionConfig
    from core.specdec.verify import build_verifier

    drafted = accepted = 0
    for text in ACCEPTANCE_PROMPTS:
        ids = target.encode(text, chat=True)
        config = SessionConfig(target=target.name, drafter=drafter.name, gamma=gamma, max_new_tokens=n)
        session = Session(target, drafter, build_verifier("greedy"), ids, config)
        for _ in session.run():
            pass
        assert session.generated_ids == hf_greedy(target, ids, n)[: len(session.generated_ids)]
        drafted, accepted = drafted + session.stats.drafted, accepted + session.stats.accepted
    return accepted / drafted
