"""The validity matrix's targets at each position threshold, on the same networks (issue 13, point 5).

Reads JSON-lines rows of ``detector_validity.py``: matrix rows run with ``--compare`` (the data scan
at the row's ``position_threshold``, the other thresholds' flags silenced on the same network under
``"at"``), and ``--oracle`` rows (``"flagged"``: the data scan at the default of their run,
``--oracle-default``; ``"t0.45"``, ...: its flags at lower thresholds). For every digits cell and
threshold: the flagged channels, their share of the filters, and ``margin`` = selectivity(flagged)
- selectivity(as many random channels of the same layers), selectivity = half-head minus
digit-head accuracy drop when silenced. Targets (``detector_validity.py``): margin >= +0.10 where
any channel is flagged; no more than 10% of the filters flagged unless the margin is met. A later
file's row replaces an earlier one's for the same cell (Lite0 rows: flag counts only).

Run: ``python benchmarks/threshold_matrix.py benchmarks/results/detector_validity_oracle.jsonl
benchmarks/results/detector_validity_t045.jsonl --out benchmarks/results/threshold_matrix.md``
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detector_validity import FRACTION_TARGET, MARGIN_TARGET  # noqa: E402  the matrix's own targets


def by_threshold(row: dict, oracle_default: float = 0.6) -> dict[float, dict]:
    """``{threshold: {"channels", "frac", "margin" (None: nothing flagged or not silenced), ...}}``
    of one row: its own scan and its ``"at"`` entries, or an oracle row's flagged set and sweep."""
    out: dict[float, dict] = {}
    if "position_threshold" in row:
        out[float(row["position_threshold"])] = dict(channels=row["pans"], frac=row["frac"],
                                                     margin=row.get("margin"), eta_margin=row.get("eta_margin"))
        for t, v in row.get("at", {}).items():
            out[float(t)] = {"margin": None, **v}
    elif "oracle_pans" in row:
        sets = row.get("oracle") or {}
        flagged = sets.get("flagged", dict(channels=row["oracle_pans"], frac=0.0, margin=None))
        out[oracle_default] = flagged
        for key, v in sets.items():
            if key.startswith("t"):
                out[float(key[1:])] = v
    for v in out.values():
        if not v.get("channels"):
            v["margin"] = None
    return dict(sorted(out.items(), reverse=True))


def cell_key(row: dict) -> str:
    return f"{row['arch']}:{'photos' if row['arch'] == 'lite0' else row['convention']}:{row['size']}"


def load(paths: list[str], oracle_default: float = 0.6) -> dict[str, dict]:
    """Per cell: ``{"source": file name, "cpu": ..., "levels": by_threshold(row)}``, the last file's row."""
    cells: dict[str, dict] = {}
    for path in paths:
        for row in map(json.loads, Path(path).read_text().splitlines()):
            levels = by_threshold(row, oracle_default)
            if levels:
                cells[cell_key(row)] = dict(source=Path(path).name, cpu=row.get("cpu") or row.get("oracle_cpu"),
                                            levels=levels)
    return cells


def verdict(v: dict) -> str:
    """``met`` / ``missed`` (margin target, cells with flags), ``none`` (nothing flagged), ``-`` (not
    silenced: Lite0); ``+ over`` where over 10% of the filters are flagged without the margin."""
    if not v.get("channels"):
        return "none"
    if v.get("margin") is None:
        return "-"
    ok = v["margin"] >= MARGIN_TARGET
    over = v["frac"] > FRACTION_TARGET and not ok
    return ("met" if ok else "missed") + (" + over 10%" if over else "")


def tally(cells: dict[str, dict], threshold: float) -> dict[str, int]:
    """Digits cells measured at ``threshold``: how many flag nothing, meet, miss the margin, and flag
    over 10% of the filters without it."""
    vs = [c["levels"][threshold] for c in cells.values() if threshold in c["levels"]]
    return {"cells": len(vs), "none": sum(not v.get("channels") for v in vs),
            "met": sum(bool(v.get("channels")) and v["margin"] >= MARGIN_TARGET for v in vs),
            "missed": sum(bool(v.get("channels")) and v["margin"] < MARGIN_TARGET for v in vs),
            "over": sum(bool(v.get("channels")) and v["frac"] > FRACTION_TARGET and v["margin"] < MARGIN_TARGET
                        for v in vs)}


def common(cells: dict[str, dict], thresholds: tuple[float, ...]) -> dict[str, dict]:
    """The digits cells measured at every one of ``thresholds`` (all of them for ``()``): where
    thresholds compare on the same networks."""
    return {k: c for k, c in cells.items() if not k.startswith("lite0") and all(t in c["levels"] for t in thresholds)}


def _tally_lines(cells: dict[str, dict], thresholds: list[float]) -> list[str]:
    lines = ["| threshold | digits cells | nothing flagged | margin met | missed | over 10% without it |",
             "|---|---|---|---|---|---|"]
    for t in thresholds:
        n = tally(cells, t)
        lines.append(f"| {t:g} | {n['cells']} | {n['none']} | {n['met']} | {n['missed']} | {n['over']} |")
    return lines


def table(cells: dict[str, dict], same: tuple[float, ...] = ()) -> str:
    """The per-cell table, the tally per threshold over every digits cell measured at it, and (``same``)
    the tally over the cells measured at all of ``same``."""
    thresholds = sorted({t for c in cells.values() for t in c["levels"]}, reverse=True)
    lines = ["| cell | measured in | " + " | ".join(f"at {t:g}" for t in thresholds) + " |",
             "|---" * (2 + len(thresholds)) + "|"]
    for key, c in cells.items():
        cols = []
        for t in thresholds:
            v = c["levels"].get(t)
            if v is None:
                cols.append("")
                continue
            margin = "" if v.get("margin") is None else f", {v['margin']:+.3f}"
            cols.append(f"{v.get('channels', 0)} ({100 * v.get('frac', 0.0):.1f}%){margin} {verdict(v)}")
        lines.append(f"| {key} | {c['source']} | " + " | ".join(cols) + " |")
    lines += ["", "Every digits cell measured at each threshold:", ""]
    lines += _tally_lines(common(cells, ()), thresholds)
    if same:
        lines += ["", f"The same networks: the {len(common(cells, same))} digits cells measured at all of "
                  + " / ".join(f"{t:g}" for t in same) + ":", ""]
        lines += _tally_lines(common(cells, same), sorted(same, reverse=True))
    return "\n".join(lines)


def sources(cells: dict[str, dict]) -> str:
    """Which file and CPU measured how many cells."""
    counts: dict[tuple[str, str], int] = {}
    for c in cells.values():
        key = (c["source"], c["cpu"] or "unrecorded CPU")
        counts[key] = counts.get(key, 0) + 1
    return "; ".join(f"{n} cells from {src} ({cpu})" for (src, cpu), n in counts.items())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("jsonl", nargs="+", help="detector_validity.py rows (--compare or --oracle); later files win")
    p.add_argument("--oracle-default", type=float, default=0.6,
                   help="the position threshold the oracle rows' flagged set was scanned at")
    p.add_argument("--same", type=float, nargs="*", default=[0.6, 0.5, 0.45],
                   help="thresholds tallied again over only the cells measured at all of them")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    cells = load(a.jsonl, a.oracle_default)
    text = ("## Validity targets per position threshold, same networks (benchmarks/threshold_matrix.py)\n\n"
            f"{sources(cells)}. Cells: flagged channels (share of the filters), margin, verdict (none: nothing "
            "flagged; -: not silenced, Lite0 has no heads to silence).\n\n" + table(cells, tuple(a.same)) + "\n")
    if a.out:
        Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
