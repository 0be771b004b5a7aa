"""A rerun of ``publish --json`` says what the first run said: "unchanged" carries the fields of
"published" on every registry (``oci://`` its ``digest`` above all, which CI steps pin), with the
values of what the registry holds. Real engines, a real registry on 127.0.0.1, real folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests
from clitools import cli
from models import need_rtx
from registry import RunningRegistry, build_engine

from trtforge.manifest import manifest_path_for, read_manifest
from trtforge.publish import load_local_artifact, open_registry, parse_location
from trtforge.publish.oci import OCI_MANIFEST_MEDIA_TYPE, OciRegistry

need_rtx()

#: what differs between a push and its rerun by design: what happened, and the sentence saying so
_OF_THE_RUN = ("status", "detail")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engine(tmp_path_factory.mktemp("rerun-engine"), targets=["8.6"])


def publish_json(engine: Path, uri: str, *flags: str) -> dict[str, Any]:
    code, out, err = cli("publish", str(engine), "--to", uri, *flags, "--json")
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


def held_digest(registry: RunningRegistry, uri: str, tag: str) -> str:
    """The digest the registry itself gives for the image manifest under ``tag``."""
    repository = uri.removeprefix(f"oci://{registry.host}/")
    response = requests.head(
        f"http://{registry.host}/v2/{repository}/manifests/{tag}",
        headers={"Accept": OCI_MANIFEST_MEDIA_TYPE},
        timeout=10,
    )
    response.raise_for_status()
    return str(response.headers["Docker-Content-Digest"])


@pytest.mark.parametrize("scheme", ["dir", "oci", "triton"])
def test_a_rerun_reports_the_fields_and_values_of_the_first_publish(
    engine: Path, oci_registry: RunningRegistry, tmp_path: Path, scheme: str
) -> None:
    if scheme == "oci":
        uri, flags = oci_registry.uri(f"tests/rerun-{tmp_path.name.lower().replace('_', '-')}"), ("--insecure",)
    else:
        uri, flags = f"{scheme}://{tmp_path / 'registry'}", ()
    first = publish_json(engine, uri, *flags)
    second = publish_json(engine, uri, *flags)
    assert (first["status"], second["status"]) == ("published", "unchanged")
    assert "nothing to do" in second["detail"]
    assert sorted(second) == sorted(first)
    assert {k: v for k, v in second.items() if k not in _OF_THE_RUN} == {
        k: v for k, v in first.items() if k not in _OF_THE_RUN
    }
    if scheme == "oci":
        stem = read_manifest(engine).stem
        assert first["oci_tag"] == second["oci_tag"] == stem
        assert first["digest"] == second["digest"] == held_digest(oci_registry, uri, stem)
    if scheme == "triton":
        assert second["version"] == 1 and Path(second["config"]).is_file()


def test_a_kept_manifest_reports_the_digest_the_registry_holds(
    engine: Path, oci_registry: RunningRegistry, tmp_path: Path
) -> None:
    """A manifest signed since is kept (no --force): the rerun's digest is the registry's, the one
    the first push printed, not the digest the local manifest would have given."""
    local = tmp_path / "local" / engine.name
    local.parent.mkdir()
    shutil.copy2(engine, local)
    shutil.copy2(manifest_path_for(engine), manifest_path_for(local))
    uri = oci_registry.uri("tests/rerun-kept-manifest")
    first = publish_json(local, uri, "--insecure")
    assert cli("keygen", str(tmp_path / "key"))[0] == 0
    assert cli("sign", str(local), "--key", str(tmp_path / "key"))[0] == 0
    kept = publish_json(local, uri, "--insecure")
    assert kept["status"] == "unchanged" and "--force" in kept["detail"]
    assert kept["digest"] == first["digest"] == held_digest(oci_registry, uri, first["oci_tag"])
    replaced = publish_json(local, uri, "--insecure", "--force")
    assert replaced["status"] == "replaced" and replaced["digest"] != first["digest"]
    assert replaced["digest"] == held_digest(oci_registry, uri, first["oci_tag"])


def test_a_build_cache_entry_kept_reports_its_digest(engine: Path, oci_registry: RunningRegistry) -> None:
    """``ci``'s push onto a tag another runner filled keeps that entry and names its digest."""
    registry = open_registry(parse_location(oci_registry.uri("tests/rerun-build-cache")), insecure=True)
    assert isinstance(registry, OciRegistry)
    artifact = load_local_artifact(engine)
    stored = registry.store_build(artifact, "cache-entry", {"dev.trtforge.test.runner": "a"})
    kept = registry.store_build(artifact, "cache-entry", {"dev.trtforge.test.runner": "b"})
    assert (stored.status, kept.status) == ("published", "unchanged")
    assert kept.extra == stored.extra == {"digest": registry.manifest_digest("cache-entry"), "oci_tag": "cache-entry"}
