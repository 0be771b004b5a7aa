"""Enterprise TensorRT 10.x INT8 with ``calibration.mode: native`` (IInt8EntropyCalibrator2 fed
by trtforge's calibration cache).

What runs everywhere: the cache bytes trtforge hands the backend for a given TensorRT version,
decoded here independently of trtforge (``struct.unpack('>f', bytes.fromhex(...))``) and checked
against max |x| / 127 of each activation computed with numpy; and the refusal of native mode on
TensorRT-RTX. What needs ``import tensorrt`` 10.x and a GPU: a real native INT8 build.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clitools import cli
from models import backend_import_problem, save
from onnx import TensorProto, helper, numpy_helper

from trtforge.compat import weakly_typed
from trtforge.console import Reporter
from trtforge.environment import detect_gpus, installed_version
from trtforge.manifest import read_manifest
from trtforge.model import inspect_model
from trtforge.precision import prepare_precision
from trtforge.spec import load_spec

W = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5], [-2.0, 1.0, 0.75], [0.1, -0.3, 1.2]], np.float32)
B = np.array([0.5, -3.0, 1.0], np.float32)
SPEC = """name: mlp
model: mlp.onnx
precision: int8
{backend}profiles:
  - input: {{min: [1, 4], opt: [8, 4], max: [8, 4]}}
calibration: {{data: data/*.npy, mode: native, algorithm: minmax, batch_size: 8}}
accuracy: {{enabled: false}}
"""


@pytest.fixture
def project(tmp_path: Path) -> Callable[[str], Path]:
    """input -> MatMul -> mm -> Relu -> act -> Add -> out, and two .npy files of 8 samples."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w"], ["mm"], name="MatMul"),
            helper.make_node("Relu", ["mm"], ["act"], name="Relu"),
            helper.make_node("Add", ["act", "b"], ["out"], name="Add"),
        ],
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, tmp_path / "mlp.onnx")
    rng = np.random.default_rng(3)
    (tmp_path / "data").mkdir()
    for index in range(2):
        np.save(tmp_path / "data" / f"{index}.npy", rng.normal(0, 2, (8, 4)).astype(np.float32))

    def write(backend: str) -> Path:
        path = tmp_path / "spec.yaml"
        path.write_text(SPEC.format(backend=f"backend: {backend}\n" if backend else ""), encoding="utf-8")
        return path

    return write


def expected_scales(folder: Path) -> dict[str, float]:
    """max |x| / 127 of every activation, by numpy on the same data (float32 like the cache)."""
    x = np.concatenate([np.load(path) for path in sorted((folder / "data").glob("*.npy"))])
    mm = x @ W
    act = np.maximum(mm, 0)
    tensors = {"input": x, "mm": mm, "act": act, "out": act + B}
    return {name: float(np.float32(np.abs(value).max() / 127)) for name, value in tensors.items()}


def decode(cache: bytes) -> tuple[str, dict[str, float]]:
    """The header and the scales of a TensorRT calibration cache, decoded without trtforge."""
    header, *lines = cache.decode("ascii").splitlines()
    scales = {}
    for line in lines:
        match = re.fullmatch(r"(.+): ([0-9a-f]{8})", line)
        assert match, f"not '<tensor>: <8 hex digits>': {line!r}"
        (scales[match.group(1)],) = struct.unpack(">f", bytes.fromhex(match.group(2)))
    return header, scales


@pytest.mark.parametrize(
    ("version", "header"),
    [("10.8.0.43", "TRT-100800-EntropyCalibration2"), ("8.6.1.6", "TRT-8601-EntropyCalibration2")],
)
def test_the_cache_handed_to_tensorrt_holds_amax_over_127_big_endian(
    project: Callable[[str], Path], tmp_path: Path, version: str, header: str
) -> None:
    spec = load_spec(project(""))
    prepared = prepare_precision(
        spec, inspect_model(spec.model_path), "tensorrt", version, tmp_path / "cache", Reporter()
    )
    assert prepared.onnx_path == spec.model_path  # the FP32 graph: the INT8 flag and the cache choose precision
    assert prepared.calibration is not None and prepared.calibration["mode"] == "native"
    assert prepared.calibration["algorithm"] == "minmax" and prepared.calibration["samples"] == 16
    assert prepared.calibration_cache is not None
    got_header, scales = decode(prepared.calibration_cache)
    assert got_header == header
    expected = expected_scales(tmp_path)
    assert set(scales) == set(expected)
    for name, scale in expected.items():
        assert scales[name] == pytest.approx(scale, rel=1e-6), name


def test_native_mode_on_tensorrt_rtx_is_refused_with_the_spec_line(project: Callable[[str], Path]) -> None:
    code, _, stderr = cli("build", project("tensorrt-rtx"), "--out", project("tensorrt-rtx").parent / "out")
    assert code == 2
    assert "calibration.mode native needs enterprise TensorRT 10.x" in stderr and "mode: qdq" in stderr
    assert "Traceback" not in stderr


def _native_skip_reason() -> str | None:
    problem = backend_import_problem("tensorrt")
    if problem is not None:
        return f"{problem}: native INT8 needs enterprise TensorRT 10.x (NVIDIA's index) on a GPU host"
    version = installed_version("tensorrt")
    assert version is not None  # it imports, so its wheel is there
    if not weakly_typed("tensorrt", version):
        return f"TensorRT {version} has no INT8 calibrator (removed in 11): native mode needs 10.x"
    if not detect_gpus():
        return "no NVIDIA GPU detected: enterprise TensorRT builds on the GPU it targets"
    return None


def test_native_int8_build_on_tensorrt_10(
    project: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = _native_skip_reason()
    if reason:
        pytest.skip(reason)
    import tensorrt

    from trtforge.backends.tensorrt import EnterpriseBackend

    calibrators: list[object] = []
    original = EnterpriseBackend._cache_calibrator

    def recording(self: EnterpriseBackend, cache: bytes) -> object:  # the real calibrator, kept for a look
        calibrator = original(self, cache)
        calibrators.append(calibrator)
        return calibrator

    monkeypatch.setattr(EnterpriseBackend, "_cache_calibrator", recording)
    calibration_profiles: list[object] = []
    configure = EnterpriseBackend.configure_precision

    def precision(
        self: EnterpriseBackend, config: Any, request: Any, profiles: Any
    ) -> None:  # the real one, then a look
        configure(self, config, request, profiles)
        calibration_profiles.append(config.get_calibration_profile())

    monkeypatch.setattr(EnterpriseBackend, "configure_precision", precision)
    code, _, stderr = cli("build", project("tensorrt"), "--out", tmp_path / "out")
    # TensorRT ignores a cache whose header is not its own and would then try to calibrate from
    # get_batch (which has no data): the build succeeding shows it took trtforge's scales
    assert code == 0, stderr
    (engine,) = (tmp_path / "out").glob("*.engine")
    assert engine.stat().st_size > 0
    manifest = read_manifest(engine)
    assert manifest.precision == "int8" and manifest.tensorrt.flavor == "tensorrt"
    assert manifest.calibration is not None
    assert (manifest.calibration["mode"], manifest.calibration["algorithm"]) == ("native", "minmax")
    assert manifest.calibration["samples"] == 16
    (calibrator,) = calibrators
    (profile,) = calibration_profiles  # the dynamic batch needs one (NvInfer.h): the spec's first profile
    assert [tuple(dims) for dims in profile.get_shape("input")] == [(1, 4), (8, 4), (8, 4)]  # type: ignore[attr-defined]
    major, minor, patch = (int(part) for part in tensorrt.__version__.split(".")[:3])
    header, scales = decode(bytes(calibrator.read_calibration_cache()))  # type: ignore[attr-defined]
    assert header == f"TRT-{major * 10000 + minor * 100 + patch}-EntropyCalibration2"
    assert scales == pytest.approx(expected_scales(tmp_path), rel=1e-6)
