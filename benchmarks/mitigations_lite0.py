"""Mitigations on a PAN-rich network (issue #4 section 5): the pretrained EfficientNet-Lite0
fine-tuned on the embedded digits, then repaired and fine-tuned again.

Networks trained from scratch on the small placement-shortcut data hold few PANs (1-2 in
benchmarks/mitigations.py Part A), so the targets "each mitigation removes >= 90% of the detected
PANs" and "pruning the detected PANs cuts border bias more than pruning as many random filters"
are measured where the detector finds hundreds: here, and on a ResNet trained from scratch
(benchmarks/mitigations_resnet.py). Procedure, rows and columns: benchmarks/repair_table.py.

**Task.** Digits (all 10 classes; digit 64 px = scale 8) at random places on a 128x128 noisy
canvas, as 3 channels; 1078 training and 360 validation images. At 128 px the detector's rolls are
off Lite0's stride-32 grid, so position is counted beyond its circular twin's; 97-99% of the
baselines' PANs are border PANs. 128 px keeps a seed near 25 min on one CPU thread.

**Baseline.** :func:`pan_repair.load_efficientnet_lite0` with a new 10-class head (seeded),
fine-tuned 3 epochs at Adam 1e-3 (constant); each repair then fine-tuned 2 epochs at 3e-4.

Run: ``.venv/bin/python benchmarks/mitigations_lite0.py [--seeds 0 ...] [--only NAME ...]
[--out benchmarks/results/mitigations_lite0.md]``; seeds run as separate processes are tabulated
together by ``--combine FILE ...`` (their ``## Seed N`` tables; runs nothing).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from pan_repair import load_efficientnet_lite0

sys.path.insert(0, str(Path(__file__).resolve().parent))
import repair_table  # noqa: E402  (the sibling module)


def make(seed: int) -> nn.Module:
    model = load_efficientnet_lite0()
    torch.manual_seed(seed)
    model.reset_classifier(10)
    return model


LITE0 = repair_table.Testbed(
    title="Mitigations on a PAN-rich network: EfficientNet-Lite0 on digits at 128x128", make=make,
    canvas=128, scale=8, channels=3, epochs=3, lr=1e-3, ft_epochs=2, ft_lr=3e-4, cosine=False,
    near=4, far=16, out="benchmarks/results/mitigations_lite0.md")


def main(argv: list[str] | None = None) -> None:
    repair_table.main({"lite0": LITE0}, __doc__, argv)


if __name__ == "__main__":
    main()
