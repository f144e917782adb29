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
from pan_repair.detector import total_stride
from pan_repair.probes import make_probes

MODELS = ["resnet18", "resnet50", "efficientnet_b0", "mobilenetv3_large_100", "convnext_tiny"]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    size = (3, args.size, args.size)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, input {size}")
    print("| model | probe images | forward (s) | scan (s) | scan / forward | PANs |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        torch.manual_seed(0)
        model = timm.create_model(name).eval()
        stride = total_stride(model, size, torch.device("cpu"), torch.float32)
        images = make_probes(size, stride=stride).images
        report = None

        def forward():
            with torch.no_grad():
                model(images)

        def scan():
            nonlocal report
            report = find_pans(model, size)
        forward()  # warm-up
        fwd, scn = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            fwd.append(timed(forward))
            scn.append(timed(scan))
        forward_s, seconds = min(fwd), min(scn)
        print(f"| {name} | {len(images)} | {forward_s:.2f} | {seconds:.2f} | {seconds / forward_s:.2f}x | "
              f"{report.count} |", flush=True)


if __name__ == "__main__":
    main()
