"""VocabTrim: the trimmed head, the kept set and its coverage, and the errors of bad k / counts."""

from __future__ import annotations

import pytest
import torch

from core.errors import DraftScopeError
from core.specdec.drafters import build_drafter
from core.specdec.vocab_trim import TrimmedHead, keep_set, ranked_tokens, shipped_counts_path
from core.train.corpus import write_counts
from tests.helpers import counts_file


def test_trimmed_head_matches_the_full_head_on_kept_rows():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 20, bias=False)
    keep = torch.tensor([1, 4, 7, 19])
    trimmed = TrimmedHead.of(head, keep)
    h = torch.randn(3, 8)
    full, out = head(h), trimmed(h)
    assert torch.allclose(out[:, keep], full[:, keep])
    outside = torch.ones(20, dtype=torch.bool)
    outside[keep] = False
    assert torch.isinf(out[:, outside]).all() and (out[:, outside] < 0).all()
    assert torch.softmax(out, -1)[:, outside].sum() == 0
    assert torch.allclose(trimmed.trimmed(h), full[:, keep])
    further = TrimmedHead.of(trimmed, torch.tensor([4, 19]))  # trimming a trimmed head keeps the right rows
    assert torch.allclose(further(h)[:, [4, 19]], full[:, [4, 19]])


def test_ranking_and_coverage(vocab6, tmp_path):
    counts = torch.tensor([5, 0, 9, 9, 1, 0])
    assert ranked_tokens(counts).tolist() == [2, 3, 0, 4, 1, 5]  # ties by id
    path = write_counts(tmp_path / "c.safetensors", counts, vocab6, "test")
    keep, info = keep_set(vocab6, 3, path)
    assert keep.tolist() == [0, 2, 3]
    assert info.coverage == pytest.approx(23 / 24)
    assert info.k == 3 and info.vocab == 6


def test_bad_k_and_foreign_counts(vocab6, tiny_llama, tmp_path):
    with pytest.raises(DraftScopeError, match="at least 1"):
        build_drafter("early-exit", vocab6, {"vocab_trim": 0})
    with pytest.raises(DraftScopeError, match="larger than"):
        build_drafter("early-exit", vocab6, {"vocab_trim": 7, "vocab_counts": str(counts_file(vocab6))})
    other = counts_file(tiny_llama)
    with pytest.raises(DraftScopeError, match="another tokenizer"):
        build_drafter("early-exit", vocab6, {"vocab_trim": 3, "vocab_counts": str(other)})
    with pytest.raises(DraftScopeError, match="not found"):
        build_drafter("early-exit", vocab6, {"vocab_trim": 3, "vocab_counts": str(tmp_path / "none.safetensors")})
    with pytest.raises(DraftScopeError, match="no shipped token counts"):
        build_drafter("early-exit", vocab6, {"vocab_trim": 3})


def test_shipped_counts_serve_the_smollm2_tokenizer(tiny_llama):
    """tiny-llama borrows SmolLM2's tokenizer, so SmolLM2's shipped counts (from its distillation corpus) apply."""
    path = shipped_counts_path(tiny_llama)
    keep, info = keep_set(tiny_llama, 8192, path)
    assert keep.numel() == 8192 and info.coverage > 0.95, info


def test_trimmed_drafter_is_cheaper_and_reports_its_head(tiny_llama):
    full = build_drafter("early-exit", tiny_llama, {"exit_layer": 2})
    trimmed = build_drafter("early-exit", tiny_llama, {"exit_layer": 2, "vocab_trim": 1024})
    assert trimmed.cost < full.cost
    assert tiny_llama.model.lm_head.weight.shape[0] == tiny_llama.vocab_size  # the target's head is untouched
    ids = tiny_llama.encode("the cat sat on the mat")
    from core.specdec.drafters import DraftContext
    from core.specdec.sampling import SamplingConfig

    trimmed.prefill(ids)
    draft = trimmed.propose(DraftContext(ids, 3, SamplingConfig(temperature=0.0), torch.Generator()))
    assert draft.info["vocab_trim"]["k"] == 1024 and 0 < draft.info["vocab_trim"]["coverage"] <= 1
    keep, _ = keep_set(tiny_llama, 1024)
    assert set(draft.tokens) <= set(keep.tolist())
