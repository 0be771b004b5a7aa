"""A warm engine pool: N execution contexts over one deserialized engine, warmed before ``ready``.

Why: a context's first inference allocates memory and picks kernels, so a cold instance answers
its first requests several times slower than its thousandth, and under a burst that cascades
into timeouts. The pool pays that cost at start-up (deserialize once, create N contexts, run
every warm-up shape on every context), then lends one context to one request at a time
(``lending``), probes idle contexts and rebuilds one that fails (``health``). This module is the
lifecycle: start, warm, serve, close.

Backends: TensorRT for ``.engine`` artifacts (loaded through ``trtforge.runtime.loader``, so a
mismatched engine is refused; one ``TrtRunner`` per context) and onnxruntime for ``.onnx`` files
(CPU or CUDA execution provider; one ``OnnxrtRunner`` session per context), so the pool is
usable and tested on hosts without a TensorRT-capable GPU.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.environment import usable_cores
from trtforge.errors import IncompatibleEngineError, InvalidInputError, TrtforgeError, did_you_mean, first_line
from trtforge.manifest import ENGINE_SUFFIX
from trtforge.model import TensorDesc
from trtforge.runners.base import Runner
from trtforge.runtime.health import Health, HealthReport
from trtforge.runtime.lending import (
    ContextInfo,
    Lender,
    PoolClosed,
    PoolExhausted,
    PoolState,
    Slot,
    SlotState,
    deactivate_quietly,
)
from trtforge.runtime.metrics import LATENCY_BUCKETS, PoolMetrics
from trtforge.runtime.sources import (
    ONNXRUNTIME,
    PROVIDERS,
    MemoryUse,
    ModelSource,
    OnnxrtSource,
    ShapeValuesNeeded,
    TensorRTSource,
    WarmupSet,
    as_warmup_sets,
    backend_of,
    check_threads,
)
from trtforge.shapes import Shape, ShapeSet, random_feed

if TYPE_CHECKING:
    from trtforge.compat import Environment, LoadPolicy

log = logging.getLogger(__name__)
perf_counter = time.perf_counter  # a module global: one lookup fewer on the request path
# Enum members as module globals for the request path: ``PoolState.CLOSED`` is a class-attribute
# lookup through the enum's metaclass (~0.15 µs each on a small VM), several per request.
_STARTING, _READY, _CLOSED = PoolState.STARTING, PoolState.READY, PoolState.CLOSED
_IDLE, _BUSY = SlotState.IDLE, SlotState.BUSY

DEFAULT_TIMEOUT_S = 30.0
#: Inferences per warm-up shape on each context. onnxruntime on the CPU runs a shape 1.5-3x slower
#: the first time and 1.1-1.9x the second and third (arena growth, kernel and buffer choices; measured
#: on ResNet-18 and the digits CNN), steady from the fourth; the health probe that follows is that one.
WARMUP_RUNS = 3
#: Probe runs per context, back to back, once every context exists and the request path ran: the
#: last thing before ``ready``. On a CPU a context is as fast as in a steady stream of requests only
#: after many runs in a row (measured on a 2-core VM, first request after ready / steady p50, median
#: of 14 processes: digits CNN 1.48x after 24 runs, 1.29x after 36, 1.16x after 124; ResNet-18 at
#: 64x64, whose weights leave the shared last-level cache while other contexts run, 1.5x after 2
#: runs and 1.0-1.1x after 16-32).
SETTLE_RUNS = 100
#: At most this many seconds of settling per context: a large model stops after fewer runs.
SETTLE_BUDGET_S = 0.1


class PoolStartError(IncompatibleEngineError):
    """Not one context could be created and warmed (every attempt's first error is in the message):
    the runtime refused the model, as a loader refuses an engine (exit 5), not a bug of trtforge's."""


def suggest_pool_size(
    per_context_bytes: int,
    free_bytes: int,
    *,
    shared_bytes: int = 0,
    max_size: int | None = None,
) -> int:
    """How many contexts to create on a device with ``free_bytes`` free.

    Rule: ``fits = floor((free - shared) / per_context)`` contexts fit (``shared`` = what the pool
    holds once, e.g. the engine weights); keep spares for CUDA/cuBLAS workspaces, fragmentation
    and neighbours: 2 when 8 or more fit, 1 when 2..7 fit, none when only 1 fits. So a 16 GB card
    at 1.8 GB per context fits 8 and gets 6. ``max_size`` caps the answer (e.g. the concurrency
    you expect). 0 means not even one context fits.
    """
    if per_context_bytes <= 0:
        raise InvalidInputError(f"per_context_bytes {per_context_bytes}: the memory one context needs, > 0 bytes")
    if max_size is not None and max_size < 0:
        raise InvalidInputError(f"max_size {max_size}: the most contexts to suggest, >= 0 (None: no cap)")
    usable = max(free_bytes - max(shared_bytes, 0), 0)
    fits = usable // per_context_bytes
    spare = 2 if fits >= 8 else 1 if fits >= 2 else 0
    size = int(fits - spare)
    return min(size, max_size) if max_size is not None else size


def _volume(shapes: ShapeSet) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


def _smallest(feeds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The health probe: the smallest warm-up feed (cheap, and served during warm-up)."""
    return min(feeds, key=lambda feed: _volume({name: array.shape for name, array in feed.items()}))


def _check_settings(
    size: int, timeout: float | None, providers: Sequence[str], threads: int | None, health_interval: float | None
) -> None:
    """The pool's settings, refused with their fix before anything loads (pure): a bad one would
    otherwise fail deep inside a request (``size="2"``), spin (``health_interval=-1``) or wait
    forever (``timeout=nan``)."""

    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise InvalidInputError(f"pool size {size!r}: a pool needs an int of at least one context")
    _check_timeout(timeout)
    if isinstance(providers, str) or not all(isinstance(provider, str) for provider in providers):
        raise InvalidInputError(f"providers {providers!r}: a list of names, e.g. ['CUDAExecutionProvider']")
    check_threads(threads)
    if health_interval is not None and not (_seconds(health_interval) and health_interval > 0):
        raise InvalidInputError(f"health_interval {health_interval!r}: seconds > 0, or None for checks on call only")


def _seconds(value: object) -> bool:
    """A finite number of seconds, >= 0 (a bool is no number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _check_timeout(timeout: object) -> None:
    if timeout is not None and timeout != math.inf and not _seconds(timeout):
        raise InvalidInputError(f"timeout {timeout!r}: seconds >= 0, or None (or infinity) to wait as long as it takes")


def _wait(timeout: float | None) -> float | None:
    """A checked timeout as the lender takes it: None waits as long as it takes, and so does infinity."""
    _check_timeout(timeout)
    return None if timeout == math.inf else timeout


class EnginePool:
    """N warmed contexts over one model; ``infer()`` lends one context to one request at a time.

    ``artifact``: an ``.engine`` (TensorRT, through the loader) or an ``.onnx`` (onnxruntime).
    ``warmup_shapes``: the input shapes that will be served (default: each profile's min/opt/max
    for engines, the model's shape with dynamic dims 1 for ONNX), each a mapping of input shapes or
    a ``WarmupSet`` that also gives shape tensors' values (without them: an engine's profile point
    of those shapes, or what the ONNX graph tells for certain; see ``ShapeTensors``); every context runs each
    ``WARMUP_RUNS`` times before the pool is ready, then the request path itself runs once per
    context (acquire, inference, give back, metrics; not counted in the metrics), and last every
    context settles (``SETTLE_RUNS`` in a row), the one the first request gets last and through
    the request path. ``warmup_also``: shapes warmed besides those (``trtforge bench`` adds its
    request shape to the defaults this way).
    ``warmup=False`` skips all of it (for measuring cold starts only).
    ``timeout``: how long ``infer`` waits for a context by default (None or infinity: forever).
    ``providers``/``threads``: onnxruntime execution providers and intra-op threads per session
    (default: the CPU cores this process may use, divided among the contexts, so N sessions don't
    oversubscribe them).
    ``health_interval``: seconds between background ``check()`` runs (None: only when called).
    """

    def __init__(
        self,
        artifact: Path | str,
        size: int = 1,
        *,
        name: str | None = None,
        warmup_shapes: Iterable[ShapeSet | WarmupSet] | None = None,
        warmup_also: Iterable[ShapeSet | WarmupSet] = (),
        warmup: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        providers: Sequence[str] = (PROVIDERS["cpu"],),
        threads: int | None = None,
        policy: LoadPolicy | None = None,
        environment: Environment | None = None,
        health_interval: float | None = None,
        start: bool = True,
    ) -> None:
        _check_settings(size, timeout, providers, threads, health_interval)
        self.artifact = Path(artifact)
        self.backend_kind = backend_of(self.artifact)
        self.name = name or self.artifact.name.removesuffix(ENGINE_SUFFIX).removesuffix(".onnx")
        self.size = size
        self.default_timeout = _wait(timeout)
        self.metrics = PoolMetrics(self.name)  # a registry of its own: PoolManager merges several
        self._warmup_shapes = as_warmup_sets("warmup_shapes", warmup_shapes) if warmup_shapes is not None else None
        self._warmup_also = as_warmup_sets("warmup_also", warmup_also)
        self._warmup = warmup
        self._providers = tuple(providers)
        self._threads = threads if threads is not None else max(1, usable_cores() // size)
        self._policy = policy
        self._environment = environment
        self._health_interval = health_interval

        self._lender = Lender(self.name, size, self.metrics, retire=self._retire)
        self._health = Health(self._lender, self.metrics, prepare=self._prepare)
        self._starting = False
        self._source: ModelSource | None = None
        self._inputs: tuple[TensorDesc, ...] = ()
        self._feeds: list[dict[str, Any]] = []
        self._guessed: dict[str, tuple[int, ...]] = {}  # shape-tensor values taken from the ONNX graph
        self._defaulted = 0  # how many of the first feeds are the default warm-up (no warmup_shapes given)
        self._memory = MemoryUse(None, None, None, "unknown")
        self.startup_seconds: float | None = None
        if start:
            self.start()

    # ------------------------------------------------------------ lifecycle
    def start(self) -> EnginePool:
        """Load once, create and warm every context, then report ready (idempotent; blocks).

        A ``close()`` that arrives meanwhile wins: start frees what it made and raises PoolClosed.
        """
        lender = self._lender
        with lender.cond:
            if lender.state is PoolState.CLOSED:
                raise PoolClosed(f"pool '{self.name}' is closed")
            if lender.started:
                return self
            lender.started = self._starting = True
            lender.warmer = threading.get_ident()
        began = time.perf_counter()
        try:
            self._source = self._open_source()
            self._inputs = self._source.inputs
            self._feeds, self._health.probe_feed = self._warm_feeds(self._source)
            errors = self._prepare_all()
            if lender.state is PoolState.CLOSED:  # closed between contexts: settling them would be wasted
                raise PoolClosed(f"pool '{self.name}' was closed while it started")
            if len(errors) == self.size:
                raise self._start_error(errors[0])
            self._memory = self._source.memory([s.runner for s in lender.slots if s.runner is not None])
            self.metrics.device_memory(self._memory.total)  # now: nothing but ``ready`` follows the warm-up
            with lender.cond:
                lender.idle.extend(slot for slot in lender.slots if slot.state is SlotState.IDLE)
            if self._warmup:
                self._warm_request_path()
                self._settle()
        except BaseException:
            self._fail_start()
            raise
        with lender.cond:
            closed = lender.state is PoolState.CLOSED
            if not closed:
                self._starting = False
                lender.warmer = None
                lender.state = PoolState.READY
                lender.settle_locked()
                lender.wake_all_locked()
        if closed:
            self._fail_start()
            raise PoolClosed(f"pool '{self.name}' was closed while it started")
        self.startup_seconds = time.perf_counter() - began
        self.metrics.warmup(self.startup_seconds)
        if self._health_interval:
            self._health.start_loop(self._health_interval)
        return self

    def _warm_request_path(self) -> None:
        """Serve the probe once on every idle context through ``infer`` itself (acquire, the
        inference, give back, metrics; the same fast path as after ``ready``). The idle stack's
        order is kept: each context served goes to the bottom, so the next one surfaces. A close
        meanwhile ends it quietly."""
        feed = self._health.probe_feed
        assert feed is not None
        lender = self._lender
        with contextlib.suppress(PoolClosed):
            for _ in range(len(lender.idle)):
                self.infer(feed)
                lender.idle.rotate(1)  # the one just served goes to the bottom: the next surfaces (atomic)

    def _settle(self) -> None:
        """The last step before ``ready``: run the probe ``SETTLE_RUNS`` times in a row (at most
        ``SETTLE_BUDGET_S``) on every idle context, from the bottom of the idle stack to its top,
        the top one through ``infer`` itself. So the context the first request gets ran last, back
        to back, through the very code the first request runs (measured on the digits CNN: the same
        runs on the runner alone leave that request 2x the steady p50, as the interpreter's branches
        were trained on other code). Then the warm-up's requests are forgotten. A close meanwhile
        ends it quietly."""
        feed = self._health.probe_feed
        assert feed is not None
        lender = self._lender
        # off the stack while they run alone (a request sent before ``ready`` waits); bottom first
        taken = lender.drain() if lender.state is not PoolState.CLOSED else []
        if not taken:
            return
        *below, top = taken
        try:
            for slot in below:
                deadline = time.perf_counter() + SETTLE_BUDGET_S
                for _ in range(SETTLE_RUNS):
                    if lender.state is PoolState.CLOSED or slot.runner is None:
                        return
                    slot.runner.infer(feed)
                    if time.perf_counter() > deadline:
                        break
        finally:
            with lender.cond:
                lender.idle.extend(slot for slot in [*below, top] if slot.state is SlotState.IDLE)
                lender.wake_all_locked()
        deadline = time.perf_counter() + SETTLE_BUDGET_S
        with contextlib.suppress(PoolClosed):
            for _ in range(SETTLE_RUNS):
                self.infer(feed)
                if time.perf_counter() > deadline:
                    break
        self.metrics.forget_requests()  # the warm-up's requests are not traffic
        for slot in lender.slots:
            slot.served = 0

    def _prepare_all(self) -> list[str]:
        """Create and warm every context (one after the other); returns the failures, one line each."""
        errors: list[str] = []
        for slot in self._lender.slots:
            if self._lender.state is PoolState.CLOSED:
                break
            try:
                self._prepare(slot)
                slot.state = SlotState.IDLE
            except PoolClosed:
                break  # start() sees the pool closed and frees what it made
            except InvalidInputError:
                raise  # the warm-up shapes or the model are wrong: every context would fail alike
            except Exception as exc:
                slot.state, slot.last_error = SlotState.BROKEN, first_line(exc)
                # named once: a runner's own errors start with its name, which is the context's
                named = slot.last_error.startswith(f"{slot.name}: ")
                errors.append(slot.last_error if named else f"{slot.name}: {slot.last_error}")
                log.warning("pool %s: context failed to start: %s", self.name, errors[-1])
        return errors

    def _open_source(self) -> ModelSource:
        if self.backend_kind == ONNXRUNTIME:
            return OnnxrtSource(self.artifact, self._providers, self._threads)
        return TensorRTSource(self.artifact, self._policy, self._environment)

    def _warm_feeds(self, source: ModelSource) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """A feed per warm-up set, and the smallest of them, the health probe. A shape tensor gets
        the values its set gives, else those its engine profile or its ONNX graph tells
        (``ShapeTensors.complete``); an ONNX model whose graph tells none is warmed with the sets
        ``warmup_also`` gives alone, and without any is refused (``ShapeValuesNeeded``, exit 2)."""
        tensors = source.shape_tensors
        names = [tensor.name for tensor in source.inputs]
        for entry in [*(self._warmup_shapes or ()), *self._warmup_also]:
            for name in [*entry.shapes, *entry.values]:
                if name not in names:
                    raise InvalidInputError(
                        f"pool '{self.name}': warm-up shape for '{name}', which is no input of "
                        f"{self.artifact.name}{did_you_mean(name, names)} (inputs: {', '.join(names)})"
                    )
            missing = [n for n in names if n not in entry.shapes and n not in entry.values and n not in tensors.names]
            if missing:
                raise InvalidInputError(
                    f"pool '{self.name}': a warm-up shape set lacks input '{missing[0]}' (inputs: {', '.join(names)})"
                )
        if self._warmup_shapes is not None:
            sets = [tensors.complete(entry) for entry in self._warmup_shapes]
        else:
            try:
                sets = tensors.defaults()
            except ShapeValuesNeeded:
                if not self._warmup_also:
                    raise
                sets = []  # values only the caller knows: its own sets are the warm-up
        self._defaulted = 0 if self._warmup_shapes is not None else len(sets)
        for entry in self._warmup_also:
            completed = tensors.complete(entry)
            if completed not in sets:
                sets.append(completed)
        if not sets:
            raise InvalidInputError(f"pool '{self.name}': no warm-up shapes given; pass at least one")
        self._guessed = {name: s.values[name] for s in sets for name in s.guessed}
        feeds = [
            random_feed(source.inputs, entry.shapes, seed=index, values=entry.values)
            for index, entry in enumerate(sets)
        ]
        return feeds, _smallest(feeds)

    def _start_error(self, first: str) -> TrtforgeError:
        """Why no context could start; where the ONNX graph chose shape-tensor values, that those
        may be what failed, and what to pass instead (exit 2: the caller can tell the values)."""
        message = f"pool '{self.name}': no context could be created and warmed ({first})"
        if not self._guessed:
            return PoolStartError(message)
        taken = ", ".join(f"{name}=[{', '.join(map(str, values))}]" for name, values in self._guessed.items())
        return InvalidInputError(
            f"{message}; the warm-up took the shape-tensor values {taken} from the graph: give the values your "
            "requests use (trtforge serve --warmup-shape, trtforge bench --shape: NAME=[V,...]; "
            "EnginePool(warmup_shapes=[WarmupSet(...)]))"
        )

    def _prepare(self, slot: Slot) -> None:
        """Create and activate a context, run every warm-up feed, then check it against the reference.
        A close meanwhile raises PoolClosed before the next run: a stop waits for one inference at
        most, not for the whole warm-up of the context."""
        assert self._source is not None
        runner = self._source.new_runner(slot.name)
        runner.activate()
        try:
            slot.warm_runs = 0
            if self._warmup:
                self._warm(slot, runner)
                self._stop_if_closed(slot)
                self._health.verify(runner)
        except BaseException:
            deactivate_quietly(runner)
            raise
        slot.runner, slot.last_error, slot.failed = runner, None, False

    def _warm(self, slot: Slot, runner: Runner) -> None:
        """Run every warm-up feed ``WARMUP_RUNS`` times on a new context. An ONNX model's default
        warm-up is a guess (its dims, dynamic ones at 1, which a convolution over H and W cannot
        take): where the model refuses it and the caller gave sets of its own (``warmup_also``:
        serve's ``--warmup-shape``, bench's request), those alone are the warm-up, as where the graph
        tells no shape-tensor values. Any other refusal names the warm-up request and the fix (the
        runtime's own error names no warm-up)."""
        for index, feed in enumerate(self._feeds):
            for _ in range(WARMUP_RUNS):
                self._stop_if_closed(slot)
                try:
                    runner.infer(feed)
                except InvalidInputError as exc:
                    guessed = self.backend_kind == ONNXRUNTIME and index < self._defaulted < len(self._feeds)
                    if not guessed:
                        raise self._warmup_refused(index, feed, exc) from exc
                    refused = first_line(exc)
                    log.info("pool %s: default warm-up refused (%s); warming the sets given", self.name, refused)
                    self._feeds = self._feeds[self._defaulted :]
                    self._defaulted, self._health.probe_feed = 0, _smallest(self._feeds)
                    slot.warm_runs = 0
                    self._warm(slot, runner)  # once: no default is left
                    return
            slot.warm_runs += 1

    def _warmup_refused(self, index: int, feed: Mapping[str, Any], exc: InvalidInputError) -> InvalidInputError:
        """A warm-up request the model refused, named, with where to give the shapes it will serve."""
        shapes = ", ".join(f"{name}={'x'.join(map(str, array.shape)) or '()'}" for name, array in feed.items())
        which = "default warm-up request" if index < self._defaulted else "warm-up request"
        return InvalidInputError(
            f"pool '{self.name}': the {which} {shapes} was refused ({first_line(exc)}): give the shapes your "
            "requests use (EnginePool(warmup_shapes=[{NAME: DIMS}]), trtforge serve --warmup-shape NAME=DIMS)"
        )

    def _stop_if_closed(self, slot: Slot) -> None:
        if self._lender.state is PoolState.CLOSED:
            raise PoolClosed(f"pool '{self.name}' was closed while context {slot.name} warmed up")

    def _fail_start(self) -> None:
        lender = self._lender
        with lender.cond:
            lender.state = PoolState.CLOSED
            lender.wake_all_locked()
        for slot in lender.slots:
            if slot.runner is not None:
                deactivate_quietly(slot.runner)
                slot.runner = None
            slot.state = SlotState.CLOSED
        if self._source is not None:
            self._source.close()
            self._source = None
        self.metrics.device_memory(None)
        with lender.cond:
            self._starting = False
            lender.wake_all_locked()  # a close() that waits for start to give up may return now

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop serving, wait up to ``timeout`` for lent contexts, free every context and the engine.

        Contexts still lent after ``timeout`` are freed as they come back; the whole close takes
        about ``timeout`` at most (``trtforge serve`` gives it what is left of ``--grace``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        lender = self._lender
        self._health.stop_loop()
        with lender.cond:
            if lender.state is PoolState.CLOSED:
                return
            lender.state = PoolState.CLOSED
            lender.wake_all_locked()
            if self._starting:  # start() sees CLOSED and frees what it made: never free the engine under it
                lender.cond.wait_for(lambda: not self._starting, timeout)
                return
            me = threading.get_ident()

            def settled() -> bool:  # not waiting for what this very thread borrowed: it returns after close
                return not any(s.state is SlotState.BUSY and s.borrower != me for s in lender.slots)

            lender.cond.wait_for(settled, timeout)
            # idle ones are this call's only once taken off the stack: a request may hold one it just took
            # (it sees CLOSED and retires it itself); the others are broken, or lent and retired on return
            retire = lender.drain() + [s for s in lender.slots if s.state is SlotState.BROKEN]
            for slot in retire:
                slot.state = SlotState.CLOSED
        for slot in retire:
            self._retire(slot)
        self._health.join_loop(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _retire(self, slot: Slot) -> None:
        """Free a closed slot's context; the last one out frees the engine (never before its contexts)."""
        if slot.runner is not None:
            deactivate_quietly(slot.runner)
        with self._lender.cond:
            slot.runner = None
            last = all(s.state is SlotState.CLOSED and s.runner is None for s in self._lender.slots)
            source = self._source if last else None
            if last:
                self._source = None
        if source is not None:
            source.close()
            self._memory = MemoryUse(0, 0, 0, self._memory.method)
            self.metrics.device_memory(0)

    def __enter__(self) -> EnginePool:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ status
    @property
    def state(self) -> PoolState:
        return self._lender.state

    @property
    def ready(self) -> bool:
        """Warm and able to serve: every context healthy, or degraded with at least one healthy."""
        with self._lender.cond:
            return self._lender.state in (PoolState.READY, PoolState.DEGRADED) and any(
                s.serving_state in (SlotState.IDLE, SlotState.BUSY) for s in self._lender.slots
            )

    @property
    def degraded(self) -> bool:
        return self._lender.state is PoolState.DEGRADED

    @property
    def backend(self) -> str:
        """``onnxruntime``, ``tensorrt`` or ``tensorrt-rtx`` (known once started)."""
        return self._source.backend if self._source is not None else self.backend_kind

    @property
    def inputs(self) -> tuple[TensorDesc, ...]:
        """The model's inputs (known once started)."""
        return self._inputs

    @property
    def memory(self) -> MemoryUse:
        return self._memory

    @property
    def probe_feed(self) -> Mapping[str, Any] | None:
        """The health probe's inputs (the smallest warm-up set, shape-tensor values included; None
        before start): ``trtforge serve`` sends them through its own HTTP path before ``ready``."""
        return self._health.probe_feed

    @property
    def warmup_shapes(self) -> list[dict[str, Shape]]:
        return [{name: tuple(array.shape) for name, array in feed.items()} for feed in self._feeds]

    def contexts(self) -> tuple[ContextInfo, ...]:
        with self._lender.cond:
            return tuple(slot.info() for slot in self._lender.slots)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the pool can serve (for a pool started in another thread)."""
        lender = self._lender
        with lender.cond:
            return lender.cond.wait_for(lambda: lender.state is not PoolState.STARTING, timeout) and lender.state in (
                PoolState.READY,
                PoolState.DEGRADED,
            )

    # ------------------------------------------------------------ serving
    def infer(self, inputs: Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Run one request on a free context; wait at most ``timeout`` (default: the pool's) for one.

        Raises ``PoolExhausted`` when none frees up in time, ``PoolClosed`` after ``close()``,
        ``PoolNotStarted`` before ``start()`` (a pool made with ``start=False``), ``InvalidInputError``
        for inputs the model does not take (the context stays healthy) and for a ``timeout`` that is
        no number of seconds, and the runner's error when the context itself failed (the pool then
        probes and rebuilds it).
        """
        if timeout is not None and not (type(timeout) is float and timeout >= 0.0):
            _check_timeout(timeout)  # up front, not only once it waits; a float >= 0 passes inline (NaN fails)
        lender = self._lender
        # lent and given back inline, lock-free (see ``Lender``): once a large inference has evicted
        # the CPU caches, each Python call frame costs ~1 µs (ResNet-18: 2.4 µs a request for these two)
        state = lender.state
        slot = None
        if (state is _READY and not lender.waiters) or (state is not _CLOSED and lender.may_skip_line()):
            try:  # not contextlib.suppress: a context manager is two more call frames
                slot = lender.idle.pop()
            except IndexError:
                slot = None  # none idle: wait in line
        if slot is None:
            slot = self._wait_for_context(timeout)
        else:
            slot.state = _BUSY
            if lender.state is _CLOSED:  # closed since the check: close() may not have seen it busy
                lender.release(slot)
                raise PoolClosed(f"pool '{self.name}' is closed")
            counters = slot.counters
            counters.hits += 1
            counters.in_flight = 1
        began = perf_counter()
        try:
            outputs = slot.runner.infer(inputs)  # type: ignore[union-attr]  # a lent slot has a runner
        except BaseException as exc:
            self._failed(slot, exc, perf_counter() - began)
            raise
        seconds = perf_counter() - began
        # the request's series, on its own context's counters: no lock, nothing allocated
        counters = slot.counters
        counters.ok += 1
        histogram = counters.inference_time
        histogram.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        histogram.sum += seconds
        counters.in_flight = 0
        slot.served += 1
        state = lender.state
        if (state is _READY or state is _STARTING) and not slot.failed and not lender.waiters:
            slot.state = _IDLE
            lender.idle.append(slot)
            if lender.waiters or lender.state is _CLOSED:  # queued or closed since the check
                lender.after_late_return()
        else:
            lender.release(slot)  # degraded, waited for, or closed: settled under the lock
        return outputs

    def _wait_for_context(self, timeout: float | None) -> Slot:
        """The slow path of ``infer``: a context through the lender's queue (counted if none came)."""
        try:
            return self._lender.acquire(self._timeout(timeout))
        except PoolExhausted:
            self.metrics.exhausted()
            raise

    def _failed(self, slot: Slot, exc: BaseException, seconds: float) -> None:
        """A request whose inference raised: count it, heal the context if it failed, give it back.

        A runtime error after which the context passes its probe was the request's inputs, which
        the model refused as it ran (shape values a Reshape cannot take, a Slice past the end):
        raised as ``InvalidInputError`` (the runtime's error as its cause), counted invalid, and the
        context stays. Off the request's fast path: only a failed request pays for the probe."""
        counters = slot.counters
        refused = None
        try:
            counters.inference_time.observe(seconds)
            if isinstance(exc, InvalidInputError):
                counters.invalid += 1  # the caller's inputs: the context stays healthy
            elif isinstance(exc, Exception):
                if self._health.heal(slot, exc):
                    counters.invalid += 1
                    refused = InvalidInputError(
                        f"pool '{self.name}': the model refused these inputs as it ran ({first_line(exc)}); "
                        "the context passed its health probe after it"
                    )
                else:
                    counters.error += 1
        finally:
            self._lender.give_back(slot)
        if refused is not None:
            raise refused from exc

    @contextlib.contextmanager
    def borrow(self, timeout: float | None = None) -> Iterator[Runner]:
        """Hold one context for several calls (``with pool.borrow() as runner: runner.infer(...)``).

        The runner is yours alone until the block ends; don't keep it beyond. Raises as ``infer``
        does when no context can be lent.
        """
        with self._lender.lend(self._timeout(timeout)) as slot:
            assert slot.runner is not None
            yield slot.runner
            slot.served += 1

    def _timeout(self, timeout: float | None) -> float | None:
        """The wait for a context: the pool's default, else ``timeout`` checked (infinity waits as long
        as it takes): ``borrow``'s check, before it waits (``infer`` checks up front, inline)."""
        if timeout is None:
            return self.default_timeout
        return _wait(timeout)

    # ------------------------------------------------------------ health
    def check(self) -> HealthReport:
        """Probe each idle context with a small inference; rebuild the ones that fail (see ``health``)."""
        return self._health.check()
