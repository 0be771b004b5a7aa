"""The KServe v2 messages and serve's pure rules, without a server: decoding JSON and binary
tensors, encoding responses, the request checks (an engine's profile ranges in the refusal),
``NAME=ARTIFACT`` and ``--warmup-shape`` parsing, and an engine's metadata from its manifest."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
from registry import build_engine

from trtforge.compat import LoadPolicy
from trtforge.errors import InvalidInputError
from trtforge.runtime.sources import WarmupSet
from trtforge.serve.app import Limits, ModelPlan
from trtforge.serve.protocol import (
    DATATYPES,
    HEADER_LENGTH,
    InferRequest,
    ModelSignature,
    ProtocolError,
    RequestedOutput,
    TensorMeta,
    check_request,
    encode_infer_response,
    header_length,
    parse_infer_request,
)
from trtforge.serve.server import (
    PullOptions,
    ServeConfig,
    check_warmup_shapes,
    engine_plan,
    model_warmup_sets,
    onnx_plan,
    parse_warmup_shape,
    resolve_artifacts,
    run_server,
    split_named,
)

tritonclient_http = pytest.importorskip("tritonclient.http", reason="pip install 'tritonclient[http]'")

DIGITS = ModelSignature(
    (TensorMeta("input", "FP32", (-1, 1, 8, 8)),),
    (TensorMeta("logits", "FP32", (-1, 10)),),
    ({"input": {"min": [1, 1, 8, 8], "opt": [16, 1, 8, 8], "max": [64, 1, 8, 8]}},),
)


def binary_body(arrays: dict[str, np.ndarray], datatype: str = "FP32", **extra: object) -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [
                {"name": n, "shape": list(a.shape), "datatype": datatype, "parameters": {"binary_data_size": a.nbytes}}
                for n, a in arrays.items()
            ],
            **extra,
        }
    ).encode()
    return header + b"".join(a.tobytes() for a in arrays.values()), len(header)


def test_binary_and_json_inputs_decode_to_the_same_arrays() -> None:
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    b = np.arange(6, dtype=np.int64).reshape(6)
    body, length = binary_body({"a": a})
    json_b = {"name": "b", "shape": [6], "datatype": "INT64", "data": b.tolist()}
    document = json.loads(body[:length])
    document["inputs"].append(json_b)
    header = json.dumps(document).encode()
    parsed = parse_infer_request(header + body[length:], len(header))
    np.testing.assert_array_equal(parsed.inputs["a"], a)
    np.testing.assert_array_equal(parsed.inputs["b"], b)
    assert parsed.inputs["b"].dtype == np.int64 and parsed.outputs == () and not parsed.binary_default
    plain = parse_infer_request(json.dumps({"inputs": [json_b], "id": 7}).encode(), None)
    assert plain.id == "7" and plain.inputs["b"].tolist() == b.tolist()


@pytest.mark.parametrize(
    ("body", "length", "message"),
    [
        (b"{", None, "not valid JSON"),
        (b"[]", None, "must be a JSON object"),
        (b"{}", None, "no 'inputs' list"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}', None, "'BYTES' is not"),
        (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}]}', None, "holds 1 values"),
        (b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": []}]}', None, "non-negative"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', None, "give 'data'"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["z"]}]}', None, "is not FP32"),
        (b"{}", 10, "does not fit a body of 2 bytes"),
        # numpy would convert these silently (a wrapped 44, a parsed string) or fail inside the server (500)
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [300]}]}', None, "outside -128..127"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "data": [-1]}]}', None, "outside 0..255"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1.5]}]}',
            None,
            "1.5 is not an integer",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["1.5"]}]}',
            None,
            '"1.5" is not a number',
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1' + b"0" * 400 + b"]}]}",
            None,
            "not FP32",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [NaN]}]}',
            None,
            r"'NaN' is not JSON \(RFC 8259 has no NaN or Infinity: send such values in binary\)",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [true], "datatype": "FP32", "data": [1]}]}',
            None,
            "non-negative integers",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [' + b"1," * 64 + b'1], "datatype": "FP32", "data": [1]}]}',
            None,
            "at most 32",
        ),
        (b"[" * 100_000 + b"]" * 100_000, None, "nested too deeply"),
        # a string "false" read as true, a numeric string called the wrong size, an object echoed as a repr
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],'
            b' "outputs": [{"name": "y", "parameters": {"binary_data": "false"}}]}',
            None,
            'parameters.binary_data must be true or false, got "false"',
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],'
            b' "parameters": {"binary_data_output": 1}}',
            None,
            "parameters.binary_data_output must be true or false, got 1",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": "4"}}]}',
            None,
            'binary_data_size must be a number of bytes, got "4"',
        ),
        (
            b'{"id": {"a": 1}, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}',
            None,
            """'id' must be a string, got {"a": 1}""",
        ),
    ],
)
def test_malformed_requests_are_protocol_errors(body: bytes, length: int | None, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_infer_request(body, length)


def test_json_responses_are_strict_json_and_an_outputs_own_binary_flag_wins() -> None:
    request = parse_infer_request(
        json.dumps(
            {
                "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                "parameters": {"binary_data_output": True},
                "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
            }
        ).encode(),
        None,
    )
    assert [(o.name, o.binary) for o in request.outputs] == [("y", False), ("z", True)]
    finite = {"y": np.ones(2, np.float32), "z": np.ones(2, np.float32)}
    body, length = encode_infer_response("m", "1", request, finite)
    assert json.loads(body[:length])["outputs"][0]["data"] == [1.0, 1.0]
    with pytest.raises(ProtocolError, match="output 'y' holds NaN or infinity, which JSON cannot carry"):
        encode_infer_response("m", "1", request, {**finite, "y": np.array([np.inf], np.float32)})


def test_binary_sizes_must_match_and_use_the_whole_body() -> None:
    a = np.zeros((2, 2), np.float32)
    body, length = binary_body({"a": a})
    with pytest.raises(ProtocolError, match="4 bytes after the last binary input"):
        parse_infer_request(body + b"\0\0\0\0", length)
    with pytest.raises(ProtocolError, match="the body ends before its 16 binary bytes"):
        parse_infer_request(body[:-1], length)
    wrong, wrong_length = binary_body({"a": a}, datatype="FP16")
    with pytest.raises(ProtocolError, match="binary_data_size 16 is not 4 x 2 bytes of FP16"):
        parse_infer_request(wrong, wrong_length)


def client_body(inputs: list[Any], outputs: list[Any] | None = None, **options: Any) -> tuple[bytes, int | None]:
    """A request body and its JSON header's length as the official Triton client encodes them."""
    return tritonclient_http.InferenceServerClient.generate_request_body(inputs, outputs, **options)


def client_input(name: str, array: np.ndarray, datatype: str, binary: bool = False) -> Any:
    tensor = tritonclient_http.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_an_empty_json_tensor_of_any_type_is_an_empty_array_of_that_type() -> None:
    """``"data": []`` is numpy's float64 whatever the datatype: an empty INT64 or BOOL input was
    refused as "its values are float64" before its size was looked at."""
    signature = ModelSignature(
        tuple(TensorMeta(name, datatype, (-1,)) for name, datatype in (("i", "INT64"), ("b", "BOOL"), ("h", "FP16"))),
        (TensorMeta("y", "FP32", (-1,)),),
    )
    arrays = {"i": np.zeros(0, np.int64), "b": np.zeros(0, np.bool_), "h": np.zeros(0, np.float16)}
    inputs = [client_input(name, array, signature.inputs[n].datatype) for n, (name, array) in enumerate(arrays.items())]
    body, length = client_body(inputs)
    assert b'"data":[]' in body and length is None
    parsed = parse_infer_request(body, length, signature)
    check_request(parsed, signature)
    for name, array in arrays.items():
        assert parsed.inputs[name].dtype == array.dtype and parsed.inputs[name].shape == (0,)


def test_a_json_number_past_a_float_types_range_is_refused_naming_the_input() -> None:
    """70000 as FP16 or 1e300 as FP32 was infinity without a word (JSON carries no infinity, and
    the refusal then blamed the output); each type's largest finite value still goes through."""
    cases = (
        ("FP16", "65504", "70000", "70000", "65504"),
        ("FP32", "3.4e38", "1e300", "1e+300", "3.40282e+38"),
        ("FP64", "1.7e308", "1e400", "inf", "1.79769e+308"),  # Python's json reads 1e400 as infinity
    )
    for datatype, largest, past, shown, limit in cases:
        head = f'{{"inputs": [{{"name": "x", "shape": [2], "datatype": "{datatype}", "data": [1, '
        fits = parse_infer_request(f"{head}{largest}]}}]}}".encode(), None).inputs["x"]
        assert fits[1] == np.asarray(float(largest), DATATYPES[datatype])
        with pytest.raises(ProtocolError) as refused:
            parse_infer_request(f"{head}{past}]}}]}}".encode(), None)
        assert str(refused.value) == (
            f"input 'x': 'data' is not {datatype}: {shown} is past its range ±{limit} (it would be infinity); "
            "NaN or infinity travel only as binary tensors"
        )


def test_json_integers_past_int64_keep_their_values_as_uint64_and_out_of_range_ones_are_named() -> None:
    """numpy reads ``[3, 2**63]`` as float64: a UINT64 input the Triton client sent as JSON was refused
    as "its values are float64" (and 2**64 as "object"), not read exactly or refused for its range."""
    signature = ModelSignature((TensorMeta("u", "UINT64", (2,)),), (TensorMeta("y", "UINT64", (2,)),))
    exact = np.array([2**64 - 1, 3], np.uint64)
    parsed = parse_infer_request(*client_body([client_input("u", exact, "UINT64")]), signature)
    assert parsed.inputs["u"].dtype == np.uint64 and parsed.inputs["u"].tolist() == [2**64 - 1, 3]
    for datatype, data, message in (
        ("UINT64", "[3, 18446744073709551616]", "values outside 0..18446744073709551615"),
        ("INT64", "[-1, 9223372036854775808]", "values outside -9223372036854775808..9223372036854775807"),
        ("UINT64", "[3, 9223372036854775808.0]", r"9.223372036854776e\+18 is not an integer"),
    ):
        body = f'{{"inputs": [{{"name": "u", "shape": [2], "datatype": "{datatype}", "data": {data}}}]}}'
        with pytest.raises(ProtocolError, match=message):
            parse_infer_request(body.encode(), None)


def _json_refusal(datatype: str, data: object, shape: tuple[int, ...] = (2,)) -> str:
    """The refusal of a JSON input ``x`` of ``datatype`` holding ``data``."""
    body = json.dumps({"inputs": [{"name": "x", "shape": list(shape), "datatype": datatype, "data": data}]})
    with pytest.raises(ProtocolError) as refused:
        parse_infer_request(body.encode(), None)
    return str(refused.value)


def test_json_true_or_false_among_numbers_is_refused_naming_the_input_and_its_type() -> None:
    """Python's bool is an int and numpy reads ``[1, true]`` as ``[1, 1]``: a JSON boolean among an
    integer or float input's numbers was served as 1 or 0. Triton refuses it (rapidjson's IsInt64,
    IsUint64, IsNumber), as it refuses a number in a BOOL input; nested ones are found too."""
    for datatype, data, stray, takes in (
        ("INT32", [1, True], "true", "an integer"),
        ("INT64", [[2], [False]], "false", "an integer"),
        ("UINT8", [True, 3], "true", "an integer"),
        ("UINT64", [2**64 - 1, True], "true", "an integer"),
        ("FP16", [0.5, False], "false", "a number"),
        ("FP32", [[1.5], [True]], "true", "a number"),
        ("FP64", [False, 2.5], "false", "a number"),
        ("BOOL", [True, 1], "1", "true or false"),
        ("BOOL", [[False], [0.0]], "0.0", "true or false"),
    ):
        assert _json_refusal(datatype, data) == f"input 'x': 'data' is not {datatype}: {stray} is not {takes}"
    body = json.dumps(
        {
            "inputs": [
                {"name": "f", "shape": [2], "datatype": "FP32", "data": [1, 2.5]},  # an integer is a float's number
                {"name": "i", "shape": [2, 1], "datatype": "INT64", "data": [[1], [2]]},
                {"name": "b", "shape": [2], "datatype": "BOOL", "data": [True, False]},
            ]
        }
    )
    parsed = parse_infer_request(body.encode(), None).inputs
    assert parsed["f"].tolist() == [1.0, 2.5] and parsed["i"].tolist() == [[1], [2]]
    assert parsed["b"].tolist() == [True, False] and parsed["b"].dtype == np.bool_


def test_null_strings_and_objects_in_json_data_are_named_as_json_spells_them() -> None:
    """They were refused as numpy's dtype of the whole list: "its values are object" for a null,
    "str672" for a string beside numbers, which said neither what nor where."""
    assert _json_refusal("FP32", [1, None]) == "input 'x': 'data' is not FP32: null is not a number"
    assert _json_refusal("INT32", [[1], ["2"]]) == """input 'x': 'data' is not INT32: "2" is not an integer"""
    assert _json_refusal("BOOL", [True, {"a": 1}]) == """input 'x': 'data' is not BOOL: {"a": 1} is not true or false"""
    assert _json_refusal("FP32", ["x" * 100, 1]).endswith(f'"{"x" * 63} is not a number')  # one short line


def test_a_bf16_input_as_json_is_refused_saying_it_travels_in_binary() -> None:
    """JSON has no bfloat16 and Triton refuses BF16 in JSON (tritonclient too): the refusal said "its
    values are float64, not numbers of this type", which no JSON could ever satisfy."""
    assert _json_refusal("BF16", [1.0, 2.0]) == (
        "input 'x': 'data' is not BF16: a bfloat16 tensor travels only in binary (parameters.binary_data_size)"
    )


def test_a_bf16_output_holding_nan_asked_for_as_json_is_refused_as_any_float_output_is() -> None:
    """bfloat16 is no numpy float kind: its NaN and infinity went out as ``NaN``/``Infinity``, a 200
    whose body is no JSON (RFC 8259), where every other float type gets the 400 saying to ask in binary."""
    import ml_dtypes

    request = InferRequest(None, {}, (RequestedOutput("y", False),), False)
    finite = np.array([1.5, -2.0], ml_dtypes.bfloat16)
    body, length = encode_infer_response("m", "1", request, {"y": finite})
    assert length is None and json.loads(body)["outputs"][0] == {
        "name": "y",
        "datatype": "BF16",
        "shape": [2],
        "data": [1.5, -2.0],
    }
    for value in (np.nan, np.inf):
        with pytest.raises(ProtocolError, match="output 'y' holds NaN or infinity, which JSON cannot carry"):
            encode_infer_response("m", "1", request, {"y": np.array([1, value], ml_dtypes.bfloat16)})


def test_a_header_length_of_more_digits_than_python_converts_is_a_protocol_error() -> None:
    """``Inference-Header-Content-Length`` of 5000 digits: int() refuses past 4300, which was a plain
    500 and a traceback in the log for each such request."""
    assert header_length(None, 10) is None and header_length("0010", 10) == 10
    for text, message in (
        ("1" + "0" * 5000, "a number of 5001 digits does not fit a body of 10 bytes"),
        ("0" * 5000 + "5", None),
        ("\u00b2", "'\u00b2' is not a byte count"),
        ("-1", "'-1' is not a byte count"),
    ):
        if message is None:
            assert header_length(text, 10) == 5
            continue
        with pytest.raises(ProtocolError, match=message):
            header_length(text, 10)


def test_a_model_with_a_tensor_of_no_kserve_datatype_is_refused_before_serving(tmp_path: Path) -> None:
    """A string input was an internal error (exit 1, KeyError 'OBJECT'); a string output was served
    as datatype OBJECT, its binary data the process's heap pointers. Neither has a KServe datatype
    here (nor does TensorRT take strings): exit 2 naming the tensor, before the port opens."""
    import onnx
    from onnx import TensorProto, helper

    def model(name: str, source: int, target: int, op: str, **attributes: Any) -> Path:
        graph = helper.make_graph(
            [helper.make_node(op, ["x"], ["y"], **attributes)],
            name,
            [helper.make_tensor_value_info("x", source, [2])],
            [helper.make_tensor_value_info("y", target, [2])],
        )
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        proto.ir_version = 8
        onnx.save(proto, tmp_path / f"{name}.onnx")
        return tmp_path / f"{name}.onnx"

    cases = (
        (model("text_in", TensorProto.STRING, TensorProto.STRING, "Identity"), "input 'x' holds strings"),
        (
            model("text_out_fp8", TensorProto.FLOAT, TensorProto.FLOAT8E4M3FN, "Cast", to=TensorProto.FLOAT8E4M3FN),
            "output 'y' holds",
        ),
        (model("numbers", TensorProto.FLOAT, TensorProto.FLOAT, "Identity"), None),
    )
    for path, message in cases:
        if message is None:
            assert [plan.name for plan in resolve_artifacts([str(path)], LoadPolicy(), PullOptions(), print)[0]] == [
                "numbers"
            ]
            continue
        with pytest.raises(InvalidInputError) as refused:
            resolve_artifacts([str(path)], LoadPolicy(), PullOptions(), print)
        assert str(refused.value).startswith(f"{path}: {message}"), refused.value
        assert "KServe datatype" in str(refused.value)


def test_parameters_that_are_no_object_are_refused_wherever_they_are() -> None:
    """The request's and an output's ``parameters`` were read as empty when they were no object
    (``[1]``, ``"x"``), an input's refused: each refused now, naming where."""
    tensor = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}
    cases = {
        "the request": {"inputs": [tensor], "parameters": [1]},
        "output 'y'": {"inputs": [tensor], "outputs": [{"name": "y", "parameters": [1]}]},
        "input 'x'": {"inputs": [{**tensor, "parameters": "x"}]},
    }
    for where, document in cases.items():
        for parameters in ([1], "x", 0, False):
            if where == "the request":
                document["parameters"] = parameters
            elif where == "output 'y'":
                document["outputs"][0]["parameters"] = parameters
            else:
                document["inputs"][0]["parameters"] = parameters
            with pytest.raises(ProtocolError) as refused:
                parse_infer_request(json.dumps(document).encode(), None)
            assert str(refused.value) == f"{where}: 'parameters' must be an object", parameters


def test_triton_extensions_this_server_lacks_are_refused_naming_the_parameter() -> None:
    """Triton answers ``classification`` with "score:index" strings and keeps state for a
    ``sequence_id``; this server answered raw logits and forgot the sequence: refused instead."""
    x = client_input("input", np.zeros((1, 1, 8, 8), np.float32), "FP32", binary=True)
    top3 = tritonclient_http.InferRequestedOutput("logits", class_count=3)
    shared = tritonclient_http.InferRequestedOutput("logits")
    shared.set_shared_memory("region", 40)
    cases = [
        (
            client_body([x], [top3]),
            "output 'logits': parameters.classification asks for Triton's classification extension, which this "
            "server does not implement; ask for the output itself and take its top k on the client",
        ),
        (
            client_body([x], sequence_id=7, sequence_start=True),
            "the request: parameters.sequence_id asks for Triton's sequence batching extension, which this server "
            "does not implement; send each request on its own",
        ),
        (client_body([x], [shared]), "output 'logits': parameters.shared_memory_region asks for Triton's shared"),
    ]
    for (body, length), message in cases:
        with pytest.raises(ProtocolError) as refused:
            parse_infer_request(body, length, DIGITS)
        assert str(refused.value).startswith(message)
    document = json.loads(client_body([client_input("input", np.zeros((1, 1, 8, 8), np.float32), "FP32")])[0])
    document["parameters"] = {"sequence_end": True}
    with pytest.raises(ProtocolError, match=r"the request: parameters\.sequence_end asks for Triton's sequence"):
        parse_infer_request(json.dumps(document).encode(), None, DIGITS)


def test_an_output_asked_for_twice_is_refused_as_an_input_given_twice() -> None:
    """It was answered twice, once in JSON and once in binary here."""
    x = client_input("input", np.zeros((1, 1, 8, 8), np.float32), "FP32")
    twice = [
        tritonclient_http.InferRequestedOutput("logits", binary_data=False),
        tritonclient_http.InferRequestedOutput("logits", binary_data=True),
    ]
    with pytest.raises(ProtocolError) as refused:
        parse_infer_request(*client_body([x], twice), DIGITS)
    assert str(refused.value) == "output 'logits' is asked for twice"
    with pytest.raises(ProtocolError, match="input 'input' is given twice"):
        parse_infer_request(*client_body([x, x]), DIGITS)


def test_the_refusal_names_the_input_and_the_profiles_range() -> None:
    def request(array: np.ndarray, name: str = "input") -> InferRequest:
        return InferRequest(None, {name: array}, (), False)

    check_request(request(np.zeros((64, 1, 8, 8), np.float32)), DIGITS)
    with pytest.raises(ProtocolError) as refused:
        check_request(request(np.zeros((65, 1, 8, 8), np.float32)), DIGITS)
    assert str(refused.value) == (
        "input 'input': shape [65, 1, 8, 8] is not accepted; allowed: shape within [1, 1, 8, 8]..[64, 1, 8, 8]"
    )
    with pytest.raises(ProtocolError, match=r"shape \[2, 8, 8\] is not accepted"):
        check_request(request(np.zeros((2, 8, 8), np.float32)), DIGITS)
    with pytest.raises(ProtocolError, match="datatype FP16, the model takes FP32"):
        check_request(request(np.zeros((1, 1, 8, 8), np.float16)), DIGITS)
    with pytest.raises(ProtocolError, match="unknown input 'inpt' — did you mean 'input'"):
        check_request(request(np.zeros((1, 1, 8, 8), np.float32), "inpt"), DIGITS)
    wants_other = InferRequest(
        None, {"input": np.zeros((1, 1, 8, 8), np.float32)}, (RequestedOutput("prob", True),), False
    )
    with pytest.raises(ProtocolError, match=r"unknown output 'prob' \(outputs: logits\)"):
        check_request(wants_other, DIGITS)


def test_a_shape_no_array_can_have_is_refused_with_the_shapes_the_model_takes() -> None:
    """Behind a 0 dim, dims past what numpy can shape declare no data; numpy's ValueError was a 500."""
    shapes = ([0, 1, 8, 2**63], [0, 2**62, 4])
    for shape in shapes:
        tensor = {"name": "input", "shape": shape, "datatype": "FP32"}
        as_json = json.dumps({"inputs": [{**tensor, "data": []}]}).encode()
        binary = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": 0}}]}).encode()
        for body, length in ((as_json, None), (binary, len(binary))):
            with pytest.raises(ProtocolError) as refused:
                parse_infer_request(body, length, DIGITS)
            assert str(refused.value) == (
                f"input 'input': shape [{', '.join(map(str, shape))}] is not accepted; "
                "allowed: shape within [1, 1, 8, 8]..[64, 1, 8, 8]"
            )
            with pytest.raises(ProtocolError, match=r"is not accepted; allowed: dims numpy can hold"):
                parse_infer_request(body, length)  # no model to name
    misnamed = json.dumps({"inputs": [{"name": "inpt", "shape": shapes[1], "datatype": "FP32", "data": []}]})
    with pytest.raises(ProtocolError, match="unknown input 'inpt' — did you mean 'input'"):
        parse_infer_request(misnamed.encode(), None, DIGITS)


def test_responses_carry_binary_outputs_after_the_json_header() -> None:
    logits = np.arange(20, dtype=np.float32).reshape(2, 10)
    binary = InferRequest("r", {}, (RequestedOutput("logits", True),), False)
    body, length = encode_infer_response("digits", "1", binary, {"logits": logits})
    assert length is not None
    header = json.loads(body[:length])
    assert header == {
        "model_name": "digits",
        "model_version": "1",
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [2, 10], "parameters": {"binary_data_size": 80}}],
        "id": "r",
    }
    np.testing.assert_array_equal(np.frombuffer(body[length:], np.float32).reshape(2, 10), logits)
    body, length = encode_infer_response("digits", "1", InferRequest(None, {}, (), False), {"logits": logits})
    assert length is None and json.loads(body)["outputs"][0]["data"] == logits.ravel().tolist()
    assert HEADER_LENGTH == "Inference-Header-Content-Length"


def test_names_and_warmup_shapes() -> None:
    assert split_named("digits=models/a.onnx") == ("digits", "models/a.onnx")
    assert split_named("oci://host:5000/models") == (None, "oci://host:5000/models")
    assert split_named("dir/a=b.onnx") == (None, "dir/a=b.onnx")
    assert parse_warmup_shape("slow:input=4x1,8", ["slow"]) == ("slow", WarmupSet({"input": (4, 1, 8)}))
    assert parse_warmup_shape("input:0=1x3", ["slow"]) == (None, WarmupSet({"input:0": (1, 3)}))
    assert parse_warmup_shape("a=1,4,b=2x4", []) == (None, WarmupSet({"a": (1, 4), "b": (2, 4)}))
    # a shape tensor's values, its shape following from them
    assert parse_warmup_shape("m:x=2x12,shape=[2, -1,4]", ["m"]) == (
        "m",
        WarmupSet({"x": (2, 12)}, {"shape": (2, -1, 4)}),
    )
    with pytest.raises(InvalidInputError, match="--warmup-shape 'a=x'"):
        parse_warmup_shape("a=x", [])


def test_an_engine_plan_comes_from_its_manifest_and_warmup_sets_fill_other_inputs(tmp_path: Path) -> None:
    models.need_rtx()
    plan = engine_plan(build_engine(tmp_path), None)
    assert plan.name == "digits-cnn" and plan.platform == "tensorrt_rtx_plan" and plan.backend == "tensorrt-rtx"
    assert plan.metadata()["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert plan.signature.profiles[0]["input"]["max"] == [64, 1, 8, 8]
    pair = onnx_plan(models.two_inputs(tmp_path / "pair.onnx"), "pair")
    sets = [
        (None, WarmupSet({"image": (4, 3, 8, 8)})),
        ("digits-cnn", WarmupSet({"image": (9, 3, 8, 8)})),
        (None, WarmupSet({"x": (1,)})),
    ]
    assert model_warmup_sets(pair, sets) == [WarmupSet({"image": (4, 3, 8, 8), "meta": (1, 4)})]


def _warmup_refusal(text: str, plan: ModelPlan) -> str:
    """The line ``check_warmup_shapes`` refuses ``--warmup-shape text`` with."""
    with pytest.raises(InvalidInputError) as caught:
        check_warmup_shapes([text], [plan])
    return str(caught.value)


def test_a_warmup_shape_naming_no_input_of_its_model_is_refused_with_the_fix(tmp_path: Path) -> None:
    pair = onnx_plan(models.two_inputs(tmp_path / "pair.onnx"), "pair")
    check_warmup_shapes(["pair:image=4x3x8x8,meta=1x4", "image=2x3x8x8"], [pair])
    cases = {
        "pair:imgae=4x3x8x8": "model 'pair' does not have an input 'imgae' — did you mean 'image'?",
        "imgae=4x3x8x8": "no served model has an input 'imgae' — did you mean 'image'?",
        # MODEL: that names no served model is said to be one (it was taken for an input name alone)
        "pari:image=4x3x8x8": "an input 'pari:image', nor is one named 'pari' — did you mean 'pair'?",
        "gone:image=4x3x8x8": "no served model has an input 'gone:image', nor is one named 'gone' (inputs",
    }
    for text, expected in cases.items():
        refusal = _warmup_refusal(text, pair)
        assert expected in refusal and "(inputs: image, meta; models: pair)" in refusal


def test_a_warmup_shape_the_model_would_refuse_is_refused_before_the_port_opens(tmp_path: Path) -> None:
    """Checked for names only, a shape the model cannot take (another static dim, another rank) or
    one of gigabytes failed the warm-up once the port was open: exit 2 with onnxruntime's text, or
    exit 1 for an allocation of 47 GiB."""
    pair = onnx_plan(models.two_inputs(tmp_path / "pair.onnx"), "pair")
    cases = {
        "image=4x3x9x8": "input 'image': shape [4, 3, 9, 8] is not accepted; allowed: shape [-1, 3, 8, 8]",
        "pair:meta=1x4x1": "input 'meta': shape [1, 4, 1] is not accepted",
        "image=100000000x3x8x8": "of input, over the 256 MiB a request may take",
    }
    for text, expected in cases.items():
        refusal = _warmup_refusal(text, pair)
        assert refusal.startswith("--warmup-shape for model 'pair': ") and expected in refusal


def test_a_warmup_shape_whose_inputs_fit_no_one_profile_together_is_refused(tmp_path: Path) -> None:
    """Each input was checked against the profiles alone: image at batch 32 (profile 1) beside meta
    at its default 1x4 (profile 0) passed, and the engine, which runs one profile at a time, refused
    the warm-up once the port was open (a request so, only once a context had it)."""
    pair = onnx_plan(models.two_inputs(tmp_path / "pair.onnx"), "pair")
    profiles = (
        {"image": {"min": [1, 3, 8, 8], "max": [8, 3, 8, 8]}, "meta": {"min": [1, 4], "max": [8, 4]}},
        {"image": {"min": [16, 3, 8, 8], "max": [256, 3, 8, 8]}, "meta": {"min": [16, 4], "max": [256, 4]}},
    )
    engine = dataclasses.replace(pair, signature=dataclasses.replace(pair.signature, profiles=profiles))
    check_warmup_shapes(["image=4x3x8x8", "image=32x3x8x8,meta=32x4"], [engine])
    for text in ("image=32x3x8x8", "image=4x3x8x8,meta=32x4"):
        refusal = _warmup_refusal(text, engine)
        assert (
            refusal.startswith("--warmup-shape for model 'pair': input shapes image [")
            and (
                "fit no one profile together (profile 0: image [1, 3, 8, 8]..[8, 3, 8, 8], meta [1, 4]..[8, 4]; "
                "profile 1: image [16, 3, 8, 8]..[256, 3, 8, 8], meta [16, 4]..[256, 4]); pass shapes it takes"
            )
            in refusal
        ), refusal

    def request(image: int, meta: int) -> InferRequest:
        arrays = {"image": np.zeros((image, 3, 8, 8), np.float32), "meta": np.zeros((meta, 4), np.float32)}
        return InferRequest(None, arrays, (), False)

    check_request(request(32, 32), engine.signature)
    with pytest.raises(ProtocolError, match=r"image \[4, 3, 8, 8\], meta \[32, 4\] fit no one profile together"):
        check_request(request(4, 32), engine.signature)  # refused before a context takes it


def test_readiness_follows_warmup_and_the_minimum_of_healthy_contexts() -> None:
    """A pool degraded below ``--min-contexts`` makes the server not ready; at or above it, ready."""
    from registry import DIGITS_ONNX

    from trtforge.runtime.manager import PoolManager
    from trtforge.serve.app import ServeState

    plan = onnx_plan(DIGITS_ONNX, "digits")
    with PoolManager() as manager:
        state = ServeState({"digits": plan}, manager, Limits(pool_size=2, min_contexts=2), warm=lambda _: None)
        assert state.not_ready() == "model 'digits' is warming up"
        pool = manager.add("digits", DIGITS_ONNX, 2)
        assert state.not_ready() == "warming up the HTTP request path"
        state.warming = False
        assert state.not_ready() is None
        source = pool._source  # the model bytes new contexts are made from
        good = source._bytes  # type: ignore[union-attr]
        with pool.borrow() as runner:
            runner.deactivate()  # a real failure: the session is gone
        source._bytes = b"not an onnx model"  # type: ignore[union-attr]  # so the rebuild really fails
        assert len(pool.check().broken) == 1
        assert state.not_ready() == "model 'digits': 1 healthy contexts, fewer than the minimum 2"
        state.limits = dataclasses.replace(state.limits, min_contexts=1)
        assert state.not_ready() is None  # degraded, still serving on its healthy context
        source._bytes = good  # type: ignore[union-attr]
        pool.check()
        pool.close()
        assert state.not_ready() == "model 'digits': pool is closed"


def test_an_unknown_provider_is_refused_before_any_artifact_is_resolved() -> None:
    logged: list[str] = []
    config = ServeConfig(artifacts=("oci://127.0.0.1:9/never",), policy=LoadPolicy(), provider="tpu")
    with pytest.raises(InvalidInputError, match="--provider 'tpu': use cpu or cuda"):
        run_server(config, logged.append)
    assert logged == []  # nothing pulled, nothing listened
    too_many = dataclasses.replace(config, provider="cpu", limits=Limits(pool_size=24, max_queue=1001))
    with pytest.raises(InvalidInputError, match="--pool 24 \\+ --max-queue 1001: at most 1024 requests"):
        run_server(too_many, logged.append)
    assert logged == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # an unset $HOST: uvicorn listened on every interface ("listening on http://0.0.0.0:...")
        ({"host": ""}, "--host is empty: pass the address to listen on"),
        ({"host": "  "}, "--host is empty"),
        ({"provider": "CUDA"}, "--provider 'CUDA': use cpu or cuda — did you mean 'cuda'?"),
        ({"provider": "CUDAExecutionProvider"}, "use cpu or cuda — did you mean 'cuda'?"),
        # 100000 made onnxruntime grow memory for minutes, deaf to Ctrl-C, in the warm-up (after listening)
        ({"threads": 100_000}, "--threads 100000: at most "),
    ],
)
def test_a_host_provider_or_threads_serve_cannot_use_is_refused_before_anything_is_resolved(
    change: dict[str, object], message: str
) -> None:
    logged: list[str] = []
    config = dataclasses.replace(ServeConfig(artifacts=("oci://127.0.0.1:9/never",), policy=LoadPolicy()), **change)
    with pytest.raises(InvalidInputError) as refused:
        run_server(config, logged.append)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert logged == []  # nothing pulled, nothing listened


def test_limits_the_server_could_never_meet_are_refused_before_anything_is_resolved() -> None:
    from registry import DIGITS_ONNX

    from trtforge.serve.protocol import probe_request
    from trtforge.serve.server import check_body_limit

    logged: list[str] = []
    config = ServeConfig(
        artifacts=("oci://127.0.0.1:9/never",), policy=LoadPolicy(), limits=Limits(pool_size=2, min_contexts=3)
    )
    with pytest.raises(InvalidInputError, match="--min-contexts 3 is above --pool 2: the server could never be ready"):
        run_server(config, logged.append)
    with pytest.raises(InvalidInputError, match="--grace inf: give a number of seconds"):
        run_server(dataclasses.replace(config, limits=Limits(grace_s=float("inf"))), logged.append)
    for client_timeout in (0.0, float("inf"), float("nan")):  # 0 would close every connection before its request
        with pytest.raises(InvalidInputError, match=f"--client-timeout {client_timeout}: give the seconds a client"):
            run_server(dataclasses.replace(config, limits=Limits(client_timeout=client_timeout)), logged.append)
    assert logged == []  # nothing pulled, nothing listened
    digits = onnx_plan(DIGITS_ONNX, "digits")
    needed = len(probe_request(digits.signature)[0])
    check_body_limit(needed, [digits])
    with pytest.raises(InvalidInputError, match=f"allows {needed - 1} bytes, .* pass --max-body-mib 0.001 or more"):
        check_body_limit(needed - 1, [digits])
    check_body_limit(int(0.001 * 2**20), [digits])  # what the refusal says to pass is enough


def test_a_health_interval_that_is_no_number_of_seconds_is_refused_before_anything_is_resolved() -> None:
    """``--health-interval inf`` was refused only by the pool, once the port was open (liveness 200,
    then exit 2); ``--grace inf`` was refused before."""
    logged: list[str] = []
    config = ServeConfig(artifacts=("oci://127.0.0.1:9/never",), policy=LoadPolicy())
    for interval in (math.inf, math.nan, -1.0, 0.0):
        with pytest.raises(InvalidInputError) as refused:
            run_server(dataclasses.replace(config, health_interval=interval), logged.append)
        assert str(refused.value) == (
            f"--health-interval {interval}: give a number of seconds between probes (default 30), or 0 for none"
        )
    assert logged == []  # nothing pulled, nothing listened


# ---------------------------------------------------------------- shape tensors


def test_the_probe_request_gives_an_engines_shape_tensors_their_min_values() -> None:
    """The request serve sends itself (and sizes ``--max-body-mib`` by): an engine's shape tensor at
    its profile's min values, as the manifest records them (before: zeros, a Reshape to nothing);
    with the pool's probe feed, exactly that feed."""
    from trtforge.serve.protocol import probe_request

    signature = ModelSignature(
        (TensorMeta("x", "FP32", (2, 3, 4)), TensorMeta("shape", "INT64", (2,))),
        (TensorMeta("y", "FP32", (-1, -1)),),
        (
            {
                "shape": {
                    "min": [2],
                    "opt": [2],
                    "max": [2],
                    "min_values": [-1, 4],
                    "opt_values": [-1, 6],
                    "max_values": [-1, 12],
                }
            },
        ),
    )

    def decoded(body: bytes, length: int) -> dict[str, np.ndarray]:
        return parse_infer_request(body, length, signature).inputs

    sent = decoded(*probe_request(signature))
    assert sent["shape"].tolist() == [-1, 4] and sent["x"].shape == (2, 3, 4)
    feed = {"x": np.ones((2, 3, 4), np.float32), "shape": np.array([-1, 6], np.int64)}
    sent = decoded(*probe_request(signature, feed))
    assert sent["shape"].tolist() == [-1, 6] and sent["x"].tolist() == feed["x"].tolist()


def test_a_shape_tensor_needs_values_before_the_port_opens(tmp_path: Path) -> None:
    """An ONNX Reshape whose shape is a graph input and whose values the graph does not tell (it
    feeds a MatMul): exit 2 before the port opens, with the ``--warmup-shape`` to pass (before: the
    server listened, then no context warmed on random values, exit 5); given values are checked
    against the Reshape's data; values the graph tells need nothing."""
    from test_pool import reshape_net

    told = onnx_plan(reshape_net(tmp_path / "st3.onnx"), "st3")
    check_warmup_shapes([], [told])
    plan = onnx_plan(reshape_net(tmp_path / "st4.onnx", then="MatMul"), "st4")
    with pytest.raises(InvalidInputError) as caught:
        check_warmup_shapes([], [plan])
    assert str(caught.value).startswith("model 'st4' cannot be warmed or probed: input 'shape' is a shape tensor")
    assert "pass the values your requests use: --warmup-shape 'st4:x=1x12,shape=[v1,v2,v3]'" in str(caught.value)
    check_warmup_shapes(["st4:x=2x12,shape=[2,3,4]"], [plan])
    check_warmup_shapes(["shape=[1,3,4]"], [plan])  # x at its default, 1x12
    assert model_warmup_sets(plan, [parse_warmup_shape("shape=[1,3,4]", ["st4"])]) == [
        WarmupSet({"x": (1, 12)}, {"shape": (1, 3, 4)})
    ]
    cases = {
        "st4:x=2x12,shape=[5,3,4]": "values [5, 3, 4] of 'shape' cannot reshape 'x' of shape 2x12 (24 values)",
        "st4:shape=[2,12]": "input 'shape' takes 3 values, got 2",
        "st4:x=[1,2]": "values [1, 2] given for input 'x' (float32, rank 2): values are for shape tensors",
        "st4:x=2x12": "input 'shape' is a shape tensor",
    }
    for text, expected in cases.items():
        refusal = _warmup_refusal(text, plan)
        assert refusal.startswith("--warmup-shape for model 'st4': ") and expected in refusal, refusal


def test_a_model_with_a_string_output_is_served_its_strings_as_bytes(tmp_path: Path) -> None:
    """A string output (an sklearn classifier's labels) was served before the datatype check: as
    JSON its strings, in binary numpy's pointers. It is served still, as KServe's BYTES: JSON
    strings, or binary elements each after its uint32 length, as tritonclient reads them."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    from tritonclient.utils import deserialize_bytes_tensor

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.STRING)],
        "labels",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, [2])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, tmp_path / "labels.onnx")
    plans, _ = resolve_artifacts([str(tmp_path / "labels.onnx")], LoadPolicy(), PullOptions(), print)
    assert [plan.name for plan in plans] == ["labels"]
    # the model's metadata says what its responses carry (it said OBJECT, numpy's name)
    assert [meta.datatype for meta in plans[0].signature.outputs] == ["BYTES"]
    assert [tensor["data_type"] for tensor in plans[0].config()["output"]] == ["TYPE_STRING"]  # Triton's name
    labels = {"y": np.array(["cat", "dög"], dtype=object)}
    for binary in (False, True):
        request = InferRequest(None, {}, (RequestedOutput("y", binary),), False)
        body, length = encode_infer_response("labels", "1", request, labels)
        header = json.loads(body if length is None else body[:length])
        assert header["outputs"][0]["datatype"] == "BYTES"
        if binary:
            values = deserialize_bytes_tensor(body[length:])
            assert [value.decode() for value in values] == ["cat", "dög"]
        else:
            assert header["outputs"][0]["data"] == ["cat", "dög"]
