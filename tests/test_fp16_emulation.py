"""FP16 the way the engine stores it: the gate's emulated candidate, and the overflow guard.

The model: x * 1000 -> MatMul with large weights (activations up to ~1e6, beyond FP16's 65504)
-> * 1e-4 (back to ~100). In FP32 all is finite; stored in FP16 the MatMul output is inf.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from clitools import cli
from junitparser import JUnitXml
from models import chain, need_engine_runtime, need_rtx, overflow_chain, save, small_cnn, without_gpu, write_samples
from onnx import helper, numpy_helper

from trtforge.accuracy import metrics
from trtforge.accuracy.gate import GateCandidate, candidate_runner
from trtforge.errors import SpecError
from trtforge.manifest import read_manifest
from trtforge.mixedprecision import (
    EMULATION_KEY,
    FP16_STORAGE,
    FP16_SUBGRAPHS_AS_IS,
    INT8_QDQ,
    KEEP_FP32_OPS,
    candidate_emulation,
    emulate_fp16,
    emulation_of,
    tensorrt_choice,
    to_fp16,
)
from trtforge.model import ModelInfo, node_names, read_model_info
from trtforge.precision.graphs import emulated_onnx, fp16_onnx
from trtforge.precision.overflow import FOLDER, check_keep_fp32, choose_keep_fp32
from trtforge.spec import FP16_CALIBRATION_KEYS, CalibrationSpec, load_spec

PROFILE = "profiles:\n  - input: {min: [1, 16], opt: [4, 16], max: [8, 16]}\n"


def _spec(write_spec: Callable[..., Path], model: Path, extra: str = "") -> Path:
    return write_spec(f"name: over\nmodel: {model}\nprecision: fp16\ntargets: ['8.6']\n{PROFILE}{extra}")


LEVELS = [
    ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
]


@pytest.mark.parametrize("level", LEVELS, ids=lambda level: level.name)
def test_emulation_overflows_where_the_converted_graph_does_not(tmp_path: Path, level: object) -> None:
    """The defect: onnxruntime runs the FP16-converted graph with FP32 intermediates (no inf);
    the emulation's cast pairs survive every optimization level (inf, as FP16 storage gives)."""

    model = onnx.load(str(overflow_chain(tmp_path / "over.onnx")))
    feed = {"input": np.random.default_rng(1).random((4, 16), dtype=np.float32)}
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    converted = to_fp16(model)
    plain = ort.InferenceSession(converted.SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert np.isfinite(plain.run(None, feed)[0]).all()
    emulated = emulate_fp16(converted)
    assert emulated is not None
    session = ort.InferenceSession(emulated.SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert np.isinf(session.run(None, feed)[0]).all()


def _conv_bn_overflow(path: Path) -> Path:
    """small_cnn (Conv-BN-Relu, Conv-BN-Add-Relu) whose stem convolution outputs ~1e6 (weights x 1e6)
    and whose BatchNormalization scales it back (gamma x 1e-6): finite in FP32, inf where the
    convolution's output is stored in FP16, the boundary a Conv+BatchNormalization fusion removes."""
    model = small_cnn()
    for init in model.graph.initializer:
        scale = {"stem.w": 1e6, "stem.gamma": 1e-6}.get(init.name)
        if scale is not None:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(scale), init.name))
    return save(model, path)


def _fp16_casts(model: onnx.ModelProto) -> int:
    return sum(
        node.op_type == "Cast" and helper.get_attribute_value(node.attribute[0]) == onnx.TensorProto.FLOAT16
        for node in model.graph.node
    )


@pytest.mark.parametrize(
    ("write", "shape"),
    [(overflow_chain, (4, 16)), (_conv_bn_overflow, (2, 3, 16, 16))],
    ids=["matmul-mul-chain", "conv-bn-relu-add"],
)
def test_the_gates_optimization_level_keeps_every_cast_pair(
    tmp_path: Path, write: Callable[[Path], Path], shape: tuple[int, ...]
) -> None:
    """The gate runs the emulation at onnxruntime's default level (ORT_ENABLE_ALL: fusions, NCHWc
    layout): every Cast(FLOAT16) survives into the optimized graph, and the stored-in-FP16 tensor
    still overflows where the FP32 model and the plain converted graph stay finite."""
    model = onnx.load(str(write(tmp_path / "model.onnx")))
    feed = {"input": np.random.default_rng(1).random(shape, dtype=np.float32)}
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.isfinite(reference.run(None, feed)[0]).all()
    converted = to_fp16(model)
    plain = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.isfinite(plain.run(None, feed)[0]).all()  # the defect the emulation exists for
    emulated = emulate_fp16(converted)
    assert emulated is not None
    path = save(emulated, tmp_path / "emulated.onnx")

    options = ort.SessionOptions()  # what the gate's runner leaves as is: onnxruntime's default level
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert _fp16_casts(onnx.load(options.optimized_model_filepath)) == _fp16_casts(emulated) > 0

    runner, text = candidate_runner(GateCandidate("simulated", "test", onnx_path=path, emulation=FP16_STORAGE), 0)
    assert text == "onnxruntime CPUExecutionProvider"
    runner.activate()
    try:
        (out,) = runner.infer(feed).values()
    finally:
        runner.deactivate()
    assert not np.isfinite(out).all()


def test_emulation_label_is_read_from_a_description_of_the_same_model(tmp_path: Path) -> None:
    """An fp32 gate's candidate is the spec's own model: the build's description answers (its
    metadata), so the model is not parsed a second time; any other path is read from its file."""
    model_path = overflow_chain(tmp_path / "over.onnx")
    emulated = emulated_onnx(fp16_onnx(model_path, tmp_path / "cache"), tmp_path / "cache")
    assert emulation_of(emulated) == FP16_STORAGE
    assert dict(read_model_info(emulated).metadata)[EMULATION_KEY] == FP16_STORAGE
    plain = read_model_info(model_path)
    assert EMULATION_KEY not in dict(plain.metadata)
    assert emulation_of(model_path, plain) is None
    # the description, not the file, answers for its own path (the file carries no label)...
    labelled = ModelInfo(model_path, plain.inputs, plain.outputs, metadata=((EMULATION_KEY, "from the description"),))
    assert emulation_of(model_path, labelled) == "from the description"
    # ...and a description of another model is ignored
    assert emulation_of(emulated, plain) == FP16_STORAGE


def test_kept_nodes_stay_fp32_between_each_other(tmp_path: Path) -> None:
    """onnxruntime's converter casts a kept node's output to FP16 even for the next kept node;
    the islands are joined, so the kept tensor never overflows; the cache key holds the list."""
    model_path = overflow_chain(tmp_path / "over.onnx")
    cache = tmp_path / "cache"
    plain, kept = fp16_onnx(model_path, cache), fp16_onnx(model_path, cache, ("blowup", "shrink"))
    assert plain != kept and plain.is_file() and kept.is_file()

    emulated = emulate_fp16(onnx.load(str(kept)))
    assert emulated is not None
    feed = {"input": np.random.default_rng(1).random((4, 16), dtype=np.float32)}
    session = ort.InferenceSession(emulated.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, feed)[0]
    reference = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, reference, rtol=2e-3)


@without_gpu
def test_plain_fp16_gate_fails_on_overflow(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    need_rtx()
    spec = _spec(write_spec, overflow_chain(tmp_path / "over.onnx"), "fp16:\n  keep_fp32: []\n")
    out = tmp_path / "out"
    code, _, stderr = cli("build", spec, "--out", out)
    assert code == 4, stderr
    assert "no node kept in FP32 (spec (overflow guard off))" in stderr
    (rejected,) = out.glob("*.rejected.accuracy.json")
    candidate = json.loads(rejected.read_text())["candidate"]
    assert candidate["kind"] == "simulated"
    assert candidate["emulation"] == FP16_STORAGE
    assert candidate["runner"] == "onnxruntime CPUExecutionProvider"  # every optimization: the pairs stay
    assert not list(out.glob("*.engine"))
    # the failure as --json and --junit give it says which candidate failed, and what it emulated
    junit = tmp_path / "junit.xml"
    code, stdout, stderr = cli("build", spec, "--out", out, "--json", "--junit", junit)
    assert code == 4, stderr
    (row,) = json.loads(stdout)["results"]
    assert row["accuracy"]["candidate"] == "simulated" and row["accuracy"]["emulation"] == FP16_STORAGE
    assert row["accuracy"]["passed"] is False and row["accuracy"]["report"] == rejected.name
    (failure,) = (result for suite in JUnitXml.fromfile(str(junit)) for case in suite for result in case.result)
    assert failure.message.endswith(f"; candidate simulated; emulated: {FP16_STORAGE}"), failure.message


def test_overflow_guard_keeps_the_overflowing_nodes(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    need_rtx()
    spec = _spec(write_spec, overflow_chain(tmp_path / "over.onnx"))
    out = tmp_path / "out"
    code, _, stderr = cli("build", spec, "--out", out)
    assert code == 0, stderr
    assert "2 node(s) kept in FP32 by the overflow guard: blowup (output 'big' reaches" in stderr
    manifest = read_manifest(next(out.glob("*.manifest.json")))
    assert manifest.fp16 is not None
    assert manifest.fp16["keep_fp32"] == ["blowup", "shrink"]
    assert manifest.fp16["chosen_by"] == "overflow guard"
    assert manifest.fp16["data"] == "the gate's random inputs"
    assert manifest.fp16["reasons"]["shrink"].startswith("input 'big' reaches")
    assert manifest.accuracy is not None
    assert manifest.accuracy["passed"] is True and manifest.accuracy["emulation"] == FP16_STORAGE


def test_overflow_guard_reads_calibration_data(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """With calibration data, the guard runs on it (not on the gate's inputs)."""
    need_rtx()
    data = write_samples(tmp_path / "calib", (32, 16), files=2)
    extra = f"calibration:\n  data: {data[0].parent}/*.npy\n"
    spec = _spec(write_spec, overflow_chain(tmp_path / "over.onnx"), extra)
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 0, stderr
    manifest = read_manifest(next((tmp_path / "out").glob("*.manifest.json")))
    assert manifest.fp16 is not None and manifest.fp16["data"] == "calibration data"


def test_calibration_data_the_guard_cannot_read_is_refused(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """At fp16 the guard is the only reader of calibration data: data that does not fit the model
    was a warning, and the build went on saying "no node kept in FP32 (overflow guard on
    calibration data)" though the guard never ran on it."""
    need_rtx()
    data = write_samples(tmp_path / "calib", (32, 15), files=1)  # the input is [N, 16]
    extra = f"calibration:\n  data: {data[0].parent}/*.npy\n"
    spec = _spec(write_spec, overflow_chain(tmp_path / "over.onnx"), extra)
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 2 and str(data[0]) in stderr and "overflow guard" not in stderr, stderr
    assert not list((tmp_path / "out").glob("*.engine"))


def test_the_guard_reads_only_the_calibration_keys_fp16_takes(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """The spec refuses every other calibration key at fp16 as unread (FP16_CALIBRATION_KEYS): the
    guard must read no more than those, or the spec refuses a key that matters."""
    data = write_samples(tmp_path / "calib", (8, 16), files=2)
    extra = f"calibration:\n  data: {data[0].parent}/*.npy\n  batch_size: 4\n  max_samples: 8\n"
    spec = load_spec(_spec(write_spec, overflow_chain(tmp_path / "over.onnx"), extra))
    assert spec.calibration is not None

    class Recording:
        def __init__(self, inner: CalibrationSpec) -> None:
            self.inner, self.read = inner, set[str]()

        def __getattr__(self, name: str) -> object:
            self.read.add(name)
            return getattr(self.inner, name)

    recording = Recording(spec.calibration)
    recorded = spec.model_copy(update={"calibration": recording})
    keep = choose_keep_fp32(recorded, read_model_info(spec.model_path), lambda _line: None)
    assert keep.data == "calibration data" and keep.nodes == ("blowup", "shrink")
    assert "data" in recording.read and recording.read <= set(FP16_CALIBRATION_KEYS), recording.read


def test_tensorrt_10_says_the_sections_it_does_not_read(
    write_spec: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under TensorRT 10.x's FP16 flag no guard runs and no keep list applies: a calibration
    section (the guard's data) or fp16.keep_fp32 went unread without a word."""
    from trtforge.console import Reporter
    from trtforge.precision import prepare_precision

    model = overflow_chain(tmp_path / "over.onnx")
    data = write_samples(tmp_path / "calib", (8, 16), files=1)
    for extra, where, what in (
        (f"calibration:\n  data: {data[0].parent}/*.npy\n", ":7:", "calibration:"),
        ("fp16:\n  keep_fp32: [blowup]\n", ":8:", "fp16.keep_fp32"),
    ):
        spec = load_spec(_spec(write_spec, model, extra))
        prepared = prepare_precision(
            spec, read_model_info(model), "tensorrt", "10.13.0.35", tmp_path / "cache", Reporter(), for_gate=False
        )
        assert prepared.fp16_flag
        (line,) = capsys.readouterr().err.splitlines()
        assert f"warning: {spec.origin.path}{where} TensorRT 10.13.0.35 picks each layer's precision" in line, line
        assert f"{what} is not read" in line, line
    prepare_precision(  # neither given: nothing to say
        load_spec(_spec(write_spec, model)),
        read_model_info(model),
        "tensorrt",
        "10.13.0.35",
        tmp_path / "cache",
        Reporter(),
        for_gate=False,
    )
    assert not capsys.readouterr().err


def test_unknown_keep_fp32_name_is_a_usage_error(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = _spec(write_spec, overflow_chain(tmp_path / "over.onnx"), "fp16:\n  keep_fp32: [blowup, shrnk]\n")
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 2, stderr
    line = stderr.strip().splitlines()[-1]
    assert f"{spec}:" in line and "fp16.keep_fp32 names node 'shrnk'" in line and "did you mean 'shrink'?" in line
    assert "Traceback" not in stderr


def _unnamed_overflow_chain(path: Path) -> Path:
    """``overflow_chain`` with no node names, but for its last node, named ``MatMul_1``: the name
    the unnamed MatMul at index 1 would be given."""
    model = onnx.load(str(overflow_chain(path)))
    for node in model.graph.node:
        node.name = ""
    model.graph.node[2].name = "MatMul_1"
    return save(model, path)


def test_unnamed_nodes_are_kept_in_fp32_by_the_names_given_to_them(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """An unnamed node is ``{op_type}_{index}``, ``_2`` added where a node has that name; the guard
    kept node "" (every unnamed node), and a keep_fp32 list could name none of them."""
    path = _unnamed_overflow_chain(tmp_path / "over.onnx")
    model = onnx.load(str(path))
    assert node_names(model.graph) == ["Mul_0", "MatMul_1_2", "MatMul_1"] == node_names(model.graph)
    spec = load_spec(_spec(write_spec, path))
    keep = choose_keep_fp32(spec, read_model_info(path), lambda _line: None, tmp_path / "cache")
    assert keep.nodes == ("MatMul_1_2", "MatMul_1")  # the overflowing MatMul and the Mul reading it
    converted = to_fp16(model, ["MatMul_1_2"])
    assert not any(node.name for node in model.graph.node[:2])  # the caller's model is left as it is
    (matmul,) = (node for node in converted.graph.node if node.op_type == "MatMul")
    assert matmul.name == "MatMul_1_2" and matmul.input[1] == "W"  # kept in FP32: its weight not converted
    assert {init.name: init.data_type for init in converted.graph.initializer}["W"] == onnx.TensorProto.FLOAT
    with pytest.raises(SpecError, match=r"fp16\.keep_fp32 names node '', which the model does not have"):
        check_keep_fp32([""], model, spec)


def test_a_cached_guard_choice_of_node_empty_name_is_made_again(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """Cached before unnamed nodes had names, a choice of node "" would keep every unnamed node."""
    path = _unnamed_overflow_chain(tmp_path / "over.onnx")
    spec, info, cache = load_spec(_spec(write_spec, path)), read_model_info(path), tmp_path / "cache"
    first = choose_keep_fp32(spec, info, lambda _line: None, cache)
    (entry,) = (cache / FOLDER).glob("*.json")
    entry.write_text(json.dumps({"nodes": [""], "reasons": {"": "output 'big' reaches 1e6"}, "data": first.data}))
    assert choose_keep_fp32(spec, info, lambda _line: None, cache).nodes == first.nodes
    assert json.loads(entry.read_text())["nodes"] == list(first.nodes)


def _int8overflow_chain(path: Path, weight_std: float = 0.5) -> Path:
    """input -> MatMul (quantized) -> * 1e5 -> * 1e-5: the two Muls stay out of INT8, and their
    intermediate (~1e5) overflows where they run in FP16; with ``weight_std`` 0.02 it stays under
    65504, and only the weight 1e5 itself is beyond FP16."""
    weights = [
        numpy_helper.from_array(np.random.default_rng(0).normal(0, weight_std, (16, 16)).astype(np.float32), "W"),
        numpy_helper.from_array(np.array(1e5, np.float32), "up"),
        numpy_helper.from_array(np.array(1e-5, np.float32), "down"),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "W"], ["m"], name="fc"),
        helper.make_node("Mul", ["m", "up"], ["big"], name="blowup"),
        helper.make_node("Mul", ["big", "down"], ["out"], name="shrink"),
    ]
    return chain(path, "int8_overflow", weights, nodes)


@pytest.mark.parametrize(("high_precision", "expected"), [("fp16", 4), ("fp32", 0)])
def test_int8_high_precision_fp16_layers_are_emulated(
    write_spec: Callable[..., Path], tmp_path: Path, high_precision: str, expected: int
) -> None:
    """The layers an INT8 build leaves in FP16 store FP16 in the gate's candidate too."""
    need_rtx()
    data = write_samples(tmp_path / "calib", (32, 16), files=2)
    spec = write_spec(
        f"name: over\nmodel: {_int8overflow_chain(tmp_path / 'over.onnx')}\nprecision: int8\ntargets: ['8.6']\n"
        f"{PROFILE}calibration:\n  data: {data[0].parent}/*.npy\n  high_precision: {high_precision}\n"
        f"accuracy:\n  data: {data[0].parent}/*.npy\n"
    )
    out = tmp_path / "out"
    code, _, stderr = cli("build", spec, "--out", out)
    assert code == expected, stderr
    (report,) = out.glob("*.accuracy.json")
    candidate = json.loads(report.read_text())["candidate"]
    # every INT8 candidate says how its Q/DQ nodes stand for the engine's INT8 kernels
    assert candidate["emulation"] == (f"{INT8_QDQ}; {FP16_STORAGE}" if high_precision == "fp16" else INT8_QDQ)


def test_fp16_weights_stay_fp16_in_the_file_and_run_as_if_widened_in_it(tmp_path: Path) -> None:
    """The emulation reads each FP16 weight through a Cast(FLOAT) that onnxruntime folds when it
    loads the graph: the file keeps FP16 weights (half the size of widened ones), and at the
    gate's level the outputs are bit-identical to a graph whose weights were widened in the file."""
    emulated = emulate_fp16(to_fp16(small_cnn()))
    assert emulated is not None
    half = [init for init in emulated.graph.initializer if init.name.endswith("/fp16")]
    assert half and all(init.data_type == onnx.TensorProto.FLOAT16 for init in half)
    assert not any(
        init.data_type == onnx.TensorProto.FLOAT16 for init in emulated.graph.initializer if init not in half
    )

    widened = onnx.ModelProto()
    widened.CopyFrom(emulated)
    for index, init in enumerate(widened.graph.initializer):
        if init.name.endswith("/fp16"):
            wide = numpy_helper.to_array(init).astype(np.float32)
            widened.graph.initializer[index].CopyFrom(numpy_helper.from_array(wide, init.name.removesuffix("/fp16")))
    casts = [node for node in widened.graph.node if node.name.endswith("/widen")]
    assert len(casts) == len(half)
    for node in casts:
        widened.graph.node.remove(node)

    feed = {"input": np.random.default_rng(3).random((2, 3, 16, 16), dtype=np.float32)}
    runs = [
        ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
        for graph in (emulated, widened)
    ]
    assert len(emulated.SerializeToString()) < len(widened.SerializeToString())
    for got, expected in zip(*runs, strict=True):
        assert np.array_equal(got, expected)


def _half_input_model(path: Path, weight: float) -> Path:
    """x (FLOAT16, [N, 16]) -> MatMul(FP16 weights, all ``weight``) -> Relu -> y (FLOAT16)."""
    w = numpy_helper.from_array(np.full((16, 16), weight, np.float16), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Relu", ["mm"], ["y"])],
        "half",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, ["N", 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, ["N", 16])],
        [w],
    )
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_an_fp16_input_is_fed_as_fp16_and_its_overflow_still_caught(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """The emulation widened FP16 graph inputs to FLOAT while the gate feeds what the model
    declares: an FP16-input model never passed the fp16 gate (exit 2, 'Unexpected input data type')."""
    big = onnx.load(str(_half_input_model(tmp_path / "big.onnx", 1000.0)))
    emulated = emulate_fp16(big)
    assert emulated is not None
    assert emulated.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    feed = {"x": np.full((2, 16), 10.0, np.float16)}  # 16 x 10 x 1000 = 160000: beyond FP16's 65504
    (got,) = ort.InferenceSession(emulated.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    assert np.isinf(got).all()

    need_rtx()
    model = _half_input_model(tmp_path / "half.onnx", 0.01)
    profile = "profiles:\n  - x: {min: [1, 16], opt: [4, 16], max: [8, 16]}\n"
    spec = write_spec(f"name: half\nmodel: {model}\nprecision: fp16\ntargets: ['8.6']\n{profile}")
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 0, stderr
    assert "accuracy half fp16: passed" in stderr


def _flag_from(model: onnx.ModelProto, name: str) -> None:
    """``flag`` := sum(``name``) > 0, computed from the input: an If on it stays an If (onnxruntime
    inlines one whose condition is a constant, and so does the emulation)."""
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "flag_zero")
    model.graph.initializer.append(zero)
    model.graph.node.extend(
        [
            helper.make_node("ReduceSum", [name], ["flag_total"], keepdims=0),
            helper.make_node("Greater", ["flag_total", "flag_zero"], ["flag"]),
        ]
    )


@without_gpu
def test_a_graph_with_control_flow_is_emulated_outside_its_subgraphs(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """One unrelated If used to switch the emulation off for the whole graph: the FP16 graph ran
    as it was (FP32 inside onnxruntime), the overflow went unseen and the gate said "passed". The
    graph outside the subgraphs is emulated now, and the label says where it is not."""
    need_rtx()
    model = onnx.load(str(overflow_chain(tmp_path / "over.onnx")))
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.ones(1, np.float32)))],
        "branch",
        [],
        [helper.make_tensor_value_info("one", onnx.TensorProto.FLOAT, [1])],
    )
    _flag_from(model, "input")
    model.graph.node.append(helper.make_node("If", ["flag"], ["picked"], then_branch=branch, else_branch=branch))
    model.graph.output.append(helper.make_tensor_value_info("picked", onnx.TensorProto.FLOAT, [1]))
    path = save(model, tmp_path / "if.onnx")
    emulated = emulate_fp16(to_fp16(model))
    assert emulated is not None
    assert dict((p.key, p.value) for p in emulated.metadata_props)[EMULATION_KEY] == (
        f"{FP16_STORAGE}; {FP16_SUBGRAPHS_AS_IS}"
    )
    out = tmp_path / "out"
    code, _, stderr = cli("build", _spec(write_spec, path, "fp16: {keep_fp32: []}\n"), "--out", out)
    assert code == 4, stderr
    assert "inside control-flow subgraphs (If/Loop/Scan) NOT emulated" in stderr, stderr
    (rejected,) = out.glob("*.rejected.accuracy.json")
    assert json.loads(rejected.read_text())["candidate"]["emulation"] == f"{FP16_STORAGE}; {FP16_SUBGRAPHS_AS_IS}"
    assert not list(out.glob("*.engine"))


@without_gpu
def test_an_if_on_a_constant_is_emulated_as_the_branch_it_takes(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """An If whose condition is a constant, its branch reading the overflowing tensor and giving
    the graph's output: onnxruntime inlines such an If when it optimizes, and its cast elimination
    took the emulation's rounding away with it ("passed"). The emulation inlines it first: the
    branch is main-graph nodes, emulated like any other (no subgraph left, the plain label)."""
    need_rtx()
    model = onnx.load(str(overflow_chain(tmp_path / "over.onnx")))
    (last,) = [node for node in model.graph.node if node.output[0] == model.graph.output[0].name]
    output = model.graph.output[0].name
    last.output[0] = "before_if"
    branch = helper.make_graph(
        [helper.make_node("Identity", ["before_if"], ["taken"])],
        "branch",
        [],
        [helper.make_tensor_value_info("taken", onnx.TensorProto.FLOAT, None)],
    )
    model.graph.initializer.append(numpy_helper.from_array(np.array(True), "flag"))
    model.graph.node.append(helper.make_node("If", ["flag"], [output], then_branch=branch, else_branch=branch))
    path = save(model, tmp_path / "if.onnx")
    emulated = emulate_fp16(to_fp16(model))
    assert emulated is not None and not [node for node in emulated.graph.node if node.op_type == "If"]
    assert dict((p.key, p.value) for p in emulated.metadata_props)[EMULATION_KEY] == FP16_STORAGE
    out = tmp_path / "out"
    code, _, stderr = cli("build", _spec(write_spec, path, "fp16: {keep_fp32: []}\n"), "--out", out)
    assert code == 4, stderr
    assert not list(out.glob("*.engine"))


def test_an_inlined_if_keeps_node_names_unique_and_odd_conditions_stay_ifs() -> None:
    """Inlining a named If of two outputs gave two nodes named ``/If/inlined``, and a branch node
    named like a main-graph node kept its name: onnxruntime refused the emulation ("two nodes with
    same node name") of a model that builds. An If on an empty or a two-value condition is not
    valid ONNX to run: it stays an If, and onnxruntime says why (it was an IndexError, or the first
    value taken)."""

    def model(condition: np.ndarray) -> onnx.ModelProto:
        branch = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["r"], name="shrink"), helper.make_node("Neg", ["r"], ["n"])],
            "branch",
            [],
            [
                helper.make_tensor_value_info("r", onnx.TensorProto.FLOAT, [4]),
                helper.make_tensor_value_info("n", onnx.TensorProto.FLOAT, [4]),
            ],
        )
        graph = helper.make_graph(
            [
                helper.make_node("Abs", ["input"], ["x"], name="shrink"),
                helper.make_node("If", ["flag"], ["ya", "yb"], name="/If", then_branch=branch, else_branch=branch),
            ],
            "g",
            [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [4])],
            [
                helper.make_tensor_value_info("ya", onnx.TensorProto.FLOAT, [4]),
                helper.make_tensor_value_info("yb", onnx.TensorProto.FLOAT, [4]),
            ],
            [numpy_helper.from_array(condition, "flag")],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    emulated = emulate_fp16(to_fp16(model(np.array(True))))
    assert emulated is not None and not [node for node in emulated.graph.node if node.op_type == "If"]
    names = [node.name for node in emulated.graph.node if node.name]
    assert len(names) == len(set(names)), names
    session = ort.InferenceSession(emulated.SerializeToString(), providers=["CPUExecutionProvider"])
    ya, yb = session.run(None, {"input": np.array([-1, 2, -3, 4], np.float32)})
    np.testing.assert_array_equal(ya, [1, 2, 3, 4])
    np.testing.assert_array_equal(yb, [-1, -2, -3, -4])
    for odd in (np.array([], bool), np.array([False, True])):
        kept = emulate_fp16(to_fp16(model(odd)))
        assert kept is not None and [node.op_type for node in kept.graph.node].count("If") == 1


@pytest.mark.parametrize("level", LEVELS, ids=lambda level: level.name)
def test_a_subgraph_reads_and_returns_fp16_tensors_in_the_emulation(level: object) -> None:
    """An If whose branches read an outer tensor and an outer FP16 weight and return FP16: they
    read the FP16 values the emulation already holds (the branches stay FP16, as converted), and
    what the If returns is widened and then overflows in the next FP16 node, as the engine's would,
    at every optimization level. The converted graph alone shows no overflow."""
    weights = [
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array(100.0, np.float32), "big"),
        numpy_helper.from_array(np.full(1, 1000.0, np.float32), "shift"),
    ]

    def branch(op: str) -> onnx.GraphProto:
        out = helper.make_tensor_value_info(f"{op}_out", onnx.TensorProto.FLOAT, [4])
        return helper.make_graph([helper.make_node(op, ["t", "shift"], [f"{op}_out"])], op, [], [out])

    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["t"]),
            helper.make_node("If", ["flag"], ["picked"], then_branch=branch("Add"), else_branch=branch("Sub")),
            helper.make_node("Mul", ["picked", "big"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    _flag_from(model, "x")
    converted = to_fp16(model)
    emulated = emulate_fp16(converted)
    assert emulated is not None
    feed = {"x": np.array([1, 2, 300, 0.001], np.float32)}
    options = ort.SessionOptions()
    options.graph_optimization_level = level

    def run(graph: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return session.run(None, feed)[0]

    np.testing.assert_allclose(run(converted), [100200, 100400, 160000, 100000.2], rtol=1e-3)
    assert np.isinf(run(emulated)).all()  # 1002 x 100 > 65504: inf in an FP16 tensor


def test_verify_refuses_an_fp16_graph_the_guard_would_choose_otherwise(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """verify prepares the FP16 graph again: on data changed since the build the overflow guard keeps
    other nodes in FP32, and the gate would judge that graph, not the engine's (which overflows)."""
    need_rtx()
    model = overflow_chain(tmp_path / "over.onnx")
    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(0).random((8, 16), dtype=np.float32) * 1e-3)  # nothing overflows
    spec = _spec(write_spec, model, f"accuracy:\n  data: {data}\n")
    out = tmp_path / "out"
    code, _, stderr = cli("build", spec, "--out", out)
    assert code == 0, stderr
    (engine,) = out.glob("*.engine")
    assert (read_manifest(engine).fp16 or {}).get("keep_fp32") == []
    np.save(data, np.random.default_rng(0).random((8, 16), dtype=np.float32))  # now the MatMul overflows
    code, _, stderr = cli("verify", engine, "--spec", spec)
    assert code == 2 and "the FP16 overflow guard now keeps" in stderr and "rebuild the engine" in stderr, stderr


def test_the_guard_keeps_nodes_reading_a_weight_fp16_cannot_hold(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """x @ W * 1e5 * 1e-5: no activation overflows, but the converter clamps the weight 1e5 to 65504
    (the output at 0.66x). The guard keeps the node that reads it in FP32, and the build passes."""
    need_rtx()
    model = _int8overflow_chain(tmp_path / "bigweight.onnx", weight_std=0.02)
    out = tmp_path / "out"
    code, _, stderr = cli("build", _spec(write_spec, model), "--out", out)
    assert code == 0, stderr
    fp16 = read_manifest(next(out.glob("*.engine"))).fp16 or {}
    assert "blowup" in fp16["keep_fp32"] and "input 'up' reaches 1e+05" in fp16["reasons"]["blowup"]
    # the same weight as a Constant node: its tensor is named by the node's output
    loaded = onnx.load(str(model))
    up = next(init for init in loaded.graph.initializer if init.name == "up")
    loaded.graph.initializer.remove(up)
    loaded.graph.node.insert(0, helper.make_node("Constant", [], ["up"], name="up_constant", value=up))
    constant = save(loaded, tmp_path / "constant.onnx")
    out = tmp_path / "out-constant"
    code, _, stderr = cli("build", _spec(write_spec, constant), "--out", out)
    assert code == 0, stderr
    fp16 = read_manifest(next(out.glob("*.engine"))).fp16 or {}
    assert "blowup" in fp16["keep_fp32"], fp16


def test_a_legitimate_inf_does_not_turn_the_guard_off(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """The overflowing chain plus an additive -inf mask into a Softmax (as attention has): the -inf
    used to stop the guard ("the FP32 model fails"), and the build failed on the overflow it exists
    to prevent. The guard passes over non-finite values and keeps the overflowing nodes."""
    need_rtx()
    model = onnx.load(str(overflow_chain(tmp_path / "over.onnx")))
    mask = np.zeros(16, np.float32)
    mask[::2] = -np.inf
    model.graph.initializer.append(numpy_helper.from_array(mask, "mask"))
    model.graph.node.extend(
        [
            helper.make_node("Add", ["input", "mask"], ["masked"], name="mask_add"),
            helper.make_node("Softmax", ["masked"], ["attention"], name="softmax", axis=-1),
        ]
    )
    model.graph.output.append(helper.make_tensor_value_info("attention", onnx.TensorProto.FLOAT, ["N", 16]))
    path = save(model, tmp_path / "masked.onnx")
    out = tmp_path / "out"
    code, _, stderr = cli("build", _spec(write_spec, path), "--out", out)
    assert code == 0, stderr
    assert "skipped" not in stderr
    assert "blowup" in (read_manifest(next(out.glob("*.engine"))).fp16 or {})["keep_fp32"]


def _softmax_layer_types(trt: ModuleType, graph: onnx.ModelProto) -> list[object]:
    """The output types of the softmax layers TensorRT-RTX's own parser makes of ``graph``."""
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(graph.SerializeToString()), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    layers = [network.get_layer(index) for index in range(network.num_layers)]
    return [layer.get_output(0).dtype for layer in layers if layer.type == trt.LayerType.SOFTMAX]


def test_log_softmax_stays_fp32_as_the_engine_would_lose_it_in_fp16() -> None:
    """TensorRT's parser splits LogSoftmax into Softmax and Log with the probabilities between them
    in FP16, where those below about e^-16.6 become 0 and their log -inf: a classifier's confident
    logits lose most log-probabilities so. The emulation rounds between ONNX nodes, never inside
    one, so it kept them finite: a gate that passed an engine that would answer -inf. LogSoftmax
    now stays in FP32 (``KEEP_FP32_OPS``); the parser itself shows both networks."""
    trt = need_rtx()
    from onnxruntime.transformers import float16

    weight = np.random.default_rng(0).normal(0, 8, (64, 1000)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"]), helper.make_node("LogSoftmax", ["logits"], ["y"])],
        "head",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 1000])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feed = {"x": np.random.default_rng(1).normal(size=(2, 64)).astype(np.float32)}
    exact = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert (exact < -17).mean() > 0.5  # most log-probabilities lie below what FP16 probabilities hold

    plain = float16.convert_float_to_float16(model, keep_io_types=True)  # the converter's own block list
    assert _softmax_layer_types(trt, plain) == [trt.float16]
    converted = to_fp16(model)
    assert "LogSoftmax" in KEEP_FP32_OPS and _softmax_layer_types(trt, converted) == [trt.float32]

    emulated = emulate_fp16(converted)
    assert emulated is not None
    session = ort.InferenceSession(emulated.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, feed)[0]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, exact, rtol=1e-2, atol=0.5)  # FP16 logits, FP32 LogSoftmax


def _underflow_chain(path: Path) -> Path:
    """x * 2^-22 -> MatMul (weights ~2^10) -> * 2^12: for x in [0, 1) the scaled tensor ``tiny``
    lies below FP16's smallest normal (2^-14), where its subnormals are 2^-24 apart: stored in FP16
    it keeps about 2 of its bits. No value comes near 65504, so the overflow guard keeps nothing."""
    weights = [
        numpy_helper.from_array(np.array(2.0**-22, np.float32), "down"),
        numpy_helper.from_array((np.random.default_rng(0).normal(0, 1, (16, 16)) * 2**10).astype(np.float32), "W"),
        numpy_helper.from_array(np.array(2.0**12, np.float32), "up"),
    ]
    nodes = [
        helper.make_node("Mul", ["input", "down"], ["tiny"], name="shrink"),
        helper.make_node("MatMul", ["tiny", "W"], ["mixed"], name="mix"),
        helper.make_node("Mul", ["mixed", "up"], ["out"], name="rescale"),
    ]
    return chain(path, "underflow", weights, nodes)


def _cancellation_chain(path: Path) -> Path:
    """(x + 2048) - 2048: FP16 holds the sum in steps of 2, so x in [0, 1) comes back as 0 or 2."""
    weights = [numpy_helper.from_array(np.array(2048.0, np.float32), "offset")]
    nodes = [
        helper.make_node("Add", ["input", "offset"], ["shifted"], name="shift"),
        helper.make_node("Sub", ["shifted", "offset"], ["out"], name="unshift"),
    ]
    return chain(path, "cancellation", weights, nodes)


@without_gpu
@pytest.mark.parametrize(
    ("write", "keep"),
    [(_underflow_chain, "[shrink, mix]"), (_cancellation_chain, "[shift, unshift]")],
    ids=["underflow", "cancellation"],
)
def test_fp16_precision_loss_fails_the_gate_and_passes_kept_in_fp32(
    write_spec: Callable[..., Path], tmp_path: Path, write: Callable[[Path], Path], keep: str
) -> None:
    """What FP16 loses without overflowing, which the guard (it looks for values over 65504) does
    not see: a tensor in FP16's subnormal range, or a small signal beside a large offset. An FP16
    engine holds those tensors in FP16 and returns a degraded output; the emulated candidate rounds
    them as it does and fails the gate (exit 4, labelled simulated). Kept in FP32, the build passes."""
    need_rtx()
    model = write(tmp_path / "model.onnx")
    out = tmp_path / "out"
    code, _, stderr = cli("build", _spec(write_spec, model), "--out", out)
    assert code == 4, stderr
    assert "no node kept in FP32 (overflow guard" in stderr and "(simulated candidate)" in stderr
    (rejected,) = out.glob("*.rejected.accuracy.json")
    report = json.loads(rejected.read_text())
    assert report["candidate"]["kind"] == "simulated" and report["candidate"]["emulation"] == FP16_STORAGE
    assert {check["metric"] for check in report["outputs"][0]["checks"] if not check["passed"]} >= {"snr_db"}

    code, _, stderr = cli("build", _spec(write_spec, model, f"fp16:\n  keep_fp32: {keep}\n"), "--out", out)
    assert code == 0, stderr
    (engine,) = out.glob("*.engine")
    summary = read_manifest(engine).accuracy
    assert summary is not None and summary["passed"] is True and summary["emulation"] == FP16_STORAGE


# ---------------------------------------------------------------- the emulation against the engine (GPU host)

DIGITS = Path(__file__).resolve().parent.parent / "calibration" / "digits"


def _this_gpu() -> str:
    from trtforge.environment import detect_gpus

    return str(detect_gpus()[0].compute_capability)


def test_on_a_gpu_host_the_gate_runs_the_engine_and_agrees_with_the_emulation(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """Where an engine runs, the gate judges it, not the emulation; and the emulation's verdict,
    which CPU-only hosts ship on, is the engine's: digits at FP16 passes on both with cosines a
    hair apart. No host of this project ran it (none had a GPU TensorRT-RTX runs on)."""
    need_engine_runtime("tensorrt-rtx")
    spec = write_spec(
        f"name: digits\nmodel: {DIGITS / 'digits_cnn.onnx'}\nprecision: fp16\ntargets: ['{_this_gpu()}']\n"
        "profiles:\n  - input: {min: [1, 1, 8, 8], opt: [16, 1, 8, 8], max: [64, 1, 8, 8]}\n"
        f"accuracy:\n  data: {DIGITS / 'val'}/*.npy\n  max_samples: 256\n"
    )
    out = tmp_path / "out"
    code, _, stderr = cli("build", spec, "--out", out)
    assert code == 0, stderr
    (engine,) = out.glob("*.engine")
    report = json.loads(next(out.glob("*.accuracy.json")).read_text())
    assert report["candidate"]["kind"] == "engine" and report["candidate"]["emulation"] is None, report["candidate"]
    summary = read_manifest(engine).accuracy
    assert summary is not None and summary["candidate"] == "engine" and summary["passed"] is True
    engine_cosine = report["outputs"][0]["metrics"]["cosine"]

    model = onnx.load(str(DIGITS / "digits_cnn.onnx"))
    emulated = emulate_fp16(to_fp16(model))
    assert emulated is not None
    samples = np.concatenate([np.load(path) for path in sorted((DIGITS / "val").glob("*.npy"))])[:256]
    feed = {"input": samples.astype(np.float32)}
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    candidate = ort.InferenceSession(emulated.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    emulated_cosine = metrics.cosine(reference, candidate[0])
    assert abs(engine_cosine - emulated_cosine) < 1e-3, (engine_cosine, emulated_cosine)


def test_on_a_gpu_host_the_engine_overflows_where_the_emulation_does(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """The overflow the emulation fails on CPU-only hosts (``test_plain_fp16_gate_fails_on_overflow``)
    is the engine's: built for this GPU and judged by running it, the gate fails the same way."""
    need_engine_runtime("tensorrt-rtx")
    model = overflow_chain(tmp_path / "over.onnx")
    spec = write_spec(
        f"name: over\nmodel: {model}\nprecision: fp16\ntargets: ['{_this_gpu()}']\n{PROFILE}fp16:\n  keep_fp32: []\n"
    )
    out = tmp_path / "out"
    code, _, stderr = cli("build", spec, "--out", out)
    assert code == 4, stderr
    (rejected,) = out.glob("*.rejected.accuracy.json")
    assert json.loads(rejected.read_text())["candidate"]["kind"] == "engine"
    assert not list(out.glob("*.engine"))


@pytest.mark.parametrize(
    ("flavor", "version", "precision", "native", "says"),
    [
        ("tensorrt", "10.13.0", "fp16", False, "picks each layer's precision under its FP16 flag"),
        ("tensorrt", "10.13.0", "int8", True, "places INT8 itself from the scales"),
        ("tensorrt", "10.13.0", "int8", False, None),  # Q/DQ mode: the engine follows trtforge's placement
        ("tensorrt", "11.0.0", "fp16", False, None),  # strongly typed: the graph's types are the engine's
        ("tensorrt-rtx", "1.7.1", "fp16", False, None),
    ],
)
def test_the_label_says_where_tensorrt_chooses_precisions_itself(
    flavor: str, version: str, precision: str, native: bool, says: str | None
) -> None:
    """On TensorRT 10.x the FP16 flag and native INT8 let TensorRT pick each layer's precision: the
    emulated candidate is trtforge's graph, and every report's label says so after the rest."""
    note = tensorrt_choice(flavor, version, precision, native)
    assert (note is None) if says is None else (note is not None and says in note)
    label = candidate_emulation(FP16_STORAGE, precision == "int8", note)
    assert label is not None and label.startswith(INT8_QDQ if precision == "int8" else FP16_STORAGE)
    assert label.endswith(note or FP16_STORAGE)


def test_the_gate_labels_a_simulated_tensorrt_10_engine_from_its_manifest(tmp_path: Path) -> None:
    """The gate reads how the engine was built from its manifest (flavor, version, precision,
    calibration mode): the simulation of a TensorRT 10.x engine says TensorRT chose there."""
    from test_compat_rules import manifest_for

    from trtforge.accuracy.gate import open_candidate
    from trtforge.compat import DEFAULT_POLICY
    from trtforge.environment import detect_environment

    graph = save(onnx.load(str(overflow_chain(tmp_path / "over.onnx"))), tmp_path / "graph.onnx")
    base = manifest_for("tensorrt", "10.13.0.35")
    native = {"algorithm": "entropy", "mode": "native", "samples": 1, "data_sha256": "a" * 64, "cache_sha256": "b" * 64}
    env = detect_environment(flavor="tensorrt", version="10.13.0.35")  # the runtime, but no GPU it targets
    for manifest, says in (
        (base.replace(precision="fp16"), "picks each layer's precision under its FP16 flag"),
        (base.replace(precision="int8", calibration=native), "places INT8 itself from the scales"),
    ):
        with open_candidate(manifest, b"", graph, env, DEFAULT_POLICY) as candidate:
            assert candidate.kind == "simulated" and candidate.emulation is not None and says in candidate.emulation
