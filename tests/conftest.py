"""Shared fixtures: models are loaded once per test session (load_model caches them per process). Helpers that are
not fixtures live in tests/helpers.py."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from core.runtime import models
from core.runtime.models import LoadedModel, load_model
from tests.helpers import perturbed, vocab6_model


@pytest.fixture(scope="module", autouse=True)
def model_policy():
    """``build_demo()`` sets the process-wide presets-only policy: each module gets back the policy it started with
    (an app built in a module-scoped fixture keeps it for that module; a session-scoped one, for the session)."""
    previous = models.presets_only()
    yield
    models.set_presets_only(previous)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and do not fight a busy machine for cores); restored afterwards. A
    module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_llama() -> LoadedModel:
    return load_model("tiny-llama", device="cpu")


@pytest.fixture(scope="session")
def tiny_gemma() -> LoadedModel:
    return load_model("tiny-gemma", device="cpu")


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def noisy_tiny_llama(tiny_llama) -> LoadedModel:
    return perturbed(tiny_llama, 0.02)


@pytest.fixture(scope="session")
def vocab6() -> LoadedModel:
    """A random 4-layer llama with 6 tokens: the sampled-law tests measure its whole two-token law."""
    return vocab6_model(0)


@pytest.fixture(scope="session")
def noisy_vocab6(vocab6) -> LoadedModel:
    """A draft model for it that agrees with it only in part."""
    return perturbed(vocab6, 0.3)
