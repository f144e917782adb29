"""Physical removal of channels: :func:`remove_channels`, what ``prune_pans(mode="remove")`` runs.

Selected output channels of convolutions are cut out of the model where its data flow allows,
so that the smaller model computes exactly what the masked model computes (eval mode; masked
channels output 0 after their BatchNorm, see :mod:`pan_repair.repair.pruning`):

* the conv's output channels, its BatchNorm's, and the consumer's input channels, for a consumer
  that is a conv (plain kernel: not weight-standardised) or a Linear after global pooling and
  flattening; channel-wise steps in between are followed (activations with ``f(0) = 0``,
  pooling, dropout, flatten);
* a depthwise conv on the way loses the same channels: in the masked model they output a
  constant (its bias through BatchNorm and activation), folded into the next consumer's bias
  where that is exact (a 1x1 conv without padding, or a Linear after global pooling);
* a depthwise conv's own channel ``c`` reads only its input channel ``c``: that goes too, back
  through channel-wise steps to the conv producing it, when nothing else reads it (channel
  multiplier 1).

The data flow comes from a :mod:`torch.fx` trace in which timm's layers that fx cannot trace into
(``Conv2dSame``, ``BatchNormAct2d``, weight-standardised and mixed convs) and pan_repair's padded
convs are whole modules. A layer whose channels meet a residual ``add``, a concatenation, the
model's output, a grouped conv or anything unknown cannot be cut: it is listed in
:attr:`Removal.not_removable` with the reason. All new modules are built before any is swapped
in, then one forward pass checks the result; on failure the original modules are put back.
Removal replaces parameters: build the optimizer after it.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from timm.layers import (BatchNormAct2d, Conv2dSame, MixedConv2d, ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d,
                         StdConv2dSame)
from timm.layers.conv2d_same import Conv2dSameExport

from ..layers.padding import blank_forward, conv_padding
from ..layers.module_state import eval_mode, reparametrization, structural_copy

__all__ = ["Removal", "remove_channels", "set_module"]

_BN = nn.modules.batchnorm._BatchNorm


@dataclass
class Removal:
    """What :func:`remove_channels` did.

    Attributes:
        leftover: conv layer -> channels that could not be cut, as indices of the changed model
            (a depthwise conv after a cut layer loses channels; those cut with it are dropped).
        removed: conv or linear layer -> output channels cut (indices of the original model),
            including those of layers the cut propagated into.
        not_removable: conv layer -> why its channels could not be cut.
        batchnorms: cut conv layer -> the BatchNorm cut with it.
        swapped: module name -> the original module it replaced (see :meth:`undo`).
    """

    leftover: dict[str, list[int]]
    removed: dict[str, list[int]] = field(default_factory=dict)
    not_removable: dict[str, str] = field(default_factory=dict)
    batchnorms: dict[str, str] = field(default_factory=dict)
    swapped: dict[str, nn.Module] = field(default_factory=dict)

    def undo(self, model: nn.Module) -> None:
        """Put the original modules back."""
        for name, module in self.swapped.items():
            set_module(model, name, module)


def _has_masks(module: nn.Module) -> bool:
    """Whether a parameter of ``module`` is computed (``torch.nn.utils.prune`` masks,
    ``weight_norm``, ``spectral_norm``, a parametrization): it cannot be sliced."""
    return any(reparametrization(module, name) is not None for name in ("weight", "bias"))


class _NotRemovable(Exception):
    pass


#: element-wise steps that keep a zero channel zero, as modules and as functions/methods
_ZERO_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                 nn.Hardswish, nn.Tanh, nn.Hardtanh, nn.Softshrink, nn.Hardshrink, nn.Tanhshrink,
                 nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.PReLU)
_ELEMENTWISE_FUNCTIONS = {F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
                          F.hardswish, F.hardtanh, torch.relu, torch.tanh, F.tanh, F.dropout, F.dropout2d}
_ZERO_FUNCTIONS = _ELEMENTWISE_FUNCTIONS | {torch.flatten, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
                                            F.avg_pool2d, F.max_pool2d}
_ELEMENTWISE_METHODS = {"relu", "relu_", "tanh", "contiguous", "clone"}
_ZERO_METHODS = _ELEMENTWISE_METHODS | {"flatten"}
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
#: convs whose forward is F.conv2d of ``weight`` (possibly with their own padding): inputs
#: and outputs can be sliced; weight-standardised convs only their outputs
_PLAIN_CONVS = (nn.Conv2d, Conv2dSame, Conv2dSameExport)
_STD_CONVS = (StdConv2d, StdConv2dSame, ScaledStdConv2d, ScaledStdConv2dSame)


def _conv_kind(conv: nn.Module) -> str:
    """"plain" (in and out channels can be sliced), "std" (only out), or "other"."""
    from ..layers.padding_switch import PaddedConv2d  # converted convs pad explicitly, same kernels
    t = type(conv)
    if t in _PLAIN_CONVS or t is PaddedConv2d:
        return "plain"
    if t in _STD_CONVS or issubclass(t, PaddedConv2d) and isinstance(conv, _STD_CONVS):
        return "std"
    return "other"


@dataclass
class _Plan:
    out_remove: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    in_remove: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    bn_remove: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    bias_add: dict[str, torch.Tensor] = field(default_factory=dict)

    def merge(self, other: "_Plan") -> None:
        for mine, theirs in ((self.out_remove, other.out_remove), (self.in_remove, other.in_remove),
                             (self.bn_remove, other.bn_remove)):
            for k, v in theirs.items():
                mine[k] |= v
        for k, v in other.bias_add.items():
            self.bias_add[k] = self.bias_add[k] + v if k in self.bias_add else v


class _Tracer:
    """Follows removed channels from a conv node to their consumers in an fx graph."""

    def __init__(self, gm: torch.fx.GraphModule, modules: dict[str, nn.Module], pairs: dict[str, str],
                 silenced: dict[str, list[int]]):
        self.gm, self.modules, self.pairs = gm, modules, pairs
        # the PAN channels that end up silenced (removed, or masked after the removal): in the
        # masked model a depthwise conv's silenced channels output 0 from the conv and from its
        # BatchNorm, which the constants carried through it must respect
        self.silenced = {k: list(v) for k, v in silenced.items()}
        self.zero_at_bn = {pairs[k]: list(v) for k, v in silenced.items() if k in pairs}
        self.calls = defaultdict(int)
        for node in gm.graph.nodes:
            if node.op == "call_module":
                self.calls[node.target] += 1

    def _shape(self, node) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def _desc(self, node) -> str:
        if node.op == "call_module":
            return f"{type(self.modules[node.target]).__name__} {node.target!r}"
        if node.op == "output":
            return "the model's output"
        target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
        kind = {"add": "a residual add", "iadd": "a residual add", "cat": "a concatenation",
                "concat": "a concatenation", "stack": "a stack", "mul": "a multiplication"}.get(target)
        return kind or f"{node.op} {target}"

    def plan(self, layer: str, chans: set[int], conv_node) -> _Plan:
        conv = self.modules[layer]
        if self.calls[layer] > 1:
            raise _NotRemovable("the conv is called more than once in forward")
        if _has_masks(conv):
            raise _NotRemovable(f"the conv's weight is computed ({reparametrization(conv)}): "
                                "make it permanent or undo it first")
        if _conv_kind(conv) == "other":
            raise _NotRemovable(f"unsupported conv type {type(conv).__name__}")
        plan = _Plan()
        if conv.groups != 1:
            if conv.groups == conv.in_channels != conv.out_channels:
                raise _NotRemovable(f"depthwise conv with channel multiplier {conv.out_channels // conv.in_channels}: "
                                    "each input channel feeds several outputs")
            if conv.groups != conv.in_channels:
                raise _NotRemovable(f"grouped conv (groups={conv.groups})")
            # depthwise: output c reads input c alone, so input c goes too, back to its producer
            plan.in_remove[layer] |= chans
            self._back(conv_node.args[0], chans, plan)
        plan.out_remove[layer] |= chans
        self._follow(conv_node, set(chans), plan, const=None, bn_allowed=self.pairs.get(layer))
        return plan

    def _back(self, node, chans: set[int], plan: _Plan) -> None:
        """Remove ``chans`` from the producer of a depthwise conv's input ``node``: back through
        channel-wise steps (BatchNorm, activations) to a conv whose output channels they are.
        Every tensor on the way must feed nothing else."""
        desc = self._desc(node)
        if len(node.users) != 1:
            raise _NotRemovable(f"depthwise conv whose input ({desc}) also feeds other layers")
        if node.op == "call_module":
            module = self.modules[node.target]
            if self.calls[node.target] > 1 or _has_masks(module):
                raise _NotRemovable(f"depthwise conv fed by {desc}, called more than once or masked")
            if isinstance(module, nn.Conv2d) and module.groups == 1 and _conv_kind(module) != "other":
                plan.out_remove[node.target] |= chans
                return
            if isinstance(module, _BN):
                plan.bn_remove[node.target] |= chans
                return self._back(node.args[0], chans, plan)
            if isinstance(module, _ZERO_MODULES) and getattr(module, "num_parameters", 1) == 1:
                return self._back(node.args[0], chans, plan)
        elif node.op in ("call_function", "call_method") and node.args and isinstance(node.args[0], torch.fx.Node):
            if node.target in _ELEMENTWISE_FUNCTIONS or (
                    node.op == "call_method" and node.target in _ELEMENTWISE_METHODS):
                return self._back(node.args[0], chans, plan)
        raise _NotRemovable(f"depthwise conv fed by {desc}, which cannot lose channels")

    def _follow(self, node, chans: set[int], plan: _Plan, const: torch.Tensor | None,
                bn_allowed: str | None, flat: int | None = None) -> None:
        """``chans``: removed channel indices in ``node``'s output (feature indices once flattened,
        ``flat`` = spatial size per channel). ``const``: None while the removed channels are
        exactly zero in the masked model, else their constant value per channel (C,)."""
        users = list(node.users)
        if not users:
            raise _NotRemovable(f"{self._desc(node)} has no consumer")
        for user in users:
            self._step(node, user, chans, plan, const, bn_allowed, flat)

    def _step(self, src, node, chans, plan, const, bn_allowed, flat) -> None:
        if node.op == "output":
            raise _NotRemovable("its channels reach the model's output")
        args = [a for a in node.args if isinstance(a, torch.fx.Node)]
        args += [a for a in node.kwargs.values() if isinstance(a, torch.fx.Node)]
        if len(args) != 1 or node.args[:1] != (src,):
            raise _NotRemovable(f"consumed by {self._desc(node)} together with other tensors")
        if node.op == "call_module":
            module = self.modules[node.target]
            if self.calls[node.target] > 1:
                raise _NotRemovable(f"{self._desc(node)} is called more than once in forward")
            if isinstance(module, nn.Conv2d):
                return self._into_conv(node, module, chans, plan, const, flat)
            if isinstance(module, nn.Linear):
                return self._into_linear(node, module, chans, plan, const, flat)
            if isinstance(module, _BN):
                if flat is not None:
                    raise _NotRemovable(f"{self._desc(node)} after flattening")
                if const is None and node.target != bn_allowed:
                    raise _NotRemovable(f"{self._desc(node)} after a non-linearity turns the zero "
                                        "channel into a constant")
                if _has_masks(module):
                    raise _NotRemovable(f"{self._desc(node)} has a computed weight (masks or a reparametrization)")
                plan.bn_remove[node.target] |= chans
                if const is not None:
                    const = self._apply(node, const)
                    if module.affine and node.target in self.zero_at_bn:
                        const[self.zero_at_bn[node.target]] = 0
                return self._follow(node, chans, plan, const, None, flat)
            if isinstance(module, _ZERO_MODULES) and getattr(module, "num_parameters", 1) == 1:
                if const is not None:
                    const = self._apply(node, const)
                return self._follow(node, chans, plan, const, bn_allowed, flat)
            if isinstance(module, _POOLS):
                return self._pool(node, chans, plan, const, bn_allowed, flat, module)
            if isinstance(module, nn.Flatten):
                return self._flatten(node, chans, plan, const, flat, module.start_dim)
            raise _NotRemovable(f"consumed by {self._desc(node)}")
        if node.op in ("call_function", "call_method"):
            target = node.target
            if target in (torch.flatten, "flatten"):
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                return self._flatten(node, chans, plan, const, flat, start)
            if target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.avg_pool2d, F.max_pool2d):
                return self._pool(node, chans, plan, const, bn_allowed, flat, None)
            if target in _ZERO_FUNCTIONS or (node.op == "call_method" and target in _ZERO_METHODS):
                if const is not None:
                    const = self._apply(node, const)
                return self._follow(node, chans, plan, const, bn_allowed, flat)
        raise _NotRemovable(f"consumed by {self._desc(node)}")

    def _apply(self, node, const: torch.Tensor) -> torch.Tensor:
        """Apply a channel-wise step to the constant value of every channel (C,), in eval mode."""
        x = const.clone().view(1, -1, 1, 1)
        if node.op == "call_module":
            y = self.modules[node.target](x)
        elif node.op == "call_function":
            y = node.target(x, *node.args[1:], **node.kwargs)
        else:
            y = getattr(x, node.target)(*node.args[1:], **node.kwargs)
        return y.reshape(-1)

    def _pool(self, node, chans, plan, const, bn_allowed, flat, module) -> None:
        if flat is not None:
            raise _NotRemovable(f"pooling after flattening ({self._desc(node)})")
        shape = self._shape(node)
        if const is not None and (shape is None or shape[-2:] != (1, 1)):
            # a constant stays constant only under global pooling (padding would change it)
            raise _NotRemovable(f"{self._desc(node)} on a constant channel is not global")
        return self._follow(node, chans, plan, const, bn_allowed, flat)

    def _flatten(self, node, chans, plan, const, flat, start) -> None:
        src_shape = self._shape(node.args[0])
        if flat is not None or src_shape is None or len(src_shape) != 4 or start not in (1, -3):
            raise _NotRemovable(f"consumed by {self._desc(node)} (only flatten(1) of N x C x H x W)")
        per = src_shape[2] * src_shape[3]
        if const is not None and per != 1:
            raise _NotRemovable("a constant channel is flattened without global pooling")
        feats = {c * per + j for c in chans for j in range(per)}
        return self._follow(node, feats, plan, const, None, per)

    def _into_linear(self, node, linear, chans, plan, const, flat) -> None:
        if flat is None:
            raise _NotRemovable(f"{self._desc(node)} on an unflattened tensor")
        if _has_masks(linear):
            raise _NotRemovable(f"{self._desc(node)} has a computed weight (masks or a reparametrization)")
        plan.in_remove[node.target] |= chans
        if const is not None:
            cols = sorted(chans)
            fold = linear.weight.detach()[:, cols] @ const[[f // flat for f in cols]]
            plan.bias_add[node.target] = plan.bias_add.get(node.target, 0) + fold

    def _into_conv(self, node, conv, chans, plan, const, flat) -> None:
        if flat is not None:
            raise _NotRemovable(f"{self._desc(node)} after flattening")
        if _has_masks(conv):
            raise _NotRemovable(f"{self._desc(node)} has a computed weight (masks or a reparametrization)")
        kind = _conv_kind(conv)
        if kind != "plain":
            raise _NotRemovable(f"its input channels cannot be cut from {self._desc(node)} "
                                f"({'weight standardisation depends on them' if kind == 'std' else 'unsupported type'})")
        if conv.groups == 1:
            if const is not None:
                shape = self._shape(node.args[0])
                pads = conv_padding(conv, shape[-2:]) if shape is not None else None
                if pads is None or pads.is_padded:
                    raise _NotRemovable(f"a constant channel feeds the padded {self._desc(node)} "
                                        "(its border would change)")
                cols = sorted(chans)
                fold = conv.weight.detach()[:, cols].sum(dim=(2, 3)) @ const[cols]
                plan.bias_add[node.target] = plan.bias_add.get(node.target, 0) + fold
            plan.in_remove[node.target] |= chans
            return
        if conv.groups == conv.in_channels:  # depthwise (with channel multiplier m)
            if const is not None:
                raise _NotRemovable(f"a constant channel feeds the depthwise {self._desc(node)}")
            m = conv.out_channels // conv.in_channels
            outs = {c * m + j for c in chans for j in range(m)}
            plan.in_remove[node.target] |= chans
            plan.out_remove[node.target] |= outs
            # in the masked model a zero input gives the bias (0 without) on every pixel, for any
            # padding mode; from here on the channels carry that constant
            const = conv.bias.detach().clone() if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)
            const[self.silenced.get(node.target, [])] = 0
            nxt_bn = self.pairs.get(node.target)
            return self._follow(node, outs, plan, const, nxt_bn, None)
        raise _NotRemovable(f"grouped conv {node.target!r} (groups={conv.groups}) consumes the channels")


def _slice_conv(conv: nn.Conv2d, out_rm: set[int], in_rm: set[int], bias_add) -> nn.Conv2d:
    keep_out = [i for i in range(conv.out_channels) if i not in out_rm]
    new = structural_copy(conv, share=False)
    w = conv.weight.detach()
    if conv.groups == 1:
        keep_in = [i for i in range(conv.in_channels) if i not in in_rm]
        w = w[:, keep_in]
        new.in_channels = len(keep_in)
    else:  # depthwise: its removed inputs are exactly the groups of the removed outputs
        new.in_channels = conv.in_channels - len(in_rm)
        new.groups = new.in_channels
    new.out_channels = len(keep_out)
    new.weight = nn.Parameter(w[keep_out].clone(), requires_grad=conv.weight.requires_grad)
    bias = None if conv.bias is None else conv.bias.detach()[keep_out].clone()
    if bias_add is not None:  # one value per output channel of the original conv
        bias_add = bias_add.to(w.dtype)[keep_out]
        bias = bias_add.clone() if bias is None else bias + bias_add
    new.bias = None if bias is None else nn.Parameter(bias)
    gain = getattr(conv, "gain", None)
    if isinstance(gain, nn.Parameter) and gain.shape[0] == conv.out_channels:
        new.gain = nn.Parameter(gain.detach()[keep_out].clone())
    return new


def _slice_bn(bn: _BN, rm: set[int]) -> _BN:
    keep = [i for i in range(bn.num_features) if i not in rm]
    new = structural_copy(bn, share=False)
    new.num_features = len(keep)
    for name in ("weight", "bias"):
        p = getattr(bn, name)
        if p is not None:
            setattr(new, name, nn.Parameter(p.detach()[keep].clone(), requires_grad=p.requires_grad))
    for name in ("running_mean", "running_var"):
        b = getattr(bn, name)
        if b is not None:
            setattr(new, name, b[keep].clone())
    return new


def _slice_linear(linear: nn.Linear, in_rm: set[int], bias_add) -> nn.Linear:
    keep = [i for i in range(linear.in_features) if i not in in_rm]
    new = structural_copy(linear, share=False)
    new.in_features = len(keep)
    new.weight = nn.Parameter(linear.weight.detach()[:, keep].clone(), requires_grad=linear.weight.requires_grad)
    if bias_add is not None:
        bias = bias_add.clone() if linear.bias is None else linear.bias.detach() + bias_add
        new.bias = nn.Parameter(bias)
    return new


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


class _LeafTracer(torch.fx.Tracer):
    """``torch.fx`` tracing that keeps whole the layers fx cannot trace through: timm's dynamic
    "same" padding (computed from the input size in Python), its BatchNormAct2d (an input-rank
    check), weight-standardised and mixed convs, and pan_repair's own padded convs."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        from ..layers.padding_switch import PaddedConv2d
        leaves = (Conv2dSame, Conv2dSameExport, *_STD_CONVS, MixedConv2d, BatchNormAct2d, PaddedConv2d)
        return isinstance(m, leaves) or super().is_leaf_module(m, qualname)


def _trace(model: nn.Module) -> torch.fx.GraphModule:
    tracer = _LeafTracer()
    graph = tracer.trace(model)
    return torch.fx.GraphModule(tracer.root, graph, type(model).__name__)


def remove_channels(model: nn.Module, selected: dict[str, list[int]], pairs: dict[str, str],
                    input_size: tuple[int, ...], mask_rest: bool = True) -> Removal:
    """Cut the ``selected`` output channels (conv layer -> channel indices) out of ``model``, in
    place, where the data flow allows (see the module docstring); ``pairs`` maps each conv to the
    BatchNorm it feeds (:func:`pan_repair.layers.conv_bn_pairs`). ``mask_rest``: the layers that
    cannot be cut will be masked (their channels count as silent in the constants folded into the
    consumers' biases), else left as they are. Nothing changes when the model cannot be traced;
    on a failed check the original modules are put back and the error raised."""
    modules = dict(model.named_modules())
    result = Removal({})
    with eval_mode(model):
        try:
            gm = _trace(model)
            param = next(iter(model.parameters()))
            with torch.no_grad():
                from torch.fx.passes.shape_prop import ShapeProp
                ShapeProp(gm).propagate(torch.zeros(1, *input_size, device=param.device, dtype=param.dtype))
        except Exception as err:  # noqa: BLE001 - any tracing failure means: cannot plan removal
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            result.not_removable = {layer: f"the model cannot be traced by torch.fx ({first[:120]})"
                                    for layer in selected}
            result.leftover = dict(selected)
            return result
        nodes = {n.target: n for n in gm.graph.nodes if n.op == "call_module"}

        def plan_all(silenced: dict[str, list[int]]) -> tuple[_Plan, dict[str, list[int]]]:
            """The merged plan of every removable layer, and the layers that are not."""
            tracer, plan, leftover = _Tracer(gm, modules, pairs, silenced), _Plan(), {}
            with torch.no_grad():
                for layer, chans in selected.items():
                    try:
                        if layer not in nodes:
                            raise _NotRemovable("the conv does not appear in the traced graph")
                        layer_plan = tracer.plan(layer, set(chans), nodes[layer])
                        if len(layer_plan.out_remove[layer]) >= modules[layer].out_channels:
                            raise _NotRemovable("all its channels are PANs")
                    except _NotRemovable as why:
                        result.not_removable[layer] = str(why)
                        leftover[layer] = chans
                        continue
                    plan.merge(layer_plan)
            return plan, leftover

        plan, leftover = plan_all(selected)
        if leftover and not mask_rest:  # the layers left as they are keep their channels' values
            plan, leftover = plan_all({k: v for k, v in selected.items() if k not in leftover})
        result.batchnorms = {layer: pairs[layer] for layer in selected if layer in pairs and layer not in leftover}
    # several layers may now need the same module cut more than any single plan allowed
    for name, rm in list(plan.out_remove.items()) + list(plan.bn_remove.items()):
        size = getattr(modules[name], "out_channels", None) or modules[name].num_features
        if len(rm) >= size:
            raise ValueError(f"removal would leave {name!r} without channels")
    # build everything first ...
    new: dict[str, nn.Module] = {}
    for name in set(plan.out_remove) | set(plan.in_remove):
        module = modules[name]
        if isinstance(module, nn.Linear):
            new[name] = _slice_linear(module, plan.in_remove[name], plan.bias_add.get(name))
        else:
            new[name] = _slice_conv(module, plan.out_remove.get(name, set()), plan.in_remove.get(name, set()),
                                    plan.bias_add.get(name))
    for name, rm in plan.bn_remove.items():
        new[name] = _slice_bn(modules[name], rm)
    # ... then swap, check one forward, and put everything back on failure
    result.swapped = {name: modules[name] for name in new}
    for name, module in new.items():
        set_module(model, name, module)
    try:
        blank_forward(model, input_size)
    except Exception:
        result.undo(model)
        raise
    result.removed = {name: sorted(rm) for name, rm in plan.out_remove.items()}
    # a layer left to masking may have lost output channels to a removal propagated into it (a
    # depthwise conv after a removed layer): its PAN channels get their new indices, and those
    # already removed need no mask
    for layer, chans in leftover.items():
        cut = plan.out_remove.get(layer, set())
        kept = [c - sum(r < c for r in cut) for c in chans if c not in cut]
        if kept:
            result.leftover[layer] = kept
    return result
