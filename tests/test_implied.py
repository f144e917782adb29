"""A data-free scan checks its assumed input convention against the model's stem statistics
(pan_repair.detect.implied): the mean pixel level the stem BatchNorm's running mean implies."""
import pytest
import torch
from torch import nn

from pan_repair import SmallCNN, find_pans
from pan_repair.detect.detector import probe_batch
from pan_repair.detect.forward import prepass
from pan_repair.detect.implied import MISMATCH, implied_pixel_level
from pan_repair.detect.probes import resolve_convention

NOTE = "stem's BatchNorm"


def canvases(level: float, n: int = 64, size: int = 32, channels: int = 1) -> torch.Tensor:
    """Pixels in [0, 1]: a flat background at ``level`` with a bright or dark square at a random place."""
    gen = torch.Generator().manual_seed(0)
    x = torch.full((n, channels, size, size), level)
    for i in range(n):
        top, left = torch.randint(0, size - 8, (2,), generator=gen).tolist()
        x[i, :, top:top + 8, left:left + 8] = 1.0 - level
    return x


def with_statistics(model: nn.Module, inputs: torch.Tensor) -> nn.Module:
    """Every BatchNorm's running statistics gathered on ``inputs`` (cumulative), weights untouched."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(inputs)
    return model.eval()


def level_of(model: nn.Module, input_size, **convention) -> tuple[float, float]:
    pre = prepass(model, input_size, torch.device("cpu"), torch.float32)
    conv = resolve_convention(model, input_size[0], **convention)
    return implied_pixel_level(model.get_submodule(pre.stem), pre.feeds_bn[pre.stem], conv, input_size)


@pytest.mark.parametrize("level", [0.1, 0.5, 0.9])
def test_the_implied_level_is_the_training_images_mean_pixel_in_any_convention(level):
    pixels = canvases(level)
    true = float(pixels.mean())
    unit = with_statistics(SmallCNN(1, 10), pixels)
    u, r2 = level_of(unit, (1, 32, 32), input_range=(0, 1))
    assert u == pytest.approx(true, abs=0.01) and r2 > 0.95
    # the same images normalised: the same level under the convention that normalised them
    normalised = with_statistics(SmallCNN(1, 10), (pixels - 0.3) / 0.2)
    u, r2 = level_of(normalised, (1, 32, 32), mean=0.3, std=0.2)
    assert u == pytest.approx(true, abs=0.01) and r2 > 0.95
    # three channels, ImageNet-like statistics per channel
    rgb = with_statistics(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2)),
                          canvases(level, channels=3))
    assert level_of(rgb, (3, 32, 32), input_range=(0, 1))[0] == pytest.approx(true, abs=0.01)


def test_a_data_free_report_notes_a_background_unlike_its_mid_grey_canvas():
    dark = with_statistics(SmallCNN(1, 10), canvases(0.05))
    report = find_pans(dark, (1, 32, 32), input_range=(0, 1), dependence=False, n_patterns=2)
    note = [a for a in report.assumptions if NOTE in a]
    assert len(note) == 1 and "averaging 0.1" in note[0] and "data=, CLI --data" in note[0]
    grey = with_statistics(SmallCNN(1, 10), canvases(0.45))
    assert abs(level_of(grey, (1, 32, 32), input_range=(0, 1))[0] - 0.5) < MISMATCH
    assert not any(NOTE in a for a in find_pans(grey, (1, 32, 32), input_range=(0, 1), dependence=False,
                                                  n_patterns=2).assumptions)
    # the wrong convention for the right images: [0, 255] declared for [0, 1] inputs
    wrong = find_pans(grey, (1, 32, 32), input_range=(0, 255), dependence=False, n_patterns=2)
    assert any(NOTE in a for a in wrong.assumptions)
    # scans on the model's own images check nothing: they measure its inputs
    assert not any(NOTE in a for a in find_pans(dark, data=canvases(0.05, n=8), dependence=False,
                                                  n_patterns=2).assumptions)


def _ring(x: torch.Tensor) -> torch.Tensor:
    """The outermost pixels of every image (N, C, H, W) -> (N, border pixels)."""
    return torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1).flatten(1)


@pytest.mark.parametrize("level", [0.05, 0.95])
def test_a_data_free_scan_probes_on_a_canvas_at_the_level_the_stem_implies(level):
    """A model trained on dark (light) backgrounds is probed on dark (light) canvases, and its border
    score reads those textured canvases, not uniform images at levels it never saw."""
    model = with_statistics(SmallCNN(1, 10), canvases(level))
    u = level_of(model, (1, 32, 32), input_range=(0, 1))[0]
    probes = probe_batch(model, (1, 32, 32), input_range=(0, 1), n_patterns=2, n_positions=3)
    border_images = probes[:2]  # then the rolls of the same canvases
    assert _ring(border_images).mean(dim=1) == pytest.approx(torch.full((2,), u), abs=0.02)
    assert probes.flatten(1).std(dim=1).min() > 0.05  # textured, no uniform image left
    report = find_pans(model, (1, 32, 32), input_range=(0, 1), dependence=False, n_patterns=2)
    assert any(f"canvas is at {u:.2f}" in a for a in report.assumptions)
    # the model's declared convention is honoured: the same canvases in [0, 255]
    scaled = with_statistics(SmallCNN(1, 10), 255 * canvases(level))
    assert _ring(probe_batch(scaled, (1, 32, 32), input_range=(0, 255), n_patterns=2)[:2] / 255).mean() == \
        pytest.approx(u, abs=0.02)


def test_a_mid_grey_model_keeps_the_uniform_border_probes():
    model = with_statistics(SmallCNN(1, 10), canvases(0.45))
    probes = probe_batch(model, (1, 32, 32), input_range=(0, 1), n_patterns=2, n_positions=3)
    uniform = probes[:4].flatten(1)
    assert (uniform.std(dim=1) == 0).all() and uniform[:2, 0].min() >= 0.7 and uniform[2:, 0].max() <= 0.3
    assert _ring(probes[4:]).mean() == pytest.approx(0.5, abs=0.02)


def test_no_note_without_statistics_to_read():
    untrained = SmallCNN(1, 10).eval()  # running mean 0, var 1: nothing learned
    assert level_of(untrained, (1, 32, 32), input_range=(0, 1)) is None
    assert not any(NOTE in a for a in find_pans(untrained, (1, 32, 32), input_range=(0, 1), dependence=False,
                                                  n_patterns=2).assumptions)

    class Scaled(nn.Module):  # the stem reads a transformed input: no conv reads the model's input itself
        def __init__(self):
            super().__init__()
            self.net = with_statistics(SmallCNN(1, 10), canvases(0.05))

        def forward(self, x):
            return self.net(x * 1.0)

    scaled = Scaled().eval()
    assert prepass(scaled, (1, 32, 32), torch.device("cpu"), torch.float32).stem is None
    assert not any(NOTE in a for a in find_pans(scaled, (1, 32, 32), input_range=(0, 1), dependence=False,
                                                  n_patterns=2).assumptions)
