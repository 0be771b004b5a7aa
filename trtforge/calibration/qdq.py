"""The Q/DQ ONNX that strongly typed TensorRT (11, RTX) builds in INT8.

Placement follows TensorRT's Q/DQ placement recommendations (developer guide, "Explicit
Quantization"), as ModelOpt's ONNX quantizer applies them:

* weighted ops (Conv, ConvTranspose, Gemm, MatMul): Q/DQ on every activation input and the
  weights (per channel), none on the output (TensorRT fuses it into the next layer);
* residual Add after a Conv: Q/DQ on the residual input only, so that TensorRT fuses
  Conv+Add(+Relu) into one INT8 kernel (a Q/DQ on the Conv's side would quantize a weighted
  op's output and split the fusion);
* any other Add of two activations (a transformer's residual Add after MatMul+bias): Q/DQ
  on both inputs, TensorRT's quantizable elementwise Add;
* AveragePool / GlobalAveragePool: Q/DQ on the input (TensorRT runs them in INT8 between DQ
  and Q);
* Concat feeding a quantized input: Q/DQ on every input with the scale of its output, so the
  concatenation runs in INT8 and TensorRT removes it;
* MaxPool and other commuting ops (Reshape, Transpose, Flatten...): none of their own,
  TensorRT moves the consumer's Q/DQ across them.

Every other input stays unquantized, one Q/DQ pair per consumer (TensorRT does not share a
pair between layers). onnxruntime's ``QDQQuantizer`` quantizes the weighted ops, fed with
trtforge's ranges (symmetric INT8, per-tensor activations, an FP32 bias: TensorRT's parser
rejects an INT32 bias); the other rules are inserted here. What stays unquantized is
converted to ``high_precision``: FP16 by default, so that layers between Q/DQ do not run in
FP32 and make the INT8 engine slower than the FP16 one.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from trtforge.errors import SpecError, did_you_mean
from trtforge.graphfiles import EXTERNAL_DATA_MIN_BYTES
from trtforge.mixedprecision import to_fp16
from trtforge.model import node_names

if TYPE_CHECKING:
    import onnx
    from onnxruntime.quantization.calibrate import TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

FP16_QDQ_OPSET = 19
"""QuantizeLinear/DequantizeLinear take FP16 scales from opset 19 on."""

QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
"""Weighted ops: Q/DQ on their activation inputs and weights, where TensorRT runs INT8 kernels."""
FUSING_OPS = ("Conv", "ConvTranspose")
"""Weighted ops into which TensorRT fuses a following elementwise Add (and activation)."""
POOLING_OPS = ("AveragePool", "GlobalAveragePool")
"""Pooling that TensorRT runs in INT8 when its input is quantized (MaxPool just commutes)."""

Rule = Literal["residual add", "elementwise add", "pooling", "concat"]


@dataclass(frozen=True)
class Site:
    """One Q/DQ pair outside the weighted ops: on input ``index`` of ``node``.

    ``tensor`` is what that input reads; ``source`` is the tensor whose range the pair uses
    (itself, except for a Concat input, which takes the Concat output's range).
    """

    node: str
    index: int
    tensor: str
    source: str
    rule: Rule


def _graph_facts(
    model: onnx.ModelProto,
) -> tuple[set[str], dict[str, onnx.NodeProto], dict[str, int]]:
    """(constant tensors, producer of each tensor, number of consumers of each tensor)."""
    constants = {init.name for init in model.graph.initializer}
    constants.update(out for node in model.graph.node if node.op_type == "Constant" for out in node.output)
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    return constants, producers, consumers


def weighted_inputs(model: onnx.ModelProto) -> list[str]:
    """Activations that feed a weighted op as data or weights (the first two inputs,
    initializers aside; a bias stays unquantized)."""
    initializers = {init.name for init in model.graph.initializer}
    names: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type in QUANTIZABLE_OPS:
            names.update((name, None) for name in node.input[:2] if name not in initializers)
    names.pop("", None)
    return list(names)


def placement(model: onnx.ModelProto) -> list[Site]:
    """The Q/DQ pairs the rules add beyond the weighted ops' inputs (see the module's doc)."""
    constants, producers, consumers = _graph_facts(model)
    sites: list[Site] = []
    for node in model.graph.node:
        if node.op_type == "Add" and len(node.input) == 2 and not constants.intersection(node.input):
            fused = [
                i
                for i, name in enumerate(node.input)
                if name in producers and producers[name].op_type in FUSING_OPS and consumers[name] == 1
            ]
            if fused:
                residual = 1 - fused[0]
                name = node.input[residual]
                sites.append(Site(node.name, residual, name, name, "residual add"))
            else:
                sites.extend(Site(node.name, i, name, name, "elementwise add") for i, name in enumerate(node.input))
        elif node.op_type in POOLING_OPS and node.input[0] not in constants:
            sites.append(Site(node.name, 0, node.input[0], node.input[0], "pooling"))
    quantized = set(weighted_inputs(model)) | {site.tensor for site in sites}
    for node in model.graph.node:
        if node.op_type == "Concat" and node.output[0] in quantized:
            sites.extend(
                Site(node.name, i, name, node.output[0], "concat")
                for i, name in enumerate(node.input)
                if name not in constants
            )
    return sites


def quantized_inputs(model: onnx.ModelProto) -> list[str]:
    """Every tensor whose range the Q/DQ graph needs: what calibration collects."""
    names = dict.fromkeys(weighted_inputs(model))
    names.update(dict.fromkeys(site.source for site in placement(model)))
    return list(names)


#: onnxruntime's session config entries that write the optimized model's initializers to a data
#: file beside it (``onnxruntime_session_options_config_keys.h``), and the size from which they do
_EXTERNAL_INITIALIZERS_FILE = "session.optimized_model_external_initializers_file_name"
_EXTERNAL_INITIALIZERS_MIN_SIZE = "session.optimized_model_external_initializers_min_size_in_bytes"
#: where a model given as bytes has its external data files (onnxruntime 1.21 on)
_EXTERNAL_INITIALIZERS_FOLDER = "session.model_external_initializers_file_folder_path"


@contextmanager
def folded_file(model_path: Path) -> Iterator[Path]:
    """The model with BatchNormalization folded into Conv, in a temporary file.

    Q/DQ placed on an unfolded graph would sit between Conv and BN and block TensorRT's
    fusion. onnxruntime's basic graph optimizations fold it (and constants): this is what
    ``quant_pre_process`` runs after its shape inference, asked for directly (a third of the
    time: no shape inference, no extra save and load of the model). The file is the
    caller's while the context lasts (calibration extends it with outputs of its own).
    The session never runs: one thread spares starting a thread pool (~20 ms, same file).

    A model whose weights live in external data files gets its folded weights in a data file
    beside the temporary one (``folded.onnx.data``): left to itself, onnxruntime writes the
    unchanged ones as references into the user's data files, by names relative to the user's
    folder, which the temporary folder does not have (and a model past protobuf's 2 GB could not
    be written inline). Whether it has any is read from the graph alone (:func:`read_onnx`,
    well under a millisecond beside the session's start).

    Placement and exclusions find nodes by name: a model with unnamed nodes is folded with each
    given its :func:`~trtforge.model.node_names` name (onnxruntime keeps names, and names a fused
    node after its first), from a copy of its graph in memory; its external data files are not
    copied (nor is anything written beside them): onnxruntime reads them in the model's folder.
    """
    import onnxruntime as ort

    from trtforge.model import external_tensors, name_nodes, read_onnx

    user_model = read_onnx(model_path)
    external = any(external_tensors(user_model))
    source: str | bytes = str(model_path)
    if any(not node.name for node in user_model.graph.node):
        import onnx

        named = onnx.load(str(model_path), load_external_data=False)
        name_nodes(named.graph)
        source = named.SerializeToString()
        del named
    with tempfile.TemporaryDirectory(prefix="trtforge-calib-") as tmp:
        folded = Path(tmp) / "folded.onnx"
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        options.log_severity_level = 4  # fatal only: failures reach the caller as exceptions, not ANSI log lines
        if external:
            options.add_session_config_entry(_EXTERNAL_INITIALIZERS_FILE, f"{folded.name}.data")
            options.add_session_config_entry(_EXTERNAL_INITIALIZERS_MIN_SIZE, str(EXTERNAL_DATA_MIN_BYTES))
            if isinstance(source, bytes):  # no path to find the data files by: the model's folder holds them
                options.add_session_config_entry(_EXTERNAL_INITIALIZERS_FOLDER, str(model_path.parent))
        ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        yield folded


def fold_batchnorm(model_path: Path) -> onnx.ModelProto:
    """The model with BatchNormalization folded into Conv (see ``folded_file``), its weights read in."""
    import onnx

    with folded_file(model_path) as folded:
        return onnx.load(str(folded))


def check_exclude(exclude: Sequence[str], model: onnx.ModelProto, where: Sequence[str]) -> None:
    """Every excluded name is a node of the user's model, by :func:`~trtforge.model.node_names`;
    ``where[i]`` locates entry ``i``."""
    names = node_names(model.graph)
    known = set(names)
    for index, name in enumerate(exclude):
        if name not in known:
            raise SpecError(
                f"{where[index]}: calibration.exclude names node '{name}', which the model does "
                f"not have{did_you_mean(name, names)}"
            )


def exclusion_yaml(excluded: Sequence[str]) -> str:
    """The spec lines that apply the chosen exclusions, to paste as they are."""
    return spec_lines("calibration", "exclude", excluded)


def spec_lines(section: str, key: str, names: Sequence[str]) -> str:
    """``section.key`` set to the node ``names``, as spec lines to paste as they are (the
    ``calibration.exclude`` and ``fp16.keep_fp32`` lists the diagnosis gives)."""
    return f"{section}:\n  {key}: [" + ", ".join(map(_flow_item, names)) + "]\n"


def _flow_item(name: str) -> str:
    """``name`` as an item of a YAML flow list: bare when it is a plain path of words that YAML
    reads back as that string, else double-quoted (``106`` and ``1e3`` read as numbers, ``true``
    as a boolean, ``a # b`` holds a comment, ``a, b`` two items)."""
    import yaml

    bare = re.fullmatch(r"[^\W\d][\w./-]*|/[\w./-]*", name) is not None and yaml.safe_load(f"[{name}]") == [name]
    return name if bare else json.dumps(name, ensure_ascii=False)


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
    """Weighted nodes with an activation input that has no range (left unquantized)."""
    needed = set(weighted_inputs(model))
    return [
        node.name
        for node in model.graph.node
        if node.op_type in QUANTIZABLE_OPS and any(name in needed and name not in amax for name in node.input[:2])
    ]


def weighted_quantizer(model: onnx.ModelProto, ranges: TensorsData, exclude: Sequence[str]) -> QDQQuantizer:
    """onnxruntime's QDQQuantizer on the weighted ops, with the options TensorRT accepts: symmetric
    INT8, per-channel weights, no quantized bias (the parser rejects an int32 bias), one Q/DQ pair
    per consumer and never on a weighted op's output."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    return QDQQuantizer(
        model,
        per_channel=True,
        reduce_range=False,
        weight_qType=QuantType.QInt8.tensor_type,
        activation_qType=QuantType.QInt8.tensor_type,
        tensors_range=ranges,
        nodes_to_quantize=[],
        nodes_to_exclude=list(exclude),
        op_types_to_quantize=list(QUANTIZABLE_OPS),
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "DedicatedQDQPair": True,
            "OpTypesToExcludeOutputQuantization": list(QUANTIZABLE_OPS),
        },
    )


def quantize(
    folded: onnx.ModelProto,
    amax: Mapping[str, float],
    exclude: Sequence[str],
    high_precision: str,
) -> onnx.ModelProto:
    """Q/DQ model from the BN-folded model and per-tensor amax values."""
    import onnx
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.onnx_model import ONNXModel

    from trtforge.model import upgraded

    opset = next(op.version for op in folded.opset_import if op.domain in ("", "ai.onnx"))
    if high_precision == "fp16" and opset < FP16_QDQ_OPSET:
        model = upgraded(folded, FP16_QDQ_OPSET)
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
    quantizer = weighted_quantizer(model, ranges, [*exclude, *nodes_without_ranges(model, amax)])
    quantized = quantizer.quantize_model()
    skipped = set(quantizer.nodes_to_exclude)
    sites = [site for site in placement(folded) if site.node not in skipped and site.source in amax]
    keep = {(site.node, site.index) for site in sites}
    keep.update(
        (node.name, index)
        for node in folded.graph.node
        if node.op_type in QUANTIZABLE_OPS and node.name not in skipped
        for index in (0, 1)
    )
    _keep_unplaced_inputs_float(quantized, keep)
    _insert_pairs(quantized, sites, amax)
    if high_precision == "fp16":
        _fp16_exact_weight_scales(quantized)
        quantized = to_fp16(quantized)
    # The quantizer and the FP16 converter append their nodes at the end of the graph;
    # ONNX requires topological order (TensorRT's parser tolerates it, onnx.checker does not).
    graph = ONNXModel(quantized)
    graph.topological_sort()
    return graph.model


def _fp16_exact_weight_scales(model: onnx.ModelProto) -> None:
    """Give each weight's DequantizeLinear a scale FP16 holds exactly, and quantize its INT8 weights
    again by it, before the graph goes to FP16. The converter rounds a scale below FP16's normal
    range to a subnormal or to zero: a channel of near-zero weights (max |w| 1.3e-6, scale 1e-8)
    dequantized 5.8 times too large. The scale is rounded up, so no weight leaves the INT8 range,
    and the weights shrink by the ratio: a no-op where FP16 holds the scale to within a part in 2048."""
    from onnx import helper, numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or not {node.input[0], node.input[1]} <= initializers.keys():
            continue
        weights = numpy_helper.to_array(initializers[node.input[0]])
        scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
        exact = _fp16_at_least(scale).astype(np.float32)
        if weights.dtype != np.int8 or np.array_equal(exact, scale):
            continue
        ratio = np.divide(scale, exact, out=np.ones_like(scale), where=exact > 0)
        if ratio.ndim == 1 and ratio.size > 1:  # per channel, along the node's axis
            axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
            ratio = ratio.reshape([-1 if dim == axis % weights.ndim else 1 for dim in range(weights.ndim)])
        requantized = np.clip(np.rint(weights.astype(np.float32) * ratio), -127, 127).astype(np.int8)
        initializers[node.input[0]].CopyFrom(numpy_helper.from_array(requantized, node.input[0]))
        initializers[node.input[1]].CopyFrom(numpy_helper.from_array(exact, node.input[1]))


def _fp16_at_least(values: np.ndarray) -> np.ndarray:
    """The smallest FP16 value at least each (positive) value: a scale rounded up, never to zero."""
    rounded = values.astype(np.float16)
    low = rounded.astype(np.float32) < values
    rounded[low] = np.nextafter(rounded[low], np.float16(np.inf))
    return rounded


def _keep_unplaced_inputs_float(model: onnx.ModelProto, keep: set[tuple[str, int]]) -> None:
    """Reconnect every input the rules do not place to its float tensor.

    onnxruntime shares one Q/DQ pair among all consumers of a tensor that only one quantized
    node reads, so a Softmax or an Add beside a Conv would read the Conv's DQ output. Only
    the inputs in ``keep`` (node name, input index: the weighted ops' data and weights, the
    placed sites) keep a DQ; pairs left without consumers are removed.
    """
    from onnxruntime.quantization.onnx_model import ONNXModel

    producers = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for index, name in enumerate(node.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear" or (node.name, index) in keep:
                continue
            node.input[index] = q.input[0]
    read = {name for node in model.graph.node for name in node.input} | {out.name for out in model.graph.output}
    dead = [node for node in model.graph.node if node.op_type == "DequantizeLinear" and node.output[0] not in read]
    for node in dead:
        model.graph.node.remove(node)
    read = {name for node in model.graph.node for name in node.input}
    dead = [node for node in model.graph.node if node.op_type == "QuantizeLinear" and node.output[0] not in read]
    for node in dead:
        model.graph.node.remove(node)
    ONNXModel(model).remove_unused_constant()


def _insert_pairs(model: onnx.ModelProto, sites: Sequence[Site], amax: Mapping[str, float]) -> None:
    """A dedicated symmetric INT8 Q/DQ pair on each site's input, scaled by its source's range."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = {node.name: node for node in model.graph.node}
    for site in sites:
        prefix = f"{site.node}/input{site.index}"
        scale = np.array(amax[site.source] / 127.0, dtype=np.float32)
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(scale, f"{prefix}_scale"),
                helper.make_tensor(f"{prefix}_zero_point", TensorProto.INT8, [], [0]),
            ]
        )
        model.graph.node.extend(
            [
                helper.make_node(
                    "QuantizeLinear",
                    [site.tensor, f"{prefix}_scale", f"{prefix}_zero_point"],
                    [f"{prefix}_quantized"],
                    name=f"{prefix}_QuantizeLinear",
                ),
                helper.make_node(
                    "DequantizeLinear",
                    [f"{prefix}_quantized", f"{prefix}_scale", f"{prefix}_zero_point"],
                    [f"{prefix}_dequantized"],
                    name=f"{prefix}_DequantizeLinear",
                ),
            ]
        )
        nodes[site.node].input[site.index] = f"{prefix}_dequantized"
