"""A time budget: how much of it is spent and how much is left (a diagnosis, a sensitivity search)."""

from __future__ import annotations

import time


class Deadline:
    """Time spent and left of a budget (a diagnosis, a sensitivity search)."""

    def __init__(self, budget_s: float) -> None:
        self.started = time.perf_counter()
        self.budget_s = budget_s

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self, share: float = 1.0) -> float:
        return self.budget_s * share - self.elapsed
