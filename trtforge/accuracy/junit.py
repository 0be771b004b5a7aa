"""The gate's reports as JUnit XML, for CI test tabs: one suite per artifact, one test case per
(output, limit). Apart from :mod:`trtforge.accuracy.report`, whose pydantic models a build with the
gate off never needs: every build hands its suite to ``--junit``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.fsutil import atomic_write_bytes, report_target

if TYPE_CHECKING:
    from junitparser import TestSuite

    from trtforge.accuracy.report import AccuracyReport

#: the file name a refused ``--junit`` path is told to take instead
JUNIT_EXAMPLE = "report.xml"


def summary_verdict(accuracy: Mapping[str, Any]) -> str:
    """The manifest's ``accuracy`` summary in words, with the candidate judged: ``passed
    (simulated)`` is the emulation's verdict, never the engine's, and an identical candidate's
    ``passed`` is ``not measured (identical)`` (pure: no pydantic model is read for it)."""
    if accuracy.get("skipped"):
        return "skipped"
    verdict = "not measured" if accuracy.get("measured") is False else "passed" if accuracy.get("passed") else "failed"
    return f"{verdict} ({accuracy.get('candidate', '?')})"


def junit_suite(report: AccuracyReport) -> TestSuite:
    """One suite per artifact, one test case per (output, limit): CI shows each limit as a test."""
    from junitparser import Failure, TestCase, TestSuite

    suite = TestSuite(f"accuracy.{report.stem}")
    suite.add_property("candidate", report.candidate.kind)
    suite.add_property("candidate_runner", report.candidate.runner)
    if report.candidate.emulation:
        suite.add_property("candidate_emulation", report.candidate.emulation)
    suite.add_property("data", f"{report.data.samples} samples ({report.data.source})")
    for index, note in enumerate(report.data.notes):
        suite.add_property(f"data_note.{index}", note)
    for name, task in report.task_accuracies().items():
        suite.add_property(f"task_accuracy.{name}", f"reference {task.reference:.4f}, candidate {task.candidate:.4f}")
    if not report.measured:  # an identical candidate: one skipped case that says why, not an empty suite
        from junitparser import Skipped

        case = TestCase("accuracy", classname=report.stem, time=report.seconds)
        case.result = [Skipped(report.candidate.reason)]
        suite.add_testcase(case)
    count = sum(len(out.checks) for out in report.outputs)
    # in each case's own output and failure message too: CI test tabs show those, not the suite's properties
    judged = "" if report.candidate.kind == "engine" else f"; candidate {report.candidate.kind}"
    if report.candidate.emulation:
        judged += f"; emulated: {report.candidate.emulation}"
    for out in report.outputs:
        for check in out.checks:  # the gate's time spread over its checks, so the suite's sum is right
            case = TestCase(check.limit_key, classname=f"{report.stem}.{out.name}", time=report.seconds / max(count, 1))
            case.system_out = check.message + judged
            if not check.passed:
                case.result = [Failure(check.message + judged, "AccuracyError")]
            suite.add_testcase(case)
    return suite


def junit_problem_suite(name: str, message: str, exit_code: int, step: str = "build") -> TestSuite:
    """A suite for an artifact that never reached the gate (build failed, bad spec, an engine
    verify refused, ...); its one case is the ``step`` that failed."""
    from junitparser import Error, TestCase, TestSuite

    suite = TestSuite(f"accuracy.{name}")
    case = TestCase(step, classname=name, time=0.0)
    case.result = [Error(message, f"exit {exit_code}")]
    suite.add_testcase(case)
    return suite


def junit_skipped_suite(name: str, reason: str) -> TestSuite:
    from junitparser import Skipped, TestCase, TestSuite

    suite = TestSuite(f"accuracy.{name}")
    case = TestCase("accuracy", classname=name, time=0.0)
    case.result = [Skipped(reason)]
    suite.add_testcase(case)
    return suite


def write_junit(path: Path, suites: Sequence[TestSuite]) -> Path:
    """All suites in one ``<testsuites>`` document, written atomically (through a link, to its target).

    The root's counts are set here, not by junitparser's ``update_statistics``, which also writes a
    ``skipped`` count there: the Surefire/Jenkins schema (``junit-10.xsd``, which CI test tabs
    follow) has none on ``<testsuites>``, only on each ``<testsuite>``."""
    from junitparser import JUnitXml

    document = JUnitXml("trtforge")
    for suite in suites:
        suite.update_statistics()
        document.add_testsuite(suite)
    document.tests = sum(suite.tests for suite in suites)
    document.failures = sum(suite.failures for suite in suites)
    document.errors = sum(suite.errors for suite in suites)
    document.time = round(sum(suite.time for suite in suites), 3)
    atomic_write_bytes(report_target(path), b'<?xml version="1.0" encoding="utf-8"?>\n' + document.tostring())
    return path
