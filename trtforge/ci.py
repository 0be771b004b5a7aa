"""``trtforge ci``: every spec of a project, in parallel, rebuilding only what changed.

A content-addressed build cache is keyed by everything that decides the engine (ONNX, spec,
calibration and accuracy data, backend flavor and version, targets, trtforge version). A spec
whose key is in the cache is not rebuilt: its artifact is found intact (``unchanged``, only when
the artifact in ``--out`` is the very build the key describes) or restored from the cache.
The CI system is the distributed scheduler (see ``trtforge matrix``); this runs one machine's share.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from trtforge import __version__
from trtforge.console import Reporter, Styled, Table
from trtforge.digests import FileStamp, data_sha256, sha256_file
from trtforge.errors import (
    INTERRUPTED_EXIT,
    STOP_SIGNALS,
    AccuracyError,
    InvalidInputError,
    SpecError,
    TrtforgeError,
    disk_error,
    first_line,
    interrupt,
    interrupt_deferred,
    most_severe,
    raise_if_interrupted,
    stop_signals_held,
    unexpected_error,
)
from trtforge.fsutil import (
    TEMP_SUFFIX,
    atomic_write_bytes,
    check_report_file,
    check_report_not_input,
    ensure_writable_dir,
    folders_a_glob_lists,
    make_temp_dir,
    release_temp,
    report_target,
    temp_dir,
    temp_prefix,
)
from trtforge.jsonsafe import bounded_json, json_sha256
from trtforge.mixedprecision import GRAPH_REVISIONS

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from trtforge.keys import SigningKey, TrustedKey
    from trtforge.spec import Spec

#: a build-cache entry's description of the artifact it holds
RECORD_FILE = "record.json"
MAX_RECORD_BYTES = 1024 * 1024
#: the OCI annotation a remote build-cache entry carries its build key in
BUILD_KEY_ANNOTATION = "dev.trtforge.build-key"
#: the cached build's ``manifest.build_facts_sha256``, pushed with it (its manifest is a layer apart)
MANIFEST_FACTS_ANNOTATION = "dev.trtforge.manifest-facts"
#: after Ctrl-C, how long workers get to cancel their builds and remove their temporaries
STOP_GRACE_S = 3.0


class StepStatus(str, Enum):
    """How a step ended; a JUnit test case passes, fails (or errs) or is skipped alike."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class SpecStatus(str, Enum):
    """What ``ci`` did for a spec: built it, found its artifact intact, restored it from the cache, or failed."""

    BUILT = "built"
    UNCHANGED = "unchanged"
    RESTORED = "restored"
    FAILED = "failed"


@dataclass(frozen=True)
class StepResult:
    """One JUnit test case: a step (build, accuracy) of one spec."""

    name: str
    status: StepStatus
    seconds: float = 0.0
    message: str = ""


@dataclass(frozen=True)
class SpecResult:
    spec: str
    name: str
    status: SpecStatus
    exit_code: int
    seconds: float
    engine: str | None = None
    key: str | None = None
    message: str = ""
    accuracy: dict[str, Any] | None = None
    steps: tuple[StepResult, ...] = field(default=())

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> SpecResult:
        """The inverse of ``asdict``: a worker's result crosses the process boundary as JSON."""
        steps = tuple(
            StepResult(**{**step, "status": StepStatus(step["status"])}) for step in document.get("steps", ())
        )
        return cls(**{**document, "status": SpecStatus(document["status"]), "steps": steps})


@dataclass(frozen=True)
class CiReport:
    results: tuple[SpecResult, ...]
    seconds: float
    jobs: int  # specs built at a time

    @property
    def exit_code(self) -> int:
        return most_severe(result.exit_code for result in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "jobs": self.jobs,
            "results": [asdict(result) for result in self.results],
        }


def _input_file_sha256(path: Path, where: str, key: str, digest: Callable[[Path], str] = sha256_file) -> str:
    """``digest`` (sha256) of a file the spec names; a missing one (or a folder, FIFO, device) is
    the spec's error, found before anything is opened (a FIFO would block, /dev/zero never ends)."""
    from trtforge.model import not_a_file

    problem = not_a_file(path)  # said as every reader says it: a symlink loop "cannot be read", not "not found"
    if problem:
        raise InvalidInputError(f"{where}: {key} {path}: {problem}; check '{key}:' in the spec")
    try:
        return digest(path)
    except OSError as exc:
        unreadable = exc.filename or path  # the model's external data file, where that one is
        raise InvalidInputError(
            f"{where}: cannot read {key} {unreadable} ({exc.strerror}); check its permissions"
        ) from exc


#: what a cache record means: 2, its manifest facts include the accuracy summary (1 left it out).
#: A record of another revision is another key, a plain miss, never "a manifest edited since".
CACHE_RECORD_REVISION = 2


def build_inputs(spec: Spec, flavor: str, version: str, signer: str | None = None) -> dict[str, Any]:
    """Every input that decides the artifact, by content (pure over file contents): the model's
    ``onnx`` is its content digest (``model.content_sha256``: its external data files too), and
    ``signer`` the key id a signing run signs with (absent unsigned: an unsigned build keeps its
    key). Each file's digest comes from the digest cache when the file is unchanged
    (``digests.sha256_file``), so an unchanged rerun reads no model, data or engine in full."""
    from trtforge.model import content_sha256
    from trtforge.spec import expand_globs

    origin = spec.origin

    def globs_hash(patterns: list[str] | None, where: str) -> str | None:
        if not patterns:
            return None
        try:
            return data_sha256(expand_globs(patterns, where))
        except OSError as exc:
            raise InvalidInputError(
                f"{where}: cannot read {exc.filename} ({exc.strerror}); the data globs must match readable files"
            ) from exc

    labels = spec.accuracy.labels
    return {
        "onnx": _input_file_sha256(spec.model_path, origin.where("model"), "model", content_sha256),
        "spec": origin.sha256,
        "calibration_data": globs_hash(
            spec.calibration.data if spec.calibration else None, origin.where("calibration", "data")
        ),
        "accuracy_data": globs_hash(spec.accuracy.data, origin.where("accuracy", "data")),
        "labels": _input_file_sha256(Path(labels), origin.where("accuracy", "labels"), "accuracy.labels")
        if labels
        else None,
        "backend": flavor,
        "backend_version": version,
        "targets": spec.targets,
        "trtforge": __version__,
        "graphs": GRAPH_REVISIONS,  # how trtforge converts and emulates: a new way is a new build
        "record": CACHE_RECORD_REVISION,
        **({"signed_by": signer} if signer else {}),
    }


def build_input_paths(spec: Spec, *, listed_folders: bool = True) -> set[str]:
    """Every path a build of ``spec`` reads beside the spec itself, absolute: the model with its
    external data files, its labels, the files its data globs match and (``listed_folders``) the
    folders those globs list, whose stamps change when a file is added to one. ``build_inputs``
    hashes their contents, and refuses, located in the spec, a model that is missing, not a file
    or unreadable: here it is its path alone (a FIFO's graph is never read)."""
    from trtforge.model import content_files, not_a_file
    from trtforge.spec import expand_globs

    paths = {os.path.abspath(spec.model_path)}
    if not_a_file(spec.model_path) is None:
        with suppress(OSError):
            paths.update(os.path.abspath(path) for path in content_files(spec.model_path))
    if spec.accuracy.labels:
        paths.add(os.path.abspath(spec.accuracy.labels))
    data = (("calibration", spec.calibration.data if spec.calibration else None), ("accuracy", spec.accuracy.data))
    for section, patterns in data:
        for pattern in patterns or ():
            paths.update(os.path.abspath(path) for path in expand_globs([pattern], spec.origin.where(section, "data")))
            if listed_folders:
                paths.update(folders_a_glob_lists(pattern))
    return paths


def input_stamps(spec: Spec) -> dict[str, FileStamp | None]:
    """The stamp of each file a build of ``spec`` reads (None: absent), its data globs expanded
    now: equal stamps before and after a build mean no input was written, added or removed
    meanwhile (any write changes ctime, which no user tool sets back). Files only: the folders a
    glob lists change when the build writes its artifact into one (``--out .``)."""
    return {path: FileStamp.current(path) for path in sorted(build_input_paths(spec, listed_folders=False))}


def _written_during_build(spec: Spec, before: dict[str, FileStamp | None]) -> str | None:
    """The first input of ``spec`` written, added or removed since ``before`` was taken, or why the
    inputs cannot be listed now; None when every one is as it was."""
    try:
        after = input_stamps(spec)
    except TrtforgeError as exc:  # a data glob that matches nothing now
        return str(exc)
    return next((path for path in sorted(before.keys() | after.keys()) if before.get(path) != after.get(path)), None)


def build_key(inputs: dict[str, Any]) -> str:
    """Hash of ``build_inputs``: the name of a build-cache entry."""
    return json_sha256(inputs)


def _artifact_files(directory: Path, stem: str) -> list[Path]:
    from trtforge.manifest import artifact_file_names

    return [directory / name for name in artifact_file_names(stem) if (directory / name).is_file()]


class CacheRecord(BaseModel):
    """``record.json`` of a build-cache entry: which engine the key built (by name and sha256), and
    its manifest (``manifest.build_facts_sha256``)."""

    # its validator is built when first used: an unchanged rerun answered by trtforge.rerun never does
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    key: str
    engine: str
    sha256: str
    manifest_facts: str
    accuracy: dict[str, Any] | None = None

    @field_validator("engine")
    @classmethod
    def _plain_engine_name(cls, engine: str) -> str:
        if Path(engine).name != engine or not engine.endswith(".engine") or engine.startswith("."):
            raise ValueError(f"'{engine}' is not an engine file name")
        return engine


def read_record(entry: Path) -> CacheRecord:
    """The entry's record; InvalidInputError (naming the file and why) when it is not one."""
    path = entry / RECORD_FILE
    try:
        return CacheRecord.model_validate(bounded_json(path.read_bytes(), MAX_RECORD_BYTES))
    except (OSError, ValueError) as exc:  # ValidationError is a ValueError
        reason = (
            first_line(exc) if not isinstance(exc, ValidationError) else "not a build-cache record of this trtforge"
        )
        raise InvalidInputError(f"{path}: {reason}") from exc


def build_mismatch(manifest: Any, spec: Spec, inputs: dict[str, Any]) -> str | None:
    """Why an artifact is not a build of this spec (name, precision, source hashes); None when it
    is. Its ``onnx_sha256`` is the .onnx file's (the external data is in the build key)."""
    checks = (
        ("name", manifest.name, spec.name),
        ("precision", manifest.precision, spec.precision),
        ("onnx_sha256", manifest.source.onnx_sha256, sha256_file(spec.model_path)),
        ("spec_sha256", manifest.source.spec_sha256, inputs["spec"]),
        ("tensorrt flavor", manifest.tensorrt.flavor, inputs["backend"]),
        ("tensorrt version", manifest.tensorrt.version, inputs["backend_version"]),
    )
    return next(
        (f"its {what} is {_short(found)}, not {_short(wanted)}" for what, found, wanted in checks if found != wanted),
        None,
    )


def _short(value: Any) -> str:
    """A hash as its first 12 characters: enough to tell two apart in one line."""
    text = str(value)
    return f"{text[:12]}…" if len(text) > 16 else repr(text)


def artifact_problem(engine: Path, spec: Spec, inputs: dict[str, Any], record: CacheRecord) -> str | None:
    """Why ``engine`` is not the build ``record`` describes; None when it is (intact, same engine
    sha256, built from this spec's sources, its manifest as built but for a signature and in the
    bytes trtforge writes, the accuracy report beside it the one that manifest pins)."""
    from trtforge.environment import file_problem
    from trtforge.manifest import build_facts_sha256, manifest_path_for, read_manifest_with_bytes

    if not engine.is_file():
        return f"{engine.name} is missing"
    try:
        manifest, written = read_manifest_with_bytes(engine)
        problem = file_problem(manifest, engine, disk_cache=True)  # ci's own artifact: unchanged in O(1)
    except (TrtforgeError, OSError) as exc:
        return f"{engine.name} is unreadable ({first_line(exc)})"
    if problem:
        return f"{engine.name} is damaged ({problem})"
    if manifest.artifact.sha256 != record.sha256:
        return f"{engine.name} is another build (its sha256 is not the cached one's)"
    mismatch = build_mismatch(manifest, spec, inputs)
    if mismatch:
        return f"{engine.name} is another build ({mismatch})"
    if build_facts_sha256(manifest) != record.manifest_facts:
        return f"{engine.name}'s manifest is not the one its build wrote (edited since, or written by another build)"
    if written != manifest.to_json().encode("utf-8"):  # the same facts, other bytes: reformatted by hand
        # (build and sign write every manifest as to_json does; an attestation covers its bytes)
        return f"{manifest_path_for(engine).name} is not as trtforge wrote it (reformatted or edited since its build)"
    return _report_problem(engine, manifest)


#: what :func:`_companion` gives for a name that holds something other than a regular file: no digest
_NOT_A_FILE = "not a regular file"


def _companion(path: Path) -> str | None:
    """The sha256 of a file beside an engine (its report, its attestation), None where there is
    none; a folder or FIFO there (whose read would block) is :data:`_NOT_A_FILE`."""
    if path.is_file():
        return sha256_file(path)
    return _NOT_A_FILE if path.exists() or path.is_symlink() else None


def _report_problem(engine: Path, manifest: Any) -> str | None:
    """Why the accuracy report beside ``engine`` is not the one its manifest's accuracy summary
    pins by sha256 (none, where it pins none); None when it is. An edited or deleted report is
    not the build's, whatever its manifest says."""
    from trtforge.manifest import REPORT_SHA256, report_path

    report = report_path(engine.parent, manifest.stem)
    try:
        found = _companion(report)
    except OSError as exc:
        return f"{report.name} is unreadable ({exc.strerror})"
    if found == (manifest.accuracy or {}).get(REPORT_SHA256):
        return None
    return f"{report.name} is {'missing' if found is None else 'not the report its manifest pins'}"


def _out_problem(
    engine: Path, entry: Path, spec: Spec, inputs: dict[str, Any], record: CacheRecord, trusted: Sequence[TrustedKey]
) -> str | None:
    """Why the artifact at ``engine`` (in --out) is not the whole set the cache ``entry`` holds:
    :func:`artifact_problem`, then its attestation (which no manifest pins), byte for byte, or one
    ``sign --attest`` added since whose signature a ``trusted`` key verifies (anyone can write an
    envelope naming the manifest); either must cover the manifest beside it."""
    from trtforge.manifest import attestation_path

    problem = artifact_problem(engine, spec, inputs, record)
    if problem is not None:
        return problem
    attestation = attestation_path(engine)
    try:
        found, built = _companion(attestation), _companion(attestation_path(entry / engine.name))
        if found is None and built is None:
            return None
        if found not in (None, _NOT_A_FILE) and _covers_manifest(engine):
            if found == built:
                return None  # the build's attestation, which the cache holds byte for byte
            # one `sign --attest` added since stays, as a signature `sign` adds does, only when a key
            # this run trusts signed it: `publish` pushes it, `verify-provenance` and `pull` judge it
            from trtforge.provenance import unverified_attestation  # only here: it loads the signing code

            unverified = unverified_attestation(engine, trusted)
            if unverified is None:
                return None
            return f"{attestation.name} was added since its build and no key of this run verifies it: {unverified}"
        if found == built:  # the build's, but its manifest was signed again since
            return f"{attestation.name} does not cover the manifest beside it (signed again or edited since its build)"
    except OSError as exc:
        return f"{attestation.name} is unreadable ({exc.strerror})"
    return f"{attestation.name} is not its build's (edited, removed or left by another build)"


def _covers_manifest(engine: Path) -> bool:
    """Whether the attestation beside ``engine`` names the manifest as it is now among its subjects."""
    from trtforge.manifest import attestation_path, manifest_path_for
    from trtforge.provenance import stale_attestation

    return (
        attestation_path(engine).is_file() and stale_attestation(engine, manifest_path_for(engine).read_bytes()) is None
    )


def _discard(entry: Path) -> None:
    """Take a broken cache entry away at once (one rename), then delete it."""
    aside = entry.with_name(f"{temp_prefix(entry.name)}discard{TEMP_SUFFIX}")
    with suppress(OSError):
        os.replace(entry, aside)
    shutil.rmtree(aside, ignore_errors=True)


def _store(cache_entry: Path, out_dir: Path, stem: str, record: dict[str, Any]) -> str | None:
    """Copy a fresh artifact into the cache; the entry appears whole or not at all. Returns why it
    was not stored (None: stored, or another run stored the same key first): a cache that cannot
    be written costs the caching only, never the build."""
    staging: Path | None = None
    try:
        cache_entry.parent.mkdir(parents=True, exist_ok=True)
        staging = make_temp_dir(cache_entry.parent, cache_entry.name)
        for path in _artifact_files(out_dir, stem):
            shutil.copy2(path, staging / path.name)
        (staging / "record.json").write_text(json.dumps(record, indent=2))
        os.replace(staging, cache_entry)
    except OSError as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        return None if cache_entry.is_dir() else _disk_problem(exc, cache_entry.parent)
    finally:
        if staging is not None:
            release_temp(staging)
    return None


def _restore(cache_entry: Path, out_dir: Path, spec: Spec, stem: str) -> str | None:
    """Copy a cached artifact of ``spec`` into ``out_dir`` as one commit of its whole set (the old
    one or the restored one: a report or attestation of ``stem`` the entry lacks, as one from the
    remote cache lacks the attestation, is removed); returns the line saying what stale temporaries of
    dead runs were removed there, if any."""
    from trtforge.artifact import ArtifactWriter, sweep

    swept = sweep(out_dir)
    with ArtifactWriter(out_dir, spec.name, spec.precision) as writer:
        writer.replace_whole(stem)
        for path in cache_entry.iterdir():
            if path.name != "record.json":
                shutil.copyfile(path, writer.stage(path.name))
        swept += writer.commit()
    return swept.note


def _failure_steps(exc: TrtforgeError, seconds: float) -> tuple[StepResult, ...]:
    """The steps of a spec that failed after ``seconds``: its build's, or its gate's after a build
    (the time spent is the build's step's: the gate ran in it, beside or after the build)."""
    if exc.exit_code == AccuracyError.exit_code:
        return (
            StepResult("build", StepStatus.PASSED, seconds),
            StepResult("accuracy", StepStatus.FAILED, message=str(exc)),
        )
    return (
        StepResult("build", StepStatus.FAILED, seconds, message=str(exc)),
        StepResult("accuracy", StepStatus.SKIPPED, message="not run: the build failed"),
    )


def _failed(spec_path: str, name: str, seconds: float, exc: TrtforgeError) -> SpecResult:
    return SpecResult(
        spec_path,
        name,
        SpecStatus.FAILED,
        exc.exit_code,
        seconds,
        message=str(exc),
        accuracy=_rejected(exc),
        steps=_failure_steps(exc, seconds),
    )


def _rejected(exc: TrtforgeError) -> dict[str, Any] | None:
    """A failed gate's summary (``rejected_summary``: the candidate it judged, how it was
    emulated), None for any other failure: a failed row says which candidate failed."""
    if exc.exit_code != AccuracyError.exit_code:
        return None
    from trtforge.accuracy.gate import GateFailed

    if not isinstance(exc, GateFailed):
        return None
    from trtforge.accuracy.report import rejected_summary

    return rejected_summary(exc.report)


def signing_key_from_env() -> SigningKey | None:
    """``$TRTFORGE_SIGNING_KEY``'s key, with which ``ci`` signs each build as ``trtforge build``
    does; None when it is not set. The command loads it once, as a run starts, and passes it in
    ``CiOptions.signing_key``: a key that cannot sign is exit 2 before anything is built."""
    from trtforge.keys import SIGNING_KEY_ENV, signing_requested

    if not signing_requested(None):
        return None
    from trtforge.signing import load_signing_key

    return load_signing_key(None, SIGNING_KEY_ENV)


@dataclass(frozen=True)
class CiOptions:
    """Everything a worker needs besides the spec (a worker is forked: it gets them as they are).
    A plain value: building one reads nothing (the caller loads the key: ``signing_key_from_env``)."""

    out_dir: Path
    cache_dir: Path
    backend: str | None = None
    remote_cache: str | None = None  # oci://HOST/REPO shared by CI runners
    insecure: bool = False
    triton: str | None = None  # a Triton release (``--triton`` or trtforge.yaml): refuse what it cannot load
    cc: str | None = None  # ``--cc``: each spec for this one of its GPU targets (a GPU job of ``trtforge matrix``)
    signing_key: SigningKey | None = None  # each build signs with it; None: no signing
    #: ``--trusted-key`` (or ``$TRTFORGE_TRUSTED_KEY``): who else may attest an artifact after its build
    trusted_keys: tuple[TrustedKey, ...] = ()

    def attesters(self) -> tuple[TrustedKey, ...]:
        """The keys whose attestation added after a build keeps it unchanged: the signing key's
        public half, and the trusted keys."""
        own = (self.signing_key.public_half(),) if self.signing_key else ()
        return own + self.trusted_keys


def for_cc(spec: Spec, cc: str | None) -> Spec:
    """The spec as one GPU job of a build matrix builds it: for ``cc`` alone (``ci --cc``), as
    enterprise TensorRT builds on the GPU it runs on. A spec whose targets do not list ``cc`` is
    refused; one without targets is built for it."""
    from trtforge.tags import ComputeCapability

    if cc is None:
        return spec
    wanted = str(ComputeCapability.parse(cc))
    if spec.targets and wanted not in spec.targets:
        raise SpecError(
            f"{spec.origin.where('targets')}: --cc {wanted} is not among this spec's targets "
            f"({', '.join(spec.targets)}); pass one of them, or add it to 'targets:'"
        )
    return spec.model_copy(update={"targets": [wanted]})  # its private origin too


def cache_tag(key: str) -> str:
    """The OCI tag of a build-cache entry (70 characters: a valid tag)."""
    return f"build-{key}"


def _remote(options: CiOptions) -> Any:
    from trtforge.publish import OciLocation, open_registry, parse_location

    location = parse_location(options.remote_cache or "")
    if not isinstance(location, OciLocation):
        raise InvalidInputError(f"--remote-cache '{options.remote_cache}': use oci://HOST[:PORT]/REPO")
    return open_registry(location, insecure=options.insecure)


def remote_record(annotations: dict[str, str], engine: Path, accuracy: dict[str, Any] | None) -> CacheRecord:
    """What a pulled cache artifact says it is: the build key, engine sha256 and manifest facts it
    was pushed with."""
    from trtforge.publish.oci import ANNOTATION_PREFIX

    return CacheRecord(
        key=annotations.get(BUILD_KEY_ANNOTATION, ""),
        engine=engine.name,
        sha256=annotations.get(f"{ANNOTATION_PREFIX}sha256", ""),
        manifest_facts=annotations.get(MANIFEST_FACTS_ANNOTATION, ""),
        accuracy=accuracy,
    )


@dataclass(frozen=True)
class RemoteLookup:
    """What the remote cache gave for a key: its entry, taken into the build cache (``restored``),
    or none; ``damaged``: the digest of the image manifest it held, read and proven damaged, which
    this run's push replaces (never an entry that could not be read), and ``damaged_blobs`` the
    blobs the registry served damaged, which no push replaces."""

    restored: bool = False
    damaged: str | None = None
    damaged_blobs: frozenset[str] = frozenset()


def _pull_remote(
    options: CiOptions, spec: Spec, inputs: dict[str, Any], key: str, entry: Path, reporter: Any
) -> RemoteLookup:
    """Fill the local cache entry from the remote cache (engine, manifest, and the accuracy report
    its manifest describes). Whatever the remote holds there is checked against the spec (name,
    precision, source hashes, the build key pushed with it) before it is trusted. A remote that
    fails or answers with another build, or a build cache that cannot take the download (a full
    disk), only costs the build it would have saved: warn and go on."""
    from trtforge.environment import file_problem
    from trtforge.manifest import read_manifest
    from trtforge.publish.oci import DamagedEntry, DownloadNotWritten

    tag = cache_tag(key)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with temp_dir(entry.parent, "remote") as scratch:
            registry = _remote(options)
            pulled = registry.pull_tag(tag, scratch)
            if pulled is None:
                return RemoteLookup()
            engine = pulled.engine
            manifest = read_manifest(engine)
            record = remote_record(pulled.annotations, engine, manifest.accuracy)
            problem = (
                f"it records {'another' if record.key else 'no'} build key"
                if record.key != key
                else _failed_gate(manifest.accuracy) or artifact_problem(engine, spec, inputs, record)
            )
            if problem:
                reporter.warn(
                    f"{spec.name}: remote cache entry {tag} is not this spec's build ({problem}): building locally"
                )
                # the engine blob (its digest is the manifest's sha256) served with other bytes
                engine_blob = {f"sha256:{manifest.artifact.sha256}"} if file_problem(manifest, engine) else set()
                return RemoteLookup(damaged=pulled.digest, damaged_blobs=pulled.damaged | engine_blob)
            for warning in pulled.warnings:
                reporter.warn(f"{spec.name}: {warning}")
            not_stored = _store(entry, scratch, manifest.stem, record.model_dump())  # with the report the pull kept
    except InvalidInputError as exc:  # what the tag holds is refused before anything is written
        # only the engine's download meeting the cache's disk: a docker config or credential helper
        # that cannot be read or run is an InvalidInputError from an OSError too, and no disk's problem
        if not isinstance(exc, DownloadNotWritten) or not isinstance(exc.__cause__, OSError):
            reporter.warn(f"{spec.name}: remote cache entry {tag} is refused ({first_line(exc)}): building locally")
            if isinstance(exc, DamagedEntry):
                return RemoteLookup(damaged=exc.digest, damaged_blobs=exc.damaged)
            return RemoteLookup()
        not_stored = _disk_problem(exc.__cause__, entry.parent)  # the engine's download met a full disk
    except (TrtforgeError, ValueError) as exc:
        reporter.warn(f"{spec.name}: remote cache unavailable ({first_line(exc)}): building locally")
        return RemoteLookup()
    except OSError as exc:  # the build cache's disk, not the registry (whose errors are RegistryError)
        not_stored = _disk_problem(exc, entry.parent)
    if not_stored:
        reporter.warn(
            f"{spec.name}: remote cache entry {tag} not taken: the build cache cannot hold it ({not_stored}): "
            "building locally"
        )
        return RemoteLookup()
    return RemoteLookup(restored=True)


def _disk_problem(exc: OSError, folder: Path) -> str:
    """What a write into the build cache met, and where (a copy's destination, not its source)."""
    return f"{exc.strerror or exc}: {exc.filename2 or exc.filename or folder}"


def _failed_gate(accuracy: dict[str, Any] | None) -> str | None:
    """A cache entry is stored only after its gate passed (or was off): one that says it failed was
    never trtforge's (a manifest edited in the registry, whose engine is still the build's)."""
    if accuracy is not None and accuracy.get("passed") is False:
        return "its manifest records a failed accuracy gate, and a failed build is never cached"
    return None


def _push_remote(
    options: CiOptions, name: str, key: str, record: CacheRecord, engine: Path, lookup: RemoteLookup, reporter: Any
) -> None:
    """Push the build under its key's tag: where the tag holds nothing, or the entry this run read
    there and proved damaged (``lookup``), which it replaces, saying so; an entry it could not
    read, or another runner's, stays (``OciRegistry.store_build``). A push that fails (the
    registry, or a full temporary folder the upload stages its small layers in) costs the remote
    cache only, never the build."""
    import tempfile

    from trtforge.publish import load_local_artifact

    tag = cache_tag(key)
    annotations = {BUILD_KEY_ANNOTATION: key, MANIFEST_FACTS_ANNOTATION: record.manifest_facts}
    try:
        artifact = load_local_artifact(engine)  # with its accuracy report, when the gate ran
        outcome = _remote(options).store_build(
            artifact, tag, annotations, replacing=lookup.damaged, damaged=lookup.damaged_blobs
        )
    except TrtforgeError as exc:
        reason = str(exc)
    except OSError as exc:  # the registry's failures are RegistryError: this is a local disk's
        reason = str(disk_error(exc, tempfile.gettempdir()) or first_line(exc))
    else:
        for warning in outcome.warnings:
            reporter.warn(f"remote cache: {warning}")
        if outcome.status == "replaced":
            reporter.info(f"{name}: replaced the damaged remote cache entry {tag} with this build")
        elif outcome.status == "unchanged":
            reporter.info(f"{name}: remote cache: {outcome.detail}")
        return
    reporter.warn(f"could not store the build in the remote cache ({reason}); the artifact itself is fine")


@dataclass(frozen=True)
class CachedBuild:
    """One spec's build as its key names it in the cache (``entry``), and where ``ci`` looks for its
    artifact (``out``): what :func:`_unchanged` and :func:`_reuse` compare."""

    spec_path: str
    spec: Spec
    inputs: dict[str, Any]
    key: str
    entry: Path
    out: Path
    started: float
    #: whose attestation added after the build keeps it unchanged (``CiOptions.attesters``)
    trusted: tuple[TrustedKey, ...] = ()


def _reuse(build: CachedBuild, reporter: Any, remote: bool) -> SpecResult | None:
    """The build the key describes: found in ``out`` (unchanged) or restored from the cache entry.
    None when the entry cannot provide it: a corrupt record or a damaged cached engine is
    discarded with a warning, and the spec is built again."""
    spec, entry = build.spec, build.entry
    try:
        record = read_record(entry)
        if record.key != build.key:
            raise InvalidInputError(f"{entry / RECORD_FILE}: it records another build key ({_short(record.key)})")
    except InvalidInputError as exc:
        reporter.warn(f"{spec.name}: corrupt build-cache record ({exc}): rebuilding")
        _discard(entry)
        return None
    engine = build.out / record.engine
    problem = _out_problem(engine, entry, spec, build.inputs, record, build.trusted)
    status, message = SpecStatus.UNCHANGED, "inputs unchanged: skipped"
    if problem:
        damaged = artifact_problem(entry / record.engine, spec, build.inputs, record)
        if damaged:
            reporter.warn(f"{spec.name}: build-cache entry {entry} is unusable ({damaged}): rebuilding")
            _discard(entry)
            return None
        from trtforge.manifest import ENGINE_SUFFIX

        swept = _restore(entry, build.out, spec, record.engine.removesuffix(ENGINE_SUFFIX))
        if swept:
            reporter.info(f"{spec.name}: {swept}")
        where = "the remote build cache" if remote else "the build cache"
        status, message = SpecStatus.RESTORED, f"inputs unchanged: restored from {where}"
    reporter.info(f"{spec.name}: {message}" + (f" ({problem})" if problem else ""))
    return _reused(build.spec_path, spec.name, status, message, engine, record, build.started)


def accuracy_step(accuracy: dict[str, Any]) -> StepResult:
    """The gate's JUnit case from the manifest's ``accuracy`` summary: a gate that compared nothing
    (turned off, or an identical candidate) is skipped with its reason, never a plain pass; a pass
    says what was compared with the reference, and how it was emulated. Pure."""
    if accuracy.get("skipped"):
        return StepResult("accuracy", StepStatus.SKIPPED, message=str(accuracy.get("reason", "")))
    if accuracy.get("measured") is False:
        reason = accuracy.get("candidate_reason", "nothing was compared")
        return StepResult("accuracy", StepStatus.SKIPPED, message=f"not measured: {reason}")
    emulation = f"; emulated: {accuracy['emulation']}" if accuracy.get("emulation") else ""
    return StepResult(
        "accuracy", StepStatus.PASSED, message=f"passed, candidate {accuracy.get('candidate')}{emulation}"
    )


def _reused(
    spec_path: str, name: str, status: SpecStatus, message: str, engine: Path, record: CacheRecord, started: float
) -> SpecResult:
    skipped = (
        StepResult("build", StepStatus.SKIPPED, message=message),
        StepResult("accuracy", StepStatus.SKIPPED, message=message),
    )
    return SpecResult(
        spec_path,
        name,
        status,
        0,
        time.perf_counter() - started,
        str(engine),
        record.key,
        message,
        record.accuracy,
        skipped,
    )


def _unchanged(build: CachedBuild, reporter: Any) -> SpecResult | None:
    """The artifact in ``out`` when it is the very build ``key`` describes, found without the
    output folder's lock: it only reads (a commit under way elsewhere shows as a mismatch, which
    leaves the answer to the locked path). None for anything else, which the locked path handles."""
    try:
        record = read_record(build.entry)
    except InvalidInputError:
        return None
    engine = build.out / record.engine
    if record.key != build.key:
        return None
    if _out_problem(engine, build.entry, build.spec, build.inputs, record, build.trusted) is not None:
        return None
    message = "inputs unchanged: skipped"
    reporter.info(f"{build.spec.name}: {message}")
    return _reused(build.spec_path, build.spec.name, SpecStatus.UNCHANGED, message, engine, record, build.started)


def run_one(
    spec_path: str, options: CiOptions, allow_build: bool = True, spec: Spec | None = None
) -> SpecResult | None:
    """Build (or skip) one spec; returns plain values, since it runs in a worker process.

    With ``allow_build=False`` it only answers from the local cache (None: a build is needed),
    which lets the parent settle unchanged specs without starting a worker. ``spec``: the spec
    at ``spec_path``, when the caller has loaded it already.
    """
    from trtforge.environment import choose_backend, installed_version
    from trtforge.spec import load_spec

    started = time.perf_counter()
    reporter = Reporter(interactive=False)
    out = options.out_dir
    name = Path(spec_path).stem
    try:
        spec = for_cc(spec if spec is not None else load_spec(Path(spec_path)), options.cc)
        name = spec.name
        choice = choose_backend(options.backend or spec.backend)
        if options.triton is not None:
            from trtforge.triton_releases import find_release, refuse_build

            refuse_build(spec, options.backend, find_release(options.triton))
        signer = options.signing_key.key_id if options.signing_key else None
        stamps = input_stamps(spec)  # before hashing: a write from now on is seen after the build
        inputs = build_inputs(spec, choice.flavor, installed_version(choice.flavor) or "", signer)
        key = build_key(inputs)
        entry = options.cache_dir / "builds" / key
        build = CachedBuild(spec_path, spec, inputs, key, entry, out, started, options.attesters())
        unchanged = _unchanged(build, reporter) if entry.exists() else None
        if unchanged is not None:
            return unchanged
        from trtforge.artifact import artifact_lock

        # Two pipelines on one output folder take turns per artifact; the second one then
        # finds the first one's result in the cache.
        with artifact_lock(out, spec.name, spec.precision):
            reused = None
            if entry.exists():
                reused = _reuse(build, reporter, remote=False)
            if reused is not None or not allow_build:
                return reused
            lookup = RemoteLookup()
            if options.remote_cache:
                lookup = _pull_remote(options, spec, inputs, key, entry, reporter)
                if lookup.restored:
                    reused = _reuse(build, reporter, remote=True)
                    if reused is not None:
                        return reused
            from trtforge.build import build_spec

            outcome = build_spec(
                spec,
                out,
                reporter,
                backend=options.backend,
                cache_dir=options.cache_dir,
                signing_key=options.signing_key,
            )
            from trtforge.manifest import build_facts_sha256

            accuracy = outcome.manifest.accuracy
            record = CacheRecord(
                key=key,
                engine=outcome.engine.name,
                sha256=outcome.manifest.artifact.sha256,
                manifest_facts=build_facts_sha256(outcome.manifest),
                accuracy=accuracy,
            )
            written = _written_during_build(spec, stamps)
            if written:  # the build may have read other bytes than the key hashed: not that key's build
                reporter.warn(
                    f"{spec.name}: {written} changed during the build: not cached (the next run builds it again)"
                )
            else:
                not_cached = _store(entry, out, outcome.manifest.stem, record.model_dump())
                if not_cached:
                    reporter.warn(f"{spec.name}: not cached ({not_cached}); the artifact itself is committed")
                if options.remote_cache:
                    _push_remote(options, spec.name, key, record, outcome.engine, lookup, reporter)
    except TrtforgeError as exc:
        reporter.error(f"{name}: {exc}")
        return _failed(spec_path, name, time.perf_counter() - started, exc)
    except Exception as exc:  # a bug (or a full disk) costs its own spec, never the other specs of the run
        raise_if_interrupted(exc)  # but a Ctrl-C in another exception's clothes stops the run
        error = unexpected_error(exc)
        reporter.error(f"{name}: {error}")
        return _failed(spec_path, name, time.perf_counter() - started, error)
    seconds = time.perf_counter() - started
    from trtforge.manifest import SKIPPED_ACCURACY  # built: pydantic is loaded (an unchanged spec never is)

    gate = accuracy_step(outcome.manifest.accuracy or SKIPPED_ACCURACY)
    return SpecResult(
        spec_path,
        spec.name,
        SpecStatus.BUILT,
        0,
        seconds,
        str(outcome.engine),
        key,
        "built",
        accuracy,
        (StepResult("build", StepStatus.PASSED, seconds), gate),
    )


# ---------------------------------------------------------------- collisions


def _loaded_specs(paths: list[str], cc: str | None) -> dict[str, Spec]:
    """Every spec that loads (for ``cc``, see :func:`for_cc`), by path: parsed once per run, for
    the collision check and the unchanged check alike; one that does not load is left to
    ``run_one`` to report."""
    from trtforge.spec import load_spec

    loaded: dict[str, Spec] = {}
    for path in paths:
        with suppress(Exception):  # run_one loads it again and reports the failure (a bug too) as its outcome
            loaded[path] = for_cc(load_spec(Path(path)), cc)
    return loaded


def _refuse_collisions(specs: dict[str, Spec], options: CiOptions) -> dict[str, SpecResult]:
    """Before anything is built: specs (loaded, by path) that would overwrite each other's
    artifact fail (exit 2), with one line naming them all."""
    from trtforge.environment import choose_backend
    from trtforge.spec import colliding_specs

    refused: dict[str, SpecResult] = {}
    reporter = Reporter(interactive=False)
    for group, error in colliding_specs(specs, lambda spec: choose_backend(options.backend or spec.backend).flavor):
        reporter.error(str(error))
        refused.update((path, _failed(path, specs[path].name, 0.0, error)) for path in group)
    return refused


# ---------------------------------------------------------------- worker processes


def _already_stopping(signum: int, frame: Any) -> None:
    """Stop signals once a process is stopping. A Python no-op rather than SIG_IGN: a signal
    already pending when SIG_IGN is set makes Python print a "race condition" warning."""


def _interrupt_once(signum: int, frame: Any) -> None:
    """A worker's Ctrl-C: the first one unwinds the build (removing its temporaries). Another one
    (the parent forwards Ctrl-C and a terminal sends it too) must not cut that cleanup short, also
    when the first one was turned into KeyboardInterrupt by the backend's cancelled build: while
    one is being handled (``finally``, ``__exit__``, ``except``), Python shows it in ``exc_info``.
    Where it would break an import it waits until it no longer would (``interrupt_deferred``)."""
    if isinstance(sys.exc_info()[1], KeyboardInterrupt) or interrupt_deferred(signum, frame):
        return
    for stop in STOP_SIGNALS:
        signal.signal(stop, _already_stopping)
    raise KeyboardInterrupt


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    """A worker's SIGTERM is handled as Ctrl-C: a TensorRT build in progress is cancelled (an
    exception inside TensorRT's callbacks would be swallowed), also where Ctrl-C is ignored (a
    script's background job: the build leaves it so), else ``_interrupt_once``. The backend's
    module is looked up, not imported, in a signal handler: no build runs before it is loaded."""
    backends = sys.modules.get("trtforge.backends.base")
    if backends is None or not backends.cancel_build():
        _interrupt_once(signum, frame)


#: ``prctl`` option: the signal the kernel sends a process when its parent dies (linux/prctl.h)
PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """Make this worker die with the ``ci`` process that started it (``parent``), even when that
    one is killed with SIGKILL and cannot stop it: a worker nobody waits for must not go on
    committing into --out. Linux's parent-death signal, then a check for a parent already gone
    before it was set. The worker dies as if killed: its open commit and temporaries are what
    the next run's sweep cleans up."""
    if sys.platform.startswith("linux"):
        import ctypes

        with suppress(OSError, AttributeError):  # no libc to ask: the check below still holds
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def _worker(spec_path: str, options: CiOptions, result_fd: int, log_fd: int, parent: int) -> None:
    """One spec in its own process; its result goes to ``result_fd``, a pipe the parent reads (no
    file: a full or read-only cache folder costs a build its caching, never its result), its
    messages to ``log_fd``, a pipe the parent relays onto its own stderr (whatever that is: a
    terminal, a file, a test's capture)."""
    _die_with(parent)
    sys.stderr = open(log_fd, "w", encoding="utf-8", errors="replace", buffering=1)  # noqa: SIM115 - for the process's life
    handlers = {signal.SIGINT: _interrupt_once, signal.SIGTERM: _terminate_as_interrupt}
    for stop in _stoppable():
        signal.signal(stop, handlers[stop])
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by the parent around the fork
        result = run_one(spec_path, options)
        if result is not None:
            with open(result_fd, "w", encoding="utf-8") as handed:
                handed.write(json.dumps(asdict(result)))
    except KeyboardInterrupt:
        for stop in _stoppable():
            signal.signal(stop, _already_stopping)
        sys.exit(INTERRUPTED_EXIT)  # what a worker that was interrupted exits with, as the CLI on Ctrl-C


def _stoppable() -> list[signal.Signals]:
    """The stop signals this process does not ignore (a background job of a script ignores
    Ctrl-C on purpose: so do its workers)."""
    return [stop for stop in STOP_SIGNALS if signal.getsignal(stop) is not signal.SIG_IGN]


@contextmanager
def _handling(handler: Any) -> Iterator[None]:
    """``handler`` for every stop signal meanwhile (only the main thread may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {stop: signal.signal(stop, handler) for stop in _stoppable()}
    try:
        yield
    finally:
        for stop, earlier in previous.items():
            signal.signal(stop, earlier)


def _stop(processes: list[BaseProcess], options: CiOptions) -> None:
    """Interrupt every live worker (a terminal's Ctrl-C reaches them, ``kill -INT`` of the parent
    does not), give them STOP_GRACE_S to cancel and clean up, then kill the rest and remove what
    they left (a dead process's temporaries and open commits are what ``sweep`` cleans)."""
    # the workers' stop: Ctrl-C, or SIGTERM where they ignore it (a script's background job)
    stop = signal.SIGINT if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN else signal.SIGTERM
    with _handling(_already_stopping):  # a second Ctrl-C must not leave workers running
        live = [process for process in processes if process.is_alive()]
        for process in live:
            with suppress(ProcessLookupError):
                os.kill(process.pid, stop)  # type: ignore[arg-type]
        deadline = time.monotonic() + STOP_GRACE_S
        for process in live:
            process.join(max(0.0, deadline - time.monotonic()))
        killed = [process for process in live if process.is_alive()]
        for process in killed:
            process.kill()
            process.join()
        if killed:
            from trtforge.artifact import sweep

            sweep(options.out_dir)  # rolls back a commit a killed worker left open, removes its temporaries
            sweep(options.cache_dir, depth=3)


def _worker_result(spec_path: str, process: BaseProcess, handed: str) -> SpecResult:
    """The result a worker wrote into its pipe (``handed``: all of it), else why there is none."""
    try:
        return SpecResult.from_dict(json.loads(handed))
    except (ValueError, TypeError):
        code = process.exitcode or 0
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        error = TrtforgeError(f"the build process {how} before reporting a result")
        return _failed(spec_path, Path(spec_path).stem, 0.0, error)


class _Relay:
    """A worker's pipe, read as it arrives: its stderr, copied onto this process's stderr, or its
    result, kept in ``kept`` (read meanwhile, so a result larger than the pipe holds never blocks)."""

    def __init__(self, fd: int, kept: list[str] | None = None) -> None:
        self.fd = fd
        self.kept = kept
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def copy(self) -> bool:
        """Copy what is there (the pipe is readable); False at the end: the worker has exited."""
        chunk = os.read(self.fd, 65536)
        text = self.decoder.decode(chunk, final=not chunk)
        if text and self.kept is not None:
            self.kept.append(text)
        elif text:
            sys.stderr.write(text)
            sys.stderr.flush()
        return bool(chunk)


def _build_in_workers(paths: list[str], options: CiOptions, jobs: int) -> dict[str, SpecResult]:
    """Each spec in its own process (TensorRT builds hold the GIL), ``jobs`` at a time. On Ctrl-C,
    SIGTERM or any error every worker is interrupted, and killed if it does not stop in time; when
    this process is killed, the kernel kills them (:func:`_die_with`). Each worker hands its result
    back through a pipe, which leaves nothing behind whatever ends the run."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("fork")
    waiting = list(paths)
    processes: list[BaseProcess] = []
    running: dict[Any, tuple[str, BaseProcess, list[str], tuple[_Relay, ...]]] = {}
    relays: dict[int, _Relay] = {}
    results: dict[str, SpecResult] = {}
    # SIGTERM (how CI systems cancel a job) stops the run like Ctrl-C instead of orphaning workers
    with _handling(interrupt):
        try:
            while waiting or running:
                while waiting and len(running) < jobs:
                    path = waiting.pop(0)
                    (result_fd, result_end), (log_fd, log_end) = os.pipe(), os.pipe()
                    arguments = (path, options, result_end, log_end, os.getpid())
                    worker = context.Process(target=_worker, args=arguments)
                    processes.append(worker)
                    with stop_signals_held():  # the worker starts with them blocked, until its handlers are in place
                        worker.start()
                    for end in (result_end, log_end):
                        os.close(end)  # the worker holds the only write ends: its exit ends the pipes
                    handed: list[str] = []
                    relays[result_fd], relays[log_fd] = _Relay(result_fd, handed), _Relay(log_fd)
                    running[worker.sentinel] = (path, worker, handed, (relays[result_fd], relays[log_fd]))
                ready = wait([*running, *relays])
                for fd in (fd for fd in ready if fd in relays):
                    if not relays[fd].copy():
                        os.close(relays.pop(fd).fd)
                for sentinel in (sentinel for sentinel in ready if sentinel in running):
                    path, finished, handed, own = running.pop(sentinel)
                    finished.join()
                    for relay in own:
                        if relays.get(relay.fd) is relay:  # not yet at its end (a closed fd's number is reused)
                            while relay.copy():
                                pass
                            os.close(relays.pop(relay.fd).fd)
                    results[path] = _worker_result(path, finished, "".join(handed))
        except BaseException:
            _stop(processes, options)
            raise
        finally:
            for relay in relays.values():
                os.close(relay.fd)
    return results


def run_ci(specs: list[Path], options: CiOptions, jobs: int) -> CiReport:
    """Every spec, ``jobs`` at a time; specs that would write one artifact are refused first. What
    dead runs left in ``--out`` (temporaries, an open commit) is cleaned up first."""
    from trtforge.artifact import sweep

    started = time.perf_counter()
    ensure_writable_dir(options.out_dir)
    if options.remote_cache:
        _remote(options)  # a malformed URI is a usage error before any work
    # before any verdict: a dead run's open commit is rolled back here, so a spec whose new set it
    # left in place is judged on the set that stays, not called unchanged and later rolled back
    swept = sweep(options.out_dir).note
    if swept:
        Reporter(interactive=False).info(swept)
    paths = [str(spec) for spec in specs]
    specs_by_path = _loaded_specs(paths, options.cc)
    settled: dict[str, SpecResult | None] = dict(_refuse_collisions(specs_by_path, options))
    for path in paths:
        if path not in settled:
            settled[path] = run_one(path, options, allow_build=jobs <= 1, spec=specs_by_path.get(path))
    to_build = [path for path in paths if settled[path] is None]
    if to_build:
        settled.update(_build_in_workers(to_build, options, jobs))
    results = (settled[path] for path in paths)
    return CiReport(tuple(result for result in results if result is not None), time.perf_counter() - started, jobs)


# ---------------------------------------------------------------- reports


def junit_suites(report: CiReport) -> list[Any]:
    """A test case per spec and step, so CI systems show builds and gates like tests."""
    from junitparser import Error, Failure, Skipped, TestCase, TestSuite

    suite = TestSuite("trtforge.ci")
    for result in report.results:
        # the model's name and its spec file: the fp16 and int8 specs of one model are two classes
        classname = f"{result.name}.{Path(result.spec).stem}"
        for step in result.steps:
            case = TestCase(step.name, classname=classname, time=round(step.seconds, 3))
            if step.status is StepStatus.FAILED:
                kind = Failure if step.name == "accuracy" else Error
                case.result = [kind(step.message, f"exit {result.exit_code}")]
            elif step.status is StepStatus.SKIPPED:
                case.result = [Skipped(step.message)]
            elif step.message:
                case.system_out = step.message
            suite.add_testcase(case)
    suite.time = round(report.seconds, 3)
    return [suite]


def _accuracy_text(result: SpecResult) -> str:
    accuracy = result.accuracy
    if not accuracy:
        return "failed" if result.exit_code == AccuracyError.exit_code else "-"
    from trtforge.accuracy.junit import summary_verdict

    return summary_verdict(accuracy)


def _emulation_notes(report: CiReport) -> list[str]:
    """What each simulated candidate of the table emulated, one line per emulation with the specs
    it judged: a cell says "simulated", too narrow for the label (``mixedprecision``'s) it stands for."""
    specs: dict[str, list[str]] = {}
    for result in report.results:
        emulation = (result.accuracy or {}).get("emulation")
        if emulation:
            specs.setdefault(str(emulation), []).append(Path(result.spec).name)
    return [f"simulated ({', '.join(names)}): no engine ran; emulated: {label}" for label, names in specs.items()]


#: what Markdown reads as markup in a table cell: the column bar, emphasis, code, links, HTML tags
#: and entities; a backslash before each keeps it text (CommonMark escapes any ASCII punctuation)
_MARKDOWN_MARKUP = re.compile(r"([\\`*_~\[\]<>|&!#])")


def markdown_cell(text: str) -> str:
    """``text`` as a table cell that renders as written: a message quotes paths and values (a
    ``<missing>`` model, ``*x*`` in a file name, a ``|``) that GitHub would take for markup."""
    return _MARKDOWN_MARKUP.sub(r"\\\1", text)


def markdown_summary(report: CiReport) -> str:
    """For ``$GITHUB_STEP_SUMMARY``."""
    lines = [
        f"### trtforge ci: exit {report.exit_code} in {report.seconds:.1f} s",
        "",
        "| spec | status | accuracy | engine | seconds |",
        "|---|---|---|---|---|",
    ]
    for result in report.results:
        engine = Path(result.engine).name if result.engine else result.message
        cells = (result.name, result.status.value, _accuracy_text(result), engine, f"{result.seconds:.1f}")
        lines.append("| " + " | ".join(markdown_cell(cell) for cell in cells) + " |")
    notes = _emulation_notes(report)
    if notes:
        lines += ["", *(f"- {markdown_cell(note)}" for note in notes)]
    return "\n".join(lines) + "\n"


#: GitHub Actions shows this file's Markdown on the run's page once the job ends.
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
#: the file name a refused ``$GITHUB_STEP_SUMMARY`` is told to take instead
STEP_SUMMARY_EXAMPLE = "summary.md"


@dataclass(frozen=True)
class ReportFiles:
    """Where ``ci`` writes its reports besides stdout: ``--junit`` and GitHub's step summary."""

    junit: Path | None
    step_summary: Path | None

    @classmethod
    def checked(cls, junit: Path | None) -> ReportFiles:
        """``junit`` and ``$GITHUB_STEP_SUMMARY``, checked before any build (``check_report_file``): a
        folder, a device or an artifact's name would fail the run at its end or be replaced by the
        report. Whether one is an input is known once the project is found (``refuse_inputs``)."""
        summary = os.environ.get(STEP_SUMMARY_ENV)
        reports = cls(junit, Path(summary) if summary else None)
        named = reports._named()
        if named:  # manifest (pydantic models) only then: not on every unchanged rerun
            from trtforge.manifest import ARTIFACT_SUFFIXES

            for path, flag, example in named:
                check_report_file(path, flag, example, reserved=ARTIFACT_SUFFIXES)
        return reports

    def refuse_inputs(self, inputs: Iterable[Path]) -> None:
        """Exit 2 where a report file is one of the run's ``inputs`` (a spec, the project file, a
        model, data, labels), before anything is built or replayed: the report written at the end would replace
        it. ``inputs`` is read only where a report file exists already."""
        named = [(path, flag, example) for path, flag, example in self._named() if path.exists()]
        known = list(inputs) if named else []
        for path, flag, example in named:
            check_report_not_input(path, flag, example, known)

    def _named(self) -> list[tuple[Path, str, str]]:
        """Each report file given, with the name its messages use and the file name a fix suggests."""
        named: list[tuple[Path, str, str]] = []
        if self.junit is not None:
            from trtforge.accuracy.junit import JUNIT_EXAMPLE

            named.append((self.junit, "--junit", JUNIT_EXAMPLE))
        if self.step_summary is not None:
            named.append((self.step_summary, STEP_SUMMARY_ENV, STEP_SUMMARY_EXAMPLE))
        return named

    def write(self, report: CiReport) -> None:
        """The JUnit file is replaced; the step summary is appended to (earlier steps write there too)."""
        if self.junit is not None:
            from trtforge.accuracy.junit import write_junit

            with _writing(self.junit, "--junit"):
                write_junit(self.junit, junit_suites(report))
        if self.step_summary is not None:
            with _writing(self.step_summary, STEP_SUMMARY_ENV):
                target = report_target(self.step_summary)
                previous = target.read_bytes() if target.is_file() else b""
                atomic_write_bytes(target, previous + markdown_summary(report).encode("utf-8"))


@contextmanager
def _writing(path: Path, what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise InvalidInputError(
            f"{what} {path}: cannot write it ({exc.strerror}); point it at a writable file"
        ) from exc


def render_ci_table(report: CiReport, reporter: Reporter) -> None:
    table = Table(
        (f"trtforge ci — exit {report.exit_code} in {report.seconds:.1f} s",),
        ("spec", "status", "exit", "accuracy", "engine / error", "s"),
    )
    styles = {
        SpecStatus.BUILT: "green",
        SpecStatus.UNCHANGED: "dim",
        SpecStatus.RESTORED: "cyan",
        SpecStatus.FAILED: "red",
    }
    for result in report.results:
        engine = Path(result.engine).name if result.engine else result.message
        table.add_row(
            Path(result.spec).name,
            Styled(result.status.value, styles[result.status]),
            str(result.exit_code),
            _accuracy_text(result),
            engine,
            f"{result.seconds:.1f}",
        )
    reporter.render(table)
    for note in _emulation_notes(report):
        reporter.info(note)
