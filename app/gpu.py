"""ZeroGPU: on a Hugging Face Space with ZeroGPU hardware a GPU exists only inside functions decorated with
``spaces.GPU``. With the flag on, ``wrap_model_events`` decorates every event of the app that runs models (the
``model`` and ``long`` concurrency groups of ``app.limits``: Step, Run, Reset, model loads and the long jobs); without
it nothing changes, and the ``spaces`` package is not needed.

The flag: ``DRAFTSCOPE_ZEROGPU=1`` turns it on, ``=0`` off; unset, it follows ``SPACES_ZERO_GPU`` (``true`` on ZeroGPU
Spaces). On, it needs ``spaces`` (preinstalled on Spaces); where that does not import, a warning is logged and
nothing is decorated.

What ZeroGPU does to the app (read from the ``spaces`` package's source): each decorated call runs in a worker
process forked from the app's, with the GPU attached; arguments and results are pickled across. So:

- Weights loaded in the app's process before launch (``preload``, which ``app.main`` runs on the default pair) are
  packed by ``spaces`` and moved onto the GPU in each worker; a model first loaded inside a call is loaded again by
  the next fresh worker.
- A session (its KV caches on the GPU) stays in the worker that made it: between calls nothing of it is in the app's
  process. ZeroGPU hands the next call on the same GPU to that worker while it is idle, and Step goes on; a call that
  lands on a fresh worker finds no session and starts a new one from the prompt (with no note: that worker never saw
  the old one).
- Stop and Cancel set flags in the app's process, which a running worker does not see: Run ends at its end or at the
  call's ``duration``. Run (one call) and the long jobs are whole either way.

A dedicated GPU Space (the README's ``suggested_hardware``) keeps sessions, Stop and Cancel as on a local machine.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable

from app import limits
from core.runtime.env import env_flag

log = logging.getLogger("draftscope.app")

ENV = "DRAFTSCOPE_ZEROGPU"
DURATION_S = {limits.MODEL: 60, limits.LONG: 120}  # ZeroGPU's time per call, by concurrency group (its default is 60)


def enabled() -> bool:
    """Whether the ZeroGPU flag is on (``DRAFTSCOPE_ZEROGPU``, else ``SPACES_ZERO_GPU``)."""
    flag = env_flag(ENV, None)
    return env_flag("SPACES_ZERO_GPU") if flag is None else flag


def _spaces():
    """The ``spaces`` module when the flag is on and it imports, else None."""
    if not enabled():
        return None
    try:
        import spaces
    except ImportError:
        log.warning("%s is on but the `spaces` package does not import: running without ZeroGPU", ENV)
        return None
    return spaces


def active() -> bool:
    """The flag is on and ``spaces`` imports: events get decorated."""
    return _spaces() is not None


def gpu_task(fn: Callable, duration: int = 60) -> Callable:
    """``spaces.GPU(duration=duration)(fn)`` where the flag is on, with ``fn``'s name, docstring and signature (what
    Gradio reads); else ``fn`` itself."""
    spaces = _spaces()
    if spaces is None:
        return fn
    wrapped = spaces.GPU(duration=duration)(fn)
    if wrapped is fn:  # spaces off on this machine (it checks SPACES_ZERO_GPU itself)
        return fn
    if inspect.isgeneratorfunction(wrapped) != inspect.isgeneratorfunction(fn):  # Gradio streams by this, per call
        raise TypeError(f"spaces.GPU changed whether {fn.__name__} is a generator")
    return functools.update_wrapper(wrapped, fn)


def wrap_model_events(demo, durations: dict[str, int] | None = None) -> int:
    """Decorate the function of every event of ``demo`` whose concurrency group is in ``durations`` (default
    ``DURATION_S``) with ``gpu_task``; how many were decorated (0 with the flag off: nothing is touched)."""
    durations = DURATION_S if durations is None else durations
    if _spaces() is None:
        return 0
    count = 0
    for block_fn in demo.fns.values():
        duration = durations.get(block_fn.concurrency_id)
        if duration is not None and block_fn.fn is not None:
            block_fn.fn = gpu_task(block_fn.fn, duration)
            count += 1
    return count


def preload(targets: Iterable[str]) -> None:
    """Load each target and its suggested draft model in this process, as a session would (same device and dtype):
    under ZeroGPU that is the app's process, whose weights every worker gets on its GPU."""
    from core.runtime.models import load_model, suggested_draft

    for name in targets:
        target = load_model(name)
        draft = suggested_draft(name)
        if draft is not None:
            load_model(draft, device=target.device, dtype=target.dtype)


__all__ = ["DURATION_S", "ENV", "active", "enabled", "gpu_task", "preload", "wrap_model_events"]
