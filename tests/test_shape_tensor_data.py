"""Shape-tensor inputs in calibration and accuracy data: an .npz holds each shape tensor's values
once (no sample axis), which every sample of that file runs with; a file is one batch.

Before: the loader read the values' one axis as the sample axis ("inputs hold different sample
counts (x: 4, shape: 3)"), so int8 on such a model, or a gate on real data, could not run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clitools import cli
from models import need_rtx, save
from onnx import TensorProto, helper, numpy_helper

from trtforge.accuracy.inputs import accepted, feed_size
from trtforge.data import fixed_batch_size, iter_batches, plan_data, shape_tensors
from trtforge.errors import InvalidInputError
from trtforge.model import TensorDesc
from trtforge.spec import ShapeRange

SHAPED = frozenset({"shape"})
#: x first, as most models list them; the build model lists ``shape`` first (sample counts must not
#: come from the values)
ST3 = (TensorDesc("x", "float32", ("N", 12)), TensorDesc("shape", "int64", (3,)))
STATIC = (TensorDesc("x", "float32", (4, 12)), TensorDesc("shape", "int64", (3,)))
PROFILE = (
    "  - x: {min: [1, 12], opt: [4, 12], max: [8, 12]}\n"
    "    shape: {values: {min: [1, 3, 4], opt: [4, 3, 4], max: [8, 3, 4]}}\n"
)


def reshape_matmul(path: Path) -> Path:
    """shape int64[3], x float[N, 12] -> Reshape(x, shape) [N, 3, 4] -> MatMul w [4, 5] -> y [N, 3, 5]."""
    weight = np.random.default_rng(0).normal(0, 0.3, (4, 5)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
            helper.make_node("MatMul", ["r", "w"], ["y"], name="head"),
        ],
        "reshape_matmul",
        [
            helper.make_tensor_value_info("shape", TensorProto.INT64, [3]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 5])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return save(model, path)


def _npz(path: Path, samples: int, seed: int = 0, **arrays: np.ndarray) -> Path:
    x = np.random.default_rng(seed).normal(size=(samples, 12)).astype(np.float32)
    np.savez(path, **{"x": x, "shape": np.array([samples, 3, 4]), **arrays})
    return path


def _files(folder: Path, counts: tuple[int, ...] = (4, 6)) -> list[Path]:
    folder.mkdir(exist_ok=True)
    return [_npz(folder / f"c{i}.npz", n, seed=i) for i, n in enumerate(counts)]


# ---------------------------------------------------------------- the loader


def test_values_are_held_once_and_each_file_is_one_batch(tmp_path: Path) -> None:
    files = _files(tmp_path / "data", (4, 6, 3))
    plan = plan_data(files, ST3, None, shape_inputs=SHAPED)
    assert plan.samples == 13 and plan.files == tuple(files)
    batches = list(iter_batches(files, ST3, 2, shape_inputs=SHAPED))  # batch_size does not cut a file
    assert [len(b["x"]) for b in batches] == [4, 6, 3]
    assert [b["shape"].tolist() for b in batches] == [[4, 3, 4], [6, 3, 4], [3, 3, 4]]
    assert all(list(b) == ["x", "shape"] and b["shape"].dtype == np.int64 for b in batches)
    with np.load(files[1]) as archive:
        np.testing.assert_array_equal(batches[1]["x"], archive["x"])


def test_values_come_after_the_samples_so_the_first_array_counts_them(tmp_path: Path) -> None:
    """collect() and feed_size count a batch by its first array: never the values' length."""
    files = _files(tmp_path / "data", (5,))
    shape_first = (ST3[1], ST3[0])
    (batch,) = iter_batches(files, shape_first, 16, shape_inputs=SHAPED)
    assert list(batch) == ["x", "shape"] and feed_size(batch) == 5
    assert feed_size({"shape": np.array([5, 3, 4]), "x": batch["x"]}, SHAPED) == 5


def test_a_sample_file_of_one_sample_takes_values_too(tmp_path: Path) -> None:
    path = tmp_path / "one.npz"
    np.savez(path, x=np.ones(12, np.float32), shape=np.array([1, 3, 4]))
    (batch,) = iter_batches([path], ST3, 4, shape_inputs=SHAPED)
    assert batch["x"].shape == (1, 12) and batch["shape"].tolist() == [1, 3, 4]


def test_max_samples_takes_whole_files(tmp_path: Path) -> None:
    """Values may say the batch ([N, 3, 4]): a file cut short would not fit its own values."""
    files = _files(tmp_path / "data", (4, 6, 3))
    assert plan_data(files, ST3, 9, shape_inputs=SHAPED).files == tuple(files[:1])
    assert plan_data(files, ST3, 10, shape_inputs=SHAPED).samples == 10
    assert [len(b["x"]) for b in iter_batches(files, ST3, 16, 9, shape_inputs=SHAPED)] == [4]
    with pytest.raises(InvalidInputError) as caught:
        plan_data(files, ST3, 3, shape_inputs=SHAPED)
    assert str(files[0]) in str(caught.value) and "holds 4 samples, more than max_samples (3)" in str(caught.value)


def test_a_fixed_batch_cuts_files_in_batches_of_it_with_the_values(tmp_path: Path) -> None:
    """A static batch cannot change, so the values cannot depend on it: batched as usual across
    files that hold the same values, never mixing other values. Files cut one by one gave a folder
    of one-sample files no batch at all: calibration ran on 0 samples and the engine shipped."""
    assert fixed_batch_size(STATIC, SHAPED) == 4
    assert fixed_batch_size(STATIC) is None  # the shape tensor's length 3 read as a second batch
    path = tmp_path / "f.npz"
    np.savez(path, x=np.zeros((10, 12), np.float32), shape=np.array([4, 3, 4]))
    kept = list(iter_batches([path, path], STATIC, 4, drop_last=True, shape_inputs=SHAPED))
    assert [len(b["x"]) for b in kept] == [4, 4, 4, 4, 4]
    assert all(b["shape"].tolist() == [4, 3, 4] for b in kept)
    assert [len(b["x"]) for b in iter_batches([path], STATIC, 4, 9, shape_inputs=SHAPED)] == [4, 4, 1]
    singles = []
    for index in range(8):
        singles.append(tmp_path / f"one{index}.npz")
        np.savez(singles[-1], x=np.full(12, index, np.float32), shape=np.array([4, 3, 4]))
    kept = list(iter_batches(singles, STATIC, 4, drop_last=True, shape_inputs=SHAPED))
    assert [b["x"][:, 0].tolist() for b in kept] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    other = tmp_path / "other.npz"
    np.savez(other, x=np.ones((3, 12), np.float32), shape=np.array([4, 12, 1]))
    kept = list(iter_batches([*singles[:2], other, *singles[2:4]], STATIC, 4, shape_inputs=SHAPED))
    assert [(len(b["x"]), b["shape"].tolist()) for b in kept] == [(2, [4, 3, 4]), (3, [4, 12, 1]), (2, [4, 3, 4])]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.array([4, 3]), "input 'shape' is a shape tensor [3]: the file holds its values once, a 1-D array of 3"),
        (np.array([[4, 3, 4]] * 4), "got an array of shape [4, 3]"),
        (np.array([4.0, 3.0, 4.0]), "dtype float64 does not fit input 'shape' (int64)"),
    ],
    ids=["length", "per-sample", "dtype"],
)
def test_bad_values_name_the_file_and_the_input(tmp_path: Path, values: np.ndarray, expected: str) -> None:
    path = _npz(tmp_path / "bad.npz", 4, shape=values)
    with pytest.raises(InvalidInputError) as caught:
        plan_data([path], ST3, None, shape_inputs=SHAPED)
    assert str(caught.value).startswith(f"{path}: ") and expected in str(caught.value)


def test_int32_shape_tensor_takes_int32_values_only(tmp_path: Path) -> None:
    """The dtype rule of any input: int64 values for an int32 input are refused with the fix."""
    inputs = (ST3[0], TensorDesc("shape", "int32", (3,)))
    path = _npz(tmp_path / "a.npz", 2, shape=np.array([2, 3, 4], np.int32))
    (batch,) = iter_batches([path], inputs, 8, shape_inputs=SHAPED)
    assert batch["shape"].dtype == np.int32
    with pytest.raises(InvalidInputError, match=r"dtype int64 does not fit input 'shape' \(int32\)"):
        plan_data([_npz(tmp_path / "b.npz", 2)], inputs, None, shape_inputs=SHAPED)


def test_npy_cannot_carry_values(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((4, 12), np.float32))
    with pytest.raises(InvalidInputError) as caught:
        plan_data([path], ST3, None, shape_inputs=SHAPED)
    message = str(caught.value)
    assert message.startswith(f"{path}: input 'shape' is a shape tensor") and "use .npz files" in message
    assert "np.savez(file, x=samples, shape=np.array([...]))" in message


def test_missing_values_say_the_input_is_a_shape_tensor(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, x=np.zeros((4, 12), np.float32))
    with pytest.raises(InvalidInputError, match=r"x\.npz: no array for input 'shape', a shape tensor"):
        plan_data([path], ST3, None, shape_inputs=SHAPED)


def test_shape_tensors_are_the_inputs_profiles_give_values() -> None:
    profile = {
        "x": ShapeRange(min=[1, 12], opt=[4, 12], max=[8, 12]),
        "shape": ShapeRange.model_validate({"values": {"min": [1, 3, 4], "opt": [4, 3, 4], "max": [8, 3, 4]}}),
    }
    assert shape_tensors([profile]) == SHAPED and shape_tensors([]) == frozenset()
    feed = {"x": np.zeros((4, 12), np.float32), "shape": np.array([4, 3, 4])}
    assert accepted([profile], feed)
    assert not accepted([profile], {**feed, "shape": np.array([9, 3, 4])})  # outside the profile's values


# ---------------------------------------------------------------- end to end: real builds


def _spec(tmp_path: Path, precision: str, data: str) -> Path:
    reshape_matmul(tmp_path / "st3.onnx")
    spec = tmp_path / f"st3-{precision}.yaml"
    spec.write_text(f"name: st3\nmodel: st3.onnx\nprecision: {precision}\ntargets: ['8.6']\nprofiles:\n{PROFILE}{data}")
    return spec


def _build(spec: Path, out: Path) -> tuple[int, str, dict]:
    code, stdout, stderr = cli("build", spec, "--out", out, "--json")
    return code, stderr, json.loads(stdout)["results"][0] if code == 0 else {}


def test_fp16_gate_runs_on_data_with_shape_tensor_values(tmp_path: Path) -> None:
    need_rtx()
    _files(tmp_path / "data")
    spec = _spec(tmp_path, "fp16", "accuracy:\n  data: data/*.npz\n")
    code, stderr, result = _build(spec, tmp_path / "out")
    assert code == 0, stderr
    assert result["accuracy"]["passed"] is True
    manifest = json.loads(Path(result["manifest"]).read_text())
    assert manifest["accuracy"]["data"] == "files" and manifest["accuracy"]["samples"] == 10
    report = json.loads((tmp_path / "out" / manifest["accuracy"]["report"]).read_text())
    assert (report["data"]["files"], report["data"]["samples"], report["data"]["batches"]) == (2, 10, 2)
    assert report["data"]["dropped"] == 0


def test_int8_calibrates_on_data_with_shape_tensor_values(tmp_path: Path) -> None:
    need_rtx()
    _files(tmp_path / "data")
    spec = _spec(tmp_path, "int8", "calibration:\n  data: data/*.npz\n  batch_size: 3\naccuracy:\n  data: data/*.npz\n")
    code, stderr, result = _build(spec, tmp_path / "out")
    assert code == 0, stderr
    assert "one batch per data file (shape tensor 'shape' takes each file's values" in stderr
    manifest = json.loads(Path(result["manifest"]).read_text())
    assert manifest["calibration"]["samples"] == 10
    assert manifest["accuracy"]["passed"] is True and manifest["accuracy"]["samples"] == 10
    assert manifest["profiles"][0]["shape"]["opt_values"] == [4, 3, 4]


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (lambda d: np.save(d / "c0.npy", np.zeros((4, 12), np.float32)), "c0.npy: input 'shape' is a shape tensor"),
        (lambda d: _npz(d / "c0.npz", 4, shape=np.array([4, 12])), "c0.npz: input 'shape' is a shape tensor [3]"),
    ],
    ids=["npy", "values-length"],
)
def test_data_a_shape_tensor_model_cannot_take_is_exit_2_naming_the_file(tmp_path: Path, write, expected) -> None:
    (tmp_path / "data").mkdir()
    write(tmp_path / "data")
    spec = _spec(tmp_path, "int8", "calibration:\n  data: data/*\n")
    code, _stdout, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 2, stderr
    assert expected in stderr and len(stderr.strip().splitlines()) == 1 + stderr.count(": backend ")


def test_values_a_file_s_samples_cannot_take_are_a_data_error_at_calibration(tmp_path: Path) -> None:
    """onnxruntime refusing the data's values was exit 1, "internal error" (the gate said exit 2)."""
    need_rtx()
    _files(tmp_path / "data")
    _npz(tmp_path / "data" / "c1.npz", 6, shape=np.array([5, 3, 4]))  # 6 samples of 12 values, not 5x3x4
    spec = _spec(tmp_path, "int8", "calibration:\n  data: data/*.npz\naccuracy: {enabled: false}\n")
    code, stderr, _ = _build(spec, tmp_path / "out")
    assert code == 2, stderr
    assert "calibration: onnxruntime cannot run the model on a batch of the data (x 6x12, shape [5, 3, 4])" in stderr
    assert stderr.count("\n") <= 3 and "internal error" not in stderr
