"""Recipe: train the same CNN on the embedded digits twice, side by side — plainly, and with the
PAN penalty (``PANRegularizer``) or the padding-consistency penalty
(``PaddingConsistencyRegularizer``) — then fine-tune the plain one with the penalty (repair within
the training budget) -> compare (HTML report). ``PANMonitor`` watches PANs in every stage; every
stage is a W&B run (offline by default) in one group and leaves a ``results.json``.

Run: ``python recipes/regularized_training.py [--config recipes/configs/regularized.yaml] [--weight 0.5 ...]``
"""

import sys
from pathlib import Path
from typing import Optional

from pan_repair.lightning import PaddingConsistencyRegularizer, PANRegularizer
from pan_repair.experiments.pipeline import DigitsSetup, Experiment
from pan_repair.experiments.recipe_cli import run_recipe


def regularized_training(out_dir: str = "runs/regularized", penalty: str = "pan", weight: Optional[float] = None,
                         warmup_steps: int = 0, n_patterns: Optional[int] = None, every: Optional[int] = None,
                         epochs: int = 6, finetune_epochs: int = 6, setup: DigitsSetup = DigitsSetup()) -> Path:
    """Train with and without the PAN penalty, then repair the plain model by fine-tuning with it.

    Args:
        out_dir: where runs and the report go.
        penalty: ``pan`` (the PAN penalty on synthetic probes, ``PANRegularizer``) or
            ``consistency`` (agreement with the circular-padded twin on the training batch,
            ``PaddingConsistencyRegularizer``).
        weight: weight of the penalty (default: the callback's, 0.03 for ``pan``, 0.5 for ``consistency``).
        warmup_steps: optimizer steps of the penalty's linear warm-up.
        n_patterns: probe patterns per penalty step (``pan`` only; default ``PANPenalty``'s).
        every: compute the penalty every this many steps, scaled by it (default the callback's).
        epochs: training epochs of both trainings (from the same initial weights).
        finetune_epochs: epochs of the repair fine-tuning (at most ``epochs``; 0 skips it).
        setup: the digits experiment (placement, model, optimiser, seed, W&B).
    """
    if finetune_epochs > epochs:
        raise ValueError(f"finetune_epochs ({finetune_epochs}) exceeds the training budget ({epochs})")
    exp = Experiment("regularized_training", out_dir, setup)

    def regularizer() -> PANRegularizer | PaddingConsistencyRegularizer:
        options = {k: v for k, v in (("weight", weight), ("every", every)) if v is not None}
        if penalty == "consistency":
            return PaddingConsistencyRegularizer(warmup_steps=warmup_steps, model_attr="model", **options)
        if n_patterns is not None:
            options["n_patterns"] = n_patterns
        return PANRegularizer(warmup_steps=warmup_steps, input_size=exp.input_size, model_attr="model",
                              seed=setup.seed, **options)

    if penalty not in ("pan", "consistency"):
        raise ValueError(f"penalty must be 'pan' or 'consistency', got {penalty!r}")

    regularizer()  # bad penalty settings fail here, before any training
    print(f"[1/4] training without the penalty for {epochs} epochs")
    plain = exp.module()
    exp.fit(plain, "plain", epochs, [exp.monitor()])
    print(f"[2/4] training with the {penalty} penalty for {epochs} epochs")
    exp.fit(exp.module(), "regularized", epochs, [regularizer(), exp.monitor()])
    if finetune_epochs:
        print(f"[3/4] fine-tuning the plain model with the penalty for {finetune_epochs} epochs")
        exp.fit(plain, "plain+regularized_finetune", finetune_epochs,
                [regularizer(), exp.monitor()])
    print("[4/4] results")
    return exp.finish()


if __name__ == "__main__":
    sys.exit(run_recipe(regularized_training))
