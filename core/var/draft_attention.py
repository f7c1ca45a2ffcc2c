"""DraftAttention on VAR's scale grids: pooled low-resolution attention picks which tiles of the current scale's
token map each query tile reads at full resolution.

At a scale whose side is at least ``min_side`` (the largest scales: 6×6 and 8×8 here), every layer's attention is
replaced as follows. The queries of scale k (a side × side grid) attend to the cached tokens of the coarser scales
and to their own scale. Queries and the current scale's keys are average-pooled per ``tile × tile`` block
(``core.attention.draft_attention.select_blocks`` with grid ``(1, side, side)``), the pooled draft map keeps the top
``1 − r`` fraction of (query tile, key tile) pairs per head, and attention runs over those pairs plus, densely, every
coarser-scale key (they are few, and hold the global layout). The dense output is computed alongside, so each layer
reports its relative output error and the share of query·key pairs skipped; the image is compared with dense
generation of the same class and seed. One (layer, head) of each sparse scale keeps its pooled map, the selected
tiles and the true attention over the current scale for display. Pure torch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.attention.draft_attention import relative_error, select_blocks
from core.errors import DraftScopeError
from core.runtime.timing import elapsed


@dataclass
class GridLayerStat:
    scale: int
    layer: int
    flop_sparsity: float  # share of the dense query·key pairs of this scale skipped (coarser keys count as computed)
    rel_error: float  # ||sparse − dense|| / ||dense|| of this layer's attention output


@dataclass
class GridMap:
    """What one (scale, layer, head) looked like, for display (batch row 0: the class-conditional row)."""

    scale: int
    side: int
    layer: int
    head: int
    tile: int
    pooled: np.ndarray  # (nb, nb) draft map over tiles of the current scale
    keep: np.ndarray  # (nb, nb) bool: tile pairs computed at full resolution
    attention: np.ndarray  # (n, n) dense attention of the scale's queries over its own tokens (row-major)


@dataclass
class VARDraftRun:
    sparsity: float
    tile: int
    min_side: int
    class_id: int
    seed: int
    images: np.ndarray  # (n, 32, 32, 3) uint8 with DraftAttention
    dense_images: np.ndarray  # the same class and seed, dense attention
    psnr_vs_dense: float
    flop_sparsity: float  # over every sparse scale and layer
    mean_rel_error: float
    stats: list[GridLayerStat] = field(default_factory=list)
    maps: list[GridMap] = field(default_factory=list)
    ms: float = 0.0
    dense_ms: float = 0.0

    def to_json(self) -> dict:
        return {"sparsity": self.sparsity, "tile": self.tile, "min_side": self.min_side,
                "psnr_vs_dense": None if math.isinf(self.psnr_vs_dense) else round(self.psnr_vs_dense, 3),
                "flop_sparsity": round(self.flop_sparsity, 4), "mean_rel_error": round(self.mean_rel_error, 5),
                "layers": [{"scale": s.scale, "layer": s.layer, "flop_sparsity": round(s.flop_sparsity, 4),
                            "rel_error": round(s.rel_error, 5)} for s in self.stats]}


class _GridOverride:
    """The per-layer attention replacement (installed on ``SelfAttention.override``)."""

    def __init__(self, layer: int, sparsity: float, tile: int, min_side: int, head: int, run: dict):
        self.layer, self.sparsity, self.tile, self.min_side, self.head, self.run = layer, sparsity, tile, min_side, \
            head, run

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
        n, T = q.shape[2], k.shape[2]
        side = math.isqrt(n)
        if side * side != n or side < self.min_side or T < n:
            return None
        prefix = T - n
        dense = F.scaled_dot_product_attention(q, k, v)
        sel = select_blocks(q, k[:, :, prefix:], self.sparsity, (1, self.tile, self.tile), grid=(1, side, side))
        keep_nn = sel.keep[..., sel.q_blocks[:, None], sel.k_blocks[None, :]]  # (B, H, n, n)
        mask = torch.cat([torch.ones(*keep_nn.shape[:3], prefix, dtype=torch.bool, device=q.device), keep_nn], -1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        scale = self.run["scale_of_side"][side]
        self.run["stats"].append(GridLayerStat(scale, self.layer, 1.0 - mask.sum().item() / mask.numel(),
                                               relative_error(out, dense)))
        if self.layer == self.run["map_layer"]:
            h = min(self.head, q.shape[1] - 1)
            att = ((q[0, h].float() @ k[0, h].float().T) * q.shape[-1] ** -0.5).softmax(-1)[:, prefix:]
            self.run["maps"].append(GridMap(scale, side, self.layer, h, self.tile, sel.pooled[0, h].cpu().numpy(),
                                            sel.keep[0, h].cpu().numpy(), att.cpu().numpy()))
        return out


@torch.no_grad()
def draft_attention_generate(model, vq, class_id: int, seed: int, sparsity: float = 0.75, tile: int = 2,
                             min_side: int = 6, n: int = 1, cfg: float = 1.5, map_layer: int | None = None,
                             map_head: int = 0, top_k: int | None = None, top_p: float | None = None) -> VARDraftRun:
    """Generate with DraftAttention on the scales of side ≥ min_side and, with the same seed, densely."""
    from core.var.code import psnr
    from core.var.data import to_uint8

    if not 0.0 <= sparsity < 1.0:
        raise DraftScopeError(f"sparsity must be in [0, 1), got {sparsity}")
    if tile < 1:
        raise DraftScopeError(f"tile must be ≥ 1, got {tile}")
    if not any(s >= min_side for s in model.scales[1:]):
        raise DraftScopeError(f"no scale of side ≥ {min_side} in {tuple(model.scales)}")
    depth = len(model.blocks)
    map_layer = depth // 2 if map_layer is None else int(map_layer)
    if not 0 <= map_layer < depth:
        raise DraftScopeError(f"layer must be in 0..{depth - 1}, got {map_layer}")
    device = model.device
    cls = torch.full((n,), int(class_id), dtype=torch.long, device=device)

    def run_once() -> tuple[list, float]:
        gen = torch.Generator(device=device).manual_seed(int(seed))
        t0 = time.perf_counter()
        out = model.generate(vq, cls, cfg=cfg, top_k=top_k, top_p=top_p, generator=gen)
        return out, elapsed(t0, device) * 1000

    dense_idx, dense_ms = run_once()
    run = {"stats": [], "maps": [], "map_layer": map_layer,
           "scale_of_side": {s: k for k, s in enumerate(model.scales)}}
    try:
        for i, block in enumerate(model.blocks):
            block.attn.override = _GridOverride(i, sparsity, tile, min_side, map_head, run)
        idx, ms = run_once()
    finally:
        for block in model.blocks:
            block.attn.override = None
        model.clear_cache()
    images, dense_images = to_uint8(vq.decode_indices(idx)), to_uint8(vq.decode_indices(dense_idx))
    stats = run["stats"]
    return VARDraftRun(sparsity, tile, min_side, int(class_id), int(seed), images, dense_images,
                       psnr(images, dense_images), float(np.mean([s.flop_sparsity for s in stats])),
                       float(np.mean([s.rel_error for s in stats])), stats, run["maps"], ms, dense_ms)
