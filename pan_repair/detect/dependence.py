"""Model-level padding dependence: how much the outputs move when every padding becomes
replicate, and each channel's first-order share of it (see :mod:`.detector`)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.border_geometry import padding_effect_parts
from ..layers.module_state import device_dtype, eval_mode, structural_copy
from ..layers.padding import PadTracker, conv_layers
from ..layers.padding_switch import convert_padding
from ..metrics.functional import padding_reliance
from .forward import output_tensors, run_model
from .recorder import to_host

#: images of the padding-dependence pass (it runs forward and backward)
DEPENDENCE_IMAGES = 8


def _is_logits(t: torch.Tensor) -> bool:
    return t.ndim == 2 and t.shape[1] > 1


@dataclass
class Dependence:
    output_shift: float
    flip_rate: float | None
    attribution: dict[str, torch.Tensor] = field(default_factory=dict)  # conv name -> (C,) a_c
    images: int = 0
    per_output: list[tuple[float, float | None]] = field(default_factory=list)  # models with several outputs


def padding_dependence(model: nn.Module, images: torch.Tensor, input_size: tuple[int, ...],
                       memory_format: torch.memory_format = torch.contiguous_format) -> Dependence:
    """Output shift / flip rate against the replicate-padded twin, and each channel's first-order
    part of it (see the module docstring)."""
    device, dtype = device_dtype(model)
    x = images.to(device, dtype)
    effects: dict[str, list[tuple[slice, slice, torch.Tensor]]] = {}
    outputs: dict[str, torch.Tensor] = {}
    pads = PadTracker(model)

    def hook(name):
        def fn(conv, inputs, output):
            if name in outputs:
                return None
            padding, xin = pads.resolve(conv, inputs[0])
            if not padding.makes_border:
                return None
            with torch.no_grad():
                effects[name] = padding_effect_parts(xin, conv, padding)
            outputs[name] = output
            return output.clone()  # in-place layers downstream must not modify what we differentiate by
        return fn

    handles = [conv.register_forward_hook(hook(name)) for name, conv in conv_layers(model)]
    try:
        with eval_mode(model), torch.enable_grad():
            out = output_tensors(run_model(model, x.requires_grad_(True), input_size, memory_format))
            if not out:
                raise ValueError("the model's output holds no floating tensor")
            objective = sum(F.log_softmax(t.float(), dim=1).max(dim=1).values.sum() if _is_logits(t)
                            else 0.5 * t.float().pow(2).sum() / max(1, t[0].numel()) for t in out)
            names = [n for n in outputs if outputs[n].requires_grad]
            grads = torch.autograd.grad(objective, [outputs[n] for n in names], allow_unused=True) if names else []
    finally:
        for handle in handles:
            handle.remove()
        pads.remove()
    attribution = {n: (sum((g[..., rows, cols] * d).sum(dim=(0, 2, 3)) for rows, cols, d in effects[n]).abs()
                       / len(x)).float()
                   for n, g in zip(names, grads)
                   if g is not None and all(g[..., rows, cols].shape == d.shape for rows, cols, d in effects[n])}
    attribution = dict(zip(attribution, to_host(list(attribution.values()))))
    twin = structural_copy(model)
    convert_padding(twin, "replicate")
    with eval_mode(twin), torch.no_grad():
        switched = output_tensors(run_model(twin, x.detach(), input_size, memory_format))
    per_output = []
    for a, b in zip(out, switched):
        a, b = a.detach().float(), b.float()
        if _is_logits(a):
            r = padding_reliance(a, b)
            per_output.append((float(r["output_shift"]), float(r["flip_rate"])))
        else:
            per_output.append((float((a - b).norm() / a.norm().clamp_min(1e-12)), None))
    flips = [f for _, f in per_output if f is not None]
    return Dependence(max(s for s, _ in per_output), max(flips) if flips else None, attribution, len(x),
                       per_output if len(per_output) > 1 else [])
