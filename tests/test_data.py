"""Digits-on-canvas data: determinism, splits, placements, rendering, bad inputs, Lightning data modules."""

import lightning.pytorch
import numpy as np
import pytest
import pytorch_lightning
import torch
import torch.nn.functional as F

from pan_repair.data.digits import (
    PLACEMENTS,
    SPLITS,
    SWAPPED,
    DigitsCanvas,
    DigitsCanvasDataModule,
    LitDigitsCanvasDataModule,
)


def _batch(ds: DigitsCanvas, n: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    items = [ds[i] for i in range(n)]
    return tuple(torch.stack(t) for t in zip(*items))


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_same_seed_same_tensors(placement):
    a, b = DigitsCanvas(placement=placement, seed=3), DigitsCanvas(placement=placement, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(_batch(a), _batch(b)))


def test_different_seed_different_split_and_noise():
    a, b = DigitsCanvas(seed=0), DigitsCanvas(seed=1)
    assert not np.array_equal(a.indices, b.indices)
    assert not torch.equal(a.render(0, 0, 0), DigitsCanvas(seed=0, noise=0.1).render(0, 0, 0))


def test_splits_disjoint_and_cover_all_digits():
    parts = [set(DigitsCanvas(split, seed=5).indices.tolist()) for split in SPLITS]
    assert sum(map(len, parts)) == len(set.union(*parts)) == 1797
    assert [len(p) for p in parts] == [1078, 360, 359]


def test_item_types_and_normalisation():
    ds = DigitsCanvas()
    image, label, position = ds[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert label.dtype == position.dtype == torch.int64 and label.shape == () and position.shape == (2,)
    images = _batch(ds, 200)[0]
    assert abs(images.mean().item()) < 0.1 and 0.9 < images.std().item() < 1.1


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_positions_in_range(placement):
    ds = DigitsCanvas(placement=placement, canvas=28)
    assert ds.max_offset == 12
    assert ds.positions.min() >= 0 and ds.positions.max() <= ds.max_offset


def test_random_placement_covers_the_canvas():
    pos = DigitsCanvas(placement="random").positions
    assert pos[:, 0].unique().numel() == pos[:, 1].unique().numel() == 17


def test_center_placement():
    ds = DigitsCanvas(placement="center", canvas=29)
    assert (ds.positions == 6).all()


@pytest.mark.parametrize("canvas", [32, 33])  # even and odd free range L
@pytest.mark.parametrize("placement", ["biased", "swapped"])
def test_biased_and_swapped_halves(placement, canvas):
    ds = DigitsCanvas(placement=placement, canvas=canvas, top_classes=(1, 4, 7))
    in_top = torch.as_tensor(np.isin(ds.digits, (1, 4, 7)))
    y = ds.positions[:, 0]
    top = 2 * y < ds.max_offset
    assert torch.equal(top, in_top if placement == "biased" else ~in_top)
    assert (2 * y[~top] > ds.max_offset).all()  # the exact middle is never used
    assert torch.equal(ds.half_label(ds.positions), (~top).long())
    assert y[top].unique().numel() == y[~top].unique().numel() == (ds.max_offset + 1) // 2


def test_default_top_classes_are_first_half():
    assert DigitsCanvas().top_classes == (0, 1, 2, 3, 4)
    assert DigitsCanvas(classes=(9, 2, 5)).top_classes == (9, 2)


def test_labels_remapped_in_given_order():
    ds = DigitsCanvas(classes=(8, 3))
    assert set(ds.digits.tolist()) == {3, 8}
    assert torch.equal(ds.labels, torch.as_tensor(ds.digits == 3).long())
    assert ds[0][1].item() == ds.labels[0].item()


def test_targets():
    kwargs = dict(placement="biased", seed=2)
    digit, half, both = (DigitsCanvas(target=t, **kwargs) for t in ("digit", "half", "both"))
    for i in range(10):
        pos = digit[i][2]
        assert both[i][1].tolist() == [digit[i][1].item(), half[i][1].item()]
        assert half[i][1].item() == int(2 * pos[0].item() >= digit.max_offset)


@pytest.mark.parametrize("y, x", [(0, 0), (16, 16), (0, 16), (9, 3)])
def test_render_puts_ink_where_asked(y, x):
    ds = DigitsCanvas(noise=0.0)
    image = ds.render(7, y, x)[0]
    background = image.min()
    ink = (image > background).nonzero()
    assert ink[:, 0].min() >= y and ink[:, 0].max() < y + 16
    assert ink[:, 1].min() >= x and ink[:, 1].max() < x + 16
    row, col = divmod(int(image.argmax()), 32)
    assert y <= row < y + 16 and x <= col < x + 16
    box = F.avg_pool2d(image[None, None] - background, 16, stride=1)[0, 0]
    assert divmod(int(box.argmax()), box.shape[1]) == (y, x)


def test_render_matches_item_and_keeps_noise():
    ds = DigitsCanvas(noise=0.2)
    image, _, (y, x) = ds[4]
    assert torch.equal(image, ds.render(4, int(y), int(x)))
    moved = ds.render(4, int(ds.max_offset - y), int(x))
    far = (slice(0, 32), slice(x + 16, 32)) if x + 16 < 32 else (slice(0, 32), slice(0, x))
    assert torch.equal(image[0][far], moved[0][far])  # same noise where no digit is drawn


@pytest.mark.parametrize("canvas", [32, 35])
@pytest.mark.parametrize("placement", ["border", "border-swapped"])
def test_border_placements_tie_classes_to_the_edge_or_the_centre(placement, canvas):
    ds = DigitsCanvas(placement=placement, canvas=canvas, top_classes=(1, 4, 7))
    at_edge = torch.as_tensor(np.isin(ds.digits, (1, 4, 7))) ^ (placement == "border-swapped")
    L, (y, x) = ds.max_offset, ds.positions.T
    distance = torch.stack([y, x, L - y, L - x], 1).amin(1)
    assert (distance[at_edge] == 0).all()
    assert (distance[~at_edge] >= L // 4).all()
    sides = torch.stack([y == 0, y == L, x == 0, x == L], 1)[at_edge]
    assert sides.sum(0).min() > 0.15 * at_edge.sum()  # every side used
    assert y[~at_edge].unique().numel() == x[~at_edge].unique().numel() == L - 2 * (L // 4) + 1
    assert SWAPPED[placement] == ("border-swapped" if placement == "border" else "border")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(placement="diagonal"), "unknown placement 'diagonal'"),
        (dict(split="holdout"), "unknown split 'holdout'"),
        (dict(target="colour"), "unknown target 'colour'"),
        (dict(canvas=12), "canvas 12 is smaller than the digit"),
        (dict(canvas=16, placement="biased"), "needs canvas > digit side"),
        (dict(canvas=19, placement="border"), "needs canvas > digit side 16 \\+ 3"),
        (dict(classes=(3, 3)), "distinct digits"),
        (dict(classes=(1, 10)), "distinct digits"),
        (dict(classes=(1, 2), top_classes=(5,)), "subset of classes"),
        (dict(scale=0), "scale must be >= 1"),
        (dict(noise=-0.1), "noise must be >= 0"),
    ],
)
def test_bad_inputs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DigitsCanvas(**kwargs)


def test_render_outside_canvas():
    with pytest.raises(ValueError, match="outside"):
        DigitsCanvas().render(0, 17, 0)


def test_datamodule_bad_placement():
    with pytest.raises(ValueError, match="unknown eval_placement 'sideways'"):
        DigitsCanvasDataModule(eval_placement="sideways")


def test_datamodule_loaders():
    dm = DigitsCanvasDataModule(batch_size=32, train_placement="biased", eval_placement="swapped", classes=(0, 1))
    assert dm.dataset("train").placement == "biased"
    assert dm.dataset("val").placement == dm.dataset("test").placement == "swapped"
    first = [next(iter(dm.train_dataloader()))[2] for _ in range(2)]
    assert torch.equal(*first)  # deterministic shuffle
    images, labels, positions = next(iter(dm.val_dataloader()))
    assert images.shape == (32, 1, 32, 32) and labels.shape == (32,) and positions.shape == (32, 2)
    assert dm.hparams.train_placement == "biased"


def _tiny_module(base: type) -> object:
    class Tiny(base):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.LazyLinear(10))

        def training_step(self, batch, _):
            images, labels, _ = batch
            return F.cross_entropy(self.net(images), labels)

        def validation_step(self, batch, _):
            images, labels, _ = batch
            self.log("val_loss", F.cross_entropy(self.net(images), labels))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Tiny()


@pytest.mark.parametrize(
    "namespace, datamodule",
    [(pytorch_lightning, DigitsCanvasDataModule), (lightning.pytorch, LitDigitsCanvasDataModule)],
)
def test_fits_with_trainer(namespace, datamodule):
    trainer = namespace.Trainer(
        max_steps=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    module, data = _tiny_module(namespace.LightningModule), datamodule(batch_size=16)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 1
    (metrics,) = trainer.validate(module, datamodule=data, verbose=False)
    assert np.isfinite(metrics["val_loss"])


@pytest.mark.parametrize("placement, tested", [("biased", "swapped"), ("border", "border-swapped"),
                                               ("border-swapped", "border"), ("random", "swapped")])
def test_recipes_test_each_shortcut_on_its_swapped_placement(placement, tested):
    from pan_repair.experiments.pipeline import digits_data

    data, swapped = digits_data(placement, "random", None, batch_size=8, seed=0)
    assert data.placements == {"train": placement, "val": "random", "test": "random"}
    assert swapped.placements["val"] == tested
