"""TensorRT's data types as numpy sees them: the one map from a TensorRT ``DataType`` name to the
numpy/ml_dtypes name (what manifests record and runners allocate) and its bits per element, and
the byte layout TensorRT expects (4-bit types packed two per byte).

Manifest dtype names are numpy names so that ``numpy_dtype(name)`` gives the array type that
feeds the engine: ``float8_e4m3fn``, not ``float8_e4m3``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

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


#: ONNX ``TensorProto.DataType`` value -> numpy/ml_dtypes type name, as ``onnx.helper.tensor_dtype_to_np_dtype``
#: gives it. Written out because onnx's own map imports numpy, ml_dtypes and all of onnx (~120 ms),
#: which describing a model's inputs must not cost; tests/test_dtypes.py checks it against onnx's.
ONNX_DTYPES: Mapping[int, str] = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "object",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 14: "complex64", 15: "complex128",
    16: "bfloat16", 17: "float8_e4m3fn", 18: "float8_e4m3fnuz", 19: "float8_e5m2", 20: "float8_e5m2fnuz",
    21: "uint4", 22: "int4", 23: "float4_e2m1fn", 24: "float8_e8m0fnu", 25: "uint2", 26: "int2",
    27: "float6_e2m3fn", 28: "float6_e3m2fn",
}  # fmt: skip


def itemsize(type_name: str) -> int:
    """Bytes numpy gives one element of this dtype name (sub-byte types take a whole byte; ``object``
    a pointer), read from the name: sizing a feed must not import numpy."""
    bits = re.search(r"\d+", type_name)
    if bits is None:
        return 8 if type_name == "object" else 1  # bool
    return max(1, int(bits.group()) // 8)


def numpy_name(trt_name: str) -> str:
    """The manifest's name of a TensorRT DataType (``FP8`` -> ``float8_e4m3fn``); unknown ones lower-cased."""
    known = TRT_DTYPES.get(trt_name)
    return known[0] if known is not None else trt_name.lower()


def numpy_dtype(type_name: str) -> np.dtype:
    """The numpy dtype of a name from TRT_DTYPES (ml_dtypes, shipped with onnx, gives the exotic ones)."""
    import numpy as np

    try:
        return np.dtype(type_name)
    except TypeError:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, type_name))


def nbytes(shape: tuple[int, ...], bits: int) -> int:
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


def unpack(raw: np.ndarray, dtype: np.dtype, bits: int, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of ``pack``: bytes from the device into an array of ``dtype`` and ``shape``."""
    import numpy as np

    count = math.prod(shape)
    if bits != 4:
        return raw[: count * dtype.itemsize].view(dtype).reshape(shape)
    nibbles = np.empty(raw.size * 2, np.uint8)
    nibbles[0::2] = raw & 0x0F
    nibbles[1::2] = raw >> 4
    return nibbles[:count].view(dtype).reshape(shape)
