"""The accuracy report travels with its artifact: a gated build published to oci:// (a third
layer) or dir:// (the file beside the engine) and pulled back, against the real registry on
127.0.0.1; a report its manifest does not describe neither goes up nor comes down."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import requests
from clitools import cli
from models import need_rtx
from registry import RunningRegistry, build_engine, put_manifest

from trtforge.manifest import (
    REPORT_SHA256,
    SKIPPED_ACCURACY,
    attestation_path,
    manifest_path_for,
    read_manifest,
    report_path,
)
from trtforge.publish import OciLocation, load_local_artifact, open_registry, parse_location
from trtforge.publish.base import report_problem
from trtforge.publish.oci import OCI_MANIFEST_MEDIA_TYPE, REPORT_MEDIA_TYPE, TITLE

need_rtx()

MANIFEST = {"Accept": OCI_MANIFEST_MEDIA_TYPE}


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An fp16 digits engine whose gate ran (simulated candidate, seeded random data)."""
    return build_engine(tmp_path_factory.mktemp("gated"), precision="fp16", gate=True)


@pytest.fixture
def repository(oci_registry: RunningRegistry, request: pytest.FixtureRequest) -> str:
    return oci_registry.uri(f"tests/report-{request.node.name.lower().replace('_', '-')}")


def report_of(engine: Path) -> Path:
    return report_path(engine.parent, read_manifest(engine).stem)


def copy_artifact(engine: Path, folder: Path) -> Path:
    """The engine, manifest and report in a folder of their own (to edit one of them)."""
    folder.mkdir(parents=True)
    for path in (engine, manifest_path_for(engine), report_of(engine)):
        shutil.copy2(path, folder / path.name)
    return folder / engine.name


def edited(report: bytes) -> bytes:
    """The report with another verdict: what its manifest's summary no longer describes."""
    document = json.loads(report)
    document["outputs"][0]["metrics"]["cosine"] = 0.5
    return (json.dumps(document, indent=2) + "\n").encode()


def loosened(report: bytes) -> bytes:
    """The report with its first check's limit loosened: nothing the summary carries changes."""
    document = json.loads(report)
    document["outputs"][0]["checks"][0]["limit"] = 1e9
    return (json.dumps(document, indent=2) + "\n").encode()


def image(oci_registry: RunningRegistry, uri: str, tag: str) -> dict:
    repo = uri.removeprefix(f"oci://{oci_registry.host}/")
    response = requests.get(f"http://{oci_registry.host}/v2/{repo}/manifests/{tag}", headers=MANIFEST, timeout=10)
    response.raise_for_status()
    return response.json()


def pull(uri: str, out: Path, *extra: str) -> tuple[int, dict, str]:
    code, stdout, err = cli(
        "pull", uri, "--name", "digits-cnn", "--cc", "8.6", "--out", out, "--json", *extra, *_insecure(uri)
    )
    return code, json.loads(stdout) if stdout.strip() else {}, err


def _insecure(uri: str) -> tuple[str, ...]:
    return ("--insecure",) if uri.startswith("oci://") else ()


def test_the_report_rule_is_the_manifests_summary(gated: Path) -> None:
    manifest = read_manifest(gated)
    report = report_of(gated).read_bytes()
    assert report_problem(manifest, report) is None
    assert "does not describe it" in (report_problem(manifest, edited(report)) or "")
    other = json.loads(report) | {"stem": "digits-cnn-fp16-other"}
    assert "the report of 'digits-cnn-fp16-other'" in (report_problem(manifest, json.dumps(other).encode()) or "")
    assert "not an accuracy report" in (report_problem(manifest, b"[" * 100_000) or "")
    assert "not an accuracy report" in (report_problem(manifest, b'{"schema": "x"}') or "")
    skipped = manifest.replace(accuracy=dict(SKIPPED_ACCURACY))
    assert "does not describe it" in (report_problem(skipped, report) or "")


def test_the_manifest_pins_every_byte_of_the_report_and_an_older_one_its_summary(gated: Path) -> None:
    """An edit the summary does not show (a check's limit loosened) is caught by the report's
    sha256 in the summary; a manifest from before that pin (no ``report_sha256``) still takes
    the report it describes, and cannot see that edit."""
    manifest = read_manifest(gated)
    report = report_of(gated).read_bytes()
    assert manifest.accuracy is not None
    assert manifest.accuracy[REPORT_SHA256] == hashlib.sha256(report).hexdigest()
    assert "edited since" in (report_problem(manifest, loosened(report)) or "")
    older = manifest.replace(accuracy={k: v for k, v in manifest.accuracy.items() if k != REPORT_SHA256})
    assert report_problem(older, report) is None
    assert report_problem(older, loosened(report)) is None
    assert "does not describe it" in (report_problem(older, edited(report)) or "")


def test_the_report_goes_up_as_a_third_layer_and_comes_back_byte_identical(
    oci_registry: RunningRegistry, repository: str, gated: Path, tmp_path: Path
) -> None:
    report = report_of(gated)
    code, stdout, err = cli("publish", gated, "--to", repository, "--insecure", "--json")
    assert code == 0, err
    assert json.loads(stdout)["warnings"] == []
    layers = image(oci_registry, repository, read_manifest(gated).stem)["layers"]
    assert len(layers) == 3
    assert layers[2]["mediaType"] == REPORT_MEDIA_TYPE == "application/vnd.trtforge.accuracy.v1+json"
    assert layers[2]["annotations"][TITLE] == report.name
    assert layers[2]["size"] == report.stat().st_size

    out = tmp_path / "pulled"
    code, document, err = pull(repository, out)
    assert code == 0, err
    assert document["status"] == "pulled" and document["warnings"] == []
    assert Path(document["report"]) == out / report.name
    assert (out / report.name).read_bytes() == report.read_bytes()
    assert (out / gated.name).read_bytes() == gated.read_bytes()
    assert pull(repository, out)[1]["status"] == "unchanged"
    (out / report.name).unlink()  # a report missing here: pulling again brings it back
    code, document, err = pull(repository, out)
    assert code == 0 and document["status"] == "pulled", err
    assert (out / report.name).read_bytes() == report.read_bytes()


def test_a_stale_report_is_not_pushed_and_the_real_one_needs_force(
    oci_registry: RunningRegistry, repository: str, gated: Path, tmp_path: Path
) -> None:
    stale = copy_artifact(gated, tmp_path / "stale")
    report = report_of(stale)
    report.write_bytes(edited(report.read_bytes()))
    code, stdout, err = cli("publish", stale, "--to", repository, "--insecure", "--json")
    assert code == 0, err
    (warning,) = json.loads(stdout)["warnings"]
    assert warning.startswith(f"{report.name} is not published: the manifest's accuracy summary does not describe it")
    assert warning.endswith("the engine and manifest are published without it") and warning in err
    stem = read_manifest(gated).stem
    assert [layer["mediaType"] for layer in image(oci_registry, repository, stem)["layers"]][2:] == []
    code, document, err = pull(repository, tmp_path / "pulled")
    assert code == 0 and document["report"] is None, err
    assert not (tmp_path / "pulled" / report.name).exists()

    # the same engine and manifest with their report: kept as it is unless --force, as a changed manifest
    code, stdout, err = cli("publish", gated, "--to", repository, "--insecure", "--json")
    assert code == 0 and json.loads(stdout)["status"] == "unchanged", err
    assert "without its accuracy report: kept; pass --force" in json.loads(stdout)["detail"]
    code, stdout, err = cli("publish", gated, "--to", repository, "--insecure", "--force", "--json")
    assert code == 0 and json.loads(stdout)["status"] == "replaced", err
    assert "accuracy report replaced (--force)" in json.loads(stdout)["detail"]
    assert len(image(oci_registry, repository, stem)["layers"]) == 3


def test_a_report_layer_edited_in_the_registry_is_skipped_on_pull(repository: str, gated: Path, tmp_path: Path) -> None:
    """The registry holds a report blob the manifest's summary does not describe (pushed past
    publish's own check): the engine and manifest are pulled, the report skipped with a warning."""
    location = parse_location(repository)
    assert isinstance(location, OciLocation)
    artifact = load_local_artifact(gated)
    assert artifact.report is not None
    hostile = dataclasses.replace(artifact, report=edited(artifact.report))
    assert open_registry(location, insecure=True).push(hostile, artifact.manifest.stem).status == "published"
    out = tmp_path / "pulled"
    code, document, err = pull(repository, out)
    assert code == 0, err
    assert document["status"] == "pulled" and document["report"] is None
    (warning,) = document["warnings"]
    assert "its accuracy report is skipped: the manifest's accuracy summary does not describe it" in warning
    assert warning in err
    assert sorted(path.name for path in out.iterdir() if not path.name.startswith(".")) == sorted(
        [gated.name, manifest_path_for(gated).name]
    )
    assert (out / gated.name).read_bytes() == gated.read_bytes()


def test_a_report_layer_titled_as_a_path_is_refused(
    oci_registry: RunningRegistry, repository: str, gated: Path, tmp_path: Path
) -> None:
    assert cli("publish", gated, "--to", repository, "--insecure")[0] == 0
    stem = read_manifest(gated).stem
    document = image(oci_registry, repository, stem)
    document["layers"][2]["annotations"][TITLE] = "../../x.accuracy.json"
    put_manifest(repository, stem, document, OCI_MANIFEST_MEDIA_TYPE)
    out = tmp_path / "deep" / "out"
    code, _, err = pull(repository, out)
    assert code == 5, err
    assert "titled '../../x.accuracy.json'" in err and "refused" in err
    assert not out.exists() and not list(tmp_path.rglob("x.accuracy.json"))


def test_a_report_layer_declared_over_the_bound_is_never_read(
    oci_registry: RunningRegistry, repository: str, gated: Path, tmp_path: Path
) -> None:
    """A layer read whole is bounded by its declared size, which the bound (MAX_REPORT_BYTES) caps
    first: a registry declaring gigabytes never makes trtforge read them into memory."""
    from trtforge.manifest import MAX_REPORT_BYTES

    assert cli("publish", gated, "--to", repository, "--insecure")[0] == 0
    stem = read_manifest(gated).stem
    document = image(oci_registry, repository, stem)
    document["layers"][2]["size"] = MAX_REPORT_BYTES + 1
    put_manifest(repository, stem, document, OCI_MANIFEST_MEDIA_TYPE)
    out = tmp_path / "out"
    code, pulled, err = pull(repository, out)
    assert code == 0 and pulled["report"] is None, err
    (warning,) = pulled["warnings"]
    assert f"its accuracy report layer is {MAX_REPORT_BYTES + 1:,} bytes, not a trtforge accuracy report" in warning
    assert not (out / report_of(gated).name).exists()


def test_dir_registry_keeps_the_report_beside_the_engine(gated: Path, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    report = report_of(gated)
    code, stdout, err = cli("publish", gated, "--to", f"dir://{registry}", "--json")
    assert code == 0 and json.loads(stdout)["warnings"] == [], err
    assert (registry / report.name).read_bytes() == report.read_bytes()
    code, document, err = pull(f"dir://{registry}", tmp_path / "pulled")
    assert code == 0 and document["warnings"] == [], err
    assert (tmp_path / "pulled" / report.name).read_bytes() == report.read_bytes()

    # a stale report beside the same engine: not published; --force leaves the registry without one
    stale = copy_artifact(gated, tmp_path / "stale")
    report_of(stale).write_bytes(edited(report.read_bytes()))
    code, stdout, err = cli("publish", stale, "--to", f"dir://{registry}", "--force", "--json")
    assert code == 0, err
    assert json.loads(stdout)["status"] == "replaced"
    assert json.loads(stdout)["warnings"][0].startswith(f"{report.name} is not published")
    assert not (registry / report.name).exists()
    # a report edited in the registry is skipped on pull
    (registry / report.name).write_bytes(edited(report.read_bytes()))
    code, document, err = pull(f"dir://{registry}", tmp_path / "again")
    assert code == 0 and document["report"] is None, err
    assert "its accuracy report is skipped" in document["warnings"][0]
    assert not (tmp_path / "again" / report.name).exists()


def test_a_report_layer_damaged_in_the_registry_is_skipped_on_pull(
    oci_registry: RunningRegistry, repository: str, gated: Path, tmp_path: Path
) -> None:
    """Bytes that are not the ones the layer's digest names: skipped, the engine still pulled."""
    location = parse_location(repository)
    assert isinstance(location, OciLocation)
    artifact = load_local_artifact(gated)
    assert artifact.report is not None
    # a blob of its own (the registry shares blobs between repositories): ``seconds`` is not
    # summarized, and a manifest that pins these bytes describes it
    document = json.loads(artifact.report) | {"seconds": 4321.5}
    report = (json.dumps(document, indent=2) + "\n").encode()
    assert artifact.manifest.accuracy is not None
    manifest = artifact.manifest.replace(
        accuracy=artifact.manifest.accuracy | {REPORT_SHA256: hashlib.sha256(report).hexdigest()}
    )
    own = copy_artifact(gated, tmp_path / "own")
    manifest_path_for(own).write_text(manifest.to_json(), encoding="utf-8")
    report_of(own).write_bytes(report)
    own_artifact = load_local_artifact(own)
    assert own_artifact.report == report and own_artifact.report_warning is None
    registry = open_registry(location, insecure=True)
    assert registry.push(own_artifact, artifact.manifest.stem).status == "published"
    layer = image(oci_registry, repository, artifact.manifest.stem)["layers"][2]
    blob = oci_registry.blob(layer["digest"])
    blob.write_bytes(blob.read_bytes().replace(b"4321.5", b"4321.6"))
    out = tmp_path / "pulled"
    code, document, err = pull(repository, out)
    assert code == 0 and document["status"] == "pulled" and document["report"] is None, err
    (warning,) = document["warnings"]
    assert "its accuracy report layer does not match its digest (damaged in the registry)" in warning
    assert (out / gated.name).read_bytes() == gated.read_bytes() and not (out / artifact.report_name).exists()


def test_a_forced_report_change_keeps_the_attestation_of_the_same_engine_and_manifest(
    gated: Path, tmp_path: Path
) -> None:
    """``--force`` around the same engine and manifest replaces the report only. The attestation's
    subjects are the engine and the manifest (``provenance.statement``): still these, so it stays
    (it was removed with the report). One that no longer covers the manifest goes, as with a new engine."""
    from trtforge.signing import generate_keypair

    signed = copy_artifact(gated, tmp_path / "signed")
    pair = generate_keypair(tmp_path / "ci.key")
    assert cli("sign", signed, "--key", pair.private_path, "--attest")[0] == 0
    attestation = attestation_path(signed)
    attested = attestation.read_bytes()
    registry = tmp_path / "registry"  # a registry holding the signed set, attestation included
    shutil.copytree(signed.parent, registry)
    report = report_of(signed)
    report.write_bytes(report.read_bytes() + b" ")  # no longer the report its manifest pins

    for where in (signed.parent, registry):  # the build folder itself, and the registry
        code, stdout, err = cli("publish", signed, "--to", f"dir://{where}", "--force", "--json")
        assert code == 0, err
        document = json.loads(stdout)
        assert document["status"] == "replaced" and "accuracy report replaced" in document["detail"]
        assert (where / attestation.name).read_bytes() == attested
        assert not (where / report.name).exists(), "the report the manifest does not pin is not published"
        code, _, err = cli("verify-provenance", where / signed.name, "--trusted-key", pair.public_path)
        assert code == 0, err

    # another manifest around the same engine (unsigned): the attestation no longer covers it, and goes
    code, stdout, err = cli("publish", gated, "--to", f"dir://{registry}", "--force", "--json")
    assert code == 0 and json.loads(stdout)["status"] == "replaced", err
    assert manifest_path_for(registry / signed.name).read_bytes() == manifest_path_for(gated).read_bytes()
    assert not (registry / attestation.name).exists()
    assert (registry / report.name).read_bytes() == report_of(gated).read_bytes()
