"""benchmarks/stem_canvas.py: data-free scans before and after probing at the level the stem implies,
on a validity-matrix cell (SmallCNN, [0, 1] digits on white, 32 px), its trained weights cached."""
from __future__ import annotations

import pytest

from _scripts import benchmark, measure_one_thread

pytestmark = pytest.mark.slow

bench = benchmark("stem_canvas")


def test_a_cell_is_scanned_before_and_after_and_its_weights_cached(tmp_path):
    row = measure_one_thread(bench, "smallcnn:white:32", tmp_path)
    again = measure_one_thread(bench, "smallcnn:white:32", tmp_path)  # from the cache: the same network
    assert (tmp_path / "smallcnn_white_32.pt").exists()
    assert row["acc_half"] >= 0.9 and float(row["level"]) > 0.9  # white background: about 0.96
    for key in ("acc_digit", "acc_half", "before", "after", "data_frac"):
        assert again[key] == row[key]
    for scan in (row["before"], row["after"]):
        assert 0.0 <= scan["frac"] <= 1.0 and ("margin" in scan) == (scan["frac"] > 0)
    text = bench.table([row])
    assert "| smallcnn white 32 px |" in text and f"{100 * row['after']['frac']:.1f}%" in text
