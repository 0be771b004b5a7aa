"""Sample data for calibration and the accuracy gate: .npy/.npz files, validated and batched.

Rules (the README's "INT8 calibration" section says the same to users):
- A file holds one sample (rank = model input rank - 1) or a batch (rank = input rank; the
  first axis counts samples, a batch of 1 included).
- ``.npy`` holds one array, so only single-input models take it. ``.npz`` keys name the model
  inputs (every input needs one); a single-input model also takes an archive with one array
  saved under numpy's default name ``arr_0``.
- Static dims must match the model; dynamic dims are free, but a batch never mixes shapes
  (a shape change starts a new batch).
- dtype: the model's, or a cast numpy does without loss (``can_cast(..., "safe")``), or any
  float to float: ``np.save`` writes float64 by default and calibration cares about ranges,
  not the last bits. bfloat16 and float8 inputs (ml_dtypes) take float files the same way
  (``np.save`` cannot write those types itself). Anything else (floats for an integer input,
  ...) is an error.
- NaN or Inf in a float array is an error that names the file and the first bad index.
- A file that is not a regular one (a named pipe, a link to nothing) is an error before it is opened.
- A header's claims (its own length, a negative dim, more data than the file or .npz member
  holds) are errors before anything is allocated for them; no pickle is ever loaded.
- Order is the order of the file list (``expand_globs`` sorts each pattern); ``max_samples``
  caps the count. Files are opened one at a time; a ``.npy`` is memory-mapped, so only the
  samples in use are read (a ``.npz`` member is read whole). Memory is one batch and one
  file, not the data set.
- Shape tensors (``shape_inputs``: the inputs the spec's profiles give values for, see
  :func:`shape_tensors`): an ``.npz`` holds each one's values once (the model input's own
  shape, no sample axis: ``[3]`` for a Reshape's ``shape``), which every sample of that file
  runs with; so a ``.npy`` (one array) cannot serve such a model. The values may depend on
  the batch (``[N, 3, 4]``), so a file is used whole, as one batch (``batch_size`` does not
  cut it), a batch never mixes files, and ``max_samples`` takes whole files, in order, while
  they fit. A model whose batch dim is static is the exception: values cannot depend on a
  batch that does not change, so its files are cut in batches of that size as usual. In each
  batch the shape tensors come after the other inputs, so its first array counts the samples.
"""

from __future__ import annotations

import io
import math
import os
import tokenize
import zipfile
import zlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from trtforge.errors import InvalidInputError, did_you_mean
from trtforge.model import TensorDesc, is_float, not_a_file

if TYPE_CHECKING:
    from trtforge.spec import ShapeRange

_DEFAULT_NPZ_KEY = "arr_0"
_NOT_NPY = "truncated or not a .npy file"
#: .npy format version -> bytes of its header-length field
_NPY_VERSIONS = {(1, 0): 2, (2, 0): 4, (3, 0): 4}
#: numpy's own limit (``np.load(max_header_size=...)``): a longer header is no file trtforge loads
_MAX_HEADER_BYTES = 10_000


@dataclass(frozen=True)
class DataPlan:
    """The files that hold the first ``samples`` samples (at most ``max_samples``); ``complete``:
    the data holds no other sample (every file was read, none cut off by ``max_samples``), so
    ``samples`` is all of it (the gate holds a labels file to exactly that many)."""

    files: tuple[Path, ...]
    samples: int
    complete: bool


def _dims(tensor: TensorDesc) -> str:
    return "[" + ", ".join("?" if dim is None else str(dim) for dim in tensor.shape) + "]"


def _static(dim: object) -> int | None:
    return dim if isinstance(dim, int) and dim >= 0 else None


def shape_tensors(profiles: Sequence[Mapping[str, ShapeRange]]) -> frozenset[str]:
    """The inputs the spec's profiles give values for: shape tensors, whose data files hold their
    values once, not samples (the spec is checked against TensorRT's parse: exactly those)."""
    return frozenset(name for profile in profiles for name, entry in profile.items() if entry.is_shape_input)


def fixed_batch_size(inputs: Sequence[TensorDesc], shape_inputs: Collection[str] = frozenset()) -> int | None:
    """The batch size a model with a static first dim accepts (None: the batch dim is free);
    a shape tensor's one dim is its length, not a batch."""
    sizes = {_static(tensor.shape[0]) if tensor.shape else None for tensor in inputs if tensor.name not in shape_inputs}
    if len(sizes) == 1 and (size := sizes.pop()) is not None and size > 0:
        return size
    return None


def _sample_count(path: Path, tensor: TensorDesc, shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Samples in an array of ``shape`` meant for ``tensor``; raises if it cannot fit."""
    rank = len(tensor.shape)
    if rank == 0:
        raise InvalidInputError(
            f"{path}: input '{tensor.name}' is a scalar (rank 0), which has no batch axis to "
            "calibrate over; trtforge needs inputs with a leading batch dim"
        )
    if len(shape) == rank - 1:
        count, sample = 1, shape
    elif len(shape) == rank:
        count, sample = shape[0], shape[1:]
    else:
        raise InvalidInputError(
            f"{path}: array of shape {list(shape)} does not fit input '{tensor.name}' "
            f"{_dims(tensor)}: it needs rank {rank} (a batch) or {rank - 1} (one sample), "
            f"got rank {len(shape)}"
        )
    for axis, (got, want) in enumerate(zip(sample, tensor.shape[1:], strict=True), start=1):
        if (static := _static(want)) is not None and got != static:
            raise InvalidInputError(
                f"{path}: array of shape {list(shape)} does not fit input '{tensor.name}' "
                f"{_dims(tensor)}: sample dim {axis} is {got}, the model needs {static}"
            )
    _check_dtype(path, tensor, dtype)
    return count


def _check_values(path: Path, tensor: TensorDesc, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """A shape tensor's values: the input's own shape (no sample axis) and an integer dtype."""
    if len(shape) != len(tensor.shape) or any(
        (static := _static(want)) is not None and got != static for got, want in zip(shape, tensor.shape, strict=True)
    ):
        length = _static(tensor.shape[0]) if tensor.shape else None
        needed = "one integer (a 0-d array)" if not tensor.shape else f"a 1-D array of {length or 'its'} values"
        raise InvalidInputError(
            f"{path}: input '{tensor.name}' is a shape tensor {_dims(tensor)}: the file holds its values once, "
            f"{needed}, which every sample of the file runs with; got an array of shape {list(shape)}"
        )
    _check_dtype(path, tensor, dtype)


def _check_dtype(path: Path, tensor: TensorDesc, dtype: np.dtype) -> None:
    want = tensor.np_dtype
    floats = is_float(dtype) and is_float(want)
    if not (np.can_cast(dtype, want, "safe") or floats):
        # numpy cannot save ml_dtypes types (bfloat16, float8): float32 files are cast on load
        saved = np.dtype(np.float32) if want.kind == "V" else want
        raise InvalidInputError(
            f"{path}: dtype {dtype} does not fit input '{tensor.name}' ({want}); "
            f"save the data as {saved} (e.g. array.astype(np.{saved.name}))"
        )


def _npz_keys(
    path: Path, keys: Sequence[str], inputs: Sequence[TensorDesc], shaped: Collection[str] = frozenset()
) -> dict[str, str]:
    """Input name -> archive key, or an error that names the file and the key."""
    names = [tensor.name for tensor in inputs]
    if len(inputs) == 1 and list(keys) == [_DEFAULT_NPZ_KEY] and names[0] != _DEFAULT_NPZ_KEY:
        return {names[0]: _DEFAULT_NPZ_KEY}
    for key in keys:
        if key not in names:
            raise InvalidInputError(
                f"{path}: key '{key}' names no model input{did_you_mean(key, names)} (inputs: {', '.join(names)})"
            )
    for name in names:
        if name not in keys and name in shaped:
            raise InvalidInputError(
                f"{path}: no array for input '{name}', a shape tensor (keys: {', '.join(keys) or 'none'}); save its "
                f"values once beside the samples, e.g. {_npz_example(inputs, shaped)}"
            )
        if name not in keys:
            raise InvalidInputError(
                f"{path}: no array for input '{name}' (keys: {', '.join(keys) or 'none'}); "
                f"save one key per input, e.g. np.savez(file, **{{'{name}': array, ...}})"
            )
    return {name: name for name in names}


def npy_header(handle: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy header, without reading the data; ValueError for a header that
    is none. Its own length is bounded (numpy reads whatever length it announces before checking
    it: 4 GiB for a 14-byte file), and a negative dim is refused (numpy's parser lets one through)."""
    version = np.lib.format.read_magic(handle)
    if version not in _NPY_VERSIONS:
        raise ValueError(f"unknown .npy format version {version[0]}.{version[1]}")
    size = _NPY_VERSIONS[version]
    length = handle.read(size)
    announced = int.from_bytes(length, "little")
    if len(length) == size and announced > _MAX_HEADER_BYTES:
        raise ValueError(f"its header claims {announced:,} bytes, more than numpy reads ({_MAX_HEADER_BYTES:,})")
    prefix = io.BytesIO(length + handle.read(announced))
    try:
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(prefix)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(prefix)
    except (SyntaxError, tokenize.TokenError, RecursionError) as exc:  # numpy passes some parse errors on
        raise ValueError(f"its header is no Python literal ({exc})") from exc
    if any(dim < 0 for dim in shape):
        raise ValueError(f"its header gives a negative dim (shape {list(shape)})")
    return shape, dtype


def _npz_example(inputs: Sequence[TensorDesc], shaped: Collection[str]) -> str:
    keys = ", ".join(f"{t.name}={'np.array([...])' if t.name in shaped else 'samples'}" for t in inputs)
    return f"np.savez(file, {keys})"


def _headers(
    path: Path, inputs: Sequence[TensorDesc], shaped: Collection[str] = frozenset()
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Input name -> (shape, dtype) of its array in ``path``, without reading the data."""
    problem = not_a_file(path)  # before opening it: a named pipe would block the open for good
    if problem is not None:
        raise InvalidInputError(f"{path}: data file {problem}; data globs must match .npy or .npz files")
    try:
        if path.suffix == ".npy":
            if shaped:
                name = next(tensor.name for tensor in inputs if tensor.name in shaped)
                raise InvalidInputError(
                    f"{path}: input '{name}' is a shape tensor, whose values a .npy file (one array) cannot hold "
                    f"beside the samples; use .npz files with one key per input, e.g. {_npz_example(inputs, shaped)}"
                )
            if len(inputs) != 1:
                names = ", ".join(tensor.name for tensor in inputs)
                raise InvalidInputError(
                    f"{path}: a .npy file holds one array, but the model has {len(inputs)} inputs "
                    f"({names}); use .npz files with one key per input"
                )
            with open(path, "rb") as handle:
                shape, dtype = npy_header(handle)
                _check_npy_size(
                    path, handle.tell() + math.prod(shape) * dtype.itemsize, os.fstat(handle.fileno()).st_size
                )
                return {inputs[0].name: (shape, dtype)}
        if path.suffix == ".npz":
            with zipfile.ZipFile(path) as archive:
                keys = [name.removesuffix(".npy") for name in archive.namelist()]
                mapping = _npz_keys(path, keys, inputs, shaped)
                headers = {}
                for name, key in mapping.items():
                    with archive.open(f"{key}.npy") as member:
                        headers[name] = shape, dtype = npy_header(member)
                        # np.load allocates what a member's header claims before reading it
                        size = archive.getinfo(f"{key}.npy").file_size
                        _check_npy_size(path, member.tell() + math.prod(shape) * dtype.itemsize, size, f"{key}.npy")
                return headers
    except InvalidInputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, KeyError, zlib.error) as exc:
        raise InvalidInputError(f"{path}: cannot read as {path.suffix}{_unreadable(path)} ({exc})") from exc
    raise InvalidInputError(f"{path}: data files must be .npy or .npz files, got '{path.suffix}'")


def _unreadable(path: Path) -> str:
    return f": {_NOT_NPY}" if path.suffix == ".npy" else ""


def _check_npy_size(path: Path, needed: int, size: int, member: str | None = None) -> None:
    """A .npy (or an .npz ``member``) shorter than its header promises (a copy cut short) fails
    here, not in mmap, nor after allocating what the header claims."""
    if size < needed:
        what = f".npy: {_NOT_NPY}" if member is None else f".npz: member {member} is truncated"
        raise InvalidInputError(
            f"{path}: cannot read as {what} (its header promises {needed:,} bytes, the "
            f"{'file' if member is None else 'member'} has {size:,}); copy or save it again"
        )


def _file_samples(path: Path, inputs: Sequence[TensorDesc], shaped: Collection[str] = frozenset()) -> int:
    headers = _headers(path, inputs, shaped)
    if shaped:
        for tensor in inputs:
            if tensor.name in shaped:
                _check_values(path, tensor, *headers[tensor.name])
        inputs = [tensor for tensor in inputs if tensor.name not in shaped]
    counts = {tensor.name: _sample_count(path, tensor, *headers[tensor.name]) for tensor in inputs}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name}: {count}" for name, count in counts.items())
        raise InvalidInputError(f"{path}: inputs hold different sample counts ({listed})")
    return next(iter(counts.values()))


def _shaped(files: Sequence[Path], inputs: Sequence[TensorDesc], shape_inputs: Collection[str]) -> frozenset[str]:
    """The model's inputs among ``shape_inputs``; refuses a model with no other input."""
    shaped = frozenset(tensor.name for tensor in inputs if tensor.name in shape_inputs)
    if shaped and len(shaped) == len(inputs):
        raise InvalidInputError(
            f"{files[0] if files else 'data files'}: every input of the model is a shape tensor "
            f"({', '.join(sorted(shaped))}): data files would hold values but no samples; leave the data out "
            "(the accuracy gate runs the profiles' values)"
        )
    return shaped


def _whole_files_over(path: Path, count: int, taken: int, max_samples: int | None) -> bool:
    """A shape-tensor model's file is used whole: True when it would pass ``max_samples`` (stop
    before it); an error when it is the first file (it alone holds more)."""
    if max_samples is None or taken + count <= max_samples:
        return False
    if taken == 0:
        raise InvalidInputError(
            f"{path}: holds {count} samples, more than max_samples ({max_samples}); a model with shape-tensor "
            "inputs uses each data file whole (its values go with its samples): split the file or raise max_samples"
        )
    return True


def plan_data(
    files: Sequence[Path],
    inputs: Sequence[TensorDesc],
    max_samples: int | None,
    *,
    shape_inputs: Collection[str] = frozenset(),
) -> DataPlan:
    """Check every file's header (suffix, keys, rank, static dims, dtype) and keep the files
    that hold the first ``max_samples`` samples (whole files only for a model with
    ``shape_inputs``, unless its batch is fixed). Fails fast, before any model runs."""
    shaped = _shaped(files, inputs, shape_inputs)
    whole = bool(shaped) and fixed_batch_size(inputs, shaped) is None
    kept: list[Path] = []
    samples = 0
    complete = True
    for path in files:
        if max_samples is not None and samples >= max_samples:
            complete = False
            break
        count = _file_samples(path, inputs, shaped)
        if whole and _whole_files_over(path, count, samples, max_samples):
            complete = False
            break
        if count:
            kept.append(path)
        samples += count
    if max_samples is not None and samples > max_samples:
        samples, complete = max_samples, False
    if samples == 0:
        raise InvalidInputError(f"{files[0] if files else 'calibration data'}: the data files hold no samples")
    return DataPlan(tuple(kept), samples, complete)


def _load(
    path: Path, inputs: Sequence[TensorDesc], shaped: Collection[str] = frozenset()
) -> dict[str, np.ndarray] | None:
    """Input name -> array with a leading sample axis (.npy memory-mapped); None if empty. Shape
    tensors' values (``shaped``) come last, as stored."""
    count = _file_samples(path, inputs, shaped)
    if count == 0:
        return None
    try:
        if path.suffix == ".npy":
            arrays = {inputs[0].name: np.load(path, mmap_mode="r", allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as archive:
                mapping = _npz_keys(path, list(archive.keys()), inputs)
                arrays = {name: archive[key] for name, key in mapping.items()}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # changed since its header was read
        raise InvalidInputError(f"{path}: cannot read as {path.suffix}{_unreadable(path)} ({exc})") from exc
    ranks = {tensor.name: len(tensor.shape) for tensor in inputs}
    if shaped:  # values (their rank is the input's: never reshaped below) after the samples
        arrays = dict(sorted(arrays.items(), key=lambda item: item[0] in shaped))
    return {
        name: array.reshape(count, *array.shape) if array.ndim == ranks[name] - 1 else array
        for name, array in arrays.items()
    }


def _prepared(path: Path, tensor: TensorDesc, part: np.ndarray, first: int) -> np.ndarray:
    """A slice read into memory, cast to the model dtype and checked for NaN/Inf; ``first``: the
    index of its first sample in the file, so an error points into the file, not the batch."""
    source = np.asarray(part)
    with np.errstate(over="ignore"):  # a value too large for the model's dtype is named below
        array = source.astype(tensor.np_dtype, copy=True)
    if is_float(array.dtype):
        bad = ~np.isfinite(array)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            where = f"first at index {[first + index[0], *index[1:]]} of the file"
            value = source[index]
            if is_float(source.dtype) and np.isfinite(value):
                raise InvalidInputError(
                    f"{path}: input '{tensor.name}' has {float(value):g} ({where}), beyond "
                    f"{tensor.np_dtype.name}'s range; input data must fit the model's input type"
                )
            raise InvalidInputError(
                f"{path}: input '{tensor.name}' has NaN or Inf values ({where}); input data must be finite"
            )
    return array


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _sample_shapes(batch: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {name: array.shape[1:] for name, array in batch.items()}


def iter_batches(
    files: Sequence[Path],
    inputs: Sequence[TensorDesc],
    batch_size: int,
    max_samples: int | None = None,
    *,
    drop_last: bool = False,
    shape_inputs: Collection[str] = frozenset(),
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of ``batch_size`` samples (the last may be smaller unless ``drop_last``), which never
    mix sample shapes, nor files whose shape tensors hold other values (those come after the other
    inputs); a model with ``shape_inputs`` whose batch dim is free has one batch per file
    (:func:`_file_batches`: the values may name the batch).

    Streams: one file is open at a time and a batch is the only data held in memory.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    shaped = _shaped(files, inputs, shape_inputs) if shape_inputs else frozenset()
    if shaped and fixed_batch_size(inputs, shaped) is None:
        yield from _file_batches(files, inputs, shaped, max_samples)
        return
    by_name = {tensor.name: tensor for tensor in inputs}
    pending: list[dict[str, np.ndarray]] = []
    pending_values: dict[str, np.ndarray] = {}
    held = 0
    remaining = max_samples
    for path in files:
        if remaining == 0:
            break
        arrays = _load(path, inputs, shaped)
        if arrays is None:
            continue
        values = {name: _prepared(path, by_name[name], arrays.pop(name), 0) for name in shaped}
        count = len(next(iter(arrays.values())))
        if remaining is not None:
            count = min(count, remaining)
            remaining -= count
        start = 0
        while start < count:
            if pending and (
                _sample_shapes(pending[0]) != _sample_shapes(arrays) or not _same_values(pending_values, values)
            ):
                if not drop_last:
                    yield {**_concat(pending), **pending_values}
                pending, held = [], 0
            take = min(batch_size - held, count - start)
            pending.append(
                {
                    name: _prepared(path, by_name[name], array[start : start + take], start)
                    for name, array in arrays.items()
                }
            )
            pending_values = values
            held += take
            start += take
            if held == batch_size:
                yield {**_concat(pending), **pending_values}
                pending, held = [], 0
    if pending and not drop_last:
        yield {**_concat(pending), **pending_values}


def _same_values(held: Mapping[str, np.ndarray], values: Mapping[str, np.ndarray]) -> bool:
    return all(np.array_equal(held[name], values[name]) for name in values)


def _file_batches(
    files: Sequence[Path], inputs: Sequence[TensorDesc], shaped: frozenset[str], max_samples: int | None
) -> Iterator[dict[str, np.ndarray]]:
    """A shape-tensor model's batches where the batch dim is free: each file's samples, whole, with
    the file's values (after the other inputs); files are taken whole while they fit in
    ``max_samples``."""
    by_name = {tensor.name: tensor for tensor in inputs}
    taken = 0
    for path in files:
        count = _file_samples(path, inputs, shaped)
        if _whole_files_over(path, count, taken, max_samples):
            break
        arrays = _load(path, inputs, shaped)
        if arrays is None:
            continue
        taken += count
        yield {name: _prepared(path, by_name[name], array, 0) for name, array in arrays.items()}
