"""INT8 sensitivity search: which quantized nodes hurt the outputs most, and the smallest
exclusion set found that makes the accuracy gate pass.

Everything runs on the CPU, in onnxruntime, on the gate's own inputs (accuracy data or seeded
random feeds) against the FP32 reference, computed once (``GateProbe``). A candidate is the
Q/DQ graph of one (calibration rule, exclusion set): calibration statistics are collected once
(:class:`trtforge.calibration.Calibration`) and only onnxruntime's ``QDQQuantizer`` runs again
with another ``nodes_to_exclude``.

- **Error** of a candidate: ``1 - cosine`` of its worst output (NaN or Inf: infinite); the
  gate's own checks (every tolerance of the spec) decide pass or fail.
- **Ranking** (leave-one-out from the fully quantized graph): a node's score is the error it
  removes when it alone stays out of INT8. When measuring every node alone does not fit in
  the ranking's share of the budget, nodes are measured in contiguous groups (graph order),
  and the group that removes the most error is split in halves and measured again, until
  the time runs out: single nodes where it matters, group scores elsewhere.
- **Exclusion set**: the ranked nodes, greedily by score, in prefixes of 1, 2, 4, ... nodes
  until one passes, then a binary search for the shortest passing prefix, then each chosen
  node dropped again where the gate passes without it (at most ``max_excluded`` nodes).

The precision step runs it for ``algorithm: auto`` / ``exclude: auto`` (:func:`auto_calibrate`),
``trtforge diagnose`` for its report (:func:`search_spec`, :class:`SensitivityResult`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from trtforge.accuracy import inputs
from trtforge.accuracy.gate import active, evaluate_outputs
from trtforge.accuracy.report import json_number
from trtforge.calibration import Calibration, CalibrationResult, ScaleSet
from trtforge.calibration.qdq import exclusion_yaml
from trtforge.deadline import Deadline
from trtforge.errors import InvalidInputError
from trtforge.mixedprecision import EMULATION_KEY, candidate_emulation, emulate_fp16
from trtforge.runners.onnxruntime import OnnxrtRunner

if TYPE_CHECKING:
    from pathlib import Path

    import onnx

    from trtforge.calibration.cache import PinnedScales
    from trtforge.model import ModelInfo
    from trtforge.spec import Spec

Log = Callable[[str], None]
DEFAULT_SEARCH_BUDGET_S = 60.0
RANKING_SHARE = 0.7
"""Share of the budget the ranking may use; the rest is for finding the exclusion set."""
FIRST_GROUPS = 16
"""Groups the nodes are split into when measuring each alone does not fit the budget."""


@dataclass(frozen=True)
class Measurement:
    """One candidate graph judged against the FP32 reference on the gate's inputs."""

    passed: bool
    cosine: float  # the worst output's
    failures: tuple[str, ...] = ()

    @property
    def error(self) -> float:
        return 1.0 - self.cosine if math.isfinite(self.cosine) else math.inf

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "cosine": json_number(self.cosine), "failures": list(self.failures)}


class GateProbe:
    """The gate's inputs and the reference's outputs, computed once; judges any candidate graph."""

    def __init__(self, spec: Spec, model: ModelInfo) -> None:
        self.spec, self.model = spec, model
        plan = inputs.plan(spec, model)
        self.feeds = [b.feed for b in inputs.batches(spec, model, plan) if inputs.accepted(spec.profiles, b.feed)]
        if not self.feeds:
            raise InvalidInputError(
                f"{spec.origin.where('accuracy', 'data')}: no accuracy sample fits the spec's profiles; "
                "give data whose shapes the profiles accept"
            )
        reference = OnnxrtRunner(spec.model_path, name="reference")
        with active(reference, spec, "reference"):
            self.reference = [reference.infer(feed) for feed in self.feeds]
        self.evaluations = 0
        self.emulation: str | None = None  # the FP16 label of the graphs judged (they share one)

    def measure(self, candidate: onnx.ModelProto) -> Measurement:
        self.emulation = next((p.value for p in candidate.metadata_props if p.key == EMULATION_KEY), None)
        names = [tensor.name for tensor in self.model.outputs]
        runner = OnnxrtRunner(candidate.SerializeToString(), name="candidate")
        with active(runner, self.spec, "simulated candidate"):
            produced = [runner.infer(feed) for feed in self.feeds]
        self.evaluations += 1
        outputs = evaluate_outputs(
            self.spec,
            self.model,
            {name: [ref[name] for ref in self.reference] for name in names},
            {name: [out[name] for out in produced] for name in names},
            None,
        )
        worst = worst_cosine([_number(out.metrics.get("cosine")) for out in outputs])
        failures = tuple(check.message for out in outputs for check in out.checks if not check.passed)
        return Measurement(passed=not failures, cosine=worst, failures=failures)


@dataclass(frozen=True)
class SensitivityResult:
    """What the sensitivity search hands the diagnosis report: nodes ranked by the damage each does
    (``ranking``: ``(node, score)``, worst first; the score is the search's own, e.g. the output
    cosine lost), the exclusion set to paste into the spec (the spec's own list included), and how it
    judged (free text for the report)."""

    ranking: tuple[tuple[str, float], ...]
    excluded: tuple[str, ...] = ()
    method: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # the search's own record (gate before/after, yaml)


@dataclass(frozen=True)
class NodeScore:
    """Error removed when ``node`` stays out of INT8 (alone when ``group`` is 1, else as one of a
    group of ``group`` nodes that all carry the group's score); None: never measured."""

    node: str
    score: float | None
    group: int = 1


@dataclass(frozen=True)
class SensitivitySearch:
    """The search's outcome: ranking (most damaging first), the exclusion set, the gate before and after.

    ``exclude`` names only the search's additions; ``fixed`` is the spec's own ``exclude`` list,
    kept out of INT8 in every graph judged, so the lines to paste (``yaml``) name both."""

    algorithm: str
    ranking: tuple[NodeScore, ...]
    exclude: tuple[str, ...]
    before: Measurement
    after: Measurement
    evaluations: int
    seconds: float
    budget_s: float
    complete: bool  # every node was measured alone
    notes: tuple[str, ...] = field(default=())
    fixed: tuple[str, ...] = ()

    @property
    def excluded(self) -> tuple[str, ...]:
        """Every node the passing graph keeps out of INT8: the spec's own list, then the additions."""
        return (*self.fixed, *self.exclude)

    @property
    def yaml(self) -> str:
        """The spec lines to paste (they replace the spec's ``exclude``, so they repeat its own list)."""
        return exclusion_yaml(self.excluded)

    def as_dict(self) -> dict[str, Any]:
        """For the manifest's ``calibration.exclude_auto`` and the diagnosis JSON."""
        scores = {entry.node: entry for entry in self.ranking}
        return {
            "algorithm": self.algorithm,
            "chosen": [{"node": node, "score": json_number(scores[node].score)} for node in self.exclude],
            "before": self.before.as_dict(),
            "after": self.after.as_dict(),
            "ranking": [
                {"node": e.node, "score": None if e.score is None else json_number(e.score), "group": e.group}
                for e in self.ranking
            ],
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 3),
            "budget_s": json_number(self.budget_s),
            "complete": self.complete,
            "notes": list(self.notes),
        }

    def report(self) -> SensitivityResult:
        """The diagnosis report's view (bars and highlighted exclusions)."""
        measured = tuple((e.node, e.score) for e in self.ranking if e.score is not None)
        method = (
            f"leave-one-out from the fully quantized graph ({self.algorithm}), "
            f"{'every node alone' if self.complete else 'group testing and bisection'}; "
            f"score: worst output cosine regained; gate {_verdict(self.before)} -> {_verdict(self.after)}; "
            f"{self.evaluations} evaluations in {self.seconds:.1f} s"
        )
        details = {**self.as_dict(), "yaml": self.yaml}
        return SensitivityResult(ranking=measured, excluded=self.excluded, method=method, details=details)


def _verdict(measurement: Measurement) -> str:
    return f"{'pass' if measurement.passed else 'fail'} (cosine {measurement.cosine:.6f})"


def gate_graph(calibration: Calibration, scale_set: ScaleSet, exclude: Sequence[str]) -> onnx.ModelProto:
    """The graph the gate would judge: the Q/DQ graph, with FP16 storage emulated where the
    layers left out of INT8 run in FP16 (as ``precision.prepare_precision`` gives the gate)."""
    graph = calibration.qdq_model(scale_set, exclude)
    if calibration.config.high_precision != "fp16":
        return graph
    return emulate_fp16(graph) or graph


def rank_nodes(
    nodes: Sequence[str],
    before: Measurement,
    measure: Callable[[Sequence[str]], Measurement],
    clock: Deadline,
    cost: float,
) -> tuple[list[NodeScore], bool]:
    """Leave-one-out scores (see the module doc); True when every node was measured alone."""
    scores: dict[str, NodeScore] = {node: NodeScore(node, None, len(nodes)) for node in nodes}
    alone = len(nodes) * cost <= clock.left(RANKING_SHARE)
    size = 1 if alone else max(1, math.ceil(len(nodes) / FIRST_GROUPS))
    pending: list[tuple[float, int, tuple[str, ...]]] = []

    def score(group: tuple[str, ...]) -> None:
        value = before.error - measure(group).error
        value = value if not math.isnan(value) else 0.0
        for node in group:
            scores[node] = NodeScore(node, value, len(group))
        if len(group) > 1 and value > 0:  # a group whose exclusion does not help hides no culprit
            heapq.heappush(pending, (-value, len(pending), group))

    for start in range(0, len(nodes), size):
        if clock.left(RANKING_SHARE) < cost:
            break
        score(tuple(nodes[start : start + size]))
    while pending and clock.left(RANKING_SHARE) >= 2 * cost:
        _, _, group = heapq.heappop(pending)
        half = len(group) // 2
        score(group[:half])
        score(group[half:])
    ranked = sorted(scores.values(), key=lambda e: (e.score is None, -(e.score or 0.0), e.group))
    return ranked, all(e.group == 1 and e.score is not None for e in ranked)


def smallest_passing(
    order: Sequence[str], measure: Callable[[Sequence[str]], Measurement], clock: Deadline, cost: float
) -> tuple[tuple[str, ...], Measurement | None]:
    """The shortest passing prefix of ``order`` (doubling, then bisection), pruned of nodes the
    gate passes without; (best prefix measured, None) when none passed in time."""
    tried: dict[int, Measurement] = {}
    size, passing = 1, None
    while size <= len(order) and clock.left() >= cost:
        tried[size] = measure(order[:size])
        if tried[size].passed:
            passing = size
            break
        size = size * 2 if size * 2 <= len(order) or size == len(order) else len(order)
    if passing is None:
        if not tried:
            return (), None
        best = min(tried, key=lambda k: (tried[k].error, k))
        return tuple(order[:best]), None
    low = max((k for k in tried if k < passing), default=0)
    while passing - low > 1 and clock.left() >= cost:
        middle = (low + passing) // 2
        tried[middle] = measure(order[:middle])
        if tried[middle].passed:
            passing = middle
        else:
            low = middle
    chosen, result = list(order[:passing]), tried[passing]
    for node in reversed(order[:passing]):
        if len(chosen) == 1 or clock.left() < cost:
            break
        without = [n for n in chosen if n != node]
        measured = measure(without)
        if measured.passed:
            chosen, result = without, measured
    return tuple(chosen), result


def search(
    calibration: Calibration,
    scale_set: ScaleSet,
    probe: GateProbe,
    *,
    budget_s: float = DEFAULT_SEARCH_BUDGET_S,
    max_excluded: int | None = None,
    rank_when_passing: bool = True,
    log: Log = lambda _message: None,
) -> SensitivitySearch:
    """Rank the quantized nodes of ``scale_set``'s Q/DQ graph and find the exclusion set (module doc).

    The spec's own ``exclude`` list stays excluded throughout; the result names only additions.
    ``rank_when_passing=False`` (a build) stops at once when the graph already passes.
    """
    clock = Deadline(budget_s)
    fixed = calibration.config.excluded
    evaluations = probe.evaluations

    def measure(extra: Sequence[str]) -> Measurement:
        return probe.measure(gate_graph(calibration, scale_set, [*fixed, *extra]))

    before = measure(())
    cost = clock.elapsed
    nodes = calibration.quantized_nodes(scale_set, fixed)
    label = scale_set.candidate.label
    log(
        f"sensitivity: {len(nodes)} quantized nodes, {label}: simulated gate {_verdict(before)}; "
        f"{cost:.2f} s per evaluation"
    )
    notes: list[str] = []
    if before.passed and not rank_when_passing:
        ranking: list[NodeScore] = []
        complete = False
        notes.append("the fully quantized graph passes the gate: nothing to exclude")
    else:
        ranking, complete = rank_nodes(nodes, before, measure, clock, cost)
    chosen: tuple[str, ...] = ()
    after = before
    if not before.passed:
        limit = max_excluded if max_excluded is not None else len(ranking)
        order = [e.node for e in ranking if e.score is not None and e.score > 0][:limit]
        chosen, passing = smallest_passing(order, measure, clock, cost)
        if passing is None:
            notes.append(
                f"no exclusion set of at most {limit} node(s) passed the gate within {budget_s:g} s; "
                "the set with the lowest error is kept"
            )
            after = measure(chosen) if chosen else before
        else:
            after = passing
    if not complete and ranking:
        notes.append(f"the budget ({budget_s:g} s) allowed group scores for some nodes, not single ones")
    log(f"sensitivity: exclude {list(chosen)}: simulated gate {_verdict(before)} -> {_verdict(after)}")
    return SensitivitySearch(
        algorithm=label,
        ranking=tuple(ranking),
        exclude=chosen,
        before=before,
        after=after,
        evaluations=probe.evaluations - evaluations,
        seconds=clock.elapsed,
        budget_s=budget_s,
        complete=complete,
        notes=tuple(notes),
        fixed=tuple(fixed),
    )


@dataclass(frozen=True)
class AlgorithmTrial:
    label: str
    measurement: Measurement


def choose_algorithm(
    calibration: Calibration, probe: GateProbe, log: Log = lambda _message: None
) -> tuple[ScaleSet, list[AlgorithmTrial]]:
    """The rule whose Q/DQ graph the gate likes best: passing first, then the highest worst-output
    cosine; the first in order (entropy) on a tie."""
    exclude = calibration.config.excluded
    trials = [
        AlgorithmTrial(s.candidate.label, probe.measure(gate_graph(calibration, s, exclude)))
        for s in calibration.scale_sets
    ]
    best = max(range(len(trials)), key=lambda i: (trials[i].measurement.passed, -trials[i].measurement.error, -i))
    summary = ", ".join(f"{t.label} {_verdict(t.measurement)}" for t in trials)
    log(f"calibration: algorithm auto chose {trials[best].label} (simulated gate: {summary})")
    return calibration.scale_sets[best], trials


def auto_calibrate(
    spec: Spec,
    model: ModelInfo,
    cache_dir: Path,
    log: Log,
    *,
    diagnosis: Deadline | None = None,
    pinned: PinnedScales | None = None,
) -> tuple[CalibrationResult, SensitivitySearch | None]:
    """``calibration.algorithm: auto`` and/or ``exclude: auto`` for a build (or a diagnosis): choose
    with the gate's inputs, record the choice and its reasons in the result's manifest section; the
    ``exclude: auto`` search comes back too (None without one).

    ``diagnosis``: the deadline of ``trtforge diagnose``, whose report is this search: it stops by
    the deadline as well as by ``search_budget``, and ranks the nodes even when the graph passes.
    ``pinned``: as :class:`~trtforge.calibration.Calibration`'s."""
    calibration = Calibration(spec, model, cache_dir, log, pinned=pinned)
    config = calibration.config
    probe = GateProbe(spec, model)
    scale_set = calibration.scale_sets[0]
    details: dict[str, Any] = {}
    if config.algorithm == "auto":
        scale_set, trials = choose_algorithm(calibration, probe, log)
        details["algorithm"] = "auto"
        details["algorithm_chosen"] = scale_set.candidate.label
        details["candidates"] = [{"algorithm": t.label, **t.measurement.as_dict()} for t in trials]
    exclude = list(config.excluded)
    found = None
    if config.exclude == "auto":
        budget_s = config.search_budget if diagnosis is None else max(0.0, min(config.search_budget, diagnosis.left()))
        found = search(
            calibration,
            scale_set,
            probe,
            budget_s=budget_s,
            max_excluded=config.max_excluded,
            rank_when_passing=diagnosis is not None,
            log=log,
        )
        exclude += found.exclude
        details["exclude_auto"] = found.as_dict()
        if found.exclude:
            log(f"calibration: exclude: auto chose {list(found.exclude)}; to pin it:\n{found.yaml}")
    if details:  # every verdict above ran a Q/DQ graph in onnxruntime, on a GPU host too: the gate's label
        details["candidate"] = "simulated"
        details["emulation"] = candidate_emulation(probe.emulation, True)  # Q/DQ mode: the spec refuses native
        log(f"calibration: the simulated gate's verdicts above ran in onnxruntime; emulated: {details['emulation']}")
    return calibration.result(scale_set, exclude, details), found


def search_spec(
    spec: Spec, model: ModelInfo, cache_dir: Path, *, budget_s: float, log: Log = lambda _message: None
) -> SensitivitySearch:
    """``trtforge diagnose`` on an int8 spec: the full ranking and the exclusion set, with the
    spec's algorithm (``auto``: the gate's favourite first)."""
    calibration = Calibration(spec, model, cache_dir, log)
    probe = GateProbe(spec, model)
    scale_set = calibration.scale_sets[0]
    if len(calibration.scale_sets) > 1:
        scale_set, _ = choose_algorithm(calibration, probe, log)
    max_excluded = calibration.config.max_excluded
    return search(calibration, scale_set, probe, budget_s=budget_s, max_excluded=max_excluded, log=log)


def worst_cosine(values: Sequence[float]) -> float:
    """The lowest of ``values``, NaN (an output with NaN/Inf) counting as the lowest."""
    array = np.asarray(values, dtype=np.float64)
    return math.nan if np.isnan(array).any() else float(array.min())


def _number(value: object) -> float:
    """A report number back to a float (the report writes NaN/Inf as null or text)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
