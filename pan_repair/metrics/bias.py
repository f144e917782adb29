"""Stateful border-bias metrics: thin :class:`torchmetrics.Metric` shells over :mod:`.functional`.

Every state is an additive count or sum reduced with ``dist_reduce_fx="sum"``, so the value
after DDP synchronisation (or :meth:`~torchmetrics.Metric.merge_state`) equals the value on
all the data at once.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torchmetrics import Metric

from pan_repair.metrics.functional import (
    Reduction,
    _border_accuracy_curve_compute,
    _border_accuracy_gap_compute,
    _border_accuracy_update,
    _border_activation_ratio_compute,
    _border_activation_ratio_update,
    _check_band,
    _check_reduction,
    _near_far,
    _padding_reliance_compute,
    _padding_reliance_update,
    _pan_fraction_update,
)

__all__ = ["BorderActivationRatio", "BorderAccuracyGap", "PaddingReliance", "PANFraction"]


def _synced(metric: Metric, value: Callable[[], Tensor]) -> Tensor:
    """Evaluate ``value()`` on the states summed over all processes, as ``compute`` does."""
    with metric.sync_context(dist_sync_fn=metric.dist_sync_fn, should_sync=metric.sync_on_compute):
        return value().clone()


class BorderActivationRatio(Metric):
    r"""Per-channel ratio of mean |activation| on the border band to mean |activation| inside.

    .. math:: r_c = \frac{\sum_{\text{band}} |a_c| / n_\text{band}}{\sum_{\text{interior}} |a_c| / n_\text{interior}}

    accumulated over every (N, C, H, W) map passed to ``update`` (all maps of one layer: same C).
    Range [0, inf); 1 is neutral (no border preference). ``higher_is_better = False`` because
    PANs push it above 1; a value well below 1 (silenced at the border) is border bias too.
    ``NaN`` for channels silent everywhere, ``inf`` for channels silent only inside.

    Args:
        band: border band width in pixels (maps need H, W > 2 * band).
        reduction: ``"mean"`` -> scalar mean over channels (NaN channels skipped); ``"none"`` -> (C,).

    States ``border_sum``/``interior_sum`` take the channel count on the first ``update``;
    under DDP every process must update at least once before ``compute``.

    Example:
        >>> metric = BorderActivationRatio()
        >>> a = torch.ones(1, 1, 3, 3); a[..., 1, 1] = 0.5
        >>> metric(a)
        tensor(2.)
    """

    is_differentiable = True
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0

    border_sum: Tensor
    interior_sum: Tensor
    n_border: Tensor
    n_interior: Tensor

    def __init__(self, band: int = 1, reduction: Reduction = "mean", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.band = _check_band(band)
        self.reduction = _check_reduction(reduction)
        self.add_state("border_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("interior_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("n_border", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("n_interior", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, a: Tensor) -> None:
        """Add one feature map batch ``a`` of shape (N, C, H, W)."""
        border, interior, n_border, n_interior = _border_activation_ratio_update(a, self.band)
        if self.border_sum.ndim and self.border_sum.shape != border.shape:
            raise ValueError(f"got {border.numel()} channels after {self.border_sum.numel()}: use one metric per layer")
        self.border_sum = self.border_sum + border
        self.interior_sum = self.interior_sum + interior
        self.n_border += n_border
        self.n_interior += n_interior

    def compute(self) -> Tensor:
        """Ratio per channel (``reduction="none"``) or its mean over channels."""
        return _border_activation_ratio_compute(
            self.border_sum, self.interior_sum, self.n_border, self.n_interior, self.reduction
        )


class BorderAccuracyGap(Metric):
    r"""Accuracy in the centre minus accuracy at the border, from per-distance counts.

    .. math:: \text{gap} = \text{acc}(d \ge \text{far}) - \text{acc}(d \le \text{near})

    where ``d`` is each sample's distance (px) to the nearest image border and each term is the
    accuracy over all samples in that range. Range [-1, 1]; 0 is neutral, > 0 = worse at the
    border, so ``higher_is_better = False`` (closer to 0 is better). ``NaN`` while a range is empty.
    :meth:`curve` gives the accuracy per distance bin.

    Args:
        max_distance: last distance bin D (px); distances >= D are counted in it.
        near: largest distance counted as "at the border" (default 0).
        far: smallest distance counted as "in the centre" (default ``max_distance``).

    States: ``correct[d]`` and ``total[d]``, d = 0..D, sample counts.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0

    correct: Tensor
    total: Tensor

    def __init__(self, max_distance: int, near: int = 0, far: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.near, self.far = _near_far(max_distance, near, far)
        self.max_distance = max_distance
        self.add_state("correct", default=torch.zeros(max_distance + 1, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(max_distance + 1, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, distance: Tensor) -> None:
        """Add a batch: preds (N,) labels or (N, K) logits, target (N,), distance (N,) int px."""
        correct, total = _border_accuracy_update(preds, target, distance, self.max_distance)
        self.correct += correct
        self.total += total

    def compute(self) -> Tensor:
        """The gap (scalar)."""
        return _border_accuracy_gap_compute(self.correct, self.total, self.near, self.far)

    def curve(self) -> Tensor:
        """Accuracy per distance 0..max_distance, shape (max_distance + 1,); ``NaN`` for empty bins."""
        return _synced(self, lambda: _border_accuracy_curve_compute(self.correct, self.total))


class PaddingReliance(Metric):
    r"""How much predictions change when the model's padding is switched to a content-preserving mode.

    ``update(logits_a, logits_b)``: (N, K) logits of the model with its own padding (a) and with
    content-preserving padding (b), on the same inputs.

    .. math:: \text{flip\_rate} = \frac1N \sum_n [\arg\max a_n \ne \arg\max b_n], \qquad
              \text{output\_shift} = \frac1N \sum_n \tfrac12 \lVert \operatorname{softmax}(a_n)
              - \operatorname{softmax}(b_n) \rVert_1

    Both in [0, 1], lower is better. ``compute`` returns ``{"flip_rate", "output_shift"}``;
    in Lightning log it with ``self.log_dict(metric.compute())``.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    flips: Tensor
    tv_sum: Tensor
    total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("flips", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("tv_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, logits_a: Tensor, logits_b: Tensor) -> None:
        """Add a batch of paired logits, each (N, K)."""
        flips, tv_sum, n = _padding_reliance_update(logits_a, logits_b)
        self.flips += flips
        self.tv_sum += tv_sum
        self.total += n

    def compute(self) -> dict[str, Tensor]:
        """``{"flip_rate": scalar, "output_shift": scalar}``."""
        return _padding_reliance_compute(self.flips, self.tv_sum, self.total)


class PANFraction(Metric):
    """Fraction of filters found to be Padding Aware Neurons: ``sum(count) / sum(total)``.

    ``update(count, total)`` adds the PAN count and the filter count of one layer or model
    (from the detector). Range [0, 1], lower is better; ``NaN`` when no filter was counted.
    :meth:`count` gives the accumulated PAN count.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    num_pans: Tensor
    num_filters: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("num_pans", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("num_filters", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, count: int | Tensor, total: int | Tensor) -> None:
        """Add ``count`` PANs out of ``total`` filters (integers, 0 <= count <= total)."""
        count, total = _pan_fraction_update(count, total)
        self.num_pans += count.to(self.device)
        self.num_filters += total.to(self.device)

    def compute(self) -> Tensor:
        """PAN fraction (scalar)."""
        return self.num_pans / self.num_filters

    def count(self) -> Tensor:
        """Accumulated PAN count (integer scalar)."""
        return _synced(self, lambda: self.num_pans)
