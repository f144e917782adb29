"""The detector on networks whose PANs are known by construction, and its contract."""
import copy
from unittest import mock

import pytest
import timm
import torch
from torch import nn

from pan_repair import Pan, PanReport, find_pans
from pan_repair.layers import conv_padding


def _double_centred(k: torch.Tensor) -> torch.Tensor:
    """A kernel whose every row and column sums to zero: blind to a constant border frame."""
    k = k - k.mean(dim=-1, keepdim=True)
    return k - k.mean(dim=-2, keepdim=True)


def flat(channels: int = 3, size: int = 32, n: int = 8) -> torch.Tensor:
    """Flat images (a level per image: bright half first, then their negatives; faint noise): the
    only edge a filter ever sees on them is the padding's, so an edge kernel answers the border
    beyond any content."""
    gen = torch.Generator().manual_seed(0)
    bright = torch.linspace(0.5, 1.5, n // 2)
    levels = torch.cat([bright, -bright]).view(n, 1, 1, 1)
    return levels + 0.01 * torch.randn(n, channels, size, size, generator=gen)


def planted_net(padding_mode: str = "zeros") -> tuple[nn.Module, set[tuple[int, str]]]:
    """16 filters; channels 2, 5 (top), 9 (left) and 13 (bottom + right) are border detectors:
    an edge kernel (+1 outer row, -1 middle row) is blind to constant content but not to a zero frame
    (on :func:`flat` images, where no content edge is as strong)."""
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 16, 3, padding=1, bias=True, padding_mode=padding_mode)
    with torch.no_grad():
        conv.weight.copy_(_double_centred(torch.randn(16, 3, 3, 3, generator=gen)))
        conv.bias.zero_()
        for ch, sign, (row, col) in [(2, 1, (0, None)), (5, -1, (0, None)), (9, 1, (None, 0)),
                                     (13, 1, (2, None)), (13, 1, (None, 2))]:
            if row is not None:
                conv.weight[ch, :, row, :] += sign
                conv.weight[ch, :, 1, :] -= sign
            else:
                conv.weight[ch, :, :, col] += sign
                conv.weight[ch, :, :, 1] -= sign
    net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    truth = {(2, "top"), (5, "top"), (9, "left"), (13, "bottom"), (13, "right")}
    return net, truth


def test_planted_border_detectors_precision_and_recall():
    net, truth = planted_net()
    report = find_pans(net, data=flat())
    found = {(p.channel, side) for p in report.of_kind("border") for side in p.sides}
    assert found == truth, f"precision/recall failure: found {found - truth}, missed {truth - found}"
    assert {p.channel for p in report.of_kind("border")} == {2, 5, 9, 13}


def test_planted_scores_are_well_separated():
    net, truth = planted_net()
    report = find_pans(net, data=flat())
    scores = report.scores["0"]["border"]
    planted = [scores[c] for c in (2, 5, 9, 13)]
    ordinary = [s for c, s in enumerate(scores) if c not in (2, 5, 9, 13)]
    assert min(planted) > 3 * max(ordinary)


def test_sign_says_fires_or_silenced():
    net, _ = planted_net()
    # a bright constant input through a kernel whose top row sums to +3 (per input channel) loses
    # 3*c at the top border under zero padding: D = -sum(top taps) * c < 0: silenced there.
    signs = {p.channel: p.sign for p in find_pans(net, data=flat()).of_kind("border")}
    assert signs[2] == -1 and signs[5] == +1


def test_first_layer_border_score_matches_hand_computation():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 1] = 2.0  # only the top-centre tap: D_top = -2 * x[row 0]
    net = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    levels = torch.tensor([1.0, -0.5, 2.0, 0.3])
    data = levels.view(4, 1, 1, 1).expand(4, 1, 24, 24).contiguous()  # uniform images: rolls change nothing
    report = find_pans(net, data=data, n_patterns=4)
    rms_top = (2 * levels).pow(2).mean().sqrt()  # D on the top row, over the images
    sigma = conv(data).detach().std(unbiased=False)  # no BatchNorm: the channel's std on the data
    assert report.scores["0"]["border"][0] == pytest.approx(float(rms_top / sigma), rel=1e-4)


@pytest.mark.parametrize("mode", ["circular", "reflect", "replicate"])
def test_content_preserving_padding_has_no_border_detectors(mode):
    net, _ = planted_net(mode)
    report = find_pans(net, (3, 32, 32))
    assert report.of_kind("border") == []
    assert all(s == 0 for s in report.scores["0"]["border"])
    if mode != "circular":
        assert any("leak absolute position" in note for note in report.notes)


def test_circular_network_reports_no_pans_at_all():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, padding_mode="circular"), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, padding_mode="circular"), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, padding_mode="circular"), nn.AdaptiveAvgPool2d(1))
    report = find_pans(net, (3, 32, 32))
    assert report.count == 0
    assert max(max(v["position"]) for v in report.scores.values()) < 1e-3


def test_zero_pad_module_counts_as_the_next_conv_padding():
    net, truth = planted_net()
    conv = net[0]
    unpadded = nn.Conv2d(3, 16, 3, padding=0)
    unpadded.load_state_dict(conv.state_dict())
    padded = nn.Sequential(nn.ZeroPad2d(1), unpadded, *list(net)[1:])
    found = {(p.channel, s) for p in find_pans(padded, data=flat()).of_kind("border") for s in p.sides}
    assert found == truth


def test_timm_same_padding_is_asymmetric():
    conv = timm.layers.Conv2dSame(3, 4, 3, stride=2)
    pad = conv_padding(conv, (224, 224))
    assert pad.pads == (0, 1, 0, 1)  # TF "SAME": the extra pixel goes right and bottom
    net = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1))
    with torch.no_grad():
        conv.weight.copy_(_double_centred(conv.weight))
        conv.weight[0, :, 2, :] += 1.0  # bottom row (edge kernel: +1 bottom, -1 middle)
        conv.weight[0, :, 1, :] -= 1.0
        conv.weight[1, :, 0, :] += 1.0  # top row: never meets padding on the top
        conv.weight[1, :, 1, :] -= 1.0
    pans = {p.channel: p.sides for p in find_pans(net, data=flat(3, 64)).of_kind("border")}
    assert pans.get(0) == ("bottom",)
    assert "top" not in pans.get(1, ()) and "left" not in pans.get(1, ())


@pytest.mark.parametrize("name", ["resnet18", "tf_efficientnet_lite0", "mobilenetv3_small_050"])
def test_timm_models_scan_and_are_left_untouched(name):
    torch.manual_seed(0)
    model = timm.create_model(name)
    model.train()
    model.blocks.apply(lambda m: m.eval()) if hasattr(model, "blocks") else None
    modes = {n: m.training for n, m in model.named_modules()}
    state = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    report = find_pans(model, (3, 96, 96), n_patterns=3, n_positions=5)
    assert report.total_filters == sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    assert 0 <= report.fraction <= 1
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)


def test_model_left_untouched_when_forward_raises():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 1:  # the stride pre-pass works, the probe forward fails
                raise RuntimeError("boom")
            return self.bn(self.conv(x))

    model = Broken().train()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="boom"):
        find_pans(model, (3, 32, 32))
    assert model.training and model.bn.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("model, size, message", [
    (nn.Sequential(nn.Linear(4, 2)), (3, 32, 32), "no 2-D convolution"),
    (nn.Sequential(nn.Conv2d(3, 4, 3)), (1, 32, 32), "expects 3"),
    (nn.Sequential(nn.Conv2d(3, 4, 7), nn.Conv2d(4, 4, 7)), (3, 8, 8), "cannot run on input size"),
    (nn.Sequential(nn.Conv2d(3, 4, 3)), (3, 32), "channels, height, width"),
])
def test_bad_input_gets_a_clear_error(model, size, message):
    with pytest.raises(ValueError, match=message):
        find_pans(model, size)


def test_report_json_round_trip(tmp_path):
    net, _ = planted_net()
    report = find_pans(net, data=flat())
    again = PanReport.load(report.save(tmp_path / "r.json"))
    assert again.to_dict() == report.to_dict()
    assert isinstance(again.pans[0], Pan) and again.pans[0].sides == report.pans[0].sides
    assert again.count == report.count and again.by_layer().keys() == report.by_layer().keys()
    with pytest.raises(ValueError, match="not a PanReport"):
        PanReport.from_dict({"pans": []})


def test_data_whose_border_is_what_padding_adds_blinds_the_first_layer():
    """On [0, 1] images with a black frame, zero padding adds nothing the layer could see."""
    net, _ = planted_net()
    bright = flat().abs()
    assert {p.channel for p in find_pans(net, data=bright).of_kind("border")} == {2, 5, 9, 13}
    black_frame = torch.zeros(8, 3, 32, 32)
    black_frame[:, :, 8:24, 8:24] = torch.rand(8, 3, 16, 16)
    report = find_pans(net, data=black_frame)
    assert report.of_kind("border") == [] and max(report.scores["0"]["border"]) == 0.0
    assert report.assumptions[0] == "measured on 8 data images"


def test_an_edge_filter_that_answers_content_edges_alike_is_no_pan():
    """Dark strokes on white (documents, digits on white): the zero frame is one more dark edge.
    The planted edge kernels answer it no more than the strokes' edges, so they score about 1 in
    units of their content response and are not PANs; on flat images (above) they are."""
    net, _ = planted_net()
    gen = torch.Generator().manual_seed(0)
    white = torch.ones(8, 3, 32, 32)
    for i in range(8):
        r, c = torch.randint(4, 20, (2,), generator=gen).tolist()
        white[i, :, r:r + 8, c:c + 3] = 0.0  # a vertical stroke
        white[i, :, r:r + 3, c:c + 8] = 0.0  # and a horizontal one
    report = find_pans(net, data=white, dependence=False)
    assert report.of_kind("border") == []
    assert max(report.scores["0"]["border"][c] for c in (2, 5, 9, 13)) < 1.5
    assert min(find_pans(net, data=flat(), dependence=False).scores["0"]["border"][c] for c in (2, 5, 9, 13)) > 3


def test_data_as_tensor_dataloader_or_dataset():
    from torch.utils.data import DataLoader, TensorDataset

    net, _ = planted_net()
    images = torch.rand(12, 3, 32, 32) + 0.5
    dataset = TensorDataset(images, torch.zeros(12, dtype=torch.long))
    a = find_pans(net, data=images[:8])
    b = find_pans(net, data=DataLoader(dataset, batch_size=4), max_images=8)
    assert a.scores == b.scores
    c = find_pans(net, data=dataset, max_images=6)
    assert c.assumptions == ["measured on 6 data images"] and c.input_size == (3, 32, 32)
    with pytest.raises(ValueError, match="does not match the data"):
        find_pans(net, (3, 16, 16), data=images)
    with pytest.raises(ValueError, match="no floating images"):
        find_pans(net, data=torch.zeros(4, 3, 32, 32, dtype=torch.long))


def test_input_convention_is_followed_and_recorded():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 1] = 1.0
    net = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    unit = find_pans(net, (1, 24, 24), input_range=(0, 1), dependence=False)
    assert "[0.0, 1.0]" in unit.assumptions[0] and "given input_range" in unit.assumptions[0]
    wide = find_pans(net, (1, 24, 24), input_range=(0, 255), dependence=False)
    # D scales with the input, and so does the channel's std (no BatchNorm): the score does not
    assert wide.scores["0"]["border"][0] == pytest.approx(unit.scores["0"]["border"][0], rel=1e-4)
    timm_model = timm.create_model("resnet10t")
    assert "timm pretrained_cfg" in find_pans(timm_model, (3, 64, 64), n_patterns=2, dependence=False).assumptions[0]
    assert "assumed" in find_pans(net, (1, 24, 24), dependence=False).assumptions[0]
    with pytest.raises(ValueError, match="both mean and std"):
        find_pans(net, (1, 24, 24), mean=0.5)


@pytest.mark.parametrize("size", [32, 48, 64, 96, 100, 128, 224])
def test_circular_twin_has_no_pans_at_any_size(size):
    import torchvision
    from pan_repair import convert_padding

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    convert_padding(model, "circular")
    report = find_pans(model, (3, size, size), n_patterns=2, dependence=False)
    assert report.count == 0 and max(max(s["position"]) for s in report.scores.values()) == 0.0


def test_small_inputs_scan_and_name_the_layers_they_cannot_measure():
    import torchvision

    model = torchvision.models.resnet18(num_classes=10)
    report = find_pans(model, (3, 32, 32), n_patterns=2, dependence=False)
    assert report.total_filters == 4800
    assert "layer4.1.conv2" in report.unmeasured and "1x1" in report.unmeasured["layer4.1.conv2"]
    assert "layer1.0.conv1" not in report.unmeasured
    assert any("twin" in a for a in report.assumptions)


def placement_net(k: int = 15, level: float = 0.5, threshold: float = 0.01, channels: int = 8) -> nn.Module:
    """Stride 4 then a wide zero-padded conv over an 'object here' mask (pixels further than ``threshold``
    from the canvas ``level``, 4x4 means): its pooled response is the object's area weighted by how many
    windows reach it, which drops only near the border; every channel varies with where the object sits
    and hardly with what it is."""
    gen = torch.Generator().manual_seed(0)
    deviation, mask = nn.Conv2d(3, 2, 4, stride=4), nn.Conv2d(2, 1, 1)
    wide = nn.Conv2d(1, channels, k, padding=k // 2, bias=False)
    with torch.no_grad():
        deviation.weight.zero_()
        deviation.weight[0], deviation.weight[1] = 1 / 48, -1 / 48
        deviation.bias.copy_(torch.tensor([-level - threshold, level - threshold]))
        mask.weight.fill_(1 / threshold)
        mask.bias.zero_()
        wide.weight.copy_(0.5 + torch.rand(channels, 1, k, k, generator=gen))
    return nn.Sequential(deviation, nn.ReLU(), mask, nn.Hardtanh(0, 1), wide).eval()


def test_data_free_scan_counts_no_position_pans_in_a_layer_that_varies_with_placement_as_a_whole():
    from pan_repair.detect.detector import SATURATED_MEDIAN, scan_probes

    net = placement_net()
    free = find_pans(net, (3, 96, 96), input_range=(0, 1), border_threshold=1e9, dependence=False)
    assert torch.tensor(free.scores["4"]["position"]).median() >= SATURATED_MEDIAN
    assert free.count == 0
    assert "position not resolved" in free.unmeasured["4"] and set(free.unmeasured) == {"4"}
    # on images the content varies as it does in use: the same layer's channels are counted
    probes = scan_probes(net, (3, 96, 96), input_range=(0, 1))
    images = probes.images[probes.n_constants:probes.n_constants + 16]
    on_data = find_pans(net, data=images, border_threshold=1e9, dependence=False)
    assert on_data.count > 0 and {p.layer for p in on_data.pans} == {"4"} and not on_data.unmeasured
    # a layer whose channels vary with placement less than with content keeps its position PANs
    mixed = find_pans(placement_net(11, threshold=0.03), (3, 96, 96), input_range=(0, 1), border_threshold=1e9,
                      dependence=False)
    position = torch.tensor(mixed.scores["4"]["position"])
    assert position.median() < SATURATED_MEDIAN and not mixed.unmeasured
    assert mixed.count == int((position >= mixed.position_threshold).sum())


def test_padding_dependence_and_shares():
    """A classifier reading a planted top detector depends on the zero padding; that channel's
    share of the dependence is the largest."""
    net, _ = planted_net()
    with torch.no_grad():
        net[-1].weight.zero_()
        net[-1].weight[0, 2] = 5.0  # class 0 <- the top detector (channel 2)
        net[-1].bias.copy_(torch.tensor([0.0, 0.05, 0.0, 0.0]))
    data = torch.rand(8, 3, 32, 32) * 0.5 + 0.5
    report = find_pans(net, data=data)
    dep = report.padding_dependence
    assert dep["images"] == 8 and dep["output_shift"] > 0.01 and 0 <= dep["flip_rate"] <= 1
    assert report.ranked(1)[0][:2] == ("0", 2)
    assert sum(sum(s["share"]) for s in report.scores.values()) == pytest.approx(1.0, abs=1e-4)
    assert "output shift" in repr(report) and "largest shares" in str(report)
    assert find_pans(net, data=data, dependence=False).padding_dependence is None


def test_padding_dependence_per_head_reports_the_head_that_leans_on_padding():
    """Two heads on one body: one reads a planted top detector (fires at the top on bright images),
    the other a channel blind to a constant frame.
    Each head's figures are listed; the model's are the larger (not their mean)."""
    net, _ = planted_net()
    body = net[:4]

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.border_head, self.content_head = body, nn.Linear(16, 2), nn.Linear(16, 2)
            with torch.no_grad():
                for head, ch in ((self.border_head, 5), (self.content_head, 0)):
                    head.weight.zero_()
                    head.weight[0, ch] = 5.0
                    head.bias.copy_(torch.tensor([0.0, 0.05]))

        def forward(self, x):
            z = self.body(x)
            return self.border_head(z), self.content_head(z)

    dep = find_pans(TwoHeads(), data=flat().abs()).padding_dependence
    border, content = dep["outputs"]
    assert border["output_shift"] > 10 * content["output_shift"]
    assert dep["output_shift"] == border["output_shift"] and dep["flip_rate"] == max(border["flip_rate"],
                                                                                  content["flip_rate"])
    assert "outputs" not in find_pans(net, data=flat().abs()).padding_dependence


def _edge_kernel_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """Channel 0: +1 on the top kernel row, -1 on the next (blind inside, fires on a zero frame);
    the other channels: zero-sum along rows and columns (blind to a constant frame)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        conv.weight.copy_(_double_centred(torch.randn(conv.weight.shape, generator=gen)))
        conv.weight[0, :, 0, :] += 1.0
        conv.weight[0, :, 1, :] -= 1.0
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


@pytest.mark.parametrize("make_conv", [
    lambda: nn.Conv2d(4, 8, 3, padding=1),
    lambda: nn.Conv2d(4, 8, 3, padding="same"),
    lambda: nn.Conv2d(4, 8, (3, 5), padding=(1, 2)),
    lambda: nn.Conv2d(4, 8, 3, stride=2, padding=1),
    lambda: nn.Conv2d(4, 8, 3, padding=2, dilation=2),
    lambda: nn.Conv2d(4, 8, 3, padding=1, groups=4),
    lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4),  # depthwise
    lambda: timm.layers.StdConv2d(4, 8, 3, padding=1),
    lambda: timm.layers.create_conv2d(4, 8, 3, stride=2, padding="same"),  # timm dynamic "same"
])
def test_every_conv_flavour_finds_the_planted_top_detector(make_conv):
    conv = _edge_kernel_conv(make_conv())
    net = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1))
    border = {p.channel: p.sides for p in find_pans(net, data=flat(4, 33)).of_kind("border")}
    if isinstance(conv, timm.layers.Conv2dSame):  # TF "same" at stride 2, odd size: pads 1 on every side
        assert conv_padding(conv, (33, 33)).pads == (1, 1, 1, 1)
    assert border.get(0) == ("top",) and set(border) == {0}, border


def test_batchnorm_pairing_by_identity_and_hooks_removed():
    from pan_repair.layers import BatchNormPairing, conv_bn_pairs

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.c = nn.Conv2d(4, 4, 1)
            self.bn_a, self.bn_b, self.bn_c = nn.BatchNorm2d(4), nn.BatchNorm2d(4), nn.BatchNorm2d(4)

        def forward(self, x):
            a = self.a(x)
            b = self.b(torch.relu(a))
            y = self.bn_a(a) + self.bn_b(b)  # bn_a reads a's output after b ran
            return self.bn_c(self.c(y) + 1)  # c's output is changed before its BatchNorm

    net = Net()
    assert conv_bn_pairs(net, (3, 8, 8)) == {"a": "bn_a", "b": "bn_b"}
    calls = []
    with BatchNormPairing(net, on_pair=lambda name, bn, x, out: calls.append((name, bn))) as pairing:
        net.eval()(torch.randn(2, 3, 8, 8))
    assert pairing.bns == {"a": net.bn_a, "b": net.bn_b} and calls == [("a", net.bn_a), ("b", net.bn_b)]
    assert all(not m._forward_hooks for m in net.modules())


def test_chunked_pooling_equals_full_size_statistics():
    from pan_repair.detect import recorder

    y = torch.randn(37, 5, 64, 48)
    pool = recorder.Pooler()
    old = recorder._CHUNK_BYTES
    recorder._CHUNK_BYTES = 3 * 5 * 64 * 48 * 4  # three images a chunk, the last one partial
    try:
        relu, square = pool(y, "relu"), pool(y, "square")
    finally:
        recorder._CHUNK_BYTES = old
    torch.testing.assert_close(relu, y.clamp_min(0).mean(dim=(2, 3)), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(square, y.pow(2).mean(dim=(2, 3)), rtol=1e-6, atol=1e-7)


def test_batched_statistics_equal_their_one_at_a_time_forms():
    """The scan reads its statistics all layers at once (one device-to-host copy, one eta^2 call):
    each layer's figures are those it has on its own, the flat-channel floor included."""
    from pan_repair.detect.position import layer_eta2, roll_eta2
    from pan_repair.detect.probes import roll_grid
    from pan_repair.detect.recorder import to_host
    from pan_repair.layers.padding import trained_bns, untrained_bn

    grid = roll_grid(torch.randn(3, 3, 40, 40), 5, (4, 4))
    n = grid.n_patterns * 2 * grid.n_positions
    gen = torch.Generator().manual_seed(0)
    # channels that move by 1e-9: not flat in a layer of their own, flat beside channels that move by 100
    loud, quiet = 100 * torch.randn(n, 6, generator=gen), 1e-9 * torch.randn(n, 4, generator=gen)
    responses = {"loud": loud, "quiet": quiet, "mixed": torch.cat([loud[:, :2], quiet[:, :1]], dim=1)}
    batched = layer_eta2(responses, grid)
    for name, r in responses.items():
        for got, want in zip(batched[name], roll_eta2(r, grid)):
            assert torch.equal(got, want), name
    assert batched["mixed"][0][:, 2].eq(0).all()  # flat next to the loud channels of its layer
    assert batched["quiet"][0].gt(0).any()        # the same values in a layer of their own are not

    bns = [nn.BatchNorm2d(c) for c in (3, 5, 2)]
    bns[1].running_mean[4] = 0.5
    bns[2].running_var[0] = 2.0
    untracked = nn.BatchNorm2d(4, track_running_stats=False)
    assert trained_bns(bns + [untracked]) == {id(b) for b in bns if not untrained_bn(b)} == {id(bns[1]), id(bns[2])}
    assert trained_bns([]) == set()

    parts = [torch.randn(2, 3), torch.arange(4.0), torch.randn(5, dtype=torch.float64)]
    assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(to_host(parts), parts))


def test_scan_restores_the_thread_count():
    net, _ = planted_net()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        find_pans(net, (3, 32, 32), n_patterns=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


class _ViewHead(nn.Module):
    """Flattens its 4x4 map with ``view``: it cannot run on channels-last activations."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        y = self.features(x)
        return self.fc(y.view(len(y), -1))


class _ContiguousReader(nn.Module):
    """Reads its activations' memory as if contiguous (``as_strided``): runs channels-last without an
    error, but answers otherwise."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8 * 8 * 8, 3)

    def forward(self, x):
        y = self.conv(x)
        n, c, h, w = y.shape
        return self.head(y.as_strided((n, c * h * w), (c * h * w, 1)))


def test_scan_layout_is_invisible(monkeypatch):
    """On the CPU the scan's forwards run channels-last where the model gives the same outputs in it
    (faster convolutions), contiguous where it raises or answers otherwise; the report is the same
    in either layout to within rounding."""
    import pan_repair.detect.detector as detector
    from pan_repair.detect.forward import scan_memory_format

    torch.manual_seed(0)
    model = timm.create_model("mobilenetv3_small_050", num_classes=5).eval()
    data = torch.randn(8, 3, 48, 48)
    size = (3, 48, 48)
    assert scan_memory_format(model, size, torch.device("cpu"), torch.float32) == torch.channels_last
    fast = find_pans(model, data=data)
    with pytest.raises(RuntimeError, match="view size"):
        _ViewHead()(torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last))
    assert scan_memory_format(_ViewHead(), (3, 8, 8), torch.device("cpu"), torch.float32) == \
        torch.contiguous_format
    assert find_pans(_ViewHead(), data=torch.randn(4, 3, 8, 8)).total_filters == 16
    reader = _ContiguousReader().eval()
    x = torch.randn(2, 3, 8, 8)
    assert not torch.allclose(reader(x), reader(x.contiguous(memory_format=torch.channels_last)))
    assert scan_memory_format(reader, (3, 8, 8), torch.device("cpu"), torch.float32) == torch.contiguous_format

    monkeypatch.setattr(detector, "scan_memory_format", lambda *a: torch.contiguous_format)
    plain = find_pans(model, data=data)
    assert [(p.layer, p.channel, p.kind) for p in fast.pans] == [(p.layer, p.channel, p.kind) for p in plain.pans]
    for name, scores in plain.scores.items():
        for key in ("border", "position", "share"):
            torch.testing.assert_close(torch.tensor(fast.scores[name][key]), torch.tensor(scores[key]),
                                       atol=2e-4, rtol=1e-3)


def test_border_score_needs_padding_free_positions_to_compare_the_border_with():
    """On a map where at most one output position per axis has a window free of padding (3x3
    maps of a 3x3 kernel, 4x4 maps of a 5x5 kernel), a channel's content response is 0 by
    construction and its border score is its border deviation over its std alone: unmeasured."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(6, 6, 5, padding=2))
    with mock.patch("pan_repair.detect.recorder.MIN_INTERIOR", 0):
        unguarded = find_pans(net, (3, 12, 12), dependence=False)
    assert any(p.kind == "border" and p.layer == "2" for p in unguarded.pans)  # the 3x3 map's score, kappa = 0
    small = find_pans(net, (3, 12, 12), dependence=False)
    assert not [p for p in small.pans if p.kind == "border"]
    assert set(small.unmeasured) == {"2", "4"}
    assert "3x3 of a 3x3 kernel has 1 position(s)" in small.unmeasured["2"]
    assert "3x3 of a 5x5 kernel has 0 position(s)" in small.unmeasured["4"]
    middle = find_pans(net, (3, 16, 16), dependence=False)  # 4x4 maps: the 3x3 kernel leaves 2x2
    assert set(middle.unmeasured) == {"4"} and "2" not in middle.unmeasured
    with mock.patch("pan_repair.detect.recorder.MIN_INTERIOR", 0):
        unguarded = find_pans(net, (3, 24, 24), dependence=False)
    large = find_pans(net, (3, 24, 24), dependence=False)  # 6x6 maps: both measured, nothing changes
    assert not large.unmeasured and large.count == unguarded.count > 0
    assert large.scores == unguarded.scores
