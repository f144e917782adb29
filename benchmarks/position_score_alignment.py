"""Diagnostic for detector_validity: why the data-mode position score misses channels that carry position.

The position score groups the rolled images by roll index ``q`` (``eta2`` = variance of
``mean_p r_pq`` over q). With data images whose content sits at random places, roll ``q`` puts image
``p``'s digit at ``(y_p + q * step) mod H``: a different absolute place for every ``p``, so the means
over ``p`` hardly move with ``q`` even for a channel that encodes absolute position perfectly.

On one SmallCNN two-head cell (same training as benchmarks/detector_validity.py), per channel:

* ``half_eta2``: share of the variance of its pooled ``relu(bn(conv))`` over the 800 test images
  explained by the half label (real placements): how much position it carries on its own;
* ``position``: the detector's position score with ``data=`` 16 training images (random placements);
* ``position_aligned``: the same detector score with ``data=`` the same 16 digits all placed at the
  canvas centre (base images aligned: roll q is then one absolute place for every p);
* ``within``: share of variance explained by the roll *within* each image,
  ``sum_pq (r_pq - mean_q r_pq)^2 / sum_pq (r_pq - mean r)^2`` on the random-placement rolls (no twin
  subtraction; at 32 px with total stride 2 and roll steps of 4 px the circular twin is roll-invariant).

Prints the correlations with ``half_eta2`` and the counts at the default threshold; appends a JSON line.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch

from pan_repair import find_pans
from pan_repair.layers import conv_bn_pairs
from pan_repair.detect.probes import roll_grid

_PATH = Path(__file__).resolve().parent / "detector_validity.py"
_spec = importlib.util.spec_from_file_location("detector_validity_bench", _PATH)
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench
_spec.loader.exec_module(bench)


def centred(x_black: torch.Tensor, size: int) -> torch.Tensor:
    """The digits of ``x_black`` (one per canvas, on black) moved to the canvas centre."""
    out = torch.zeros_like(x_black)
    for i, img in enumerate(x_black):
        ys, xs = torch.nonzero(img[0] > 0, as_tuple=True)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        h, w = y1 - y0, x1 - x0
        ty, tx = (size - h) // 2, (size - w) // 2
        out[i, 0, ty:ty + h, tx:tx + w] = img[0, y0:y1, x0:x1]
    return out


@torch.no_grad()
def pooled(model, pairs, names, x):
    acts = {n: [] for n in names}
    handles = [model.get_submodule(pairs.get(n, n)).register_forward_hook(
        lambda m, i, o, n=n: acts[n].append(o.clamp_min(0).mean(dim=(2, 3)))) for n in names]
    try:
        for i in range(0, len(x), 200):
            model(x[i:i + 200])
    finally:
        for h in handles:
            h.remove()
    return torch.cat([torch.cat(acts[n]) for n in names], dim=1).double()


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--conventions", nargs="+", default=["black", "white"])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--jsonl", default="benchmarks/results/position_score_alignment.jsonl")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    size = a.size
    for conv in a.conventions:
        xtr, ytr, xte, yte, _ = bench.dataset(size, conv)
        btr, _ = bench.render(size, "train", 2, 0)
        stats = (float(btr.mean()), float(btr.std()))
        model, chans = bench.build("smallcnn", size)
        bench.train(model, xtr, ytr, chans, *bench.TRAIN["smallcnn"][:3])
        sample = xtr[:16]
        aligned = bench.apply_convention(centred(btr[:16], size), conv, stats, 99)
        rep = find_pans(model, data=sample, dependence=False)
        rep_al = find_pans(model, data=aligned, dependence=False)
        names = list(rep.scores)
        pairs = conv_bn_pairs(model, tuple(sample.shape[1:]))
        r = pooled(model, pairs, names, xte)
        half = yte[:, 1].bool()
        between = sum(m.sum() * (r[m].mean(0) - r.mean(0)) ** 2 for m in (half, ~half))
        half_eta = (between / ((r - r.mean(0)) ** 2).sum(0).clamp_min(1e-12)).numpy()
        grid = roll_grid(sample[:8], 8, (2, 2))
        g = pooled(model, pairs, names, grid.images).reshape(8, 2, grid.n_positions, -1)  # (P, axis, Q, C)
        total = ((g - g.mean(dim=(0, 2), keepdim=True)) ** 2).sum(dim=(0, 2))
        within = ((g - g.mean(dim=2, keepdim=True)) ** 2).sum(dim=(0, 2))
        within = (within / total.clamp_min(1e-12)).amax(0).numpy()
        position = np.array([v for n in names for v in rep.scores[n]["position"]])
        position_al = np.array([v for n in names for v in rep_al.scores[n]["position"]])
        row = {
            "convention": conv, "size": size, "channels": len(half_eta),
            "corr_with_half_eta2": {"position": bench._corr(half_eta, position),
                                    "position_aligned": bench._corr(half_eta, position_al),
                                    "within_image_roll_share": bench._corr(half_eta, within)},
            "pans_random_data": rep.count, "pans_aligned_data": rep_al.count,
            "kinds_aligned": bench._kinds(rep_al),
            "position_ge_0.9": {"random": int((position >= 0.9).sum()), "aligned": int((position_al >= 0.9).sum()),
                                "within": int((within >= 0.9).sum())},
            "top_half_eta2": [dict(ch=f"{n}:{c}", half_eta2=round(float(half_eta[i]), 3),
                                   position=round(float(position[i]), 3),
                                   position_aligned=round(float(position_al[i]), 3),
                                   within=round(float(within[i]), 3))
                              for i, (n, c) in sorted(enumerate([(n, c) for n in names
                                                                 for c in range(len(rep.scores[n]["position"]))]),
                                                      key=lambda t: -half_eta[t[0]])[:8]],
        }
        print(json.dumps(row), flush=True)
        with open(a.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
