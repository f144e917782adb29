"""``PANRegularizer``: add the differentiable PAN penalty to the training loss."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..repair.regularizer import PANPenalty
from ._target import ModelTarget

__all__ = ["PANRegularizerBase"]


class PANRegularizerBase(ModelTarget):
    """Adds ``ramp * PANPenalty(model)`` (:class:`~pan_repair.repair.regularizer.PANPenalty`: the
    detector's border score on its data-free probes, made differentiable and hinged; its defaults,
    measured in ``benchmarks/pan_penalty.py``) to every training loss.

    Use the concrete class of your namespace: ``pan_repair.callbacks.PANRegularizer``
    (``import pytorch_lightning``) or ``pan_repair.lightning.PANRegularizer`` (``lightning.pytorch``).

    **How.** In ``on_before_backward`` the penalty is computed on the (unwrapped) model and added
    in place to the loss tensor Lightning is about to backpropagate: one backward pass, so DDP
    gradient synchronisation, gradient accumulation (the term is divided by
    ``accumulate_grad_batches``, as Lightning divides the loss) and AMP (multiplied by the grad
    scaler's scale) work unchanged. The loss in ``training_step``'s outputs therefore includes it.
    Automatic optimisation only.

    **Data.** The penalty is measured on the run's calibration sample (the first 16 images of the
    first training batch, taken on rank zero and broadcast, so every rank computes the same
    term; kept in checkpoints): ``PANPenalty(images=...)``, as ``find_pans(data=...)`` measures.

    **Warm-up.** ``ramp = min(1, (global_step + 1) / warmup_steps)`` (1 without warm-up): the
    penalty's full ``weight`` is reached after ``warmup_steps`` optimizer steps.

    **Logged** (``pl_module.log``, each step the penalty is computed): ``<prefix>/penalty``, the
    term added (before the accumulation and AMP scaling).

    **A penalty that fails** mid-run (e.g. out of memory) never stops training: that step adds
    nothing (on every DDP rank alike), is warned once, counted in ``skipped`` (with the latest
    reason; saved in checkpoints) and logged as ``<prefix>/skipped = 1``.

    Args:
        weight: overall weight of the penalty (:class:`PANPenalty`'s ``weight``).
        warmup_steps: optimizer steps of the linear warm-up (0: none).
        input_size: probe size ``(C, H, W)``; None to infer (example_input_array, datamodule
            ``input_size``, first training batch).
        model_attr: submodule of the LightningModule to regularise (e.g. ``"model"``).
        prefix: namespace of the logged key.
        **penalty_options: further :class:`PANPenalty` arguments (``every``, ``border_weight``,
            ``position_weight``, ``border_margin``, ``layers``, ``seed``, ``probes``, ...).

    Example::

        from lightning.pytorch import Trainer
        from pan_repair.lightning import PANRegularizer

        trainer = Trainer(max_epochs=6, callbacks=[PANRegularizer(model_attr="model")])
        trainer.fit(model, datamodule)
    """

    def __init__(
        self,
        weight: float = 0.03,
        *,
        warmup_steps: int = 0,
        input_size: Sequence[int] | None = None,
        model_attr: str | None = None,
        prefix: str = "pan_regularizer",
        **penalty_options: Any,
    ) -> None:
        self._init_target(input_size, model_attr)
        super().__init__()
        if not weight >= 0:
            raise ValueError(f"PANRegularizer: weight must be >= 0, got {weight}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"PANRegularizer: warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        self.weight, self.warmup_steps, self.prefix = float(weight), warmup_steps, prefix
        self.penalty_options = dict(penalty_options)
        self.penalty: PANPenalty | None = None
        #: steps whose penalty failed (skipped, see above) and the latest reason
        self.skipped: dict[str, Any] = {"steps": 0, "reason": None}
        self._penalty_state: dict[str, Any] | None = None
        self._sampled = False  # the calibration sample was taken (or restored) and handed to the penalty
        if self.input_size is not None:
            self._build()  # validates penalty_options now

    _skip_message = "the penalty failed; this step adds none"

    @property
    def state_key(self) -> str:
        return self._generate_state_key(model_attr=self.model_attr, prefix=self.prefix)  # weight may change on resume

    def _build(self) -> None:
        try:
            self.penalty = PANPenalty(self.input_size, weight=self.weight, **self.penalty_options)
        except TypeError as err:
            raise ValueError(f"PANRegularizer: {err}") from None
        if self._penalty_state is not None:
            self.penalty.load_state_dict(self._penalty_state)

    def ramp(self, global_step: int) -> float:
        """The warm-up factor at ``global_step``."""
        return 1.0 if self.warmup_steps == 0 else min(1.0, (global_step + 1) / self.warmup_steps)

    # ----------------------------------------------------------------------------- hooks
    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        if stage != "fit":
            return
        if not pl_module.automatic_optimization:
            raise self._error("needs automatic optimization (add the penalty to your loss yourself with "
                              "pan_repair.repair.regularizer.PANPenalty under manual optimization)")
        self._setup_target(trainer, pl_module)

    def on_train_batch_start(self, trainer: Any, pl_module: nn.Module, batch: Any, batch_idx: int) -> None:
        if self.penalty is None or not self._checked:
            self._ensure_input_size(pl_module, batch)
            if self.penalty is None:
                self._build()
        if not self._sampled and self.penalty.kind == "detector":  # once, at the fit's first batch
            self._sampled = True
            if self.calibration is None:
                self._collect_calibration(batch)
                # every rank measures on rank zero's images (all ranks reach the first batch together)
                self.calibration = trainer.strategy.broadcast(self.calibration, src=0)
            if self._data() is not None:
                self.penalty.set_images(self._data())

    def on_before_backward(self, trainer: Any, pl_module: nn.Module, loss: torch.Tensor) -> None:
        if self.weight == 0:
            return
        term, failure = self._contained(trainer, lambda: self._term(pl_module))
        if failure is not None:
            self.skipped = {"steps": self.skipped["steps"] + 1, "reason": failure}
            pl_module.log(f"{self.prefix}/skipped", 1.0, on_step=True, on_epoch=False)
            return
        if term is None:
            return
        term = self.ramp(trainer.global_step) * term
        pl_module.log(f"{self.prefix}/penalty", term.detach(), on_step=True, on_epoch=False)
        added = term / trainer.accumulate_grad_batches
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            added = scaler.scale(added)
        loss.add_(added.to(loss.dtype))

    def _term(self, pl_module: nn.Module) -> torch.Tensor | None:
        """This step's penalty (weighted, before the ramp), or None on the steps it skips."""
        if self.penalty is None:
            return None
        computes = self.penalty.step % self.penalty.every == 0
        term = self.penalty(self._module(pl_module))
        return term if computes else None

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"penalty": self.penalty.state_dict() if self.penalty is not None else self._penalty_state,
                "skipped": dict(self.skipped), **self._target_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._penalty_state = state_dict.get("penalty")
        self.skipped = dict(state_dict.get("skipped", self.skipped))
        self._load_target_state(state_dict)
        if self.penalty is not None and self._penalty_state is not None:
            self.penalty.load_state_dict(self._penalty_state)
