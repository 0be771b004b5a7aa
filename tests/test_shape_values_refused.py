"""Shape-tensor values TensorRT-RTX cannot build with are the spec's mistake: exit 2 naming the
spec line, the input and the values, where the failing layer reads nothing else the spec sets.
Real TensorRT-RTX builds (on the CPU) of small ONNX graphs whose shapes come from graph inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clitools import cli
from onnx import TensorProto, helper
from test_shape_inputs import _model, _spec, reshape_model, topk_model

from trtforge.backends.messages import layer_reason, names_layer, refused_point
from trtforge.spec import ShapeRange, refused_values


def reshape_twice(path: Path) -> Path:
    """x [2, 3, 4] reshaped to ``s1`` [2], then to ``s2`` [3]: the second layer reads both."""
    return _model(
        path,
        [helper.make_node("Reshape", ["x", "s1"], ["t"]), helper.make_node("Reshape", ["t", "s2"], ["y"])],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
            helper.make_tensor_value_info("s1", TensorProto.INT64, [2]),
            helper.make_tensor_value_info("s2", TensorProto.INT64, [3]),
        ],
        [TensorProto.FLOAT, ["a", "b", "c"]],
    )


def reshape_dynamic(path: Path) -> Path:
    """x [N, 12] reshaped to ``shape`` [2]: the reshape reads a profile's shapes and values."""
    return _model(
        path,
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [TensorProto.FLOAT, ["a", "b"]],
    )


def build(tmp_path: Path, make, profiles: str) -> tuple[int, str, Path, Path]:  # type: ignore[no-untyped-def]
    make(tmp_path / "m.onnx")
    spec = _spec(tmp_path, tmp_path / "m.onnx", profiles)
    out = tmp_path / "out"
    code, stdout, stderr = cli("build", spec, "--out", out, "--json")
    assert "Traceback" not in stderr, stderr
    assert json.loads(stdout)["results"][0]["exit_code"] == code
    return code, stderr, spec, out


def refusal(code: int, stderr: str, out: Path) -> str:
    """The one error line of an exit 2, with nothing written."""
    lines = [line for line in stderr.splitlines() if "error: " in line]
    assert code == 2 and len(lines) == 1, stderr
    assert "Error Code" not in lines[0] and "could not build it" not in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir())
    return lines[0]


@pytest.mark.parametrize(
    ("make", "profiles", "expected"),
    [
        (reshape_model, "  - shape: {value: [5, 7]}\n", ["profile 0 'shape' value [5, 7]", "reshape changes volume"]),
        (reshape_model, "  - shape: {value: [-1, -1]}\n", ["'shape' value [-1, -1]", "more than one -1"]),
        (topk_model, "  - k: {value: [6]}\n", ["profile 0 'k' value [6]", "smaller than K (6)"]),
    ],
    ids=["reshape-volume", "reshape-two-wildcards", "topk-k-over-axis"],
)
def test_refused_values_are_exit_2_naming_the_spec_line_input_and_values(
    tmp_path: Path, make, profiles: str, expected: list[str]
) -> None:
    """Before: exit 3, "could not build it: ... Error Code 4: API Usage Error (IShuffleLayer ...)"."""
    code, stderr, spec, out = build(tmp_path, make, profiles)
    line = refusal(code, stderr, out)
    assert f"{spec}:5:" in line  # the line of the input's entry, not the spec's model line
    assert all(part in line for part in expected), line
    assert "change the values of" in line


def test_the_profile_and_point_tensorrt_names_are_the_ones_reported(tmp_path: Path) -> None:
    profiles = "  - shape: {value: [4, 6]}\n  - shape: {values: {min: [-1, 4], opt: [-1, 5], max: [-1, 12]}}\n"
    code, stderr, spec, out = build(tmp_path, reshape_model, profiles)
    line = refusal(code, stderr, out)
    assert f"{spec}:6:" in line and "profile 1 'shape' opt values [-1, 5]" in line, line


def test_only_the_values_the_failing_layer_reads_are_named(tmp_path: Path) -> None:
    code, stderr, _, out = build(tmp_path, reshape_twice, "  - s1: {value: [5, 4]}\n    s2: {value: [2, 3, 4]}\n")
    line = refusal(code, stderr, out)
    assert "'s1' value [5, 4]" in line and "'s2'" not in line, line


def test_a_layer_that_also_reads_a_dynamic_input_stays_a_build_failure(tmp_path: Path) -> None:
    """x's shapes could as well be what is wrong: trtforge does not guess (exit 3, TensorRT's text)."""
    profiles = "  - x: {min: [1, 12], opt: [2, 12], max: [4, 12]}\n    shape: {value: [-1, 5]}\n"
    code, stderr, _, _ = build(tmp_path, reshape_dynamic, profiles)
    assert code == 3 and "could not build it" in stderr and "-1 has no solution" in stderr, stderr


def test_good_values_still_build(tmp_path: Path) -> None:
    code, stderr, _, _ = build(
        tmp_path, reshape_model, "  - shape: {values: {min: [-1, 4], opt: [-1, 6], max: [-1, 12]}}\n"
    )
    assert code == 0, stderr


#: TensorRT-RTX 1.7's texts for the builds above, as the logger received them
_VOLUME = (
    "IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error (IShuffleLayer my reshape: reshape changes "
    "volume. Reshaping [2,3,4] to [5,7]. In operator() at /_src/optimizer/common/shape/shapeContext.cpp:4633)"
)
_TOPK = (
    "IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error (ITopKLayer node_of_y: node_of_y: length of "
    "reduction axis (5) is smaller than K (6) In processCheck at /_src/optimizer/shapeof/graphShapeAnalyzer.cpp:1066)"
)
_POINT = (
    "IBuilder::buildSerializedNetwork: Error Code 4: Internal Error (kOPT values for profile 1 violate shape "
    "constraints: IShuffleLayer node_of_y: reshaping failed for tensor: x Reshape dimension of -1 has no solution. "
    "In executeReshape at /_src/runtime/core/shapeMachine.cpp:340)"
)


def test_tensorrt_s_text_is_read_for_the_layer_its_reason_and_the_profile_point() -> None:
    assert names_layer(_VOLUME, "my reshape") and not names_layer(_VOLUME, "my")
    assert layer_reason(_VOLUME, "my reshape") == "reshape changes volume. Reshaping [2,3,4] to [5,7]"
    assert layer_reason(_TOPK, "node_of_y") == "length of reduction axis (5) is smaller than K (6)"
    assert layer_reason(_POINT, "node_of_y") == "reshaping failed for tensor: x Reshape dimension of -1 has no solution"
    assert refused_point(_POINT) == (1, "opt") and refused_point(_VOLUME) is None


def test_values_of_several_profiles_are_all_named_when_tensorrt_names_no_profile() -> None:
    profiles = [
        {"shape": ShapeRange.model_validate({"value": [4, 6]})},
        {"shape": ShapeRange.model_validate({"values": {"min": [-1, 4], "opt": [-1, 6], "max": [-1, 12]}})},
    ]
    error = refused_values(profiles, ["shape"], None, "tensorrt-rtx 1.7", "reshape: why")
    assert str(error) == (
        "spec: tensorrt-rtx 1.7 cannot build with the shape-tensor values profile 0 'shape' value [4, 6]; "
        "profile 1 'shape' values min [-1, 4], opt [-1, 6], max [-1, 12] (one of these profiles': TensorRT does "
        "not say which) (layer reshape: why); change the values of 'shape' in the spec to ones the model takes"
    )
    assert "profile 1 'shape' max values [-1, 12] (layer" in str(
        refused_values(profiles, ["shape"], None, "b", "r", (1, "max"))
    )
