"""The manifest stamped beside every engine (schema ``trtforge/manifest/v1``).

It is what the loader, ``check``, ``pull`` and ``verify`` trust instead of opening the engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trtforge.errors import IncompatibleEngineError, InvalidInputError
from trtforge.fsutil import atomic_write_text

ENGINE_SUFFIX = ".engine"
MANIFEST_SUFFIX = ".manifest.json"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ArtifactInfo(_Frozen):
    file: str
    sha256: str
    size: int


class SourceInfo(_Frozen):
    onnx_sha256: str
    spec_sha256: str


class TensorRTInfo(_Frozen):
    flavor: Literal["tensorrt", "tensorrt-rtx"]
    version: str
    version_compatible: bool


class GpuInfo(_Frozen):
    compute_capabilities: list[str]
    and_later_from: str | None
    hardware_compatibility: Literal["none", "ampere_plus", "same_compute_capability"]
    build_device: dict[str, Any] | None


class PlatformInfo(_Frozen):
    os: str
    machine: str


class TensorInfo(_Frozen):
    name: str
    mode: Literal["input", "output"]
    dtype: str
    shape: list[int]


class BuildInfo(_Frozen):
    trtforge_version: str
    created_utc: str
    seconds: float


class Manifest(_Frozen):
    schema_: Literal["trtforge/manifest/v1"] = Field("trtforge/manifest/v1", alias="schema")
    name: str
    precision: Literal["fp32", "fp16", "int8"]
    tag: str
    artifact: ArtifactInfo
    source: SourceInfo
    tensorrt: TensorRTInfo
    gpu: GpuInfo
    platform: PlatformInfo
    profiles: list[dict[str, dict[str, list[int]]]]
    io: list[TensorInfo]
    calibration: dict[str, Any] | None
    accuracy: dict[str, Any] | None
    build: BuildInfo
    signature: dict[str, str] | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @property
    def stem(self) -> str:
        return self.artifact.file.removesuffix(ENGINE_SUFFIX)

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", by_alias=True)
        if data.get("signature") is None:
            data.pop("signature", None)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def replace(self, **changes: Any) -> Manifest:
        return self.model_copy(update=changes)


def manifest_path_for(engine: Path) -> Path:
    """``x.engine`` -> ``x.manifest.json`` (the manifest always sits beside its engine)."""
    return engine.with_name(engine.name.removesuffix(ENGINE_SUFFIX) + MANIFEST_SUFFIX)


def engine_path_for(manifest: Path) -> Path:
    return manifest.with_name(manifest.name.removesuffix(MANIFEST_SUFFIX) + ENGINE_SUFFIX)


def parse_manifest(text: str, origin: str) -> Manifest:
    try:
        return Manifest.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{origin}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise InvalidInputError(
            f"{origin}: not a trtforge manifest ({where}: {first['msg']}); rebuild the engine with trtforge build"
        ) from exc


def read_manifest(engine_or_manifest: Path) -> Manifest:
    """Read the manifest of an engine (or the manifest file itself)."""
    path = (
        engine_or_manifest
        if engine_or_manifest.name.endswith(MANIFEST_SUFFIX)
        else manifest_path_for(engine_or_manifest)
    )
    if not path.is_file():
        raise IncompatibleEngineError(
            f"{path}: manifest missing; an engine without its manifest is refused "
            "(rebuild it with trtforge build, or copy the .manifest.json beside the engine)",
            reasons=["manifest missing"],
        )
    return parse_manifest(path.read_text(encoding="utf-8"), str(path))


def write_manifest(path: Path, manifest: Manifest) -> None:
    atomic_write_text(path, manifest.to_json())
