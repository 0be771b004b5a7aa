"""The ONNX model as trtforge sees it: loaded, checked, its inputs and outputs described."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trtforge.errors import InvalidInputError, first_line

if TYPE_CHECKING:
    import onnx

Dim = int | str | None
"""A static size, a named dynamic dimension, or an unnamed dynamic one."""


@dataclass(frozen=True)
class TensorDesc:
    name: str
    dtype: str
    shape: tuple[Dim, ...]

    @property
    def is_dynamic(self) -> bool:
        return any(not isinstance(dim, int) or dim < 0 for dim in self.shape)


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    inputs: tuple[TensorDesc, ...]
    outputs: tuple[TensorDesc, ...]

    def input(self, name: str) -> TensorDesc | None:
        return next((tensor for tensor in self.inputs if tensor.name == name), None)


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file, turning every failure into a one-line, fixable error."""
    import onnx

    if not path.is_file():
        raise InvalidInputError(f"{path}: model file not found; check 'model:' in the spec")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for non-ONNX bytes
        raise InvalidInputError(
            f"{path}: not an ONNX model ({type(exc).__name__}); export the model to ONNX first"
        ) from exc
    if not model.graph.node and not model.graph.input:
        raise InvalidInputError(f"{path}: not an ONNX model (empty graph); export the model to ONNX first")
    try:
        # By path: checking the in-memory proto serializes it again, 3-4x slower on large models.
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise InvalidInputError(f"{path}: invalid ONNX model: {first_line(exc)}") from exc
    return model


def describe(model: onnx.ModelProto, path: Path) -> ModelInfo:
    """Inputs (initializers excluded) and outputs with element types and dims."""
    import onnx

    initializers = {init.name for init in model.graph.initializer}

    def tensor(value: onnx.ValueInfoProto) -> TensorDesc:
        tensor_type = value.type.tensor_type
        dims: list[Dim] = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        return TensorDesc(value.name, dtype, tuple(dims))

    inputs = tuple(tensor(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(tensor(v) for v in model.graph.output)
    return ModelInfo(path=path, inputs=inputs, outputs=outputs)


def inspect_model(path: Path) -> ModelInfo:
    return describe(load_onnx(path), path)
