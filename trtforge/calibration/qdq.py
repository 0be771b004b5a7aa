"""The Q/DQ ONNX that strongly typed TensorRT (11, RTX) builds in INT8.

onnxruntime's ``QDQQuantizer`` does the graph work, fed with trtforge's ranges: symmetric
INT8, per-channel weights, per-tensor activations, Q/DQ on the activation inputs of
Conv/ConvTranspose/Gemm/MatMul (none on their outputs, which TensorRT fuses into the next
layer), one Q/DQ pair per consumer (TensorRT does not share a pair between layers) and an
FP32 bias (TensorRT's parser rejects an INT32 bias). What stays unquantized is converted to
``high_precision``: FP16 by default, so that layers between Q/DQ do not run in FP32 and make
the INT8 engine slower than the FP16 one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trtforge.calibration.collect import QUANTIZABLE_OPS, quantized_inputs
from trtforge.errors import SpecError, did_you_mean

if TYPE_CHECKING:
    import onnx

FP16_QDQ_OPSET = 19
"""QuantizeLinear/DequantizeLinear take FP16 scales from opset 19 on."""


def fold_batchnorm(model_path: Path) -> onnx.ModelProto:
    """The model with BatchNormalization folded into Conv.

    Q/DQ placed on an unfolded graph would sit between Conv and BN and block TensorRT's
    fusion. onnxruntime's basic graph optimizations fold it (and constants): this is what
    ``quant_pre_process`` runs after its shape inference, asked for directly (a third of the
    time: no shape inference, no extra save and load of the model).
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="trtforge-calib-") as tmp:
        folded = Path(tmp) / "folded.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        options.log_severity_level = 3
        ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        return onnx.load(str(folded))


def check_exclude(exclude: Sequence[str], model: onnx.ModelProto, where: Sequence[str]) -> None:
    """Every excluded name is a node of the user's model; ``where[i]`` locates entry ``i``."""
    names = [node.name for node in model.graph.node]
    known = set(names)
    for index, name in enumerate(exclude):
        if name not in known:
            raise SpecError(
                f"{where[index]}: calibration.exclude names node '{name}', which the model does "
                f"not have{did_you_mean(name, names)}"
            )


def map_exclude(exclude: Sequence[str], folded: onnx.ModelProto) -> list[str]:
    """The user's excluded node names, translated to the folded graph.

    onnxruntime keeps node names when folding, except that a fused node is named
    ``<first node>/<fusion>`` (MatMul+Add -> ``head/MatMul/MatMulAddFusion``); a name that is
    gone without such a successor (a folded BatchNormalization) had nothing to quantize.
    """
    names = [node.name for node in folded.graph.node]
    mapped: list[str] = []
    for name in exclude:
        if name in names:
            mapped.append(name)
        else:
            mapped.extend(node for node in names if node.startswith(f"{name}/"))
    return mapped


def nodes_without_ranges(model: onnx.ModelProto, amax: Mapping[str, float]) -> list[str]:
    """Quantizable nodes with an activation input that has no range (left unquantized)."""
    needed = set(quantized_inputs(model))
    return [
        node.name
        for node in model.graph.node
        if node.op_type in QUANTIZABLE_OPS and any(name in needed and name not in amax for name in node.input[:2])
    ]


def quantize(
    folded: onnx.ModelProto,
    amax: Mapping[str, float],
    exclude: Sequence[str],
    high_precision: str,
) -> onnx.ModelProto:
    """Q/DQ model from the BN-folded model and per-tensor amax values."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.onnx_model import ONNXModel
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    from trtforge.precision.graphs import to_fp16

    opset = next(op.version for op in folded.opset_import if op.domain in ("", "ai.onnx"))
    if high_precision == "fp16" and opset < FP16_QDQ_OPSET:
        model = onnx.version_converter.convert_version(folded, FP16_QDQ_OPSET)
    else:  # the quantizer edits its model in place
        model = onnx.ModelProto()
        model.CopyFrom(folded)
    ranges = TensorsData(
        # The method is a label only; the quantizer uses the ranges as given.
        CalibrationMethod.MinMax,
        {
            name: TensorData(lowest=np.array(-value, dtype=np.float32), highest=np.array(value, dtype=np.float32))
            for name, value in amax.items()
        },
    )
    quantizer = QDQQuantizer(
        model,
        per_channel=True,
        reduce_range=False,
        weight_qType=QuantType.QInt8.tensor_type,
        activation_qType=QuantType.QInt8.tensor_type,
        tensors_range=ranges,
        nodes_to_quantize=[],
        nodes_to_exclude=[*exclude, *nodes_without_ranges(model, amax)],
        op_types_to_quantize=list(QUANTIZABLE_OPS),
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "DedicatedQDQPair": True,
            "OpTypesToExcludeOutputQuantization": list(QUANTIZABLE_OPS),
        },
    )
    quantized = quantizer.quantize_model()
    if high_precision == "fp16":
        quantized = to_fp16(quantized)
    # The quantizer and the FP16 converter append their nodes at the end of the graph;
    # ONNX requires topological order (TensorRT's parser tolerates it, onnx.checker does not).
    graph = ONNXModel(quantized)
    graph.topological_sort()
    return graph.model
