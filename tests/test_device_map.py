"""Targets spread by a device map (accelerate's hooks, issue 22): the same model loaded normally and dispatched gives
the same logits and token-identical greedy speculative decoding — every registered drafter, trees (masked and
hybrid attention), layer-sliced self-drafters — plus the device-map parsing and the ``from_pretrained`` path.

What runs on this CPU: a tiny model whose blocks carry accelerate's hooks, with layer 1 CPU-offloaded and layer 3
disk-offloaded (their weights sit on ``meta`` and are loaded at every call), and in one layout the embedding and the
tied head offloaded too: the hooked forwards, views of hooked modules, copies of offloaded layers, offload reloading,
and every place that must not take a parameter's device as where a block runs (that is ``meta`` here, and a tensor
made there breaks loudly). What it cannot show: activations and caches crossing between two real devices (every
block computes on the CPU, so a missing ``.to(device)`` between blocks goes unseen). ``test_cuda_cpu_split`` does
that where a GPU is present (layers on cuda:0 and on the CPU, computing on both); scripts/device_check.py runs it.
"""

from __future__ import annotations

import pytest
import torch

from core.errors import DraftScopeError
from core.runtime.cached_lm import CachedLM
from core.runtime.devices import (
    input_device,
    is_dispatched,
    module_device,
    offloaded,
    plain_deepcopy,
    shallow_copy,
)
from core.runtime.models import load_model, truncated_view
from core.runtime.sharded import load_sharded, parse_device_map, parse_max_memory, placement
from core.specdec import Session, SessionConfig
from core.specdec.drafters import DRAFTERS, build_drafter
from core.specdec.trees.tree import TokenTree, TreeCache
from core.specdec.verify import build_verifier
from tests.helpers import hf_greedy, table_drafter

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["the cat sat on the mat and the cat sat on the", "1 2 3 4 5 6 7 8 9 10 11 12 13"]
HERE = torch.device("cpu")  # a torch.device, not the string "cpu": accelerate hooks the block and runs it here


def spread_map(n_layers: int, device=HERE, cpu_offload: tuple[int, ...] = (1,), disk: tuple[int, ...] = (3,)) -> dict:
    """Every block on ``device`` with a hook, but the layers in ``cpu_offload`` (weights kept in CPU memory, loaded at
    each call) and ``disk`` (weights in files, likewise)."""
    layers = {f"model.layers.{i}": "cpu" if i in cpu_offload else "disk" if i in disk else device
              for i in range(n_layers)}
    return {"model.embed_tokens": device, "model.rotary_emb": device, **layers, "model.norm": device,
            "lm_head": device}


@pytest.fixture(scope="module")
def spread_llama(tiny_llama):
    return load_sharded("tiny-llama", spread_map(tiny_llama.n_layers), dtype=torch.float32)


@pytest.fixture(scope="module")
def spread_gemma(tiny_gemma):
    return load_sharded("tiny-gemma", spread_map(tiny_gemma.n_layers), dtype=torch.float32)


def _session(target, drafter, ids, n=24, gamma=4, tree="", **config):
    config = SessionConfig(target=target.name, drafter=drafter.name, verifier="greedy", gamma=gamma,
                           max_new_tokens=n, temperature=0.0, tree=tree, **config)
    session = Session(target, drafter, build_verifier("greedy"), ids, config)
    for _ in session.run():
        pass
    return session


# ------------------------------------------------------------------------------------------------ placement
def test_dispatched_model_is_hooked_and_offloaded(spread_llama):
    model = spread_llama.model
    assert is_dispatched(model) and model.hf_device_map["model.layers.3"] == "disk"
    held = offloaded(model)
    assert held and {name.split(".")[2] for name in held} == {"1", "3"}  # layers 1 and 3 wait off their device
    assert next(model.model.layers[1].parameters()).device.type == "meta"
    assert spread_llama.device == input_device(model) == HERE  # where ids go, not where a parameter sits
    assert module_device(model.model.layers[3]) == HERE
    assert placement(model) == {"cpu": 7, "disk": 1}  # str(torch.device("cpu")) and "cpu" both read "cpu"
    assert spread_llama.param_bytes == load_model("tiny-llama", device="cpu").param_bytes  # meta weights counted


def test_logits_match_the_plain_model(spread_llama, tiny_llama):
    ids = tiny_llama.encode(PROMPTS[0])
    with torch.inference_mode():
        plain = tiny_llama.model(torch.tensor([ids])).logits
        spread = spread_llama.model(torch.tensor([ids])).logits
    torch.testing.assert_close(spread, plain, atol=1e-4, rtol=1e-5)  # float32 paths: CPU kernels differ
    # incremental decoding on the dispatched model's cache, with a rollback, against one full forward
    kv = CachedLM(spread_llama.model)
    kv.forward(ids[:5])
    kv.forward(ids[5:9] + [7, 8, 9])
    kv.rollback(9)
    last = kv.forward(ids[9:], logits_to_keep=len(ids) - 9)
    torch.testing.assert_close(last, plain[0, 9:].float(), atol=1e-4, rtol=1e-5)


def test_views_of_a_hooked_model_run_their_own_layers(spread_llama, tiny_llama):
    """A shallow copy of a hooked module must not keep the original's forward (bound to the original: the truncated
    view would run all the layers)."""
    ids = torch.tensor([tiny_llama.encode(PROMPTS[1])])
    with torch.inference_mode():
        want = truncated_view(tiny_llama.model, 2)(ids).logits
        got = truncated_view(spread_llama.model, 2)(ids).logits
        full = spread_llama.model(ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, full, atol=1e-3)
    copy_ = shallow_copy(spread_llama.model)
    assert copy_.forward.args[0] is copy_ and spread_llama.model.forward.args[0] is spread_llama.model


# ------------------------------------------------------------------------------------------------ decoding
# OmniDraft is left out: its draft model has another tokenizer and runs apart; its target side is the chain round
@pytest.mark.parametrize("drafter", [name for name in DRAFTERS if name != "omnidraft"])
def test_every_drafter_is_greedy_identical_when_spread(spread_llama, tiny_llama, noisy_tiny_llama, drafter):
    if drafter == "pearl":  # its two threads would share offloaded layers (layers 1 and 3 here): it says so
        with pytest.raises(DraftScopeError, match="offload"):
            table_drafter(drafter, spread_llama, noisy_tiny_llama)
        return
    ids = tiny_llama.encode(PROMPTS[0])
    session = _session(spread_llama, table_drafter(drafter, spread_llama, noisy_tiny_llama), ids)
    assert session.generated_ids == hf_greedy(tiny_llama, ids, 24)
    plain = _session(tiny_llama, table_drafter(drafter, tiny_llama, noisy_tiny_llama), ids)
    assert session.stats.accepted == plain.stats.accepted  # the same drafts, accepted alike


@pytest.fixture(scope="module")
def headless_llama(tiny_llama):
    """The embedding and the (tied) LM head CPU-offloaded too: ``next(model.parameters())`` is on ``meta``."""
    device_map = {**spread_map(tiny_llama.n_layers), "model.embed_tokens": "cpu", "lm_head": "cpu"}
    return load_sharded("tiny-llama", device_map, dtype=torch.float32)


@pytest.mark.parametrize("drafter", ["ngram", "early-exit", "early-exit-vocabtrim", "kangaroo", "medusa", "hydra",
                                     "falcon", "fastdraft", "longspec"])
def test_embedding_and_head_offloaded(headless_llama, tiny_llama, drafter):
    """Drafters that embed tokens or read the head's rows themselves, where those weights are offloaded."""
    assert next(headless_llama.model.parameters()).device.type == "meta" and headless_llama.device == HERE
    ids = tiny_llama.encode(PROMPTS[0])
    reference = hf_greedy(tiny_llama, ids, 24)
    if drafter == "early-exit-vocabtrim":  # the trimmed head copies rows of the offloaded head
        favoured = tuple(dict.fromkeys(reference[::2]))
        built = table_drafter("early-exit", headless_llama, None, trim=len(favoured), favoured=favoured)
    else:
        built = table_drafter(drafter, headless_llama, None)
    assert _session(headless_llama, built, ids).generated_ids == reference


def test_copies_of_offloaded_layers_are_resident(spread_llama, tiny_llama):
    """S2D's exits, Falcon's and Hydra++'s layer and FastDraft's initial layers are copies of target layers: a copy
    of an offloaded layer reads its weights from the offload storage, and carries no hooks."""
    for i in (1, 3):  # CPU- and disk-offloaded
        copy_ = plain_deepcopy(spread_llama.model.model.layers[i])
        assert not any(hasattr(m, "_hf_hook") or "forward" in vars(m) for m in copy_.modules())
        for (name, got), want in zip(copy_.named_parameters(), tiny_llama.model.model.layers[i].parameters()):
            assert got.device == HERE and torch.equal(got, want), name
    assert next(spread_llama.model.model.layers[1].parameters()).device.type == "meta"  # the original stays so


def test_sorted_on_the_spread_target_and_serial_pearl(spread_llama, tiny_llama):
    """S2D cut from the target's own layers (layer 1 offloaded), PEARL with its two lanes in turn."""
    sorted_ = build_drafter("sorted", spread_llama, {})
    assert sorted_.base is spread_llama and not any(hasattr(m, "_hf_hook") for m in sorted_.exits.modules())
    base = table_drafter("early-exit", spread_llama, None)
    pearl = build_drafter("pearl", spread_llama, {"base": base, "parallel": False})
    ids = tiny_llama.encode(PROMPTS[1])
    for drafter in (sorted_, pearl):
        assert _session(spread_llama, drafter, ids).generated_ids == hf_greedy(tiny_llama, ids, 24), drafter.name


@pytest.mark.parametrize("drafter", ["ngram", "early-exit", "kangaroo", "easyspec", "model"])
def test_sliding_window_target_spread(spread_gemma, tiny_gemma, drafter):
    """Gemma 3 (sliding-window layers, a window of 8: crossed and rolled back across)."""
    ids = tiny_gemma.encode(PROMPTS[0])
    session = _session(spread_gemma, table_drafter(drafter, spread_gemma, tiny_gemma), ids, n=20)
    assert session.generated_ids == hf_greedy(tiny_gemma, ids, 20)


@pytest.mark.parametrize("target_name", ["llama", "gemma"])
@pytest.mark.parametrize("tree", ["3,2,1", "budget:8"])
def test_tree_rounds_spread(request, target_name, tree, noisy_tiny_llama):
    plain = request.getfixturevalue(f"tiny_{target_name}")
    spread = request.getfixturevalue(f"spread_{target_name}")
    draft = noisy_tiny_llama if target_name == "llama" else plain
    ids = plain.encode(PROMPTS[0])
    session = _session(spread, table_drafter("model", spread, draft), ids, n=24, gamma=4, tree=tree)
    assert session.generated_ids == hf_greedy(plain, ids, 24)
    assert session.stats.accepted > 0  # nodes were accepted: the kept path was gathered from every layer's cache


@pytest.mark.parametrize("attention", ["masked", "hybrid"])
def test_tree_forward_logits_match(spread_llama, tiny_llama, attention):
    ids = tiny_llama.encode(PROMPTS[1])
    tree = TokenTree([11, 12, 13, 14, 15], [-1, -1, 0, 0, 2])
    rows = {}
    for name, model in (("plain", tiny_llama), ("spread", spread_llama)):
        kv = CachedLM(model.model)
        kv.forward(ids)
        cache = TreeCache(kv, attention=attention)
        assert cache.attention == attention
        first = cache.forward(tree, [0, 1, 2])
        rows[name] = torch.cat([first, cache.forward(tree)])  # the rest in a second forward
        cache.keep([0, 2, 4])
        rows[name + "-after"] = kv.forward([5], logits_to_keep=1)
    torch.testing.assert_close(rows["spread"], rows["plain"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rows["spread-after"], rows["plain-after"], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ loading paths
def test_from_pretrained_places_weights_by_the_map(tmp_path, tiny_llama):
    """A checkpoint folder loaded with a device map: transformers puts each weight where the map says (layer 2 in
    the disk offload folder) and dispatches the model."""
    folder = tmp_path / "tiny"
    tiny_llama.model.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    device_map = spread_map(tiny_llama.n_layers, device="cpu", cpu_offload=(), disk=(2,))
    loaded = load_model(str(folder), allow_local=True, dtype=torch.float32, device_map=device_map)
    assert loaded.source == "local" and loaded.model.hf_device_map["model.layers.2"] == "disk"
    assert is_dispatched(loaded.model) and offloaded(loaded.model)
    ids = tiny_llama.encode(PROMPTS[0])
    with torch.inference_mode():
        got, want = (m.model(torch.tensor([ids])).logits for m in (loaded, tiny_llama))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert _session(loaded, table_drafter("early-exit", loaded, None), ids).generated_ids == hf_greedy(
        tiny_llama, ids, 24)


def test_auto_map_on_one_device(tiny_llama, monkeypatch):
    """"auto" where there is one device: no hooks, the same model; the environment variable routes load_model."""
    monkeypatch.setenv("DRAFTSCOPE_DEVICE_MAP", "auto")
    loaded = load_model("tiny-llama", dtype=torch.float32)
    assert loaded is load_sharded("tiny-llama", "auto", torch.float32) and not offloaded(loaded.model)
    assert loaded.device == HERE
    assert load_model("tiny-llama", device="cpu") is tiny_llama  # an explicit device: the plain model


def test_parsing():
    assert parse_device_map("balanced") == "balanced"
    assert parse_device_map("model.layers.0=0, lm_head=cpu") == {"model.layers.0": 0, "lm_head": "cpu"}
    assert parse_device_map('{"": 1}') == {"": 1}
    assert parse_max_memory("0=20GiB,cpu=60GiB") == {0: "20GiB", "cpu": "60GiB"}
    assert parse_max_memory(None) is None
    for bad in ("everywhere", "{not json", "=0"):
        with pytest.raises(DraftScopeError):
            parse_device_map(bad)
    with pytest.raises(DraftScopeError):
        parse_max_memory("0=lots")


# ------------------------------------------------------------------------------------------------ two real devices
def _split_drafter(name: str, spread, draft):
    """Drafters whose own layers cross from cuda:0 into the CPU layers where they can."""
    if name in ("early-exit", "easyspec"):
        return build_drafter(name, spread, {"exit_layer": 3})  # layers 0-1 on cuda:0, 2 on the CPU
    if name == "sorted":
        return build_drafter(name, spread, {})  # exits 1, 2, 3: tuned copies on both devices
    return table_drafter(name, spread, draft)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: layers on cuda:0 and on the CPU")
@pytest.mark.parametrize("drafter", ["ngram", "early-exit", "kangaroo", "easyspec", "sorted", "model", "medusa",
                                     "falcon", "fastdraft"])
def test_cuda_cpu_split(tiny_llama, noisy_tiny_llama, drafter):
    """Two devices that really compute: the embedding, layers 0-1 and the head on cuda:0, layers 2-3 executed on the
    CPU (a torch.device, so accelerate runs them there instead of offloading them); trees too."""
    cuda = torch.device("cuda", 0)
    device_map = {"model.embed_tokens": cuda, "model.rotary_emb": cuda, "model.layers.0": cuda,
                  "model.layers.1": cuda, "model.layers.2": HERE, "model.layers.3": HERE, "model.norm": cuda,
                  "lm_head": cuda}
    spread = load_sharded("tiny-llama", device_map, dtype=torch.float32)
    assert {str(module_device(layer)) for layer in spread.model.model.layers} == {"cuda:0", "cpu"}
    ids = tiny_llama.encode(PROMPTS[0])
    with torch.inference_mode():
        reference = spread.model.generate(torch.tensor([ids], device=cuda), max_new_tokens=24, do_sample=False,
                                          pad_token_id=spread.model.generation_config.pad_token_id)
        torch.testing.assert_close(spread.model(torch.tensor([ids], device=cuda)).logits.cpu(),
                                   tiny_llama.model(torch.tensor([ids])).logits, atol=1e-4, rtol=1e-4)
    for tree in ("", "3,2,1") if drafter in ("early-exit", "model") else ("",):
        session = _session(spread, _split_drafter(drafter, spread, noisy_tiny_llama), ids, tree=tree)
        assert session.generated_ids == reference[0, len(ids):].tolist(), (drafter, tree)
