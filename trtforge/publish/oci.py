"""``oci://HOST[:PORT]/REPO``: one OCI artifact per engine, pushed and pulled with ORAS (``oras``).

An artifact is an OCI image manifest (``artifactType`` = ``application/vnd.trtforge.engine.v1``)
whose config is the empty descriptor and whose two layers are the engine
(``application/vnd.trtforge.engine.layer.v1``) and the trtforge manifest
(``application/vnd.trtforge.manifest.v1+json``), each titled with its file name so that a plain
``oras pull`` writes the usual ``{stem}.engine`` / ``{stem}.manifest.json`` pair. The OCI tag is
the stem, ``{name}-{precision}-{tag}``. Manifest annotations (``dev.trtforge.*``) repeat the
compatibility facts for people and registry UIs; ``pull`` always reads the manifest layer itself,
because the rules need all of it and a signature covers exactly those bytes.

Credentials: ``~/.docker/config.json`` (or ``$DOCKER_CONFIG/config.json``), with its credential
helpers, as ``docker login`` leaves them; ``TRTFORGE_REGISTRY_USERNAME`` and
``TRTFORGE_REGISTRY_PASSWORD`` override it. HTTPS unless ``--insecure`` (plain HTTP, for local
registries).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.errors import InvalidInputError, RegistryError
from trtforge.fsutil import sha256_bytes
from trtforge.manifest import MANIFEST_SUFFIX, Manifest, parse_manifest
from trtforge.publish.base import (
    PRECISIONS,
    Candidate,
    Existing,
    Listing,
    LocalArtifact,
    OciLocation,
    PublishOutcome,
    check_artifact_file_name,
    decide,
    matches,
    written_status,
)
from trtforge.tags import Platform

if TYPE_CHECKING:
    import requests
    from oras.container import Container

ARTIFACT_TYPE = "application/vnd.trtforge.engine.v1"
ENGINE_MEDIA_TYPE = "application/vnd.trtforge.engine.layer.v1"
MANIFEST_MEDIA_TYPE = "application/vnd.trtforge.manifest.v1+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
OCI_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
EMPTY_JSON = b"{}"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
ANNOTATION_PREFIX = "dev.trtforge."
USERNAME_ENV = "TRTFORGE_REGISTRY_USERNAME"
PASSWORD_ENV = "TRTFORGE_REGISTRY_PASSWORD"

#: engines above this size go up in chunks (PATCH), so memory stays flat for multi-GB engines
CHUNKED_ABOVE = 64 * 1024 * 1024
CHUNK_SIZE = 16 * 1024 * 1024
#: a trtforge manifest is a few KB; refuse to read a "manifest" blob larger than this
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: (connect, read) seconds: a dead registry must fail a CI job quickly, not hang it
TIMEOUT_S = (10.0, 120.0)


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
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": descriptor(EMPTY_MEDIA_TYPE, sha256_bytes(EMPTY_JSON), len(EMPTY_JSON)),
        "layers": [
            descriptor(ENGINE_MEDIA_TYPE, manifest.artifact.sha256, manifest.artifact.size, manifest.artifact.file),
            descriptor(
                MANIFEST_MEDIA_TYPE, sha256_bytes(manifest_bytes), len(manifest_bytes), manifest.stem + MANIFEST_SUFFIX
            ),
        ],
        "annotations": artifact_annotations(manifest),
    }


def layer_of(image: dict[str, Any], media_type: str) -> dict[str, Any] | None:
    return next((layer for layer in image.get("layers") or [] if layer.get("mediaType") == media_type), None)


def is_trtforge_artifact(image: dict[str, Any]) -> bool:
    """``artifactType`` (OCI 1.1), or the config media type older tools use to carry it."""
    config_type = (image.get("config") or {}).get("mediaType")
    return ARTIFACT_TYPE in (image.get("artifactType"), config_type)


def _client_class() -> type:
    import oras.provider

    class Client(oras.provider.Registry):
        """oras's client without its retry loop: that one sleeps 3 + 5 + 11 + 29 + 83 s on a dead
        registry; here urllib3 retries refused connections twice and a CI job fails in seconds."""

        def do_request(self, *args: Any, **kwargs: Any) -> requests.Response:
            return oras.provider.Registry.do_request.__wrapped__(self, *args, **kwargs)

    return Client


def _session_adapter() -> Any:
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    class TimeoutAdapter(HTTPAdapter):
        """Default timeouts (oras sets none) and retries for connections that never opened."""

        def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = TIMEOUT_S
            return super().send(request, **kwargs)

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

    # ------------------------------------------------------------ connection

    @contextlib.contextmanager
    def _network(self, action: str) -> Iterator[None]:
        """Every failure of the network or the registry becomes one RegistryError line (exit 6)."""
        import requests

        host = self.location.host
        try:
            yield
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
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"registry {host} failed while {action}: {_reason(exc)}") from exc
        except ValueError as exc:  # oras reports refused authentication and bad answers as ValueError
            raise RegistryError(f"registry {host} failed while {action}: {exc}") from exc

    def _check(self, response: requests.Response, action: str, ok: tuple[int, ...] = (200, 201, 202)) -> None:
        if response.status_code in ok:
            return
        detail = _registry_errors(response)
        host = self.location.host
        if response.status_code in (401, 403):
            raise RegistryError(
                f"{host} refused {action} (HTTP {response.status_code}{detail}): log in with docker login {host}, "
                f"or set {USERNAME_ENV} and {PASSWORD_ENV}"
            )
        raise RegistryError(f"{host}: {action} failed with HTTP {response.status_code} {response.reason}{detail}")

    def _connect(self) -> Any:
        """Ping ``/v2/`` (fails fast when the registry is down), pick the auth scheme it asks for, load credentials."""
        if self._client is not None:
            return self._client
        import requests

        host = self.location.host
        with self._network("connecting"):
            with requests.Session() as probe:
                probe.mount("http://", _session_adapter())
                probe.mount("https://", _session_adapter())
                ping = probe.get(f"{self.scheme}://{host}/v2/")
            if ping.status_code not in (200, 401):
                raise RegistryError(
                    f"{host} does not answer as an OCI registry (GET /v2/ gave HTTP {ping.status_code}); check the host"
                )
            challenge = ping.headers.get("Www-Authenticate", "")
            backend = "basic" if challenge.lower().startswith("basic") else "token"
            client = _client_class()(hostname=host, insecure=self.insecure, auth_backend=backend)
            client.session.mount("http://", _session_adapter())
            client.session.mount("https://", _session_adapter())
            docker_config = os.environ.get("DOCKER_CONFIG")
            configs = [str(Path(docker_config) / "config.json")] if docker_config else None
            if configs and not Path(configs[0]).is_file():
                configs = None
            client.auth.load_configs(self._container(None), configs)
            username, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
            if bool(username) != bool(password):
                raise InvalidInputError(f"set both {USERNAME_ENV} and {PASSWORD_ENV}, or neither")
            if username and password:
                client.auth.set_basic_auth(username, password)
            if backend == "basic" and not getattr(client.auth, "_basic_auth", None):
                raise RegistryError(
                    f"{host} asks for a user name and password and none is configured: docker login {host}, "
                    f"or set {USERNAME_ENV} and {PASSWORD_ENV}"
                )
        self._client = client
        return client

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
        client = self._connect()
        url: str | None = self._url(self._container(None).tags_url())
        tags: list[str] = []
        with self._network("listing tags"):
            while url:
                response = client.do_request(url, "GET", headers={})
                if response.status_code == 404:  # the repository does not exist yet: nothing in it
                    return []
                self._check(response, "listing tags")
                tags.extend(response.json().get("tags") or [])
                link = response.links.get("next", {}).get("url")
                url = f"{self.scheme}://{self.location.host}{link}" if link and link.startswith("/") else link
        return tags

    def _image_manifest(self, tag: str) -> dict[str, Any] | None:
        client = self._connect()
        url = self._url(self._container(tag).manifest_url())
        with self._network(f"reading the manifest of {tag}"):
            response = client.do_request(url, "GET", headers={"Accept": OCI_MANIFEST_MEDIA_TYPE})
            if response.status_code == 404:
                return None
            self._check(response, f"reading the manifest of {tag}")
            return response.json()

    def _small_blob(self, tag: str, layer: dict[str, Any]) -> bytes:
        if int(layer.get("size", 0)) > MAX_MANIFEST_BYTES:
            raise InvalidInputError(f"{tag}: its manifest layer is {layer.get('size')} bytes, not a trtforge manifest")
        client = self._connect()
        with self._network(f"reading the manifest layer of {tag}"):
            response = client.get_blob(self._container(tag), layer["digest"])
            self._check(response, f"reading the manifest layer of {tag}")
            data = response.content
        if f"sha256:{sha256_bytes(data)}" != layer["digest"]:
            raise InvalidInputError(f"{tag}: its manifest layer does not match its digest (damaged in the registry)")
        return data

    def _existing(self, tag: str) -> Existing | None:
        image = self._image_manifest(tag)
        if image is None:
            return None
        engine, manifest = layer_of(image, ENGINE_MEDIA_TYPE), layer_of(image, MANIFEST_MEDIA_TYPE)
        if not is_trtforge_artifact(image) or engine is None or manifest is None:
            return Existing(None, None)
        return Existing(engine["digest"].removeprefix("sha256:"), manifest["digest"].removeprefix("sha256:"))

    def candidates(self, name: str, precision: str | None) -> Listing:
        prefix = f"{name}-{precision}-" if precision else f"{name}-"
        found: list[Candidate] = []
        others: list[str] = []
        skipped: list[str] = []
        for tag in sorted(self._tags()):
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

    def _candidate(self, tag: str) -> Candidate:
        image = self._image_manifest(tag)
        if image is None:
            raise InvalidInputError(f"{tag}: listed but gone (deleted meanwhile)")
        engine, manifest_layer = layer_of(image, ENGINE_MEDIA_TYPE), layer_of(image, MANIFEST_MEDIA_TYPE)
        if not is_trtforge_artifact(image) or engine is None or manifest_layer is None:
            raise InvalidInputError(f"{tag}: not a trtforge engine artifact (artifactType {image.get('artifactType')})")
        data = self._small_blob(tag, manifest_layer)
        reference = f"{self.location.host}/{self.location.repository}:{tag}"
        manifest = parse_manifest(data.decode("utf-8", errors="replace"), reference)
        check_artifact_file_name(manifest, reference)
        return Candidate(reference=reference, manifest=manifest, manifest_bytes=data, locator=(tag, engine["digest"]))

    def fetch(self, candidate: Candidate, into: Path) -> None:
        tag, digest = candidate.locator
        client = self._connect()
        with self._network(f"downloading {tag}"):
            try:
                client.download_blob(self._container(tag), digest, str(into))
            except OSError as exc:
                import requests

                if isinstance(exc, requests.exceptions.RequestException):
                    raise
                raise InvalidInputError(
                    f"cannot write {into}: {exc.strerror}; pass --out with a writable folder"
                ) from exc

    # ------------------------------------------------------------ writing

    def publish(self, artifact: LocalArtifact, *, force: bool = False) -> PublishOutcome:
        return self.push(artifact, artifact.manifest.stem, force=force)

    def push(self, artifact: LocalArtifact, tag: str, *, force: bool = False) -> PublishOutcome:
        """Push under ``tag``: the artifact's stem when publishing, a build-cache key for ``ci``."""
        reference = f"{self.location.host}/{self.location.repository}:{tag}"
        action, detail = decide(self._existing(tag), artifact, force, reference)
        if action == "unchanged":
            return PublishOutcome("unchanged", reference, detail)
        client = self._connect()
        container = self._container(tag)
        image = image_manifest(artifact)
        engine_layer, manifest_layer = image["layers"]
        with tempfile.TemporaryDirectory(prefix="trtforge-push-") as scratch:
            config_file = Path(scratch) / "config.json"
            config_file.write_bytes(EMPTY_JSON)
            manifest_copy = Path(scratch) / manifest_layer["annotations"][TITLE]
            manifest_copy.write_bytes(artifact.manifest_bytes)  # exactly the bytes the descriptor hashes
            uploads = ((artifact.engine, engine_layer), (manifest_copy, manifest_layer), (config_file, image["config"]))
            for path, layer in uploads:
                chunked = layer["size"] > self.chunked_above
                with self._network(f"uploading {path.name}"):
                    response = client.upload_blob(
                        str(path), container, layer, do_chunked=chunked, chunk_size=self.chunk_size
                    )
                    self._check(response, f"uploading {path.name}")
        with self._network(f"tagging {tag}"):
            response = client.upload_manifest(image, container)
            self._check(response, f"tagging {tag}")
        digest = response.headers.get("Docker-Content-Digest", "")
        status = written_status(action)
        return PublishOutcome(status, reference, detail, extra={"digest": digest, "oci_tag": tag})

    def pull_tag(self, tag: str, into: Path) -> Path | None:
        """Download the artifact tagged ``tag`` into the folder ``into`` (engine and manifest under
        their own names); None when the tag does not exist. The caller verifies the engine."""
        try:
            candidate = self._candidate(tag)
        except InvalidInputError:
            return None
        engine = into / candidate.manifest.artifact.file
        self.fetch(candidate, engine)
        (into / (candidate.manifest.stem + MANIFEST_SUFFIX)).write_bytes(candidate.manifest_bytes)
        return engine


def _registry_errors(response: requests.Response) -> str:
    """The distribution API's ``{"errors": [{"code", "message"}]}``, as ``: CODE message``."""
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        return ""
    parts = [f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors if isinstance(e, dict)]
    return f": {'; '.join(parts)}" if parts else ""
