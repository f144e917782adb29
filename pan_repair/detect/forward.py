"""Running a model for a scan: the input check, the blank pre-pass (total stride, which convs feed
a BatchNorm), the fastest memory layout that gives the model's own outputs, and one forward with a
one-line error where the model cannot run on the input size."""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from ..layers.module_state import eval_mode
from ..layers.padding import BatchNormPairing, conv_layers


def output_tensors(out: Any) -> list[torch.Tensor]:
    """The floating tensors of a model output (a tensor, or a tuple/list/dict of them)."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    return [t for item in items for t in output_tensors(item)]


def run_model(model: nn.Module, images: torch.Tensor, input_size: tuple[int, ...],
              memory_format: torch.memory_format = torch.contiguous_format) -> Any:
    try:
        return model(images.contiguous(memory_format=memory_format))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"the model cannot run on input size {tuple(input_size)}: {first}") from None


class Prepass(NamedTuple):
    """What one blank forward tells a scan (see :func:`prepass`)."""

    stride: tuple[int, int]
    feeds_bn: dict[str, nn.Module]
    #: the first conv that reads the model's input tensor itself (None: none does)
    stem: str | None


def prepass(model: nn.Module, input_size: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Prepass:
    """One blank forward: the total stride (largest input/output size ratio over the convs, rows
    and columns), the convs that feed a BatchNorm directly (conv name -> BatchNorm, see
    :class:`~pan_repair.layers.BatchNormPairing`) and the stem, the first conv whose input *is*
    the model's input."""
    sizes: list[tuple[int, int]] = []
    x = torch.zeros(1, *input_size, device=device, dtype=dtype)
    stem: list[str] = []

    def conv_hook(name: str):
        def hook(module, inputs, output):
            sizes.append(tuple(output.shape[-2:]))
            if inputs and inputs[0] is x and not stem:
                stem.append(name)
        return hook

    handles = [conv.register_forward_hook(conv_hook(name)) for name, conv in conv_layers(model)]
    pairing = BatchNormPairing(model)
    try:
        with eval_mode(model), torch.no_grad():
            run_model(model, x, input_size)
    finally:
        for handle in handles:
            handle.remove()
        pairing.remove()
    h, w = input_size[1:]
    spatial = [s for s in sizes if min(s) > 1] or [(h, w)]  # convs after global pooling see 1x1
    stride = (max(1, max(round(h / s[0]) for s in spatial)), max(1, max(round(w / s[1]) for s in spatial)))
    return Prepass(stride, pairing.bns, stem[0] if stem else None)


def scan_memory_format(model: nn.Module, input_size: tuple[int, ...], device: torch.device,
                       dtype: torch.dtype) -> torch.memory_format:
    r"""Channels-last on the CPU, where oneDNN's depthwise and padded convolutions run 1.1-1.8x
    faster in it (``benchmarks/scan_speed.py``), if the model gives the same outputs in it on one
    random image (to ``1e-3`` of their largest value): not a model that ``view``\ s its activations
    (it raises) or reads their memory as contiguous (it answers otherwise). Contiguous elsewhere."""
    if device.type != "cpu" or len(input_size) != 3:
        return torch.contiguous_format
    x = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    try:
        with eval_mode(model), torch.no_grad():
            plain = output_tensors(model(x))
            last = output_tensors(model(x.contiguous(memory_format=torch.channels_last)))
    except Exception:  # noqa: BLE001 - any failure keeps the model's own layout; the scan's run reports real errors
        return torch.contiguous_format
    same = len(plain) == len(last) and all(
        a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(a.abs().max())))
        for a, b in zip(plain, last))
    return torch.channels_last if same else torch.contiguous_format


def total_stride(model: nn.Module, input_size: tuple[int, ...], device: torch.device,
                 dtype: torch.dtype) -> tuple[int, int]:
    """The network's total stride (rows, columns), see :func:`prepass`."""
    return prepass(model, input_size, device, dtype)[0]


#: the smallest side on which an object (a third of the side, at least 3 px) can move
MIN_SIDE = 5


def check_input(model: nn.Module, input_size: tuple[int, ...]) -> None:
    if len(input_size) != 3 or any(int(v) <= 0 for v in input_size):
        raise ValueError(f"input_size must be (channels, height, width), got {tuple(input_size)}")
    if min(input_size[1:]) < MIN_SIDE:
        raise ValueError(f"input size {input_size[1]}x{input_size[2]} is too small to move content across it: "
                         f"each side must be at least {MIN_SIDE} px")
    convs = list(conv_layers(model))
    if not convs:
        raise ValueError("the model has no 2-D convolution (nn.Conv2d) to analyse")
    name, first = convs[0]
    if first.in_channels != input_size[0]:
        raise ValueError(f"input_size has {input_size[0]} channels but the first convolution "
                         f"'{name}' expects {first.in_channels}")
