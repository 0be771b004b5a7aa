"""Calibration results on disk: TensorRT's calibration-cache text and trtforge's own cache.

TensorRT's cache (what ``IInt8EntropyCalibrator2.read_calibration_cache`` accepts)::

    TRT-<version integer>-EntropyCalibration2
    <tensor name>: <IEEE-754 float32 scale, big-endian, 8 hex digits>

TensorRT ignores a cache whose version integer is not its own, so trtforge keeps scales
version-free (JSON) and writes this text at build time for the TensorRT that builds. The
version integer is TensorRT's ``NV_TENSORRT_VERSION``: ``major * 1000 + minor * 100 + patch``
up to 8.x (8.2.3 -> 8203, as in ``TRT-8203-EntropyCalibration2``) and, since 10.0, where
minors reach two digits, ``major * 10000 + minor * 100 + patch`` (NvInferVersion.h
``NV_TENSORRT_VERSION_INT``; 10.3.0 -> ``TRT-100300-EntropyCalibration2``). The build number
(a fourth part such as ``.35``) is not in it.

The algorithm word is always ``EntropyCalibration2``: the TensorRT 10.x backend reads the cache
through an ``IInt8EntropyCalibrator2``, which accepts only that word, whatever rule
(entropy, minmax, percentile) trtforge used to choose the scales.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtforge.compat import weakly_typed
from trtforge.digests import sha256_bytes
from trtforge.errors import InvalidInputError
from trtforge.fsutil import atomic_write_bytes, read_regular_file
from trtforge.jsonsafe import cache_json, json_sha256
from trtforge.tags import FLAVOR_TENSORRT, parse_trt_version

CACHE_ALGORITHM = "EntropyCalibration2"
SCALES_SCHEMA = "trtforge/calibration-scales/v1"
_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")


def trt_version_text(version: str) -> str:
    """``version`` ("10.13.0.35", "8.6.1", "10.3") as TensorRT spells it, without surrounding spaces
    or leading zeros: it names the exported cache file, so one version gives one name. Refused
    (exit 2) unless it is a version of a TensorRT that reads calibration caches."""
    try:
        parts = parse_trt_version(version.strip())
    except ValueError:
        parts = ()
    # a minor at least; minor and patch take two digits in the integer (10.100.0 would read as 11.0.0)
    if len(parts) < 2 or any(part > 99 for part in parts[1:3]):
        raise InvalidInputError(f"not a TensorRT version: {version!r} (expected e.g. 10.13.0 or 10.13.0.35)")
    text = ".".join(str(part) for part in parts)
    if not weakly_typed(FLAVOR_TENSORRT, text):
        raise InvalidInputError(
            f"TensorRT {text} has no INT8 calibrator to read a calibration cache: it builds the Q/DQ ONNX"
        )
    return text


def trt_version_int(version: str) -> int:
    """TensorRT's version integer for "10.13.0.35", "8.6.1" or "10.3" (see module doc)."""
    major, minor, *rest = (int(part) for part in trt_version_text(version).split("."))
    patch = rest[0] if rest else 0  # the build number (a fourth part) is not in it
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def cache_header(trt_version: str) -> str:
    return f"TRT-{trt_version_int(trt_version)}-{CACHE_ALGORITHM}"


def write_trt_cache(scales: Mapping[str, float], trt_version: str) -> bytes:
    """The calibration cache text for ``trt_version``, tensors in name order."""
    lines = [cache_header(trt_version)]
    lines += [f"{name}: {struct.pack('>f', scales[name]).hex()}" for name in sorted(scales)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def parse_trt_cache(data: bytes) -> tuple[int, str, dict[str, float]]:
    """(version integer, algorithm, scales) of a TensorRT calibration cache.

    Tensor names may contain ':' (``onnx::Conv_3``), so each line splits at its last ': '.
    """
    lines = data.decode("utf-8").splitlines()
    header = _HEADER.match(lines[0].strip()) if lines else None
    if header is None:
        raise InvalidInputError("not a TensorRT calibration cache: no 'TRT-<version>-<algorithm>' first line")
    scales: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, separator, hex_scale = line.rpartition(": ")
        try:
            if not separator:
                raise ValueError(line)
            (scales[name],) = struct.unpack(">f", bytes.fromhex(hex_scale.strip()))
        except ValueError as exc:
            raise InvalidInputError(
                f"calibration cache line {number}: expected 'name: 8 hex digits', got {line!r}"
            ) from exc
    return int(header.group(1)), header.group(2), scales


def content_key(parts: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``parts``: the address of a cache entry."""
    return json_sha256(parts)


def scales_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"scales-{key}.json"


def qdq_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"qdq-{key}.onnx"


def scales_document(key: str, inputs: Mapping[str, Any], scales: Mapping[str, float], samples: int) -> str:
    """The version-free scales file. Deterministic (no times, no paths): equal inputs give
    equal bytes, so its sha256 identifies a calibration across machines."""
    document = {
        "schema": SCALES_SCHEMA,
        "key": key,
        "inputs": dict(inputs),
        "samples": samples,
        "scales": {name: scales[name] for name in sorted(scales)},
    }
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


def read_scales(path: Path, key: str) -> tuple[dict[str, float], int] | None:
    """(scales, samples) of a cache entry, or None when it is missing, damaged or not ``key``'s."""
    try:
        document = cache_json(path.read_bytes(), MAX_PINNED_SCALES_BYTES)  # not past the recursion limit
        if document.get("schema") != SCALES_SCHEMA or document.get("key") != key:
            return None
        scales = {str(name): float(value) for name, value in document["scales"].items()}
        samples = int(document["samples"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    # a scale no calibration writes (NaN, infinite, zero or negative: JSON and float() take them all)
    # is damage too, and a miss, not a Q/DQ graph that fails further on
    if not all(math.isfinite(value) and value > 0 for value in scales.values()) or samples < 1:
        return None
    return scales, samples


#: a scales entry holds one scale per tensor: far below this for any model
MAX_PINNED_SCALES_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class PinnedScales:
    """A scales entry that a cache folder nobody vouches for (``folder``: the host's, which anyone
    who writes it could have planted an entry in) may give only where its bytes hash to ``sha256``:
    ``trtforge verify`` pins the manifest's ``calibration.cache_sha256``. That digest covers the whole
    entry (:func:`scales_document`): its key and inputs (the model's content, the data, the settings,
    the tool versions), its sample count and every scale, so an entry with that digest is the one the
    engine's build calibrated. Nothing else is taken from that folder: the Q/DQ graph is made again
    from the scales."""

    folder: Path
    sha256: str

    def copy(self, target: Path, log: Callable[[str], None]) -> bool:
        """Copy the entry named like ``target`` from ``folder`` to ``target`` where its bytes (read
        once, hashed here: never the digest cache's word) have the pinned digest; False, and the
        entry is left where it is, where there is none or it is another."""
        source = self.folder / target.name
        try:
            data = read_regular_file(source, MAX_PINNED_SCALES_BYTES)
        except OSError:  # none (another host, a cache cleaned since): calibrated again
            return False
        if data is None:  # a FIFO, a device or a huge file planted under its name: never waited for
            log(f"calibration: {source} is not a scales file: calibrating again")
            return False
        digest = sha256_bytes(data)
        if digest != self.sha256:
            log(
                f"calibration: {source} is not the scales the engine was built with (sha256 {digest[:12]}…, "
                f"the manifest's {self.sha256[:12]}…): calibrating again"
            )
            return False
        atomic_write_bytes(target, data, durable=False)
        log(f"calibration: scales from {source} (sha256 {digest[:12]}…, the manifest's calibration.cache_sha256)")
        return True
