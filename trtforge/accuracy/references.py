"""The FP32 reference's outputs over the gate's random inputs, cached by content.

The fp16 and int8 builds of one model (in one run, or a later CI run sharing the cache folder)
feed the reference the same seeded inputs, so the second build reads the outputs the first one
computed instead of running the reference again. The key holds everything the outputs depend on:
the model's content (its file and external data: ``trtforge.model.content_sha256``), the shape
sets with their shape-tensor values, the seed and the onnxruntime version. Only random plans are
cached (data files would need hashing), and only when the outputs stay under
``CACHE_LIMIT_BYTES``; a damaged entry is a miss.
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


def load(path: Path, names: Sequence[str], feeds: int) -> Outputs | None:
    """The cached outputs (one dict per feed, in feed order), or None when absent, unreadable, or
    not holding ``feeds`` feeds."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            if int(archive["feeds"]) != feeds:
                return None
            return [{name: archive[f"{feed}.{index}"] for index, name in enumerate(names)} for feed in range(feeds)]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


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
