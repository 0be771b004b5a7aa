"""``TrtRunner``: an already deserialized TensorRT engine (enterprise TensorRT or TensorRT-RTX).

One execution context, its own CUDA stream, device buffers preallocated for the largest shapes of
every profile, dynamic shapes through the matching profile. Deserialize an engine once and create
one TrtRunner per concurrent user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from trtforge.dtypes import TRT_DTYPES, nbytes, numpy_dtype, pack, unpack
from trtforge.errors import InvalidInputError, first_line
from trtforge.runners.base import Runner, RunnerError, check_feed_names
from trtforge.runners.cuda import CudaStream, DeviceBuffer
from trtforge.shapes import Shape, accepts

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class ProfileRange:
    """The shapes one optimization profile accepts for each input."""

    min: Mapping[str, Shape]
    max: Mapping[str, Shape]

    def accepts(self, shapes: Mapping[str, Shape]) -> bool:
        return accepts(self.min, self.max, shapes)


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


class TrtRunner(Runner):
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
        refused = f"{self.name}: TensorRT refused to switch to optimization profile {index}"
        try:  # 10.x and 11.x raise RuntimeError ("Error in set optimization profile async."); older returned False
            switched = self._context.set_optimization_profile_async(index, self._stream.ptr)
        except RuntimeError as exc:
            raise RunnerError(f"{refused}: {first_line(exc)}") from exc
        if not switched:
            raise RunnerError(refused)
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
