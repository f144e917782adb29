"""Building blocks shared by the recipes: trainers that log to W&B offline and CSV, evaluation on
the embedded digits (accuracy, border accuracy gap, padding reliance, swapped placements), and the
``results.json`` record of every stage."""
from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from .data import LitDigitsCanvasDataModule
from .lit_module import BiasAwareClassifier
from .report import PanReport
from .results import RunResult

__all__ = ["Stage", "build_trainer", "evaluate", "finish_loggers"]


def build_trainer(run_dir: Path, name: str, group: str, max_epochs: int, callbacks: Sequence[Any] = (),
                  wandb: bool = True, **trainer_kwargs: Any) -> L.Trainer:
    """A CPU-friendly Trainer logging to CSV and (offline by default) W&B under ``run_dir/name``."""
    loggers: list[Any] = [CSVLogger(run_dir, name=name, version="")]
    if wandb:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(WandbLogger(name=name, group=group, project="pan_repair", save_dir=str(run_dir),
                                   offline=os.environ["WANDB_MODE"] == "offline"))
    return L.Trainer(max_epochs=max_epochs, callbacks=list(callbacks), logger=loggers,
                     enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=5,
                     default_root_dir=run_dir, **trainer_kwargs)


def finish_loggers(trainer: L.Trainer) -> None:
    """Close W&B runs (Lightning leaves them open), so the next stage starts a new run."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


@torch.no_grad()
def evaluate(module: BiasAwareClassifier, data: LitDigitsCanvasDataModule,
             swapped: LitDigitsCanvasDataModule | None = None) -> tuple[dict[str, float], list[float | None]]:
    """Validation metrics of ``module`` on ``data`` (and accuracy on ``swapped`` placements)."""
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    metrics = {k: float(v) for k, v in trainer.validate(module, data, verbose=False)[0].items()}
    curve = [None if math.isnan(a) else a for a in module.last_border_curve]
    if swapped is not None:
        result = trainer.validate(module, swapped, verbose=False)[0]
        metrics["swapped/acc"] = float(result["val/acc"])
    return metrics, curve


class Stage:
    """Times one stage of a recipe and writes its ``results.json`` under ``run_dir/name``."""

    def __init__(self, run_dir: Path, name: str, group: str, recipe: str) -> None:
        self.dir, self.name, self.group, self.recipe = Path(run_dir) / name, name, group, recipe
        self.start = time.perf_counter()

    def record(self, metrics: dict[str, float], curve: list[float | None], report: PanReport | None,
               history: list[dict[str, Any]] | None = None) -> RunResult:
        metrics = dict(metrics, **{"time/seconds": time.perf_counter() - self.start})
        if report is not None:
            metrics.update({"pan/count": float(report.count), "pan/fraction": report.fraction})
        result = RunResult(self.name, self.group, self.recipe, metrics, curve, history or [],
                           report.to_dict() if report is not None else None)
        result.save(self.dir)
        return result
