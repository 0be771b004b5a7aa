"""Q/DQ placement by TensorRT's rules: residual Add, pooling, Concat, and nothing elsewhere.

Each model is a small residual block built with onnx.helper (BatchNormalization left in, as
calibration folds it first). The placement tests quantize with fixed ranges; the build tests
run ``trtforge build`` for real: calibration, Q/DQ graph, TensorRT-RTX build for SM 8.6 and
the accuracy gate.
"""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import onnx
import pytest
from clitools import cli
from models import need_rtx
from onnx import TensorProto, helper, numpy_helper

from trtforge.calibration import qdq
from trtforge.model import name_nodes, node_names

SHAPE = (3, 16, 16)


def residual_block(*, projection: bool = False, maxpool: bool = False, concat: bool = False) -> onnx.ModelProto:
    """input -> Conv-BN-Relu [-> MaxPool] -> Conv-BN-Relu -> Conv-BN -> Add(skip) -> Relu
    -> (two Convs -> Concat -> Conv | * Sigmoid(block input)) -> GlobalAveragePool -> Gemm -> logits.

    ``projection``: the skip is a 1x1 Conv-BN of the block input (ResNet's downsample
    shortcut) instead of the block input itself. Without ``concat``, a Sigmoid reads the block
    input beside a Conv: a consumer the rules leave in float.
    """
    rng = np.random.default_rng(0)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def conv(name: str, x: str, cin: int, cout: int, k: int = 3, bn: bool = True) -> str:
        inits.append(
            numpy_helper.from_array(
                rng.normal(0, np.sqrt(2 / (cin * k * k)), (cout, cin, k, k)).astype(np.float32), f"{name}.w"
            )
        )
        inits.append(numpy_helper.from_array(rng.normal(0, 0.1, cout).astype(np.float32), f"{name}.b"))
        pads = [k // 2] * 4
        nodes.append(
            helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.out"], name=f"{name}/Conv", pads=pads)
        )
        if not bn:
            return f"{name}.out"
        stats = {
            "gamma": rng.uniform(0.5, 1.5, cout),
            "beta": rng.normal(0, 0.1, cout),
            "mean": rng.normal(0, 0.1, cout),
            "var": rng.uniform(0.5, 1.5, cout),
        }
        inits.extend(numpy_helper.from_array(v.astype(np.float32), f"{name}.{k_}") for k_, v in stats.items())
        nodes.append(
            helper.make_node(
                "BatchNormalization",
                [f"{name}.out", *(f"{name}.{k_}" for k_ in stats)],
                [f"{name}.bn"],
                name=f"{name}/BN",
            )
        )
        return f"{name}.bn"

    def op(kind: str, inputs: list[str], name: str, **attrs: object) -> str:
        nodes.append(helper.make_node(kind, inputs, [f"{name}.out"], name=name, **attrs))
        return f"{name}.out"

    x = op("Relu", [conv("stem", "input", 3, 8)], "stem/Relu")
    if maxpool:
        x = op("MaxPool", [x], "stem/MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    branch = conv("block.conv2", op("Relu", [conv("block.conv1", x, 8, 8)], "block/Relu1"), 8, 8)
    skip = conv("block.down", x, 8, 8, k=1) if projection else x
    y = op("Relu", [op("Add", [branch, skip], "block/Add")], "block/Relu2")
    if concat:
        left, right = conv("cat.left", y, 8, 4, k=1, bn=False), conv("cat.right", y, 8, 4, bn=False)
        y = conv("cat.fuse", op("Concat", [left, right], "cat/Concat", axis=1), 8, 8, k=1, bn=False)
    else:
        y = op("Mul", [y, op("Sigmoid", [x], "gate/Sigmoid")], "gate/Mul")
    pooled = op("Flatten", [op("GlobalAveragePool", [y], "head/Pool")], "head/Flatten")
    inits.append(numpy_helper.from_array(rng.normal(0, 0.3, (10, 8)).astype(np.float32), "head.w"))
    nodes.append(helper.make_node("Gemm", [pooled, "head.w"], ["logits"], name="head/Gemm", transB=1))
    graph = helper.make_graph(
        nodes,
        "residual_block",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", models.OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def placed(model: onnx.ModelProto, tmp_path: Path, amax: float = 4.0) -> onnx.ModelProto:
    """The Q/DQ graph of ``model`` with every needed range set to ``amax`` (fp32 elsewhere)."""
    folded = qdq.fold_batchnorm(models.save(model, tmp_path / "model.onnx"))
    ranges = dict.fromkeys(qdq.quantized_inputs(folded), amax)
    quantized = qdq.quantize(folded, ranges, [], "fp32")
    onnx.checker.check_model(quantized)
    return quantized


def dq_scale(model: onnx.ModelProto, node_name: str, index: int) -> float | None:
    """The scale of the DQ feeding input ``index`` of ``node_name``; None when it reads a float tensor."""
    producers = {out: node for node in model.graph.node for out in node.output}
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    node = next(node for node in model.graph.node if node.name == node_name)
    producer = producers.get(node.input[index])
    if producer is None or producer.op_type != "DequantizeLinear":
        return None
    return float(initializers[producer.input[1]])


@pytest.mark.parametrize("projection", [False, True], ids=["identity", "projection"])
def test_residual_add_quantizes_its_skip_input_not_the_conv_side(tmp_path: Path, projection: bool) -> None:
    model = placed(residual_block(projection=projection), tmp_path)
    assert dq_scale(model, "block/Add", 1) == pytest.approx(4.0 / 127)  # the residual input
    # The Conv side stays float: TensorRT fuses Conv+Add(+Relu) and a Q/DQ there would
    # quantize a weighted op's output and split the fusion.
    assert dq_scale(model, "block/Add", 0) is None


def test_pooling_input_is_quantized_and_unplaced_consumers_read_float(tmp_path: Path) -> None:
    model = placed(residual_block(), tmp_path)
    assert dq_scale(model, "head/Pool", 0) is not None
    # stem/Relu's output feeds block.conv1 (quantized), the Add's skip (placed) and the
    # Sigmoid: onnxruntime would hand the Sigmoid the shared DQ output; the rules keep it float.
    assert dq_scale(model, "block.conv1/Conv", 0) is not None
    assert dq_scale(model, "gate/Sigmoid", 0) is None
    assert dq_scale(model, "gate/Mul", 0) is None


def test_maxpool_has_no_pair_of_its_own(tmp_path: Path) -> None:
    model = placed(residual_block(maxpool=True), tmp_path)
    # MaxPool commutes with Q/DQ: TensorRT moves its consumers' Q before it.
    assert dq_scale(model, "stem/MaxPool", 0) is None
    assert dq_scale(model, "block.conv1/Conv", 0) is not None
    assert dq_scale(model, "block/Add", 1) is not None


def test_concat_inputs_take_the_scale_of_its_quantized_output(tmp_path: Path) -> None:
    model = residual_block(concat=True)
    folded = qdq.fold_batchnorm(models.save(model, tmp_path / "model.onnx"))
    ranges = dict.fromkeys(qdq.quantized_inputs(folded), 2.0) | {"cat/Concat.out": 6.0}
    quantized = qdq.quantize(folded, ranges, [], "fp32")
    expected = pytest.approx(6.0 / 127)
    assert dq_scale(quantized, "cat.fuse/Conv", 0) == expected
    assert [dq_scale(quantized, "cat/Concat", i) for i in range(2)] == [expected, expected]
    sites = {(site.node, site.rule) for site in qdq.placement(folded)}
    assert sites >= {("block/Add", "residual add"), ("head/Pool", "pooling"), ("cat/Concat", "concat")}


def test_excluded_nodes_get_no_placed_pair(tmp_path: Path) -> None:
    folded = qdq.fold_batchnorm(models.save(residual_block(), tmp_path / "model.onnx"))
    ranges = dict.fromkeys(qdq.quantized_inputs(folded), 4.0)
    quantized = qdq.quantize(folded, ranges, ["block/Add", "head/Pool"], "fp32")
    assert dq_scale(quantized, "block/Add", 1) is None
    assert dq_scale(quantized, "head/Pool", 0) is None


def test_unnamed_nodes_are_placed_as_if_named_and_excluded_by_their_given_names(tmp_path: Path) -> None:
    """Every unnamed node was node "" to the placement: pairs went to the wrong nodes (onnxruntime
    then refused the graph), and no exclusion could name one. Folded with ``node_names``' names
    given, the Q/DQ graph is that of the model named so, and ``Add_8`` excludes the residual Add."""
    unnamed = residual_block(concat=True)
    for node in unnamed.graph.node:
        node.name = ""
    named = onnx.ModelProto()
    named.CopyFrom(unnamed)
    name_nodes(named.graph)
    folders = [tmp_path / kind for kind in ("unnamed", "named", "excluded")]
    for folder in folders:
        folder.mkdir()
    quantized = placed(unnamed, folders[0])
    assert quantized.graph == placed(named, folders[1]).graph
    (add,) = (
        name for node, name in zip(unnamed.graph.node, node_names(unnamed.graph), strict=True) if node.op_type == "Add"
    )
    assert add == "Add_8" and dq_scale(quantized, add, 1) == pytest.approx(4.0 / 127)
    folded = qdq.fold_batchnorm(models.save(unnamed, folders[2] / "model.onnx"))
    ranges = dict.fromkeys(qdq.quantized_inputs(folded), 4.0)
    assert dq_scale(qdq.quantize(folded, ranges, qdq.map_exclude([add], folded), "fp32"), add, 1) is None


def transformer_residual() -> onnx.ModelProto:
    """input [batch, 8, 16] -> MatMul+bias -> Add(input) -> LayerNormalization -> MatMul -> output:
    a transformer's residual Add, with no Conv to fuse into."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.25, shape).astype(np.float32), name)
        for name, shape in (("w1", (16, 16)), ("b1", (16,)), ("ln.g", (16,)), ("ln.b", (16,)), ("w2", (16, 16)))
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["mm"], name="fc1/MatMul"),
        helper.make_node("Add", ["mm", "b1"], ["fc1"], name="fc1/Add"),
        helper.make_node("Add", ["fc1", "input"], ["res"], name="residual/Add"),
        helper.make_node("LayerNormalization", ["res", "ln.g", "ln.b"], ["ln"], name="ln", axis=-1),
        helper.make_node("MatMul", ["ln", "w2"], ["output"], name="fc2/MatMul"),
    ]
    graph = helper.make_graph(
        nodes,
        "transformer_residual",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 8, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 8, 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", models.OPSET)])
    model.ir_version = 8
    return model


def test_add_of_two_activations_without_a_conv_quantizes_both_inputs(tmp_path: Path) -> None:
    model = placed(transformer_residual(), tmp_path)
    assert dq_scale(model, "residual/Add", 0) is not None
    assert dq_scale(model, "residual/Add", 1) is not None
    assert dq_scale(model, "ln", 0) is None


def build(tmp_path: Path, model: onnx.ModelProto, shape: tuple[int, ...]) -> onnx.ModelProto:
    """``trtforge build`` of ``model`` in INT8 for SM 8.6 (gate included); its Q/DQ graph."""
    need_rtx()
    models.save(model, tmp_path / "model.onnx")
    models.write_samples(tmp_path / "data", (16, *shape), files=4)
    dims = ", ".join(map(str, shape))
    (tmp_path / "spec.yaml").write_text(
        "name: block\nmodel: model.onnx\nprecision: int8\ntargets: ['8.6']\n"
        f"profiles:\n  - input: {{min: [1, {dims}], opt: [8, {dims}], max: [16, {dims}]}}\n"
        "calibration: {data: data/*.npy, batch_size: 16, algorithm: minmax}\n"
        "accuracy: {data: data/*.npy, tolerances: {'*': {cosine_min: 0.98}}}\n",
        encoding="utf-8",
    )
    code, _, err = cli("build", tmp_path / "spec.yaml", "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache")
    assert code == 0, err[-2000:]
    assert list((tmp_path / "out").glob("block-int8-*.engine"))
    [qdq_file] = (tmp_path / "cache").rglob("qdq-*.onnx")
    return onnx.load(str(qdq_file))


@pytest.mark.parametrize(
    "variant",
    [{"projection": True}, {"maxpool": True}, {"concat": True, "maxpool": True}],
    ids=["projection", "maxpool", "concat"],
)
def test_placed_graph_builds_with_tensorrt_rtx_and_passes_the_gate(tmp_path: Path, variant: dict[str, bool]) -> None:
    quantized = build(tmp_path, residual_block(**variant), SHAPE)
    assert dq_scale(quantized, "block/Add", 1) is not None
    assert dq_scale(quantized, "head/Pool", 0) is not None


def test_transformer_residual_builds_with_tensorrt_rtx_and_passes_the_gate(tmp_path: Path) -> None:
    quantized = build(tmp_path, transformer_residual(), (8, 16))
    assert dq_scale(quantized, "residual/Add", 0) is not None
    assert dq_scale(quantized, "residual/Add", 1) is not None


def test_fp16_graph_dequantizes_near_zero_weight_channels_to_their_values(tmp_path: Path) -> None:
    """A weight scale below FP16's normal range was rounded to a subnormal by the FP16 conversion
    after the weights were quantized: a channel with max |w| ~1e-6 came back 5.8x too large. Each
    channel's dequantized weights stay within half a quantization step of the real ones."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(8, 5)).astype(np.float32)
    weights[:, 1] = 0.0  # a dead channel
    weights[:, 2] *= 1e-6  # scale ~1e-8: under FP16's smallest subnormal
    weights[:, 3] *= 1e-3  # scale ~1e-5: an FP16 subnormal
    weights[:, 4] *= 1e3  # an ordinary large one
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        "near_zero",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", models.OPSET)])
    model.ir_version = 8
    folded = qdq.fold_batchnorm(models.save(model, tmp_path / "model.onnx"))
    quantized = qdq.quantize(folded, dict.fromkeys(qdq.quantized_inputs(folded), 4.0), [], "fp16")
    initializers = {init.name: numpy_helper.to_array(init) for init in quantized.graph.initializer}
    producers = {out: node for node in quantized.graph.node for out in node.output}
    matmul = next(node for node in quantized.graph.node if node.op_type == "MatMul")
    dq = producers[matmul.input[1]]
    codes, scale = initializers[dq.input[0]], initializers[dq.input[1]]
    assert codes.dtype == np.int8 and scale.dtype == np.float16
    dequantized = codes.astype(np.float32) * scale.astype(np.float32)
    error = np.abs(dequantized - weights)
    assert np.all(error <= scale.astype(np.float32))  # within one step of the FP16 scale (was 5.8x off)
    ordinary = [0, 4]  # scales FP16 holds: quantized once, within half a step (and FP16's rounding)
    assert np.all(error[:, ordinary] <= scale[ordinary].astype(np.float32) * (0.5 + 2.0**-10))
