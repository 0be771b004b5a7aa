"""Publish engines to registries and pull the one that fits: ``oci://``, ``dir://``, ``triton://``.

``open_registry(parse_location(uri))`` gives a :class:`Registry`; its ``publish`` stores an
artifact under its stem (same engine sha256 again: a no-op; another engine under the tag: refused
unless forced, exit 6); ``pulling.pull_artifact`` selects with the loader's rules and verifies
before renaming into place. Only the chosen registry's module is imported (``oras`` is not light).
"""

from __future__ import annotations

from trtforge.errors import InvalidInputError
from trtforge.publish.base import (
    Candidate,
    DirLocation,
    Listing,
    LocalArtifact,
    Location,
    NoCompatibleArtifactError,
    OciLocation,
    PublishOutcome,
    Registry,
    TagConflictError,
    TritonLocation,
    load_local_artifact,
    parse_location,
)

__all__ = [
    "Candidate",
    "DirLocation",
    "Listing",
    "LocalArtifact",
    "Location",
    "NoCompatibleArtifactError",
    "OciLocation",
    "PublishOutcome",
    "Registry",
    "TagConflictError",
    "TritonLocation",
    "load_local_artifact",
    "open_registry",
    "parse_location",
]


def open_registry(location: Location, *, insecure: bool = False) -> Registry:
    """The registry behind a location. ``insecure`` (``--insecure``: plain HTTP) is for ``oci://``
    only; with a folder (``dir://``, ``triton://``) it is refused (exit 2), not ignored: it means
    nothing there, so the location is likely not the one meant."""
    if isinstance(location, OciLocation):
        from trtforge.publish.oci import OciRegistry

        return OciRegistry(location, insecure=insecure)
    if insecure:
        raise InvalidInputError(
            f"--insecure (plain HTTP) is for oci:// registries, and {location.uri} is a folder: drop --insecure"
        )
    if isinstance(location, DirLocation):
        from trtforge.publish.directory import DirRegistry

        return DirRegistry(location)
    from trtforge.publish.triton import TritonRegistry

    return TritonRegistry(location)
