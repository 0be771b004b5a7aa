"""TensorRT flavors behind one small interface: ``TensorRTApiBackend.build(request, monitor)``.

Enterprise TensorRT and TensorRT-RTX share one Python API; ``base.TensorRTApiBackend`` holds
everything they share, the flavor modules only what differs (targets, precision flags, caches).
"""

from __future__ import annotations

from dataclasses import dataclass

from trtforge.backends.base import BuildMonitor, BuildRequest, BuildResult, TensorRTApiBackend
from trtforge.environment import detect_gpus, import_backend, installed_version
from trtforge.errors import BackendUnavailableError
from trtforge.tags import FLAVOR_RTX, FLAVOR_TENSORRT

__all__ = [
    "BuildMonitor",
    "BuildRequest",
    "BuildResult",
    "Choice",
    "TensorRTApiBackend",
    "choose_backend",
    "open_backend",
]


@dataclass(frozen=True)
class Choice:
    flavor: str
    reason: str


def choose_backend(requested: str) -> Choice:
    """Resolve ``auto``: enterprise TensorRT when it imports and a GPU is present, else TensorRT-RTX."""
    if requested != "auto":
        return Choice(requested, f"{requested} requested")
    has_trt = installed_version(FLAVOR_TENSORRT) is not None
    gpus = detect_gpus() if has_trt else ()
    if has_trt and gpus:
        return Choice(FLAVOR_TENSORRT, f"tensorrt imports and a GPU is present ({gpus[0].name})")
    if installed_version(FLAVOR_RTX) is None:
        raise BackendUnavailableError(
            "no TensorRT backend is installed: pip install 'trtforge[rtx]' (CPU-only builds) "
            "or 'trtforge[tensorrt]' (on a GPU host)"
        )
    why = "no GPU detected" if has_trt else "tensorrt does not import"
    return Choice(FLAVOR_RTX, f"{why}; tensorrt-rtx builds on the CPU")


def open_backend(flavor: str) -> TensorRTApiBackend:
    module = import_backend(flavor)
    if flavor == FLAVOR_RTX:
        from trtforge.backends.rtx import RtxBackend

        return RtxBackend(module)
    from trtforge.backends.tensorrt import EnterpriseBackend

    return EnterpriseBackend(module)
