"""The ONNX model as trtforge sees it: loaded, checked, its inputs and outputs described."""

from __future__ import annotations

import math
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trtforge.errors import InvalidInputError, first_line

if TYPE_CHECKING:
    import onnx

Dim = int | str | None
"""A static size, a named dynamic dimension, or an unnamed dynamic one."""

#: Input bytes one random feed of the accuracy gate, or one ``bench`` request, may take (all
#: inputs together). A profile's max shape says what the engine accepts, not what is sensible to
#: allocate: ``max: [100000, 3, 4096, 4096]`` is 20 TB of float32.
INPUT_BUDGET_BYTES = 256 * 1024 * 1024

_FILE_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


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


def not_a_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file (None: it can), from ``stat`` alone: opening a named
    pipe blocks until a writer comes, and a device like /dev/zero never ends."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "not found"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
    return f"is not a regular file ({kind})"


def check_model_file(path: Path) -> None:
    """The spec's model is a regular file, before anything opens or hashes it."""
    problem = not_a_file(path)
    if problem:
        raise InvalidInputError(f"{path}: model file {problem}; check 'model:' in the spec")


def _external_data_problem(model: onnx.ModelProto, folder: Path) -> str | None:
    """The first external-data file the graph names that is missing or not a regular file."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            location = folder / ExternalDataInfo(tensor).location
            problem = not_a_file(location)
            if problem:
                return f"external data file {location} (tensor '{tensor.name}') {problem}"
    return None


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file, turning every failure into a one-line, fixable error.

    The graph is read first and its external-data files checked before any is opened, so a
    missing weights file is named and a named pipe in its place cannot block the load.
    """
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    check_model_file(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for non-ONNX bytes
        raise InvalidInputError(
            f"{path}: not an ONNX model ({type(exc).__name__}); export the model to ONNX first"
        ) from exc
    missing = _external_data_problem(model, path.parent)
    if missing:
        raise InvalidInputError(f"{path}: {missing}; keep the model's external data beside it, as it was saved")
    try:
        load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # a short or unreadable data file, a location outside the model's folder
        raise InvalidInputError(f"{path}: cannot read its external data ({first_line(exc)})") from exc
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


def input_bytes(inputs: Sequence[TensorDesc], shapes: Mapping[str, Sequence[int]]) -> int:
    """Bytes of one feed of ``shapes`` for these inputs (exact Python ints: no overflow)."""
    import numpy as np

    return sum(math.prod(shapes[tensor.name]) * np.dtype(tensor.dtype).itemsize for tensor in inputs)


def mib(size: int) -> str:
    """Bytes as MiB for messages about the input budget."""
    return f"{size / 2**20:,.0f} MiB"
