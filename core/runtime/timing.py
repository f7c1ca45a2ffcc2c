"""Wall-clock timing that waits for the device: CUDA kernels run asynchronously, so a timer must synchronise before
it reads the clock (on the CPU this is a no-op)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the work queued on ``device`` (CUDA only); on every GPU when there are several (a device map spreads
    a model's layers, and ``device`` names only the first)."""
    if device is not None and torch.device(device).type == "cuda":
        for index in range(torch.cuda.device_count()) if torch.cuda.device_count() > 1 else [device]:
            torch.cuda.synchronize(index)


def elapsed(t0: float, device: torch.device | str | None) -> float:
    """Seconds since ``t0`` (a ``time.perf_counter()`` value), after the device has finished."""
    synchronize(device)
    return time.perf_counter() - t0


def timed_ms(fn: Callable[[], object], device: torch.device | str | None, after: Callable[[], object] | None = None
             ) -> float:
    """Milliseconds of one call of ``fn`` (device synchronised before and after); ``after`` then runs untimed."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    ms = elapsed(t0, device) * 1e3
    if after is not None:
        after()
    return ms
