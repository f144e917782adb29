"""Switch the padding of a model's layers to reflect, replicate, circular, partial or full.

:func:`convert_padding` replaces, in place and atomically, every padded layer of a
model (or the named ones) by a layer that pads its input explicitly with the new
mode; :func:`converted_copy` does it on an independent copy. The replacements keep the
original's parameters (the same tensors, as ``nn.SyncBatchNorm.convert_sync_batchnorm``
does), so state dicts load both ways, and its training mode.

Modes, for a window of ``A`` taps of which ``V`` fall on real (not padded) pixels:

* ``"reflect"``, ``"replicate"``: as :func:`torch.nn.functional.pad`. Reflect needs
  the padding smaller than the input side; on an input too small for it a layer
  pads with replicate instead and warns once.
* ``"circular"``: the input repeated periodically, ``x[i mod H, j mod W]``; unlike
  ``F.pad`` this works for padding larger than the input.
* ``"partial"``: partial-convolution padding (Liu et al. 2018):
  ``conv(x_zero_padded, W) * A / V + b``; an average pool takes the mean of the
  ``V`` valid pixels (``count_include_pad=False``).
* ``"full"``: full convolution (F-Conv, Kayhan & van Gemert, CVPR 2020): zeros, ``d * (k - 1)``
  on every side of each axis (``d`` dilation, ``k`` kernel; TF-"same" padding replaced), so every
  input pixel meets every tap of the kernel; a conv's output grows by ``d * (k - 1)`` per axis at
  stride 1 (``floor((n + d(k - 1) - 1) / s) + 1`` at stride ``s``), and so does every map after it.
  Padded average pools get ``k - 1`` zeros a side (they are convolutions with a uniform kernel);
  unpadded layers (1x1 or "valid" convs) stay as they are.
  Layers that need a fixed spatial size downstream (a flatten into a ``Linear``, a pool whose
  fixed window covers the whole map, a positional embedding, a residual add of a grown and an
  ungrown map) are found first by a trial forward of a blank image at ``input_size`` on a twin
  (:func:`~pan_repair.layers.module_state.structural_copy`, shared tensors): such a model is refused,
  naming the layer, and left untouched. Global (adaptive) pooling heads are fine. F-Conv hides
  a border only where what lies beyond it looks like the padding: the input's where the canvas's
  background is 0, a later layer's where its response to empty canvas is 0 (no bias, no
  BatchNorm shift); otherwise ``relu(b)`` framed by the next layer's zeros is a new border, and a
  shortcut through it survives (``benchmarks/full_conv.py``).

**The detector on a full-convolution model.** A full layer pads zeros, and
:func:`~pan_repair.layers.layer_padding` says so (``Padding(pads=(d(k-1),) * 4, mode="zeros")``):
:func:`~pan_repair.find_pans` scores its border like any zero-padded layer's (on the outermost
output line, whose window holds ``k - 1`` padded lines and one line of the input), so channels that
respond to the zero frame are still reported as border PANs: F-Conv keeps a frame, what it removes
is the shortfall of taps at the border of the input. They are no evidence of a shortcut by
themselves: data-free probes have edges the frame shows, data on a black canvas may not. The position score is measured against the
circular twin of the layers' original padding (a full layer switched to another mode gets its
original padding back), which is exactly roll-invariant where strides divide the input.

What each layer type becomes:

* ``nn.Conv2d`` (any padding, any groups), timm's ``Conv2dSame``/``Conv2dSameExport``
  -> :class:`PaddedConv2d`; ``StdConv2d``/``StdConv2dSame`` -> :class:`PaddedStdConv2d`;
  ``ScaledStdConv2d``/``ScaledStdConv2dSame`` -> :class:`PaddedScaledStdConv2d` (these
  two keep weight standardisation; ``MixedConv2d`` is converted through its convs).
* ``nn.ZeroPad2d``/``nn.ConstantPad2d``/``nn.Reflection|Replication|CircularPad2d``
  -> :class:`Pad2d`. Not for ``"partial"`` and ``"full"``: the re-weighting and the kernel
  belong to the conv that consumes the pad, which a pad module cannot know; such layers are skipped.
* ``nn.AvgPool2d`` with padding -> :class:`PaddedAvgPool2d`, or for ``"partial"``
  ``nn.AvgPool2d(count_include_pad=False)``; timm's ``AvgPool2dSame`` ->
  :class:`PaddedAvgPool2d`. Not with ``ceil_mode`` (its last window may start in the
  padding, so explicit padding changes the output size) nor ``divisor_override``.
* ``nn.MaxPool2d``/``MaxPool2dSame`` pad ``-inf``, which never wins a max, yet a window that
  straddles the border takes the max of fewer pixels: for ``"circular"`` (no border at all)
  they become :class:`PaddedMaxPool2d`; for the other modes (``"full"`` too) they are skipped.
* timm's ``CondConv2d`` and other ``nn.Conv2d`` subclasses: not supported, skipped.

Padding written inside a custom module's ``forward`` (e.g. timm's ``BlurPool2d``)
is not a layer and is not switched. Hooks registered on a replaced layer are not
carried over, except what computes a reparametrised weight (``torch.nn.utils.prune`` masks,
``weight_norm``, ``spectral_norm``, parametrizations): converted layers keep it.
:func:`pan_repair.layers.layer_padding` describes converted layers.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Iterable, Iterator, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from timm.layers import (
    Conv2dSame,
    ScaledStdConv2d,
    ScaledStdConv2dSame,
    StdConv2d,
    StdConv2dSame,
)
from timm.layers.conv2d_same import Conv2dSameExport
from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

from .padding import (
    Padding,
    _same_pads,
    effective_weight,
    layer_padding,
    pad_module_padding,
    unsupported_layers,
)
from .module_state import carry_reparametrizations, device_dtype, eval_mode, plain_type, structural_copy

__all__ = [
    "MODES",
    "Change",
    "ConversionSummary",
    "Pad2d",
    "PaddedAvgPool2d",
    "PaddedConv2d",
    "PaddedMaxPool2d",
    "PaddedScaledStdConv2d",
    "PaddedStdConv2d",
    "Skip",
    "convert_padding",
    "converted_copy",
]

class LayerReport(Protocol):
    """What ``layers=`` accepts besides layer names: a report of ``model`` whose :meth:`by_layer`
    maps layer names to their PANs (:class:`~pan_repair.detect.report.PanReport`). ``layers``
    sits below ``detect`` and does not import the report: it is recognised by that method."""

    def by_layer(self) -> dict: ...


def _is_report(layers: object) -> bool:
    return hasattr(layers, "by_layer")


#: Padding modes :func:`convert_padding` switches to.
MODES = ("reflect", "replicate", "circular", "partial", "full")

#: A 1x1 input gets a dynamic "same" layer's largest padding, (k - 1) * d per axis;
#: static layers ignore the size.
_PROBE_HW = (1, 1)


def _check_mode(mode: str, modes: tuple[str, ...] = MODES) -> str:
    if mode not in modes:
        raise ValueError(f"unknown padding mode {mode!r}; valid modes: {', '.join(modes)}")
    return mode


def _full_pads(kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """Full convolution's padding, ``d * (k - 1)`` on both sides of each axis: (left, right, top, bottom)."""
    (kh, kw), (dh, dw) = kernel, dilation
    return (dw * (kw - 1), dw * (kw - 1), dh * (kh - 1), dh * (kh - 1))


def _wrap(x: torch.Tensor, pads: tuple[int, ...]) -> torch.Tensor:
    """Circular padding of any size: ``out[i, j] = x[(i - top) mod H, (j - left) mod W]``, in
    ``x``'s memory format (``F.pad``'s circular mode returns NCHW; a depthwise convolution on CPU
    runs several times slower on it than on channels-last). Pads larger than the input wrap
    several times (index_select: ~20x slower than the convolution that follows)."""
    left, right, top, bottom = pads
    h, w = x.shape[-2:]
    if max(left, right) > w or max(top, bottom) > h:
        rows = torch.arange(-top, h + bottom, device=x.device) % h
        cols = torch.arange(-left, w + right, device=x.device) % w
        return x.index_select(-2, rows).index_select(-1, cols)
    if x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous():
        return F.pad(x, pads, mode="circular")
    out = torch.empty((*x.shape[:-2], h + top + bottom, w + left + right), dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last)
    body = out[..., top:top + h, :]
    body[..., left:left + w] = x
    if top:
        out[..., :top, left:left + w] = x[..., h - top:, :]
    if bottom:
        out[..., top + h:, left:left + w] = x[..., :bottom, :]
    if left:  # the corners come with the columns, from the rows just filled
        out[..., :left] = out[..., w:w + left]
    if right:
        out[..., left + w:] = out[..., left:left + right]
    return out


def _reflect_fits(hw: tuple[int, int], pads: tuple[int, ...]) -> bool:
    """Reflect padding needs each pad smaller than the side it reflects."""
    left, right, top, bottom = pads
    return max(left, right) < hw[1] and max(top, bottom) < hw[0]


class _ExplicitPadding:
    """Mixin: pads with ``self.padding_mode``; reflect falls back to replicate, with
    one warning per layer, on inputs not larger than the padding."""

    padding_mode: str
    #: Name of the layer in its model, for the warning (set by :func:`convert_padding`).
    layer_name: str = ""
    _fallback_warned: bool = False

    def _pad(self, x: torch.Tensor, pads: tuple[int, ...]) -> torch.Tensor:
        if min(pads) < 0:  # negative pads crop, as in F.pad; crop first, then pad
            x, pads = F.pad(x, [min(p, 0) for p in pads]), tuple(max(p, 0) for p in pads)
        mode = self.padding_mode
        if mode == "circular":
            return _wrap(x, pads)
        if mode == "full":
            return F.pad(x, pads)
        if mode == "reflect" and not _reflect_fits(tuple(x.shape[-2:]), pads):
            self._warn_fallback(tuple(x.shape[-2:]), pads)
            mode = "replicate"
        return F.pad(x, pads, mode=mode)

    def _warn_fallback(self, hw: tuple[int, int], pads: tuple[int, ...]) -> None:
        if not self._fallback_warned:
            self._fallback_warned = True
            warnings.warn(f"{self.layer_name or type(self).__name__}: reflect padding {tuple(pads)} "
                          f"needs an input larger than {hw}; padding with replicate instead", UserWarning)


class PaddedConv2d(_ExplicitPadding, nn.Conv2d):
    """``nn.Conv2d`` that pads explicitly with ``padding_mode`` (reflect, replicate,
    circular or partial), statically (``padding``) plus, with ``same_pad``, TF-style
    dynamic "same" padding computed from each input's size (as timm's ``Conv2dSame``);
    or, for ``"full"``, zeros ``d * (k - 1)`` a side instead of both (``padding`` and
    ``same_pad`` are kept for a switch to another mode).

    Partial: ``out = conv(x_zero_padded, W) * A / V + b`` with ``A = kh * kw`` and ``V``
    the taps of each window on real pixels. The applied kernel is
    :func:`pan_repair.layers.effective_weight` (weight standardisation in subclasses).
    ``**kwargs`` go to the base class (e.g. ``eps`` of the standardised convs).
    """

    def __init__(
            self,
            in_channels: int,
            out_channels: int,
            kernel_size: int | tuple[int, int],
            stride: int | tuple[int, int] = 1,
            padding: int | tuple[int, int] | str = 0,
            dilation: int | tuple[int, int] = 1,
            groups: int = 1,
            bias: bool = True,
            padding_mode: str = "reflect",
            same_pad: bool = False,
            device=None,
            dtype=None,
            **kwargs,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias, device=device, dtype=dtype,
                         **kwargs)
        self.padding_mode = _check_mode(padding_mode)  # nn.Conv2d does not know "partial"
        self.same_pad = same_pad

    def input_padding(self, input_hw: tuple[int, int]) -> Padding:
        if self.padding_mode == "full":
            return Padding(_full_pads(self.kernel_size, self.dilation), "zeros")
        pads = tuple(self._reversed_padding_repeated_twice)
        if self.same_pad:
            same = _same_pads(input_hw, self.kernel_size, self.stride, self.dilation)
            pads = tuple(a + b for a, b in zip(pads, same))
        return Padding(pads, self.padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = self.input_padding(x.shape[-2:]).pads
        weight = effective_weight(self)
        if self.padding_mode != "partial":
            return F.conv2d(self._pad(x, pads), weight, self.bias, self.stride, 0, self.dilation,
                            self.groups)
        out = F.conv2d(F.pad(x, pads), weight, None, self.stride, 0, self.dilation, self.groups)
        out = out * self._window_ratio(x, pads)
        return out if self.bias is None else out + self.bias.view(-1, 1, 1)

    def _window_ratio(self, x: torch.Tensor, pads: tuple[int, ...]) -> torch.Tensor:
        """``A / V`` per output position, shape (1, H_out, W_out)."""
        valid = F.pad(x.new_ones(1, *x.shape[-2:]), pads)
        taps = x.new_ones(1, 1, *self.kernel_size)
        valid = F.conv2d(valid, taps, stride=self.stride, dilation=self.dilation)
        return taps.numel() / valid.clamp(min=1)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + ", same_pad=True" if self.same_pad else s


class PaddedStdConv2d(PaddedConv2d, StdConv2d):
    """:class:`PaddedConv2d` with timm's weight standardisation:
    ``W' = (W - mean(W)) / sqrt(var(W) + eps)`` per output channel."""


class PaddedScaledStdConv2d(PaddedConv2d, ScaledStdConv2d):
    """:class:`PaddedConv2d` with timm's scaled weight standardisation:
    ``W' = gain * scale * (W - mean(W)) / sqrt(var(W) + eps)`` per output channel."""


class PaddedAvgPool2d(_ExplicitPadding, nn.Module):
    """Average pooling over an input padded explicitly with ``padding_mode``:
    ``padding`` (symmetric, per axis) plus, with ``same_pad``, TF-style "same"
    padding from each input's size (as timm's ``AvgPool2dSame``).

    Partial: the mean of the valid pixels of each window,
    ``sum(x_zero_padded) / V``. Full: zeros ``k - 1`` a side, counted in the mean
    (``padding`` and ``same_pad`` kept for a switch to another mode). Padding is explicit,
    so with ``ceil_mode`` a last window starting in the padding is kept (``nn.AvgPool2d``
    drops it).
    """

    def __init__(
            self,
            kernel_size: int | tuple[int, int],
            stride: int | tuple[int, int] | None = None,
            padding: int | tuple[int, int] = 0,
            ceil_mode: bool = False,
            padding_mode: str = "reflect",
            same_pad: bool = False,
    ):
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride if stride is not None else kernel_size)
        self.padding = _pair(padding)
        self.ceil_mode = ceil_mode
        self.padding_mode = _check_mode(padding_mode)
        self.same_pad = same_pad

    def input_padding(self, input_hw: tuple[int, int]) -> Padding:
        if self.padding_mode == "full":
            return Padding(_full_pads(self.kernel_size, (1, 1)), "zeros")
        ph, pw = self.padding
        pads = (pw, pw, ph, ph)
        if self.same_pad:
            same = _same_pads(input_hw, self.kernel_size, self.stride, (1, 1))
            pads = tuple(a + b for a, b in zip(pads, same))
        return Padding(pads, self.padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = self.input_padding(x.shape[-2:]).pads
        if self.padding_mode != "partial":
            return F.avg_pool2d(self._pad(x, pads), self.kernel_size, self.stride, 0, self.ceil_mode)
        valid = self._sum_pool(F.pad(x.new_ones(1, *x.shape[-2:]), pads))
        return self._sum_pool(F.pad(x, pads)) / valid.clamp(min=1)

    def _sum_pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, 0, self.ceil_mode, divisor_override=1)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}, padding_mode={self.padding_mode}, same_pad={self.same_pad}")


class PaddedMaxPool2d(_ExplicitPadding, nn.Module):
    """Max pooling over an input padded circularly: ``padding`` (symmetric, per axis) plus, with
    ``same_pad``, TF-style "same" padding from each input's size (as timm's ``MaxPool2dSame``)."""

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, dilation: int | tuple[int, int] = 1,
                 same_pad: bool = False) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride if stride is not None else kernel_size)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.padding_mode = "circular"
        self.same_pad = same_pad

    def input_padding(self, input_hw: tuple[int, int]) -> Padding:
        ph, pw = self.padding
        pads = (pw, pw, ph, ph)
        if self.same_pad:
            same = _same_pads(input_hw, self.kernel_size, self.stride, self.dilation)
            pads = tuple(a + b for a, b in zip(pads, same))
        return Padding(pads, self.padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pad(x, self.input_padding(x.shape[-2:]).pads)
        return F.max_pool2d(x, self.kernel_size, self.stride, 0, self.dilation)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, padding_mode=circular, same_pad={self.same_pad}")


class Pad2d(_ExplicitPadding, nn.Module):
    """Explicit padding by ``padding = (left, right, top, bottom)`` with ``padding_mode``
    (reflect, replicate or circular), tolerant of small inputs (see module docs)."""

    def __init__(self, padding: tuple[int, int, int, int], padding_mode: str = "reflect"):
        super().__init__()
        self.padding = tuple(padding)
        self.padding_mode = _check_mode(padding_mode, ("reflect", "replicate", "circular"))

    def input_padding(self, input_hw: tuple[int, int]) -> Padding:
        return Padding(self.padding, self.padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pad(x, self.padding)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, padding_mode={self.padding_mode}"


#: The converted class of each convertible conv type.
_CONV_TARGETS: dict[type, type[PaddedConv2d]] = {
    nn.Conv2d: PaddedConv2d,
    Conv2dSame: PaddedConv2d,
    Conv2dSameExport: PaddedConv2d,
    PaddedConv2d: PaddedConv2d,
    StdConv2d: PaddedStdConv2d,
    StdConv2dSame: PaddedStdConv2d,
    PaddedStdConv2d: PaddedStdConv2d,
    ScaledStdConv2d: PaddedScaledStdConv2d,
    ScaledStdConv2dSame: PaddedScaledStdConv2d,
    PaddedScaledStdConv2d: PaddedScaledStdConv2d,
}


class Change(NamedTuple):
    """A switched layer; ``old``/``new`` read ``"Type(mode)"``."""
    name: str
    old: str
    new: str


class Skip(NamedTuple):
    """A padded (or requested) layer left as it is, and why."""
    name: str
    reason: str


@dataclass
class ConversionSummary:
    """What :func:`convert_padding` did."""
    mode: str
    changed: list[Change] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)


@dataclass(frozen=True)
class _Leave:
    """Why a padded layer stays; ``unsupported``: it cannot be switched (an error if requested)."""
    reason: str
    unsupported: bool = False


def _adopt(new: nn.Module, old: nn.Module) -> nn.Module:
    """Give ``new`` the parameters of ``old`` (the same tensors), its reparametrisations (pruning
    masks, ``weight_norm``, ``spectral_norm``, parametrizations) and its training mode."""
    carry_reparametrizations(new, old)
    if new.state_dict().keys() != old.state_dict().keys():
        raise RuntimeError(f"{type(new).__name__} is not state-dict compatible with {type(old).__name__}")
    return new.train(old.training)


def _convert_conv(conv: nn.Conv2d, mode: str) -> nn.Module | _Leave:
    cls = _CONV_TARGETS.get(plain_type(conv))
    if cls is None:
        return _Leave(f"{plain_type(conv).__name__} is not a Conv2d type pan_repair knows", unsupported=True)
    same_pad = getattr(conv, "same_pad", isinstance(conv, (Conv2dSame, Conv2dSameExport)))
    with torch.device("meta"):  # no allocation or init: parameters come from `conv`
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                  padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                  bias=conv.bias is not None, padding_mode=mode, same_pad=same_pad)
    for attr in ("eps", "scale"):  # weight standardisation constants
        if hasattr(conv, attr):
            setattr(new, attr, getattr(conv, attr))
    return _adopt(new, conv)


def _convert_avg_pool(pool: nn.Module, mode: str) -> nn.Module | _Leave:
    if getattr(pool, "divisor_override", None) is not None:
        return _Leave("divisor_override fixes the divisor of a padded window", unsupported=True)
    same_pad = getattr(pool, "same_pad", isinstance(pool, AvgPool2dSame))
    args = (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode)
    if mode == "partial" and not same_pad:
        return nn.AvgPool2d(*args, count_include_pad=False).train(pool.training)
    if pool.ceil_mode and not same_pad:
        return _Leave("ceil_mode: the last window may start in the padding, so explicit padding "
                      "would change the output size", unsupported=True)
    return PaddedAvgPool2d(*args, padding_mode=mode, same_pad=same_pad).train(pool.training)


def _convert(layer: nn.Module, mode: str) -> nn.Module | _Leave | None:
    """The layer that pads like ``layer`` with ``mode``, why ``layer`` stays, or None if it
    pads nothing."""
    padding = layer_padding(layer, _PROBE_HW)
    if not padding.is_padded:
        return None
    if padding.mode == mode or getattr(layer, "padding_mode", None) == mode:
        return _Leave(f"already {mode}")
    if isinstance(layer, PaddedMaxPool2d):  # back to -inf padding, which every other mode equals for a max
        if layer.same_pad:
            return MaxPool2dSame(layer.kernel_size, layer.stride, layer.padding, layer.dilation).train(layer.training)
        return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, layer.dilation).train(layer.training)
    if isinstance(layer, nn.MaxPool2d):
        if mode != "circular":
            return _Leave("pads -inf, which never wins a max")
        if layer.ceil_mode:
            return _Leave("ceil_mode: the last window may start in the padding, so explicit padding "
                          "would change the output size", unsupported=True)
        same_pad = isinstance(layer, MaxPool2dSame)
        return PaddedMaxPool2d(layer.kernel_size, layer.stride, 0 if same_pad else layer.padding, layer.dilation,
                               same_pad).train(layer.training)
    if isinstance(layer, nn.Conv2d):
        return _convert_conv(layer, mode)
    if isinstance(layer, Pad2d) or pad_module_padding(layer) is not None:
        if mode == "partial":
            return _Leave("partial padding re-weights the outputs of the conv that consumes "
                          "the pad; a pad module cannot", unsupported=True)
        if mode == "full":
            return _Leave("full padding is d(k-1) of the conv that consumes the pad; a pad module "
                          "cannot know it", unsupported=True)
        return Pad2d(padding.pads, mode).train(layer.training)
    return _convert_avg_pool(layer, mode)


def _padding_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, layer)`` of the layers of ``model`` that may pad, as named by
    ``model.named_modules()``. A layer's own submodules are its internals (e.g.
    ``Conv2dSameExport.pad``) and are not listed."""
    inside = None
    for name, module in model.named_modules():
        if inside and name.startswith(inside):
            continue
        if name and layer_padding(module, _PROBE_HW) is not None:
            inside = name + "."
            yield name, module


def _requested(model: nn.Module, found: dict[str, nn.Module], layers: Iterable[str]) -> list[str]:
    if isinstance(layers, str):
        raise TypeError(f"layers must be an iterable of layer names, not the str {layers!r}")
    names = list(dict.fromkeys(layers))
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"layers not in the model: {', '.join(map(repr, missing))}")
    not_padding = [f"{n!r} ({type(modules[n]).__name__})" for n in names if n not in found]
    if not_padding:
        raise ValueError(f"not layers whose padding can be switched: {', '.join(not_padding)}")
    return names


def _swap(model: nn.Module, new_by_id: dict[int, nn.Module]) -> None:
    """Replace every reference to a converted module (shared ones too), through its parent."""
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if id(module) in new_by_id:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, new_by_id[id(module)])


def _pan_layers(model: nn.Module, found: dict[str, nn.Module], report: LayerReport) -> tuple[list[str], list[Skip]]:
    """The padded layers holding PANs in ``report``, and the PAN layers that pad nothing."""
    modules = dict(model.named_modules())
    foreign = [n for n in report.by_layer() if n not in modules]
    if foreign:
        raise ValueError(f"report does not fit the model (another model's?): no layer {', '.join(map(repr, foreign))}")
    names = [n for n in report.by_layer() if n in found]
    skipped = [Skip(n, "holds PANs but its padding cannot be switched") for n in report.by_layer() if n not in found]
    return names, skipped


def convert_padding(model: nn.Module, mode: str, layers: Iterable[str] | LayerReport | None = None,
                    input_size: Sequence[int] | None = None) -> ConversionSummary:
    """Switch the padding of every padded layer of ``model``, of the named ``layers``, or of the
    layers holding PANs (``layers`` a :class:`~pan_repair.detect.report.PanReport` of ``model``) to
    ``mode`` (one of :data:`MODES`), in place.

    A layer converted to reflect, replicate, circular or partial pads with content, so it has no
    border PANs of its own any more (:func:`~pan_repair.find_pans` scores its border 0); a full
    layer pads zeros and keeps a border score (module docstring). Channels may still encode position
    (reflect and replicate padding leak it, the detector's ``position`` kind), and PAN layers
    that pad nothing (1x1 convs) inherit theirs from upstream: those are listed in ``skipped``.

    ``input_size = (C, H, W)``: only for ``"full"``, the size of the trial forward that finds
    layers needing a fixed spatial size (default: timm's ``pretrained_cfg["input_size"]``).

    Atomic: arguments and layers are validated and all replacements built (and, for ``"full"``,
    tried) before the model is touched. Raises ValueError for an unknown mode, names not in the
    model, requested layers that do not pad or cannot be switched, and, for ``"full"``, a missing
    ``input_size`` or a layer that needs a fixed spatial size. Layers without
    padding are left alone; padded layers left as they are are listed in
    ``skipped`` with the reason (and, when ``layers`` is None, timm's ``CondConv2d``).
    The model itself must be a container of layers, not a layer.
    """
    _check_mode(mode)
    if layer_padding(model, _PROBE_HW) is not None:
        raise ValueError(f"model is itself a padding layer ({type(model).__name__}); "
                         "wrap it, e.g. in nn.Sequential")
    summary, new_by_id = _plan(model, mode, layers)
    if mode == "full" and new_by_id:
        _check_grown_maps(model, layers, _full_input_size(model, input_size))
    _swap(model, new_by_id)
    return summary


def _plan(model: nn.Module, mode: str, layers: Iterable[str] | LayerReport | None
          ) -> tuple[ConversionSummary, dict[int, nn.Module]]:
    """What :func:`convert_padding` would do, and the replacement of each layer to switch (by
    ``id``); raises for what it refuses. The model is not touched."""
    found = dict(_padding_layers(model))
    summary = ConversionSummary(mode)
    named = layers is not None and not _is_report(layers)
    if _is_report(layers):
        names, summary.skipped = _pan_layers(model, found, layers)
    else:
        names = list(found) if layers is None else _requested(model, found, layers)
    new_by_id: dict[int, nn.Module] = {}
    unsupported = []
    for name in names:
        layer = found[name]
        new = _convert(layer, mode)
        if isinstance(new, nn.Module):
            if isinstance(new, _ExplicitPadding):
                new.layer_name = name
            new_by_id[id(layer)] = new
            old_mode = layer_padding(layer, _PROBE_HW).mode
            summary.changed.append(Change(name, f"{type(layer).__name__}({old_mode})",
                                          f"{type(new).__name__}({mode})"))
        elif new is not None or layers is not None:
            leave = new or _Leave("pads nothing" if named else "holds PANs but pads nothing (inherited)")
            summary.skipped.append(Skip(name, leave.reason))
            if leave.unsupported and named:
                unsupported.append(f"{name!r} ({leave.reason})")
    if unsupported:
        raise ValueError(f"cannot switch to {mode!r}: {'; '.join(unsupported)}")
    if layers is None:
        summary.skipped += [Skip(n, "CondConv2d is not supported") for n in unsupported_layers(model)]
    return summary, new_by_id


def _full_input_size(model: nn.Module, input_size: Sequence[int] | None) -> tuple[int, ...]:
    """``input_size``, else timm's ``pretrained_cfg["input_size"]``; ValueError if neither."""
    size = input_size or (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    if size is None:
        raise ValueError("cannot switch to 'full' without input_size=(C, H, W): full convolution grows the "
                         "feature maps, and a trial forward must find layers that need a fixed size")
    return tuple(int(n) for n in size)


class _Trial(NamedTuple):
    """One blank forward: ``sizes``, name -> (input HW, output HW) of every module with 4-D input
    and output, in the order modules finished; ``failed``: the innermost module running when it
    raised and the error's first line, or None."""
    sizes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]
    failed: tuple[str, str] | None


def _trial(model: nn.Module, input_size: tuple[int, ...]) -> _Trial:
    """Run one blank image of ``input_size`` (eval mode, no gradients, modes restored) with hooks."""
    sizes, running = {}, []

    def enter(name: str):
        return lambda module, inputs: running.append(name)

    def leave(name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            running.pop()
            x = inputs[0] if inputs else None
            if isinstance(x, torch.Tensor) and isinstance(output, torch.Tensor) and x.dim() == output.dim() == 4:
                sizes[name] = (tuple(x.shape[-2:]), tuple(output.shape[-2:]))
        return hook

    modules = [(n, m) for n, m in model.named_modules() if n]
    handles = [m.register_forward_pre_hook(enter(n)) for n, m in modules]
    handles += [m.register_forward_hook(leave(n)) for n, m in modules]
    device, dtype = device_dtype(model)
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, *input_size, device=device, dtype=dtype))
        return _Trial(sizes, None)
    except Exception as err:  # noqa: BLE001 - any failure of the trial forward is the model's answer
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return _Trial(sizes, (running[-1] if running else "", first))
    finally:
        for handle in handles:
            handle.remove()


def _check_grown_maps(model: nn.Module, layers: Iterable[str] | LayerReport | None,
                      input_size: tuple[int, ...]) -> None:
    """ValueError naming the first layer that needs a fixed spatial size: it fails on the maps of
    a full-convolution twin, or it reduces a map larger than 1x1 to 1x1 in ``model`` but, in the
    twin, either not to 1x1 or with a window (``kernel_size``) smaller than the grown map."""
    before = _trial(model, input_size)
    if before.failed:
        raise ValueError(f"cannot switch to 'full': the model cannot run on input_size {input_size}: "
                         f"{before.failed[1]}")
    twin = structural_copy(model, share=True)
    _swap(twin, _plan(twin, "full", layers)[1])
    after = _trial(twin, input_size)
    modules = dict(model.named_modules())

    def layer(name: str) -> str:
        return f"layer {name!r} ({type(modules[name]).__name__})" if name else f"{type(model).__name__}.forward"

    if after.failed:
        name, error = after.failed
        raise ValueError(f"cannot switch to 'full': {layer(name)} needs a fixed spatial size and fails on the "
                         f"grown feature maps: {error}")
    for name, (hw_in, hw_out) in before.sizes.items():
        grown = after.sizes.get(name)
        if grown is None or hw_out != (1, 1) or hw_in == (1, 1):
            continue
        window = getattr(modules[name], "kernel_size", None)  # pools and convs; adaptive pools have none
        if grown[1] != (1, 1) or (window is not None and any(k < n for k, n in zip(_pair(window), grown[0]))):
            raise ValueError(f"cannot switch to 'full': {layer(name)} needs a fixed spatial size: it reduces the "
                             f"whole {hw_in} map to 1x1 but not the grown {grown[0]} map")


def converted_copy(model: nn.Module, mode: str, layers: Iterable[str] | LayerReport | None = None,
                   input_size: Sequence[int] | None = None) -> nn.Module:
    """An independent copy of ``model`` (:func:`~pan_repair.layers.module_state.structural_copy`, also
    mid-training) with its padding switched to ``mode`` (:func:`convert_padding`); ``model`` is
    untouched (e.g. to measure how much a model relies on its padding)."""
    model = structural_copy(model, share=False)
    convert_padding(model, mode, layers, input_size)
    return model
