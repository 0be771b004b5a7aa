"""Which engine to take: rank the candidates that pass the rules, the way pip ranks wheels by tag.

``list_artifacts`` is the one listing of a folder of artifacts (the loader's ``find_artifacts``,
``serve``'s folders and the ``dir://`` registry read a folder through it): what it lists is what
any of them can choose from.

``select_engine`` judges each candidate's manifest with ``compat.policy_problems`` (the one
rule function) and the signature facts it can know before any engine byte is read, then
prefers an exact GPU build over ``sm80plus``, plain over version-compatible, the newest
TensorRT, the newest build. Precision is the caller's choice, never a ranking: compatible
engines of several precisions are a question to ask (exit 2), not a tie to break.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import total_ordering
from pathlib import Path
from typing import NamedTuple, TypeVar

from trtforge.compat import (
    DEFAULT_POLICY,
    ArtifactFacts,
    Environment,
    LoadPolicy,
    Problem,
    device_model_note,
    policy_problems,
    version_tuple,
)
from trtforge.errors import InvalidInputError
from trtforge.manifest import MANIFEST_SUFFIX, Manifest, engine_path_for, parse_manifest, read_manifest_bytes
from trtforge.signing import verify_manifest

T = TypeVar("T")

#: a build time that does not parse (a hand-written manifest) ranks as the oldest
_OLDEST = datetime.min.replace(tzinfo=timezone.utc)


class Rejection(NamedTuple):
    manifest: Manifest
    problems: list[Problem]


@total_ordering
@dataclass(frozen=True)
class Preference:
    """Rank of a compatible engine; smaller is better.

    The closest fit to the GPU (:func:`hardware_rank`); a plain engine before a version-compatible
    one; then the newest TensorRT (``10.7.1`` before ``10.7``), then the newest build.
    """

    hardware_rank: int
    version_compatible: bool
    version: tuple[int, ...]  # trailing zeros dropped: 10.7 and 10.7.0 are one version
    created: datetime  # UTC-aware

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Preference):
            return NotImplemented
        # newer is better: version and build time compare the other way round (tuples of any length)
        mine = (self.hardware_rank, self.version_compatible, other.version, other.created)
        theirs = (other.hardware_rank, other.version_compatible, self.version, self.created)
        return mine < theirs


def hardware_rank(manifest: Manifest, env: Environment | None = None) -> int:
    """How closely the plan fits the GPU, as ``packaging.tags`` ranks the most specific tag first:
    0 a plain plan built on this GPU's model (or judged without one: a target, no GPU, no ``env``),
    1 ``same_compute_capability`` (made to run on every model of its compute capability),
    2 a plain plan built on another model of this compute capability (TensorRT warns it may run
    slower or fail: ``compat.device_model_note``), 3 ``ampere_plus`` (kernels every GPU from 8.0 runs)."""
    hardware = manifest.gpu.hardware_compatibility
    if hardware == "ampere_plus":
        return 3
    if hardware == "same_compute_capability":
        return 1
    return 2 if env is not None and device_model_note(manifest, env) else 0


def preference(manifest: Manifest, env: Environment | None = None) -> Preference:
    """The rank of ``manifest`` on ``env`` (pure: no clock, no time zone)."""
    version = version_tuple(manifest.tensorrt.version)
    while version and version[-1] == 0:
        version = version[:-1]
    return Preference(hardware_rank(manifest, env), manifest.tensorrt.version_compatible, version, built_at(manifest))


def built_at(manifest: Manifest) -> datetime:
    """``build.created_utc`` as a UTC-aware time: a time without offset is UTC (the field's name
    says so), never this host's local time."""
    text = manifest.build.created_utc
    try:
        created = datetime.fromisoformat(text.removesuffix("Z") + ("+00:00" if text.endswith("Z") else ""))
        return created.replace(tzinfo=timezone.utc) if created.tzinfo is None else created.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return _OLDEST


def signature_facts(manifest: Manifest, policy: LoadPolicy) -> ArtifactFacts:
    """The manifest-only facts ``select_engine`` can know before any engine byte is read."""
    check = verify_manifest(manifest, policy.trusted_keys)
    return ArtifactFacts(signature=check.status, signature_key_id=check.key_id)


def select_engine(
    candidates: Iterable[tuple[Manifest, T]],
    env: Environment,
    policy: LoadPolicy = DEFAULT_POLICY,
    *,
    what: str = "",
) -> tuple[tuple[Manifest, T] | None, list[Rejection]]:
    """The best compatible candidate (or None), and every rejected one with its problems.

    Judged on the manifests alone (platform, runtime, GPU, signature): the caller checks the
    chosen engine's bytes (sha256) when it has them, and refuses, not falls back, on a damaged
    file, the way pip fails on a hash mismatch instead of taking another wheel. Compatible
    engines of several precisions are refused (``precision_problem``; ``what`` names the model
    and where it was looked for): the caller passes a precision.
    """
    compatible: list[tuple[Preference, int, tuple[Manifest, T]]] = []
    rejected: list[Rejection] = []
    for position, (manifest, payload) in enumerate(candidates):
        found = policy_problems(manifest, env, signature_facts(manifest, policy), policy)
        if found:
            rejected.append(Rejection(manifest, found))
        else:
            compatible.append((preference(manifest, env), position, (manifest, payload)))
    if not compatible:
        return None, rejected
    problem = precision_problem([item[2][0] for item in compatible])
    if problem:
        raise InvalidInputError(f"{what}: {problem}" if what else problem)
    return min(compatible, key=lambda item: (item[0], item[1]))[2], rejected


def precision_problem(compatible: Sequence[Manifest]) -> str | None:
    """Engines of several precisions fit: which one to serve is the user's call (accuracy against
    speed), never a build time's."""
    precisions = sorted({manifest.precision for manifest in compatible})
    if len(precisions) < 2:
        return None
    return (
        f"compatible engines of {len(precisions)} precisions fit ({', '.join(precisions)}) and none was chosen: "
        "pass one with --precision (trtforge pull, serve) or precision= (select_artifact, load_best)"
    )


def skipped_note(skipped: Sequence[str]) -> str:
    """`` (N unreadable entries skipped: why; ...)`` for a message about what a folder or registry holds."""
    if not skipped:
        return ""
    return f" ({len(skipped)} unreadable entr{'ies' if len(skipped) != 1 else 'y'} skipped: {'; '.join(skipped[:3])})"


# ---------------------------------------------------------------- a folder of artifacts


@dataclass(frozen=True)
class ListedArtifact:
    """One artifact of a folder: its manifest as read (and its bytes, which a signature covers as
    written), where that manifest is, and the engine beside it."""

    manifest: Manifest
    manifest_path: Path
    engine: Path
    manifest_bytes: bytes = field(repr=False, compare=False)


@dataclass(frozen=True)
class FolderArtifacts:
    """What ``list_artifacts`` found in a folder: its artifacts, and the entries it skipped because
    their manifest could not be read (each with why)."""

    artifacts: tuple[ListedArtifact, ...]
    skipped: tuple[str, ...] = ()

    @property
    def found(self) -> tuple[tuple[Manifest, Path], ...]:
        """(manifest, engine) of each artifact, as ``select_engine`` takes candidates."""
        return tuple((listed.manifest, listed.engine) for listed in self.artifacts)

    @property
    def note(self) -> str:
        """What was skipped, for a message about what the folder holds ("" when nothing was)."""
        return skipped_note(self.skipped)

    def of(self, name: str | None = None, precision: str | None = None) -> FolderArtifacts:
        """The artifacts of ``name`` (and ``precision``), no manifest read again; every skipped
        entry stays (an unreadable one may have been of that name)."""
        kept = tuple(
            listed
            for listed in self.artifacts
            if (name is None or listed.manifest.name == name)
            and (precision is None or listed.manifest.precision == precision)
        )
        return FolderArtifacts(kept, self.skipped)


def listed_name(name: str) -> bool:
    """Whether a folder listing looks at an entry of this name: never at a hidden one.

    Every temporary a writer in progress keeps beside a final file is hidden
    (``.{name}.{pid}-{token}.tmp``, ``.tmp-…`` of older versions: ``fsutil.TempName``), and no
    artifact's file is: an artifact's name starts with a lowercase letter or digit
    (``tags.NAME_RULE``), so a hidden manifest is a copy or an editor's or file system's file
    (macOS's ``._x.manifest.json``), never one a build, publish or pull wrote. Triton skips
    hidden files the same way.
    """
    return not name.startswith(".")


def list_artifacts(folder: Path) -> FolderArtifacts:
    """The artifacts in ``folder``, by manifest file name, each manifest read once.

    The one listing rule: a hidden entry is never looked at (``listed_name``); a manifest whose
    engine is gone is no artifact and is left out; a manifest that is not a regular file, cannot
    be read or is not a trtforge manifest is skipped and said (one damaged file is no reason to
    refuse every other model). A failure to list the folder itself is the caller's OSError.
    """
    with os.scandir(folder) as entries:
        manifests = sorted(
            (entry.name, entry.is_file())
            for entry in entries
            if listed_name(entry.name) and entry.name.endswith(MANIFEST_SUFFIX)
        )
    artifacts: list[ListedArtifact] = []
    skipped: list[str] = []
    for name, regular in manifests:
        path = folder / name
        engine = engine_path_for(path)
        if not engine.exists():
            continue
        if engine.is_dir():  # a FIFO or a device is listed, and refused where it is read, by name
            skipped.append(f"{engine}: a folder, not an engine file; remove it, or rebuild with trtforge build")
            continue
        if not regular:  # a folder, a FIFO (reading one would wait for a writer), a device
            skipped.append(f"{path}: not a regular file; remove it or rebuild the engine with trtforge build")
            continue
        try:
            data = read_manifest_bytes(path)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            skipped.append(f"{path}: cannot read the manifest ({reason}); check its permissions")
            continue
        try:
            manifest = parse_manifest(data, str(path))
        except InvalidInputError as exc:
            skipped.append(str(exc))
            continue
        artifacts.append(ListedArtifact(manifest, path, engine, data))
    return FolderArtifacts(tuple(artifacts), tuple(skipped))
