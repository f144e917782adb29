"""`pan-repair compare` on a user's own runs: a W&B offline run, a CSVLogger folder and a recipe stage,
compared together as HTML, table and JSON; group folders, renaming, and one-line errors for bad input."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
import wandb
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from pan_repair import LitDigitsCanvasDataModule, SmallCNN, find_pans
from pan_repair.callbacks.monitor import read_monitor_json
from pan_repair.cli import main
from pan_repair.lightning import PaddingSwitch, PANMonitor
from pan_repair.experiments.lit_module import BiasAwareClassifier
from pan_repair.experiments.pipeline import Stage, fit_stage
from pan_repair.runs.results import RunResult
from pan_repair.runs.wandb_offline import latest_run, read_offline_run

CANVAS = 24


def _module() -> BiasAwareClassifier:
    L.seed_everything(0, verbose=False)
    return BiasAwareClassifier(SmallCNN(1, 10, width=8, depth=3), 10, max_offset=CANVAS - 8)


def _data() -> LitDigitsCanvasDataModule:
    return LitDigitsCanvasDataModule(batch_size=32, canvas=CANVAS, scale=1, train_placement="biased")


def _fit(logger, callbacks=()) -> None:
    trainer = L.Trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=2, logger=logger, log_every_n_steps=1,
                        callbacks=[*callbacks, PANMonitor(every_n_epochs=1, border_threshold=0.5)], accelerator="cpu",
                        num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)
    trainer.fit(_module(), _data())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A user's W&B offline run (monitor JSON in its files/), a CSVLogger run and a recipe stage."""
    root = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_DIR", str(root / "wandb_dir"))
        logger = WandbLogger(offline=True, save_dir=str(root / "wb"), project="p", group="g", name="zeros")
        _fit(logger)
        logger.experiment.finish()
        wandb.teardown()
        _fit(CSVLogger(root / "csv", name="switch"), [PaddingSwitch("replicate")])
        fit_stage(_module(), _data(), None, Stage(root / "recipe", "baseline", "grp", "test"), 1,
                  [PANMonitor(every_n_epochs=1, border_threshold=0.5)], wandb=False,
                  report_fn=lambda model: find_pans(model, (1, CANVAS, CANVAS), border_threshold=0.5, n_patterns=2))
    torch.set_num_threads(threads)
    return {"wandb": latest_run(root / "wb"), "csv": root / "csv" / "switch" / "version_0",
            "recipe": root / "recipe" / "baseline"}


def _compare(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["compare", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_user_runs_compare_as_html(runs, tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, _ = _compare(capsys, str(runs["wandb"]), str(runs["csv"]), str(runs["recipe"]), "--out", str(out))
    assert code == 0 and str(out / "index.html") in stdout
    page = (out / "index.html").read_text()
    for name in ("zeros", "switch/version_0", "baseline"):
        assert name in page
    images = re.findall(r"<img src='([^']+)'", page)
    assert {"pans_per_layer.png", "timeline.png", "metrics.png"} <= set(images)
    assert sum(i.startswith("curve_") for i in images) >= 5  # val/acc, val/padding_flip, pan/count, ...
    for image in images:  # self-contained: every image is a file beside index.html, nothing remote
        assert "/" not in image and (out / image).read_bytes()[:4] == b"\x89PNG"
    assert "http" not in page and "<script" not in page
    # time/seconds: only the recipe logged it; the other two show "–"
    row = re.search(r"<tr><td>time/seconds</td>(.*?)</tr>", page).group(1)
    assert row.count("<td>–</td>") == 2
    assert not list(tmp_path.glob(".report.*"))  # the temporary folder is gone
    code, _, _ = _compare(capsys, str(runs["wandb"]), str(runs["csv"]), "--out", str(out), "--x", "epoch")
    page = (out / "index.html").read_text()  # replaced in place
    assert code == 0 and "each epoch's last value" in page and "baseline" not in page
    assert sorted(re.findall(r"<img src='([^']+)'", page)) == sorted(p.name for p in out.glob("*.png"))  # no stale


def test_user_runs_compare_as_json_with_what_they_logged(runs, capsys):
    code, stdout, _ = _compare(capsys, str(runs["wandb"]), str(runs["csv"]), str(runs["recipe"]), "--format", "json")
    assert code == 0
    result = {r["name"]: r for r in json.loads(stdout)["runs"]}
    assert {n: r["source"] for n, r in result.items()} == {"zeros": "W&B", "switch/version_0": "Lightning",
                                                         "baseline": "recipe"}
    logged = read_offline_run(runs["wandb"])
    accuracy = [(row["trainer/global_step"], row["val/acc"]) for row in logged.history if "val/acc" in row]
    zeros = result["zeros"]
    assert [(s, v) for s, _, v in zeros["curves"]["val/acc"]] == accuracy
    assert zeros["final"]["val/acc"] == accuracy[-1][1] and zeros["group"] == "g"
    history, report, _ = read_monitor_json(runs["wandb"] / "files" / "pan_monitor.json")
    assert [s["count"] for s in zeros["scans"]] == [s["count"] for s in history.scans]
    assert sum(zeros["per_layer"].values()) == report.count == zeros["final"]["pan/count"]
    assert len(zeros["per_layer"]) == len(report.layers)  # every scanned layer, PANs or not
    switch = result["switch/version_0"]
    assert switch["final"]["val/padding_flip"] == 0  # replicate padding switched to replicate: no flip
    assert [e for _, e, _ in switch["curves"]["val/acc"]] == [0, 1] and len(switch["scans"]) == 2
    baseline = result["baseline"]
    recipe = RunResult.load(runs["recipe"])
    assert baseline["final"]["val/acc"] == pytest.approx(recipe.metrics["val/acc"]) and baseline["group"] == "grp"
    assert sum(baseline["per_layer"].values()) == recipe.metrics["pan/count"]


def test_table_shows_missing_keys_as_dashes(runs, capsys):
    code, stdout, _ = _compare(capsys, str(runs["wandb"]), str(runs["recipe"]), "--format", "table")
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in stdout.splitlines() if line.strip()}
    assert rows["run"] == ["zeros", "baseline"] and rows["source"] == ["W&B", "recipe"]
    assert rows["time/seconds"][0] == "–" and float(rows["time/seconds"][1]) > 0
    assert len(rows["val/acc"]) == 2 and "–" not in rows["val/acc"]
    assert "PANs" in rows and rows["model.features.0"][0] != "–"


def test_group_folder_holds_every_run_and_names_can_be_given(runs, tmp_path, capsys):
    group = tmp_path / "project" / "wandb"
    group.mkdir(parents=True)
    shutil.copytree(runs["wandb"], group / runs["wandb"].name)
    shutil.copytree(runs["wandb"], group / runs["wandb"].name.replace("offline-run-", "run-"))  # a synced run
    (group / "latest-run").symlink_to(group / runs["wandb"].name)  # wandb's link: not a third run
    code, stdout, _ = _compare(capsys, str(tmp_path / "project"), "--format", "json")
    assert code == 0 and [r["name"] for r in json.loads(stdout)["runs"]] == ["zeros", "zeros (2)"]
    code, stdout, _ = _compare(capsys, str(group), str(runs["csv"] / "metrics.csv"), "--name", "a", "--name", "b",
                               "--name", "c", "--format", "json")  # a run's file stands for its folder
    assert code == 0 and [r["name"] for r in json.loads(stdout)["runs"]] == ["a", "b", "c"]
    code, _, err = _compare(capsys, str(group), "--name", "a", "--format", "json")
    assert code == 2 and "1 --name given for 2 runs (zeros, zeros (2))" in err and len(err.splitlines()) == 1


def test_a_recipe_folder_lists_each_stage_once(runs, tmp_path, capsys):
    """A recipe's output folder holds each stage twice (its folder and its W&B run): the stage is kept."""
    root = tmp_path / "recipe_out"
    shutil.copytree(runs["wandb"], root / "wandb" / runs["wandb"].name)
    RunResult("zeros", "g", "test", metrics={"val/acc": 0.5}).save(root / "zeros")
    code, stdout, _ = _compare(capsys, str(root), "--format", "json")
    assert code == 0
    assert [(r["name"], r["source"]) for r in json.loads(stdout)["runs"]] == [("zeros", "recipe")]


def _copy_run(run: Path, into: Path, content=None) -> None:
    """Copy a W&B run folder into ``into``; ``content(bytes) -> bytes | None`` rewrites (None: deletes) its .wandb."""
    copy = Path(shutil.copytree(run, into / run.name))
    if content is not None:
        file = next(copy.glob("run-*.wandb"))
        data = content(file.read_bytes())
        file.unlink() if data is None else file.write_bytes(data)


def _flip(data: bytes) -> bytes:
    return data[:300] + bytes([data[300] ^ 0xFF]) + data[301:]


@pytest.mark.parametrize("setup, message", [
    (lambda d, w: None, "does not exist"),
    (lambda d, w: d.mkdir(), "holds no W&B run, Lightning metrics.csv, PANMonitor JSON or results.json"),
    (lambda d, w: (d.mkdir(), (d / "notes.txt").write_text("x")), "nothing to compare"),
    (lambda d, w: _copy_run(w, d / "wandb", _flip), "corrupt W&B record"),
    (lambda d, w: _copy_run(w, d, lambda data: b""), "not a W&B run file (only 0 bytes)"),
    (lambda d, w: _copy_run(w, d, lambda data: None), "expected one run-*.wandb file"),
    (lambda d, w: (d.mkdir(), (d / "results.json").write_text("{not json")), "is corrupt"),
    (lambda d, w: (d.mkdir(), (d / "pan_monitor.json").write_text('{"format": "other"}')), "not a PANMonitor JSON"),
    (lambda d, w: (d.mkdir(), (d / "pan_monitor.json").write_text(
        '{"format": "pan_repair.monitor/1", "history": {"scans": [], "pans": {}}, "last_report": {"x": 1}}')),
     "pan_monitor.json is corrupt"),
    (lambda d, w: (d.mkdir(), (d / "metrics.csv").write_text("step,val/acc\n0,high\n")), "not a readable Lightning"),
])
def test_bad_runs_fail_in_one_line_and_write_nothing(setup, message, runs, tmp_path, capsys):
    bad = tmp_path / "bad"
    setup(bad, runs["wandb"])
    out = tmp_path / "never"
    code, _, err = _compare(capsys, str(runs["recipe"]), str(bad), "--out", str(out))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert err.startswith("pan-repair compare: error: ") and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_a_wandb_run_without_the_monitor_json_uses_what_it_logged(runs, tmp_path, capsys):
    """Where the monitor wrote its JSON elsewhere (e.g. a CSVLogger came first), W&B's own tables serve."""
    copy = Path(shutil.copytree(runs["wandb"], tmp_path / runs["wandb"].name))
    (copy / "files" / "pan_monitor.json").unlink()
    code, stdout, _ = _compare(capsys, str(copy), "--format", "json")
    assert code == 0
    run = json.loads(stdout)["runs"][0]
    history, report, _ = read_monitor_json(runs["wandb"] / "files" / "pan_monitor.json")
    assert run["scans"] == [] and run["per_layer"] == {layer.name: len(report.by_layer().get(layer.name, []))
                                                      for layer in report.layers}
    assert [v for _, _, v in run["curves"]["pan/count"]] == [s["count"] for s in history.scans]
