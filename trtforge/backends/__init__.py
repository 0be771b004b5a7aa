"""TensorRT flavors behind one small interface: ``TensorRTApiBackend.build(request, monitor)``.

Enterprise TensorRT and TensorRT-RTX share one Python API; ``base.TensorRTApiBackend`` holds
everything they share, the flavor modules only what differs (targets, precision flags, caches).
"""

from __future__ import annotations

from trtforge.backends.base import BuildMonitor, BuildRequest, BuildResult, TensorRTApiBackend
from trtforge.environment import Choice, choose_backend, import_backend
from trtforge.tags import FLAVOR_RTX

__all__ = [
    "BuildMonitor",
    "BuildRequest",
    "BuildResult",
    "Choice",
    "TensorRTApiBackend",
    "choose_backend",
    "open_backend",
]


def open_backend(flavor: str) -> TensorRTApiBackend:
    module = import_backend(flavor)
    if flavor == FLAVOR_RTX:
        from trtforge.backends.rtx import RtxBackend

        return RtxBackend(module)
    from trtforge.backends.tensorrt import EnterpriseBackend

    return EnterpriseBackend(module)
