"""The serving side's gate: refuse any engine that does not fit, and only then deserialize.

``check_compatibility`` is the one checking path (``trtforge check`` and the loader share it):
manifest, engine size and sha256, ``compat.problems()`` (with the signature and host-code policy),
then the runtime's own header check when a GPU is present. ``load_engine`` adds the
deserialization. TensorRT is imported only when a check needs it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from trtforge.compat import (
    DEFAULT_POLICY,
    ArtifactFacts,
    Environment,
    LoadPolicy,
    Problem,
    Refused,
    Rule,
    SignatureStatus,
    device_model_note,
    policy_problems,
    product,
    retarget_advice,
)
from trtforge.environment import Target, detect_platform, installed_version, measure_engine
from trtforge.errors import IncompatibleEngineError, InvalidInputError, TrtforgeError
from trtforge.manifest import ArtifactPaths, Manifest, check_precision, read_manifest
from trtforge.selection import FolderArtifacts, list_artifacts, select_engine, signature_facts
from trtforge.tags import FLAVOR_RTX, FLAVOR_TENSORRT

#: What each ``EngineInvalidityDiagnostics`` bit of ``get_engine_validity`` means for a person.
_DIAGNOSTICS = {
    "VERSION_MISMATCH": "the runtime reports a version mismatch: rebuild the engine with {runtime}",
    "UNSUPPORTED_CC": "the runtime reports that this GPU ({gpu}) is not one the engine was compiled for: {retarget}",
    "OLD_CUDA_DRIVER": "the NVIDIA driver ({driver}) is too old for this engine: upgrade the driver",
    "OLD_CUDA_RUNTIME": "the CUDA runtime libraries are too old for this engine: upgrade them",
    "INSUFFICIENT_GPU_MEMORY": "the GPU has too little free memory for this engine ({free} free): free memory "
    "or use a larger GPU",
    "MALFORMED_ENGINE": "the runtime finds the engine header malformed: the file is damaged, download or rebuild it",
    "CUDA_ERROR": "a CUDA error occurred during the runtime's header check: check the GPU with nvidia-smi",
}


@dataclass(frozen=True)
class HeaderVerdict:
    """What the runtime's ``get_engine_validity`` said about the engine header on this GPU."""

    validity: str  # valid | suboptimal | invalid
    diagnostics: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"validity": self.validity, "diagnostics": list(self.diagnostics)}


@dataclass(frozen=True)
class CompatibilityResult:
    """Everything ``check`` knows about one artifact on one environment; ``manifest`` is None for an
    engine without one (its one problem is then ``Rule.MANIFEST``: nothing else can be judged)."""

    engine: Path
    manifest_path: Path
    manifest: Manifest | None
    environment: Environment
    facts: ArtifactFacts
    problems: tuple[Problem, ...]
    header: HeaderVerdict | None = None
    notes: tuple[str, ...] = ()

    @property
    def compatible(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return 0 if self.compatible else IncompatibleEngineError.exit_code

    def error(self) -> Refused:
        """The refusal to raise (``raise_if_refused``), every problem named. A compatible result has
        none: asking it for one is a usage error, not an exception that says nothing."""
        if self.compatible:
            raise InvalidInputError(
                f"{self.engine}: compatible on {self.environment.describe()}, nothing to refuse: ask error() of "
                "a result whose compatible is False, or call raise_if_refused()"
            )
        listed = "; ".join(f"[{problem.rule.value}] {problem.message}" for problem in self.problems)
        return Refused(f"{self.engine}: refused on {self.environment.describe()}: {listed}", self.problems)

    def raise_if_refused(self) -> None:
        if self.problems:
            raise self.error()

    def to_dict(self) -> dict[str, Any]:
        manifest = self.manifest
        artifact = manifest.artifact if manifest is not None else None
        return {
            "engine": str(self.engine),
            "manifest": str(self.manifest_path),
            "name": manifest.name if manifest is not None else None,
            "precision": manifest.precision if manifest is not None else None,
            "tag": manifest.tag if manifest is not None else None,
            "compatible": self.compatible,
            "exit_code": self.exit_code,
            "environment": self.environment.to_dict(),
            "problems": [problem.to_dict() for problem in self.problems],
            "size": {"manifest": artifact.size if artifact else None, "engine": self.facts.engine_size},
            "sha256": {"manifest": artifact.sha256 if artifact else None, "engine": self.facts.engine_sha256},
            "signature": {"status": self.facts.signature.value, "key_id": self.facts.signature_key_id},
            "header_check": self.header.to_dict() if self.header else None,
            "notes": list(self.notes),
        }


@dataclass
class LoadedEngine:
    """A deserialized engine with what keeps it alive: TensorRT needs the runtime (and its
    logger) to outlive the engine, so they travel together."""

    path: Path
    manifest: Manifest
    trt: ModuleType
    runtime: Any
    engine: Any  # the ICudaEngine: the warm pool and the accuracy runner take it
    check: CompatibilityResult
    _backend: Any = field(repr=False, default=None)


@dataclass
class _Inspection:
    result: CompatibilityResult
    data: bytearray | None = None
    backend: Any = None
    runtime: Any = None


# ---------------------------------------------------------------- the one checking path


def _check_arguments(policy: object, environment: object, target: object = None) -> None:
    """The caller's policy, environment and target of another type (``policy=None``, as
    ``EnginePool`` takes it; ``target="8.6"``), refused with the fix here, not as an AttributeError
    from deep inside a rule."""
    if not isinstance(policy, LoadPolicy):
        raise InvalidInputError(
            f"policy {policy!r}: a LoadPolicy, e.g. LoadPolicy() or "
            "LoadPolicy(require_signature=True, trusted_keys=load_trusted_keys())"
        )
    if environment is not None and not isinstance(environment, Environment):
        raise InvalidInputError(f"environment {environment!r}: an Environment (e.g. Target(...).environment()) or None")
    if target is not None and not isinstance(target, Target):
        raise InvalidInputError(f"target {target!r}: a Target, e.g. Target(compute_capability='8.6')")


def check_compatibility(
    path: Path | str,
    policy: LoadPolicy = DEFAULT_POLICY,
    environment: Environment | None = None,
    *,
    target: Target | None = None,
    header_check: bool | None = None,
) -> CompatibilityResult:
    """Would the engine at ``path`` load on ``environment`` (default: this host, with ``target``'s
    values put over it)? Never raises for an incompatible engine: the result lists every reason,
    an engine without its manifest included (``Rule.MANIFEST``). Raises InvalidInputError for a
    usage error: a path where neither the engine nor its manifest is, an unreadable manifest.

    ``header_check`` (default: only when checking this very host) asks the runtime's
    ``get_engine_validity``, which needs a GPU and is skipped without one.
    """
    _check_arguments(policy, environment, target)
    return _inspect(Path(path), policy, environment, target, header_check, keep_bytes=False).result


def _inspect(
    path: Path,
    policy: LoadPolicy,
    environment: Environment | None,
    target: Target | None,
    header_check: bool | None,
    keep_bytes: bool,
) -> _Inspection:
    paths = ArtifactPaths.of(path).must_exist()
    engine, manifest_path = paths.engine, paths.manifest
    try:
        manifest = read_manifest(manifest_path)
    except IncompatibleEngineError as missing:  # the one refusal read_manifest raises: no manifest
        return _Inspection(_without_manifest(engine, manifest_path, environment, target, str(missing)))
    env = environment or (target or Target()).environment(default_flavor=manifest.tensorrt.flavor)
    notes: list[str] = []
    signed = signature_facts(manifest, policy)
    # the loader keeps the bytes it hashes, unless the manifest alone already refuses the engine
    refused = policy_problems(manifest, env, signed, policy)
    measured, data = measure_engine(engine, manifest, keep_bytes=keep_bytes and not refused)
    facts = dataclasses.replace(measured, signature=signed.signature, signature_key_id=signed.signature_key_id)
    found = policy_problems(manifest, env, facts, policy)
    inspection = _Inspection(CompatibilityResult(engine, manifest_path, manifest, env, facts, tuple(found)), data=data)
    other_model = device_model_note(manifest, env)
    if other_model:
        notes.append(other_model)
    if header_check is None:
        header_check = environment is None and not env.overridden
    if not header_check:
        inspection.result = dataclasses.replace(inspection.result, notes=tuple(notes))
        return inspection
    if found:
        notes.append("header check: not asked, the engine already failed the rules above")
    elif not env.gpus:
        notes.append(
            f"header check: skipped, no GPU detected (the {product(manifest.tensorrt.flavor)} header check needs one)"
        )
    else:
        _header_check(inspection, manifest.tensorrt.flavor, data, notes)
    inspection.result = dataclasses.replace(inspection.result, notes=tuple(notes))
    return inspection


def _without_manifest(
    engine: Path, manifest_path: Path, environment: Environment | None, target: Target | None, message: str
) -> CompatibilityResult:
    """An engine without its manifest, refused under ``Rule.MANIFEST``: nothing says what it is, so
    no other rule is judged. Its runtime is unknown too: the environment runs the target's, else
    the one installed here (enterprise TensorRT first, as ``backend: auto`` prefers, where both are)."""
    if environment is None:
        installed = next((flavor for flavor in _FLAVOR_ORDER if installed_version(flavor) is not None), None)
        environment = (target or Target()).environment(default_flavor=installed)
    facts = ArtifactFacts(engine_file=engine.name, engine_size=engine.stat().st_size, signature=SignatureStatus.MISSING)
    return CompatibilityResult(engine, manifest_path, None, environment, facts, (Problem(Rule.MANIFEST, message),))


def _header_check(inspection: _Inspection, flavor: str, data: bytearray | None, notes: list[str]) -> None:
    """Ask the runtime (``get_engine_validity``, where the flavor has it) about the engine header."""
    result = inspection.result
    try:
        from trtforge.backends import open_backend

        backend = open_backend(flavor)
    except TrtforgeError as exc:
        notes.append(f"header check: skipped, {exc}")
        return
    runtime = backend.trt.Runtime(backend.logger)
    inspection.backend, inspection.runtime = backend, runtime
    if not hasattr(runtime, "get_engine_validity"):
        notes.append(f"header check: {product(flavor)} {backend.version} has no get_engine_validity")
        return
    size = int(runtime.engine_header_size)
    if data is not None:
        header = bytes(data[:size])
    else:
        with open(result.engine, "rb") as handle:
            header = handle.read(size)
    validity, diagnostics = runtime.get_engine_validity(header)
    names = _diagnostic_names(backend.trt, diagnostics)
    verdict = HeaderVerdict(validity.name.lower(), names)
    found = list(result.problems)
    env = result.environment
    gpu = env.gpus[0]
    if verdict.validity == "invalid":
        values = {
            "runtime": f"{product(flavor)} {backend.version}",
            "gpu": f"{gpu.name}, {gpu.compute_capability}",
            "retarget": retarget_advice(flavor, gpu.compute_capability),
            "driver": gpu.driver_version,
            "free": f"{gpu.memory_free / 2**30:.1f} GiB",
        }
        messages = [_DIAGNOSTICS[name].format(**values) for name in names if name in _DIAGNOSTICS]
        detail = "; ".join(backend.errors) or "no detail"
        found.extend(
            Problem(Rule.RUNTIME, message)
            for message in messages
            or [f"the runtime's header check refused the engine ({detail}): rebuild it for this host"]
        )
    elif verdict.validity == "suboptimal":
        notes.append(
            f"header check: the engine runs here but not optimally on {gpu.name}; a build for "
            f"{gpu.compute_capability} would be faster"
        )
    else:
        notes.append(f"header check: valid on {gpu.name}")
    inspection.result = dataclasses.replace(result, problems=tuple(found), header=verdict)


def _diagnostic_names(trt: ModuleType, diagnostics: Any) -> tuple[str, ...]:
    """The bit flags of ``EngineInvalidityDiagnostics`` set in ``diagnostics``."""
    enum = getattr(trt, "EngineInvalidityDiagnostics", None)
    if enum is None:
        return ()
    bits = int(diagnostics)
    return tuple(name for name, member in enum.__members__.items() if bits & int(member))


# ---------------------------------------------------------------- loading


def _another_host(environment: Environment) -> str | None:
    """Why rules judged for ``environment`` prove nothing here (its GPU or platform is not this
    host's, where the engine would be deserialized); None when it describes this host."""
    gpu = environment.gpus[0] if environment.gpus else None  # detected GPUs, never the overrides
    if gpu is not None and environment.compute_capability != gpu.compute_capability:
        return (
            f"checked for compute capability {environment.compute_capability}, but this host's GPU ({gpu.name}) "
            f"is {gpu.compute_capability}: the engine would be deserialized on it; pass environment=None (or no --cc)"
        )
    host = detect_platform()
    if environment.platform != host:
        return (
            f"checked for {environment.platform.tag}, but this host is {host.tag}: the engine would be "
            "deserialized here; pass environment=None (or no --platform)"
        )
    return None


def load_engine(
    path: Path | str,
    policy: LoadPolicy = DEFAULT_POLICY,
    environment: Environment | None = None,
) -> LoadedEngine:
    """Check, then deserialize; raises IncompatibleEngineError listing every reason it refuses.

    ``environment`` (default: detected) is what the rules are judged against; the engine is
    always deserialized by the runtime installed here, on the GPU present here, so an
    ``environment`` that names another runtime, GPU or platform is refused: rules passed for it
    prove nothing about the one that would deserialize.
    """
    _check_arguments(policy, environment)
    elsewhere = _another_host(environment) if environment is not None else None
    if elsewhere is not None:
        raise IncompatibleEngineError(f"{path}: {elsewhere}", reasons=[elsewhere])
    inspection = _inspect(Path(path), policy, environment, None, header_check=True, keep_bytes=True)
    result = inspection.result
    result.raise_if_refused()
    manifest = result.manifest
    assert manifest is not None  # an engine without one was refused (Rule.MANIFEST)
    flavor = manifest.tensorrt.flavor
    env = result.environment
    installed = installed_version(flavor)
    if environment is not None and (environment.flavor, environment.version) != (flavor, installed):
        here = f"{product(flavor)} {installed}" if installed else f"no {product(flavor)}"
        raise IncompatibleEngineError(
            f"{result.engine}: checked for {product(environment.flavor)} {environment.version}, but the runtime "
            f"installed here is {here}: the engine would be deserialized by that one; pass environment=None",
            reasons=["environment= does not describe the runtime installed here"],
        )
    if not env.gpus:
        raise IncompatibleEngineError(
            f"{result.engine}: passed every check for {env.describe()}, but no GPU is detected here: "
            "deserializing an engine needs a supported NVIDIA GPU and driver",
            reasons=["no GPU detected: deserialization needs a GPU"],
        )
    backend, runtime = inspection.backend, inspection.runtime
    if runtime is None:
        from trtforge.backends import open_backend

        backend = open_backend(flavor)
        runtime = backend.trt.Runtime(backend.logger)
    runtime.engine_host_code_allowed = policy.allow_host_code
    backend.errors.clear()
    assert inspection.data is not None  # the size matched, so measure_engine kept the bytes
    engine = runtime.deserialize_cuda_engine(inspection.data)
    if engine is None:
        detail = "; ".join(backend.errors) or "no detail from the runtime"
        raise IncompatibleEngineError(
            f"{result.engine}: {product(flavor)} {backend.version} refused to deserialize it: {detail}",
            reasons=[detail],
        )
    return LoadedEngine(result.engine, manifest, backend.trt, runtime, engine, result, backend)


# ---------------------------------------------------------------- several artifacts of one model


def find_artifacts(directory: Path | str, name: str | None = None, precision: str | None = None) -> FolderArtifacts:
    """Complete artifacts in ``directory`` (optionally of one name and precision), listed as
    ``selection.list_artifacts`` lists a folder (as a ``dir://`` registry lists it too): hidden
    entries are never looked at, a manifest whose engine is gone is no artifact and is left out,
    an unreadable manifest is skipped and listed (one damaged file is no reason to refuse every
    other model)."""
    check_precision(precision, "precision")
    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidInputError(f"{directory}: not a directory of engines")
    try:
        listing = list_artifacts(directory)
    except OSError as exc:
        raise InvalidInputError(
            f"{directory}: cannot list it ({exc.strerror or type(exc).__name__}); check its permissions"
        ) from exc
    return listing.of(name, precision)


#: Order in which runtimes are tried when a directory holds engines of several flavors
#: (enterprise TensorRT first, as ``backend: auto`` prefers it on a GPU host).
_FLAVOR_ORDER = (FLAVOR_TENSORRT, FLAVOR_RTX)


def select_artifact(
    directory: Path | str,
    name: str,
    *,
    precision: str | None = None,
    policy: LoadPolicy = DEFAULT_POLICY,
    environment: Environment | None = None,
    target: Target | None = None,
    listing: FolderArtifacts | None = None,
) -> Path:
    """The best engine of ``name`` in ``directory`` (``selection.select_engine``'s order) for
    ``environment`` (default: this host, with ``target``'s values put over it, as
    ``check_compatibility`` takes them). Compatible engines of several precisions need ``precision``.

    ``listing``: ``find_artifacts(directory)`` already made (of any name), so that choosing for
    several names reads each manifest once (``serve`` with a folder); default: listed here."""
    _check_arguments(policy, environment, target)
    check_precision(precision, "precision")
    listing = find_artifacts(directory, name, precision) if listing is None else listing.of(name, precision)
    candidates = listing.found
    which = f"{name}" + (f" ({precision})" if precision else "")
    if not candidates:
        raise InvalidInputError(f"{directory}: no engine of {which}; check the name or build it first{listing.note}")
    rejected = []
    flavors = sorted({manifest.tensorrt.flavor for manifest, _ in candidates}, key=_FLAVOR_ORDER.index)
    if environment is None and target is not None and target.version and not target.flavor and len(flavors) > 1:
        raise InvalidInputError(
            f"Target(version={target.version!r}) without a flavor, and {directory} holds engines of "
            f"{' and '.join(flavors)} for {which}: the version would be read as either runtime's; "
            "name it, Target(flavor=..., version=...)"
        )
    for flavor in flavors:
        group = [candidate for candidate in candidates if candidate[0].tensorrt.flavor == flavor]
        env = environment or (target or Target()).environment(default_flavor=flavor)
        chosen, group_rejected = select_engine(group, env, policy, what=f"{directory}: {which}")
        if chosen is not None:
            return chosen[1]
        rejected.extend(group_rejected)
    reasons = [f"{manifest.artifact.file}: " + "; ".join(p.message for p in found) for manifest, found in rejected]
    raise IncompatibleEngineError(
        f"{directory}: none of the {len(candidates)} engines of {which} fits: " + " | ".join(reasons) + listing.note,
        reasons=reasons,
    )


def load_best(
    directory: Path | str,
    name: str,
    *,
    precision: str | None = None,
    policy: LoadPolicy = DEFAULT_POLICY,
    environment: Environment | None = None,
) -> LoadedEngine:
    """``select_artifact`` then ``load_engine``: a damaged best engine is refused, not skipped."""
    chosen = select_artifact(directory, name, precision=precision, policy=policy, environment=environment)
    return load_engine(chosen, policy, environment)


__all__ = [
    "CompatibilityResult",
    "FolderArtifacts",
    "HeaderVerdict",
    "LoadedEngine",
    "check_compatibility",
    "find_artifacts",
    "load_best",
    "load_engine",
    "select_artifact",
]
