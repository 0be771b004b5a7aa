"""Every ``--junit`` file trtforge writes is valid JUnit XML by a schema nobody on the project
wrote: ``tests/standards/junit-10.xsd``, the Surefire/Jenkins xunit-plugin schema (MIT, Gregory
Boissinot) as pytest's own tests validate pytest's reports with it (copied unchanged from pytest
8.3.4's sdist, ``testing/example_scripts/junit-10.xsd``), checked with ``xmlschema``. junitparser,
which writes the files and which the other tests read them back with, accepts what a CI test tab
may refuse. Cases: a passing gate, a failing one (exit 4), a gate turned off (skipped), a spec
refused (exit 2), for ``build`` and ``ci``, and ``verify``'s."""

from __future__ import annotations

from pathlib import Path

import pytest
import xmlschema
from clitools import cli
from models import need_rtx

REPO = Path(__file__).resolve().parent.parent
SCHEMA = xmlschema.XMLSchema(Path(__file__).parent / "standards" / "junit-10.xsd")
DIGITS = REPO / "calibration" / "digits"

need_rtx()

#: digits at fp16 on its validation data; each case changes the accuracy section
SPEC = """\
name: {name}
model: {digits}/digits_cnn.onnx
precision: fp16
targets: ["8.6"]
profiles:
  - input: {{min: [1, 1, 8, 8], opt: [8, 1, 8, 8], max: [16, 1, 8, 8]}}
accuracy:
  data: {digits}/val/*.npy
  labels: {digits}/val-labels.npy
  max_samples: 64
{accuracy}
"""
CASES = {
    "passes": ("", 0),
    "fails": ('  tolerances: {"*": {max_abs: 0.0}}', 4),
    "gate-off": ("  enabled: false", 0),
    "refused": ('  tolerances: {"*": {cosin_min: 0.9}}', 2),
}


def _specs(folder: Path) -> dict[str, Path]:
    found = {}
    for name, (accuracy, _) in CASES.items():
        spec = folder / f"{name}.yaml"
        spec.write_text(SPEC.format(name=name, digits=DIGITS, accuracy=accuracy))
        found[name] = spec
    return found


def _valid(junit: Path) -> None:
    SCHEMA.validate(str(junit))  # raises XMLSchemaValidationError naming the element and the rule


@pytest.mark.parametrize("case", sorted(CASES))
def test_build_junit_is_valid(tmp_path: Path, case: str) -> None:
    spec = _specs(tmp_path)[case]
    junit = tmp_path / "report.xml"
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out", "--junit", junit)
    assert code == CASES[case][1], stderr
    _valid(junit)


def test_ci_junit_of_every_outcome_is_valid(tmp_path: Path) -> None:
    specs = _specs(tmp_path)
    junit = tmp_path / "report.xml"
    code, _, stderr = cli("ci", *specs.values(), "--out", tmp_path / "out", "--junit", junit)
    assert code == 4, stderr  # the most severe of 0, 4 and 2
    _valid(junit)
    text = junit.read_text(encoding="utf-8")
    assert "<failure" in text and "<skipped" in text and "<error" in text


def test_verify_junit_is_valid(tmp_path: Path) -> None:
    spec = _specs(tmp_path)["passes"]
    out = tmp_path / "out"
    assert cli("build", spec, "--out", out)[0] == 0
    junit = tmp_path / "report.xml"
    code, _, stderr = cli("verify", spec, "--out", out, "--junit", junit)
    assert code == 0, stderr
    _valid(junit)


def test_verify_junit_of_a_refused_engine_is_valid_and_names_verify(tmp_path: Path) -> None:
    """An engine verify refused (the wrong spec) was reported as a failed ``build`` test case, in a
    suite named after the file (``accuracy.X.engine``) where its passing verify writes ``accuracy.X``."""
    specs = _specs(tmp_path)
    out = tmp_path / "out"
    assert cli("build", specs["passes"], "--out", out)[0] == 0
    (engine,) = out.glob("*.engine")
    junit = tmp_path / "report.xml"
    code, _, stderr = cli("verify", engine, "--spec", specs["fails"], "--junit", junit)
    assert code == 2, stderr
    _valid(junit)
    text = junit.read_text(encoding="utf-8")
    assert f'<testsuite name="accuracy.{engine.stem}" ' in text, text
    assert f'<testcase name="verify" classname="{engine.stem}"' in text, text
