"""TensorRT-RTX: strongly typed, CPU-only ahead-of-time builds for listed compute capabilities."""

from __future__ import annotations

from typing import Any

from trtforge.backends.base import BuildRequest, GpuTargets, TensorRTApiBackend
from trtforge.spec import BuildOptions
from trtforge.tags import FLAVOR_RTX, ComputeCapability

#: What TensorRT-RTX compiles for when no capability is set (its "CPU-only AOT" documentation).
RTX_DEFAULT_TARGETS = tuple(ComputeCapability.parse(cc) for cc in ("8.0", "8.6", "8.9", "12.0"))


class RtxBackend(TensorRTApiBackend):
    flavor = FLAVOR_RTX

    def supported_targets(self) -> dict[ComputeCapability, Any]:
        enum = self.trt.ComputeCapability
        return {ComputeCapability.parse(name): getattr(enum, name) for name in dir(enum) if name.startswith("SM")}

    def target_refusal(
        self, targets: tuple[ComputeCapability, ...], options: BuildOptions
    ) -> tuple[tuple[str | int, ...], str] | None:
        if options.version_compatible:
            return ("build", "version_compatible"), (
                "build.version_compatible: true is not supported by tensorrt-rtx, whose engines load only on "
                "the TensorRT-RTX release that built them; remove it and rebuild for each release "
                "(or use backend: tensorrt, whose version-compatible engines load on later 10.x/11.x runtimes)"
            )
        if options.hardware_compatibility == "ampere_plus":
            return ("build", "hardware_compatibility"), (
                "build.hardware_compatibility: ampere_plus is not supported by tensorrt-rtx; "
                "list the GPUs in 'targets:' instead (e.g. ['8.6', '8.9', '12.0'])"
            )
        if options.hardware_compatibility == "same_compute_capability":
            return ("build", "hardware_compatibility"), (
                "build.hardware_compatibility: same_compute_capability needs a build GPU, and "
                "tensorrt-rtx builds on the CPU; list the GPUs in 'targets:' instead"
            )
        supported = self.supported_targets()
        unknown = [index for index, cc in enumerate(targets) if cc not in supported]
        if unknown:
            listed = ", ".join(str(cc) for cc in sorted(supported))
            return ("targets", unknown[0]), (
                f"targets: tensorrt-rtx {self.version} cannot compile for {targets[unknown[0]]}; "
                f"it supports {listed} (use backend: tensorrt for other GPUs)"
            )
        return None

    def configure_targets(self, config: Any, request: BuildRequest) -> GpuTargets:
        self.check_targets(request.targets, request.options, request.origin)
        if not request.targets:
            return GpuTargets(RTX_DEFAULT_TARGETS)
        supported = self.supported_targets()
        config.num_compute_capabilities = len(request.targets)
        for index, cc in enumerate(request.targets):
            config.set_compute_capability(supported[cc], index)
        return GpuTargets(tuple(sorted(request.targets)))

    def load_timing_cache(self, config: Any, request: BuildRequest) -> list[str]:
        if request.options.timing_cache:
            return ["timing cache: n/a on tensorrt-rtx (it compiles kernels ahead of time)"]
        return []
