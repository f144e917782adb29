"""``PANPruning``: detect PANs and prune them during training, on a schedule."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from torch import nn

from ..repair.pruning import clean_state_dict, prune_pans, remove_pan_masks
from ..detect.report import KINDS, PanReport
from ._target import EpochSchedule, ModelTarget

__all__ = ["PANPruningBase"]


class PANPruningBase(ModelTarget):
    """Detects PANs with :func:`~pan_repair.find_pans` and silences them with
    :func:`~pan_repair.prune_pans` (mask mode) while training, like Lightning's ``ModelPruning``.

    Use the concrete class of your namespace: ``pan_repair.callbacks.PANPruning``
    (``import pytorch_lightning``) or ``pan_repair.lightning.PANPruning`` (``lightning.pytorch``).

    **Schedule.** At the first training batch of every epoch ``e`` with ``apply_pruning(e)``
    true, the model is scanned and the PANs found are masked (weight, bias and the BatchNorm
    channel they feed: the channel outputs a true zero). Masked channels stay masked; the next
    scheduled scan re-detects and catches PANs that emerged since (masks accumulate).
    ``apply_pruning``: ``True`` (default: every epoch, so epoch 0 prunes before the first step
    and fine-tuning follows), an int ``n`` (epochs 0, n, 2n, ...), a list of epochs, or a
    callable ``epoch -> bool``.

    **Checkpoints.** As ``ModelPruning`` does, ``on_save_checkpoint`` replaces the checkpoint's
    ``state_dict`` with clean weights (``weight``, masks applied, no ``_orig``/``_mask``): it
    loads into the unmodified architecture. The pruned channels (per round, as reports) are the
    callback's state; on resume they are masked again at ``on_fit_start``, after Lightning has
    loaded the weights. ``make_pruning_permanent`` (default True) bakes the masks in at the end of
    training (:func:`~pan_repair.remove_pan_masks`).

    **DDP.** Rank zero detects and broadcasts its report: every rank applies identical masks.

    **Logged** (``pl_module.log``, at each pruning step): ``<prefix>/pruned`` (channels masked
    this round) and ``<prefix>/total``.

    **A scan that fails** mid-run (e.g. a layer type the detector does not know, out of memory)
    never stops training: that round prunes nothing, is warned once, recorded in ``rounds`` with
    ``failed: True`` and its ``reason``, and logged as ``<prefix>/scan_failed = 1``; the next
    scheduled round scans again.

    Args:
        apply_pruning: when to detect and prune (see above).
        kinds: PAN kinds to prune (``"border"``, ``"position"``).
        border_threshold, position_threshold, n_patterns: passed to :func:`~pan_repair.find_pans`.
        input_size: ``(C, H, W)`` of the probe images; None to infer (example_input_array,
            datamodule ``input_size``, first training batch).
        model_attr: submodule of the LightningModule to prune (e.g. ``"model"``).
        make_pruning_permanent: make the masks permanent at ``on_train_end``.
        prefix: namespace of the logged keys.

    Example::

        from lightning.pytorch import Trainer
        from pan_repair.lightning import PANPruning

        trainer = Trainer(max_epochs=3, callbacks=[PANPruning(apply_pruning=[0, 2], model_attr="model")])
        trainer.fit(model, datamodule)  # epoch 0: prune, fine-tune; epoch 2: prune new PANs
    """

    def __init__(
        self,
        apply_pruning: bool | int | Sequence[int] | Callable[[int], bool] = True,
        *,
        kinds: Iterable[str] = KINDS,
        border_threshold: float | None = None,
        position_threshold: float | None = None,
        n_patterns: int = 8,
        input_size: Sequence[int] | None = None,
        model_attr: str | None = None,
        make_pruning_permanent: bool = True,
        prefix: str = "pan_pruning",
    ) -> None:
        self._init_target(input_size, model_attr)
        super().__init__()
        self.kinds = tuple(kinds)
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"PANPruning: kinds must be a non-empty subset of {KINDS}, got {self.kinds}")
        if not (border_threshold is None or border_threshold > 0) or \
                not (position_threshold is None or 0 < position_threshold <= 1):
            raise ValueError(f"PANPruning: thresholds must be border > 0 and position in (0, 1], "
                             f"got {border_threshold}, {position_threshold}")
        if n_patterns < 2:
            raise ValueError(f"PANPruning: n_patterns must be >= 2, got {n_patterns}")
        self._apply = EpochSchedule(apply_pruning, "PANPruning")
        self.border_threshold, self.position_threshold = border_threshold, position_threshold
        self.n_patterns = int(n_patterns)
        self.make_pruning_permanent = bool(make_pruning_permanent)
        self.prefix = prefix
        #: one record per pruning round: epoch, global step, and the report of the PANs masked; or,
        #: for a round whose scan failed, epoch, step, ``failed: True`` and the ``reason``
        self.rounds: list[dict[str, Any]] = []
        self._last_epoch = -1
        self._restored = False

    _skip_message = "a PAN scan failed; this round prunes nothing"

    @property
    def state_key(self) -> str:
        return self._generate_state_key(model_attr=self.model_attr, prefix=self.prefix)  # settings may change on resume

    @property
    def pruned(self) -> dict[str, list[int]]:
        """Conv layer -> channels masked so far (all rounds)."""
        out: dict[str, set[int]] = {}
        for record in self.pruning_rounds():
            for pan in record["report"]["pans"]:
                out.setdefault(pan["layer"], set()).add(pan["channel"])
        return {layer: sorted(chans) for layer, chans in out.items()}

    def pruning_rounds(self) -> list[dict[str, Any]]:
        """The rounds that pruned (``rounds`` without those whose scan failed)."""
        return [record for record in self.rounds if not record.get("failed")]

    # ----------------------------------------------------------------------------- hooks
    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        if stage == "fit":
            self._setup_target(trainer, pl_module)

    def on_fit_start(self, trainer: Any, pl_module: nn.Module) -> None:
        if self._restored:  # weights were loaded clean; mask the pruned channels again
            module = self._module(pl_module)
            for record in self.pruning_rounds():
                prune_pans(module, PanReport.from_dict(record["report"]), kinds=self.kinds)
            self._restored = False

    def on_train_batch_start(self, trainer: Any, pl_module: nn.Module, batch: Any, batch_idx: int) -> None:
        epoch = trainer.current_epoch
        if epoch == self._last_epoch or not self._apply(epoch):
            return
        self._last_epoch = epoch
        self._ensure_input_size(pl_module, batch)
        self._collect_calibration(batch)
        module = self._module(pl_module)
        report, failure = self._detect(trainer, module, border_threshold=self.border_threshold,
                                       position_threshold=self.position_threshold, n_patterns=self.n_patterns)
        if failure is not None:
            self.rounds.append({"epoch": epoch, "step": trainer.global_step, "failed": True, "reason": failure})
            pl_module.log(f"{self.prefix}/scan_failed", 1.0, on_step=True, on_epoch=False)
            return
        chosen = [p for p in report.pans if p.kind in self.kinds]
        prune_pans(module, report, kinds=self.kinds)
        kept = dataclasses.replace(report, pans=chosen, scores={})
        self.rounds.append({"epoch": epoch, "step": trainer.global_step, "report": kept.to_dict()})
        pl_module.log(f"{self.prefix}/pruned", float(len(chosen)), on_step=True, on_epoch=False)
        pl_module.log(f"{self.prefix}/total", float(sum(map(len, self.pruned.values()))), on_step=True,
                      on_epoch=False)

    def on_train_end(self, trainer: Any, pl_module: nn.Module) -> None:
        if self.make_pruning_permanent:
            remove_pan_masks(self._module(pl_module))

    def on_save_checkpoint(self, trainer: Any, pl_module: nn.Module, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = clean_state_dict(pl_module)

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "last_epoch": self._last_epoch, **self._target_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rounds = list(state_dict["rounds"])
        self._last_epoch = state_dict["last_epoch"]
        self._load_target_state(state_dict)
        self._restored = bool(self.pruning_rounds())
