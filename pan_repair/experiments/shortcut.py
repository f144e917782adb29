"""The placement-shortcut testbed that the benchmarks and tests measure repairs on.

Digits on a canvas whose class is tied to where they sit during training (by default 8 always in
the top half, 9 always in the bottom half; :class:`~pan_repair.data.digits.DigitsCanvas` with
``placement="biased"``), tested with the placements swapped; a plain PyTorch training loop
(Adam, seeded shuffling, optional extra loss term) so that runs are fast and reproducible.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.digits import DigitsCanvas

__all__ = ["shortcut_data", "train_step", "train_plain", "accuracy"]

#: ``loss_term(model, x, logits)``: an extra loss added to the cross-entropy of a step
LossTerm = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def shortcut_data(splits: Sequence[str], placement: str, classes: Sequence[int] = (8, 9),
                  canvas: int = 24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Images, labels and top-left positions of ``splits`` (concatenated) with ``placement``
    (digits at scale 1), and the largest offset ``L = canvas - 8``."""
    xs, ys, ps = [], [], []
    for split in splits:
        ds = DigitsCanvas(split, canvas=canvas, scale=1, placement=placement, classes=classes)
        for i in range(len(ds)):
            x, y, p = ds[i]
            xs.append(x), ys.append(y), ps.append(p)
    return torch.stack(xs), torch.stack(ys), torch.stack(ps), ds.max_offset


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               loss_term: LossTerm | None = None) -> None:
    """One step of ``cross_entropy(model(x), y) [+ loss_term(model, x, logits)]`` in train mode."""
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    if loss_term is not None:
        loss = loss + loss_term(model, x, logits)
    opt.zero_grad()
    loss.backward()
    opt.step()


def train_plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, *, lr: float, seed: int,
                batch: int = 32, loss_term: LossTerm | None = None, cosine: bool = False) -> nn.Module:
    """Adam at ``lr`` for ``epochs`` over ``(x, y)`` in batches shuffled by a generator seeded
    with ``seed`` (``cosine``: the rate annealed to 0 over all steps, per step,
    ``lr_t = lr (1 + cos(pi t / T)) / 2``); returns ``model`` in eval mode."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    steps = epochs * -(-len(x) // batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine and steps else None
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            train_step(model, opt, x[idx], y[idx], loss_term)
            if schedule is not None:
                schedule.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (a fraction) of ``model`` in eval mode."""
    return float((model.eval()(x).argmax(1) == y).float().mean())
