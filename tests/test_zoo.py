"""benchmarks/zoo.py: its checks catch what they must, and a fast subset of the zoo at 64 px runs
every operation without a failure (refusals are allowed: one line, model unchanged)."""
import pytest
import torch
from torch import nn

from pan_repair import convert_padding
from _scripts import benchmark

torch.set_num_threads(1)

zoo = benchmark("zoo")

#: Small architectures covering plain / ceil-mode / TF-"same" / weight-standardised / shuffled padding.
FAST = ["resnet10t", "tf_mobilenetv3_small_minimal_100", "nf_regnet_b0", "tv:squeezenet1_1",
        "tv:shufflenet_v2_x0_5"]
#: The operations whose code this sweep may fix; the detector and callbacks are tested elsewhere.
OWN_OPS = [op for op in zoo.OPS if op not in ("find", "monitor")]


def test_zoo_covers_forty_architectures_and_ten_default_sizes():
    assert len(zoo.ARCHS) >= 40
    assert len({a.name for a in zoo.ARCHS}) == len(zoo.ARCHS)
    assert sum(a.default_size for a in zoo.ARCHS) >= 10


def test_interior_is_the_part_of_the_output_no_window_of_which_reaches_the_padding():
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)  # 9x9 input -> 5x5 output; row i reads 2i-1..2i+1
    x = torch.randn(1, 1, 9, 9)
    rows, cols = zoo.interior(conv, x)
    assert (rows.start, rows.stop) == (1, 4) and (cols.start, cols.stop) == (1, 4)
    pad = nn.ZeroPad2d((2, 0, 1, 0))
    assert zoo.interior(pad, x) == (slice(1, 10), slice(2, 11))


def test_conversion_check_passes_a_true_conversion_and_catches_a_wrong_one():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1)).eval()
    x = torch.randn(1, 3, 12, 12)
    twin = zoo.copy.deepcopy(model)
    summary = convert_padding(twin, "reflect")
    assert "2 switched (2 with interior compared)" in zoo.check_conversion(model, twin, summary, x)
    with torch.no_grad():
        twin[2].weight.add_(1.0)  # changes the interior too
    with pytest.raises(zoo.CheckFailed, match="interior differs"):
        zoo.check_conversion(model, twin, summary, x)


def test_conversion_of_a_model_without_padding_changes_nothing():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    before, x = zoo.snapshot(model), torch.randn(1, 3, 10, 10)
    expected = model(x)
    summary = convert_padding(model, "partial")
    assert summary.changed == [] and zoo.changed(model, before) is None
    assert torch.equal(model(x), expected)


def test_a_refusal_that_modifies_the_model_is_a_failure():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    before = zoo.snapshot(model)
    with pytest.raises(ValueError) as info:
        convert_padding(model, "nope")
    assert zoo.classify(info.value, model, before) == ("refused", f"ValueError: {info.value}")
    with torch.no_grad():
        model[0].bias.zero_()
    status, detail = zoo.classify(info.value, model, before)
    assert status == "FAIL" and "model was modified" in detail


def test_errors_not_raised_by_pan_repair_are_failures():
    try:
        nn.Conv2d(3, 4, 3)(torch.randn(1, 2, 8, 8))
    except RuntimeError as err:
        assert zoo.classify(err, None, None)[0] == "FAIL"
    try:
        nn.BatchNorm1d(2).train()(torch.randn(1, 2))
    except ValueError as err:  # a ValueError from torch, not a refusal of pan_repair's
        assert zoo.classify(err, None, None) == ("FAIL", f"{zoo.first_line(err)} (raised outside pan_repair)")


@pytest.fixture(scope="module")
def fast_rows():
    return {(r["model"], r["op"]): r for name in FAST for r in zoo.run_cell(zoo.arch(name), 64, list(zoo.OPS))}


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("op", OWN_OPS)
def test_fast_zoo_at_64px_conversion_and_pruning_pass(fast_rows, name, op):
    """Every operation passes; full convolution may instead be refused up front (residual adds, a
    fixed-size head), the model unchanged (the sweep counts a refusal only then)."""
    row = fast_rows[(name, op)]
    assert row["status"] == "pass" or (op == "convert_full" and row["status"] == "refused"), row


@pytest.mark.parametrize("name", FAST)
def test_fast_zoo_at_64px_find_completes_or_refuses(fast_rows, name):
    assert fast_rows[(name, "find")]["status"] in ("pass", "refused"), fast_rows[(name, "find")]


@pytest.mark.parametrize("name", FAST)
def test_fast_zoo_at_64px_monitor_survives_the_fit(fast_rows, name):
    assert fast_rows[(name, "monitor")]["status"] == "pass", fast_rows[(name, "monitor")]


def test_report_counts_per_operation_and_groups_problems():
    a = zoo.arch("resnet18")
    rows = {(a.name, s, op): {"model": a.name, "size": s, "op": op, "status": "pass", "detail": "", "seconds": 1.0}
            for s in (64, 96) for op in zoo.OPS}
    rows[(a.name, 64, "find")].update(status="refused", detail="ValueError: input size 64x64 is too small")
    rows[(a.name, 64, "monitor")].update(status="FAIL", detail="fit stopped after 2 steps: ValueError: x")
    text = zoo.render(rows, [(a, 64), (a, 96)], None)
    assert "| find | 1 / 2 | 1 | 0 | 0 | 1 / 1 |" in text
    assert "| monitor | 1 / 2 | 0 | 1 | 0 | 0 / 1 |" in text
    assert "| find (detector.py) | refused | ValueError: input size N is too small | 1: resnet18@64 |" in text
    assert "Machine: " in text and "| `resnet18` @ 96 | pass (" in text


def test_full_conversion_check_compares_the_shifted_windows_and_catches_a_wrong_shift():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                          nn.AdaptiveAvgPool2d(1)).eval()
    x = torch.randn(1, 3, 12, 12)
    twin = zoo.copy.deepcopy(model)
    summary = convert_padding(twin, "full", input_size=(3, 12, 12))
    # stride 1: the same windows one output later; stride 2: (2 - 1) / 2 is no whole shift, not compared
    assert zoo.window_shift(model[0], twin[0], x) == (1, 1)
    assert zoo.window_shift(model[2], twin[2], torch.randn(1, 4, 14, 14)) is None
    assert "2 switched (1 with interior compared), 0 skipped" in zoo.check_conversion(model, twin, summary, x)
    zoo.window_shift, real = (lambda *a: (0, 0)), zoo.window_shift
    try:
        with pytest.raises(zoo.CheckFailed, match="interior differs"):
            zoo.check_conversion(model, twin, summary, x)
    finally:
        zoo.window_shift = real
