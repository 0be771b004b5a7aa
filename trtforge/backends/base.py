"""What enterprise TensorRT and TensorRT-RTX share: parse, profiles, options, build, I/O facts."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from trtforge.backends.messages import (
    CPU_ONLY_NOISE,
    DTYPE_ASSERTION,
    INVALID_CONFIG,
    clean_lines,
    clean_text,
    dtype_message,
    layer_reason,
    names_layer,
    native_stderr,
    node_label,
    parser_reason,
    refused_point,
    unsupported_dtypes,
    without_native_dtype_lines,
)
from trtforge.dtypes import numpy_name
from trtforge.errors import BuildError, InvalidInputError, SpecError
from trtforge.spec import BuildOptions, ShapeRange, SpecOrigin, check_shape_inputs, refused_values
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
    origin: SpecOrigin | None = None  # the spec's, for errors about its profiles
    label: str = ""  # how errors name the model: the spec and its model, never a cache file

    @property
    def source(self) -> str:
        return self.label or str(self.onnx_path)


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
    engine: memoryview  # TensorRT's serialized engine itself (IHostMemory's buffer), not a copy
    io: tuple[TensorFacts, ...]
    gpu: GpuTargets
    notes: tuple[str, ...] = field(default=())


#: the cancel flag of the build the main thread runs (None: none runs), for :func:`cancel_build`
_main_build: threading.Event | None = None


def cancel_build() -> bool:
    """Cancel the TensorRT build the main thread runs, as its Ctrl-C does; whether one runs. For a
    stop that is no Ctrl-C: ``ci``'s worker on SIGTERM, whose Ctrl-C a script's background job
    ignores (and the build leaves ignored), so that no SIGINT reaches the build."""
    cancelled = _main_build
    if cancelled is None:
        return False
    cancelled.set()
    return True


@contextmanager
def _cancel_on_sigint() -> Iterator[threading.Event]:
    """Turn Ctrl-C into a cancelled build: TensorRT is in C++ and cannot be interrupted directly,
    but its progress monitor asks us after every step whether to go on. A background job's ignored
    Ctrl-C stays ignored; :func:`cancel_build` still cancels it."""
    global _main_build
    cancelled = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield cancelled
        return
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    previous = None if ignored else signal.signal(signal.SIGINT, lambda *_: cancelled.set())
    outer, _main_build = _main_build, cancelled
    try:
        yield cancelled
    finally:
        _main_build = outer
        if not ignored:
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

    def target_refusal(
        self, targets: tuple[ComputeCapability, ...], options: BuildOptions
    ) -> tuple[tuple[str | int, ...], str] | None:
        """(the spec key, the problem) when this flavor cannot build for ``targets`` with
        ``options`` whatever the model, else None; flavors that decide on the build GPU say so
        in ``configure_targets``."""
        return None

    def check_targets(
        self, targets: tuple[ComputeCapability, ...], options: BuildOptions, origin: SpecOrigin | None
    ) -> None:
        """``target_refusal`` as the error, located in the spec: ``build`` asks before the precision
        step (an FP16 guard or a calibration for an engine that cannot be built costs minutes)."""
        refused = self.target_refusal(targets, options)
        if refused is not None:
            key, problem = refused
            raise InvalidInputError(f"{origin.where(*key)}: {problem}" if origin else problem)

    def configure_targets(self, config: Any, request: BuildRequest) -> GpuTargets:
        raise NotImplementedError

    def configure_precision(self, config: Any, request: BuildRequest, profiles: Sequence[Any]) -> None:
        """Strongly typed networks take precision from the graph: nothing to set. ``profiles``: the
        optimization profiles added to ``config``, in the spec's order (none for a static model)."""

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

    @property
    def noise(self) -> tuple[str, ...]:
        """Log lines that say nothing about the model: CUDA errors of a build on a host without a GPU."""
        from trtforge.environment import detect_gpus

        return () if detect_gpus() else CPU_ONLY_NOISE

    def _parse(self, builder: Any, request: BuildRequest) -> tuple[Any, Any, list[str]]:
        """The network, its parser, and what the parser printed to the C stderr (notes, not output)."""
        network = builder.create_network(self.network_flags(request))
        parser = self.trt.OnnxParser(network, self.logger)
        with native_stderr() as printed:
            parsed = parser.parse_from_file(str(request.onnx_path))
        if not parsed:
            raise BuildError(f"{request.source}: ONNX parser failed{self._parser_errors(parser, request, printed)}")
        return network, parser, printed

    def _parser_errors(self, parser: Any, request: BuildRequest, printed: list[str]) -> str:
        """``at node #3 (op Foo): why``, or ``: why; why`` for several errors; dtype failures name the tensors."""
        described: list[tuple[str, str]] = []
        for index in range(parser.num_errors):
            error = parser.get_error(index)
            node_name = error.node_name() if hasattr(error, "node_name") else ""
            operator = error.node_operator() if hasattr(error, "node_operator") else ""
            desc = parser_reason(error.desc(), operator)
            if DTYPE_ASSERTION in desc:
                tensors = unsupported_dtypes(request.onnx_path)
                if tensors:
                    desc = dtype_message(tensors)
                    printed = without_native_dtype_lines(printed)
            item = (node_label(error.node(), node_name, operator), clean_text([desc], self.noise))
            if item not in described:
                described.append(item)
        if len(described) == 1 and described[0][0]:
            where, why = described[0]
            return f" at {where}: {clean_text([why, *printed], self.noise)}"
        messages = [f"{where}: {why}" if where else why for where, why in described]
        return ": " + (
            clean_text([*messages, *printed], self.noise) or clean_text(self.errors, self.noise) or "no detail"
        )

    def _pass_on(self, printed: list[str], monitor: BuildMonitor) -> None:
        """What TensorRT printed on a step that succeeded: notes of the build, not stray lines."""
        if not printed:
            return  # nothing to clean: no GPU detection (NVML) for it
        for line in clean_lines(printed, self.noise):
            monitor.note(f"TensorRT: {line}")

    def _add_profiles(self, builder: Any, network: Any, config: Any, request: BuildRequest) -> list[Any]:
        """Shapes per input, values per shape tensor; which inputs are shape tensors is TensorRT's
        call (``is_shape_tensor``, after parsing), checked against the spec before any is set.
        Returns the profiles added (the INT8 calibrator of a dynamic model needs one)."""
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        shape_inputs = {t.name: tuple(int(d) for d in t.shape) for t in inputs if t.is_shape_tensor}
        check_shape_inputs(request.profiles, shape_inputs, request.origin)
        added: list[Any] = []
        for index, profile_spec in enumerate(request.profiles):
            profile = builder.create_optimization_profile()
            for name, shapes in profile_spec.items():
                if shapes.values is not None:
                    profile.set_shape_input(name, *(shapes.values.flat(label) for label in ("min", "opt", "max")))
                else:
                    profile.set_shape(name, tuple(shapes.min), tuple(shapes.opt), tuple(shapes.max))
            if config.add_optimization_profile(profile) < 0:
                detail = "; ".join(self.errors) or "TensorRT refused its shapes"
                raise InvalidInputError(f"optimization profile {index} is not valid: {detail}")
            added.append(profile)
        return added

    def _refused_values(self, network: Any, request: BuildRequest) -> SpecError | None:
        """The spec's shape-tensor values as the cause of a failed build, when that is certain:
        TensorRT refused the configuration (INVALID_CONFIG) at a layer it names, and every network
        input that layer reads, through any chain of layers, is a shape tensor the spec gives
        values for or an input of static shape. Nothing else the build is given can then make it
        fail there. Else None: the failure stays the build's (exit 3, TensorRT's text)."""
        # the layer must be named in the very message that says INVALID_CONFIG
        text = " ".join(message for message in self.errors if INVALID_CONFIG in message)
        given = {name for profile in request.profiles for name, entry in profile.items() if entry.is_shape_input}
        if not text or not given:
            return None
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        named = [layer for layer in layers if names_layer(text, layer.name)]
        if not named:
            return None
        producers = {layer.get_output(j).name: layer for layer in layers for j in range(layer.num_outputs)}
        inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
        read: set[str] = set()
        pending, seen = list(named), {id(layer) for layer in named}
        while pending:
            layer = pending.pop()
            for j in range(layer.num_inputs):
                tensor = layer.get_input(j)
                if tensor is None:
                    continue  # an optional input left unset
                if tensor.name in inputs:
                    read.add(tensor.name)
                elif tensor.name in producers and id(producers[tensor.name]) not in seen:
                    seen.add(id(producers[tensor.name]))
                    pending.append(producers[tensor.name])
        culprits = sorted(read & given)
        if not culprits or any(any(dim < 0 for dim in inputs[name].shape) for name in read - given):
            return None
        reason = f"{named[0].name}: {layer_reason(text, named[0].name)}"
        builder = f"{self.flavor} {self.version}"
        point = refused_point(text)
        if point is not None and point[0] >= len(request.profiles):
            point = None  # not a profile of this build: say every profile's values
        return refused_values(request.profiles, culprits, request.origin, builder, reason, point)

    def _io(self, network: Any) -> tuple[TensorFacts, ...]:
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        outputs = [network.get_output(i) for i in range(network.num_outputs)]
        return tuple(
            TensorFacts(tensor.name, mode, numpy_name(tensor.dtype.name), tuple(int(d) for d in tensor.shape))
            for mode, tensors in (("input", inputs), ("output", outputs))
            for tensor in tensors
        )

    def build(self, request: BuildRequest, monitor: BuildMonitor) -> BuildResult:
        trt = self.trt
        self.errors.clear()
        builder = trt.Builder(self.logger)
        network, _parser, printed = self._parse(builder, request)
        self._pass_on(printed, monitor)
        config = builder.create_builder_config()
        # TensorRT lets FP32 convolutions and matrix products run in TF32 (a 10-bit mantissa) unless
        # told not to: an fp32 engine, or the FP32 layers of an FP16 or INT8 one, would then not
        # compute what the reference and the gate's simulation compute (Polygraphy clears it too)
        config.clear_flag(trt.BuilderFlag.TF32)
        profiles = self._add_profiles(builder, network, config, request)
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(request.options.workspace))
        config.builder_optimization_level = request.options.optimization_level
        if request.options.version_compatible:
            # the plan embeds TensorRT's lean runtime, which a newer runtime runs (as host code: rule 7);
            # EXCLUDE_LEAN_RUNTIME would need the loader to load_runtime() a lean library of this version
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        gpu = self.configure_targets(config, request)
        self.configure_precision(config, request, profiles)
        notes = self.load_timing_cache(config, request)
        with _cancel_on_sigint() as cancelled:
            config.progress_monitor = self._progress_monitor(monitor, cancelled)
            with native_stderr() as printed:
                serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            refused = self._refused_values(network, request)
            if refused is not None:
                raise refused
            detail = clean_text([*self.errors, *printed], self.noise) or "no detail from TensorRT"
            raise BuildError(f"{request.source}: {self.flavor} {self.version} could not build it: {detail}")
        self._pass_on(printed, monitor)
        self.save_timing_cache(config, request)
        engine = memoryview(serialized).cast("B")  # keeps ``serialized`` alive; 47 MB not copied for ResNet-18
        return BuildResult(engine=engine, io=self._io(network), gpu=gpu, notes=tuple(notes))
