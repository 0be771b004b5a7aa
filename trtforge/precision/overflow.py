"""The FP16 overflow guard: which nodes ``precision: fp16`` keeps in FP32, and why.

A tensor whose FP32 values exceed FP16's largest finite value (65504) becomes inf in an FP16
engine, and NaN soon after. The guard runs the FP32 graph with every activation exposed, batch by
batch (running max |x| per tensor, nothing else kept), on the calibration data if the spec has
some, else the accuracy data, else the gate's random inputs, and keeps in FP32 the node that
produces each such tensor and every node that reads it, so the tensor never needs FP16 storage.
``fp16.keep_fp32`` in the spec replaces the guard's choice; an empty list turns the guard off.

On the gate's random inputs the guard runs one sample of each shape set (the samples of a random
batch are independent draws of one distribution: a batch of 32 finds the range a sample does, at
32 times the cost); data files run in full. Its choice is cached by content (``fp16-guard/`` in the
cache folder): the model's (its file and external data), what the data is (files' sha256, or
shapes and seed), and the onnxruntime version, so a rebuild of the same model on the same data runs
no model at all.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.accuracy import inputs
from trtforge.digests import data_sha256
from trtforge.errors import InvalidInputError, SpecError, did_you_mean, first_line, raise_if_interrupted
from trtforge.fsutil import atomic_write_text
from trtforge.jsonsafe import cache_json, json_sha256
from trtforge.model import node_names

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from trtforge.model import ModelInfo
    from trtforge.spec import Spec


class GuardStopped(BaseException):
    """The guard was told to stop (its build was interrupted or failed): not a failure of the
    model, so it passes the guard's own ``except Exception`` (which reports onnxruntime failures)."""


FP16_MAX = 65504.0
"""FP16's largest finite value: anything larger is stored as inf."""
FOLDER = "fp16-guard"
"""The cache folder's subfolder of the guard's choices (see :mod:`trtforge.cache`)."""


@dataclass(frozen=True)
class KeepFp32:
    """The nodes an FP16 build keeps in FP32, who chose them, and why each."""

    nodes: tuple[str, ...]
    chosen_by: str  # "overflow guard", "spec", or "spec (overflow guard off)"
    reasons: Mapping[str, str] = field(default_factory=dict)
    data: str | None = None  # what the guard ran on

    def manifest_section(self) -> dict[str, Any]:
        """The manifest's ``fp16`` object."""
        section: dict[str, Any] = {"keep_fp32": list(self.nodes), "chosen_by": self.chosen_by}
        if self.reasons:
            section["reasons"] = dict(self.reasons)
        if self.data:
            section["data"] = self.data
        return section

    def describe(self) -> str:
        """One log line: which nodes stay FP32, and why."""
        if not self.nodes:
            on = f" on {self.data}" if self.data else ""
            return f"fp16: no node kept in FP32 ({self.chosen_by}{on})"
        listed = ", ".join(f"{node} ({self.reasons[node]})" if node in self.reasons else node for node in self.nodes)
        return f"fp16: {len(self.nodes)} node(s) kept in FP32 by the {self.chosen_by}: {listed}"


def overflowing_nodes(model: onnx.ModelProto, amax: Mapping[str, float]) -> dict[str, str]:
    """Node -> why it stays FP32: it produces or reads a tensor whose max |x| exceeds FP16_MAX. A
    node without a name is named as :func:`~trtforge.model.node_names` names it (pure)."""
    over = {name: value for name, value in amax.items() if value > FP16_MAX}
    reasons: dict[str, list[str]] = {}
    # a Constant too: the converter would store its value in FP16
    for node, node_name in zip(model.graph.node, node_names(model.graph), strict=True):
        why = [f"output '{name}' reaches {over[name]:.4g}" for name in node.output if name in over]
        why += [f"input '{name}' reaches {over[name]:.4g}" for name in node.input if name in over]
        if why:
            reasons.setdefault(node_name, []).extend(why)
    return {node: ", ".join(why) + f" > {FP16_MAX:g}" for node, why in reasons.items()}


def keep_fp32_yaml(nodes: Sequence[str]) -> str:
    """The ``fp16.keep_fp32`` spec lines that keep ``nodes`` in FP32, to paste as they are
    (``trtforge diagnose`` gives them): names YAML would read as another value come quoted."""
    from trtforge.calibration.qdq import spec_lines

    return spec_lines("fp16", "keep_fp32", nodes)


def oversized_weights(model: onnx.ModelProto) -> dict[str, float]:
    """Float initializers and Constant outputs with a finite |w| over FP16_MAX, by name -> max |w|:
    the FP16 converter clamps them to 65504 (a weight of 1e5 becomes 0.66 of itself), so the nodes
    reading them stay FP32 like those reading an overflowing activation (pure)."""
    from onnx import TensorProto, numpy_helper

    from trtforge.calibration.histogram import finite_peak

    named = [(tensor.name, tensor) for tensor in model.graph.initializer]
    named += [  # a Constant's tensor is named by the node's output (its own name is usually empty)
        (node.output[0], attr.t)
        for node in model.graph.node
        if node.op_type == "Constant" and node.output
        for attr in node.attribute
        if attr.name == "value"
    ]
    floats = (TensorProto.FLOAT, TensorProto.DOUBLE)
    found: dict[str, float] = {}
    for name, tensor in named:
        if tensor.data_type not in floats:
            continue
        values = numpy_helper.to_array(tensor)
        peak = finite_peak(values) if values.size else 0.0
        if peak > FP16_MAX:
            found[name] = peak
    return found


def check_keep_fp32(names: list[str], model: onnx.ModelProto, spec: Spec) -> None:
    """Every ``fp16.keep_fp32`` entry names a node of the model, by :func:`~trtforge.model.node_names`
    (exit 2 with the closest name)."""
    known = node_names(model.graph)
    for index, name in enumerate(names):
        if name not in known:
            raise SpecError(
                f"{spec.origin.where('fp16', 'keep_fp32', index)}: fp16.keep_fp32 names node '{name}', "
                f"which the model does not have{did_you_mean(name, known)}"
            )


def first_samples(
    info: ModelInfo, feeds: Iterator[Mapping[str, np.ndarray]], accepts: Callable[[Mapping[str, np.ndarray]], bool]
) -> Iterator[Mapping[str, np.ndarray]]:
    """The first sample of each feed, once per distinct shape, where every input has a dynamic
    leading (batch) axis and the engine ``accepts`` one sample; otherwise each feed as is."""
    batched = all(tensor.shape and not isinstance(tensor.shape[0], int) for tensor in info.inputs)
    seen: set[tuple[tuple[str, tuple[int, ...]], ...]] = set()
    for feed in feeds:
        one = {name: array[:1] for name, array in feed.items()} if batched else feed
        if one is not feed and not accepts(one):
            one = feed
        shapes = tuple((name, tuple(array.shape)) for name, array in one.items())
        if one is feed or shapes not in seen:
            seen.add(shapes)
            yield one


def _feeds(spec: Spec, info: ModelInfo) -> tuple[str, dict[str, Any], Iterator[Mapping[str, np.ndarray]]]:
    """What the guard runs on: calibration data, else accuracy data, else one sample per shape of
    the gate's random inputs; with what identifies that data for the cache key. Of calibration it
    reads ``spec.FP16_CALIBRATION_KEYS`` alone: the spec refuses its other keys at fp16 as unread."""
    from trtforge.data import fixed_batch_size, iter_batches, shape_tensors
    from trtforge.spec import expand_globs

    calibration = spec.calibration
    if calibration is not None:
        files = expand_globs(calibration.data, spec.origin.where("calibration", "data"))
        shaped = shape_tensors(spec.profiles)
        fixed = fixed_batch_size(info.inputs, shaped)
        size = fixed or calibration.batch_size
        batches = iter_batches(
            files, info.inputs, size, calibration.max_samples, drop_last=fixed is not None, shape_inputs=shaped
        )
        identity = {"files": data_sha256(files), "batch": size, "max_samples": calibration.max_samples}
        return "calibration data", identity, batches
    plan = inputs.plan(spec, info)
    feeds = (batch.feed for batch in inputs.batches(spec, info, plan) if inputs.accepted(spec.profiles, batch.feed))
    if plan.source == "files":
        identity = {
            "files": data_sha256(plan.files),
            "batch": plan.batch_size,
            "max_samples": spec.accuracy.max_samples,
        }
        return "accuracy data", identity, feeds
    sets = [
        {"shapes": {k: list(v) for k, v in s.shapes.items()}, "values": {k: list(v) for k, v in s.values.items()}}
        for s in inputs.shape_sets(info, spec.profiles)
    ]
    identity = {"random": sets, "seed": plan.seed, "first_samples": True}
    samples = first_samples(info, feeds, lambda feed: inputs.accepted(spec.profiles, feed))
    return "the gate's random inputs", identity, samples


def _until(
    stop: threading.Event | None, feeds: Iterator[Mapping[str, np.ndarray]]
) -> Iterator[Mapping[str, np.ndarray]]:
    """``feeds`` until ``stop`` is set (checked before each: a run in progress ends first)."""
    for feed in feeds:
        if stop is not None and stop.is_set():
            raise GuardStopped
        yield feed


def guard_key(model_digest: str, data: Mapping[str, Any], ort_version: str) -> str:
    """sha256 of what the guard's choice depends on (pure); ``model_digest``: the model's
    :func:`trtforge.model.content_sha256`."""
    document = {"model": model_digest, "data": data, "onnxruntime": ort_version, "fp16_max": FP16_MAX, "weights": 1}
    return json_sha256(document)


#: a cached overflow guard choice: a node list and its reasons, far below this for any model
_MAX_GUARD_ENTRY_BYTES = 64 * 1024 * 1024


def _cached(path: Path) -> KeepFp32 | None:
    """A cached choice, or None when absent or damaged. A node named "" is a choice made before
    unnamed nodes were given names (:func:`~trtforge.model.node_names`): its "" kept every unnamed
    node in FP32, so it is made again."""
    try:
        entry = cache_json(path.read_bytes(), _MAX_GUARD_ENTRY_BYTES)  # not past the recursion limit
        nodes = tuple(entry["nodes"])
        return None if "" in nodes else KeepFp32(nodes, "overflow guard", dict(entry["reasons"]), entry["data"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def _extendable_copy(model_path: Path) -> Iterator[Path | None]:
    """A copy of the model's file that the guard's session may extend with its outputs: copying a
    file in the kernel is ~4x faster than serializing the loaded model again (18 vs 75 ms for
    ResNet-18). None where weights live in external data files, which a copy elsewhere would not find."""
    from trtforge.model import external_tensors, read_onnx

    if any(external_tensors(read_onnx(model_path))):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix=".trtforge-guard-") as folder:
        copy = Path(folder) / "model.onnx"
        shutil.copyfile(model_path, copy)
        yield copy


def choose_keep_fp32(
    spec: Spec,
    info: ModelInfo,
    log: Callable[[str], None],
    cache_dir: Path | None = None,
    source: Callable[[], onnx.ModelProto] | None = None,
    stop: threading.Event | None = None,
) -> KeepFp32:
    """The spec's ``fp16.keep_fp32`` (checked against the model), or the overflow guard's choice
    (cached under ``cache_dir`` when given). ``source``: the spec's model as the caller loads it
    (shared with the FP16 conversion); None: loaded here. ``stop``: set by a caller that runs the
    guard on another thread, to end it before its next batch (raises :class:`GuardStopped`)."""
    from trtforge.precision.graphs import onnx_loader

    load = source or onnx_loader(spec.model_path)
    explicit = spec.fp16.keep_fp32
    if explicit is not None:
        model = load()
        check_keep_fp32(explicit, model, spec)
        return KeepFp32(tuple(explicit), "spec" if explicit else "spec (overflow guard off)")
    from importlib.metadata import version

    from trtforge.calibration.collect import all_activations, collect
    from trtforge.model import content_sha256

    data, identity, feeds = _feeds(spec, info)
    entry = None
    if cache_dir is not None:
        key = guard_key(content_sha256(spec.model_path), identity, version("onnxruntime"))
        entry = cache_dir / FOLDER / f"{key}.json"
        cached = _cached(entry)
        if cached is not None:
            return cached
    model = load()
    try:
        with _extendable_copy(spec.model_path) as saved:
            stats, _samples = collect(
                model,
                all_activations(model),
                _until(stop, feeds),
                "minmax",
                saved=saved,
                optimized=False,
                finite_only=True,  # an attention mask's -inf is a value FP16 holds too
            )
    except InvalidInputError as exc:
        if data == "calibration data":  # at fp16 nothing else reads it: refused here, or never
            raise
        # the accuracy data or the gate's random inputs: the gate reads them too, and says what is wrong
        log(f"fp16: overflow guard's activation pass skipped on {data} ({exc}); weights still judged")
        return _weights_only(model)
    except Exception as exc:  # onnxruntime cannot load or run the model (an op it lacks, a newer opset):
        # TensorRT may still build it, and the gate reports itself not runnable with the reason;
        # but a Ctrl-C in onnxruntime's import (ImportError raised from it) stops the build
        raise_if_interrupted(exc)
        log(f"fp16: overflow guard's activation pass skipped, onnxruntime cannot run the model ({first_line(exc)})")
        return _weights_only(model)
    reasons = overflowing_nodes(model, {**oversized_weights(model), **{name: v.amax for name, v in stats.items()}})
    if entry is not None:  # re-derivable: a lost or torn entry is a miss
        atomic_write_text(entry, json.dumps({"nodes": list(reasons), "reasons": reasons, "data": data}))
    return KeepFp32(tuple(reasons), "overflow guard", reasons, data)


def _weights_only(model: onnx.ModelProto) -> KeepFp32:
    """The guard's choice when its activation pass cannot run: the weights need no data (not
    cached: the pass may run another time)."""
    reasons = overflowing_nodes(model, oversized_weights(model))
    return KeepFp32(tuple(reasons), "overflow guard", reasons, "the weights only")
