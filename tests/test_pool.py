"""The warm engine pool on real onnxruntime sessions (and on TensorRT where a supported GPU exists).

Failures are real: a context whose onnxruntime session was freed (``runner.deactivate()``), or a
model that onnxruntime refuses to load; nothing of onnxruntime or TensorRT is mocked.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from models import need_engine_runtime, need_rtx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trtforge.errors import IncompatibleEngineError, InvalidInputError, TrtforgeError
from trtforge.runners.base import RunnerError
from trtforge.runtime import PoolNotStarted, PoolStartError
from trtforge.runtime.health import outputs_match
from trtforge.runtime.lending import PoolClosed, PoolExhausted, PoolState, SlotState
from trtforge.runtime.manager import PoolManager
from trtforge.runtime.pool import EnginePool, suggest_pool_size

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "calibration" / "digits" / "digits_cnn.onnx"
ONE = {"input": (1, 1, 8, 8)}
FOUR = {"input": (4, 1, 8, 8)}


def digits_batch(seed: int, batch: int = 1) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(seed).random((batch, 1, 8, 8), dtype=np.float32)}


@pytest.fixture(scope="module")
def reference() -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """The digits model in a plain onnxruntime session, outside any pool."""
    session = ort.InferenceSession(str(DIGITS), providers=["CPUExecutionProvider"])
    return lambda feed: session.run(["logits"], feed)[0]


def run_in_threads(client: Callable[[int], None], workers: int) -> None:
    """Run ``client(0..workers-1)`` at once; a failed assertion in any of them fails the test
    (``Future.result`` re-raises it here, where a bare thread would only warn)."""
    with ThreadPoolExecutor(workers, thread_name_prefix="client") as executor:
        futures = [executor.submit(client, worker) for worker in range(workers)]
        for future in futures:
            future.result(timeout=120)


@pytest.fixture
def pool() -> Iterator[EnginePool]:
    with EnginePool(DIGITS, size=2, warmup_shapes=[ONE, FOUR], name="digits") as started:
        yield started


# ---------------------------------------------------------------- start-up


def test_ready_only_after_every_context_is_warm() -> None:
    pool = EnginePool(DIGITS, size=4, warmup_shapes=[ONE, FOUR], start=False)
    assert pool.state is PoolState.STARTING and not pool.ready
    # not PoolClosed, which says the pool is shut down: this one may still start
    with pytest.raises(PoolNotStarted, match=r"was not started: call start\(\)") as caught:
        pool.infer(digits_batch(0), timeout=0.01)
    assert not isinstance(caught.value, PoolClosed) and isinstance(caught.value, RuntimeError)
    with pytest.raises(PoolNotStarted), pool.borrow():
        pass

    def watch() -> tuple[int, ...]:
        while not pool.ready:
            time.sleep(0.0005)
        return tuple(context.warm_runs for context in pool.contexts())

    try:
        with ThreadPoolExecutor(2) as executor:
            watcher = executor.submit(watch)
            starter = executor.submit(pool.start)
            # a request that arrives during start-up waits for the warm pool instead of a cold context,
            # and for ready: start() alone holds contexts until then (it may free them all on close)
            outputs = pool.infer(digits_batch(1), timeout=30)
            assert pool.ready
            assert all(context.warm_runs == 2 for context in pool.contexts())
            assert outputs["logits"].shape == (1, 10)
            starter.result(timeout=30)
            seen_at_ready = watcher.result(timeout=10)
        assert seen_at_ready == (2, 2, 2, 2)  # both warm-up shapes on all four contexts, before ready
        assert pool.state is PoolState.READY and pool.wait_ready(0)
        assert pool.startup_seconds is not None and pool.startup_seconds > 0
        assert pool.warmup_shapes == [ONE, FOUR]
        assert pool.metrics.value("trtforge_pool_warmup_seconds") == pytest.approx(pool.startup_seconds)
    finally:
        pool.close()


def test_warmup_false_serves_unwarmed_contexts() -> None:
    with EnginePool(DIGITS, size=2, warmup=False) as pool:
        assert pool.ready
        assert [context.warm_runs for context in pool.contexts()] == [0, 0]
        assert pool.infer(digits_batch(0))["logits"].shape == (1, 10)


# ---------------------------------------------------------------- serving


def test_more_threads_than_contexts_never_share_one(
    pool: EnginePool, reference: Callable[[dict[str, np.ndarray]], np.ndarray]
) -> None:
    holders: dict[int, str] = {}
    lock = threading.Lock()
    violations: list[str] = []
    most_at_once = 0

    def client(worker: int) -> None:
        nonlocal most_at_once
        for step in range(12):
            feed = digits_batch(worker * 100 + step, batch=1 + step % 4)
            with pool.borrow(timeout=30) as runner:
                me = threading.current_thread().name
                with lock:
                    if id(runner) in holders:
                        violations.append(f"{me} got a context held by {holders[id(runner)]}")
                    holders[id(runner)] = me
                    most_at_once = max(most_at_once, len(holders))
                time.sleep(0.001)  # hold it a while, so the other threads must queue
                got = runner.infer(feed)["logits"]
                with lock:
                    del holders[id(runner)]
            np.testing.assert_allclose(got, reference(feed), rtol=1e-5, atol=1e-6)

    run_in_threads(client, 8)
    assert not violations
    assert most_at_once <= 2
    snapshot = pool.metrics.snapshot()
    assert snapshot.hits + snapshot.waits == 8 * 12
    assert snapshot.waits > 0  # 8 threads on 2 contexts did queue
    assert snapshot.in_flight == 0 and snapshot.waiting == 0


def test_concurrent_infer_returns_each_callers_own_result(
    pool: EnginePool, reference: Callable[[dict[str, np.ndarray]], np.ndarray]
) -> None:
    def client(worker: int) -> None:
        for step in range(20):
            feed = digits_batch(worker * 1000 + step, batch=1 + (worker + step) % 4)
            got = pool.infer(feed, timeout=30)["logits"]
            np.testing.assert_allclose(got, reference(feed), rtol=1e-5, atol=1e-6)

    run_in_threads(client, 6)
    assert pool.metrics.snapshot().requests_ok == 6 * 20


def test_timeout_raises_pool_exhausted(pool: EnginePool) -> None:
    with pool.borrow(), pool.borrow():
        began = time.monotonic()
        with pytest.raises(PoolExhausted, match=r"no context free within 0\.2 s") as caught:
            pool.infer(digits_batch(0), timeout=0.2)
        waited = time.monotonic() - began
        assert 0.2 <= waited < 5
        assert caught.value.size == 2 and caught.value.pool == "digits"
        with pytest.raises(PoolExhausted):
            pool.infer(digits_batch(0), timeout=0)  # no waiting at all
    assert pool.metrics.snapshot().requests_exhausted == 2
    assert pool.infer(digits_batch(0), timeout=0)["logits"].shape == (1, 10)  # free again: a hit


def test_default_timeout_applies() -> None:
    with EnginePool(DIGITS, size=1, timeout=0.05) as pool, pool.borrow(), pytest.raises(PoolExhausted):
        pool.infer(digits_batch(0))


def test_waiters_are_served_first_come_first_served() -> None:
    """Waiters queued in a known order on a pool of one get the context in that order.

    Checked against the pool's queue made LIFO (``self.waiters[-1] is ticket`` in ``Lender.acquire``)
    and made random (any waiter takes a free context: ``bool(self.idle)`` alone), then restored:
    this test failed on both ([5, 4, 3, 2, 1, 0], and a shuffled order).
    """
    served: list[int] = []  # appended while holding the only context: the order of acquisition
    waiters = 6
    with EnginePool(DIGITS, size=1, warmup_shapes=[ONE]) as pool, ThreadPoolExecutor(waiters) as executor:

        def waiter(index: int) -> None:
            with pool.borrow(timeout=30) as runner:
                served.append(index)
                runner.infer(digits_batch(index))

        futures = []
        with pool.borrow():  # the one context is lent: every waiter below must queue
            for index in range(waiters):
                futures.append(executor.submit(waiter, index))
                while pool.metrics.snapshot().waiting < index + 1:  # queued in this order
                    time.sleep(0.001)
        for future in futures:
            future.result(timeout=30)  # re-raises a waiter's exception here, in the test's thread
    assert served == list(range(waiters))
    assert pool.metrics.snapshot().waits == waiters


def test_a_context_given_back_wakes_only_the_first_in_line() -> None:
    """Every waiter slept on one condition, and each context given back woke all of them (twice:
    the release, then the one served leaving the line), though only the first in line may take it:
    with 32 threads on one context a request cost ~21 voluntary context switches (1.4 now), and a
    pool served 7x fewer requests a second from 64 threads than from 8 (digits, two cores).
    Counted over every thread of the process (RUSAGE_SELF)."""
    import resource

    threads, each = 32, 60
    feed = digits_batch(0)
    with EnginePool(DIGITS, size=1, warmup_shapes=[ONE]) as pool:
        gate = threading.Barrier(threads)

        def client(_: int) -> None:
            gate.wait()
            for _ in range(each):
                pool.infer(feed, timeout=60)

        before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
        run_in_threads(client, threads)
        switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before
        assert pool.metrics.snapshot().requests_ok == threads * each
    assert switches / (threads * each) < 8, switches


def test_invalid_input_is_the_callers_and_leaves_the_context_healthy(pool: EnginePool) -> None:
    array = digits_batch(0)["input"]
    refused = {
        # a typo is named, with the fix; the input it leaves missing is what it meant
        "no input 'inputs' — did you mean 'input'? (input 'input' is missing from the feed; inputs: input)": {
            "inputs": array
        },
        "input 'input' is missing from the feed": {},
        # onnxruntime's whole message: which dim, what it got, what it expects
        "index: 1 Got: 3 Expected: 1": {"input": np.zeros((1, 3, 8, 8), np.float32)},
        "a mapping of input name to array (input), not ndarray": array,
        "not NoneType": None,
        "input 'input' is NoneType, not an array": {"input": None},
        # onnxruntime would take both: a list of pairs as dict(feed), nested lists as an array
        "a mapping of input name to array (input), not list": [("input", array)],
        "input 'input' is list, not an array": {"input": array.tolist()},
    }
    for expected, feed in refused.items():
        with pytest.raises(InvalidInputError) as caught:
            pool.infer(feed)  # type: ignore[arg-type]
        assert expected in str(caught.value) and "\n" not in str(caught.value)
    snapshot = pool.metrics.snapshot()
    assert snapshot.requests_invalid == len(refused) and snapshot.requests_error == snapshot.rebuilds == 0
    assert pool.metrics.value("trtforge_pool_health_probes_total", result="failed") == 0
    assert pool.state is PoolState.READY
    assert pool.check().healthy == (0, 1)
    with pool.borrow() as runner:  # a borrowed context refuses them alike
        for feed in ([("input", array)], {"input": array.tolist()}):
            with pytest.raises(InvalidInputError, match=r"not an array|not list"):
                runner.infer(feed)  # type: ignore[arg-type]


def test_array_likes_are_taken_as_np_asarray_takes_them(pool: EnginePool) -> None:
    """onnxruntime takes ndarrays alone: an object with ``__array__`` (a CPU tensor) passed the feed
    check, failed in onnxruntime, and after a health probe came back as 'the model refused these
    inputs as it ran', which it never ran. The TensorRT runner takes them (``np.asarray``)."""

    class ArrayLike:
        def __init__(self, array: np.ndarray) -> None:
            self.array = array

        def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
            return self.array

    feed = digits_batch(3)
    expected = pool.infer(feed)["logits"]
    assert np.array_equal(pool.infer({"input": ArrayLike(feed["input"])})["logits"], expected)
    assert pool.metrics.value("trtforge_pool_health_probes_total", result="ok") == 0


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"size": "2"}, "pool size '2'"),
        ({"size": 0}, "pool size 0"),
        ({"health_interval": -1}, "health_interval -1: seconds > 0"),  # was a busy loop of probes
        ({"health_interval": 0}, "health_interval 0: seconds > 0"),
        ({"timeout": float("nan")}, "timeout nan"),  # would wait forever
        ({"timeout": -1}, "timeout -1"),
        ({"threads": 0}, "threads 0"),
        ({"threads": 10**6}, "threads 1000000: at most"),  # each an OS thread in onnxruntime's session
        ({"providers": "CPUExecutionProvider"}, "providers 'CPUExecutionProvider': a list of names"),
    ],
)
def test_bad_settings_are_refused_before_anything_loads(setting: dict, expected: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(expected)):
        EnginePool(Path("missing.onnx"), **setting)  # refused before the file is even looked at


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        # one set where a list of sets belongs: its input names were read as sets (AttributeError)
        ({"warmup_shapes": ONE}, "warmup_shapes {'input': (1, 1, 8, 8)}: a list of warm-up sets"),
        ({"warmup_also": ONE}, "warmup_also {'input': (1, 1, 8, 8)}: a list of warm-up sets"),
        ({"warmup_shapes": [None]}, "warm-up set None: a mapping of input name to shape"),
        ({"warmup_shapes": [[("input", (1, 1, 8, 8))]]}, "a mapping of input name to shape"),
        # numpy's ValueError and TypeErrors, which named neither the input nor the fix
        (
            {"warmup_shapes": [{"input": (-1, 1, 8, 8)}]},
            "warm-up shape of input 'input' (-1, 1, 8, 8): a sequence of ints >= 0",
        ),
        ({"warmup_shapes": [{"input": (1, 1, 8, 8.0)}]}, "warm-up shape of input 'input' (1, 1, 8, 8.0)"),
        ({"warmup_shapes": [{"input": "1x1x8x8"}]}, "warm-up shape of input 'input' '1x1x8x8'"),
        ({"warmup_shapes": [{"input": 8}]}, "warm-up shape of input 'input' 8"),
        ({"warmup_shapes": [{"input": (True, 1, 8, 8)}]}, "warm-up shape of input 'input' (True, 1, 8, 8)"),
    ],
)
def test_bad_warmup_shapes_are_refused_before_anything_loads(setting: dict, expected: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(expected)):
        EnginePool(Path("missing.onnx"), **setting)


def test_warmup_shapes_take_any_int_sequence() -> None:
    with EnginePool(DIGITS, warmup_shapes=[{"input": [1, 1, 8, 8]}, {"input": np.array([2, 1, 8, 8])}]) as pool:
        assert pool.warmup_shapes == [ONE, {"input": (2, 1, 8, 8)}]


def test_warmup_sets_may_come_from_any_iterable() -> None:
    """A generator of sets, or ``dict.values()``, worked before the sets were checked (regression of
    af16bfe: refused as "a list of warm-up sets"); only one set given alone is no list of sets."""
    by_batch = {1: ONE, 4: FOUR}
    sets = ({"input": (batch, 1, 8, 8)} for batch in (1, 2))
    with EnginePool(DIGITS, warmup_shapes=sets, warmup_also=by_batch.values(), warmup=False) as pool:
        assert pool.warmup_shapes == [ONE, {"input": (2, 1, 8, 8)}, FOUR]


def test_a_request_timeout_is_checked_up_front(pool: EnginePool) -> None:
    """Refused whether or not a context is free (it was only when the request had to wait)."""
    feed = digits_batch(0)
    for bad in (float("nan"), -1, "soon", True):
        with pytest.raises(InvalidInputError, match="seconds >= 0"):
            pool.infer(feed, timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="seconds >= 0"), pool.borrow(timeout=bad):  # type: ignore[arg-type]
            pass
    assert pool.metrics.snapshot().requests_invalid == 0  # refused before it became a request
    with pool.borrow(), pool.borrow():
        for bad in (float("nan"), -1, "soon"):
            with pytest.raises(InvalidInputError, match="seconds >= 0"):
                pool.infer(feed, timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(PoolExhausted):
            pool.infer(feed, timeout=0.01)
    assert pool.infer(feed, timeout=float("inf"))["logits"].shape == (1, 10)  # infinity: as long as it takes


def test_close_inside_a_borrow_does_not_wait_for_its_own_context() -> None:
    pool = EnginePool(DIGITS, 2)
    began = time.perf_counter()
    with pool.borrow() as runner:
        pool.close()  # waited its whole timeout (30 s) for the context this block holds
        assert time.perf_counter() - began < 5
        assert runner.infer(digits_batch(0))["logits"].shape == (1, 10)  # still the caller's until the block ends
    assert pool.state is PoolState.CLOSED and all(context.state is SlotState.CLOSED for context in pool.contexts())
    with pytest.raises(PoolClosed):
        pool.infer(digits_batch(0))


# ---------------------------------------------------------------- health


def test_check_heals_a_context_whose_session_was_freed(
    pool: EnginePool, reference: Callable[[dict[str, np.ndarray]], np.ndarray]
) -> None:
    assert pool.check().healthy == (0, 1)
    with pool.borrow() as runner:
        broken_name = runner.name
        runner.deactivate()  # a real failure: the onnxruntime session is gone
    report = pool.check()
    broken_index = next(c.index for c in pool.contexts() if c.name == broken_name)
    assert report.rebuilt == (broken_index,)
    assert report.healthy == (1 - broken_index,)
    assert report.ok and report.state is PoolState.READY
    assert pool.metrics.snapshot().rebuilds == 1
    assert pool.metrics.value("trtforge_pool_health_probes_total", result="failed") == 1
    assert pool.metrics.value("trtforge_pool_health_probes_total", result="ok") == 3
    assert [c.rebuilds for c in pool.contexts()][broken_index] == 1
    with pool.borrow() as first, pool.borrow() as second:  # both contexts serve again
        for runner in (first, second):
            feed = digits_batch(7, batch=4)
            np.testing.assert_allclose(runner.infer(feed)["logits"], reference(feed), rtol=1e-5, atol=1e-6)


def test_a_failed_request_heals_its_context() -> None:
    with EnginePool(DIGITS, size=1, warmup_shapes=[ONE]) as pool:
        with pool.borrow() as runner:
            runner.deactivate()
        with pytest.raises(RunnerError, match="not active"):
            pool.infer(digits_batch(0))
        assert pool.infer(digits_batch(0))["logits"].shape == (1, 10)
        snapshot = pool.metrics.snapshot()
        assert (snapshot.requests_error, snapshot.requests_ok, snapshot.rebuilds) == (1, 1, 1)
        assert pool.state is PoolState.READY


def test_a_context_that_cannot_be_rebuilt_degrades_the_pool(pool: EnginePool) -> None:
    source = pool._source  # the model bytes the pool builds sessions from
    assert source is not None
    good = source._bytes  # type: ignore[attr-defined]
    with pool.borrow() as runner:
        runner.deactivate()
    source._bytes = b"not an onnx model"  # type: ignore[attr-defined]  # onnxruntime really refuses it
    report = pool.check()
    assert len(report.broken) == 1 and "cannot load the model" in report.broken[0][1]
    assert pool.state is PoolState.DEGRADED and pool.degraded
    assert pool.ready  # one healthy context still serves
    assert pool.metrics.value("trtforge_pool_state", trtforge_pool_state="degraded") == 1
    assert pool.metrics.value("trtforge_pool_contexts", state="broken") == 1
    assert pool.infer(digits_batch(0))["logits"].shape == (1, 10)
    source._bytes = good  # type: ignore[attr-defined]
    assert len(pool.check().rebuilt) == 1  # a broken context gets another attempt each check
    assert pool.state is PoolState.READY
    assert pool.metrics.value("trtforge_pool_contexts", state="idle") == 2


def test_a_broken_context_counts_as_broken_while_it_is_rebuilt(pool: EnginePool) -> None:
    """The health check holds a broken context while it rebuilds it (BUSY to the lender), yet
    readiness, the contexts' states and the metrics still see it broken until it is repaired:
    a pool whose only healthy context is the one being rebuilt is not ready meanwhile."""
    source = pool._source
    assert source is not None
    good = source._bytes  # type: ignore[attr-defined]
    with pool.borrow() as first, pool.borrow() as second:  # both contexts, freed under the pool
        first.deactivate()
        second.deactivate()
    source._bytes = b"not an onnx model"  # type: ignore[attr-defined]
    pool.check()
    assert [c.state for c in pool.contexts()] == [SlotState.BROKEN, SlotState.BROKEN] and not pool.ready
    source._bytes = good  # type: ignore[attr-defined]
    rebuilding, release = threading.Event(), threading.Event()
    prepare = pool._health._prepare

    def slow_prepare(slot: Any) -> None:
        rebuilding.set()
        release.wait(10)
        prepare(slot)

    pool._health._prepare = slow_prepare  # type: ignore[method-assign]
    checker = threading.Thread(target=pool.check)
    checker.start()
    try:
        assert rebuilding.wait(10)
        assert not pool.ready  # the context being rebuilt cannot serve yet
        assert pool.metrics.value("trtforge_pool_contexts", state="broken") == 2
        assert [c.state for c in pool.contexts()] == [SlotState.BROKEN, SlotState.BROKEN]
    finally:
        release.set()
        checker.join(20)
    assert pool.ready and pool.state is PoolState.READY


def test_background_health_checks_heal_without_being_called() -> None:
    with EnginePool(DIGITS, size=2, warmup_shapes=[ONE], health_interval=0.05) as pool:
        with pool.borrow() as runner:
            runner.deactivate()
        deadline = time.monotonic() + 10
        while pool.metrics.snapshot().rebuilds < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool.metrics.snapshot().rebuilds == 1
        assert pool.state is PoolState.READY


# ---------------------------------------------------------------- metrics


def test_metric_values_after_a_known_workload() -> None:
    with EnginePool(DIGITS, size=2, warmup_shapes=[ONE], name="known") as pool, ThreadPoolExecutor(1) as executor:
        for seed in range(10):
            pool.infer(digits_batch(seed))
        with pytest.raises(InvalidInputError):
            pool.infer({"wrong": np.zeros((1, 1, 8, 8), np.float32)})
        with pool.borrow(), pool.borrow():  # 2 hits, then one request that waits for a context
            waiter = executor.submit(pool.infer, digits_batch(99), timeout=30)
            while pool.metrics.snapshot().waiting < 1:
                time.sleep(0.001)
            assert pool.metrics.snapshot().in_flight == 2
            time.sleep(0.05)
        assert waiter.result(timeout=30)["logits"].shape == (1, 10)
        with pool.borrow(), pool.borrow(), pytest.raises(PoolExhausted):
            pool.infer(digits_batch(0), timeout=0.01)

        value = pool.metrics.value
        assert value("trtforge_pool_requests_total", outcome="ok") == 11
        assert value("trtforge_pool_requests_total", outcome="invalid") == 1
        assert value("trtforge_pool_requests_total", outcome="error") == 0
        assert value("trtforge_pool_requests_total", outcome="exhausted") == 1
        assert value("trtforge_pool_acquire_total", kind="hit") == 10 + 1 + 2 + 2
        assert value("trtforge_pool_acquire_total", kind="wait") == 1
        assert value("trtforge_pool_wait_seconds_count") == 16
        assert value("trtforge_pool_wait_seconds_sum") >= 0.04
        assert value("trtforge_pool_inference_seconds_count") == 12
        assert value("trtforge_pool_in_flight") == 0 and value("trtforge_pool_waiting") == 0
        assert value("trtforge_pool_rebuilds_total") == 0
        assert value("trtforge_pool_contexts", state="idle") == 2
        assert value("trtforge_pool_state", trtforge_pool_state="ready") == 1
        assert pool.memory.method == "none" and pool.metrics.snapshot().device_memory_bytes is None
        # the exposition is valid Prometheus text, every series labelled with the pool
        families = {f.name: f for f in text_string_to_metric_families(generate_latest(pool.metrics.registry).decode())}
        assert {"trtforge_pool_requests", "trtforge_pool_wait_seconds", "trtforge_pool_device_memory_bytes"} <= set(
            families
        )
        assert all(s.labels["pool"] == "known" for f in families.values() for s in f.samples)
    assert pool.metrics.value("trtforge_pool_state", trtforge_pool_state="closed") == 1


# ---------------------------------------------------------------- close


def test_close_frees_every_context_and_wakes_waiters() -> None:
    pool = EnginePool(DIGITS, size=1, warmup_shapes=[ONE])
    outcome: list[BaseException] = []

    def wait_for_context() -> None:
        try:
            pool.infer(digits_batch(0), timeout=30)
        except BaseException as exc:
            outcome.append(exc)

    with pool.borrow() as held:
        waiter = threading.Thread(target=wait_for_context)
        waiter.start()
        while pool.metrics.snapshot().waiting < 1:
            time.sleep(0.001)
        pool.close(timeout=0.05)  # the lent context is freed when it comes back
        waiter.join(timeout=5)
        assert len(outcome) == 1 and isinstance(outcome[0], PoolClosed)
        assert held.is_active  # type: ignore[attr-defined]
    assert not held.is_active  # type: ignore[attr-defined]
    assert pool.state is PoolState.CLOSED and not pool.ready
    assert {c.state for c in pool.contexts()} == {"closed"}
    assert pool._source is None  # the model is released once the last context is
    with pytest.raises(PoolClosed):
        pool.infer(digits_batch(0))
    with pytest.raises(PoolClosed):
        pool.start()
    pool.close()  # idempotent


def test_close_during_start_wins_and_frees_everything() -> None:
    outcomes: list[str] = []
    for delay in (0.0, 0.002, 0.01, 0.05):
        pool = EnginePool(DIGITS, size=4, warmup_shapes=[ONE, FOUR], start=False)
        with ThreadPoolExecutor(1) as executor:
            starter = executor.submit(pool.start)
            time.sleep(delay)
            pool.close()  # returns once start has freed what it made
            assert {c.state for c in pool.contexts()} == {"closed"} and pool._source is None
            try:  # any other exception of start() fails the test here
                starter.result(timeout=30)
                outcomes.append("closed after start")
            except PoolClosed:
                outcomes.append("start raised")
        assert pool.state is PoolState.CLOSED and not pool.ready
        assert {c.state for c in pool.contexts()} == {"closed"} and pool._source is None
        assert pool.metrics.value("trtforge_pool_contexts", state="idle") == 0
    assert len(outcomes) == 4  # every start ended one of the two ways; both leave nothing held


def test_manager_close_stops_a_pool_that_is_still_warming(model_dir: Path) -> None:
    """``trtforge serve`` stopping during warm-up: close() stops the warm-up at the next context
    and returns once the start has ended, so nothing keeps warming after it."""
    manager = PoolManager()
    shapes = [{"input": (16, 32, 32, 32)}]  # about a second per context on two cores
    with ThreadPoolExecutor(1) as executor:
        starter = executor.submit(manager.add, "deep", model_dir / "deep.onnx", 4, warmup_shapes=shapes)
        time.sleep(0.3)  # the first context is warming
        assert not starter.done()
        manager.close()
        time.sleep(0.2)
        assert starter.done(), "the warm-up went on after close() returned"
        with pytest.raises(PoolClosed):
            starter.result()
    assert manager.names() == [] and not manager.ready
    with pytest.raises(PoolClosed, match="closed"):
        manager.add("digits", DIGITS)


def test_close_stops_a_context_between_its_warm_up_runs(model_dir: Path) -> None:
    """One context with many short warm-up runs (60 sets x 3 runs of a ~15 ms inference): close()
    during them returns within about one inference, not once all of them ran (``--grace`` bounds a
    stop during warm-up: it waited for the whole warm-up of the context, 2-3 s here)."""
    pool = EnginePool(model_dir / "deep.onnx", size=1, warmup_shapes=[{"input": (1, 32, 32, 32)}] * 60, start=False)
    with ThreadPoolExecutor(1) as executor:
        starter = executor.submit(pool.start)
        deadline = time.monotonic() + 30
        while pool.contexts()[0].warm_runs < 1 and time.monotonic() < deadline:  # its first set ran
            time.sleep(0.005)
        began = time.monotonic()
        pool.close()
        closed = time.monotonic() - began
        with pytest.raises(PoolClosed, match="closed while"):
            starter.result(timeout=30)
    warmed = pool.contexts()[0].warm_runs
    assert 1 <= warmed < 60 and closed < 1.0, f"close took {closed:.2f} s after {warmed} of 60 sets"
    assert {c.state for c in pool.contexts()} == {"closed"} and pool._source is None


# ---------------------------------------------------------------- bad input: one clear error, nothing left


def test_bad_arguments_are_refused_with_a_clear_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="at least one context"):
        EnginePool(DIGITS, size=0)
    with pytest.raises(InvalidInputError, match=r"not an engine artifact \(.engine\) or an ONNX model"):
        EnginePool(tmp_path / "model.pt")
    with pytest.raises(InvalidInputError, match="model file not found"):
        EnginePool(tmp_path / "missing.onnx")
    with pytest.raises(InvalidInputError, match="did you mean 'input'"):
        EnginePool(DIGITS, warmup_shapes=[{"inptu": (1, 1, 8, 8)}])
    with pytest.raises(InvalidInputError, match="CUDAExecutionProvider is not available"):
        EnginePool(DIGITS, providers=["CUDAExecutionProvider"])


def test_warmup_shape_the_model_refuses_fails_start_and_frees_everything() -> None:
    pool = EnginePool(DIGITS, size=2, warmup_shapes=[{"input": (1, 3, 8, 8)}], start=False)
    with pytest.raises(InvalidInputError, match="digits_cnn/0"):
        pool.start()
    assert pool.state is PoolState.CLOSED
    assert all(context.state == "closed" for context in pool.contexts()) and pool._source is None


def _spatial_conv(path: Path) -> Path:
    """x [N, 1, H, W] -> an unpadded 3x3 Conv: no H or W below 3, so not the default warm-up's 1."""
    from onnx import TensorProto, helper, numpy_helper, save

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
        "spatial",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, None, None])],
        [numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_a_warm_up_request_the_model_refuses_is_named_with_the_fix(tmp_path: Path) -> None:
    """The runtime's own error ('conv/0: INVALID_ARGUMENT: ... Invalid input shape: {1,1}') named no
    warm-up: the caller never sent a 1x1 image, and was not told to pass ``warmup_shapes``."""
    model = _spatial_conv(tmp_path / "spatial.onnx")
    with pytest.raises(InvalidInputError) as caught:
        EnginePool(model, size=2)
    message = str(caught.value)
    assert message.startswith("pool 'spatial': the default warm-up request x=1x1x1x1 was refused (spatial/0: ")
    assert "EnginePool(warmup_shapes=[{NAME: DIMS}])" in message and "\n" not in message
    with pytest.raises(InvalidInputError, match=r"the warm-up request x=2x1x2x2 was refused"):
        EnginePool(model, warmup_shapes=[{"x": (2, 1, 2, 2)}])
    with EnginePool(model, size=2, warmup_shapes=[{"x": (1, 1, 16, 16)}]) as pool:
        assert pool.infer({"x": np.ones((1, 1, 5, 5), np.float32)})["y"].shape == (1, 2, 3, 3)


def test_sets_given_beside_a_refused_default_warm_up_are_the_warm_up(tmp_path: Path) -> None:
    """``serve --warmup-shape`` and bench's request come as ``warmup_also``, beside the default:
    where the model refused the default (dynamic dims at 1), no shape given could start the pool."""
    model = _spatial_conv(tmp_path / "spatial.onnx")
    with EnginePool(model, size=2, warmup_also=[{"x": (2, 1, 16, 16)}]) as pool:
        assert pool.warmup_shapes == [{"x": (2, 1, 16, 16)}]
        assert pool.probe_feed is not None and pool.probe_feed["x"].shape == (2, 1, 16, 16)
        assert [context.warm_runs for context in pool.contexts()] == [1, 1]
        assert pool.check().healthy == (0, 1)
    with pytest.raises(InvalidInputError, match=r"the warm-up request x=2x1x2x2 was refused"):
        EnginePool(model, warmup_also=[{"x": (2, 1, 16, 16)}, {"x": (2, 1, 2, 2)}])


def test_start_fails_when_no_context_can_be_created(tmp_path: Path) -> None:
    # a model onnx accepts but onnxruntime cannot run: an op of an unknown domain
    import models

    bad = models.unsupported_op(tmp_path / "unsupported.onnx")
    pool = EnginePool(bad, size=2, start=False)
    with pytest.raises(InvalidInputError, match="onnxruntime cannot load the model"):
        pool.start()
    assert pool.state is PoolState.CLOSED and pool._source is None


def test_start_error_names_each_context_once(tmp_path: Path) -> None:
    """A model onnxruntime loads but cannot run (a Reshape of 4 values to 3): PoolStartError (exit 5),
    exported with the pool, names the failing context once (it said 'bad/0: bad/0: onnxruntime failed')."""
    from onnx import TensorProto, helper, numpy_helper, save

    reshape = helper.make_node("Reshape", ["input", "shape"], ["output"])
    graph = helper.make_graph(
        [reshape],
        "bad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.array([3], np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    save(model, tmp_path / "bad.onnx")
    with pytest.raises(PoolStartError) as caught:
        EnginePool(tmp_path / "bad.onnx")
    assert caught.value.exit_code == 5
    assert "no context could be created and warmed (bad/0: onnxruntime failed: " in str(caught.value)
    assert str(caught.value).count("bad/0") == 1


def test_pool_errors_are_the_kinds_their_meaning_says() -> None:
    """A pool that cannot run the model is refused as an engine is (an IncompatibleEngineError, so an
    ``except`` of refusals catches both); a pool used out of order is the caller's bug, no exit code."""
    assert issubclass(PoolStartError, IncompatibleEngineError)
    assert PoolStartError("pool 'p': no context").reasons == ()
    for misuse in (PoolClosed, PoolNotStarted):
        assert issubclass(misuse, RuntimeError) and not issubclass(misuse, TrtforgeError)


# ---------------------------------------------------------------- several models


def test_manager_serves_several_models_with_one_metrics_page(model_dir: Path) -> None:
    with PoolManager() as manager:
        manager.add("digits", DIGITS, size=2, warmup_shapes=[ONE])
        manager.add("conv", model_dir / "conv.onnx", size=1, warmup_shapes=[{"input": (2, 3, 16, 16)}])
        assert manager.names() == ["digits", "conv"] and manager.ready and "conv" in manager
        assert manager.infer("digits", digits_batch(0))["logits"].shape == (1, 10)
        conv_feed = {"input": np.ones((2, 3, 16, 16), np.float32)}
        assert manager["conv"].infer(conv_feed)["logits"].shape == (2, 10)
        with pytest.raises(InvalidInputError, match="exists already"):
            manager.add("conv", DIGITS)
        with pytest.raises(InvalidInputError, match="did you mean 'digits'"):
            manager.get("digit")
        assert {name: report.ok for name, report in manager.check().items()} == {"digits": True, "conv": True}
        assert manager.states() == {"digits": PoolState.READY, "conv": PoolState.READY}
        assert manager.device_memory_bytes() is None  # onnxruntime on the CPU holds no device memory
        text = generate_latest(manager.registry).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        ok = {
            s.labels["pool"]: s.value
            for s in families["trtforge_pool_requests"].samples
            if s.name == "trtforge_pool_requests_total" and s.labels["outcome"] == "ok"
        }
        assert ok == {"digits": 1.0, "conv": 1.0}
        assert text.count("# TYPE trtforge_pool_requests_total counter") == 1
        conv = manager["conv"]
        manager.remove("conv")
        assert conv.state is PoolState.CLOSED and manager.names() == ["digits"]
        digits = manager["digits"]
    assert digits.state is PoolState.CLOSED and manager.names() == []


# ---------------------------------------------------------------- rules


def test_suggest_pool_size_keeps_spares() -> None:
    gb = 10**9
    assert suggest_pool_size(int(1.8 * gb), 16 * gb) == 6  # 8 fit, 2 spare
    assert suggest_pool_size(2 * gb, 10 * gb) == 4  # 5 fit, 1 spare
    assert suggest_pool_size(2 * gb, 3 * gb) == 1  # 1 fits, no spare
    assert suggest_pool_size(2 * gb, 1 * gb) == 0  # none fits
    assert suggest_pool_size(1 * gb, 16 * gb, shared_bytes=6 * gb) == 8  # 10 fit after the weights
    assert suggest_pool_size(int(1.8 * gb), 16 * gb, max_size=4) == 4


def test_suggest_pool_size_refuses_bad_sizes_as_trtforge_errors() -> None:
    """Everything trtforge raises on purpose is a TrtforgeError (README): it was a ValueError, and a
    negative ``max_size`` suggested -1 contexts."""
    with pytest.raises(InvalidInputError, match="per_context_bytes 0: the memory one context needs"):
        suggest_pool_size(0, 10**9)
    with pytest.raises(InvalidInputError, match=r"max_size -1: the most contexts to suggest, >= 0"):
        suggest_pool_size(10**9, 16 * 10**9, max_size=-1)


def test_probe_comparison_finds_real_differences() -> None:
    ref = {"y": np.array([[1.0, 2.0]], np.float32)}
    assert outputs_match(ref, {"y": np.array([[1.0, 2.0000001]], np.float32)}) is None
    assert "differs" in (outputs_match(ref, {"y": np.array([[1.0, 2.5]], np.float32)}) or "")
    assert "NaN" in (outputs_match(ref, {"y": np.array([[np.nan, 2.0]], np.float32)}) or "")
    assert "shape" in (outputs_match(ref, {"y": np.zeros((2, 2), np.float32)}) or "")
    assert "missing" in (outputs_match(ref, {}) or "")


# ---------------------------------------------------------------- TensorRT


CONV_SPEC = (
    "name: conv\nmodel: {model}\nprecision: fp32\nbackend: {backend}\n{targets}"
    "profiles:\n  - input: {{min: [1, 3, 16, 16], opt: [4, 3, 16, 16], max: [8, 3, 16, 16]}}\n"
)


def _build_engine(tmp_path: Path, model: Path, backend: str, targets: str = "") -> Path:
    from rich.console import Console

    from trtforge.build import build_spec
    from trtforge.console import Reporter
    from trtforge.spec import load_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text(CONV_SPEC.format(model=model, backend=backend, targets=targets), encoding="utf-8")
    reporter = Reporter(Console(stderr=True, quiet=True), interactive=False)
    return build_spec(load_spec(spec), tmp_path / "out", reporter).engine


@pytest.mark.parametrize("flavor", ["tensorrt-rtx", "tensorrt"])
def test_tensorrt_pool_on_a_supported_gpu(tmp_path: Path, model_dir: Path, flavor: str) -> None:
    need_engine_runtime(flavor)
    from trtforge.environment import detect_gpus

    targets = f"targets: ['{detect_gpus()[0].compute_capability}']\n" if flavor == "tensorrt-rtx" else ""
    engine = _build_engine(tmp_path, model_dir / "conv.onnx", flavor, targets)
    session = ort.InferenceSession(str(model_dir / "conv.onnx"), providers=["CPUExecutionProvider"])
    with EnginePool(engine, size=3) as pool:
        assert pool.backend == flavor and pool.ready
        assert [c.warm_runs for c in pool.contexts()] == [3, 3, 3]  # min, opt, max of the profile
        assert pool.memory.method == "engine" and (pool.memory.per_context or 0) > 0
        assert pool.metrics.snapshot().device_memory_bytes == pool.memory.total
        holders: set[int] = set()
        lock = threading.Lock()
        violations: list[int] = []

        def client(worker: int) -> None:
            for step in range(10):
                feed = {
                    "input": np.random.default_rng(worker * 50 + step).random((1 + step % 8, 3, 16, 16), np.float32)
                }
                with pool.borrow(timeout=30) as runner:
                    with lock:
                        if id(runner) in holders:
                            violations.append(worker)
                        holders.add(id(runner))
                    got = runner.infer(feed)["logits"]
                    with lock:
                        holders.discard(id(runner))
                np.testing.assert_allclose(got, session.run(None, feed)[0], rtol=1e-3, atol=1e-3)

        run_in_threads(client, 6)
        assert not violations
        with pool.borrow() as runner:
            runner.deactivate()  # frees the execution context, stream and device buffers
        assert len(pool.check().rebuilt) == 1 and pool.state is PoolState.READY


def test_tensorrt_pool_refuses_an_engine_this_host_cannot_run(tmp_path: Path, model_dir: Path) -> None:
    """Without a GPU the loader refuses the engine: the pool fails with exit code 5 and holds nothing."""
    need_rtx()
    from trtforge.environment import detect_gpus

    if detect_gpus():
        pytest.skip("a GPU is present: test_tensorrt_pool_on_a_supported_gpu covers this host")
    engine = _build_engine(tmp_path, model_dir / "conv.onnx", "tensorrt-rtx", "targets: ['8.6']\n")
    with pytest.raises(IncompatibleEngineError) as caught:
        EnginePool(engine, size=2)
    assert caught.value.exit_code == 5
    assert any("GPU" in reason for reason in caught.value.reasons)


def test_an_infinite_pool_timeout_waits_as_long_as_it_takes() -> None:
    """README: ``EnginePool(..., timeout=None)`` or ``timeout=float("inf")`` waits forever."""
    with EnginePool(DIGITS, size=1, timeout=float("inf")) as pool:
        assert pool.default_timeout is None
        with ThreadPoolExecutor(1) as executor:
            with pool.borrow():
                waiter = executor.submit(pool.infer, digits_batch(0))  # the pool's own timeout: infinity
                time.sleep(0.3)
                assert not waiter.done()
            assert waiter.result(timeout=30)["logits"].shape == (1, 10)
    with pytest.raises(InvalidInputError, match="timeout -inf"):
        EnginePool(DIGITS, size=1, timeout=float("-inf"))


def test_default_threads_divide_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CI container's CPU set (the affinity), not every core of the host, is what sessions share."""
    import trtforge.runtime.pool as pool_module

    monkeypatch.setattr(pool_module, "usable_cores", lambda: 6)
    assert EnginePool(DIGITS, size=2, start=False)._threads == 3
    assert EnginePool(DIGITS, size=8, start=False)._threads == 1


# ---------------------------------------------------------------- shape tensors, and inputs refused as they run


def reshape_net(path: Path, declared: list[int | str] | None = None, then: str = "") -> Path:
    """x float [N, 12] reshaped to the graph input ``shape`` int64 [3], a shape tensor (its values
    set the output's shape). ``declared``: the reshaped tensor's dims as the graph declares them
    (default: three free dims); ``then``: ``Relu`` or ``MatMul`` (by a [4, 2] weight) after the
    Reshape (default: none, the Reshape's output is the graph's)."""
    from onnx import TensorProto, helper, numpy_helper, save

    dims = declared or ["a", "b", "c"]
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r" if then else "y"], name="reshape")]
    weights = []
    value_info = []
    if then:
        value_info.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, dims))
        operands = ["r", "w"] if then == "MatMul" else ["r"]
        nodes.append(helper.make_node(then, operands, ["y"], name=then.lower()))
        if then == "MatMul":
            weights.append(numpy_helper.from_array(np.ones((4, 2), np.float32), "w"))
            dims = [*dims[:-1], 2]
    graph = helper.make_graph(
        nodes,
        path.stem,
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
        weights,
        value_info=value_info,
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


@pytest.mark.parametrize(
    ("declared", "then", "values"),
    [
        (None, "", [-1, 1, 1]),  # the Reshape makes the graph's output: any values it takes run
        (["N", 3, 4], "Relu", [1, 3, 4]),  # the graph declares what it makes: N is x's batch, 1
    ],
    ids=["graph-output", "declared"],
)
def test_a_shape_tensor_is_warmed_with_values_the_onnx_graph_tells(
    tmp_path: Path, declared: list[int | str] | None, then: str, values: list[int]
) -> None:
    """Before: random integers as the Reshape's shape, so no context warmed (PoolStartError, exit 5)."""
    with EnginePool(reshape_net(tmp_path / "st3.onnx", declared, then), size=2) as pool:
        assert pool.ready and pool.probe_feed is not None
        assert pool.probe_feed["shape"].tolist() == values and pool.probe_feed["shape"].dtype == np.int64
        assert pool.warmup_shapes == [{"x": (1, 12), "shape": (3,)}]
        assert pool.check().healthy == (0, 1)
        x = np.arange(24, dtype=np.float32).reshape(2, 12)
        y = pool.infer({"x": x, "shape": np.array([2, 3, 4], np.int64)})["y"]
        np.testing.assert_array_equal(np.maximum(y, 0) if then else y, x.reshape(2, 3, 4))


def test_a_shape_tensor_the_onnx_graph_does_not_tell_needs_its_values(tmp_path: Path) -> None:
    """A Reshape feeding a MatMul: values that merely reshape x could fail the MatMul, so none are
    guessed: exit 2 saying what to give (before: random integers, PoolStartError exit 5)."""
    from trtforge.runtime.sources import ShapeValuesNeeded, WarmupSet

    model = reshape_net(tmp_path / "st4.onnx", then="MatMul")
    with pytest.raises(ShapeValuesNeeded) as caught:
        EnginePool(model)
    message = str(caught.value)
    assert caught.value.exit_code == 2 and "\n" not in message
    assert "input 'shape' is a shape tensor (the shape of Reshape 'reshape')" in message
    assert "they reshape 'x' of 12 values" in message
    assert "give a WarmupSet(shapes, values={'shape': [v1,v2,v3]}) in warmup_shapes or warmup_also" in message
    given = WarmupSet({"x": (2, 12)}, {"shape": (2, 3, 4)})
    for options in ({"warmup_shapes": [given]}, {"warmup_also": [given]}):  # the caller's values: warmed with them
        with EnginePool(model, **options) as pool:  # type: ignore[arg-type]
            assert pool.probe_feed is not None and pool.probe_feed["shape"].tolist() == [2, 3, 4]
            assert pool.warmup_shapes == [{"x": (2, 12), "shape": (3,)}]
    with pytest.raises(InvalidInputError, match=r"values \[5, 3, 4\] of 'shape' cannot reshape 'x' of shape 2x12"):
        EnginePool(model, warmup_shapes=[WarmupSet({"x": (2, 12)}, {"shape": (5, 3, 4)})])
    with pytest.raises(InvalidInputError, match=r"input 'shape' takes 3 values, got 2"):
        EnginePool(model, warmup_shapes=[WarmupSet({"x": (2, 12)}, {"shape": (6, 4)})])


def test_inputs_the_model_refuses_as_it_runs_are_invalid_and_keep_the_context(tmp_path: Path) -> None:
    """x [N, M] reshaped to [-1, 3, 4]: x [1, 5] passes every check until the Reshape runs, where
    onnxruntime fails (not INVALID_ARGUMENT). The context then passes its probe, so the request was
    the caller's: InvalidInputError, counted invalid, no rebuild (before: RunnerError, counted as an
    error, so any client could make the pool probe and count failed contexts). A context that really
    breaks is still rebuilt (``test_a_failed_request_heals_its_context``)."""
    from onnx import TensorProto, helper, numpy_helper, save

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "to"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "M"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 3, 4])],
        [numpy_helper.from_array(np.array([-1, 3, 4], np.int64), "to")],
    )
    model = tmp_path / "fixed.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), model)
    with EnginePool(model, size=1, warmup_shapes=[{"x": (1, 12)}]) as pool:
        with pytest.raises(InvalidInputError, match="the model refused these inputs as it ran") as caught:
            pool.infer({"x": np.ones((1, 5), np.float32)})
        assert isinstance(caught.value.__cause__, RunnerError) and "\n" not in str(caught.value)
        assert pool.infer({"x": np.ones((2, 12), np.float32)})["y"].shape == (2, 3, 4)
        snapshot = pool.metrics.snapshot()
        assert (snapshot.requests_invalid, snapshot.requests_error, snapshot.requests_ok) == (1, 0, 1)
        assert snapshot.rebuilds == 0 and [c.rebuilds for c in pool.contexts()] == [0]
        assert pool.metrics.value("trtforge_pool_health_probes_total", result="ok") == 1
        assert pool.state is PoolState.READY


def test_values_the_graph_told_that_fail_the_warm_up_are_exit_2_naming_them(tmp_path: Path) -> None:
    """The graph declares the Reshape's output [N, 3, 4], so the warm-up takes [1, 3, 4]; the MatMul
    after it then fails on the other input's default dims. That is no refusal of the runtime (exit
    5) but values and shapes the caller must give: exit 2 naming the values taken, and where to give
    them (before: PoolStartError, exit 5, over random values)."""
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
            helper.make_node("MatMul", ["r", "w"], ["y"], name="mm"),
        ],
        "told",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [3]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, ["K", 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 2])],
        value_info=[helper.make_tensor_value_info("r", TensorProto.FLOAT, ["N", 3, 4])],
    )
    model = tmp_path / "told.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), model)
    with pytest.raises(InvalidInputError) as caught:
        EnginePool(model)
    assert caught.value.exit_code == 2 and not isinstance(caught.value, PoolStartError)
    assert "the warm-up took the shape-tensor values shape=[1, 3, 4] from the graph" in str(caught.value)
    with EnginePool(model, warmup_shapes=[{"x": (1, 12), "shape": (3,), "w": (4, 2)}]) as pool:  # w fits now
        assert pool.probe_feed is not None and pool.probe_feed["shape"].tolist() == [1, 3, 4]


def test_probe_comparison_takes_string_outputs() -> None:
    """serve takes an ONNX model's string outputs (KServe BYTES): a class label ('cat') made every
    probe fail ('could not convert string to float'), the pool's second context never started, and
    the first health check left the model with no healthy context (503 on /ready and every infer)."""
    ref = {"label": np.array(["cat", "dög"], dtype=object), "p": np.array([0.5, 0.5], np.float32)}
    assert outputs_match(ref, {"label": np.array(["cat", "dög"], dtype=object), "p": ref["p"]}) is None
    other = {"label": np.array(["cat", "dog"], dtype=object), "p": ref["p"]}
    assert "'label' differs" in (outputs_match(ref, other) or "")
