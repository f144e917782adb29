"""Model-zoo sweep: every pan_repair operation on timm and torchvision architectures (random weights).

Per architecture, input size and operation the sweep records one of

* ``pass``: the operation completed and its checks held;
* ``refused``: it raised ``ValueError``/``TypeError``/``NotImplementedError`` (for callbacks at
  setup, Lightning's ``MisconfigurationException``) from pan_repair's own code, with a one-line
  message, and left the model exactly as it was (state dict and module types);
* ``FAIL``: anything else (another exception, a multi-line or foreign error, a model changed by a
  refused operation, a check that did not hold).

Operations and their checks (eval mode, one random input ``x`` of the cell's size):

* ``find``: ``find_pans`` (default thresholds, 2 probe patterns x 4 positions) completes, leaves
  the model unchanged and reports every convolution (but timm's unsupported ``CondConv2d``).
  Random-weight models flag 0-63% of their filters (median 10%, 2026-11-30): their channels answer the
  border arbitrarily, so the counts exercise the machinery, not the definition
  (``benchmarks/detector_validity.py`` validates that).
* ``convert_<mode>``: ``convert_padding`` on a copy. The converted model runs and gives the
  output shape of the original. *Interior check*: a whole network's outputs all depend on its
  border at these sizes, so the check is per layer, in place: every switched layer's real input
  in the converted model's forward pass is fed to both the original and the new layer, which must
  give the same output shape and the same values (to 1e-4 of the output's largest value)
  wherever the layer's window does not reach its padding. *Nothing left behind*: every layer that
  still pads with a constant frame during that forward pass is listed in the summary's
  ``skipped``. For ``circular``, the detail also says whether the converted model is invariant to
  circular rolls of its input by its total stride (information, not a check: see
  :func:`roll_invariance`). ``full`` (``convert_padding(..., input_size=)``) grows every switched
  layer's output by design: the model's output shape must stay, and per layer the new output,
  shifted by ``(d (k - 1) - pad) / stride`` where that is a whole number (always at stride 1),
  must equal the original's wherever the original's window does not reach its padding; the full
  layers themselves are the frame left (zeros ``d (k - 1)``), so *nothing left behind* counts the
  others. Most architectures refuse ``full`` (one line, model unchanged): a residual addition,
  concatenation or other join of branches fails on the grown maps.
* ``prune_mask``: ``prune_pans`` masks the PANs of the ``find`` report (where ``find`` is refused
  at this size, of a 96 or 224 px scan's report: it names the same layers and channels); the
  forward runs, the output shape is unchanged, and every masked channel outputs exactly 0 after
  its BatchNorm (or conv).
* ``prune_remove``: ``prune_pans(mode="remove")``; the forward runs and equals the masked model's
  to 1e-4 of the masked output's largest value (shown, so that a vacuous comparison of zeros
  would show).
* ``convert_masked``: ``convert_padding`` (replicate) of the ``prune_mask`` model: the conversion
  checks, against the masked model, and its masked channels still output 0.
* ``monitor``: a Lightning fit (2 training batches of 2 random images, 1 validation batch) with
  ``PANMonitor`` completes.

Results are cached per cell in a JSON-lines file, so reruns only compute what is asked for:
``python benchmarks/zoo.py --models resnet18 --sizes 64 --ops find monitor --fresh``.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import re
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn

import pan_repair
from pan_repair import convert_padding, find_pans, prune_pans
from pan_repair.layers import conv_layers, layer_padding, unsupported_layers
from pan_repair.lightning import PANMonitor
from pan_repair.layers.padding_switch import MODES as CONVERT_MODES

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = RESULTS / "zoo.jsonl"
REPORT = RESULTS / "zoo.md"
PACKAGE = str(Path(pan_repair.__file__).resolve().parent)
FIND_ARGS = dict(n_patterns=2, n_positions=4)
MONITOR_ARGS = dict(n_patterns=2, n_positions=4, every_n_epochs=1)
TOLERANCE = 1e-4
SIZES = (64, 96)
FALLBACK_SIZES = (96, 224)
OPS = ("find", *(f"convert_{m}" for m in CONVERT_MODES), "prune_mask", "prune_remove", "convert_masked",
       "monitor")


@dataclass(frozen=True)
class Arch:
    """One architecture: ``name`` (timm, or ``tv:`` + torchvision name), its padding machinery,
    constructor arguments, and whether the sweep also runs it at its own default size."""

    name: str
    machinery: str
    kwargs: tuple[tuple[str, object], ...] = ()
    default_size: bool = False


ARCHS = (
    Arch("resnet18", "ResNet: zero-padded 3x3 convs, padded max pool", default_size=True),
    Arch("resnet10t", "ResNet-T: tiered stem, avg-pool shortcuts (ceil_mode)", default_size=True),
    Arch("resnet26d", "ResNet-D: deep stem, avg-pool shortcuts"),
    Arch("resnetrs50", "ResNet-RS: avg-pool shortcuts, SE"),
    Arch("resnext26ts", "ResNeXt (byobnet): grouped 3x3 convs"),
    Arch("res2net50_14w_8s", "Res2Net: split hierarchical convs, padded avg pool"),
    Arch("skresnet18", "SK-ResNet: selective-kernel split convs (dilated)"),
    Arch("resnetblur18", "BlurPool: reflect padding inside forward"),
    Arch("resnetv2_50x1_bit", "BiT ResNetV2: StdConv2d, ConstantPad2d before max pool"),
    Arch("regnetx_002", "RegNetX: grouped convs", default_size=True),
    Arch("regnety_002", "RegNetY: grouped convs, SE"),
    Arch("densenet121", "DenseNet: concatenations, avg-pool transitions"),
    Arch("inception_v3", "Inception-v3: asymmetric 1x7/7x1 kernels, padded avg pools"),
    Arch("xception41", "Xception: separable convs"),
    Arch("mobilenetv2_035", "MobileNetV2: depthwise convs, inverted residuals", default_size=True),
    Arch("mobilenetv3_small_050", "MobileNetV3: depthwise, SE, hard-swish", default_size=True),
    Arch("efficientnet_b0", "EfficientNet: depthwise 3x3/5x5"),
    Arch("tf_efficientnet_b0", "EfficientNet TF port: Conv2dSame (dynamic right/bottom padding)"),
    Arch("tf_efficientnet_lite0", "EfficientNet-Lite TF port: Conv2dSame, ReLU6"),
    Arch("tf_mobilenetv3_small_minimal_100", "MobileNetV3 TF port: Conv2dSame, MaxPool-free",
         default_size=True),
    Arch("mixnet_s", "MixNet: MixedConv2d (3x3/5x5/7x7/9x9 groups)"),
    Arch("tf_mixnet_s", "MixNet TF port: MixedConv2d of Conv2dSame"),
    Arch("tinynet_e", "TinyNet: small EfficientNet", default_size=True),
    Arch("mnasnet_small", "MnasNet (timm)", default_size=True),
    Arch("lcnet_050", "LCNet: depthwise, hard-swish", default_size=True),
    Arch("ghostnet_050", "GhostNet: ghost modules (cheap depthwise ops, concat)", default_size=True),
    Arch("repghostnet_050", "RepGhostNet: re-parameterisable ghost modules"),
    Arch("rexnet_100", "ReXNet: partial residuals (channel-padded add)"),
    Arch("convnext_atto", "ConvNeXt: 7x7 depthwise, patchify stem, LayerNorm"),
    Arch("repvgg_a0", "RepVGG: parallel 3x3 / 1x1 / identity branches", default_size=True),
    Arch("mobileone_s0", "MobileOne: re-parameterisable branches"),
    Arch("hrnet_w18_small", "HRNet: parallel resolutions, upsample + add"),
    Arch("dla46_c", "DLA: tree aggregation (concat nodes)", default_size=True),
    Arch("cs3darknet_s", "CSPNet (CS3-Darknet): cross-stage partial split + concat"),
    Arch("cspresnet50", "CSPResNet: cross-stage partial"),
    Arch("dpn48b", "DPN: dual-path (add + concat), grouped convs"),
    Arch("nf_regnet_b0", "NF-RegNet: ScaledStdConv2d, no BatchNorm"),
    Arch("dm_nfnet_f0", "NFNet: ScaledStdConv2dSame (TF same padding), no BatchNorm"),
    Arch("selecsls42b", "SelecSLS: concatenated feature selection"),
    Arch("ese_vovnet19b_slim_dw", "VoVNet: one-shot aggregation, eSE"),
    Arch("gernet_s", "GENet (byobnet)"),
    Arch("hgnetv2_b0", "HGNetV2: stem with F.pad inside forward, learnable affine"),
    Arch("edgenext_xx_small", "EdgeNeXt: conv + transposed attention hybrid"),
    Arch("mobilevit_xxs", "MobileViT: conv + transformer blocks (unfold)"),
    Arch("vit_tiny_r_s16_p8_224", "Hybrid ViT: ResNetV2 conv stem (StdConv2dSame) + patch embedding",
         (("img_size", None), ("dynamic_img_size", True)), default_size=True),
    Arch("tv:vgg11_bn", "VGG (torchvision): plain zero-padded 3x3 convs"),
    Arch("tv:googlenet", "GoogLeNet (torchvision): inception branches, ceil_mode max pools",
         (("aux_logits", False), ("init_weights", True))),
    Arch("tv:shufflenet_v2_x0_5", "ShuffleNetV2 (torchvision): channel shuffle, split + concat",
         default_size=True),
    Arch("tv:squeezenet1_1", "SqueezeNet (torchvision): fire modules, ceil_mode max pools",
         default_size=True),
    Arch("tv:mnasnet0_5", "MnasNet (torchvision)"),
    Arch("tv:mobilenet_v2", "MobileNetV2 (torchvision)"),
    Arch("tv:mobilenet_v3_small", "MobileNetV3 (torchvision)"),
    Arch("tv:resnext50_32x4d", "ResNeXt (torchvision)"),
    Arch("tv:regnet_x_400mf", "RegNetX (torchvision)"),
    Arch("tv:densenet121", "DenseNet (torchvision)"),
    Arch("tv:efficientnet_b0", "EfficientNet (torchvision): stochastic depth"),
    Arch("tv:convnext_tiny", "ConvNeXt (torchvision): LayerNorm2d, permutes"),
)


def arch(name: str) -> Arch:
    found = [a for a in ARCHS if a.name == name]
    if not found:
        raise SystemExit(f"unknown architecture {name!r}; known: {', '.join(a.name for a in ARCHS)}")
    return found[0]


def default_size(a: Arch) -> int:
    """The model's own input side (timm's pretrained config; 224 for torchvision)."""
    if a.name.startswith("tv:"):
        return 224
    import timm
    return int(timm.get_pretrained_cfg(a.name).input_size[-1])


def sizes_of(a: Arch, sizes: tuple[int, ...], with_default: bool) -> list[int]:
    out = list(sizes)
    if with_default and a.default_size and default_size(a) not in out:
        out.append(default_size(a))
    return out


def build(a: Arch, size: int) -> nn.Module:
    """A fresh eval-mode model, random weights (seed 0), for ``size`` px inputs."""
    torch.manual_seed(0)
    kwargs = {k: (size if v is None else v) for k, v in a.kwargs}  # None: the input size
    if a.name.startswith("tv:"):
        import torchvision
        return torchvision.models.get_model(a.name[3:], weights=None, **kwargs).eval()
    import timm
    return timm.create_model(a.name, pretrained=False, **kwargs).eval()


# ----------------------------------------------------------------------------------------------
# outcome of one operation


class CheckFailed(Exception):
    """A check of the sweep did not hold (a silent wrong answer)."""


Snapshot = tuple[dict[str, torch.Tensor], list[tuple[str, str]]]


def snapshot(model: nn.Module) -> Snapshot:
    """The model's state dict (cloned) and its module types, to tell whether it changed."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, [(n, type(m).__name__) for n, m in model.named_modules()]


def changed(model: nn.Module, before: Snapshot) -> str | None:
    """What differs from ``before`` (``None``: nothing)."""
    state, types = snapshot(model)
    if types != before[1]:
        diff = [f"{n}: {t}" for (n, t) in types if (n, t) not in before[1]][:3]
        return f"module types changed ({', '.join(diff) or 'modules removed'})"
    if state.keys() != before[0].keys():
        return f"state-dict keys changed ({sorted(set(state) ^ set(before[0]))[:3]})"
    for key, value in state.items():
        if value.shape != before[0][key].shape or not torch.equal(value, before[0][key]):
            return f"state-dict entry {key} changed"
    return None


def first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def raised_by_pan_repair(err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback is pan_repair's own code."""
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(PACKAGE)


def classify(err: BaseException, model: nn.Module | None, before: Snapshot | None) -> tuple[str, str]:
    """``("refused", reason)`` for a clean refusal, else ``("FAIL", error)``."""
    if isinstance(err, CheckFailed):
        return "FAIL", str(err)
    message = first_line(err)
    refusals = (ValueError, TypeError, NotImplementedError)
    if not isinstance(err, refusals) and type(err).__name__ != "MisconfigurationException":
        return "FAIL", message
    if not raised_by_pan_repair(err):
        return "FAIL", f"{message} (raised outside pan_repair)"
    if len(str(err).strip().splitlines()) > 1:
        return "FAIL", f"{message} (multi-line error)"
    diff = changed(model, before) if model is not None and before is not None else None
    if diff:
        return "FAIL", f"refused but the model was modified: {diff} ({message})"
    return "refused", message


# ----------------------------------------------------------------------------------------------
# checks


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not torch.isfinite(out).all():
        raise CheckFailed("non-finite output")
    return out


def close(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b| (at least 1e-6)."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-6)) if a.numel() else 0.0


def interior(module: nn.Module, x: torch.Tensor) -> tuple[slice, slice]:
    """Output rows/columns of ``module`` on ``x`` whose window lies inside ``x`` (no padding):
    for a conv/pool, windows ``[i*s - pad, i*s - pad + (k-1)*d]`` within the input; for a pad
    module, the copied input."""
    left, _, top, _ = layer_padding(module, tuple(x.shape[-2:])).pads
    if not hasattr(module, "kernel_size"):  # a pad module
        h, w = x.shape[-2:]
        return slice(top, top + h), slice(left, left + w)
    spans = []
    for axis, pad in ((0, top), (1, left)):
        k = _pair(module.kernel_size)[axis]
        s = _pair(module.stride)[axis]
        d = _pair(getattr(module, "dilation", 1))[axis]
        n = x.shape[-2 + axis]
        lo = math.ceil(pad / s)
        hi = (n - 1 + pad - (k - 1) * d) // s
        spans.append(slice(lo, max(lo, hi + 1)))
    return spans[0], spans[1]


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def capture_inputs(model: nn.Module, names: set[str], x: torch.Tensor,
                   output: bool = False) -> dict[str, torch.Tensor]:
    """The first input (or ``output``) each named module gets in one forward pass of ``model`` on ``x``."""
    seen: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def fn(module, inputs, out) -> None:
            if name not in seen:  # a clone: later in-place ops (x += shortcut) must not change it
                seen[name] = (out if output else inputs[0]).detach().clone()
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n in names]
    try:
        forward(model, x)
    finally:
        for h in handles:
            h.remove()
    return seen


def capture_outputs(model: nn.Module, names: set[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    return capture_inputs(model, names, x, output=True)


def border_layers(model: nn.Module, x: torch.Tensor) -> set[str]:
    """Layers that pad with a constant frame during a forward pass of ``model`` on ``x``."""
    found: set[str] = set()

    def hook(name: str):
        def fn(module, inputs, output) -> None:
            padding = layer_padding(module, tuple(inputs[0].shape[-2:]))
            if padding is not None and padding.makes_border:
                found.add(name)
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if n and layer_padding(m, (1, 1)) is not None]
    try:
        forward(model, x)
    finally:
        for h in handles:
            h.remove()
    return found


def window_shift(old: nn.Module, new: nn.Module, x: torch.Tensor) -> tuple[int, int] | None:
    """Output rows/columns by which ``new``'s windows on ``x`` lie after ``old``'s same windows:
    ``(top_new - top_old) / stride`` per axis, None where that is not a whole number (then no
    output of one is an output of the other)."""
    hw = tuple(x.shape[-2:])
    (l0, _, t0, _), (l1, _, t1, _) = layer_padding(old, hw).pads, layer_padding(new, hw).pads
    shift = []
    for diff, s in ((t1 - t0, _pair(old.stride)[0]), (l1 - l0, _pair(old.stride)[1])):
        if diff % s:
            return None
        shift.append(diff // s)
    return shift[0], shift[1]


def check_conversion(original: nn.Module, converted: nn.Module, summary, x: torch.Tensor) -> str:
    """The conversion checks of the module docstring; returns a short detail."""
    if forward(converted, x).shape != forward(original, x).shape:
        raise CheckFailed("output shape changed")
    names = {c.name for c in summary.changed}
    inputs = capture_inputs(converted, names, x)
    old, new = dict(original.named_modules()), dict(converted.named_modules())
    full = {c.name for c in summary.changed if getattr(new[c.name], "padding_mode", None) == "full"}
    compared = 0
    with torch.no_grad():
        for name, inp in inputs.items():
            a, b = old[name](inp), new[name](inp)
            rows, cols = interior(old[name], inp)
            if name in full:  # grown by design: the same windows, shifted
                shift = window_shift(old[name], new[name], inp)
                if shift is None:
                    continue
                b = b[..., shift[0]:, shift[1]:][..., :a.shape[-2], :a.shape[-1]]
            elif a.shape != b.shape:
                raise CheckFailed(f"{name}: output shape {tuple(a.shape)} -> {tuple(b.shape)}")
            err = close(b[..., rows, cols], a[..., rows, cols])
            if err > TOLERANCE:
                raise CheckFailed(f"{name} ({type(old[name]).__name__}): interior differs by {err:.2e}")
            compared += a[..., rows, cols].numel() > 0
    left = border_layers(converted, x) - {s.name for s in summary.skipped} - full
    if left:
        raise CheckFailed(f"still zero-padded, not in skipped: {', '.join(sorted(left)[:3])}")
    return (f"{len(summary.changed)} switched ({compared} with interior compared), "
            f"{len(summary.skipped)} skipped")


# ----------------------------------------------------------------------------------------------
# operations


@dataclass
class Cell:
    """The state one (architecture, size) shares across its operations."""

    arch: Arch
    size: int
    model: nn.Module
    x: torch.Tensor
    report: object = None
    masked: nn.Module | None = None
    mask_summary: object = None
    cannot_run: str | None = None
    report_note: str = ""

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)


def op_find(cell: Cell) -> str:
    before = snapshot(cell.model)
    cell.report = run_refusable(cell.model, lambda: find_pans(cell.model, cell.input_size, **FIND_ARGS))
    diff = changed(cell.model, before)
    if diff:
        raise CheckFailed(f"find_pans modified the model: {diff}")
    missing = ({n for n, _ in conv_layers(cell.model)} - {layer.name for layer in cell.report.layers}
               - set(unsupported_layers(cell.model)))
    if missing:
        raise CheckFailed(f"{len(missing)} convolutions missing from the report, e.g. {sorted(missing)[0]}")
    return f"{cell.report.count} PANs / {cell.report.total_filters} filters"


def op_convert(mode: str) -> Callable[[Cell], str]:
    def run(cell: Cell) -> str:
        if cell.cannot_run:
            raise Skipped(cell.cannot_run)
        twin = copy.deepcopy(cell.model)
        size = {"input_size": cell.input_size} if mode == "full" else {}
        summary = run_refusable(twin, lambda: convert_padding(twin, mode, **size))
        detail = check_conversion(cell.model, twin, summary, cell.x)
        return detail + (f"; {roll_invariance(twin, cell.x)}" if mode == "circular" else "")
    return run


def total_stride(model: nn.Module, x: torch.Tensor) -> int:
    """Input side / smallest output side of a conv on a spatial map (not on the 1x1 of a
    squeeze-excitation): the network's total stride, for square inputs."""
    sides: list[int] = []

    def hook(module, inputs, out) -> None:
        if inputs[0].shape[-1] > 1:
            sides.append(out.shape[-1])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        forward(model, x)
    finally:
        for h in handles:
            h.remove()
    return x.shape[-1] // min(sides)


def roll_invariance(model: nn.Module, x: torch.Tensor) -> str:
    """Information, not a check: a model whose every padding is circular is exactly invariant to
    circular rolls of its input by its total stride (global pooling), so a difference shows what
    convert_padding does not switch: -inf max-pool frames (by design), padding inside a module's
    forward (F.pad), ceil-mode windows, position embeddings."""
    stride = total_stride(model, x)
    if stride >= x.shape[-1]:
        return "roll invariance not measurable (total stride >= input side)"
    err = close(forward(model, x.roll((stride, stride), (-2, -1))), forward(model, x))
    return f"{'' if err <= TOLERANCE else 'not '}invariant to rolls by the total stride {stride} (diff {err:.0e})"


def need_report(cell: Cell):
    """The cell's ``find`` report; where ``find`` was refused at this size, the report of a scan
    at the first larger size of :data:`FALLBACK_SIZES` that works (a report names layers and
    channels, whatever the input size)."""
    if cell.cannot_run:
        raise Skipped(cell.cannot_run)
    for size in (s for s in FALLBACK_SIZES if s > cell.size and cell.report is None):
        try:
            cell.report = find_pans(cell.model, (3, size, size), **FIND_ARGS)
            cell.report_note = f"; report of the {size} px scan"
        except Exception:  # noqa: BLE001  recorded in the find cell at that size
            continue
    if cell.report is None:
        raise Skipped("no find_pans report at this or a larger size")
    return cell.report


def op_prune_mask(cell: Cell) -> str:
    report = need_report(cell)
    masked = copy.deepcopy(cell.model)
    summary = run_refusable(masked, lambda: prune_pans(masked, report))
    if forward(masked, cell.x).shape != forward(cell.model, cell.x).shape:
        raise CheckFailed("output shape changed")
    check_silenced(masked, summary, cell.x)
    cell.masked, cell.mask_summary = masked, summary
    return f"{summary.count} channels masked and silent{cell.report_note}"


def check_silenced(model: nn.Module, summary, x: torch.Tensor) -> None:
    """Every masked channel outputs exactly 0 after its BatchNorm (or conv, without one), except
    those ``summary.not_silenced`` explains."""
    outputs = {summary.batchnorms.get(layer, layer): layer for layer in summary.masked
               if layer not in summary.not_silenced}
    seen = capture_outputs(model, set(outputs), x)
    for name, out in seen.items():
        chans = summary.masked[outputs[name]]
        if out[:, chans].abs().max() > 0:
            raise CheckFailed(f"masked channels of {outputs[name]} are not 0 after {name}")


def op_prune_remove(cell: Cell) -> str:
    report = need_report(cell)
    if cell.masked is None:
        raise Skipped("no masked model to compare with")
    removed = copy.deepcopy(cell.model)
    summary = run_refusable(removed, lambda: prune_pans(removed, report, mode="remove"))
    masked_out = forward(cell.masked, cell.x)
    err = close(forward(removed, cell.x), masked_out)
    if err > TOLERANCE:
        raise CheckFailed(f"removed differs from masked by {err:.2e}")
    cut = sum(len(v) for v in summary.removed.values())
    return (f"{cut} channels cut, {len(summary.not_removable)} layers masked instead; relative diff "
            f"{err:.0e} at output scale {masked_out.abs().max():.1e}{cell.report_note}")


def op_convert_masked(cell: Cell) -> str:
    """``convert_padding`` (replicate) of the masked model: the conversion checks against the
    masked model, and the masked channels stay silent."""
    need_report(cell)
    if cell.masked is None:
        raise Skipped("no masked model")
    twin = copy.deepcopy(cell.masked)
    summary = run_refusable(twin, lambda: convert_padding(twin, "replicate"))
    detail = check_conversion(cell.masked, twin, summary, cell.x)
    check_silenced(twin, cell.mask_summary, cell.x)
    return f"{detail}; masked channels silent"


def op_monitor(cell: Cell) -> str:
    module = _Classifier(copy.deepcopy(cell.model).train())
    data = _loader(cell.size)
    monitor = PANMonitor(cell.input_size, model_attr="model", log_tables=False, **MONITOR_ARGS)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
                          logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, accelerator="cpu", devices=1, default_root_dir=tmp,
                          callbacks=[monitor])
        try:
            trainer.fit(module, data, data)
        except Exception as err:
            if module.steps:  # not refused at setup: the callback ended a training run
                raise CheckFailed(f"fit stopped after {module.steps} steps: {first_line(err)}") from err
            if cell.cannot_run and not raised_by_pan_repair(err):
                raise Skipped(f"{cell.cannot_run} (the fit fails in the model's own forward)") from err
            raise
    scans = monitor.history.scans
    warned = [str(w.message).splitlines()[0] for w in caught
              if "pan" in str(w.message).lower() and "no logger" not in str(w.message)]
    return f"{len(scans)} scan(s)" + (f"; warned: {warned[0][:100]}" if warned else "")


def _loader(size: int):
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=2)


class _Classifier(LightningModule):
    """Trains the model to shrink its (first) output: any loss will do for a smoke test."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.steps = 0

    def _loss(self, batch) -> torch.Tensor:
        out = self.model(batch[0])
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.square().mean()

    def training_step(self, batch, batch_idx):
        self.steps += 1
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


class Skipped(Exception):
    """An operation that cannot run because an earlier one of its cell did not produce its input."""


def run_refusable(model: nn.Module, fn: Callable):
    """``fn()``; an exception it raises is re-raised with the model's state before it attached,
    so that :func:`classify` can tell whether the refusal left the model as it was."""
    before = snapshot(model)
    try:
        return fn()
    except Exception as err:
        err.zoo_before, err.zoo_model = before, model
        raise


OPERATIONS: dict[str, Callable[[Cell], str]] = {
    "find": op_find,
    **{f"convert_{m}": op_convert(m) for m in CONVERT_MODES},
    "prune_mask": op_prune_mask,
    "prune_remove": op_prune_remove,
    "convert_masked": op_convert_masked,
    "monitor": op_monitor,
}


def run_op(op: str, cell: Cell) -> dict:
    start = time.perf_counter()
    try:
        status, detail = "pass", OPERATIONS[op](cell)
    except Skipped as why:
        status, detail = "n/a", str(why)
    except Exception as err:
        status, detail = classify(err, getattr(err, "zoo_model", None), getattr(err, "zoo_before", None))
    return {"model": cell.arch.name, "size": cell.size, "op": op, "status": status, "detail": detail,
            "seconds": round(time.perf_counter() - start, 2)}


def run_cell(a: Arch, size: int, ops: list[str]) -> list[dict]:
    """All ``ops`` on architecture ``a`` at ``size`` (``find`` and ``prune_mask`` run first when
    a pruning op needs them, and are then recorded too)."""
    try:
        model = build(a, size)
    except Exception as err:  # noqa: BLE001  (the zoo's own problem, not pan_repair's)
        return [{"model": a.name, "size": size, "op": op, "status": "n/a",
                 "detail": f"cannot build: {first_line(err)}", "seconds": 0.0} for op in ops]
    g = torch.Generator().manual_seed(1)
    cell = Cell(a, size, model, torch.randn(2, 3, size, size, generator=g))
    try:
        forward(model, cell.x)
    except Exception as err:  # noqa: BLE001  the model itself cannot run: only refusals to check
        cell.cannot_run = f"the model itself cannot run at {size} px: {first_line(err)[:100]}"
    needed = set(ops)
    if needed & {"prune_mask", "prune_remove", "convert_masked"}:
        needed.add("find")
    if needed & {"prune_remove", "convert_masked"}:
        needed.add("prune_mask")
    rows = [run_op(op, cell) for op in OPS if op in needed]
    print(" ".join(f"{r['op']}={r['status']}" for r in rows), f"{a.name}@{size}", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------
# cache and report


def load_cache(path: Path) -> dict[tuple[str, int, str], dict]:
    rows: dict[tuple[str, int, str], dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[(row["model"], row["size"], row["op"])] = row
    return rows


def write_cache(path: Path, rows: dict[tuple[str, int, str], dict]) -> None:
    """The cache, compacted: one line per cell and operation, the latest result."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows.values()))


def append_cache(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def machine() -> str:
    return (f"{platform.platform()}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
            f"torch threads, torch {torch.__version__}, Python {platform.python_version()}")


def cell_text(row: dict | None) -> str:
    if row is None:
        return "–"
    detail = row["detail"].replace("|", "\\|")
    if row["status"] == "pass":
        return "pass" if not row["op"] in ("find", "prune_remove") else f"pass ({detail})"
    label = "**FAIL**" if row["status"] == "FAIL" else row["status"]
    return f"{label} ({detail[:160]})"


def render(rows: dict[tuple[str, int, str], dict], cells: list[tuple[Arch, int]], wall_s: float | None) -> str:
    """The markdown report: counts per operation, then the table architecture x operation."""
    lines = ["# Model-zoo sweep: pan_repair operations on timm and torchvision architectures", "",
             "Command: `python benchmarks/zoo.py` (results cached in `benchmarks/results/zoo.jsonl`)  ",
             f"Machine: {machine()}  ",
             f"timm {_version('timm')}, torchvision {_version('torchvision')}; random weights (seed 0)  "]
    seconds = sum(r["seconds"] for (m, s, _), r in rows.items() if (m, s) in {(a.name, z) for a, z in cells})
    lines.append(f"Time of the operations shown (one thread): {seconds / 60:.1f} min"
                 + (f"; wall time of the last run (the cells it computed): {wall_s / 60:.1f} min"
                    if wall_s is not None else ""))
    lines += ["", __doc__.split("\n\n", 1)[1].rsplit("\n\nResults are cached", 1)[0], "",
              "## Pass counts per operation", "",
              f"{len(cells)} cells (architecture x size) of {len({a.name for a, _ in cells})} architectures.", "",
              "| operation | pass | refused | FAIL | n/a | architectures without FAIL |", "|---|---|---|---|---|---|"]
    archs = list(dict.fromkeys(a.name for a, _ in cells))
    for op in OPS:
        got = [rows.get((a.name, s, op)) for a, s in cells]
        count = {k: sum(1 for r in got if r and r["status"] == k) for k in ("pass", "refused", "FAIL", "n/a")}
        failing = {r["model"] for r in got if r and r["status"] == "FAIL"}
        lines.append(f"| {op} | {count['pass']} / {len(cells)} | {count['refused']} | {count['FAIL']} | "
                     f"{count['n/a']} | {len(archs) - len(failing)} / {len(archs)} |")
    lines += ["", "## Distinct failures and refusals", "",
              "| operation (code) | status | reason | cells |", "|---|---|---|---|"]
    lines += distinct_problems([rows[(a.name, s, op)] for a, s in cells for op in OPS if (a.name, s, op) in rows])
    lines += ["", "## Architectures", "", "| architecture | padding machinery |", "|---|---|"]
    lines += [f"| `{a.name}` | {a.machinery} |" for a in dict.fromkeys(a for a, _ in cells)]
    lines += ["", "## Results per architecture, size and operation", "",
              "| architecture @ size | " + " | ".join(OPS) + " |", "|---" * (len(OPS) + 1) + "|"]
    for a, s in cells:
        lines.append(f"| `{a.name}` @ {s} | " + " | ".join(cell_text(rows.get((a.name, s, op))) for op in OPS)
                     + " |")
    return "\n".join(lines) + "\n"


#: The pan_repair code each operation exercises (where its failures are to be fixed).
CODE = {"find": "detector.py", "prune_mask": "pruning.py", "prune_remove": "channel_removal.py",
        "convert_masked": "padding_switch.py", "monitor": "callbacks/monitor.py",
        **{f"convert_{m}": "padding_switch.py" for m in CONVERT_MODES}}


def distinct_problems(rows: list[dict]) -> list[str]:
    """One table row per (operation, status, reason) among refused and FAIL cells, with its cells."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for r in rows:
        if r["status"] in ("refused", "FAIL"):
            reason = re.sub(r"\d+x\d+|\(\d+, \d+, \d+\)|\d+ steps", "N", r["detail"])
            groups.setdefault((r["op"], r["status"], reason), []).append(f"{r['model']}@{r['size']}")
    return [f"| {op} ({CODE[op]}) | {status} | {reason.replace('|', '/')[:200]} | {len(where)}: "
            f"{', '.join(where[:4])}{', ...' if len(where) > 4 else ''} |"
            for (op, status, reason), where in sorted(groups.items())]


def _version(name: str) -> str:
    try:
        return __import__(name).__version__
    except ImportError:
        return "missing"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=None, help="architectures (default: all)")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--no-default-size", action="store_true", help="skip the models' own sizes")
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    parser.add_argument("--fresh", action="store_true", help="recompute cached cells")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, default=REPORT)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    archs = [arch(n) for n in args.models] if args.models else list(ARCHS)
    cells = [(a, s) for a in archs for s in sizes_of(a, tuple(args.sizes), not args.no_default_size)]
    rows = load_cache(args.cache)
    start, computed = time.perf_counter(), False
    for a, s in cells:
        todo = [op for op in args.ops if args.fresh or (a.name, s, op) not in rows]
        if todo:
            computed = True
            new = run_cell(a, s, todo)
            append_cache(args.cache, new)
            rows.update({(r["model"], r["size"], r["op"]): r for r in new})
    wall = time.perf_counter() - start
    write_cache(args.cache, rows)
    shown = [(a, s) for a in ARCHS for s in sizes_of(a, SIZES, True) if any((a.name, s, op) in rows for op in OPS)]
    args.out.write_text(render(rows, shown, wall if computed else None))
    print(f"wall {wall / 60:.1f} min; wrote {args.out}")


if __name__ == "__main__":
    main()
