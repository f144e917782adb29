"""pan_repair: find and repair Padding Aware Neurons (PANs) in convolutional networks.

Example:
    >>> import timm
    >>> from pan_repair import find_pans
    >>> report = find_pans(timm.create_model("resnet18"), input_size=(3, 160, 160), n_patterns=4)
    >>> report.total_filters
    4800
"""
from .detector import DEFAULT_BORDER_THRESHOLD, DEFAULT_POSITION_THRESHOLD, find_pans
from .report import KINDS, SIDES, LayerInfo, Pan, PanReport

__version__ = "0.1.0"

__all__ = [
    "find_pans",
    "Pan",
    "PanReport",
    "LayerInfo",
    "SIDES",
    "KINDS",
    "DEFAULT_BORDER_THRESHOLD",
    "DEFAULT_POSITION_THRESHOLD",
]
