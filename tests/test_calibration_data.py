"""Calibration data: every bad input fails with a message that names the file (or spec line)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from trtforge.data import (
    fixed_batch_size,
    iter_batches,
    plan_data,
)
from trtforge.digests import data_sha256
from trtforge.errors import InvalidInputError, SpecError
from trtforge.model import TensorDesc
from trtforge.spec import expand_globs, parse_spec

IMAGE = (TensorDesc("input", "float32", ("batch", 1, 8, 8)),)
PAIR = (
    TensorDesc("a", "float32", ("batch", 4)),
    TensorDesc("b", "float32", ("batch", 4)),
)


def _save(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def _batches(files: list[Path], inputs=IMAGE, batch_size: int = 4, **kwargs) -> list[dict]:
    return list(iter_batches(files, inputs, batch_size, **kwargs))


def test_empty_glob_names_the_spec_line(tmp_path: Path) -> None:
    text = "name: m\nmodel: m.onnx\nprecision: int8\ncalibration:\n  data: nothing/*.npy\n"
    spec = parse_spec(text, tmp_path / "spec.yaml")
    with pytest.raises(SpecError, match=r"spec\.yaml:5: '.*nothing/\*\.npy' matches no file"):
        expand_globs(spec.calibration.data, spec.origin.where("calibration", "data"))


def test_single_samples_and_batches_are_batched_in_sorted_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    first = rng.normal(size=(3, 1, 8, 8)).astype(np.float32)
    single = rng.normal(size=(1, 8, 8)).astype(np.float32)
    last = rng.normal(size=(5, 1, 8, 8)).astype(np.float32)
    files = [_save(tmp_path / "a.npy", first), _save(tmp_path / "b.npy", single)]
    files.append(_save(tmp_path / "c.npy", last))
    batches = _batches(files)
    assert [len(batch["input"]) for batch in batches] == [4, 4, 1]
    everything = np.concatenate([batch["input"] for batch in batches])
    np.testing.assert_array_equal(everything, np.concatenate([first, single[None], last]))


def test_max_samples_caps_and_drop_last_keeps_full_batches(tmp_path: Path) -> None:
    files = [_save(tmp_path / f"{i}.npy", np.ones((4, 1, 8, 8), np.float32) * i) for i in range(3)]
    assert [len(b["input"]) for b in _batches(files, batch_size=3, max_samples=10)] == [3, 3, 3, 1]
    assert [len(b["input"]) for b in _batches(files, batch_size=5, drop_last=True)] == [5, 5]
    plan = plan_data(files, IMAGE, max_samples=5)
    assert plan.files == tuple(files[:2]) and plan.samples == 5


def test_a_later_bad_file_is_not_read_before_it_is_needed(tmp_path: Path) -> None:
    good = _save(tmp_path / "a.npy", np.zeros((4, 1, 8, 8), np.float32))
    bad = _save(tmp_path / "b.npy", np.full((4, 1, 8, 8), np.nan, np.float32))
    batches = iter_batches([good, bad], IMAGE, 4)
    assert len(next(batches)["input"]) == 4
    with pytest.raises(InvalidInputError, match=r"b\.npy"):
        next(batches)


def test_float64_is_cast_to_the_model_dtype(tmp_path: Path) -> None:
    path = _save(tmp_path / "x.npy", np.full((2, 1, 8, 8), 0.5))
    (batch,) = _batches([path])
    assert batch["input"].dtype == np.float32 and batch["input"][0, 0, 0, 0] == 0.5


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 3, 8, 8), np.float32), r"sample dim 1 is 3, the model needs 1"),
        (np.zeros((2, 1, 8, 9), np.float32), r"sample dim 3 is 9, the model needs 8"),
        (np.zeros((8, 8), np.float32), r"needs rank 4 \(a batch\) or 3 \(one sample\), got rank 2"),
        (np.zeros((2, 1, 8, 8), np.int64), r"dtype int64 does not fit input 'input' \(float32\)"),
        (np.zeros((2, 1, 8, 8), np.complex64), r"dtype complex64 does not fit"),
    ],
)
def test_wrong_shape_or_dtype_names_the_file(tmp_path: Path, array: np.ndarray, message: str) -> None:
    path = _save(tmp_path / "bad_sample.npy", array)
    with pytest.raises(InvalidInputError, match=rf"bad_sample\.npy: .*{message}"):
        plan_data([path], IMAGE, None)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_names_the_file_and_the_sample(tmp_path: Path, bad: float) -> None:
    array = np.zeros((6, 1, 8, 8), np.float32)
    array[5, 0, 2, 3] = bad
    path = _save(tmp_path / "holes.npy", array)
    with pytest.raises(InvalidInputError, match=r"holes\.npy: input 'input' has NaN or Inf") as caught:
        _batches([path], batch_size=4)
    # the index in the file (sample 5), not in the batch that held it (sample 1 of the second batch)
    assert "first at index [5, 0, 2, 3] of the file" in str(caught.value)


def test_a_float64_value_beyond_float32_is_named_without_a_numpy_warning(tmp_path: Path) -> None:
    """The cast printed numpy's "overflow encountered in cast", then blamed NaN or Inf."""
    array = np.zeros((3, 1, 8, 8), np.float64)
    array[2, 0, 1, 1] = 1e300
    path = _save(tmp_path / "wide.npy", array)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(
            InvalidInputError, match=r"wide\.npy: input 'input' has 1e\+300 \(first at index \[2, 0, 1, 1\]"
        ):
            _batches([path], batch_size=4)


def test_npz_keys_name_the_inputs_of_a_multi_input_model(tmp_path: Path) -> None:
    a, b = np.ones((3, 4), np.float32), np.full((3, 4), 2.0, np.float32)
    np.savez(tmp_path / "pair.npz", a=a, b=b)
    (batch,) = _batches([tmp_path / "pair.npz"], PAIR, batch_size=8)
    np.testing.assert_array_equal(batch["a"], a)
    np.testing.assert_array_equal(batch["b"], b)


def test_npz_with_a_missing_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "half.npz", a=np.ones((3, 4), np.float32))
    with pytest.raises(InvalidInputError, match=r"half\.npz: no array for input 'b' \(keys: a\)"):
        plan_data([tmp_path / "half.npz"], PAIR, None)


def test_npz_with_a_misspelt_key_suggests_the_input(tmp_path: Path) -> None:
    # 'bbx' is one edit from 'bbox' (and two from 'b'): "did you mean" offers the key one edit away first
    np.savez(tmp_path / "typo.npz", a=np.ones((3, 4), np.float32), bbx=np.ones((3, 4), np.float32))
    with pytest.raises(InvalidInputError, match=r"typo\.npz: key 'bbx' names no model input"):
        plan_data([tmp_path / "typo.npz"], (*PAIR, TensorDesc("bbox", "float32", ("n", 4))), None)
    with pytest.raises(InvalidInputError, match="did you mean 'bbox'"):
        plan_data([tmp_path / "typo.npz"], (*PAIR, TensorDesc("bbox", "float32", ("n", 4))), None)


def test_npz_inputs_with_different_sample_counts(tmp_path: Path) -> None:
    np.savez(tmp_path / "uneven.npz", a=np.ones((3, 4), np.float32), b=np.ones((2, 4), np.float32))
    with pytest.raises(InvalidInputError, match=r"uneven\.npz: inputs hold different sample counts"):
        plan_data([tmp_path / "uneven.npz"], PAIR, None)


def test_npy_for_a_multi_input_model(tmp_path: Path) -> None:
    path = _save(tmp_path / "one.npy", np.ones((3, 4), np.float32))
    with pytest.raises(InvalidInputError, match=r"one\.npy: a \.npy file holds one array.*a, b"):
        plan_data([path], PAIR, None)


def test_single_input_npz_under_numpys_default_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "plain.npz", np.ones((2, 1, 8, 8), np.float32))
    (batch,) = _batches([tmp_path / "plain.npz"])
    assert batch["input"].shape == (2, 1, 8, 8)


def test_unsupported_or_unreadable_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InvalidInputError, match=r"notes\.txt: data files must be \.npy or \.npz"):
        plan_data([text], IMAGE, None)
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"not numpy at all")
    with pytest.raises(InvalidInputError, match=r"broken\.npy: cannot read as \.npy"):
        plan_data([broken], IMAGE, None)


def test_a_data_file_that_is_no_regular_file_is_refused_without_opening_it(tmp_path: Path) -> None:
    """A named pipe matched by a data glob blocked the header's open until a writer came (never:
    the command hung), and a link to a missing file was called "truncated or not a .npy file"."""
    pipe = tmp_path / "pipe.npy"
    os.mkfifo(pipe)

    def writer_comes_late() -> None:  # unblocks an open that waits, so that a regression fails, not hangs
        time.sleep(5)
        with contextlib.suppress(OSError), open(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK), "wb"):
            pass

    threading.Thread(target=writer_comes_late, daemon=True).start()
    with pytest.raises(InvalidInputError, match=r"pipe\.npy: data file is not a regular file \(a named pipe\); data"):
        plan_data([pipe], IMAGE, None)
    (tmp_path / "gone.npy").symlink_to(tmp_path / "moved.npy")
    with pytest.raises(InvalidInputError, match=r"gone\.npy: data file not found; data globs must match"):
        plan_data([tmp_path / "gone.npy"], IMAGE, None)


def test_files_without_samples(tmp_path: Path) -> None:
    path = _save(tmp_path / "empty.npy", np.zeros((0, 1, 8, 8), np.float32))
    with pytest.raises(InvalidInputError, match="hold no samples"):
        plan_data([path], IMAGE, None)


def test_a_batch_never_mixes_shapes_of_a_dynamic_dim(tmp_path: Path) -> None:
    tokens = (TensorDesc("ids", "int64", ("batch", "sequence")),)
    files = [
        _save(tmp_path / "a.npy", np.zeros((3, 5), np.int32)),  # int32 -> int64 is lossless
        _save(tmp_path / "b.npy", np.zeros((3, 7), np.int64)),
    ]
    batches = _batches(files, tokens, batch_size=4)
    assert [batch["ids"].shape for batch in batches] == [(3, 5), (3, 7)]
    assert batches[0]["ids"].dtype == np.int64


def test_data_hash_follows_contents_and_order_not_paths(tmp_path: Path) -> None:
    one = _save(tmp_path / "one.npy", np.zeros((1, 1, 8, 8), np.float32))
    two = _save(tmp_path / "two.npy", np.ones((1, 1, 8, 8), np.float32))
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    copy = _save(moved / "renamed.npy", np.zeros((1, 1, 8, 8), np.float32))
    assert data_sha256([one, two]) == data_sha256([copy, two])
    assert data_sha256([one, two]) != data_sha256([two, one])


def test_fixed_batch() -> None:
    assert fixed_batch_size(IMAGE) is None
    assert fixed_batch_size((TensorDesc("x", "float32", (1, 3, 4, 4)),)) == 1


def test_an_int_vector_input_without_profile_values_holds_samples(tmp_path: Path) -> None:
    """Only inputs the profiles give values are shape tensors: a [batch] int64 input (sequence
    lengths) keeps its leading axis as the sample axis, and files are batched across as usual."""
    inputs = (TensorDesc("x", "float32", ("batch", 4)), TensorDesc("lengths", "int64", ("batch",)))
    files = []
    for i, count in enumerate((3, 3)):
        np.savez(tmp_path / f"{i}.npz", x=np.zeros((count, 4), np.float32), lengths=np.arange(count))
        files.append(tmp_path / f"{i}.npz")
    for shape_inputs in (frozenset(), frozenset({"absent"})):
        assert plan_data(files, inputs, None, shape_inputs=shape_inputs).samples == 6
        batches = list(iter_batches(files, inputs, 4, shape_inputs=shape_inputs))
        assert [batch["lengths"].tolist() for batch in batches] == [[0, 1, 2, 0], [1, 2]]
