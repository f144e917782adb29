"""What ``prune_pans(model, report, mode="remove")`` buys (issue #4): size, exactness, CPU speed.

For every model (``--models``) and every threshold setting (``--thresholds``), on the CPU:

1. :func:`pan_repair.find_pans` on the original model at the model's input size, with the
   detector's defaults ("default") and with lowered thresholds ("low": ``LOW_THRESHOLDS``,
   border 1.0, position 0.5, as in benchmarks/mitigations.py), since the defaults find few PANs
   in some networks;
2. two copies of the original: ``prune_pans(copy, report)`` (mask mode) and
   ``prune_pans(copy, report, mode="remove")`` (remove mode, default ``fallback="mask"``: the
   layers that cannot be removed are masked instead);
3. the outputs of the masked and the removed model on one random batch (eval mode, ``no_grad``):
   remove mode promises the same function as mask mode, so the difference should be ~0;
4. CPU forward latency (eval, ``no_grad``, batch ``--batch``) of original, masked and removed,
   and of a copy of the original (the control: its ratio to the original shows the timing
   noise), measured interleaved: ``--rounds`` rounds, each running the four models once in a
   rotating order after one warm-up pass each; the fastest time of each model is kept (as in
   benchmarks/scan_speed.py), so all see the same machine load, and the ratios compare with the
   original measured in the same run.

Models (random initialisation is seeded with ``--seed``):

* ``resnet10t``: timm, random init, 3x192x192 (residual: the outputs of every block's last conv
  and of the downsample convs meet an ``add``, so only the stem and each block's first conv can
  be cut);
* ``lite0``: the pretrained EfficientNet-Lite0 of :func:`pan_repair.load_efficientnet_lite0`,
  3x224x224;
* ``vgg11_bn``: torchvision's VGG-11 with BatchNorm, random init, 3x128x128: a plain conv
  stack (no residuals, no depthwise convs), then ``AdaptiveAvgPool2d(7)``, ``flatten`` and
  three Linear layers, where removal can cut every PAN (the first Linear loses 49 inputs per
  removed channel). timm's ``vgg11`` is not used: its ``ConvMlp`` head branches on the input
  size, which ``torch.fx`` cannot trace, so nothing can be removed there;
* ``mobilenet_v2``: torchvision's, random init, 3x160x160 (plain ``nn`` modules, depthwise
  convs and residual adds: exercises removal through a depthwise conv);
* ``smallcnn``: ``SmallCNN(in_chans=1, num_classes=2, depth=4, width=24, strides=(0, 2))``,
  random init, 1x24x24 (tiny; its latency is dominated by overheads).

Columns: model and input size; threshold setting; PANs in the report (``report.count``) / conv
filters (``report.total_filters``); PAN channels (distinct (layer, channel) pairs, what mask
mode silences); channels removed in remove mode (all output channels cut, including those of
depthwise convs the removal propagated through; in parentheses, the number of conv layers cut);
layers not removable and their PAN channels (masked instead; the reasons, grouped, are listed
below the table); parameters of the original, the masked model (masking keeps every parameter;
"z" = entries zeroed by the masks) and the removed model, and how much smaller the removed model
is; max |masked - removed| over the output batch (and relative to max |masked output|); fastest
forward time of the original (ms) and the times of its copy (control), the masked and the
removed model as ratios of it (< 1: faster); wall time of the row (scan, pruning, checks and timing).

Run: ``.venv/bin/python benchmarks/pruning_removal.py --threads 1 [--models resnet10t lite0
vgg11_bn mobilenet_v2] [--thresholds default low] [--batch 8] [--rounds 15]
[--out benchmarks/results/pruning_removal.md]``.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pan_repair import SmallCNN, find_pans, prune_pans
from pan_repair.layers.module_state import structural_copy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mitigations import machine, publish  # noqa: E402  (the sibling benchmark)

LOW_THRESHOLDS = dict(border_threshold=0.3, position_threshold=0.5)
THRESHOLDS: dict[str, dict] = {"default": {}, "low": LOW_THRESHOLDS}


def _resnet10t() -> nn.Module:
    import timm
    return timm.create_model("resnet10t")


def _lite0() -> nn.Module:
    from pan_repair import load_efficientnet_lite0
    return load_efficientnet_lite0()


def _vgg11_bn() -> nn.Module:
    import torchvision
    return torchvision.models.vgg11_bn()


def _mobilenet_v2() -> nn.Module:
    import torchvision
    return torchvision.models.mobilenet_v2()


def _smallcnn() -> nn.Module:
    return SmallCNN(in_chans=1, num_classes=2, depth=4, width=24, strides=(0, 2))


#: name -> (builder, input size (C, H, W), description)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int], str]] = {
    "resnet10t": (_resnet10t, (3, 192, 192), "timm resnet10t, random init"),
    "lite0": (_lite0, (3, 224, 224), "EfficientNet-Lite0, pretrained"),
    "vgg11_bn": (_vgg11_bn, (3, 128, 128), "torchvision vgg11_bn, random init"),
    "mobilenet_v2": (_mobilenet_v2, (3, 160, 160), "torchvision mobilenet_v2, random init"),
    "smallcnn": (_smallcnn, (1, 24, 24), "SmallCNN(1, 2, depth 4, width 24), random init"),
}
DEFAULT_MODELS = ["resnet10t", "lite0", "vgg11_bn", "mobilenet_v2"]


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS[name][0]().eval()


# ----------------------------------------------------------------------------------------------
# measurements


def zeroed(model: nn.Module) -> int:
    """Parameter entries zeroed by pruning masks (``*_mask`` buffers)."""
    return int(sum((b == 0).sum() for n, b in model.named_buffers() if n.endswith("_mask")))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _flat(out) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        return torch.cat([o.reshape(o.shape[0], -1) for o in out], dim=1)
    return out.reshape(out.shape[0], -1)


def latencies(models: dict[str, nn.Module], x: torch.Tensor, rounds: int) -> dict[str, float]:
    """Fastest forward time (s) of each model over ``rounds`` interleaved rounds (rotating order)."""
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for n in names:  # warm-up
            models[n](x)
        for r in range(rounds):
            for n in names[r % len(names):] + names[:r % len(names)]:
                start = time.perf_counter()
                models[n](x)
                times[n].append(time.perf_counter() - start)
    return {n: min(t) for n, t in times.items()}


def reason_key(why: str) -> str:
    """A not-removable reason with module names blanked, so that layers group by cause."""
    return re.sub(r"'[^']*'", "'…'", why)


def measure(label: str, model: nn.Module, input_size: tuple[int, int, int], thresholds: str = "default", *,
            batch: int = 8, rounds: int = 7, seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """One row: detect, mask and remove on copies, compare outputs, time the three models."""
    start = time.perf_counter()
    model = model.eval()
    kw = THRESHOLDS[thresholds]
    t0 = time.perf_counter()
    report = find_pans(model, input_size, **kw)
    scan_s = time.perf_counter() - t0
    masked, removed = structural_copy(model, share=False), structural_copy(model, share=False)
    mask_summary = prune_pans(masked, report)
    row = dict(model=label, input=input_size, thresholds=thresholds, pans=report.count,
               filters=report.total_filters, pan_channels=mask_summary.count, scan_s=scan_s,
               params_original=n_params(model), params_masked=n_params(masked), zeroed_masked=zeroed(masked),
               error=None)
    try:
        summary = prune_pans(removed, report, mode="remove")
    except Exception as err:  # noqa: BLE001 - a failure is a result here
        row["error"] = f"{type(err).__name__}: {err}"
        log(f"{label} [{thresholds}]: prune_pans(mode='remove') raised {row['error']}")
        removed = None
    if removed is not None:
        reasons: dict[str, list[str]] = defaultdict(list)
        for layer, why in summary.not_removable.items():
            reasons[reason_key(why)].append(layer)
        params_removed = n_params(removed)
        row.update(
            removed_channels=sum(len(v) for v in summary.removed.values()),
            removed_layers=len(summary.removed),
            removed_pan_channels=sum(len(c) for l, c in summary.channels.items() if l not in summary.not_removable),
            not_removable_layers=len(summary.not_removable),
            not_removable_channels=sum(len(summary.channels[l]) for l in summary.not_removable),
            reasons=dict(reasons), params_removed=params_removed, zeroed_removed=zeroed(removed),
            smaller_pct=100.0 * (1 - params_removed / row["params_original"]))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *input_size, generator=gen)
    with torch.no_grad():
        out_masked = _flat(masked(x))
        if removed is not None:
            diff = (out_masked - _flat(removed(x))).abs().max().item()
            scale = out_masked.abs().max().item()
            row.update(max_abs_diff=diff, rel_diff=diff / scale if scale > 0 else 0.0, out_scale=scale)
    models = {"original": model, "copy": structural_copy(model, share=False), "masked": masked}
    if removed is not None:
        models["removed"] = removed
    ms = latencies(models, x, rounds)
    row.update({f"ms_{n}": 1000 * t for n, t in ms.items()})
    row["ratio_copy"] = ms["copy"] / ms["original"]
    row["ratio_masked"] = ms["masked"] / ms["original"]
    if removed is not None:
        row["ratio_removed"] = ms["removed"] / ms["original"]
    row["wall_s"] = time.perf_counter() - start
    log(f"{label} [{thresholds}]: {row['pans']} PANs, "
        + (f"{row['removed_channels']} channels removed, {row['not_removable_layers']} layers not removable, "
           f"params {row['params_original']} -> {row['params_removed']}, diff {row['max_abs_diff']:.2g}, "
           f"latency x{row['ratio_removed']:.2f}" if removed is not None else "remove failed")
        + f" ({row['wall_s']:.0f} s)")
    return row


# ----------------------------------------------------------------------------------------------
# report

COLUMNS = ["model (input)", "thresholds", "PANs / filters", "PAN channels", "removed channels (layers)",
           "not removable: layers (PAN channels)", "params original", "params masked", "params removed",
           "smaller %", "max abs diff removed vs masked (rel.)", "original ms", "copy x (control)", "masked x",
           "removed x", "wall s"]


def _m(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 100_000 else str(n)


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        size = "x".join(str(v) for v in r["input"])
        masked = f"{_m(r['params_masked'])} ({_m(r['zeroed_masked'])} z)"
        head = [f"{r['model']} ({size})", r["thresholds"], f"{r['pans']} / {r['filters']}", str(r["pan_channels"])]
        if r["error"] is None:
            zr = f" ({_m(r['zeroed_removed'])} z)" if r["zeroed_removed"] else ""
            mid = [f"{r['removed_channels']} ({r['removed_layers']})",
                   f"{r['not_removable_layers']} ({r['not_removable_channels']})",
                   _m(r["params_original"]), masked, _m(r["params_removed"]) + zr, f"{r['smaller_pct']:.1f}",
                   f"{r['max_abs_diff']:.1e} ({r['rel_diff']:.1e})"]
            removed_x = f"{r['ratio_removed']:.2f}"
        else:
            mid = ["error", "error", _m(r["params_original"]), masked, "-", "-", "-"]
            removed_x = "-"
        tail = [f"{r['ms_original']:.1f}", f"{r['ratio_copy']:.2f}", f"{r['ratio_masked']:.2f}", removed_x,
                f"{r['wall_s']:.0f}"]
        lines.append("| " + " | ".join(head + mid + tail) + " |")
    return "\n".join(lines)


def reasons_text(rows: list[dict]) -> str:
    """The not-removable layers of every row, grouped by reason (module names blanked as '…')."""
    out = []
    for r in rows:
        name = f"{r['model']}, {r['thresholds']} thresholds"
        if r["error"] is not None:
            out.append(f"* {name}: `prune_pans(mode=\"remove\")` raised `{r['error']}`")
            continue
        if not r["reasons"]:
            out.append(f"* {name}: every PAN layer removed")
            continue
        out.append(f"* {name}:")
        for why, layers in sorted(r["reasons"].items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(layers[:4]) + (f", ... ({len(layers) - 4} more)" if len(layers) > 4 else "")
            out.append(f"  * {len(layers)} layers: {why} ({shown})")
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=list(MODELS))
    parser.add_argument("--thresholds", nargs="+", default=list(THRESHOLDS), choices=list(THRESHOLDS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (fastest kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/pruning_removal.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = []
    for name in args.models:
        model = build(name, args.seed)
        for thr in args.thresholds:
            rows.append(measure(name, model, MODELS[name][1], thr, batch=args.batch, rounds=args.rounds,
                                seed=args.seed, log=lambda s: print(s, flush=True)))
    models = "; ".join(f"`{n}`: {MODELS[n][2]}" for n in args.models)
    text = "\n".join([
        "# Physical removal of PAN channels: `prune_pans(mode=\"remove\")` vs mask mode\n",
        f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`  ",
        f"Machine: {machine()}\n",
        f"Models: {models}. Thresholds: default = find_pans defaults; low = {LOW_THRESHOLDS}. "
        f"Latency: batch {args.batch}, eval, no_grad, fastest of {args.rounds} interleaved rounds; "
        "copy x / masked x / removed x = time / original's time in the same run (copy: a copy of the original, "
        "the timing-noise control). z = parameter entries zeroed by masks.\n",
        table(rows), "",
        "Layers not removable (masked instead), by reason:\n",
        reasons_text(rows), "",
        f"Total run time: {time.perf_counter() - start:.0f} s.",
    ])
    publish(text, args.out)


if __name__ == "__main__":
    main()
