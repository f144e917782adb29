"""Padding knowledge of every supported layer type, in one place.

A convolution's border behaviour is fully described by :class:`Padding`: how many
rows/columns are added on each side (``pads`` in :func:`torch.nn.functional.pad`
order ``(left, right, top, bottom)``), with which ``mode`` and constant ``value``.
Some layers pad statically (``nn.Conv2d``), some dynamically from the input size
(timm's TF-style "same" layers). :func:`conv_padding` answers for all of them, and
:func:`effective_weight` gives the kernel a layer really applies (timm's
weight-standardised convs rescale theirs in ``forward``).
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from timm.layers import (
    Conv2dSame,
    CondConv2d,
    ScaledStdConv2d,
    ScaledStdConv2dSame,
    StdConv2d,
    StdConv2dSame,
)
from timm.layers.conv2d_same import Conv2dSameExport
from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

from .module_state import device_dtype, eval_mode

__all__ = [
    "BatchNormPairing",
    "PadTracker",
    "blank_forward",
    "Padding",
    "conv_bn_pairs",
    "conv_layers",
    "conv_padding",
    "effective_weight",
    "layer_padding",
    "pad_module_padding",
    "pool_padding",
    "unsupported_layers",
    "trained_bns",
    "untrained_bn",
    "BORDER_MODES",
]

#: Padding modes that put a border the content does not have (a frame of constants).
BORDER_MODES = ("zeros", "constant")

_DYNAMIC_SAME = (Conv2dSame, Conv2dSameExport)
_STD_SAME = (StdConv2dSame, ScaledStdConv2dSame)


@dataclass(frozen=True)
class Padding:
    """How a layer pads its input.

    Attributes:
        pads: ``(left, right, top, bottom)`` in input pixels.
        mode: ``"zeros"``, ``"constant"``, ``"reflect"``, ``"replicate"``, ``"circular"`` or
            ``"partial"`` (zeros, border outputs re-weighted by window area / valid area).
        value: fill value for ``"constant"`` (0 for ``"zeros"``; ``-inf`` for max pooling).
    """

    pads: tuple[int, int, int, int]
    mode: str = "zeros"
    value: float = 0.0

    @property
    def is_padded(self) -> bool:
        return any(p > 0 for p in self.pads)

    @property
    def makes_border(self) -> bool:
        """True when the padding is a finite constant frame, i.e. can create border detectors
        (a -inf frame never wins a max)."""
        return self.is_padded and self.mode in BORDER_MODES and math.isfinite(self.value)


def _same_pads(hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
               dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """TF "SAME": total = max((ceil(n/s)-1)*s + (k-1)*d + 1 - n, 0); the extra pixel goes right/bottom."""
    totals = [
        max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        for n, k, s, d in zip(hw, kernel, stride, dilation)
    ]
    ph, pw = totals
    return (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)


def conv_padding(conv: nn.Conv2d, input_hw: tuple[int, int]) -> Padding:
    """The padding ``conv`` applies to an input of spatial size ``input_hw`` (H, W)."""
    if hasattr(conv, "input_padding"):  # pan_repair's converted layers describe themselves
        return conv.input_padding(input_hw)
    if isinstance(conv, _DYNAMIC_SAME) or (isinstance(conv, _STD_SAME) and conv.same_pad):
        pads = _same_pads(input_hw, conv.kernel_size, conv.stride, conv.dilation)
        static = tuple(conv._reversed_padding_repeated_twice)
        pads = tuple(a + b for a, b in zip(pads, static))
        return Padding(pads, "zeros")
    pads = tuple(int(p) for p in conv._reversed_padding_repeated_twice)
    return Padding(pads, conv.padding_mode)


def pad_module_padding(module: nn.Module) -> Padding | None:
    """Padding of an explicit padding module (``nn.ZeroPad2d``, ``nn.ConstantPad2d``,
    ``nn.ReflectionPad2d``, ``nn.ReplicationPad2d``, ``nn.CircularPad2d``), else None."""
    kinds = {
        nn.ZeroPad2d: "zeros",
        nn.ConstantPad2d: "constant",
        nn.ReflectionPad2d: "reflect",
        nn.ReplicationPad2d: "replicate",
        nn.CircularPad2d: "circular",
    }
    for cls, mode in kinds.items():
        if type(module) is cls:
            pads = tuple(int(p) for p in module.padding)
            value = float(getattr(module, "value", 0.0))
            if mode == "constant" and value == 0.0:
                mode = "zeros"
            return Padding(pads, mode, value)
    return None


def effective_weight(conv: nn.Conv2d) -> torch.Tensor:
    """The kernel ``conv`` really applies: W, or for weight-standardised convs
    ``gain * scale * (W - mean(W)) / sqrt(var(W) + eps)`` per output channel."""
    if isinstance(conv, (StdConv2d, StdConv2dSame, ScaledStdConv2d, ScaledStdConv2dSame)):
        scaled = isinstance(conv, (ScaledStdConv2d, ScaledStdConv2dSame))
        gain = (conv.gain * conv.scale).view(-1) if scaled else None
        w = F.batch_norm(conv.weight.reshape(1, conv.out_channels, -1), None, None,
                         weight=gain, training=True, momentum=0.0, eps=conv.eps)
        return w.reshape_as(conv.weight)
    return conv.weight


def conv_layers(model: nn.Module) -> Iterator[tuple[str, nn.Conv2d]]:
    """All 2-D convolutions of ``model`` (every ``nn.Conv2d`` subclass), by qualified name."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            yield name, module


def unsupported_layers(model: nn.Module) -> list[str]:
    """Names of convolution-like layers pan_repair cannot analyse (e.g. timm's ``CondConv2d``)."""
    return [name for name, m in model.named_modules() if isinstance(m, CondConv2d)]


def pool_padding(pool: nn.Module, input_hw: tuple[int, int]) -> Padding | None:
    """The padding a pooling layer applies to an input of size ``input_hw``, else None.

    ``nn.AvgPool2d`` pads zeros that count in the mean (mode ``"zeros"``; also with
    ``divisor_override``, whose fixed divisor counts them) or, with
    ``count_include_pad=False``, are left out of it (mode ``"partial"``: the mean of
    the valid pixels). timm's ``AvgPool2dSame`` pads zeros explicitly (``"zeros"``).
    ``nn.MaxPool2d`` and timm's ``MaxPool2dSame`` pad ``-inf`` (``"constant"``), which
    never wins a max: a harmless frame.
    """
    if isinstance(pool, (AvgPool2dSame, MaxPool2dSame)):
        dilation = _pair(pool.dilation) if isinstance(pool, MaxPool2dSame) else (1, 1)
        pads = _same_pads(input_hw, _pair(pool.kernel_size), _pair(pool.stride), dilation)
    elif isinstance(pool, (nn.AvgPool2d, nn.MaxPool2d)):
        ph, pw = _pair(pool.padding)
        pads = (pw, pw, ph, ph)
    else:
        return None
    if isinstance(pool, nn.MaxPool2d):
        return Padding(pads, "constant", -math.inf)
    counted = (isinstance(pool, AvgPool2dSame) or pool.count_include_pad
               or pool.divisor_override is not None)
    return Padding(pads, "zeros" if counted else "partial")


def layer_padding(module: nn.Module, input_hw: tuple[int, int]) -> Padding | None:
    """The padding any layer applies to an input of size ``input_hw``: a module that
    declares it with an ``input_padding(input_hw)`` method (pan_repair's converted
    layers, see :mod:`pan_repair.layers.padding_switch`), a conv, a pad module or a pool.
    None for modules that do not pad by themselves."""
    if hasattr(module, "input_padding"):
        return module.input_padding(input_hw)
    if isinstance(module, nn.Conv2d):
        return conv_padding(module, input_hw)
    return pad_module_padding(module) or pool_padding(module, input_hw)


class PadTracker:
    """The padding each convolution really gets during forward passes: its own, or, for an
    unpadded conv fed directly by a padding module (``nn.ZeroPad2d`` before a ``padding=0`` conv,
    as some ports do), that module's padding and input. Forward hooks on every padding module of
    ``model``; :meth:`remove` detaches them."""

    def __init__(self, model: nn.Module) -> None:
        self._outputs: dict[int, tuple[weakref.ref, Padding, torch.Tensor]] = {}
        self._handles = [m.register_forward_hook(self._hook) for m in model.modules()
                         if pad_module_padding(m) is not None]

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self._outputs[id(output)] = (weakref.ref(output), pad_module_padding(module), inputs[0])

    def resolve(self, conv: nn.Conv2d, x: torch.Tensor) -> tuple[Padding, torch.Tensor]:
        """``(padding, input)`` of ``conv`` called on ``x``: ``conv_padding`` and ``x``, or the
        padding module's padding and unpadded input when ``x`` is its output."""
        padding = conv_padding(conv, tuple(x.shape[-2:]))
        source = self._outputs.pop(id(x), None)
        if source is not None and source[0]() is x and not padding.is_padded:
            return source[1], source[2]
        return padding, x

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._outputs.clear()


BatchNorm = nn.modules.batchnorm._BatchNorm


def untrained_bn(bn: BatchNorm) -> bool:
    """Running statistics still at their initial values (mean 0, var 1), or none: they say nothing
    (:func:`trained_bns` of one)."""
    return id(bn) not in trained_bns([bn])


def trained_bns(bns: Iterable[BatchNorm]) -> set[int]:
    """The ``id`` of each of the BatchNorms among ``bns`` with running statistics that are not
    :func:`untrained_bn`, read with one device-to-host copy (on a GPU, one synchronisation for all)."""
    bns = [bn for bn in bns if bn.running_mean is not None and bn.running_var is not None]
    if not bns:
        return set()
    device = bns[0].running_var.device
    var = torch.cat([bn.running_var.detach().reshape(-1).to(device, torch.float32) for bn in bns])
    mean = torch.cat([bn.running_mean.detach().reshape(-1).to(device, torch.float32) for bn in bns])
    owner = torch.arange(len(bns)).repeat_interleave(torch.tensor([bn.running_var.numel() for bn in bns]))
    moved = ((var != 1) | (mean != 0)).float()  # per element: off its initial value
    changed = torch.zeros(len(bns), device=device).index_add_(0, owner.to(device), moved).tolist()
    return {id(bn) for bn, n in zip(bns, changed) if n > 0}


class BatchNormPairing:
    """Forward hooks that pair each 2-D convolution with the BatchNorm its output feeds: the
    BatchNorm whose input *is* that conv's output tensor (identity, not equality), over whatever
    forward passes run while attached. Nothing in the model changes; :meth:`remove` (or leaving
    the ``with`` block) removes the hooks.

    Use it inside a forward pass you run anyway (the detector's and the regulariser's probe
    passes), or through :func:`conv_bn_pairs` for one blank pass.

    Attributes:
        pairs: conv name -> name of the first BatchNorm its output fed.
        bns: conv name -> that BatchNorm module.

    Args:
        model: the model whose convs and BatchNorms (``nn.modules.batchnorm._BatchNorm``
            subclasses, e.g. timm's ``BatchNormAct2d``) are hooked.
        convs: names of the convs to pair (default: all of :func:`conv_layers`).
        on_pair: optional ``on_pair(conv_name, bn, bn_input, bn_output)``, called in the
            BatchNorm's forward hook at every pairing (every call, every forward).
    """

    def __init__(self, model: nn.Module, convs: Iterable[str] | None = None,
                 on_pair: Callable[[str, nn.Module, torch.Tensor, torch.Tensor], None] | None = None) -> None:
        self.pairs: dict[str, str] = {}
        self.bns: dict[str, nn.Module] = {}
        self.on_pair = on_pair
        self._outputs: dict[int, tuple[weakref.ref, str]] = {}
        wanted = None if convs is None else set(convs)
        self._handles = [conv.register_forward_hook(self._conv_hook(name))
                         for name, conv in conv_layers(model) if wanted is None or name in wanted]
        self._handles += [module.register_forward_hook(self._bn_hook(name))
                          for name, module in model.named_modules() if isinstance(module, BatchNorm)]

    def _conv_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            self._outputs[id(output)] = (weakref.ref(output), name)
        return hook

    def _bn_hook(self, bn_name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0] if inputs else None
            entry = self._outputs.get(id(x))
            if entry is None or entry[0]() is not x:
                return
            name = entry[1]
            if name not in self.pairs:
                self.pairs[name], self.bns[name] = bn_name, module
            if self.on_pair is not None:
                self.on_pair(name, self.bns[name], x, output)
        return hook

    def clear(self) -> None:
        """Forget the conv outputs seen so far (the pairs found are kept)."""
        self._outputs.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._outputs.clear()

    def __enter__(self) -> "BatchNormPairing":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def conv_bn_pairs(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, str]:
    """Conv name -> name of the BatchNorm whose input *is* that conv's output (see
    :class:`BatchNormPairing`), from one eval-mode forward pass of one blank image of
    ``input_size = (C, H, W)`` without gradients. Every module's mode is restored and the hooks
    are removed after, also on error.

    Raises:
        ValueError: the model cannot run on ``input_size``.
    """
    with BatchNormPairing(model) as pairing:
        blank_forward(model, input_size)
    return dict(pairing.pairs)


def blank_forward(model: nn.Module, input_size: tuple[int, ...]) -> None:
    """One forward pass of one blank (zero) image of ``input_size`` in eval mode without
    gradients; every module's mode restored. ``ValueError`` if the model cannot run on it."""
    device, dtype = device_dtype(model)
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, *input_size, device=device, dtype=dtype))
    except RuntimeError as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"the model cannot run on input size {tuple(input_size)}: {first}") from None
