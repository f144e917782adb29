"""Do the validity matrix's verdicts survive another seed, another thread count, another device?

Reads JSON-lines files written by ``benchmarks/detector_validity.py`` (the matrix, and reruns of some of
its cells with ``--seed`` / ``--threads`` into files of their own) and tabulates, per cell and run: the PAN
fraction, the margin (flagged selectivity minus random), the circular twin's PANs and the verdicts
(twin 0 / margin >= +0.10 where flagged / <= 10% unless selective / heads trained), then counts the
cells whose verdicts agree across every run that has them.

Usage: ``python benchmarks/detector_validity_stability.py RUN.jsonl [RUN.jsonl ...] [--out FILE]``
(the first file is the reference; a run is named by its rows' seed and threads, and device where a GPU trained it).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

TARGETS = ("twin0", "margin", "frac", "trained")
MARK = {True: "yes", False: "NO", None: "n/a"}


def _key(r: dict) -> str:
    return f"{r['arch']}:{r['convention'] if r['arch'] != 'lite0' else 'photos'}:{r['size']}"


def _run_name(rows: list[dict], path: str) -> str:
    seeds = {r.get("seed", 0) for r in rows if r["arch"] != "lite0"}
    threads = {r.get("threads", 1) for r in rows if r["arch"] != "lite0"}
    devices = sorted({r["device"] for r in rows if r.get("device")})
    where = f"{', '.join(devices)}, " if devices else ""
    return (f"seed {','.join(map(str, sorted(seeds))) or '-'}, {where}{','.join(map(str, sorted(threads)))} "
            f"thread(s) ({Path(path).name})")


def _cell(r: dict) -> str:
    margin = "-" if r.get("margin") is None else f"{r['margin']:+.2f}"
    eta = "" if r.get("eta_margin") is None else f", eta2 {r['eta_margin']:+.2f}"
    verdicts = "/".join(MARK[r["targets"].get(t)] for t in TARGETS)
    return f"{r['pans']} ({100 * r['frac']:.1f}%), margin {margin}{eta}, twin {r['twin_pans']}; {verdicts}"


def _run_summary(name: str, rows: dict[str, dict], cells: list[str]) -> str:
    """Per run, over the rerun cells: margin met / where flagged in trained cells; flagged > layer-mates
    in half-label eta2; <= 10% unless selective."""
    rs = [rows[c] for c in cells if c in rows]
    trained = [r for r in rs if r["targets"].get("trained") is True and r["targets"].get("margin") is not None]
    eta = [r["eta_margin"] for r in trained if r.get("eta_margin") is not None]
    frac = [r["targets"].get("frac") for r in rs if r["targets"].get("frac") is not None]
    return (f"| {name} | {sum(r['targets']['margin'] is True for r in trained)} of {len(trained)} | "
            + (f"{sum(e > 0 for e in eta)} of {len(eta)} ({min(eta):+.2f} to {max(eta):+.2f})" if eta else "-")
            + f" | {sum(frac)} of {len(frac)} | {sum(r['twin_pans'] == 0 for r in rs)} of {len(rs)} |")


def tabulate(paths: list[str]) -> str:
    runs = []
    for path in paths:  # "a.jsonl,b.jsonl": b's fields update a's rows of the same cell
        merged: dict[str, dict] = {}
        for part in path.split(","):
            for line in Path(part).read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    merged[_key(r)] = {**merged.get(_key(r), {}), **r}
        runs.append((path.split(",")[0], merged))
    cells = [k for k in runs[0][1] if any(k in rows for _, rows in runs[1:])]
    runs = [(_run_name([rows[c] for c in cells if c in rows], path), rows) for path, rows in runs]
    lines = ["| cell | " + " | ".join(name for name, _ in runs) + " | verdicts agree |",
             "|---|" + "---|" * (len(runs) + 1)]
    agree = 0
    for cell in cells:
        present = [rows[cell] for _, rows in runs if cell in rows]
        same = all(r["targets"].get(t) == present[0]["targets"].get(t) for r in present for t in TARGETS)
        agree += same
        lines.append(f"| {cell} | " + " | ".join(_cell(rows[cell]) if cell in rows else "-" for _, rows in runs)
                     + f" | {'yes' if same else '**no**'} |")
    twin = sum(1 for cell in cells for _, rows in runs if cell in rows and rows[cell]["twin_pans"] == 0)
    total = sum(1 for cell in cells for _, rows in runs if cell in rows)
    per_run = ["| run | margin >= +0.10 (trained cells with flags) | flagged carry more half-label eta2 than "
               "their layer-mates | <= 10% unless selective | circular twin 0 |", "|---|---|---|---|---|"]
    per_run += [_run_summary(name, rows, cells) for name, rows in runs]
    return ("Per cell: PANs (fraction), margin = selectivity of the flagged minus random same-layer channels, "
            "eta2 = half-label eta2 of the flagged minus their layer-mates, the circular twin's PANs; verdicts: "
            "twin 0 / margin >= +0.10 where flagged / <= 10% flagged unless selective / heads trained.\n\n"
            + "\n".join(lines) + f"\n\nCells rerun: {len(cells)}; verdicts identical in every run: {agree} of "
            f"{len(cells)}; circular twin 0 in {twin} of {total} scans.\n\n" + "\n".join(per_run) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="JSON-lines files (a run's files joined by commas); the first run is "
                                          "the reference")
    p.add_argument("--out", default=None, help="write the table here too")
    a = p.parse_args(argv)
    text = tabulate(a.runs)
    if a.out:
        Path(a.out).write_text(
            "## Validity matrix: verdicts over seeds, thread counts and devices "
            "(benchmarks/detector_validity_stability.py)\n\n"
            f"`python benchmarks/detector_validity_stability.py {' '.join(a.runs)}`, {time.strftime('%Y-%m-%d')}. "
            "The reruns: `python benchmarks/detector_validity.py --cells <the cells below> --seed S --threads T "
            "[--device cuda] --jsonl <file>` (one row per cell; a seed draws the canvases, the initialisation and "
            "the training order; two threads change the floating-point order of the training's sums; a GPU "
            "trains and scans in its own arithmetic, cuDNN's convolutions in TF32, from the same canvases and "
            "initialisation).\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
