"""The manifest stamped beside every engine (schema ``trtforge/manifest/v1``).

It is what the loader, ``check``, ``pull`` and ``verify`` trust instead of opening the engine.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonDict

from trtforge.errors import IncompatibleEngineError, InvalidInputError, did_you_mean
from trtforge.fsutil import atomic_write_text
from trtforge.jsonsafe import bounded_json, integral, json_sha256
from trtforge.tags import (
    AMPERE,
    FLAVOR_RTX,
    MACHINES,
    NAME_RULE,
    PRECISIONS,
    RTX_COMPUTE_CAPABILITIES,
    ComputeCapability,
    EngineTag,
    Flavor,
    Platform,
    Precision,
    artifact_stem,
    parse_trt_version,
    valid_name,
)

ENGINE_SUFFIX = ".engine"
MANIFEST_SUFFIX = ".manifest.json"
#: in-toto's file name convention (JSON Lines of envelopes), as SLSA's generators write it
ATTESTATION_SUFFIX = ".intoto.jsonl"
#: the accuracy gate's report beside its engine, and the one a rejected build leaves (no engine)
REPORT_SUFFIX = ".accuracy.json"
REJECTED_SUFFIX = ".rejected.accuracy.json"
#: every file an artifact has (a rejected build's report ends in REPORT_SUFFIX too): a report
#: named so (``--junit x.engine``) is refused, as the build would write over it or it over the build
ARTIFACT_SUFFIXES = (ENGINE_SUFFIX, MANIFEST_SUFFIX, REPORT_SUFFIX, ATTESTATION_SUFFIX)
#: the ``accuracy`` summary's key for the sha256 of its report's bytes, as written
REPORT_SHA256 = "report_sha256"

#: The manifest's ``accuracy`` when the spec turns the gate off.
SKIPPED_ACCURACY: dict[str, Any] = {"skipped": True, "reason": "accuracy.enabled is false in the spec"}

#: a real manifest is a few KB (and a few levels deep: ``jsonsafe.MAX_JSON_DEPTH``); anything beyond
#: is refused before json.loads, so a hostile file cannot exhaust memory or Python's recursion limit
MAX_MANIFEST_BYTES = 1024 * 1024
#: an accuracy report is a few KB per model output: one read from a registry or beside an engine
#: to publish is bounded by this
MAX_REPORT_BYTES = 4 * 1024 * 1024


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


#: an integer: an int, or a number with no fraction (``64.0``), which the shipped schema's
#: ``integer`` passes too (``jsonsafe.integral``)
Integer = Annotated[int, BeforeValidator(integral)]
#: a sha256 as trtforge writes it: 64 lowercase hex digits
SHA256_PATTERN = r"^[0-9a-f]{64}$"
#: ... and no more, in the shipped schema: Python's ``re`` (the ``jsonschema`` library's) lets ``$``
#: match before a final newline, so the pattern alone passed ``"<64 hex>\n"``, which trtforge refuses
SHA256_SCHEMA: JsonDict = {"maxLength": 64}


class ArtifactInfo(_Frozen):
    file: str
    sha256: str = Field(pattern=SHA256_PATTERN, json_schema_extra=SHA256_SCHEMA)
    size: Integer = Field(ge=0)


class SourceInfo(_Frozen):
    """``onnx_sha256``: the .onnx file's sha256. ``model_sha256``: where the model keeps weights in
    external data files, the digest of its content (``trtforge.model.content_sha256``: the .onnx
    and each data file it names), which ``verify`` checks too; absent for a model without external
    data, and in manifests written before it existed."""

    onnx_sha256: str
    spec_sha256: str
    model_sha256: str | None = Field(default=None, pattern=SHA256_PATTERN, json_schema_extra=SHA256_SCHEMA)

    @model_serializer(mode="wrap")
    def _absent_when_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``model_sha256`` absent, not null, where there is none: such a manifest (and what its
        signature covers) reads back and writes out as it did before the field existed."""
        data: dict[str, Any] = handler(self)
        if data.get("model_sha256") is None:
            data.pop("model_sha256", None)
        return data


#: a profile entry's keys: shapes, and a shape tensor's values
_PROFILE_KEYS = ("min", "opt", "max")
_PROFILE_VALUE_KEYS = tuple(f"{key}_values" for key in _PROFILE_KEYS)


def _capability(text: str) -> ComputeCapability:
    """A capability as the build writes it (``8.6``); any other spelling is an edit."""
    cc = ComputeCapability.parse(text)
    if str(cc) != text:
        raise ValueError(f"'{text}' is not a compute capability as trtforge writes it ('{cc}')")
    return cc


class TensorRTInfo(_Frozen):
    flavor: Flavor
    version: str
    version_compatible: bool

    @field_validator("version")
    @classmethod
    def _numeric(cls, version: str) -> str:
        try:  # the one rule (``10.3.0.26``, ``1.7.1.116``), with a minor: a plain engine's tag carries
            parts = parse_trt_version(version)  # major.minor (``trt10`` alone is a version-compatible one's)
        except ValueError:
            parts = ()
        if len(parts) < 2:
            raise ValueError(f"'{version}' is not a TensorRT version (such as 10.3.0.26)")
        if ".".join(map(str, parts)) != version:
            raise ValueError(f"'{version}' is not a TensorRT version as a runtime reports it (leading zeros)")
        return version


class GpuInfo(_Frozen):
    compute_capabilities: list[str]
    and_later_from: str | None
    hardware_compatibility: Literal["none", "ampere_plus", "same_compute_capability"]
    build_device: dict[str, Any] | None

    @field_validator("compute_capabilities")
    @classmethod
    def _capabilities(cls, capabilities: list[str]) -> list[str]:
        for text in capabilities:
            _capability(text)
        if len(set(capabilities)) != len(capabilities):
            raise ValueError("a compute capability is listed twice")
        return capabilities

    @field_validator("and_later_from")
    @classmethod
    def _later_from(cls, text: str | None) -> str | None:
        if text is not None:
            _capability(text)
        return text

    @model_validator(mode="after")
    def _consistent(self) -> GpuInfo:
        """The GPU facts as a build writes them: ``ampere_plus`` is 8.0 and later and lists no GPU;
        otherwise the GPUs are listed, and ``same_compute_capability`` names its build GPU."""
        if self.hardware_compatibility == "ampere_plus":
            if self.and_later_from != str(AMPERE) or self.compute_capabilities:
                raise ValueError(f"ampere_plus means and_later_from '{AMPERE}' and no compute_capabilities")
            return self
        if self.and_later_from is not None or not self.compute_capabilities:
            raise ValueError(
                f"hardware_compatibility {self.hardware_compatibility} lists its compute_capabilities "
                "and has no and_later_from"
            )
        if self.hardware_compatibility == "same_compute_capability":
            built = (self.build_device or {}).get("compute_capability")
            if not isinstance(built, str) or [built] != self.compute_capabilities:
                raise ValueError("same_compute_capability means build_device.compute_capability is the one listed")
            _capability(built)
        return self


class PlatformInfo(_Frozen):
    os: Literal["linux", "windows"]
    machine: str

    @field_validator("machine")
    @classmethod
    def _known(cls, machine: str) -> str:
        if machine not in MACHINES:
            raise ValueError(f"'{machine}' is not a machine as trtforge writes it ({', '.join(MACHINES)})")
        return machine


class TensorInfo(_Frozen):
    name: str
    mode: Literal["input", "output"]
    dtype: str
    shape: list[Integer]


class BuildInfo(_Frozen):
    trtforge_version: str
    created_utc: str
    seconds: float


class Manifest(_Frozen):
    schema_: Literal["trtforge/manifest/v1"] = Field("trtforge/manifest/v1", alias="schema")
    name: str
    precision: Precision
    tag: str
    artifact: ArtifactInfo
    source: SourceInfo
    tensorrt: TensorRTInfo
    gpu: GpuInfo
    platform: PlatformInfo
    profiles: list[dict[str, dict[str, list[Integer]]]]
    io: list[TensorInfo]
    calibration: dict[str, Any] | None
    accuracy: dict[str, Any] | None
    build: BuildInfo
    signature: dict[str, str] | None = None
    fp16: dict[str, Any] | None = None  # precision fp16: the nodes kept in FP32, and why

    # no populate_by_name: ``schema_`` (the Python name) is no key of the file; read as ``schema`` it left a
    # file another reader refuses, under a signature that verified
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        """The spec's name rule: publish and pull turn the name into paths and OCI tags."""
        if not valid_name(name):
            raise ValueError(f"name '{name}' is not a valid artifact name: {NAME_RULE}")
        return name

    @field_validator("profiles")
    @classmethod
    def _profiles(cls, profiles: list[dict[str, dict[str, list[int]]]]) -> list[dict[str, dict[str, list[int]]]]:
        """Each input's min <= opt <= max, of one rank; values for all three bounds or none."""
        for profile in profiles:
            for name, entry in profile.items():
                extra = set(entry) - set(_PROFILE_KEYS)
                if not set(_PROFILE_KEYS) <= set(entry) or extra not in (set(), set(_PROFILE_VALUE_KEYS)):
                    raise ValueError(f"input '{name}' needs min, opt and max (and for a shape tensor their _values)")
                low, opt, high = (entry[key] for key in _PROFILE_KEYS)
                if not len(low) == len(opt) == len(high) or not all(
                    0 <= a <= b <= c for a, b, c in zip(low, opt, high, strict=True)
                ):
                    raise ValueError(f"input '{name}': min <= opt <= max must hold, for shapes of one rank")
        return profiles

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        """The tag is rendered from the manifest's own facts: an edited GPU list or version shows.
        TensorRT-RTX compiles for listed GPUs, and its engines load only on the release that built
        them (NVIDIA's "Engine Compatibility" page): no build of it writes other facts."""
        if self.tensorrt.flavor == FLAVOR_RTX and self.tensorrt.version_compatible:
            raise ValueError("tensorrt-rtx engines are never version-compatible (they load on their own release only)")
        if self.tensorrt.version_compatible and parse_trt_version(self.tensorrt.version)[:2] < (8, 6):
            raise ValueError("version compatibility begins with TensorRT 8.6: no earlier build writes it")
        if self.tensorrt.flavor == FLAVOR_RTX and self.gpu.hardware_compatibility != "none":
            raise ValueError("tensorrt-rtx engines have hardware_compatibility none (it compiles for listed GPUs)")
        capabilities = tuple(ComputeCapability.parse(cc) for cc in self.gpu.compute_capabilities)
        foreign = [str(cc) for cc in capabilities if cc not in RTX_COMPUTE_CAPABILITIES]
        if self.tensorrt.flavor == FLAVOR_RTX and foreign:
            raise ValueError(f"tensorrt-rtx compiles for no compute capability {', '.join(foreign)}")
        tag = EngineTag(
            flavor=self.tensorrt.flavor,
            version=self.tensorrt.version,
            version_compatible=self.tensorrt.version_compatible,
            capabilities=capabilities,
            and_later_from=ComputeCapability.parse(self.gpu.and_later_from) if self.gpu.and_later_from else None,
            platform=Platform(self.platform.os, self.platform.machine),
        )
        if self.tag != tag.render():
            raise ValueError(f"tag '{self.tag}' does not say what the manifest does ('{tag}'): edited by hand?")
        engine_file = artifact_stem(self.name, self.precision, tag) + ENGINE_SUFFIX
        if self.artifact.file != engine_file:  # the build's name, never a path
            raise ValueError(f"artifact.file '{self.artifact.file}' is not the build's name ('{engine_file}')")
        return self

    @field_validator("signature")
    @classmethod
    def _signature_complete(cls, signature: dict[str, str] | None) -> dict[str, str] | None:
        """A signature without its algorithm, key id or value is malformed, never "signed by key None"."""
        missing = [key for key in ("algorithm", "key_id", "value") if signature is not None and not signature.get(key)]
        if missing:
            raise ValueError(f"malformed: '{missing[0]}' is missing or empty (delete it, then trtforge sign)")
        return signature

    @property
    def stem(self) -> str:
        return self.artifact.file.removesuffix(ENGINE_SUFFIX)

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", by_alias=True)
        # absent, not null: a manifest without them (and its signature) reads back unchanged
        for optional in ("signature", "fp16"):
            if data.get(optional) is None:
                data.pop(optional, None)
        return data

    def to_json(self) -> str:
        """The file as written; ``allow_nan=False``: a NaN or infinity would make it a file no
        strict JSON parser reads (pydantic writes one in a free-form section as null)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False) + "\n"

    def replace(self, **changes: Any) -> Manifest:
        return self.model_copy(update=changes)


#: what ``trtforge sign`` may rewrite in a manifest after its build, which stays that build; every
#: other field is the build's own, its accuracy summary too (what ``ci`` reports for the build)
REWRITTEN_AFTER_BUILD = ("signature",)


def build_facts_sha256(manifest: Manifest) -> str:
    """sha256 of the manifest as its build wrote it, less what may be rewritten since
    (:data:`REWRITTEN_AFTER_BUILD`): ``ci`` records it, so a manifest edited otherwise (its GPU
    list, its accuracy verdict, or a summary ``trtforge verify`` rewrote) is never taken for that
    build."""
    facts = {key: value for key, value in manifest.to_dict().items() if key not in REWRITTEN_AFTER_BUILD}
    return json_sha256(facts)


def check_precision(precision: str | None, flag: str = "--precision") -> None:
    """A precision to pick artifacts by (``pull``, ``serve``, the loader's ``precision=``): one a
    manifest can hold, else exit 2 with the closest, as the spec refuses it, never an empty pick
    ("no engine of NAME (FP16)")."""
    if precision is not None and precision not in PRECISIONS:
        hint = did_you_mean(precision, PRECISIONS)
        raise InvalidInputError(f"{flag} '{precision}': use {', '.join(PRECISIONS)}{hint}")


def manifest_path_for(engine: Path) -> Path:
    """``x.engine`` -> ``x.manifest.json`` (the manifest always sits beside its engine)."""
    return engine.with_name(engine.name.removesuffix(ENGINE_SUFFIX) + MANIFEST_SUFFIX)


def engine_path_for(manifest: Path) -> Path:
    return manifest.with_name(manifest.name.removesuffix(MANIFEST_SUFFIX) + ENGINE_SUFFIX)


def artifact_file_names(stem: str) -> tuple[str, ...]:
    """Every file of artifact ``stem`` in the folder it was built or pulled into: engine, manifest,
    accuracy report, attestation. A commit of a new engine stages or removes each of them: one
    left from an older engine of the same stem would describe another build."""
    return tuple(stem + suffix for suffix in ARTIFACT_SUFFIXES)


def report_path(directory: Path, stem: str, rejected: bool = False) -> Path:
    return directory / f"{stem}{REJECTED_SUFFIX if rejected else REPORT_SUFFIX}"


def attestation_path(engine: Path) -> Path:
    """``x.engine`` (or ``x.manifest.json``) -> ``x.intoto.jsonl`` beside it: the signed
    provenance (:mod:`trtforge.provenance`)."""
    paths = ArtifactPaths.of(engine)
    return paths.engine.with_name(paths.engine.name.removesuffix(ENGINE_SUFFIX) + ATTESTATION_SUFFIX)


#: What a user who passed another kind of file to an engine command probably wants instead.
_OTHER_FILES = {
    ".onnx": "for an ONNX model, build an engine with trtforge build SPEC (or time it with trtforge bench MODEL)",
    ".yaml": "for a spec, build it with trtforge build SPEC",
    ".yml": "for a spec, build it with trtforge build SPEC",
}


@dataclass(frozen=True)
class ArtifactPaths:
    """The two files of an artifact; every command that takes an engine takes either of them."""

    engine: Path
    manifest: Path

    @classmethod
    def of(cls, path: Path, usage: str = "") -> ArtifactPaths:
        """``x.engine`` or ``x.manifest.json`` -> both paths; any other file is a usage error that
        says what the command takes (``usage`` adds what else it needs) and what to do with the file."""
        if path.name.endswith(MANIFEST_SUFFIX):
            return cls(engine_path_for(path), path)
        if path.name.endswith(ENGINE_SUFFIX):
            return cls(path, manifest_path_for(path))
        hint = _OTHER_FILES.get(path.suffix.lower())
        raise InvalidInputError(
            f"{path}: not an engine: pass an .engine that trtforge build wrote (or its .manifest.json){usage}"
            + (f"; {hint}" if hint else "")
        )

    def must_exist(self) -> ArtifactPaths:
        """Self, when at least one of the two files exists: neither is a mistyped path (exit 2),
        while one without the other is an incomplete artifact, which the loader refuses (exit 5)."""
        if not self.engine.exists() and not self.manifest.exists():
            raise InvalidInputError(
                f"{self.engine}: no such engine (nor {self.manifest.name} beside it); check the path"
            )
        if self.engine.exists() and not self.engine.is_file():
            raise InvalidInputError(f"{self.engine}: not a file; pass the .engine file")
        return self

    def existing_engine(self, fix: str) -> Path:
        """The engine, which must be a file; ``fix`` says how to get it when it is not. As
        :meth:`must_exist` and ``check`` judge it: with neither file a mistyped path (exit 2), with
        the manifest alone an incomplete artifact (exit 5, as ``check``'s rule 5 refuses it)."""
        if self.engine.is_file():
            return self.engine
        if os.path.lexists(self.engine):
            raise InvalidInputError(f"{self.engine}: engine file is not a regular file; {fix}")
        self.must_exist()
        raise IncompatibleEngineError(
            f"{self.engine}: engine file is missing beside its manifest {self.manifest.name}; {fix}",
            reasons=["engine file missing"],
        )


def manifest_json_schema() -> dict[str, Any]:
    """The manifest's JSON Schema, for loaders that are not trtforge (a C++ runtime, a Triton
    backend, a registry policy): its structure and each value's form. The rules between fields
    (the tag rendered from the facts, the GPU facts of each hardware mode) are the validators'
    above, which a schema cannot say; ``trtforge check`` applies them."""
    schema = Manifest.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "trtforge engine manifest (trtforge/manifest/v1)"
    return schema


def parse_manifest(data: bytes | str, origin: str) -> Manifest:
    """A manifest from untrusted bytes: unreadable (too large, not UTF-8, too deep, not JSON, not
    the schema) is InvalidInputError, exit 2 (README "Compatibility checks and the runtime loader"),
    signed or not: a signature is judged (exit 5) only on a manifest that reads."""
    try:
        document = bounded_json(data, MAX_MANIFEST_BYTES)
    except ValueError as exc:
        raise InvalidInputError(
            f"{origin}: unreadable manifest, {exc}; rebuild the engine with trtforge build"
        ) from exc
    try:
        # strict: a value of another JSON type is refused, never converted ("false" is not False, "1"
        # not 1): a signature covers the file as written, which any other reader takes as written. A
        # number with no fraction (1.0) is the integer the schema passes, and RFC 8785 writes it 1
        return Manifest.model_validate(document, strict=True)
    except ValidationError as exc:
        schema = document.get("schema") if isinstance(document, dict) else None
        newer = re.fullmatch(r"trtforge/manifest/v([0-9]+)", schema) if isinstance(schema, str) else None
        if newer is not None and int(newer.group(1)) > 1:
            raise InvalidInputError(
                f"{origin}: manifest schema {schema} is a newer trtforge's (this one reads v1): "
                "upgrade trtforge (pip install -U trtforge)"
            ) from exc
        raise InvalidInputError(
            f"{origin}: not a trtforge manifest ({first_error(exc)}); rebuild the engine with trtforge build"
        ) from exc


def first_error(exc: ValidationError) -> str:
    """A pydantic error as ``where: what`` for one-line messages."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return f"{where}: {first['msg'].removeprefix('Value error, ')}"


def read_manifest(engine_or_manifest: Path) -> Manifest:
    """Read the manifest of an engine (or the manifest file itself)."""
    return read_manifest_with_bytes(engine_or_manifest)[0]


def read_manifest_with_bytes(engine_or_manifest: Path) -> tuple[Manifest, bytes]:
    """The manifest and the bytes it was parsed from, read once: a publish hashes and writes the
    very bytes it judged, whatever replaces the file meanwhile."""
    path = ArtifactPaths.of(engine_or_manifest).manifest
    if not path.is_file():
        raise IncompatibleEngineError(
            f"{path}: manifest missing; an engine without its manifest is refused "
            "(rebuild it with trtforge build, or copy the .manifest.json beside the engine)",
            reasons=["manifest missing"],
        )
    try:
        data = read_manifest_bytes(path)
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read the manifest ({exc.strerror}); check its permissions") from exc
    return parse_manifest(data, str(path)), data


def read_manifest_bytes(path: Path) -> bytes:
    """At most MAX_MANIFEST_BYTES + 1 bytes: enough for ``parse_manifest`` to tell "too large"
    without reading a huge file whole."""
    with open(path, "rb") as handle:
        return handle.read(MAX_MANIFEST_BYTES + 1)


def write_manifest(path: Path, manifest: Manifest) -> None:
    atomic_write_text(path, manifest.to_json())
