"""Exporting drafters for vLLM: the Medusa folder against vLLM's layout and forward (both written out here from
vLLM's source, so a drift on either side fails), the FastDraft draft-model folder against our drafter, the n-gram
config, refusals, the CLI and its all-or-nothing writes, and the Production metrics tab's matching row."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from core import export as ex
from core.cli import main
from core.errors import DraftScopeError
from core.specdec.drafters import build_drafter, fastdraft as fd, heads as heads_mod
from core.specdec.prod_metrics import choice_for_drafter, matrix_choices, shipped_matrices, vllm_exposition

pytestmark = pytest.mark.usefixtures("one_thread")

# vLLM's Medusa layout (vllm/model_executor/models/medusa.py, load_weights; transformers_utils/configs/medusa.py)
MEDUSA_CONFIG_KEYS = {"model_type", "architectures", "hidden_size", "vocab_size", "num_heads", "num_hidden_layers",
                      "truncated_vocab_size", "medusa_fc_bias", "original_lm_head"}


def vllm_medusa_logits(tensors: dict, config: dict, h_nD: torch.Tensor) -> list[torch.Tensor]:
    """vLLM's Medusa forward, restated: per head, ResidualBlock (x = x + SiLU(layer(x)) for each of its
    num_hidden_layers linears, with bias when medusa_fc_bias), then the (shared, original_lm_head) LM head; with a
    token_map, the truncated logits are written at its ids into a -inf row of vocab_size."""
    out = []
    for k in range(config["num_heads"]):
        x = h_nD
        for j in range(config["num_hidden_layers"]):
            bias = tensors[f"blocks.{k}.layers.{j}.bias"] if config["medusa_fc_bias"] else None
            x = x + torch.nn.functional.silu(torch.nn.functional.linear(x, tensors[f"blocks.{k}.layers.{j}.weight"],
                                                                        bias))
        logits = x @ tensors["lm_head.weight"].T
        if "token_map" in tensors and config["truncated_vocab_size"] < config["vocab_size"]:
            full = torch.full((*logits.shape[:-1], config["vocab_size"]), float("-inf"))
            full[..., tensors["token_map"]] = logits
            logits = full
        out.append(logits)
    return out


def read_folder(folder) -> tuple[dict, dict]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, json.loads((folder / "config.json").read_text())


@pytest.fixture(scope="module")
def medusa_file(tiny_llama, tmp_path_factory):
    """Random (not zero-initialised) 3-head, 2-block Medusa heads for tiny-llama, VocabTrim'd to 2048 tokens."""
    torch.manual_seed(0)
    d = tiny_llama.model.config.hidden_size
    heads = heads_mod.DraftHeads(heads_mod.HeadsConfig("medusa", 3, 2, d))
    with torch.no_grad():
        for p in heads.parameters():
            p.normal_(0, 0.2)
    keep = torch.sort(torch.randperm(tiny_llama.vocab_size)[:2048]).values
    path = tmp_path_factory.mktemp("medusa") / "medusa.safetensors"
    heads_mod.save(path, heads, keep, tiny_llama, {"trained": False})
    return path


def test_medusa_folder_has_vllms_names_shapes_and_config(tiny_llama, medusa_file, tmp_path):
    result = ex.export("medusa", "tiny-llama", tmp_path / "m", checkpoint=str(medusa_file), loaded=tiny_llama)
    tensors, config = read_folder(result.out)
    d, vocab = tiny_llama.model.config.hidden_size, tiny_llama.vocab_size
    assert set(config) == MEDUSA_CONFIG_KEYS
    assert config["model_type"] == "medusa" and config["architectures"] == ["MedusaModel"]
    assert (config["num_heads"], config["num_hidden_layers"], config["hidden_size"]) == (3, 2, d)
    assert config["vocab_size"] == vocab and config["truncated_vocab_size"] == 2048
    assert config["medusa_fc_bias"] is True and config["original_lm_head"] is True
    # MedusaConfig.from_pretrained renames any key holding "num" and "heads" / "layers": only ours may
    assert [k for k in config if "num" in k] == ["num_heads", "num_hidden_layers"]
    expected = {f"blocks.{k}.layers.{j}.{p}" for k in range(3) for j in range(2) for p in ("weight", "bias")}
    assert set(tensors) == expected | {"lm_head.weight", "token_map"}
    assert tensors["blocks.2.layers.1.weight"].shape == (d, d) and tensors["blocks.0.layers.0.bias"].shape == (d,)
    assert tensors["lm_head.weight"].shape == (2048, d) and tensors["token_map"].dtype == torch.int64
    assert result.speculative_config == {"method": "medusa", "model": str(result.out), "num_speculative_tokens": 3}
    assert json.loads((result.out / "speculative_config.json").read_text()) == result.speculative_config
    assert "medusa" in (result.out / "README.md").read_text()


def test_vllms_medusa_forward_on_the_export_matches_our_heads(tiny_llama, medusa_file, tmp_path):
    result = ex.export("medusa", "tiny-llama", tmp_path / "m", checkpoint=str(medusa_file), loaded=tiny_llama)
    tensors, config = read_folder(result.out)
    drafter = build_drafter("medusa", tiny_llama, {"checkpoint": str(medusa_file)})
    torch.manual_seed(1)
    h_nD = torch.randn(32, config["hidden_size"])
    theirs = vllm_medusa_logits(tensors, config, h_nD)
    with torch.no_grad():
        for k in range(config["num_heads"]):
            ours_nV = drafter.head(drafter.heads.features(k, h_nD)).float()
            kept = tensors["token_map"]
            torch.testing.assert_close(theirs[k][:, kept], ours_nV[:, kept], rtol=1e-5, atol=1e-5)
            assert torch.isinf(theirs[k]).sum() == torch.isinf(ours_nV).sum()  # -inf on the same trimmed rows
            assert torch.equal(theirs[k].argmax(-1), ours_nV.argmax(-1))


def test_medusa_without_vocab_trim_has_no_token_map_and_gamma_is_bounded(tiny_llama, tmp_path):
    heads = heads_mod.DraftHeads(heads_mod.HeadsConfig("medusa", 2, 1, tiny_llama.model.config.hidden_size))
    path = heads_mod.save(tmp_path / "full.safetensors", heads, torch.arange(tiny_llama.vocab_size), tiny_llama, {})
    result = ex.export("medusa", "tiny-llama", tmp_path / "m", gamma=1, checkpoint=str(path), loaded=tiny_llama)
    tensors, config = read_folder(result.out)
    assert "token_map" not in tensors and config["truncated_vocab_size"] == config["vocab_size"]
    assert tensors["lm_head.weight"].shape[0] == tiny_llama.vocab_size and result.gamma == 1
    assert result.record["matrix_row"] is None  # no shipped matrix for tiny-llama
    with pytest.raises(DraftScopeError, match="at most 2"):
        ex.export("medusa", "tiny-llama", tmp_path / "m3", gamma=3, checkpoint=str(path), loaded=tiny_llama)
    assert not (tmp_path / "m3").exists() and not list(tmp_path.glob(".m3.*"))  # nothing half-written


@pytest.fixture(scope="module")
def fastdraft_file(tiny_llama, tmp_path_factory):
    torch.manual_seed(2)
    keep = torch.sort(torch.randperm(tiny_llama.vocab_size)[:4096]).values
    net = fd.build_network(tiny_llama, 2, keep, init_layers=[0, 3])
    with torch.no_grad():
        for p in net.model.layers.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("fd") / "fd.safetensors"
    fd.save(path, net, tiny_llama, {"stage": "test"})
    return path


@pytest.mark.parametrize("fill", ["zero", "target"])
def test_fastdraft_folder_loads_with_transformers_and_matches_our_drafter(tiny_llama, fastdraft_file, tmp_path, fill):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = ex.export("fastdraft", "tiny-llama", tmp_path / "fd", checkpoint=str(fastdraft_file), fill=fill,
                       loaded=tiny_llama)
    config = json.loads((result.out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_hidden_layers"] == 2
    assert config["tie_word_embeddings"] == (fill == "target")  # tiny-llama ties its head to its embedding
    assert result.speculative_config == {"method": "draft_model", "model": str(result.out),
                                         "num_speculative_tokens": 4}
    tokenizer = AutoTokenizer.from_pretrained(result.out)
    assert tokenizer.get_vocab() == tiny_llama.tokenizer.get_vocab()

    exported = AutoModelForCausalLM.from_pretrained(result.out, dtype=torch.float32).eval()
    ours = build_drafter("fastdraft", tiny_llama, {"checkpoint": str(fastdraft_file)}).view
    ids = torch.tensor([tiny_llama.encode("The quick brown fox jumps over the lazy dog. " * 4)])
    with torch.no_grad():
        theirs_nV, ours_nV = exported(ids).logits[0], ours(ids).logits[0]
    keep = ours.lm_head.keep
    torch.testing.assert_close(theirs_nV[:, keep], ours_nV[:, keep], rtol=1e-5, atol=1e-5)
    same = theirs_nV.argmax(-1) == ours_nV.argmax(-1)
    if fill == "zero":  # outside rows read 0: the top-1 is ours wherever our best kept logit is above 0
        assert same[ours_nV[:, keep].max(-1).values > 0].all()
    else:  # outside rows are the target's: the top-1 is ours wherever it stays inside the kept set
        assert same[torch.isin(theirs_nV.argmax(-1), keep)].all()
    check = result.record["details"]["self_check"]
    assert check["max_abs_logit_diff_kept"] < 1e-4 and 0 <= check["top1_agreement"] <= 1


def test_fastdraft_folder_drafts_in_our_engine_as_a_draft_model(tiny_llama, fastdraft_file, tmp_path):
    from core.specdec import Session, SessionConfig

    result = ex.export("fastdraft", "tiny-llama", tmp_path / "fd", checkpoint=str(fastdraft_file), loaded=tiny_llama)
    config = SessionConfig(target="tiny-llama", drafter="model", drafter_options={"draft_model": str(result.out)},
                           gamma=3, max_new_tokens=8)
    session = Session.from_config(config, prompt="Once upon a time", allow_local=True)
    list(session.run())
    plain = Session.from_config(SessionConfig(target="tiny-llama", drafter="none", max_new_tokens=8),
                                prompt="Once upon a time")
    list(plain.run())
    assert session.generated_ids == plain.generated_ids  # greedy: the export drafts, the target decides
    assert session.stats.drafted > 0


def test_ngram_export_is_a_config_without_loading_the_target(tmp_path):
    result = ex.export("ngram", "smollm2-135m", tmp_path / "ng")
    assert result.speculative_config == {"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 3,
                                         "prompt_lookup_min": 2}
    assert sorted(p.name for p in result.out.iterdir()) == ["README.md", "draftscope.json", "speculative_config.json"]
    assert result.record["matrix_row"]["label"] == "smollm2-135m · ngram · all prompts"
    other = ex.export("ngram", "smollm2-135m", tmp_path / "ng3", gamma=3)
    assert other.record["matrix_row"] is None and "No row of the shipped" in (other.out / "README.md").read_text()


@pytest.mark.parametrize("drafter", ["hydra", "hydra++", "falcon", "kangaroo", "sorted"])
def test_drafters_without_an_engine_format_are_refused(drafter, tmp_path):
    with pytest.raises(DraftScopeError, match="medusa, fastdraft, ngram"):
        ex.export(drafter, "smollm2-135m", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_exit_codes_and_no_half_written_folder(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ng"
    assert main(["export", "--drafter", "ngram", "--out", str(out)]) == 0
    assert "speculative-config" in capsys.readouterr().out
    for argv in (["--drafter", "hydra", "--out", str(tmp_path / "h")],
                 ["--drafter", "ngram", "--out", str(out)],  # not empty, no --force
                 ["--drafter", "ngram", "--out", str(tmp_path / "g"), "--gamma", "0"],
                 ["--drafter", "ngram", "--out", str(tmp_path / "no" / "such")],
                 ["--drafter", "medusa", "--out", str(tmp_path / "c"), "--checkpoint", str(tmp_path / "none")],
                 ["--drafter", "ngram", "--out", str(tmp_path / "t"), "--trimmed-rows", "target"]):
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:")
    before = (out / "draftscope.json").read_text()

    def broken(stage, target, gamma, checkpoint):
        (stage / "speculative_config.json").write_text("{}")
        raise DraftScopeError("disk full")

    monkeypatch.setattr(ex.ngram, "write", broken)
    assert main(["export", "--drafter", "ngram", "--out", str(out), "--force"]) == 2
    assert (out / "draftscope.json").read_text() == before  # the previous folder is untouched
    assert main(["export", "--drafter", "ngram", "--out", str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ng"]  # no staging folder left behind
    monkeypatch.undo()
    assert main(["export", "--drafter", "ngram", "--out", str(out), "--force", "--gamma", "2"]) == 0
    assert json.loads((out / "speculative_config.json").read_text())["num_speculative_tokens"] == 2


@pytest.mark.parametrize(("drafter", "gamma"), [("medusa", 4), ("fastdraft", 4), ("ngram", 5)])
def test_metrics_tab_shows_the_exported_drafters_row_beside_a_vllm_dump(drafter, gamma):
    from app import metrics_tab as tab

    matrices = shipped_matrices()
    label, key = choice_for_drafter(matrices, "smollm2-135m", drafter, gamma)
    assert (label, key) in matrix_choices(matrices) and label == f"smollm2-135m · {drafter} · all prompts"
    row = matrices["smollm2-135m"]["rows"][json.loads(key)[1]]
    assert row["drafter"] == drafter and row["gamma"] == gamma and not row["tree"] and not row["options"]
    dump = vllm_exposition({"label": "x", "source": "vllm", "drafts": 10, "draft_tokens": 10 * gamma,
                            "accepted_tokens": 6, "accepted_per_pos": [4, 2] + [0] * (gamma - 2)}, "served")
    _, table, status = tab.compare(dump, None, "vllm", False, key)
    assert status == f"Showing vLLM · served · engine 0, DraftScope · smollm2-135m · {drafter}."
    assert "<table" in table


def test_shipped_medusa_heads_export(smollm2, tmp_path):
    result = ex.export("medusa", "smollm2-135m", tmp_path / "m", loaded=smollm2)
    tensors, config = read_folder(result.out)
    assert config["num_heads"] == 4 and config["truncated_vocab_size"] == tensors["token_map"].numel() == 8192
    assert result.record["matrix_row"]["label"] == "smollm2-135m · medusa · all prompts"
    drafter = build_drafter("medusa", smollm2)
    h_nD = torch.randn(8, config["hidden_size"]) * 3
    with torch.no_grad():
        ours = [drafter.head(drafter.heads.features(k, h_nD)).argmax(-1) for k in range(4)]
    assert all(torch.equal(a.argmax(-1), b) for a, b in zip(vllm_medusa_logits(tensors, config, h_nD), ours))
