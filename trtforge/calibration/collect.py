"""Run the FP32 model over the calibration batches and stream activation statistics.

onnxruntime's own calibrators keep every intermediate tensor of every batch in memory and
histogram them at the end. Here the tensors to calibrate become extra graph outputs, and each
batch's outputs update fixed-size per-tensor statistics and are dropped at once: memory stays
flat however many samples there are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from trtforge.calibration.histogram import Algorithm, NonFiniteError, TensorStats, new_stats
from trtforge.errors import InvalidInputError

if TYPE_CHECKING:
    import onnx

QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
"""Ops whose activation inputs get Q/DQ: where TensorRT runs INT8 kernels and fuses Q/DQ."""


def _typed(graph: onnx.GraphProto) -> dict[str, int]:
    return {
        value.name: value.type.tensor_type.elem_type
        for value in (*graph.input, *graph.value_info, *graph.output)
        if value.type.tensor_type.elem_type
    }


def float_tensors(model: onnx.ModelProto) -> dict[str, int]:
    """Name -> ONNX element type of every FLOAT/FLOAT16 activation.

    Types come from the model's value_info; shape inference runs only when some node output
    has none (a folded model from ``quant_pre_process`` is already inferred, and inference
    costs a serialization of the whole model).
    """
    import onnx

    types = _typed(model.graph)
    if any(name not in types for node in model.graph.node for name in node.output if name):
        types = _typed(onnx.shape_inference.infer_shapes(model).graph)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    initializers = {init.name for init in model.graph.initializer}
    return {
        name: elem_type
        for name, elem_type in types.items()
        if elem_type in floats and name not in initializers
    }


def quantized_inputs(model: onnx.ModelProto, types: Mapping[str, int]) -> list[str]:
    """Activations that feed Conv/ConvTranspose/Gemm/MatMul as data or weights (the first two
    inputs; a bias stays unquantized): what the Q/DQ quantizer needs."""
    names: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type in QUANTIZABLE_OPS:
            for name in node.input[:2]:
                if name in types:
                    names[name] = None
    return list(names)


def all_activations(model: onnx.ModelProto, types: Mapping[str, int]) -> list[str]:
    """Every float activation (graph inputs and node outputs): TensorRT's native calibrator
    asks for a scale for each tensor it may run in INT8."""
    names: dict[str, None] = {
        tensor.name: None for tensor in model.graph.input if tensor.name in types
    }
    for node in model.graph.node:
        if node.op_type != "Constant":
            for name in node.output:
                if name in types:
                    names[name] = None
    return list(names)


def _exposed(model: onnx.ModelProto, types: Mapping[str, int], names: Iterable[str]) -> bytes:
    """The model's bytes with ``names`` added as graph outputs (so one run returns them all).

    The outputs are appended, serialized and removed again: copying a large model first
    would cost more than the serialization itself.
    """
    import onnx

    outputs = model.graph.output
    count = len(outputs)
    existing = {output.name for output in outputs}
    outputs.extend(
        onnx.helper.make_tensor_value_info(name, types[name], None)
        for name in names
        if name not in existing
    )
    try:
        return model.SerializeToString()
    finally:
        del outputs[count:]


def collect(
    model: onnx.ModelProto,
    types: Mapping[str, int],
    tensors: list[str],
    batches: Iterable[Mapping[str, np.ndarray]],
    algorithm: Algorithm,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, TensorStats], int]:
    """Per-tensor statistics over all batches, and the number of samples seen.

    Graph inputs are read from the batch itself (onnxruntime mishandles outputs that are also
    inputs); every other tensor is an extra output of one onnxruntime CPU session.
    """
    import onnxruntime as ort

    input_names = {tensor.name for tensor in model.graph.input}
    fed = [name for name in tensors if name in input_names]
    computed = [name for name in tensors if name not in input_names]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        _exposed(model, types, computed), options, providers=["CPUExecutionProvider"]
    )
    stats = {name: new_stats(algorithm) for name in tensors}
    samples = 0

    def run(batch: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return session.run(computed, dict(batch)) if computed else []

    for batch, outputs in _one_ahead(iter(batches), run):
        for name, values in zip(
            (*fed, *computed), (*(batch[n] for n in fed), *outputs), strict=True
        ):
            try:
                stats[name].update(values)
            except NonFiniteError as exc:
                raise InvalidInputError(
                    f"calibration: tensor '{name}' has NaN or Inf values for samples "
                    f"{samples}..{samples + _batch_len(batch) - 1}; the model overflows on them"
                ) from exc
        samples += _batch_len(batch)
        if progress is not None:
            progress(samples)
    return stats, samples


def _one_ahead(
    batches: Iterator[Mapping[str, np.ndarray]],
    run: Callable[[Mapping[str, np.ndarray]], list[np.ndarray]],
) -> Iterator[tuple[Mapping[str, np.ndarray], list[np.ndarray]]]:
    """(batch, outputs) pairs, with onnxruntime already running the next batch in a worker
    thread while the caller updates statistics (both release the GIL). At most two batches
    of outputs exist at a time, so memory stays flat."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        batch = next(batches, None)
        future = pool.submit(run, batch) if batch is not None else None
        while future is not None and batch is not None:
            outputs = future.result()
            current, batch = batch, next(batches, None)
            future = pool.submit(run, batch) if batch is not None else None
            yield current, outputs


def _batch_len(batch: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(batch.values())))
