"""oci:// against an independent OCI client: skopeo (containers/image, Go), on the real registry on 127.0.0.1.

What trtforge pushes, skopeo reads as a valid OCI artifact (the manifest trtforge says it pushed,
every blob fetched and its digest checked by skopeo, byte for byte the local files); what skopeo
copies (to another repository, through an OCI layout, to another registry) trtforge pulls intact and
verifies; what skopeo uploads with layers that are not the trtforge manifest's, or that the registry
then serves damaged, trtforge refuses (exit 5, one line, nothing written). Repository names and tags
are drawn by the distribution spec's grammar: what one can address, the other can.

skopeo 1.9 (Debian bookworm) has no referrers API: the attestation is checked through the
referrers tag schema's index and the raw manifests. Tests skip without ``skopeo`` (``apt-get install
-y skopeo``) unless ``TRTFORGE_TEST_REQUIRE`` names ``skopeo``, as CI does (``.ci/run``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from clitools import cli
from hypothesis import given, settings
from hypothesis import strategies as st
from models import need_rtx, skip_or_fail
from registry import RunningRegistry, build_engine, start_registry

from trtforge.manifest import REPORT_SUFFIX, attestation_path, manifest_path_for, read_manifest
from trtforge.provenance import ATTESTATION_MEDIA_TYPE
from trtforge.publish import OciLocation, load_local_artifact
from trtforge.publish.oci import (
    ARTIFACT_TYPE,
    EMPTY_MEDIA_TYPE,
    ENGINE_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    OCI_INDEX_MEDIA_TYPE,
    OCI_MANIFEST_MEDIA_TYPE,
    REPORT_MEDIA_TYPE,
    TITLE,
    OciRegistry,
    fallback_tag,
    image_manifest,
)

need_rtx()

SKOPEO = shutil.which("skopeo")
if SKOPEO is None:
    skip_or_fail(
        "skopeo",
        "skopeo is not installed (apt-get install -y skopeo): the differential OCI tests need it as the oracle",
    )

#: the grammar's tag, ``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`` (distribution spec, "Pulling manifests")
TAG_FIRST = "aZ09_"
TAG_REST = "aZ09_.-"


def skopeo(*args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    """skopeo with plain HTTP towards the registry on 127.0.0.1 (``--tls-verify``, per direction)."""
    done = subprocess.run([str(SKOPEO), *map(str, args)], capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, f"skopeo {' '.join(map(str, args))}: {done.stderr}"
    return done


def copy(source: str, destination: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", *extra, source, destination, check=check)


def raw(reference: str) -> bytes:
    """The manifest bytes as skopeo reads them (``inspect --raw``): what a digest is of."""
    done = subprocess.run(
        [str(SKOPEO), "inspect", "--raw", "--tls-verify=false", reference], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def report_of(engine: Path) -> Path:
    """``x.engine`` -> ``x.accuracy.json`` beside it."""
    return engine.with_name(engine.name.removesuffix(".engine") + REPORT_SUFFIX)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def nothing_written(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One engine for the module: gate run (its accuracy report is the third layer), signed, and
    attested (its attestation is a referrer); the key that signed it."""
    root = tmp_path_factory.mktemp("skopeo-engines")
    engine = build_engine(root / "e", gate=True)
    assert report_of(engine).is_file()
    assert cli("keygen", root / "key")[0] == 0
    code, _, err = cli("sign", engine, "--key", root / "key", "--attest")
    assert code == 0 and attestation_path(engine).is_file(), err
    return {"engine": engine, "key": root / "key"}


@pytest.fixture(scope="module")
def other_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A second registry instance: skopeo uploads every blob to it itself."""
    with start_registry(tmp_path_factory.mktemp("skopeo-registry")) as running:
        yield running


def publish(engine: Path, uri: str) -> dict[str, Any]:
    code, out, err = cli("publish", engine, "--to", uri, "--insecure", "--json")
    assert code == 0, err
    return json.loads(out)


def pull(uri: str, out: Path, key: Path | None = None, *extra: str) -> tuple[int, str, str]:
    signed = ("--require-signature", "--trusted-key", f"{key}.pub") if key else ()
    return cli("pull", uri, "--name", "digits-cnn", "--cc", "8.6", "--insecure", "--out", out, *signed, *extra)


def assert_pulled_intact(engine: Path, out: Path, attestation: bool) -> None:
    """The engine, its manifest and report (and attestation) pulled are the local files, byte for byte."""
    pulled = out / engine.name
    assert pulled.read_bytes() == engine.read_bytes()
    assert manifest_path_for(pulled).read_bytes() == manifest_path_for(engine).read_bytes()
    assert report_of(pulled).read_bytes() == report_of(engine).read_bytes()
    if attestation:
        assert attestation_path(pulled).read_bytes() == attestation_path(engine).read_bytes()


def layout_blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


# ---------------------------------------------------------------- trtforge pushes, skopeo reads


def test_what_trtforge_pushes_is_the_oci_artifact_skopeo_reads(
    built: dict[str, Path], oci_registry: RunningRegistry, tmp_path: Path
) -> None:
    engine = built["engine"]
    repository = "skopeo/reads"
    published = publish(engine, oci_registry.uri(repository))
    stem = read_manifest(engine).stem
    reference = f"docker://{oci_registry.host}/{repository}:{stem}"

    data = raw(reference)
    assert sha256(data) == published["digest"]  # the digest trtforge reports is of the bytes the registry holds
    image = json.loads(data)
    assert image == image_manifest(load_local_artifact(engine))  # the manifest trtforge says it pushes
    assert image["mediaType"] == OCI_MANIFEST_MEDIA_TYPE and image["artifactType"] == ARTIFACT_TYPE
    assert image["config"] == {"mediaType": EMPTY_MEDIA_TYPE, "digest": sha256(b"{}"), "size": 2}
    files = {ENGINE_MEDIA_TYPE: engine, MANIFEST_MEDIA_TYPE: manifest_path_for(engine)}
    files[REPORT_MEDIA_TYPE] = report_of(engine)
    assert [layer["mediaType"] for layer in image["layers"]] == list(files)
    for layer in image["layers"]:
        local = files[layer["mediaType"]]
        assert layer["annotations"] == {TITLE: local.name}
        assert (layer["digest"], layer["size"]) == (sha256(local.read_bytes()), local.stat().st_size)
    assert image["annotations"]["dev.trtforge.signed"] == "true"

    # skopeo fetches every blob and checks each against its digest: into an OCI layout and a dir
    layout = tmp_path / "layout"
    copy(reference, f"oci:{layout}:{stem}")
    [entry] = json.loads((layout / "index.json").read_text())["manifests"]
    assert entry["digest"] == published["digest"] and entry["annotations"]["org.opencontainers.image.ref.name"] == stem
    assert layout_blob(layout, entry["digest"]).read_bytes() == data  # copied as it is, not re-serialized
    for layer in image["layers"]:
        assert layout_blob(layout, layer["digest"]).read_bytes() == files[layer["mediaType"]].read_bytes()
    assert layout_blob(layout, image["config"]["digest"]).read_bytes() == b"{}"
    folder = tmp_path / "dir"
    copy(reference, f"dir:{folder}")
    assert (folder / "manifest.json").read_bytes() == data
    assert (folder / published["sha256"]).read_bytes() == engine.read_bytes()

    # the attestation, through the referrers tag schema (skopeo 1.9 has no referrers API)
    index_bytes = raw(f"docker://{oci_registry.host}/{repository}:{fallback_tag(published['digest'])}")
    index = json.loads(index_bytes)
    assert index["mediaType"] == OCI_INDEX_MEDIA_TYPE
    [listed] = index["manifests"]
    attached = published["attestation"]
    assert listed["digest"] == attached["digest"] and listed["artifactType"] == ATTESTATION_MEDIA_TYPE
    referrer_bytes = raw(f"docker://{oci_registry.host}/{repository}@{attached['digest']}")
    assert sha256(referrer_bytes) == attached["digest"] == listed["digest"] and len(referrer_bytes) == listed["size"]
    referrer = json.loads(referrer_bytes)
    assert referrer["subject"] == {
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "digest": published["digest"],
        "size": len(data),
    }
    envelope_folder = tmp_path / "attestation"
    copy(f"docker://{oci_registry.host}/{repository}@{attached['digest']}", f"dir:{envelope_folder}")
    [layer] = referrer["layers"]
    assert layer["mediaType"] == ATTESTATION_MEDIA_TYPE
    blob = envelope_folder / layer["digest"].removeprefix("sha256:")
    assert blob.read_bytes() == attestation_path(engine).read_bytes()


# ---------------------------------------------------------------- skopeo copies, trtforge pulls


def test_an_artifact_skopeo_copies_is_pulled_intact_and_verified(
    built: dict[str, Path], oci_registry: RunningRegistry, other_registry: RunningRegistry, tmp_path: Path
) -> None:
    """To another repository (``--all``: the referrers index with its entries), and through an OCI
    layout to another registry, where skopeo uploads every blob itself."""
    engine, key = built["engine"], built["key"]
    published = publish(engine, oci_registry.uri("skopeo/source"))
    stem = read_manifest(engine).stem
    source = f"docker://{oci_registry.host}/skopeo/source"
    referrers_tag = fallback_tag(published["digest"])

    copy(f"{source}:{stem}", f"docker://{oci_registry.host}/skopeo/copied:{stem}")
    copy(f"{source}:{referrers_tag}", f"docker://{oci_registry.host}/skopeo/copied:{referrers_tag}", "--all")
    layout = tmp_path / "layout"
    copy(f"{source}:{stem}", f"oci:{layout}:{stem}")
    copy(f"{source}:{referrers_tag}", f"oci:{layout}:{referrers_tag}", "--all")
    copy(f"oci:{layout}:{stem}", f"docker://{other_registry.host}/elsewhere/models:{stem}")
    copy(f"oci:{layout}:{referrers_tag}", f"docker://{other_registry.host}/elsewhere/models:{referrers_tag}", "--all")

    for index, uri in enumerate((oci_registry.uri("skopeo/copied"), other_registry.uri("elsewhere/models"))):
        host_repository = uri.removeprefix("oci://")
        assert sha256(raw(f"docker://{host_repository}:{stem}")) == published["digest"]  # skopeo keeps the bytes
        out = tmp_path / f"pulled-{index}"
        code, stdout, err = pull(uri, out, key, "--json")
        assert code == 0, err
        assert "attestation verified (signed by trusted key" in err, err
        assert json.loads(stdout)["sha256"] == published["sha256"]
        assert_pulled_intact(engine, out, attestation=True)
        again = publish(engine, uri)  # what skopeo copied is what trtforge would have pushed
        assert again["status"] == "unchanged" and again["attestation"]["status"] == "unchanged", again


def edited_layout(layout: Path, tag: str, into: Path, edit: Callable[[dict[str, Any], Path], None]) -> Path:
    """A copy of the OCI layout whose image manifest ``edit`` changed (adding any blob it names to
    the copy): a consistent layout, every blob its digest, that skopeo uploads as it is."""
    shutil.copytree(layout, into)
    index = json.loads((into / "index.json").read_text())
    [entry] = index["manifests"]
    image = json.loads(layout_blob(into, entry["digest"]).read_bytes())
    edit(image, into)
    data = json.dumps(image).encode()
    layout_blob(into, sha256(data)).write_bytes(data)
    entry.update(digest=sha256(data), size=len(data))
    entry["annotations"]["org.opencontainers.image.ref.name"] = tag
    (into / "index.json").write_text(json.dumps(index))
    return into


def add_blob(layout: Path, data: bytes) -> str:
    layout_blob(layout, sha256(data)).write_bytes(data)
    return sha256(data)


def another_engine(image: dict[str, Any], layout: Path) -> None:
    """The engine layer is another engine (one byte changed): a valid blob, not the one the manifest pins."""
    engine = bytearray(layout_blob(layout, image["layers"][0]["digest"]).read_bytes())
    engine[len(engine) // 2] ^= 0xFF
    image["layers"][0]["digest"] = add_blob(layout, bytes(engine))


def manifest_pinning_another_engine(image: dict[str, Any], layout: Path) -> None:
    manifest = json.loads(layout_blob(layout, image["layers"][1]["digest"]).read_bytes())
    manifest["artifact"]["sha256"] = "0" * 64
    data = json.dumps(manifest).encode()
    image["layers"][1].update(digest=add_blob(layout, data), size=len(data))


def size_plus_one(image: dict[str, Any], layout: Path) -> None:
    image["layers"][0]["size"] += 1


def size_minus_one(image: dict[str, Any], layout: Path) -> None:
    image["layers"][0]["size"] -= 1


def title_is_a_path(image: dict[str, Any], layout: Path) -> None:
    image["layers"][0]["annotations"][TITLE] = "../" + image["layers"][0]["annotations"][TITLE]


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (another_engine, "is not the engine its manifest pins"),
        (manifest_pinning_another_engine, "is not the engine its manifest pins"),
        (size_plus_one, "is not the engine its manifest pins"),
        (size_minus_one, "is not the engine its manifest pins"),
        (title_is_a_path, "a title names a file and may not be a path"),
    ],
)
def test_an_artifact_skopeo_uploads_with_layers_not_the_manifests_is_refused(
    built: dict[str, Path],
    oci_registry: RunningRegistry,
    other_registry: RunningRegistry,
    tmp_path: Path,
    edit: Callable[[dict[str, Any], Path], None],
    reason: str,
) -> None:
    """skopeo uploads what is consistent to it (every blob its digest; a descriptor's size it takes
    as given): what trtforge's manifest does not pin is refused, exit 5, one line, nothing written."""
    engine = built["engine"]
    stem = read_manifest(engine).stem
    publish(engine, oci_registry.uri("skopeo/intact"))
    layout = tmp_path / "layout"
    copy(f"docker://{oci_registry.host}/skopeo/intact:{stem}", f"oci:{layout}:{stem}")
    repository = f"refused/{edit.__name__.replace('_', '-')}"
    edited = edited_layout(layout, stem, tmp_path / "edited", edit)
    copy(f"oci:{edited}:{stem}", f"docker://{other_registry.host}/{repository}:{stem}")
    out = tmp_path / "pulled"
    code, _, err = pull(other_registry.uri(repository), out)
    assert code == 5 and reason in one_line(err), err
    assert nothing_written(out)


def test_a_blob_damaged_on_the_way_is_refused_by_both(
    built: dict[str, Path], oci_registry: RunningRegistry, tmp_path: Path
) -> None:
    """skopeo refuses to upload a blob that is not its digest, and to download one the registry
    serves damaged; trtforge refuses the latter too (exit 5, one line, nothing written)."""
    engine = built["engine"]
    stem = read_manifest(engine).stem
    published = publish(engine, oci_registry.uri("skopeo/damaged-source"))
    layout = tmp_path / "layout"
    copy(f"docker://{oci_registry.host}/skopeo/damaged-source:{stem}", f"oci:{layout}:{stem}")
    damaged = tmp_path / "damaged"
    shutil.copytree(layout, damaged)
    blob = layout_blob(damaged, f"sha256:{published['sha256']}")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with start_registry(tmp_path / "own") as own:  # a registry that holds none of the blobs yet
        target = f"docker://{own.host}/damaged/models:{stem}"
        refused = copy(f"oci:{damaged}:{stem}", target, check=False)
        assert refused.returncode != 0 and "Digest did not match" in refused.stderr, refused.stderr
        copy(f"oci:{layout}:{stem}", target)
        stored = own.blob(f"sha256:{published['sha256']}")
        stored.write_bytes(bytes(data))
        refused = copy(target, f"dir:{tmp_path / 'skopeo-pulled'}", check=False)
        assert refused.returncode != 0 and "Digest did not match" in refused.stderr, refused.stderr
        out = tmp_path / "pulled"
        code, _, err = pull(own.uri("damaged/models"), out)
        assert code == 5 and "sha256" in one_line(err), err
        assert nothing_written(out)


# ---------------------------------------------------------------- names and tags


def component(max_size: int) -> st.SearchStrategy[str]:
    """One path component of the spec's ``<name>``: ``[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*``."""
    alnum = st.text(st.sampled_from("a0z9"), min_size=1, max_size=max_size)
    separator = st.sampled_from([".", "_", "__", "-", "--", "---"])
    return st.builds(
        lambda first, rest: first + "".join(s + p for s, p in rest),
        alnum,
        st.lists(st.tuples(separator, alnum), max_size=3),
    )


def names(host: str) -> st.SearchStrategy[str]:
    """Repository names of the grammar whose ``HOST/NAME`` is at most 255 characters: the limit
    skopeo (as docker and containerd) puts on a reference, which trtforge shares (over it, both
    refuse: ``test_a_reference_over_255_characters_is_refused_by_both``)."""
    parts = st.lists(st.one_of(component(4), component(40)), min_size=1, max_size=4).map("/".join)
    return parts.filter(lambda name: len(host) + 1 + len(name) <= 255)


tag_suffixes = st.builds(
    lambda first, rest: first + rest, st.sampled_from(TAG_FIRST), st.text(st.sampled_from(TAG_REST), max_size=40)
)
foreign_tags = st.builds(
    lambda first, rest: first + rest, st.sampled_from(TAG_FIRST), st.text(st.sampled_from(TAG_REST), max_size=127)
)


@settings(max_examples=10)
@given(data=st.data())
def test_names_and_tags_of_the_grammar_are_addressed_by_both(
    built: dict[str, Path], oci_registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """trtforge publishes to any repository of the grammar and skopeo reads it there; skopeo copies
    it to any other repository under any tag of the grammar and trtforge pulls it from there.

    Narrowed where they legitimately differ: trtforge does not address an artifact by tag but by
    name, precision and compatibility, so it pulls an artifact whose tag is ``{name}-{precision}-``
    and anything (the manifest under it says what it holds); a tag of any other form it lists and
    leaves alone, and it never stops a pull of what the repository also holds."""
    engine = built["engine"]
    stem = read_manifest(engine).stem
    host = oci_registry.host
    first = data.draw(names(host), label="first")
    second = data.draw(names(host), label="second")
    tag = "digits-cnn-fp32-" + data.draw(tag_suffixes, label="suffix")
    foreign = data.draw(foreign_tags, label="foreign")

    published = publish(engine, oci_registry.uri(first))
    assert published["status"] in ("published", "unchanged")  # a name drawn again: "unchanged" has no digest
    digest = OciRegistry(OciLocation(host, first), insecure=True).manifest_digest(stem)  # as trtforge reads it
    assert sha256(raw(f"docker://{host}/{first}:{stem}")) == digest == published.get("digest", digest)
    copy(f"docker://{host}/{first}:{stem}", f"docker://{host}/{second}:{tag}")
    copy(f"docker://{host}/{first}:{stem}", f"docker://{host}/{second}:{foreign}")
    assert sha256(raw(f"docker://{host}/{second}:{tag}")) == digest
    out = tmp_path_factory.mktemp("pulled")
    code, stdout, err = pull(oci_registry.uri(second), out, None, "--precision", "fp32", "--json")
    assert code == 0, err
    # any tag of the one engine there will do (the stem too, where second is first; earlier examples' tags)
    assert json.loads(stdout)["source"].startswith(f"{host}/{second}:"), stdout
    assert_pulled_intact(engine, out, attestation=False)


def test_a_reference_over_255_characters_is_refused_by_both(
    built: dict[str, Path], oci_registry: RunningRegistry, tmp_path: Path
) -> None:
    """At 255 characters of ``HOST/REPO`` both address the artifact; at 256 both refuse (trtforge
    took any length, pushed where skopeo could not read, and got HTTP 500 over 255 of repository)."""
    engine = built["engine"]
    stem = read_manifest(engine).stem
    host = oci_registry.host
    longest = "long/" + "a" * (255 - len(host) - 1 - len("long/"))
    published = publish(engine, oci_registry.uri(longest))
    assert sha256(raw(f"docker://{host}/{longest}:{stem}")) == published["digest"]
    code, _, err = pull(oci_registry.uri(longest), tmp_path / "pulled")
    assert code == 0, err
    over = longest + "b"
    code, _, err = cli("publish", engine, "--to", oci_registry.uri(over), "--insecure")
    assert code == 2 and "over the 255" in one_line(err), err
    refused = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{host}/{over}:{stem}", check=False)
    assert refused.returncode != 0 and "must not be more than 255 characters" in refused.stderr
