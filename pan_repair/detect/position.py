"""The position score's statistic: eta^2 of a channel's pooled response over the rolls of the
base images, and the same on the border-free (circular) twin, which shares the model's stride
aliasing but has no border (see :mod:`.detector`)."""
from __future__ import annotations

import torch
from torch import nn

from ..layers.module_state import device_dtype, structural_copy
from ..layers.padding_switch import convert_padding
from .forward import run_model
from .probes import RollGrid
from .recorder import inspection

#: a twin whose pooled responses move over the rolls by less than this share of the model's own
#: spread of responses (per channel) is roll-invariant: its eta^2 is below 1e-6
_INVARIANT = 1e-3


def roll_eta2(pooled: torch.Tensor, grid: RollGrid, layers: list[int] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """eta^2 per axis (2, C) of the roll, and the mean response with the object nearest an edge
    minus centred, per axis (2, C). A channel whose responses vary by less than ``1e-6`` of the
    layer's most varying channel is flat (rounding noise): eta^2 = 0. ``layers``: the widths of
    the layers whose channels ``pooled`` holds side by side (default: one layer)."""
    g = grid.grid(pooled.detach().cpu()).double()     # (P, 2, Q, C), scores live on the CPU
    grand = g.mean(dim=(0, 2), keepdim=True)
    total = (g - grand).pow(2).sum(dim=(0, 2))        # (2, C)
    by_position = g.mean(dim=0)                       # (2, Q, C)
    between = grid.n_patterns * (by_position - grand[0]).pow(2).sum(dim=1)
    widths = torch.tensor(layers or [total.shape[1]])
    owner = torch.arange(len(widths)).repeat_interleave(widths)  # each channel's layer
    layer_peak = total.new_zeros(len(widths)).scatter_reduce(0, owner, total.amax(dim=0), "amax")
    flat = total <= 1e-12 * layer_peak[owner].clamp_min(1e-300)
    eta2 = torch.where(flat, 0.0, between / total.clamp_min(1e-300))
    d = grid.distances
    near, far = d == d.min(), d == d.max()
    edge_minus_centre = by_position[:, near].mean(1) - by_position[:, far].mean(1)
    return eta2.float().clamp(0, 1), edge_minus_centre.float()


def layer_eta2(responses: dict[str, torch.Tensor], grid: RollGrid) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """:func:`roll_eta2` of every layer's pooled responses (N, C), all layers in one call (each
    channel's figures are its own; only the flat-channel floor is per layer)."""
    if not responses:
        return {}
    widths = [r.shape[1] for r in responses.values()]
    eta2, edge = roll_eta2(torch.cat([r.detach().cpu() for r in responses.values()], dim=1), grid, widths)
    return dict(zip(responses, zip(eta2.split(widths, dim=1), edge.split(widths, dim=1))))


def _invariant(pooled: torch.Tensor, n_positions: int, scale: torch.Tensor) -> bool:
    """Responses (2 * Q, C) of one base image rolled along both axes do not move with the roll
    beyond ``_INVARIANT`` times ``scale`` (C,), the model's own spread of responses, plus rounding
    (``1e-5`` of the layer's largest response)."""
    r = pooled.reshape(2, n_positions, -1).double()
    spread = (r.amax(dim=1) - r.amin(dim=1)).amax(dim=0)
    return bool((spread <= _INVARIANT * scale.double() + 1e-5 * r.abs().amax()).all())


def border_free_twin(model: nn.Module) -> nn.Module | None:
    """The model with circular padding everywhere and the same (shared) weights; None if the
    model pads nothing a switch could change (then it is its own twin)."""
    twin = structural_copy(model)
    summary = convert_padding(twin, "circular")
    return twin if summary.changed else None


def twin_eta2(model: nn.Module, grid: RollGrid, responses: dict[str, torch.Tensor], feeds_bn: dict[str, nn.Module],
              input_size: tuple[int, ...], memory_format: torch.memory_format
              ) -> tuple[dict[str, torch.Tensor] | None, bool]:
    """eta^2 (2, C) per conv of the border-free twin on ``grid`` (None: the model is its own twin);
    and whether the twin ran on all of it (False: rolls on the stride grid and the twin exactly
    roll-invariant on the first base image, eta^2 = 0). ``responses``: per conv, the model's own
    pooled responses over ``grid`` (N, C); their std per channel is the scale of invariance."""
    names = list(responses)
    twin = border_free_twin(model)
    if twin is None:
        return None, False
    device, dtype = device_dtype(model)
    q = grid.n_positions
    if grid.on_stride:  # rolls off the stride grid move even a circular network: no invariance to check for
        with inspection(twin, feeds_bn=feeds_bn, n_scale=0) as rec:
            run_model(twin, grid.images[: 2 * q].to(device, dtype), input_size, memory_format)
        first = {n: rec.stats[n].response() for n in names if rec.stats[n].response() is not None}
        if all(_invariant(r, q, responses[n].std(dim=0)) for n, r in first.items()):
            return {n: torch.zeros(2, r.shape[1]) for n, r in first.items()}, False
    with inspection(twin, feeds_bn=feeds_bn, n_scale=0) as rec:
        run_model(twin, grid.images.to(device, dtype), input_size, memory_format)
    twin_responses = {n: rec.stats[n].response() for n in names if rec.stats[n].response() is not None}
    return {n: eta2 for n, (eta2, _) in layer_eta2(twin_responses, grid).items()}, True
