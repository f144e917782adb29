"""Mitigations on a PAN-rich network trained from scratch on the embedded digits (issue #4
section 5), then repaired and fine-tuned.

The network of benchmarks/pan_penalty.py, whose plain training ends with 34-158 PANs: timm's
``ResNet`` with resnet10t's layout at a quarter of its width (780 filters), output stride 8, zero
padding; digits (all 10 classes, 24 px = scale 3) on a 48x48 noisy canvas; 1078 training and 360
validation images. Two tasks (``--task``):

* ``random``: the digits at random places;
* ``shortcut``: a placement shortcut with many PANs: digits 0-4 always in the top half, 5-9 always
  in the bottom half (training and validation); also tested with the halves swapped. The plain
  network takes it (98% on the training placement, ~35% swapped).
* ``border``: a border shortcut, the bias PANs are said to carry: digits 0-4 always touch an edge
  (a side drawn at random), 5-9 always sit in the centre, >= 6 px from every edge (training and
  validation); also tested swapped (``DigitsCanvas(placement="border-swapped")``).

Baseline: 6 epochs, Adam 3e-3; each repair then fine-tuned 3 epochs (half the budget) at Adam
1e-3, on the same data; each rate annealed to 0 by a cosine (at a constant rate the accuracy of
this network swings by 10-20 points between epochs). Procedure, rows and columns:
benchmarks/repair_table.py; the pretrained counterpart: benchmarks/mitigations_lite0.py.

Run: ``.venv/bin/python benchmarks/mitigations_resnet.py [--task random|shortcut|border] [--seeds 0 1 2 3 4]
[--only NAME ...] [--out FILE]`` (results: benchmarks/results/mitigations_resnet[_shortcut|_border].md).
About 3 min a seed on one CPU thread.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import repair_table  # noqa: E402  (the sibling modules)
from pan_penalty import make_model  # noqa: E402

_COMMON = dict(make=make_model, canvas=48, scale=3, channels=1, epochs=6, lr=3e-3, ft_epochs=3, ft_lr=1e-3,
               cosine=True, near=2, far=8)
TASKS = {
    "random": repair_table.Testbed(
        title="Mitigations on a PAN-rich network trained from scratch: a quarter-width resnet10t on digits "
              "at random places, 48x48", out="benchmarks/results/mitigations_resnet.md", **_COMMON),
    "shortcut": repair_table.Testbed(
        title="Mitigations on a PAN-rich network with a placement shortcut: a quarter-width resnet10t, digits "
              "0-4 in the top half and 5-9 in the bottom half of 48x48, tested swapped",
        out="benchmarks/results/mitigations_resnet_shortcut.md", placement="biased", test_placement="swapped",
        **_COMMON),
    "border": repair_table.Testbed(
        title="Mitigations on a PAN-rich network with a border shortcut: a quarter-width resnet10t, digits "
              "0-4 touching an edge and 5-9 in the centre of 48x48, tested swapped",
        out="benchmarks/results/mitigations_resnet_border.md", placement="border", test_placement="border-swapped",
        **_COMMON),
}
RESNET = TASKS["random"]


def main(argv: list[str] | None = None) -> None:
    repair_table.main(TASKS, __doc__, argv)


if __name__ == "__main__":
    main()
