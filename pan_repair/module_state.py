"""Inspecting a model without changing it: eval mode restored exactly, where its tensors live, and
structural copies that never deep-copy a live tensor."""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["eval_mode", "device_dtype", "structural_copy"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` for the duration; every submodule's own train/eval flag restored after,
    also on error (a model may mix modes, e.g. frozen BatchNorms in a training model)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter (CPU, float32 if it has none)."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return device, dtype


def _tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    """Every tensor a module tree holds: parameters, buffers and plain tensor attributes (e.g. the
    computed ``weight`` of ``torch.nn.utils.prune`` or ``spectral_norm``)."""
    for module in model.modules():
        yield from (t for t in module._parameters.values() if t is not None)
        yield from (t for t in module._buffers.values() if t is not None)
        yield from (v for v in vars(module).values() if isinstance(v, torch.Tensor))


def structural_copy(model: nn.Module, share: bool = True) -> nn.Module:
    """A copy of ``model``'s module tree (modules, hooks, pruning and parametrizations) whose
    tensors are ``model``'s own (``share=True``: a twin that always has the current weights,
    costs no memory and never copies a tensor) or detached clones (``share=False``: an
    independent model; parameters keep ``requires_grad``).

    Unlike ``copy.deepcopy`` this works on a model mid-training: a tensor computed in forward
    (a non-leaf ``weight`` under ``torch.nn.utils.prune``, ``weight_norm``, ``spectral_norm``)
    is not deep-copied. Replacing submodules of the copy (e.g. :func:`~pan_repair.convert_padding`)
    leaves ``model`` untouched.

    Example:
        >>> from torch import nn
        >>> conv = nn.Conv2d(1, 2, 3)
        >>> twin = structural_copy(conv)
        >>> twin is conv, twin.weight is conv.weight
        (False, True)
    """
    memo: dict[int, object] = {}
    for t in _tensors(model):
        if id(t) in memo:
            continue
        if share:
            memo[id(t)] = t
        elif isinstance(t, nn.Parameter):
            memo[id(t)] = nn.Parameter(t.detach().clone(), requires_grad=t.requires_grad)
        else:
            memo[id(t)] = t.detach().clone()
    return copy.deepcopy(model, memo)
