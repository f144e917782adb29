"""What every pan_repair callback needs to find its model and its probe size.

* the module to work on: ``pl_module`` or its submodule ``model_attr``;
* ``input_size = (C, H, W)`` of the probe images: given, else from
  ``pl_module.example_input_array``, ``trainer.datamodule.input_size`` (or ``.dims``), else the
  first 4-D floating tensor of the first training batch;
* a trial forward of one blank image, so that a model that cannot run on ``input_size`` fails
  before training, with a message, never mid-epoch;
* the calibration sample: the first :data:`CALIBRATION_IMAGES` images of the first training
  batches, kept (on the CPU, in the callback's checkpoint state) and passed to every scan of the
  run as ``find_pans(data=...)``, so that PANs are measured under the model's own input
  distribution; data-free probes only before any batch was seen, or for another ``input_size``;
* detection on rank zero, broadcast to all ranks; an epoch schedule like ``ModelPruning``'s;
* containment: what can be checked before the first step raises at setup; a scan (or penalty)
  that fails later is skipped on every rank alike, warned once per callback with its reason,
  and training goes on.
"""
from __future__ import annotations

import atexit
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from ..detect.detector import find_pans
from ..layers.padding import conv_layers
from ..layers.module_state import eval_mode
from ..detect.report import PanReport

__all__ = ["CALIBRATION_IMAGES", "ModelTarget", "images_in", "input_size_from", "datamodule_input_size", "check_input_size", "EpochSchedule",
           "failure_reason"]

T = TypeVar("T")


def failure_reason(err: BaseException) -> str:
    """One line: the exception's type and the first line of its message."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _attempt(compute: Callable[[], T]) -> tuple[T | None, str | None]:
    """``(compute(), None)``, or ``(None, reason)`` with the :func:`failure_reason` of what it
    raised (CUDA memory released after an out-of-memory error)."""
    try:
        return compute(), None
    except Exception as err:  # noqa: BLE001 - any failure mid-run is contained, never fatal
        if isinstance(err, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        return None, failure_reason(err)


_group_exit: list[bool] = []  # the exit handler is registered (once per process)


def destroy_group_at_exit() -> None:
    """Once per process: destroy ``torch.distributed``'s default process group at interpreter exit,
    while Python is still whole. Lightning does so for NCCL only; a gloo group (DDP on CPUs) left
    to interpreter finalisation can abort its process ("terminate called without an active
    exception", pytorch/pytorch#179291), which ``ddp_spawn`` reports as a failed ``fit``."""
    if not _group_exit:
        _group_exit.append(True)
        atexit.register(_destroy_group)


def _destroy_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


#: images of the training data every scan of a run is measured on
CALIBRATION_IMAGES = 16


def images_in(obj: Any) -> torch.Tensor | None:
    """The first 4-D floating tensor in a tensor / tuple / list / dict (None if none)."""
    if isinstance(obj, torch.Tensor):
        return obj if obj.ndim == 4 and obj.is_floating_point() else None
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (tuple, list)) else ()
    for item in items:
        found = images_in(item)
        if found is not None:
            return found
    return None


def input_size_from(obj: Any) -> tuple[int, int, int] | None:
    """(C, H, W) of :func:`images_in` ``obj`` (None if none)."""
    images = images_in(obj)
    return None if images is None else tuple(int(v) for v in images.shape[1:])


def datamodule_input_size(datamodule: Any) -> tuple[int, int, int] | None:
    """``datamodule.input_size`` (or ``.dims``) as (C, H, W), if it has one."""
    for attr in ("input_size", "dims"):
        value = getattr(datamodule, attr, None)
        if value is not None and len(value) == 3:
            return tuple(int(v) for v in value)
    return None


def check_input_size(module: nn.Module, input_size: tuple[int, int, int], run: bool = True) -> str | None:
    """Why the detector cannot run ``module`` on ``input_size`` (None if it can): the channel
    count against the first convolution, then (``run``) one forward of a blank image in eval
    mode without gradients (modes restored; no RNG is drawn in eval mode)."""
    name, first = next(conv_layers(module))
    if first.in_channels != input_size[0]:
        return (f"input_size {input_size} has {input_size[0]} channels but the first convolution "
                f"'{name}' expects {first.in_channels}")
    if not run:
        return None
    param = next(module.parameters(), None)
    kwargs = {"device": param.device, "dtype": param.dtype} if param is not None and param.is_floating_point() else {}
    with eval_mode(module), torch.no_grad():
        try:
            module(torch.zeros(1, *input_size, **kwargs))
        except Exception as err:  # noqa: BLE001 - any failure means a scan would fail mid-training
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
            return f"the model cannot run on input_size {input_size}: {first_line}"
    return None


def _valid_input_size(input_size: Sequence[int] | None, owner: str) -> tuple[int, int, int] | None:
    if input_size is None:
        return None
    size = tuple(input_size)
    if len(size) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise ValueError(f"{owner}: input_size must be (channels, height, width) of positive ints, got {size}")
    return size


class ModelTarget:
    """Mixin of a callback body: ``model_attr``, ``input_size`` and the checks around them.

    The concrete callback sets ``lightning`` (its namespace); ``_error`` builds that namespace's
    ``MisconfigurationException`` prefixed with the callback's name.
    """

    lightning = None

    def _init_target(self, input_size: Sequence[int] | None, model_attr: str | None) -> None:
        if self.lightning is None:
            name = type(self).__name__.removesuffix("Base")
            raise TypeError(f"{type(self).__name__} is a body: use pan_repair.callbacks.{name} (pytorch_lightning) "
                            f"or pan_repair.lightning.{name} (lightning.pytorch)")
        self.input_size: tuple[int, int, int] | None = _valid_input_size(input_size, self._name)
        self.model_attr = model_attr
        self._checked = False
        #: the run's calibration sample (N, C, H, W) on the CPU, None before the first batch
        self.calibration: torch.Tensor | None = None
        self._warned = False  # a failure mid-run is warned once

    @property
    def _name(self) -> str:
        return type(self).__name__.removesuffix("Base")

    def _error(self, message: str) -> Exception:
        return self.lightning.MisconfigurationException(f"{self._name}: {message}")

    def _module(self, pl_module: nn.Module) -> nn.Module:
        if self.model_attr is None:
            return pl_module
        try:
            return pl_module.get_submodule(self.model_attr)
        except AttributeError:
            raise self._error(f"{type(pl_module).__name__} has no submodule model_attr={self.model_attr!r}") from None

    def _setup_target(self, trainer: Any, pl_module: nn.Module) -> nn.Module:
        """At ``setup``: the module (it must hold a 2-D convolution) and ``input_size`` if known; in a
        distributed run, the process group destroyed at exit (:func:`destroy_group_at_exit`)."""
        if trainer.world_size > 1:
            destroy_group_at_exit()
        module = self._module(pl_module)
        if next(conv_layers(module), None) is None:
            where = f"{type(pl_module).__name__}.{self.model_attr}" if self.model_attr else type(pl_module).__name__
            raise self._error(f"{where} has no 2-D convolution (nn.Conv2d)")
        if self.input_size is None:
            self.input_size = input_size_from(getattr(pl_module, "example_input_array", None)) \
                or datamodule_input_size(getattr(trainer, "datamodule", None))
        if self.input_size is not None:
            self._raise_if(check_input_size(module, self.input_size, run=False))
        return module

    def _ensure_input_size(self, pl_module: nn.Module, batch: Any = None) -> tuple[int, int, int]:
        """``input_size`` (inferred from ``batch`` if still unknown), checked once by a trial forward."""
        if self.input_size is None:
            self.input_size = input_size_from(batch)
            if self.input_size is None:
                raise self._error("cannot infer input_size: the training batch holds no 4-D floating tensor; "
                                  "pass input_size=(C, H, W)")
        if not self._checked:
            self._raise_if(check_input_size(self._module(pl_module), self.input_size))
            self._checked = True
        return self.input_size

    def _collect_calibration(self, batch: Any) -> None:
        """Keep images of ``batch`` until the sample holds :data:`CALIBRATION_IMAGES` (no RNG drawn)."""
        have = 0 if self.calibration is None else len(self.calibration)
        images = images_in(batch)
        if have >= CALIBRATION_IMAGES or images is None:
            return
        if self.calibration is not None and images.shape[1:] != self.calibration.shape[1:]:
            return
        take = images[:CALIBRATION_IMAGES - have].detach().to("cpu", copy=True)
        self.calibration = take if self.calibration is None else torch.cat([self.calibration, take])

    def _data(self) -> torch.Tensor | None:
        """The calibration sample, if it fits ``input_size``."""
        if self.calibration is None or tuple(self.calibration.shape[1:]) != tuple(self.input_size or ()):
            return None
        return self.calibration

    def _target_state(self) -> dict[str, Any]:
        """What every body saves: ``input_size`` and the calibration sample."""
        return {"input_size": list(self.input_size) if self.input_size else None, "calibration": self.calibration}

    def _load_target_state(self, state_dict: dict[str, Any]) -> None:
        if self.input_size is None and state_dict.get("input_size"):
            self.input_size = tuple(state_dict["input_size"])
        if state_dict.get("calibration") is not None:
            self.calibration = state_dict["calibration"]

    def _raise_if(self, problem: str | None) -> None:
        if problem is not None:
            raise self._error(problem)

    def _detect(self, trainer: Any, module: nn.Module, **find_kwargs: Any) -> tuple[PanReport | None, str | None]:
        """``(report, None)``: :func:`~pan_repair.find_pans` on rank zero, broadcast to every
        rank, so that decisions taken from it (masks, layers to switch) are identical on all ranks
        (ranks' BatchNorm running statistics differ slightly, so independent scans could differ
        near a threshold). ``(None, reason)`` if the scan raised (see :meth:`_contained`)."""
        return self._contained(trainer, lambda: find_pans(module, self.input_size, data=self._data(), **find_kwargs), on_rank_zero=True)

    def _contained(self, trainer: Any, compute: Callable[[], T],
                   on_rank_zero: bool = False) -> tuple[T | None, str | None]:
        """``(compute(), None)`` (run on rank zero and broadcast if ``on_rank_zero``, else on every
        rank); if it raised (on any rank), ``(None, reason)`` on every rank alike, warned once
        per callback: a failure mid-run never stops training."""
        if on_rank_zero:
            outcome = _attempt(compute) if trainer.is_global_zero else (None, None)
            if trainer.world_size > 1:
                outcome = trainer.strategy.broadcast(outcome, src=0)
        else:
            outcome = _attempt(compute)
            failed_anywhere = trainer.world_size > 1 and \
                trainer.strategy.reduce_boolean_decision(outcome[1] is not None, all=False)  # a collective
            if failed_anywhere and outcome[1] is None:
                outcome = (None, "failed on another rank")
        if outcome[1] is not None:
            self._warn_failure(trainer, outcome[1])
        return outcome

    def _warn_failure(self, trainer: Any, reason: str) -> None:
        """Warn (rank zero, once per callback) that a computation failed mid-run and was skipped."""
        if trainer.is_global_zero and not self._warned:
            self._warned = True
            warnings.warn(f"{self._name}: {self._skip_message} at epoch {trainer.current_epoch}, step "
                          f"{trainer.global_step} (warned once; training goes on): {reason}", UserWarning,
                          stacklevel=2)

    #: what a failed computation means for this callback (its warning's wording)
    _skip_message = "the PAN scan failed; this scan is skipped"


class EpochSchedule:
    """``epoch -> bool`` from ``True`` (every epoch), ``False`` (never), an int ``n`` (every n-th
    epoch: 0, n, 2n, ...), a sequence of epochs, or a callable. Picklable (``ddp_spawn``) when
    the callable is."""

    def __init__(self, schedule: bool | int | Sequence[int] | Callable[[int], bool], owner: str) -> None:
        if isinstance(schedule, int) and not isinstance(schedule, bool) and schedule <= 0:
            raise ValueError(f"{owner}: an epoch interval must be a positive integer, got {schedule}")
        if not isinstance(schedule, (bool, int)) and not callable(schedule):
            schedule = list(schedule)
            if not all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in schedule):
                raise ValueError(f"{owner}: epochs must be integers >= 0, got {schedule}")
            schedule = frozenset(schedule)
        self.schedule = schedule

    def __call__(self, epoch: int) -> bool:
        s = self.schedule
        if isinstance(s, bool):
            return s
        if isinstance(s, int):
            return epoch % s == 0
        return epoch in s if isinstance(s, frozenset) else bool(s(epoch))
