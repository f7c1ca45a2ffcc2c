"""Load test (issue 21): N concurrent ``gradio_client`` visitors against the app on the loopback interface, each
mixing Step, Run, Stop during a Run, Reset, Compare, a KV run, a VAR generation and a Run whose tab is closed
mid-run (the connection dropped) for a bounded time; reports completed calls, errors,
latency percentiles per endpoint, the server process's peak memory and whether a last Step still answers (no stuck
worker). The suite runs a small version (``tests/test_load.py``); the full one is

    PYTHONPATH=. .venv/bin/python -m tests.load --visitors 16 --seconds 120 --target smollm2-135m --json out.json

Loopback only: ``--url`` must point at 127.0.0.1 / localhost (never someone else's server); without it the app is
launched in this process on a free local port."""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import statistics
import sys
import threading
import time
from urllib.parse import urlparse

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

PROMPT = "one two three four five, one two three four five, one two three four five"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ACTIONS = ("step", "step", "step", "run", "stop", "reset", "compare", "kv", "var", "gone")  # drawn uniformly


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _parameters(client, endpoint: str) -> set[str]:
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"][endpoint]
    return {p["parameter_name"] for p in api["parameters"]}


def disconnect_mid_run(url: str, settings: dict, timeout: float = 120) -> bool:
    """Start a Run the way a browser does (join the queue, read its event stream) and drop the connection once it
    has streamed a round: a visitor closing the tab mid-run. ``settings`` by the controls' element ids (``-`` read
    as ``_``); the rest keep the page's values. True once a round was seen before the drop."""
    import httpx

    url = url.rstrip("/")
    config = httpx.get(f"{url}/config", timeout=30).json()
    components = {c["id"]: c for c in config["components"]}
    dep = next(d for d in config["dependencies"] if d.get("api_name") == "run")
    data = []
    for i in dep["inputs"]:
        props = components[i].get("props", {})
        data.append(settings.get((props.get("elem_id") or "").replace("-", "_"), props.get("value")))
    session_hash = f"gone{random.getrandbits(48):012x}"
    joined = httpx.post(f"{url}/gradio_api/queue/join", timeout=30, json={
        "data": data, "fn_index": dep["id"], "session_hash": session_hash, "event_data": None,
        "trigger_id": dep["targets"][0][0]})
    joined.raise_for_status()
    with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session_hash},
                      timeout=timeout) as stream:
        for line in stream.iter_lines():
            if '"process_generating"' in line and "Running" in line and "round" in line:
                return True  # leaving the block closes the connection mid-run
            if '"process_completed"' in line:
                return False
    return False


class Visitor(threading.Thread):
    """One visitor: its own client (its own session), random actions until the deadline."""

    def __init__(self, url: str, index: int, deadline: float, target: str, new_tokens: int, results: list,
                 lock: threading.Lock):
        super().__init__(daemon=True)
        self.url, self.rng, self.deadline = url, random.Random(index), deadline
        self.target, self.new_tokens, self.results, self.lock = target, new_tokens, results, lock

    def record(self, endpoint: str, seconds: float, error: str | None) -> None:
        with self.lock:
            self.results.append({"endpoint": endpoint, "seconds": seconds, "error": error})

    def call(self, endpoint: str, **kw):
        t = time.perf_counter()
        try:
            out = self.client.predict(**kw, api_name=endpoint)
            self.record(endpoint, time.perf_counter() - t, None)
            return out
        except Exception as exc:
            self.record(endpoint, time.perf_counter() - t, f"{type(exc).__name__}: {str(exc)[:200]}")
            return None

    def run(self) -> None:
        from gradio_client import Client

        self.client = Client(self.url, verbose=False)
        session = {"prompt": PROMPT, "target": self.target, "drafter": "ngram", "verifier": "greedy", "chat": False,
                   "max_new_tokens": self.new_tokens}
        compare = {k: v for k, v in session.items() if k in _parameters(self.client, "/compare")}
        kv = {"target": self.target, "drafter": self.target, "task": "passkey", "prompt": "", "length": 256,
              "budget": 64, "methods": ["snapkv", "streamingllm"], "max_new_tokens": 4}
        kv = {k: v for k, v in kv.items() if k in _parameters(self.client, "/kv_run")}
        while time.monotonic() < self.deadline:
            action = self.rng.choice(ACTIONS)
            if action == "step":
                self.call("/step", **session)
            elif action == "run":
                self.call("/run", **session)
            elif action == "stop":  # Stop while a Run of this session is in progress (or still queued)
                t = time.perf_counter()
                job = self.client.submit(**session, api_name="/run")  # the same budget: a smaller one than
                #   what the session already generated would be (rightly) refused
                time.sleep(self.rng.uniform(0.05, 0.5))
                self.call("/stop")
                try:
                    job.result(timeout=600)
                    self.record("/run+stop", time.perf_counter() - t, None)
                except Exception as exc:
                    self.record("/run+stop", time.perf_counter() - t, f"{type(exc).__name__}: {str(exc)[:200]}")
            elif action == "reset":
                self.call("/reset", **session)
            elif action == "compare":
                self.call("/compare", **compare)
            elif action == "var":
                self.call("/var_generate", n=1, seed=self.rng.randrange(1000))
            elif action == "gone":  # another tab of this visitor runs, then is closed mid-run
                t = time.perf_counter()
                try:
                    disconnect_mid_run(self.url, {**session, "chat": False})
                    self.record("/run+disconnect", time.perf_counter() - t, None)
                except Exception as exc:
                    self.record("/run+disconnect", time.perf_counter() - t, f"{type(exc).__name__}: {str(exc)[:200]}")
            else:
                self.call("/kv_run", **kv)


def load(url: str | None = None, visitors: int = 16, seconds: float = 120, target: str = "smollm2-135m",
         new_tokens: int = 16) -> dict:
    """Run the load and return the report (see the module docstring)."""
    if not 1 <= visitors <= 64:
        raise ValueError(f"visitors must be in 1..64, got {visitors}")
    if not 1 <= seconds <= 3600:
        raise ValueError(f"seconds must be in 1..3600, got {seconds}")
    demo = None
    if url is None:
        from app.main import build_demo

        demo = build_demo()
        demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True)
        url = demo.local_url
    elif urlparse(url).hostname not in LOOPBACK:
        raise ValueError(f"the load test only runs against this machine (127.0.0.1 or localhost), not {url}")
    try:
        results: list[dict] = []
        lock = threading.Lock()
        start = time.monotonic()
        crowd = [Visitor(url, i, start + seconds, target, new_tokens, results, lock) for i in range(visitors)]
        for v in crowd:
            v.start()
        for v in crowd:
            v.join(timeout=seconds + 900)
        stuck = sum(v.is_alive() for v in crowd)
        wall = time.monotonic() - start
        from gradio_client import Client

        t = time.perf_counter()  # after the crowd: does the server still answer at once?
        last = Client(url, verbose=False).predict(prompt=PROMPT, target=target, drafter="ngram", chat=False,
                                                  max_new_tokens=4, api_name="/step")
        after_s = time.perf_counter() - t
    finally:
        if demo is not None:
            demo.close()
    per = {}
    for endpoint in sorted({r["endpoint"] for r in results}):
        mine = sorted(r["seconds"] for r in results if r["endpoint"] == endpoint)
        per[endpoint] = {"calls": len(mine), "errors": sum(1 for r in results if r["endpoint"] == endpoint
                                                           and r["error"]),
                         "p50_s": round(statistics.median(mine), 3),
                         "p95_s": round(mine[min(len(mine) - 1, int(0.95 * len(mine)))], 3)}
    all_s = sorted(r["seconds"] for r in results)
    return {"visitors": visitors, "seconds": round(wall, 1), "target": target, "calls": len(results),
            "errors": sum(1 for r in results if r["error"]), "error_examples": [r["error"] for r in results
                                                                              if r["error"]][:5],
            "p50_s": round(statistics.median(all_s), 3) if all_s else None,
            "p95_s": round(all_s[min(len(all_s) - 1, int(0.95 * len(all_s)))], 3) if all_s else None,
            "per_endpoint": per, "stuck_visitors": stuck, "step_after_s": round(after_s, 3),
            "step_after_ok": isinstance(last, tuple | list) and "round" in str(last[-2]),
            "peak_rss_mb": round(_peak_rss_mb(), 1) if demo is not None else None,
            "store": _store_usage() if demo is not None else None}


def _store_usage() -> dict:
    """What the app's session store holds at the end (entries, bytes, visitors): in-process runs only."""
    from app import common

    return common.STORE.usage()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="a running app on this machine (default: launch one here)")
    parser.add_argument("--visitors", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--target", default="smollm2-135m")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--json", default=None, help="also write the report here")
    args = parser.parse_args(argv)
    try:
        report = load(args.url, args.visitors, args.seconds, args.target, args.new_tokens)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0 if report["errors"] == 0 and report["stuck_visitors"] == 0 and report["step_after_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
