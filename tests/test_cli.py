"""The command line: JSON output, and one-line messages (never a traceback) for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_json(capsys):
    code, out, err = _run(capsys, "generate", "--target", "tiny-llama", "--drafter", "ngram", "--prompt",
                          "a b a b a b a b", "--max-new-tokens", "12", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["schema"] == "draftscope.trace" and {"generated_ids", "text", "records", "stats"} <= set(data)
    assert len(data["generated_ids"]) == 12 and data["stats"]["generated"] == 12
    steps = [r["data"] for r in data["records"]]
    assert {r["type"] for r in data["records"]} == {"step"}
    assert sum(len(s["committed_ids"]) for s in steps) == 12
    assert steps[0]["drafter"] == "ngram"


def test_generate_tree_json_and_alpha_star_line(capsys):
    code, out, err = _run(capsys, "generate", "--target", "tiny-llama", "--drafter", "early-exit", "--exit-layer", "2",
                          "--tree", "3,2", "--temperature", "1", "--verifier", "rsd", "--prompt", "a b a b a b",
                          "--max-new-tokens", "10", "--json")
    assert code == 0, err
    data = json.loads(out)
    step = data["records"][0]["data"]
    assert len(data["generated_ids"]) == 10 and data["records"][0]["type"] == "tree" and step["shape"] == "3,2"
    assert len(step["nodes"]) == 9 and step["groups"][0]["alpha_star_with"] is not None
    code, out, err = _run(capsys, "generate", "--target", "tiny-llama", "--drafter", "early-exit", "--exit-layer", "2",
                          "--tree", "budget:6", "--temperature", "1", "--prompt", "a b a b", "--max-new-tokens", "8")
    assert code == 0 and "sibling groups" in err and "α* with replacement" in err


def test_generate_with_typical_acceptance_and_its_options(capsys):
    code, out, err = _run(capsys, "generate", "--target", "tiny-llama", "--drafter", "early-exit", "--exit-layer", "2",
                          "--tree", "[[0],[1],[0,0]]", "--verifier", "typical", "--epsilon", "0.2", "--delta", "0.5",
                          "--temperature", "1", "--prompt", "a b a b", "--max-new-tokens", "8", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["settings"]["verifier_options"] == {"epsilon": 0.2, "delta": 0.5}
    step = data["records"][0]["data"]
    assert step["verifier"] == "typical" and len(step["nodes"]) == 3


def test_generate_text_streams(capsys):
    code, out, err = _run(capsys, "generate", "--target", "tiny-llama", "--drafter", "none", "--prompt", "hello",
                          "--max-new-tokens", "5")
    assert code == 0 and out.strip() and "tok/s" in err


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "   "], "the prompt is empty"),
    (["--prompt", "hi", "--target", "no-such-model"], "unknown model 'no-such-model'"),
    (["--prompt", "hi", "--drafter", "telepathy"], "unknown drafter 'telepathy'"),
    (["--prompt", "hi", "--verifier", "vibes"], "unknown verifier 'vibes'"),
    (["--prompt", "hi", "--drafter", "model", "--draft-model", "tiny-gemma"], "does not share the target's tokenizer"),
    (["--prompt", "hi", "--drafter", "model"], "needs a draft model"),
    (["--prompt", "hi", "--max-new-tokens", "0"], "--max-new-tokens: must be in 1..4096"),
    (["--prompt", "hi", "--max-new-tokens", "100000"], "--max-new-tokens: must be in 1..4096"),
    (["--prompt", "hi", "--gamma", "0"], "--gamma: must be in 1..64"),
    (["--prompt", "hi", "--temperature", "-1"], "temperature must be in [0, 10]"),
    (["--prompt", "hi", "--top-p", "0"], "top-p must be in (0, 1]"),
    (["--prompt", "hi", "--drafter", "early-exit", "--exit-layer", "9"], "exit layer must be in 1..3"),
    (["--prompt-file", "/nonexistent/prompt.txt"], "prompt file not found"),
    (["--prompt", "hi", "--max-new-tokens", "lots"], "must be a whole number"),
    (["--prompt", "hi", "--tree", "2,2"], "cannot grow a tree"),
    (["--prompt", "hi", "--drafter", "kangaroo", "--adapter", "/nonexistent.safetensors"], "adapter not found"),
    (["--prompt", "hi", "--drafter", "kangaroo", "--eta", "2"], "η (Kangaroo's early-exit threshold)"),
    (["--prompt", "hi", "--target", "tiny-gemma", "--drafter", "kangaroo"], "Kangaroo adapter not found"),
    (["--prompt", "hi", "--drafter", "early-exit", "--tree", "2,x"], "tree shape must be"),
    (["--prompt", "hi", "--drafter", "early-exit", "--tree", "2,2", "--verifier", "rsd"], "temperature above 0"),
    (["--prompt", "hi", "--drafter", "medusa", "--checkpoint", "/nonexistent.safetensors"], "heads file not found"),
    (["--prompt", "hi", "--drafter", "falcon", "--checkpoint", "/nonexistent.safetensors"], "drafter not found"),
    (["--prompt", "hi", "--drafter", "early-exit", "--tree", "[[0],[0,1,2]]"], "needs its parent path"),
    (["--prompt", "hi", "--drafter", "early-exit", "--tree", "[[0],[0,"], "list of lists of top-k indices"),
    (["--prompt", "hi", "--epsilon", "0.2"], "--epsilon is not an option of 'greedy'"),
    (["--prompt", "hi", "--verifier", "typical", "--epsilon", "2"], "typical acceptance: ε and δ"),
    (["--prompt", "hi", "--drafter", "early-exit", "--confidence", "1.5"], "confidence threshold must be in [0, 1)"),
    (["--prompt", "hi", "--schedule", "sometimes"], "invalid choice"),
    (["--prompt", "hi", "--drafter", "pearl", "--threads", "99"], "threads must be in 1.."),
    (["--prompt", "hi", "--drafter", "pearl", "--base", "kangaroo"], "invalid choice"),
    (["--prompt", "hi", "--drafter", "pearl", "--base", "ngram", "--base-options", "{x"], "JSON object"),
    (["--prompt", "hi", "--target", "tiny-gemma", "--drafter", "pearl", "--base", "ngram"], "sliding-window"),
    (["--prompt", "hi", "--drafter", "aded"], "no ADED trigram store for 'tiny-llama'"),
    (["--prompt", "hi", "--drafter", "aded", "--iterations", "0"], "iterations must be in 1..500"),
    (["--prompt", "hi", "--drafter", "aded", "--store", "empty", "--tree", "2,2", "--verifier", "rrs",
      "--temperature", "1"], "deterministic tree"),
])
def test_bad_input_is_one_line(capsys, argv, message):
    code, _out, err = _run(capsys, "generate", "--target", "tiny-llama", *argv) if "--target" not in argv else \
        _run(capsys, "generate", *argv)
    assert code != 0
    assert message in err, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_prompt_longer_than_context(capsys, tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("word " * 3000)  # tiny-llama's context is 2048 tokens
    code, _out, err = _run(capsys, "generate", "--target", "tiny-llama", "--prompt-file", str(path))
    assert code == 2 and "exceeds the context" in err and err.count("\n") == 1


def test_local_directory_needs_opt_in():
    from core.errors import DraftScopeError
    from core.runtime.models import load_model

    with pytest.raises(DraftScopeError, match="local models are disabled"):
        load_model(str(ROOT))


def test_real_process_exit_code_and_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "core.cli", "generate", "--target", "nope", "--prompt", "x"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown model 'nope'")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv, message", [
    (["--lengths", "64,4000"], "context length 4000 + 8 new tokens exceeds the context of 'tiny-llama' (2048 tokens)"),
    (["--lengths", "1k,2k"], "lengths must be comma-separated whole numbers"),
    (["--lengths", "64", "--task", "rag"], "a task whose length can be set: passkey, multikey"),
    (["--lengths", "64"], "python -m core.train.longspec --target tiny-llama"),  # no LongSpec drafter ships for it
])
def test_bench_long_context_bad_input_is_one_line(capsys, argv, message):
    code, _out, err = _run(capsys, "bench", "--long-context", "--target", "tiny-llama", "--max-new-tokens", "8", *argv)
    assert code == 2, err
    assert message in err, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_bench_long_context_table_and_json(capsys):
    argv = ("bench", "--long-context", "--target", "tiny-llama", "--drafters", "ngram", "--lengths", "128,64",
            "--max-new-tokens", "4")
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("| drafter | prompt tokens | drafter KV bytes |") and len(lines) >= 4
    assert lines[2].startswith("| ngram |") and "| — |" in lines[2]  # the n-gram drafter keeps no KV cache
    code, out, err = _run(capsys, *argv, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["requested"] for r in rows] == [64, 128] and all(r["identical_to_target"] for r in rows)
    assert rows[0]["drafter_kv_kind"] == "none" and rows[0]["target_kv_bytes"] < rows[1]["target_kv_bytes"]
