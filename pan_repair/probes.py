"""Synthetic probe images: the detector needs no dataset.

The probe batch has three parts (in this order):

* ``n_constants`` spatially constant images with random per-channel levels: first the
  bright ones (positive mean level ``c``), then their negatives ``-c``. On a constant input every interior activation is spatially
  constant, so any border response comes from padding.
* ``2 x n_positions`` *scale* images: a small random smooth texture (side/8, unit std) on a
  flat canvas with faint noise (std 0.1), rolled as below. The detector measures the channel
  scale of convolutions without a (trained) BatchNorm on the constants and these images.
* ``n_patterns x 2 axes x n_positions`` *placement* images: a random smooth texture of an
  object's size (side/3) centred on a flat canvas with faint noise (std 0.1), of a contrast that
  gives the image about unit std, like a normalised input (weak, detail-sized textures leave
  position-encoding channels silent: measured on digits CNNs, where they scored channels that
  carry the position head at 0.04-0.3 instead of 0.8-0.95), the whole
  image rolled circularly by ``k * step`` pixels (k centred on 0) along rows (axis 0,
  vertical) or columns (axis 1, horizontal), never so far that the texture wraps: the
  texture stays whole, from the centre to the edge. With ``step`` a multiple of the network's total stride,
  a padding-free (circular) network with global pooling is exactly invariant to these
  rolls; a response that changes with the roll encodes where content lies relative to
  the border.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["ProbeBatch", "make_probes", "min_side"]


@dataclass
class ProbeBatch:
    """Probe images and their layout (see module docstring)."""

    images: torch.Tensor
    n_constants: int
    n_patterns: int
    n_positions: int
    #: per position: distance from the pattern's centre to the nearest edge, as a fraction
    #: of the side (0.5 = centred, 0 = straddling the edge)
    distances: torch.Tensor
    #: scale images between the constants and the placements
    n_scale: int = 0

    def placement_slice(self) -> slice:
        return slice(self.n_constants + self.n_scale, self.images.shape[0])

    def grid(self, values: torch.Tensor) -> torch.Tensor:
        """Reshape per-image ``values`` (B, ...) of the placement part to (P, 2, Q, ...)."""
        v = values[self.placement_slice()]
        return v.reshape(self.n_patterns, 2, self.n_positions, *v.shape[1:])


def _texture(gen: torch.Generator, channels: int, h: int, w: int) -> torch.Tensor:
    coarse = torch.randn(1, channels, max(2, h // 4), max(2, w // 4), generator=gen)
    fine = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    fine = fine + 0.3 * torch.randn(channels, h, w, generator=gen)
    return (fine - fine.mean()) / fine.std().clamp_min(1e-6)


def _pattern_side(side: int) -> int:
    return max(3, side // 3)  # an object, not a detail


def min_side(stride: int, positions: int = 4) -> int:
    """The smallest input side on which :func:`make_probes` rolls a pattern to at least
    ``positions`` places at total stride ``stride`` (the positions are ``2 r + 1`` for a reach of
    ``r`` strides from the centre, ``r = floor(floor((side - side // 3) / 2) / stride)``).

    Example:
        >>> min_side(32)  # EfficientNet, ResNet: 5 positions from 191 px
        191
    """
    reach = -(-(positions - 1) // 2)
    side = 3
    while (side - _pattern_side(side)) // 2 < reach * stride:
        side += 1
    return side


def make_probes(input_size: tuple[int, int, int], n_patterns: int = 8, n_positions: int = 8,
                stride: tuple[int, int] = (1, 1), n_constants: int = 4, seed: int = 0) -> ProbeBatch:
    """Build the probe batch for ``input_size = (C, H, W)``; deterministic in ``seed``.

    The roll step is the largest multiple of ``stride`` (the network's total stride, rows and
    columns) that fits about ``n_positions`` placements between the two edges.
    Uses its own ``torch.Generator``: the global RNG state is not touched.
    """
    c, h, w = input_size
    if n_constants % 2 or n_constants < 2:
        raise ValueError(f"n_constants must be an even number >= 2, got {n_constants}")
    if n_patterns < 2 or n_positions < 2:
        raise ValueError("n_patterns and n_positions must be >= 2")
    ph, pw = _pattern_side(h), _pattern_side(w)
    contrast = math.sqrt(h * w / (ph * pw))  # image std about 1, like a normalised input
    room = ((h - ph) // 2, (w - pw) // 2)  # how far the texture can move from the centre
    step = tuple(max(s, 2 * r // (n_positions - 1) // s * s) for r, s in zip(room, stride))
    reach = min(r // s for r, s in zip(room, step))
    if reach < 1:
        raise ValueError(f"input size {h}x{w} is too small to move content by the network's "
                         f"total stride {tuple(stride)}")
    shifts = range(-reach, reach + 1)
    n_positions = len(shifts)
    gen = torch.Generator().manual_seed(seed)
    levels = torch.randn(n_constants // 2, c, 1, 1, generator=gen)
    levels = levels * torch.where(levels.mean(dim=1, keepdim=True) < 0, -1.0, 1.0)  # bright first
    constants = torch.cat([levels, -levels]).expand(n_constants, c, h, w)

    def rolled(side_h: int, side_w: int, gain: float) -> list[torch.Tensor]:
        canvas = 0.1 * torch.randn(c, h, w, generator=gen)
        top, left = (h - side_h) // 2, (w - side_w) // 2
        canvas[:, top:top + side_h, left:left + side_w] = _texture(gen, c, side_h, side_w) * gain
        return [torch.roll(canvas, k * shift, dims=dim)
                for dim, shift in ((-2, step[0]), (-1, step[1])) for k in shifts]

    scale = rolled(max(3, h // 8), max(3, w // 8), 1.0)
    placements = [image for _ in range(n_patterns) for image in rolled(ph, pw, contrast)]
    images = torch.cat([constants, torch.stack(scale), torch.stack(placements)])

    frac = 0.5 + torch.tensor(shifts, dtype=torch.float32) * step[0] / h
    distances = torch.minimum(frac, 1 - frac)
    return ProbeBatch(images.contiguous(), n_constants, n_patterns, n_positions, distances, len(scale))
