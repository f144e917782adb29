"""The demo pipeline as a new user runs it, at a reduced size: every stage leaves results.json with
the expected numbers, W&B offline runs in one group, and the comparison report."""
from pathlib import Path

import pytest
import torch

from pan_repair import SmallCNN
from pan_repair.experiments.recipe_cli import run_recipe
from pan_repair.runs.results import RunResult
from pan_repair.runs.wandb_offline import read_offline_run
from _scripts import load_script

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _recipe(name: str):
    return getattr(load_script(RECIPES / f"{name}.py", name), name)


@pytest.mark.slow
def test_prune_finetune_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    out = tmp_path / "runs"
    code = run_recipe(_recipe("prune_finetune"), ["--out_dir", str(out), "--epochs", "2", "--finetune_epochs", "1",
                                                  "--setup.width", "12", "--setup.depth", "4", "--setup.classes", "[0, 1, 2, 3]"])
    assert code == 0
    runs = {name: RunResult.load(out / name) for name in ("baseline", "pruned", "pruned+finetuned")}
    base, pruned, tuned = runs.values()
    assert {r.group for r in runs.values()} == {"prune_finetune-seed0"}
    for run in runs.values():
        assert 0 <= run.metrics["val/acc"] <= 1 and 0 <= run.metrics["swapped/acc"] <= 1
        assert 0 <= run.metrics["val/padding_flip"] <= 1
        assert run.metrics["pan/count"] == run.pan_report().count
    assert [h["epoch"] for h in base.history] == [0, 1]   # PANMonitor scanned every epoch
    # the pruned PANs are silenced: none of them is found again right after pruning
    silenced = {(p.layer, p.channel) for p in base.pan_report().pans}
    assert not silenced & {(p.layer, p.channel) for p in pruned.pan_report().pans}
    page = (out / "report" / "index.html").read_text()
    assert all(name in page for name in runs)
    wandb_runs = sorted((out / "baseline").parent.glob("wandb/offline-run-*"))
    assert len(wandb_runs) == 3
    logged = read_offline_run(wandb_runs[0])
    assert logged.group == "prune_finetune-seed0"
    assert any("pan/count" in row for row in logged.history)

    # as make demo goes on: the padding switch from the same trained baseline, into the same report
    code = run_recipe(_recipe("padding_switch_finetune"), [
        "--out_dir", str(out), "--epochs", "2", "--finetune_epochs", "1", "--mode", "replicate",
        "--baseline", str(out / "baseline"), "--setup.width", "12", "--setup.depth", "4",
        "--setup.classes", "[0, 1, 2, 3]", "--setup.wandb", "false"])
    assert code == 0
    switched = RunResult.load(out / "replicate")
    assert switched.metrics["pan/count"] == switched.pan_report().count
    assert not switched.pan_report().of_kind("border")
    assert RunResult.load(out / "baseline").metrics == base.metrics  # loaded, not retrained
    page = (out / "report" / "index.html").read_text()
    assert all(name in page for name in ("baseline", "replicate", "replicate+finetuned"))


@pytest.mark.parametrize("baseline, match", [("missing.pt", "cannot read weights"), ("narrow.pt", "do not fit")])
def test_bad_baseline_weights_are_one_line(baseline, match, tmp_path, capsys):
    torch.save(SmallCNN(1, 10, width=8).state_dict(), tmp_path / "narrow.pt")
    argv = ["--out_dir", str(tmp_path / "runs"), "--baseline", str(tmp_path / baseline), "--setup.wandb", "false"]
    assert run_recipe(_recipe("padding_switch_finetune"), argv) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing written


def test_bad_config_key_is_one_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("epochs: 1\nepochz: 2\n")
    assert run_recipe(_recipe("prune_finetune"), ["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "epochz" in err and len(err.splitlines()) == 1


def test_finetune_budget_is_checked(capsys):
    assert run_recipe(_recipe("prune_finetune"), ["--epochs", "1", "--finetune_epochs", "2"]) == 2
    assert "exceeds the training budget" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("recipe, extra, stages", [
    ("padding_switch_finetune", ["--mode", "replicate"], ("baseline", "replicate", "replicate+finetuned")),
    ("padding_switch_finetune", ["--mode", "full"], ("baseline", "full", "full+finetuned")),
    ("regularized_training", ["--every", "1"], ("plain", "regularized", "plain+regularized_finetune")),
    ("regularized_training", ["--penalty", "consistency"], ("plain", "regularized", "plain+regularized_finetune")),
])
def test_repair_recipes_end_to_end(recipe, extra, stages, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    out = tmp_path / "runs"
    code = run_recipe(_recipe(recipe), ["--out_dir", str(out), "--epochs", "2", "--finetune_epochs", "1",
                                        "--setup.width", "12", "--setup.depth", "4", "--setup.classes", "[0, 1, 2, 3]", *extra])
    assert code == 0
    runs = {name: RunResult.load(out / name) for name in stages}
    assert {r.group for r in runs.values()} == {f"{recipe}-seed0"}
    for run in runs.values():
        assert 0 <= run.metrics["val/acc"] <= 1 and 0 <= run.metrics["swapped/acc"] <= 1
        assert run.metrics["pan/count"] == run.pan_report().count
    if stages[1] == "replicate":
        # replicate padding makes no border PANs: none after the switch, none after fine-tuning
        assert all(not r.pan_report().of_kind("border") for r in list(runs.values())[1:])
    elif stages[1] == "full":  # zeros d(k-1) a side: the detector scores the frame, see padding_switch
        assert all(layer.pads == (2, 2, 2, 2) for layer in runs["full"].pan_report().layers)
    else:
        assert [h["epoch"] for h in runs["regularized"].history] == [0, 1]
    page = (out / "report" / "index.html").read_text()
    assert all(name in page for name in stages)
    assert len(sorted(out.glob("wandb/offline-run-*"))) == 3


@pytest.mark.parametrize("recipe, argv, match", [
    ("padding_switch_finetune", ["--mode", "zeros", "--epochs", "0", "--finetune_epochs", "0"], "unknown mode"),
    ("padding_switch_finetune", ["--layers", "some"], "layers must be 'all' or 'pans'"),
    ("regularized_training", ["--weight", "-1", "--epochs", "0", "--finetune_epochs", "0"], "weight must be >= 0"),
    ("regularized_training", ["--penalty", "l2"], "penalty must be 'pan' or 'consistency'"),
])
def test_repair_recipes_bad_input_is_one_line(recipe, argv, match, tmp_path, capsys):
    assert run_recipe(_recipe(recipe), ["--out_dir", str(tmp_path), "--setup.wandb", "false", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1


def _image_folder(root: Path, n: int = 6) -> Path:
    """A tiny ImageFolder: classes 'bright' and 'dark', ``n`` 20x20 PNGs each."""
    from PIL import Image
    gen = torch.Generator().manual_seed(0)
    for name, level in (("bright", 200), ("dark", 40)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            noise = torch.randint(0, 40, (20, 20, 3), generator=gen, dtype=torch.uint8)
            Image.fromarray((noise + level).numpy()).save(root / name / f"{i}.png")
    return root


@pytest.mark.slow
def test_recipe_on_your_own_image_folder(tmp_path):
    data = _image_folder(tmp_path / "images")
    out = tmp_path / "runs"
    code = run_recipe(_recipe("padding_switch_finetune"), [
        "--out_dir", str(out), "--epochs", "1", "--finetune_epochs", "1", "--mode", "replicate",
        "--setup.data", str(data), "--setup.image_size", "16", "--setup.width", "8", "--setup.depth", "3",
        "--setup.wandb", "false"])
    assert code == 0
    run = RunResult.load(out / "replicate+finetuned")
    assert 0 <= run.metrics["val/acc"] <= 1 and "swapped/acc" not in run.metrics
    assert run.pan_report().input_size == (3, 16, 16)


@pytest.mark.parametrize("make, match", [
    (lambda root: root / "nowhere", "does not exist"),
    (lambda root: root, "class folder"),
])
def test_missing_or_empty_dataset_path_is_one_line(make, match, tmp_path, capsys):
    argv = ["--out_dir", str(tmp_path / "runs"), "--setup.data", str(make(tmp_path)), "--setup.wandb", "false"]
    assert run_recipe(_recipe("prune_finetune"), argv) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1
