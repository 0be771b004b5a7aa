"""Where a pool's contexts come from: a TensorRT engine (loaded through the runtime loader) or an
ONNX model in onnxruntime, behind one small ``ModelSource`` interface, plus the shapes a pool
warms and serves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from trtforge.errors import InvalidInputError
from trtforge.manifest import ENGINE_SUFFIX, MANIFEST_SUFFIX
from trtforge.model import TensorDesc

if TYPE_CHECKING:
    import numpy as np

    from trtforge.compat import Environment, LoadPolicy
    from trtforge.manifest import Manifest

Shape = tuple[int, ...]
ShapeSet = Mapping[str, Shape]
"""One shape per input: what one request (or one warm-up inference) looks like."""
Profile = Mapping[str, Mapping[str, Sequence[int]]]
"""One optimization profile as the manifest stores it: input -> {min, opt, max}."""

ONNXRUNTIME = "onnxruntime"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
#: onnxruntime execution providers that hold device memory (what ``MemoryUse`` measures for them)
GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})


class Runner(Protocol):
    """What the pool needs of a context (``trtforge.runners`` provides TrtRunner and OnnxrtRunner)."""

    name: str

    def activate(self) -> None: ...
    def infer(self, feed: Mapping[str, Any]) -> dict[str, Any]: ...
    def deactivate(self) -> None: ...


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


def profile_shapes(profiles: Sequence[Profile], static: Mapping[str, Shape] | None = None) -> list[dict[str, Shape]]:
    """Each profile's min, opt and max shapes (duplicates dropped): what a TensorRT pool warms by default.

    TensorRT re-allocates on every new input shape, so warm-up must cover the shapes that will be
    served; ``static`` adds inputs with a fixed shape that no profile lists.
    """
    sets: list[dict[str, Shape]] = []
    for profile in profiles:
        for key in ("min", "opt", "max"):
            shapes = {name: tuple(int(d) for d in ranges[key]) for name, ranges in profile.items()}
            shapes.update(static or {})
            if shapes not in sets:
                sets.append(shapes)
    return sets


def concrete_shape(tensor: TensorDesc, batch: int = 1) -> Shape:
    """A served shape for a model input: the first dynamic dim becomes ``batch``, other dynamic dims 1."""
    dims: list[int] = []
    for axis, dim in enumerate(tensor.shape):
        if isinstance(dim, int) and dim >= 0:
            dims.append(dim)
        else:
            dims.append(batch if axis == 0 else 1)
    return tuple(dims)


def random_feed(inputs: Sequence[TensorDesc], shapes: ShapeSet, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded data of the right dtype and shape: warm-up and probes need real numbers, not meaning."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    for tensor in inputs:
        shape = shapes[tensor.name]
        dtype = np.dtype(tensor.dtype)
        if dtype == np.bool_:
            feed[tensor.name] = rng.integers(0, 2, shape).astype(bool)
        elif np.issubdtype(dtype, np.integer):
            feed[tensor.name] = rng.integers(0, 8, shape).astype(dtype)
        else:
            feed[tensor.name] = rng.random(shape, dtype=np.float32).astype(dtype)
    return feed


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
        from trtforge.runners import TrtRunner

        return TrtRunner(self.engine, self.trt, name=name)

    def default_shapes(self) -> list[dict[str, Shape]]:
        static = {t.name: concrete_shape(t) for t in self.inputs if not t.is_dynamic}
        return profile_shapes(self.profiles, static) or [static]

    def memory(self, runners: Sequence[Runner]) -> MemoryUse:
        per_context = engine_context_bytes(self.engine) + max((_runner_buffer_bytes(r) for r in runners), default=0)
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


def _runner_buffer_bytes(runner: Runner) -> int:
    """I/O buffers a TrtRunner preallocated for the profiles' largest shapes (0 for other runners)."""
    return int(getattr(runner, "device_bytes", 0))


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
        from trtforge.runners import OnnxrtRunner

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
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
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
    finally:
        pynvml.nvmlShutdown()


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
