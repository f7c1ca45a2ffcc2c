"""An independent drafter model that shares the target's tokenizer, with its own KV cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from core.errors import DraftScopeError
from core.options import ModelName
from core.runtime.cached_lm import CachedLM
from core.runtime.models import (
    LoadedModel,
    load_model,
    load_tokenizer,
    loaded_model,
    module_param_bytes,
    suggested_draft,
    vocab_fingerprint_of,
)
from core.specdec.drafters.base import ConfidenceOptions, Draft, DraftContext, Drafter, TreeDrafting, stack_or_none
from core.specdec.trees.tree import TreeCache
from core.specdec.vocab_trim import VocabTrimOptions, draft_head, vocab_mask, with_head


class ModelDrafter(Drafter, TreeDrafting):
    name = "model"

    @dataclass
    class Options(VocabTrimOptions, ConfidenceOptions):
        draft_model: Annotated[str | None, ModelName] = None  # the draft model: a preset with the target's tokenizer
        #   (None: the target preset's first paired draft, models.suggested_draft, where it has one)

    def __init__(self, target: LoadedModel, options=None, **kw):
        super().__init__(target, options, **kw)
        draft_model = self.options.draft_model or suggested_draft(target.name)
        if draft_model is None:
            raise DraftScopeError("the 'model' drafter needs a draft model (--draft-model PRESET)")
        drafter = draft_model if isinstance(draft_model, LoadedModel) else load_draft_model(
            target, draft_model, allow_local=self.allow_local)
        check_same_tokenizer(target, drafter)
        self.attach(drafter, drafter.model)

    def attach(self, drafter: LoadedModel, network: torch.nn.Module) -> None:
        """Draft with ``network`` (``drafter``'s model or a view of it) on a cache of its own; with VocabTrim on, a
        view of it whose head covers only the kept tokens."""
        head, self.trim = draft_head(network.lm_head, self.target, self.options)
        self.vocab_V = vocab_mask(head)
        network = with_head(network, head)
        self.drafter, self.view = drafter, network
        self.kv = CachedLM(network)
        self._tree_cache: TreeCache | None = None

    def network(self) -> torch.nn.Module:
        return self.view

    def prefill(self, tokens: list[int]) -> None:
        self.kv.reset()
        if len(tokens) > 1:
            self.kv.forward(tokens[:-1])

    def propose(self, ctx: DraftContext) -> Draft:
        tokens, rows, shows = [], [], []
        feed = self.kv.sync(ctx.tokens)
        vocab = self.target.vocab_size
        eta = float(getattr(self.options, "eta", 0.0) or 0.0)  # FastDraft's own η
        for _ in range(ctx.gamma):
            logits_V = self.kv.forward(feed)[-1]
            token, q_V, show_V = ctx.pick(fit_vocab(logits_V, vocab))
            if ctx.unsure(show_V, eta):
                break  # not confident enough to draft this token
            tokens.append(token)
            rows.append(q_V)
            shows.append(show_V)
            feed = [token]
        return Draft(tokens, stack_or_none(rows), stack_or_none(shows), self.trim_info(), self.vocab_V)

    def trim_info(self) -> dict:
        return {"vocab_trim": self.trim.as_info()} if self.trim is not None else {}

    def tree_begin(self, ctx: DraftContext) -> torch.Tensor:
        logits_V = self.kv.forward(self.kv.sync(ctx.tokens))[-1]
        self._tree_cache = TreeCache(self.kv)
        return fit_vocab(logits_V, self.target.vocab_size)

    def tree_expand(self, tree, nodes: list[int]) -> torch.Tensor:
        logits_nV = self._tree_cache.forward(tree, nodes)
        return torch.stack([fit_vocab(row, self.target.vocab_size) for row in logits_nV])

    def tree_end(self, tokens: list[int], path: list[int]) -> None:
        cache, self._tree_cache = self._tree_cache, None
        if cache is not None:
            cache.keep(path)  # the accepted nodes the drafter had fed; the next sync feeds what is missing
        self.kv.sync(tokens)

    def observe(self, tokens: list[int], n_accepted: int) -> None:
        self.kv.sync(tokens)  # drop the rejected drafts now, so cache_len reports what is kept

    @property
    def cache_len(self) -> int:
        return len(self.kv)

    @property
    def cost(self) -> float:
        return network_cost(self.view, self.target)


def network_cost(network: torch.nn.Module, target: LoadedModel) -> float:
    """Parameter bytes a draft network reads per drafted token relative to the target's. An input embedding that is
    not also the head (a VocabTrim'd head, or untied weights) is a gather of one row, so it is not counted."""
    total = module_param_bytes(network)
    embedding = network.get_input_embeddings().weight
    if embedding is not getattr(network.lm_head, "weight", None):
        total -= embedding.numel() * embedding.element_size()
    return total / target.param_bytes


def fit_vocab(logits_V: torch.Tensor, vocab: int) -> torch.Tensor:
    """Pad (with -inf) or cut drafter logits to the target's vocabulary size (embedding tables may be padded)."""
    if logits_V.shape[-1] == vocab:
        return logits_V
    if logits_V.shape[-1] > vocab:
        return logits_V[:vocab]
    pad = torch.full((vocab - logits_V.shape[-1],), float("-inf"), device=logits_V.device, dtype=logits_V.dtype)
    return torch.cat([logits_V, pad])


def check_same_tokenizer(target: LoadedModel, drafter: LoadedModel) -> None:
    _check_fingerprints(target, drafter.name, drafter.vocab_fingerprint())


def _check_fingerprints(target: LoadedModel, name: str, fingerprint: tuple[int, int]) -> None:
    if target.vocab_fingerprint() != fingerprint:
        raise DraftScopeError(
            f"drafter '{name}' does not share the target's tokenizer ('{target.name}': "
            f"{target.vocab_fingerprint()[0]} tokens, '{name}': {fingerprint[0]}); "
            "pick a draft model with the same tokenizer")


def load_draft_model(target: LoadedModel, name: str, allow_local: bool = False) -> LoadedModel:
    """Load the draft model ``name`` on the target's device and dtype, once its tokenizer alone has shown that it is
    the target's: a model with another tokenizer is refused before its weights load (or download)."""
    if loaded_model(name, target.device, target.dtype) is None:
        _check_fingerprints(target, name.strip(), vocab_fingerprint_of(load_tokenizer(name, allow_local=allow_local)))
    return load_model(name, device=target.device, dtype=target.dtype, allow_local=allow_local)
