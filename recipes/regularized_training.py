"""Recipe: train the same CNN on the embedded digits twice, side by side — plainly, and with the
PAN penalty (``PANRegularizer``) — then fine-tune the plain one with the penalty (repair within
the training budget) -> compare (HTML report). ``PANMonitor`` watches PANs in every stage; every
stage is a W&B run (offline by default) in one group and leaves a ``results.json``.

Run: ``python recipes/regularized_training.py [--config recipes/configs/regularized.yaml] [--weight 0.5 ...]``
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as L

from pan_repair import SmallCNN
from pan_repair.lightning import PANMonitor, PANRegularizer
from pan_repair.lit_module import BiasAwareClassifier
from pan_repair.pipeline import Experiment
from pan_repair.recipe_cli import run_recipe


def regularized_training(out_dir: str = "runs/regularized", weight: float = 1.0, warmup_steps: int = 0,
                         n_patterns: int = 4, every: int = 4, epochs: int = 6, finetune_epochs: int = 6,
                         placement: str = "biased", eval_placement: str = "random",
                         classes: Sequence[int] | None = None, width: int = 24, depth: int = 5,
                         strides: Sequence[int] = (2,), batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
                         wandb: bool = True) -> Path:
    """Train with and without the PAN penalty, then repair the plain model by fine-tuning with it.

    Args:
        out_dir: where runs and the report go.
        weight: weight of the penalty (``PANRegularizer``).
        warmup_steps: optimizer steps of the penalty's linear warm-up.
        n_patterns: probe patterns per penalty step (``PANPenalty``).
        every: compute the penalty every this many steps (scaled by it).
        epochs: training epochs of both trainings.
        finetune_epochs: epochs of the repair fine-tuning (at most ``epochs``; 0 skips it).
        placement: training placement of the digits (random, center, biased, swapped).
        eval_placement: validation placement.
        classes: digits to use (default all ten).
        width: channels per conv of the SmallCNN.
        depth: conv blocks.
        strides: indices of the conv blocks that downsample by 2.
        batch_size: batch size.
        lr: AdamW learning rate (cosine schedule).
        seed: seed of data, weights and training (both trainings start from the same weights).
        wandb: log every stage to W&B (offline unless WANDB_MODE says otherwise).
    """
    if finetune_epochs > epochs:
        raise ValueError(f"finetune_epochs ({finetune_epochs}) exceeds the training budget ({epochs})")
    exp = Experiment("regularized_training", out_dir, placement, eval_placement, classes, batch_size, seed, wandb)

    def module() -> BiasAwareClassifier:
        L.seed_everything(seed, verbose=False)
        return BiasAwareClassifier(SmallCNN(1, exp.n_classes, width=width, depth=depth, strides=strides),
                                   exp.n_classes, lr=lr, max_offset=16)

    def regularizer() -> PANRegularizer:
        return PANRegularizer(weight, warmup_steps=warmup_steps, n_patterns=n_patterns, every=every,
                              input_size=exp.input_size, model_attr="model", seed=seed)

    regularizer()  # bad penalty settings fail here, before any training
    print(f"[1/4] training without the penalty for {epochs} epochs")
    plain = module()
    exp.fit(plain, "plain", epochs, [PANMonitor(input_size=exp.input_size)])
    print(f"[2/4] training with the penalty (weight {weight}) for {epochs} epochs")
    exp.fit(module(), "regularized", epochs, [regularizer(), PANMonitor(input_size=exp.input_size)])
    if finetune_epochs:
        print(f"[3/4] fine-tuning the plain model with the penalty for {finetune_epochs} epochs")
        exp.fit(plain, "plain+regularized_finetune", finetune_epochs,
                [regularizer(), PANMonitor(input_size=exp.input_size)])
    print("[4/4] results")
    return exp.finish()


if __name__ == "__main__":
    sys.exit(run_recipe(regularized_training))
