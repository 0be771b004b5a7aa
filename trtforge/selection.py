"""Which engine to take: rank the candidates that pass the rules, the way pip ranks wheels by tag.

``select_engine`` judges each candidate's manifest with ``compat.policy_problems`` (the one
rule function) and the signature facts it can know before any engine byte is read, then
prefers an exact GPU build over ``sm80plus``, plain over version-compatible, the newest
TensorRT, the newest build.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from trtforge.compat import (
    DEFAULT_POLICY,
    ArtifactFacts,
    Environment,
    LoadPolicy,
    Problem,
    policy_problems,
    version_tuple,
)
from trtforge.signing import verify_manifest

if TYPE_CHECKING:
    from trtforge.manifest import Manifest

T = TypeVar("T")


class Rejection(NamedTuple):
    manifest: Manifest
    problems: list[Problem]


@dataclass(frozen=True, order=True)
class Preference:
    """Sort key of a compatible engine; smaller is better.

    Exact GPU build, then ``sm80plus``; a plain engine before a version-compatible one; then
    the newest TensorRT, then the newest build.
    """

    hardware_rank: int
    version_compatible: bool
    older_version: tuple[int, ...]
    older_build: float


def preference(manifest: Manifest) -> Preference:
    hardware_rank = 1 if manifest.gpu.hardware_compatibility == "ampere_plus" else 0
    negated_version = tuple(-part for part in version_tuple(manifest.tensorrt.version))
    try:
        created = datetime.fromisoformat(manifest.build.created_utc).timestamp()
    except ValueError:  # a hand-written manifest: rank it as the oldest
        created = 0.0
    return Preference(hardware_rank, manifest.tensorrt.version_compatible, negated_version, -created)


def signature_facts(manifest: Manifest, policy: LoadPolicy) -> ArtifactFacts:
    """The manifest-only facts ``select_engine`` can know before any engine byte is read."""
    check = verify_manifest(manifest, policy.trusted_keys)
    return ArtifactFacts(signature=check.status, signature_key_id=check.key_id)


def select_engine(
    candidates: Iterable[tuple[Manifest, T]],
    env: Environment,
    policy: LoadPolicy = DEFAULT_POLICY,
) -> tuple[tuple[Manifest, T] | None, list[Rejection]]:
    """The best compatible candidate (or None), and every rejected one with its problems.

    Judged on the manifests alone (platform, runtime, GPU, signature): the caller checks the
    chosen engine's bytes (sha256) when it has them, and refuses, not falls back, on a damaged
    file, the way pip fails on a hash mismatch instead of taking another wheel.
    """
    compatible: list[tuple[Preference, int, tuple[Manifest, T]]] = []
    rejected: list[Rejection] = []
    for position, (manifest, payload) in enumerate(candidates):
        found = policy_problems(manifest, env, signature_facts(manifest, policy), policy)
        if found:
            rejected.append(Rejection(manifest, found))
        else:
            compatible.append((preference(manifest), position, (manifest, payload)))
    if not compatible:
        return None, rejected
    return min(compatible, key=lambda item: (item[0], item[1]))[2], rejected
