"""The PAN detector: :func:`find_pans`. The definition of a PAN lives here, in one place.

**Images.** With ``data`` (a tensor, ``DataLoader`` or ``Dataset``; the callbacks pass a fixed
sample of the training data) the scores are measured on up to ``max_images`` of the model's own
images. Without data, on synthetic probes in the model's declared input convention
(:func:`pan_repair.detect.probes.resolve_convention`: ``mean``/``std``, ``input_range``, timm's
``pretrained_cfg``, else an assumption that ``report.assumptions`` records): uniform images and
textures on a flat mid-grey canvas, built as pixels in [0, 1] and normalised like the model's inputs.

For every output channel ``c`` of every 2-D convolution (eval mode, no gradients; the model is left
exactly as found):

* *border score* ``b_c`` (only for layers whose own padding is a constant frame: zeros,
  ``ConstantPad2d``, TF-"same"). On the layer's real input ``x`` (from the data images, or the
  uniform probes without data), the padding's own effect is
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
  3x3; smaller layers are listed in ``report.unmeasured``.
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
probes, 0.6 on data); each channel is counted once. ``sides``: the sides
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

import contextlib
import threading
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from timm.layers.norm_act import BatchNormAct2d
from torch import nn
from tqdm.auto import tqdm

from ..layers.border_geometry import border_windows, clean_range, strip
from ..layers.padding import BatchNormPairing, Padding, PadTracker, conv_layers, effective_weight, unsupported_layers, \
    untrained_bn
from ..metrics.functional import padding_reliance
from ..layers.module_state import device_dtype, eval_mode, structural_copy
from ..layers.padding_switch import convert_padding
from .probes import RollGrid, calibration_images, data_canvases, resolve_convention, roll_grid, synthetic_images
from .report import SIDES, LayerInfo, Pan, PanReport

__all__ = ["find_pans", "probe_batch", "total_stride", "DEFAULT_BORDER_THRESHOLD", "DEFAULT_POSITION_THRESHOLD",
           "DEFAULT_DATA_BORDER_THRESHOLD", "DEFAULT_DATA_POSITION_THRESHOLD"]

#: Default threshold on the border score (units ``u_c``) on synthetic probes: Tukey's far-out
#: fence (Q3 + 3 IQR) of the pretrained Lite0's data-free border scores (benchmarks/threshold_calibration.py)
DEFAULT_BORDER_THRESHOLD = 1.4
#: ... and on the model's own data: the same fence of Lite0's scores on photos
DEFAULT_DATA_BORDER_THRESHOLD = 2.5
#: Default threshold on the position score (share of variance caused by padding) on synthetic probes.
DEFAULT_POSITION_THRESHOLD = 0.9
#: ... and on the model's own data, whose content varies more than the probe textures' (same
#: channels score lower: on the causal digits CNN its position carriers score 0.6-0.9 on data)
DEFAULT_DATA_POSITION_THRESHOLD = 0.6
_SIGMA_FLOOR = 0.05
#: elementwise temporaries of the statistics (relu, square) are made this many bytes at a time, in
#: one reused buffer: a full-size temporary of a large activation costs more (fresh memory, page
#: faults) than the reduction itself
_CHUNK_BYTES = 4 << 20
#: images of the padding-dependence pass (it runs forward and backward)
_DEPENDENCE_IMAGES = 8
#: a twin whose pooled responses move over the rolls by less than this share of the model's own
#: spread of responses (per channel) is roll-invariant: its eta^2 is below 1e-6
_INVARIANT = 1e-3


@dataclass
class _LayerStats:
    name: str
    conv: nn.Conv2d
    padding: Padding | None = None
    border_rms: torch.Tensor | None = None   # (4, C): top, bottom, left, right
    border_mean: torch.Tensor | None = None  # (4, C)
    unmeasured: str | None = None  # why the border score could not be measured
    ran: bool = False  # executed in the probe forward
    pooled: torch.Tensor | None = None  # (N, C) globally pooled conv output (convs not feeding a BatchNorm)
    pooled_act: torch.Tensor | None = None  # (N, C) globally pooled ReLU(BatchNorm(conv output))
    sq_sum: torch.Tensor | None = None  # sum over images of the per-image spatial mean of y^2
    sum: torch.Tensor | None = None     # sum over images of the per-image spatial mean of y
    count: int = 0
    content: torch.Tensor | None = None  # (C,) mean over the content images of max interior |y - mean|
    bn: nn.modules.batchnorm._BatchNorm | None = None
    # the trained BatchNorm the blank pre-pass found this conv feeding: its running std is the
    # channel scale, so the scale statistics above are not gathered
    scale_bn: nn.modules.batchnorm._BatchNorm | None = None

    def response(self) -> torch.Tensor | None:
        """(N, C) pooled response the position score reads."""
        return self.pooled if self.pooled_act is None else self.pooled_act


@torch.no_grad()
def _border_deviation(x: torch.Tensor, conv: nn.Conv2d, padding: Padding) -> tuple[torch.Tensor, torch.Tensor]:
    """Per side and channel: rms of the padding's own effect ``D`` on the outermost line (corners
    excluded), and its
    mean over the images flagged ``bright`` (first half of the batch)."""
    weight = effective_weight(conv)
    windows = border_windows(tuple(x.shape[-2:]), conv, padding)
    c = conv.out_channels
    rms = torch.zeros(4, c, device=x.device, dtype=torch.float32)
    mean = torch.zeros_like(rms)
    # sides whose strips have one shape (top and bottom, left and right, usually) share a conv
    groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor, tuple]]] = {}
    for i, (rows, cols, line) in enumerate(windows):
        if rows is None or cols is None:
            continue
        part = strip(x, rows, cols, padding)
        groups.setdefault(tuple(part.shape), []).append((i, part, line))
    n = len(x)
    for members in groups.values():
        strips = torch.cat([part for _, part, _ in members]) if len(members) > 1 else members[0][1]
        out = F.conv2d(strips, weight, None, conv.stride, 0, conv.dilation, conv.groups)
        for k, (i, _, (row, col)) in enumerate(members):
            d = out[k * n:(k + 1) * n, :, row, col].float()
            rms[i] = d.pow(2).mean(dim=(0, 2)).sqrt()
            mean[i] = d[: n // 2].mean(dim=(0, 2))
    return rms, mean


def content_scale(y: torch.Tensor, index: torch.Tensor, size: tuple[int, int], conv: nn.Conv2d,
                   padding: Padding) -> torch.Tensor | None:
    """Per channel: the mean over the images ``index`` of the strongest interior response,
    ``max |y - mean y|`` over the output positions whose windows touch no padding (None where
    there are none)."""
    k, s, d = conv.kernel_size, conv.stride, conv.dilation
    left, right, top, bottom = padding.pads
    rows = clean_range(size[0], k[0], s[0], d[0], top, bottom)
    cols = clean_range(size[1], k[1], s[1], d[1], left, right)
    if (rows == slice(0, y.shape[-2]) and (top or bottom)) or (cols == slice(0, y.shape[-1]) and (left or right)):
        return None
    inner = y.index_select(0, index.to(y.device))[:, :, rows, cols].flatten(2).float()  # one copy, contiguous
    low, high = torch.aminmax(inner, dim=2)
    mean = inner.mean(dim=2)
    return torch.maximum(high - mean, mean - low).mean(dim=0)


_threads_lock = threading.Lock()
_threads_state = [0, 1]  # [depth, saved thread count]


@contextlib.contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """One CPU thread for the hooks' small, memory-bound statistics: splitting them over threads
    gains little, and each parallel region waits for every thread (costly on a busy machine).
    The thread count is restored after; re-entrant."""
    if device.type != "cpu":
        yield
        return
    with _threads_lock:
        if _threads_state[0] == 0:
            _threads_state[1] = torch.get_num_threads()
            if _threads_state[1] > 1:
                torch.set_num_threads(1)
        _threads_state[0] += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_state[0] -= 1
            if _threads_state[0] == 0 and _threads_state[1] > 1:
                torch.set_num_threads(_threads_state[1])


class _Pooler:
    """Per-image spatial means of ``relu(y)`` or ``y^2`` (float32) without a full-size temporary:
    on the CPU the elementwise step runs a few images at a time into one reused buffer."""

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None

    def __call__(self, y: torch.Tensor, op: str) -> torch.Tensor:
        per_image = y[0].numel()
        k = max(1, _CHUNK_BYTES // (4 * max(per_image, 1)))
        channels_last = y.dim() == 4 and not y.is_contiguous() and y.is_contiguous(memory_format=torch.channels_last)
        if y.device.type != "cpu" or k >= len(y) or not (y.is_contiguous() or channels_last):
            t = y.clamp_min(0) if op == "relu" else y.float().pow(2)
            return t.mean(dim=(2, 3), dtype=torch.float32)
        dtype = y.dtype if op == "relu" else torch.float32
        size = k * per_image
        if self._buffer is None or self._buffer.numel() < size or self._buffer.dtype != dtype:
            self._buffer = torch.empty(max(size, _CHUNK_BYTES // 4), dtype=dtype)
        parts = []
        for i in range(0, len(y), k):
            chunk = y[i:i + k]
            out = self._buffer[:chunk.numel()]
            out = out.view(chunk.shape) if not channels_last else \
                out.view(len(chunk), *chunk.shape[2:], chunk.shape[1]).permute(0, 3, 1, 2)
            if op == "relu":
                torch.clamp_min(chunk, 0, out=out)
            elif chunk.dtype == dtype:
                torch.mul(chunk, chunk, out=out)
            else:
                out.copy_(chunk).mul_(out)
            parts.append(out.mean(dim=(2, 3), dtype=torch.float32))
        return torch.cat(parts)


def _rectified(bn: nn.Module) -> bool:
    """The BatchNorm's output is already rectified: timm's ``BatchNormAct2d`` with a ReLU."""
    return type(bn) is BatchNormAct2d and type(bn.act) is nn.ReLU


class _Recorder:
    """Forward hooks that collect per-layer statistics during one forward of the scan's images:
    the border deviation on the first ``n_border`` images (0: none), the pooled response of every
    image, the channel scale over the first ``n_scale`` images (None: all; 0: none; convs without
    a trained BatchNorm)."""

    def __init__(self, model: nn.Module, n_border: int = 0, progress=None,
                 feeds_bn: dict[str, nn.Module] | None = None, n_scale: int | None = None,
                 content: torch.Tensor | None = None):
        self.n_border, self.progress, self.n_scale = n_border, progress, n_scale
        self.content = content  # indices of the images whose interior response is the content scale
        # convs whose response is read after their BatchNorm (from the blank pre-pass)
        self.feeds_bn = feeds_bn or {}
        self.device = device_dtype(model)[0]
        self.stats = {name: _LayerStats(name, conv) for name, conv in conv_layers(model)}
        for name, bn in self.feeds_bn.items():
            if name in self.stats and bn.running_var is not None and not untrained_bn(bn):
                self.stats[name].scale_bn = bn
        self._pads = PadTracker(model)
        self._pool = _Pooler()
        self._handles = [stat.conv.register_forward_hook(self._conv_hook(name)) for name, stat in self.stats.items()]
        self._pairing = BatchNormPairing(model, on_pair=self._bn_hook)

    def _bn_hook(self, name: str, bn: nn.Module, bn_input: torch.Tensor, output: torch.Tensor) -> None:
        stat = self.stats[name]
        stat.bn = bn
        if stat.pooled_act is None:  # what the next layer sees: the rectified, BatchNorm-scaled response
            with _one_thread(self.device):
                if _rectified(bn):  # relu(output) is output
                    stat.pooled_act = output.detach().mean(dim=(2, 3), dtype=torch.float32)
                else:
                    stat.pooled_act = self._pool(output.detach(), "relu")

    def _conv_hook(self, name: str):
        def hook(conv: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
            stat = self.stats[name]
            if stat.ran:
                return  # a conv called several times per forward is measured on its first call
            padding, x = self._pads.resolve(conv, inputs[0])
            stat.padding, stat.ran = padding, True
            y = output.detach()
            with _one_thread(self.device):
                if padding.makes_border and self.n_border:
                    if min(y.shape[-2:]) < 3:
                        stat.unmeasured = f"output {y.shape[-2]}x{y.shape[-1]} has no border line with an interior"
                    else:
                        stat.border_rms, stat.border_mean = _border_deviation(x[: self.n_border], conv, padding)
                        stat.content = content_scale(y, self.content, x.shape[-2:], conv, padding)
                if name not in self.feeds_bn:  # else the BatchNorm hook pools relu(bn(y))
                    stat.pooled = y.mean(dim=(2, 3), dtype=torch.float32)  # (N, C)
                if self.n_scale != 0 and stat.scale_bn is None:
                    ys = y[:self.n_scale]
                    stat.sq_sum = self._pool(ys, "square").sum(dim=0)
                    stat.sum = ys.mean(dim=(2, 3), dtype=torch.float32).sum(dim=0)
                    stat.count = ys.shape[0]
            if self.progress is not None:
                self.progress.update()
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._pairing.remove()
        self._pads.remove()


@contextlib.contextmanager
def _inspection(model: nn.Module, **recorder: Any) -> Iterator[_Recorder]:
    """Eval mode and hooks for the duration; every module's mode restored and hooks removed after."""
    rec = _Recorder(model, **recorder)
    try:
        with eval_mode(model), torch.no_grad():
            yield rec
    finally:
        rec.remove()


def _run(model: nn.Module, images: torch.Tensor, input_size: tuple[int, ...],
         memory_format: torch.memory_format = torch.contiguous_format) -> Any:
    try:
        return model(images.contiguous(memory_format=memory_format))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"the model cannot run on input size {tuple(input_size)}: {first}") from None


def _prepass(model: nn.Module, input_size: tuple[int, ...], device: torch.device,
             dtype: torch.dtype) -> tuple[tuple[int, int], dict[str, nn.Module]]:
    """One blank forward: the total stride (largest input/output size ratio over the convs, rows
    and columns) and the convs that feed a BatchNorm directly (conv name -> BatchNorm, see
    :class:`~pan_repair.layers.BatchNormPairing`)."""
    sizes: list[tuple[int, int]] = []

    def conv_hook(module, inputs, output):
        sizes.append(tuple(output.shape[-2:]))

    handles = [conv.register_forward_hook(conv_hook) for name, conv in conv_layers(model)]
    pairing = BatchNormPairing(model)
    try:
        with eval_mode(model), torch.no_grad():
            _run(model, torch.zeros(1, *input_size, device=device, dtype=dtype), input_size)
    finally:
        for handle in handles:
            handle.remove()
        pairing.remove()
    h, w = input_size[1:]
    spatial = [s for s in sizes if min(s) > 1] or [(h, w)]  # convs after global pooling see 1x1
    stride = (max(1, max(round(h / s[0]) for s in spatial)), max(1, max(round(w / s[1]) for s in spatial)))
    return stride, pairing.bns


def _memory_format(model: nn.Module, input_size: tuple[int, ...], device: torch.device,
                   dtype: torch.dtype) -> torch.memory_format:
    """Channels-last on the CPU, where oneDNN's depthwise and padded convolutions run 1.1-1.8x
    faster in it (``benchmarks/scan_speed.py``), if the model gives the same outputs in it on one
    random image (to ``1e-3`` of their largest value): not a model that ``view``\ s its activations
    (it raises) or reads their memory as contiguous (it answers otherwise). Contiguous elsewhere."""
    if device.type != "cpu" or len(input_size) != 3:
        return torch.contiguous_format
    x = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    try:
        with eval_mode(model), torch.no_grad():
            plain = _outputs(model(x))
            last = _outputs(model(x.contiguous(memory_format=torch.channels_last)))
    except Exception:  # noqa: BLE001 - any failure keeps the model's own layout; the scan's run reports real errors
        return torch.contiguous_format
    same = len(plain) == len(last) and all(
        a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(a.abs().max())))
        for a, b in zip(plain, last))
    return torch.channels_last if same else torch.contiguous_format


def total_stride(model: nn.Module, input_size: tuple[int, ...], device: torch.device,
                 dtype: torch.dtype) -> tuple[int, int]:
    """The network's total stride (rows, columns), see :func:`_prepass`."""
    return _prepass(model, input_size, device, dtype)[0]


#: the smallest side on which an object (a third of the side, at least 3 px) can move
MIN_SIDE = 5


def _check_input(model: nn.Module, input_size: tuple[int, ...]) -> None:
    if len(input_size) != 3 or any(int(v) <= 0 for v in input_size):
        raise ValueError(f"input_size must be (channels, height, width), got {tuple(input_size)}")
    if min(input_size[1:]) < MIN_SIDE:
        raise ValueError(f"input size {input_size[1]}x{input_size[2]} is too small to move content across it: "
                         f"each side must be at least {MIN_SIDE} px")
    convs = list(conv_layers(model))
    if not convs:
        raise ValueError("the model has no 2-D convolution (nn.Conv2d) to analyse")
    name, first = convs[0]
    if first.in_channels != input_size[0]:
        raise ValueError(f"input_size has {input_size[0]} channels but the first convolution "
                         f"'{name}' expects {first.in_channels}")


def border_unit(sigma: torch.Tensor, content: torch.Tensor | None) -> torch.Tensor:
    """The border score's unit per channel: ``max(sigma, kappa)``, the larger of its std and its
    content response (see the module docstring), ``kappa`` floored at 5% of the layer's median."""
    if content is None:
        return sigma
    return torch.maximum(sigma, content.clamp_min(_SIGMA_FLOOR * content.median().clamp_min(1e-12)))


def _channel_scale(stat: _LayerStats) -> torch.Tensor:
    return border_unit(_channel_sigma(stat), stat.content)


def _channel_sigma(stat: _LayerStats) -> torch.Tensor:
    bn = stat.bn
    if stat.sq_sum is None:  # not gathered: the BatchNorm found in the blank pass is trained
        bn = stat.scale_bn
    if bn is not None and bn.running_var is not None and not untrained_bn(bn):
        sigma = (bn.running_var.float() + bn.eps).sqrt()
    else:
        mean = stat.sum / stat.count
        sigma = (stat.sq_sum / stat.count - mean.pow(2)).clamp_min(0).sqrt()
    floor = _SIGMA_FLOOR * sigma.median().clamp_min(1e-12)
    return sigma.clamp_min(floor)


def _bn_sign(stat: _LayerStats) -> torch.Tensor:
    bn = stat.bn
    if bn is not None and bn.weight is not None:
        return torch.where(bn.weight.detach().float() < 0, -1.0, 1.0)
    return torch.ones(stat.conv.out_channels)


def _eta2(pooled: torch.Tensor, grid: RollGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """eta^2 per axis (2, C) of the roll, and the mean response with the object nearest an edge
    minus centred, per axis (2, C). A channel whose responses vary by less than ``1e-6`` of the
    layer's most varying channel is flat (rounding noise): eta^2 = 0."""
    g = grid.grid(pooled.detach().cpu()).double()     # (P, 2, Q, C), scores live on the CPU
    grand = g.mean(dim=(0, 2), keepdim=True)
    total = (g - grand).pow(2).sum(dim=(0, 2))        # (2, C)
    by_position = g.mean(dim=0)                       # (2, Q, C)
    between = grid.n_patterns * (by_position - grand[0]).pow(2).sum(dim=1)
    flat = total <= 1e-12 * total.amax().clamp_min(1e-300)
    eta2 = torch.where(flat, 0.0, between / total.clamp_min(1e-300))
    d = grid.distances
    near, far = d == d.min(), d == d.max()
    edge_minus_centre = by_position[:, near].mean(1) - by_position[:, far].mean(1)
    return eta2.float().clamp(0, 1), edge_minus_centre.float()


def _layer_eta2(responses: dict[str, torch.Tensor], grid: RollGrid) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """:func:`_eta2` of every layer's pooled responses (N, C) (a layer at a time: the temporaries
    stay in cache)."""
    return {name: _eta2(r, grid) for name, r in responses.items()}


def _invariant(pooled: torch.Tensor, n_positions: int, scale: torch.Tensor) -> bool:
    """Responses (2 * Q, C) of one base image rolled along both axes do not move with the roll
    beyond ``_INVARIANT`` times ``scale`` (C,), the model's own spread of responses, plus rounding
    (``1e-5`` of the layer's largest response)."""
    r = pooled.reshape(2, n_positions, -1).double()
    spread = (r.amax(dim=1) - r.amin(dim=1)).amax(dim=0)
    return bool((spread <= _INVARIANT * scale.double() + 1e-5 * r.abs().amax()).all())


def _border_free_twin(model: nn.Module) -> nn.Module | None:
    """The model with circular padding everywhere and the same (shared) weights; None if the
    model pads nothing a switch could change (then it is its own twin)."""
    twin = structural_copy(model)
    summary = convert_padding(twin, "circular")
    return twin if summary.changed else None


def _twin_eta2(model: nn.Module, grid: RollGrid, responses: dict[str, torch.Tensor], feeds_bn: dict[str, nn.Module],
               input_size: tuple[int, ...], memory_format: torch.memory_format
               ) -> tuple[dict[str, torch.Tensor] | None, bool]:
    """eta^2 (2, C) per conv of the border-free twin on ``grid`` (None: the model is its own twin);
    and whether the twin ran on all of it (False: rolls on the stride grid and the twin exactly
    roll-invariant on the first base image, eta^2 = 0). ``responses``: per conv, the model's own
    pooled responses over ``grid`` (N, C); their std per channel is the scale of invariance."""
    names = list(responses)
    twin = _border_free_twin(model)
    if twin is None:
        return None, False
    device, dtype = device_dtype(model)
    q = grid.n_positions
    if grid.on_stride:  # rolls off the stride grid move even a circular network: no invariance to check for
        with _inspection(twin, feeds_bn=feeds_bn, n_scale=0) as rec:
            _run(twin, grid.images[: 2 * q].to(device, dtype), input_size, memory_format)
        first = {n: rec.stats[n].response() for n in names if rec.stats[n].response() is not None}
        if all(_invariant(r, q, responses[n].std(dim=0)) for n, r in first.items()):
            return {n: torch.zeros(2, r.shape[1]) for n, r in first.items()}, False
    with _inspection(twin, feeds_bn=feeds_bn, n_scale=0) as rec:
        _run(twin, grid.images.to(device, dtype), input_size, memory_format)
    twin_responses = {n: rec.stats[n].response() for n in names if rec.stats[n].response() is not None}
    return {n: eta2 for n, (eta2, _) in _layer_eta2(twin_responses, grid).items()}, True


def _outputs(out: Any) -> list[torch.Tensor]:
    """The floating tensors of a model output (a tensor, or a tuple/list/dict of them)."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    return [t for item in items for t in _outputs(item)]


def _is_logits(t: torch.Tensor) -> bool:
    return t.ndim == 2 and t.shape[1] > 1


@dataclass
class _Dependence:
    output_shift: float
    flip_rate: float | None
    attribution: dict[str, torch.Tensor] = field(default_factory=dict)  # conv name -> (C,) a_c
    images: int = 0
    per_output: list[tuple[float, float | None]] = field(default_factory=list)  # models with several outputs


def _padding_dependence(model: nn.Module, images: torch.Tensor, input_size: tuple[int, ...],
                        memory_format: torch.memory_format = torch.contiguous_format) -> _Dependence:
    """Output shift / flip rate against the replicate-padded twin, and each channel's first-order
    part of it (see the module docstring)."""
    device, dtype = device_dtype(model)
    x = images.to(device, dtype)
    effects: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    pads = PadTracker(model)

    def hook(name):
        def fn(conv, inputs, output):
            if name in outputs:
                return None
            padding, xin = pads.resolve(conv, inputs[0])
            if not padding.makes_border:
                return None
            xin = xin.detach()
            frame = F.pad(xin, padding.pads, value=padding.value) - F.pad(xin, padding.pads, mode="replicate")
            effects[name] = F.conv2d(frame, effective_weight(conv).detach(), None, conv.stride, 0,
                                     conv.dilation, conv.groups)
            outputs[name] = output
            return output.clone()  # in-place layers downstream must not modify what we differentiate by
        return fn

    handles = [conv.register_forward_hook(hook(name)) for name, conv in conv_layers(model)]
    try:
        with eval_mode(model), torch.enable_grad():
            out = _outputs(_run(model, x.requires_grad_(True), input_size, memory_format))
            if not out:
                raise ValueError("the model's output holds no floating tensor")
            objective = sum(F.log_softmax(t.float(), dim=1).max(dim=1).values.sum() if _is_logits(t)
                            else 0.5 * t.float().pow(2).sum() / max(1, t[0].numel()) for t in out)
            names = [n for n in outputs if outputs[n].requires_grad]
            grads = torch.autograd.grad(objective, [outputs[n] for n in names], allow_unused=True) if names else []
    finally:
        for handle in handles:
            handle.remove()
        pads.remove()
    attribution = {n: ((g * effects[n]).sum(dim=(0, 2, 3)).abs() / len(x)).float().cpu()
                   for n, g in zip(names, grads) if g is not None and g.shape == effects[n].shape}
    twin = structural_copy(model)
    convert_padding(twin, "replicate")
    with eval_mode(twin), torch.no_grad():
        switched = _outputs(_run(twin, x.detach(), input_size, memory_format))
    per_output = []
    for a, b in zip(out, switched):
        a, b = a.detach().float(), b.float()
        if _is_logits(a):
            r = padding_reliance(a, b)
            per_output.append((float(r["output_shift"]), float(r["flip_rate"])))
        else:
            per_output.append((float((a - b).norm() / a.norm().clamp_min(1e-12)), None))
    flips = [f for _, f in per_output if f is not None]
    return _Dependence(max(s for s, _ in per_output), max(flips) if flips else None, attribution, len(x),
                       per_output if len(per_output) > 1 else [])


def _classify(stat: _LayerStats, position: torch.Tensor, eta2: torch.Tensor, edge: torch.Tensor,
              tb: float, tp: float) -> tuple[list[Pan], dict[str, list[float]]]:
    """PANs of one layer from its border statistics and its padding-caused position scores
    ``eta2`` (2, C) (``position`` = their max over the axes)."""
    c = stat.conv.out_channels
    bn_sign = _bn_sign(stat).cpu()
    if stat.border_rms is not None:
        per_side = (stat.border_rms / _channel_scale(stat)).cpu()  # (4, C)
        border = per_side.max(dim=0).values
    else:
        per_side, border = torch.zeros(4, c), torch.zeros(c)
    candidates = torch.nonzero((border >= tb) | (position >= tp)).flatten().tolist()
    per_side_l, eta2_l = per_side.T.tolist(), eta2.T.tolist()
    border_l, position_l, bn_sign_l = border.tolist(), position.tolist(), bn_sign.tolist()
    # the border-mean of each channel's strongest side, the edge difference of its strongest axis
    border_raw = (stat.border_mean.cpu().gather(0, per_side.argmax(dim=0, keepdim=True))[0].tolist()
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
            seed: int, assumptions: list[str], convention: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of the border score and the base images of the rolls: the data and canvases
    made of it, or uniform probes and textures in the input convention."""
    if images is not None:
        assumptions.append(f"measured on {len(images)} data images")
        return images, data_canvases(images, n_patterns, seed)
    conv = resolve_convention(model, input_size[0], **convention)
    assumptions.append(conv.describe())
    return synthetic_images(input_size, conv, n_patterns, seed=seed)


def probe_batch(model: nn.Module, input_size: tuple[int, int, int] | None = None, *, data: Any = None,
                n_patterns: int = 8, n_positions: int = 8, max_images: int = 16, seed: int = 0,
                **convention: Any) -> torch.Tensor:
    """The images :func:`find_pans` runs ``model`` on (border images, then the rolls), e.g. to
    time a plain forward of them."""
    images = calibration_images(data, max_images) if data is not None else None
    input_size = _resolve_size(model, input_size, images, [])
    _check_input(model, input_size)
    stride = total_stride(model, input_size, *device_dtype(model))
    border, base = _probes(model, input_size, images, n_patterns, seed, [], convention)
    return torch.cat([border, roll_grid(base, n_positions, stride).images])


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
            :func:`pan_repair.detect.probes.resolve_convention`); ignored with ``data``.
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
    _check_input(model, input_size)
    device, dtype = device_dtype(model)
    stride, feeds_bn = _prepass(model, input_size, device, dtype)
    memory_format = _memory_format(model, input_size, device, dtype)
    border_images, base = _probes(model, input_size, images, n_patterns, seed, assumptions,
                                  dict(input_range=input_range, mean=mean, std=std))
    grid = roll_grid(base, n_positions, stride)
    bar = tqdm(total=sum(1 for _ in conv_layers(model)), desc="scanning convs", unit="conv",
               leave=False) if progress else None
    try:
        # the channel scale: on the data images themselves, or on every probe
        n_scale = len(border_images) if images is not None else None
        content = (torch.arange(len(border_images)) if images is not None else
                   len(border_images) + grid.centred())
        with _inspection(model, n_border=len(border_images), progress=bar, feeds_bn=feeds_bn, n_scale=n_scale,
                         content=content) as rec:
            _run(model, torch.cat([border_images, grid.images]).to(device, dtype), input_size, memory_format)
    finally:
        if bar is not None:
            bar.close()
    ran = [name for name, stat in rec.stats.items() if stat.ran]
    n_border = len(border_images)
    responses = {name: rec.stats[name].response()[n_border:] for name in ran if rec.stats[name].response() is not None}
    model_eta = _layer_eta2(responses, grid)
    twin_eta, twin_ran = _twin_eta2(model, grid, responses, feeds_bn, input_size, memory_format)
    if twin_ran:
        assumptions.append("the border-free (circular) twin varies with the rolls: its position share subtracted")
    if not grid.on_stride:
        assumptions.append(f"rolls of {grid.step} px, not multiples of the total stride {stride}: "
                           "position is counted only beyond the border-free twin's")
    dep = _padding_dependence(model, (images if images is not None else base)[:_DEPENDENCE_IMAGES],
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
        layer_pans, scores[name] = _classify(stat, eta2.max(dim=0).values, eta2, edge,
                                             border_threshold, position_threshold)
        if dep is not None:
            share = dep.attribution.get(name)
            scores[name]["share"] = [0.0] * c if share is None else share.tolist()
        pans += layer_pans
        if stat.unmeasured:
            unmeasured[name] = f"border score not measured: {stat.unmeasured}"
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
