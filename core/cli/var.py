"""``var generate|report``: one CoDe / ScaleKV generation, or the measured tables of the VAR section."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from core.cli.options import COUNT, SEED, integer, number
from core.cli.table import markdown_table
from core.errors import DraftScopeError
from core.var.report import (
    calibrate,
    code_table,
    default_split,
    draft_attention_table,
    parse_budget,
    parse_class,
    parse_classes,
    scalekv_table,
)

NAME, HELP = "var", "visual autoregressive models: CoDe splits, ScaleKV, DraftAttention"


def _bundle_arguments(parser) -> None:
    parser.add_argument("--bundle", default=None, help="tiny (the shipped models, default) or official-d<A>-d<B>: the "
                        "official VAR-dA drafter and VAR-dB refiner (default pair official-d30-d16)")
    parser.add_argument("--official", default=None, metavar="DIR", help="directory of the official .pth files "
                        "(vae_ch160v4096z32.pth, var_d30.pth, var_d16.pth …); implies --bundle official-d30-d16")


def add_arguments(var) -> None:
    var_sub = var.add_subparsers(dest="var_command", required=True, parser_class=type(var))
    vg = var_sub.add_parser("generate", help="one class and seed: large drafter on scales < N, small refiner after")
    _bundle_arguments(vg)
    vg.add_argument("--class", dest="class_name", default="0", help="class index or name (e.g. 3 or triangle; "
                    "ImageNet index 0..999 for the official models)")
    vg.add_argument("--seed", type=SEED, default=0)
    vg.add_argument("--split", type=integer(0), default=None, help="N: scales made by the large model (default K−2; "
                    "K = large-only, 0 = small-only)")
    vg.add_argument("--scalekv", default=None, help="KV budget for ScaleKV on both models: 0.1, 10%% …")
    vg.add_argument("--n", type=COUNT, default=1, help="images in the batch (class accuracy is reported when > 1)")
    vg.add_argument("--cfg", type=number(), default=1.5, help="classifier-free guidance, ramped over the scales")
    vg.add_argument("--top-k", type=integer(0), default=None, help="0 = off (default 0; 900 for official models)")
    vg.add_argument("--top-p", type=number(), default=None, help="0 = off (default 0; 0.96 for official models)")
    vg.add_argument("--json", action="store_true", help="print the record as JSON")
    vg.add_argument("--out", default=None, help="write the image(s) to this PNG")
    vg.add_argument("--canvases", action="store_true", help="with --out: one row per image, a canvas per scale")
    vr = var_sub.add_parser("report", help="the measured tables: CoDe per N, ScaleKV budgets, DraftAttention")
    _bundle_arguments(vr)
    vr.add_argument("--what", default="code,scalekv,draft-attention", help="code, scalekv, draft-attention")
    vr.add_argument("--n", type=COUNT, default=4, help="images per class")
    vr.add_argument("--classes", default="all", help="class indices (0,3,7) or all")
    vr.add_argument("--seed", type=SEED, default=0)
    vr.add_argument("--repeats", type=COUNT, default=3, help="timing repeats (the median is reported)")
    vr.add_argument("--json", action="store_true")



def run(args) -> int:
    return generate(args) if args.var_command == "generate" else report(args)


def open_bundle(args):
    """The bundle the arguments name (``--bundle``, ``--official DIR``)."""
    from core.var.bundle import TINY, get_bundle
    from core.var.official_load import bundle_name

    name = args.bundle or (bundle_name() if args.official else TINY)
    if args.official is not None:
        if name == TINY:
            raise DraftScopeError("--official DIR loads the official models: drop --bundle tiny")
        if not Path(args.official).is_dir():
            raise DraftScopeError(f"--official {args.official} is not a directory")
    return get_bundle(name, official_dir=args.official)


def class_label(bundle, class_id: int) -> str:
    return bundle.class_names[class_id] if class_id < len(bundle.class_names) else f"class {class_id}"


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


def generate(args) -> int:
    from core.var.code import classify, code_generate, psnr
    from core.var.scalekv import ScaleKVPress, scale_budgets

    if not 1 <= args.n <= 256:
        raise DraftScopeError(f"--n must be in 1..256, got {args.n}")
    top_k, top_p = args.top_k, args.top_p  # None: the models' own sampling (``NextScaleModel.SAMPLING``)
    if (top_k or 0) < 0 or not 0.0 <= (top_p or 0.0) <= 1.0:
        raise DraftScopeError("--top-k must be ≥ 0 and --top-p in [0, 1]")
    if not -1.0 <= args.cfg <= 20.0:
        raise DraftScopeError(f"--cfg must be in [-1, 20], got {args.cfg}")
    beta = parse_budget(args.scalekv) if args.scalekv is not None else None
    if args.canvases and not args.out:
        raise DraftScopeError("--canvases needs --out image.png")
    bundle = open_bundle(args)
    class_id = parse_class(args.class_name, bundle.large.config.num_classes, bundle.class_names)
    K = bundle.num_scales
    split = default_split(K) if args.split is None else args.split
    if not 0 <= split <= K:
        raise DraftScopeError(f"--split must be in 0..{K}, got {split}")
    common = dict(n=args.n, cfg=args.cfg, top_k=top_k, top_p=top_p)
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
    out["class_name"] = class_label(bundle, class_id)
    out["num_scales"] = K
    out["bundle"] = bundle.name
    if bundle.classifier is None:
        out["class_accuracy_note"] = "no classifier for these models: class accuracy is not measured"
    if full is not None:
        p = psnr(run.images, full.images)
        out["scalekv"] = {"budget": beta, "kv_bytes_full": full.kv_bytes, "kv_stored_bytes_full": full.kv_stored_bytes,
                          "psnr_vs_full_cache": "inf" if math.isinf(p) else round(p, 3)}
    if args.out:
        out["out"] = str(_write_png(args.out, run, args.canvases))
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{run.label} ({bundle.name}): class {class_id} ({out['class_name']}), seed {args.seed}, {args.n} image(s)")
    for s in run.scales:
        print(f"  scale {s.index} ({s.side}×{s.side}) by {s.model:5s} {s.ms:8.2f} ms")
    print(f"  total {run.total_ms:.1f} ms (refiner prefill {run.prefill_ms:.1f} ms); peak memory "
          f"{run.peak_memory_bytes / 2**20:.2f} MiB ({run.memory_source}); KV {run.kv_bytes / 1024:.1f} KiB")
    accuracy = (f"; class accuracy {run.class_accuracy:.0%}" if run.class_accuracy is not None else
                "; no class accuracy (no classifier for these models)" if bundle.classifier is None and args.n > 1
                else "")
    print(f"  PSNR vs large-only: {out['psnr_vs_large']} dB{accuracy}")
    if "scalekv" in out:
        sk = out["scalekv"]
        print(f"  ScaleKV {beta:.0%}: KV kept between scales {run.kv_stored_bytes / 1024:.1f} KiB vs "
              f"{sk['kv_stored_bytes_full'] / 1024:.1f} KiB full; PSNR vs full cache {sk['psnr_vs_full_cache']} dB")
    if args.out:
        print(f"  wrote {out['out']}")
    return 0


def report(args) -> int:
    from tqdm import tqdm

    what = [w.strip() for w in args.what.split(",") if w.strip()]
    unknown = set(what) - {"code", "scalekv", "draft-attention"}
    if unknown or not what:
        raise DraftScopeError(f"--what takes code, scalekv and draft-attention, got {args.what}")
    if not 1 <= args.n <= 64 or args.repeats < 1:
        raise DraftScopeError("--n must be in 1..64 and --repeats ≥ 1")
    bundle = open_bundle(args)
    classes = parse_classes(args.classes, bundle.large.config.num_classes, bundle.class_names)
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
        print(markdown_table(rows, keys[name]))
    return 0
