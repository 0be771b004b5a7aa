"""Edits trtforge makes to an ONNX model without copying its weights (``trtforge.model``): the
opset upgrade before FP16 Q/DQ, and the extra outputs of a pass that reads inner tensors. Each is
checked against the plain way of doing it: the same graph and weights, the input model untouched."""

from __future__ import annotations

from collections.abc import Callable

import onnx
import pytest
from models import small_cnn
from onnx import TensorProto, helper, version_converter

from trtforge.model import upgraded, with_outputs


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
