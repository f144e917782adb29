"""Your own images in the recipes: a torchvision ``ImageFolder`` (one sub-folder per class) as a
``lightning.pytorch`` data module, split into train/val by seed."""
from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader, Subset
from torchvision import transforms
from torchvision.datasets import ImageFolder

__all__ = ["ImageFolderDataModule"]


class ImageFolderDataModule(L.LightningDataModule):
    """Images under ``root/<class>/*.png|jpg|...``, resized to ``size`` x ``size`` RGB, scaled to
    [-1, 1] (``(x - 0.5) / 0.5``); a seeded random ``val_fraction`` of them is the validation split.
    Batches are ``(image, label)`` (no positions: the border accuracy gap is not measured).

    Raises:
        ValueError: ``root`` is not a directory, or holds no class folder with images.
    """

    def __init__(self, root: str | Path, size: int = 32, batch_size: int = 64, val_fraction: float = 0.2,
                 seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"dataset path {root} does not exist or is not a directory")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        tf = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                                 transforms.Normalize(0.5, 0.5)])
        try:
            self.dataset = ImageFolder(str(root), transform=tf)
        except (FileNotFoundError, RuntimeError) as err:
            raise ValueError(f"dataset path {root}: {str(err).splitlines()[0]}") from None
        n = len(self.dataset)
        n_val = max(1, round(n * val_fraction))
        if n - n_val < 1:
            raise ValueError(f"dataset path {root} holds {n} image(s): too few to split into train and val")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        self.splits = {"train": Subset(self.dataset, order[n_val:]), "val": Subset(self.dataset, order[:n_val])}
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.num_classes = len(self.dataset.classes)
        self.input_size = (3, size, size)

    def _loader(self, split: str) -> DataLoader:
        shuffle = split == "train"
        return DataLoader(self.splits[split], self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed) if shuffle else None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")
