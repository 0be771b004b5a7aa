"""Small ONNX models for the calibration tests, built with onnx.helper and seeded weights.

Kept apart from other test helpers (models_calib, not models) so that engineers working on
other issues never collide with this file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """input [batch, 3, 16, 16] -> Conv-BN-ReLU, residual Conv-BN-Add-ReLU, pool, MatMul+Add.

    The BatchNormalization nodes are left in on purpose: calibration must fold them into the
    convolutions before placing Q/DQ. MatMul+Add (not Gemm) covers the MatMul path.
    """
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []

    def conv_bn(prefix: str, cin: int, cout: int) -> None:
        inits.extend(
            [
                _init(f"{prefix}.w", rng.normal(0, np.sqrt(2 / (cin * 9)), (cout, cin, 3, 3))),
                _init(f"{prefix}.b", rng.normal(0, 0.1, cout)),
                _init(f"{prefix}.gamma", rng.uniform(0.5, 1.5, cout)),
                _init(f"{prefix}.beta", rng.normal(0, 0.1, cout)),
                _init(f"{prefix}.mean", rng.normal(0, 0.1, cout)),
                _init(f"{prefix}.var", rng.uniform(0.5, 1.5, cout)),
            ]
        )

    conv_bn("stem", 3, 8)
    conv_bn("block", 8, 8)
    inits.append(_init("head.w", rng.normal(0, 0.3, (8, 10))))
    inits.append(_init("head.b", rng.normal(0, 0.1, 10)))

    def bn(prefix: str, x: str, y: str) -> onnx.NodeProto:
        names = [f"{prefix}.{p}" for p in ("gamma", "beta", "mean", "var")]
        return helper.make_node("BatchNormalization", [x, *names], [y], name=f"{prefix}/BN")

    nodes = [
        helper.make_node(
            "Conv",
            ["input", "stem.w", "stem.b"],
            ["stem_conv"],
            name="stem/Conv",
            pads=[1, 1, 1, 1],
        ),
        bn("stem", "stem_conv", "stem_bn"),
        helper.make_node("Relu", ["stem_bn"], ["stem_relu"], name="stem/Relu"),
        helper.make_node(
            "Conv",
            ["stem_relu", "block.w", "block.b"],
            ["block_conv"],
            name="block/Conv",
            pads=[1, 1, 1, 1],
        ),
        bn("block", "block_conv", "block_bn"),
        helper.make_node("Add", ["block_bn", "stem_relu"], ["block_add"], name="block/Add"),
        helper.make_node("Relu", ["block_add"], ["block_relu"], name="block/Relu"),
        helper.make_node("GlobalAveragePool", ["block_relu"], ["pool"], name="head/Pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="head/Flatten"),
        helper.make_node("MatMul", ["flat", "head.w"], ["head_mm"], name="head/MatMul"),
        helper.make_node("Add", ["head_mm", "head.b"], ["logits"], name="head/Add"),
    ]
    graph = helper.make_graph(
        nodes,
        "small_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def two_input_model(seed: int = 0) -> onnx.ModelProto:
    """inputs "a" [batch, 4] and "b" [batch, 4] -> MatMul(a, W) + b -> "out" [batch, 4]."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("MatMul", ["a", "w"], ["mm"], name="MatMul"),
        helper.make_node("Add", ["mm", "b"], ["out"], name="Add"),
    ]
    graph = helper.make_graph(
        nodes,
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 4]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])],
        [_init("w", rng.normal(0, 0.5, (4, 4)))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def write_samples(folder: Path, shape: tuple[int, ...], files: int, seed: int = 0) -> list[Path]:
    """``files`` .npy batches of seeded float32 normal data, named so that sorting keeps order."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(files):
        path = folder / f"batch_{index:03d}.npy"
        np.save(path, rng.normal(0, 1, shape).astype(np.float32))
        paths.append(path)
    return paths
