"""Keeping a pool's contexts healthy: probe idle contexts against the warm-up reference, rebuild
the ones that fail (after a failed request too, unless the probe passes: then the request's inputs
failed, not the context), optionally in a background loop.

A probe never makes traffic wait: contexts serving requests are skipped, and so is everything
while requests wait for a context.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trtforge.errors import first_line
from trtforge.runtime.lending import Lender, PoolState, Slot, SlotState, deactivate_quietly

if TYPE_CHECKING:
    from trtforge.runners.base import Runner
    from trtforge.runtime.metrics import PoolMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthReport:
    """What ``check()`` did: which idle contexts passed, which were rebuilt, which stay broken."""

    state: PoolState
    healthy: tuple[int, ...]
    rebuilt: tuple[int, ...]
    broken: tuple[tuple[int, str], ...]
    skipped: tuple[int, ...]  # busy serving requests (or requests were waiting): not probed this time

    @property
    def ok(self) -> bool:
        return not self.broken


def outputs_match(reference: Mapping[str, Any], outputs: Mapping[str, Any]) -> str | None:
    """None when a probe reproduced the warm-up reference; else what differs.

    Tolerant (rtol 1e-3, atol 1e-3 of the reference's scale): contexts of one engine run the same
    kernels, but some reductions are not bit-exact across runs.
    """
    import numpy as np

    for name, expected in reference.items():
        got = outputs.get(name)
        if got is None:
            return f"output '{name}' is missing"
        got, expected = np.asarray(got), np.asarray(expected)
        if got.shape != expected.shape:
            return f"output '{name}' has shape {list(got.shape)}, expected {list(expected.shape)}"
        if expected.dtype.kind in "OSU" or got.dtype.kind in "OSU":  # an ONNX model's strings: equal or not
            if not np.array_equal(got, expected):
                return f"output '{name}' differs from the warm-up reference"
            continue
        if got.dtype.kind in "fc" and not np.all(np.isfinite(got)):
            return f"output '{name}' holds NaN or Inf"
        scale = float(np.max(np.abs(expected.astype(np.float64)))) if expected.size else 0.0
        if not np.allclose(
            got.astype(np.float64), expected.astype(np.float64), rtol=1e-3, atol=1e-3 * max(scale, 1e-6)
        ):
            return f"output '{name}' differs from the warm-up reference"
    return None


class _ProbeFailed(RuntimeError):
    """A context answered the probe, but not with the warm-up reference."""


def _take(lender: Lender, slot: Slot) -> bool:
    """Take an idle slot off the stack for a probe; False when a request took it first (requests
    take idle slots without the lender's lock, and ``remove`` is as atomic as their ``pop``)."""
    try:
        lender.idle.remove(slot)
    except ValueError:
        return False
    return True


class Health:
    """The probe (a small feed and the first healthy answer to it) and what follows a failed one.

    ``prepare`` creates and warms a slot's context (the pool's lifecycle); a rebuild calls it.
    """

    def __init__(self, lender: Lender, metrics: PoolMetrics, prepare: Callable[[Slot], None]) -> None:
        self._lender = lender
        self._metrics = metrics
        self._prepare = prepare
        self.probe_feed: dict[str, Any] | None = None
        self._reference: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def verify(self, runner: Runner) -> None:
        """Run the probe; the first healthy context's answer becomes the reference for later probes."""
        assert self.probe_feed is not None
        outputs = runner.infer(self.probe_feed)
        if self._reference is None:
            self._reference = outputs
            return
        problem = outputs_match(self._reference, outputs)
        if problem:
            raise _ProbeFailed(problem)

    def check(self) -> HealthReport:
        """Probe each idle context with a small inference; rebuild the ones that fail.

        Contexts serving requests are skipped (and so is everything while requests wait), so a
        check never makes traffic wait. Broken contexts get another rebuild attempt.
        """
        lender = self._lender
        healthy: list[int] = []
        rebuilt: list[int] = []
        broken: list[tuple[int, str]] = []
        skipped: list[int] = []
        for slot in lender.slots:
            with lender.cond:
                if lender.state in (PoolState.CLOSED, PoolState.STARTING):
                    break
                was_broken = slot.state is SlotState.BROKEN
                if not was_broken and not (slot.state is SlotState.IDLE and not lender.waiters and _take(lender, slot)):
                    skipped.append(slot.index)
                    continue
                slot.state = SlotState.BUSY
                slot.repairing = was_broken
            try:
                if was_broken:
                    self.rebuild(slot, slot.last_error or "broken")
                    rebuilt.append(slot.index)
                elif self.probe(slot):
                    healthy.append(slot.index)
                else:
                    slot.repairing = True
                    self.rebuild(slot, slot.last_error or "probe failed")
                    rebuilt.append(slot.index)
            except Exception as exc:
                slot.failed, slot.last_error = True, first_line(exc)
                broken.append((slot.index, slot.last_error))
            finally:
                lender.release(slot)
        with lender.cond:
            state = lender.state
        return HealthReport(state, tuple(healthy), tuple(rebuilt), tuple(broken), tuple(skipped))

    def probe(self, slot: Slot) -> bool:
        try:
            assert slot.runner is not None
            self.verify(slot.runner)
        except Exception as exc:
            slot.last_error = first_line(exc)
            self._metrics.probed(ok=False)
            log.warning("pool %s: context %s failed its probe: %s", self._lender.pool, slot.name, slot.last_error)
            return False
        self._metrics.probed(ok=True)
        return True

    def rebuild(self, slot: Slot, why: str) -> None:
        """Replace a failed context by a new, warmed one (raises when that fails too)."""
        log.warning("pool %s: rebuilding context %s (%s)", self._lender.pool, slot.name, why)
        if slot.runner is not None:
            deactivate_quietly(slot.runner)
            slot.runner = None
        self._prepare(slot)
        slot.rebuilds += 1
        self._metrics.rebuilt()

    def heal(self, slot: Slot, error: Exception) -> bool:
        """After a runtime failure during a request: probe the context. True when it passes: the
        context is healthy, and what failed was the request's inputs (a Reshape they do not fit),
        logged at debug level only, as a client could send such requests without end. Else the
        context is rebuilt (False)."""
        if self.probe(slot):
            log.debug(
                "pool %s: context %s refused a request and passed its probe: %s",
                self._lender.pool,
                slot.name,
                first_line(error),
            )
            return True
        log.warning("pool %s: context %s failed a request: %s", self._lender.pool, slot.name, first_line(error))
        slot.repairing = True  # broken to readiness and the metrics while it is rebuilt
        try:
            self.rebuild(slot, slot.last_error or first_line(error))
        except Exception as exc:
            slot.failed, slot.last_error = True, first_line(exc)  # broken for good: the lender marks it
        finally:
            slot.repairing = False
        return False

    def start_loop(self, interval: float) -> None:
        """``check()`` every ``interval`` seconds in a daemon thread until ``stop_loop()``."""
        self._thread = threading.Thread(
            target=self._loop, args=(interval,), name=f"{self._lender.pool}-health", daemon=True
        )
        self._thread.start()

    def stop_loop(self) -> None:
        self._stop.set()

    def join_loop(self, timeout: float | None = None) -> None:
        """Wait for the loop's thread to end (at most 5 s, or ``timeout`` when shorter)."""
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5 if timeout is None else min(5.0, timeout))

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.check()
            except Exception:  # the loop must outlive a bad round; the next one tries again
                log.exception("pool %s: health check failed", self._lender.pool)
