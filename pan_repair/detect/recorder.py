"""Forward hooks that gather the detector's per-layer statistics in one forward of the scan's images
(:class:`Recorder`): the border deviation of each padded conv, its content response, its pooled
response and its scale. The scores themselves are computed from them in :mod:`.detector`."""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from timm.layers.norm_act import BatchNormAct2d
from torch import nn

from ..layers.border_geometry import border_effects, clean_count, clean_range
from ..layers.module_state import device_dtype, eval_mode
from ..layers.padding import BatchNormPairing, Padding, PadTracker, conv_layers, trained_bns

#: elementwise temporaries of the statistics (relu, square) are made this many bytes at a time, in
#: one reused buffer: a full-size temporary of a large activation costs more (fresh memory, page
#: faults) than the reduction itself
_CHUNK_BYTES = 4 << 20


_TENSORS = ("border_rms", "border_mean", "pooled", "pooled_act", "sq_sum", "sum", "content", "running_std",
            "bn_sign")


def to_host(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """``tensors`` on the CPU, one device-to-host copy per device and dtype: on a GPU one
    synchronisation for all, not one per tensor. CPU tensors are returned as they are."""
    out = list(tensors)
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(out):
        if t.device.type != "cpu":
            groups.setdefault((t.device, t.dtype), []).append(i)
    for idx in groups.values():
        flat = torch.cat([out[i].detach().reshape(-1) for i in idx]).cpu()
        for i, part in zip(idx, flat.split([out[i].numel() for i in idx])):
            out[i] = part.view(out[i].shape)
    return out


@dataclass
class LayerStats:
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
    # channel scale, so the scale statistics above are not gathered (or the trained BatchNorm the
    # forward found it feeding: :meth:`Recorder.collect`)
    scale_bn: nn.modules.batchnorm._BatchNorm | None = None
    running_std: torch.Tensor | None = None  # (C,) sqrt(running_var + eps) of ``scale_bn``, float32
    bn_sign: torch.Tensor | None = None      # (C,) -1 where the BatchNorm's weight is negative, else +1

    def tensors(self) -> list[str]:
        """Names of the statistics that hold tensors."""
        return [k for k in _TENSORS if getattr(self, k) is not None]

    def response(self) -> torch.Tensor | None:
        """(N, C) pooled response the position score reads."""
        return self.pooled if self.pooled_act is None else self.pooled_act


@torch.no_grad()
def border_deviation(x: torch.Tensor, conv: nn.Conv2d, padding: Padding) -> tuple[torch.Tensor, torch.Tensor]:
    """Per side and channel (4, C): rms of the padding's own effect ``D`` on the outermost line
    (corners excluded, :func:`~pan_repair.layers.border_geometry.border_effects`), and its mean
    over the images flagged ``bright`` (first half of the batch); 0 on a side without padding."""
    rms = torch.zeros(4, conv.out_channels, device=x.device, dtype=torch.float32)
    mean = torch.zeros_like(rms)
    for i, d in enumerate(border_effects(x, conv, padding)):
        if d is not None:
            d = d.float()
            rms[i] = d.pow(2).mean(dim=(0, 2)).sqrt()
            mean[i] = d[: len(x) // 2].mean(dim=(0, 2))
    return rms, mean


#: the border score compares the padding's effect with the channel's content response, a spread over
#: the output positions whose windows touch no padding: it needs at least this many of them along
#: each padded axis (a 3x3 output of a 3x3 kernel has one; a 4x4 output of a 5x5 kernel none)
MIN_INTERIOR = 2


def interior(size: tuple[int, int], conv: nn.Conv2d, padding: Padding) -> tuple[slice, slice, int]:
    """Output rows and columns whose windows touch no padding, and the fewest of them along a
    padded axis."""
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    left, right, top, bottom = padding.pads
    rows, cols = clean_range(size[0], kh, sh, dh, top, bottom), clean_range(size[1], kw, sw, dw, left, right)
    counts = [clean_count(size[0], kh, sh, dh, top) if top or bottom else None,
              clean_count(size[1], kw, sw, dw, left) if left or right else None]
    return rows, cols, min((n for n in counts if n is not None), default=min(size))


def border_unmeasured(size: tuple[int, int], out: tuple[int, int], conv: nn.Conv2d, padding: Padding) -> str | None:
    """Why the border score cannot be measured on a conv's output ``out`` (H, W) from an input of
    ``size``, None where it can: it needs a border line with an interior (an output of at least
    3x3) and a content response (:data:`MIN_INTERIOR` padding-free positions per padded axis)."""
    if min(out) < 3:
        return f"output {out[0]}x{out[1]} has no border line with an interior"
    clean = interior(size, conv, padding)[2]
    if clean < MIN_INTERIOR:
        k = "x".join(str(v) for v in conv.kernel_size)
        return (f"output {out[0]}x{out[1]} of a {k} kernel has {clean} position(s) per axis whose windows touch "
                "no padding: no content response to compare the border with")
    return None


def content_scale(y: torch.Tensor, index: torch.Tensor, size: tuple[int, int], conv: nn.Conv2d,
                   padding: Padding) -> torch.Tensor | None:
    """Per channel: the mean over the images ``index`` of the strongest interior response,
    ``max |y - mean y|`` over the output positions whose windows touch no padding (None where
    there are none; the border score asks for :data:`MIN_INTERIOR` per padded axis)."""
    rows, cols, clean = interior(size, conv, padding)
    if clean == 0:
        return None
    inner = y.index_select(0, index.to(y.device))[:, :, rows, cols].flatten(2).float()  # one copy, contiguous
    low, high = torch.aminmax(inner, dim=2)
    mean = inner.mean(dim=2)
    return torch.maximum(high - mean, mean - low).mean(dim=0)


_threads_lock = threading.Lock()
_threads_state = [0, 1]  # [depth, saved thread count]


@contextlib.contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
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


class Pooler:
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


class Recorder:
    """Forward hooks that collect per-layer statistics during one forward of the scan's images:
    the border deviation on the first ``n_border`` images (0: none), the pooled response of every
    image, the channel scale over the first ``n_scale`` images (None: all; 0: none; convs without
    a trained BatchNorm)."""

    def __init__(self, model: nn.Module, n_border: int = 0, progress=None,
                 feeds_bn: dict[str, nn.Module] | None = None, n_scale: int | None = None,
                 content: torch.Tensor | None = None):
        self.n_border, self.progress, self.n_scale = n_border, progress, n_scale
        # convs whose response is read after their BatchNorm (from the blank pre-pass)
        self.feeds_bn = feeds_bn or {}
        self.device = device_dtype(model)[0]
        # indices of the images whose interior response is the content scale
        self.content = None if content is None else content.to(self.device)
        self.stats = {name: LayerStats(name, conv) for name, conv in conv_layers(model)}
        if n_scale != 0:
            paired = {name: bn for name, bn in self.feeds_bn.items() if name in self.stats}
            trained = trained_bns(paired.values())
            for name, bn in paired.items():
                if id(bn) in trained:
                    self.stats[name].scale_bn = bn
        self._pads = PadTracker(model)
        self._pool = Pooler()
        self._handles = [stat.conv.register_forward_hook(self._conv_hook(name)) for name, stat in self.stats.items()]
        self._pairing = BatchNormPairing(model, on_pair=self._bn_hook)

    def _bn_hook(self, name: str, bn: nn.Module, bn_input: torch.Tensor, output: torch.Tensor) -> None:
        stat = self.stats[name]
        stat.bn = bn
        if stat.pooled_act is None:  # what the next layer sees: the rectified, BatchNorm-scaled response
            with one_thread(self.device):
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
            with one_thread(self.device):
                if padding.makes_border and self.n_border:
                    stat.unmeasured = border_unmeasured(x.shape[-2:], y.shape[-2:], conv, padding)
                    if stat.unmeasured is None:
                        stat.border_rms, stat.border_mean = border_deviation(x[: self.n_border], conv, padding)
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

    def collect(self) -> None:
        """After the forward: where the channel scale is gathered, the trained BatchNorms the forward
        paired (:attr:`LayerStats.scale_bn`, their running std) and the BatchNorms' signs; then
        every statistic on the CPU, in one device-to-host copy."""
        if self.n_scale != 0:  # not in the twins' passes, which only read the pooled responses
            found = {name: s.bn for name, s in self.stats.items() if s.scale_bn is None and s.bn is not None}
            trained = trained_bns(found.values())
            for name, bn in found.items():
                if id(bn) in trained:
                    self.stats[name].scale_bn = bn
            for stat in self.stats.values():
                if stat.scale_bn is not None:
                    stat.running_std = (stat.scale_bn.running_var.detach().float() + stat.scale_bn.eps).sqrt()
                if stat.bn is not None and stat.bn.weight is not None:
                    stat.bn_sign = torch.where(stat.bn.weight.detach().float() < 0, -1.0, 1.0)
        fields = [(stat, k) for stat in self.stats.values() for k in stat.tensors()]
        for (stat, k), t in zip(fields, to_host([getattr(stat, k) for stat, k in fields])):
            setattr(stat, k, t)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._pairing.remove()
        self._pads.remove()


@contextlib.contextmanager
def inspection(model: nn.Module, **recorder: Any) -> Iterator[Recorder]:
    """Eval mode and hooks for the duration; every module's mode restored and hooks removed after,
    the statistics collected on the CPU (:meth:`Recorder.collect`)."""
    rec = Recorder(model, **recorder)
    try:
        with eval_mode(model), torch.no_grad():
            yield rec
        rec.collect()
    finally:
        rec.remove()

