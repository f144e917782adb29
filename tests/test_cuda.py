"""On a CUDA device (skipped without one): the scan runs where the model lives and agrees with the CPU's,
and every callback trains a GPU run through, with the calibration images taken from GPU batches.

CUDA convolutions run in TF32 by default (PyTorch's ``torch.backends.cudnn.allow_tf32``), about 1e-3
relative: scores are compared within 0.02, and the flagged sets wherever a score is not within 0.02 of its
threshold."""
from __future__ import annotations

import pytest
import torch

from pan_repair import convert_padding, find_pans
from pan_repair.layers.module_state import structural_copy

from _lightning import INPUT, NAMESPACES, THRESHOLD, _data, _fit, one_thread  # noqa: F401 (autouse fixture)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
NEAR = 0.02


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A SmallCNN classifier trained on CPU for a few steps, and 16 of its training images (CPU)."""
    ns = NAMESPACES["lightning.pytorch"]
    net, _ = _fit(ns, tmp_path_factory.mktemp("fit"), max_epochs=3, limit_train_batches=8)
    images = next(iter(_data(ns).train_dataloader()))[0][:16]
    return net.model.eval(), images


def _flags(report):
    return {(p.layer, p.channel) for p in report.pans}


def _agree(cpu, gpu) -> None:
    assert list(cpu.scores) == list(gpu.scores)
    for layer, scores in cpu.scores.items():
        for key in ("border", "position"):
            a, b = torch.tensor(scores[key]), torch.tensor(gpu.scores[layer][key])
            torch.testing.assert_close(b, a, atol=NEAR, rtol=0.01)
    near = {(layer, ch) for layer, s in cpu.scores.items() for ch in range(len(s["border"]))
            if abs(s["border"][ch] - cpu.border_threshold) < NEAR
            or abs(s["position"][ch] - cpu.position_threshold) < NEAR}
    assert _flags(cpu) - near == _flags(gpu) - near
    if cpu.padding_dependence is not None:
        for key in ("output_shift", "flip_rate"):
            assert gpu.padding_dependence[key] == pytest.approx(cpu.padding_dependence[key], abs=NEAR)


@pytest.mark.parametrize("data_on", ["cpu", "cuda"])
def test_scan_on_cuda_agrees_with_the_cpu(trained, data_on):
    model, images = trained
    cpu = find_pans(model, data=images, border_threshold=THRESHOLD)
    gpu_model = structural_copy(model, share=False).cuda()
    gpu = find_pans(gpu_model, data=images.to(data_on), border_threshold=THRESHOLD)
    assert cpu.count > 0
    _agree(cpu, gpu)
    assert next(gpu_model.parameters()).is_cuda  # left where it was


def test_data_free_scan_on_cuda_agrees_and_circular_twin_has_none(trained):
    model, _ = trained
    cpu = find_pans(model, INPUT, input_range=(0, 1))
    gpu_model = structural_copy(model, share=False).cuda()
    _agree(cpu, find_pans(gpu_model, INPUT, input_range=(0, 1)))
    convert_padding(gpu_model, "circular")
    assert find_pans(gpu_model, (1, 30, 30), input_range=(0, 1)).count == 0  # 30 px: off the stride grid


def _devices(ns):
    """A callback recording the device types of the module's parameters and buffers after each training
    step (Lightning moves the module back to the CPU when the fit ends)."""

    class Devices(ns.pl.Callback):
        def __init__(self) -> None:
            self.seen: set[str] = set()

        def on_train_batch_end(self, trainer, pl_module, *args):
            self.seen |= {t.device.type for t in [*pl_module.parameters(), *pl_module.buffers()]}
    return Devices()


@pytest.mark.parametrize("namespace", list(NAMESPACES))
def test_every_callback_trains_a_gpu_run_through(namespace, tmp_path, recwarn):
    ns = NAMESPACES[namespace]
    monitor = ns.callbacks.PANMonitor(every_n_epochs=1, border_threshold=THRESHOLD)
    pruning = ns.callbacks.PANPruning(model_attr="model", border_threshold=THRESHOLD, make_pruning_permanent=False)
    regularizer = ns.callbacks.PANRegularizer(weight=0.5, every=1, model_attr="model")
    devices = _devices(ns)
    net, trainer = _fit(ns, tmp_path, [monitor, pruning, regularizer, devices], accelerator="gpu")
    assert trainer.current_epoch == 2 and net.steps == 6
    assert devices.seen == {"cuda"}  # pruning masks included
    assert any(name.endswith("weight_mask") for name, _ in net.named_buffers())
    assert [s["epoch"] for s in monitor.history.scans] == [0, 1]
    assert monitor.calibration.device.type == "cpu" and monitor.calibration.shape[1:] == INPUT
    assert [r["epoch"] for r in pruning.rounds] == [0, 1] and pruning.pruned
    for layer, chans in pruning.pruned.items():  # masked channels stay silent on the GPU
        assert net.model.get_submodule(layer).weight[chans].abs().sum() == 0
    assert regularizer.penalty.step == 6
    assert not [w for w in recwarn if "training goes on" in str(w.message)]  # no callback skipped a step


@pytest.mark.parametrize("mode", ["replicate", "full"])
def test_padding_switch_mid_run_on_cuda(mode, tmp_path):
    ns = NAMESPACES["lightning.pytorch"]
    switch, devices = ns.callbacks.PaddingSwitch(mode, at_epoch=1, model_attr="model"), _devices(ns)
    net, trainer = _fit(ns, tmp_path, [switch, devices], accelerator="gpu")
    assert trainer.current_epoch == 2 and net.steps == 6 and devices.seen == {"cuda"}
    assert switch.switched == ["features.0", "features.3", "features.6"]
    assert all(net.model.features[i].padding_mode == mode for i in (0, 3, 6))
    grown = 30 if mode == "full" else 24  # full: + 2 px per 3x3 conv
    assert net.model.features(torch.zeros(1, *INPUT)).shape[-2:] == (grown, grown)
