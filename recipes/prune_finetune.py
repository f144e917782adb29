"""Recipe: train a CNN on the embedded digits with ``PANMonitor`` -> detect PANs -> prune them ->
fine-tune -> compare (HTML report). Every stage is a W&B run (offline by default) in one group and
leaves a ``results.json``.

Run: ``python recipes/prune_finetune.py [--config recipes/configs/demo.yaml] [--epochs 6 ...]``
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as L

from pan_repair import SmallCNN, find_pans
from pan_repair.compare import build_report
from pan_repair.lightning import PANMonitor
from pan_repair.lit_module import BiasAwareClassifier
from pan_repair.pipeline import Stage, digits_data, fit_stage
from pan_repair.pruning import prune_pans
from pan_repair.recipe_cli import run_recipe


def prune_finetune(out_dir: str = "runs/prune_finetune", epochs: int = 6, finetune_epochs: int = 3,
                   placement: str = "biased", eval_placement: str = "random",
                   classes: Sequence[int] | None = None, width: int = 24, depth: int = 5,
                   strides: Sequence[int] = (2,), batch_size: int = 64, lr: float = 3e-3, kinds: Sequence[str] = ("border", "position"),
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
        lr: AdamW learning rate (cosine schedule).
        kinds: PAN kinds to prune (border, position).
        seed: seed of data, weights and training.
        wandb: log every stage to W&B (offline unless WANDB_MODE says otherwise).
    """
    if finetune_epochs > epochs:
        raise ValueError(f"finetune_epochs ({finetune_epochs}) exceeds the training budget ({epochs})")
    L.seed_everything(seed, verbose=False)
    root, group = Path(out_dir), f"prune_finetune-seed{seed}"
    data, swapped = digits_data(placement, eval_placement, classes, batch_size, seed)
    n_classes = len(classes) if classes else 10
    size = (1, 32, 32)
    module = BiasAwareClassifier(SmallCNN(1, n_classes, width=width, depth=depth, strides=strides), n_classes, lr=lr,
                                 max_offset=16)
    scan = lambda model: find_pans(model, size)  # noqa: E731

    def stage(name: str) -> Stage:
        return Stage(root, name, group, "prune_finetune")

    print(f"[1/4] training the baseline for {epochs} epochs")
    runs = [fit_stage(module, data, swapped, stage("baseline"), epochs, [PANMonitor(input_size=size)],
                      wandb, scan)]
    report = runs[0].pan_report()
    print(f"      {report}")
    summary = prune_pans(module.model, report, kinds=kinds)
    print(f"[2/4] pruned {summary.count} PANs; evaluating")
    runs.append(fit_stage(module, data, swapped, stage("pruned"), 0, (), wandb, scan))
    print(f"[3/4] fine-tuning for {finetune_epochs} epochs")
    module.hparams.lr = lr / 3
    runs.append(fit_stage(module, data, swapped, stage("pruned+finetuned"), finetune_epochs,
                          [PANMonitor(input_size=size)], wandb, scan))
    path = build_report([r.dir for r in (stage(r.name) for r in runs)], root / "report")
    print("[4/4] results")
    for run in runs:
        m = run.metrics
        print(f"      {run.name:18s} acc {m['val/acc']:.3f}  swapped acc {m['swapped/acc']:.3f}  "
              f"border gap {m.get('val/border_gap', float('nan')):+.3f}  padding flips {m['val/padding_flip']:.3f}  "
              f"PANs {int(m['pan/count'])}")
    print(f"report: {path.resolve()}")
    return path


if __name__ == "__main__":
    sys.exit(run_recipe(prune_finetune))
