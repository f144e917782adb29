"""Recipe: train a zero-padded CNN on the embedded digits with ``PANMonitor`` -> switch its padding
(reflect, replicate, circular or partial) -> evaluate -> fine-tune with the new padding
(``PaddingSwitch`` at fit start) -> compare (HTML report). Every stage is a W&B run (offline by
default) in one group and leaves a ``results.json``.

Run: ``python recipes/padding_switch_finetune.py [--config recipes/configs/padding_switch.yaml] [--mode partial ...]``
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pan_repair import SmallCNN, converted_copy
from pan_repair.lightning import PaddingSwitch, PANMonitor
from pan_repair.lit_module import BiasAwareClassifier
from pan_repair.padding_switch import MODES
from pan_repair.pipeline import Experiment
from pan_repair.recipe_cli import run_recipe


def padding_switch_finetune(out_dir: str = "runs/padding_switch", mode: str = "partial", layers: str = "all",
                            epochs: int = 6, finetune_epochs: int = 3, placement: str = "biased",
                            eval_placement: str = "random", classes: Sequence[int] | None = None,
                            width: int = 24, depth: int = 5, strides: Sequence[int] = (2,),
                            batch_size: int = 64, lr: float = 3e-3, seed: int = 0, wandb: bool = True) -> Path:
    """Train, switch the padding, fine-tune; returns the comparison report's path.

    Args:
        out_dir: where runs and the report go.
        mode: the new padding: reflect, replicate, circular or partial.
        layers: ``all`` (every padded layer) or ``pans`` (the padded layers holding PANs).
        epochs: training epochs of the baseline (zero padding).
        finetune_epochs: fine-tuning epochs with the new padding (at most ``epochs``).
        placement: training placement of the digits (random, center, biased, swapped).
        eval_placement: validation placement.
        classes: digits to use (default all ten).
        width: channels per conv of the SmallCNN.
        depth: conv blocks.
        strides: indices of the conv blocks that downsample by 2.
        batch_size: batch size.
        lr: AdamW learning rate (cosine schedule); fine-tuning uses a third of it.
        seed: seed of data, weights and training.
        wandb: log every stage to W&B (offline unless WANDB_MODE says otherwise).
    """
    if finetune_epochs > epochs:
        raise ValueError(f"finetune_epochs ({finetune_epochs}) exceeds the training budget ({epochs})")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if layers not in ("all", "pans"):
        raise ValueError(f"layers must be 'all' or 'pans', got {layers!r}")
    exp = Experiment("padding_switch_finetune", out_dir, placement, eval_placement, classes, batch_size, seed, wandb)
    module = BiasAwareClassifier(SmallCNN(1, exp.n_classes, width=width, depth=depth, strides=strides),
                                 exp.n_classes, lr=lr, max_offset=16)
    print(f"[1/4] training the zero-padded baseline for {epochs} epochs")
    report = exp.fit(module, "baseline", epochs, [PANMonitor(input_size=exp.input_size)]).pan_report()
    print(f"      {report}")
    chosen = None if layers == "all" else report
    switched = BiasAwareClassifier(converted_copy(module.model, mode, chosen), exp.n_classes, lr=lr, max_offset=16)
    print(f"[2/4] switched to {mode} padding; evaluating before fine-tuning")
    exp.fit(switched, f"{mode}", 0)
    print(f"[3/4] fine-tuning with {mode} padding for {finetune_epochs} epochs")
    module.hparams.lr = lr / 3
    switch = PaddingSwitch(mode, None if layers == "all" else "pans", input_size=exp.input_size, model_attr="model")
    exp.fit(module, f"{mode}+finetuned", finetune_epochs, [switch, PANMonitor(input_size=exp.input_size)])
    print("[4/4] results")
    return exp.finish()


if __name__ == "__main__":
    sys.exit(run_recipe(padding_switch_finetune))
