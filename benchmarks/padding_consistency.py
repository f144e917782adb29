"""Padding consistency (pan_repair.consistency) on the placement shortcut: efficacy and step cost.

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
import copy
import platform
import statistics
import time

import torch

from pan_repair import SmallCNN, find_pans
from pan_repair.consistency import PaddingConsistency
from pan_repair.shortcut import accuracy as shortcut_accuracy
from pan_repair.shortcut import shortcut_data, train_plain, train_step

EPOCHS, LR, BATCH = 20, 3e-3, 32


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_set = shortcut_data(["train"], "biased")[:2]
    biased, swapped = tensors("biased"), tensors("swapped")
    times = step_times(train_set, args.weight, args.rounds)
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{len(train_set[0])} training images, batch {BATCH}, {EPOCHS} epochs, weight {args.weight}")
    print(f"step: plain {1000 * times[0]:.1f} ms; with consistency every step {1000 * times[1]:.1f} ms "
          f"({times[1] / times[0]:.2f}x), every 2nd step {1000 * times[2]:.1f} ms ({times[2] / times[0]:.2f}x)")
    rows: dict[str, list[tuple[float, float, int]]] = {}
    for seed in args.seeds:
        base = train(net(seed), train_set, seed)
        runs = {
            "baseline (zero padding)": base,
            "baseline + fine-tune 20 ep": train(copy.deepcopy(base), train_set, seed),
            "baseline + fine-tune 20 ep with consistency": train(copy.deepcopy(base), train_set, seed,
                                                                 PaddingConsistency(args.weight)),
            "baseline + fine-tune 20 ep with consistency every 2nd step": train(
                copy.deepcopy(base), train_set, seed, PaddingConsistency(args.weight, every=2)),
            "from scratch with consistency": train(net(seed), train_set, seed, PaddingConsistency(args.weight)),
            "circular padding (reference)": train(net(seed, "circular"), train_set, seed),
        }
        for name, model in runs.items():
            rows.setdefault(name, []).append((accuracy(model, biased), accuracy(model, swapped),
                                              find_pans(model, (1, 24, 24)).count))
    seeds = " / ".join(map(str, args.seeds))
    print(f"| run | acc. training placement % (seeds {seeds}) | acc. swapped % | swapped mean | PANs |")
    print("|---|---|---|---|---|")
    for name, vals in rows.items():
        print(f"| {name} | {' / '.join(f'{v[0]:.1f}' for v in vals)} | {' / '.join(f'{v[1]:.1f}' for v in vals)} | "
              f"**{statistics.mean(v[1] for v in vals):.1f}** | {' / '.join(str(v[2]) for v in vals)} |", flush=True)


if __name__ == "__main__":
    main()
