"""Medusa heads → a vLLM Medusa folder (``--speculative-config '{"method": "medusa", "model": DIR, …}'``).

The layout, as read in vLLM's ``vllm/model_executor/models/medusa.py`` and ``transformers_utils/configs/medusa.py``
(README, "Serving engines: exporting drafters", names the commits):

- ``config.json``: a ``MedusaConfig`` (``model_type`` "medusa"): ``hidden_size``, ``vocab_size`` (must equal the
  target's, or vLLM resets the truncated size), ``num_heads``, ``num_hidden_layers`` (residual blocks per head),
  ``truncated_vocab_size``; ``medusa_fc_bias`` (our blocks have a bias; without the flag vLLM builds them without one
  and skips the stored biases) and ``original_lm_head`` (one LM head shared by every head, as ours shares the
  target's).
- ``model.safetensors``: ``blocks.{k}.layers.{j}.weight`` / ``.bias`` (d, d) / (d,); ``lm_head.weight`` (rows, d);
  ``token_map`` (k,) int64 when the head is VocabTrim'd: vLLM then computes the k kept rows' logits and writes them at
  ``token_map``'s ids in a -inf row of the whole vocabulary, which is exactly DraftScope's ``TrimmedHead``.

vLLM's block is x + SiLU(W x + b), ours too (a Medusa head of DraftScope has no skip projection), and both read the
target's last hidden state (after the final norm) at the position whose token was just committed; head k proposes the
token k + 2 ahead. vLLM drafts a chain of each head's top-1 (no tree); ``num_speculative_tokens`` sets how many heads
it builds (``MedusaConfig.num_lookahead_tokens``), so it may not exceed the heads stored.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.errors import DraftScopeError
from core.export.writing import write_json
from core.runtime.models import LoadedModel
from core.specdec.drafters import heads as heads_mod

NEEDS_TARGET = True  # the export reads the loaded target (its head, embedding, tokenizer)
METHOD = "medusa"


def weights(heads: heads_mod.DraftHeads, keep: torch.Tensor, target: LoadedModel) -> dict[str, torch.Tensor]:
    """vLLM's tensors (float32; int64 ``token_map``) from our Medusa heads, their kept ids and the target's head."""
    if heads.config.arch != "medusa":
        raise DraftScopeError(f"vLLM's Medusa format holds Medusa heads, not {heads.config.arch} heads")
    state = {}
    for k, head in enumerate(heads.heads):
        for j, block in enumerate(head):
            if block.skip is not None:
                raise DraftScopeError("a Medusa block with a skip projection has no vLLM equivalent")
            state[f"blocks.{k}.layers.{j}.weight"] = block.linear.weight
            state[f"blocks.{k}.layers.{j}.bias"] = block.linear.bias
    head_VD = target.model.get_output_embeddings().weight
    trimmed = keep.numel() < head_VD.shape[0]
    state["lm_head.weight"] = head_VD[keep.to(head_VD.device)] if trimmed else head_VD
    if trimmed:
        state["token_map"] = keep.to(torch.int64)
    return {name: t.detach().to("cpu", torch.float32 if t.is_floating_point() else t.dtype).contiguous().clone()
            for name, t in state.items()}


def config(heads: heads_mod.DraftHeads, keep: torch.Tensor, target: LoadedModel) -> dict:
    vocab = int(target.model.config.vocab_size)
    if vocab != target.vocab_size:
        raise DraftScopeError(f"'{target.name}' has {target.vocab_size} LM-head rows but a config vocabulary of "
                              f"{vocab}; vLLM's Medusa loader assumes they agree")
    c = heads.config
    return {"architectures": ["MedusaModel"], "model_type": "medusa", "hidden_size": c.hidden_size,
            "vocab_size": vocab, "num_heads": c.n_heads, "num_hidden_layers": c.n_layers,
            "truncated_vocab_size": int(keep.numel()) if keep.numel() < vocab else vocab,
            "medusa_fc_bias": True, "original_lm_head": True}


def write(stage: Path, target: LoadedModel, gamma: int | None, checkpoint: str | None) -> dict:
    """Write the folder's model files into ``stage``; what the caller records about them."""
    from safetensors.torch import save_file

    source = Path(checkpoint) if checkpoint else heads_mod.default_checkpoint("medusa", target.name)
    heads, keep, meta = heads_mod.load(source, target, "medusa")
    n_heads = heads.config.n_heads
    gamma = n_heads if gamma is None else gamma
    if gamma > n_heads:
        raise DraftScopeError(f"these Medusa heads are {n_heads}: vLLM builds one head per speculative token, so "
                              f"--gamma may be at most {n_heads}")
    save_file(weights(heads, keep, target), str(stage / "model.safetensors"), metadata={"format": "pt"})
    write_json(stage / "config.json", config(heads, keep, target))
    trimmed = keep.numel() < target.vocab_size
    differences = [
        "vLLM drafts a chain: each head's top-1 (DraftScope can also grow a tree from the heads' top-k: the "
        "`medusa-tree8` row of the benchmark matrix has no vLLM counterpart).",
        f"num_speculative_tokens = {gamma} of the {n_heads} heads: vLLM builds that many heads and loads the first "
        f"{gamma}.",
        "The LM head is a copy of the target's rows as DraftScope loads the target (the embedded GGUF, "
        "dequantized, where the preset is one); the heads were trained on that target's hidden states."
        if target.source.startswith("gguf") else "The LM head is a copy of the target's.",
    ]
    if trimmed:
        differences.append(f"VocabTrim: the head keeps {keep.numel()} of {target.vocab_size} tokens; vLLM's "
                           "`truncated_vocab_size` + `token_map` give the same -inf outside them (no difference).")
    return {"gamma": gamma, "source": str(source), "source_kind": "Medusa heads", "differences": differences,
            "details": {"n_heads": n_heads, "n_layers": heads.config.n_layers, "kept_tokens": int(keep.numel()),
                        "trained": bool(meta.get("trained", False))}}
