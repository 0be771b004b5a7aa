"""What every registry shares: locations, the registry interface, artifacts and outcomes.

The three registries (``oci://``, ``dir://``, ``triton://``) differ only in how they store bytes;
selection and verification live once in :mod:`trtforge.publish.pulling`, so a pull from any of
them obeys the same rules as the runtime loader.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from trtforge.errors import IncompatibleEngineError, InvalidInputError, RegistryError, did_you_mean
from trtforge.jsonsafe import bounded_json
from trtforge.manifest import (
    MAX_REPORT_BYTES,
    REPORT_SHA256,
    REPORT_SUFFIX,
    ArtifactPaths,
    Manifest,
    first_error,
    read_manifest_with_bytes,
    report_path,
)
from trtforge.tags import NAME_RULE, valid_name

if TYPE_CHECKING:
    from trtforge.compat import Problem

SCHEMES = ("oci", "dir", "triton")
URI_HELP = "use oci://HOST[:PORT]/REPO, dir://PATH or triton://PATH"

#: a URI's userinfo: up to the last "@" that a "/" follows, the host's (a password may hold "/" or
#: "@"); an "@" with no "/" after it is a tag or digest on the repository (``repo@latest``,
#: ``repo@sha256:…``), refused as such, unless no "/" comes before it either: then it ends the
#: userinfo of a URI with no path (``oci://user:password@host``, which once printed the password)
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(?:.*@(?=[^@]*/)|[^/]*@)", re.DOTALL)
#: what ``urlsplit`` deletes from a URI without a word (WHATWG's rule): ``oci://ho\tst/repo`` was
#: taken as ``oci://host/repo``
_DELETED_BY_URLSPLIT = re.compile(r"[\t\r\n]")

# The distribution spec's tag grammar, and its repository name grammar (components separated by "/").
OCI_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_OCI_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
#: ``HOST/REPO`` at most: the limit the spec's implementers note names, which docker, containerd and
#: skopeo (containers/image) enforce on a reference's name; the distribution registry refuses a
#: repository over 255 characters with HTTP 500. A longer one was pushed (or failed "retry later")
#: where those clients could never pull it.
MAX_OCI_NAME = 255


class TagConflictError(RegistryError):
    """A different engine already sits under the tag: refused unless ``--force`` (exit 6, like HTTP 409)."""


class NoCompatibleArtifactError(IncompatibleEngineError):
    """Nothing in the registry fits the target (``environment`` describes it); ``rejections`` says
    why each candidate was refused."""

    def __init__(
        self,
        message: str,
        environment: str,
        rejections: tuple[tuple[str, tuple[Problem, ...]], ...] = (),
        available: tuple[str, ...] = (),
    ) -> None:
        self.environment = environment
        self.rejections = rejections
        self.available = available
        super().__init__(message, reasons=[f"{ref}: {p.message}" for ref, found in rejections for p in found])


# ---------------------------------------------------------------- locations


@dataclass(frozen=True)
class OciLocation:
    host: str
    repository: str

    @property
    def uri(self) -> str:
        return f"oci://{self.host}/{self.repository}"


@dataclass(frozen=True)
class DirLocation:
    path: Path

    @property
    def uri(self) -> str:
        return f"dir://{self.path}"


@dataclass(frozen=True)
class TritonLocation:
    path: Path

    @property
    def uri(self) -> str:
        return f"triton://{self.path}"


Location = OciLocation | DirLocation | TritonLocation


def redacted(text: str) -> str:
    """``text`` with a URI's userinfo (``user:password@``) as ``***@``: a refused URI is repeated in
    the error line and the --json document, which CI logs keep. Folder paths (``dir://``,
    ``triton://``) are kept as they are: an "@" in a path is no password."""
    if text.startswith(("dir://", "triton://")):
        return text
    return _USERINFO.sub(r"\1***@", text)


def parse_location(text: str) -> Location:
    """``oci://HOST[:PORT]/REPO``, ``dir://PATH`` or ``triton://PATH`` (relative paths from the cwd)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise InvalidInputError(f"'{text}' is not a registry URI: {URI_HELP}")
    if scheme not in SCHEMES:
        hint = did_you_mean(scheme, SCHEMES)
        raise InvalidInputError(f"'{redacted(text)}': unknown registry scheme '{scheme}://'{hint}; {URI_HELP}")
    if scheme in ("dir", "triton"):
        if not rest:
            raise InvalidInputError(f"'{text}': no path; write {scheme}:///absolute/path or {scheme}://relative/path")
        try:
            path = Path(rest).expanduser().absolute()
        except RuntimeError:  # "~user" of no such user: pathlib cannot tell its home
            raise InvalidInputError(
                f"'{text}': '{rest.split('/')[0]}' names no user's home folder here; write the path in full"
            ) from None
        return DirLocation(path) if scheme == "dir" else TritonLocation(path)
    return _parse_oci(text)


def _parse_oci(text: str) -> OciLocation:
    shown = redacted(text)  # every message repeats the URI: never its password
    if shown != text:
        raise InvalidInputError(
            f"'{shown}': credentials do not belong in the URI (they end up in logs); use docker login "
            "or TRTFORGE_REGISTRY_USERNAME / TRTFORGE_REGISTRY_PASSWORD"
        )
    if _DELETED_BY_URLSPLIT.search(text):
        raise InvalidInputError(f"'{text}': a tab or line break is no part of an OCI URI; {URI_HELP}")
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # an unclosed "[" of an IPv6 address
        raise InvalidInputError(f"'{text}': {exc}; {URI_HELP}") from exc
    if parts.query or parts.fragment:
        raise InvalidInputError(f"'{text}': no query or fragment allowed in an OCI URI; {URI_HELP}")
    host = parts.netloc
    repository = parts.path.strip("/")
    if not host or not repository:
        raise InvalidInputError(
            f"'{text}': an OCI URI needs a host and a repository, e.g. oci://localhost:5000/team/models"
        )
    try:
        port = parts.port  # urlsplit checks it: a number from 0 to 65535, or none
    except ValueError:
        port = -1
    # urlsplit takes ":5000" (no host) and "host:" (an empty port, which means port 80) as well
    if port == -1 or not parts.hostname or host.endswith(":") or any(char.isspace() for char in host):
        raise InvalidInputError(
            f"'{text}': '{host}' is not a host[:port] (a host name or address; after a ':', a port is a number "
            "up to 65535); e.g. oci://localhost:5000/team/models"
        )
    if ":" in repository or "@" in repository:
        raise InvalidInputError(
            f"'{text}': give the repository only; trtforge names the tag ({{name}}-{{precision}}-{{tag}}) "
            "and pull picks it by compatibility"
        )
    if not _OCI_REPOSITORY.match(repository):
        raise InvalidInputError(
            f"'{text}': '{repository}' is not a valid OCI repository name (lowercase letters, digits, "
            "'.', '_', '-' and '/' between components)"
        )
    if len(f"{host}/{repository}") > MAX_OCI_NAME:
        raise InvalidInputError(
            f"'{text}': HOST/REPO is {len(host) + 1 + len(repository)} characters, over the {MAX_OCI_NAME} that "
            "docker, containerd and skopeo take; use a shorter repository name"
        )
    return OciLocation(host, repository)


# ---------------------------------------------------------------- artifacts


@dataclass(frozen=True)
class LocalArtifact:
    """An engine and its manifest on disk, proven to match before anything is published, and the
    accuracy report beside them when it is the one the manifest describes (``report_warning``
    says why one there is not: registries that keep reports warn with it)."""

    engine: Path
    manifest_path: Path
    manifest: Manifest
    #: the bytes ``manifest`` was parsed from, read once: every step publishes and hashes these
    manifest_bytes: bytes = field(repr=False)
    report: bytes | None = field(default=None, repr=False)
    report_warning: str | None = None

    @property
    def report_name(self) -> str:
        return self.manifest.stem + REPORT_SUFFIX

    @property
    def report_sha256(self) -> str | None:
        from trtforge.digests import sha256_bytes

        return sha256_bytes(self.report) if self.report is not None else None

    def without_report(self) -> LocalArtifact:
        """The artifact as a registry that keeps no report (``triton://``) publishes it."""
        return dataclasses.replace(self, report=None, report_warning=None)


def load_local_artifact(path: Path) -> LocalArtifact:
    """Read ``path`` (the .engine or its .manifest.json) and refuse an engine that is not the one
    described; the report beside it comes along only if the manifest describes it (``report_problem``)."""
    from trtforge.environment import file_problem

    paths = ArtifactPaths.of(path)
    engine = paths.existing_engine("copy or download the .engine together with its .manifest.json")
    manifest_path = paths.manifest
    manifest, manifest_bytes = read_manifest_with_bytes(manifest_path)
    problem = file_problem(manifest, engine)
    if problem:
        raise IncompatibleEngineError(f"{engine}: refusing to publish: {problem}", reasons=[problem])
    report_file = report_path(engine.parent, manifest.stem)
    if not report_file.is_file():
        return LocalArtifact(engine, manifest_path, manifest, manifest_bytes)
    try:
        with open(report_file, "rb") as handle:
            report = handle.read(MAX_REPORT_BYTES + 1)
    except OSError as exc:
        problem = f"it cannot be read ({exc.strerror})"
    else:
        problem = report_problem(manifest, report)
    if problem is None:
        return LocalArtifact(engine, manifest_path, manifest, manifest_bytes, report)
    warning = f"{report_file.name} is not published: {problem}; the engine and manifest are published without it"
    return LocalArtifact(engine, manifest_path, manifest, manifest_bytes, report_warning=warning)


def report_problem(manifest: Manifest, data: bytes) -> str | None:
    """Why ``data`` is not the accuracy report ``manifest`` describes; None when it is.

    The one rule for publish and pull: ``data`` must be the very bytes whose sha256 the manifest's
    ``accuracy`` summary pins, and that summary the very one ``summary`` gives for them, so a
    report that is stale (checked again since, the manifest signed and left as it was) or edited
    anywhere never travels as the engine's. A manifest written before the summary pinned the
    report's bytes (no ``report_sha256``) pins what its summary carries (verdict, metrics, data,
    task accuracy) only.
    """
    from pydantic import ValidationError

    from trtforge.accuracy.report import AccuracyReport, summary
    from trtforge.digests import sha256_bytes

    try:
        report = AccuracyReport.model_validate(bounded_json(data, MAX_REPORT_BYTES))
    except ValueError as exc:  # pydantic's ValidationError is one
        reason = first_error(exc) if isinstance(exc, ValidationError) else str(exc)
        return f"it is not an accuracy report ({reason})"
    if report.stem != manifest.stem:
        return f"it is the report of {report.stem!r}"
    described = dict(manifest.accuracy or {})
    pinned = described.pop(REPORT_SHA256, None)
    expected = summary(report, manifest.stem + REPORT_SUFFIX)
    del expected[REPORT_SHA256]
    if described != expected:
        return (
            "the manifest's accuracy summary does not describe it (edited, checked again since, "
            "or written by a trtforge whose summary had another form?)"
        )
    if pinned is not None and pinned != sha256_bytes(data):
        return f"its sha256 is not the one the manifest's accuracy summary pins ({REPORT_SHA256}): edited since"
    return None


def check_name(name: str, what: str) -> None:
    """The spec's name rule, for every name that will become part of a path (exit 2)."""
    if not valid_name(name):
        raise InvalidInputError(f"{what} '{name}' is not a valid artifact name: use {NAME_RULE}")


@dataclass(frozen=True)
class Candidate:
    """One artifact a registry holds, described by its manifest; ``locator`` says where its engine is."""

    reference: str
    manifest: Manifest
    manifest_bytes: bytes
    locator: Any = field(compare=False)


@dataclass(frozen=True)
class Listing:
    """What a registry holds for a name: the candidates, and every other artifact (for "what exists")."""

    candidates: tuple[Candidate, ...]
    others: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # unreadable entries, with the reason


PublishStatus = Literal["published", "unchanged", "replaced"]


def written_status(action: str) -> PublishStatus:
    """What a write did: a new tag, or a replaced one (``--force``)."""
    return "published" if action == "new" else "replaced"


@dataclass(frozen=True)
class PublishOutcome:
    status: PublishStatus
    reference: str
    detail: str = ""
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # info lines, e.g. stale temporaries of dead runs removed


class Registry(Protocol):
    """Where engines are published and pulled from."""

    uri: str

    def publish(self, artifact: LocalArtifact, *, force: bool = False) -> PublishOutcome:
        """Store the artifact under its stem; same engine sha256 again is a no-op, another engine needs force."""
        ...

    def candidates(self, name: str, precision: str | None) -> Listing:
        """The artifacts named ``name`` (of ``precision`` when given), manifests read, engines not."""
        ...

    def fetch(self, candidate: Candidate, into: Path) -> None:
        """Write the candidate's engine bytes to ``into`` (a staged file: verification is the caller's)."""
        ...


@dataclass(frozen=True)
class FoundAttestations:
    """The attestations a registry holds for one artifact: ``envelopes`` are (where, DSSE envelope
    bytes) of those that claim to be trtforge's, not yet verified; ``notes`` say what was skipped."""

    envelopes: tuple[tuple[str, bytes], ...]
    notes: tuple[str, ...] = ()


@runtime_checkable
class AttestationSource(Protocol):
    """A registry that keeps attestations next to artifacts (OCI referrers), for ``pull --require-signature``."""

    def attestations(self, candidate: Candidate) -> FoundAttestations:
        """The attestations that refer to the candidate; a registry failure is RegistryError (exit 6)."""
        ...


@runtime_checkable
class ReportSource(Protocol):
    """A registry that keeps the accuracy report with the engine (``oci://``, ``dir://``)."""

    def report(self, candidate: Candidate) -> bytes | None:
        """The candidate's report as stored, not yet judged (None: it has none); one too large or
        not the bytes its digest names is InvalidInputError, a registry failure RegistryError."""
        ...


def pulled_report(source: ReportSource, candidate: Candidate) -> tuple[bytes | None, str | None]:
    """The candidate's accuracy report when it is the one its manifest describes (``report_problem``),
    else None and a warning saying why it is skipped: the engine and manifest are pulled without it."""
    try:
        data = source.report(candidate)
    except InvalidInputError as exc:
        return None, f"{exc}: accuracy report skipped"
    problem = report_problem(candidate.manifest, data) if data is not None else None
    if problem is None:
        return data, None
    return None, f"{candidate.reference}: its accuracy report is skipped: {problem}"


def matches(manifest: Manifest, name: str, precision: str | None) -> bool:
    return manifest.name == name and (precision is None or manifest.precision == precision)


@dataclass(frozen=True)
class Existing:
    """What already sits under a tag; ``engine_sha256`` None means "something, but not a readable artifact"."""

    engine_sha256: str | None
    manifest_sha256: str | None
    #: its accuracy report (None: none, or a registry that keeps none)
    report_sha256: str | None = None


Action = Literal["new", "unchanged", "replace"]


def decide(existing: Existing | None, artifact: LocalArtifact, force: bool, reference: str) -> tuple[Action, str]:
    """Same engine sha256 again is a no-op; a different engine under the tag needs --force.

    A changed manifest or accuracy report around the same engine (signed or verified since, for
    instance) is kept unless --force, because "same content" means the same engine.
    """
    from trtforge.digests import sha256_bytes

    sha = artifact.manifest.artifact.sha256
    if existing is None:
        return "new", ""
    if existing.engine_sha256 == sha:
        if existing.manifest_sha256 != sha256_bytes(artifact.manifest_bytes):
            changed, why = "manifest", "with another manifest (signed or re-stamped since?)"
        elif existing.report_sha256 != artifact.report_sha256:
            changed = "accuracy report"
            if existing.report_sha256 is None:
                why = "and manifest without its accuracy report"
            elif artifact.report is None:
                why = "and manifest with an accuracy report (none goes up from here)"
            else:
                why = "and manifest with another accuracy report (verified since?)"
        else:
            return "unchanged", f"{reference} already holds this engine (sha256 {sha[:12]}…): nothing to do"
        if force:
            return "replace", f"same engine, {changed} replaced (--force) under {reference}"
        return "unchanged", (
            f"{reference} already holds this engine (sha256 {sha[:12]}…) {why}: kept; "
            f"pass --force to replace the {changed}"
        )
    if not force:
        held = f"sha256 {existing.engine_sha256[:12]}…" if existing.engine_sha256 else "not a trtforge artifact"
        raise TagConflictError(
            f"{reference} already holds a different engine ({held}, yours is {sha[:12]}…): refused; "
            "pass --force to replace it, or rebuild so the new engine gets its own tag"
        )
    return "replace", f"replaced the engine under {reference} (--force)"
