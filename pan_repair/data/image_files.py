"""Images from disk for a scan on the command line: a ``.pt`` tensor file or a folder of pictures."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..detect.probes import InputConvention

__all__ = ["load_images", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _picture(path: Path, channels: int, size: tuple[int, int] | None) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image

    try:
        u8 = decode_image(str(path), mode=ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY)
    except RuntimeError as err:
        raise ValueError(f"cannot read image {path}: {str(err).splitlines()[0]}") from None
    x = u8.float().div(255).expand(channels, *u8.shape[-2:]) if u8.shape[0] == 1 else u8.float().div(255)
    if size is not None and tuple(x.shape[-2:]) != size:
        x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return x


def load_images(path: str | Path, channels: int, size: tuple[int, int] | None, convention: InputConvention,
                max_images: int = 16) -> torch.Tensor:
    """Up to ``max_images`` model inputs (N, C, H, W) from ``path``: a ``.pt`` file holding such a
    tensor, already in the model's input space (used as is), or a folder whose pictures (searched
    recursively, sorted, evenly spaced) are read as pixels in [0, 1], resized to ``size`` (H, W)
    and normalised by ``convention``. ``ValueError`` with the reason if none can be had."""
    path = Path(path)
    if path.is_file() and path.suffix == ".pt":
        try:
            x = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for unreadable files
            raise ValueError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            raise ValueError(f"{path} holds no floating (N, C, H, W) tensor")
        return x[:max_images]
    if not path.is_dir():
        raise ValueError(f"data {path} is neither a .pt tensor file nor a folder of images")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"data folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    chosen = [files[int(i * len(files) / min(max_images, len(files)))] for i in range(min(max_images, len(files)))]
    pictures = [_picture(f, channels, size) for f in chosen]
    if len({tuple(p.shape) for p in pictures}) > 1:
        raise ValueError(f"images in {path} differ in size: pass --size")
    return convention.to_input(torch.stack(pictures))
