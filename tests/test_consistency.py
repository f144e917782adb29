"""Padding consistency: zero for a model already padded like its twin, gradients into the model's
own parameters, running statistics untouched, and on the placement shortcut it removes the shortcut
that fine-tuning alone keeps."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pan_repair import SmallCNN, converted_copy
from pan_repair.experiments.shortcut import shortcut_data
from pan_repair.repair.consistency import PaddingConsistency, padding_consistency
from _scripts import benchmark


def test_zero_for_a_model_padded_like_its_twin():
    torch.manual_seed(0)
    x = torch.randn(6, 1, 24, 24)
    assert padding_consistency(SmallCNN(1, 3, width=8, depth=3, padding_mode="circular"), x).item() == 0.0
    assert padding_consistency(SmallCNN(1, 3, width=8, depth=3), x).item() > 0


def test_gradient_reaches_the_model_and_running_stats_are_untouched():
    torch.manual_seed(0)
    model = SmallCNN(1, 3, width=8, depth=3).train()
    x = torch.randn(6, 1, 24, 24)
    logits = model(x)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    consistency = PaddingConsistency(weight=2.0)
    term = consistency(model, x, logits)
    assert torch.allclose(term, 2.0 * padding_consistency(model, x, logits))
    assert all(torch.equal(buffers[k], v) for k, v in model.named_buffers())  # the twin ran on copies
    term.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.features.parameters())
    assert consistency._twin is not None and consistency._twin is not model


def test_every_k_computes_k_times_the_term_on_every_kth_call_and_keeps_its_count():
    torch.manual_seed(0)
    model = SmallCNN(1, 3, width=8, depth=3).eval()
    x = torch.randn(6, 1, 24, 24)
    full = padding_consistency(model, x)
    consistency = PaddingConsistency(weight=0.5, every=3)
    terms = [consistency(model, x) for _ in range(4)]
    torch.testing.assert_close(terms[0], 3 * 0.5 * full)
    torch.testing.assert_close(terms[3], terms[0])
    assert [t.item() for t in terms[1:3]] == [0.0, 0.0]
    resumed = PaddingConsistency(weight=0.5, every=3)
    resumed.load_state_dict(consistency.state_dict())  # step 4: the next call skips, the one after computes
    assert resumed(model, x).item() == 0.0 and not resumed.computes_next()


def test_warmup_ramps_the_weight_over_the_first_calls():
    torch.manual_seed(0)
    model = SmallCNN(1, 3, width=8, depth=3).eval()
    x = torch.randn(6, 1, 24, 24)
    full = 0.5 * padding_consistency(model, x)
    consistency = PaddingConsistency(weight=0.5, warmup=4)
    terms = torch.stack([consistency(model, x) for _ in range(5)])
    torch.testing.assert_close(terms, full * torch.tensor([0.25, 0.5, 0.75, 1.0, 1.0]))
    resumed = PaddingConsistency(weight=0.5, warmup=4)
    resumed.load_state_dict({"step": 1})
    torch.testing.assert_close(resumed(model, x), 0.5 * full)


def test_full_twin_is_the_full_convolution_of_the_same_weights():
    torch.manual_seed(0)
    model, x = SmallCNN(1, 3, width=8, depth=3), torch.randn(4, 1, 24, 24)
    full = converted_copy(model, "full", input_size=(1, 24, 24))
    expected = (F.log_softmax(model(x), 1) - F.log_softmax(full(x), 1)).pow(2).sum(1).mean()
    term = padding_consistency(model, x, mode="full")
    torch.testing.assert_close(term, expected)
    term.backward()
    assert model.features[0].weight.grad.abs().sum() > 0 and type(model.features[0]) is nn.Conv2d
    assert padding_consistency(full, x, mode="full").item() == 0.0  # already full: its own twin
    consistency = PaddingConsistency(2.0, mode="full")
    torch.testing.assert_close(consistency(model, x), 2 * expected)


def test_full_twin_needs_outputs_of_the_same_shape():
    dense = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1))  # a map out: the twin's is larger
    with pytest.raises(ValueError, match=r"the full twin's output has shape \(2, 3, 10, 10\), the model's "
                                         r"\(2, 3, 8, 8\): the output must not depend on the map size"):
        padding_consistency(dense, torch.randn(2, 1, 8, 8), mode="full")
    flat = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Flatten(), nn.Linear(192, 2))
    with pytest.raises(ValueError, match=r"layer '2' \(Linear\) needs a fixed spatial size"):
        PaddingConsistency(mode="full")(flat, torch.randn(2, 1, 8, 8))


@pytest.mark.parametrize("make", [lambda: PaddingConsistency(mode="zeros"), lambda: PaddingConsistency(weight=-1),
                                  lambda: PaddingConsistency(every=0), lambda: PaddingConsistency(warmup=-1)])
def test_bad_arguments(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.slow
def test_fine_tuning_with_it_removes_the_placement_shortcut():
    bench = benchmark("padding_consistency")
    train_set = shortcut_data(["train"], "biased")[:2]
    swapped = bench.tensors("swapped")
    base = bench.train(bench.net(0), train_set, 0)
    plain = bench.train(copy.deepcopy(base), train_set, 0)
    repaired = bench.train(copy.deepcopy(base), train_set, 0, PaddingConsistency())
    assert bench.accuracy(base, swapped) < 30 and bench.accuracy(plain, swapped) < 30  # the shortcut, kept
    assert bench.accuracy(repaired, swapped) > 80
    assert bench.accuracy(repaired, bench.tensors("biased")) > 85
