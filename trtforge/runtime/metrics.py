"""Prometheus metrics of a warm engine pool, in a registry of its own.

A per-pool ``CollectorRegistry`` keeps pools independent (tests, several models in one process);
``MergedRegistries`` lets a ``PoolManager`` expose all of them on one ``/metrics`` page.
Every series carries a ``pool`` label so the merged page stays unambiguous.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram
from prometheus_client.metrics_core import Metric

from trtforge.runtime.lending import PoolState, SlotState

#: Inference on small models takes tens of microseconds, large ones seconds: the default
#: Prometheus buckets (5 ms .. 10 s) would put every small-model request into the first bucket.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

STATES = tuple(state.value for state in PoolState)
#: the slot states a scrape shows (starting and closed contexts serve nothing)
CONTEXT_STATES = (SlotState.IDLE, SlotState.BUSY, SlotState.BROKEN)
OUTCOMES = ("ok", "invalid", "error", "exhausted")


class PoolMetrics:
    """The series one pool updates; names are ``trtforge_pool_*`` (see the README's table)."""

    def __init__(self, pool: str, registry: CollectorRegistry | None = None) -> None:
        self.pool = pool
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        reg = self.registry
        labels = ("pool",)
        self._requests = Counter(
            "trtforge_pool_requests",
            "Requests by outcome: ok, invalid (input refused), error (context failed), exhausted (timed out).",
            (*labels, "outcome"),
            registry=reg,
        )
        self._acquire = Counter(
            "trtforge_pool_acquire",
            "Context acquisitions: hit = a context was idle, wait = the request queued for one.",
            (*labels, "kind"),
            registry=reg,
        )
        self._in_flight = Gauge("trtforge_pool_in_flight", "Requests holding a context now.", labels, registry=reg)
        self._waiting = Gauge("trtforge_pool_waiting", "Requests waiting for a context now.", labels, registry=reg)
        self._wait = Histogram(
            "trtforge_pool_wait_seconds",
            "Time a request waited for a context (0 for hits).",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._inference = Histogram(
            "trtforge_pool_inference_seconds",
            "Time a context spent on one request.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._rebuilds = Counter(
            "trtforge_pool_rebuilds", "Contexts rebuilt after a failed health probe.", labels, registry=reg
        )
        self._checks = Counter(
            "trtforge_pool_health_probes",
            "Health probes run on idle contexts, by result.",
            (*labels, "result"),
            registry=reg,
        )
        self._contexts = Gauge(
            "trtforge_pool_contexts", "Contexts by state (idle, busy, broken).", (*labels, "state"), registry=reg
        )
        self._memory = Gauge(
            "trtforge_pool_device_memory_bytes",
            "Device memory held by the pool (engine + contexts); NaN when the backend cannot tell.",
            labels,
            registry=reg,
        )
        self._warmup = Gauge(
            "trtforge_pool_warmup_seconds",
            "Duration of the last start: load, contexts, warm-up.",
            labels,
            registry=reg,
        )
        self._state = Enum("trtforge_pool_state", "Pool state.", labels, states=list(STATES), registry=reg)
        # Bind every labelled child once: a scrape shows zeros instead of missing series, and the
        # request path skips the label lookup (the first request must not pay for creating them).
        self._outcome = {outcome: self._requests.labels(pool, outcome) for outcome in OUTCOMES}
        self._hit, self._miss = self._acquire.labels(pool, "hit"), self._acquire.labels(pool, "wait")
        self._probe = {True: self._checks.labels(pool, "ok"), False: self._checks.labels(pool, "failed")}
        self._context_state = {state: self._contexts.labels(pool, state.value) for state in CONTEXT_STATES}
        self._in_flight_now = self._in_flight.labels(pool)
        self._waiting_now = self._waiting.labels(pool)
        self._wait_time = self._wait.labels(pool)
        self._inference_time = self._inference.labels(pool)
        self._rebuilt = self._rebuilds.labels(pool)
        self._memory_now = self._memory.labels(pool)
        self._warmup_time = self._warmup.labels(pool)
        self._state_now = self._state.labels(pool)
        self._memory_now.set(math.nan)
        self._state_now.state(PoolState.STARTING.value)

    # ------------------------------------------------------------ updates (called by the pool)
    def request(self, outcome: str) -> None:
        self._outcome[outcome].inc()

    def acquired(self, waited_s: float, hit: bool) -> None:
        (self._hit if hit else self._miss).inc()
        self._wait_time.observe(waited_s)

    def inference(self, seconds: float) -> None:
        self._inference_time.observe(seconds)

    def in_flight(self, delta: int) -> None:
        self._in_flight_now.inc(delta)

    def waiting(self, delta: int) -> None:
        self._waiting_now.inc(delta)

    def rebuilt(self) -> None:
        self._rebuilt.inc()

    def probed(self, ok: bool) -> None:
        self._probe[ok].inc()

    def contexts(self, counts: Mapping[SlotState, int]) -> None:
        for state, gauge in self._context_state.items():
            gauge.set(counts.get(state, 0))

    def device_memory(self, nbytes: int | None) -> None:
        self._memory_now.set(math.nan if nbytes is None else nbytes)

    def warmup(self, seconds: float) -> None:
        self._warmup_time.set(seconds)

    def state(self, state: PoolState) -> None:
        self._state_now.state(state.value)

    # ------------------------------------------------------------ reading back
    def value(self, name: str, **labels: str) -> float:
        """One sample, e.g. ``value("trtforge_pool_requests_total", outcome="ok")`` (0 when absent)."""
        found = self.registry.get_sample_value(name, {"pool": self.pool, **labels})
        return 0.0 if found is None else found

    def snapshot(self) -> MetricsSnapshot:
        return MetricsSnapshot(
            requests_ok=int(self.value("trtforge_pool_requests_total", outcome="ok")),
            requests_invalid=int(self.value("trtforge_pool_requests_total", outcome="invalid")),
            requests_error=int(self.value("trtforge_pool_requests_total", outcome="error")),
            requests_exhausted=int(self.value("trtforge_pool_requests_total", outcome="exhausted")),
            hits=int(self.value("trtforge_pool_acquire_total", kind="hit")),
            waits=int(self.value("trtforge_pool_acquire_total", kind="wait")),
            in_flight=int(self.value("trtforge_pool_in_flight")),
            waiting=int(self.value("trtforge_pool_waiting")),
            wait_seconds_sum=self.value("trtforge_pool_wait_seconds_sum"),
            inference_count=int(self.value("trtforge_pool_inference_seconds_count")),
            inference_seconds_sum=self.value("trtforge_pool_inference_seconds_sum"),
            rebuilds=int(self.value("trtforge_pool_rebuilds_total")),
            device_memory_bytes=_finite_or_none(self.value("trtforge_pool_device_memory_bytes")),
        )


@dataclass(frozen=True)
class MetricsSnapshot:
    """The headline numbers, for ``trtforge bench --json`` and for logs."""

    requests_ok: int
    requests_invalid: int
    requests_error: int
    requests_exhausted: int
    hits: int
    waits: int
    in_flight: int
    waiting: int
    wait_seconds_sum: float
    inference_count: int
    inference_seconds_sum: float
    rebuilds: int
    device_memory_bytes: int | None


def _finite_or_none(value: float) -> int | None:
    return None if math.isnan(value) else int(value)


class MergedRegistries:
    """A collector that yields the families of several registries, merged by name.

    prometheus_client has no built-in way to expose several registries on one page: simply
    concatenating their expositions would repeat ``# HELP``/``# TYPE`` lines, which scrapers reject.
    """

    def __init__(self, registries: Callable[[], Iterable[CollectorRegistry]]) -> None:
        self._registries = registries

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for registry in self._registries():
            for family in registry.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                merged.samples.extend(family.samples)
        yield from families.values()
