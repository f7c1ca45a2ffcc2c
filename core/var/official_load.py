"""Load the official VAR checkpoints into a ``VARBundle``: the paper's VAR-d30 drafter and VAR-d16 refiner on the
official tokenizer, for CoDe, ScaleKV and DraftAttention at 256 px.

Files (the Hugging Face repo ``FoundationVision/var``): ``vae_ch160v4096z32.pth`` (tokenizer) and
``var_d{16,20,24,30}.pth`` (transformers). They come from a local directory (``$DRAFTSCOPE_VAR_OFFICIAL``, else
``<cache>/var-official``) or, where the Hub is the model source (``core.runtime.models``: a Space, or
``DRAFTSCOPE_MODEL_SOURCE=hub``), from the Hub through ``hf_hub_download``. Every file is read with
``torch.load(weights_only=True)`` (memory-mapped where the format allows), its sizes are read off its tensors (so
reduced-width files in the official layout load the same way: the offline tests), the depth must match the file
name, the memory the weights will take is checked against what is free before anything is materialised, and the
state dict is loaded strictly; any mismatch is one ``DraftScopeError`` naming the file and the keys. Transformers run
in bfloat16 on CUDA (the official inference runs under fp16 autocast) and float32 on CPU; the tokenizer in float32.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import torch

from core.budget import fmt_bytes, refuse_over
from core.errors import DraftScopeError
from core.var.bundle import VARBundle, default_device
from core.var.official import DEPTHS, OfficialVAR, OfficialVARConfig
from core.var.official_vq import PATCH_NUMS, OfficialVQConfig, OfficialVQVAE, vq_config_from_state

HUB_REPO = "FoundationVision/var"
VQ_FILE = "vae_ch160v4096z32.pth"
ENV_DIR = "DRAFTSCOPE_VAR_OFFICIAL"  # a directory holding the official .pth files
PAPER_PAIR = (30, 16)  # CoDe's drafter and refiner in the paper
MEMORY_HEADROOM = 1.2  # activations, caches and the allocator's slack on top of the weights
_NAME = re.compile(r"^official-d(\d+)-d(\d+)$")
_LOCK = threading.Lock()
_CACHE: dict = {}


def var_file(depth: int) -> str:
    return f"var_d{depth}.pth"


def bundle_name(drafter: int = PAPER_PAIR[0], refiner: int = PAPER_PAIR[1]) -> str:
    return f"official-d{drafter}-d{refiner}"


def parse_bundle_name(name: str) -> tuple[int, int]:
    """'official-d30-d16' → (30, 16)."""
    match = _NAME.match(str(name).strip())
    if not match:
        raise DraftScopeError(f"unknown VAR bundle '{name}'; use tiny or official-d<drafter>-d<refiner>, e.g. "
                              f"{bundle_name()}")
    return int(match[1]), int(match[2])


def default_dir() -> Path:
    from core.runtime.models import cache_dir

    return Path(os.environ.get(ENV_DIR) or cache_dir() / "var-official")


def hub_mode() -> bool:
    """The Hub is the model source here (the rule ``core.runtime.models`` uses for every model)."""
    from core.runtime.models import _model_source

    return _model_source() == "hub"


def where(drafter: int = PAPER_PAIR[0], refiner: int = PAPER_PAIR[1], root: str | Path | None = None) -> str | None:
    """Where the pair would load from: a directory holding all three files, "hub", or None (not available)."""
    folder = Path(root) if root is not None else default_dir()
    if all((folder / f).is_file() for f in (VQ_FILE, var_file(drafter), var_file(refiner))):
        return str(folder)
    return "hub" if root is None and hub_mode() and {drafter, refiner} <= set(DEPTHS) else None


# --------------------------------------------------------------------------------------------- reading files
def _line(exc: Exception) -> str:
    """An exception as one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _fetch(source: str, filename: str) -> Path:
    """A local path of one official file (downloaded from the Hub when source is "hub")."""
    if source != "hub":
        path = Path(source) / filename
        if not path.is_file():
            raise DraftScopeError(f"{filename} is missing in {source}; download it from "
                                  f"https://huggingface.co/{HUB_REPO}/resolve/main/{filename}")
        return path
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(HUB_REPO, filename))
    except Exception as exc:  # offline, no such file, …: one line
        raise DraftScopeError(f"could not download {filename} from the Hub repo {HUB_REPO}: {_line(exc)}") from None


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict of tensors from an official .pth (memory-mapped where the file format allows)."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DraftScopeError(f"{path.name} is not a readable PyTorch checkpoint: {_line(exc)}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DraftScopeError(f"{path.name} does not hold a state dict of tensors")
    return state


def var_config_from_state(state: dict, filename: str, depth: int, scales: tuple[int, ...]) -> OfficialVARConfig:
    """The transformer's sizes read off its tensors; its depth must be the one its file name says."""
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
    try:
        width = state["class_emb.weight"].shape[1]
        scale_mul = state.get("blocks.0.attn.scale_mul_1H11")
        cfg = OfficialVARConfig(
            depth=len(blocks), width=width, heads=scale_mul.shape[1] if scale_mul is not None else len(blocks),
            vocab_size=state["head.weight"].shape[0], embed_dim=state["word_embed.weight"].shape[1], scales=scales,
            num_classes=state["class_emb.weight"].shape[0] - 1,
            mlp_ratio=state["blocks.0.ffn.fc1.weight"].shape[0] / width,
            shared_aln="blocks.0.ada_gss" in state, attn_l2_norm=scale_mul is not None)
    except (KeyError, AttributeError) as exc:
        raise DraftScopeError(f"{filename} is not an official VAR transformer (no {exc})") from None
    if cfg.depth != depth:
        raise DraftScopeError(f"{filename} holds a VAR with {cfg.depth} blocks (VAR-d{cfg.depth}?), not d{depth}: "
                              "check the file name")
    levels, positions = state["lvl_embed.weight"].shape[0], state["pos_1LC"].shape[1]
    if (levels, positions) != (len(scales), cfg.seq_len):
        raise DraftScopeError(f"{filename} has {levels} scales and {positions} tokens; the scales {scales} have "
                              f"{len(scales)} and {cfg.seq_len}")
    return cfg


def check_layout(model: torch.nn.Module, state: dict, filename: str) -> None:
    """Strict comparison of a model's state dict with a file's: missing keys, unexpected keys, other shapes."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    problems = []
    for label, keys in (("missing", sorted(set(want) - set(got))), ("unexpected", sorted(set(got) - set(want))),
                        ("shape mismatch", [f"{k} {got[k]} vs {want[k]}" for k in sorted(set(want) & set(got))
                                            if got[k] != want[k] and k != "quantize.ema_vocab_hit_SV"])):
        if keys:
            problems.append(f"{label}: {', '.join(keys[:4])}" + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else ""))
    if problems:
        raise DraftScopeError(f"{filename} does not fit the official layout — {'; '.join(problems)}")


def _materialise(cls, config, state: dict, filename: str, device: torch.device, dtype: torch.dtype):
    """Build ``cls(config)`` without allocating (meta device), load ``state`` strictly into it, move it."""
    with torch.device("meta"):
        model = cls(config)
    check_layout(model, state, filename)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------- memory
def param_bytes(cls, config, dtype: torch.dtype) -> int:
    """Bytes the weights and buffers of ``cls(config)`` take in ``dtype`` (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = cls(config)
    size = torch.empty((), dtype=dtype).element_size()
    return sum(t.numel() * (size if t.is_floating_point() else t.element_size())
               for t in [*model.parameters(), *model.buffers()])


def free_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on ``device`` (None: unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            info = dict(line.split(":", 1) for line in fh)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def dtype_for(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


# --------------------------------------------------------------------------------------------- the bundle
def load_official(depth_drafter: int = PAPER_PAIR[0], depth_refiner: int = PAPER_PAIR[1],
                  source: str | Path | None = None, device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None, scales: tuple[int, ...] = PATCH_NUMS) -> VARBundle:
    """The official tokenizer, VAR-d{depth_drafter} (``large``) and VAR-d{depth_refiner} (``small``), loaded once per
    (source, depths, device, dtype). source: a directory, "hub", or None (the default directory, else the Hub where
    it is the model source). No classifier: ``classifier`` is None."""
    dev = torch.device(device) if device is not None else default_device()
    dtype = dtype or dtype_for(dev)
    src = str(source) if source is not None else where(depth_drafter, depth_refiner)
    if src is None:
        raise DraftScopeError(f"the official VAR files ({VQ_FILE}, {var_file(depth_drafter)}, "
                              f"{var_file(depth_refiner)}) are not in {default_dir()} and the Hub is not the model "
                              f"source here; put them there (or set {ENV_DIR}) or run with DRAFTSCOPE_MODEL_SOURCE=hub")
    key = (src, depth_drafter, depth_refiner, str(dev), str(dtype), tuple(scales))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(src, depth_drafter, depth_refiner, dev, dtype, tuple(scales))
        return _CACHE[key]


def _load(src: str, drafter: int, refiner: int, dev: torch.device, dtype: torch.dtype, scales) -> VARBundle:
    if src == "hub":  # check memory before downloading, from the official sizes
        configs = [(OfficialVQVAE, OfficialVQConfig(scales=scales), torch.float32)] + \
            [(OfficialVAR, OfficialVARConfig(depth=d, scales=scales), dtype) for d in (drafter, refiner)]
        _check_memory(configs, dev, drafter, refiner)
    names = [VQ_FILE, var_file(drafter), var_file(refiner)]
    states = {name: read_state(_fetch(src, name)) for name in names}
    vq_cfg = vq_config_from_state(states[VQ_FILE], scales)
    var_cfgs = [var_config_from_state(states[var_file(d)], var_file(d), d, scales) for d in (drafter, refiner)]
    _check_memory([(OfficialVQVAE, vq_cfg, torch.float32)] + [(OfficialVAR, c, dtype) for c in var_cfgs], dev,
                  drafter, refiner)
    vq = _materialise(OfficialVQVAE, vq_cfg, states[VQ_FILE], VQ_FILE, dev, torch.float32)
    large, small = (_materialise(OfficialVAR, c, states[n], n, dev, dtype) for c, n in zip(var_cfgs, names[1:]))
    for model, name in ((large, names[1]), (small, names[2])):
        try:
            model._check_vq(vq)
        except DraftScopeError as exc:
            raise DraftScopeError(f"{name} does not fit {VQ_FILE}: {exc}") from None
    meta = {"source": src, "official": True, "dtype": str(dtype).replace("torch.", ""),
            "vq": {"file": VQ_FILE, "params": sum(p.numel() for p in vq.parameters())},
            "large": {"file": names[1], "params": large.param_count(), "width": large.config.width},
            "small": {"file": names[2], "params": small.param_count(), "width": small.config.width}}
    return VARBundle(vq, large, small, None, meta, dev, name=bundle_name(drafter, refiner), class_names=())


def _check_memory(configs: list, dev: torch.device, drafter: int, refiner: int) -> None:
    need = int(sum(param_bytes(cls, cfg, dt) for cls, cfg, dt in configs) * MEMORY_HEADROOM)
    free = free_bytes(dev)
    refuse_over(f"loading VAR-d{drafter} + VAR-d{refiner} + the tokenizer", need, free,
                f"weights {fmt_bytes(need / MEMORY_HEADROOM)} plus {MEMORY_HEADROOM - 1:.0%} headroom, free on {dev}",
                "free memory or pick smaller depths")
