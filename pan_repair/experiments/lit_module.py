"""A LightningModule (``lightning.pytorch``) for image classification that logs border bias
next to accuracy: used by the recipes and the demo, and usable with any ``nn.Module``."""
from __future__ import annotations

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..metrics import BorderAccuracyGap, PaddingReliance
from ..models.small_cnn import SmallCNN
from ..layers.module_state import structural_copy
from ..layers.padding_switch import convert_padding

__all__ = ["BiasAwareClassifier", "border_distance"]


def border_distance(position: torch.Tensor, max_offset: int) -> torch.Tensor:
    """Distance (px) from a digit's box to the nearest canvas edge: ``min(y, x, L - y, L - x)``
    for top-left ``position = [y, x]`` and ``L = canvas - digit side``."""
    y, x = position[..., 0], position[..., 1]
    return torch.stack([y, x, max_offset - y, max_offset - x], dim=-1).amin(dim=-1)


class BiasAwareClassifier(L.LightningModule):
    """Classifier whose validation logs accuracy, the border accuracy gap and padding reliance.

    Batches are ``(image, label, position)`` as from :class:`pan_repair.data.digits.DigitsCanvas`
    (``position`` = top-left ``[y, x]``; ``max_offset`` = canvas - digit side) or ``(image, label)``
    (then only accuracy and padding reliance are logged).

    Logged (validation, per epoch): ``val/loss``, ``val/acc``, ``val/border_gap`` (accuracy in the
    centre minus at the border, > 0 = worse at the border), ``val/padding_flip`` and
    ``val/padding_shift`` (prediction flips and total-variation shift when every padding is
    switched to ``reliance_mode``).
    """

    def __init__(self, model: nn.Module | None = None, num_classes: int = 10, lr: float = 3e-3,
                 weight_decay: float = 1e-4, max_offset: int = 16, reliance_mode: str = "replicate") -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model if model is not None else SmallCNN(1, num_classes)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_gap = BorderAccuracyGap(max_distance=max(1, max_offset // 2))
        self.val_reliance = PaddingReliance()
        self._switched: nn.Module | None = None
        #: accuracy per distance to the border (px) from the last validation epoch (NaN: no sample)
        self.last_border_curve: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._switched = structural_copy(self.model, share=True)  # the live weights; also mid-fit
        convert_padding(self._switched, self.hparams.reliance_mode)

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y))
        self.val_acc.update(logits, y)
        self.val_reliance.update(logits, self._switched(x))
        if len(batch) > 2:
            self.val_gap.update(logits, y, border_distance(batch[2], self.hparams.max_offset))

    def on_validation_epoch_end(self) -> None:
        self.log("val/acc", self.val_acc.compute(), prog_bar=True)
        reliance = self.val_reliance.compute()
        self.log("val/padding_flip", reliance["flip_rate"])
        self.log("val/padding_shift", reliance["output_shift"])
        if int(self.val_gap.total.sum()) > 0:
            self.last_border_curve = self.val_gap.curve().tolist()
            gap = self.val_gap.compute()
            if torch.isfinite(gap):
                self.log("val/border_gap", gap)
        for metric in (self.val_acc, self.val_reliance, self.val_gap):
            metric.reset()
        self._switched = None

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.trainer is None or not self.trainer.max_epochs or self.trainer.max_epochs < 0:
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)
        return {"optimizer": opt, "lr_scheduler": sched}
