"""The ONNX model as trtforge sees it: loaded, checked, its inputs and outputs described."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import math
import mmap
import os
import stat
import sys
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, overload

from trtforge.errors import InvalidInputError, first_line

if TYPE_CHECKING:
    import numpy as np
    import onnx

Dim = int | str | None
"""A static size, a named dynamic dimension, or an unnamed dynamic one."""

#: Input bytes one random feed of the accuracy gate, or one ``bench`` request, may take (all
#: inputs together). A profile's max shape says what the engine accepts, not what is sensible to
#: allocate: ``max: [100000, 3, 4096, 4096]`` is 20 TB of float32.
INPUT_BUDGET_BYTES = 256 * 1024 * 1024
#: Random integer inputs of the accuracy gate lie in ``[0, INT_HIGH)`` unless the graph says otherwise.
INT_HIGH = 8
#: Element types a shape tensor (an input whose values TensorRT reads as a shape) may have.
SHAPE_TENSOR_DTYPES = ("int32", "int64")


@dataclass(frozen=True)
class TensorDesc:
    """``valid_range``: the values ``[low, high)`` an integer input may take for the model to be
    defined: it indexes an axis of known size (Gather indices, a loss target, sequence lengths)
    or divides; None when the graph says nothing."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    valid_range: tuple[int, int] | None = None

    @property
    def is_dynamic(self) -> bool:
        return any(not isinstance(dim, int) or dim < 0 for dim in self.shape)

    @property
    def can_be_shape_tensor(self) -> bool:
        """int32/int64 of rank 0 or 1: what a shape tensor's values may be."""
        return self.dtype in SHAPE_TENSOR_DTYPES and len(self.shape) <= 1

    @property
    def np_dtype(self) -> np.dtype:
        """The numpy dtype (bfloat16 and float8 through ml_dtypes)."""
        from trtforge.dtypes import numpy_dtype

        return numpy_dtype(self.dtype)


def is_float(dtype: np.dtype) -> bool:
    """numpy's floats and ml_dtypes' (bfloat16, float8...), which numpy does not count as floating."""
    return dtype.kind == "f" or (dtype.kind == "V" and dtype.name.startswith(("bfloat", "float")))


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    inputs: tuple[TensorDesc, ...]
    outputs: tuple[TensorDesc, ...]
    #: the graph's ``metadata_props`` (key, value): what reads them needs no second parse of the model
    metadata: tuple[tuple[str, str], ...] = ()
    #: the external data files the graph names, relative to ``path``'s folder, once each and sorted
    #: (:func:`external_data_names`); empty for a model whose weights are inline, and for one described
    #: from a proto that already holds its weights (``describe(load_onnx(...))``: :func:`inspect_model` knows)
    external_data: tuple[str, ...] = ()

    def input(self, name: str) -> TensorDesc | None:
        return next((tensor for tensor in self.inputs if tensor.name == name), None)

    @property
    def files(self) -> list[Path]:
        """:func:`model_files` from what was read: the .onnx, then each external data file."""
        return _with_data(self.path, self.external_data)


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
    from trtforge.fsutil import special_file_kind  # on this rare path only: fsutil imports tempfile

    return f"is not a regular file ({special_file_kind(mode)})"


def check_model_file(path: Path, spec_key: str | None = None) -> None:
    """The model is a regular file, before anything opens or hashes it; ``spec_key``: the spec's
    ``file:line`` of its ``model:`` key, where there is a spec."""
    problem = not_a_file(path)
    if problem:
        fix = f"check 'model:' at {spec_key}" if spec_key else "pass the path of an .onnx file"
        raise InvalidInputError(f"{path}: model file {problem}; {fix}")


def external_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """The tensors whose values live in external data files (as saved, not yet loaded): every one
    onnx's loader reads them for, so initializers and node attributes' tensors, in subgraphs and
    functions too."""
    external = onnx_proto().TensorProto.EXTERNAL
    everywhere = itertools.chain(
        _tensors(model.graph.initializer, model.graph.node),
        *(_tensors((), function.node) for function in model.functions),
    )
    return (tensor for tensor in everywhere if tensor.data_location == external)


def _tensors(initializers: Iterable[onnx.TensorProto], nodes: Iterable[onnx.NodeProto]) -> Iterator[onnx.TensorProto]:
    """A graph's initializers and its nodes' attribute tensors, subgraphs' included."""
    yield from initializers
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for graph in (*([attribute.g] if attribute.HasField("g") else ()), *attribute.graphs):
                yield from _tensors(graph.initializer, graph.node)


def _location(tensor: onnx.TensorProto) -> str:
    """The external data file an external tensor names, relative to the model's folder."""
    return next((entry.value for entry in tensor.external_data if entry.key == "location"), "")


def _external_data_problem(model: onnx.ModelProto, folder: Path) -> str | None:
    """The first external-data file the graph names that is missing or not a regular file.

    Read from the proto's fields (``data_location``, the ``location`` entry) rather than through
    ``onnx.external_data_helper``, which needs all of onnx imported."""
    for tensor in external_tensors(model):
        location = folder / _location(tensor)
        problem = not_a_file(location)
        if problem:
            return f"external data file {location} (tensor '{tensor.name}') {problem}"
    return None


def external_data_names(model: onnx.ModelProto) -> tuple[str, ...]:
    """The external data files ``model`` (as saved, not yet loaded) names, relative to its folder,
    once each, sorted."""
    return tuple(sorted({_location(tensor) for tensor in external_tensors(model)}))


def _with_data(path: Path, names: Sequence[str]) -> list[Path]:
    return [path, *(path.parent / name for name in names)]


def model_files(path: Path) -> list[Path]:
    """The files a model's values come from: ``path``, then each external data file it names, once,
    in the order of their names, read from the graph (:func:`read_onnx`), which refuses a graph
    whose data file is missing; ``ModelInfo.files`` where the model was described already, and
    :func:`content_files` where the files need only be listed."""
    return _with_data(path, external_data_names(read_onnx(path)))


def content_files(path: Path, *, disk_cache: bool = True) -> list[Path]:
    """:func:`model_files`, the names read once per content of the .onnx (:func:`_remembered_names`;
    without ``disk_cache``, read from the graph, as a decision to trust the model needs)."""
    from trtforge.digests import sha256_file

    if not disk_cache:
        return _with_data(path, external_data_names(read_onnx(path)))
    return _with_data(path, _remembered_names(path, sha256_file(path)))


def content_sha256(path: Path, files: Sequence[Path] | None = None, *, disk_cache: bool = True) -> str:
    """The model's content digest, which every cache key and ``ci``'s "unchanged" rest on: weights
    edited in their external data file are another model, though the .onnx file is the same. A
    model without external data keeps its file's sha256 (the manifest's ``source.onnx_sha256``),
    and so the keys it had; each file's digest comes from the stat-keyed digest cache unless
    ``disk_cache`` is False (provenance, verify: :func:`trtforge.digests.sha256_file`). ``files``:
    the model's files where the caller has them (``ModelInfo.files``, :func:`content_files`)."""
    from trtforge.digests import data_sha256, sha256_file

    files = content_files(path, disk_cache=disk_cache) if files is None else files
    if len(files) > 1:
        return data_sha256(files, disk_cache=disk_cache)
    return sha256_file(path, disk_cache=disk_cache)


#: a cached list of external data file names: far below this for any model
_MAX_NAMES_ENTRY_BYTES = 16 * 1024 * 1024


def _remembered_names(path: Path, digest: str) -> tuple[str, ...]:
    """:func:`external_data_names` of the model at ``path``, whose sha256 is ``digest``: read from
    its graph once per content, then kept in the digest cache under that sha256 (the names are a
    function of those bytes), so an unchanged model costs no parse and no protobuf import (``ci``'s
    unchanged check). A cache that cannot be read or written only costs the parse."""
    from trtforge.digests import digest_dir, sha256_file
    from trtforge.fsutil import atomic_write_text
    from trtforge.jsonsafe import cache_json

    entry = digest_dir() / "external-data" / f"{digest}.json"
    with contextlib.suppress(OSError, ValueError):  # damaged (nested past the recursion limit too): a miss
        names = cache_json(entry.read_bytes(), _MAX_NAMES_ENTRY_BYTES)
        if isinstance(names, list) and all(isinstance(name, str) for name in names):
            return tuple(names)
    names = external_data_names(read_onnx(path))
    if sha256_file(path) != digest:  # replaced meanwhile: these names may be another content's
        return names
    with contextlib.suppress(OSError):
        entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_text(entry, json.dumps(names), durable=False)  # torn after a crash: invalid, a miss
    return names


def onnx_proto() -> ModuleType:
    """onnx's generated protobuf module alone (``onnx.onnx_ml_pb2``, which needs only protobuf):
    ``import onnx`` also imports numpy, ml_dtypes and every helper (~120 ms), too much for reading
    a graph's inputs and outputs. Registered under its own name, so a later ``import onnx`` reuses
    it and its messages are ``onnx.ModelProto``."""
    name = "onnx.onnx_ml_pb2"
    if name not in sys.modules:
        package = importlib.util.find_spec("onnx")
        if package is None or not package.submodule_search_locations:
            raise InvalidInputError("onnx is not installed; install trtforge with its dependencies")
        location = Path(package.submodule_search_locations[0]) / "onnx_ml_pb2.py"
        found = importlib.util.spec_from_file_location(name, location)
        assert found is not None and found.loader is not None
        module = importlib.util.module_from_spec(found)
        sys.modules[name] = module
        found.loader.exec_module(module)
    return sys.modules[name]


def read_onnx(path: Path) -> onnx.ModelProto:
    """The graph as :func:`load_onnx` checks it, without onnx's checker or its import: enough to
    describe inputs and outputs. External data stays on disk (only its files are checked); the
    build's backend parses the model in full, and :func:`load_onnx` names what is wrong with it
    when the backend cannot (see ``trtforge.build``)."""
    from google.protobuf.message import DecodeError

    check_model_file(path)
    model = onnx_proto().ModelProto()
    try:
        model.ParseFromString(_without_weights(path))
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InvalidInputError(
            f"{path}: not an ONNX model ({type(exc).__name__}); export the model to ONNX first"
        ) from exc
    _check_graph(model, path)
    return model


#: ModelProto.graph, GraphProto.initializer: field numbers of onnx.proto
_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5
#: TensorProto's value fields: float_data, int32_data, string_data, int64_data, raw_data,
#: double_data, uint64_data
_TENSOR_VALUES = frozenset({4, 5, 6, 7, 9, 10, 11})
#: an initializer whose values take more bytes than this is read without them (name, type, dims,
#: external data kept): describing a model needs values of one-element constants only
_VALUES_KEPT_BELOW = 1024
_LENGTH_DELIMITED = 2


def _without_weights(path: Path) -> bytes:
    """The ModelProto of ``path`` with large initializers' values left out, read through mmap so that
    the weights are not even read: they are most of a model's bytes, and protobuf parses every one
    (ParseFromString has no partial or lazy mode), 80 ms for ResNet-18's 47 MB. Where the file does
    not walk as protobuf, all of it goes to protobuf's parser, whose error says what is wrong."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return b""
        try:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError:  # a file system that cannot map files (some FUSE mounts): read it all
            return handle.read()
        data = memoryview(mapped)
        try:
            return _skim(data)
        except (IndexError, ValueError):
            return bytes(data)
        finally:
            data.release()
            # an exception (Ctrl-C) in _skim keeps its views of the map alive in its traceback: the
            # map cannot close then (BufferError would replace that exception), and goes with them
            with contextlib.suppress(BufferError):
                mapped.close()


def _skim(data: memoryview) -> bytes:
    """``data`` (a ModelProto) with every large graph initializer reduced to its header fields."""
    kept: list[bytes | memoryview] = []
    for number, wire, start, value, end in _fields(data, 0, len(data)):
        if number != _MODEL_GRAPH or wire != _LENGTH_DELIMITED:
            kept.append(data[start:end])
            continue
        graph: list[bytes | memoryview] = []
        for field, kind, begin, inner, finish in _fields(data, value, end):
            initializer = field == _GRAPH_INITIALIZER and kind == _LENGTH_DELIMITED
            tensor = list(_fields(data, inner, finish)) if initializer else []
            if sum(b - a for f, _, a, _, b in tensor if f in _TENSOR_VALUES) > _VALUES_KEPT_BELOW:
                header = b"".join(data[a:b] for f, _, a, _, b in tensor if f not in _TENSOR_VALUES)
                graph.append(_length_delimited(field, header))
            else:
                graph.append(data[begin:finish])
        kept.append(_length_delimited(number, b"".join(graph)))
    return b"".join(kept)


def _fields(data: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(number, wire type, start, value start, end) of each field of the message in ``data[start:end]``
    (the protobuf wire format: a varint tag, then a varint, 8 or 4 bytes, or a varint length and bytes)."""
    position = start
    while position < end:
        tag, value = _varint(data, position)
        wire = tag & 7
        if wire == 0:
            finish = _varint(data, value)[1]
        elif wire == 1:
            finish = value + 8
        elif wire == _LENGTH_DELIMITED:
            length, value = _varint(data, value)
            finish = value + length
        elif wire == 5:
            finish = value + 4
        else:
            raise ValueError(f"wire type {wire}")  # groups: not in onnx.proto
        if finish > end:
            raise ValueError("truncated field")
        yield tag >> 3, wire, position, value, finish
        position = finish


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    """The varint at ``position`` and the position after it."""
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _length_delimited(number: int, payload: bytes) -> bytes:
    """Field ``number`` holding ``payload``, encoded."""
    encoded = bytearray()
    for value in (number << 3 | _LENGTH_DELIMITED, len(payload)):
        while value >= 0x80:
            encoded.append(value & 0x7F | 0x80)
            value >>= 7
        encoded.append(value)
    return bytes(encoded) + payload


def _check_graph(model: onnx.ModelProto, path: Path) -> None:
    """External data files present, a non-empty graph: the checks before anything reads the weights."""
    missing = _external_data_problem(model, path.parent)
    if missing:
        raise InvalidInputError(f"{path}: {missing}; keep the model's external data beside it, as it was saved")
    if not model.graph.node and not model.graph.input:
        raise InvalidInputError(f"{path}: not an ONNX model (empty graph); export the model to ONNX first")
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        seen: set[str] = set()
        for value in values:
            if value.name in seen:
                raise InvalidInputError(
                    f"{path}: invalid ONNX model: graph {kind} '{value.name}' is declared twice; export it "
                    f"again with one {kind} per name"
                )
            seen.add(value.name)


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file, turning every failure into a one-line, fixable error.

    The graph is read first and its external-data files checked before any is opened, so a
    missing weights file is named and a named pipe in its place cannot block the load.
    """
    return _load_checked(path)[0]


def _load_checked(path: Path) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """:func:`load_onnx`, and the external data files the model named before its data was read
    into it (the loaded proto no longer says)."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    check_model_file(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for non-ONNX bytes
        raise InvalidInputError(
            f"{path}: not an ONNX model ({type(exc).__name__}); export the model to ONNX first"
        ) from exc
    _check_graph(model, path)
    external = external_data_names(model)
    try:
        load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # a short or unreadable data file, a location outside the model's folder
        raise InvalidInputError(f"{path}: cannot read its external data ({first_line(exc)})") from exc
    try:
        # By path: checking the in-memory proto serializes it again, 3-4x slower on large models.
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise InvalidInputError(f"{path}: invalid ONNX model: {first_line(exc)}") from exc
    return model, external


#: value-preserving ops an index may pass through before it indexes: op -> operand positions
_PASS_THROUGH: Mapping[str, tuple[int, ...]] = {
    "Identity": (0,),
    "Cast": (0,),
    "Unsqueeze": (0,),
    "Squeeze": (0,),
    "Reshape": (0,),
    "Flatten": (0,),
    "Expand": (0,),
    "Transpose": (0,),
    "Where": (1, 2),
}

#: op -> (index operand, data operand, axis attribute, its default, lowest valid value): the index
#: takes values in ``[low, low + data.shape[axis])``; sequence lengths count from 1.
_INDEXING: Mapping[str, tuple[int, int, str, int, int]] = {
    "Gather": (1, 0, "axis", 0, 0),
    "GatherElements": (1, 0, "axis", 0, 0),
    "Scatter": (1, 0, "axis", 0, 0),
    "ScatterElements": (1, 0, "axis", 0, 0),
    "NegativeLogLikelihoodLoss": (1, 0, "", 1, 0),  # the target indexes the class axis
    "SoftmaxCrossEntropyLoss": (1, 0, "", 1, 0),
    "ReverseSequence": (1, 0, "time_axis", 0, 1),
}

Shapes = Mapping[str, tuple[int | None, ...]]

#: The integer types numpy calls integers (``kind`` i or u): the ones an input's valid range applies to.
_WHOLE_INTS = frozenset(f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64))


def _constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Initializers and Constant nodes' tensors, by name."""
    found = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = node.attribute[0].t
    return found


def _static_shapes(graph: onnx.GraphProto, constants: Mapping[str, onnx.TensorProto]) -> Shapes:
    """Known dims of the graph's tensors (inputs, outputs, value_info, constants)."""
    shapes: dict[str, tuple[int | None, ...]] = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim
            shapes[value.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in dims)
    for name, tensor in constants.items():
        shapes[name] = tuple(int(d) for d in tensor.dims)
    return shapes


def _scalar_constant(constants: Mapping[str, onnx.TensorProto], name: str) -> int | None:
    """The value of a one-element numeric constant (OneHot's depth)."""
    from onnx import numpy_helper

    if name not in constants:
        return None
    array = numpy_helper.to_array(constants[name])
    return int(array.reshape(-1)[0]) if array.size == 1 and array.dtype.kind in "iuf" else None


def _span(dims: tuple[int | None, ...] | None, axes: Sequence[int], low: int) -> tuple[int, int] | None:
    """``[low, low + smallest dim on axes)``, when those dims are static and positive."""
    if dims is None or not axes:
        return None
    sizes = [dims[axis] for axis in axes if -len(dims) <= axis < len(dims)]
    if len(sizes) != len(axes) or any(size is None or size < 1 for size in sizes):
        return None
    return low, low + min(size for size in sizes if size is not None)


def _index_bound(
    node: onnx.NodeProto, position: int, shapes: Shapes, constants: Mapping[str, onnx.TensorProto]
) -> tuple[int, int] | None:
    """The values operand ``position`` of ``node`` may take, when it is an index into a known axis
    or an integer divisor."""
    attrs = {attr.name: attr.i for attr in node.attribute if attr.type == attr.INT}  # axes: all ints
    op = node.op_type
    if op in _INDEXING:
        operand, data, attr, default, low = _INDEXING[op]
        axis = int(attrs.get(attr, default)) if attr else default
        return _span(shapes.get(node.input[data]), [axis], low) if position == operand else None
    if op in ("GatherND", "ScatterND") and position == 1:
        indices = shapes.get(node.input[1])
        depth = indices[-1] if indices else None
        batch = int(attrs.get("batch_dims", 0))
        return _span(shapes.get(node.input[0]), range(batch, batch + depth), 0) if depth else None
    if op in ("RNN", "GRU", "LSTM") and position == 4:  # sequence_lens count steps of X's time axis
        return _span(shapes.get(node.input[0]), [1 if attrs.get("layout", 0) else 0], 1)
    if op in ("Div", "Mod") and position == 1:  # an integer divisor must not be 0
        return 1, INT_HIGH
    if op == "OneHot" and position == 0:
        depth = _scalar_constant(constants, node.input[1])
        return (0, depth) if depth and depth > 0 else None
    if op == "TensorScatter" and position == 2:  # write positions leave room for the update
        axis = int(attrs.get("axis", -2))
        cache, update = shapes.get(node.input[0]), shapes.get(node.input[1])
        free = _span(cache, [axis], 0)
        step = _span(update, [axis], 0)
        return (0, free[1] - step[1] + 1) if free and step and free[1] >= step[1] else None
    return None


def valid_ranges(graph: onnx.GraphProto, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Input name -> the values ``[low, high)`` it may take because it indexes an axis of known size
    or divides, followed through value-preserving ops; every such use must agree (the ranges intersect)."""
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for node in graph.node:
        for position, operand in enumerate(node.input):
            consumers[operand].append((node, position))
    constants = _constants(graph)
    shapes = _static_shapes(graph, constants)
    ranges: dict[str, tuple[int, int]] = {}
    for name in names:
        bounds = []
        seen, pending = {name}, [name]
        while pending:
            for node, position in consumers[pending.pop()]:
                if position in _PASS_THROUGH.get(node.op_type, ()):
                    fresh = [out for out in node.output[:1] if out not in seen]
                    seen.update(fresh)
                    pending.extend(fresh)
                elif (bound := _index_bound(node, position, shapes, constants)) is not None:
                    bounds.append(bound)
        low, high = max((b[0] for b in bounds), default=0), min((b[1] for b in bounds), default=0)
        if low < high:
            ranges[name] = (low, high)
    return ranges


def _not_a_tensor(value: onnx.ValueInfoProto) -> str | None:
    """What a graph input or output is when it is not a tensor (sequence, optional, map, ...)."""
    kind = value.type.WhichOneof("value")
    if kind == "tensor_type":
        return None
    names = {"sequence_type": "a sequence", "optional_type": "an optional", "map_type": "a map"}
    return names.get(kind or "", "a sparse tensor" if kind == "sparse_tensor_type" else "a value of no type")


def describe(model: onnx.ModelProto, path: Path, external_data: tuple[str, ...] | None = None) -> ModelInfo:
    """Inputs (initializers excluded) and outputs with element types and dims; integer inputs
    that index an axis (or divide) carry their valid range. Only tensors: TensorRT takes nothing else.
    ``external_data``: the data files the model names, where its proto no longer says (loaded)."""
    from trtforge.dtypes import ONNX_DTYPES

    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [v for v in model.graph.input if v.name not in initializers]
    for role, values in (("input", graph_inputs), ("output", model.graph.output)):
        for value in values:
            kind = _not_a_tensor(value)
            if kind:
                raise InvalidInputError(
                    f"{path}: {role} '{value.name}' is {kind}; TensorRT takes tensors only: export the model "
                    "with tensor inputs and outputs"
                )
            if role == "input" and not value.type.tensor_type.HasField("shape"):
                raise InvalidInputError(  # an output's shape TensorRT infers; an input's is taken as a scalar
                    f"{path}: input '{value.name}' declares no shape, not even its rank, and TensorRT would take "
                    "it as a scalar; export the model with its input shapes (a dynamic dim may be a name)"
                )
    ranges = valid_ranges(model.graph, [v.name for v in graph_inputs])

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
        dtype = ONNX_DTYPES.get(tensor_type.elem_type)
        if dtype is None:
            raise InvalidInputError(
                f"{path}: '{value.name}' has ONNX element type {tensor_type.elem_type}, which has no array type; "
                "export the model with typed inputs and outputs"
            )
        return TensorDesc(value.name, dtype, tuple(dims), ranges.get(value.name) if dtype in _WHOLE_INTS else None)

    inputs = tuple(tensor(v) for v in graph_inputs)
    outputs = tuple(tensor(v) for v in model.graph.output)
    metadata = tuple((prop.key, prop.value) for prop in model.metadata_props)
    external = external_data_names(model) if external_data is None else external_data
    return ModelInfo(path=path, inputs=inputs, outputs=outputs, metadata=metadata, external_data=external)


def inspect_model(path: Path) -> ModelInfo:
    model, external = _load_checked(path)
    return describe(model, path, external)


def read_model_info(path: Path) -> ModelInfo:
    """:func:`inspect_model` without onnx's import and checker (:func:`read_onnx`)."""
    return describe(read_onnx(path), path)


def node_names(graph: onnx.GraphProto) -> list[str]:
    """Each node's name as ``fp16.keep_fp32``, ``calibration.exclude`` and ``trtforge diagnose``
    name it, in graph order: its own, or for a node without one (``NodeProto.name`` is optional)
    ``{op_type}_{index}``, its position in the graph counted from 0 (``Mul_1``), with ``_2``, ``_3``...
    appended while another node has that name. The graph alone decides, so the overflow guard, the
    FP16 conversion, calibration and the diagnosis give a node one name in every run; a node's own
    name is never changed (pure)."""
    taken = {node.name for node in graph.node if node.name}
    names: list[str] = []
    for index, node in enumerate(graph.node):
        name = node.name
        if not name:
            stem = name = f"{node.op_type}_{index}"
            suffix = 1
            while name in taken:
                suffix += 1
                name = f"{stem}_{suffix}"
            taken.add(name)
        names.append(name)
    return names


def name_nodes(graph: onnx.GraphProto, among: Collection[str] | None = None) -> None:
    """Give each node without a name its :func:`node_names` name, in place: onnxruntime's FP16
    converter and quantizer find nodes by name only. ``among``: only the nodes whose name it holds."""
    for node, name in zip(graph.node, node_names(graph), strict=True):
        if not node.name and (among is None or name in among):
            node.name = name


@overload
def with_outputs(model: onnx.ModelProto, names: Iterable[str], saved: None = None) -> bytes: ...
@overload
def with_outputs(model: onnx.ModelProto, names: Iterable[str], saved: Path) -> str: ...
@overload
def with_outputs(model: onnx.ModelProto, names: Iterable[str], saved: Path | None) -> bytes | str: ...
def with_outputs(model: onnx.ModelProto, names: Iterable[str], saved: Path | None = None) -> bytes | str:
    """``model`` with ``names`` added to its graph outputs, for onnxruntime to return every tensor
    a pass reads (calibration's statistics, the diagnosis's layer-wise metrics) from one run: as
    bytes, or as the path of ``saved``, the model's own file, extended in place. ``model`` itself
    is left as it was.

    The outputs carry no type: onnxruntime infers it, which spares a shape-inference pass over the
    whole model. Protobuf parses concatenated messages as their merge (repeated fields appended),
    so with a file the outputs are appended to it as a message of their own and the model is not
    serialized again (a tenth of a second for ResNet-18). Without one they are appended to the
    model, serialized and removed again: a copy of a large model would cost more than that.
    """
    import onnx

    graph_outputs = model.graph.output
    present = {output.name for output in graph_outputs}
    outputs = [onnx.ValueInfoProto(name=name) for name in dict.fromkeys(names) if name not in present]
    if saved is not None:
        with saved.open("ab") as file:
            file.write(onnx.ModelProto(graph=onnx.GraphProto(output=outputs)).SerializeToString())
        return str(saved)
    count = len(graph_outputs)
    graph_outputs.extend(outputs)
    try:
        return model.SerializeToString()
    finally:
        del graph_outputs[count:]


#: where a weight held back from onnx's C++ passes points meanwhile (never a file)
_HELD_BACK = "trtforge: weight held back from onnx's C++ passes"
#: the fields of a TensorProto that hold (or point to) its values
_TENSOR_DATA = (
    "raw_data",
    "float_data",
    "int32_data",
    "int64_data",
    "double_data",
    "uint64_data",
    "string_data",
    "external_data",
)


def weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` for onnx's C++ passes (version conversion, shape inference), which
    serialize the model into C++ and back: four copies of every weight, 0.25 s of ResNet-18's
    47 MB against 8 ms for the graph alone. Each top-level initializer of 1 KiB or more becomes a
    reference to external data that does not exist, so a pass that read its values would fail,
    not read an empty tensor; the smaller ones (the shapes and axes that passes do read) keep theirs.
    """
    import onnx

    light = onnx.ModelProto()
    light.CopyFrom(model)  # a copy in memory is ~30x cheaper than the passes' round trips
    for tensor in light.graph.initializer:
        if tensor.ByteSize() < _VALUES_KEPT_BELOW:
            continue
        for field in _TENSOR_DATA:
            tensor.ClearField(field)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value=_HELD_BACK)
    return light


def without_weights(
    model: onnx.ModelProto, run: Callable[[onnx.ModelProto], onnx.ModelProto]
) -> onnx.ModelProto | None:
    """``run`` (one of onnx's C++ passes) on :func:`weightless` ``model``, the weights put back by
    name into what it returns; ``model`` itself is left as it was. None where the pass failed on
    the references, or one came back anywhere else (renamed, moved into a node): the caller runs
    it on the whole model then, whose error (if any) is the real one. The references are counted
    in the result to catch that."""
    try:
        result = run(weightless(model))
    except Exception:
        return None
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    returned = [tensor for tensor in result.graph.initializer if tensor.name in weights and tensor.external_data]
    if result.SerializeToString().count(_HELD_BACK.encode()) != len(returned):
        return None
    for tensor in returned:
        tensor.CopyFrom(weights[tensor.name])
    return result


def upgraded(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``model`` converted to ``opset`` by onnx's version converter, without passing its weights
    through it (:func:`without_weights`: upgrades rewrite nodes, not weights); ``model`` itself is
    left as it was. Shapes that only a weight's values tell are left to the next shape inference
    (onnxruntime's quantizer runs one)."""
    from onnx import version_converter

    converted = without_weights(model, lambda light: version_converter.convert_version(light, opset))
    return converted if converted is not None else version_converter.convert_version(model, opset)


def input_bytes(inputs: Sequence[TensorDesc], shapes: Mapping[str, Sequence[int]]) -> int:
    """Bytes of one feed of ``shapes`` for these inputs (exact Python ints: no overflow)."""
    from trtforge.dtypes import itemsize

    return sum(math.prod(shapes[tensor.name]) * itemsize(tensor.dtype) for tensor in inputs)


def mib(size: int) -> str:
    """Bytes as MiB for messages about the input budget."""
    return f"{size / 2**20:,.0f} MiB"
