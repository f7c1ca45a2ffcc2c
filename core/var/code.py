"""CoDe (collaborative decoding, Chen et al. 2024) on our small VARs: a large drafter makes the coarse scales, a small
refiner the fine ones.

``code_generate`` runs the large model on scales 0..N−1 (``stop_scale=N``), then the small model prefills, in one
block-causal forward, the token maps the drafter produced and generates scales N..K−1 (``start_scale=N``); the VQ
decoder renders the accumulated map. N = K is large-only, N = 0 small-only. Both models draw from one seeded
generator in scale order, so runs with the same class and seed share their first scales' random draws and any two
splits differ only in which model produced which scale.

Every run is a ``VARRun`` trace record (plain dataclass, numpy images): per scale its side, the model that made it,
its milliseconds and tokens; the canvas after every scale (the image decoded from scales 0..k); total latency; the
memory of the weights that ran plus the largest KV cache they held (measured from tensor sizes on CPU, CUDA's peak
allocation on a GPU); and, in ``compare_splits``, PSNR against large-only generation with the same class and seed and
the accuracy of the project's classifier on the batch. Pure torch; nothing here imports gradio or plotly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from core.errors import DraftScopeError
from core.runtime.models import module_param_bytes
from core.runtime.timing import elapsed, synchronize

MODEL_NAMES = ("large", "small")


@dataclass
class ScaleStep:
    """One scale of a generation: which model made it and how long it took."""

    index: int  # scale k (0 = the 1×1 start scale)
    side: int  # the token map is side × side
    model: str  # "large" (the drafter) or "small" (the refiner)
    ms: float  # wall time of this scale's forward + sampling (guidance doubles the batch)
    tokens: int  # tokens produced = side² × images in the batch


@dataclass
class VARRun:
    """A whole generation (one class, one seed, ``n`` images) and what it cost."""

    label: str  # "large-only", "small-only" or "CoDe N=…"
    split: int  # N: scales 0..N−1 by the large model, N..K−1 by the small one
    class_id: int
    seed: int
    n: int  # images in the batch
    scales: list[ScaleStep]
    images: np.ndarray  # (n, P, P, 3) uint8 (P = 32 for our models, 256 for the official ones)
    canvases: list[np.ndarray] = field(default_factory=list)  # per scale k: (n, P, P, 3) decoded from scales ≤ k
    total_ms: float = 0.0  # wall time of the whole generation (both models, prefill and decoding included)
    prefill_ms: float = 0.0  # the refiner's one-forward prefill of the drafter's scales (0 unless 0 < N < K)
    peak_memory_bytes: int = 0  # weights of the models that ran + the largest KV cache (see memory_source)
    memory_source: str = ""
    kv_bytes: int = 0  # the largest KV cache either model held (during a forward: history + the scale's own keys)
    kv_stored_bytes: int = 0  # the largest cache kept between scales (what a later scale reads; pruned by ScaleKV)
    kv_policy: str = "full"  # "full" or "scalekv@β"
    tokens_large: int = 0
    tokens_small: int = 0
    psnr_vs_large: float | None = None  # dB, against large-only with the same class and seed (None for large-only)
    class_accuracy: float | None = None  # the classifier's top-1 agreement with class_id (None: no classifier)
    indices: list[np.ndarray] = field(default_factory=list, repr=False)  # per scale (n, s, s) int64

    def to_json(self, with_images: bool = False) -> dict:
        """The CLI's JSON: scales, timings, memory, quality (images only when asked, as nested lists)."""
        out = {"label": self.label, "split": self.split, "class": self.class_id, "seed": self.seed, "n": self.n,
               "scales": [{"index": s.index, "side": s.side, "model": s.model, "ms": round(s.ms, 3),
                           "tokens": s.tokens} for s in self.scales],
               "total_ms": round(self.total_ms, 3), "prefill_ms": round(self.prefill_ms, 3),
               "peak_memory_bytes": self.peak_memory_bytes, "memory_source": self.memory_source,
               "kv_bytes": self.kv_bytes, "kv_stored_bytes": self.kv_stored_bytes, "kv_policy": self.kv_policy,
               "tokens_large": self.tokens_large, "tokens_small": self.tokens_small,
               "psnr_vs_large": None if self.psnr_vs_large is None else round(self.psnr_vs_large, 3),
               "class_accuracy": self.class_accuracy}
        if with_images:
            out["images"] = self.images.tolist()
        return out


def psnr(a_uint8: np.ndarray, b_uint8: np.ndarray) -> float:
    """PSNR in dB between two uint8 image batches (inf when identical)."""
    mse = float(np.mean((a_uint8.astype(np.float64) - b_uint8.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def check_pair(large, small, vq) -> None:
    """Both VARs must read and write the same tokenizer (scales, codebook, latent width)."""
    large._check_vq(vq)
    small._check_vq(vq)


def code_generate(large, small, vq, class_id: int, seed: int, split: int, n: int = 1, cfg: float = 1.5,
                  top_k: int | None = None, top_p: float | None = None, canvases: bool = True,
                  on_scale: Callable[[ScaleStep], None] | None = None, stop_scale: int | None = None,
                  label: str | None = None, presses: dict | None = None, attention_scores: bool = False) -> VARRun:
    """Generate ``n`` images of ``class_id`` with the large model on scales < split and the small one on the rest.

    stop_scale: stop after that many scales (step mode: the same seed replays the same first scales).
    on_scale(step) is called after every scale.
    presses: {"large": kv_hook, "small": kv_hook} (e.g. ``ScaleKVPress``); they need the attention probabilities,
    so any press turns on ``attention_scores`` (a float32 attention path: compare a pressed run with an unpressed
    one that also sets attention_scores=True).
    """
    K = len(vq.scales)
    if not 0 <= split <= K:
        raise DraftScopeError(f"split N must be in 0..{K} (the number of scales the large model makes), got {split}")
    num_classes = large.config.num_classes
    if not 0 <= class_id < num_classes:
        raise DraftScopeError(f"class must be in 0..{num_classes - 1}, got {class_id}")
    if n < 1:
        raise DraftScopeError(f"n must be at least 1, got {n}")
    stop = K if stop_scale is None else int(stop_scale)
    if not 1 <= stop <= K:
        raise DraftScopeError(f"stop_scale must be in 1..{K}, got {stop_scale}")
    check_pair(large, small, vq)
    device = large.device
    if small.device != device:
        raise DraftScopeError("the large and small VARs are on different devices")
    gen = torch.Generator(device=device).manual_seed(int(seed))
    cls_B = torch.full((n,), int(class_id), dtype=torch.long, device=device)
    steps: list[ScaleStep] = []

    def recorder(name: str):
        def cb(k: int, idx_k: torch.Tensor, f_hat: torch.Tensor, ms: float) -> None:
            step = ScaleStep(k, vq.scales[k], name, ms, int(idx_k.numel()))
            steps.append(step)
            if on_scale is not None:
                on_scale(step)
        return cb

    cuda = device.type == "cuda"
    synchronize(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    presses = presses or {}
    scores = attention_scores or bool(presses)
    used, kv_peak, kv_stored, prefill_ms = [], 0, 0, 0.0

    def kv_of(model, name: str, first: int, last: int) -> tuple[int, int]:
        per = [model.kv_bytes_per_scale[k] for k in range(first, last) if k in model.kv_bytes_per_scale]
        press = presses.get(name)
        stored = [press.bytes_after.get(k, model.kv_bytes_per_scale.get(k, 0)) if press is not None
                  else model.kv_bytes_per_scale.get(k, 0) for k in range(first, min(last, K - 1))]
        return max(per or [0]), max(stored or [0])

    t0 = time.perf_counter()
    idx: list[torch.Tensor] = []
    n_large = min(split, stop)
    if n_large > 0:
        idx = large.generate(vq, cls_B, cfg=cfg, top_k=top_k, top_p=top_p, generator=gen, stop_scale=n_large,
                             on_scale=recorder("large"), attention_scores=scores, kv_hook=presses.get("large"))
        peak_l, stored_l = kv_of(large, "large", 0, n_large)
        kv_peak, kv_stored = max(kv_peak, peak_l), max(kv_stored, stored_l)
        used.append(large)
        large.clear_cache()
    if stop > n_large:
        t_small = time.perf_counter()
        idx = small.generate(vq, cls_B, cfg=cfg, top_k=top_k, top_p=top_p, generator=gen, start_scale=n_large,
                             prefix_idx=idx or None, stop_scale=stop, on_scale=recorder("small"),
                             attention_scores=scores, kv_hook=presses.get("small"))
        small_ms = elapsed(t_small, device) * 1000
        if n_large:
            prefill_ms = max(0.0, small_ms - sum(s.ms for s in steps if s.model == "small"))
        peak_s, stored_s = kv_of(small, "small", n_large, stop)
        kv_peak, kv_stored = max(kv_peak, peak_s), max(kv_stored, stored_s)
        used.append(small)
        small.clear_cache()
    total_ms = elapsed(t0, device) * 1000
    if cuda:
        peak, source = int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    else:
        peak, source = sum(module_param_bytes(m) for m in used) + kv_peak, "weights + largest KV cache (tensor sizes)"

    with torch.no_grad():
        from core.var.data import to_uint8

        images = to_uint8(vq.decode_indices(idx))  # after scale stop−1: the final image when stop = K
        canv = [to_uint8(vq.decode_indices(idx[:k + 1])) for k in range(len(idx))] if canvases else []
    name = label or ("large-only" if split == K else "small-only" if split == 0 else f"CoDe N={split}")
    return VARRun(label=name, split=split, class_id=int(class_id), seed=int(seed), n=n, scales=steps, images=images,
                  canvases=canv, total_ms=total_ms, prefill_ms=prefill_ms, peak_memory_bytes=peak,
                  memory_source=source, kv_bytes=kv_peak, kv_stored_bytes=kv_stored,
                  tokens_large=sum(s.tokens for s in steps if s.model == "large"),
                  tokens_small=sum(s.tokens for s in steps if s.model == "small"),
                  indices=[t.cpu().numpy() for t in idx])


def compare_splits(large, small, vq, class_id: int, seed: int, splits: list[int] | tuple[int, ...], n: int = 1,
                   cfg: float = 1.5, top_k: int | None = None, top_p: float | None = None, classifier=None,
                   canvases: bool = True) -> list[VARRun]:
    """Large-only first, then every split in ``splits`` (K and 0 included when asked), each with PSNR against the
    large-only images of the same class and seed and, with a classifier, its accuracy on the batch."""
    K = len(vq.scales)
    reference = code_generate(large, small, vq, class_id, seed, K, n, cfg, top_k, top_p, canvases)
    runs = [reference]
    for split in splits:
        if split == K:
            continue
        run = code_generate(large, small, vq, class_id, seed, split, n, cfg, top_k, top_p, canvases)
        run.psnr_vs_large = psnr(run.images, reference.images)
        runs.append(run)
    if classifier is not None:
        for run in runs:
            run.class_accuracy = classify(classifier, run.images, class_id)
    return runs


def classify(classifier, images_uint8: np.ndarray, class_id: int) -> float | None:
    """Share of images the classifier assigns to class_id (None without a classifier: the official models have none)."""
    if classifier is None:
        return None
    x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return round(classifier.accuracy(x, torch.full((x.shape[0],), int(class_id))), 4)
