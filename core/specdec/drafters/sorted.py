"""S2D, sorted speculative decoding (Kavehzadeh et al., 2024): one drafter with nested exits, shared head.

The drafter is the first F layers of a base model of the target's family (tuned once with the mean cross-entropy
over its exits, ``core.train.sorted``), with exits e_1 < … < e_K = F. For each draft token it runs the layers up to
e_1 and emits from that exit when the exit's top probability reaches θ_1 (0.5, as in the paper); otherwise it runs on
to e_2, and so on; the last exit always emits. Deeper layers of a token that left early are filled lazily: their
inputs wait, and the next token that goes deeper carries them through those layers in the same forward.

One drafter serves every target that shares its tokenizer, without target-specific training: the base model is a
separate model (``draft_model``, default the target itself) with its own cache. Offline that means SmolLM2-135M (and
the random test models with its tokenizer); where the Hub is reachable, the whole SmolLM2 family (``smollm2-360m``,
``smollm2-1.7b``). At our scale the exits are cut from SmolLM2-135M's own first 10 layers (5/7/10), tuned with
LoRA factors and per-exit norms instead of a full fine-tune; see ``core.specdec.drafters.sorted_exits``.

Sliding-window layers (Gemma 3): the drafter's cache records their past, so rejected drafts can be cropped from
them, and every sync trims them back to the window; ``run_layers`` windows their masks. No exits ship for Gemma:
untrained exits (plain early exits at the default layers) stand in.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from transformers import DynamicCache

from core import ASSETS_DIR
from core.errors import DraftScopeError
from core.options import LocalPath, ModelName
from core.runtime.cache import trim_windows
from core.runtime.layers import check_layer_slicing, embed, run_layers
from core.runtime.models import LoadedModel, module_param_bytes
from core.specdec.drafters.base import ConfidenceOptions, Draft, DraftContext, Drafter, stack_or_none
from core.specdec.drafters.model import check_same_tokenizer, fit_vocab, load_draft_model
from core.specdec.drafters.sorted_exits import SortedExits, default_exit_layers
from core.specdec.vocab_trim import VocabTrimOptions, draft_head, vocab_mask

ASSETS = ASSETS_DIR / "sorted"
DEFAULT_THETA = 0.5


def default_exits_path(base_name: str) -> Path:
    return ASSETS / f"{base_name}.safetensors"


_EXITS: dict[tuple, tuple[SortedExits, dict]] = {}  # built exits, shared read-only between sessions
_EXITS_LOCK = threading.Lock()


def shared_exits(base: LoadedModel, path: Path | None) -> tuple[SortedExits, dict]:
    """The exits for ``base`` from ``path`` (None: the file shipped for it if any, else untrained exits), built once
    per process: building copies the base model's first layers."""
    path = path or default_exits_path(base.name)
    trained = path.is_file() or path != default_exits_path(base.name)
    key = (str(path.resolve()), path.stat().st_mtime_ns) if path.is_file() else (None, trained)
    key += (id(base.model),)
    with _EXITS_LOCK:
        if key not in _EXITS:
            if trained:
                exits, meta = SortedExits.load(path, base.model)
                meta = {**meta, "trained": True}
            else:  # no exits trained for this base: plain early exits at the default layers
                exits = SortedExits(base.model, default_exit_layers(base.n_layers)).merge().eval()
                meta = {"trained": False}
            _EXITS[key] = (exits, meta)
        exits, meta = _EXITS[key]
        return exits, dict(meta)


def parse_thresholds(value, n_exits: int) -> list[float]:
    """θ for every exit but the last: None/"" = 0.5 each; one number = the same for all; else one per exit."""
    if value is None or value == "" or value == []:
        return [DEFAULT_THETA] * (n_exits - 1)
    if isinstance(value, str):
        try:
            value = [float(v) for v in value.replace(" ", "").split(",") if v]
        except ValueError:
            raise DraftScopeError(f"thresholds must be numbers separated by commas, got '{value}'") from None
    values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) == 1:
        values = values * (n_exits - 1)
    if len(values) != n_exits - 1:
        raise DraftScopeError(f"give one threshold per exit but the last ({n_exits - 1}), got {len(values)}")
    if not all(0.0 <= v <= 1.0 for v in values):
        raise DraftScopeError(f"thresholds must be in [0, 1], got {values}")
    return values


class SortedDrafter(Drafter):
    name = "sorted"

    @dataclass
    class Options(VocabTrimOptions, ConfidenceOptions):
        draft_model: Annotated[str | None, ModelName] = None  # base model the exits are cut from (None: the target)
        exits: Annotated[str | None, LocalPath] = None  # trained exits file (None: the one shipped for the base model)
        thresholds: str = ""  # θ per exit but the last, "0.5,0.5" ("": 0.5 each; one number: the same for all)

    def __init__(self, target: LoadedModel, options=None, **kw):
        super().__init__(target, options, **kw)
        draft_model, exits = self.options.draft_model, self.options.exits
        if draft_model is None or draft_model == target.name:
            base = target
        elif isinstance(draft_model, LoadedModel):
            base = draft_model
        else:
            base = load_draft_model(target, draft_model, allow_local=self.allow_local)
        check_same_tokenizer(target, base)
        check_layer_slicing(base.model, sliding_ok=True)
        if isinstance(exits, SortedExits):
            self.exits, self.meta = exits, {"trained": False}
        else:
            self.exits, self.meta = shared_exits(base, Path(exits) if exits else None)
        self.base, self.model = base, base.model
        self.draft_head, self.trim = draft_head(base.model.lm_head, target, self.options)
        self.vocab_V = vocab_mask(self.draft_head)
        self.exit_layers = self.exits.exit_layers
        self.thresholds = parse_thresholds(self.options.thresholds, len(self.exit_layers))
        self.segments = list(zip([0] + self.exit_layers[:-1], self.exit_layers))
        self.exit_counts = [0] * len(self.exit_layers)
        self._reset()

    # ------------------------------------------------------------------------------------------ the nested stack
    def _reset(self) -> None:
        self.cache = DynamicCache(config=self.model.config)
        self.cache.activate_past_recording()  # sliding-window layers (Gemma 3): rejected drafts can be cropped
        self.ids: list[int] = []  # tokens whose embeddings entered segment 0 (positions 0..)
        self.lens = [0] * len(self.segments)  # tokens in each segment's layers' cache
        self.waiting: list[torch.Tensor | None] = [None] * len(self.segments)  # inputs of segment k not yet run
        self.lazy_rows = 0  # rows carried through deeper layers for tokens that had left early (this round)

    def _crop(self, n: int) -> None:
        """Forget every position ≥ n, in every segment's cache and waiting inputs."""
        self.ids = self.ids[:n]
        for k, (lo, hi) in enumerate(self.segments):
            length, wait = self.lens[k], self.waiting[k]
            if length > n:
                for layer in self.cache.layers[lo:hi]:
                    layer.crop(n - length)
                self.lens[k], self.waiting[k] = n, None
            elif wait is not None and length + wait.shape[1] > n:
                self.waiting[k] = wait[:, : n - length] if n > length else None

    def _advance(self, ids: list[int]) -> tuple[torch.Tensor, int, list[float]]:
        """Feed ``ids`` and run exit by exit until the last token's top probability reaches the exit's θ (the last
        exit always emits). Returns that token's logits (V,), the exit index and the confidences seen."""
        x = embed(self.model, ids)
        self.ids += ids
        confidences = []
        for k, (lo, hi) in enumerate(self.segments):
            if k and self.waiting[k] is not None:  # lazily fill the deeper layers of tokens that left early
                self.lazy_rows += self.waiting[k].shape[1]
                x, self.waiting[k] = torch.cat([self.waiting[k], x], dim=1), None
            x = run_layers(self.model, x, lo, hi, self.cache, self.lens[k], layers=self.exits.layers)
            self.lens[k] += x.shape[1]
            logits_V = self.draft_head(self.exits.norms[k](x[:, -1:]))[0, -1].float()
            confidence = float(torch.softmax(logits_V, -1).max())
            confidences.append(confidence)
            if k == len(self.segments) - 1 or confidence >= self.thresholds[k]:
                if k + 1 < len(self.segments):
                    wait = self.waiting[k + 1]
                    self.waiting[k + 1] = x if wait is None else torch.cat([wait, x], dim=1)
                return logits_V, k, confidences
        raise AssertionError("unreachable")

    def _sync(self, tokens: list[int]) -> list[int]:
        keep = 0
        limit = min(len(self.ids), len(tokens) - 1)
        while keep < limit and self.ids[keep] == tokens[keep]:
            keep += 1
        self._crop(keep)
        trim_windows(self.cache)  # every position kept now is committed: no later crop reaches back to it
        return tokens[keep:]

    # ------------------------------------------------------------------------------------------ the protocol
    def prefill(self, tokens: list[int]) -> None:
        self._reset()

    def propose(self, ctx: DraftContext) -> Draft:
        feed = self._sync(ctx.tokens)
        self.lazy_rows = 0
        vocab = self.target.vocab_size
        tokens, rows, shows, exits, confidences = [], [], [], [], []
        for _ in range(ctx.gamma):
            logits_V, k, seen = self._advance(feed)
            token, q_V, show_V = ctx.pick(fit_vocab(logits_V, vocab))
            if ctx.unsure(show_V):
                break
            tokens.append(token)
            rows.append(q_V)
            shows.append(show_V)
            exits.append(k)
            confidences.append([round(c, 6) for c in seen])
            self.exit_counts[k] += 1
            feed = [token]
        info = {"exit_layers": self.exit_layers, "thresholds": self.thresholds, "exits": exits,
                "confidences": confidences, "lazy_rows": self.lazy_rows, "trained": bool(self.meta.get("trained")),
                "base": self.base.name}
        if self.trim is not None:
            info["vocab_trim"] = self.trim.as_info()
        return Draft(tokens, stack_or_none(rows), stack_or_none(shows), info, self.vocab_V)

    def observe(self, tokens: list[int], n_accepted: int) -> None:
        self._sync(tokens)  # drop the rejected drafts now, so cache_len reports what is kept

    @property
    def cache_len(self) -> int:
        return self.lens[-1]  # positions every layer holds (shallower segments may hold more)

    @property
    def cost(self) -> float:
        """Parameter bytes read per drafted token relative to the target's: the layers up to the exits used so far
        (weighted by how often each emitted; the deepest exit before any draft) plus the head."""
        per_exit = [sum(module_param_bytes(layer) for layer in self.exits.layers[:e]) for e in self.exit_layers]
        total = sum(self.exit_counts)
        layers = (sum(c * b for c, b in zip(self.exit_counts, per_exit)) / total) if total else per_exit[-1]
        return (layers + module_param_bytes(self.draft_head)) / self.target.param_bytes
