"""What enterprise TensorRT and TensorRT-RTX share: parse, profiles, options, build, I/O facts."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from trtforge.errors import BuildError, InvalidInputError
from trtforge.spec import BuildOptions, ShapeRange
from trtforge.tags import ComputeCapability


class BuildMonitor(Protocol):
    """Receives TensorRT's build progress (phases with steps) and may log notes."""

    def phase_start(self, phase: str, parent: str | None, steps: int) -> None: ...
    def step(self, phase: str, step: int) -> None: ...
    def phase_finish(self, phase: str) -> None: ...
    def note(self, message: str) -> None: ...


@dataclass(frozen=True)
class BuildRequest:
    """Everything a backend needs; the precision step already shaped the ONNX graph."""

    onnx_path: Path
    precision: str
    profiles: tuple[dict[str, ShapeRange], ...]
    targets: tuple[ComputeCapability, ...]
    options: BuildOptions
    timing_cache: Path | None = None
    fp16_flag: bool = False
    calibration_cache: bytes | None = None


@dataclass(frozen=True)
class TensorFacts:
    name: str
    mode: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class GpuTargets:
    """The capabilities an engine really runs on, as the manifest records them."""

    capabilities: tuple[ComputeCapability, ...]
    and_later_from: ComputeCapability | None = None
    build_device: dict[str, Any] | None = None


@dataclass(frozen=True)
class BuildResult:
    engine: bytes
    io: tuple[TensorFacts, ...]
    gpu: GpuTargets
    notes: tuple[str, ...] = field(default=())


_DTYPE_NAMES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "FP8": "float8_e4m3",
    "INT4": "int4",
    "FP4": "float4_e2m1",
}


def dtype_name(trt_dtype: Any) -> str:
    return _DTYPE_NAMES.get(trt_dtype.name, trt_dtype.name.lower())


@contextmanager
def _cancel_on_sigint() -> Iterator[threading.Event]:
    """Turn Ctrl-C into a cancelled build: TensorRT is in C++ and cannot be interrupted directly,
    but its progress monitor asks us after every step whether to go on."""
    cancelled = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield cancelled
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda *_: cancelled.set())
    try:
        yield cancelled
    finally:
        signal.signal(signal.SIGINT, previous)
    if cancelled.is_set():
        raise KeyboardInterrupt


class TensorRTApiBackend:
    """The shared build path; subclasses decide network flags, targets, precision and caches."""

    flavor: str

    def __init__(self, trt: ModuleType) -> None:
        self.trt = trt
        self.version = str(trt.__version__)
        self.errors: list[str] = []
        self.logger = self._make_logger()

    # ------------------------------------------------------------ hooks for the flavors
    def network_flags(self, request: BuildRequest) -> int:
        return 0

    def configure_targets(self, config: Any, request: BuildRequest) -> GpuTargets:
        raise NotImplementedError

    def configure_precision(self, config: Any, request: BuildRequest) -> None:
        """Strongly typed networks take precision from the graph: nothing to set."""

    def load_timing_cache(self, config: Any, request: BuildRequest) -> list[str]:
        return []

    def save_timing_cache(self, config: Any, request: BuildRequest) -> None:
        """Only flavors with a working timing cache save one."""

    # ------------------------------------------------------------ the shared path
    def _make_logger(self) -> Any:
        trt: Any = self.trt  # the flavor's module: its classes are only known at run time
        errors = self.errors

        class _CollectingLogger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                    errors.append(msg)

        return _CollectingLogger()

    def _progress_monitor(self, monitor: BuildMonitor, cancelled: threading.Event) -> Any:
        trt: Any = self.trt

        class _Monitor(trt.IProgressMonitor):
            def __init__(self) -> None:
                trt.IProgressMonitor.__init__(self)

            def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
                monitor.phase_start(phase_name, parent_phase, num_steps)

            def step_complete(self, phase_name: str, step: int) -> bool:
                monitor.step(phase_name, step)
                return not cancelled.is_set()

            def phase_finish(self, phase_name: str) -> None:
                monitor.phase_finish(phase_name)

        return _Monitor()

    def _parse(self, builder: Any, request: BuildRequest) -> tuple[Any, Any]:
        network = builder.create_network(self.network_flags(request))
        parser = self.trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(request.onnx_path)):
            raise BuildError(f"{request.onnx_path}: ONNX parser failed: {self._parser_errors(parser)}")
        return network, parser

    def _parser_errors(self, parser: Any) -> str:
        messages = []
        for index in range(parser.num_errors):
            error = parser.get_error(index)
            where = ""
            node_name = error.node_name() if hasattr(error, "node_name") else ""
            operator = error.node_operator() if hasattr(error, "node_operator") else ""
            if node_name or operator:
                where = f"node '{node_name}' (op {operator}): "
            elif error.node() >= 0:
                where = f"node #{error.node()}: "
            messages.append(where + error.desc().strip())
        return "; ".join(messages) or "; ".join(self.errors) or "unknown parser error"

    def _add_profiles(self, builder: Any, network: Any, config: Any, request: BuildRequest) -> None:
        for index, profile_spec in enumerate(request.profiles):
            profile = builder.create_optimization_profile()
            for name, shapes in profile_spec.items():
                profile.set_shape(name, tuple(shapes.min), tuple(shapes.opt), tuple(shapes.max))
            if config.add_optimization_profile(profile) < 0:
                detail = "; ".join(self.errors) or "TensorRT refused its shapes"
                raise InvalidInputError(f"optimization profile {index} is not valid: {detail}")

    def _io(self, network: Any) -> tuple[TensorFacts, ...]:
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        outputs = [network.get_output(i) for i in range(network.num_outputs)]
        return tuple(
            TensorFacts(tensor.name, mode, dtype_name(tensor.dtype), tuple(int(d) for d in tensor.shape))
            for mode, tensors in (("input", inputs), ("output", outputs))
            for tensor in tensors
        )

    def build(self, request: BuildRequest, monitor: BuildMonitor) -> BuildResult:
        trt = self.trt
        self.errors.clear()
        builder = trt.Builder(self.logger)
        network, _parser = self._parse(builder, request)
        config = builder.create_builder_config()
        self._add_profiles(builder, network, config, request)
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(request.options.workspace))
        config.builder_optimization_level = request.options.optimization_level
        if request.options.version_compatible:
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
            config.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)
        gpu = self.configure_targets(config, request)
        self.configure_precision(config, request)
        notes = self.load_timing_cache(config, request)
        with _cancel_on_sigint() as cancelled:
            config.progress_monitor = self._progress_monitor(monitor, cancelled)
            serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            detail = "; ".join(self.errors) or "no detail from TensorRT"
            raise BuildError(f"{self.flavor} {self.version} could not build {request.onnx_path.name}: {detail}")
        self.save_timing_cache(config, request)
        return BuildResult(engine=bytes(serialized), io=self._io(network), gpu=gpu, notes=tuple(notes))
