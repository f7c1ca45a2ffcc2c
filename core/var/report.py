"""Measurements and the ``python -m core.cli var …`` commands.

``code_table``, ``scalekv_table`` and ``draft_attention_table`` produce the rows of the README's VAR tables (one run,
side by side: every row of a table is measured in the same process, on the same classes and seeds). ``calibrate``
computes (once per model and process) the ASI report ScaleKV needs, on seeds disjoint from the evaluation seeds.
"""

from __future__ import annotations

import math
import statistics
import weakref

from core.errors import DraftScopeError

CALIBRATION_SEEDS = (10_000, 10_001)  # ScaleKV calibration: every class with each of these seeds
CALIBRATION_CLASSES = 10  # at most this many classes calibrate (spread over ImageNet's 1000 for official models)
_CALIBRATION: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model → its ASIReport


def parse_class(value: str | int, num_classes: int = 10, names: tuple[str, ...] | None = None) -> int:
    """A class index, a name of ``names`` (default ``core.var.data.CLASS_NAMES``; () for numbers only, as for
    ImageNet) or "980 volcano" (an index and a label) → index; a clear error otherwise."""
    from core.var.data import CLASS_NAMES

    names = CLASS_NAMES if names is None else tuple(names)
    text = str(value).strip().lower()
    if text in names:
        return names.index(text)
    try:
        idx = int(text.split()[0] if text else text)
    except ValueError:
        choices = f" or one of {', '.join(names)}" if names else ""
        raise DraftScopeError(f"unknown class '{value}'; use 0..{num_classes - 1}{choices}") from None
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
        _CALIBRATION[model] = attention_selectivity(model, vq, calibration_classes(model.config.num_classes),
                                                    list(CALIBRATION_SEEDS))
    return _CALIBRATION[model]


def calibration_classes(num_classes: int) -> list[int]:
    """Every class of a small class set; CALIBRATION_CLASSES evenly spread ones of a large one (ImageNet's 1000)."""
    if num_classes <= CALIBRATION_CLASSES:
        return list(range(num_classes))
    return [round(i * (num_classes - 1) / (CALIBRATION_CLASSES - 1)) for i in range(CALIBRATION_CLASSES)]


def mean_or_none(values) -> float | None:
    """Mean of the values rounded to 4 places, or None when there are none (no classifier)."""
    values = [v for v in values if v is not None]
    return round(statistics.mean(values), 4) if values else None


def default_split(num_scales: int) -> int:
    """CoDe's default hand-over: the large drafter makes all but the last two scales (VAR-d30 → d16 used N = 8 of
    10; our 6 scales → N = 4)."""
    return max(0, num_scales - 2)


def parse_classes(spec: str, num_classes: int, names: tuple[str, ...] | None = None) -> list[int]:
    """"all" (every class; for ImageNet, ``calibration_classes``' spread of 10) or a comma list."""
    if spec.strip().lower() == "all":
        return calibration_classes(num_classes)
    return [parse_class(c, num_classes, names) for c in spec.split(",") if c.strip()]


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
                     "class_accuracy": mean_or_none(correct), "images": len(classes) * n,
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
             "class_accuracy": mean_or_none(classify(bundle.classifier, full[c].images, c) for c in classes),
             "images": len(classes) * n}]
    jobs = [(b, p) for b in budgets for p in ("scalekv", "uniform")]
    for i, (beta, policy) in enumerate(jobs):
        runs = {c: kv_generate(model, bundle.vq, c, seed + c, policy, beta, report, n=n) for c in classes}
        ps = [psnr(runs[c].images, full[c].images) for c in classes]
        finite = [p for p in ps if math.isfinite(p)]
        rows.append({"policy": policy, "budget": beta, "kv_bytes": max(r.kv_bytes for r in runs.values()),
                     "kv_peak_bytes": max(r.kv_peak_bytes for r in runs.values()),
                     "psnr_vs_full": round(statistics.mean(finite), 2) if finite else math.inf,
                     "identical_to_full": sum(1 for p in ps if math.isinf(p)),
                     "class_accuracy": mean_or_none(classify(bundle.classifier, runs[c].images, c) for c in classes),
                     "images": len(classes) * n})
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
            dense_acc = mean_or_none(classify(bundle.classifier, run.dense_images, run.class_id) for run in runs)
        finite = [run.psnr_vs_dense for run in runs if math.isfinite(run.psnr_vs_dense)]
        rows.append({"sparsity": r, "flop_sparsity": round(statistics.mean(run.flop_sparsity for run in runs), 4),
                     "rel_error": round(statistics.mean(run.mean_rel_error for run in runs), 4),
                     "psnr_vs_dense": round(statistics.mean(finite), 2) if finite else math.inf,
                     "identical_to_dense": sum(1 for run in runs if math.isinf(run.psnr_vs_dense)),
                     "class_accuracy": mean_or_none(classify(bundle.classifier, run.images, run.class_id)
                                                    for run in runs),
                     "dense_class_accuracy": dense_acc, "images": len(classes) * n})
        if progress:
            progress((i + 1) / len(sparsities), f"DraftAttention r={r}")
    return rows
