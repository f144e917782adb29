"""Switch the padding of a model's layers to reflect, replicate, circular or partial.

:func:`convert_padding` replaces, in place and atomically, every padded layer of a
model (or the named ones) by a layer that pads its input explicitly with the new
mode; :func:`converted_copy` does it on a copy. The replacements keep the
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

What each layer type becomes:

* ``nn.Conv2d`` (any padding, any groups), timm's ``Conv2dSame``/``Conv2dSameExport``
  -> :class:`PaddedConv2d`; ``StdConv2d``/``StdConv2dSame`` -> :class:`PaddedStdConv2d`;
  ``ScaledStdConv2d``/``ScaledStdConv2dSame`` -> :class:`PaddedScaledStdConv2d` (these
  two keep weight standardisation; ``MixedConv2d`` is converted through its convs).
* ``nn.ZeroPad2d``/``nn.ConstantPad2d``/``nn.Reflection|Replication|CircularPad2d``
  -> :class:`Pad2d`. Not for ``"partial"``: the re-weighting belongs to the conv that
  consumes the pad, which a pad module cannot know; such layers are skipped.
* ``nn.AvgPool2d`` with padding -> :class:`PaddedAvgPool2d`, or for ``"partial"``
  ``nn.AvgPool2d(count_include_pad=False)``; timm's ``AvgPool2dSame`` ->
  :class:`PaddedAvgPool2d`. Not with ``ceil_mode`` (its last window may start in the
  padding, so explicit padding changes the output size) nor ``divisor_override``.
* ``nn.MaxPool2d``/``MaxPool2dSame`` pad ``-inf``, which never wins a max: skipped.
* timm's ``CondConv2d`` and other ``nn.Conv2d`` subclasses: not supported, skipped.

Padding written inside a custom module's ``forward`` (e.g. timm's ``BlurPool2d``)
is not a layer and is not switched. A replaced layer's forward hooks, pruning masks
(``torch.nn.utils.prune``, e.g. :func:`~pan_repair.prune_pans`), ``weight_norm`` and
``spectral_norm`` are carried over (the same hooks and tensors); ``torch.nn.utils.parametrize``
changes a layer's type, which is then not supported. :func:`pan_repair.layers.layer_padding` describes converted layers.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterable, Iterator, NamedTuple

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
from timm.layers.pool2d_same import AvgPool2dSame

from .layers import (
    Padding,
    _same_pads,
    effective_weight,
    layer_padding,
    pad_module_padding,
    unsupported_layers,
)
from .module_state import structural_copy
from .report import PanReport

__all__ = [
    "MODES",
    "Change",
    "ConversionSummary",
    "Pad2d",
    "PaddedAvgPool2d",
    "PaddedConv2d",
    "PaddedScaledStdConv2d",
    "PaddedStdConv2d",
    "Skip",
    "convert_padding",
    "converted_copy",
]

#: Padding modes :func:`convert_padding` switches to.
MODES = ("reflect", "replicate", "circular", "partial")

#: A 1x1 input gets a dynamic "same" layer's largest padding, (k - 1) * d per axis;
#: static layers ignore the size.
_PROBE_HW = (1, 1)


def _check_mode(mode: str, modes: tuple[str, ...] = MODES) -> str:
    if mode not in modes:
        raise ValueError(f"unknown padding mode {mode!r}; valid modes: {', '.join(modes)}")
    return mode


def _wrap(x: torch.Tensor, pads: tuple[int, ...]) -> torch.Tensor:
    """Circular padding of any size: ``out[i, j] = x[(i - top) mod H, (j - left) mod W]``."""
    left, right, top, bottom = pads
    h, w = x.shape[-2:]
    rows = torch.arange(-top, h + bottom, device=x.device) % h
    cols = torch.arange(-left, w + right, device=x.device) % w
    return x.index_select(-2, rows).index_select(-1, cols)


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
    dynamic "same" padding computed from each input's size (as timm's ``Conv2dSame``).

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
    ``sum(x_zero_padded) / V``. Padding is explicit, so with ``ceil_mode`` a last
    window starting in the padding is kept (``nn.AvgPool2d`` drops it).
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


#: The forward-hook registries of ``nn.Module`` (pruning, weight_norm and spectral_norm are hooks).
_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
               "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


def _adopt(new: nn.Module, old: nn.Module) -> nn.Module:
    """Give ``new`` the tensors of ``old`` (the same objects: parameters, buffers, and tensors a
    forward pre-hook computes, e.g. the ``weight`` of ``torch.nn.utils.prune``, ``weight_norm``
    or ``spectral_norm``), its forward hooks and its training mode."""
    for name in [n for n in new._parameters if n not in old._parameters]:
        del new._parameters[name]  # e.g. ``weight``, which pruning turns into ``weight_orig``
    for name, param in old._parameters.items():
        new.register_parameter(name, param)
    for name, buf in old._buffers.items():
        new.register_buffer(name, buf, persistent=name not in old._non_persistent_buffers_set)
    for name, value in vars(old).items():
        if isinstance(value, torch.Tensor):
            setattr(new, name, value)
    for registry in _HOOK_DICTS:
        getattr(new, registry).update(getattr(old, registry))
    if new.state_dict().keys() != old.state_dict().keys():
        raise RuntimeError(f"{type(new).__name__} is not state-dict compatible with {type(old).__name__}")
    return new.train(old.training)


def _convert_conv(conv: nn.Conv2d, mode: str) -> nn.Module | _Leave:
    cls = _CONV_TARGETS.get(type(conv))
    if cls is None:
        return _Leave(f"{type(conv).__name__} is not a Conv2d type pan_repair knows", unsupported=True)
    same_pad = getattr(conv, "same_pad", isinstance(conv, (Conv2dSame, Conv2dSameExport)))
    with torch.device("meta"):  # no allocation or init: parameters come from `conv`
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                  padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                  bias=conv.bias is not None, padding_mode=mode, same_pad=same_pad)
    for attr in ("eps", "scale"):  # weight standardisation constants
        if hasattr(conv, attr):
            setattr(new, attr, getattr(conv, attr))
    return new


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
    if padding.mode == mode:
        return _Leave(f"already {mode}")
    if isinstance(layer, nn.MaxPool2d):
        return _Leave("pads -inf, which never wins a max")
    if isinstance(layer, nn.Conv2d):
        return _convert_conv(layer, mode)
    if isinstance(layer, Pad2d) or pad_module_padding(layer) is not None:
        if mode == "partial":
            return _Leave("partial padding re-weights the outputs of the conv that consumes "
                          "the pad; a pad module cannot", unsupported=True)
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


def _pan_layers(model: nn.Module, found: dict[str, nn.Module], report: PanReport) -> tuple[list[str], list[Skip]]:
    """The padded layers holding PANs in ``report``, and the PAN layers that pad nothing."""
    modules = dict(model.named_modules())
    foreign = [n for n in report.by_layer() if n not in modules]
    if foreign:
        raise ValueError(f"report does not fit the model (another model's?): no layer {', '.join(map(repr, foreign))}")
    names = [n for n in report.by_layer() if n in found]
    skipped = [Skip(n, "holds PANs but its padding cannot be switched") for n in report.by_layer() if n not in found]
    return names, skipped


def convert_padding(model: nn.Module, mode: str, layers: Iterable[str] | PanReport | None = None) -> ConversionSummary:
    """Switch the padding of every padded layer of ``model``, of the named ``layers``, or of the
    layers holding PANs (``layers`` a :class:`~pan_repair.report.PanReport` of ``model``) to
    ``mode`` (one of :data:`MODES`), in place.

    A converted layer pads with content, so it has no border PANs of its own any more
    (:func:`~pan_repair.find_pans` scores its border 0). Channels may still encode position
    (reflect and replicate padding leak it, the detector's ``position`` kind), and PAN layers
    that pad nothing (1x1 convs) inherit theirs from upstream: those are listed in ``skipped``.

    Atomic: arguments and layers are validated and all replacements built before the
    model is touched. Raises ValueError for an unknown mode, names not in the model,
    and requested layers that do not pad or cannot be switched. Layers without
    padding are left alone; padded layers left as they are are listed in
    ``skipped`` with the reason (and, when ``layers`` is None, timm's ``CondConv2d``).
    The model itself must be a container of layers, not a layer.
    """
    _check_mode(mode)
    if layer_padding(model, _PROBE_HW) is not None:
        raise ValueError(f"model is itself a padding layer ({type(model).__name__}); "
                         "wrap it, e.g. in nn.Sequential")
    found = dict(_padding_layers(model))
    summary = ConversionSummary(mode)
    named = layers is not None and not isinstance(layers, PanReport)
    if isinstance(layers, PanReport):
        names, summary.skipped = _pan_layers(model, found, layers)
    else:
        names = list(found) if layers is None else _requested(model, found, layers)
    new_by_id: dict[int, nn.Module] = {}
    unsupported = []
    for name in names:
        layer = found[name]
        new = _convert(layer, mode)
        if isinstance(new, nn.Module):
            new = _adopt(new, layer)
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
    _swap(model, new_by_id)
    return summary


def converted_copy(model: nn.Module, mode: str, layers: Iterable[str] | PanReport | None = None) -> nn.Module:
    """An independent copy of ``model`` with its padding switched to ``mode``; ``model`` is
    untouched (e.g. to measure how much a model relies on its padding). The copy is structural
    (:func:`~pan_repair.module_state.structural_copy`), so it also works mid-training, on pruning
    masks, ``weight_norm`` and ``spectral_norm``, which ``copy.deepcopy`` cannot copy."""
    model = structural_copy(model, share=False)
    convert_padding(model, mode, layers)
    return model
