"""Placement probes for the placement penalty (:func:`pan_repair.repair.regularizer.pan_penalty`):
synthetic patterns, or real images, rolled to several places.

A :class:`PlacementProbes` batch holds ``n_constants`` spatially constant images (for the border
term) and then ``n_patterns x len(axes) x n_positions`` placement images, each pattern rolled
circularly along rows (axis 0, vertical moves) and/or columns (axis 1). The share of a channel's
pooled-response variance that the roll explains (eta^2) is what the placement penalty lowers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from ..detect.probes import _texture

__all__ = ["PlacementProbes", "make_placement_probes", "placements_of", "roll_axes", "STYLES", "N_CONSTANTS"]

_AXES = {"rows": 0, "cols": 1, 0: 0, 1: 1}
#: default number of constant images in a probe batch
N_CONSTANTS = 4
#: probe styles of :func:`make_placement_probes`
STYLES = ("texture", "ink")


@dataclass
class PlacementProbes:
    """Probe images for :func:`pan_penalty`, in this order: ``n_constants`` spatially constant
    images (bright levels, then their negatives), then ``n_patterns x len(axes) x n_positions``
    placement images (pattern-major; axis 0 = rolls along rows, i.e. vertical moves)."""

    images: torch.Tensor
    n_constants: int
    n_patterns: int
    axes: tuple[int, ...]
    n_positions: int

    def grid(self, values: torch.Tensor) -> torch.Tensor:
        """Per-image ``values`` (B, ...) of the placement part as (P, A, Q, ...)."""
        v = values[self.n_constants:]
        return v.reshape(self.n_patterns, len(self.axes), self.n_positions, *v.shape[1:])

    def select(self, patterns: Sequence[int]) -> "PlacementProbes":
        """The probes of a subset of the patterns (with all the constants)."""
        chosen = self.grid(self.images)[list(patterns)].flatten(0, 2)
        return PlacementProbes(torch.cat([self.images[: self.n_constants], chosen]), self.n_constants,
                               len(patterns), self.axes, self.n_positions)


def _axis(a: int | str) -> int:
    if a not in _AXES:
        raise ValueError(f"unknown axis {a!r}; expected 'rows' or 'cols'")
    return _AXES[a]


def roll_axes(axes: Iterable[int | str]) -> tuple[int, ...]:
    """Axis names or numbers (``"rows"``/0: vertical rolls, ``"cols"``/1) as unique numbers."""
    out = tuple(dict.fromkeys(_axis(a) for a in axes))
    if not out:
        raise ValueError("axes must name at least one of 'rows', 'cols'")
    return out


def make_placement_probes(input_size: tuple[int, int, int], n_patterns: int = 8, n_positions: int = 5,
                          *, axes: Iterable[int | str] = ("rows", "cols"), stride: tuple[int, int] = (1, 1),
                          pattern_size: int | None = None, level: float = 1.0,
                          n_constants: int = N_CONSTANTS, seed: int = 0, style: str = "texture",
                          contrast: float = 6.0, noise: float = 0.3) -> PlacementProbes:
    """Probes for :func:`pan_penalty`; deterministic in ``seed``, the global RNG untouched.

    Per pattern: a random smooth texture (:func:`pan_repair.detect.probes._texture`, side
    ``pattern_size``, default a third of the shorter side) plus a random offset of std ``level``,
    centred on a canvas of std-0.1 noise; the canvas standardised to mean 0, std 1 per channel;
    then rolled circularly by ``n_positions`` multiples of ``stride`` (the network's total
    stride: a padding-free network is then exactly invariant) along each of ``axes``, as far as
    the texture can go without wrapping. Fewer positions when the canvas holds fewer.
    ``n_constants`` (even, may be 0) constant images come first, for the border term.

    ``style="ink"`` makes object-like probes instead: sparse bright strokes (the positive part of
    the texture times ``contrast``) on a flat canvas at ``level`` plus std-``noise`` noise, *not*
    standardised, like a normalised dark-background image (the digits data: background -0.2,
    ink up to ~6, noise ~0.3). On the placement shortcut these transfer to the digits far better
    than the standardised textures (see the module docstring).
    """
    c, h, w = (int(v) for v in input_size)
    axes = roll_axes(axes)
    if n_patterns < 2 or n_positions < 2:
        raise ValueError("n_patterns and n_positions must be >= 2 (eta^2 needs a spread of both)")
    if style not in STYLES:
        raise ValueError(f"unknown probe style {style!r}; expected one of {', '.join(STYLES)}")
    if n_constants % 2 or n_constants < 0:
        raise ValueError(f"n_constants must be an even number >= 0, got {n_constants}")
    side = pattern_size or max(3, min(h, w) // 3)
    ph, pw = min(side, h - 2), min(side, w - 2)
    room = ((h - ph) // 2, (w - pw) // 2)  # how far the texture can move from the centre
    steps = {a: max(stride[a], 2 * room[a] // (n_positions - 1) // stride[a] * stride[a]) for a in axes}
    reach = min(room[a] // steps[a] for a in axes)
    if reach < 1:
        raise ValueError(f"input size {h}x{w} is too small to move a {ph}x{pw} pattern by the "
                         f"network's total stride {tuple(stride)}")
    if 2 * reach + 1 > n_positions:  # spread n_positions over the reach
        shifts = sorted({round(-reach + 2 * reach * i / (n_positions - 1)) for i in range(n_positions)})
    else:
        shifts = list(range(-reach, reach + 1))
    gen = torch.Generator().manual_seed(seed)
    levels = torch.randn(n_constants // 2, c, 1, 1, generator=gen)
    levels = levels * torch.where(levels.mean(dim=1, keepdim=True) < 0, -1.0, 1.0)  # bright first
    constants = torch.cat([levels, -levels]).expand(n_constants, c, h, w)
    top, left = (h - ph) // 2, (w - pw) // 2
    placements = []
    for _ in range(n_patterns):
        if style == "ink":
            canvas = level + noise * torch.randn(c, h, w, generator=gen)
            canvas[:, top:top + ph, left:left + pw] += contrast * _texture(gen, c, ph, pw).clamp_min(0)
        else:
            canvas = 0.1 * torch.randn(c, h, w, generator=gen)
            offset = level * torch.randn(c, 1, 1, generator=gen)
            canvas[:, top:top + ph, left:left + pw] = offset + _texture(gen, c, ph, pw)
            flat = canvas.flatten(1)
            canvas = (canvas - flat.mean(1).view(c, 1, 1)) / flat.std(1).clamp_min(1e-6).view(c, 1, 1)
        for a in axes:
            placements += [torch.roll(canvas, s * steps[a], dims=a - 2) for s in shifts]
    images = torch.cat([constants, torch.stack(placements)]).contiguous()
    return PlacementProbes(images, n_constants, n_patterns, axes, len(shifts))


def placements_of(images: torch.Tensor, n_positions: int = 5, *, axes: Iterable[int | str] = ("rows", "cols"),
                  stride: tuple[int, int] = (1, 1), reach: float = 1 / 3) -> PlacementProbes:
    """Placement probes made of real ``images`` (N, C, H, W), for a data-based penalty: each
    image rolled circularly (content crossing an edge wraps around) by ``n_positions`` multiples
    of ``stride`` spread over +-``reach`` of the side, along each axis. No constants."""
    axes = roll_axes(axes)
    if images.ndim != 4 or len(images) < 2 or n_positions < 2:
        raise ValueError("placements_of needs images (N >= 2, C, H, W) and n_positions >= 2")
    out = []
    for img in images:
        for a in axes:
            side, s = images.shape[2 + a], stride[a]
            k = max(1, int(side * reach) // s)
            shifts = torch.linspace(-k, k, n_positions).round().long().tolist()
            out += [torch.roll(img, sh * s, dims=a - 2) for sh in shifts]
    return PlacementProbes(torch.stack(out), 0, len(images), axes, n_positions)
