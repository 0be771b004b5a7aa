"""Hot paths that the correctness fixes of the metric and cache-reader commits made slower (issue 16).

Measured A/B against the commit before them (see the review report): the cache readers' strict
JSON parser made the ci rerun record 3-4x slower to parse (the whole replay ~25 % slower); the exact
integer differences made an integer or boolean output's comparison 3-6x slower; ``snr_db`` kept its
difference array alive, 20-45 % slower on a 10M-value output. Each test pins the cause, not a timing
(the machines are shared): the same results, computed the way that costs what it did.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trtforge import jsonsafe
from trtforge.accuracy import metrics

# ---------------------------------------------------------------- cache readers


@pytest.fixture
def strict_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call of :func:`trtforge.jsonsafe.bounded_json`'s per-document and per-object checks."""
    calls: list[str] = []

    def counted(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            calls.append(name)
            return function(*args)

        return wrapper

    for name in ("_bare_depth", "_without_duplicate_keys", "_finite_float"):
        monkeypatch.setattr(jsonsafe, name, counted(name, getattr(jsonsafe, name)))
    return calls


def _settled_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    past = time.time_ns() - 60 * 10**9
    os.utime(path, ns=(past, past))
    return path


def test_a_digest_entry_is_read_at_jsons_speed(tmp_path: Path, strict_checks: list[str]) -> None:
    from trtforge import digests
    from trtforge.digests import FileStamp, digest_dir, known_digest

    path = _settled_file(tmp_path / "model.onnx", b"weights" * 100)
    stamp = FileStamp.of(path, path.stat())
    digests.remember_digest(stamp, stamp, "ab" * 32, read_ns=time.time_ns() + 10**10)  # the writer's own entry
    assert (digest_dir() / stamp.entry_name()).is_file()
    digests.forget_digests()
    assert known_digest(stamp) == "ab" * 32
    assert strict_checks == []


def test_the_ci_rerun_record_is_read_at_jsons_speed(tmp_path: Path, strict_checks: list[str]) -> None:
    """A replay parses a record of every file the project's verdict rests on: bounded_json made
    that parse 3-4x slower than ``json.loads``, and the whole replay of 2,000 files ~25 % slower."""
    from trtforge.ci import CiOptions, ReportFiles
    from trtforge.console import Reporter
    from trtforge.digests import FileStamp
    from trtforge.rerun import replay, rerun_file

    files = [_settled_file(tmp_path / f"f{index}.onnx", b"x") for index in range(50)]
    options = CiOptions(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    targets = [tmp_path]
    stamps = {str(path): FileStamp.current(str(path)) for path in files}
    document = {  # as trtforge.rerun.record writes it
        "stamps": {path: dataclasses.asdict(stamp) if stamp else None for path, stamp in stamps.items()},
        "results": [],
        "backends": {},
        "notes": ["a note"],
    }
    record = rerun_file(targets, options)
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps(document))
    report = replay(targets, options, 1, Reporter(interactive=False), ReportFiles(None, None))
    assert report is not None and report.results == ()
    assert strict_checks == []


def test_the_other_cache_readers_take_their_writers_entries_at_jsons_speed(
    tmp_path: Path, strict_checks: list[str]
) -> None:
    from trtforge.artifact import _read_entries
    from trtforge.calibration.cache import read_scales, scales_document
    from trtforge.precision.overflow import _cached

    guard = tmp_path / "guard.json"
    guard.write_text(
        json.dumps({"nodes": ["Conv_0"], "reasons": {"Conv_0": "output 'y' reaches 7e+04 > 65504"}, "data": "random"})
    )
    cached = _cached(guard)
    assert cached is not None and cached.nodes == ("Conv_0",)
    scales = tmp_path / "scales.json"
    scales.write_text(scales_document("key", {"model": "0" * 64}, {"x": 0.25, "y": 0.5}, 8))
    assert read_scales(scales, "key") == ({"x": 0.25, "y": 0.5}, 8)
    journal = tmp_path / "journal.json"
    journal.write_text(json.dumps([{"final": "m.engine", "staged": ".m.engine.1-a.tmp", "backup": None}]))
    assert len(_read_entries(journal)) == 1
    assert strict_checks == []


def _non_utf8_file(folder: Path) -> Path:
    """A settled file whose name is not UTF-8 (any byte string is a Linux file name): Python's
    str for it holds a lone surrogate (``\\udcff``), which ``json.dumps`` writes as an escape."""
    raw = os.path.join(os.fsencode(folder), b"model-\xff.onnx")
    with open(raw, "wb") as handle:
        handle.write(b"weights" * 100)
    return _settled_file(Path(os.fsdecode(raw)), b"weights" * 100)


def test_a_digest_entry_for_a_non_utf8_path_is_a_hit(tmp_path: Path) -> None:
    """bounded_json refuses a string with an unpaired surrogate: the entry trtforge writes for a
    file whose path is not UTF-8 was refused, every time, and the file hashed again on every run."""
    from trtforge import digests
    from trtforge.digests import FileStamp, known_digest

    path = _non_utf8_file(tmp_path)
    stamp = FileStamp.of(path, path.stat())
    digests.remember_digest(stamp, stamp, "cd" * 32, read_ns=time.time_ns() + 10**10)
    digests.forget_digests()
    assert known_digest(stamp) == "cd" * 32


def test_a_rerun_record_watching_a_non_utf8_path_is_replayed(tmp_path: Path) -> None:
    """One such file anywhere in the project's folders (the record watches them all) made every
    unchanged ``ci`` rerun a full run."""
    from trtforge.ci import CiOptions, ReportFiles
    from trtforge.console import Reporter
    from trtforge.digests import FileStamp
    from trtforge.rerun import replay, rerun_file

    path = _non_utf8_file(tmp_path)
    options = CiOptions(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    stamp = FileStamp.current(str(path))
    assert stamp is not None
    document = {"stamps": {str(path): dataclasses.asdict(stamp)}, "results": [], "backends": {}, "notes": []}
    record = rerun_file([tmp_path], options)
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps(document))
    assert replay([tmp_path], options, 1, Reporter(interactive=False), ReportFiles(None, None)) is not None


@pytest.mark.parametrize("data", [b"[" * 3000, b'{"a":' * 3000 + b"1" + b"}" * 3000])
def test_a_cache_file_nested_past_the_recursion_limit_is_still_damage(data: bytes, tmp_path: Path) -> None:
    """What the strict parser was brought in for: a ValueError (a miss), never a RecursionError."""
    from trtforge.artifact import _read_entries
    from trtforge.calibration.cache import read_scales
    from trtforge.precision.overflow import _cached

    with pytest.raises(ValueError, match="recursion limit"):
        jsonsafe.cache_json(data, 1 << 20)
    path = tmp_path / "entry.json"
    path.write_bytes(data)
    assert _cached(path) is None and read_scales(path, "key") is None and _read_entries(path) == []


def test_an_oversized_cache_file_is_damage() -> None:
    with pytest.raises(ValueError, match="larger than 10 bytes"):
        jsonsafe.cache_json(b"[" + b"1," * 10 + b"1]", 10)


# ---------------------------------------------------------------- metrics


@pytest.mark.parametrize("dtype", ["bool", "int8", "int32", "uint32", "int64", "uint64"])
def test_an_integer_output_takes_its_exact_difference_once(dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """compare() took the exact difference for max_abs, mean_abs and max_rel each (and split every
    value into 32-bit halves): an int32 or bool output of 10M values compared 3-6x slower than before
    the exact differences, now no slower. The values are those of the split, bit for bit."""
    calls: list[int] = []
    original = metrics._integer_difference

    def counted(*args: Any) -> Any:
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(metrics, "_integer_difference", counted)
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 2 if dtype == "bool" else 100, 1000).astype(dtype)
    cand = ref.copy()
    cand[::7] = ~cand[::7] if dtype == "bool" else cand[::7] + 3
    result = metrics.compare(ref, cand)
    assert len(calls) == 1
    exact = np.array([abs(int(c) - int(r)) for r, c in zip(ref.tolist(), cand.tolist(), strict=True)], dtype=np.float64)
    assert result.max_abs == float(exact.max()) and result.mean_abs == float(np.mean(exact))
    floor = max(metrics.REL_FLOOR_FRACTION * float(np.abs(ref.astype(np.float64)).max()), metrics.REL_FLOOR_MIN)
    assert result.max_rel == float(np.max(exact / np.maximum(np.abs(ref.astype(np.float64)), floor)))


@pytest.mark.parametrize(
    ("ref", "cand", "difference"),
    [
        ([2**53, -(2**53)], [2**53 + 1, -(2**53) - 1], 1.0),  # beyond float64's exact integers: split
        ([2**63 - 1, -(2**63)], [-(2**63), 2**63 - 1], float(2**64 - 1)),
        ([2**53 - 1, 5], [2**53, 5], 1.0),  # within: subtracted as float64
    ],
)
def test_64_bit_integers_are_still_exact(ref: list[int], cand: list[int], difference: float) -> None:
    assert metrics.max_abs(np.array(ref, np.int64), np.array(cand, np.int64)) == difference
    assert metrics.compare(np.array(ref, np.int64), np.array(cand, np.int64)).max_abs == difference


def test_snr_db_squares_the_difference_in_place() -> None:
    """``diff = c - r; sum(diff**2)`` keeps ``diff`` beside its square: twice the memory, and
    snr_db of a 10M-value output 20-45 % slower than ``sum((c - r)**2)``, whose temporary numpy
    squares in place."""
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(1_000_000)
    cand = ref + rng.standard_normal(ref.size) * 1e-3
    expected = 10.0 * np.log10(np.sum(ref**2) / np.sum((cand - ref) ** 2))
    tracemalloc.start()
    try:
        value = metrics.snr_db(ref, cand)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert value == float(expected)
    assert peak < 1.5 * ref.nbytes, f"peak {peak:,} bytes for a {ref.nbytes:,}-byte output"
