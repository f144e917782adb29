"""Find and read the runs ``pan-repair compare`` compares: what each run logged, from wherever it lies.

A *run folder* is one of

* a W&B run: ``wandb/offline-run-*`` (offline) or ``wandb/run-*`` (synced), read with
  :func:`~pan_repair.wandb_offline.read_offline_run`; a ``PANMonitor`` JSON in its ``files/``;
* a Lightning log folder: ``CSVLogger``'s ``metrics.csv`` and/or a monitor's ``*_monitor.json``;
* a recipe stage: the above plus ``results.json`` (:class:`~pan_repair.results.RunResult`).

Any other folder is searched (three levels down, not into run folders, not following links)
for run folders: a W&B group or project folder, ``lightning_logs``, a recipe's output folder.
A W&B run that duplicates a recipe stage found alongside it (same group and name) is dropped.

Example::

    runs = read_runs(["logs/wandb", "logs/csv/version_0"])
    print({run.name: run.final.get("val/acc") for run in runs})
"""
from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..callbacks.monitor import read_monitor_json
from ..detect.report import PanReport
from .results import RESULTS_FILE, RunResult

__all__ = ["LoggedRun", "Point", "read_runs", "find_run_folders", "ordered_keys"]

#: keys shown first, in this order; every other logged key follows alphabetically
KEY_ORDER = ("val/acc", "swapped/acc", "val/border_gap", "val/padding_flip", "val/padding_shift",
             "pan/count", "pan/fraction", "pan/border", "pan/position", "pan/new", "pan/gone", "pan/seen")
_AXES = {"step", "epoch", "trainer/global_step"}  # x axes, not metrics
_CSV = "metrics.csv"
_MONITOR_GLOB = "*_monitor.json"
_DEPTH = 3

#: one logged value: ``(step, epoch, value)`` (``epoch`` None where not logged)
Point = tuple[int, int | None, float]


@dataclass
class LoggedRun:
    """What one run logged.

    Attributes:
        name: W&B run name, recipe stage name or ``<logger name>/<version>`` of a Lightning folder.
        path: its folder.
        source: ``"W&B"``, ``"Lightning"`` or ``"recipe"``.
        group: W&B or recipe group (``""`` if none).
        curves: every logged scalar, key -> points in logging order.
        final: each key's final value (a recipe's ``results.json`` metrics take precedence).
        scans: the ``PANMonitor``'s scan summaries (``epoch``, ``step``, ``count``, ``per_layer``...).
        report: the last full :class:`PanReport` (a recipe's final scan, else the monitor's).
        per_layer_table: PANs per layer from a W&B ``*/per_layer_table`` when nothing else has them.
        border_curve: a recipe's accuracy per distance to the border.
    """

    name: str
    path: Path
    source: str
    group: str = ""
    curves: dict[str, list[Point]] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    scans: list[dict[str, Any]] = field(default_factory=list)
    report: PanReport | None = None
    per_layer_table: dict[str, int] = field(default_factory=dict)
    border_curve: list[float | None] = field(default_factory=list)

    def completed_scans(self) -> list[dict[str, Any]]:
        """The monitor's scans that did not fail (a failed one records only its reason)."""
        return [s for s in self.scans if not s.get("failed")]

    def per_layer(self) -> dict[str, int]:
        """PANs per layer at the last scan (every scanned layer when the full report is known)."""
        if self.report is not None:
            counts = {name: len(pans) for name, pans in self.report.by_layer().items()}
            return {layer.name: counts.get(layer.name, 0) for layer in self.report.layers}
        if self.completed_scans():
            return dict(self.completed_scans()[-1].get("per_layer", {}))
        return dict(self.per_layer_table)

    def timeline(self) -> tuple[list[int], list[float]]:
        """PANs per scan against the epoch: the monitor's scans, else the logged ``pan/count``."""
        scans = self.completed_scans()
        if scans:
            return [s["epoch"] for s in scans], [s["count"] for s in scans]
        points = [(e, v) for _, e, v in self.curves.get("pan/count", []) if e is not None]
        return [e for e, _ in points], [v for _, v in points]

    def add(self, key: str, step: int, epoch: int | None, value: Any) -> None:
        """Append one logged value (non-numbers, booleans and non-finite values are skipped)."""
        if _is_scalar(value):
            self.curves.setdefault(key, []).append((int(step), epoch, float(value)))
            self.final[key] = float(value)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def ordered_keys(runs: Sequence[LoggedRun]) -> list[str]:
    """Every key any run logged: :data:`KEY_ORDER` first, then alphabetically."""
    found = {k for run in runs for k in run.final}
    return [k for k in KEY_ORDER if k in found] + sorted(found - set(KEY_ORDER))


# ----------------------------------------------------------------------------- discovery
def _is_wandb_run(folder: Path) -> bool:
    return any(folder.glob("run-*.wandb")) or (
        folder.name.startswith(("offline-run-", "run-")) and (folder / "files").is_dir())


def _is_log_folder(folder: Path) -> bool:
    return (folder / _CSV).is_file() or (folder / RESULTS_FILE).is_file() or any(folder.glob(_MONITOR_GLOB))


def _search(folder: Path, depth: int) -> list[Path]:
    if _is_wandb_run(folder) or _is_log_folder(folder):
        return [folder]
    if depth == 0:
        return []
    try:
        children = sorted(c for c in folder.iterdir() if c.is_dir() and not c.is_symlink()
                          and not c.name.startswith("."))
    except OSError as err:
        raise ValueError(f"cannot list {folder}: {err.strerror}") from None
    return [run for child in children for run in _search(child, depth - 1)]


def find_run_folders(path: str | os.PathLike) -> list[Path]:
    """The run folders ``path`` is or holds (see the module docstring), or the folder of a run's
    file (``run-*.wandb``, ``metrics.csv``, ...) ``path`` names; ``ValueError`` if none."""
    path = Path(path)
    if path.is_file() and (_is_wandb_run(path.parent) or _is_log_folder(path.parent)):
        return [path.parent]
    if not path.is_dir():
        raise ValueError(f"{path} does not exist" if not path.exists() else f"{path} is not a folder")
    found = _search(path, _DEPTH)
    if not found:
        raise ValueError(f"{path} holds no W&B run, Lightning {_CSV}, PANMonitor JSON or {RESULTS_FILE}: "
                         "nothing to compare")
    return found


# ----------------------------------------------------------------------------- readers
def _read_monitor(run: LoggedRun, folder: Path) -> None:
    files = sorted(folder.glob(_MONITOR_GLOB), key=lambda p: (p.name != "pan_monitor.json", p.name))
    if files:
        try:
            history, report, _ = read_monitor_json(files[0])
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            if isinstance(err, ValueError) and str(files[0]) in str(err):
                raise
            raise ValueError(f"{files[0]} is corrupt: {err}") from None  # valid JSON, broken content
        run.scans, run.report = history.scans, report


def _read_wandb(folder: Path) -> LoggedRun:
    from .wandb_offline import read_offline_run  # wandb's protobufs only when a W&B run is read

    logged = read_offline_run(folder)
    run = LoggedRun(logged.name or logged.run_id or folder.name, folder, "W&B", logged.group)
    tables: dict[str, Any] = {}  # the last PANs-per-layer table logged
    for row in logged.history:
        step, epoch = row.get("trainer/global_step", row["_step"]), row.get("epoch")
        epoch = epoch if isinstance(epoch, int) else None
        for key, value in row.items():
            if key.endswith("/per_layer_table") and isinstance(value, dict):
                tables = value
            elif not key.startswith("_") and key not in _AXES:
                run.add(key, step, epoch, value)
    for key, value in logged.summary.items():  # values set on the summary only
        if key not in run.final and not key.startswith("_") and key not in _AXES and _is_scalar(value):
            run.final[key] = float(value)
    _read_monitor(run, logged.files_dir)
    if tables and not run.scans:
        try:
            data = logged.read_media_json(tables)
            run.per_layer_table = {str(layer): int(n) for layer, n in data["data"]}
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{folder}: unreadable W&B table {tables.get('path')}: {err}") from None
    return run


def _number(text: str) -> float | int | None:
    if text == "":
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _read_csv(run: LoggedRun, path: Path) -> None:
    try:
        with path.open(newline="") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                values = {k: _number(v) for k, v in row.items() if k is not None and v is not None}
                step, epoch = values.get("step"), values.get("epoch")
                for key, value in values.items():
                    if key not in _AXES and value is not None:
                        run.add(key, step if isinstance(step, int) else line - 2,
                                epoch if isinstance(epoch, int) else None, value)
    except (OSError, csv.Error, ValueError) as err:
        raise ValueError(f"{path} is not a readable Lightning {_CSV}: {err}") from None


def _read_log_folder(folder: Path) -> LoggedRun:
    name = f"{folder.parent.name}/{folder.name}" if folder.name.startswith("version_") else folder.name
    run = LoggedRun(name, folder, "Lightning")
    if (folder / _CSV).is_file():
        _read_csv(run, folder / _CSV)
    _read_monitor(run, folder)
    if (folder / RESULTS_FILE).is_file():
        result = RunResult.load(folder)
        run.name, run.group, run.source, run.border_curve = result.name, result.group, "recipe", result.border_curve
        run.final.update({k: float(v) for k, v in result.metrics.items() if v is not None})
        run.scans = run.scans or list(result.history)
        try:
            run.report = result.pan_report() or run.report
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{folder / RESULTS_FILE} is corrupt: bad PAN report ({err})") from None
    return run


def read_runs(paths: Sequence[str | os.PathLike], names: Sequence[str] = ()) -> list[LoggedRun]:
    """Read every run the ``paths`` are or hold, in order; ``names`` (one per run found) rename them.

    Raises:
        ValueError: a path holding no run, an unreadable or corrupt file, a wrong number of names.
    """
    if not paths:
        raise ValueError("no runs given")
    runs = []
    for path in paths:
        found = [_read_wandb(f) if _is_wandb_run(f) else _read_log_folder(f) for f in find_run_folders(path)]
        stages = {(r.group, r.name) for r in found if r.source == "recipe"}
        runs += [r for r in found if r.source == "recipe" or (r.group, r.name) not in stages]
    _unique_names(runs)
    if names:
        if len(names) != len(runs):
            raise ValueError(f"{len(names)} --name given for {len(runs)} runs "
                             f"({', '.join(r.name for r in runs)}): give one per run, in this order")
        for run, name in zip(runs, names):
            run.name = name
        _unique_names(runs)
    return runs


def _unique_names(runs: Sequence[LoggedRun]) -> None:
    """Names are the report's labels: the second ``x`` becomes ``x (2)``, and so on."""
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
        if seen[run.name] > 1:
            run.name = f"{run.name} ({seen[run.name]})"
