"""INT8 calibration: ``trtforge calibrate`` runs this step alone, ``trtforge build`` for int8.

One pass of the FP32 model over the calibration data (onnxruntime, CPU) gives per-tensor
ranges; they become a Q/DQ ONNX (TensorRT 11, TensorRT-RTX, and the CPU accuracy check) and,
on request, TensorRT's calibration-cache text (TensorRT 10.x ``calibration.mode: native``).
Results are cached by content: model, data, settings and tool versions.

Heavy modules (onnx, onnxruntime) are imported inside functions: importing this package
must stay cheap for ``trtforge --help``.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge import __version__
from trtforge.calibration import cache
from trtforge.calibration.histogram import (
    MIN_SCALE,
    Algorithm,
    amax_to_scale,
    clipped_fraction,
    compute_amaxes,
)
from trtforge.data import DataPlan, fixed_batch_size, iter_batches, plan_data, shape_tensors
from trtforge.digests import data_sha256, sha256_file
from trtforge.errors import InvalidInputError, SpecError
from trtforge.fsutil import (
    atomic_write_bytes,
    atomic_write_text,
    check_writable_dir,
    ensure_writable_dir,
    refuse_folders,
    staged_file,
)
from trtforge.graphfiles import cached_graph_files, save_graph
from trtforge.mixedprecision import GRAPH_REVISIONS
from trtforge.model import (
    ModelInfo,
    content_files,
    content_sha256,
    external_tensors,
    inspect_model,
    node_names,
    read_onnx,
)
from trtforge.spec import CalibrationSpec, Spec, expand_globs

if TYPE_CHECKING:
    import onnx

__all__ = [
    "AUTO_PERCENTILES",
    "MIN_SCALE",
    "Calibration",
    "CalibrationResult",
    "CalibrationRule",
    "ScaleSet",
    "calibrate",
]

Log = Callable[[str], None]
CLIP_WARNING = 0.01
"""Entropy usually clips well under 0.1 % of a tensor's values; more than 1 % deserves a look."""
AUTO_PERCENTILES = (99.9, 99.99, 99.999)
"""The percentiles ``algorithm: auto`` tries, beside entropy and minmax."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass(frozen=True)
class CalibrationRule:
    """One rule that turns the statistics into ranges: an algorithm (and its percentile)."""

    algorithm: Algorithm
    percentile: float | None = None

    @property
    def label(self) -> str:
        return f"percentile {self.percentile:g}" if self.percentile is not None else self.algorithm


def candidates(config: CalibrationSpec) -> list[CalibrationRule]:
    """The rules to compute: the spec's one, or for ``algorithm: auto`` every rule that one
    histogram pass serves (entropy, percentiles; minmax is the histogram's running max)."""
    if config.algorithm == "auto":
        return [
            CalibrationRule("entropy"),
            CalibrationRule("minmax"),
            *(CalibrationRule("percentile", p) for p in AUTO_PERCENTILES),
        ]
    return [CalibrationRule(config.algorithm, config.percentile if config.algorithm == "percentile" else None)]


@dataclass(frozen=True)
class ScaleSet:
    """One candidate's per-tensor scales and the cache file that holds them."""

    candidate: CalibrationRule
    scales: dict[str, float] = field(repr=False)
    file: Path


@dataclass(frozen=True)
class CalibrationResult:
    """What the build step needs: the Q/DQ model, the scales and their provenance.

    ``details``: what ``algorithm: auto`` and ``exclude: auto`` chose and why, for the manifest.
    ``qdq_data``: the data file beside ``qdq_model`` that holds its weights, where the user's model
    keeps its own in external data (None: inline).
    """

    qdq_model: Path
    scales: dict[str, float] = field(repr=False)
    algorithm: str
    mode: str
    samples: int
    data_sha256: str
    cache_file: Path
    cache_sha256: str
    reused: bool
    exclude: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    qdq_data: Path | None = None

    def manifest_section(self) -> dict[str, Any]:
        """The manifest's ``calibration`` object (README "Artifacts")."""
        section: dict[str, Any] = {
            "algorithm": self.algorithm,
            "mode": self.mode,
            "samples": self.samples,
            "data_sha256": self.data_sha256,
            "cache_sha256": self.cache_sha256,
        }
        if self.exclude:
            section["exclude"] = list(self.exclude)
        return {**section, **self.details}

    def trt_cache(self, trt_version: str) -> bytes:
        """TensorRT's calibration-cache text for the TensorRT that builds (native mode)."""
        return cache.write_trt_cache(self.scales, trt_version)

    def files(self) -> dict[str, Path]:
        """The result's files in the cache, by label (``qdq_data`` only where there is one)."""
        data = {"qdq_data": self.qdq_data} if self.qdq_data is not None else {}
        return {"qdq_model": self.qdq_model, **data, "scales": self.cache_file}

    def export(self, out: Path, name: str, trt_version: str | None = None) -> dict[str, Path]:
        """Copies named for people (the cache's names are content hashes) in ``out``, plus
        TensorRT's calibration cache for ``trt_version`` when given; by label, as ``files``. A Q/DQ
        graph with a data file is exported with its own, ``{name}-int8.qdq.onnx.data``, which the
        exported graph names (the data file first: the graph never names one not there yet)."""
        ensure_writable_dir(out)
        exported = export_paths(out, name, trt_version, with_data=self.qdq_data is not None)
        if self.qdq_data is not None:
            with staged_file(exported["qdq_data"]) as tmp:
                shutil.copyfile(self.qdq_data, tmp)
            atomic_write_bytes(exported["qdq_model"], _relocated(self.qdq_model, exported["qdq_data"].name))
        else:
            atomic_write_bytes(exported["qdq_model"], self.qdq_model.read_bytes())
        atomic_write_bytes(exported["scales"], self.cache_file.read_bytes())
        if trt_version is not None:
            atomic_write_bytes(exported["tensorrt_cache"], self.trt_cache(trt_version))
        return exported


def export_paths(out: Path, name: str, trt_version: str | None, with_data: bool) -> dict[str, Path]:
    """The files :meth:`CalibrationResult.export` writes in ``out``, by label: known before the
    calibration, so that ``trtforge calibrate`` refuses a folder in the way of one before it runs."""
    paths = {"qdq_model": out / f"{name}-int8.qdq.onnx"}
    if with_data:
        paths["qdq_data"] = out / f"{name}-int8.qdq.onnx.data"
    paths["scales"] = out / f"{name}-int8.scales.json"
    if trt_version is not None:
        paths["tensorrt_cache"] = out / f"{name}-int8.trt{trt_version}.calibration.cache"
    return paths


def _keeps_external_data(info: ModelInfo) -> bool:
    """The user's model keeps its weights in external data files: its Q/DQ graph in the cache
    keeps them in a data file too (a model past protobuf's 2 GB has no other way)."""
    return bool(info.external_data) or len(content_files(info.path)) > 1


@dataclass(frozen=True)
class _Batching:
    """How the data is cut: a model with a fixed batch takes only full batches of that size; one
    with shape-tensor inputs (``shape_inputs``) one batch per data file (``trtforge.data``)."""

    size: int
    drop_last: bool
    shape_inputs: frozenset[str] = frozenset()

    def describe(self) -> str:
        if self.shape_inputs and not self.drop_last:
            names = ", ".join(f"'{name}'" for name in sorted(self.shape_inputs))
            return f"one batch per data file (shape tensor {names} takes each file's values; batch_size does not apply)"
        return f"batches of {self.size}"


def _batching(config: CalibrationSpec, info: ModelInfo, log: Log, shape_inputs: frozenset[str]) -> _Batching:
    fixed = fixed_batch_size(info.inputs, shape_inputs)
    if fixed is None:
        return _Batching(config.batch_size, drop_last=False, shape_inputs=shape_inputs)
    if fixed != config.batch_size:
        log(f"calibration: the model's batch is fixed at {fixed}; using it, not {config.batch_size}")
    return _Batching(fixed, drop_last=True, shape_inputs=shape_inputs)


def _cache_inputs(
    config: CalibrationSpec, candidate: CalibrationRule, model_path: Path, data_hash: str, batching: _Batching
) -> dict[str, Any]:
    """What the scales depend on: the model by content (its external data too), the data, the settings
    (``exclude``/``high_precision`` only change the Q/DQ model)."""
    from importlib.metadata import version

    return {
        "model_sha256": content_sha256(model_path),
        "data_sha256": data_hash,
        "settings": {
            "algorithm": candidate.algorithm,
            "percentile": candidate.percentile,
            "batch_size": batching.size,
            "max_samples": config.max_samples,
            "mode": config.mode,
        },
        "versions": {"trtforge": __version__, "onnxruntime": version("onnxruntime")},
    }


class Calibration:
    """One statistics pass (or its cached scales) for every candidate rule of the spec, and
    Q/DQ graphs for any (rule, exclusion set) from it: trying another algorithm or another
    exclusion set never calibrates again."""

    def __init__(
        self,
        spec: Spec,
        model: ModelInfo | Path,
        cache_dir: Path,
        log: Log = _stderr,
        *,
        pinned: cache.PinnedScales | None = None,
    ) -> None:
        """``pinned``: scales another cache folder may give where their bytes have a digest the
        caller holds (``trtforge verify``: the manifest's), copied into ``cache_dir`` (a scratch
        folder of its own); for one rule only: ``algorithm: auto`` computes every rule in one pass,
        and the manifest pins only the chosen one's, so it is calibrated again."""
        config = spec.calibration
        if config is None:
            raise SpecError(f"{spec.origin.where('precision')}: int8 needs a 'calibration:' section")
        import onnx

        from trtforge.calibration import qdq

        self.spec, self.config, self.cache_dir, self.log = spec, config, cache_dir, log
        self.info = model if isinstance(model, ModelInfo) else inspect_model(model)
        # The user's graph is needed for exclude names and native mode only: loading a large
        # model again costs real time, and ModelInfo comes from a checked load.
        native = config.mode == "native"
        original = onnx.load(str(self.info.path)) if config.excluded or native else None
        if original is not None:
            where = [spec.origin.where("calibration", "exclude", i) for i in range(len(config.excluded))]
            qdq.check_exclude(config.excluded, original, where)
        files = expand_globs(config.data, spec.origin.where("calibration", "data"))
        shaped = shape_tensors(spec.profiles)
        batching = _batching(config, self.info, log, shaped)
        plan = plan_data(files, self.info.inputs, config.max_samples, shape_inputs=shaped)
        self.data_sha256 = data_sha256(plan.files)
        rules = candidates(config)
        keyed = {}
        for rule in rules:
            inputs = _cache_inputs(config, rule, self.info.path, self.data_sha256, batching)
            keyed[rule] = (cache.content_key(inputs), inputs)
        if pinned is not None and len(keyed) == 1:
            ((key, _),) = keyed.values()
            if not cache.scales_path(cache_dir, key).exists():
                pinned.copy(cache.scales_path(cache_dir, key), log)
        cached = {rule: cache.read_scales(cache.scales_path(cache_dir, key), key) for rule, (key, _) in keyed.items()}
        self.reused = all(found is not None for found in cached.values())
        if self.reused:
            self.samples = next(found[1] for found in cached.values() if found is not None)
            scales = {rule: found[0] for rule, found in cached.items() if found is not None}
            names = ", ".join(cache.scales_path(cache_dir, key).name for key, _ in keyed.values())
            log(f"calibration: reusing {names} (model, data and settings unchanged)")
        else:
            scales, self.samples = self._calibrate(rules, original, plan, batching)
            for rule, (key, inputs) in keyed.items():
                document = cache.scales_document(key, inputs, scales[rule], self.samples)
                atomic_write_text(cache.scales_path(cache_dir, key), document)
        self.scale_sets = [ScaleSet(rule, scales[rule], cache.scales_path(cache_dir, keyed[rule][0])) for rule in rules]
        self.versions = keyed[rules[0]][1]["versions"]

    def _calibrate(
        self,
        rules: Sequence[CalibrationRule],
        original: onnx.ModelProto | None,
        plan: DataPlan,
        batching: _Batching,
    ) -> tuple[dict[CalibrationRule, dict[str, float]], int]:
        """Scales from the user's graph (native mode) or from the folded one, whose file,
        still at hand, spares serializing it again for the collection."""
        import onnx

        from trtforge.calibration import qdq

        if self.config.mode == "native" and original is not None:
            return _scales(self.config, rules, original, None, plan, self.info, batching, self.log)
        with qdq.folded_file(self.info.path) as saved:
            self.__dict__["folded"] = folded = onnx.load(str(saved))  # the cached property, read once
            return _scales(self.config, rules, folded, saved, plan, self.info, batching, self.log)

    @cached_property
    def folded(self) -> onnx.ModelProto:
        from trtforge.calibration import qdq

        return qdq.fold_batchnorm(self.info.path)

    @cached_property
    def has_external_data(self) -> bool:
        return _keeps_external_data(self.info)

    @cached_property
    def user_graph(self) -> onnx.GraphProto:
        """The user's graph, its weights not read (:func:`~trtforge.model.read_onnx`)."""
        return read_onnx(self.info.path).graph

    @cached_property
    def user_nodes(self) -> list[str]:
        """The user's node names, in graph order (:func:`~trtforge.model.node_names`: unnamed ones too)."""
        return node_names(self.user_graph)

    def quantized_nodes(self, scale_set: ScaleSet, exclude: Sequence[str] = ()) -> list[str]:
        """The user's nodes that get Q/DQ with ``scale_set`` and ``exclude``, in graph order:
        what an exclusion list may name to change the INT8 graph."""
        from trtforge.calibration import qdq

        amax = self._amax(scale_set)
        skipped = set(qdq.map_exclude(exclude, self.folded)) | set(qdq.nodes_without_ranges(self.folded, amax))
        placed = {site.node for site in qdq.placement(self.folded) if site.source in amax}
        folded = [
            node.name
            for node in self.folded.graph.node
            if (node.op_type in qdq.QUANTIZABLE_OPS or node.name in placed) and node.name and node.name not in skipped
        ]
        return list(dict.fromkeys(name for name in map(self._user_name, folded) if name is not None))

    def _user_name(self, folded_name: str) -> str | None:
        """The user's node that a folded node came from (see ``qdq.map_exclude``)."""
        known = self.user_nodes
        if folded_name in known:
            return folded_name
        prefixes = [name for name in known if name and folded_name.startswith(f"{name}/")]
        return max(prefixes, key=len) if prefixes else None

    @staticmethod
    def _amax(scale_set: ScaleSet) -> dict[str, float]:
        return {name: scale * 127.0 for name, scale in scale_set.scales.items()}

    def qdq_model(self, scale_set: ScaleSet, exclude: Sequence[str]) -> onnx.ModelProto:
        """The Q/DQ graph for one rule and the user's node names in ``exclude`` (in memory)."""
        from trtforge.calibration import qdq

        mapped = qdq.map_exclude(exclude, self.folded)
        return qdq.quantize(self.folded, self._amax(scale_set), mapped, self.config.high_precision)

    def result(
        self, scale_set: ScaleSet, exclude: Sequence[str], details: dict[str, Any] | None = None
    ) -> CalibrationResult:
        """The Q/DQ ONNX for ``scale_set`` and ``exclude`` in the cache (written once), and its provenance.
        A graph with unnamed nodes has a key of its own: quantized before they were named
        (``qdq.folded_file``), they were all one node "" to the placement, which could misplace Q/DQ."""
        inputs: dict[str, Any] = {
            "scales": scale_set.file.stem.removeprefix("scales-"),
            "exclude": sorted(exclude),
            "high_precision": self.config.high_precision,
            "versions": self.versions,
            "graphs": GRAPH_REVISIONS,  # the FP16 parts are to_fp16's: a new conversion, a new graph
        }
        if any(not node.name for node in self.user_graph.node):
            inputs["unnamed_nodes"] = "named by node_names"
        qdq_key = cache.content_key(inputs)
        qdq_file = cache.qdq_path(self.cache_dir, qdq_key)
        files = cached_graph_files(qdq_file)
        if files is not None:
            self.log(f"calibration: reusing {qdq_file.name}")
        else:
            graph = self.qdq_model(scale_set, exclude)
            files = save_graph(graph, qdq_file, with_data=self.has_external_data)
            del graph
            self.log(f"calibration: wrote {qdq_file.name} (unquantized layers in {self.config.high_precision})")
        return CalibrationResult(
            qdq_model=qdq_file,
            scales=scale_set.scales,
            algorithm=scale_set.candidate.algorithm,
            mode=self.config.mode,
            samples=self.samples,
            data_sha256=self.data_sha256,
            cache_file=scale_set.file,
            cache_sha256=sha256_file(scale_set.file),
            reused=self.reused,
            exclude=tuple(exclude),
            details=details or {},
            qdq_data=files[1] if len(files) > 1 else None,
        )


def _relocated(graph_file: Path, location: str) -> bytes:
    """The graph of ``graph_file`` (its weights not read) naming ``location`` as its data file."""
    import onnx

    graph = onnx.load(str(graph_file), load_external_data=False)
    for tensor in external_tensors(graph):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    return graph.SerializeToString()


def calibrate(
    spec: Spec,
    model: ModelInfo | Path,
    cache_dir: Path,
    log: Log = _stderr,
    *,
    pinned: cache.PinnedScales | None = None,
) -> CalibrationResult:
    """Calibrate ``spec``'s model on its calibration data, or reuse an identical earlier run.

    ``cache_dir`` holds the content-addressed results (scales JSON and Q/DQ ONNX); the
    returned paths point into it. ``algorithm: auto`` and ``exclude: auto`` need the accuracy
    gate to choose: ``trtforge build`` runs them (``trtforge.precision.sensitivity``).
    ``pinned``: as :class:`Calibration`'s.
    """
    config = spec.calibration
    if config is not None and "auto" in (config.algorithm, config.exclude):
        key = "algorithm" if config.algorithm == "auto" else "exclude"
        raise SpecError(
            f"{spec.origin.where('calibration', key)}: calibration.{key}: auto is chosen by the accuracy "
            "gate: run trtforge build (or trtforge diagnose), or name a value"
        )
    calibration = Calibration(spec, model, cache_dir, log, pinned=pinned)
    return calibration.result(calibration.scale_sets[0], calibration.config.excluded)


def calibrate_spec(
    spec: Spec, cache_dir: Path, log: Log = _stderr, out: Path | None = None, trt_version: str | None = None
) -> tuple[CalibrationResult, dict[str, Path]]:
    """``trtforge calibrate``: an int8 spec calibrated alone (or its earlier result reused), with
    its files: copies in ``out`` (and TensorRT's calibration cache for ``trt_version``, which
    names it), else the cache's own. Every refusal comes before anything is calibrated."""
    if spec.calibration is None or spec.precision != "int8":  # fp16's section feeds its overflow guard alone
        missing = "" if spec.calibration else " and no 'calibration:' section"
        raise SpecError(
            f"{spec.origin.where('precision')}: precision {spec.precision}{missing}: "
            "calibrate takes an int8 spec (see trtforge schema)"
        )
    if trt_version is not None:
        if out is None:
            raise InvalidInputError("--trt-version writes a file: pass --out too")
        if spec.calibration.mode != "native":
            raise SpecError(
                f"{spec.origin.where('calibration', 'mode')}: --trt-version writes TensorRT's calibration cache, "
                f"which needs calibration.mode: native (mode {spec.calibration.mode} calibrates only the tensors "
                "its Q/DQ nodes quantize, so TensorRT would find no scale for the others); set mode: native, "
                "or drop --trt-version"
            )
        try:
            trt_version = cache.trt_version_text(trt_version)  # one version, one file name
        except InvalidInputError as exc:
            raise InvalidInputError(f"--trt-version: {exc}") from exc
    if out is not None:
        check_writable_dir(out)  # a file in the way is refused now, not after the calibration
    from trtforge.spec import check_profiles

    model = inspect_model(spec.model_path)
    check_profiles(spec, model)
    if out is not None:
        exported = export_paths(out, spec.name, trt_version, with_data=_keeps_external_data(model))
        refuse_folders(exported.values(), "pass --out another folder")
    result = calibrate(spec, model, cache_dir, log=log)
    return result, result.export(out, spec.name, trt_version) if out is not None else result.files()


def _scales(
    config: CalibrationSpec,
    rules: Sequence[CalibrationRule],
    graph: onnx.ModelProto,
    saved: Path | None,
    plan: DataPlan,
    info: ModelInfo,
    batching: _Batching,
    log: Log,
) -> tuple[dict[CalibrationRule, dict[str, float]], int]:
    """Collect statistics on ``graph`` (``saved``: its temporary file, if any) once and turn
    them into scales for every rule.

    Q/DQ mode calibrates the folded graph's Q/DQ tensors. Native mode calibrates every
    activation of the user's graph: TensorRT 10.x looks scales up by those tensor names.
    A histogram serves every rule (its running max is minmax); minmax alone needs no histogram.
    """
    from trtforge.calibration.collect import all_activations, collect
    from trtforge.calibration.qdq import quantized_inputs

    tensors = all_activations(graph) if config.mode == "native" else quantized_inputs(graph)
    statistic: Algorithm = "minmax" if all(rule.algorithm == "minmax" for rule in rules) else "entropy"
    labels = ", ".join(rule.label for rule in rules)
    log(f"calibration: {labels}, {len(tensors)} tensors, {batching.describe()}")
    started = time.perf_counter()
    batches = iter_batches(
        plan.files,
        info.inputs,
        batching.size,
        config.max_samples,
        drop_last=batching.drop_last,
        shape_inputs=batching.shape_inputs,
    )
    stats, samples = collect(graph, tensors, batches, statistic, saved=saved)
    if samples == 0:  # a fixed batch that no run of like samples fills: scales from nothing
        raise InvalidInputError(
            f"{plan.files[0]}: calibration ran on no sample: the model's batch is fixed at {batching.size}, and "
            f"the data ({plan.samples} samples) never fills one with samples of one shape (and one set of "
            f"shape-tensor values): give at least {batching.size} such samples"
        )
    log(f"calibration: {samples} samples in {time.perf_counter() - started:.1f} s")
    scales = {}
    for rule in rules:
        percentile = rule.percentile or config.percentile
        amax = compute_amaxes(stats, rule.algorithm, percentile)
        if len(rules) == 1:
            _warn_clipping(rule, stats, amax, log)
        scales[rule] = {name: amax_to_scale(value) for name, value in amax.items()}
    return scales, samples


def _warn_clipping(rule: CalibrationRule, stats: dict[str, Any], amax: dict[str, float], log: Log) -> None:
    clipped = {name: clipped_fraction(stats[name], value) for name, value in amax.items()}
    heavy = sorted((name for name in amax if clipped[name] > CLIP_WARNING), key=lambda name: clipped[name])
    if heavy:
        worst = heavy[-1]
        log(
            f"calibration: warning: {rule.label} clips more than {CLIP_WARNING:.0%} of the "
            f"values of {len(heavy)} tensor(s) ('{worst}': {clipped[worst]:.0%}); if the "
            "accuracy gate fails, try more samples, algorithm: auto, or exclude: auto"
        )
