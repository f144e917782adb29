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
  defaults: the detector's border score, margin 0.7, weight 0.03, every 16th step); ``PAN penalty, every
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


#: the columns of a table: (key of a row's figures, header); ``test_acc`` only with a test placement
COLUMNS = [("name", "repair"), ("acc", "val. acc. %"), ("test_acc", None), ("d_base", "vs baseline (pts)"),
           ("d_control", "vs fine-tune only (pts)"), ("pans", "PANs after (border / position)"),
           ("removed", "baseline PANs removed %"), ("reliance", "flips → replicate %"),
           ("shift", "output shift → replicate %"), ("border_gap", "border acc. gap (pts)"),
           ("edge_gap", "paired edge gap (pts)"), ("wall", "wall (s)")]


def _columns(bed: Testbed) -> list[tuple[str, str]]:
    return [(k, f"acc. {bed.test_placement} %" if k == "test_acc" else h) for k, h in COLUMNS
            if k != "test_acc" or bed.test_placement]


def figures(results: list[dict]) -> list[dict]:
    """One seed's measured dicts as the figures of its table (percent, points, counts, seconds)."""
    base, vs = results[0]["acc"], _vs_control(results)
    out = []
    for r in results:
        border = sum(p.kind == "border" for p in r["after"].pans)
        out.append({"name": r["name"], "acc": 100 * r["acc"], "d_base": 100 * (r["acc"] - base),
                     "d_control": 100 * vs[r["name"]], "count": r["after"].count, "border": border,
                     "removed": 100 * _removed(r), "reliance": 100 * r["reliance"], "shift": 100 * r["shift"],
                     "border_gap": 100 * r["border_gap"], "edge_gap": 100 * r["edge_gap"], "wall": r["wall"],
                     **({"test_acc": 100 * r["test_acc"]} if "test_acc" in r else {})})
    return out


#: figures printed with one decimal (percent or points) besides the accuracies
_DECIMAL = ("removed", "reliance", "shift", "border_gap", "edge_gap")


def _header(bed: Testbed) -> list[str]:
    names = [h for _, h in _columns(bed)]
    return [f"| {' | '.join(names)} |", "|---" * len(names) + "|"]


def _signed(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:+.1f}"


def seed_table(bed: Testbed, rows_: list[dict]) -> list[str]:
    """One seed's rows (:func:`figures`), in the column order of :func:`_header`."""
    lines = _header(bed)
    for f in rows_:
        cells = {"name": f["name"], "pans": f"{f['count']} ({f['border']} / {f['count'] - f['border']})",
                 "d_base": _signed(f["d_base"]), "d_control": _signed(f["d_control"]), "wall": f"{f['wall']:.0f}",
                 **{k: f"{f[k]:.1f}" for k in ("acc", "test_acc", *_DECIMAL) if k in f}}
        lines.append(f"| {' | '.join(cells[k] for k, _ in _columns(bed))} |")
    return lines


def _mean(fs: list[dict], key: str) -> float:
    return statistics.mean(f[key] for f in fs)


def _with_seeds(fs: list[dict], key: str) -> str:
    """``mean (seed / seed / ...)`` of one figure."""
    return f"{_mean(fs, key):.1f} ({' / '.join(f'{f[key]:.1f}' for f in fs)})"


def mean_table(bed: Testbed, per_seed: list[list[dict]]) -> list[str]:
    """Means over seeds of their :func:`figures` (per-seed accuracies and PAN counts in parentheses)."""
    lines = _header(bed)
    for i, f0 in enumerate(per_seed[0]):
        fs = [rows_[i] for rows_ in per_seed]
        count, border = _mean(fs, "count"), _mean(fs, "border")
        counts = " / ".join(str(f["count"]) for f in fs)
        cells = {"name": f0["name"], "acc": _with_seeds(fs, "acc"),
                 "test_acc": _with_seeds(fs, "test_acc") if "test_acc" in f0 else "",
                 "d_base": _signed(_mean(fs, "d_base")), "d_control": _signed(_mean(fs, "d_control")),
                 "pans": f"{count:.1f} ({border:.1f} / {count - border:.1f}; {counts})",
                 "wall": f"{_mean(fs, 'wall'):.0f}",
                 **{k: f"{_mean(fs, k):.1f}" for k in _DECIMAL}}
        lines.append(f"| {' | '.join(cells[k] for k, _ in _columns(bed))} |")
    return lines


def read_seed_tables(bed: Testbed, text: str) -> dict[int, list[dict]]:
    """The ``## Seed N`` tables of an earlier results file, back as :func:`figures` (as rounded there)."""
    keys = {h: k for k, h in _columns(bed)}
    out: dict[int, list[dict]] = {}
    for section in text.split("\n## Seed ")[1:]:
        seed = int(section.split("\n", 1)[0])
        table = [line for line in section.split("\n") if line.startswith("| ")]
        header = [keys[h.strip()] for h in table[0].strip("|").split("|")]
        found = []
        for line in table[1:]:
            cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
            count, kinds = cells.pop("pans").split(" (")
            f = {"name": cells.pop("name"), "count": int(count), "border": int(kinds.split(" / ")[0])}
            f.update({k: float("nan") if v == "-" else float(v) for k, v in cells.items()})
            found.append(f)
        out[seed] = found
    return out


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
    parser.add_argument("--combine", nargs="+", type=Path, default=None, metavar="FILE",
                        help="tabulate the seed tables of earlier results files (runs nothing)")
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
    if args.combine:
        found: dict[int, list[dict]] = {}
        for path in args.combine:
            try:
                tables = read_seed_tables(bed, path.read_text())
            except (OSError, KeyError, ValueError, IndexError) as err:
                parser.error(f"--combine {path}: not a results file of this testbed ({type(err).__name__}: {err})")
            if not tables:
                parser.error(f"--combine {path}: no '## Seed N' table in it")
            found.update(tables)
        args.seeds, per_seed = sorted(found), [found[seed] for seed in sorted(found)]
        if len({tuple(f["name"] for f in rows_) for rows_ in per_seed}) > 1:
            parser.error("--combine: the seeds' tables have different rows")
        what = (f"the seed tables of {', '.join(p.as_posix() for p in args.combine)} (each seed's run, "
                "machine and threads as stated there; means of their rounded figures).\n")
        lines = [f"# {bed.title}\n", f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`: {what}"]
    else:
        train, val = load(bed, "train", args.limit), load(bed, "val", args.limit)
        test = load(bed, "val", args.limit, bed.test_placement) if bed.test_placement else None
        per_seed = [figures(run_seed(bed, args, seed, names, train, val, test)) for seed in args.seeds]
        lines = [
            f"# {bed.title}\n",
            f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`  ",
            (f"Machine: {machine()}; {len(train.x)} training / {len(val.x)} validation images; baseline "
             f"{args.epochs} epochs Adam {args.lr}, each repair fine-tuned {args.ft_epochs} epochs Adam {args.ft_lr}"
             f"{', rates annealed by a cosine' if bed.cosine else ''}; seeds {args.seeds}. "
             f"Total {time.perf_counter() - start:.0f} s.\n"),
        ]
    if len(per_seed) > 1:
        lines += ["## Means over the seeds\n", *mean_table(bed, per_seed), ""]
    for seed, rows_ in zip(args.seeds, per_seed):
        lines += [f"## Seed {seed}\n", *seed_table(bed, rows_), ""]
    publish("\n".join(lines), args.out)
