"""Property-based tests (Hypothesis) of serve's request decoding against the official Triton client
(``tritonclient.http``, which nobody on this project wrote): what it encodes, trtforge decodes bit
for bit, and what trtforge encodes, it decodes; any other body is a ``ProtocolError`` (a 400 with a
one-line message), never another exception (a 500 and a traceback). The ``--shape`` parsers
(``NAME=DIMS``, ``NAME=[V,...]``) either parse or raise ``InvalidInputError``, and what they parse
formats back to text that parses to the same value."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from trtforge.dtypes import numpy_dtype
from trtforge.errors import InvalidInputError
from trtforge.serve.protocol import (
    DATATYPES,
    FLOAT_DATATYPES,
    InferRequest,
    ModelSignature,
    ProtocolError,
    RequestedOutput,
    TensorMeta,
    check_request,
    datatype_of,
    encode_infer_response,
    header_length,
    parse_infer_request,
)
from trtforge.shapes import parse_inputs, parse_shape, parse_values

tritonclient_http = pytest.importorskip("tritonclient.http", reason="pip install 'tritonclient[http]'")

PROPS = settings(max_examples=150)

#: tensor names as a client may spell them: any text JSON carries, line breaks and control characters too
#: (what breaks a line drawn as often as the rest: a message echoing a name must stay one line)
NAMES = st.text(st.characters(codec="utf-8") | st.sampled_from("\n\r\x0b\x0c\x1c\x85\u2028"), min_size=1, max_size=12)
SHAPES = array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)


def _bits(array: np.ndarray) -> bytes:
    """An array's bytes: equal bits, NaN payloads and -0.0 included (``==`` says NaN != NaN, 0.0 == -0.0)."""
    return np.ascontiguousarray(array).tobytes()


@st.composite
def tensors(draw: st.DrawFn, datatypes: tuple[str, ...] = tuple(DATATYPES)) -> tuple[str, np.ndarray]:
    """A datatype and an array of it, of any bit pattern: every NaN, infinity, -0.0, subnormal, extreme
    integer (drawn as raw bytes, so bfloat16 too, which no numpy strategy knows)."""
    datatype = draw(st.sampled_from(datatypes))
    dtype = numpy_dtype(DATATYPES[datatype])
    shape = draw(SHAPES)
    count = math.prod(shape)
    if datatype == "BOOL":  # a bool's only bytes are 0 and 1
        return datatype, np.array(draw(st.lists(st.booleans(), min_size=count, max_size=count)), bool).reshape(shape)
    raw = draw(st.binary(min_size=count * dtype.itemsize, max_size=count * dtype.itemsize))
    return datatype, np.frombuffer(raw, dtype).reshape(shape)


def _finite(datatype: str, array: np.ndarray) -> bool:
    """JSON can carry the array's values: no NaN or infinity (RFC 8259 has none)."""
    return datatype not in FLOAT_DATATYPES or bool(np.isfinite(array.astype(np.float64)).all())


def _client_input(name: str, datatype: str, array: np.ndarray, binary: bool) -> Any:
    tensor = tritonclient_http.InferInput(name, list(array.shape), datatype)
    return tensor.set_data_from_numpy(array, binary_data=binary)


@PROPS
@given(
    st.lists(st.tuples(NAMES, tensors(), st.booleans()), min_size=1, max_size=4, unique_by=lambda t: t[0]),
    st.lists(st.tuples(NAMES, st.booleans()), max_size=3, unique_by=lambda t: t[0]),
    st.one_of(st.just(""), NAMES),
)
def test_what_tritonclient_sends_decodes_bit_for_bit(
    inputs: list[tuple[str, tuple[str, np.ndarray], bool]], outputs: list[tuple[str, bool]], request_id: str
) -> None:
    """A tensor the official client sends, JSON or binary, is the array the model gets: same dtype,
    same shape, same bits (a NaN stays NaN, -0.0 stays -0.0, 2**64-1 stays exact), and the outputs
    come back as asked; a float the client wrote as JSON NaN or infinity is a 400 saying to send it
    in binary. The model of exactly these inputs takes the request."""
    sent = []
    for name, (datatype, array), binary in inputs:
        sent.append(_client_input(name, datatype, array, binary or datatype == "BF16"))
    wanted = [tritonclient_http.InferRequestedOutput(name, binary_data=binary) for name, binary in outputs]
    body, length = tritonclient_http.InferenceServerClient.generate_request_body(
        sent, wanted or None, request_id=request_id
    )
    signature = ModelSignature(
        tuple(TensorMeta(name, datatype, array.shape) for name, (datatype, array), _ in inputs),
        tuple(TensorMeta(name, "FP32", (-1,)) for name, _ in outputs),
    )
    in_json = [(datatype, array) for _, (datatype, array), binary in inputs if not binary and datatype != "BF16"]
    if not all(_finite(datatype, array) for datatype, array in in_json):
        with pytest.raises(ProtocolError, match=r"send such values in binary|NaN or infinity travel only as binary"):
            parse_infer_request(body, length, signature)
        return
    parsed = parse_infer_request(body, length, signature)
    check_request(parsed, signature)
    assert list(parsed.inputs) == [name for name, _, _ in inputs]
    for name, (datatype, array), _ in inputs:
        got = parsed.inputs[name]
        assert (got.dtype, got.shape, datatype_of(got.dtype.name)) == (array.dtype, array.shape, datatype)
        assert _bits(got) == _bits(array)
    assert parsed.id == (request_id or None)
    assert parsed.outputs == tuple(RequestedOutput(name, binary) for name, binary in outputs)
    assert parsed.binary_default == (not outputs)  # the client asks for binary outputs when it names none


@PROPS
@given(tensors(), st.sampled_from(tuple(DATATYPES)), st.booleans())
def test_a_request_of_another_datatype_or_shape_than_the_model_takes_is_a_400(
    tensor: tuple[str, np.ndarray], model_type: str, binary: bool
) -> None:
    """The model's datatype and fixed dims are checked before a context is lent: a client's tensor of
    another datatype, rank or dim is refused naming the input, never fed to the engine."""
    datatype, array = tensor
    assume(datatype != model_type)
    in_binary = binary or datatype == "BF16" or not _finite(datatype, array)  # what JSON cannot carry
    body, length = tritonclient_http.InferenceServerClient.generate_request_body(
        [_client_input("x", datatype, array, in_binary)]
    )
    other_type = ModelSignature((TensorMeta("x", model_type, array.shape),), (TensorMeta("y", "FP32", (1,)),))
    parsed = parse_infer_request(body, length, other_type)
    with pytest.raises(ProtocolError, match=f"input 'x': datatype {datatype}, the model takes {model_type}"):
        check_request(parsed, other_type)
    for other_shape in ((*array.shape, 1), tuple(d + 1 for d in array.shape) or (2,)):
        model = ModelSignature((TensorMeta("x", datatype, other_shape),), (TensorMeta("y", "FP32", (1,)),))
        with pytest.raises(ProtocolError, match=r"input 'x': shape \[.*\] is not accepted; allowed: shape"):
            check_request(parse_infer_request(body, length, model), model)


@st.composite
def strings(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    """A string output (an ONNX model's labels, numpy's objects): KServe's BYTES."""
    shape = draw(SHAPES)
    count = math.prod(shape)
    return "BYTES", np.array(draw(st.lists(st.text(max_size=8), min_size=count, max_size=count)), object).reshape(shape)


@PROPS
@given(
    st.lists(
        st.tuples(NAMES, tensors() | strings(), st.booleans()),
        min_size=1,
        max_size=4,
        unique_by=lambda t: t[0],
    ),
    st.booleans(),
    st.one_of(st.none(), NAMES),
)
def test_what_trtforge_answers_tritonclient_reads_bit_for_bit(
    outputs: list[tuple[str, tuple[str, np.ndarray], bool]], name_them: bool, request_id: str | None
) -> None:
    """An output the model computed reaches the client's ``as_numpy`` as it was, JSON or binary
    (bfloat16 as ml_dtypes's, strings as BYTES); one JSON cannot carry (NaN, infinity) is a 400
    saying to ask for it in binary, not a body no JSON parser reads."""
    arrays = {name: array for name, (_, array), _ in outputs}
    if name_them:
        request = InferRequest(request_id, {}, tuple(RequestedOutput(n, b) for n, _, b in outputs), False)
    else:  # no outputs named: all of them, as the request's binary_data_output says
        binary = outputs[0][2]
        outputs = [(name, tensor, binary) for name, tensor, _ in outputs]
        request = InferRequest(request_id, {}, (), binary)
    if not all(binary or datatype == "BYTES" or _finite(datatype, a) for _, (datatype, a), binary in outputs):
        with pytest.raises(ProtocolError, match="holds NaN or infinity, which JSON cannot carry"):
            encode_infer_response("m", "1", request, arrays)
        return
    body, length = encode_infer_response("m", "1", request, arrays)
    result = tritonclient_http.InferResult.from_response_body(body, header_length=length)
    assert result.get_response().get("id") == request_id
    for name, (datatype, array), binary in outputs:
        got = result.as_numpy(name)
        assert result.get_output(name)["datatype"] == datatype
        assert got.shape == array.shape
        if datatype == "BYTES":  # binary: each element's UTF-8 bytes; JSON: the strings
            expected = [s.encode() if binary else s for s in array.ravel().tolist()]
            assert got.ravel().tolist() == expected
        else:
            assert got.dtype == array.dtype and _bits(got) == _bits(array)


# ---------------------------------------------------------------- any body: a 400, never a 500

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
#: JSON ``data``: nested lists, ragged or not, of numbers, booleans, huge integers, strings, nulls
DATA = st.recursive(
    st.integers(-(2**70), 2**70) | st.floats() | st.booleans() | st.none() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=16,
)
MODEL = ModelSignature(
    (TensorMeta("input", "FP32", (-1, 2)), TensorMeta("ids", "INT64", (-1,)), TensorMeta("mask", "BOOL", (2,))),
    (TensorMeta("logits", "FP32", (-1, 10)),),
    ({"input": {"min": [1, 2], "opt": [2, 2], "max": [4, 2]}, "ids": {"min": [1], "opt": [2], "max": [4]}},),
)


#: a JSON value of the model's datatype, as a client may write it (Python's json reads 1e400 as inf)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "FP32": st.floats(width=32) | st.integers(-(2**70), 2**70),
    "INT64": st.integers(-(2**63), 2**63 - 1) | st.integers(-(2**70), 2**70),
    "BOOL": st.booleans(),
}
#: what replaces one field of an otherwise good input: near misses, or any JSON at all
MUTATIONS: dict[str, st.SearchStrategy[Any]] = {
    "name": NAMES | st.sampled_from([meta.name for meta in MODEL.inputs]) | JSON_VALUES,
    "datatype": st.sampled_from([*DATATYPES, "BYTES", "fp32"]) | JSON_VALUES,
    "shape": st.lists(st.integers(-1, 5) | st.sampled_from([2**63, 2**64, 10**30]), max_size=3) | JSON_VALUES,
    "data": DATA | JSON_VALUES,
    "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-1, 64) | JSON_VALUES})
    | st.dictionaries(st.sampled_from(["binary_data_size", "shared_memory_region", "x"]), JSON_VALUES)
    | JSON_VALUES,
}


@st.composite
def input_entries(draw: st.DrawFn, meta: TensorMeta) -> tuple[Any, bytes]:
    """An input entry of the model's, in JSON or binary (its bytes), at times with a field or two
    replaced or dropped: so that the checks past the first get exercised too."""
    dims = st.integers(1, 4) | st.integers(1, 4) | st.integers(1, 4) | st.integers(0, 6)  # mostly inside the profile
    shape = [dim if dim >= 0 else draw(dims) for dim in meta.shape]
    size = math.prod(shape) * numpy_dtype(DATATYPES[meta.datatype]).itemsize
    entry: dict[str, Any] = {"name": meta.name, "datatype": meta.datatype, "shape": shape}
    raw = b""
    if draw(st.booleans()):
        entry["parameters"] = {"binary_data_size": size}
        raw = draw(st.binary(min_size=size, max_size=size))
    else:
        count = math.prod(shape)
        entry["data"] = draw(st.lists(VALUES[meta.datatype], min_size=count, max_size=count))
        if len(shape) == 2 and shape[1] and draw(st.booleans()):  # nested as numpy would write it
            data = entry["data"]
            entry["data"] = [data[i : i + shape[1]] for i in range(0, count, shape[1])]
    mutated = draw(st.sets(st.sampled_from([*MUTATIONS, "whole"]), max_size=2)) if not draw(st.integers(0, 3)) else ()
    for key in mutated:
        if key == "whole":
            return draw(JSON_VALUES), raw
        if draw(st.integers(0, 4)):
            entry[key] = draw(MUTATIONS[key])
        else:
            entry.pop(key, None)
    return entry, raw


#: what an HTTP header's value can hold once httptools parsed it (no other control character passes)
#: and Starlette decoded it (latin-1): tab, printable ASCII and every byte from 0x80
HEADER_CHARS = st.characters(codec="latin-1", exclude_characters="".join(map(chr, [*range(9), *range(10, 32), 127])))


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A request body and its ``Inference-Header-Content-Length``: random bytes, JSON of any form, or
    a request of the model's inputs (some fields wrong), its binary bytes cut or padded."""
    kind = draw(st.sampled_from(["bytes", "json", "request", "request", "request"]))
    raw = b""
    if kind == "bytes":
        body = draw(st.binary(max_size=64))
    elif kind == "json":
        body = json.dumps(draw(JSON_VALUES)).encode()
    else:
        metas = draw(st.permutations(MODEL.inputs))
        metas = metas[: draw(st.sampled_from([len(metas)] * 4 + [0, 1, 2]))]  # mostly all of them
        metas += [] if draw(st.integers(0, 5)) else [draw(st.sampled_from(MODEL.inputs))]  # at times one twice
        entries = [draw(input_entries(meta)) for meta in metas]
        document: dict[str, Any] = {"inputs": [entry for entry, _ in entries]}
        raw = b"".join(blob for _, blob in entries)
        for key, strategy in (
            ("outputs", st.lists(st.fixed_dictionaries({"name": NAMES | JSON_VALUES}), max_size=2) | JSON_VALUES),
            ("parameters", st.fixed_dictionaries({"binary_data_output": st.booleans() | JSON_VALUES}) | JSON_VALUES),
            ("id", NAMES | JSON_VALUES),
        ):
            if draw(st.booleans()):
                document[key] = draw(strategy)
        body = json.dumps(document).encode()
    json_size = len(body)
    cut = draw(st.sampled_from([0] * 6 + [1, 3]))
    body += (raw[:-cut] if cut else raw) + draw(st.just(b"") if draw(st.integers(0, 5)) else st.binary(max_size=8))
    right = str(json_size) if raw else None
    wrong = (
        st.sampled_from([str(json_size), None])
        | st.integers(-2, len(body) + 2).map(str)
        | st.text(HEADER_CHARS, max_size=5)
    )
    length = draw(wrong) if not draw(st.integers(0, 4)) else right
    return body, length


@PROPS
@given(bodies())
def test_any_body_is_served_or_refused_with_a_one_line_protocol_error(case: tuple[bytes, str | None]) -> None:
    """Whatever a client sends (garbage, JSON of the wrong form, binary sizes that lie, a datatype or
    shape the model does not take, ragged lists), the answer is the request decoded and checked, or a
    400 whose one-line message says what; another exception would be a 500 and a traceback in the log."""
    body, text = case
    try:
        request = parse_infer_request(body, header_length(text, len(body)), MODEL)
        check_request(request, MODEL)
    except ProtocolError as refused:
        message = str(refused)
        assert message and len(f"{message}.".splitlines()) == 1, message
        return
    for meta in MODEL.inputs:  # taken: arrays the engine can be fed
        array = request.inputs[meta.name]
        assert datatype_of(array.dtype.name) == meta.datatype and len(array.shape) == len(meta.shape)


@PROPS
@given(st.text(HEADER_CHARS, max_size=8) | st.integers(0, 10**6).map(str), st.integers(0, 10**4))
def test_any_header_length_a_client_can_send_is_a_byte_count_or_a_one_line_400(text: str, size: int) -> None:
    """``Inference-Header-Content-Length`` as it reaches the server (any value httptools passes): a
    byte count, or a 400 whose message is one line, whatever byte the client put in it."""
    try:
        length = header_length(text, size)
    except ProtocolError as refused:
        assert len(f"{refused}.".splitlines()) == 1, str(refused)
    else:
        assert length == int(text)


# ---------------------------------------------------------------- --shape NAME=DIMS and NAME=[V,...]

#: digits any script writes (int() reads them all), and numbers of more digits than int() converts
NUMBERS = (
    st.integers(0, 10**20).map(str)
    | st.text(st.characters(categories=("Nd",)), min_size=1, max_size=3)
    | st.integers(4290, 4400).map(lambda n: "9" * n)
)
SPACE = st.sampled_from(["", " ", "\t", "\u3000"])


@st.composite
def shape_texts(draw: st.DrawFn) -> str:
    """``--shape`` text: near the grammar (names, ``=``, dims with ``x`` or ``,``, ``[V,...]`` with
    signs and spaces), or any text at all."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.text(max_size=20))
    name = draw(st.text(max_size=6))
    numbers = draw(st.lists(NUMBERS, min_size=1, max_size=4))
    if draw(st.booleans()):
        dims = draw(st.sampled_from(["x", "X", ",", "x,"])).join(numbers)
    else:
        joined = ",".join(draw(SPACE) + draw(st.sampled_from(["", "-", "+"])) + n + draw(SPACE) for n in numbers)
        dims = f"[{joined}]"
    return f"{name}{draw(SPACE)}={draw(SPACE)}{dims}{draw(SPACE)}"


def _one_line_refusal(refused: InvalidInputError, text: str) -> None:
    """The refusal names the flag and is one line (a line break the user typed is theirs to see:
    the CLI writes it escaped)."""
    message = str(refused)
    assert message.startswith("--shape ")
    if len(f"{text}.".splitlines()) == 1:
        assert len(f"{message}.".splitlines()) == 1, message


@PROPS
@given(shape_texts())
def test_a_shape_or_values_flag_parses_and_formats_back_or_is_refused_in_one_line(text: str) -> None:
    """``--shape NAME=DIMS`` and ``NAME=[V,...]`` on any text: a value, or exit 2 saying how to write
    it; never an internal error. What parses, written back as the docs spell it, parses the same."""
    try:
        values = parse_values(text)
    except InvalidInputError as refused:  # the values' form, a number of more digits than any has
        _one_line_refusal(refused, text)
        values = None
    if values is not None:
        name, given = values
        assert parse_values(f"{name}=[{','.join(map(str, given))}]") == values
    try:
        name, dims = parse_shape(text)
    except InvalidInputError as refused:
        _one_line_refusal(refused, text)
    else:
        assert all(dim >= 0 for dim in dims)
        assert parse_shape(f"{name}={'x'.join(map(str, dims))}") == (name, dims)
        assert parse_shape(f"{name}={','.join(map(str, dims))}") == (name, dims)


@PROPS
@given(st.lists(shape_texts(), max_size=4))
def test_every_shape_flag_together_parses_and_formats_back_or_is_refused_in_one_line(texts: list[str]) -> None:
    """``bench --shape`` and ``serve --warmup-shape`` read their flags with ``parse_inputs``: every
    input once, as a shape or a shape tensor's values; what it reads formats back to the same."""
    try:
        shapes, values = parse_inputs(texts)
    except InvalidInputError as refused:
        _one_line_refusal(refused, "".join(texts))
        return
    again = [f"{n}={'x'.join(map(str, s))}" for n, s in shapes.items()]
    again += [f"{n}=[{','.join(map(str, v))}]" for n, v in values.items()]
    assert parse_inputs(again) == (shapes, values)


# ---------------------------------------------------------------- the defects these properties found


def test_a_number_of_more_digits_than_int_converts_is_a_usage_error_not_an_internal_one() -> None:
    """``--shape x=999…`` (4301 digits): int()'s ValueError escaped parse_shape and parse_values, an
    internal error (exit 1) from ``bench --shape`` and ``serve --warmup-shape`` instead of exit 2."""
    from trtforge.serve.server import parse_warmup_shape

    huge = "9" * 4301
    for text in (f"x={huge}", f"x=1x{huge}", f"x=[{huge}]", f"x=[1, -{huge}]"):
        with pytest.raises(InvalidInputError) as refused:
            parse_inputs([text])
        assert str(refused.value) == f"--shape '{text}': a number of 4301 digits is no dim or value a tensor has"
        with pytest.raises(InvalidInputError, match=r"^--warmup-shape 'x="):
            parse_warmup_shape(text, ["m"])


def test_a_refusal_that_echoes_a_line_break_the_client_sent_is_one_line() -> None:
    """A 400's message echoes the client's tensor names and header value: a name ``"a\\nb"`` or a
    header byte 0x85 (NEL, which httptools passes) split it over two lines; it is written escaped."""
    with pytest.raises(ProtocolError) as refused:
        header_length("\x85", 10)
    assert str(refused.value) == "Inference-Header-Content-Length '\\x85' is not a byte count"
    body = json.dumps({"inputs": [{"name": "a\nb", "shape": [1], "datatype": "FP32", "data": [1]}]}).encode()
    with pytest.raises(ProtocolError) as refused:
        check_request(parse_infer_request(body, None, MODEL), MODEL)
    assert str(refused.value) == "unknown input 'a\\nb' (inputs: input, ids, mask)"
