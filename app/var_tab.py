"""The VAR tab: images made coarse-to-fine, one token map per scale, by two VARs working together (CoDe), with a
scale-aware KV cache (ScaleKV) and sparse attention on the largest grids (DraftAttention).

Generate runs large-only, small-only and CoDe at the chosen split N for one class and seed (``compare_splits``) and
keeps the runs in the user's ``gr.State``: moving the N slider afterwards re-runs only CoDe at the new N, and picking
another image of the batch only re-draws. Step mode makes one scale per press (the same seed replays the same first
scales, so step k shows exactly the k-th scale of the full run). ScaleKV calibrates the large model once per process
and compares the full cache with ScaleKV's and a uniform budget; DraftAttention runs the large model with sparse
attention on the 6×6 and 8×8 scales. The VAR models are shared by every session, so all work on them holds
``VAR_LOCK``. Every handler is a module-level function (callable without a browser) that turns failures, missing
checkpoints included, into a message.
"""

from __future__ import annotations

import math
import threading
import time

import gradio as gr

from app import common, limits
from core.budget import check_count, var_generate
from core.errors import DraftScopeError
from core.var.bundle import TINY
from core.var.data import CLASS_NAMES
from core.var.official_load import PAPER_PAIR
from core.var.official_vq import PATCH_NUMS
from core.var.report import default_split, parse_budget, parse_class
from visualizers.var import (
    asi_heatmap,
    budget_figure,
    canvas_grid_figure,
    draft_attention_frame,
    draft_images_figure,
    final_images_figure,
    grid_attention_figure,
    kv_frame,
    kv_images_figure,
    latency_memory_figure,
    metrics_frame,
    step_figure,
)

VAR_LOCK = threading.Lock()  # the VAR models (and their caches / attention overrides) are shared by every session
DEFAULT_SCALES = (1, 2, 3, 4, 6, 8)  # the tokenizer's scales, until a run tells the real ones
DEFAULT_DEPTH = 6  # the large VAR's layers, until a run tells
MAX_N = 16
DEFAULT_N = 4
DEFAULT_CFG = 1.5
CFG_RANGE = (-1.0, 20.0)  # what a handler accepts (the slider offers 0..5)
BUDGETS = ("10%", "20%", "40%", "100%")
DEFAULT_BUDGET = "20%"
DEFAULT_SPARSITY = 0.75
MIN_SIDE = 6  # DraftAttention runs on the scales of side ≥ this (6×6 and 8×8; 6 … 16 for the official models)
IMAGENET_EXAMPLES = {980: "volcano", 437: "beacon", 22: "bald eagle", 562: "fountain", 207: "golden retriever",
                     88: "macaw", 279: "arctic fox", 388: "giant panda", 417: "balloon", 1: "goldfish"}  # index → label

INTRO = (
    "**VAR** (visual autoregressive modelling) paints an image coarse to fine: it first predicts a 1×1 map of "
    "tokens, then 2×2, 3×3, … up to 8×8, every map at once from all the coarser ones; a decoder turns the "
    "accumulated maps into the 32×32 picture. The early, small maps decide the layout and are hard; the last, big "
    "maps only add detail and hold most of the tokens. **CoDe** (collaborative decoding) uses that: a large "
    "*drafter* makes the first N scales and a small, fast *refiner* makes the rest — blue frames are the large "
    "model's scales, orange the small one's. **ScaleKV** shrinks the memory the model keeps of earlier scales (the "
    "KV cache): layers that look broadly at the history (*drafters*, D) keep more, layers that look locally "
    "(*refiners*, R) keep less, at the same total. **DraftAttention** skips work inside the big scales: a cheap "
    "low-resolution guess of the attention picks which tiles of the grid are worth computing in full.")
READY = "Pick a class and a seed, then **Generate** to make the same images with three model pairings."
STEP_READY = "**Step ▶** makes one scale at a time with the class, seed, N, n and cfg above."


# ------------------------------------------------------------------------------------------------ helpers
def _no_progress(*args, **kwargs) -> None:
    pass


def _bundle(progress=None, models: str | None = None):
    """The shared VAR models of the chosen bundle ("tiny", the default, or an official pair; loaded once per
    process); a missing checkpoint is a DraftScopeError naming the training command or the files."""
    from core.var.bundle import bundle_choices, get_bundle

    models = models or TINY
    if models != TINY and models not in bundle_choices():
        raise DraftScopeError(f"the VAR models '{models}' are not available here; pick {TINY}")
    (progress or _no_progress)(0.05, desc=f"Loading the VAR models ({models})…")
    return get_bundle(models)


def _no_classifier_note(bundle) -> str:
    return "" if bundle.classifier is not None else " No class accuracy: there is no classifier for these models."


def _int(value, name: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DraftScopeError(f"{name} must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise DraftScopeError(f"{name} must be a whole number, got {value!r}")
    return int(number)


def _settings(bundle, class_name, seed, split, n, cfg, runs: int = 1, scores: bool = False) -> dict:
    """Checked settings: class index, seed ≥ 0, 0 ≤ N ≤ K, 1 ≤ n ≤ MAX_N, cfg in CFG_RANGE; n within the batch cap
    and ``runs`` generations of n images (``scores``: on the float32 attention path) within the memory cap
    (``core.budget.var_generate``)."""
    K = bundle.num_scales
    class_id = parse_class("" if class_name is None else class_name, bundle.large.config.num_classes,
                           bundle.class_names)
    seed = _int(0 if seed in (None, "") else seed, "the seed")
    if seed < 0:
        raise DraftScopeError(f"the seed must be ≥ 0, got {seed}")
    split = _int(default_split(K) if split in (None, "") else split, "split N")
    if not 0 <= split <= K:
        raise DraftScopeError(f"split N must be in 0..{K} (the scales the large model makes), got {split}")
    n = _int(DEFAULT_N if n in (None, "") else n, "the batch size n")
    if not 1 <= n <= MAX_N:
        raise DraftScopeError(f"the batch size n must be in 1..{MAX_N}, got {n}")
    caps = limits.limits()
    check_count("the batch", n, caps.var_max_batch, "images", "make fewer images at once")
    c = bundle.large.config
    var_generate(c.depth, c.width, c.heads, c.seq_len, n, runs, mlp_ratio=c.mlp_ratio, scales=K,
                 image_values=3 * bundle.vq.image_side ** 2, attention_scores=scores).check(caps.job_bytes)
    try:
        cfg = float(DEFAULT_CFG if cfg in (None, "") else cfg)
    except (TypeError, ValueError):
        raise DraftScopeError(f"guidance cfg must be a number, got {cfg!r}") from None
    if not CFG_RANGE[0] <= cfg <= CFG_RANGE[1]:
        raise DraftScopeError(f"guidance cfg must be in [{CFG_RANGE[0]:g}, {CFG_RANGE[1]:g}], got {cfg:g}")
    return {"class_id": class_id, "seed": seed, "split": split, "n": n, "cfg": cfg}


def _image_index(image, n: int) -> int:
    """The slider's 1-based image → a 0-based index into the batch."""
    try:
        return min(max(int(image or 1) - 1, 0), max(n - 1, 0))
    except (TypeError, ValueError):
        return 0


def _name(class_id: int, names: tuple[str, ...] = CLASS_NAMES) -> str:
    return names[class_id] if 0 <= class_id < len(names) else IMAGENET_EXAMPLES.get(class_id, f"class {class_id}")


def _psnr(value) -> str:
    if value is None:
        return "—"
    return "identical" if math.isinf(value) else f"{value:.1f} dB"


def _code_views(runs, image: int) -> tuple:
    """(canvas grid, final images, latency / memory, metrics table) of the runs."""
    return (canvas_grid_figure(runs, image), final_images_figure(runs), latency_memory_figure(runs),
            metrics_frame(runs))


def _code_status(runs, settings: dict, K: int, seconds: float, what: str = "Done",
                 names: tuple[str, ...] = CLASS_NAMES) -> str:
    large = runs[0]
    head = (f"{what} in {seconds:.1f} s: “{_name(settings['class_id'], names)}”, seed {settings['seed']}, "
            f"{settings['n']} image{'s' * (settings['n'] != 1)}, cfg {settings['cfg']:g}.")
    N = settings["split"]
    code = next((r for r in runs if 0 < r.split < K), None)
    if code is None:
        note = (f"N = {K} makes CoDe the large model alone (first row); move N below {K} to hand scales to the "
                "small model." if N >= K else "N = 0 makes CoDe the small model alone (second row); move N up to "
                "let the large model draft the first scales.")
        return f"{head} {note}"
    speed = large.total_ms / code.total_ms if code.total_ms else float("nan")
    acc = "" if code.class_accuracy is None else f", classifier accuracy {code.class_accuracy:.0%} (large-only " \
        f"{large.class_accuracy:.0%})"
    return (f"{head} CoDe N={N}: {code.total_ms:.0f} ms vs large-only {large.total_ms:.0f} ms ({speed:.1f}×), "
            f"PSNR vs large-only {_psnr(code.psnr_vs_large)}{acc}.")


# ------------------------------------------------------------------------------------------------ CoDe handlers
def generate(state, class_name, seed, split, n, cfg, image=1, models=None, progress=gr.Progress()) -> tuple:
    """Large-only, small-only and CoDe at N for the class and seed with the chosen ``models`` bundle: (state,
    status, canvas grid, final images, latency / memory, metrics table, image slider)."""
    from core.var.code import compare_splits

    try:
        t0 = time.perf_counter()
        with VAR_LOCK:
            bundle = _bundle(progress, models)
            settings = _settings(bundle, class_name, seed, split, n, cfg, runs=3)
            K, N = bundle.num_scales, settings["split"]
            progress(0.3, desc="Generating large-only, small-only and CoDe…")
            runs = compare_splits(bundle.large, bundle.small, bundle.vq, settings["class_id"], settings["seed"],
                                  [0] + ([N] if 0 < N < K else []), settings["n"], settings["cfg"],
                                  classifier=bundle.classifier)
        seconds = time.perf_counter() - t0
        progress(1.0, desc="Done")
        index = _image_index(image, settings["n"])
        new_state = common.hold({"runs": runs, "settings": settings, "num_scales": K, "models": bundle.name},
                                "the CoDe images", state)
        status = _code_status(runs, settings, K, seconds, names=bundle.class_names) + _no_classifier_note(bundle)
        return (new_state, status, *_code_views(runs, index),
                gr.update(maximum=max(settings["n"], 2), value=index + 1))
    except Exception as exc:  # every failure becomes a message, the page stays usable
        raise common.failure(exc) from None


def update_split(state, split, image=1, progress=gr.Progress()) -> tuple:
    """Re-run only CoDe at the new N with the settings of the last Generate (large-only and small-only stay): the
    same outputs as ``generate``."""
    from core.var.code import classify, code_generate, psnr

    try:
        kept = common.held(state, required=False)
        if not kept:
            return (state, "Click **Generate** first; moving N then re-runs only CoDe.", *[gr.skip()] * 5)
        runs = kept["runs"]
        settings = dict(kept["settings"])
        K = kept["num_scales"]
        N = _int(split, "split N")
        if not 0 <= N <= K:
            raise DraftScopeError(f"split N must be in 0..{K} (the scales the large model makes), got {N}")
        settings["split"] = N
        base = [r for r in runs if r.split in (0, K)][:2]
        t0 = time.perf_counter()
        if 0 < N < K:
            with VAR_LOCK:
                bundle = _bundle(progress, kept.get("models"))
                progress(0.3, desc=f"CoDe N={N}…")
                run = code_generate(bundle.large, bundle.small, bundle.vq, settings["class_id"], settings["seed"], N,
                                    settings["n"], settings["cfg"])
                run.psnr_vs_large = psnr(run.images, base[0].images)
                run.class_accuracy = classify(bundle.classifier, run.images, settings["class_id"])
            base = [*base, run]
        seconds = time.perf_counter() - t0
        progress(1.0, desc="Done")
        index = _image_index(image, settings["n"])
        new_state = common.hold({**kept, "runs": base, "settings": settings}, "the CoDe images", state)
        names = CLASS_NAMES if kept.get("models") in (None, TINY) else ()
        return (new_state, _code_status(base, settings, K, seconds, what=f"N = {N}: re-ran CoDe only", names=names),
                *_code_views(base, index), gr.update())
    except Exception as exc:
        raise common.failure(exc) from None


def show_image(state, image) -> object:
    """Re-draw the canvas grid for another image of the batch (nothing is recomputed)."""
    try:
        runs = (common.held(state, required=False) or {}).get("runs") or []
        n = min((r.n for r in runs), default=1)
        return canvas_grid_figure(runs, _image_index(image, n))
    except Exception as exc:
        raise common.failure(exc) from None


# ------------------------------------------------------------------------------------------------ step mode
def step(state, class_name, seed, split, n, cfg, models=None, progress=gr.Progress()) -> tuple:
    """Make the next scale (``code_generate(..., stop_scale=k + 1)``): (state, step figure, status). Changing a
    setting starts over from scale 0."""
    from core.var.code import code_generate

    state = dict(state or {})
    try:
        dropped = common.STORE.gone(state.get("held"))  # then start over, saying why
        made_so_far = {} if dropped else (common.held(state, required=False) or {})
        with VAR_LOCK:
            bundle = _bundle(progress, models)
            settings = _settings(bundle, class_name, seed, split, n, cfg)
            K = bundle.num_scales
            key = (*settings.values(), bundle.name)
            restarted = bool(made_so_far.get("k")) and made_so_far.get("key") != key
            k = made_so_far.get("k", 0) if made_so_far.get("key") == key else 0
            if k >= K:
                return (state, step_figure(made_so_far.get("run"), K - 1, K),
                        f"All {K} scales are made: the image is finished. **Reset** (or change a setting) to start "
                        "over.")
            run = code_generate(bundle.large, bundle.small, bundle.vq, settings["class_id"], settings["seed"],
                                settings["split"], settings["n"], settings["cfg"], stop_scale=k + 1)
        made = run.scales[k]
        role = "large drafter" if made.model == "large" else "small refiner"
        notes = [f"The earlier image was {dropped}, so it started over from scale 0."] if dropped and k == 0 else []
        if restarted:
            notes.append("Settings changed, so it started over from scale 0.")
        if 0 < settings["split"] == k:
            notes.append(f"N = {settings['split']}: the small refiner takes over from here.")
        if k + 1 == K:
            notes.append("That was the last scale: the image is finished.")
        status = (f"Scale {k} of {K - 1} ({made.side}×{made.side}, {made.tokens} tokens) made by the **{role}** in "
                  f"{made.ms:.1f} ms. " + " ".join(notes)).strip()
        kept = common.hold({"key": key, "k": k + 1, "run": run}, "the step-mode image", state)
        return kept, step_figure(run, k, K), status
    except Exception as exc:
        raise common.failure(exc) from None


def reset(state=None) -> tuple:
    """Start step mode over: (state, step figure, status)."""
    common.forget(state)
    return {}, step_figure(None), STEP_READY


# ------------------------------------------------------------------------------------------------ ScaleKV
def run_scalekv(class_name, seed, budget, n, cfg, models=None, progress=gr.Progress()) -> tuple:
    """Calibrate the large model (once per process), then generate with the full cache, ScaleKV and a uniform
    budget: (ASI heatmap, budget figure, images + differences, table, status)."""
    from core.var.code import classify, psnr
    from core.var.report import calibrate
    from core.var.scalekv import kv_generate, scale_budgets

    try:
        beta = parse_budget(budget if budget not in (None, "") else DEFAULT_BUDGET)
        t0 = time.perf_counter()
        with VAR_LOCK:
            bundle = _bundle(progress, models)
            settings = _settings(bundle, class_name, seed, None, n, cfg, runs=3, scores=True)
            model, vq = bundle.large, bundle.vq
            progress(0.2, desc="Calibrating the large model (once per process)…")
            report = calibrate(model, vq, "large")
            plan = scale_budgets(tuple(model.scales), len(model.blocks), beta, report.labels)
            runs = {}
            for i, policy in enumerate(("full", "scalekv", "uniform")):
                progress(0.4 + 0.2 * i, desc=f"Generating with the {policy} cache…")
                runs[policy] = kv_generate(model, vq, settings["class_id"], settings["seed"], policy, beta, report,
                                           n=settings["n"], cfg=settings["cfg"])
            for run in runs.values():
                run.class_accuracy = classify(bundle.classifier, run.images, settings["class_id"])
                if run is not runs["full"]:
                    run.psnr_vs_full = psnr(run.images, runs["full"].images)
        seconds = time.perf_counter() - t0
        progress(1.0, desc="Done")
        full, scalekv, uniform = runs["full"], runs["scalekv"], runs["uniform"]
        share = scalekv.kv_bytes / full.kv_bytes if full.kv_bytes else 1.0
        status = (f"ScaleKV at {beta:.0%} on the large model ({seconds:.1f} s): the cache kept between scales is "
                  f"{scalekv.kv_bytes / 1024:.1f} KiB vs {full.kv_bytes / 1024:.1f} KiB in full ({share:.0%}). PSNR "
                  f"vs the full cache: ScaleKV {_psnr(scalekv.psnr_vs_full)}, uniform "
                  f"{_psnr(uniform.psnr_vs_full)}." + _no_classifier_note(bundle))
        scales = tuple(model.scales)
        return (asi_heatmap(report, scales), budget_figure(plan, scales), kv_images_figure(full, scalekv, uniform),
                kv_frame(full, scalekv, uniform), status)
    except Exception as exc:
        raise common.failure(exc) from None


# ------------------------------------------------------------------------------------------------ DraftAttention
def _grid_choices(maps) -> list[tuple[str, int]]:
    return [(f"{m.side}×{m.side} (scale {m.scale})", m.scale) for m in sorted(maps, key=lambda m: -m.scale)]


def _find_map(run, scale):
    maps = getattr(run, "maps", None) or []
    try:
        scale = int(scale)
    except (TypeError, ValueError):
        scale = None
    return next((m for m in maps if m.scale == scale), maps[-1] if maps else None)


def run_draft_attention(class_name, seed, sparsity, layer, n, cfg, scale=None, state=None, models=None,
                        progress=gr.Progress()) -> tuple:
    """DraftAttention on the large model's 6×6 and 8×8 scales, against dense attention with the same class and seed:
    (state, grid figure, per-layer table, images, status, scale dropdown, layer slider)."""
    from core.var.code import classify
    from core.var.draft_attention import draft_attention_generate

    try:
        try:
            r = float(sparsity)
        except (TypeError, ValueError):
            raise DraftScopeError(f"sparsity must be a number, got {sparsity!r}") from None
        if not 0.0 <= r < 1.0:
            raise DraftScopeError(f"sparsity must be in [0, 1), got {r:g}")
        t0 = time.perf_counter()
        with VAR_LOCK:
            bundle = _bundle(progress, models)
            settings = _settings(bundle, class_name, seed, None, n, cfg, runs=2, scores=True)
            depth = len(bundle.large.blocks)
            layer = _int(depth // 2 if layer in (None, "") else layer, "the layer")
            if not 0 <= layer < depth:
                raise DraftScopeError(f"the large model has layers 0..{depth - 1}, got layer {layer}")
            progress(0.3, desc="Dense and DraftAttention generation…")
            run = draft_attention_generate(bundle.large, bundle.vq, settings["class_id"], settings["seed"], r,
                                           min_side=MIN_SIDE, n=settings["n"], cfg=settings["cfg"], map_layer=layer)
            sparse_acc = classify(bundle.classifier, run.images, settings["class_id"])
            dense_acc = classify(bundle.classifier, run.dense_images, settings["class_id"])
        seconds = time.perf_counter() - t0
        progress(1.0, desc="Done")
        shown = _find_map(run, scale)
        status = (f"DraftAttention r = {r:.2f} on the large model, layer {layer} shown ({seconds:.1f} s): "
                  f"{run.flop_sparsity:.0%} of the query·key pairs of the scales of side ≥ {MIN_SIDE} skipped, mean "
                  f"relative output error {run.mean_rel_error:.3f}; PSNR vs dense {_psnr(run.psnr_vs_dense)}" +
                  (f"; classifier accuracy {sparse_acc:.0%} (dense {dense_acc:.0%})." if sparse_acc is not None else
                   "." + _no_classifier_note(bundle)))
        kept = common.hold({"run": run}, "the DraftAttention run", state)
        return (kept, grid_attention_figure(shown), draft_attention_frame(run), draft_images_figure(run), status,
                gr.update(choices=_grid_choices(run.maps), value=shown.scale if shown else None),
                gr.update(maximum=max(depth - 1, 1)))
    except Exception as exc:
        raise common.failure(exc) from None


def show_grid(state, scale) -> object:
    """The stored DraftAttention run's grid figure for another scale (nothing is recomputed)."""
    try:
        return grid_attention_figure(_find_map((common.held(state, required=False) or {}).get("run"), scale))
    except Exception as exc:
        raise common.failure(exc) from None


def switch_models(models) -> tuple:
    """The class list, split range, layer range and DraftAttention grids of the picked bundle (nothing is loaded)."""
    official = models not in (None, "", TINY)
    scales, depth = (PATCH_NUMS, PAPER_PAIR[0]) if official else (DEFAULT_SCALES, DEFAULT_DEPTH)
    classes = [f"{i} {label}" for i, label in sorted(IMAGENET_EXAMPLES.items())] if official else list(CLASS_NAMES)
    K = len(scales)
    grids = [(f"{s}×{s} (scale {k})", k) for k, s in reversed(list(enumerate(scales))) if s >= MIN_SIDE]
    return (gr.update(choices=classes, value=classes[0], allow_custom_value=official),
            gr.update(maximum=K, value=default_split(K),
                      label=f"Split N: the large model makes scales 0..N−1 (N = {K}: large-only, 0: small-only)"),
            gr.update(maximum=depth - 1, value=depth // 2), gr.update(choices=grids, value=grids[0][1]))


# ------------------------------------------------------------------------------------------------ layout
def build(allow_local_models: bool = False) -> dict:
    """Create the tab's components in the current Blocks context and wire them; return the components.
    (``allow_local_models`` is unused: the VAR models are the project's own checkpoints.)"""
    from core.var.bundle import bundle_choices

    K = len(DEFAULT_SCALES)
    gr.Markdown(INTRO, elem_id="var-intro")
    choices = bundle_choices()  # the official pair only where its files are here or the Hub is the model source
    models = gr.Radio(choices, value=TINY, label="Models: the shipped tiny VARs, or the official VAR-d30 drafter and "
                      "VAR-d16 refiner (ImageNet 256 px, 1000 classes, no classifier)", elem_id="var-models") \
        if len(choices) > 1 else None
    extra = [models] if models is not None else []
    code_state, step_state, da_state = (gr.State({}, time_to_live=common.state_ttl(), delete_callback=common.forget)
                                        for _ in range(3))
    with gr.Row():
        class_name = gr.Dropdown(list(CLASS_NAMES), value=CLASS_NAMES[0], label="Class", elem_id="var-class")
        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="var-seed")
        split = gr.Slider(0, K, value=default_split(K), step=1, elem_id="var-split",
                          label=f"Split N: the large model makes scales 0..N−1 (N = {K}: large-only, 0: small-only)")
        n = gr.Slider(1, min(MAX_N, limits.limits().var_max_batch), value=DEFAULT_N, step=1,
                      label="Images in the batch (n)", elem_id="var-n")
        cfg = gr.Slider(0, 5, value=DEFAULT_CFG, step=0.1, label="Guidance (cfg)", elem_id="var-cfg")
    generate_btn = gr.Button("Generate", variant="primary", elem_id="var-generate")
    status = gr.Markdown(READY, elem_id="var-status")
    gr.Markdown("### Large-only, small-only and CoDe side by side\nEvery cell is the picture decoded from the scales "
                "made so far; its frame says which model made that scale. The same seed gives every run the same "
                "random draws, so they differ only in who made which scale. Moving N re-runs only CoDe.")
    canvas = gr.Plot(canvas_grid_figure(None), show_label=False, elem_id="var-canvas")
    image = gr.Slider(1, MAX_N, value=1, step=1, label="Image of the batch in the canvas grid", elem_id="var-image")
    final = gr.Plot(final_images_figure(None), show_label=False, elem_id="var-images")
    latency = gr.Plot(latency_memory_figure(None), show_label=False, elem_id="var-latency")
    metrics = gr.Dataframe(metrics_frame(None), label="Runs", interactive=False, wrap=True, elem_id="var-metrics")

    gr.Markdown("### Step mode\nOne scale per press, with the settings above: watch the picture sharpen and see "
                "where the large drafter hands over to the small refiner.")
    with gr.Row():
        step_btn = gr.Button("Step ▶", variant="primary", elem_id="var-step")
        reset_btn = gr.Button("Reset", elem_id="var-reset")
    step_status = gr.Markdown(STEP_READY, elem_id="var-step-status")
    step_plot = gr.Plot(step_figure(None), show_label=False, elem_id="var-step-plot")

    gr.Markdown("### ScaleKV\nEach scale reads the keys and values cached for all coarser scales. ScaleKV first "
                "measures, per layer and scale, how selective attention is (ASI), then keeps a budget β of that "
                "history: more for drafter layers (D), less for refiner layers (R), the same total as a uniform "
                "budget that keeps β in every layer. Runs on the large model with the class, seed, n and cfg above.")
    with gr.Row():
        budget = gr.Radio(list(BUDGETS), value=DEFAULT_BUDGET, label="KV budget β (share of the history kept)",
                          elem_id="var-kv-budget")
        kv_btn = gr.Button("Run ScaleKV", elem_id="var-kv-run")
    kv_status = gr.Markdown("", elem_id="var-kv-status")
    with gr.Row():
        with gr.Column():
            asi = gr.Plot(asi_heatmap(None), show_label=False, elem_id="var-asi")
        with gr.Column():
            budget_plot = gr.Plot(budget_figure(None), show_label=False, elem_id="var-budget-plot")
    kv_images = gr.Plot(kv_images_figure(None, None), show_label=False, elem_id="var-kv-images")
    kv_table = gr.Dataframe(kv_frame(None), label="KV cache and quality", interactive=False,
                            elem_id="var-kv-table")

    gr.Markdown("### DraftAttention\nOn the 6×6 and 8×8 scales the queries and keys are averaged over 2×2 tiles; "
                "the tiles' attention (the draft map) keeps only the top 1 − r tile pairs, which are computed in "
                "full. The coarser scales are always read in full. Runs on the large model; the maps show one layer "
                "(head 0).")
    scale_choices = [(f"{s}×{s} (scale {k})", k) for k, s in reversed(list(enumerate(DEFAULT_SCALES)))
                     if s >= MIN_SIDE]
    with gr.Row():
        sparsity = gr.Slider(0.5, 0.95, value=DEFAULT_SPARSITY, step=0.05, label="Sparsity r (tile pairs skipped)",
                             elem_id="var-da-sparsity")
        da_layer = gr.Slider(0, DEFAULT_DEPTH - 1, value=3, step=1, label="Layer shown", elem_id="var-da-layer")
        da_scale = gr.Dropdown(scale_choices, value=scale_choices[0][1], label="Grid shown", elem_id="var-da-scale")
        da_btn = gr.Button("Run DraftAttention", elem_id="var-da-run")
    da_status = gr.Markdown("", elem_id="var-da-status")
    da_grid = gr.Plot(grid_attention_figure(None), show_label=False, elem_id="var-da-grid")
    with gr.Row():
        with gr.Column(scale=1):
            da_table = gr.Dataframe(draft_attention_frame(None), label="Per scale and layer", interactive=False,
                                    elem_id="var-da-table")
        with gr.Column(scale=2):
            da_images = gr.Plot(draft_images_figure(None), show_label=False, elem_id="var-da-images")

    code_outputs = [code_state, status, canvas, final, latency, metrics, image]
    generate_btn.click(generate, [code_state, class_name, seed, split, n, cfg, image, *extra], code_outputs,
                       api_name="var_generate", **limits.long_work())
    split.input(update_split, [code_state, split, image], code_outputs, api_name="var_split",
                trigger_mode="always_last", **limits.long_work())
    image.input(show_image, [code_state, image], canvas, api_name="var_image", queue=False)
    step_outputs = [step_state, step_plot, step_status]
    step_btn.click(step, [step_state, class_name, seed, split, n, cfg, *extra], step_outputs, api_name="var_step",
                   **limits.model_work())
    reset_btn.click(reset, [step_state], step_outputs, api_name="var_reset", queue=False)
    kv_btn.click(run_scalekv, [class_name, seed, budget, n, cfg, *extra],
                 [asi, budget_plot, kv_images, kv_table, kv_status],
                 api_name="var_scalekv", **limits.long_work())
    da_btn.click(run_draft_attention, [class_name, seed, sparsity, da_layer, n, cfg, da_scale, da_state, *extra],
                 [da_state, da_grid, da_table, da_images, da_status, da_scale, da_layer],
                 api_name="var_draft_attention", **limits.long_work())
    da_scale.input(show_grid, [da_state, da_scale], da_grid, api_name="var_da_scale", queue=False)
    if models is not None:
        models.change(switch_models, [models], [class_name, split, da_layer, da_scale], api_name="var_models",
                      queue=False)
    return {"code_state": code_state, "step_state": step_state, "da_state": da_state, "class_name": class_name,
            "seed": seed, "split": split, "n": n, "cfg": cfg, "generate": generate_btn, "status": status,
            "canvas": canvas, "image": image, "images": final, "latency": latency, "metrics": metrics,
            "step": step_btn, "reset": reset_btn, "step_status": step_status, "step_plot": step_plot,
            "budget": budget, "kv_run": kv_btn, "kv_status": kv_status, "asi": asi, "budget_plot": budget_plot,
            "kv_images": kv_images, "kv_table": kv_table, "sparsity": sparsity, "da_layer": da_layer,
            "da_scale": da_scale, "da_run": da_btn, "da_status": da_status, "da_grid": da_grid,
            "da_table": da_table, "da_images": da_images, "models": models}
