"""Edits trtforge makes to an ONNX model without copying its weights (``trtforge.model``): the
opset upgrade before FP16 Q/DQ, the element types of an FP16 graph, and the extra outputs of a
pass that reads inner tensors. Each is checked against the plain way of doing it: the same graph,
weights and types, the input model untouched."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from models import small_cnn
from onnx import TensorProto, helper, version_converter

from trtforge.mixedprecision import _elem_types, to_fp16
from trtforge.model import _HELD_BACK, upgraded, weightless, with_outputs


def _reduce_model() -> onnx.ModelProto:
    """Opset 13 with a weight and a ReduceMean whose axes attribute becomes an input at 18."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "w"], ["m"]),
            helper.make_node("ReduceMean", ["m"], ["y"], axes=[1], keepdims=0),
        ],
        "reduce",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("make", [small_cnn, _reduce_model], ids=["cnn", "reduce-axes"])
def test_upgrade_is_the_converters_own_with_the_weights_kept(make: Callable[[], onnx.ModelProto]) -> None:
    model = make()
    before = model.SerializeToString()
    plain = version_converter.convert_version(model, 19)
    fast = upgraded(model, 19)
    assert model.SerializeToString() == before
    assert fast.opset_import == plain.opset_import and fast.graph.node == plain.graph.node
    assert fast.graph.initializer == plain.graph.initializer  # every weight back, bytes and all
    assert not any(tensor.external_data for tensor in fast.graph.initializer)
    onnx.checker.check_model(fast, full_check=True)


def _renamed(converted: onnx.ModelProto, held_back: onnx.TensorProto) -> None:
    old, new = held_back.name, f"{held_back.name}.renamed"
    held_back.name = new
    for node in converted.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def _moved_into_a_node(converted: onnx.ModelProto, held_back: onnx.TensorProto) -> None:
    constant = helper.make_node("Constant", [], [held_back.name], value=held_back)
    converted.graph.initializer.remove(held_back)
    converted.graph.node.insert(0, constant)


def _reading_a_weight(converted: onnx.ModelProto, held_back: onnx.TensorProto) -> None:
    raise RuntimeError(f"an adapter cannot read '{held_back.name}': its data is external")


@pytest.mark.parametrize(
    "adapter", [_renamed, _moved_into_a_node, _reading_a_weight], ids=["renamed", "moved-into-a-node", "read"]
)
def test_upgrade_converts_the_whole_model_if_a_weight_cannot_be_held_back(
    monkeypatch: pytest.MonkeyPatch, adapter: Callable[[onnx.ModelProto, onnx.TensorProto], None]
) -> None:
    """Were an adapter ever to rename an initializer, fold it into a node or need its values, its data
    could not be put back by name: the whole model goes through the converter instead."""
    model = small_cnn()
    convert = version_converter.convert_version

    def rewriting(source: onnx.ModelProto, opset: int) -> onnx.ModelProto:
        converted = convert(source, opset)
        held_back = [tensor for tensor in converted.graph.initializer if tensor.external_data]
        if held_back:
            adapter(converted, held_back[0])
        return converted

    monkeypatch.setattr(version_converter, "convert_version", rewriting)
    fast = upgraded(model, 19)
    assert fast.graph.initializer == convert(model, 19).graph.initializer
    assert "held back" not in str(fast)


def test_extra_outputs_are_added_once_and_the_model_is_left_as_it_was() -> None:
    """The diagnosis's form (bytes, no file): a name asked twice, or already an output, is one output."""
    model = small_cnn()
    before = model.SerializeToString()
    names = [node.output[0] for node in model.graph.node[:2]]
    exposed = onnx.load_from_string(with_outputs(model, [*names, names[0], "logits"]))
    assert [output.name for output in exposed.graph.output] == ["logits", *names]
    assert model.SerializeToString() == before


def test_weightless_holds_back_the_weights_and_keeps_the_small_constants() -> None:
    model = small_cnn()
    before = model.SerializeToString()
    light = weightless(model)
    assert model.SerializeToString() == before
    for original, tensor in zip(model.graph.initializer, light.graph.initializer, strict=True):
        if original.ByteSize() >= 1024:  # block.w: 8x8x3x3 floats
            assert not tensor.raw_data and tensor.data_location == TensorProto.EXTERNAL
            assert [entry.value for entry in tensor.external_data] == [_HELD_BACK]
        else:
            assert tensor == original
    assert light.graph.node == model.graph.node
    assert sum(not tensor.raw_data for tensor in light.graph.initializer) == 1


def _reshape_to_rank(rank: int, elem_type: int = TensorProto.FLOAT16) -> onnx.ModelProto:
    """A Reshape whose target shape is an initializer of ``rank`` int64 values, stored raw: from rank
    128 on it is held back (1 KiB and more), and shape inference needs its values."""
    dims = np.array([2] + [1] * (rank - 1), np.int64)
    shape = helper.make_tensor("shape", TensorProto.INT64, [rank], dims.tobytes(), raw=True)
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Relu", ["r"], ["y"])],
        "reshape",
        [helper.make_tensor_value_info("x", elem_type, [2])],
        [helper.make_tensor_value_info("y", elem_type, None)],
        [shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _whole_model_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {init.name: init.data_type for init in graph.initializer}
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    return types


@pytest.mark.parametrize(
    ("make", "held_back_is_read"),
    [
        (lambda: to_fp16(small_cnn()), False),
        (lambda: _reshape_to_rank(4), False),
        (lambda: _reshape_to_rank(200), True),
    ],
    ids=["fp16-cnn", "small-shape-kept", "large-shape-held-back"],
)
def test_element_types_without_the_weights_are_the_whole_models(
    make: Callable[[], onnx.ModelProto], held_back_is_read: bool
) -> None:
    """The FP16 emulation's types come from shape inference on the graph without its weights; where
    a node needs a held-back value (a target shape of 200 dims), that inference fails and the whole
    model's is used."""
    model = make()
    try:
        onnx.shape_inference.infer_shapes(weightless(model), strict_mode=True)
        read = False
    except onnx.shape_inference.InferenceError:
        read = True
    assert read == held_back_is_read
    types = _elem_types(model)
    assert types == _whole_model_types(model)
    assert sum(kind == TensorProto.FLOAT16 for kind in types.values()) >= (2 if held_back_is_read else 3)


@pytest.mark.parametrize(
    "make", [small_cnn, lambda: _reshape_to_rank(200, TensorProto.FLOAT)], ids=["cnn", "large-shape-held-back"]
)
def test_fp16_conversion_is_the_converters_own(make: Callable[[], onnx.ModelProto]) -> None:
    """``to_fp16`` runs the converter's shape inference on the graph without its weights (or leaves
    it to the converter where a node needs a held-back value): the FP16 model is the converter's
    own, byte for byte, and the model given is left as it was."""
    from onnxruntime.transformers import float16

    plain = float16.convert_float_to_float16(
        make(), keep_io_types=True, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST)
    )
    model = make()
    assert to_fp16(model).SerializeToString() == plain.SerializeToString()
    assert model.SerializeToString() == make().SerializeToString()  # the input is left as it was
