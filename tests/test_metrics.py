"""Border-bias metrics: hand-computed values, batch accumulation, merge (the DDP reduction), bad input."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn.functional import one_hot

from pan_repair.metrics import (
    BorderAccuracyGap,
    BorderActivationRatio,
    PaddingReliance,
    PANFraction,
    border_accuracy_curve,
    border_accuracy_gap,
    border_activation_ratio,
    border_mask,
    padding_reliance,
    pan_fraction,
)

NAN = float("nan")


def assert_same(x, y):
    """Equal values (NaN == NaN), for tensors or dicts of tensors."""
    if isinstance(x, dict):
        assert x.keys() == y.keys()
        for key in x:
            assert_same(x[key], y[key])
    else:
        torch.testing.assert_close(torch.as_tensor(x).double(), torch.as_tensor(y).double(), equal_nan=True)


# ---------------------------------------------------------------- border activation ratio
def test_border_mask():
    # 4x4, band 1: 16 pixels, interior is the 2x2 centre -> 12 border pixels
    mask = border_mask(4, 4)
    assert mask.sum() == 12 and not mask[1:3, 1:3].any()
    # 5x6, band 2: interior rows 2..2, cols 2..3 -> 2 interior pixels, 28 border
    assert border_mask(5, 6, band=2).sum() == 28


def test_border_activation_ratio_by_hand():
    a = torch.ones(2, 2, 4, 4)
    # channel 0: border |a| = 2 (12 px), interior 1 (4 px) -> 2 / 1 = 2
    a[:, 0] = 2.0
    a[:, 0, 1:3, 1:3] = 1.0
    # channel 1: border a = -1 (|a| = 1); interior 1, 2, 3, 4 -> mean 2.5 -> 1 / 2.5 = 0.4
    a[:, 1] = -1.0
    a[:, 1, 1:3, 1:3] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert_same(border_activation_ratio(a, reduction="none"), torch.tensor([2.0, 0.4]))
    assert_same(border_activation_ratio(a), torch.tensor(1.2))  # (2 + 0.4) / 2

    # band 2 on 5x5: 24 border px all 1, the single centre px 4 -> 1 / 4
    c = torch.ones(1, 1, 5, 5)
    c[0, 0, 2, 2] = 4.0
    assert_same(border_activation_ratio(c, band=2), torch.tensor(0.25))


def test_border_activation_ratio_silent_channels():
    a = torch.zeros(1, 3, 3, 3)
    a[:, 0] = 1.0             # uniform -> 1
    a[:, 1] = 1.0
    a[:, 1, 1, 1] = 0.0       # silent inside only -> 1 / 0 = inf
    # channel 2 silent everywhere -> 0 / 0 = NaN, skipped by the mean
    ratio = border_activation_ratio(a, reduction="none")
    assert ratio[0] == 1.0 and math.isinf(ratio[1]) and math.isnan(ratio[2])
    b = a.clone()
    b[:, 1] = 1.0  # channel 1 uniform now: mean over channels 0, 1 = 1, channel 2 still NaN
    assert border_activation_ratio(b) == 1.0


def test_border_activation_ratio_half_precision_sums_do_not_overflow():
    # border sum per channel = 64 maps * 124 px * 100 = 793,600 > 65,504 (float16 max): summed in float32
    assert border_activation_ratio(torch.full((64, 2, 32, 32), 100.0, dtype=torch.half)) == 1.0


@pytest.mark.parametrize(("shape", "band", "message"), [
    ((1, 1, 2, 5), 1, "no interior"),
    ((1, 1, 5, 4), 2, "no interior"),
    ((1, 1, 5, 5), 0, "band must be"),
    ((1, 5, 5), 1, r"\(N, C, H, W\)"),
])
def test_border_activation_ratio_bad_input(shape, band, message):
    with pytest.raises(ValueError, match=message):
        border_activation_ratio(torch.ones(shape), band=band)
    with pytest.raises(ValueError, match="reduction"):
        border_activation_ratio(torch.ones(1, 1, 5, 5), reduction="sum")


def test_border_activation_ratio_metric_channel_mismatch_and_forward():
    metric = BorderActivationRatio(reduction="none")
    first, second = torch.rand(2, 3, 6, 6), torch.rand(4, 3, 6, 6)
    assert_same(metric(first), border_activation_ratio(first, reduction="none"))  # forward: this batch only
    assert_same(metric(second), border_activation_ratio(second, reduction="none"))
    assert_same(metric.compute(), border_activation_ratio(torch.cat([first, second]), reduction="none"))
    with pytest.raises(ValueError, match="channels"):
        metric.update(torch.rand(1, 4, 6, 6))
    with pytest.raises(ValueError, match="band"):
        BorderActivationRatio(band=-1)


# ---------------------------------------------------------------- border accuracy
# six samples; preds vs target -> correct?  distance -> bin (max_distance 3, so 9 -> 3)
PREDS = torch.tensor([0, 1, 2, 3, 4, 5])
TARGET = torch.tensor([0, 0, 2, 3, 4, 0])    # correct: 1 0 1 1 1 0
DISTANCE = torch.tensor([0, 0, 2, 3, 9, 2])  # bins:    0 0 2 3 3 2
# bin 0: 1/2; bin 1: no samples; bin 2: 1/2; bin 3: 2/2
CURVE = torch.tensor([0.5, NAN, 0.5, 1.0])


def test_border_accuracy_curve_by_hand():
    assert_same(border_accuracy_curve(PREDS, TARGET, DISTANCE, max_distance=3), CURVE)
    logits = one_hot(PREDS, 6).float() * 3 - 1  # argmax = PREDS
    assert_same(border_accuracy_curve(logits, TARGET, DISTANCE, max_distance=3), CURVE)


def test_border_accuracy_gap_by_hand():
    # default near 0, far 3: acc(d >= 3) - acc(d <= 0) = 2/2 - 1/2 = 0.5
    assert_same(border_accuracy_gap(PREDS, TARGET, DISTANCE, max_distance=3), torch.tensor(0.5))
    # near 1, far 2: d >= 2 -> samples 2, 3, 4, 5: 3/4 correct; d <= 1 -> samples 0, 1: 1/2 -> 0.25
    assert_same(border_accuracy_gap(PREDS, TARGET, DISTANCE, 3, near=1, far=2), torch.tensor(0.25))
    # no centre samples -> NaN
    assert math.isnan(border_accuracy_gap(PREDS[:2], TARGET[:2], DISTANCE[:2], 3))


@pytest.mark.parametrize(("preds", "target", "distance", "message"), [
    (PREDS, TARGET, DISTANCE[:5], "shapes"),
    (PREDS[:5], TARGET, DISTANCE, "shapes"),
    (torch.rand(6, 2, 3), TARGET, DISTANCE, "shapes"),
    (PREDS, TARGET, -DISTANCE, "non-negative integer"),
    (PREDS, TARGET, DISTANCE.float(), "non-negative integer"),
])
def test_border_accuracy_bad_input(preds, target, distance, message):
    with pytest.raises(ValueError, match=message):
        border_accuracy_curve(preds, target, distance, max_distance=3)


@pytest.mark.parametrize(("max_distance", "near", "far"), [(0, 0, None), (3, 2, 2), (3, 0, 4), (3, -1, 2), (2.5, 0, 2)])
def test_border_accuracy_gap_bad_bins(max_distance, near, far):
    with pytest.raises(ValueError, match="max_distance"):
        BorderAccuracyGap(max_distance, near=near, far=far)


def test_border_accuracy_gap_metric_curve_and_reset():
    metric = BorderAccuracyGap(max_distance=3)
    for part in (slice(0, 2), slice(2, 3), slice(3, 6)):
        metric.update(PREDS[part], TARGET[part], DISTANCE[part])
    assert_same(metric.compute(), torch.tensor(0.5))
    assert_same(metric.curve(), CURVE)
    metric.reset()
    assert metric.total.sum() == 0 and metric.curve().isnan().all()
    metric.update(PREDS[:1], TARGET[:1], DISTANCE[:1])
    assert_same(metric.curve(), torch.tensor([1.0, NAN, NAN, NAN]))


# ---------------------------------------------------------------- padding reliance
def test_padding_reliance_by_hand():
    ln3 = math.log(3.0)
    logits_a = torch.tensor([[0.0, 0.0], [ln3, 0.0], [5.0, 1.0]])
    logits_b = torch.tensor([[0.0, 0.0], [0.0, ln3], [5.0, 1.0]])
    # sample 0: identical, softmax [1/2, 1/2] both -> TV 0, argmax 0 = 0
    # sample 1: softmax [3/4, 1/4] vs [1/4, 3/4] -> |1/2| + |1/2| = 1, TV 1/2; argmax 0 != 1 -> flip
    # sample 2: identical -> 0
    # flip_rate = 1/3, output_shift = (0 + 1/2 + 0) / 3 = 1/6
    assert_same(padding_reliance(logits_a, logits_b), {"flip_rate": 1 / 3, "output_shift": 1 / 6})


@pytest.mark.parametrize(("a", "b"), [((3, 2), (3, 4)), ((3, 2), (2, 2)), ((3,), (3,))])
def test_padding_reliance_bad_shapes(a, b):
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        padding_reliance(torch.rand(a), torch.rand(b))


# ---------------------------------------------------------------- PAN fraction
def test_pan_fraction_by_hand():
    metric = PANFraction()
    metric.update(3, 10)
    metric.update(torch.tensor(1), 30)
    assert_same(metric.compute(), torch.tensor(0.1))  # (3 + 1) / (10 + 30)
    assert metric.count() == 4
    assert_same(pan_fraction(0, 0), torch.tensor(NAN))
    for count, total in [(5, 4), (-1, 4), (1.0, 4)]:
        with pytest.raises(ValueError, match="count"):
            metric.update(count, total)
    metric.reset()
    metric.update(0, 7)
    assert metric.compute() == 0.0 and metric.count() == 0


# ---------------------------------------------------------------- every metric: batches, reset, merge
def _cases():
    """(metric factory, functional on all data, list of update-argument batches)."""
    torch.manual_seed(0)
    maps = [torch.randn(n, 4, 7, 9) for n in (2, 3, 1, 2)]
    preds, target, dist = torch.randn(40, 5), torch.randint(0, 5, (40,)), torch.randint(0, 12, (40,))
    logits_a, logits_b = torch.randn(40, 5), torch.randn(40, 5)
    cut = [(0, 7), (7, 20), (20, 21), (21, 40)]
    pans = [(3, 16), (0, 32), (5, 64), (2, 8)]
    return [
        (lambda: BorderActivationRatio(band=2, reduction="none"),
         lambda: border_activation_ratio(torch.cat(maps), band=2, reduction="none"), [(m,) for m in maps]),
        (lambda: BorderActivationRatio(), lambda: border_activation_ratio(torch.cat(maps)), [(m,) for m in maps]),
        (lambda: BorderAccuracyGap(max_distance=8, near=1, far=6),
         lambda: border_accuracy_gap(preds, target, dist, 8, near=1, far=6),
         [(preds[i:j], target[i:j], dist[i:j]) for i, j in cut]),
        (PaddingReliance, lambda: padding_reliance(logits_a, logits_b),
         [(logits_a[i:j], logits_b[i:j]) for i, j in cut]),
        (PANFraction, lambda: pan_fraction(10, 120), pans),
    ]


CASES = _cases()
IDS = ["ratio-none", "ratio-mean", "accuracy-gap", "padding-reliance", "pan-fraction"]


@pytest.mark.parametrize(("make", "expected", "batches"), CASES, ids=IDS)
def test_metric_over_batches_equals_functional_and_resets(make, expected, batches):
    metric = make()
    for batch in batches:
        metric.update(*batch)
    assert_same(metric.compute(), expected())
    metric.reset()
    for batch in batches:
        metric.update(*batch)
    assert_same(metric.compute(), expected())  # no leftovers from before reset


@pytest.mark.parametrize(("make", "expected", "batches"), CASES, ids=IDS)
def test_merge_state_equals_one_metric_on_all_data(make, expected, batches):
    """Two "ranks" each see half the batches; merging their sum-reduced states is the DDP reduction."""
    rank0, rank1, single = make(), make(), make()
    half = len(batches) // 2
    for batch in batches[:half]:
        rank0.update(*batch)
    for batch in batches[half:]:
        rank1.update(*batch)
    for batch in batches:
        single.update(*batch)
    rank0.merge_state(rank1)
    assert_same(rank0.compute(), single.compute())
    assert_same(rank0.compute(), expected())
