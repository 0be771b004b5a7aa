"""Layer-wise diagnosis: where along the graph the candidate departs from the FP32 reference.

Both graphs run in onnxruntime with every node output exposed as a graph output: the spec's
FP32 model (reference) and the candidate the accuracy gate runs (``Prepared.candidate_onnx``
from :func:`trtforge.precision.prepare_precision`: the FP16 emulation or the Q/DQ graph), on
the gate's own inputs (:mod:`trtforge.accuracy.inputs`: the accuracy data, or the seeded random
feeds per profile shape).

Tensors are matched by name: the candidate keeps the reference's names for the tensors they
share. Two kinds of inserted nodes are mapped, not compared:

- a rounding pair after a tensor ``x`` (QuantizeLinear -> DequantizeLinear, or Cast -> Cast as an
  FP16 storage emulation writes it) is compared as ``x``: the pair's output is the value the
  candidate's consumers really see, so the quantization error of ``x`` shows on ``x``'s row;
- any other Cast (the FP16 converter's casts at the graph's edges and around the ops it keeps
  in FP32) and any tensor the reference does not have are skipped.

A node the FP16 converter keeps in FP32 has its outputs renamed (``x`` becomes ``x_cast_to_fp16``,
an FP32 tensor, and ``x`` the FP16 Cast of it, which the conversion drops where only FP32 nodes
read it): a reference output the candidate lacks is compared with the output in the same position
of the candidate's node of the same name and op, where neither that output nor what Casts or Q/DQ
make of it is a name the reference has (a folded node's output, a Conv's that now holds its
BatchNorm's, is another tensor, also where the FP16 storage emulation renamed it ``y/fp32`` and its
Cast pair gives ``y``).

Pairs chain (an FP16 emulation rounds a DQ output again), and the chain's end is compared; a pair
the reference has itself (a Cast to int and back: a truncation) is the model's, not followed. A
tensor quantized for several consumers is compared after its first pair. A reference node whose
output the candidate folded away (BatchNorm into Conv, MatMul+Add into Gemm) has no row: its
error shows on the next node whose output the candidate keeps.

Each reference node with a float output gets one row (all its float outputs together, in the
graph's topological order), measured with running sums batch by batch, so memory does not grow
with the number of samples (onnxruntime's own calibrator keeps every intermediate:
onnxruntime#10503): cosine and SNR from the gate's partial sums
(:class:`~trtforge.accuracy.metrics.PartialSums`: its metrics of all batches' values together, to a
few ulps), ``max_abs`` and ``max_rel`` as maxima.
``max_rel`` uses the gate's floor (:func:`trtforge.accuracy.metrics.rel_floor`) over the
reference values seen so far, so it equals the gate's value when the first batch holds the
tensor's largest value and is an upper bound of it otherwise.

The *first jump* is the first node, in topological order, whose error rises by more than
``JUMP_COSINE_DROP`` above its inputs' worst: ``min(cosine of its inputs) - cosine of its
output``, where graph inputs and weights count as cosine 1 and a node whose candidate holds
NaN/Inf where the reference does not counts as cosine 0.

FP16 range: per node, how many of its FP32 reference values exceed FP16's largest finite value
(65504: overflow to inf) and what fraction of its nonzero values lie below FP16's smallest
subnormal (2**-24: underflow to 0); a node overflows or underflows (most nonzero values) is
listed in ``fp16_out_of_range``.

Where the candidate's ``fp16.keep_fp32`` applies, the FP32 reference's activations are watched as
the FP16 overflow guard watches them (:mod:`trtforge.precision.overflow`: finite max |x| per
tensor, weights over 65504, the producer and every reader of such a tensor kept), on the
diagnosis's inputs; where that keeps a node the candidate does not, ``fp16_keep_fp32`` is the
list to paste: the candidate's own kept nodes (the spec's list, or the guard's choice on its
data), which the pasted list replaces, then those.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trtforge.accuracy import inputs, metrics
from trtforge.accuracy.gate import active
from trtforge.accuracy.report import json_number
from trtforge.calibration.collect import all_activations
from trtforge.calibration.histogram import MaxTracker
from trtforge.deadline import Deadline
from trtforge.errors import AccuracyError, InvalidInputError
from trtforge.mixedprecision import candidate_emulation, emulation_of
from trtforge.model import node_names, with_outputs
from trtforge.precision.overflow import keep_fp32_yaml, overflowing_nodes, oversized_weights
from trtforge.runners.onnxruntime import OnnxrtRunner

if TYPE_CHECKING:
    import onnx

    from trtforge.model import ModelInfo
    from trtforge.precision.sensitivity import SensitivityResult
    from trtforge.spec import Spec

#: A node "jumps" when its output cosine is this much below its inputs' worst cosine.
JUMP_COSINE_DROP = 0.002
#: FP16's largest finite value and smallest subnormal.
FP16_MAX = 65504.0
FP16_TINY = 2.0**-24
#: A node underflows FP16 when more than this fraction of its nonzero values lie below FP16_TINY.
UNDERFLOW_FRACTION = 0.5
#: ``trtforge diagnose``'s default time budget; a diagnosis stops after the batch that crosses it.
DEFAULT_BUDGET_S = 300.0

ROUNDING_PAIRS = {("QuantizeLinear", "DequantizeLinear"), ("Cast", "Cast")}
#: the ops that make a rounded or cast copy of a tensor: what they make of a node's output stands for it
ROUNDING_OPS = frozenset(op for pair in ROUNDING_PAIRS for op in pair)


@dataclass(frozen=True)
class NodeError:
    """One reference node's outputs measured against the candidate's (JSON numbers: inf/nan as text)."""

    node: str
    op_type: str
    outputs: tuple[str, ...]
    values: int
    cosine: float
    snr_db: float
    max_abs: float
    max_rel: float
    ref_absmax: float
    nonfinite_mismatch: int
    fp16_overflow: int  # reference values with |x| > FP16_MAX
    fp16_underflow: float  # fraction of nonzero reference values with |x| < FP16_TINY
    drop: float  # inputs' worst cosine minus this node's (effective) cosine

    @property
    def effective_cosine(self) -> float:
        """The cosine, or 0 when the candidate has NaN/Inf where the reference does not."""
        return 0.0 if self.nonfinite_mismatch else self.cosine

    @property
    def out_of_fp16_range(self) -> bool:
        return self.fp16_overflow > 0 or self.fp16_underflow > UNDERFLOW_FRACTION


@dataclass(frozen=True)
class Diagnosis:
    """The layer-wise diagnosis of one spec's candidate, as written to ``{name}-{precision}.diagnosis.json``."""

    name: str
    stem: str
    precision: str
    reference: str
    candidate: str
    emulation: str | None  # how the candidate, run on onnxruntime, stands for the engine (the gate's label)
    source: str  # "files" or "random", as the gate's inputs
    samples: int
    batches: int
    truncated: bool  # the budget ran out before all the gate's inputs were used
    seconds: float
    nodes: tuple[NodeError, ...]
    first_jump: str | None
    largest_drop: str | None
    fp16_out_of_range: tuple[str, ...]
    sensitivity: SensitivityResult | None = None
    notes: tuple[str, ...] = field(default=())
    fp16_keep_fp32: tuple[str, ...] = ()  # the fp16.keep_fp32 list to paste; empty: nothing to add
    fp16_keep_reasons: dict[str, str] = field(default_factory=dict)  # the guard's, on these inputs

    @property
    def fp16_keep_fp32_yaml(self) -> str | None:
        """The ``fp16: keep_fp32: [...]`` lines to paste, or None when there is nothing to add."""
        return keep_fp32_yaml(self.fp16_keep_fp32) if self.fp16_keep_fp32 else None

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["fp16_keep_fp32_yaml"] = self.fp16_keep_fp32_yaml
        document["nodes"] = [
            {key: json_number(value) if isinstance(value, float) else value for key, value in asdict(node).items()}
            for node in self.nodes
        ]
        if self.sensitivity is not None:
            document["sensitivity"]["ranking"] = [
                {"node": node, "score": json_number(score)} for node, score in self.sensitivity.ranking
            ]
        return document


@dataclass
class _Running:
    """Running sums and maxima of one node's outputs over the finite positions of both graphs:
    cosine and SNR from the gate's own partial sums (:class:`~trtforge.accuracy.metrics.PartialSums`),
    so that they are the gate's on the node's values of all batches together."""

    sums: metrics.PartialSums = field(default_factory=metrics.PartialSums)
    values: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    ref_absmax: float = 0.0
    nonfinite_mismatch: int = 0
    overflow: int = 0
    underflow: int = 0
    nonzero: int = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        ref_codes, cand_codes = metrics.nonfinite_codes(reference), metrics.nonfinite_codes(candidate)
        self.nonfinite_mismatch += int(np.count_nonzero(ref_codes != cand_codes))
        finite = (ref_codes == 0) & (cand_codes == 0)
        ref = np.asarray(reference, dtype=np.float64).ravel()
        cand = np.asarray(candidate, dtype=np.float64).ravel()
        ref_abs = np.abs(ref[ref_codes == 0])
        self.overflow += int(np.count_nonzero(ref_abs > FP16_MAX))
        self.underflow += int(np.count_nonzero((ref_abs > 0) & (ref_abs < FP16_TINY)))
        self.nonzero += int(np.count_nonzero(ref_abs))
        ref, cand = ref[finite], cand[finite]
        self.values += ref.size
        if not ref.size:
            return
        self.sums.add(ref, cand)
        self.max_abs = max(self.max_abs, metrics.max_abs(ref, cand))
        self.ref_absmax = max(self.ref_absmax, float(np.max(np.abs(ref))))
        floor = max(metrics.REL_FLOOR_FRACTION * self.ref_absmax, metrics.REL_FLOOR_MIN)
        self.max_rel = max(self.max_rel, metrics.max_rel(ref, cand, floor))

    def cosine(self) -> float:
        """:func:`trtforge.accuracy.metrics.cosine` of the values of all batches."""
        return self.sums.cosine()

    def snr_db(self) -> float:
        """:func:`trtforge.accuracy.metrics.snr_db` of the values of all batches."""
        return self.sums.snr_db()


@dataclass(frozen=True)
class _Row:
    """A reference node and the tensors compared for it: reference name -> candidate name
    (none when the candidate folded the node away)."""

    node: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]


def tensor_map(candidate: onnx.ModelProto, reference: onnx.ModelProto | None = None) -> dict[str, str]:
    """Each tensor the candidate's nodes produce -> the candidate tensor compared under its name:
    the end of the chain of rounding pairs right after it (a Q->DQ pair whose output an FP16
    emulation's Cast pair rounds again), else itself; see the module docstring. A pair whose
    middle tensor ``reference`` has is the model's own (a float -> int -> float truncation), not
    inserted rounding: it is not followed. Pure."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in candidate.graph.node:
        if node.input:
            consumers.setdefault(node.input[0], []).append(node)
    own = {name for node in reference.graph.node for name in node.output} if reference is not None else set()

    def after_pair(name: str) -> str | None:
        return next(
            (
                str(second.output[0])
                for first in consumers.get(name, [])
                if first.output[0] not in own
                for second in consumers.get(first.output[0], [])
                if (first.op_type, second.op_type) in ROUNDING_PAIRS
            ),
            None,
        )

    mapping = {}
    for node in candidate.graph.node:
        for name in node.output:
            end, seen = name, {name}
            while (following := after_pair(end)) is not None and following not in seen:
                end = following
                seen.add(end)
            mapping[name] = end
    return mapping


def renamed_outputs(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> dict[str, str]:
    """Reference tensor -> the candidate's name for it, where the candidate renamed a node's output
    (the FP16 converter renames those of a node it keeps in FP32): the output in the same position
    of the candidate node of the same name and op, when the candidate lacks the reference's name
    and the reference has neither the candidate's nor what a rounding op makes of it (the FP16
    storage emulation renames a folded Conv's output ``y/fp32`` and casts it back to ``y``, its
    BatchNorm's). Pure."""
    produced = {name for node in candidate.graph.node for name in node.output}
    own = {name for node in reference.graph.node for name in node.output}
    by_name: dict[str, onnx.NodeProto] = {}
    rounded: dict[str, list[str]] = {}
    for node in candidate.graph.node:
        if node.name:
            by_name.setdefault(node.name, node)
        if node.op_type in ROUNDING_OPS and node.input:
            rounded.setdefault(node.input[0], []).extend(node.output)

    def holds_own(name: str) -> bool:
        """Whether ``name``, or a tensor rounding ops make of it, is one the reference has."""
        seen: set[str] = set()
        todo = [name]
        while todo:
            tensor = todo.pop()
            if tensor in own:
                return True
            if tensor not in seen:
                seen.add(tensor)
                todo.extend(rounded.get(tensor, ()))
        return False

    renamed = {}
    for node, name in zip(reference.graph.node, node_names(reference.graph), strict=True):
        twin = by_name.get(name)
        if twin is None or twin.op_type != node.op_type:
            continue
        for ref_name, cand_name in zip(node.output, twin.output, strict=False):
            if ref_name and cand_name and ref_name not in produced and not holds_own(cand_name):
                renamed[ref_name] = cand_name
    return renamed


def plan_rows(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> list[_Row]:
    """One row per reference node, with the outputs the candidate shares, under its name or renamed
    (:func:`renamed_outputs`); a node is named as the spec's ``fp16.keep_fp32`` and
    ``calibration.exclude`` name it (:func:`~trtforge.model.node_names`). Pure."""
    mapping = tensor_map(candidate, reference)
    renamed = renamed_outputs(reference, candidate)
    rows = []
    for node, name in zip(reference.graph.node, node_names(reference.graph), strict=True):
        pairs = []
        for out in node.output:
            cand_name = out if out in mapping else renamed.get(out)
            if cand_name is not None and cand_name in mapping:
                pairs.append((out, mapping[cand_name]))
        rows.append(_Row(name, node.op_type, tuple(node.input), tuple(node.output), tuple(pairs)))
    return rows


def first_jump(rows: Sequence[NodeError]) -> str | None:
    """The first node (in order) whose ``drop`` exceeds JUMP_COSINE_DROP. Pure."""
    return next((row.node for row in rows if row.drop > JUMP_COSINE_DROP), None)


def finish(rows: Sequence[_Row], running: Mapping[str, _Running]) -> list[NodeError]:
    """The rows' metrics from their running sums, each with its drop against its inputs' worst.
    A node without measurements (folded away, or no float output) passes its inputs' worst on. Pure."""
    cosine_of: dict[str, float] = {}
    results = []
    for row in rows:
        acc = running.get(row.node)
        worst_input = min((cosine_of.get(name, 1.0) for name in row.inputs), default=1.0)
        if acc is None or (acc.values == 0 and acc.nonfinite_mismatch == 0):
            cosine_of.update(dict.fromkeys(row.outputs, worst_input))
            continue
        result = NodeError(
            node=row.node,
            op_type=row.op_type,
            outputs=tuple(ref for ref, _ in row.pairs),
            values=acc.values,
            cosine=acc.cosine(),
            snr_db=acc.snr_db(),
            max_abs=acc.max_abs,
            max_rel=acc.max_rel,
            ref_absmax=acc.ref_absmax,
            nonfinite_mismatch=acc.nonfinite_mismatch,
            fp16_overflow=acc.overflow,
            fp16_underflow=acc.underflow / acc.nonzero if acc.nonzero else 0.0,
            drop=0.0,
        )
        result = NodeError(**{**asdict(result), "drop": worst_input - result.effective_cosine})
        for name, _ in row.pairs:
            cosine_of[name] = result.effective_cosine
        results.append(result)
    return results


def _is_float(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.floating) or array.dtype.name == "bfloat16"


class _GuardWatch:
    """The FP32 reference as the FP16 overflow guard sees it
    (:func:`~trtforge.precision.overflow.choose_keep_fp32`): the finite max |x| of every float
    activation, the weights over FP16's range, and the graph's nodes (without the weights, which
    the reference's session holds already)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        import onnx

        self.inputs = {value.name for value in model.graph.input}
        self.peaks = {name: MaxTracker(finite_only=True) for name in all_activations(model)}
        self.weights = oversized_weights(model)
        self.nodes = onnx.ModelProto(graph=onnx.GraphProto(node=model.graph.node))

    def computed(self) -> list[str]:
        """The watched tensors the session must return (graph inputs: read from the feed, as the guard does)."""
        return [name for name in self.peaks if name not in self.inputs]

    def update(self, feed: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        for name, peak in self.peaks.items():
            values = feed[name] if name in self.inputs else outputs[name]
            if _is_float(values):
                peak.update(values)

    def keep(self) -> dict[str, str]:
        """Node -> why the guard keeps it in FP32, on what was seen
        (:func:`~trtforge.precision.overflow.overflowing_nodes`)."""
        return overflowing_nodes(self.nodes, {**self.weights, **{name: peak.amax for name, peak in self.peaks.items()}})


def diagnose_layers(
    spec: Spec,
    model: ModelInfo,
    candidate_onnx: Path,
    *,
    stem: str,
    budget_s: float = DEFAULT_BUDGET_S,
    log: Callable[[str], None] = lambda _message: None,
    tensorrt_choice: str | None = None,
    keep_fp32: Sequence[str] | None = None,
) -> Diagnosis:
    """Run both graphs over the gate's inputs, batch by batch, and measure every node's outputs.

    Stops after the batch during which ``budget_s`` runs out (at least one batch runs).
    ``tensorrt_choice``: where the backend picks precisions itself
    (:func:`~trtforge.mixedprecision.tensorrt_choice`), for the emulation label. ``keep_fp32``:
    the nodes the candidate keeps in FP32 where ``fp16.keep_fp32`` applies (the manifest's
    ``fp16`` list), for ``fp16_keep_fp32``; None where it does not (int8, or TensorRT choosing).
    """
    import onnx

    clock = Deadline(budget_s)
    reference_model = onnx.load(str(spec.model_path))
    candidate_model = onnx.load(str(candidate_onnx))
    rows = plan_rows(reference_model, candidate_model)
    guard = _GuardWatch(reference_model) if keep_fp32 is not None else None
    references = with_outputs(
        reference_model, [*(ref for row in rows for ref, _ in row.pairs), *(guard.computed() if guard else ())]
    )
    candidates = with_outputs(candidate_model, (cand for row in rows for _, cand in row.pairs))
    reference, candidate = OnnxrtRunner(references, name="reference"), OnnxrtRunner(candidates, name="candidate")
    del reference_model, candidate_model
    plan = inputs.plan(spec, model)
    running: dict[str, _Running] = {}
    samples = batches = 0
    truncated = False
    with active(reference, spec, "reference"), active(candidate, spec, "candidate"):
        for batch in inputs.batches(spec, model, plan):
            if clock.left() < 0 and batches:
                truncated = True
                break
            if not inputs.accepted(spec.profiles, batch.feed):
                continue
            ref_out, cand_out = reference.infer(batch.feed), candidate.infer(batch.feed)
            if guard is not None:
                guard.update(batch.feed, ref_out)
            for row in rows:
                for ref_name, cand_name in row.pairs:
                    ref, cand = ref_out[ref_name], cand_out[cand_name]
                    if not _is_float(ref):
                        continue
                    if ref.shape != cand.shape:
                        raise AccuracyError(
                            f"tensor '{ref_name}' of node '{row.node}': candidate shape {list(cand.shape)} "
                            f"differs from the reference's {list(ref.shape)}"
                        )
                    running.setdefault(row.node, _Running()).add(ref, cand)
            del ref_out, cand_out
            samples += batch.size
            batches += 1
            log(f"diagnose: {batch.label} ({samples} samples)")
    if not batches:
        raise InvalidInputError(
            f"{spec.origin.where('accuracy', 'data')}: no accuracy sample fits the spec's profiles; "
            "give data whose shapes the profiles accept"
        )
    nodes = finish(rows, running)
    largest = max(nodes, key=lambda row: row.drop, default=None)
    keep = guard.keep() if guard is not None else {}
    kept = tuple(keep_fp32 or ())
    added = tuple(node for node in keep if node not in kept)
    return Diagnosis(
        name=spec.name,
        stem=stem,
        precision=spec.precision,
        reference=str(spec.model_path),
        candidate=str(candidate_onnx),
        emulation=candidate_emulation(emulation_of(candidate_onnx), spec.precision == "int8", tensorrt_choice),
        source=plan.source,
        samples=samples,
        batches=batches,
        truncated=truncated,
        seconds=round(clock.elapsed, 3),
        nodes=tuple(nodes),
        first_jump=first_jump(nodes),
        largest_drop=largest.node if largest is not None and largest.drop > 0 else None,
        fp16_out_of_range=tuple(row.node for row in nodes if row.out_of_fp16_range),
        notes=plan.notes,
        fp16_keep_fp32=(*kept, *added) if added else (),
        fp16_keep_reasons=keep,
    )
