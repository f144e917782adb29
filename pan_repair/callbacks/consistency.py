"""``PaddingConsistencyRegularizer``: add the padding-consistency penalty to the training loss."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..repair.consistency import PaddingConsistency
from ..layers.padding_switch import MODES
from ._target import images_in
from .regularizer import PANRegularizerBase

__all__ = ["PaddingConsistencyRegularizerBase"]


class PaddingConsistencyRegularizerBase(PANRegularizerBase):
    """Adds ``ramp * weight * C`` to every training loss, ``C`` the disagreement of the model with
    its own ``mode``-padded twin (same weights) on the training batch's images
    (:func:`~pan_repair.repair.consistency.padding_consistency`).

    Use the concrete class of your namespace: ``pan_repair.callbacks.PaddingConsistencyRegularizer``
    (``import pytorch_lightning``) or ``pan_repair.lightning.PaddingConsistencyRegularizer``
    (``lightning.pytorch``).

    The images are the first 4-D floating tensor of the batch; the callback runs the model on them
    once more (it cannot see ``training_step``'s logits) and the twin once: about 3 forward passes
    per step instead of 1 (computing ``PaddingConsistency`` in ``training_step`` with its logits
    saves one). Adding to the loss, warm-up, logging (``<prefix>/penalty``) and the automatic
    optimisation requirement and the containment of a failing step are those of ``PANRegularizer``.

    Args:
        weight: weight of the penalty (default 0.5, measured: :mod:`pan_repair.repair.consistency`).
        mode: the twin's padding (default ``"circular"``; ``"full"``: a full-convolution twin, for
            models with a global pooling head, see :mod:`pan_repair.repair.consistency`).
        every: compute the penalty on every k-th step only, multiplied by k (the other steps
            skip both extra passes).
        warmup_steps: optimizer steps of the linear warm-up (0: none).
        model_attr: submodule of the LightningModule to regularise (e.g. ``"model"``); it must
            return one tensor of logits.
        prefix: namespace of the logged key.

    Example::

        from lightning.pytorch import Trainer
        from pan_repair.lightning import PaddingConsistencyRegularizer

        trainer = Trainer(max_epochs=20, callbacks=[PaddingConsistencyRegularizer(model_attr="model")])
    """

    def __init__(self, weight: float = 0.5, *, mode: str = "circular", every: int = 1, warmup_steps: int = 0,
                 model_attr: str | None = None, prefix: str = "padding_consistency") -> None:
        self._init_target(None, model_attr)
        super(PANRegularizerBase, self).__init__()  # the Callback's, not PANRegularizer's
        if mode not in MODES:
            raise ValueError(f"PaddingConsistencyRegularizer: unknown mode {mode!r}; "
                             f"expected one of {', '.join(MODES)}")
        if not weight >= 0:
            raise ValueError(f"PaddingConsistencyRegularizer: weight must be >= 0, got {weight}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"PaddingConsistencyRegularizer: warmup_steps must be an integer >= 0, "
                             f"got {warmup_steps!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"PaddingConsistencyRegularizer: every must be an integer >= 1, got {every!r}")
        self.weight, self.warmup_steps, self.prefix, self.mode = float(weight), warmup_steps, prefix, mode
        self.consistency = PaddingConsistency(self.weight, mode, every)
        self.skipped: dict[str, Any] = {"steps": 0, "reason": None}
        self._images: torch.Tensor | None = None

    def on_train_batch_start(self, trainer: Any, pl_module: nn.Module, batch: Any, batch_idx: int) -> None:
        self._images = images_in(batch)
        if self._images is None:
            raise self._error("the training batch holds no 4-D floating tensor of images")

    def on_train_end(self, trainer: Any, pl_module: nn.Module) -> None:
        self._images = None
        self.consistency.reset()

    def _term(self, pl_module: nn.Module) -> torch.Tensor | None:
        if self._images is None:
            return None
        computes = self.consistency.computes_next()
        term = self.consistency(self._module(pl_module), self._images)
        return term if computes else None

    def state_dict(self) -> dict[str, Any]:
        return {"consistency": self.consistency.state_dict(), "skipped": dict(self.skipped)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "consistency" in state_dict:
            self.consistency.load_state_dict(state_dict["consistency"])
        self.skipped = dict(state_dict.get("skipped", self.skipped))
