"""Property-based tests (Hypothesis) of how trtforge reads the .npy/.npz files a spec's
``calibration.data`` and ``accuracy.data`` globs match (``trtforge.data``): whatever bytes such a file
holds, the readers yield arrays of the model's input shape and dtype or one line naming the file
(InvalidInputError, exit 3), never another exception, never memory a lying header claims, never a
pickle load; valid data comes out sample for sample, in order, in batches within the batch size; and
the accuracy gate and calibration read the same samples from the same files."""

from __future__ import annotations

import io
import math
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from trtforge.accuracy import inputs as gate_inputs
from trtforge.calibration import Calibration
from trtforge.data import iter_batches, plan_data
from trtforge.digests import data_sha256
from trtforge.errors import InvalidInputError
from trtforge.model import ModelInfo, inspect_model
from trtforge.spec import parse_spec

#: reproducible in CI; the examples write their own files under a fresh folder each
SAMPLE = (3, 16, 16)
"""models.conv_net's input is [N, 3, 16, 16] float32."""
MEMORY_SLACK = 16 * 2**20
"""What reading a small file may allocate beside a few copies of it (numpy and zipfile buffers)."""

UNPICKLED: list[str] = []


def _unpickled(tag: str) -> str:
    """Runs only if a pickle in a data file is loaded: the property below fails on it."""
    UNPICKLED.append(tag)
    return tag


class _Trap:
    def __reduce__(self) -> tuple[Callable[[str], str], tuple[str]]:
        return _unpickled, ("a data file was unpickled",)


@pytest.fixture(scope="module")
def conv(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    return inspect_model(models.conv_net(tmp_path_factory.mktemp("data-props") / "conv.onnx"))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    """image [N, 3, 8, 8] and meta [N, 4]: an .npz needs one key per input."""
    return inspect_model(models.two_inputs(tmp_path_factory.mktemp("data-props") / "two.onnx"))


def _folder(tmp_path: Path) -> Path:
    """A new empty folder per example (tmp_path is shared by a test's examples)."""
    index = sum(1 for _ in tmp_path.iterdir())
    folder = tmp_path / f"example-{index}"
    folder.mkdir()
    return folder


def _npy(header: dict[str, Any], data: bytes, version: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(out, header)
    else:
        np.lib.format.write_array_header_2_0(out, header)
    return out.getvalue() + data


DESCRS = ["<f4", "<f8", "<f2", ">f4", "<i4", "<i8", "|u1", "|b1", "<c8", "|O", "<U3", "|V4", [("a", "<f4")]]
DIMS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 16]),
    st.integers(-3, 40),
    st.sampled_from([2**31, 2**40, 10**20]),  # a header announcing terabytes
)


@st.composite
def lying_npy(draw: st.DrawFn) -> bytes:
    """A well-formed header whose shape, dtype or fortran_order need not fit the data after it
    (cut short, too long, or random), or a header-length field that lies."""
    near = draw(st.booleans())
    shape = tuple(draw(st.lists(DIMS, max_size=2))) + SAMPLE if near else tuple(draw(st.lists(DIMS, max_size=5)))
    descr = draw(st.sampled_from(DESCRS))
    header = {"descr": descr, "fortran_order": draw(st.booleans()), "shape": shape}
    itemsize = np.dtype(descr).itemsize if not isinstance(descr, list) else 4
    real = min(math.prod(shape), 2_000) * itemsize if all(d >= 0 for d in shape) else 0
    size = draw(st.sampled_from([real, max(real - 1, 0), real // 2, real + 7, 0]))
    version = draw(st.sampled_from([(1, 0), (2, 0)]))
    raw = _npy(header, draw(st.binary(min_size=size, max_size=size)) if size < 64 else bytes(size), version)
    if draw(st.booleans()):
        return raw
    # the header-length field (after the 8-byte magic) claims up to 4 GiB, or the version is unknown
    field = 2 if version == (1, 0) else 4
    claim = draw(st.integers(0, 2 ** (8 * field) - 1)).to_bytes(field, "little")
    major = draw(st.sampled_from([version[0], 0, 4, 9, 255])).to_bytes(1, "little")
    return raw[:6] + major + raw[7:8] + claim + raw[8 + field :]


@st.composite
def real_npy(draw: st.DrawFn) -> bytes:
    """np.save of an array of some dtype (finite or not, object arrays pickled), maybe cut short."""
    count = draw(st.integers(0, 3))
    shape = (count, *SAMPLE) if draw(st.booleans()) else SAMPLE
    dtype = draw(st.sampled_from(["float32", "float64", "float16", "int8", "uint8", "int64", "complex64", "object"]))
    array = np.random.default_rng(draw(st.integers(0, 9))).normal(size=shape)
    if array.size and draw(st.integers(0, 3)) == 0:
        array.flat[draw(st.integers(0, array.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e300]))
    out = io.BytesIO()
    if dtype == "object":
        array = np.empty(shape, dtype=object)
        array[...] = _Trap()
        np.save(out, array, allow_pickle=True)
    else:
        with np.errstate(all="ignore"):
            np.save(out, array.astype(dtype))
    raw = out.getvalue()
    return raw[: draw(st.integers(0, len(raw)))] if draw(st.integers(0, 3)) == 0 else raw


NPY = st.one_of(st.binary(max_size=300), lying_npy(), real_npy(), real_npy())


@st.composite
def npz(draw: st.DrawFn) -> bytes:
    """An archive of members under right, wrong, missing or extra keys, stored or deflated, maybe
    with a byte flipped (a corrupt stream) or cut short."""
    keys = draw(st.lists(st.sampled_from(["input", "arr_0", "inputs", "input.npy", "x/input"]), max_size=3))
    out = io.BytesIO()
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(out, "w", compression) as archive:
        for key in dict.fromkeys(keys):
            archive.writestr(f"{key}.npy", draw(NPY))
    raw = bytearray(out.getvalue())
    if raw and draw(st.booleans()):
        where = draw(st.integers(0, len(raw) - 1))
        raw[where] ^= draw(st.integers(1, 255))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw)


FILES = st.one_of(st.tuples(st.just(".npy"), NPY), st.tuples(st.just(".npz"), npz()))


def _read(files: list[Path], info: ModelInfo, batch_size: int, max_samples: int | None) -> list[dict[str, Any]]:
    plan = plan_data(files, info.inputs, max_samples)
    batches = list(iter_batches(plan.files, info.inputs, batch_size, max_samples))
    assert sum(len(batch["input"]) for batch in batches) == plan.samples
    return batches


@settings(max_examples=300)
@given(
    contents=st.lists(FILES, min_size=1, max_size=3),
    batch_size=st.integers(1, 4),
    max_samples=st.none() | st.integers(1, 5),
)
def test_any_bytes_as_data_are_input_arrays_or_one_line_naming_the_file(
    tmp_path: Path, conv: ModelInfo, contents: list[tuple[str, bytes]], batch_size: int, max_samples: int | None
) -> None:
    """A data glob can match anything: a copy cut short, a file of another tool, an archive with
    other keys, an object array (a pickle: loading it runs code), a header claiming terabytes. The
    user gets input arrays the model takes, or one line naming the file (exit 3), never a traceback,
    never an out-of-memory kill, and no code from the file runs."""
    folder = _folder(tmp_path)
    files = []
    for index, (suffix, raw) in enumerate(contents):
        files.append(folder / f"d{index}{suffix}")
        files[-1].write_bytes(raw)
    UNPICKLED.clear()
    tracemalloc.start()
    try:
        batches = _read(files, conv, batch_size, max_samples)
    except InvalidInputError as exc:
        event("refused")
        message = str(exc)
        assert "\n" not in message
        assert any(message.startswith(f"{path}: ") for path in files), message
    else:
        event("read")
        for batch in batches:
            assert list(batch) == ["input"]
            array = batch["input"]
            assert array.dtype == np.float32 and array.shape[1:] == SAMPLE
            assert 1 <= len(array) <= batch_size
            assert np.isfinite(array).all()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert not UNPICKLED
    assert peak <= MEMORY_SLACK + 4 * sum(len(raw) for _, raw in contents), f"{peak:,} bytes allocated"


@settings(max_examples=150)
@given(
    sizes=st.lists(st.integers(0, 5), min_size=1, max_size=5),
    forms=st.lists(st.sampled_from(["npy", "npz", "arr_0", "single"]), min_size=5, max_size=5),
    batch_size=st.integers(1, 7),
    max_samples=st.none() | st.integers(1, 30),
    seed=st.integers(0, 3),
)
def test_valid_data_comes_out_sample_for_sample_in_batches_within_the_batch_size(
    tmp_path: Path,
    conv: ModelInfo,
    sizes: list[int],
    forms: list[str],
    batch_size: int,
    max_samples: int | None,
    seed: int,
) -> None:
    """Calibration ranges and the gate's comparison (and its labels, matched by order) are only as
    right as the samples read: however the data set is split into files (.npy, .npz, one sample or
    a batch per file, empty ones) and whatever the batch size, the batches are the data's first
    ``max_samples`` samples, in file order, none lost, repeated or empty, none above the batch size."""
    folder = _folder(tmp_path)
    data = np.random.default_rng(seed).normal(size=(sum(sizes), *SAMPLE)).astype(np.float32)
    files, start = [], 0
    for index, (size, form) in enumerate(zip(sizes, forms, strict=False)):
        part = data[start : start + size]
        start += size
        if form == "single" and size == 1:
            part = part[0]  # one sample: rank = input rank - 1
        path = folder / f"{index:02d}.{'npy' if form in ('npy', 'single') else 'npz'}"
        if form == "npz":
            np.savez(path, input=part)
        elif form == "arr_0":
            np.savez(path, part)  # numpy's default key, taken by a single-input model
        else:
            np.save(path, part)
        files.append(path)
    wanted = data[: len(data) if max_samples is None else max_samples]
    if not len(wanted):
        with pytest.raises(InvalidInputError, match="hold no samples"):
            plan_data(files, conv.inputs, max_samples)
        return
    plan = plan_data(files, conv.inputs, max_samples)
    assert plan.samples == len(wanted)
    assert not plan.complete or plan.samples == len(data)  # complete: the labels must match exactly
    batches = list(iter_batches(plan.files, conv.inputs, batch_size, max_samples))
    assert all(1 <= len(batch["input"]) <= batch_size for batch in batches)
    assert all(len(batch["input"]) == batch_size for batch in batches[:-1])  # one shape: only the last is short
    np.testing.assert_array_equal(np.concatenate([batch["input"] for batch in batches]), wanted)


def _spec_text(model: Path, pattern: str, max_samples: int, batch_size: int) -> str:
    return (
        f"name: props\nmodel: {model}\nprecision: int8\n"
        f"calibration:\n  data: '{pattern}'\n  batch_size: {batch_size}\n  max_samples: {max_samples}\n"
        "  algorithm: minmax\n"
        f"accuracy:\n  data: '{pattern}'\n  max_samples: {max_samples}\n"
    )


@pytest.mark.slow
@settings(max_examples=20)
@given(
    sizes=st.lists(st.integers(0, 4), min_size=1, max_size=4),
    bad=st.none() | st.tuples(st.integers(0, 3), FILES),
    max_samples=st.integers(1, 12),
    batch_size=st.integers(1, 5),
)
def test_the_gate_and_calibration_read_the_same_samples_from_the_same_spec(
    tmp_path: Path,
    conv: ModelInfo,
    sizes: list[int],
    bad: tuple[int, tuple[str, bytes]] | None,
    max_samples: int,
    batch_size: int,
) -> None:
    """A spec whose calibration and accuracy sections name the same files and max_samples: the INT8
    scales come from exactly the samples the gate then checks (same files, same count), or both
    refuse the data with the same line before any model runs."""
    folder = _folder(tmp_path)
    rng = np.random.default_rng(len(sizes))
    for index, size in enumerate(sizes):
        np.save(folder / f"{index:02d}.npy", rng.normal(size=(size, *SAMPLE)).astype(np.float32))
    if bad is not None:  # some file among them may hold anything
        position, (suffix, raw) = bad
        (folder / f"{position:02d}b{suffix}").write_bytes(raw)
    spec = parse_spec(_spec_text(conv.path, f"{folder}/*.np*", max_samples, batch_size), folder / "spec.yaml")
    refusals = []
    try:
        plan = gate_inputs.plan(spec, conv)
        gate = [batch.feed["input"] for batch in gate_inputs.batches(spec, conv, plan)]
    except InvalidInputError as exc:
        refusals.append(str(exc))
    try:
        calibration = Calibration(spec, conv, folder / "cache", log=lambda _: None)
    except InvalidInputError as exc:
        refusals.append(str(exc))
    event("refused" if refusals else "read")
    if refusals:
        assert len(refusals) == 2 and refusals[0] == refusals[1], refusals
        return
    assert calibration.samples == plan.samples == sum(len(array) for array in gate)
    assert calibration.data_sha256 == data_sha256(plan.files)


def _zipped(member: bytes, compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        archive.writestr("input.npy", member)
    return out.getvalue()


def _corrupt_stream() -> bytes:
    """A deflated member whose stream is broken after its (intact) first bytes."""
    out = io.BytesIO()
    np.save(out, np.random.default_rng(0).normal(size=(4, *SAMPLE)).astype(np.float32))
    raw = bytearray(_zipped(out.getvalue(), zipfile.ZIP_DEFLATED))
    start = raw.index(b"input.npy") + len("input.npy")
    raw[start + 40 : start + 80] = b"\xff" * 40
    return bytes(raw)


HEADER = {"descr": "<f4", "fortran_order": False}
LIES = {
    # planned as -2 samples (the gate then held a labels file to -2 entries)
    "negative dim": (".npy", _npy({**HEADER, "shape": (-2, *SAMPLE)}, b"", (1, 0)), "negative dim"),
    # numpy read (and allocated) the 4 GiB the header-length field claims
    "header length": (".npy", b"\x93NUMPY\x02\x00" + (2**32 - 1).to_bytes(4, "little") + b"{}", "more than numpy"),
    # tokenize.TokenError escaped numpy's header parser: "internal error"
    "header no literal": (".npy", b"\x93NUMPY\x01\x00\x01\x00{", "no Python literal"),
    # np.load allocated the member's claim: MemoryError for terabytes, gigabytes for less
    "npz member claims terabytes": (
        ".npz",
        _zipped(_npy({**HEADER, "shape": (2**40, *SAMPLE)}, b"", (1, 0))),
        "truncated",
    ),
    "npz member claims a gigabyte": (
        ".npz",
        _zipped(_npy({**HEADER, "shape": (2**18, *SAMPLE)}, b"", (1, 0))),
        "truncated",
    ),
    # zlib.error escaped: "internal error"
    "npz corrupt stream": (".npz", _corrupt_stream(), "decompressing"),
}


@pytest.mark.parametrize("case", LIES)
def test_a_lying_or_broken_header_is_one_line_without_its_claimed_memory(
    tmp_path: Path, conv: ModelInfo, case: str
) -> None:
    """Regressions the first property found (each failed on c30a876 as its comment in ``LIES`` says)."""
    suffix, raw, reason = LIES[case]
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(raw)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInputError, match=rf"^{path}: cannot read as \{suffix}.*{reason}") as caught:
            _read([path], conv, 4, None)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert "\n" not in str(caught.value)
    assert peak <= MEMORY_SLACK, f"{peak:,} bytes allocated"


@settings(max_examples=150)
@given(raw=NPY)
def test_any_bytes_as_labels_are_labels_or_one_line_naming_the_file(
    tmp_path: Path, conv: ModelInfo, raw: bytes
) -> None:
    """``accuracy.labels`` is read through the same header reader, before any model runs: any
    content gives a plan or one line naming the spec line and the labels file, and no pickle loads."""
    folder = _folder(tmp_path)
    np.save(folder / "data.npy", np.zeros((3, *SAMPLE), np.float32))
    labels = folder / "labels.npy"
    labels.write_bytes(raw)
    text = f"name: props\nmodel: {conv.path}\naccuracy:\n  data: '{folder}/data.npy'\n  labels: '{labels}'\n"
    spec = parse_spec(text, folder / "spec.yaml")
    UNPICKLED.clear()
    try:
        plan = gate_inputs.plan(spec, conv)
    except InvalidInputError as exc:
        assert "\n" not in str(exc) and f"{labels}" in str(exc) and str(exc).startswith(f"{folder / 'spec.yaml'}:")
    else:
        assert plan.samples == 3
        loaded = gate_inputs.load_labels(labels, plan.samples, "labels")
        assert loaded.shape == (3,) and np.issubdtype(loaded.dtype, np.integer)
    assert not UNPICKLED
