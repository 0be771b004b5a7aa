"""The precision step: spec -> the graph the backend builds, and how the backend must treat it.

- fp32: the spec's model as is.
- fp16: an FP16-converted graph (:mod:`trtforge.precision.graphs`); on weakly typed TensorRT
  10.x the model as is with the builder's FP16 flag instead.
- int8: the calibration step's Q/DQ graph (:mod:`trtforge.calibration`); with
  ``calibration.mode: native`` (TensorRT 10.x only) the model as is with TensorRT's
  calibration cache.

Heavy modules (onnx, onnxruntime) are imported inside functions: importing this package must
stay cheap for ``trtforge --help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trtforge.compat import version_tuple
from trtforge.errors import SpecError
from trtforge.precision.graphs import fp16_onnx

if TYPE_CHECKING:
    from trtforge.console import Reporter
    from trtforge.model import ModelInfo
    from trtforge.spec import Spec


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
