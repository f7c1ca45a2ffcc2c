"""The app's public caps, in one place: how many requests may wait, how many run models at once, how many sessions a
process keeps, and the size of what one request may ask for. Two sets: ``LOCAL`` (your own machine: generous) and
``PUBLIC`` (a Hugging Face Space, or ``DRAFTSCOPE_PUBLIC=1``: strangers share one process). The README lists both."""

from __future__ import annotations

import os
from dataclasses import dataclass

from core.budget import check_count
from core.runtime.env import env_flag


@dataclass(frozen=True)
class Limits:
    queue_size: int  # requests waiting in the queue; one more is told the queue is full
    model_slots: int  # events that may run models at once (step, run, reset, …): the rest wait in the queue, with
    #   their position and an estimate shown (they still take turns on the one model lock between rounds)
    long_slots: int  # long jobs at once (the matrix, KV runs, sweeps, VAR, compare, cost measurements)
    max_sessions: int  # entries kept per process: sessions, loaded traces and the tabs' last results (see below)
    max_prompt_chars: int  # refused before tokenizing
    max_new_tokens: int  # per session run; also the long jobs' new tokens (the matrix, the context sweep)
    # What visitors keep between requests (app.store): measured in bytes (KV caches, records, results; the shared
    # models are not counted), dropped when unused for `idle_minutes`, the heaviest visitor's oldest first when full
    keep_bytes: int = 6 * 10**9  # all visitors together
    idle_minutes: float = 120  # an entry unused this long is dropped (the page says so on its next request)
    visitor_entries: int = 32  # entries one visitor (one address) may keep
    visitor_bytes: int = 6 * 10**9  # bytes one visitor may keep
    # The long jobs' sizes, checked by their handlers before any model work (API clients skip the sliders)
    job_bytes: int = 16 * 10**9  # memory one long job may need at its peak, estimated before it starts
    #   (core.budget: KV runs, DraftAttention, the context sweep, VAR); the shared weights not counted
    kv_max_length: int = 8192  # prompt tokens in the KV tab: the task's length, a custom prompt, DraftAttention,
    #   each length of the context sweep
    max_tree_nodes: int = 256  # draft-tree nodes per round (trees, heads and adaptive tabs); the engine's own cap
    max_sweep_points: int = 1000  # runs in one user-sized sweep: the matrix's configurations × prompts, the context
    #   sweep's lengths × (its drafters + the target alone)
    var_max_batch: int = 16  # images per VAR batch (generate, step, ScaleKV, DraftAttention)


LOCAL = Limits(queue_size=64, model_slots=4, long_slots=1, max_sessions=32, max_prompt_chars=60_000,
               max_new_tokens=4096)
PUBLIC = Limits(queue_size=32, model_slots=2, long_slots=1, max_sessions=24, max_prompt_chars=20_000,
                max_new_tokens=512, keep_bytes=2 * 10**9, idle_minutes=30, visitor_entries=8,
                visitor_bytes=10**9, job_bytes=10**9, kv_max_length=2048, max_tree_nodes=64, max_sweep_points=24,
                var_max_batch=4)


def public() -> bool:
    """Running for strangers: on a Hugging Face Space (``SPACE_ID`` is set there) or with ``DRAFTSCOPE_PUBLIC=1``."""
    flag = env_flag("DRAFTSCOPE_PUBLIC", None)
    return bool(os.environ.get("SPACE_ID")) if flag is None else flag


def limits() -> Limits:
    return PUBLIC if public() else LOCAL


def check_tree(config) -> None:
    """A session config's draft tree, if it has one, against ``max_tree_nodes`` (a DraftScopeError naming both)."""
    spec = config.tree_spec
    if spec is not None:
        check_count("the tree", spec.max_nodes, limits().max_tree_nodes, "nodes", "use a smaller shape or node budget")


MODEL = "model"  # concurrency_id of the events that run models a round at a time
LONG = "long"  # concurrency_id of the long jobs


def model_work() -> dict:
    """Event arguments for work that runs models (Step, Run, Reset, loading a model)."""
    return {"concurrency_id": MODEL, "concurrency_limit": limits().model_slots}


def long_work() -> dict:
    """Event arguments for the long jobs."""
    return {"concurrency_id": LONG, "concurrency_limit": limits().long_slots}


__all__ = ["LOCAL", "PUBLIC", "Limits", "check_tree", "limits", "long_work", "model_work", "public"]
