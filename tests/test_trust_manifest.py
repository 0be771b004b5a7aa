"""Trust review, item 8: a manifest with bad bytes or absurd structure is "unreadable manifest",
exit 2, one line, in every command that reads one, and a TrtforgeError from the loader: never a
UnicodeDecodeError or RecursionError traceback, never a huge read."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from clitools import cli
from models import need_rtx, retag
from registry import DIGITS_ONNX, DIGITS_PROFILE, build_engine

from trtforge.errors import InvalidInputError
from trtforge.jsonsafe import bounded_json
from trtforge.manifest import manifest_path_for, read_manifest
from trtforge.runtime.loader import check_compatibility, load_engine

need_rtx()


def _not_utf8(good: bytes) -> bytes:
    return good.replace(b'"name": "digits-cnn"', b'"name": "digits-\xff\xfecnn"')


def _nested(good: bytes) -> bytes:
    return b"[" * 100_000 + b"]" * 100_000


def _huge(good: bytes) -> bytes:
    """Valid JSON, 3 MiB: over the 1 MiB bound (``trtforge.manifest.MAX_MANIFEST_BYTES``)."""
    return good.replace(b'"calibration": null', b'"calibration": {"pad": "' + b"x" * (3 * 1024 * 1024) + b'"}')


def _name_twice(good: bytes) -> bytes:
    """Python keeps the last of two equal keys; another parser may keep the first."""
    return good.replace(b'"name": "digits-cnn"', b'"name": "digits-cnn", "name": "other"', 1)


def _seconds(value: bytes) -> Callable[[bytes], bytes]:
    """``build.seconds`` spelled ``value``: Python's json reads ``NaN``, ``-Infinity`` and ``1e999``
    (as infinity), which RFC 8259 has not and other parsers refuse."""
    return lambda good: re.sub(rb'"seconds": [0-9.e-]+', b'"seconds": ' + value, good, count=1)


BAD = {
    "non-UTF-8 bytes": (_not_utf8, "not UTF-8 (byte 0xff"),
    "nesting 100k deep": (_nested, "nested deeper than"),
    "3 MiB, over the size bound": (_huge, "larger than"),
    "a key given twice": (_name_twice, "key 'name' appears twice in one object"),
    "NaN": (_seconds(b"NaN"), "'NaN' is not JSON (RFC 8259 has no NaN or Infinity)"),
    "-Infinity": (_seconds(b"-Infinity"), "'-Infinity' is not JSON (RFC 8259 has no NaN or Infinity)"),
    "a number beyond a double": (_seconds(b"1e999"), "number 1e999 is out of range"),
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engine(tmp_path_factory.mktemp("trust-manifest"), targets=["8.6"])


def damaged_copy(engine: Path, folder: Path, damage: Callable[[bytes], bytes]) -> Path:
    """A copy of the artifact whose manifest bytes ``damage`` rewrote."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / engine.name
    shutil.copyfile(engine, copy)
    good = manifest_path_for(engine).read_bytes()
    manifest_path_for(copy).write_bytes(damage(good))
    return copy


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
@pytest.mark.parametrize("command", ["check", "inspect", "publish"])
def test_unreadable_manifest_is_exit_2_one_line(
    case: str, command: str, engine: Path, tmp_path: Path, trust_case: Callable
) -> None:
    damage, says = BAD[case]
    copy = damaged_copy(engine, tmp_path / "artifact", damage)
    registry = tmp_path / "registry"
    extra = ("--to", f"dir://{registry}") if command == "publish" else ("--cc", "8.6") if command == "check" else ()
    code, _, err = cli(command, copy, *extra)
    record = trust_case(8, f"{command}: manifest with {case}", code, err, folders=(tmp_path,))
    assert code == 2, err
    assert record.one_line, err
    assert "unreadable manifest" in err and says in err
    assert "Traceback" not in err
    assert not registry.exists(), "nothing is published from an unreadable manifest"
    assert not record.leftovers


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_the_loader_raises_a_trtforge_error(case: str, engine: Path, tmp_path: Path, trust_case: Callable) -> None:
    damage, says = BAD[case]
    copy = damaged_copy(engine, tmp_path, damage)
    for entry in (check_compatibility, load_engine):
        with pytest.raises(InvalidInputError) as caught:
            entry(copy)
        assert "unreadable manifest" in str(caught.value) and says in str(caught.value)
        trust_case(8, f"loader ({entry.__name__}): manifest with {case}", caught.value.exit_code, str(caught.value))


def test_dir_pull_skips_an_unreadable_manifest_with_its_reason(
    engine: Path, tmp_path: Path, trust_case: Callable
) -> None:
    registry = tmp_path / "registry"
    damaged_copy(engine, registry, _nested)
    out = tmp_path / "out"
    code, _, err = cli("pull", f"dir://{registry}", "--name", "digits-cnn", "--cc", "8.6", "--out", out)
    record = trust_case(8, "dir:// pull: manifest nested 100k deep", code, err, folders=(tmp_path,))
    assert code == 5 and record.one_line, err
    assert "unreadable manifest, nested deeper than" in err and "RecursionError" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (
            (b'"version_compatible": false', b'"version_compatible": "false"'),
            "version_compatible: Input should be a valid boolean",
        ),
        # a number with no fraction (1.0) is the integer the shipped schema passes; 1.5 is none
        ((b'"max": [\n', b'"max": [\n1.5, '), "Input should be a valid integer"),
        # what Windows' Get-FileHash prints: the engine's sha256 is 64 lowercase hex digits, as written
        ((b'"sha256": "', b'"sha256": "AB'), "artifact.sha256: String should match pattern"),
        ((b'"size": ', b'"size": -'), "artifact.size: Input should be greater than or equal to 0"),
    ],
    ids=["boolean-as-text", "fraction-for-int", "sha256-not-as-written", "negative-size"],
)
def test_a_manifest_is_read_with_its_json_types_never_converted(
    edit: tuple[bytes, bytes], says: str, engine: Path, tmp_path: Path
) -> None:
    """A signature covers the file as written: a value of another JSON type ("false" for false) reads
    as another value to anyone but a converting parser, so it is refused, never taken for the signed one."""
    copy = damaged_copy(engine, tmp_path / "artifact", lambda good: good.replace(*edit, 1))
    code, _, err = cli("check", copy, "--cc", "8.6")
    assert code == 2 and "not a trtforge manifest" in err and says in err, err


def _edited(edit: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    """The manifest with ``edit`` applied to its document, tag and file name rendered again where
    the facts allow (``models.retag``): only the fact under test is one no build writes."""

    def damage(good: bytes) -> bytes:
        document = json.loads(good)
        edit(document)
        with contextlib.suppress(ValueError):
            retag(document)
        edit(document)  # again, where retag rendered over it (artifact.file)
        return json.dumps(document).encode()

    return damage


NO_BUILD_WRITES = {
    "name with a path": (lambda d: d.update(name="../../evil"), "is not a valid artifact name"),
    "artifact.file a path": (lambda d: d["artifact"].update(file="../../etc/passwd"), "is not the build's name"),
    "unknown platform": (lambda d: d["platform"].update(os="plan9"), "platform.os: Input should be 'linux'"),
    "platform in capitals": (lambda d: d["platform"].update(os="Linux"), "platform.os: Input should be 'linux'"),
    "unknown machine": (lambda d: d["platform"].update(machine="mips"), "is not a machine as trtforge writes it"),
    "version with leading zeros": (
        lambda d: d["tensorrt"].update(version="01.07.01.116"),
        "is not a TensorRT version as a runtime reports it",
    ),
    "a GPU twice": (lambda d: d["gpu"].update(compute_capabilities=["8.6", "8.6"]), "listed twice"),
    "version-compatible before 8.6": (
        lambda d: d["tensorrt"].update(flavor="tensorrt", version="8.5.3.1", version_compatible=True),
        "version compatibility begins with TensorRT 8.6",
    ),
    "tensorrt-rtx for 9.0": (
        lambda d: d["gpu"].update(compute_capabilities=["9.0"]),
        "tensorrt-rtx compiles for no compute capability 9.0",
    ),
}


@pytest.mark.parametrize("case", list(NO_BUILD_WRITES), ids=list(NO_BUILD_WRITES))
def test_a_manifest_with_facts_no_build_writes_is_refused(case: str, engine: Path, tmp_path: Path) -> None:
    """README: "a manifest whose facts no build writes is exit 2". These passed: check said a
    TensorRT-RTX engine "loads on ... compute capability 9.0", which TensorRT-RTX refuses, and a name
    or file name that is a path reached the commands that turn them into paths."""
    edit, says = NO_BUILD_WRITES[case]
    copy = damaged_copy(engine, tmp_path / "artifact", _edited(edit))
    code, _, err = cli("check", copy, "--cc", "8.6")
    assert code == 2 and "not a trtforge manifest" in err and says in err, err


@pytest.mark.parametrize(
    ("version", "shown"),
    [("1.7.1.116\n", "'1.7.1.116\\n'"), ("1.7\u2028\x1b[2J", "'1.7\\u2028\\x1b[2J'")],
    ids=["newline", "line separator and escape"],
)
def test_a_manifest_value_that_breaks_lines_is_shown_escaped_on_one_line(
    version: str, shown: str, engine: Path, tmp_path: Path
) -> None:
    """A value the error repeats from the manifest split it over two stderr lines (or cleared a
    terminal): it is written as ``repr`` writes it, wherever the message comes from."""
    copy = damaged_copy(engine, tmp_path / "artifact", _edited(lambda d: d["tensorrt"].update(version=version)))
    code, _, err = cli("check", copy, "--cc", "8.6")
    assert code == 2 and err.count("\n") == 1 and err.endswith("\n"), repr(err)
    assert f"tensorrt.version: {shown} is not a TensorRT version" in err and "\x1b" not in err, repr(err)


@pytest.mark.parametrize("kind", ["directory", "fifo", "dangling link"])
def test_inspect_names_what_stands_at_the_engines_name(
    kind: str, engine: Path, tmp_path: Path, trust_case: Callable
) -> None:
    """A folder, a FIFO or a link that goes nowhere at the engine's name was "engine file not found"."""
    copy = tmp_path / engine.name
    shutil.copyfile(manifest_path_for(engine), manifest_path_for(copy))
    if kind == "directory":
        copy.mkdir()
    elif kind == "fifo":
        os.mkfifo(copy)
    else:
        copy.symlink_to(tmp_path / "nowhere")
    code, _, err = cli("inspect", manifest_path_for(copy))
    record = trust_case(8, f"inspect: a {kind} at the engine's name", code, err, folders=(tmp_path,))
    assert code == 2 and record.one_line, err
    assert f"{copy}: engine file is not a regular file" in err


def test_a_manifest_is_never_written_with_a_non_finite_number(engine: Path) -> None:
    """What trtforge writes, a strict parser reads: a NaN where the schema has a number (a free-form
    section writes it as null) is refused at the write, never written as ``NaN``."""
    manifest = read_manifest(engine)
    odd = manifest.replace(build=manifest.build.model_copy(update={"seconds": math.nan}))
    with pytest.raises(ValueError, match="not JSON compliant"):
        odd.to_json()
    bounded_json(manifest.to_json(), 1024 * 1024)  # what a build wrote reads back strictly


@pytest.mark.parametrize("limit", ["snr_db_min: .nan", "max_abs: .inf", "snr_db_min: -.inf"])
def test_a_non_finite_tolerance_is_refused_before_a_report_is_written(limit: str, tmp_path: Path) -> None:
    """A tolerance is written into the gate's report as its limit: ``.inf`` was written as
    ``Infinity`` (and ``.nan`` failed every check), a report no strict JSON parser reads."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: digits-cnn\nmodel: {DIGITS_ONNX}\nprecision: fp16\nbackend: tensorrt-rtx\ntargets: ['8.6']\n"
        f"profiles:\n{DIGITS_PROFILE}\naccuracy:\n  tolerances: {{'*': {{{limit}}}}}\n"
    )
    code, _, err = cli("build", spec, "--out", tmp_path / "out")
    key = limit.split(":")[0]
    assert code == 2 and f"accuracy.tolerances.*.{key}': Input should be a finite number" in err, err
    assert not list(tmp_path.glob("out/*.json"))


def test_a_newer_schema_says_upgrade_trtforge(engine: Path, tmp_path: Path) -> None:
    """A v2 manifest is not damage to rebuild: the advice was "rebuild the engine"."""
    copy = damaged_copy(engine, tmp_path / "artifact", lambda good: good.replace(b"manifest/v1", b"manifest/v2", 1))
    code, _, err = cli("check", copy, "--cc", "8.6")
    assert code == 2 and "manifest schema trtforge/manifest/v2 is a newer trtforge's" in err
    assert "upgrade trtforge" in err and "rebuild" not in err
