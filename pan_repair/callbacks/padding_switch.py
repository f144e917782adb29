"""``PaddingSwitch``: switch a model's padding mode at fit start or at a given epoch."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..layers.padding_switch import MODES, ConversionSummary, convert_padding
from ._target import ModelTarget

__all__ = ["PaddingSwitchBase"]

log = logging.getLogger(__name__)


class PaddingSwitchBase(ModelTarget):
    """Switches the padding of the model's padded layers to ``mode`` with
    :func:`~pan_repair.convert_padding`: at fit start (``at_epoch=0``) or when training reaches
    epoch ``at_epoch`` (at its first batch), e.g. to fine-tune a zero-padded model with
    replicate or partial padding, or as full convolutions (``"full"``: F-Conv, feature maps grow by
    ``d(k - 1)`` per conv; a model with a layer that needs a fixed spatial size is refused before
    any step, naming the layer).

    Use the concrete class of your namespace: ``pan_repair.callbacks.PaddingSwitch``
    (``import pytorch_lightning``) or ``pan_repair.lightning.PaddingSwitch`` (``lightning.pytorch``).

    **Which layers.** ``layers=None``: every padded layer; a list of module names; or ``"pans"``:
    the padded layers holding PANs, detected (rank zero, broadcast) at the moment of the switch;
    if that scan fails mid-run, nothing is switched (warned once; training goes on).

    **Checkpoints.** Switched layers keep their parameters and state-dict keys, so checkpoints
    always load into the unmodified architecture. Which layers were switched is the callback's
    state: on resume they are switched again at ``on_fit_start``, before any step.

    Args:
        mode: ``"reflect"``, ``"replicate"``, ``"circular"``, ``"partial"`` or ``"full"``.
        layers: None, layer names, or ``"pans"`` (see above).
        at_epoch: the epoch at whose start the padding is switched (0: at fit start, before the
            sanity check; when ``layers="pans"`` or ``mode="full"`` and the input size must come
            from a batch, at the first batch).
        input_size: ``(C, H, W)``: the probe size for ``layers="pans"``, the trial forward's for
            ``mode="full"``; None to infer (kept in the callback's state).
        model_attr: submodule of the LightningModule to switch (e.g. ``"model"``).
        border_threshold, position_threshold: passed to :func:`~pan_repair.find_pans` for
            ``layers="pans"``.

    Example::

        from lightning.pytorch import Trainer
        from pan_repair.lightning import PaddingSwitch

        trainer = Trainer(max_epochs=3, callbacks=[PaddingSwitch("replicate", model_attr="model")])
        trainer.fit(model, datamodule)  # fine-tunes with replicate padding from the first step
    """

    def __init__(
        self,
        mode: str = "replicate",
        layers: Sequence[str] | str | None = None,
        *,
        at_epoch: int = 0,
        input_size: Sequence[int] | None = None,
        model_attr: str | None = None,
        border_threshold: float | None = None,
        position_threshold: float | None = None,
    ) -> None:
        self._init_target(input_size, model_attr)
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"PaddingSwitch: unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if isinstance(layers, str) and layers != "pans":
            raise ValueError(f"PaddingSwitch: layers must be None, a list of layer names or 'pans', got {layers!r}")
        if isinstance(at_epoch, bool) or not isinstance(at_epoch, int) or at_epoch < 0:
            raise ValueError(f"PaddingSwitch: at_epoch must be an integer >= 0, got {at_epoch!r}")
        self.mode, self.at_epoch = mode, at_epoch
        self.layers = layers if layers is None or isinstance(layers, str) else list(layers)
        self.border_threshold, self.position_threshold = border_threshold, position_threshold
        #: names of the layers switched (None until the switch)
        self.switched: list[str] | None = None
        self._restored = False

    _skip_message = "detecting the layers with PANs failed; no layer is switched"

    @property
    def state_key(self) -> str:
        # not the mode: a checkpoint switched to another mode must reach load_state_dict and be refused
        return self._generate_state_key(at_epoch=self.at_epoch, model_attr=self.model_attr)

    # ----------------------------------------------------------------------------- hooks
    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        if stage != "fit":
            return
        module = self._setup_target(trainer, pl_module)
        if isinstance(self.layers, list):  # names checked now, not at the switch
            missing = [n for n in self.layers if n not in dict(module.named_modules())]
            if missing:
                raise self._error(f"layers not in the model: {', '.join(map(repr, missing))}")

    def on_fit_start(self, trainer: Any, pl_module: nn.Module) -> None:
        if self._restored:
            self._convert(self._module(pl_module), self.switched)
            self._restored = False
        elif self.switched is None and self.at_epoch <= trainer.current_epoch and \
                (not self._needs_input_size or self.input_size is not None):
            self._switch(trainer, pl_module)

    @property
    def _needs_input_size(self) -> bool:
        return self.layers == "pans" or self.mode == "full"

    def on_train_batch_start(self, trainer: Any, pl_module: nn.Module, batch: Any, batch_idx: int) -> None:
        if self.switched is None and trainer.current_epoch >= self.at_epoch:
            if self._needs_input_size:
                self._ensure_input_size(pl_module, batch)
            if self.layers == "pans":
                self._collect_calibration(batch)
            self._switch(trainer, pl_module)

    def _switch(self, trainer: Any, pl_module: nn.Module) -> None:
        module = self._module(pl_module)
        layers = self.layers
        if layers == "pans":
            self._ensure_input_size(pl_module)
            layers, failure = self._detect(trainer, module, border_threshold=self.border_threshold,
                                           position_threshold=self.position_threshold)
            if failure is not None:
                self.switched = []
                return
        summary = self._convert(module, layers)
        self.switched = [change.name for change in summary.changed]
        if trainer.is_global_zero:
            log.info("PaddingSwitch: %d layers switched to %s padding at epoch %d", len(self.switched), self.mode,
                     trainer.current_epoch)

    def _convert(self, module: nn.Module, layers: list[str] | None) -> ConversionSummary:
        try:
            return convert_padding(module, self.mode, layers, input_size=self.input_size)
        except ValueError as err:  # e.g. "full" and a layer that needs a fixed spatial size
            raise self._error(str(err)) from None

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "switched": self.switched,
                "input_size": list(self.input_size) if self.input_size else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict["mode"] != self.mode:
            raise ValueError(f"PaddingSwitch: checkpoint state switched to {state_dict['mode']!r}, "
                             f"this callback to {self.mode!r}")
        self.switched = state_dict["switched"]
        if self.input_size is None and state_dict.get("input_size"):
            self.input_size = tuple(state_dict["input_size"])
        self._restored = self.switched is not None
