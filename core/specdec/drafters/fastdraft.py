"""A small trained drafter with the target's tokenizer (FastDraft, Direct Alignment): a few decoder layers of the
target's width, the target's input embedding (shared, not stored) and a VocabTrim'd head (the target's rows for the
k most frequent target tokens, frozen, not stored), on a KV cache of its own.

The layers start as copies of some of the target's layers (our stand-in for the papers' pre-training on web text,
which cannot be downloaded here), are pre-trained on sampled target text and aligned on target answers with a
selectable loss (``python -m core.train.fastdraft``). The checkpoint holds the layers, the final norm and the kept
token ids; the target supplies the rest when it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from torch import nn

from core import ASSETS_DIR
from core.errors import DraftScopeError
from core.options import LocalPath, Range
from core.runtime import checkpoint
from core.runtime.devices import input_device, plain_deepcopy
from core.runtime.layers import check_layer_slicing
from core.runtime.models import LoadedModel
from core.specdec.drafters.base import ConfidenceOptions, Draft, DraftContext, Drafter
from core.specdec.drafters.model import ModelDrafter
from core.specdec.drafters.ngram import lookup
from core.specdec.vocab_trim import TrimInfo, TrimmedHead, VocabTrimOptions

KIND = "fastdraft"
TRAIN_HINT = "python -m core.train.fastdraft --target TARGET"
LOOKUP_NGRAM, LOOKUP_MIN_NGRAM = 3, 2  # the ngram drafter's defaults


def default_checkpoint(target_name: str) -> Path:
    return ASSETS_DIR / "fastdraft" / f"{target_name}.safetensors"


def _config_dict(target) -> dict:
    config = target.model.config.to_dict()
    config.pop("quantization_config", None)
    return config


def build_network(target: LoadedModel, n_layers: int, keep: torch.Tensor, init_layers: list[int] | None = None,
                  layer_types: list[str] | None = None) -> nn.Module:
    """A causal LM of ``n_layers`` decoder layers of the target's architecture, sharing the target's input embedding,
    with the target's head rows for ``keep``; layer j copies target layer ``init_layers[j]`` when given. On targets
    with sliding-window layers (Gemma 3) layer j is of the kind of the target layer it copies (``layer_types``, as a
    checkpoint stores them, else the kinds of ``init_layers``, else of the target's first layers)."""
    check_layer_slicing(target.model, sliding_ok=True)  # the network runs as a model of its own: any layer kinds do
    if n_layers < 1:
        raise DraftScopeError(f"a FastDraft drafter needs at least one layer, got {n_layers}")
    if init_layers is not None and (len(init_layers) != n_layers
                                    or not all(0 <= i < target.n_layers for i in init_layers)):
        raise DraftScopeError(f"--init-layers must name {n_layers} target layers in 0..{target.n_layers - 1}, "
                              f"got {init_layers}")
    shape = {"num_hidden_layers": n_layers}
    kinds = getattr(target.model.config, "layer_types", None)
    if kinds is not None:
        shape["layer_types"] = list(layer_types or [kinds[i] for i in (init_layers or range(n_layers))])
        if len(shape["layer_types"]) != n_layers:
            raise DraftScopeError(f"a FastDraft drafter of {n_layers} layers needs {n_layers} layer types, got "
                                  f"{shape['layer_types']}")
    config = type(target.model.config).from_dict({**_config_dict(target), **shape})
    with torch.device("meta"):
        net = type(target.model)(config)
    net.model.embed_tokens = target.model.model.embed_tokens  # shared with the target
    net.model.layers = nn.ModuleList(
        [type(target.model.model.layers[0])(config, layer_idx=j) for j in range(n_layers)])
    net.model.norm = plain_deepcopy(target.model.model.norm).to(input_device(target.model))
    net.model.rotary_emb = target.model.model.rotary_emb
    net.lm_head = TrimmedHead.of(target.model.lm_head, keep)
    param = next(target.model.parameters())
    net.model.layers.to(device=input_device(target.model), dtype=param.dtype)  # a device map: beside the embedding
    for j, i in enumerate(init_layers or []):  # (a layer a device map offloads cannot be copied: it says so)
        net.model.layers[j].load_state_dict(plain_deepcopy(target.model.model.layers[i]).state_dict())
    net.config = config
    return net.eval()


def trained_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint stores: the layers, the final norm and the kept token ids."""
    state = {f"layers.{k}": v for k, v in net.model.layers.state_dict().items()}
    state.update({f"norm.{k}": v for k, v in net.model.norm.state_dict().items()})
    state["keep"] = net.lm_head.keep.to(torch.int32)
    return state


def save(path: str | Path, net: nn.Module, target: LoadedModel, meta: dict) -> Path:
    meta = {**meta, "target": target.name, "tokenizer": target.tokenizer_id(), "n_layers": len(net.model.layers),
            "hidden_size": target.model.config.hidden_size, "target_layers": target.n_layers}
    if getattr(net.config, "layer_types", None) is not None:
        meta["layer_types"] = list(net.config.layer_types)
    return checkpoint.save(path, trained_state(net), meta, KIND)


def load(path: str | Path, target: LoadedModel) -> tuple[nn.Module, dict]:
    """The drafter network stored at ``path``, rebuilt on ``target``; a checkpoint for another target (another
    tokenizer or another width) raises ``DraftScopeError``."""
    state, meta = checkpoint.load(path, KIND, TRAIN_HINT.replace("TARGET", target.name))
    if meta.get("tokenizer") != target.tokenizer_id() or meta.get("hidden_size") != target.model.config.hidden_size:
        raise DraftScopeError(f"{path} is a FastDraft drafter for '{meta.get('target')}', not for '{target.name}' "
                              f"(another tokenizer or width); train one with "
                              f"{TRAIN_HINT.replace('TARGET', target.name)}")
    net = build_network(target, int(meta["n_layers"]), state["keep"].long(), layer_types=meta.get("layer_types"))
    param = next(target.model.parameters())
    layers = {k[len("layers."):]: v.to(param.dtype) for k, v in state.items() if k.startswith("layers.")}
    norm = {k[len("norm."):]: v.to(param.dtype) for k, v in state.items() if k.startswith("norm.")}
    net.model.layers.load_state_dict(layers)
    net.model.norm.load_state_dict(norm)
    return net.eval(), meta


class FastDraftDrafter(ModelDrafter):
    name = "fastdraft"

    @dataclass
    class Options(VocabTrimOptions, ConfidenceOptions):
        checkpoint: Annotated[str | None, LocalPath] = None  # trained drafter file (None: the shipped one)
        eta: Annotated[float, Range(0.0, 0.99, 0.05)] = 0.0  # η: stop drafting below this top draft probability
        lookup: bool = False  # try prompt lookup (a 3..2-gram match) before the model (our hybrid)

        def __post_init__(self):
            super().__post_init__()
            if not 0.0 <= self.eta < 1.0:
                raise DraftScopeError(f"η (the drafter's confidence stop) must be in [0, 1), got {self.eta}")

    def __init__(self, target: LoadedModel, options=None, **kw):
        Drafter.__init__(self, target, options, **kw)
        source = self.options.checkpoint
        if isinstance(source, nn.Module):  # a network built in memory (tests, the training script)
            net, self.meta = source, {"trained": False}
        else:
            net, self.meta = load(source or default_checkpoint(target.name), target)
        own = net.lm_head
        self.attach(LoadedModel(f"fastdraft-{target.name}", net, target.tokenizer, "local"), net)
        if self.trim is None:  # report the head the drafter was trained with
            self.trim = TrimInfo(own.k, own.vocab, float(self.meta.get("coverage", float("nan"))), "checkpoint")

    def propose(self, ctx: DraftContext) -> Draft:
        """With ``lookup`` (not in the papers: our hybrid), a suffix 3..2-gram found earlier in the sequence drafts
        its continuation for free (q one-hot, like the ngram drafter); otherwise, and always without it, the model
        drafts."""
        if self.options.lookup:
            found = lookup(ctx.tokens, ctx.gamma, LOOKUP_NGRAM, LOOKUP_MIN_NGRAM)
            if found:
                return Draft(found, info={"source": "lookup", **self.trim_info()})
        draft = super().propose(ctx)
        draft.info["source"] = "model"
        return draft

    @property
    def n_layers(self) -> int:
        return len(self.view.model.layers)
