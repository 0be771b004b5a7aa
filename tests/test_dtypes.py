"""The one TensorRT dtype map: the names manifests record are the numpy/ml_dtypes names the
runners allocate, and TensorRT's byte layout (4-bit packing) round-trips. Pure, except the two
tests that read the installed TensorRT-RTX's DataType enum and parse a real FP8 model with it."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
from models import need_rtx
from onnx import TensorProto, helper

from trtforge import dtypes
from trtforge.backends import open_backend
from trtforge.tags import FLAVOR_RTX


def test_every_tensorrt_dtype_has_a_numpy_dtype() -> None:
    trt = need_rtx()
    assert set(trt.DataType.__members__) <= set(dtypes.TRT_DTYPES)
    for name, (type_name, bits) in dtypes.TRT_DTYPES.items():
        dtype = dtypes.numpy_dtype(type_name)
        assert dtype.itemsize * 8 == max(bits, 8), name


#: each TensorRT DataType and the ONNX element type of the same values, written out here: the
#: manifest's name for a TensorRT type must be what onnx calls that type's numpy dtype
TRT_AS_ONNX = {
    "FLOAT": TensorProto.FLOAT,
    "HALF": TensorProto.FLOAT16,
    "BF16": TensorProto.BFLOAT16,
    "INT8": TensorProto.INT8,
    "UINT8": TensorProto.UINT8,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "BOOL": TensorProto.BOOL,
    "FP8": TensorProto.FLOAT8E4M3FN,
    "E8M0": TensorProto.FLOAT8E8M0,
    "INT4": TensorProto.INT4,
    "FP4": TensorProto.FLOAT4E2M1,
}


def test_every_tensorrt_dtype_has_its_onnx_counterpart() -> None:
    assert set(TRT_AS_ONNX) == set(dtypes.TRT_DTYPES)


@pytest.mark.parametrize("trt_name", sorted(dtypes.TRT_DTYPES))
def test_the_manifest_name_is_the_numpy_name_the_runners_allocate(trt_name: str) -> None:
    """What the build writes (``numpy_name``) is onnx's numpy name for the same element type (so an
    engine's input and its ONNX model's input carry one name: ``float8_e4m3fn``, not ``float8_e4m3``),
    it reads back as that numpy type (``numpy_dtype``), and the type's bits are the table's."""
    name = dtypes.numpy_name(trt_name)
    onnx_type = TRT_AS_ONNX[trt_name]
    assert name == helper.tensor_dtype_to_np_dtype(onnx_type).name == dtypes.ONNX_DTYPES[onnx_type]
    dtype = dtypes.numpy_dtype(name)
    assert dtype.name == name
    bits = dtypes.TRT_DTYPES[trt_name][1]
    assert dtype.itemsize == max(bits, 8) // 8  # sub-byte types take a byte in numpy, packed for TensorRT


def test_fp8_is_ml_dtypes_float8_e4m3fn_and_unknown_types_keep_their_name() -> None:
    assert dtypes.numpy_name("FP8") == "float8_e4m3fn"
    assert dtypes.numpy_dtype(dtypes.numpy_name("FP8")) == np.dtype(ml_dtypes.float8_e4m3fn)
    assert dtypes.numpy_dtype(dtypes.numpy_name("FP4")) == np.dtype(ml_dtypes.float4_e2m1fn)
    assert dtypes.numpy_name("FUTURE_TYPE") == "future_type"


def test_the_backend_records_an_fp8_input_under_the_runners_name() -> None:
    """A real FP8 network (parsed by TensorRT-RTX on the CPU): its manifest dtype allocates."""
    need_rtx()
    backend = open_backend(FLAVOR_RTX)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT8E4M3FN, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], "fp8", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    network = backend.trt.Builder(backend.logger).create_network(0)
    parser = backend.trt.OnnxParser(network, backend.logger)
    assert parser.parse(model.SerializeToString())
    facts = {tensor.name: tensor.dtype for tensor in backend._io(network)}
    assert facts == {"x": "float8_e4m3fn", "y": "float32"}
    assert dtypes.numpy_dtype(facts["x"]) == np.dtype(ml_dtypes.float8_e4m3fn)


@pytest.mark.parametrize(
    ("dtype", "values"),
    [(ml_dtypes.int4, [-8, -1, 0, 7, 3]), (ml_dtypes.float4_e2m1fn, [-6.0, -0.5, 0.0, 1.5])],
)
def test_four_bit_values_pack_two_per_byte_low_nibble_first(dtype: Any, values: list[float]) -> None:
    array = np.array(values, dtype=dtype)
    packed = dtypes.pack(array, 4)
    assert packed.dtype == np.uint8 and packed.size == (len(values) + 1) // 2
    nibbles = array.view(np.uint8) & 0x0F
    assert packed[0] == nibbles[0] | (nibbles[1] << 4)
    back = dtypes.unpack(packed, np.dtype(dtype), 4, (len(values),))
    np.testing.assert_array_equal(back.astype(np.float32), array.astype(np.float32))


def test_pack_and_unpack_whole_bytes() -> None:
    array = np.arange(6, dtype=np.float16).reshape(2, 3)
    packed = dtypes.pack(array, 16)
    assert packed.nbytes == dtypes.nbytes((2, 3), 16) == 12
    np.testing.assert_array_equal(dtypes.unpack(packed, np.dtype(np.float16), 16, (2, 3)), array)
    assert dtypes.nbytes((3,), 4) == 2


def test_onnx_element_types_map_as_onnx_maps_them() -> None:
    """The written-out map (describing a model imports no onnx) agrees with onnx's own."""
    for value in TensorProto.DataType.values():
        if value == TensorProto.UNDEFINED:
            assert value not in dtypes.ONNX_DTYPES
            continue
        assert dtypes.ONNX_DTYPES[value] == helper.tensor_dtype_to_np_dtype(value).name


def test_itemsize_from_the_name_is_numpys() -> None:
    for name in dtypes.ONNX_DTYPES.values():
        assert dtypes.itemsize(name) == dtypes.numpy_dtype(name).itemsize, name
