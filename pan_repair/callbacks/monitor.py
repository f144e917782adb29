"""``PANMonitor``: watch PANs emerge during training (the body shared by both Lightning namespaces).

Use the concrete classes: ``pan_repair.callbacks.PANMonitor`` for ``pytorch_lightning``,
``pan_repair.lightning.PANMonitor`` for ``lightning.pytorch`` (see :mod:`._namespaces`).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..detect.report import PanReport
from ._namespaces import is_wandb_logger
from ._target import ModelTarget, _attempt
from .budget import ScanBudget
from .history import PanHistory, pan_id

__all__ = ["PANMonitorBase", "read_monitor_json", "MONITOR_FORMAT", "DEFAULT_MAX_OVERHEAD"]

#: share of the training time the default cadence lets the scans take
DEFAULT_MAX_OVERHEAD = 0.02

#: ``format`` field of the JSON file the monitor writes
MONITOR_FORMAT = "pan_repair.monitor/1"
_PREFIX = re.compile(r"^[A-Za-z0-9_.-]+$")
_MAP_SIDE = 96  # border-response images are upscaled (nearest) to at least this many pixels


class PANMonitorBase(ModelTarget):
    """Runs :func:`pan_repair.find_pans` during training and logs what it finds.

    Use the concrete class of your Lightning namespace: ``pan_repair.callbacks.PANMonitor``
    (``import pytorch_lightning``) or ``pan_repair.lightning.PANMonitor``
    (``import lightning.pytorch``).

    **Cadence.** By default after each epoch whose scan keeps the scans within ``max_overhead``
    (default 2%) of the training time (:class:`~pan_repair.callbacks.budget.ScanBudget`: the
    first epoch always; then every epoch when an epoch is 50 scans long or more, else every few
    epochs; warned once when an epoch is skipped), at the end of the epoch's validation (or, in
    epochs without validation, at ``on_train_epoch_end``). ``every_n_epochs=k`` scans after
    epochs ``k-1, 2k-1, ...`` (0-based) whatever they cost (``every_n_epochs=1``: every epoch),
    ``every_n_train_steps=n`` instead scans in ``on_train_batch_end`` when
    ``trainer.global_step`` is a multiple of ``n``; ``max_overhead`` puts either under the
    budget too. Only during ``fit``; never during the sanity check or mid-epoch validation.

    **What is scanned.** ``pl_module``, or its submodule ``model_attr`` (e.g. ``"model"``), with
    probe images of ``input_size = (C, H, W)``. If ``input_size`` is None it is taken from, in
    order: ``pl_module.example_input_array``, ``trainer.datamodule.input_size`` (or ``.dims``),
    else the first 4-D floating tensor of the first training batch (a tensor, or found in a
    tuple/list/dict batch). The scan runs in eval mode without gradients; every module's mode,
    the weights, BatchNorm statistics and the global RNGs (Python, NumPy, torch, CUDA) are left
    exactly as found: with the same seed, training with and without the monitor ends with
    identical weights.

    **Logged** (rank zero, through every logger of the Trainer, at the step Lightning uses for
    what ``self.log`` logs at the same point, so PAN rows line up with accuracy: usually
    ``trainer.global_step - 1``), with ``epoch`` and under ``prefix`` (default ``"pan"``):
    ``pan/count``, ``pan/fraction``, ``pan/border``, ``pan/position`` (PANs of each kind),
    ``pan/new`` and ``pan/gone`` (appeared / disappeared since the previous scan), ``pan/seen``
    (distinct PANs ever seen); the same for CSV, TensorBoard and W&B. With a ``WandbLogger``
    (either namespace), in the same row, if ``log_tables``: ``pan/pans`` (table of the current
    PANs: id, layer, channel, kind, sides, sign, score, border_score, position_score,
    first_seen_epoch), ``pan/per_layer`` (bar chart of PANs per layer; its data is the table
    ``pan/per_layer_table``), ``pan/depth`` (histogram of PANs over layer index), ``pan/timeline``
    (the emergence timeline: per PAN ever seen, first/last seen epoch and step, scans seen,
    present); and if ``n_maps > 0``: ``pan/maps``, images of the border-response maps (the
    padding's own effect on the channel, mean over the calibration sample; blue = lower at the
    border, red = higher) of the ``n_maps`` strongest border PANs.

    **JSON.** After every scan, rank zero writes ``<prefix>_monitor.json`` (default
    ``pan_monitor.json``; atomically) with the settings, the history (:class:`PanHistory`:
    one summary per scan with the PANs that appeared and disappeared, and first/last-seen per
    PAN) and the last full :class:`~pan_repair.detect.report.PanReport`. Folder: ``output_dir``; else
    for a ``WandbLogger`` as first logger the run's ``files`` folder (it is synced with the
    run); else ``trainer.log_dir`` (the first logger's ``log_dir``/``save_dir``, or
    ``default_root_dir`` without logger). Read it with :func:`read_monitor_json`.

    **A scan that fails** mid-run (e.g. a size where a score cannot be computed, a layer type the
    detector does not know, out of memory) never stops training: it is warned once, recorded in
    the history and the JSON as ``{"epoch", "step", "failed": true, "reason"}``, logged as
    ``pan/scan_failed = 1`` (no counts), and the next scan is tried as scheduled.

    **Checkpoints.** The history is saved in ``state_dict`` under a ``state_key`` made of the
    prefix, ``model_attr``, thresholds and probe settings; resuming continues it (first-seen
    epochs kept). The cadence is not part of the key: it can change on resume. Several monitors
    can share a Trainer if their ``prefix`` differs (checked at setup).

    **DDP.** Rank zero scans and broadcasts its report, so every rank holds the same history
    (ranks' BatchNorm running statistics differ slightly, so independent scans could differ
    near a threshold); only rank zero logs and writes. With ``ddp_spawn`` the monitor in the
    launching process is not updated: read the JSON. Sharded strategies (FSDP, DeepSpeed
    stage 3) are not supported.

    Args:
        input_size: ``(C, H, W)`` of the probe images; None to infer (see above).
        every_n_epochs: scan every this many epochs (default: each epoch the budget allows).
        every_n_train_steps: scan every this many optimizer steps instead.
        max_overhead: the scans' share of the training time (wall clock) not to exceed; default
            :data:`DEFAULT_MAX_OVERHEAD` without a cadence, none with ``every_n_epochs`` or
            ``every_n_train_steps``.
        border_threshold, position_threshold, n_patterns, n_positions: passed to
            :func:`~pan_repair.find_pans` (``n_patterns=4`` halves the probe batch of the
            detector's default; enough for monitoring).
        model_attr: attribute path of the submodule to scan (``pl_module.get_submodule``).
        log_tables: log the W&B tables and charts.
        n_maps: border-response images of the strongest border PANs per scan (0: none).
        output_dir: folder of the JSON file (default: beside the logs, see above).
        prefix: namespace of the logged keys and of the JSON file name (letters, digits, ``_.-``).

    Raises:
        ValueError: at construction, for an invalid cadence or argument.
        MisconfigurationException: before the first training step (the namespace's own class):
            at ``setup``, no 2-D convolution to scan, missing ``model_attr``, a duplicate
            ``prefix``, a channel count unlike the first convolution's; at ``on_fit_start`` (once
            the model is on its device) or, when ``input_size`` comes from the first batch, at
            that batch's start: a model that cannot run on ``input_size`` (one blank image is
            tried), a batch without images to infer it from.

    Example::

        from lightning.pytorch import Trainer
        from lightning.pytorch.loggers import WandbLogger
        from pan_repair.lightning import PANMonitor

        trainer = Trainer(max_epochs=10, callbacks=[PANMonitor()], logger=WandbLogger(offline=True))
        trainer.fit(model, datamodule)
    """

    def __init__(
        self,
        input_size: Sequence[int] | None = None,
        *,
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        max_overhead: float | None = None,
        border_threshold: float | None = None,
        position_threshold: float | None = None,
        n_patterns: int = 4,
        n_positions: int = 8,
        model_attr: str | None = None,
        log_tables: bool = True,
        n_maps: int = 4,
        output_dir: str | os.PathLike | None = None,
        prefix: str = "pan",
    ) -> None:
        self._init_target(input_size, model_attr)
        super().__init__()
        if every_n_epochs is not None and every_n_train_steps is not None:
            raise ValueError("PANMonitor: set every_n_epochs or every_n_train_steps, not both "
                             f"(got {every_n_epochs} and {every_n_train_steps})")
        for name, value in (("every_n_epochs", every_n_epochs), ("every_n_train_steps", every_n_train_steps)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"PANMonitor: {name} must be a positive integer, got {value!r}")
        if max_overhead is not None and (isinstance(max_overhead, bool) or not isinstance(max_overhead, (int, float))
                                         or not (math.isfinite(max_overhead) and max_overhead > 0)):
            raise ValueError(f"PANMonitor: max_overhead must be a share > 0 (e.g. 0.02), got {max_overhead!r}")
        if every_n_train_steps is None and every_n_epochs is None:
            every_n_epochs = 1
            max_overhead = DEFAULT_MAX_OVERHEAD if max_overhead is None else max_overhead
        if border_threshold is not None and not (math.isfinite(border_threshold) and border_threshold > 0):
            raise ValueError(f"PANMonitor: border_threshold must be > 0, got {border_threshold}")
        if position_threshold is not None and not 0 < position_threshold <= 1:
            raise ValueError(f"PANMonitor: position_threshold must be in (0, 1], got {position_threshold}")
        if n_patterns < 2 or n_positions < 2:
            raise ValueError(f"PANMonitor: n_patterns and n_positions must be >= 2, got {n_patterns}, {n_positions}")
        if n_maps < 0:
            raise ValueError(f"PANMonitor: n_maps must be >= 0, got {n_maps}")
        if not isinstance(prefix, str) or not _PREFIX.match(prefix):
            raise ValueError(f"PANMonitor: prefix must be letters, digits, '_', '.' or '-', got {prefix!r}")
        self.every_n_epochs, self.every_n_train_steps = every_n_epochs, every_n_train_steps
        self._budget = None if max_overhead is None else ScanBudget(float(max_overhead))
        self._budget_warned = False
        self.border_threshold, self.position_threshold = border_threshold, position_threshold
        self.n_patterns, self.n_positions = int(n_patterns), int(n_positions)
        self.log_tables, self.n_maps = bool(log_tables), int(n_maps)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.prefix = prefix
        self.history = PanHistory()
        #: the report of the latest scan (None before the first)
        self.last_report: PanReport | None = None
        #: where the JSON was last written (rank zero)
        self.json_path: Path | None = None
        self._log_dir: str | None = None
        self._last_epoch = -1  # last epoch scanned in epochs mode
        self._last_step = -1   # last global step scanned in steps mode
        self._log_step = 0

    @property
    def max_overhead(self) -> float | None:
        """The scans' share of the training time not to exceed (None: no budget)."""
        return None if self._budget is None else self._budget.max_overhead

    _skip_message = "a PAN scan failed; it is recorded as failed in the history and JSON"

    # ----------------------------------------------------------------------------- identity
    @property
    def state_key(self) -> str:
        return self._generate_state_key(prefix=self.prefix, model_attr=self.model_attr,
                                        border_threshold=self.border_threshold,
                                        position_threshold=self.position_threshold,
                                        n_patterns=self.n_patterns, n_positions=self.n_positions)

    @property
    def json_name(self) -> str:
        return f"{self.prefix}_monitor.json"

    def settings(self) -> dict[str, Any]:
        return {"input_size": list(self.input_size) if self.input_size else None,
                "every_n_epochs": self.every_n_epochs, "every_n_train_steps": self.every_n_train_steps,
                "max_overhead": self.max_overhead,
                "border_threshold": self.border_threshold, "position_threshold": self.position_threshold,
                "n_patterns": self.n_patterns, "n_positions": self.n_positions, "model_attr": self.model_attr,
                "prefix": self.prefix}

    # ----------------------------------------------------------------------------- set-up
    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        if stage != "fit":
            return
        self._setup_target(trainer, pl_module)
        for other in trainer.callbacks:
            if other is not self and isinstance(other, PANMonitorBase) and other.prefix == self.prefix:
                raise self._error(f"two PANMonitors log under prefix {self.prefix!r}: give each its own prefix=")
        self._log_dir = trainer.log_dir  # a collective under DDP: every rank calls setup
        if not trainer.loggers and trainer.is_global_zero:
            warnings.warn(f"PANMonitor: the Trainer has no logger; results go only to "
                          f"{Path(self.output_dir or self._log_dir) / self.json_name}", UserWarning, stacklevel=2)

    # ----------------------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: Any, pl_module: nn.Module) -> None:
        if self.input_size is not None:  # the trial forward waits for the model's device; also a restored size
            self._ensure_input_size(pl_module)

    def on_train_start(self, trainer: Any, pl_module: nn.Module) -> None:
        if self._budget is not None:
            self._budget.start()

    def on_train_batch_start(self, trainer: Any, pl_module: nn.Module, batch: Any, batch_idx: int) -> None:
        self._ensure_input_size(pl_module, batch)
        self._collect_calibration(batch)

    def on_train_batch_end(self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        n, step = self.every_n_train_steps, trainer.global_step
        if n is not None and step > 0 and step % n == 0 and step != self._last_step:
            self._last_step = step
            if self._affordable(trainer):
                self._scan(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
        # only the end-of-epoch validation of fit (not the sanity check, not mid-epoch validation)
        if trainer.sanity_checking or trainer.state.fn != "fit" or not trainer.is_last_batch:
            return
        self._epoch_scan(trainer, pl_module, epoch_end=False)

    def on_train_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
        self._epoch_scan(trainer, pl_module, epoch_end=True)  # epochs without end-of-epoch validation

    def _epoch_scan(self, trainer: Any, pl_module: nn.Module, epoch_end: bool) -> None:
        n, epoch = self.every_n_epochs, trainer.current_epoch
        if n is not None and (epoch + 1) % n == 0 and epoch != self._last_epoch:
            self._last_epoch = epoch
            if self._affordable(trainer):
                self._scan(trainer, pl_module, epoch_end)

    def _affordable(self, trainer: Any) -> bool:
        """Whether the budget (if any) allows a scan now; rank zero decides for every rank."""
        if self._budget is None:
            return True
        allowed = self._budget.allows()
        if trainer.world_size > 1:
            allowed = trainer.strategy.broadcast(allowed, src=0)
        if not allowed and not self._budget_warned and trainer.is_global_zero:
            self._budget_warned = True
            warnings.warn(f"PANMonitor: a scan takes {self._budget.last:.2f} s; scanning when the scans stay within "
                          f"{self.max_overhead:.0%} of the training time (max_overhead), not after every epoch "
                          "(every_n_epochs=1 scans after every epoch)", UserWarning, stacklevel=2)
        return allowed

    # ----------------------------------------------------------------------------- the scan
    def _scan(self, trainer: Any, pl_module: nn.Module, epoch_end: bool = False) -> None:
        # The logger step Lightning itself uses for what ``self.log`` logs at this point (as
        # LearningRateMonitor does), so the PAN rows line up with accuracy: the number of batches
        # stepped before this batch / this epoch's last batch (``global_step - 1`` without
        # gradient accumulation or several optimizers).
        stepped = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step)
        self._log_step = max(0, stepped - 1 if epoch_end else stepped)
        module = self._module(pl_module)
        if self.input_size is None:  # e.g. a step-0 checkpoint resumed without a batch seen
            return
        if self._budget is None:
            self._scan_and_log(trainer, module)
            return
        start = self._budget.clock()
        try:
            self._scan_and_log(trainer, module)
        finally:
            self._budget.charge(self._budget.clock() - start)

    def _scan_and_log(self, trainer: Any, module: nn.Module) -> None:
        with _preserved_rng():
            report, failure = self._detect(trainer, module, border_threshold=self.border_threshold,
                                           position_threshold=self.position_threshold, n_patterns=self.n_patterns,
                                           n_positions=self.n_positions)
            if failure is not None:
                self.history.record_failure(trainer.current_epoch, trainer.global_step, failure)
            else:
                summary = self.history.record(report, trainer.current_epoch, trainer.global_step)
                self.last_report = report
            if trainer.is_global_zero:
                if failure is None:
                    self._log(trainer, module, report, summary)
                else:
                    self._log_metrics(trainer, {"epoch": trainer.current_epoch, f"{self.prefix}/scan_failed": 1.0})
                self._write_json(trainer)

    def scalars(self, summary: dict[str, Any]) -> dict[str, float]:
        """The scalars logged for one scan summary."""
        p = self.prefix
        out = {"epoch": summary["epoch"], f"{p}/count": summary["count"], f"{p}/fraction": summary["fraction"],
               f"{p}/border": summary["border"], f"{p}/position": summary["position"],
               f"{p}/new": len(summary["new"]), f"{p}/gone": len(summary["gone"]),
               f"{p}/seen": len(self.history.pans)}
        out.update({f"{p}/{k}": summary[k] for k in ("output_shift", "flip_rate") if summary.get(k) is not None})
        return out

    def _log_metrics(self, trainer: Any, metrics: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(dict(metrics), step=self._log_step)

    def _log(self, trainer: Any, module: nn.Module, report: PanReport, summary: dict[str, Any]) -> None:
        scalars = self.scalars(summary)
        media = None
        for logger in trainer.loggers:
            metrics = dict(scalars)
            if is_wandb_logger(logger):
                if media is None:  # tables and images are extras: their failure stops nothing
                    media, failure = _attempt(lambda: self._wandb_media(module, report))
                    if failure is not None:
                        self._warn_failure(trainer, f"W&B tables/images not logged: {failure}")
                        media = {}
                metrics.update(media)
            logger.log_metrics(metrics, step=self._log_step)

    def _wandb_media(self, module: nn.Module, report: PanReport) -> dict[str, Any]:
        import wandb

        p, out = self.prefix, {}
        first_seen = self.history.first_seen()
        if self.log_tables:
            order = {layer.name: i for i, layer in enumerate(report.layers)}
            pans = sorted(report.pans, key=lambda x: (order.get(x.layer, 0), x.channel))
            out[f"{p}/pans"] = wandb.Table(
                columns=["id", "layer", "channel", "kind", "sides", "sign", "score", "border_score",
                         "position_score", "first_seen_epoch"],
                data=[[pan_id(x.layer, x.channel), x.layer, x.channel, x.kind, "+".join(x.sides), x.sign,
                       float(x.score), float(x.border_score), float(x.position_score),
                       first_seen[pan_id(x.layer, x.channel)]] for x in pans])
            per_layer = {name: len(v) for name, v in report.by_layer().items()}
            layer_table = wandb.Table(columns=["layer", "pans"],
                                      data=[[layer.name, per_layer.get(layer.name, 0)] for layer in report.layers])
            out[f"{p}/per_layer"] = wandb.plot.bar(layer_table, "layer", "pans", title="PANs per layer")
            counts = [per_layer.get(layer.name, 0) for layer in report.layers]
            out[f"{p}/depth"] = wandb.Histogram(np_histogram=(counts, list(range(len(counts) + 1))))
            out[f"{p}/timeline"] = wandb.Table(
                columns=["id", "layer", "channel", "kind", "first_seen_epoch", "last_seen_epoch", "first_seen_step",
                         "last_seen_step", "scans_seen", "present"],
                data=[[pid, v["layer"], v["channel"], v["kind"], v["first_seen_epoch"], v["last_seen_epoch"],
                       v["first_seen_step"], v["last_seen_step"], v["scans_seen"], v["present"]]
                      for pid, v in sorted(self.history.pans.items(),
                                           key=lambda kv: (kv[1]["first_seen_step"], kv[0]))])
        strongest = report.strongest(self.n_maps, kind="border") if self.n_maps else []
        if strongest:
            from ..detect.plotting import border_response_maps  # matplotlib only when images are wanted

            maps = border_response_maps(module, strongest, report.input_size, data=self._data())
            out[f"{p}/maps"] = [
                wandb.Image(_colour(fmap), caption=f"{pan.layer}[{pan.channel}] {'+'.join(pan.sides)} "
                                                   f"b={pan.border_score:.1f}")
                for pan, fmap in zip(strongest, maps)]
        return out

    def _write_json(self, trainer: Any) -> None:
        folder = self.output_dir
        if folder is None:
            first = trainer.loggers[0] if trainer.loggers else None
            folder = Path(first.experiment.dir) if first is not None and is_wandb_logger(first) else \
                Path(self._log_dir or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        data = {"format": MONITOR_FORMAT, "state_key": self.state_key, "settings": self.settings(),
                "history": self.history.to_dict(),
                "last_report": self.last_report.to_dict() if self.last_report is not None else None}
        path = folder / self.json_name
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{self.json_name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.json_path = path

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"format": MONITOR_FORMAT, "history": self.history.to_dict(), **self._target_state(),
                "last_epoch": self._last_epoch, "last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("format") != MONITOR_FORMAT:
            raise ValueError(f"PANMonitor: checkpoint state has format {state_dict.get('format')!r}, "
                             f"expected {MONITOR_FORMAT!r}")
        self.history = PanHistory.from_dict(state_dict["history"])
        self._load_target_state(state_dict)
        self._last_epoch, self._last_step = state_dict["last_epoch"], state_dict["last_step"]


def read_monitor_json(path: str | os.PathLike) -> tuple[PanHistory, PanReport | None, dict[str, Any]]:
    """Read a monitor's JSON file: ``(history, last_report, settings)``; ``ValueError`` if unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read PANMonitor JSON {path}: {err}") from None
    if not isinstance(data, dict) or data.get("format") != MONITOR_FORMAT:
        raise ValueError(f"{path} is not a PANMonitor JSON file (format {MONITOR_FORMAT})")
    report = data.get("last_report")
    return (PanHistory.from_dict(data["history"]), PanReport.from_dict(report) if report else None,
            data.get("settings", {}))


# --------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _preserved_rng() -> Iterator[None]:
    """Restore the Python, NumPy, torch and (initialised) CUDA RNG states afterwards.

    The detector draws from its own generator and does not touch them (tested); this is a
    guard against anything else in the logging path (W&B, matplotlib) that might.
    """
    py, np_state, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _colour(fmap: torch.Tensor) -> np.ndarray:
    """A border-response map as an RGB uint8 image (coolwarm, symmetric around 0), upscaled."""
    import matplotlib

    lim = float(fmap.abs().max()) or 1.0
    rgb = matplotlib.colormaps["coolwarm"]((fmap.numpy() / lim + 1) / 2)[..., :3]
    k = max(1, math.ceil(_MAP_SIDE / max(1, min(fmap.shape))))
    return (rgb.repeat(k, 0).repeat(k, 1) * 255).astype(np.uint8)

