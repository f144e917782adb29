"""Reading logged runs back: offline W&B runs (:mod:`.wandb_offline`), the ``results.json`` every
recipe run leaves (:mod:`.results`) and the runs ``pan-repair compare`` compares, from wherever
they lie (:mod:`.logged_runs`)."""
from .logged_runs import LoggedRun, read_runs
from .results import RESULTS_FILE, RunResult
from .wandb_offline import read_offline_run

__all__ = ["read_runs", "LoggedRun", "RunResult", "RESULTS_FILE", "read_offline_run"]
