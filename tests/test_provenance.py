"""Signed provenance: in-toto Statement v1 / SLSA provenance v1 in a DSSE envelope, written at build
time (``build --sign-key``) or after (``sign --attest``), checked by securesystemslib (a standard
verifier) and by ``trtforge verify-provenance``, and every bad input refused with exit 5."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clitools import cli
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from models import conv_net, need_rtx, without_gpu
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey

from trtforge.compat import SignatureStatus
from trtforge.keys import SIGNING_KEY_ENV
from trtforge.manifest import attestation_path, manifest_path_for, read_manifest
from trtforge.provenance import (
    ATTESTATION_MEDIA_TYPE,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    attestation_bytes,
    spec_inputs,
)
from trtforge.signing import generate_keypair, load_signing_key, load_trusted_keys, verify_manifest
from trtforge.spec import load_spec

SPEC = """\
name: {name}
model: models/conv.onnx
precision: fp32
backend: tensorrt-rtx
targets: ["{cc}"]
profiles:
  - input: {{min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}}
accuracy:
  data: data/val.npy
  labels: data/labels.npy
"""


def _project(folder: Path) -> None:
    """A spec folder as users have it: model, data and labels beside two specs."""
    (folder / "models").mkdir(parents=True)
    (folder / "data").mkdir()
    conv_net(folder / "models" / "conv.onnx")
    rng = np.random.default_rng(0)
    np.save(folder / "data" / "val.npy", rng.normal(size=(8, 3, 16, 16)).astype(np.float32))
    np.save(folder / "data" / "labels.npy", rng.integers(0, 10, size=8).astype(np.int64))
    (folder / "a.yaml").write_text(SPEC.format(name="alpha", cc="8.6"))
    (folder / "b.yaml").write_text(SPEC.format(name="beta", cc="8.9"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real TensorRT-RTX engines, signed at build time with an Ed25519 key; tests copy the folder."""
    need_rtx()
    folder = tmp_path_factory.mktemp("provenance")
    _project(folder)
    generate_keypair(folder / "ci.key")
    code, _, err = cli(
        "build", folder / "a.yaml", folder / "b.yaml", "--out", folder / "out", "--sign-key", folder / "ci.key"
    )
    assert code == 0, err
    return folder


@pytest.fixture
def project(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(built, copy)
    return copy


def _engine(project: Path, name: str = "alpha") -> Path:
    (engine,) = (project / "out").glob(f"{name}-*.engine")
    return engine


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _envelope(engine: Path) -> dict[str, Any]:
    return json.loads(attestation_path(engine).read_text())


def _statement(engine: Path) -> dict[str, Any]:
    return json.loads(base64.b64decode(_envelope(engine)["payload"]))


def _verify(engine: Path, *extra: object) -> tuple[int, dict[str, Any], str]:
    code, out, err = cli("verify-provenance", engine, *extra, "--json")
    return code, json.loads(out), err


def _standard_key(public_pem: Path, key_id: str) -> SSlibKey:
    """The verifier's key as securesystemslib builds it from the PEM alone (no trtforge code)."""
    return SSlibKey.from_crypto(load_pem_public_key(public_pem.read_bytes()), keyid=key_id)


# ---------------------------------------------------------------- what the build writes


def test_build_with_sign_key_signs_the_manifest_and_writes_the_attestation(built: Path) -> None:
    engine = _engine(built)
    key = load_signing_key(built / "ci.key")
    manifest = read_manifest(engine)
    check = verify_manifest(manifest, load_trusted_keys([built / "ci.key.pub"]))
    assert check.status is SignatureStatus.VALID and check.key_id == key.key_id
    assert attestation_path(engine).name == engine.name.removesuffix(".engine") + ".intoto.jsonl"
    line = attestation_bytes(engine)
    assert line is not None and line.endswith(b"\n") and line.count(b"\n") == 1  # one JSON line
    envelope = _envelope(engine)
    assert envelope["payloadType"] == PAYLOAD_TYPE == "application/vnd.in-toto+json"  # the DSSE type in-toto reads
    assert [signature["keyid"] for signature in envelope["signatures"]] == [key.key_id]
    assert ATTESTATION_MEDIA_TYPE == "application/vnd.dsse.envelope.v1+json"

    statement = _statement(engine)
    assert statement["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"  # the specs' own URIs
    assert statement["predicateType"] == PREDICATE_TYPE == "https://slsa.dev/provenance/v1"
    manifest_file = manifest_path_for(engine)
    assert statement["subject"] == [
        {"name": engine.name, "digest": {"sha256": _sha256(engine)}},
        {"name": manifest_file.name, "digest": {"sha256": _sha256(manifest_file)}},
    ]
    dependencies = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    expected = {
        "model": built / "models" / "conv.onnx",
        "spec": built / "a.yaml",
        "accuracy-data": built / "data" / "val.npy",
        "labels": built / "data" / "labels.npy",
    }
    assert [dep["annotations"]["role"] for dep in dependencies] == list(expected)
    for dep in dependencies:
        path = expected[dep["annotations"]["role"]]
        assert dep["digest"] == {"sha256": _sha256(path)}
        assert (engine.parent / dep["annotations"]["path"]).resolve() == path.resolve()
    assert dependencies[0]["digest"]["sha256"] == manifest.source.onnx_sha256

    run = statement["predicate"]["runDetails"]
    assert run["builder"]["version"]["trtforge"] == manifest.build.trtforge_version
    assert run["builder"]["version"]["tensorrt-rtx"] == manifest.tensorrt.version
    assert run["builder"]["version"]["platform"] == f"{manifest.platform.os}_{manifest.platform.machine}"
    (byproduct,) = run["byproducts"]
    assert byproduct["annotations"] == manifest.accuracy  # the gate's summary, integers kept integers
    report = engine.with_name(manifest.accuracy["report"])
    assert byproduct["name"] == report.name and byproduct["digest"] == {"sha256": _sha256(report)}


def test_spec_inputs_list_every_calibration_file(tmp_path: Path) -> None:
    _project(tmp_path)
    for index in range(3):
        np.save(tmp_path / "data" / f"calib{index}.npy", np.zeros((4, 3, 16, 16), np.float32) + index)
    spec_text = SPEC.format(name="int8", cc="8.6").replace("precision: fp32", "precision: int8")
    (tmp_path / "int8.yaml").write_text(spec_text + "calibration: {data: data/calib*.npy, batch_size: 4}\n")
    inputs = spec_inputs(load_spec(tmp_path / "int8.yaml"), tmp_path / "out")
    assert [item.role for item in inputs] == ["model", "spec"] + ["calibration-data"] * 3 + ["accuracy-data", "labels"]
    assert [item.path for item in inputs][2:5] == [f"../data/calib{index}.npy" for index in range(3)]
    assert inputs[3].sha256 == _sha256(tmp_path / "data" / "calib1.npy")


def test_an_unsigned_rebuild_removes_the_stale_attestation(project: Path) -> None:
    engine = _engine(project)
    assert attestation_path(engine).is_file()
    code, _, err = cli("build", project / "a.yaml", "--out", project / "out")
    assert code == 0, err
    assert not attestation_path(engine).exists()
    assert read_manifest(engine).signature is None


def test_build_signs_with_the_key_in_the_environment(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pair = generate_keypair(project / "env.key", "ecdsa-p256")
    monkeypatch.setenv(SIGNING_KEY_ENV, pair.private_path.read_text())
    code, _, err = cli("build", project / "a.yaml", "--out", project / "out")
    assert code == 0, err
    engine = _engine(project)
    assert read_manifest(engine).signature["algorithm"] == "ecdsa-p256"
    code, document, _ = _verify(engine, "--trusted-key", pair.public_path)
    assert code == 0 and document["signer"] == {"key_id": pair.key_id, "algorithm": "ecdsa-p256"}


def test_a_bad_sign_key_fails_before_building(project: Path) -> None:
    (project / "bad.key").write_text("not a key")
    code, _, err = cli("build", project / "a.yaml", "--out", project / "fresh", "--sign-key", project / "bad.key")
    assert code == 2 and "not a PEM private key" in err
    assert not (project / "fresh").exists()
    code, _, err = cli("build", project / "a.yaml", "--out", project / "fresh", "--sign-key", project / "none.key")
    assert code == 2 and f"--sign-key {project / 'none.key'}: key file not found" in err  # the flag as typed


# ---------------------------------------------------------------- a standard verifier


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa-p256"])
def test_securesystemslib_accepts_the_envelope_and_rejects_a_tampered_one(project: Path, key_type: str) -> None:
    engine = _engine(project)
    pair = generate_keypair(project / f"{key_type}.key", key_type)
    code, _, err = cli("sign", engine, "--key", pair.private_path, "--attest", "--spec", project / "a.yaml")
    assert code == 0, err
    key = _standard_key(pair.public_path, pair.key_id)
    good = Envelope.from_dict(_envelope(engine))
    assert list(good.verify([key], 1)) == [pair.key_id]

    statement = _statement(engine)
    statement["subject"][0]["digest"]["sha256"] = "0" * 64  # claim another engine
    tampered = _envelope(engine)
    tampered["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(VerificationError):
        Envelope.from_dict(tampered).verify([key], 1)
    other = generate_keypair(project / f"other-{key_type}.key", key_type)
    with pytest.raises(VerificationError):  # the right key id on the wrong key
        Envelope.from_dict(_envelope(engine)).verify([_standard_key(other.public_path, pair.key_id)], 1)


# ---------------------------------------------------------------- trtforge verify-provenance


def test_verify_provenance_names_signer_subjects_and_inputs(project: Path) -> None:
    engine = _engine(project)
    key = load_signing_key(project / "ci.key")
    code, document, err = _verify(engine, "--trusted-key", project / "ci.key.pub")
    assert code == 0, err
    assert document["verified"] is True and document["problems"] == []
    assert document["signer"] == {"key_id": key.key_id, "algorithm": "ed25519"}
    assert [subject["name"] for subject in document["subjects"]] == [engine.name, manifest_path_for(engine).name]
    assert {item["role"]: item["status"] for item in document["inputs"]} == {
        "model": "same",
        "spec": "same",
        "accuracy-data": "same",
        "labels": "same",
    }
    assert document["accuracy"]["passed"] is True
    code, out, err = cli("verify-provenance", engine, "--trusted-key", project / "ci.key.pub")
    assert code == 0 and out == "" and "provenance verified" in err and key.key_id in err
    # an fp32 gate compared nothing (identical candidate): not a plain "passed"
    assert f"accuracy gate: not measured (identical); report {engine.name.removesuffix('.engine')}." in err, err


@without_gpu
def test_verify_provenance_says_a_simulated_gate_and_what_it_emulated(project: Path) -> None:
    """The gate's verdict on an fp16 engine of a host without a GPU is its emulation's: the line
    said "accuracy gate: passed" as if the engine had run."""
    from trtforge.mixedprecision import FP16_STORAGE

    spec = project / "c.yaml"
    spec.write_text(SPEC.format(name="gamma", cc="8.6").replace("precision: fp32", "precision: fp16"))
    code, _, err = cli("build", spec, "--out", project / "out", "--sign-key", project / "ci.key")
    assert code == 0, err
    code, _, err = cli("verify-provenance", _engine(project, "gamma"), "--trusted-key", project / "ci.key.pub")
    assert code == 0, err
    assert "accuracy gate: passed (simulated); report gamma-fp16-" in err, err
    assert f"candidate emulated: {FP16_STORAGE}\n" in err


def test_an_input_changed_since_the_build_fails(project: Path) -> None:
    engine = _engine(project)
    labels = project / "data" / "labels.npy"
    np.save(labels, np.zeros(8, np.int64))
    code, document, _ = _verify(engine, "--trusted-key", project / "ci.key.pub")
    assert code == 5 and document["verified"] is False
    assert {item["role"]: item["status"] for item in document["inputs"]}["labels"] == "changed"
    assert any("labels" in problem and "changed since the build" in problem for problem in document["problems"])
    code, _, err = cli("verify-provenance", engine, "--trusted-key", project / "ci.key.pub")
    assert code == 5 and "error: " in err and "changed since the build" in err


def test_inputs_given_are_matched_by_digest_wherever_they_are(project: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(project / "out", moved)  # the artifact moved away from its inputs
    (engine,) = moved.glob("alpha-*.engine")
    code, document, _ = _verify(
        engine, "--trusted-key", project / "ci.key.pub", "--input", project / "models" / "conv.onnx"
    )
    assert code == 0
    statuses = {item["role"]: item["status"] for item in document["inputs"]}
    assert statuses == {"model": "same", "spec": "not found", "accuracy-data": "not found", "labels": "not found"}
    stranger = tmp_path / "stranger.onnx"
    conv_net(stranger, seed=7)
    code, document, _ = _verify(engine, "--trusted-key", project / "ci.key.pub", "--input", stranger)
    assert code == 5 and any("is not an input of this engine" in problem for problem in document["problems"])


def test_a_missing_input_file_is_a_one_line_usage_error(project: Path, tmp_path: Path) -> None:
    from trtforge.errors import InvalidInputError
    from trtforge.provenance import verify_provenance

    engine, missing = _engine(project), tmp_path / "gone.onnx"
    code, _, err = cli("verify-provenance", engine, "--trusted-key", project / "ci.key.pub", "--input", missing)
    assert code == 2 and f"--input {missing}: no such file; check the path" in err and "Traceback" not in err
    # the library refuses it too (before hashing anything), not only the command
    with pytest.raises(InvalidInputError, match="no such file"):
        verify_provenance(engine, load_trusted_keys([project / "ci.key.pub"]), [missing])


def test_sign_attest_without_a_spec_records_the_digests_of_the_manifest(project: Path) -> None:
    engine = _engine(project)
    pair = generate_keypair(project / "late.key")
    code, out, err = cli("sign", engine, "--key", pair.private_path, "--attest", "--json")
    assert code == 0, err
    assert json.loads(out)["attestation"] == str(attestation_path(engine))
    code, document, _ = _verify(engine, "--trusted-key", pair.public_path)
    assert code == 0
    manifest = read_manifest(engine)
    assert [(item["role"], item["sha256"], item["status"]) for item in document["inputs"]] == [
        ("model", manifest.source.onnx_sha256, "no path"),
        ("spec", manifest.source.spec_sha256, "no path"),
    ]


def test_a_forged_digest_entry_never_makes_sign_attest_record_another_model(project: Path) -> None:
    """A signed statement's input digests are taken in this process: an entry planted in the digest
    cache (anyone who writes the cache folder can) for the model now on disk, carrying the digest of
    the model that built, made sign --attest vouch for a model that did not build the engine."""
    import dataclasses

    from trtforge.digests import FileStamp, digest_dir

    engine = _engine(project)
    model = project / "models" / "conv.onnx"
    built_from = model.read_bytes()
    conv_net(model, seed=5)
    stamp = FileStamp.of(model, model.stat())
    digest_dir().mkdir(parents=True, exist_ok=True)
    entry = {**dataclasses.asdict(stamp), "sha256": hashlib.sha256(built_from).hexdigest()}
    (digest_dir() / stamp.entry_name()).write_text(json.dumps(entry))
    try:
        code, _, err = cli("sign", engine, "--key", project / "ci.key", "--attest", "--spec", project / "a.yaml")
        assert code == 5 and "is not the one that built" in err, err
    finally:
        model.write_bytes(built_from)


def test_sign_attest_of_an_engine_built_without_the_gate(project: Path) -> None:
    (project / "c.yaml").write_text(
        SPEC.format(name="gamma", cc="8.6").split("accuracy:")[0] + "accuracy: {enabled: false}\n"
    )
    assert cli("build", project / "c.yaml", "--out", project / "out")[0] == 0
    engine = _engine(project, "gamma")
    code, _, err = cli("sign", engine, "--key", project / "ci.key", "--attest", "--spec", project / "c.yaml")
    assert code == 0 and "inputs: model, spec" in err, err
    (byproduct,) = _statement(engine)["predicate"]["runDetails"]["byproducts"]
    assert byproduct["annotations"]["skipped"] is True and "digest" not in byproduct
    code, document, _ = _verify(engine, "--trusted-key", project / "ci.key.pub")
    assert code == 0 and [item["role"] for item in document["inputs"]] == ["model", "spec"]


def test_sign_attest_refuses_a_spec_that_did_not_build_the_engine(project: Path) -> None:
    """Refused, it changes nothing: the manifest was signed again before the spec was judged, so the
    attestation already there stopped verifying."""
    engine = _engine(project)
    assert cli("sign", engine, "--key", project / "ci.key", "--attest", "--spec", project / "a.yaml")[0] == 0
    manifest, attestation = manifest_path_for(engine), attestation_path(engine)
    before = manifest.read_bytes(), attestation.read_bytes()
    model = project / "models" / "conv.onnx"
    built_from = model.read_bytes()
    conv_net(model, seed=3)  # the spec now points at another model
    other = project / "other.key"
    assert cli("keygen", other)[0] == 0
    code, _, err = cli("sign", engine, "--key", other, "--attest", "--spec", project / "a.yaml")
    assert code == 5 and "is not the one that built" in err
    assert (manifest.read_bytes(), attestation.read_bytes()) == before
    model.write_bytes(built_from)
    assert cli("verify-provenance", engine, "--trusted-key", project / "ci.key.pub")[0] == 0
    code, _, err = cli("sign", engine, "--key", project / "ci.key", "--spec", project / "a.yaml")
    assert code == 2 and "pass --attest too" in err


def test_sign_attest_refuses_an_engine_its_manifest_does_not_pin_and_says_what_it_did_not_do(project: Path) -> None:
    """The check ``sign`` makes (signing.artifact_to_sign), naming what ``sign --attest`` refused:
    before, "refusing to sign", though it refused to attest too. Nothing is written."""
    engine = _engine(project)
    manifest, attestation = manifest_path_for(engine), attestation_path(engine)
    before = manifest.read_bytes(), attestation.read_bytes()
    data = bytearray(engine.read_bytes())
    data[len(data) // 2] ^= 0xFF
    engine.write_bytes(bytes(data))
    code, _, err = cli("sign", engine, "--key", project / "ci.key", "--attest")
    assert code == 5 and f"{engine}: refusing to sign and attest: engine sha256" in err, err
    assert (manifest.read_bytes(), attestation.read_bytes()) == before


# ---------------------------------------------------------------- bad input: one line, exit 5


def _one_line_refusal(engine: Path, trusted: Path, says: str) -> None:
    code, out, err = cli("verify-provenance", engine, "--trusted-key", trusted)
    assert code == 5, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err
    assert "Traceback" not in err and out == ""
    code, out, _ = cli("verify-provenance", engine, "--trusted-key", trusted, "--json")
    assert code == 5 and says in json.loads(out)["error"]["message"]


def test_an_attestation_for_another_engine_is_refused(project: Path) -> None:
    alpha, beta = _engine(project, "alpha"), _engine(project, "beta")
    shutil.copy2(attestation_path(beta), attestation_path(alpha))
    _one_line_refusal(alpha, project / "ci.key.pub", "the attestation is for another engine")


def test_a_manifest_changed_after_attesting_is_refused(project: Path) -> None:
    engine = _engine(project)
    other = generate_keypair(project / "other.key")
    code, _, _ = cli("sign", engine, "--key", other.private_path)  # rewrites the manifest only
    assert code == 0
    _one_line_refusal(engine, project / "ci.key.pub", "the attestation is for another manifest")


def test_a_tampered_envelope_is_refused(project: Path) -> None:
    engine = _engine(project)
    envelope = _envelope(engine)
    statement = _statement(engine)
    statement["predicate"]["runDetails"]["byproducts"][0]["annotations"]["passed"] = True
    statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["sha256"] = "1" * 64
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    attestation_path(engine).write_text(json.dumps(envelope) + "\n")
    _one_line_refusal(engine, project / "ci.key.pub", "does not verify: the envelope was changed after signing")


def test_an_unknown_key_is_refused(project: Path) -> None:
    stranger = generate_keypair(project / "stranger.key")
    _one_line_refusal(_engine(project), stranger.public_path, "which is not a trusted key")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "malformed attestation (not JSON"),
        ('{"payload": "e30=", "signatures": []}', "malformed attestation (the DSSE field 'payloadType' is missing)"),
        ('["an", "array"]', "malformed attestation (not a JSON object)"),
        ("", "malformed attestation: 0 JSON lines"),
        ('{"payload": "!!", "payloadType": "x", "signatures": []}', "malformed attestation"),
        ('{"payload": "e30=", "payloadType": "text/plain", "signatures": []}', "not an in-toto attestation"),
        ('{"payload": "e30=", "payloadType": "application/vnd.in-toto+json", "signatures": []}', "no signature"),
        # fields of another JSON type: securesystemslib reads them unchecked, which was exit 1 (an internal error)
        ('{"payload": 5, "payloadType": "x", "signatures": []}', "malformed attestation (the DSSE field 'payload' is"),
        (
            f'{{"payload": "e30=", "payloadType": "{PAYLOAD_TYPE}", "signatures": [{{"keyid": 5, "sig": ""}}]}}',
            "malformed attestation (the DSSE field 'keyid' is not text)",
        ),
        ('{"payload": "e30=", "payloadType": "x", "signatures": [{"keyid": "k", "sig": 5}]}', "field 'sig' is not"),
        ('{"payload": "e30=", "payloadType": "x", "signatures": ["k"]}', "field 'signatures' is not a list of"),
        ('{"payload": "e30=", "payloadType": "x", "signatures": {"keyid": "k"}}', "field 'signatures' is not a"),
    ],
)
def test_a_malformed_attestation_is_refused(project: Path, content: str, says: str) -> None:
    engine = _engine(project)
    attestation_path(engine).write_text(content)
    _one_line_refusal(engine, project / "ci.key.pub", says)


def test_a_signed_payload_that_is_not_slsa_provenance_is_refused(project: Path) -> None:
    """Signed by the trusted key, but not a Statement with SLSA provenance: still no pass."""
    from trtforge.provenance import envelope, validate_statement

    engine = _engine(project)
    statement = _statement(engine)
    statement["predicate"]["runDetails"]["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        validate_statement(statement)
    del statement["predicate"]["runDetails"]
    with pytest.raises(ValueError, match=r"lacks buildDefinition\.buildType or runDetails\.builder\.id"):
        validate_statement(statement)
    statement["predicateType"] = "https://example.com/other/v1"
    attestation_path(engine).write_bytes(envelope(statement, load_signing_key(project / "ci.key")))
    _one_line_refusal(engine, project / "ci.key.pub", "malformed statement (predicateType")


def test_a_signed_statement_with_nan_is_refused(project: Path) -> None:
    """Signed by the trusted key, but ``NaN`` is not JSON (RFC 8259): another verifier's parser
    refuses the statement that Python's json reads, so it is malformed here too."""
    from trtforge.signing import sslib_signer

    engine = _engine(project)
    statement = _statement(engine)
    statement["predicate"]["runDetails"]["byproducts"][0]["annotations"]["samples"] = float("nan")
    wrapped = Envelope(json.dumps(statement).encode(), PAYLOAD_TYPE, {})  # Python's json writes NaN
    wrapped.sign(sslib_signer(load_signing_key(project / "ci.key")))
    attestation_path(engine).write_text(json.dumps(wrapped.to_dict()) + "\n")
    _one_line_refusal(engine, project / "ci.key.pub", "malformed statement ('NaN' is not JSON (RFC 8259")


def test_a_signed_statement_of_another_type_is_refused(project: Path) -> None:
    """Signed by the trusted key, but not an in-toto v1 statement (``_type``): malformed, never verified."""
    from trtforge.provenance import envelope

    engine = _engine(project)
    statement = _statement(engine)
    statement["_type"] = "https://in-toto.io/Statement/v0.1"
    attestation_path(engine).write_bytes(envelope(statement, load_signing_key(project / "ci.key")))
    _one_line_refusal(engine, project / "ci.key.pub", "malformed statement (_type is")


def test_an_attestation_of_two_envelopes_is_refused(project: Path) -> None:
    """One DSSE envelope a file: a second line (another envelope, maybe another build's) is refused,
    never left unread behind a first that verifies."""
    engine = _engine(project)
    line = json.dumps(_envelope(engine))
    attestation_path(engine).write_text(line + "\n" + line + "\n")
    _one_line_refusal(engine, project / "ci.key.pub", "malformed attestation: 2 JSON lines, expected one")


def test_a_signed_statement_whose_input_path_is_not_text_is_refused(project: Path) -> None:
    """Signed by the trusted key (another tool's statement), an input's ``annotations.path`` a number:
    annotations are free-form for the in-toto models, and verify-provenance joined it to the
    engine's folder, an internal error (exit 1), not the refusal of a malformed statement."""
    from trtforge.provenance import envelope

    engine = _engine(project)
    statement = _statement(engine)
    statement["predicate"]["buildDefinition"]["resolvedDependencies"][2]["annotations"]["path"] = 5
    attestation_path(engine).write_bytes(envelope(statement, load_signing_key(project / "ci.key")))
    _one_line_refusal(engine, project / "ci.key.pub", "malformed statement (the path of input")


@pytest.mark.parametrize("lie", ["model", "no-inputs", "precision", "name", "tag"])
def test_a_signed_statement_that_contradicts_the_manifest_is_refused(project: Path, lie: str) -> None:
    """Signed by a trusted key, its subjects the right engine and manifest, but its inputs or
    parameters another build's: "provenance verified" (the manifest and the attestation may be
    signed by different trusted keys, after a rotation)."""
    from trtforge.provenance import envelope

    engine = _engine(project)
    statement = _statement(engine)
    definition = statement["predicate"]["buildDefinition"]
    if lie == "model":
        definition["resolvedDependencies"][0]["digest"]["sha256"] = "0" * 64
    elif lie == "no-inputs":
        definition["resolvedDependencies"] = []
    elif lie == "precision":
        definition["externalParameters"]["precision"] = "fp16"
    elif lie == "name":
        definition["externalParameters"]["name"] = "another"
    else:
        definition.setdefault("internalParameters", {})["tag"] = "trt10.0-sm90-linux_x86_64"
    attestation_path(engine).write_bytes(envelope(statement, load_signing_key(project / "ci.key")))
    says = {
        "precision": "its precision ('fp16') is not the manifest's",
        "name": "its name ('another') is not the manifest's",
        "tag": "its tag ('trt10.0-sm90-linux_x86_64') is not the manifest's",
    }.get(lie, "its model (")
    _one_line_refusal(engine, project / "ci.key.pub", says)


def test_inputs_are_found_through_a_link_to_the_output_folder(project: Path, tmp_path: Path) -> None:
    """Recorded relative to the folder the build wrote in: through a link to it, every input was
    "not found" (and a changed one passed)."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "link").symlink_to(project / "out")
    linked = tmp_path / "a" / "b" / "link" / _engine(project).name
    code, out, err = cli("verify-provenance", linked, "--trusted-key", project / "ci.key.pub", "--json")
    assert code == 0, err
    assert {check["status"] for check in json.loads(out)["inputs"]} == {"same"}
    (project / "a.yaml").write_text((project / "a.yaml").read_text() + "# edited\n")
    code, _, err = cli("verify-provenance", linked, "--trusted-key", project / "ci.key.pub")
    assert code == 5 and "changed since the build" in err


def test_a_missing_attestation_and_a_missing_trusted_key(project: Path) -> None:
    engine = _engine(project)
    code, _, err = cli("verify-provenance", engine)
    assert code == 2 and "no trusted key" in err
    attestation_path(engine).unlink()
    _one_line_refusal(engine, project / "ci.key.pub", "no attestation beside the engine")


# ---------------------------------------------------------------- keys


def test_keygen_type_ecdsa_p256_and_a_bad_type(tmp_path: Path) -> None:
    code, out, err = cli("keygen", tmp_path / "p256", "--type", "ecdsa-p256", "--json")
    assert code == 0, err
    document = json.loads(out)
    assert document["type"] == "ecdsa-p256"
    assert "BEGIN PUBLIC KEY" in (tmp_path / "p256.pub").read_text()
    key = load_signing_key(tmp_path / "p256")
    assert key.key_id == document["key_id"] and key.private_key.curve.name == "secp256r1"
    code, _, err = cli("keygen", tmp_path / "rsa", "--type", "rsa")
    assert code == 2 and "unknown key type; choose one of ed25519, ecdsa-p256" in err
    assert not (tmp_path / "rsa").exists()


def test_an_ecdsa_signed_manifest_passes_check_require_signature(project: Path) -> None:
    engine = _engine(project)
    pair = generate_keypair(project / "p256.key", "ecdsa-p256")
    assert cli("sign", engine, "--key", pair.private_path)[0] == 0
    code, _, err = cli(
        "check", engine, "--require-signature", "--trusted-key", pair.public_path, "--flavor", "tensorrt-rtx"
    )
    assert "valid, by trusted key" in err, err
    code, _, err = cli("check", engine, "--require-signature", "--trusted-key", project / "ci.key.pub")
    assert code == 5 and "not a trusted key" in err


def test_a_non_finite_metric_is_attested_as_the_null_the_manifest_file_holds(built: Path) -> None:
    from trtforge.provenance import Input, accuracy_byproduct, statement

    manifest = read_manifest(_engine(built))
    outputs = {"logits": {"cosine": float("nan"), "max_abs": 0.5}}
    odd = manifest.replace(accuracy={**manifest.accuracy, "outputs": outputs})
    document = statement(odd, "0" * 64, [Input("model", "1" * 64)], accuracy_byproduct(odd, None))
    (byproduct,) = document["predicate"]["runDetails"]["byproducts"]
    assert byproduct["annotations"]["outputs"] == {"logits": {"cosine": None, "max_abs": 0.5}}
    assert "digest" not in byproduct  # no report bytes, no claim about the report


def test_trusted_p256_keys_load_and_other_curves_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from trtforge.errors import InvalidInputError

    pair = generate_keypair(tmp_path / "p256", "ecdsa-p256")
    (trusted,) = load_trusted_keys([pair.public_path])
    assert trusted.key_id == pair.key_id
    point = trusted.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    assert pair.key_id == hashlib.sha256(point).hexdigest()[:16]
    p384 = tmp_path / "p384.pub"
    p384.write_bytes(
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(
        InvalidInputError, match="key type ECDSA secp384r1 is not supported; trtforge signs and verifies ed25519 and"
    ):
        load_trusted_keys([p384])
