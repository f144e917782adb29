"""Inspecting a model without changing it: eval mode restored exactly, where its tensors live,
structural copies that never deep-copy a live tensor, and the reparametrisations a layer may
carry (``torch.nn.utils.prune`` masks, ``weight_norm``, ``spectral_norm``, parametrizations)."""
from __future__ import annotations

import contextlib
import copy
import types
from collections import OrderedDict
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["eval_mode", "device_dtype", "structural_copy", "reparametrization", "plain_type",
           "carry_reparametrizations"]

_CONTAINERS = (dict, OrderedDict, list, set)
_HOOK_TABLES = ("_forward_pre_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks")


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
    if share:
        out = _shared_tree(model)
    else:
        memo: dict[int, object] = {}
        for t in _tensors(model):
            if id(t) not in memo:
                memo[id(t)] = (nn.Parameter(t.detach().clone(), requires_grad=t.requires_grad)
                               if isinstance(t, nn.Parameter) else t.detach().clone())
        out = copy.deepcopy(model, memo)
    for module in out.modules():
        if parametrize.is_parametrized(module):
            _own_class(module)
    return out


def _shared_tree(model: nn.Module) -> nn.Module:
    """A new module tree over ``model``'s tensors: every module a new object of its class whose
    attributes are the original's, its containers (submodules, parameters, buffers, hook tables,
    lists, sets) copied one level and its submodules copied likewise; hooks bound to a copied
    module rebound to its copy. Other objects (hook objects, what a container holds but modules)
    are shared: replacing or adding modules, hooks and entries in the copy leaves ``model`` as it
    was. 2-3 ms for a 300-module timm model, where ``copy.deepcopy`` walking every object took
    15-30 ms."""
    copies: dict[int, nn.Module] = {}

    def tree(module: nn.Module) -> nn.Module:
        if id(module) in copies:
            return copies[id(module)]
        new = module.__class__.__new__(module.__class__)
        copies[id(module)] = new
        state = {}
        for key, value in module.__dict__.items():
            if key == "_modules":
                value = {name: None if child is None else tree(child) for name, child in value.items()}
            elif type(value) in _CONTAINERS:
                value = value.copy()  # dict, OrderedDict, list, set: their own type
            elif isinstance(value, (dict, list, set)):
                value = copy.copy(value)
            state[key] = value
        new.__dict__.update(state)
        return new

    out = tree(model)
    for new in copies.values():
        for table, hooks in vars(new).items():
            if table.endswith("hooks") and isinstance(hooks, dict):
                for key, hook in hooks.items():
                    owner = getattr(hook, "__self__", None)
                    if isinstance(hook, types.MethodType) and id(owner) in copies:
                        hooks[key] = types.MethodType(hook.__func__, copies[id(owner)])
    return out


def _own_class(module: nn.Module) -> None:
    """Give a parametrized copy a class of its own: ``copy.deepcopy`` keeps the original's, whose
    properties ``remove_parametrizations`` would then delete from both."""
    cls = type(module)
    body = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, body)


def _is_reparametrization_hook(hook: object) -> bool:
    """Whether a hook is (a subclass of) one of ``torch.nn.utils`` (pruning, ``weight_norm``,
    ``spectral_norm``)."""
    hook = getattr(hook, "hook", hook)  # load_state_dict pre-hooks come wrapped
    return any(c.__module__.startswith("torch.nn.utils.") for c in type(hook).__mro__)


def reparametrization(module: nn.Module, name: str = "weight") -> str | None:
    """How ``module.<name>`` is computed rather than stored (None: a plain parameter or absent):
    ``"a parametrization"`` (``torch.nn.utils.parametrize``, e.g. the new ``weight_norm``),
    ``"pruning masks"``, ``"weight_norm"`` or ``"spectral_norm"`` (the hook-based ones)."""
    if parametrize.is_parametrized(module, name):
        return "a parametrization"
    for hook in module._forward_pre_hooks.values():
        if getattr(hook, "name", getattr(hook, "_tensor_name", None)) == name and _is_reparametrization_hook(hook):
            kind = type(hook).__name__
            return {"WeightNorm": "weight_norm", "SpectralNorm": "spectral_norm"}.get(kind, "pruning masks")
    return None


def plain_type(module: nn.Module) -> type:
    """``module``'s class, or the class it had before ``torch.nn.utils.parametrize`` subclassed it."""
    return type(module).__bases__[0] if parametrize.is_parametrized(module) else type(module)


def carry_reparametrizations(new: nn.Module, old: nn.Module) -> nn.Module:
    """Give ``new`` (a freshly built replacement of ``old``) ``old``'s tensors and the machinery
    that computes its reparametrised ones: parameters (the same tensors; ``new``'s own that
    ``old`` lacks, e.g. a ``weight`` computed in ``old``, are dropped), buffers, computed tensor
    attributes, the ``torch.nn.utils`` hooks (pruning, ``weight_norm``, ``spectral_norm``) and
    parametrizations. Other hooks are not carried."""
    for name in [n for n in new._parameters if n not in old._parameters]:
        del new._parameters[name]
    for name, param in old._parameters.items():
        new.register_parameter(name, param)
    for name, buf in old._buffers.items():
        new.register_buffer(name, buf, persistent=name not in old._non_persistent_buffers_set)
    for name, value in vars(old).items():
        if isinstance(value, torch.Tensor) and name not in vars(new):
            vars(new)[name] = value
    for table in _HOOK_TABLES:
        getattr(new, table).update((k, h) for k, h in getattr(old, table).items() if _is_reparametrization_hook(h))
    if parametrize.is_parametrized(old):
        parametrize._inject_new_class(new)
        new.parametrizations = old.parametrizations
        for name in old.parametrizations:
            parametrize._inject_property(new, name)
    return new
