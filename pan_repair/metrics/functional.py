"""Border-bias metrics as pure functions on tensors (torchmetrics style).

Each metric ``m`` has ``_m_update`` (batch -> additive sufficient statistics, shared with
the stateful class in :mod:`pan_repair.metrics.bias`), ``_m_compute`` (statistics -> value)
and the public ``m`` = compute(update(batch)). Because the statistics are sums, adding
them over batches or processes gives exactly the value on all the data.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "border_mask",
    "border_activation_ratio",
    "border_accuracy_curve",
    "border_accuracy_gap",
    "padding_reliance",
    "pan_fraction",
]

Reduction = Literal["none", "mean"]


def _wide(x: Tensor) -> Tensor:
    """``x`` as float32 or wider, so sums over many half-precision/int elements neither overflow nor truncate."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


# ---------------------------------------------------------------- border activation ratio
def _check_band(band: int) -> int:
    if not isinstance(band, int) or band < 1:
        raise ValueError(f"band must be a positive int (pixels), got {band!r}")
    return band


def _check_reduction(reduction: str) -> Reduction:
    if reduction not in ("none", "mean"):
        raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")
    return reduction  # type: ignore[return-value]


def border_mask(height: int, width: int, band: int = 1, device: torch.device | None = None) -> Tensor:
    """(H, W) bool mask, True on the border band: pixels less than ``band`` px from an edge."""
    _check_band(band)
    if height <= 2 * band or width <= 2 * band:
        raise ValueError(f"feature map {height}x{width} has no interior for band={band}: need H and W > {2 * band}")
    mask = torch.ones(height, width, dtype=torch.bool, device=device)
    mask[band:height - band, band:width - band] = False
    return mask


def _border_activation_ratio_update(a: Tensor, band: int) -> tuple[Tensor, Tensor, int, int]:
    """Per-channel sums of |a| on the border band and the interior, and the pixel counts behind them.

    Returns ``(border_sum (C,), interior_sum (C,), n_border, n_interior)``; counts are per channel.
    """
    if a.ndim != 4:
        raise ValueError(f"expected a feature map of shape (N, C, H, W), got shape {tuple(a.shape)}")
    mask = border_mask(a.shape[-2], a.shape[-1], band, device=a.device)
    magnitude = _wide(a).abs()
    border = magnitude[..., mask].sum(dim=(0, 2))
    interior = magnitude[..., ~mask].sum(dim=(0, 2))
    n_border = a.shape[0] * int(mask.sum())
    return border, interior, n_border, a.shape[0] * mask.numel() - n_border


def _border_activation_ratio_compute(border_sum: Tensor, interior_sum: Tensor, n_border: int | Tensor,
                                     n_interior: int | Tensor, reduction: Reduction) -> Tensor:
    ratio = (border_sum / n_border) / (interior_sum / n_interior)
    return ratio if reduction == "none" else ratio.nanmean()


def border_activation_ratio(a: Tensor, band: int = 1, reduction: Reduction = "mean") -> Tensor:
    r"""How much stronger a channel responds on the border band than inside.

    .. math:: r_c = \frac{\operatorname{mean}_{n,(i,j)\in\text{band}} |a_{n,c,i,j}|}
                         {\operatorname{mean}_{n,(i,j)\notin\text{band}} |a_{n,c,i,j}|}

    The band is every pixel less than ``band`` px from an edge. Range [0, inf): 1 = no border
    preference, > 1 = fires more on the border, < 1 = silenced there. A channel silent inside
    but not on the border gives ``inf``; a channel silent everywhere gives ``NaN``.

    Args:
        a: feature map, shape (N, C, H, W).
        band: border band width in pixels; needs H, W > 2 * band.
        reduction: ``"none"`` -> (C,) per channel; ``"mean"`` -> scalar mean over channels (NaN channels skipped).

    Example:
        >>> a = torch.ones(1, 1, 3, 3); a[..., 1, 1] = 0.5
        >>> border_activation_ratio(a)
        tensor(2.)
    """
    reduction = _check_reduction(reduction)
    return _border_activation_ratio_compute(*_border_activation_ratio_update(a, band), reduction)


# ---------------------------------------------------------------- border accuracy
def _check_max_distance(max_distance: int) -> None:
    if not isinstance(max_distance, int) or max_distance < 1:
        raise ValueError(f"max_distance must be an int >= 1 (pixels), got {max_distance!r}")


def _near_far(max_distance: int, near: int, far: int | None) -> tuple[int, int]:
    """Validate the gap's bins: 0 <= near < far <= max_distance (far defaults to max_distance)."""
    _check_max_distance(max_distance)
    far = max_distance if far is None else far
    if not (0 <= near < far <= max_distance):
        raise ValueError(
            f"need 0 <= near < far <= max_distance, got near={near}, far={far}, max_distance={max_distance}"
        )
    return near, far


def _border_accuracy_update(
    preds: Tensor, target: Tensor, distance: Tensor, max_distance: int
) -> tuple[Tensor, Tensor]:
    """Correct and total sample counts per distance bin 0..max_distance, shape (max_distance + 1,) each.

    Distances beyond ``max_distance`` fall in the last bin.
    """
    if preds.ndim == target.ndim + 1:
        preds = preds.argmax(dim=-1)
    if target.ndim != 1 or preds.shape != target.shape or distance.shape != target.shape:
        raise ValueError(
            "expected preds (N,) labels or (N, K) logits, target (N,) and distance (N,), got shapes "
            f"{tuple(preds.shape)}, {tuple(target.shape)} and {tuple(distance.shape)}"
        )
    if distance.is_floating_point() or (distance < 0).any():
        raise ValueError("distance must hold non-negative integer pixel counts")
    bins = distance.long().clamp(max=max_distance)
    correct = torch.bincount(bins[preds == target], minlength=max_distance + 1)
    total = torch.bincount(bins, minlength=max_distance + 1)
    return correct, total


def _border_accuracy_curve_compute(correct: Tensor, total: Tensor) -> Tensor:
    return correct / total  # 0 / 0 -> NaN for empty bins


def _border_accuracy_gap_compute(correct: Tensor, total: Tensor, near: int, far: int) -> Tensor:
    at_border = correct[:near + 1].sum() / total[:near + 1].sum()
    at_centre = correct[far:].sum() / total[far:].sum()
    return at_centre - at_border


def border_accuracy_curve(preds: Tensor, target: Tensor, distance: Tensor, max_distance: int) -> Tensor:
    r"""Accuracy as a function of a sample's distance to the nearest image border.

    .. math:: \text{acc}[d] = \frac{\#\{n : \hat y_n = y_n,\ \min(d_n, D) = d\}}{\#\{n : \min(d_n, D) = d\}},
              \quad d = 0..D

    Args:
        preds: (N,) predicted labels or (N, K) logits/probabilities (argmax taken).
        target: (N,) labels.
        distance: (N,) int, distance in pixels from the sample's object to the nearest border.
        max_distance: D; bin D collects every distance >= D.

    Returns:
        (D + 1,) accuracies in [0, 1], ``NaN`` for bins without samples.
    """
    _check_max_distance(max_distance)
    return _border_accuracy_curve_compute(*_border_accuracy_update(preds, target, distance, max_distance))


def border_accuracy_gap(preds: Tensor, target: Tensor, distance: Tensor, max_distance: int,
                        near: int = 0, far: int | None = None) -> Tensor:
    r"""Accuracy lost near the border: centre accuracy minus border accuracy.

    .. math:: \text{gap} = \text{acc}(\{n : d_n \ge \text{far}\}) - \text{acc}(\{n : d_n \le \text{near}\})

    each term the accuracy over all samples in that distance range (sample-weighted, not a
    mean of bin accuracies). Range [-1, 1]: 0 = no border effect, > 0 = worse at the border;
    ``NaN`` when either range has no samples. Defaults compare bin 0 with bin ``max_distance``.

    Args:
        preds, target, distance, max_distance: as in :func:`border_accuracy_curve`.
        near: largest distance (px) counted as "at the border".
        far: smallest distance (px) counted as "in the centre"; default ``max_distance``.
    """
    near, far = _near_far(max_distance, near, far)
    return _border_accuracy_gap_compute(*_border_accuracy_update(preds, target, distance, max_distance), near, far)


# ---------------------------------------------------------------- padding reliance
def _padding_reliance_update(logits_a: Tensor, logits_b: Tensor) -> tuple[Tensor, Tensor, int]:
    """Number of argmax flips, summed total-variation distance, and number of samples."""
    if logits_a.ndim != 2 or logits_a.shape != logits_b.shape:
        raise ValueError(
            "expected two (N, K) logit tensors of the same shape, "
            f"got {tuple(logits_a.shape)} and {tuple(logits_b.shape)}"
        )
    flips = (logits_a.argmax(dim=1) != logits_b.argmax(dim=1)).sum()
    tv = 0.5 * (_wide(logits_a).softmax(dim=1) - _wide(logits_b).softmax(dim=1)).abs().sum(dim=1)
    return flips, tv.sum(), logits_a.shape[0]


def _padding_reliance_compute(flips: Tensor, tv_sum: Tensor, n: int | Tensor) -> dict[str, Tensor]:
    return {"flip_rate": flips / n, "output_shift": tv_sum / n}


def padding_reliance(logits_a: Tensor, logits_b: Tensor) -> dict[str, Tensor]:
    r"""How much a model's output depends on its padding mode.

    ``logits_a``: the model with its own padding; ``logits_b``: the same model and inputs with
    every padding switched to a content-preserving mode.

    .. math:: \text{flip\_rate} = \frac1N \sum_n [\arg\max a_n \ne \arg\max b_n], \qquad
              \text{output\_shift} = \frac1N \sum_n \tfrac12 \lVert \operatorname{softmax}(a_n)
              - \operatorname{softmax}(b_n) \rVert_1

    Both in [0, 1], lower is better (0 = padding mode irrelevant). ``output_shift`` is the mean
    total-variation distance between the predicted distributions.

    Returns:
        ``{"flip_rate": Tensor, "output_shift": Tensor}`` (scalars).
    """
    return _padding_reliance_compute(*_padding_reliance_update(logits_a, logits_b))


# ---------------------------------------------------------------- PAN fraction
def _pan_fraction_update(count: int | Tensor, total: int | Tensor) -> tuple[Tensor, Tensor]:
    count, total = torch.as_tensor(count), torch.as_tensor(total)
    if count.ndim or total.ndim or count.is_floating_point() or total.is_floating_point():
        raise ValueError(f"count and total must be integers, got {count!r} and {total!r}")
    if count < 0 or count > total:
        raise ValueError(f"need 0 <= count <= total, got count={int(count)}, total={int(total)}")
    return count, total


def pan_fraction(count: int | Tensor, total: int | Tensor) -> Tensor:
    """Fraction of filters that are PANs: ``count / total`` in [0, 1]; ``NaN`` when ``total`` is 0."""
    count, total = _pan_fraction_update(count, total)
    return count / total
