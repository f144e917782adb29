"""Recipe: train a CNN on the embedded digits with ``PANMonitor`` -> detect PANs -> prune them ->
fine-tune (``PANPruning`` re-detects and prunes PANs that emerge) -> compare (HTML report). Every
stage is a W&B run (offline by default) in one group and leaves a ``results.json``.

Run: ``python recipes/prune_finetune.py [--config recipes/configs/demo.yaml] [--epochs 6 --setup.width 16 ...]``
"""

import sys
from collections.abc import Sequence
from pathlib import Path

from pan_repair.lightning import PANPruning
from pan_repair.experiments.pipeline import DigitsSetup, Experiment
from pan_repair.repair.pruning import prune_pans
from pan_repair.experiments.recipe_cli import run_recipe


def prune_finetune(out_dir: str = "runs/prune_finetune", epochs: int = 6, finetune_epochs: int = 3,
                   kinds: Sequence[str] = ("border", "position"),
                   border_threshold: float | None = None,
                   position_threshold: float | None = None, redetect: bool = True,
                   baseline: str | None = None, setup: DigitsSetup = DigitsSetup()) -> Path:
    """Train, detect, prune and fine-tune; returns the comparison report's path.

    Args:
        out_dir: where runs and the report go.
        epochs: training epochs of the baseline.
        finetune_epochs: fine-tuning epochs after pruning (at most ``epochs``: same budget), at a
            third of the learning rate.
        kinds: PAN kinds to prune (border, position).
        border_threshold: border-score threshold of the PANs to prune (and of every scan); default
            that of scans on data (:data:`pan_repair.detect.detector.DEFAULT_DATA_BORDER_THRESHOLD`).
        position_threshold: position-score threshold of the PANs to prune (and of every scan);
            default that of scans on data (:data:`pan_repair.detect.detector.DEFAULT_DATA_POSITION_THRESHOLD`).
        redetect: during fine-tuning, re-detect at every epoch start and prune new PANs (``PANPruning``).
        baseline: start from these weights instead of training (a run directory holding
            ``model.pt``, e.g. another recipe's ``baseline``, or a state-dict file); ``setup``
            must describe the same network.
        setup: the digits experiment (placement, model, optimiser, seed, W&B).
    """
    if finetune_epochs > epochs:
        raise ValueError(f"finetune_epochs ({finetune_epochs}) exceeds the training budget ({epochs})")
    thresholds = dict(border_threshold=border_threshold, position_threshold=position_threshold)
    exp = Experiment("prune_finetune", out_dir, setup, **thresholds)
    module = exp.baseline(epochs, baseline, "baseline")
    report = exp.scan(module.model)
    summary = prune_pans(module.model, report, kinds=kinds)
    print(f"[2/4] pruned {summary.count} PANs ({report}); evaluating")
    exp.fit(module, "pruned", 0)
    print(f"[3/4] fine-tuning for {finetune_epochs} epochs")
    module.hparams.lr = setup.lr / 3
    callbacks = [exp.monitor()]
    if redetect:
        callbacks.append(exp.calibrated(PANPruning(kinds=kinds, input_size=exp.input_size, model_attr="model",
                                                   **thresholds)))
    exp.fit(module, "pruned+finetuned", finetune_epochs, callbacks)
    print("[4/4] results")
    return exp.finish()


if __name__ == "__main__":
    sys.exit(run_recipe(prune_finetune))
