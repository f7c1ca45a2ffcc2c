"""Static-shape verification (issue 22's GPU fast path), opt-in with ``DRAFTSCOPE_STATIC_CACHE=1``.

A GPU decoding a small model is bound by kernel launches, not by arithmetic; CUDA graphs remove them, but they need
every shape fixed. So the target's cache becomes a transformers ``StaticCache`` (keys preallocated for the whole
run, written at explicit ``cache_position``\\ s) and every verification forward feeds exactly ``width`` = γ + 1
tokens: the last committed token and the drafts, padded with token 0. The padded positions sit after the real ones,
so causal attention hides them from every real query, and their logits are dropped: the output is the same as
without padding (lossless; numerically, the same class of difference as any change of batch shape).

Rollback costs nothing: the layers' write position goes back, keys past it stay in the buffer, but a query at
position p sees only keys at positions ≤ p, all rewritten by the time they are seen. ``DRAFTSCOPE_COMPILE=1`` (CUDA)
also compiles the fixed-shape step with ``torch.compile(mode="reduce-overhead")`` (CUDA graphs); the prompt's
prefill stays eager.
On a CPU the static cache does not pay (every step attends over the whole buffer); it runs here for the tests.

Where it applies: chain rounds (no trees) of targets without sliding-window layers, with drafters that never read
or write the target's cache or hidden states (``STATIC_DRAFTERS``); the session falls back to the dynamic cache
otherwise (``fits``).
"""

from __future__ import annotations

import torch
from transformers import StaticCache

from core.runtime.cached_lm import CachedLM
from core.runtime.env import env_flag
from core.runtime.models import has_sliding_layers

STATIC_DRAFTERS = frozenset({"none", "ngram", "model", "early-exit", "easyspec", "sorted", "fastdraft", "aded"})
PAD_ID = 0  # what fills the padded positions (never seen by a real query, its logits dropped)


def static_enabled() -> bool:
    return env_flag("DRAFTSCOPE_STATIC_CACHE")


def compile_enabled() -> bool:
    return env_flag("DRAFTSCOPE_COMPILE")


MAX_LEN_STEP = 256  # compiled: buffer lengths rounded up to this, so that sessions share buffers and graphs
_COMPILED: dict[int, object] = {}  # id(model) → its compiled forward (compiling is slow: once per target)
_BUFFERS: dict[tuple, dict] = {}  # (id(model), max_len) → {"cache": StaticCache, "owner": the CachedLM it holds}


class StaticCachedLM(CachedLM):
    """``CachedLM`` on a ``StaticCache`` of ``max_len`` positions, every forward of at most ``width`` tokens padded to
    ``width`` (longer ones, the prompt's prefill, run as they are). ``compiled``: the padded step through
    ``torch.compile(mode="reduce-overhead")``, compiled once per target; its CUDA graphs were recorded on one buffer,
    so compiled sessions of a target share the buffer of their length: a session that finds another's tokens there
    feeds its own again first (rounds run one at a time, under the engine's lock)."""

    def __init__(self, model: torch.nn.Module, max_len: int, width: int, compiled: bool = False):
        super().__init__(model)
        self.max_len, self.width = int(max_len), int(width)
        self._step, self._buffer = None, None
        if compiled:
            self._step = _COMPILED.get(id(model))
            if self._step is None:
                self._step = _COMPILED[id(model)] = torch.compile(model.forward, mode="reduce-overhead",
                                                                  dynamic=False)
            self._buffer = _BUFFERS.setdefault((id(model), self.max_len), {"cache": None, "owner": None})

    def reset(self) -> None:
        if self._buffer is None:
            self.cache = StaticCache(config=self.model.config, max_cache_len=self.max_len)
        else:
            if self._buffer["cache"] is None:
                self._buffer["cache"] = StaticCache(config=self.model.config, max_cache_len=self.max_len)
            self.cache, self._buffer["owner"] = self._buffer["cache"], self
        self.ids = []
        self._write_at(0)

    @torch.inference_mode()
    def forward(self, new_ids: list[int], logits_to_keep: int = 1) -> torch.Tensor:
        """Append ``new_ids``; return the logits (logits_to_keep, V) of their last positions, float32."""
        if self.cache is None:
            self.reset()
        if self._buffer is not None and self._buffer["owner"] is not self:  # another session wrote the buffer
            kept = list(self.ids)
            self.reset()
            if kept:
                self._feed(kept, 1)
        return self._feed(list(new_ids), logits_to_keep)

    def _feed(self, new_ids: list[int], logits_to_keep: int) -> torch.Tensor:
        start, n = len(self.ids), len(new_ids)
        if start + n > self.max_len:
            raise ValueError(f"the static cache holds {self.max_len} positions; {start + n} asked for")
        padded = n <= self.width and start + self.width <= self.max_len
        feed = new_ids + [PAD_ID] * (self.width - n) if padded else new_ids
        positions = torch.arange(start, start + len(feed), device=self.device)
        run = self._step if padded and self._step is not None else self.model
        out = run(input_ids=torch.tensor([feed], dtype=torch.long, device=self.device), past_key_values=self.cache,
                  cache_position=positions, position_ids=positions[None], use_cache=True,
                  logits_to_keep=0 if padded else logits_to_keep)
        self.ids.extend(new_ids)
        self._write_at(len(self.ids))  # the padding's keys stay in the buffer, to be overwritten
        logits = out.logits[0, n - logits_to_keep:n] if padded else out.logits[0]
        return logits.float().clone()  # a CUDA graph's output buffer is overwritten by its next replay

    def rollback(self, n: int) -> None:
        """Keep the first ``n`` tokens: the buffer's later keys are never seen before they are rewritten."""
        if n > len(self.ids):
            raise ValueError(f"cannot roll back to {n}: the cache holds {len(self.ids)} tokens")
        del self.ids[n:]
        self._write_at(n)

    def _write_at(self, n: int) -> None:
        """The next forward writes its keys from position ``n`` on (transformers' static layers count the positions
        they were given, in a tensor kept at a fixed address for CUDA graphs: set in place)."""
        for layer in self.cache.layers if self.cache is not None else ():
            if layer.is_initialized:
                layer.cumulative_length.fill_(n)

    def can_crop(self) -> bool:
        return True


def fits(target, drafter, tree: bool) -> bool:
    """Whether a session's target cache may be static: chain rounds, a drafter of ``STATIC_DRAFTERS`` (they never
    touch the target's cache or hidden states), no sliding-window layers (their static layers are ring buffers)."""
    return not tree and drafter.name in STATIC_DRAFTERS and not has_sliding_layers(target.model)


def target_cache(target, drafter, config, prompt_len: int) -> CachedLM:
    """The target's ``CachedLM`` for a session: ``StaticCachedLM`` when ``DRAFTSCOPE_STATIC_CACHE`` is on and the
    session ``fits``, else the dynamic one."""
    if not static_enabled() or not fits(target, drafter, bool(config.tree)):
        return CachedLM(target.model)
    width = config.gamma + 1
    max_len = prompt_len + config.max_new_tokens + width
    compiled = compile_enabled() and target.device.type == "cuda"
    if compiled:
        max_len = -(-max_len // MAX_LEN_STEP) * MAX_LEN_STEP
    return StaticCachedLM(target.model, min(target.max_context, max_len), width, compiled)
