"""Training time with and without ``PANMonitor``: at its default cadence (each epoch its 2% time
budget allows) and after every epoch (``every_n_epochs=1``).

SmallCNN (5 conv blocks, 24 channels) on the digits canvas data (32x32, the full train split),
``lightning.pytorch``, CSV logging in a temporary folder for every arm. The arms alternate (their
order rotates each repeat) in one process and the fastest run (CPU time) of each is kept, so drift
in a shared machine's load hits all. Prints wall and CPU (process) time of each arm and their ratios to the
run without monitor, and the CPU time spent inside the monitor's scans over the training's CPU
time, and within each monitored run its scans' wall time over the rest of its wall time (what the
budget bounds): on a busy shared machine the last two are the steadiest estimates of the overhead.

    .venv/bin/python benchmarks/monitor_overhead.py [--epochs 3] [--repeats 2] [--threads 1] [--accelerator gpu]

On a GPU (``--accelerator gpu``) each arm's fastest run is the one of least wall time (the CPU time
then counts the host's waiting on the device).
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger

from pan_repair import LitDigitsCanvasDataModule, SmallCNN
from pan_repair.lightning import PANMonitor


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = SmallCNN(1, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self(batch[0]), batch[1])
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch[0])
        self.log("val/loss", F.cross_entropy(logits, batch[1]))
        self.log("val/acc", (logits.argmax(1) == batch[1]).float().mean())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


class TimedMonitor(PANMonitor):
    """PANMonitor that adds up the CPU and wall time of its scans (detector, logging and JSON)."""

    scan_seconds = 0.0
    scan_wall = 0.0

    def _scan(self, trainer, pl_module, epoch_end=False):
        start, wall = time.process_time(), time.perf_counter()
        super()._scan(trainer, pl_module, epoch_end)
        self.scan_seconds += time.process_time() - start
        self.scan_wall += time.perf_counter() - wall


ARMS = {"without": None, "default": {}, "every epoch": {"every_n_epochs": 1}}


def fit(epochs: int, monitor: dict | None, batch_size: int, accelerator: str = "cpu") -> dict[str, float]:
    """Wall and CPU seconds of ``trainer.fit``; with a monitor (its arguments) also its scans and
    their CPU seconds."""
    L.seed_everything(0, verbose=False)
    callbacks = [TimedMonitor(**monitor)] if monitor is not None else []
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=CSVLogger(root),
                            callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
                            enable_checkpointing=False, num_sanity_val_steps=0, default_root_dir=root)
        data = LitDigitsCanvasDataModule(batch_size=batch_size)
        wall, cpu = time.perf_counter(), time.process_time()
        trainer.fit(Classifier(), data)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    out = {"wall": wall, "cpu": cpu}
    if monitor is not None:
        out.update(scans=len(callbacks[0].history.scans), scan_cpu=callbacks[0].scan_seconds,
                   scan_wall=callbacks[0].scan_wall)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each arm (best kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on shared cores)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--accelerator", default="cpu", help="cpu or gpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)

    fit(1, {}, args.batch_size, args.accelerator)  # warm-up: imports, allocator, first-call costs
    names = list(ARMS)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            result = fit(args.epochs, ARMS[name], args.batch_size, args.accelerator)
            runs[name].append(result)
            print(f"  run {r}: {name:11s}  wall {result['wall']:7.2f} s  cpu {result['cpu']:7.2f} s"
                  + (f"  {int(result['scans'])} scans {result['scan_cpu']:.2f} s cpu" if "scans" in result else ""))
    clock = "cpu" if args.accelerator == "cpu" else "wall"
    best = {m: min(runs[m], key=lambda run: run[clock]) for m in runs}  # each arm's fastest run, whole
    without = best["without"]
    where = torch.cuda.get_device_name() if args.accelerator == "gpu" else f"{args.threads} thread(s)"
    print(f"SmallCNN, digits 32x32, {args.epochs} epochs, batch {args.batch_size}, {where}, "
          f"best of {args.repeats} ({clock} time)")
    print(f"without monitor:      wall {without['wall']:.2f} s  cpu {without['cpu']:.2f} s")
    for name in names[1:]:
        arm = best[name]
        scans = int(arm["scans"])
        print(f"monitor, {name:11s}: wall {arm['wall']:.2f} s  cpu {arm['cpu']:.2f} s  ({scans} scans, "
              f"{1000 * arm['scan_cpu'] / max(scans, 1):.0f} ms cpu each)  ratio wall {arm['wall'] / without['wall']:.4f}"
              f"  cpu {arm['cpu'] / without['cpu']:.4f}  scans/training cpu {arm['scan_cpu'] / without['cpu']:+.2%}"
              f"  in-run scans/training wall {arm['scan_wall'] / (arm['wall'] - arm['scan_wall']):+.2%}")

if __name__ == "__main__":
    main()
