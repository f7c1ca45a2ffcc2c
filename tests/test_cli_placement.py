"""``--device-map`` / ``--max-memory`` on the commands that load a target (generate, bench, kv): the same values as
``DRAFTSCOPE_DEVICE_MAP`` / ``DRAFTSCOPE_MAX_MEMORY``, checked before anything loads, bad ones one ``error:`` line."""

from __future__ import annotations

import json
import os

import pytest

from core.cli import build_parser, main
from core.runtime import models, sharded

PROMPT = "the cat sat on the mat and the cat sat on the"
GENERATE = ["generate", "--target", "tiny-llama", "--drafter", "ngram", "--prompt", PROMPT, "--max-new-tokens", "10",
            "--json"]


@pytest.fixture
def clean_env(monkeypatch):
    """The variables the flags set are put back afterwards (set empty first, so the monkeypatch records them)."""
    monkeypatch.setenv("DRAFTSCOPE_DEVICE_MAP", "")
    monkeypatch.setenv("DRAFTSCOPE_MAX_MEMORY", "")


@pytest.mark.parametrize("command", ["generate", "bench", "kv"])
def test_commands_that_load_a_target_take_the_flags(command):
    args = build_parser().parse_args([command, "--device-map", "auto", "--max-memory", "cpu=2GiB"]
                                     + (["--prompt", "x"] if command == "generate" else []))
    assert (args.device_map, args.max_memory) == ("auto", "cpu=2GiB")


def test_generate_with_a_device_map_matches_the_plain_run(clean_env, capsys, monkeypatch):
    assert main(GENERATE) == 0
    plain = json.loads(capsys.readouterr().out)
    spread_loads = []
    original = sharded.load_sharded
    monkeypatch.setattr(sharded, "load_sharded", lambda name, *a: spread_loads.append((name, *a)) or original(name, *a))
    assert main([*GENERATE, "--device-map", "auto", "--max-memory", "cpu=4GiB"]) == 0
    spread = json.loads(capsys.readouterr().out)
    assert os.environ["DRAFTSCOPE_DEVICE_MAP"] == "auto" and os.environ["DRAFTSCOPE_MAX_MEMORY"] == "cpu=4GiB"
    assert [s[0] for s in spread_loads] == ["tiny-llama"]  # the target went through the device-map loader
    assert spread["generated_ids"] == plain["generated_ids"]


@pytest.mark.parametrize("flags, message", [
    (["--device-map", "model.layers.0"], "device map 'model.layers.0': use one of"),
    (["--device-map", "{not json"], "the device map is not valid JSON"),
    (["--device-map", "auto", "--max-memory", "lots"], "max memory 'lots': use device=size pairs"),
    (["--max-memory", "0=20GiB"], "--max-memory needs --device-map"),
])
def test_bad_placement_is_one_error_line_before_any_load(clean_env, capsys, monkeypatch, flags, message):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("nothing may load"))
    assert main([*GENERATE, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert os.environ["DRAFTSCOPE_DEVICE_MAP"] == ""
