"""Where the default thresholds come from: score distributions on the pretrained EfficientNet-Lite0,
scanned on its own kind of data (the photos bundled with scikit-image, and their mirror images)
and data-free (probes in its declared [-1, 1] convention); then what the defaults flag (per stage,
per conv kind, sides, signs: the figures of docs/lite0.md) and what its circular-padded twin flags at
224 px and at 200 px (not a multiple of its total stride, 32).

Border threshold: Tukey's far-out fence, Q3 + 3 * IQR, of the border scores of every channel in
layers whose padding makes a border. Position thresholds: set by the causal tests
(tests/test_causal.py, benchmarks/detector_validity.py); this prints how many channels they and
their neighbours keep.
Run: ``.venv/bin/python benchmarks/threshold_calibration.py``
"""
from __future__ import annotations

from collections import Counter

import numpy as np

import torch

from pan_repair import convert_padding, find_pans
from pan_repair.models.pretrained import load_efficientnet_lite0, sample_images


def main() -> None:
    model = load_efficientnet_lite0()
    for what, kwargs in scans(224):
        print(f"## Lite0 {what}")
        report = find_pans(model, **kwargs)
        scores(report)
        breakdown(report, model)
    twin = load_efficientnet_lite0()
    convert_padding(twin, "circular")
    for size in (224, 200):
        for what, kwargs in scans(size):
            print(f"circular twin at {size} px, {what}: {find_pans(twin, **kwargs)!r}")


def scans(size: int) -> tuple[tuple[str, dict], ...]:
    """``find_pans`` arguments at ``size`` px: on the 5 photos and their mirror images; data-free."""
    photos = sample_images(size)[0]
    return (("on 10 photos", dict(data=torch.cat([photos, photos.flip(-1)]))),
            ("data-free", dict(input_size=(3, size, size))))


def scores(report) -> None:
    border = np.concatenate([report.scores[layer.name]["border"] for layer in report.layers if layer.makes_border])
    position = np.concatenate([s["position"] for s in report.scores.values()])
    q1, q3 = np.percentile(border, [25, 75])
    print(f"border scores ({border.size} channels in bordered layers): "
          f"Q1 {q1:.3f}  median {np.median(border):.3f}  Q3 {q3:.3f}  far-out fence Q3+3*IQR = {q3 + 3 * (q3 - q1):.3f}")
    print("  percentiles 90/95/99/99.9:", np.percentile(border, [90, 95, 99, 99.9]).round(3).tolist())
    print(f"position scores ({position.size} channels): percentiles 50/90/99/99.9:",
          np.percentile(position, [50, 90, 99, 99.9]).round(3).tolist())
    for t in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        print(f"  position >= {t}: {(position >= t).sum()} channels ({100 * (position >= t).mean():.2f}%)")
    print(f"defaults: border {report.border_threshold}, position {report.position_threshold} -> {report!r}")


def breakdown(report, model: torch.nn.Module) -> None:
    """The default flags per top-level stage (``blocks.N``), per conv kind, per side and sign."""
    def conv_kind(layer: str) -> str:
        conv = model.get_submodule(layer)
        if conv.groups > 1 and conv.groups == conv.in_channels:
            return "depthwise"
        return "1x1" if conv.kernel_size == (1, 1) else "dense kxk"

    def count(keys) -> str:
        return ", ".join(f"{k} {n}" for k, n in Counter(keys).most_common())

    for kind in ("border", "position"):
        pans = [p for p in report.pans if p.kind == kind]
        print(f"  {kind} ({len(pans)}): stages: {count('.'.join(p.layer.split('.')[:2]) for p in pans)}; "
              f"convs: {count(conv_kind(p.layer) for p in pans)}")
    print(f"  sides: {count(side for p in report.pans for side in p.sides)}; "
          f"silenced at the border (sign -1): {sum(p.sign < 0 for p in report.pans)}")


if __name__ == "__main__":
    main()
