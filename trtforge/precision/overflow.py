"""The FP16 overflow guard: which nodes ``precision: fp16`` keeps in FP32, and why.

A tensor whose FP32 values exceed FP16's largest finite value (65504) becomes inf in an FP16
engine, and NaN soon after. The guard runs the FP32 graph with every activation exposed, batch by
batch (running max |x| per tensor, nothing else kept), on the calibration data if the spec has
some, else the accuracy data, else the gate's random inputs, and keeps in FP32 the node that
produces each such tensor and every node that reads it, so the tensor never needs FP16 storage.
``fp16.keep_fp32`` in the spec replaces the guard's choice; an empty list turns the guard off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trtforge.errors import InvalidInputError, SpecError, did_you_mean, first_line

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from trtforge.model import ModelInfo
    from trtforge.spec import Spec

FP16_MAX = 65504.0
"""FP16's largest finite value: anything larger is stored as inf."""


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
    """Node -> why it stays FP32: it produces or reads a tensor whose max |x| exceeds FP16_MAX (pure)."""
    over = {name: value for name, value in amax.items() if value > FP16_MAX}
    reasons: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        why = [f"output '{name}' reaches {over[name]:.4g}" for name in node.output if name in over]
        why += [f"input '{name}' reaches {over[name]:.4g}" for name in node.input if name in over]
        if why:
            reasons.setdefault(node.name, []).extend(why)
    return {node: ", ".join(why) + f" > {FP16_MAX:g}" for node, why in reasons.items()}


def check_keep_fp32(names: list[str], model: onnx.ModelProto, spec: Spec) -> None:
    """Every ``fp16.keep_fp32`` entry names a node of the model (exit 2 with the closest name)."""
    known = [node.name for node in model.graph.node]
    for index, name in enumerate(names):
        if name not in known:
            raise SpecError(
                f"{spec.origin.where('fp16', 'keep_fp32', index)}: fp16.keep_fp32 names node '{name}', "
                f"which the model does not have{did_you_mean(name, known)}"
            )


def _feeds(spec: Spec, info: ModelInfo) -> tuple[str, Iterator[Mapping[str, np.ndarray]]]:
    """What the guard runs on: calibration data, else accuracy data, else the gate's random inputs."""
    from trtforge.accuracy import inputs
    from trtforge.data import fixed_batch_size, iter_batches
    from trtforge.spec import expand_globs

    calibration = spec.calibration
    if calibration is not None:
        files = expand_globs(calibration.data, spec.origin.where("calibration", "data"))
        fixed = fixed_batch_size(info.inputs)
        batches = iter_batches(
            files, info.inputs, fixed or calibration.batch_size, calibration.max_samples, drop_last=fixed is not None
        )
        return "calibration data", batches
    plan = inputs.plan(spec, info)
    feeds = (batch.feed for batch in inputs.batches(spec, info, plan) if inputs.accepted(spec.profiles, batch.feed))
    return ("accuracy data" if plan.source == "files" else "the gate's random inputs"), feeds


def choose_keep_fp32(spec: Spec, info: ModelInfo, log: Callable[[str], None]) -> KeepFp32:
    """The spec's ``fp16.keep_fp32`` (checked against the model), or the overflow guard's choice."""
    import onnx

    from trtforge.calibration.collect import all_activations, collect

    model = onnx.load(str(spec.model_path))
    explicit = spec.fp16.keep_fp32
    if explicit is not None:
        check_keep_fp32(explicit, model, spec)
        return KeepFp32(tuple(explicit), "spec" if explicit else "spec (overflow guard off)")
    data, feeds = _feeds(spec, info)
    try:
        stats, _samples = collect(model, all_activations(model), feeds, "minmax")
    except InvalidInputError as exc:  # the FP32 graph itself gives inf/NaN: the gate's reference says so
        log(f"fp16: overflow guard skipped, the FP32 model fails on {data} ({exc})")
        return KeepFp32((), "overflow guard", data=data)
    except Exception as exc:  # onnxruntime cannot load or run the model (an op it lacks, a newer opset):
        # TensorRT may still build it, and the gate reports itself not runnable with the reason
        log(f"fp16: overflow guard skipped, onnxruntime cannot run the model ({first_line(exc)})")
        return KeepFp32((), "overflow guard", data=data)
    reasons = overflowing_nodes(model, {name: values.amax for name, values in stats.items()})
    return KeepFp32(tuple(reasons), "overflow guard", reasons, data)
