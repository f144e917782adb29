"""Shared by the callback tests: a tiny SmallCNN classifier and Trainers of both Lightning
namespaces (``NAMESPACES``), one torch thread per test (2 shared cores)."""
from __future__ import annotations

from pathlib import Path

import lightning.pytorch
import pytest
import pytorch_lightning
import torch
import torch.nn.functional as F
from torch import nn

from pan_repair import DigitsCanvasDataModule, LitDigitsCanvasDataModule, SmallCNN
from pan_repair import callbacks as pl_callbacks
from pan_repair import lightning as lit_callbacks

THRESHOLD = 0.05  # a tiny network trained for a few steps, measured on its digits (black background), scores 0.05-0.1 at most
INPUT = (1, 24, 24)


class _Body:
    """A SmallCNN classifier with dropout (so any use of the global RNG would change the weights)."""

    def __init__(self, convs: bool = True) -> None:
        super().__init__()
        self.model = SmallCNN(1, 10, width=8, depth=3) if convs else nn.Sequential(nn.Flatten(), nn.Linear(576, 10))
        self.drop = nn.Dropout(0.3)
        self.steps = 0

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        self.steps += 1
        return F.cross_entropy(self.drop(self(batch[0])), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class PLNet(_Body, pytorch_lightning.LightningModule):
    pass


class LitNet(_Body, lightning.pytorch.LightningModule):
    pass


class NS:
    """One Lightning namespace: its package, LightningModule, datamodule and pan_repair callbacks."""

    def __init__(self, name, pl, net, data, callbacks):
        self.name, self.pl, self.net, self.data, self.callbacks = name, pl, net, data, callbacks
        self.monitor = callbacks.PANMonitor


NAMESPACES = {
    "pytorch_lightning": NS("pytorch_lightning", pytorch_lightning, PLNet, DigitsCanvasDataModule, pl_callbacks),
    "lightning.pytorch": NS("lightning.pytorch", lightning.pytorch, LitNet, LitDigitsCanvasDataModule, lit_callbacks),
}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one thread per process is faster and steadier
    yield
    torch.set_num_threads(threads)


def _data(ns: NS):
    return ns.data(batch_size=32, canvas=INPUT[1], scale=1)


def _trainer(ns: NS, root: Path, **kwargs):
    options = dict(max_epochs=2, limit_train_batches=3, limit_val_batches=1, accelerator="cpu", devices=1,
                   logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                   num_sanity_val_steps=0, default_root_dir=root)
    options.update(kwargs)
    return ns.pl.Trainer(**options)


def _fit(ns: NS, root: Path, callbacks=(), seed: int = 0, module: type | None = None, **kwargs):
    """Fit ``module`` (default: the namespace's test net), built after seeding, on the test data."""
    ns.pl.seed_everything(seed, verbose=False)
    net = (module or ns.net)()
    trainer = _trainer(ns, root, callbacks=list(callbacks), **kwargs)
    trainer.fit(net, _data(ns))
    return net, trainer
