"""Measurements and the ``python -m core.cli var …`` commands.

``code_table``, ``scalekv_table`` and ``draft_attention_table`` produce the rows of the README's VAR tables (one run,
side by side: every row of a table is measured in the same process, on the same classes and seeds). ``calibrate``
computes (once per model and process) the ASI report ScaleKV needs, on seeds disjoint from the evaluation seeds.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import weakref
from pathlib import Path

import numpy as np

from core.errors import DraftScopeError

CALIBRATION_SEEDS = (10_000, 10_001)  # ScaleKV calibration: every class with each of these seeds
_CALIBRATION: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model → its ASIReport


def parse_class(value: str | int, num_classes: int = 10) -> int:
    """A class index or name (``core.var.data.CLASS_NAMES``) → index; a clear error otherwise."""
    from core.var.data import CLASS_NAMES

    text = str(value).strip().lower()
    if text in CLASS_NAMES:
        return CLASS_NAMES.index(text)
    try:
        idx = int(text)
    except ValueError:
        raise DraftScopeError(f"unknown class '{value}'; use 0..{num_classes - 1} or one of "
                              f"{', '.join(CLASS_NAMES)}") from None
    if not 0 <= idx < num_classes:
        raise DraftScopeError(f"class must be in 0..{num_classes - 1}, got {idx}")
    return idx


def parse_budget(value: str | float) -> float:
    """'0.1', '10%' or 0.1 → 0.1; must be in (0, 1]."""
    text = str(value).strip()
    try:
        beta = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise DraftScopeError(f"KV budget '{value}' is not a fraction (0.1) or a percentage (10%)") from None
    if not 0 < beta <= 1 or math.isnan(beta):
        raise DraftScopeError(f"the KV budget must be in (0, 1] (0 % < budget ≤ 100 %), got {value}")
    return beta


def calibrate(model, vq, name: str = ""):
    """The ASI report of ``model`` (cached per model object)."""
    from core.var.scalekv import attention_selectivity

    if model not in _CALIBRATION:
        _CALIBRATION[model] = attention_selectivity(model, vq, list(range(model.config.num_classes)),
                                                    list(CALIBRATION_SEEDS))
    return _CALIBRATION[model]


def default_split(num_scales: int) -> int:
    """CoDe's default hand-over: the large drafter makes all but the last two scales (VAR-d30 → d16 used N = 8 of
    10; our 6 scales → N = 4)."""
    return max(0, num_scales - 2)


def _classes(spec: str, num_classes: int) -> list[int]:
    if spec.strip().lower() == "all":
        return list(range(num_classes))
    return [parse_class(c, num_classes) for c in spec.split(",") if c.strip()]


def code_table(bundle, classes: list[int], n: int = 4, seed: int = 0, repeats: int = 3, splits=None,
               progress=None) -> list[dict]:
    """One row per split N (K = large-only … 0 = small-only): median latency per batch, peak memory, tokens per
    model, PSNR vs large-only (same class and seed) and classifier accuracy over classes × n images."""
    from core.var.code import classify, code_generate, psnr

    K = bundle.num_scales
    splits = list(range(K, -1, -1)) if splits is None else list(splits)
    reference = {c: code_generate(bundle.large, bundle.small, bundle.vq, c, seed + c, K, n, canvases=False)
                 for c in classes}
    rows = []
    for i, split in enumerate(splits):
        times, psnrs, correct, runs = [], [], [], []
        for c in classes:
            rep = [code_generate(bundle.large, bundle.small, bundle.vq, c, seed + c, split, n, canvases=False)
                   for _ in range(max(1, repeats))]
            run = rep[0]
            runs.append(run)
            times.append(statistics.median(r.total_ms for r in rep))
            if split != K:
                psnrs.append(psnr(run.images, reference[c].images))
            correct.append(classify(bundle.classifier, run.images, c))
        finite = [p for p in psnrs if math.isfinite(p)]
        rows.append({"split": split, "label": runs[0].label, "ms_per_batch": round(statistics.mean(times), 2),
                     "peak_memory_bytes": max(r.peak_memory_bytes for r in runs),
                     "kv_bytes": max(r.kv_bytes for r in runs),
                     "tokens_large": runs[0].tokens_large, "tokens_small": runs[0].tokens_small,
                     "psnr_vs_large": None if split == K else (round(statistics.mean(finite), 2) if finite else
                                                               math.inf),
                     "identical_to_large": sum(1 for p in psnrs if math.isinf(p)) if split != K else len(classes),
                     "class_accuracy": round(statistics.mean(correct), 4), "images": len(classes) * n,
                     "memory_source": runs[0].memory_source})
        if progress:
            progress((i + 1) / len(splits), f"CoDe N={split}")
    base = rows[0]["ms_per_batch"] if rows and rows[0]["split"] == K else None
    for row in rows:
        row["speedup_vs_large"] = round(base / row["ms_per_batch"], 2) if base else None
    return rows


def scalekv_table(bundle, classes: list[int], n: int = 4, seed: int = 0, budgets=(0.1, 0.2, 0.4),
                  which: str = "large", progress=None) -> list[dict]:
    """ScaleKV vs a uniform SnapKV-style budget at equal memory, on one model: KV bytes, PSNR vs the full cache
    (same class and seed, same attention code path), classifier accuracy."""
    from core.var.code import classify, psnr
    from core.var.scalekv import kv_generate

    model = bundle.large if which == "large" else bundle.small
    report = calibrate(model, bundle.vq, which)
    full = {c: kv_generate(model, bundle.vq, c, seed + c, "full", n=n) for c in classes}
    rows = [{"policy": "full", "budget": 1.0, "kv_bytes": max(r.kv_bytes for r in full.values()),
             "kv_peak_bytes": max(r.kv_peak_bytes for r in full.values()), "psnr_vs_full": None,
             "class_accuracy": round(statistics.mean(classify(bundle.classifier, full[c].images, c)
                                                     for c in classes), 4), "images": len(classes) * n}]
    jobs = [(b, p) for b in budgets for p in ("scalekv", "uniform")]
    for i, (beta, policy) in enumerate(jobs):
        runs = {c: kv_generate(model, bundle.vq, c, seed + c, policy, beta, report, n=n) for c in classes}
        ps = [psnr(runs[c].images, full[c].images) for c in classes]
        finite = [p for p in ps if math.isfinite(p)]
        rows.append({"policy": policy, "budget": beta, "kv_bytes": max(r.kv_bytes for r in runs.values()),
                     "kv_peak_bytes": max(r.kv_peak_bytes for r in runs.values()),
                     "psnr_vs_full": round(statistics.mean(finite), 2) if finite else math.inf,
                     "identical_to_full": sum(1 for p in ps if math.isinf(p)),
                     "class_accuracy": round(statistics.mean(classify(bundle.classifier, runs[c].images, c)
                                                             for c in classes), 4), "images": len(classes) * n})
        if progress:
            progress((i + 1) / len(jobs), f"{policy} {beta:.0%}")
    full_bytes = rows[0]["kv_bytes"]
    for row in rows:
        row["kv_vs_full"] = round(row["kv_bytes"] / full_bytes, 3) if full_bytes else None
    return rows


def draft_attention_table(bundle, classes: list[int], n: int = 4, seed: int = 0, sparsities=(0.5, 0.75, 0.9),
                          which: str = "large", progress=None) -> list[dict]:
    """DraftAttention on the 6×6 and 8×8 grids: output error, FLOP sparsity, image PSNR vs dense, accuracy."""
    from core.var.code import classify
    from core.var.draft_attention import draft_attention_generate

    model = bundle.large if which == "large" else bundle.small
    rows = []
    dense_acc = None
    for i, r in enumerate(sparsities):
        runs = [draft_attention_generate(model, bundle.vq, c, seed + c, r, n=n) for c in classes]
        if dense_acc is None:
            dense_acc = statistics.mean(classify(bundle.classifier, run.dense_images, run.class_id) for run in runs)
        finite = [run.psnr_vs_dense for run in runs if math.isfinite(run.psnr_vs_dense)]
        rows.append({"sparsity": r, "flop_sparsity": round(statistics.mean(run.flop_sparsity for run in runs), 4),
                     "rel_error": round(statistics.mean(run.mean_rel_error for run in runs), 4),
                     "psnr_vs_dense": round(statistics.mean(finite), 2) if finite else math.inf,
                     "identical_to_dense": sum(1 for run in runs if math.isinf(run.psnr_vs_dense)),
                     "class_accuracy": round(statistics.mean(classify(bundle.classifier, run.images, run.class_id)
                                                             for run in runs), 4),
                     "dense_class_accuracy": round(dense_acc, 4), "images": len(classes) * n})
        if progress:
            progress((i + 1) / len(sparsities), f"DraftAttention r={r}")
    return rows


# --------------------------------------------------------------------------------------------- CLI
def _write_png(path: str | Path, run, canvases: bool) -> Path:
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DraftScopeError(f"--out must name a .png file, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    scale_px = 4
    rows = []
    for b in range(run.images.shape[0]):
        tiles = [c[b] for c in run.canvases] if canvases else [run.images[b]]
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], 1))
    grid = np.concatenate(rows, 0)
    Image.fromarray(grid).resize((grid.shape[1] * scale_px, grid.shape[0] * scale_px), Image.NEAREST).save(path)
    return path


def var_generate_cli(args) -> int:
    from core.var.bundle import load_bundle
    from core.var.code import classify, code_generate, psnr
    from core.var.scalekv import ScaleKVPress, scale_budgets

    if not 1 <= args.n <= 256:
        raise DraftScopeError(f"--n must be in 1..256, got {args.n}")
    if args.top_k < 0 or not 0.0 <= args.top_p <= 1.0:
        raise DraftScopeError("--top-k must be ≥ 0 and --top-p in [0, 1]")
    if not -1.0 <= args.cfg <= 20.0:
        raise DraftScopeError(f"--cfg must be in [-1, 20], got {args.cfg}")
    beta = parse_budget(args.scalekv) if args.scalekv is not None else None
    if args.canvases and not args.out:
        raise DraftScopeError("--canvases needs --out image.png")
    bundle = load_bundle()
    class_id = parse_class(args.class_name, bundle.large.config.num_classes)
    K = bundle.num_scales
    split = default_split(K) if args.split is None else args.split
    if not 0 <= split <= K:
        raise DraftScopeError(f"--split must be in 0..{K}, got {split}")
    common = dict(n=args.n, cfg=args.cfg, top_k=args.top_k, top_p=args.top_p)
    presses, full = {}, None
    if beta is not None:
        for name in ("large", "small"):
            model = getattr(bundle, name)
            plan = scale_budgets(tuple(model.scales), len(model.blocks), beta,
                                 calibrate(model, bundle.vq, name).labels)
            presses[name] = ScaleKVPress(model, plan)
        full = code_generate(bundle.large, bundle.small, bundle.vq, class_id, args.seed, split, canvases=False,
                             attention_scores=True, **common)
    run = code_generate(bundle.large, bundle.small, bundle.vq, class_id, args.seed, split, canvases=args.canvases,
                        presses=presses, **common)
    if beta is not None:
        run.kv_policy = f"scalekv@{beta:g}"
    if split != K or beta is not None:
        large = code_generate(bundle.large, bundle.small, bundle.vq, class_id, args.seed, K, canvases=False,
                              **common)
        run.psnr_vs_large = psnr(run.images, large.images)
    else:
        run.psnr_vs_large = math.inf
    if args.n > 1:
        run.class_accuracy = classify(bundle.classifier, run.images, class_id)
    out = run.to_json()
    if out["psnr_vs_large"] is not None and math.isinf(out["psnr_vs_large"]):
        out["psnr_vs_large"] = "inf"
    from core.var.data import CLASS_NAMES

    out["class_name"] = CLASS_NAMES[class_id]
    out["num_scales"] = K
    if full is not None:
        p = psnr(run.images, full.images)
        out["scalekv"] = {"budget": beta, "kv_bytes_full": full.kv_bytes, "kv_stored_bytes_full": full.kv_stored_bytes,
                          "psnr_vs_full_cache": "inf" if math.isinf(p) else round(p, 3)}
    if args.out:
        out["out"] = str(_write_png(args.out, run, args.canvases))
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{run.label}: class {class_id} ({CLASS_NAMES[class_id]}), seed {args.seed}, {args.n} image(s)")
    for s in run.scales:
        print(f"  scale {s.index} ({s.side}×{s.side}) by {s.model:5s} {s.ms:8.2f} ms")
    print(f"  total {run.total_ms:.1f} ms (refiner prefill {run.prefill_ms:.1f} ms); peak memory "
          f"{run.peak_memory_bytes / 2**20:.2f} MiB ({run.memory_source}); KV {run.kv_bytes / 1024:.1f} KiB")
    print(f"  PSNR vs large-only: {out['psnr_vs_large']} dB" + (f"; class accuracy {run.class_accuracy:.0%}"
                                                                 if run.class_accuracy is not None else ""))
    if "scalekv" in out:
        sk = out["scalekv"]
        print(f"  ScaleKV {beta:.0%}: KV kept between scales {run.kv_stored_bytes / 1024:.1f} KiB vs "
              f"{sk['kv_stored_bytes_full'] / 1024:.1f} KiB full; PSNR vs full cache {sk['psnr_vs_full_cache']} dB")
    if args.out:
        print(f"  wrote {out['out']}")
    return 0


def _markdown(rows: list[dict], keys: list[str]) -> str:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join("—" if row.get(k) is None else str(row[k]) for k in keys) + " |")
    return "\n".join(lines)


def var_report_cli(args) -> int:
    from tqdm import tqdm

    from core.var.bundle import load_bundle

    what = [w.strip() for w in args.what.split(",") if w.strip()]
    unknown = set(what) - {"code", "scalekv", "draft-attention"}
    if unknown or not what:
        raise DraftScopeError(f"--what takes code, scalekv and draft-attention, got {args.what}")
    if not 1 <= args.n <= 64 or args.repeats < 1:
        raise DraftScopeError("--n must be in 1..64 and --repeats ≥ 1")
    bundle = load_bundle()
    classes = _classes(args.classes, bundle.large.config.num_classes)
    out = {}
    bar = tqdm(total=len(what), desc="var report", file=sys.stderr, disable=args.json and not sys.stderr.isatty())

    def progress(frac: float, desc: str) -> None:
        bar.set_description(desc[:40])

    if "code" in what:
        out["code"] = code_table(bundle, classes, args.n, args.seed, args.repeats, progress=progress)
        bar.update(1)
    if "scalekv" in what:
        out["scalekv"] = scalekv_table(bundle, classes, args.n, args.seed, progress=progress)
        bar.update(1)
    if "draft-attention" in what:
        out["draft_attention"] = draft_attention_table(bundle, classes, args.n, args.seed, progress=progress)
        bar.update(1)
    bar.close()
    if args.json:
        print(json.dumps(out, indent=1, default=str))
        return 0
    keys = {"code": ["label", "ms_per_batch", "speedup_vs_large", "peak_memory_bytes", "kv_bytes", "tokens_large",
                     "tokens_small", "psnr_vs_large", "identical_to_large", "class_accuracy"],
            "scalekv": ["policy", "budget", "kv_bytes", "kv_vs_full", "kv_peak_bytes", "psnr_vs_full",
                        "identical_to_full", "class_accuracy"],
            "draft_attention": ["sparsity", "flop_sparsity", "rel_error", "psnr_vs_dense", "identical_to_dense",
                                "class_accuracy", "dense_class_accuracy"]}
    for name, rows in out.items():
        print(f"\n## {name} ({len(classes)} classes × {args.n} images, seed {args.seed})\n")
        print(_markdown(rows, keys[name]))
    return 0
