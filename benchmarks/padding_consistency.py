"""Padding consistency (pan_repair.repair.consistency) on the placement shortcut: efficacy and step cost.

Task as benchmarks/mitigations.py: digits 8 (top half) / 9 (bottom half) on 24x24 canvases during
training, tested on the opposite halves ("swapped"); zero-padded SmallCNN(depth 4, width 24,
strides (0, 2)), Adam 3e-3, batch 32, 20 epochs. Rows: the baseline; the trained baseline
fine-tuned 20 more epochs (the original budget) on the same biased data without / with the
consistency penalty (computed every step, or every 2nd step at twice the weight); the same
training from scratch with it; circular padding from scratch (reference). Accuracy on val+test
per placement. Step time: the plain and the penalised steps on the same batches, interleaved,
fastest of ``--rounds``.

Run: ``.venv/bin/python benchmarks/padding_consistency.py [--seeds 0 ... 9] [--weight 0.5]``
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from pan_repair import SmallCNN, find_pans
from pan_repair.layers.module_state import structural_copy
from pan_repair.repair.consistency import PaddingConsistency
from pan_repair.experiments.shortcut import accuracy as shortcut_accuracy
from pan_repair.repair.regularizer import PANPenalty
from pan_repair.experiments.shortcut import shortcut_data, train_plain, train_step

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mitigations import PENALTY_INK  # noqa: E402  (the sibling benchmark's ink-probe placement penalty)

EPOCHS, LR, BATCH = 20, 3e-3, 32
WARMUP = 35  # steps of the weight's linear warm-up: a quarter of the 140-step fine-tuning


def tensors(placement: str) -> tuple[torch.Tensor, torch.Tensor]:
    return shortcut_data(["val", "test"], placement)[:2]


def net(seed: int, padding_mode: str = "zeros") -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(1, 2, width=24, depth=4, strides=(0, 2), padding_mode=padding_mode)


def train(model, train_set, seed: int, consistency=None) -> SmallCNN:
    return train_plain(model, *train_set, EPOCHS, lr=LR, seed=seed, batch=BATCH, loss_term=consistency)


def accuracy(model, data) -> float:
    return 100 * shortcut_accuracy(model, *data)


def step_times(train_set, weight: float, rounds: int) -> dict[int, float]:
    """Fastest mean step time (s) over ``rounds``: 0 = plain, k = consistency every k steps."""
    x, y = train_set
    arms = {k: net(0) for k in (0, 1, 2)}
    opts = {k: torch.optim.Adam(m.parameters(), lr=LR) for k, m in arms.items()}
    cons = {0: None, 1: PaddingConsistency(weight), 2: PaddingConsistency(weight, every=2)}
    batches = [torch.randint(0, len(x), (BATCH,), generator=torch.Generator().manual_seed(i)) for i in range(16)]
    best = {k: float("inf") for k in arms}
    for _ in range(rounds):
        for k in arms:
            start = time.perf_counter()
            for idx in batches:
                train_step(arms[k], opts[k], x[idx], y[idx], cons[k])
            best[k] = min(best[k], (time.perf_counter() - start) / len(batches))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--weight", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", nargs="+", default=None, help="run only these rows (names as in the table)")
    parser.add_argument("--jsonl", default=None, help="append every result to this JSON-lines file")
    parser.add_argument("--no-timing", action="store_true", help="skip the step-time comparison")
    parser.add_argument("--from-jsonl", nargs="+", default=None,
                        help="tabulate the results of earlier runs (e.g. one per range of seeds) instead of running")
    args = parser.parse_args()
    rows: dict[str, list[tuple[int, float, float, int]]] = {}
    if args.from_jsonl:
        for path in args.from_jsonl:
            for line in Path(path).read_text().splitlines():
                r = json.loads(line)
                rows.setdefault(r["row"], []).append((r["seed"], r["biased"], r["swapped"], r["pans"]))
        for vals in rows.values():
            vals.sort()
        print(table(rows))
        return
    torch.set_num_threads(args.threads)
    train_set = shortcut_data(["train"], "biased")[:2]
    biased, swapped = tensors("biased"), tensors("swapped")
    known = runs(net(0), 0, args.weight, train_set)
    if args.rows and set(args.rows) - set(known):
        parser.error(f"unknown rows {sorted(set(args.rows) - set(known))}; choose from {list(known)}")
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{len(train_set[0])} training images, batch {BATCH}, {EPOCHS} epochs, weight {args.weight}")
    if not args.no_timing:
        times = step_times(train_set, args.weight, args.rounds)
        print(f"step: plain {1000 * times[0]:.1f} ms; with consistency every step {1000 * times[1]:.1f} ms "
              f"({times[1] / times[0]:.2f}x), every 2nd step {1000 * times[2]:.1f} ms ({times[2] / times[0]:.2f}x)")
    for seed in args.seeds:
        base = train(net(seed), train_set, seed)
        for name, run in runs(base, seed, args.weight, train_set).items():
            if args.rows and name not in args.rows:
                continue
            model = run()
            res = (seed, accuracy(model, biased), accuracy(model, swapped), find_pans(model, (1, 24, 24)).count)
            rows.setdefault(name, []).append(res)
            if args.jsonl:
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps({"row": name, "seed": res[0], "biased": res[1], "swapped": res[2],
                                        "pans": res[3]}) + "\n")
    print(table(rows))


def runs(base: SmallCNN, seed: int, weight: float, train_set) -> dict[str, Callable[[], SmallCNN]]:
    """The rows: name -> a function training that row's model (from ``base``, the seed's baseline)."""
    ink = PANPenalty((1, 24, 24), seed=seed, **PENALTY_INK)
    return {
        "baseline (zero padding)": lambda: base,
        "baseline + fine-tune 20 ep": lambda: train(structural_copy(base, share=False), train_set, seed),
        "baseline + fine-tune 20 ep with consistency": lambda: train(
            structural_copy(base, share=False), train_set, seed, PaddingConsistency(weight)),
        "baseline + fine-tune 20 ep with consistency every 2nd step": lambda: train(
            structural_copy(base, share=False), train_set, seed, PaddingConsistency(weight, every=2)),
        "baseline + fine-tune 20 ep with consistency, warm-up 35 steps": lambda: train(
            structural_copy(base, share=False), train_set, seed, PaddingConsistency(weight, warmup=WARMUP)),
        "baseline + fine-tune 20 ep with consistency, warm-up 35 steps, + ink-probe penalty": lambda: train(
            structural_copy(base, share=False), train_set, seed, both(PaddingConsistency(weight, warmup=WARMUP), ink)),
        "from scratch with consistency": lambda: train(net(seed), train_set, seed, PaddingConsistency(weight)),
        "circular padding (reference)": lambda: train(net(seed, "circular"), train_set, seed),
    }


def both(consistency: PaddingConsistency, penalty: PANPenalty):
    return lambda model, x, logits: consistency(model, x, logits) + penalty(model)


def table(rows: dict[str, list[tuple[int, float, float, int]]]) -> str:
    """Markdown table: per row, the per-seed values and the mean swapped-placement accuracy."""
    seeds = " / ".join(str(v[0]) for v in next(iter(rows.values()))) if rows else ""
    lines = [f"| run | acc. training placement % (seeds {seeds}) | acc. swapped % | swapped mean | PANs |",
             "|---|---|---|---|---|"]
    for name, vals in rows.items():
        lines.append(f"| {name} | {' / '.join(f'{v[1]:.1f}' for v in vals)} | {' / '.join(f'{v[2]:.1f}' for v in vals)} | "
                     f"**{statistics.mean(v[2] for v in vals):.1f}** | {' / '.join(str(v[3]) for v in vals)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
