"""pan_repair: find and repair Padding Aware Neurons (PANs) in convolutional networks.

Example:
    >>> import timm
    >>> from pan_repair import find_pans
    >>> report = find_pans(timm.create_model("resnet10t"), input_size=(3, 192, 192), n_patterns=2)
    >>> report.total_filters
    2936
    >>> from pan_repair import converted_copy
    >>> fixed = converted_copy(timm.create_model("resnet10t"), "replicate")
    >>> find_pans(fixed, input_size=(3, 192, 192), n_patterns=2).of_kind("border")
    []
"""
from .callbacks import (PaddingConsistencyRegularizer, PaddingSwitch, PANMonitor, PanHistory, PANPruning,
                        PANRegularizer, read_monitor_json)
from .data import DigitsCanvas, DigitsCanvasDataModule, LitDigitsCanvasDataModule
from .detect import (DEFAULT_BORDER_THRESHOLD, DEFAULT_DATA_BORDER_THRESHOLD, DEFAULT_DATA_POSITION_THRESHOLD,
                     DEFAULT_POSITION_THRESHOLD, KINDS, SIDES, LayerInfo, Pan, PanReport, find_pans)
from .layers.padding_switch import ConversionSummary, convert_padding, converted_copy
from .metrics import BorderAccuracyGap, BorderActivationRatio, PaddingReliance, PANFraction
from .models import SmallCNN, load_efficientnet_lite0, sample_images
from .repair import (PaddingConsistency, PANPenalty, PruneSummary, detector_penalty, padding_consistency, pan_penalty,
                     prune_pans, remove_pan_masks)
from .runs import read_offline_run

__version__ = "0.1.0"

__all__ = [
    "find_pans",
    "Pan",
    "PanReport",
    "LayerInfo",
    "SIDES",
    "KINDS",
    "DEFAULT_BORDER_THRESHOLD",
    "DEFAULT_DATA_BORDER_THRESHOLD",
    "DEFAULT_DATA_POSITION_THRESHOLD",
    "DEFAULT_POSITION_THRESHOLD",
    "PANMonitor",
    "PaddingSwitch",
    "PANPruning",
    "PANRegularizer",
    "PaddingConsistencyRegularizer",
    "PanHistory",
    "read_monitor_json",
    "prune_pans",
    "remove_pan_masks",
    "PruneSummary",
    "pan_penalty",
    "detector_penalty",
    "PANPenalty",
    "padding_consistency",
    "PaddingConsistency",
    "convert_padding",
    "converted_copy",
    "ConversionSummary",
    "BorderAccuracyGap",
    "BorderActivationRatio",
    "PaddingReliance",
    "PANFraction",
    "DigitsCanvas",
    "DigitsCanvasDataModule",
    "LitDigitsCanvasDataModule",
    "SmallCNN",
    "load_efficientnet_lite0",
    "sample_images",
    "read_offline_run",
]
