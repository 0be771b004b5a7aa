"""Where may an engine run? Environment detection (side effects) and the rules (pure).

``problems()`` is the one rule function used by ``check``, the runtime loader and ``pull``;
``select_engine()`` ranks the compatible candidates the way pip ranks wheels by tag.
"""

from __future__ import annotations

import importlib
import platform as _platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

from trtforge.errors import BackendUnavailableError
from trtforge.tags import AMPERE, FLAVOR_RTX, FLAVOR_TENSORRT, ComputeCapability, Platform

if TYPE_CHECKING:
    from trtforge.manifest import Manifest

#: module name and pip extra per flavor
BACKEND_MODULES = {FLAVOR_TENSORRT: "tensorrt", FLAVOR_RTX: "tensorrt_rtx"}
PIP_EXTRAS = {FLAVOR_TENSORRT: "tensorrt", FLAVOR_RTX: "rtx"}


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    compute_capability: ComputeCapability
    driver_version: str
    memory_total: int
    memory_free: int


@dataclass(frozen=True)
class Environment:
    """What an engine is checked against: this host (detected) or a deployment target (flags)."""

    platform: Platform
    flavor: str | None = None
    version: str | None = None
    compute_capability: ComputeCapability | None = None
    gpus: tuple[GpuDevice, ...] = ()
    require_signature: bool = False

    def describe(self) -> str:
        runtime = f"{self.flavor} {self.version}" if self.flavor else "no TensorRT runtime"
        gpu = f"compute capability {self.compute_capability}" if self.compute_capability else "no GPU"
        return f"{runtime}, {gpu}, {self.platform.tag}"


class Rule(str, Enum):
    PLATFORM = "platform"
    FLAVOR = "flavor"
    VERSION = "version"
    GPU = "gpu"
    SHA256 = "sha256"
    SIGNATURE = "signature"


@dataclass(frozen=True)
class Problem:
    """One failed rule, with a sentence a person can act on."""

    rule: Rule
    message: str


class SignatureStatus(str, Enum):
    VALID = "valid"
    MISSING = "missing"
    INVALID = "invalid"
    UNCHECKED = "unchecked"


@dataclass(frozen=True)
class ArtifactFacts:
    """What was measured on the artifact's bytes (the rules themselves stay pure)."""

    engine_sha256: str | None = None
    signature: SignatureStatus = SignatureStatus.UNCHECKED


NO_GPU_MESSAGE = "no GPU detected: pass --cc to check against a target"


# ---------------------------------------------------------------- detection (side effects)


def detect_platform() -> Platform:
    system = _platform.system().lower()
    machine = _platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return Platform("windows" if system.startswith("win") else system, machine)


@cache
def detect_gpus() -> tuple[GpuDevice, ...]:
    """GPUs through NVML; a machine without driver or GPU answers ``()`` without error."""
    try:
        import pynvml
    except ImportError:
        return ()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return ()
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(
                GpuDevice(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    compute_capability=ComputeCapability(major, minor),
                    driver_version=_text(driver),
                    memory_total=int(memory.total),
                    memory_free=int(memory.free),
                )
            )
        return tuple(devices)
    except pynvml.NVMLError:
        return ()
    finally:
        pynvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def import_backend(flavor: str) -> ModuleType:
    """Import the TensorRT module of a flavor, or say which pip extra installs it."""
    module_name = BACKEND_MODULES[flavor]
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # the PyPI stub of `tensorrt` raises at import time, not ImportError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BackendUnavailableError(
            f"{flavor} is not installed (import {module_name} failed: {reason}); "
            f"install it with: pip install 'trtforge[{PIP_EXTRAS[flavor]}]'"
        ) from exc


@cache
def installed_version(flavor: str) -> str | None:
    """Version of an installed, importable flavor; None when it does not import."""
    try:
        return str(import_backend(flavor).__version__)
    except BackendUnavailableError:
        return None


def detect_environment(
    *,
    flavor: str | None = None,
    version: str | None = None,
    compute_capability: ComputeCapability | None = None,
    platform: Platform | None = None,
    device: int = 0,
    require_signature: bool = False,
) -> Environment:
    """This host, with any value overridden (to check against a target this host is not)."""
    gpus = detect_gpus()
    if compute_capability is None and gpus:
        compute_capability = gpus[min(device, len(gpus) - 1)].compute_capability
    if flavor is not None and version is None:
        version = installed_version(flavor)
    return Environment(
        platform=platform or detect_platform(),
        flavor=flavor,
        version=version,
        compute_capability=compute_capability,
        gpus=gpus,
        require_signature=require_signature,
    )


# ---------------------------------------------------------------- rules (pure)


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def problems(
    manifest: Manifest, env: Environment, facts: ArtifactFacts = ArtifactFacts()
) -> list[Problem]:
    """Every rule of DESIGN.md "Compatibility rules" that ``manifest`` fails on ``env``."""
    found: list[Problem] = []
    built_platform = Platform(manifest.platform.os, manifest.platform.machine)
    if built_platform != env.platform:
        found.append(
            Problem(
                Rule.PLATFORM,
                f"built for {built_platform.tag}, this target is {env.platform.tag}: "
                f"use an engine built for {env.platform.tag}",
            )
        )
    trt = manifest.tensorrt
    if env.flavor is None or env.version is None:
        found.append(
            Problem(
                Rule.FLAVOR,
                f"no {trt.flavor} runtime: install it (pip install 'trtforge[{PIP_EXTRAS[trt.flavor]}]') "
                "or pass --flavor and --trt-version to check against a target",
            )
        )
    elif trt.flavor != env.flavor:
        found.append(
            Problem(
                Rule.FLAVOR,
                f"built with {trt.flavor}, this runtime is {env.flavor}: "
                f"run it with {trt.flavor}, or rebuild with backend: {env.flavor}",
            )
        )
    else:
        version_problem = _version_problem(trt.version, trt.version_compatible, env.version, trt.flavor)
        if version_problem:
            found.append(Problem(Rule.VERSION, version_problem))
    gpu_problem = _gpu_problem(manifest, env.compute_capability)
    if gpu_problem:
        found.append(Problem(Rule.GPU, gpu_problem))
    if facts.engine_sha256 is not None and facts.engine_sha256 != manifest.artifact.sha256:
        found.append(
            Problem(
                Rule.SHA256,
                f"engine sha256 {facts.engine_sha256[:12]}… differs from the manifest's "
                f"{manifest.artifact.sha256[:12]}…: the file is damaged or not the engine this "
                "manifest describes; download or rebuild it",
            )
        )
    if env.require_signature and facts.signature is not SignatureStatus.VALID:
        reason = {
            SignatureStatus.MISSING: "the manifest is not signed: sign it with trtforge sign",
            SignatureStatus.INVALID: (
                "the signature does not verify with the trusted key: the manifest or engine was "
                "changed after signing, or it was signed with another key"
            ),
            SignatureStatus.UNCHECKED: "a signature is required but no trusted key was given: pass --trusted-key",
        }[facts.signature]
        found.append(Problem(Rule.SIGNATURE, reason))
    return found


def _version_problem(built: str, version_compatible: bool, runtime: str, flavor: str) -> str | None:
    built_tuple, runtime_tuple = version_tuple(built), version_tuple(runtime)
    if not version_compatible:
        if built_tuple == runtime_tuple:
            return None
        return (
            f"built with {flavor} {built}, this runtime is {runtime}: "
            "rebuild with this version, or build with version_compatible: true"
        )
    if built_tuple[:1] != runtime_tuple[:1]:
        return (
            f"version-compatible engine from {flavor} {built} loads only on runtime major "
            f"{built_tuple[0]}, this runtime is {runtime}: rebuild with {flavor} {runtime_tuple[0]}.x"
        )
    if runtime_tuple < built_tuple:
        return (
            f"version-compatible engine from {flavor} {built} needs a runtime at least as new, "
            f"this runtime is {runtime}: upgrade the runtime to >= {built}"
        )
    return None


def _gpu_problem(manifest: Manifest, cc: ComputeCapability | None) -> str | None:
    if cc is None:
        return NO_GPU_MESSAGE
    gpu = manifest.gpu
    if gpu.hardware_compatibility == "ampere_plus":
        later_from = ComputeCapability.parse(gpu.and_later_from) if gpu.and_later_from else AMPERE
        if cc < later_from:
            return (
                f"engine runs on compute capability {later_from} and later (ampere_plus), "
                f"this GPU is {cc}: build without hardware_compatibility for targets: ['{cc}']"
            )
        return None
    capabilities = [ComputeCapability.parse(text) for text in gpu.compute_capabilities]
    if gpu.hardware_compatibility == "same_compute_capability":
        device = gpu.build_device or {}
        built_cc = device.get("compute_capability")
        if built_cc is not None and ComputeCapability.parse(built_cc) != cc:
            return (
                f"engine needs the build device's compute capability {built_cc} "
                f"(same_compute_capability), this GPU is {cc}: rebuild on a {cc} GPU"
            )
        return None
    if cc not in capabilities:
        listed = ", ".join(str(c) for c in capabilities) or "none"
        return (
            f"engine was built for compute capability {listed}, this GPU is {cc}: "
            f"rebuild with targets: ['{cc}'] (or pull the engine tagged {cc.sm})"
        )
    return None


# ---------------------------------------------------------------- selection (pure)

T = TypeVar("T")


@dataclass(frozen=True, order=True)
class Preference:
    """Sort key of a compatible engine; smaller is better (exact GPU, then sm80plus, then version-compatible)."""

    hardware_rank: int
    version_compatible: bool
    newer_first: tuple[int, ...] = field(compare=True)


def preference(manifest: Manifest) -> Preference:
    hardware_rank = {"none": 0, "same_compute_capability": 0, "ampere_plus": 1}[
        manifest.gpu.hardware_compatibility
    ]
    negated_version = tuple(-part for part in version_tuple(manifest.tensorrt.version))
    return Preference(hardware_rank, manifest.tensorrt.version_compatible, negated_version)


def select_engine(
    candidates: Iterable[tuple[Manifest, T]],
    env: Environment,
    facts_of: dict[int, ArtifactFacts] | None = None,
) -> tuple[tuple[Manifest, T] | None, list[tuple[Manifest, list[Problem]]]]:
    """The best compatible candidate (or None), and every rejected one with its problems."""
    compatible: list[tuple[Preference, int, tuple[Manifest, T]]] = []
    rejected: list[tuple[Manifest, list[Problem]]] = []
    for position, (manifest, payload) in enumerate(candidates):
        facts = (facts_of or {}).get(position, ArtifactFacts())
        found = problems(manifest, env, facts)
        if found:
            rejected.append((manifest, found))
        else:
            compatible.append((preference(manifest), position, (manifest, payload)))
    if not compatible:
        return None, rejected
    return min(compatible)[2], rejected


def describe_problems(found: Sequence[Problem]) -> str:
    return "; ".join(problem.message for problem in found)
