"""Cost and effect of the PAN penalty (pan_repair.repair.regularizer), side by side in one run, on the CPU.

Task: the placement shortcut. Digits 8 and 9 on 24x24 canvases (DigitsCanvas, scale 1), 8 always
in the top half and 9 in the bottom half during training ("biased"); tested on the opposite
halves ("swapped"). Network: SmallCNN(depth=4, width=24, strides=(0, 2)), zero padding, Adam 3e-3,
batch 32, 20 epochs (140 steps). Without the penalty it learns the placement, not the digit.

1. Step time: every configuration trains its own copy of the network on the same batches,
   interleaved round-robin in rounds of 16 steps (whole periods of every=4 and every=8), so all
   see the same machine load; the table gives the fastest round of each (the least disturbed by
   other processes) per step, and its ratio to no penalty. "probe images / step" counts probe
   images per training step on average (a 16x16 probe costs about 0.44 of a 24x24 one).
2. Effect: a full training per configuration and seed; accuracy on the training placement
   (test split, "biased") and on the swapped placement.

Run: ``.venv/bin/python benchmarks/regularizer_cost.py [--seeds 0 1 2] [--rounds 12] [--skip-train]
[--time-batch 64] [--configs NAME ...]`` (step times at another batch size; the trainings always use 32). Timings on a
shared 2-core machine vary by about +-0.1x between runs: compare rows of one run.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from pan_repair import SmallCNN, find_pans
from pan_repair.experiments.shortcut import accuracy, shortcut_data, train_plain, train_step
from pan_repair.repair.regularizer import PANPenalty

SIZE = (1, 24, 24)
BATCH, EPOCHS, LR = 32, 20, 3e-3

INK = dict(probes="placement", n_positions=16, roll_stride=(1, 1), axes=("rows",), style="ink", contrast=6.0, level=-0.22, noise=0.33,
           pattern_size=8)
#: the placement-probe penalty this benchmark studies (benchmarks/pan_penalty.py: the detector-probe default)
P = dict(probes="placement")
#: name -> PANPenalty keyword arguments (None: no penalty)
CONFIGS = {
    "none": None,
    "w=1, 8 patterns, every step": dict(P, n_patterns=8, every=1, weight=1.0),
    "w=1, 8 patterns, every 4": dict(P, n_patterns=8, every=4, weight=1.0),
    "w=1, 4 patterns, every 4": dict(P, n_patterns=4, every=4, weight=1.0),
    "w=0.5, 4 patterns, every 8": dict(P, n_patterns=4, every=8, weight=0.5),
    "w=1, 4 patterns, every 8": dict(P, n_patterns=4, every=8, weight=1.0),
    "w=2, 4 patterns, every 8": dict(P, n_patterns=4, every=8, weight=2.0),
    "w=1, 3 patterns, every 8": dict(P, n_patterns=3, every=8, weight=1.0),
    "w=1, 4 patterns, every 4, 16x16 probes": dict(P, n_patterns=4, every=4, weight=1.0, probe_size=16),
    # digit-like "ink" probes, 16 stride-1 vertical placements: the fine-tuning repair of
    # benchmarks/mitigations.py (see pan_repair/repair/regularizer.py)
    "w=0.5, ink 8 patterns x 16 rows, every step": dict(INK, n_patterns=8, every=1, weight=0.5),
    "w=0.5, ink 8 patterns x 16 rows, every 4": dict(INK, n_patterns=8, every=4, weight=0.5),
}


def tensors(split: str, placement: str) -> tuple[torch.Tensor, torch.Tensor]:
    return shortcut_data([split], placement)[:2]


def make(seed: int, cfg: dict | None):
    torch.manual_seed(seed)
    model = SmallCNN(num_classes=2, depth=4, width=24, strides=(0, 2))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    penalty = None if cfg is None else PANPenalty(SIZE, seed=seed, **cfg)
    return model, opt, penalty


def step(model, opt, penalty, x, y) -> None:
    train_step(model, opt, x, y, None if penalty is None else lambda m, _x, _logits: penalty(m))


def timing(train, rounds: int, batch: int = BATCH, configs=None) -> dict[str, float]:
    x, y = train
    runs = {name: make(0, cfg) for name, cfg in CONFIGS.items() if configs is None or name in configs}
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, len(x), (batch,), generator=gen) for _ in range(16)]
    for model, opt, pen in runs.values():  # warm-up: first call builds the probe bank
        for idx in batches[:2]:
            step(model, opt, pen, x[idx], y[idx])
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (model, opt, pen) in runs.items():
            if pen is not None:
                pen.step = 0  # every round covers one whole every-period from its start
            start = time.perf_counter()
            for idx in batches:
                step(model, opt, pen, x[idx], y[idx])
            times[name].append(time.perf_counter() - start)
    # the least disturbed round of each (other processes share the CPU)
    return {name: min(v) / len(batches) for name, v in times.items()}


def train_and_test(seed: int, cfg, train, tests) -> list[float]:
    model, _, pen = make(seed, cfg)
    train_plain(model, *train, EPOCHS, lr=LR, seed=seed, batch=BATCH,
                loss_term=None if pen is None else lambda m, _x, _logits: pen(m))
    return [accuracy(model, tx, ty) for tx, ty in tests] + [find_pans(model, SIZE).count]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-train", action="store_true", help="step times only")
    parser.add_argument("--time-batch", type=int, default=BATCH, help="batch size of the step timings")
    parser.add_argument("--configs", nargs="+", default=None, help="a subset of the rows (names as in the table)")
    args = parser.parse_args()
    configs = CONFIGS if args.configs is None else {n: c for n, c in CONFIGS.items() if n in args.configs or n == "none"}
    torch.set_num_threads(args.threads)
    train = tensors("train", "biased")
    tests = [tensors("test", "biased"), tensors("test", "swapped")]
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; training batch {BATCH}, timing batch {args.time_batch}, "
          f"{len(train[0])} training images")
    per_step = timing(train, args.rounds, args.time_batch, configs)
    base = per_step["none"]
    results = {}
    if not args.skip_train:
        for name, cfg in configs.items():
            results[name] = [train_and_test(s, cfg, train, tests) for s in args.seeds]
    seeds = ", ".join(map(str, args.seeds))
    print(f"| penalty | probe images / step | step (ms) | step / no penalty | "
          f"acc. training placement (seeds {seeds}) | acc. swapped (seeds {seeds}) | swapped mean | "
          f"PANs (find_pans defaults, of 96) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, cfg in configs.items():
        positions = 3 if cfg is not None and cfg.get("probe_size") == 16 else 5  # at total stride 4
        if cfg is not None and "roll_stride" in cfg:
            positions = cfg["n_positions"]
        axes = 2 if cfg is None else len(cfg.get("axes", ("rows", "cols")))
        images = 0.0 if cfg is None else cfg["n_patterns"] * axes * positions / cfg.get("every", 1)
        row = f"| {name} | {images:g} | {1000 * per_step[name]:.1f} | {per_step[name] / base:.2f}x |"
        if results:
            accs = results[name]
            row += (f" {' / '.join(f'{100 * a[0]:.1f}' for a in accs)} |"
                    f" {' / '.join(f'{100 * a[1]:.1f}' for a in accs)} |"
                    f" {100 * statistics.mean(a[1] for a in accs):.1f} |"
                    f" {' / '.join(str(a[2]) for a in accs)} |")
        else:
            row += " - | - | - | - |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
