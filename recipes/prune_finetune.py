"""Recipe: train a CNN on the embedded digits with ``PANMonitor`` -> detect PANs -> prune them ->
fine-tune (``PANPruning`` re-detects and prunes PANs that emerge) -> compare (HTML report). Every
stage is a W&B run (offline by default) in one group and leaves a ``results.json``.

Run: ``python recipes/prune_finetune.py [--config recipes/configs/demo.yaml] [--epochs 6 ...]``
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pan_repair import SmallCNN
from pan_repair.lightning import PANMonitor, PANPruning
from pan_repair.lit_module import BiasAwareClassifier
from pan_repair.pipeline import Experiment
from pan_repair.pruning import prune_pans
from pan_repair.recipe_cli import run_recipe


def prune_finetune(out_dir: str = "runs/prune_finetune", epochs: int = 6, finetune_epochs: int = 3,
                   placement: str = "biased", eval_placement: str = "random",
                   classes: Sequence[int] | None = None, width: int = 24, depth: int = 5,
                   strides: Sequence[int] = (2,), batch_size: int = 64, lr: float = 3e-3,
                   kinds: Sequence[str] = ("border", "position"), redetect: bool = True,
                   seed: int = 0, wandb: bool = True) -> Path:
    """Train, detect, prune and fine-tune; returns the comparison report's path.

    Args:
        out_dir: where runs and the report go.
        epochs: training epochs of the baseline.
        finetune_epochs: fine-tuning epochs after pruning (at most ``epochs``: same budget).
        placement: training placement of the digits: random, center, biased (class tied to the
            top/bottom half: a placement shortcut) or swapped.
        eval_placement: validation placement.
        classes: digits to use (default all ten).
        width: channels per conv of the SmallCNN.
        depth: conv blocks.
        strides: indices of the conv blocks that downsample by 2.
        batch_size: batch size.
        lr: AdamW learning rate (cosine schedule); fine-tuning uses a third of it.
        kinds: PAN kinds to prune (border, position).
        redetect: during fine-tuning, re-detect at every epoch start and prune new PANs (``PANPruning``).
        seed: seed of data, weights and training.
        wandb: log every stage to W&B (offline unless WANDB_MODE says otherwise).
    """
    if finetune_epochs > epochs:
        raise ValueError(f"finetune_epochs ({finetune_epochs}) exceeds the training budget ({epochs})")
    exp = Experiment("prune_finetune", out_dir, placement, eval_placement, classes, batch_size, seed, wandb)
    module = BiasAwareClassifier(SmallCNN(1, exp.n_classes, width=width, depth=depth, strides=strides),
                                 exp.n_classes, lr=lr, max_offset=16)
    print(f"[1/4] training the baseline for {epochs} epochs")
    report = exp.fit(module, "baseline", epochs, [PANMonitor(input_size=exp.input_size)]).pan_report()
    print(f"      {report}")
    summary = prune_pans(module.model, report, kinds=kinds)
    print(f"[2/4] pruned {summary.count} PANs; evaluating")
    exp.fit(module, "pruned", 0)
    print(f"[3/4] fine-tuning for {finetune_epochs} epochs")
    module.hparams.lr = lr / 3
    callbacks = [PANMonitor(input_size=exp.input_size)]
    if redetect:
        callbacks.append(PANPruning(kinds=kinds, input_size=exp.input_size, model_attr="model"))
    exp.fit(module, "pruned+finetuned", finetune_epochs, callbacks)
    print("[4/4] results")
    return exp.finish()


if __name__ == "__main__":
    sys.exit(run_recipe(prune_finetune))
