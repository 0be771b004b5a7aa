"""Runners: onnxruntime everywhere; the TensorRT runner where a GPU and a runtime that accepts the
engine exist (it skips with the reason elsewhere). The dtype and profile rules are pure and run here."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from trtforge.errors import InvalidInputError
from trtforge.runners import cuda
from trtforge.runners.base import RunnerError
from trtforge.runners.onnxruntime import OnnxrtRunner
from trtforge.runners.tensorrt import ProfileRange, TrtRunner, describe_ranges, matching_profile

# ---------------------------------------------------------------- onnxruntime


def test_onnxrt_runner_dynamic_batch_matches_onnxruntime(model_dir: Path) -> None:
    model = model_dir / "conv.onnx"
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    with OnnxrtRunner(model) as runner:
        assert runner.is_active and runner.name == "onnxrt:conv.onnx"
        for batch in (1, 5):
            x = rng.random((batch, 3, 16, 16), dtype=np.float32)
            out = runner.infer({"input": x})
            assert list(out) == ["logits"] and out["logits"].shape == (batch, 10)
            np.testing.assert_array_equal(out["logits"], session.run(None, {"input": x})[0])
    assert not runner.is_active


def test_onnxrt_runner_several_inputs_from_bytes(model_dir: Path) -> None:
    runner = OnnxrtRunner((model_dir / "two_inputs.onnx").read_bytes(), name="two")
    runner.activate()
    try:
        out = runner.infer({"image": np.ones((2, 3, 8, 8), np.float32), "meta": np.ones((2, 4), np.float32)})
        assert out["out"].shape == (2, 5)
        assert runner.input_names == ["image", "meta"]
    finally:
        runner.deactivate()


def test_onnxrt_runner_errors_are_one_clear_line(model_dir: Path, tmp_path: Path) -> None:
    runner = OnnxrtRunner(model_dir / "two_inputs.onnx", name="two")
    with pytest.raises(RunnerError, match="not active"):
        runner.infer({})
    with runner:
        with pytest.raises(InvalidInputError, match="input 'meta' is missing"):
            runner.infer({"image": np.ones((1, 3, 8, 8), np.float32)})
        with pytest.raises(InvalidInputError, match="no input 'extra'"):
            runner.infer(
                {"image": np.ones((1, 3, 8, 8), np.float32), "meta": np.ones((1, 4), np.float32), "extra": np.ones(1)}
            )
        with pytest.raises(InvalidInputError, match="two:"):
            runner.infer({"image": np.ones((1, 3, 9), np.float32), "meta": np.ones((1, 4), np.float32)})
        with pytest.raises(RunnerError, match="already active"):
            runner.activate()
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(InvalidInputError, match="cannot load the model"):
        OnnxrtRunner(junk).activate()


def test_onnxrt_runner_runs_the_sessions_binding_without_its_python_run(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request calls the session's C++ binding itself: onnxruntime's Python ``run`` checks, in
    Python, what no request of ours needs (~15 µs a request once a ResNet-18 inference has evicted
    the CPU caches). Its outputs are the public ``run``'s, and a bad feed is still one clear line,
    a missing input included (which the binding notices only when a node reads it)."""
    model = model_dir / "conv.onnx"
    x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]

    def public_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a request went through onnxruntime's Python InferenceSession.run")

    with OnnxrtRunner(model, name="conv") as runner:
        monkeypatch.setattr(ort.InferenceSession, "run", public_run)
        np.testing.assert_array_equal(runner.infer({"input": x})["logits"], expected)
        with pytest.raises(InvalidInputError, match="conv: input 'input' is missing"):
            runner.infer({})
        with pytest.raises(InvalidInputError, match=r"conv: the model has no input 'other' \(input 'input' is missing"):
            runner.infer({"other": x})
        with pytest.raises(InvalidInputError, match="conv: the model has no input 'extra'"):
            runner.infer({"input": x, "extra": x})
        with pytest.raises(InvalidInputError, match="conv: INVALID_ARGUMENT: Unexpected input data type"):
            runner.infer({"input": x.astype(np.float64)})


def test_onnxrt_runner_refuses_an_initializer_fed_as_an_input() -> None:
    """From IR 4 an initializer listed among the graph's inputs is overridable: onnxruntime would
    take it from the feed and run, but it is no input of the model (a TensorRT engine has none)."""
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [2], [1.0, 2.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"])],
        "overridable",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2]) for name in ("x", "bias")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    x = np.ones(2, np.float32)
    with OnnxrtRunner(model.SerializeToString(), name="add") as runner:
        np.testing.assert_array_equal(runner.infer({"x": x})["y"], [2.0, 3.0])
        with pytest.raises(InvalidInputError, match="add: the model has no input 'bias'"):
            runner.infer({"x": x, "bias": x})
        with pytest.raises(InvalidInputError, match=r"add: the model has no input 'bias' \(input 'x' is missing"):
            runner.infer({"bias": x})


# ---------------------------------------------------------------- profiles (pure)


def test_matching_profile_prefers_the_current_one() -> None:
    small = ProfileRange({"x": (1, 3)}, {"x": (8, 3)})
    large = ProfileRange({"x": (4, 3)}, {"x": (64, 3)})
    profiles = [small, large]
    assert matching_profile({"x": (2, 3)}, profiles, None) == 0
    assert matching_profile({"x": (32, 3)}, profiles, 0) == 1
    assert matching_profile({"x": (6, 3)}, profiles, 1) == 1  # fits both: no switch
    assert matching_profile({"x": (65, 3)}, profiles, 0) is None
    assert matching_profile({"x": (2, 4)}, profiles, None) is None
    assert "profile 1: x [4, 3]..[64, 3]" in describe_ranges(profiles)


# ---------------------------------------------------------------- CUDA and TensorRT (GPU hosts)


def _require_gpu() -> None:
    try:
        cuda.cuda_runtime()
    except RunnerError as exc:
        pytest.skip(str(exc))
    if cuda.gpu_count() == 0:
        pytest.skip("no CUDA device (or driver) on this host: the TensorRT runner needs a GPU")


def test_device_buffer_round_trip_on_a_stream() -> None:
    _require_gpu()
    stream = cuda.CudaStream()
    buffer = cuda.DeviceBuffer(16)
    try:
        data = np.arange(32, dtype=np.float32)
        buffer.ensure(data.nbytes)
        buffer.copy_from_host(data, stream.handle)
        back = np.zeros_like(data)
        buffer.copy_to_host(back, stream.handle)
        stream.synchronize()
        np.testing.assert_array_equal(back, data)
    finally:
        buffer.free()
        stream.destroy()
    with pytest.raises(RunnerError, match="CUDA error cudaErrorMemoryAllocation"):
        cuda.DeviceBuffer(1 << 60)


def _mixed_dtypes(path: Path) -> Path:
    """half [N,4] -> half*2; int32 [N,4] -> +1 (int32) and > 2 (bool): several I/O dtypes."""
    nodes = [
        helper.make_node("Add", ["h", "h"], ["h2"], name="double"),
        helper.make_node("Add", ["i", "one"], ["i1"], name="inc"),
        helper.make_node("Greater", ["i", "two"], ["big"], name="gt"),
    ]
    graph = helper.make_graph(
        nodes,
        "mixed",
        [
            helper.make_tensor_value_info("h", TensorProto.FLOAT16, ["N", 4]),
            helper.make_tensor_value_info("i", TensorProto.INT32, ["N", 4]),
        ],
        [
            helper.make_tensor_value_info("h2", TensorProto.FLOAT16, ["N", 4]),
            helper.make_tensor_value_info("i1", TensorProto.INT32, ["N", 4]),
            helper.make_tensor_value_info("big", TensorProto.BOOL, ["N", 4]),
        ],
        [helper.make_tensor("one", TensorProto.INT32, [], [1]), helper.make_tensor("two", TensorProto.INT32, [], [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _engine(onnx_path: Path, profiles: list[dict[str, tuple[list[int], list[int], list[int]]]]) -> Iterator[Any]:
    """Build for this GPU with an installed runtime and deserialize, or skip saying why not."""
    _require_gpu()
    if not any(importlib.util.find_spec(module) for module in ("tensorrt", "tensorrt_rtx")):
        pytest.skip("no TensorRT runtime installed (tensorrt or tensorrt_rtx) to build and run an engine")
    from trtforge.backends import BuildRequest, open_backend
    from trtforge.environment import detect_gpus, installed_version
    from trtforge.spec import BuildOptions, ShapeRange

    gpus = detect_gpus()
    if not gpus:
        pytest.skip("NVML sees no GPU")
    cc = gpus[0].compute_capability
    flavor = next((f for f in ("tensorrt", "tensorrt-rtx") if installed_version(f)), None)
    if flavor is None:
        pytest.skip("neither tensorrt nor tensorrt-rtx imports")
    backend = open_backend(flavor)
    if flavor == "tensorrt-rtx" and cc not in backend.supported_targets():  # type: ignore[attr-defined]
        pytest.skip(f"TensorRT-RTX {backend.version} cannot run engines on compute capability {cc} (this GPU)")
    request = BuildRequest(
        onnx_path=onnx_path,
        precision="fp32",
        profiles=tuple({n: ShapeRange(min=a, opt=b, max=c) for n, (a, b, c) in p.items()} for p in profiles),
        targets=(cc,) if flavor == "tensorrt-rtx" else (),
        options=BuildOptions(),
    )

    class _Quiet:
        def phase_start(self, *args: Any) -> None: ...
        def step(self, *args: Any) -> None: ...
        def phase_finish(self, *args: Any) -> None: ...
        def note(self, *args: Any) -> None: ...

    built = backend.build(request, _Quiet())
    trt = backend.trt  # type: ignore[attr-defined]
    runtime = trt.Runtime(backend.logger)  # type: ignore[attr-defined]
    engine = runtime.deserialize_cuda_engine(built.engine)
    # built here, for this GPU, by a backend that says it supports it: a refusal is a failure
    assert engine is not None, f"{flavor} {backend.version} refused its own engine: {backend.errors}"  # type: ignore[attr-defined]
    yield trt, engine
    del engine, runtime


@pytest.fixture
def conv_engine(model_dir: Path) -> Iterator[Any]:
    yield from _engine(
        model_dir / "conv.onnx",
        [
            {"input": ([1, 3, 16, 16], [4, 3, 16, 16], [8, 3, 16, 16])},
            {"input": ([9, 3, 16, 16], [16, 3, 16, 16], [32, 3, 16, 16])},
        ],
    )


def test_trt_runner_dynamic_shapes_switch_profiles(conv_engine: Any, model_dir: Path) -> None:
    trt, engine = conv_engine
    session = ort.InferenceSession(str(model_dir / "conv.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    first, second = TrtRunner(engine, trt, name="a"), TrtRunner(engine, trt, name="b")  # one engine, two runners
    with first, second:
        for batch in (1, 8, 9, 32, 3):
            x = rng.random((batch, 3, 16, 16), dtype=np.float32)
            expected = session.run(None, {"input": x})[0]
            for runner in (first, second):
                out = runner.infer({"input": x})
                assert out["logits"].shape == (batch, 10) and out["logits"].dtype == np.float32
                np.testing.assert_allclose(out["logits"], expected, atol=2e-3, rtol=2e-3)
        with pytest.raises(InvalidInputError, match="no optimization profile accepts"):
            first.infer({"input": np.zeros((33, 3, 16, 16), np.float32)})
        with pytest.raises(InvalidInputError, match="engine expects float32"):
            first.infer({"input": np.zeros((1, 3, 16, 16), np.float64)})


def test_trt_runner_several_inputs_and_dtypes(tmp_path: Path) -> None:
    model = _mixed_dtypes(tmp_path / "mixed.onnx")
    for trt, engine in _engine(model, [{"h": ([1, 4], [2, 4], [4, 4]), "i": ([1, 4], [2, 4], [4, 4])}]):
        h = np.arange(12, dtype=np.float16).reshape(3, 4)
        i = np.arange(12, dtype=np.int32).reshape(3, 4)
        with TrtRunner(engine, trt) as runner:
            out = runner.infer({"h": h, "i": i})
        assert out["h2"].dtype == np.float16 and out["i1"].dtype == np.int32 and out["big"].dtype == np.bool_
        np.testing.assert_array_equal(out["h2"], h * 2)
        np.testing.assert_array_equal(out["i1"], i + 1)
        np.testing.assert_array_equal(out["big"], i > 2)


def test_a_stream_handle_is_the_address_it_wraps() -> None:
    """No GPU needed: TensorRT takes a stream as its address (get_cuda_native_handle in
    cuda-python 12.9.1 and 13.x, where int() of the object is deprecated; int() before)."""
    try:
        runtime = cuda.cuda_runtime()
    except RunnerError as exc:
        pytest.skip(str(exc))
    assert cuda.native_handle(runtime.cudaStream_t(0x7F00_1234)) == 0x7F00_1234
