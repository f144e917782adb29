"""convert_padding / converted_copy: every layer type against an F.pad reference,
partial padding against hand-computed ratios, timm models end to end, atomicity."""
import copy
import pickle
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import (
    CondConv2d,
    Conv2dSame,
    MixedConv2d,
    ScaledStdConv2d,
    ScaledStdConv2dSame,
    StdConv2d,
)
from timm.layers.conv2d_same import Conv2dSameExport
from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

from pan_repair.layers import Padding, conv_padding, effective_weight, layer_padding
from pan_repair.layers.padding_switch import (
    MODES,
    PaddedConv2d,
    PaddedScaledStdConv2d,
    PaddedStdConv2d,
    convert_padding,
    converted_copy,
)

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

PAD_MODES = ("reflect", "replicate", "circular")
SAME_SIZE_MODES = tuple(m for m in MODES if m != "full")  # "full" grows the maps: its own tests below

ZOO = {
    "conv_int": lambda: nn.Conv2d(4, 6, 3, padding=1),
    "conv_tuple": lambda: nn.Conv2d(4, 6, (3, 5), padding=(1, 2)),
    "conv_same_even_kernel": lambda: nn.Conv2d(4, 6, 4, padding="same"),
    "conv_stride2": lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1),
    "conv_dilation2": lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2),
    "conv_grouped": lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2),
    "conv_depthwise": lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False),
    "conv2d_same": lambda: Conv2dSame(4, 6, 3, stride=2),
    "conv2d_same_export": lambda: Conv2dSameExport(4, 6, 5, stride=2, bias=False),
    "std_conv": lambda: StdConv2d(4, 6, 3),
    "scaled_std_conv": lambda: ScaledStdConv2d(4, 6, 3, stride=2, gamma=1.7),
    "scaled_std_conv_same": lambda: ScaledStdConv2dSame(4, 6, 3, stride=2),
    "mixed_conv": lambda: MixedConv2d(4, 6, [3, 5]),
    "zero_pad_conv": lambda: nn.Sequential(nn.ZeroPad2d((1, 2, 0, 1)), nn.Conv2d(4, 6, 3)),
    "avg_pool": lambda: nn.AvgPool2d(3, stride=2, padding=1),
    "avg_pool_same": lambda: AvgPool2dSame(3, stride=2),
}
SIZES = [(9, 11), (10, 12)]  # odd and even sides: TF "same" pads differ


def make(kind: str) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(ZOO[kind]()).eval()
    with torch.no_grad():  # non-trivial gains and biases
        for p in model.parameters():
            if p.dim() != 4 or p.shape[1:] == (1, 1, 1):
                p.uniform_(0.5, 1.5)
    return model


def reference(model: nn.Module, x: torch.Tensor, pad) -> torch.Tensor:
    """``model``'s output with every layer's padding done by ``pad(x, pads)``."""
    for layer in model.children():
        if isinstance(layer, nn.Sequential):
            x = reference(layer, x, pad)
        elif isinstance(layer, MixedConv2d):
            xs = torch.split(x, layer.splits, 1)
            x = torch.cat([reference(nn.Sequential(c), xi, pad) for c, xi in zip(layer.values(), xs)], 1)
        else:
            pads = layer_padding(layer, tuple(x.shape[-2:])).pads
            if isinstance(layer, nn.Conv2d):
                x = F.conv2d(pad(x, pads), effective_weight(layer), layer.bias, layer.stride, 0,
                             layer.dilation, layer.groups)
            elif isinstance(layer, nn.AvgPool2d):
                x = F.avg_pool2d(pad(x, pads), layer.kernel_size, layer.stride, 0, layer.ceil_mode)
            else:
                x = pad(x, pads)
    return x


def zeros(x, pads):
    return F.pad(x, pads)


def interior(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Output positions out of reach of any padding: unchanged when the pad value changes."""
    far = reference(model, x, lambda x, p: F.pad(x, p, value=1e3))
    return torch.isclose(reference(model, x, zeros), far)


def state(model: nn.Module):
    return [(n, type(m)) for n, m in model.named_modules()], {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before) -> None:
    types, sd = state(model)
    assert types == before[0]
    assert sd.keys() == before[1].keys()
    for k in sd:
        assert torch.equal(sd[k], before[1][k])


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("kind", ZOO)
def test_reference_padding_is_the_original(kind, hw):
    """The test's reference, with zero padding, is the original layer (pads are right)."""
    model = make(kind)
    x = torch.randn(2, 4, *hw)
    torch.testing.assert_close(model(x), reference(model, x, zeros))


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("mode", SAME_SIZE_MODES)
@pytest.mark.parametrize("kind", ZOO)
def test_zoo(kind, mode, hw):
    model = make(kind)
    original = copy.deepcopy(model)
    x = torch.randn(2, 4, *hw)
    before = model(x)
    summary = convert_padding(model, mode)
    after = model(x)
    inside = interior(original, x)
    assert inside.any() and not inside.all()
    torch.testing.assert_close(after[inside], before[inside])
    if kind == "zero_pad_conv" and mode == "partial":  # a pad module cannot do partial
        assert not summary.changed and summary.skipped[0].name == "0.0"
        torch.testing.assert_close(after, before)
        return
    assert summary.changed and not summary.skipped
    assert ((after - before).abs()[~inside] > 1e-3).any()
    if mode in PAD_MODES:
        torch.testing.assert_close(after, reference(original, x, lambda x, p: F.pad(x, p, mode=mode)))


def test_summary_reports_types_and_modes():
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="replicate"), Conv2dSame(2, 2, 3, 2),
                          nn.Conv2d(2, 2, 1), nn.MaxPool2d(3, 2, 1), MaxPool2dSame(3, 2),
                          nn.AvgPool2d(3, 1, 1, count_include_pad=False))
    summary = convert_padding(model, "replicate")
    assert summary.mode == "replicate"
    assert summary.changed == [("1", "Conv2dSame(zeros)", "PaddedConv2d(replicate)"),
                               ("5", "AvgPool2d(partial)", "PaddedAvgPool2d(replicate)")]
    assert dict(summary.skipped) == {"0": "already replicate", "3": "pads -inf, which never wins a max",
                                     "4": "pads -inf, which never wins a max"}
    summary = convert_padding(model, "partial")  # converted layers convert again
    assert [c.new for c in summary.changed] == ["PaddedConv2d(partial)"] * 2 + ["AvgPool2d(partial)"]


def test_layer_padding_of_converted_layers():
    conv, hw = Conv2dSame(2, 3, 3, stride=2), (10, 7)
    model = nn.Sequential(conv, nn.Conv2d(3, 3, 3, padding=1))
    convert_padding(model, "circular")
    assert layer_padding(model[0], hw).pads == conv_padding(conv, hw).pads
    assert layer_padding(model[0], hw).mode == "circular"
    assert conv_padding(model[1], hw).mode == "circular"  # static convs: the existing helper knows


@pytest.mark.parametrize("kind", ["conv2d_same", "conv_stride2", "conv_dilation2", "conv_grouped",
                                  "conv_tuple", "mixed_conv", "avg_pool", "avg_pool_same"])
def test_partial_all_ones_equals_interior_value(kind):
    """With all-ones input and weights and no bias, a partial conv (pool) gives its interior
    value everywhere: the valid taps' sum re-weighted to the whole window's."""
    model = make(kind)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(0.0 if name.endswith("bias") else 1.0)
    x = torch.ones(1, 4, 9, 11)
    out = model(x)
    inner = torch.where(interior(model, x), out, -torch.inf).amax((-2, -1), keepdim=True)  # per channel
    convert_padding(model, "partial")
    out = model(x)
    torch.testing.assert_close(out, inner.expand_as(out))


@pytest.mark.parametrize("conv", [nn.Conv2d(2, 3, 3, padding=1), StdConv2d(2, 3, 3, padding=1, bias=True)])
def test_partial_hand_computed_ratio(conv):
    """3x3, pad 1 on 4x4: window area 9 over 4 valid taps at corners, 6 at edges."""
    r = torch.tensor([3 / 2, 1, 1, 3 / 2])
    ratio = r[:, None] * r[None, :]
    model = nn.Sequential(conv).eval()
    x = torch.randn(1, 2, 4, 4)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1)), effective_weight(conv), None) * ratio + conv.bias.view(-1, 1, 1)
    convert_padding(model, "partial")
    torch.testing.assert_close(model(x), expected)


def test_partial_hand_computed_ratio_same_stride2():
    """TF "same", k=3, s=2 on 5x5 pads 1 each side; windows at 0, 2, 4 see 2, 3, 2 valid rows."""
    conv = Conv2dSame(2, 3, 3, stride=2)
    r = torch.tensor([3 / 2, 1, 3 / 2])
    model = nn.Sequential(conv).eval()
    x = torch.randn(1, 2, 5, 5)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1)), conv.weight, None, 2) * r[:, None] * r + conv.bias.view(-1, 1, 1)
    convert_padding(model, "partial")
    torch.testing.assert_close(model(x), expected)


def test_reflect_falls_back_to_replicate_with_one_warning():
    model = nn.Sequential(nn.Conv2d(2, 3, 5, padding=2), nn.Conv2d(3, 3, 3, padding=1)).eval()
    x = torch.randn(1, 2, 2, 2)  # too small for the first layer's reflect, not for the second's
    hidden = reference(model[:1], x, lambda x, p: F.pad(x, p, mode="replicate"))
    expected = reference(model[1:], hidden, lambda x, p: F.pad(x, p, mode="reflect"))
    convert_padding(model, "reflect")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            torch.testing.assert_close(model(x), expected)
    assert [str(w.message).split(":")[0] for w in caught] == ["0"]
    assert caught[0].category is UserWarning and "replicate" in str(caught[0].message)


@pytest.mark.parametrize("mode", PAD_MODES)
def test_negative_pads_crop_as_f_pad_does(mode):
    """timm's NASNet shifts with nn.ZeroPad2d((-1, 1, -1, 1))."""
    model = nn.Sequential(nn.ZeroPad2d((-1, 1, -1, 2)))
    convert_padding(model, mode)
    x = torch.randn(1, 2, 5, 6)
    torch.testing.assert_close(model(x), F.pad(x, (-1, 1, -1, 2), mode=mode))


def test_circular_wraps_beyond_the_input_size():
    """Pad 2 on a 2x2 input is the input tiled 3x3 (F.pad refuses it)."""
    conv = nn.Conv2d(2, 3, 5, padding=2)
    model = nn.Sequential(conv).eval()
    x = torch.randn(1, 2, 2, 2)
    convert_padding(model, "circular")
    torch.testing.assert_close(model(x), F.conv2d(x.repeat(1, 1, 3, 3), conv.weight, conv.bias))


@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (0, 1, 0, 1), (2, 1, 0, 3), (3, 0, 2, 2)])
def test_circular_keeps_channels_last(pads):
    """Channels-last in, channels-last out (F.pad's circular mode returns NCHW), same values."""
    conv = nn.Conv2d(4, 4, 3, groups=4)
    conv.padding = 0
    model = nn.Sequential(nn.ConstantPad2d(pads, 0.0), conv).eval()
    convert_padding(model, "circular")
    x = torch.randn(2, 4, 5, 6).contiguous(memory_format=torch.channels_last)
    padded = model[0](x)
    assert padded.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(padded, F.pad(x.contiguous(), pads, mode="circular"))


@pytest.mark.parametrize("mode", MODES)
def test_keeps_parameters_dtype_requires_grad_training(mode):
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), ScaledStdConv2dSame(3, 3, 3, stride=2),
                          StdConv2d(3, 3, 3)).double().train()
    model[1].bias.requires_grad_(False)
    params = list(model.parameters())
    convert_padding(model, mode, input_size=(2, 8, 8))
    assert [type(m) for m in model] == [PaddedConv2d, PaddedScaledStdConv2d, PaddedStdConv2d]
    assert all(a is b for a, b in zip(model.parameters(), params))  # optimizers keep working
    assert not model[1].bias.requires_grad and model[1].weight.requires_grad
    assert all(m.training for m in model.modules())
    model(torch.randn(1, 2, 8, 8, dtype=torch.float64)).sum().backward()
    assert model[0].weight.grad is not None


def test_standardised_weight_is_kept():
    conv = ScaledStdConv2d(2, 3, 3, gamma=1.7, eps=1e-4)
    model = nn.Sequential(conv)
    convert_padding(model, "replicate")
    assert model[0].eps == 1e-4 and model[0].scale == conv.scale
    torch.testing.assert_close(effective_weight(model[0]), effective_weight(conv))


@pytest.mark.parametrize("mode", MODES)
def test_pickle_deepcopy_and_state_dict_both_ways(mode):
    original = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), ScaledStdConv2dSame(3, 3, 3, stride=2),
                             AvgPool2dSame(3, 2)).eval()
    converted = converted_copy(original, mode, input_size=(2, 9, 9))
    x = torch.randn(1, 2, 9, 9)
    out = converted(x)
    for clone in (pickle.loads(pickle.dumps(converted)), copy.deepcopy(converted)):
        torch.testing.assert_close(clone(x), out)
    assert converted.state_dict().keys() == original.state_dict().keys()
    fresh = converted_copy(original, mode, input_size=(2, 9, 9))
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(original.state_dict())
    torch.testing.assert_close(fresh(x), out)
    original.load_state_dict(converted.state_dict())


def test_converted_copy_leaves_the_model():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1))
    before = state(model)
    copy_ = converted_copy(model, "reflect")
    assert isinstance(copy_[0], PaddedConv2d) and copy_[0].weight is not model[0].weight
    assert_unchanged(model, before)


def test_named_layers_only_and_shared_modules():
    shared = nn.Conv2d(2, 2, 3, padding=1)
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Sequential(shared, shared), nn.Conv2d(2, 2, 1))
    summary = convert_padding(model, "reflect", ["1.0", "2"])
    assert [c.name for c in summary.changed] == ["1.0"] and summary.skipped == [("2", "pads nothing")]
    assert type(model[0]) is nn.Conv2d and isinstance(model[1][0], PaddedConv2d)
    assert model[1][0] is model[1][1]


def test_conv2d_same_export_is_converted_with_its_pad():
    model = nn.Sequential(Conv2dSameExport(2, 3, 3, stride=2)).eval()
    x = torch.randn(1, 2, 9, 9)
    model(x)  # creates its ZeroPad2d child
    original = copy.deepcopy(model)
    summary = convert_padding(model, "replicate")
    assert [c.name for c in summary.changed] == ["0"]
    torch.testing.assert_close(model(x), reference(original, x, lambda x, p: F.pad(x, p, mode="replicate")))


def test_unsupported_layers_are_skipped_unless_requested():
    model = nn.Sequential(nn.AvgPool2d(3, 2, 1, ceil_mode=True), CondConv2d(2, 2, 3, padding=1),
                          nn.ZeroPad2d(1), nn.Conv2d(2, 2, 3, padding=1))
    summary = convert_padding(copy.deepcopy(model), "partial")
    assert [c.name for c in summary.changed] == ["0", "3"]  # ceil_mode is fine for partial
    assert [s.name for s in summary.skipped] == ["2", "1"]
    summary = convert_padding(copy.deepcopy(model), "reflect")
    assert [c.name for c in summary.changed] == ["2", "3"]
    assert "ceil_mode" in dict(summary.skipped)["0"]
    before = state(model)
    for mode, names, match in [("reflect", ["3", "0"], "ceil_mode"), ("partial", ["2"], "pad module"),
                               ("reflect", ["3", "1"], "CondConv2d")]:
        with pytest.raises(ValueError, match=match):
            convert_padding(model, mode, names)
        assert_unchanged(model, before)


@pytest.mark.parametrize("mode, layers, error, match", [
    ("zeros", None, ValueError, "valid modes: reflect, replicate, circular, partial"),
    ("reflect", ["0", "nope", "1.x"], ValueError, "'nope', '1.x'"),
    ("reflect", ["0", "1"], ValueError, "'1' \\(BatchNorm2d\\)"),
    ("reflect", "0", TypeError, "iterable of layer names"),
])
def test_bad_arguments_leave_the_model_unchanged(mode, layers, error, match):
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2))
    before = state(model)
    with pytest.raises(error, match=match):
        convert_padding(model, mode, layers)
    assert_unchanged(model, before)


def test_a_bare_layer_is_refused():
    with pytest.raises(ValueError, match="wrap it"):
        convert_padding(nn.Conv2d(2, 2, 3, padding=1), "reflect")


# --- timm models end to end ---------------------------------------------------------

@pytest.fixture(scope="module", params=["resnet18", "tf_efficientnet_lite0", "mobilenetv3_large_100"])
def timm_model(request):
    torch.manual_seed(0)
    return timm.create_model(request.param).eval()


def padded_layers(model: nn.Module) -> set[str]:
    """Padded layers, from the layers' own attributes."""
    names = set()
    for name, m in model.named_modules():
        if isinstance(m, Conv2dSame):
            padded = max(m.kernel_size) > 1
        elif isinstance(m, nn.Conv2d):
            padded = any(p > 0 for p in m._reversed_padding_repeated_twice)
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            padded = m.padding not in (0, (0, 0))
        else:
            padded = False
        if padded:
            names.add(name)
    return names


def too_small_for_reflect(model: nn.Module, x: torch.Tensor) -> set[str]:
    """Converted layers whose input at ``x`` is not larger than their padding (original model's view)."""
    names, hooks = set(), []

    def check(name):
        def hook(module, args):
            left, right, top, bottom = layer_padding(module, tuple(args[0].shape[-2:])).pads
            h, w = args[0].shape[-2:]
            if max(left, right) >= w or max(top, bottom) >= h:
                names.add(name)
        return hook

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_pre_hook(check(name)))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return names


@pytest.mark.parametrize("mode", SAME_SIZE_MODES)
def test_timm_models(timm_model, mode):
    summary = convert_padding(model := copy.deepcopy(timm_model), mode)
    reported = {c.name for c in summary.changed} | {s.name for s in summary.skipped}
    assert reported == padded_layers(timm_model)
    assert all("MaxPool" in type(timm_model.get_submodule(s.name)).__name__ for s in summary.skipped)
    assert model.state_dict().keys() == timm_model.state_dict().keys()
    model.load_state_dict(timm_model.state_dict())
    small = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model(torch.randn(1, 3, 224, 224))
        assert out.shape == (1, 1000) and out.isfinite().all()
        model(small)
        model(small)
    warned = [str(w.message).split(":")[0] for w in caught if "reflect padding" in str(w.message)]
    if mode == "reflect":
        expected = too_small_for_reflect(timm_model, small)
        assert expected and sorted(warned) == sorted(expected)  # one warning per layer
    else:
        assert not warned


def test_layers_of_a_report_lose_their_border_pans():
    """``layers=report``: only the padded PAN layers are switched; afterwards none of them holds a
    border PAN, the other layers are untouched, and 1x1 PAN layers are listed as skipped."""
    import dataclasses

    from pan_repair import find_pans
    from pan_repair.detect.report import Pan

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(4, 4, 1)).eval()
    with torch.no_grad():
        model[0].weight.zero_()  # layer "0" answers every image with its bias: a flat map, no content edge
        model[2].weight[1] = 0
        model[2].weight[1, :, 0, :] = 2.0  # a planted top-border detector in layer "2"
    report = find_pans(model, data=torch.rand(8, 1, 16, 16), position_threshold=1.0)
    assert {p.layer for p in report.of_kind("border")} >= {"2"}
    pans = dataclasses.replace(report, pans=[Pan("2", 1, ("top",), 1, 5.0, "border"),
                                             Pan("4", 0, (), 1, 0.95, "position")])
    summary = convert_padding(model, "replicate", layers=pans)
    assert [c.name for c in summary.changed] == ["2"]
    assert [s.name for s in summary.skipped] == ["4"] and "pads nothing" in summary.skipped[0].reason
    assert type(model[0]) is nn.Conv2d  # not a PAN layer: left as it was
    after = find_pans(model, (1, 16, 16), position_threshold=1.0)
    assert not [p for p in after.of_kind("border") if p.layer == "2"]


def test_a_report_of_another_model_is_refused():
    from pan_repair.detect.report import Pan, PanReport

    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1))
    foreign = PanReport([Pan("features.3", 0, ("top",), 1, 5.0, "border")], [], (1, 16, 16), 2.7, 0.9)
    with pytest.raises(ValueError, match="another model"):
        convert_padding(model, "replicate", layers=foreign)
    assert type(model[0]) is nn.Conv2d


def _masked_and_weight_normed() -> nn.Sequential:
    from torch.nn.utils import prune
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                          torch.nn.utils.weight_norm(nn.Conv2d(4, 3, 3, padding=1))).eval()
    mask = torch.ones_like(model[0].weight)
    mask[1] = 0
    prune.custom_from_mask(model[0], "weight", mask)
    prune.custom_from_mask(model[0], "bias", torch.tensor([1.0, 0.0, 1.0, 1.0]))
    return model


def test_conversion_keeps_pruning_masks_and_weight_norm():
    """A model masked by prune_pans (torch.nn.utils.prune) or under weight_norm converts: the
    masks and the weight-norm hooks come along (the same tensors), the state-dict keys stay, the
    masked channel stays silent and the interior is unchanged."""
    model = _masked_and_weight_normed()
    x = torch.randn(1, 2, 8, 8)
    expected, keys = model(x), list(model.state_dict())
    summary = convert_padding(model, "replicate")
    assert [c.name for c in summary.changed] == ["0", "2"]
    assert list(model.state_dict()) == keys
    assert model[0](x)[:, 1].abs().max() == 0  # the masked channel
    torch.testing.assert_close(model(x)[..., 2:-2, 2:-2], expected[..., 2:-2, 2:-2])
    model(x).sum().backward()
    assert model[0].weight_orig.grad is not None and model[2].weight_g.grad is not None


def test_converted_copy_of_a_masked_model_mid_training():
    """converted_copy after a training forward of a masked / weight-normed model (non-leaf
    computed weights, which copy.deepcopy refuses): an independent converted copy, the original
    untouched."""
    model = _masked_and_weight_normed().train()
    x = torch.randn(2, 2, 8, 8)
    model(x).sum().backward()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    twin = converted_copy(model, "circular")
    assert isinstance(twin[0], PaddedConv2d) and type(model[0]) is nn.Conv2d
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert twin[0].weight_orig is not model[0].weight_orig
    torch.testing.assert_close(twin.eval()(x)[..., 2:-2, 2:-2], model.eval()(x)[..., 2:-2, 2:-2])


# --- full convolution (F-Conv) ----------------------------------------------------------

FULL_CONVS = {
    "conv": lambda: nn.Conv2d(4, 6, 3, padding=1),
    "conv_tuple_dilated": lambda: nn.Conv2d(4, 6, (3, 5), padding=(2, 4), dilation=2),
    "conv_stride2": lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1),
    "conv2d_same": lambda: Conv2dSame(4, 6, 3, stride=2),
    "conv2d_same_export": lambda: Conv2dSameExport(4, 6, 5, stride=2, bias=False),
    "scaled_std_conv_same": lambda: ScaledStdConv2dSame(4, 6, 3, stride=2),
}


@pytest.mark.parametrize("kind", FULL_CONVS)
def test_full_is_zero_padding_of_dilation_times_kernel_minus_one(kind):
    """Every kind of conv, TF-"same" ones included: zeros d(k-1) a side, the same parameters and keys."""
    torch.manual_seed(0)
    model = nn.Sequential(FULL_CONVS[kind]()).eval()
    conv, keys = model[0], model.state_dict().keys()
    weight = effective_weight(conv).detach()
    x = torch.randn(2, 4, 11, 10)
    summary = convert_padding(model, "full", input_size=(4, 11, 10))
    assert [c.new for c in summary.changed] == [f"{type(model[0]).__name__}(full)"]
    (kh, kw), (dh, dw) = conv.kernel_size, conv.dilation
    pads = (dw * (kw - 1),) * 2 + (dh * (kh - 1),) * 2
    assert layer_padding(model[0], (11, 10)) == layer_padding(model[0], (1, 1)) == Padding(pads, "zeros")
    expected = F.conv2d(F.pad(x, pads), weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)
    torch.testing.assert_close(model(x), expected)
    assert model[0].weight is conv.weight and model.state_dict().keys() == keys


def test_full_grows_each_conv_by_kernel_minus_one_and_keeps_the_interior():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 9, 8)
    before = conv(x)
    model = nn.Sequential(conv)
    convert_padding(model, "full", input_size=(2, 9, 8))
    after = model(x)
    assert after.shape[-2:] == (11, 10)
    # the original's outputs out of reach of its padding, one pixel further in (shifted by d(k-1)/2 = 1)
    torch.testing.assert_close(after[..., 2:-2, 2:-2], before[..., 1:-1, 1:-1])
    stack = nn.Sequential(*(nn.Conv2d(2, 2, k, padding=k // 2) for k in (3, 5, 3)))
    convert_padding(stack, "full", input_size=(2, 9, 8))
    assert stack(x).shape[-2:] == (9 + 2 + 4 + 2, 8 + 2 + 4 + 2)


def test_full_avg_pool_counts_the_zeros_and_max_pool_stays():
    model = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), nn.MaxPool2d(3, 1, 1), nn.ZeroPad2d(1),
                          nn.Conv2d(2, 2, 3))
    x = torch.randn(1, 2, 6, 6)
    summary = convert_padding(model, "full", input_size=(2, 6, 6))
    assert [c.name for c in summary.changed] == ["0"]
    assert [s.name for s in summary.skipped] == ["1", "2"]  # -inf frame; a pad module cannot know the kernel
    torch.testing.assert_close(model[0](x), F.avg_pool2d(F.pad(x, (2, 2, 2, 2)), 3, 1))
    with pytest.raises(ValueError, match=r"cannot switch to 'full': '2' \(full padding is d\(k-1\)"):
        convert_padding(model, "full", ["2"], input_size=(2, 6, 6))


def test_full_and_back():
    """A full layer is not switched again; switched to another mode, it gets its original padding."""
    model = nn.Sequential(Conv2dSame(2, 2, 3, stride=2), nn.Conv2d(2, 2, 3, padding=1)).eval()
    x = torch.randn(1, 2, 9, 9)
    expected = converted_copy(model, "circular")(x)
    convert_padding(model, "full", input_size=(2, 9, 9))
    again = convert_padding(model, "full", input_size=(2, 9, 9))
    assert not again.changed and {s.reason for s in again.skipped} == {"already full"}
    convert_padding(model, "circular")
    torch.testing.assert_close(model(x), expected)


class _PositionEmbedding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.pos = nn.Parameter(torch.zeros(1, 2, 8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.pos


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


def _head(*layers: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), *layers)


@pytest.mark.parametrize("make, match", [
    (lambda: _head(nn.Flatten(), nn.Linear(128, 3)), r"layer '3' \(Linear\) needs a fixed spatial size and fails"),
    (lambda: _head(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(2, 3)),
     r"layer '2' \(AvgPool2d\) needs a fixed spatial size: it reduces the whole \(8, 8\) map to 1x1 but not the "
     r"grown \(10, 10\) map"),
    (lambda: _head(nn.MaxPool2d(8), nn.AdaptiveAvgPool2d(1)), r"layer '2' \(MaxPool2d\)"),
    (lambda: _head(nn.Conv2d(2, 3, 8), nn.AdaptiveMaxPool2d(1)), r"layer '2' \(Conv2d\)"),
    (lambda: nn.Sequential(_PositionEmbedding(), nn.AdaptiveAvgPool2d(1)), r"layer '0' \(_PositionEmbedding\)"),
    (lambda: nn.Sequential(_Residual(), nn.AdaptiveAvgPool2d(1)), r"layer '0' \(_Residual\)"),
])
def test_full_refuses_layers_that_need_a_fixed_size_and_leaves_the_model(make, match):
    model = make()
    before = state(model)
    with pytest.raises(ValueError, match=match):
        convert_padding(model, "full", input_size=(1, 8, 8))
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match=r"without input_size=\(C, H, W\)"):
        convert_padding(model, "full")
    assert_unchanged(model, before)


def test_full_accepts_global_pooling_and_timm_same_padding():
    model = _head(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    convert_padding(model, "full", input_size=(1, 8, 8))
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    net = timm.create_model("mobilenetv3_small_050", features_only=False)
    before = state(net)
    with pytest.raises(ValueError, match=r"cannot switch to 'full': layer 'blocks\.[0-9.]+' \(\w+\) needs a fixed"):
        convert_padding(net, "full")  # residual adds; the size comes from its pretrained_cfg
    assert_unchanged(net, before)
    vgg = nn.Sequential(Conv2dSame(3, 4, 3, stride=2), nn.ReLU(), StdConv2d(4, 4, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    convert_padding(vgg, "full", input_size=(3, 15, 15))
    assert vgg[2](vgg[0](torch.randn(1, 3, 15, 15))).shape[-2:] == (11, 11)  # 15 -> 9 (stride 2) -> 11


def test_detector_scores_a_full_model_as_zero_padding_by_d_k_minus_one():
    """What find_pans reports on an F-Conv model (padding_switch's docstring): the border of a full
    layer is scored exactly as that of a conv zero-padded by d(k-1) by hand (a zero frame, border
    PANs possible); positions are measured against the circular twin of the original padding."""
    from pan_repair import find_pans

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2)).eval()
    by_hand = copy.deepcopy(model)
    for i in (0, 2):
        by_hand[i].padding = (2, 2)
        by_hand[i]._reversed_padding_repeated_twice = [2, 2, 2, 2]
    full = converted_copy(model, "full", input_size=(1, 16, 16))
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(full(x), by_hand(x))
    flat = torch.linspace(-1.5, 1.5, 8).view(8, 1, 1, 1).expand(8, 1, 16, 16)  # no content edge
    report, hand = (find_pans(m, data=flat, border_threshold=1.5) for m in (full, by_hand))
    assert [(info.pads, info.padding_mode, info.makes_border) for info in report.layers] == \
        [((2, 2, 2, 2), "zeros", True)] * 2
    for layer in ("0", "2"):
        assert report.scores[layer]["border"] == hand.scores[layer]["border"]
        assert max(report.scores[layer]["border"]) > 0
    border = [(p.layer, p.channel, p.border_score) for p in report.of_kind("border")]
    assert border and border == [(p.layer, p.channel, p.border_score) for p in hand.of_kind("border")]
