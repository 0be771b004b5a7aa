"""Prometheus metrics of a warm engine pool, in a registry of its own.

A per-pool ``CollectorRegistry`` keeps pools independent (tests, several models in one process);
``MergedRegistries`` lets a ``PoolManager`` expose all of them on one ``/metrics`` page.
Every series carries a ``pool`` label so the merged page stays unambiguous.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.utils import floatToGoString

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


class LatencyHistogram:
    """A Prometheus histogram as plain numbers: per-bucket counts and a sum, one per context,
    updated by the request holding it. ``prometheus_client.Histogram.observe`` takes a lock of its
    own and costs 1-2 µs, as much as a small model's whole inference; this is a bisect and two
    additions."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    @classmethod
    def merged(cls, histograms: Iterable[LatencyHistogram], zeros: int = 0) -> LatencyHistogram:
        """The sum of several (one per context), plus ``zeros`` observations of 0 s."""
        total = cls()
        total.counts[0] = zeros
        for histogram in histograms:
            total.counts = [a + b for a, b in zip(total.counts, histogram.counts, strict=True)]
            total.sum += histogram.sum
        return total

    def family(self, name: str, documentation: str, pool: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=("pool",))
        cumulative = list(accumulate(self.counts))
        bounds = [*(floatToGoString(bound) for bound in LATENCY_BUCKETS), "+Inf"]
        family.add_metric([pool], list(zip(bounds, cumulative, strict=True)), self.sum)
        return family


class RequestCounters:
    """One context's request-path series as plain numbers, written only by the request that holds
    the context (so no lock and no shared cache line), summed over the contexts at scrape time.
    A hit is a wait of 0 s: the wait histogram's first bucket adds ``hits`` when it is scraped."""

    __slots__ = ("error", "hits", "in_flight", "inference_time", "invalid", "ok", "wait_time", "waits")

    def __init__(self) -> None:
        self.ok = self.invalid = self.error = 0
        self.hits = self.waits = 0
        self.in_flight = 0  # 1 while a request (or ``borrow``) holds the context
        self.wait_time = LatencyHistogram()  # requests that queued
        self.inference_time = LatencyHistogram()

    def forget(self) -> None:
        """Zero the counts in place (``in_flight`` is a fact, not a count: it stays)."""
        self.ok = self.invalid = self.error = self.hits = self.waits = 0
        for histogram in (self.wait_time, self.inference_time):
            histogram.counts[:] = [0] * len(histogram.counts)
            histogram.sum = 0.0


def _no_view() -> tuple[PoolState, Mapping[SlotState, int], int]:
    return PoolState.STARTING, {}, 0


class PoolMetrics:
    """The series one pool updates; names are ``trtforge_pool_*`` (see the README's table).

    The request path's series (requests, acquisitions, in flight, the two latency histograms) are
    ``RequestCounters``, one per context, which a request updates on the context it holds without
    any lock; a scrape sums them. ``lock`` guards the rest of the pool (the lender builds its
    condition on it) and the rare counts of requests no context saw (``exhausted``, ``invalid``).
    The pool's state, contexts by state and requests waiting are read from the lender at scrape
    time (``view``). Rare events (probes, rebuilds, memory, warm-up) use prometheus_client's own
    metrics.
    """

    def __init__(self, pool: str, registry: CollectorRegistry | None = None) -> None:
        self.pool = pool
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.lock = threading.RLock()
        self.view: Callable[[], tuple[PoolState, Mapping[SlotState, int], int]] = _no_view
        self.per_context: list[RequestCounters] = []
        self.exhausted_requests = 0
        self.refused_requests = 0  # invalid, refused before a context was lent (``trtforge serve``'s checks)
        reg = self.registry
        labels = ("pool",)
        reg.register(_RequestPath(self))
        self._rebuilds = Counter(
            "trtforge_pool_rebuilds", "Contexts rebuilt after a failed health probe.", labels, registry=reg
        )
        self._checks = Counter(
            "trtforge_pool_health_probes",
            "Health probes run on idle contexts, by result.",
            (*labels, "result"),
            registry=reg,
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
        # Bind every labelled child once: a scrape shows zeros instead of missing series.
        self._probe = {True: self._checks.labels(pool, "ok"), False: self._checks.labels(pool, "failed")}
        self._rebuilt = self._rebuilds.labels(pool)
        self._memory_now = self._memory.labels(pool)
        self._warmup_time = self._warmup.labels(pool)
        self._memory_now.set(math.nan)

    # ------------------------------------------------------------ the request path
    def counters(self) -> RequestCounters:
        """The series of one more context (the lender asks once per slot)."""
        counters = RequestCounters()
        with self.lock:
            self.per_context.append(counters)
        return counters

    def forget_requests(self) -> None:
        """Zero the series the contexts count: warm-up runs through them, and must not count as
        traffic. In place: the next request updates the very objects the warm-up left in the CPU
        caches. The requests no context saw (``exhausted``, ``invalid`` before a context) stay: the
        warm-up's own are never among them (one refused or timed out fails the warm-up), a client's are."""
        with self.lock:
            for counters in self.per_context:
                counters.forget()

    # ------------------------------------------------------------ rare events
    def exhausted(self) -> None:
        with self.lock:
            self.exhausted_requests += 1

    def invalid(self) -> None:
        """A request refused before it reached a context (its inputs, its body)."""
        with self.lock:
            self.refused_requests += 1

    def rebuilt(self) -> None:
        self._rebuilt.inc()

    def probed(self, ok: bool) -> None:
        self._probe[ok].inc()

    def device_memory(self, nbytes: int | None) -> None:
        self._memory_now.set(math.nan if nbytes is None else nbytes)

    def warmup(self, seconds: float) -> None:
        self._warmup_time.set(seconds)

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


class _RequestPath:
    """The collector of the request path's series and the lender's state, built at scrape time."""

    def __init__(self, metrics: PoolMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # families appear at collect(); nothing to check for name clashes up front

    def collect(self) -> Iterator[Metric]:
        m, pool = self._metrics, self._metrics.pool
        with m.lock:
            state, contexts, waiting = m.view()
            per_context = list(m.per_context)
            exhausted, refused = m.exhausted_requests, m.refused_requests
        requests = CounterMetricFamily(
            "trtforge_pool_requests",
            "Requests by outcome: ok, invalid (input refused), error (context failed), exhausted (timed out).",
            labels=("pool", "outcome"),
        )
        counted = {
            "ok": sum(c.ok for c in per_context),
            "invalid": sum(c.invalid for c in per_context) + refused,
            "error": sum(c.error for c in per_context),
            "exhausted": exhausted,  # no context: counted by the pool, under its lock
        }
        for outcome in OUTCOMES:
            requests.add_metric([pool, outcome], counted[outcome])
        hits = sum(c.hits for c in per_context)
        acquire = CounterMetricFamily(
            "trtforge_pool_acquire",
            "Context acquisitions: hit = a context was idle, wait = the request queued for one.",
            labels=("pool", "kind"),
        )
        acquire.add_metric([pool, "hit"], hits)
        acquire.add_metric([pool, "wait"], sum(c.waits for c in per_context))
        in_flight = GaugeMetricFamily("trtforge_pool_in_flight", "Requests holding a context now.", labels=("pool",))
        in_flight.add_metric([pool], sum(c.in_flight for c in per_context))
        waits = LatencyHistogram.merged([c.wait_time for c in per_context], zeros=hits).family(
            "trtforge_pool_wait_seconds", "Time a request waited for a context (0 for hits).", pool
        )
        inference = LatencyHistogram.merged([c.inference_time for c in per_context]).family(
            "trtforge_pool_inference_seconds", "Time a context spent on one request.", pool
        )
        waiting_now = GaugeMetricFamily(
            "trtforge_pool_waiting", "Requests waiting for a context now.", labels=("pool",)
        )
        waiting_now.add_metric([pool], waiting)
        by_state = GaugeMetricFamily(
            "trtforge_pool_contexts", "Contexts by state (idle, busy, broken).", labels=("pool", "state")
        )
        for slot_state in CONTEXT_STATES:
            by_state.add_metric([pool, slot_state.value], contexts.get(slot_state, 0))
        states = StateSetMetricFamily("trtforge_pool_state", "Pool state.", labels=("pool",))
        states.add_metric([pool], {value: value == state.value for value in STATES})
        yield from (requests, acquire, in_flight, waiting_now, waits, inference, by_state, states)


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
