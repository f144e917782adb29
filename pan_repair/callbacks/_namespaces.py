"""One callback body, two Lightning namespaces.

``lightning.pytorch`` and ``pytorch_lightning`` are separate packages whose Trainers reject
each other's callbacks (lightning#19252). pan_repair therefore writes every callback once, as
a *body*: a plain class holding the hooks (``setup``, ``on_train_batch_end``, ``state_dict``,
...) that imports neither namespace. :func:`concrete_callback` then makes one concrete class
per namespace, one line each::

    # pan_repair/callbacks/__init__.py  -> for `import pytorch_lightning`
    PANMonitor = concrete_callback(PANMonitorBase, "pytorch_lightning", __name__)
    # pan_repair/lightning.py           -> for `import lightning.pytorch`
    PANMonitor = concrete_callback(PANMonitorBase, "lightning.pytorch", __name__)

The result is exactly ``class PANMonitor(PANMonitorBase, <namespace>.Callback)`` (the body
first in the MRO, so its hooks override the namespace's no-ops), with ``__module__`` and
``__qualname__`` set to where it is bound, so pickling (``ddp_spawn``) works and
``state_key`` (the qualname) is the same in both namespaces: a checkpoint written under one
loads under the other.

Inside the body, ``self.lightning`` is the :class:`Namespace` of the concrete class: the
``MisconfigurationException`` to raise and the ``Callback`` base. Things both namespaces share
(loggers) are recognised by :func:`is_wandb_logger` without importing either.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["NAMESPACES", "Namespace", "namespace", "concrete_callback", "is_wandb_logger"]

NAMESPACES = ("pytorch_lightning", "lightning.pytorch")


@dataclass(frozen=True)
class Namespace:
    """What a callback body needs from one Lightning namespace."""

    name: str
    Callback: type
    MisconfigurationException: type


@lru_cache(maxsize=None)
def namespace(name: str) -> Namespace:
    """The :class:`Namespace` ``"pytorch_lightning"`` or ``"lightning.pytorch"`` (imported on first use)."""
    if name not in NAMESPACES:
        raise ValueError(f"unknown Lightning namespace {name!r}; expected one of {NAMESPACES}")
    root = importlib.import_module(name)
    exceptions = importlib.import_module(f"{name}.utilities.exceptions")
    return Namespace(name, root.Callback, exceptions.MisconfigurationException)


def concrete_callback(body: type, namespace_name: str, module: str, name: str | None = None) -> type:
    """``class <name>(body, <namespace>.Callback)`` bound in ``module``.

    Args:
        body: the namespace-free callback body (its name minus a ``Base`` suffix is the default ``name``).
        namespace_name: ``"pytorch_lightning"`` or ``"lightning.pytorch"``.
        module: the module the class is assigned in (pass ``__name__``), for pickling.
        name: the class name; must be the name it is assigned to.
    """
    ns = namespace(namespace_name)
    name = name or body.__name__.removesuffix("Base")
    cls = type(name, (body, ns.Callback), {"__module__": module, "__doc__": body.__doc__, "lightning": ns})
    cls.__qualname__ = name
    return cls


def is_wandb_logger(logger: Any) -> bool:
    """Whether ``logger`` is a ``WandbLogger`` of either namespace (or a subclass of one)."""
    return any(c.__name__ == "WandbLogger" and c.__module__.split(".")[0] in ("pytorch_lightning", "lightning")
               for c in type(logger).__mro__)
