"""Signed build provenance: an in-toto Statement v1 with a SLSA provenance v1 predicate, in a
DSSE envelope, written beside the engine as ``{stem}.intoto.jsonl``.

Standard verifiers read this format (securesystemslib's ``dsse.Envelope.verify``, the in-toto
tools, ``cosign verify-blob-attestation --key``); ``trtforge verify-provenance`` adds what they
cannot know: whether the attestation is this engine's, which files built it and whether they still
hash the same.

Libraries: securesystemslib makes and verifies the DSSE envelope (PAE, signatures, key ids);
in-toto-attestation's protobuf models validate the Statement and the provenance predicate (unknown
or misspelt fields are refused). The JSON itself is written from plain dicts: protobuf's ``Struct``
turns every integer into a float (``"samples": 256.0``), which the accuracy summary should not show.
Not used: ``sigstore`` signs keylessly (Fulcio certificates, Rekor log: services these machines
cannot reach, and not a local key); ``model-signing`` signs a model folder under its own predicate
(file digests), not SLSA provenance of a build.

Layout of the predicate (SLSA provenance v1):

- ``buildDefinition.resolvedDependencies``: the build's inputs (model, each external data file
  of the model, spec, calibration data, accuracy data, labels), each ``{name, digest: {sha256},
  annotations: {role, path}}``; ``path`` is relative to the engine's folder, so a build tree
  moved as a whole still verifies.
- ``runDetails.builder``: ``id`` (``pkg:pypi/trtforge@VERSION``), ``version`` (trtforge, the
  backend flavor's version, the platform tag) and the backend as a ``builderDependencies`` entry.
- ``runDetails.byproducts``: the accuracy report, with the gate's summary as its annotations.
  SLSA defines byproducts as outputs of the run that are not the artifact, which is what the gate's
  verdict is; ``internalParameters`` are inputs the builder chose, which it is not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.digests import sha256_bytes, sha256_file
from trtforge.errors import IncompatibleEngineError, InvalidInputError, disk_error, first_line
from trtforge.jsonsafe import bounded_json
from trtforge.keys import SigningKey, TrustedKey
from trtforge.manifest import ArtifactPaths, Manifest, attestation_path, read_manifest
from trtforge.signing import SignOutcome, artifact_to_sign, key_type_of, sign_manifest, sslib_key, sslib_signer

if TYPE_CHECKING:
    from trtforge.spec import Spec

#: the OCI artifact/media type of a DSSE envelope (what registries and ORAS ``discover`` show)
ATTESTATION_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
#: the DSSE payloadType of an in-toto Statement
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
#: what a trtforge build is, for verifiers that accept build types by name
BUILD_TYPE = "urn:trtforge:build:v1"
#: an envelope is a few KB; anything far larger is refused before parsing
MAX_ATTESTATION_BYTES = 4 * 1024 * 1024


def attestation_bytes(engine: Path) -> bytes | None:
    """The DSSE envelope beside ``engine`` (one JSON line, :data:`ATTESTATION_MEDIA_TYPE`), or None."""
    path = attestation_path(engine)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read the attestation ({exc.strerror})") from exc


# ---------------------------------------------------------------- the statement (pure)


@dataclass(frozen=True)
class Input:
    """One file the build read; ``path`` is relative to the engine's folder, None when unknown
    (an attestation made from the manifest alone knows only the digests)."""

    role: str
    sha256: str
    path: str | None = None

    def descriptor(self) -> dict[str, Any]:
        annotations: dict[str, Any] = {"role": self.role}
        if self.path is not None:
            annotations["path"] = self.path
        return {"name": self.path or self.role, "digest": {"sha256": self.sha256}, "annotations": annotations}


@dataclass(frozen=True)
class Byproduct:
    """The accuracy report: its file name and digest (absent when the gate was off) and summary."""

    name: str
    summary: dict[str, Any]
    sha256: str | None = None

    def descriptor(self) -> dict[str, Any]:
        digest = {"digest": {"sha256": self.sha256}} if self.sha256 else {}
        return {"name": self.name, **digest, "mediaType": "application/json", "annotations": self.summary}


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def statement(
    manifest: Manifest, manifest_sha256: str, inputs: Sequence[Input], byproduct: Byproduct | None
) -> dict[str, Any]:
    """The in-toto Statement for one engine: subjects are the engine and its manifest."""
    finished = datetime.fromisoformat(manifest.build.created_utc)
    started = finished - timedelta(seconds=manifest.build.seconds)
    version = manifest.build.trtforge_version
    platform = f"{manifest.platform.os}_{manifest.platform.machine}"
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "name": manifest.name,
                "precision": manifest.precision,
                "backend": manifest.tensorrt.flavor,
                "targets": list(manifest.gpu.compute_capabilities),
                "versionCompatible": manifest.tensorrt.version_compatible,
                "hardwareCompatibility": manifest.gpu.hardware_compatibility,
            },
            "internalParameters": {"tag": manifest.tag, "profiles": manifest.profiles},
            "resolvedDependencies": [item.descriptor() for item in inputs],
        },
        "runDetails": {
            "builder": {
                "id": f"pkg:pypi/trtforge@{version}",
                "version": {
                    "trtforge": version,
                    manifest.tensorrt.flavor: manifest.tensorrt.version,
                    "platform": platform,
                },
                "builderDependencies": [
                    {
                        "name": manifest.tensorrt.flavor,
                        "uri": f"pkg:pypi/{manifest.tensorrt.flavor}@{manifest.tensorrt.version}",
                    }
                ],
            },
            "metadata": {"startedOn": _timestamp(started), "finishedOn": _timestamp(finished)},
            "byproducts": [byproduct.descriptor()] if byproduct is not None else [],
        },
    }
    document = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": manifest.artifact.file, "digest": {"sha256": manifest.artifact.sha256}},
            {"name": f"{manifest.stem}.manifest.json", "digest": {"sha256": manifest_sha256}},
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }
    validate_statement(document)
    return document


def validate_statement(document: Any) -> None:
    """Raise ValueError unless ``document`` is an in-toto Statement v1 with a SLSA provenance v1
    predicate, as in-toto-attestation's models define them (field names and types included)."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    if not isinstance(document, dict):
        raise ValueError("the payload is not a JSON object")
    if document.get("_type") != STATEMENT_TYPE:
        raise ValueError(f"_type is {document.get('_type')!r}, not {STATEMENT_TYPE}")
    if document.get("predicateType") != PREDICATE_TYPE:
        raise ValueError(f"predicateType is {document.get('predicateType')!r}, not {PREDICATE_TYPE}")
    try:
        parsed = json_format.ParseDict(document, statement_pb2.Statement())
        Statement.copy_from_pb(parsed).validate()
        provenance = json_format.ParseDict(document["predicate"], provenance_pb2.Provenance())
    except (json_format.ParseError, TypeError) as exc:
        raise ValueError(first_line(exc)) from None
    if not provenance.build_definition.build_type or not provenance.run_details.builder.id:
        raise ValueError("the SLSA predicate lacks buildDefinition.buildType or runDetails.builder.id (both required)")


def envelope(document: dict[str, Any], key: SigningKey) -> bytes:
    """The Statement signed in a DSSE envelope, as one JSON line (the ``.intoto.jsonl`` format)."""
    from securesystemslib.dsse import Envelope

    payload = json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    wrapped = Envelope(payload, PAYLOAD_TYPE, {})
    wrapped.sign(sslib_signer(key))
    return (json.dumps(wrapped.to_dict(), separators=(",", ":")) + "\n").encode("utf-8")


# ---------------------------------------------------------------- inputs


def _relative(path: Path, folder: Path) -> str:
    return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()


def spec_inputs(spec: Spec, engine_dir: Path, external_data: bool = True) -> tuple[Input, ...]:
    """Every file ``spec`` made the build read, hashed in this process (what a signed statement
    records never takes the digest cache's word: :func:`trtforge.digests.sha256_file`):
    the model, the spec, then each external data file the model names (role ``model-data``), then
    the data. ``external_data=False``: the caller knows the model has none (its graph is not read
    to find that out)."""
    from trtforge.model import model_files
    from trtforge.spec import expand_globs

    model = model_files(spec.model_path) if external_data else [spec.model_path]
    files: list[tuple[str, Path]] = [("model", model[0]), *(("model-data", path) for path in model[1:])]
    if spec.calibration is not None:
        where = spec.origin.where("calibration", "data")
        files += [("calibration-data", path) for path in expand_globs(spec.calibration.data, where)]
    if spec.accuracy.enabled and spec.accuracy.data:
        where = spec.origin.where("accuracy", "data")
        files += [("accuracy-data", path) for path in expand_globs(spec.accuracy.data, where)]
    if spec.accuracy.enabled and spec.accuracy.labels:
        files.append(("labels", Path(spec.accuracy.labels)))
    # the spec by the digest of the text the build read (the manifest's), not of the file as it is now
    spec_file = Input("spec", spec.origin.sha256, _relative(spec.origin.path, engine_dir))
    hashed = [Input(role, sha256_file(path, disk_cache=False), _relative(path, engine_dir)) for role, path in files]
    return (hashed[0], spec_file, *hashed[1:])


def _model_content_problem(spec: Spec, manifest: Manifest, inputs: Sequence[Input]) -> str | None:
    """Where the manifest records the model's content digest (its weights in external data files),
    whether the model's files now give another (their digests are ``inputs``' already)."""
    from trtforge.model import content_sha256

    recorded = manifest.source.model_sha256
    if recorded is None:
        return None
    content = content_sha256(spec.model_path, disk_cache=False)
    if content == recorded:
        return None
    data = ", ".join(item.path or "?" for item in inputs if item.role == "model-data") or "none now"
    return (
        f"the external data of its model ({data}) has content sha256 {content[:12]}…, "
        f"the manifest says {recorded[:12]}…"
    )


def recorded_inputs(manifest: Manifest) -> tuple[Input, ...]:
    """The inputs a manifest alone names: the model and the spec, by digest."""
    return (Input("model", manifest.source.onnx_sha256), Input("spec", manifest.source.spec_sha256))


def accuracy_byproduct(manifest: Manifest, report: bytes | None) -> Byproduct | None:
    if manifest.accuracy is None:
        return None
    name = str(manifest.accuracy.get("report") or "accuracy")
    summary = manifest.to_dict()["accuracy"]  # as the manifest file holds it: a NaN metric is null there
    return Byproduct(name, summary, sha256_bytes(report) if report is not None else None)


def sign_build(
    spec: Spec, manifest: Manifest, engine: Path, report: bytes | None, key: SigningKey
) -> tuple[Manifest, bytes]:
    """At build time: the signed manifest and the attestation of the engine it describes."""
    signed = sign_manifest(manifest, key)
    digest = sha256_bytes(signed.to_json().encode("utf-8"))
    # the build stamped a content digest exactly where the model has external data: none, no parse
    inputs = spec_inputs(spec, engine.parent, external_data=manifest.source.model_sha256 is not None)
    document = statement(signed, digest, inputs, accuracy_byproduct(signed, report))
    return signed, envelope(document, key)


@dataclass(frozen=True)
class AttestOutcome:
    path: Path
    inputs: tuple[Input, ...]


def sign_and_attest(
    engine_or_manifest: Path, key: SigningKey, spec: Spec | None = None
) -> tuple[SignOutcome, AttestOutcome]:
    """``trtforge sign --attest``: the manifest signed and its attestation written as one commit.

    Everything is checked first: the engine must match the manifest, and a ``spec`` must be the one
    that built it (its and its model's digests are the manifest's). A refusal, or a failed write,
    leaves the manifest and its attestation as they were: the old attestation still verifies.
    """
    from trtforge.artifact import ArtifactWriter

    paths = ArtifactPaths.of(engine_or_manifest).must_exist()
    with artifact_to_sign(paths, "sign and attest") as (manifest, engine):
        inputs = recorded_inputs(manifest) if spec is None else _built_by(spec, manifest, engine)
        signed = sign_manifest(manifest, key)
        manifest_bytes = signed.to_json().encode("utf-8")
        report_name = (manifest.accuracy or {}).get("report")
        report_file = engine.parent / Path(str(report_name)).name if report_name else None  # never outside
        report = report_file.read_bytes() if report_file is not None and report_file.is_file() else None
        document = statement(signed, sha256_bytes(manifest_bytes), inputs, accuracy_byproduct(signed, report))
        path = attestation_path(engine)
        try:
            with ArtifactWriter(engine.parent, manifest.name, manifest.precision) as writer:
                writer.write(path.name, envelope(document, key))
                writer.write(paths.manifest.name, manifest_bytes)
                writer.commit()
        except OSError as exc:
            raise disk_error(exc, path) or InvalidInputError(
                f"{path}: cannot write the attestation and its signed manifest ({exc.strerror})"
            ) from exc
    previous = (manifest.signature or {}).get("key_id")
    return SignOutcome(paths.manifest, signed, previous), AttestOutcome(path, inputs)


def _built_by(spec: Spec, manifest: Manifest, engine: Path) -> tuple[Input, ...]:
    """The inputs ``spec`` names, refused (exit 5) unless it and its model built ``engine``."""
    inputs = spec_inputs(spec, engine.parent)
    expected = {item.role: item.sha256 for item in recorded_inputs(manifest)}
    for item in inputs[:2]:
        if item.sha256 != expected[item.role]:
            raise IncompatibleEngineError(
                f"{spec.origin.path}: its {item.role} ({item.path}) is not the one that built {engine.name} "
                f"(sha256 {item.sha256[:12]}…, the manifest says {expected[item.role][:12]}…); "
                "pass the spec the engine was built from, or rebuild",
                reasons=[f"{item.role} differs"],
            )
    problem = _model_content_problem(spec, manifest, inputs)
    if problem:
        raise IncompatibleEngineError(
            f"{spec.origin.path}: {problem}, so it is not the model that built {engine.name}; "
            "pass the spec the engine was built from, or rebuild",
            reasons=["model data differs"],
        )
    return inputs


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class InputCheck:
    """One input against the file given for it or found at its recorded path."""

    input: Input
    status: str  # "same" | "changed" | "not found" | "no path"
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.input.role,
            "path": self.input.path,
            "sha256": self.input.sha256,
            "status": self.status,
            "file": self.file,
        }


@dataclass(frozen=True)
class ProvenanceReport:
    engine: Path
    attestation: Path
    key_id: str
    algorithm: str
    subjects: tuple[tuple[str, str], ...]
    builder: dict[str, Any]
    inputs: tuple[InputCheck, ...]
    accuracy: dict[str, Any] | None
    problems: tuple[str, ...] = field(default=())

    @property
    def verified(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": str(self.engine),
            "attestation": str(self.attestation),
            "verified": self.verified,
            "signer": {"key_id": self.key_id, "algorithm": self.algorithm},
            "subjects": [{"name": name, "sha256": digest} for name, digest in self.subjects],
            "builder": self.builder,
            "inputs": [check.to_dict() for check in self.inputs],
            "accuracy": self.accuracy,
            "problems": list(self.problems),
        }


def _refuse(where: Path, what: str) -> IncompatibleEngineError:
    return IncompatibleEngineError(f"{where}: {what}", reasons=[what])


def read_envelope(path: Path) -> Any:
    """The envelope in ``path``, parsed; any malformed file is a refusal (exit 5), never a pass."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import FormatError

    if not path.is_file():
        raise _refuse(path, "no attestation beside the engine; create it with trtforge sign ENGINE --attest --key FILE")
    with open(path, "rb") as handle:
        data = handle.read(MAX_ATTESTATION_BYTES + 1)
    lines = [line for line in data.splitlines() if line.strip()]
    if len(lines) != 1:
        raise _refuse(
            path,
            f"malformed attestation: {len(lines)} JSON lines, expected one DSSE envelope; "
            "re-create it with trtforge sign --attest",
        )
    try:
        document = bounded_json(lines[0], MAX_ATTESTATION_BYTES)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        _check_dsse_types(document)
        return Envelope.from_dict(document)
    except (ValueError, KeyError, TypeError, FormatError) as exc:
        raise _refuse(
            path, f"malformed attestation ({_reason(exc)}); re-create it with trtforge sign --attest"
        ) from exc


def _check_dsse_types(document: dict[str, Any]) -> None:
    """Raise ValueError naming the DSSE field that is not of its JSON type: securesystemslib reads
    them unchecked, so a number there was an internal error (exit 1), not a refusal. A missing
    field is left to ``Envelope.from_dict``, which names it."""
    for key in ("payload", "payloadType"):
        if key in document and not isinstance(document[key], str):
            raise ValueError(f"the DSSE field {key!r} is not text")
    signatures = document.get("signatures", [])
    if not isinstance(signatures, list) or not all(isinstance(item, dict) for item in signatures):
        raise ValueError("the DSSE field 'signatures' is not a list of objects")
    for item in signatures:
        for key in ("keyid", "sig"):
            if key in item and not isinstance(item[key], str):
                raise ValueError(f"the DSSE field {key!r} is not text")


def stale_attestation(engine: Path, manifest_bytes: bytes) -> Path | None:
    """The attestation beside ``engine`` when it does not cover these manifest bytes (a manifest
    signed again after it was attested, or a malformed file): it would no longer verify, so it is
    said, and not published. None when there is none or it covers them."""
    path = attestation_path(engine)
    if not path.is_file():
        return None
    try:
        document = bounded_json(read_envelope(path).payload, MAX_ATTESTATION_BYTES)
        digests = {str(item.get("digest", {}).get("sha256", "")) for item in document["subject"]}
    except (IncompatibleEngineError, ValueError, KeyError, TypeError, AttributeError):
        return path
    return None if sha256_bytes(manifest_bytes) in digests else path


def unverified_attestation(engine: Path, trusted: Sequence[TrustedKey]) -> str | None:
    """Why no key of ``trusted`` vouches for the attestation beside ``engine``, as
    ``verify-provenance`` judges its envelope and signer (:func:`read_envelope`, :func:`_signer_of`):
    malformed, not in-toto, unsigned, signed by a key not among them, a signature that does not
    verify. None when one's signature verifies. One small file read and one signature checked."""
    path = attestation_path(engine)
    try:
        wrapped = read_envelope(path)
        if wrapped.payload_type != PAYLOAD_TYPE:
            raise _refuse(path, f"payloadType is {wrapped.payload_type!r}, not {PAYLOAD_TYPE}")
        _signer_of(wrapped, path, trusted)
    except IncompatibleEngineError as exc:
        return exc.reasons[0] if exc.reasons else first_line(exc)
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"the DSSE field {exc.args[0]!r} is missing"
    return first_line(exc)


def _signer_of(wrapped: Any, path: Path, trusted: Sequence[TrustedKey]) -> TrustedKey:
    """The trusted key whose signature verifies; an unknown key and a bad signature are told apart."""
    from securesystemslib.exceptions import VerificationError

    named = list(wrapped.signatures)
    if not named:
        raise _refuse(path, "the envelope has no signature; sign it with trtforge sign --attest")
    by_id = {key.key_id: key for key in trusted}
    known = [by_id[key_id] for key_id in named if key_id in by_id]
    if not known:
        raise _refuse(
            path,
            f"signed by key {', '.join(named)}, which is not a trusted key; pass its public key with --trusted-key",
        )
    try:
        accepted = wrapped.verify([sslib_key(key) for key in known], 1)
    except VerificationError as exc:
        raise _refuse(
            path, f"signature by key {known[0].key_id} does not verify: the envelope was changed after signing"
        ) from exc
    return by_id[next(iter(accepted))]


def _refuse_disagreement(path: Path, predicate: dict[str, Any], manifest: Manifest, inputs: Sequence[Input]) -> None:
    """The attestation and the manifest it names as a subject must tell one build: its model and
    spec digests, name, precision and tag. Each is signed, maybe by different trusted keys (a key
    rotated since): a statement that contradicts the manifest is refused (exit 5), not verified."""
    claimed = {item.role: item.sha256 for item in inputs}
    for item in recorded_inputs(manifest):
        if claimed.get(item.role) != item.sha256:
            said = f"sha256 {claimed[item.role][:12]}…" if item.role in claimed else "none"
            raise _refuse(
                path,
                f"its {item.role} ({said}) is not the manifest's (sha256 {item.sha256[:12]}…): the attestation "
                "and the manifest disagree on what was built; re-attest with trtforge sign --attest",
            )
    definition = predicate["buildDefinition"]
    facts = {
        "name": (definition["externalParameters"].get("name"), manifest.name),
        "precision": (definition["externalParameters"].get("precision"), manifest.precision),
        "tag": ((definition.get("internalParameters") or {}).get("tag"), manifest.tag),
    }
    for what, (attested, recorded) in facts.items():
        if attested != recorded:
            raise _refuse(
                path,
                f"its {what} ({attested!r}) is not the manifest's ({recorded!r}): the attestation and the manifest "
                "disagree on what was built; re-attest with trtforge sign --attest",
            )


def _check_inputs(
    inputs: Sequence[Input], engine_dir: Path, given: Sequence[Path]
) -> tuple[list[InputCheck], list[str]]:
    by_digest = {sha256_file(path, disk_cache=False): path for path in given}
    checks: list[InputCheck] = []
    for item in inputs:
        if item.sha256 in by_digest:
            checks.append(InputCheck(item, "same", str(by_digest.pop(item.sha256))))
        elif item.path is None:
            checks.append(InputCheck(item, "no path"))
        else:
            recorded = Path(os.path.normpath(engine_dir / item.path))
            if not recorded.is_file():
                checks.append(InputCheck(item, "not found", str(recorded)))
            else:
                same = sha256_file(recorded, disk_cache=False) == item.sha256
                checks.append(InputCheck(item, "same" if same else "changed", str(recorded)))
    problems = [
        f"{check.input.role} {check.file} changed since the build (sha256 no longer {check.input.sha256[:12]}…)"
        for check in checks
        if check.status == "changed"
    ]
    used = {item.sha256 for item in inputs}
    problems += [
        f"{path} is not an input of this engine (sha256 {digest[:12]}…)"
        for digest, path in by_digest.items()
        if digest not in used
    ]
    return checks, problems


def _inputs_of(document: dict[str, Any]) -> tuple[Input, ...]:
    """The inputs a validated statement names. Annotations are free-form for the in-toto models: a
    ``path`` that is not text raises ValueError (a malformed statement), as it names no file."""
    found = []
    for dependency in document["predicate"]["buildDefinition"].get("resolvedDependencies", []):
        annotations = dependency.get("annotations") or {}
        digest = (dependency.get("digest") or {}).get("sha256")
        path = annotations.get("path")
        if path is not None and not isinstance(path, str):
            raise ValueError(f"the path of input {dependency.get('name')!r} is {path!r}, not text")
        if digest:
            found.append(Input(str(annotations.get("role", dependency.get("name", "input"))), digest, path))
    return tuple(found)


def verify_provenance(
    engine_or_manifest: Path, trusted: Sequence[TrustedKey], given: Sequence[Path] = ()
) -> ProvenanceReport:
    """Check an engine's attestation: the signature by a trusted key, the subjects against the
    engine and manifest on disk (hashed now), and the inputs against the files given or at their
    recorded paths. A refusal (exit 5) raises; changed inputs come back as ``problems``."""
    if not trusted:
        raise InvalidInputError(
            "no trusted key: pass --trusted-key FILE (the signer's .pub) or set TRTFORGE_TRUSTED_KEY"
        )
    for given_path in given:
        if not given_path.is_file():
            raise InvalidInputError(f"--input {given_path}: no such file; check the path")
    paths = ArtifactPaths.of(engine_or_manifest).must_exist()
    engine = paths.existing_engine("verify the .engine that sits beside its attestation")
    path = attestation_path(engine)
    wrapped = read_envelope(path)
    if wrapped.payload_type != PAYLOAD_TYPE:
        raise _refuse(path, f"payloadType is {wrapped.payload_type!r}, not {PAYLOAD_TYPE}: not an in-toto attestation")
    signer = _signer_of(wrapped, path, trusted)
    try:
        document = bounded_json(wrapped.payload, MAX_ATTESTATION_BYTES)
        validate_statement(document)
        inputs = _inputs_of(document)
    except ValueError as exc:
        raise _refuse(path, f"malformed statement ({exc}); re-create it with trtforge sign --attest") from exc
    subjects = tuple(
        (str(item.get("name", "")), str(item.get("digest", {}).get("sha256", ""))) for item in document["subject"]
    )
    digests = {digest for _, digest in subjects}
    for what, file in (("engine", engine), ("manifest", paths.manifest)):
        if not file.is_file():
            raise _refuse(file, f"{what} missing; the attestation covers both the engine and its manifest")
        actual = sha256_file(file, disk_cache=False)
        if actual not in digests:
            raise _refuse(
                path,
                f"the attestation is for another {what}: its subjects are {', '.join(name for name, _ in subjects)}, "
                f"and {file.name} (sha256 {actual[:12]}…) is none of them; re-attest with trtforge sign --attest",
            )
    predicate = document["predicate"]
    _refuse_disagreement(path, predicate, read_manifest(paths.manifest), inputs)
    # the recorded paths are relative to the folder the build wrote in (resolved: links followed)
    checks, problems = _check_inputs(inputs, engine.parent.resolve(), given)
    byproducts = predicate["runDetails"].get("byproducts") or []
    return ProvenanceReport(
        engine=engine,
        attestation=path,
        key_id=signer.key_id,
        algorithm=key_type_of(signer.public_key),
        subjects=subjects,
        builder=predicate["runDetails"]["builder"],
        inputs=tuple(checks),
        accuracy=byproducts[0].get("annotations") if byproducts else None,
        problems=tuple(problems),
    )
