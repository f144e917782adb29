"""The PAN detector: :func:`find_pans`. The definition of a PAN lives here, in one place.

**Definition.** One forward pass of the synthetic probe batch (:mod:`pan_repair.probes`)
in eval mode; for every output channel ``c`` of every 2-D convolution:

* *border score* ``b_c`` (only for layers whose own padding is a constant frame:
  zeros or ``ConstantPad2d``). On the layer's input ``x`` under the *constant* probes,
  the padding's own effect is ``D = conv(pad_zero(x)) - conv(pad_replicate(x))`` (bias
  cancels); it lives on the border only. For each padded side ``s`` take ``D`` on the
  outermost output row/column, corners excluded, ``rms_s = sqrt(mean of D^2)`` over the
  constant probes and that line, and ``b_c = max_s rms_s / sigma_c``. ``sigma_c`` is the
  channel's scale: the running std of the BatchNorm the conv feeds (its std on training
  data), else (BatchNorm absent or untrained) its std over the constant probes and the
  scale images (a small, faint texture); floored at 5% of the layer's median. First layer, constant
  input ``v``: ``D_top = -sum_{taps on the top padding} w * v``, checkable by hand.
* *position score* ``p_c`` in [0, 1] (every conv): the share of the variance of the
  channel's globally pooled response, over ``n_patterns`` object-sized textures x ``n_positions``
  circular rolls along one axis, explained by the roll (eta squared:
  ``sum_q P (mean_p r_pq - mean r)^2 / sum_pq (r_pq - mean r)^2``), max over the two axes.
  A circular network is invariant to the rolls (``p_c`` ~ 0); content that matters more or
  less near the border makes ``p_c`` large. The response is what the next layer sees: the
  rectified BatchNorm output ``relu(bn(conv(x)))`` where the conv feeds a BatchNorm (the conv
  output otherwise). Measured on the conv output, where the per-channel affine BatchNorm
  changes nothing, the score misses the channels that carry a position head (digits CNN,
  tests/test_causal.py).

**Rule.** A channel is a PAN of kind ``"border"`` if ``b_c >= border_threshold``, else of kind
``"position"`` if ``p_c >= position_threshold``; each channel is counted once. ``sides``:
the sides with ``rms_s / sigma_c >= border_threshold`` (border), or the axes with
``p >= position_threshold`` (top+bottom for rolls along rows, left+right along columns);
for border PANs only sides scoring at least half the strongest side's count.
``sign``: +1 if the BatchNorm-scaled response is higher at the border (border kind: ``D`` on
the strongest side for the bright constant probes, those with a positive mean level;
position kind: pattern nearest the edge vs centred), else -1.
"""
from __future__ import annotations

import contextlib
import threading
import warnings
from dataclasses import dataclass, replace
from typing import Iterator

import torch
import torch.nn.functional as F
from timm.layers.norm_act import BatchNormAct2d
from torch import nn
from tqdm.auto import tqdm

from .border_geometry import border_windows, strip
from .layers import BatchNormPairing, Padding, PadTracker, conv_layers, effective_weight, unsupported_layers, \
    untrained_bn
from .metrics.functional import border_activation_ratio
from .module_state import device_dtype, eval_mode
from .probes import ProbeBatch, make_probes, min_side
from .report import SIDES, LayerInfo, Pan, PanReport

__all__ = ["find_pans", "total_stride", "DEFAULT_BORDER_THRESHOLD", "DEFAULT_POSITION_THRESHOLD"]

#: Default threshold on the border score (channel-std units); see README "Why these thresholds".
DEFAULT_BORDER_THRESHOLD = 2.7
#: Default threshold on the position score (share of variance).
DEFAULT_POSITION_THRESHOLD = 0.9
_SIGMA_FLOOR = 0.05
#: elementwise temporaries of the statistics (relu, square) are made this many bytes at a time, in
#: one reused buffer: a full-size temporary of a large activation costs more (fresh memory, page
#: faults) than the reduction itself
_CHUNK_BYTES = 4 << 20


@dataclass
class _LayerStats:
    name: str
    conv: nn.Conv2d
    padding: Padding | None = None
    border_rms: torch.Tensor | None = None   # (4, C): top, bottom, left, right
    border_mean: torch.Tensor | None = None  # (4, C)
    ran: bool = False  # executed in the probe forward
    pooled: torch.Tensor | None = None  # (N, C) globally pooled conv output (convs not feeding a BatchNorm)
    pooled_act: torch.Tensor | None = None  # (N, C) globally pooled ReLU(BatchNorm(conv output))
    sq_sum: torch.Tensor | None = None  # sum over probes of the per-image spatial mean of y^2
    sum: torch.Tensor | None = None     # sum over probes of the per-image spatial mean of y
    count: int = 0
    bn: nn.modules.batchnorm._BatchNorm | None = None
    # the trained BatchNorm the blank pre-pass found this conv feeding: its running std is the
    # channel scale, so the scale statistics above are not gathered
    scale_bn: nn.modules.batchnorm._BatchNorm | None = None
    ratio_output: torch.Tensor | None = None  # conv output on the real batch (confirmation pass)


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
        if y.device.type != "cpu" or k >= len(y) or not y.is_contiguous():
            t = y.clamp_min(0) if op == "relu" else y.float().pow(2)
            return t.mean(dim=(2, 3), dtype=torch.float32)
        dtype = y.dtype if op == "relu" else torch.float32
        size = k * per_image
        if self._buffer is None or self._buffer.numel() < size or self._buffer.dtype != dtype:
            self._buffer = torch.empty(max(size, _CHUNK_BYTES // 4), dtype=dtype)
        parts = []
        for i in range(0, len(y), k):
            chunk = y[i:i + k]
            out = self._buffer[:chunk.numel()].view(chunk.shape)
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
    """Forward hooks that collect per-layer statistics during probe forwards."""

    def __init__(self, model: nn.Module, n_constants: int = 0, n_scale: int = 0, progress=None,
                 feeds_bn: dict[str, nn.Module] | None = None):
        self.n_constants, self.n_scale, self.progress = n_constants, n_scale, progress
        # convs whose response is read after their BatchNorm (from the blank pre-pass)
        self.feeds_bn = feeds_bn or {}
        self.device = device_dtype(model)[0]
        self.stats = {name: _LayerStats(name, conv) for name, conv in conv_layers(model)}
        for name, bn in self.feeds_bn.items():
            if bn.running_var is not None and not untrained_bn(bn):
                self.stats[name].scale_bn = bn
        self._pads = PadTracker(model)
        self._pool = _Pooler()
        self._handles: list = []
        self.measure_ratio: set[str] = set()
        for name, stat in self.stats.items():
            self._handles.append(stat.conv.register_forward_hook(self._conv_hook(name)))
        self._pairing = BatchNormPairing(model, on_pair=self._bn_hook)

    def _bn_hook(self, name: str, bn: nn.Module, bn_input: torch.Tensor, output: torch.Tensor) -> None:
        stat = self.stats[name]
        stat.bn = bn
        if not self.measure_ratio and stat.pooled_act is None:
            # what the next layer sees: the rectified, BatchNorm-scaled response
            with _one_thread(self.device):
                if _rectified(bn):  # relu(output) is output
                    stat.pooled_act = output.detach().mean(dim=(2, 3), dtype=torch.float32)
                else:
                    stat.pooled_act = self._pool(output.detach(), "relu")

    def _conv_hook(self, name: str):
        def hook(conv: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
            stat = self.stats[name]
            if stat.ran and not self.measure_ratio:
                return  # a conv called several times per forward is measured on its first call
            padding, x = self._pads.resolve(conv, inputs[0])
            stat.padding = padding
            if self.measure_ratio:
                if name in self.measure_ratio:
                    stat.ratio_output = output.detach()
                return
            with _one_thread(self.device):
                if padding.makes_border:
                    stat.border_rms, stat.border_mean = _border_deviation(x[: self.n_constants], conv, padding)
                y = output.detach()
                stat.ran = True
                head = None
                if name not in self.feeds_bn:  # else the BatchNorm hook pools relu(bn(y))
                    stat.pooled = y.mean(dim=(2, 3), dtype=torch.float32)  # (N, C)
                    head = stat.pooled[: self.n_scale]
                if stat.scale_bn is None:  # the channel scale is measured on the first images
                    y = y[: self.n_scale]
                    if head is None:
                        head = y.mean(dim=(2, 3), dtype=torch.float32)
                    stat.sq_sum = self._pool(y, "square").sum(dim=0)
                    stat.sum = head.sum(dim=0)
                    stat.count = y.shape[0]
            if self.progress is not None:
                self.progress.update()
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._pairing.remove()
        self._pads.remove()


@contextlib.contextmanager
def _inspection(model: nn.Module, n_constants: int, n_scale: int, progress: bool,
                feeds_bn: dict[str, nn.Module] | None = None) -> Iterator[_Recorder]:
    """Eval mode and hooks for the duration; every module's mode restored and hooks removed after."""
    bar = tqdm(total=sum(1 for _ in conv_layers(model)), desc="scanning convs", unit="conv",
               leave=False) if progress else None
    recorder = _Recorder(model, n_constants, n_scale, bar, feeds_bn)
    try:
        with eval_mode(model), torch.no_grad():
            yield recorder
    finally:
        recorder.remove()
        if bar is not None:
            bar.close()


def _run(model: nn.Module, images: torch.Tensor, input_size: tuple[int, ...]) -> None:
    try:
        model(images)
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


def total_stride(model: nn.Module, input_size: tuple[int, ...], device: torch.device,
                 dtype: torch.dtype) -> tuple[int, int]:
    """The network's total stride (rows, columns), see :func:`_prepass`."""
    return _prepass(model, input_size, device, dtype)[0]


def _check_input(model: nn.Module, input_size: tuple[int, ...]) -> None:
    if len(input_size) != 3 or any(int(v) <= 0 for v in input_size):
        raise ValueError(f"input_size must be (channels, height, width), got {tuple(input_size)}")
    convs = list(conv_layers(model))
    if not convs:
        raise ValueError("the model has no 2-D convolution (nn.Conv2d) to analyse")
    name, first = convs[0]
    if first.in_channels != input_size[0]:
        raise ValueError(f"input_size has {input_size[0]} channels but the first convolution "
                         f"'{name}' expects {first.in_channels}")


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


def _position_scores(pooled: torch.Tensor, probes: ProbeBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """eta^2 per axis (2, C) and near-edge minus centred mean response per axis (2, C)."""
    grid = probes.grid(pooled).double()              # (P, 2, Q, C)
    grand = grid.mean(dim=(0, 2), keepdim=True)
    total = (grid - grand).pow(2).sum(dim=(0, 2))     # (2, C)
    by_position = grid.mean(dim=0)                    # (2, Q, C)
    between = probes.n_patterns * (by_position - grand[0]).pow(2).sum(dim=1)
    scale = grid.abs().amax(dim=(0, 2)).pow(2) * grid.shape[0] * grid.shape[2]
    eta2 = torch.where(total > 1e-10 * scale.clamp_min(1e-30), between / total.clamp_min(1e-300), 0.0)
    d = probes.distances
    near, far = d == d.min(), d == d.max()
    edge_minus_centre = by_position[:, near].mean(1) - by_position[:, far].mean(1)
    return eta2.float().clamp(0, 1), edge_minus_centre.float()


def _classify(stat: _LayerStats, probes: ProbeBatch, tb: float, tp: float
              ) -> tuple[list[Pan], dict[str, list[float]]]:
    c = stat.conv.out_channels
    pooled = stat.pooled if stat.pooled_act is None else stat.pooled_act
    if pooled is None:  # fed a BatchNorm in the blank pass but not in the probe pass
        eta2, edge = torch.zeros(2, c), torch.zeros(2, c)
    else:
        eta2, edge = _position_scores(pooled, probes)
    position = eta2.max(dim=0).values
    bn_sign = _bn_sign(stat)
    if stat.border_rms is not None:
        per_side = stat.border_rms / _channel_sigma(stat)  # (4, C)
        border = per_side.max(dim=0).values
    else:
        per_side, border = torch.zeros(4, c), torch.zeros(c)
    is_border = border >= tb
    candidates = torch.nonzero(is_border | (position >= tp)).flatten().tolist()
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
            raw = border_raw[ch]
            kind, score = "border", b
        else:
            axes = [a for a in range(2) if eta2_l[ch][a] >= tp]
            sides = tuple(s for a in axes for s in (("top", "bottom"), ("left", "right"))[a])
            raw = edge_raw[ch]
            kind, score = "position", p
        scaled = kind == "position" and stat.pooled_act is not None  # BatchNorm already applied
        sign = 1 if raw * (1.0 if scaled else bn_sign_l[ch]) >= 0 else -1
        pans.append(Pan(stat.name, ch, sides, sign, score, kind, b, p))
    return pans, {"border": [round(v, 5) for v in border_l], "position": [round(v, 5) for v in position_l]}


def _border_ratio(output: torch.Tensor, stat: _LayerStats) -> torch.Tensor:
    """Per channel: mean |a| on the 1-pixel border / inside, ``a`` BatchNorm-scaled if the conv feeds one."""
    y = output.float()
    bn = stat.bn
    if bn is not None and bn.running_var is not None:
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return border_activation_ratio(y, band=1, reduction="none")


def find_pans(
    model: nn.Module,
    input_size: tuple[int, int, int] = (3, 224, 224),
    *,
    border_threshold: float = DEFAULT_BORDER_THRESHOLD,
    position_threshold: float = DEFAULT_POSITION_THRESHOLD,
    n_patterns: int = 8,
    n_positions: int = 8,
    batch: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = False,
) -> PanReport:
    """Find the Padding Aware Neurons of ``model`` without data (see the module docstring).

    Args:
        model: any ``nn.Module`` with 2-D convolutions; left exactly as found (parameters,
            buffers, train/eval mode of every submodule; no hooks remain), also on error.
        input_size: ``(C, H, W)`` of the probe images, in the model's normalised input space.
        border_threshold: minimum border score (channel-std units) of a border PAN.
        position_threshold: minimum position score (share of variance, [0, 1]).
        n_patterns, n_positions: probe textures and roll positions per axis; the probe batch
            holds ``4 + 2 * (n_patterns + 1) * n_positions`` images.
        batch: optional real images (N, C, H, W); each PAN then gets ``border_ratio`` (mean
            |BatchNorm-scaled activation| on the 1-pixel border / interior) as confirmation.
        seed: probe seed; the global RNG is not touched.
        progress: show a progress bar over the convolutions (tqdm, on stderr).

    Example:
        >>> import timm
        >>> from pan_repair import find_pans
        >>> report = find_pans(timm.create_model("resnet10t"), input_size=(3, 192, 192), n_patterns=2)
        >>> report.total_filters
        2936
    """
    input_size = tuple(int(v) for v in input_size)
    _check_input(model, input_size)
    if batch is not None and (batch.ndim != 4 or batch.shape[1] != input_size[0]):
        raise ValueError(f"batch must be (N, {input_size[0]}, H, W), got shape {tuple(batch.shape)}")
    device, dtype = device_dtype(model)
    stride, feeds_bn = _prepass(model, input_size, device, dtype)
    probes = make_probes(input_size, n_patterns, n_positions, stride, seed=seed)
    if probes.n_positions < 4:
        warnings.warn(f"input size {input_size[1:]} holds only {probes.n_positions} roll positions at "
                      f"the network's total stride {stride}: position scores are unreliable; use a "
                      f"side >= {min_side(max(stride))}", stacklevel=2)
    with _inspection(model, probes.n_constants, probes.n_constants + 2 * probes.n_positions, progress,
                     feeds_bn) as rec:
        _run(model, probes.images.to(device, dtype), input_size)
        pans, scores = [], {}
        for name, stat in rec.stats.items():
            if not stat.ran:
                continue  # never executed in forward
            layer_pans, scores[name] = _classify(stat, probes, border_threshold, position_threshold)
            pans += layer_pans
        if batch is not None and pans:
            ratios = _measure_border_ratios(model, rec, {p.layer for p in pans}, batch, device, dtype)
            pans = [replace(p, border_ratio=float(ratios[p.layer][p.channel])) for p in pans]
    layers = [
        LayerInfo(name, type(stat.conv).__name__, stat.conv.out_channels, stat.padding.mode,
                  stat.padding.pads, stat.padding.makes_border)
        for name, stat in rec.stats.items() if stat.ran
    ]
    return PanReport(pans, layers, input_size, border_threshold, position_threshold, scores,
                     _notes(layers), unsupported_layers(model))


def _measure_border_ratios(model: nn.Module, rec: _Recorder, names: set[str], batch: torch.Tensor,
                           device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    rec.measure_ratio = names
    _run(model, batch.to(device, dtype), tuple(batch.shape[1:]))
    out = {}
    for name in names:
        stat = rec.stats[name]
        if stat.ratio_output is None or min(stat.ratio_output.shape[-2:]) < 3:
            out[name] = torch.full((stat.conv.out_channels,), float("nan"))
        else:
            out[name] = _border_ratio(stat.ratio_output, stat)
        stat.ratio_output = None
    return out


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
