"""A time budget for a callback's periodic work (``PANMonitor``'s scans): :class:`ScanBudget`."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["ScanBudget"]


@dataclass
class ScanBudget:
    """Keeps scans within ``max_overhead`` (a share, e.g. 0.02) of the training time.

    A scan costs about as much whatever the data set, an epoch as much as the data set holds: once
    per epoch is a few percent of a small data set's training (a 1,400-image epoch at 32 px) and
    more with a large model on a small one (a 15 s scan of a pretrained model at 224 px after each
    100 s epoch of fine-tuning). A scan runs only if

        spent + last <= max_overhead * training

    ``spent``: wall seconds in scans since :meth:`start`; ``last``: the latest scan's seconds (the
    estimate of the next); ``training``: wall seconds since :meth:`start`, scans excluded. So the
    scans take at most ``max_overhead`` of the training time, plus the first scan (its cost is
    unknown before it runs) and whatever the latest scan cost more than the one before it (on a
    GPU the same scan took 33-40 ms: a 6 s run ended at 2.13%). ``clock``: seconds
    (``time.perf_counter``; replaceable in tests).
    """

    max_overhead: float
    spent: float = 0.0
    last: float = 0.0
    started: float | None = None
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False)

    def start(self) -> None:
        """The fit's training starts now: nothing spent yet."""
        self.started, self.spent, self.last = self.clock(), 0.0, 0.0

    def training(self) -> float:
        """Wall seconds of training since :meth:`start`, scans excluded."""
        return 0.0 if self.started is None else self.clock() - self.started - self.spent

    def allows(self) -> bool:
        """Whether the next scan, at the latest scan's cost, keeps the scans within the budget."""
        return self.spent + self.last <= self.max_overhead * self.training()

    def charge(self, seconds: float) -> None:
        """A scan took ``seconds``."""
        self.spent += seconds
        self.last = seconds
