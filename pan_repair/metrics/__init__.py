"""Border-bias metrics: pure functions in :mod:`.functional`, torchmetrics classes in :mod:`.bias`."""
from pan_repair.metrics.bias import BorderAccuracyGap, BorderActivationRatio, PaddingReliance, PANFraction
from pan_repair.metrics.functional import (
    border_accuracy_curve,
    border_accuracy_gap,
    border_activation_ratio,
    border_mask,
    padding_reliance,
    pan_fraction,
)

__all__ = [
    "BorderAccuracyGap",
    "BorderActivationRatio",
    "PaddingReliance",
    "PANFraction",
    "border_accuracy_curve",
    "border_accuracy_gap",
    "border_activation_ratio",
    "border_mask",
    "padding_reliance",
    "pan_fraction",
]
