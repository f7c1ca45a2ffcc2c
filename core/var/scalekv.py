"""ScaleKV (Li et al. 2025) on our small VAR: scale-aware KV budgets from the Attention Selectivity Index.

1. Calibration (``attention_selectivity``): generate a few samples with full attention recorded. For every layer l
   and scale k ≥ 1 (the queries of scale k read the cache of scales 0..k):
     current share   c = attention mass the queries put on the tokens of their own scale k,
     concentration   h = share of the attention on history (scales < k) that falls on its top ``topk_frac`` keys,
     ASI(l, k) = c · h, averaged over queries, heads, guidance rows and samples.
   Low ASI: attention is dispersed over a broad history → the layer is a *drafter* at that scale (it needs a large
   cache). High ASI: local, concentrated attention → a *refiner* (a small cache is enough). Per scale the
   ``drafter_frac`` lowest-ASI layers are drafters.
2. Budgets (``scale_budgets``): the history read by scale j has H_j = Σ_{i<j} s_i² tokens; a uniform policy keeps
   U_j = max(min_keep, round(β·H_j)) of them in every layer. ScaleKV keeps the same total, depth·U_j, but gives each
   refiner ρ_j·U_j with ρ_j decaying linearly from ``rho_first`` at the first compressed scale to ``rho_last`` at the
   last, and splits the rest evenly between the drafters (no layer above H_j; what a cap frees goes back to the
   refiners). No layer can keep more than it holds (what it kept for scale j−1 plus scale j−1's keys); what such a
   cap frees goes to layers with room, drafters first. So total KV memory equals the uniform policy's at every
   scale.
3. Pruning (``ScaleKVPress`` as the VAR's ``kv_hook``, after scale k is cached, for the scale k+1 that reads it):
   the observation window is the 16 centroid tokens of a 4×4 partition of scale k's map (all tokens when k's side is
   below 4); every cached key is scored per head by the window queries' mean attention to it, and the top-scored keys
   are kept (window keys first), in their original order. The uniform baseline (SnapKV style) keeps U_j in every
   layer, scored from the last 16 queries of scale k in raster order.
Pure torch; nothing here imports gradio or plotly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from core.errors import DraftScopeError
from core.runtime.cache import tensor_bytes
from core.runtime.timing import elapsed

WINDOW_GRID = 4  # observation window: centroids of a WINDOW_GRID × WINDOW_GRID partition of the current scale's map


@dataclass
class ASIReport:
    """Calibration result: arrays (depth, K); scale 0 (the start token, nothing to read) holds NaN."""

    asi: np.ndarray
    current_share: np.ndarray
    concentration: np.ndarray
    labels: list[list[str]]  # [layer][scale]: "drafter" | "refiner" | "" (scale 0)
    samples: int
    topk_frac: float
    drafter_frac: float

    def drafters(self, scale: int) -> list[int]:
        return [layer for layer, row in enumerate(self.labels) if row[scale] == "drafter"]


@dataclass
class BudgetPlan:
    """KV entries each layer keeps of the history read by scale j: budgets[layer][j] (j = 0 unused, 0)."""

    beta: float
    policy: str  # "scalekv" | "uniform"
    history: list[int]  # H_j per scale
    uniform: list[int]  # U_j per scale
    budgets: list[list[int]]  # [layer][scale]
    labels: list[list[str]] = field(default_factory=list)
    rho: list[float] = field(default_factory=list)  # refiner budget / uniform budget aimed at, per scale

    def total(self, scale: int) -> int:
        return sum(row[scale] for row in self.budgets)


def window_positions(side: int, grid: int = WINDOW_GRID) -> list[int]:
    """Raster positions of the centroid tokens of a grid × grid partition of a side × side map (all of them when
    side ≤ grid)."""
    if side <= grid:
        return list(range(side * side))
    centres = [min(side - 1, int((i + 0.5) * side / grid)) for i in range(grid)]
    return [y * side + x for y in centres for x in centres]


@torch.no_grad()
def attention_selectivity(model, vq, classes: list[int], seeds: list[int], cfg: float = 1.5,
                          topk_frac: float = 0.1, drafter_frac: float = 0.34) -> ASIReport:
    """ASI per (layer, scale) from full-cache generations of every (class, seed)."""
    if not classes or not seeds:
        raise DraftScopeError("calibration needs at least one class and one seed")
    if not 0 < topk_frac <= 1 or not 0 < drafter_frac < 1:
        raise DraftScopeError("topk_frac must be in (0, 1] and drafter_frac in (0, 1)")
    depth, K = len(model.blocks), len(model.scales)
    off = model.offsets
    cur = np.zeros((depth, K))
    conc = np.zeros((depth, K))
    n = 0
    device = model.device
    for seed in seeds:
        gen = torch.Generator(device=device).manual_seed(int(seed))
        cls = torch.tensor(classes, dtype=torch.long, device=device)
        model.generate(vq, cls, cfg=cfg, generator=gen, attention_scores=True)
        for k in range(1, K):
            for layer, p in enumerate(model.last_attention[k]):  # (B', H, s_k², off[k+1])
                p = p.double()
                cur[layer, k] += p[..., off[k]:].sum(-1).mean().item()
                hist = p[..., :off[k]]
                top = max(1, math.ceil(topk_frac * off[k]))
                mass = hist.sum(-1).clamp_min(1e-12)
                conc[layer, k] += (hist.topk(min(top, off[k]), dim=-1).values.sum(-1) / mass).mean().item()
        n += 1
        model.clear_cache()
    cur, conc = cur / n, conc / n
    asi = cur * conc
    cur[:, 0] = conc[:, 0] = asi[:, 0] = np.nan
    n_draft = max(1, min(depth - 1, round(drafter_frac * depth))) if depth > 1 else 1
    labels = [[""] * K for _ in range(depth)]
    for k in range(1, K):
        order = np.argsort(asi[:, k], kind="stable")
        for rank, layer in enumerate(order):
            labels[layer][k] = "drafter" if rank < n_draft else "refiner"
    return ASIReport(asi, cur, conc, labels, n * len(classes), topk_frac, drafter_frac)


def scale_budgets(scales: tuple[int, ...], depth: int, beta: float, labels: list[list[str]] | None = None,
                  policy: str = "scalekv", rho_first: float = 1.0, rho_last: float = 0.5,
                  min_keep: int = 1) -> BudgetPlan:
    """Per-layer, per-scale KV budgets (see the module docstring). labels: [layer][scale] from ``ASIReport``."""
    if not 0 < beta <= 1:
        raise DraftScopeError(f"the KV budget must be in (0, 1] of the full cache, got {beta}")
    if policy not in ("scalekv", "uniform"):
        raise DraftScopeError(f"unknown budget policy '{policy}'; choose scalekv or uniform")
    if policy == "scalekv" and (labels is None or len(labels) != depth):
        raise DraftScopeError("the scalekv policy needs drafter/refiner labels for every layer")
    K = len(scales)
    history = [sum(s * s for s in scales[:j]) for j in range(K)]
    uniform = [0] + [min(history[j], max(min_keep, round(beta * history[j]))) for j in range(1, K)]
    budgets = [[0] * K for _ in range(depth)]
    rhos = [1.0] * K
    for j in range(1, K):
        # what layer l can hold for scale j: what it kept for scale j−1 plus scale j−1's own keys
        cap = [history[j] if j == 1 else min(history[j], budgets[layer][j - 1] + scales[j - 1] ** 2)
               for layer in range(depth)]
        total = depth * uniform[j]
        drafters = [layer for layer in range(depth) if policy == "scalekv" and labels[layer][j] == "drafter"]
        refiners = [layer for layer in range(depth) if layer not in drafters]
        want = [uniform[j]] * depth
        if drafters and refiners:
            frac = (j - 1) / max(1, K - 2)
            rho = rho_first + (rho_last - rho_first) * frac
            rhos[j] = rho
            r_budget = max(min_keep, int(rho * uniform[j]))
            d_total = total - r_budget * len(refiners)
            for layer in refiners:
                want[layer] = r_budget
            for i, layer in enumerate(drafters):
                want[layer] = d_total // len(drafters) + (1 if i < d_total % len(drafters) else 0)
        row = [min(want[layer], cap[layer]) for layer in range(depth)]
        left = total - sum(row)
        for group in (drafters, refiners):  # what a cap freed goes to layers with room, drafters first
            while left > 0 and any(row[layer] < cap[layer] for layer in group):
                for layer in group:
                    if left > 0 and row[layer] < cap[layer]:
                        row[layer] += 1
                        left -= 1
        for layer in range(depth):
            budgets[layer][j] = row[layer]
    return BudgetPlan(beta, policy, history, uniform, budgets, labels or [], rhos)


class ScaleKVPress:
    """``kv_hook`` for ``VAR.generate(..., attention_scores=True)``: prunes every layer's cache after scale k to the
    budget of scale k+1. Records the kept positions (absolute token indices) per layer and scale for display."""

    def __init__(self, model, plan: BudgetPlan, window: str = "centroid"):
        if window not in ("centroid", "last"):
            raise DraftScopeError("window must be 'centroid' (ScaleKV) or 'last' (SnapKV style)")
        if len(plan.budgets) != len(model.blocks) or len(plan.history) != len(model.scales):
            raise DraftScopeError("the budget plan does not match the model's depth and scales")
        self.model, self.plan, self.window = model, plan, window
        self.positions: list[torch.Tensor | None] = [None] * len(model.blocks)  # absolute index of each cached key
        self.kept: dict[int, list[torch.Tensor]] = {}  # scale k → per layer (B', H, budget) absolute indices
        self.bytes_after: dict[int, int] = {}

    def _window(self, k: int) -> list[int]:
        side = self.model.scales[k]
        if self.window == "centroid":
            return window_positions(side)
        n = side * side
        return list(range(max(0, n - WINDOW_GRID * WINDOW_GRID), n))

    def __call__(self, cache: list, k: int) -> list:
        model = self.model
        K = len(model.scales)
        off = model.offsets
        probs_layers = model.last_attention.get(k)
        if probs_layers is None:
            raise DraftScopeError("ScaleKV needs generate(..., attention_scores=True)")
        new_cache = list(cache)
        win = self._window(k)
        for layer, (key, value) in enumerate(cache):
            Bp, H, T, d = key.shape
            pos = self.positions[layer]
            if pos is None:  # first call: the cache holds scales 0..k (several when a prefix was prefilled)
                pos = torch.arange(off[k + 1] - T, off[k + 1], device=key.device).expand(Bp, H, -1)
            else:
                pos = torch.cat([pos, torch.arange(off[k], off[k + 1], device=key.device).expand(Bp, H, -1)], -1)
            self.positions[layer] = pos
            if k + 1 >= K:  # nothing reads the cache after the last scale
                continue
            budget = self.plan.budgets[layer][k + 1]
            if budget >= T:
                self.kept.setdefault(k, []).append(pos)
                continue
            score = probs_layers[layer][:, :, win].float().mean(2)  # (B', H, T)
            forced = torch.zeros(T, dtype=torch.bool, device=key.device)
            forced[T - off[k + 1] + off[k] + torch.tensor(win, device=key.device)] = True
            if int(forced.sum()) <= budget:
                score = score + forced.float() * 2.0  # the window's own keys first (scores are ≤ 1)
            keep = score.topk(budget, dim=-1).indices.sort(-1).values  # (B', H, budget)
            gather = keep[..., None].expand(-1, -1, -1, d)
            new_cache[layer] = (key.gather(2, gather), value.gather(2, gather))
            self.positions[layer] = pos.gather(2, keep)
            self.kept.setdefault(k, []).append(self.positions[layer])
        self.bytes_after[k] = sum(tensor_bytes(kk, vv) for kk, vv in new_cache)
        return new_cache


@dataclass
class KVRun:
    """One generation under a KV policy ("full", "scalekv" or "uniform") and what its cache held."""

    policy: str
    beta: float
    class_id: int
    seed: int
    images: np.ndarray  # (n, 32, 32, 3) uint8
    kv_bytes: int  # the largest cache kept between scales (what a later scale reads)
    kv_peak_bytes: int  # the largest cache during a forward (kept history + the current scale's own keys)
    kv_bytes_per_scale: list[int]  # kept after each scale (the last scale's keys are not read again)
    total_ms: float
    psnr_vs_full: float | None = None
    class_accuracy: float | None = None
    kept: dict[int, list[np.ndarray]] = field(default_factory=dict, repr=False)  # scale → per layer (H, budget)

    def to_json(self) -> dict:
        return {"policy": self.policy, "budget": self.beta, "kv_bytes": self.kv_bytes,
                "kv_peak_bytes": self.kv_peak_bytes, "kv_bytes_per_scale": self.kv_bytes_per_scale,
                "total_ms": round(self.total_ms, 3),
                "psnr_vs_full": None if self.psnr_vs_full is None else round(self.psnr_vs_full, 3),
                "class_accuracy": self.class_accuracy}


@torch.no_grad()
def kv_generate(model, vq, class_id: int, seed: int, policy: str = "full", beta: float = 1.0,
                report: ASIReport | None = None, n: int = 1, cfg: float = 1.5,
                top_k: int | None = None, top_p: float | None = None) -> KVRun:
    """Generate with the full cache or a pruned one. Every policy runs the same attention code path
    (``attention_scores=True``), so at a 100 % budget the output equals the full-cache output exactly."""
    import time

    from core.var.data import to_uint8

    if policy not in ("full", "scalekv", "uniform"):
        raise DraftScopeError(f"unknown KV policy '{policy}'; choose full, scalekv or uniform")
    K, depth = len(model.scales), len(model.blocks)
    device = model.device
    press = None
    if policy != "full":
        if policy == "scalekv" and report is None:
            raise DraftScopeError("ScaleKV needs a calibration report (attention_selectivity)")
        plan = scale_budgets(tuple(model.scales), depth, beta, report.labels if report else None, policy)
        press = ScaleKVPress(model, plan, window="centroid" if policy == "scalekv" else "last")
    gen = torch.Generator(device=device).manual_seed(int(seed))
    cls = torch.full((n,), int(class_id), dtype=torch.long, device=device)
    t0 = time.perf_counter()
    idx = model.generate(vq, cls, cfg=cfg, top_k=top_k, top_p=top_p, generator=gen, attention_scores=True,
                         kv_hook=press)
    total_ms = elapsed(t0, device) * 1000
    before = [model.kv_bytes_per_scale[k] for k in range(K)]  # after appending scale k, before pruning
    kept_bytes = [press.bytes_after.get(k, before[k]) for k in range(K - 1)] if press else before[:K - 1]
    images = to_uint8(vq.decode_indices(idx))
    kept = {k: [p[0].cpu().numpy() for p in v] for k, v in press.kept.items()} if press else {}
    model.clear_cache()
    return KVRun(policy, beta if press else 1.0, int(class_id), int(seed), images, max(kept_bytes or [0]),
                 max(before), kept_bytes, total_ms, kept=kept)
