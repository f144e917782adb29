"""What a trained model remembers of its inputs: the mean pixel level of its training images,
implied by the running mean of the BatchNorm its stem convolution feeds. A data-free scan checks
the input convention it assumed against it (the probes' canvas is mid-grey, pixels 0.5): a model
trained on dark or light backgrounds, or with another normalisation, says so here, and the
probes follow it (:func:`stem_level`)."""
from __future__ import annotations

import torch
from torch import nn

from ..layers.module_state import device_dtype
from ..layers.padding import untrained_bn
from .probes import CANVAS, InputConvention

#: a data-free scan notes a mismatch, and probes at the implied level, when that level is this far
#: from the probes' mid-grey canvas (pixels in [0, 1]). Measured: digits canvases on black (0.04), on white (0.96), on
#: a noisy background (0.28) are all noted; the pretrained Lite0 in its own convention (0.46) is not
MISMATCH = 0.2
#: the words of the assumption that says the probes moved to the implied level (before the level)
CANVAS_NOTE = "the probes' canvas is at"


@torch.no_grad()
def implied_pixel_level(conv: nn.Module, bn: nn.Module, convention: InputConvention,
                        input_size: tuple[int, int, int]) -> tuple[float, float] | None:
    """``(u, r2)``: the pixel level ``u`` (one for all channels, pixels in [0, 1]) of images whose
    stem output averages ``bn``'s running mean, if the model's inputs are
    ``x_i = (u - mean_i) / std_i`` (``convention``); ``r2`` the fit's weighted R^2. None for an
    untrained BatchNorm or a stem output that does not depend on the level.

    Per output channel ``c``, images of mean level ``u`` (the same in expectation at every pixel)
    give a mean stem output ``y_c(u) = y0_c + sum_i x_i g_ic``, with ``y0`` the stem's mean output on
    a zero image and ``g_ic`` its mean extra output on a unit image of channel ``i`` (both over the
    output positions, padding included: what the running mean averaged). ``u`` minimises
    ``sum_c ((running_mean_c - y_c(u)) / sigma_c)^2``, ``sigma_c`` the running std."""
    if bn.running_mean is None or bn.running_var is None or untrained_bn(bn):
        return None
    c = input_size[0]
    probes = torch.cat([torch.zeros(1, c, *input_size[1:]), torch.eye(c).view(c, c, 1, 1).expand(c, c, *input_size[1:])])
    out = conv(probes.to(*device_dtype(conv))).double().mean(dim=(2, 3))  # (1 + C, C_out)
    y0, g = out[0], out[1:] - out[0]
    a = torch.tensor([1 / s for s in convention.std], dtype=torch.float64, device=g.device)
    b = torch.tensor([-m / s for m, s in zip(convention.mean, convention.std)], dtype=torch.float64, device=g.device)
    inv_sigma = (bn.running_var.double() + bn.eps).rsqrt()
    slope = (a @ g) * inv_sigma                                   # d y_c / d u, in running stds
    target = (bn.running_mean.double() - y0 - b @ g) * inv_sigma
    if float(slope.pow(2).sum()) <= 1e-12:
        return None
    u = float((slope * target).sum() / slope.pow(2).sum())
    total = (target - target.mean()).pow(2).sum()
    r2 = 1.0 - float((target - u * slope).pow(2).sum() / total) if float(total) > 0 else 1.0
    return u, r2


def stem_level(model: nn.Module, stem: str | None, feeds_bn: dict[str, nn.Module], convention: InputConvention,
               input_size: tuple[int, int, int]) -> tuple[float, str] | None:
    """Where the model's own statistics contradict the probes' mid-grey canvas
    (:func:`implied_pixel_level` ``u`` at least :data:`MISMATCH` from :data:`CANVAS`): the canvas
    level to probe at instead (``u`` clipped to [0, 1]) and the assumption the report records (it
    quotes the fit's R^2: a low one says no single level explains the stem's statistics, itself a
    sign of another convention). None where they agree or there is nothing to read."""
    if stem is None or stem not in feeds_bn:
        return None
    found = implied_pixel_level(model.get_submodule(stem), feeds_bn[stem], convention, input_size)
    if found is None:
        return None
    u, r2 = found
    if abs(u - CANVAS) < MISMATCH:
        return None
    level = min(max(u, 0.0), 1.0)
    return level, (f"the stem's BatchNorm ({stem}) implies training images averaging {u:.2f} in pixels under this "
                   f"convention (R^2 {r2:.2f}), unlike a mid-grey canvas ({CANVAS}): {CANVAS_NOTE} "
                   f"{level:.2f} and the border score is measured on the textured canvases, not on uniform images; "
                   "data-free scores remain an estimate: scan on a few of the model's own images (data=, CLI --data)")
