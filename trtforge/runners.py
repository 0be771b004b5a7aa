"""Runners in the style of Polygraphy: ``activate()``, ``infer(feed) -> outputs``, ``deactivate()``.

``OnnxrtRunner`` runs an ONNX model in onnxruntime (the accuracy gate's reference, and its
simulated candidate on GPU-less hosts). ``TrtRunner`` runs an already deserialized TensorRT
engine (enterprise TensorRT or TensorRT-RTX): one execution context, its own CUDA stream,
device buffers preallocated for the largest shapes of every profile, dynamic shapes through the
matching profile. Deserialize an engine once and create one TrtRunner per concurrent user.

CUDA comes from cuda-python (``pip install 'trtforge[gpu]'``); nothing here uses PyTorch.
A runner is used by one thread at a time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from trtforge.errors import InvalidInputError, TrtforgeError, first_line

if TYPE_CHECKING:
    import numpy as np

Shape = tuple[int, ...]


class RunnerError(TrtforgeError):
    """The runtime itself failed (CUDA, TensorRT execution): not the caller's input."""


class BaseRunner:
    """Activation bookkeeping and the context-manager protocol shared by every runner."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_active = False

    def activate(self) -> None:
        if self.is_active:
            raise RunnerError(f"runner '{self.name}' is already active")
        self._activate()
        self.is_active = True

    def deactivate(self) -> None:
        if not self.is_active:
            return
        try:
            self._deactivate()
        finally:
            self.is_active = False

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RunnerError(f"runner '{self.name}' is not active: call activate() or use it in a with block")
        return self._infer(feed)

    def __enter__(self) -> BaseRunner:
        self.activate()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.deactivate()

    # subclasses implement these
    def _activate(self) -> None:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


def check_feed_names(runner: str, expected: Sequence[str], feed: Mapping[str, Any]) -> None:
    """Every input present, nothing unknown: one clear line otherwise."""
    missing = [name for name in expected if name not in feed]
    if missing:
        raise InvalidInputError(
            f"{runner}: input '{missing[0]}' is missing from the feed (inputs: {', '.join(expected)})"
        )
    unknown = [name for name in feed if name not in expected]
    if unknown:
        raise InvalidInputError(f"{runner}: the model has no input '{unknown[0]}' (inputs: {', '.join(expected)})")


# ---------------------------------------------------------------- onnxruntime


class OnnxrtRunner(BaseRunner):
    """An ONNX model (file or bytes) in onnxruntime, CPU by default.

    onnxruntime's numpy bridge knows no ml_dtypes types: a model with bfloat16 (or float8) inputs
    or outputs runs through OrtValues built from, and read back as, the raw bytes."""

    def __init__(
        self,
        model: Path | bytes,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        name: str | None = None,
        intra_op_threads: int = 0,
    ) -> None:
        super().__init__(name or (f"onnxrt:{model.name}" if isinstance(model, Path) else "onnxrt"))
        self.model = model
        self.providers = tuple(providers)
        self.intra_op_threads = intra_op_threads
        self._session: Any = None
        self._raw_io = False

    def _activate(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.log_severity_level = 4  # fatal only: failures reach the caller as exceptions, not ANSI log lines
        source = str(self.model) if isinstance(self.model, Path) else self.model
        try:
            self._session = ort.InferenceSession(source, sess_options=options, providers=list(self.providers))
        except Exception as exc:  # onnxruntime raises its own pybind classes (Fail, InvalidGraph, ...)
            raise InvalidInputError(f"{self.name}: onnxruntime cannot load the model: {ort_error_text(exc)}") from exc
        metas = [*self._session.get_inputs(), *self._session.get_outputs()]
        self._raw_io = any(meta.type in _RAW_ORT_TYPES for meta in metas)

    def _deactivate(self) -> None:
        self._session = None

    @property
    def input_names(self) -> list[str]:
        return [meta.name for meta in self._session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [meta.name for meta in self._session.get_outputs()]

    def _run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if not self._raw_io:
            return self._session.run(None, dict(feed))
        values = self._session.run_with_ort_values(None, {name: to_ort_value(array) for name, array in feed.items()})
        return [from_ort_value(value) for value in values]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

        check_feed_names(self.name, self.input_names, feed)
        try:
            values = self._run(feed)
        except InvalidArgument as exc:
            raise InvalidInputError(f"{self.name}: {ort_error_text(exc)}") from exc
        except Exception as exc:
            raise RunnerError(f"{self.name}: onnxruntime failed: {ort_error_text(exc)}") from exc
        return dict(zip(self.output_names, values, strict=True))


#: onnxruntime type strings whose values its numpy bridge cannot convert (ml_dtypes types)
_RAW_ORT_TYPES = frozenset(
    f"tensor({name})"
    for name in ("bfloat16", "float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "float8e8m0")
)
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : (\w+) : ")


def ort_error_text(exc: BaseException) -> str:
    """onnxruntime's error as one line, ``CODE: text`` instead of ``[ONNXRuntimeError] : 2 : CODE : text``."""
    return _ORT_PREFIX.sub(r"\1: ", first_line(exc))


def to_ort_value(array: np.ndarray) -> Any:
    """An OrtValue of ``array``; ml_dtypes arrays go as their bytes with the ONNX element type."""
    import numpy as np
    import onnxruntime as ort
    from onnx import helper

    if array.dtype.kind != "V":
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
    raw = np.ascontiguousarray(array).view(f"u{array.dtype.itemsize}")
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(raw, helper.np_dtype_to_tensor_dtype(array.dtype))


def from_ort_value(value: Any) -> np.ndarray:
    """A numpy array of an OrtValue on the CPU; ml_dtypes types copied from its bytes."""
    import ctypes

    import numpy as np
    from onnx import helper

    dtype = helper.tensor_dtype_to_np_dtype(value.element_type())
    if dtype.kind != "V":
        return value.numpy()
    raw = ctypes.string_at(value.data_ptr(), value.tensor_size_in_bytes())
    return np.frombuffer(raw, dtype=dtype).reshape(value.shape()).copy()


# ---------------------------------------------------------------- dtypes (pure)

#: TensorRT DataType name -> (numpy/ml_dtypes type name, bits per element). 4-bit types are packed
#: two per byte, the element with the lower index in the low nibble, as TensorRT lays them out.
TRT_DTYPES: Mapping[str, tuple[str, int]] = {
    "FLOAT": ("float32", 32),
    "HALF": ("float16", 16),
    "BF16": ("bfloat16", 16),
    "INT8": ("int8", 8),
    "UINT8": ("uint8", 8),
    "INT32": ("int32", 32),
    "INT64": ("int64", 64),
    "BOOL": ("bool", 8),
    "FP8": ("float8_e4m3fn", 8),
    "E8M0": ("float8_e8m0fnu", 8),
    "INT4": ("int4", 4),
    "FP4": ("float4_e2m1fn", 4),
}


def numpy_dtype(type_name: str) -> np.dtype:
    """The numpy dtype of a name from TRT_DTYPES (ml_dtypes, shipped with onnx, gives the exotic ones)."""
    import numpy as np

    try:
        return np.dtype(type_name)
    except TypeError:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, type_name))


def nbytes(shape: Shape, bits: int) -> int:
    """Bytes of a tensor; sub-byte elements are packed (and round up to a whole byte)."""
    return (math.prod(shape) * bits + 7) // 8


def pack(array: np.ndarray, bits: int) -> np.ndarray:
    """The bytes TensorRT expects: a contiguous copy, 4-bit values packed two per byte."""
    import numpy as np

    flat = np.ascontiguousarray(array).reshape(-1)
    if bits != 4:
        return flat.view(np.uint8)
    nibbles = flat.view(np.uint8) & 0x0F
    if nibbles.size % 2:
        nibbles = np.concatenate([nibbles, np.zeros(1, np.uint8)])
    return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8)


def unpack(raw: np.ndarray, dtype: np.dtype, bits: int, shape: Shape) -> np.ndarray:
    """The inverse of ``pack``: bytes from the device into an array of ``dtype`` and ``shape``."""
    import numpy as np

    count = math.prod(shape)
    if bits != 4:
        return raw[: count * dtype.itemsize].view(dtype).reshape(shape)
    nibbles = np.empty(raw.size * 2, np.uint8)
    nibbles[0::2] = raw & 0x0F
    nibbles[1::2] = raw >> 4
    return nibbles[:count].view(dtype).reshape(shape)


@dataclass(frozen=True)
class ProfileRange:
    """The shapes one optimization profile accepts for each input."""

    min: Mapping[str, Shape]
    max: Mapping[str, Shape]

    def accepts(self, shapes: Mapping[str, Shape]) -> bool:
        for name, shape in shapes.items():
            low, high = self.min.get(name), self.max.get(name)
            if low is None or high is None:
                continue  # a static input: its shape is checked by rank and TensorRT itself
            if len(shape) != len(low) or any(not lo <= d <= hi for d, lo, hi in zip(shape, low, high, strict=True)):
                return False
        return True


def matching_profile(shapes: Mapping[str, Shape], profiles: Sequence[ProfileRange], current: int | None) -> int | None:
    """The profile to run ``shapes`` with: the current one when it fits (no switch), else the first that fits."""
    if current is not None and 0 <= current < len(profiles) and profiles[current].accepts(shapes):
        return current
    return next((index for index, profile in enumerate(profiles) if profile.accepts(shapes)), None)


def describe_ranges(profiles: Sequence[ProfileRange]) -> str:
    parts = []
    for index, profile in enumerate(profiles):
        ranges = ", ".join(f"{name} {list(low)}..{list(profile.max[name])}" for name, low in profile.min.items())
        parts.append(f"profile {index}: {ranges}")
    return "; ".join(parts)


# ---------------------------------------------------------------- CUDA through cuda-python


def cuda_runtime() -> ModuleType:
    """cuda-python's runtime bindings (``cuda.bindings.runtime``; older releases: ``cuda.cudart``)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6
        except ImportError as exc:
            raise RunnerError(
                "cuda-python is not installed; the TensorRT runner needs it: pip install 'trtforge[gpu]'"
            ) from exc
    return runtime


def cuda_check(result: tuple[Any, ...]) -> Any:
    """cuda-python returns ``(error, value...)``: raise on an error, return the value(s)."""
    cudart = cuda_runtime()
    error, *values = result
    if error != cudart.cudaError_t.cudaSuccess:
        _, text = cudart.cudaGetErrorString(error)
        detail = text.decode() if isinstance(text, bytes) else str(text)
        raise RunnerError(f"CUDA error {getattr(error, 'name', error)}: {detail}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class DeviceBuffer:
    """A block of GPU memory (cudaMalloc), freed by ``free()``."""

    def __init__(self, size: int) -> None:
        self.size = max(int(size), 1)
        self.ptr = int(cuda_check(cuda_runtime().cudaMalloc(self.size)))

    def ensure(self, size: int) -> None:
        """Grow to at least ``size`` bytes (the old contents are not kept)."""
        if size > self.size:
            self.free()
            self.size = int(size)
            self.ptr = int(cuda_check(cuda_runtime().cudaMalloc(self.size)))

    def copy_from_host(self, host: np.ndarray, stream: Any) -> None:
        cudart = cuda_runtime()
        if host.nbytes > self.size:
            raise RunnerError(f"{host.nbytes} bytes do not fit a device buffer of {self.size}")
        kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        cuda_check(cudart.cudaMemcpyAsync(self.ptr, host.ctypes.data, host.nbytes, kind, stream))

    def copy_to_host(self, host: np.ndarray, stream: Any) -> None:
        cudart = cuda_runtime()
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_check(cudart.cudaMemcpyAsync(host.ctypes.data, self.ptr, min(host.nbytes, self.size), kind, stream))

    def free(self) -> None:
        if self.ptr:
            cuda_check(cuda_runtime().cudaFree(self.ptr))
            self.ptr = 0


class CudaStream:
    """A non-blocking CUDA stream owned by one runner."""

    def __init__(self) -> None:
        cudart = cuda_runtime()
        self.handle = cuda_check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking))

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        cuda_check(cuda_runtime().cudaStreamSynchronize(self.handle))

    def destroy(self) -> None:
        if self.handle is not None:
            cuda_check(cuda_runtime().cudaStreamDestroy(self.handle))
            self.handle = None


def gpu_count() -> int:
    """CUDA devices visible to this process; 0 without driver, GPU or cuda-python."""
    try:
        cudart = cuda_runtime()
        error, count = cudart.cudaGetDeviceCount()
    except RunnerError:
        return 0
    return int(count) if error == cudart.cudaError_t.cudaSuccess else 0


# ---------------------------------------------------------------- TensorRT


@dataclass(frozen=True)
class IoTensor:
    """One engine I/O tensor as the runner handles it."""

    name: str
    is_input: bool
    trt_dtype: str
    bits: int
    on_host: bool  # shape tensors that TensorRT reads on the host
    static_shape: Shape | None  # None when any dim is dynamic (-1)


def engine_io(engine: Any, trt: ModuleType) -> tuple[IoTensor, ...]:
    """Every I/O tensor of ``engine`` with its dtype; refuses what the runner cannot feed."""
    tensors = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        dtype = engine.get_tensor_dtype(name)
        if dtype.name not in TRT_DTYPES:
            raise RunnerError(f"I/O tensor '{name}' has TensorRT type {dtype.name}, which the runner does not know")
        fmt = engine.get_tensor_format(name)
        if fmt != trt.TensorFormat.LINEAR:
            raise RunnerError(
                f"I/O tensor '{name}' uses the vectorized format {fmt.name}; the runner feeds linear "
                "I/O only (trtforge builds never request other I/O formats)"
            )
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        tensors.append(
            IoTensor(
                name=name,
                is_input=engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                trt_dtype=dtype.name,
                bits=TRT_DTYPES[dtype.name][1],
                on_host=engine.get_tensor_location(name) == trt.TensorLocation.HOST,
                static_shape=None if any(d < 0 for d in shape) else shape,
            )
        )
    return tuple(tensors)


def engine_profiles(engine: Any, inputs: Sequence[IoTensor]) -> list[ProfileRange]:
    ranges = []
    for index in range(max(engine.num_optimization_profiles, 1)):
        low: dict[str, Shape] = {}
        high: dict[str, Shape] = {}
        for tensor in inputs:
            if tensor.static_shape is not None or tensor.on_host:
                continue
            shapes = engine.get_tensor_profile_shape(tensor.name, index)
            low[tensor.name] = tuple(int(d) for d in shapes[0])
            high[tensor.name] = tuple(int(d) for d in shapes[2])
        ranges.append(ProfileRange(low, high))
    return ranges


def _profile_values(engine: Any, name: str, profile: int) -> list[list[int]]:
    """min/opt/max values of a shape tensor; the binding's argument order differs between releases."""
    try:
        return engine.get_tensor_profile_values(profile, name)
    except TypeError:
        return engine.get_tensor_profile_values(name, profile)


def _output_allocator_class(trt: ModuleType) -> type:
    """An IOutputAllocator for outputs whose shape depends on the data (NonZero, NMS, ...)."""

    class _OutputAllocator(trt.IOutputAllocator):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)
            self.buffers: dict[str, DeviceBuffer] = {}
            self.shapes: dict[str, Shape] = {}

        def reallocate_output(self, tensor_name: str, memory: int, size: int, alignment: int) -> int:
            return self.reallocate_output_async(tensor_name, memory, size, alignment, 0)

        def reallocate_output_async(self, tensor_name: str, memory: int, size: int, alignment: int, stream: int) -> int:
            buffer = self.buffers.get(tensor_name)
            if buffer is None:
                buffer = self.buffers[tensor_name] = DeviceBuffer(size)
            else:
                buffer.ensure(size)
            return buffer.ptr

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            self.shapes[tensor_name] = tuple(int(d) for d in shape)

        def free(self) -> None:
            for buffer in self.buffers.values():
                buffer.free()
            self.buffers.clear()

    return _OutputAllocator


class TrtRunner(BaseRunner):
    """An ICudaEngine on the current CUDA device (see the module docstring).

    ``engine`` comes deserialized (the runtime loader does that once); ``trt_module`` is the
    module it came from (``tensorrt`` or ``tensorrt_rtx``), so enums and classes match.
    """

    def __init__(self, engine: Any, trt_module: ModuleType, name: str = "trt") -> None:
        super().__init__(name)
        if engine is None:
            raise RunnerError(f"{name}: no engine (deserialization failed earlier)")
        self.engine = engine
        self.trt = trt_module
        self._context: Any = None
        self._stream: CudaStream | None = None
        self._buffers: dict[str, DeviceBuffer] = {}
        self._host_inputs: dict[str, np.ndarray] = {}
        self._allocator: Any = None
        self._dynamic_outputs: set[str] = set()
        self._profile: int | None = None
        self.io: tuple[IoTensor, ...] = ()
        self.profiles: list[ProfileRange] = []

    @property
    def inputs(self) -> list[IoTensor]:
        return [tensor for tensor in self.io if tensor.is_input]

    @property
    def device_bytes(self) -> int:
        """Device memory of the I/O buffers preallocated for the profiles' largest shapes."""
        return sum(int(buffer.size) for buffer in self._buffers.values())

    @property
    def outputs(self) -> list[IoTensor]:
        return [tensor for tensor in self.io if not tensor.is_input]

    def _activate(self) -> None:
        self.io = engine_io(self.engine, self.trt)
        self.profiles = engine_profiles(self.engine, self.inputs)
        self._stream = CudaStream()
        try:
            self._context = self.engine.create_execution_context()
            if self._context is None:
                raise RunnerError(f"{self.name}: TensorRT could not create an execution context (GPU memory?)")
            self._allocate()
        except BaseException:
            self._deactivate()
            raise

    def _allocate(self) -> None:
        """One device buffer per tensor, sized for the largest shape any profile allows."""
        assert self._stream is not None
        largest: dict[str, int] = {}
        for index, profile in enumerate(self.profiles):
            self._switch_profile(index)
            for tensor in self.inputs:
                shape = tensor.static_shape or profile.max.get(tensor.name)
                if tensor.on_host:
                    shape = tuple(int(d) for d in self.engine.get_tensor_profile_shape(tensor.name, index)[2])
                    values = _profile_values(self.engine, tensor.name, index)[2]
                    self._host_inputs[tensor.name] = self._host_array(tensor, shape, values)
                    self._context.set_tensor_address(tensor.name, self._host_inputs[tensor.name].ctypes.data)
                    continue
                assert shape is not None
                self._context.set_input_shape(tensor.name, shape)
                largest[tensor.name] = max(largest.get(tensor.name, 0), nbytes(shape, tensor.bits))
            for tensor in self.outputs:
                shape = tuple(int(d) for d in self._context.get_tensor_shape(tensor.name))
                if any(d < 0 for d in shape):
                    self._dynamic_outputs.add(tensor.name)
                    continue
                largest[tensor.name] = max(largest.get(tensor.name, 0), nbytes(shape, tensor.bits))
        self._stream.synchronize()
        for name, size in largest.items():
            self._buffers[name] = DeviceBuffer(size)
        if self._dynamic_outputs:
            self._allocator = _output_allocator_class(self.trt)()
            for name in self._dynamic_outputs:
                self._context.set_output_allocator(name, self._allocator)

    def _host_array(self, tensor: IoTensor, shape: Shape, values: Sequence[int]) -> np.ndarray:
        import numpy as np

        array = np.zeros(shape, numpy_dtype(TRT_DTYPES[tensor.trt_dtype][0]))
        array.reshape(-1)[: len(values)] = values
        return array

    def _switch_profile(self, index: int) -> None:
        assert self._stream is not None
        if self._profile == index:
            return
        if not self._context.set_optimization_profile_async(index, self._stream.ptr):
            raise RunnerError(f"{self.name}: TensorRT refused to switch to optimization profile {index}")
        self._profile = index

    def _deactivate(self) -> None:
        failures: list[str] = []
        for buffer in self._buffers.values():
            try:
                buffer.free()
            except RunnerError as exc:
                failures.append(str(exc))
        self._buffers.clear()
        if self._allocator is not None:
            self._allocator.free()
            self._allocator = None
        self._context = None  # releases the context's own device memory
        self._host_inputs.clear()
        self._profile = None
        if self._stream is not None:
            self._stream.destroy()
            self._stream = None
        if failures:
            raise RunnerError(f"{self.name}: {failures[0]}")

    def _checked_feed(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        check_feed_names(self.name, [tensor.name for tensor in self.inputs], feed)
        checked = {}
        for tensor in self.inputs:
            array = np.asarray(feed[tensor.name])
            expected = numpy_dtype(TRT_DTYPES[tensor.trt_dtype][0])
            if array.dtype != expected:
                raise InvalidInputError(
                    f"{self.name}: input '{tensor.name}' is {array.dtype}, the engine expects {expected}; "
                    f"cast it first (np.asarray(x, dtype='{expected}'))"
                )
            if tensor.static_shape is not None and array.shape != tensor.static_shape:
                raise InvalidInputError(
                    f"{self.name}: input '{tensor.name}' has shape {list(array.shape)}, "
                    f"the engine's is static {list(tensor.static_shape)}"
                )
            checked[tensor.name] = array
        return checked

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        assert self._stream is not None
        arrays = self._checked_feed(feed)
        shapes = {name: tuple(array.shape) for name, array in arrays.items()}
        dynamic = {tensor.name: shapes[tensor.name] for tensor in self.inputs if tensor.name in self.profiles[0].min}
        profile = matching_profile(dynamic, self.profiles, self._profile)
        if profile is None:
            given = ", ".join(f"{name} {list(shape)}" for name, shape in dynamic.items())
            raise InvalidInputError(
                f"{self.name}: no optimization profile accepts {given} ({describe_ranges(self.profiles)})"
            )
        self._switch_profile(profile)
        staged = []  # keep the packed host copies alive until the stream is synchronized
        for tensor in self.inputs:
            array = arrays[tensor.name]
            if tensor.on_host:
                host = self._host_inputs[tensor.name]
                host.reshape(-1)[: array.size] = array.reshape(-1)
                continue
            if not self._context.set_input_shape(tensor.name, array.shape):
                raise InvalidInputError(
                    f"{self.name}: TensorRT refused shape {list(array.shape)} for input '{tensor.name}'"
                )
            data = pack(array, tensor.bits)
            staged.append(data)
            buffer = self._buffers[tensor.name]
            buffer.copy_from_host(data, self._stream.handle)
            self._context.set_tensor_address(tensor.name, buffer.ptr)
        output_shapes: dict[str, Shape] = {}
        for tensor in self.outputs:
            if tensor.name in self._dynamic_outputs:
                continue
            output_shapes[tensor.name] = tuple(int(d) for d in self._context.get_tensor_shape(tensor.name))
            self._context.set_tensor_address(tensor.name, self._buffers[tensor.name].ptr)
        if not self._context.execute_async_v3(self._stream.ptr):
            raise RunnerError(f"{self.name}: TensorRT execute_async_v3 failed (see the TensorRT log above)")
        results: dict[str, np.ndarray] = {}
        raws: dict[str, np.ndarray] = {}
        if self._dynamic_outputs:
            self._stream.synchronize()  # the allocator learns data-dependent shapes during execution
            for name in self._dynamic_outputs:
                output_shapes[name] = self._allocator.shapes[name]
        for tensor in self.outputs:
            shape = output_shapes[tensor.name]
            raw = np.empty(max(nbytes(shape, tensor.bits), 1), np.uint8)
            dynamic_output = tensor.name in self._dynamic_outputs
            source = self._allocator.buffers[tensor.name] if dynamic_output else self._buffers[tensor.name]
            source.copy_to_host(raw, self._stream.handle)
            raws[tensor.name] = raw
        self._stream.synchronize()
        del staged
        for tensor in self.outputs:
            dtype = numpy_dtype(TRT_DTYPES[tensor.trt_dtype][0])
            results[tensor.name] = unpack(raws[tensor.name], dtype, tensor.bits, output_shapes[tensor.name]).copy()
        return results
