"""``trtforge verify``: run the accuracy gate again on an artifact that already exists.

The spec supplies the ONNX model and the data; it must be the spec the engine was built from
(the manifest's ``source`` hashes say so). The report is written beside the engine, and the
manifest's ``accuracy`` updated with it, unless the manifest is signed: nothing rewrites a signed
manifest, nor the report it pins (its signature covers both); only a report it does not pin (none,
or another) is written beside it.

Nothing derived is taken from the host's cache folder, which anyone who writes it could have
planted: the precision step runs again in a scratch folder of this run (the FP16 graph, its
emulation, the overflow guard, the Q/DQ graph), and only the calibration scales entry whose bytes
have the manifest's ``calibration.cache_sha256`` comes from the cache folder
(:class:`~trtforge.calibration.cache.PinnedScales`); the reference is never read from it either.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.accuracy.gate import GateFailed, failure_message, run_accuracy_gate
from trtforge.accuracy.report import AccuracyReport, summary
from trtforge.artifact import ArtifactWriter, locked_manifest
from trtforge.console import Reporter
from trtforge.digests import sha256_file
from trtforge.environment import file_problem
from trtforge.errors import IncompatibleEngineError, InvalidInputError
from trtforge.fsutil import temp_dir
from trtforge.manifest import REPORT_SHA256, ArtifactPaths, Manifest, report_path
from trtforge.model import check_model_file, content_sha256, model_files
from trtforge.shapes import spec_profiles
from trtforge.spec import Spec

if TYPE_CHECKING:
    from trtforge.calibration.cache import PinnedScales
    from trtforge.model import ModelInfo
    from trtforge.precision import Prepared


@dataclass(frozen=True)
class VerifyOutcome:
    engine: Path
    report: AccuracyReport
    report_file: Path
    manifest_updated: bool
    report_written: bool  # False: report_file is the one a signed manifest pins, left as it was


def source_mismatch(
    spec: Spec, manifest: Manifest, onnx_sha256: str, model_sha256: Callable[[], str] | None = None
) -> str | None:
    """Why ``manifest`` was not built from ``spec`` and its model (None when it was).

    The .onnx file must be the one the manifest's ``source.onnx_sha256`` names. Where the manifest
    also records the model's content digest (``source.model_sha256``: its weights live in external
    data files), the model's content now must be that too: weights edited in their data file, the
    .onnx the same, are another model. ``model_sha256`` gives that digest (asked only then); a
    manifest without one (a model without external data, or written before the field) keeps the
    .onnx file's rule alone."""
    source = manifest.source
    if source.onnx_sha256 != onnx_sha256:
        return (
            f"model {spec.model_path} (sha256 {onnx_sha256[:12]}…) is not the ONNX the engine was built from "
            f"(sha256 {source.onnx_sha256[:12]}…)"
        )
    if source.model_sha256 is not None:
        content = model_sha256() if model_sha256 is not None else content_sha256(spec.model_path, disk_cache=False)
        if content != source.model_sha256:
            data = ", ".join(str(path) for path in model_files(spec.model_path)[1:]) or "none now"
            return (
                f"the external data of model {spec.model_path} ({data}) is not the weights the engine was built "
                f"from (content sha256 {content[:12]}…, the engine's {source.model_sha256[:12]}…)"
            )
    if source.spec_sha256 != spec.origin.sha256:
        return (
            f"spec {spec.origin.path} (sha256 {spec.origin.sha256[:12]}…) differs from the one the engine was "
            f"built from (sha256 {source.spec_sha256[:12]}…)"
        )
    return None


def stamp_mismatch(spec: Spec, manifest: Manifest) -> str | None:
    """What the manifest says of the build that ``spec`` (its source hashes matched) decides, and
    does not say as the build wrote it (None when all agree): the name, the precision, the
    profiles (``build.stamp``), a calibration where (only where) the precision is int8, and an
    ``fp16`` section nowhere but at fp16 (TensorRT 10.x's FP16 flag writes none). An
    unsigned manifest is plain JSON: one whose profiles were edited after the build passed, and
    verify stamped its fresh verdict on it, so that serving planned for shapes the engine never
    took (pure)."""
    for key, stamped, given in (
        ("name", manifest.name, spec.name),
        ("precision", manifest.precision, spec.precision),
        ("profiles", manifest.profiles, spec_profiles(spec.profiles)),
    ):
        if stamped != given:
            return f"its {key} {stamped} is not what {spec.origin.where(key)} gave the build ({given})"
    if (manifest.calibration is None) == (spec.precision == "int8"):  # else the data checks are skipped
        recorded = "no calibration" if manifest.calibration is None else "a calibration"
        return f"it records {recorded}, and {spec.origin.where('precision')} is {spec.precision}"
    if manifest.fp16 is not None and spec.precision != "fp16":  # only an FP16 graph has nodes kept in FP32
        return f"it records an fp16 section, and {spec.origin.where('precision')} is {spec.precision}"
    return None


#: the type TensorRT's ONNX parser gives a network input or output the model declares with a type
#: TensorRT has none of: DOUBLE becomes float32 (``backends.messages.TRT_ONNX_DTYPES``)
_PARSED_DTYPES = {"float64": "float32"}
#: what TensorRT's ONNX parser names a network input the model also declares as an output (the
#: output keeps the name); measured on TensorRT-RTX 1.7
_PARSED_INPUT_NAME = "__{}"


def io_mismatch(manifest: Manifest, info: ModelInfo) -> str | None:
    """What the manifest's ``io`` says of the engine's inputs and outputs that the model built from
    (its source hashes matched) does not: the first tensor and field that differ (None when all
    agree; pure). Edited, it misleads serving (``serve``'s signature, Triton's ``config.pbtxt``).

    The build records TensorRT's parsed network (``TensorRTApiBackend._io``), which only TensorRT
    can make, and verify runs without it; so only what that network takes from the model's
    declarations is compared: the tensors in order (the graph's inputs, initializers left out, then
    its outputs), their names (an input that is also an output as ``_PARSED_INPUT_NAME``) and dtypes
    (float64 as ``_PARSED_DTYPES``; the FP16 and Q/DQ graphs keep the model's input and output types,
    and a build refuses a type TensorRT has none of), and the inputs' shapes (each declared dim, 0
    included, -1 for a named or unknown one, as TensorRT's ONNX parser takes them). An output's shape
    is TensorRT's own inference, which a declared one may not match (absent, named where TensorRT
    finds a size, stale): it is not compared."""
    declared = [("input", tensor) for tensor in info.inputs] + [("output", tensor) for tensor in info.outputs]
    outputs = {tensor.name for tensor in info.outputs}
    for index, (recorded, (mode, tensor)) in enumerate(zip(manifest.io, declared, strict=False)):  # lengths: below
        renamed = mode == "input" and tensor.name in outputs
        facts: list[tuple[str, object, object, object]] = [
            ("name", recorded.name, tensor.name, _PARSED_INPUT_NAME.format(tensor.name) if renamed else tensor.name),
            ("mode", recorded.mode, mode, mode),
            ("dtype", recorded.dtype, tensor.dtype, _PARSED_DTYPES.get(tensor.dtype, tensor.dtype)),
        ]
        if mode == "input":
            shape = [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in tensor.shape]
            facts.append(("shape", recorded.shape, shape, shape))
        for field, stamped, given, parsed in facts:
            if stamped != parsed:
                taken = f" (TensorRT's {parsed!r})" if parsed != given else ""
                return (
                    f"its io[{index}] ({recorded.mode} '{recorded.name}') has {field} {stamped!r} where model "
                    f"{info.path} declares {given!r}{taken}"
                )
    if len(manifest.io) != len(declared):
        return f"its io lists {len(manifest.io)} tensors where model {info.path} declares {len(declared)}"
    return None


def calibration_mismatch(built: dict[str, Any] | None, now: dict[str, Any] | None) -> str | None:
    """Why the INT8 graph calibrated now is not the engine's, from the manifest's ``calibration``
    sections (None when it is): the gate would judge scales from other data or another choice,
    and could pass an engine whose own scales fail (pure)."""
    if not built or not now:
        return None
    if built.get("data_sha256") != now.get("data_sha256"):
        return (
            f"the calibration data (sha256 {str(now.get('data_sha256'))[:12]}…) is not the data the engine "
            f"was calibrated on (sha256 {str(built.get('data_sha256'))[:12]}…): restore that data to verify "
            "this engine, or rebuild it"
        )
    for key in ("algorithm", "exclude", "cache_sha256"):
        if built.get(key) != now.get(key):
            return (
                f"calibrating again gives another {key} ({now.get(key)}) than the engine's ({built.get(key)}), "
                "so the gate would judge another graph than the engine's: rebuild the engine"
            )
    return None


def keep_fp32_mismatch(built: dict[str, Any] | None, now: dict[str, Any] | None) -> str | None:
    """Why the FP16 graph prepared now is not the engine's, from the manifest's ``fp16`` sections
    (None when it is): an overflow guard that chose again on data changed since (pure)."""
    if not built or not now:
        return None
    kept, keeps = sorted(built.get("keep_fp32") or []), sorted(now.get("keep_fp32") or [])
    if kept == keeps:
        return None
    return (
        f"the FP16 overflow guard now keeps {keeps or 'no node'} in FP32, the engine kept {kept or 'none'} "
        "(its data or the guard's rules changed since the build), so the gate would judge another graph "
        "than the engine's: rebuild the engine"
    )


def verify_engine(spec: Spec, engine: Path, reporter: Reporter, cache_dir: Path | None = None) -> VerifyOutcome:
    """The gate on one existing artifact; raises GateFailed (exit 4) after writing the report."""
    paths = ArtifactPaths.of(engine, " and --spec SPEC").must_exist()
    with locked_manifest(paths.manifest) as manifest:  # no build replaces the artifact meanwhile
        return _verify_locked(spec, paths, manifest, reporter, cache_dir)


def _verify_locked(
    spec: Spec, paths: ArtifactPaths, manifest: Manifest, reporter: Reporter, cache_dir: Path | None
) -> VerifyOutcome:
    """verify_engine's work, under the artifact's lock; writes report and manifest as one commit."""
    from trtforge.cache import default_cache_dir
    from trtforge.model import inspect_model
    from trtforge.precision import prepare_precision
    from trtforge.spec import check_profiles

    check_model_file(spec.model_path, spec.origin.where("model"))
    engine = paths.existing_engine("pull or rebuild the engine")
    mismatch = source_mismatch(spec, manifest, sha256_file(spec.model_path, disk_cache=False))
    if mismatch:
        raise InvalidInputError(
            f"{engine.name}: {spec.origin.path} is not the spec this engine was built from ({mismatch}); "
            f"pass the spec that built it (name: {manifest.name}) as --spec"
        )
    edited = stamp_mismatch(spec, manifest)
    if edited:
        raise _edited(paths, edited)
    damaged = file_problem(manifest, engine)
    if damaged:
        raise IncompatibleEngineError(f"{engine}: {damaged}", reasons=[damaged])
    info = inspect_model(spec.model_path)  # loaded and checked, its weights dropped once described
    edited = io_mismatch(manifest, info)
    if edited:
        raise _edited(paths, edited)
    check_profiles(spec, info)
    cache_dir = cache_dir or default_cache_dir()
    with _scratch(cache_dir, spec.precision != "fp32") as scratch:
        # every graph the candidate is derived from is made again in a scratch folder of this run,
        # never taken from the cache folder (a planted FP16 emulation, Q/DQ graph or scales entry
        # would pass a broken engine); only scales whose bytes have the manifest's digest come from it
        prepared = prepare_precision(
            spec,
            info,
            manifest.tensorrt.flavor,
            manifest.tensorrt.version,
            scratch,
            reporter,
            pinned_scales=_pinned_scales(manifest, cache_dir),
        )
        try:
            other_graph = calibration_mismatch(manifest.calibration, prepared.calibration) or keep_fp32_mismatch(
                manifest.fp16, prepared.fp16
            )
            if other_graph:
                raise InvalidInputError(f"{engine.name}: {other_graph}")
            # the reference runs here, never read from the cache (a planted entry would pass a broken engine);
            # its outputs are stored there, genuine ones replacing whatever entry a later build would read
            report = run_accuracy_gate(
                spec, info, manifest, engine, prepared.candidate_onnx, reporter, cache_dir=cache_dir, read_cache=False
            )
        finally:
            _settled(prepared)
    report_file = report_path(engine.parent, manifest.stem)
    signed = manifest.signature is not None
    pinned = signed and _pinned_report(manifest, report_file)
    if pinned:
        reporter.info(f"{engine.name}: signed manifest and its report {report_file.name} left unchanged")
    else:
        with ArtifactWriter(engine.parent, manifest.name, manifest.precision) as writer:  # report and manifest together
            writer.write(report_file.name, report.to_json().encode("utf-8"))
            if not signed:
                updated = manifest.replace(accuracy=summary(report, report_file.name))
                writer.write(paths.manifest.name, updated.to_json().encode("utf-8"))
            late = writer.commit()
        if late.note:
            reporter.info(late.note)
        if signed:
            reporter.info(f"{engine.name}: signed manifest left unchanged; report in {report_file}")
    if not report.passed:
        where = f"not written ({report_file.name}, the signed one, left as it was)" if pinned else report_file
        raise GateFailed(failure_message(report, where), report)
    return VerifyOutcome(engine, report, report_file, manifest_updated=not signed, report_written=not pinned)


def _edited(paths: ArtifactPaths, edited: str) -> IncompatibleEngineError:
    """A manifest that says otherwise than the build wrote (``edited``: what), exit 5: nothing is
    stamped on it."""
    return IncompatibleEngineError(
        f"{paths.manifest}: {edited}: the manifest was edited after the build, it does not describe "
        "the engine; restore it, or rebuild the engine",
        reasons=[edited],
    )


@contextlib.contextmanager
def _scratch(cache_dir: Path, needed: bool) -> Iterator[Path]:
    """A folder of this run's own in ``cache_dir`` for the precision step's graphs, removed after
    (a killed run's is swept by the next build: :func:`trtforge.fsutil.temp_dir`); ``cache_dir``
    itself where nothing is derived (fp32: the spec's model is the candidate)."""
    if not needed:
        yield cache_dir
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    with temp_dir(cache_dir, "verify") as scratch:
        yield scratch


def _pinned_scales(manifest: Manifest, cache_dir: Path) -> PinnedScales | None:
    """The calibration scales the cache folder may give: only the entry whose bytes have the
    manifest's ``calibration.cache_sha256`` (None: no INT8 calibration recorded)."""
    from trtforge.calibration.cache import PinnedScales

    digest = (manifest.calibration or {}).get("cache_sha256")
    return PinnedScales(cache_dir / "calibration", digest) if isinstance(digest, str) else None


def _settled(prepared: Prepared) -> None:
    """Wait for the FP16-storage emulation, if still running, before its folder is removed; its
    failure is the gate's to report, and where the gate did not run, nothing asks for it."""
    if callable(prepared.simulated_onnx):
        with contextlib.suppress(Exception):
            prepared.simulated_onnx()


def _pinned_report(manifest: Manifest, report_file: Path) -> bool:
    """Whether ``report_file`` is the report the signed ``manifest`` pins: its signature covers the
    report's sha256 (``report_sha256``), so verify, which checks the artifact, never rewrites it. A
    manifest written before that field pins its report by the summary alone (``checked_utc`` too):
    the report there is left as it is."""
    accuracy = manifest.accuracy or {}
    if accuracy.get("report") != report_file.name or not report_file.is_file():
        return False
    pinned = accuracy.get(REPORT_SHA256)
    return pinned is None or sha256_file(report_file, disk_cache=False) == pinned


def spec_artifacts(spec: Spec, out_dir: Path) -> list[Path]:
    """Engines in ``out_dir`` built from this spec and its model (matched by the source hashes)."""
    from trtforge.runtime.loader import find_artifacts

    if not out_dir.is_dir():
        what = "not a folder" if out_dir.exists() else "no such folder"  # a file, say, is there
        raise InvalidInputError(
            f"{out_dir}: {what}; build first (trtforge build {spec.origin.path} --out {out_dir}) or pass --out"
        )
    check_model_file(spec.model_path, spec.origin.where("model"))
    # verify judges an artifact: its hashes are taken here, never the digest cache's (digests.sha256_file)
    onnx_sha256 = sha256_file(spec.model_path, disk_cache=False)
    model_sha256 = functools.cache(lambda: content_sha256(spec.model_path, disk_cache=False))  # where asked
    matches: list[Path] = []
    mismatches: list[str] = []
    listing = find_artifacts(out_dir, spec.name, spec.precision)
    for manifest, engine in listing.found:
        mismatch = source_mismatch(spec, manifest, onnx_sha256, model_sha256)
        if mismatch:
            mismatches.append(f"{engine.name}: {mismatch}")
        else:
            matches.append(engine)
    if matches:
        return matches
    if mismatches:
        raise InvalidInputError(
            f"{out_dir}: no engine built from this spec and model ({mismatches[0]}); rebuild with "
            f"trtforge build {spec.origin.path} --out {out_dir}"
        )
    raise InvalidInputError(
        f"{out_dir}: no {spec.precision} engine named '{spec.name}'; build it first "
        f"(trtforge build {spec.origin.path} --out {out_dir}), or pass ENGINE --spec SPEC{listing.note}"
    )
