"""prune_pans: masked PAN channels output exactly zero, masks are reversible, removal gives a
smaller model computing what the masked one computes, and bad reports leave the model alone."""
import copy

import pytest
import torch
from torch import nn

from pan_repair import LayerInfo, Pan, PanReport, SmallCNN
from pan_repair.repair.pruning import (
    PanMask,
    apply_state_dict_masks,
    clean_state_dict,
    conv_bn_pairs,
    prune_pans,
    remove_pan_masks,
    undo_pan_masks,
)

torch.set_num_threads(2)


def _trained_looking(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine parameters, as after training (non-trivial shifts)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=gen) * 2 - 1)
    return model.eval()


def _report(model: nn.Module, input_size, chans: dict[str, list[int]], kind: str = "border") -> PanReport:
    layers = [LayerInfo(name, type(m).__name__, m.out_channels, m.padding_mode,
                        tuple(m._reversed_padding_repeated_twice), True)
              for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    pans = [Pan(layer, c, ("top",), 1, 5.0, kind, 5.0, 0.0) for layer, cs in chans.items() for c in cs]
    return PanReport(pans, layers, tuple(input_size), 2.7, 0.95)


def _assert_same_outputs(a: nn.Module, b: nn.Module, shape: tuple[int, ...], tol: float) -> None:
    """``a`` computes what ``b`` does (to ``tol``), on a random batch of ``shape``."""
    x = torch.randn(*shape)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=tol, rtol=tol)


def _masked_and_removed(model: nn.Module, report: PanReport):
    """Copies of ``model`` pruned by ``report`` in mask mode and in remove mode, and the latter's
    summary."""
    masked, removed = copy.deepcopy(model), copy.deepcopy(model)
    prune_pans(masked, report)
    return masked, removed, prune_pans(removed, report, mode="remove")


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return _trained_looking(SmallCNN(depth=4, width=8, num_classes=(3, 2)))


CHANS = {"features.0": [1, 3], "features.6": [0], "features.9": [2, 7]}
SIZE = (1, 24, 24)


def _post_bn(model: nn.Module, bn_index: int, x: torch.Tensor) -> torch.Tensor:
    out = {}
    handle = model.features[bn_index].register_forward_hook(lambda m, i, o: out.setdefault("y", o.clone()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return out["y"]


def test_pairs_found_by_tensor_identity():
    model = small_cnn()
    assert conv_bn_pairs(model, SIZE) == {f"features.{i}": f"features.{i + 1}" for i in (0, 3, 6, 9)}


@pytest.mark.parametrize("train_mode", [False, True])
def test_masked_channels_output_zero_after_batchnorm(train_mode):
    model = small_cnn()
    before = copy.deepcopy(model)
    summary = prune_pans(model, _report(model, SIZE, CHANS))
    assert summary.count == 5 and summary.batchnorms["features.0"] == "features.1"
    x = torch.randn(6, 1, 24, 24)
    model.train(train_mode)
    before.train(train_mode)
    for conv_i, chans in ((0, [1, 3]), (6, [0]), (9, [2, 7])):
        y = _post_bn(model, conv_i + 1, x)
        assert torch.all(y[:, chans] == 0), "masked channels must be exactly zero after BatchNorm"
        keep = [c for c in range(8) if c not in chans]
        if conv_i == 0:  # upstream of any mask: other channels unchanged
            ref = _post_bn(before, 1, x)
            torch.testing.assert_close(y[:, keep], ref[:, keep])
        assert y[:, keep].abs().sum() > 0


def test_bias_is_masked_too():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=True), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(6, 2)).eval()
    with torch.no_grad():
        model[0].bias.fill_(0.5)
    summary = prune_pans(model, _report(model, (3, 16, 16), {"0": [2]}))
    assert summary.batchnorms == {}
    with torch.no_grad():
        y = model[0](torch.randn(2, 3, 16, 16))
    assert torch.all(y[:, 2] == 0) and torch.all(y[:, 1] != 0)


def test_masks_are_torch_pruning_and_reversible():
    model = small_cnn()
    original = copy.deepcopy(model.state_dict())
    prune_pans(model, _report(model, SIZE, CHANS))
    state = model.state_dict()
    # as torch's pruning: <name>_orig parameters and <name>_mask buffers until made permanent
    for key in ("features.0.weight", "features.1.weight", "features.1.bias"):
        assert key + "_orig" in state and key + "_mask" in state and key not in state
    assert any(isinstance(h, PanMask) for h in model.features[0]._forward_pre_hooks.values())
    torch.testing.assert_close(state["features.0.weight_orig"], original["features.0.weight"])
    # undo: the original model back
    undone = undo_pan_masks(model)
    assert "features.0.weight" in undone and "features.10.bias" in undone
    assert set(model.state_dict()) == set(original)
    for key, value in original.items():
        torch.testing.assert_close(model.state_dict()[key], value)
    assert isinstance(model.features[0].weight, nn.Parameter)


def test_permanent_removal_of_masks_and_clean_state_dict():
    model = small_cnn()
    prune_pans(model, _report(model, SIZE, CHANS))
    x = torch.randn(3, 1, 24, 24)
    with torch.no_grad():
        masked_out = model(x)
    clean = clean_state_dict(model)
    assert not any(k.endswith(("_orig", "_mask")) for k in clean)
    fresh = small_cnn()
    fresh.load_state_dict(clean)  # loads into the unmodified architecture
    with torch.no_grad():
        for a, b in zip(fresh(x), masked_out):
            torch.testing.assert_close(a, b)
    done = remove_pan_masks(model)
    assert "features.0.weight" in done
    assert set(model.state_dict()) == set(clean)
    assert torch.all(model.features[0].weight[[1, 3]] == 0)
    with torch.no_grad():
        for a, b in zip(model(x), masked_out):
            torch.testing.assert_close(a, b)


def test_masked_checkpoint_loads_after_applying_its_masks():
    model = small_cnn()
    prune_pans(model, _report(model, SIZE, CHANS))
    state = model.state_dict()
    fresh = small_cnn()
    with pytest.raises(RuntimeError):
        fresh.load_state_dict(state)
    applied = apply_state_dict_masks(fresh, state)
    assert "features.0.weight" in applied
    fresh.load_state_dict(state)
    x = torch.randn(2, 1, 24, 24)
    with torch.no_grad():
        for a, b in zip(fresh(x), model(x)):
            torch.testing.assert_close(a, b)


def test_masking_twice_combines():
    model = small_cnn()
    prune_pans(model, _report(model, SIZE, {"features.0": [1]}))
    prune_pans(model, _report(model, SIZE, {"features.0": [4]}))
    assert torch.all(model.features[0].weight[[1, 4]] == 0)
    assert model.features[0].weight[[0, 2, 3]].abs().sum() > 0
    undo_pan_masks(model)
    assert model.features[0].weight[[1, 4]].abs().sum() > 0


def test_kinds_and_layers_select():
    model = small_cnn()
    report = _report(model, SIZE, {"features.0": [1]}, kind="border")
    report.pans.append(Pan("features.3", 2, ("top", "bottom"), 1, 0.99, "position", 0.0, 0.99))
    summary = prune_pans(copy.deepcopy(model), report, kinds=("position",))
    assert summary.channels == {"features.3": [2]}
    summary = prune_pans(copy.deepcopy(model), report, layers=["features.0"])
    assert summary.channels == {"features.0": [1]}


def test_remove_gives_smaller_model_computing_the_masked_outputs():
    model = small_cnn()
    report = _report(model, SIZE, CHANS)
    masked, removed, summary = _masked_and_removed(model, report)
    assert summary.not_removable == {} and summary.masked == {}
    assert summary.removed == CHANS
    assert summary.params_after < summary.params_before
    assert removed.features[0].out_channels == 6 and removed.features[1].num_features == 6
    assert removed.features[3].in_channels == 6 and removed.features[9].out_channels == 6
    assert removed.heads[0].in_features == 6 and removed.heads[1].in_features == 6
    assert sum(p.numel() for p in removed.parameters()) == summary.params_after
    _assert_same_outputs(removed, masked, (8, 1, 24, 24), 1e-5)
    assert removed.training is False


class _Mobile(nn.Module):
    """stem -> depthwise (multiplier 2) -> pointwise -> residual conv -> pool -> linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, groups=8, bias=True), nn.BatchNorm2d(16), nn.SiLU())
        self.pw = nn.Sequential(nn.Conv2d(16, 12, 1, bias=False), nn.BatchNorm2d(12), nn.ReLU())
        self.res = nn.Conv2d(12, 12, 3, padding=1)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        x = self.pw(self.dw(self.stem(x)))
        x = x + self.res(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_remove_through_depthwise_and_residual_fallback():
    torch.manual_seed(0)
    model = _trained_looking(_Mobile())
    report = _report(model, (3, 16, 16), {"stem.0": [0, 5], "pw.0": [1], "res": [3]})
    masked, removed, summary = _masked_and_removed(model, report)
    # the depthwise conv propagates: its channels 0,1 and 10,11 go too; its constant output in the
    # masked model is folded into the pointwise conv's (new) bias
    assert summary.removed == {"stem.0": [0, 5], "dw.0": [0, 1, 10, 11]}
    assert removed.dw[0].groups == 6 and removed.dw[0].out_channels == 12 and removed.pw[0].in_channels == 12
    assert "add" in summary.not_removable["pw.0"] and "add" in summary.not_removable["res"]
    assert summary.masked == {"pw.0": [1], "res": [3]}
    _assert_same_outputs(removed, masked, (4, 3, 16, 16), 1e-5)
    skipped = copy.deepcopy(model)
    summary = prune_pans(skipped, report, mode="remove", fallback="skip")
    assert summary.masked == {} and set(summary.not_removable) == {"pw.0", "res"}


def test_remove_reports_untraceable_models_and_masks_instead():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            y = self.conv(x)
            if y.sum() > 0:  # data-dependent control flow: not traceable
                y = y * 2
            return self.head(y.mean((2, 3)))

    model = Dynamic().eval()
    before = copy.deepcopy(model.state_dict())
    summary = prune_pans(model, _report(model, (1, 12, 12), {"conv": [1]}), mode="remove")
    assert "torch.fx" in summary.not_removable["conv"]
    assert summary.masked == {"conv": [1]}
    assert torch.equal(model.state_dict()["conv.weight_orig"], before["conv.weight"])


@pytest.mark.parametrize("mode", ["mask", "remove"])
@pytest.mark.parametrize("bad, match", [
    ({"features.42": [0]}, "features.42"),
    ({"features.3": [8]}, "channel 8 out of range"),
    ({"features.1": [0]}, "not a convolution"),
])
def test_report_from_another_model_is_rejected_untouched(mode, bad, match):
    model = small_cnn()
    before = copy.deepcopy(model.state_dict())
    modules_before = [type(m) for m in model.modules()]
    report = _report(model, SIZE, {"features.0": [1], **bad})
    with pytest.raises(ValueError, match=match):
        prune_pans(model, report, mode=mode)
    assert list(model.state_dict()) == list(before)
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value)
    assert [type(m) for m in model.modules()] == modules_before
    assert not model.features[0]._forward_pre_hooks


def test_report_with_other_filter_counts_is_rejected():
    model = small_cnn()
    other = SmallCNN(depth=4, width=16, num_classes=(3, 2))
    report = _report(other, SIZE, {"features.0": [1]})
    with pytest.raises(ValueError, match="16 filters in the report but 8"):
        prune_pans(model, report)


def test_bad_arguments():
    model = small_cnn()
    report = _report(model, SIZE, {"features.0": [1]})
    with pytest.raises(ValueError, match="mode"):
        prune_pans(model, report, mode="zap")
    with pytest.raises(ValueError, match="kind"):
        prune_pans(model, report, kinds=("edge",))
    with pytest.raises(ValueError, match="fallback"):
        prune_pans(model, report, mode="remove", fallback="drop")
    assert not model.features[0]._forward_pre_hooks


def test_mode_restored_and_works_on_a_real_report():
    from pan_repair import find_pans
    model = small_cnn()
    model.train()
    report = find_pans(model, SIZE, n_patterns=2, position_threshold=0.2)
    summary = prune_pans(model, report)
    assert model.training and all(m.training for m in model.modules())
    assert summary.count == report.count


def test_docstring_example():
    import doctest

    import pan_repair.repair.pruning
    result = doctest.testmod(pan_repair.repair.pruning, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_remove_then_mask_a_depthwise_conv_that_lost_channels():
    """A depthwise conv holding PANs of its own cannot be removed, so it is masked; when the
    removal of the layer feeding it has already cut some of its channels, its masks use the new
    indices (and skip the channels already gone): removed and masked models agree."""
    torch.manual_seed(0)
    model = _trained_looking(_Mobile())
    # stem channel 5 removed -> dw outputs 10, 11 go; dw's PANs 11 (gone), 12, 15 (now 10, 13)
    report = _report(model, (3, 16, 16), {"stem.0": [5], "dw.0": [11, 12, 15]})
    masked, removed, summary = _masked_and_removed(model, report)
    assert summary.removed == {"stem.0": [5], "dw.0": [10, 11]}
    assert "depthwise" in summary.not_removable["dw.0"]
    assert summary.masked == {"dw.0": [10, 13]}
    assert removed.dw[0].out_channels == 14
    _assert_same_outputs(removed, masked, (4, 3, 16, 16), 1e-5)
    text = str(summary)
    assert "dw.0 (+ dw.1): masked [10, 13]; channels [10, 11] removed with the layer feeding it" in text
    assert "stem.0 (+ stem.1): removed [5]" in text
    # every PAN of dw's removed channels: nothing left to mask there
    summary = prune_pans(copy.deepcopy(model), _report(model, (3, 16, 16), {"stem.0": [5], "dw.0": [10, 11]}),
                         mode="remove")
    assert summary.masked == {} and summary.removed["dw.0"] == [10, 11]
    # fallback="skip": dw's PANs stay as they are, so the folded constants are the unmasked ones
    only_stem = copy.deepcopy(model)
    prune_pans(only_stem, _report(model, (3, 16, 16), {"stem.0": [5]}))
    skipped = copy.deepcopy(model)
    summary = prune_pans(skipped, report, mode="remove", fallback="skip")
    assert summary.masked == {}
    _assert_same_outputs(skipped, only_stem, (4, 3, 16, 16), 1e-5)


def test_remove_puts_the_modules_back_when_masking_the_rest_fails(monkeypatch):
    """Fault injection: a failure after the cut (planning the masks of the layers left over)
    leaves the model as it was."""
    import pan_repair.repair.pruning as pruning
    torch.manual_seed(0)
    model = _trained_looking(_Mobile())
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def fail(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(pruning, "_plan_masks", fail)
    with pytest.raises(RuntimeError, match="injected"):
        prune_pans(model, _report(model, (3, 16, 16), {"stem.0": [5], "dw.0": [12]}), mode="remove")
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert model.stem[0].out_channels == 8 and model.dw[0].out_channels == 16


def test_remove_traces_through_timm_same_padding_and_batchnorm_act():
    """tf_efficientnet_lite0 (Conv2dSame, BatchNormAct2d: layers fx cannot trace into) is traced
    with them as leaves. An expansion conv's PANs are cut, and the depthwise convs after them
    follow; a depthwise conv's own PANs are cut back into the expansion conv that alone feeds
    them; a projection conv that feeds a residual add is masked."""
    import timm
    torch.manual_seed(0)
    model = _trained_looking(timm.create_model("tf_efficientnet_lite0", num_classes=4))
    chans = {"blocks.1.0.conv_pw": [0, 7], "blocks.2.1.conv_pw": [3], "blocks.1.0.conv_dw": [2, 5, 7],
             "blocks.2.1.conv_pwl": [1]}
    layers = [LayerInfo(name, type(m).__name__, m.out_channels, "zeros", (1, 1, 1, 1), True)
              for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    report = PanReport([Pan(layer, c, ("top",), 1, 5.0, "border", 5.0, 0.0) for layer, cs in chans.items() for c in cs],
                       layers, (3, 64, 64), 2.7, 0.95)
    masked, removed, summary = _masked_and_removed(model, report)
    assert summary.removed == {"blocks.1.0.conv_pw": [0, 2, 5, 7], "blocks.1.0.conv_dw": [0, 2, 5, 7],
                               "blocks.2.1.conv_pw": [3], "blocks.2.1.conv_dw": [3]}
    assert "residual add" in summary.not_removable["blocks.2.1.conv_pwl"]
    assert summary.masked == {"blocks.2.1.conv_pwl": [1]}
    block = removed.blocks[1][0]
    assert block.conv_pw.out_channels == block.bn1.num_features == block.conv_dw.groups == 92
    assert block.conv_pwl.in_channels == 92 and summary.params_after < summary.params_before
    _assert_same_outputs(removed, masked, (2, 3, 64, 64), 1e-4)
    text = str(summary)
    assert "blocks.1.0.conv_dw (+ blocks.1.0.bn2): removed [2, 5, 7]" in text
    assert "blocks.2.1.conv_pwl (+ blocks.2.1.bn3): masked [1]" in text


def test_depthwise_fed_by_a_shared_tensor_is_masked():
    """A depthwise conv whose input also feeds another layer cannot take its input channels away."""

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.pw = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
            self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU())
            self.side = nn.Conv2d(8, 8, 1)
            self.head = nn.Linear(16, 2)

        def forward(self, x):
            x = self.pw(x)
            y = torch.cat([self.dw(x), self.side(x)], 1)
            return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))

    torch.manual_seed(0)
    model = _trained_looking(Shared())
    summary = prune_pans(model, _report(model, (3, 16, 16), {"dw.0": [1, 4]}), mode="remove")
    assert "also feeds other layers" in summary.not_removable["dw.0"] and summary.masked == {"dw.0": [1, 4]}


REPARAMETRIZATIONS = {
    "weight_norm": torch.nn.utils.weight_norm,
    "spectral_norm": torch.nn.utils.spectral_norm,
    "parametrizations.weight_norm": torch.nn.utils.parametrizations.weight_norm,
}


def _reparametrized_net(wrap, bn: bool = True) -> nn.Sequential:
    """conv (under ``wrap``) -> [BatchNorm] -> ReLU -> conv -> pool -> linear, trained one step (so
    the computed weights are non-leaf tensors)."""
    torch.manual_seed(0)
    model = nn.Sequential(wrap(nn.Conv2d(3, 8, 3, padding=1)), nn.BatchNorm2d(8) if bn else nn.Identity(),
                          nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    model(torch.randn(2, 3, 12, 12)).sum().backward()
    return model.eval()


@pytest.mark.parametrize("wrap", REPARAMETRIZATIONS.values(), ids=REPARAMETRIZATIONS.keys())
def test_prune_reparametrized_conv_masks_through_its_batchnorm_and_is_not_removed(wrap):
    """A conv whose weight is computed in forward is silenced by its BatchNorm (mask mode) and
    listed as not removable (remove mode), with the same outputs; before, both raised TypeError."""
    masked, removed = _reparametrized_net(wrap), _reparametrized_net(wrap)
    report = _report(masked, (3, 12, 12), {"0": [1, 5]})
    prune_pans(masked, report)
    summary = prune_pans(removed, report, mode="remove")
    assert "weight is computed" in summary.not_removable["0"]
    with torch.no_grad():
        assert masked[1](masked[0](torch.randn(2, 3, 12, 12)))[:, [1, 5]].abs().max() == 0
    _assert_same_outputs(removed, masked, (2, 3, 12, 12), 1e-6)
