"""The per-item loop of the commands that take several items (``build SPEC...``, ``verify``).

One item's failure costs that item only: its row says why, the batch goes on, and the command
exits with the most severe code. A lone item without ``--json`` raises its own error instead, so
its one line and exit code are the error's. Either way the JUnit file holds a suite per item.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import typer

from trtforge.cli.common import emit_json
from trtforge.errors import TrtforgeError, most_severe, raise_if_interrupted, unexpected_error
from trtforge.fsutil import check_report_file

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


@dataclass(frozen=True)
class ItemReport:
    """What one item adds to the batch: its JUnit suite (made only when ``--junit`` asks for the
    file: junitparser is not imported otherwise) and its fields of the ``--json`` row."""

    suite: Callable[[], Any]
    fields: dict[str, Any] = field(default_factory=dict)
    status: str | None = None  # the row's status where it is not the command's (``BatchSteps.status``)


@dataclass(frozen=True)
class BatchSteps(Generic[Item, Outcome]):
    """How a command runs and reports one item; ``key`` names the item in each ``--json`` row."""

    key: str
    run: Callable[[Item], Outcome]
    passed: Callable[[Outcome], ItemReport]
    failed: Callable[[Item, TrtforgeError], ItemReport]
    status: str


def run_batch(
    batch: BatchSteps[Item, Outcome],
    items: Sequence[Item],
    console: Any,
    junit: Path | None,
    as_json: bool,
    inputs: Iterable[Path],
) -> None:
    """Run every item, write the JUnit file (never over one of the command's ``inputs``, checked
    first), print ``{"results": [...]}`` with ``--json`` and exit with the most severe item's code."""
    if junit is not None:
        from trtforge.accuracy.junit import JUNIT_EXAMPLE
        from trtforge.manifest import ARTIFACT_SUFFIXES

        check_report_file(junit, "--junit", JUNIT_EXAMPLE, inputs=inputs, reserved=ARTIFACT_SUFFIXES)
    suites: list[Callable[[], Any]] = []
    rows: list[dict[str, Any]] = []
    lone_error: TrtforgeError | None = None
    for item in items:
        try:
            report = batch.passed(_contained(batch.run, item))
            row = {batch.key: str(item), "status": report.status or batch.status, "exit_code": 0, **report.fields}
        except TrtforgeError as exc:
            if len(items) == 1 and not as_json:
                lone_error = exc  # raised once the JUnit file is written: one error line, its exit code
            else:
                console.error(str(exc))
            report = batch.failed(item, exc)
            row = {batch.key: str(item), "status": "failed", "exit_code": exc.exit_code, "error": str(exc)}
            row.update(report.fields)
        suites.append(report.suite)
        rows.append(row)
    if junit is not None:
        from trtforge.accuracy.junit import write_junit

        write_junit(junit, [make() for make in suites])
    if lone_error is not None:
        raise lone_error
    if as_json:
        emit_json({"results": rows})
    code = most_severe(row["exit_code"] for row in rows)
    if code:
        raise typer.Exit(code)


def _contained(run: Callable[[Item], Outcome], item: Item) -> Outcome:
    """Whatever one item raises is a TrtforgeError, so that a bug or an unwrapped onnxruntime or
    TensorRT exception costs that item only (exit 1; a full disk, exit 2) and the batch goes on."""
    try:
        return run(item)
    except TrtforgeError:
        raise
    except Exception as exc:
        raise_if_interrupted(exc)  # Ctrl-C stops the batch, as it does anywhere else
        raise unexpected_error(exc, str(item)) from exc
