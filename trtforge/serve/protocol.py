"""The KServe v2 (Open Inference Protocol) inference messages, JSON and binary tensor extension.

A request body is JSON, or JSON followed by raw tensor bytes when the
``Inference-Header-Content-Length`` header says where the JSON ends (Triton's binary tensor data
extension, what ``tritonclient.http`` sends). Splitting the body at that length is the protocol,
not HTTP parsing; Starlette and uvicorn do the HTTP. No library implements these messages apart
from a whole inference server (Triton, KServe's Python server with its own FastAPI app), so they
are written here: pure functions from bytes to arrays and back, checked against the model.

``check_request`` is the rule a request must pass before a context is lent: every input known and
given once, of the model's datatype, of a shape inside one of the engine's profiles (or the
ONNX model's shape, ``-1`` dims free); a refusal names the input and the allowed range.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from trtforge.errors import InvalidInputError, did_you_mean, one_line
from trtforge.jsonsafe import not_json_constant
from trtforge.model import TensorDesc

if TYPE_CHECKING:
    import numpy as np

    from trtforge.shapes import Profile

HEADER_LENGTH = "Inference-Header-Content-Length"

#: KServe v2 datatype -> numpy dtype name (BYTES, variable-length strings, feeds no engine input).
DATATYPES: Mapping[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BF16": "bfloat16",
}
_NUMPY_TO_DATATYPE = {numpy: kserve for kserve, numpy in DATATYPES.items()}
#: the datatypes whose values may be NaN or infinity (bfloat16 is no numpy float kind: ml_dtypes's "V")
FLOAT_DATATYPES = frozenset({"FP16", "FP32", "FP64", "BF16"})


class ProtocolError(InvalidInputError):
    """A request the protocol or the model refuses: HTTP 400 with the message as ``error``, one line
    whatever it echoes (a tensor name or header value of the client's may hold a line break)."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


def datatype_of(numpy_name: str) -> str:
    """The KServe datatype of a numpy dtype name (the manifest's and the ONNX description's); an
    ONNX string tensor (numpy's ``object``) is KServe's BYTES."""
    return "BYTES" if numpy_name == "object" else _NUMPY_TO_DATATYPE.get(numpy_name, numpy_name.upper())


@dataclass(frozen=True)
class TensorMeta:
    """One input or output as ``GET /v2/models/{name}`` shows it: ``-1`` for a dynamic dim."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, tensor: TensorDesc) -> TensorMeta:
        dims = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in tensor.shape)
        return cls(tensor.name, datatype_of(tensor.dtype), dims)

    @property
    def default_shape(self) -> tuple[int, ...]:
        """The shape with every dynamic dim 1: what warm-up and the server's own probe send."""
        return tuple(max(dim, 1) for dim in self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelSignature:
    """What a request is checked against: the inputs, the outputs, the engine's profiles (none for ONNX)."""

    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    profiles: tuple[Profile, ...] = ()


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A decoded request: its id, one array per input, and which outputs to return how
    (``outputs`` empty: all of them, binary when ``binary_default``)."""

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: tuple[RequestedOutput, ...]
    binary_default: bool


def _not_json(constant: str) -> NoReturn:
    """``NaN`` or ``Infinity`` in a request's JSON: refused as trtforge refuses it anywhere, with how to send it."""
    not_json_constant(constant, advice="send such values in binary")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data, parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ProtocolError(f"{what} is nested too deeply to be a KServe request") from exc
    if not isinstance(document, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    return document


#: parameters of Triton extensions this server does not implement -> the extension, and what to do
#: instead; honoured by Triton, so a request carrying one is refused rather than answered otherwise
_UNSUPPORTED_PARAMETERS: Mapping[str, tuple[str, str]] = {
    "classification": ("classification", "ask for the output itself and take its top k on the client"),
    "sequence_id": ("sequence batching", "send each request on its own"),
    "sequence_start": ("sequence batching", "send each request on its own"),
    "sequence_end": ("sequence batching", "send each request on its own"),
    "shared_memory_region": ("shared memory", "send the tensor in the request body"),
}


def _parameters(owner: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """The ``parameters`` object of the request, an input or an output (absent: empty); one that is
    no object, or that asks for an extension this server lacks, is refused naming ``where``."""
    parameters = owner.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ProtocolError(f"{where}: 'parameters' must be an object")
    for key, (extension, instead) in _UNSUPPORTED_PARAMETERS.items():
        if key in parameters:
            raise ProtocolError(
                f"{where}: parameters.{key} asks for Triton's {extension} extension, which this server does not "
                f"implement; {instead}"
            )
    return parameters


def _binary_flag(parameters: Mapping[str, Any], key: str, default: bool = False) -> bool:
    """``parameters[key]`` where it is given (an output's own flag wins over the request's), else
    ``default``; a JSON boolean only (``"false"``, a string, would read as true)."""
    if key not in parameters:
        return default
    flag = parameters[key]
    if not isinstance(flag, bool):
        raise ProtocolError(f"parameters.{key} must be true or false, got {json.dumps(flag)}")
    return flag


def header_length(text: str | None, body_size: int) -> int | None:
    """``Inference-Header-Content-Length`` as a byte count (absent: None); refused when it is none, or
    when it has more digits than the body's size (it cannot fit, and int() converts no more than 4300)."""
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()):  # "²".isdigit() too
        raise ProtocolError(f"{HEADER_LENGTH} '{text[:64]}' is not a byte count")
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(body_size)):
        raise ProtocolError(
            f"{HEADER_LENGTH}: a number of {len(digits)} digits does not fit a body of {body_size} bytes"
        )
    return int(digits)


def parse_infer_request(
    body: bytes, header_length: int | None, signature: ModelSignature | None = None
) -> InferRequest:
    """Decode a KServe v2 request: the JSON header, then each binary input's bytes in input order.

    ``signature``: the model's, so that a shape no array can have is refused with the shapes it takes."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise ProtocolError(f"{HEADER_LENGTH} {header_length} does not fit a body of {len(body)} bytes")
    split = len(body) if header_length is None else header_length
    document = _json_object(body[:split], "the request")
    tensors = document.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise ProtocolError("the request has no 'inputs' list: send at least one input tensor")
    inputs: dict[str, np.ndarray] = {}
    offset = split
    for tensor in tensors:
        array, used = _decode_input(tensor, body, offset, signature)
        offset += used
        if array is None:
            continue
        name = tensor["name"]
        if name in inputs:
            raise ProtocolError(f"input '{name}' is given twice")
        inputs[name] = array
    if offset != len(body):
        raise ProtocolError(f"the body has {len(body) - offset} bytes after the last binary input")
    requested = document.get("outputs") or []
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise ProtocolError("'outputs' must be a list of objects with a 'name'")
    binary_default = _binary_flag(_parameters(document, "the request"), "binary_data_output")
    outputs: dict[str, RequestedOutput] = {}
    for output in requested:
        name = output["name"]
        if name in outputs:
            raise ProtocolError(f"output '{name}' is asked for twice")
        flag = _binary_flag(_parameters(output, f"output '{name}'"), "binary_data", binary_default)
        outputs[name] = RequestedOutput(name, flag)
    request_id = document.get("id")
    if request_id is not None and (not isinstance(request_id, str | int) or isinstance(request_id, bool)):
        raise ProtocolError(f"'id' must be a string, got {json.dumps(request_id)[:64]}")  # it is echoed back
    request_id = None if request_id is None else str(request_id)
    return InferRequest(request_id, inputs, tuple(outputs.values()), binary_default)


def _decode_input(
    tensor: Any, body: bytes, offset: int, signature: ModelSignature | None
) -> tuple[np.ndarray | None, int]:
    """One input as an array of its declared shape and datatype, and the binary bytes it used."""
    import numpy as np

    from trtforge.dtypes import numpy_dtype

    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise ProtocolError("each input must be an object with a 'name'")
    name, datatype, shape = tensor["name"], tensor.get("datatype"), tensor.get("shape")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        known = ", ".join(DATATYPES)
        raise ProtocolError(f"input '{name}': datatype {datatype!r} is not supported (use one of {known})")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_RANK
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ProtocolError(f"input '{name}': 'shape' must be a list of at most {MAX_RANK} non-negative integers")
    dtype = numpy_dtype(DATATYPES[datatype])
    count = math.prod(shape)
    size = _parameters(tensor, f"input '{name}'").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool):
            raise ProtocolError(f"input '{name}': binary_data_size must be a number of bytes, got {json.dumps(size)}")
        if size != count * dtype.itemsize:
            raise ProtocolError(
                f"input '{name}': binary_data_size {size} is not {count} x {dtype.itemsize} bytes of {datatype} {shape}"
            )
        if offset + size > len(body):
            raise ProtocolError(f"input '{name}': the body ends before its {size} binary bytes")
        array = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
        return _reshaped(array, name, shape, signature), size
    if "data" not in tensor:
        raise ProtocolError(f"input '{name}': give 'data' or parameters.binary_data_size")
    try:
        array = _typed(tensor["data"], dtype)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise ProtocolError(f"input '{name}': 'data' is not {datatype}: {exc}") from exc
    if array.size != count:
        raise ProtocolError(f"input '{name}': 'data' holds {array.size} values, shape {shape} needs {count}")
    return _reshaped(array, name, shape, signature), 0


def _reshaped(array: np.ndarray, name: str, shape: list[int], signature: ModelSignature | None) -> np.ndarray:
    """``array`` in its declared shape. A 0 dim lets the other dims declare no data, and numpy holds
    no shape whose other dims multiply past 2**63 bytes: the client's shape, refused as
    ``check_request`` refuses one (not a ValueError from inside the server, a 500)."""
    try:
        return array.reshape(shape)
    except ValueError as exc:
        if signature is None:
            raise ProtocolError(_shape_refused(name, shape, "dims numpy can hold")) from exc
        metas = {meta.name: meta for meta in signature.inputs}
        if name not in metas:
            raise ProtocolError(_unknown_input(name, metas)) from exc
        raise ProtocolError(_shape_refused(name, shape, shape_range(metas[name], signature.profiles))) from exc


#: numpy's limit on an array's dims (and far above any model's)
MAX_RANK = 32
#: the JSON values each kind of tensor takes, as Triton reads them (rapidjson's IsBool, IsInt64/IsUint64,
#: IsNumber): true/false for BOOL only, integers (no 1.0) for integers, numbers for floats. Python's
#: bool is an int and numpy reads ``[1, true]`` as ``[1, 1]``: the leaves' own types decide.
_JSON_VALUES: Mapping[str, tuple[frozenset[type], str]] = {
    "b": (frozenset({bool}), "true or false"),
    "i": (frozenset({int}), "an integer"),
    "u": (frozenset({int}), "an integer"),
    "f": (frozenset({int, float}), "a number"),
}


def _leaves(data: Any, depth: int) -> Iterable[Any]:
    """The values of JSON ``data`` nested ``depth`` lists deep (numpy's ndim for it, so its lists are
    even), as JSON gave them: iterated in C, twice as fast as numpy's array of objects."""
    leaves = data if depth else (data,)
    for _ in range(depth - 1):
        leaves = itertools.chain.from_iterable(leaves)
    return leaves


def _typed(data: Any, dtype: np.dtype) -> np.ndarray:
    """JSON ``data`` as ``dtype``, refusing what numpy would convert silently: strings ("1.5"), true or
    false in a number tensor, integers out of the type's range (300 as INT8 would wrap to 44), floats
    as integers, numbers past a float type's range (70000 as FP16 would be infinity). Empty ``data``
    is numpy's float64, whatever the type: no value to check."""
    import numpy as np

    values = np.asarray(data)
    if not values.size:
        return values.astype(dtype)
    if dtype.kind not in _JSON_VALUES:  # BF16 (ml_dtypes's "V"): JSON has no bfloat16, Triton refuses it too
        raise TypeError("a bfloat16 tensor travels only in binary (parameters.binary_data_size)")
    allowed, takes = _JSON_VALUES[dtype.kind]
    if dtype.kind == "b":  # numpy's bool only when every value is true or false
        refused = values.dtype.kind != "b"
    else:  # numpy's numbers may hide true or false (Python's bool is an int)
        refused = not allowed.issuperset(map(type, _leaves(data, values.ndim)))
    if refused:
        stray = next(leaf for leaf in _leaves(data, values.ndim) if type(leaf) not in allowed)
        raise TypeError(f"{json.dumps(stray)[:64]} is not {takes}")
    if dtype.kind in "iu":
        if values.dtype.kind in "fO":  # integers past int64: numpy's float64 (beside others) or objects
            values = np.asarray(data, dtype=object)
        limits = np.iinfo(dtype)
        if values.min() < limits.min or values.max() > limits.max:
            raise OverflowError(f"values outside {limits.min}..{limits.max}")
    if dtype.kind != "f":
        return values.astype(dtype)
    with np.errstate(over="ignore"):
        typed = values.astype(dtype)
    infinite = ~np.isfinite(typed)
    if infinite.any():
        raise OverflowError(
            f"{values[infinite].flat[0]:g} is past its range ±{np.finfo(dtype).max:g} (it would be infinity); "
            "NaN or infinity travel only as binary tensors"
        )
    return typed


def shape_range(meta: TensorMeta, profiles: Sequence[Profile]) -> str:
    """The shapes an input may take, for a refusal: each profile's min..max, else the model's dims."""
    ranges = [
        f"[{', '.join(map(str, profile[meta.name]['min']))}]..[{', '.join(map(str, profile[meta.name]['max']))}]"
        for profile in profiles
        if meta.name in profile
    ]
    if ranges:
        return "shape within " + " or ".join(ranges)
    return f"shape [{', '.join(map(str, meta.shape))}]" + (" (-1: any size)" if -1 in meta.shape else "")


def _fits(meta: TensorMeta, shape: tuple[int, ...], profiles: Sequence[Profile]) -> bool:
    from trtforge.shapes import accepts

    if len(shape) != len(meta.shape) or any(
        want >= 0 and got != want for got, want in zip(shape, meta.shape, strict=True)
    ):
        return False
    listing = [p for p in profiles if meta.name in p]
    return not listing or any(
        accepts({meta.name: p[meta.name]["min"]}, {meta.name: p[meta.name]["max"]}, {meta.name: shape}) for p in listing
    )


def _unknown_input(name: str, metas: Mapping[str, TensorMeta]) -> str:
    return f"unknown input '{name}'{did_you_mean(name, metas)} (inputs: {', '.join(metas)})"


def _shape_refused(name: str, shape: Sequence[int], allowed: str) -> str:
    return f"input '{name}': shape [{', '.join(map(str, shape))}] is not accepted; allowed: {allowed}"


def warmup_problem(shapes: Mapping[str, Sequence[int]], signature: ModelSignature) -> str | None:
    """Why the model would refuse a warm-up request of these input shapes (one line), as
    :func:`check_request` refuses a request, and past the input budget a request may have
    (``model.INPUT_BUDGET_BYTES``); None when it would take it."""
    from trtforge.dtypes import numpy_dtype
    from trtforge.model import INPUT_BUDGET_BYTES, mib
    from trtforge.shapes import no_one_profile

    metas = {meta.name: meta for meta in signature.inputs}
    for name, dims in shapes.items():
        shape = tuple(dims)
        if not _fits(metas[name], shape, signature.profiles):
            return _shape_refused(name, shape, shape_range(metas[name], signature.profiles))
    apart = no_one_profile(shapes, signature.profiles)
    if apart is not None:
        return apart
    size = sum(math.prod(dims) * numpy_dtype(DATATYPES[metas[name].datatype]).itemsize for name, dims in shapes.items())
    if size > INPUT_BUDGET_BYTES:
        return f"{mib(size)} of input, over the {mib(INPUT_BUDGET_BYTES)} a request may take"
    return None


def check_request(request: InferRequest, signature: ModelSignature) -> None:
    """Refuse, naming the input, what the model would not take: unknown or missing inputs, another
    datatype, a shape outside the profiles (or the model's fixed dims), inputs no one profile takes
    together; unknown requested outputs."""
    from trtforge.shapes import no_one_profile

    metas = {meta.name: meta for meta in signature.inputs}
    for name, array in request.inputs.items():
        meta = metas.get(name)
        if meta is None:
            raise ProtocolError(_unknown_input(name, metas))
        datatype = datatype_of(array.dtype.name)
        if datatype != meta.datatype:
            raise ProtocolError(f"input '{name}': datatype {datatype}, the model takes {meta.datatype}")
        shape = tuple(int(d) for d in array.shape)
        if not _fits(meta, shape, signature.profiles):
            raise ProtocolError(_shape_refused(name, shape, shape_range(meta, signature.profiles)))
    missing = [name for name in metas if name not in request.inputs]
    if missing:
        raise ProtocolError(f"input '{missing[0]}' is missing (inputs: {', '.join(metas)})")
    # each input fits a profile on its own (above): with one profile or one input, that one takes them all
    if len(signature.profiles) > 1 and len(request.inputs) > 1:
        apart = no_one_profile({name: array.shape for name, array in request.inputs.items()}, signature.profiles)
        if apart is not None:
            raise ProtocolError(apart)
    outputs = [meta.name for meta in signature.outputs]
    for wanted in request.outputs:
        if wanted.name not in outputs:
            raise ProtocolError(
                f"unknown output '{wanted.name}'{did_you_mean(wanted.name, outputs)} (outputs: {', '.join(outputs)})"
            )


def encode_infer_response(
    model: str, version: str, request: InferRequest, outputs: Mapping[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it (else None)."""
    import numpy as np

    wanted = request.outputs or tuple(RequestedOutput(name, request.binary_default) for name in outputs)
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output in wanted:
        array = np.asarray(outputs[output.name])
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": datatype_of(array.dtype.name),
            "shape": list(array.shape),
        }
        if array.dtype.kind in "OSU":  # an ONNX model's strings: KServe's BYTES, never numpy's pointers
            items = [v if isinstance(v, bytes) else str(v).encode() for v in array.ravel().tolist()]
            entry["datatype"] = "BYTES"
            if output.binary:  # each element: its length (uint32, little-endian), then its bytes
                raw = b"".join(len(item).to_bytes(4, "little") + item for item in items)
                entry["parameters"] = {"binary_data_size": len(raw)}
                blobs.append(raw)
            else:
                entry["data"] = [item.decode("utf-8", "replace") for item in items]
        elif output.binary:
            raw = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        elif entry["datatype"] in FLOAT_DATATYPES and not np.isfinite(array).all():
            raise ProtocolError(
                f"output '{output.name}' holds NaN or infinity, which JSON cannot carry: ask for it in binary "
                '("parameters": {"binary_data": true} on the output)'
            )
        else:
            entry["data"] = array.ravel().tolist()
        tensors.append(entry)
    document: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": tensors}
    if request.id is not None:
        document["id"] = request.id
    header = json.dumps(document, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def error_body(message: str) -> bytes:
    """A KServe v2 error: ``{"error": "..."}``."""
    return json.dumps({"error": message}).encode()


def probe_request(signature: ModelSignature, feed: Mapping[str, np.ndarray] | None = None) -> tuple[bytes, int]:
    """A binary request the model accepts, and its JSON header's length: ``feed`` (the pool's
    health probe, what the server sends itself to warm its own request path before it reports
    ready), else zeros with each input at its first profile's min (a shape tensor at that profile's
    min values: zeros would be no shape it takes), or its shape with dynamic dims 1."""
    import numpy as np

    from trtforge.dtypes import numpy_dtype

    arrays = {}
    for meta in signature.inputs:
        dtype = numpy_dtype(DATATYPES[meta.datatype])
        if feed is not None:
            arrays[meta.name] = np.ascontiguousarray(feed[meta.name], dtype)
            continue
        entry = next((p[meta.name] for p in signature.profiles if meta.name in p), None)
        shape = tuple(entry["min"]) if entry else meta.default_shape
        if entry and "min_values" in entry:
            arrays[meta.name] = np.asarray(entry["min_values"], dtype).reshape(shape)
        else:
            arrays[meta.name] = np.zeros(shape, dtype)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": datatype_of(array.dtype.name),
                    "parameters": {"binary_data_size": array.nbytes},
                }
                for name, array in arrays.items()
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + b"".join(array.tobytes() for array in arrays.values()), len(header)
