"""Recipe: scan the bundled pretrained EfficientNet-Lite0 (or any timm model / ``module:factory``)
for PANs and record the report, its plot and the model's top-1 on the bundled photos.

Run: ``python recipes/scan_pretrained.py [--model resnet50] [--config recipes/configs/scan_pretrained.yaml]``
"""
from __future__ import annotations

import sys
from pathlib import Path

from pan_repair import find_pans
from pan_repair.model_spec import BUNDLED, load_model
from pan_repair.pipeline import Stage
from pan_repair.plotting import plot_report
from pan_repair.recipe_cli import run_recipe


def scan_pretrained(model: str = BUNDLED, weights: str | None = None, size: int = 224,
                    out_dir: str = "runs/scan_pretrained", n_patterns: int = 8) -> None:
    """Scan a model for PANs (data-free) and write results.json, pans.png.

    Args:
        model: timm model name, ``module:factory`` or ``lite0-pretrained``.
        weights: optional state dict file.
        size: probe image side (px).
        out_dir: output directory.
        n_patterns: probe textures.
    """
    net = load_model(model, weights)
    stage = Stage(Path(out_dir), "scan", group="scan_pretrained", recipe="scan_pretrained")
    report = find_pans(net, (3, size, size), n_patterns=n_patterns, progress=True)
    result = stage.record({}, [], report)
    plot_report(report, stage.dir / "pans.png", net)
    print(f"{report}\nresults: {stage.dir / 'results.json'}\nplot: {stage.dir / 'pans.png'}")
    return result


if __name__ == "__main__":
    sys.exit(run_recipe(scan_pretrained))
