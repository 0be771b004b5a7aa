"""The YAML model spec: one typed model, validated once, with errors that name file, line and key.

Relative paths are resolved against the spec file's folder at load time, so the rest of
trtforge only ever sees absolute paths.
"""

from __future__ import annotations

import codecs
import contextlib
import glob
import hashlib
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonDict
from pydantic_core import ErrorDetails, PydanticCustomError
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.cyaml import CParser
from yaml.reader import ReaderError
from yaml.resolver import Resolver

from trtforge.errors import InvalidInputError, SpecError, TrtforgeError, did_you_mean, first_line
from trtforge.jsonsafe import integral
from trtforge.model import SHAPE_TENSOR_DTYPES, ModelInfo, TensorDesc, model_files, not_a_file
from trtforge.tags import CAPABILITY_PATTERN, MAX_NAME_LENGTH, NAME_PATTERN, ComputeCapability, Precision

PROJECT_FILE = "trtforge.yaml"

#: A spec or project file is a few hundred bytes and a few dozen YAML nodes. Larger input is
#: refused before parsing (bytes) or while composing (nodes, counted as aliases would expand
#: them, and nesting), so a 30 MB file or a 400-byte alias bomb costs milliseconds, not gigabytes.
MAX_YAML_BYTES = 1024 * 1024
MAX_YAML_NODES = 20_000
MAX_YAML_DEPTH = 64

BackendChoice = Literal["auto", "tensorrt", "tensorrt-rtx"]
#: the largest dim in a profile: TensorRT-RTX 1.7's builder refuses a larger one ("Shape provided for
#: max is inconsistent with other shapes", an internal error), and no tensor that large fits in memory
MAX_DIM = 2**31 - 1


def _normalize_cc(value: Any) -> str:
    return str(ComputeCapability.parse(value))


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


#: a whole number from here is no GPU's major but CMake's spelling of one (``CUDA_ARCHITECTURES 86``
#: is sm86): refused, not read as ``86.0``
_SM_NUMBERS_FROM = 20


def _capability_text(value: Any) -> Any:
    """An unquoted ``8.6`` is a YAML number: read as the text it was written as (compute
    capabilities have one minor digit, so no number stands for two of them); a number with no
    fraction, ``8``, is ``8.0``, as JSON (and so the shipped schema) counts them one number, but
    ``86`` (or ``86.0``) is refused; anything else must already be text."""
    if isinstance(value, bool):
        return value
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if whole and value >= _SM_NUMBERS_FROM:
        sm = isinstance(value, int) and value < 1000  # 86, 120: CMake's CUDA_ARCHITECTURES spelling
        hint = f"for sm{value}, write {value // 10}.{value % 10} or sm{value}" if sm else "write it as 8.6 or sm86"
        raise ValueError(f"{value} is a whole number, no compute capability; {hint}")
    if isinstance(value, int):
        return f"{value}.0"
    if isinstance(value, float):
        return str(value)
    return value


#: ... and the schema refuses them too (JSON Schema's "integer" is any number with no fraction)
_NOT_SM_NUMBER: JsonDict = {"not": {"type": "integer", "minimum": _SM_NUMBERS_FROM}}

CapabilityText = Annotated[
    str,
    BeforeValidator(
        _capability_text,
        # a number's major is 1 to 99, as the text's: the schema took any number (0, -1, 1e300)
        json_schema_input_type=(
            Annotated[str, Field(pattern=CAPABILITY_PATTERN)]
            | Annotated[float, Field(ge=1, lt=100, json_schema_extra=_NOT_SM_NUMBER)]
        ),
    ),
    AfterValidator(_normalize_cc),
    Field(description='compute capability: "8.6", "sm86" or "sm_86"'),
]
#: a glob or a list of globs; the schema says so (the model holds a list)
Globs = Annotated[
    list[str],
    Field(min_length=1),
    BeforeValidator(_as_list, json_schema_input_type=str | Annotated[list[str], Field(min_length=1)]),
]


class _Strict(BaseModel):
    """No coercion: ``enabled: "yes"``, ``max_samples: "12"`` or ``min: [true, 1]`` are refused, as
    the JSON Schema refuses them (lax mode took them as true, 12 and 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


#: an integer setting: an int, or a float with no fraction (``jsonsafe.integral``); the schema says ``integer``
Integer = Annotated[int, BeforeValidator(integral)]
#: A shape tensor's value: a list for a rank-1 tensor, one integer for a rank-0 (scalar) one.
ShapeValue = list[Integer] | Integer
_VALUE_KEYS = ("min", "opt", "max")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _flat(value: ShapeValue) -> list[int]:
    return [value] if isinstance(value, int) else list(value)


def _shape_of(value: Any) -> list[int] | None:
    """The tensor shape a shape tensor's value implies ([] for a scalar); None if not a value."""
    value = integral(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return []
    if isinstance(value, list):
        return [len(value)]
    return None


class ValueRange(_Strict):
    """A shape tensor's values in one profile (Slice starts, Reshape shape, TopK k, ...)."""

    min: ShapeValue
    opt: ShapeValue
    max: ShapeValue

    @model_validator(mode="after")
    def _ordered(self) -> ValueRange:
        low, mid, high = (_flat(getattr(self, label)) for label in _VALUE_KEYS)
        if len({type(getattr(self, label)) for label in _VALUE_KEYS}) > 1 or not len(low) == len(mid) == len(high):
            raise ValueError(f"min, opt and max must have the same length, got {self.min}, {self.opt}, {self.max}")
        for index, (a, b, c) in enumerate(zip(low, mid, high, strict=True)):
            if not a <= b <= c:
                raise ValueError(f"need min <= opt <= max at position {index}, got {a}, {b}, {c}")
            if not _INT64_MIN <= a <= c <= _INT64_MAX:
                outside = a if a < _INT64_MIN else c
                raise ValueError(f"{outside} at position {index} is outside the int64 range of a shape tensor's values")
        return self

    def flat(self, label: str) -> list[int]:
        """The ``min``, ``opt`` or ``max`` values as the list TensorRT takes."""
        return _flat(getattr(self, label))


def _shape_range_schema(schema: dict[str, Any]) -> None:
    """Shapes for a tensor input, or values (which imply the shape) for a shape tensor."""
    schema.pop("required", None)
    given = {"not": {"type": "null"}}  # ``values: null`` is no values: "required" alone took it
    schema["anyOf"] = [
        {"required": list(_VALUE_KEYS)},
        {"required": ["values"], "properties": {"values": given}},
        {"required": ["value"], "properties": {"value": given}},
    ]


class ShapeRange(_Strict):
    """One input in one optimization profile: its min/opt/max shapes, or, for a shape tensor (an
    int32/int64 input TensorRT reads as shape data), its values; the shape follows from them."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, json_schema_extra=_shape_range_schema)

    min: list[Integer]
    opt: list[Integer]
    max: list[Integer]
    values: ValueRange | None = Field(None, description="a shape tensor's min/opt/max values")
    value: ShapeValue | None = Field(None, description="a shape tensor's one value (min = opt = max)")

    @model_validator(mode="before")
    @classmethod
    def _shape_from_values(cls, data: Any) -> Any:
        """``value: v`` is ``values: {min: v, opt: v, max: v}``; the shapes follow from the values."""
        if not isinstance(data, dict):
            return data
        if data.get("value") is not None:
            same = {label: data["value"] for label in _VALUE_KEYS}
            if data.get("values") not in (None, same):
                raise ValueError("give 'value' (one value) or 'values' (min/opt/max), not both")
            data = {**data, "values": same}
        values = data.get("values")
        shape = _shape_of(values.get("min")) if isinstance(values, dict) else None
        if shape is None:
            return data
        for label in _VALUE_KEYS:
            if label in data and data[label] != shape:
                raise ValueError(
                    f"a shape tensor's shape follows from its values ({shape}); drop '{label}: {data[label]}'"
                )
        return {**{label: shape for label in _VALUE_KEYS}, **data}

    @property
    def is_shape_input(self) -> bool:
        return self.values is not None

    def for_manifest(self) -> dict[str, list[int]]:
        """min/opt/max shapes; for a shape tensor also ``min_values``/``opt_values``/``max_values``
        (a scalar's value as a one-element list), so a reader knows the engine's range."""
        entry = {label: list(getattr(self, label)) for label in _VALUE_KEYS}
        if self.values is not None:
            entry.update({f"{label}_values": self.values.flat(label) for label in _VALUE_KEYS})
        return entry


#: The calibration keys an fp16 build reads: the overflow guard's data (``_feeds`` in
#: :mod:`trtforge.precision.overflow`); every other key is read at int8 only.
FP16_CALIBRATION_KEYS = ("data", "batch_size", "max_samples")


class CalibrationSpec(_Strict):
    data: Globs = Field(description=".npy/.npz globs, relative to the spec file")
    batch_size: Integer = Field(16, gt=0)
    max_samples: Integer = Field(512, gt=0)
    algorithm: Literal["entropy", "minmax", "percentile", "auto"] = Field(
        "entropy", description="auto: the one of entropy, minmax and percentile that the accuracy gate likes best"
    )
    percentile: float = Field(99.99, gt=0, le=100)
    mode: Literal["qdq", "native"] = "qdq"
    high_precision: Literal["fp16", "fp32"] = "fp16"
    exclude: list[str] | Literal["auto"] = Field(
        default_factory=list, description="node names kept out of INT8; auto: found by a sensitivity search"
    )
    # ``Integer`` with the bound before its validator: after it, the schema would say ``gt``, no JSON Schema word
    max_excluded: Annotated[int, Field(gt=0), BeforeValidator(integral)] | None = Field(
        None, description="exclude: auto keeps at most this many nodes out"
    )
    search_budget: float = Field(60.0, gt=0, description="seconds the exclude: auto search may take")

    @property
    def excluded(self) -> list[str]:
        """The explicit exclusion list (none while ``exclude: auto`` has not been searched)."""
        return [] if self.exclude == "auto" else self.exclude

    @field_validator("max_excluded")
    @classmethod
    def _bounds_auto_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        """At the key's own line (``exclude`` comes first, so it is read by now)."""
        if value is not None and info.data.get("exclude", "auto") != "auto":
            raise ValueError("max_excluded bounds exclude: auto; drop it, or set exclude: auto")
        return value

    @model_validator(mode="after")
    def _auto_needs_qdq(self) -> CalibrationSpec:
        if self.mode == "native" and "auto" in (self.algorithm, self.exclude):
            raise ValueError("algorithm: auto and exclude: auto need mode: qdq (they judge the Q/DQ graph)")
        if self.mode == "native" and self.exclude:
            # TensorRT's calibrator takes one scale per tensor and no per-layer precision: the engine
            # would quantize them anyway, while the gate judged the Q/DQ graph that keeps them out
            raise ValueError("exclude needs mode: qdq (native calibration cannot keep nodes out of INT8)")
        return self


#: the largest finite float: a schema's bound that refuses YAML's ``.inf`` (JSON has no infinity)
_FLOAT_MAX = sys.float_info.max


def _finite_schema(schema: dict[str, Any]) -> None:
    """Each number finite in the schema too: a YAML linter (check-jsonschema) took ``max_abs: .inf``."""
    for prop in schema["properties"].values():
        for branch in prop.get("anyOf", [prop]):
            if branch.get("type") == "number":
                branch.setdefault("minimum", -_FLOAT_MAX)
                branch.setdefault("maximum", _FLOAT_MAX)


class Tolerance(_Strict):
    """Upper bounds (max_abs, mean_abs, max_rel) and lower bounds (the *_min keys)."""

    # finite: the gate's report writes each limit, and JSON has no NaN or infinity (a .nan failed every check)
    model_config = ConfigDict(allow_inf_nan=False, json_schema_extra=_finite_schema)

    max_abs: float | None = Field(None, ge=0)
    mean_abs: float | None = Field(None, ge=0)
    max_rel: float | None = Field(None, ge=0)
    cosine_min: float | None = Field(None, ge=-1, le=1)
    snr_db_min: float | None = None
    top1_min: float | None = Field(None, ge=0, le=1)
    match_min: float | None = Field(
        None, ge=0, le=1, description="integer and boolean outputs: share of values equal to the reference's"
    )


class Fp16Spec(_Strict):
    keep_fp32: list[str] | None = Field(
        None,
        description="nodes kept in FP32 at precision fp16; absent: those whose activations overflow FP16; []: none",
    )


class AccuracySpec(_Strict):
    data: Globs | None = Field(None, description="absent: seeded random inputs per profile")
    labels: str | None = Field(None, description=".npy of int class labels, in data order")
    max_samples: Integer = Field(256, gt=0)
    tolerances: dict[str, Tolerance] = Field(default_factory=dict, description='per output name, or "*" for all')
    enabled: bool = True


#: the largest builder workspace a spec may ask for: above it TensorRT's ``set_memory_pool_limit``
#: fails with a type error (a size_t), and no machine has that memory
MAX_WORKSPACE = ByteSize(1 << 50)


#: a size as text, as pydantic's ByteSize reads it, but whole: ByteSize reads the start alone, so
#: "1GiB junk" was 1 GiB (units: b, k, kb, kib, kbit, kibit, ... to e, in any case)
SIZE_TEXT = r"\s*\d*\.?\d+\s*(?:[bB](?:[iI][tT])?|[kKmMgGtTpPeE](?:[iI]?[bB](?:[iI][tT])?)?)?\s*"


def _size_text(value: Any) -> Any:
    value = integral(value)
    if isinstance(value, str) and not re.fullmatch(SIZE_TEXT, value):
        raise ValueError(f"{value!r} is not a size: bytes, or a number and a unit, e.g. '512MiB' or '4GiB'")
    return value


def _workspace_in_range(size: ByteSize) -> ByteSize:
    if not 1 <= size <= MAX_WORKSPACE:
        raise ValueError(f"a workspace is 1 byte to {MAX_WORKSPACE.human_readable()}, e.g. '4GiB'")
    return size


class BuildOptions(_Strict):
    workspace: Annotated[
        ByteSize,
        BeforeValidator(_size_text),
        AfterValidator(_workspace_in_range),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": int(MAX_WORKSPACE)},
                    {"type": "string", "pattern": f"^{SIZE_TEXT}$"},
                ]
            }
        ),
    ] = Field(ByteSize(1 << 30), description='e.g. "1GiB", "512MiB" or bytes, at most 1PiB')
    optimization_level: Integer = Field(3, ge=0, le=5)
    timing_cache: bool = True
    version_compatible: bool = False
    hardware_compatibility: Literal["none", "ampere_plus", "same_compute_capability"] = "none"


class Spec(_Strict):
    """A model spec (version 1). See README "Spec reference"."""

    name: str = Field(pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH)
    model: str = Field(description="ONNX file, relative to the spec file")
    precision: Precision = "fp32"
    backend: BackendChoice = "auto"
    # absent: the default set; each GPU once (the schema sees equal spellings only: "8.6" twice)
    targets: list[CapabilityText] = Field(default_factory=list, min_length=1, json_schema_extra={"uniqueItems": True})
    profiles: list[dict[str, ShapeRange]] = Field(default_factory=list)
    calibration: CalibrationSpec | None = None
    fp16: Fp16Spec = Field(default_factory=Fp16Spec)
    accuracy: AccuracySpec = Field(default_factory=AccuracySpec)
    build: BuildOptions = Field(default_factory=BuildOptions)

    _origin: SpecOrigin | None = PrivateAttr(None)

    @field_validator("targets")
    @classmethod
    def _each_target_once(cls, targets: list[str]) -> list[str]:
        """One GPU listed twice (``"8.6"`` and ``sm86`` are one) would be built and recorded twice:
        the manifest refuses that after the whole build."""
        for index, target in enumerate(targets):
            if target in targets[:index]:
                cc = ComputeCapability.parse(target)
                raise ValueError(
                    f"{cc} is listed twice (items {targets.index(target)} and {index}; {cc}, {cc.sm} and "
                    f"sm_{cc.major}{cc.minor} are one GPU): list each target once"
                )
        return targets

    @field_validator("calibration")
    @classmethod
    def _calibration_where_read(
        cls, calibration: CalibrationSpec | None, info: ValidationInfo
    ) -> CalibrationSpec | None:
        """As ``fp16:`` at other precisions: an fp32 build never reads the section, while its data
        was checked and hashed as an input and its settings, typos included, went unread."""
        precision = info.data.get("precision")
        if calibration is not None and precision is not None and precision not in ("int8", "fp16"):
            raise ValueError(
                f"is read at precision int8 (and by fp16's overflow guard, its data) only, and this spec is "
                f"{precision}: remove the section, or set precision: int8"
            )
        return calibration

    @field_validator("calibration", mode="before")
    @classmethod
    def _int8_keys_at_int8(cls, calibration: Any, info: ValidationInfo) -> Any:
        """At fp16 only the overflow guard reads the section, and only its data: ``algorithm:
        minmax`` there was taken and ignored without a word. The keys the file gives (a default is
        no one's choice), in its order, before the section's own checks: a value of an unread key
        (``percentile: 200``, ``mode: native`` with ``exclude``) is not what is said first."""
        if info.data.get("precision") != "fp16" or not isinstance(calibration, dict):
            return calibration  # not a mapping: the section's own validation says so
        unread = [
            key for key in calibration if key in CalibrationSpec.model_fields and key not in FP16_CALIBRATION_KEYS
        ]
        if unread:
            others = f" (and {', '.join(unread[1:])}: int8's too)" if unread[1:] else ""
            guard = ", ".join(FP16_CALIBRATION_KEYS[:-1]) + f" and {FP16_CALIBRATION_KEYS[-1]}"
            message = (
                f"is read at precision int8 only, and this spec is fp16 (its overflow guard reads {guard} "
                f"alone): remove it{others}"
            )
            raise PydanticCustomError("int8_only", message, {"at": unread[0]})
        return calibration

    @field_validator("fp16")
    @classmethod
    def _fp16_section_at_fp16(cls, fp16: Fp16Spec, info: ValidationInfo) -> Fp16Spec:
        """Only an fp16 build reads the section: at fp32 or int8 a keep_fp32 list, typos included,
        was ignored without a word (an int8 build's unquantized layers take calibration.high_precision)."""
        precision = info.data.get("precision")
        if precision is not None and precision != "fp16":
            extra = "; its unquantized layers run in calibration.high_precision (fp32 keeps them in FP32)"
            raise ValueError(
                f"applies at precision fp16 only, and this spec is {precision}"
                f"{extra if precision == 'int8' else ''}: remove the section"
            )
        return fp16

    @model_validator(mode="after")
    def _int8_needs_calibration(self) -> Spec:
        if self.precision == "int8" and self.calibration is None:
            # said at the precision: line (``at``), not the file's first: the section is what is missing
            needed = "precision int8 needs a 'calibration:' section with 'data:'"
            raise PydanticCustomError("int8_needs_calibration", needed, {"at": "precision"})
        return self

    @model_validator(mode="after")
    def _calibration_read_by_the_guard(self) -> Spec:
        """At fp16 the overflow guard is the section's one reader, and a keep_fp32 list replaces
        the guard: the data, checked and hashed as an input, would decide nothing."""
        if self.precision == "fp16" and self.calibration is not None and self.fp16.keep_fp32 is not None:
            unread = (
                "is read at precision fp16 by the overflow guard alone, and fp16.keep_fp32 replaces the guard: "
                "remove the section, or fp16.keep_fp32 to let the guard choose on this data"
            )
            raise PydanticCustomError("calibration_unread", unread, {"at": "calibration"})
        return self

    @property
    def origin(self) -> SpecOrigin:
        if self._origin is None:
            raise RuntimeError("spec was not loaded from a file")
        return self._origin

    @property
    def model_path(self) -> Path:
        return Path(self.model)


@dataclass(frozen=True)
class SpecOrigin:
    """Where a spec came from: for error messages (line numbers) and for hashing."""

    path: Path
    sha256: str
    lines: dict[tuple[str | int, ...], int]

    def where(self, *loc: str | int) -> str:
        return locate(self.path, self.lines, *loc)


def locate(path: Path, lines: Mapping[tuple[str | int, ...], int], *loc: Any) -> str:
    """``file:line`` of the deepest located key on ``loc`` (``lines``: :func:`key_lines`). A key
    YAML reads as a number (``1:``, ``8.6:``) is in ``loc`` as that number and in ``lines`` as
    its text, as every mapping key is: each step is looked up as given, then as text."""
    found: tuple[Any, ...] = ()
    for part in loc:
        step = next((key for key in ((*found, part), (*found, str(part))) if key in lines), None)
        if step is None:
            break
        found = step
    line = lines.get(found)
    return f"{path}:{line}" if line is not None else str(path)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


class _BoundedLoader(Composer, CParser, SafeConstructor, Resolver):
    """libyaml's parser under PyYAML's composer, which counts every node as aliases would expand
    it (an alias costs the size of what it names) and stops at the bounds before any Python
    object is built: the constructor and the validator only ever see a bounded tree."""

    def __init__(self, text: str, path: Path) -> None:
        CParser.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._path = path
        self._sizes: dict[int, int] = {}  # id(node) -> its size with aliases expanded
        self._expanded = 0
        self._depth = 0

    def _refuse(self, event: yaml.Event, problem: str) -> SpecError:
        return SpecError(f"{self._path}:{event.start_mark.line + 1}: {problem}; a spec is a few dozen keys")

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        size = 1
        if isinstance(event, yaml.AliasEvent) and event.anchor in self.anchors:
            known = self._sizes.get(id(self.anchors[event.anchor]))
            if known is None:
                raise self._refuse(event, f"alias '*{event.anchor}' is inside its own anchor (a recursive structure)")
            size = known
        self._expanded += size
        if self._expanded > MAX_YAML_NODES:
            raise self._refuse(event, f"more than {MAX_YAML_NODES:,} YAML nodes with aliases expanded (an alias bomb?)")
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise self._refuse(event, f"nested deeper than {MAX_YAML_DEPTH} levels")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if not isinstance(event, yaml.AliasEvent):
            self._sizes[id(node)] = 1 + sum(self._sizes[id(child)] for child in _children(node))
            if isinstance(node, yaml.MappingNode):
                self._refuse_duplicate_keys(node)
        return node

    def _refuse_duplicate_keys(self, node: yaml.MappingNode) -> None:
        """PyYAML keeps the last of two equal keys without a word: a spec with ``name:`` twice
        would build under the second name."""
        first_lines: dict[object, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            line, key = key_node.start_mark.line + 1, (key_node.tag, key_node.value)
            if key in first_lines:
                raise SpecError(
                    f"{self._path}:{line}: key '{key_node.value}' is given twice (first at line "
                    f"{first_lines[key]}); keep one"
                )
            first_lines[key] = line


# PyYAML reads YAML 1.1, where a float needs a dot and a signed exponent: ``1e-3`` and ``1.5e3``
# were strings, which the spec's strict types refuse. YAML 1.2, JSON and the shipped JSON Schema
# read them as numbers, as users write tolerances; so does this loader.
_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


#: what YAML (and libyaml's marks) counts as a line break
_YAML_LINE_BREAKS = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def read_yaml(text: str, path: Path) -> tuple[Any, yaml.Node | None]:
    """The data and the node tree (for line numbers) of a spec or project file, parsed once,
    within the bounds above; any failure is one line naming the file and the line."""
    if len(text) > MAX_YAML_BYTES:
        raise SpecError(f"{path}: {len(text):,} characters, over the {MAX_YAML_BYTES:,} a spec may have; is it a spec?")
    loader = _BoundedLoader(text, path)
    try:
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), root
    except ReaderError as exc:  # a character YAML refuses: its place is a byte offset
        row = text.encode("utf-8")[: exc.position].count(b"\n") + 1  # libyaml counts bytes
        found, fix = (
            ("a NUL byte", "a UTF-16 file has them: save it as UTF-8")
            if exc.character == 0
            else (f"character #x{exc.character:04x}", "remove it")
        )
        raise SpecError(f"{path}:{row}: malformed YAML: {found} ({exc.reason}); {fix}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        # libyaml puts a problem at the end of a text with no final line break on the line after it
        # (``name: a\nmodel``: "line 3" of a 2-line file): the text's last line is where it is
        line = f":{min(mark.line + 1, len(_YAML_LINE_BREAKS.split(text)))}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        if mark is not None and "\t" in text[text.rfind("\n", 0, mark.index) + 1 : mark.index + 1]:
            problem += " (a tab: YAML indents with spaces only)"
        raise SpecError(f"{path}{line}: malformed YAML: {problem}") from exc
    finally:
        loader.dispose()


def read_yaml_file(path: Path, what: str) -> str:
    """The text of a spec or project file: a regular file (a named pipe would block) of at most
    MAX_YAML_BYTES, read no further than that."""
    problem = not_a_file(path)
    if problem:
        raise SpecError(f"{path}: {what} {problem}")
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read {what} ({exc.strerror})") from exc
    if len(raw) > MAX_YAML_BYTES:
        raise SpecError(
            f"{path}: {what} is larger than {MAX_YAML_BYTES:,} bytes (a spec is a few hundred); is it the right file?"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        found = (
            "UTF-16 (it starts with a byte-order mark)"
            if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
            else f"not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        )
        raise SpecError(f"{path}:{line}: cannot read {what}: {found}; save it as UTF-8") from exc


def key_lines(root: yaml.Node | None) -> dict[tuple[str | int, ...], int]:
    """The line of every key and list item of a YAML document, by its path (for error messages)."""
    lines: dict[tuple[str | int, ...], int] = {}
    if root is not None:
        _node_lines(root, (), lines)
    return lines


def _node_lines(node: yaml.Node, prefix: tuple[str | int, ...], out: dict) -> None:
    out.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            out[key] = key_node.start_mark.line + 1
            _node_lines(value_node, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _node_lines(item, (*prefix, index), out)


def _field_owner(loc: tuple[str | int, ...]) -> Any:
    """The annotation of what holds the last element of ``loc`` (a model, or a list or mapping)."""
    annotation: Any = Spec
    for part in loc[:-1]:
        annotation = _step(annotation, part)
    return annotation


def _field_names_at(loc: tuple[str | int, ...]) -> list[str]:
    """Valid keys of the model that holds the last element of ``loc`` (for "did you mean")."""
    annotation = _unwrap_model(_field_owner(loc))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap_model(annotation: Any) -> Any:
    """The model an optional or annotated field holds (``X | None``, ``Annotated[X, ...]``); a
    container's items are not the container (``dict[str, X]`` is stepped into by key)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return annotation


def _step(annotation: Any, part: str | int) -> Any:
    model = _unwrap_model(annotation)
    if isinstance(model, type) and issubclass(model, BaseModel) and isinstance(part, str):
        field = model.model_fields.get(part)
        return field.annotation if field else None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                return _step(arg, part)
    args = typing.get_args(annotation)
    if origin is list and args:
        return args[0]
    if origin is dict and args:
        return args[1]
    if origin is typing.Annotated and args:
        return _step(args[0], part)
    return None


def _sections(annotation: Any = Spec, path: tuple[str, ...] = ()) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Each key of the spec with the section that holds it (``workspace``: ``build``); a list's
    items and a mapping's names are ``[N]`` and ``NAME`` on the path."""
    model = _unwrap_model(annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        for name, field in model.model_fields.items():
            yield name, path
            yield from _sections(field.annotation, (*path, name))
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _sections(arg, path)
    elif origin is typing.Annotated or (origin is list and args):
        yield from _sections(args[0], (*path, "[N]") if origin is list else path)
    elif origin is dict and args:
        yield from _sections(args[1], (*path, "NAME"))


def _path_form(parts: Sequence[str | int]) -> tuple[str, ...]:
    """``loc`` as :func:`_sections` writes paths: a list's items ``[N]``, a mapping's names ``NAME``."""
    annotation: Any = Spec
    form: list[str] = []
    for part in parts:
        model = _unwrap_model(annotation)
        is_model = isinstance(model, type) and issubclass(model, BaseModel)
        form.append(str(part) if is_model else "[N]" if isinstance(part, int) else "NAME")
        annotation = _step(annotation, part)
    return tuple(form)


def _belongs_under(loc: tuple[str | int, ...]) -> str:
    """Where a key given too high up goes (``workspace:`` at the top: under ``build:``;
    ``accuracy: {max_abs: ..}``: under ``accuracy.tolerances.NAME:``). A key inside another section
    is no such key (``fp16: {exclude: ..}`` is not ``calibration.exclude``, which fp16 never reads;
    a tolerance's ``min:`` is no profile's): no place is named for it."""
    here = _path_form(loc[:-1])
    places = dict.fromkeys(
        ".".join(path).replace(".[N]", "[N]")
        for key, path in _sections()
        if key == loc[-1] and path and path[: len(here)] == here
    )
    return f" here: it belongs under {' or '.join(f'{place}:' for place in places)}" if places else ""


def _name_skipped(loc: tuple[str | int, ...]) -> str | None:
    """``tolerances: {cosine_min: 0.9}``: a setting of one entry given where a mapping of names
    to entries expects a name; the fix, or None when ``loc`` is no such place."""
    container = _field_owner(loc)
    args = typing.get_args(container)
    entry = _unwrap_model(args[1]) if typing.get_origin(container) is dict and len(args) == 2 else None
    if not (isinstance(entry, type) and issubclass(entry, BaseModel) and loc[-1] in entry.model_fields):
        return None
    owner = _unwrap_model(_field_owner(loc[:-1]))
    field = owner.model_fields.get(str(loc[-2])) if isinstance(owner, type) and issubclass(owner, BaseModel) else None
    meaning = f" ({field.description})" if field is not None and field.description else ""
    parent, setting = ".".join(str(part) for part in loc[:-1]), loc[-1]
    return (
        f"'{setting}' goes under a name: '{parent}' maps names to settings{meaning}; write `NAME: {{{setting}: ...}}`"
    )


def key_not_text(where: str, loc: Sequence[str | int], value: Any) -> str:
    """A mapping key YAML read as a number, a boolean or null (``495:``, ``8.6:``, ``yes:``): names
    (a tensor's, a GPU's) are text, and one YAML turned into another value is refused, not guessed."""
    key = ".".join([*(str(part) for part in loc[:-2]), str(value)])
    # no example of the quoted key: the value is not always the text (YAML reads 0017: as 15)
    return f"{where}: YAML reads key '{key}' as {value!r}, not text: put the key in quotes, as the file spells it"


def _message(error: ErrorDetails, origin: SpecOrigin) -> str:
    # a rule between keys says which key it is about (``at``), where pydantic gives the model's loc
    at = error.get("ctx", {}).get("at")
    loc = (*error["loc"], at) if isinstance(at, str) else tuple(error["loc"])
    key = ".".join(str(part) for part in loc) or "(top level)"
    where = origin.where(*loc)
    if error["type"] == "extra_forbidden":
        hint = did_you_mean(str(loc[-1]), _field_names_at(loc)) or _belongs_under(loc)
        return f"{where}: unknown key '{loc[-1]}'{hint or ' (see trtforge schema for valid keys)'}"
    if error["type"] == "missing":
        return f"{where}: missing required key '{key}'"
    if loc and loc[-1] == "[key]":
        return key_not_text(where, loc, error.get("input"))
    skipped = _name_skipped(loc) if error["type"] == "model_type" and loc else None
    if skipped is not None:
        return f"{where}: key '{key}': {skipped}"
    message = error["msg"].removeprefix("Value error, ")
    if "input" in error and error["type"] not in ("value_error",) and not isinstance(error["input"], dict):
        return f"{where}: key '{key}': {message} (got {error['input']!r})"
    return f"{where}: key '{key}': {message}"


def _first_to_fix(errors: list[ErrorDetails]) -> ErrorDetails:
    """An unknown key first: a misspelt key is also a missing one (``mx:`` for ``max:``), and
    "did you mean 'max'" says how to fix both. A value that fits no member of a union (a list or
    ``auto``) gets one error at the key, saying every form it may take."""
    first = next((error for error in errors if error["type"] == "extra_forbidden"), errors[0])
    loc = _key_path(first["loc"])
    if loc == tuple(first["loc"]):
        return first
    forms = [error["msg"] for error in errors if _key_path(error["loc"]) == loc]
    return ErrorDetails(**{**first, "loc": loc, "msg": " or ".join(dict.fromkeys(forms))})


#: how pydantic tags the member of a union in an error's ``loc`` (``list[str]``, ``literal['auto']``)
_UNION_MEMBER = re.compile(r"^(list|dict|tuple|set|literal|union|nullable|function-[a-z]+|[a-z]+-or-[a-z]+)\[.*\]$")


def _key_path(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """``loc`` without pydantic's union member tags: the keys of the spec alone (a tensor may be
    named ``x[0]``, so only pydantic's own tag forms are dropped)."""
    return tuple(part for part in loc if not (isinstance(part, str) and _UNION_MEMBER.match(part)))


def _resolve(base: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path))


def parse_spec(text: str, path: Path) -> Spec:
    """Validate spec text; paths are resolved against ``path``'s folder."""
    sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    data, root = read_yaml(text, path)
    origin = SpecOrigin(path=path, sha256=sha256, lines=key_lines(root))
    if not isinstance(data, dict):
        raise SpecError(f"{origin.where()}: a spec is a YAML mapping with at least 'name:' and 'model:'")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_message(_first_to_fix(exc.errors()), origin)) from exc
    base = path.parent
    updates: dict[str, Any] = {"model": _resolve(base, spec.model)}
    if spec.calibration is not None:
        updates["calibration"] = spec.calibration.model_copy(
            update={"data": [_resolve(base, pattern) for pattern in spec.calibration.data]}
        )
    accuracy = spec.accuracy
    updates["accuracy"] = accuracy.model_copy(
        update={
            "data": [_resolve(base, p) for p in accuracy.data] if accuracy.data else None,
            "labels": _resolve(base, accuracy.labels) if accuracy.labels else None,
        }
    )
    resolved = spec.model_copy(update=updates)
    resolved._origin = origin
    return resolved


def load_spec(path: Path) -> Spec:
    if path.name == PROJECT_FILE:
        raise SpecError(
            f"{path}: this is the project file, not a model spec; pass model specs, or their folder "
            f"({path.parent}{os.sep}: every spec in it, this file excluded)"
        )
    text = read_yaml_file(path.absolute(), "spec file")  # absolute, as the errors of its lines name it
    return parse_spec(text, path.resolve())


def spec_input_files(path: Path) -> Iterator[Path]:
    """The spec file ``path`` and, where it loads, its model (with its external data files),
    calibration and accuracy data and labels: inputs a report a command writes at its end
    (``--junit``) must not replace. Loaded when asked (a report file that exists): a spec that does
    not load names no model, and a glob that matches nothing no file; their own errors come when
    the spec is built."""
    yield path
    try:
        spec = load_spec(path)
    except TrtforgeError:
        return
    yield spec.model_path
    with contextlib.suppress(TrtforgeError, OSError):  # a model that does not read: its error comes at the build
        yield from model_files(spec.model_path)[1:]  # its external data files
    data = (("calibration", spec.calibration.data if spec.calibration else None), ("accuracy", spec.accuracy.data))
    for section, patterns in data:
        with contextlib.suppress(TrtforgeError, OSError):
            yield from expand_globs(patterns or [], spec.origin.where(section, "data"))
    if spec.accuracy.labels:
        yield Path(spec.accuracy.labels)


def _output_identity(spec: Spec, flavor: str) -> tuple[Any, ...]:
    """What names a spec's artifact before it is built (the parts of ``{name}-{precision}-{tag}``
    a spec decides): two specs with one identity would write one file and both report it."""
    return (
        spec.name,
        spec.precision,
        flavor,
        spec.build.version_compatible,
        spec.build.hardware_compatibility == "ampere_plus",
        tuple(sorted(spec.targets)),
    )


def colliding_specs(
    specs: Mapping[str, Spec], flavor_of: Callable[[Spec], str]
) -> list[tuple[list[str], InvalidInputError]]:
    """Groups of specs (by path) that would write one artifact, each with the line that names
    them all (exit 2): ``build`` and ``ci`` refuse them before anything is built, as the second
    would replace the first's artifact. A spec whose ``flavor_of`` raises is left to its build."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for path, spec in specs.items():
        try:
            identity = _output_identity(spec, flavor_of(spec))
        except Exception:  # that spec's build chooses again and reports why it cannot (a bug too)
            continue
        groups.setdefault(identity, []).append(path)
    refused = []
    for identity, group in groups.items():
        if len(group) > 1:
            name, precision = identity[:2]
            refused.append(
                (
                    group,
                    InvalidInputError(
                        f"{' and '.join(group)} {'both' if len(group) == 2 else 'all'} build {name} {precision} for "
                        "the same backend and targets, so they would write one artifact: give each spec its own 'name:'"
                    ),
                )
            )
    return refused


def expand_globs(patterns: list[str], where: str) -> list[Path]:
    """Files matching the patterns, sorted for a deterministic order; empty is an error."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(Path(match) for match in glob.glob(pattern, recursive=True))
        if not matches:
            raise SpecError(f"{where}: '{pattern}' matches no file; check the path (relative to the spec)")
        folder = next((match for match in matches if match.is_dir()), None)
        if folder is not None:
            raise SpecError(
                f"{where}: '{pattern}' matches the folder {folder}; name its files, e.g. '{folder / '*.npy'}'"
            )
        files.extend(matches)
    return files


def check_profiles(spec: Spec, model: ModelInfo) -> None:
    """Profiles against the graph inputs: names, ranks, static dims, min <= opt <= max, coverage."""
    origin = spec.origin
    dynamic = [tensor for tensor in model.inputs if tensor.is_dynamic]
    known = [tensor.name for tensor in model.inputs]
    if dynamic and not spec.profiles:
        names = ", ".join(tensor.name for tensor in dynamic)
        raise SpecError(
            f"{origin.where('profiles')}: input '{dynamic[0].name}' has dynamic dims "
            f"{list(dynamic[0].shape)}; add 'profiles:' with min/opt/max shapes for: {names}"
        )
    for index, profile in enumerate(spec.profiles):
        for name, shapes in profile.items():
            where = origin.where("profiles", index, name)
            tensor = model.input(name)
            if tensor is None:
                raise SpecError(
                    f"{where}: profile {index} names input '{name}', which the model does not have"
                    f"{did_you_mean(name, known)} (inputs: {', '.join(known)})"
                )
            if shapes.is_shape_input:
                _check_shape_input(where, index, tensor, shapes)
                continue
            for label in ("min", "opt", "max"):
                shape = getattr(shapes, label)
                if len(shape) != len(tensor.shape):
                    raise SpecError(
                        f"{where}: profile {index} input '{name}' {label} {shape} has rank {len(shape)}, "
                        f"the model input {list(tensor.shape)} has rank {len(tensor.shape)}"
                    )
                for axis, (dim, model_dim) in enumerate(zip(shape, tensor.shape, strict=False)):
                    static = isinstance(model_dim, int) and model_dim >= 0
                    if static and dim != model_dim:
                        raise SpecError(
                            f"{where}: profile {index} input '{name}' {label}[{axis}] is {dim}, "
                            f"but that dim is static ({model_dim}) in the model"
                        )
                    if not 0 <= dim <= MAX_DIM:  # 0 is an empty tensor, which TensorRT builds for
                        raise SpecError(
                            f"{where}: profile {index} input '{name}' {label}[{axis}] is {dim}; "
                            f"a dim is 0 to {MAX_DIM:,}"
                        )
                    if dim == 0 and not static and label != "min":
                        raise SpecError(
                            f"{where}: profile {index} input '{name}' {label}[{axis}] is 0: an engine built "
                            "for empty tensors only computes nothing; give opt and max at least 1 (min may be 0)"
                        )
            for axis, (low, mid, high) in enumerate(zip(shapes.min, shapes.opt, shapes.max, strict=False)):
                if not low <= mid <= high:
                    raise SpecError(
                        f"{where}: profile {index} input '{name}' axis {axis}: need min <= opt <= max, "
                        f"got {low}, {mid}, {high}"
                    )
        missing = [tensor.name for tensor in dynamic if tensor.name not in profile]
        if missing:
            raise SpecError(
                f"{origin.where('profiles', index)}: profile {index} has no shapes for dynamic input "
                f"'{missing[0]}'; every profile covers every dynamic input"
            )
        _check_named_dims(origin, index, profile, model)


def _check_named_dims(origin: SpecOrigin, index: int, profile: Mapping[str, ShapeRange], model: ModelInfo) -> None:
    """A dim the model names alike in several inputs (``N``) is one size at run time: TensorRT
    refuses a profile whose ranges for it differ ("contradictory kMIN/kMAX constraints", exit 3
    after the parse), so it is named here, at the input that disagrees."""
    first: dict[str, tuple[str, list[int]]] = {}
    for name, shapes in profile.items():
        tensor = model.input(name)
        if tensor is None or shapes.is_shape_input:
            continue
        for axis, dim in enumerate(tensor.shape):
            if not isinstance(dim, str):
                continue
            span = [shapes.min[axis], shapes.opt[axis], shapes.max[axis]]
            other, other_span = first.setdefault(dim, (name, span))
            if other_span != span:
                raise SpecError(
                    f"{origin.where('profiles', index, name)}: profile {index} gives dim '{dim}' of input '{name}' "
                    f"min/opt/max {span}, but {other_span} for input '{other}': the model names both '{dim}', "
                    "one size at run time; give them the same range"
                )


def _check_shape_input(where: str, index: int, tensor: TensorDesc, shapes: ShapeRange) -> None:
    """Values given for an input: it must be able to be a shape tensor (int32/int64, rank 0 or 1)
    and have the length the values have; whether TensorRT reads it as one is known after parsing."""
    if tensor.dtype not in SHAPE_TENSOR_DTYPES:
        raise SpecError(
            f"{where}: profile {index} gives values for input '{tensor.name}', which is {tensor.dtype}; values are "
            f"for shape tensors (int32/int64 inputs TensorRT reads as shapes): give '{tensor.name}' min/opt/max shapes"
        )
    if len(tensor.shape) != len(shapes.min) or any(
        isinstance(dim, int) and dim >= 0 and dim != given for dim, given in zip(tensor.shape, shapes.min, strict=False)
    ):
        expected = "one integer" if not tensor.shape else f"a list of {tensor.shape[0]} integers"
        raise SpecError(
            f"{where}: profile {index} input '{tensor.name}' has shape {list(tensor.shape)}: its values are "
            f"{expected}, got {shapes.values.min if shapes.values else None}"
        )


def check_shape_inputs(
    profiles: Sequence[Mapping[str, ShapeRange]],
    shape_inputs: Mapping[str, tuple[int, ...]],
    origin: SpecOrigin | None,
) -> None:
    """Values for exactly the inputs TensorRT reads as shape tensors (``shape_inputs``, name ->
    shape, known after parsing): a missing one is named with the key to add, instead of
    TensorRT's "no optimization profile has been defined"."""

    def where(*loc: str | int) -> str:
        return origin.where(*loc) if origin else "spec"

    for index, profile in enumerate(profiles or [{}]):
        for name, shape in shape_inputs.items():
            entry = profile.get(name)
            if entry is None or not entry.is_shape_input:
                example = "0" if not shape else "[" + ", ".join("0" for _ in range(shape[0])) + "]"
                located = where("profiles", index, name) if entry else where("profiles", index)
                raise SpecError(
                    f"{located}: profile {index}: input '{name}' is a shape tensor: give its values, e.g. "
                    f"`{name}: {{value: {example}}}` (`values: {{min, opt, max}}` for a range)"
                    + ("" if profiles else " under 'profiles:'")
                )
        for name, entry in profile.items():
            if entry.is_shape_input and name not in shape_inputs:
                raise SpecError(
                    f"{where('profiles', index, name)}: profile {index}: input '{name}' is not a shape tensor "
                    f"(TensorRT reads it as data): give its shapes `{name}: {{min: [...], opt: [...], max: [...]}}`, "
                    "not values"
                )


def refused_values(
    profiles: Sequence[Mapping[str, ShapeRange]],
    names: Sequence[str],
    origin: SpecOrigin | None,
    builder: str,
    reason: str,
    point: tuple[int, str] | None = None,
) -> SpecError:
    """Shape-tensor values the builder refused (``reason``): the values of ``names`` (every
    profile's, or those of ``point``, the profile and min/opt/max it named) are the spec's, so
    the spec's line is named (exit 2), not the build (exit 3)."""
    indices = [point[0]] if point else [index for index, profile in enumerate(profiles) if names[0] in profile]
    listed = []
    for index in indices:
        for name in names:
            entry = profiles[index].get(name)
            values = entry.values if entry else None
            if values is None:
                continue
            if point:
                shown = f"{point[1]} values {values.flat(point[1])}"
            elif values.min == values.opt == values.max:
                shown = f"value {values.flat('min')}"
            else:
                shown = ", ".join(f"{label} {values.flat(label)}" for label in _VALUE_KEYS)
                shown = f"values {shown}"
            listed.append(f"profile {index} '{name}' {shown}")
    where = origin.where("profiles", indices[0], names[0]) if origin else "spec"
    inputs = ", ".join(f"'{name}'" for name in names)
    which = "" if len(indices) == 1 else " (one of these profiles': TensorRT does not say which)"
    return SpecError(
        f"{where}: {builder} cannot build with the shape-tensor values {'; '.join(listed)}{which} (layer {reason}); "
        f"change the values of {inputs} in the spec to ones the model takes"
    )


def spec_json_schema() -> dict[str, Any]:
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "trtforge model spec (version 1)"
    return schema
