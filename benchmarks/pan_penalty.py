"""Does training with the PAN penalty end with fewer PANs, at what accuracy and step cost?

Testbed (chosen because its plain training ends with many PANs at the detector's defaults, in
~20 s on one CPU thread): scikit-learn digits, all 10 classes, upsampled x3 (24x24) at a random
place on a 48x48 canvas (``DigitsCanvas(scale=3, placement="random")``; 1078 training, 360
validation images). Network: timm ``ResNet`` with resnet10t's layout (BasicBlock x [1, 1, 1, 1],
tiered deep stem, avg-down shortcuts) at a quarter of its width (channels 16/32/64/128, stem 16;
780 filters) and output stride 8 (layer3/layer4 dilated 2/4), zero padding, random init. Adam
3e-3 annealed to 0 by a cosine over the 6 epochs (204 steps), batch 32. (At a constant rate the
final accuracy swings by 10-20 points from epoch to epoch, too much to compare within a point.)

For every setting: the same training (seed, batches) with ``PANPenalty(input_size, seed=seed,
**setting)`` added to the loss; PANs by ``find_pans(model, (1, 48, 48))`` at the default
thresholds (border / position kind), validation accuracy, and the step time. Step times: every
setting trains its own copy on the same batches, interleaved round-robin in rounds of 16 steps
(whole ``every`` periods), on ``--threads`` threads; the fastest round of each (the least
disturbed by other processes) over ``--rounds`` rounds, as a ratio to the plain step.

``--data``: what ``PANRegularizer`` does, measured as it sees it: the penalty on the first 16
training images (``PANPenalty(images=...)``) and the PANs by ``find_pans(model, data=<those 16>)``.

Run: ``.venv/bin/python benchmarks/pan_penalty.py [--seeds 0 1 2 3 4] [--rounds 10] [--threads 1]
[--settings NAME ...] [--skip-train] [--data]``; prints a markdown table.
"""
import argparse
import platform
import statistics
import time
from collections import Counter

import torch
from timm.models.resnet import BasicBlock, ResNet

from pan_repair import find_pans
from pan_repair.data.digits import DigitsCanvas
from pan_repair.repair.regularizer import PANPenalty
from pan_repair.experiments.shortcut import accuracy, train_plain, train_step

CANVAS, SCALE = 48, 3
SIZE = (1, CANVAS, CANVAS)
BATCH, EPOCHS, LR = 32, 6, 3e-3

#: name -> PANPenalty keyword arguments (None: the plain training)
SETTINGS = {
    "none": None,
    "default (border, margin 0.7, weight 0.03, every 16)": dict(),
    "every 8": dict(every=8),
    "every 4": dict(every=4),
    "weight 0.1": dict(weight=0.1),
    "border + position (weight 1), every 8": dict(position_weight=1.0, every=8),
    "former default (margin 1.35, every 8)": dict(border_margin=1.35, every=8),
}


def make_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10, in_chans=1, channels=(16, 32, 64, 128),
                  stem_width=16, stem_type="deep_tiered", avg_down=True, output_stride=8)


def tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    ds = DigitsCanvas(split, canvas=CANVAS, scale=SCALE, placement="random")
    xs, ys = zip(*(ds[i][:2] for i in range(len(ds))))
    return torch.stack(xs), torch.stack(ys)


def term(penalty):
    return None if penalty is None else (lambda model, _x, _logits: penalty(model))


def penalty(cfg, seed: int, images):
    return None if cfg is None else PANPenalty(SIZE, seed=seed, images=images, **cfg)


def timing(train, settings: dict, rounds: int, images=None) -> dict[str, float]:
    x, y = train
    runs = {}
    for name, cfg in settings.items():
        model = make_model(0)
        runs[name] = (model, torch.optim.Adam(model.parameters(), lr=LR), penalty(cfg, 0, images))
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, len(x), (BATCH,), generator=gen) for _ in range(16)]
    for model, opt, pen in runs.values():  # warm-up (the first call builds the probes)
        for idx in batches[:2]:
            train_step(model, opt, x[idx], y[idx], term(pen))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (model, opt, pen) in runs.items():
            if pen is not None:
                pen.step = 0  # each round covers whole every-periods from their start
            start = time.perf_counter()
            for idx in batches:
                train_step(model, opt, x[idx], y[idx], term(pen))
            times[name].append(time.perf_counter() - start)
    return {name: min(v) / len(batches) for name, v in times.items()}


def train_and_measure(seed: int, cfg, train, val, images=None) -> tuple[int, int, float]:
    model = make_model(seed)
    pen = penalty(cfg, seed, images)
    train_plain(model, *train, EPOCHS, lr=LR, seed=seed, batch=BATCH, loss_term=term(pen), cosine=True)
    report = find_pans(model, SIZE) if images is None else find_pans(model, data=images)
    kinds = Counter(p.kind for p in report.pans)
    return kinds["border"], kinds["position"], accuracy(model, *val)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--settings", nargs="+", default=None, help="a subset of the rows (names as in the table)")
    parser.add_argument("--skip-train", action="store_true", help="step times only")
    parser.add_argument("--data", action="store_true", help="penalty and PAN count on the first 16 training images")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = {n: c for n, c in SETTINGS.items() if args.settings is None or n in args.settings or n == "none"}
    train, val = tensors("train"), tensors("val")
    images = train[0][:16] if args.data else None
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), torch "
          f"{torch.__version__}; {len(train[0])} training images, batch {BATCH}, {EPOCHS} epochs; "
          f"{'penalty and PANs on 16 training images' if args.data else 'data-free penalty and PANs'}")
    per_step = timing(train, settings, args.rounds, images)
    results = {}
    if not args.skip_train:
        for name, cfg in settings.items():
            results[name] = [train_and_measure(s, cfg, train, val, images) for s in args.seeds]
            print(f"#   {name}: {results[name]}", flush=True)
    seeds = " / ".join(map(str, args.seeds))
    print(f"\n| setting (`PANPenalty` arguments) | PANs, seeds {seeds} (border + position) | mean PANs | "
          f"val. acc. % (seeds {seeds}) | mean acc. % | step (ms) | step / plain |")
    print("|---|---|---|---|---|---|---|")
    base = per_step["none"]
    for name, cfg in settings.items():
        label = f"{name}: `{cfg}`" if cfg is not None else name
        row = f"| {label} |"
        if results:
            r = results[name]
            row += (f" {' / '.join(f'{b + p} ({b}+{p})' for b, p, _ in r)} | {statistics.mean(b + p for b, p, _ in r):.1f} |"
                    f" {' / '.join(f'{100 * a:.1f}' for *_, a in r)} | {100 * statistics.mean(a for *_, a in r):.1f} |")
        else:
            row += " - | - | - | - |"
        row += f" {1000 * per_step[name]:.1f} | {per_step[name] / base:.2f}x |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
