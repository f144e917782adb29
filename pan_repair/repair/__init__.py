"""Repairs of the PANs a scan found: pruning them (:mod:`.pruning`, with physical channel removal
in :mod:`.channel_removal`), the differentiable PAN penalty (:mod:`.regularizer`, with the
placement probes of :mod:`.placement_probes`) and the padding-consistency penalty
(:mod:`.consistency`)."""
from .consistency import PaddingConsistency, padding_consistency
from .pruning import PruneSummary, prune_pans, remove_pan_masks
from .regularizer import PANPenalty, detector_penalty, pan_penalty

__all__ = ["prune_pans", "remove_pan_masks", "PruneSummary", "pan_penalty", "detector_penalty", "PANPenalty",
           "padding_consistency", "PaddingConsistency"]
