"""benchmarks/detector_validity.py's tabulation: the data-free columns taken from stem_canvas.py's scan
of the same network, and which CPU measured which cells."""
from __future__ import annotations

import copy

from _scripts import benchmark

bench = benchmark("detector_validity")


def _row(arch="resnet18", convention="black", size=96, **extra) -> dict:
    row = dict(arch=arch, convention=convention, size=size, seed=0, threads=1, acc_digit=0.9312, acc_half=0.9988,
               free_pans=2130, free_frac=0.4437, free_kinds={"border": 1973, "position": 157}, free_margin=0.384,
               free_assumptions=["data-free probes: inputs = pixels in [0, 1]"])
    return {**row, **extra}


def _canvas(acc_digit=0.9313, threads=1, seed=0) -> dict:
    return dict(arch="resnet18", convention="black", size=96, seed=seed, threads=threads, acc_digit=acc_digit,
                acc_half=0.9988, after={"frac": 0.0852, "kinds": {"border": 400, "position": 9}, "margin": -0.001})


def test_the_same_network_gets_the_current_data_free_scan():
    rows = {"resnet18:black:96": _row()}
    bench.overlay_free(rows, [_canvas()])  # accuracies 0.9312 vs 0.9313: the files' rounding, one network
    r = rows["resnet18:black:96"]
    assert (r["free_pans"], r["free_frac"], r["free_margin"], r["mid_grey"]) == (409, 0.0852, -0.001, False)
    assert r["free_kinds"] == {"border": 400, "position": 9}


def test_another_network_keeps_its_mid_grey_scan_and_is_marked():
    for canvas in (_canvas(acc_digit=0.9337), _canvas(threads=2), _canvas(seed=1)):
        rows = {"resnet18:black:96": _row()}
        bench.overlay_free(rows, [canvas])
        assert rows["resnet18:black:96"]["mid_grey"] is True
        assert rows["resnet18:black:96"]["free_pans"] == 2130
        assert "(g)" in bench.table([{**rows["resnet18:black:96"], **_table_fields()}])


def test_rows_already_probed_at_the_implied_level_and_lite0_are_left_alone():
    current = _row(free_assumptions=[f"... {bench.CANVAS_NOTE} 0.04 and the border score ..."])
    lite = _row(arch="lite0", convention="photos [-1,1]")
    rows = {"resnet18:black:96": current, "lite0:photos:96": lite}
    before = copy.deepcopy(rows)
    bench.overlay_free(rows, [_canvas()])
    assert rows == before


def test_cpus_used_names_the_cells_each_recorded_cpu_measured():
    rows = [_row(cpu="Intel(R) Xeon(R) Processor"), _row(size=64)]
    text = bench.cpus_used(rows)
    assert "Intel(R) Xeon(R) Processor: 1 cells (resnet18:black:96)" in text
    assert "the other 1 on the CPU of the earlier sessions" in text
    assert bench.cpus_used([_row()]) == ""


def _table_fields() -> dict:
    """What a digits row needs besides the data-free columns to be tabulated."""
    return dict(filters=4800, pans=275, frac=0.0573, kinds={"position": 275}, twin_pans=0, twin_free_pans=0,
                dep={"output_shift": 0.002, "flip_rate": 0.0}, rep_acc_digit=0.81, rep_acc_half=1.0, scan_s=1.56,
                fwd16_s=0.06, fwd_scanbatch_s=0.6, targets={"twin0": True, "margin": True, "frac": True,
                                                              "trained": True})
