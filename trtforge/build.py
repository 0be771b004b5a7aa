"""The build pipeline for one spec: check, prepare precision, build, stamp, gate, publish locally.

Every file is staged under a temporary name and committed (:mod:`trtforge.artifact`) only after
the accuracy gate passes, so a failed or interrupted build never replaces a good artifact.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from trtforge import __version__
from trtforge.accuracy.report import SKIPPED_SUMMARY, AccuracyReport, report_path, summary, write_report
from trtforge.artifact import ArtifactWriter, sweep
from trtforge.backends import BuildRequest, BuildResult, Choice, choose_backend, open_backend
from trtforge.compat import detect_platform, version_tuple
from trtforge.console import Reporter
from trtforge.errors import SpecError
from trtforge.fsutil import ensure_writable_dir, sha256_bytes, sha256_file
from trtforge.manifest import (
    ArtifactInfo,
    BuildInfo,
    GpuInfo,
    Manifest,
    PlatformInfo,
    SourceInfo,
    TensorInfo,
    TensorRTInfo,
    manifest_path_for,
)
from trtforge.model import ModelInfo, describe, load_onnx
from trtforge.precision import save_model, to_fp16
from trtforge.spec import Spec, check_profiles
from trtforge.tags import ComputeCapability, EngineTag, artifact_stem


def default_cache_dir() -> Path:
    """Content-addressed caches (calibration, timing caches) shared by every build on this host."""
    env = os.environ.get("TRTFORGE_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trtforge"


@dataclass(frozen=True)
class Prepared:
    """The precision step's output: the graph to build and how the backend must treat it.

    ``simulated_onnx`` is what onnxruntime runs for the accuracy gate when the engine cannot run
    here, where that differs from ``onnx_path`` (TensorRT 10.x builder flags: FP16 flag, native INT8).
    """

    onnx_path: Path
    fp16_flag: bool = False
    calibration_cache: bytes | None = None
    calibration: dict | None = None
    simulated_onnx: Path | None = None
    derived: str = ""  # what ``onnx_path`` is when not the spec's model: "fp16-converted", "int8 Q/DQ"

    @property
    def candidate_onnx(self) -> Path:
        return self.simulated_onnx or self.onnx_path


@dataclass(frozen=True)
class BuildOutcome:
    spec: Spec
    engine: Path
    manifest_path: Path
    manifest: Manifest
    backend: Choice
    notes: tuple[str, ...]
    accuracy: AccuracyReport | None = None  # None when the spec turns the gate off


def fp16_onnx(model_path: Path, cache_dir: Path) -> Path:
    """The FP16-converted graph, cached by the source model's content."""
    import onnx

    target = cache_dir / "fp16" / f"{sha256_file(model_path)}.onnx"
    if not target.is_file():
        save_model(to_fp16(onnx.load(str(model_path))), target)
    return target


def model_label(spec: Spec, prepared: Prepared) -> str:
    """How build errors name the model: the spec (file:line of ``model:``) and its model, with what
    the precision step made of it; never the cache file the backend really parsed."""
    derived = f" ({prepared.derived})" if prepared.derived else ""
    folder = spec.origin.path.parent.resolve()
    model = spec.model_path.resolve()
    shown = model.relative_to(folder) if model.is_relative_to(folder) else model
    return f"{spec.origin.where('model')}: {shown}{derived}"


def prepare_precision(
    spec: Spec, model_info: ModelInfo, flavor: str, version: str, cache_dir: Path, reporter: Reporter
) -> Prepared:
    """fp32: the model as is; fp16: an FP16 graph (or, on TensorRT 10.x, the FP16 flag); int8: Q/DQ."""
    major = version_tuple(version)[0]
    weakly_typed_trt = flavor == "tensorrt" and major < 11
    if spec.precision == "fp32":
        return Prepared(spec.model_path)
    if spec.precision == "fp16":
        if weakly_typed_trt:
            return Prepared(spec.model_path, fp16_flag=True, simulated_onnx=fp16_onnx(spec.model_path, cache_dir))
        return Prepared(fp16_onnx(spec.model_path, cache_dir), derived="fp16-converted")
    from trtforge.calibration import calibrate

    calibration = spec.calibration
    if calibration is None:  # the spec model refuses int8 without it; keep type checkers informed
        raise SpecError(f"{spec.origin.where('precision')}: precision int8 needs a 'calibration:' section")
    if calibration.mode == "native" and not weakly_typed_trt:
        raise SpecError(
            f"{spec.origin.where('calibration', 'mode')}: calibration.mode native needs "
            f"enterprise TensorRT 10.x (this backend is {flavor} {version}); use mode: qdq"
        )
    result = calibrate(spec, model_info, cache_dir=cache_dir / "calibration", log=reporter.info)
    if calibration.mode == "native":
        return Prepared(
            spec.model_path,
            fp16_flag=calibration.high_precision == "fp16",
            calibration_cache=result.trt_cache(version),
            calibration=result.manifest_section(),
            simulated_onnx=result.qdq_model,
        )
    return Prepared(result.qdq_model, calibration=result.manifest_section(), derived="int8 Q/DQ")


def _profiles_for_manifest(spec: Spec) -> list[dict[str, dict[str, list[int]]]]:
    """min/opt/max shapes per input; a shape tensor's values too, as ``min_values`` etc."""
    return [{name: shapes.for_manifest() for name, shapes in profile.items()} for profile in spec.profiles]


def stamp(
    spec: Spec, result: BuildResult, prepared: Prepared, tag: EngineTag, engine_file: str, seconds: float
) -> Manifest:
    """The manifest of a fresh build (its ``accuracy`` is filled in once the gate has run)."""
    return Manifest(
        name=spec.name,
        precision=spec.precision,
        tag=tag.render(),
        artifact=ArtifactInfo(file=engine_file, sha256=sha256_bytes(result.engine), size=len(result.engine)),
        source=SourceInfo(onnx_sha256=sha256_file(spec.model_path), spec_sha256=spec.origin.sha256),
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
        profiles=_profiles_for_manifest(spec),
        io=[TensorInfo(name=t.name, mode=t.mode, dtype=t.dtype, shape=list(t.shape)) for t in result.io],
        calibration=prepared.calibration,
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
) -> BuildOutcome:
    """Build one spec into ``out_dir``; raises a TrtforgeError subclass on any failure."""
    started = time.perf_counter()
    ensure_writable_dir(out_dir)
    cache_dir = cache_dir or default_cache_dir()
    swept = sweep(out_dir) + sweep(cache_dir, depth=2)  # caches keep their files one folder down
    if swept.note:
        reporter.info(swept.note)
    model = load_onnx(spec.model_path)
    model_info = describe(model, spec.model_path)
    check_profiles(spec, model_info)
    del model

    choice = choose_backend(backend or spec.backend)
    engine_backend = open_backend(choice.flavor)
    reporter.info(f"{spec.name}: backend {choice.flavor} {engine_backend.version} ({choice.reason})")
    prepared = prepare_precision(spec, model_info, choice.flavor, engine_backend.version, cache_dir, reporter)

    request = BuildRequest(
        onnx_path=prepared.onnx_path,
        precision=spec.precision,
        profiles=tuple(spec.profiles),
        targets=tuple(ComputeCapability.parse(cc) for cc in spec.targets),
        options=spec.build,
        timing_cache=cache_dir / "timing" / f"{choice.flavor}-{engine_backend.version}.cache",
        fp16_flag=prepared.fp16_flag,
        calibration_cache=prepared.calibration_cache,
        origin=spec.origin,
        label=model_label(spec, prepared),
    )
    with reporter.build_progress(spec.name) as monitor:
        result = engine_backend.build(request, monitor)
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
    with ArtifactWriter(out_dir) as writer:
        writer.stage(engine_path.name).write_bytes(result.engine)
        manifest = stamp(spec, result, prepared, tag, engine_path.name, time.perf_counter() - started)
        report = _accuracy_gate(spec, model_info, manifest, result.engine, prepared, out_dir, reporter)
        manifest = manifest.replace(
            accuracy=summary(report, report_file.name) if report is not None else dict(SKIPPED_SUMMARY)
        )
        writer.stage(manifest_path.name).write_text(manifest.to_json(), encoding="utf-8")
        if report is not None:
            writer.stage(report_file.name).write_text(report.to_json(), encoding="utf-8")
        else:
            writer.remove(report_file.name)  # a report of the replaced engine would be stale
        writer.commit()  # engine, manifest and report together: the old set or the new one
    report_path(out_dir, stem, rejected=True).unlink(missing_ok=True)
    reporter.success(f"{spec.name}: {engine_path}")
    return BuildOutcome(spec, engine_path, manifest_path, manifest, choice, result.notes, report)


def _accuracy_gate(
    spec: Spec,
    model_info: ModelInfo,
    manifest: Manifest,
    engine: bytes,
    prepared: Prepared,
    out_dir: Path,
    reporter: Reporter,
) -> AccuracyReport | None:
    """Run the gate on the staged artifact; on failure keep ``{stem}.rejected.accuracy.json`` and
    raise (exit 4), so the staged engine is discarded and a previous good artifact stays."""
    if not spec.accuracy.enabled:
        reporter.warn(f"{spec.name}: accuracy gate skipped (accuracy.enabled: false)")
        return None
    from trtforge.accuracy.gate import check_artifact, raise_for_failures
    from trtforge.compat import LoadPolicy

    # the engine was built by this very process, so its embedded host code (version-compatible) is trusted
    policy = LoadPolicy(allow_host_code=True)
    report = check_artifact(spec, model_info, manifest, engine, prepared.candidate_onnx, reporter, policy=policy)
    if not report.passed:
        rejected = write_report(report_path(out_dir, manifest.stem, rejected=True), report)
        raise_for_failures(report, rejected)
    return report
