"""Efficacy of pan_repair's mitigations (issue #4 section 5), on the CPU, plain PyTorch loops.

**Part A: the placement shortcut.** Digits 8 and 9 (DigitsCanvas, scale 1, 8x8 digits) on 24x24
canvases; in training 8 always sits in the top half and 9 in the bottom half ("biased"). A
zero-padded SmallCNN(depth=4, width=24, strides=(0, 2)), Adam 3e-3, batch 32, ``--epochs`` (20)
epochs, learns where the digit is rather than which digit it is. From that trained baseline, each
mitigation is applied and the model fine-tuned on the *same biased data* for ``--ft-epochs``
epochs (Adam ``--ft-lr``; at most the original budget), then evaluated on the val+test splits
(143 digits) with the training placement ("biased"), the swapped placement, and random placement:

* ``baseline``: the trained model, no fine-tuning; ``fine-tune only``: the same fine-tuning
  without a mitigation (the control every fine-tuned row compares with);
* ``reflect`` / ``replicate`` / ``partial`` / ``circular``: :func:`pan_repair.convert_padding`
  of every padded layer, then fine-tuning (circular is the reference that removes the shortcut
  by construction, at the price of wrapping content across edges);
* ``prune PANs``: :func:`pan_repair.prune_pans` (mask mode) of what :func:`pan_repair.find_pans`
  detects with its defaults; ``prune + re-detect``: ``--rounds`` rounds of detect, prune,
  fine-tune (the budget split over the rounds); ``prune random``: the control, the same number of
  filters of the same layers drawn uniformly at random (``random_report``). Each is also run
  with lowered thresholds (``LOW_THRESHOLDS``: border 1.0, position 0.5; marked "low thr.");
* ``PAN penalty (default)``: fine-tuning with :class:`pan_repair.repair.regularizer.PANPenalty` at its
  defaults (the detector's border score on its own probes, margin 0.7, weight 0.03, every 16th step);
  ``PAN penalty, ink probes``: the placement penalty (``probes="placement"``) with digit-like
  "ink" probes (bright strokes on the data's dark noisy background, 8 patterns x 16 stride-1
  vertical placements every step, weight 0.5; ``PENALTY_INK``); ``PAN penalty, texture probes``:
  the placement penalty's standardised textures (``PENALTY_TEXTURE``); ``replicate + PAN
  penalty, ink probes``: the padding switched to replicate, then fine-tuned with the ink penalty;
* ``padding consistency``: fine-tuning with :class:`pan_repair.repair.consistency.PaddingConsistency`
  (weight 0.5, every step) at Adam ``CONSISTENCY_LR`` (3e-3, the rate it was tuned at in
  benchmarks/padding_consistency.py; 1e-3 gave 84.5-86.7% there); ``padding consistency,
  warm-up + ink probes``: its weight warmed up over the first quarter of the steps, plus the
  ink-probe placement penalty (the combination measured on 40 seeds there).

Columns: accuracy on the training placement / swapped placement / random placement (after
fine-tuning; "swapped, no FT" before it), PANs before -> after (``find_pans`` on 16 training images,
as the callbacks scan, at its data defaults; :func:`scan`), the share of
the baseline's detected PANs (layer, channel) no longer detected, padding reliance (prediction
flip rate on the random-placement images when every padding is switched to replicate:
:func:`pan_repair.metrics.functional.padding_reliance`; 0 by construction for the replicate row),
border accuracy gap (accuracy of digits >= 4 px from every edge minus those <= 1 px from one, on
random placement; with this shortcut accuracy depends on the half, not the border, so it is small
and noisy), wall time of mitigation + fine-tuning. Means over ``--seeds``; swapped accuracy also
per seed.

**Part B: the pretrained EfficientNet-Lite0**, before any fine-tuning: top-1 agreement of each
mitigation with the original model on 50 views of the 5 bundled photos (each photo resized to
288 px, the 4 corner and the centre 224 px crops, and their mirror images; inputs in [-1, 1] as
:func:`pan_repair.load_efficientnet_lite0` expects), and the PANs that find_pans detects after it.

Run: ``.venv/bin/python benchmarks/mitigations.py [--seeds 0 1 2 3 4] [--part a b] [--only NAME ...]
[--ft-epochs 20] [--out benchmarks/results/mitigations.md]``. ``--only`` runs a subset of Part A's
rows (names as in the table, e.g. ``--only reflect "PAN penalty"``). On a shared machine, seeds
can run as separate processes, each with ``--part a --seeds S --jsonl a_S.jsonl``, and be
tabulated together with ``--from-jsonl a_*.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pan_repair import PaddingConsistency, SmallCNN, converted_copy, find_pans, prune_pans
from pan_repair.layers.module_state import structural_copy
from pan_repair.experiments.lit_module import border_distance
from pan_repair.metrics.functional import border_accuracy_gap, padding_reliance
from pan_repair.repair.pruning import remove_pan_masks
from pan_repair.repair.regularizer import PANPenalty
from pan_repair.detect.report import Pan, PanReport
from pan_repair.experiments.shortcut import LossTerm, accuracy, shortcut_data, train_plain

SIZE = (1, 24, 24)
CLASSES = (8, 9)
CANVAS = 24
BATCH, EPOCHS, LR = 32, 20, 3e-3
FT_EPOCHS, FT_LR = 20, 1e-3
#: the placement-penalty rows (see pan_repair/repair/regularizer.py for the study): the
#: standardised-texture probes (8 patterns every step) and the digit-like "ink" probes (bright
#: strokes on the data's dark, noisy background), vertical placements only
PENALTY_TEXTURE = dict(n_patterns=8, every=1, weight=1.0, probes="placement")
PENALTY_INK = dict(probes="placement", n_patterns=8, n_positions=16, roll_stride=(1, 1), every=1, weight=0.5, axes=("rows",), style="ink",
               contrast=6.0, level=-0.22, noise=0.33, pattern_size=8)
CONSISTENCY_LR = 3e-3
LOW_THRESHOLDS = dict(border_threshold=1.0, position_threshold=0.5)


# ----------------------------------------------------------------------------------------------
# data, training, evaluation


@dataclass
class Digits:
    """Tensors of the placement-shortcut task: training split (biased) and val+test evaluation
    sets with the training placement, the swapped placement and random placement (with each
    digit's distance to the nearest edge)."""

    train: tuple[torch.Tensor, torch.Tensor]
    biased: tuple[torch.Tensor, torch.Tensor]
    swapped: tuple[torch.Tensor, torch.Tensor]
    random: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    max_offset: int


def load_digits(classes=CLASSES, canvas: int = CANVAS, limit: int | None = None) -> Digits:
    """The task's tensors; ``limit`` keeps the first images of every set (tests)."""
    cut = slice(None, limit)
    train = shortcut_data(["train"], "biased", classes, canvas)
    evals = {p: shortcut_data(["val", "test"], p, classes, canvas) for p in ("biased", "swapped", "random")}
    x, y, pos, L = evals["random"]
    distance = border_distance(pos, L)
    return Digits(train=(train[0][cut], train[1][cut]),
                  biased=(evals["biased"][0][cut], evals["biased"][1][cut]),
                  swapped=(evals["swapped"][0][cut], evals["swapped"][1][cut]),
                  random=(x[cut], y[cut], distance[cut]), max_offset=L)


def make_model(seed: int, width: int = 24) -> nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(num_classes=len(CLASSES), depth=4, width=width, strides=(0, 2))


def train(model: nn.Module, data: Digits, epochs: int, *, lr: float, seed: int,
          loss_term: LossTerm | None = None, batch: int = BATCH) -> None:
    """Adam on the biased training split, ``epochs`` epochs, seeded shuffling; optional extra loss."""
    train_plain(model, *data.train, epochs, lr=lr, seed=seed, batch=batch, loss_term=loss_term)


def penalty_term(penalty: PANPenalty) -> LossTerm:
    return lambda model, x, logits: penalty(model)


def plain_copy(model: nn.Module) -> nn.Module:
    """An independent copy (also of a model mid-training) with any PAN masks made permanent."""
    out = structural_copy(model, share=False)
    remove_pan_masks(out)
    return out


@torch.no_grad()
def evaluate(model: nn.Module, data: Digits) -> dict[str, float]:
    """Accuracies (training / swapped / random placement), padding reliance and border gap."""
    model.eval()
    x, y, distance = data.random
    logits = model(x)
    switched = converted_copy(plain_copy(model), "replicate").eval()
    reliance = padding_reliance(logits, switched(x))["flip_rate"]
    far = min(4, data.max_offset // 2)
    gap = border_accuracy_gap(logits, y, distance, max_distance=far, near=1, far=far)
    return {"acc_biased": accuracy(model, *data.biased), "acc_swapped": accuracy(model, *data.swapped),
            "acc_random": float((logits.argmax(1) == y).float().mean()),
            "reliance": float(reliance), "border_gap": float(gap)}


def pan_keys(report: PanReport) -> set[tuple[str, int]]:
    return {(p.layer, p.channel) for p in report.pans}


def random_report(model: nn.Module, report: PanReport, seed: int) -> PanReport:
    """The control: per layer, as many filters as ``report`` has PANs there, drawn uniformly at
    random from all of the layer's filters (PANs included: a random pick, not a complement)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    pans = []
    for layer, found in report.by_layer().items():
        n = len({p.channel for p in found})
        pick = torch.randperm(model.get_submodule(layer).out_channels, generator=gen)[:n].tolist()
        pans += [Pan(layer, c, (), 1, 0.0, "border") for c in pick]
    return replace(report, pans=pans)


# ----------------------------------------------------------------------------------------------
# mitigations: each takes the trained baseline (a copy), the data, the fine-tuning settings and
# the seed, and returns the fine-tuned model; ``info`` receives "swapped_no_ft" (swapped accuracy
# before fine-tuning) and anything else worth a note.


@dataclass
class FineTune:
    epochs: int = FT_EPOCHS
    lr: float = FT_LR
    rounds: int = 3


def _then_tune(model, data, ft: FineTune, seed, info, loss_term=None, lr=None):
    info["swapped_no_ft"] = accuracy(model, *data.swapped)
    if ft.epochs:
        train(model, data, ft.epochs, lr=ft.lr if lr is None else lr, seed=seed, loss_term=loss_term)
    return model


def m_baseline(model, data, ft, seed, info):
    info["swapped_no_ft"] = accuracy(model, *data.swapped)
    info["budget"] = "-"
    return model


def m_finetune_only(model, data, ft, seed, info):
    return _then_tune(model, data, ft, seed, info)


def m_padding(mode: str):
    def run(model, data, ft, seed, info):
        return _then_tune(converted_copy(model, mode), data, ft, seed, info)
    return run


def calibration(data: Digits, n: int = 16) -> torch.Tensor:
    """``n`` training images, evenly spaced over the training split: what the callbacks scan on."""
    x = data.train[0]
    return x[torch.linspace(0, len(x) - 1, n).long()]


def scan(model: nn.Module, data: Digits, thresholds: dict | None = None) -> PanReport:
    """:func:`pan_repair.find_pans` on the model's own training images (:func:`calibration`)."""
    return find_pans(model, data=calibration(data), **(thresholds or {}))


def m_prune(thresholds: dict | None = None, random: bool = False):
    """Prune the detected PANs, or (``random``, the control) as many random filters of the same layers."""
    def run(model, data, ft, seed, info):
        report = scan(model, data, thresholds)
        if random:
            report = random_report(model, report, seed)
        info["pruned"] = len(pan_keys(report))
        if report.count:
            prune_pans(model, report)
        return _then_tune(model, data, ft, seed, info)
    return run


def m_prune_redetect(thresholds: dict | None = None):
    """``ft.rounds`` rounds of: detect (what is not yet pruned), prune, fine-tune ``epochs/rounds``."""
    def run(model, data, ft, seed, info):
        pruned: set[tuple[str, int]] = set()
        per_round = [ft.epochs // ft.rounds + (r < ft.epochs % ft.rounds) for r in range(ft.rounds)]
        for r, epochs in enumerate(per_round):
            report = scan(model, data, thresholds)
            new = [p for p in report.pans if (p.layer, p.channel) not in pruned]
            if new:
                prune_pans(model, replace(report, pans=new))
                pruned |= pan_keys(replace(report, pans=new))
            if r == 0:
                info["swapped_no_ft"] = accuracy(model, *data.swapped)
            if epochs:
                train(model, data, epochs, lr=ft.lr, seed=seed + 100 * r)
        info["pruned"] = len(pruned)
        info["budget"] = f"{ft.rounds} x ~{ft.epochs / ft.rounds:.3g} ep"
        return model
    return run


def m_penalty(settings: dict, mode: str | None = None):
    """Fine-tune with ``PANPenalty(**settings)`` (after switching the padding to ``mode``)."""
    def run(model, data, ft, seed, info):
        penalty = PANPenalty(SIZE, seed=seed, **settings)
        model = model if mode is None else converted_copy(model, mode)
        return _then_tune(model, data, ft, seed, info, loss_term=penalty_term(penalty))
    return run


def m_consistency(ink: dict | None = None):
    """Fine-tune with PaddingConsistency() at CONSISTENCY_LR; with ``ink`` settings, its weight
    warmed up over a quarter of the steps and the ink-probe placement penalty added."""
    def run(model, data, ft, seed, info):
        info["budget"] = f"{ft.epochs} ep, lr {CONSISTENCY_LR:g}"
        if ink is None:
            term = PaddingConsistency()
        else:
            steps = ft.epochs * -(-len(data.train[0]) // BATCH)
            consistency, penalty = PaddingConsistency(warmup=steps // 4), PANPenalty(SIZE, seed=seed, **ink)
            term = lambda model, x, logits: consistency(model, x, logits) + penalty(model)  # noqa: E731
        return _then_tune(model, data, ft, seed, info, loss_term=term, lr=CONSISTENCY_LR)
    return run


def mitigations(ink: dict = PENALTY_INK, low: dict = LOW_THRESHOLDS) -> dict[str, Callable]:
    """Part A's rows: name -> mitigation function."""
    return {
        "baseline": m_baseline,
        "fine-tune only": m_finetune_only,
        "PAN penalty (default)": m_penalty({}),
        "padding consistency": m_consistency(),
        "padding consistency, warm-up + ink probes": m_consistency(ink),
        "PAN penalty, ink probes": m_penalty(ink),
        "replicate + PAN penalty, ink probes": m_penalty(ink, mode="replicate"),
        "PAN penalty, texture probes": m_penalty(PENALTY_TEXTURE),
        "reflect": m_padding("reflect"),
        "replicate": m_padding("replicate"),
        "partial": m_padding("partial"),
        "circular (reference)": m_padding("circular"),
        "prune PANs": m_prune(),
        "prune + re-detect": m_prune_redetect(),
        "prune random (control)": m_prune(random=True),
        "prune PANs, low thr.": m_prune(low),
        "prune + re-detect, low thr.": m_prune_redetect(low),
        "prune random, low thr. (control)": m_prune(low, random=True),
    }


def run_part_a(data: Digits, seeds, rows: dict[str, Callable], ft: FineTune, epochs: int = EPOCHS,
               width: int = 24, log=print, jsonl: str | None = None) -> dict[str, list[dict]]:
    """Every row for every seed: name -> list (one per seed) of result dicts; each result also
    appended to the JSON-lines file ``jsonl`` as it comes (``--from-jsonl`` tabulates them)."""
    results: dict[str, list[dict]] = {name: [] for name in rows}
    for seed in seeds:
        start = time.perf_counter()
        base = make_model(seed, width)
        train(base, data, epochs, lr=LR, seed=seed)
        base_time = time.perf_counter() - start
        before = scan(base, data)
        for name, mitigation in rows.items():
            info: dict = {"budget": f"{ft.epochs} ep"}
            start = time.perf_counter()
            model = mitigation(structural_copy(base, share=False), data, ft, seed, info)
            wall = time.perf_counter() - start if name != "baseline" else base_time
            after = scan(model, data)
            gone = pan_keys(before) - pan_keys(after)
            res = {**evaluate(model, data), **info, "pans_before": before.count, "pans_after": after.count,
                   "removed": len(gone) / before.count if before.count else math.nan, "wall": wall}
            results[name].append(res)
            if jsonl:
                with open(jsonl, "a") as f:
                    f.write(json.dumps({"row": name, "seed": seed, **res}) + "\n")
            log(f"  seed {seed} {name}: " + ", ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))
    return results


def _mean(values) -> float:
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return statistics.mean(values) if values else math.nan


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:.1f}"


def table_a(results: dict[str, list[dict]]) -> str:
    lines = ["| mitigation | fine-tune budget | acc. training placement % | acc. swapped % (mean) | "
             "swapped per seed | swapped, no FT % | acc. random placement % | PANs before -> after | "
             "baseline PANs removed % | padding reliance (flip %) | border acc. gap (pts) | wall (s) |",
             "|" + "---|" * 12]
    for name, rs in results.items():
        if not rs:
            continue
        m = {k: _mean([r[k] for r in rs]) for k in ("acc_biased", "acc_swapped", "swapped_no_ft", "acc_random",
                                                     "pans_before", "pans_after", "removed", "reliance",
                                                     "border_gap", "wall")}
        pruned = [r["pruned"] for r in rs if "pruned" in r]
        note = f" ({'/'.join(map(str, pruned))} pruned)" if pruned else ""
        lines.append(
            f"| {name}{note} | {rs[0]['budget']} | {_pct(m['acc_biased'])} | **{_pct(m['acc_swapped'])}** | "
            f"{' / '.join(_pct(r['acc_swapped']) for r in rs)} | {_pct(m['swapped_no_ft'])} | "
            f"{_pct(m['acc_random'])} | {m['pans_before']:.3g} -> {m['pans_after']:.3g} | {_pct(m['removed'])} | "
            f"{_pct(m['reliance'])} | {_pct(m['border_gap'])} | {m['wall']:.1f} |")
    return "\n".join(lines) + "\n\n(Means over the seeds whose values the per-seed column lists.)"


# ----------------------------------------------------------------------------------------------
# Part B: pretrained EfficientNet-Lite0


def lite0_views(size: int = 288, crop: int = 224) -> torch.Tensor:
    """50 views of the 5 bundled photos: 5 crops (4 corners, centre) of each at ``size``, and
    their mirror images."""
    from pan_repair import sample_images
    images, _ = sample_images(size)
    d = size - crop
    corners = [(0, 0), (0, d), (d, 0), (d, d), (d // 2, d // 2)]
    views = torch.cat([images[:, :, y:y + crop, x:x + crop] for y, x in corners])
    return torch.cat([views, views.flip(-1)]).contiguous()


def run_part_b(scan: bool = True, model: nn.Module | None = None, views: torch.Tensor | None = None,
               input_size=(3, 224, 224), seed: int = 0, log=print) -> list[dict]:
    """Each mitigation of the pretrained model, before any fine-tuning: top-1 agreement with the
    original and PANs detected after (``scan``)."""
    from pan_repair import load_efficientnet_lite0
    model = load_efficientnet_lite0() if model is None else model.eval()
    views = lite0_views() if views is None else views
    with torch.no_grad():
        reference = model(views).argmax(1)
    start = time.perf_counter()
    report = find_pans(model, input_size)
    scan_time = time.perf_counter() - start
    log(f"  Lite0: {report.count} PANs of {report.total_filters} filters (scan {scan_time:.1f} s)")
    candidates: dict[str, Callable[[], nn.Module]] = {
        "original": lambda: model,
        **{mode: (lambda mode=mode: converted_copy(model, mode))
           for mode in ("reflect", "replicate", "partial", "circular")},
        "prune PANs (mask)": lambda: _pruned(model, report),
        "prune random (same count per layer)": lambda: _pruned(model, random_report(model, report, seed)),
    }
    rows = []
    for name, build in candidates.items():
        start = time.perf_counter()
        m = build().eval()
        with torch.no_grad():
            top1 = m(views).argmax(1)
        wall = time.perf_counter() - start
        after = find_pans(m, input_size) if scan else None
        row = {"name": name, "agreement": float((top1 == reference).float().mean()), "wall": wall,
               "pans_after": after.count if after is not None else None,
               "removed": (len(pan_keys(report) - pan_keys(after)) / report.count
                           if after is not None and report.count else math.nan),
               "pans_before": report.count}
        rows.append(row)
        log(f"  Lite0 {name}: {row}")
    return rows


def _pruned(model: nn.Module, report: PanReport) -> nn.Module:
    m = structural_copy(model, share=False)
    prune_pans(m, report)
    return m


def table_b(rows: list[dict], n_views: int) -> str:
    lines = [f"| mitigation | top-1 agreement with original ({n_views} views) % | PANs after | "
             f"original PANs removed % | wall (s) |", "|---|---|---|---|---|"]
    for r in rows:
        after = "-" if r["pans_after"] is None else str(r["pans_after"])
        lines.append(f"| {r['name']} | {_pct(r['agreement'])} | {after} | {_pct(r['removed'])} | {r['wall']:.1f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------


def machine() -> str:
    """The OS, CPU, torch threads and versions, for the results' header (shared by the benchmarks)."""
    return (f"{platform.platform()}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
            f"torch threads, torch {torch.__version__}, Python {platform.python_version()}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--part", nargs="+", default=["a", "b"], choices=["a", "b"])
    parser.add_argument("--only", nargs="+", default=None, help="Part A rows to run (names as in the table)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="baseline training epochs")
    parser.add_argument("--ft-epochs", type=int, default=FT_EPOCHS, help="fine-tuning epochs (<= --epochs)")
    parser.add_argument("--ft-lr", type=float, default=FT_LR)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of prune + re-detect")
    parser.add_argument("--no-scan", action="store_true", help="Part B: skip the PAN scans after each mitigation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/mitigations.md")
    parser.add_argument("--jsonl", default=None, help="append every Part A result to this JSON-lines file")
    parser.add_argument("--from-jsonl", nargs="+", default=None,
                        help="tabulate Part A from JSON-lines files (e.g. one run per seed) instead of running it")
    args = parser.parse_args(argv)
    if args.ft_epochs > args.epochs:
        parser.error("--ft-epochs must not exceed --epochs (the original training budget)")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = mitigations()
    if args.only:
        unknown = [n for n in args.only if n not in rows]
        if unknown:
            parser.error(f"unknown rows {unknown}; choose from {list(rows)}")
        rows = {n: f for n, f in rows.items() if n in args.only}
    out = ["# Mitigations benchmark\n", f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`  ",
           f"Machine: {machine()}\n"]
    if args.from_jsonl:
        results: dict[str, list[dict]] = {}
        seen = set()
        for path in args.from_jsonl:
            for line in Path(path).read_text().splitlines():
                r = json.loads(line)
                if (r["row"], r["seed"]) not in seen:  # first of any duplicate (row, seed)
                    seen.add((r["row"], r["seed"]))
                    results.setdefault(r["row"], []).append(r)
        for rs in results.values():
            rs.sort(key=lambda r: r["seed"])
        print(table_a(results))
        return
    if "a" in args.part:
        data = load_digits()
        ft = FineTune(args.ft_epochs, args.ft_lr, args.rounds)
        print(f"Part A: {len(data.train[0])} training images, {len(data.swapped[0])} per evaluation set", flush=True)
        results = run_part_a(data, args.seeds, rows, ft, args.epochs,
                             log=lambda s: print(s, flush=True), jsonl=args.jsonl)
        out += [f"## Part A: placement shortcut (digits {CLASSES}, {CANVAS}x{CANVAS}; baseline {args.epochs} "
                f"epochs Adam {LR}; fine-tuning Adam {args.ft_lr} on the same biased data)\n",
                f"Ink-probe penalty: `PANPenalty({SIZE}, {', '.join(f'{k}={v}' for k, v in PENALTY_INK.items())})`; "
                f"texture probes: `PANPenalty({SIZE}, {', '.join(f'{k}={v}' for k, v in PENALTY_TEXTURE.items())})`; "
                f"low thresholds: {LOW_THRESHOLDS}.\n", table_a(results), ""]
    if "b" in args.part:
        views = lite0_views()
        rows_b = run_part_b(scan=not args.no_scan, views=views, log=lambda s: print(s, flush=True))
        out += ["## Part B: pretrained EfficientNet-Lite0, before any fine-tuning\n", table_b(rows_b, len(views)), ""]
    out.append(f"Total run time: {time.perf_counter() - start:.0f} s.")
    publish("\n".join(out), args.out)


def publish(text: str, out: str | None) -> None:
    """Print the report and write it to ``out`` (if given)."""
    print("\n" + text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")


if __name__ == "__main__":
    main()
