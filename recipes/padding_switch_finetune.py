"""Recipe: train a zero-padded CNN on the embedded digits with ``PANMonitor`` -> switch its padding
(reflect, replicate, circular, partial or full convolution) -> evaluate -> fine-tune with the new padding
(``PaddingSwitch`` at fit start) -> compare (HTML report). Every stage is a W&B run (offline by
default) in one group and leaves a ``results.json``.

Run: ``python recipes/padding_switch_finetune.py [--config recipes/configs/padding_switch.yaml] [--mode partial ...]``
"""

import sys
from pathlib import Path

from pan_repair import converted_copy
from pan_repair.lightning import PaddingSwitch
from pan_repair.layers.padding_switch import MODES
from pan_repair.experiments.pipeline import DigitsSetup, Experiment
from pan_repair.experiments.recipe_cli import run_recipe


def padding_switch_finetune(out_dir: str = "runs/padding_switch", mode: str = "partial", layers: str = "all",
                            epochs: int = 6, finetune_epochs: int = 3, baseline: str | None = None,
                            setup: DigitsSetup = DigitsSetup()) -> Path:
    """Train, switch the padding, fine-tune; returns the comparison report's path.

    Args:
        out_dir: where runs and the report go.
        mode: the new padding: reflect, replicate, circular, partial or full (F-Conv: maps grow, the
            SmallCNN's global pooling head takes them).
        layers: ``all`` (every padded layer) or ``pans`` (the padded layers holding PANs).
        epochs: training epochs of the baseline (zero padding).
        finetune_epochs: fine-tuning epochs with the new padding (at most ``epochs``), at a third
            of the learning rate.
        baseline: start from these weights instead of training (a run directory holding
            ``model.pt``, e.g. ``runs/demo/baseline``, or a state-dict file); ``setup`` must
            describe the same network.
        setup: the digits experiment (placement, model, optimiser, seed, W&B).
    """
    if finetune_epochs > epochs:
        raise ValueError(f"finetune_epochs ({finetune_epochs}) exceeds the training budget ({epochs})")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if layers not in ("all", "pans"):
        raise ValueError(f"layers must be 'all' or 'pans', got {layers!r}")
    exp = Experiment("padding_switch_finetune", out_dir, setup)
    module = exp.baseline(epochs, baseline, "zero-padded baseline")
    report = exp.scan(module.model)
    print(f"      {report}")
    print(f"[2/4] switched to {mode} padding; evaluating before fine-tuning")
    exp.fit(exp.module(converted_copy(module.model, mode, None if layers == "all" else report,
                                             input_size=exp.input_size)), mode, 0)
    print(f"[3/4] fine-tuning with {mode} padding for {finetune_epochs} epochs")
    module.hparams.lr = setup.lr / 3
    switch = PaddingSwitch(mode, None if layers == "all" else "pans", input_size=exp.input_size, model_attr="model")
    exp.fit(module, f"{mode}+finetuned", finetune_epochs, [switch, exp.monitor()])
    print("[4/4] results")
    return exp.finish()


if __name__ == "__main__":
    sys.exit(run_recipe(padding_switch_finetune))
