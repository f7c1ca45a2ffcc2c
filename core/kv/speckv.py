"""SpecKV (Galim et al., 2025, "draft-based approximate inference"): SnapKV whose observation window is extended by
a draft of the answer. The drafter writes a lookahead answer ŷ (greedy, as long as the answer budget); the target
prefills prompt + ŷ; the last ``window`` prompt queries *and* ŷ's queries score the prompt positions (mean attention,
GQA group max, max-pool ``kernel``); the top ``budget − window`` plus the window are kept; ŷ is dropped from the
cache and decoding starts after the prompt. A drafter with another tokenizer works through text: its ŷ is decoded
and re-encoded with the target's tokenizer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from core.errors import DraftScopeError
from core.kv.base import PressContext
from core.kv.snapkv import SnapKVPress


@torch.inference_mode()
def draft_lookahead(ctx: PressContext) -> list[int]:
    """The drafter's greedy answer to the prompt, as target token ids (at most ``max_new_tokens``)."""
    drafter, target = ctx.drafter, ctx.target
    if drafter is None:
        raise DraftScopeError("this method is draft-guided: give a draft model (--draft-model PRESET)")
    same = drafter.vocab_fingerprint() == target.vocab_fingerprint()
    ids = ctx.prompt_ids if same else drafter.encode(ctx.prompt_text)
    x = torch.tensor([ids], device=drafter.device)
    pad = drafter.tokenizer.pad_token_id if drafter.tokenizer.pad_token_id is not None else sorted(drafter.eos_ids)[0]
    out = drafter.model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                 max_new_tokens=ctx.max_new_tokens, pad_token_id=pad)[0, len(ids):].tolist()
    cut = next((i for i, t in enumerate(out) if t in drafter.eos_ids), len(out))
    out = out[:cut]
    ctx.info["lookahead_text"] = drafter.decode(out)
    if same:
        return out
    return list(target.tokenizer(ctx.info["lookahead_text"], add_special_tokens=False)["input_ids"])


@dataclass
class SpecKVPress(SnapKVPress):
    name = "speckv"
    draft_guided = True

    def lookahead(self, ctx: PressContext) -> list[int]:
        """The drafter's answer ŷ: its queries vote with the window's (timed as the press's ``draft_ms``)."""
        t0 = time.perf_counter()
        tokens = draft_lookahead(ctx)
        ctx.info["draft_ms"] = (time.perf_counter() - t0) * 1e3
        ctx.info["lookahead_tokens"] = len(tokens)
        return tokens
