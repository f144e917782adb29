"""PAN history during training: per-scan summaries and when each PAN was first and last seen.

Pure bookkeeping (no Lightning), used by :class:`~pan_repair.callbacks.PANMonitor` and
saved in its checkpoints and JSON. A PAN is identified by ``"layer:channel"``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..detect.report import PanReport

__all__ = ["PanHistory", "pan_id"]


def pan_id(layer: str, channel: int) -> str:
    """Identifier of a PAN across scans: ``"layer:channel"``."""
    return f"{layer}:{channel}"


@dataclass
class PanHistory:
    """What every scan found, in order.

    Attributes:
        scans: one summary per scan, ``{"epoch", "step", "count", "border", "position",
            "total_filters", "fraction", "per_layer": {layer: n}, "new": [ids], "gone": [ids],
            "output_shift", "flip_rate"}`` (the last two: the model-level padding dependence,
            None where not measured)
            (``new``/``gone``: PANs that appeared/disappeared since the previous scan; together
            they give the exact set present at every scan). A superset of
            :attr:`pan_repair.runs.results.RunResult.history` entries. A scan that failed is
            ``{"epoch", "step", "failed": True, "reason"}`` (:meth:`record_failure`).
        pans: per PAN id ever seen, ``{"layer", "channel", "kind", "score", "first_seen_epoch",
            "first_seen_step", "last_seen_epoch", "last_seen_step", "scans_seen", "present"}``
            (``kind``/``score`` from its latest sighting; ``present``: found by the latest scan).
    """

    scans: list[dict[str, Any]] = field(default_factory=list)
    pans: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, report: PanReport, epoch: int, step: int) -> dict[str, Any]:
        """Add one scan's result; returns its summary (an element of :attr:`scans`)."""
        found = {pan_id(p.layer, p.channel): p for p in report.pans}
        before = self.present()
        for pid, info in self.pans.items():
            info["present"] = pid in found
        for pid, pan in found.items():
            info = self.pans.setdefault(pid, {
                "layer": pan.layer, "channel": pan.channel,
                "first_seen_epoch": epoch, "first_seen_step": step, "scans_seen": 0,
            })
            info.update(kind=pan.kind, score=float(pan.score), last_seen_epoch=epoch, last_seen_step=step,
                        present=True)
            info["scans_seen"] += 1
        summary = {
            "epoch": int(epoch), "step": int(step), "count": report.count,
            "border": len(report.of_kind("border")), "position": len(report.of_kind("position")),
            "total_filters": report.total_filters, "fraction": report.fraction,
            "per_layer": {layer: len(pans) for layer, pans in report.by_layer().items()},
            "new": sorted(set(found) - before), "gone": sorted(before - set(found)),
            **{k: (report.padding_dependence or {}).get(k) for k in ("output_shift", "flip_rate")},
        }
        self.scans.append(summary)
        return summary

    def record_failure(self, epoch: int, step: int, reason: str) -> dict[str, Any]:
        """Add a scan that failed (the PANs present stay those of the last successful scan)."""
        summary = {"epoch": int(epoch), "step": int(step), "failed": True, "reason": str(reason)}
        self.scans.append(summary)
        return summary

    def present(self) -> set[str]:
        """Ids of the PANs found by the latest scan."""
        return {pid for pid, info in self.pans.items() if info["present"]}

    def first_seen(self) -> dict[str, int]:
        """PAN id -> epoch of its first sighting."""
        return {pid: info["first_seen_epoch"] for pid, info in self.pans.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"scans": [dict(s) for s in self.scans], "pans": {k: dict(v) for k, v in self.pans.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PanHistory":
        try:
            return cls([dict(s) for s in d["scans"]], {str(k): dict(v) for k, v in d["pans"].items()})
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"not a PanHistory dictionary: {err!r}") from None
