"""The build pipeline for one spec: check, prepare precision, build, stamp, gate, publish locally.

Every file is staged under a temporary name and committed (:mod:`trtforge.artifact`) only after
the accuracy gate passes, so a failed or interrupted build never replaces a good artifact.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from trtforge import __version__
from trtforge.allocator import keep_freed_memory
from trtforge.artifact import ArtifactWriter, sweep
from trtforge.backends import BuildRequest, BuildResult, Choice, choose_backend, open_backend
from trtforge.cache import default_cache_dir, timing_cache_file
from trtforge.console import Reporter
from trtforge.digests import digest_dir, prefetch_digest, sha256_beside, sha256_file
from trtforge.environment import detect_gpus, detect_platform, installed_version
from trtforge.errors import BackendUnavailableError, BuildError, InvalidInputError, TrtforgeError, stop_signals_held
from trtforge.fsutil import ensure_writable_dir, resolved
from trtforge.keys import SigningKey
from trtforge.manifest import (
    SKIPPED_ACCURACY,
    ArtifactInfo,
    BuildInfo,
    GpuInfo,
    Manifest,
    PlatformInfo,
    SourceInfo,
    TensorInfo,
    TensorRTInfo,
    attestation_path,
    manifest_path_for,
    report_path,
)
from trtforge.model import ModelInfo, check_model_file, content_sha256, load_onnx, read_model_info
from trtforge.precision import Prepared, prepare_precision
from trtforge.shapes import spec_profiles
from trtforge.spec import Spec, check_profiles, colliding_specs, load_spec
from trtforge.tags import FLAVOR_RTX, FLAVOR_TENSORRT, ComputeCapability, EngineTag, artifact_stem

if TYPE_CHECKING:
    from trtforge.accuracy.gate import GatePass
    from trtforge.accuracy.report import AccuracyReport


@dataclass(frozen=True)
class BuildOutcome:
    spec: Spec
    engine: Path
    manifest_path: Path
    manifest: Manifest
    backend: Choice
    notes: tuple[str, ...]
    accuracy: AccuracyReport | None = None  # None when the spec turns the gate off


def model_label(spec: Spec, prepared: Prepared) -> str:
    """How build errors name the model: the spec (file:line of ``model:``) and its model, with what
    the precision step made of it; never the cache file the backend really parsed."""
    derived = f" ({prepared.derived})" if prepared.derived else ""
    folder = spec.origin.path.parent.resolve()
    model = spec.model_path.resolve()
    shown = model.relative_to(folder) if model.is_relative_to(folder) else model
    return f"{spec.origin.where('model')}: {shown}{derived}"


def stamp(
    spec: Spec,
    result: BuildResult,
    prepared: Prepared,
    tag: EngineTag,
    engine_file: str,
    engine_sha256: str,
    seconds: float,
    model_info: ModelInfo,
) -> Manifest:
    """The manifest of a fresh build (its ``accuracy`` is filled in once the gate has run). A model
    with external data gets its content digest too (``source.model_sha256``), from the files its
    graph named when it was read (no second parse; their hashes prefetched at the start)."""
    return Manifest(
        name=spec.name,
        precision=spec.precision,
        tag=tag.render(),
        artifact=ArtifactInfo(file=engine_file, sha256=engine_sha256, size=len(result.engine)),
        source=SourceInfo(
            onnx_sha256=sha256_file(spec.model_path),
            spec_sha256=spec.origin.sha256,
            model_sha256=content_sha256(spec.model_path, model_info.files) if model_info.external_data else None,
        ),
        tensorrt=TensorRTInfo(
            flavor=tag.flavor,
            version=tag.version,
            version_compatible=spec.build.version_compatible,
        ),
        gpu=GpuInfo(
            compute_capabilities=[str(cc) for cc in result.gpu.capabilities],
            and_later_from=str(result.gpu.and_later_from) if result.gpu.and_later_from else None,
            hardware_compatibility=spec.build.hardware_compatibility,
            build_device=result.gpu.build_device,
        ),
        platform=PlatformInfo(os=tag.platform.os, machine=tag.platform.machine),
        profiles=spec_profiles(spec.profiles),
        io=[TensorInfo(name=t.name, mode=t.mode, dtype=t.dtype, shape=list(t.shape)) for t in result.io],
        calibration=prepared.calibration,
        fp16=prepared.fp16,
        accuracy=None,
        build=BuildInfo(
            trtforge_version=__version__,
            created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            seconds=round(seconds, 3),
        ),
    )


def build_spec(
    spec: Spec,
    out_dir: Path,
    reporter: Reporter,
    backend: str | None = None,
    cache_dir: Path | None = None,
    signing_key: SigningKey | None = None,
) -> BuildOutcome:
    """Build one spec into ``out_dir``; raises a TrtforgeError subclass on any failure.

    With ``signing_key`` the manifest is signed and ``{stem}.intoto.jsonl`` (signed provenance)
    is committed with it; without, a previous build's attestation is removed (it would be stale)."""
    started = time.perf_counter()
    keep_freed_memory()  # the conversion and TensorRT's build reuse what they free (see trtforge.allocator)
    cache_dir = cache_dir or default_cache_dir()
    swept = sweep(out_dir) + sweep(cache_dir, depth=2)  # caches keep their files one folder down
    # but for the digest cache, which is the host's ($TRTFORGE_CACHE_DIR, wherever --cache-dir points)
    # and keeps the names of models' external data one folder further down (model._remembered_names)
    digests = digest_dir()
    swept += sweep(digests / "external-data") if digests.parent == cache_dir else sweep(digests, depth=2)
    if swept.note:
        reporter.info(swept.note)
    check_model_file(spec.model_path, spec.origin.where("model"))  # a regular file: hashing it can't block
    prefetch_digest(spec.model_path)  # the manifest and the precision caches need it: hashed meanwhile
    model_info = read_model_info(spec.model_path)  # no onnx import or checker: the backend parses it in full
    for data_file in model_info.files[1:]:  # its external data files, as its graph names them (none: no work)
        prefetch_digest(data_file)
    check_profiles(spec, model_info)

    choice = choose_backend(backend or spec.backend)
    try:
        engine_backend = open_backend(choice.flavor)
    except BackendUnavailableError as exc:
        raise backend_unavailable(exc, spec, backend, choice, installed_version(FLAVOR_RTX) is not None) from exc
    reporter.info(f"{spec.name}: backend {choice.flavor} {engine_backend.version} ({choice.reason})")
    targets = tuple(ComputeCapability.parse(cc) for cc in spec.targets)
    engine_backend.check_targets(targets, spec.build, spec.origin)
    with _gate_passes(spec, model_info, cache_dir) as passes:
        try:
            prepared = prepare_precision(
                spec,
                model_info,
                choice.flavor,
                engine_backend.version,
                cache_dir,
                reporter,
                for_gate=spec.accuracy.enabled,
            )
        except TrtforgeError:
            raise
        except Exception:  # onnx or onnxruntime failed on the model: its checker says what is wrong, in one line
            load_onnx(spec.model_path)
            raise
        _start_candidate_pass(passes, spec, model_info, prepared)

        request = BuildRequest(
            onnx_path=prepared.onnx_path,
            precision=spec.precision,
            profiles=tuple(spec.profiles),
            targets=targets,
            options=spec.build,
            timing_cache=_timing_cache(cache_dir, choice.flavor, engine_backend.version),
            fp16_flag=prepared.fp16_flag,
            calibration_cache=prepared.calibration_cache,
            origin=spec.origin,
            label=model_label(spec, prepared),
        )
        try:
            with reporter.build_progress(spec.name) as monitor:
                result = engine_backend.build(request, monitor)
        except BuildError:
            load_onnx(spec.model_path)  # an invalid model: onnx's checker says what is wrong, in one line
            raise
        for note in result.notes:
            reporter.info(f"{spec.name}: {note}")

        tag = EngineTag(
            flavor=choice.flavor,
            version=engine_backend.version,
            version_compatible=spec.build.version_compatible,
            capabilities=result.gpu.capabilities,
            and_later_from=result.gpu.and_later_from,
            platform=detect_platform(),
        )
        stem = artifact_stem(spec.name, spec.precision, tag)
        engine_path = out_dir / f"{stem}.engine"
        manifest_path = manifest_path_for(engine_path)
        report_file = report_path(out_dir, stem)
        ensure_writable_dir(out_dir)  # made only now: a spec refused before its build leaves no folder
        with ArtifactWriter(out_dir, spec.name, spec.precision) as writer:
            writer.replace_whole(stem)  # a previous build's report or attestation would be stale
            engine_sha256 = sha256_beside(result.engine)  # hashed while the same bytes are written
            writer.write(engine_path.name, result.engine)
            seconds = time.perf_counter() - started
            manifest = stamp(spec, result, prepared, tag, engine_path.name, engine_sha256(), seconds, model_info)
            report = _accuracy_gate(
                spec, model_info, manifest, result.engine, prepared, out_dir, reporter, cache_dir, passes
            )
            if report is None:
                manifest = manifest.replace(accuracy=dict(SKIPPED_ACCURACY))
            else:
                from trtforge.accuracy.report import summary  # the gate ran: not a gate-off build's import

                manifest = manifest.replace(accuracy=summary(report, report_file.name))
            attestation = attestation_path(engine_path).name
            report_bytes = report.to_json().encode("utf-8") if report is not None else None  # as summarized
            if signing_key is not None:
                from trtforge.provenance import sign_build  # only to sign: its module is not a build's cost

                manifest, envelope = sign_build(spec, manifest, engine_path, report_bytes, signing_key)
                writer.write(attestation, envelope)
            writer.write(manifest_path.name, manifest.to_json().encode("utf-8"))
            if report_bytes is not None:
                writer.write(report_file.name, report_bytes)
            late = writer.commit()  # engine, manifest and report together: the old set or the new one
        if late.note:
            reporter.info(late.note)
        report_path(out_dir, stem, rejected=True).unlink(missing_ok=True)
        reporter.success(f"{spec.name}: {engine_path}")
        return BuildOutcome(spec, engine_path, manifest_path, manifest, choice, result.notes, report)


def backend_unavailable(
    exc: BackendUnavailableError, spec: Spec, backend: str | None, choice: Choice, has_rtx: bool
) -> BackendUnavailableError:
    """The backend's import failure, said where it was asked for (pure): at the spec's ``backend:``
    line, or, where ``auto`` chose enterprise TensorRT and TensorRT-RTX is installed (``has_rtx``),
    with the way out."""
    if backend is None and spec.backend != "auto":
        return BackendUnavailableError(f"{spec.origin.where('backend')}: {exc}")
    auto_chose_tensorrt = (backend or spec.backend) == "auto" and choice.flavor == FLAVOR_TENSORRT
    if not auto_chose_tensorrt or not has_rtx:
        return exc
    return BackendUnavailableError(
        f"{exc}; --backend auto chose it ({choice.reason}): or pass --backend tensorrt-rtx to build on the CPU"
    )


def _timing_cache(cache_dir: Path, flavor: str, version: str) -> Path | None:
    """The timing cache of the build GPU (the first one CUDA sees); None without one."""
    gpus = detect_gpus()
    return timing_cache_file(cache_dir, flavor, version, gpus[0].name, gpus[0].compute_capability) if gpus else None


@contextlib.contextmanager
def _gate_passes(spec: Spec, model_info: ModelInfo, cache_dir: Path) -> Iterator[list[GatePass]]:
    """The gate's passes that run beside the build, stopped if need be and waited for when it ends:
    the reference's from the start where the gate will run one (fp16, int8; at fp32 the simulated
    candidate is the reference's own graph). The gate's module only then: a build without the gate
    imports none of it."""
    started: list[GatePass] = []
    if not spec.accuracy.enabled and spec.accuracy.tolerances:  # a typo is not found the day the gate is on
        from trtforge.accuracy.inputs import float_outputs, possible_classifiers
        from trtforge.accuracy.tolerances import check_spec_names

        names = [tensor.name for tensor in model_info.outputs]
        check_spec_names(spec, names, possible_classifiers(model_info), float_outputs(model_info))
    try:
        if spec.accuracy.enabled:
            from trtforge.accuracy.gate import checked_plan, reference_pass

            checked_plan(spec, model_info)  # a tolerance or data typo: refused before anything is built
            if spec.precision != "fp32":
                with stop_signals_held():  # the pass and its place in ``started``: one step, Ctrl-C or not
                    started.append(reference_pass(spec, model_info, cache_dir))
        yield started
    finally:
        for running in started:
            running.close()


def _start_candidate_pass(passes: list[GatePass], spec: Spec, model_info: ModelInfo, prepared: Prepared) -> None:
    """On a host without a GPU the gate's candidate is the simulation for sure: its pass starts
    now, beside the TensorRT build (with a GPU the engine itself runs, once built)."""
    if passes and not detect_gpus():
        from trtforge.accuracy.gate import candidate_pass

        with stop_signals_held():  # the pass and its place in ``passes``: one step, Ctrl-C or not
            passes.append(candidate_pass(spec, model_info, lambda: prepared.candidate_onnx))


def _accuracy_gate(
    spec: Spec,
    model_info: ModelInfo,
    manifest: Manifest,
    engine: memoryview,
    prepared: Prepared,
    out_dir: Path,
    reporter: Reporter,
    cache_dir: Path,
    passes: Sequence[GatePass] = (),
) -> AccuracyReport | None:
    """Run the gate on the staged artifact; on failure keep ``{stem}.rejected.accuracy.json`` and
    raise (exit 4), so the staged engine is discarded and a previous good artifact stays."""
    if not spec.accuracy.enabled:
        reporter.warn(f"{spec.name}: accuracy gate skipped (accuracy.enabled: false)")
        return None
    from trtforge.accuracy.gate import GateFailed, failure_message, raise_for_failures, run_accuracy_gate
    from trtforge.accuracy.report import write_report
    from trtforge.compat import LoadPolicy

    # the engine was built by this very process, so its embedded host code (version-compatible) is trusted
    policy = LoadPolicy(allow_host_code=True)
    report = run_accuracy_gate(
        spec,
        model_info,
        manifest,
        engine,
        prepared.candidate_onnx,
        reporter,
        policy=policy,
        cache_dir=cache_dir,
        read_cache=True,  # a cost saving only: verify, which re-judges the artifact, never reads it
        passes=passes,
    )
    if not report.passed:
        rejected = write_report(report_path(out_dir, manifest.stem, rejected=True), report)
        if spec.precision == "fp32":
            raise_for_failures(report, rejected)
        blame = f"run `trtforge diagnose {spec.origin.path}` to see which layers are to blame"
        raise GateFailed(f"{failure_message(report, rejected)}; {blame}", report)
    return report


@dataclass(frozen=True)
class SpecBatch:
    """The specs one ``trtforge build`` builds: each once however it was named (another spelling,
    a link), as ``ci`` builds it; those that loaded; and those refused before anything is built
    because they would write one artifact (exit 2, as ``ci`` refuses them: the second build
    would replace the first one's artifact, and both would report it)."""

    paths: tuple[Path, ...]
    loaded: Mapping[Path, Spec]
    refused: Mapping[Path, InvalidInputError]

    def spec(self, path: Path) -> Spec:
        """The spec at ``path`` to build: refused, or loaded (again, where it did not load: its
        build then says why, a bug too, as that spec's outcome)."""
        if path in self.refused:
            raise self.refused[path]
        return self.loaded.get(path) or load_spec(path)


def plan_batch(paths: Sequence[Path], backend: str | None = None) -> SpecBatch:
    """:class:`SpecBatch` of the specs named, for ``backend`` (``--backend``; None: each spec's)."""
    distinct: dict[Path, Path] = {}
    for path in paths:
        distinct.setdefault(resolved(path), path)
    unique = tuple(distinct.values())
    if len(unique) < 2:
        return SpecBatch(unique, {}, {})
    loaded: dict[Path, Spec] = {}
    for path in unique:
        with contextlib.suppress(Exception):  # SpecBatch.spec loads it again, and its build reports why
            loaded[path] = load_spec(path)
    groups = colliding_specs(
        {str(path): spec for path, spec in loaded.items()}, lambda spec: choose_backend(backend or spec.backend).flavor
    )
    return SpecBatch(unique, loaded, {Path(path): error for group, error in groups for path in group})
