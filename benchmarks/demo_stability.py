"""Does ``make demo`` tell the same story on every machine? Its two recipes (prune-and-finetune,
then a replicate padding switch from the same baseline) with the demo's settings
(``recipes/configs/demo.yaml``) over seeds and torch thread counts, one process per run.

Per run and stage: PANs, padding flips (share of predictions that change when every padding
becomes replicate), accuracy on random placements and on swapped placements. The story holds on
a run when the baseline has PANs and flips > 5%, pruning removes every PAN it found, and
pruning + fine-tuning and the replicate switch each lower the flips and raise the swapped
accuracy. Prints per-run rows and the ranges (min-max) over runs.

    .venv/bin/python benchmarks/demo_stability.py [--seeds 0 1 2 3 4] [--threads 1 2] [--workers 2]
        [--jsonl out.jsonl] [--from-jsonl out.jsonl]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("baseline", "pruned", "pruned+finetuned", "replicate", "replicate+finetuned")
KEYS = ("pan/count", "val/padding_flip", "val/acc", "swapped/acc")


def run(seed: int, threads: int, epochs: int | None = None, finetune_epochs: int | None = None) -> dict:
    """Both demo recipes at ``seed`` on ``threads`` torch threads (W&B off); metrics per stage.
    ``epochs``/``finetune_epochs`` override the demo's (smoke tests)."""
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT / "recipes"))
    from padding_switch_finetune import padding_switch_finetune
    from prune_finetune import prune_finetune

    from pan_repair.experiments.pipeline import DigitsSetup
    from pan_repair.runs.results import RunResult

    config = yaml.safe_load((ROOT / "recipes/configs/demo.yaml").read_text())
    setup = DigitsSetup(**{**config["setup"], "strides": tuple(config["setup"]["strides"]), "seed": seed,
                           "wandb": False})
    epochs, finetune_epochs = epochs or config["epochs"], finetune_epochs or config["finetune_epochs"]
    out = Path(tempfile.mkdtemp(prefix=f"demo_s{seed}_t{threads}_"))
    prune_finetune(str(out), epochs, finetune_epochs, setup=setup)
    padding_switch_finetune(str(out), "replicate", epochs=epochs, finetune_epochs=finetune_epochs,
                            baseline=str(out / "baseline"), setup=setup)
    stages = {s: {k: RunResult.load(out / s).metrics.get(k) for k in KEYS} for s in STAGES}
    return {"seed": seed, "threads": threads, "torch": torch.__version__, "stages": stages}


def _better(r: dict, stage: str) -> bool:
    s, base = r["stages"], r["stages"]["baseline"]
    return s[stage]["val/padding_flip"] < base["val/padding_flip"] and s[stage]["swapped/acc"] > base["swapped/acc"]


def holds(r: dict) -> bool:
    """The demo's story: PANs and padding reliance in the baseline, the replicate switch repairs."""
    s = r["stages"]
    return (s["baseline"]["pan/count"] > 0 and s["baseline"]["val/padding_flip"] > 0.05
            and all(s[x]["pan/count"] == 0 and _better(r, x) for x in ("replicate", "replicate+finetuned")))


def pruning_helps(r: dict) -> bool:
    return r["stages"]["pruned"]["pan/count"] == 0 and _better(r, "pruned+finetuned")


def table(results: list[dict]) -> str:
    lines = ["| seed | threads | " + " | ".join(f"{s}: PANs / flips / acc / swapped" for s in STAGES) + " | story | pruning helps |",
             "|---|---|" + "---|" * len(STAGES) + "---|---|"]
    for r in sorted(results, key=lambda r: (r["seed"], r["threads"])):
        cells = [f"{m['pan/count']:.0f} / {m['val/padding_flip']:.3f} / {m['val/acc']:.3f} / {m['swapped/acc']:.3f}"
                 for m in (r["stages"][s] for s in STAGES)]
        lines.append(f"| {r['seed']} | {r['threads']} | " + " | ".join(cells) + f" | {'holds' if holds(r) else 'NO'} | {'yes' if pruning_helps(r) else 'no'} |")
    lines += ["", "| stage | PANs | padding flips | acc | swapped acc |", "|---|---|---|---|---|"]
    for s in STAGES:
        cols = [[r["stages"][s][k] for r in results] for k in KEYS]
        lines.append(f"| {s} | {min(cols[0]):.0f}-{max(cols[0]):.0f} | " + " | ".join(
            f"{min(c):.3f}-{max(c):.3f}" for c in cols[1:]) + " |")
    lines.append(f"\nstory holds on {sum(map(holds, results))} of {len(results)} runs; pruning + fine-tuning "
                 f"lowers the flips and raises the swapped accuracy on {sum(map(pruning_helps, results))} "
                 f"(torch {', '.join(sorted({r['torch'] for r in results}))})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--epochs", type=int, help="override the demo's epochs (smoke tests)")
    parser.add_argument("--finetune-epochs", type=int, help="override the demo's fine-tuning epochs")
    parser.add_argument("--jsonl", help="append each finished run here")
    parser.add_argument("--from-jsonl", help="only print the table of these runs")
    args = parser.parse_args()
    if args.from_jsonl:
        results = [json.loads(line) for line in Path(args.from_jsonl).read_text().splitlines() if line.strip()]
    else:
        os.environ.setdefault("WANDB_MODE", "offline")
        jobs = [(s, t) for s in args.seeds for t in args.threads]
        results = []
        with ProcessPoolExecutor(args.workers) as pool:
            runs = pool.map(run, *zip(*jobs), [args.epochs] * len(jobs), [args.finetune_epochs] * len(jobs))
            for r in runs:
                results.append(r)
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        f.write(json.dumps(r) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
