"""``python -m core.cli var generate|report`` on tiny random checkpoints (DRAFTSCOPE_VAR_ASSETS)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.cli import main
from tests.helpers import write_tiny_checkpoints


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return write_tiny_checkpoints(tmp_path_factory.mktemp("var-assets"))


@pytest.fixture(autouse=True)
def _env(assets, monkeypatch):
    monkeypatch.setenv("DRAFTSCOPE_VAR_ASSETS", str(assets))


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_json_has_the_documented_fields(capsys):
    code, out, err = _run(capsys, "var", "generate", "--class", "triangle", "--seed", "3", "--split", "2",
                          "--n", "3", "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert [s["model"] for s in rec["scales"]] == ["large", "large"] + ["small"] * 4
    assert [s["side"] for s in rec["scales"]] == [1, 2, 3, 4, 6, 8]
    assert [s["index"] for s in rec["scales"]] == list(range(6))
    assert all(s["ms"] > 0 for s in rec["scales"])
    assert rec["total_ms"] >= sum(s["ms"] for s in rec["scales"])
    assert rec["peak_memory_bytes"] > rec["kv_bytes"] > 0
    assert rec["class"] == 3 and rec["class_name"] == "triangle" and rec["n"] == 3
    assert 0 <= rec["class_accuracy"] <= 1
    assert rec["psnr_vs_large"] == "inf" or rec["psnr_vs_large"] > 0


def test_generate_large_only_is_its_own_reference_and_n1_has_no_accuracy(capsys):
    code, out, _ = _run(capsys, "var", "generate", "--class", "0", "--split", "6", "--json")
    rec = json.loads(out)
    assert code == 0 and rec["psnr_vs_large"] == "inf" and rec["class_accuracy"] is None
    assert {s["model"] for s in rec["scales"]} == {"large"}


def test_scalekv_reports_compressed_memory(capsys):
    code, out, err = _run(capsys, "var", "generate", "--class", "1", "--split", "4", "--scalekv", "20%", "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["kv_policy"] == "scalekv@0.2"
    assert rec["kv_stored_bytes"] < rec["scalekv"]["kv_stored_bytes_full"]
    code, out, _ = _run(capsys, "var", "generate", "--class", "1", "--split", "4", "--scalekv", "1.0", "--json")
    assert json.loads(out)["scalekv"]["psnr_vs_full_cache"] == "inf"  # a 100 % budget changes nothing


def test_out_writes_a_png_with_canvases(capsys, tmp_path):
    from PIL import Image

    path = tmp_path / "img.png"
    code, out, err = _run(capsys, "var", "generate", "--class", "2", "--n", "2", "--out", str(path), "--canvases")
    assert code == 0, err
    assert path.is_file()
    img = np.asarray(Image.open(path))
    assert img.shape == (2 * 36 * 4, 6 * 36 * 4, 3)  # 2 images × 6 canvases of 32 px + 2 px frames, 4× upscaled
    assert "scale 5 (8×8)" in out


@pytest.mark.parametrize("argv, message", [
    (["--class", "unicorn"], "unknown class"), (["--class", "12"], "class must be"),
    (["--split", "9"], "--split"), (["--scalekv", "0"], "budget"), (["--scalekv", "lots"], "budget"),
    (["--n", "0"], "--n"), (["--canvases"], "--canvases needs --out"), (["--out", "x.jpg"], ".png")])
def test_bad_input_is_one_clear_line(capsys, argv, message):
    code, _out, err = _run(capsys, "var", "generate", *argv)
    assert code == 2 and message in err and "Traceback" not in err and err.count("\n") == 1


def test_missing_checkpoints(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("DRAFTSCOPE_VAR_ASSETS", str(tmp_path))
    code, _, err = _run(capsys, "var", "generate")
    assert code == 2 and "python -m core.train.var" in err


def test_report_prints_the_three_tables(capsys):
    code, out, err = _run(capsys, "var", "report", "--classes", "0,1", "--n", "1", "--repeats", "1", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert [r["split"] for r in rep["code"]] == [6, 5, 4, 3, 2, 1, 0]
    assert rep["code"][0]["speedup_vs_large"] == 1.0
    assert [(r["policy"], r["budget"]) for r in rep["scalekv"]][:3] == [("full", 1.0), ("scalekv", 0.1),
                                                                        ("uniform", 0.1)]
    sk = {(r["policy"], r["budget"]): r for r in rep["scalekv"]}
    for b in (0.1, 0.2, 0.4):
        assert sk[("scalekv", b)]["kv_bytes"] == sk[("uniform", b)]["kv_bytes"] < sk[("full", 1.0)]["kv_bytes"]
    assert [r["sparsity"] for r in rep["draft_attention"]] == [0.5, 0.75, 0.9]
