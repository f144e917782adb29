"""A fast subset of benchmarks/detector_validity.py (issue 13, point 5): SmallCNN at 32 px, two heads
(digit; top or bottom half), on [0, 1]-on-black, normalised, noisy and [0, 1]-on-white canvases, trained
briefly on one thread.

The targets, on the scan ``find_pans(model, data=<16 training images>)``:

* the circular twin (same weights, circular padding) reports 0 PANs (also data-free);
* no more than 10% of the filters are flagged unless silencing them shows they carry position;
* on noisy canvases, silencing the flagged channels is more position-selective (half-head drop
  minus digit-head drop) than silencing as many random channels of the same layers, by at least
  0.10; on noisy and white canvases the flagged channels carry more of the half label (eta^2 of
  their pooled responses over the test images) than their layers' other channels, by at least 0.2.

Which network one seed trains depends on the CPU's floating point, and so does whether its few
flagged channels pass the selectivity target (the matrix misses it in 13 of 58 cells at seed 0, 11
of 58 at seed 1). Measured at the default 0.5: on the Intel Xeon black, white and noisy canvases
flag 2, 2 and 9 channels, margins +0.12, +0.36, +0.56 (benchmarks/results/detector_validity_t045.jsonl);
on an AMD EPYC (AVX2) black and white flag 1 channel each at margins +0.04 and -0.003, where
silencing as many random channels moves the half head by 0.05 and 0.01 (no power), while noisy
passes. The selectivity and eta^2 assertions are kept where both CPUs meet them; the twin and the
10% rule hold on every canvas on both. Normalised canvases flag nothing at this seed.

The heads must be clearly above chance (digit > 0.70, half > 0.90) for the cell to test anything.
"""
from __future__ import annotations

import pytest
import torch

from _scripts import benchmark

pytestmark = pytest.mark.slow

bench = benchmark("detector_validity")

_CELLS: dict[str, dict] = {}


def _cell(convention: str) -> dict:
    if convention not in _CELLS:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _CELLS[convention] = bench.measure_digits_cell("smallcnn", convention, 32, free_selectivity=False)
        finally:
            torch.set_num_threads(threads)
    return _CELLS[convention]


def _numbers(row: dict) -> str:
    keys = ("acc_digit", "acc_half", "pans", "filters", "frac", "kinds", "layers", "twin_pans", "twin_free_pans",
            "drop_flagged", "drop_random", "sel", "sel_random", "margin", "dep", "rep_acc_half")
    return ", ".join(f"{k}={row.get(k)}" for k in keys)


@pytest.mark.parametrize("convention", ["black", "norm", "noisy", "white"])
def test_smallcnn_32px_twin_and_fraction_targets(convention):
    row = _cell(convention)
    numbers = _numbers(row)
    assert row["acc_digit"] > 0.70 and row["acc_half"] > 0.90, numbers
    assert row["twin_pans"] == 0 and row["twin_free_pans"] == 0, numbers
    assert row["frac"] <= bench.FRACTION_TARGET or (row["margin"] is not None
                                                     and row["margin"] >= bench.MARGIN_TARGET), numbers
    assert row["targets"]["twin0"] and row["targets"]["trained"] and row["targets"]["frac"], (row["targets"], numbers)


def test_smallcnn_32px_noisy_flags_position_selective_channels():
    row = _cell("noisy")
    numbers = _numbers(row)
    assert row["pans"] > 0, numbers
    assert row["margin"] >= bench.MARGIN_TARGET, numbers
    assert row["targets"]["margin"], (row["targets"], numbers)


@pytest.mark.parametrize("convention", ["noisy", "white"])
def test_flagged_channels_carry_more_position_than_their_layers(convention):
    """Where channels are flagged, their pooled responses carry more of the half label (eta^2 on
    the test images) than their layers' other channels: a second check, independent of silencing."""
    row = _cell(convention)
    assert row["pans"] > 0, _numbers(row)
    assert row["eta_flagged"] >= row["eta_layer"] + 0.2, (row["eta_flagged"], row["eta_layer"], _numbers(row))
