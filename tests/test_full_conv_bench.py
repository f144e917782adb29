"""benchmarks/full_conv.py at a tiny size: the relational task's geometry, a job's rows and
columns, a resumable JSONL sweep and the table with its goal line; importable without wandb and
jsonargparse (the GPU machine has neither)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _scripts import benchmark

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "full_conv.py"
bench = benchmark("full_conv")

ROWS = ("none", "circular", "full", "consistency full")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ink_height(x: torch.Tensor) -> torch.Tensor:
    """Mean row of the ink pixels of each image (px from the top)."""
    ink = (x[:, 0] > 1.5).float()
    rows = torch.arange(x.shape[-2], dtype=torch.float32)[:, None]
    return (ink * rows).sum((1, 2)) / ink.sum((1, 2))


def test_relation_task_ties_the_pair_height_to_the_class_only_in_training():
    similar, dissimilar = bench.relation_data("val", False, 200), bench.relation_data("val", True, 200)
    for (x, y), high in ((similar, 0), (dissimilar, 1)):
        assert x.shape == (200, 1, 32, 32) and set(y.tolist()) == {0, 1}
        heights = _ink_height(x)  # the pair's centre: above row 16 for the class that sits high
        assert heights[y == high].mean() < 14 and heights[y != high].mean() > 17
    torch.testing.assert_close(similar[0].mean((1, 2, 3)), torch.zeros(200), atol=1e-5, rtol=0)
    black, labels = bench.relation_data("val", False, 200, black=True)  # ink on exact zeros, the same pairs
    assert torch.equal(labels, similar[1]) and black.min() == 0 and (black == 0).float().mean() > 0.8


def test_a_job_the_sweep_and_the_table(tmp_path):
    config = bench.Config(epochs=1, limit=32, rows=ROWS)
    jsonl = tmp_path / "jobs.jsonl"
    jobs = bench.sweep(["relation"], [0], config, workers=1, jsonl=str(jsonl))
    (job,) = jobs
    assert [r["name"] for r in job["rows"]] == list(ROWS) and job["train"] == job["val"] == 32
    for row in job["rows"]:
        assert 0 <= row["similar"] <= 1 and 0 <= row["dissimilar"] <= 1 and 0 <= row["reliance"] <= 1
        assert row["step_ms"] > 0 and row["pans"] >= row["border_pans"] >= 0
    assert next(r for r in job["rows"] if r["name"] == "circular")["border_pans"] == 0  # no border at all
    assert json.loads(jsonl.read_text()) == job
    assert bench.sweep(["relation"], [0], config, workers=1, jsonl=str(jsonl)) == jobs  # resumed: nothing re-run
    text = bench.table(jobs, "cmd")
    assert "## relation" in text and "| full |" in text and "Goal (dissimilar within 2 pts" in text
    out = tmp_path / "table.md"
    bench.main(["--tasks", "relation", "--from-jsonl", str(jsonl), "--out", str(out)])
    assert "| consistency full |" in out.read_text()


def test_importable_without_wandb_and_jsonargparse():
    code = ("import sys; sys.modules['wandb'] = None; sys.modules['jsonargparse'] = None; "
            f"sys.path.insert(0, {str(_PATH.parent)!r}); import full_conv")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=_PATH.parents[1])
