"""The accuracy gate: the FP32 ONNX in onnxruntime (reference) against the candidate.

The candidate is the engine itself when this host can run it (a GPU, and the compatibility rules
pass for the installed runtime); otherwise the precision-prepared ONNX (FP16-converted or Q/DQ)
in onnxruntime, labelled ``simulated``. Every report says which, and why.

The gate costs what it must: at fp32 with a simulated candidate (``identical``) nothing is
compared, so nothing runs at all (every feed when labels ask for the task accuracy): the report
says why and lists each output's limits unmeasured; the reference's outputs over random inputs are
cached by content (:mod:`trtforge.accuracy.references`); reference and candidate run in two
threads (onnxruntime releases the GIL), each with half the cores. A build starts the reference's
pass (:class:`GatePass`) before its precision step, so that it runs while the FP16
conversion and the TensorRT build keep one core busy, and on a host without a GPU the simulated
candidate's as soon as its graph exists, beside the TensorRT build: the gate then only compares.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trtforge.accuracy import inputs, references, tolerances
from trtforge.accuracy.report import (
    IDENTICAL_PASS,
    IDENTICAL_REASON,
    AccuracyReport,
    CandidateInfo,
    CheckResult,
    DataInfo,
    OutputResult,
    ReferenceInfo,
    TaskAccuracy,
    json_number,
)
from trtforge.compat import Environment, LoadPolicy, describe_problems, problems
from trtforge.digests import prefetch_digest, sha256_file
from trtforge.environment import usable_cores
from trtforge.errors import AccuracyError, IncompatibleEngineError, InvalidInputError, TrtforgeError
from trtforge.manifest import manifest_path_for
from trtforge.mixedprecision import candidate_emulation, emulation_of, tensorrt_choice
from trtforge.model import ModelInfo, TensorDesc, is_float
from trtforge.runners.base import Runner
from trtforge.runners.onnxruntime import OnnxrtRunner, ort_error_text
from trtforge.spec import Spec

if TYPE_CHECKING:  # numpy and the metrics only where outputs are compared: an identical gate runs nothing
    import numpy as np

    from trtforge.console import Reporter
    from trtforge.manifest import Manifest

REFERENCE_RUNNER = "onnxruntime CPUExecutionProvider, FP32"
#: The runner of an ``identical`` candidate without labels: none, as nothing runs.
IDENTICAL_RUNNER = "none: the reference's own ONNX (identical by construction), so nothing runs"


class GateFailed(AccuracyError):
    """Exit 4: a tolerance was exceeded; ``report`` holds every measurement."""

    def __init__(self, message: str, report: AccuracyReport) -> None:
        super().__init__(message)
        self.report = report


class GateNotRunnable(InvalidInputError):
    """Exit 2: the engine built, but the gate cannot judge it: onnxruntime cannot load the model,
    or the reference fails (or gives nothing but NaN/Inf) on the gate's inputs. Like a failed
    gate, it leaves no artifact under its final name."""


def not_runnable(spec: Spec, reason: str, source: Literal["files", "random"] | None) -> GateNotRunnable:
    """The one line for a gate that cannot run; ``source``: the inputs it ran on (None: it never ran)."""
    if source == "random":
        where, on, fix = str(spec.origin.path), " on random inputs", "give accuracy.data, or accuracy.enabled: false"
    elif source == "files":
        where, on = spec.origin.where("accuracy", "data"), " on accuracy.data"
        fix = "give data the model accepts, or accuracy.enabled: false"
    else:
        where, on, fix = str(spec.origin.path), "", "set accuracy.enabled: false to build it without the gate"
    return GateNotRunnable(
        f"{where}: the engine built, but the accuracy gate could not run{on} for this model ({reason}): {fix}"
    )


@contextlib.contextmanager
def active(runner: Runner, spec: Spec, role: str) -> Iterator[Runner]:
    """``runner`` activated for the gate; onnxruntime refusing the model (an opset or op it does
    not implement) means the gate cannot run here, not that the build failed."""
    try:
        runner.activate()
    except InvalidInputError as exc:
        if not isinstance(runner, OnnxrtRunner):
            raise
        raise not_runnable(
            spec, f"onnxruntime cannot load the {role}: {ort_error_text(exc.__cause__ or exc)}", None
        ) from exc
    try:
        yield runner
    finally:
        runner.deactivate()


def _run_onnx(
    runner: Runner, feed: Mapping[str, np.ndarray], spec: Spec, plan: inputs.Plan, role: str
) -> dict[str, np.ndarray]:
    """One onnxruntime run of the gate; its failure (index out of range, a domain error) says the
    inputs do not suit the model: exit 2 naming them, whatever onnxruntime's status code."""
    try:
        return runner.infer(feed)
    except TrtforgeError as exc:
        detail = ort_error_text(exc.__cause__) if exc.__cause__ else str(exc)
        raise not_runnable(spec, f"onnxruntime fails on the {role}: {detail}", plan.source) from exc


@dataclass(frozen=True)
class GateCandidate:
    """What the gate compares with the reference, and why that one."""

    kind: Literal["engine", "simulated"]
    reason: str
    onnx_path: Path | None = None  # simulated: the precision-prepared ONNX (or its FP16-storage emulation)
    emulation: str | None = None  # simulated: how ``onnx_path`` emulates the engine, when it does
    engine: Any = None  # engine: the loader's LoadedEngine (keeps runtime and engine alive)


def engine_runs_here(manifest: Manifest, env: Environment, policy: LoadPolicy) -> str | None:
    """Why the engine cannot run on ``env`` (None: it can): the compatibility rules, pure."""
    if env.compute_capability is None or not env.gpus:
        return "no GPU on this host"
    found = problems(manifest, env, allow_host_code=policy.allow_host_code)
    return describe_problems(found) if found else None


def simulated(
    onnx_path: Path,
    why_not_engine: str,
    *,
    int8: bool = False,
    tensorrt_note: str | None = None,
    reference: ModelInfo | None = None,
) -> GateCandidate:
    """The simulation as the candidate; ``reference``: the spec's model as described, whose
    metadata serves when ``onnx_path`` is that model (fp32), instead of parsing it again. Its
    emulation label says how it stands for the engine (``candidate_emulation``; ``tensorrt_note``:
    where TensorRT picks precisions itself, ``tensorrt_choice``)."""
    storage = emulation_of(onnx_path, reference)
    emulation = candidate_emulation(storage, int8, tensorrt_note)
    what = {
        (True, True): "its Q/DQ graph (INT8 and FP16 storage emulated)",
        (True, False): "its Q/DQ graph (INT8 emulated)",
        (False, True): "its FP16-storage emulation",
        (False, False): "the precision-prepared ONNX",
    }[(int8, storage is not None)]
    return GateCandidate(
        "simulated", f"{why_not_engine}: {what} runs in onnxruntime instead", onnx_path=onnx_path, emulation=emulation
    )


def _simulated_engine(
    manifest: Manifest, onnx_path: Path, why_not_engine: str, reference: ModelInfo | None
) -> GateCandidate:
    """The simulation standing for ``manifest``'s engine, labelled with how that engine was built."""
    native = manifest.calibration is not None and manifest.calibration.get("mode") == "native"
    trt = manifest.tensorrt
    choice = tensorrt_choice(trt.flavor, trt.version, manifest.precision, native)
    return simulated(
        onnx_path, why_not_engine, int8=manifest.precision == "int8", tensorrt_note=choice, reference=reference
    )


def same_graph_as_reference(candidate: GateCandidate, reference: Path) -> bool:
    """fp32 simulated: the candidate is the reference's own ONNX, so one run serves both."""
    return (
        candidate.kind == "simulated"
        and candidate.onnx_path is not None
        and (candidate.onnx_path.resolve() == reference.resolve())
    )


@contextlib.contextmanager
def engine_on_disk(manifest: Manifest, engine: Path | bytes | memoryview) -> Iterator[Path]:
    """The engine under its own name with its manifest beside it, as the loader wants it: the
    artifact itself, or (for a build still staged) a copy in a private temporary folder."""
    if isinstance(engine, Path):
        yield engine
        return
    with tempfile.TemporaryDirectory(prefix=".trtforge-gate-") as folder:
        path = Path(folder) / manifest.artifact.file
        path.write_bytes(engine)
        manifest_path_for(path).write_text(manifest.to_json(), encoding="utf-8")
        yield path


@contextlib.contextmanager
def open_candidate(
    manifest: Manifest,
    engine: Path | bytes | memoryview,
    simulated_onnx: Path,
    env: Environment,
    policy: LoadPolicy,
    reference: ModelInfo | None = None,
) -> Iterator[GateCandidate]:
    """The engine, deserialized by the runtime loader, when this host can run it; else the simulation.

    A GPU host whose loader refuses the engine (header check, memory, policy) falls back to the
    simulation, and the report says why.
    """
    why_not = engine_runs_here(manifest, env, policy)
    if why_not is not None:
        yield _simulated_engine(manifest, simulated_onnx, why_not, reference)
        return
    from trtforge.runtime.loader import load_engine

    with engine_on_disk(manifest, engine) as path:
        try:
            loaded = load_engine(path, policy)
        except IncompatibleEngineError as exc:
            refused = f"the runtime loader refused the engine ({exc})"
            yield _simulated_engine(manifest, simulated_onnx, refused, reference)
            return
    gpu = env.gpus[0]
    yield GateCandidate(
        "engine",
        f"{loaded.trt.__name__} {loaded.trt.__version__} runs the engine on {gpu.name} ({gpu.compute_capability})",
        engine=loaded,
    )


def candidate_runner(candidate: GateCandidate, threads: int) -> tuple[Runner, str]:
    """The runner of ``candidate`` and how the report names it. An FP16-storage emulation runs with
    onnxruntime's default (highest) optimization level, which keeps its cast pairs."""
    if candidate.kind == "simulated":
        assert candidate.onnx_path is not None
        runner = OnnxrtRunner(candidate.onnx_path, name="candidate", intra_op_threads=threads)
        return runner, "onnxruntime CPUExecutionProvider"
    from trtforge.runners.tensorrt import TrtRunner

    loaded = candidate.engine
    text = f"TrtRunner, {loaded.trt.__name__} {loaded.trt.__version__}"
    return TrtRunner(loaded.engine, loaded.trt, name="candidate"), text


@dataclass
class _Collected:
    reference: dict[str, list[np.ndarray]]
    candidate: dict[str, list[np.ndarray]]
    samples: int = 0
    dropped: int = 0
    batches: int = 0
    label_rows: list[tuple[int, int]] | None = None  # (first, size) of each batch used
    # output -> (batches whose candidate array has another shape than the reference's, the first one said)
    misshapen: dict[str, tuple[int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Sides:
    """Who answers each feed: the reference runner, or its cached outputs (one per feed); the
    candidate runner, or None when the candidate is the reference itself."""

    reference: Runner | None
    cached: references.Outputs | None
    candidate: Runner | references.Outputs | None  # outputs: a candidate pass ran beside the build
    pool: ThreadPoolExecutor | None  # set: the reference runs in this thread while the candidate runs


def _candidate_out(
    runner: Runner | references.Outputs, index: int, feed: Mapping[str, np.ndarray], spec: Spec, plan: inputs.Plan
) -> dict[str, np.ndarray]:
    if isinstance(runner, list):
        return runner[index]
    if isinstance(runner, OnnxrtRunner):
        return _run_onnx(runner, feed, spec, plan, "simulated candidate")
    return runner.infer(feed)


def _both(
    sides: _Sides, index: int, feed: Mapping[str, np.ndarray], spec: Spec, plan: inputs.Plan
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Reference and candidate outputs of one feed; a reference failure wins, as if it ran first."""
    if sides.cached is not None:
        ref_out = sides.cached[index]
        return ref_out, ref_out if sides.candidate is None else _candidate_out(sides.candidate, index, feed, spec, plan)
    assert sides.reference is not None
    if sides.candidate is None:
        ref_out = _run_onnx(sides.reference, feed, spec, plan, "reference")
        return ref_out, ref_out
    if sides.pool is None:
        ref_out = _run_onnx(sides.reference, feed, spec, plan, "reference")
        return ref_out, _candidate_out(sides.candidate, index, feed, spec, plan)
    pending: Future[dict[str, np.ndarray]] = sides.pool.submit(
        _run_onnx, sides.reference, feed, spec, plan, "reference"
    )
    try:
        cand_out = _candidate_out(sides.candidate, index, feed, spec, plan)
    except BaseException:
        pending.result()  # raises the reference's failure, if it has one, in place of the candidate's
        raise
    return pending.result(), cand_out


def _collect(
    spec: Spec,
    model: ModelInfo,
    plan: inputs.Plan,
    sides: _Sides,
    log: Callable[[str], None],
) -> _Collected:
    """Run (or read) both sides over the plan's feeds."""
    outputs = [tensor.name for tensor in model.outputs]
    collected = _Collected({name: [] for name in outputs}, {name: [] for name in outputs}, label_rows=[])
    for batch in inputs.batches(spec, model, plan):
        if not inputs.accepted(spec.profiles, batch.feed):
            collected.dropped += batch.size
            fit = "shapes or shape-tensor values" if batch.shape_inputs else "shapes"
            log(f"accuracy: {batch.label} skipped: its {fit} fit no optimization profile")
            continue
        ref_out, cand_out = _both(sides, collected.batches, batch.feed, spec, plan)
        for name in outputs:
            if name not in cand_out:
                produced = ", ".join(cand_out)
                raise AccuracyError(f"output '{name}': the candidate does not produce it (outputs: {produced})")
            if ref_out[name].shape != cand_out[name].shape:  # a failed check of the report, not a crash
                count, said = collected.misshapen.get(name, (0, ""))
                said = said or (
                    f"output '{name}': candidate shape {list(cand_out[name].shape)} differs from the "
                    f"reference's {list(ref_out[name].shape)} ({batch.label})"
                )
                collected.misshapen[name] = (count + 1, said)
            collected.reference[name].append(ref_out[name])
            collected.candidate[name].append(cand_out[name])
        collected.samples += batch.size
        collected.batches += 1
        assert collected.label_rows is not None
        collected.label_rows.append((batch.first, batch.size))
    if not collected.batches:
        raise InvalidInputError(
            f"{spec.origin.where('accuracy', 'data')}: no accuracy sample fits the spec's profiles; "
            "give data whose shapes the profiles accept"
        )
    return collected


def _tolerance_where(spec: Spec) -> Callable[[str], str]:
    return lambda name: spec.origin.where("accuracy", "tolerances", name)


def _joined(parts: Sequence[np.ndarray]) -> np.ndarray:
    """One array per output: batches stacked when their sample shapes agree, else flattened."""
    import numpy as np

    if all(part.shape[1:] == parts[0].shape[1:] for part in parts) and parts[0].ndim > 0:
        return np.concatenate(parts)
    return np.concatenate([part.ravel() for part in parts])


def evaluate_outputs(
    spec: Spec,
    model: ModelInfo,
    reference: Mapping[str, Sequence[np.ndarray]],
    candidate: Mapping[str, Sequence[np.ndarray]],
    labels: np.ndarray | None,
    identical: bool = False,
    misshapen: Mapping[str, tuple[int, str]] | None = None,
) -> list[OutputResult]:
    """Metrics, limits and checks per output (pure, given the collected arrays).

    Nothing is measured, and no limit checked, where nothing is compared: an ``identical``
    candidate (the reference against itself, run only for the task accuracy) and an output
    that holds no value (a ``[N, 0]`` shape). A check there would pass on nothing. An output
    whose candidate arrays have another shape than the reference's (``misshapen``: output ->
    batches, the first one said) is not compared either: it fails its ``shape`` check."""
    from trtforge.accuracy import metrics

    names = [tensor.name for tensor in model.outputs]
    results = []
    classifiers: dict[str, int] = {}  # classifier output -> its class count
    for name in names:
        ref, cand = _joined(reference[name]), _joined(candidate[name])
        classifier = metrics.is_classifier(ref)
        if classifier:
            classifiers[name] = ref.shape[1]
        exact = not is_float(ref.dtype)
        limits = tolerances.resolve(name, spec.precision, spec.accuracy.tolerances, classifier, exact)
        wrong_shape = (misshapen or {}).get(name)
        compared = not identical and ref.size > 0 and wrong_shape is None
        measured = metrics.compare(ref, cand, classifier) if compared else None
        checks = tolerances.evaluate(name, measured, limits) if measured is not None else []
        if wrong_shape is not None:
            checks.append(tolerances.shape_check(name, *wrong_shape))
        task = None
        if labels is not None and classifier and wrong_shape is None and inputs.labels_fit(labels, ref.shape[1]):
            task = TaskAccuracy(
                samples=len(labels),
                reference=metrics.task_accuracy(ref, labels),
                candidate=metrics.task_accuracy(cand, labels),
            )
        results.append(
            OutputResult(
                name=name,
                classifier=classifier,
                metrics={key: json_number(value) for key, value in measured.as_dict().items()} if measured else {},
                tolerance=limits.model_dump(exclude_none=True),
                checks=[
                    CheckResult(
                        limit_key=check.limit_key,
                        metric=check.metric,
                        bound=check.bound,
                        value=json_number(check.value),
                        limit=check.limit,
                        passed=check.passed,
                        message=check.message,
                    )
                    for check in checks
                ],
                task_accuracy=task,
            )
        )
    floats = [name for name in names if is_float(_joined(reference[name]).dtype)]
    tolerances.check_names(spec.accuracy.tolerances, names, list(classifiers), floats, _tolerance_where(spec))
    if labels is not None and not classifiers:
        raise inputs.labels_need_a_classifier(spec.origin.where("accuracy", "labels"), names)
    if labels is not None:
        assert spec.accuracy.labels is not None  # the file the labels were read from
        where = spec.origin.where("accuracy", "labels")
        inputs.check_label_classes(Path(spec.accuracy.labels), labels, classifiers, where)
    return results


def _labels_for(plan: inputs.Plan, collected: _Collected, where: str) -> np.ndarray | None:
    import numpy as np

    if plan.labels is None:
        return None
    assert collected.label_rows is not None
    needed = max(first + size for first, size in collected.label_rows)
    labels = inputs.load_labels(plan.labels, needed, where)
    return np.concatenate([labels[first : first + size] for first, size in collected.label_rows])


def out_of_domain(
    outputs: Sequence[OutputResult], reference: Mapping[str, Sequence[np.ndarray]], source: Literal["files", "random"]
) -> str | None:
    """Why these inputs cannot judge these outputs (None: they can). A reference that gives only
    NaN/Inf (acosh of [0, 1)) leaves no value to compare, whatever the inputs: its checks would
    pass on nothing. On random inputs, a candidate that differs only where the reference has
    NaN/Inf is a sign that the values lie outside the model's domain rather than that the
    candidate is wrong; NaN/Inf where the reference is finite (an FP16 overflow) is the
    candidate's, and the pattern check fails it, as it fails any difference on the user's own
    data. Pure."""
    for out in outputs:
        nonfinite = out.metrics.get("nonfinite")
        if nonfinite and nonfinite == sum(part.size for part in reference[out.name]):
            return f"the reference's output '{out.name}' is all NaN/Inf"
        only_where_reference_is_not = out.metrics.get("nonfinite_mismatch") and not out.metrics.get("nonfinite_added")
        if source == "random" and nonfinite and only_where_reference_is_not:
            return f"the reference's output '{out.name}' has NaN/Inf, and the candidate's differ there"
    return None


def reference_cache_entry(
    cache_dir: Path | None, spec: Spec, model: ModelInfo, plan: inputs.Plan
) -> tuple[Path, list[inputs.GateShapes]] | None:
    """Where the reference's outputs for this plan are cached (keyed by the model's content, its
    external data too), and the shape sets of its feeds; None when they are not cached (no
    cache folder, or inputs from files)."""
    if cache_dir is None or plan.source != "random" or plan.seed is None:
        return None
    from importlib.metadata import version

    from trtforge.model import content_sha256

    sets = inputs.shape_sets(model, spec.profiles)
    key = references.cache_key(content_sha256(spec.model_path), sets, plan.seed, version("onnxruntime"))
    return references.entry_path(cache_dir, key), sets


class PassCancelled(Exception):
    """A side's pass stopped early: the build it ran beside failed."""


#: What a side's pass gives: one output dict per accepted feed, and the cache entry they were read
#: from (None: they were computed).
PassResult = tuple[references.Outputs, Path | None]


class GatePass:
    """One side of the gate run over the gate's inputs in a thread of its own while a build goes on
    (the precision step and the TensorRT build keep about one core busy): the gate then only
    compares. It runs what the gate would run (same runner, same feeds in the same order, the same
    failures raised where the gate raises them), so the report is the one the gate would write.
    ``close`` stops it between feeds and waits for it."""

    def __init__(self, work: Callable[[threading.Event], PassResult], role: str, model: Callable[[], Path]) -> None:
        self.role = role  # "reference" or "simulated candidate"
        self.model = model  # the model the pass runs (waits for it where it is still being made)
        self._stop = threading.Event()
        self._result: Future[PassResult] = Future()
        self._thread = threading.Thread(target=self._run, args=(work,), name="trtforge-gate-pass", daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[threading.Event], PassResult]) -> None:
        try:
            self._result.set_result(work(self._stop))
        except BaseException as exc:  # handed to the gate, which raises it in its own thread
            self._result.set_exception(exc)

    def outputs(self) -> PassResult:
        """The pass's outputs (waiting for them); raises its failure."""
        return self._result.result()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _pass_over_plan(
    runner: Runner, spec: Spec, model: ModelInfo, plan: inputs.Plan, role: str, stop: threading.Event
) -> PassResult:
    """``runner`` over the plan's accepted feeds, as :func:`_collect` feeds them."""
    outputs: references.Outputs = []
    with active(runner, spec, role) as running:
        for batch in inputs.batches(spec, model, plan):
            if stop.is_set():
                raise PassCancelled
            if inputs.accepted(spec.profiles, batch.feed):
                outputs.append(_run_onnx(running, batch.feed, spec, plan, role))
    return outputs, None


def checked_plan(spec: Spec, model: ModelInfo) -> inputs.Plan:
    """The gate's input plan, after what the spec tells the gate is checked against the model:
    tolerance keys name outputs, data files fit the inputs (headers only), the labels file
    exists. ``build`` calls it before anything is built, so a typo costs no build."""
    names = [tensor.name for tensor in model.outputs]
    tolerances.check_spec_names(spec, names, inputs.possible_classifiers(model), inputs.float_outputs(model))
    return inputs.plan(spec, model)


def reference_pass(spec: Spec, model: ModelInfo, cache_dir: Path | None) -> GatePass:
    """The reference's pass, started with a build: read from the reference cache (an entry of the
    form the model declares: :func:`references.conforms`), else run with half the cores (as in the
    gate's two threads) and stored there."""

    def work(stop: threading.Event) -> PassResult:
        names = [tensor.name for tensor in model.outputs]
        plan = inputs.plan(spec, model)  # once: a data plan globs its files and reads their headers
        entry = reference_cache_entry(cache_dir, spec, model, plan)
        cached = references.load(entry[0], model, entry[1]) if entry else None
        if entry is not None and cached is not None:
            return cached, entry[0]
        runner = OnnxrtRunner(spec.model_path, name="reference", intra_op_threads=max(1, usable_cores() // 2))
        outputs, _ = _pass_over_plan(runner, spec, model, plan, "reference", stop)
        if entry is not None:
            references.store(entry[0], [{name: out[name] for name in names} for out in outputs], names)
        return outputs, None

    return GatePass(work, "reference", lambda: spec.model_path)


def candidate_pass(spec: Spec, model: ModelInfo, simulated_onnx: Callable[[], Path]) -> GatePass:
    """The simulated candidate's pass, on a host where the engine cannot run (no GPU), started with
    the TensorRT build: it waits for the precision step's graph (``simulated_onnx``), then runs."""
    role = "simulated candidate"

    def work(stop: threading.Event) -> PassResult:
        runner, _ = candidate_runner(GateCandidate("simulated", "", onnx_path=simulated_onnx()), 0)
        return _pass_over_plan(runner, spec, model, inputs.plan(spec, model), role, stop)

    return GatePass(work, role, simulated_onnx)


def run_gate(
    spec: Spec,
    model: ModelInfo,
    candidate: GateCandidate,
    *,
    stem: str,
    engine_file: str | None,
    log: Callable[[str], None] = lambda _message: None,
    cache_dir: Path | None = None,
    read_cache: bool = False,
    passes: Sequence[GatePass] = (),
) -> AccuracyReport:
    """Run reference and candidate over the gate's inputs and measure; never raises for a failed
    limit or a candidate output of another shape (see ``raise_for_failures``), only for bad input
    or a runner that breaks. ``cache_dir``: the host's cache folder, where the reference's outputs
    are stored (None: no cache); ``read_cache``: reuse an entry there (a build: an entry saves cost
    and proves nothing, so ``verify``, which decides whether to trust an artifact, never reads one);
    ``passes``: a build's passes already under way (:func:`reference_pass`, :func:`candidate_pass`),
    whose outputs replace the gate's own runs of the model each one ran."""
    started = time.perf_counter()
    names = [tensor.name for tensor in model.outputs]
    plan = checked_plan(spec, model)
    for note in plan.notes:
        log(f"accuracy: {note}")
    model_sha256 = sha256_file(spec.model_path)
    identical = same_graph_as_reference(candidate, spec.model_path)
    if identical and plan.labels is None:  # the reference against itself: nothing to measure, nothing runs
        unmeasured = [_unmeasured(spec, tensor) for tensor in model.outputs]
        collected = _Collected({}, {}, label_rows=[])
        return _report(
            spec, candidate, identical, stem, engine_file, plan, collected, unmeasured, model_sha256, started
        )
    if candidate.onnx_path is not None:
        prefetch_digest(candidate.onnx_path)  # the report's sha256 of it, hashed while the passes run
    cached: references.Outputs | None = None
    read_from: Path | None = None  # the cache entry the reference's outputs were read from
    store_at: Path | None = None  # the cache entry for the reference's outputs run here
    reference_run = next((run for run in passes if run.role == "reference"), None)
    if reference_run is not None:  # the pass stored its outputs in the cache itself, if it ran them
        cached, read_from = reference_run.outputs()
    elif (entry := reference_cache_entry(cache_dir, spec, model, plan)) is not None:
        cached = references.load(entry[0], model, entry[1]) if read_cache else None
        read_from, store_at = (entry[0], None) if cached is not None else (None, entry[0])
    candidate_run = next(
        (run for run in passes if run.role == "simulated candidate" and run.model() == candidate.onnx_path), None
    )
    concurrent = cached is None and not identical and candidate_run is None and usable_cores() > 1
    threads = max(1, usable_cores() // 2) if concurrent and candidate.kind == "simulated" else 0
    with contextlib.ExitStack() as stack:
        reference = None
        if cached is None:
            runner = OnnxrtRunner(spec.model_path, name="reference", intra_op_threads=threads)
            reference = stack.enter_context(active(runner, spec, "reference"))
        candidate_side: Runner | references.Outputs | None = None
        if identical:  # with labels: the reference's runs give the task accuracy
            runner_text = "onnxruntime CPUExecutionProvider, the reference's own ONNX (identical by construction)"
        else:
            made, runner_text = candidate_runner(candidate, threads)
            candidate_side = (
                candidate_run.outputs()[0]
                if candidate_run is not None
                else stack.enter_context(active(made, spec, "simulated candidate"))
            )
        pool = stack.enter_context(ThreadPoolExecutor(1, "trtforge-reference")) if concurrent else None
        sides = _Sides(reference, cached, candidate_side, pool)
        collected = _collect(spec, model, plan, sides, log)
    if reference_run is not None and read_from is None:  # not read from the cache: run
        log("accuracy: the reference ran beside the build")
    if candidate_run is not None:
        log("accuracy: the simulated candidate ran beside the build")
    if read_from is not None:
        log(f"accuracy: reference outputs read from the cache ({read_from})")
    elif store_at is not None:
        computed = [{name: collected.reference[name][at] for name in names} for at in range(collected.batches)]
        references.store(store_at, computed, names)
    labels = _labels_for(plan, collected, spec.origin.where("accuracy", "labels"))
    outputs = evaluate_outputs(
        spec, model, collected.reference, collected.candidate, labels, identical, collected.misshapen
    )
    unjudged = out_of_domain(outputs, collected.reference, plan.source)
    if unjudged:
        raise not_runnable(spec, unjudged, plan.source)
    return _report(
        spec, candidate, identical, stem, engine_file, plan, collected, outputs, model_sha256, started, runner_text
    )


def _unmeasured(spec: Spec, output: TensorDesc) -> OutputResult:
    """An output of an ``identical`` candidate: its limits, no measurement (nothing ran). A float
    ``[N, C]`` output with C >= 2 counts as a classifier, as its arrays would (pure)."""
    dims = output.shape
    floats = output.dtype.startswith(("float", "bfloat"))
    classifier = len(dims) == 2 and isinstance(dims[1], int) and dims[1] >= 2 and floats
    limits = tolerances.resolve(output.name, spec.precision, spec.accuracy.tolerances, classifier, not floats)
    return OutputResult(
        name=output.name, classifier=classifier, metrics={}, tolerance=limits.model_dump(exclude_none=True), checks=[]
    )


def _report(
    spec: Spec,
    candidate: GateCandidate,
    identical: bool,
    stem: str,
    engine_file: str | None,
    plan: inputs.Plan,
    collected: _Collected,
    outputs: list[OutputResult],
    model_sha256: str,
    started: float,
    runner_text: str = IDENTICAL_RUNNER,
) -> AccuracyReport:
    failures = [check.message for out in outputs for check in out.checks if not check.passed]
    candidate_sha256 = model_sha256 if identical else sha256_file(candidate.onnx_path) if candidate.onnx_path else None
    return AccuracyReport(
        name=spec.name,
        precision=spec.precision,
        stem=stem,
        engine=engine_file,
        passed=not failures,
        candidate=CandidateInfo(
            kind="identical" if identical else candidate.kind,
            runner=runner_text,
            model=str(candidate.onnx_path) if candidate.onnx_path else None,
            model_sha256=candidate_sha256,
            reason=f"{candidate.reason}; {IDENTICAL_REASON}; {IDENTICAL_PASS}" if identical else candidate.reason,
            emulation=candidate.emulation,
        ),
        reference=ReferenceInfo(runner=REFERENCE_RUNNER, model=str(spec.model_path), model_sha256=model_sha256),
        data=DataInfo(
            source=plan.source,
            files=len(plan.files),
            samples=collected.samples,
            dropped=collected.dropped,
            batches=collected.batches,
            labels=str(plan.labels) if plan.labels else None,
            seed=plan.seed,
            notes=list(plan.notes),
        ),
        outputs=outputs,
        failures=failures,
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - started, 3),
    )


def failure_message(report: AccuracyReport, report_file: Path | str) -> str:
    """One line: the first exceeded limit (output, metric, value, limit), how many more, where to look."""
    more = f" (and {len(report.failures) - 1} more)" if len(report.failures) > 1 else ""
    return (
        f"accuracy gate failed for {report.stem} ({report.candidate.kind} candidate): "
        f"{report.failures[0]}{more}; report: {report_file}"
    )


def raise_for_failures(report: AccuracyReport, report_file: Path | str) -> None:
    if not report.passed:
        raise GateFailed(failure_message(report, report_file), report)


def run_accuracy_gate(
    spec: Spec,
    model: ModelInfo,
    manifest: Manifest,
    engine: Path | bytes | memoryview,
    simulated_onnx: Path,
    reporter: Reporter,
    *,
    env: Environment | None = None,
    policy: LoadPolicy | None = None,
    cache_dir: Path | None = None,
    read_cache: bool = False,
    passes: Sequence[GatePass] = (),
) -> AccuracyReport:
    """The gate for one artifact: pick the candidate on this host, run, show the table.

    ``engine``: the artifact's path (``verify``), or the staged bytes of a build in progress.
    ``policy``: the loader's policy (default: the loader's own; a build allows host code in
    the engine it has just built itself). ``read_cache``: see :func:`run_gate`. ``passes``: the
    build's passes (:class:`GatePass`).
    """
    from trtforge.accuracy.report import render
    from trtforge.compat import DEFAULT_POLICY
    from trtforge.environment import detect_environment

    env = env or detect_environment(flavor=manifest.tensorrt.flavor)
    with open_candidate(manifest, engine, simulated_onnx, env, policy or DEFAULT_POLICY, model) as candidate:
        kind = "identical" if same_graph_as_reference(candidate, spec.model_path) else candidate.kind
        reporter.info(f"{spec.name}: accuracy gate, candidate {kind} ({candidate.reason})")
        report = run_gate(
            spec,
            model,
            candidate,
            stem=manifest.stem,
            engine_file=manifest.artifact.file,
            log=reporter.info,
            cache_dir=cache_dir,
            read_cache=read_cache,
            passes=passes,
        )
    render(report, reporter)
    return report
