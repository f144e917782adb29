"""Detector validity matrix (issue 13, point 5): does ``find_pans`` flag the channels that carry position?

Architectures {SmallCNN, torchvision resnet18, timm mobilenetv3_small_050, pretrained Lite0 on real photos}
x input conventions {normalised, [0, 1] on black, [0, 1] on white, noisy background} x sizes {32, 64, 96,
100 (off the stride grid), 224}. The digits cells are trained briefly (AdamW, one-cycle) with two heads on a
globally pooled network: *digit* (10 classes, position-free) and *half* (is the digit's centre in the top or
bottom half of the canvas; only the padding can tell a globally pooled network that).

Data: scikit-learn ``load_digits`` (8x8, ink/16) upscaled bilinearly to ``round(size / 3)`` px and placed at a
uniformly random position; a fixed 1397/400 split of the 1797 digits by digit index, each train digit at
``copies`` random places, each test digit at 2. Conventions, from the [0, 1]-on-black canvas ``b``:
``black`` = b; ``white`` = 1 - b; ``noisy`` = clip(U(0, 0.5) background + b, 0, 1);
``norm`` = (b - mu) / sigma with the train set's scalar mean and std. 3-channel models get the grey image
repeated.

Per cell:

* ``frac`` = PAN fraction of ``find_pans(model, data=<16 fixed training images>)``; ``free`` = the
  data-free scan ``find_pans(model, input_size, input_range=(0, 1) | mean/std of the convention)``.
* ``twin`` = PANs of the circular twin (``structural_copy(share=False)`` + ``convert_padding("circular")``),
  same data. Target: 0.
* selectivity of a channel set = (half-head accuracy drop) - (digit-head accuracy drop) on the 800 test
  images when the set is silenced (forward hook zeroing the channel at the output of the BatchNorm the conv
  feeds, or of the conv if none); ``margin`` = flagged selectivity - mean over >= 5 draws of as many random
  channels of the same layers (not flagged, when a layer has enough unflagged ones). Target: margin >= +0.10
  where any channel is flagged. ``info_margin``: the same on information instead of accuracy (a head's
  information ``log K - NLL`` in nats above chance; each drop as a share of the head's own), which moves
  where a head stays right with less confidence. ``eta_flagged`` / ``eta_layer``: the share of the
  flagged channels' (their layers' other channels') pooled-response variance over the test images
  explained by the half label: what they carry, where silencing has no power.
* ``dep`` = ``report.padding_dependence`` (output_shift / flip_rate under replicate padding: for the
  two-head tuple output, find_pans reports each head and the larger; the table shows the half head's), and the replicate-switched model's test
  accuracies (digit, half).
* scan time (s) of the data scan and of a plain forward of the same 16 images and of a batch the size of the
  scan's (16 + 2 * 8 * 8 roll images).
* Target "<= 10% flagged unless they carry position": frac <= 0.10 or margin >= 0.10.
* ``--oracle`` (its own JSON-lines file, ``benchmarks/results/detector_validity_oracle.jsonl``): where the
  margin is missed, can any set of that size reach it? The flagged set beside as many (and 4x as many)
  channels per layer of the highest half-label eta2, and the scan's own flags at the lower position
  thresholds :data:`SWEEP_THRESHOLDS` (:func:`measure_oracle_cell`).

Usage: ``python benchmarks/detector_validity.py [--cells smallcnn:black:32 ...] [--device cuda] [--jsonl ...] [--out ...]``;
``--from-jsonl`` tabulates an earlier run. Results are appended to the JSON-lines file cell by cell. The
published table, at the default 0.5: ``--from-jsonl --jsonl benchmarks/results/detector_validity_t045.jsonl
--extra-jsonl benchmarks/results/detector_validity_oracle_t050.jsonl --at 0.5 --free-from
benchmarks/results/stem_canvas.jsonl benchmarks/results/saturated_layers.jsonl
benchmarks/results/border_interior.jsonl --data-from benchmarks/results/border_interior.jsonl --notes
benchmarks/results/detector_validity_notes_050.md``; at 0.6 (``--out
benchmarks/results/detector_validity_060.md``): ``--from-jsonl --extra-jsonl
benchmarks/results/detector_validity_carried.jsonl benchmarks/results/detector_validity_info.jsonl
benchmarks/results/detector_validity_oracle.jsonl --free-from benchmarks/results/stem_canvas.jsonl`` (cells
rerun for the later columns, same seed and threads: same networks, same flags). The data-free columns come
from the per-cell benchmarks' scans of the same networks with the current probes and rules, and the data
scans the interior rule changed from ``benchmarks/border_interior.py``'s, see :func:`overlay_free` and
:func:`overlay_data`.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pan_repair import SmallCNN, convert_padding, find_pans
from pan_repair.detect.implied import CANVAS_NOTE
from pan_repair.layers import conv_bn_pairs
from pan_repair.layers.module_state import device_dtype, structural_copy

CONVENTIONS = ("norm", "black", "white", "noisy")
SIZES = (32, 64, 96, 100, 224)
ARCHS = ("smallcnn", "resnet18", "mobilenet")
N_TRAIN_DIGITS = 1397
RANDOM_DRAWS = 5
SAMPLE = 16
MARGIN_TARGET = 0.10
FRACTION_TARGET = 0.10


# ------------------------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32) / 16.0, torch.tensor(d.target, dtype=torch.int64)


def render(size: int, split: str, copies: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[0, 1]-on-black canvases (N, 1, size, size) and labels (N, 2) = [digit, half] (half 0 = top)."""
    images, labels = _digits()
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(1234))
    idx = perm[:N_TRAIN_DIGITS] if split == "train" else perm[N_TRAIN_DIGITS:]
    targets_ = labels[idx]
    d = max(8, round(size / 3))
    glyphs = F.interpolate(images[idx, None], size=(d, d), mode="bilinear", align_corners=False).clamp(0, 1)
    span = size - d
    ys_allowed = [y for y in range(span + 1) if 2 * y + d != size]  # no digit centred exactly on the midline
    rng = np.random.default_rng(seed)
    out = torch.zeros(copies * len(idx), 1, size, size)
    lab = torch.zeros(copies * len(idx), 2, dtype=torch.int64)
    k = 0
    for _ in range(copies):
        ys = rng.choice(ys_allowed, len(idx))
        xs = rng.integers(0, span + 1, len(idx))
        for i in range(len(idx)):
            y, x = int(ys[i]), int(xs[i])
            out[k, 0, y:y + d, x:x + d] = glyphs[i, 0]
            lab[k, 0] = targets_[i]
            lab[k, 1] = int(2 * y + d > size)
            k += 1
    return out, lab



def apply_convention(b: torch.Tensor, convention: str, stats: tuple[float, float], seed: int) -> torch.Tensor:
    if convention == "black":
        return b
    if convention == "white":
        return 1.0 - b
    if convention == "noisy":
        g = torch.Generator().manual_seed(seed)
        return (torch.rand(b.shape, generator=g) * 0.5 + b).clamp(0, 1)
    if convention == "norm":
        return (b - stats[0]) / stats[1]
    raise ValueError(convention)


def dataset(size: int, convention: str, copies: int = 2, seed: int = 0):
    """(x_train, y_train, x_test, y_test, free-scan convention kwargs)."""
    btr, ytr = render(size, "train", copies, seed)
    bte, yte = render(size, "test", 2, seed + 1)
    stats = (float(btr.mean()), float(btr.std()))
    xtr = apply_convention(btr, convention, stats, seed + 2)
    xte = apply_convention(bte, convention, stats, seed + 3)
    free = dict(mean=stats[0], std=stats[1]) if convention == "norm" else dict(input_range=(0.0, 1.0))
    return xtr, ytr, xte, yte, free


# ------------------------------------------------------------------------------------------------- models
class TwoHeads(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.digit_head = nn.Linear(features, 10)
        self.half_head = nn.Linear(features, 2)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.digit_head(z), self.half_head(z)


class TimmTwoHeads(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        import timm

        self.body = timm.create_model(name, pretrained=False, num_classes=0, in_chans=3)
        self.heads = TwoHeads(getattr(self.body, "head_hidden_size", None) or self.body.num_features)

    def forward(self, x):
        return self.heads(self.body(x))


def smallcnn_layout(size: int) -> tuple[int, tuple[int, ...]]:
    """(depth, downsampling blocks) of the SmallCNN: its last map 7-16 px and a receptive field that lets a unit
    on a digit near the middle see a border. With 5 blocks it is 33 px at 96-100 px and 63 px at 224 px:
    the half head stayed at 0.86-0.92 on black and noisy 96-100 px canvases (12 epochs; 0.89 in 24) and at
    0.73-0.84 at 224 px. From 96 px 7 blocks, 3 of them downsampling (65 px field, last map 12-13 px;
    black 96 px: digit 0.99, half 1.00); at 224 px 7 blocks, 5 downsampling (191 px field, last map 7 px;
    black: digit 0.97, half 1.00)."""
    if size >= 224:
        return 7, (0, 1, 2, 3, 4)
    if size >= 96:
        return 7, (1, 2, 3)
    return 5, {32: (1,), 64: (1, 2)}.get(size, tuple(range(max(0, int(math.log2(size / 16))))))


def build(arch: str, size: int, seed: int = 0) -> tuple[nn.Module, int]:
    """(model, input channels)."""
    torch.manual_seed(seed)
    if arch == "smallcnn":
        depth, strides = smallcnn_layout(size)
        return SmallCNN(1, (10, 2), width=24, depth=depth, strides=strides), 1
    if arch == "resnet18":
        import torchvision

        m = torchvision.models.resnet18(num_classes=10)
        m.fc = TwoHeads(512)
        return m, 3
    if arch == "mobilenet":
        return TimmTwoHeads("mobilenetv3_small_050"), 3
    raise ValueError(arch)


TRAIN = {  # epochs, lr, batch, copies of each training digit
    "smallcnn": (4, 1e-2, 64, 2),
    "resnet18": (3, 2e-3, 64, 2),
    "mobilenet": (4, 5e-3, 64, 2),
}
#: where the budget above leaves a head untrained (digit < 0.70 or half < 0.90 on the test canvases):
#: mobilenetv3_small_050 below 224 px (0.11-0.61 in 4 epochs; 24 epochs at 1e-2 reach 0.82 on noisy
#: 64 px canvases); at 32 px (a 1x1 last map of an 11 px digit) it overfits: 0.12-0.37 in 24 epochs at
#: 1e-2, 0.60 in 96 at 3e-3 (batch 32), 0.86 in 48 at 3e-3 with each digit at 4 places (black);
#: resnet18 below 96 px (noisy 32 px 0.34, white 32 px 0.63, noisy 64 px 0.46 in 3 epochs; 9 epochs:
#: 0.83, 0.92, 0.93); SmallCNN from 96 px (0.71-0.86 / 0.75-0.92 in 4 epochs; black 100 px in 12
#: epochs: 0.98 / 0.92). First match wins.
LONGER = (  # (arch, sizes from, sizes below, budget)
    ("mobilenet", 0, 64, (48, 3e-3, 32, 4)),
    ("mobilenet", 0, 224, (24, 1e-2, 64, 2)),
    ("resnet18", 0, 96, (9, 2e-3, 64, 2)),
    ("smallcnn", 96, 10_000, (12, 1e-2, 64, 2)),
)


def budget(arch: str, size: int) -> tuple[int, float, int, int]:
    """Training epochs, peak learning rate, batch and copies of each training digit of a digits cell."""
    return next((b for a, low, high, b in LONGER if a == arch and low <= size < high), TRAIN[arch])


def _chans(x: torch.Tensor, c: int) -> torch.Tensor:
    return x if x.shape[1] == c else x.expand(-1, c, -1, -1).contiguous()


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chans: int, epochs: int, lr: float, batch: int,
          seed: int = 0) -> nn.Module:
    """AdamW, one-cycle; batches drawn on the CPU and moved to the model's device."""
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=5e-4)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.25)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            xb, yb = x[idx].to(device_dtype(model)[0]), y[idx].to(device_dtype(model)[0])
            digit, half = model(_chans(xb, chans))
            loss = F.cross_entropy(digit, yb[:, 0]) + F.cross_entropy(half, yb[:, 1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


# ------------------------------------------------------------------------------------------------- silencing
class Silencer:
    """Forward hooks zeroing channels at the output of the BatchNorm each conv feeds (the conv's own output
    where it feeds none); removed on exit."""

    def __init__(self, model: nn.Module, pairs: dict[str, str], channels: list[tuple[str, int]]) -> None:
        self.handles = []
        per_module: dict[str, list[int]] = {}
        for layer, ch in channels:
            per_module.setdefault(pairs.get(layer, layer), []).append(ch)
        for name, chs in per_module.items():
            idx = torch.tensor(sorted(set(chs)))

            def hook(module, inputs, output, idx=idx):
                output = output.clone()
                output[:, idx.to(output.device)] = 0
                return output
            self.handles.append(model.get_submodule(name).register_forward_hook(hook))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chans: int, batch: int = 200) -> np.ndarray:
    """(digit accuracy, half accuracy, digit information, half information): a head's information is
    ``log K - mean NLL`` of its K classes, in nats per image above chance (what silencing can lower
    even where the accuracy does not move: a half head right with less confidence)."""
    model.eval()
    out = np.zeros(4)
    for i in range(0, len(x), batch):
        heads = model(_chans(x[i:i + batch].to(device_dtype(model)[0]), chans))
        for h, (logits, target) in enumerate(zip(heads, y[i:i + batch].to(device_dtype(model)[0]).T)):
            out[h] += (logits.argmax(1) == target).sum().item()
            out[2 + h] += math.log(logits.shape[1]) * len(target) - F.cross_entropy(logits, target, reduction="sum").item()
    return out / len(x)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chans: int) -> np.ndarray:
    """(digit accuracy, half accuracy)."""
    return evaluate(model, x, y, chans)[:2]


def drops(model, pairs, channels, x, y, chans, base) -> np.ndarray:
    """``base`` minus :func:`evaluate` with ``channels`` silenced: accuracy drops (digit, half), then
    information drops (nats per image)."""
    with Silencer(model, pairs, channels):
        return base - evaluate(model, x, y, chans)


def info_selectivity(d: np.ndarray, base: np.ndarray) -> float:
    """Half minus digit information drop, each as a share of the head's information before silencing."""
    return float(d[3] / max(base[3], 1e-6) - d[2] / max(base[2], 1e-6))


def _per_layer(channels: list[tuple[str, int]]) -> dict[str, int]:
    """How many of ``channels`` each layer holds, in first-seen order."""
    counts: dict[str, int] = {}
    for layer, _ in channels:
        counts[layer] = counts.get(layer, 0) + 1
    return counts


def random_drops(model, pairs, channels, x, y, chans, base, draws=RANDOM_DRAWS, seed=1) -> tuple[np.ndarray, bool]:
    """Mean drop over ``draws`` sets of as many random channels of the same layers (unflagged ones where the
    layer has enough; ``overlap`` True when some layer had to draw among flagged ones too)."""
    gen = torch.Generator().manual_seed(seed)
    per_layer = _per_layer(channels)
    taken = set(channels)
    overlap = False
    out = []
    for _ in range(draws):
        pick = []
        for layer, k in per_layer.items():
            n = model.get_submodule(layer).out_channels
            free = [c for c in range(n) if (layer, c) not in taken]
            if len(free) < k:
                free, overlap = list(range(n)), True
            pick += [(layer, free[int(i)]) for i in torch.randperm(len(free), generator=gen)[:k]]
        out.append(drops(model, pairs, pick, x, y, chans, base))
    return np.mean(out, axis=0), overlap


def selectivity(d: np.ndarray) -> float:
    return float(d[1] - d[0])


# ------------------------------------------------------------------------------------------------- cells
def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(fn, *a, **k):
    _sync()
    t = time.perf_counter()
    r = fn(*a, **k)
    _sync()
    return r, time.perf_counter() - t


@torch.no_grad()
def _forward_time(model, x, repeats=3) -> float:
    x = x.to(device_dtype(model)[0])
    model(x)
    best = math.inf
    for _ in range(repeats):
        _sync()
        t = time.perf_counter()
        model(x)
        _sync()
        best = min(best, time.perf_counter() - t)
    return best


def _pans(report) -> list[tuple[str, int]]:
    return [(p.layer, p.channel) for p in report.pans]


def _kinds(report) -> dict[str, int]:
    k: dict[str, int] = {}
    for p in report.pans:
        k[p.kind] = k.get(p.kind, 0) + 1
    return k


def _dep(report) -> dict | None:
    d = report.padding_dependence
    if d is None:
        return None
    half = d.get("outputs", [d])[-1]  # the two-head nets: (digit, half)
    return {"output_shift": half["output_shift"], "flip_rate": half["flip_rate"],
            "model": {"output_shift": d["output_shift"], "flip_rate": d["flip_rate"]}}


def _layer_counts(report) -> dict[str, int]:
    return {layer: len(p) for layer, p in report.by_layer().items()}


@dataclasses.dataclass
class TrainedCell:
    """A digits cell's data, its network trained on ``device`` (same seed: same network on the same CPU),
    the test results before silencing (``base``, :func:`evaluate`), the 16 scan images (``sample``) and
    the conv -> BatchNorm pairs."""
    model: nn.Module
    chans: int
    xtr: torch.Tensor
    xte: torch.Tensor
    yte: torch.Tensor
    free_conv: dict
    epochs: int
    t_train: float
    base: np.ndarray
    sample: torch.Tensor
    pairs: dict[str, str]


def trained_cell(arch: str, convention: str, size: int, seed: int = 0, device: str = "cpu",
                 cache: Path | None = None) -> TrainedCell:
    """:class:`TrainedCell` of ``arch`` on ``convention`` canvases of ``size`` px; with ``cache`` (a
    folder) its weights are loaded from ``<arch>_<convention>_<size>[_seed<s>].pt`` there when present
    (``t_train`` 0), else trained and saved there."""
    epochs, lr, batch, copies = budget(arch, size)
    xtr, ytr, xte, yte, free_conv = dataset(size, convention, copies, seed)
    model, chans = build(arch, size, seed)
    model.to(device)
    path = None if cache is None else cache / f"{arch}_{convention}_{size}{'' if seed == 0 else f'_seed{seed}'}.pt"
    if path is not None and path.exists():
        model.load_state_dict(torch.load(path, map_location=device))
        t_train = 0.0
    else:
        _, t_train = _timed(train, model, xtr, ytr, chans, epochs, lr, batch, seed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), path)
    sample = _chans(xtr[:SAMPLE], chans)
    return TrainedCell(model, chans, xtr, xte, yte, free_conv, epochs, t_train, evaluate(model, xte, yte, chans),
                       sample, conv_bn_pairs(model, tuple(sample.shape[1:])))


def measure_digits_cell(arch: str, convention: str, size: int, log=print, seed: int = 0,
                        single_channel: bool = False, free_selectivity: bool = True, device: str = "cpu",
                        position_threshold: float | None = None, compare: tuple[float, ...] = ()) -> dict:
    """One digits cell's row. The data stays on the CPU (the scans get CPU images, as the callbacks'
    calibration sample is); the model trains and is scanned on ``device``. ``position_threshold``:
    the data scans' (default: ``find_pans``'); ``compare``: other position thresholds whose data
    scan's flags are silenced too on the same network (``row["at"]["0.6"]``: :func:`set_figures`)."""
    t0 = time.perf_counter()
    c = trained_cell(arch, convention, size, seed, device)
    model, chans, xtr, xte, yte, free_conv = c.model, c.chans, c.xtr, c.xte, c.yte, c.free_conv
    epochs, t_train, base, sample, pairs = c.epochs, c.t_train, c.base, c.sample, c.pairs
    input_size = tuple(sample.shape[1:])
    row = dict(arch=arch, convention=convention, size=size, seed=seed, threads=torch.get_num_threads(),
               cpu=cpu_name(), **_device_field(device), train_images=len(xtr), test_images=len(xte),
               epochs=epochs, train_s=round(t_train, 1), acc_digit=round(base[0], 4), acc_half=round(base[1], 4),
               info_digit=round(base[2], 4), info_half=round(base[3], 4))
    report, t_scan = _timed(find_pans, model, data=sample, position_threshold=position_threshold)
    n = report.total_filters
    row.update(position_threshold=report.position_threshold, filters=n, pans=report.count, frac=round(report.fraction, 4), kinds=_kinds(report),
               layers=_layer_counts(report), dep=_dep(report), scan_s=round(t_scan, 3),
               unmeasured=sorted(report.unmeasured), assumptions=report.assumptions)
    roll = torch.cat([sample] * (1 + 2 * 8 * 8 // SAMPLE))[:SAMPLE + 2 * 8 * 8]
    row["fwd16_s"] = round(_forward_time(model, sample), 4)
    row["fwd_scanbatch_s"] = round(_forward_time(model, roll), 4)
    # data-free scan in the convention
    free, t_free = _timed(find_pans, model, input_size, dependence=False, **free_conv)
    row.update(free_pans=free.count, free_frac=round(free.fraction, 4), free_kinds=_kinds(free),
               free_s=round(t_free, 3), free_assumptions=free.assumptions)
    # circular twin
    twin = structural_copy(model, share=False)
    convert_padding(twin, "circular")
    row["twin_pans"] = find_pans(twin, data=sample, dependence=False, position_threshold=position_threshold).count
    row["twin_free_pans"] = find_pans(twin, input_size, dependence=False, **free_conv).count
    del twin
    # replicate-switched accuracy
    rep = structural_copy(model, share=False)
    convert_padding(rep, "replicate")
    acc_rep = accuracy(rep, xte, yte, chans)
    row.update(rep_acc_digit=round(acc_rep[0], 4), rep_acc_half=round(acc_rep[1], 4))
    del rep
    # causal selectivity
    for key, rep_ in (("", report), ("free_", free))[:2 if free_selectivity else 1]:
        chs = _pans(rep_)
        if not chs:
            row[key + "sel"] = None
            continue
        d = drops(model, pairs, chs, xte, yte, chans, base)
        r, overlap = random_drops(model, pairs, chs, xte, yte, chans, base)
        row[key + "drop_flagged"] = [round(v, 4) for v in d[:2]]
        row[key + "drop_random"] = [round(v, 4) for v in r[:2]]
        row[key + "info_drop_flagged"] = [round(v / max(b, 1e-6), 4) for v, b in zip(d[2:], base[2:])]
        row[key + "info_drop_random"] = [round(v / max(b, 1e-6), 4) for v, b in zip(r[2:], base[2:])]
        row[key + "info_margin"] = round(info_selectivity(d, base) - info_selectivity(r, base), 4)
        row[key + "random_overlap"] = overlap
        row[key + "sel"] = round(selectivity(d), 4)
        row[key + "sel_random"] = round(selectivity(r), 4)
        row[key + "margin"] = round(selectivity(d) - selectivity(r), 4)
    chs = _pans(report)
    others = {t: _pans(find_pans(model, data=sample, dependence=False, position_threshold=t)) for t in compare}
    half_eta = (_half_eta2(model, pairs, report, xte, yte, chans)
                if chs or single_channel or any(others.values()) else None)
    if chs:  # what the flagged channels carry, where silencing them may have no power
        row.update(carried_position(half_eta, report, chs))
    if compare:
        row["at"] = {str(t): set_figures(c, report, pick, half_eta) if pick else
                     {"channels": 0, "frac": 0.0} for t, pick in others.items()}
    if single_channel:
        row["single_channel"] = single_channel_analysis(model, pairs, report, xte, yte, chans, base, free, half_eta)
    row["targets"] = targets(row)
    row["cell_s"] = round(time.perf_counter() - t0, 1)
    return row


def targets(row: dict) -> dict:
    t = {"twin0": row.get("twin_pans") == 0}
    if "acc_half" in row:
        t["trained"] = row["acc_digit"] > 0.70 and row["acc_half"] > 0.90
        t["margin"] = None if row.get("sel") is None else row["margin"] >= MARGIN_TARGET
        t["frac"] = row["frac"] <= FRACTION_TARGET or bool(t["margin"])
    else:
        t["frac"] = row["frac"] <= FRACTION_TARGET
    return t


def _rank(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(len(v))
    # average ties
    for val in np.unique(v):
        m = v == val
        if m.sum() > 1:
            r[m] = r[m].mean()
    return r


def _corr(a, b) -> dict:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return {"pearson": None, "spearman": None}
    return {"pearson": round(float(np.corrcoef(a, b)[0, 1]), 3),
            "spearman": round(float(np.corrcoef(_rank(a), _rank(b))[0, 1]), 3)}


def single_channel_analysis(model, pairs, report, x, y, chans, base, free, half_eta: np.ndarray) -> dict:
    """Each channel silenced alone: its (digit drop, half drop); correlation of its selectivity and half drop
    with its border, position and dependence-share scores (and with ``half_eta``, :func:`_half_eta2`);
    the flagged vs the most selective channels."""
    names, border, position, share, sel, half, flagged, free_flag = [], [], [], [], [], [], [], []
    pan_set, free_set = set(_pans(report)), set(_pans(free))
    for layer, s in report.scores.items():
        for ch in range(len(s["position"])):
            d = drops(model, pairs, [(layer, ch)], x, y, chans, base)
            names.append(f"{layer}:{ch}")
            border.append(s["border"][ch])
            position.append(s["position"][ch])
            share.append(s.get("share", [0.0] * len(s["position"]))[ch])
            sel.append(selectivity(d))
            half.append(float(d[1]))
            flagged.append((layer, ch) in pan_set)
            free_flag.append((layer, ch) in free_set)
    sel_a, flag_a = np.array(sel), np.array(flagged)
    top = np.argsort(-sel_a)[:max(1, int(flag_a.sum()) or 10)]
    return {
        "channels": len(sel),
        "corr_sel": {"border": _corr(sel, border), "position": _corr(sel, position), "share": _corr(sel, share)},
        "corr_half_drop": {"border": _corr(half, border), "position": _corr(half, position),
                           "share": _corr(half, share)},
        "corr_half_eta2": {"position": _corr(half_eta, position), "border": _corr(half_eta, border),
                           "selectivity": _corr(half_eta, sel)},
        "half_eta2_top_selective": [round(float(half_eta[i]), 4) for i in top[:10]],
        "sel_flagged_mean": None if not flag_a.any() else round(float(sel_a[flag_a].mean()), 4),
        "sel_unflagged_mean": None if flag_a.all() else round(float(sel_a[~flag_a].mean()), 4),
        "sel_free_flagged_mean": None if not any(free_flag) else round(float(sel_a[np.array(free_flag)].mean()), 4),
        "top_selective": [dict(ch=names[i], sel=round(sel[i], 4), half_drop=round(half[i], 4), border=border[i],
                               position=position[i], share=share[i], flagged=flagged[i]) for i in top[:10]],
        "per_channel": [[names[i], round(sel[i], 4), round(half[i], 4), border[i], position[i], share[i],
                         int(flagged[i]), round(float(half_eta[i]), 4)] for i in range(len(sel))],
    }


def _layer_starts(report) -> dict[str, int]:
    """Each layer's first index in the per-channel vectors over ``report.scores`` (network order)."""
    starts, offset = {}, 0
    for layer, s in report.scores.items():
        starts[layer] = offset
        offset += len(s["position"])
    return starts


def carried_position(half_eta: np.ndarray, report, channels: list[tuple[str, int]]) -> dict:
    """Mean half-label eta^2 (:func:`_half_eta2`) of the flagged channels, and its expectation for as
    many random unflagged channels of the same layers (each flagged channel's layer-mates' mean):
    how much more position the flagged channels carry than their layers' other channels. Unlike
    silencing, it tells where a network's position is redundant (the head survives either set)."""
    start = _layer_starts(report)
    flagged = set(channels)
    own, mates = [], []
    for layer, ch in channels:
        n = len(report.scores[layer]["position"])
        rest = [half_eta[start[layer] + c] for c in range(n) if (layer, c) not in flagged]
        own.append(half_eta[start[layer] + ch])
        mates.append(np.mean(rest) if rest else np.nan)
    flagged_mean, layer_mean = float(np.mean(own)), float(np.nanmean(mates))
    return {"eta_flagged": round(flagged_mean, 4), "eta_layer": round(layer_mean, 4),
            "eta_margin": round(flagged_mean - layer_mean, 4)}


@torch.no_grad()
def _half_eta2(model, pairs, report, x, y, chans, batch: int = 200) -> np.ndarray:
    """Per channel (in ``report.scores`` order): the share of the variance of its globally pooled
    ``relu(bn(conv))`` response over the test images explained by the half label (real placements, no
    rolls): how much position it carries on its own."""
    names = list(report.scores)
    pooled: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = []
    for n in names:
        def hook(module, inputs, output, n=n):
            pooled[n].append(output.clamp_min(0).mean(dim=(2, 3)))
        handles.append(model.get_submodule(pairs.get(n, n)).register_forward_hook(hook))
    try:
        model.eval()
        for i in range(0, len(x), batch):
            model(_chans(x[i:i + batch].to(device_dtype(model)[0]), chans))
    finally:
        for h in handles:
            h.remove()
    r = torch.cat([torch.cat(pooled[n]) for n in names], dim=1).double().cpu()  # (N, channels)
    half = y[:, 1].bool()
    total = ((r - r.mean(0)) ** 2).sum(0)
    between = sum(m.sum() * (r[m].mean(0) - r.mean(0)) ** 2 for m in (half, ~half))
    return (between / total.clamp_min(1e-12)).numpy()


#: an oracle set is ``scale`` times as many channels per layer as the data scan flags there
ORACLE_SCALES = (1, 4)
#: lower data position thresholds than the oracle scan's (find_pans' default on data) whose flags the
#: oracle silences too: what re-tuning the threshold would give on the same network, fraction of
#: filters included
SWEEP_THRESHOLDS = (0.45, 0.3)
#: the oracle's silenced sets (keys of a row's ``oracle``), in table order, with their names in prose
ORACLE_SETS = {"flagged": "the flagged set", **{str(s): f"the oracle x{s}" for s in ORACLE_SCALES},
               "ranked4": "the detector x4", **{f"t{t}": f"the detector at {t}" for t in SWEEP_THRESHOLDS}}


def oracle_channels(half_eta: np.ndarray, report, channels: list[tuple[str, int]], scale: int) -> list[tuple[str, int]]:
    """Per layer holding flagged ``channels``: ``scale`` times as many of its channels (at most all of
    them), those of the highest half-label eta^2 (:func:`_half_eta2`, read off the test images and
    labels): the set a detector would flag that knew which channels carry position. (Given the
    detector's own position scores instead: the set a lower threshold would flag, about.)"""
    start = _layer_starts(report)
    pick = []
    for layer, k in _per_layer(channels).items():
        n = len(report.scores[layer]["position"])
        eta = half_eta[start[layer]:start[layer] + n]
        pick += [(layer, int(c)) for c in np.argsort(-eta, kind="stable")[:min(n, scale * k)]]
    return pick


def set_figures(c: "TrainedCell", report, pick: list[tuple[str, int]], half_eta: np.ndarray) -> dict:
    """Silencing figures of the channel set ``pick`` of the trained cell ``c`` against as many random
    channels of the same layers, and what it carries (:func:`carried_position`)."""
    d = drops(c.model, c.pairs, pick, c.xte, c.yte, c.chans, c.base)
    r, _ = random_drops(c.model, c.pairs, pick, c.xte, c.yte, c.chans, c.base)
    return dict(channels=len(pick), frac=round(len(pick) / report.total_filters, 4),
                drop=[round(v, 4) for v in d[:2]], drop_random=[round(v, 4) for v in r[:2]],
                margin=round(selectivity(d) - selectivity(r), 4),
                info_margin=round(info_selectivity(d, c.base) - info_selectivity(r, c.base), 4),
                **carried_position(half_eta, report, pick))


def measure_oracle_cell(arch: str, convention: str, size: int, seed: int = 0, device: str = "cpu") -> dict:
    """Can any channel set meet the margin target where the flagged set misses it? Trains the cell's
    network again (same seed; the same network where it runs on the matrix row's CPU, as ``oracle_acc``
    and ``oracle_pans`` show), flags with the data scan, measures the flagged set's margin on it, and
    silences per layer ``scale`` times as many channels
    as flagged there, those that carry the most position on the test images (:func:`oracle_channels`),
    against as many random channels of the same layers. The oracle reads the test labels it is then
    scored on: an upper bound for what a detector flagging that many could reach. Without labels:
    4x as many ranked by the scan's position score (``ranked4``), and the scan's own flags at each
    lower position threshold of :data:`SWEEP_THRESHOLDS` (``t0.45``, ...: what re-tuning it gives)."""
    t0 = time.perf_counter()
    c = trained_cell(arch, convention, size, seed, device)
    model, chans, xte, yte, base, pairs = c.model, c.chans, c.xte, c.yte, c.base, c.pairs
    report = find_pans(model, data=c.sample, dependence=False)
    row = dict(arch=arch, convention=convention, size=size, oracle_seed=seed, oracle_threads=torch.get_num_threads(),
               oracle_cpu=cpu_name(), oracle_acc=[round(base[0], 4), round(base[1], 4)], oracle_pans=report.count,
               oracle_threshold=report.position_threshold)
    chs = _pans(report)
    if chs:
        half_eta = _half_eta2(model, pairs, report, xte, yte, chans)
        position = np.concatenate([np.asarray(v["position"]) for v in report.scores.values()])
        sets = {"flagged": chs, **{str(s): oracle_channels(half_eta, report, chs, s) for s in ORACLE_SCALES},
                "ranked4": oracle_channels(position, report, chs, 4),  # the detector's own scores, no labels
                **{f"t{t}": _pans(find_pans(model, data=c.sample, dependence=False, position_threshold=t))
                   for t in SWEEP_THRESHOLDS}}
        row["oracle"] = {key: set_figures(c, report, pick, half_eta) for key, pick in sets.items()}
    row["oracle_s"] = round(time.perf_counter() - t0, 1)
    return row


# ------------------------------------------------------------------------------------------------- Lite0
def photos(size: int, n: int = SAMPLE) -> torch.Tensor:
    """``n`` real photos (scikit-image's bundled colour images, whole and as crops), in [-1, 1]."""
    from skimage import data as skdata

    from pan_repair.models.pretrained import _square_resize

    raw = []
    for name in ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "cat"):
        try:
            im = getattr(skdata, name)()
        except Exception:  # noqa: BLE001 - not bundled in this version
            continue
        if im.ndim == 3 and im.shape[2] >= 3:
            raw.append(im[..., :3])
    out = []
    i = 0
    while len(out) < n:
        im = raw[i % len(raw)]
        k = i // len(raw)  # 0: whole, 1: top-left 2/3 crop, 2: bottom-right 2/3 crop
        h, w = im.shape[:2]
        if k == 1:
            im = im[: 2 * h // 3, : 2 * w // 3]
        elif k >= 2:
            im = im[h // 3:, w // 3:]
        out.append(_square_resize(im, size))
        i += 1
    return torch.stack(out)


def measure_lite0_cell(size: int, log=print, device: str = "cpu", position_threshold: float | None = None,
                       compare: tuple[float, ...] = ()) -> dict:
    from pan_repair.models.pretrained import load_efficientnet_lite0

    t0 = time.perf_counter()
    model = load_efficientnet_lite0().to(device)
    sample = photos(size)
    input_size = tuple(sample.shape[1:])
    report, t_scan = _timed(find_pans, model, data=sample, position_threshold=position_threshold)
    row = dict(arch="lite0", convention="photos [-1,1]", size=size, cpu=cpu_name(), **_device_field(device),
               position_threshold=report.position_threshold, filters=report.total_filters, pans=report.count,
               frac=round(report.fraction, 4), kinds=_kinds(report), layers=_layer_counts(report),
               dep=_dep(report), scan_s=round(t_scan, 3), unmeasured=sorted(report.unmeasured),
               assumptions=report.assumptions)
    roll = torch.cat([sample] * (1 + 2 * 8 * 8 // SAMPLE))[:SAMPLE + 2 * 8 * 8]
    row["fwd16_s"] = round(_forward_time(model, sample), 4)
    row["fwd_scanbatch_s"] = round(_forward_time(model, roll, repeats=1), 4)
    free, t_free = _timed(find_pans, model, input_size, dependence=False)
    row.update(free_pans=free.count, free_frac=round(free.fraction, 4), free_kinds=_kinds(free),
               free_s=round(t_free, 3), free_assumptions=free.assumptions)
    twin = structural_copy(model, share=False)
    convert_padding(twin, "circular")
    row["twin_pans"] = find_pans(twin, data=sample, dependence=False, position_threshold=position_threshold).count
    row["twin_free_pans"] = find_pans(twin, input_size, dependence=False).count
    if compare:
        row["at"] = {str(t): {"channels": (k := find_pans(model, data=sample, dependence=False,
                                                          position_threshold=t).count),
                              "frac": round(k / report.total_filters, 4)} for t in compare}
    row["targets"] = targets(row)
    row["cell_s"] = round(time.perf_counter() - t0, 1)
    return row


# ------------------------------------------------------------------------------------------------- table
def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    import os

    return (f"{cpu_name()}, {os.cpu_count()} cores (shared), torch {torch.__version__}, Python "
            f"{platform.python_version()}, {platform.platform()}")


def cpus_used(rows: list[dict]) -> str:
    """Which CPU measured which cells, where rows record it (``cpu``; earlier rows do not)."""
    named: dict[str, list[str]] = {}
    for r in rows:
        if r.get("cpu"):
            named.setdefault(r["cpu"], []).append(_key(r))
    if not named:
        return ""
    parts = [f"{cpu}: {len(cells)} cells ({', '.join(cells)})" for cpu, cells in sorted(named.items())]
    other = len(rows) - sum(map(len, named.values()))
    return ("; cells measured on a recorded CPU: " + "; ".join(parts) +
            (f"; the other {other} on the CPU of the earlier sessions" if other else ""))


def threads_used(rows: list[dict]) -> str:
    """The torch thread counts the cells ran with (rows without the field: 1, the default)."""
    counts: dict[int, list[str]] = {}
    for r in rows:
        counts.setdefault(r.get("threads", 1), []).append(_key(r))
    if len(counts) == 1:
        return f"{next(iter(counts))} torch thread(s)"
    parts = [f"{n} thread(s): {len(cells)} cells" + (f" ({', '.join(cells)})" if len(cells) <= 20 else "")
             for n, cells in sorted(counts.items())]
    return "torch threads per cell: " + "; ".join(parts)


def _f(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:+.{nd}f}" if nd == 3 else f"{v:.{nd}f}"
    return str(v)


def _ok(v) -> str:
    return "n/a" if v is None else ("yes" if v else "**NO**")


def table(rows: list[dict], header: str = "") -> str:
    lines = [header, ""] if header else []
    digits = [r for r in rows if r["arch"] != "lite0"]
    lite = [r for r in rows if r["arch"] == "lite0"]
    if digits:
        lines += [
            "### Two-head digits cells",
            "",
            "acc = test accuracy digit / half; PANs = data scan (16 training images) count / filters (fraction, "
            "kinds b=border p=position; (i): the scan under the interior rule, benchmarks/border_interior.py's of "
            "the same network, where the rule changed it, with its drops and margin; half eta2 and information, "
            "measured on the earlier flags, left out); free = data-free scan in the convention, its textures on a "
            "canvas at the mean pixel level the stem's BatchNorm implies (what find_pans does now: "
            "benchmarks/border_interior.py's or saturated_layers.py's scan of the same network; (pre): before the "
            "saturated-layer and interior rules, benchmarks/stem_canvas.py's scan or the row's own; (g): the earlier "
            "mid-grey probes); twin = circular twin's PANs "
            "(data / data-free; the data-free twin scanned with the probes of the row's own run: mid-grey in the cells "
            "of the earlier sessions); drop = accuracy drop digit / half when silenced (flagged; random same-layer mean "
            "of 5); sel = half drop - digit drop; margin = sel(flagged) - sel(random); dep = find_pans "
            "padding_dependence output_shift / flip_rate of the half head (the model's figure is the larger head's); rep acc = replicate-switched "
            "test accuracy digit / half; scan = data-scan seconds, x = scan / plain forward of the 16 images, "
            "/ forward of a scan-sized batch (144 images); half eta2 = share of a channel's pooled response "
            "variance over the test images explained by the half label, mean of the flagged channels / of "
            "their layers' unflagged channels (what they carry, where silencing has no power; - : not "
            "measured in that run); info margin = the margin on information instead of accuracy (a head's "
            "information: log K - NLL, nats above chance; drop as a share of it), which moves where a head stays "
            "right with less confidence (- : not measured in that run).",
            "",
            "| arch | conv. | size | acc | PANs (data) | free | twin | drop flagged | drop random | sel | margin "
            "| info margin | half eta2 flagged / layer | free margin | dep shift / flip | rep acc | scan s (x16, x144) "
            "| targets: twin0 / margin / frac / trained |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in digits:
            kinds, fkinds = _kind_counts(r.get("kinds")), _kind_counts(r.get("free_kinds"))
            dep = r.get("dep") or {}
            t = r["targets"]
            lines.append(
                f"| {r['arch']} | {r['convention']} | {r['size']} | {r['acc_digit']:.2f} / {r['acc_half']:.2f} "
                f"| {r['pans']}/{r['filters']} ({r['frac']:.1%}, {kinds}){' (i)' if r.get('interior') else ''} "
                f"| {r['free_pans']} ({r['free_frac']:.1%}, "
                f"{fkinds}){_free_mark(r)} | {r['twin_pans']} / {r['twin_free_pans']} "
                f"| {_pair(r.get('drop_flagged'))} | {_pair(r.get('drop_random'))}{' (ovl)' if r.get('random_overlap') else ''} "
                f"| {_f(r.get('sel'), 3)} | {_f(r.get('margin'), 3)} | {_f(r.get('info_margin'), 3)} "
                f"| {_f(r.get('eta_flagged'), 3)} / {_f(r.get('eta_layer'), 3)} | {_f(r.get('free_margin'), 3)} "
                f"| {_f(dep.get('output_shift'), 3)} / {_f(dep.get('flip_rate'), 3)} "
                f"| {r['rep_acc_digit']:.2f} / {r['rep_acc_half']:.2f} "
                f"| {r['scan_s']:.2f} ({r['scan_s'] / r['fwd16_s']:.0f}x, {r['scan_s'] / r['fwd_scanbatch_s']:.1f}x) "
                f"| {_ok(t['twin0'])} / {_ok(t['margin'])} / {_ok(t['frac'])} / {_ok(t['trained'])} |")
        lines.append("")
    if lite:
        lines += [
            "### Pretrained Lite0 on real photos (no heads: no selectivity)",
            "",
            "| size | PANs (data) | free (pretrained_cfg) | twin (data / free) | dep shift / flip | scan s (x16, x144) "
            "| unmeasured layers | targets: twin0 / frac |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in lite:
            kinds = _kind_counts(r.get("kinds"))
            dep = r.get("dep") or {}
            lines.append(
                f"| {r['size']} | {r['pans']}/{r['filters']} ({r['frac']:.1%}, {kinds})"
                f"{' (i)' if r.get('interior') else ''} "
                f"| {r['free_pans']} "
                f"({r['free_frac']:.1%}){_free_mark(r)} | {r['twin_pans']} / {r['twin_free_pans']} "
                f"| {_f(dep.get('output_shift'), 3)} / {_f(dep.get('flip_rate'), 3)} "
                f"| {r['scan_s']:.2f} ({r['scan_s'] / r['fwd16_s']:.0f}x, {r['scan_s'] / r['fwd_scanbatch_s']:.1f}x) "
                f"| {len(r['unmeasured']) + r.get('interior_named', 0)} "
                f"| {_ok(r['targets']['twin0'])} / {_ok(r['targets']['frac'])} |")
        lines.append("")
    singles = [r for r in rows if r.get("single_channel")]
    for r in singles:
        s = r["single_channel"]
        lines += [
            f"### Single-channel selectivity: {r['arch']} {r['convention']} {r['size']} px ({s['channels']} channels, "
            "each silenced alone)",
            "",
            "| correlation with | border score | position score | dependence share |",
            "|---|---|---|---|",
        ]
        for key, label in (("corr_sel", "selectivity (Pearson / Spearman)"), ("corr_half_drop", "half-head drop")):
            c = s[key]
            lines.append(f"| {label} | " + " | ".join(
                f"{_f(c[m]['pearson'], 3)} / {_f(c[m]['spearman'], 3)}" for m in ("border", "position", "share")) + " |")
        if "corr_half_eta2" in s:
            c = s["corr_half_eta2"]
            lines.append("| half-label eta2 on real placements | " + " | ".join(
                f"{_f(c[m]['pearson'], 3)} / {_f(c[m]['spearman'], 3)}" for m in ("border", "position")) +
                f" | (with selectivity: {_f(c['selectivity']['pearson'], 3)} / {_f(c['selectivity']['spearman'], 3)}) |")
        lines += ["", f"mean single-channel selectivity: flagged {_f(s['sel_flagged_mean'], 3)}, unflagged "
                      f"{_f(s['sel_unflagged_mean'], 3)}, flagged by the data-free scan {_f(s['sel_free_flagged_mean'], 3)}",
                  "", "most selective channels:", "",
                  "| channel | sel | half drop | border | position | share | flagged | half eta2 (real) |",
                  "|---|---|---|---|---|---|---|---|"]
        etas = s.get("half_eta2_top_selective") or [None] * len(s["top_selective"])
        for c, e in zip(s["top_selective"], etas):
            lines.append(f"| {c['ch']} | {c['sel']:+.3f} | {c['half_drop']:+.3f} | {c['border']:.2f} | "
                         f"{c['position']:.2f} | {c['share']:.3f} | {c['flagged']} | {_f(e, 3)} |")
        lines.append("")
    return "\n".join(lines)


def _plain(v):
    """numpy scalars in the rows, as plain JSON values."""
    return v.item() if hasattr(v, "item") else str(v)


def _kind_counts(kinds: dict | None) -> str:
    """``{"border": 3, "position": 1}`` -> ``"3b/1p"``."""
    return "/".join(f"{(kinds or {}).get(t, 0)}{t[0]}" for t in ("border", "position"))


def _pair(v) -> str:
    return "-" if not v else f"{v[0]:.2f} / {v[1]:.2f}"


def default_cells() -> list[str]:
    """The whole matrix (65 cells; about 4 h on one core, a third of it resnet18 at 224 px), cheapest
    and most needed first (a partial run is usable): SmallCNN at 32 and 64 px, resnet18 and
    mobilenet at 64 px, then the other sizes."""
    cells = [f"smallcnn:{c}:{s}" for s in (32, 64) for c in CONVENTIONS]
    cells += [f"{a}:{c}:64" for a in ("resnet18", "mobilenet") for c in CONVENTIONS]
    cells += [f"smallcnn:{c}:{s}" for s in (96, 100) for c in CONVENTIONS]
    cells += [f"lite0:photos:{s}" for s in (32, 64, 96, 100, 224)]
    cells += [f"smallcnn:{c}:224" for c in CONVENTIONS]
    cells += [f"{a}:{c}:{s}" for s in (32, 96, 100) for a in ("resnet18", "mobilenet") for c in CONVENTIONS]
    cells += [f"mobilenet:{c}:224" for c in CONVENTIONS] + [f"resnet18:{c}:224" for c in CONVENTIONS]
    return cells


def _device_field(device: str) -> dict:
    """``{"device": <GPU name>}`` for a CUDA cell; nothing for the CPU (rows without it ran on the CPU)."""
    return {"device": torch.cuda.get_device_name(torch.device(device))} if str(device).startswith("cuda") else {}


def run_cell(cell: str, single: set[str], log=print, seed: int = 0, device: str = "cpu",
             position_threshold: float | None = None, compare: tuple[float, ...] = ()) -> dict:
    arch, conv, size = cell.split(":")
    if arch == "lite0":
        return measure_lite0_cell(int(size), log, device, position_threshold, compare)
    return measure_digits_cell(arch, conv, int(size), log, seed=seed, single_channel=cell in single, device=device,
                               position_threshold=position_threshold, compare=compare)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", nargs="+", default=None, help="arch:convention:size (default: the whole matrix)")
    p.add_argument("--single-channel", nargs="*", default=["smallcnn:black:32", "smallcnn:norm:32"],
                   help="cells that also get the single-channel selectivity analysis")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="seed of the digits cells' data, initialisation and training")
    p.add_argument("--device", default="cpu", help="where the models train and are scanned (cpu, cuda)")
    p.add_argument("--position-threshold", type=float, default=None,
                   help="the data scans' position threshold (default: find_pans' on data)")
    p.add_argument("--compare", type=float, nargs="*", default=[],
                   help="other position thresholds whose flags are silenced on the same networks (row['at'])")
    p.add_argument("--oracle", action="store_true",
                   help="measure only what the most position-carrying channels' silencing reaches "
                        "(measure_oracle_cell; digits cells; rows appended to "
                        "benchmarks/results/detector_validity_oracle.jsonl unless --jsonl)")
    p.add_argument("--jsonl", default="benchmarks/results/detector_validity.jsonl")
    p.add_argument("--out", default="benchmarks/results/detector_validity.md")
    p.add_argument("--from-jsonl", action="store_true", help="only tabulate the JSON-lines file")
    p.add_argument("--extra-jsonl", nargs="*", default=[],
                   help="more rows to tabulate (a row's fields replace those of the main file's row of the "
                        "same cell)")
    p.add_argument("--at", type=float, default=None,
                   help="tabulate every cell as flagged at this position threshold (at_threshold: its "
                        "own scan or its --compare figures); a cell not measured there is an error")
    p.add_argument("--free-from", nargs="*", default=[],
                   help="rows of benchmarks/stem_canvas.py, saturated_layers.py or border_interior.py whose "
                        "data-free scan replaces the free columns of the same networks (a later file's wins)")
    p.add_argument("--data-from", default=None,
                   help="benchmarks/border_interior.py rows whose data scan under the interior rule replaces the "
                        "data columns of the same networks where the rule changed it")
    p.add_argument("--notes", default="benchmarks/results/detector_validity_notes.md",
                   help="appended to the results when it exists")
    a = p.parse_args(argv)
    if a.oracle and a.jsonl == p.get_default("jsonl"):
        a.jsonl = "benchmarks/results/detector_validity_oracle.jsonl"
    torch.set_num_threads(a.threads)
    header = "## Detector validity matrix (benchmarks/detector_validity.py)\n\nMachine: " + machine()
    if not a.from_jsonl:
        done = set()
        if Path(a.jsonl).exists():
            done = {f"{r['arch']}:{r['convention'] if r['arch'] != 'lite0' else 'photos'}:{r['size']}"
                    for r in map(json.loads, Path(a.jsonl).read_text().splitlines())}
        for cell in a.cells or default_cells():
            if cell in done:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {cell}", file=sys.stderr, flush=True)
            if a.oracle:
                arch, conv, size = cell.split(":")
                if arch == "lite0":
                    p.error(f"--oracle needs a digits cell (two heads), not {cell}")
                row = measure_oracle_cell(arch, conv, int(size), seed=a.seed, device=a.device)
            else:
                row = run_cell(cell, set(a.single_channel), seed=a.seed, device=a.device,
                               position_threshold=a.position_threshold, compare=tuple(a.compare))
            with open(a.jsonl, "a") as f:
                f.write(json.dumps(row, default=_plain) + "\n")
            print(json.dumps({k: v for k, v in row.items() if k not in ("single_channel", "assumptions", "layers")},
                             default=_plain),
                  file=sys.stderr, flush=True)
            if not a.oracle:  # the oracle's rows join the published table's (--extra-jsonl)
                rows = [json.loads(line) for line in Path(a.jsonl).read_text().splitlines()]
                Path(a.out).write_text(table(rows, f"{header}; {threads_used(rows)}") + "\n")
    if a.oracle:
        return
    rows: dict[str, dict] = {}
    for f in [a.jsonl, *a.extra_jsonl]:  # a later file's row updates the cell's (same seed, same training)
        for r in map(json.loads, Path(f).read_text().splitlines()):
            rows[_key(r)] = {**rows.get(_key(r), {}), **r}
    order = {c: i for i, c in enumerate(default_cells())}  # the matrix's order, whichever worker wrote a row first
    rows = dict(sorted(rows.items(), key=lambda kv: order.get(kv[0], len(order))))
    if a.at is not None:
        promoted, errors = {}, []
        for k, r in rows.items():
            try:
                promoted[k] = at_threshold(r, a.at)
            except ValueError as e:
                errors.append(str(e))
        if errors:
            p.error(f"--at {a.at}: {len(errors)} cells cannot be tabulated there, e.g. {errors[0]}")
        rows = promoted
        header += f"; data scans tabulated at position threshold {a.at:g}"
    if a.free_from:
        overlay_free(rows, [json.loads(line) for f in a.free_from for line in Path(f).read_text().splitlines()])
    if a.data_from:
        overlay_data(rows, [json.loads(line) for line in Path(a.data_from).read_text().splitlines()])
    devices = sorted({r["device"] for r in rows.values() if r.get("device")})
    if devices:  # the machine above only tabulated them
        header = header.replace("Machine: ", f"Cells trained and scanned on {', '.join(devices)} (the rows' "
                                "device); tabulated on: ")
    cpus = cpus_used(list(rows.values()))
    if cpus:  # the machine above only tabulated some of them
        header = header.replace("Machine: ", "Tabulated on: ")
    text = table(list(rows.values()), f"{header}; {threads_used(list(rows.values()))}{cpus}") + "\n" + \
        summary(list(rows.values())) + oracle_section(list(rows.values()))
    if Path(a.notes).exists():
        text += "\n" + Path(a.notes).read_text()
    Path(a.out).write_text(text)
    print(text)


def _same_accuracies(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Test accuracies (digit, half) of two rows within half a test image (1/1600; the files round
    differently): the proof that a re-run trained the same network."""
    return max(abs(a[0] - b[0]), abs(a[1] - b[1])) < 1 / 1600


def _same_network(c: dict, r: dict) -> bool:
    """Whether results row ``c`` measured matrix row ``r``'s network: same cell, seed and threads and,
    for a digits cell, the same test accuracies (:func:`_same_accuracies`; Lite0 is pretrained)."""
    return ((_key(c), c.get("seed") or 0, c["threads"]) == (_key(r), r.get("seed") or 0, r.get("threads") or 1)
            and (r["arch"] == "lite0" or _same_accuracies((c["acc_digit"], c["acc_half"]),
                                                          (r["acc_digit"], r["acc_half"]))))


def _free_mark(r: dict) -> str:
    """The free column's marks: (g) mid-grey probes, (pre) before the saturated-layer and interior rules."""
    return (" (g)" if r.get("mid_grey") else "") + (" (pre)" if r.get("pre_rules") and not r.get("mid_grey") else "")


def free_scan(row: dict) -> tuple[dict, bool]:
    """The data-free scan a results row holds and whether it has every data-free rule of ``find_pans``
    now: ``benchmarks/border_interior.py``'s (``free`` after) and ``benchmarks/saturated_layers.py``'s
    (``after``, with ``saturated``) do; ``benchmarks/stem_canvas.py``'s (``after``) predate the
    saturated-layer and interior rules."""
    if "free" in row:
        return row["free"]["after"], True
    return row["after"], "saturated" in row


def overlay_free(rows: dict[str, dict], scan_rows: list[dict]) -> None:
    """Give each row the data-free scan of the same network from the per-cell benchmarks' rows
    (:func:`free_scan`; a later row replaces an earlier one): same cell, seed and threads and, for a
    digits cell, the same test accuracies (within half a test image, 1/1600: the files round
    differently), the proof that training reproduced it. A row whose data-free scan predates the
    saturated-layer and interior rules (its own, or a ``stem_canvas.py`` row's) is marked
    ``pre_rules``; one whose own scan probed a mid-grey canvas and got no later one, ``mid_grey``."""
    for r in rows.values():
        canvas = r["arch"] == "lite0" or any(CANVAS_NOTE in a for a in r.get("free_assumptions") or [])
        same = [c for c in scan_rows if _same_network(c, r)]
        after, current = free_scan(same[-1]) if same else (None, False)
        r.update(pre_rules=not current, mid_grey=not canvas and after is None)
        if current or (after is not None and not canvas):
            r.update(free_pans=sum(after["kinds"].values()), free_frac=after["frac"], free_kinds=after["kinds"],
                     free_margin=after.get("margin"))


def overlay_data(rows: dict[str, dict], interior_rows: list[dict]) -> None:
    """Give each row the data scan ``find_pans`` makes now where the interior rule (border scores need
    2 interior output positions per padded axis) changed it: from the ``benchmarks/border_interior.py``
    row of the same network (as :func:`overlay_free`; its scan without the rule must be the row's
    own: the same flag count and fraction), the flags, fraction, silencing drops and margin, and the
    targets again; figures measured on the old flags (half eta2, information) are dropped. Such rows
    are marked ``interior`` (``pans_before_interior``: the count before); ``interior_named`` counts
    the layers the rule leaves unmeasured (none of them among the row's own ``unmeasured``, which are
    outputs under 3x3)."""
    for r in rows.values():
        same = [c for c in interior_rows if "data" in c and _same_network(c, r)
                and (sum(c["data"]["before"]["kinds"].values()), c["data"]["before"]["frac"]) == (r["pans"], r["frac"])]
        if not same or same[-1]["data"]["after"] == same[-1]["data"]["before"]:
            continue
        after = same[-1]["data"]["after"]
        r.update(interior=True, interior_named=same[-1]["data"]["named"], pans_before_interior=r["pans"])
        _set_flags(r, sum(after["kinds"].values()), after["frac"], after["kinds"],
                   **({"drop": after["drop_flagged"], "drop_random": after["drop_random"], "margin": after["margin"]}
                      if "drop_flagged" in after else {}))


def oracle_section(rows: list[dict]) -> str:
    """The cells :func:`measure_oracle_cell` reran: the flagged set's margin beside what silencing as
    many (and 4x as many) of the most position-carrying channels of the same layers reaches, on the
    same network; where measured, 4x as many ranked by the detector's own position score and the
    detector's flags at lower position thresholds. Tallied apart for the cells whose matrix row
    misses the margin and those where it meets it."""
    measured = [r for r in rows if "oracle_acc" in r]
    if not measured:
        return ""
    flagged_at = " / ".join(f"{t:g}" for t in sorted({r.get("oracle_threshold", UNRECORDED_THRESHOLD)
                                                         for r in measured}))
    lines = ["### Could any set of that size meet the margin? (oracle)", "",
             "The cell's network trained again (same seed; *matrix's* = the matrix row's test accuracies within "
             "1/1600 and its PAN count, else another CPU's rounding trained another network) and scanned on its "
             "data; silenced: the flagged channels, and per layer as many (x1) and 4x as many (x4) channels as "
             "flagged there, those whose pooled response carries the most of the half label on the test images "
             "(half eta2; the oracle reads the labels it is scored on: an upper bound for a detector flagging "
             "that many), each against as many random channels of the same layers (mean of 5); detector x4: 4x "
             "as many ranked by the data scan's position score instead; detector at "
             + " / ".join(map(str, SWEEP_THRESHOLDS)) + ": the data scan's "
             f"own flags at that position threshold (the flagged set's: {flagged_at}), with their share of the filters "
             "(- : not measured in that run). Cells: channels, drop digit / half, random drop digit / half, "
             "margin.", "",
             "| cell | network | acc | flagged | oracle x1 | oracle x4 | detector x4 | "
             + " | ".join(f"detector at {t}" for t in SWEEP_THRESHOLDS)
             + " | +0.10 reached by: flagged / x1 / x4 / detector x4 / "
             + " / ".join(f"at {t}" for t in SWEEP_THRESHOLDS) + " |",
             "|---" * (8 + len(SWEEP_THRESHOLDS)) + "|"]
    for r in measured:
        pans = r.get("pans_before_interior", r.get("pans"))
        same = (r.get("acc_digit") is not None and r["oracle_pans"] == pans
                and _same_accuracies(r["oracle_acc"], (r["acc_digit"], r["acc_half"])))
        o = r.get("oracle")
        net = ("another" if not same else "matrix's, flags before (i)" if r.get("interior") else "matrix's")
        if not o:
            lines.append(f"| {_key(r)} | {net} | {_pair(r['oracle_acc'])} | nothing flagged |"
                         + " - |" * (3 + len(SWEEP_THRESHOLDS)) + " n/a |")
            continue
        cols, oks = [], []
        for k in ORACLE_SETS:
            v = o.get(k)
            share = "" if v is None or not k.startswith("t") else f" ({100 * v['frac']:.1f}%)"
            cols.append("-" if v is None else
                        f"{v['channels']}{share}, {_pair(v['drop'])}, {_pair(v['drop_random'])}, {v['margin']:+.3f}")
            oks.append("-" if v is None else _ok(v["margin"] >= MARGIN_TARGET))
        lines.append(f"| {_key(r)} | {net} | {_pair(r['oracle_acc'])} | {' | '.join(cols)} | {' / '.join(oks)} |")
    lines.append("")
    meets = [r for r in measured if r.get("margin") is not None and r["margin"] >= MARGIN_TARGET]
    misses = [r for r in measured if r not in meets]
    for group, label in ((misses, "where the matrix's flagged set misses the margin"),
                         (meets, "where it meets it")):
        if any(r.get("oracle") for r in group):
            lines += [f"{len(group)} cell{'s' * (len(group) != 1)} {label}: " + _oracle_tally(group), ""]
    return "\n" + "\n".join(lines)


def _oracle_tally(rows: list[dict]) -> str:
    """How many of ``rows``' oracle runs each silenced set meets the margin in, moves the half head
    in, and (threshold sets) flags over 10% of the filters without the margin."""
    names = ORACLE_SETS
    sets = {k: [r["oracle"][k] for r in rows if r.get("oracle") and k in r["oracle"]] for k in names}
    sets = {k: v for k, v in sets.items() if v}
    reached = ", ".join(f"{names[k]} in {sum(v['margin'] >= MARGIN_TARGET for v in vs)} of {len(vs)}"
                        for k, vs in sets.items())
    moved = ", ".join(f"{names[k]} in {sum(v['drop'][1] >= 0.02 for v in vs)}" for k, vs in sets.items())
    over = "".join(f" {names[k].capitalize()} flags over 10% of the filters without the margin in "
                   f"{sum(v.get('frac', 0.0) > FRACTION_TARGET and v['margin'] < MARGIN_TARGET for v in vs)}."
                   for k, vs in sets.items() if k.startswith("t"))
    return (f"margin >= +0.10 reached by {reached} networks with flags; the half head moved by 0.02 or more by "
            f"{moved} (a margin without that comes from the digit head).{over}")


#: The data scans' position threshold of the rows written before rows recorded it (find_pans' default then).
UNRECORDED_THRESHOLD = 0.6
#: A row's fields that belong to its data scan's flagged set (or to the scan alone): what
#: :func:`at_threshold` replaces or, where ``row["at"]`` does not hold them, drops.
_SCAN_SET_FIELDS = ("layers", "random_overlap", "info_drop_flagged", "info_drop_random", "at", "single_channel",
                    "sel", "sel_random", "margin", "info_margin", "drop_flagged", "drop_random", "eta_flagged",
                    "eta_layer", "eta_margin")


def at_threshold(row: dict, threshold: float) -> dict:
    """``row`` as if its data scan had flagged at position ``threshold``: its own figures where it was
    scanned there, else those of ``row["at"]`` (``--compare``) for the flag count, share, silencing
    margins and carried position; the border PANs (``b >= border_threshold`` whatever the position
    threshold) stay, the rest are position PANs. The circular twin's count carries over only to a
    higher threshold, and only where it was 0 (its flags at a higher threshold are a subset of its
    flags at the scan's). Raises ``ValueError`` where the row holds no figures at ``threshold``."""
    if row.get("position_threshold", UNRECORDED_THRESHOLD) == threshold:
        return row
    v = (row.get("at") or {}).get(str(threshold))
    if v is None:
        raise ValueError(f"{_key(row)} was not measured at position threshold {threshold}")
    if row.get("twin_pans") != 0 or threshold < row["position_threshold"]:
        raise ValueError(f"{_key(row)}: the circular twin was scanned at {row['position_threshold']} "
                         f"({row.get('twin_pans')} PANs), which says nothing of it at {threshold}")
    border = (row.get("kinds") or {}).get("border", 0)
    out = {**row, "position_threshold": threshold}
    silenced = v["channels"] and "drop" in v  # Lite0's rows count flags only: no heads to silence
    _set_flags(out, v["channels"], v["frac"], {"border": border, "position": v["channels"] - border},
               **({k: v[k] for k in ("drop", "drop_random", "margin", "info_margin", "eta_flagged", "eta_layer",
                                     "eta_margin") if k in v} if silenced else {}))
    return out


def _set_flags(row: dict, pans: int, frac: float, kinds: dict, drop: list[float] | None = None,
               drop_random: list[float] | None = None, **figures: float) -> None:
    """Give ``row`` another flagged set: its count, fraction and kinds, and, where it was silenced,
    the accuracy drops (digit, half) of it and of random channels with their selectivities and
    ``figures`` (margin, ...); every figure of the earlier set (:data:`_SCAN_SET_FIELDS`) goes; the
    targets again."""
    for k in _SCAN_SET_FIELDS:
        row.pop(k, None)
    row.update(pans=pans, frac=frac, kinds=kinds)
    if drop is not None:
        row.update(drop_flagged=drop, drop_random=drop_random, sel=round(selectivity(drop), 4),
                   sel_random=round(selectivity(drop_random), 4), **figures)
    elif "acc_half" in row:
        row["sel"] = None
    row["targets"] = targets(row)


def _key(r: dict) -> str:
    return f"{r['arch']}:{r['convention'] if r['arch'] != 'lite0' else 'photos'}:{r['size']}"


def summary(rows: list[dict]) -> str:
    """Targets met / missed over the cells."""
    lines = ["### Targets over the cells", "", "| target | met | missed | not applicable | missed in |", "|---|---|---|---|---|"]
    for t, label in (("twin0", "circular twin 0 PANs (data scan)"), ("margin", "margin >= +0.10 where flagged"),
                     ("frac", "<= 10% flagged unless selective"), ("trained", "heads above chance (0.70 / 0.90)")):
        vals = [(r, r["targets"].get(t, None)) for r in rows]
        met = sum(1 for _, v in vals if v is True)
        missed = [_key(r) for r, v in vals if v is False]
        na = sum(1 for _, v in vals if v is None)
        lines.append(f"| {label} | {met} | {len(missed)} | {na} | {', '.join(missed) or '-'} |")
    trained = [r for r in rows if r["targets"].get("trained") is True]
    t_met = [_key(r) for r in trained if r["targets"].get("margin") is True]
    t_missed = [_key(r) for r in trained if r["targets"].get("margin") is False]
    lines += ["", f"Among the {len(trained)} cells whose heads trained: margin >= +0.10 met in {len(t_met)}, missed in "
              f"{len(t_missed)} ({', '.join(t_missed) or '-'}), nothing flagged in {len(trained) - len(t_met) - len(t_missed)}."]
    mute = [r for r in trained
            if r.get("drop_flagged") and max(abs(r["drop_flagged"][1]), abs(r["drop_random"][1])) < 0.02]
    mute_etas = ", ".join(f"{_key(r)} half eta2 {_f(r.get('eta_flagged'), 3)} vs {_f(r.get('eta_layer'), 3)}"
                          for r in mute)
    lines += ["", f"Silencing either set moves the half head by less than 0.02 in {len(mute)} of these cells (there "
              "the test cannot show position, which the network holds redundantly; the margin comes from the digit "
              f"head): {mute_etas or '-'}."]
    carried = [r for r in trained if r.get("eta_margin") is not None]
    if carried:
        diffs = [r["eta_margin"] for r in carried]
        lines += ["", f"Half-label eta2 of the flagged channels above their layers' unflagged channels in "
                  f"{sum(d > 0 for d in diffs)} of the {len(carried)} trained cells where it was measured "
                  f"(by {min(diffs):+.3f} to {max(diffs):+.3f})."]
    informed = [r for r in trained if r.get("info_drop_flagged") is not None and r["targets"].get("margin") is False]
    if informed:
        half = ", ".join(f"{_key(r)} {r['info_drop_flagged'][1]:.3f} vs {r['info_drop_random'][1]:.3f} "
                         f"(info margin {r['info_margin']:+.2f})" for r in informed)
        more = sum(r["info_drop_flagged"][1] > r["info_drop_random"][1] for r in informed)
        lines += ["", f"On information instead of accuracy (the share of a head's log K - NLL lost), in the {len(informed)} "
                  f"missed cells where it was measured: silencing the flagged channels removes more of the half head's "
                  f"information than silencing random ones in {more}; half-head share lost, flagged vs random: {half}."]
    free_missed_margin = [_key(r) for r in rows if r.get("free_margin") is not None and r["free_margin"] < MARGIN_TARGET]
    free_met_margin = [_key(r) for r in rows if r.get("free_margin") is not None and r["free_margin"] >= MARGIN_TARGET]
    free_frac = [_key(r) for r in rows if r.get("free_frac", 0) > FRACTION_TARGET
                 and not (r.get("free_margin") is not None and r["free_margin"] >= MARGIN_TARGET)]
    grey = sum(1 for r in rows if r.get("mid_grey"))
    pre = sum(1 for r in rows if r.get("pre_rules") and not r.get("mid_grey"))
    interior = [_key(r) for r in rows if r.get("interior")]
    if interior:
        lines += ["", f"Data scans under the interior rule where it changed them, (i): {len(interior)} cells "
                  f"({', '.join(interior)})."]
    grey_text = f"; {grey} cells on mid-grey probes" if grey else ""
    lines += ["", f"Data-free scans (second column, not the targets' scan{grey_text}"
              f"{f'; {pre} cells before the saturated-layer and interior rules' if pre else ''}): margin >= +0.10 in "
              f"{len(free_met_margin)} of {len(free_met_margin) + len(free_missed_margin)} cells with flags; "
              f"> 10% flagged without selectivity in {len(free_frac)} cells ({', '.join(free_frac) or '-'})."]
    free_twin = [_key(r) for r in rows if r.get("twin_free_pans")]
    lines += ["", f"Data-free circular twin non-zero in: {', '.join(free_twin) or 'none'}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
