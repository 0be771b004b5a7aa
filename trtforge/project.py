"""The optional project file ``trtforge.yaml`` and spec discovery for ``ci`` and ``matrix``.

The project file holds settings that belong to a folder of specs (which CI runner builds for
which GPU), never a model: it is never loaded as a spec.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from trtforge import __version__
from trtforge.errors import InvalidInputError, SpecError, did_you_mean
from trtforge.fsutil import resolved
from trtforge.spec import (
    PROJECT_FILE,
    key_lines,
    key_not_text,
    locate,
    read_yaml,
    read_yaml_file,
    spec_input_files,
)
from trtforge.tags import ComputeCapability

CPU_RUNNER = "cpu"
#: the validation error of two spellings of one GPU under ``runners:``
GPU_GIVEN_TWICE = "gpu_given_twice"
#: where ``ci`` and ``matrix`` without a folder look for ``trtforge.yaml``, in this order
DEFAULT_ROOTS = (Path("."), Path("configs"))
#: top-level keys of GitHub Actions and GitLab CI files: such a file is a pipeline, not a spec
WORKFLOW_KEYS = frozenset({"jobs", "stages"})


def _labels(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _no_blank_label(labels: list[str]) -> list[str]:
    if any(not label.strip() for label in labels):
        raise ValueError(f"a runner label is blank ({labels!r}): no runner carries one; write the label, e.g. [gpu]")
    return labels


Labels = Annotated[list[str], BeforeValidator(_labels), Field(min_length=1), AfterValidator(_no_blank_label)]


def _relative_pattern(pattern: str) -> str:
    """A pattern is globbed in the project folder, which takes a relative one naming a file only
    (``Path.glob`` raises on an absolute or empty one, or ``**`` inside a name)."""
    parts = PurePath(pattern).parts
    if not parts or PurePath(pattern).anchor or any("**" in part and part != "**" for part in parts):
        raise ValueError(
            f"{pattern!r} is not a pattern relative to the project folder (the folder of {PROJECT_FILE}): "
            "write e.g. 'specs/*.yaml' or '**/*.yaml' ('**' as a whole path component)"
        )
    return pattern


SpecPattern = Annotated[str, AfterValidator(_relative_pattern)]


class ProjectSettings(BaseModel):
    """``trtforge.yaml``: ``runners`` maps ``cpu`` (TensorRT-RTX builds) or a compute capability
    (enterprise TensorRT builds on that GPU) to CI runner labels; ``triton`` is ``--triton``'s
    value for ``ci`` and ``matrix`` when the flag is not given; ``install`` replaces the pinned
    install command of every job ``matrix`` plans."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runners: dict[str, Labels] = Field(default_factory=dict)
    specs: list[SpecPattern] = Field(default_factory=lambda: ["**/*.yaml", "**/*.yml"])
    publish_to: str | None = Field(None, description="registry URI the final CI job publishes to")
    triton: str | None = Field(
        None, description="Triton release the engines are for (as --triton): ci refuses, matrix builds in its container"
    )
    install: str | None = Field(
        None,
        description="the command every job of trtforge matrix installs trtforge with, instead of the generated "
        "pip install of the planning trtforge's own version (a mirror, a fork, another pin)",
    )

    @field_validator("runners")
    @classmethod
    def _normalize_gpu_keys(cls, runners: dict[str, list[str]]) -> dict[str, list[str]]:
        """``"8.6"``, ``sm86`` and ``sm_86`` are one GPU: two of them are a key given twice (the
        error's context names both, so :func:`load_settings` can name both lines), not one
        silently replacing the other."""
        normalized: dict[str, list[str]] = {}
        spelled: dict[str, str] = {}
        for key, labels in runners.items():
            gpu = key if key == CPU_RUNNER else str(ComputeCapability.parse(key))
            if gpu in spelled:
                raise PydanticCustomError(
                    GPU_GIVEN_TWICE,
                    "'{first}' and '{second}' are one GPU ({gpu})",
                    {"first": spelled[gpu], "second": key, "gpu": gpu},
                )
            spelled[gpu] = key
            normalized[gpu] = labels
        return normalized

    @field_validator("publish_to")
    @classmethod
    def _registry_uri(cls, value: str | None) -> str | None:
        """Checked as ``publish --to`` checks it, so a bad URI is found here, not by the publish job."""
        from trtforge.publish import parse_location

        if value is not None:
            try:
                parse_location(value)
            except InvalidInputError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("install")
    @classmethod
    def _one_command(cls, value: str | None) -> str | None:
        """A job runs it as one step: one shell command line."""
        if value is not None and (not value.strip() or "\n" in value.strip()):
            raise ValueError(f"one command on one line, e.g. \"pip install 'trtforge[rtx]=={__version__}'\"")
        return value.strip() if value is not None else None

    @field_validator("triton", mode="before")
    @classmethod
    def _known_release(cls, value: Any) -> str | None:
        """A release of the shipped table, by the name ``--triton`` gives it (``24.08-py3``: ``24.08``).

        YAML reads an unquoted ``24.08`` as a number: taken when its shortest form keeps both month
        digits; ``24.10`` reads as 24.1, which could have been 24.01 too, so it must be quoted."""
        from trtforge.triton_releases import find_release

        if value is None:
            return None
        if isinstance(value, float):
            text = repr(value)
            if len(text.partition(".")[2]) != 2:
                raise ValueError(f"YAML reads {text} as a number, not a release: quote it as NGC tags it, e.g. '24.10'")
            value = text
        if not isinstance(value, (str, int)):
            raise ValueError("a Triton release, e.g. '24.08'")
        try:
            return find_release(str(value), what="release").name
        except InvalidInputError as exc:
            raise ValueError(str(exc)) from exc


@dataclass(frozen=True)
class Project:
    root: Path
    settings: ProjectSettings
    specs: tuple[Path, ...]
    #: YAML files of the spec folders that are not specs, each with the reason (for a note)
    skipped: tuple[tuple[Path, str], ...] = ()

    @property
    def notes(self) -> tuple[str, ...]:
        """One line per YAML file that is not a spec, as ``ci`` and ``matrix`` print it."""
        return tuple(f"skipped {path}: {reason}" for path, reason in self.skipped)

    def input_files(self) -> Iterator[Path]:
        """Every file discovery read (the project file, the specs, the YAML files that are not
        specs) and each spec's inputs (``spec.spec_input_files``): what a report ``ci`` writes must
        not replace."""
        yield self.root / PROJECT_FILE
        yield from (path for path, _ in self.skipped)
        for spec in self.specs:
            yield from spec_input_files(spec)


def load_settings(root: Path) -> ProjectSettings:
    path = root / PROJECT_FILE
    if not path.exists():
        return ProjectSettings()
    data, document = read_yaml(read_yaml_file(path, "project file"), path)
    lines = key_lines(document)
    if data is not None and not isinstance(data, dict):
        raise SpecError(
            f"{locate(path, lines)}: not a mapping: a project file holds settings, "
            "e.g. runners: {cpu: [ubuntu-latest]}; leave it empty for none"
        )
    try:
        return ProjectSettings.model_validate(data or {})
    except ValidationError as exc:
        raise SpecError(_message(exc.errors()[0], path, lines)) from exc


def _message(error: ErrorDetails, path: Path, lines: Mapping[tuple[str | int, ...], int]) -> str:
    """One line naming the project file, the line and the key, and how to fix it."""
    loc = error["loc"]
    if error["type"] == GPU_GIVEN_TWICE:
        context = error.get("ctx", {})
        first, second = context["first"], context["second"]
        return (
            f"{locate(path, lines, *loc, second)}: key 'runners.{second}' is GPU {context['gpu']} again "
            f"(given as '{first}' at line {lines.get((*loc, first))}); keep one"
        )
    where = locate(path, lines, *loc)
    if loc and loc[-1] == "[key]":  # a key YAML read as a number (8.6:) or a boolean
        return key_not_text(where, loc, error["input"])
    key = ".".join(str(part) for part in loc)
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key '{key}'{did_you_mean(str(loc[-1]), ProjectSettings.model_fields)}"
    return f"{where}: key '{key}': {error['msg'].removeprefix('Value error, ')}"


def default_root() -> Path:
    """The project ``ci`` and ``matrix`` take without a folder: the first of DEFAULT_ROOTS that
    holds ``trtforge.yaml`` (at a repository's root: its ``configs/``), else the current folder."""
    return next((root for root in DEFAULT_ROOTS if (root / PROJECT_FILE).is_file()), Path("."))


def not_a_spec(path: Path) -> str | None:
    """Why a YAML file found in a spec folder is not a model spec; None when it is one, or when
    it cannot be read (loading it then reports that as the spec's own error)."""
    try:
        data, _ = read_yaml(read_yaml_file(path, "spec"), path)
    except SpecError:
        return None
    if isinstance(data, dict) and "model" in data:
        return None
    if isinstance(data, dict) and WORKFLOW_KEYS & data.keys():
        return "a CI workflow file, not a spec (a spec has 'name:' and 'model:')"
    return "not a spec (no 'model:' key)"


def discover(targets: list[Path]) -> Project:
    """Specs named directly, or every spec in a folder (its ``trtforge.yaml`` and the YAML files
    that are not specs excluded; see ``not_a_spec``)."""
    if not targets:
        targets = [default_root()]
    folders = [target for target in targets if target.is_dir()]
    files = [target for target in targets if not target.is_dir()]
    missing = [target for target in files if not target.exists()]
    if missing:
        raise InvalidInputError(f"{missing[0]}: no such spec file or folder")
    root = folders[0] if folders else (files[0].parent if files else Path("."))
    settings = load_settings(root)
    found: list[Path] = list(files)
    skipped: list[tuple[Path, str]] = []
    for folder in folders:
        for pattern in settings.specs:
            for path in sorted(folder.glob(pattern)):
                if path.name == PROJECT_FILE or any(part.startswith(".") for part in path.relative_to(folder).parts):
                    continue
                reason = not_a_spec(path)
                if reason:
                    skipped.append((path, reason))
                else:
                    found.append(path)
    unique = tuple(dict.fromkeys(resolved(path) for path in found))
    if not unique:
        others = f"; {len(skipped)} YAML file(s) are not specs" if skipped else ""
        raise InvalidInputError(f"{root}: no spec files found (patterns: {', '.join(settings.specs)}){others}")
    return Project(root=root, settings=settings, specs=unique, skipped=tuple(dict.fromkeys(skipped)))
