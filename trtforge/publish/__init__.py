"""Publish engines to registries and pull the one that fits: ``oci://``, ``dir://``, ``triton://``.

``open_registry(parse_location(uri))`` gives a :class:`Registry`; ``publish`` stores an artifact
under its stem (same engine sha256 again: a no-op; another engine under the tag: refused
unless forced, exit 6); ``pulling.pull`` selects with the loader's rules and verifies before
renaming into place. Only the chosen registry's module is imported (``oras`` is not light).
"""

from __future__ import annotations

from pathlib import Path

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
    "publish",
]


def open_registry(location: Location, *, insecure: bool = False) -> Registry:
    """The registry behind a location; ``insecure`` (plain HTTP) matters only for ``oci://``."""
    if isinstance(location, OciLocation):
        from trtforge.publish.oci import OciRegistry

        return OciRegistry(location, insecure=insecure)
    if isinstance(location, DirLocation):
        from trtforge.publish.directory import DirRegistry

        return DirRegistry(location)
    from trtforge.publish.triton import TritonRegistry

    return TritonRegistry(location)


def publish(engine: Path, uri: str, *, insecure: bool = False, force: bool = False) -> PublishOutcome:
    """Verify the local artifact (engine matches manifest), then store it at ``uri``."""
    artifact = load_local_artifact(engine)
    return open_registry(parse_location(uri), insecure=insecure).publish(artifact, force=force)
