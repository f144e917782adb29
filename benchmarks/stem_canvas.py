"""Data-free scans at the level the model's stem implies (issue 13): before and after.

``find_pans`` without data probes in the declared input convention. Where the BatchNorm the stem conv
feeds implies training images averaging a pixel level ``u`` at least
:data:`~pan_repair.detect.implied.MISMATCH` from mid-grey (:func:`pan_repair.detect.implied.stem_level`),
it now puts its textures on a canvas at ``u`` and measures the border score on those textured canvases
(as on data) instead of on uniform images at 0.1-0.3 and 0.7-0.9. *Before*: the same call with the stem's
level ignored (mid-grey canvas, uniform border images; the note alone), the detector otherwise unchanged.

Cells: digits cells of the validity matrix (``benchmarks/detector_validity.py``: same data, networks,
training, seed and selectivity), trained here (``--cache DIR`` keeps the trained weights). Per cell:
fraction flagged and causal margin (half-head minus digit-head drop when the flagged channels are
silenced, minus the same for as many random channels of the same layers, mean of 5 draws) for the
data-free scan before and after, and the data scan's fraction (16 training images) with the share of
the data-free flags the data scan flags too.

Usage: ``python benchmarks/stem_canvas.py --cells resnet18:black:96 ... [--cache DIR] [--jsonl ...]``;
``--from-jsonl`` tabulates an earlier run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detector_validity as dv

from pan_repair import find_pans
from pan_repair.detect.forward import prepass
from pan_repair.detect.implied import stem_level
from pan_repair.detect.probes import resolve_convention
from pan_repair.layers.module_state import device_dtype

RESULTS = Path(__file__).resolve().parent / "results"


def probe_level(model, input_size: tuple[int, int, int], convention: dict) -> str | None:
    """The canvas level the data-free scan probes at (2 decimals), None where it stays mid-grey."""
    pre = prepass(model, input_size, *device_dtype(model))
    found = stem_level(model, pre.stem, pre.feeds_bn, resolve_convention(model, input_size[0], **convention),
                       input_size)
    return None if found is None else f"{found[0]:.2f}"


def scan_row(cell: "dv.TrainedCell", report) -> dict:
    """Fraction and kinds of ``report``'s PANs on ``cell``'s network, and their causal margin."""
    chs = dv._pans(report)
    row = dict(frac=round(report.fraction, 4), kinds=dv._kinds(report))
    if chs:
        args = (cell.model, cell.pairs, chs, cell.xte, cell.yte, cell.chans, cell.base)
        d = dv.drops(*args)
        r, _ = dv.random_drops(*args)
        row.update(margin=round(dv.selectivity(d) - dv.selectivity(r), 4),
                   drop_flagged=[round(float(v), 4) for v in d[:2]], drop_random=[round(float(v), 4) for v in r[:2]])
    return row


def measure(cell: str, cache: Path | None, seed: int = 0) -> dict:
    arch, convention, size = cell.split(":")
    t0 = time.perf_counter()
    cell = dv.trained_cell(arch, convention, int(size), seed, cache=cache)
    model, sample, free_conv = cell.model, cell.sample, cell.free_conv
    input_size = tuple(sample.shape[1:])
    with mock.patch("pan_repair.detect.detector.stem_level", return_value=None):
        before = find_pans(model, input_size, dependence=False, **free_conv)
    after = find_pans(model, input_size, dependence=False, **free_conv)
    data = find_pans(model, data=sample, dependence=False)
    on_data = set(dv._pans(data))
    flagged = dv._pans(after)
    row = dict(arch=arch, convention=convention, size=int(size), seed=seed, threads=torch.get_num_threads(),
               acc_digit=round(float(cell.base[0]), 4), acc_half=round(float(cell.base[1]), 4),
               level=probe_level(model, input_size, free_conv),
               before=scan_row(cell, before), after=scan_row(cell, after),
               data_frac=round(data.fraction, 4),
               after_on_data=round(sum(c in on_data for c in flagged) / len(flagged), 3) if flagged else None)
    row["cell_s"] = round(time.perf_counter() - t0, 1)
    return row


def _pct(v) -> str:
    return f"{100 * v:.1f}%"


def _scan(s: dict) -> str:
    m = s.get("margin")
    return f"{_pct(s['frac'])} ({'-' if m is None else f'{m:+.2f}'})"


def _over(scan: dict) -> bool:
    """Over the matrix's fraction target without the margin that would excuse it."""
    return scan["frac"] > dv.FRACTION_TARGET and (scan.get("margin") or 0.0) < dv.MARGIN_TARGET


def summary(pairs: list[tuple[dict, dict]], lead: str = "Over", unit: str = " cells") -> str:
    """How many (before, after) scans flag over the fraction target without the margin, and meet the margin."""
    over = [sum(_over(p[i]) for p in pairs) for i in (0, 1)]
    met = [sum((p[i].get("margin") or 0.0) >= dv.MARGIN_TARGET for p in pairs) for i in (0, 1)]
    return (f"{lead} {dv.FRACTION_TARGET:.0%} flagged without a margin of {dv.MARGIN_TARGET}: {over[0]} of "
            f"{len(pairs)}{unit} before, {over[1]} after; margin met in {met[0]} before, {met[1]} after.")


def _section(rows: list[dict]) -> list[str]:
    lines = ["| cell | digit / half acc | implied level | before | after | data | shared |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        shared = "-" if r["after_on_data"] is None else _pct(r["after_on_data"])
        lines.append(f"| {r['arch']} {r['convention']} {r['size']} px | {r['acc_digit']:.2f} / {r['acc_half']:.2f} | "
                     f"{r['level'] or '-'} | {_scan(r['before'])} | {_scan(r['after'])} | {_pct(r['data_frac'])} | "
                     f"{shared} |")

    def span(values) -> str:
        values = list(values)
        return f"{_pct(min(values))}-{_pct(max(values))}"

    return lines + ["", f"Over {dv.FRACTION_TARGET:.0%} flagged without a margin of {dv.MARGIN_TARGET}: "
                        f"{sum(_over(r['before']) for r in rows)} of {len(rows)} cells before, "
                        f"{sum(_over(r['after']) for r in rows)} after. Fractions before "
                        f"{span(r['before']['frac'] for r in rows)}, after {span(r['after']['frac'] for r in rows)}, "
                        f"on data {span(r['data_frac'] for r in rows)}.", ""]


def table(rows: list[dict]) -> str:
    """One section per (seed, threads) run, cells in the matrix's order."""
    lines = ["# Data-free scans at the level the stem implies (benchmarks/stem_canvas.py)", "",
             f"{dv.machine()}. Seed 0 with 1 thread trains the validity matrix's networks.", "",
             "Fraction flagged (causal margin: half minus digit drop, flagged vs as many random same-layer "
             "channels; - where none flagged). *before*: mid-grey canvas and uniform border images; *after*: "
             "canvas at the implied level, border score on the textured canvases. *data*: the data scan's "
             "fraction (16 training images); *shared*: share of the after-flags the data scan flags too.", ""]
    order = {c: i for i, c in enumerate(dv.default_cells())}
    runs: dict[tuple[int, int], list[dict]] = {}
    for r in rows:
        runs.setdefault((r.get("seed", 0), r["threads"]), []).append(r)
    for (seed, threads), run in sorted(runs.items()):
        run.sort(key=lambda r: order.get(f"{r['arch']}:{r['convention']}:{r['size']}", len(order)))
        lines += [f"## Seed {seed}, {threads} thread(s): {len(run)} cells", ""] + _section(run)
    return "\n".join(lines)


def run_cells(name: str, doc: str, measure_cell, tabulate, argv=None) -> None:
    """The command line of a per-cell benchmark ``name``: measure ``--cells`` (rows appended to
    ``results/<name>.jsonl``) or, with ``--from-jsonl``, only tabulate; write and print the table."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--cells", nargs="+", default=[])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="seed of the cells' data, initialisation and training")
    ap.add_argument("--cache", type=Path, default=None, help="folder of trained weights (read, and written)")
    ap.add_argument("--jsonl", type=Path, default=RESULTS / f"{name}.jsonl")
    ap.add_argument("--out", type=Path, default=RESULTS / f"{name}.md")
    ap.add_argument("--from-jsonl", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.from_jsonl:
        for cell in args.cells:
            row = measure_cell(cell, args.cache, args.seed)
            print(json.dumps(row), flush=True)
            with args.jsonl.open("a") as f:
                f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in args.jsonl.read_text().splitlines() if line.strip()]
    args.out.write_text(tabulate(rows))
    print(tabulate(rows))


def main(argv=None) -> None:
    run_cells("stem_canvas", __doc__, measure, table, argv)


if __name__ == "__main__":
    main()
