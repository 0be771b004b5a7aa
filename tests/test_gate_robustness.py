"""The accuracy gate fails an engine only for accuracy (issue 13, items 2 and 3).

Each cause has a small generated one-operator model, as the ONNX node tests are, and (where it is
about building) a real TensorRT-RTX build with the gate on, through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from clitools import cli
from models import need_rtx, save
from onnx import TensorProto, helper, numpy_helper

from trtforge.accuracy import metrics, tolerances
from trtforge.accuracy.gate import GateCandidate, GateFailed, out_of_domain, raise_for_failures, run_gate
from trtforge.accuracy.report import OutputResult
from trtforge.data import plan_data
from trtforge.errors import InvalidInputError
from trtforge.manifest import read_manifest
from trtforge.model import describe, inspect_model
from trtforge.runners.onnxruntime import OnnxrtRunner
from trtforge.shapes import random_array
from trtforge.spec import Tolerance, load_spec

tensor = helper.make_tensor_value_info
CANNOT_RUN = "the engine built, but the accuracy gate could not run"


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: tuple[onnx.TensorProto, ...] = (),
    opset: int = 17,
) -> onnx.ModelProto:
    model = helper.make_model(
        helper.make_graph(nodes, "case", inputs, outputs, list(initializers)),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    model.ir_version = 8 if opset <= 17 else 11
    return model


def _build(tmp_path: Path, model: onnx.ModelProto, extra: str = "", precision: str = "fp32") -> tuple[int, str, Path]:
    """``trtforge build`` of ``model`` with the gate on (random inputs unless ``extra`` says). At
    fp32 on a host without a GPU the candidate is the reference itself and nothing runs (issue 16):
    tests of what the gate does when it runs build at fp16, where reference and candidate run."""
    need_rtx()
    tmp_path.mkdir(parents=True, exist_ok=True)
    save(model, tmp_path / "model.onnx")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: case\nmodel: {tmp_path / 'model.onnx'}\nprecision: {precision}\ntargets: ['8.6']\n{extra}")
    out = tmp_path / "out"
    code, _, stderr = cli("build", spec, "--out", out)
    return code, stderr, out


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _published(out: Path) -> list[str]:
    return sorted(path.name for path in out.iterdir()) if out.is_dir() else []


# ---------------------------------------------------------------- 2a: inputs valid for the model


def _valid_range(model: onnx.ModelProto, name: str) -> tuple[int, int] | None:
    info = describe(model, Path("model.onnx"))
    found = info.input(name)
    assert found is not None
    return found.valid_range


@pytest.mark.parametrize(
    ("op", "data", "indices", "attrs", "expected"),
    [
        ("Gather", [5, 3], [4], {"axis": 0}, (0, 5)),
        ("Gather", [5, 3], [4], {"axis": -1}, (0, 3)),
        ("GatherElements", [3, 2], [3, 4], {"axis": 1}, (0, 2)),
        ("ScatterElements", [6, 2], [1, 2], {}, (0, 6)),
        ("GatherND", [4, 7, 2], [3, 2], {}, (0, 4)),  # indexes axes 0 and 1: the smaller bounds both
        ("NegativeLogLikelihoodLoss", [3, 5], [3], {}, (0, 5)),
        ("SoftmaxCrossEntropyLoss", [3, 4], [3], {}, (0, 4)),
        ("ReverseSequence", [6, 2], [2], {"time_axis": 0, "batch_axis": 1}, (1, 7)),  # lengths 1..T
    ],
)
def test_index_inputs_take_values_valid_for_the_axis_they_index(
    op: str, data: list[int], indices: list[int], attrs: dict[str, int], expected: tuple[int, int]
) -> None:
    operands = ["data", "indices"] + (["updates"] if op == "ScatterElements" else [])
    inputs = [tensor("data", TensorProto.FLOAT, data), tensor("indices", TensorProto.INT64, indices)]
    if op == "ScatterElements":
        inputs.append(tensor("updates", TensorProto.FLOAT, indices))
    model = _model([helper.make_node(op, operands, ["y"], **attrs)], inputs, [tensor("y", TensorProto.FLOAT, None)])
    assert _valid_range(model, "indices") == expected
    low, high = expected
    values = random_array(describe(model, Path("m.onnx")).inputs[1], (1000,), np.random.default_rng(0))
    assert values.min() == low and values.max() == high - 1


def test_an_index_is_followed_through_value_preserving_ops() -> None:
    """The expanded NLL loss unsqueezes its target before GatherElements; every use must agree."""
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [
        helper.make_node("Unsqueeze", ["target", "axes"], ["t1"]),
        helper.make_node("GatherElements", ["input", "t1"], ["picked"], axis=1),
        helper.make_node("Gather", ["weight", "target"], ["w"]),
    ]
    inputs = [
        tensor("input", TensorProto.FLOAT, [3, 9]),
        tensor("target", TensorProto.INT64, [3]),
        tensor("weight", TensorProto.FLOAT, [4]),
    ]
    outputs = [tensor("picked", TensorProto.FLOAT, [3, 1]), tensor("w", TensorProto.FLOAT, [3])]
    assert _valid_range(_model(nodes, inputs, outputs, (axes,)), "target") == (0, 4)


def test_gather_with_an_index_input_passes_the_gate(tmp_path: Path) -> None:
    model = _model(
        [helper.make_node("Gather", ["data", "indices"], ["y"], axis=0)],
        [tensor("data", TensorProto.FLOAT, [3, 4]), tensor("indices", TensorProto.INT64, [16])],
        [tensor("y", TensorProto.FLOAT, [16, 4])],
    )
    code, stderr, out = _build(tmp_path, model)
    assert code == 0, stderr
    assert len(list(out.glob("*.engine"))) == 1


def test_integer_divisor_is_never_zero(tmp_path: Path) -> None:
    """onnxruntime fails on an integer division by zero (it was exit 1): divisors start at 1."""
    model = _model(
        [helper.make_node("Div", ["a", "b"], ["y"])],
        [tensor("a", TensorProto.INT32, [4, 8]), tensor("b", TensorProto.INT32, [4, 8])],
        [tensor("y", TensorProto.INT32, [4, 8])],
    )
    assert _valid_range(model, "b") == (1, 8) and _valid_range(model, "a") is None
    code, stderr, _ = _build(tmp_path, model)
    assert code == 0, stderr


@pytest.mark.parametrize("op", ["Gather", "GatherElements"])  # onnxruntime: INVALID_ARGUMENT, FAIL
def test_reference_failing_on_random_inputs_is_exit_2_whatever_onnxruntime_says(tmp_path: Path, op: str) -> None:
    """The data axis is dynamic, so no range is known: onnxruntime refuses the random indices.
    The two ops fail with different onnxruntime status codes (exit 2 and exit 1 before)."""
    model = _model(
        [helper.make_node(op, ["data", "indices"], ["y"], axis=0)],
        [tensor("data", TensorProto.FLOAT, ["n", 2]), tensor("indices", TensorProto.INT64, [64, 2])],
        [tensor("y", TensorProto.FLOAT, [64, 2, 2] if op == "Gather" else [64, 2])],
    )
    profile = "profiles:\n  - data: {min: [1, 2], opt: [2, 2], max: [2, 2]}\n"
    code, stderr, out = _build(tmp_path, model, profile, precision="fp16")
    line = _one_line_error(stderr)
    assert code == 2, stderr
    assert f"{CANNOT_RUN} on random inputs for this model (onnxruntime fails on the reference" in line
    assert line.endswith("give accuracy.data, or accuracy.enabled: false")
    assert str(tmp_path / "spec.yaml") in line
    assert _published(out) == []


def test_reference_all_nan_on_random_inputs_is_exit_2(tmp_path: Path) -> None:
    """acosh of [0, 1) is NaN everywhere: random inputs lie outside the model's domain."""
    model = _model(
        [helper.make_node("Acosh", ["x"], ["y"])], [tensor("x", TensorProto.FLOAT, [3, 4])], [tensor("y", 1, [3, 4])]
    )
    code, stderr, out = _build(tmp_path, model, precision="fp16")
    line = _one_line_error(stderr)
    assert code == 2, stderr
    assert f"{CANNOT_RUN} on random inputs for this model (the reference's output 'y' is all NaN/Inf)" in line
    assert _published(out) == []


def test_reference_all_nan_on_the_users_data_is_exit_2(tmp_path: Path) -> None:
    """The same on accuracy.data: no value is left to compare, and a check on none would pass."""
    model = _model(
        [helper.make_node("Acosh", ["x"], ["y"])], [tensor("x", TensorProto.FLOAT, [3, 4])], [tensor("y", 1, [3, 4])]
    )
    data = tmp_path / "x.npy"
    np.save(data, np.full((3, 4), 0.5, np.float32))
    code, stderr, out = _build(tmp_path, model, f"accuracy:\n  data: {data}\n", precision="fp16")
    line = _one_line_error(stderr)
    assert code == 2, stderr
    assert f"{CANNOT_RUN} on accuracy.data for this model (the reference's output 'y' is all NaN/Inf)" in line
    assert _published(out) == []


def test_an_output_with_no_value_is_not_measured(tmp_path: Path) -> None:
    """A [N, 0] output compares nothing: no check passes on it; a model of only such outputs is
    "not measured", never "passed"."""
    starts, ends, axes = (
        numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("s", 0), ("e", 0), ("a", 1))
    )
    nodes = [helper.make_node("Slice", ["x", "s", "e", "a"], ["empty"]), helper.make_node("Relu", ["x"], ["y"])]
    x = tensor("x", TensorProto.FLOAT, [4, 8])
    both = _model(nodes, [x], [tensor("y", 1, [4, 8]), tensor("empty", 1, [4, 0])], (starts, ends, axes))
    code, stderr, out = _build(tmp_path / "both", both, precision="fp16")
    assert code == 0, stderr
    (report_file,) = out.glob("*.accuracy.json")
    outputs = {o["name"]: o for o in json.loads(report_file.read_text())["outputs"]}
    assert outputs["empty"]["metrics"] == {} and outputs["empty"]["checks"] == []
    assert outputs["y"]["checks"] and all(check["passed"] for check in outputs["y"]["checks"])
    only = _model(nodes[:1], [x], [tensor("empty", 1, [4, 0])], (starts, ends, axes))
    code, stderr, out = _build(tmp_path / "only", only, precision="fp16")
    assert code == 0 and ": not measured" in stderr and ": passed" not in stderr, stderr
    (engine,) = out.glob("*.engine")
    assert read_manifest(engine).accuracy["measured"] is False  # type: ignore[index]


# ---------------------------------------------------------------- 2b: NaN/Inf patterns


def test_inf_in_the_same_positions_of_both_is_agreement(tmp_path: Path) -> None:
    """x / relu(x - 0.5): +Inf wherever x < 0.5, finite elsewhere; the fp16 candidate agrees."""
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    nodes = [
        helper.make_node("Sub", ["x", "half"], ["d"]),
        helper.make_node("Relu", ["d"], ["r"]),
        helper.make_node("Div", ["x", "r"], ["y"]),
    ]
    model = _model(nodes, [tensor("x", TensorProto.FLOAT, [4, 8])], [tensor("y", TensorProto.FLOAT, [4, 8])], (half,))
    data = tmp_path / "x.npy"  # away from 0.5, so that no FP16 quotient overflows where FP32's is finite
    values = np.random.default_rng(0).random((4, 8))
    np.save(data, np.where(values < 0.5, values, 0.6 + values / 4).astype(np.float32))
    code, stderr, out = _build(tmp_path, model, f"accuracy:\n  data: {data}\n", precision="fp16")
    assert code == 0, stderr
    (report_file,) = out.glob("*.accuracy.json")
    (output,) = json.loads(report_file.read_text())["outputs"]
    assert 0 < output["metrics"]["nonfinite"] < 32 and output["metrics"]["nonfinite_mismatch"] == 0
    assert output["metrics"]["cosine"] > 0.999
    pattern = [check for check in output["checks"] if check["limit_key"] == tolerances.PATTERN_KEY]
    assert len(pattern) == 1 and pattern[0]["passed"] is True


def test_nan_inf_pattern_mismatch_fails_with_a_clear_message() -> None:
    reference = np.array([1.0, np.inf, np.nan, 2.0, -np.inf], np.float32)
    same = reference.copy()
    flipped = np.array([1.0, -np.inf, np.nan, 2.0, -np.inf], np.float32)  # +Inf became -Inf
    lost = np.array([1.0, np.inf, 3.0, 2.0, -np.inf], np.float32)  # NaN became a number
    limits = Tolerance(cosine_min=0.99999)

    agree = metrics.compare(reference, same)
    assert (agree.max_abs, agree.nonfinite, agree.nonfinite_mismatch) == (0.0, 3, 0)
    assert agree.cosine == pytest.approx(1.0)
    assert all(check.passed for check in tolerances.evaluate("y", agree, limits))

    for candidate in (flipped, lost):
        measured = metrics.compare(reference, candidate)
        assert measured.max_abs == 0.0 and measured.nonfinite_mismatch == 1  # finite values still agree
        failed = [check for check in tolerances.evaluate("y", measured, limits) if not check.passed]
        assert [check.limit_key for check in failed] == [tolerances.PATTERN_KEY]
        assert failed[0].message == (
            "output 'y': NaN/Inf pattern differs from the reference's at 1 positions "
            "(NaN, +Inf and -Inf must be where the reference has them)"
        )


def _log_plus_overflow() -> onnx.ModelProto:
    """y = log(x - 0.5) + x * 300 * 300 / 90000: NaN (and -Inf) below 0.5 in FP32 and FP16 alike,
    and in FP16 +Inf above 65504 / 90000, where FP32 is finite."""
    constants = [
        numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("h", 0.5), ("k", 300.0), ("b", 1 / 90000))
    ]
    nodes = [
        helper.make_node("Sub", ["x", "h"], ["s"]),
        helper.make_node("Log", ["s"], ["a"]),
        helper.make_node("Mul", ["x", "k"], ["m1"]),
        helper.make_node("Mul", ["m1", "k"], ["m2"]),
        helper.make_node("Mul", ["m2", "b"], ["bb"]),
        helper.make_node("Add", ["a", "bb"], ["y"]),
    ]
    return _model(nodes, [tensor("x", TensorProto.FLOAT, [4, 16])], [tensor("y", 1, [4, 16])], tuple(constants))


def test_an_overflow_where_the_reference_is_finite_fails_the_gate_beside_its_nan(tmp_path: Path) -> None:
    """A reference with NaN on random inputs does not make every difference "out of domain": the
    candidate's +Inf where the reference is finite is an FP16 overflow, exit 4 (was exit 2)."""
    code, stderr, out = _build(tmp_path, _log_plus_overflow(), "fp16:\n  keep_fp32: []\n", precision="fp16")
    assert code == 4, stderr
    assert "NaN/Inf pattern differs from the reference's" in _one_line_error(stderr)
    (report_file,) = out.glob("*.rejected.accuracy.json")
    (output,) = json.loads(report_file.read_text())["outputs"]
    assert output["metrics"]["nonfinite"] > 0 and output["metrics"]["nonfinite_added"] > 0


def test_a_candidate_differing_only_where_the_reference_is_not_finite_is_out_of_domain() -> None:
    reference = np.array([[np.nan, 1.0, 2.0]], np.float32)
    moved = metrics.compare(reference, np.array([[0.5, 1.0, 2.0]], np.float32))  # differs where the reference is NaN
    added = metrics.compare(reference, np.array([[np.nan, np.inf, 2.0]], np.float32))  # +Inf where it is finite
    assert (moved.nonfinite_mismatch, moved.nonfinite_added) == (1, 0) and (
        added.nonfinite_mismatch,
        added.nonfinite_added,
    ) == (1, 1)

    def result(measured: metrics.OutputMetrics) -> OutputResult:
        return OutputResult(name="y", classifier=False, metrics=measured.as_dict(), tolerance={}, checks=[])

    assert out_of_domain([result(moved)], {"y": [reference]}, "random") == (
        "the reference's output 'y' has NaN/Inf, and the candidate's differ there"
    )
    assert out_of_domain([result(added)], {"y": [reference]}, "random") is None  # the pattern check fails it
    assert out_of_domain([result(moved)], {"y": [reference]}, "files") is None


def _rows(rows: int) -> onnx.ModelProto:
    """[4, 16] in, its first ``rows`` rows out (declared [4, 16] whatever they are)."""
    ends = numpy_helper.from_array(np.array([rows], np.int64), "e")
    starts, axes = (numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("s", 0), ("a", 0)))
    nodes = [helper.make_node("Slice", ["x", "s", "e", "a"], ["y"])]
    return _model(nodes, [tensor("x", 1, [4, 16])], [tensor("y", 1, [4, 16])], (starts, ends, axes))


def test_a_candidate_output_of_another_shape_is_a_failed_check_of_the_report(tmp_path: Path) -> None:
    """The report says what is wrong (and a build keeps it as the rejected report, exit 4); it was
    an AccuracyError raised past the report, which no file recorded."""
    reference, candidate = save(_rows(4), tmp_path / "ref.onnx"), save(_rows(2), tmp_path / "cand.onnx")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(f"name: rows\nmodel: {reference}\nprecision: fp16\n")
    spec = load_spec(spec_path)
    report = run_gate(
        spec,
        inspect_model(reference),
        GateCandidate("simulated", "test", onnx_path=candidate),
        stem="rows",
        engine_file=None,
    )
    assert not report.passed
    assert report.failures == [
        "output 'y': candidate shape [2, 16] differs from the reference's [4, 16] (static): not compared "
        "(batches of another shape: 1)"
    ]
    (output,) = report.outputs
    assert output.metrics == {} and [check.limit_key for check in output.checks] == [tolerances.SHAPE_KEY]
    with pytest.raises(GateFailed) as failed:
        raise_for_failures(report, tmp_path / "rows.rejected.accuracy.json")
    assert failed.value.exit_code == 4


def test_finite_outputs_get_no_pattern_check() -> None:
    measured = metrics.compare(np.ones(4, np.float32), np.ones(4, np.float32))
    assert measured.nonfinite is None and measured.nonfinite_mismatch is None
    assert tolerances.PATTERN_KEY not in {c.limit_key for c in tolerances.evaluate("y", measured, Tolerance())}


# ---------------------------------------------------------------- 2c: bfloat16


def _bfloat16_model() -> onnx.ModelProto:
    """bfloat16 in and out; the arithmetic in float32 (onnxruntime's CPU Mul has no bfloat16)."""
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xf", "xf"], ["yf"]),
        helper.make_node("Cast", ["yf"], ["y"], to=TensorProto.BFLOAT16),
    ]
    return _model(nodes, [tensor("x", TensorProto.BFLOAT16, [2, 8])], [tensor("y", TensorProto.BFLOAT16, [2, 8])])


def test_bfloat16_model_passes_the_gate_on_random_inputs_and_on_float_files(tmp_path: Path) -> None:
    code, stderr, out = _build(tmp_path / "random", _bfloat16_model(), precision="fp16")
    assert code == 0, stderr
    (report_file,) = out.glob("*.accuracy.json")
    assert json.loads(report_file.read_text())["passed"] is True

    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).normal(size=(2, 8)))  # float64: cast to bfloat16 on load
    code, stderr, out = _build(tmp_path / "files", _bfloat16_model(), f"accuracy:\n  data: {data}\n", precision="fp16")
    assert code == 0, stderr
    (report_file,) = out.glob("*.accuracy.json")
    assert json.loads(report_file.read_text())["data"]["samples"] == 2


def test_bfloat16_pieces_random_runner_metrics() -> None:
    info = describe(_bfloat16_model(), Path("m.onnx"))
    x = random_array(info.inputs[0], (2, 8), np.random.default_rng(0))
    assert x.dtype == ml_dtypes.bfloat16
    with OnnxrtRunner(_bfloat16_model().SerializeToString()) as runner:
        y = runner.infer({"x": x})["y"]
    assert y.dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(y.astype(np.float32), (x.astype(np.float32) ** 2), rtol=1e-2)
    assert metrics.compare(y, y).cosine == pytest.approx(1.0)
    assert metrics.is_classifier(y)  # a float [N, C] output, bfloat16 included


def test_bfloat16_advice_can_be_followed(tmp_path: Path) -> None:
    """Integer data for a bfloat16 input: the advice names a type numpy can save (not np.bfloat16)."""
    info = describe(_bfloat16_model(), Path("m.onnx"))
    data = tmp_path / "x.npy"
    np.save(data, np.ones((2, 8), np.int64))
    with pytest.raises(InvalidInputError, match=r"save the data as float32 \(e\.g\. array\.astype\(np\.float32\)\)"):
        plan_data([data], info.inputs, None)
    np.save(data, np.ones((2, 8), np.int64).astype(np.float32))
    assert plan_data([data], info.inputs, None).samples == 2


# ---------------------------------------------------------------- 2d: onnxruntime cannot load the model


def _swish() -> onnx.ModelProto:
    """Swish (opset 24+): TensorRT-RTX builds it, this onnxruntime has no kernel for it."""
    return _model(
        [helper.make_node("Swish", ["x"], ["y"])],
        [tensor("x", TensorProto.FLOAT, [2, 3])],
        [tensor("y", TensorProto.FLOAT, [2, 3])],
        opset=25,
    )


def test_model_onnxruntime_cannot_load_builds_but_the_gate_is_not_runnable(tmp_path: Path) -> None:
    code, stderr, out = _build(tmp_path, _swish(), precision="fp16")
    line = _one_line_error(stderr)
    assert code == 2, stderr
    assert f"{CANNOT_RUN} for this model (onnxruntime cannot load the reference: NOT_IMPLEMENTED" in line
    assert line.endswith("set accuracy.enabled: false to build it without the gate")
    assert _published(out) == []  # nothing under a final name, no temporary left behind

    code, stderr, out = _build(tmp_path, _swish(), "accuracy: {enabled: false}\n", precision="fp16")
    assert code == 0, stderr
    assert len(list(out.glob("*.engine"))) == 1


# ---------------------------------------------------------------- 3: valid models without a traceback


@pytest.mark.parametrize("kind", ["sequence", "optional"])
def test_sequence_or_optional_input_is_one_clear_line(tmp_path: Path, kind: str) -> None:
    element = helper.make_tensor_type_proto(TensorProto.FLOAT, [2])
    if kind == "sequence":
        value = helper.make_value_info("s", helper.make_sequence_type_proto(element))
        node = helper.make_node("SequenceAt", ["s", "i"], ["y"])
        inputs = [value, tensor("i", TensorProto.INT64, [])]
    else:
        value = helper.make_value_info("s", helper.make_optional_type_proto(element))
        node = helper.make_node("OptionalGetElement", ["s"], ["y"])
        inputs = [value]
    model = _model([node], inputs, [tensor("y", TensorProto.FLOAT, [2])], opset=18)
    code, stderr, _ = _build(tmp_path, model)
    line = _one_line_error(stderr)
    assert code == 2, stderr
    article = "a" if kind == "sequence" else "an"
    assert f"input 's' is {article} {kind}; TensorRT takes tensors only" in line


def test_an_input_without_a_shape_is_one_clear_line(tmp_path: Path) -> None:
    """No shape field at all (a scalar's shape is there, with no dims): TensorRT built such an input
    as a scalar, an engine unlike the model, and said so nowhere (exit 0). onnx's checker refuses
    the model too. An output without a shape builds: TensorRT infers it (the tests here make many)."""
    x = tensor("x", TensorProto.FLOAT, [2, 3])
    x.type.tensor_type.ClearField("shape")
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [x], [tensor("y", TensorProto.FLOAT, None)])
    with pytest.raises(onnx.checker.ValidationError, match="'shape' of 'type' is required"):
        onnx.checker.check_model(model)
    code, stderr, out = _build(tmp_path, model)
    assert code == 2, stderr
    assert "input 'x' declares no shape, not even its rank, and TensorRT would take it as a scalar" in stderr
    assert len(stderr.strip().splitlines()) == 1 and _published(out) == []


def test_scalar_input_builds_and_passes_the_gate(tmp_path: Path) -> None:
    one = numpy_helper.from_array(np.array(1.5, np.float32), "one")
    model = _model(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        [tensor("x", TensorProto.FLOAT, [])],
        [tensor("y", TensorProto.FLOAT, [])],
        (one,),
    )
    code, stderr, out = _build(tmp_path, model, precision="fp16")
    assert code == 0, stderr
    (report_file,) = out.glob("*.accuracy.json")
    assert json.loads(report_file.read_text())["data"]["samples"] == 1


def test_model_without_inputs_builds_and_passes_the_gate(tmp_path: Path) -> None:
    value = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3))
    model = _model([helper.make_node("Constant", [], ["y"], value=value)], [], [tensor("y", TensorProto.FLOAT, [2, 3])])
    code, stderr, out = _build(tmp_path, model)
    assert code == 0, stderr
    (report_file,) = out.glob("*.accuracy.json")
    assert json.loads(report_file.read_text())["passed"] is True


def test_a_profile_whose_min_batch_exceeds_the_gates_cap_is_still_checked(tmp_path: Path) -> None:
    """min [128, 16], max [256, 16]: batches of 64 (the cap) would all be refused by the profile,
    leaving "no accuracy sample fits" (exit 2); the gate batches at the profile's min instead."""
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", 1, ["N", 16])], [tensor("y", 1, ["N", 16])])
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).random((256, 16), dtype=np.float32))
    profile = "profiles:\n  - x: {min: [128, 16], opt: [128, 16], max: [256, 16]}\n"
    code, stderr, out = _build(tmp_path, model, f"{profile}accuracy:\n  data: {data}\n", precision="fp16")
    assert code == 0, stderr
    (report_file,) = out.glob("*.accuracy.json")
    assert json.loads(report_file.read_text())["data"]["samples"] == 256


def test_class_indices_are_judged_by_equality_not_cosine(tmp_path: Path) -> None:
    """ArgMax over 1000 logits in near-tied pairs (classes 2k and 2k + 1): FP16 rounding flips some
    indices to their neighbour. Their cosine stays near 1 (the indices barely move); the share of
    equal values does not."""
    rng = np.random.default_rng(0)
    pairs = np.repeat(rng.normal(size=(16, 500)), 2, axis=1)
    weights = (pairs + 1e-4 * rng.normal(size=(16, 1000))).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["logits"]),
        helper.make_node("ArgMax", ["logits"], ["cls"], axis=1, keepdims=0),
    ]
    w = numpy_helper.from_array(weights, "W")
    model = _model(nodes, [tensor("x", 1, ["N", 16])], [tensor("cls", TensorProto.INT64, ["N"])], (w,))
    profile = "profiles:\n  - x: {min: [1, 16], opt: [16, 16], max: [64, 16]}\n"
    code, stderr, out = _build(tmp_path, model, profile, precision="fp16")
    assert code == 4, stderr
    line = _one_line_error(stderr)
    assert "output 'cls': match" in line and "< match_min 0.99" in line
    (report_file,) = out.glob("*.rejected.accuracy.json")
    (output,) = json.loads(report_file.read_text())["outputs"]
    assert {check["limit_key"] for check in output["checks"]} == {"match_min"}
    assert output["metrics"]["cosine"] > 0.999 and output["metrics"]["match"] < 0.99  # cosine used to pass it


def test_integer_outputs_take_match_min_and_floats_do_not() -> None:
    ints = tolerances.resolve("cls", "int8", {}, classifier=False, exact=True)
    assert ints == Tolerance(match_min=0.95)
    floats = tolerances.resolve("y", "int8", {"*": Tolerance(match_min=0.5, max_abs=1.0)}, classifier=False)
    assert floats.match_min is None and floats.max_abs == 1.0 and floats.cosine_min == 0.98
    assert metrics.match_fraction(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75


def test_the_gate_batch_is_one_some_profile_accepts() -> None:
    from trtforge.accuracy.inputs import gate_batch_size
    from trtforge.model import ModelInfo, TensorDesc
    from trtforge.spec import ShapeRange

    model = ModelInfo(Path("m.onnx"), (TensorDesc("x", "float32", ("N", 16)),), ())

    def profile(low: int, high: int) -> dict[str, ShapeRange]:
        return {"x": ShapeRange(min=[low, 16], opt=[low, 16], max=[high, 16])}

    assert gate_batch_size(model, [profile(1, 8), profile(128, 256)]) == 8  # 64 fitted neither
    assert gate_batch_size(model, [profile(128, 256)]) == 128
    assert gate_batch_size(model, [profile(1, 256)]) == 64
    assert gate_batch_size(model, [profile(16, 32), profile(1, 4)]) == 32
