"""Issue 13, items 5 and 7: errors name the user's spec, model, node and tensor in one clean line,
and every piece of advice can be followed (real TensorRT-RTX builds of small generated models)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from clitools import cli
from models import conv_net, need_rtx, save
from onnx import TensorProto, helper

from trtforge.environment import detect_gpus

trt = need_rtx()

SPEC = "name: {name}\nmodel: {model}\nprecision: {precision}\ntargets: ['8.6']\naccuracy: {{enabled: false}}\n"


def _model(path: Path, nodes: list[onnx.NodeProto], dtype: int = TensorProto.FLOAT, opset: int = 17) -> Path:
    """x [1, 4] -> nodes -> y [1, 4], every tensor of ``dtype``; custom ops in domain com.example."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", dtype, [1, 4])],
        [helper.make_tensor_value_info("y", dtype, [1, 4])],
    )
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("com.example", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return save(model, path)


def _spec(folder: Path, model: Path, precision: str = "fp32", name: str = "m") -> Path:
    spec = folder / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name, model=model.name, precision=precision), encoding="utf-8")
    return spec


def _error_line(stderr: str) -> str:
    """The one error line; nothing else of TensorRT's may be printed around it."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


# ---------------------------------------------------------------- 5: name the user's model and spec


def test_fp16_parser_error_names_the_spec_and_model_not_the_cache_file(tmp_path: Path) -> None:
    model = _model(tmp_path / "fancy.onnx", [helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")])
    code, _, stderr = cli("build", _spec(tmp_path, model, "fp16"), "--out", tmp_path / "out")
    line = _error_line(stderr)
    assert code == 3
    assert f"{tmp_path / 'm.yaml'}:2: fancy.onnx (fp16-converted): ONNX parser failed at node #0 (op FancyOp)" in line
    assert "/fp16/" not in line and "node ''" not in line
    assert "TensorRT has no importer and no plugin for op FancyOp" in line


def test_an_unnamed_node_is_named_by_its_index(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="first"),
        helper.make_node("FancyOp", ["r"], ["y"], domain="com.example"),
    ]
    code, _, stderr = cli("build", _spec(tmp_path, _model(tmp_path / "two.onnx", nodes)), "--out", tmp_path / "out")
    line = _error_line(stderr)
    assert code == 3 and "at node #1 (op FancyOp)" in line and "node ''" not in line


def test_builder_error_names_the_spec_and_model_without_native_noise(tmp_path: Path) -> None:
    """FP8 tensors parse, then the builder refuses them for sm86: a builder error, not a parser one."""
    model = _model(tmp_path / "fp8.onnx", [helper.make_node("Identity", ["x"], ["y"])], TensorProto.FLOAT8E4M3FN)
    code, _, stderr = cli("build", _spec(tmp_path, model), "--out", tmp_path / "out")
    line = _error_line(stderr)
    assert code == 3
    assert f"{tmp_path / 'm.yaml'}:2: fp8.onnx: tensorrt-rtx {trt.__version__} could not build it: " in line
    assert "Cannot compile for target(s) sm86" in line
    assert "/_src/" not in line and "could not build model.onnx" not in line


@pytest.mark.skipif(bool(detect_gpus()), reason="the CUDA driver message is noise only on a host without a GPU")
def test_cpu_only_build_errors_carry_no_cuda_driver_noise(tmp_path: Path) -> None:
    """An Add on uint8 fails in the parser; TensorRT then logs a CUDA error that every CPU build has."""
    model = _model(tmp_path / "u8.onnx", [helper.make_node("Add", ["x", "x"], ["y"])], TensorProto.UINT8)
    code, _, stderr = cli("build", _spec(tmp_path, model), "--out", tmp_path / "out")
    line = _error_line(stderr)
    assert code == 3 and "at node #0 (op Add)" in line and "But type is UInt8" in line
    assert "CUDA driver version is insufficient" not in line and "/_src/" not in line and "\n" not in line


def test_unsupported_dtype_names_the_tensor_and_the_type(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    model = _model(tmp_path / "u16.onnx", [helper.make_node("Identity", ["x"], ["y"])], TensorProto.UINT16)
    code, _, stderr = cli("build", _spec(tmp_path, model), "--out", tmp_path / "out")
    line = _error_line(stderr)
    assert code == 3
    assert "input 'x' is uint16, output 'y' is uint16: a type TensorRT has no tensors of" in line
    assert "Failed to convert ONNX" not in line
    assert "Unsupported ONNX data type" not in capfd.readouterr().err  # the parser's own print, caught


def test_the_dtype_list_is_what_the_parser_takes() -> None:
    """TRT_ONNX_DTYPES decides which tensors the dtype message names: it must match the parser."""
    from trtforge.backends.messages import TRT_ONNX_DTYPES

    logger = trt.Logger(trt.Logger.ERROR)
    accepted = set()
    for name, code in TensorProto.DataType.items():
        if code == TensorProto.UNDEFINED:
            continue
        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", code, [2])],
            [helper.make_tensor_value_info("y", code, [2])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        model.ir_version = 10
        network = trt.Builder(logger).create_network(0)
        if trt.OnnxParser(network, logger).parse(model.SerializeToString()):
            accepted.add(name)
    assert accepted == TRT_ONNX_DTYPES


def test_onnxruntime_failures_print_no_ansi_log_lines(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from trtforge.errors import TrtforgeError
    from trtforge.runners.onnxruntime import OnnxrtRunner

    graph = helper.make_graph(
        [helper.make_node("Gather", ["x", "i"], ["y"])],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("i", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    runner = OnnxrtRunner(save(model, tmp_path / "gather.onnx"))
    runner.activate()
    with pytest.raises(TrtforgeError, match="indices element out of data bounds"):
        runner.infer({"x": np.zeros(3, np.float32), "i": np.array([5, 7])})
    assert "\x1b[" not in capfd.readouterr().err


# ---------------------------------------------------------------- 7: advice that can be followed


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real TensorRT-RTX engine (sm86) and the spec that built it."""
    folder = tmp_path_factory.mktemp("built")
    conv_net(folder / "conv.onnx", batch=1)
    spec = folder / "conv.yaml"
    spec.write_text("name: conv\nmodel: conv.onnx\ntargets: ['8.6']\n", encoding="utf-8")
    code, _, stderr = cli("build", spec, "--out", folder / "out")
    assert code == 0, stderr
    (engine,) = (folder / "out").glob("*.engine")
    return engine, spec


def test_the_rtx_capability_list_is_the_installed_one() -> None:
    from trtforge.backends.rtx import RtxBackend
    from trtforge.tags import RTX_COMPUTE_CAPABILITIES

    assert set(RtxBackend(trt).supported_targets()) == set(RTX_COMPUTE_CAPABILITIES)


def test_check_sends_a_gpu_rtx_cannot_compile_for_to_enterprise_tensorrt(built: tuple[Path, Path]) -> None:
    code, out, _ = cli("check", built[0], "--cc", "9.0", "--json")
    (problem,) = json.loads(out)["problems"]
    assert code == 5 and problem["rule"] == "gpu"
    assert "TensorRT-RTX cannot compile for 9.0" in problem["message"]
    assert "backend: tensorrt (enterprise TensorRT)" in problem["message"]
    assert "targets: ['9.0']" not in problem["message"]
    code, out, _ = cli("check", built[0], "--cc", "8.9", "--json")
    assert code == 5 and "rebuild with targets: ['8.9']" in json.loads(out)["problems"][0]["message"]


@pytest.mark.skipif(bool(detect_gpus()), reason="on a GPU host the engine would load and run")
def test_bench_names_no_flag_it_does_not_take(built: tuple[Path, Path]) -> None:
    """bench runs the engine here, on this host's GPU: its no-GPU line offered --cc, which judged
    the engine for another GPU and then failed on this one (bench --cc is gone)."""
    code, _, stderr = cli("bench", built[0], "--requests", "1")
    assert code == 5 and "no GPU detected" in stderr and "bench)" not in stderr
    code, _, stderr = cli("bench", built[0], "--cc", "8.6")
    assert code == 2 and "No such option: --cc" in stderr


def test_verify_with_the_wrong_spec_asks_for_the_right_spec(built: tuple[Path, Path], tmp_path: Path) -> None:
    engine, spec = built
    other = tmp_path / "other.yaml"
    other.write_text(spec.read_text() + "accuracy: {max_samples: 2}\n", encoding="utf-8")
    (tmp_path / "conv.onnx").write_bytes((spec.parent / "conv.onnx").read_bytes())
    code, _, stderr = cli("verify", engine, "--spec", other)
    line = _error_line(stderr)
    assert code == 2
    assert f"{other} is not the spec this engine was built from" in line
    assert "pass the spec that built it (name: conv) as --spec" in line and "rebuild" not in line


def test_inspect_says_when_the_engine_matches_its_manifest(built: tuple[Path, Path]) -> None:
    code, _, stderr = cli("inspect", built[0])
    assert code == 0 and "(matches the manifest)" in stderr and "not signed" in stderr


@pytest.mark.parametrize(("name", "hint"), [("conv.onnx", "trtforge build SPEC"), ("conv.yaml", "trtforge build")])
def test_inspect_of_another_file_says_it_is_not_an_engine(built: tuple[Path, Path], name: str, hint: str) -> None:
    code, _, stderr = cli("inspect", built[1].parent / name)
    line = _error_line(stderr)
    assert code == 2 and "not an engine: pass an .engine that trtforge build wrote" in line and hint in line


def test_build_spec_errors_name_the_spec_file(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """The spec fixture folder differs from the model folder: the model is shown by its full path."""
    spec = write_spec("name: bad\nmodel: {models}/unsupported.onnx\ntargets: ['8.6']\n")
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    line = _error_line(stderr)
    assert code == 3 and f"{spec}:2: " in line and "unsupported.onnx: ONNX parser failed at node #0 'fancy'" in line


def test_native_lines_of_a_failed_build_join_the_error(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """TensorRT-RTX prints "Internal Error: ..." to the C stderr when an Attention node has no kernel."""
    qkv = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 2, 4, 8]) for name in ("q", "k", "v")]
    graph = helper.make_graph(
        [helper.make_node("Attention", ["q", "k", "v"], ["y"])],
        "attention",
        qkv,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    code, _, stderr = cli("build", _spec(tmp_path, save(model, tmp_path / "attn.onnx")), "--out", tmp_path / "out")
    line = _error_line(stderr)
    assert code == 3 and "could not build it" in line and "Internal Error: MyelinCheckException" in line
    assert "Internal Error" not in capfd.readouterr().err  # caught, not printed beside the error
