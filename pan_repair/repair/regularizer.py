"""A differentiable penalty on what the detector measures, to add to the training loss.

**The penalty** (:func:`detector_penalty`; :class:`PANPenalty` caches its probes and spaces it
out). One eval-mode forward of the images :func:`~pan_repair.find_pans` runs
(:func:`pan_repair.detect.detector.scan_probes`: data-free, uniform images in the input
convention or textured canvases at the level the stem implies, and the centred textures; the
model's own images when given; the rolls too when the position term is on); for every conv ``l``
and output channel ``c`` it recomputes the detector's two scores (:mod:`pan_repair.detect.detector`)
with gradients and hinges them:

``penalty = weight * (border_weight * B + position_weight * P)``

* ``B = (1 / C_total) sum_{l,c} sum_s relu(b_lcs - border_margin)^2``; ``b_lcs = rms(D) / u_c``
  is the detector's border score of side ``s``: ``D = conv(pad_zero(x)) - conv(pad_replicate(x))``
  on the outermost output line (corners excluded), ``x`` the conv's input under the border
  images; ``u_c = max(sigma_c, kappa_c)``: ``sigma_c`` the running std of the BatchNorm the conv
  feeds (else the conv output's std over the images run), ``kappa_c`` the content response (on
  the centred textures data-free, on the border images with data), detached, floored at 5% of
  the layer median. The strip geometry is shared with the detector
  (:func:`pan_repair.layers.border_geometry.border_effects`).
* ``P = (1 / C_total) sum_{l,c} sum_a relu(eta2_lca - position_margin)^2``; ``eta2`` in [0, 1] the
  detector's position score of roll axis ``a`` (without the border-free twin): share of the
  variance of the globally pooled ``relu(bn(conv))`` over patterns x rolls explained by the roll.

Channels below the margins (defaults: half the detector's thresholds: 0.7 and 0.45 on probes,
1.25 and 0.3 on data) cost nothing; ``C_total`` counts every channel of the measured convs.
Tested: with a margin just above the largest border score ``find_pans`` reports the term is
exactly 0, just below it positive. BatchNorm uses its running statistics (differentiable in
weight and bias; buffers untouched); every module's mode is restored; hooks removed; the global
RNG untouched.

**Defaults** (``PANPenalty(input_size)``): border term only (``border_weight=1``,
``position_weight=0``), ``weight=0.03``, ``every=16`` (computed on every 16th call, times 16), a
bank of 16 probe batches (seeds ``seed + i``, 2 patterns each) used in turn.

**Measured** (``benchmarks/pan_penalty.py``, ``benchmarks/results/pan_penalty.md``, 2026-12-01):
10-class digits (x3, random place on 48x48), resnet10t layout at 1/4 width with output stride 8
(780 filters), Adam 3e-3 annealed to 0 by a cosine over 6 epochs, 5 seeds, PANs counted
data-free. One CPU thread: plain 168.2 PANs a run, 95.7%; the default 1.4 PANs (-99%), 95.9%,
1.03x the step time. Two threads (other networks: the sums' order changes): plain 162.0, 95.8%;
the default 3.6 (-98%), 95.5%, 1.05-1.07x. Every 8th step 1.6 / 2.4 PANs at 1.07-1.14x; the
former margin 1.35 (every 8th step) left 26.8 / 25.6. With Adam a small weight removes the PANs
as well as a large one (Adam normalises the update of parameters the task hardly drives) and
costs less accuracy. At a constant learning rate the final accuracy swings by 10-20 points
between epochs (the 1-point comparison needs the annealed schedule).

**Placement probes** (``probes="placement"``: :func:`pan_penalty`, :mod:`pan_repair.repair.placement_probes`:
:func:`~pan_repair.repair.placement_probes.make_placement_probes`,
:func:`~pan_repair.repair.placement_probes.placements_of`), the earlier study kept for ``benchmarks/mitigations.py`` and
``benchmarks/regularizer_cost.py``: ``weight * P' + border_weight * B'`` with ``P'`` the mean
(not hinged) eta^2 of chosen layers' pooled outputs over textures a third of the side (or
digit-like ``style="ink"`` strokes), ``B'`` the mean ``D^2 / sigma^2`` on their own constants.
On the 8-top / 9-bottom placement shortcut (SmallCNN depth 4, 24x24) it raised swapped-
placement accuracy from 22.5% to 53-60% when trained with it, and, as a 20-epoch fine-tuning
repair with ink probes, from 27.2% to 83.3% (84.2% after switching to replicate padding; 5
seeds, ``benchmarks/mitigations.py``); but it does not measure what
the detector measures: trained with it, the same network ended with 26-35 PANs instead of 1-2,
at 1.25-3.7x the step time. Step cost there: about ``1 + 0.7 x probe images per step / batch``.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..detect.detector import (DEFAULT_BORDER_THRESHOLD, DEFAULT_DATA_BORDER_THRESHOLD,
                               DEFAULT_DATA_POSITION_THRESHOLD, DEFAULT_POSITION_THRESHOLD, border_unit,
                               scan_probes)
from ..detect.forward import Prepass, prepass, total_stride
from ..detect.implied import stem_level
from ..detect.probes import ProbeBatch, data_canvases, resolve_convention, roll_grid
from ..detect.recorder import border_unmeasured, content_scale
from ..layers.border_geometry import border_effects
from ..layers.module_state import device_dtype, eval_mode
from ..layers.padding import BatchNormPairing, Padding, PadTracker, conv_layers, trained_bns
from .placement_probes import N_CONSTANTS, STYLES, PlacementProbes, make_placement_probes, roll_axes

__all__ = ["pan_penalty", "detector_penalty", "PANPenalty"]


# ----------------------------------------------------------------------------------------------
# the terms


def _eta2(grid: torch.Tensor) -> torch.Tensor:
    """eta^2 per axis and channel (A, C), differentiable: the share of the variance of responses
    ``grid`` (patterns P, axes A, placements Q, channels C) explained by the placement."""
    centred = grid - grid.mean(dim=(0, 2), keepdim=True)
    total = centred.pow(2).sum(dim=(0, 2))
    between = grid.shape[0] * centred.mean(dim=0).pow(2).sum(dim=1)
    # dead or constant channels (total ~ 0) count as 0, not as rounding noise over rounding noise
    eps = 1e-6 * total.detach().mean().clamp_min(1e-12)
    return between / (total + eps)


def position_term(pooled: torch.Tensor, probes: PlacementProbes) -> torch.Tensor:
    """Mean eta^2 (share of variance explained by the placement) over axes and channels of the
    per-image pooled responses ``pooled`` (B, C) of ``probes``."""
    return _eta2(probes.grid(pooled.float())).mean()


def _border_d2(x: torch.Tensor, conv: nn.Conv2d, padding: Padding) -> torch.Tensor:
    """Per side and channel (4, C): mean of ``D^2`` over the images and the outermost output
    line (corners excluded), the square of the detector's ``border_deviation``, differentiable."""
    return torch.stack([x.new_zeros(conv.out_channels, dtype=torch.float32) if d is None else
                        d.float().pow(2).mean(dim=(0, 2)) for d in border_effects(x, conv, padding)])


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
        self._handles = []
        modules = dict(model.named_modules())
        for name in self._position | self._borders:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        self._pads = PadTracker(model) if border_layers else None
        self._pairing = BatchNormPairing(model, border_layers, on_pair=self._paired) if border_layers else None

    @property
    def bn(self) -> dict[str, nn.Module]:
        """Border layer -> the BatchNorm it feeds."""
        return self._pairing.bns if self._pairing is not None else {}

    def _paired(self, name, bn, bn_input, bn_output):
        self._bn_pending.discard(name)
        self._maybe_stop()

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if name in self.outputs:
                return  # a module called several times per forward: its first call
            self.outputs[name] = output
            if name in self._borders:
                padding, x = self._pads.resolve(module, inputs[0])
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
        if self._pads is not None:
            self._pads.remove()


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


def _channel_sigma(bn, sigma_probe: torch.Tensor, trained: set[int]) -> torch.Tensor:
    """The detector's channel scale: running std of a trained BatchNorm (``id`` in ``trained``,
    :func:`~pan_repair.layers.padding.trained_bns`), else the probe std."""
    if bn is not None and id(bn) in trained:
        sigma = (bn.running_var.detach().float() + bn.eps).sqrt()
    else:
        sigma = sigma_probe
    return sigma.clamp_min(0.05 * sigma.median().clamp_min(1e-12))


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
    device, dtype = device_dtype(model)
    if probes is None:
        if input_size is None:
            raise ValueError("pan_penalty needs probes or input_size")
        input_size = tuple(int(v) for v in input_size)
        stride = total_stride(model, input_size, device, dtype)
        probes = make_placement_probes(input_size, n_patterns, n_positions, axes=axes, stride=stride,
                                       n_constants=N_CONSTANTS if border_weight > 0 else 0, seed=seed)
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
        trained = trained_bns(capture.bn.values())
        terms = [(capture.border[n] / _channel_sigma(capture.bn.get(n), capture.sigma_probe[n], trained).pow(2)).mean()
                 for n in border if capture.border.get(n) is not None]
        if terms:
            total = total + border_weight * torch.stack(terms).mean()
    return total


# ----------------------------------------------------------------------------------------------
# the detector-aligned penalty: the detector's probes, scores and responses


class _DetectorCapture:
    """Forward hooks for one probe pass over every conv: the padding's own effect ``D`` on the
    constant probes (per side, differentiable), the response the detector pools (``relu(bn(y))``
    for a conv feeding a BatchNorm, ``y`` otherwise) and the BatchNorm each conv feeds."""

    def __init__(self, model: nn.Module, convs: list[str], n_constants: int, content: torch.Tensor,
                 border: bool) -> None:
        self.n_constants, self.content_index, self.border = n_constants, content, border
        self.d2: dict[str, torch.Tensor] = {}       # (4, C) mean D^2 per side
        self.content: dict[str, torch.Tensor | None] = {}  # (C,) content response on the border images
        self.outputs: dict[str, torch.Tensor] = {}  # conv outputs
        self.bn_outputs: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in convs]
        self._pads = PadTracker(model) if border else None
        self.pairing = BatchNormPairing(model, convs, on_pair=self._paired)

    def _paired(self, name, bn, bn_input, bn_output):
        self.bn_outputs.setdefault(name, bn_output)

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if name in self.outputs:
                return  # a module called several times per forward: its first call (as the detector)
            self.outputs[name] = output
            if not self.border:
                return
            padding, x = self._pads.resolve(module, inputs[0])
            if padding.makes_border and border_unmeasured(x.shape[-2:], output.shape[-2:], module, padding) is None:
                self.d2[name] = _border_d2(x[: self.n_constants], module, padding)  # as the detector measures
                self.content[name] = content_scale(output.detach(), self.content_index,
                                                   tuple(x.shape[-2:]), module, padding)
        return hook

    def remove(self):
        for h in self._handles:
            h.remove()
        self.pairing.remove()
        if self._pads is not None:
            self._pads.remove()


def _hinge(score: torch.Tensor, margin: float) -> torch.Tensor:
    return F.relu(score - margin).pow(2)


def detector_penalty(model: nn.Module, probes: ProbeBatch | None = None, *,
                     input_size: tuple[int, int, int] | None = None, layers: Iterable[str] | None = None,
                     border_weight: float = 1.0, position_weight: float = 1.0,
                     border_margin: float = 0.5 * DEFAULT_BORDER_THRESHOLD,
                     position_margin: float = 0.5 * DEFAULT_POSITION_THRESHOLD,
                     n_patterns: int = 2, n_positions: int = 8, seed: int = 0,
                     input_range: tuple[float, float] | None = None, mean: float | tuple[float, ...] | None = None,
                     std: float | tuple[float, ...] | None = None) -> torch.Tensor:
    """The detector's two scores on its own images, made differentiable and hinged (the border
    score is :func:`pan_repair.find_pans`' on the same images; the position score is its eta^2 on
    the same rolls, without the border-free twin's correction, which a training-time penalty need
    not pay for):

    ``border_weight * mean_c sum_s relu(b_cs - border_margin)^2
    + position_weight * mean_c sum_a relu(eta2_ca - position_margin)^2``

    over the channels ``c`` of ``layers`` (default: every conv), sides ``s`` and roll axes ``a``.
    ``b_cs = sqrt(mean D^2) / u_c``: the detector's border score of one side (``D`` on the
    border images: uniform images in the input convention, textured canvases at the level the
    stem implies, or the model's own images); ``u_c = max(sigma_c, kappa_c)`` the detector's
    unit: ``sigma_c`` the running std of the BatchNorm the conv feeds, else the conv output's
    std over the images run, ``kappa_c`` the channel's content response (on the probes'
    ``content`` images: the centred textures data-free, else the border images); detached;
    floored as in the detector); 0 for a conv whose padding makes no border. ``eta2_ca``: the
    detector's position score of one axis, on the response it pools (``relu(bn(conv))``).
    Channels below the margins cost nothing.

    Args:
        probes: a :class:`~pan_repair.detect.probes.ProbeBatch`: its ``n_constants`` first images
            are the border images (e.g. data: see :meth:`PANPenalty.detector_probes`); default
            :func:`~pan_repair.detect.detector.scan_probes` of ``input_size``, ``n_patterns``,
            ``n_positions``, ``seed`` and the input convention (``input_range`` or ``mean`` /
            ``std``, as :func:`~pan_repair.find_pans` takes it), the data-free probes
            :func:`~pan_repair.find_pans` builds. With ``position_weight == 0`` only its border
            and content images are run.

    The pass runs in eval mode (BatchNorm on its running statistics, which stay untouched; every
    module's mode restored after; hooks removed; the global RNG untouched).
    """
    if min(border_weight, position_weight, border_margin, position_margin) < 0:
        raise ValueError("weights and margins must be >= 0")
    device, dtype = device_dtype(model)
    total = torch.zeros((), device=device, dtype=torch.float32)
    if border_weight == 0 and position_weight == 0:
        return total
    if probes is None:
        if input_size is None:
            raise ValueError("detector_penalty needs probes or input_size")
        probes = scan_probes(model, tuple(int(v) for v in input_size), n_patterns=n_patterns,
                             n_positions=n_positions, seed=seed, input_range=input_range, mean=mean, std=std)
    convs = [n for n, _ in conv_layers(model)] if layers is None else _resolve(model, layers, "layers")
    if not convs:
        raise ValueError("the model has no 2-D convolution (nn.Conv2d)")
    not_conv = [n for n in convs if not isinstance(model.get_submodule(n), nn.Conv2d)]
    if not_conv:
        raise ValueError(f"layers must be convolutions: {', '.join(not_conv)}")
    nc = probes.n_constants
    place = probes.images[probes.placement_slice()]
    content = torch.arange(nc) if probes.content is None else probes.content
    if position_weight > 0:
        images = probes.images
    else:  # the border images, and the content images among the rolls
        extra = content[content >= nc]
        images = torch.cat([probes.images[:nc], probes.images[extra]])
        content = torch.cat([content[content < nc], torch.arange(nc, nc + len(extra))])
    capture = _DetectorCapture(model, convs, nc, content, border_weight > 0)
    try:
        with eval_mode(model):
            model(images.to(device, dtype))
    finally:
        capture.remove()
    grid_probes = ProbeBatch(place, 0, probes.n_patterns, probes.n_positions, probes.distances)
    border_terms, position_terms, n_channels = [], [], 0
    trained = trained_bns(capture.pairing.bns[n] for n in capture.d2 if n in capture.pairing.bns)  # border layers'
    for name in convs:
        if name not in capture.outputs:
            continue  # never executed
        y = capture.outputs[name]
        n_channels += y.shape[1]
        bn = capture.pairing.bns.get(name)
        if name in capture.d2:
            sigma = _channel_sigma(bn, y.detach().float().transpose(0, 1).flatten(1).std(dim=1), trained)
            unit = border_unit(sigma, capture.content.get(name))
            score = (capture.d2[name] / unit.pow(2) + 1e-12).sqrt()  # (4, C)
            border_terms.append(_hinge(score, border_margin).sum())
        if position_weight > 0:
            response = F.relu(capture.bn_outputs[name]) if name in capture.bn_outputs else y
            pooled = _pool(response[nc:])
            position_terms.append(_hinge(_eta2(grid_probes.grid(pooled.float())), position_margin).sum())
    if border_terms:
        total = total + border_weight * torch.stack(border_terms).sum() / n_channels
    if position_terms:
        total = total + position_weight * torch.stack(position_terms).sum() / n_channels
    return total


def _placement_only(probes: PlacementProbes) -> PlacementProbes:
    return PlacementProbes(probes.images[probes.n_constants:], 0, probes.n_patterns, probes.axes,
                           probes.n_positions)


def _pool(y: torch.Tensor) -> torch.Tensor:
    return y.mean(dim=tuple(range(2, y.ndim))) if y.ndim > 2 else y


#: border images of one data probe batch: as many as the uniform probes
_DATA_BORDER = 4

#: PANPenalty's defaults per probe kind (None in its signature: taken from here)
_DEFAULTS = {
    "detector": dict(n_patterns=2, n_positions=8, every=16, bank=16, border_weight=1.0, weight=0.03),
    "placement": dict(n_patterns=4, n_positions=5, every=4, bank=64, border_weight=0.0, weight=1.0),
}
PROBE_KINDS = tuple(_DEFAULTS)


class PANPenalty:
    """The PAN penalty made cheap enough for every training step.

    ``probes="detector"`` (default): ``weight * detector_penalty(...)`` (:func:`detector_penalty`:
    the detector's own probes, scores and responses, hinged at ``border_margin`` /
    ``position_margin``). A bank of ``bank`` probe batches (:meth:`detector_probes`: the probes
    :func:`~pan_repair.find_pans` builds data-free in the input convention ``input_range`` or
    ``mean`` / ``std``, with seeds ``seed``, ``seed + 1``, ...; ``n_patterns`` patterns each) is
    built lazily; call ``i`` uses batch ``i mod bank``. ``position_weight`` (default 0) switches
    the position term on. ``weight`` defaults to 0.03 here (measured: accuracy within a point of
    plain training, 98-99% fewer PANs) and to 1 with ``probes="placement"``; ``every`` to 16 here
    (1.03-1.07x the step time) and to 4. ``border_margin`` / ``position_margin`` default to half
    the detector's thresholds (on probes, or on data once ``images`` are set).

    ``probes="placement"``: ``pan_penalty`` on :func:`make_placement_probes` (the earlier study,
    see the module docstring): a bank of ``bank`` patterns, ``n_patterns`` of them per call in a
    seeded order; ``weight`` is the position term's weight, ``layers`` / ``border_layers`` /
    ``axes`` / ``probe_size`` / ``pattern_size`` / ``level`` / ``style`` / ``contrast`` / ``noise``
    / ``roll_stride`` shape those probes.

    ``images`` (or :meth:`set_images`; ``probes="detector"`` only): the model's own images, e.g.
    the training data's calibration sample ``PANRegularizer`` keeps: the scores are then measured
    on them as ``find_pans(data=...)`` measures (border images and canvases made of the data),
    not on synthetic probes.

    Both: ``every=k`` computes the penalty on every k-th call only, multiplied by k (same average
    gradient); the other calls return a constant zero without a probe pass. Deterministic in
    ``seed``; the global RNG is not touched; ``state_dict``/``load_state_dict`` keep the step.

    Example:
        >>> from pan_repair import SmallCNN
        >>> from pan_repair.repair.regularizer import PANPenalty
        >>> model = SmallCNN(num_classes=2, depth=3, width=8)
        >>> penalty = PANPenalty((1, 24, 24))
        >>> loss = penalty(model)  # + the task loss
        >>> loss.backward()
        >>> model.features[6].weight.grad is not None
        True
    """

    def __init__(self, input_size: tuple[int, int, int], n_patterns: int | None = None,
                 n_positions: int | None = None, *, probes: str = "detector", weight: float | None = None,
                 border_weight: float | None = None, position_weight: float = 0.0,
                 border_margin: float | None = None, position_margin: float | None = None,
                 layers: Iterable[str] | None = None, border_layers: Iterable[str] | None = None,
                 axes: Iterable[int | str] = ("rows", "cols"), bank: int | None = None, every: int | None = None,
                 probe_size: int | None = None, pattern_size: int | None = None, level: float = 1.0,
                 seed: int = 0, style: str = "texture", contrast: float = 6.0, noise: float = 0.3,
                 roll_stride: tuple[int, int] | None = None, images: torch.Tensor | None = None,
                 input_range: tuple[float, float] | None = None, mean: float | tuple[float, ...] | None = None,
                 std: float | tuple[float, ...] | None = None) -> None:
        if probes not in _DEFAULTS:
            raise ValueError(f"unknown probes {probes!r}; expected one of {', '.join(PROBE_KINDS)}")
        d = _DEFAULTS[probes]
        n_patterns = d["n_patterns"] if n_patterns is None else n_patterns
        n_positions = d["n_positions"] if n_positions is None else n_positions
        every = d["every"] if every is None else every
        bank = d["bank"] if bank is None else bank
        border_weight = d["border_weight"] if border_weight is None else border_weight
        weight = d["weight"] if weight is None else weight
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if n_patterns < 2 or (probes == "placement" and bank < n_patterns) or bank < 1:
            raise ValueError(f"need 2 <= n_patterns <= bank, got n_patterns={n_patterns}, bank={bank}")
        margins = [m for m in (border_margin, position_margin) if m is not None]
        if min(weight, border_weight, position_weight, *margins) < 0:
            raise ValueError(f"weights and margins must be >= 0, got weight={weight}, "
                             f"border_weight={border_weight}, position_weight={position_weight}")
        placement_only = dict(border_layers=border_layers, probe_size=probe_size, pattern_size=pattern_size,
                              roll_stride=roll_stride, style=None if style == "texture" else style)
        given = [k for k, v in placement_only.items() if v is not None]
        if probes == "detector" and given:
            raise ValueError(f"{', '.join(given)}: options of probes='placement' only")
        self.convention = {k: v for k, v in dict(input_range=input_range, mean=mean, std=std).items() if v is not None}
        if probes == "placement" and self.convention:
            raise ValueError(f"{', '.join(self.convention)}: options of probes='detector' only")
        resolve_convention(nn.Identity(), int(input_size[0]), **self.convention)  # a bad one fails here
        c, h, w = (int(v) for v in input_size)
        if probe_size is not None:
            h = w = int(probe_size)
        self.input_size = (c, h, w)
        self.kind = probes
        self.n_patterns, self.n_positions, self.bank, self.axes = n_patterns, n_positions, bank, roll_axes(axes)
        self.layers = None if layers is None else list(layers)
        self.border_layers = None if border_layers is None else list(border_layers)
        self.weight, self.border_weight = float(weight), float(border_weight)
        self.position_weight = float(position_weight)
        self._margins = (border_margin, position_margin)
        self.every, self.seed = int(every), seed
        if style not in STYLES:
            raise ValueError(f"unknown probe style {style!r}; expected one of {', '.join(STYLES)}")
        self.pattern_size, self.level = pattern_size, level
        self.style, self.contrast, self.noise = style, float(contrast), float(noise)
        self.roll_stride = None if roll_stride is None else tuple(int(v) for v in roll_stride)
        self.step = 0
        self._probes: PlacementProbes | None = None
        self._bank: dict[int, tuple[float | None, ProbeBatch]] = {}  # i -> (canvas level, probes)
        self._pre: Prepass | None = None
        self._order = torch.randperm(bank, generator=torch.Generator().manual_seed(seed)).tolist()
        self.images: torch.Tensor | None = None
        if images is not None:
            self.set_images(images)

    @property
    def border_margin(self) -> float:
        """The border term's margin: as given, else half the detector's border threshold (on
        probes, or on data once :attr:`images` are set)."""
        given = self._margins[0]
        return float(given) if given is not None else 0.5 * (
            DEFAULT_BORDER_THRESHOLD if self.images is None else DEFAULT_DATA_BORDER_THRESHOLD)

    @property
    def position_margin(self) -> float:
        """The position term's margin: as given, else half the detector's position threshold."""
        given = self._margins[1]
        return float(given) if given is not None else 0.5 * (
            DEFAULT_POSITION_THRESHOLD if self.images is None else DEFAULT_DATA_POSITION_THRESHOLD)

    def set_images(self, images: torch.Tensor) -> None:
        """Measure on the model's own ``images`` (N, C, H, W) from now on (see
        :meth:`detector_probes`); the probe bank is rebuilt."""
        if self.kind != "detector":
            raise ValueError("images: an option of probes='detector' only")
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_size or not images.is_floating_point():
            raise ValueError(f"images must be floating (N, {', '.join(map(str, self.input_size))}), "
                             f"got {tuple(images.shape)} {images.dtype}")
        self.images = images.detach().to("cpu", torch.float32, copy=True)
        self._bank.clear()

    def probes(self, model: nn.Module) -> PlacementProbes:
        """The placement probe bank (built on first use, rolled by ``model``'s total stride)."""
        if self._probes is None:
            device, dtype = device_dtype(model)
            self._probes = make_placement_probes(
                self.input_size, self.bank, self.n_positions, axes=self.axes,
                stride=self.roll_stride or total_stride(model, self.input_size, device, dtype),
                pattern_size=self.pattern_size, level=self.level,
                n_constants=N_CONSTANTS if self.border_weight > 0 else 0, seed=self.seed,
                style=self.style, contrast=self.contrast, noise=self.noise)
        return self._probes

    def detector_probes(self, model: nn.Module, i: int) -> ProbeBatch:
        """Probe batch ``i`` of the detector-probe bank (cached). Data-free: the probes
        :func:`~pan_repair.find_pans` builds (:func:`~pan_repair.detect.detector.scan_probes`,
        seed ``seed + i``, the input convention given), rebuilt when the canvas level the stem's
        BatchNorm implies (:func:`~pan_repair.detect.implied.stem_level`, to 0.05) has moved
        since, as training moves it. With ``images``, as the detector measures on data: border
        images ``_DATA_BORDER`` of the images in turn (batch ``i`` starts at image
        ``i * _DATA_BORDER``), and the position canvases made of the images
        (:func:`~pan_repair.detect.probes.data_canvases`, ``seed + i``) rolled as the detector
        rolls them."""
        i %= self.bank
        if self._pre is None:
            self._pre = prepass(model, self.input_size, *device_dtype(model))
        if self.images is not None:
            if i not in self._bank:
                n = len(self.images)
                border = self.images[[(i * _DATA_BORDER + k) % n for k in range(min(_DATA_BORDER, n))]]
                turn = self.images[[(i * self.n_patterns + k) % n for k in range(n)]]  # other images first
                grid = roll_grid(data_canvases(turn, self.n_patterns, self.seed + i), self.n_positions,
                                 self._pre.stride)
                self._bank[i] = (None, ProbeBatch(torch.cat([border, grid.images]), len(border), grid.n_patterns,
                                                  grid.n_positions, grid.distances))
            return self._bank[i][1]
        convention = resolve_convention(model, self.input_size[0], **self.convention)
        level = stem_level(model, self._pre.stem, self._pre.feeds_bn, convention, self.input_size)
        key = None if level is None else round(level[0] * 20) / 20
        if i not in self._bank or self._bank[i][0] != key:
            self._bank[i] = (key, scan_probes(model, self.input_size, n_patterns=self.n_patterns,
                                              n_positions=self.n_positions, seed=self.seed + i, **self.convention))
        return self._bank[i][1]

    def __call__(self, model: nn.Module) -> torch.Tensor:
        step, self.step = self.step, self.step + 1
        if step % self.every:
            return torch.zeros((), device=device_dtype(model)[0])
        if self.kind == "detector":
            probes = self.detector_probes(model, step // self.every)
            return (self.every * self.weight) * detector_penalty(
                model, probes, layers=self.layers, border_weight=self.border_weight,
                position_weight=self.position_weight, border_margin=self.border_margin,
                position_margin=self.position_margin)
        bank = self.probes(model)
        start = (step // self.every) * self.n_patterns
        chosen = [self._order[(start + i) % self.bank] for i in range(self.n_patterns)]
        return self.every * pan_penalty(model, bank.select(chosen), layers=self.layers, weight=self.weight,
                                        border_weight=self.border_weight, border_layers=self.border_layers)

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
