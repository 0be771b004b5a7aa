"""Properties of the YAML model spec, the first file every user writes: whatever the text, loading
it gives a Spec or one line naming the file (and the line) with exit 2; the shipped JSON Schema,
which editors and CI linters check specs with, accepts exactly what trtforge accepts; a typo of a
key is answered with the key meant; and a spec written back out loads as the same spec."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import models
import pytest
import yaml
from documents import at, mappings, places
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from trtforge.errors import InvalidInputError, SpecError, one_line
from trtforge.spec import (
    FP16_CALIBRATION_KEYS,
    AccuracySpec,
    BuildOptions,
    CalibrationSpec,
    Fp16Spec,
    ShapeRange,
    Spec,
    Tolerance,
    ValueRange,
    load_spec,
    parse_spec,
    spec_json_schema,
)
from trtforge.tags import MAX_NAME_LENGTH, NAME_PATTERN, ComputeCapability


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A spec folder with the model a spec names beside it (``model: conv.onnx`` resolves there)."""
    path = tmp_path_factory.mktemp("specs")
    models.conv_net(path / "conv.onnx")
    return path


class _Dumper(yaml.SafeDumper):
    """``yaml.safe_dump``'s writer, told that ``2e6`` is a number: PyYAML writes YAML 1.1, where
    it is text and needs no quotes, while trtforge reads it as YAML 1.2 and JSON do (a number), so
    an unquoted ``name: 2e6`` is a float to trtforge."""


_Dumper.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _dump(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def _write(folder: Path, document: Any, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(_dump(document), encoding="utf-8")
    return path


# ---------------------------------------------------------------- valid specs, as documents

names = st.from_regex(NAME_PATTERN, fullmatch=True).filter(lambda name: len(name) <= MAX_NAME_LENGTH)
tensor_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
dims = st.integers(0, 64)
CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")


@st.composite
def target_lists(draw: st.DrawFn) -> list[Any]:
    """Each GPU once, in any of its spellings (``8.6``, ``"8.6"``, ``sm86``, ``sm_86``)."""
    chosen = draw(st.lists(st.sampled_from(CAPABILITIES), min_size=1, max_size=4, unique=True))
    spelt = []
    for cc in chosen:
        major, minor = cc.split(".")
        spelt.append(
            draw(st.sampled_from([cc, float(cc), f"sm{major}{minor}", f"sm_{major}{minor}", f"SM{major}{minor}"]))
        )
    return spelt


@st.composite
def shape_ranges(draw: st.DrawFn) -> dict[str, Any]:
    """min/opt/max shapes of one rank, or a shape tensor's ordered values (one, or a range)."""
    kind = draw(st.sampled_from(["shapes", "value", "values"]))
    if kind == "shapes":
        rank = draw(st.integers(0, 4))
        return {label: draw(st.lists(dims, min_size=rank, max_size=rank)) for label in ("min", "opt", "max")}
    scalar = draw(st.booleans())
    length = draw(st.integers(0, 3))
    if kind == "value":
        value = draw(
            st.integers(-(2**63), 2**63 - 1)
            if scalar
            else st.lists(st.integers(-100, 100), min_size=length, max_size=length)
        )
        return {"value": value}
    columns = [
        sorted(draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=3, max_size=3)))
        for _ in range(1 if scalar else length)
    ]
    values = {
        label: (columns[0][i] if scalar else [column[i] for column in columns])
        for i, label in enumerate(("min", "opt", "max"))
    }
    return {"values": values}


positive = st.integers(1, 10**6)
fractions = st.floats(0, 1, allow_nan=False)
tolerances = st.fixed_dictionaries(
    {},
    optional={
        "max_abs": st.floats(0, 1e6),
        "mean_abs": st.floats(0, 1e6),
        "max_rel": st.floats(0, 1e6),
        "cosine_min": st.floats(-1, 1),
        "snr_db_min": st.floats(-1e6, 1e6),
        "top1_min": fractions,
        "match_min": fractions,
    },
)
globs = st.one_of(
    st.just("data/*.npy"), st.lists(st.sampled_from(["a/*.npy", "b.npz", "c/**/*.npy"]), min_size=1, max_size=3)
)
accuracy = st.fixed_dictionaries(
    {},
    optional={
        "data": globs,
        "labels": st.just("labels.npy"),
        "max_samples": positive,
        "tolerances": st.dictionaries(st.sampled_from(["*", "logits", "out"]), tolerances, max_size=2),
        "enabled": st.booleans(),
    },
)
build = st.fixed_dictionaries(
    {},
    optional={
        "workspace": st.one_of(
            st.integers(1, 2**50), st.sampled_from(["1GiB", "512MiB", " 4 gb ", "1PiB", "1.5KiB", "100"])
        ),
        "optimization_level": st.integers(0, 5),
        "timing_cache": st.booleans(),
        "version_compatible": st.booleans(),
        "hardware_compatibility": st.sampled_from(["none", "ampere_plus", "same_compute_capability"]),
    },
)


@st.composite
def calibrations(draw: st.DrawFn, precision: str) -> dict[str, Any]:
    """At int8 any of its keys, by the rules between them (``mode: native`` takes no ``auto`` and
    no exclusions; ``max_excluded`` bounds ``exclude: auto``); at fp16 the overflow guard's keys."""
    section: dict[str, Any] = {"data": draw(globs)}
    if draw(st.booleans()):
        section["batch_size"] = draw(positive)
    if draw(st.booleans()):
        section["max_samples"] = draw(positive)
    if precision == "fp16":
        return section
    mode = draw(st.sampled_from([None, "qdq", "native"]))
    if mode is not None:
        section["mode"] = mode
    algorithms = ["entropy", "minmax", "percentile"] + ([] if mode == "native" else ["auto"])
    optional: dict[str, st.SearchStrategy[Any]] = {
        "algorithm": st.sampled_from(algorithms),
        "percentile": st.floats(0, 100, exclude_min=True),
        "high_precision": st.sampled_from(["fp16", "fp32"]),
        "search_budget": st.floats(0, 1e6, exclude_min=True),
    }
    if mode != "native":
        optional["exclude"] = st.one_of(st.just("auto"), st.lists(st.sampled_from(["conv", "fc", "a/b"]), max_size=2))
    section.update(draw(st.fixed_dictionaries({}, optional=optional)))
    if section.get("exclude") == "auto" and draw(st.booleans()):
        section["max_excluded"] = draw(positive)
    return section


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A spec document trtforge and the schema both take (the model file exists beside it)."""
    precision = draw(st.sampled_from([None, "fp32", "fp16", "int8"]))
    document: dict[str, Any] = {"name": draw(names), "model": "conv.onnx"}
    if precision is not None:
        document["precision"] = precision
    if draw(st.booleans()):
        document["backend"] = draw(st.sampled_from(["auto", "tensorrt", "tensorrt-rtx"]))
    if draw(st.booleans()):
        document["targets"] = draw(target_lists())
    if draw(st.booleans()):
        document["profiles"] = draw(st.lists(st.dictionaries(tensor_names, shape_ranges(), max_size=2), max_size=2))
    keep_fp32 = None
    if precision == "fp16" and draw(st.booleans()):
        keep_fp32 = draw(st.one_of(st.none(), st.lists(st.sampled_from(["conv", "fc"]), max_size=2)))
        document["fp16"] = {} if keep_fp32 is None and draw(st.booleans()) else {"keep_fp32": keep_fp32}
    if precision == "int8" or (precision == "fp16" and keep_fp32 is None and draw(st.booleans())):
        document["calibration"] = draw(calibrations(precision))
    if draw(st.booleans()):
        document["accuracy"] = draw(accuracy)
    if draw(st.booleans()):
        document["build"] = draw(build)
    return document


# ---------------------------------------------------------------- single mutations of valid specs

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            0,
            -1,
            1,
            0.5,
            64.0,
            float("inf"),
            -float("inf"),
            2**63,
            2**50 + 1,
            1e300,
            "",
            "auto",
            "1GiB",
            "8.6",
            "sm86",
            "yes",
            "12",
        ]
    ),
    st.text(max_size=6),
    st.lists(st.integers(-3, 3), max_size=3),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid spec with one change: a value replaced, a key or item removed, a key added."""
    document = copy.deepcopy(draw(valid_specs()))
    action = draw(st.sampled_from(["replace", "remove", "add"]))
    if action == "add":
        path = draw(st.sampled_from(mappings(document)))
        key = draw(st.one_of(st.text(max_size=12), st.sampled_from(ALL_KEYS)))
        at(document, path)[key] = draw(junk)
        return document
    path = draw(st.sampled_from([path for path in places(document) if path]))
    parent = at(document, path[:-1])
    if action == "remove":
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(junk)
    return document


SECTIONS: tuple[type[BaseModel], ...] = (
    Spec,
    CalibrationSpec,
    Fp16Spec,
    AccuracySpec,
    Tolerance,
    BuildOptions,
    ShapeRange,
    ValueRange,
)
#: every key of every section, for keys added where they do not belong
ALL_KEYS = sorted({key for section in SECTIONS for key in section.model_fields})


def _trtforge_takes(folder: Path, document: Any) -> tuple[bool, str]:
    try:
        load_spec(_write(folder, document))
    except SpecError as exc:
        return False, str(exc)
    return True, ""


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    """JSON Schema's ``pattern`` is an ECMA-262 regex, whose ``$`` ends the text; the jsonschema
    library runs Python's ``re.search``, whose ``$`` also matches before a final newline (``"a\\n"``
    is no name for an editor, nor for trtforge)."""
    if isinstance(instance, str) and not re.search(re.sub(r"\$$", r"\\Z", pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


VALIDATOR = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})(
    spec_json_schema()
)


def _schema_takes(document: Any) -> tuple[bool, str]:
    error = jsonschema.exceptions.best_match(VALIDATOR.iter_errors(document))
    return error is None, "" if error is None else f"{list(error.absolute_path)}: {error.message}"


def _capability(value: Any) -> Any:
    try:
        return ComputeCapability.parse(value)
    except ValueError:
        return value


def _whole(value: Any) -> Any:
    """A shape tensor's value as integers (``3.0`` is 3, as for JSON Schema); None if it is none."""
    if isinstance(value, list):
        items = [_whole(item) for item in value]
        return None if any(isinstance(item, list) or item is None for item in items) else items
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _values_rule(entry: dict[str, Any]) -> str | None:
    """README: a shape tensor's min/opt/max values have one length, min <= opt <= max, within int64;
    ``value`` is all three; its shapes follow from them."""
    values = entry.get("values")
    if entry.get("value") is not None:
        same = {label: entry["value"] for label in ("min", "opt", "max")}
        if values is not None and values != same:
            return "value and values"
        values = same
    if not isinstance(values, dict):
        return None
    given = [_whole(values.get(label)) for label in ("min", "opt", "max")]
    if any(value is None for value in given):
        return None  # not a value: the schema refuses it too
    flat = [value if isinstance(value, list) else [value] for value in given]
    if len({isinstance(value, list) for value in given}) > 1 or len({len(value) for value in flat}) > 1:
        return "values of one length"
    for column in zip(*flat, strict=True):
        if list(column) != sorted(column) or not -(2**63) <= min(column) <= max(column) < 2**63:
            return "values ordered, within int64"
    shape = [len(given[0])] if isinstance(given[0], list) else []
    if any(label in entry and entry[label] != shape for label in ("min", "opt", "max")):
        return "shapes follow from values"
    return None


def _left_to_trtforge(document: dict[str, Any]) -> str | None:
    """The rule a document breaks that README "Spec reference" leaves to trtforge, if any: the
    JSON Schema says each key and its value's form; the rules between keys, and a target number's
    digits, are trtforge's alone."""
    precision = document.get("precision", "fp32")
    calibration = document.get("calibration")
    section = calibration if isinstance(calibration, dict) else {}
    if precision == "int8" and calibration is None:
        return "precision int8 needs calibration"
    if precision == "fp32" and calibration is not None:
        return "no calibration at fp32"
    if "fp16" in document and precision != "fp16":
        return "fp16 section at fp16 only"
    if precision == "fp16" and set(section) & set(CalibrationSpec.model_fields) - set(FP16_CALIBRATION_KEYS):
        return "int8's calibration keys at fp16"
    fp16 = document.get("fp16")
    if precision == "fp16" and calibration is not None and isinstance(fp16, dict) and fp16.get("keep_fp32") is not None:
        return "keep_fp32 replaces the guard that reads calibration"
    if section.get("max_excluded") is not None and section.get("exclude") != "auto":
        return "max_excluded needs exclude: auto"
    if section.get("mode") == "native" and (
        "auto" in (section.get("algorithm"), section.get("exclude")) or section.get("exclude")
    ):
        return "mode native: no auto, no exclude"
    targets = document.get("targets")
    if isinstance(targets, list) and any(
        isinstance(target, float) and 1 <= target < 100 and not re.fullmatch(r"\d+\.\d", str(target))
        for target in targets
    ):
        return "a target number has one minor digit"
    if isinstance(targets, list):
        spelt = [_capability(target) for target in targets if isinstance(target, str | float)]
        if len(set(map(str, spelt))) < len(spelt):
            return "one GPU listed twice"
    for profile in document.get("profiles") or []:
        for entry in profile.values() if isinstance(profile, dict) else []:
            rule = _values_rule(entry) if isinstance(entry, dict) else None
            if rule:
                return rule
    return None


@settings(max_examples=300)
@given(document=valid_specs())
def test_a_valid_spec_is_taken_by_trtforge_and_by_the_schema(folder: Path, document: dict[str, Any]) -> None:
    """What the schema (an editor, a CI linter) passes must build, and the reverse."""
    assert _schema_takes(document) == (True, "")
    assert _trtforge_takes(folder, document) == (True, "")


@settings(max_examples=600)
@given(document=mutated_specs())
# the schema took any number as a target, trtforge 1 to 99.9 (defect 1)
@example(document={"name": "a", "model": "conv.onnx", "targets": [0]})
@example(document={"name": "a", "model": "conv.onnx", "targets": [1e300]})
# trtforge refused 8, which JSON (and the schema) counts as 8.0, which it took (defect 2)
@example(document={"name": "a", "model": "conv.onnx", "targets": [4]})
# ... but 86 is CMake's sm86, not 86.0: both refuse a whole number from 20
@example(document={"name": "a", "model": "conv.onnx", "targets": [86]})
@example(document={"name": "a", "model": "conv.onnx", "targets": [86.0]})
@example(document={"name": "a", "model": "conv.onnx", "targets": [19]})
# the schema's "required" took `values: null` as values given: no shapes then (defect 3)
@example(document={"name": "a", "model": "conv.onnx", "profiles": [{"x": {"values": None}}]})
@example(document={"name": "a", "model": "conv.onnx", "profiles": [{"x": {"value": None}}]})
# the schema took YAML's .inf as a tolerance, which trtforge refuses (defect 4)
@example(document={"name": "a", "model": "conv.onnx", "accuracy": {"tolerances": {"*": {"max_abs": float("inf")}}}})
@example(document={"name": "a", "model": "conv.onnx", "accuracy": {"tolerances": {"*": {"snr_db_min": -float("inf")}}}})
def test_the_schema_and_trtforge_agree_on_one_change_to_a_valid_spec(folder: Path, document: dict[str, Any]) -> None:
    """A spec the editor's schema calls valid that trtforge refuses (or the reverse) sends a user to
    fix what is right or to build what fails."""
    schema, ours = _schema_takes(document), _trtforge_takes(folder, document)
    if ours[0]:
        assert schema == (True, ""), f"the schema refuses what trtforge takes: {schema[1]} {document}"
    elif schema[0]:
        assert _left_to_trtforge(document), f"the schema takes what trtforge refuses: {ours[1]} {document}"


# ---------------------------------------------------------------- any text: a Spec, or one line at its place

KEYS_AND_NEAR = st.one_of(
    st.sampled_from(ALL_KEYS), st.builds(lambda key, cut: key[:cut], st.sampled_from(ALL_KEYS), st.integers(1, 12))
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["8.6", "sm86", "auto", "1GiB", "conv.onnx", "*.npy", "int8", "fp16", "native", "qdq"]),
)
nested = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.one_of(KEYS_AND_NEAR, scalars), inner, max_size=4)
    ),
    max_leaves=20,
)
SNIPPETS = (
    "base: &b {min: [1], opt: [1], max: [1]}\n",
    "profiles:\n  - x: *b\n",
    "profiles: [{x: &a {min: [1], opt: [1], max: [1]}, y: *a}]\n",
    "accuracy: {<<: {max_samples: 3}}\n",
    "name: a\n",
    "name: b\n",
    "model: conv.onnx\n",
    "model: *nowhere\n",
    "? [a, b]\n: 1\n",
    "{[1]: 2}\n",
    "name: !!binary aGVsbG8=\n",
    "name: 2024-01-01\n",
    "targets: !!set {8.6, sm86}\n",
    "max_samples: 1e400\n",
    "accuracy: {max_samples: .nan}\n",
    "build: {workspace: 0x10}\n",
    "build: {optimization_level: 1:20}\n",
    "x: !!python/object:os.system ls\n",
    "--- a\n--- b\n",
    "- list root\n",
    "just text\n",
    "&x [*x]\n",
    "\ta: 1\n",
    "name: 'unclosed\n",
    "%YAML 1.2\n---\nname: a\n",
    "precision: int8\ncalibration: {data: d.npy, exclude: auto, max_excluded: 2}\n",
    "\ufeffname: a\n",
    "\x00\n",
)


@st.composite
def spec_texts(draw: st.DrawFn) -> str:
    """Text a user (or a tool, or a broken disk) may hand trtforge as a spec."""
    kind = draw(st.sampled_from(["text", "yaml", "spec", "edited", "snippets"]))
    if kind == "text":
        return draw(st.text(st.characters(exclude_categories=("Cs",)), max_size=200))
    if kind == "yaml":
        return _dump(draw(nested))
    text = _dump(draw(st.one_of(valid_specs(), mutated_specs())))
    if kind == "spec":
        return text
    if kind == "snippets":
        return text + "".join(draw(st.lists(st.sampled_from(SNIPPETS), min_size=1, max_size=3)))
    start = draw(st.integers(0, len(text)))
    end = draw(st.integers(start, min(len(text), start + 8)))
    inserted = draw(st.text(st.sampled_from(list(" \t\n:-[]{}&*!|>'\"#%@`,?\\\x00\x85\u2028xy19.")), max_size=6))
    return text[:start] + inserted + text[end:]


#: what YAML (and so libyaml's marks) counts as a line break
_YAML_BREAKS = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def _check_refusal(error: SpecError, path: Path, text: str | None) -> None:
    printed = one_line(str(error))
    assert len(printed.splitlines()) == 1 and printed.startswith(str(path)), printed
    assert error.exit_code == 2
    located = re.match(re.escape(str(path)) + r":(\d+): ", printed)
    if isinstance(error.__cause__, ValidationError):
        assert located, f"a problem at a key of the document names its line: {printed}"
    if located and text is not None:
        assert 1 <= int(located.group(1)) <= len(_YAML_BREAKS.split(text)), printed


@settings(max_examples=400)
@given(text=spec_texts())
# a last line with no line break and no ':' was named as the line after it, which the file lacks (defect 5)
@example(text="name: a\nmodel")
@example(text="name: a\nmodel: conv.onnx\r\nprofiles:\r\n  - x")
def test_any_text_is_a_spec_or_one_line_naming_the_file_and_line(folder: Path, text: str) -> None:
    """Whatever a spec file holds, trtforge answers with a Spec or exit 2 and one line saying where:
    any other exception is "internal error" (exit 1) and a traceback-less dead end for the user."""
    path = folder / "any.yaml"
    try:
        spec = parse_spec(text, path)
    except SpecError as error:
        _check_refusal(error, path, text)
    else:
        assert isinstance(spec, Spec) and spec.origin.path == path


@settings(max_examples=150)
@given(
    raw=st.one_of(
        st.binary(max_size=300),
        st.builds(
            bytes.__add__,
            st.sampled_from([b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf", b"name: a\n"]),
            st.binary(max_size=60),
        ),
    )
)
def test_any_bytes_are_a_spec_or_one_line_naming_the_file(folder: Path, raw: bytes) -> None:
    """A binary file, a UTF-16 one or a truncated one passed by mistake is exit 2 naming the file."""
    path = folder / "bytes.yaml"
    path.write_bytes(raw)
    try:
        load_spec(path)
    except InvalidInputError as error:
        assert isinstance(error, SpecError)
        _check_refusal(error, path, None)


# ---------------------------------------------------------------- a key one edit away: "did you mean"

#: (a valid spec holding the section, the path to the section, the section's model)
PLACES: tuple[tuple[dict[str, Any], tuple[Any, ...], type[BaseModel]], ...] = (
    ({"name": "a", "model": "conv.onnx"}, (), Spec),
    ({"name": "a", "model": "conv.onnx", "build": {}}, ("build",), BuildOptions),
    ({"name": "a", "model": "conv.onnx", "accuracy": {}}, ("accuracy",), AccuracySpec),
    (
        {"name": "a", "model": "conv.onnx", "precision": "int8", "calibration": {"data": "d.npy"}},
        ("calibration",),
        CalibrationSpec,
    ),
    ({"name": "a", "model": "conv.onnx", "precision": "fp16", "fp16": {}}, ("fp16",), Fp16Spec),
    (
        {"name": "a", "model": "conv.onnx", "accuracy": {"tolerances": {"*": {}}}},
        ("accuracy", "tolerances", "*"),
        Tolerance,
    ),
    (
        {"name": "a", "model": "conv.onnx", "profiles": [{"x": {"min": [1], "opt": [1], "max": [1]}}]},
        ("profiles", 0, "x"),
        ShapeRange,
    ),
    (
        {"name": "a", "model": "conv.onnx", "profiles": [{"x": {"values": {"min": 1, "opt": 1, "max": 1}}}]},
        ("profiles", 0, "x", "values"),
        ValueRange,
    ),
)
LETTERS = "abcdefghijklmnopqrstuvwxyz_0123456789"


def _distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    row = list(range(len(b) + 1))
    for i, char in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, other in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (char != other))
    return row[-1]


@st.composite
def typos(draw: st.DrawFn, keys: list[str]) -> str:
    key = draw(st.sampled_from(keys))
    at = draw(st.integers(0, len(key)))
    edit = draw(st.sampled_from(["insert", "delete", "replace", "case"]))
    if edit == "insert":
        typo = key[:at] + draw(st.sampled_from(LETTERS)) + key[at:]
    elif edit == "delete" or at == len(key):
        at = min(at, len(key) - 1)
        typo = key[:at] + key[at + 1 :]
    elif edit == "replace":
        typo = key[:at] + draw(st.sampled_from(LETTERS)) + key[at + 1 :]
    else:
        at = min(at, len(key) - 1)
        typo = key[:at] + key[at].upper() + key[at + 1 :]
    assume(typo and typo not in keys)
    return typo


@settings(max_examples=300)
@given(data=st.data())
def test_a_key_one_edit_from_a_valid_one_is_answered_with_it(folder: Path, data: st.DataObject) -> None:
    """A typo is the commonest spec error: the answer names the key meant, at the typo's line."""
    base, where, section = data.draw(st.sampled_from(PLACES))
    keys = list(section.model_fields)
    typo = data.draw(typos(keys))
    document = copy.deepcopy(base)
    at(document, where)[typo] = 1
    path = _write(folder, document, "typo.yaml")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    found = re.search(r"unknown key '(.*)' — did you mean '(.*)'\?$", str(caught.value))
    assert found and found.group(1) == typo, str(caught.value)
    assert found.group(2) in keys and _distance(typo.lower(), found.group(2)) <= 1, str(caught.value)
    typo_key = re.compile(rf"\s*(- )?['\"]?{re.escape(typo)}['\"]?: ")
    line = next(number for number, text in enumerate(path.read_text().splitlines(), 1) if typo_key.match(text))
    assert str(caught.value).startswith(f"{path}:{line}: "), str(caught.value)


# ---------------------------------------------------------------- written back out, the same spec


@settings(max_examples=200)
@given(document=valid_specs())
def test_a_loaded_spec_written_back_loads_as_the_same_spec(folder: Path, document: dict[str, Any]) -> None:
    """A tool that loads a spec, edits it and writes it back (or ``trtforge`` moving settings
    between files) must not change what it means: the same model, targets, profiles, settings."""
    spec = load_spec(_write(folder, document))
    again = load_spec(_write(folder, spec.model_dump(mode="json", exclude_unset=True), "again.yaml"))
    assert again.model_dump() == spec.model_dump()


def test_a_target_written_as_a_whole_number_is_that_capability(folder: Path) -> None:
    """``targets: [8, 12]`` is 8.0 and 12.0, as JSON and the schema read the numbers (it was exit 2)."""
    assert load_spec(_write(folder, {"name": "a", "model": "conv.onnx", "targets": [8, 12]})).targets == ["8.0", "12.0"]


@pytest.mark.parametrize(
    ("target", "hint"),
    [("86", "for sm86, write 8.6 or sm86"), ("120", "for sm120, write 12.0 or sm120"), ("86.0", "write it as 8.6")],
)
def test_a_target_number_from_20_is_refused_not_read_as_its_dot_0(folder: Path, target: str, hint: str) -> None:
    """``targets: [86]`` (CMake's CUDA_ARCHITECTURES spelling of sm86) was built as compute capability
    86.0 once whole numbers read as their ``.0``; before, it was exit 2. The schema refuses it too."""
    (folder / "spec.yaml").write_text(f"name: a\nmodel: conv.onnx\ntargets: [{target}]\n", encoding="utf-8")
    with pytest.raises(
        SpecError, match=rf":3: key 'targets.0': {re.escape(target)} is a whole number, no compute capability; {hint}"
    ):
        load_spec(folder / "spec.yaml")
    assert not _schema_takes({"name": "a", "model": "conv.onnx", "targets": [float(target)]})[0]


def test_a_typo_is_answered_with_the_key_one_edit_away(folder: Path) -> None:
    """``mnx`` is one edit from ``max``, two from ``min``: difflib rated both alike and offered 'min'."""
    document = {"name": "a", "model": "conv.onnx", "profiles": [{"x": {"min": [1], "opt": [1], "mnx": [1]}}]}
    with pytest.raises(SpecError, match=r"unknown key 'mnx' — did you mean 'max'\?$"):
        load_spec(_write(folder, document))
