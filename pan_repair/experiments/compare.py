"""``pan-repair compare``: runs side by side, as a self-contained HTML folder (``index.html`` and its
PNGs; opens from disk), a text table or JSON: PANs per layer, the PAN timeline, every logged
metric as curves and as a final-value table ("–" where a run did not log a key)."""
from __future__ import annotations

import html
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..runs.logged_runs import LoggedRun, ordered_keys  # noqa: E402

__all__ = ["build_report", "text_table", "to_json"]

_FIGURES = ("pans_per_layer.png", "timeline.png", "border_curve.png", "metrics.png")
_BARS = ("val/acc", "swapped/acc", "val/padding_flip", "val/border_gap")
_MISSING = "–"
_CSS = ("body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1500px}"
        "h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}"
        ".sub{color:#666;margin-top:0}.scroll{overflow-x:auto}"
        "table{border-collapse:collapse;font-size:.9em}td,th{padding:3px 10px;border-bottom:1px solid #e4e4e4;"
        "text-align:right;white-space:nowrap}td:first-child,th:first-child{text-align:left}"
        "th{background:#f4f4f4}td.text,th.text{text-align:left}.path{color:#666;font-size:.85em}"
        ".dot{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.4em;vertical-align:-.05em}"
        ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px}"
        ".grid img{width:100%}img{max-width:100%;height:auto}")


def _colour(i: int) -> str:
    return matplotlib.colors.to_hex(plt.get_cmap("tab10")(i % 10))


def _dashes(i: int) -> str:
    """Line style of run ``i``: runs that logged the same values stay distinguishable."""
    return ("-", "--", "-.", ":")[i % 4]


def _value(run: LoggedRun, key: str) -> str:
    return f"{run.final[key]:.4g}" if key in run.final else _MISSING


# ----------------------------------------------------------------------------- figures
def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _pans_per_layer(runs: Sequence[LoggedRun], path: Path) -> Path | None:
    counts = [(i, run, run.per_layer()) for i, run in enumerate(runs)]
    counts = [c for c in counts if c[2]]
    if not counts:
        return None
    layers = list(dict.fromkeys(layer for _, _, per_layer in counts for layer in per_layer))
    fig, ax = plt.subplots(figsize=(min(16, max(7, 0.3 * len(layers) * len(counts))), 4.2), constrained_layout=True)
    width = 0.8 / len(counts)
    for j, (i, run, per_layer) in enumerate(counts):
        ax.bar([k + j * width for k in range(len(layers))], [per_layer.get(layer, 0) for layer in layers], width,
               label=f"{run.name} ({sum(per_layer.values())})", color=_colour(i))
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(layers))], layers, rotation=90, fontsize=8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max(1, ax.get_ylim()[1]))  # counts: no negative axis, also when every run has 0 PANs
    ax.set(ylabel="PANs", title="PANs per layer at the last scan")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _lines(runs: Sequence[LoggedRun], path: Path, series: Callable[[LoggedRun], tuple[list, list]],
           title: str, xlabel: str, ylabel: str = "", size: tuple[float, float] = (7, 4)) -> Path | None:
    lines = [(i, run, *series(run)) for i, run in enumerate(runs)]
    lines = [line for line in lines if line[2]]
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=size, constrained_layout=True)
    for i, run, xs, ys in lines:
        ax.plot(xs, ys, _dashes(i), marker="o" if len(xs) <= 30 else None, markersize=3, label=run.name,
                color=_colour(i))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if xlabel in ("step", "epoch"):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if all(float(y).is_integer() for *_, ys in lines for y in ys):  # counts
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _border_curve(run: LoggedRun) -> tuple[list, list]:
    points = [(d, a) for d, a in enumerate(run.border_curve) if a is not None]
    return [d for d, _ in points], [a for _, a in points]


def _curve(key: str, x: str) -> Callable[[LoggedRun], tuple[list, list]]:
    """``key`` against the step, or against the epoch (its last value in each epoch)."""
    def series(run: LoggedRun) -> tuple[list, list]:
        points = run.curves.get(key, [])
        if x == "epoch":
            last = {e: v for _, e, v in points if e is not None}
            return list(last), list(last.values())
        return [s for s, _, _ in points], [v for _, _, v in points]
    return series


def _bars(runs: Sequence[LoggedRun], path: Path) -> Path | None:
    keys = [k for k in _BARS if any(k in r.final for r in runs)]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(max(4.5, 0.35 * len(runs) + 1.8) * len(keys), 3.8),
                             constrained_layout=True, squeeze=False)
    for ax, key in zip(axes[0], keys):
        bars = ax.bar(range(len(runs)), [r.final.get(key, math.nan) for r in runs],
                      color=[_colour(i) for i in range(len(runs))])
        ax.bar_label(bars, [_value(r, key) for r in runs], fontsize=8)
        ax.set_xticks(range(len(runs)), [r.name for r in runs], rotation=30, ha="right", rotation_mode="anchor",
                      fontsize=8)
        ax.margins(y=0.12)
        ax.set_title(key)
    return _save(fig, path)


# ----------------------------------------------------------------------------- HTML
def _runs_table(runs: Sequence[LoggedRun]) -> str:
    rows = "".join(
        f"<tr><td><span class='dot' style='background:{_colour(i)}'></span>{html.escape(r.name)}</td>"
        f"<td class='text'>{r.source}</td><td class='text'>{html.escape(r.group) or _MISSING}</td>"
        f"<td>{max((p[0] for c in r.curves.values() for p in c), default=_MISSING)}</td>"
        f"<td>{len(r.scans) or _MISSING}</td><td class='text path'>{html.escape(str(r.path))}</td></tr>"
        for i, r in enumerate(runs))
    return ("<div class='scroll'><table><tr><th>run</th><th class='text'>source</th><th class='text'>group</th>"
            f"<th>last step</th><th>PAN scans</th><th class='text'>folder</th></tr>{rows}</table></div>")


def _final_table(runs: Sequence[LoggedRun], keys: Sequence[str]) -> str:
    head = "".join(f"<th><span class='dot' style='background:{_colour(i)}'></span>{html.escape(r.name)}</th>"
                   for i, r in enumerate(runs))
    rows = "".join(f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{_value(r, k)}</td>" for r in runs) + "</tr>"
                   for k in keys)
    return f"<div class='scroll'><table><tr><th>final value</th>{head}</tr>{rows}</table></div>"


#: what the one-line summaries compare, in order: key, label, shown as a percentage
_STORY = (("pan/count", "PANs", False), ("val/padding_flip", "padding flips", True),
          ("swapped/acc", "swapped acc", True), ("val/acc", "acc", True))


def what_happened(runs: Sequence[LoggedRun]) -> list[str]:
    """One line per run after the first: its headline figures against the first run's, e.g.
    ``"pruned: PANs 6 -> 0; padding flips 19% -> 16%; swapped acc 49% -> 54%; acc 78% -> 82%"``."""
    first = runs[0].final if runs else {}
    lines = []
    for run in runs[1:]:
        parts = []
        for key, label, percent in _STORY:
            if key in first and key in run.final:
                a, b = first[key], run.final[key]
                parts.append(f"{label} {100 * a:.0f}% -> {100 * b:.0f}%" if percent else f"{label} {a:.0f} -> {b:.0f}")
        lines.append(f"{run.name}: " + ("; ".join(parts) if parts else "no figure in common with the first run"))
    return lines


def _figure(path: Path | None, title: str) -> str:
    return f"<figure><img src='{path.name}' alt='{html.escape(title)}'></figure>" if path else ""


def build_report(runs: Sequence[LoggedRun], out_dir: str | Path, x: str = "step") -> Path:
    """Write ``out_dir/index.html`` and its PNGs comparing ``runs``; returns the HTML path.

    Everything is drawn in a temporary folder beside ``out_dir`` and moved in at the end
    (``index.html`` last), so a failure leaves no half-written report. ``x``: ``"step"`` or
    ``"epoch"``, the x axis of the metric curves.
    """
    if not runs:
        raise ValueError("no runs to compare")
    if x not in ("step", "epoch"):
        raise ValueError(f"x axis must be 'step' or 'epoch', got {x!r}")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        keys = ordered_keys(runs)
        curve_keys = [k for k in keys if any(len(r.curves.get(k, [])) > 1 for r in runs)]
        curves = [(k, _lines(runs, tmp / f"curve_{n:02d}.png", _curve(k, x), k, x, size=(5.2, 3.4)))
                  for n, k in enumerate(curve_keys)]
        sections = [
            ("PANs per layer", _figure(_pans_per_layer(runs, tmp / "pans_per_layer.png"), "PANs per layer")),
            ("PAN timeline", _figure(_lines(runs, tmp / "timeline.png", lambda r: r.timeline(),
                                            "PANs found at each scan", "epoch", "PANs"),
                                     "PAN timeline")),
            ("Accuracy against the distance to the border", _figure(_lines(
                runs, tmp / "border_curve.png", _border_curve, "Accuracy vs distance to the border",
                "distance to the nearest border (px)", "accuracy"), "border curve")),
            ("Final accuracy and padding reliance", _figure(_bars(runs, tmp / "metrics.png"), "final metrics")),
            ("Logged curves (against the step)" if x == "step" else
             "Logged curves (against the epoch: each epoch's last value)",
             "<div class='grid'>" + "".join(_figure(p, k) for k, p in curves) + "</div>" if curves else ""),
        ]
        groups = ", ".join(sorted({html.escape(r.group) for r in runs if r.group})) or "no group"
        page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>pan_repair comparison</title>"
                f"<style>{_CSS}</style></head><body><h1>pan_repair comparison</h1>"
                f"<p class='sub'>{len(runs)} runs · {groups}</p>"
                + (f"<h2>What happened (against {html.escape(runs[0].name)})</h2><ul>"
                   + "".join(f"<li>{html.escape(line)}</li>" for line in what_happened(runs)) + "</ul>"
                   if len(runs) > 1 else "")
                + f"<h2>Runs</h2>{_runs_table(runs)}"
                f"<h2>Final values</h2>{_final_table(runs, keys)}"
                + "".join(f"<h2>{title}</h2>{body}" for title, body in sections if body) + "</body></html>")
        (tmp / "index.html").write_text(page, encoding="utf-8")
        if not out.exists():
            tmp.chmod(0o755)  # mkdtemp's folder is private
            tmp.rename(out)
        else:
            for stale in [*out.glob("curve_*.png"), *(out / name for name in _FIGURES)]:
                stale.unlink(missing_ok=True)
            for f in sorted(tmp.iterdir(), key=lambda f: f.name == "index.html"):
                f.replace(out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "index.html"


# ----------------------------------------------------------------------------- text and JSON
def text_table(runs: Sequence[LoggedRun]) -> str:
    """The final values (and PANs per layer) as a plain-text table, one column per run."""
    per_layer = [r.per_layer() for r in runs]
    layers = list(dict.fromkeys(layer for counts in per_layer for layer in counts))
    keys = ordered_keys(runs)
    rows = [("run", [r.name for r in runs]), ("source", [r.source for r in runs]),
            ("group", [r.group or _MISSING for r in runs])] + [(k, [_value(r, k) for r in runs]) for k in keys]
    if layers:
        rows.append(("PANs per layer (last scan)", [""] * len(runs)))
        rows += [(f"  {layer}", [str(c[layer]) if layer in c else _MISSING for c in per_layer]) for layer in layers]
    width = max(len(label) for label, _ in rows)
    cols = [max(len(cells[j]) for _, cells in rows) for j in range(len(runs))]
    return "\n".join((f"{label:<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, cols))).rstrip()
                     for label, cells in rows)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def to_json(runs: Sequence[LoggedRun]) -> str:
    """The comparison as JSON: per run its name, folder, source, group, final values, curves
    (``key: [[step, epoch, value], ...]``), the monitor's scans and PANs per layer."""
    return json.dumps({"keys": ordered_keys(runs), "runs": [
        {"name": r.name, "path": str(r.path), "source": r.source, "group": r.group,
         "final": {k: _finite(v) for k, v in r.final.items()},
         "curves": {k: [list(p) for p in points] for k, points in r.curves.items()},
         "scans": r.scans, "per_layer": r.per_layer()} for r in runs]}, indent=1, allow_nan=False)
