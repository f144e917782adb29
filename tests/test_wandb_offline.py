"""Reading back offline W&B runs: plain wandb, through Lightning's WandbLogger, and corrupt files."""
from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import wandb
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from torch.utils.data import DataLoader, TensorDataset

from pan_repair.runs.wandb_offline import latest_run, read_offline_run

BIG = list(range(12_000))  # ~70 KB of JSON: one record over three 32 KiB blocks (FIRST/MIDDLE/LAST chunks)


def _wandb_children() -> list[str]:
    """Names of this process's child processes that belong to wandb (Linux /proc; [] elsewhere)."""
    names = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if int(rest[1]) == os.getpid() and "wandb" in comm:
            names.append(comm)
    return names


@pytest.fixture(scope="module", autouse=True)
def offline_env(tmp_path_factory):
    """Offline, silent W&B for the whole module; at the end stop wandb's service and check it is gone."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")  # also undoes WandbLogger's os.environ["WANDB_MODE"] = "dryrun"
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_DIR", str(tmp_path_factory.mktemp("wandb_dir")))
        yield
        wandb.teardown()
    assert _wandb_children() == []


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Path:
    """One offline run with scalars at steps 0-2, then media and a multi-block value at step 3."""
    root = tmp_path_factory.mktemp("plain")
    run = wandb.init(project="pan", group="g1", dir=root, config={"lr": 0.1, "arch": {"depth": 3, "pad": "zeros"}})
    for step in range(3):
        run.log({"loss": 1.0 / (step + 1), "acc": step * 0.25}, step=step)
    run.log({
        "table": wandb.Table(columns=["name", "count"], data=[["a", 1], ["b", 2]]),
        "hist": wandb.Histogram(np_histogram=([1, 2, 3], [0.0, 1.0, 2.0, 3.0])),
        "image": wandb.Image(np.zeros((4, 6, 3), dtype=np.uint8)),
        "big": BIG,
    }, step=3)
    run.summary["best_acc"] = 0.5
    run_id = run.id
    run.finish()
    run_dir = latest_run(root)
    assert run_dir.name.endswith(run_id)
    return run_dir


def test_scalars_config_group(logged):
    run = read_offline_run(logged)
    assert run.group == "g1" and run.project == "pan" and logged.name.endswith(run.run_id)
    assert run.config == {"lr": 0.1, "arch": {"depth": 3, "pad": "zeros"}}
    assert [row["_step"] for row in run.history] == [0, 1, 2, 3]
    assert [(row["loss"], row["acc"]) for row in run.history[:3]] == [(1.0, 0.0), (0.5, 0.25), (1 / 3, 0.5)]
    assert run.summary["best_acc"] == 0.5 and run.summary["loss"] == 1 / 3 and run.summary["_step"] == 3


def test_media_values(logged):
    run = read_offline_run(logged / f"run-{read_offline_run(logged).run_id}.wandb")  # the file itself works too
    row = run.history[3]
    assert {"table", "hist", "image", "big", "_step"} <= row.keys() and "loss" not in row
    table = row["table"]
    assert (table["_type"], table["ncols"], table["nrows"]) == ("table-file", 2, 2)
    assert run.read_media_json(table) == {"columns": ["name", "count"], "data": [["a", 1], ["b", 2]]}
    assert row["hist"] == {"_type": "histogram", "values": [1, 2, 3], "bins": [0, 1, 2, 3]}
    image = row["image"]
    assert (image["_type"], image["format"], image["width"], image["height"]) == ("image-file", "png", 6, 4)
    assert {table["path"], image["path"]} <= set(run.files)
    assert (run.files_dir / image["path"]).is_file()
    assert row["big"] == BIG and run.path.stat().st_size > 2 * 32 * 1024


def test_lightning_wandb_logger(tmp_path):
    class Tiny(LightningModule):
        def __init__(self, lr: float = 0.1):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    data = DataLoader(TensorDataset(torch.randn(8, 3), torch.randn(8, 1)), batch_size=4)
    logger = WandbLogger(offline=True, save_dir=tmp_path, project="p", group="g", name="tiny")
    trainer = Trainer(max_epochs=1, limit_train_batches=2, logger=logger, log_every_n_steps=1, accelerator="cpu",
                      enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(Tiny(), data)
    logger.experiment.finish()  # WandbLogger never finishes its run itself

    run = read_offline_run(latest_run(tmp_path))
    assert run.group == "g" and run.project == "p" and run.name == "tiny" and run.config == {"lr": 0.1}
    rows = [row for row in run.history if "train_loss" in row]
    assert [row["trainer/global_step"] for row in rows] == [0, 1]
    assert all(math.isfinite(row["train_loss"]) for row in rows)


def test_corrupt_and_missing_files(logged, tmp_path):
    data = bytearray(read_offline_run(logged).path.read_bytes())
    cases = {
        "flipped.wandb": data[:200] + bytes([data[200] ^ 0xFF]) + data[201:],
        "truncated.wandb": data[: len(data) - 5],
        "header.wandb": b"XXXX" + data[4:],
        "empty.wandb": b"",
        "header_only.wandb": data[:7],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(bytes(content))
        with pytest.raises(ValueError, match="W&B") as err:
            read_offline_run(tmp_path / name)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="cannot read"):
        read_offline_run(tmp_path / "missing.wandb")
    with pytest.raises(ValueError, match="no offline-run"):
        latest_run(tmp_path)


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def test_a_file_still_being_written_is_read_once_complete(logged, tmp_path):
    """wandb-core may finish writing the file just after run.finish() returns: the reader waits for it."""
    complete = read_offline_run(logged)
    data = complete.path.read_bytes()
    for cut in (7, 32 * 1024 + 100):  # only the header; whole blocks and a record cut off
        path = tmp_path / f"growing{cut}.wandb"
        path.write_bytes(data[:cut])
        writer = threading.Timer(0.2, _append, [path, data[cut:]])
        writer.start()
        try:
            assert read_offline_run(path).history == complete.history
        finally:
            writer.join()
