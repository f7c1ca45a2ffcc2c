"""Hub mode against huggingface_hub's real cache, offline: a Space's environment (``SPACE_ID``, ``HF_HUB_OFFLINE``)
over a Hub cache laid out as ``preload_from_hub`` leaves it (``models--org--name/refs/main`` → ``snapshots/<rev>/``),
holding tiny random models under the real repo ids. The app's own code then resolves every file through
``from_pretrained`` and ``hf_hub_download`` as it would on the Space; only the weights are stand-ins. One child
process (``tests/hub_probe.py``) runs the checks, so the Hub's settings are read at import, as they are there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from core.var.official_load import HUB_REPO, VQ_FILE, var_file
from tests.helpers import write_official

ROOT = Path(__file__).resolve().parents[1]
REVISION = "0" * 40


def snapshot(cache: Path, repo: str) -> Path:
    """The snapshot folder of ``repo`` at ``REVISION``, with ``refs/main`` pointing at it."""
    base = cache / ("models--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(REVISION)
    folder = base / "snapshots" / REVISION
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def put_model(cache: Path, repo: str, like, layers: int, seed: int) -> None:
    """A random model of ``like``'s architecture with ``layers`` layers and ``like``'s tokenizer, as a Hub repo."""
    config = like.model.config.__class__.from_dict(like.model.config.to_dict())
    config.num_hidden_layers = layers
    torch.manual_seed(seed)
    folder = snapshot(cache, repo)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    like.tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory, tiny_llama) -> dict:
    cache = tmp_path_factory.mktemp("hub-cache")
    put_model(cache, "HuggingFaceTB/SmolLM2-1.7B-Instruct", tiny_llama, layers=4, seed=1)
    put_model(cache, "HuggingFaceTB/SmolLM2-360M-Instruct", tiny_llama, layers=2, seed=2)
    put_model(cache, "HuggingFaceTB/SmolLM2-135M-Instruct", tiny_llama, layers=2, seed=3)
    var_folder = snapshot(cache, HUB_REPO)
    write_official(var_folder)  # reduced-width random files under the official names
    assert {VQ_FILE, var_file(4), var_file(2)} <= {p.name for p in var_folder.iterdir()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRAFTSCOPE_", "HF_"))}
    env.update(SPACE_ID="someone/draftscope", HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache),
               HF_HOME=str(tmp_path_factory.mktemp("hf-home")), DRAFTSCOPE_CACHE=str(tmp_path_factory.mktemp("ds")),
               PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", "tests.hub_probe"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ok(verdict: dict) -> dict:
    assert "error" not in verdict, verdict.get("trace") or verdict.get("error")
    return verdict


def test_a_pair_loads_from_the_cache_and_stays_greedy_identical(verdicts):
    pair = ok(verdicts["pair"])
    assert pair["source"] == "hub" and pair["layers"] == 4
    assert pair["draft"] == "smollm2-360m" and pair["draft_source"] == "hub"  # the target's paired draft
    assert pair["identical"] and pair["rounds"] >= 1


def test_tiny_presets_take_the_tokenizer_from_the_hub_cache(verdicts):
    assert ok(verdicts["tiny"])["vocab"] > 1000  # SmolLM2's real tokenizer, no wheel


def test_a_gated_model_missing_from_the_cache_says_what_access_it_needs(verdicts):
    message = ok(verdicts["gated"])["message"]
    assert message.startswith("could not load model 'llama3.2-1b'")
    assert "is gated on the Hugging Face Hub" in message and "HF_TOKEN" in message


def test_the_official_var_files_come_through_hf_hub_download(verdicts):
    var = ok(verdicts["var"])
    assert var == {"name": "official-d4-d2", "source": "hub", "images": [1, 32, 32, 3]}


def test_the_app_builds_as_on_a_space(verdicts):
    app = ok(verdicts["app"])
    assert app["public"] and app["source"] == "hub" and app["hub_presets"]
    assert app["default_target"] == "smollm2-135m"  # no GPU here: a 7B target would take seconds a token
    assert app["var_choices"] == ["tiny", "official-d30-d16"] and app["events"] > 50
