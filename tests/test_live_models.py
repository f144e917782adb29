"""Models mid-training: pruning masks applied mid-fit, ``weight_norm``, ``spectral_norm`` and
parametrizations (weights computed in forward, so a deep copy after a training step fails)
through the detector, every repair and every callback, and callbacks that mask or switch during
fit together, followed by validation, a checkpoint and a resume."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize, prune

from pan_repair import LitDigitsCanvasDataModule, SmallCNN, convert_padding, find_pans, prune_pans
from pan_repair import lightning as callbacks
from pan_repair.repair.consistency import padding_consistency
from pan_repair.experiments.lit_module import BiasAwareClassifier
from pan_repair.layers.module_state import reparametrization, structural_copy
from pan_repair.layers.padding_switch import MODES, converted_copy
from pan_repair.repair.regularizer import PANPenalty

from _lightning import INPUT, NAMESPACES, THRESHOLD, _trainer, one_thread  # noqa: F401 (autouse fixture)

NS = NAMESPACES["lightning.pytorch"]
BN_OF = {"features.0": "features.1", "features.3": "features.4", "features.6": "features.7"}


class _Double(nn.Module):
    """A parametrization: ``weight = 2 * original``."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


def _prune(conv):
    prune.l1_unstructured(conv, "weight", amount=0.2)


REPARAMETRIZE = {
    "prune": _prune,
    "weight_norm": torch.nn.utils.weight_norm,
    "spectral_norm": torch.nn.utils.spectral_norm,
    "parametrizations.weight_norm": torch.nn.utils.parametrizations.weight_norm,
    "parametrizations.spectral_norm": torch.nn.utils.parametrizations.spectral_norm,
    "parametrize": lambda conv: parametrize.register_parametrization(conv, "weight", _Double()),
}


def _live(kind: str, seed: int = 0) -> nn.Module:
    """A SmallCNN whose convs are reparametrised by ``kind``, after one training step (its
    computed weights are then non-leaf tensors)."""
    torch.manual_seed(seed)
    model = SmallCNN(1, 10, width=8, depth=3)
    for layer in BN_OF:
        REPARAMETRIZE[kind](model.get_submodule(layer))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    F.cross_entropy(model(torch.randn(8, *INPUT)), torch.arange(8)).backward()
    opt.step()
    model(torch.randn(8, *INPUT))  # weights computed by a training forward
    return model


def _baked(model: nn.Module) -> nn.Module:
    """An independent plain copy: every conv's computed weight as a plain parameter (eval mode)."""
    plain = structural_copy(model, share=False).eval()
    with torch.no_grad():
        plain(torch.zeros(1, *INPUT))  # hook-based weights computed without power iteration
    for layer in BN_OF:
        conv = plain.get_submodule(layer)
        if parametrize.is_parametrized(conv):
            parametrize.remove_parametrizations(conv, "weight")
        elif reparametrization(conv) == "pruning masks":
            prune.remove(conv, "weight")
        elif reparametrization(conv) == "weight_norm":
            torch.nn.utils.remove_weight_norm(conv)
        else:
            torch.nn.utils.remove_spectral_norm(conv)
        assert reparametrization(conv) is None
    return plain


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _underlying_grads(model: nn.Module) -> list[torch.Tensor | None]:
    """Gradients of the first conv's own parameters (``weight_orig``, ``weight_g``, ...)."""
    return [p.grad for p in model.features[0].parameters()]


# ------------------------------------------------------------------------------ copies
@pytest.mark.parametrize("kind", list(REPARAMETRIZE))
def test_structural_copies_of_a_live_model(kind):
    model = _live(kind)
    x = torch.randn(4, *INPUT)
    if kind in ("prune", "weight_norm", "spectral_norm"):
        with pytest.raises(RuntimeError, match="graph leaves"):
            copy.deepcopy(model)  # the hazard this guards against
    twin, clone = structural_copy(model, share=True), structural_copy(model, share=False)
    assert torch.equal(_outputs(twin, x), _outputs(model, x)) and torch.equal(_outputs(clone, x), _outputs(model, x))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    assert torch.equal(_outputs(twin, x), _outputs(model, x))  # follows the live weights
    assert not torch.equal(_outputs(clone, x), _outputs(model, x))  # independent


class _SelfHooked(nn.Module):
    """A module with a forward hook that is one of its own bound methods."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.calls = []
        self.register_forward_hook(self._seen)

    def _seen(self, module, inputs, output):
        self.calls.append(module is self)

    def forward(self, x):
        return self.conv(x)


def test_shared_copy_owns_its_module_tree():
    """The shared twin's tensors are the model's; its modules, containers and hooks are its own."""
    model = nn.Sequential(_SelfHooked(), nn.BatchNorm2d(2))
    model[1].shared = model[0].conv  # one module reachable twice stays one module in the copy
    twin = structural_copy(model, share=True)
    assert twin[0] is not model[0] and twin[0].conv.weight is model[0].conv.weight
    assert twin[1].running_mean is model[1].running_mean and twin[1].shared is twin[0].conv
    convert_padding(twin, "circular")
    twin[1].register_forward_hook(lambda *args: None)
    twin[0].extra = nn.ReLU()
    assert type(model[0].conv) is nn.Conv2d and not model[1]._forward_hooks and "extra" not in model[0]._modules
    twin(torch.randn(1, 1, 5, 5))
    assert twin[0].calls == [True] and model[0].calls == []  # its own hook, bound to the copy


# ------------------------------------------------------------------------------ detector and repairs
@pytest.mark.parametrize("kind", list(REPARAMETRIZE))
def test_find_pans_sees_the_computed_weights(kind):
    model = _live(kind)
    before = _outputs(model, torch.ones(1, *INPUT))
    report = find_pans(model, INPUT, border_threshold=THRESHOLD)
    plain = find_pans(_baked(model), INPUT, border_threshold=THRESHOLD)
    assert report.count > 0 and [(p.layer, p.channel) for p in report.pans] == [(p.layer, p.channel) for p in plain.pans]
    assert torch.equal(_outputs(model, torch.ones(1, *INPUT)), before)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", list(REPARAMETRIZE))
def test_convert_padding_keeps_the_reparametrisation(kind, mode):
    model = _live(kind)
    x = torch.randn(4, *INPUT)
    expected = _outputs(converted_copy(_baked(model), mode, input_size=INPUT), x)
    reference = _outputs(model, x)
    switched = converted_copy(model, mode, input_size=INPUT)
    assert torch.allclose(_outputs(switched, x), expected, atol=1e-5)
    assert torch.equal(_outputs(model, x), reference)  # the original untouched
    assert reparametrization(switched.features[0]) == reparametrization(model.features[0])
    assert switched.state_dict().keys() == model.state_dict().keys()
    summary = convert_padding(model, mode, input_size=INPUT)  # in place: the same parameters keep training
    assert len(summary.changed) == 3
    F.cross_entropy(model.train()(x), torch.arange(4)).backward()
    assert all(g is not None and g.abs().sum() > 0 for g in _underlying_grads(model))


def _bn_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out, handles = {}, []
    for conv, bn in BN_OF.items():
        handles.append(model.get_submodule(bn).register_forward_hook(
            lambda m, i, o, conv=conv: out.__setitem__(conv, o)))
    _outputs(model, x)
    for h in handles:
        h.remove()
    return out


@pytest.mark.parametrize("kind", list(REPARAMETRIZE))
def test_prune_pans_masks_and_removes(kind):
    model = _live(kind)
    report = find_pans(model, INPUT, border_threshold=THRESHOLD)
    x = torch.randn(4, *INPUT)
    masked, removed = structural_copy(model, share=False), structural_copy(model, share=False)
    summary = prune_pans(masked, report)
    assert summary.count == report.count and not summary.not_silenced
    after_bn = _bn_outputs(masked, x)
    for layer, pans in report.by_layer().items():
        assert after_bn[layer][:, [p.channel for p in pans]].abs().max() == 0  # silent
    prune_pans(removed, report, mode="remove")
    assert torch.allclose(_outputs(removed, x), _outputs(masked, x), atol=1e-4)
    F.cross_entropy(masked.train()(x), torch.arange(4)).backward()  # still trains


@pytest.mark.parametrize("kind", list(REPARAMETRIZE))
def test_padding_consistency_and_pan_penalty_reach_the_underlying_parameters(kind):
    model = _live(kind)
    padding_consistency(model, torch.randn(4, *INPUT)).backward()
    assert all(g is not None and g.abs().sum() > 0 for g in _underlying_grads(model))
    model.zero_grad()
    PANPenalty(INPUT, border_margin=0.0)(model).backward()
    assert all(g is not None for g in _underlying_grads(model))


class _ReparametrisedNet(NS.net):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.model = _live(kind)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(REPARAMETRIZE))
def test_every_callback_on_a_reparametrised_model(kind, tmp_path, recwarn):
    monitor = callbacks.PANMonitor(every_n_epochs=1, border_threshold=THRESHOLD, model_attr="model",
                                   output_dir=tmp_path)
    pruning = callbacks.PANPruning(border_threshold=THRESHOLD, model_attr="model", make_pruning_permanent=False)
    switch = callbacks.PaddingSwitch("replicate", at_epoch=1, model_attr="model")
    penalty = callbacks.PANRegularizer(model_attr="model")
    consistency = callbacks.PaddingConsistencyRegularizer(model_attr="model")
    net = _ReparametrisedNet(kind)
    trainer = _trainer(NS, tmp_path, callbacks=[monitor, pruning, switch, penalty, consistency])
    trainer.fit(net, LitDigitsCanvasDataModule(batch_size=32, canvas=INPUT[1], scale=1))
    assert not [w for w in recwarn if "training goes on" in str(w.message)]  # nothing failed
    assert trainer.current_epoch == 2 and len(monitor.history.scans) == 2
    assert not any(s.get("failed") for s in monitor.history.scans) and len(pruning.pruning_rounds()) == 2
    assert switch.switched and penalty.skipped["steps"] == consistency.skipped["steps"] == 0
    assert reparametrization(net.model.features[3]) is not None  # still reparametrised


# ------------------------------------------------------------------------------ callbacks masking mid-fit
def _classifier(seed: int = 0) -> BiasAwareClassifier:
    NS.pl.seed_everything(seed, verbose=False)
    return BiasAwareClassifier(SmallCNN(1, 10, width=8, depth=3), max_offset=INPUT[1] - 8)


PARTNERS = {
    "validation": lambda: [],
    "consistency": lambda: [callbacks.PaddingConsistencyRegularizer(model_attr="model")],
    "monitor": lambda: [callbacks.PANMonitor(every_n_epochs=1, border_threshold=THRESHOLD, model_attr="model")],
    "switch": lambda: [callbacks.PaddingSwitch("replicate", at_epoch=1, model_attr="model")],
}


def _masking_fit(partner: str, root, max_epochs: int, ckpt_path=None):
    pruning = callbacks.PANPruning([1, 2, 3], border_threshold=THRESHOLD, model_attr="model",
                                   make_pruning_permanent=False)  # first masks after an epoch of training
    checkpoint = NS.pl.callbacks.ModelCheckpoint(dirpath=root / "ckpt", save_last=True)
    net = _classifier()
    trainer = _trainer(NS, root, callbacks=[pruning, *PARTNERS[partner](), checkpoint], max_epochs=max_epochs,
                       enable_checkpointing=True, limit_val_batches=2)
    trainer.fit(net, LitDigitsCanvasDataModule(batch_size=32, canvas=INPUT[1], scale=1), ckpt_path=ckpt_path)
    return net, trainer, pruning


@pytest.mark.slow
@pytest.mark.parametrize("partner", list(PARTNERS))
def test_masks_applied_mid_fit_then_validation_checkpoint_and_resume(partner, tmp_path):
    net, trainer, pruning = _masking_fit(partner, tmp_path, max_epochs=3)
    assert [r["epoch"] for r in pruning.rounds] == [1, 2]
    assert pruning.rounds[0]["report"]["pans"]  # masks applied mid-fit, then trained through and validated
    assert {"val/acc", "val/padding_flip"} <= set(trainer.callback_metrics)  # BiasAwareClassifier's twin
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert not any(k.endswith(("_orig", "_mask")) for k in saved["state_dict"])

    resumed_net, resumed, resumed_pruning = _masking_fit(partner, tmp_path, max_epochs=4,
                                                         ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert resumed.current_epoch == 4 and [r["epoch"] for r in resumed_pruning.rounds] == [1, 2, 3]
    pruned = resumed_pruning.pruned
    for layer, chans in pruned.items():  # every channel pruned before or after the resume is silent
        bn = resumed_net.model.get_submodule(BN_OF[layer])
        assert bn.weight[chans].abs().sum() == 0 and bn.bias[chans].abs().sum() == 0
    assert "val/padding_flip" in resumed.callback_metrics
