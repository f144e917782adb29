"""Plots of a :class:`~pan_repair.detect.report.PanReport` (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from ..layers.module_state import device_dtype, eval_mode  # noqa: E402
from .report import Pan, PanReport  # noqa: E402

__all__ = ["border_response_maps", "plot_report"]


@torch.no_grad()
def border_response_maps(model: nn.Module, pans: list[Pan], input_size: tuple[int, int, int],
                         level: float = 1.0) -> list[torch.Tensor]:
    """Each PAN's output map for a uniform image of value ``level`` minus the map's centre value.

    On a uniform input the interior is flat, so what remains is the border response (H', W').
    The model is left as found (modes restored, hooks removed).
    """
    module_of = dict(model.named_modules())
    wanted = {p.layer for p in pans}
    outputs: dict[str, torch.Tensor] = {}
    handles = [module_of[name].register_forward_hook(
        lambda m, i, o, name=name: outputs.__setitem__(name, o.detach().float()))
        for name in wanted]
    device, dtype = device_dtype(model)
    try:
        with eval_mode(model):
            model(torch.full((1, *input_size), level, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    maps = []
    for pan in pans:
        fmap = outputs[pan.layer][0, pan.channel]
        h, w = fmap.shape
        maps.append((fmap - fmap[h // 2, w // 2]).cpu())
    return maps


def plot_report(report: PanReport, path: str | Path, model: nn.Module | None = None, n_maps: int = 6) -> Path:
    """PNG: PANs per layer (stacked by kind) and, given the ``model``, the border-response maps
    of the ``n_maps`` strongest border PANs."""
    strongest = report.strongest(n_maps, kind="border") if model is not None else []
    fig = plt.figure(figsize=(12, 7 if strongest else 4.5), constrained_layout=True)
    grid = fig.add_gridspec(2 if strongest else 1, max(1, len(strongest)))
    ax = fig.add_subplot(grid[0, :])
    names = [layer.name for layer in report.layers]
    by_layer = report.by_layer()
    border = [sum(p.kind == "border" for p in by_layer.get(n, [])) for n in names]
    position = [sum(p.kind == "position" for p in by_layer.get(n, [])) for n in names]
    x = range(len(names))
    ax.bar(x, border, label="border detectors", color="tab:red")
    ax.bar(x, position, bottom=border, label="position encoders", color="tab:blue")
    ax.set_xticks(list(x), names, rotation=90, fontsize=6)
    ax.set_ylabel("PANs")
    ax.set_title(f"{report.count} PANs in {report.total_filters} filters ({100 * report.fraction:.2f}%)")
    ax.legend()
    if strongest:
        for i, (pan, fmap) in enumerate(zip(strongest, border_response_maps(model, strongest, report.input_size))):
            sub = fig.add_subplot(grid[1, i])
            lim = float(fmap.abs().max()) or 1.0
            sub.imshow(fmap, cmap="coolwarm", vmin=-lim, vmax=lim)
            sub.set_title(f"{pan.layer}[{pan.channel}]\n{'+'.join(pan.sides)} {pan.score:.1f}", fontsize=7)
            sub.axis("off")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
