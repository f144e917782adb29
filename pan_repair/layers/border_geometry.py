"""Where a padded convolution's border lies: the geometry shared by the detector
(:mod:`pan_repair.detect.detector`) and the penalty (:mod:`pan_repair.repair.regularizer`).

All coordinates are in the *unpadded* input: row/column ``-1`` is the first padded line.
For each side, the padding's own effect on the outermost output line is
``D = conv(pad_constant(strip)) - conv(pad_replicate(strip))`` over a strip of the input just
wide enough for that line (:func:`border_windows`, :func:`strip`); the bias cancels.
:func:`border_effects` computes it for all four sides, differentiably.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .padding import Padding, effective_weight

__all__ = ["strip", "clean_range", "clean_count", "side_windows", "border_windows", "border_effects", "padding_effect",
           "padding_effect_parts", "SIDE_ORDER"]

#: order of the sides in :func:`border_windows` and in every per-side (4, C) tensor
SIDE_ORDER = ("top", "bottom", "left", "right")

Window = tuple[int, int]


def strip(x: torch.Tensor, rows: Window, cols: Window, padding: Padding) -> torch.Tensor:
    """``pad_constant(x) - pad_replicate(x)`` over the window ``rows x cols`` (unpadded coordinates)."""
    h, w = x.shape[-2:]
    (r0, r1), (c0, c1) = rows, cols
    part = x[..., max(r0, 0):min(r1, h), max(c0, 0):min(c1, w)]
    pads = (max(0, -c0), max(0, c1 - w), max(0, -r0), max(0, r1 - h))
    return F.pad(part, pads, value=padding.value) - F.pad(part, pads, mode="replicate")


def _clean_bounds(size: int, kernel: int, stride: int, dilation: int, before: int) -> tuple[int, int]:
    span = dilation * (kernel - 1) + 1
    return -(-before // stride), (size + before - span) // stride


def clean_range(size: int, kernel: int, stride: int, dilation: int, before: int, after: int) -> slice:
    """Output indices along one axis whose windows touch no padding (all of them if none do)."""
    first, last = _clean_bounds(size, kernel, stride, dilation, before)
    n_out = (size + before + after - dilation * (kernel - 1) - 1) // stride + 1
    return slice(first, last + 1) if first <= last else slice(0, n_out)


def clean_count(size: int, kernel: int, stride: int, dilation: int, before: int) -> int:
    """How many output indices along one axis have windows that touch no padding (0 if none)."""
    first, last = _clean_bounds(size, kernel, stride, dilation, before)
    return max(0, last - first + 1)


def side_windows(size: int, kernel: int, stride: int, dilation: int, before: int, after: int
                 ) -> tuple[Window | None, Window | None]:
    """Input windows (unpadded coordinates) of the first and last output line, along one axis;
    None where that line does not reach the padding. A window lying wholly in the padding is
    widened into the input by whole strides, so the wanted line stays the first/last output."""
    span = dilation * (kernel - 1) + 1
    n_out = (size + before + after - span) // stride + 1
    first = last = None
    if before > 0:
        end = span - before
        if end <= 0:
            end += stride * math.ceil((1 - end) / stride)
        first = (-before, end)
    start = (n_out - 1) * stride - before
    if after > 0 and start + span > size:
        end = start + span
        if start >= size:
            start -= stride * math.ceil((start - size + 1) / stride)
        last = (start, end)
    return first, last


def border_windows(size: tuple[int, int], conv: nn.Conv2d, padding: Padding
                   ) -> list[tuple[Window | None, Window | None, tuple]]:
    """Per side (:data:`SIDE_ORDER`): ``(rows, cols, line)`` for an input of ``size = (h, w)``:
    the input window (None on a side whose outermost output line touches no padding) and the
    index ``(row, col)`` of that outermost line, corners excluded (they belong to two sides), in
    the output of ``conv`` (no padding) applied to the window."""
    h, w = size
    k, s, d = conv.kernel_size, conv.stride, conv.dilation
    left, right, top, bottom = padding.pads
    top_w, bottom_w = side_windows(h, k[0], s[0], d[0], top, bottom)
    left_w, right_w = side_windows(w, k[1], s[1], d[1], left, right)
    full_rows, full_cols = (-top, h + bottom), (-left, w + right)
    inner_cols = clean_range(w, k[1], s[1], d[1], left, right)
    inner_rows = clean_range(h, k[0], s[0], d[0], top, bottom)
    return [(top_w, full_cols, (0, inner_cols)), (bottom_w, full_cols, (-1, inner_cols)),
            (full_rows, left_w, (inner_rows, 0)), (full_rows, right_w, (inner_rows, -1))]


def border_effects(x: torch.Tensor, conv: nn.Conv2d, padding: Padding) -> list[torch.Tensor | None]:
    """Per side (:data:`SIDE_ORDER`): the padding's own effect ``D`` (N, C_out, L) on the outermost
    output line of ``conv`` applied to ``x`` (N, C_in, H, W) padded by ``padding`` (corners
    excluded; ``L`` the line's length), None where that line touches no padding. Differentiable in
    ``x`` and the weights. Sides whose strips have one shape (top and bottom, left and right,
    usually) share one convolution."""
    weight = effective_weight(conv)
    n = len(x)
    out: list[torch.Tensor | None] = [None] * 4
    groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor, tuple]]] = {}
    for i, (rows, cols, line) in enumerate(border_windows(tuple(x.shape[-2:]), conv, padding)):
        if rows is not None and cols is not None:
            part = strip(x, rows, cols, padding)
            groups.setdefault(tuple(part.shape), []).append((i, part, line))
    for members in groups.values():
        strips = torch.cat([part for _, part, _ in members]) if len(members) > 1 else members[0][1]
        d = F.conv2d(strips, weight, None, conv.stride, 0, conv.dilation, conv.groups)
        for k, (i, _, (row, col)) in enumerate(members):
            out[i] = d[k * n:(k + 1) * n, :, row, col]
    return out


def padding_effect(x: torch.Tensor, conv: nn.Conv2d, padding: Padding) -> torch.Tensor:
    """The padding's own effect over the whole output (N, C_out, H', W') of ``conv`` applied to
    ``x`` padded by ``padding``: ``conv(pad_constant(x)) - conv(pad_replicate(x))`` (the bias
    cancels; 0 off the border bands). Differentiable in ``x`` and the weights."""
    h, w = x.shape[-2:]
    left, right, top, bottom = padding.pads
    frame = strip(x, (-top, h + bottom), (-left, w + right), padding)  # the whole input: its padded frame
    return F.conv2d(frame, effective_weight(conv), None, conv.stride, 0, conv.dilation, conv.groups)


#: a strip costs oneDNN about twice as much per output as the whole convolution
#: (benchmarks/results/scan_speed.md), so the bands are computed as strips only where they are
#: less than this share of the output
_BAND_SHARE = 0.5


def padding_effect_parts(x: torch.Tensor, conv: nn.Conv2d, padding: Padding
                         ) -> list[tuple[slice, slice, torch.Tensor]]:
    """:func:`padding_effect` where it can be non-zero, as ``(rows, cols, D)`` pieces of the
    output (N, C_out, H', W'): the bands of output lines whose windows touch the padding (top and
    bottom at full width, left and right between them), each the convolution of a strip of the
    frame just wide enough for it. One piece, the whole output, where the bands are at least half
    of it (small maps), a band's window lies wholly in the padding, a pad is negative (crops) or no
    output line reaches the padding (a stride that skips it). For any ``g`` of the
    output's shape, ``sum over pieces of <g[..., rows, cols], D>`` equals ``<g, padding_effect(x)>``."""
    h, w = x.shape[-2:]
    left, right, top, bottom = padding.pads
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    n_rows, n_cols = (h + top + bottom - span_h) // sh + 1, (w + left + right - span_w) // sw + 1
    rows, cols = clean_range(h, kh, sh, dh, top, bottom), clean_range(w, kw, sw, dw, left, right)
    # every window pads along an axis (clean_range then returns all lines), or a pad crops
    whole = (min(padding.pads) < 0 or (rows == slice(0, n_rows) and bool(top or bottom))
             or (cols == slice(0, n_cols) and bool(left or right)))
    if not whole:
        (r0, r1), (c0, c1) = (rows.start, rows.stop), (cols.start, cols.stop)
        bands = [((0, r0), (0, n_cols)), ((r1, n_rows), (0, n_cols)), ((r0, r1), (0, c0)), ((r0, r1), (c1, n_cols))]
        bands = [(rb, cb) for rb, cb in bands if rb[0] < rb[1] and cb[0] < cb[1]]
        windows = [((rb[0] * sh - top, (rb[1] - 1) * sh - top + span_h),
                    (cb[0] * sw - left, (cb[1] - 1) * sw - left + span_w)) for rb, cb in bands]
        area = sum((rb[1] - rb[0]) * (cb[1] - cb[0]) for rb, cb in bands)
        whole = (not bands or area >= _BAND_SHARE * n_rows * n_cols
                 or not all(r[1] > 0 and r[0] < h and c[1] > 0 and c[0] < w for r, c in windows))
    if whole:
        return [(slice(None), slice(None), padding_effect(x, conv, padding))]
    weight = effective_weight(conv)
    return [(slice(*rb), slice(*cb), F.conv2d(strip(x, r, c, padding), weight, None, conv.stride, 0, conv.dilation,
                                              conv.groups)) for (rb, cb), (r, c) in zip(bands, windows)]
