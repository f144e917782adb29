"""Recipe: scan the bundled pretrained EfficientNet-Lite0 (or any timm model / ``module:factory``)
for PANs and record the report and its plot. The bundled model is scanned on the photos bundled
with scikit-image (its own kind of data); others on ``data`` (a folder of pictures or a ``.pt``
tensor) if given, else data-free in their declared input convention.

Run: ``python recipes/scan_pretrained.py [--model resnet50] [--config recipes/configs/scan_pretrained.yaml]``
"""
from __future__ import annotations

import sys
from pathlib import Path

from pan_repair import find_pans
from pan_repair.data.image_files import load_images
from pan_repair.models.model_spec import BUNDLED, load_model
from pan_repair.experiments.pipeline import Stage
from pan_repair.detect.plotting import plot_report
from pan_repair.models.pretrained import sample_images
from pan_repair.detect.probes import resolve_convention
from pan_repair.experiments.recipe_cli import run_recipe


def scan_pretrained(model: str = BUNDLED, weights: str | None = None, size: int = 224,
                    out_dir: str = "runs/scan_pretrained", n_patterns: int = 8, data: str | None = None) -> None:
    """Scan a model for PANs and write results.json, pans.png.

    Args:
        model: timm model name, ``module:factory`` or ``lite0-pretrained``.
        weights: optional state dict file.
        size: image side (px).
        out_dir: output directory.
        n_patterns: probe images rolled across the input.
        data: images to scan on (default: the bundled photos for ``lite0-pretrained``, else none).
    """
    net = load_model(model, weights)
    stage = Stage(Path(out_dir), "scan", group="scan_pretrained", recipe="scan_pretrained")
    if data is not None:
        images = load_images(data, 3, (size, size), resolve_convention(net, 3))
    elif model == BUNDLED:
        images = sample_images(size)[0]
    else:
        images = None
    report = find_pans(net, None if images is not None else (3, size, size), data=images, n_patterns=n_patterns,
                       progress=True)
    result = stage.record({}, [], report)
    plot_report(report, stage.dir / "pans.png", net, data=images)
    print(f"{report}\nresults: {stage.dir / 'results.json'}\nplot: {stage.dir / 'pans.png'}")
    return result


if __name__ == "__main__":
    sys.exit(run_recipe(scan_pretrained))
