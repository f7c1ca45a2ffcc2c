"""Memory estimates of the long jobs, made before they start, and the refusal when one is over its cap.

An estimate adds up the tensors a job's code path really holds at its worst moment, from the job's parameters and the
model's shape (layers, heads, head size, width, vocabulary, bytes per value). Weights are not counted: they are loaded
once and shared. A job runs in phases (a prefill, a capture pass, one method after another); the estimate is the
costliest phase plus what stays alive through all of them, and says which phase that was. The constants were fitted
to the tensor bytes these code paths allocate (counted op by op with a torch dispatch mode); ``tests/test_budgets.py``
measures them again on small models and fails when an estimate leaves a factor of two of the measurement, so an
estimate cannot drift silently from the code it describes.

``refuse_over`` and ``Estimate.check`` turn an estimate over the cap into one ``DraftScopeError`` line, e.g. "this KV
run would need about 3.2 GB (prompt 8,192 tokens × 6 methods); the limit here is 1.0 GB: shorten the prompt or pick
fewer methods". ``check_count`` does the same for plain sizes (tree nodes, sweep points, a batch). Pure torch-free
arithmetic: nothing here runs a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from core.errors import DraftScopeError

F32 = 4  # captured attention, scores and logits are float32 whatever the model's dtype
PY_FLOAT = 32  # a float in a Python list: the 8-byte pointer and the 24-byte float object (records keep lists)
CAPTURE_CHUNK = 256  # core.attention.capture.CHUNK: query rows per chunk of H2O's column sums
LOGIT_CHUNK_BYTES = 32 * 2 ** 20  # core.attention.draft_attention: one chunk of logits rows compared at a time


# ------------------------------------------------------------------------------------------------ shapes
@dataclass(frozen=True)
class Shape:
    """What an estimate needs to know of a decoder-only transformer (``Shape.of`` reads it off a model)."""

    layers: int
    heads: int  # query heads
    kv_heads: int
    head_dim: int
    hidden: int  # the residual width D
    intermediate: int  # the MLP's width I
    vocab: int
    dtype_bytes: int = 4  # bytes per activation and cache value (float32 on the CPU)
    sliding: bool = False  # has sliding-window layers (Gemma 3): its prefill builds (n, n) bool masks

    @classmethod
    def of(cls, model) -> Shape:
        """The shape of a ``LoadedModel``, a transformers model or its config (a config alone: float32)."""
        net = getattr(model, "model", model)  # LoadedModel → the network
        config = getattr(net, "config", net)
        config = getattr(config, "text_config", None) or config
        heads = int(config.num_attention_heads)
        hidden = int(config.hidden_size)
        try:
            dtype_bytes = next(net.parameters()).element_size()
        except (AttributeError, StopIteration, TypeError):
            dtype_bytes = 4
        return cls(layers=int(config.num_hidden_layers), heads=heads,
                   kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
                   head_dim=int(getattr(config, "head_dim", None) or hidden // heads), hidden=hidden,
                   intermediate=int(getattr(config, "intermediate_size", None) or 4 * hidden),
                   vocab=int(config.vocab_size), dtype_bytes=dtype_bytes,
                   sliding="sliding_attention" in (getattr(config, "layer_types", None) or []))


# ------------------------------------------------------------------------------------------------ terms
def kv_cache(shape: Shape, n: int) -> int:
    """Keys and values of n positions in every layer: 2 · layers · KV heads · head size · n · bytes (sliding-window
    layers counted in full: a prefill holds every position before the window trims it)."""
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * n * shape.dtype_bytes


def forward(shape: Shape, n: int, logits_rows: int = 1) -> int:
    """The transient peak of one forward over n tokens, inside one layer (they run one after another): the MLP's gate,
    up and product (3·I per token) beside the residual stream and its normed copies (≈5·D), or the attention's
    queries, keys and values with their rotated copies, whichever is larger; Gemma's (n, n) bool masks for its two
    layer types; and the float32 logits of the ``logits_rows`` last positions."""
    s = shape
    per_token = max(3 * s.intermediate + 5 * s.hidden, 2 * (s.heads + 2 * s.kv_heads) * s.head_dim + 4 * s.hidden)
    masks = 2 * n * n if s.sliding else 0
    return n * per_token * s.dtype_bytes + masks + logits_rows * s.vocab * F32


def captured_rows(shape: Shape, queries: int, keys: int, column_sums: bool = False) -> int:
    """``core.attention.capture``: the float32 attention of ``queries`` rows over ``keys`` kept for every layer and
    query head, plus the transient of one layer's scores (matmul, mask, softmax); with ``column_sums`` every query's
    attention summed per key too (kept per layer, computed CAPTURE_CHUNK rows at a time)."""
    kept = shape.layers * shape.heads * queries * keys * F32
    transient = 3 * shape.heads * queries * keys * F32
    if column_sums:
        kept += shape.layers * shape.heads * keys * F32
        transient = max(transient, 3 * shape.heads * min(CAPTURE_CHUNK, keys) * keys * F32)
    return kept + transient


def fmt_bytes(n: float) -> str:
    """1234567 → "1.2 MB" (decimal units, one decimal)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


# ------------------------------------------------------------------------------------------------ estimates
@dataclass
class Estimate:
    """A job's peak: ``parts`` name → bytes (the costliest phase's terms and what stays alive through every phase),
    ``phase`` which phase that was; ``detail`` and ``advice`` go into the refusal."""

    what: str  # "this KV run"
    parts: dict[str, int] = field(default_factory=dict)
    phase: str = ""
    detail: str = ""  # "prompt 8,192 tokens × 6 methods"
    advice: str = ""  # "shorten the prompt or pick fewer methods"

    @property
    def bytes(self) -> int:
        return sum(self.parts.values())

    def check(self, cap_bytes: int | None) -> Estimate:
        """``refuse_over`` this estimate; returns it (for chaining)."""
        refuse_over(self.what, self.bytes, cap_bytes, self.detail, self.advice)
        return self


def refuse_over(what: str, estimate_bytes: int, cap_bytes: int | None, detail: str = "", advice: str = "") -> None:
    """A ``DraftScopeError`` when ``estimate_bytes`` exceeds ``cap_bytes`` (None: no cap): "this KV run would need
    about 3.2 GB (prompt 8,192 tokens × 6 methods); the limit here is 1.0 GB: shorten the prompt or pick fewer
    methods"."""
    if cap_bytes is None or estimate_bytes <= cap_bytes:
        return
    raise DraftScopeError(f"{what} would need about {fmt_bytes(estimate_bytes)}" + (f" ({detail})" if detail else "")
                          + f"; the limit here is {fmt_bytes(cap_bytes)}" + (f": {advice}" if advice else ""))


def check_count(what: str, value: int, cap: int | None, unit: str = "", advice: str = "") -> int:
    """``value`` unless it exceeds ``cap`` (None: no cap), else a ``DraftScopeError``: "the tree has 120 nodes; the
    limit here is 64: …" (with a ``unit``), "γ is 80; the limit here is 64" (without)."""
    if cap is not None and value > cap:
        size = f"{what} has {value:,} {unit}" if unit else f"{what} is {value:,}"
        raise DraftScopeError(f"{size}; the limit here is {cap:,}" + (f": {advice}" if advice else ""))
    return value


def _peak(what: str, phases: Mapping[str, dict[str, int]], kept: dict[str, int], detail: str, advice: str) -> Estimate:
    """The costliest phase's parts plus ``kept`` (alive through every phase)."""
    phase = max(phases, key=lambda name: sum(phases[name].values()))
    return Estimate(what, {**kept, **phases[phase]}, phase, detail, advice)


def kv_run(shape: Shape, n: int, new_tokens: int, presses: Mapping[str, object], guide: Shape | None = None,
           probes: int = 0, budgets: int = 1) -> Estimate:
    """``core.kv.run.kv_report`` on an n-token prompt with ``new_tokens`` decoded, one budget per press
    (``presses``: name → press, read for ``level``, ``queries``, ``column_sums``, ``draft_guided``, ``window``;
    ``budgets`` of them each), ``probes`` constraint probes per method.

    Alive throughout: the full cache (n + new positions), the true importance (L, Hkv, n) and the records every
    method adds (per-head scores as Python lists). Phases: the full prefill; the true-importance pass (prompt +
    output, attention of the output's queries captured); each method: its own cache beside the full one, its capture
    and prefill, a probe's copy of its cache; before that a draft-guided method's guide drafts (its cache and prefill;
    SpecPC's also captures the guide's attention)."""
    s, total = shape, n + new_tokens
    full = kv_cache(s, total)
    kept = {"full cache": full, "true importance": s.layers * s.kv_heads * n * F32 * 3}
    phases = {"full prefill": {"prefill": forward(s, n)},
              "true importance": {"its cache": kv_cache(s, total), "prefill": forward(s, total),
                                  "captured attention": captured_rows(s, new_tokens, total)}}
    records = 0
    for name, press in presses.items():
        level = getattr(press, "level", "kv")
        guided = bool(getattr(press, "draft_guided", False))
        extra = new_tokens if guided else 0  # SpecKV's lookahead votes; SpecPC's is read by the guide
        parts = {"method cache": kv_cache(s, n + extra + (n if probes else 0))}
        if level == "kv":
            queries = int(getattr(press, "queries", 0) or 0)
            sums = bool(getattr(press, "column_sums", False))
            parts["prefill"] = forward(s, n + extra, extra + 1)
            if queries or sums or extra:
                parts["captured attention"] = captured_rows(s, max(1, queries) + extra, n + extra, sums)
            records += 2 * s.layers * s.kv_heads * n * PY_FLOAT  # head scores, kept per head (Python lists)
        else:
            parts["prefill"] = forward(s, n)
        phases[name] = parts
        if guided and guide is not None:  # the guide drafts first (its cache is dropped before the target's turn)
            mine = {"guide cache": kv_cache(guide, n + new_tokens), "guide prefill": forward(guide, n + new_tokens)}
            if level != "kv":  # SpecPC: the guide's attention of its window and lookahead queries
                window = int(getattr(press, "window", 64) or 64)
                mine["guide attention"] = captured_rows(guide, min(window, n) + new_tokens, n + new_tokens)
            phases[f"{name}'s guide"] = mine
        records += 4 * n * PY_FLOAT  # per-token scores and counts
    kept["records"] = records * budgets
    return _peak("this KV run", phases, kept, f"prompt {n:,} tokens × {len(presses)} method"
                 f"{'s' * (len(presses) != 1)}", "shorten the prompt or pick fewer methods")


def draft_attention(shape: Shape, n: int, block: int) -> Estimate:
    """``core.attention.draft_attention.draft_attention_map`` on an n-token prefill.

    Alive throughout: the captured layer's q, k and v (repeated to every query head) and both prefills' last hidden
    states (n, D). Phases: a prefill under draft attention (per layer: the token-level keep mask and its causal
    intersection, (Hq, n, n) bools each, beside the (n, n) causal mask and the keys and values repeated per query
    head, and the (Hq, blocks, blocks) draft map with its sort); the logits compared a chunk of rows at a time; the
    record of one head (its (n, n) float map)."""
    s = shape
    rows = max(1, min(n, LOGIT_CHUNK_BYTES // (s.vocab * F32)))
    blocks = -(-n // max(1, block))
    kept = {"captured q, k, v": 3 * s.heads * n * s.head_dim * s.dtype_bytes,
            "last hidden states": 2 * n * s.hidden * F32}
    phases = {"sparse prefill": {"prefill": forward(s, n, 0), "block masks": (2 * s.heads + 1) * n * n,
                                 "repeated keys and values": 2 * s.heads * n * s.head_dim * s.dtype_bytes,
                                 "draft map": s.heads * blocks * blocks * (4 * F32 + 8 + 1)},
              "logits": {"logit chunks": 4 * rows * s.vocab * F32},
              "head record": {"head map": 4 * n * n * F32 + 3 * n * n}}
    return _peak("this DraftAttention run", phases, kept, f"prompt {n:,} tokens, {block}-token blocks",
                 "shorten the prompt")


def context_sweep(shape: Shape, lengths, new_tokens: int, drafters: int, gamma: int = 4) -> Estimate:
    """``core.specdec.longctx.context_sweep``: at the longest length, the target's cache and a model drafter's own
    (counted at the target's size: an upper bound for a smaller drafter) over prompt + new tokens, beside either one
    prefill or a decoding round (γ + 1 rows of logits and their probabilities, about five copies between drafter,
    target and verifier). Runs are sequential, so the longest length is the peak."""
    n = max(lengths)
    total = n + new_tokens
    kept = {"target cache": kv_cache(shape, total), "drafter cache": kv_cache(shape, total) if drafters else 0}
    phases = {"prefill": {"prefill": forward(shape, n)},
              "decoding": {"logits and probabilities": 5 * (gamma + 1) * shape.vocab * F32}}
    return _peak("this context sweep", phases, kept, f"{len(lengths)} length{'s' * (len(lengths) != 1)} up to "
                 f"{n:,} tokens", "drop the longest length")


def var_generate(depth: int, width: int, heads: int, seq_len: int, n: int, runs: int = 1, cfg: bool = True,
                 mlp_ratio: float = 4.0, image_values: int = 3 * 32 * 32, scales: int = 6,
                 attention_scores: bool = False) -> Estimate:
    """``core.var.code`` generation of a batch of n images (2n rows with classifier-free guidance), ``runs`` runs one
    after another: the uint8 images and per-scale canvases of every run (kept side by side), beside one run's keys
    and values of every block over the whole token sequence and one block's activations; with ``attention_scores``
    (ScaleKV's and DraftAttention's float32 attention path) also one block's attention probabilities."""
    rows = 2 * n if cfg else n
    kept = {"canvases and images": runs * n * (scales + 1) * image_values}
    phase = {"caches": 2 * depth * rows * seq_len * width * F32,
             "block activations": rows * seq_len * int((3 + mlp_ratio) * width) * F32}
    if attention_scores:
        phase["attention probabilities"] = 2 * rows * heads * seq_len * seq_len * F32
    return _peak("this VAR run", {"generation": phase}, kept, f"{n} image{'s' * (n != 1)} × {runs} run"
                 f"{'s' * (runs != 1)}", "make fewer images at once")


__all__ = ["Estimate", "Shape", "captured_rows", "check_count", "context_sweep", "draft_attention", "fmt_bytes",
           "forward", "kv_cache", "kv_run", "refuse_over", "var_generate"]
