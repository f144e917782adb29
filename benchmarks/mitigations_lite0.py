"""Mitigations on a PAN-rich network (issue #4 section 5): the pretrained EfficientNet-Lite0
fine-tuned on the embedded digits, then repaired and fine-tuned again.

Networks trained from scratch on the small embedded data hold few PANs (1-2 in
benchmarks/mitigations.py Part A), so the targets "each mitigation removes >= 90% of the detected
PANs" and "pruning the detected PANs cuts border bias more than pruning as many random filters"
are measured here, where the detector finds hundreds.

**Task.** Digits (all 10 classes; DigitsCanvas, digit 64 px = scale 8) at random places on a
128x128 noisy canvas, as 3 channels; 1078 training and 359 validation images (each digit's
distance to the nearest edge kept). At 128 px find_pans rolls its textures to only 3 places per
axis at Lite0's total stride 32, and warns that the position scores are unreliable (5 places need
191 px, ``pan_repair.probes.min_side(32)``): the position-PAN counts below are rough. The border
scores, from constant probes, do not depend on the rolls, and border PANs are 90% of the count;
128 px keeps a run near 1 h on the CPU.

**Baseline.** :func:`pan_repair.load_efficientnet_lite0` with a new 10-class head (seeded),
fine-tuned ``--epochs`` epochs (Adam ``--lr``, batch 32, seeded shuffling). **Each mitigation**
is applied to that baseline, then fine-tuned ``--ft-epochs`` epochs (Adam ``--ft-lr``) on the
same data; ``fine-tune only`` is the same fine-tuning without a mitigation (the control):

* ``reflect`` / ``replicate`` / ``partial`` / ``circular``: :func:`pan_repair.convert_padding`
  of every padded layer;
* ``prune PANs``: :func:`pan_repair.prune_pans` (masks) of what find_pans detects (defaults);
  ``prune + re-detect each epoch``: before each fine-tuning epoch, detect and mask the PANs not
  yet masked (what ``PANPruning(apply_pruning=True)`` does); ``prune random (control)``: as many
  filters of the same layers as the first detection found, drawn uniformly at random;
* ``padding consistency``: fine-tuning with :class:`pan_repair.consistency.PaddingConsistency`
  (weight 0.5, every 2nd step);
* ``PAN penalty (default)``: fine-tuning with :class:`pan_repair.regularizer.PANPenalty` (its
  defaults: the detector's border score, weight 0.03, every 8th step); ``PAN penalty, every
  step``: the same on every step; ``PAN penalty, weight 1, every step``: ``weight=1, every=1``.

**Columns.** Validation accuracy and its difference from the baseline and from ``fine-tune
only``; PANs after (find_pans defaults at 3x128x128; border / position); the share of the
baseline's PANs (layer, channel) no longer detected; padding reliance (prediction flip rate when
every padding is switched to replicate, :func:`pan_repair.metrics.functional.padding_reliance`; 0
by construction for replicate); border accuracy gap (accuracy of digits >= 16 px from every edge
minus those <= 4 px from one, :func:`~pan_repair.metrics.functional.border_accuracy_gap`); wall
time of mitigation + fine-tuning.

Run: ``.venv/bin/python benchmarks/mitigations_lite0.py [--seed 0] [--only NAME ...]
[--out benchmarks/results/mitigations_lite0.md]``. About 1 h on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import copy
import math
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pan_repair import converted_copy, find_pans, load_efficientnet_lite0, prune_pans
from pan_repair.consistency import PaddingConsistency
from pan_repair.data import DigitsCanvas
from pan_repair.lit_module import border_distance
from pan_repair.metrics.functional import border_accuracy_gap, padding_reliance
from pan_repair.regularizer import PANPenalty
from pan_repair.shortcut import LossTerm, train_plain

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mitigations import pan_keys, plain_copy, publish, random_report  # noqa: E402  (the sibling benchmark)

CANVAS, SCALE = 128, 8
SIZE = (3, CANVAS, CANVAS)
EPOCHS, LR, FT_EPOCHS, FT_LR, BATCH = 3, 1e-3, 2, 3e-4, 32
NEAR, FAR = 4, 16  # px from the nearest edge: "at the border" / "in the centre"


def load(split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (N, 3, 128, 128), labels and distances to the nearest edge of a DigitsCanvas split."""
    ds = DigitsCanvas(split, canvas=CANVAS, scale=SCALE, placement="random")
    n = len(ds) if limit is None else min(limit, len(ds))
    items = [ds[i] for i in range(n)]
    x = torch.stack([it[0] for it in items]).expand(-1, 3, -1, -1).contiguous()
    y = torch.stack([it[1] for it in items])
    return x, y, border_distance(torch.stack([it[2] for it in items]), ds.max_offset)


def baseline(seed: int, train: tuple, epochs: int, lr: float) -> nn.Module:
    model = load_efficientnet_lite0()
    torch.manual_seed(seed)
    model.reset_classifier(10)
    return train_plain(model, *train[:2], epochs, lr=lr, seed=seed, batch=BATCH)


@torch.no_grad()
def evaluate(model: nn.Module, val: tuple) -> dict[str, float]:
    x, y, distance = val
    model.eval()
    logits = torch.cat([model(chunk) for chunk in x.split(64)])
    switched = converted_copy(plain_copy(model), "replicate").eval()
    other = torch.cat([switched(chunk) for chunk in x.split(64)])
    return {"acc": float((logits.argmax(1) == y).float().mean()),
            "reliance": float(padding_reliance(logits, other)["flip_rate"]),
            "border_gap": float(border_accuracy_gap(logits, y, distance, max_distance=FAR, near=NEAR, far=FAR))}


Tune = Callable[..., nn.Module]  # tune(model, epochs, loss_term=None) -> the fine-tuned model


def rows(seed: int, ft_epochs: int) -> dict[str, Callable[[nn.Module, Tune], nn.Module]]:
    """name -> (baseline copy, fine-tuning function) -> the repaired, fine-tuned model."""
    def pruned(random: bool):
        def run(model, tune):
            report = find_pans(model, SIZE)
            prune_pans(model, random_report(model, report, seed) if random else report)
            return tune(model, ft_epochs)
        return run

    def pruned_redetect(model, tune):  # one round per epoch: detect what is not yet pruned, prune, tune
        done: set[tuple[str, int]] = set()
        for _ in range(ft_epochs):
            report = find_pans(model, SIZE)
            new = [p for p in report.pans if (p.layer, p.channel) not in done]
            if new:
                prune_pans(model, replace(report, pans=new))
                done |= {(p.layer, p.channel) for p in new}
            model = tune(model, 1)
        return model

    penalty, every_step = PANPenalty(SIZE, seed=seed), PANPenalty(SIZE, seed=seed, every=1)
    strong = PANPenalty(SIZE, seed=seed, every=1, weight=1.0)
    return {
        "fine-tune only": lambda m, tune: tune(m, ft_epochs),
        **{mode: (lambda m, tune, mode=mode: tune(converted_copy(m, mode), ft_epochs))
           for mode in ("reflect", "replicate", "partial", "circular")},
        "prune PANs": pruned(False),
        "prune + re-detect each epoch": pruned_redetect,
        "prune random (control)": pruned(True),
        "padding consistency": lambda m, tune: tune(m, ft_epochs, PaddingConsistency(0.5, every=2)),
        "PAN penalty (default)": lambda m, tune: tune(m, ft_epochs, lambda model, x, logits: penalty(model)),
        "PAN penalty, every step": lambda m, tune: tune(m, ft_epochs, lambda model, x, logits: every_step(model)),
        "PAN penalty, weight 1, every step": lambda m, tune: tune(m, ft_epochs, lambda model, x, logits: strong(model)),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--ft-epochs", type=int, default=FT_EPOCHS)
    parser.add_argument("--ft-lr", type=float, default=FT_LR)
    parser.add_argument("--limit", type=int, default=None, help="keep the first images of each split (smoke runs)")
    parser.add_argument("--only", nargs="+", default=None, help="rows to run (names as in the table)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/mitigations_lite0.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    all_rows = rows(args.seed, args.ft_epochs)
    if args.only:
        unknown = [n for n in args.only if n not in all_rows]
        if unknown:
            parser.error(f"unknown rows {unknown}; choose from {list(all_rows)}")
        all_rows = {n: f for n, f in all_rows.items() if n in args.only}
    start = time.perf_counter()
    train, val = load("train", args.limit), load("val", args.limit)
    base = baseline(args.seed, train, args.epochs, args.lr)
    before = find_pans(base, SIZE)
    results = [{"name": "baseline", **evaluate(base, val), "after": before, "wall": time.perf_counter() - start}]
    print(f"baseline: {results[0]['acc']:.3f}, {before.count} PANs", flush=True)
    calls = []

    def tune(model: nn.Module, epochs: int, loss_term: LossTerm | None = None) -> nn.Module:
        calls.append(epochs)  # later rounds of a row get other shuffles
        return train_plain(model, *train[:2], epochs, lr=args.ft_lr, seed=args.seed + 1000 * (len(calls) - 1),
                           batch=BATCH, loss_term=loss_term)

    for name, run in all_rows.items():
        t = time.perf_counter()
        calls.clear()
        model = run(copy.deepcopy(base), tune)
        wall = time.perf_counter() - t
        results.append({"name": name, **evaluate(model, val), "after": find_pans(model, SIZE), "wall": wall})
        print(f"{name}: {results[-1]['acc']:.3f}, {results[-1]['after'].count} PANs, {wall:.0f} s", flush=True)
    base_acc = results[0]["acc"]
    control = next((r["acc"] for r in results if r["name"] == "fine-tune only"), float("nan"))
    lines = [
        "# Mitigations on a PAN-rich network: EfficientNet-Lite0 on digits at 128x128\n",
        f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`  ",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
        f"{len(train[0])} training / {len(val[0])} validation images; baseline {args.epochs} epochs Adam {args.lr}, "
        f"each mitigation fine-tuned {args.ft_epochs} epochs Adam {args.ft_lr}; seed {args.seed}. "
        f"Total {time.perf_counter() - start:.0f} s.\n",
        "| mitigation | val acc. % | vs baseline (pts) | vs fine-tune only (pts) | PANs after (border / position) | "
        "baseline PANs removed % | padding reliance (flip %) | border acc. gap (pts) | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        after = r["after"]
        border = sum(p.kind == "border" for p in after.pans)
        removed = len(pan_keys(before) - pan_keys(after)) / before.count if before.count else float("nan")
        vs_control = "-" if math.isnan(control) else f"{100 * (r['acc'] - control):+.1f}"
        lines.append(f"| {r['name']} | {100 * r['acc']:.1f} | {100 * (r['acc'] - base_acc):+.1f} | "
                     f"{vs_control} | {after.count} ({border} / {after.count - border}) | "
                     f"{100 * removed:.1f} | {100 * r['reliance']:.1f} | {100 * r['border_gap']:.1f} | {r['wall']:.0f} |")
    publish("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
