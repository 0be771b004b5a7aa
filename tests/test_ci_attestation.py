"""``trtforge ci`` calls an artifact "unchanged" on the word of an attestation only when that
word was checked: an attestation added beside a build after it (not the build's own, byte for
byte) is kept only when its signature verifies with a key the run can check (its signing key,
``--trusted-key``/``$TRTFORGE_TRUSTED_KEY``), as ``verify-provenance`` checks one. Before, one
whose DSSE subject named the manifest was kept unverified: a forged or corrupted envelope survived
an unchanged rerun and ``publish`` pushed it. Real ``trtforge ci`` runs on TensorRT-RTX builds."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import models
import pytest
from clitools import cli

from trtforge.keys import SIGNING_KEY_ENV
from trtforge.manifest import attestation_path, manifest_path_for
from trtforge.provenance import envelope, stale_attestation
from trtforge.signing import TRUSTED_KEY_ENV, load_signing_key

models.need_rtx()

SPEC = (
    "name: conv\nprecision: fp32\nmodel: conv.onnx\ntargets: ['8.6']\n"
    "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [4, 3, 16, 16], max: [8, 3, 16, 16]}\n"
    "accuracy: {enabled: false}\n"
)


def _ci(project: Path, out: Path, *flags: object) -> tuple[str, str]:
    """One real ``trtforge ci`` run: the spec's status and the run's stderr."""
    code, stdout, stderr = cli("ci", project, "--out", out, "--json", *flags)
    assert code == 0, stderr
    (result,) = json.loads(stdout)["results"]
    return result["status"], stderr


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """Two key pairs: ``a`` (the run's signing key) and ``b`` (anyone else's)."""
    pairs = {name: tmp_path / f"key-{name}" for name in ("a", "b")}
    for path in pairs.values():
        assert cli("keygen", path)[0] == 0
    return pairs


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    models.conv_net(root / "conv.onnx")
    (root / "conv.yaml").write_text(SPEC)
    monkeypatch.delenv(TRUSTED_KEY_ENV, raising=False)
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    return root


def _envelope(path: Path) -> dict:
    return json.loads(path.read_text())


def _write_envelope(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, separators=(",", ":")) + "\n")


def _signed_by_another_key(attestation: Path, keys: dict[str, Path]) -> None:
    """The build's statement (its subject: this very manifest), signed by key b."""
    statement = json.loads(base64.b64decode(_envelope(attestation)["payload"]))
    attestation.write_bytes(envelope(statement, load_signing_key(keys["b"])))


def _signature_byte_flipped(attestation: Path, keys: dict[str, Path]) -> None:
    document = _envelope(attestation)
    signature = bytearray(base64.b64decode(document["signatures"][0]["sig"]))
    signature[len(signature) // 2] ^= 0x01
    document["signatures"][0]["sig"] = base64.b64encode(bytes(signature)).decode()
    _write_envelope(attestation, document)


def _no_signature(attestation: Path, keys: dict[str, Path]) -> None:
    document = _envelope(attestation)
    document["signatures"] = []
    _write_envelope(attestation, document)


@pytest.mark.parametrize(
    ("forge", "said"),
    [
        (_signed_by_another_key, "which is not a trusted key"),
        (_signature_byte_flipped, "does not verify"),
        (_no_signature, "has no signature"),
    ],
    ids=["another-key", "flipped-signature", "no-signature"],
)
def test_an_unverified_attestation_beside_a_signed_build_is_never_unchanged(
    project: Path,
    tmp_path: Path,
    keys: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    forge: Callable[[Path, dict[str, Path]], None],
    said: str,
) -> None:
    """A signing run's build, its attestation replaced by one whose subject names the manifest
    beside it but whose signature no key of the run verifies: the build's set is restored, the
    line says why, and the set then verifies with the run's key."""
    monkeypatch.setenv(SIGNING_KEY_ENV, str(keys["a"]))
    out = tmp_path / "out"
    assert _ci(project, out)[0] == "built"
    (engine,) = out.glob("*.engine")
    attestation = attestation_path(engine)
    built = attestation.read_bytes()
    forge(attestation, keys)
    assert attestation.read_bytes() != built
    # the subject still names this manifest: only the signature makes it a forgery
    assert stale_attestation(engine, manifest_path_for(engine).read_bytes()) is None
    assert cli("verify-provenance", engine, "--trusted-key", f"{keys['a']}.pub")[0] == 5

    status, stderr = _ci(project, out)
    assert status == "restored", stderr
    line = next(line for line in stderr.splitlines() if "restored from the build cache" in line)
    assert f"{attestation.name} was added since its build" in line and said in line, line
    assert attestation.read_bytes() == built
    assert cli("verify-provenance", engine, "--trusted-key", f"{keys['a']}.pub")[0] == 0
    assert _ci(project, out)[0] == "unchanged"


def test_sign_attest_with_the_runs_own_key_after_the_build_stays(
    project: Path, tmp_path: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's flow: ``trtforge sign ENGINE --key K --attest`` after a build signed with K
    (another statement: the inputs the manifest records) is verified with the run's key and kept."""
    monkeypatch.setenv(SIGNING_KEY_ENV, str(keys["a"]))
    out = tmp_path / "out"
    assert _ci(project, out)[0] == "built"
    (engine,) = out.glob("*.engine")
    built = attestation_path(engine).read_bytes()
    assert cli("sign", engine, "--key", keys["a"], "--attest")[0] == 0
    attested = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    assert attested[attestation_path(engine).name] != built

    status, stderr = _ci(project, out)
    assert status == "unchanged", stderr
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == attested
    assert cli("verify-provenance", engine, "--trusted-key", f"{keys['a']}.pub")[0] == 0


def test_an_attestation_added_to_an_unsigned_build_needs_a_trusted_key(
    project: Path, tmp_path: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unsigned run has no key of its own: ``sign --attest`` by key b is kept when the run
    trusts b (``--trusted-key``, or ``$TRTFORGE_TRUSTED_KEY``), and the unsigned build's set is
    restored, saying why, when it trusts no key or another one."""
    out = tmp_path / "out"
    assert _ci(project, out)[0] == "built"
    (engine,) = out.glob("*.engine")
    manifest = manifest_path_for(engine)
    unsigned = manifest.read_bytes()
    assert cli("sign", engine, "--key", keys["b"], "--attest")[0] == 0
    attested = manifest.read_bytes()

    assert _ci(project, out, "--trusted-key", f"{keys['b']}.pub")[0] == "unchanged"
    monkeypatch.setenv(TRUSTED_KEY_ENV, f"{keys['b']}.pub")
    assert _ci(project, out)[0] == "unchanged"
    assert manifest.read_bytes() == attested and attestation_path(engine).is_file()

    monkeypatch.setenv(TRUSTED_KEY_ENV, f"{keys['a']}.pub")  # not its signer
    status, stderr = _ci(project, out)
    assert status == "restored", stderr
    assert f"{attestation_path(engine).name} was added since its build" in stderr
    assert "which is not a trusted key" in stderr
    assert manifest.read_bytes() == unsigned and not attestation_path(engine).exists()
