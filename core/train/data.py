"""Training data shared by the self-drafter scripts: text the target writes itself from the project's prompts."""

from __future__ import annotations

import json
import sys

import torch
from tqdm import tqdm

from core.runtime.models import cache_dir
from core.train.prompts import training_prompts

TEACHER_TOPK = 64  # the teacher distribution is kept over the target's top 64 tokens, renormalised


@torch.inference_mode()
def generate_sequences(target, prompts: list[str], max_new_tokens: int, batch: int, seed: int,
                       temperature: float = 0.7, top_p: float = 0.9) -> list[list[int]]:
    """Prompt + sampled continuation token ids (cut at EOS), batched with left padding."""
    torch.manual_seed(seed)
    pad = target.tokenizer.pad_token_id
    pad = pad if pad is not None else sorted(target.eos_ids)[0]
    out: list[list[int]] = []
    for i in tqdm(range(0, len(prompts), batch), desc="generate", unit="batch"):
        encoded = [target.encode(p, chat=True) for p in prompts[i:i + batch]]
        width = max(map(len, encoded))
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=target.device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=target.device)
        gen = target.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature,
                                    top_p=top_p, max_new_tokens=max_new_tokens, pad_token_id=pad)
        for e, row in zip(encoded, gen[:, width:].tolist()):
            cont = []
            for tok in row:
                cont.append(tok)
                if tok in target.eos_ids:
                    break
            out.append(e + cont)
    return out


def training_sequences(target, n_prompts: int | None, max_new_tokens: int, batch: int,
                       seed: int) -> tuple[list[str], list[list[int]]]:
    """The training prompts and the target's answers to them, generated once and cached in the user cache."""
    prompts = training_prompts(n_prompts, seed=seed)
    data_file = cache_dir() / "train" / f"{target.name}-seqs-{len(prompts)}-{max_new_tokens}-{seed}.json"
    if data_file.is_file():
        sequences = json.loads(data_file.read_text())
        print(f"reusing {len(sequences)} generated sequences from {data_file}", file=sys.stderr)
    else:
        sequences = generate_sequences(target, prompts, max_new_tokens, batch, seed)
        data_file.parent.mkdir(parents=True, exist_ok=True)
        data_file.write_text(json.dumps(sequences))
    return prompts, sequences


@torch.no_grad()
def teacher_topk(target, seq: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's next-token probabilities at every position of ``seq``, top ``TEACHER_TOPK``: (n, k) values and
    ids, on the CPU."""
    logits = target.model(torch.tensor([seq], device=target.device)).logits[0].float()
    top = torch.topk(torch.softmax(logits, -1), TEACHER_TOPK, dim=-1)
    return top.values.cpu(), top.indices.cpu()
