"""Embedded data: real handwritten digits (scikit-learn, 8x8) placed on a larger canvas.

Every sample's position is known, which makes positional shortcuts easy to plant
(``placement="biased"``: top/bottom half; ``"border"``: at an edge / in the centre) and to test
(``"swapped"``, ``"border-swapped"``, :meth:`DigitsCanvas.render`).
Nothing is downloaded; everything is deterministic given ``seed`` and the index.

Geometry (pixels): the digit is ``d = 8 * scale`` on a side, the canvas ``C``; a position
is the digit's top-left corner ``(y, x)`` with ``0 <= y, x <= L = C - d``. The digit lies in
the *top* half when its centre is above the canvas centre, ``y + d/2 < C/2`` i.e. ``2y < L``,
and in the *bottom* half otherwise (``half = 0`` top, ``1`` bottom).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import lightning.pytorch
import numpy as np
import pytorch_lightning
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, Dataset

PLACEMENTS = ("random", "center", "biased", "swapped", "border", "border-swapped")
#: each shortcut placement -> the placement that tests it (the opposite tie of class to place)
SWAPPED = {"biased": "swapped", "swapped": "biased", "border": "border-swapped", "border-swapped": "border"}
SPLITS = ("train", "val", "test")
TARGETS = ("digit", "half", "both")
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
DIGIT_SIDE = 8  # scikit-learn digits are 8x8, values 0..16
_PLACEMENT_STREAM, _NOISE_STREAM = 1, 2  # independent random streams per seed


@lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as float32 (N, 8, 8) in [0, 1] (value / 16) and their int64 classes."""
    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def _split_indices(split: str, seed: int) -> np.ndarray:
    """Global digit indices of ``split``: a seeded permutation cut 60/20/20, sorted."""
    n = len(_all_digits()[1])
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.round(np.cumsum((0.0,) + SPLIT_FRACTIONS) * n).astype(int)
    k = SPLITS.index(split)
    return np.sort(perm[bounds[k] : bounds[k + 1]])


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")


class DigitsCanvas(Dataset):
    """Handwritten digits, upsampled (nearest) by ``scale``, on a ``canvas`` x ``canvas`` noisy background.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``: a 60/20/20 split of the 1797 digits by ``seed``.
        canvas: canvas side ``C`` in pixels.
        scale: nearest-neighbour upsampling factor; the digit side is ``d = 8 * scale``.
        placement: ``"random"`` (uniform over all ``(L+1)^2`` positions), ``"center"`` (``y = x = L // 2``),
            ``"biased"`` (classes in ``top_classes`` in the top half, the others in the bottom half;
            ``y`` uniform within the half, ``x`` uniform over ``0..L``), ``"swapped"`` (the opposite halves),
            ``"border"`` (classes in ``top_classes`` touch an edge: a side drawn uniformly, the place along
            it uniform over ``0..L``; the others in the centre: ``y, x`` uniform over ``m..L-m``,
            ``m = L // 4``, so at least ``m`` px from every edge), ``"border-swapped"`` (the opposite).
        classes: digits to keep (default all 0..9); label = position in this sequence.
        top_classes: digits placed in the top half by ``"biased"`` and at an edge by ``"border"`` (default: the
            first ``ceil(n/2)`` of ``classes``).
        noise: std of the Gaussian background noise added to the whole canvas (in ink units, ink = value / 16).
        seed: drives the split, the placements and the per-sample noise.
        target: label returned by ``__getitem__``: ``"digit"``, ``"half"`` (0 top, 1 bottom) or ``"both"``
            (an int64 tensor ``[digit, half]``).

    Items are ``(image, label, position)``: ``image`` float32 ``[1, C, C]``, ``label`` int64 (shape ``[]``,
    or ``[2]`` for ``target="both"``), ``position`` int64 ``[y, x]`` (top-left corner of the digit).

    Normalisation: ``image = (p - mu) / sigma`` where ``p`` is ink (value / 16) plus noise, and over all
    1797 digits ``mu = f * m1``, ``sigma^2 = f * m2 - mu^2 + noise^2``, ``f = d^2 / C^2`` the digit's area
    share, ``m1, m2`` the mean and mean square of ink over digit pixels. So a canvas has mean ~0 and
    std ~1 whatever the position; the constants are the same for every split and placement.
    """

    def __init__(
        self,
        split: str = "train",
        canvas: int = 32,
        scale: int = 2,
        placement: str = "random",
        classes: Sequence[int] | None = None,
        top_classes: Sequence[int] | None = None,
        noise: float = 0.05,
        seed: int = 0,
        target: str = "digit",
    ) -> None:
        _check_choice("split", split, SPLITS)
        _check_choice("placement", placement, PLACEMENTS)
        _check_choice("target", target, TARGETS)
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.classes = tuple(range(10)) if classes is None else tuple(int(c) for c in classes)
        if not self.classes or len(set(self.classes)) != len(self.classes) or not set(self.classes) <= set(range(10)):
            raise ValueError(f"classes must be distinct digits 0..9, got {self.classes}")
        default_top = self.classes[: (len(self.classes) + 1) // 2]
        self.top_classes = default_top if top_classes is None else tuple(int(c) for c in top_classes)
        if not set(self.top_classes) <= set(self.classes):
            raise ValueError(f"top_classes {self.top_classes} must be a subset of classes {self.classes}")
        self.digit_size = DIGIT_SIDE * scale
        if canvas < self.digit_size:
            raise ValueError(f"canvas {canvas} is smaller than the digit ({self.digit_size} = 8 * scale {scale})")
        self.max_offset = canvas - self.digit_size
        if placement in SWAPPED and self.max_offset < (1 if placement in ("biased", "swapped") else 4):
            raise ValueError(f"placement {placement!r} needs canvas > digit side {self.digit_size}"
                             f"{'' if placement in ('biased', 'swapped') else ' + 3'}, got {canvas}")
        self.split, self.canvas, self.scale, self.placement = split, canvas, scale, placement
        self.noise, self.seed, self.target = float(noise), seed, target

        images, digits = _all_digits()
        idx = _split_indices(split, seed)
        self.indices = idx[np.isin(digits[idx], self.classes)]  # global digit indices, for per-sample noise
        self.digits = digits[self.indices]
        self.labels = torch.as_tensor([self.classes.index(c) for c in self.digits], dtype=torch.int64)
        self._ink = torch.from_numpy(images[self.indices]).repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        rng = np.random.default_rng([seed, _PLACEMENT_STREAM, SPLITS.index(split)])
        self.positions = torch.from_numpy(self._placements(rng))
        f = self.digit_size**2 / canvas**2
        self.mean = f * float(images.mean())
        self.std = float(np.sqrt(f * float((images**2).mean()) - self.mean**2 + self.noise**2))

    def _placements(self, rng: np.random.Generator) -> np.ndarray:
        """(N, 2) int64 top-left corners for ``self.placement``."""
        n, L = len(self.indices), self.max_offset
        x = rng.integers(0, L + 1, n)
        if self.placement == "random":
            y = rng.integers(0, L + 1, n)
        elif self.placement == "center":
            y = x = np.full(n, L // 2)
        elif self.placement in ("border", "border-swapped"):
            edge = np.isin(self.digits, self.top_classes) ^ (self.placement == "border-swapped")
            side, along, m = rng.integers(0, 4, n), rng.integers(0, L + 1, n), L // 4
            ey = np.select([side == 0, side == 1], [0, L], along)  # top, bottom, else left/right
            ex = np.select([side == 2, side == 3], [0, L], along)
            y = np.where(edge, ey, rng.integers(m, L - m + 1, n))
            x = np.where(edge, ex, rng.integers(m, L - m + 1, n))
        else:
            top = np.isin(self.digits, self.top_classes) ^ (self.placement == "swapped")
            upper = rng.integers(0, (L + 1) // 2, n)  # 2y < L
            lower = rng.integers(L // 2 + 1, L + 1, n)  # 2y > L
            y = np.where(top, upper, lower)
        return np.stack([y, x], 1).astype(np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def half_label(self, position: torch.Tensor) -> torch.Tensor:
        """0 where the digit at ``position[..., 0] = y`` lies in the top half (``2y < L``), else 1 (int64)."""
        return (2 * torch.as_tensor(position)[..., 0] >= self.max_offset).long()

    def render(self, i: int, y: int, x: int) -> torch.Tensor:
        """Sample ``i``'s digit at top-left ``(y, x)``, with sample ``i``'s noise: float32 ``[1, C, C]``, normalised."""
        if not (0 <= y <= self.max_offset and 0 <= x <= self.max_offset):
            raise ValueError(f"position ({y}, {x}) outside 0..{self.max_offset} for canvas {self.canvas}")
        rng = np.random.default_rng([self.seed, _NOISE_STREAM, int(self.indices[i])])
        p = torch.from_numpy(rng.normal(0.0, self.noise, (self.canvas, self.canvas)).astype(np.float32))
        d = self.digit_size
        p[y : y + d, x : x + d] += self._ink[i]
        return ((p - self.mean) / self.std).unsqueeze(0)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        position = self.positions[i]
        digit, half = self.labels[i], self.half_label(position)
        label = {"digit": digit, "half": half, "both": torch.stack([digit, half])}[self.target]
        return self.render(i, int(position[0]), int(position[1])), label, position


class _DigitsCanvasData:
    """Shared body of the two data modules: train split with ``train_placement``, val/test with ``eval_placement``.

    The train loader shuffles with a generator seeded by ``seed`` (deterministic order).
    Other keyword arguments go to every :class:`DigitsCanvas`.
    """

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        train_placement: str = "random",
        eval_placement: str = "random",
        canvas: int = 32,
        scale: int = 2,
        classes: Sequence[int] | None = None,
        top_classes: Sequence[int] | None = None,
        noise: float = 0.05,
        seed: int = 0,
        target: str = "digit",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        _check_choice("train_placement", train_placement, PLACEMENTS)
        _check_choice("eval_placement", eval_placement, PLACEMENTS)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.placements = {"train": train_placement, "val": eval_placement, "test": eval_placement}
        self.dataset_kwargs = dict(
            canvas=canvas, scale=scale, classes=classes, top_classes=top_classes, noise=noise, seed=seed, target=target
        )
        self.datasets: dict[str, DigitsCanvas] = {}

    def dataset(self, split: str) -> DigitsCanvas:
        """The (cached) :class:`DigitsCanvas` of ``split``."""
        if split not in self.datasets:
            self.datasets[split] = DigitsCanvas(split, placement=self.placements[split], **self.dataset_kwargs)
        return self.datasets[split]

    def _loader(self, split: str) -> DataLoader:
        shuffle = split == "train"
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self.dataset(split), self.batch_size, shuffle=shuffle, num_workers=self.num_workers, generator=generator
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class DigitsCanvasDataModule(_DigitsCanvasData, pytorch_lightning.LightningDataModule):
    """Digits-on-canvas data for a ``pytorch_lightning.Trainer`` (see :class:`_DigitsCanvasData` for arguments)."""


class LitDigitsCanvasDataModule(_DigitsCanvasData, lightning.pytorch.LightningDataModule):
    """The same for a ``lightning.pytorch.Trainer`` (the two namespaces reject each other's data modules)."""
