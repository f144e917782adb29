"""PANMonitor with real Trainers of both Lightning namespaces: it never changes training, logs to
CSV and (offline) W&B what its JSON says, survives checkpoints, runs under DDP, fails early."""
from __future__ import annotations

import csv
import json
import os
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pan_repair import SmallCNN, find_pans
from pan_repair.callbacks import PANMonitor as PLMonitor
from pan_repair.callbacks import PanHistory, PANMonitorBase, read_monitor_json
from pan_repair.callbacks._namespaces import is_wandb_logger
from pan_repair.callbacks.budget import ScanBudget
from pan_repair.lightning import PANMonitor as LitMonitor
from pan_repair.detect.plotting import border_response_maps
from pan_repair.detect.report import LayerInfo, Pan, PanReport

from _lightning import INPUT, NAMESPACES, THRESHOLD, _data, _fit, _trainer, one_thread  # noqa: F401 (autouse fixture)


def _rng_states():
    return random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone()


# ------------------------------------------------------------------------------ never changes training
def test_detector_and_maps_leave_global_rng_alone():
    torch.manual_seed(1)
    net = SmallCNN(1, 10, width=8, depth=3).train()
    before = _rng_states()
    report = find_pans(net, INPUT, border_threshold=THRESHOLD, n_patterns=4)
    border_response_maps(net, report.strongest(4), INPUT)
    after = _rng_states()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and torch.equal(before[2], after[2])
    assert all(m.training for m in net.modules())


@pytest.mark.slow
@pytest.mark.parametrize("namespace", list(NAMESPACES))
def test_same_seed_same_weights_with_and_without_monitor(namespace, tmp_path):
    ns = NAMESPACES[namespace]
    monitors = [ns.monitor(every_n_epochs=1, border_threshold=THRESHOLD, output_dir=tmp_path / "a"),
                ns.monitor(every_n_train_steps=2, border_threshold=THRESHOLD, prefix="steps", n_maps=0,
                           output_dir=tmp_path / "b")]
    with pytest.warns(UserWarning, match="no logger"):
        with_net, _ = _fit(ns, tmp_path / "with", monitors)
    rng_with = _rng_states()
    without_net, _ = _fit(ns, tmp_path / "without")
    rng_without = _rng_states()
    assert [s["epoch"] for s in monitors[0].history.scans] == [0, 1]
    assert [s["step"] for s in monitors[1].history.scans] == [2, 4, 6]
    assert monitors[0].history.pans, "the test should see some PANs"
    a, b = with_net.state_dict(), without_net.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # weights and BatchNorm statistics
    assert rng_with[0] == rng_without[0] and np.array_equal(rng_with[1], rng_without[1])
    assert torch.equal(rng_with[2], rng_without[2])
    assert all(m.training for m in with_net.modules())


# ------------------------------------------------------------------------------ what is logged
@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")  # also undoes WandbLogger's WANDB_MODE=dryrun
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    yield
    wandb.teardown()


def _complete_run(root: Path, timeout: float = 60.0) -> Path:
    """The offline run under ``root`` once wandb-core has written all of it.

    ``run.finish()`` can return before wandb-core has flushed the run file (seen on a loaded
    machine: history records missing right after ``finish``); stopping the service and
    waiting for the file's ``exit`` record makes the read-back deterministic.
    """
    import time

    import wandb

    from pan_repair.runs.wandb_offline import iter_records, latest_run

    wandb.teardown()
    run_dir, deadline = latest_run(root), time.monotonic() + timeout
    while True:
        try:
            if any(r.WhichOneof("record_type") == "exit" for r in iter_records(next(run_dir.glob("run-*.wandb")))):
                return run_dir
        except ValueError:  # a record still being written
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{run_dir}: no exit record after {timeout} s")
        time.sleep(0.2)


@pytest.mark.slow
def test_wandb_offline_logs_what_the_json_says(tmp_path, offline_wandb):
    from lightning.pytorch.loggers import WandbLogger

    from pan_repair.runs.wandb_offline import read_offline_run

    ns = NAMESPACES["lightning.pytorch"]
    logger = WandbLogger(offline=True, save_dir=tmp_path, project="pans")
    monitor = ns.monitor(every_n_epochs=1, border_threshold=THRESHOLD, n_maps=3)
    _fit(ns, tmp_path, [monitor], max_epochs=3, logger=logger)
    logger.experiment.finish()
    run_dir = _complete_run(tmp_path)
    assert monitor.json_path == run_dir / "files" / "pan_monitor.json"  # beside the run, synced with it
    history, last, settings = read_monitor_json(monitor.json_path)
    assert settings["border_threshold"] == THRESHOLD and settings["input_size"] == list(INPUT)  # from the batch
    assert last.to_dict() == monitor.last_report.to_dict()
    assert [s["epoch"] for s in history.scans] == [0, 1, 2]

    run = read_offline_run(run_dir)
    rows = [row for row in run.history if "pan/count" in row]
    val_rows = [row for row in run.history if "val/loss" in row]
    assert [r["pan/count"] for r in rows] == [s["count"] for s in history.scans]
    assert [r["pan/border"] for r in rows] == [s["border"] for s in history.scans]
    assert [r["pan/fraction"] for r in rows] == pytest.approx([s["fraction"] for s in history.scans])
    assert [r["pan/new"] for r in rows] == [len(s["new"]) for s in history.scans]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    # PAN rows share the x-axis step of the epoch's validation metrics
    assert [r["trainer/global_step"] for r in rows] == [r["trainer/global_step"] for r in val_rows] == [2, 5, 8]
    assert rows[-1]["pan/seen"] == len(history.pans) > 0

    # the table of PANs of the last scan = the JSON's last report, with first-seen epochs
    final = rows[-1]
    table = run.read_media_json(final["pan/pans"])
    first_seen = history.first_seen()
    expected = sorted([f"{p.layer}:{p.channel}", p.layer, p.channel, p.kind, "+".join(p.sides), p.sign,
                       first_seen[f"{p.layer}:{p.channel}"]] for p in last.pans)
    columns = table["columns"]
    got = sorted([row[columns.index(c)] for c in ("id", "layer", "channel", "kind", "sides", "sign",
                                                  "first_seen_epoch")] for row in table["data"])
    assert got == expected
    scores = {row[0]: row[columns.index("score")] for row in table["data"]}
    assert scores == pytest.approx({f"{p.layer}:{p.channel}": p.score for p in last.pans})
    # PANs per layer (bar chart data), histogram over depth, emergence timeline
    per_layer = run.read_media_json(final["pan/per_layer_table"])
    assert per_layer["data"] == [[layer.name, history.scans[-1]["per_layer"].get(layer.name, 0)]
                                 for layer in last.layers]
    assert final["pan/depth"]["_type"] == "histogram" and sum(final["pan/depth"]["values"]) == last.count
    timeline = run.read_media_json(final["pan/timeline"])
    tcols = timeline["columns"]
    assert {row[0]: (row[tcols.index("first_seen_epoch")], row[tcols.index("last_seen_epoch")],
                     row[tcols.index("present")]) for row in timeline["data"]} == \
        {pid: (v["first_seen_epoch"], v["last_seen_epoch"], v["present"]) for pid, v in history.pans.items()}
    # images of the strongest border PANs
    n_border = len(last.of_kind("border"))
    assert n_border > 0
    maps = final["pan/maps"]
    assert maps["_type"] == "images/separated" and maps["count"] == min(3, n_border)
    assert maps["width"] >= 96 and all((run.files_dir / f).is_file() for f in maps["filenames"])
    strongest = last.strongest(3, kind="border")
    assert [c.split(" ")[0] for c in maps["captions"]] == [f"{p.layer}[{p.channel}]" for p in strongest]


def test_wandb_loggers_of_both_namespaces_are_recognised(tmp_path):
    from lightning.pytorch.loggers import CSVLogger as LitCSV
    from lightning.pytorch.loggers import WandbLogger as LitWandb
    from pytorch_lightning.loggers import WandbLogger as PLWandb

    assert is_wandb_logger(PLWandb(offline=True, save_dir=tmp_path))
    assert is_wandb_logger(LitWandb(offline=True, save_dir=tmp_path))
    assert not is_wandb_logger(LitCSV(tmp_path))


@pytest.mark.slow
def test_csv_logger_scalars_and_steps_cadence(tmp_path):
    ns = NAMESPACES["pytorch_lightning"]
    logger = ns.pl.loggers.CSVLogger(tmp_path, name="csv")
    monitor = ns.monitor(every_n_train_steps=2, border_threshold=THRESHOLD)
    _fit(ns, tmp_path, [monitor], logger=logger, limit_train_batches=4)
    assert monitor.json_path == Path(logger.log_dir) / "pan_monitor.json"
    history, _, _ = read_monitor_json(monitor.json_path)
    assert [s["step"] for s in history.scans] == [2, 4, 6, 8]
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("pan/count")]
    assert [int(float(r["pan/count"])) for r in rows] == [s["count"] for s in history.scans]
    assert [int(r["step"]) for r in rows] == [1, 3, 5, 7]  # Lightning's step of the batch that made it
    for key in ("pan/fraction", "pan/border", "pan/position", "pan/new", "pan/gone", "pan/seen"):
        assert all(r[key] != "" for r in rows), key


# ------------------------------------------------------------------------------ cadence
@pytest.mark.slow
def test_one_scan_per_epoch_with_mid_epoch_validation_or_none(tmp_path):
    ns = NAMESPACES["lightning.pytorch"]
    every, second = (ns.monitor(border_threshold=THRESHOLD, output_dir=tmp_path, prefix=p, every_n_epochs=n)
                     for p, n in (("every", 1), ("second", 2)))
    with pytest.warns(UserWarning, match="no logger"):
        _fit(ns, tmp_path, [every, second], max_epochs=3, limit_train_batches=4, val_check_interval=0.5)
    assert [s["epoch"] for s in every.history.scans] == [0, 1, 2]
    assert [s["epoch"] for s in second.history.scans] == [1]
    # without validation the scan happens at the end of the training epoch
    plain = ns.monitor(every_n_epochs=1, border_threshold=THRESHOLD, output_dir=tmp_path / "plain")
    with pytest.warns(UserWarning, match="no logger"):
        _fit(ns, tmp_path, [plain], limit_val_batches=0)
    assert [(s["epoch"], s["step"]) for s in plain.history.scans] == [(0, 3), (1, 6)]
    assert plain.json_path == tmp_path / "plain" / "pan_monitor.json"


def test_scan_budget_allows_a_scan_once_training_has_paid_for_it():
    now = [0.0]
    budget = ScanBudget(0.02, clock=lambda: now[0])
    budget.start()
    now[0] = 1.0
    assert budget.allows()  # the first scan: its cost is not known yet
    budget.charge(0.5)
    now[0] = 1.5  # 1 s of training, 0.5 s of scans
    assert not budget.allows()
    now[0] = 50.4  # 0.5 + 0.5 <= 0.02 * training needs 50 s of training: 50.5 s on the clock
    assert not budget.allows() and budget.training() == pytest.approx(49.9)
    now[0] = 50.6
    assert budget.allows()


@pytest.mark.slow
def test_default_cadence_keeps_scans_within_the_budget(tmp_path):
    ns = NAMESPACES["lightning.pytorch"]
    default = ns.monitor(border_threshold=THRESHOLD, output_dir=tmp_path / "default")
    free = ns.monitor(max_overhead=1e6, border_threshold=THRESHOLD, prefix="free", output_dir=tmp_path / "free")
    assert default.max_overhead == 0.02 and default.settings()["max_overhead"] == 0.02
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(ns, tmp_path, [default, free], max_epochs=4, limit_train_batches=4)
    # a scan of this small net costs far more than 2% of its 4-batch epochs: only the first is paid for
    assert [s["epoch"] for s in default.history.scans] == [0]
    assert [s["epoch"] for s in free.history.scans] == [0, 1, 2, 3]
    budget = [str(w.message) for w in caught if "max_overhead" in str(w.message)]
    assert len(budget) == 1 and "within 2% of the training time" in budget[0]  # warned once
    assert ns.monitor(every_n_epochs=1).max_overhead is None  # an explicit cadence scans whatever it costs


# ------------------------------------------------------------------------------ checkpoints
@pytest.mark.slow
@pytest.mark.parametrize("namespace", list(NAMESPACES))
def test_checkpoint_round_trip_two_monitors(namespace, tmp_path):
    ns = NAMESPACES[namespace]

    def monitors():
        return [ns.monitor(every_n_epochs=1, border_threshold=THRESHOLD, output_dir=tmp_path / "json"),
                ns.monitor(every_n_epochs=1, border_threshold=0.08, n_patterns=2, prefix="loose",
                           output_dir=tmp_path / "json")]

    first = monitors()
    ckpt = ns.pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    with pytest.warns(UserWarning, match="no logger"):
        _fit(ns, tmp_path, [*first, ckpt], enable_checkpointing=True)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert {first[0].state_key, first[1].state_key} <= saved["callbacks"].keys()
    assert first[0].state_key != first[1].state_key
    seen = [m.history.first_seen() for m in first]
    assert seen[0] and seen[1] != seen[0]

    resumed = monitors()
    ns.pl.seed_everything(0, verbose=False)
    with pytest.warns(UserWarning, match="no logger"):
        trainer = _trainer(ns, tmp_path, callbacks=[*resumed, ns.pl.callbacks.ModelCheckpoint(
            dirpath=tmp_path / "ckpt2")], max_epochs=3, enable_checkpointing=True)
        trainer.fit(ns.net(), _data(ns), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    for before, after, old_seen in zip(first, resumed, seen):
        assert [s["epoch"] for s in after.history.scans] == [0, 1, 2]
        assert after.history.scans[:2] == before.history.scans
        new_seen = after.history.first_seen()
        assert {k: new_seen[k] for k in old_seen} == old_seen  # first-seen epochs preserved
        assert after.input_size == INPUT
        history, _, _ = read_monitor_json(after.json_path)
        assert history.to_dict() == after.history.to_dict()
    assert resumed[0].json_path.name == "pan_monitor.json" and resumed[1].json_path.name == "loose_monitor.json"


def test_history_bookkeeping():
    layers = [LayerInfo("a", "Conv2d", 4, "zeros", (1, 1, 1, 1), True)]

    def report(*channels):
        return PanReport([Pan("a", c, ("top",), 1, 3.0, "border", 3.0) for c in channels], layers, INPUT, 2.7, 0.95)

    h = PanHistory()
    h.record(report(0, 1), epoch=0, step=5)
    s = h.record(report(1, 2), epoch=1, step=10)
    h.record(report(0), epoch=2, step=15)
    assert (s["new"], s["gone"], s["per_layer"], s["fraction"]) == (["a:2"], ["a:0"], {"a": 2}, 0.5)
    assert h.scans[2]["new"] == ["a:0"] and h.scans[2]["gone"] == ["a:1", "a:2"]
    assert h.first_seen() == {"a:0": 0, "a:1": 0, "a:2": 1}
    assert h.present() == {"a:0"}
    assert (h.pans["a:0"]["last_seen_epoch"], h.pans["a:0"]["scans_seen"]) == (2, 2)
    assert (h.pans["a:1"]["last_seen_step"], h.pans["a:1"]["present"]) == (10, False)
    assert PanHistory.from_dict(json.loads(json.dumps(h.to_dict()))) == h
    with pytest.raises(ValueError, match="not a PanHistory"):
        PanHistory.from_dict({"scans": []})


# ------------------------------------------------------------------------------ DDP
class RecordingMonitor(LitMonitor):
    """Notes which rank writes the JSON and what history every rank ends with (ddp_spawn children)."""

    def _write_json(self, trainer):
        super()._write_json(trainer)
        with open(self.output_dir / "writes.log", "a") as f:
            f.write(f"{trainer.global_rank}\n")

    def on_train_end(self, trainer, pl_module):
        from pan_repair.callbacks import _target

        (self.output_dir / f"history_rank{trainer.global_rank}.json").write_text(json.dumps(self.history.to_dict()))
        (self.output_dir / f"exit_rank{trainer.global_rank}").write_text(str(_target._group_exit))


@pytest.mark.slow
@pytest.mark.timeout(300)  # 40-60 s on 2 busy shared cores: almost all of it is each child re-importing torch+Lightning
def test_ddp_spawn_two_cpu_processes(tmp_path):
    ns = NAMESPACES["lightning.pytorch"]
    out = tmp_path / "out"
    monitor = RecordingMonitor(every_n_epochs=1, border_threshold=THRESHOLD, output_dir=out)
    # under a budget rank zero decides whether to scan, for every rank (else the ranks would hang)
    budgeted = RecordingMonitor(max_overhead=1e6, border_threshold=THRESHOLD, prefix="budget",
                                output_dir=tmp_path / "budget")
    logger = ns.pl.loggers.CSVLogger(tmp_path, name="ddp", version=0)  # the parent cannot see the children's
    ns.pl.seed_everything(0, verbose=False)
    trainer = _trainer(ns, tmp_path, callbacks=[monitor, budgeted], logger=logger, strategy="ddp_spawn", devices=2,
                       limit_train_batches=2)
    trainer.fit(ns.net(), _data(ns))
    assert (out / "writes.log").read_text().split() == ["0", "0"]  # rank zero only, once per scan
    assert sorted(p.name for p in out.iterdir()) == ["exit_rank0", "exit_rank1", "history_rank0.json",
                                                     "history_rank1.json", "pan_monitor.json", "writes.log"]
    # every child destroys its gloo group at exit (see test_distributed_runs_destroy_their_group_at_exit)
    assert [(out / f"exit_rank{r}").read_text() for r in (0, 1)] == ["[True]", "[True]"]
    ranks = [json.loads((out / f"history_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # every rank holds rank zero's result
    history, last, _ = read_monitor_json(out / "pan_monitor.json")
    assert history.to_dict() == ranks[0]
    assert [s["epoch"] for s in history.scans] == [0, 1] and [s["step"] for s in history.scans] == [2, 4]
    assert last.count == history.scans[-1]["count"] and last.total_filters == 24
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        counts = [int(float(r["pan/count"])) for r in csv.DictReader(f) if r.get("pan/count")]
    assert counts == [s["count"] for s in history.scans]
    budget_history, _, _ = read_monitor_json(tmp_path / "budget" / "budget_monitor.json")
    assert [s["epoch"] for s in budget_history.scans] == [0, 1]


def test_distributed_runs_destroy_their_group_at_exit(monkeypatch):
    """A distributed run's callbacks register, once per process, an exit handler that destroys the
    default process group while Python is still whole: a gloo group left to interpreter
    finalisation can abort a ddp_spawn child after a finished fit (pytorch/pytorch#179291)."""
    import torch.distributed as dist
    from pan_repair.callbacks import _target

    registered = []
    monkeypatch.setattr(_target, "_group_exit", [])
    monkeypatch.setattr(_target.atexit, "register", registered.append)
    _target.destroy_group_at_exit()
    _target.destroy_group_at_exit()
    assert registered == [_target._destroy_group]
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        registered[0]()
        assert not dist.is_initialized()
        registered[0]()  # no group: nothing to do
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, match", [
    (dict(every_n_epochs=0), "every_n_epochs must be a positive integer"),
    (dict(every_n_train_steps=-3), "every_n_train_steps must be a positive integer"),
    (dict(every_n_epochs=True), "every_n_epochs must be a positive integer"),
    (dict(every_n_epochs=2, every_n_train_steps=10), "not both"),
    (dict(input_size=(24, 24)), "input_size"),
    (dict(border_threshold=0), "border_threshold"),
    (dict(position_threshold=1.5), "position_threshold"),
    (dict(n_maps=-1), "n_maps"),
    (dict(prefix="a/b"), "prefix"),
    (dict(max_overhead=0), "max_overhead"),
    (dict(max_overhead=float("nan")), "max_overhead"),
])
def test_invalid_arguments(kwargs, match):
    for monitor in (PLMonitor, LitMonitor):
        with pytest.raises(ValueError, match=match):
            monitor(**kwargs)
    with pytest.raises(TypeError, match="is a body"):
        PANMonitorBase()


@pytest.mark.filterwarnings("ignore:PANMonitor. the Trainer has no logger")
@pytest.mark.parametrize("namespace", list(NAMESPACES))
@pytest.mark.parametrize("case, match", [
    ("no_conv", "has no 2-D convolution"),
    ("model_attr", "no submodule model_attr='backbone'"),
    ("channels", r"input_size \(3, 24, 24\) has 3 channels but the first convolution 'model.features.0' expects 1"),
    ("too_small", "cannot run on input_size"),
    ("prefix", "two PANMonitors log under prefix 'pan'"),
])
def test_errors_at_setup(namespace, case, match, tmp_path):
    ns = NAMESPACES[namespace]
    net = ns.net(convs=case != "no_conv")
    monitors = {
        "no_conv": [ns.monitor()],
        "model_attr": [ns.monitor(model_attr="backbone")],
        "channels": [ns.monitor(input_size=(3, 24, 24))],
        "too_small": [ns.monitor(input_size=(1, 24, 24))],
        "prefix": [ns.monitor(), ns.monitor(border_threshold=1.0)],
    }[case]
    if case == "too_small":  # a head made for 8x8 images cannot take 24x24 probes
        net.model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    exception = ns.pl.utilities.exceptions.MisconfigurationException
    trainer = _trainer(ns, tmp_path, callbacks=monitors)
    with pytest.raises(exception, match=match):
        trainer.fit(net, _data(ns))
    assert net.steps == 0  # before any training step


@pytest.mark.filterwarnings("ignore:PANMonitor. the Trainer has no logger")
@pytest.mark.parametrize("namespace", list(NAMESPACES))
def test_batch_without_images_fails_before_training(namespace, tmp_path):
    ns = NAMESPACES[namespace]
    net = ns.net()
    flat = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 576), torch.zeros(8).long()),
                                       batch_size=4)
    trainer = _trainer(ns, tmp_path, callbacks=[ns.monitor(every_n_epochs=1)], limit_val_batches=0)
    with pytest.raises(ns.pl.utilities.exceptions.MisconfigurationException, match="cannot infer input_size"):
        trainer.fit(net, flat)
    assert net.steps == 0


def test_json_reader_rejects_other_files(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"pans": []}))
    with pytest.raises(ValueError, match="not a PANMonitor JSON"):
        read_monitor_json(tmp_path / "x.json")
    with pytest.raises(ValueError, match="cannot read"):
        read_monitor_json(tmp_path / "missing.json")


def test_input_size_from_example_input_array(tmp_path):
    ns = NAMESPACES["lightning.pytorch"]
    net = ns.net()
    net.example_input_array = torch.zeros(2, *INPUT)
    monitor = ns.monitor(every_n_epochs=1)
    trainer = _trainer(ns, tmp_path, callbacks=[monitor], logger=ns.pl.loggers.CSVLogger(tmp_path), max_epochs=0)
    monitor.setup(trainer, net, "fit")
    assert monitor.input_size == INPUT and not monitor._checked
    monitor.on_fit_start(trainer, net)
    assert monitor._checked
    assert os.path.dirname(str(monitor._log_dir)) == str(tmp_path / "lightning_logs")
