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
_LOW_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][c-fC-F]")


def canonical_json(document: Any) -> bytes:
    """Sorted keys, no spaces: equal documents give equal bytes (not RFC 8785, which signatures use);
    NaN and Infinity, which are not JSON, raise ``ValueError``."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def json_sha256(document: Any) -> str:
    """sha256 of :func:`canonical_json`: the name of a content-addressed entry."""
    return hashlib.sha256(canonical_json(document)).hexdigest()


def json_depth(data: bytes, limit: int) -> int:
    """How deeply ``data`` nests arrays and objects (strings skipped), counted up to ``limit + 1``."""
    return _bare_depth(_JSON_STRING.sub(b"", data), limit)


def _bare_depth(bare: bytes, limit: int) -> int:
    """:func:`json_depth` of a document whose strings are already taken out."""
    depth = deepest = 0
    for byte in bare.translate(None, _NOT_BRACKETS):
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
    bare = _JSON_STRING.sub(b"", raw)
    if _bare_depth(bare, max_depth) > max_depth:
        raise ValueError(f"nested deeper than {max_depth} levels")
    # json's own int() unless a number outside the strings is long enough to be out of range: a hook
    # called on every integer made an integer-heavy 1 MB document ~60% slower to read
    long_number = _DIGITS_OUT_OF_RANGE in bare.translate(_DIGITS_AS_ZERO)
    try:
        document = json.loads(
            text,
            object_pairs_hook=_without_duplicate_keys,
            parse_constant=not_json_constant,
            parse_float=_finite_float,
            parse_int=_double_range_int if long_number else int,
        )
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno})") from None
    if _SURROGATE_ESCAPE.search(raw) and _unpaired_surrogate_escape(raw):
        _refuse_unpaired_surrogates(document)  # which string: for the message
    return document


def cache_json(data: bytes, max_bytes: int) -> Any:
    """``json.loads`` of a cache file trtforge wrote for itself (a digest, the ci rerun record, a
    journal): read at json's own speed, every damage a ValueError. Brackets nested past Python's
    recursion limit raise RecursionError in ``json``, which no reader caught (exit 1). Not
    :func:`bounded_json`: it refuses a lone surrogate, which the str of a path that is not UTF-8
    holds (each such file's entry was a miss, every time), and its checks (a Python call per object
    and per float) made the ci rerun record 3-4x slower to read; a cache needs none of them, as an
    entry that is not what its reader expects is only a miss."""
    if len(data) > max_bytes:
        raise ValueError(f"larger than {max_bytes:,} bytes")
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested past Python's recursion limit") from None


def _unpaired_surrogate_escape(raw: bytes) -> bool:
    """Whether the escapes of ``raw`` (valid JSON) leave a surrogate unpaired, found in the bytes: a
    walk of the document cost as much as reading it, and ``json.dumps`` (trtforge's own writer) escapes
    every emoji as a pair. An escape is one after an even run of backslashes (``\\\\ud800`` is text)."""
    low_of_pair = -1
    for found in _SURROGATE_ESCAPE.finditer(raw):
        start = before = found.start()
        while before and raw[before - 1] == 0x5C:  # a backslash
            before -= 1
        if (start - before) % 2 or start == low_of_pair:
            continue  # an escaped backslash, then text; or the low half of a pair seen
        if raw[start + 3 : start + 4] not in b"89abAB":
            return True  # a low surrogate with no high one before it
        if not _LOW_SURROGATE_ESCAPE.match(raw, start + 6):
            return True  # a high surrogate with no low one after it
        low_of_pair = start + 6
    return False


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
#: each digit as ``0``: an integer beyond a double's range has at least 309 digits in a row (1.8e308
#: has 309), found then by a substring search, far faster than a regular expression
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_DIGITS_OUT_OF_RANGE = b"0" * len(str(int(sys.float_info.max)))


def _without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose key appears twice is refused: JSON parsers differ on which one wins (Python
    keeps the last), so a signed document could read one way here and another way elsewhere."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"key '{key}' appears twice in one object")
        seen.add(key)
    return dict(pairs)
