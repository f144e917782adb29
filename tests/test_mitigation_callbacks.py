"""PaddingSwitch, PANPruning and PANRegularizer with real Trainers of both Lightning namespaces:
they act when scheduled, checkpoints hold clean weights that load into the unmodified
architecture, resuming restores masks and padding, DDP ranks agree, bad input fails at setup."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pan_repair import SmallCNN, find_pans
from pan_repair.callbacks import PaddingSwitchBase, PANPruningBase, PANRegularizerBase
from pan_repair.layers.padding_switch import PaddedConv2d
from pan_repair.repair.regularizer import PANPenalty

from _lightning import INPUT, NAMESPACES, _data, _fit, _trainer, one_thread  # noqa: F401 (autouse fixture)

#: a randomly initialised test net, measured on its digits (black background), scores 0.05-0.1 at most (border)
PRUNE = 0.06

BN_OF = {"features.0": "features.1", "features.3": "features.4", "features.6": "features.7"}


def _silent(net: nn.Module, pruned: dict[str, list[int]]) -> bool:
    """Every pruned channel's conv weight and BatchNorm weight/bias are exactly zero."""
    for layer, chans in pruned.items():
        conv, bn = net.model.get_submodule(layer), net.model.get_submodule(BN_OF[layer])
        if any(t[chans].abs().sum() != 0 for t in (conv.weight, bn.weight, bn.bias)):
            return False
    return True


# ------------------------------------------------------------------------------ PANPruning
@pytest.mark.parametrize("namespace", list(NAMESPACES))
def test_pruning_masks_stay_silent_through_training(namespace, tmp_path):
    ns = NAMESPACES[namespace]
    pruning = ns.callbacks.PANPruning(apply_pruning=[0], model_attr="model", border_threshold=PRUNE)
    net, _ = _fit(ns, tmp_path, [pruning])
    assert len(pruning.rounds) == 1 and pruning.rounds[0]["epoch"] == 0
    pruned = pruning.pruned
    assert 0 < sum(map(len, pruned.values())) < 24
    assert _silent(net, pruned)  # two epochs of SGD with momentum: only masks keep them at zero
    assert not any(k.endswith(("_orig", "_mask")) for k in net.state_dict())  # made permanent at the end
    others = [c for c in range(8) if c not in pruned.get("features.0", [])]
    assert net.model.features[0].weight[others].abs().sum() > 0


def test_pruning_re_detects_new_pans_every_epoch(tmp_path):
    ns = NAMESPACES["lightning.pytorch"]
    pruning = ns.callbacks.PANPruning(model_attr="model", make_pruning_permanent=False, border_threshold=PRUNE)
    net, _ = _fit(ns, tmp_path, [pruning], max_epochs=3)
    assert [r["epoch"] for r in pruning.rounds] == [0, 1, 2]
    seen: set[tuple[str, int]] = set()
    for record in pruning.rounds:
        now = {(p["layer"], p["channel"]) for p in record["report"]["pans"]}
        assert not now & seen  # silenced channels are never found again
        seen |= now
    assert sum(map(len, pruning.pruned.values())) == len(seen)
    assert any(k.endswith("weight_mask") for k in net.state_dict())  # masks kept (not permanent)
    assert _silent(net, pruning.pruned)


@pytest.mark.slow
@pytest.mark.parametrize("namespace", list(NAMESPACES))
def test_pruning_checkpoint_is_clean_and_resume_restores_masks(namespace, tmp_path):
    ns = NAMESPACES[namespace]
    ckpt = ns.pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = ns.callbacks.PANPruning(apply_pruning=[0], model_attr="model", make_pruning_permanent=False,
                                    border_threshold=PRUNE)
    _fit(ns, tmp_path, [first, ckpt], enable_checkpointing=True)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert not any(k.endswith(("_orig", "_mask")) for k in saved["state_dict"])
    fresh = SmallCNN(1, 10, width=8, depth=3)
    fresh.load_state_dict({k[len("model."):]: v for k, v in saved["state_dict"].items()})  # strict
    pruned = first.pruned
    assert _silent(type("N", (), {"model": fresh})(), pruned)

    resumed = ns.callbacks.PANPruning(apply_pruning=[0], model_attr="model", border_threshold=PRUNE)
    ns.pl.seed_everything(0, verbose=False)
    trainer = _trainer(ns, tmp_path, callbacks=[resumed], max_epochs=4)
    net = ns.net()
    trainer.fit(net, _data(ns), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert resumed.pruned == pruned and len(resumed.rounds) == 1  # epoch 0 is not pruned again
    assert _silent(net, pruned)  # two more epochs: the masks were restored before the first step


# ------------------------------------------------------------------------------ PaddingSwitch
class _Types(NAMESPACES["lightning.pytorch"].pl.Callback):
    """Records the first conv's class after the first batch of every epoch."""

    def __init__(self):
        self.seen = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            self.seen.append(type(pl_module.model.features[0]).__name__)


def test_padding_switch_at_a_given_epoch(tmp_path):
    ns = NAMESPACES["lightning.pytorch"]
    switch, types = ns.callbacks.PaddingSwitch("partial", at_epoch=1, model_attr="model"), _Types()
    net, _ = _fit(ns, tmp_path, [switch, types], max_epochs=3)
    assert types.seen == ["Conv2d", "PaddedConv2d", "PaddedConv2d"]
    assert switch.switched == ["features.0", "features.3", "features.6"]
    assert all(isinstance(net.model.get_submodule(n), PaddedConv2d) and net.model.get_submodule(n).padding_mode
               == "partial" for n in switch.switched)


@pytest.mark.parametrize("namespace", list(NAMESPACES))
def test_padding_switch_at_fit_start_checkpoint_and_resume(namespace, tmp_path):
    ns = NAMESPACES[namespace]
    ckpt = ns.pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    switch = ns.callbacks.PaddingSwitch("replicate", model_attr="model")
    net, _ = _fit(ns, tmp_path, [switch, ckpt], enable_checkpointing=True)
    assert all(type(net.model.features[i]) is PaddedConv2d for i in (0, 3, 6))
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    SmallCNN(1, 10, width=8, depth=3).load_state_dict(
        {k[len("model."):]: v for k, v in saved["state_dict"].items()})  # strict: the unmodified architecture

    resumed = ns.callbacks.PaddingSwitch("replicate", model_attr="model")
    trainer = _trainer(ns, tmp_path, callbacks=[resumed], max_epochs=3)
    fresh = ns.net()
    trainer.fit(fresh, _data(ns), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert resumed.switched == switch.switched
    assert all(type(fresh.model.features[i]) is PaddedConv2d for i in (0, 3, 6))


def test_padding_switch_only_the_pan_layers(tmp_path):
    ns = NAMESPACES["lightning.pytorch"]
    switch = ns.callbacks.PaddingSwitch("replicate", "pans", model_attr="model", border_threshold=PRUNE)
    net, _ = _fit(ns, tmp_path, [switch])  # seeds 0 before building the net
    ns.pl.seed_everything(0, verbose=False)
    assert switch.calibration is not None and len(switch.calibration) == 16  # the first batch's images
    report = find_pans(ns.net().model, data=switch.calibration, border_threshold=PRUNE)
    expected = sorted({p.layer for p in report.pans})
    assert 0 < len(expected) < 3
    assert switch.switched == expected
    assert sorted(n for n, m in net.model.named_modules() if isinstance(m, PaddedConv2d)) == expected


def test_padding_switch_full_in_a_fit_checkpoint_and_resume(tmp_path):
    """F-Conv from fit start: the input size comes from the first batch (kept in the state), the maps
    grow by 2 per 3x3 conv, checkpoints load into the unmodified net, resume switches again."""
    ns = NAMESPACES["lightning.pytorch"]
    ckpt = ns.pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    switch, types = ns.callbacks.PaddingSwitch("full", model_attr="model"), _Types()
    net, _ = _fit(ns, tmp_path, [switch, types, ckpt], enable_checkpointing=True)
    assert types.seen == ["PaddedConv2d", "PaddedConv2d"] and switch.input_size == INPUT
    assert switch.switched == ["features.0", "features.3", "features.6"]
    assert net.model.features(torch.zeros(1, *INPUT)).shape[-2:] == (30, 30)  # 24 + 3 * 2
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    SmallCNN(1, 10, width=8, depth=3).load_state_dict({k[len("model."):]: v for k, v in saved["state_dict"].items()})
    resumed = ns.callbacks.PaddingSwitch("full", model_attr="model")
    fresh = ns.net()
    _trainer(ns, tmp_path, callbacks=[resumed], max_epochs=3).fit(fresh, _data(ns),
                                                                  ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert resumed.switched == switch.switched and resumed.input_size == INPUT
    assert all(fresh.model.features[i].padding_mode == "full" for i in (0, 3, 6))


def test_padding_switch_full_refuses_a_flatten_head_before_any_step(tmp_path):
    ns = NAMESPACES["lightning.pytorch"]

    class Flat(ns.net):
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 24 * 24, 10))

    net = Flat()
    trainer = _trainer(ns, tmp_path, callbacks=[ns.callbacks.PaddingSwitch("full", model_attr="model")])
    with pytest.raises(ns.pl.utilities.exceptions.MisconfigurationException,
                       match=r"PaddingSwitch: cannot switch to 'full': layer '2' \(Linear\) needs a fixed spatial"):
        trainer.fit(net, _data(ns))
    assert net.steps == 0 and type(net.model[0]) is nn.Conv2d


# ------------------------------------------------------------------------------ PANRegularizer
def _sgd(ns):
    """The namespace's test net trained by plain SGD (the regularisers' parity tests)."""

    class Plain(ns.net):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return Plain


def _assert_same_weights(expected: nn.Module, actual: nn.Module) -> None:
    for (key, a), b in zip(expected.state_dict().items(), actual.state_dict().values()):
        torch.testing.assert_close(b, a, msg=key)


def _penalised(ns, every: int):
    """The SGD test net whose training_step adds the PANPenalty to the loss itself, measured on
    the first 16 images of the first batch (the callback's calibration sample)."""

    class Net(_sgd(ns)):
        def __init__(self):
            super().__init__()
            self.penalty = PANPenalty(INPUT, every=every, weight=0.5, border_margin=0.0)

        def training_step(self, batch, batch_idx):
            if self.penalty.images is None:
                self.penalty.set_images(batch[0][:16])
            return super().training_step(batch, batch_idx) + self.penalty(self.model)

    return Net


@pytest.mark.parametrize("namespace", list(NAMESPACES))
@pytest.mark.parametrize("accumulate", [1, 2])
def test_regularizer_equals_adding_the_penalty_to_the_loss(namespace, accumulate, tmp_path):
    ns = NAMESPACES[namespace]

    Plain = _sgd(ns)

    callback = ns.callbacks.PANRegularizer(weight=0.5, every=2, border_margin=0.0, model_attr="model")
    nets = {name: _fit(ns, tmp_path, callbacks, module=cls, accumulate_grad_batches=accumulate)[0]
            for name, cls, callbacks in (("manual", _penalised(ns, every=2), []), ("callback", Plain, [callback]),
                                         ("plain", Plain, []))}
    _assert_same_weights(nets["manual"].model, nets["callback"].model)
    assert not all(torch.equal(b, c) for b, c in zip(nets["callback"].model.state_dict().values(),
                                                     nets["plain"].model.state_dict().values()))
    assert callback.penalty.step == 6  # 2 epochs x 3 batches


def test_regularizer_measures_on_its_calibration_sample_and_keeps_it(tmp_path):
    ns = NAMESPACES["lightning.pytorch"]
    seen = []

    class FirstBatch(ns.pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch[0][:16].clone())

    callback = ns.callbacks.PANRegularizer(weight=0.5, every=1, model_attr="model")
    _fit(ns, tmp_path, [FirstBatch(), callback])
    assert torch.equal(callback.calibration, seen[0]) and torch.equal(callback.penalty.images, seen[0])
    state = callback.state_dict()
    resumed = ns.callbacks.PANRegularizer(weight=0.5, every=1, model_attr="model")
    resumed.load_state_dict(state)
    assert torch.equal(resumed.calibration, seen[0]) and resumed.input_size == INPUT
    _fit(ns, tmp_path, [resumed])
    assert torch.equal(resumed.penalty.images, seen[0])  # the same images after a resume


def test_regularizer_warm_up_and_logged_penalty(tmp_path):
    ns = NAMESPACES["lightning.pytorch"]
    callback = ns.callbacks.PANRegularizer(weight=1.0, warmup_steps=4, every=1, border_margin=0.0,
                                           model_attr="model")
    assert [callback.ramp(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    logger = ns.pl.loggers.CSVLogger(tmp_path, name="reg", version=0)
    _fit(ns, tmp_path, [callback], logger=logger, log_every_n_steps=1)
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        values = [float(r["pan_regularizer/penalty"]) for r in csv.DictReader(f) if r.get("pan_regularizer/penalty")]
    assert len(values) == 6 and all(v > 0 for v in values)


# ------------------------------------------------------------------------------ DDP
class _RankRecorder(NAMESPACES["lightning.pytorch"].pl.Callback):
    """Writes each rank's masks and weights after training (ddp_spawn children)."""

    def __init__(self, out: Path):
        self.out = out

    def on_train_end(self, trainer, pl_module):
        state = {k: v.tolist() for k, v in pl_module.model.state_dict().items()}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(state))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ddp_spawn_identical_masks_and_weights(tmp_path):
    ns = NAMESPACES["lightning.pytorch"]
    tmp_path.joinpath("out").mkdir()
    callbacks = [ns.callbacks.PANPruning(model_attr="model", make_pruning_permanent=False, border_threshold=PRUNE),
                 ns.callbacks.PANRegularizer(weight=0.5, every=1, model_attr="model"), _RankRecorder(tmp_path / "out")]
    ns.pl.seed_everything(0, verbose=False)
    trainer = _trainer(ns, tmp_path, callbacks=callbacks, strategy="ddp_spawn", devices=2, limit_train_batches=2)
    trainer.fit(ns.net(), _data(ns))
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    masks = [k for k in ranks[0] if k.endswith("_mask")]
    assert masks and ranks[0] == ranks[1]  # the same masks, and the same weights, on both ranks


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("make, match", [
    (lambda cb: cb.PaddingSwitch("zeros"), "unknown mode 'zeros'"),
    (lambda cb: cb.PaddingSwitch(layers="all"), "'pans'"),
    (lambda cb: cb.PaddingSwitch(at_epoch=-1), "at_epoch"),
    (lambda cb: cb.PANPruning(kinds=("edge",)), "kinds"),
    (lambda cb: cb.PANPruning(apply_pruning=[-1]), "epochs must be integers"),
    (lambda cb: cb.PANPruning(apply_pruning=0), "positive integer"),
    (lambda cb: cb.PANPruning(input_size=(24, 24)), "input_size"),
    (lambda cb: cb.PANRegularizer(weight=-1), "weight"),
    (lambda cb: cb.PANRegularizer(warmup_steps=1.5), "warmup_steps"),
    (lambda cb: cb.PANRegularizer(input_size=(1, 24, 24), n_paterns=3), "n_paterns"),
])
def test_invalid_arguments(make, match):
    for ns in NAMESPACES.values():
        with pytest.raises(ValueError, match=match):
            make(ns.callbacks)
    for body in (PaddingSwitchBase, PANPruningBase, PANRegularizerBase):
        with pytest.raises(TypeError, match="is a body"):
            body()


@pytest.mark.parametrize("namespace", list(NAMESPACES))
@pytest.mark.parametrize("case, match", [
    ("unknown_layer", "layers not in the model: 'features.9'"),
    ("model_attr", "no submodule model_attr='backbone'"),
    ("channels", "has 3 channels but the first convolution"),
    ("manual", "needs automatic optimization"),
])
def test_errors_at_setup_before_any_step(namespace, case, match, tmp_path):
    ns = NAMESPACES[namespace]
    net = ns.net()
    callback = {
        "unknown_layer": lambda: ns.callbacks.PaddingSwitch(layers=["features.9"], model_attr="model"),
        "model_attr": lambda: ns.callbacks.PANPruning(model_attr="backbone"),
        "channels": lambda: ns.callbacks.PANRegularizer(input_size=(3, 24, 24), model_attr="model"),
        "manual": lambda: ns.callbacks.PANRegularizer(model_attr="model"),
    }[case]()
    if case == "manual":
        net.automatic_optimization = False
    with pytest.raises(ns.pl.utilities.exceptions.MisconfigurationException, match=match):
        _trainer(ns, tmp_path, callbacks=[callback]).fit(net, _data(ns))
    assert net.steps == 0


def test_padding_switch_refuses_a_checkpoint_of_another_mode():
    switch = NAMESPACES["lightning.pytorch"].callbacks.PaddingSwitch("reflect")
    with pytest.raises(ValueError, match="switched to 'partial'"):
        switch.load_state_dict({"mode": "partial", "switched": ["features.0"]})



@pytest.mark.slow
def test_padding_switch_resumed_with_another_mode_is_refused(tmp_path):
    ns = NAMESPACES["lightning.pytorch"]
    ckpt = ns.pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(ns, tmp_path, [ns.callbacks.PaddingSwitch("replicate", model_attr="model"), ckpt], enable_checkpointing=True)
    trainer = _trainer(ns, tmp_path, callbacks=[ns.callbacks.PaddingSwitch("reflect", model_attr="model")],
                       max_epochs=3)
    net = ns.net()
    with pytest.raises(ValueError, match="switched to 'replicate'"):
        trainer.fit(net, _data(ns), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert all(type(net.model.features[i]) is nn.Conv2d for i in (0, 3, 6))  # nothing switched


# ------------------------------------------------------------------------------ PaddingConsistencyRegularizer
@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("namespace", list(NAMESPACES))
def test_consistency_regularizer_equals_adding_it_to_the_loss(namespace, every, tmp_path):
    from pan_repair.repair.consistency import PaddingConsistency
    ns = NAMESPACES[namespace]

    Plain = _sgd(ns)

    class Manual(Plain):
        def __init__(self):
            super().__init__()
            self.consistency = PaddingConsistency(0.5, every=every)

        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx) + self.consistency(self.model, batch[0])

    callback = ns.callbacks.PaddingConsistencyRegularizer(0.5, every=every, model_attr="model")
    nets = {name: _fit(ns, tmp_path, callbacks, module=cls)[0]
            for name, cls, callbacks in (("manual", Manual, []), ("plain", Plain, []), ("callback", Plain, [callback]))}
    _assert_same_weights(nets["manual"].model, nets["callback"].model)
    assert not torch.equal(nets["callback"].model.features[0].weight, nets["plain"].model.features[0].weight)
    with pytest.raises(ValueError, match="unknown mode"):
        ns.callbacks.PaddingConsistencyRegularizer(mode="zeros")
    with pytest.raises(ValueError, match="every must be"):
        ns.callbacks.PaddingConsistencyRegularizer(every=0)


def test_consistency_and_penalty_callbacks_compose(tmp_path):
    """Both regularisers at once (each adds its term to the loss in place) equal adding both terms
    in ``training_step``."""
    from pan_repair.repair.consistency import PaddingConsistency
    ns = NAMESPACES["lightning.pytorch"]

    Plain = _sgd(ns)

    class Manual(Plain):
        def __init__(self):
            super().__init__()
            self.consistency = PaddingConsistency(0.5)
            self.penalty = PANPenalty(INPUT, every=1, weight=0.5, border_margin=0.0)

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            if self.penalty.images is None:
                self.penalty.set_images(batch[0][:16])  # the callback's calibration sample
            return loss + self.consistency(self.model, batch[0]) + self.penalty(self.model)

    callbacks = [ns.callbacks.PaddingConsistencyRegularizer(0.5, model_attr="model"),
                 ns.callbacks.PANRegularizer(weight=0.5, every=1, border_margin=0.0, model_attr="model")]
    nets = {name: _fit(ns, tmp_path, cbs, module=cls)[0]
            for name, cls, cbs in (("manual", Manual, []), ("callbacks", Plain, callbacks))}
    _assert_same_weights(nets["manual"].model, nets["callbacks"].model)
    assert callbacks[1].penalty.step == 6 and callbacks[0].consistency.step == 6


def test_consistency_regularizer_with_a_full_twin_equals_adding_it_to_the_loss(tmp_path):
    from pan_repair.repair.consistency import PaddingConsistency
    ns = NAMESPACES["lightning.pytorch"]
    Plain = _sgd(ns)

    class Manual(Plain):
        def __init__(self):
            super().__init__()
            self.consistency = PaddingConsistency(0.5, mode="full")

        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx) + self.consistency(self.model, batch[0])

    callback = ns.callbacks.PaddingConsistencyRegularizer(0.5, mode="full", model_attr="model")
    nets = {name: _fit(ns, tmp_path, callbacks, module=cls)[0]
            for name, cls, callbacks in (("manual", Manual, []), ("callback", Plain, [callback]), ("plain", Plain, []))}
    _assert_same_weights(nets["manual"].model, nets["callback"].model)
    assert not torch.equal(nets["callback"].model.features[0].weight, nets["plain"].model.features[0].weight)
    assert type(nets["callback"].model.features[0]) is nn.Conv2d  # the model keeps its padding
