"""Presets, GGUF conversion cache, truncated views, attention mode switching."""

from __future__ import annotations

import pytest
import torch

from core.runtime.cached_lm import CachedLM
from core.runtime.models import PRESETS, cache_dir, eager_attention, module_param_bytes, truncated_view


def test_presets_registered():
    assert {"smollm2-135m", "gemma3-270m", "tiny-llama", "tiny-gemma"} <= set(PRESETS)
    assert PRESETS["smollm2-135m"].hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_smollm2_converted_once(smollm2):
    assert smollm2.source == "gguf-cache"
    assert smollm2.n_layers == 30 and smollm2.vocab_size == 49152
    folders = list((cache_dir() / "models").glob("smollm2-135m--*"))
    assert folders and (folders[0] / "model.safetensors").exists()
    assert smollm2.config._attn_implementation == "sdpa"  # fast path by default


def test_smollm2_knows_facts(smollm2):
    """The converted weights are the real model, not noise: it completes a well-known fact."""
    from tests.helpers import hf_greedy

    ids = smollm2.encode("What is the capital of France?", chat=True)
    assert "Paris" in smollm2.decode(hf_greedy(smollm2, ids, 12))


def test_truncated_view_shares_weights(tiny_llama):
    view = truncated_view(tiny_llama.model, 2)
    assert view.config.num_hidden_layers == 2 and tiny_llama.config.num_hidden_layers == 4
    assert view.model.layers[0] is tiny_llama.model.model.layers[0]
    assert module_param_bytes(view) < module_param_bytes(tiny_llama.model)
    ids = torch.tensor([tiny_llama.encode("hello world")])
    with torch.inference_mode():
        hidden = tiny_llama.model(ids, output_hidden_states=True).hidden_states[2]  # after layer 2
        expected = tiny_llama.model.lm_head(tiny_llama.model.model.norm(hidden))
        torch.testing.assert_close(view(ids).logits, expected)


def test_truncated_view_of_sliding_window_model(tiny_gemma):
    view = truncated_view(tiny_gemma.model, 3)
    assert view.config.layer_types == tiny_gemma.config.layer_types[:3]
    kv = CachedLM(view)
    kv.reset()
    assert kv.forward(list(range(20)), logits_to_keep=1).shape == (1, tiny_gemma.vocab_size)


def test_attention_weights_on_demand(tiny_llama):
    ids = torch.tensor([tiny_llama.encode("one two three")])
    with eager_attention(tiny_llama.model) as model, torch.inference_mode():
        attn = model(ids, output_attentions=True).attentions
    assert len(attn) == 4 and attn[0].shape[-1] == ids.shape[1]
    torch.testing.assert_close(attn[0].sum(-1), torch.ones_like(attn[0].sum(-1)))
    assert tiny_llama.config._attn_implementation == "sdpa"  # switched back


def test_hub_only_presets_explain_themselves(monkeypatch):
    """The rest of the SmolLM2 family is offered where the Hub is the model source; here loading one says why not."""
    from core.errors import DraftScopeError
    from core.runtime.models import load_model, preset_names

    monkeypatch.setenv("DRAFTSCOPE_MODEL_SOURCE", "gguf")
    assert "smollm2-360m" in PRESETS and "smollm2-360m" not in preset_names()
    with pytest.raises(DraftScopeError, match="Hugging Face Hub"):
        load_model("smollm2-360m")
    monkeypatch.setenv("DRAFTSCOPE_MODEL_SOURCE", "hub")
    assert {"smollm2-360m", "smollm2-1.7b"} <= set(preset_names())
