"""The pool's request path (issue 16, item 4): warmed before ``ready``, no Condition work for an
idle context, its metrics right without prometheus_client on every request, and ``bench``
warming the pool's defaults plus the request shape. Real onnxruntime sessions throughout.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trtforge.bench import BenchConfig, run_bench
from trtforge.errors import InvalidInputError
from trtforge.runners.base import RunnerError
from trtforge.runtime import pool as pool_module
from trtforge.runtime.lending import PoolClosed, PoolExhausted, PoolState, Slot, SlotState
from trtforge.runtime.metrics import PoolMetrics
from trtforge.runtime.pool import SETTLE_RUNS, WARMUP_RUNS, EnginePool

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "calibration" / "digits" / "digits_cnn.onnx"
ONE = {"input": (1, 1, 8, 8)}


def feed(batch: int = 1) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(batch).random((batch, 1, 8, 8), dtype=np.float32)}


class CountingCondition(threading.Condition):
    """A real Condition that counts its notifications: the fast path must not need any."""

    def __init__(self, lock: threading.RLock) -> None:
        super().__init__(lock)
        self.notified = 0

    def notify_all(self) -> None:
        self.notified += 1
        super().notify_all()


@pytest.fixture
def unhurried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settling runs all SETTLE_RUNS however slow a loaded CI host is (its time cap is tested apart)."""
    monkeypatch.setattr(pool_module, "SETTLE_BUDGET_S", 60.0)


def test_request_path_runs_during_warm_up_and_is_not_counted(unhurried: None) -> None:
    pool = EnginePool(DIGITS, size=3, warmup_shapes=[ONE], start=False)
    returned: list[int] = []

    class Watched(deque[Slot]):
        """The idle stack: ``infer`` gives its context back with one ``append`` (the warm-up puts
        contexts on the stack with ``extend``)."""

        def append(self, slot: Slot) -> None:
            returned.append(slot.index)
            super().append(slot)

    pool._lender.idle = Watched()
    with pool:
        first = pool._lender.idle[-1].index  # the context the first request gets
        assert sorted(returned[:3]) == [0, 1, 2]  # every context served once through infer() before ready
        # then the first request's context, back to back through infer(), the last thing before ready
        assert returned[3:] == [first] * SETTLE_RUNS
        assert pool.ready
        snapshot = pool.metrics.snapshot()
        assert (snapshot.requests_ok, snapshot.hits, snapshot.inference_count, snapshot.in_flight) == (0, 0, 0, 0)
        assert [context.served for context in pool.contexts()] == [0, 0, 0]
        assert [context.warm_runs for context in pool.contexts()] == [1, 1, 1]  # warm feeds only
        pool.infer(feed())
        assert pool.metrics.snapshot().requests_ok == 1


def test_forgetting_the_warm_up_keeps_the_requests_no_context_saw() -> None:
    """The end of a warm-up zeroes what the contexts counted (the warm-up's own requests); a
    client's request refused before any context (``trtforge serve``'s 400s and 413s) or timed out
    waiting for one stays counted: a warm-up request never ends so, it would fail the warm-up
    (both were zeroed)."""
    metrics = PoolMetrics("digits")
    counters = metrics.counters()
    counters.ok, counters.invalid = 3, 1
    metrics.invalid()
    metrics.exhausted()
    metrics.forget_requests()
    snapshot = metrics.snapshot()
    assert (snapshot.requests_ok, snapshot.requests_invalid, snapshot.requests_exhausted) == (0, 1, 1)


class CountingLock:
    """A real RLock that counts how often it is taken: the fast path must not take it at all."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.taken = 0

    def __enter__(self) -> bool:
        self.taken += 1
        return self._lock.__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.__exit__(*exc_info)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self.taken += 1
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def _is_owned(self) -> bool:  # what Condition asks before it notifies
        return self._lock._is_owned()  # type: ignore[attr-defined]


def test_idle_context_is_lent_without_any_lock() -> None:
    """Lending an idle context and giving it back, metrics included, take neither the lender's
    condition nor the pool's lock."""
    with EnginePool(DIGITS, size=2, warmup_shapes=[ONE]) as pool:
        lender, metrics = pool._lender, pool.metrics
        lock = CountingLock()
        counting = CountingCondition(lock)  # type: ignore[arg-type]
        lender.cond, metrics.lock = counting, lock  # type: ignore[assignment]
        for _ in range(50):
            pool.infer(feed())
        assert (counting.notified, lock.taken) == (0, 0)
        metrics.lock = threading.RLock()
        lender.cond = threading.Condition(metrics.lock)
        assert pool.metrics.snapshot().requests_ok == 50


def test_borrow_lends_under_the_lock_from_the_stack_infer_lends_from_without_it() -> None:
    """``infer`` lends and gives back inline without any lock; ``borrow`` goes through the lender
    under its lock. Both take the top of one idle stack and count an idle context as a hit."""
    with EnginePool(DIGITS, size=2, warmup_shapes=[ONE]) as pool:
        lender = pool._lender
        top, below = lender.idle[-1], lender.idle[0]
        lock = CountingLock()
        lender.cond = CountingCondition(lock)  # type: ignore[arg-type]
        with pool.borrow() as runner:
            assert runner is top.runner and top.state is SlotState.BUSY and lock.taken >= 1
            taken = lock.taken
            pool.infer(feed())  # the other context, lock-free, while the top one is borrowed
            assert lock.taken == taken and list(lender.idle) == [below]
        assert lender.idle[-1] is top  # given back on top: the next request gets it
        pool.infer(feed())
        assert [context.served for context in pool.contexts()] == [2 if s is top else 1 for s in lender.slots]
        assert pool.metrics.value("trtforge_pool_acquire_total", kind="hit") == 3
        assert pool.metrics.value("trtforge_pool_acquire_total", kind="wait") == 0


def test_request_metrics_after_serial_and_concurrent_requests() -> None:
    with EnginePool(DIGITS, size=2, warmup_shapes=[ONE]) as pool:
        for _ in range(10):
            pool.infer(feed())
        threads = [threading.Thread(target=lambda: [pool.infer(feed()) for _ in range(25)]) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        value = pool.metrics.value
        assert value("trtforge_pool_requests_total", outcome="ok") == 110
        hits = value("trtforge_pool_acquire_total", kind="hit")
        assert hits + value("trtforge_pool_acquire_total", kind="wait") == 110 and hits >= 10
        assert value("trtforge_pool_wait_seconds_count") == 110
        assert value("trtforge_pool_inference_seconds_count") == 110
        assert value("trtforge_pool_inference_seconds_bucket", le="+Inf") == 110
        assert value("trtforge_pool_inference_seconds_sum") > 0
        assert value("trtforge_pool_in_flight") == 0 and value("trtforge_pool_contexts", state="idle") == 2
        text = generate_latest(pool.metrics.registry).decode()
        families = {family.name: family for family in text_string_to_metric_families(text)}
        buckets = [s.value for s in families["trtforge_pool_inference_seconds"].samples if s.name.endswith("_bucket")]
        assert buckets == sorted(buckets) and buckets[-1] == 110  # cumulative, as Prometheus expects


@pytest.mark.parametrize("batch", [3])
def test_bench_warms_the_defaults_and_the_request_shape(batch: int) -> None:
    report = run_bench(BenchConfig(DIGITS, pool=2, concurrency=2, requests=10, batch=batch))
    (warm,) = report.scenarios
    assert report.shapes == {"input": [batch, 1, 8, 8]}
    assert warm.warm_runs == 2 * 2  # the default (batch 1) and the request shape, on each context


def test_each_warm_up_shape_runs_warmup_runs_times_on_every_context(unhurried: None) -> None:
    """onnxruntime's second and third run of a shape are still slow: one run per shape is not warm."""
    pool = EnginePool(DIGITS, size=2, warmup_shapes=[ONE, {"input": (4, 1, 8, 8)}], start=False)
    assert pool._source is None
    runs = _record_runs(pool)
    with pool:
        shapes = [shape for _, shape in runs]
        batch_one, batch_four = shapes.count((1, 1, 8, 8)), shapes.count((4, 1, 8, 8))
        # per context: WARMUP_RUNS of each shape, the health probe (batch 1), the probe SETTLE_RUNS
        # times once both contexts exist, one request-path run
        assert batch_four == 2 * WARMUP_RUNS and WARMUP_RUNS >= 3
        assert batch_one == 2 * (WARMUP_RUNS + 1 + SETTLE_RUNS + 1) and SETTLE_RUNS >= 2
        assert [context.warm_runs for context in pool.contexts()] == [2, 2]


def test_first_request_gets_the_context_that_ran_last() -> None:
    """The idle contexts are a stack: the one that just came back (its memory still in the CPU
    caches) serves the next request, and after warm-up that is the last one warmed."""
    with EnginePool(DIGITS, size=3, warmup_shapes=[ONE]) as pool:
        lender = pool._lender
        order: list[int] = []
        for _ in range(4):
            slot = lender.acquire(1.0)
            order.append(slot.index)
            lender.give_back(slot)
        assert order == [order[0]] * 4
        last_warmed = order[0]
        held = [lender.acquire(1.0) for _ in range(3)]
        assert held[0].index == last_warmed and sorted(s.index for s in held) == [0, 1, 2]
        for slot in held:
            lender.give_back(slot)
        assert lender.acquire(1.0) is held[-1]
        lender.give_back(held[-1])  # else close() waits its 30 s for the context lent


def _wrap_infer(pool: EnginePool, wrap: Callable[[str, Callable[[Any], Any]], Callable[[Any], Any]]) -> None:
    """Every context the pool creates (rebuilt ones too) runs ``wrap(name, its real infer)``."""
    open_source = pool._open_source

    def wrapped():  # type: ignore[no-untyped-def]
        source = open_source()
        new_runner = source.new_runner

        def runner(name: str):  # type: ignore[no-untyped-def]
            made = new_runner(name)
            made.infer = wrap(name, made.infer)  # type: ignore[method-assign]
            return made

        source.new_runner = runner  # type: ignore[method-assign]
        return source

    pool._open_source = wrapped  # type: ignore[method-assign]


def _record_runs(pool: EnginePool) -> list[tuple[int, tuple[int, ...]]]:
    """Record every inference each context runs, as (context index, input shape), on real sessions."""
    runs: list[tuple[int, tuple[int, ...]]] = []

    def counted(name: str, infer: Callable[[Any], Any]) -> Callable[[Any], Any]:
        index = int(name.rsplit("/", 1)[1])
        return lambda feed: (runs.append((index, feed["input"].shape)), infer(feed))[1]

    _wrap_infer(pool, counted)
    return runs


def test_settling_stops_at_its_time_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model whose runs take longer than SETTLE_BUDGET_S settles one run per context, not SETTLE_RUNS."""
    monkeypatch.setattr(pool_module, "SETTLE_BUDGET_S", 0.0)
    pool = EnginePool(DIGITS, size=2, warmup_shapes=[ONE], start=False)
    runs = _record_runs(pool)
    with pool:
        # WARMUP_RUNS, the health probe, the request-path pass, one settling run
        per_context = [index for index, _ in runs]
        assert [per_context.count(0), per_context.count(1)] == [WARMUP_RUNS + 3] * 2
        assert pool.ready


def test_warm_up_requests_take_the_fast_path_and_leave_the_metrics_objects_in_place(unhurried: None) -> None:
    """The warm-up's requests give their context back exactly as a request after ready does (no
    Condition work), and forgetting them zeroes each context's series in place."""
    pool = EnginePool(DIGITS, size=2, warmup_shapes=[ONE], start=False)
    lender = pool._lender
    slow_returns: list[int] = []
    release_locked = lender._release_locked

    def watched(slot: Slot) -> bool:
        slow_returns.append(slot.index)
        return release_locked(slot)

    lender._release_locked = watched  # type: ignore[method-assign]
    histograms = [slot.counters.inference_time for slot in lender.slots]
    with pool:
        assert slow_returns == []
        assert [slot.counters.inference_time for slot in lender.slots] == histograms
        assert all(sum(h.counts) == 0 and h.sum == 0 for h in histograms)
        pool.infer(feed())
        assert sum(sum(h.counts) for h in histograms) == 1 and slow_returns == []


def test_a_request_sent_before_ready_is_served_once_the_contexts_are_warm() -> None:
    """It queues while the contexts warm up, then goes: it does not sleep until its own timeout
    (nor does the warm-up's own request queued behind it)."""
    pool = EnginePool(DIGITS, size=2, warmup_shapes=[ONE, {"input": (4, 1, 8, 8)}], start=False)
    starter = threading.Thread(target=pool.start)
    try:
        starter.start()
        began = time.perf_counter()
        outputs = pool.infer(feed(), timeout=15.0)
        assert time.perf_counter() - began < 10.0
        assert outputs["logits"].shape == (1, 10)
        starter.join(timeout=15.0)
        assert pool.ready
    finally:
        pool.close()


def _exclusive_runners(pool: EnginePool) -> list[str]:
    """Make every context the pool creates (rebuilt ones too) report a second caller inside its
    ``infer`` while one is there: a context lent twice at once. Real sessions underneath."""
    violations: list[str] = []

    def watched(name: str, infer: Callable[[Any], Any]) -> Callable[[Any], Any]:
        inside = threading.Lock()

        def exclusive(feed: Any) -> Any:
            if not inside.acquire(blocking=False):
                violations.append(f"{name} entered by {threading.current_thread().name} while in use")
                return infer(feed)
            try:
                time.sleep(0)  # let another thread in, if the pool would let it
                return infer(feed)
            finally:
                inside.release()

        return exclusive

    _wrap_infer(pool, watched)
    return violations


def test_stress_no_context_is_lent_twice_and_the_counts_add_up() -> None:
    """Many threads, requests and borrows, tight timeouts, bad inputs, contexts broken under load
    (their real onnxruntime sessions freed) and rebuilt by failed requests and a background health
    loop: no context ever serves two callers at once, and every series equals what the callers saw."""
    pool = EnginePool(DIGITS, size=3, warmup_shapes=[ONE], health_interval=0.005, start=False)
    violations = _exclusive_runners(pool)
    seen: Counter[str] = Counter()
    seen_lock = threading.Lock()
    stop = threading.Event()

    def client(worker: int) -> None:
        mine: Counter[str] = Counter()
        for step in range(300):
            try:
                if step % 7 == 3:
                    with pool.borrow(timeout=30) as runner:
                        mine["borrow"] += 1
                        runner.infer(feed())
                elif step % 11 == 5:
                    pool.infer({"input": np.zeros((1, 2, 8, 8), np.float32)}, timeout=30)
                else:
                    pool.infer(feed(), timeout=0.002 if step % 5 == 0 else 30)
                    mine["ok"] += 1
            except InvalidInputError:
                mine["invalid"] += 1
            except PoolExhausted:
                mine["exhausted"] += 1
            except RunnerError:
                mine["error" if step % 7 != 3 else "borrow_error"] += 1
        with seen_lock:
            seen.update(mine)

    def saboteur() -> None:
        while not stop.is_set():
            with pool.borrow(timeout=30) as runner:
                runner.deactivate()  # a real failure: the session is gone
            with seen_lock:
                seen["borrow"] += 1
                seen["sabotage"] += 1
            time.sleep(0.01)

    with pool, ThreadPoolExecutor(9, thread_name_prefix="stress") as executor:
        breaking = executor.submit(saboteur)
        for future in [executor.submit(client, worker) for worker in range(8)]:
            future.result(timeout=300)
        stop.set()
        breaking.result(timeout=30)
        pool._health.stop_loop()
        pool._health.join_loop()
        final = pool.check()  # heals what the last sabotage broke
        assert final.ok and pool.state is PoolState.READY
        assert pool.check().healthy == (0, 1, 2)

        assert not violations
        assert seen["sabotage"] > 0 and seen["error"] > 0 and seen["exhausted"] > 0
        value = pool.metrics.value
        assert value("trtforge_pool_requests_total", outcome="ok") == seen["ok"]
        assert value("trtforge_pool_requests_total", outcome="invalid") == seen["invalid"]
        assert value("trtforge_pool_requests_total", outcome="error") == seen["error"]
        assert value("trtforge_pool_requests_total", outcome="exhausted") == seen["exhausted"]
        requests = seen["ok"] + seen["invalid"] + seen["error"]
        acquired = value("trtforge_pool_acquire_total", kind="hit") + value("trtforge_pool_acquire_total", kind="wait")
        assert acquired == requests + seen["borrow"]
        assert value("trtforge_pool_wait_seconds_count") == acquired
        assert value("trtforge_pool_inference_seconds_count") == requests
        assert value("trtforge_pool_in_flight") == 0 and value("trtforge_pool_waiting") == 0
        assert value("trtforge_pool_contexts", state="idle") == 3
        assert value("trtforge_pool_rebuilds_total") >= 1
        assert sum(context.served for context in pool.contexts()) == seen["ok"] + seen["borrow"] - seen["borrow_error"]
        assert sorted(slot.index for slot in pool._lender.idle) == [0, 1, 2]  # each idle exactly once
    assert all(slot.state is SlotState.CLOSED and slot.runner is None for slot in pool._lender.slots)
    assert pool._source is None  # the engine was freed, after its contexts


@pytest.mark.parametrize("attempt", range(5))  # a race: several tries
def test_close_under_load_frees_every_context_once(attempt: int) -> None:
    """Requests racing ``close()`` either get their answer or PoolClosed; afterwards every context
    and the engine are freed, none twice, and nothing is left on the idle stack."""
    pool = EnginePool(DIGITS, size=2, warmup_shapes=[ONE], start=False)
    violations = _exclusive_runners(pool)
    pool.start()
    freed: Counter[int] = Counter()
    retire = pool._retire

    def counted(slot: Slot) -> None:
        freed[slot.index] += 1 if slot.runner is not None else 0
        retire(slot)

    pool._retire = counted  # type: ignore[method-assign]
    pool._lender._retire = counted
    outcomes: Counter[str] = Counter()
    outcomes_lock = threading.Lock()

    def client() -> None:
        while True:
            try:
                pool.infer(feed(), timeout=5)
            except PoolClosed:
                return
            with outcomes_lock:
                outcomes["ok"] += 1

    with ThreadPoolExecutor(6) as executor:
        futures = [executor.submit(client) for _ in range(6)]
        time.sleep(0.05)
        pool.close()
        for future in futures:
            future.result(timeout=30)
    assert not violations and outcomes["ok"] > 0
    assert freed == {0: 1, 1: 1}
    assert not pool._lender.idle and pool._source is None
    assert all(slot.state is SlotState.CLOSED and slot.runner is None for slot in pool._lender.slots)
