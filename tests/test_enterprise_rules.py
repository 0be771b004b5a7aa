"""Enterprise TensorRT's rules that need no ``import tensorrt`` and no GPU: they run everywhere
(the build path the flavors share is seen through a real TensorRT-RTX build).

The enterprise builds themselves are in ``test_backend_tensorrt.py`` and ``test_native_int8.py``
(skipped without TensorRT and a GPU).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from clitools import cli
from models import need_rtx

from trtforge import environment
from trtforge.backends.base import BuildRequest
from trtforge.backends.rtx import RtxBackend
from trtforge.backends.tensorrt import build_gpu_refusal, timing_cache_note
from trtforge.cache import timing_cache_file
from trtforge.calibration.cache import trt_version_int
from trtforge.compat import GpuDevice, weakly_typed
from trtforge.environment import Choice, choose_backend, import_backend
from trtforge.errors import BackendUnavailableError, InvalidInputError
from trtforge.spec import BuildOptions, ShapeRange
from trtforge.tags import FLAVOR_RTX, FLAVOR_TENSORRT, ComputeCapability

# ---------------------------------------------------------------- weakly typed: one rule, three users


@pytest.mark.parametrize(
    ("flavor", "version", "expected"),
    [
        ("tensorrt", "10.13.0.35", True),
        ("tensorrt", "10.0.1", True),
        ("tensorrt", "8.6.1.6", True),
        ("tensorrt", "11.0.0.1", False),
        ("tensorrt", "12.1", False),
        ("tensorrt-rtx", "1.7.1.116", False),
    ],
)
def test_weakly_typed_is_enterprise_tensorrt_before_11(flavor: str, version: str, expected: bool) -> None:
    assert weakly_typed(flavor, version) is expected


def test_the_calibration_cache_and_the_precision_step_follow_the_rule() -> None:
    """The calibration cache exists exactly where the rule says the calibrator does."""
    assert trt_version_int("10.13.0.35") == 101300
    with pytest.raises(InvalidInputError, match=r"TensorRT 11\.0\.0 has no INT8 calibrator"):
        trt_version_int("11.0.0")


# ---------------------------------------------------------------- the build GPU decides the targets


def gpu(cc: str, name: str = "NVIDIA RTX A6000") -> GpuDevice:
    return GpuDevice(0, name, ComputeCapability.parse(cc), "570.86", 48 << 30, 47 << 30)


def refusal(
    targets: tuple[str, ...] = (),
    device: GpuDevice | None = None,
    hardware: str = "none",
    same_cc: bool = True,
) -> tuple[tuple[str | int, ...], str] | None:
    options = BuildOptions(hardware_compatibility=hardware)  # type: ignore[arg-type]
    ccs = tuple(ComputeCapability.parse(cc) for cc in targets)
    return build_gpu_refusal(ccs, options, device, "10.8.0.43", same_cc)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ({}, None),
        ({"targets": ("8.6",)}, None),
        (
            {"targets": ("8.6", "8.9")},
            (("targets", 1), "targets: 8.9 differs from the build GPU (NVIDIA RTX A6000, 8.6)"),
        ),
        ({"device": None}, (("backend",), "no GPU was detected; use backend: tensorrt-rtx")),
        ({"hardware": "ampere_plus", "targets": ("8.0", "8.9", "12.0")}, None),
        ({"hardware": "ampere_plus", "targets": ("8.9", "7.5")}, (("targets", 1), "7.5 is older than Ampere (8.0)")),
        (
            {"hardware": "ampere_plus", "device": gpu("7.5", "Tesla T4")},
            (
                ("build", "hardware_compatibility"),
                "ampere_plus needs an Ampere (8.0) or newer build GPU; this one (Tesla T4) is 7.5",
            ),
        ),
        ({"hardware": "same_compute_capability"}, None),
        (
            {"hardware": "same_compute_capability", "same_cc": False},
            (("build", "hardware_compatibility"), "needs TensorRT >= 10.9, this is 10.8.0.43"),
        ),
        (
            {"hardware": "same_compute_capability", "device": gpu("7.0", "Tesla V100")},
            (
                ("build", "hardware_compatibility"),
                "needs a Turing (7.5) or newer build GPU; this one (Tesla V100) is 7.0",
            ),
        ),
        ({"hardware": "same_compute_capability", "device": gpu("7.5", "Tesla T4")}, None),
        (
            {"hardware": "same_compute_capability", "targets": ("8.9",)},
            (("targets", 0), "targets: 8.9 differs from the build GPU"),
        ),
    ],
)
def test_the_build_gpu_refuses_what_it_cannot_build(
    case: dict[str, Any], expected: tuple[tuple[str | int, ...], str] | None
) -> None:
    """One line per refusal, with the spec key ``build`` names in its error, decided before the
    precision step (``EnterpriseBackend.target_refusal`` feeds it the first GPU CUDA sees)."""
    found = refusal(**{"device": gpu("8.6"), **case})
    if expected is None:
        assert found is None
        return
    assert found is not None
    key, message = found
    assert key == expected[0] and expected[1] in message and "\n" not in message


# ---------------------------------------------------------------- timing caches, one per build GPU


def test_each_build_gpu_keeps_its_own_timing_cache(tmp_path: Path) -> None:
    """TensorRT refuses a timing cache made on another device: the file is named after the GPU too."""
    h100 = timing_cache_file(tmp_path, "tensorrt", "10.13.0.35", "NVIDIA H100 80GB HBM3", ComputeCapability(9, 0))
    assert h100 == tmp_path / "timing" / "tensorrt-10.13.0.35-nvidia-h100-80gb-hbm3-sm90.cache"
    a10 = timing_cache_file(tmp_path, "tensorrt", "10.13.0.35", "NVIDIA A10", ComputeCapability(8, 6))
    assert a10.name == "tensorrt-10.13.0.35-nvidia-a10-sm86.cache"
    assert timing_cache_file(tmp_path, "tensorrt", "10.13.0.35", "/../", ComputeCapability(8, 6)).parent == a10.parent
    other_version = timing_cache_file(tmp_path, "tensorrt", "10.12.0.36", "NVIDIA A10", ComputeCapability(8, 6))
    assert len({h100, a10, other_version}) == 3


def test_the_timing_cache_note_says_why_a_file_was_not_reused(tmp_path: Path) -> None:
    path = tmp_path / "t.cache"
    assert timing_cache_note(path, found=True, reused=True) == f"timing cache: reused {path}"
    assert timing_cache_note(path, found=False, reused=False) == f"timing cache: new {path}"
    assert timing_cache_note(path, found=True, reused=False) == (
        f"timing cache: {path} not reused (made on another GPU or corrupt); this build's replaces it"
    )


# ---------------------------------------------------------------- the calibration profile


class _Quiet:
    def phase_start(self, *args: Any) -> None: ...
    def step(self, *args: Any) -> None: ...
    def phase_finish(self, *args: Any) -> None: ...
    def note(self, *args: Any) -> None: ...


def test_the_precision_hook_gets_the_profiles_in_the_spec_order(model_dir: Path) -> None:
    """Native INT8 sets the first one as the calibration profile (NvInfer.h: a network with runtime
    dimensions needs one). Seen through a real TensorRT-RTX build: the path is the flavors' shared one."""
    need_rtx()
    seen: list[list[tuple[int, ...]]] = []

    class Recording(RtxBackend):
        def configure_precision(self, config: Any, request: BuildRequest, profiles: Sequence[Any]) -> None:
            seen.extend([tuple(dims) for dims in profile.get_shape("input")] for profile in profiles)

    shapes = [([1, 3, 16, 16], [2, 3, 16, 16], [4, 3, 16, 16]), ([4, 3, 16, 16], [8, 3, 16, 16], [16, 3, 16, 16])]
    request = BuildRequest(
        onnx_path=model_dir / "conv.onnx",
        precision="fp32",
        profiles=tuple({"input": ShapeRange(min=low, opt=opt, max=high)} for low, opt, high in shapes),
        targets=(ComputeCapability(8, 6),),
        options=BuildOptions(),
    )
    Recording(import_backend(FLAVOR_RTX)).build(request, _Quiet())
    assert seen == [[tuple(dims) for dims in profile] for profile in shapes]


def test_fp32_tensors_compute_in_fp32_not_tf32(model_dir: Path) -> None:
    """TensorRT allows TF32 for FP32 convolutions and matrix products by default (Ampere and later):
    the builder config a real TensorRT-RTX build uses has it cleared, at every precision."""
    need_rtx()
    trt = import_backend(FLAVOR_RTX)
    assert trt.Builder(trt.Logger()).create_builder_config().get_flag(trt.BuilderFlag.TF32)  # TensorRT's default
    seen: list[bool] = []

    class Recording(RtxBackend):
        def configure_precision(self, config: Any, request: BuildRequest, profiles: Sequence[Any]) -> None:
            seen.append(config.get_flag(self.trt.BuilderFlag.TF32))

    request = BuildRequest(
        onnx_path=model_dir / "conv.onnx",
        precision="fp32",
        profiles=({"input": ShapeRange(min=[1, 3, 16, 16], opt=[2, 3, 16, 16], max=[4, 3, 16, 16])},),
        targets=(ComputeCapability(8, 6),),
        options=BuildOptions(),
    )
    Recording(trt).build(request, _Quiet())
    assert seen == [False]


# ---------------------------------------------------------------- a TensorRT wheel that does not import

DIGITS = Path(__file__).resolve().parent.parent / "calibration" / "digits" / "digits_cnn.onnx"


def _digits_spec(folder: Path, keys: str) -> Path:
    """``folder/spec.yaml``: the digits model with ``keys`` on the third line on, the gate off."""
    spec = folder / "spec.yaml"
    spec.write_text(
        f"name: digits\nmodel: {DIGITS}\n{keys}accuracy: {{enabled: false}}\n"
        "profiles:\n  - input: {min: [1, 1, 8, 8], opt: [4, 1, 8, 8], max: [8, 1, 8, 8]}\n"
    )
    return spec


@pytest.fixture
def broken_tensorrt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A ``tensorrt`` wheel as pip leaves it when a CUDA library it loads is missing: its metadata
    and module are there, the import raises."""
    site = tmp_path / "site"
    (site / "tensorrt").mkdir(parents=True)
    (site / "tensorrt" / "__init__.py").write_text(
        'raise ImportError("libnvinfer.so.10: cannot open shared object file: No such file or directory")\n'
    )
    info = site / "tensorrt_cu12-10.13.0.35.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tensorrt_cu12\nVersion: 10.13.0.35\n")
    monkeypatch.syspath_prepend(str(site))
    environment.installed_version.cache_clear()
    yield tmp_path
    environment.installed_version.cache_clear()


def test_a_tensorrt_wheel_that_does_not_import_is_named_with_its_fix(broken_tensorrt: Path) -> None:
    assert environment.installed_version(FLAVOR_TENSORRT) == "10.13.0.35"
    with pytest.raises(BackendUnavailableError) as raised:
        import_backend(FLAVOR_TENSORRT)
    assert str(raised.value) == (
        "tensorrt 10.13.0.35 is installed but does not import (libnvinfer.so.10: cannot open shared object "
        "file: No such file or directory); check that the GPU driver's libraries are found, or reinstall its "
        "wheels (and the CUDA runtime they need): pip install --force-reinstall tensorrt_cu12==10.13.0.35 "
        "tensorrt_cu12_libs==10.13.0.35 tensorrt_cu12_bindings==10.13.0.35"
    )
    assert raised.value.exit_code == 2


def test_a_spec_that_names_a_backend_that_does_not_import_is_named_at_its_line(
    broken_tensorrt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``backend: tensorrt`` in the spec: the error says which line asked for it."""
    monkeypatch.setattr(environment, "detect_gpus", lambda: (gpu("8.6", "NVIDIA A10"),))
    spec = _digits_spec(broken_tensorrt, "backend: tensorrt\n")
    code, _, stderr = cli("build", spec, "--out", broken_tensorrt / "out")
    assert code == 2 and f"error: {spec}:3: tensorrt 10.13.0.35 is installed but does not import" in stderr, stderr
    code, _, stderr = cli("build", spec, "--backend", "tensorrt", "--out", broken_tensorrt / "out")
    assert code == 2 and "error: tensorrt 10.13.0.35 is installed but does not import" in stderr, stderr


def test_auto_without_a_gpu_builds_on_the_cpu_beside_an_installed_tensorrt(
    broken_tensorrt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed (its metadata) is not enough for auto: without a GPU TensorRT-RTX builds, and the
    reason names the GPU, not the install."""
    monkeypatch.setattr(environment, "detect_gpus", lambda: ())
    assert choose_backend("auto") == Choice(FLAVOR_RTX, "no GPU detected; tensorrt-rtx builds on the CPU")


def test_a_leftover_tensorrt_folder_is_not_an_installed_tensorrt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``tensorrt`` folder without a module in it (an uninstall's leftover) imports as an empty
    namespace package: no version, not installed, and choosing says so instead of failing."""
    (tmp_path / "tensorrt").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    environment.installed_version.cache_clear()
    try:
        assert environment.installed_version(FLAVOR_TENSORRT) is None
        assert choose_backend("auto").flavor == FLAVOR_RTX
    finally:
        environment.installed_version.cache_clear()
        sys.modules.pop("tensorrt", None)  # the namespace package it imported


def test_auto_says_a_tensorrt_without_wheel_metadata_does_not_import(broken_tensorrt: Path) -> None:
    """A source or conda install (no wheel metadata) counts as installed when it imports: this one
    does not, so auto builds with TensorRT-RTX, and says why truly (it is there, it is broken)."""
    need_rtx()
    for info in (broken_tensorrt / "site").glob("*.dist-info"):
        shutil.rmtree(info)
    environment.installed_version.cache_clear()
    assert environment.installed_version(FLAVOR_TENSORRT) is None
    assert choose_backend("auto") == Choice(FLAVOR_RTX, "tensorrt does not import; tensorrt-rtx builds on the CPU")


def test_auto_on_a_gpu_host_names_the_broken_tensorrt_and_the_way_out(
    broken_tensorrt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a GPU auto picks the installed tensorrt (choosing imports nothing); its failed import is
    the build's error, never a silent switch to TensorRT-RTX. The GPU is the one input faked here."""
    monkeypatch.setattr(environment, "detect_gpus", lambda: (gpu("8.6", "NVIDIA A10"),))
    spec = _digits_spec(broken_tensorrt, "precision: fp32\ntargets: ['8.6']\n")
    code, _, stderr = cli("build", spec, "--out", broken_tensorrt / "out")
    assert code == 2
    assert "tensorrt 10.13.0.35 is installed but does not import (libnvinfer.so.10" in stderr
    assert "--backend auto chose it (tensorrt is installed and a GPU is present (NVIDIA A10))" in stderr
    assert "pass --backend tensorrt-rtx to build on the CPU" in stderr and "Traceback" not in stderr
    assert not (broken_tensorrt / "out").exists() or not any((broken_tensorrt / "out").iterdir())
