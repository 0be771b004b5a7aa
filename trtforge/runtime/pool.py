"""A warm engine pool: N execution contexts over one deserialized engine, warmed before ``ready``.

Why: a context's first inference allocates memory and picks kernels, so a cold instance answers
its first requests several times slower than its thousandth, and under a burst that cascades
into timeouts. The pool pays that cost at start-up (deserialize once, create N contexts, run
every warm-up shape on every context), then lends one context to one request at a time, probes
idle contexts and rebuilds one that fails.

Backends: TensorRT for ``.engine`` artifacts (loaded through ``trtforge.runtime.loader``, so a
mismatched engine is refused; one ``TrtRunner`` per context) and onnxruntime for ``.onnx`` files
(CPU or CUDA execution provider; one ``OnnxrtRunner`` session per context), so the pool is
usable and tested on hosts without a TensorRT-capable GPU.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.errors import InvalidInputError, TrtforgeError, did_you_mean, first_line
from trtforge.manifest import ENGINE_SUFFIX
from trtforge.model import TensorDesc
from trtforge.runtime.metrics import MergedRegistries, PoolMetrics
from trtforge.runtime.sources import (
    ONNXRUNTIME,
    PROVIDERS,
    MemoryUse,
    ModelSource,
    OnnxrtSource,
    Runner,
    Shape,
    ShapeSet,
    TensorRTSource,
    backend_of,
    random_feed,
)

if TYPE_CHECKING:
    from trtforge.compat import Environment, LoadPolicy

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0


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
    """The pool was closed; it serves nothing more."""


class PoolStartError(TrtforgeError):
    """Not one context could be created and warmed (every attempt's first error is in the message)."""


class PoolState(str, Enum):
    STARTING = "starting"
    READY = "ready"
    DEGRADED = "degraded"
    CLOSED = "closed"


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class ContextInfo:
    index: int
    name: str
    state: str  # idle | busy | broken | starting | closed
    warm_runs: int
    served: int
    rebuilds: int
    last_error: str | None


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


# ---------------------------------------------------------------- rules (pure)


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
        raise ValueError("per_context_bytes must be positive")
    usable = max(free_bytes - max(shared_bytes, 0), 0)
    fits = usable // per_context_bytes
    spare = 2 if fits >= 8 else 1 if fits >= 2 else 0
    size = int(fits - spare)
    return min(size, max_size) if max_size is not None else size


def _volume(shapes: ShapeSet) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


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
        if got.dtype.kind in "fc" and not np.all(np.isfinite(got)):
            return f"output '{name}' holds NaN or Inf"
        scale = float(np.max(np.abs(expected.astype(np.float64)))) if expected.size else 0.0
        if not np.allclose(
            got.astype(np.float64), expected.astype(np.float64), rtol=1e-3, atol=1e-3 * max(scale, 1e-6)
        ):
            return f"output '{name}' differs from the warm-up reference"
    return None


# ---------------------------------------------------------------- the pool


class _Slot:
    """One context and its bookkeeping; mutated only under the pool's lock (or while lent out)."""

    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.name = name
        self.runner: Runner | None = None
        self.state = "starting"
        self.failed = False  # set by the borrower when the context broke; applied by _release
        self.warm_runs = 0
        self.served = 0
        self.rebuilds = 0
        self.last_error: str | None = None

    def info(self) -> ContextInfo:
        return ContextInfo(
            self.index, self.name, self.state, self.warm_runs, self.served, self.rebuilds, self.last_error
        )


class EnginePool:
    """N warmed contexts over one model; ``infer()`` lends one context to one request at a time.

    ``artifact``: an ``.engine`` (TensorRT, through the loader) or an ``.onnx`` (onnxruntime).
    ``warmup_shapes``: the input shapes that will be served (default: each profile's min/opt/max
    for engines, the model's shape with dynamic dims 1 for ONNX); every context runs each once
    before the pool is ready. ``warmup=False`` skips that (for measuring cold starts only).
    ``timeout``: how long ``infer`` waits for a context by default (None: forever).
    ``providers``/``threads``: onnxruntime execution providers and intra-op threads per session
    (default: the CPU cores divided among the contexts, so N sessions don't oversubscribe them).
    ``health_interval``: seconds between background ``check()`` runs (None: only when called).
    """

    def __init__(
        self,
        artifact: Path | str,
        size: int = 1,
        *,
        name: str | None = None,
        warmup_shapes: Sequence[ShapeSet] | None = None,
        warmup: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        providers: Sequence[str] = (PROVIDERS["cpu"],),
        threads: int | None = None,
        policy: LoadPolicy | None = None,
        environment: Environment | None = None,
        health_interval: float | None = None,
        start: bool = True,
    ) -> None:
        if size < 1:
            raise InvalidInputError(f"pool size {size}: a pool needs at least one context")
        self.artifact = Path(artifact)
        self.backend_kind = backend_of(self.artifact)
        self.name = name or self.artifact.name.removesuffix(ENGINE_SUFFIX).removesuffix(".onnx")
        self.size = size
        self.default_timeout = timeout
        self.metrics = PoolMetrics(self.name)  # a registry of its own: PoolManager merges several
        self._warmup_shapes = [dict(shapes) for shapes in warmup_shapes] if warmup_shapes is not None else None
        self._warmup = warmup
        self._providers = tuple(providers)
        self._threads = threads if threads is not None else max(1, (os.cpu_count() or 1) // size)
        self._policy = policy
        self._environment = environment
        self._health_interval = health_interval

        self._cond = threading.Condition()
        self._slots = [_Slot(index, f"{self.name}/{index}") for index in range(size)]
        self._idle: deque[_Slot] = deque()
        self._waiters: deque[object] = deque()
        self._state = PoolState.STARTING
        self._started = False
        self._starting = False
        self._source: ModelSource | None = None
        self._inputs: tuple[TensorDesc, ...] = ()
        self._feeds: list[dict[str, Any]] = []
        self._probe_feed: dict[str, Any] | None = None
        self._reference: dict[str, Any] | None = None
        self._memory = MemoryUse(None, None, None, "unknown")
        self._health_thread: threading.Thread | None = None
        self._stop_health = threading.Event()
        self.startup_seconds: float | None = None
        if start:
            self.start()

    # ------------------------------------------------------------ lifecycle
    def start(self) -> EnginePool:
        """Load once, create and warm every context, then report ready (idempotent; blocks).

        A ``close()`` that arrives meanwhile wins: start frees what it made and raises PoolClosed.
        """
        with self._cond:
            if self._state is PoolState.CLOSED:
                raise PoolClosed(f"pool '{self.name}' is closed")
            if self._started:
                return self
            self._started = self._starting = True
        began = time.perf_counter()
        try:
            self._source = self._open_source()
            self._inputs = self._source.inputs
            self._feeds, self._probe_feed = self._warm_feeds(self._source)
            errors = self._prepare_all()
            if len(errors) == self.size:
                raise PoolStartError(f"pool '{self.name}': no context could be created and warmed ({errors[0]})")
            self._memory = self._source.memory([s.runner for s in self._slots if s.runner is not None])
        except BaseException:
            self._fail_start()
            raise
        with self._cond:
            closed = self._state is PoolState.CLOSED
            if not closed:
                self._starting = False
                self._idle.extend(slot for slot in self._slots if slot.state == "idle")
                self._set_state_locked()
                self._cond.notify_all()
        if closed:
            self._fail_start()
            raise PoolClosed(f"pool '{self.name}' was closed while it started")
        self.startup_seconds = time.perf_counter() - began
        self.metrics.warmup(self.startup_seconds)
        self.metrics.device_memory(self._memory.total)
        if self._health_interval:
            self._health_thread = threading.Thread(target=self._health_loop, name=f"{self.name}-health", daemon=True)
            self._health_thread.start()
        return self

    def _prepare_all(self) -> list[str]:
        """Create and warm every context (one after the other); returns the failures, one line each."""
        errors: list[str] = []
        for slot in self._slots:
            if self._state is PoolState.CLOSED:
                break
            try:
                self._prepare(slot)
                slot.state = "idle"
            except InvalidInputError:
                raise  # the warm-up shapes or the model are wrong: every context would fail alike
            except Exception as exc:
                slot.state, slot.last_error = "broken", first_line(exc)
                errors.append(f"{slot.name}: {slot.last_error}")
                log.warning("pool %s: context %s failed to start: %s", self.name, slot.name, slot.last_error)
        return errors

    def _open_source(self) -> ModelSource:
        if self.backend_kind == ONNXRUNTIME:
            return OnnxrtSource(self.artifact, self._providers, self._threads)
        return TensorRTSource(self.artifact, self._policy, self._environment)

    def _warm_feeds(self, source: ModelSource) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        shape_sets = self._warmup_shapes if self._warmup_shapes is not None else source.default_shapes()
        names = [tensor.name for tensor in source.inputs]
        for shapes in shape_sets:
            for name in shapes:
                if name not in names:
                    raise InvalidInputError(
                        f"pool '{self.name}': warm-up shape for '{name}', which is no input of "
                        f"{self.artifact.name}{did_you_mean(name, names)} (inputs: {', '.join(names)})"
                    )
            missing = [name for name in names if name not in shapes]
            if missing:
                raise InvalidInputError(
                    f"pool '{self.name}': a warm-up shape set lacks input '{missing[0]}' (inputs: {', '.join(names)})"
                )
        if not shape_sets:
            raise InvalidInputError(f"pool '{self.name}': no warm-up shapes given; pass at least one")
        feeds = [random_feed(source.inputs, shapes, seed=index) for index, shapes in enumerate(shape_sets)]
        # the smallest shape set is the health probe: cheap, and it was served during warm-up
        probe = min(feeds, key=lambda feed: _volume({k: v.shape for k, v in feed.items()}))
        return feeds, probe

    def _prepare(self, slot: _Slot) -> None:
        """Create and activate a context, run every warm-up feed, then check it against the reference."""
        assert self._source is not None
        runner = self._source.new_runner(slot.name)
        runner.activate()
        try:
            slot.warm_runs = 0
            if self._warmup:
                for feed in self._feeds:
                    runner.infer(feed)
                    slot.warm_runs += 1
                self._verify(runner)
        except BaseException:
            _quietly_deactivate(runner)
            raise
        slot.runner, slot.last_error, slot.failed = runner, None, False

    def _verify(self, runner: Runner) -> None:
        """Run the probe; the first healthy context's answer becomes the reference for later probes."""
        assert self._probe_feed is not None
        outputs = runner.infer(self._probe_feed)
        if self._reference is None:
            self._reference = outputs
            return
        problem = outputs_match(self._reference, outputs)
        if problem:
            raise _ProbeFailed(problem)

    def _fail_start(self) -> None:
        with self._cond:
            self._state = PoolState.CLOSED
            self.metrics.state(PoolState.CLOSED.value)
            self._cond.notify_all()
        for slot in self._slots:
            if slot.runner is not None:
                _quietly_deactivate(slot.runner)
                slot.runner = None
            slot.state = "closed"
        if self._source is not None:
            self._source.close()
            self._source = None
        with self._cond:
            self._starting = False
            self._publish_locked()
            self._cond.notify_all()  # a close() that waits for start to give up may return now

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop serving, wait up to ``timeout`` for lent contexts, free every context and the engine.

        Contexts still lent after ``timeout`` are freed as they come back.
        """
        self._stop_health.set()
        with self._cond:
            if self._state is PoolState.CLOSED:
                return
            self._state = PoolState.CLOSED
            self.metrics.state(PoolState.CLOSED.value)
            self._cond.notify_all()
            if self._starting:  # start() sees CLOSED and frees what it made: never free the engine under it
                self._cond.wait_for(lambda: not self._starting, timeout)
                return
            self._cond.wait_for(lambda: not any(s.state == "busy" for s in self._slots), timeout)
            retire = [s for s in self._slots if s.state != "busy"]
            for slot in retire:
                slot.state = "closed"
            self._idle.clear()
            self._publish_locked()
        for slot in retire:
            self._retire(slot)
        if self._health_thread is not None and self._health_thread is not threading.current_thread():
            self._health_thread.join(timeout=5)

    def _retire(self, slot: _Slot) -> None:
        """Free a closed slot's context; the last one out frees the engine (never before its contexts)."""
        if slot.runner is not None:
            _quietly_deactivate(slot.runner)
        with self._cond:
            slot.runner = None
            last = all(s.state == "closed" and s.runner is None for s in self._slots)
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
        return self._state

    @property
    def ready(self) -> bool:
        """Warm and able to serve: every context healthy, or degraded with at least one healthy."""
        with self._cond:
            return self._state in (PoolState.READY, PoolState.DEGRADED) and any(
                s.state in ("idle", "busy") for s in self._slots
            )

    @property
    def degraded(self) -> bool:
        return self._state is PoolState.DEGRADED

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
    def warmup_shapes(self) -> list[dict[str, Shape]]:
        return [{name: tuple(array.shape) for name, array in feed.items()} for feed in self._feeds]

    def contexts(self) -> tuple[ContextInfo, ...]:
        with self._cond:
            return tuple(slot.info() for slot in self._slots)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the pool can serve (for a pool started in another thread)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._state is not PoolState.STARTING, timeout) and self._state in (
                PoolState.READY,
                PoolState.DEGRADED,
            )

    def _set_state_locked(self) -> None:
        if self._state is not PoolState.CLOSED:
            broken = any(slot.state == "broken" for slot in self._slots)
            self._state = PoolState.DEGRADED if broken else PoolState.READY
            self.metrics.state(self._state.value)
        self._publish_locked()

    def _publish_locked(self) -> None:
        counts: dict[str, int] = {}
        for slot in self._slots:
            counts[slot.state] = counts.get(slot.state, 0) + 1
        self.metrics.contexts(counts)

    # ------------------------------------------------------------ serving
    def infer(self, inputs: Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Run one request on a free context; wait at most ``timeout`` (default: the pool's) for one.

        Raises ``PoolExhausted`` when none frees up in time, ``PoolClosed`` after ``close()``,
        ``InvalidInputError`` for inputs the model does not take (the context stays healthy), and
        the runner's error when the context itself failed (the pool then probes and rebuilds it).
        """
        try:
            with self._lend(timeout, request=True) as slot:
                assert slot.runner is not None
                began = time.perf_counter()
                try:
                    outputs = slot.runner.infer(inputs)
                except InvalidInputError:
                    self.metrics.request("invalid")
                    raise
                except Exception as exc:
                    self.metrics.request("error")
                    self._heal(slot, exc)
                    raise
                finally:
                    self.metrics.inference(time.perf_counter() - began)
                slot.served += 1
                self.metrics.request("ok")
                return outputs
        except PoolExhausted:
            self.metrics.request("exhausted")
            raise

    @contextlib.contextmanager
    def borrow(self, timeout: float | None = None) -> Iterator[Runner]:
        """Hold one context for several calls (``with pool.borrow() as runner: runner.infer(...)``).

        The runner is yours alone until the block ends; don't keep it beyond.
        """
        with self._lend(timeout, request=True) as slot:
            assert slot.runner is not None
            yield slot.runner
            slot.served += 1

    @contextlib.contextmanager
    def _lend(self, timeout: float | None, request: bool) -> Iterator[_Slot]:
        slot = self._acquire(self.default_timeout if timeout is None else timeout)
        if request:
            self.metrics.in_flight(+1)
        try:
            yield slot
        finally:
            if request:
                self.metrics.in_flight(-1)
            self._release(slot)

    def _acquire(self, timeout: float | None) -> _Slot:
        began = time.monotonic()
        deadline = None if timeout is None else began + timeout
        with self._cond:
            if self._state is PoolState.CLOSED:
                raise PoolClosed(f"pool '{self.name}' is closed")
            if not self._started:
                raise PoolClosed(f"pool '{self.name}' was not started: call start()")
            if self._idle and not self._waiters:
                slot = self._take_locked()
                self.metrics.acquired(0.0, hit=True)
                return slot
            ticket = object()  # first come, first served: a newcomer never jumps the queue
            self._waiters.append(ticket)
            self.metrics.waiting(+1)
            try:
                self._cond.wait_for(
                    lambda: self._state is PoolState.CLOSED or (bool(self._idle) and self._waiters[0] is ticket),
                    None if deadline is None else max(deadline - time.monotonic(), 0),
                )
            finally:
                self._waiters.remove(ticket)
                self.metrics.waiting(-1)
                self._cond.notify_all()  # the next in line may go now
            if self._state is PoolState.CLOSED:
                raise PoolClosed(f"pool '{self.name}' is closed")
            if not self._idle:
                raise PoolExhausted(self.name, timeout or 0.0, self.size, len(self._waiters))
            slot = self._take_locked()
            self.metrics.acquired(time.monotonic() - began, hit=False)
            return slot

    def _take_locked(self) -> _Slot:
        slot = self._idle.popleft()
        slot.state = "busy"
        self._publish_locked()
        return slot

    def _release(self, slot: _Slot) -> None:
        with self._cond:
            closed = self._state is PoolState.CLOSED
            if closed:
                slot.state = "closed"
            elif slot.failed:
                slot.state = "broken"
            elif slot.state == "busy":
                slot.state = "idle"
                self._idle.append(slot)
            self._set_state_locked()
            self._cond.notify_all()
        if closed:
            self._retire(slot)

    # ------------------------------------------------------------ health
    def check(self) -> HealthReport:
        """Probe each idle context with a small inference; rebuild the ones that fail.

        Contexts serving requests are skipped (and so is everything while requests wait), so a
        check never makes traffic wait. Broken contexts get another rebuild attempt.
        """
        healthy: list[int] = []
        rebuilt: list[int] = []
        broken: list[tuple[int, str]] = []
        skipped: list[int] = []
        for slot in self._slots:
            with self._cond:
                if self._state in (PoolState.CLOSED, PoolState.STARTING):
                    break
                if slot.state == "idle" and not self._waiters:
                    self._idle.remove(slot)
                elif slot.state != "broken":
                    skipped.append(slot.index)
                    continue
                was_broken = slot.state == "broken"
                slot.state = "busy"
                self._publish_locked()
            try:
                if was_broken:
                    self._rebuild(slot, slot.last_error or "broken")
                    rebuilt.append(slot.index)
                elif self._probe(slot):
                    healthy.append(slot.index)
                else:
                    self._rebuild(slot, slot.last_error or "probe failed")
                    rebuilt.append(slot.index)
            except Exception as exc:
                slot.failed, slot.last_error = True, first_line(exc)
                broken.append((slot.index, slot.last_error))
            finally:
                self._release(slot)
        with self._cond:
            state = self._state
        return HealthReport(state, tuple(healthy), tuple(rebuilt), tuple(broken), tuple(skipped))

    def _probe(self, slot: _Slot) -> bool:
        try:
            assert slot.runner is not None
            self._verify(slot.runner)
        except Exception as exc:
            slot.last_error = first_line(exc)
            self.metrics.probed(ok=False)
            log.warning("pool %s: context %s failed its probe: %s", self.name, slot.name, slot.last_error)
            return False
        self.metrics.probed(ok=True)
        return True

    def _rebuild(self, slot: _Slot, why: str) -> None:
        """Replace a failed context by a new, warmed one (raises when that fails too)."""
        log.warning("pool %s: rebuilding context %s (%s)", self.name, slot.name, why)
        if slot.runner is not None:
            _quietly_deactivate(slot.runner)
            slot.runner = None
        self._prepare(slot)
        slot.rebuilds += 1
        self.metrics.rebuilt()

    def _heal(self, slot: _Slot, error: Exception) -> None:
        """After a runtime failure during a request: probe the context, rebuild it if the probe fails."""
        log.warning("pool %s: context %s failed a request: %s", self.name, slot.name, first_line(error))
        if self._probe(slot):
            return
        try:
            self._rebuild(slot, slot.last_error or first_line(error))
        except Exception as exc:
            slot.failed, slot.last_error = True, first_line(exc)

    def _health_loop(self) -> None:
        assert self._health_interval is not None
        while not self._stop_health.wait(self._health_interval):
            try:
                self.check()
            except Exception:  # the loop must outlive a bad round; the next one tries again
                log.exception("pool %s: health check failed", self.name)


class _ProbeFailed(RuntimeError):
    """A context answered the probe, but not with the warm-up reference."""


def _quietly_deactivate(runner: Runner) -> None:
    """Free a context that is being replaced or closed; its own failure must not stop the others'."""
    try:
        runner.deactivate()
    except Exception as exc:
        log.warning("deactivating %s failed: %s", getattr(runner, "name", runner), first_line(exc))


# ---------------------------------------------------------------- several models


class PoolManager:
    """One pool per model name, with one merged metrics registry for a single ``/metrics`` page."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry

        self._pools: dict[str, EnginePool | _Reserved] = {}
        self._lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.registry.register(MergedRegistries(lambda: [pool.metrics.registry for pool in self.pools()]))

    def add(self, name: str, artifact: Path | str, size: int = 1, **options: Any) -> EnginePool:
        """Start a pool for ``artifact`` under ``name`` (blocks until it is warm); names are unique."""
        with self._lock:
            if name in self._pools:
                raise InvalidInputError(f"a pool named '{name}' exists already; remove it first or pick another name")
            self._pools[name] = placeholder = _Reserved()
        try:
            pool = EnginePool(artifact, size, name=name, **options)
        except BaseException:
            with self._lock:
                self._pools.pop(name, None)
            raise
        with self._lock:
            if self._pools.get(name) is placeholder:
                self._pools[name] = pool
                return pool
        pool.close()  # the manager was closed meanwhile
        raise PoolClosed("the pool manager was closed while the pool started")

    def get(self, name: str) -> EnginePool:
        with self._lock:
            pool = self._pools.get(name)
            names = [key for key, value in self._pools.items() if isinstance(value, EnginePool)]
        if not isinstance(pool, EnginePool):
            raise InvalidInputError(
                f"no pool named '{name}'{did_you_mean(name, names)} (pools: {', '.join(names) or 'none'})"
            )
        return pool

    def __getitem__(self, name: str) -> EnginePool:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return isinstance(name, str) and isinstance(self._pools.get(name), EnginePool)

    def pools(self) -> list[EnginePool]:
        with self._lock:
            return [pool for pool in self._pools.values() if isinstance(pool, EnginePool)]

    def names(self) -> list[str]:
        return [pool.name for pool in self.pools()]

    def infer(self, name: str, inputs: Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
        return self.get(name).infer(inputs, timeout=timeout)

    def check(self) -> dict[str, HealthReport]:
        return {pool.name: pool.check() for pool in self.pools()}

    @property
    def ready(self) -> bool:
        pools = self.pools()
        return bool(pools) and all(pool.ready for pool in pools)

    def states(self) -> dict[str, PoolState]:
        return {pool.name: pool.state for pool in self.pools()}

    def device_memory_bytes(self) -> int | None:
        """Sum over the pools; None when any pool cannot tell."""
        totals = [pool.memory.total for pool in self.pools()]
        return None if any(total is None for total in totals) else sum(t for t in totals if t is not None)

    def remove(self, name: str) -> None:
        pool = self.get(name)
        with self._lock:
            self._pools.pop(name, None)
        pool.close()

    def close(self) -> None:
        with self._lock:
            pools = [pool for pool in self._pools.values() if isinstance(pool, EnginePool)]
            self._pools.clear()
        for pool in pools:
            pool.close()

    def __enter__(self) -> PoolManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Reserved:
    """Holds a name in a PoolManager while its pool starts (so two adds cannot race for it)."""
