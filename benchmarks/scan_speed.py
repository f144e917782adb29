"""Scan cost vs one plain forward pass of the same probe batch, side by side, on the CPU.

The probe batch is what :func:`pan_repair.find_pans` runs the model on
(:func:`pan_repair.detect.detector.probe_batch`): data-free, uniform probes + rolled textures; with data
(``--data``: 16 photos of scikit-image, ImageNet-normalised), the images + rolled canvases made of
them. The scan adds the blank pre-pass, the hooks and statistics, the border-free twin (one base
image, or all rolls where it is not exactly invariant) and the padding dependence (forward and
backward of 16 images, a replicate twin's forward).
Target (issue #13): a scan costs at most 2x one forward of its probe batch. On the CPU the scan
runs its forwards channels-last (faster oneDNN convolutions); the plain forward is the model as
users call it (contiguous images), and the last column sets the scan against a channels-last
forward too.
Run: ``.venv/bin/python benchmarks/scan_speed.py [--size 224] [--models resnet18 ...] [--data] [--threads N]
[--device cuda] [--profile]``; ``--profile`` then prints where one scan's time goes (``torch.profiler``: the
operations' host time, and on a GPU the host-device synchronisations, the kernels launched and their
device time).
"""
from __future__ import annotations

import argparse
import platform
import time

import timm
import torch

from pan_repair import find_pans
from pan_repair.detect.detector import probe_batch

MODELS = ["resnet18", "resnet50", "efficientnet_b0", "mobilenetv3_large_100", "convnext_tiny"]


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def photos(side: int, n: int = 16) -> torch.Tensor:
    """``n`` ImageNet-normalised photos of scikit-image (and their mirror images), ``side`` px."""
    import skimage.data
    from pan_repair.detect.probes import IMAGENET_MEAN, IMAGENET_STD

    names = ["chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry", "hubble_deep_field",
             "colorwheel"]
    out = []
    for name in names:
        x = torch.from_numpy(getattr(skimage.data, name)()[..., :3].copy()).permute(2, 0, 1).float() / 255
        x = torch.nn.functional.interpolate(x[None], size=(side, side), mode="bilinear", antialias=True)[0]
        out += [x, x.flip(-1)]
    x = torch.stack(out[:n])
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", action="store_true", help="scan on 16 photos instead of data-free")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="after the table, profile one scan of each model")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = (3, args.size, args.size)
    data = photos(args.size) if args.data else None
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"# {where}, "
          f"torch {torch.__version__}, input {size}, {'16 photos' if args.data else 'data-free'}")
    print("| model | probe images | forward (s) | scan (s) | scan / forward | PANs | channels-last forward (s) | "
          "scan / it |")
    print("|---|---|---|---|---|---|---|---|")
    profiles: list[str] = []
    for name in args.models:
        torch.manual_seed(0)
        model = timm.create_model(name).eval().to(args.device)
        images = probe_batch(model, size, data=data).to(args.device)
        last = images.contiguous(memory_format=torch.channels_last)
        report = None

        def forward(x=images):
            with torch.no_grad():
                model(x)

        def scan():
            nonlocal report
            report = find_pans(model, size, data=data)
        forward()  # warm-up
        fwd, scn, fcl = [], [], []
        for _ in range(args.repeats):  # interleaved, so all see the same machine load
            fwd.append(timed(forward))
            scn.append(timed(scan))
            fcl.append(timed(lambda: forward(last)))
        forward_s, seconds, last_s = min(fwd), min(scn), min(fcl)
        print(f"| {name} | {len(images)} | {forward_s:.4f} | {seconds:.3f} | {seconds / forward_s:.2f}x | "
              f"{report.count} | {last_s:.4f} | {seconds / last_s:.2f}x |", flush=True)
        if args.profile:
            profiles.append(f"{name}: " + profile(scan))
    for line in profiles:
        print(line)


def synchronisations(scan) -> int:
    """Host-device synchronisations in one scan: the warnings of ``torch.cuda.set_sync_debug_mode``."""
    import warnings

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scan()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def profile(scan) -> str:
    """One scan under ``torch.profiler``: host time of the operations, the CUDA kernels and their
    device time, the operations of most host time; on a GPU first the synchronisations of one scan."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = torch.cuda.is_available()
    syncs = f"{synchronisations(scan)} host-device synchronisations; " if cuda else ""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        scan()
        if cuda:
            torch.cuda.synchronize()
    events = prof.key_averages()
    host = sum(e.self_cpu_time_total for e in events) / 1e3
    on_device = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels = sum(e.count for e in on_device)
    device = sum(e.self_device_time_total for e in on_device) / 1e3
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]
    launches = sum(e.count for e in events if e.key == "cudaLaunchKernel")
    return (syncs + f"host {host:.1f} ms in {sum(e.count for e in events)} operations"
            + (f"; {launches} kernel launches, {kernels} CUDA device events, {device:.1f} ms of device time"
               if cuda else "")
            + "; most host time: "
            + ", ".join(f"{e.key} {e.self_cpu_time_total / 1e3:.1f} ms ({e.count})" for e in top))


if __name__ == "__main__":
    main()
