"""JSON from untrusted bytes, read so that every other parser reads it the same way.

What trtforge signs, verifies or takes from a registry or a client is bounded before it is parsed
(size, nesting: a hostile file can exhaust neither memory nor Python's recursion limit), and what
Python's ``json`` accepts but RFC 8259 has not (``NaN``, ``Infinity``, a number beyond a double, a
key given twice) is refused: a signed document must read one way here and everywhere else. And
the one byte form trtforge writes where bytes must depend on content only (cache keys, the
documents it PUTs to a registry): :func:`canonical_json`. Standard library only, so any module
may use it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from typing import Any, NoReturn

#: a real manifest, envelope or registry answer is a few levels deep; anything deeper is refused
MAX_JSON_DEPTH = 32

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
#: a string with one (``"\\ud800"``, valid JSON syntax) has no UTF-8 form: RFC 8259 leaves its
#: reading to each parser; pydantic raised UnicodeEncodeError writing its error about one (a manifest's
#: ``platform.machine``: "internal error") and wrote a key with one as U+FFFD (two keys became one)
_UNPAIRED_SURROGATE = re.compile("[\ud800-\udfff]")
#: where one can be at all: an escape of a surrogate (UTF-8 text has none unescaped), looked for in
#: the bytes first so that a document without one is never walked
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def canonical_json(document: Any) -> bytes:
    """Sorted keys, no spaces: equal documents give equal bytes (not RFC 8785, which signatures use);
    NaN and Infinity, which are not JSON, raise ``ValueError``."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def json_sha256(document: Any) -> str:
    """sha256 of :func:`canonical_json`: the name of a content-addressed entry."""
    return hashlib.sha256(canonical_json(document)).hexdigest()


def json_depth(data: bytes, limit: int) -> int:
    """How deeply ``data`` nests arrays and objects (strings skipped), counted up to ``limit + 1``."""
    depth = deepest = 0
    for byte in _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def bounded_json(data: bytes | str, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for untrusted bytes: size, UTF-8 and nesting are checked first.

    Raises ValueError with the reason (too large, not UTF-8, too deep, not JSON: ``NaN``,
    ``Infinity`` or a key given twice included); the caller turns it into its own error class,
    naming where the bytes came from.
    """
    raw = data.encode("utf-8", errors="surrogatepass") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise ValueError(f"larger than {max_bytes:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    if json_depth(raw, max_depth) > max_depth:
        raise ValueError(f"nested deeper than {max_depth} levels")
    try:
        document = json.loads(
            text,
            object_pairs_hook=_without_duplicate_keys,
            parse_constant=not_json_constant,
            parse_float=_finite_float,
            parse_int=_double_range_int,
        )
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno})") from None
    if _SURROGATE_ESCAPE.search(raw):
        _refuse_unpaired_surrogates(document)
    return document


def _refuse_unpaired_surrogates(node: Any) -> None:
    """Every string of ``node`` (keys too) must be Unicode text: ``json`` joins an escaped pair
    (``"\\ud83d\\ude00"``) into its character, so a surrogate left is an unpaired one."""
    strings = [node] if isinstance(node, str) else list(node) if isinstance(node, dict) else []
    for text in strings:
        if _UNPAIRED_SURROGATE.search(text):
            raise ValueError(f"string {text[:40]!r} is not Unicode text (an unpaired surrogate)")
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        _refuse_unpaired_surrogates(child)


def integral(value: Any) -> Any:
    """A number with no fraction (``64.0``, ``1e3``) as the integer it is: JSON Schema counts it one,
    so a shipped schema (an editor, a CI linter, another loader) passes it where an integer goes,
    and a model in strict mode alone refused it (the spec's, the manifest's). A fraction, and any
    other value, is left as it is, for the model to refuse."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def not_json_constant(constant: str, advice: str = "") -> NoReturn:
    """``NaN``, ``Infinity`` and ``-Infinity``, which Python's json reads and RFC 8259 has not: other
    parsers refuse them, so a signed document must not rest on one (``json``'s ``parse_constant``).
    ``advice``: what to send instead, where the reader has another way (serve: binary tensors)."""
    raise ValueError(f"'{constant}' is not JSON (RFC 8259 has no NaN or Infinity{f': {advice}' if advice else ''})")


def _finite_float(text: str) -> float:
    """A number beyond a double's range (``1e999``) would read as infinity, and be written back as
    ``Infinity``, which is not JSON."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:20]} is out of range (beyond a 64-bit float)")
    return value


def _double_range_int(text: str) -> int:
    """An integer beyond a double's range (``1`` and 400 zeros) is infinity to a parser that holds
    numbers as doubles (JavaScript's ``JSON.parse``), as ``1e999`` is; one of over 4,300 digits
    made Python's ``int`` raise its own message, which names a setting no user should change."""
    if len(text) > _MAX_INT_DIGITS or abs(value := int(text)) > sys.float_info.max:
        raise ValueError(f"number {text[:20]} is out of range (beyond a 64-bit float)")
    return value


#: more digits than any integer within a double's range (about 1.8e308) has
_MAX_INT_DIGITS = 400


def _without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose key appears twice is refused: JSON parsers differ on which one wins (Python
    keeps the last), so a signed document could read one way here and another way elsewhere."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"key '{key}' appears twice in one object")
        seen.add(key)
    return dict(pairs)
