"""Padding consistency: a penalty that makes a model agree with its own circular-padded twin.

A circular-padded CNN with global pooling cannot read absolute position (its padding has no
border), so it cannot take a placement shortcut; but circular padding wraps content across
edges. :func:`padding_consistency` keeps the model's own padding and adds, on the training
batch ``x``,

``C = mean_i || log_softmax(f(x_i)) - log_softmax(f_twin(x_i)) ||^2``

where ``f_twin`` is the same network, *the same parameters*, with every padding switched to
``mode`` (default ``"circular"``; :func:`pan_repair.convert_padding`). Gradients flow through
both branches. With ``mode="full"`` the twin is a full convolution (F-Conv: zeros ``d(k - 1)`` a
side, every input pixel seen by every tap) that, unlike the circular twin, does not wrap content
across edges; its maps are larger, so the model must reduce them globally (global pooling head):
outputs of another shape are refused, as are layers needing a fixed size (the twin is built by
:func:`~pan_repair.convert_padding` at the batch's size). ``C = 0`` for a model whose padding
already is ``mode``. The twin's BatchNorm uses the batch's statistics in train mode like the
model, but its running statistics are never updated (the twin runs on copies of the buffers).

**Effect, measured** (``benchmarks/padding_consistency.py``, 40 seeds; placement shortcut,
digits 8 top / 9 bottom, 24x24, zero-padded SmallCNN(depth 4); the baseline's swapped-placement
accuracy 27.4%): fine-tuning the biased model on the same biased data for the original budget
(20 epochs, Adam 3e-3) with ``loss = CE + weight * C`` brings swapped-placement accuracy to 87.0%
at weight 0.5 (training placement 92.4%); with the weight warmed up over the first quarter of the
steps (``warmup=35``) to 89.6%; with that and the ink-probe placement penalty
(:class:`pan_repair.repair.regularizer.PANPenalty`, ``probes="placement", style="ink"``) to 91.4%
(91.8% on the 20 seeds held out while choosing these settings); re-run with the code of 2026-12-02
(same seeds; single seeds differ by floating point): 90.0% warmed up, 90.2% with the penalty;
circular padding itself: 92.1%.
Fine-tuning without it: 15.2%. Weights 1 and 2 (3 seeds) gave 89.4% and 86.2%, hence the default
0.5. Cost: one more forward and backward of the batch, 2.2-2.4x the plain step; 1.6x with
``every=2``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..layers.module_state import structural_copy
from ..layers.padding_switch import MODES, convert_padding

__all__ = ["padding_consistency", "PaddingConsistency"]


def _twin(model: nn.Module, mode: str, input_size: tuple[int, ...]) -> nn.Module:
    """``model`` with its padding switched to ``mode``, sharing its tensors (no memory, works
    mid-training: :func:`~pan_repair.layers.module_state.structural_copy`); ``input_size`` (C, H, W) for
    the trial forward of ``"full"``."""
    twin = structural_copy(model, share=True)
    convert_padding(twin, mode, input_size=input_size)
    return twin


def _structure(model: nn.Module) -> tuple:
    """What a twin must match: the module types and the parameter and buffer names (they change
    when layers are pruned, removed or switched)."""
    modules = tuple((name, type(m)) for name, m in model.named_modules())
    return modules, tuple(n for n, _ in model.named_parameters()), tuple(n for n, _ in model.named_buffers())


def padding_consistency(model: nn.Module, x: torch.Tensor, logits: torch.Tensor | None = None,
                        mode: str = "circular", twin: nn.Module | None = None) -> torch.Tensor:
    """The consistency penalty ``C`` (see the module docstring) on the batch ``x``.

    Args:
        model: the model being trained (its parameters receive the gradient of both branches).
        x: the input batch.
        logits: ``model(x)`` if already computed (the training step's), else computed here
            (on copies of the buffers: no running statistic changes).
        mode: the twin's padding (one of :data:`pan_repair.layers.padding_switch.MODES`).
        twin: a prebuilt twin (``PaddingConsistency`` caches one); default: built here.

    Returns:
        A float scalar, differentiable with respect to ``model``'s parameters.

    Example:
        >>> import torch
        >>> from pan_repair import SmallCNN
        >>> from pan_repair.repair.consistency import padding_consistency
        >>> model = SmallCNN(num_classes=2, depth=3, width=8)
        >>> x = torch.randn(4, 1, 24, 24)
        >>> padding_consistency(model, x).item() > 0
        True
        >>> padding_consistency(SmallCNN(num_classes=2, depth=3, width=8, padding_mode="circular"), x).item()
        0.0
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    twin = _twin(model, mode, tuple(x.shape[1:])) if twin is None else twin
    twin.train(model.training)
    state = dict(model.named_parameters())
    state.update({name: b.clone() for name, b in model.named_buffers()})  # running stats untouched
    if logits is None:
        logits = functional_call(model, state, (x,))
    other = functional_call(twin, state, (x,))
    if not isinstance(logits, torch.Tensor) or not isinstance(other, torch.Tensor):
        raise TypeError("padding_consistency needs a model returning one tensor of logits")
    if logits.shape != other.shape:
        raise ValueError(f"padding_consistency: the {mode} twin's output has shape {tuple(other.shape)}, the "
                         f"model's {tuple(logits.shape)}: the output must not depend on the map size (global pooling)")
    diff = F.log_softmax(logits.float(), dim=1) - F.log_softmax(other.float(), dim=1)
    return diff.pow(2).sum(dim=1).mean()


class PaddingConsistency:
    """:func:`padding_consistency` with the twin built once (on the first call) and reused; it is
    rebuilt when the model's structure changes (layers pruned, removed or switched).

    ``mode``: the twin's padding, ``"circular"`` or ``"full"`` (a repair), or another of
    :data:`pan_repair.layers.padding_switch.MODES`. ``weight`` multiplies the penalty (default 0.5:
    measured best, see above). ``every=k`` computes it on every k-th call only, multiplied by
    ``k`` (the same average gradient); the other calls return a constant zero without running
    the twin. ``warmup=n`` ramps the weight linearly over the first ``n`` calls (call ``t``,
    from 1: ``weight * min(1, t / n)``).
    ``state_dict``/``load_state_dict`` keep the call count.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from pan_repair import SmallCNN
        >>> from pan_repair.repair.consistency import PaddingConsistency
        >>> model, consistency = SmallCNN(num_classes=2, depth=3, width=8), PaddingConsistency()
        >>> x, y = torch.randn(4, 1, 24, 24), torch.tensor([0, 1, 0, 1])
        >>> logits = model(x)
        >>> loss = F.cross_entropy(logits, y) + consistency(model, x, logits)
        >>> loss.backward()
    """

    def __init__(self, weight: float = 0.5, mode: str = "circular", every: int = 1, warmup: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
        self.weight, self.mode, self.every, self.warmup = float(weight), mode, every, warmup
        self.step = 0
        self._twin: nn.Module | None = None
        self._structure: tuple | None = None

    def reset(self) -> None:
        """Forget the twin (it is rebuilt on the next call that runs it)."""
        self._twin = self._structure = None

    def computes_next(self) -> bool:
        """Whether the next call runs the twin (else it returns a constant zero)."""
        return self.step % self.every == 0

    def __call__(self, model: nn.Module, x: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        computes, self.step = self.computes_next(), self.step + 1
        if not computes:
            return torch.zeros((), device=x.device)
        structure = _structure(model)
        if self._twin is None or structure != self._structure:
            self._twin, self._structure = _twin(model, self.mode, tuple(x.shape[1:])), structure
        ramp = min(1.0, self.step / self.warmup) if self.warmup else 1.0
        return ramp * self.every * self.weight * padding_consistency(model, x, logits, self.mode, self._twin)

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
