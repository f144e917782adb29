"""The JSON record every recipe run leaves beside its logs (``results.json``), so reports never
depend on parsing W&B files."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..detect.report import PanReport

__all__ = ["RunResult", "RESULTS_FILE"]

RESULTS_FILE = "results.json"


@dataclass
class RunResult:
    """One run's results.

    Attributes:
        name: run name (e.g. ``"baseline"``, ``"pruned+finetuned"``).
        group: the comparison it belongs to (also the W&B group).
        recipe: the recipe that produced it.
        metrics: scalar results, e.g. ``val/acc``, ``val/border_gap``, ``val/padding_flip``,
            ``pan/count``, ``swapped/acc``, ``time/seconds``.
        border_curve: accuracy per distance to the border (px 0..D; None where no sample).
        history: PAN counts during training, ``[{"epoch": e, "count": n, "border": b, "position": p}]``
            (a scan that failed: ``{"epoch": e, "step": s, "failed": True, "reason": "..."}``).
        report: the final :class:`PanReport` as a dict.
    """

    name: str
    group: str
    recipe: str
    metrics: dict[str, float] = field(default_factory=dict)
    border_curve: list[float | None] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] | None = None

    def pan_report(self) -> PanReport | None:
        return PanReport.from_dict(self.report) if self.report else None

    def save(self, run_dir: str | Path) -> Path:
        """Write ``run_dir/results.json`` atomically."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / RESULTS_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> "RunResult":
        path = Path(run_dir) / RESULTS_FILE
        if not Path(run_dir).is_dir():
            raise ValueError(f"run directory {run_dir} does not exist")
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except FileNotFoundError:
            raise ValueError(f"{run_dir} holds no {RESULTS_FILE}: not a pan_repair run") from None
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{path} is corrupt: {err}") from None
