"""Where the parts of a model compute, when accelerate has spread them over several devices (``device_map`` loading,
``core.runtime.sharded``).

A dispatched model keeps each block's weights on its own device (or offloaded: on the ``meta`` device, loaded to the
execution device at every call) and gives every block an ``AlignDevicesHook`` that moves the block's inputs to its
execution device; the top module's hook moves the outputs back to the device of the inputs. So
``next(model.parameters()).device`` no longer says where anything runs: ask ``module_device`` (a block's execution
device) or ``input_device`` (where token ids go: the input embedding's). Code that calls blocks directly (layer
slicing, sublayers, tuned copies of layers) moves its tensors to ``module_device`` of the block it calls; the hooks
make that a no-op where they move them anyway. On a model on one device all of this reads the parameters' device.

A shallow copy of a hooked module (``truncated_view``, ``with_head``) must not keep the original's hooked
``forward``, which is bound to the original and would run the original's layers: ``shallow_copy`` binds the copy's
own.
"""

from __future__ import annotations

import contextlib
import copy
import functools

import torch
from torch import nn


def _as_device(value) -> torch.device:
    if isinstance(value, int):  # accelerate's device maps name GPUs by index
        return torch.device("cuda", value)
    return torch.device(value)


def hook_device(module: nn.Module) -> torch.device | None:
    """The execution device of ``module``'s own accelerate hook (also inside a ``SequentialHook``), or None."""
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
        device = getattr(h, "execution_device", None)
        if device is not None:
            return _as_device(device)
    return None


def module_device(module: nn.Module) -> torch.device:
    """Where ``module`` computes: the execution device of the first hook in it (accelerate dispatch), else the device
    of its first tensor that is not on ``meta``, else the CPU."""
    for sub in module.modules():
        device = hook_device(sub)
        if device is not None:
            return device
        for tensor in [*sub.parameters(recurse=False), *sub.buffers(recurse=False)]:
            if tensor.device.type != "meta":
                return tensor.device
    return torch.device("cpu")


def input_device(model: nn.Module) -> torch.device:
    """Where a causal LM's token ids go: its input embedding's execution device."""
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if get is not None else None
    return module_device(embedding if embedding is not None else model)


def is_dispatched(model: nn.Module) -> bool:
    """True for a model accelerate has spread or offloaded (hooks on its blocks)."""
    return any(hasattr(m, "_hf_hook") for m in model.modules())


def offloaded(model: nn.Module) -> list[str]:
    """Names of the parameters kept off their execution device (cpu or disk offload: they sit on ``meta``)."""
    return [name for name, p in model.named_parameters() if p.device.type == "meta"]


def to_device(value, device: torch.device):
    """``value`` (a tensor, a tuple / list / dict of them, or None) moved to ``device``; other values unchanged."""
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------- copies of hooked modules
def _hooked_forward(module: nn.Module, *args, **kwargs):
    """accelerate's hooked forward (``add_hook_to_module``), for a module whose ``_old_forward`` is its own."""
    hook = module._hf_hook
    args, kwargs = hook.pre_forward(module, *args, **kwargs)
    with torch.no_grad() if hook.no_grad else contextlib.nullcontext():
        output = module._old_forward(*args, **kwargs)
    return hook.post_forward(module, output)


def shallow_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` that shares its parameters and submodules, with a ``_modules`` dict of its own (so a
    submodule can be swapped on the copy alone). A hooked forward is rebound to the copy: the original's is bound to
    the original module."""
    view = copy.copy(module)
    view._modules = dict(view._modules)
    if "_old_forward" in vars(view) and hasattr(view, "_hf_hook"):
        cls_forward = type(view).forward.__get__(view, type(view))
        view._old_forward = cls_forward
        view.forward = functools.update_wrapper(functools.partial(_hooked_forward, view), cls_forward)
    return view


def plain_deepcopy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` without accelerate hooks, every weight its own and resident: a tuned copy of target
    layers (S2D's exits, Falcon's and Hydra++'s layer, FastDraft's initial layers). Weights a device map offloads
    (cpu/disk: ``meta`` in the module) are read from the offload storage onto their execution device."""
    # the hooks are not copied: they share a map of tied weights (the embedding) that a deep copy would duplicate
    memo = {id(m._hf_hook): None for m in module.modules() if hasattr(m, "_hf_hook")}
    out = copy.deepcopy(module, memo)
    for original, twin in zip(module.modules(), out.modules()):
        _materialize(original, twin)
        if "_old_forward" in vars(twin):
            del twin.__dict__["_old_forward"], twin.__dict__["forward"]  # the class's own forward again
        twin.__dict__.pop("_hf_hook", None)
    return out


def _materialize(original: nn.Module, twin: nn.Module) -> None:
    """Give ``twin`` (a copy of ``original``) real tensors for the direct weights ``original``'s offload hook keeps in
    its storage (they are on ``meta`` in both)."""
    hook = getattr(original, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
        if not getattr(h, "offload", False) or getattr(h, "weights_map", None) is None:
            continue
        device = _as_device(h.execution_device)
        for name, param in list(twin.named_parameters(recurse=False)):
            if param.device.type == "meta":
                value = h.weights_map[name].to(device=device, dtype=param.dtype).clone()
                twin._parameters[name] = nn.Parameter(value, requires_grad=param.requires_grad)
        for name, buffer in list(twin.named_buffers(recurse=False)):
            if buffer.device.type == "meta" and name in h.weights_map:
                twin._buffers[name] = h.weights_map[name].to(device=device, dtype=buffer.dtype).clone()
