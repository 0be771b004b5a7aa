"""oci://: real TensorRT-RTX engines pushed to and pulled from a real registry on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from clitools import cli
from models import conv_net, need_rtx
from registry import PASSWORD, USER, RunningRegistry, as_enterprise, build_engine, free_port, htpasswd, put_manifest

from trtforge.artifact import LOCK_DIR
from trtforge.digests import sha256_file
from trtforge.environment import Target
from trtforge.errors import InvalidInputError, RegistryError
from trtforge.manifest import Manifest, manifest_path_for, read_manifest
from trtforge.publish import OciLocation, load_local_artifact, open_registry, parse_location
from trtforge.publish.oci import (
    ARTIFACT_TYPE,
    ENGINE_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    OCI_MANIFEST_MEDIA_TYPE,
    OciRegistry,
    artifact_annotations,
)
from trtforge.publish.pulling import target_environments
from trtforge.selection import select_engine
from trtforge.tags import ComputeCapability

need_rtx()

CONV_PROFILE = "  - input: {min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}"


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits model built for sm86, sm89, sm86.sm89.sm120 in one engine, and a version-compatible
    enterprise TensorRT sm89 engine (the sm89 one relabelled: registry.as_enterprise), which
    pull must judge by its own flavor's rules and the host-code policy."""
    root = tmp_path_factory.mktemp("oci-engines")
    engines = {
        "8.6": build_engine(root / "a", targets=["8.6"]),
        "8.9": build_engine(root / "b", targets=["8.9"]),
        "multi": build_engine(root / "c", targets=["8.6", "8.9", "12.0"]),
    }
    return {**engines, "vc": as_enterprise(engines["8.9"], root / "d", "10.13.0.35", version_compatible=True)}


@pytest.fixture
def repository(oci_registry: RunningRegistry, request: pytest.FixtureRequest) -> str:
    """A fresh repository per test (the registry is shared by the session)."""
    return oci_registry.uri(f"tests/{request.node.name.lower().replace('_', '-')}")


def publish_all(uri: str, engines: dict[str, Path]) -> None:
    for engine in engines.values():
        code, _, err = cli("publish", str(engine), "--to", uri, "--insecure")
        assert code == 0, err


def registry_json(host: str, path: str, accept: str = "application/vnd.oci.image.manifest.v1+json") -> dict:
    response = requests.get(f"http://{host}/v2/{path}", headers={"Accept": accept}, timeout=10)
    response.raise_for_status()
    return response.json()


def test_publish_writes_one_artifact_with_documented_types_and_annotations(
    oci_registry: RunningRegistry,
    repository: str,
    engines: dict[str, Path],
) -> None:
    engine = engines["8.6"]
    manifest = read_manifest(engine)
    code, out, err = cli("publish", str(engine), "--to", repository, "--insecure", "--json")
    assert code == 0, err
    document = json.loads(out)
    assert document["status"] == "published"
    assert document["tag"] == manifest.tag and document["sha256"] == manifest.artifact.sha256
    repo = repository.removeprefix(f"oci://{oci_registry.host}/")
    assert registry_json(oci_registry.host, f"{repo}/tags/list")["tags"] == [manifest.stem]
    image = registry_json(oci_registry.host, f"{repo}/manifests/{manifest.stem}")
    assert image["artifactType"] == ARTIFACT_TYPE
    assert document["digest"].startswith("sha256:")
    engine_layer, manifest_layer = image["layers"]
    assert engine_layer["mediaType"] == ENGINE_MEDIA_TYPE
    assert engine_layer["digest"] == f"sha256:{manifest.artifact.sha256}"
    assert engine_layer["size"] == engine.stat().st_size
    assert engine_layer["annotations"]["org.opencontainers.image.title"] == engine.name
    assert manifest_layer["mediaType"] == MANIFEST_MEDIA_TYPE
    assert manifest_layer["digest"] == f"sha256:{sha256_file(manifest_path_for(engine))}"
    notes = image["annotations"]
    assert notes == artifact_annotations(manifest)
    assert notes["dev.trtforge.tag"] == manifest.tag == "rtx1.7-sm86-linux_x86_64"
    assert notes["dev.trtforge.flavor"] == "tensorrt-rtx"
    assert notes["dev.trtforge.tensorrt.version"] == manifest.tensorrt.version
    assert notes["dev.trtforge.gpu.compute-capabilities"] == "8.6"
    assert notes["dev.trtforge.precision"] == "fp32"
    assert notes["dev.trtforge.sha256"] == manifest.artifact.sha256


def test_same_engine_again_is_a_no_op(oci_registry: RunningRegistry, repository: str, engines: dict[str, Path]) -> None:
    engine = engines["8.9"]
    code, out, err = cli("publish", str(engine), "--to", repository, "--insecure", "--json")
    assert code == 0, err
    first = json.loads(out)
    repo = repository.removeprefix(f"oci://{oci_registry.host}/")
    stem = read_manifest(engine).stem
    before = requests.head(
        f"http://{oci_registry.host}/v2/{repo}/manifests/{stem}",
        timeout=10,
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).headers["Docker-Content-Digest"]
    code, out, err = cli("publish", str(engine), "--to", repository, "--insecure", "--json")
    assert code == 0, err
    again = json.loads(out)
    assert again["status"] == "unchanged" and "nothing to do" in again["detail"]
    # a rerun reports what the registry holds, as the push did: the digest a CI step pins
    assert again["digest"] == first["digest"] == before and again["oci_tag"] == first["oci_tag"] == stem
    after = requests.head(
        f"http://{oci_registry.host}/v2/{repo}/manifests/{stem}",
        timeout=10,
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).headers["Docker-Content-Digest"]
    assert before == after


def test_a_build_cache_push_replaces_only_the_entry_proven_damaged(
    repository: str, engines: dict[str, Path], tmp_path: Path
) -> None:
    """ci's push (``store_build``) creates a tag, and replaces only the image manifest it read there
    and proved damaged: an entry it could not read, or one another runner pushed meanwhile, stays.
    A build sharing a blob the registry served damaged is refused: the registry would keep that blob."""
    location = parse_location(repository)
    assert isinstance(location, OciLocation)
    registry = open_registry(location, insecure=True)
    first, other = load_local_artifact(engines["8.6"]), load_local_artifact(engines["8.9"])
    key = {"dev.trtforge.build-key": "k1"}
    assert registry.store_build(first, "build-key", key).status == "published"
    held = registry.manifest_digest("build-key")
    for replacing in (None, "sha256:" + "0" * 64):  # unread, or another entry than the one there now
        outcome = registry.store_build(other, "build-key", key, replacing=replacing)
        assert outcome.status == "unchanged" and "kept" in outcome.detail
        assert registry.manifest_digest("build-key") == held
    engine_blob = f"sha256:{other.manifest.artifact.sha256}"
    with pytest.raises(RegistryError, match="a push cannot replace it"):
        registry.store_build(other, "build-key", key, replacing=held, damaged=frozenset({engine_blob}))
    assert registry.manifest_digest("build-key") == held
    outcome = registry.store_build(other, "build-key", key, replacing=held)
    assert outcome.status == "replaced" and registry.manifest_digest("build-key") not in (None, held)
    pulled = registry.pull_tag("build-key", tmp_path)
    assert pulled is not None and pulled.annotations["dev.trtforge.build-key"] == "k1"


def test_runners_racing_on_one_build_cache_tag_leave_a_whole_entry(
    repository: str, engines: dict[str, Path], tmp_path: Path
) -> None:
    """Two ci runners pushing other builds under one key at once: each push puts up its blobs before
    the manifest that lists them, so whichever manifest the tag ends with is whole and pulls intact."""
    from concurrent.futures import ThreadPoolExecutor

    from trtforge.publish.base import LocalArtifact

    location = parse_location(repository)
    assert isinstance(location, OciLocation)
    builds = [load_local_artifact(engines["8.6"]), load_local_artifact(engines["8.9"])]

    def push(artifact: LocalArtifact) -> str:
        return open_registry(location, insecure=True).store_build(artifact, "build-race", {}).status

    for attempt in range(3):
        with ThreadPoolExecutor(2) as pool:
            statuses = list(pool.map(push, builds))
        assert set(statuses) <= {"published", "unchanged"}, statuses
        into = tmp_path / str(attempt)
        into.mkdir()
        pulled = open_registry(location, insecure=True).pull_tag("build-race", into)
        assert pulled is not None and not pulled.warnings
        manifest = read_manifest(pulled.engine)
        assert sha256_file(pulled.engine) == manifest.artifact.sha256
        assert manifest.artifact.sha256 in {build.manifest.artifact.sha256 for build in builds}
        requests.delete(
            f"http://{location.host}/v2/{location.repository}/manifests/{pulled.digest}", timeout=10
        ).raise_for_status()


def test_different_engine_under_the_tag_needs_force(repository: str, engines: dict[str, Path], tmp_path: Path) -> None:
    original = engines["8.6"]
    # the same name, precision and target from another model: same tag, other bytes
    other = build_engine(tmp_path / "other", model=conv_net(tmp_path / "conv.onnx", seed=5), profiles=CONV_PROFILE)
    assert read_manifest(other).stem == read_manifest(original).stem
    assert cli("publish", str(original), "--to", repository, "--insecure")[0] == 0
    code, _, err = cli("publish", str(other), "--to", repository, "--insecure")
    assert code == 6
    assert "already holds a different engine" in err and "--force" in err and "Traceback" not in err
    code, out, err = cli("publish", str(other), "--to", repository, "--insecure", "--force", "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "replaced"
    pulled = tmp_path / "pulled"
    code, _, err = cli("pull", repository, "--name", "digits-cnn", "--cc", "8.6", "--insecure", "--out", str(pulled))
    assert code == 0, err
    assert sha256_file(pulled / other.name) == read_manifest(other).artifact.sha256


def test_pull_selects_among_targets_like_the_loader(repository: str, engines: dict[str, Path], tmp_path: Path) -> None:
    publish_all(repository, engines)
    out = tmp_path / "pulled"
    code, stdout, err = cli(
        "pull", repository, "--name", "digits-cnn", "--cc", "8.9", "--insecure", "--out", str(out), "--json"
    )
    assert code == 0, err
    document = json.loads(stdout)
    chosen = read_manifest(Path(document["engine"]))
    assert "8.9" in chosen.gpu.compute_capabilities
    assert not chosen.tensorrt.version_compatible, "a plain engine ranks above a version-compatible one"
    assert read_manifest(engines["vc"]).stem == "digits-cnn-fp32-trt10-sm89-linux_x86_64"
    # exactly what the loader's selection picks among the same manifests (listed in tag order, as registries list)
    manifests = sorted((read_manifest(engine) for engine in engines.values()), key=lambda m: m.stem)
    env = target_environments(Target(compute_capability=ComputeCapability(8, 9)))[-1]
    best, rejected = select_engine([(m, m.stem) for m in manifests], env)
    assert best is not None and best[0].stem == chosen.stem
    # the 8.6 engine does not fit the GPU; the enterprise one needs its runtime and the host-code policy (rule 7)
    assert [(r.manifest.stem, [p.rule.value for p in r.problems]) for r in rejected] == [
        (read_manifest(engines["8.6"]).stem, ["gpu"]),
        (read_manifest(engines["vc"]).stem, ["flavor", "host_code"]),
    ]
    assert [[p["rule"] for p in entry["problems"]] for entry in document["rejected"]] == [
        ["gpu"],
        ["flavor", "host_code"],
    ]
    assert sha256_file(Path(document["engine"])) == chosen.artifact.sha256
    pulled = [chosen.artifact.file, chosen.stem + ".manifest.json", LOCK_DIR]
    assert sorted(p.name for p in out.iterdir()) == sorted(pulled)

    # for a host with that enterprise TensorRT, host code is the one reason left, until it is allowed
    enterprise = ["--flavor", "tensorrt", "--trt-version", "10.13.0.35", "--insecure", "--json"]
    vc_out = str(tmp_path / "vc")
    code, stdout, err = cli("pull", repository, "--name", "digits-cnn", "--cc", "8.9", *enterprise, "--out", vc_out)
    assert code == 5 and "--allow-host-code" in err, err
    rules = {
        entry["reference"].rpartition(":")[2]: [p["rule"] for p in entry["problems"]]
        for entry in json.loads(stdout)["rejected"]
    }
    assert rules[read_manifest(engines["vc"]).stem] == ["host_code"]
    code, stdout, err = cli(
        "pull", repository, "--name", "digits-cnn", "--cc", "8.9", *enterprise, "--out", vc_out, "--allow-host-code"
    )
    assert code == 0, err
    assert Path(json.loads(stdout)["engine"]).name == engines["vc"].name

    code, stdout, err = cli(
        "pull",
        repository,
        "--name",
        "digits-cnn",
        "--cc",
        "sm_120",
        "--insecure",
        "--out",
        str(tmp_path / "b"),
        "--json",
    )
    assert code == 0, err
    assert read_manifest(Path(json.loads(stdout)["engine"])).stem == read_manifest(engines["multi"]).stem


def test_nothing_fits_exits_5_listing_every_candidate(
    repository: str, engines: dict[str, Path], tmp_path: Path
) -> None:
    publish_all(repository, engines)
    out = tmp_path / "none"
    code, stdout, err = cli(
        "pull", repository, "--name", "digits-cnn", "--cc", "7.5", "--insecure", "--out", str(out), "--json"
    )
    assert code == 5
    document = json.loads(stdout)
    assert document["status"] == "incompatible"
    assert {entry["reference"].rsplit(":", 1)[1] for entry in document["rejected"]} == {
        read_manifest(engine).stem for engine in engines.values()
    }
    # each one misses the GPU (the enterprise one, judged by its own flavor, also has no runtime here)
    assert all("gpu" in [p["rule"] for p in entry["problems"]] for entry in document["rejected"])
    for engine in engines.values():
        assert read_manifest(engine).stem in err
    assert "7.5" in err and "Traceback" not in err
    assert not out.exists()

    code, _, err = cli(
        "pull",
        repository,
        "--name",
        "digits-cnn",
        "--precision",
        "int8",
        "--cc",
        "8.6",
        "--insecure",
        "--out",
        str(out),
    )
    assert code == 5
    assert "no artifact named 'digits-cnn' (int8)" in err and read_manifest(engines["8.6"]).stem in err
    code, _, err = cli("pull", repository, "--name", "digits-cnn", "--precision", "fp23", "--insecure")
    assert code == 2 and "did you mean 'fp32'" in err


def test_pull_again_is_a_no_op_unless_the_engine_was_damaged_and_foreign_tags_are_listed_not_pulled(
    repository: str, engines: dict[str, Path], tmp_path: Path
) -> None:
    """Pulled again, "unchanged" needs the engine here to hash to its manifest's sha256, not the
    manifest alone: a damaged engine is downloaded again."""
    assert cli("publish", str(engines["8.6"]), "--to", repository, "--insecure")[0] == 0
    out = tmp_path / "pulled"
    args = ("pull", repository, "--name", "digits-cnn", "--cc", "8.6", "--insecure", "--out", str(out), "--json")
    assert json.loads(cli(*args)[1])["status"] == "pulled"
    assert json.loads(cli(*args)[1])["status"] == "unchanged"
    pulled = out / engines["8.6"].name
    data = bytearray(pulled.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pulled.write_bytes(bytes(data))
    assert json.loads(cli(*args)[1])["status"] == "pulled"
    assert pulled.read_bytes() == engines["8.6"].read_bytes()
    code, _, err = cli("pull", repository, "--name", "other-model", "--cc", "8.6", "--insecure", "--out", str(out))
    assert code == 5
    assert "holds: digits-cnn-fp32-rtx1.7-sm86-linux_x86_64" in err


def test_a_tag_naming_another_precision_is_listed_not_pulled_for_it(
    oci_registry: RunningRegistry, repository: str, engines: dict[str, Path], tmp_path: Path
) -> None:
    """A tag is a name any pusher gives: the manifest under it says what it holds. An fp32 engine
    tagged as an fp16 one is no candidate for --precision fp16."""
    assert cli("publish", str(engines["8.6"]), "--to", repository, "--insecure")[0] == 0
    stem = read_manifest(engines["8.6"]).stem
    path = repository.removeprefix(f"oci://{oci_registry.host}/")
    misnamed = stem.replace("-fp32-", "-fp16-")
    document = registry_json(oci_registry.host, f"{path}/manifests/{stem}")
    put_manifest(repository, misnamed, document, OCI_MANIFEST_MEDIA_TYPE)
    out = tmp_path / "pulled"
    args = ("--name", "digits-cnn", "--precision", "fp16", "--cc", "8.6", "--insecure", "--out", str(out))
    code, _, err = cli("pull", repository, *args)
    assert code == 5 and f"holds: {misnamed}" in err, err
    assert not out.exists()


def test_an_image_of_another_artifact_type_is_skipped_not_pulled(
    oci_registry: RunningRegistry, repository: str, engines: dict[str, Path], tmp_path: Path
) -> None:
    """Layers of trtforge's media types are not enough: an image whose artifactType (or config
    media type) is another tool's is skipped, said, and never pulled."""
    assert cli("publish", str(engines["8.6"]), "--to", repository, "--insecure")[0] == 0
    stem = read_manifest(engines["8.6"]).stem
    path = repository.removeprefix(f"oci://{oci_registry.host}/")
    document = registry_json(oci_registry.host, f"{path}/manifests/{stem}")
    document["artifactType"] = "application/vnd.example.other"
    if document["config"]["mediaType"] == ARTIFACT_TYPE:
        document["config"]["mediaType"] = "application/vnd.example.other"
    put_manifest(repository, stem, document, OCI_MANIFEST_MEDIA_TYPE)
    out = tmp_path / "pulled"
    code, _, err = cli("pull", repository, "--name", "digits-cnn", "--cc", "8.6", "--insecure", "--out", str(out))
    assert code == 5 and "not a trtforge engine artifact (artifactType application/vnd.example.other)" in err, err
    assert not out.exists()


def test_corrupted_blob_is_detected_and_nothing_is_written(
    oci_registry: RunningRegistry,
    repository: str,
    tmp_path: Path,
) -> None:
    # an engine of its own: blobs are shared across repositories, so damage only this one
    engine = build_engine(tmp_path / "own", model=conv_net(tmp_path / "own.onnx", seed=11), profiles=CONV_PROFILE)
    assert cli("publish", str(engine), "--to", repository, "--insecure")[0] == 0
    blob = oci_registry.blob(f"sha256:{read_manifest(engine).artifact.sha256}")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    out = tmp_path / "pulled"
    code, _, err = cli("pull", repository, "--name", "digits-cnn", "--cc", "8.6", "--insecure", "--out", str(out))
    assert code == 5
    assert "sha256" in err and "nothing written" in err and "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []


def test_registry_down_exits_6_quickly_and_writes_nothing(engines: dict[str, Path], tmp_path: Path) -> None:
    dead = f"oci://127.0.0.1:{free_port()}/tests/down"
    started = time.monotonic()
    code, _, err = cli("publish", str(engines["8.6"]), "--to", dead, "--insecure")
    assert code == 6
    assert "cannot reach registry" in err and "connection refused" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    out = tmp_path / "pulled"
    code, stdout, err = cli(
        "pull", dead, "--name", "digits-cnn", "--cc", "8.6", "--insecure", "--out", str(out), "--json"
    )
    assert code == 6 and json.loads(stdout)["exit_code"] == 6
    assert "cannot reach registry" in err
    assert not out.exists()
    assert time.monotonic() - started < 15, "a dead registry must fail fast, not retry for minutes"


@pytest.mark.slow
def test_a_registry_that_accepts_but_never_answers_fails_in_seconds(engines: dict[str, Path]) -> None:
    """The ``/v2/`` ping has a short read timeout: the transfers' 120 s is for blobs, not for a silent host."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepted by the kernel, never answered
        started = time.monotonic()
        code, _, err = cli(
            "publish", str(engines["8.6"]), "--to", f"oci://127.0.0.1:{silent.getsockname()[1]}/r", "--insecure"
        )
        assert code == 6 and "cannot reach registry" in err and "timed out" in err
        assert time.monotonic() - started < 30


def test_a_registry_stopped_between_listing_and_download(engines: dict[str, Path], tmp_path: Path) -> None:
    from registry import start_registry

    from trtforge.publish.pulling import PullRequest, pull_artifact

    with start_registry(tmp_path / "short-lived") as running:
        uri = running.uri("tests/stopped")
        assert cli("publish", str(engines["8.6"]), "--to", uri, "--insecure")[0] == 0
        registry = OciRegistry(parse_location(uri), insecure=True)  # type: ignore[arg-type]
        listing = registry.candidates("digits-cnn", None)
    out = tmp_path / "pulled"
    from trtforge.errors import RegistryError

    class Stale:
        uri = registry.uri

        def candidates(self, name: str, precision: str | None) -> object:
            return listing

        def fetch(self, candidate: object, into: Path) -> None:
            registry.fetch(candidate, into)  # type: ignore[arg-type]

    request = PullRequest("digits-cnn", None, target_environments(Target(compute_capability=ComputeCapability(8, 6))))
    with pytest.raises(RegistryError, match="cannot reach registry"):
        pull_artifact(Stale(), request, out)  # type: ignore[arg-type]
    assert not out.exists()


def test_plain_http_needs_insecure(repository: str, engines: dict[str, Path]) -> None:
    code, _, err = cli("publish", str(engines["8.6"]), "--to", repository)
    assert code == 6
    assert "--insecure" in err


def test_large_engines_go_up_in_chunks(repository: str, engines: dict[str, Path], tmp_path: Path) -> None:
    """The chunked (PATCH) upload path, forced with a tiny threshold, round-trips the bytes."""
    engine = engines["multi"]
    registry = OciRegistry(parse_location(repository), insecure=True, chunked_above=1024, chunk_size=64 * 1024)  # type: ignore[arg-type]
    assert registry.publish(load_local_artifact(engine)).status == "published"
    fresh = OciRegistry(parse_location(repository), insecure=True)  # type: ignore[arg-type]
    (candidate,) = fresh.candidates("digits-cnn", "fp32").candidates
    target = tmp_path / "engine"
    fresh.fetch(candidate, target)
    assert sha256_file(target) == read_manifest(engine).artifact.sha256


def test_signature_policy_picks_the_signed_artifact(repository: str, engines: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    signed = tmp_path / "signed" / engines["multi"].name
    signed.parent.mkdir()
    shutil.copy2(engines["multi"], signed)
    shutil.copy2(manifest_path_for(engines["multi"]), manifest_path_for(signed))
    assert cli("keygen", str(tmp_path / "key"))[0] == 0
    code, _, err = cli("sign", str(signed), "--key", str(tmp_path / "key"))
    assert code == 0, err
    assert cli("publish", str(signed), "--to", repository, "--insecure")[0] == 0
    assert cli("publish", str(engines["8.9"]), "--to", repository, "--insecure")[0] == 0
    out = tmp_path / "pulled"
    code, stdout, err = cli(
        "pull",
        repository,
        "--name",
        "digits-cnn",
        "--cc",
        "8.9",
        "--insecure",
        "--out",
        str(out),
        "--require-signature",
        "--trusted-key",
        str(tmp_path / "key.pub"),
        "--json",
    )
    assert code == 0, err
    document = json.loads(stdout)
    assert Path(document["engine"]).name == signed.name
    assert [entry["problems"][0]["rule"] for entry in document["rejected"]] == ["signature"]
    assert read_manifest(Path(document["engine"])).signature is not None
    code, _, err = cli("pull", repository, "--name", "digits-cnn", "--require-signature", "--insecure")
    assert code == 2 and "--trusted-key" in err


def test_publishing_a_damaged_artifact_is_refused(engines: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    engine = tmp_path / engines["8.6"].name
    shutil.copy2(engines["8.6"], engine)
    shutil.copy2(manifest_path_for(engines["8.6"]), manifest_path_for(engine))
    data = bytearray(engine.read_bytes())
    data[100] ^= 0x01
    engine.write_bytes(bytes(data))
    code, _, err = cli("publish", str(engine), "--to", "oci://127.0.0.1:1/never/reached", "--insecure")
    assert code == 5 and "refusing to publish" in err and "sha256" in err
    code, _, err = cli("publish", str(tmp_path / "missing.engine"), "--to", "dir:///tmp/x")
    assert code == 2 and "no such engine" in err


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("s3://bucket/models", "unknown registry scheme"),
        ("ocy://host/repo", "did you mean 'oci'"),
        ("oci://host", "needs a host and a repository"),
        ("oci://host/Repo", "not a valid OCI repository name"),
        ("oci://host/repo:latest", "give the repository only"),
        # a tag or digest after "@" is no password: the host stays in the message (it was '***@latest')
        ("oci://host:5000/repo@latest", "'oci://host:5000/repo@latest': give the repository only"),
        ("oci://host:5000/repo@sha256:abcd", "'oci://host:5000/repo@sha256:abcd': give the repository only"),
        ("oci://user:secret@host/repo", "credentials do not belong in the URI"),
        ("oci://host:99999/repo", "a port is a number up to 65535"),  # was exit 6, urllib3's "Failed to parse"
        ("oci://host:abc/repo", "a port is a number up to 65535"),
        ("oci://ho st/repo", "a port is a number up to 65535"),
        ("oci://:5917/x", "':5917' is not a host"),  # was exit 6, requests' "No host supplied"
        ("oci://127.0.0.1:/x", "'127.0.0.1:' is not a host"),  # was accepted: port 80
        ("oci://[::1/x", "Invalid IPv6 URL"),  # was exit 1, urlsplit's ValueError
        ("just/a/path", "not a registry URI"),
        ("dir://", "no path"),
    ],
)
def test_bad_uris_are_usage_errors(uri: str, needle: str) -> None:
    with pytest.raises(InvalidInputError, match=needle):
        parse_location(uri)
    code, _, err = cli("pull", uri, "--name", "x")
    assert code == 2 and needle in err and "Traceback" not in err


def test_a_host_and_repository_over_255_characters_are_a_usage_error() -> None:
    """Docker, containerd and skopeo refuse a reference whose HOST/REPO is over 255 characters, and
    the distribution registry a repository over 255 with HTTP 500: trtforge took any length, pushed
    what those clients could never pull, or failed with exit 6 "retry later"."""
    host = "127.0.0.1:5917"
    longest = "team/" + "a" * (255 - len(host) - 1 - len("team/"))
    assert parse_location(f"oci://{host}/{longest}") == OciLocation(host, longest)
    uri = f"oci://{host}/{longest}b"
    with pytest.raises(InvalidInputError, match="HOST/REPO is 256 characters, over the 255"):
        parse_location(uri)
    code, _, err = cli("pull", uri, "--name", "x", "--insecure")
    assert code == 2 and "over the 255 that docker, containerd and skopeo take" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "password",
    ["hunter2", "hun/ter2", "hun@ter2", "hunter2?x=1"],  # a "/" once ended urlsplit's host: not seen as credentials
)
def test_credentials_in_a_uri_are_refused_and_never_repeated(engines: dict[str, Path], password: str) -> None:
    """The refusal of ``oci://user:password@…`` printed the password, in the error line and in --json's
    ``to``/``from`` and ``error``: CI logs keep both. The userinfo is shown as ``***``."""
    uri = f"oci://ci:{password}@127.0.0.1:5917/team/models"
    secret = password.split("/")[-1].split("@")[-1].split("?")[0]
    for command, key in ((("publish", engines["8.6"], "--to", uri), "to"), (("pull", uri, "--name", "x"), "from")):
        code, out, err = cli(*command, "--insecure")
        assert code == 2 and "credentials do not belong in the URI" in err, err
        assert "oci://***@127.0.0.1:5917/team/models" in err and secret not in out + err
        code, out, err = cli(*command, "--insecure", "--json")
        document = json.loads(out)
        assert code == 2 and secret not in out + err
        assert document[key].startswith("oci://***@127.0.0.1:5917/team/models")
        assert "credentials do not belong in the URI" in document["error"]


def test_oci_location_keeps_dotted_namespaces() -> None:
    location = parse_location("oci://localhost:5000/my.team/models/digits")
    assert location == OciLocation("localhost:5000", "my.team/models/digits")
    container = OciRegistry(location)._container("tag-1")  # type: ignore[arg-type]
    assert container.manifest_url() == "localhost:5000/v2/my.team/models/digits/manifests/tag-1"


def test_annotations_describe_the_manifest(engines: dict[str, Path]) -> None:
    manifest: Manifest = read_manifest(engines["multi"])
    notes = artifact_annotations(manifest)
    assert notes["dev.trtforge.gpu.compute-capabilities"] == "8.6,8.9,12.0"
    assert notes["dev.trtforge.signed"] == "false"
    assert notes["org.opencontainers.image.title"] == manifest.stem


def test_credentials_from_the_environment_or_the_docker_config(
    engines: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry with htpasswd (basic) authentication: no credentials, wrong ones (named as the
    environment's: before, "log in with docker login …" though they were set), env, docker config."""
    import base64

    from registry import start_registry

    monkeypatch.delenv("TRTFORGE_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("TRTFORGE_REGISTRY_PASSWORD", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))  # never the developer's own login
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    engine = str(engines["8.6"])
    with start_registry(tmp_path / "auth", htpasswd=htpasswd(tmp_path)) as running:
        uri = running.uri("tests/auth")
        code, _, err = cli("publish", engine, "--to", uri, "--insecure")
        assert code == 6 and "user name and password" in err and "TRTFORGE_REGISTRY_USERNAME" in err
        monkeypatch.setenv("TRTFORGE_REGISTRY_USERNAME", "ci")
        monkeypatch.setenv("TRTFORGE_REGISTRY_PASSWORD", "wrong")
        code, _, err = cli("publish", engine, "--to", uri, "--insecure")
        assert code == 6 and "HTTP 401" in err and "docker login" not in one_line(err)
        assert "the credentials in TRTFORGE_REGISTRY_USERNAME and TRTFORGE_REGISTRY_PASSWORD were refused" in err
        monkeypatch.setenv("TRTFORGE_REGISTRY_PASSWORD", "s3cret")
        code, _, err = cli("publish", engine, "--to", uri, "--insecure")
        assert code == 0, err
        monkeypatch.delenv("TRTFORGE_REGISTRY_USERNAME")
        monkeypatch.delenv("TRTFORGE_REGISTRY_PASSWORD")
        (tmp_path / "docker").mkdir()
        token = base64.b64encode(b"ci:s3cret").decode()
        (tmp_path / "docker" / "config.json").write_text(json.dumps({"auths": {running.host: {"auth": token}}}))
        out = tmp_path / "pulled"
        code, _, err = cli("pull", uri, "--name", "digits-cnn", "--cc", "8.6", "--insecure", "--out", str(out))
        assert code == 0, err
        assert (out / engines["8.6"].name).is_file()


DENIED = json.dumps({"errors": [{"code": "DENIED", "message": "denied"}]}).encode()
WRITES = ("POST", "PUT", "PATCH")


def one_line(err: str) -> str:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture
def no_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No credentials anywhere (never the developer's own login): returns the $DOCKER_CONFIG folder."""
    monkeypatch.delenv("TRTFORGE_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("TRTFORGE_REGISTRY_PASSWORD", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    (tmp_path / "docker").mkdir()
    return tmp_path / "docker"


@pytest.mark.parametrize(
    ("faults", "says"),
    [
        ({method: (403, DENIED) for method in WRITES}, ("refused uploading", "HTTP 403: DENIED denied", "may push to")),
        ({"POST": (500, b"")}, ("uploading", "failed with HTTP 500", "retry later")),
        ({"POST": (500, b"<html>oops</html>")}, ("failed with HTTP 500", "retry later")),
        ({"POST": (202, b"")}, ("answered uploading", "HTTP 202 and no upload location", "is it an OCI registry?")),
    ],
    ids=["403-denied", "500-empty", "500-html", "202-without-location"],
)
def test_a_refused_or_failing_push_says_the_status_and_the_fix(
    oci_registry: RunningRegistry,
    engines: dict[str, Path],
    no_login: Path,
    request: pytest.FixtureRequest,
    faults: dict[str, tuple[int, bytes]],
    says: tuple[str, ...],
) -> None:
    """Before: oras's "Cannot respond to request for authentication." (403) or "Expecting value:
    line 1 column 1 (char 0)" (500): neither the status nor what to do."""
    from registry import faulty_proxy

    with faulty_proxy(oci_registry.host, faults) as proxy:
        uri = f"oci://{proxy}/tests/refused-{request.node.callspec.id}"
        code, _, err = cli("publish", str(engines["8.6"]), "--to", uri, "--insecure")
    assert code == 6
    for fragment in says:
        assert fragment in one_line(err), err


def test_a_push_refused_to_a_logged_in_account_says_so(
    engines: dict[str, Path], tmp_path: Path, no_login: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Basic auth accepted, the push denied (an account that may only read): before, "Issue
    retrieving session url: {'errors': [...]}"; a refused chunk of a chunked upload (PATCH) too."""
    from registry import faulty_proxy, start_registry

    passwords = htpasswd(tmp_path)
    monkeypatch.setenv("TRTFORGE_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("TRTFORGE_REGISTRY_PASSWORD", PASSWORD)
    with (
        start_registry(tmp_path / "auth", htpasswd=passwords) as running,
        faulty_proxy(running.host, {method: (403, DENIED) for method in WRITES}) as proxy,
    ):
        code, _, err = cli("publish", str(engines["8.6"]), "--to", f"oci://{proxy}/tests/denied", "--insecure")
        assert code == 6 and "HTTP 403: DENIED denied" in one_line(err) and "may push to tests/denied" in err
        assert "session url" not in err
    with (
        start_registry(tmp_path / "auth-chunks", htpasswd=passwords) as running,
        faulty_proxy(running.host, {"PATCH": (403, DENIED)}) as proxy,
    ):
        location = parse_location(f"oci://{proxy}/tests/denied-chunks")
        registry = OciRegistry(location, insecure=True, chunked_above=1024, chunk_size=64 * 1024)  # type: ignore[arg-type]
        with pytest.raises(RegistryError, match=r"refused uploading .*HTTP 403: DENIED denied.*may push to"):
            registry.publish(load_local_artifact(engines["8.6"]))


def inline_auth() -> str:
    """USER / PASSWORD as docker's config keeps them inline (``auth``: base64 ``user:password``)."""
    import base64

    return base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def docker_login(folder: Path, key: str, entry: dict | None = None) -> None:
    """Write ``folder/config.json`` as ``docker login`` does: USER / PASSWORD under ``key``."""
    (folder / "config.json").write_text(json.dumps({"auths": {key: entry or {"auth": inline_auth()}}}))


#: "user:password" as base64 for a wrong password, which the registries refuse
WRONG_AUTH = "d3Jvbmc6d3Jvbmc="
#: fake credential helpers (``docker-credential-NAME``, run with ``get`` and the server address on
#: stdin), as the docker-credential-helpers programs answer: ``login`` keeps USER / PASSWORD for
#: that address only, ``token`` an identity token, ``none`` nothing
HELPERS = {
    "login": f"""[ "$(cat)" = "$HOST" ] || {{ echo "credentials not found in native keychain"; exit 1; }}
echo '{{"ServerURL": "'$HOST'", "Username": "{USER}", "Secret": "{PASSWORD}"}}'""",
    "token": """cat >/dev/null; echo '{"Username": "<token>", "Secret": "refresh-token"}'""",
    "none": """cat >/dev/null; echo "credentials not found in native keychain"; exit 1""",
    "locked-stdout": """cat >/dev/null; echo "the keychain is locked"; exit 1""",
    "locked-stderr": """cat >/dev/null; echo "the keychain is locked" >&2; exit 3""",
    "garbage": """cat >/dev/null; echo '{"Username": 5}'""",
}


@pytest.fixture
def credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth_registry: RunningRegistry) -> None:
    """The ``HELPERS`` as shell scripts on PATH, for ``auth_registry`` ($HOST)."""
    folder = tmp_path / "helpers"
    folder.mkdir()
    for name, script in HELPERS.items():
        helper = folder / f"docker-credential-{name}"
        helper.write_text(f"#!/bin/sh\n{script}\n")
        helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HOST", auth_registry.host)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"auths":\n', "not JSON"),
        ("[]", "(top level)"),
        ('{"auths": {"HOST": "str"}}', "auths.HOST"),
        ('{"auths": {"HOST": {"auth": 5}}}', "auths.HOST.auth: a string expected, not a number"),
        ('{"Auths": {"HOST": {"Auth": true}}}', "Auths.HOST.Auth: a string expected, not a boolean"),
        ('{"credsStore": 5, "credsStore": "login"}', "credsStore: a string expected, not a number"),
        ('{"auths": {"HOST": {"auth": "ci:s3cret"}}}', "auths.HOST.auth: not base64"),
        ('{"auths": {"HOST": {"auth": "Y2k6czNjcmU"}}}', "auths.HOST.auth: not base64"),
        ('{"auths": {"HOST": {"auth": "bm8tY29sb24="}}}', "auths.HOST.auth: not base64 of user:password"),
        ('{"auths": {"HOST": {"auth": "OnMzY3JldA=="}}}', "auths.HOST.auth: not base64 of user:password"),
        ('{"auths": {"HOST": {"auth": "LOGIN"}, "other.example": {"auth": "x"}}}', "auths.other.example.auth"),
        ('{"auths": {}, "x": NaN}', "'NaN' is not JSON"),
    ],
    ids=[
        "truncated",
        "a-list",
        "auths-of-the-wrong-shape",
        "auth-of-the-wrong-type",
        "folded-keys-of-the-wrong-type",
        "a-wrong-type-given-again",
        "auth-in-plain-text",
        "auth-unpadded",
        "auth-without-colon",
        "auth-without-user",
        "another-host-s-auth",
        "nan-which-go-refuses",
    ],
)
def test_a_broken_docker_config_is_a_usage_error_unless_the_environment_logs_in(
    auth_registry: RunningRegistry,
    engines: dict[str, Path],
    tmp_path: Path,
    no_login: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    text: str,
    why: str,
) -> None:
    """What docker itself would refuse. Before: exit 6, blaming the registry ("failed while
    connecting: Expecting value ...", "an answer of the wrong shape ... is it an OCI registry?"),
    even with the credentials in the environment; an ``auth`` that is not base64 ``user:password``
    was sent as it was (docker: "invalid auth configuration file"), and a value of the wrong type
    given again, or under a key of another case, was not seen."""
    repository = auth_registry.uri(f"tests/broken-docker-config-{request.node.callspec.id}")
    (no_login / "config.json").write_text(text.replace("HOST", auth_registry.host).replace("LOGIN", inline_auth()))
    pull = ("pull", repository, "--name", "digits-cnn", "--cc", "8.6", "--insecure", "--out", tmp_path / "pulled")
    code, _, err = cli("publish", str(engines["8.6"]), "--to", repository, "--insecure")
    assert code == 2 and f"{no_login / 'config.json'} is not a docker config" in one_line(err), err
    assert why.replace("HOST", auth_registry.host) in err and "TRTFORGE_REGISTRY_USERNAME" in err
    monkeypatch.setenv("TRTFORGE_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("TRTFORGE_REGISTRY_PASSWORD", PASSWORD)
    code, _, err = cli("publish", str(engines["8.6"]), "--to", repository, "--insecure")
    assert code == 0, err
    code, _, err = cli(*pull)
    assert code == 0, err


@pytest.mark.parametrize(
    ("text", "logged_in"),
    [
        ("", False),
        (" \n\t\r\n", False),
        ("null", False),
        ('{"auths": null, "credsStore": null, "credHelpers": null}', False),
        ('{"auths": {"HOST": null}, "credHelpers": {"HOST": null}}', False),
        ('{"auths": {"HOST": {"auth": "d3Jvbmc6d3Jvbmc="}}, "auths": {"HOST": {"auth": "LOGIN"}}}', True),
        ('{"auths": {"HOST": {"auth": "LOGIN"}}}\n{"auths": {', True),
        ('{"auths": {"HOST": {"auth": "LOGIN"}}, "credHelpers": {"HOST": null}, "credsStore": null}', True),
        ('{"Auths": {"HOST": {"Auth": "LOGIN"}}}', True),
        ('{"auths": {"HOST": {"auth": "WRONG", "AUTH": "LOGIN"}}}', True),
        ('{"auths": {"HOST": {"AUTH": "LOGIN", "auth": ""}}}', False),
        ('{"auth\u017f": {"HOST": {"auth": "LOGIN"}}}', True),
        ('{"auths": {"HOST": {"auth": "LOGIN"}}, "AUTHS": {"other.example": {}}}', True),
        ('{"auths": {"HOST": {"auth": "LOGIN"}}, "auths": {"other.example": {}}}', True),
        ('{"auths": {"HOST": {"auth": "LOGIN"}}, "AUTHS": null}', False),
        ('{"CREDSSTORE": "login"}', True),
        ('{"credhelpers": {"HOST": "login"}}', True),
        ('{"credsStore": "login", "credsStore": null}', True),
        ('{"auths": {"HOST": {"auth": "LOGIN_WITH_LINE_BREAKS"}}}', True),
        ('{"auths": {"HOST": {"auth": "LOGIN_WITH_NULS"}}}', True),
        ('{"auths": {"HOST": {"Username": "USER", "password": "PASSWORD"}}}', True),
        ('{"auths": {"HOST": {"auth": "LOGIN", "username": "USER", "password": "wrong"}}}', True),
    ],
    ids=[
        "empty",
        "whitespace",
        "null",
        "nulls",
        "null-entries",
        "duplicate-keys",
        "trailing-data",
        "null-helper",
        "keys-of-any-case",
        "last-spelling-wins",
        "last-spelling-wins-either-way",
        "long-s-folds-to-s",
        "a-map-given-again-adds-to-it",
        "a-map-given-again-in-its-case-too",
        "null-empties-a-map",
        "credsstore-of-any-case",
        "credhelpers-of-any-case",
        "null-leaves-a-string",
        "auth-with-line-breaks",
        "password-with-nuls",
        "username-and-password-as-they-are",
        "auth-before-username-and-password",
    ],
)
def test_the_docker_config_is_read_as_docker_reads_it(
    auth_registry: RunningRegistry,
    engines: dict[str, Path],
    no_login: Path,
    credential_helpers: None,
    request: pytest.FixtureRequest,
    text: str,
    logged_in: bool,
) -> None:
    """Go's json.Decoder, as docker's LoadFromReader uses it: empty is no config, null is absent, a
    key given twice keeps its last value, what follows the object is ignored; a key names its field
    in any case (Go's folding), the last key naming it wins, a map given again is added to, null
    leaves a string as it was; an ``auth`` is base64 with line breaks skipped, NULs around the
    password dropped, and without one ``username`` and ``password`` are used as they are (LOGIN: the
    account's inline auth; ``login``: a credential helper keeping it).
    Before: exit 2, "is not a docker config"; then keys were matched in their case only, a later
    map replaced an earlier one, null removed a string, and an ``auth`` was sent as it was."""
    login = inline_auth()
    text = (
        text.replace("HOST", auth_registry.host)
        .replace("LOGIN_WITH_LINE_BREAKS", "\\n".join([login[:4], login[4:], ""]))
        .replace("LOGIN_WITH_NULS", base64.b64encode(f"{USER}:\0{PASSWORD}\0\0".encode()).decode())
        .replace("LOGIN", login)
        .replace("WRONG", WRONG_AUTH)
        .replace('"USER"', json.dumps(USER))
        .replace('"PASSWORD"', json.dumps(PASSWORD))
    )
    (no_login / "config.json").write_text(text)
    repository = auth_registry.uri(f"tests/docker-reads-{request.node.callspec.id}")
    code, _, err = cli("publish", str(engines["8.6"]), "--to", repository, "--insecure")
    if logged_in:
        assert code == 0, err
    else:
        assert code == 6 and "asks for a user name and password and none is configured" in one_line(err), err


@pytest.mark.parametrize("broken", ["truncated", "a-folder"])
def test_a_registry_that_needs_no_login_never_reads_the_docker_config(
    oci_registry: RunningRegistry,
    auth_registry: RunningRegistry,
    engines: dict[str, Path],
    tmp_path: Path,
    no_login: Path,
    broken: str,
) -> None:
    """Credentials are looked up when a registry asks for them. Before: exit 2 on an open registry
    too, for a config no login needed."""
    config = no_login / "config.json"
    if broken == "a-folder":
        config.mkdir()
    else:
        config.write_text('{"auths":\n')
    repository = oci_registry.uri(f"tests/no-login-{broken}")
    code, _, err = cli("publish", str(engines["8.6"]), "--to", repository, "--insecure")
    assert code == 0, err
    out = tmp_path / "pulled"
    code, _, err = cli("pull", repository, "--name", "digits-cnn", "--cc", "8.6", "--insecure", "--out", str(out))
    assert code == 0, err
    code, _, err = cli("publish", str(engines["8.6"]), "--to", auth_registry.uri("tests/no-login"), "--insecure")
    assert code == 2 and str(config) in one_line(err), err


class _AnonymousTokenRegistry(BaseHTTPRequestHandler):
    """A token registry as public images are served (ghcr.io, Docker Hub): every first request is
    a 401 Bearer challenge, and the token service grants pulls anonymously ("anon"), or nothing
    (``GRANTS = False``)."""

    GRANTS = True

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(code)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        json_type = {"Content-Type": "application/json"}
        if self.path.startswith("/token"):
            if self.GRANTS:
                self._send(200, b'{"token": "anon"}', json_type)
            else:
                self._send(401, b'{"errors": [{"code": "UNAUTHORIZED", "message": "log in"}]}', json_type)
        elif self.headers.get("Authorization") == "Bearer anon":
            self._send(200, b'{"name": "tests/x", "tags": ["t1"]}', json_type)
        else:
            realm = f'Bearer realm="http://{self.headers["Host"]}/token",service="fake",scope="repository:tests/x:pull"'
            self._send(
                401,
                b'{"errors": [{"code": "UNAUTHORIZED", "message": "auth"}]}',
                {**json_type, "Www-Authenticate": realm},
            )


@pytest.mark.parametrize("grants", [True, False], ids=["anonymous-granted", "login-needed"])
@pytest.mark.parametrize(
    ("broken", "why"),
    [('{"auths":\n', "is not a docker config"), ('{"credsStore": "locked-stdout"}', "the keychain is locked")],
    ids=["config", "helper"],
)
def test_a_broken_docker_config_does_not_stop_an_anonymous_token_pull(
    no_login: Path, credential_helpers: None, grants: bool, broken: str, why: str
) -> None:
    """A token registry asks every first request (401 Bearer) though it grants public pulls to
    anyone: the broken config was read first, exit 2. Now the anonymous token is tried, and the
    config's error (or its credential helper's) is said only where the registry still refuses."""
    (no_login / "config.json").write_text(broken)
    handler = type("Handler", (_AnonymousTokenRegistry,), {"GRANTS": grants})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        registry = open_registry(parse_location(f"oci://127.0.0.1:{server.server_address[1]}/tests/x"), insecure=True)
        if grants:
            assert registry._tags() == ["t1"]
        else:
            with pytest.raises(InvalidInputError, match=why):
                registry._tags()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("key", ["https://HOST", "http://HOST/", "https://HOST/v2/", "LOCALHOST"])
def test_auths_keys_name_their_host_as_for_docker(
    auth_registry: RunningRegistry, engines: dict[str, Path], no_login: Path, key: str
) -> None:
    """docker's ConvertToHostname: a key's http(s) scheme and path are not part of the host.
    Before: "asks for a user name and password and none is configured"."""
    # LOCALHOST: a login under localhost:PORT serves 127.0.0.1:PORT, as oras read logins (docker does not)
    docker_login(
        no_login,
        key.replace("LOCALHOST", auth_registry.host.replace("127.0.0.1", "localhost")).replace(
            "HOST", auth_registry.host
        ),
    )
    code, _, err = cli("publish", str(engines["8.6"]), "--to", auth_registry.uri("tests/keys"), "--insecure")
    assert code == 0, err


@pytest.mark.parametrize("field", ["identitytoken", "IdentityToken"])
def test_an_identity_token_alone_is_named_as_unusable(
    auth_registry: RunningRegistry, engines: dict[str, Path], no_login: Path, field: str
) -> None:
    """What a token-service login leaves (az acr login, docker login to a registry that issues
    refresh tokens), its field in any case as Go reads it. Before: "none is configured"."""
    docker_login(no_login, f"https://{auth_registry.host}/", {field: "refresh-token"})
    code, _, err = cli("publish", str(engines["8.6"]), "--to", auth_registry.uri("tests/keys"), "--insecure")
    assert code == 6 and f"{no_login / 'config.json'} holds only an identity token" in one_line(err), err
    assert "none is configured" not in err and "TRTFORGE_REGISTRY_USERNAME" in err


@pytest.mark.parametrize(
    ("config", "logged_in"),
    [
        ({"auths": {"HOST": {"auth": "WRONG"}}, "credsStore": "login"}, True),
        ({"auths": {"HOST": {"auth": "WRONG"}}, "credsStore": "none", "credHelpers": {"HOST": "login"}}, True),
        ({"auths": {"HOST": {"auth": "LOGIN"}}, "credsStore": "none"}, False),
        ({"auths": {"HOST": {"auth": "LOGIN"}}, "credsStore": "locked-stdout", "credHelpers": {"HOST": ""}}, True),
        ({"auths": {"HOST": {"identitytoken": "refresh-token"}}, "credsStore": "login"}, True),
    ],
    ids=["creds-store", "own-helper", "helper-keeps-none", "own-helper-switched-off", "file-token-ignored"],
)
def test_a_credential_helper_comes_before_the_config_s_own_auth(
    auth_registry: RunningRegistry,
    engines: dict[str, Path],
    no_login: Path,
    credential_helpers: None,
    request: pytest.FixtureRequest,
    config: dict,
    logged_in: bool,
) -> None:
    """docker's GetAuthConfig: credHelpers[host], else credsStore, and only without either the
    ``auths`` entry (a helper that keeps nothing is no login, whatever the entry says; ``""`` as
    the host's own helper means none). Before: the inline ``auth`` first, as oras reads it (a
    stale one, left from before a credential store, was sent and refused: HTTP 401)."""
    text = json.dumps(config).replace("HOST", auth_registry.host)
    (no_login / "config.json").write_text(text.replace("WRONG", WRONG_AUTH).replace("LOGIN", inline_auth()))
    repository = auth_registry.uri(f"tests/helper-first-{request.node.callspec.id}")
    code, _, err = cli("publish", str(engines["8.6"]), "--to", repository, "--insecure")
    if logged_in:
        assert code == 0, err
    else:
        assert code == 6 and "asks for a user name and password and none is configured" in one_line(err), err


@pytest.mark.parametrize(
    ("helper", "says"),
    [
        ("locked-stdout", "failed (exit 1: the keychain is locked)"),
        ("locked-stderr", "failed (exit 3: the keychain is locked)"),
        ("absent", "is not on PATH: install it, or take it out of"),
        ("garbage", "answered what is not a docker credential (Username: a string expected, not a number)"),
        ("token", "the credential helper docker-credential-token holds only an identity token"),
    ],
)
def test_a_failing_credential_helper_is_one_line_that_says_why_once(
    auth_registry: RunningRegistry,
    engines: dict[str, Path],
    no_login: Path,
    credential_helpers: None,
    helper: str,
    says: str,
) -> None:
    """What the helper says (on stdout as docker-credential-helpers do, else on stderr), once, in
    trtforge's one line naming the helper and the config. Before: oras's own line ("Credential
    helper 'docker-credential-x' failed: ...", empty for a helper that says it on stdout), then
    "none is configured", exit 6."""
    (no_login / "config.json").write_text(json.dumps({"credsStore": helper}))
    code, _, err = cli("publish", str(engines["8.6"]), "--to", auth_registry.uri("tests/helpers"), "--insecure")
    assert says in one_line(err), err
    if helper == "token":
        assert code == 6 and "TRTFORGE_REGISTRY_USERNAME" in err
        return
    assert code == 2 and f"docker-credential-{helper} that {no_login / 'config.json'} names for" in err
    assert err.count(says) == 1 and "TRTFORGE_REGISTRY_USERNAME" in err


def test_docker_hub_logins_are_found_under_docker_s_key() -> None:
    """``docker login`` files Docker Hub's login under https://index.docker.io/v1/, for each of its names."""
    from trtforge.publish.docker_auth import DockerConfig, docker_key

    config = DockerConfig.model_validate({"auths": {"https://index.docker.io/v1/": {"auth": inline_auth()}}})
    for host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert config.entry(docker_key(host)).auth == inline_auth()
    assert config.entry(docker_key("ghcr.io")).auth is None


def test_docker_config_is_the_one_docker_reads(
    auth_registry: RunningRegistry,
    engines: dict[str, Path],
    tmp_path: Path,
    no_login: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """$DOCKER_CONFIG replaces ~/.docker, as for docker: a broken ~/.docker/config.json is not read
    then (oras read both), and is named when it is the one in use."""
    home_config = tmp_path / "home" / ".docker" / "config.json"
    home_config.parent.mkdir(parents=True)
    home_config.write_text("{")
    docker_login(no_login, auth_registry.host)
    repository = auth_registry.uri("tests/docker-config")
    assert cli("publish", str(engines["8.6"]), "--to", repository, "--insecure")[0] == 0
    monkeypatch.delenv("DOCKER_CONFIG")
    code, _, err = cli("publish", str(engines["8.6"]), "--to", repository, "--insecure")
    assert code == 2 and f"{home_config} is not a docker config" in one_line(err)
