"""``pan-repair compare``: a local HTML report (with PNG plots) comparing recipe runs side by side:
PANs per layer, the emergence timeline, border accuracy curves, padding reliance and accuracy."""
from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .results import RunResult  # noqa: E402

__all__ = ["build_report"]

_METRICS = ("val/acc", "swapped/acc", "val/border_gap", "val/padding_flip", "val/padding_shift",
            "pan/count", "pan/fraction", "time/seconds")


def _pans_per_layer(runs: list[RunResult], path: Path) -> Path | None:
    reports = [(r.name, r.pan_report()) for r in runs]
    reports = [(n, rep) for n, rep in reports if rep is not None]
    if not reports:
        return None
    layers = list(dict.fromkeys(layer.name for _, rep in reports for layer in rep.layers))
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(layers) * len(reports)), 4), constrained_layout=True)
    width = 0.8 / len(reports)
    for i, (name, rep) in enumerate(reports):
        by_layer = rep.by_layer()
        ax.bar([j + i * width for j in range(len(layers))], [len(by_layer.get(l, [])) for l in layers],
               width, label=f"{name} ({rep.count})")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))], layers, rotation=90, fontsize=7)
    ax.set_ylabel("PANs")
    ax.set_title("PANs per layer")
    ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _line_plot(runs: list[RunResult], path: Path, series, title: str, xlabel: str, ylabel: str) -> Path | None:
    lines = [(r.name, *series(r)) for r in runs]
    lines = [line for line in lines if line[1]]
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for name, xs, ys in lines:
        ax.plot(xs, ys, marker="o", label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _timeline(r: RunResult) -> tuple[list, list]:
    scans = [h for h in r.history if not h.get("failed")]
    return [h["epoch"] for h in scans], [h["count"] for h in scans]


def _curve(r: RunResult) -> tuple[list, list]:
    points = [(d, a) for d, a in enumerate(r.border_curve) if a is not None]
    return [d for d, _ in points], [a for _, a in points]


def _bars(runs: list[RunResult], path: Path) -> Path:
    keys = [k for k in ("val/acc", "swapped/acc", "val/padding_flip", "val/border_gap")
            if any(k in r.metrics for r in runs)]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.2 * max(1, len(keys)), 3.5),
                             constrained_layout=True, squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.bar([r.name for r in runs], [r.metrics.get(key, float("nan")) for r in runs], color="tab:gray")
        ax.set_title(key)
        ax.tick_params(axis="x", rotation=45, labelsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def build_report(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` (and its PNGs) comparing the runs; returns the HTML path."""
    if not run_dirs:
        raise ValueError("no run directories given")
    runs = [RunResult.load(d) for d in run_dirs]  # all validated before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = [
        _pans_per_layer(runs, out / "pans_per_layer.png"),
        _line_plot(runs, out / "timeline.png", _timeline, "PAN emergence during training", "epoch", "PANs"),
        _line_plot(runs, out / "border_curve.png", _curve, "Accuracy vs distance to the border",
                   "distance to the nearest border (px)", "accuracy"),
        _bars(runs, out / "metrics.png"),
    ]
    keys = [k for k in _METRICS if any(k in r.metrics for r in runs)]
    rows = "".join(
        "<tr><td>" + html.escape(r.name) + "</td>" + "".join(
            f"<td>{r.metrics[k]:.4g}</td>" if k in r.metrics else "<td>–</td>" for k in keys) + "</tr>"
        for r in runs)
    groups = ", ".join(sorted({html.escape(r.group) for r in runs}))
    images = "".join(f'<h2>{html.escape(f.stem.replace("_", " "))}</h2><img src="{f.name}">'
                     for f in figures if f is not None)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>pan_repair comparison</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}"
            f"img{{max-width:100%}}</style></head><body><h1>pan_repair comparison: {groups}</h1>"
            f"<table><tr><th>run</th>{''.join(f'<th>{html.escape(k)}</th>' for k in keys)}</tr>{rows}</table>"
            f"{images}</body></html>")
    path = out / "index.html"
    path.write_text(page)
    return path
