"""INT8 calibration end to end: Q/DQ models that TensorRT-RTX builds, caches, spec errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import models
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from models import need_rtx
from onnx import TensorProto, helper, numpy_helper

from trtforge.calibration import Calibration, CalibrationResult, cache, calibrate
from trtforge.calibration.cache import parse_trt_cache, trt_version_int, write_trt_cache
from trtforge.errors import InvalidInputError, SpecError
from trtforge.mixedprecision import GRAPH_REVISIONS
from trtforge.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "calibration" / "digits"
CNN_SHAPE = (3, 16, 16)


def build_rtx(path: Path, name: str, sample: tuple[int, ...]) -> bytes:
    """A real TensorRT-RTX build (CPU-only ahead-of-time, SM 8.6) of a batch-dynamic model."""
    need_rtx()
    import tensorrt_rtx as trt

    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(path.read_bytes()), [parser.get_error(i) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape(name, (1, *sample), (8, *sample), (32, *sample))
    config.add_optimization_profile(profile)
    config.num_compute_capabilities = 1
    config.set_compute_capability(trt.ComputeCapability.SM86, 0)
    engine = builder.build_serialized_network(network, config)
    assert engine is not None, f"TensorRT-RTX could not build {path.name}"
    return bytes(engine)


@pytest.fixture
def cnn(tmp_path: Path) -> Path:
    """Folder with the small CNN (BatchNorm not folded) and 24 samples in 3 files."""
    models.save(models.small_cnn(), tmp_path / "cnn.onnx")
    models.write_samples(tmp_path / "data", (8, *CNN_SHAPE), files=3)
    return tmp_path


@pytest.fixture
def spec_file(cnn: Path) -> Callable[..., Path]:
    """Write an int8 spec for the small CNN; keyword arguments become calibration keys."""

    def write(**calibration: object) -> Path:
        lines = ["name: cnn", "model: cnn.onnx", "precision: int8", "calibration:"]
        settings = {"data": "data/*.npy", "batch_size": 4, **calibration}
        lines += [f"  {key}: {value}" for key, value in settings.items()]
        path = cnn / "spec.yaml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write


def run(spec_path: Path, cache: Path, messages: list[str] | None = None) -> CalibrationResult:
    spec = load_spec(spec_path)
    log = messages.append if messages is not None else (lambda message: None)
    return calibrate(spec, Path(spec.model), cache, log=log)


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in model.graph.node for output in node.output}


def _fed_by_dq(model: onnx.ModelProto, node_name: str) -> bool:
    node = next(node for node in model.graph.node if node.name == node_name)
    producer = _producers(model).get(node.input[0])
    return producer is not None and producer.op_type == "DequantizeLinear"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


@pytest.mark.parametrize(("high_precision", "algorithm"), [("fp16", "minmax"), ("fp32", "minmax"), ("fp16", "entropy")])
def test_qdq_model_of_a_small_cnn_builds_with_tensorrt_rtx(
    spec_file: Callable[..., Path], cnn: Path, high_precision: str, algorithm: str
) -> None:
    messages: list[str] = []
    result = run(spec_file(high_precision=high_precision, algorithm=algorithm), cnn / "cache", messages)
    model = onnx.load(str(result.qdq_model))
    onnx.checker.check_model(model)
    ops = [node.op_type for node in model.graph.node]
    assert "BatchNormalization" not in ops
    # input, stem relu (block conv; the residual Add's skip: its own pair), block relu (pool), pooled features
    assert ops.count("QuantizeLinear") == 5
    for name in ("stem/Conv", "block/Conv", "head/MatMul/MatMulAddFusion"):
        assert _fed_by_dq(model, name), name
    scale_types = {init.data_type for init in model.graph.initializer if init.name.endswith("_scale")}
    expected = TensorProto.FLOAT16 if high_precision == "fp16" else TensorProto.FLOAT
    assert scale_types == {expected}
    weights = {init.name: init.data_type for init in model.graph.initializer}
    assert weights["ConvBnFusion_W_stem.w_quantized"] == TensorProto.INT8
    assert [value.type.tensor_type.elem_type for value in model.graph.input] == [TensorProto.FLOAT]

    assert len(build_rtx(result.qdq_model, "input", CNN_SHAPE)) > 0
    if algorithm == "minmax":
        x = np.load(cnn / "data" / "batch_000.npy")
        reference = _outputs(cnn / "cnn.onnx", x)
        assert _cosine(_outputs(result.qdq_model, x), reference) > 0.99
    else:
        # 24 samples give the pooled tensor 192 values: a sparse histogram, on which entropy
        # clips most values (KL of a point mass is 0). The warning says so.
        assert any("clips more than 1%" in message and "'flat'" in message for message in messages)


def test_scales_are_the_ones_in_the_qdq_graph(spec_file: Callable[..., Path], cnn: Path) -> None:
    result = run(spec_file(high_precision="fp32", algorithm="minmax"), cnn / "cache")
    model = onnx.load(str(result.qdq_model))
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    assert float(initializers["input_scale"]) == result.scales["input"]
    data = np.concatenate([np.load(path) for path in sorted((cnn / "data").glob("*.npy"))])
    assert result.scales["input"] == float(np.float32(np.abs(data).max() / 127))


def test_cache_file_parses_back_to_the_same_scales(spec_file: Callable[..., Path], cnn: Path):
    result = run(spec_file(mode="native"), cnn / "cache")
    version, algorithm, scales = parse_trt_cache(result.trt_cache("10.13.0.35"))
    assert (version, algorithm) == (101300, "EntropyCalibration2")
    assert scales == result.scales
    text = result.trt_cache("8.6.1").decode()
    assert text.startswith("TRT-8601-EntropyCalibration2\n")
    assert "stem_conv: " in text  # the conv output that BatchNorm folding removes


@pytest.mark.parametrize(
    ("version", "number"),
    [("8.2.3", 8203), ("8.6.1.6", 8601), ("7.1.3.4", 7103), ("10.3.0", 100300),
     ("10.13.0.35", 101300), ("10.13", 101300)],
)  # fmt: skip
def test_tensorrt_version_integer(version: str, number: int) -> None:
    assert trt_version_int(version) == number


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("11.0.0", "has no INT8 calibrator"),  # TensorRT 11 reads Q/DQ graphs only
        ("10.100.0", "not a TensorRT version"),  # would read as 11.0.0 (two digits per part)
        ("10.13.0.35.1", "not a TensorRT version"),
        ("abc", "not a TensorRT version"),
    ],
)
def test_a_version_no_calibration_cache_can_name_is_refused(version: str, expected: str) -> None:
    with pytest.raises(InvalidInputError, match=expected):
        trt_version_int(version)


def test_cache_text_format_details() -> None:
    data = write_trt_cache({"onnx::Conv_3": 0.5, "x": 1.0}, "10.3.0")
    assert data == b"TRT-100300-EntropyCalibration2\nonnx::Conv_3: 3f000000\nx: 3f800000\n"
    assert parse_trt_cache(data)[2] == {"onnx::Conv_3": 0.5, "x": 1.0}
    with pytest.raises(InvalidInputError, match="not a TensorRT version"):
        trt_version_int("latest")
    with pytest.raises(InvalidInputError, match="line 2"):
        parse_trt_cache(b"TRT-8601-EntropyCalibration2\nx: zz\n")


def test_native_mode_scales_every_activation(spec_file: Callable[..., Path], cnn: Path) -> None:
    result = run(spec_file(mode="native"), cnn / "cache")
    expected = {"input", "stem_conv", "stem_bn", "stem_relu", "block_conv", "block_bn",
                "block_add", "block_relu", "pool", "flat", "head_mm", "logits"}  # fmt: skip
    assert set(result.scales) == expected
    assert all(scale >= 2.0**-14 for scale in result.scales.values())
    assert build_rtx(result.qdq_model, "input", CNN_SHAPE)


def test_a_new_fp16_conversion_makes_a_new_qdq_graph(
    spec_file: Callable[..., Path], cnn: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Q/DQ graph's FP16 parts are ``to_fp16``'s: a trtforge that converts another way (a new
    ``GRAPH_REVISIONS``) must not reuse a graph the old conversion made (it reused one whose
    LogSoftmax was still FP16); the scales, which do not depend on it, are reused."""
    import trtforge.calibration as calibration

    cache = cnn / "cache"
    first = run(spec_file(), cache)
    monkeypatch.setattr(calibration, "GRAPH_REVISIONS", calibration.GRAPH_REVISIONS + " (next)")
    messages: list[str] = []
    second = run(spec_file(), cache, messages)
    assert second.reused and second.qdq_model != first.qdq_model
    assert not any("reusing qdq-" in message for message in messages)


def test_rebuild_with_unchanged_inputs_reuses_and_says_so(spec_file: Callable[..., Path], cnn: Path) -> None:
    cache = cnn / "cache"
    first = run(spec_file(), cache)
    messages: list[str] = []
    second = run(spec_file(), cache, messages)
    assert not first.reused and second.reused
    assert any("reusing scales-" in message and "unchanged" in message for message in messages)
    assert (second.qdq_model, second.cache_sha256) == (first.qdq_model, first.cache_sha256)
    assert second.manifest_section() == first.manifest_section()
    assert set(first.manifest_section()) == {
        "algorithm", "mode", "samples", "data_sha256", "cache_sha256"
    }  # fmt: skip

    excluded = run(spec_file(exclude='["block/Conv"]'), cache)
    assert excluded.reused and excluded.qdq_model != first.qdq_model  # same scales, new Q/DQ

    np.save(cnn / "data" / "batch_001.npy", np.zeros((8, *CNN_SHAPE), np.float32))
    changed = run(spec_file(), cache)
    assert not changed.reused and changed.data_sha256 != first.data_sha256
    assert not run(spec_file(algorithm="minmax"), cache).reused


def test_exclude_with_a_typo_suggests_the_node(spec_file: Callable[..., Path], cnn: Path) -> None:
    path = spec_file(exclude='["stem/Conv", "block/Conw"]')
    with pytest.raises(SpecError) as error:
        run(path, cnn / "cache")
    message = str(error.value)
    assert message.startswith(f"{path}:7: ")
    assert "'block/Conw'" in message and "did you mean 'block/Conv'" in message


def test_excluded_nodes_stay_out_of_int8(spec_file: Callable[..., Path], cnn: Path) -> None:
    result = run(spec_file(exclude='["block/Conv", "head/MatMul"]'), cnn / "cache")
    model = onnx.load(str(result.qdq_model))
    assert _fed_by_dq(model, "stem/Conv")
    assert not _fed_by_dq(model, "block/Conv")
    assert not _fed_by_dq(model, "head/MatMul/MatMulAddFusion")  # MatMul+Add was fused
    assert build_rtx(result.qdq_model, "input", CNN_SHAPE)


def test_empty_data_glob_names_the_spec_line(spec_file: Callable[..., Path], cnn: Path) -> None:
    path = spec_file(data="missing/*.npy")
    with pytest.raises(SpecError, match=rf"{path}:5: .*missing/\*\.npy' matches no file"):
        run(path, cnn / "cache")


def test_non_finite_activations_name_the_tensor(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Log", ["input"], ["logged"], name="Log"),
            helper.make_node("MatMul", ["logged", "w"], ["out"], name="MatMul"),
        ],
        "log_model",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.ones((4, 2), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    models.save(model, tmp_path / "log.onnx")
    np.save(tmp_path / "zeros.npy", np.zeros((4, 4), np.float32))
    text = "name: log\nmodel: log.onnx\nprecision: int8\ncalibration: {data: zeros.npy}\n"
    (tmp_path / "spec.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(InvalidInputError, match="tensor 'logged' has NaN or Inf values"):
        run(tmp_path / "spec.yaml", tmp_path / "cache")


def test_multi_input_model_with_npz_data(tmp_path: Path) -> None:
    models.save(models.two_input_model(), tmp_path / "pair.onnx")
    rng = np.random.default_rng(0)
    for index in range(2):
        np.savez(tmp_path / f"pair_{index}.npz", a=rng.normal(size=(5, 4)).astype(np.float32),
                 b=rng.normal(size=(5, 4)).astype(np.float32))  # fmt: skip
    text = "name: pair\nmodel: pair.onnx\nprecision: int8\ncalibration: {data: '*.npz'}\n"
    (tmp_path / "spec.yaml").write_text(text, encoding="utf-8")
    result = run(tmp_path / "spec.yaml", tmp_path / "cache")
    assert result.samples == 10 and set(result.scales) == {"a"}
    assert _fed_by_dq(onnx.load(str(result.qdq_model)), "MatMul/MatMulAddFusion")


def test_digits_example_calibrates_builds_and_keeps_its_accuracy(tmp_path: Path) -> None:
    text = (
        f"name: digits-cnn\nmodel: {DIGITS / 'digits_cnn.onnx'}\nprecision: int8\n"
        f"calibration: {{data: '{DIGITS / 'train'}/*.npy', batch_size: 16, max_samples: 512}}\n"
    )
    (tmp_path / "spec.yaml").write_text(text, encoding="utf-8")
    result = run(tmp_path / "spec.yaml", tmp_path / "cache")
    assert result.samples == 512
    assert build_rtx(result.qdq_model, "input", (1, 8, 8))
    x = np.concatenate([np.load(path) for path in sorted((DIGITS / "val").glob("*.npy"))])
    labels = np.load(DIGITS / "val-labels.npy")
    accuracy = float(np.mean(_outputs(result.qdq_model, x).argmax(axis=1) == labels))
    assert accuracy >= 0.95


def test_a_fixed_batch_model_is_calibrated_in_its_batch(tmp_path: Path) -> None:
    text = (
        f"name: digits-static\nmodel: {DIGITS / 'digits_cnn_static.onnx'}\nprecision: int8\n"
        f"calibration: {{data: '{DIGITS / 'train'}/*.npy', batch_size: 16, max_samples: 40}}\n"
    )
    (tmp_path / "spec.yaml").write_text(text, encoding="utf-8")
    messages: list[str] = []
    result = run(tmp_path / "spec.yaml", tmp_path / "cache", messages)
    assert result.samples == 40
    assert any("batch is fixed at 1" in message for message in messages)


def test_a_fixed_batch_the_data_never_fills_is_refused_not_calibrated_on_nothing(tmp_path: Path) -> None:
    """Scales from no sample at all shipped as an INT8 engine, exit 0."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["out"], name="MatMul")],
        "fixed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 2])],
        [numpy_helper.from_array(np.ones((3, 2), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "fixed.onnx")
    np.save(tmp_path / "three.npy", np.ones((3, 3), np.float32))
    (tmp_path / "spec.yaml").write_text(
        "name: fixed\nmodel: fixed.onnx\nprecision: int8\ncalibration: {data: three.npy}\n", encoding="utf-8"
    )
    with pytest.raises(
        InvalidInputError, match=r"three\.npy: calibration ran on no sample: the model's batch is fixed"
    ):
        run(tmp_path / "spec.yaml", tmp_path / "cache", [])


def test_native_mode_skips_integer_tensors(tmp_path: Path) -> None:
    """A shape computation (Shape -> Reshape) yields int64 tensors: they get no scale."""
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["input"], ["shape"], name="Shape"),
            helper.make_node("Reshape", ["input", "shape"], ["same"], name="Reshape"),
            helper.make_node("MatMul", ["same", "w"], ["out"], name="MatMul"),
        ],
        "shapes",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.ones((4, 2), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    models.save(model, tmp_path / "shapes.onnx")
    np.save(tmp_path / "data.npy", np.ones((6, 4), np.float32))
    text = "name: shapes\nmodel: shapes.onnx\nprecision: int8\ncalibration: {data: data.npy, mode: native}\n"
    (tmp_path / "spec.yaml").write_text(text, encoding="utf-8")
    result = run(tmp_path / "spec.yaml", tmp_path / "cache")
    assert set(result.scales) == {"input", "same", "out"}


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "0", "-0.5"])
def test_a_scales_entry_with_a_scale_no_calibration_writes_is_a_miss(tmp_path: Path, bad: str) -> None:
    """JSON and float() take NaN, infinities, zero and negatives: such an entry ended in an internal
    error (AssertionError, exit 1) further on; it is damage, and calibration runs again."""
    from trtforge.calibration.cache import read_scales, scales_document

    entry = tmp_path / "scales-k.json"
    entry.write_text(scales_document("k", {}, {"input": 0.5, "conv": 0.25}, 64))
    assert read_scales(entry, "k") == ({"input": 0.5, "conv": 0.25}, 64)
    entry.write_text(entry.read_text().replace("0.25", bad))
    assert read_scales(entry, "k") is None


@pytest.mark.parametrize("named", [True, False], ids=["named", "unnamed"])
def test_a_qdq_graph_cached_before_unnamed_nodes_had_names_is_not_reused(
    spec_file: Callable[..., Path], cnn: Path, named: bool
) -> None:
    """Before unnamed nodes were given names, the placement took them all for one node "" and could
    misplace Q/DQ: a graph cached under that key (its scales, exclusions and versions the same) is
    not reused, as a model with unnamed nodes has a key of its own. A named model's key is as it was."""
    if not named:
        model = onnx.load(str(cnn / "cnn.onnx"))
        for node in model.graph.node:
            node.name = ""
        models.save(model, cnn / "cnn.onnx")
    spec = load_spec(spec_file(algorithm="minmax"))
    calibration = Calibration(spec, Path(spec.model), cnn / "cache")
    (scale_set,) = calibration.scale_sets
    earlier = {
        "scales": scale_set.file.stem.removeprefix("scales-"),
        "exclude": [],
        "high_precision": "fp16",
        "versions": calibration.versions,
        "graphs": GRAPH_REVISIONS,
    }
    key_before = cache.qdq_path(cnn / "cache", cache.content_key(earlier))
    if named:
        assert calibration.result(scale_set, []).qdq_model == key_before
        return
    key_before.write_bytes(b"a Q/DQ graph placed with every unnamed node as node ''")
    result = calibration.result(scale_set, [])
    assert result.qdq_model != key_before
    onnx.checker.check_model(onnx.load(str(result.qdq_model)))
