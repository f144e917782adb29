"""Do the validity matrix's verdicts survive another seed and another thread count?

Reads JSON-lines files written by ``benchmarks/detector_validity.py`` (the matrix, and reruns of some of
its cells with ``--seed`` / ``--threads`` into files of their own) and tabulates, per cell and run: the PAN
fraction, the margin (flagged selectivity minus random), the circular twin's PANs and the verdicts
(twin 0 / margin >= +0.10 where flagged / <= 10% unless selective / heads trained), then counts the
cells whose verdicts agree across every run that has them.

Usage: ``python benchmarks/detector_validity_stability.py RUN.jsonl [RUN.jsonl ...] [--out FILE]``
(the first file is the reference; a run is named by its rows' seed and threads).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

TARGETS = ("twin0", "margin", "frac", "trained")
MARK = {True: "yes", False: "NO", None: "n/a"}


def _key(r: dict) -> str:
    return f"{r['arch']}:{r['convention'] if r['arch'] != 'lite0' else 'photos'}:{r['size']}"


def _run_name(rows: list[dict], path: str) -> str:
    seeds = {r.get("seed", 0) for r in rows if r["arch"] != "lite0"}
    threads = {r.get("threads", 1) for r in rows}
    return (f"seed {','.join(map(str, sorted(seeds))) or '-'}, {','.join(map(str, sorted(threads)))} thread(s) "
            f"({Path(path).name})")


def _cell(r: dict) -> str:
    margin = "-" if r.get("sel") is None else f"{r['sel']['margin']:+.2f}"
    verdicts = "/".join(MARK[r["targets"].get(t)] for t in TARGETS)
    return f"{r['pans']} ({100 * r['frac']:.1f}%), margin {margin}, twin {r['twin_pans']}; {verdicts}"


def tabulate(paths: list[str]) -> str:
    runs = []
    for path in paths:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        runs.append((_run_name(rows, path), {_key(r): r for r in rows}))
    cells = [k for k in runs[0][1] if any(k in rows for _, rows in runs[1:])]
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
    return ("Verdicts: twin 0 / margin >= +0.10 where flagged / <= 10% flagged unless selective / heads trained.\n\n"
            + "\n".join(lines) + f"\n\nCells rerun: {len(cells)}; verdicts identical in every run: {agree} of "
            f"{len(cells)}; circular twin 0 in {twin} of {total} scans.\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="JSON-lines files; the first is the reference")
    p.add_argument("--out", default=None, help="write the table here too")
    a = p.parse_args(argv)
    text = tabulate(a.runs)
    if a.out:
        Path(a.out).write_text("## Validity matrix: verdicts over seeds and thread counts "
                               "(benchmarks/detector_validity_stability.py)\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
