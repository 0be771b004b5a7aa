"""Places in a JSON-like document (dicts and lists), for the property tests that edit one at random."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def places(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place of a document by its path: the root ``()`` first, then each key and list item."""
    yield path
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in children:
        yield from places(value, (*path, key))


def mappings(document: Any) -> list[tuple[Any, ...]]:
    """The places that hold a mapping (where a key can be added)."""
    return [path for path in places(document) if isinstance(at(document, path), dict)]


def at(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        document = document[part]
    return document
