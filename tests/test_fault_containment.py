"""A callback never stops training because a scan (or penalty) failed mid-run: by fault injection
(a detector that raises at chosen scans; DDP: on rank zero only) and with a torchvision ResNet-18
on 32x32 images. What can be checked before the first step still raises at setup (see
test_monitor.py and test_mitigation_callbacks.py)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from pan_repair.callbacks import _target
from pan_repair.callbacks.monitor import read_monitor_json
from pan_repair.detect.detector import find_pans
from pan_repair.repair.regularizer import PANPenalty

from _lightning import NAMESPACES, THRESHOLD, _data, _fit, _trainer, one_thread  # noqa: F401 (autouse fixture)

NS = NAMESPACES["lightning.pytorch"]
REASON = "input size 24x24 is too small to move content by the network's total stride"


def _failing_at(calls: set[int], real=find_pans):
    """``find_pans`` that raises ``ValueError(REASON)`` at the given (1-based) calls."""
    count = 0

    def detector(*args, **kwargs):
        nonlocal count
        count += 1
        if count in calls:
            raise ValueError(f"{REASON}\nsecond line")
        return real(*args, **kwargs)

    return detector


def _containment_warnings(recwarn) -> list[str]:
    return [str(w.message) for w in recwarn if "training goes on" in str(w.message)]


# ------------------------------------------------------------------------------ PANMonitor
@pytest.mark.slow
def test_monitor_records_failed_scans_and_training_goes_on(tmp_path, monkeypatch, recwarn):
    monkeypatch.setattr(_target, "find_pans", _failing_at({2, 3}))
    monitor = NS.monitor(every_n_epochs=1, border_threshold=THRESHOLD, output_dir=tmp_path / "out")
    logger = NS.pl.loggers.CSVLogger(tmp_path, name="csv", version=0)
    net, trainer = _fit(NS, tmp_path, [monitor], max_epochs=4, logger=logger)
    assert trainer.current_epoch == 4 and net.steps == 12
    history, last, _ = read_monitor_json(tmp_path / "out" / "pan_monitor.json")
    assert [s.get("failed", False) for s in history.scans] == [False, True, True, False]
    failed = history.scans[1]
    assert failed == {"epoch": 1, "step": 6, "failed": True, "reason": f"ValueError: {REASON}"}
    assert history.scans[3]["count"] == last.count > 0 and history.scans[3]["epoch"] == 3
    assert json.loads((tmp_path / "out" / "pan_monitor.json").read_text())["history"]["scans"][2]["failed"] is True
    messages = _containment_warnings(recwarn)
    assert len(messages) == 1 and REASON in messages[0] and "PANMonitor" in messages[0]  # once
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    counts = [r["epoch"] for r in rows if r.get("pan/count")]
    failures = [r["epoch"] for r in rows if r.get("pan/scan_failed")]
    assert counts == ["0", "3"] and failures == ["1", "2"]  # no count logged for a failed scan


# ------------------------------------------------------------------------------ PANPruning
@pytest.mark.slow
def test_pruning_skips_a_failed_round_and_says_so(tmp_path, monkeypatch, recwarn):
    monkeypatch.setattr(_target, "find_pans", _failing_at({2}))
    pruning = NS.callbacks.PANPruning(border_threshold=THRESHOLD, model_attr="model", make_pruning_permanent=False)
    logger = NS.pl.loggers.CSVLogger(tmp_path, name="csv", version=0)
    _, trainer = _fit(NS, tmp_path, [pruning], max_epochs=3, logger=logger, log_every_n_steps=1)
    assert trainer.current_epoch == 3
    assert [(r["epoch"], r.get("failed", False)) for r in pruning.rounds] == [(0, False), (1, True), (2, False)]
    assert pruning.rounds[1]["reason"] == f"ValueError: {REASON}"
    assert [r["epoch"] for r in pruning.pruning_rounds()] == [0, 2]
    assert len(_containment_warnings(recwarn)) == 1
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["epoch"] for r in rows if r.get("pan_pruning/scan_failed")} == {"1"}
    assert {r["epoch"] for r in rows if r.get("pan_pruning/pruned")} == {"0", "2"}  # no count for epoch 1

    restored = NS.callbacks.PANPruning(border_threshold=THRESHOLD, model_attr="model")
    restored.load_state_dict(pruning.state_dict())  # a failed round survives a checkpoint
    assert restored.rounds == pruning.rounds and restored.pruned == pruning.pruned


# ------------------------------------------------------------------------------ PANRegularizer
@pytest.mark.slow
def test_regularizer_skips_a_failed_step(tmp_path, monkeypatch, recwarn):
    real, calls = PANPenalty.__call__, []

    def penalty(self, model):
        calls.append(1)
        if len(calls) == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, model)

    monkeypatch.setattr(PANPenalty, "__call__", penalty)
    regularizer = NS.callbacks.PANRegularizer(model_attr="model")
    net, trainer = _fit(NS, tmp_path, [regularizer])
    assert net.steps == 6 and len(calls) == 6
    assert regularizer.skipped == {"steps": 1, "reason": "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"}
    assert regularizer.state_dict()["skipped"] == regularizer.skipped
    assert len(_containment_warnings(recwarn)) == 1


@pytest.mark.slow
def test_padding_switch_on_pans_switches_nothing_when_the_scan_fails(tmp_path, monkeypatch, recwarn):
    monkeypatch.setattr(_target, "find_pans", _failing_at({1}))
    switch = NS.callbacks.PaddingSwitch("replicate", "pans", at_epoch=1, model_attr="model")
    _, trainer = _fit(NS, tmp_path, [switch])
    assert trainer.current_epoch == 2 and switch.switched == []
    assert len(_containment_warnings(recwarn)) == 1


# ------------------------------------------------------------------------------ DDP
class _RankZeroFailingMonitor(NS.monitor):
    """A monitor whose detector raises at the first scan on rank zero only (a ddp_spawn child
    cannot be monkeypatched from the test); every rank notes the history it ends with."""

    def setup(self, trainer, pl_module, stage):
        super().setup(trainer, pl_module, stage)
        if trainer.global_rank == 0:
            _target.find_pans = _failing_at({1})

    def on_train_end(self, trainer, pl_module):
        (self.output_dir / f"history_rank{trainer.global_rank}.json").write_text(json.dumps(self.history.to_dict()))


@pytest.mark.slow
@pytest.mark.timeout(300)  # 40-60 s on 2 busy shared cores: the children re-import torch+Lightning
def test_ddp_ranks_skip_a_failed_scan_alike(tmp_path):
    out = tmp_path / "out"
    monitor = _RankZeroFailingMonitor(every_n_epochs=1, border_threshold=THRESHOLD, output_dir=out)
    NS.pl.seed_everything(0, verbose=False)
    trainer = _trainer(NS, tmp_path, callbacks=[monitor], strategy="ddp_spawn", devices=2, limit_train_batches=2)
    trainer.fit(NS.net(), _data(NS))
    ranks = [json.loads((out / f"history_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # the failure was broadcast: rank one skipped too
    assert [s.get("failed", False) for s in ranks[0]["scans"]] == [True, False]
    assert ranks[0]["scans"][0]["reason"] == f"ValueError: {REASON}"


# ------------------------------------------------------------------------------ ResNet-18 at 32 px
class _ResNet(NS.pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet18

        self.model = resnet18(num_classes=10)

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.slow
def test_resnet18_at_32px_with_a_monitor_completes(tmp_path, recwarn):
    torch.manual_seed(0)
    images = TensorDataset(torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,)))
    monitor = NS.monitor(every_n_epochs=1, model_attr="model", output_dir=tmp_path / "out")
    trainer = _trainer(NS, tmp_path, callbacks=[monitor], max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(_ResNet(), DataLoader(images, batch_size=8), DataLoader(images, batch_size=8))
    assert trainer.current_epoch == 1 and trainer.global_step == 2
    history, _, _ = read_monitor_json(tmp_path / "out" / "pan_monitor.json")
    assert len(history.scans) == 1  # a scan, or a failed scan with its reason: never a crash
    scan = history.scans[0]
    if scan.get("failed"):
        assert scan["reason"] and any(scan["reason"] in m for m in _containment_warnings(recwarn))
    else:
        assert scan["total_filters"] > 0 and not _containment_warnings(recwarn)
