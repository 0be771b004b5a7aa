"""``trtforge bench``: first-request and steady-state latency of a pool, warm against cold.

Scenarios, run in one process so the baseline is measured in the same run:
- ``cold`` (with ``--cold``, run first so no warm state of the process helps it): the pool is
  created without warm-up the moment the first request arrives; its first response pays
  loading, context creation and the first inference.
- ``warm``: the pool loads and warms every context before it is ready; the first request after
  ``ready`` is timed alone, then the burst.
Each scenario then serves ``requests`` requests from ``concurrency`` threads at once (the burst:
p50, p99, throughput under contention, waiting for a context included), then a serial run of
single requests on the now warm contexts: its p50 is the steady state. Ratios are to the warm
scenario's steady-state p50, so a single first request is compared with a single request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trtforge.console import Table
from trtforge.errors import InvalidInputError, TrtforgeError, did_you_mean, first_line
from trtforge.model import INPUT_BUDGET_BYTES, TensorDesc, input_bytes, inspect_model, mib
from trtforge.runtime.lending import PoolExhausted
from trtforge.runtime.pool import EnginePool, suggest_pool_size
from trtforge.runtime.sources import (
    ONNXRUNTIME,
    MemoryUse,
    ShapeTensors,
    WarmupSet,
    backend_of,
    check_threads,
    manifest_inputs,
    onnx_shape_tensors,
    provider_name,
)
from trtforge.shapes import Profile, Shape, concrete_shape, no_one_profile, random_feed

#: Single requests after the burst; their p50 is the steady state the ratios divide by.
SERIAL_REQUESTS = 200
#: most ``--requests`` in one run: the burst keeps every latency (about 40 bytes each, until the
#: percentiles are taken), so memory and time grow with it, and a million samples already give a p99
#: resting on 10,000 of them; beyond, a typo (``--requests 99999999999999999999``) ran until killed
MAX_REQUESTS = 1_000_000
#: client threads of one burst: each is a Python thread of this process, taking turns on the GIL, so
#: past this they add memory, not load (a typo, ``--concurrency 100000``, started threads until killed)
MAX_CONCURRENCY = 1024
#: contexts of one pool: each is an onnxruntime session or a TensorRT execution context, loaded and
#: warmed before the first request, and no burst has more requests in flight than its client threads
#: (a typo, ``--pool 100000``, created sessions until the process was killed)
MAX_POOL = MAX_CONCURRENCY
#: distinct failure messages a burst keeps (a message that varies per request must not grow without end)
MAX_FAILURE_KINDS = 10
#: where the failures past ``MAX_FAILURE_KINDS`` distinct messages are counted
OTHER_FAILURES = "other failures"


@dataclass(frozen=True)
class BenchConfig:
    artifact: Path
    pool: int = 2
    concurrency: int = 4
    requests: int = 1000
    cold: bool = False
    batch: int | None = None
    shapes: Mapping[str, Shape] = field(default_factory=dict)
    values: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # shape tensors' (``--shape NAME=[V,...]``)
    provider: str = "cpu"
    threads: int | None = None
    timeout: float = 30.0
    seed: int = 0


@dataclass(frozen=True)
class Latency:
    """Milliseconds over one burst."""

    count: int
    p50: float
    p90: float
    p99: float
    mean: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        import numpy as np

        if not seconds:
            raise ValueError("no latencies to summarize")
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
        return cls(len(ms), p50, p90, p99, float(ms.mean()), float(ms.max()))


@dataclass(frozen=True)
class Scenario:
    name: str  # warm | cold
    startup_ms: float  # load + contexts (+ warm-up for warm)
    first_request_ms: float  # the first request once the constructor returned
    first_response_ms: float  # what the first client waited: cold includes the startup
    burst: Latency  # concurrency threads at once, waiting for a context included
    serial: Latency  # one request at a time after the burst: the steady state
    throughput_rps: float
    errors: int
    exhausted: int
    warm_runs: int  # warm-up shapes run before ready (each WARMUP_RUNS times), all contexts together
    failures: dict[str, int] = field(default_factory=dict)  # the ``errors``, by what each raised (one line)


@dataclass(frozen=True)
class BenchReport:
    artifact: str
    backend: str
    providers: tuple[str, ...]
    pool: int
    concurrency: int
    requests: int
    shapes: dict[str, list[int]]
    scenarios: tuple[Scenario, ...]
    device_memory: dict[str, Any]
    suggested_pool_size: int | None
    metrics: dict[str, Any]

    @property
    def baseline_p50_ms(self) -> float:
        """The steady state: the warm scenario's serial p50."""
        return next(s.serial.p50 for s in self.scenarios if s.name == "warm")

    def ratios(self, scenario: Scenario) -> dict[str, float]:
        base = self.baseline_p50_ms
        return {
            "first_request_to_p50": scenario.first_request_ms / base,
            "first_response_to_p50": scenario.first_response_ms / base,
            "burst_p50_to_p50": scenario.burst.p50 / base,
            "burst_p99_to_p50": scenario.burst.p99 / base,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "backend": self.backend,
            "providers": list(self.providers),
            "pool": self.pool,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "shapes": self.shapes,
            "baseline_p50_ms": self.baseline_p50_ms,
            "scenarios": [{**asdict(s), "ratios": self.ratios(s)} for s in self.scenarios],
            "device_memory": self.device_memory,
            "suggested_pool_size": self.suggested_pool_size,
            "metrics": self.metrics,
        }


# ---------------------------------------------------------------- inputs (pure)


def request_shapes(
    inputs: Sequence[TensorDesc],
    profiles: Sequence[Profile],
    batch: int | None = None,
    overrides: Mapping[str, Shape] | None = None,
) -> dict[str, Shape]:
    """The shape of every input in a benchmark request.

    An override wins; else an engine's first profile's opt shape, else the model's shape with
    dynamic dims 1; ``batch`` replaces the first dim of a dynamic input. A request no one profile
    takes, or over ``INPUT_BUDGET_BYTES``, is refused before anything is loaded or allocated.
    """
    overrides = dict(overrides or {})
    names = [tensor.name for tensor in inputs]
    for name in overrides:
        if name not in names:
            raise InvalidInputError(
                f"--shape {name}=...: the model has no input '{name}'{did_you_mean(name, names)} "
                f"(inputs: {', '.join(names)})"
            )
    batched = [tensor.name for tensor in inputs if tensor.is_dynamic and tensor.name not in overrides]
    if batch is not None and not batched:
        why = (
            "its dynamic inputs all have a --shape"
            if any(tensor.is_dynamic for tensor in inputs)
            else "the model has no dynamic input (its shapes are fixed)"
        )
        raise InvalidInputError(f"--batch {batch}: nothing to apply it to, {why}; drop --batch")
    shapes: dict[str, Shape] = {}
    for tensor in inputs:
        if tensor.name in overrides:
            shapes[tensor.name] = _fitting(tensor, tuple(overrides[tensor.name]))
            continue
        in_profile = profiles[0].get(tensor.name) if profiles else None
        shape = tuple(int(d) for d in in_profile["opt"]) if in_profile else concrete_shape(tensor)
        if batch is not None and tensor.is_dynamic and shape:
            shape = (batch, *shape[1:])
        shapes[tensor.name] = shape
    outside = no_one_profile(shapes, profiles)
    if outside is not None:  # the engine would refuse it in every context's warm-up, once loaded
        raise InvalidInputError(f"request: {outside}; pass a --shape or --batch within one profile")
    size = input_bytes(inputs, shapes)
    if size > INPUT_BUDGET_BYTES:
        listed = ", ".join(f"{name}={'x'.join(map(str, shape))}" for name, shape in shapes.items())
        raise InvalidInputError(
            f"request shapes {listed} take {mib(size)} of input, over bench's budget of "
            f"{mib(INPUT_BUDGET_BYTES)} per request; pass a smaller --shape or --batch"
        )
    return shapes


def _fitting(tensor: TensorDesc, shape: Shape) -> Shape:
    """``shape`` when it fits the input's rank and static dims; else say which dim is wrong."""
    dims = "x".join("?" if not isinstance(d, int) or d < 0 else str(d) for d in tensor.shape)
    given = "x".join(str(d) for d in shape)
    if len(shape) != len(tensor.shape):
        raise InvalidInputError(
            f"--shape {tensor.name}={given}: the input has rank {len(tensor.shape)} ({dims}), not {len(shape)}"
        )
    for axis, (got, want) in enumerate(zip(shape, tensor.shape, strict=True)):
        if isinstance(want, int) and want >= 0:
            if got != want:
                raise InvalidInputError(
                    f"--shape {tensor.name}={given}: dim {axis} is {got}, the model needs {want} ({dims})"
                )
        elif got < 1:
            raise InvalidInputError(
                f"--shape {tensor.name}={given}: dim {axis} is 0, an empty request that times no inference; "
                "give it at least 1"
            )
    return shape


def describe_artifact(artifact: Path) -> tuple[tuple[TensorDesc, ...], tuple[Profile, ...]]:
    """Inputs and profiles, read from the manifest (engine) or the graph (ONNX) without loading a runtime."""
    if backend_of(artifact) == ONNXRUNTIME:
        return inspect_model(artifact).inputs, ()
    from trtforge.manifest import ArtifactPaths, read_manifest

    manifest = read_manifest(ArtifactPaths.of(artifact).must_exist().manifest)
    return manifest_inputs(manifest), tuple(manifest.profiles)


def artifact_shape_tensors(artifact: Path, inputs: Sequence[TensorDesc], profiles: Sequence[Profile]) -> ShapeTensors:
    """Which inputs are shape tensors, and where a request's values for them come from."""
    if backend_of(artifact) == ONNXRUNTIME:
        return onnx_shape_tensors(artifact, inputs)
    return ShapeTensors(tuple(inputs), tuple(profiles))


# ---------------------------------------------------------------- measuring (side effects)


def burst(pool: EnginePool, feed: Mapping[str, Any], requests: int, concurrency: int, timeout: float) -> _Burst:
    """``requests`` requests from ``concurrency`` threads released together; latency per request.

    Interrupted (Ctrl-C), every client stops after its request in flight and is joined before the
    interrupt goes on: they ran the rest of the burst (seconds, against a closed pool) and the
    process waited for them to exit; one interrupted at the start printed a traceback each."""
    latencies: list[float] = []
    failures: dict[str, int] = {}
    exhausted = 0
    lock = threading.Lock()
    counter = iter(range(requests))
    gate = threading.Barrier(concurrency + 1)
    stop = threading.Event()

    def client() -> None:
        nonlocal exhausted
        mine: list[float] = []
        try:
            gate.wait()
        except threading.BrokenBarrierError:  # interrupted before the burst began
            return
        while not stop.is_set():
            with lock:
                if next(counter, None) is None:
                    break
            began = time.perf_counter()
            try:
                pool.infer(feed, timeout=timeout)
            except PoolExhausted:
                with lock:
                    exhausted += 1
                continue
            except Exception as exc:  # counted by its message: the report says what failed, not only how often
                text = failure_text(exc)
                with lock:
                    if text not in failures and len(failures) >= MAX_FAILURE_KINDS:
                        text = OTHER_FAILURES
                    failures[text] = failures.get(text, 0) + 1
                continue
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, name=f"bench-client-{i}") for i in range(concurrency)]
    try:
        for thread in threads:
            thread.start()
        gate.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
    except BaseException:
        stop.set()
        gate.abort()
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join()
        raise
    return _Burst(latencies, time.perf_counter() - began, failures, exhausted)


def failure_text(exc: BaseException) -> str:
    """A failed request as one line: trtforge's own errors say what failed; any other names its type."""
    if isinstance(exc, TrtforgeError):
        return first_line(exc)
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__


def _timed(pool: EnginePool, feed: Mapping[str, Any], timeout: float) -> float:
    """Seconds of one request. The first request and the serial ones are timed by this same code,
    so the first is not also the first run of its caller's code (which alone costs a few µs)."""
    began = time.perf_counter()
    pool.infer(feed, timeout=timeout)
    return time.perf_counter() - began


def _serial(pool: EnginePool, feed: Mapping[str, Any], requests: int, timeout: float) -> list[float]:
    return [_timed(pool, feed, timeout) for _ in range(requests)]


@dataclass(frozen=True)
class _Burst:
    latencies: list[float]
    seconds: float
    failures: dict[str, int]  # by message
    exhausted: int

    @property
    def errors(self) -> int:
        return sum(self.failures.values())


def _scenario(
    name: str,
    config: BenchConfig,
    request: WarmupSet,
    feed: Mapping[str, Any],
    pools: list[EnginePool],
) -> Scenario:
    warm = name == "warm"
    began = time.perf_counter()
    pool = EnginePool(
        config.artifact,
        config.pool,
        warmup_also=[request],  # what the pool warms by default, and the request (shape-tensor values too)
        warmup=warm,
        timeout=config.timeout,
        providers=(provider_name(config.provider),),
        threads=config.threads,
    )
    pools.append(pool)
    startup = time.perf_counter() - began
    first = _timed(pool, feed, config.timeout)
    measured = burst(pool, feed, config.requests, config.concurrency, config.timeout)
    if not measured.latencies:
        failed = f"; {most_frequent(measured.failures)}" if measured.failures else ""
        raise TrtforgeError(
            f"{name}: none of the {config.requests} burst requests succeeded ({measured.errors} failed, "
            f"{measured.exhausted} found no context within --timeout {config.timeout:g} s){failed}"
            + ("; raise --timeout or --pool" if measured.exhausted else "")
        )
    latency = Latency.of(measured.latencies)
    serial = Latency.of(_serial(pool, feed, min(config.requests, SERIAL_REQUESTS), config.timeout))
    return Scenario(
        name=name,
        startup_ms=startup * 1000,
        first_request_ms=first * 1000,
        first_response_ms=(first if warm else startup + first) * 1000,
        burst=latency,
        serial=serial,
        throughput_rps=latency.count / max(measured.seconds, 1e-9),
        errors=measured.errors,
        exhausted=measured.exhausted,
        warm_runs=sum(context.warm_runs for context in pool.contexts()),
        failures=measured.failures,
    )


def most_frequent(failures: Mapping[str, int]) -> str:
    """The failure most requests met, as ``N failed with: MESSAGE`` (a message, not the bucket of
    the failures past ``MAX_FAILURE_KINDS``, unless it holds them all). Pure."""
    named = {text: count for text, count in failures.items() if text != OTHER_FAILURES} or failures
    text, count = max(named.items(), key=lambda item: item[1])
    return f"{count} failed with: {text}"


def suggested_size(memory: MemoryUse) -> int | None:
    """``suggest_pool_size`` for GPU 0's free memory as detected before the pool took any (TensorRT only)."""
    if memory.per_context is None:
        return None
    from trtforge.environment import detect_gpus

    gpus = detect_gpus()  # cached: read when the loader checked the engine, before any context existed
    if not gpus:
        return None
    return suggest_pool_size(memory.per_context, gpus[0].memory_free, shared_bytes=memory.shared or 0)


def run_bench(config: BenchConfig, log: Callable[[str], None] = lambda _: None) -> BenchReport:
    """Run the scenarios (cold first, when asked) and return the report; every pool is closed after."""
    if config.pool < 1 or config.concurrency < 1 or config.requests < 1:
        raise InvalidInputError("--pool, --concurrency and --requests must be at least 1")
    if config.concurrency > MAX_CONCURRENCY:
        raise InvalidInputError(
            f"--concurrency {config.concurrency}: at most {MAX_CONCURRENCY} client threads in one process; "
            "for more load, run several bench processes"
        )
    if config.pool > MAX_POOL:
        raise InvalidInputError(
            f"--pool {config.pool}: at most {MAX_POOL} contexts (no burst has more than {MAX_CONCURRENCY} requests "
            "in flight, one per client thread); pass a smaller --pool"
        )
    if config.requests > MAX_REQUESTS:
        raise InvalidInputError(
            f"--requests {config.requests}: at most {MAX_REQUESTS:,} in one run (each one's latency is kept "
            "for the percentiles); run bench again for more samples"
        )
    provider = provider_name(config.provider)
    check_threads(config.threads, "--threads")
    if backend_of(config.artifact) != ONNXRUNTIME:  # an engine runs on TensorRT: they would change nothing
        options = (("--provider", config.provider != "cpu"), ("--threads", config.threads is not None))
        given = [flag for flag, set_here in options if set_here]
        if given:
            raise InvalidInputError(
                f"{' and '.join(given)}: onnxruntime's, for an .onnx model; an engine runs on TensorRT: "
                f"drop {' and '.join(given)}"
            )
    inputs, profiles = describe_artifact(config.artifact)
    shapes = request_shapes(inputs, profiles, config.batch, config.shapes)
    # a shape tensor's values: --shape NAME=[V,...], else the engine profile's (opt first) or what the
    # ONNX graph tells for certain; else exit 2 saying what to pass (random integers would fail a Reshape)
    request = artifact_shape_tensors(config.artifact, inputs, profiles).complete(
        WarmupSet(shapes, config.values), flag="--shape"
    )
    shapes = dict(request.shapes)
    feed = random_feed(inputs, shapes, seed=config.seed + 1, values=request.values)  # not the warm-up's data (seed 0)
    if backend_of(config.artifact) == ONNXRUNTIME:
        import onnxruntime  # noqa: F401  (a server imports it at start-up: not part of any first request)
    pools: list[EnginePool] = []
    scenarios: list[Scenario] = []
    try:
        for name in ("cold", "warm") if config.cold else ("warm",):
            log(f"{name}: pool of {config.pool}, {config.requests} requests from {config.concurrency} threads")
            scenarios.append(_scenario(name, config, request, feed, pools))
            if name == "cold":
                pools.pop().close()  # one pool at a time: the warm one must not share the CPU with it
        warm_pool = pools[-1]
        memory = warm_pool.memory
        return BenchReport(
            artifact=str(config.artifact),
            backend=warm_pool.backend,
            providers=(provider,) if warm_pool.backend == ONNXRUNTIME else (),
            pool=config.pool,
            concurrency=config.concurrency,
            requests=config.requests,
            shapes={name: list(shape) for name, shape in shapes.items()},
            scenarios=tuple(scenarios),
            device_memory=asdict(memory),
            suggested_pool_size=suggested_size(memory),
            metrics=asdict(warm_pool.metrics.snapshot()),
        )
    finally:
        for pool in pools:
            pool.close()


# ---------------------------------------------------------------- rendering


def render_table(report: BenchReport) -> Table:
    """One row per scenario; times in ms, ratios to the warm steady-state p50."""
    columns = ("", "startup", "1st req", "×p50", "1st resp", "×p50", "p50", "burst p99", "req/s")
    table = Table(
        (
            f"{Path(report.artifact).name} on {report.backend}: pool {report.pool}, burst of {report.requests} "
            f"from {report.concurrency} threads; ms, ×p50 = ratio to the steady-state p50 "
            f"({report.baseline_p50_ms:.3f} ms)",
        ),
        columns,
        frozenset(columns[1:]),
    )
    for scenario in report.scenarios:
        ratios = report.ratios(scenario)
        table.add_row(
            scenario.name,
            f"{scenario.startup_ms:.1f}",
            f"{scenario.first_request_ms:.3f}",
            f"{ratios['first_request_to_p50']:.1f}",
            f"{scenario.first_response_ms:.2f}",
            f"{ratios['first_response_to_p50']:.1f}",
            f"{scenario.serial.p50:.3f}",
            f"{scenario.burst.p99:.3f}",
            f"{scenario.throughput_rps:.0f}",
        )
    return table
