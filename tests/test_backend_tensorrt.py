"""Enterprise TensorRT (10.x / 11.x) builds: they need `import tensorrt` and a GPU, so they skip
with the reason on CPU-only machines (NVIDIA serves the real wheels only from its own index)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from models import backend_import_problem

from trtforge.cache import timing_cache_file
from trtforge.environment import detect_gpus, installed_version
from trtforge.manifest import read_manifest

if (problem := backend_import_problem("tensorrt")) is not None:
    pytest.skip(
        f"enterprise TensorRT does not import here: {problem} (NVIDIA's index, on a GPU host)", allow_module_level=True
    )
if not detect_gpus():
    pytest.skip("enterprise TensorRT builds on the GPU it targets, and no GPU was detected", allow_module_level=True)

from typer.testing import CliRunner

from trtforge.cli import app
from trtforge.compat import LoadPolicy
from trtforge.runtime import load_engine
from trtforge.tags import ComputeCapability

runner = CliRunner()
PROFILE = "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [4, 3, 16, 16], max: [8, 3, 16, 16]}\n"


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_enterprise_build_targets_the_build_gpu(
    write_spec: Callable[..., Path], tmp_path: Path, precision: str
) -> None:
    spec = write_spec(f"name: conv\nmodel: {{models}}/conv.onnx\nprecision: {precision}\nbackend: tensorrt\n" + PROFILE)
    result = runner.invoke(app, ["build", str(spec), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    (engine,) = tmp_path.glob("*.engine")
    manifest = read_manifest(engine)
    gpu = detect_gpus()[0]
    assert manifest.tensorrt.flavor == "tensorrt"
    assert manifest.gpu.compute_capabilities == [str(gpu.compute_capability)]
    assert manifest.gpu.build_device is not None and manifest.gpu.build_device["name"] == gpu.name
    assert f"-{gpu.compute_capability.sm}-" in engine.name


def _this_gpus_timing_cache(cache_dir: Path) -> Path:
    gpu = detect_gpus()[0]
    version = str(installed_version("tensorrt"))
    return timing_cache_file(cache_dir, "tensorrt", version, gpu.name, gpu.compute_capability)


def test_timing_cache_is_saved_and_reused(
    write_spec: Callable[..., Path], tmp_path: Path, isolated_cache: Path
) -> None:
    spec = write_spec("name: conv\nmodel: {models}/conv.onnx\nbackend: tensorrt\n" + PROFILE)
    cache = _this_gpus_timing_cache(isolated_cache)
    assert runner.invoke(app, ["build", str(spec), "--out", str(tmp_path)]).exit_code == 0
    assert [path.name for path in (isolated_cache / "timing").iterdir()] == [cache.name]
    assert cache.stat().st_size > 0
    second = runner.invoke(app, ["build", str(spec), "--out", str(tmp_path)])
    assert "timing cache: reused" in second.stderr


def test_a_timing_cache_tensorrt_refuses_is_replaced(
    write_spec: Callable[..., Path], tmp_path: Path, isolated_cache: Path
) -> None:
    """A corrupt file (or one made on another device) builds with a fresh cache, which replaces it."""
    spec = write_spec("name: conv\nmodel: {models}/conv.onnx\nbackend: tensorrt\n" + PROFILE)
    cache = _this_gpus_timing_cache(isolated_cache)
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"not a timing cache")
    first = runner.invoke(app, ["build", str(spec), "--out", str(tmp_path)])
    assert first.exit_code == 0, first.stderr
    assert "not reused (made on another GPU or corrupt)" in first.stderr
    assert cache.read_bytes() != b"not a timing cache" and cache.stat().st_size > 0
    second = runner.invoke(app, ["build", str(spec), "--out", str(tmp_path)])
    assert "timing cache: reused" in second.stderr


def test_version_compatible_engine_embeds_its_lean_runtime(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """The plan carries its own lean runtime (no EXCLUDE_LEAN_RUNTIME): the installed runtime
    deserializes it once host code is allowed, without load_runtime() of a lean library."""
    spec = write_spec(
        "name: conv\nmodel: {models}/conv.onnx\nbackend: tensorrt\nbuild: {version_compatible: true}\n" + PROFILE
    )
    assert runner.invoke(app, ["build", str(spec), "--out", str(tmp_path)]).exit_code == 0
    (engine,) = tmp_path.glob("*.engine")
    major = installed_version("tensorrt").split(".")[0]  # type: ignore[union-attr]
    assert f"-trt{major}-" in engine.name
    loaded = load_engine(engine, LoadPolicy(allow_host_code=True))
    assert loaded.engine is not None and loaded.runtime.engine_host_code_allowed


def test_a_target_other_than_the_build_gpu_is_refused_at_its_line_before_the_precision_step(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    other = "8.6" if detect_gpus()[0].compute_capability == ComputeCapability(7, 5) else "7.5"
    spec = write_spec(
        f"name: conv\nmodel: {{models}}/conv.onnx\nprecision: fp16\nbackend: tensorrt\ntargets: ['{other}']\n" + PROFILE
    )
    result = runner.invoke(app, ["build", str(spec), "--out", str(tmp_path)])
    assert result.exit_code == 2 and f"error: {spec}:5: targets: {other} differs from the build GPU" in result.stderr
    assert "FP16" not in result.stderr and not list(tmp_path.glob("*.engine"))
