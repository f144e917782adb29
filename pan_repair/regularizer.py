"""A differentiable penalty on what the detector measures, to add to the training loss.

:func:`pan_penalty` runs one forward pass of synthetic probes (no data) and returns a scalar
tensor, differentiable with respect to the model's parameters:

``penalty = weight * P + border_weight * B``

* **Position term** ``P`` in [0, 1]: the detector's position score, made differentiable. Each of
  ``n_patterns`` random textures sits on a canvas and is moved by circular rolls (multiples of
  the network's total stride, the texture never wrapping) to ``n_positions`` places along each
  axis. For every channel ``c`` of the chosen layers, with ``r_paq`` its globally pooled response
  to pattern ``p`` at place ``q`` along axis ``a``:
  ``eta2_ac = P * sum_q (mean_p r_paq - mean r_.a.)^2 / sum_pq (r_paq - mean r_.a.)^2``, the
  share of the response's variance explained by *where* the content is (the detector's
  formula, :mod:`pan_repair.detector`). ``P`` is the mean of ``eta2`` over axes, channels and
  layers. A circular-padded network is exactly invariant to the rolls (``P = 0``).
* **Border term** ``B`` (off by default): the detector's border score, squared and made
  differentiable. On spatially constant probes, for every chosen conv whose own padding is a
  constant frame, ``D = conv(zero_pad(x)) - conv(replicate_pad(x))`` on the outermost output
  line of each side (corners excluded); ``B`` is the mean over layers, channels and sides of
  ``mean(D^2) / sigma_c^2``, ``sigma_c`` the channel scale the detector uses (running std of the
  BatchNorm the conv feeds, else the std of its output on the probes; detached). ``B = 0``
  without border-making padding.

**Probes** (:func:`make_placement_probes`). Unlike the detector's (a texture an eighth of the
side on a zero canvas), the penalty's are made to look like normalised input images: a texture a
third of the side (an object, not a detail) with a random offset (``level``), the canvas
standardised to mean 0 and std 1 per channel, so the background is a non-zero level that zero
padding can see. :func:`placements_of` builds the same layout from real images instead.

**Mode and state.** The probe pass runs with every module in *eval* mode: exactly the network
the detector scans and that is deployed. BatchNorm normalises with its running statistics
(differentiable in its weight and bias), which are neither replaced by the probe batch's nor
updated; dropout and drop-path are off, so the global RNG is not consumed. Every module's
``training`` flag is restored afterwards, also on error. Hooks live only during the call, and
the forward pass stops as soon as the chosen layers have been seen. (The alternative, BatchNorm
on the probe batch's own statistics with the buffers swapped for copies, did worse on the
placement shortcut below: 54.5% vs 60.1% swapped, dense probes, 3 seeds.)

**Cost.** One forward and backward of the probe batch up to the last chosen layer:
``n_patterns * len(axes) * n_positions`` images (+4 constants with the border term).
:class:`PANPenalty` caches a bank of probes, uses a different subset of patterns at each call,
and with ``every=k`` runs on every k-th step only, scaled by ``k`` so the average gradient is
unchanged. Measured on SmallCNN (2 CPU threads, 24x24 images; ranges over runs on a shared
machine): the extra step time is roughly ``0.7 x probe images per step / batch size``. Batch 32:
2.6-2.9x for 8 patterns every step, 1.23-1.35x for 4 patterns every 4 steps, 1.10-1.23x every
8; batch 64: 2.1x, 1.09x and ~1.03x. Under 10% thus needs at most ~0.14 x batch probe images per
step (the default, 4 patterns x 2 axes x 5 places every 4 steps, from batch ~70; every 8 from
~40). A large ``every`` (16) with Adam made training collapse in one seed of two: the k-scaled
kicks are too large.

**Effect, measured** (``benchmarks/regularizer_cost.py``): placement shortcut, digits 8 (top) /
9 (bottom) on 24x24, zero-padded SmallCNN(depth 4, strides (0, 2)), 20 epochs, 3 seeds.
Swapped-placement accuracy 22.5% without the penalty, 60.1% with 8 patterns every step at
weight 1, 57.7% with 4 patterns every 4 steps, 53% every 8 steps (training placement 85-100%).
It weakens the shortcut but does not remove it here: the network becomes placement-invariant
on the probes (``P`` ~ 0.001) faster than on digits. Measured (2 seeds) and dropped: the same
statistic on the post-ReLU block output (training collapsed to chance: dead units have
``eta2 = 0``) or on the logits (54-58%); pattern-centred or channel-std-normalised variants;
zero-level, stroke-like or 3x3 textures, stride-1 rolls (all 44-72%, no better); 16x16 probes
(33.8%, 3 seeds); rolled *training images* as probes (19.7%, one seed, on the block output:
the invariance is learnt on the images seen, ``P`` on test images stays 4-8x higher).

**Repair by fine-tuning, measured** (issue #4; ``benchmarks/mitigations.py`` and exploration
scripts; same task, the biased model trained 20 epochs, then fine-tuned on the same biased data
for 20 epochs, Adam 1e-3, batch 32; seed 0 unless stated, one seed is +-5 points). Swapped-
placement accuracy: fine-tuning alone 13%; this penalty with the default texture probes (8
patterns every step, weight 1) 33%; the design notes' recipe (8x8 smooth textures of contrast 2
on a flat noisy canvas, 16 vertical stride-1 placements, weight 0.5, last conv) 37%. What
mattered was the probes looking like the data: ``style="ink"`` (bright strokes, contrast 6, on
the data's background level -0.22 with noise 0.33) 77% (training placement 93.5%); contrast 8
and 16 patterns 73%, background 0 and noise 0.1 72%, random-pixel "ink" 66%, weight 2 75%; rolled
*training images* (a data-based penalty, 8 images x 9 rolls, last conv) 67%; eta^2 with its
denominator detached 54% (training placement 72%); on the BatchNorm output: collapse (53/53).
With 5 stride-aligned positions (``PANPenalty`` as before) instead of 16 stride-1 ones
(``n_positions=16, roll_stride=(1, 1)``) the ink probes gave 62%. Switching the padding to
replicate first and then fine-tuning with the penalty works best: fine-tuning alone after the
switch 72%; + texture penalty 78%; + ink penalty, 5 positions 82% (84% with 16 non-circular
placements; 83% measured on every conv; 73% at learning rate 3e-3); + ink penalty, 16 stride-1
positions **89.1%** (training placement 92.0%). Over two seeds (``benchmarks/results/
mitigations.md``): ink penalty 76.8 / 84.1% (training placement 92.8 / 95.7%); replicate + ink
penalty 89.1 / 79.0% (92.0 / 89.9%); replicate alone 71.7% (seed 0). So the goal, >= 90% swapped
with training-placement accuracy within a point, is **not reached** by any setting found here;
the best is ~80-89% with a 4-10 point loss on the training placement (the penalty costs fit on
this tiny training set: 216 images). The design notes' 93.9% used another network and data
pipeline; their recipe, transplanted (``style="texture"``-like probes), gave 37% here.

Cost of that setting (8 patterns x 16 positions = 128 probe images every step, batch 32):
estimated from the rule above at ``1 + 0.7 x 128 / 32`` = 3.8x the step time, far above the 10%
target; ``every=4`` would bring it to ~1.7x (efficacy not measured). The rows are in
``benchmarks/regularizer_cost.py`` but were not timed: the shared machine was saturated (load
~7 on 2 cores) when this was written. (Measured wall times of the 20-epoch fine-tunings in the
benchmark, same load: ~200 s with the penalty vs ~120 s without, i.e. ~1.7x per epoch.)
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .border_geometry import border_windows, strip
from .detector import DEFAULT_BORDER_THRESHOLD, DEFAULT_POSITION_THRESHOLD, total_stride
from .module_state import eval_mode
from .layers import BatchNormPairing, Padding, conv_layers, conv_padding, effective_weight, pad_module_padding
from .probes import ProbeBatch, _texture, make_probes

__all__ = ["PlacementProbes", "make_placement_probes", "placements_of", "pan_penalty", "PANPenalty"]

_AXES = {"rows": 0, "cols": 1, 0: 0, 1: 1}
_N_CONSTANTS = 4
#: probe styles of :func:`make_placement_probes`
STYLES = ("texture", "ink")


@dataclass
class PlacementProbes:
    """Probe images for :func:`pan_penalty`, in this order: ``n_constants`` spatially constant
    images (bright levels, then their negatives), then ``n_patterns x len(axes) x n_positions``
    placement images (pattern-major; axis 0 = rolls along rows, i.e. vertical moves)."""

    images: torch.Tensor
    n_constants: int
    n_patterns: int
    axes: tuple[int, ...]
    n_positions: int

    def grid(self, values: torch.Tensor) -> torch.Tensor:
        """Per-image ``values`` (B, ...) of the placement part as (P, A, Q, ...)."""
        v = values[self.n_constants:]
        return v.reshape(self.n_patterns, len(self.axes), self.n_positions, *v.shape[1:])

    def select(self, patterns: Sequence[int]) -> "PlacementProbes":
        """The probes of a subset of the patterns (with all the constants)."""
        chosen = self.grid(self.images)[list(patterns)].flatten(0, 2)
        return PlacementProbes(torch.cat([self.images[: self.n_constants], chosen]), self.n_constants,
                               len(patterns), self.axes, self.n_positions)


def _axis(a: int | str) -> int:
    if a not in _AXES:
        raise ValueError(f"unknown axis {a!r}; expected 'rows' or 'cols'")
    return _AXES[a]


def _axes(axes: Iterable[int | str]) -> tuple[int, ...]:
    out = tuple(dict.fromkeys(_axis(a) for a in axes))
    if not out:
        raise ValueError("axes must name at least one of 'rows', 'cols'")
    return out


def make_placement_probes(input_size: tuple[int, int, int], n_patterns: int = 8, n_positions: int = 5,
                          *, axes: Iterable[int | str] = ("rows", "cols"), stride: tuple[int, int] = (1, 1),
                          pattern_size: int | None = None, level: float = 1.0,
                          n_constants: int = _N_CONSTANTS, seed: int = 0, style: str = "texture",
                          contrast: float = 6.0, noise: float = 0.3) -> PlacementProbes:
    """Probes for :func:`pan_penalty`; deterministic in ``seed``, the global RNG untouched.

    Per pattern: a random smooth texture (:func:`pan_repair.probes._texture`, side
    ``pattern_size``, default a third of the shorter side) plus a random offset of std ``level``,
    centred on a canvas of std-0.1 noise; the canvas standardised to mean 0, std 1 per channel;
    then rolled circularly by ``n_positions`` multiples of ``stride`` (the network's total
    stride: a padding-free network is then exactly invariant) along each of ``axes``, as far as
    the texture can go without wrapping. Fewer positions when the canvas holds fewer.
    ``n_constants`` (even, may be 0) constant images come first, for the border term.

    ``style="ink"`` makes object-like probes instead: sparse bright strokes (the positive part of
    the texture times ``contrast``) on a flat canvas at ``level`` plus std-``noise`` noise, *not*
    standardised, like a normalised dark-background image (the digits data: background -0.2,
    ink up to ~6, noise ~0.3). On the placement shortcut these transfer to the digits far better
    than the standardised textures (see the module docstring).
    """
    c, h, w = (int(v) for v in input_size)
    axes = _axes(axes)
    if n_patterns < 2 or n_positions < 2:
        raise ValueError("n_patterns and n_positions must be >= 2 (eta^2 needs a spread of both)")
    if style not in STYLES:
        raise ValueError(f"unknown probe style {style!r}; expected one of {', '.join(STYLES)}")
    if n_constants % 2 or n_constants < 0:
        raise ValueError(f"n_constants must be an even number >= 0, got {n_constants}")
    side = pattern_size or max(3, min(h, w) // 3)
    ph, pw = min(side, h - 2), min(side, w - 2)
    room = ((h - ph) // 2, (w - pw) // 2)  # how far the texture can move from the centre
    steps = {a: max(stride[a], 2 * room[a] // (n_positions - 1) // stride[a] * stride[a]) for a in axes}
    reach = min(room[a] // steps[a] for a in axes)
    if reach < 1:
        raise ValueError(f"input size {h}x{w} is too small to move a {ph}x{pw} pattern by the "
                         f"network's total stride {tuple(stride)}")
    if 2 * reach + 1 > n_positions:  # spread n_positions over the reach
        shifts = sorted({round(-reach + 2 * reach * i / (n_positions - 1)) for i in range(n_positions)})
    else:
        shifts = list(range(-reach, reach + 1))
    gen = torch.Generator().manual_seed(seed)
    levels = torch.randn(n_constants // 2, c, 1, 1, generator=gen)
    levels = levels * torch.where(levels.mean(dim=1, keepdim=True) < 0, -1.0, 1.0)  # bright first
    constants = torch.cat([levels, -levels]).expand(n_constants, c, h, w)
    top, left = (h - ph) // 2, (w - pw) // 2
    placements = []
    for _ in range(n_patterns):
        if style == "ink":
            canvas = level + noise * torch.randn(c, h, w, generator=gen)
            canvas[:, top:top + ph, left:left + pw] += contrast * _texture(gen, c, ph, pw).clamp_min(0)
        else:
            canvas = 0.1 * torch.randn(c, h, w, generator=gen)
            offset = level * torch.randn(c, 1, 1, generator=gen)
            canvas[:, top:top + ph, left:left + pw] = offset + _texture(gen, c, ph, pw)
            flat = canvas.flatten(1)
            canvas = (canvas - flat.mean(1).view(c, 1, 1)) / flat.std(1).clamp_min(1e-6).view(c, 1, 1)
        for a in axes:
            placements += [torch.roll(canvas, s * steps[a], dims=a - 2) for s in shifts]
    images = torch.cat([constants, torch.stack(placements)]).contiguous()
    return PlacementProbes(images, n_constants, n_patterns, axes, len(shifts))


def placements_of(images: torch.Tensor, n_positions: int = 5, *, axes: Iterable[int | str] = ("rows", "cols"),
                  stride: tuple[int, int] = (1, 1), reach: float = 1 / 3) -> PlacementProbes:
    """Placement probes made of real ``images`` (N, C, H, W), for a data-based penalty: each
    image rolled circularly (content crossing an edge wraps around) by ``n_positions`` multiples
    of ``stride`` spread over +-``reach`` of the side, along each axis. No constants."""
    axes = _axes(axes)
    if images.ndim != 4 or len(images) < 2 or n_positions < 2:
        raise ValueError("placements_of needs images (N >= 2, C, H, W) and n_positions >= 2")
    out = []
    for img in images:
        for a in axes:
            side, s = images.shape[2 + a], stride[a]
            k = max(1, int(side * reach) // s)
            shifts = torch.linspace(-k, k, n_positions).round().long().tolist()
            out += [torch.roll(img, sh * s, dims=a - 2) for sh in shifts]
    return PlacementProbes(torch.stack(out), 0, len(images), axes, n_positions)


# ----------------------------------------------------------------------------------------------
# the terms


def position_term(pooled: torch.Tensor, probes: PlacementProbes) -> torch.Tensor:
    """Mean eta^2 (share of variance explained by the placement) over axes and channels of the
    per-image pooled responses ``pooled`` (B, C) of ``probes``."""
    grid = probes.grid(pooled.float())  # (P, A, Q, C)
    centred = grid - grid.mean(dim=(0, 2), keepdim=True)
    total = centred.pow(2).sum(dim=(0, 2))  # (A, C)
    between = probes.n_patterns * centred.mean(dim=0).pow(2).sum(dim=1)  # (A, C)
    # dead or constant channels (total ~ 0) count as 0, not as rounding noise over rounding noise
    eps = 1e-6 * total.detach().mean().clamp_min(1e-12)
    return (between / (total + eps)).mean()


def _border_d2(x: torch.Tensor, conv: nn.Conv2d, padding: Padding) -> torch.Tensor:
    """Per side and channel (4, C): mean of ``D^2`` over the images and the outermost output
    line (corners excluded), as the detector's ``_border_deviation`` but differentiable."""
    weight = effective_weight(conv)
    windows = border_windows(tuple(x.shape[-2:]), conv, padding)
    out = []
    for rows, cols, (row, col) in windows:
        if rows is None or cols is None:
            out.append(x.new_zeros(conv.out_channels, dtype=torch.float32))
            continue
        dev = F.conv2d(strip(x, rows, cols, padding), weight, None, conv.stride, 0, conv.dilation,
                       conv.groups)[:, :, row, col]
        out.append(dev.float().pow(2).mean(dim=(0, 2)))
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------
# the probe pass


class _Stop(Exception):
    """Raised by a hook once everything wanted has been seen: the rest of the forward is skipped."""


class _Capture:
    """Forward hooks for one probe pass: outputs of the position layers, ``D^2`` and scale of
    the border layers (and the BatchNorm each feeds: :class:`~pan_repair.layers.BatchNormPairing`)."""

    def __init__(self, model: nn.Module, position_layers: list[str], border_layers: list[str],
                 n_constants: int) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.border: dict[str, torch.Tensor | None] = {}
        self.sigma_probe: dict[str, torch.Tensor] = {}
        self.n_constants = n_constants
        self._position, self._borders = set(position_layers), set(border_layers)
        self._bn_pending = set(border_layers)  # the channel scale comes from the BatchNorm fed
        self._pad_outputs: dict[int, tuple[weakref.ref, Padding, torch.Tensor]] = {}
        self._handles = []
        modules = dict(model.named_modules())
        for name in self._position | self._borders:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        if border_layers:
            for module in model.modules():
                if pad_module_padding(module) is not None:
                    self._handles.append(module.register_forward_hook(self._pad_hook))
        self._pairing = BatchNormPairing(model, border_layers, on_pair=self._paired) if border_layers else None

    @property
    def bn(self) -> dict[str, nn.Module]:
        """Border layer -> the BatchNorm it feeds."""
        return self._pairing.bns if self._pairing is not None else {}

    def _pad_hook(self, module, inputs, output):
        self._pad_outputs[id(output)] = (weakref.ref(output), pad_module_padding(module), inputs[0])

    def _paired(self, name, bn, bn_input, bn_output):
        self._bn_pending.discard(name)
        self._maybe_stop()

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if name in self.outputs:
                return  # a module called several times per forward: its first call
            self.outputs[name] = output
            if name in self._borders:
                x = inputs[0]
                padding = conv_padding(module, tuple(x.shape[-2:]))
                source = self._pad_outputs.get(id(x))
                if source is not None and source[0]() is x and not padding.is_padded:
                    padding, x = source[1], source[2]  # a ZeroPad2d before an unpadded conv
                if padding.makes_border:
                    self.border[name] = _border_d2(x[: self.n_constants], module, padding)
                    y = output.detach().float()
                    y = y[self.n_constants:] if len(y) > self.n_constants else y  # placements if any
                    self.sigma_probe[name] = y.transpose(0, 1).flatten(1).std(dim=1)
                else:
                    self.border[name] = None
                    self._bn_pending.discard(name)
            self._maybe_stop()
        return hook

    def _maybe_stop(self):
        if len(self.outputs) == len(self._position | self._borders) and not self._bn_pending:
            raise _Stop

    def remove(self):
        for h in self._handles:
            h.remove()
        if self._pairing is not None:
            self._pairing.remove()
        self._pad_outputs.clear()


def _resolve(model: nn.Module, layers: Iterable[str], what: str) -> list[str]:
    names = dict(model.named_modules())
    layers = list(dict.fromkeys([layers] if isinstance(layers, str) else layers))
    missing = [n for n in layers if n not in names]
    if missing:
        raise ValueError(f"{what}: no module named {', '.join(map(repr, missing))} in the model")
    return layers


def _last_conv(model: nn.Module) -> list[str]:
    convs = [name for name, _ in conv_layers(model)]
    if not convs:
        raise ValueError("the model has no 2-D convolution (nn.Conv2d)")
    return convs[-1:]


def _channel_sigma(bn, sigma_probe: torch.Tensor) -> torch.Tensor:
    """The detector's channel scale: running std of a trained BatchNorm, else the probe std."""
    if bn is not None and bn.running_var is not None and not (
            (bn.running_var == 1).all() and (bn.running_mean == 0).all()):
        sigma = (bn.running_var.detach().float() + bn.eps).sqrt()
    else:
        sigma = sigma_probe
    return sigma.clamp_min(0.05 * sigma.median().clamp_min(1e-12))


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return device, dtype


def pan_penalty(model: nn.Module, probes: PlacementProbes | None = None, *,
                input_size: tuple[int, int, int] | None = None, layers: Iterable[str] | None = None,
                weight: float = 1.0, border_weight: float = 0.0, border_layers: Iterable[str] | None = None,
                n_patterns: int = 8, n_positions: int = 5, axes: Iterable[int | str] = ("rows", "cols"),
                seed: int = 0) -> torch.Tensor:
    """Differentiable PAN penalty ``weight * P + border_weight * B`` (see the module docstring).

    Args:
        model: any ``nn.Module`` with 2-D convolutions. Left with every module in the train/eval
            mode it had; BatchNorm running statistics, hooks and the global RNG untouched.
        probes: a :class:`PlacementProbes` (e.g. cached by :class:`PANPenalty`, or real images
            via :func:`placements_of`); default: :func:`make_placement_probes` from
            ``input_size``, ``n_patterns``, ``n_positions``, ``axes``, ``seed``, rolled by the
            network's total stride.
        input_size: ``(C, H, W)`` of the probes, when ``probes`` is None.
        layers: modules whose globally pooled outputs the position term measures (any module:
            a conv, a block); default: the last convolution.
        weight: weight of the position term ``P`` (0 leaves it out).
        border_weight: weight of the border term ``B`` (default 0: off).
        border_layers: convolutions the border term measures; default: every convolution (only
            those whose own padding is a constant frame contribute).

    Returns:
        A float32 scalar, differentiable with respect to the parameters when grad is enabled.
    """
    if weight < 0 or border_weight < 0:
        raise ValueError(f"weights must be >= 0, got weight={weight}, border_weight={border_weight}")
    device, dtype = _device_dtype(model)
    if probes is None:
        if input_size is None:
            raise ValueError("pan_penalty needs probes or input_size")
        input_size = tuple(int(v) for v in input_size)
        stride = total_stride(model, input_size, device, dtype)
        probes = make_placement_probes(input_size, n_patterns, n_positions, axes=axes, stride=stride,
                                       n_constants=_N_CONSTANTS if border_weight > 0 else 0, seed=seed)
    position_layers = _resolve(model, layers if layers is not None else _last_conv(model), "layers") \
        if weight > 0 else []
    border = []
    if border_weight > 0:
        if probes.n_constants < 2:
            raise ValueError("the border term needs constant probes (n_constants >= 2)")
        border = _resolve(model, border_layers if border_layers is not None
                          else [n for n, _ in conv_layers(model)], "border_layers")
        not_conv = [n for n in border if not isinstance(model.get_submodule(n), nn.Conv2d)]
        if not_conv:
            raise ValueError(f"border_layers must be convolutions: {', '.join(not_conv)}")
    total = torch.zeros((), device=device, dtype=torch.float32)
    if not position_layers and not border:
        return total
    images = probes.images.to(device, dtype)
    if not position_layers:
        images = images[: probes.n_constants]
    capture = _Capture(model, position_layers, border, probes.n_constants)
    try:
        with eval_mode(model):
            try:
                model(images)
            except _Stop:
                pass
    finally:
        capture.remove()
    missing = [n for n in position_layers + border if n not in capture.outputs]
    if missing:
        raise ValueError(f"modules never called in forward: {', '.join(missing)}")
    if position_layers:
        terms = [position_term(_pool(capture.outputs[n][probes.n_constants:]), _placement_only(probes))
                 for n in position_layers]
        total = total + weight * torch.stack(terms).mean()
    if border:
        terms = [(capture.border[n] / _channel_sigma(capture.bn.get(n), capture.sigma_probe[n]).pow(2)).mean()
                 for n in border if capture.border.get(n) is not None]
        if terms:
            total = total + border_weight * torch.stack(terms).mean()
    return total


def _placement_only(probes: PlacementProbes) -> PlacementProbes:
    return PlacementProbes(probes.images[probes.n_constants:], 0, probes.n_patterns, probes.axes,
                           probes.n_positions)


def _pool(y: torch.Tensor) -> torch.Tensor:
    return y.mean(dim=tuple(range(2, y.ndim))) if y.ndim > 2 else y


class PANPenalty:
    """:func:`pan_penalty` made cheap enough for every training step.

    Builds a bank of ``bank`` patterns once (on the first call, when the model's total stride is
    known) and uses ``n_patterns`` of them per call, cycling through the bank in a seeded order:
    successive steps see different content at the cost of ``n_patterns``. ``every=k`` computes
    the penalty on every k-th call only, multiplied by k (same average gradient); the other calls
    return a constant zero without a probe pass. ``probe_size`` (a side in pixels) uses smaller
    probe canvases than the training images (fully convolutional models only). Deterministic in
    ``seed``; the global RNG is not touched; ``state_dict``/``load_state_dict`` keep the step.

    Example:
        >>> from pan_repair import SmallCNN
        >>> from pan_repair.regularizer import PANPenalty
        >>> model = SmallCNN(num_classes=2, depth=3, width=8)
        >>> penalty = PANPenalty((1, 24, 24), n_patterns=4)
        >>> loss = penalty(model)  # + the task loss
        >>> loss.backward()
        >>> model.features[6].weight.grad is not None
        True
    """

    def __init__(self, input_size: tuple[int, int, int], n_patterns: int = 4, n_positions: int = 5, *,
                 layers: Iterable[str] | None = None, weight: float = 1.0, border_weight: float = 0.0,
                 border_layers: Iterable[str] | None = None, axes: Iterable[int | str] = ("rows", "cols"),
                 bank: int = 64, every: int = 4, probe_size: int | None = None,
                 pattern_size: int | None = None, level: float = 1.0, seed: int = 0,
                 style: str = "texture", contrast: float = 6.0, noise: float = 0.3,
                 roll_stride: tuple[int, int] | None = None) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if bank < n_patterns or n_patterns < 2:
            raise ValueError(f"need 2 <= n_patterns <= bank, got n_patterns={n_patterns}, bank={bank}")
        if weight < 0 or border_weight < 0:
            raise ValueError(f"weights must be >= 0, got weight={weight}, border_weight={border_weight}")
        c, h, w = (int(v) for v in input_size)
        if probe_size is not None:
            h = w = int(probe_size)
        self.input_size = (c, h, w)
        self.n_patterns, self.n_positions, self.bank, self.axes = n_patterns, n_positions, bank, _axes(axes)
        self.layers = None if layers is None else list(layers)
        self.border_layers = None if border_layers is None else list(border_layers)
        self.weight, self.border_weight = float(weight), float(border_weight)
        self.every, self.seed = int(every), seed
        if style not in STYLES:
            raise ValueError(f"unknown probe style {style!r}; expected one of {', '.join(STYLES)}")
        self.pattern_size, self.level = pattern_size, level
        self.style, self.contrast, self.noise = style, float(contrast), float(noise)
        self.roll_stride = None if roll_stride is None else tuple(int(v) for v in roll_stride)
        self.step = 0
        self._probes: PlacementProbes | None = None
        self._order = torch.randperm(bank, generator=torch.Generator().manual_seed(seed)).tolist()

    def probes(self, model: nn.Module) -> PlacementProbes:
        """The probe bank (built on first use, rolled by ``model``'s total stride)."""
        if self._probes is None:
            device, dtype = _device_dtype(model)
            self._probes = make_placement_probes(
                self.input_size, self.bank, self.n_positions, axes=self.axes,
                stride=self.roll_stride or total_stride(model, self.input_size, device, dtype),
                pattern_size=self.pattern_size, level=self.level,
                n_constants=_N_CONSTANTS if self.border_weight > 0 else 0, seed=self.seed,
                style=self.style, contrast=self.contrast, noise=self.noise)
        return self._probes

    def __call__(self, model: nn.Module) -> torch.Tensor:
        step, self.step = self.step, self.step + 1
        if step % self.every:
            return torch.zeros((), device=_device_dtype(model)[0])
        bank = self.probes(model)
        start = (step // self.every) * self.n_patterns
        chosen = [self._order[(start + i) % self.bank] for i in range(self.n_patterns)]
        return self.every * pan_penalty(model, bank.select(chosen), layers=self.layers, weight=self.weight,
                                        border_weight=self.border_weight, border_layers=self.border_layers)

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
