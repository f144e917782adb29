"""Shared machinery of the repair benchmarks on PAN-rich networks (issue #4 section 5):
``mitigations_lite0.py`` (pretrained EfficientNet-Lite0) and ``mitigations_resnet.py`` (a ResNet
trained from scratch). Each defines a :class:`Testbed` and calls :func:`main`.

**Procedure, per seed.** The testbed's baseline is trained ``--epochs`` epochs (Adam ``--lr``,
batch 32, seeded shuffling; the rate annealed to 0 by a cosine if the testbed says so) on digits
(all 10 classes, :class:`pan_repair.data.digits.DigitsCanvas`) at random places on a noisy canvas. Each
repair is applied to a copy of that baseline, then fine-tuned ``--ft-epochs`` epochs (Adam
``--ft-lr``, same schedule kind) on the same data; ``fine-tune only`` is the same fine-tuning
without a repair (the control):

* ``reflect`` / ``replicate`` / ``partial`` / ``circular``: :func:`pan_repair.convert_padding`
  of every padded layer;
* ``prune PANs``: :func:`pan_repair.prune_pans` (masks) of what find_pans detects (defaults);
  ``prune + re-detect each epoch``: before each fine-tuning epoch, detect and mask the PANs not
  yet masked (what ``PANPruning(apply_pruning=True)`` does); ``prune random (control)``: as many
  filters of the same layers as the first detection found, drawn uniformly at random;
* ``padding consistency``: fine-tuning with :class:`pan_repair.repair.consistency.PaddingConsistency`
  (weight 0.5, every 2nd step); ``padding consistency, warm-up``: weight 0.5 on every step, warmed
  up linearly over the first quarter of the fine-tuning steps (``warmup``);
* ``PAN penalty (default)``: fine-tuning with :class:`pan_repair.repair.regularizer.PANPenalty` (its
  defaults: the detector's border score, weight 0.03, every 8th step); ``PAN penalty, every
  step``: the same on every step; ``PAN penalty, weight 1, every step``: ``weight=1, every=1``.

**Columns.** Validation accuracy and its difference from the baseline and from ``fine-tune
only``; PANs after (find_pans defaults; border / position); the share of the baseline's PANs
(layer, channel) no longer detected; padding reliance when every padding is switched to
replicate (:func:`pan_repair.metrics.functional.padding_reliance`: prediction flip rate and
output shift, the mean total-variation distance between the predicted distributions; 0 by
construction for replicate); border accuracy gap on the validation placements (accuracy of
digits >= ``far`` px from every edge minus those <= ``near`` px from one,
:func:`~pan_repair.metrics.functional.border_accuracy_gap`); the paired edge gap (each
validation digit rendered at the canvas centre and touching each of the 4 edges, mid-edge:
accuracy centred minus mean accuracy at the edges, the same digits and noise, so only the
placement differs); wall time of repair + fine-tuning.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch import nn

from pan_repair import converted_copy, find_pans, prune_pans
from pan_repair.layers.module_state import structural_copy
from pan_repair.repair.consistency import PaddingConsistency
from pan_repair.data.digits import DigitsCanvas
from pan_repair.experiments.lit_module import border_distance
from pan_repair.metrics.functional import border_accuracy_gap, padding_reliance
from pan_repair.repair.regularizer import PANPenalty
from pan_repair.experiments.shortcut import LossTerm, train_plain

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mitigations import machine, pan_keys, plain_copy, publish, random_report  # noqa: E402  (the sibling benchmark)

BATCH = 32


@dataclass(frozen=True)
class Testbed:
    """A network, its digits task and its training budgets."""

    title: str                        #: heading of the results
    make: Callable[[int], nn.Module]  #: seed -> the network before the baseline training (10 classes)
    canvas: int                       #: canvas side (px)
    scale: int                        #: digit side = 8 * scale (px)
    channels: int                     #: input channels (the grey image repeated)
    epochs: int                       #: baseline training
    lr: float
    ft_epochs: int                    #: each repair's fine-tuning
    ft_lr: float
    cosine: bool                      #: rate annealed to 0 by a cosine over each training
    near: int                         #: px from the nearest edge counted "at the border"
    far: int                          #: px from every edge counted "in the centre"
    out: str                          #: default results file
    placement: str = "random"         #: DigitsCanvas placement of the training and validation digits
    test_placement: str | None = None  #: if set, also the validation digits at this placement ("swapped")

    @property
    def size(self) -> tuple[int, int, int]:
        return (self.channels, self.canvas, self.canvas)


class Split(NamedTuple):
    x: torch.Tensor         #: (N, C, H, W) images at their random places
    y: torch.Tensor         #: (N,) labels
    distance: torch.Tensor  #: (N,) px from the digit to the nearest edge
    paired: torch.Tensor    #: (N, 5, 1, H, W): centred, then touching the top / bottom / left / right edge


def load(bed: Testbed, split: str, limit: int | None = None, placement: str | None = None) -> Split:
    """A DigitsCanvas split at ``placement`` (default the testbed's; the first ``limit`` images if
    given) with its paired placements."""
    ds = DigitsCanvas(split, canvas=bed.canvas, scale=bed.scale, placement=placement or bed.placement)
    n = len(ds) if limit is None else min(limit, len(ds))
    items = [ds[i] for i in range(n)]
    x = torch.stack([it[0] for it in items]).expand(-1, bed.channels, -1, -1).contiguous()
    L, c = ds.max_offset, ds.max_offset // 2
    spots = [(c, c), (0, c), (L, c), (c, 0), (c, L)]
    paired = torch.stack([torch.stack([ds.render(i, *p) for p in spots]) for i in range(n)])
    return Split(x, torch.stack([it[1] for it in items]),
                 border_distance(torch.stack([it[2] for it in items]), L), paired)


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, channels: int) -> torch.Tensor:
    return torch.cat([model(chunk.expand(-1, channels, -1, -1)) for chunk in x.split(64)])


@torch.no_grad()
def evaluate(bed: Testbed, model: nn.Module, val: Split, test: Split | None = None) -> dict[str, float]:
    """Accuracy, padding reliance, border gaps on ``val``; accuracy on ``test`` as ``test_acc`` if given."""
    model.eval()
    logits = _logits(model, val.x, bed.channels)
    switched = converted_copy(plain_copy(model), "replicate").eval()
    reliance = padding_reliance(logits, _logits(switched, val.x, bed.channels))
    n = len(val.y)
    correct = (_logits(model, val.paired.flatten(0, 1), bed.channels).argmax(1).view(n, 5)
               == val.y[:, None]).float().mean(0)
    return {"acc": float((logits.argmax(1) == val.y).float().mean()),
            "reliance": float(reliance["flip_rate"]), "shift": float(reliance["output_shift"]),
            "border_gap": float(border_accuracy_gap(logits, val.y, val.distance, max_distance=bed.far,
                                                    near=bed.near, far=bed.far)),
            "edge_gap": float(correct[0] - correct[1:].mean()),
            **({} if test is None else {"test_acc": float((_logits(model, test.x, bed.channels).argmax(1)
                                                          == test.y).float().mean())})}


Tune = Callable[..., nn.Module]  # tune(model, epochs, loss_term=None) -> the fine-tuned model


def rows(bed: Testbed, seed: int, ft_epochs: int, steps_per_epoch: int) -> dict[str, Callable[[nn.Module, Tune], nn.Module]]:
    """name -> (baseline copy, fine-tuning function) -> the repaired, fine-tuned model."""
    def pruned(random: bool):
        def run(model, tune):
            report = find_pans(model, bed.size)
            prune_pans(model, random_report(model, report, seed) if random else report)
            return tune(model, ft_epochs)
        return run

    def pruned_redetect(model, tune):  # one round per epoch: detect what is not yet pruned, prune, tune
        done: set[tuple[str, int]] = set()
        for _ in range(ft_epochs):
            report = find_pans(model, bed.size)
            new = [p for p in report.pans if (p.layer, p.channel) not in done]
            if new:
                prune_pans(model, replace(report, pans=new))
                done |= {(p.layer, p.channel) for p in new}
            model = tune(model, 1)
        return model

    def penalised(**options):
        penalty = PANPenalty(bed.size, seed=seed, **options)
        return lambda m, tune: tune(m, ft_epochs, lambda model, x, logits: penalty(model))

    return {
        "fine-tune only": lambda m, tune: tune(m, ft_epochs),
        **{mode: (lambda m, tune, mode=mode: tune(converted_copy(m, mode), ft_epochs))
           for mode in ("reflect", "replicate", "partial", "circular")},
        "prune PANs": pruned(False),
        "prune + re-detect each epoch": pruned_redetect,
        "prune random (control)": pruned(True),
        "padding consistency": lambda m, tune: tune(m, ft_epochs, PaddingConsistency(0.5, every=2)),
        "padding consistency, warm-up": lambda m, tune: tune(
            m, ft_epochs, PaddingConsistency(0.5, warmup=ft_epochs * steps_per_epoch // 4)),
        "PAN penalty (default)": penalised(),
        "PAN penalty, every step": penalised(every=1),
        "PAN penalty, weight 1, every step": penalised(every=1, weight=1.0),
    }


def run_seed(bed: Testbed, args: argparse.Namespace, seed: int, names: list[str], train: Split,
             val: Split, test: Split | None) -> list[dict]:
    """The baseline and every row of ``names`` for one seed: a list of measured dicts."""
    start = time.perf_counter()
    base = bed.make(seed)
    train_plain(base, train.x, train.y, args.epochs, lr=args.lr, seed=seed, batch=BATCH, cosine=bed.cosine)
    before = find_pans(base, bed.size)
    results = [{"name": "baseline", **evaluate(bed, base, val, test), "after": before, "before": before,
                "wall": time.perf_counter() - start}]
    print(f"seed {seed} baseline: {results[0]['acc']:.3f}, {before.count} PANs", flush=True)
    calls = []

    def tune(model: nn.Module, epochs: int, loss_term: LossTerm | None = None) -> nn.Module:
        calls.append(epochs)  # later rounds of a row get other shuffles
        return train_plain(model, train.x, train.y, epochs, lr=args.ft_lr,
                           seed=seed + 1000 * (len(calls) - 1), batch=BATCH, loss_term=loss_term,
                           cosine=bed.cosine)

    for name, run in rows(bed, seed, args.ft_epochs, -(-len(train.x) // BATCH)).items():
        if name not in names:
            continue
        t = time.perf_counter()
        calls.clear()
        model = run(structural_copy(base, share=False), tune)
        wall = time.perf_counter() - t
        results.append({"name": name, **evaluate(bed, model, val, test), "after": find_pans(model, bed.size),
                        "before": before, "wall": wall})
        print(f"seed {seed} {name}: {results[-1]['acc']:.3f}, {results[-1]['after'].count} PANs, {wall:.0f} s",
              flush=True)
    return results


def _removed(r: dict) -> float:
    before, after = r["before"], r["after"]
    return len(pan_keys(before) - pan_keys(after)) / before.count if before.count else float("nan")


def _vs_control(results: list[dict]) -> dict[str, float]:
    control = next((r["acc"] for r in results if r["name"] == "fine-tune only"), float("nan"))
    return {r["name"]: r["acc"] - control for r in results}


def _header(bed: Testbed) -> list[str]:
    names = ["repair", "val. acc. %", *([f"acc. {bed.test_placement} %"] if bed.test_placement else []),
             "vs baseline (pts)", "vs fine-tune only (pts)", "PANs after (border / position)",
             "baseline PANs removed %", "flips → replicate %", "output shift → replicate %",
             "border acc. gap (pts)", "paired edge gap (pts)", "wall (s)"]
    return [f"| {' | '.join(names)} |", "|---" * len(names) + "|"]


def seed_table(bed: Testbed, results: list[dict]) -> list[str]:
    """One seed's rows, in the column order of :func:`_header`."""
    base, vs = results[0]["acc"], _vs_control(results)
    lines = _header(bed)
    for r in results:
        border = sum(p.kind == "border" for p in r["after"].pans)
        dc = "-" if math.isnan(vs[r["name"]]) else f"{100 * vs[r['name']]:+.1f}"
        test = f"{100 * r['test_acc']:.1f} | " if bed.test_placement else ""
        lines.append(f"| {r['name']} | {100 * r['acc']:.1f} | {test}{100 * (r['acc'] - base):+.1f} | {dc} | "
                     f"{r['after'].count} ({border} / {r['after'].count - border}) | {100 * _removed(r):.1f} | "
                     f"{100 * r['reliance']:.1f} | {100 * r['shift']:.1f} | {100 * r['border_gap']:.1f} | "
                     f"{100 * r['edge_gap']:.1f} | {r['wall']:.0f} |")
    return lines


def mean_table(bed: Testbed, per_seed: list[list[dict]]) -> list[str]:
    """Means over seeds (per-seed accuracies and PAN counts in parentheses)."""
    lines = _header(bed)
    vs = [_vs_control(results) for results in per_seed]
    for i, r0 in enumerate(per_seed[0]):
        rs = [results[i] for results in per_seed]

        def mean(f):
            return statistics.mean(f(r) for r in rs)

        def acc(key):  # "mean (seed / seed / ...)", in %
            return f"{100 * mean(lambda r: r[key]):.1f} ({' / '.join(f'{100 * r[key]:.1f}' for r in rs)})"

        name = r0["name"]
        dc = statistics.mean(v[name] for v in vs)
        dc = "-" if math.isnan(dc) else f"{100 * dc:+.1f}"
        border = mean(lambda r: sum(p.kind == "border" for p in r["after"].pans))
        count = mean(lambda r: r["after"].count)
        test = f"{acc('test_acc')} | " if bed.test_placement else ""
        counts = " / ".join(str(r["after"].count) for r in rs)
        lines.append(
            f"| {name} | {acc('acc')} | {test}"
            f"{100 * statistics.mean(r['acc'] - res[0]['acc'] for r, res in zip(rs, per_seed)):+.1f} | {dc} | "
            f"{count:.1f} ({border:.1f} / {count - border:.1f}; {counts}) | "
            f"{100 * mean(_removed):.1f} | {100 * mean(lambda r: r['reliance']):.1f} | "
            f"{100 * mean(lambda r: r['shift']):.1f} | {100 * mean(lambda r: r['border_gap']):.1f} | "
            f"{100 * mean(lambda r: r['edge_gap']):.1f} | {mean(lambda r: r['wall']):.0f} |")
    return lines


def main(beds: dict[str, Testbed], doc: str, argv: list[str] | None = None) -> None:
    """The command line of a repair benchmark over ``beds`` (name -> testbed; ``--task`` picks one)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--task", choices=list(beds), default=next(iter(beds)), help="the testbed")
    parser.add_argument("--seeds", "--seed", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, help="baseline training (default: the testbed's)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--ft-epochs", type=int, help="each repair's fine-tuning (default: the testbed's)")
    parser.add_argument("--ft-lr", type=float)
    parser.add_argument("--limit", type=int, default=None, help="keep the first images of each split (smoke runs)")
    parser.add_argument("--only", nargs="+", default=None, help="rows to run (names as in the table)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="results file (default: the testbed's)")
    args = parser.parse_args(argv)
    bed = beds[args.task]
    for key in ("epochs", "lr", "ft_epochs", "ft_lr", "out"):
        if getattr(args, key) is None:
            setattr(args, key, getattr(bed, key))
    torch.set_num_threads(args.threads)
    names = list(rows(bed, 0, args.ft_epochs, 1))
    if args.only:
        unknown = [n for n in args.only if n not in names]
        if unknown:
            parser.error(f"unknown rows {unknown}; choose from {names}")
        names = [n for n in names if n in args.only]
    start = time.perf_counter()
    train, val = load(bed, "train", args.limit), load(bed, "val", args.limit)
    test = load(bed, "val", args.limit, bed.test_placement) if bed.test_placement else None
    per_seed = [run_seed(bed, args, seed, names, train, val, test) for seed in args.seeds]
    lines = [
        f"# {bed.title}\n",
        f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`  ",
        f"Machine: {machine()}; "
        f"{len(train.x)} training / {len(val.x)} validation images; baseline {args.epochs} epochs Adam {args.lr}, "
        f"each repair fine-tuned {args.ft_epochs} epochs Adam {args.ft_lr}"
        f"{', rates annealed by a cosine' if bed.cosine else ''}; seeds {args.seeds}. "
        f"Total {time.perf_counter() - start:.0f} s.\n",
    ]
    if len(per_seed) > 1:
        lines += ["## Means over the seeds\n", *mean_table(bed, per_seed), ""]
    for seed, results in zip(args.seeds, per_seed):
        lines += [f"## Seed {seed}\n", *seed_table(bed, results), ""]
    publish("\n".join(lines), args.out)
