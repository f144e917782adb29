"""Plots of a :class:`~pan_repair.detect.report.PanReport` (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from ..layers.border_geometry import padding_effect  # noqa: E402
from ..layers.module_state import device_dtype, eval_mode  # noqa: E402
from ..layers.padding import PadTracker  # noqa: E402
from .probes import calibration_images  # noqa: E402
from .report import Pan, PanReport  # noqa: E402

__all__ = ["border_response_maps", "plot_report"]


@torch.no_grad()
def border_response_maps(model: nn.Module, pans: list[Pan], input_size: tuple[int, int, int],
                         level: float = 1.0, data: Any = None, max_images: int = 16) -> list[torch.Tensor]:
    """Each PAN's padding effect over its whole output map (H', W'), in the conv's output units.

    ``D = conv(pad_constant(x)) - conv(pad_replicate(x))`` on the layer's own input ``x``
    (:func:`~pan_repair.layers.border_geometry.padding_effect`: what the border score measures on
    the outermost lines, 0 off the border bands), mean over up to ``max_images`` of ``data`` (a
    tensor, ``DataLoader`` or ``Dataset``, as :func:`~pan_repair.find_pans` takes it: pass the
    scan's data, and the maps show what its border scores read); without data, over one uniform
    image of value ``level``. A layer whose padding makes no border gives zeros. First layer,
    uniform ``v``: the top line is ``-v * sum(top row of taps)``. The model is left as found
    (modes restored, hooks removed).
    """
    x = torch.full((1, *input_size), level) if data is None else calibration_images(data, max_images)
    if tuple(x.shape[1:]) != tuple(input_size):
        raise ValueError(f"the data's images are {tuple(x.shape[1:])}, the maps are wanted at {tuple(input_size)}")
    module_of = dict(model.named_modules())
    wanted = {p.layer for p in pans}
    effects: dict[str, torch.Tensor] = {}
    tracker = PadTracker(model)

    def hook(name: str):
        def record(conv: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
            if name in effects:  # a conv called several times per forward: its first call
                return
            padding, layer_input = tracker.resolve(conv, inputs[0])
            if not padding.makes_border:
                effects[name] = torch.zeros(output.shape[1:]).float()
                return
            effects[name] = padding_effect(layer_input, conv, padding).float().mean(dim=0).cpu()
        return record

    handles = [module_of[name].register_forward_hook(hook(name)) for name in wanted]
    device, dtype = device_dtype(model)
    try:
        with eval_mode(model):
            model(x.to(device, dtype))
    finally:
        for handle in handles:
            handle.remove()
        tracker.remove()
    return [effects[pan.layer][pan.channel] for pan in pans]


def plot_report(report: PanReport, path: str | Path, model: nn.Module | None = None, n_maps: int = 6,
                data: Any = None) -> Path:
    """PNG: PANs per layer (stacked by kind) and, given the ``model``, the border-response maps
    (:func:`border_response_maps`, on ``data``: pass the scan's) of the ``n_maps``
    strongest border PANs."""
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
        maps = border_response_maps(model, strongest, report.input_size, data=data)
        for i, (pan, fmap) in enumerate(zip(strongest, maps)):
            sub = fig.add_subplot(grid[1, i])
            lim = float(fmap.abs().max()) or 1.0
            sub.imshow(fmap, cmap="coolwarm", vmin=-lim, vmax=lim)
            sub.set_title(f"{pan.layer}[{pan.channel}]\n{'+'.join(pan.sides)} {pan.score:.1f}", fontsize=7)
            sub.axis("off")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
