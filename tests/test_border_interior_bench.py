"""benchmarks/border_interior.py: scans with and without the border score's interior rule, on a
validity-matrix cell (SmallCNN, digits on black, 32 px: its maps are 16 px or more, where every padded
axis keeps padding-free positions, so the rule changes nothing), its trained weights cached."""
from __future__ import annotations

import pytest

from _scripts import benchmark, measure_one_thread

pytestmark = pytest.mark.slow

bench = benchmark("border_interior")


def test_a_cell_is_scanned_with_and_without_the_rule(tmp_path):
    row = measure_one_thread(bench, "smallcnn:black:32", tmp_path)
    assert (tmp_path / "smallcnn_black_32.pt").exists()
    assert row["acc_half"] >= 0.9
    for key in ("free", "data"):
        scans = row[key]
        assert scans["layers"] == 5 and scans["named"] == 0 and scans["before"] == scans["after"]
        for scan in (scans["before"], scans["after"]):
            assert 0.0 <= scan["frac"] <= 1.0 and ("margin" in scan) == (scan["frac"] > 0)
    text = bench.table([row])
    assert "| smallcnn black 32 px | 0, 1 |" in text and "| free |" in text and "| data |" in text
