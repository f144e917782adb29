"""The images a scan runs a model on, and the input conventions that make them.

* **Border images**: the model's own images (``data=``), or data-free, uniform images in the
  model's input convention (:func:`synthetic_images`, :func:`resolve_convention`: pixel levels
  0.7-0.9 and their complements) or, where the stem's BatchNorm implies another background level
  (:mod:`.implied`), the textured canvases at that level.
* **Base images**: an object on a flat canvas, a third of the side: textures
  (:func:`synthetic_images`) or crops of the data on its own background (:func:`data_canvases`).
* **Rolls** (:func:`roll_grid`, :class:`RollGrid`): each base image rolled circularly along rows
  and along columns, from the centre towards both edges.

:class:`ProbeBatch` lays them out for the PAN penalty (:mod:`pan_repair.repair.regularizer`);
:func:`pan_repair.detect.detector.scan_probes` builds it as :func:`~pan_repair.find_pans` does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["ProbeBatch", "CANVAS", "InputConvention", "resolve_convention", "calibration_images",
           "synthetic_images", "data_canvases", "RollGrid", "roll_grid"]


@dataclass
class ProbeBatch:
    """A scan's images in one tensor: ``n_constants`` border images, then the rolls of
    ``n_patterns`` base images, ordered pattern, axis, roll (``n_positions`` a side)."""

    images: torch.Tensor
    n_constants: int
    n_patterns: int
    n_positions: int
    #: per position: distance from the pattern's centre to the nearest edge, as a fraction
    #: of the side (0.5 = centred, 0 = straddling the edge)
    distances: torch.Tensor
    #: indices in ``images`` of the images the content response is measured on (None: the
    #: border images; data-free uniform border images have none, the centred rolls serve)
    content: torch.Tensor | None = None

    def placement_slice(self) -> slice:
        return slice(self.n_constants, self.images.shape[0])

    def grid(self, values: torch.Tensor) -> torch.Tensor:
        """Reshape per-image ``values`` (B, ...) of the placement part to (P, 2, Q, ...)."""
        v = values[self.placement_slice()]
        return v.reshape(self.n_patterns, 2, self.n_positions, *v.shape[1:])


def _texture(gen: torch.Generator, channels: int, h: int, w: int) -> torch.Tensor:
    coarse = torch.randn(1, channels, max(2, h // 4), max(2, w // 4), generator=gen)
    fine = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    fine = fine + 0.3 * torch.randn(channels, h, w, generator=gen)
    return (fine - fine.mean()) / fine.std().clamp_min(1e-6)


def _pattern_side(side: int) -> int:
    return max(3, side // 3)  # an object, not a detail


# ------------------------------------------------------------------ input conventions and data
#: ImageNet statistics, what torchvision's 3-channel models are usually trained with
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputConvention:
    """How a model's inputs are made from pixels ``u`` in [0, 1]: ``x = (u - mean) / std`` per
    channel. ``source`` says where the convention came from (recorded in the report)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    def to_input(self, u: torch.Tensor) -> torch.Tensor:
        """Pixels (N, C, H, W) in [0, 1] -> model inputs."""
        c = u.shape[1]
        mean = torch.tensor(self.mean, dtype=u.dtype).view(1, -1, 1, 1).expand(1, c, 1, 1)
        std = torch.tensor(self.std, dtype=u.dtype).view(1, -1, 1, 1).expand(1, c, 1, 1)
        return (u - mean) / std

    def describe(self) -> str:
        mean = [m + 0.0 for m in self.mean]  # + 0.0 prints -0.0 as 0.0
        lo = [round(-m / s, 3) + 0.0 for m, s in zip(self.mean, self.std)]
        hi = [round((1 - m) / s, 3) for m, s in zip(self.mean, self.std)]
        rng = f"[{lo[0]}, {hi[0]}]" if len(set(lo)) == 1 and len(set(hi)) == 1 else f"from {lo} to {hi}"
        return f"data-free probes: inputs = (pixels in [0, 1] - mean {mean}) / std {list(self.std)}, " \
               f"i.e. {rng} ({self.source})"


def _per_channel(v: float | tuple[float, ...] | list[float], channels: int, what: str) -> tuple[float, ...]:
    values = (float(v),) * channels if isinstance(v, (int, float)) else tuple(float(x) for x in v)
    if len(values) == 1:
        values *= channels
    if len(values) != channels:
        raise ValueError(f"{what} has {len(values)} values for {channels} input channels")
    return values


def resolve_convention(model: torch.nn.Module, channels: int, input_range: tuple[float, float] | None = None,
                       mean: float | tuple[float, ...] | None = None,
                       std: float | tuple[float, ...] | None = None) -> InputConvention:
    """The input convention of ``model`` for data-free probes, in this order: ``mean``/``std``
    (pixels in [0, 1] normalised); ``input_range = (lo, hi)`` (``x = lo + u (hi - lo)``);
    timm's ``model.pretrained_cfg`` mean/std; else, assumed, ImageNet normalisation for 3
    channels and ``(u - 0.5) / 0.25`` for others (zero mean, about unit std)."""
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (pixels in [0, 1]), or neither")
    if mean is not None and input_range is not None:
        raise ValueError("give input_range or mean/std, not both")
    if mean is not None:
        s = _per_channel(std, channels, "std")
        if min(s) <= 0:
            raise ValueError(f"std must be > 0, got {list(s)}")
        return InputConvention(_per_channel(mean, channels, "mean"), s, "given mean/std")
    if input_range is not None:
        lo, hi = (float(v) for v in input_range)
        if not hi > lo:
            raise ValueError(f"input_range must be (low, high) with high > low, got {tuple(input_range)}")
        return InputConvention((-lo / (hi - lo),) * channels, (1 / (hi - lo),) * channels,
                               f"given input_range ({lo:g}, {hi:g})")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("mean") is not None and cfg.get("std") is not None and len(cfg["mean"]) in (1, channels):
        return InputConvention(_per_channel(cfg["mean"], channels, "mean"), _per_channel(cfg["std"], channels, "std"),
                               "timm pretrained_cfg")
    if channels == 3:
        return InputConvention(IMAGENET_MEAN, IMAGENET_STD, "assumed: ImageNet normalisation; pass input_range or "
                               "mean/std, or data, if the model was trained otherwise")
    return InputConvention((0.5,) * channels, (0.25,) * channels,
                           "assumed: normalised to zero mean, unit std; pass input_range or mean/std, or data, "
                           "if the model was trained otherwise")


def calibration_images(data, max_images: int) -> torch.Tensor:
    """Up to ``max_images`` images (N, C, H, W) from ``data``: a tensor, a ``DataLoader`` (its
    first batches) or a ``Dataset`` (evenly spaced items). Images are the first 4-D (or, for a
    dataset item, 3-D) floating tensor of each batch/item."""
    from torch.utils.data import DataLoader, Dataset

    def first_image(obj, ndim: int):
        if isinstance(obj, torch.Tensor):
            return obj if obj.ndim == ndim and obj.is_floating_point() else None
        items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (tuple, list)) else ()
        for item in items:
            found = first_image(item, ndim)
            if found is not None:
                return found
        return None

    if isinstance(data, torch.Tensor):
        images = data if data.ndim == 4 else None
    elif isinstance(data, DataLoader):
        parts, n = [], 0
        for batch in data:
            x = first_image(batch, 4)
            if x is None:
                break
            parts.append(x)
            n += len(x)
            if n >= max_images:
                break
        images = torch.cat(parts) if parts else None
    elif isinstance(data, Dataset) and hasattr(data, "__len__"):
        n = len(data)
        idx = sorted({int(i * n / max_images) for i in range(min(n, max_images))})
        items = [first_image(data[i], 3) for i in idx]
        images = torch.stack(items) if items and all(x is not None for x in items) else None
    else:
        raise TypeError(f"data must be a tensor, a DataLoader or a Dataset, got {type(data).__name__}")
    if images is None or images.ndim != 4 or not images.is_floating_point() or len(images) == 0:
        raise ValueError("data holds no floating images (N, C, H, W)")
    return images[:max_images].detach().cpu()


#: the pixel level of the data-free probes' canvas (mid-grey)
CANVAS = 0.5


def synthetic_images(input_size: tuple[int, int, int], convention: InputConvention, n_patterns: int,
                     n_constants: int = 4, seed: int = 0, canvas: float = CANVAS) -> tuple[torch.Tensor, torch.Tensor]:
    """Data-free probes in the model's input convention: ``n_constants`` uniform images (pixel
    levels ``u = 0.5 + a``, ``a`` in [0.2, 0.4] per channel: bright half first, then their
    complements ``1 - u``) and ``n_patterns``
    content images (a smooth random texture of a third of the side, unit std around ``canvas``,
    clipped to pixels in [0, 1], centred on a flat canvas at ``canvas`` (default mid-grey) with
    faint noise, std 0.02). Own generator: the global RNG is untouched."""
    c, h, w = input_size
    gen = torch.Generator().manual_seed(seed)
    levels = 0.7 + 0.2 * torch.rand(n_constants // 2, c, 1, 1, generator=gen)  # away from mid-grey
    constants = torch.cat([levels, 1 - levels]).expand(n_constants, c, h, w)
    ph, pw = _pattern_side(h), _pattern_side(w)
    canvases = []
    for _ in range(n_patterns):
        image = canvas + 0.02 * torch.randn(c, h, w, generator=gen)
        top, left = (h - ph) // 2, (w - pw) // 2
        image[:, top:top + ph, left:left + pw] = canvas + 0.5 * _texture(gen, c, ph, pw)
        canvases.append(image.clamp(0, 1))
    return convention.to_input(constants.contiguous()), convention.to_input(torch.stack(canvases))


def _box_sums(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Sums of ``x`` (N, H, W) over every ``ph x pw`` window (N, H - ph + 1, W - pw + 1), from an
    integral image: O(H W) whatever the window."""
    c = F.pad(x.double().cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    return (c[:, ph:, pw:] - c[:, :-ph, pw:] - c[:, ph:, :-pw] + c[:, :-ph, :-pw]).float()


def data_canvases(images: torch.Tensor, n_patterns: int, seed: int = 0) -> torch.Tensor:
    """Probes made of the data, like :func:`synthetic_images`' content images: each a canvas of
    the data's own background (every pixel drawn from the images' outermost pixels, per channel:
    a constant background stays constant, a noisy one stays noisy) with, centred, the crop of a
    third of the side where an image differs most from that background (the object)."""
    n, c, h, w = images.shape
    gen = torch.Generator().manual_seed(seed)
    ring = torch.cat([images[..., 0, :], images[..., -1, :], images[..., 1:-1, 0], images[..., 1:-1, -1]], dim=-1)
    ring = ring.transpose(0, 1).reshape(c, -1)  # (C, outermost pixels of every image)
    median = ring.median(dim=1).values.view(1, c, 1, 1)
    ph, pw = _pattern_side(h), _pattern_side(w)
    saliency = _box_sums((images - median).abs().sum(dim=1), ph, pw)
    out = []
    for p in range(n_patterns):
        img, sal = images[p % n], saliency[p % n]
        top, left = divmod(int(sal.flatten().argmax()), sal.shape[1])
        idx = torch.randint(ring.shape[1], (h * w,), generator=gen)
        canvas = ring[:, idx].reshape(c, h, w).clone()
        t0, l0 = (h - ph) // 2, (w - pw) // 2
        canvas[:, t0:t0 + ph, l0:l0 + pw] = img[:, top:top + ph, left:left + pw]
        out.append(canvas)
    return torch.stack(out)


@dataclass
class RollGrid:
    """Each of ``P`` centred base images rolled circularly to ``Q`` places along rows (axis 0) and
    along columns (axis 1): ``images`` is (P * 2 * Q, C, H, W), ordered pattern, axis, roll. Roll
    ``k`` (centred on 0) moves the image by ``k * step`` pixels, never so far that the centred
    object (a third of the side) wraps; ``distances`` (per roll, rows axis) is the distance of the
    object's centre to the nearest edge as a fraction of the side (0.5: centred)."""

    images: torch.Tensor
    n_patterns: int
    n_positions: int
    step: tuple[int, int]
    distances: torch.Tensor
    #: steps are multiples of the network's total stride (a circular network is then exactly
    #: invariant to the rolls, when its every strided layer divides its input)
    on_stride: bool

    def centred(self) -> torch.Tensor:
        """Indices in ``images`` of each base image unmoved (its roll 0 along rows)."""
        return torch.arange(self.n_patterns) * 2 * self.n_positions + self.n_positions // 2

    def grid(self, values: torch.Tensor) -> torch.Tensor:
        """Per-image ``values`` (P * 2 * Q, ...) -> (P, 2, Q, ...)."""
        return values.reshape(self.n_patterns, 2, self.n_positions, *values.shape[1:])


def roll_grid(base: torch.Tensor, n_positions: int, stride: tuple[int, int]) -> RollGrid:
    """Roll ``base`` (P, C, H, W) to about ``n_positions`` places along each axis, from the
    centre towards both edges (see :class:`RollGrid`). Steps are multiples of ``stride`` when the
    room allows 2 of them each way, else as many pixels as spread the places evenly (then only a
    twin without border tells padding from aliasing)."""
    h, w = base.shape[-2:]
    room = ((h - _pattern_side(h)) // 2, (w - _pattern_side(w)) // 2)
    half = max(1, (n_positions - 1) // 2)
    on_stride = all(r // s >= 2 for r, s in zip(room, stride))
    if on_stride:
        step = tuple(max(s, r // half // s * s) for r, s in zip(room, stride))
    else:
        step = tuple(max(1, r // half) for r in room)
    reach = max(1, min(min(half, r // st) for r, st in zip(room, step)))
    shifts = range(-reach, reach + 1)
    images = torch.empty(len(base), 2, len(shifts), *base.shape[1:], dtype=base.dtype)
    for a, (dim, s) in enumerate(((-2, step[0]), (-1, step[1]))):
        for q, k in enumerate(shifts):  # a circular roll as two slice copies (torch.roll is slower)
            n = (k * s) % base.shape[dim]
            out = images[:, a, q]
            out.narrow(dim, n, base.shape[dim] - n).copy_(base.narrow(dim, 0, base.shape[dim] - n))
            out.narrow(dim, 0, n).copy_(base.narrow(dim, base.shape[dim] - n, n))
    frac = 0.5 + torch.tensor(list(shifts), dtype=torch.float32) * step[0] / h
    return RollGrid(images.flatten(0, 2), len(base), len(shifts), step, torch.minimum(frac, 1 - frac), on_stride)
