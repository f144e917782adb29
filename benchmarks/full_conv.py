"""Full convolution (F-Conv) and the other repairs on the project's shortcut tasks (issue 15).

**Tasks** (``--tasks``), digits on a 32x32 noisy canvas, class tied to place in training:

* ``halves``: all 10 digits at 16 px (scale 2), 0-4 in the top half and 5-9 in the bottom half
  (``DigitsCanvas(placement="biased")``); tested swapped (``"swapped"``);
* ``border``: 0-4 touching an edge, 5-9 at least 4 px from every edge (``"border"``); tested
  swapped (``"border-swapped"``);
* ``relation`` (after Kayhan & van Gemert's red-green task): an 8 px "0" and an 8 px "1" (real
  handwritten digits of the split), one above the other (vertical gap 9-14 px, so they never
  overlap; columns at most 8 px apart); the class is which of the two is on top. Similar (training):
  the pair's centre is in the top half when the "0" is on top and in the bottom half otherwise, so
  the absolute height of either digit is a shortcut; dissimilar: the other way round. Canvases are
  standardised per image (mean 0, std 1), so the background is not zero and the canvas's edge is
  visible against zero padding;
* ``relation-black``: the same pairs on a black canvas (no noise, ink in [0, 1] on exact zeros), as
  in Kayhan & van Gemert's red-green task: the canvas's edge looks like zero padding;
* ``relation-black-nobias``: the same with convs without bias, so that every layer's response to
  empty canvas is 0, what the next layer's zero padding adds: the only setting where full
  convolution leaves no border at any depth (with biases, a layer's constant response ``relu(b)``
  to empty canvas meets the next layer's zero padding and makes a new border).

**Procedure, per (task, seed) job.** A plain network without BatchNorm (4 convs 3x3, zero padding
1, 32-64-64-64 channels, max pooling by 2 after the first two, global max pooling, a linear head;
:func:`make_model`) is trained ``--epochs`` epochs on the training placement (Adam ``--lr``, batch
32, seeded shuffling, rate annealed to 0 by a cosine: ``benchmarks/repair_table.py``'s loop). Each
repair is applied to a copy of it and fine-tuned on the same data with the original budget (the
same epochs, rate and schedule); rows:

* ``none``: the trained model; ``fine-tune only``: fine-tuned without a repair (the control);
* ``reflect`` / ``replicate`` / ``partial`` / ``circular`` / ``full``: :func:`pan_repair.convert_padding`
  of every padded layer (``full``: F-Conv, zeros ``d(k - 1)`` a side, the maps grow);
* ``prune PANs``: :func:`pan_repair.prune_pans` (masks) of what :func:`pan_repair.find_pans` detects;
* ``consistency circular`` / ``consistency full``: :class:`pan_repair.repair.consistency.PaddingConsistency`
  (weight 0.5, every step, warmed up over the first quarter of the steps) against the circular /
  the full-convolution twin.

**Columns** (means over seeds, std in parentheses): accuracy on the swapped / dissimilar
placement and on the training / similar placement (validation digits); padding reliance: the share
of predictions that flip when every padding is switched to replicate
(:func:`pan_repair.metrics.functional.padding_reliance`); PANs find_pans detects after (border /
position); cost of a training step (ms, and relative to the plain step of ``fine-tune only``).
**Goal**, per task: dissimilar within 2 points of similar, with similar at least the circular row's.

Run: ``python benchmarks/full_conv.py [--tasks halves border relation relation-black relation-black-nobias] [--seeds 0 ... 9] [--device cpu|cuda]
[--workers N] [--jsonl FILE]`` (each finished job appends a line to ``--jsonl``; jobs already there
are skipped, so a run resumes); ``--from-jsonl FILE ...`` only writes the table. Results:
benchmarks/results/full_conv.md.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pan_repair import converted_copy, find_pans
from pan_repair.repair.consistency import PaddingConsistency
from pan_repair.data.digits import DigitsCanvas
from pan_repair.metrics.functional import padding_reliance
from pan_repair.experiments.shortcut import LossTerm, train_plain

sys.path.insert(0, str(Path(__file__).resolve().parent))
import repair_table  # noqa: E402  (the sibling benchmarks)
from mitigations import machine, plain_copy, publish  # noqa: E402

BATCH = 32
CANVAS = 32
OUT = "benchmarks/results/full_conv.md"
#: table name -> name in repair_table.rows() (the rows shared with the other repair benchmarks)
SHARED = {"fine-tune only": "fine-tune only", "reflect": "reflect", "replicate": "replicate",
          "partial": "partial", "circular": "circular", "prune PANs": "prune PANs",
          "consistency circular": "padding consistency, warm-up"}
ROWS = ["none", "fine-tune only", "reflect", "replicate", "partial", "circular", "full", "prune PANs",
        "consistency circular", "consistency full"]


def make_model(seed: int, classes: int = 10, bias: bool = True) -> nn.Module:
    """4 zero-padded 3x3 convs without BatchNorm, max pooling, global max pooling, a linear head."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1, bias=bias), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1, bias=bias), nn.ReLU(),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, classes))


def _bed(title: str, placement: str, test_placement: str, scale: int, classes: int,
         epochs: int, bias: bool = True) -> repair_table.Testbed:
    return repair_table.Testbed(title=title, make=lambda seed: make_model(seed, classes, bias), canvas=CANVAS,
                                scale=scale, channels=1, epochs=epochs, lr=3e-3, ft_epochs=epochs, ft_lr=3e-3,
                                cosine=True, near=1, far=4, out=OUT, placement=placement,
                                test_placement=test_placement)


TASKS = {
    "halves": _bed("halves: 0-4 in the top half, 5-9 in the bottom half", "biased", "swapped", 2, 10, 10),
    "border": _bed("border: 0-4 touching an edge, 5-9 in the centre", "border", "border-swapped", 2, 10, 10),
    "relation": _bed("relation: is the 0 above the 1? (the pair high when it is)", "relation", "relation-swapped",
                     1, 2, 10),
    "relation-black": _bed("relation on a black canvas (its edge looks like zero padding)", "relation-black",
                           "relation-black-swapped", 1, 2, 10),
    "relation-black-nobias": _bed("relation on a black canvas, convs without bias", "relation-black",
                                  "relation-black-swapped", 1, 2, 10, bias=False),
}


# ------------------------------------------------------------------------------ data
def relation_data(split: str, swapped: bool, n: int, black: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` canvases of the relation task (module docstring): images (n, 1, 32, 32), labels
    (0: the "0" on top); ``black``: ink on exact zeros, else with noise (std 0.05) and standardised
    per image. Deterministic in (split, swapped)."""
    noise = 0.0 if black else 0.05
    ds = DigitsCanvas(split, canvas=CANVAS, scale=1, classes=(0, 1))
    zeros, ones = np.flatnonzero(ds.labels.numpy() == 0), np.flatnonzero(ds.labels.numpy() == 1)
    rng = np.random.default_rng([15, ("train", "val", "test").index(split), int(swapped)])
    d, L = ds.digit_size, ds.max_offset
    images, labels = torch.empty(n, 1, CANVAS, CANVAS), torch.empty(n, dtype=torch.int64)
    for k in range(n):
        label = int(rng.integers(2))
        gap = int(rng.integers(9, 15))
        high = (label == 0) ^ swapped  # similar: the pair high when the "0" is on top
        centre_limit = L / 2 - gap / 2  # y_top + gap / 2 < L / 2: the pair's centre in the top half
        tops = [y for y in range(L - gap + 1) if (y < centre_limit) == high and y != centre_limit]
        top = int(rng.choice(tops))
        x0 = int(rng.integers(L + 1))
        x1 = int(rng.integers(max(0, x0 - 8), min(L, x0 + 8) + 1))
        y0, y1 = (top, top + gap) if label == 0 else (top + gap, top)
        p = torch.from_numpy(rng.normal(0.0, noise, (CANVAS, CANVAS)).astype(np.float32))
        p[y0:y0 + d, x0:x0 + d] += ds._ink[int(rng.choice(zeros))]
        p[y1:y1 + d, x1:x1 + d] += ds._ink[int(rng.choice(ones))]
        images[k, 0], labels[k] = p if black else (p - p.mean()) / p.std(), label
    return images, labels


def load(bed: repair_table.Testbed, split: str, placement: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of ``split`` at ``placement`` (the first ``limit`` if given)."""
    if placement.startswith("relation"):
        size = len(DigitsCanvas(split, canvas=CANVAS, scale=1))  # as many as the digits tasks
        return relation_data(split, placement.endswith("swapped"), min(size, limit or size), "black" in placement)
    ds = DigitsCanvas(split, canvas=bed.canvas, scale=bed.scale, placement=placement)
    items = [ds[i] for i in range(min(len(ds), limit or len(ds)))]
    return torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items])


# ------------------------------------------------------------------------------ one job
@dataclass(frozen=True)
class Config:
    epochs: int | None = None  #: None: the task's
    limit: int | None = None
    device: str = "cpu"
    rows: tuple[str, ...] = tuple(ROWS)


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(chunk) for chunk in x.split(256)])


@torch.no_grad()
def measure(model: nn.Module, similar: tuple, dissimilar: tuple, size: tuple[int, ...]) -> dict:
    """Accuracies, padding reliance (flips to replicate, on the similar images) and PANs after."""
    model.eval()
    logits = _logits(model, similar[0])
    flips = padding_reliance(logits, _logits(converted_copy(plain_copy(model), "replicate").eval(), similar[0]))
    with torch.enable_grad():
        report = find_pans(model, size)
    return {"similar": float((logits.argmax(1) == similar[1]).float().mean()),
            "dissimilar": float((_logits(model, dissimilar[0]).argmax(1) == dissimilar[1]).float().mean()),
            "reliance": float(flips["flip_rate"]), "pans": report.count, "border_pans": len(report.of_kind("border"))}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_job(task: str, seed: int, config: Config) -> dict:
    """One (task, seed): the baseline, then every row of ``config.rows``; a JSON-ready dict."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    bed = TASKS[task]
    if config.epochs is not None:
        bed = replace(bed, epochs=config.epochs, ft_epochs=config.epochs)
    dev = torch.device(config.device)
    data = tuple(t.to(dev) for t in load(bed, "train", bed.placement, config.limit))
    similar = tuple(t.to(dev) for t in load(bed, "val", bed.placement, config.limit))
    dissimilar = tuple(t.to(dev) for t in load(bed, "val", bed.test_placement, config.limit))
    steps = -(-len(data[0]) // BATCH)
    timing = {"seconds": 0.0, "steps": 0}

    def train(model: nn.Module, epochs: int, lr: float, shuffle_seed: int, loss_term: LossTerm | None = None
              ) -> nn.Module:
        _sync(config.device)
        t = time.perf_counter()
        model = train_plain(model, *data, epochs, lr=lr, seed=shuffle_seed, batch=BATCH, loss_term=loss_term,
                            cosine=bed.cosine)
        _sync(config.device)
        timing["seconds"] += time.perf_counter() - t
        timing["steps"] += epochs * steps
        return model

    def tune(model: nn.Module, epochs: int, loss_term: LossTerm | None = None) -> nn.Module:
        return train(model, epochs, bed.ft_lr, seed + 1000, loss_term)

    base = train(bed.make(seed).to(dev), bed.epochs, bed.lr, seed)
    results = [{"name": "none", **measure(base, similar, dissimilar, bed.size),
                "step_ms": 1000 * timing["seconds"] / timing["steps"]}]
    shared = repair_table.rows(bed, seed, bed.ft_epochs, steps)
    repairs = {**{name: shared[key] for name, key in SHARED.items()},
               "full": lambda m, tune: tune(converted_copy(m, "full", input_size=bed.size), bed.ft_epochs),
               "consistency full": lambda m, tune: tune(
                   m, bed.ft_epochs, PaddingConsistency(0.5, mode="full", warmup=bed.ft_epochs * steps // 4))}
    for name in (r for r in config.rows if r != "none"):
        timing.update(seconds=0.0, steps=0)
        model = repairs[name](plain_copy(base), tune)
        results.append({"name": name, **measure(model, similar, dissimilar, bed.size),
                        "step_ms": 1000 * timing["seconds"] / timing["steps"]})
    return {"task": task, "seed": seed, "epochs": bed.epochs, "train": len(data[0]), "val": len(similar[0]),
            "device": config.device, "machine": machine(), "wall": time.perf_counter() - start, "rows": results}


# ------------------------------------------------------------------------------ sweep and table
def read_jsonl(paths: list[str]) -> list[dict]:
    jobs = []
    for path in paths:
        if Path(path).exists():
            jobs += [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return jobs


def sweep(tasks: list[str], seeds: list[int], config: Config, workers: int, jsonl: str | None) -> list[dict]:
    """Every (task, seed) job not yet in ``jsonl``, on ``workers`` processes; each finished job is
    appended to ``jsonl``. Returns all jobs (those read back included)."""
    jobs = read_jsonl([jsonl]) if jsonl else []
    done = {(j["task"], j["seed"]) for j in jobs}
    todo = [(t, s) for t in tasks for s in seeds if (t, s) not in done]

    def finished(job: dict) -> None:
        jobs.append(job)
        print(f"{job['task']} seed {job['seed']}: {job['wall']:.0f} s; " + ", ".join(
            f"{r['name']} {100 * r['dissimilar']:.0f}/{100 * r['similar']:.0f}" for r in job["rows"]), flush=True)
        if jsonl:
            with open(jsonl, "a") as f:
                f.write(json.dumps(job) + "\n")

    if workers <= 1:
        for task, seed in todo:
            finished(run_job(task, seed, config))
        return jobs
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for future in as_completed([pool.submit(run_job, t, s, config) for t, s in todo]):
            finished(future.result())
    return jobs


def _stat(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    mean = statistics.mean(values)
    spread = f" ({scale * statistics.stdev(values):.{digits}f})" if len(values) > 1 else ""
    return f"{scale * mean:.{digits}f}{spread}"


def task_table(task: str, jobs: list[dict]) -> list[str]:
    """The rows of ``task`` over its seeds, then whether the goal is met and by which rows."""
    jobs = sorted((j for j in jobs if j["task"] == task), key=lambda j: j["seed"])
    names = [r["name"] for r in jobs[0]["rows"]]
    by_name = {n: [next(r for r in j["rows"] if r["name"] == n) for j in jobs] for n in names}
    plain = statistics.mean(r["step_ms"] for r in by_name.get("fine-tune only", by_name["none"]))
    bed = TASKS[task]
    wall = statistics.mean(j["wall"] for j in jobs)
    lines = [f"## {bed.title}\n", f"{len(jobs)} seeds ({', '.join(str(j['seed']) for j in jobs)}); "
             f"{jobs[0]['train']} training / {jobs[0]['val']} validation images; {jobs[0]['epochs']} epochs, "
             f"each repair fine-tuned as long; device {jobs[0]['device']}; mean job {wall:.0f} s.\n",
             f"| repair | {bed.test_placement} acc. % | {bed.placement} acc. % | gap (pts) | flips → replicate % "
             "| PANs after (border) | step ms | step vs plain |", "|---" * 8 + "|"]
    means = {}
    for name, rs in by_name.items():
        sim, dis = statistics.mean(r["similar"] for r in rs), statistics.mean(r["dissimilar"] for r in rs)
        means[name] = (sim, dis)
        step = statistics.mean(r["step_ms"] for r in rs)
        lines.append(f"| {name} | {_stat([r['dissimilar'] for r in rs])} | {_stat([r['similar'] for r in rs])} | "
                     f"{100 * (sim - dis):.1f} | {_stat([r['reliance'] for r in rs])} | "
                     f"{_stat([r['pans'] for r in rs], 1)} ({_stat([r['border_pans'] for r in rs], 1)}) | "
                     f"{step:.1f} | {step / plain:.2f}x |")
    lines += ["", goal(means), ""]
    return lines


def goal(means: dict[str, tuple[float, float]]) -> str:
    """Which rows reach dissimilar >= similar - 2 pts with similar >= the circular row's (means)."""
    reference = means.get("circular", (math.nan,))[0]
    met = [n for n, (sim, dis) in means.items() if dis >= sim - 0.02 and sim >= reference]
    if math.isnan(reference):
        return "Goal: not assessed (no circular row)."
    return (f"Goal (dissimilar within 2 pts of similar, similar >= circular's {100 * reference:.1f}%): "
            + (f"**met** by {', '.join(met)}." if met else "**not met** by any row."))


def table(jobs: list[dict], command: str) -> str:
    tasks = [t for t in TASKS if any(j["task"] == t for j in jobs)]
    lines = ["# Full convolution (F-Conv) and the other repairs on the shortcut tasks\n",
             f"Command: `{command}`  ", f"Jobs ran on: {'; '.join(sorted({j['machine'] for j in jobs}))}.\n"]
    for task in tasks:
        lines += task_table(task, jobs)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--epochs", type=int, help="training and each fine-tuning (default: the task's)")
    parser.add_argument("--limit", type=int, help="the first images of each split (smoke runs)")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=ROWS)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--workers", type=int, default=1, help="processes over the (task, seed) jobs")
    parser.add_argument("--jsonl", help="append each finished job here; jobs already there are skipped")
    parser.add_argument("--from-jsonl", nargs="+", help="only write the table from these files")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args(argv)
    command = " ".join(["python", *sys.argv])
    if args.from_jsonl:
        jobs = read_jsonl(args.from_jsonl)
    else:
        config = Config(args.epochs, args.limit, args.device, tuple(r for r in ROWS if r in args.rows))
        jobs = sweep(args.tasks, args.seeds, config, args.workers, args.jsonl)
    publish(table([j for j in jobs if j["task"] in args.tasks], command), args.out)


if __name__ == "__main__":
    main()
