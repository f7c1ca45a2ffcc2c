"""EasySpec: layer-parallel ("fuzzy") drafting with bonus calibration, around a model drafter.

Fuzzy forward. The wrapped drafter network's L layers are split into
    [0] exact · [1, g] · [g+1, 2g] · ... · [.., L-2] (the last middle group may be shorter) · [L-1] exact
(g = ``group_size``; with L ≤ 2 every layer is its own group). Inside a group every attention sublayer reads the
group's input x, so on N ≥ g devices they could all run at once; the MLPs stay sequential:

    a_j = Attn_j(input_norm_j(x))                          for every layer j of the group (same x, own KV slot)
    h = x;  for j in group:  h = h + a_j;  h = h + MLP_j(post_attention_norm_j(h))

A group of one layer is exactly the decoder layer, so ``group_size = 1`` is the exact forward.

Bonus calibration (``calibrate=True``, the paper's default). The KV entries written while drafting fuzzily are
approximate. After verification the drafter cache is rolled back to the last exactly computed token and the
committed tokens from there on (the accepted drafts and the bonus token) go through one normal sequential forward:
the cache is exact again, and the logits of that pass give the next round's first draft token, so each round drafts
one token exactly and the others fuzzily. With ``calibrate=False`` only the rejected drafts are rolled back; the fuzzy
entries of accepted tokens stay, and every drafting forward after the (exact) prompt prefill is fuzzy.

Draft.info (JSON): group_size, calibrate, groups ([[first, last], ...]), exact_first (draft 0 came from an exact
forward), fuzzy_forwards, calibrated_tokens (tokens the calibration pass before this round fed exactly), and with
``measure=True`` (off by default: it costs one exact forward per round) the cosine between the fuzzy and the exact
final hidden state (after the final norm) of the round's first fuzzy forward, the one that yields draft 1
(``cosine_draft``), both computed on the same cache, plus ``top1_match`` (the two argmaxes agree).

On Gemma 3 every layer gets the mask of its kind (sliding-window layers see only their window) and its rotary
embedding, and each sublayer's contribution includes Gemma's sublayer output norms, so ``group_size = 1`` stays exact.

This runs the groups on one device: it reproduces EasySpec's acceptance behaviour, not its multi-device speed.
``layer_times`` measures the sublayers here and ``modelled_latency`` turns them into a modelled multi-device latency.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import nn
from transformers import DynamicCache

from core.errors import DraftScopeError
from core.options import Flag, ModelName, Range
from core.runtime.devices import module_device, to_device
from core.runtime.layers import check_layer_slicing, embed, head, layer_inputs, run_layers
from core.runtime.models import LoadedModel
from core.runtime.timing import timed_ms
from core.specdec.drafters.base import ConfidenceOptions, Draft, DraftContext, Drafter, stack_or_none
from core.specdec.drafters.early_exit import EarlyExitDrafter
from core.specdec.drafters.model import ModelDrafter, fit_vocab
from core.specdec.vocab_trim import VocabTrimOptions

MAX_GROUP_SIZE = 16
BASES = ("early-exit", "model")


def layer_groups(n_layers: int, group_size: int) -> list[tuple[int, int]]:
    """Inclusive (first, last) layer ranges: the first and last layers alone, the middle ones in runs of
    ``group_size`` (the last run may be shorter)."""
    if n_layers <= 2:
        return [(i, i) for i in range(n_layers)]
    middle = [(s, min(s + group_size, n_layers - 1) - 1) for s in range(1, n_layers - 1, group_size)]
    return [(0, 0), *middle, (n_layers - 1, n_layers - 1)]


def fuzzy_layers(model: nn.Module, hidden: torch.Tensor, groups: list[tuple[int, int]], cache,
                 position0: int) -> torch.Tensor:
    """The layer-parallel forward of ``hidden`` (1, n, d) at positions position0.., appending to every layer of
    ``cache`` (all layers must hold the same number of tokens). Returns the last layer's output (1, n, d). Every
    layer gets the mask and rotary embedding of its kind (sliding-window or full attention)."""
    all_layers = model.model.layers
    positions = torch.arange(position0, position0 + hidden.shape[1], device=hidden.device)[None]
    inputs = layer_inputs(model, all_layers, hidden, cache, positions)  # (mask, rotary) per layer
    for first, last in groups:
        layers = all_layers[first:last + 1]
        attn_out = []
        for j, layer in enumerate(layers):  # every attention of the group reads the group's input
            device = module_device(layer)  # a device map may spread a group's layers: each reads x on its own
            mask, rotary = to_device(inputs[first + j], device)
            attn_out.append(_attention(layer, hidden.to(device), rotary, mask, cache))
        for layer, a in zip(layers, attn_out):  # the MLPs chain as usual, the stream following the layers' devices
            hidden = hidden.to(a.device) + a
            hidden = hidden + _mlp(layer, hidden)
    return hidden


class EasySpecDrafter(Drafter):
    name = "easyspec"

    @dataclass
    class Options(VocabTrimOptions, ConfidenceOptions):
        base: Annotated[Literal["early-exit", "model"], Flag("--easyspec-base")] = "early-exit"  # drafter run fuzzily
        draft_model: Annotated[str | None, ModelName] = None  # base 'model': the draft model (the target's tokenizer)
        exit_layer: Annotated[int | None, Range(1, 31, 1)] = None  # base 'early-exit': ℓ (None: a fifth of the depth)
        group_size: Annotated[int, Range(1, MAX_GROUP_SIZE, 1)] = 4  # layers per fuzzy group
        calibrate: bool = True  # bonus calibration: an exact pass over the committed tokens after each round
        measure: bool = False  # also record the fuzzy vs exact cosine (one more exact forward per round)

        def __post_init__(self):
            super().__post_init__()
            if not isinstance(self.group_size, int) or not 1 <= self.group_size <= MAX_GROUP_SIZE:
                raise DraftScopeError(f"EasySpec group size must be in 1..{MAX_GROUP_SIZE}, got {self.group_size}")
            if self.base not in BASES:
                raise DraftScopeError(f"EasySpec wraps a model drafter: base must be one of {', '.join(BASES)}, "
                                      f"got '{self.base}'")
            if self.base == "model" and self.draft_model is None:
                raise DraftScopeError("EasySpec with base 'model' needs a draft model (--draft-model PRESET)")

    def __init__(self, target: LoadedModel, options=None, **kw):
        super().__init__(target, options, **kw)
        opts = self.options
        # the wrapped drafter builds and validates the network (tokenizer match, exit layer range)
        trim = {"vocab_trim": opts.vocab_trim, "vocab_counts": opts.vocab_counts}
        self.inner = (ModelDrafter(target, draft_model=opts.draft_model, allow_local=self.allow_local, **trim)
                      if opts.base == "model" else EarlyExitDrafter(target, exit_layer=opts.exit_layer, **trim))
        self.net = self.inner.network()
        try:
            check_layer_slicing(self.net, sliding_ok=True)
        except DraftScopeError as exc:
            raise DraftScopeError(f"EasySpec needs a llama-style drafter network: {exc}") from exc
        self.base, self.group_size, self.calibrate, self.measure = (opts.base, opts.group_size, opts.calibrate,
                                                                    opts.measure)
        self.n_layers = len(self.net.model.layers)
        self.groups = layer_groups(self.n_layers, self.group_size)
        self.kv = self.inner.kv
        self.exact_len = 0  # the first exact_len cached tokens were computed by exact forwards
        self._next: torch.Tensor | None = None  # exact logits (V,) after kv.ids, from the last calibration
        self._calibrated = 0  # tokens the last calibration pass fed

    # ------------------------------------------------------------------------------------------ forwards
    def _feed_exact(self, ids: list[int]) -> torch.Tensor:
        logits_V = self.kv.forward(ids)[-1]
        self.exact_len = len(self.kv)
        return logits_V

    @torch.inference_mode()
    def _feed_fuzzy(self, ids: list[int], info: dict | None = None) -> torch.Tensor:
        """Feed ``ids`` with the layer-parallel forward; return the last logits (V,). With ``info`` (a measured
        round) also record the cosine between the fuzzy and the exact final (normed) hidden state of the last id,
        both on the same cache."""
        if self.kv.cache is None:
            self.kv.reset()
        position0 = len(self.kv)
        hidden = embed(self.net, ids)
        exact = None
        if info is not None:
            exact = run_layers(self.net, hidden, 0, self.n_layers, self.kv.cache, position0)[:, -1:]
            self.kv.cache.crop(-len(ids))
        out = fuzzy_layers(self.net, hidden, self.groups, self.kv.cache, position0)[:, -1:]
        self.kv.ids.extend(ids)
        logits_V = head(self.net, out)[-1]
        if exact is not None:
            norm = self.net.model.norm
            info["cosine"] = round(float(torch.cosine_similarity(norm(out).float().flatten(),
                                                                 norm(exact).float().flatten(), dim=0)), 6)
            info["top1_match"] = bool(int(head(self.net, exact)[-1].argmax()) == int(logits_V.argmax()))
        return logits_V

    def _catch_up(self, tokens: list[int], exact: bool) -> torch.Tensor:
        """Bring the cache up to ``tokens`` (rolling back to the common prefix, and to the exact prefix when
        ``exact``), feeding at least one token; return the logits (V,) after ``tokens``."""
        if self.kv.cache is None:
            self.kv.reset()
        n = 0
        limit = min(len(self.kv), len(tokens) - 1, self.exact_len if exact else len(self.kv))
        while n < limit and self.kv.ids[n] == tokens[n]:
            n += 1
        self.kv.rollback(n)
        self.exact_len = min(self.exact_len, n)
        self._calibrated = len(tokens) - n if exact else 0
        return self._feed_exact(tokens[n:]) if exact else self._feed_fuzzy(tokens[n:])

    # ------------------------------------------------------------------------------------------ protocol
    def prefill(self, tokens: list[int]) -> None:
        """Exact forward over the whole prompt; its last logits give the first draft token."""
        self.kv.reset()
        self.exact_len = 0
        self._next = self._feed_exact(tokens)
        self._calibrated = 0

    def propose(self, ctx: DraftContext) -> Draft:
        info = {"group_size": self.group_size, "calibrate": self.calibrate,
                "groups": [[a, b] for a, b in self.groups], "calibrated_tokens": self._calibrated}
        ready, self._next, self._calibrated = self._next, None, 0
        exact_first = ready is not None and self.kv.ids == ctx.tokens
        if not exact_first:  # not in step with the committed tokens (calibration off, or a new prompt): catch up
            logits_V = self._catch_up(ctx.tokens, exact=self.calibrate)
            info["calibrated_tokens"] += self._calibrated
        else:
            logits_V = ready
        info["exact_first"] = exact_first or self.calibrate
        tokens, rows, shows, fuzzy = [], [], [], 0
        for i in range(ctx.gamma):
            token, q_V, show_V = ctx.pick(fit_vocab(logits_V, self.target.vocab_size))
            if ctx.unsure(show_V):
                break
            tokens.append(token)
            rows.append(q_V)
            shows.append(show_V)
            if i == ctx.gamma - 1:
                break
            measured = {} if self.measure and fuzzy == 0 else None
            logits_V = self._feed_fuzzy([token], measured)
            fuzzy += 1
            if measured:
                info.update(measured, cosine_draft=i + 1)
        info["fuzzy_forwards"] = fuzzy
        info.update(self.inner.trim_info())
        return Draft(tokens, stack_or_none(rows), stack_or_none(shows), info, self.inner.vocab_V)

    def observe(self, tokens: list[int], n_accepted: int) -> None:
        if self.calibrate:  # bonus calibration: one exact pass over what is committed but not exactly cached
            self._next = self._catch_up(tokens, exact=True)
        else:
            self.kv.sync(tokens)  # drop the rejected drafts, keep the fuzzy entries of the accepted ones
            self.exact_len = min(self.exact_len, len(self.kv))

    @property
    def cache_len(self) -> int:
        return len(self.kv)

    @property
    def cost(self) -> float:
        return self.inner.cost

    # ------------------------------------------------------------------------------------------ timing
    @torch.inference_mode()
    def layer_times(self, n_tokens: int = 1, repeats: int = 5, context: int = 64) -> dict:
        """Median wall times (ms) on this machine of each layer's attention sublayer (input norm included) and MLP
        sublayer (post-attention norm included), and of the final norm + LM head, for ``n_tokens`` new tokens on a
        ``context``-token scratch cache (one warm-up run each, not counted)."""
        net, layers = self.net, self.net.model.layers
        vocab = net.get_input_embeddings().weight.shape[0]
        cache = DynamicCache(config=net.config)
        cache.activate_past_recording()  # sliding-window layers: each timed call is cropped off again
        run_layers(net, embed(net, [i % vocab for i in range(1, context + 1)]), 0, self.n_layers, cache, 0)
        x = embed(net, [(context + i) % vocab for i in range(n_tokens)])
        positions = torch.arange(context, context + n_tokens, device=x.device)[None]
        inputs = layer_inputs(net, layers, x, cache, positions)  # (mask, rotary) per layer
        attn_ms, mlp_ms = [], []
        for j, layer in enumerate(layers):
            mask, rotary = inputs[j]
            attn = functools.partial(_attention, layer, x, rotary, mask, cache)
            a = attn()  # warm-up
            cache.layers[j].crop(-n_tokens)
            crop = functools.partial(cache.layers[j].crop, -n_tokens)
            attn_ms.append(statistics.median([timed_ms(attn, x.device, after=crop) for _ in range(repeats)]))
            h = x + a
            mlp = functools.partial(_mlp, layer, h)
            mlp_ms.append(statistics.median([timed_ms(mlp, x.device) for _ in range(repeats + 1)][1:]))
            x = h + mlp()
        t_head = [timed_ms(functools.partial(head, net, x), x.device) for _ in range(repeats + 1)][1:]
        return {"attention_ms": attn_ms, "mlp_ms": mlp_ms, "head_ms": statistics.median(t_head),
                "n_tokens": n_tokens, "context": context, "repeats": repeats, "device": str(x.device)}


def _attention(layer: nn.Module, x: torch.Tensor, rotary, mask: torch.Tensor, cache) -> torch.Tensor:
    """The attention sublayer's contribution to the residual stream (Gemma's sandwich norm: also its output norm)."""
    out = layer.self_attn(hidden_states=layer.input_layernorm(x), position_embeddings=rotary, attention_mask=mask,
                          past_key_values=cache)[0]
    return layer.post_attention_layernorm(out) if _sandwich(layer) else out


def _mlp(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The MLP sublayer's contribution (Llama: post-attention norm, MLP; Gemma: pre- and post-feedforward norms)."""
    if _sandwich(layer):
        return layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(h)))
    return layer.mlp(layer.post_attention_layernorm(h))


def _sandwich(layer: nn.Module) -> bool:
    """Gemma-style layers normalise each sublayer's input and output."""
    return hasattr(layer, "pre_feedforward_layernorm") and hasattr(layer, "post_feedforward_layernorm")


def modelled_latency(times: dict, group_size: int, devices: int, sync_ms: float = 0.0) -> dict:
    """A model (not a measurement of multi-device hardware) of the per-token drafter latency.

    ``times`` holds per-layer ``attention_ms`` and ``mlp_ms`` lists and optionally ``head_ms`` (as ``layer_times``
    returns). One device runs everything in sequence: Σ attention + Σ MLP + head. With ``devices`` devices and the
    layer groups of ``layer_groups(L, group_size)``, a group's attention sublayers run concurrently, ``devices`` at
    a time (each wave costs its slowest member), its MLPs stay sequential, and every multi-layer group pays
    ``sync_ms`` once for gathering the attention outputs. Transfers and kernel-launch effects are not modelled.
    """
    attn, mlp = list(times["attention_ms"]), list(times["mlp_ms"])
    if len(attn) != len(mlp) or not attn:
        raise DraftScopeError("times need one attention and one MLP time per layer")
    if not 1 <= group_size <= MAX_GROUP_SIZE or devices < 1:
        raise DraftScopeError(f"group size must be in 1..{MAX_GROUP_SIZE} and devices ≥ 1")
    head_ms = float(times.get("head_ms", 0.0))
    groups = layer_groups(len(attn), group_size)
    sequential = sum(attn) + sum(mlp) + head_ms
    parallel, steps = head_ms, 0
    for first, last in groups:
        a = attn[first:last + 1]
        waves = [a[i:i + devices] for i in range(0, len(a), devices)]
        parallel += sum(max(w) for w in waves) + sum(mlp[first:last + 1]) + (sync_ms if len(a) > 1 else 0.0)
        steps += len(waves) + len(a)
    return {"sequential_ms": sequential, "parallel_ms": parallel,
            "speedup": sequential / parallel if parallel > 0 else math.inf, "group_size": group_size,
            "devices": devices, "groups": [[a, b] for a, b in groups], "sequential_steps": 2 * len(attn),
            "parallel_steps": steps, "note": "modelled from single-device sublayer times, not measured on N devices"}
