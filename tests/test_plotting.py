"""Border-response maps and the report plot: the padding's own effect, on the scan's data."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pan_repair import find_pans
from pan_repair.detect.plotting import border_response_maps, plot_report
from pan_repair.detect.report import Pan


def _pan(layer: str, channel: int = 0) -> Pan:
    return Pan(layer, channel, ("top",), 1, 3.0, "border", 3.0, 0.0)


def _one_conv(padding_mode: str = "zeros") -> nn.Sequential:
    conv = nn.Conv2d(1, 2, 3, padding=1, padding_mode=padding_mode)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(18, dtype=torch.float32).view(2, 1, 3, 3) - 8)
        conv.bias.fill_(5.0)
    return nn.Sequential(conv)


def test_uniform_image_map_is_the_first_layer_algebra():
    net, v = _one_conv(), 0.7
    fmap, = border_response_maps(net, [_pan("0", 1)], (1, 8, 8), level=v)
    w = net[0].weight[1, 0]
    assert fmap.shape == (8, 8)
    assert torch.allclose(fmap[0, 1:-1], -v * w[0].sum().expand(6))       # top line: the top taps
    assert torch.allclose(fmap[-1, 1:-1], -v * w[-1].sum().expand(6))     # bottom line
    assert torch.allclose(fmap[1:-1, 0], -v * w[:, 0].sum().expand(6))    # left line
    assert torch.allclose(fmap[0, 0], -v * (w[0].sum() + w[:, 0].sum() - w[0, 0]))  # corner: both
    assert torch.count_nonzero(fmap[1:-1, 1:-1]) == 0                     # off the border: nothing


def test_maps_follow_the_data_a_black_border_shows_nothing():
    net = _one_conv()
    black = torch.zeros(4, 1, 8, 8)
    black[:, :, 3:5, 3:5] = 1.0  # a digit on black: the border is what zero padding adds
    white = 1.0 - black
    on_black, = border_response_maps(net, [_pan("0")], (1, 8, 8), data=black)
    on_white, = border_response_maps(net, [_pan("0")], (1, 8, 8), data=torch.utils.data.TensorDataset(white))
    assert torch.count_nonzero(on_black) == 0
    w = net[0].weight[0, 0]
    assert torch.allclose(on_white[0, 1:-1], -w[0].sum().expand(6))


def test_maps_are_zero_where_the_padding_makes_no_border_and_model_is_left_alone():
    net = _one_conv("circular").train()
    fmap, = border_response_maps(net, [_pan("0")], (1, 8, 8))
    assert torch.count_nonzero(fmap) == 0
    assert net.training and not net[0]._forward_hooks


def test_explicit_pad_module_is_the_convs_padding():
    net = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(1, 1, 2, stride=2))  # TF "same" by hand
    fmap, = border_response_maps(net, [_pan("1")], (1, 7, 7), level=1.0)
    w = net[1].weight[0, 0]
    assert fmap.shape == (4, 4)
    assert torch.allclose(fmap[-1, :-1], -w[1].sum().expand(3))  # bottom padding: the bottom taps
    assert torch.allclose(fmap[:-1, -1], -w[:, 1].sum().expand(3))
    assert torch.count_nonzero(fmap[:-1, :-1]) == 0


def test_plot_report_with_data_writes_a_png(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    images = torch.rand(6, 3, 24, 24)
    report = find_pans(net, data=images, border_threshold=0.0, n_patterns=2, dependence=False)
    path = plot_report(report, tmp_path / "pans.png", net, n_maps=3, data=images)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_data_of_another_size_is_refused_and_leaves_no_hooks():
    net = _one_conv()
    with pytest.raises(ValueError, match=r"the data's images are \(1, 9, 9\), the maps are wanted at \(1, 8, 8\)"):
        border_response_maps(net, [_pan("0")], (1, 8, 8), data=torch.rand(2, 1, 9, 9))
    assert not net[0]._forward_hooks and not net._forward_hooks
