"""Small reference CNNs for the embedded digits data (tests, demo, benchmarks)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """``depth`` x (3x3 conv, BatchNorm, ReLU), global average pooling, one linear head per task.

    Args:
        in_chans: input channels.
        num_classes: one int per head (e.g. ``(10, 2)`` for digit + top/bottom half).
        width: channels of every conv.
        depth: number of conv blocks; blocks listed in ``strides`` downsample by 2.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.

    ``forward`` returns the logits of the single head, or a tuple of logits with several heads.
    """

    def __init__(self, in_chans: int = 1, num_classes: int | Sequence[int] = 10, width: int = 24,
                 depth: int = 5, strides: Sequence[int] = (), padding_mode: str = "zeros") -> None:
        super().__init__()
        heads = (num_classes,) if isinstance(num_classes, int) else tuple(num_classes)
        layers: list[nn.Module] = []
        chans = in_chans
        for i in range(depth):
            layers += [nn.Conv2d(chans, width, 3, stride=2 if i in strides else 1, padding=1,
                                 padding_mode=padding_mode, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            chans = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.heads = nn.ModuleList(nn.Linear(width, n) for n in heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        z = self.pool(self.features(x)).flatten(1)
        out = tuple(head(z) for head in self.heads)
        return out[0] if len(out) == 1 else out
