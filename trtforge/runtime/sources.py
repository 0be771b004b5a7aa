"""Where a pool's contexts come from: a TensorRT engine (loaded through the runtime loader) or an
ONNX model in onnxruntime, behind one small ``ModelSource`` interface; each says which shapes
a pool warms by default (:mod:`trtforge.shapes` computes them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from trtforge.errors import InvalidInputError
from trtforge.manifest import ENGINE_SUFFIX, MANIFEST_SUFFIX
from trtforge.model import TensorDesc
from trtforge.runners.base import Runner
from trtforge.shapes import Profile, Shape, concrete_shape, profile_shapes, static_shapes

if TYPE_CHECKING:
    from trtforge.compat import Environment, LoadPolicy
    from trtforge.manifest import Manifest

ONNXRUNTIME = "onnxruntime"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
#: onnxruntime execution providers that hold device memory (what ``MemoryUse`` measures for them)
GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})


@dataclass(frozen=True)
class MemoryUse:
    """Device memory the pool holds, and where the numbers come from.

    ``method``: ``engine`` (TensorRT's own figures: activation memory per profile plus the I/O
    buffers the runner allocated, and the plan size as the upper bound of the weights held once),
    ``measured`` (onnxruntime CUDA: this process's NVML usage after warm-up minus before start),
    ``none`` (onnxruntime on the CPU: no device memory).
    """

    per_context: int | None
    shared: int | None
    total: int | None
    method: str


class ModelSource(Protocol):
    """One loaded model and the way to make contexts for it."""

    inputs: tuple[TensorDesc, ...]
    profiles: tuple[Profile, ...]

    @property
    def backend(self) -> str: ...

    def new_runner(self, name: str) -> Runner: ...
    def default_shapes(self) -> list[dict[str, Shape]]: ...
    def memory(self, runners: Sequence[Runner]) -> MemoryUse: ...
    def close(self) -> None: ...


class TensorRTSource:
    """An engine artifact deserialized once through the loader (which refuses mismatched engines)."""

    def __init__(self, artifact: Path, policy: LoadPolicy | None, environment: Environment | None) -> None:
        from trtforge.compat import LoadPolicy
        from trtforge.runtime.loader import load_engine

        loaded = load_engine(artifact, policy or LoadPolicy(), environment)
        self.engine: Any = loaded.engine
        self.trt: ModuleType = loaded.trt
        self._keep_alive: Any = loaded  # TensorRT needs the runtime (and its logger) to outlive the engine
        manifest = loaded.manifest
        self.backend = manifest.tensorrt.flavor
        self.artifact_size = manifest.artifact.size
        self.inputs = manifest_inputs(manifest)
        self.profiles: tuple[Profile, ...] = tuple(manifest.profiles)

    def new_runner(self, name: str) -> Runner:
        from trtforge.runners.tensorrt import TrtRunner

        return TrtRunner(self.engine, self.trt, name=name)

    def default_shapes(self) -> list[dict[str, Shape]]:
        static = static_shapes(self.inputs)
        return profile_shapes(self.profiles, static) or [static]

    def memory(self, runners: Sequence[Runner]) -> MemoryUse:
        per_context = engine_context_bytes(self.engine) + max((runner.device_bytes for runner in runners), default=0)
        shared = self.artifact_size
        return MemoryUse(per_context, shared, shared + per_context * len(runners), "engine")

    def close(self) -> None:
        """Drop the engine before its runtime (the pool calls this after every context is freed)."""
        self.engine = None
        self._keep_alive = None


def manifest_inputs(manifest: Manifest) -> tuple[TensorDesc, ...]:
    """The engine's inputs as the manifest records them (-1 = dynamic)."""
    return tuple(
        TensorDesc(t.name, t.dtype, tuple(None if d < 0 else d for d in t.shape))
        for t in manifest.io
        if t.mode == "input"
    )


def engine_context_bytes(engine: Any) -> int:
    """Device (activation) memory one execution context needs: the largest over the profiles.

    ``*_v2`` getters exist since TensorRT 10.1; the unsuffixed ones are the older spelling.
    """
    profiles = max(int(getattr(engine, "num_optimization_profiles", 1)), 1)
    per_profile = getattr(engine, "get_device_memory_size_for_profile_v2", None) or getattr(
        engine, "get_device_memory_size_for_profile", None
    )
    if per_profile is not None:
        return max(int(per_profile(index)) for index in range(profiles))
    return int(getattr(engine, "device_memory_size_v2", None) or engine.device_memory_size)


class OnnxrtSource:
    """An ONNX model, checked once and kept as bytes: every context is a session over the same graph."""

    backend = ONNXRUNTIME

    def __init__(self, model: Path, providers: Sequence[str], threads: int) -> None:
        import onnxruntime as ort

        from trtforge.model import describe, load_onnx

        proto = load_onnx(model)
        self.inputs = describe(proto, model).inputs
        self.profiles: tuple[Profile, ...] = ()
        available = ort.get_available_providers()
        for provider in providers:
            if provider not in available:
                hint = " (pip install onnxruntime-gpu on a CUDA host)" if provider == PROVIDERS["cuda"] else ""
                raise InvalidInputError(
                    f"execution provider {provider} is not available in this onnxruntime "
                    f"(it has {', '.join(available)}){hint}"
                )
        self.providers = tuple(providers)
        self.threads = threads
        self._bytes = proto.SerializeToString()  # the sessions never see a file that changed meanwhile
        self._gpu_before = _process_gpu_memory() if self.uses_gpu else None

    @property
    def uses_gpu(self) -> bool:
        return any(provider in GPU_PROVIDERS for provider in self.providers)

    def new_runner(self, name: str) -> Runner:
        from trtforge.runners.onnxruntime import OnnxrtRunner

        return OnnxrtRunner(self._bytes, providers=self.providers, name=name, intra_op_threads=self.threads)

    def default_shapes(self) -> list[dict[str, Shape]]:
        return [{tensor.name: concrete_shape(tensor) for tensor in self.inputs}]

    def memory(self, runners: Sequence[Runner]) -> MemoryUse:
        if not self.uses_gpu:
            return MemoryUse(None, None, None, "none")
        after = _process_gpu_memory()
        if after is None or self._gpu_before is None:
            return MemoryUse(None, None, None, "unknown")
        # onnxruntime reports no per-session figure; the process-level growth is what we can honestly say
        return MemoryUse(None, None, max(after - self._gpu_before, 0), "measured")

    def close(self) -> None:
        self._bytes = b""


def _process_gpu_memory() -> int | None:
    """GPU memory this process holds on every device (NVML), or None where NVML cannot tell."""
    from trtforge.environment import nvml

    with nvml() as pynvml:
        if pynvml is None:
            return None
        try:
            total = 0
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if process.pid == os.getpid() and process.usedGpuMemory is not None:
                        total += int(process.usedGpuMemory)
            return total
        except pynvml.NVMLError:
            return None


def backend_of(artifact: Path) -> str:
    """``tensorrt`` for an engine artifact (or its manifest), ``onnxruntime`` for an ONNX model."""
    name = artifact.name
    if name.endswith(ENGINE_SUFFIX) or name.endswith(MANIFEST_SUFFIX):
        return "tensorrt"
    if name.endswith(".onnx"):
        return ONNXRUNTIME
    raise InvalidInputError(
        f"{artifact}: not an engine artifact (.engine) or an ONNX model (.onnx); "
        "pass the .engine built by trtforge build, or the .onnx to serve it with onnxruntime"
    )
