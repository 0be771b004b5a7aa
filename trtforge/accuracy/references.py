"""The FP32 reference's outputs over the gate's random inputs, cached by content.

The fp16 and int8 builds of one model (in one run, or a later CI run sharing the cache folder)
feed the reference the same seeded inputs, so the second build reads the outputs the first one
computed instead of running the reference again. The key holds everything the outputs depend on:
the model's content (its file and external data: ``trtforge.model.content_sha256``), the shape
sets with their shape-tensor values, the seed and the onnxruntime version. Only random plans are
cached (data files would need hashing), and only when the outputs stay under
``CACHE_LIMIT_BYTES``; a damaged entry is a miss, and so is one whose outputs are not of the form the
model declares for those feeds (:func:`conforms`).

An entry saves cost; it proves nothing. Anyone who writes the cache folder can plant the outputs
of a broken candidate, in the right form, and a build's gate then compares the candidate with
itself. A digest stored beside the entry would not stop that (the planter writes the digest too),
and accidental damage is already caught (the zip's CRC-32, the form check). So a build takes an
entry of the right form at its word, as it takes its FP16 graph from ``fp16/``, and ``verify``,
which decides whether to trust an existing artifact, never reads one: it runs the reference itself.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trtforge.fsutil import atomic_write_bytes
from trtforge.jsonsafe import json_sha256

if TYPE_CHECKING:
    import numpy as np

    from trtforge.accuracy.inputs import GateShapes
    from trtforge.model import Dim, ModelInfo, TensorDesc

#: Reference outputs larger than this (all feeds together) are recomputed, not cached.
CACHE_LIMIT_BYTES = 64 * 1024 * 1024
#: The cache folder's subfolder (see :mod:`trtforge.cache`).
FOLDER = "reference"

Outputs = list[dict[str, "np.ndarray"]]


def cache_key(model_digest: str, sets: Sequence[GateShapes], seed: int, ort_version: str) -> str:
    """sha256 of what the reference's outputs depend on (pure); ``model_digest``: the model's content digest."""
    document = {
        "model": model_digest,
        "sets": [
            {"shapes": {k: list(v) for k, v in s.shapes.items()}, "values": {k: list(v) for k, v in s.values.items()}}
            for s in sets
        ],
        "seed": seed,
        "onnxruntime": ort_version,
    }
    return json_sha256(document)


def entry_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / FOLDER / f"{key}.npz"


def load(path: Path, model: ModelInfo, sets: Sequence[GateShapes]) -> Outputs | None:
    """The cached outputs of ``model`` over ``sets`` (one dict per feed, in feed order), or None when
    absent, unreadable, or not what :func:`conforms` expects of them."""
    import numpy as np

    names = [tensor.name for tensor in model.outputs]
    expected = {"feeds", *(f"{feed}.{index}" for feed in range(len(sets)) for index in range(len(names)))}
    try:
        with np.load(path, allow_pickle=False) as archive:
            if set(archive.files) != expected or int(archive["feeds"]) != len(sets):
                return None
            outputs = [
                {name: archive[f"{feed}.{index}"] for index, name in enumerate(names)} for feed in range(len(sets))
            ]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    return outputs if conforms(outputs, model, sets) else None


def conforms(outputs: Outputs, model: ModelInfo, sets: Sequence[GateShapes]) -> bool:
    """Whether ``outputs`` have the form ``model`` declares for the feeds of ``sets``: one per set,
    every output of its dtype and declared rank, its static dims, and each dim it names as an
    input of that set does (the batch) of that size. Pure; a check of form, not of values."""
    if len(outputs) != len(sets):
        return False
    for values, shape_set in zip(outputs, sets, strict=True):
        bound = _named_dims(model.inputs, shape_set)
        for tensor in model.outputs:
            array = values.get(tensor.name)
            if array is None or array.dtype != tensor.np_dtype:
                return False
            if tensor.shape and not _fits(array.shape, tensor.shape, bound):  # no shape: describe gives ()
                return False
    return True


def _named_dims(inputs: Sequence[TensorDesc], shape_set: GateShapes) -> dict[str, int]:
    """Each dim name of the inputs (``N``) and its size in ``shape_set``; a name given two sizes is left out."""
    sizes: dict[str, set[int]] = {}
    for tensor in inputs:
        shape = shape_set.shapes.get(tensor.name)
        if shape is not None and len(shape) == len(tensor.shape):
            for dim, size in zip(tensor.shape, shape, strict=True):
                if isinstance(dim, str):
                    sizes.setdefault(dim, set()).add(size)
    return {name: next(iter(given)) for name, given in sizes.items() if len(given) == 1}


def _fits(shape: tuple[int, ...], declared: Sequence[Dim], bound: dict[str, int]) -> bool:
    if len(shape) != len(declared):
        return False
    for size, dim in zip(shape, declared, strict=True):
        want = dim if isinstance(dim, int) and dim >= 0 else bound.get(dim) if isinstance(dim, str) else None
        if want is not None and size != want:
            return False
    return True


def cacheable(outputs: Outputs) -> bool:
    """Under the size limit, and of dtypes ``np.load`` reads back without pickle (no ml_dtypes)."""
    import numpy as np

    arrays = [array for feed in outputs for array in feed.values()]
    total = sum(array.nbytes for array in arrays)
    return total <= CACHE_LIMIT_BYTES and all(np.dtype(array.dtype.str) == array.dtype for array in arrays)


def store(path: Path, outputs: Outputs, names: Sequence[str]) -> bool:
    """Write the outputs atomically when :func:`cacheable`; True when written."""
    import numpy as np

    if not cacheable(outputs):
        return False
    arrays: dict[str, np.ndarray] = {
        f"{feed}.{index}": values[name] for feed, values in enumerate(outputs) for index, name in enumerate(names)
    }
    arrays["feeds"] = np.array(len(outputs))
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return True
