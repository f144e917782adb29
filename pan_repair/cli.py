"""``pan-repair`` command line. Errors print one line to stderr and exit with status 2."""
from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from .detect.detector import find_pans
from .models.model_spec import BUNDLED, load_model
from .detect.report import PanReport

__all__ = ["main"]


def _table(report: PanReport) -> str:
    rows = [f"{'layer':40s} {'filters':>7s} {'border':>6s} {'position':>8s}  sides (t/b/l/r)"]
    filters = {layer.name: layer.out_channels for layer in report.layers}
    for name, pans in report.by_layer().items():
        sides = [sum(s in p.sides for p in pans) for s in ("top", "bottom", "left", "right")]
        rows.append(f"{name:40s} {filters[name]:7d} {sum(p.kind == 'border' for p in pans):6d} "
                    f"{sum(p.kind == 'position' for p in pans):8d}  {'/'.join(map(str, sides))}")
    rows.append(f"{'total':40s} {report.total_filters:7d} {len(report.of_kind('border')):6d} "
                f"{len(report.of_kind('position')):8d}  {report.count} PANs = {100 * report.fraction:.2f}% of filters")
    dep = report.padding_dependence
    if dep:
        flips = "" if dep["flip_rate"] is None else f", {100 * dep['flip_rate']:.1f}% of predictions flip"
        rows.append(f"padding dependence (every padding -> replicate, {dep['images']} images): "
                    f"output shift {100 * dep['output_shift']:.1f}%{flips}")
        rows += [f"  {layer}[{ch}]: {100 * share:.1f}% of it" for layer, ch, share in report.ranked(5) if share > 0]
    return "\n".join(rows + [f"assumed: {a}" for a in report.assumptions]
                     + [f"{layer}: {why}" for layer, why in report.unmeasured.items()]
                     + [f"note: {n}" for n in report.notes])


def _scan(args: argparse.Namespace) -> int:
    from .detect.probes import resolve_convention

    model = load_model(args.model, args.weights)
    convention = dict(input_range=args.input_range, mean=args.mean, std=args.std)
    side = args.size or ((getattr(model, "pretrained_cfg", None) or {}).get("input_size") or (3, 224, 224))[-1]
    size, data = (args.channels, side, side), None
    if args.data is not None:
        from .data.image_files import load_images

        data = load_images(args.data, args.channels, None if args.size is None else (args.size, args.size),
                           resolve_convention(model, args.channels, **convention))
        size = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if args.quiet else "default")
        report = find_pans(model, size, data=data, **({} if data is not None else convention),
                           border_threshold=args.border_threshold, position_threshold=args.position_threshold,
                           n_patterns=args.patterns, progress=sys.stderr.isatty())
    print(_table(report))
    if args.json:
        print(f"report: {report.save(args.json)}")
    if args.plot:
        from .detect.plotting import plot_report
        print(f"plot: {plot_report(report, args.plot, model, data=data)}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .experiments.compare import build_report, text_table, to_json
    from .runs.logged_runs import read_runs

    runs = read_runs(args.runs, args.name or ())  # every run read before anything is written
    if args.format == "html":
        print(f"report: {build_report(runs, args.out, args.x)}")
    else:
        print(text_table(runs) if args.format == "table" else to_json(runs))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pan-repair", description="Find and repair Padding Aware Neurons.")
    sub = parser.add_subparsers(dest="command", required=True)
    scan = sub.add_parser("scan", help="find the PANs of a model (on your images, or data-free)")
    scan.add_argument("model", help=f"timm model name, 'module:factory', or {BUNDLED!r} (bundled ImageNet weights)")
    scan.add_argument("--weights", help="state dict file to load into the model")
    scan.add_argument("--size", type=int, help="image side in pixels (default: the model's timm input size, "
                                                "else 224; with --data, the images' own)")
    scan.add_argument("--channels", type=int, default=3, help="input channels (default 3)")
    scan.add_argument("--data", help="your images: a folder of pictures (read as [0, 1], normalised as "
                                     "below) or a .pt file holding an (N, C, H, W) tensor of model inputs")
    scan.add_argument("--input-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                      help="the model's inputs are pixels scaled to [LOW, HIGH], e.g. 0 1")
    scan.add_argument("--mean", type=float, nargs="+", help="normalisation mean of pixels in [0, 1] (with --std)")
    scan.add_argument("--std", type=float, nargs="+", help="normalisation std of pixels in [0, 1] (with --mean)")
    scan.add_argument("--border-threshold", type=float, help="default 1.4 on probes, 2.5 with --data")
    scan.add_argument("--position-threshold", type=float,
                      help="default 0.9 on probes, 0.5 with --data")
    scan.add_argument("--patterns", type=int, default=8, help="probe textures (default 8)")
    scan.add_argument("--json", help="write the PanReport as JSON to this path")
    scan.add_argument("--plot", help="write a PNG: PANs per layer and border-response maps")
    scan.add_argument("--quiet", action="store_true", help="hide warnings")
    scan.set_defaults(run=_scan)
    compare = sub.add_parser("compare", help="compare runs: W&B runs (offline or synced), W&B group folders, "
                                             "Lightning log folders, recipe runs")
    compare.add_argument("runs", nargs="+", help="run folders, or folders holding them (e.g. wandb/)")
    compare.add_argument("--name", action="append", help="rename the runs: once per run found, in order")
    compare.add_argument("--format", choices=("html", "table", "json"), default="html",
                         help="html: a report folder (default); table, json: printed")
    compare.add_argument("--x", choices=("step", "epoch"), default="step", help="x axis of the curves (default step)")
    compare.add_argument("--out", default="runs/compare", help="report folder for html (default runs/compare)")
    compare.set_defaults(run=_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as err:
        print(f"pan-repair {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
