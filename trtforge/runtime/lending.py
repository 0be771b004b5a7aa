"""Lending a pool's contexts: the slots and their states, and one condition over them with a
first-come-first-served queue, so that each request holds one context alone and waits its turn.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from trtforge.errors import first_line

if TYPE_CHECKING:
    from trtforge.runners.base import Runner
    from trtforge.runtime.metrics import PoolMetrics, RequestCounters

log = logging.getLogger(__name__)


class PoolExhausted(Exception):
    """No context became free within the timeout: shed load, retry later, or add contexts.

    Not a ``TrtforgeError``: it is back-pressure for the caller, not an exit code of the CLI.
    """

    def __init__(self, pool: str, timeout: float, size: int, waiting: int) -> None:
        self.pool, self.timeout, self.size, self.waiting = pool, timeout, size, waiting
        super().__init__(
            f"pool '{pool}': no context free within {timeout:g} s ({size} contexts, {waiting} other "
            "requests waiting); retry later or give the pool more contexts"
        )


class PoolClosed(RuntimeError):
    """The pool was closed; it serves nothing more.

    Not a ``TrtforgeError``: the calling program's own order of calls, never a user's input, so no exit code."""


class PoolNotStarted(RuntimeError):
    """A pool made with ``start=False`` was asked to serve before ``start()``. Not ``PoolClosed``
    (shut down for good): this one may still start; its state is ``starting``.

    Not a ``TrtforgeError``: the calling program's own order of calls, never a user's input, so no exit code."""


class PoolState(str, Enum):
    STARTING = "starting"
    READY = "ready"
    DEGRADED = "degraded"
    CLOSED = "closed"


class SlotState(str, Enum):
    """One context's state: STARTING until warmed, then IDLE (free) or BUSY (lent, or being probed
    or rebuilt), BROKEN when it failed and could not be rebuilt, CLOSED once freed. A broken context
    being rebuilt is BUSY to the lender (nobody else may take it) and BROKEN to whoever asks whether
    it can serve (:attr:`Slot.serving_state`)."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    BROKEN = "broken"
    CLOSED = "closed"


@dataclass(frozen=True)
class ContextInfo:
    index: int
    name: str
    state: SlotState
    warm_runs: int  # warm-up shapes run before ready (each ``WARMUP_RUNS`` times)
    served: int
    rebuilds: int
    last_error: str | None


class Slot:
    """One context and its bookkeeping. Whoever holds the slot (took it off ``Lender.idle``, or
    holds the lender's condition for a broken one) alone writes it; a scrape only reads."""

    __slots__ = (
        "borrower",
        "counters",
        "failed",
        "index",
        "last_error",
        "name",
        "rebuilds",
        "repairing",
        "runner",
        "served",
        "state",
        "warm_runs",
    )

    def __init__(self, index: int, name: str, counters: RequestCounters) -> None:
        self.index = index
        self.name = name
        self.runner: Runner | None = None
        self.state = SlotState.STARTING
        self.failed = False  # set by the borrower when the context broke; applied by Lender.release
        self.warm_runs = 0
        self.served = 0
        self.rebuilds = 0
        self.last_error: str | None = None
        self.counters = counters  # its requests' series, written by its holder only: no lock
        self.repairing = False  # a broken context the health check is rebuilding (BUSY meanwhile)
        self.borrower: int | None = None  # the thread holding it through ``borrow`` (close() can't wait for it)

    @property
    def serving_state(self) -> SlotState:
        """The state readiness and metrics see: a broken context stays broken while it is rebuilt."""
        return SlotState.BROKEN if self.repairing else self.state

    def info(self) -> ContextInfo:
        return ContextInfo(
            self.index, self.name, self.serving_state, self.warm_runs, self.served, self.rebuilds, self.last_error
        )


def deactivate_quietly(runner: Runner) -> None:
    """Free a context that is being replaced or closed; its own failure must not stop the others'."""
    try:
        runner.deactivate()
    except Exception as exc:
        log.warning("deactivating %s failed: %s", runner.name, first_line(exc))


class Lender:
    """The slots, which of them are idle, who waits for one, and the pool's state.

    ``idle`` is a deque used as a stack, and a slot belongs to whoever takes it off: ``pop``,
    ``append`` and ``remove`` are single C calls, atomic under the GIL, so an idle context with
    nobody waiting is lent and given back without any lock. That fast path is written out inline
    in ``EnginePool.infer`` (a Python call frame costs ~1 µs once a large inference has evicted the
    CPU caches); everything else (``borrow``, waiting in line, breaking, closing, the pool's state)
    happens here under ``cond``. Two races are closed by checking again after the atomic step: a
    request that takes a slot marks it busy, then checks for ``close`` (which marks the pool closed,
    then waits for busy slots); a request that gives one back appends it, then checks for waiters
    and ``close`` (which queue, or close, then look at ``idle``). Under the GIL one of each pair
    sees the other.
    The stack order matters: a request gets the context that came back last, whose weights and
    buffers are still in the CPU caches (or the GPU's L2), not the one idle the longest.
    ``retire`` frees a slot that comes back after the pool closed (the pool's lifecycle owns that).
    """

    def __init__(self, pool: str, size: int, metrics: PoolMetrics, retire: Callable[[Slot], None]) -> None:
        self.pool = pool
        self.metrics = metrics
        self.cond = threading.Condition(metrics.lock)
        self.slots = [Slot(index, f"{pool}/{index}", metrics.counters()) for index in range(size)]
        self.idle: deque[Slot] = deque()
        #: one condition per request in line, on ``cond``'s lock: a context given back wakes the first alone
        self.waiters: deque[threading.Condition] = deque()
        self.state = PoolState.STARTING
        self.started = False
        #: the thread of ``start()``: while the pool starts, its warm-up alone is lent contexts
        #: (requests sent before ``ready`` wait for it, so ``start`` may free everything it made)
        self.warmer: int | None = None
        self._retire = retire
        metrics.view = self.view_locked

    @contextlib.contextmanager
    def lend(self, timeout: float | None) -> Iterator[Slot]:
        """One slot for several calls (``borrow``), given back however the block ends."""
        slot = self.acquire(timeout)
        slot.borrower = threading.get_ident()
        try:
            yield slot
        finally:
            slot.borrower = None
            self.give_back(slot)

    def may_skip_line(self) -> bool:
        """Whether this thread may take an idle slot without queueing: nobody is in line, or it is
        the warm-up while the pool starts (requests sent before ``ready`` wait for it)."""
        if self.state is PoolState.STARTING:
            return threading.get_ident() == self.warmer
        return not self.waiters

    def acquire(self, timeout: float | None) -> Slot:
        """A slot, counted in flight, under ``cond``: for ``borrow``, and for requests that cannot
        take ``EnginePool.infer``'s lock-free path. The caller gives it back with ``give_back``."""
        began = time.monotonic()
        deadline = None if timeout is None else began + timeout
        with self.cond:
            if self.state is PoolState.CLOSED:
                raise PoolClosed(f"pool '{self.pool}' is closed")
            if not self.started:
                raise PoolNotStarted(f"pool '{self.pool}' was not started: call start()")
            if self.idle and self.may_skip_line():  # no wait: a hit
                taken = self.idle.pop()
                taken.state = SlotState.BUSY
                taken.counters.hits += 1
                taken.counters.in_flight = 1
                return taken
            ticket = threading.Condition(self.metrics.lock)  # first come, first served: no newcomer jumps the queue
            self.waiters.append(ticket)
            try:
                slot = self._wait_in_line(ticket, deadline)
            finally:
                self.waiters.remove(ticket)
                self.wake_next_locked()  # the next in line may go now
            if slot is None:
                raise PoolExhausted(self.pool, timeout or 0.0, len(self.slots), len(self.waiters))
            slot.state = SlotState.BUSY
            counters = slot.counters
            counters.waits += 1
            counters.in_flight = 1
            counters.wait_time.observe(time.monotonic() - began)
            return slot

    def _wait_in_line(self, ticket: threading.Condition, deadline: float | None) -> Slot | None:
        """The slot once ``ticket`` is first in line and one is idle; None at the deadline (under
        ``cond``). A request on the fast path may take the idle slot first: then wait again."""
        while True:
            if self.state is PoolState.CLOSED:
                raise PoolClosed(f"pool '{self.pool}' is closed")
            if self.state is PoolState.STARTING:
                may_take = threading.get_ident() == self.warmer  # the warm-up, never in line behind requests
            else:
                may_take = self.waiters[0] is ticket
            if may_take:
                with contextlib.suppress(IndexError):
                    return self.idle.pop()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            ticket.wait(remaining)

    def wake_next_locked(self) -> None:
        """Wake the first in line, the one request that may take a context given back (under
        ``cond``): waking every waiter (``notify_all``) made each request cost as many thread
        wake-ups as there were waiters. While the pool starts, the warm-up may take one wherever
        it waits, and once it is closed, ``close()`` waits on ``cond`` for it: then all."""
        if self.state is PoolState.STARTING or self.state is PoolState.CLOSED:
            self.wake_all_locked()
        elif self.waiters:
            self.waiters[0].notify()

    def wake_all_locked(self) -> None:
        """Wake whoever waits on ``cond`` and every request in line: the pool's state changed
        (ready, closed) or a context came back while it starts (under ``cond``)."""
        self.cond.notify_all()
        for ticket in self.waiters:
            ticket.notify()

    def give_back(self, slot: Slot) -> None:
        """Return a slot that ``acquire`` lent (its holder recorded its series), under ``cond``."""
        slot.counters.in_flight = 0
        self.release(slot)

    def after_late_return(self) -> None:
        """Wake the waiters that queued while a slot came back; after ``close``, retire what is idle."""
        with self.cond:
            self.wake_next_locked()
            retire = self.drain() if self.state is PoolState.CLOSED else []
            for slot in retire:
                slot.state = SlotState.CLOSED
        for slot in retire:
            self._retire(slot)

    def drain(self) -> list[Slot]:
        """Take every idle slot, bottom of the stack first; each pop is atomic, so a slot taken
        here is this caller's alone even while requests take others."""
        taken: list[Slot] = []
        with contextlib.suppress(IndexError):
            while True:
                taken.append(self.idle.popleft())
        return taken

    def release(self, slot: Slot) -> None:
        """Return a slot held apart from the fast path: a borrowed one, a health probe or rebuild, a
        failed request, one that comes back while requests wait, while the pool is degraded or after
        ``close``."""
        with self.cond:
            closed = self._release_locked(slot)
        if closed:
            self._retire(slot)

    def _release_locked(self, slot: Slot) -> bool:
        """Idle again, broken when its borrower saw it fail, retired (True) after close."""
        slot.repairing = False
        if self.state is PoolState.CLOSED:
            slot.state = SlotState.CLOSED
            self.cond.notify_all()
            return True
        if slot.failed:
            slot.state = SlotState.BROKEN
        elif slot.state is SlotState.BUSY:
            slot.state = SlotState.IDLE
            self.idle.append(slot)
        if slot.failed or self.state is not PoolState.READY:
            self.settle_locked()
        self.wake_next_locked()
        return False

    def settle_locked(self) -> None:
        """The pool's state from its slots: degraded while any is broken, else ready (starting and
        closed stay: ``start`` says when the pool is ready)."""
        if self.state in (PoolState.READY, PoolState.DEGRADED):
            broken = any(slot.serving_state is SlotState.BROKEN for slot in self.slots)
            self.state = PoolState.DEGRADED if broken else PoolState.READY

    def view_locked(self) -> tuple[PoolState, dict[SlotState, int], int]:
        """The state, contexts by state and requests waiting, for a scrape (under ``cond``)."""
        counts: dict[SlotState, int] = {}
        for slot in self.slots:
            counts[slot.serving_state] = counts.get(slot.serving_state, 0) + 1
        return self.state, counts, len(self.waiters)
