"""Silence or remove the PANs of a :class:`~pan_repair.detect.report.PanReport`: :func:`prune_pans`.

**Mask** (default, reversible). Each PAN channel ``c`` of a convolution is silenced through
:mod:`torch.nn.utils.prune` with a :class:`PanMask` (a ``CustomFromMask``): ``weight[c]``, the
conv's ``bias[c]`` if any, and, when the conv feeds a BatchNorm, that BatchNorm's ``weight[c]``
and ``bias[c]``. A masked weight alone would leave the bias (and the BatchNorm's shift), so the
channel would output a constant, not a zero; with all four masked it outputs exactly ``0``
after the BatchNorm in eval *and* in train mode (batch statistics of a zero channel are 0). The
pairing conv -> BatchNorm is read from one forward pass with hooks: a BatchNorm is paired with a
conv when its input tensor *is* the conv's output, whatever the module names or nesting (plain
``nn.Sequential``, ``conv1``/``bn1``, timm's ``ConvNormAct``/``BatchNormAct2d``).

As with all of torch's pruning, a masked parameter ``p`` becomes ``p_orig`` (a parameter, still
trained) times ``p_mask`` (a buffer), so until the masks are made permanent the *state dict*
holds ``weight_orig``/``weight_mask`` instead of ``weight``. For checkpoints:

* :func:`remove_pan_masks` makes the masks permanent (``prune.remove``): plain ``weight``
  again, the zeros baked in;
* :func:`clean_state_dict` gives a state dict with plain names and masks applied, which loads
  into the unmodified architecture, without touching the model (what Lightning's
  ``ModelPruning`` saves);
* :func:`apply_state_dict_masks` re-creates the masks of a masked state dict on a fresh model,
  so that ``load_state_dict`` accepts it (resume a masked training);
* :func:`undo_pan_masks` restores the original channels (the ``_orig`` values).

**Remove** (``mode="remove"``): the channels are cut out of the model where its data flow
allows, computing exactly what the masked model computes; the other layers are masked (or left,
``fallback="skip"``) and listed with the reason. See :mod:`pan_repair.repair.channel_removal`.

**Validation first.** A report from another model (a layer name that is not a convolution of
``model``, a channel index beyond its outputs, a layer whose filter count differs from the
report's) raises ``ValueError`` naming the layer before anything is changed.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Iterable

import torch
from torch import nn
from torch.nn.utils import prune

from .channel_removal import remove_channels
from ..layers.padding import conv_bn_pairs
from ..layers.module_state import reparametrization
from ..detect.report import KINDS, PanReport

__all__ = [
    "PanMask",
    "PruneSummary",
    "prune_pans",
    "remove_pan_masks",
    "undo_pan_masks",
    "clean_state_dict",
    "apply_state_dict_masks",
    "conv_bn_pairs",
    "MODES",
]

MODES = ("mask", "remove")


class PanMask(prune.CustomFromMask):
    """The pruning method :func:`prune_pans` applies (a ``CustomFromMask``; its own class so that
    :func:`remove_pan_masks` and :func:`undo_pan_masks` find the PAN masks among others)."""


@dataclass
class PruneSummary:
    """What :func:`prune_pans` did.

    Attributes:
        mode: ``"mask"`` or ``"remove"``.
        channels: conv layer -> the PAN channels silenced (masked or removed), sorted.
        batchnorms: conv layer -> the BatchNorm it feeds (masked or cut with it).
        masked: conv layer -> channels masked (all of ``channels`` in mask mode; in remove mode
            the layers that could not be removed, with ``fallback="mask"``, as indices of the
            returned model: a depthwise conv after a removed layer loses channels, and those
            removed with it need no mask).
        removed: conv layer -> output channels physically removed (remove mode; indices of the
            original model). Includes the channels of depthwise convs the removal propagated
            through.
        not_removable: conv layer -> why its channels could not be removed.
        not_silenced: conv layer -> why its masked channels still output a constant (e.g. a
            BatchNorm without affine parameters).
        params_before, params_after: parameter counts (masked entries still count).
    """

    mode: str
    channels: dict[str, list[int]] = field(default_factory=dict)
    batchnorms: dict[str, str] = field(default_factory=dict)
    masked: dict[str, list[int]] = field(default_factory=dict)
    removed: dict[str, list[int]] = field(default_factory=dict)
    not_removable: dict[str, str] = field(default_factory=dict)
    not_silenced: dict[str, str] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0

    @property
    def count(self) -> int:
        """Number of PAN channels silenced."""
        return sum(len(v) for v in self.channels.values())

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"prune_pans(mode={self.mode!r}): {self.count} PAN channels in {len(self.channels)} layers; "
                 f"parameters {self.params_before} -> {self.params_after}"]
        for layer, chans in self.channels.items():
            bn = f" (+ {self.batchnorms[layer]})" if layer in self.batchnorms else ""
            if self.mode == "remove" and layer not in self.not_removable:
                how = f"removed {chans}"
            else:
                how = f"masked {self.masked[layer]}" if layer in self.masked else f"left as they are {chans}"
                if layer in self.removed:
                    how += f"; channels {self.removed[layer]} removed with the layer feeding it"
            lines.append(f"  {layer}{bn}: {how}")
        for layer, chans in self.removed.items():
            if layer not in self.channels:
                lines.append(f"  {layer}: removed {chans} (channels that only fed, or were fed "
                             "only by, removed PAN channels)")
        for layer, why in self.not_removable.items():
            lines.append(f"  {layer}: not removable: {why}")
        for layer, why in self.not_silenced.items():
            lines.append(f"  {layer}: not silent: {why}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# pairing and validation


def _select(report: PanReport, kinds: Iterable[str], layers: Iterable[str] | None) -> dict[str, list[int]]:
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown PAN kind(s) {bad}; expected a subset of {KINDS}")
    wanted = None if layers is None else set(layers)
    if wanted is not None:
        unknown = wanted - {p.layer for p in report.pans} - {l.name for l in report.layers}
        if unknown:
            raise ValueError(f"layers not in the report: {', '.join(sorted(unknown))}")
    out: dict[str, set[int]] = defaultdict(set)
    for pan in report.pans:
        if pan.kind in kinds and (wanted is None or pan.layer in wanted):
            out[pan.layer].add(int(pan.channel))
    return {layer: sorted(chans) for layer, chans in out.items()}


def _validate(model: nn.Module, report: PanReport, selected: dict[str, list[int]]) -> None:
    modules = dict(model.named_modules())
    infos = {layer.name: layer for layer in report.layers}
    for layer, chans in selected.items():
        module = modules.get(layer)
        if module is None:
            raise ValueError(f"report layer {layer!r} is not a module of this model "
                             "(is the report from another model?)")
        if not isinstance(module, nn.Conv2d):
            raise ValueError(f"report layer {layer!r} is a {type(module).__name__}, not a convolution "
                             "(is the report from another model?)")
        if chans and (chans[-1] >= module.out_channels or chans[0] < 0):
            raise ValueError(f"report layer {layer!r}: channel {chans[-1]} out of range, the layer has "
                             f"{module.out_channels} output channels (is the report from another model?)")
        info = infos.get(layer)
        if info is not None and info.out_channels != module.out_channels:
            raise ValueError(f"report layer {layer!r} has {info.out_channels} filters in the report but "
                             f"{module.out_channels} in the model (is the report from another model?)")


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# masks


def _channel_mask(t: torch.Tensor, chans: list[int]) -> torch.Tensor:
    mask = torch.ones_like(t, dtype=t.dtype if t.is_floating_point() else torch.float32)
    mask[chans] = 0
    return mask


def _plan_masks(model: nn.Module, selected: dict[str, list[int]], pairs: dict[str, str],
                summary: PruneSummary) -> list[tuple[nn.Module, str, torch.Tensor]]:
    plan = []
    for layer, chans in selected.items():
        conv = model.get_submodule(layer)
        plan += [(conv, name, _channel_mask(getattr(conv, name), chans)) for name in ("weight", "bias")
                 if getattr(conv, name) is not None and _maskable(conv, name)]
        bn_name = pairs.get(layer)
        computed = reparametrization(conv, "weight")
        if computed is not None and not _maskable(conv, "weight") and (bn_name is None or
                                                                     model.get_submodule(bn_name).weight is None):
            summary.not_silenced[layer] = (f"its weight is computed ({computed}) and no affine BatchNorm "
                                           "follows: only its bias is masked")
        if bn_name is not None:
            bn = model.get_submodule(bn_name)
            summary.batchnorms[layer] = bn_name
            if bn.weight is None or bn.bias is None:
                summary.not_silenced[layer] = (f"{bn_name} has no affine parameters: the channels "
                                               "output -running_mean / running_std after it")
            else:
                plan += [(bn, "weight", _channel_mask(bn.weight, chans)),
                         (bn, "bias", _channel_mask(bn.bias, chans))]
        summary.masked[layer] = list(chans)
    return plan


def _maskable(module: nn.Module, name: str) -> bool:
    """Whether ``torch.nn.utils.prune`` can mask ``module.<name>``: a plain parameter or one
    already pruned (not one computed by ``weight_norm``, ``spectral_norm`` or a parametrization,
    whose channel the BatchNorm it feeds silences instead)."""
    return name in module._parameters or reparametrization(module, name) == "pruning masks"


def _apply_masks(plan: list[tuple[nn.Module, str, torch.Tensor]]) -> None:
    for module, name, mask in plan:
        PanMask.apply(module, name, mask)


def _pruning_hooks(module: nn.Module) -> list[prune.BasePruningMethod]:
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]


def _is_pan(hook: prune.BasePruningMethod) -> bool:
    if isinstance(hook, prune.PruningContainer):
        return any(isinstance(m, PanMask) for m in hook._pruning_methods)
    return isinstance(hook, PanMask)


def remove_pan_masks(model: nn.Module) -> list[str]:
    """Make the PAN masks permanent (``torch.nn.utils.prune.remove``): every masked parameter
    is plain again (``weight``, not ``weight_orig``/``weight_mask``), its masked entries zero.
    Masks combined with other pruning on the same tensor are made permanent together (torch
    keeps one combined mask). Returns the ``module.parameter`` names made permanent."""
    done = []
    for name, module in model.named_modules():
        for hook in _pruning_hooks(module):
            if _is_pan(hook):
                prune.remove(module, hook._tensor_name)
                done.append(f"{name}.{hook._tensor_name}" if name else hook._tensor_name)
    return done


def undo_pan_masks(model: nn.Module) -> list[str]:
    """Undo :func:`prune_pans` in mask mode: every PAN-masked parameter gets back its original
    (``_orig``) values, trained further if training went on. Raises ``ValueError`` (nothing
    changed) where a PAN mask was combined with other pruning on the same tensor."""
    found = [(name, module, hook) for name, module in model.named_modules()
             for hook in _pruning_hooks(module) if _is_pan(hook)]
    mixed = [f"{n}.{h._tensor_name}" for n, _, h in found
             if isinstance(h, prune.PruningContainer) and not all(isinstance(m, PanMask) for m in h._pruning_methods)]
    if mixed:
        raise ValueError(f"PAN masks combined with other pruning cannot be undone alone: {', '.join(mixed)}")
    done = []
    for name, module, hook in found:
        tensor = hook._tensor_name
        for key, h in list(module._forward_pre_hooks.items()):
            if h is hook:
                del module._forward_pre_hooks[key]
        orig = module._parameters.pop(tensor + "_orig")
        del module._buffers[tensor + "_mask"]
        if tensor in module.__dict__:
            delattr(module, tensor)
        module.register_parameter(tensor, orig)
        done.append(f"{name}.{tensor}" if name else tensor)
    return done


def clean_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every pruned tensor under its plain name (``weight``, the mask
    applied) and no ``_orig``/``_mask`` entries: it loads into the unmodified architecture. The
    model is not changed."""
    state = model.state_dict()
    out = {}
    for key, value in state.items():
        if key.endswith("_mask") and key[:-5] + "_orig" in state:
            continue
        if key.endswith("_orig") and key[:-5] + "_mask" in state:
            out[key[:-5]] = value * state[key[:-5] + "_mask"]
        else:
            out[key] = value
    return out


def apply_state_dict_masks(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Re-create, on ``model``, the masks stored in ``state_dict`` (keys ``<param>_mask`` beside
    ``<param>_orig``) as :class:`PanMask` pruning, so that ``model.load_state_dict(state_dict)``
    then loads a checkpoint saved from a masked model. Returns the masked parameter names."""
    done = []
    for key, mask in state_dict.items():
        if not (key.endswith("_mask") and key[:-5] + "_orig" in state_dict):
            continue
        path, _, tensor = key[:-5].rpartition(".")
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"state dict mask {key!r}: no module {path!r} in the model") from None
        current = getattr(module, tensor, None)
        if not isinstance(current, torch.Tensor) or current.shape != mask.shape:
            raise ValueError(f"state dict mask {key!r} does not fit {path or 'the model'}.{tensor}")
        if f"{tensor}_mask" not in module._buffers:
            PanMask.apply(module, tensor, mask.to(current.device))
        done.append(key[:-5])
    return done


def prune_pans(model: nn.Module, report: PanReport, *, kinds: Iterable[str] = KINDS, mode: str = "mask",
               layers: Iterable[str] | None = None, fallback: str = "mask") -> PruneSummary:
    """Silence the PANs of ``report`` in ``model``, in place (see the module docstring).

    Args:
        model: the model ``report`` was computed on.
        report: from :func:`pan_repair.find_pans`.
        kinds: which PAN kinds to silence (``"border"``, ``"position"``).
        mode: ``"mask"`` (reversible, through ``torch.nn.utils.prune``) or ``"remove"``
            (physically smaller modules where the architecture allows).
        layers: only the PANs of these conv layers (default: all).
        fallback: in remove mode, what to do with the layers that cannot be removed:
            ``"mask"`` (default) or ``"skip"`` (leave them; they stay in ``not_removable``).

    Returns:
        A :class:`PruneSummary`.

    Raises:
        ValueError: unknown mode/kind/fallback, or a report that does not fit the model
            (nothing is changed).

    Example:
        >>> import torch
        >>> from pan_repair import SmallCNN, find_pans
        >>> from pan_repair.repair.pruning import prune_pans
        >>> model = SmallCNN(depth=3, width=8).eval()
        >>> report = find_pans(model, (1, 24, 24), position_threshold=0.5)
        >>> summary = prune_pans(model, report)
        >>> summary.count == report.count
        True
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    if fallback not in ("mask", "skip"):
        raise ValueError(f"unknown fallback {fallback!r}; expected 'mask' or 'skip'")
    if not isinstance(report, PanReport):
        raise ValueError(f"report must be a PanReport, got {type(report).__name__}")
    selected = _select(report, kinds, layers)
    _validate(model, report, selected)
    summary = PruneSummary(mode, channels=dict(selected), params_before=_count(model))
    if not selected:
        summary.params_after = summary.params_before
        return summary
    pairs = conv_bn_pairs(model, report.input_size)
    to_mask, removal = selected, None
    if mode == "remove":
        removal = remove_channels(model, selected, pairs, report.input_size, mask_rest=fallback == "mask")
        summary.removed, summary.not_removable = removal.removed, removal.not_removable
        summary.batchnorms.update(removal.batchnorms)
        to_mask = {} if fallback == "skip" else removal.leftover
    try:
        plan = _plan_masks(model, to_mask, pairs, summary)
    except Exception:  # the model as it was: the removed modules put back
        if removal is not None:
            removal.undo(model)
        raise
    _apply_masks(plan)
    summary.params_after = _count(model)
    return summary
