"""A user's path to the bias dashboards, end to end: train three variants of one zero-padded
SmallCNN on the placement-shortcut digits with ``PANMonitor`` and an offline ``WandbLogger`` in one
W&B group (plain zero padding, ``PaddingSwitch("replicate")`` at the start, the ``PANRegularizer``
penalty), then ``pan-repair compare`` the group's folder; prints the comparison table and the time to
read the runs and build the HTML report.

    .venv/bin/python benchmarks/compare_runs.py [--out runs/compare_runs] [--epochs 6]
"""
from __future__ import annotations

import argparse
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import WandbLogger

from pan_repair import LitDigitsCanvasDataModule, SmallCNN
from pan_repair.cli import main as pan_repair
from pan_repair.lightning import PaddingSwitch, PANMonitor, PANRegularizer
from pan_repair.experiments.lit_module import BiasAwareClassifier

#: the three variants: run name -> the repair callbacks it trains with
VARIANTS: dict[str, Callable[[], list[Any]]] = {
    "zeros": lambda: [],
    "replicate switch": lambda: [PaddingSwitch("replicate")],
    "PAN penalty": lambda: [PANRegularizer()],
}


def train_variant(name: str, callbacks: Sequence[Any], root: Path, group: str, epochs: int, width: int = 16,
                  canvas: int = 32, **trainer_kwargs: Any) -> None:
    """Train one variant as W&B run ``name`` (offline) in ``group`` under ``root/wandb``, with a ``PANMonitor``."""
    L.seed_everything(0, verbose=False)
    data = LitDigitsCanvasDataModule(batch_size=64, canvas=canvas, scale=1 if canvas < 32 else 2,
                                     train_placement="biased")
    module = BiasAwareClassifier(SmallCNN(1, 10, width=width, depth=4), 10, max_offset=canvas // 2)
    logger = WandbLogger(name=name, group=group, project="compare_runs", save_dir=str(root), offline=True)
    options = dict(max_epochs=epochs, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, log_every_n_steps=5, num_sanity_val_steps=0)
    monitor = PANMonitor(every_n_epochs=1, border_threshold=1.0)  # below the default 2.5: a small net's first PANs show
    trainer = L.Trainer(callbacks=[*callbacks, monitor], logger=logger, **{**options, **trainer_kwargs})
    try:
        trainer.fit(module, data)
    finally:
        logger.experiment.finish()  # WandbLogger leaves its run open


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/compare_runs", help="folder of the W&B runs and the report")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    group = f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    root = Path(args.out) / group  # the group's folder: its wandb/ holds exactly these runs
    for name, callbacks in VARIANTS.items():
        start = time.perf_counter()
        train_variant(name, callbacks(), root, group, args.epochs)
        print(f"trained {name!r} in {time.perf_counter() - start:.1f} s")
    pan_repair(["compare", str(root), "--format", "table"])
    start = time.perf_counter()
    pan_repair(["compare", str(root), "--out", str(root / "report")])
    print(f"report of {len(VARIANTS)} runs read and built in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
