"""benchmarks/saturated_layers.py: data-free scans with and without the saturated-layer rule, on a
validity-matrix cell (SmallCNN, digits on a noisy background, 32 px), its trained weights cached."""
from __future__ import annotations

import pytest

from _scripts import benchmark, measure_one_thread

pytestmark = pytest.mark.slow

bench = benchmark("saturated_layers")


def test_a_cell_is_scanned_with_and_without_the_rule(tmp_path):
    row = measure_one_thread(bench, "smallcnn:noisy:32", tmp_path)
    assert (tmp_path / "smallcnn_noisy_32.pt").exists()
    assert row["acc_half"] >= 0.9 and row["layers"] == 5
    # the rule only takes position PANs away, in the layers it names
    assert row["after"]["frac"] <= row["before"]["frac"]
    assert (row["after"]["frac"] < row["before"]["frac"]) <= bool(row["saturated"])
    for scan in (row["before"], row["after"]):
        assert 0.0 <= scan["frac"] <= 1.0 and ("margin" in scan) == (scan["frac"] > 0)
    text = bench.table([row])
    assert "| smallcnn noisy 32 px |" in text and f"{len(row['saturated'])} of 5" in text
