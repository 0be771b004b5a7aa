"""Enterprise TensorRT 10.x and 11.x: the build GPU decides the targets; 10.x keeps the
FP16/INT8 builder flags and the entropy calibrator, 11.x is strongly typed like TensorRT-RTX."""

from __future__ import annotations

from typing import Any

from trtforge.backends.base import BuildRequest, GpuTargets, TensorRTApiBackend
from trtforge.compat import weakly_typed
from trtforge.environment import detect_gpus
from trtforge.errors import InvalidInputError
from trtforge.fsutil import atomic_write_bytes
from trtforge.tags import AMPERE, FLAVOR_TENSORRT


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

    def configure_targets(self, config: Any, request: BuildRequest) -> GpuTargets:
        gpus = detect_gpus()
        if not gpus:
            raise InvalidInputError(
                "enterprise TensorRT builds on the GPU it will run on, and no GPU was detected; "
                "use backend: tensorrt-rtx for CPU-only builds"
            )
        device = gpus[0]
        build_cc = device.compute_capability
        level = request.options.hardware_compatibility
        build_device = {
            "name": device.name,
            "compute_capability": str(build_cc),
            "driver_version": device.driver_version,
        }
        if level == "ampere_plus":
            if build_cc < AMPERE:
                raise InvalidInputError(
                    f"hardware_compatibility ampere_plus needs an Ampere or newer build GPU; "
                    f"this one ({device.name}) is {build_cc}"
                )
            config.hardware_compatibility_level = self.trt.HardwareCompatibilityLevel.AMPERE_PLUS
            too_old = [cc for cc in request.targets if cc < AMPERE]
            if too_old:
                raise InvalidInputError(
                    f"targets: {too_old[0]} is older than Ampere (8.0), which ampere_plus does not cover"
                )
            return GpuTargets((), and_later_from=AMPERE, build_device=build_device)
        if level == "same_compute_capability":
            config.hardware_compatibility_level = self.trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY
        others = [cc for cc in request.targets if cc != build_cc]
        if others:
            raise InvalidInputError(
                f"targets: {others[0]} differs from the build GPU ({device.name}, {build_cc}); "
                "build on that GPU, or set build.hardware_compatibility: ampere_plus"
            )
        return GpuTargets((build_cc,), build_device=build_device)

    def configure_precision(self, config: Any, request: BuildRequest) -> None:
        if not self.weakly_typed(request):
            return
        if request.fp16_flag:
            config.set_flag(self.trt.BuilderFlag.FP16)
        if request.calibration_cache is not None:
            config.set_flag(self.trt.BuilderFlag.INT8)
            config.int8_calibrator = self._cache_calibrator(request.calibration_cache)

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
        if not request.options.timing_cache or request.timing_cache is None:
            return []
        path = request.timing_cache
        data = path.read_bytes() if path.is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
        return [f"timing cache: {'reused' if data else 'new'} {path}"]

    def save_timing_cache(self, config: Any, request: BuildRequest) -> None:
        if request.options.timing_cache and request.timing_cache is not None:
            cache = config.get_timing_cache()
            if cache is not None:
                atomic_write_bytes(request.timing_cache, bytes(cache.serialize()))
