"""Ed25519 or ECDSA P-256 signatures over the RFC 8785 (JCS) canonical JSON of a manifest without
``signature``; the keys also sign provenance (:mod:`trtforge.provenance`).

The manifest pins the engine's sha256, so one signature covers both files. Keys are PEM files
(``trtforge keygen`` writes them) or environment variables, for CI secrets:

- ``TRTFORGE_SIGNING_KEY``: the private key's PEM text, or a path to it;
  ``TRTFORGE_SIGNING_KEY_PASSWORD``: its passphrase, when the PEM is encrypted (``keygen``
  encrypts with it when it is set).
- ``TRTFORGE_TRUSTED_KEY``: public keys as PEM text (one or more blocks), or paths to PEM files
  separated by ``os.pathsep`` (``:`` on Linux) — several keys allow key rotation.

The signature object: ``{"algorithm": "ed25519" | "ecdsa-p256", "key_id": <16 hex>, "value": <base64
of the signature>}``; the key id is the sha256 of the raw Ed25519 key, or of the uncompressed P-256
point. ECDSA signatures are DER over SHA-256, as securesystemslib, cosign and model-signing make them.

Signing and verifying go through securesystemslib's ``CryptoSigner`` and ``SSlibKey``: the same
code then signs manifests and DSSE envelopes, and a standard verifier checks what trtforge signed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from trtforge.compat import SignatureStatus
from trtforge.environment import file_problem
from trtforge.errors import IncompatibleEngineError, InvalidInputError, disk_error
from trtforge.fsutil import staged_file
from trtforge.keys import SIGNING_KEY_ENV, TRUSTED_KEY_ENV, SigningKey, TrustedKey
from trtforge.manifest import ArtifactPaths, Manifest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from securesystemslib.signer import CryptoSigner, SSlibKey

ALGORITHM = "ed25519"
ECDSA_P256 = "ecdsa-p256"
#: the key types ``keygen --type`` creates and every command accepts; the first is the default
KEY_TYPES = (ALGORITHM, ECDSA_P256)
SIGNING_KEY_PASSWORD_ENV = "TRTFORGE_SIGNING_KEY_PASSWORD"
KEY_ID_LENGTH = 16
PUBLIC_SUFFIX = ".pub"

# cryptography loads one PEM block at a time and has no splitter for non-certificate PEM; a
# trusted-key bundle is just concatenated blocks, which this regex separates.
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class SignatureCheck:
    status: SignatureStatus
    key_id: str | None = None


def key_type_of(public_key: Ed25519PublicKey | EllipticCurvePublicKey) -> str:
    """``ed25519`` or ``ecdsa-p256``: the algorithm a manifest signature names."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return ALGORITHM if isinstance(public_key, Ed25519PublicKey) else ECDSA_P256


def key_id_of(public_key: Ed25519PublicKey | EllipticCurvePublicKey) -> str:
    """Short sha256 of the raw public key (Ed25519: 32 bytes; P-256: the uncompressed point): names
    the key in manifests, envelopes and messages."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if key_type_of(public_key) == ALGORITHM:
        raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    else:
        raw = public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_LENGTH]


def sslib_key(key: TrustedKey) -> SSlibKey:
    """The key as securesystemslib's verifier sees it, under trtforge's key id (DSSE ``keyid``)."""
    from securesystemslib.signer import SSlibKey

    return SSlibKey.from_crypto(key.public_key, keyid=key.key_id)


def sslib_signer(key: SigningKey) -> CryptoSigner:
    from securesystemslib.signer import CryptoSigner, SSlibKey

    return CryptoSigner(key.private_key, SSlibKey.from_crypto(key.private_key.public_key(), keyid=key.key_id))


def verifies(key: TrustedKey, signature: bytes, data: bytes) -> bool:
    """Does ``key`` verify ``signature`` over ``data``? (securesystemslib picks the scheme by key type.)"""
    from securesystemslib.exceptions import UnverifiedSignatureError
    from securesystemslib.signer import Signature

    try:
        sslib_key(key).verify_signature(Signature(key.key_id, signature.hex()), data)
    except UnverifiedSignatureError:
        return False
    return True


# ---------------------------------------------------------------- keys


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    key_id: str


def generate_keypair(out: str | os.PathLike[str], key_type: str = ALGORITHM) -> KeyPair:
    """Write a new private key to ``out`` (mode 0600) and its public key to ``out.pub``; never overwrite.

    ``out`` may be text, so that ``keygen keys/`` is seen naming a folder: ``Path`` drops the slash."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        BestAvailableEncryption,
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    private_path = _key_destination(out)
    public_path = private_path.with_name(private_path.name + PUBLIC_SUFFIX)
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise InvalidInputError(f"{path} already exists; keygen never overwrites a key: choose another OUT")
    if key_type not in KEY_TYPES:
        raise InvalidInputError(f"--type {key_type}: unknown key type; choose one of {', '.join(KEY_TYPES)}")
    private_key = Ed25519PrivateKey.generate() if key_type == ALGORITHM else ec.generate_private_key(ec.SECP256R1())
    password = os.environ.get(SIGNING_KEY_PASSWORD_ENV)
    encryption = BestAvailableEncryption(password.encode()) if password else NoEncryption()
    private_pem = private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption)
    public_pem = private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    _create_new(private_path, private_pem, 0o600)
    try:
        _create_new(public_path, public_pem, 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    return KeyPair(private_path, public_path, key_id_of(private_key.public_key()))


def _key_destination(given: str | os.PathLike[str]) -> Path:
    """OUT names the private key file to create, in a folder that exists: each refusal names the
    path and what to pass instead (``keygen .`` or ``keygen keys/`` names a folder, not a file;
    ``keygen k.pub`` would put the private key in a file named public)."""
    text = os.fspath(given)
    out = Path(text)
    if os.path.basename(text) in ("", ".", "..") or out.is_dir():  # keys/ and keys/. name a folder
        raise InvalidInputError(
            f"OUT {text or out} names a folder; keygen writes a file: name it, e.g. "
            f"trtforge keygen {out / 'signing-key'}"
        )
    if out.name.lower().endswith(PUBLIC_SUFFIX):  # the private key would go to a file named public
        private = out.with_name(out.name[: -len(PUBLIC_SUFFIX)] or "signing-key")
        raise InvalidInputError(
            f"OUT {out} ends in {PUBLIC_SUFFIX}, but OUT gets the private key (and OUT{PUBLIC_SUFFIX} the public one): "
            f"pass the name without it, e.g. trtforge keygen {private}"
        )
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise InvalidInputError(f"OUT {out}: {parent} is a file, not a folder; choose an OUT inside a folder")
    if not parent.is_dir():
        raise InvalidInputError(
            f"OUT {out}: its folder {parent} does not exist; create it (mkdir -p {parent}) or choose another OUT"
        )
    return out


def _create_new(final: Path, data: bytes, mode: int) -> None:
    """``data`` as the new file ``final`` (``staged_file``'s exclusive mode): a key appears complete
    or not at all, and never clobbers one."""
    try:
        with staged_file(final, exclusive=True, mode=mode) as staged:  # a private key is never others'
            staged.write_bytes(data)
    except FileExistsError as exc:
        raise InvalidInputError(f"{final} already exists; keygen never overwrites a key: choose another OUT") from exc
    except OSError as exc:
        raise InvalidInputError(f"cannot write {final}: {exc.strerror}; choose a writable OUT") from exc


def _pem_source(value: str, what: str) -> tuple[bytes, str]:
    """An environment variable holds PEM text or a path to a PEM file."""
    if "-----BEGIN" in value:
        return value.encode(), f"${what}"
    return _read_key_file(Path(value).expanduser(), f"${what}"), value


def _read_key_file(path: Path, flag: str) -> bytes:
    """A key file's bytes; anything but a regular file is refused before it is opened: reading a
    named pipe waits for a writer forever, and a device like /dev/zero never ends."""
    from trtforge.model import not_a_file

    problem = not_a_file(path)
    if problem == "not found":
        raise InvalidInputError(f"{flag} {path}: key file not found; create a key pair with trtforge keygen OUT")
    if problem is not None:
        raise InvalidInputError(f"{flag} {path}: {problem}; pass the PEM key file (trtforge keygen OUT writes one)")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"{flag} {path}: cannot read the key file ({exc.strerror})") from exc


def load_signing_key(path: Path | None = None, flag: str = "--key") -> SigningKey:
    """The private key from ``path`` (the command's ``flag``), else from ``$TRTFORGE_SIGNING_KEY``
    (PEM text or a path)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePrivateKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if path is not None:
        data, source = _read_key_file(path, flag), str(path)
        warning = _open_to_others(path, flag)
    elif os.environ.get(SIGNING_KEY_ENV):
        value = os.environ[SIGNING_KEY_ENV]
        data, source = _pem_source(value, SIGNING_KEY_ENV)
        warning = None if "-----BEGIN" in value else _open_to_others(Path(value).expanduser(), f"${SIGNING_KEY_ENV}")
    else:
        raise InvalidInputError(
            f"no signing key: pass {flag} FILE or set {SIGNING_KEY_ENV} (create one with trtforge keygen OUT)"
        )
    password = os.environ.get(SIGNING_KEY_PASSWORD_ENV)
    try:
        with _quiet_deprecations():
            key = load_pem_private_key(data, password=password.encode() if password else None)
    except (TypeError, ValueError, UnsupportedAlgorithm) as exc:  # the last: a key type's OID it does not know
        raise InvalidInputError(f"{source}: {_private_key_problem(data, bool(password), exc)}") from exc
    if isinstance(key, EllipticCurvePrivateKey) and isinstance(key.curve, SECP256R1):
        return SigningKey(key, key_id_of(key.public_key()), source, warning)
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInputError(
            f"{source}: {_key_kind(key)}; {_SUPPORTED}: create one with trtforge keygen OUT [--type {ECDSA_P256}]"
        )
    return SigningKey(key, key_id_of(key.public_key()), source, warning)


#: how to fix a file given where a private key goes (``sign --key``, ``build --sign-key``)
_PRIVATE_FIX = "pass the private key file trtforge keygen OUT wrote (OUT, not OUT.pub)"


def _private_key_problem(data: bytes, password: bool, exc: Exception) -> str:
    """What is wrong with a private key file that did not load, and how to fix it, judged on the
    file: cryptography's ValueError is one for an empty file, text, a public key, a damaged key and
    a wrong password alike; its TypeError is an encryption the password (``password``: one is
    set) does not match."""
    labels = [label.decode() for label in re.findall(rb"-----BEGIN ([A-Z0-9 ]+)-----", data)]
    if isinstance(exc, TypeError):
        if password:
            return f"the private key is not encrypted, yet {SIGNING_KEY_PASSWORD_ENV} is set; unset it"
        return f"the private key is encrypted; set {SIGNING_KEY_PASSWORD_ENV} to its password"
    if not data.strip():
        return f"the key file is empty; {_PRIVATE_FIX}"
    if any("PUBLIC KEY" in label for label in labels):
        return f"this is a public key, and signing needs the private key; {_PRIVATE_FIX}"
    if not labels:
        return f"not a PEM private key (no -----BEGIN PRIVATE KEY----- block in it); {_PRIVATE_FIX}"
    if password and b"ENCRYPTED" in data:
        return f"{SIGNING_KEY_PASSWORD_ENV} does not decrypt this encrypted private key; set it to the key's password"
    return f"its {labels[0]} block does not load as a private key; {_PRIVATE_FIX}"


def _open_to_others(path: Path, flag: str) -> str | None:
    """ssh's check of a private key file: one that other users may read or change (any group or
    other permission) lets them sign as its owner. Said (``SigningKey.warning``), not refused: the
    signature is as good, and a CI job that wrote its secret under umask 022 should still sign."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:  # gone since it was read: nothing to say about it
        return None
    if not mode & 0o077:
        return None
    return (
        f"{flag} {path}: other users may read or change this private key (mode {mode:04o}), and whoever reads it "
        f"can sign as you: chmod 600 {path}"
    )


def load_trusted_keys(paths: Sequence[Path | str] | Path | str = ()) -> tuple[TrustedKey, ...]:
    """Public keys from ``paths`` (one path, or several; each file may hold several PEM blocks),
    else from ``$TRTFORGE_TRUSTED_KEY``."""
    if isinstance(paths, (str, Path)):  # one path, not the characters of one
        paths = [paths]
    sources = [(_read_key_file(Path(path), "--trusted-key"), str(path)) for path in paths]
    if not paths and os.environ.get(TRUSTED_KEY_ENV):
        value = os.environ[TRUSTED_KEY_ENV]
        if "-----BEGIN" in value:
            sources.append(_pem_source(value, TRUSTED_KEY_ENV))
        else:
            sources.extend(_pem_source(part, TRUSTED_KEY_ENV) for part in value.split(os.pathsep) if part)
    keys: list[TrustedKey] = []
    for data, source in sources:
        keys.extend(_public_keys(data, source))
    return tuple(keys)


#: what a refused key type is told: the types of :data:`KEY_TYPES`, as ``keygen --type`` names them
_SUPPORTED = f"trtforge signs and verifies {' and '.join(KEY_TYPES)} keys only"


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    """cryptography warns on stderr as it loads a DSA key, which is refused a line later: the
    user gets that one line."""
    from cryptography.utils import CryptographyDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        yield


def _key_kind(key: object) -> str:
    """``key type RSA is not supported`` (the class name less ``PrivateKey``/``PublicKey``: RSA,
    DSA, Ed448, X25519), or ``key type ECDSA secp384r1 ...``: a refused key named in one line."""
    curve = getattr(key, "curve", None)
    if curve is not None:
        return f"key type ECDSA {curve.name} is not supported"
    name = type(key).__name__.removeprefix("_").removesuffix("PrivateKey").removesuffix("PublicKey")
    return f"key type {name} is not supported"


def _public_keys(data: bytes, source: str) -> list[TrustedKey]:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = data.decode("ascii", errors="replace")
    blocks = list(_PEM_BLOCK.finditer(text))
    if not blocks:
        problem = "the key file is empty" if not text.strip() else "no PEM public key in it"
        raise InvalidInputError(f"{source}: {problem}; pass the OUT.pub file that trtforge keygen wrote")
    keys = []
    for block in blocks:
        if "PRIVATE KEY" in block.group(1):
            raise InvalidInputError(
                f"{source}: this is a private key; trust the public key (OUT.pub) and keep the private key secret"
            )
        try:
            with _quiet_deprecations():
                key = load_pem_public_key(block.group(0).encode())
        except (ValueError, UnsupportedAlgorithm) as exc:  # the last: a key type's OID it does not know
            raise InvalidInputError(f"{source}: a damaged PEM public key ({exc})") from exc
        if not isinstance(key, (Ed25519PublicKey, EllipticCurvePublicKey)) or (
            isinstance(key, EllipticCurvePublicKey) and not isinstance(key.curve, SECP256R1)
        ):
            raise InvalidInputError(
                f"{source}: {_key_kind(key)}; {_SUPPORTED}: trust the OUT.pub of a key pair trtforge keygen OUT made"
            )
        keys.append(TrustedKey(key, key_id_of(key), source))
    return keys


# ---------------------------------------------------------------- sign and verify (pure)


def canonical_payload(manifest: Manifest) -> bytes:
    """What is signed: RFC 8785 canonical JSON of the manifest without ``signature``.

    ``to_dict`` is what ``to_json`` writes (pydantic turns NaN/Infinity into null there), so
    the signed bytes and the file always agree.
    """
    import rfc8785

    data = manifest.to_dict()
    data.pop("signature", None)
    try:
        return rfc8785.dumps(data)
    except rfc8785.CanonicalizationError as exc:  # e.g. an integer beyond 2**53 in a free-form section
        raise InvalidInputError(
            f"manifest of {manifest.artifact.file} cannot be written as RFC 8785 canonical JSON ({exc}); "
            "it was not written by trtforge build: rebuild the artifact"
        ) from exc


def sign_manifest(manifest: Manifest, key: SigningKey) -> Manifest:
    signature = bytes.fromhex(sslib_signer(key).sign(canonical_payload(manifest)).signature)
    algorithm = key_type_of(key.private_key.public_key())
    signed = manifest.replace(
        signature={"algorithm": algorithm, "key_id": key.key_id, "value": base64.b64encode(signature).decode()}
    )
    # as its file reads back: given the keys the file holds (a build's manifest was given fp16=None,
    # which the file omits, and no schema), which verify_manifest checks
    return Manifest.model_validate(signed.to_dict(), strict=True)


def verify_manifest(manifest: Manifest, trusted: Sequence[TrustedKey]) -> SignatureCheck:
    """VALID when a trusted key verifies the signature; the key id names which one (or which not)."""
    signature = manifest.signature
    if signature is None:
        return SignatureCheck(SignatureStatus.MISSING)
    key_id = signature.get("key_id")
    if not trusted:
        return SignatureCheck(SignatureStatus.UNCHECKED, key_id)
    if signature.get("algorithm") not in KEY_TYPES:
        return SignatureCheck(SignatureStatus.MALFORMED, key_id)
    try:
        value = base64.b64decode(signature.get("value", ""), validate=True)
    except ValueError:  # binascii.Error is a ValueError
        return SignatureCheck(SignatureStatus.MALFORMED, key_id)
    if _keys_not_as_written(manifest, manifest.to_dict()):  # the signed bytes are not the file's
        return SignatureCheck(SignatureStatus.INVALID, key_id)
    try:
        payload = canonical_payload(manifest)
    except InvalidInputError:  # no JCS form, so no signature can match it
        return SignatureCheck(SignatureStatus.INVALID, key_id)
    # the key id is a label outside the signed bytes: try the named key first, then the others
    ordered = sorted(trusted, key=lambda candidate: candidate.key_id != key_id)
    for candidate in ordered:
        if key_type_of(candidate.public_key) == signature.get("algorithm") and verifies(candidate, value, payload):
            return SignatureCheck(SignatureStatus.VALID, candidate.key_id)
    named = any(candidate.key_id == key_id for candidate in trusted)
    return SignatureCheck(SignatureStatus.INVALID if named else SignatureStatus.UNKNOWN_KEY, key_id)


def _keys_not_as_written(model: BaseModel, written: Any) -> bool:
    """Did the file hold other keys than the ones trtforge writes for ``model`` (``written``, its
    ``to_dict``), at any depth? What is signed is the JCS of the manifest as trtforge reads it: a key
    the reading fills in with its default (``schema`` dropped) or drops (``"fp16": null`` added) left
    a file that another RFC 8785 verifier refuses, which must not verify here either."""
    fields = type(model).model_fields
    read = {info.alias or name for name, info in fields.items() if name in model.model_fields_set}
    if not isinstance(written, dict) or read != set(written):
        return True
    for name, info in fields.items():
        value, key = getattr(model, name), info.alias or name
        pairs = zip(value, written[key], strict=True) if isinstance(value, list) else [(value, written.get(key))]
        if any(isinstance(item, BaseModel) and _keys_not_as_written(item, dump) for item, dump in pairs):
            return True
    return False


# ---------------------------------------------------------------- the artifact (side effects)


@dataclass(frozen=True)
class SignOutcome:
    manifest_path: Path
    manifest: Manifest
    replaced_key_id: str | None


@contextlib.contextmanager
def artifact_to_sign(paths: ArtifactPaths, action: str) -> Iterator[tuple[Manifest, Path]]:
    """The artifact's manifest, locked for the block (no build replaces the artifact meanwhile), and
    its engine, proved to be the one the manifest pins: a signature vouches for the engine's sha256,
    so a missing, damaged or foreign engine is refused (exit 5) rather than signed. ``action`` is
    what the refusal says is not done (``sign``, ``sign and attest``)."""
    from trtforge.artifact import locked_manifest

    with locked_manifest(paths.manifest) as manifest:
        engine = paths.existing_engine(f"{action} the .engine that sits beside its manifest")
        problem = file_problem(manifest, engine)
        if problem:
            raise IncompatibleEngineError(f"{engine}: refusing to {action}: {problem}", reasons=[problem])
        yield manifest, engine


def sign_artifact(engine_or_manifest: Path, key: SigningKey) -> SignOutcome:
    """Sign an artifact's manifest in place (atomic rewrite), after proving the engine matches it
    (:func:`artifact_to_sign`)."""
    paths = ArtifactPaths.of(engine_or_manifest).must_exist()
    manifest_path = paths.manifest
    with artifact_to_sign(paths, "sign") as (manifest, _):
        previous = (manifest.signature or {}).get("key_id")
        signed = sign_manifest(manifest, key)
        mode = manifest_path.stat().st_mode & 0o777
        try:
            with staged_file(manifest_path) as staged:
                staged.write_text(signed.to_json(), encoding="utf-8")
                os.chmod(staged, mode)  # keep the manifest's permissions (a temporary gets the umask's)
        except OSError as exc:
            raise disk_error(exc, manifest_path) or InvalidInputError(
                f"{manifest_path}: cannot rewrite the manifest ({exc.strerror})"
            ) from exc
    return SignOutcome(manifest_path, signed, previous)
