"""``oci://HOST[:PORT]/REPO``: one OCI artifact per engine, pushed and pulled with ORAS (``oras``).

An artifact is an OCI image manifest (``artifactType`` = ``application/vnd.trtforge.engine.v1``)
whose config is the empty descriptor and whose layers are the engine
(``application/vnd.trtforge.engine.layer.v1``), the trtforge manifest
(``application/vnd.trtforge.manifest.v1+json``) and, when the gate ran and the manifest describes
it, the accuracy report (``application/vnd.trtforge.accuracy.v1+json``), each titled with its file
name so that a plain ``oras pull`` writes the usual ``{stem}.engine`` / ``{stem}.manifest.json`` /
``{stem}.accuracy.json`` files. The OCI tag is
the stem, ``{name}-{precision}-{tag}``. Manifest annotations (``dev.trtforge.*``) repeat the
compatibility facts for people and registry UIs; ``pull`` always reads the manifest layer itself,
because the rules need all of it and a signature covers exactly those bytes.

Credentials, looked up when the registry first asks for them (a registry that needs none never has
docker's config read): ``TRTFORGE_REGISTRY_USERNAME`` and ``TRTFORGE_REGISTRY_PASSWORD`` when set
(docker's config is then not read), else docker's login as ``docker login`` leaves it, read as
docker reads it and in docker's order (:mod:`trtforge.publish.docker_auth`); a config docker would
refuse, or a credential helper that fails, is exit 2 naming it. They go to the registry only (and
to the token service its own challenge names, as for docker): a request a redirect or an upload
location takes to another server goes without them, and a challenge from there is exit 6.
HTTPS unless ``--insecure`` (plain HTTP, for local registries).

Attestations (``trtforge.provenance``: a DSSE envelope of an in-toto SLSA provenance Statement,
``{stem}.intoto.jsonl`` beside the engine) go up as OCI 1.1 referrers of the engine's image
manifest: an image manifest whose ``subject`` is the engine's manifest, ``artifactType`` =
``application/vnd.dsse.envelope.v1+json`` (the envelope's own media type, which ORAS ``discover``,
cosign and admission controllers list; the in-toto media type describes the payload inside it),
an empty config and one layer, the envelope. A registry with the referrers API says so with the
``OCI-Subject`` header on the manifest PUT; otherwise trtforge keeps the referrers tag schema
(an image index under the tag ``sha256-<hex>`` of the subject digest), as ORAS does; reading, a
404 on ``GET /v2/<name>/referrers/<digest>`` means the tag schema. oras-py sets ``subject`` but
implements neither, hence the hand-written requests. ``org.opencontainers.image.created`` is the
manifest's build time on both manifests, so pushing the same artifact twice gives the same digests.

Nothing a registry answers is trusted: every JSON answer is bounded (size, nesting) and checked
against a schema (``TagList``, ``ImageManifest``, ``OciDescriptor``) before use, tag-list pages are
bounded, and a blob is read no further than its declared size. A misbehaving registry is exit 6,
one line; a blob that is not the engine its manifest pins is exit 5 (the pull's rule 5).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar
from urllib.parse import urljoin, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trtforge.digests import sha256_bytes
from trtforge.errors import IncompatibleEngineError, InvalidInputError, RegistryError, first_line
from trtforge.fsutil import copy_at_most
from trtforge.jsonsafe import bounded_json, canonical_json
from trtforge.manifest import (
    MANIFEST_SUFFIX,
    MAX_MANIFEST_BYTES,
    MAX_REPORT_BYTES,
    REPORT_SUFFIX,
    Manifest,
    attestation_path,
    first_error,
    parse_manifest,
)
from trtforge.publish.base import (
    OCI_TAG,
    Candidate,
    Existing,
    FoundAttestations,
    Listing,
    LocalArtifact,
    OciLocation,
    PublishOutcome,
    decide,
    matches,
    pulled_report,
    written_status,
)
from trtforge.publish.docker_auth import docker_login_for
from trtforge.tags import PRECISIONS, Platform

if TYPE_CHECKING:
    import requests
    from oras.container import Container

ARTIFACT_TYPE = "application/vnd.trtforge.engine.v1"
ENGINE_MEDIA_TYPE = "application/vnd.trtforge.engine.layer.v1"
MANIFEST_MEDIA_TYPE = "application/vnd.trtforge.manifest.v1+json"
REPORT_MEDIA_TYPE = "application/vnd.trtforge.accuracy.v1+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
OCI_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
#: marks the attestation referrers trtforge pushes: other tools' DSSE referrers are not ours to judge
ATTESTATION_ANNOTATION = "dev.trtforge.attestation"
ATTESTATION_KIND = "slsa-provenance-v1"
EMPTY_JSON = b"{}"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
ANNOTATION_PREFIX = "dev.trtforge."
USERNAME_ENV = "TRTFORGE_REGISTRY_USERNAME"
PASSWORD_ENV = "TRTFORGE_REGISTRY_PASSWORD"

#: engines above this size go up in chunks (PATCH), so memory stays flat for multi-GB engines
CHUNKED_ABOVE = 64 * 1024 * 1024
CHUNK_SIZE = 16 * 1024 * 1024
#: any answer read whole (tag list, image manifest, token, error): the distribution spec's 4 MiB manifest limit
MAX_ANSWER_BYTES = 4 * 1024 * 1024
#: tag-list pages followed at most (100 tags a page by default: 100,000 tags)
MAX_TAG_PAGES = 1000
#: what a blob download reads (and writes) at a time
BLOB_CHUNK = 1024 * 1024
#: the distribution spec's digest grammar, ``algorithm:encoded``
DIGEST_PATTERN = r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"
#: (connect, read) seconds: a dead registry must fail a CI job quickly, not hang it
TIMEOUT_S = (10.0, 120.0)
#: the ``/v2/`` ping answers at once on any registry: one that accepts but never answers fails in seconds
PING_TIMEOUT_S = (10.0, 10.0)


def artifact_annotations(manifest: Manifest) -> dict[str, str]:
    """Manifest annotations: the compatibility facts, readable without downloading anything."""
    p = ANNOTATION_PREFIX
    gpu = manifest.gpu
    found = {
        TITLE: manifest.stem,
        CREATED: manifest.build.created_utc,
        f"{p}name": manifest.name,
        f"{p}precision": manifest.precision,
        f"{p}tag": manifest.tag,
        f"{p}flavor": manifest.tensorrt.flavor,
        f"{p}tensorrt.version": manifest.tensorrt.version,
        f"{p}tensorrt.version-compatible": str(manifest.tensorrt.version_compatible).lower(),
        f"{p}gpu.compute-capabilities": ",".join(gpu.compute_capabilities),
        f"{p}gpu.hardware-compatibility": gpu.hardware_compatibility,
        f"{p}platform": Platform(manifest.platform.os, manifest.platform.machine).tag,
        f"{p}sha256": manifest.artifact.sha256,
        f"{p}size": str(manifest.artifact.size),
        f"{p}signed": str(manifest.signature is not None).lower(),
    }
    if gpu.and_later_from:
        found[f"{p}gpu.and-later-from"] = gpu.and_later_from
    return found


def descriptor(media_type: str, sha256: str, size: int, title: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"mediaType": media_type, "digest": f"sha256:{sha256}", "size": size}
    if title:
        found["annotations"] = {TITLE: title}
    return found


def image_manifest(artifact: LocalArtifact) -> dict[str, Any]:
    """The OCI image manifest of one trtforge artifact (pure: the layers are described, not read)."""
    manifest = artifact.manifest
    manifest_bytes = artifact.manifest_bytes
    layers = [
        descriptor(ENGINE_MEDIA_TYPE, manifest.artifact.sha256, manifest.artifact.size, manifest.artifact.file),
        descriptor(
            MANIFEST_MEDIA_TYPE, sha256_bytes(manifest_bytes), len(manifest_bytes), manifest.stem + MANIFEST_SUFFIX
        ),
    ]
    if artifact.report is not None:
        size = len(artifact.report)
        layers.append(descriptor(REPORT_MEDIA_TYPE, sha256_bytes(artifact.report), size, artifact.report_name))
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": descriptor(EMPTY_MEDIA_TYPE, sha256_bytes(EMPTY_JSON), len(EMPTY_JSON)),
        "layers": layers,
        "annotations": artifact_annotations(manifest),
    }


class _Answer(BaseModel):
    """A registry's JSON answer, checked before use: unknown keys are ignored, known keys must
    have their type (strict: ``"size": "12"`` is refused, not coerced)."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True, populate_by_name=True)


class TagList(_Answer):
    """``GET /v2/<name>/tags/list``."""

    tags: list[str] | None = None


class OciDescriptor(_Answer):
    media_type: str = Field(alias="mediaType")
    digest: str = Field(pattern=DIGEST_PATTERN)
    size: int = Field(ge=0)
    annotations: dict[str, str] | None = None

    @property
    def title(self) -> str | None:
        return (self.annotations or {}).get(TITLE)


class ImageManifest(_Answer):
    """``GET /v2/<name>/manifests/<tag>``: the parts trtforge reads of an OCI image manifest."""

    artifact_type: str | None = Field(None, alias="artifactType")
    config: OciDescriptor | None = None
    layers: list[OciDescriptor] = Field(default_factory=list)
    annotations: dict[str, str] | None = None
    subject: OciDescriptor | None = None

    def layer(self, media_type: str) -> OciDescriptor | None:
        return next((layer for layer in self.layers if layer.media_type == media_type), None)

    @property
    def is_trtforge_artifact(self) -> bool:
        """``artifactType`` (OCI 1.1), or the config media type older tools use to carry it."""
        config_type = self.config.media_type if self.config else None
        return ARTIFACT_TYPE in (self.artifact_type, config_type)


class ReferrerIndex(_Answer):
    """``GET /v2/<name>/referrers/<digest>`` or the ``sha256-<hex>`` tag: an image index of referrers.
    Entries stay raw: one malformed entry (another tool's) is skipped, not the whole list."""

    manifests: list[dict[str, Any]] = Field(default_factory=list)


class Referrer(_Answer):
    """One entry of a referrers index, as trtforge reads it."""

    media_type: str = Field(alias="mediaType")
    digest: str = Field(pattern=DIGEST_PATTERN)
    size: int = Field(ge=0, le=MAX_ANSWER_BYTES)
    artifact_type: str | None = Field(None, alias="artifactType")
    annotations: dict[str, str] | None = None


@dataclass(frozen=True)
class Located:
    """Where a candidate's bytes are: its tag, its engine layer, its image manifest (the
    ``subject`` its referrers name) and its accuracy report layer, if it has one."""

    tag: str
    engine: OciDescriptor
    subject: dict[str, Any]
    report: OciDescriptor | None


@dataclass(frozen=True)
class PulledTag:
    """What ``pull_tag`` wrote: the engine (its manifest and report beside it), the digest of the
    image manifest it was read from (what ``ci`` replaces when it proves the entry damaged) and that
    manifest's annotations (read with it: the tag may change before a second read), why a report
    layer was skipped, if one was, and the blobs the registry served damaged (that report's)."""

    engine: Path
    digest: str
    annotations: dict[str, str]
    warnings: tuple[str, ...] = ()
    damaged: frozenset[str] = frozenset()


AnswerT = TypeVar("AnswerT", bound=_Answer)


def fallback_tag(digest: str) -> str:
    """The referrers tag schema: ``sha256:abc…`` -> ``sha256-abc…`` (truncated to the tag grammar's 128)."""
    return digest.replace(":", "-")[:128]


def attestation_manifest(subject: dict[str, Any], envelope: bytes, title: str, created: str) -> dict[str, Any]:
    """The referrer that carries one DSSE envelope (pure)."""
    from trtforge.provenance import ATTESTATION_MEDIA_TYPE

    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "artifactType": ATTESTATION_MEDIA_TYPE,
        "config": descriptor(EMPTY_MEDIA_TYPE, sha256_bytes(EMPTY_JSON), len(EMPTY_JSON)),
        "layers": [descriptor(ATTESTATION_MEDIA_TYPE, sha256_bytes(envelope), len(envelope), title)],
        "subject": subject,
        "annotations": {CREATED: created, ATTESTATION_ANNOTATION: ATTESTATION_KIND},
    }


class UnusableAnswer(Exception):
    """An answer oras would turn into a bare ValueError (an upload refused with 401/403, a 500):
    carried out whole, so ``OciRegistry._check`` reports its status, error code and fix."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class CredentialsElsewhere(Exception):
    """Another server than the registry (where it redirected a request, or put an upload session)
    asked for credentials: the registry's go to the registry only."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"HTTP {response.status_code} from {response.url}")
        self.response = response


def _server(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port (the scheme's default when none is given) of a URL: who receives a request."""
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def _client_class() -> type:
    import logging

    import oras.logger
    import oras.provider

    # oras prints some failures itself ("This endpoint requires a token..."), a second line before
    # trtforge's own; an application that configures logging still gets them
    if not oras.logger.logger.logger.handlers:
        oras.logger.logger.logger.addHandler(logging.NullHandler())

    class Client(oras.provider.Registry):
        """oras's client without its retry loop (that one sleeps 3 + 5 + 11 + 29 + 83 s on a dead
        registry; here urllib3 retries refused connections twice and a CI job fails in seconds), with
        the answers oras cannot use raised as ``UnusableAnswer`` rather than as oras's ValueError, and
        credentials for the registry alone.

        oras attaches its token to every request and answers any 401 with the registry's login, even
        where a redirect or an upload location took the request to another server; as docker and
        containerd do, a request to another server goes without credentials, and a challenge from
        one is refused (``CredentialsElsewhere``). The token service the registry's own challenge
        names is the registry's choice, and gets its login, as for docker."""

        def __init__(self, *args: Any, log_in: Callable[[Any], None], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            authenticate = self.auth.authenticate_request
            asked = False

            def authenticate_or_refuse(
                original: requests.Response, headers: dict[str, str], refresh: bool = False
            ) -> Any:
                """Credentials are looked up (``log_in``) when the registry first asks for them, so
                one that needs none never has docker's config read; oras says only "Cannot respond
                to request for authentication." when authenticating fails."""
                nonlocal asked
                if not self._registry_s(original.url):  # the answer of a server a redirect led to
                    raise CredentialsElsewhere(original)
                if not asked:
                    log_in(self)
                    asked = True
                found, changed = authenticate(original, headers, refresh=refresh)
                if not changed:
                    raise UnusableAnswer(original)
                return found, changed

            self.auth.authenticate_request = authenticate_or_refuse

        def _registry_s(self, url: str) -> bool:
            return _server(url) == _server(f"{self.prefix}://{self.hostname}/")

        def do_request(
            self,
            url: str,
            method: str = "GET",
            data: Any = None,
            headers: dict[str, str] | None = None,
            json: Any = None,
            stream: bool = False,
        ) -> requests.Response:
            if self._registry_s(url):
                response = oras.provider.Registry.do_request.__wrapped__(self, url, method, data, headers, json, stream)
            else:
                kept = {key: value for key, value in (headers or {}).items() if key.lower() != "authorization"}
                response = self.session.request(
                    method, url, data=data, json=json, headers=kept, stream=stream, verify=self._tls_verify
                )
            asks = response.status_code in (401, 403) and response.headers.get("Www-Authenticate")
            if asks and not self._registry_s(response.url):
                raise CredentialsElsewhere(response)
            return response

        def _get_location(self, r: requests.Response, container: Container) -> str:
            """The upload session's URL: an answer without one (refused, failed) is ``UnusableAnswer``."""
            if r.status_code not in (200, 201, 202) or not r.headers.get("location"):
                raise UnusableAnswer(r)
            return str(super()._get_location(r, container))

        def _check_200_response(self, response: requests.Response) -> None:
            if response.status_code not in (200, 201, 202):
                raise UnusableAnswer(response)

    return Client


@functools.cache
def _too_large_error() -> type[Exception]:
    import requests

    class AnswerTooLarge(requests.exceptions.RequestException):
        """The registry sent more bytes than the answer may have (reported as exit 6)."""

    return AnswerTooLarge


class DownloadNotWritten(InvalidInputError):
    """The engine blob could not be written where it was downloaded to (a full or read-only disk):
    this host's problem, not the registry's or what the tag holds."""


class NotFound(RegistryError):
    """HTTP 404; in ``pull_tag``, after the image manifest was read, a blob it lists that the registry lost."""


class DamagedEntry(InvalidInputError):
    """What a tag's image manifest describes, read and refused: a layer the registry lost or
    serves damaged, not a trtforge artifact, layers that are not its manifest's. ``digest`` names
    that image manifest: ``ci`` may replace that one, never an entry it could not read; ``damaged``
    the blobs the registry served damaged."""

    def __init__(self, message: str, digest: str, damaged: frozenset[str]) -> None:
        super().__init__(message)
        self.digest = digest
        self.damaged = damaged


def copy_answer_at_most(response: requests.Response, out: IO[bytes], limit: int, what: str) -> None:
    """Copy the response body into ``out``, refusing (without reading further) past ``limit`` bytes."""
    if not copy_at_most(response.iter_content(BLOB_CHUNK), out, limit):
        response.close()
        raise _too_large_error()(f"{what} is larger than the {limit:,} bytes it may have")


def read_at_most(response: requests.Response, limit: int, what: str) -> bytes:
    buffer = io.BytesIO()
    copy_answer_at_most(response, buffer, limit, what)
    return buffer.getvalue()


def _session_adapter() -> Any:
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    class TimeoutAdapter(HTTPAdapter):
        """Default timeouts (oras sets none), retries for connections that never opened, and a
        bound on every answer read whole.

        oras reads answers whole (``response.json()`` on tokens, errors, uploads) with no way to
        bound them, so the bound sits here, at the HTTP level: a non-streamed answer is read as a
        stream up to MAX_ANSWER_BYTES and stored as the response's content, as requests itself
        does. Streamed answers (blobs) are bounded by their reader (``copy_answer_at_most``).
        """

        def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = TIMEOUT_S
            stream = kwargs.pop("stream", False)
            response = super().send(request, stream=True, **kwargs)
            if not stream:
                response._content = read_at_most(response, MAX_ANSWER_BYTES, "the answer")
            return response

    return TimeoutAdapter(max_retries=Retry(total=2, connect=2, read=0, status=0, other=0, backoff_factor=0.2))


def _reason(exc: BaseException) -> str:
    """The cause a person recognizes, out of urllib3's nested exception text."""
    text = str(exc)
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host not found"),
        ("nodename nor servname", "host not found"),
        ("Temporary failure in name resolution", "host not found"),
        ("timed out", "timed out"),
        ("Connection reset", "connection reset"),
        ("RemoteDisconnected", "connection closed by the registry"),
        ("IncompleteRead", "connection closed before the whole answer came; retry"),
        ("WRONG_VERSION_NUMBER", "the server does not speak TLS"),
        ("CERTIFICATE_VERIFY_FAILED", "certificate not trusted"),
    ):
        if needle in text:
            return reason
    match = re.search(r"\(Caused by \w+\((.*)\)\)", text)
    return (match.group(1) if match else text)[:200]


class OciRegistry:
    def __init__(
        self,
        location: OciLocation,
        *,
        insecure: bool = False,
        chunked_above: int = CHUNKED_ABOVE,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.location = location
        self.uri = location.uri
        self.insecure = insecure
        self.scheme = "http" if insecure else "https"
        self.chunked_above = chunked_above
        self.chunk_size = chunk_size
        self._client: Any = None
        #: what holds only an identity token for this registry (docker's config, a credential helper), once looked up
        self._identity_token_in: str | None = None
        #: docker's config unreadable, or its credential helper failing, where a token service was
        #: asked anonymously: said if it refuses
        self._unread_config: InvalidInputError | None = None
        #: the digests of blobs this registry served with other bytes (damaged in its storage),
        #: which no push replaces (:meth:`store_build`)
        self._served_damaged: set[str] = set()

    # ------------------------------------------------------------ connection

    @contextlib.contextmanager
    def _network(self, action: str) -> Iterator[None]:
        """Every failure of the network or the registry becomes one RegistryError line (exit 6)."""
        import requests

        host = self.location.host
        try:
            yield
        except CredentialsElsewhere as exc:
            elsewhere = urlsplit(exc.response.url).netloc
            raise RegistryError(
                f"registry {host} sent trtforge to {elsewhere} while {action}, and that server asks for "
                f"credentials: refused (the login for {host} goes to {host} only); check the registry's "
                "redirect and upload settings"
            ) from exc
        except UnusableAnswer as exc:
            self._check(exc.response, action)
            raise RegistryError(
                f"registry {host} answered {action} with HTTP {exc.response.status_code} and no upload "
                "location: is it an OCI registry?"
            ) from exc
        except requests.exceptions.SSLError as exc:
            raise RegistryError(
                f"TLS with {host} failed while {action} ({_reason(exc)}): for a plain-HTTP registry "
                "(a local one, say) pass --insecure"
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise RegistryError(
                f"cannot reach registry {host} while {action} ({_reason(exc)}): is it running, and is {self.uri} right?"
            ) from exc
        except requests.exceptions.Timeout as exc:
            raise RegistryError(f"registry {host} did not answer in time while {action}: retry later") from exc
        except requests.exceptions.InvalidHeader as exc:  # its text repeats the header: a token, say
            raise RegistryError(
                f"registry {host} gave trtforge a value for its authentication that HTTP cannot carry back (a "
                f"token or service name with a line break or leading space) while {action}: its token service "
                "is misbehaving"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"registry {host} failed while {action}: {_reason(exc)}") from exc
        except ValueError as exc:  # oras reports refused authentication and bad answers as ValueError
            raise RegistryError(f"registry {host} failed while {action}: {first_line(exc)}") from exc
        except (AttributeError, KeyError, TypeError, RecursionError) as exc:
            # oras reads some answers (the token endpoint's, above all) without checking their shape
            raise RegistryError(
                f"registry {host} sent an answer of the wrong shape while {action} ({type(exc).__name__}): "
                "is it an OCI registry?"
            ) from exc

    def _answer(self, response: requests.Response, model: type[AnswerT], what: str) -> AnswerT:
        """A JSON answer, bounded and checked against its schema: anything else is exit 6."""
        return self._parse(read_at_most(response, MAX_ANSWER_BYTES, what), model, what)

    def _parse(self, data: bytes, model: type[AnswerT], what: str) -> AnswerT:
        host = self.location.host
        try:
            return model.model_validate(bounded_json(data, MAX_ANSWER_BYTES))
        except ValidationError as exc:
            raise RegistryError(
                f"registry {host} sent {what} that is not valid ({first_error(exc)}): is it an OCI registry?"
            ) from exc
        except ValueError as exc:
            raise RegistryError(
                f"registry {host} sent {what} that cannot be read ({exc}): is it an OCI registry?"
            ) from exc

    def _check(self, response: requests.Response, action: str, ok: tuple[int, ...] = (200, 201, 202)) -> None:
        if response.status_code in ok:
            return
        detail = _registry_errors(response)
        host = self.location.host
        login = f"docker login {host}, or set {USERNAME_ENV} and {PASSWORD_ENV}"
        if response.status_code == 401:
            if self._unread_config is not None:
                raise self._unread_config
            if environment_login() is not None:
                why = f"the credentials in {USERNAME_ENV} and {PASSWORD_ENV} were refused; check them"
            elif self._identity_token_in is not None:
                why = self._identity_token_only()
            else:
                why = f"log in with {login}"
            raise RegistryError(f"{host} refused {action} (HTTP 401{detail}): {why}")
        if response.status_code == 403:
            method = response.request.method if response.request is not None else None
            may = "push to" if method in ("POST", "PUT", "PATCH", "DELETE") else "read"
            raise RegistryError(
                f"{host} refused {action} (HTTP 403{detail}): log in with an account that may {may} "
                f"{self.location.repository} ({login})"
            )
        failed = f"{host}: {action} failed with HTTP {response.status_code} {response.reason}{detail}"
        if response.status_code >= 500:
            raise RegistryError(f"{failed}: the registry itself failed; retry later, or see its logs")
        raise (NotFound if response.status_code == 404 else RegistryError)(failed)

    def _connect(self) -> Any:
        """Ping ``/v2/`` (fails fast when the registry is down) and pick the auth scheme it asks for;
        credentials are looked up later, if the registry asks for them (``_log_in``)."""
        if self._client is not None:
            return self._client
        import requests

        host = self.location.host
        with self._network("connecting"):
            with requests.Session() as probe:
                probe.mount("http://", _session_adapter())
                probe.mount("https://", _session_adapter())
                ping = probe.get(f"{self.scheme}://{host}/v2/", timeout=PING_TIMEOUT_S)  # the adapter bounds its body
            if ping.status_code not in (200, 401):
                raise RegistryError(
                    f"{host} does not answer as an OCI registry (GET /v2/ gave HTTP {ping.status_code}); check the host"
                )
            challenge = ping.headers.get("Www-Authenticate", "")
            backend = "basic" if challenge.lower().startswith("basic") else "token"
            log_in = functools.partial(self._log_in, basic=backend == "basic")
            client = _client_class()(hostname=host, insecure=self.insecure, auth_backend=backend, log_in=log_in)
            client.session.mount("http://", _session_adapter())
            client.session.mount("https://", _session_adapter())
        self._client = client
        return client

    def _log_in(self, client: Any, *, basic: bool) -> None:
        """Credentials from the environment (docker's config is then not read: a broken one cannot
        stop a CI job that sets them), else docker's (``docker_login_for``). Called when the registry
        first asks for credentials; ``basic``: it asks for a user name and password, which are then
        required (a token service may grant anonymous access)."""
        host = self.location.host
        found = environment_login()
        if found is not None:
            client.auth.set_basic_auth(*found)
            return
        try:
            login, holder = docker_login_for(host, instead=f"set {USERNAME_ENV} and {PASSWORD_ENV}")
        except InvalidInputError as exc:
            if basic:
                raise
            self._unread_config = exc  # a token service may grant anonymous access (a public image)
            return
        if login.auth:
            client.auth._basic_auth = login.auth
            return
        if login.identity_token:
            self._identity_token_in = holder
        if basic:
            why = (
                self._identity_token_only()
                if login.identity_token
                else f"none is configured: docker login {host}, or set {USERNAME_ENV} and {PASSWORD_ENV}"
            )
            raise RegistryError(f"{host} asks for a user name and password and {why}")

    def _identity_token_only(self) -> str:
        host = self.location.host
        return (
            f"{self._identity_token_in} holds only an identity token for {host}, which trtforge cannot use "
            f"(oras-py does not exchange identity tokens): docker login {host} with a user name and password, "
            f"or set {USERNAME_ENV} and {PASSWORD_ENV}"
        )

    def _container(self, tag: str | None) -> Container:
        """oras's name parser takes a first path component with a "." for a registry host, so the
        parts are set directly from the already-validated location."""
        from oras.container import Container

        container = Container("placeholder", registry=self.location.host)
        namespace, _, repository = self.location.repository.rpartition("/")
        container.namespace = namespace or None
        container.repository = repository
        container.tag = tag or "latest"
        container.digest = None
        return container

    def _url(self, path: str) -> str:
        return f"{self.scheme}://{path}"

    # ------------------------------------------------------------ reading

    def _tags(self) -> list[str]:
        """Every tag, page after page (``Link: <...>; rel="next"``): at most MAX_TAG_PAGES pages, never
        the same page twice, never another host (the client would send it our credentials)."""
        client = self._connect()
        url: str | None = self._url(self._container(None).tags_url())
        seen: set[str] = set()
        tags: list[str] = []
        with self._network("listing tags"):
            while url:
                if url in seen or len(seen) >= MAX_TAG_PAGES:
                    why = "repeats a page" if url in seen else f"goes past {MAX_TAG_PAGES} pages"
                    raise RegistryError(
                        f"registry {self.location.host}: its tag list {why} ({url}): the registry is misbehaving"
                    )
                seen.add(url)
                response = client.do_request(url, "GET", headers={})
                if response.status_code == 404:  # the repository does not exist yet: nothing in it
                    return []
                self._check(response, "listing tags")
                tags.extend(self._answer(response, TagList, "a tag list").tags or [])
                url = self._next_page(response, url)
        return tags

    def _next_page(self, response: requests.Response, url: str) -> str | None:
        link = response.links.get("next", {}).get("url")
        if not link:
            return None
        following = urljoin(url, link)
        parts = urlsplit(following)
        if (parts.scheme, parts.netloc) != (self.scheme, self.location.host):
            raise RegistryError(
                f"registry {self.location.host}: its tag list continues on another server ({following}): refused"
            )
        return following

    def _read_manifest(self, reference: str) -> tuple[ImageManifest, dict[str, Any]] | None:
        """The image manifest under a tag or digest, and its descriptor (what a referrer's
        ``subject`` names: the digest of the very bytes the registry holds)."""
        client = self._connect()
        what = f"an image manifest for {reference}"
        with self._network(f"reading the manifest of {reference}"):
            response = client.do_request(
                self._api(f"manifests/{reference}"), "GET", headers={"Accept": OCI_MANIFEST_MEDIA_TYPE}
            )
            if response.status_code == 404:
                return None
            self._check(response, f"reading the manifest of {reference}")
            data = read_at_most(response, MAX_ANSWER_BYTES, what)
        image = self._parse(data, ImageManifest, what)
        media_type = response.headers.get("Content-Type", OCI_MANIFEST_MEDIA_TYPE).split(";")[0].strip()
        return image, {"mediaType": media_type, "digest": f"sha256:{sha256_bytes(data)}", "size": len(data)}

    def _api(self, path: str) -> str:
        return self._url(f"{self.location.host}/v2/{self.location.repository}/{path}")

    def _small_blob(
        self, tag: str, layer: OciDescriptor, what: str = "manifest", limit: int = MAX_MANIFEST_BYTES
    ) -> bytes:
        """A layer read whole (the manifest, the accuracy report): no further than its declared
        size, which ``limit`` bounds, and checked against its digest."""
        if layer.size > limit:
            raise InvalidInputError(f"{tag}: its {what} layer is {layer.size:,} bytes, not a trtforge {what}")
        client = self._connect()
        with (
            self._network(f"reading the {what} layer of {tag}"),
            client.get_blob(self._container(tag), layer.digest, stream=True) as response,
        ):
            self._check(response, f"reading the {what} layer of {tag}")
            data = read_at_most(response, layer.size, f"the {what} layer of {tag}")
        if f"sha256:{sha256_bytes(data)}" != layer.digest:
            self._served_damaged.add(layer.digest)
            raise InvalidInputError(f"{tag}: its {what} layer does not match its digest (damaged in the registry)")
        return data

    @staticmethod
    def _existing(image: ImageManifest | None) -> Existing | None:
        """What the image manifest a tag holds (None: the tag holds none) says of its artifact."""
        if image is None:
            return None
        engine, manifest = image.layer(ENGINE_MEDIA_TYPE), image.layer(MANIFEST_MEDIA_TYPE)
        if not image.is_trtforge_artifact or engine is None or manifest is None:
            return Existing(None, None)
        report = image.layer(REPORT_MEDIA_TYPE)
        return Existing(
            engine.digest.removeprefix("sha256:"),
            manifest.digest.removeprefix("sha256:"),
            report.digest.removeprefix("sha256:") if report else None,
        )

    def candidates(self, name: str, precision: str | None) -> Listing:
        prefix = f"{name}-{precision}-" if precision else f"{name}-"
        found: list[Candidate] = []
        others: list[str] = []
        skipped: list[str] = []
        for tag in sorted(self._tags()):
            if not OCI_TAG.match(tag):  # a registry's junk: never requested, never echoed whole
                skipped.append(f"tag {tag[:64]!r}{'…' if len(tag) > 64 else ''} is not an OCI tag: skipped")
                continue
            head = tag[len(prefix) :].split("-", 1)[0] if tag.startswith(prefix) else None
            if head is None or (precision is None and head not in PRECISIONS):
                others.append(tag)
                continue
            try:
                candidate = self._candidate(tag)
            except InvalidInputError as exc:
                skipped.append(str(exc))
                continue
            if matches(candidate.manifest, name, precision):
                found.append(candidate)
            else:
                others.append(tag)
        return Listing(tuple(found), tuple(others), tuple(skipped))

    def _candidate(self, tag: str, found: tuple[ImageManifest, dict[str, Any]] | None = None) -> Candidate:
        found = found or self._read_manifest(tag)
        if found is None:
            raise InvalidInputError(f"{tag}: listed but gone (deleted meanwhile)")
        image, subject = found
        engine, manifest_layer = image.layer(ENGINE_MEDIA_TYPE), image.layer(MANIFEST_MEDIA_TYPE)
        if not image.is_trtforge_artifact or engine is None or manifest_layer is None:
            raise InvalidInputError(f"{tag}: not a trtforge engine artifact (artifactType {image.artifact_type})")
        data = self._small_blob(tag, manifest_layer)
        reference = f"{self.location.host}/{self.location.repository}:{tag}"
        manifest = parse_manifest(data, reference)
        report = image.layer(REPORT_MEDIA_TYPE)
        _check_layers(reference, manifest, engine, manifest_layer, report)
        return Candidate(
            reference=reference, manifest=manifest, manifest_bytes=data, locator=Located(tag, engine, subject, report)
        )

    def report(self, candidate: Candidate) -> bytes | None:
        """The accuracy report layer, bounded and checked against its digest; None without one."""
        located: Located = candidate.locator
        if located.report is None:
            return None
        return self._small_blob(located.tag, located.report, "accuracy report", MAX_REPORT_BYTES)

    def fetch(self, candidate: Candidate, into: Path) -> None:
        """Stream the engine blob into ``into``, stopping at the size its descriptor declares (the
        caller checks the sha256): a registry cannot make trtforge write more than that."""
        tag, layer = candidate.locator.tag, candidate.locator.engine
        client = self._connect()
        with (
            self._network(f"downloading {tag}"),
            client.get_blob(self._container(tag), layer.digest, stream=True) as response,
        ):
            self._check(response, f"downloading {tag}")
            try:
                with open(into, "wb") as out:
                    copy_answer_at_most(response, out, layer.size, f"the engine blob of {tag}")
            except OSError as exc:
                import requests

                if isinstance(exc, requests.exceptions.RequestException):
                    raise
                raise DownloadNotWritten(
                    f"cannot write {into}: {exc.strerror}; pass --out with a writable folder"
                ) from exc

    # ------------------------------------------------------------ writing

    def publish(self, artifact: LocalArtifact, *, force: bool = False) -> PublishOutcome:
        """Push the artifact, then its attestation (when one sits beside the engine) as a referrer."""
        from trtforge.provenance import attestation_bytes, stale_attestation

        tag = artifact.manifest.stem
        outcome = self.push(artifact, tag, force=force)
        envelope = attestation_bytes(artifact.engine)
        if envelope is None:
            return outcome
        stale = stale_attestation(artifact.engine, artifact.manifest_bytes)
        if stale is not None:
            warning = (
                f"{stale.name} does not cover this manifest (signed again since?): attestation not pushed; "
                "re-create it with trtforge sign ENGINE --attest"
            )
            return dataclasses.replace(outcome, warnings=(*outcome.warnings, warning))
        found = self._read_manifest(tag)
        if found is None:
            raise RegistryError(f"{outcome.reference}: pushed, then gone before its attestation could refer to it")
        image, subject = found
        title = attestation_path(artifact.engine).name
        held = image.layer(MANIFEST_MEDIA_TYPE)
        if held is None or held.digest != f"sha256:{sha256_bytes(artifact.manifest_bytes)}":
            warning = (
                f"{outcome.reference} keeps another manifest for this engine, which {title} does not cover: "
                "attestation not pushed; pass --force to replace the manifest"
            )
            return dataclasses.replace(outcome, warnings=(*outcome.warnings, warning))
        attached = self.attach(subject, envelope, title, artifact.manifest.build.created_utc)
        how = "referrers API" if attached["referrers"] == "api" else f"referrers tag {fallback_tag(subject['digest'])}"
        verb = "already attached" if attached["status"] == "unchanged" else "attached"
        note = f"attestation {title} {verb} as referrer {attached['digest'][:19]}… ({how})"
        return dataclasses.replace(
            outcome, extra={**outcome.extra, "attestation": attached}, notes=(*outcome.notes, note)
        )

    def attach(self, subject: dict[str, Any], envelope: bytes, title: str, created: str) -> dict[str, str]:
        """Push ``envelope`` as a referrer of ``subject``: the referrers API when the registry
        answers the PUT with ``OCI-Subject``, else the referrers tag schema. The same envelope
        again is a no-op (same bytes, same digest)."""
        document = attestation_manifest(subject, envelope, title, created)
        body = canonical_json(document)
        digest = f"sha256:{sha256_bytes(body)}"
        listed, mode = self._referrers(subject["digest"])
        if any(entry.get("digest") == digest for entry in listed):
            return {"digest": digest, "referrers": mode, "status": "unchanged"}
        client = self._connect()
        container = self._container(None)
        with tempfile.TemporaryDirectory(prefix="trtforge-push-") as scratch:
            for name, data, layer in (
                ("config.json", EMPTY_JSON, document["config"]),
                (title, envelope, document["layers"][0]),
            ):
                path = Path(scratch) / name
                path.write_bytes(data)
                with self._network(f"uploading {name}"):
                    self._check(client.upload_blob(str(path), container, layer), f"uploading {name}")
        response = self._put(digest, body, OCI_MANIFEST_MEDIA_TYPE, "pushing the attestation")
        if response.headers.get("OCI-Subject") == subject["digest"]:
            return {"digest": digest, "referrers": "api", "status": "published"}
        entry = {
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "digest": digest,
            "size": len(body),
            "artifactType": document["artifactType"],
            "annotations": document["annotations"],
        }
        self._add_to_referrers_tag(subject["digest"], listed, entry)
        return {"digest": digest, "referrers": "tag-schema", "status": "published"}

    def _put(self, reference: str, body: bytes, media_type: str, action: str) -> requests.Response:
        client = self._connect()
        with self._network(action):
            response = client.do_request(
                self._api(f"manifests/{reference}"), "PUT", headers={"Content-Type": media_type}, data=body
            )
            self._check(response, action)
        return response

    def _referrers(self, subject_digest: str) -> tuple[list[dict[str, Any]], str]:
        """The referrers of a manifest, and how they were found: ``api`` (OCI 1.1 referrers API)
        or ``tag-schema`` (a 404 on the API: the ``sha256-<hex>`` tag's image index, if any)."""
        client = self._connect()
        index = {"Accept": OCI_INDEX_MEDIA_TYPE}
        with self._network("listing referrers"):
            response = client.do_request(self._api(f"referrers/{subject_digest}"), "GET", headers=index)
            mode = "api"
            if response.status_code == 404:
                mode = "tag-schema"
                response = client.do_request(
                    self._api(f"manifests/{fallback_tag(subject_digest)}"), "GET", headers=index
                )
                if response.status_code == 404:
                    return [], mode
            self._check(response, "listing referrers")
            data = read_at_most(response, MAX_ANSWER_BYTES, "a referrers list")
        return list(self._parse(data, ReferrerIndex, "a referrers list").manifests), mode

    def _add_to_referrers_tag(self, subject_digest: str, listed: list[dict[str, Any]], entry: dict[str, Any]) -> None:
        """Add one descriptor to the subject's referrers tag (created when missing), after the
        ``listed`` ones ``attach`` read; entries of other tools stay as they are."""
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX_MEDIA_TYPE, "manifests": [*listed, entry]}
        self._put(
            fallback_tag(subject_digest), canonical_json(index), OCI_INDEX_MEDIA_TYPE, "tagging the referrers index"
        )

    def attestations(self, candidate: Candidate) -> FoundAttestations:
        """The DSSE envelopes that claim to be the candidate's trtforge attestation (verification is
        the caller's); other referrers are skipped with a note. An envelope whose manifest or blob
        is not what its descriptors say is exit 5: it claims to be ours and is not."""
        from trtforge.provenance import ATTESTATION_MEDIA_TYPE

        located: Located = candidate.locator
        listed, mode = self._referrers(located.subject["digest"])
        envelopes: list[tuple[str, bytes]] = []
        notes: list[str] = []
        for raw in listed:
            try:
                entry = Referrer.model_validate(raw)
            except ValidationError as exc:
                notes.append(f"{candidate.reference}: skipped a malformed referrer ({first_error(exc)})")
                continue
            # an index entry without artifactType (a client older than OCI 1.1 rewrote the index: skopeo's
            # ``copy --all`` keeps its annotations and drops the field) is judged by its manifest's
            untyped = entry.artifact_type is None
            annotated = (entry.annotations or {}).get(ATTESTATION_ANNOTATION) == ATTESTATION_KIND
            claims = annotated and (entry.artifact_type == ATTESTATION_MEDIA_TYPE or untyped)
            where = f"{candidate.reference}: referrer {entry.digest[:19]}…"
            envelope = self._envelope(entry, located, where, untyped) if claims else None
            if envelope is None:
                kind = entry.artifact_type or entry.media_type
                notes.append(
                    f"{candidate.reference}: skipped referrer {entry.digest[:19]}… ({kind}): not a trtforge attestation"
                )
                continue
            envelopes.append((where, envelope))
        if not listed:
            notes.append(
                f"{candidate.reference}: no referrers ({'referrers API' if mode == 'api' else 'referrers tag schema'})"
            )
        return FoundAttestations(tuple(envelopes), tuple(notes))

    def _envelope(self, entry: Referrer, located: Located, where: str, untyped: bool = False) -> bytes | None:
        """The envelope a referrer carries: its manifest refers to this candidate, its one layer is
        a bounded DSSE envelope whose bytes match their digest. ``untyped``: the index entry has no
        artifactType, and the manifest's says whether it is an attestation at all (None: it is not)."""
        from trtforge.provenance import ATTESTATION_MEDIA_TYPE, MAX_ATTESTATION_BYTES

        limit = MAX_ATTESTATION_BYTES
        found = self._read_manifest(entry.digest)
        if found is None or found[1]["digest"] != entry.digest:
            raise IncompatibleEngineError(
                f"{where}: its manifest is missing or not the bytes its digest names: refused"
            )
        image, _ = found
        if untyped and image.artifact_type != ATTESTATION_MEDIA_TYPE:
            return None
        layer = image.layer(ATTESTATION_MEDIA_TYPE)
        if image.subject is None or image.subject.digest != located.subject["digest"]:
            raise IncompatibleEngineError(f"{where}: its subject is not {located.tag}'s manifest: refused")
        if layer is None or layer.size > limit:
            raise IncompatibleEngineError(f"{where}: no DSSE envelope layer of at most {limit:,} bytes: refused")
        client = self._connect()
        with (
            self._network(f"downloading the attestation of {located.tag}"),
            client.get_blob(self._container(located.tag), layer.digest, stream=True) as response,
        ):
            self._check(response, f"downloading the attestation of {located.tag}")
            data = read_at_most(response, layer.size, f"the attestation of {located.tag}")
        if f"sha256:{sha256_bytes(data)}" != layer.digest:
            raise IncompatibleEngineError(
                f"{where}: the envelope does not match its digest (damaged in the registry): refused"
            )
        return data

    def push(self, artifact: LocalArtifact, tag: str, *, force: bool = False) -> PublishOutcome:
        """Push under ``tag``, the artifact's stem: the same engine again is a no-op, another one
        needs ``force`` (:func:`decide`)."""
        reference = f"{self.location.host}/{self.location.repository}:{tag}"
        warnings = (artifact.report_warning,) if artifact.report_warning else ()
        found = self._read_manifest(tag)
        action, detail = decide(self._existing(found[0] if found else None), artifact, force, reference)
        if action == "unchanged" and found is not None:  # the digest to pin, as a push reports it
            return PublishOutcome(
                "unchanged", reference, detail, warnings, extra={"digest": found[1]["digest"], "oci_tag": tag}
            )
        image = image_manifest(artifact)
        self._upload_layers(artifact, image, tag)
        digest = self._put_image(image, tag)
        return PublishOutcome(
            written_status(action), reference, detail, warnings, extra={"digest": digest, "oci_tag": tag}
        )

    def store_build(
        self,
        artifact: LocalArtifact,
        tag: str,
        annotations: dict[str, str],
        *,
        replacing: str | None = None,
        damaged: frozenset[str] = frozenset(),
    ) -> PublishOutcome:
        """``ci``'s push of a build under its key's tag, ``annotations`` (its key) recorded: a tag
        that holds nothing is created, one that holds the image manifest ``replacing`` (its digest:
        the entry ``ci`` read there and proved damaged) is replaced, and anything else there is
        kept: another runner's entry, or one that could not be read, is never replaced. The tag is
        looked at before the upload and again just before the image manifest goes up (after its
        blobs: a registry refuses a manifest whose blobs it lacks), so runners racing on one tag
        each leave a whole entry. A build sharing a blob the registry served damaged (``damaged``)
        is RegistryError: a registry keeps a blob it holds by its digest, so the push would not
        repair it."""
        reference = f"{self.location.host}/{self.location.repository}:{tag}"
        warnings = (artifact.report_warning,) if artifact.report_warning else ()
        image = image_manifest(artifact)
        image["annotations"].update(annotations)
        kept = next((layer["digest"] for layer in image["layers"] if layer["digest"] in damaged), None)
        if kept is not None:
            raise RegistryError(
                f"{reference}: the registry serves blob {kept[:19]}… damaged, and a push cannot replace it (a registry "
                "keeps a blob by its digest): remove that blob from the registry's storage, and the next run "
                "uploads it again"
            )
        held = self.manifest_digest(tag)
        if held is None or held == replacing:
            self._upload_layers(artifact, image, tag)
            held = self.manifest_digest(tag)
        if held is not None and held != replacing:
            detail = f"{reference} holds an entry this run did not prove damaged (another runner's, say): kept"
            return PublishOutcome("unchanged", reference, detail, warnings, extra={"digest": held, "oci_tag": tag})
        digest = self._put_image(image, tag)
        status = written_status("new" if held is None else "replace")
        return PublishOutcome(status, reference, "", warnings, extra={"digest": digest, "oci_tag": tag})

    def _upload_layers(self, artifact: LocalArtifact, image: dict[str, Any], tag: str) -> None:
        """Every blob ``image`` lists (the engine, the manifest, the report, the empty config)
        that the registry does not hold yet."""
        client = self._connect()
        container = self._container(tag)
        engine_layer, *small_layers = image["layers"]
        with tempfile.TemporaryDirectory(prefix="trtforge-push-") as scratch:
            config_file = Path(scratch) / "config.json"
            config_file.write_bytes(EMPTY_JSON)
            uploads = [(artifact.engine, engine_layer)]
            # exactly the bytes the descriptors hash: the manifest, and the report when it goes up
            contents = [artifact.manifest_bytes] + ([artifact.report] if artifact.report is not None else [])
            for layer, data in zip(small_layers, contents, strict=True):
                copy = Path(scratch) / layer["annotations"][TITLE]
                copy.write_bytes(data)
                uploads.append((copy, layer))
            uploads.append((config_file, image["config"]))
            for path, layer in uploads:
                chunked = layer["size"] > self.chunked_above
                with self._network(f"uploading {path.name}"):
                    response = client.upload_blob(
                        str(path), container, layer, do_chunked=chunked, chunk_size=self.chunk_size
                    )
                    self._check(response, f"uploading {path.name}")

    def _put_image(self, image: dict[str, Any], tag: str) -> str:
        """Put ``image`` under ``tag``; its digest, as the registry says it."""
        with self._network(f"tagging {tag}"):
            response = self._connect().upload_manifest(image, self._container(tag))
            self._check(response, f"tagging {tag}")
        return str(response.headers.get("Docker-Content-Digest", ""))

    def manifest_digest(self, tag: str) -> str | None:
        """The digest of the image manifest under ``tag`` (of the bytes the registry holds); None when there is none."""
        found = self._read_manifest(tag)
        return found[1]["digest"] if found else None

    def pull_tag(self, tag: str, into: Path) -> PulledTag | None:
        """Download the artifact tagged ``tag`` into the folder ``into`` (engine, manifest and the
        report its manifest describes, under their own names); None when the tag does not exist. An
        image manifest read there whose content trtforge refuses (not a trtforge artifact, a layer
        titled as a path, an engine its manifest does not pin, a layer the registry serves damaged
        or lost: HTTP 404) is DamagedEntry, and a failing or misbehaving registry RegistryError
        (``ci`` warns with either and builds locally, and replaces only the former); a report layer
        that is not the manifest's is skipped with a warning. The caller verifies the engine."""
        found = self._read_manifest(tag)
        if found is None:
            return None
        digest = found[1]["digest"]
        try:
            candidate = self._candidate(tag, found)
            engine = into / candidate.manifest.artifact.file
            self.fetch(candidate, engine)
            (into / (candidate.manifest.stem + MANIFEST_SUFFIX)).write_bytes(candidate.manifest_bytes)
            report, warning = pulled_report(self, candidate)
        except DownloadNotWritten:
            raise  # this host's disk
        except (InvalidInputError, NotFound) as exc:  # what the image manifest lists: refused, or lost
            if exc is self._unread_config:  # a blob refused to this client, not what the tag holds
                raise
            raise DamagedEntry(str(exc), digest, frozenset(self._served_damaged)) from exc
        if report is not None:
            (into / (candidate.manifest.stem + REPORT_SUFFIX)).write_bytes(report)
        annotations = dict(found[0].annotations or {})
        return PulledTag(engine, digest, annotations, (warning,) if warning else (), frozenset(self._served_damaged))


def environment_login() -> tuple[str, str] | None:
    """``TRTFORGE_REGISTRY_USERNAME`` and ``TRTFORGE_REGISTRY_PASSWORD``, when set; one without the
    other is a usage error."""
    username, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
    if bool(username) != bool(password):
        raise InvalidInputError(f"set both {USERNAME_ENV} and {PASSWORD_ENV}, or neither")
    return (username, password) if username and password else None


def _check_layers(
    reference: str,
    manifest: Manifest,
    engine: OciDescriptor,
    manifest_layer: OciDescriptor,
    report: OciDescriptor | None,
) -> None:
    """The layers must be the files the manifest names and pins: titles (what a plain ``oras pull``
    writes, so never a path) equal to its file names, the engine descriptor equal to its sha256 and size."""
    expected = [(engine, manifest.artifact.file), (manifest_layer, manifest.stem + MANIFEST_SUFFIX)]
    if report is not None:
        expected.append((report, manifest.stem + REPORT_SUFFIX))
    for layer, name in expected:
        if layer.title is not None and layer.title != name:
            raise InvalidInputError(
                f"{reference}: a layer is titled {layer.title!r}, not {name!r} as its manifest says: refused "
                "(a title names a file and may not be a path); re-publish it with trtforge publish"
            )
    if engine.digest != f"sha256:{manifest.artifact.sha256}" or engine.size != manifest.artifact.size:
        raise InvalidInputError(
            f"{reference}: its engine layer ({engine.digest[:19]}…, {engine.size:,} bytes) is not the engine its "
            "manifest pins: refused; re-publish it with trtforge publish"
        )


def _registry_errors(response: requests.Response) -> str:
    """The distribution API's ``{"errors": [{"code", "message"}]}``, as ``: CODE message`` (bounded, best effort)."""
    import requests

    try:
        document = bounded_json(read_at_most(response, 64 * 1024, "an error"), 64 * 1024)
    except (ValueError, requests.exceptions.RequestException):
        return ""
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = [f"{e.get('code', '')} {e.get('message', '')}".strip()[:200] for e in errors[:3] if isinstance(e, dict)]
    return f": {'; '.join(parts)}" if parts else ""
