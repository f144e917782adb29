"""Where the default thresholds come from: score distributions on the pretrained EfficientNet-Lite0.

Border threshold: Tukey's far-out fence, Q3 + 3 * IQR, of the border scores of every channel in
layers whose padding makes a border. Position threshold: set by the causal test
(tests/test_causal.py); this prints how many channels it and its neighbours keep.
Run: ``.venv/bin/python benchmarks/threshold_calibration.py``
"""
from __future__ import annotations

import numpy as np

from pan_repair import DEFAULT_BORDER_THRESHOLD, DEFAULT_POSITION_THRESHOLD, find_pans
from pan_repair.pretrained import load_efficientnet_lite0


def main() -> None:
    report = find_pans(load_efficientnet_lite0(), (3, 224, 224))
    border = np.concatenate([report.scores[layer.name]["border"] for layer in report.layers if layer.makes_border])
    position = np.concatenate([s["position"] for s in report.scores.values()])
    q1, q3 = np.percentile(border, [25, 75])
    print(f"border scores ({border.size} channels in bordered layers): "
          f"Q1 {q1:.3f}  median {np.median(border):.3f}  Q3 {q3:.3f}  far-out fence Q3+3*IQR = {q3 + 3 * (q3 - q1):.3f}")
    print("  percentiles 90/95/99/99.9:", np.percentile(border, [90, 95, 99, 99.9]).round(3).tolist())
    print(f"position scores ({position.size} channels): percentiles 50/90/99/99.9:",
          np.percentile(position, [50, 90, 99, 99.9]).round(3).tolist())
    for t in (0.8, 0.9, 0.95, 0.99):
        print(f"  position >= {t}: {(position >= t).sum()} channels ({100 * (position >= t).mean():.2f}%)")
    print(f"defaults: border {DEFAULT_BORDER_THRESHOLD}, position {DEFAULT_POSITION_THRESHOLD} -> {report}")


if __name__ == "__main__":
    main()
