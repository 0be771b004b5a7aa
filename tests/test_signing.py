"""Ed25519 signatures over the canonical (RFC 8785) manifest: keys, sign, verify, tampering."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import signal
import stat
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from clitools import cli
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from models import need_rtx
from registry import build_engine
from rich.console import Console
from typer.testing import CliRunner

from trtforge.artifact import LOCK_DIR
from trtforge.cli import app
from trtforge.compat import SignatureStatus
from trtforge.errors import IncompatibleEngineError, InvalidInputError
from trtforge.fsutil import staged_file
from trtforge.keys import SIGNING_KEY_ENV, signing_requested
from trtforge.manifest import manifest_path_for, read_manifest, write_manifest
from trtforge.signing import (
    SIGNING_KEY_PASSWORD_ENV,
    TRUSTED_KEY_ENV,
    canonical_payload,
    generate_keypair,
    key_id_of,
    load_signing_key,
    load_trusted_keys,
    sign_artifact,
    sign_manifest,
    verify_manifest,
)

SPEC = """\
name: signed
model: {model}
precision: fp32
backend: tensorrt-rtx
targets: ["8.6"]
profiles:
  - input: {{min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}}
accuracy: {{enabled: false}}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    """One real TensorRT-RTX engine (about a second to build) that tests copy before changing."""
    need_rtx()
    from trtforge.build import build_spec
    from trtforge.console import Reporter
    from trtforge.spec import load_spec

    folder = tmp_path_factory.mktemp("signing-build")
    (folder / "spec.yaml").write_text(SPEC.format(model=model_dir / "conv.onnx"))
    quiet = Reporter(Console(file=io.StringIO()), interactive=False)
    return build_spec(load_spec(folder / "spec.yaml"), folder / "out", quiet, cache_dir=folder / "cache").engine


@pytest.fixture
def artifact(built: Path, tmp_path: Path) -> Path:
    engine = tmp_path / built.name
    shutil.copy2(built, engine)
    shutil.copy2(manifest_path_for(built), manifest_path_for(engine))
    return engine


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """A fresh key pair: returns the private key's path (the public one is beside it, .pub)."""
    (tmp_path / "keys").mkdir()
    return generate_keypair(tmp_path / "keys" / "ci").private_path


def _public(private: Path) -> Path:
    return private.with_name(private.name + ".pub")


#: what a key of another type is told (``trtforge.signing.KEY_TYPES``)
SUPPORTED = "trtforge signs and verifies ed25519 and ecdsa-p256 keys only"


def _rsa() -> object:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _p384() -> object:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP384R1())


def _dsa() -> object:
    """cryptography warns (CryptographyDeprecationWarning) as it makes or loads one."""
    from cryptography.hazmat.primitives.asymmetric import dsa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dsa.generate_private_key(key_size=1024)


#: private keys of the types trtforge refuses
OTHER_KEYS = {"RSA": _rsa, "P384": _p384, "DSA": _dsa}


def _pem(key: object, private: bool) -> bytes:
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    if private:
        return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())  # type: ignore[attr-defined]
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


@contextlib.contextmanager
def _within(seconds: int) -> Iterator[None]:
    """Fail, rather than hang the suite, where a read would wait forever (a named pipe)."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------- keys


def test_keygen_writes_private_0600_and_public_and_never_overwrites(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "release")
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    assert pair.public_path == tmp_path / "release.pub"
    assert pair.public_path.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    before = pair.private_path.read_bytes()
    with pytest.raises(InvalidInputError, match="already exists; keygen never overwrites"):
        generate_keypair(tmp_path / "release")
    assert pair.private_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release", "release.pub"]  # no temp files


def test_keygen_writes_the_private_key_into_a_temporary_no_one_else_can_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temporary a key is staged in (fsutil's, named and locked as every temporary) is 0600
    from its creation on (every mode it is given, from mkstemp's to the last chmod), so no one
    else can open it in a window, and it is gone after. It was widened to 0644 and narrowed again:
    a descriptor opened in between read the key."""
    modes: dict[str, list[int]] = {}
    chmod, mkstemp = os.chmod, tempfile.mkstemp

    def recording_chmod(path: os.PathLike[str] | str, mode: int, **kwargs: object) -> None:
        modes.setdefault(Path(path).name, []).append(stat.S_IMODE(mode))
        chmod(path, mode, **kwargs)  # type: ignore[arg-type]

    def recording_mkstemp(*args: object, **kwargs: object) -> tuple[int, str]:
        fd, name = mkstemp(*args, **kwargs)  # type: ignore[call-overload]
        modes.setdefault(Path(name).name, []).append(stat.S_IMODE(os.stat(name).st_mode))
        return fd, name

    monkeypatch.setattr(os, "chmod", recording_chmod)
    monkeypatch.setattr(tempfile, "mkstemp", recording_mkstemp)
    generate_keypair(tmp_path / "release")
    (private,) = [seen for name, seen in modes.items() if name.startswith(".release.") and ".pub." not in name]
    assert private and set(private) == {0o600}, private
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release", "release.pub"]


def test_an_exclusive_staged_file_never_replaces_one_made_meanwhile(tmp_path: Path) -> None:
    """``staged_file(exclusive=True)``: a file that appears while ours is written (another keygen)
    stays as it is, ours is refused with FileExistsError, and its temporary goes."""
    final = tmp_path / "key"
    with pytest.raises(FileExistsError), staged_file(final, exclusive=True) as staged:
        staged.write_bytes(b"ours")
        final.write_bytes(b"theirs")
    assert final.read_bytes() == b"theirs"
    with staged_file(tmp_path / "new", exclusive=True) as staged:
        staged.write_bytes(b"ours")
    assert (tmp_path / "new").read_bytes() == b"ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key", "new"]  # no temporaries


def test_keygen_refuses_when_only_the_public_file_exists(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text("someone else's key")
    with pytest.raises(InvalidInputError, match=r"k\.pub already exists"):
        generate_keypair(tmp_path / "k")
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize(
    "case",
    ["folder", "empty", "missing folder", "file as folder", "trailing slash", "trailing dot", "parent", "public name"],
)
def test_keygen_names_the_path_and_the_fix(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OUT is the private key file to create: a folder was "already exists; keygen never
    overwrites", an empty OUT (the current folder) an internal error, ``keys/`` (a folder not
    yet made) wrote the key to a file named ``keys`` (``keys/.`` too: Path drops the dot), and
    ``k3.pub`` the private key to a file named public."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a folder")
    out, says = {
        "folder": (str(tmp_path), f"OUT {tmp_path} names a folder; keygen writes a file: name it, e.g. "),
        "empty": ("", "OUT . names a folder; keygen writes a file: name it, e.g. trtforge keygen signing-key"),
        "trailing slash": (
            "keys/",
            "OUT keys/ names a folder; keygen writes a file: name it, e.g. trtforge keygen keys/s",
        ),
        "trailing dot": ("keys/.", "OUT keys/. names a folder; keygen writes a file: name it, e.g. "),
        "parent": ("sub/..", "OUT sub/.. names a folder; keygen writes a file: name it, e.g. "),
        "missing folder": (
            str(tmp_path / "nope" / "k"),
            f"its folder {tmp_path / 'nope'} does not exist; create it (mkdir -p {tmp_path / 'nope'})",
        ),
        "file as folder": (str(tmp_path / "notes.txt" / "k"), f"{tmp_path / 'notes.txt'} is a file, not a folder"),
        "public name": (  # the private key went to kg/k3.pub, the public one to kg/k3.pub.pub
            "k3.pub",
            "OUT k3.pub ends in .pub, but OUT gets the private key (and OUT.pub the public one): "
            "pass the name without it, e.g. trtforge keygen k3",
        ),
    }[case]
    before = sorted(tmp_path.rglob("*"))
    code, _, err = cli("keygen", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and says in err, err
    assert sorted(tmp_path.rglob("*")) == before


def test_key_id_is_the_short_sha256_of_the_raw_public_key(keys: Path) -> None:
    key = load_signing_key(keys)
    raw = key.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert key.key_id == hashlib.sha256(raw).hexdigest()[:16]
    (trusted,) = load_trusted_keys([_public(keys)])
    assert trusted.key_id == key.key_id
    assert load_trusted_keys(str(_public(keys))) == (trusted,)  # one path as text, not its characters


def test_keys_from_environment_as_text_or_path(keys: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SIGNING_KEY_ENV, keys.read_text())
    from_text = load_signing_key()
    monkeypatch.setenv(SIGNING_KEY_ENV, str(keys))
    from_path = load_signing_key()
    assert from_text.key_id == from_path.key_id
    assert from_path.source == str(keys)

    other = generate_keypair(keys.parent / "other")
    monkeypatch.setenv(TRUSTED_KEY_ENV, f"{_public(keys)}{os.pathsep}{other.public_path}")
    assert [k.key_id for k in load_trusted_keys()] == [from_path.key_id, other.key_id]
    bundle = _public(keys).read_text() + other.public_path.read_text()
    monkeypatch.setenv(TRUSTED_KEY_ENV, bundle)
    assert [k.key_id for k in load_trusted_keys()] == [from_path.key_id, other.key_id]
    # explicit files win over the environment
    assert [k.key_id for k in load_trusted_keys([other.public_path])] == [other.key_id]


def test_a_private_key_others_may_read_is_warned_about_as_ssh_does(
    artifact: Path, keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone who reads the private key can sign as its owner: a key file other users may open
    (``echo "$KEY" > key.pem`` under umask 022) signs with one warning line saying so and how to
    fix it, from ``--key`` or ``$TRTFORGE_SIGNING_KEY`` alike; keygen's 0600 gets none."""
    code, _, err = cli("sign", artifact, "--key", keys)
    assert code == 0 and "warning" not in err, err
    keys.chmod(0o644)
    code, _, err = cli("sign", artifact, "--key", keys)
    assert code == 0, err
    (warning,) = [line for line in err.splitlines() if "warning: " in line]
    assert f"--key {keys}: other users may read or change this private key (mode 0644)" in warning
    assert f"chmod 600 {keys}" in warning
    keys.chmod(0o640)
    monkeypatch.setenv(SIGNING_KEY_ENV, str(keys))
    code, _, err = cli("sign", artifact)
    assert code == 0 and f"warning: ${SIGNING_KEY_ENV} {keys}: other users may read" in err and "(mode 0640)" in err
    monkeypatch.setenv(SIGNING_KEY_ENV, keys.read_text())  # PEM text: no file to be read by others
    code, _, err = cli("sign", artifact)
    assert code == 0 and "warning" not in err, err


def test_encrypted_private_key_needs_the_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SIGNING_KEY_PASSWORD_ENV, "s3cret")
    pair = generate_keypair(tmp_path / "enc")
    assert "ENCRYPTED" in pair.private_path.read_text()
    assert load_signing_key(pair.private_path).key_id == pair.key_id
    monkeypatch.delenv(SIGNING_KEY_PASSWORD_ENV)
    with pytest.raises(InvalidInputError) as caught:
        load_signing_key(pair.private_path)
    assert str(caught.value) == (
        f"{pair.private_path}: the private key is encrypted; set {SIGNING_KEY_PASSWORD_ENV} to its password"
    )


@pytest.mark.parametrize(
    ("encrypted", "says"),
    [
        (True, f"{SIGNING_KEY_PASSWORD_ENV} does not decrypt this encrypted private key; set it to the key's password"),
        (False, f"the private key is not encrypted, yet {SIGNING_KEY_PASSWORD_ENV} is set; unset it"),
    ],
)
def test_a_password_that_does_not_fit_the_key_says_which(
    encrypted: bool, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong password for an encrypted key once read "not a PEM private key": the file is one."""
    if encrypted:
        monkeypatch.setenv(SIGNING_KEY_PASSWORD_ENV, "s3cret")
    pair = generate_keypair(tmp_path / "key")
    monkeypatch.setenv(SIGNING_KEY_PASSWORD_ENV, "wrong")
    with pytest.raises(InvalidInputError) as caught:
        load_signing_key(pair.private_path)
    assert str(caught.value) == f"{pair.private_path}: {says}"


#: how a file given where the private key goes is fixed
PRIVATE_FIX = "pass the private key file trtforge keygen OUT wrote (OUT, not OUT.pub)"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "key file not found"),
        ("", f"the key file is empty; {PRIVATE_FIX}"),
        ("not a key", f"not a PEM private key (no -----BEGIN PRIVATE KEY----- block in it); {PRIVATE_FIX}"),
        ("RANDOM", f"not a PEM private key (no -----BEGIN PRIVATE KEY----- block in it); {PRIVATE_FIX}"),
        ("PUBLIC", f"this is a public key, and signing needs the private key; {PRIVATE_FIX}"),
        ("OPENSSH", f"its OPENSSH PRIVATE KEY block does not load as a private key; {PRIVATE_FIX}"),
        ("RSA", f"key type RSA is not supported; {SUPPORTED}: create one with trtforge keygen OUT [--type ecdsa-p256]"),
        ("P384", f"key type ECDSA secp384r1 is not supported; {SUPPORTED}: create one with trtforge keygen OUT"),
        ("DSA", f"key type DSA is not supported; {SUPPORTED}: create one with trtforge keygen OUT"),
    ],
)
def test_bad_signing_keys_say_what_to_do(
    tmp_path: Path, keys: Path, content: str | None, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unsupported key type is named as a person names it (RSA, not ``a RSAPrivateKey key``),
    with the types trtforge takes and how to make one; no warning of cryptography's on the way.
    An empty file, text or random bytes once read "not a PEM private key (or a wrong
    TRTFORGE_SIGNING_KEY_PASSWORD)", with no password set: each says what the file is instead."""
    monkeypatch.delenv(SIGNING_KEY_PASSWORD_ENV, raising=False)
    path = tmp_path / "bad.pem"
    if content == "PUBLIC":
        path = _public(keys)
    elif content == "RANDOM":
        path.write_bytes(bytes(range(256)) * 4)
    elif content == "OPENSSH":
        path.write_text(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
        )
    elif content in OTHER_KEYS:
        path.write_bytes(_pem(OTHER_KEYS[content](), private=True))
    elif content is not None:
        path.write_text(content)
    with warnings.catch_warnings(record=True) as warned, pytest.raises(InvalidInputError) as caught:
        warnings.simplefilter("always")
        load_signing_key(path)
    assert says in str(caught.value) and f"{path}: " in str(caught.value), str(caught.value)
    assert SIGNING_KEY_PASSWORD_ENV not in str(caught.value)
    assert not warned, [str(warning.message) for warning in warned]


def test_an_unsupported_trusted_key_says_which_types_and_how(tmp_path: Path, artifact: Path) -> None:
    rsa_pub = tmp_path / "rsa.pub"
    rsa_pub.write_bytes(_pem(OTHER_KEYS["RSA"](), private=False))
    code, _, err = cli("inspect", artifact, "--trusted-key", rsa_pub)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert (
        f"{rsa_pub}: key type RSA is not supported; {SUPPORTED}: trust the OUT.pub of a key pair trtforge keygen "
        "OUT made"
    ) in err


@pytest.mark.parametrize(
    "where", ["--key", SIGNING_KEY_ENV, "--trusted-key", TRUSTED_KEY_ENV, "--key folder", "--trusted-key device"]
)
def test_a_key_that_is_not_a_regular_file_is_refused_at_once(
    where: str, artifact: Path, keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A named pipe as the key waited for a writer forever; a folder or a device is no key either:
    exit 2, one line naming the path, nothing signed."""
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    monkeypatch.delenv(TRUSTED_KEY_ENV, raising=False)
    pipe = tmp_path / "key.fifo"
    os.mkfifo(pipe)
    path, says = pipe, "is not a regular file (a named pipe)"
    if where == "--key folder":
        path, says = keys.parent, "is a directory"
    elif where == "--trusted-key device":
        path, says = Path(os.devnull), "is not a regular file (a character device)"
    if where in (SIGNING_KEY_ENV, TRUSTED_KEY_ENV):
        monkeypatch.setenv(where, str(path))
    flag = where.split()[0]
    option = flag.startswith("--")
    command = "sign" if flag in ("--key", SIGNING_KEY_ENV) else "verify-provenance"
    before = manifest_path_for(artifact).read_bytes()
    with _within(10):
        code, _, err = cli(command, artifact, *((flag, path) if option else ()))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{flag if option else '$' + flag} {path}: {says}; pass the PEM key file" in err, err
    assert manifest_path_for(artifact).read_bytes() == before


def test_no_signing_key_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    with pytest.raises(InvalidInputError, match=f"pass --key FILE or set {SIGNING_KEY_ENV}"):
        load_signing_key()


def test_trusting_a_private_key_is_refused(keys: Path) -> None:
    with pytest.raises(InvalidInputError, match="this is a private key; trust the public key"):
        load_trusted_keys([keys])


@pytest.mark.parametrize(
    ("content", "problem"), [(b"", "the key file is empty"), (b"not a key\n", "no PEM public key in it")]
)
def test_a_trusted_key_file_with_no_key_says_what_it_holds(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "ci.pub"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError) as caught:
        load_trusted_keys([path])
    assert str(caught.value) == f"{path}: {problem}; pass the OUT.pub file that trtforge keygen wrote"


# ---------------------------------------------------------------- sign and verify


def test_signature_covers_the_canonical_manifest_without_the_signature(artifact: Path, keys: Path) -> None:
    key = load_signing_key(keys)
    manifest = read_manifest(artifact)
    signed = sign_manifest(manifest, key)
    assert signed.signature is not None
    assert signed.signature["algorithm"] == "ed25519" and signed.signature["key_id"] == key.key_id
    assert len(base64.b64decode(signed.signature["value"])) == 64
    payload = canonical_payload(signed)
    assert payload == canonical_payload(manifest)  # the signature is not part of what is signed
    # for this ASCII, float-simple document, JCS equals sorted keys without whitespace
    unsigned = json.loads(manifest.to_json())
    assert payload == json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()
    key.private_key.public_key().verify(base64.b64decode(signed.signature["value"]), payload)
    assert verify_manifest(signed, load_trusted_keys([_public(keys)])).status is SignatureStatus.VALID


def test_key_order_and_whitespace_do_not_matter(artifact: Path, keys: Path) -> None:
    """RFC 8785: another JSON writer (sorted keys, no indentation) produces the same signed bytes."""
    sign_artifact(artifact, load_signing_key(keys))
    path = manifest_path_for(artifact)
    path.write_text(json.dumps(json.loads(path.read_text()), sort_keys=True, separators=(",", ":")))
    check = verify_manifest(read_manifest(artifact), load_trusted_keys([_public(keys)]))
    assert check.status is SignatureStatus.VALID


@pytest.mark.parametrize(
    ("change", "status"),
    [
        (lambda m: m.replace(precision="fp16"), SignatureStatus.INVALID),
        (lambda m: m.replace(artifact=m.artifact.model_copy(update={"sha256": "0" * 64})), SignatureStatus.INVALID),
        (
            lambda m: m.replace(signature={**m.signature, "value": base64.b64encode(b"x" * 64).decode()}),
            SignatureStatus.INVALID,
        ),
        (lambda m: m.replace(signature={**m.signature, "value": "not base64!"}), SignatureStatus.MALFORMED),
        # a lenient decoder drops the "*" and finds the genuine signature: the value is not base64
        (
            lambda m: m.replace(signature={**m.signature, "value": "*" + m.signature["value"]}),
            SignatureStatus.MALFORMED,
        ),
        # the genuine signature under another algorithm's name: the named algorithm's keys only
        (lambda m: m.replace(signature={**m.signature, "algorithm": "ecdsa-p256"}), SignatureStatus.INVALID),
        # a value beyond RFC 8785's integers (2**53) has no canonical form, so no signature matches it
        (lambda m: m.replace(accuracy={"outputs": {"logits": {"count": 2**60}}}), SignatureStatus.INVALID),
        (lambda m: m.replace(signature={**m.signature, "algorithm": "rsa"}), SignatureStatus.MALFORMED),
        (lambda m: m.replace(signature=None), SignatureStatus.MISSING),
    ],
    ids=[
        "field-edited",
        "sha256-edited",
        "forged-value",
        "garbage-value",
        "junk-in-value",
        "misnamed-algorithm",
        "not-canonical",
        "other-algorithm",
        "stripped",
    ],
)
def test_tampering_is_detected(artifact: Path, keys: Path, change: object, status: SignatureStatus) -> None:
    signed = sign_manifest(read_manifest(artifact), load_signing_key(keys))
    tampered = change(signed)  # type: ignore[operator]
    assert verify_manifest(tampered, load_trusted_keys([_public(keys)])).status is status


def test_unknown_key_and_key_rotation(artifact: Path, keys: Path) -> None:
    old = generate_keypair(keys.parent / "old")
    signed = sign_manifest(read_manifest(artifact), load_signing_key(keys))
    current = load_trusted_keys([_public(keys)])
    only_old = load_trusted_keys([old.public_path])
    assert verify_manifest(signed, only_old).status is SignatureStatus.UNKNOWN_KEY
    assert verify_manifest(signed, only_old + current) == verify_manifest(signed, current)
    assert verify_manifest(signed, ()).status is SignatureStatus.UNCHECKED
    # the key id is only a label: a genuine signature verifies even when the label was altered
    relabeled = signed.replace(signature={**signed.signature, "key_id": old.key_id})
    assert verify_manifest(relabeled, only_old + current).status is SignatureStatus.VALID
    # ... and names the key that verified it, never the label's
    assert verify_manifest(relabeled, only_old + current) == verify_manifest(signed, current)
    assert verify_manifest(signed, current).key_id == current[0].key_id


def test_ed25519_signing_is_deterministic(artifact: Path, keys: Path) -> None:
    key = load_signing_key(keys)
    first = sign_artifact(artifact, key).manifest.signature
    assert sign_artifact(artifact, key).manifest.signature == first  # re-signing changes nothing


def test_a_non_finite_metric_is_signed_as_the_null_the_file_holds(artifact: Path, keys: Path) -> None:
    """An SNR of +inf (identical outputs) has no JSON form: it is written, and signed, as null."""
    manifest = read_manifest(artifact).replace(accuracy={"outputs": {"logits": {"snr_db": math.inf}}})
    signed = sign_manifest(manifest, load_signing_key(keys))
    write_manifest(manifest_path_for(artifact), signed)
    on_disk = read_manifest(artifact)
    assert on_disk.accuracy == {"outputs": {"logits": {"snr_db": None}}}
    assert verify_manifest(on_disk, load_trusted_keys([_public(keys)])).status is SignatureStatus.VALID


# ---------------------------------------------------------------- the artifact on disk


def test_sign_artifact_rewrites_only_the_manifest_atomically(artifact: Path, keys: Path) -> None:
    manifest_path = manifest_path_for(artifact)
    os.chmod(manifest_path, 0o644)
    engine_before = artifact.read_bytes()
    outcome = sign_artifact(artifact, load_signing_key(keys))
    assert outcome.manifest_path == manifest_path and outcome.replaced_key_id is None
    assert artifact.read_bytes() == engine_before
    assert stat.S_IMODE(manifest_path.stat().st_mode) == 0o644
    assert read_manifest(artifact).signature == outcome.manifest.signature
    assert sorted(p.name for p in artifact.parent.iterdir() if p.name.startswith(".")) == [LOCK_DIR]
    # the manifest path works as the argument too
    assert sign_artifact(manifest_path, load_signing_key(keys)).replaced_key_id == outcome.manifest.signature["key_id"]


def test_sign_refuses_an_engine_that_does_not_match_its_manifest(artifact: Path, keys: Path) -> None:
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    before = manifest_path_for(artifact).read_bytes()
    with pytest.raises(IncompatibleEngineError, match="refusing to sign: engine sha256"):
        sign_artifact(artifact, load_signing_key(keys))
    assert manifest_path_for(artifact).read_bytes() == before


def test_sign_without_a_manifest_is_refused(artifact: Path, keys: Path) -> None:
    manifest_path_for(artifact).unlink()
    with pytest.raises(IncompatibleEngineError, match="manifest missing"):
        sign_artifact(artifact, load_signing_key(keys))


def test_signed_manifest_survives_write_manifest_round_trip(artifact: Path, keys: Path) -> None:
    """What trtforge itself writes (Manifest.to_json) verifies: model dump and file agree."""
    signed = sign_artifact(artifact, load_signing_key(keys)).manifest
    write_manifest(manifest_path_for(artifact), read_manifest(artifact))
    check = verify_manifest(read_manifest(artifact), load_trusted_keys([_public(keys)]))
    assert check.status is SignatureStatus.VALID and signed == read_manifest(artifact)


def test_a_signed_manifest_that_does_not_read_is_exit_2_and_a_signature_that_fails_exit_5(
    artifact: Path, keys: Path
) -> None:
    """README "Exit codes": a manifest that cannot be read is invalid input (2), signed or not: its
    signature is never looked at; a manifest that reads, whose signature does not verify, is refused (5)."""
    sign_artifact(artifact, load_signing_key(keys))
    path = manifest_path_for(artifact)
    signed = path.read_bytes()
    trusted = ("--cc", "8.6", "--require-signature", "--trusted-key", _public(keys))
    for damaged, code, says in (
        (signed.replace(b'"trtforge_version": "', b'"trtforge_version": "9', 1), 5, "does not verify: the manifest or"),
        (signed.replace(b'"algorithm": "ed25519"', b'"algorithm": "rsa"'), 5, "cannot be verified: its algorithm"),
        (signed[: len(signed) // 2], 2, "unreadable manifest, not JSON"),
        (signed.replace(b'"signature": {', b'"signature": {"value": "x", ', 1), 2, "unreadable manifest, key 'value'"),
        (signed.replace(b'"seconds": ', b'"seconds": NaN, "x": ', 1), 2, "unreadable manifest, 'NaN' is not JSON"),
    ):
        path.write_bytes(damaged)
        for command in ("check", "inspect"):
            exit_code, _, err = cli(command, artifact, *(trusted if command == "check" else trusted[3:]))
            assert exit_code == code and says in err, (command, err)


def test_verify_leaves_a_signed_artifact_and_the_report_it_pins_as_they_are(tmp_path: Path, keys: Path) -> None:
    """The signature covers the manifest and, through its ``report_sha256``, the report's bytes:
    verify rewrote that report (another ``created_utc``), so the signed report was gone and publish
    no longer took one. Verify checks the artifact; it never modifies it."""
    need_rtx()
    engine = build_engine(tmp_path / "gated", gate=True)
    sign_artifact(engine, load_signing_key(keys))
    files = [engine, manifest_path_for(engine), engine.with_name(engine.name.replace(".engine", ".accuracy.json"))]

    def state() -> list[tuple[bytes, int, int]]:
        return [(path.read_bytes(), path.stat().st_ino, path.stat().st_mtime_ns) for path in files]

    before = state()
    code, out, err = cli("verify", engine, "--spec", tmp_path / "gated" / "spec.yaml", "--json")
    assert code == 0, err
    (result,) = json.loads(out)["results"]
    assert result["manifest_updated"] is False and result["report_written"] is False
    assert state() == before
    assert f"signed manifest and its report {files[2].name} left unchanged" in err


# ---------------------------------------------------------------- command line


def test_cli_keygen_sign_and_errors(tmp_path: Path, artifact: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["keygen", str(tmp_path / "cli-key"), "--json"])
    assert result.exit_code == 0, result.output
    key_id = json.loads(result.stdout)["key_id"]
    again = runner.invoke(app, ["keygen", str(tmp_path / "cli-key")])
    assert again.exit_code == 2 and "keygen never overwrites" in again.output and "Traceback" not in again.output

    signed = runner.invoke(app, ["sign", str(artifact), "--key", str(tmp_path / "cli-key"), "--json"])
    assert signed.exit_code == 0, signed.output
    assert json.loads(signed.stdout)["signature"]["key_id"] == key_id

    missing = runner.invoke(app, ["sign", str(artifact), "--key", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "key file not found" in missing.output
    assert key_id_of(load_signing_key(tmp_path / "cli-key").private_key.public_key()) == key_id


@pytest.mark.parametrize("command", ["sign", "sign --attest", "verify"])
def test_a_mistyped_artifact_path_is_a_usage_error(tmp_path: Path, keys: Path, command: str) -> None:
    """As check, inspect and publish say it: exit 2, not the exit 5 of an engine without its manifest."""
    spec = Path(__file__).parent.parent / "configs" / "digits-fp32.yaml"
    needs = ["--spec", spec] if command == "verify" else ["--key", keys]
    code, _, err = cli(*command.split(), tmp_path / "nothere.engine", *needs)
    assert code == 2 and "no such engine (nor nothere.manifest.json beside it); check the path" in err


def test_a_build_signs_only_when_a_key_is_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--sign-key`` or a non-empty ``$TRTFORGE_SIGNING_KEY``; an empty variable signs nothing."""
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    assert not signing_requested(None)
    assert signing_requested(tmp_path / "key.pem")
    monkeypatch.setenv(SIGNING_KEY_ENV, "")
    assert not signing_requested(None)
    monkeypatch.setenv(SIGNING_KEY_ENV, str(tmp_path / "key.pem"))
    assert signing_requested(None)
