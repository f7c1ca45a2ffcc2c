"""How many bytes an object keeps alive: tensors (KV caches, drafter state) counted by their storage, once each, plus
the Python objects around them (records, lists of floats). Shared things are not counted: loaded models' weights and
buffers (one copy per process, every session reads them), ``nn.Module``s, tokenizers, classes and functions.

This is what the app's session store budgets with (``app.store``): a number of sessions says nothing about memory, a
4,000-token Gemma session holds ~50× the KV bytes of a 100-token SmolLM2 one.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable

import torch
from torch import nn

_SKIP = (nn.Module, type, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType,
         torch.Generator, torch.device, torch.dtype, str, bytes, int, float, bool, complex, type(None))
_ATOMS = (str, bytes, int, float, bool, complex, type(None))  # counted by sys.getsizeof, nothing inside


_SHARED: dict[tuple, frozenset[int]] = {}  # the loaded models (by id) → their storages' pointers, the last answer only


def shared_storages() -> frozenset[int]:
    """Data pointers of every loaded model's parameters and buffers (not a session's to pay for). Walked again only
    when the set of loaded models changes (a session is measured every 2 s while it runs)."""
    from core.runtime import models

    items = list(models._LOADED.items())
    loaded = [m for _, m in items]
    key = tuple((k, id(m.model)) for k, m in items)
    if key not in _SHARED:
        ptrs = {t.untyped_storage().data_ptr() for m in loaded for t in (*m.model.parameters(), *m.model.buffers())}
        _SHARED.clear()
        _SHARED[key] = frozenset(ptrs)
    return _SHARED[key]


def _shared_kind(obj) -> bool:
    """Objects shared by every session (never walked): models, tokenizers and the like."""
    name = type(obj).__name__
    return name == "LoadedModel" or "Tokenizer" in name


def footprint(obj, exclude: Iterable[int] | None = None, max_objects: int = 2_000_000) -> int:
    """Bytes ``obj`` keeps alive, about: tensor storages (each once; ``exclude`` holds storage pointers not to count,
    by default the loaded models') plus ``sys.getsizeof`` of the Python objects reached. Walks at most
    ``max_objects`` objects (then stops counting: a floor, not a ceiling)."""
    skip_ptrs = set(shared_storages() if exclude is None else exclude)
    seen: set[int] = set()
    stack = [obj]
    total = 0
    walked = 0
    while stack and walked < max_objects:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        walked += 1
        if isinstance(o, torch.Tensor):
            if o.is_meta:
                continue
            storage = o.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in skip_ptrs and not isinstance(o, nn.Parameter):
                skip_ptrs.add(ptr)  # a view of a storage already counted costs nothing more
                total += storage.nbytes()
            continue
        if isinstance(o, _ATOMS):
            total += sys.getsizeof(o)
            continue
        if isinstance(o, _SKIP) or _shared_kind(o):
            continue
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        else:
            d = getattr(o, "__dict__", None)
            if d is not None:
                stack.append(d)
            for cls in type(o).__mro__:
                for slot in getattr(cls, "__slots__", ()):
                    if isinstance(slot, str) and hasattr(o, slot):
                        stack.append(getattr(o, slot))
    return total


def human(n: float) -> str:
    """``n`` bytes as 12 KB / 3.4 MB / 1.2 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


__all__ = ["footprint", "human", "shared_storages"]
