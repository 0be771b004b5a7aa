"""``bounded_json``: the refusals of numbers beyond a double cost nothing on an ordinary document."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trtforge import jsonsafe
from trtforge.jsonsafe import bounded_json

DOUBLE_MAX = int(sys.float_info.max)  # 309 digits


@pytest.mark.parametrize(
    ("number", "refused"),
    [(DOUBLE_MAX, False), (-DOUBLE_MAX, False), (DOUBLE_MAX + 1, True), (-DOUBLE_MAX - 1, True), (10**308, False)],
    ids=["max", "-max", "max+1", "-max-1", "1e308"],
)
def test_an_integer_is_refused_exactly_beyond_a_double(number: int, refused: bool) -> None:
    raw = json.dumps({"size": number}).encode()
    if refused:
        with pytest.raises(ValueError, match="is out of range"):
            bounded_json(raw, 1 << 20)
    else:
        assert bounded_json(raw, 1 << 20) == {"size": number}


def test_a_string_of_digits_is_text_not_a_number() -> None:
    raw = json.dumps({"note": "9" * 5000, "size": 1}).encode()
    assert bounded_json(raw, 1 << 20) == {"note": "9" * 5000, "size": 1}


def test_an_ordinary_document_is_read_by_jsons_own_int(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python call per integer made an integer-heavy 1 MB document (a registry's list, a cache
    record) ~60% slower to read than before the check; only a document with a number of 309 digits
    or more (outside its strings) goes through it."""
    calls: list[str] = []

    def counted(text: str) -> Any:
        calls.append(text)
        return int(text)

    monkeypatch.setattr(jsonsafe, "_double_range_int", counted)
    document = {"layers": [{"size": size, "offset": size * 7, "digest": "9" * 400} for size in range(2000)]}
    assert bounded_json(json.dumps(document).encode(), 1 << 22) == document
    assert calls == []


#: pieces of a JSON string's body, each valid JSON: escaped backslashes, halves of a pair, text
PIECES = ["\\\\", "\\ud83d", "\\ude00", "\\uDBFF", "\\uDC00", "\\n", "u", "d", "8", "c", "a"]


@settings(max_examples=500)
@given(st.lists(st.lists(st.sampled_from(PIECES), max_size=8).map("".join), min_size=1, max_size=3))
def test_an_unpaired_surrogate_is_refused_as_json_reads_the_escapes(bodies: list[str]) -> None:
    """The refusal is found in the bytes (a walk of the document cost as much as reading it, and
    ``json.dumps`` escapes every emoji as a pair): it must say what ``json`` reads, no more, no less."""
    raw = ("[" + ",".join(f'"{body}"' for body in bodies) + "]").encode()
    unpaired = any(0xD800 <= ord(char) <= 0xDFFF for text in json.loads(raw) for char in text)
    if unpaired:
        with pytest.raises(ValueError, match=r"is not Unicode text \(an unpaired surrogate\)"):
            bounded_json(raw, 1 << 20)
    else:
        assert bounded_json(raw, 1 << 20) == json.loads(raw)


def test_a_document_with_an_emoji_is_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    """``canonical_json`` writes an emoji as a surrogate pair: such a document (a path, a note) was
    walked string by string after it was read, twice the cost of reading it."""
    walked: list[Any] = []
    monkeypatch.setattr(jsonsafe, "_refuse_unpaired_surrogates", walked.append)
    document = {"notes": ["model \U0001f600 ok"] * 100, "sizes": list(range(100))}
    assert bounded_json(jsonsafe.canonical_json(document), 1 << 20) == document
    assert walked == []
