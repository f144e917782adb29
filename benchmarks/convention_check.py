"""Does a data-free scan notice that its assumed input convention is not the model's? (issue 13)

``find_pans`` without data probes on a mid-grey canvas (pixels 0.5) in the declared convention and, where
the model's stem conv feeds a trained BatchNorm, adds a note to ``report.assumptions`` when the mean pixel
level that BatchNorm's running mean implies (:func:`pan_repair.detect.implied.implied_pixel_level`) is
at least :data:`~pan_repair.detect.implied.MISMATCH` from 0.5.

Part A, the validity matrix's digits cells (``benchmarks/detector_validity.py``: SmallCNN, torchvision
resnet18, timm mobilenetv3_small_050 x {black, white, noisy, norm} x {32, 64, 96, 100, 224} px) in the
conventions its data-free scans declare (``input_range=(0, 1)``, or the train set's mean/std for
``norm``): the BatchNorms' running statistics gathered from 512 training canvases (train-mode forwards,
cumulative average; weights at initialisation: the stem's statistics are what is read), implied level
against the canvases' true mean pixel. Part B, SmallCNN trained 4 epochs at 32 px (real training).
Part C, the pretrained EfficientNet-Lite0 in its own convention and in wrong ones.

Usage: ``python benchmarks/convention_check.py [--sizes 32 64 96 100 224] [--out ...]``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detector_validity as dv

from pan_repair import find_pans
from pan_repair.detect.forward import prepass
from pan_repair.detect.implied import MISMATCH, implied_pixel_level
from pan_repair.detect.probes import resolve_convention
from pan_repair.models.pretrained import load_efficientnet_lite0

CPU = torch.device("cpu")


def gather_bn(model: torch.nn.Module, x: torch.Tensor, chans: int, batch: int = 64) -> None:
    """Every BatchNorm's running statistics from ``x`` (cumulative average), weights untouched."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            model(dv._chans(x[i:i + batch], chans))
    model.eval()


def implied(model: torch.nn.Module, convention, input_size) -> tuple[float, float]:
    pre = prepass(model, input_size, CPU, torch.float32)
    return implied_pixel_level(model.get_submodule(pre.stem), pre.feeds_bn[pre.stem], convention, input_size)


def noted(report) -> bool:
    return any("stem's BatchNorm" in a for a in report.assumptions)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", type=int, default=[32, 64, 96, 100, 224])
    p.add_argument("--out", default="benchmarks/results/convention_check.md")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    lines = ["# Data-free scans: the assumed input convention against the model's own statistics",
             "", f"Command: `python benchmarks/convention_check.py`; machine: {dv.machine()}; 1 thread.",
             f"Note threshold: implied mean pixel level at least {MISMATCH} from the probes' 0.5.", "",
             "## A. The validity matrix's digits cells (stem statistics from 512 training canvases)", "",
             "| arch | convention | size | true mean pixel | implied (R^2) | error | noted |", "|---|---|---|---|---|---|---|"]
    errors, notes = [], []
    for arch in ("smallcnn", "resnet18", "mobilenet"):
        for size in a.sizes:
            for conv in ("black", "white", "noisy", "norm"):
                xtr, _, _, _, free = dv.dataset(size, conv, 1, 0)
                x = xtr[:512]
                model, chans = dv.build(arch, size, 0)
                gather_bn(model, x, chans)
                convention = resolve_convention(model, chans, **free)
                true = float((x * convention.std[0] + convention.mean[0]).mean())
                u, r2 = implied(model, convention, (chans, size, size))
                note = abs(u - 0.5) >= MISMATCH
                errors.append(abs(u - true))
                notes.append(note)
                lines.append(f"| {arch} | {conv} | {size} | {true:.3f} | {u:.3f} ({r2:.3f}) | {u - true:+.3f} | "
                             f"{'yes' if note else 'no'} |")
                print(lines[-1], flush=True)
    lines += ["", (f"{len(errors)} cells: implied level within {max(errors):.3f} of the true mean pixel; noted in "
                   f"{sum(notes)} of {len(notes)}."), "",
              "## B. SmallCNN trained 4 epochs at 32 px, data-free scan in the matrix's convention", "",
              "| convention | test acc digit / half | true mean pixel | note in report.assumptions | PANs |",
              "|---|---|---|---|---|"]
    for conv in ("black", "white", "noisy", "norm"):
        xtr, ytr, xte, yte, free = dv.dataset(32, conv, 2, 0)
        model, chans = dv.build("smallcnn", 32, 0)
        dv.train(model, xtr, ytr, chans, 4, 1e-2, 64, 0)
        acc = dv.evaluate(model, xte, yte, chans)[:2]
        report = find_pans(model, (1, 32, 32), dependence=False, **free)
        convention = resolve_convention(model, chans, **free)
        true = float((xtr * convention.std[0] + convention.mean[0]).mean())
        text = next((s for s in report.assumptions if "stem's BatchNorm" in s), "none")
        lines.append(f"| {conv} | {acc[0]:.2f} / {acc[1]:.2f} | {true:.3f} | {text} | {report.count}/{report.total_filters} |")
        print(lines[-1], flush=True)
    lines += ["", "## C. Pretrained EfficientNet-Lite0 (ImageNet), data-free at 224 px", "",
              "| declared convention | implied level (R^2) | noted |", "|---|---|---|"]
    lite0 = load_efficientnet_lite0().eval()
    for label, kw in (("its own: timm pretrained_cfg (mean 0.5, std 0.5)", {}),
                      ("ImageNet mean/std", dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))),
                      ("input_range (0, 1) (wrong)", dict(input_range=(0.0, 1.0))),
                      ("input_range (0, 255) (wrong)", dict(input_range=(0.0, 255.0)))):
        convention = resolve_convention(lite0, 3, **kw)
        u, r2 = implied(lite0, convention, (3, 224, 224))
        report = find_pans(lite0, (3, 224, 224), dependence=False, n_patterns=2, **kw)
        lines.append(f"| {label} | {u:.3f} ({r2:.3f}) | {'yes' if noted(report) else 'no'} |")
        print(lines[-1], flush=True)
    lines += ["", f"Wall time: {time.perf_counter() - t0:.0f} s.", ""]
    Path(a.out).write_text("\n".join(lines))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
