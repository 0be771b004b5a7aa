"""Attestations as OCI referrers, against the real registry on 127.0.0.1 (Debian's docker-registry,
distribution 2.8: no referrers API, so the referrers tag schema is the path most tests exercise; the
test ``test_this_registry_has_no_referrers_api`` pins that fact so a newer registry is noticed). The
referrers API path runs against the same registry behind a small proxy that adds the API as an OCI
1.1 registry has it (``referrers_api``, at the end)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from clitools import cli
from models import need_rtx
from registry import RunningRegistry, answer_with, build_engine, faulty_proxy, forward, put_manifest, start_registry

from trtforge.errors import RegistryError
from trtforge.manifest import attestation_path, manifest_path_for, read_manifest
from trtforge.provenance import ATTESTATION_MEDIA_TYPE
from trtforge.publish import open_registry, parse_location
from trtforge.publish.oci import (
    ATTESTATION_ANNOTATION,
    CREATED,
    OCI_INDEX_MEDIA_TYPE,
    OCI_MANIFEST_MEDIA_TYPE,
    OciRegistry,
    fallback_tag,
)

need_rtx()

INDEX = {"Accept": OCI_INDEX_MEDIA_TYPE}
MANIFEST = {"Accept": OCI_MANIFEST_MEDIA_TYPE}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("referrer-engines")
    assert cli("keygen", root / "key")[0] == 0
    assert cli("keygen", root / "other")[0] == 0
    return {
        "a": build_engine(root / "a", targets=["8.6"]),
        "b": build_engine(root / "b", targets=["8.9"]),
        "key": root / "key",
        "other": root / "other",
    }


def attested(engine: Path, folder: Path, key: Path) -> Path:
    """A signed copy of ``engine`` with its attestation beside it (``trtforge sign --attest``)."""
    folder.mkdir(parents=True)
    copy = folder / engine.name
    shutil.copy2(engine, copy)
    shutil.copy2(manifest_path_for(engine), manifest_path_for(copy))
    code, _, err = cli("sign", copy, "--key", key, "--attest")
    assert code == 0, err
    assert attestation_path(copy).is_file()
    return copy


@pytest.fixture
def repository(oci_registry: RunningRegistry, request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return oci_registry.uri(f"referrers/{name[:80]}")


def api(uri: str, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> requests.Response:
    location = parse_location(uri)
    return requests.request(
        method, f"http://{location.host}/v2/{location.repository}/{path}", headers=headers or {}, timeout=10
    )


def publish(engine: Path, uri: str) -> dict:
    code, stdout, err = cli("publish", engine, "--to", uri, "--insecure", "--json")
    assert code == 0, err
    return json.loads(stdout)


def pull(uri: str, out: Path, key: Path, *extra: object) -> tuple[int, str, str]:
    return cli(
        "pull", uri, "--name", "digits-cnn", "--cc", "8.6", "--insecure", "--out", out,
        "--require-signature", "--trusted-key", f"{key}.pub", *extra,
    )  # fmt: skip


def subject_digest(uri: str, tag: str) -> str:
    response = api(uri, f"manifests/{tag}", MANIFEST)
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"]


def test_this_registry_has_no_referrers_api(oci_registry: RunningRegistry) -> None:
    response = requests.get(f"http://{oci_registry.host}/v2/x/referrers/sha256:{'0' * 64}", timeout=10)
    assert response.status_code == 404  # OCI 1.0 registry: the tag schema is the path


def test_publish_pushes_the_attestation_as_a_referrer(built: dict[str, Path], repository: str, tmp_path: Path) -> None:
    engine = attested(built["a"], tmp_path / "a", built["key"])
    document = publish(engine, repository)
    stem = read_manifest(engine).stem
    subject = subject_digest(repository, stem)
    attached = document["attestation"]
    assert attached["referrers"] == "tag-schema" and attached["status"] == "published"

    index = api(repository, f"manifests/{fallback_tag(subject)}", INDEX).json()
    assert index["mediaType"] == OCI_INDEX_MEDIA_TYPE
    [entry] = index["manifests"]
    assert entry["digest"] == attached["digest"] and entry["artifactType"] == ATTESTATION_MEDIA_TYPE
    assert entry["annotations"][ATTESTATION_ANNOTATION] == "slsa-provenance-v1"

    referrer = api(repository, f"manifests/{attached['digest']}", MANIFEST).json()
    assert referrer["subject"]["digest"] == subject and referrer["artifactType"] == ATTESTATION_MEDIA_TYPE
    assert referrer["annotations"][CREATED] == read_manifest(engine).build.created_utc
    [layer] = referrer["layers"]
    assert layer["mediaType"] == ATTESTATION_MEDIA_TYPE
    blob = api(repository, f"blobs/{layer['digest']}").content
    assert blob == attestation_path(engine).read_bytes()
    statement = json.loads(base64.b64decode(json.loads(blob)["payload"]))
    assert read_manifest(engine).artifact.sha256 in {s["digest"]["sha256"] for s in statement["subject"]}

    again = publish(engine, repository)
    assert again["status"] == "unchanged" and again["attestation"]["status"] == "unchanged"
    assert len(api(repository, f"manifests/{fallback_tag(subject)}", INDEX).json()["manifests"]) == 1


def test_signing_again_without_attest_says_the_attestation_is_stale_and_publish_keeps_it_back(
    built: dict[str, Path], repository: str, tmp_path: Path
) -> None:
    """The attestation covers the manifest's bytes: a new signature changes them. Pushed anyway, the
    good artifact could not be pulled with --require-signature ("attestation is for another manifest")."""
    engine = attested(built["a"], tmp_path / "a", built["key"])
    code, _, err = cli("sign", engine, "--key", built["other"])
    assert code == 0 and "covers the manifest as it was before this signature" in err
    document = publish(engine, repository)
    assert "attestation" not in document
    assert any("does not cover this manifest" in warning for warning in document["warnings"])
    code, _, err = pull(repository, tmp_path / "pulled", built["other"])
    assert code == 0, err  # the signed manifest alone, as published
    assert cli("sign", engine, "--key", built["other"], "--attest")[0] == 0  # re-attested: not stale, no warning


def test_identical_pushes_give_identical_digests(
    built: dict[str, Path], oci_registry: RunningRegistry, tmp_path: Path
) -> None:
    engine = attested(built["a"], tmp_path / "a", built["key"])
    first, second = oci_registry.uri("referrers/same-one"), oci_registry.uri("referrers/same-two")
    one, two = publish(engine, first), publish(engine, second)
    stem = read_manifest(engine).stem
    assert one["digest"] == two["digest"] == subject_digest(first, stem) == subject_digest(second, stem)
    assert one["attestation"]["digest"] == two["attestation"]["digest"]
    image = api(first, f"manifests/{stem}", MANIFEST).json()
    assert image["annotations"][CREATED] == read_manifest(engine).build.created_utc


def test_pull_require_signature_finds_and_verifies_the_attestation(
    built: dict[str, Path], repository: str, tmp_path: Path
) -> None:
    engine = attested(built["a"], tmp_path / "a", built["key"])
    publish(engine, repository)
    out = tmp_path / "pulled"
    code, stdout, err = pull(repository, out, built["key"], "--json")
    assert code == 0, err
    pulled = out / engine.name
    assert json.loads(stdout)["attestation"] == str(attestation_path(pulled))
    assert attestation_path(pulled).read_bytes() == attestation_path(engine).read_bytes()
    assert "attestation verified (signed by trusted key" in err
    code, _, err = pull(repository, out, built["key"])  # again: the referrers are checked again
    assert code == 0 and "attestation verified" in err, err
    code, stdout, err = cli("verify-provenance", pulled, "--trusted-key", f"{built['key']}.pub", "--json")
    assert code == 0, err
    assert json.loads(stdout)["verified"] is True


def test_a_pull_without_an_attestation_says_so(built: dict[str, Path], repository: str, tmp_path: Path) -> None:
    signed = tmp_path / "s" / built["a"].name
    signed.parent.mkdir()
    shutil.copy2(built["a"], signed)
    shutil.copy2(manifest_path_for(built["a"]), manifest_path_for(signed))
    assert cli("sign", signed, "--key", built["key"])[0] == 0
    publish(signed, repository)
    code, _, err = pull(repository, tmp_path / "pulled", built["key"])
    assert code == 0, err
    assert "no trtforge attestation among its referrers; its manifest's embedded signature was verified" in err
    assert not attestation_path(tmp_path / "pulled" / signed.name).exists()


def _add_to_index(uri: str, subject: str, entries: list[dict]) -> None:
    tag = fallback_tag(subject)
    index = api(uri, f"manifests/{tag}", INDEX).json()
    index["manifests"].extend(entries)
    put_manifest(uri, tag, index, OCI_INDEX_MEDIA_TYPE)


def test_referrers_that_are_not_ours_are_skipped_with_a_note(
    built: dict[str, Path], repository: str, tmp_path: Path
) -> None:
    engine = attested(built["a"], tmp_path / "a", built["key"])
    publish(engine, repository)
    stem = read_manifest(engine).stem
    subject = subject_digest(repository, stem)
    # any manifest the registry holds will do: distribution 2.8 checks that an index names existing ones
    named = {
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "digest": subject,
        "size": len(api(repository, f"manifests/{stem}").content),
    }
    sbom = {**named, "artifactType": "application/spdx+json"}
    malformed = {**named, "artifactType": 7}  # the registry ignores the field; trtforge reads it as a string
    # another tool's DSSE envelope: our artifact type, without our annotation
    envelope = {**named, "artifactType": ATTESTATION_MEDIA_TYPE}
    _add_to_index(repository, subject, [sbom, malformed, envelope])
    code, _, err = pull(repository, tmp_path / "pulled", built["key"])
    assert code == 0, err
    assert f"skipped referrer {subject[:19]}… (application/spdx+json): not a trtforge attestation" in err
    assert f"skipped referrer {subject[:19]}… ({ATTESTATION_MEDIA_TYPE}): not a trtforge attestation" in err
    assert "skipped a malformed referrer" in err
    assert "attestation verified" in err


def test_an_index_entry_without_artifact_type_is_judged_by_its_manifest(
    built: dict[str, Path], repository: str, tmp_path: Path
) -> None:
    """``skopeo copy --all`` (containers/image, older than OCI 1.1) rewrites the referrers index and
    drops each entry's artifactType, keeping its annotations: the attestation was skipped as "not a
    trtforge attestation" and never verified. Such an entry is judged by its manifest's artifactType;
    one whose manifest is no attestation (here: the engine's own) is still skipped with a note."""
    engine = attested(built["a"], tmp_path / "a", built["key"])
    publish(engine, repository)
    subject = subject_digest(repository, read_manifest(engine).stem)
    tag = fallback_tag(subject)
    index = api(repository, f"manifests/{tag}", INDEX).json()
    [entry] = index["manifests"]
    del entry["artifactType"]
    not_one = {
        **entry,
        "digest": subject,
        "size": len(api(repository, f"manifests/{read_manifest(engine).stem}").content),
    }
    index["manifests"].append(not_one)
    put_manifest(repository, tag, index, OCI_INDEX_MEDIA_TYPE)
    out = tmp_path / "pulled"
    code, _, err = pull(repository, out, built["key"])
    assert code == 0, err
    assert "attestation verified (signed by trusted key" in err, err
    assert attestation_path(out / engine.name).read_bytes() == attestation_path(engine).read_bytes()
    assert f"skipped referrer {subject[:19]}… ({OCI_MANIFEST_MEDIA_TYPE}): not a trtforge attestation" in err


@pytest.mark.parametrize("damage", ["tampered", "other-engine", "unknown-key"])
def test_an_attestation_that_does_not_verify_is_exit_5(
    built: dict[str, Path], repository: str, tmp_path: Path, damage: str
) -> None:
    engine = attested(built["a"], tmp_path / "a", built["key"])
    envelope_file = attestation_path(engine)
    if damage == "tampered":
        envelope = json.loads(envelope_file.read_bytes())
        statement = json.loads(base64.b64decode(envelope["payload"]))
        statement["predicate"]["buildDefinition"]["externalParameters"]["precision"] = "int8"
        envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
        envelope_file.write_text(json.dumps(envelope) + "\n")
        needle = "does not verify"
    elif damage == "other-engine":
        other = attested(built["b"], tmp_path / "b", built["key"])
        shutil.copyfile(attestation_path(other), envelope_file)
        needle = "the attestation is for another engine"
    else:
        other = attested(built["a"], tmp_path / "o", built["other"])
        shutil.copyfile(attestation_path(other), envelope_file)
        needle = "which is not a trusted key"
    if "attestation" not in publish(engine, repository):
        # publish keeps back an attestation that does not cover the manifest; a registry may hold one anyway
        registry = open_registry(parse_location(repository), insecure=True)
        found = registry._read_manifest(read_manifest(engine).stem)
        assert found is not None
        created = read_manifest(engine).build.created_utc
        registry.attach(found[1], envelope_file.read_bytes(), envelope_file.name, created)
    out = tmp_path / "pulled"
    code, stdout, err = pull(repository, out, built["key"])
    assert code == 5, err
    assert "attestation refused, nothing written" in err and needle in err
    assert len(err.strip().splitlines()) == 1 and not stdout
    assert not out.exists()


def test_a_referrer_of_another_subject_is_refused(built: dict[str, Path], repository: str, tmp_path: Path) -> None:
    """The ``sha256-<hex>`` tag is an index any writer may push: an attestation listed there whose
    own ``subject`` is another artifact's manifest is refused as not this artifact's, not verified."""
    engine = attested(built["a"], tmp_path / "a", built["key"])
    other = attested(built["b"], tmp_path / "b", built["key"])
    publish(engine, repository)
    publish(other, repository)
    subject = subject_digest(repository, read_manifest(engine).stem)
    others = api(repository, f"manifests/{fallback_tag(subject_digest(repository, read_manifest(other).stem))}", INDEX)
    _add_to_index(repository, subject, others.json()["manifests"])
    out = tmp_path / "pulled"
    code, stdout, err = pull(repository, out, built["key"])
    assert code == 5 and len(err.strip().splitlines()) == 1 and not stdout, err
    assert f"its subject is not {read_manifest(engine).stem}'s manifest: refused" in err
    assert not out.exists()


def pulled_through_a_fault(
    built: dict[str, Path], repository: str, tmp_path: Path, fault: Callable[[Path, dict[str, Any]], tuple[str, bytes]]
) -> tuple[int, str, str, Path]:
    """Publish an attested engine, then pull it through a proxy that answers one GET of the
    registry API (``fault(engine, referrer index entry)`` gives its path after the repository and
    the bytes served) with other bytes: the pull's exit code, stdout, stderr and --out folder."""
    engine = attested(built["a"], tmp_path / "a", built["key"])
    publish(engine, repository)
    subject = subject_digest(repository, read_manifest(engine).stem)
    (entry,) = api(repository, f"manifests/{fallback_tag(subject)}", INDEX).json()["manifests"]
    path, served = fault(engine, entry)
    location = parse_location(repository)
    with faulty_proxy(location.host, {f"GET /v2/{location.repository}/{path}": (200, served)}) as proxy:
        out = tmp_path / "pulled"
        code, stdout, err = pull(f"oci://{proxy}/{location.repository}", out, built["key"])
    return code, stdout, err, out


def test_a_referrer_manifest_that_is_not_the_bytes_of_its_digest_is_refused(
    built: dict[str, Path], repository: str, tmp_path: Path
) -> None:
    """A registry answering a referrer's digest with other bytes (here the same content written
    again, so every field still fits): refused, as the blob of a digest must be those bytes."""

    def rewritten(engine: Path, entry: dict[str, Any]) -> tuple[str, bytes]:
        manifest = api(repository, f"manifests/{entry['digest']}", MANIFEST).json()
        return f"manifests/{entry['digest']}", json.dumps(manifest, indent=1).encode()

    code, stdout, err, out = pulled_through_a_fault(built, repository, tmp_path, rewritten)
    assert code == 5 and len(err.strip().splitlines()) == 1 and not stdout, err
    assert "its manifest is missing or not the bytes its digest names: refused" in err
    assert not out.exists()


def test_an_attestation_layer_declared_over_the_bound_is_refused_unread(
    built: dict[str, Path], repository: str, tmp_path: Path
) -> None:
    """The envelope layer is read whole: its declared size is bounded (MAX_ATTESTATION_BYTES) before
    anything is downloaded, whatever the blob the registry holds."""
    from trtforge.provenance import MAX_ATTESTATION_BYTES

    engine = attested(built["a"], tmp_path / "a", built["key"])
    publish(engine, repository)
    subject = subject_digest(repository, read_manifest(engine).stem)
    tag = fallback_tag(subject)
    index = api(repository, f"manifests/{tag}", INDEX).json()
    (entry,) = index["manifests"]
    document = api(repository, f"manifests/{entry['digest']}", MANIFEST).json()
    document["layers"][0]["size"] = MAX_ATTESTATION_BYTES + 1
    put_manifest(repository, "oversized", document, OCI_MANIFEST_MEDIA_TYPE)
    oversized = api(repository, "manifests/oversized", MANIFEST)
    entry |= {"digest": oversized.headers["Docker-Content-Digest"], "size": len(oversized.content)}
    put_manifest(repository, tag, index, OCI_INDEX_MEDIA_TYPE)
    out = tmp_path / "pulled"
    code, stdout, err = pull(repository, out, built["key"])
    assert code == 5 and len(err.strip().splitlines()) == 1 and not stdout, err
    assert f"no DSSE envelope layer of at most {MAX_ATTESTATION_BYTES:,} bytes: refused" in err
    assert not out.exists()


def test_an_envelope_blob_served_damaged_is_refused(built: dict[str, Path], repository: str, tmp_path: Path) -> None:
    """The envelope's bytes must be those its layer's digest names, checked before it is verified
    (a proxy serves them damaged: the registry shares the blob with other tests' repositories)."""

    def damaged(engine: Path, entry: dict[str, Any]) -> tuple[str, bytes]:
        (layer,) = api(repository, f"manifests/{entry['digest']}", MANIFEST).json()["layers"]
        return f"blobs/{layer['digest']}", attestation_path(engine).read_bytes().replace(
            b'"payloadType"', b'"payloadTypo"'
        )

    code, stdout, err, out = pulled_through_a_fault(built, repository, tmp_path, damaged)
    assert code == 5 and len(err.strip().splitlines()) == 1 and not stdout, err
    assert "the envelope does not match its digest (damaged in the registry): refused" in err
    assert not out.exists()


def test_registry_failure_while_listing_referrers_is_exit_6(built: dict[str, Path], tmp_path: Path) -> None:
    engine = attested(built["a"], tmp_path / "a", built["key"])
    with start_registry(tmp_path / "short-lived") as running:
        uri = running.uri("referrers/stopped")
        publish(engine, uri)
        registry = OciRegistry(parse_location(uri), insecure=True)  # type: ignore[arg-type]
        [candidate] = registry.candidates("digits-cnn", None).candidates
    with pytest.raises(RegistryError, match=r"cannot reach registry .* while listing referrers") as caught:
        registry.attestations(candidate)
    assert caught.value.exit_code == 6


# ---------------------------------------------------------------- the referrers API (OCI 1.1)


@dataclass
class ReferrersApi:
    """A proxy in front of the real registry with the OCI 1.1 referrers API: a manifest PUT whose
    body has a ``subject`` is answered with the ``OCI-Subject`` header (the registry says it indexes
    referrers), and ``GET /v2/<name>/referrers/<digest>`` answers an image index of the manifests
    pushed through it with that subject (empty when none). Everything else goes to the registry
    unchanged; ``seen`` records each request as ``METHOD /path``."""

    host: str
    seen: list[str] = field(default_factory=list)
    referrers: dict[tuple[str, str], list[dict]] = field(default_factory=dict)  # (name, subject) -> descriptors

    def uri(self, repository: str) -> str:
        return f"oci://{self.host}/{repository}"

    def tag_schema_requests(self) -> list[str]:
        """Requests naming a ``sha256-<hex>`` tag: what the fallback reads or pushes."""
        return [request for request in self.seen if re.search(r"/manifests/sha256-[0-9a-f]{64}$", request)]


@contextlib.contextmanager
def referrers_api(upstream: str) -> Iterator[ReferrersApi]:
    state = ReferrersApi("")
    lock = threading.Lock()
    referrers_path = re.compile(r"/v2/(?P<name>.+)/referrers/(?P<digest>sha256:[0-9a-f]{64})(?:\?.*)?")
    manifest_path = re.compile(r"/v2/(?P<name>.+)/manifests/(?P<reference>[^/?]+)")

    class Handler(BaseHTTPRequestHandler):
        def _relay(self) -> None:
            with lock:
                state.seen.append(f"{self.command} {self.path}")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            listing = referrers_path.fullmatch(self.path)
            if listing and self.command in ("GET", "HEAD"):
                with lock:
                    manifests = list(state.referrers.get((listing["name"], listing["digest"]), []))
                index = {"schemaVersion": 2, "mediaType": OCI_INDEX_MEDIA_TYPE, "manifests": manifests}
                answer_with(self, 200, [("Content-Type", OCI_INDEX_MEDIA_TYPE)], json.dumps(index).encode())
                return
            status, headers, answer = forward(self, upstream, body)
            pushed = manifest_path.fullmatch(self.path)
            if pushed and self.command == "PUT" and status == 201:
                document = json.loads(body)
                subject = (document.get("subject") or {}).get("digest")
                if subject is not None:
                    entry = {
                        "mediaType": document["mediaType"],
                        "digest": f"sha256:{hashlib.sha256(body).hexdigest()}",
                        "size": len(body),
                        "artifactType": document.get("artifactType") or document["config"]["mediaType"],
                        "annotations": document.get("annotations") or {},
                    }
                    with lock:
                        held = state.referrers.setdefault((pushed["name"], subject), [])
                        if entry["digest"] not in {known["digest"] for known in held}:
                            held.append(entry)
                    headers.append(("OCI-Subject", subject))
            answer_with(self, status, headers, answer)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests read trtforge's output, not the proxy's."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_publish_takes_the_referrers_api_when_the_registry_answers_oci_subject(
    built: dict[str, Path], oci_registry: RunningRegistry, tmp_path: Path
) -> None:
    """The attestation's manifest PUT answered with ``OCI-Subject``: the registry indexes it, so no
    ``sha256-<hex>`` tag is pushed; the result and the note say "referrers API". Published again,
    the API's list already holds it: unchanged, nothing pushed."""
    engine = attested(built["a"], tmp_path / "a", built["key"])
    stem = read_manifest(engine).stem
    repository = "referrers/api-publish"
    with referrers_api(oci_registry.host) as proxy:
        uri = proxy.uri(repository)
        code, stdout, err = cli("publish", engine, "--to", uri, "--insecure", "--json")
        assert code == 0, err
        attached = json.loads(stdout)["attestation"]
        subject = subject_digest(uri, stem)
        assert attached["referrers"] == "api" and attached["status"] == "published", attached
        assert f"attestation {attestation_path(engine).name} attached as referrer {attached['digest'][:19]}… " in err
        assert "(referrers API)" in err and "referrers tag" not in err, err
        assert f"GET /v2/{repository}/referrers/{subject}" in proxy.seen  # how it learnt the API is there
        assert f"PUT /v2/{repository}/manifests/{attached['digest']}" in proxy.seen
        assert proxy.tag_schema_requests() == [], proxy.seen  # nothing read or pushed under sha256-<hex>
        # the registry itself holds the referrer, and no fallback tag
        upstream = oci_registry.uri(repository)
        assert api(upstream, f"manifests/{fallback_tag(subject)}", INDEX).status_code == 404
        referrer = api(upstream, f"manifests/{attached['digest']}", MANIFEST).json()
        assert referrer["subject"]["digest"] == subject and referrer["artifactType"] == ATTESTATION_MEDIA_TYPE
        [listed] = api(uri, f"referrers/{subject}", INDEX).json()["manifests"]
        assert listed["digest"] == attached["digest"]
        assert listed["annotations"][ATTESTATION_ANNOTATION] == "slsa-provenance-v1"

        pushes = [request for request in proxy.seen if request.startswith("PUT ")]
        code, stdout, err = cli("publish", engine, "--to", uri, "--insecure", "--json")
        assert code == 0, err
        again = json.loads(stdout)
        assert again["status"] == "unchanged"
        assert again["attestation"] == {"digest": attached["digest"], "referrers": "api", "status": "unchanged"}
        assert "already attached" in err and "(referrers API)" in err, err
        assert [request for request in proxy.seen if request.startswith("PUT ")] == pushes  # nothing pushed
        assert proxy.tag_schema_requests() == []


def test_pull_finds_and_verifies_the_attestation_through_the_referrers_api(
    built: dict[str, Path], oci_registry: RunningRegistry, tmp_path: Path
) -> None:
    """``pull --require-signature`` lists the subject's referrers with ``GET .../referrers/<digest>``
    (200: the API), never the ``sha256-<hex>`` tag, and verifies the attestation it lists; a signed
    engine without one: "no referrers (referrers API)", its embedded signature verified instead."""
    engine = attested(built["a"], tmp_path / "a", built["key"])
    stem = read_manifest(engine).stem
    with referrers_api(oci_registry.host) as proxy:
        uri = proxy.uri("referrers/api-pull")
        code, stdout, err = cli("publish", engine, "--to", uri, "--insecure", "--json")
        assert code == 0, err
        attached = json.loads(stdout)["attestation"]
        assert attached["referrers"] == "api", attached
        subject = subject_digest(uri, stem)
        proxy.seen.clear()
        out = tmp_path / "pulled"
        code, stdout, err = pull(uri, out, built["key"], "--json")
        assert code == 0, err
        assert f"GET /v2/referrers/api-pull/referrers/{subject}" in proxy.seen, proxy.seen
        assert proxy.tag_schema_requests() == [], proxy.seen
        assert f"referrer {attached['digest'][:19]}…: attestation verified (signed by trusted key" in err, err
        pulled = out / engine.name
        assert json.loads(stdout)["attestation"] == str(attestation_path(pulled))
        assert attestation_path(pulled).read_bytes() == attestation_path(engine).read_bytes()
        code, stdout, err = cli("verify-provenance", pulled, "--trusted-key", f"{built['key']}.pub", "--json")
        assert code == 0 and json.loads(stdout)["verified"] is True, err

        signed = tmp_path / "s" / built["a"].name
        signed.parent.mkdir()
        shutil.copy2(built["a"], signed)
        shutil.copy2(manifest_path_for(built["a"]), manifest_path_for(signed))
        assert cli("sign", signed, "--key", built["key"])[0] == 0
        bare = proxy.uri("referrers/api-no-attestation")
        code, _, err = cli("publish", signed, "--to", bare, "--insecure")
        assert code == 0, err
        code, _, err = pull(bare, tmp_path / "bare", built["key"])
        assert code == 0, err
        assert "no referrers (referrers API)" in err and "no trtforge attestation among its referrers" in err, err
        assert proxy.tag_schema_requests() == [], proxy.seen
