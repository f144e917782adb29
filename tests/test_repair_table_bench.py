"""benchmarks/mitigations_lite0.py and mitigations_resnet.py (shared machinery:
benchmarks/repair_table.py) at a tiny size: the tables have every requested row and seed, masking
the detected PANs removes all of the baseline's PANs, replicate padding has zero padding reliance,
and the paired edge gap sees a model that fails only at the edges."""

import pytest
import torch
from torch import nn

from _scripts import benchmark

_load = benchmark


def _tables(text):
    """heading -> {row name: {column name: cell}} for each '## ' section."""
    tables, rows, columns = {}, None, []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("## "):
            rows = tables[line[3:]] = {}
        elif line.startswith("| repair"):
            columns = cells
        elif line.startswith("| ") and rows is not None:
            rows[cells[0]] = dict(zip(columns, cells))
    return tables


@pytest.mark.slow
@pytest.mark.parametrize("name, task, seeds, min_pans", [
    ("mitigations_lite0", "lite0", ["0"], 100),
    ("mitigations_resnet", "random", ["0", "1"], 1),
    ("mitigations_resnet", "shortcut", ["0"], 1),
])
def test_table_rows_and_measured_columns(tmp_path, name, task, seeds, min_pans):
    bench = _load(name)
    out = tmp_path / "table.md"
    bench.main(["--task", task, "--limit", "8", "--epochs", "1", "--ft-epochs", "1", "--threads", "2",
                "--out", str(out), "--seeds", *seeds, "--only", "replicate", "prune PANs"])
    tables = _tables(out.read_text())
    assert list(tables) == (["Means over the seeds"] if len(seeds) > 1 else []) + [f"Seed {s}" for s in seeds]
    for rows in tables.values():
        assert list(rows) == ["baseline", "replicate", "prune PANs"]
        assert ("acc. swapped %" in rows["baseline"]) == (task == "shortcut")
        assert float(rows["baseline"]["PANs after (border / position)"].split()[0]) >= min_pans  # PAN-rich
        assert float(rows["prune PANs"]["baseline PANs removed %"]) == 100.0  # all masked, none detected again
        assert float(rows["replicate"]["flips → replicate %"]) == 0.0  # already replicate: switching changes nothing
        assert float(rows["replicate"]["output shift → replicate %"]) == 0.0
    if len(seeds) > 1:  # the seeds' tables, each from a file of its own, tabulated again
        parts = out.read_text().split("\n## Seed ")
        for seed, part in zip(seeds, parts[1:]):
            (tmp_path / f"seed{seed}.md").write_text(f"# one seed\n\n## Seed {part}")
        combined = tmp_path / "combined.md"
        bench.main(["--task", task, "--out", str(combined), "--combine",
                    *(str(tmp_path / f"seed{s}.md") for s in seeds)])
        again = _tables(combined.read_text())
        assert list(again) == list(tables)
        for row, cells in tables["Means over the seeds"].items():
            for column, cell in cells.items():
                mine = again["Means over the seeds"][row][column]
                if column in ("repair", "PANs after (border / position)"):
                    assert mine == cell
                elif cell != "-":  # means of rounded figures, rounded: within a last digit
                    digit = 1.01 if column == "wall (s)" else 0.101
                    assert float(mine.split()[0]) == pytest.approx(float(cell.split()[0]), abs=digit, nan_ok=True)
        (tmp_path / "other.md").write_text((tmp_path / f"seed{seeds[1]}.md").read_text().replace("| prune PANs", "| x"))
        (tmp_path / "no_tables.md").write_text("# no tables\n")
        for bad in (tmp_path / "missing.md", tmp_path / "no_tables.md", tmp_path / "other.md"):
            with pytest.raises(SystemExit):
                bench.main(["--task", task, "--combine", str(tmp_path / f"seed{seeds[0]}.md"), str(bad)])
    with pytest.raises(SystemExit):
        bench.main(["--only", "no such row"])
    with pytest.raises(SystemExit):
        bench.main(["--task", "no such task"])


class _InkAtCentre(nn.Module):
    """Predicts class 3 when the canvas centre is bright, else class 0."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)  # a padded layer for the switch to replicate

    def forward(self, x):
        c = x.shape[-1] // 2
        bright = x[:, 0, c, c] > 0.5
        return torch.nn.functional.one_hot(torch.where(bright, 3, 0), 10).float() + 0 * self.conv(x[:, :1]).mean()


def test_paired_edge_gap_is_accuracy_centred_minus_at_the_edges():
    table = _load("repair_table")
    bed = _load("mitigations_resnet").RESNET
    n, side = 6, bed.canvas
    paired = torch.zeros(n, 5, 1, side, side)
    paired[:, 0] = 1.0             # centred: bright centre, predicted 3
    paired[:3, 1] = 1.0            # half the top-edge copies bright too
    val = table.Split(paired[:, 0], torch.full((n,), 3), torch.zeros(n, dtype=torch.long), paired)
    measured = table.evaluate(bed, _InkAtCentre(), val)
    assert measured["acc"] == 1.0
    assert measured["edge_gap"] == pytest.approx(1.0 - 0.5 / 4)  # edges: 1/2, 0, 0, 0 right
    assert measured["reliance"] == 0.0


def test_paired_placements_centre_then_touch_top_bottom_left_right():
    table = _load("repair_table")
    val = table.load(_load("mitigations_resnet").RESNET, "val", limit=4)
    ink = val.paired[:, :, 0] > 2.0  # digit strokes, far above the background noise
    coords = torch.arange(48.0)
    rows = (ink.sum(-1) * coords).sum(-1) / ink.sum((-1, -2))
    cols = (ink.sum(-2) * coords).sum(-1) / ink.sum((-1, -2))
    assert ((rows[:, 0] - 23.5).abs() < 6).all() and ((cols[:, 0] - 23.5).abs() < 6).all()
    assert (rows[:, 1] < 18).all() and (rows[:, 2] > 29).all()  # top, bottom
    assert (cols[:, 3] < 18).all() and (cols[:, 4] > 29).all()  # left, right
