"""Building blocks shared by the recipes: trainers that log to W&B offline and CSV, evaluation on
the embedded digits (accuracy, border accuracy gap, padding reliance, swapped placements), and the
``results.json`` record of every stage."""
from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from ..callbacks._target import CALIBRATION_IMAGES
from ..callbacks.monitor import PANMonitorBase
from ..lightning import PANMonitor
from .compare import build_report, what_happened
from ..detect.detector import find_pans
from ..detect.probes import calibration_images
from ..data.digits import SWAPPED, LitDigitsCanvasDataModule
from ..data.image_folder import ImageFolderDataModule
from .lit_module import BiasAwareClassifier
from ..runs.logged_runs import read_runs
from ..models.model_spec import load_weights
from ..models.small_cnn import SmallCNN
from ..repair.pruning import clean_state_dict
from ..detect.report import PanReport
from ..runs.results import RESULTS_FILE, RunResult

#: weights of a stage's model, beside its results.json
MODEL_FILE = "model.pt"

__all__ = ["MODEL_FILE", "DigitsSetup", "Experiment", "Stage", "build_trainer", "digits_data", "evaluate",
           "finish_loggers", "fit_stage"]


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
def evaluate(module: BiasAwareClassifier, data: L.LightningDataModule,
             swapped: LitDigitsCanvasDataModule | None = None) -> tuple[dict[str, float], list[float | None]]:
    """Validation metrics of ``module`` on ``data`` (and accuracy on ``swapped`` placements)."""
    # inference_mode=False: metric states reset here must stay usable when training resumes
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, inference_mode=False)
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


def digits_data(placement: str, eval_placement: str, classes: Sequence[int] | None, batch_size: int,
                seed: int, canvas: int = 32, scale: int = 2) -> tuple[LitDigitsCanvasDataModule, LitDigitsCanvasDataModule]:
    """Training data (and validation on ``eval_placement``) plus the same validation digits with
    the placement shortcut swapped (``SWAPPED[placement]``; the halves swapped when ``placement``
    plants no shortcut), for the swapped-placement accuracy."""
    kwargs = dict(batch_size=batch_size, canvas=canvas, scale=scale, classes=classes, seed=seed)
    data = LitDigitsCanvasDataModule(train_placement=placement, eval_placement=eval_placement, **kwargs)
    swapped = LitDigitsCanvasDataModule(train_placement=placement, eval_placement=SWAPPED.get(placement, "swapped"),
                                        **kwargs)
    return data, swapped


def fit_stage(module: BiasAwareClassifier, data: L.LightningDataModule, swapped: LitDigitsCanvasDataModule | None,
              stage: Stage, epochs: int, callbacks: Sequence[Any] = (), wandb: bool = True,
              report_fn=None) -> RunResult:
    """Train ``module`` for ``epochs`` (0: evaluate only), evaluate, record ``stage`` (with the
    PAN history of a ``PANMonitor`` among ``callbacks``, and ``report_fn(model)`` as final report)."""
    trainer = build_trainer(stage.dir.parent, stage.name, stage.group, max(epochs, 1), callbacks, wandb)
    try:
        if epochs > 0:
            trainer.fit(module, data)
        metrics, curve = evaluate(module, data, swapped)
        for logger in trainer.loggers:
            logger.log_metrics({f"final/{k}": v for k, v in metrics.items()}, step=trainer.global_step)
    finally:
        finish_loggers(trainer)
    stage.dir.mkdir(parents=True, exist_ok=True)
    tmp = stage.dir / f"{MODEL_FILE}.tmp"
    torch.save(clean_state_dict(module.model), tmp)  # clean weights: load into the unmodified model
    tmp.replace(stage.dir / MODEL_FILE)  # atomic: never a half-written model.pt
    report = report_fn(module.model) if report_fn is not None else None
    history = next((cb.history.scans for cb in callbacks if isinstance(cb, PANMonitorBase)), None)
    return stage.record(metrics, curve, report, history)


@dataclass(frozen=True)
class DigitsSetup:
    """The digits experiment the recipes share (YAML key ``setup``, options ``--setup.*``).

    Args:
        data: ``digits`` (the embedded digits on a canvas) or the path of your own image folder
            (one sub-folder per class; :class:`~pan_repair.data.image_folder.ImageFolderDataModule`,
            80/20 split by ``seed``; no placements, so no swapped accuracy or border gap).
        image_size: side (px) images of an image folder are resized to.
        placement: training placement of the digits: random, center, biased (class tied to the
            top/bottom half: a placement shortcut), border (class tied to touching an edge vs the
            centre) or their swapped forms; the swapped accuracy tests the opposite tie.
        eval_placement: validation placement.
        classes: digits to use (default all ten).
        width: channels per conv of the SmallCNN.
        depth: conv blocks.
        strides: indices of the conv blocks that downsample by 2.
        batch_size: batch size.
        lr: AdamW learning rate (cosine schedule).
        seed: seed of data, weights and training.
        wandb: log every stage to W&B (offline unless WANDB_MODE says otherwise).
        group: W&B group of the stages (default ``<recipe>-seed<seed>``); recipes that share a
            group compare in one dashboard.
    """

    data: str = "digits"
    image_size: int = 32
    placement: str = "biased"
    eval_placement: str = "random"
    classes: tuple[int, ...] | None = None
    width: int = 24
    depth: int = 5
    strides: tuple[int, ...] = (2,)
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    wandb: bool = True
    group: str | None = None


class Experiment:
    """The shared frame of the digits recipes: data (training placement, validation placement and
    the swapped placements), the model, the probe size, one W&B group, stages under ``out_dir``
    and the closing comparison. The W&B group is ``<recipe>-seed<seed>``; ``thresholds``
    (``border_threshold``, ``position_threshold``) are those of every scan and monitor."""

    def __init__(self, recipe: str, out_dir: str | Path, setup: DigitsSetup, **thresholds: float) -> None:
        L.seed_everything(setup.seed, verbose=False)
        self.recipe, self.setup, self.root = recipe, setup, Path(out_dir)
        self.group = setup.group or f"{recipe}-seed{setup.seed}"
        if setup.data == "digits":
            self.data, self.swapped = digits_data(setup.placement, setup.eval_placement, setup.classes,
                                                  setup.batch_size, setup.seed)
            self.n_classes = len(setup.classes) if setup.classes else 10
            self.input_size = (1, 32, 32)
        else:
            self.data = ImageFolderDataModule(setup.data, setup.image_size, setup.batch_size, seed=setup.seed)
            self.swapped = None
            self.n_classes, self.input_size = self.data.num_classes, self.data.input_size
        train = self.data.dataset("train") if setup.data == "digits" else self.data.splits["train"]
        #: the training images every scan of the experiment is measured on (evenly spaced items)
        self.calibration = calibration_images(train, CALIBRATION_IMAGES)
        self.thresholds = thresholds
        self.runs: list[RunResult] = []
        #: run directories of other recipes whose weights :meth:`module` loaded
        self.earlier: list[Path] = []

    def module(self, model: torch.nn.Module | None = None, lr: float | None = None,
               weights: str | Path | None = None) -> BiasAwareClassifier:
        """A classifier around ``model`` (default: a fresh SmallCNN, seeded by ``setup.seed``, with
        ``weights`` loaded if given: a state-dict file or a run directory holding ``model.pt``)."""
        s = self.setup
        if model is None:
            L.seed_everything(s.seed, verbose=False)
            model = SmallCNN(self.input_size[0], self.n_classes, width=s.width, depth=s.depth, strides=s.strides)
            if weights is not None:
                path = Path(weights)
                load_weights(model, path / MODEL_FILE if path.is_dir() else path, "the recipe's SmallCNN")
                if (path / RESULTS_FILE).is_file():  # a run of another recipe: it joins the report
                    self.earlier.append(path)
        return BiasAwareClassifier(model, self.n_classes, lr=s.lr if lr is None else lr, max_offset=16)
    def baseline(self, epochs: int, weights: str | Path | None = None, what: str = "baseline") -> BiasAwareClassifier:
        """The recipe's starting model: ``weights`` loaded (a run directory holding ``model.pt``,
        or a state-dict file), else a fresh model trained ``epochs`` with a monitor as stage
        ``baseline``."""
        module = self.module(weights=weights)
        if weights is None:
            print(f"[1/4] training the {what} for {epochs} epochs")
            self.fit(module, "baseline", epochs, [self.monitor()])
        else:
            print(f"[1/4] {what} weights from {weights}")
        return module

    def scan(self, model: torch.nn.Module) -> PanReport:
        """:func:`~pan_repair.find_pans` on :attr:`calibration`."""
        return find_pans(model, data=self.calibration, **self.thresholds)

    def calibrated(self, callback: Any) -> Any:
        """``callback`` (a pan_repair callback) given :attr:`calibration`, so that its scans see
        the images :meth:`scan` sees."""
        callback.calibration = self.calibration
        return callback

    def monitor(self) -> PANMonitor:
        """A ``PANMonitor`` scanning like :meth:`scan` once per epoch."""
        return self.calibrated(PANMonitor(input_size=self.input_size, every_n_epochs=1, **self.thresholds))

    def fit(self, module: BiasAwareClassifier, name: str, epochs: int, callbacks: Sequence[Any] = ()) -> RunResult:
        """Train ``module`` for ``epochs`` (0: evaluate only) as stage ``name``; kept in ``runs``."""
        run = fit_stage(module, self.data, self.swapped, Stage(self.root, name, self.group, self.recipe), epochs,
                        callbacks, self.setup.wandb, self.scan)
        self.runs.append(run)
        return run

    def finish(self) -> Path:
        """Build the comparison report of all stages (after the runs whose weights were loaded),
        print their figures and the report's path."""
        dirs = self.earlier + [self.root / run.name for run in self.runs]
        runs = read_runs(dirs)
        path = build_report(runs, self.root / "report")
        for run in [RunResult.load(d) for d in dirs]:
            m = run.metrics
            nan = float("nan")
            print(f"      {run.name:22s} acc {m['val/acc']:.3f}  swapped acc {m.get('swapped/acc', nan):.3f}  "
                  f"border gap {m.get('val/border_gap', nan):+.3f}  "
                  f"padding flips {m['val/padding_flip']:.3f}  PANs {int(m['pan/count'])}")
        for line in what_happened(runs):
            print(f"      {line}")
        print(f"report: {path.resolve()}")
        return path
