"""INT8 calibration: ``trtforge calibrate`` runs this step alone, ``trtforge build`` for int8.

One pass of the FP32 model over the calibration data (onnxruntime, CPU) gives per-tensor
ranges; they become a Q/DQ ONNX (TensorRT 11, TensorRT-RTX, and the CPU accuracy check) and,
on request, TensorRT's calibration-cache text (TensorRT 10.x ``calibration.mode: native``).
Results are cached by content: model, data, settings and tool versions.

Heavy modules (onnx, onnxruntime) are imported inside functions: importing this package
must stay cheap for ``trtforge --help``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge import __version__
from trtforge.calibration import cache
from trtforge.calibration.histogram import (
    MIN_SCALE,
    amax_to_scale,
    clipped_fraction,
    compute_amax,
)
from trtforge.data import DataPlan, data_sha256, fixed_batch_size, iter_batches, plan_data
from trtforge.errors import SpecError
from trtforge.fsutil import atomic_write_bytes, atomic_write_text, ensure_writable_dir, sha256_file
from trtforge.model import ModelInfo, inspect_model
from trtforge.spec import CalibrationSpec, Spec, expand_globs

if TYPE_CHECKING:
    import onnx

__all__ = ["MIN_SCALE", "CalibrationResult", "calibrate"]

Log = Callable[[str], None]
CLIP_WARNING = 0.01
"""Entropy usually clips well under 0.1 % of a tensor's values; more than 1 % deserves a look."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass(frozen=True)
class CalibrationResult:
    """What the build step needs: the Q/DQ model, the scales and their provenance."""

    qdq_model: Path
    scales: dict[str, float] = field(repr=False)
    algorithm: str
    mode: str
    samples: int
    data_sha256: str
    cache_file: Path
    cache_sha256: str
    reused: bool

    def manifest_section(self) -> dict[str, Any]:
        """The manifest's ``calibration`` object (README "Artifacts")."""
        return {
            "algorithm": self.algorithm,
            "mode": self.mode,
            "samples": self.samples,
            "data_sha256": self.data_sha256,
            "cache_sha256": self.cache_sha256,
        }

    def trt_cache(self, trt_version: str) -> bytes:
        """TensorRT's calibration-cache text for the TensorRT that builds (native mode)."""
        return cache.write_trt_cache(self.scales, trt_version)

    def files(self) -> dict[str, Path]:
        """The result's files in the cache, by label."""
        return {"qdq_model": self.qdq_model, "scales": self.cache_file}

    def export(self, out: Path, name: str, trt_version: str | None = None) -> dict[str, Path]:
        """Copies named for people (the cache's names are content hashes) in ``out``, plus
        TensorRT's calibration cache for ``trt_version`` when given; by label, as ``files``."""
        ensure_writable_dir(out)
        exported = {"qdq_model": out / f"{name}-int8.qdq.onnx", "scales": out / f"{name}-int8.scales.json"}
        for label, source in self.files().items():
            atomic_write_bytes(exported[label], source.read_bytes())
        if trt_version is not None:
            exported["tensorrt_cache"] = out / f"{name}-int8.trt{trt_version}.calibration.cache"
            atomic_write_bytes(exported["tensorrt_cache"], self.trt_cache(trt_version))
        return exported


@dataclass(frozen=True)
class _Batching:
    """How the data is cut: a model with a fixed batch takes only full batches of that size."""

    size: int
    drop_last: bool


def _batching(config: CalibrationSpec, info: ModelInfo, log: Log) -> _Batching:
    fixed = fixed_batch_size(info.inputs)
    if fixed is None:
        return _Batching(config.batch_size, drop_last=False)
    if fixed != config.batch_size:
        log(f"calibration: the model's batch is fixed at {fixed}; using it, not {config.batch_size}")
    return _Batching(fixed, drop_last=True)


def _cache_inputs(config: CalibrationSpec, model_path: Path, data_hash: str, batching: _Batching) -> dict[str, Any]:
    """What the scales depend on (``exclude``/``high_precision`` only change the Q/DQ model)."""
    from importlib.metadata import version

    return {
        "model_sha256": sha256_file(model_path),
        "data_sha256": data_hash,
        "settings": {
            "algorithm": config.algorithm,
            "percentile": config.percentile if config.algorithm == "percentile" else None,
            "batch_size": batching.size,
            "max_samples": config.max_samples,
            "mode": config.mode,
        },
        "versions": {"trtforge": __version__, "onnxruntime": version("onnxruntime")},
    }


def calibrate(
    spec: Spec,
    model: ModelInfo | Path,
    cache_dir: Path,
    log: Log = _stderr,
) -> CalibrationResult:
    """Calibrate ``spec``'s model on its calibration data, or reuse an identical earlier run.

    ``cache_dir`` holds the content-addressed results (scales JSON and Q/DQ ONNX); the
    returned paths point into it.
    """
    config = spec.calibration
    if config is None:
        raise SpecError(f"{spec.origin.where('precision')}: int8 needs a 'calibration:' section")
    import onnx

    from trtforge.calibration import qdq

    info = model if isinstance(model, ModelInfo) else inspect_model(model)
    # The user's graph is needed for exclude names and native mode only: loading a large
    # model again costs real time, and ModelInfo comes from a checked load.
    native = config.mode == "native"
    original = onnx.load(str(info.path)) if config.exclude or native else None
    if original is not None:
        where = [spec.origin.where("calibration", "exclude", i) for i in range(len(config.exclude))]
        qdq.check_exclude(config.exclude, original, where)
    files = expand_globs(config.data, spec.origin.where("calibration", "data"))
    batching = _batching(config, info, log)
    plan = plan_data(files, info.inputs, config.max_samples)
    data_hash = data_sha256(plan.files)
    inputs = _cache_inputs(config, info.path, data_hash, batching)
    key = cache.content_key(inputs)
    scales_file = cache.scales_path(cache_dir, key)
    cached = cache.read_scales(scales_file, key)
    folded = None
    if cached is not None:
        scales, samples = cached
        log(f"calibration: reusing {scales_file.name} (model, data and settings unchanged)")
    else:
        folded = qdq.fold_batchnorm(info.path)
        graph = original if native and original is not None else folded
        scales, samples = _scales(config, graph, plan, info, batching, log)
        atomic_write_text(scales_file, cache.scales_document(key, inputs, scales, samples))
    qdq_key = cache.content_key(
        {
            "scales": key,
            "exclude": sorted(config.exclude),
            "high_precision": config.high_precision,
            "versions": inputs["versions"],
        }
    )
    qdq_file = cache.qdq_path(cache_dir, qdq_key)
    if qdq_file.is_file():
        log(f"calibration: reusing {qdq_file.name}")
    else:
        from trtforge.precision.graphs import save_model

        folded = folded if folded is not None else qdq.fold_batchnorm(info.path)
        amax = {name: scale * 127.0 for name, scale in scales.items()}
        exclude = qdq.map_exclude(config.exclude, folded)
        save_model(qdq.quantize(folded, amax, exclude, config.high_precision), qdq_file)
        log(f"calibration: wrote {qdq_file.name} (unquantized layers in {config.high_precision})")
    return CalibrationResult(
        qdq_model=qdq_file,
        scales=scales,
        algorithm=config.algorithm,
        mode=config.mode,
        samples=samples,
        data_sha256=data_hash,
        cache_file=scales_file,
        cache_sha256=sha256_file(scales_file),
        reused=cached is not None,
    )


def _scales(
    config: CalibrationSpec,
    graph: onnx.ModelProto,
    plan: DataPlan,
    info: ModelInfo,
    batching: _Batching,
    log: Log,
) -> tuple[dict[str, float], int]:
    """Collect statistics on ``graph`` and turn them into scales.

    Q/DQ mode calibrates the folded graph's Q/DQ tensors. Native mode calibrates every
    activation of the user's graph: TensorRT 10.x looks scales up by those tensor names.
    """
    from trtforge.calibration.collect import all_activations, collect, quantized_inputs

    candidates = all_activations(graph) if config.mode == "native" else quantized_inputs(graph)
    log(f"calibration: {config.algorithm}, {len(candidates)} tensors, batches of {batching.size}")
    started = time.perf_counter()
    batches = iter_batches(plan.files, info.inputs, batching.size, config.max_samples, drop_last=batching.drop_last)
    stats, samples = collect(graph, candidates, batches, config.algorithm)
    amax = {name: compute_amax(values, config.algorithm, config.percentile) for name, values in stats.items()}
    log(f"calibration: {samples} samples in {time.perf_counter() - started:.1f} s")
    clipped = {name: clipped_fraction(stats[name], value) for name, value in amax.items()}
    heavy = sorted((name for name in amax if clipped[name] > CLIP_WARNING), key=lambda name: clipped[name])
    if heavy:
        worst = heavy[-1]
        log(
            f"calibration: warning: {config.algorithm} clips more than {CLIP_WARNING:.0%} of the "
            f"values of {len(heavy)} tensor(s) ('{worst}': {clipped[worst]:.0%}); if the "
            "accuracy gate fails, try more samples or algorithm: minmax or percentile"
        )
    return {name: amax_to_scale(value) for name, value in amax.items()}, samples
