"""Scan cost vs one plain forward pass of the same probe batch, side by side, on the CPU.

Target (issue #2): a scan costs at most 2x one probe forward, hooks and statistics included.
Run: ``.venv/bin/python benchmarks/scan_speed.py [--size 224] [--models resnet18 ...]``
"""
from __future__ import annotations

import argparse
import platform
import time

import timm
import torch

from pan_repair import find_pans
from pan_repair.detector import _total_stride
from pan_repair.probes import make_probes

MODELS = ["resnet18", "resnet50", "efficientnet_b0", "mobilenetv3_large_100", "convnext_tiny"]


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    size = (3, args.size, args.size)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, input {size}")
    print(f"| model | probe images | forward (s) | scan (s) | scan / forward | PANs |")
    print(f"|---|---|---|---|---|---|")
    for name in args.models:
        torch.manual_seed(0)
        model = timm.create_model(name).eval()
        stride = _total_stride(model, size, torch.device("cpu"), torch.float32)
        images = make_probes(size, stride=stride).images
        with torch.no_grad():
            model(images[:2])  # warm-up
            forward = best_of(lambda: model(images), args.repeats)
        report = None

        def scan():
            nonlocal report
            report = find_pans(model, size)
        seconds = best_of(scan, args.repeats)
        print(f"| {name} | {len(images)} | {forward:.2f} | {seconds:.2f} | {seconds / forward:.2f}x | "
              f"{report.count} |", flush=True)


if __name__ == "__main__":
    main()
