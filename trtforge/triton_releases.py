"""Triton container releases and the TensorRT they ship: will an engine load in release R?

The table (``trtforge/triton_releases.json``, shipped with the package) has one row per release
and container: the plain ``YY.MM-py3`` container from the Triton Inference Server release notes,
"Contents of the Triton Inference Server container" (kept in github.com/triton-inference-server/server
``docs/introduction/release_notes.md``), and the ``YY.MM-trtllm-python-py3`` container from that
repository's ``docs/introduction/compatibility.md`` table, whose TensorRT differs from the plain
container's of the same month. Each row names the page or commit its numbers come from; a release
is added only with the numbers its own source gives.

The rule is ``compat.runtime_problem`` (the flavor and version rules of ``compat.problems``,
nothing of its own): a Triton release is a target running enterprise TensorRT of the release's
version. Those rules read only the manifest's TensorRT section, which a spec and the installed
backend decide before anything is built, so ``build --triton`` refuses before building.
The versions are compared as ``check --trt-version`` compares them (``compat.comparable_versions``:
at the precision both give; the compatibility table gives some releases as ``10.4.0``).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, replace
from importlib import resources
from typing import TYPE_CHECKING

from trtforge.compat import Environment, Problem, Refused, product, runtime_problem
from trtforge.errors import InvalidInputError, did_you_mean
from trtforge.tags import FLAVOR_TENSORRT, Platform

if TYPE_CHECKING:
    from pathlib import Path

    from trtforge.environment import Target
    from trtforge.manifest import Manifest, TensorRTInfo
    from trtforge.spec import Spec

TABLE_FILE = "triton_releases.json"
IMAGE = "nvcr.io/nvidia/tritonserver"
#: ``YY.MM``, as NGC tags the containers: a release, not a TensorRT version (``tags.parse_trt_version``
#: is the rule for the TensorRT each row ships)
RELEASE_PATTERN = re.compile(r"^\d{2}\.\d{2}\Z")
#: the NGC tag's suffix: the plain container (``--triton 24.10``) and the TensorRT-LLM one
PLAIN = "py3"
TRTLLM = "trtllm-python-py3"
CONTAINERS = (PLAIN, TRTLLM)


@dataclass(frozen=True)
class TritonRelease:
    """One Triton container release: the TensorRT and CUDA it ships, and the page that says so."""

    release: str
    tensorrt: str
    cuda: str
    source: str
    container: str = PLAIN

    @property
    def name(self) -> str:
        """How ``--triton`` names it: ``24.10`` (plain container) or ``24.10-trtllm-python-py3``."""
        return self.release if self.container == PLAIN else f"{self.release}-{self.container}"

    @property
    def image(self) -> str:
        """The container an engine for this release is built in (its TensorRT is the one that loads it)."""
        return f"{IMAGE}:{self.release}-{self.container}"


@functools.cache
def releases() -> tuple[TritonRelease, ...]:
    """Every release in the shipped table, oldest first (the plain container first within a month)."""
    document = json.loads(resources.files("trtforge").joinpath(TABLE_FILE).read_text("utf-8"))
    rows = tuple(TritonRelease(**row) for row in document["releases"])
    return tuple(sorted(rows, key=lambda row: (row.release, CONTAINERS.index(row.container))))


def find_release(name: str, what: str = "--triton") -> TritonRelease:
    """The release named ``name``: ``24.08`` (or ``24.08-py3``) is the plain container,
    ``24.08-trtllm-python-py3`` the TensorRT-LLM one; exit 2 naming the known ones otherwise."""
    text = name.strip()
    release, dash, container = text.partition("-")
    wanted = (release, container or ("" if dash else PLAIN))  # "24.08-" names no container: unknown
    found = [row for row in releases() if (row.release, row.container) == wanted]
    if found:
        return found[0]
    same_month = [row.name for row in releases() if row.release == release]
    hint = f" — did you mean '{same_month[0]}'?" if same_month else did_you_mean(text, [r.name for r in releases()])
    shape = (
        ""
        if RELEASE_PATTERN.match(release) and wanted[1] in CONTAINERS
        else f" (write it YY.MM, as the NGC tag, or YY.MM-{TRTLLM} for that container)"
    )
    listed = "; ".join(
        f"{', '.join(row.release for row in releases() if row.container == container)} (-{container})"
        for container in CONTAINERS
    )
    raise InvalidInputError(
        f"{what} '{name}': not a Triton release trtforge knows{shape}{hint}; "
        f"known: {listed} (trtforge/{TABLE_FILE}: add a row with its source)"
    )


def release_problem(manifest: Manifest, release: TritonRelease) -> Problem | None:
    """Why the engine will not load in ``release`` (None when it will), by ``compat``'s rules."""
    platform = Platform(manifest.platform.os, manifest.platform.machine)
    return runtime_release_problem(manifest.tensorrt, platform, release)


def runtime_release_problem(built: TensorRTInfo, platform: Platform, release: TritonRelease) -> Problem | None:
    """``release_problem`` on what it reads of a manifest: the TensorRT section (flavor, version,
    version_compatible), known before a build runs; ``platform`` is where the engine is built.
    The rule (flavor or version) is ``compat.runtime_problem``'s; the message names the release."""
    target = Environment(platform=platform, flavor=FLAVOR_TENSORRT, version=release.tensorrt, overridden=True)
    rule, problem = runtime_problem(built, target)
    if problem is None:
        return None
    if built.flavor != FLAVOR_TENSORRT:
        return Problem(
            rule,
            f"Triton {release.name} ships TensorRT {release.tensorrt}; this engine was built with "
            f"{product(built.flavor)} {built.version}, which Triton's tensorrt_plan backend cannot load: "
            f"rebuild with backend: tensorrt inside {release.image}",
        )
    return Problem(
        rule,
        f"Triton {release.name} ships TensorRT {release.tensorrt}; this engine was built with {built.version}: "
        f"rebuild inside {release.image} or use a version-compatible engine",
    )


def _refuse(problem: Problem | None) -> None:
    if problem:
        raise Refused(problem.message, [problem])


def refuse_unfit(manifest: Manifest, release: TritonRelease) -> None:
    """Exit 5 (one line) when the engine will not load in ``release``."""
    _refuse(release_problem(manifest, release))


def refuse_build(spec: Spec, backend: str | None, release: TritonRelease) -> None:
    """``build``/``ci`` for a Triton release: exit 5 before any TensorRT work when the engine this
    build would make (the backend ``build_spec`` resolves, at its installed version) will not load
    in ``release``, so a refused build leaves nothing behind. A backend that is not installed is
    left to the build, whose error names the pip extra."""
    from trtforge.environment import choose_backend, detect_platform, installed_version
    from trtforge.manifest import TensorRTInfo

    flavor = choose_backend(backend or spec.backend).flavor
    version = installed_version(flavor)
    if version is None:
        return
    built = TensorRTInfo(flavor=flavor, version=version, version_compatible=spec.build.version_compatible)
    _refuse(runtime_release_problem(built, detect_platform(), release))


def triton_flag(release_name: str, given: tuple[str | None, str | None] = (None, None)) -> TritonRelease:
    """``check --triton R``'s flag, checked before anything is read (exit 2): a known release, and no
    --flavor or --trt-version (the release names the runtime). ``given``: --flavor, --trt-version."""
    if any(value is not None for value in given):
        raise InvalidInputError("--triton names the runtime (the release's TensorRT): drop --flavor and --trt-version")
    return find_release(release_name)


def triton_target(engine: Path, release: TritonRelease, target: Target) -> Target:
    """``check --triton R``: exit 5 (one line) when R cannot load the engine; else ``target`` running
    the release's TensorRT, against which the remaining rules (GPU, platform, signature) are judged.
    A mistyped path is exit 2, as without --triton."""
    from trtforge.manifest import ArtifactPaths, read_manifest

    refuse_unfit(read_manifest(ArtifactPaths.of(engine).must_exist().manifest), release)
    return replace(target, flavor=FLAVOR_TENSORRT, version=release.tensorrt)
