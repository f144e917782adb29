"""Data-free scans with and without the saturated-layer rule (issue 13): before and after.

Without data, ``find_pans`` counts no position PANs in a layer whose median channel scores
``p >= SATURATED_MEDIAN`` (0.5) on the probes: there the whole layer varies with where the probe
texture sits and the probes cannot single out channels (:mod:`pan_repair.detect.detector`).
*Before*: the same call with the rule off (``SATURATED_MEDIAN`` = inf), the detector otherwise
unchanged; data scans are not affected.

Cells: digits cells of the validity matrix (``benchmarks/detector_validity.py``: same data,
networks, training, seed and selectivity; ``--cache DIR`` keeps the trained weights). Per cell:
fraction flagged and causal margin (half-head minus digit-head drop when the flagged channels are
silenced, minus the same for as many random channels of the same layers, mean of 5 draws) before and
after, the layers the rule names, and the data scan's fraction (16 training images) with the share
of the after-flags it flags too.

Usage: ``python benchmarks/saturated_layers.py --cells resnet18:white:224 ... [--threads N] [--cache DIR]``;
``--from-jsonl`` tabulates an earlier run.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detector_validity as dv
import stem_canvas as sc

from pan_repair import find_pans


def measure(cell: str, cache: Path | None, seed: int = 0) -> dict:
    arch, convention, size = cell.split(":")
    t0 = time.perf_counter()
    trained = dv.trained_cell(arch, convention, int(size), seed, cache=cache)
    model, sample, free_conv, base = trained.model, trained.sample, trained.free_conv, trained.base
    input_size = tuple(sample.shape[1:])
    with mock.patch("pan_repair.detect.detector.SATURATED_MEDIAN", float("inf")):
        before = find_pans(model, input_size, dependence=False, **free_conv)
    after = find_pans(model, input_size, dependence=False, **free_conv)
    data = find_pans(model, data=sample, dependence=False)
    on_data = set(dv._pans(data))
    flagged = dv._pans(after)
    saturated = [name for name, why in after.unmeasured.items() if "position not resolved" in why]
    row = dict(arch=arch, convention=convention, size=int(size), seed=seed, threads=torch.get_num_threads(),
               cpu=dv.cpu_name(), acc_digit=round(float(base[0]), 4), acc_half=round(float(base[1]), 4),
               before=sc.scan_row(trained, before), after=sc.scan_row(trained, after),
               saturated=saturated, layers=len(after.layers), data_frac=round(data.fraction, 4),
               after_on_data=round(sum(c in on_data for c in flagged) / len(flagged), 3) if flagged else None)
    row["cell_s"] = round(time.perf_counter() - t0, 1)
    return row


def table(rows: list[dict]) -> str:
    """One line per cell, in the matrix's order, and the count over the fraction target."""
    order = {c: i for i, c in enumerate(dv.default_cells())}
    rows = sorted(rows, key=lambda r: (r.get("seed", 0), r["threads"],
                                       order.get(f"{r['arch']}:{r['convention']}:{r['size']}", len(order))))
    lines = ["# Data-free scans with and without the saturated-layer rule (benchmarks/saturated_layers.py)", "",
             "Fraction flagged (causal margin: half minus digit drop, flagged vs as many random same-layer "
             "channels; - where none flagged). *before*: every layer's position PANs counted; *after*: none in "
             "a layer whose median channel scores at least 0.5 on the probes (*layers*: how many, of all). "
             "*data*: the data scan's fraction (16 training images); *shared*: share of the after-flags the data "
             "scan flags too.", "",
             "| cell | seed, threads | CPU | digit / half acc | before | after | layers | data | shared |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shared = "-" if r["after_on_data"] is None else sc._pct(r["after_on_data"])
        lines.append(f"| {r['arch']} {r['convention']} {r['size']} px | {r.get('seed', 0)}, {r['threads']} | "
                     f"{r['cpu']} | {r['acc_digit']:.2f} / {r['acc_half']:.2f} | {sc._scan(r['before'])} | "
                     f"{sc._scan(r['after'])} | {len(r['saturated'])} of {r['layers']} | {sc._pct(r['data_frac'])} | "
                     f"{shared} |")
    return "\n".join(lines + ["", sc.summary([(r["before"], r["after"]) for r in rows]), ""])


def main(argv=None) -> None:
    sc.run_cells("saturated_layers", __doc__, measure, table, argv)


if __name__ == "__main__":
    main()
