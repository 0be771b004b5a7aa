"""Enterprise TensorRT's rules that need no ``import tensorrt`` and no GPU: they run everywhere
(the build path the flavors share is seen through a real TensorRT-RTX build, and an install that
does not import through the real TensorRT-RTX wheels with a part of them gone). No test stands in
for TensorRT: the rules enterprise TensorRT alone reaches are tested as the pure functions they are.

The enterprise builds themselves are in ``test_backend_tensorrt.py`` and ``test_native_int8.py``
(skipped without TensorRT and a GPU).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from models import need_rtx

from trtforge.backends.base import BuildRequest
from trtforge.backends.rtx import RtxBackend
from trtforge.backends.tensorrt import build_gpu_refusal, timing_cache_note
from trtforge.build import backend_unavailable
from trtforge.cache import timing_cache_file
from trtforge.calibration.cache import trt_version_int
from trtforge.compat import GpuDevice, weakly_typed
from trtforge.environment import Choice, auto_choice, import_backend, import_failure
from trtforge.errors import BackendUnavailableError, InvalidInputError
from trtforge.spec import BuildOptions, ShapeRange, load_spec
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

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "calibration" / "digits" / "digits_cnn.onnx"
#: the dynamic loader's words where enterprise TensorRT's library is missing
NVINFER_MISSING = "libnvinfer.so.10: cannot open shared object file: No such file or directory"


def _digits_spec(folder: Path, keys: str) -> Path:
    """``folder/spec.yaml``: the digits model with ``keys`` on the third line on, the gate off."""
    spec = folder / "spec.yaml"
    spec.write_text(
        f"name: digits\nmodel: {DIGITS}\n{keys}accuracy: {{enabled: false}}\n"
        "profiles:\n  - input: {min: [1, 1, 8, 8], opt: [4, 1, 8, 8], max: [8, 1, 8, 8]}\n"
    )
    return spec


def _rtx_site() -> Path:
    """The site-packages folder TensorRT-RTX is installed in (skips where it does not import)."""
    return Path(str(need_rtx().__file__)).parent.parent


def _rtx_wheel() -> tuple[str, str]:
    """(``tensorrt_rtx_cu{N}``, its version), read from the installed ``_libs`` wheel's metadata
    (skips where TensorRT-RTX does not import)."""
    need_rtx()
    (libs,) = metadata.packages_distributions()["tensorrt_rtx_libs"]
    return libs.removesuffix("_libs"), metadata.version(libs)


def _venv(folder: Path, keep: Callable[[str], bool]) -> tuple[Path, Path]:
    """(python, site-packages) of a virtual environment that links to this install's packages and
    metadata, those ``keep`` keeps: TensorRT-RTX as an uninstall or a broken copy leaves it,
    without touching this one."""
    real = _rtx_site()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", folder], check=True, capture_output=True)
    paths = {"base": str(folder), "platbase": str(folder)}
    site = Path(sysconfig.get_path("purelib", vars=paths))
    for entry in real.iterdir():
        if keep(entry.name):
            (site / entry.name).symlink_to(entry)
    return Path(sysconfig.get_path("scripts", vars=paths)) / "python", site


def _run(python: Path, *args: object) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``python ARGS`` with this checkout's trtforge first on its path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([python, *map(str, args)], capture_output=True, text=True, env=env, timeout=60)
    return result.returncode, result.stdout, result.stderr


def test_a_tensorrt_rtx_wheel_without_its_libraries_is_named_with_its_fix(tmp_path: Path) -> None:
    """The real TensorRT-RTX wheels with ``tensorrt_rtx_cu{N}_libs`` uninstalled: the bindings' real
    import fails in the dynamic loader, and ``build`` says, in one line and where it was asked for,
    which wheel is broken, its version and the command that reinstalls it (exit 2, nothing written)."""
    wheel, version = _rtx_wheel()
    python, _ = _venv(
        tmp_path / "venv", lambda name: name != "tensorrt_rtx_libs" and not name.startswith(f"{wheel}_libs-")
    )
    spec = _digits_spec(tmp_path, "backend: tensorrt-rtx\n")
    fix = (
        "reinstall its wheels (and the CUDA runtime they need): pip install --force-reinstall "
        f"{wheel}=={version} {wheel}_libs=={version} {wheel}_bindings=={version}"
    )
    for args, where in (((), f"{spec}:3: "), (("--backend", "tensorrt-rtx"), "")):
        code, _, stderr = _run(python, "-m", "trtforge", "build", spec, "--out", tmp_path / "out", *args)
        assert code == 2 and not (tmp_path / "out").exists(), stderr
        (line,) = stderr.splitlines()
        said = re.fullmatch(
            rf"error: {re.escape(where)}tensorrt-rtx {re.escape(version)} is installed but does not import "
            rf"\((\S+): cannot open shared object file: No such file or directory\); {re.escape(fix)}",
            line,
        )
        assert said is not None, line
        assert said[1] in {path.name for path in (_rtx_site() / "tensorrt_rtx_libs").iterdir()}  # the loader's words


@pytest.mark.parametrize(
    ("case", "installed"),
    [("imports", True), ("without its libraries", False), ("a leftover folder", False)],
)
def test_a_tensorrt_rtx_without_wheel_metadata_counts_as_installed_when_it_imports(
    tmp_path: Path, case: str, installed: bool
) -> None:
    """A source or conda install (the real modules, no wheel metadata) is installed when it imports,
    with the version it reports; one that does not import, or a folder an uninstall left without a
    module in it, is not."""

    def no_metadata(name: str) -> bool:
        return not (name.startswith("tensorrt_rtx") and name.endswith(".dist-info"))

    keep: dict[str, Callable[[str], bool]] = {
        "imports": no_metadata,
        "without its libraries": lambda name: no_metadata(name) and name != "tensorrt_rtx_libs",
        "a leftover folder": lambda name: not name.startswith("tensorrt_rtx"),
    }
    python, site = _venv(tmp_path / "venv", keep[case])
    if case == "a leftover folder":
        (site / "tensorrt_rtx").mkdir()
    script = "from trtforge.environment import installed_version; print(repr(installed_version('tensorrt-rtx')))"
    code, stdout, stderr = _run(python, "-c", script)
    assert (code, stderr) == (0, "")
    assert stdout.strip() == (repr(_rtx_wheel()[1]) if installed else "None")


def test_a_tensorrt_wheel_that_does_not_import_is_named_with_its_fix() -> None:
    """Enterprise TensorRT's wheel (its metadata's name and version) whose import failed: the GPU
    driver's libraries are the first suspect, then its three wheels; without one, its pip extra."""
    assert import_failure(FLAVOR_TENSORRT, ("tensorrt_cu12", "10.13.0.35"), NVINFER_MISSING) == (
        "tensorrt 10.13.0.35 is installed but does not import (libnvinfer.so.10: cannot open shared object "
        "file: No such file or directory); check that the GPU driver's libraries are found, or reinstall its "
        "wheels (and the CUDA runtime they need): pip install --force-reinstall tensorrt_cu12==10.13.0.35 "
        "tensorrt_cu12_libs==10.13.0.35 tensorrt_cu12_bindings==10.13.0.35"
    )
    assert import_failure(FLAVOR_TENSORRT, None, "No module named 'tensorrt'") == (
        "tensorrt is not installed (import tensorrt failed: No module named 'tensorrt'); "
        "install it with: pip install 'trtforge[tensorrt]'"
    )


@pytest.mark.parametrize(
    ("has_trt", "trt_found", "reason"),
    [
        (True, True, "no GPU detected"),
        (False, True, "tensorrt does not import"),
        (False, False, "tensorrt is not installed"),
    ],
)
def test_auto_builds_on_the_cpu_unless_tensorrt_is_installed_and_a_gpu_present(
    has_trt: bool, trt_found: bool, reason: str
) -> None:
    """Installed (its metadata, or its import) is not enough for auto: without a GPU TensorRT-RTX
    builds, and the reason names the GPU; a ``tensorrt`` module that is there and is not installed
    (it does not import, or a leftover folder) is said as it is."""
    assert auto_choice(has_trt, lambda: trt_found, (), has_rtx=lambda: True) == Choice(
        FLAVOR_RTX, f"{reason}; tensorrt-rtx builds on the CPU"
    )
    with pytest.raises(BackendUnavailableError, match=r"^no TensorRT backend is installed: pip install"):
        auto_choice(has_trt, lambda: trt_found, (), has_rtx=lambda: False)


@pytest.mark.parametrize(
    ("has_trt", "gpus", "questions"),
    [(True, (gpu("8.6", "NVIDIA A10"),), []), (True, (), ["has_rtx"]), (False, (), ["has_rtx", "trt_found"])],
    ids=["tensorrt-and-a-gpu", "no-gpu", "no-tensorrt"],
)
def test_auto_asks_only_what_decides(has_trt: bool, gpus: tuple[GpuDevice, ...], questions: list[str]) -> None:
    """With tensorrt installed and a GPU present nothing else decides: whether TensorRT-RTX is
    installed was asked all the same, which imports a TensorRT-RTX that has no wheel metadata (a
    tarball's wheel: ~70 ms and its runtime loaded beside enterprise TensorRT's in every build)."""
    asked: list[str] = []

    def question(name: str) -> Callable[[], bool]:
        return lambda: asked.append(name) is None

    auto_choice(has_trt, question("trt_found"), gpus, question("has_rtx"))
    assert asked == questions


def test_auto_on_a_gpu_host_names_the_broken_tensorrt_and_the_way_out(tmp_path: Path) -> None:
    """With a GPU auto picks the installed tensorrt (choosing imports nothing); its failed import is
    the build's error, never a silent switch to TensorRT-RTX, and names the way out where it is installed."""
    choice = auto_choice(True, lambda: True, (gpu("8.6", "NVIDIA A10"),), has_rtx=lambda: False)
    assert choice == Choice(FLAVOR_TENSORRT, "tensorrt is installed and a GPU is present (NVIDIA A10)")
    spec = load_spec(_digits_spec(tmp_path, "precision: fp32\ntargets: ['8.6']\n"))
    broken = BackendUnavailableError(import_failure(FLAVOR_TENSORRT, ("tensorrt_cu12", "10.13.0.35"), NVINFER_MISSING))
    said = str(backend_unavailable(broken, spec, None, choice, has_rtx=True))
    assert said.startswith("tensorrt 10.13.0.35 is installed but does not import (libnvinfer.so.10")
    assert "--backend auto chose it (tensorrt is installed and a GPU is present (NVIDIA A10))" in said
    assert said.endswith("or pass --backend tensorrt-rtx to build on the CPU") and "\n" not in said
    assert backend_unavailable(broken, spec, None, choice, has_rtx=False) is broken  # no way out to name
    asked = Choice(FLAVOR_TENSORRT, "tensorrt requested")
    assert backend_unavailable(broken, spec, "tensorrt", asked, has_rtx=True) is broken  # the user's own choice
