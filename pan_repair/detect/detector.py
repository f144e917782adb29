"""The PAN detector: :func:`find_pans`. The definition of a PAN lives here, in one place.

**Images.** With ``data`` (a tensor, ``DataLoader`` or ``Dataset``; the callbacks pass a fixed
sample of the training data) the scores are measured on up to ``max_images`` of the model's own
images. Without data, on synthetic probes in the model's declared input convention
(:func:`pan_repair.detect.probes.resolve_convention`: ``mean``/``std``, ``input_range``, timm's
``pretrained_cfg``, else an assumption that ``report.assumptions`` records): uniform images and
textures on a flat mid-grey canvas, built as pixels in [0, 1] and normalised like the model's inputs.
The assumption is checked against the model itself: where its stem conv feeds a trained BatchNorm,
whose running mean implies the training images' mean pixel level under the convention
(:func:`pan_repair.detect.implied.implied_pixel_level`), a level ``u`` at least 0.2 from the canvas's
0.5 (a dark or light background, another normalisation) puts the textures on a canvas at ``u``
(clipped to [0, 1]) and the border score on those textured canvases instead of on uniform images
(as on data: the images' own border is what the padding's edge is compared with), and
``report.assumptions`` says so.

For every output channel ``c`` of every 2-D convolution (eval mode, no gradients; the model is left
exactly as found):

* *border score* ``b_c`` (only for layers whose own padding is a constant frame: zeros,
  ``ConstantPad2d``, TF-"same"). On the layer's real input ``x`` (from the data images, or the
  uniform probes without data; the textured canvases where they follow the stem), the padding's own effect is
  ``D = conv(pad_zero(x)) - conv(pad_replicate(x))`` (bias cancels); it lives on the border only.
  Per padded side ``s``: ``rms_s`` of ``D`` on the outermost output line, corners excluded, over the
  images; ``b_c = max_s rms_s / u_c`` with the channel's unit ``u_c = max(sigma_c, kappa_c)``:
  ``sigma_c`` its std (the running std of the trained BatchNorm it feeds, else its std over the
  data images; data-free: over all probes) and ``kappa_c`` its *content response*, the mean over
  the data images (data-free: the centred texture probes) of ``max |y - mean y|`` over the output
  positions whose windows touch no padding; each floored at 5% of the layer's median. So a
  channel that answers the padding's edge as it answers edges in the images (an edge filter on
  [0, 1] digits on white) scores about 1 or less; a border detector answers the border beyond
  anything the content makes it do. Where the images' border equals what the padding adds
  (digits on black, in [0, 1]), the first layer's ``D`` is 0: it cannot see the border there.
  First layer, uniform input ``v``: ``D_top = -sum_{taps on the top padding} w * v``, checkable
  by hand. Needs an output of at least
  3x3 and at least 2 positions per padded axis whose windows touch no padding (``kappa`` is a
  spread over them: on a 3x3 output of a 3x3 kernel, one position, ``kappa = 0`` by construction
  and the score would be the deviation over ``sigma`` alone, which at 96 px flagged 437 of
  resnet18's layer4 channels data-free); other layers are listed in ``report.unmeasured``.
* *position score* ``p_c`` in [0, 1] (every conv): ``P`` base images (data images or probe
  textures) are rolled circularly to ``Q`` evenly spaced places along rows and along columns
  (:func:`pan_repair.detect.probes.roll_grid`). ``eta2_a`` is the share of the variance of the channel's
  globally pooled response (``relu(bn(conv(x)))`` where the conv feeds a BatchNorm, what the next
  layer sees; the conv output otherwise) explained by the roll along axis ``a``:
  ``sum_q P (mean_p r_pq - mean r)^2 / sum_pq (r_pq - mean r)^2``. The same is measured on a *twin*
  with the same weights and circular padding everywhere (convs, pads, pools): it has no border, and
  whatever varies with the roll there (stride aliasing, a roll that is not a multiple of the total
  stride, tiny maps) is not caused by padding. ``p_c = max_a max(0, eta2_a - eta2_a(twin))``. A
  circular-padded model is its own twin: ``p_c = 0`` at every size. (When the steps are
  multiples of the total stride the twin runs on one base image first; if it is exactly
  roll-invariant there, as a circular network is when every stride also divides its input, its
  eta2 is 0 and the rest of its pass is skipped. Off the stride grid, at small inputs, it runs
  on every roll: about a second probe forward, the main cost of a scan there.)

**Rule.** A channel is a PAN of kind ``"border"`` if ``b_c >= border_threshold`` (default 1.4 on
probes, 2.5 on data), else of kind ``"position"`` if ``p_c >= position_threshold`` (default 0.9 on
probes, 0.5 on data); each channel is counted once. Without data, a layer whose median channel
scores ``p >= 0.5`` (:data:`SATURATED_MEDIAN`) counts no position PANs: the whole layer varies with
where the probe texture sits (small maps, every window near the border), so the probes cannot tell
which channels encode position; ``report.unmeasured`` names the layer and a scan on data resolves
it. ``sides``: the sides
with ``rms_s / u_c >= border_threshold`` and at least half the strongest side's (border), or
the axes with a score ``>= position_threshold`` (top+bottom for rolls along rows). ``sign``: +1 if
the BatchNorm-scaled response is higher at the border (border kind: mean ``D`` on the strongest
side, over the data images or the bright uniform probes; position kind: the roll that puts the
base image's centre nearest an edge vs centred), else -1.

**Padding dependence** (``dependence=True``), what a model that leans on its padding shows even
with few PANs. On up to 8 of the images (data, or the probe textures): every padding switched to
replicate (a content-preserving twin, same weights), ``output_shift`` = mean total-variation
distance of the softmax outputs and ``flip_rate`` = share of changed argmax
(:func:`pan_repair.metrics.functional.padding_reliance`; for non-(N, K) outputs, the relative
L2 change, and no flip rate). A model with several outputs (heads) reports each under
``"outputs"`` and the largest as its figures: one head that leans on the padding is enough.
Each channel's *share* of it is its first-order part: with ``J`` the summed log-probability of
the predicted classes and ``D_c`` the channel's own padding effect over its whole output (zero
minus replicate padding), ``a_c = |sum <dJ/dy_c, D_c>| / N`` (nats per image);
``share_c = a_c / sum a``. ``report.ranked()`` lists channels by share.
"""
from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..layers.module_state import device_dtype
from ..layers.padding import conv_layers, unsupported_layers
from .dependence import DEPENDENCE_IMAGES, padding_dependence
from .forward import Prepass, check_input, prepass, run_model, scan_memory_format, total_stride
from .implied import stem_level
from .position import layer_eta2, twin_eta2
from .probes import (ProbeBatch, calibration_images, data_canvases, resolve_convention, roll_grid,
                     synthetic_images)
from .recorder import LayerStats, inspection
from .report import SIDES, LayerInfo, Pan, PanReport

__all__ = ["find_pans", "probe_batch", "scan_probes", "total_stride", "DEFAULT_BORDER_THRESHOLD",
           "DEFAULT_POSITION_THRESHOLD", "DEFAULT_DATA_BORDER_THRESHOLD", "DEFAULT_DATA_POSITION_THRESHOLD",
           "SATURATED_MEDIAN"]

#: Default threshold on the border score (units ``u_c``) on synthetic probes: Tukey's far-out
#: fence (Q3 + 3 IQR) of the pretrained Lite0's data-free border scores (benchmarks/threshold_calibration.py)
DEFAULT_BORDER_THRESHOLD = 1.4
#: ... and on the model's own data: the same fence of Lite0's scores on photos
DEFAULT_DATA_BORDER_THRESHOLD = 2.5
#: Default threshold on the position score (share of variance caused by padding) on synthetic probes.
DEFAULT_POSITION_THRESHOLD = 0.9
#: ... and on the model's own data, whose content varies more than the probe textures' (same
#: channels score lower: on the causal digits CNN its position carriers score 0.6-0.9 on data; on
#: the validity matrix's 60 digits networks 0.5 meets the causal margin in 45 where 0.6 meets it in 36,
#: never flagging over 10% of the filters unselectively, benchmarks/results/threshold_matrix.md)
DEFAULT_DATA_POSITION_THRESHOLD = 0.5
#: Data-free only: a layer whose median channel has a position score of at least this on the probes
#: varies with placement as a whole (one texture on a flat canvas: in layer3.1 and layer4 of two digits
#: resnet18s at 224 px, medians 0.65-0.97 there against at most 0.20 on their images), so the probes
#: cannot single out channels in it: no position PANs are counted there and ``report.unmeasured``
#: names it (benchmarks/results/saturated_layers.md). The data threshold: half the layer or more
#: would be PANs at it.
SATURATED_MEDIAN = DEFAULT_DATA_POSITION_THRESHOLD
_SIGMA_FLOOR = 0.05


def border_unit(sigma: torch.Tensor, content: torch.Tensor | None) -> torch.Tensor:
    """The border score's unit per channel: ``max(sigma, kappa)``, the larger of its std and its
    content response (see the module docstring), ``kappa`` floored at 5% of the layer's median."""
    if content is None:
        return sigma
    return torch.maximum(sigma, content.clamp_min(_SIGMA_FLOOR * content.median().clamp_min(1e-12)))


def _channel_scale(stat: LayerStats) -> torch.Tensor:
    return border_unit(_channel_sigma(stat), stat.content)


def _channel_sigma(stat: LayerStats) -> torch.Tensor:
    if stat.running_std is not None:  # the conv feeds a trained BatchNorm
        sigma = stat.running_std
    else:
        mean = stat.sum / stat.count
        sigma = (stat.sq_sum / stat.count - mean.pow(2)).clamp_min(0).sqrt()
    floor = _SIGMA_FLOOR * sigma.median().clamp_min(1e-12)
    return sigma.clamp_min(floor)


def _classify(stat: LayerStats, position: torch.Tensor, eta2: torch.Tensor, edge: torch.Tensor,
              tb: float, tp: float) -> tuple[list[Pan], dict[str, list[float]]]:
    """PANs of one layer from its border statistics and its padding-caused position scores
    ``eta2`` (2, C) (``position`` = their max over the axes)."""
    c = stat.conv.out_channels
    bn_sign = stat.bn_sign if stat.bn_sign is not None else torch.ones(c)
    if stat.border_rms is not None:
        per_side = stat.border_rms / _channel_scale(stat)  # (4, C)
        border = per_side.max(dim=0).values
    else:
        per_side, border = torch.zeros(4, c), torch.zeros(c)
    candidates = torch.nonzero((border >= tb) | (position >= tp)).flatten().tolist()
    per_side_l, eta2_l = per_side.T.tolist(), eta2.T.tolist()
    border_l, position_l, bn_sign_l = border.tolist(), position.tolist(), bn_sign.tolist()
    # the border-mean of each channel's strongest side, the edge difference of its strongest axis
    border_raw = (stat.border_mean.gather(0, per_side.argmax(dim=0, keepdim=True))[0].tolist()
                  if stat.border_rms is not None else [0.0] * c)
    edge_raw = edge.gather(0, eta2.argmax(dim=0, keepdim=True))[0].tolist()
    pans = []
    for ch in candidates:  # PANs only: a few percent of the channels
        b, p = border_l[ch], position_l[ch]
        if b >= tb:
            sides = tuple(s for s, v in zip(SIDES, per_side_l[ch]) if v >= max(tb, b / 2))
            raw, kind, score = border_raw[ch], "border", b
        else:
            axes = [a for a in range(2) if eta2_l[ch][a] >= tp]
            sides = tuple(s for a in axes for s in (("top", "bottom"), ("left", "right"))[a])
            raw, kind, score = edge_raw[ch], "position", p
        scaled = kind == "position" and stat.pooled_act is not None  # BatchNorm already applied
        sign = 1 if raw * (1.0 if scaled else bn_sign_l[ch]) >= 0 else -1
        pans.append(Pan(stat.name, ch, sides, sign, score, kind, b, p))
    return pans, {"border": _rounded(border, 5), "position": _rounded(position, 5)}


def _rounded(values: torch.Tensor, digits: int) -> list[float]:
    """``values`` as floats rounded to ``digits`` decimals (``k / 10^digits``, the nearest double)."""
    scale = 10.0 ** digits
    return ((values.double() * scale).round() / scale).tolist()


def _resolve_size(model: nn.Module, input_size: tuple[int, ...] | None, images: torch.Tensor | None,
                  assumptions: list[str]) -> tuple[int, int, int]:
    if images is not None:
        size = tuple(int(v) for v in images.shape[1:])
        if input_size is not None and tuple(int(v) for v in input_size) != size:
            raise ValueError(f"input_size {tuple(input_size)} does not match the data's images {size}")
        return size
    if input_size is not None:
        return tuple(int(v) for v in input_size)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("input_size") and len(cfg["input_size"]) == 3:
        assumptions.append(f"input size {tuple(cfg['input_size'])} from timm pretrained_cfg")
        return tuple(int(v) for v in cfg["input_size"])
    assumptions.append("input size assumed (3, 224, 224); pass input_size or data")
    return (3, 224, 224)


def _probes(model: nn.Module, input_size: tuple[int, int, int], images: torch.Tensor | None, n_patterns: int,
            seed: int, assumptions: list[str], convention: dict[str, Any],
            pre: Prepass | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of the border score and the base images of the rolls: the data and canvases
    made of it, or uniform probes and textures in the input convention; where the model's stem
    statistics (``pre`` names the stem, see :mod:`.implied`) imply another mean pixel level than
    the mid-grey canvas, textures on a canvas at that level, which the border score reads too."""
    if images is not None:
        assumptions.append(f"measured on {len(images)} data images")
        return images, data_canvases(images, n_patterns, seed)
    conv = resolve_convention(model, input_size[0], **convention)
    assumptions.append(conv.describe())
    level = None if pre is None else stem_level(model, pre.stem, pre.feeds_bn, conv, input_size)
    if level is None:
        return synthetic_images(input_size, conv, n_patterns, seed=seed)
    assumptions.append(level[1])
    _, canvases = synthetic_images(input_size, conv, n_patterns, seed=seed, canvas=level[0])
    return canvases, canvases


def scan_probes(model: nn.Module, input_size: tuple[int, int, int] | None = None, *, data: Any = None,
                n_patterns: int = 8, n_positions: int = 8, max_images: int = 16, seed: int = 0,
                **convention: Any) -> ProbeBatch:
    """The images :func:`find_pans` runs ``model`` on, with its arguments: border images, then
    the rolls, and the images of the content response (``convention``: ``input_range``,
    ``mean``, ``std``, as :func:`find_pans` takes them)."""
    images = calibration_images(data, max_images) if data is not None else None
    input_size = _resolve_size(model, input_size, images, [])
    check_input(model, input_size)
    pre = prepass(model, input_size, *device_dtype(model))
    border, base = _probes(model, input_size, images, n_patterns, seed, [], convention, pre)
    grid = roll_grid(base, n_positions, pre.stride)
    content = None if images is not None else len(border) + grid.centred()
    return ProbeBatch(torch.cat([border, grid.images]), len(border), grid.n_patterns, grid.n_positions,
                      grid.distances, content)


def probe_batch(model: nn.Module, input_size: tuple[int, int, int] | None = None, *, data: Any = None,
                n_patterns: int = 8, n_positions: int = 8, max_images: int = 16, seed: int = 0,
                **convention: Any) -> torch.Tensor:
    """The images :func:`find_pans` runs ``model`` on (border images, then the rolls), e.g. to
    time a plain forward of them: :func:`scan_probes`' images."""
    return scan_probes(model, input_size, data=data, n_patterns=n_patterns, n_positions=n_positions,
                       max_images=max_images, seed=seed, **convention).images


def find_pans(
    model: nn.Module,
    input_size: tuple[int, int, int] | None = None,
    *,
    data: Any = None,
    input_range: tuple[float, float] | None = None,
    mean: float | tuple[float, ...] | None = None,
    std: float | tuple[float, ...] | None = None,
    border_threshold: float | None = None,
    position_threshold: float | None = None,
    n_patterns: int = 8,
    n_positions: int = 8,
    max_images: int = 16,
    dependence: bool = True,
    batch: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = False,
) -> PanReport:
    """Find the Padding Aware Neurons of ``model`` (see the module docstring for the definition).

    Args:
        model: any ``nn.Module`` with 2-D convolutions; left exactly as found (parameters,
            buffers, gradients, train/eval mode of every submodule; no hooks remain), also on error.
        input_size: ``(C, H, W)``; default: the data's, else timm's ``pretrained_cfg``, else
            (3, 224, 224) (recorded in ``report.assumptions``).
        data: the model's own images: a tensor (N, C, H, W), a ``DataLoader`` or a ``Dataset``;
            up to ``max_images`` are used. Without it, synthetic probes in the input convention.
        input_range, mean, std: the input convention of data-free probes (see
            :func:`pan_repair.detect.probes.resolve_convention`; their canvas follows the level the
            stem's BatchNorm implies where it is far from mid-grey); ignored with ``data``.
        border_threshold: minimum border score (units of the channel's std or content response) of a border PAN; default
            :data:`DEFAULT_DATA_BORDER_THRESHOLD` with data, :data:`DEFAULT_BORDER_THRESHOLD` on probes.
        position_threshold: minimum position score (share of variance, [0, 1]); default
            :data:`DEFAULT_DATA_POSITION_THRESHOLD` with data, :data:`DEFAULT_POSITION_THRESHOLD`
            on probes.
        n_patterns, n_positions: base images and roll positions per axis (the roll batch holds
            ``2 * n_patterns * n_positions`` images; fewer positions on a small input).
        max_images: images taken from ``data``.
        dependence: measure the model-level padding dependence and each channel's share of it
            (one forward and backward of up to 8 images, one forward of a replicate twin).
        batch: former name of ``data`` (deprecated).
        seed: probe seed; the global RNG is not touched.
        progress: show a progress bar over the convolutions (tqdm, on stderr).

    Example:
        >>> import timm
        >>> from pan_repair import find_pans
        >>> report = find_pans(timm.create_model("resnet10t"), input_size=(3, 64, 64), n_patterns=2)
        >>> report.total_filters
        2936
    """
    if batch is not None:
        warnings.warn("find_pans(batch=...) is now data=...: the images are used for the scores", FutureWarning,
                      stacklevel=2)
        data = batch if data is None else data
    assumptions: list[str] = []
    images = calibration_images(data, max_images) if data is not None else None
    input_size = _resolve_size(model, input_size, images, assumptions)
    if border_threshold is None:
        border_threshold = DEFAULT_BORDER_THRESHOLD if images is None else DEFAULT_DATA_BORDER_THRESHOLD
    if position_threshold is None:
        position_threshold = DEFAULT_POSITION_THRESHOLD if images is None else DEFAULT_DATA_POSITION_THRESHOLD
    check_input(model, input_size)
    device, dtype = device_dtype(model)
    pre = prepass(model, input_size, device, dtype)
    stride, feeds_bn = pre.stride, pre.feeds_bn
    memory_format = scan_memory_format(model, input_size, device, dtype)
    border_images, base = _probes(model, input_size, images, n_patterns, seed, assumptions,
                                  dict(input_range=input_range, mean=mean, std=std), pre)
    grid = roll_grid(base, n_positions, stride)
    bar = tqdm(total=sum(1 for _ in conv_layers(model)), desc="scanning convs", unit="conv",
               leave=False) if progress else None
    try:
        # the channel scale: on the data images themselves, or on every probe
        n_scale = len(border_images) if images is not None else None
        content = (torch.arange(len(border_images)) if images is not None else
                   len(border_images) + grid.centred())
        with inspection(model, n_border=len(border_images), progress=bar, feeds_bn=feeds_bn, n_scale=n_scale,
                        content=content) as rec:
            run_model(model, torch.cat([border_images, grid.images]).to(device, dtype), input_size, memory_format)
    finally:
        if bar is not None:
            bar.close()
    ran = [name for name, stat in rec.stats.items() if stat.ran]
    n_border = len(border_images)
    responses = {name: rec.stats[name].response()[n_border:] for name in ran if rec.stats[name].response() is not None}
    model_eta = layer_eta2(responses, grid)
    twin_eta, twin_ran = twin_eta2(model, grid, responses, feeds_bn, input_size, memory_format)
    if twin_ran:
        assumptions.append("the border-free (circular) twin varies with the rolls: its position share subtracted")
    if not grid.on_stride:
        assumptions.append(f"rolls of {grid.step} px, not multiples of the total stride {stride}: "
                           "position is counted only beyond the border-free twin's")
    dep = padding_dependence(model, (images if images is not None else base)[:DEPENDENCE_IMAGES],
                             input_size, memory_format) if dependence else None
    pans, scores, unmeasured = [], {}, {}
    for name in ran:
        stat = rec.stats[name]
        c = stat.conv.out_channels
        eta2, edge = model_eta.get(name, (torch.zeros(2, c), torch.zeros(2, c)))
        if twin_eta is None:  # the model pads nothing a circular switch changes: it is its own twin
            eta2 = torch.zeros_like(eta2)
        else:
            eta2 = (eta2 - twin_eta.get(name, torch.zeros_like(eta2))).clamp_min(0)
        position = eta2.max(dim=0).values
        median = float(position.median())
        saturated = images is None and median >= SATURATED_MEDIAN
        layer_pans, scores[name] = _classify(stat, position, eta2, edge, border_threshold,
                                             float("inf") if saturated else position_threshold)
        if dep is not None:
            share = dep.attribution.get(name)
            scores[name]["share"] = [0.0] * c if share is None else share.tolist()
        pans += layer_pans
        why = [f"border score not measured: {stat.unmeasured}"] if stat.unmeasured else []
        if saturated:
            why.append(f"position not resolved per channel: the median channel scores {median:.2f} "
                       "on the probes (the whole layer varies with placement); scan with data")
        if why:
            unmeasured[name] = "; ".join(why)
    if dep is not None:
        total = sum(sum(s["share"]) for s in scores.values()) or 1.0
        for s in scores.values():
            s["share"] = _rounded(torch.tensor(s["share"], dtype=torch.float64) / total, 6)
        share_of = {(n, ch): v for n, s in scores.items() for ch, v in enumerate(s["share"])}
        pans = [replace(p, share=share_of.get((p.layer, p.channel), 0.0)) for p in pans]
    layers = [LayerInfo(name, type(rec.stats[name].conv).__name__, rec.stats[name].conv.out_channels,
                        rec.stats[name].padding.mode, rec.stats[name].padding.pads,
                        rec.stats[name].padding.makes_border) for name in ran]
    dependence_summary = None if dep is None else {
        "mode": "replicate", "output_shift": round(dep.output_shift, 6),
        "flip_rate": None if dep.flip_rate is None else round(dep.flip_rate, 6), "images": dep.images,
        **({"outputs": [{"output_shift": round(sh, 6), "flip_rate": None if fl is None else round(fl, 6)}
                        for sh, fl in dep.per_output]} if dep.per_output else {})}
    return PanReport(pans, layers, input_size, border_threshold, position_threshold, scores,
                     _notes(layers), unsupported_layers(model), assumptions=assumptions,
                     unmeasured=unmeasured, padding_dependence=dependence_summary)


def _notes(layers: list[LayerInfo]) -> list[str]:
    modes = {}
    for layer in layers:
        if any(layer.pads) and not layer.makes_border:
            modes.setdefault(layer.padding_mode, []).append(layer.name)
    notes = []
    for mode, names in sorted(modes.items()):
        if mode == "circular":
            notes.append(f"{len(names)} layer(s) use circular padding: no border, no border detectors.")
        else:
            notes.append(f"{len(names)} layer(s) use {mode} padding: no border detectors of their own, "
                         "but content-preserving padding can still leak absolute position "
                         "(see position PANs).")
    unpadded = sum(1 for layer in layers if not any(layer.pads))
    if unpadded:
        notes.append(f"{unpadded} layer(s) have no padding (e.g. 1x1): they can only inherit position, "
                     "which the position score measures.")
    return notes
