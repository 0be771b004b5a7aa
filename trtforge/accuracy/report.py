"""The gate's report: one pydantic model, written as ``{stem}.accuracy.json``, summarized in the
manifest and shown as a table (:mod:`trtforge.accuracy.junit` exports it for CI test tabs)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trtforge.console import Cell, Styled, Table
from trtforge.digests import sha256_bytes
from trtforge.fsutil import atomic_write_text
from trtforge.manifest import REPORT_SHA256, report_path

if TYPE_CHECKING:
    from trtforge.console import Reporter

#: JSON has no inf or NaN: such a metric is written as one of these strings.
Number = float | Literal["inf", "-inf", "nan"]


def json_number(value: float | None) -> Number | None:
    if value is None:
        return None
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class CheckResult(_Frozen):
    limit_key: str
    metric: str
    bound: Literal["max", "min"]
    value: Number
    limit: float
    passed: bool
    message: str


class TaskAccuracy(_Frozen):
    """Share of labelled samples each model classifies correctly (arg-max == label)."""

    samples: int
    reference: float
    candidate: float


class OutputResult(_Frozen):
    name: str
    classifier: bool
    metrics: dict[str, Number | None]
    tolerance: dict[str, float]
    checks: list[CheckResult]
    task_accuracy: TaskAccuracy | None = None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


#: Why an ``identical`` candidate (fp32, engine not runnable here) proves nothing about the engine.
IDENTICAL_REASON = (
    "at fp32 the simulated candidate is the reference's own ONNX, identical by construction: the gate "
    "has nothing to compare it with, which proves nothing about the engine"
)
#: What the gate still runs for an ``identical`` candidate, and why no more.
IDENTICAL_PASS = (
    "so no onnxruntime run at all: there is nothing to compare, and TensorRT parsed the model when it "
    "built the engine (with labels, the reference runs every feed for the task accuracy)"
)


class CandidateInfo(_Frozen):
    """What was compared with the reference: the engine itself, its ONNX simulation, or (fp32
    without a runnable engine) the reference itself, ``identical``, which proves nothing."""

    kind: Literal["engine", "simulated", "identical"]
    runner: str
    model: str | None
    model_sha256: str | None
    reason: str
    emulation: str | None = None  # simulated: how the ONNX emulates the engine's storage, when it does


class ReferenceInfo(_Frozen):
    runner: str
    model: str
    model_sha256: str


class DataInfo(_Frozen):
    source: Literal["files", "random"]
    files: int
    samples: int
    dropped: int
    batches: int
    labels: str | None
    seed: int | None
    notes: list[str] = []  # shapes checked smaller than a profile's (a max over the input budget), and why


class AccuracyReport(_Frozen):
    schema_: Literal["trtforge/accuracy/v1"] = Field("trtforge/accuracy/v1", alias="schema")
    name: str
    precision: str
    stem: str
    engine: str | None
    passed: bool
    candidate: CandidateInfo
    reference: ReferenceInfo
    data: DataInfo
    outputs: list[OutputResult]
    failures: list[str]
    created_utc: str
    seconds: float

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_dict(), indent=2) + "\n"

    def task_accuracies(self) -> dict[str, TaskAccuracy]:
        return {out.name: out.task_accuracy for out in self.outputs if out.task_accuracy is not None}

    @property
    def measured(self) -> bool:
        """Whether the candidate was compared with the reference at all: an ``identical`` candidate
        is not (its task accuracy, with labels, is the reference's own), and its ``passed`` (the
        build goes on) is "not measured" wherever a person reads it."""
        return any(out.checks or out.metrics for out in self.outputs)


# ---------------------------------------------------------------- files and manifest


def write_report(path: Path, report: AccuracyReport) -> Path:
    atomic_write_text(path, report.to_json())
    return path


_SUMMARY_METRICS = ("cosine", "max_abs", "snr_db", "top1")
#: an integer or boolean output's: the share of equal values is what was judged (a cosine of indices means nothing)
_SUMMARY_EXACT_METRICS = ("match", "max_abs")


def summary(report: AccuracyReport, report_file: str) -> dict[str, Any]:
    """The manifest's ``accuracy`` object: verdict, candidate kind, headline metrics, file name,
    and the sha256 of the report as written, so that the manifest (and its signature) pins every
    byte of the report, its tolerances and limits too.

    An ``identical`` candidate carries its reason, so a reader of the manifest alone sees that
    ``passed`` says nothing about the engine."""
    reason = {"candidate_reason": IDENTICAL_REASON} if report.candidate.kind == "identical" else {}
    emulation = {"emulation": report.candidate.emulation} if report.candidate.emulation else {}
    return {
        "passed": report.passed,
        "measured": report.measured,
        "candidate": report.candidate.kind,
        **reason,
        **emulation,
        "data": report.data.source,
        "samples": report.data.samples,
        **({"data_notes": report.data.notes} if report.data.notes else {}),
        "report": report_file,
        REPORT_SHA256: sha256_bytes(report.to_json().encode("utf-8")),
        "checked_utc": report.created_utc,
        "outputs": {
            out.name: {
                key: out.metrics[key]
                for key in (_SUMMARY_EXACT_METRICS if out.metrics.get("match") is not None else _SUMMARY_METRICS)
                if out.metrics.get(key) is not None
            }
            for out in report.outputs
        },
        "task_accuracy": {
            name: {"reference": task.reference, "candidate": task.candidate, "samples": task.samples}
            for name, task in report.task_accuracies().items()
        },
    }


def rejected_summary(report: AccuracyReport) -> dict[str, Any]:
    """A build's failed gate as ``summary`` gives it, naming its ``{stem}.rejected.accuracy.json``:
    the ``--json`` row and ``ci``'s table say which candidate failed (the engine, or a simulation,
    and how it was emulated), as they say which one passed."""
    return summary(report, report_path(Path(), report.stem, rejected=True).name)


# ---------------------------------------------------------------- terminal


def _show(value: Number | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.8g}"


def render(report: AccuracyReport, reporter: Reporter) -> None:
    """A table of every check, then the task accuracy (with labels) side by side; a report that
    compared nothing (an identical candidate) is its one line."""
    if not report.measured:
        verdict = Styled("not measured", "yellow")
    else:
        verdict = Styled("passed", "green") if report.passed else Styled("FAILED", "bold red")
    title = (
        f"accuracy {report.name} {report.precision}: ",
        verdict,
        f" — candidate {report.candidate.kind} ({report.candidate.runner}), {report.data.samples} samples "
        + ("from files" if report.data.source == "files" else f"of seeded random data (seed {report.data.seed})"),
    )
    if not report.measured:
        reporter.info(title[0] + verdict.text + title[2])
        if report.candidate.emulation:
            reporter.info(f"candidate emulated: {report.candidate.emulation}")
        _render_task_accuracy(report, reporter)
        return
    columns = ("output", "metric", "value", "limit", "result")
    table = Table(title, columns, right=frozenset({"value", "limit"}))
    for out in report.outputs:
        for check in out.checks:
            relation = "<=" if check.bound == "max" else ">="
            result = Styled("ok", "green") if check.passed else Styled("FAIL", "bold red")
            table.add_row(out.name, check.metric, _show(check.value), f"{relation} {check.limit:g}", result)
        measured = {check.metric for check in out.checks}
        for metric, value in out.metrics.items():
            if metric not in measured and value is not None:
                table.add_row(out.name, metric, _show(value), "", Styled("info", "dim"))
    reporter.render(table)
    if report.candidate.emulation:
        reporter.info(f"candidate emulated: {report.candidate.emulation}")
    _render_task_accuracy(report, reporter)


def _render_task_accuracy(report: AccuracyReport, reporter: Reporter) -> None:
    """One line per labelled output; a candidate other than the engine is named on the line itself
    (a log searched for "task accuracy" shows a simulated candidate's accuracy as the emulation's)."""
    kind = report.candidate.kind
    candidate = "candidate" if kind == "engine" else f"candidate ({kind})"
    for name, task in report.task_accuracies().items():
        reporter.info(
            f"task accuracy of '{name}' on {task.samples} labelled samples: "
            f"reference {task.reference:.2%}, {candidate} {task.candidate:.2%}"
        )


# ---------------------------------------------------------------- side by side (make demo)


def read_report(path: Path) -> AccuracyReport:
    import json

    return AccuracyReport.model_validate(json.loads(path.read_text(encoding="utf-8")))


def side_by_side(reports: Sequence[AccuracyReport]) -> list[dict[str, Any]]:
    """One row per report (e.g. the fp32, fp16 and int8 builds of one model), classifier outputs first."""
    order = {"fp32": 0, "fp16": 1, "int8": 2}
    rows = []
    for report in sorted(reports, key=lambda r: (r.name, order.get(r.precision, 9), r.stem)):
        for out in sorted(report.outputs, key=lambda o: not o.classifier):
            task = out.task_accuracy
            rows.append(
                {
                    "name": report.name,
                    "precision": report.precision,
                    "output": out.name,
                    "candidate": report.candidate.kind,
                    "emulation": report.candidate.emulation,
                    "samples": report.data.samples,
                    "cosine": out.metrics.get("cosine"),
                    "max_abs": out.metrics.get("max_abs"),
                    "top1_agreement": out.metrics.get("top1"),
                    "reference_accuracy": task.reference if task else None,
                    "candidate_accuracy": task.candidate if task else None,
                    "passed": out.passed,
                    "measured": report.measured,
                }
            )
    return rows


def render_side_by_side(rows: Sequence[dict[str, Any]], reporter: Reporter, title: str = "accuracy") -> None:
    """Compact enough for an 80-column CI log: one table per model output, one row per precision."""
    columns = {
        "precision": "prec", "candidate": "candidate", "samples": "n", "cosine": "cosine",
        "top1_agreement": "top-1", "reference_accuracy": "ref acc", "candidate_accuracy": "acc", "passed": "gate",
    }  # fmt: skip
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["name"], row["output"]), []).append(row)
    for (name, output), members in groups.items():
        right = frozenset(header for key, header in columns.items() if key not in ("precision", "candidate"))
        table = Table((f"{title}: {name}, output '{output}'",), tuple(columns.values()), right, no_wrap=True)
        for row in members:
            cells: list[Cell] = []
            for key in columns:
                value = row[key]
                if key.endswith("_accuracy") and isinstance(value, float):
                    cells.append(f"{value:.2%}")
                elif key == "passed" and not row["measured"]:
                    cells.append(Styled("not measured", "yellow"))
                elif key == "passed":
                    cells.append(Styled("pass", "green") if value else Styled("FAIL", "bold red"))
                elif isinstance(value, float):
                    cells.append(f"{value:.6f}" if key == "cosine" else f"{value:.4f}")
                else:
                    cells.append("-" if value is None else str(value))
            table.add_row(*cells)
        reporter.render(table)
        reporter.info("ref acc: the FP32 ONNX in onnxruntime; acc: the candidate; top-1: share of equal top classes")
        if any(row["candidate"] == "identical" for row in members):
            reporter.info(f"identical: {IDENTICAL_REASON}")
        for precision, emulation in {row["precision"]: row["emulation"] for row in members if row["emulation"]}.items():
            reporter.info(f"simulated ({precision}): no engine ran; emulated: {emulation}")
