"""Small ONNX models and data built in code for the tests (seeded, a few KB each)."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtforge.environment import detect_gpus
from trtforge.tags import ComputeCapability, EngineTag, Platform, artifact_stem

OPSET = 17


def _save(graph: onnx.GraphProto, path: Path, domains: tuple[tuple[str, int], ...] = ()) -> Path:
    opsets = [helper.make_opsetid("", OPSET)] + [helper.make_opsetid(d, v) for d, v in domains]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return save(model, path)


def conv_net(path: Path, batch: int | str = "N", seed: int = 0) -> Path:
    """input [batch,3,16,16] -> Conv+Relu -> GlobalAveragePool -> Flatten -> Gemm -> logits [batch,10]."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "conv.w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "conv.b"),
        numpy_helper.from_array(rng.normal(0, 0.3, (10, 8)).astype(np.float32), "fc.w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (10,)).astype(np.float32), "fc.b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv.w", "conv.b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        weights,
    )
    return _save(graph, path)


def two_inputs(path: Path) -> Path:
    """image [N,3,8,8] and meta [N,4] -> concat of pooled image and meta -> Gemm -> out [N,5]."""
    rng = np.random.default_rng(1)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (7, 5)).astype(np.float32), "w")]
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Concat", ["f", "meta"], ["cat"], name="concat", axis=1),
        helper.make_node("MatMul", ["cat", "w"], ["out"], name="head"),
    ]
    graph = helper.make_graph(
        nodes,
        "two_inputs",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8]),
            helper.make_tensor_value_info("meta", TensorProto.FLOAT, ["N", 4]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 5])],
        weights,
    )
    return _save(graph, path)


def unsupported_op(path: Path) -> Path:
    """A valid ONNX model with a custom-domain op no TensorRT parser knows."""
    graph = helper.make_graph(
        [helper.make_node("FancyOp", ["x"], ["y"], name="fancy", domain="com.example")],
        "unsupported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    return _save(graph, path, domains=(("com.example", 1),))


def deep_net(path: Path, layers: int = 120) -> Path:
    """Many 3x3 convolutions: a model whose build lasts long enough to interrupt it."""
    rng = np.random.default_rng(2)
    nodes, weights, previous = [], [], "input"
    for index in range(layers):
        weights.append(numpy_helper.from_array(rng.normal(0, 0.05, (32, 32, 3, 3)).astype(np.float32), f"w{index}"))
        nodes.append(helper.make_node("Conv", [previous, f"w{index}"], [f"c{index}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{index}"], [f"r{index}"]))
        previous = f"r{index}"
    nodes.append(helper.make_node("Identity", [previous], ["output"]))
    graph = helper.make_graph(
        nodes,
        "deep_net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 32, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 32, 32, 32])],
        weights,
    )
    return _save(graph, path)


#: What must not skip (comma-separated: ``rtx``, ``registry``, ``skopeo``): CI sets it (``.ci/run``), so that a
#: broken install fails the run instead of skipping most real builds while CI stays green.
REQUIRED = frozenset(filter(None, os.environ.get("TRTFORGE_TEST_REQUIRE", "").split(",")))


def skip_or_fail(need: str, reason: str) -> NoReturn:
    """Skip with the reason, or fail when ``need`` is in ``TRTFORGE_TEST_REQUIRE``."""
    if need in REQUIRED:
        pytest.fail(f"{reason} (TRTFORGE_TEST_REQUIRE names {need!r}: it must not skip here)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)  # several modules call need_rtx() at their top


def need_rtx() -> ModuleType:
    """TensorRT-RTX, or a skip that says how to get it (tests that build engines need it)."""
    try:
        import tensorrt_rtx
    except ImportError as exc:
        skip_or_fail("rtx", f"TensorRT-RTX does not import ({exc}): pip install 'trtforge[rtx]'")
    return tensorrt_rtx


def backend_import_problem(flavor: str) -> str | None:
    """Why ``import`` of a flavor's module fails here (None: it imports). The wheel's metadata is
    not enough: a broken wheel has a version and still does not import."""
    from trtforge.environment import import_backend
    from trtforge.errors import BackendUnavailableError

    try:
        import_backend(flavor)
    except BackendUnavailableError as exc:
        return str(exc)
    return None


def need_engine_runtime(flavor: str = "tensorrt-rtx") -> None:
    """Skip, with the reason, unless this host can deserialize and run a ``flavor`` engine built
    for its first GPU (tests that run engines: the pool, the gate's engine candidate)."""
    from trtforge.runners.cuda import gpu_count
    from trtforge.tags import RTX_COMPUTE_CAPABILITIES

    problem = backend_import_problem(flavor)
    if problem is not None:
        reason = f"{problem} (engines run on a GPU host with {flavor})"
        if flavor == "tensorrt-rtx":  # required where CI says so: it builds every engine here
            skip_or_fail("rtx", reason)
        pytest.skip(reason)
    gpus = detect_gpus()
    if not gpus:
        pytest.skip("no NVIDIA GPU detected: running an engine needs one")
    if gpu_count() == 0:
        pytest.skip("cuda-python is missing or sees no GPU: pip install 'trtforge[gpu]'")
    cc = gpus[0].compute_capability
    if flavor == "tensorrt-rtx" and cc not in RTX_COMPUTE_CAPABILITIES:
        listed = "/".join(str(c) for c in RTX_COMPUTE_CAPABILITIES)
        pytest.skip(f"TensorRT-RTX runs on compute capability {listed}, this GPU is {cc}")


#: for tests of what a host without a GPU does (the simulated candidate, "no GPU detected"): on a
#: GPU host the engine itself may run and be judged, which other tests cover
without_gpu = pytest.mark.skipif(
    bool(detect_gpus()), reason="asserts the behaviour of a host without a GPU, and this one has one"
)


# ---------------------------------------------------------------- calibration models and data


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


def chain(path: Path, name: str, weights: list[onnx.TensorProto], nodes: list[onnx.NodeProto]) -> Path:
    """A [N, 16] -> [N, 16] graph of ``nodes`` from ``input`` to ``out``."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 16])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return save(model, path)


def overflow_chain(path: Path, k: float = 1000.0) -> Path:
    """x * k -> MatMul with weights in [50, 100] -> * 1e-4: with k = 1000 and inputs near 1 the
    MatMul output (``blowup``) reaches ~1e6, beyond FP16's 65504; with k = 0.001 nothing overflows."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(np.array(k, np.float32), "k"),
        numpy_helper.from_array(rng.uniform(50, 100, (16, 16)).astype(np.float32), "W"),
        numpy_helper.from_array(np.array(1e-4, np.float32), "s"),
    ]
    nodes = [
        helper.make_node("Mul", ["input", "k"], ["scaled"], name="scale"),
        helper.make_node("MatMul", ["scaled", "W"], ["big"], name="blowup"),
        helper.make_node("Mul", ["big", "s"], ["out"], name="shrink"),
    ]
    return chain(path, "overflow", weights, nodes)


def overflowing_fp16_spec(folder: Path) -> Path:
    """``folder/fp16.yaml``: an [N, 16] model whose FP16 engine overflows at some outputs (exit 4 on
    a clean build), the overflow guard off."""
    spec = folder / "fp16.yaml"
    spec.write_text(
        f"name: over\nmodel: {overflow_chain(folder / 'over.onnx', k=100.0)}\nprecision: fp16\ntargets: ['8.6']\n"
        "profiles:\n  - input: {min: [1, 16], opt: [4, 16], max: [8, 16]}\nfp16:\n  keep_fp32: []\n"
    )
    return spec


def retag(document: dict[str, Any]) -> dict[str, Any]:
    """A manifest document edited by a careful hand: its ``tag`` and ``artifact.file`` rendered
    again from its facts, so the edit gets past the manifest's own consistency check to the check
    the test is about."""
    gpu, trt, platform = document["gpu"], document["tensorrt"], document["platform"]
    tag = EngineTag(
        trt["flavor"],
        trt["version"],
        trt["version_compatible"],
        tuple(ComputeCapability.parse(cc) for cc in gpu["compute_capabilities"]),
        ComputeCapability.parse(gpu["and_later_from"]) if gpu["and_later_from"] else None,
        Platform(platform["os"], platform["machine"]),
    )
    document["tag"] = tag.render()
    document["artifact"]["file"] = artifact_stem(document["name"], document["precision"], tag) + ".engine"
    return document


def externalize(model: Path, location: str | None = None) -> Path:
    """``model`` saved again with every weight in one external data file beside it (default
    ``{name}.data``); returns that file."""
    data = model.with_name(location or f"{model.name}.data")
    onnx.save_model(onnx.load(str(model)), str(model), save_as_external_data=True, location=data.name, size_threshold=0)
    return data
