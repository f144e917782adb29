"""benchmarks/threshold_matrix.py: the validity targets per position threshold, from the matrix's
``--compare`` rows and the oracle's rows of the same networks."""
from __future__ import annotations

import json

from _scripts import benchmark

tm = benchmark("threshold_matrix")


def _compare_row(size=64, pans=236, frac=0.049, margin=0.201, at=None) -> dict:
    return dict(arch="resnet18", convention="norm", size=size, position_threshold=0.45, pans=pans, frac=frac,
                margin=margin, eta_margin=0.2, cpu="Xeon",
                at=at if at is not None else {"0.6": dict(channels=75, frac=0.016, margin=0.055)})


def _oracle_row(size=64) -> dict:
    return dict(arch="resnet18", convention="norm", size=size, oracle_pans=75, oracle_cpu="Xeon",
                oracle={"flagged": dict(channels=75, frac=0.016, margin=0.055),
                        "1": dict(channels=75, frac=0.016, margin=0.3),  # an oracle set, not a threshold
                        "t0.45": dict(channels=236, frac=0.049, margin=0.201),
                        "t0.3": dict(channels=575, frac=0.12, margin=0.039)})


def test_a_compare_row_gives_its_own_threshold_and_the_compared_ones():
    levels = tm.by_threshold(_compare_row())
    assert list(levels) == [0.6, 0.45]
    assert (levels[0.45]["channels"], levels[0.45]["margin"]) == (236, 0.201)
    assert (levels[0.6]["channels"], levels[0.6]["margin"]) == (75, 0.055)


def test_an_oracle_row_gives_its_default_and_its_sweep_but_not_its_oracle_sets():
    levels = tm.by_threshold(_oracle_row())
    assert list(levels) == [0.6, 0.45, 0.3]
    assert levels[0.6]["channels"] == 75 and levels[0.3]["margin"] == 0.039
    assert list(tm.by_threshold(_oracle_row(), oracle_default=0.5)) == [0.5, 0.45, 0.3]


def test_nothing_flagged_has_no_margin_and_counts_apart():
    row = _compare_row(pans=0, frac=0.0, margin=None, at={"0.6": {"channels": 0, "frac": 0.0}})
    levels = tm.by_threshold(row)
    assert all(v["margin"] is None for v in levels.values())
    assert tm.tally({"resnet18:norm:64": {"source": "x", "levels": levels}}, 0.45) == dict(
        cells=1, none=1, met=0, missed=0, over=0)


def test_verdicts_and_the_tally_apply_both_targets():
    assert tm.verdict(dict(channels=10, frac=0.2, margin=0.12)) == "met"           # over 10% but selective
    assert tm.verdict(dict(channels=10, frac=0.2, margin=0.05)) == "missed + over 10%"
    assert tm.verdict(dict(channels=10, frac=0.05, margin=0.0999)) == "missed"
    assert tm.verdict(dict(channels=10, frac=0.05, margin=None)) == "-"            # Lite0: not silenced
    cells = {"a": {"source": "x", "levels": tm.by_threshold(_oracle_row())}}
    assert tm.tally(cells, 0.6) == dict(cells=1, none=0, met=0, missed=1, over=0)
    assert tm.tally(cells, 0.45) == dict(cells=1, none=0, met=1, missed=0, over=0)
    assert tm.tally(cells, 0.3) == dict(cells=1, none=0, met=0, missed=1, over=1)


def test_a_later_file_replaces_an_earlier_ones_cell(tmp_path):
    oracle, run = tmp_path / "oracle.jsonl", tmp_path / "run.jsonl"
    oracle.write_text(json.dumps(_oracle_row()) + "\n" + json.dumps(_oracle_row(size=96)) + "\n")
    run.write_text(json.dumps(_compare_row(margin=0.25)) + "\n")
    cells = tm.load([str(oracle), str(run)])
    assert cells["resnet18:norm:64"]["source"] == "run.jsonl"
    assert cells["resnet18:norm:64"]["levels"][0.45]["margin"] == 0.25
    assert cells["resnet18:norm:96"]["source"] == "oracle.jsonl"
    text = tm.table(cells)
    assert "| 0.45 | 2 | 0 | 2 | 0 | 0 |" in text and "| 0.3 | 1 | 0 | 0 | 1 | 1 |" in text
    assert tm.sources(cells) == "1 cells from run.jsonl (Xeon); 1 cells from oracle.jsonl (Xeon)"


def test_the_same_networks_tally_keeps_only_cells_measured_at_every_threshold():
    cells = {"resnet18:norm:64": {"source": "x", "levels": tm.by_threshold(_oracle_row())},          # 0.6, 0.45, 0.3
             "resnet18:norm:96": {"source": "y", "levels": tm.by_threshold(_compare_row(size=96))},  # 0.6, 0.45
             "lite0:photos:96": {"source": "y", "levels": {0.6: dict(channels=5, frac=0.1, margin=None),
                                                           0.45: dict(channels=9, frac=0.2, margin=None)}}}
    assert list(tm.common(cells, (0.6, 0.45))) == ["resnet18:norm:64", "resnet18:norm:96"]
    assert list(tm.common(cells, (0.6, 0.3))) == ["resnet18:norm:64"]
    text = tm.table(cells, same=(0.6, 0.3))
    assert "The same networks: the 1 digits cells measured at all of 0.6 / 0.3:" in text
    same = text.split("The same networks")[1]
    assert "| 0.6 | 1 | 0 | 0 | 1 | 0 |" in same and "| 0.3 | 1 | 0 | 0 | 1 | 1 |" in same and "| 0.45 |" not in same
