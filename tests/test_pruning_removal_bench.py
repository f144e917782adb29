"""benchmarks/pruning_removal.py at a tiny size: every row and column is there, with finite values."""
import math

import torch
from torch import nn

from pan_repair import SmallCNN
from _scripts import benchmark

torch.set_num_threads(2)

bench = benchmark("pruning_removal")

NUMBERS = ["pans", "filters", "pan_channels", "scan_s", "params_original", "params_masked", "zeroed_masked",
           "removed_channels", "removed_layers", "removed_pan_channels", "not_removable_layers",
           "not_removable_channels", "params_removed", "zeroed_removed", "smaller_pct", "max_abs_diff", "rel_diff",
           "ms_original", "ms_copy", "ms_masked", "ms_removed", "ratio_copy", "ratio_masked", "ratio_removed", "wall_s"]


def _check(row):
    assert row["error"] is None
    for key in NUMBERS:
        assert math.isfinite(row[key]), (row["model"], key, row[key])
    assert row["params_masked"] == row["params_original"]  # masking keeps every parameter
    assert row["pan_channels"] > 0 and row["removed_channels"] > 0
    assert row["params_removed"] < row["params_original"] and row["smaller_pct"] > 0
    assert row["max_abs_diff"] <= 1e-4 * max(1.0, row["out_scale"])  # removed computes what masked computes


class _TinyRes(nn.Module):
    """stem -> conv -> conv + residual -> pool -> linear: the second conv's channels meet an add."""

    def __init__(self):
        super().__init__()
        block = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o))  # noqa: E731
        self.stem, self.a, self.b = block(3, 8), block(8, 8), block(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.b(torch.relu(self.a(x))))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_rows_columns_and_report():
    torch.manual_seed(0)
    plain = SmallCNN(in_chans=1, num_classes=2, depth=3, width=8).eval()
    torch.manual_seed(0)
    resnet = _TinyRes().eval()
    log = lambda s: None  # noqa: E731
    rows = [bench.measure("smallcnn", plain, (1, 24, 24), "low", batch=2, rounds=1, log=log),
            bench.measure("tinyres", resnet, (3, 24, 24), "low", batch=2, rounds=1, log=log)]
    for row in rows:
        _check(row)
    assert rows[1]["not_removable_layers"] > 0  # residual adds
    assert any("residual add" in why for why in rows[1]["reasons"])
    lines = bench.table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    assert all(line.count("|") == len(bench.COLUMNS) + 1 for line in lines)
    assert lines[2].startswith("| smallcnn (1x24x24) | low |")
    assert lines[3].startswith("| tinyres (3x24x24) | low |")
    reasons = bench.reasons_text(rows)
    assert "tinyres, low thresholds:" in reasons and "residual add" in reasons


def test_main_writes_the_report(tmp_path):
    out = tmp_path / "r.md"
    bench.main(["--models", "smallcnn", "--thresholds", "default", "--rounds", "1", "--batch", "2",
                "--out", str(out)])
    text = out.read_text()
    assert "| smallcnn (1x24x24) | default |" in text and "Total run time:" in text and "torch threads" in text
