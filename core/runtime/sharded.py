"""Loading a model spread over several devices with accelerate: a target too big for one GPU.

``load_sharded(name, device_map, dtype, max_memory)`` (or ``load_model(..., device_map=...)``, or
``DRAFTSCOPE_DEVICE_MAP=auto`` for every target loaded without an explicit device) loads a preset, a Hugging Face id
or a local folder with its weights going straight to their devices (``from_pretrained(device_map=...)``):

- ``"auto"`` / ``"balanced"`` / ``"balanced_low_0"`` / ``"sequential"``: accelerate places whole decoder layers over
  the visible GPUs (balanced: evenly; sequential: fill GPU 0 first), bounded by ``max_memory`` ({0: "20GiB", 1:
  "20GiB", "cpu": "60GiB"}, or ``DRAFTSCOPE_MAX_MEMORY="0=20GiB,1=20GiB,cpu=60GiB"``). What fits on no GPU is
  offloaded to the CPU, and past ``max_memory["cpu"]`` to disk: the last resort (every token then reloads those
  weights, which is slow; a line on stderr says so);
- an explicit map {module name: device} ("model.embed_tokens": 0, "model.layers.0": 0, ..., "lm_head": 1); a value
  "cpu" or "disk" offloads the module (its weights wait there and are loaded to the main device at each call).

Presets built in code (``tiny-*``) have no checkpoint: they are built on the CPU and then dispatched
(``accelerate.dispatch_model``), the same hooks without the straight-to-device loading.

A dispatched model runs everywhere a model on one device does: ``LoadedModel.device`` is where token ids go (the
input embedding's device), accelerate's hooks move activations between blocks, KV caches live beside their layers,
and code that calls blocks directly moves its tensors to the block's device (``core.runtime.devices``).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import sys
import threading
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from core.errors import DraftScopeError
from core.runtime.devices import offloaded
from core.runtime.models import (
    PRESETS,
    LoadedModel,
    _check_gguf,
    _check_name,
    _load_tiny,
    _model_source,
    _once,
    _pretrained,
    _read_converted,
    cache_dir,
    default_dtype,
    parse_dtype,
)

AUTO_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_SHARDED: dict[tuple, LoadedModel] = {}  # (name, map, max_memory, dtype) → model
_WARN_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------- parsing
def _device_value(value):
    """A device map / max_memory key or value as accelerate takes it: GPU indices as ints, names as strings."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value.strip() if isinstance(value, str) else value


def parse_device_map(value: str | dict | None) -> str | dict:
    """A device map from an argument or ``DRAFTSCOPE_DEVICE_MAP``: one of ``AUTO_MAPS``, a JSON object, or
    ``module=device,...`` pairs (GPU indices as numbers); default "auto"."""
    if value is None or value == "":
        value = os.environ.get("DRAFTSCOPE_DEVICE_MAP") or "auto"
    if isinstance(value, dict):
        if not value:
            raise DraftScopeError("the device map is empty")
        return {str(k): _device_value(v) for k, v in value.items()}
    text = str(value).strip()
    if text in AUTO_MAPS:
        return text
    if text.startswith("{"):
        try:
            return parse_device_map(json.loads(text))
        except ValueError as exc:
            raise DraftScopeError(f"the device map is not valid JSON: {exc}") from None
    pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() for p in pairs):
        raise DraftScopeError(f"device map '{text}': use one of {', '.join(AUTO_MAPS)}, a JSON object or "
                              "module=device pairs (model.layers.0=0,lm_head=cpu)")
    return {k.strip(): _device_value(v) for k, v in pairs}


def parse_max_memory(value: str | dict | None) -> dict | None:
    """{device: size} from an argument or ``DRAFTSCOPE_MAX_MEMORY`` (``0=20GiB,1=20GiB,cpu=60GiB``); None: no bound."""
    if value is None or value == "":
        value = os.environ.get("DRAFTSCOPE_MAX_MEMORY") or None
    if value is None:
        return None
    if isinstance(value, dict):
        return {_device_value(k): v for k, v in value.items()}
    pairs = [p.split("=", 1) for p in str(value).split(",") if p.strip()]
    if not pairs or any(len(p) != 2 or not re.fullmatch(r"\s*\d+(\.\d+)?\s*[KMGT]?i?B\s*", p[1]) for p in pairs):
        raise DraftScopeError(f"max memory '{value}': use device=size pairs, e.g. 0=20GiB,1=20GiB,cpu=60GiB")
    return {_device_value(k): v.strip() for k, v in pairs}


def _key(value) -> str:
    """A cache key: torch.device("cpu") (a block run on the CPU) and "cpu" (a block offloaded to it) stay apart."""
    return json.dumps(value, sort_keys=True, default=repr)


# --------------------------------------------------------------------------------------------- loading
def load_sharded(name: str, device_map: str | dict | None = "auto", dtype: torch.dtype | str | None = None,
                 max_memory: str | dict | None = None, allow_local: bool = False) -> LoadedModel:
    """``name`` (by ``load_model``'s rules) with its blocks placed by ``device_map`` within ``max_memory`` (see the
    module docstring), once per process for the same arguments. The dtype defaults to the GPUs' (bf16) where there
    are GPUs, else float32."""
    name = (name or "").strip()
    if not name:
        raise DraftScopeError("no model given")
    kind = _check_name(name, allow_local)
    device_map, max_memory = parse_device_map(device_map), parse_max_memory(max_memory)
    first = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = parse_dtype(dtype) if isinstance(dtype, str) else (dtype or default_dtype(first))
    key = (name, _key(device_map), _key(max_memory), dtype)
    return _once(_SHARDED, key, lambda: _load(name, kind, device_map, dtype, max_memory))


def _offload_folder(name: str) -> str:
    """This process's disk-offload folder for ``name`` (removed when the process exits)."""
    folder = cache_dir() / "offload" / f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}-{os.getpid()}"
    if not folder.exists():
        folder.mkdir(parents=True)
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return str(folder)


def _load(name: str, kind: str, device_map, dtype: torch.dtype, max_memory) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _offload_folder(name)
    placement = dict(device_map=device_map, max_memory=max_memory, offload_folder=folder)

    def pretrained(path: str | Path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False,
                                                    attn_implementation="sdpa", **placement)

    preset = PRESETS.get(name)
    if kind == "preset" and preset.tiny_config is not None:
        loaded = _load_tiny(preset, torch.device("cpu"), dtype)
        model, tokenizer, source = dispatch(loaded.model, device_map, max_memory, folder), loaded.tokenizer, "tiny"
    elif kind in ("local", "hub") or (_model_source() == "hub" and preset.hub_id):
        path = name if kind != "preset" else preset.hub_id
        tokenizer = _pretrained(name, lambda: AutoTokenizer.from_pretrained(path, trust_remote_code=False))
        model, source = _pretrained(name, lambda: pretrained(path)), "hub" if kind != "local" else "local"
    else:
        _check_gguf(preset)
        tokenizer, model = _read_converted(preset, lambda out: (AutoTokenizer.from_pretrained(out), pretrained(out)))
        source = "gguf-cache"
    model.eval()
    model.requires_grad_(False)
    _report(name, model)
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, source=source)


def dispatch(model: nn.Module, device_map: str | dict, max_memory: dict | None = None,
             offload_folder: str | None = None) -> nn.Module:
    """Spread a model that sits in CPU memory by ``device_map`` (a name of ``AUTO_MAPS`` is resolved by accelerate
    within ``max_memory``, whole decoder layers at a time), attaching accelerate's device hooks; returns the model."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    if isinstance(device_map, str):
        if device_map not in AUTO_MAPS:
            raise DraftScopeError(f"unknown device map '{device_map}'; choose one of {', '.join(AUTO_MAPS)}")
        no_split = list(getattr(model, "_no_split_modules", None) or [])
        if device_map != "sequential":
            max_memory = get_balanced_memory(model, max_memory, no_split_module_classes=no_split,
                                             low_zero=device_map == "balanced_low_0")
        device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split)
    if "disk" in device_map.values() and offload_folder is None:
        raise DraftScopeError("a device map with 'disk' needs an offload folder")
    skip = getattr(model, "_skip_keys_device_placement", None)
    dispatch_model(model, device_map=device_map, offload_dir=offload_folder, skip_keys=skip)
    model.hf_device_map = dict(device_map)
    return model


def placement(model: nn.Module) -> dict[str, int]:
    """How many blocks of the device map sit on each device ({"cuda:0": 14, "cpu": 2, ...}); one entry for a model
    on one device."""
    device_map = getattr(model, "hf_device_map", None)
    if not device_map:
        return {str(next(model.parameters()).device): 1}
    return dict(Counter(str(d) for d in device_map.values()))


def _report(name: str, model: nn.Module) -> None:
    """One stderr line: where the blocks went, and a warning when weights are offloaded (every token reloads them)."""
    spread = ", ".join(f"{n} on {d}" for d, n in placement(model).items())
    held = offloaded(model)
    note = f"; {len(held)} weights offloaded (cpu/disk): slow, reloaded at every call" if held else ""
    with _WARN_LOCK:
        print(f"[draftscope] {name}: {spread}{note}", file=sys.stderr, flush=True)
