"""Property-based tests (Hypothesis) of signed manifests and signed provenance, which a user trusts to
refuse anything changed after signing: any edit of a signed manifest's content or signature, or of
an attestation's envelope or statement, is refused (the Python verifier, ``check --require-signature``,
``verify-provenance``); an edit RFC 8785 does not see is not; another key's signature is never
trusted; and any bytes given as a key file are trtforge's own one-line error. One real build."""

from __future__ import annotations

import base64
import copy
import json
import math
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from clitools import cli
from documents import at, mappings, places
from hypothesis import given, settings
from hypothesis import strategies as st
from models import need_rtx
from registry import build_engine

from trtforge.compat import SignatureStatus
from trtforge.errors import InvalidInputError
from trtforge.manifest import Manifest, attestation_path, manifest_path_for, parse_manifest
from trtforge.provenance import sign_and_attest
from trtforge.signing import (
    canonical_payload,
    generate_keypair,
    load_signing_key,
    load_trusted_keys,
    sign_manifest,
    verify_manifest,
)

need_rtx()

#: reproducible in CI; the per-test cache folder (conftest) is no state an example depends on


# --- an independent RFC 8785 (JCS) writer: the oracle ------------------------------------------


def _jcs_number(value: float) -> str:
    """ECMAScript's Number::toString (RFC 8785 section 3.2.2.3) from the shortest round-trip digits."""
    if value == 0:
        return "0"
    _, digits, exponent = Decimal(repr(abs(value))).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    point = len(digits) + int(exponent)  # ES's n: value = 0.text * 10**point
    out = "-" if value < 0 else ""
    if len(text) <= point <= 21:
        return out + text + "0" * (point - len(text))
    if 0 < point <= 21:
        return out + text[:point] + "." + text[point:]
    if -6 < point <= 0:
        return out + "0." + "0" * -point + text
    mantissa = text if len(text) == 1 else f"{text[0]}.{text[1:]}"
    return f"{out}{mantissa}e{'+' if point - 1 >= 0 else '-'}{abs(point - 1)}"


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _jcs_string(text: str) -> str:
    return '"' + "".join(_ESCAPES.get(c, f"\\u{ord(c):04x}" if ord(c) < 0x20 else c) for c in text) + '"'


def reference_jcs(node: Any) -> str:
    """RFC 8785 written from the RFC, not from a library: keys sorted by UTF-16 code units, strings
    with the minimal escapes, numbers as ECMAScript prints them, integers only within 2**53."""
    if node is None or isinstance(node, bool):
        return {None: "null", True: "true", False: "false"}[node]
    if isinstance(node, int):
        if abs(node) > 2**53 - 1:
            raise ValueError(f"{node} is beyond I-JSON's integers")
        return str(node)
    if isinstance(node, float):
        if not math.isfinite(node):
            raise ValueError(f"{node} is not JSON")
        return _jcs_number(node)
    if isinstance(node, str):
        return _jcs_string(node)
    if isinstance(node, list):
        return "[" + ",".join(reference_jcs(item) for item in node) + "]"
    ordered = sorted(node.items(), key=lambda item: item[0].encode("utf-16-be"))
    return "{" + ",".join(f"{_jcs_string(key)}:{reference_jcs(value)}" for key, value in ordered) + "}"


#: floats at the edges of the shortest round-trip rule and of ES's fixed/exponent switch
EDGE_FLOATS = st.sampled_from(
    [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e21, 1e20, 9.999999999999999e20, 1e-6, 1e-7,
     1.0000000000000002, 0.1, 0.30000000000000004, 123456789012345680000.0, 4096.0, -0.0, 2.0**53, 2.0**53 + 2,
     333333333.3333333, 1e23, 5e-7, 0.000001234]
)  # fmt: skip
#: keys whose UTF-16 order differs from their code point (and UTF-8) order: U+E000 and U+FFFF sort
#: before an astral character in UTF-8 and after it in UTF-16
UNICODE_KEYS = st.sampled_from(["\ue000", "\uffff", "\U0001f600", "\U00010000", "a", "A", "é", "", "\x7f", "\x1f"])
JCS_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | EDGE_FLOATS
    | st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=6)
)
JCS_DOCUMENTS = st.recursive(
    JCS_SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(UNICODE_KEYS | st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=4), inner,
                      max_size=4),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=800)
@given(document=JCS_DOCUMENTS)
def test_the_signed_bytes_are_rfc_8785_as_the_rfc_writes_them(document: Any) -> None:
    """What trtforge signs must be the bytes any other RFC 8785 verifier (Go, JS, Java) computes from
    the same manifest, or a genuine signature fails there (or a forged one passes here): the library
    trtforge signs with agrees byte for byte with a writer built from the RFC's text."""
    assert rfc8785.dumps(document) == reference_jcs(document).encode("utf-8")


@settings(max_examples=200)
@given(accuracy=st.dictionaries(UNICODE_KEYS, JCS_DOCUMENTS, max_size=4))
def test_a_manifests_canonical_payload_is_rfc_8785_of_its_file(signed: tuple[Path, Path], accuracy: Any) -> None:
    """The free-form section of a manifest (``accuracy``) holds any JSON: the payload trtforge signs is
    the RFC 8785 form of the manifest file without ``signature``, whatever that section holds."""
    manifest = parse_manifest(manifest_path_for(signed[0]).read_bytes(), "signed.manifest.json")
    edited = manifest.replace(accuracy=accuracy)
    document = json.loads(edited.to_json())
    document.pop("signature", None)
    assert canonical_payload(edited) == reference_jcs(document).encode("utf-8")


# --- one signed, attested engine ------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real TensorRT-RTX engine, its manifest signed and attested (``sign --attest``) with a fresh
    Ed25519 key: returns the engine and the private key (its public key is beside it, ``.pub``)."""
    folder = tmp_path_factory.mktemp("props-signing")
    engine = build_engine(folder)
    private = generate_keypair(folder / "ci.key").private_path
    sign_and_attest(engine, load_signing_key(private))
    return engine, private


def _public(private: Path) -> Path:
    return private.with_name(private.name + ".pub")


def _copy(engine: Path, folder: Path) -> Path:
    """The artifact (engine, manifest, attestation) in a folder of its own, for one example."""
    target = folder / f"example-{len(list(folder.iterdir()))}"
    target.mkdir()
    for source in (engine, manifest_path_for(engine), attestation_path(engine)):
        (target / source.name).write_bytes(source.read_bytes())
    return target / engine.name


def _one_refusal(code: int, err: str, expected: int) -> None:
    """The documented exit code, one error line, never an internal error or a traceback."""
    assert code == expected, f"exit {code}, expected {expected}: {err}"
    assert "Traceback" not in err and "internal error" not in err, err
    errors = [line for line in err.splitlines() if " error: " in f" {line}"]
    assert len(errors) == 1, repr(err)


# --- edits of a JSON document ---------------------------------------------------------------------

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.sampled_from([0, 1, -1, 0.5, "", " ", "fp16", "8.6", "0" * 64, [], {}]),
)

#: keys added to an object: any, and those a reading could fill in, drop or take for another
ADDED_KEYS = st.text(max_size=8) | st.sampled_from(["schema", "schema_", "fp16", "model_sha256", "signature"])


def _nudged(value: Any) -> st.SearchStrategy[Any]:
    """A value next to ``value``: one character or one unit off, or its other type."""
    if isinstance(value, bool):
        return st.sampled_from([not value, int(value), str(value).lower()])
    if isinstance(value, int):
        return st.sampled_from([value + 1, value - 1, -value - 1, str(value), value + 0.5])
    if isinstance(value, float):
        return st.sampled_from([math.nextafter(value, math.inf), -value - 1.0, value * 2 + 1, str(value)])
    if isinstance(value, str):
        return st.integers(min_value=0, max_value=len(value)).flatmap(
            lambda cut: st.sampled_from(
                [
                    value[:cut] + "x" + value[cut + 1 :],
                    value[:cut] + value[cut + 1 :],
                    value + "\n",
                    value.upper() + "_",
                ]
            )
        )
    return VALUES


@st.composite
def content_edits(draw: st.DrawFn, document: dict[str, Any], skip: tuple[Any, ...] = ()) -> dict[str, Any]:
    """``document`` with one change at one place at any depth: a value nudged or replaced, a key
    dropped or added. Places under ``skip`` (a path prefix) are left alone."""
    edited = copy.deepcopy(document)

    def outside(path: tuple[Any, ...]) -> bool:
        return not skip or path[: len(skip)] != skip

    chosen = [path for path in places(edited) if path and outside(path)]
    kind = draw(st.sampled_from(["nudge", "nudge", "replace", "drop", "add"]))
    if kind == "add":
        where = at(edited, draw(st.sampled_from([path for path in mappings(edited) if outside(path)])))
        where[draw(ADDED_KEYS.filter(lambda key: key not in where))] = draw(VALUES)
        return edited
    path = draw(st.sampled_from(chosen))
    parent, last = at(edited, path[:-1]), path[-1]
    if kind == "drop":
        del parent[last]
    elif kind == "nudge":
        parent[last] = draw(_nudged(parent[last]))
    else:
        parent[last] = draw(VALUES)
    return edited


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON reads them: ``4096`` is ``4096.0``, but ``true`` is not ``1`` (Python says it is)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


# --- signed manifests -----------------------------------------------------------------------------


def _document(engine: Path) -> dict[str, Any]:
    return json.loads(manifest_path_for(engine).read_bytes())


def _unchanged(original: dict[str, Any], edited: Any) -> bool:
    """The edit changes neither the signed content nor the signature's algorithm and value. Its key
    id, and any other key of the signature object, are labels outside the signed bytes (README
    "Signing": a relabeled genuine signature still verifies, and names the key that verified it)."""
    if not isinstance(edited, dict) or not isinstance(edited.get("signature"), dict):
        return False
    unsigned = {key: value for key, value in original.items() if key != "signature"}
    edited_unsigned = {key: value for key, value in edited.items() if key != "signature"}
    signed_parts = ("algorithm", "value")
    return _same_json(unsigned, edited_unsigned) and all(
        key in edited["signature"] and _same_json(edited["signature"][key], original["signature"][key])
        for key in signed_parts
    )


@settings(max_examples=600)
@given(data=st.data())
def test_any_change_to_a_signed_manifest_is_refused_by_the_verifier(
    signed: tuple[Path, Path], data: st.DataObject
) -> None:
    """A signature is worth something only if no edit of the manifest (any value, any key added or
    dropped, at any depth) or of its signature keeps it valid: the Python verifier (the loader's
    ``LoadPolicy``) says VALID only for the content as signed."""
    engine, private = signed
    original = _document(engine)
    edited = data.draw(content_edits(original, skip=("signature", "key_id")))
    try:
        manifest = parse_manifest(json.dumps(edited).encode(), "edited.manifest.json")
    except InvalidInputError as exc:
        assert exc.exit_code == 2  # unreadable: its signature is never judged (README "Signing")
        return
    status = verify_manifest(manifest, load_trusted_keys([_public(private)])).status
    if _unchanged(original, edited):
        assert status is SignatureStatus.VALID
    else:
        assert status is not SignatureStatus.VALID, f"an edited manifest verifies: {edited}"


@st.composite
def invisible_rewrites(draw: st.DrawFn, document: dict[str, Any]) -> bytes:
    """The manifest as another JSON writer puts it: keys in any order, any indentation or spacing,
    whole numbers as floats (``4096.0``), non-ASCII as ``\\u`` escapes or not."""

    def shuffled(node: Any) -> Any:
        if isinstance(node, dict):
            items = [(key, shuffled(value)) for key, value in node.items()]
            random.Random(draw(st.integers(0, 2**16))).shuffle(items)
            return dict(items)
        if isinstance(node, list):
            return [shuffled(item) for item in node]
        if isinstance(node, int) and not isinstance(node, bool) and abs(node) < 2**53 and draw(st.booleans()):
            return float(node)
        return node

    indent = draw(st.sampled_from([None, 0, 1, 2, 4, "\t"]))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (",", " : ")]))
    text = json.dumps(shuffled(document), indent=indent, separators=separators, ensure_ascii=draw(st.booleans()))
    return (draw(st.sampled_from(["", " ", "\n"])) + text + draw(st.sampled_from(["", "\n", " \r\n"]))).encode()


@settings(max_examples=60)
@given(data=st.data())
def test_changes_rfc_8785_does_not_see_are_accepted_and_any_other_refused_by_check(
    signed: tuple[Path, Path], data: st.DataObject, tmp_path: Path
) -> None:
    """``check --require-signature --trusted-key`` is the gate CI and deploys use: the manifest as
    another JSON writer rewrote it (key order, spacing, ``4096.0``) still passes (exit 0), and any
    change of content or signature is refused on one line: exit 5 (the signature does not verify, or
    the engine is not the manifest's), or 2 for a manifest that no longer reads."""
    engine, private = signed
    original = _document(engine)
    copy_ = _copy(engine, tmp_path)
    invisible = data.draw(st.booleans())
    if invisible:
        manifest_path_for(copy_).write_bytes(data.draw(invisible_rewrites(original)))
    else:
        edited = data.draw(content_edits(original, skip=("signature", "key_id")))
        manifest_path_for(copy_).write_bytes(json.dumps(edited, indent=2).encode())
    code, _, err = cli("check", copy_, "--cc", "8.6", "--require-signature", "--trusted-key", _public(private))
    if invisible or _unchanged(original, edited):
        assert code == 0, err
        return
    try:
        parse_manifest(json.dumps(edited).encode(), "edited.manifest.json")
    except InvalidInputError:
        _one_refusal(code, err, 2)
        return
    _one_refusal(code, err, 5)


# --- another key ----------------------------------------------------------------------------------


@settings(max_examples=12)
@given(
    signer_type=st.sampled_from(["ed25519", "ecdsa-p256"]),
    other_type=st.sampled_from(["ed25519", "ecdsa-p256"]),
    label=st.sampled_from(["signer", "other", "junk"]),
)
def test_another_keys_valid_signature_is_never_trusted(
    signed: tuple[Path, Path], tmp_path: Path, signer_type: str, other_type: str, label: str
) -> None:
    """A genuine signature by a key the user does not trust (a leaked CI key of another project, a
    key rotated out) is no signature: never VALID, whatever key id its label claims (that of the
    trusted key included); trusted beside the signer's, the signer's key is named, never the label."""
    folder = tmp_path / f"keys-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    signer = generate_keypair(folder / "signer", signer_type)
    other = generate_keypair(folder / "other", other_type)
    manifest = sign_manifest(
        parse_manifest(manifest_path_for(signed[0]).read_bytes(), "signed.manifest.json"),
        load_signing_key(signer.private_path),
    )
    assert manifest.signature is not None
    key_id = {"signer": signer.key_id, "other": other.key_id, "junk": "0" * 16}[label]
    relabeled: Manifest = manifest.replace(signature={**manifest.signature, "key_id": key_id})
    untrusted = verify_manifest(relabeled, load_trusted_keys([other.public_path]))
    assert untrusted.status in (SignatureStatus.UNKNOWN_KEY, SignatureStatus.INVALID), untrusted
    both = verify_manifest(relabeled, load_trusted_keys([other.public_path, signer.public_path]))
    assert both == verify_manifest(manifest, load_trusted_keys([signer.public_path]))
    assert both.status is SignatureStatus.VALID and both.key_id == signer.key_id


# --- key files ------------------------------------------------------------------------------------


def _pems() -> dict[str, bytes]:
    """PEM files of the kinds users hand over: each key type, public and private; fixed keys (RSA
    aside), so that a failing example replays."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

    pems: dict[str, bytes] = {}
    for name, key in (
        ("ed25519", ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))),
        ("p256", ec.derive_private_key(12345, ec.SECP256R1())),
        ("p384", ec.derive_private_key(67890, ec.SECP384R1())),
        ("rsa", rsa.generate_private_key(public_exponent=65537, key_size=1024)),  # the one random key
        ("ed448", ed448.Ed448PrivateKey.from_private_bytes(bytes(range(57)))),
        ("x25519", x25519.X25519PrivateKey.from_private_bytes(bytes(range(32)))),
    ):
        pems[f"{name}-private"] = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        pems[f"{name}-public"] = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return pems


PEMS = _pems()


def _pem_parts(pem: bytes) -> tuple[bytes, bytes, bytes]:
    head, _, rest = pem.partition(b"\n")
    body, _, tail = rest.rpartition(b"-----END")
    return head, base64.b64decode(body), b"-----END" + tail


@st.composite
def key_files(draw: st.DrawFn) -> bytes:
    """Bytes given as a key file: anything, or a real PEM of any type with its DER damaged (a byte
    changed, cut short), its label swapped, or two blocks together."""
    kind = draw(st.sampled_from(["bytes", "pem", "der", "der", "label", "two", "cut"]))
    pem = PEMS[draw(st.sampled_from(sorted(PEMS)))]
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "pem":
        return pem
    head, der, tail = _pem_parts(pem)
    if kind == "der":
        spot = draw(st.integers(0, len(der) - 1))
        der = der[:spot] + bytes([draw(st.integers(0, 255))]) + der[spot + 1 :]
        return head + b"\n" + base64.encodebytes(der) + tail
    if kind == "cut":
        return head + b"\n" + base64.encodebytes(der[: draw(st.integers(0, len(der) - 1))]) + tail
    if kind == "label":
        label = draw(st.sampled_from([b"PUBLIC KEY", b"PRIVATE KEY", b"EC PRIVATE KEY", b"CERTIFICATE", b"X"]))
        return b"-----BEGIN " + label + b"-----\n" + base64.encodebytes(der) + b"-----END " + label + b"-----\n"
    return pem + PEMS[draw(st.sampled_from(sorted(PEMS)))]


@settings(max_examples=500)
@given(content=key_files())
def test_any_bytes_as_a_key_file_load_or_are_a_one_line_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    """A key file comes from a secret store, a copy and paste, a wrong path: whatever its bytes, reading
    it as a trusted or a signing key gives keys or exit 2 naming the file, never a library's exception."""
    path = tmp_path / "given.pem"
    path.write_bytes(content)
    path.chmod(0o600)
    for load in (lambda: load_trusted_keys([path]), lambda: load_signing_key(path)):
        try:
            load()
        except InvalidInputError as exc:
            message = str(exc)
            assert exc.exit_code == 2 and str(path) in message and "\n" not in message, message


@settings(max_examples=25)
@given(content=key_files())
def test_any_bytes_as_a_trusted_key_on_the_command_line_are_exit_2_or_judged(
    signed: tuple[Path, Path], tmp_path: Path, content: bytes
) -> None:
    """``check --require-signature --trusted-key FILE``: a file that holds no usable key is exit 2
    naming it (before any work); one that holds some other key refuses the signature (exit 5)."""
    path = tmp_path / f"given-{len(list(tmp_path.iterdir()))}.pem"
    path.write_bytes(content)
    code, _, err = cli("check", signed[0], "--cc", "8.6", "--require-signature", "--trusted-key", path)
    _one_refusal(code, err, 5 if code == 5 else 2)
    if code == 2:
        assert str(path) in err, err


# --- signed provenance ----------------------------------------------------------------------------


def _decoded(envelope: Any) -> Any:
    """What an envelope says as its signature covers it (DSSE's PAE): the payload's bytes, its type,
    and each signature's key id and bytes, base64 decoded as securesystemslib decodes them; None for
    an envelope that does not decode."""
    try:
        signatures = [(item["keyid"], base64.b64decode(item["sig"], validate=True)) for item in envelope["signatures"]]
        return base64.b64decode(envelope["payload"], validate=True), envelope["payloadType"], signatures
    except (KeyError, TypeError, ValueError):
        return None


@st.composite
def envelope_edits(draw: st.DrawFn, envelope: dict[str, Any]) -> dict[str, Any]:
    """``envelope`` with one change: its statement edited (any place, the subject digests above all)
    or one payload byte changed, then base64 again without signing; its payloadType nudged; a
    signature's key id or value nudged, or a signature or one of its fields dropped."""
    edited = copy.deepcopy(envelope)
    payload = base64.b64decode(edited["payload"])
    kind = draw(st.sampled_from(["statement", "subject", "byte", "type", "keyid", "sig", "drop"]))
    if kind in ("statement", "subject"):
        document = json.loads(payload)
        if kind == "subject":
            subject = document["subject"][draw(st.sampled_from(range(len(document["subject"]))))]
            subject["digest"]["sha256"] = draw(_nudged(subject["digest"]["sha256"]))
        else:
            document = draw(content_edits(document))
        payload = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    elif kind == "byte":
        spot = draw(st.integers(0, len(payload) - 1))
        payload = payload[:spot] + bytes([draw(st.integers(0, 255))]) + payload[spot + 1 :]
    edited["payload"] = base64.b64encode(payload).decode()
    signature = edited["signatures"][0]
    if kind == "type":
        edited["payloadType"] = draw(_nudged(edited["payloadType"]))
    elif kind in ("keyid", "sig"):
        signature[kind] = draw(_nudged(signature[kind]))
    elif kind == "drop":
        where = draw(st.sampled_from(["signature", "keyid", "sig", "payload", "payloadType", "signatures"]))
        del (edited["signatures"] if where == "signature" else signature if where in ("keyid", "sig") else edited)[
            0 if where == "signature" else where
        ]
    return edited


@settings(max_examples=100)
@given(data=st.data())
def test_any_change_to_a_signed_attestation_is_refused_by_verify_provenance(
    signed: tuple[Path, Path], data: st.DataObject, tmp_path: Path
) -> None:
    """``verify-provenance`` is what a deploy trusts to say which files built an engine: any change to
    the DSSE envelope's payload (the statement, its subject digests included), payloadType or
    signatures after signing is refused on one line, exit 5; an unchanged envelope verifies."""
    engine, private = signed
    original = json.loads(attestation_path(engine).read_bytes())
    edited = data.draw(envelope_edits(original))
    copy_ = _copy(engine, tmp_path)
    attestation_path(copy_).write_text(json.dumps(edited) + "\n")
    code, _, err = cli("verify-provenance", copy_, "--trusted-key", _public(private))
    if _decoded(edited) == _decoded(original):
        assert code == 0, err
    else:
        _one_refusal(code, err, 5)


# --- the defects the properties found, pinned ------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "shown"),
    [
        (lambda d: d.pop("schema"), "schema dropped"),
        (lambda d: d.update(fp16=None), '"fp16": null added'),
        (lambda d: d["source"].update(model_sha256=None), '"model_sha256": null added'),
    ],
    ids=["schema-dropped", "fp16-null-added", "model-sha256-null-added"],
)
def test_a_key_the_reading_fills_in_or_drops_is_a_change_the_signature_refuses(
    signed: tuple[Path, Path], tmp_path: Path, edit: Any, shown: str
) -> None:
    """The signature covers the JCS of the manifest as trtforge reads it: a signed manifest with
    ``schema`` dropped (read as its default) or ``"fp16": null`` added (written as absent) verified,
    though another RFC 8785 verifier, hashing the file, refuses it: ``check --require-signature``
    passed it (exit 0). Now: INVALID, exit 5 on one line."""
    engine, private = signed
    document = _document(engine)
    edit(document)
    manifest = parse_manifest(json.dumps(document).encode(), "edited.manifest.json")
    assert verify_manifest(manifest, load_trusted_keys([_public(private)])).status is SignatureStatus.INVALID, shown
    copy_ = _copy(engine, tmp_path)
    manifest_path_for(copy_).write_text(json.dumps(document, indent=2))
    code, _, err = cli("check", copy_, "--cc", "8.6", "--require-signature", "--trusted-key", _public(private))
    _one_refusal(code, err, 5)
    assert "does not verify" in err, err


def test_a_manifest_made_in_memory_and_signed_verifies(signed: tuple[Path, Path]) -> None:
    """A build makes its manifest in memory (no ``schema`` given, ``fp16=None`` given): signed, it
    verifies as its file does; the check of the keys a file held never refuses trtforge's own."""
    engine, private = signed
    read = parse_manifest(manifest_path_for(engine).read_bytes(), "signed.manifest.json")
    fields = {name: value for name, value in read.model_dump().items() if name not in ("schema_", "fp16")}
    made = Manifest(**fields, fp16=None)
    check = verify_manifest(sign_manifest(made, load_signing_key(private)), load_trusted_keys([_public(private)]))
    assert check.status is SignatureStatus.VALID


def test_the_python_name_of_schema_is_not_a_key_of_the_file(signed: tuple[Path, Path]) -> None:
    """``populate_by_name`` let the reader take ``schema_`` (the field's Python name) for ``schema``:
    a signed manifest with the key renamed verified, and the shipped JSON Schema refuses it. Now it
    is unreadable (exit 2), as any key trtforge does not write is."""
    document = _document(signed[0])
    document["schema_"] = document.pop("schema")
    with pytest.raises(InvalidInputError, match="not a trtforge manifest") as caught:
        parse_manifest(json.dumps(document).encode(), "edited.manifest.json")
    assert caught.value.exit_code == 2


#: an Ed25519 key whose algorithm OID (1.3.101.112) is changed to one cryptography does not know
UNKNOWN_OID_PRIVATE = (
    b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDAGVwBCIEIMb1JoFDKhjbW/GdHDLmdL5c4Y9QKruFhuSnpeSLkAKG\n"
    b"-----END PRIVATE KEY-----\n"
)


@pytest.mark.parametrize("flag", ["--key", "--trusted-key"])
def test_a_key_of_an_algorithm_cryptography_does_not_know_is_exit_2_naming_the_file(
    signed: tuple[Path, Path], tmp_path: Path, flag: str
) -> None:
    """cryptography raises UnsupportedAlgorithm, which is not a ValueError, for a key whose algorithm
    OID it does not know: ``sign --key`` and ``check --trusted-key`` said "internal error" (exit 1)."""
    path = tmp_path / "odd.pem"
    if flag == "--key":
        path.write_bytes(UNKNOWN_OID_PRIVATE)
        path.chmod(0o600)
        code, _, err = cli("sign", signed[0], "--key", path)
    else:
        head, der, tail = _pem_parts(PEMS["ed25519-public"])
        der = der.replace(bytes.fromhex("06032b6570"), bytes.fromhex("0603006570"))  # the OID 1.3.101.112
        path.write_bytes(head + b"\n" + base64.encodebytes(der) + tail)
        code, _, err = cli("check", signed[0], "--cc", "8.6", "--require-signature", "--trusted-key", path)
    _one_refusal(code, err, 2)
    assert str(path) in err, err
