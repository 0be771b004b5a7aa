"""CUDA through cuda-python: the runtime bindings, a device buffer, a stream, the device count.

What a GPU runner needs of CUDA and nothing more; cuda-python comes with ``pip install 'trtforge[gpu]'``
(12.x, see pyproject.toml), and what is used here works with the ``cuda.bindings`` of 12.x and 13.x.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from trtforge.errors import raise_if_interrupted
from trtforge.runners.base import RunnerError

if TYPE_CHECKING:
    import numpy as np


def cuda_runtime() -> ModuleType:
    """cuda-python's runtime bindings (``cuda.bindings.runtime``; older releases: ``cuda.cudart``);
    a Ctrl-C in their import is a KeyboardInterrupt, not a missing cuda-python."""
    try:
        from cuda.bindings import runtime
    except ImportError as newer:
        raise_if_interrupted(newer)
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6
        except ImportError as exc:
            raise_if_interrupted(exc)
            raise RunnerError(
                "cuda-python is not installed; the TensorRT runner needs it: pip install 'trtforge[gpu]'"
            ) from exc
    return runtime


def native_handle(cuda_object: Any) -> int:
    """The address a cuda-python object (a stream) wraps, as TensorRT takes it: through
    ``cuda.bindings.utils.get_cuda_native_handle`` where it exists (12.9.1 and 13.x, which deprecate
    ``int()`` of the object), else ``int()``."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError as exc:
        raise_if_interrupted(exc)
        return int(cuda_object)
    return int(get_cuda_native_handle(cuda_object))


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
        return native_handle(self.handle)

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
