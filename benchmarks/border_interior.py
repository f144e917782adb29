"""Border scores on small maps with and without the interior rule (issue 13): before and after.

A channel's border score is ``rms(D) / max(sigma_c, kappa_c)``, ``kappa_c`` its content response: the
spread of its output over the positions whose windows touch no padding. On a 3x3 output of a 3x3
kernel there is one such position (``kappa = 0`` by construction), on a 4x4 output of a 5x5 kernel
none, and the score falls back to ``sigma`` alone. *After*: ``find_pans`` measures the border score
only where each padded axis has at least ``MIN_INTERIOR`` (2) such positions and names the other
layers in ``report.unmeasured``; *before*: the same call with the rule off (``MIN_INTERIOR`` = 0,
the detector otherwise unchanged). Applies to scans on data and data-free alike.

Cells: digits cells of the validity matrix (``benchmarks/detector_validity.py``: same data,
networks, training, seed and selectivity; ``--cache DIR`` keeps the trained weights) and
``lite0:photos:SIZE`` (the pretrained Lite0 on the matrix's 16 photos; no heads, so no margin). Per
cell and scan (data-free; on 16 training images or photos): fraction flagged, border PANs, causal
margin (half-head minus digit-head drop when the flagged channels are silenced, minus the same for
as many random channels of the same layers, mean of 5 draws), and how many layers the rule names.

Usage: ``python benchmarks/border_interior.py --cells resnet18:black:96 lite0:photos:96 ... [--threads N]
[--cache DIR]``; ``--from-jsonl`` tabulates an earlier run.
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

RULE = "content response"  # the words of the rule's reasons in report.unmeasured


def _scans(model, input_size, free_conv: dict, sample) -> tuple:
    """(before, after) of one scan: data-free (``sample`` None) or on ``sample``."""
    kwargs = dict(dependence=False, **(free_conv if sample is None else {"data": sample}))
    size = input_size if sample is None else None
    with mock.patch("pan_repair.detect.recorder.MIN_INTERIOR", 0):
        before = find_pans(model, size, **kwargs)
    return before, find_pans(model, size, **kwargs)


def _named(report) -> int:
    return sum(RULE in why for why in report.unmeasured.values())


def _counts(report) -> dict:
    return dict(frac=round(report.fraction, 4), kinds=dv._kinds(report))


def measure(cell: str, cache: Path | None, seed: int = 0) -> dict:
    arch, convention, size = cell.split(":")
    t0 = time.perf_counter()
    row = dict(arch=arch, convention=convention, size=int(size), seed=seed, threads=torch.get_num_threads(),
               cpu=dv.cpu_name(), date=time.strftime("%Y-%m-%d"), torch=torch.__version__.split("+")[0])
    if arch == "lite0":
        from pan_repair.models.pretrained import load_efficientnet_lite0

        model, sample, free_conv = load_efficientnet_lite0(), dv.photos(int(size)), {}
        for key, data in (("free", None), ("data", sample)):
            before, after = _scans(model, tuple(sample.shape[1:]), free_conv, data)
            row[key] = dict(before=_counts(before), after=_counts(after), named=_named(after), layers=len(after.layers))
    else:
        trained = dv.trained_cell(arch, convention, int(size), seed, cache=cache)
        row.update(acc_digit=round(float(trained.base[0]), 4), acc_half=round(float(trained.base[1]), 4))
        for key, data in (("free", None), ("data", trained.sample)):
            before, after = _scans(trained.model, tuple(trained.sample.shape[1:]), trained.free_conv, data)
            scanned = sc.scan_row(trained, before)
            same = dv._pans(before) == dv._pans(after)
            row[key] = dict(before=scanned, after=scanned if same else sc.scan_row(trained, after),
                            named=_named(after), layers=len(after.layers))
    row["cell_s"] = round(time.perf_counter() - t0, 1)
    return row


def _scan(s: dict) -> str:
    border = s["kinds"].get("border", 0)
    return f"{sc._scan(s) if 'margin' in s or s['frac'] == 0 else sc._pct(s['frac'])}, {border} border"


def table(rows: list[dict]) -> str:
    """One line per cell and scan, in the matrix's order, and the count over the fraction target."""
    order = {c: i for i, c in enumerate(dv.default_cells())}
    rows = sorted(rows, key=lambda r: (r["arch"] == "lite0", r.get("seed", 0), r["threads"],
                                       order.get(f"{r['arch']}:{r['convention']}:{r['size']}", len(order)), r["size"]))
    lines = ["# Border scores on small maps with and without the interior rule (benchmarks/border_interior.py)", "",
             "Fraction flagged (causal margin: half minus digit drop, flagged vs as many random same-layer channels; "
             "- where none flagged; none for Lite0, which has no heads), border PANs among them. *before*: the border "
             "score measured on every output of at least 3x3; *after*: only where each padded axis has at least 2 "
             "output positions whose windows touch no padding (*named*: layers the rule leaves unmeasured, of all). "
             "*free*: data-free; *data*: on 16 training images (Lite0: 16 photos).", "",
             f"Measured {', '.join(sorted({r.get('date', '?') for r in rows}))}, torch "
             f"{', '.join(sorted({r.get('torch', '?') for r in rows}))}; {len(rows)} cells, "
             f"{sum(r['cell_s'] for r in rows):,.0f} s (training included where not cached).", "",
             "| cell | seed, threads | CPU | scan | before | after | named |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        for key in ("free", "data"):
            s = r[key]
            lines.append(f"| {r['arch']} {r['convention']} {r['size']} px | {r.get('seed', 0)}, {r['threads']} | "
                         f"{r['cpu']} | {key} | {_scan(s['before'])} | {_scan(s['after'])} | "
                         f"{s['named']} of {s['layers']} |")
    digits = [(r[k]["before"], r[k]["after"]) for r in rows if r["arch"] != "lite0" for k in ("free", "data")]
    return "\n".join(lines + ["", sc.summary(digits, "Digits scans over", ""), ""])


def main(argv=None) -> None:
    sc.run_cells("border_interior", __doc__, measure, table, argv)


if __name__ == "__main__":
    main()
