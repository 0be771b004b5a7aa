"""The precision step: spec -> the graph the backend builds, and how the backend must treat it.

- fp32: the spec's model as is.
- fp16: an FP16-converted graph (:mod:`trtforge.precision.graphs`), with the nodes whose
  activations overflow FP16 kept in FP32 (:mod:`trtforge.precision.overflow`); on weakly typed
  TensorRT 10.x the model as is with the builder's FP16 flag instead.
- int8: the calibration step's Q/DQ graph (:mod:`trtforge.calibration`); ``algorithm: auto`` and
  ``exclude: auto`` chosen with the accuracy gate (:mod:`trtforge.precision.sensitivity`); with
  ``calibration.mode: native`` (TensorRT 10.x only) the model as is with TensorRT's
  calibration cache.

Wherever the engine stores FP16 tensors, the accuracy gate's simulated candidate is the graph's
FP16-storage emulation (:func:`trtforge.mixedprecision.emulate_fp16`): onnxruntime's CPU
provider would run the FP16 graph itself with FP32 intermediates, hiding overflow and rounding.

Heavy modules (onnx, onnxruntime, and the steps that import numpy: calibration, the overflow
guard, the sensitivity search) are imported inside functions: importing this package must stay
cheap for ``trtforge --help`` and an fp32 build.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trtforge.compat import weakly_typed
from trtforge.errors import SpecError
from trtforge.threads import beside

if TYPE_CHECKING:
    import onnx

    from trtforge.calibration.cache import PinnedScales
    from trtforge.console import Reporter
    from trtforge.deadline import Deadline
    from trtforge.model import ModelInfo
    from trtforge.precision.overflow import KeepFp32
    from trtforge.precision.sensitivity import SensitivitySearch
    from trtforge.spec import Spec


@dataclass(frozen=True)
class Prepared:
    """The precision step's output: the graph to build and how the backend must treat it.

    ``simulated_onnx`` is what onnxruntime runs for the accuracy gate when the engine cannot run
    here, where that differs from ``onnx_path``: the FP16-storage emulation of a graph with FP16
    parts (made in a thread of its own, so that the TensorRT build, which releases the GIL, runs
    beside it), or the graph TensorRT 10.x's builder flags (FP16 flag, native INT8) stand for.
    ``fp16``: the manifest's ``fp16`` section (the nodes kept in FP32, and why).
    ``sensitivity``: the ``exclude: auto`` search that chose the graph's exclusions (None without one).
    """

    onnx_path: Path
    fp16_flag: bool = False
    calibration_cache: bytes | None = None
    calibration: dict | None = None
    simulated_onnx: Path | Callable[[], Path] | None = None
    fp16: dict | None = None
    derived: str = ""  # what ``onnx_path`` is when not the spec's model: "fp16-converted", "int8 Q/DQ"
    sensitivity: SensitivitySearch | None = None

    @property
    def candidate_onnx(self) -> Path:
        """The gate's simulated candidate (waiting for the emulation; raising its failure)."""
        simulated = self.simulated_onnx
        if simulated is None or isinstance(simulated, Path):
            return simulated or self.onnx_path
        return simulated()


def prepare_precision(
    spec: Spec,
    model_info: ModelInfo,
    flavor: str,
    version: str,
    cache_dir: Path,
    reporter: Reporter,
    for_gate: bool = True,
    *,
    diagnosis: Deadline | None = None,
    pinned_scales: PinnedScales | None = None,
) -> Prepared:
    """fp32: the model as is; fp16: an FP16 graph (or, on TensorRT 10.x, the FP16 flag); int8: Q/DQ.

    ``for_gate=False`` (the gate is off): no FP16-storage emulation is made, as nothing runs it.
    ``diagnosis``: ``trtforge diagnose``'s deadline, which an ``exclude: auto`` search keeps too
    (:func:`~trtforge.precision.sensitivity.auto_calibrate`). ``pinned_scales``: calibration
    scales that another cache folder than ``cache_dir`` may give where their digest is the pinned
    one (``trtforge verify``, whose ``cache_dir`` is a scratch folder; see
    :class:`~trtforge.calibration.cache.PinnedScales`).
    """

    if spec.precision == "fp32":
        return Prepared(spec.model_path)
    from trtforge.cache import refuse_files_in_the_way

    refuse_files_in_the_way(cache_dir)  # before converting or calibrating: not met halfway as an internal error
    from trtforge.precision.graphs import emulated_onnx, fp16_onnx, onnx_loader

    def emulated(graph: Callable[[], Path]) -> Callable[[], Path] | None:
        return beside(lambda: emulated_onnx(graph(), cache_dir), "trtforge-emulation") if for_gate else None

    weakly_typed_trt = weakly_typed(flavor, version)
    if spec.precision == "fp16":
        if weakly_typed_trt:  # TensorRT picks each layer's precision itself: no keep list to apply
            _unread_without_guard(spec, version, reporter)
            simulated = emulated(lambda: fp16_onnx(spec.model_path, cache_dir))
            return Prepared(spec.model_path, fp16_flag=True, simulated_onnx=simulated)
        keep, graph = _fp16_graph(spec, model_info, cache_dir, reporter, onnx_loader(spec.model_path))
        return Prepared(
            graph,
            simulated_onnx=emulated(lambda: graph),
            fp16=keep.manifest_section(),
            derived="fp16-converted",
        )
    from trtforge.calibration import calibrate

    calibration = spec.calibration
    if calibration is None:  # the spec model refuses int8 without it; keep type checkers informed
        raise SpecError(f"{spec.origin.where('precision')}: precision int8 needs a 'calibration:' section")
    if calibration.mode == "native" and not weakly_typed_trt:
        raise SpecError(
            f"{spec.origin.where('calibration', 'mode')}: calibration.mode native needs "
            f"enterprise TensorRT 10.x (this backend is {flavor} {version}); use mode: qdq"
        )
    if "auto" in (calibration.algorithm, calibration.exclude):  # chosen with the gate's inputs
        from trtforge.precision.sensitivity import auto_calibrate

        result, found = auto_calibrate(
            spec, model_info, cache_dir / "calibration", reporter.info, diagnosis=diagnosis, pinned=pinned_scales
        )
    else:
        folder = cache_dir / "calibration"
        result, found = calibrate(spec, model_info, cache_dir=folder, log=reporter.info, pinned=pinned_scales), None
    fp16_parts = calibration.high_precision == "fp16"  # the layers left out of INT8 store FP16
    if calibration.mode == "native":
        return Prepared(
            spec.model_path,
            fp16_flag=fp16_parts,
            calibration_cache=result.trt_cache(version),
            calibration=result.manifest_section(),
            simulated_onnx=emulated(lambda: result.qdq_model) if fp16_parts else result.qdq_model,
        )
    return Prepared(
        result.qdq_model,
        calibration=result.manifest_section(),
        simulated_onnx=emulated(lambda: result.qdq_model) if fp16_parts else None,
        derived="int8 Q/DQ",
        sensitivity=found,
    )


def _unread_without_guard(spec: Spec, version: str, reporter: Reporter) -> None:
    """Under TensorRT 10.x's FP16 flag no overflow guard runs and no keep list applies: a
    ``calibration:`` section (the guard's data) or ``fp16.keep_fp32`` the spec gives is said to be
    unread, at its line (a warning: with ``backend: auto`` another machine's build may read it)."""
    unread: list[tuple[tuple[str, ...], str]] = []
    if spec.calibration is not None:
        unread.append((("calibration",), "calibration:"))
    if spec.fp16.keep_fp32 is not None:
        unread.append((("fp16", "keep_fp32"), "fp16.keep_fp32"))
    for loc, what in unread:
        reporter.warn(
            f"{spec.origin.where(*loc)}: TensorRT {version} picks each layer's precision under its FP16 flag, "
            f"with no overflow guard: {what} is not read (a strongly typed backend, TensorRT-RTX or TensorRT 11, "
            "reads it)"
        )


def _fp16_graph(
    spec: Spec, model_info: ModelInfo, cache_dir: Path, reporter: Reporter, source: Callable[[], onnx.ModelProto]
) -> tuple[KeepFp32, Path]:
    """The nodes kept in FP32 and the FP16 graph made with them. The overflow guard runs beside
    the conversion it decides: its onnxruntime session releases the GIL while the converter works
    in Python and numpy, and most models keep no node, so the graph converted meanwhile with none
    kept is the one built. Where the guard keeps nodes, the conversion is done again with them:
    the graph is the same as when the guard ran first. ``source`` is one load of the model for
    both: the guard reads it, the converter converts a deep copy of it. Where the spec lists the
    nodes itself there is no guard to run, only the conversion. One after the other where weights
    live in external data (models past protobuf's 2 GB): there the guard's session is made from
    the loaded model itself, which it extends for a moment, and the converter converts that load,
    as a copy beside it would cost gigabytes.

    The conversion leaves its input as it is (the converter works on what shape inference
    returns), so the copy is not for the guard: converting the load itself measured slower in a
    build (ResNet-18 224, ``keep_fp32: []``, 2-core VM: 1.06-1.12 s against 0.90-0.97 s on a copy,
    194k to 220k page faults against 76k, three runs each). perf puts the extra faults in the
    numpy temporaries of onnxruntime's float16 converter, which land on fresh pages of glibc's
    heap instead of reused ones. A bare script that only converts shows the opposite: the heap's
    state before the conversion decides, and the build's is measured here."""
    from trtforge.model import external_tensors, read_onnx
    from trtforge.precision.graphs import fp16_onnx
    from trtforge.precision.overflow import GuardStopped, choose_keep_fp32

    def copied() -> onnx.ModelProto:
        return copy.deepcopy(source())

    external = any(external_tensors(read_onnx(spec.model_path)))
    if spec.fp16.keep_fp32 is not None or external:
        keep = choose_keep_fp32(spec, model_info, reporter.info, cache_dir, source)
        reporter.info(f"{spec.name}: {keep.describe()}")
        return keep, fp16_onnx(spec.model_path, cache_dir, keep.nodes, source if external else copied)
    stop = threading.Event()
    guard = beside(
        lambda: choose_keep_fp32(spec, model_info, reporter.info, cache_dir, source, stop), "trtforge-fp16-guard"
    )
    try:
        try:
            none_kept = fp16_onnx(spec.model_path, cache_dir, (), copied)
        except Exception:
            stop.set()  # the guard ends before its next batch: an error it met until then comes first
            with contextlib.suppress(GuardStopped):
                guard()
            raise
        keep = guard()
    except BaseException:
        stop.set()  # Ctrl-C: the guard ends before its next batch, not after its last
        raise
    reporter.info(f"{spec.name}: {keep.describe()}")
    return keep, fp16_onnx(spec.model_path, cache_dir, keep.nodes, source) if keep.nodes else none_kept
