"""The model-loading boundary (issue 21): the presets-only policy, a drafter's tokenizer checked before its weights
load, loads that do not block each other, and the stamped GGUF conversion cache rebuilt when stale or corrupt."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from core.errors import DraftScopeError
from core.runtime import models
from core.runtime.models import (
    PRESETS,
    STAMP_FILE,
    STAMP_VERSION,
    Preset,
    ensure_converted,
    load_model,
    load_tokenizer,
    stamp_problem,
    vocab_fingerprint_of,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class Reached(Exception):
    """Raised by a stand-in loader: the name got past the policy."""


@pytest.fixture()
def presets_only():
    previous = models.presets_only()
    models.set_presets_only(True)
    yield
    models.set_presets_only(previous)


@pytest.fixture()
def hub_loader(monkeypatch):
    """Hub ids reach a stand-in loader that raises ``Reached`` (nothing downloads, nothing is cached)."""
    def fail(name, *args, **kw):
        raise Reached(name)

    monkeypatch.setattr(models, "_load_pretrained", fail)
    monkeypatch.setattr(models, "_pretrained", fail)


# ------------------------------------------------------------------------------------------------ presets only
def test_presets_only_refuses_hub_ids_unless_allowed(presets_only, hub_loader, tiny_llama, tmp_path):
    for load in (load_model, load_tokenizer):
        with pytest.raises(DraftScopeError, match="--allow-local-models") as info:
            load("some-org/some-model")
        assert "presets only" in str(info.value) and "\n" not in str(info.value)
        with pytest.raises(Reached):
            load("some-org/some-model", allow_local=True)
        for other in (str(tmp_path), str(tmp_path / "missing"), "nope"):  # the same line: nothing of the disk shows
            with pytest.raises(DraftScopeError) as info:
                load(other)
            assert str(info.value) == (f"unknown model '{other}': this app loads its presets only "
                                       f"({', '.join(models.preset_names())}); Hugging Face ids and local directories "
                                       "need --allow-local-models")
    assert load_model("tiny-llama", device="cpu") is tiny_llama  # presets load as before


def test_without_the_policy_hub_ids_load(hub_loader):
    assert not models.presets_only()  # the CLI's default
    with pytest.raises(Reached):
        load_model("some-org/some-model")
    with pytest.raises(Reached):
        load_tokenizer("some-org/some-model")


def test_building_the_app_sets_the_policy_both_ways():
    from app.main import build_demo

    previous = models.presets_only()
    try:
        build_demo(allow_local_models=True)
        assert not models.presets_only()
        build_demo()
        assert models.presets_only()
    finally:
        models.set_presets_only(previous)


# ------------------------------------------------------------------------------------------------ tokenizer first
def test_load_tokenizer_alone(tiny_llama):
    tokenizer = load_tokenizer("tiny-llama")
    assert tokenizer is load_tokenizer("smollm2-135m")  # a tiny preset borrows its tokenizer_of's, loaded once
    assert vocab_fingerprint_of(tokenizer) == tiny_llama.vocab_fingerprint()


@pytest.mark.parametrize("drafter", ["model", "sorted"])
def test_other_tokenizer_refused_before_its_weights_load(tiny_llama, monkeypatch, drafter):
    from core.specdec.drafters import build_drafter

    key = ("tiny-gemma", "cpu", tiny_llama.dtype)
    monkeypatch.delitem(models._LOADED, key, raising=False)  # not loaded yet (put back afterwards)
    loads = []
    original = models._load_uncached
    monkeypatch.setattr(models, "_load_uncached", lambda name, *a: loads.append(name) or original(name, *a))
    with pytest.raises(DraftScopeError, match="does not share the target's tokenizer") as info:
        build_drafter(drafter, tiny_llama, {"draft_model": "tiny-gemma"})
    assert "'tiny-gemma': 262144" in str(info.value)
    assert loads == [] and key not in models._LOADED


def test_same_tokenizer_checked_then_loaded(tiny_llama, monkeypatch):
    from core.specdec.drafters import build_drafter

    key = ("tiny-llama", "cpu", tiny_llama.dtype)
    monkeypatch.setattr(models, "_LOADED", {k: v for k, v in models._LOADED.items() if k != key})
    checked = []
    original = models.load_tokenizer
    monkeypatch.setattr("core.specdec.drafters.model.load_tokenizer",
                        lambda name, **kw: checked.append(name) or original(name, **kw))
    drafter = build_drafter("model", tiny_llama, {"draft_model": "tiny-llama"})
    assert checked == ["tiny-llama"] and key in models._LOADED and drafter.drafter is models._LOADED[key]
    checked.clear()
    build_drafter("model", tiny_llama, {"draft_model": "tiny-llama"})
    assert checked == []  # loaded: its own tokenizer is checked, no second one is read


# ------------------------------------------------------------------------------------------------ per-key locks
def test_a_slow_load_blocks_neither_lookups_nor_other_loads(tiny_llama, monkeypatch):
    monkeypatch.setattr(models, "_LOADED", dict(models._LOADED))  # what this test loads is dropped afterwards
    started, release, calls = threading.Event(), threading.Event(), []
    original, stub = models._load_uncached, object()

    def slow(name, kind, device, dtype):
        if name != "tiny-gemma":
            return original(name, kind, device, dtype)
        calls.append(name)
        started.set()
        assert release.wait(30)
        return stub

    monkeypatch.setattr(models, "_load_uncached", slow)
    results = []
    threads = [threading.Thread(target=lambda: results.append(load_model("tiny-gemma", "cpu", torch.float16)))
               for _ in range(2)]
    for t in threads:
        t.start()
    try:
        assert started.wait(30)
        t0 = time.perf_counter()
        assert load_model("tiny-llama", device="cpu") is tiny_llama  # already loaded: no wait
        assert time.perf_counter() - t0 < 0.5
        other = load_model("tiny-llama", device="cpu", dtype=torch.float16)  # another model loads meanwhile
        assert other.dtype == torch.float16 and not release.is_set()
    finally:
        release.set()
        for t in threads:
            t.join(30)
    assert results == [stub, stub] and calls == ["tiny-gemma"]  # the same model loaded once


# ------------------------------------------------------------------------------------------------ conversion cache
@pytest.fixture()
def fake_gguf(tmp_path, monkeypatch, tiny_llama):
    """A preset whose 'GGUF' is a small file and whose dequantisation hands back tiny-llama (the writer is the real
    one); the cache lives under tmp_path, never the shared one. Yields (preset, number of conversions so far)."""
    monkeypatch.setenv("DRAFTSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_VERIFIED", set())
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    conversions = []
    monkeypatch.setattr(models, "_dequantise", lambda path: conversions.append(path) or
                        (tiny_llama.model, tiny_llama.tokenizer))
    return Preset("fake-gguf", "tiny-llama behind a fake GGUF (tests)", gguf=lambda: gguf), conversions


def _same_model(preset, tiny_llama):
    loaded = models._load_gguf_preset(preset, torch.device("cpu"), torch.float32)
    ids = torch.tensor([tiny_llama.encode("one two three")])
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(ids).logits, tiny_llama.model(ids).logits)
    assert loaded.vocab_fingerprint() == tiny_llama.vocab_fingerprint()


def test_conversion_is_stamped_and_reused(fake_gguf, tiny_llama, capsys):
    preset, conversions = fake_gguf
    out = ensure_converted(preset)
    stamp = json.loads((out / STAMP_FILE).read_text())
    assert stamp["version"] == STAMP_VERSION and stamp["source"]["name"] == "fake.gguf"
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= stamp["files"].keys()
    assert stamp_problem(out, preset.gguf()) is None
    assert ensure_converted(preset) == out and len(conversions) == 1
    assert "stale or corrupt" not in capsys.readouterr().err
    assert not list(out.parent.glob("*.tmp*")) and not list(out.parent.glob("*.old*"))
    _same_model(preset, tiny_llama)


def _flip_a_byte(out, preset):
    path = out / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(out, preset):
    path = out / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def _old_version(out, preset):
    stamp = json.loads((out / STAMP_FILE).read_text())
    (out / STAMP_FILE).write_text(json.dumps({**stamp, "version": STAMP_VERSION - 1}))


def _other_source(out, preset):
    with open(preset.gguf(), "ab") as fh:
        fh.write(b"more")


CORRUPTIONS = {
    "flipped byte": (_flip_a_byte, "model.safetensors does not match its checksum"),
    "truncated": (_truncate, "model.safetensors has"),
    "no stamp": (lambda out, preset: (out / STAMP_FILE).unlink(), "no stamp"),
    "garbled stamp": (lambda out, preset: (out / STAMP_FILE).write_text("{not json"), "unreadable stamp"),
    "old version": (_old_version, f"format version {STAMP_VERSION - 1}, expected {STAMP_VERSION}"),
    "file missing": (lambda out, preset: (out / "tokenizer.json").unlink(), "tokenizer.json is missing"),
    "other source": (_other_source, "converted from another GGUF file"),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
def test_stale_or_corrupt_conversion_is_rebuilt(fake_gguf, tiny_llama, capsys, monkeypatch, corrupt):
    preset, conversions = fake_gguf
    out = ensure_converted(preset)
    damage, reason = CORRUPTIONS[corrupt]
    damage(out, preset)
    monkeypatch.setattr(models, "_VERIFIED", set())  # as the next process finds it
    assert reason in stamp_problem(out, preset.gguf())
    capsys.readouterr()
    assert ensure_converted(preset) == out and len(conversions) == 2
    err = capsys.readouterr().err
    assert f"[draftscope] cached conversion at {out} is stale or corrupt ({reason}" in err and "rebuilding" in err
    assert stamp_problem(out, preset.gguf()) is None
    _same_model(preset, tiny_llama)


def test_a_stamped_folder_that_does_not_load_is_rebuilt_once(fake_gguf, tiny_llama, capsys):
    preset, conversions = fake_gguf
    out = ensure_converted(preset)
    (out / "config.json").write_text("{}")  # no model type: transformers cannot read it
    models.write_stamp(out, preset.gguf())  # and the stamp agrees (a folder written by a broken version)
    assert stamp_problem(out, preset.gguf()) is None
    _same_model(preset, tiny_llama)
    assert len(conversions) == 2 and "does not load" in capsys.readouterr().err


def test_the_real_cache_is_stamped():
    """The shipped presets' folders (converted by the session's fixtures) carry a stamp that checks out."""
    preset = PRESETS["smollm2-135m"]
    out = ensure_converted(preset)
    assert (out / STAMP_FILE).is_file() and stamp_problem(out, preset.gguf()) is None
