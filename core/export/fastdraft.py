"""FastDraft drafter → a plain Hugging Face causal-LM folder: a draft model for vLLM (``"method": "draft_model"``),
Hugging Face assisted generation, SGLang's STANDALONE drafter, or llama.cpp after a GGUF conversion.

Our drafter is a few decoder layers of the target's architecture and width with the target's input embedding and a
VocabTrim'd head (the target's rows for the k kept tokens, -inf elsewhere). A plain causal LM's head has no bias, so
it cannot put -inf on the other rows. ``fill`` says what they hold instead:

- ``"zero"`` (default): zero rows, i.e. logit 0 outside the kept set. The top-1 moves only where every kept logit is
  below 0; on the shipped SmolLM2 drafter it never did on the self-check's 256 positions. Sampling puts a relative
  mass of (V − k)·e^(−max kept logit) outside. The file holds the head apart from the embedding.
- ``"target"``: the target's own rows, so the folder is the target's embedding, our layers and norm, and the
  target's head (tied where the target ties it: a smaller file). Over the kept tokens the logits are ours, but rows
  the drafter was never trained through now compete: on the shipped SmolLM2 drafter a third of the self-check's
  top-1 picks fell outside the kept set.

``self_check`` loads the written folder with ``AutoModelForCausalLM`` and compares it with our drafter's network on
a fixed text: the largest logit difference over the kept tokens and the share of positions whose top-1 agrees.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from core import ASSETS_DIR
from core.errors import DraftScopeError
from core.runtime.models import LoadedModel
from core.specdec.drafters import fastdraft as fd

NEEDS_TARGET = True  # the export reads the loaded target (its head, embedding, tokenizer)
METHOD = "draft_model"
FILLS = ("zero", "target")  # the first is the default
CHECK_PROMPTS = ASSETS_DIR / "prompts" / "specbench_mini.jsonl"
CHECK_TOKENS = 256  # positions the self-check compares


def _target_ties(target: LoadedModel) -> bool:
    head, embed = target.model.get_output_embeddings(), target.model.get_input_embeddings()
    return head.weight is embed.weight or (head.weight.shape == embed.weight.shape
                                           and torch.equal(head.weight, embed.weight))


def weights(net: torch.nn.Module, target: LoadedModel, fill: str) -> tuple[dict[str, torch.Tensor], bool]:
    """(the folder's tensors in Hugging Face names, float32; whether the head is tied to the embedding)."""
    if fill not in FILLS:
        raise DraftScopeError(f"unknown fill '{fill}' for the rows outside the kept tokens; choose from "
                              f"{', '.join(FILLS)}")
    state = {"model.embed_tokens.weight": target.model.get_input_embeddings().weight}
    state.update({f"model.layers.{k}": v for k, v in net.model.layers.state_dict().items()})
    state.update({f"model.norm.{k}": v for k, v in net.model.norm.state_dict().items()})
    head_VD = target.model.get_output_embeddings().weight
    tied = fill == "target" and _target_ties(target)
    if fill == "target" and not tied:
        state["lm_head.weight"] = head_VD
    elif fill == "zero":
        keep = net.lm_head.keep.to(head_VD.device)
        rows = torch.zeros_like(head_VD)
        rows[keep] = head_VD[keep]
        state["lm_head.weight"] = rows
    return {name: t.detach().to("cpu", torch.float32).contiguous().clone() for name, t in state.items()}, tied


def hf_config(net: torch.nn.Module, target: LoadedModel, tied: bool):
    """The target's config with the drafter's layer count (and layer kinds), its head tied or not."""
    data = target.model.config.to_dict()
    data.pop("quantization_config", None)
    data.update({"num_hidden_layers": len(net.model.layers), "tie_word_embeddings": tied,
                 "architectures": [type(target.model).__name__], "_name_or_path": ""})
    if getattr(net.config, "layer_types", None) is not None:
        data["layer_types"] = list(net.config.layer_types)
    data.pop("dtype", None)
    data.pop("torch_dtype", None)
    config = type(target.model.config).from_dict(data)
    config.dtype = "float32"
    return config


def check_ids(target: LoadedModel, n: int = CHECK_TOKENS) -> list[int]:
    """A fixed text for the self-check: the shipped benchmark prompts, chat-formatted where the target has a
    template, concatenated up to ``n`` tokens."""
    ids: list[int] = []
    chat = bool(getattr(target.tokenizer, "chat_template", None))
    for line in CHECK_PROMPTS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            ids += target.encode(json.loads(line)["prompt"], chat=chat)
        if len(ids) >= n:
            break
    return ids[:n]


@torch.no_grad()
def self_check(folder: Path, net: torch.nn.Module, target: LoadedModel) -> dict:
    """Load ``folder`` with ``AutoModelForCausalLM`` and compare its logits with ``net``'s (our drafter's network)."""
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([check_ids(target)], device=target.device)
    ours_nV = net(ids.to(next(net.parameters()).device)).logits[0].float().cpu()
    theirs_nV = exported(ids.cpu()).logits[0].float()
    keep = net.lm_head.keep.cpu()
    diff = (ours_nV[:, keep] - theirs_nV[:, keep]).abs().max().item()
    top1 = (ours_nV.argmax(-1) == theirs_nV.argmax(-1)).float().mean().item()
    outside = (~torch.isin(theirs_nV.argmax(-1), keep)).float().mean().item()
    return {"positions": int(ids.shape[1]), "max_abs_logit_diff_kept": diff, "top1_agreement": round(top1, 4),
            "top1_outside_kept": round(outside, 4)}


def write(stage: Path, target: LoadedModel, gamma: int | None, checkpoint: str | None, fill: str = FILLS[0]) -> dict:
    """Write the folder's model, config, generation config and tokenizer into ``stage``, then self-check it."""
    from safetensors.torch import save_file

    source = Path(checkpoint) if checkpoint else fd.default_checkpoint(target.name)
    net, meta = fd.load(source, target)
    gamma = 4 if gamma is None else gamma  # the benchmark matrix's fastdraft row
    state, tied = weights(net, target, fill)
    save_file(state, str(stage / "model.safetensors"), metadata={"format": "pt"})
    hf_config(net, target, tied).save_pretrained(stage)
    target.model.generation_config.save_pretrained(stage)
    target.tokenizer.save_pretrained(stage)
    check = self_check(stage, net, target)
    if check["max_abs_logit_diff_kept"] > 1e-3:
        raise DraftScopeError(f"the exported draft model's logits over the kept tokens differ from the drafter's by "
                              f"{check['max_abs_logit_diff_kept']:.3g}; nothing was written")
    k, vocab = net.lm_head.k, net.lm_head.vocab
    outside = ("the target's own rows (tied to the embedding)" if tied else "the target's own rows") \
        if fill == "target" else "zero rows (logit 0)"
    differences = [
        f"VocabTrim: our drafter's head keeps {k} of {vocab} tokens and puts -inf on the rest; a plain LM head has no "
        f"bias, so the other rows hold {outside}. Over the kept tokens the logits are ours (largest difference "
        f"{check['max_abs_logit_diff_kept']:.2g} on {check['positions']} positions of the shipped prompts); the "
        f"top-1 agrees with ours at {check['top1_agreement']:.1%} of them ({check['top1_outside_kept']:.1%} pick a "
        "token outside the kept set).",
        "The draft model's head is the full vocabulary: it reads all of it per drafted token (our drafter reads the "
        f"{k} kept rows), so a serving engine pays more per draft token than DraftScope's cost model says.",
        "The embedding, head and copied layers come from the target as DraftScope loads it (the embedded GGUF, "
        "dequantized, where the preset is one), not from the original checkpoint a server loads."
        if target.source.startswith("gguf") else "The embedding and head are the target's.",
    ]
    return {"gamma": gamma, "source": str(source), "source_kind": "FastDraft drafter", "differences": differences,
            "details": {"n_layers": len(net.model.layers), "kept_tokens": k, "fill": fill, "tied_head": tied,
                        "self_check": check, "stage": meta.get("stage"), "loss": meta.get("loss")}}
