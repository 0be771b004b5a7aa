"""Enterprise TensorRT 10.x and 11.x: the build GPU decides the targets; 10.x keeps the
FP16/INT8 builder flags and the entropy calibrator, 11.x is strongly typed like TensorRT-RTX."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trtforge.backends.base import BuildRequest, GpuTargets, TensorRTApiBackend
from trtforge.compat import GpuDevice, weakly_typed
from trtforge.environment import detect_gpus
from trtforge.fsutil import atomic_write_bytes
from trtforge.spec import BuildOptions
from trtforge.tags import AMPERE, FLAVOR_TENSORRT, ComputeCapability

#: the oldest build GPU TensorRT's SAME_COMPUTE_CAPABILITY supports (NvInfer.h: "Turing and later")
TURING = ComputeCapability(7, 5)
#: the first TensorRT with HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY
SAME_COMPUTE_CAPABILITY_SINCE = "10.9"


def build_gpu_refusal(
    targets: tuple[ComputeCapability, ...],
    options: BuildOptions,
    device: GpuDevice | None,
    version: str,
    same_compute_capability: bool,
) -> tuple[tuple[str | int, ...], str] | None:
    """(the spec key, the problem) when enterprise TensorRT ``version`` cannot build ``options`` for
    ``targets`` on ``device``, the build GPU (None: no GPU); ``same_compute_capability``: whether
    this TensorRT has that level. Pure, so that the rules are tested where no GPU is."""
    if device is None:
        return ("backend",), (
            "enterprise TensorRT builds on the GPU it will run on, and no GPU was detected; "
            "use backend: tensorrt-rtx for CPU-only builds"
        )
    built, level = device.compute_capability, options.hardware_compatibility
    if level == "ampere_plus":
        if built < AMPERE:
            return ("build", "hardware_compatibility"), (
                f"build.hardware_compatibility: ampere_plus needs an Ampere (8.0) or newer build GPU; this one "
                f"({device.name}) is {built}: build on a newer GPU, or drop hardware_compatibility"
            )
        older = [index for index, cc in enumerate(targets) if cc < AMPERE]
        if older:
            return ("targets", older[0]), (
                f"targets: {targets[older[0]]} is older than Ampere (8.0), which ampere_plus does not cover; "
                f"build it on a {targets[older[0]]} GPU without hardware_compatibility"
            )
        return None
    if level == "same_compute_capability":
        if not same_compute_capability:
            return ("build", "hardware_compatibility"), (
                f"build.hardware_compatibility: same_compute_capability needs TensorRT >= "
                f"{SAME_COMPUTE_CAPABILITY_SINCE}, this is {version}: upgrade TensorRT, or use ampere_plus or none"
            )
        if built < TURING:
            return ("build", "hardware_compatibility"), (
                f"build.hardware_compatibility: same_compute_capability needs a Turing (7.5) or newer build GPU; "
                f"this one ({device.name}) is {built}: build on a newer GPU, or drop hardware_compatibility"
            )
    others = [index for index, cc in enumerate(targets) if cc != built]
    if others:
        return ("targets", others[0]), (
            f"targets: {targets[others[0]]} differs from the build GPU ({device.name}, {built}); "
            "build on that GPU, or set build.hardware_compatibility: ampere_plus"
        )
    return None


def timing_cache_note(path: Path, *, found: bool, reused: bool) -> str:
    """What a build says about its timing cache file."""
    if reused:
        return f"timing cache: reused {path}"
    if found:
        return f"timing cache: {path} not reused (made on another GPU or corrupt); this build's replaces it"
    return f"timing cache: new {path}"


class EnterpriseBackend(TensorRTApiBackend):
    flavor = FLAVOR_TENSORRT

    def weakly_typed(self, request: BuildRequest) -> bool:
        """Only 10.x builds weakly typed networks, when the builder flags choose precision."""
        return weakly_typed(self.flavor, self.version) and (request.fp16_flag or request.calibration_cache is not None)

    def network_flags(self, request: BuildRequest) -> int:
        flag = getattr(self.trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if flag is None or self.weakly_typed(request):
            return 0
        return 1 << int(flag)

    def target_refusal(
        self, targets: tuple[ComputeCapability, ...], options: BuildOptions
    ) -> tuple[tuple[str | int, ...], str] | None:
        """Decided on the build GPU (the first one CUDA sees), before the precision step."""
        gpus = detect_gpus()
        same_cc = self._same_compute_capability() is not None
        return build_gpu_refusal(targets, options, gpus[0] if gpus else None, self.version, same_cc)

    def _same_compute_capability(self) -> Any:
        """The SAME_COMPUTE_CAPABILITY level, or None: TensorRT has it from 10.9 on."""
        return getattr(self.trt.HardwareCompatibilityLevel, "SAME_COMPUTE_CAPABILITY", None)

    def configure_targets(self, config: Any, request: BuildRequest) -> GpuTargets:
        self.check_targets(request.targets, request.options, request.origin)
        device = detect_gpus()[0]  # check_targets refused a host without one
        build_device = {
            "name": device.name,
            "compute_capability": str(device.compute_capability),
            "driver_version": device.driver_version,
        }
        level = request.options.hardware_compatibility
        if level == "ampere_plus":
            config.hardware_compatibility_level = self.trt.HardwareCompatibilityLevel.AMPERE_PLUS
            return GpuTargets((), and_later_from=AMPERE, build_device=build_device)
        if level == "same_compute_capability":
            config.hardware_compatibility_level = self._same_compute_capability()
        return GpuTargets((device.compute_capability,), build_device=build_device)

    def configure_precision(self, config: Any, request: BuildRequest, profiles: Sequence[Any]) -> None:
        if not self.weakly_typed(request):
            return
        if request.fp16_flag:
            config.set_flag(self.trt.BuilderFlag.FP16)
        if request.calibration_cache is not None:
            config.set_flag(self.trt.BuilderFlag.INT8)
            config.int8_calibrator = self._cache_calibrator(request.calibration_cache)
            if profiles:  # NvInfer.h: a network with runtime dimensions needs a calibration profile
                config.set_calibration_profile(profiles[0])

    def _cache_calibrator(self, cache: bytes) -> Any:
        """An IInt8EntropyCalibrator2 that only replays trtforge's cache: TensorRT reads the
        scales from it and never asks for a batch (calibration already ran on the CPU)."""
        trt: Any = self.trt

        class _CacheCalibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self) -> None:
                trt.IInt8EntropyCalibrator2.__init__(self)

            def get_batch_size(self) -> int:
                return 1

            def get_batch(self, names: list[str]) -> None:
                return None

            def read_calibration_cache(self) -> bytes:
                return cache

            def write_calibration_cache(self, data: Any) -> None:
                return None

        return _CacheCalibrator()

    def load_timing_cache(self, config: Any, request: BuildRequest) -> list[str]:
        """The build GPU's timing cache; one TensorRT refuses (made on another device, or corrupt:
        create_timing_cache answers None) gives way to a fresh one, which the save replaces it with."""
        if not request.options.timing_cache or request.timing_cache is None:
            return []
        path = request.timing_cache
        data = path.read_bytes() if path.is_file() else b""
        logged = len(self.errors)
        cache = config.create_timing_cache(data) if data else None
        reused = cache is not None and bool(config.set_timing_cache(cache, ignore_mismatch=False))
        if not reused:
            del self.errors[logged:]  # TensorRT's complaint about the file, which the note says
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
        return [timing_cache_note(path, found=bool(data), reused=reused)]

    def save_timing_cache(self, config: Any, request: BuildRequest) -> None:
        if request.options.timing_cache and request.timing_cache is not None:
            cache = config.get_timing_cache()
            if cache is not None:
                atomic_write_bytes(request.timing_cache, bytes(cache.serialize()))
