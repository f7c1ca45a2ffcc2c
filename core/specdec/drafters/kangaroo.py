"""Kangaroo (Liu et al., 2024): a self-drafter made of the target's first ℓ layers, a small trained adapter (one
attention block, no MLP) and the target's own LM head.

Shared cache: drafting runs the shallow layers [0, ℓ) inside the *target's* KV cache, so verification runs only the
layers [ℓ, L) on the layer-ℓ states kept from drafting (plus the shallow pass of the last draft, which drafting never
needed). Second early exit: drafting stops as soon as the drafter's top probability falls below η (or after γ
tokens). The adapter keeps its own one-layer cache, aligned with the committed tokens after every round.
On targets with sliding-window layers (Gemma 3) the shallow ones record what drafting feeds them until the round's
rollback (the target's cache records its past), which trims every layer back to its window; ``run_layers`` gives
each layer the mask and rotary embedding of its kind.

Defaults from the paper: γ = 6, η = 0.6. ℓ is fixed by the trained adapter: the one shipped for ``smollm2-135m``
(``assets/kangaroo/``) uses 6 of its 30 layers, deeper than the paper's 2 of Vicuna-7B's 32 (the README has the
measured comparison). Train one with ``python -m core.train.kangaroo``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch
from transformers import DynamicCache

from core import ASSETS_DIR
from core.errors import DraftScopeError
from core.options import LocalPath, Range
from core.runtime.devices import module_device, to_device
from core.runtime.layers import FULL, check_layer_slicing, embed, head, rotary, run_layers
from core.runtime.models import LoadedModel, module_param_bytes
from core.specdec.drafters.base import ConfidenceOptions, Draft, DraftContext, Drafter, SharesTargetCache, stack_or_none
from core.specdec.drafters.kangaroo_adapter import KangarooAdapter
from core.specdec.vocab_trim import VocabTrimOptions, draft_head, vocab_mask

ASSETS = ASSETS_DIR / "kangaroo"


def default_adapter_path(target_name: str) -> Path:
    return ASSETS / f"{target_name}.safetensors"


@dataclass
class _Round:
    base: int  # committed tokens in every layer of the target's cache when the round began
    feed: list[int] = field(default_factory=list)  # tokens whose shallow states are in the cache this round
    hidden: list[torch.Tensor] = field(default_factory=list)  # their layer-ℓ states, (1, n, d) pieces


class KangarooDrafter(Drafter, SharesTargetCache):
    name = "kangaroo"

    @dataclass
    class Options(VocabTrimOptions, ConfidenceOptions):
        adapter: Annotated[str | None, LocalPath] = None  # trained adapter file (None: the one shipped for the target)
        eta: Annotated[float, Range(0.0, 0.99, 0.05)] = 0.6  # η: stop drafting below this top draft probability

        def __post_init__(self):
            super().__post_init__()
            if not 0.0 <= self.eta < 1.0:
                raise DraftScopeError(f"η (Kangaroo's early-exit threshold) must be in [0, 1), got {self.eta}")

    def __init__(self, target: LoadedModel, options=None, **kw):
        super().__init__(target, options, **kw)
        check_layer_slicing(target.model, sliding_ok=True)
        adapter = self.options.adapter
        if isinstance(adapter, KangarooAdapter):
            self.adapter, meta = adapter, {"exit_layer": getattr(adapter, "exit_layer", None)}
        else:
            if adapter is None and not default_adapter_path(target.name).is_file():
                raise DraftScopeError(f"Kangaroo adapter not found for '{target.name}' (none ships for it): train "
                                      f"one with python -m core.train.kangaroo --target {target.name}, or give an "
                                      "adapter file")
            self.adapter, meta = KangarooAdapter.load(adapter or default_adapter_path(target.name), target.model)
        ell = meta.get("exit_layer")
        if not isinstance(ell, int) or not 1 <= ell < target.n_layers:
            raise DraftScopeError(f"the Kangaroo adapter's exit layer ({ell}) does not fit '{target.name}' "
                                  f"({target.n_layers} layers)")
        self.model, self.exit_layer, self.eta, self.meta = target.model, ell, self.options.eta, meta
        self.adapter = self.adapter.to(module_device(target.model.model.layers[ell - 1]))  # beside layer ℓ's output
        self.draft_head, self.trim = draft_head(target.model.lm_head, target, self.options)  # verification: full
        self.vocab_V = vocab_mask(self.draft_head)
        self.adapter_cache = DynamicCache(config=self.adapter.config)
        self.adapter_len = 0
        self._round: _Round | None = None
        self.last_confidences: list[float] = []  # top q of each drafted token (and of the one that stopped it)

    # ------------------------------------------------------------------------------------------ the adapter
    def _adapt(self, hidden: torch.Tensor, position0: int) -> torch.Tensor:
        """Run the adapter on layer-ℓ states at positions position0.. (appending to its cache); return head logits
        (n, V) float32."""
        device = module_device(self.adapter)
        hidden = hidden.to(device)
        positions = torch.arange(position0, position0 + hidden.shape[1], device=device)[None]
        out = self.adapter(hidden, to_device(rotary(self.model, hidden, positions, FULL), device),
                           cache=self.adapter_cache)
        self.adapter_len += hidden.shape[1]
        return self.draft_head(out)[0].float()

    def _crop_adapter(self, n: int) -> None:
        if self.adapter_len > n:
            self.adapter_cache.crop(n - self.adapter_len)
            self.adapter_len = n

    def prefill(self, tokens: list[int]) -> None:
        """Fill the adapter's cache over tokens[:-1] (the shallow layers run on a scratch cache)."""
        self.adapter_cache = DynamicCache(config=self.adapter.config)
        self.adapter_len = 0
        self._round = None
        if len(tokens) > 1:
            hidden = run_layers(self.model, embed(self.model, tokens[:-1]), 0, self.exit_layer,
                                DynamicCache(config=self.model.config), 0)
            self._adapt(hidden, 0)

    # ------------------------------------------------------------------------------------------ drafting
    def propose(self, ctx: DraftContext) -> Draft:
        kv = ctx.target_kv
        if kv is None:
            raise DraftScopeError("the Kangaroo drafter shares the target's cache and needs the engine's target_kv")
        if kv.cache is None:
            kv.reset()
        pending = kv.sync(ctx.tokens)
        base = len(kv)
        if self.adapter_len < base:  # the adapter fell behind (a drafter switch mid-run): rebuild it
            self.prefill(ctx.tokens)
        self._crop_adapter(base)
        round_ = _Round(base=base)
        hidden = run_layers(self.model, embed(self.model, pending), 0, self.exit_layer, kv.cache, base)
        round_.feed += pending
        round_.hidden.append(hidden)
        logits_V = self._adapt(hidden, base)[-1]
        tokens, rows, shows, self.last_confidences = [], [], [], []
        for i in range(ctx.gamma):
            token, q_V, show_V = ctx.pick(logits_V)
            confidence = float(show_V.max())
            self.last_confidences.append(confidence)
            if confidence < self.eta or ctx.unsure(show_V):  # second early exit: not confident enough
                break
            tokens.append(token)
            rows.append(q_V)
            shows.append(show_V)
            if i == ctx.gamma - 1:
                break  # the last draft's shallow pass is left to verification
            position = base + len(round_.feed)
            hidden = run_layers(self.model, embed(self.model, [token]), 0, self.exit_layer, kv.cache, position)
            round_.feed.append(token)
            round_.hidden.append(hidden)
            logits_V = self._adapt(hidden, position)[-1]
        self._round = round_
        stopped = "eta" if len(tokens) < ctx.gamma else "gamma"
        info = {"exit_layer": self.exit_layer, "eta": self.eta, "stopped_by": stopped,
                "confidences": [round(c, 6) for c in self.last_confidences]}
        if self.trim is not None:
            info["vocab_trim"] = self.trim.as_info()
        return Draft(tokens, stack_or_none(rows), stack_or_none(shows), info, self.vocab_V)

    def verify_forward(self, target_kv, tokens: list[int], draft: list[int]) -> torch.Tensor:
        """Deep layers only, on the layer-ℓ states drafting left in the shared cache."""
        round_, self._round = self._round, None
        if round_ is None or len(target_kv) != round_.base or target_kv.ids != tokens[:round_.base]:
            target_kv.sync(tokens)  # no draft this round (γ = 0): every layer is in step, start from there
            round_ = _Round(base=len(target_kv))
        feed = tokens[round_.base:] + draft
        if feed[: len(round_.feed)] != round_.feed:
            raise RuntimeError("Kangaroo: the verified tokens differ from the drafted ones")
        rest = feed[len(round_.feed):]
        if rest:
            round_.hidden.append(run_layers(self.model, embed(self.model, rest), 0, self.exit_layer,
                                            target_kv.cache, round_.base + len(round_.feed)))
        hidden = torch.cat(round_.hidden, dim=1)
        out = run_layers(self.model, hidden, self.exit_layer, self.target.n_layers, target_kv.cache, round_.base)
        target_kv.ids.extend(feed)
        self._verified = (round_.base, hidden)
        return head(self.model, out[:, -(len(draft) + 1):])

    def observe(self, tokens: list[int], n_accepted: int) -> None:
        """Align the adapter's cache with the committed tokens but the last (feeding it the accepted states it has
        not seen, e.g. the last draft after a full acceptance)."""
        keep = len(tokens) - 1
        self._crop_adapter(keep)
        verified, self._verified = getattr(self, "_verified", None), None
        if self.adapter_len < keep and verified is not None:
            base, hidden = verified
            lo, hi = self.adapter_len - base, keep - base
            if 0 <= lo and hi <= hidden.shape[1]:
                self._adapt(hidden[:, lo:hi], self.adapter_len)

    @property
    def cache_len(self) -> int:
        return self.adapter_len

    @property
    def cost(self) -> float:
        shallow = sum(module_param_bytes(layer) for layer in self.model.model.layers[: self.exit_layer])
        head = module_param_bytes(self.draft_head)
        return (shallow + module_param_bytes(self.adapter) + head) / self.target.param_bytes
