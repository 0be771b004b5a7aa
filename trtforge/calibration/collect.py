"""Run the FP32 model over the calibration batches and stream activation statistics.

onnxruntime's own calibrators keep every intermediate tensor of every batch in memory and
histogram them at the end. Here the tensors to calibrate become extra graph outputs, and each
batch's outputs update fixed-size per-tensor statistics and are dropped at once: memory stays
flat however many samples there are.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trtforge.calibration.histogram import Algorithm, NonFiniteError, TensorStats, new_stats
from trtforge.environment import usable_cores
from trtforge.errors import InvalidInputError
from trtforge.model import with_outputs
from trtforge.runners.onnxruntime import ort_error_text

if TYPE_CHECKING:
    import onnx


def all_activations(model: onnx.ModelProto) -> list[str]:
    """Every activation (graph inputs and node outputs): TensorRT's native calibrator asks
    for a scale for each tensor it may run in INT8."""
    initializers = {init.name for init in model.graph.initializer}
    names: dict[str, None] = {value.name: None for value in model.graph.input if value.name not in initializers}
    for node in model.graph.node:
        if node.op_type != "Constant":
            names.update((name, None) for name in node.output)
    names.pop("", None)
    return list(names)


def parallel_runs(cpus: int) -> tuple[int, int]:
    """(concurrent runs, threads per run) for ``cpus`` cores.

    onnxruntime's intra-op threads scale poorly on one small batch on larger machines (two
    threads gained about 1.4x on a ResNet at batch 16 where first measured; ~1.9x on a 2-core
    VM, where batches side by side are ~5% ahead), while independent batches scale almost
    linearly. So batches run side by side in one session (``run`` is thread-safe), up to four,
    and the cores left over are split among them.
    """
    runs = max(1, min(cpus, 4))
    return runs, max(1, cpus // runs)


def collect(
    model: onnx.ModelProto,
    tensors: list[str],
    batches: Iterable[Mapping[str, np.ndarray]],
    algorithm: Algorithm,
    cpus: int | None = None,
    stats_thread: bool = True,
    saved: Path | None = None,
    optimized: bool = True,
    finite_only: bool = False,
) -> tuple[dict[str, TensorStats], int]:
    """Statistics of the float tensors among ``tensors``, and the number of samples seen.

    Graph inputs are read from the batch itself (onnxruntime mishandles outputs that are also
    inputs); every other tensor is an extra output of one onnxruntime CPU session. Tensors
    that turn out not to be float (shapes, indices) are dropped. Batches are processed in
    order (the histogram range depends on it) while the next ones run. The statistics are
    updated in a thread of their own (``stats_thread``; numpy releases the GIL in its loops),
    one batch after the other in that same order, so the result is bit for bit the one of
    updating them in the caller's thread, while the main thread goes on reading and
    submitting batches. ``saved`` is ``model``'s file when the caller has one that may be
    extended (a temporary one): the session is made from it without serializing the model.
    ``optimized=False``: no graph optimization, for few runs (the FP16 overflow guard's one sample
    per shape), where optimizing a graph whose every tensor is an output costs more than it saves.
    ``finite_only`` (minmax): NaN/Inf values are passed over, not refused (the overflow guard).
    """
    import onnxruntime as ort

    input_names = {tensor.name for tensor in model.graph.input}
    fed = [name for name in tensors if name in input_names]
    computed = [name for name in tensors if name not in input_names]
    runs, threads = parallel_runs(cpus or usable_cores())
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: failures reach the caller as exceptions, not ANSI log lines
    options.intra_op_num_threads = threads
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(with_outputs(model, computed, saved), options, providers=["CPUExecutionProvider"])
    stats: dict[str, TensorStats] = {}
    samples = 0

    def run(batch: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        # OrtValues, which numpy views without a copy: their memory comes from onnxruntime's
        # arena, reused batch after batch. The arrays of ``session.run`` were allocated in the
        # run threads and freed in the statistics thread, and glibc gave that memory back to
        # the kernel: thousands of page faults per batch, a tenth of the CPU time (ResNet-18).
        if not computed:
            return []
        feeds = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array)) for name, array in batch.items()}
        try:
            values = session.run_with_ort_values(computed, feeds)
        except Exception as exc:
            if not type(exc).__module__.startswith("onnxruntime"):
                raise
            # the data's shapes and types were checked against the model: its values are what the
            # model refuses (a shape tensor's, an index past a table), as the gate says it (exit 2)
            raise InvalidInputError(
                f"calibration: onnxruntime cannot run the model on a batch of the data ({_described(batch)}): "
                f"{ort_error_text(exc)}; the data's values must suit the model"
            ) from exc
        return [value.numpy() for value in values]

    def update(batch: Mapping[str, np.ndarray], outputs: list[np.ndarray], first: int) -> None:
        for name, values in zip((*fed, *computed), (*(batch[n] for n in fed), *outputs), strict=True):
            if not np.issubdtype(values.dtype, np.floating):
                continue
            tensor_stats = stats.get(name)
            if tensor_stats is None:  # created once (``setdefault`` would allocate a histogram per call)
                tensor_stats = stats[name] = new_stats(algorithm, finite_only)
            try:
                tensor_stats.update(values)
            except NonFiniteError as exc:
                raise InvalidInputError(
                    f"calibration: tensor '{name}' has NaN or Inf values for samples "
                    f"{first}..{first + _batch_len(batch) - 1}; the model overflows on them"
                ) from exc

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="calibration-stats") as updater:
        pending: deque[Future[None]] = deque()  # at most two batches' outputs wait for the updater
        for batch, outputs in _in_order(iter(batches), run, runs):
            if stats_thread:
                pending.append(updater.submit(update, batch, outputs, samples))
                if len(pending) > 1:
                    pending.popleft().result()  # in order, and its error (if any) is raised here
            else:
                update(batch, outputs, samples)
            samples += _batch_len(batch)
        while pending:
            pending.popleft().result()
    return stats, samples


def _in_order(
    batches: Iterator[Mapping[str, np.ndarray]],
    run: Callable[[Mapping[str, np.ndarray]], list[np.ndarray]],
    runs: int,
) -> Iterator[tuple[Mapping[str, np.ndarray], list[np.ndarray]]]:
    """(batch, outputs) pairs in batch order, with up to ``runs`` batches running in worker
    threads while the caller updates statistics (onnxruntime and numpy release the GIL).
    At most ``runs + 1`` batches of outputs exist at a time, so memory stays flat."""
    with ThreadPoolExecutor(max_workers=runs) as pool:
        pending: deque[tuple[Mapping[str, np.ndarray], Future[list[np.ndarray]]]] = deque()
        for batch in batches:
            pending.append((batch, pool.submit(run, batch)))
            if len(pending) > runs:
                current, future = pending.popleft()
                yield current, future.result()
        while pending:
            current, future = pending.popleft()
            yield current, future.result()


def _described(batch: Mapping[str, np.ndarray]) -> str:
    """Each input's shape, and a 1-D integer input's values (a shape tensor's, which set shapes)."""
    return ", ".join(
        f"{name} {list(array.tolist())}"
        if array.ndim == 1 and array.dtype.kind in "iu" and array.size <= 8
        else f"{name} {'x'.join(map(str, array.shape))}"
        for name, array in batch.items()
    )


def _batch_len(batch: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(batch.values())))
