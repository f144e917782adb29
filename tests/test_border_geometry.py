"""border_effects: the padding's own effect on the four outermost output lines equals the full
convolution of the zero-padded input minus that of the replicate-padded one, read on those lines
(corners excluded), for random kernels, strides, dilations, groups and asymmetric pads."""
import pytest
import torch
import torch.nn.functional as F

from pan_repair.layers.border_geometry import border_effects, clean_range, padding_effect, padding_effect_parts
from pan_repair.layers.padding import Padding


def _reference(x, conv, padding):
    left, right, top, bottom = padding.pads
    pads = (left, right, top, bottom)
    d = (F.conv2d(F.pad(x, pads, value=padding.value), conv.weight, None, conv.stride, 0, conv.dilation, conv.groups)
         - F.conv2d(F.pad(x, pads, mode="replicate"), conv.weight, None, conv.stride, 0, conv.dilation, conv.groups))
    (k0, k1), (s0, s1), (d0, d1) = conv.kernel_size, conv.stride, conv.dilation
    h, w = x.shape[-2:]
    rows = clean_range(h, k0, s0, d0, top, bottom)
    cols = clean_range(w, k1, s1, d1, left, right)
    last_row = (d.shape[-2] - 1) * s0 - top + d0 * (k0 - 1) >= h
    last_col = (d.shape[-1] - 1) * s1 - left + d1 * (k1 - 1) >= w
    return [d[:, :, 0, cols] if top else None, d[:, :, -1, cols] if bottom and last_row else None,
            d[:, :, rows, 0] if left else None, d[:, :, rows, -1] if right and last_col else None]


def _cases(seed: int, n: int, min_side: int):
    """``n`` random (conv, x, padding): kernels, strides, dilations, groups, asymmetric pads and
    a random constant, in float64."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        r = lambda lo, hi: int(torch.randint(lo, hi, (), generator=gen))  # noqa: E731
        g = r(1, 3)
        conv = torch.nn.Conv2d(2 * g, 3 * g, (r(1, 6), r(1, 6)), (r(1, 4), r(1, 4)), 0, (r(1, 3), r(1, 3)), g).double()
        x = torch.randn(2, 2 * g, r(min_side, 20), r(min_side, 20), generator=gen, dtype=torch.float64)
        yield conv, x, Padding(tuple(r(0, 4) for _ in range(4)), "zeros", float(torch.randn((), generator=gen)))


@pytest.mark.parametrize("seed", range(4))
def test_border_effects_match_the_full_difference(seed):
    checked = 0
    for conv, x, padding in _cases(seed, 60, 4):
        try:
            expected = _reference(x, conv, padding)
        except RuntimeError:  # the kernel does not fit
            continue
        got = border_effects(x, conv, padding)
        for side, (e, o) in enumerate(zip(expected, got)):
            assert (e is None) == (o is None), (side, conv, padding)
            if e is not None:
                torch.testing.assert_close(o, e, rtol=0, atol=1e-10)
                checked += 1
    assert checked > 60


@pytest.mark.parametrize("seed", range(2))
def test_padding_effect_is_the_whole_difference_and_zero_off_the_border(seed):
    checked = 0
    for conv, x, padding in _cases(seed, 20, 8):
        left, right, top, bottom = padding.pads
        with_bias = (conv(F.pad(x, padding.pads, value=padding.value))  # the bias cancels
                     - conv(F.pad(x, padding.pads, mode="replicate")))
        d = padding_effect(x, conv, padding)
        assert torch.allclose(d, with_bias)
        (k0, k1), (s0, s1), (d0, d1) = conv.kernel_size, conv.stride, conv.dilation
        rows = clean_range(x.shape[-2], k0, s0, d0, top, bottom)
        cols = clean_range(x.shape[-1], k1, s1, d1, left, right)
        every_row, every_col = slice(0, d.shape[-2]), slice(0, d.shape[-1])  # also: every window touches
        if (rows != every_row or not (top or bottom)) and (cols != every_col or not (left or right)):
            assert torch.count_nonzero(d[:, :, rows, cols]) == 0
            checked += 1
    assert checked >= 5


@pytest.mark.parametrize("seed", range(3))
def test_padding_effect_parts_rebuild_the_whole_effect(seed):
    """The pieces, pasted into zeros, are the whole padding effect (they cover every non-zero
    position, each once), on random geometry and on large maps where the bands are strips."""
    gen = torch.Generator().manual_seed(100 + seed)
    cases = list(_cases(seed, 30, 4))
    for k, s, d in [(3, 1, 1), (7, 2, 1), (3, 2, 2), (5, 1, 1)]:  # large maps: thin bands, computed as strips
        conv = torch.nn.Conv2d(3, 4, k, s, 0, d).double()
        x = torch.randn(2, 3, 40, 33, generator=gen, dtype=torch.float64)
        cases.append((conv, x, Padding((d * (k - 1) // 2 + 1, d * (k - 1) // 2, d * (k - 1) // 2, 1), "zeros", 0.3)))
    cases.append((torch.nn.Conv2d(3, 4, 3).double(), torch.randn(2, 3, 30, 30, generator=gen, dtype=torch.float64),
                  Padding((-1, 2, 1, 1), "zeros", 0.0)))  # a crop: the whole output
    cases.append((torch.nn.Conv2d(3, 4, 3, 2).double(), torch.randn(2, 3, 9, 9, generator=gen, dtype=torch.float64),
                  Padding((0, 1, 0, 0), "zeros", 0.0)))  # no window reaches the padding: D is 0
    strips = 0
    for conv, x, padding in cases:
        try:
            expected = padding_effect(x, conv, padding)
        except RuntimeError:  # the kernel does not fit
            continue
        parts = padding_effect_parts(x, conv, padding)
        rebuilt = torch.zeros_like(expected)
        covered = torch.zeros(expected.shape[-2:], dtype=torch.int64)
        for rows, cols, piece in parts:
            rebuilt[..., rows, cols] += piece
            covered[rows, cols] += 1
        torch.testing.assert_close(rebuilt, expected, rtol=0, atol=1e-10)
        assert int(covered.max()) == 1
        strips += len(parts) > 1
    assert strips >= 4
