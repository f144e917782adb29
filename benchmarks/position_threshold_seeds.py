"""Which position threshold? Causal selectivity of the flagged set at thresholds 0.4-0.9, over
training seeds (issue 13): SmallCNN two-head digits cells of ``detector_validity.py`` (conventions x
sizes x seeds), each scanned once with every threshold at 0 (data, and data-free in the convention),
then, per threshold, the channels at or above it silenced together against as many random channels of
the same layers (mean of 5 draws): ``margin`` = selectivity(flagged) - selectivity(random), as in
``detector_validity.py``. Prints one JSON line per cell (appended to ``--jsonl``) and a summary.

Run: ``.venv/bin/python benchmarks/position_threshold_seeds.py [--seeds 0 1 2] [--sizes 32 64]``
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detector_validity as dv  # noqa: E402

from pan_repair import find_pans  # noqa: E402
from pan_repair.layers import conv_bn_pairs  # noqa: E402

THRESHOLDS = (0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9)


def measure(convention: str, size: int, seed: int) -> dict:
    xtr, ytr, xte, yte, free_conv = dv.dataset(size, convention, 2, seed)
    model, chans = dv.build("smallcnn", size, seed)
    dv.train(model, xtr, ytr, chans, *dv.TRAIN["smallcnn"][:3], seed)
    base = dv.evaluate(model, xte, yte, chans)  # accuracies, then information (what dv.drops subtracts from)
    sample = dv._chans(xtr[:dv.SAMPLE], chans)
    pairs = conv_bn_pairs(model, tuple(sample.shape[1:]))
    scans = {"data": find_pans(model, data=sample, position_threshold=0.0, border_threshold=0.0, dependence=False),
             "free": find_pans(model, tuple(sample.shape[1:]), position_threshold=0.0, border_threshold=0.0,
                               dependence=False, **free_conv)}
    res = {}
    for key, report in scans.items():
        for t in THRESHOLDS:
            chs = [(layer, c) for layer, s in report.scores.items() for c, p in enumerate(s["position"]) if p >= t]
            if not chs:
                res[f"{key}{t}"] = (0, None)
                continue
            d = dv.drops(model, pairs, chs, xte, yte, chans, base)
            r, _ = dv.random_drops(model, pairs, chs, xte, yte, chans, base)
            res[f"{key}{t}"] = (len(chs), round(dv.selectivity(d) - dv.selectivity(r), 3))
    bmax = {k: round(max(max(s["border"]) for s in r.scores.values()), 2) for k, r in scans.items()}
    return dict(cell=f"smallcnn:{convention}:{size}:{seed}", threads=torch.get_num_threads(), cpu=dv.cpu_name(),
                acc=base[:2].round(3).tolist(), bmax=bmax["data"],
                free_bmax=bmax["free"], res=res)


def summary(rows: list[dict]) -> str:
    lines = ["| scan | threshold | cells | cells flagging | margin >= +0.10 | missed (flagged, margin) |",
             "|---|---|---|---|---|---|"]
    measured = [t for t in THRESHOLDS if all(f"data{t}" in r["res"] for r in rows)]  # older rows: fewer
    for key in ("data", "free"):
        for t in measured:
            flagged = [r for r in rows if r["res"][f"{key}{t}"][0]]
            met = [r for r in flagged if r["res"][f"{key}{t}"][1] >= dv.MARGIN_TARGET]
            missed = ", ".join(f"{r['cell']} ({r['res'][f'{key}{t}'][0]}, {r['res'][f'{key}{t}'][1]:+.3f})"
                               for r in flagged if r not in met)
            lines.append(f"| {key} | {t} | {len(rows)} | {len(flagged)} | {len(met)} | {missed or '-'} |")
    lines.append(f"\nLargest border score over the cells: {max(r['bmax'] for r in rows)} on data, "
                 f"{max(r['free_bmax'] for r in rows)} data-free.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--sizes", nargs="+", type=int, default=[32, 64])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jsonl", default="benchmarks/results/position_threshold_seeds.jsonl")
    p.add_argument("--from-jsonl", action="store_true", help="only summarise the JSON-lines file")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if not a.from_jsonl:
        for seed in a.seeds:
            for convention in dv.CONVENTIONS:
                for size in a.sizes:
                    row = measure(convention, size, seed)
                    print(json.dumps(row), flush=True)
                    with open(a.jsonl, "a") as f:
                        f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in Path(a.jsonl).read_text().splitlines()]
    print(summary(rows))


if __name__ == "__main__":
    main()
