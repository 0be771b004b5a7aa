"""The accuracy gate end to end: real TensorRT-RTX builds, real onnxruntime, through the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from clitools import cli
from junitparser import Failure, JUnitXml, Skipped
from models import chain, need_rtx, without_gpu
from onnx import helper, numpy_helper

from trtforge.artifact import LOCK_DIR
from trtforge.manifest import read_manifest
from trtforge.mixedprecision import FP16_STORAGE, INT8_QDQ

need_rtx()

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "calibration" / "digits"
CONV_PROFILE = "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [4, 3, 16, 16], max: [8, 3, 16, 16]}\n"
DIGITS_PROFILE = "profiles:\n  - input: {min: [1, 1, 8, 8], opt: [16, 1, 8, 8], max: [64, 1, 8, 8]}\n"


def _digits_spec(precision: str, extra: str = "") -> str:
    text = (
        f"name: digits\nmodel: {DIGITS / 'digits_cnn.onnx'}\nprecision: {precision}\ntargets: ['8.6']\n"
        + DIGITS_PROFILE
        + f"accuracy:\n  data: {DIGITS / 'val'}/*.npy\n  labels: {DIGITS / 'val-labels.npy'}\n  max_samples: 512\n"
        + extra
    )
    if precision == "int8":
        text += f"calibration:\n  data: {DIGITS / 'train'}/*.npy\n"
    return text


def _one(out: Path, pattern: str) -> Path:
    (found,) = sorted(out.glob(pattern))
    return found


def _suite_cases(junit: Path) -> dict[str, list[tuple[str, str, list[object]]]]:
    """suite name -> [(classname, test name, results)]; parsing proves it is JUnit XML."""
    document = JUnitXml.fromfile(str(junit))
    return {suite.name: [(case.classname, case.name, list(case.result)) for case in suite] for suite in document}


@without_gpu
def test_digits_fp16_passes_with_labels_and_junit(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(_digits_spec("fp16"))
    out, junit = tmp_path / "out", tmp_path / "junit.xml"
    code, _, stderr = cli("build", spec, "--out", out, "--junit", junit)
    assert code == 0, stderr
    engine = _one(out, "*.engine")
    manifest = read_manifest(engine)
    summary = manifest.accuracy
    assert summary is not None and summary["passed"] is True
    assert summary["candidate"] == "simulated"  # no machine here runs the engine
    assert summary["samples"] == 397 and summary["data"] == "files"
    task = summary["task_accuracy"]["logits"]
    assert task["reference"] >= 0.95 and task["candidate"] >= 0.95
    report = json.loads((out / f"{manifest.stem}.accuracy.json").read_text())
    assert report["schema"] == "trtforge/accuracy/v1"
    assert report["candidate"]["kind"] == "simulated" and "no GPU" in report["candidate"]["reason"]
    assert report["candidate"]["model"].endswith(".onnx")  # the FP16-converted graph
    (logits,) = report["outputs"]
    assert logits["classifier"] is True and logits["tolerance"] == {"cosine_min": 0.999, "snr_db_min": 26.98}
    assert logits["metrics"]["cosine"] > 0.999 and logits["metrics"]["top1"] > 0.99
    assert "simulated" in stderr and "cosine" in stderr  # the table on stderr
    # the task accuracy's line names the candidate itself: a log searched for it shows the emulation's
    assert "task accuracy of 'logits' on 397 labelled samples: reference 9" in stderr
    assert ", candidate (simulated) 9" in stderr, stderr
    cases = _suite_cases(junit)
    assert cases == {
        f"accuracy.{manifest.stem}": [(f"{manifest.stem}.logits", key, []) for key in ("cosine_min", "snr_db_min")]
    }
    # each case's own output (what CI test tabs show) says the candidate was simulated, and how
    outputs = [case.system_out for suite in JUnitXml.fromfile(str(junit)) for case in suite]
    emulated = f"; candidate simulated; emulated: {FP16_STORAGE}"
    assert len(outputs) == 2 and all(text.endswith(emulated) for text in outputs), outputs


def test_fp32_simulation_is_the_reference_itself(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(_digits_spec("fp32"))
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 0, stderr
    report = json.loads(_one(tmp_path / "out", "*.accuracy.json").read_text())
    assert "identical by construction" in report["candidate"]["runner"]
    # the manifest alone must say this verdict proves nothing about the engine (issue 13, item 9)
    assert report["candidate"]["kind"] == "identical" and "proves nothing" in report["candidate"]["reason"]
    summary = read_manifest(_one(tmp_path / "out", "*.engine")).accuracy
    assert summary is not None and summary["passed"] is True and summary["candidate"] == "identical"
    assert "proves nothing about the engine" in summary["candidate_reason"]
    # with labels the reference runs for the task accuracy, but nothing is compared with it: the
    # reference against itself would "pass" cosine 1.0, which says nothing about the engine
    assert summary["measured"] is False and summary["task_accuracy"]["logits"]["reference"] >= 0.95
    (logits,) = report["outputs"]
    assert logits["metrics"] == {} and logits["checks"] == [] and logits["task_accuracy"]["samples"] == 397
    assert logits["tolerance"] == {"cosine_min": 0.99999, "snr_db_min": 46.99}
    assert ": not measured — candidate identical" in stderr and ": passed" not in stderr
    assert "task accuracy of 'logits' on 397 labelled samples" in stderr
    assert ", candidate (identical) 9" in stderr  # the reference's own accuracy, shown as such


def test_digits_int8_passes_and_wrong_qdq_scales_fail(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    from trtforge.accuracy.gate import GateCandidate, run_gate
    from trtforge.model import inspect_model
    from trtforge.spec import load_spec

    spec_path = write_spec(_digits_spec("int8"))
    out = tmp_path / "out"
    code, _, stderr = cli("build", spec_path, "--out", out)
    assert code == 0, stderr
    manifest = read_manifest(_one(out, "*.engine"))
    report = json.loads((out / f"{manifest.stem}.accuracy.json").read_text())
    (logits,) = report["outputs"]
    assert {check["limit_key"] for check in logits["checks"]} == {"cosine_min", "snr_db_min", "top1_min"}
    assert logits["task_accuracy"]["candidate"] >= 0.95

    # The same Q/DQ graph with every activation scale 50x too large: most values round to 0. In the
    # FP16-storage emulation an FP16 scale is an initializer read through a Cast(FLOAT).
    qdq = onnx.load(report["candidate"]["model"])
    scales = {node.input[1] for node in qdq.graph.node if node.op_type == "QuantizeLinear"}
    scales |= {node.input[0] for node in qdq.graph.node if node.op_type == "Cast" and node.output[0] in scales}
    for init in qdq.graph.initializer:
        if init.name in scales:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 50, init.name))
    damaged = tmp_path / "wrong_scales.onnx"
    onnx.save(qdq, str(damaged))
    spec = load_spec(spec_path)
    bad = run_gate(
        spec,
        inspect_model(spec.model_path),
        GateCandidate("simulated", "test", onnx_path=damaged),
        stem="digits-damaged",
        engine_file=None,
    )
    assert not bad.passed
    assert any("cosine" in failure or "top1" in failure for failure in bad.failures)


@without_gpu
def test_int8_clipped_by_a_narrow_calibration_fails_the_gate_and_passes_calibrated_on_its_range(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """Scales from calibration data a hundredth of the inputs' range: an INT8 engine saturates
    nearly every input of its MatMul at +-127 steps and returns a clipped output. The simulated
    candidate's QuantizeLinear saturates as the engine's kernels do, so the gate fails it (exit 4);
    calibrated on data of the inputs' range, the same spec passes."""
    weights = [numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.25, (16, 16)).astype(np.float32), "W")]
    model = chain(tmp_path / "fc.onnx", "fc", weights, [helper.make_node("MatMul", ["input", "W"], ["out"], name="fc")])
    for folder, std in (("narrow", 0.01), ("wide", 1.0), ("acc", 1.0)):
        (tmp_path / folder).mkdir()
        np.save(tmp_path / folder / "x.npy", np.random.default_rng(1).normal(0, std, (64, 16)).astype(np.float32))

    def build(calibration: str) -> tuple[int, str]:
        spec = write_spec(
            f"name: fc\nmodel: {model}\nprecision: int8\ntargets: ['8.6']\n"
            "profiles:\n  - input: {min: [1, 16], opt: [16, 16], max: [64, 16]}\n"
            f"calibration:\n  data: {tmp_path / calibration}/*.npy\n  algorithm: minmax\n"
            f"accuracy:\n  data: {tmp_path / 'acc'}/*.npy\n"
        )
        code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
        return code, stderr

    code, stderr = build("narrow")
    assert code == 4, stderr
    assert "accuracy gate, candidate simulated (no GPU on this host: its Q/DQ graph (INT8" in stderr
    report = json.loads(_one(tmp_path / "out", "*.rejected.accuracy.json").read_text())
    assert report["candidate"]["kind"] == "simulated" and report["candidate"]["emulation"].startswith(INT8_QDQ)
    assert "its Q/DQ graph (INT8" in report["candidate"]["reason"]
    assert {check["metric"] for check in report["outputs"][0]["checks"] if not check["passed"]} >= {"cosine"}

    code, stderr = build("wide")
    assert code == 0, stderr
    summary = read_manifest(_one(tmp_path / "out", "*.engine")).accuracy
    assert summary is not None and summary["passed"] is True and summary["candidate"] == "simulated"


def _perturb_fp16_cache(model: Path, cache: Path) -> None:
    """Poison trtforge's FP16 cache with a graph whose conv weights are flipped: the engine and the
    simulated candidate are both built from it, as from a broken conversion."""
    from trtforge.precision.graphs import fp16_onnx

    path = fp16_onnx(model, cache)
    graph = onnx.load(str(path))
    for init in graph.graph.initializer:
        if init.name.startswith("conv.w"):
            init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), init.name))
    onnx.save(graph, str(path))


def test_damaged_candidate_fails_with_exit_4_and_keeps_the_good_artifact(
    write_spec: Callable[..., Path], tmp_path: Path, model_dir: Path, isolated_cache: Path
) -> None:
    spec = write_spec(
        f"name: conv\nmodel: {model_dir / 'conv.onnx'}\nprecision: fp16\ntargets: ['8.6']\n" + CONV_PROFILE
    )
    out, junit = tmp_path / "out", tmp_path / "junit.xml"
    code, _, stderr = cli("build", spec, "--out", out)
    assert code == 0, stderr
    engine = _one(out, "*.engine")
    good = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    assert f"{engine.name.removesuffix('.engine')}.accuracy.json" in good

    _perturb_fp16_cache(model_dir / "conv.onnx", isolated_cache)
    code, _, stderr = cli("build", spec, "--out", out, "--junit", junit)
    assert code == 4, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("error: accuracy gate failed for conv-fp16-")
    assert "output 'logits': cosine" in line and "< cosine_min 0.999" in line and "Traceback" not in stderr
    stem = engine.name.removesuffix(".engine")
    rejected = out / f"{stem}.rejected.accuracy.json"
    assert str(rejected) in line
    assert json.loads(rejected.read_text())["passed"] is False
    # the previous good engine, manifest and report are untouched; nothing staged is left over
    after = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file() and path != rejected}
    assert after == good
    assert [path.name for path in out.iterdir() if path.name.startswith(".")] == [LOCK_DIR]
    (cases,) = _suite_cases(junit).values()
    ((classname, name, results), (_, snr_name, _)) = cases
    assert (classname, name, snr_name) == (f"{stem}.logits", "cosine_min", "snr_db_min")
    assert isinstance(results[0], Failure) and "cosine" in results[0].message


def test_spec_tolerance_exceeded_names_metric_value_and_limit(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(_digits_spec("fp16", "  tolerances:\n    logits: {max_abs: 1.0e-9, cosine_min: 0.5}\n"))
    out = tmp_path / "out"
    code, _, stderr = cli("build", spec, "--out", out)
    assert code == 4
    line = stderr.strip().splitlines()[-1]
    assert "output 'logits': max_abs 0.00" in line and "> max_abs 1e-09" in line
    assert not list(out.glob("*.engine")) and not list(out.glob("*.manifest.json"))
    assert len(list(out.glob("*.rejected.accuracy.json"))) == 1


def test_disabled_gate_is_recorded_in_the_manifest(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(
        f"name: digits\nmodel: {DIGITS / 'digits_cnn.onnx'}\nprecision: fp16\ntargets: ['8.6']\n"
        + DIGITS_PROFILE
        + "accuracy: {enabled: false}\n"
    )
    out, junit = tmp_path / "out", tmp_path / "junit.xml"
    code, _, stderr = cli("build", spec, "--out", out, "--junit", junit)
    assert code == 0, stderr
    manifest = read_manifest(_one(out, "*.engine"))
    assert manifest.accuracy == {"skipped": True, "reason": "accuracy.enabled is false in the spec"}
    assert not list(out.glob("*.accuracy.json"))
    ((_, name, results),) = next(iter(_suite_cases(junit).values()))
    assert name == "accuracy" and isinstance(results[0], Skipped)
    assert results[0].message == "accuracy.enabled is false in the spec"  # the manifest's reason


def test_random_inputs_cover_every_profile_shape(
    write_spec: Callable[..., Path], tmp_path: Path, model_dir: Path
) -> None:
    spec = write_spec(
        f"name: two\nmodel: {model_dir / 'two_inputs.onnx'}\nprecision: fp16\ntargets: ['8.6']\n"
        "profiles:\n"
        "  - {image: {min: [1, 3, 8, 8], opt: [2, 3, 8, 8], max: [4, 3, 8, 8]},"
        " meta: {min: [1, 4], opt: [2, 4], max: [4, 4]}}\n"
        "  - {image: {min: [4, 3, 8, 8], opt: [8, 3, 8, 8], max: [16, 3, 8, 8]},"
        " meta: {min: [4, 4], opt: [8, 4], max: [16, 4]}}\n"
        "accuracy:\n  tolerances: {'*': {snr_db_min: 30}}\n"
    )
    out = tmp_path / "out"
    code, _, stderr = cli("build", spec, "--out", out)
    assert code == 0, stderr
    report = json.loads(_one(out, "*.accuracy.json").read_text())
    # batches 1, 2, 4 (profile 0) and 4 (a duplicate), 8, 16 (profile 1)
    assert report["data"] == {
        "source": "random", "files": 0, "samples": 31, "dropped": 0, "batches": 5, "labels": None, "seed": 0,
        "notes": [],
    }  # fmt: skip
    (out_result,) = report["outputs"]
    assert out_result["classifier"] is True  # [N, 5] float
    assert out_result["tolerance"] == {"cosine_min": 0.999, "snr_db_min": 30.0}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_bad_tolerance_name_and_labels_without_data(
    write_spec: Callable[..., Path], tmp_path: Path, precision: str
) -> None:
    """Refused before anything is built: a typo in the gate's settings costs no build."""
    spec = write_spec(_digits_spec(precision, "  tolerances:\n    logit: {max_abs: 1}\n"))
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 2
    assert "unknown" not in stderr and "did you mean 'logits'" in stderr and "spec.yaml:" in stderr
    assert "Building engine" not in stderr and "FP16" not in stderr
    # with the gate off too: the typo is not found only the day the gate is turned on
    spec = write_spec(_digits_spec(precision, "  enabled: false\n  tolerances:\n    logit: {max_abs: 1}\n"))
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 2 and "did you mean 'logits'" in stderr and "Building engine" not in stderr, stderr
    spec = write_spec(
        f"name: digits\nmodel: {DIGITS / 'digits_cnn.onnx'}\nprecision: {precision}\n"
        + DIGITS_PROFILE
        + f"accuracy: {{labels: {DIGITS / 'val-labels.npy'}}}\n",
        name="labels.yaml",
    )
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 2 and "accuracy.labels needs accuracy.data" in stderr and "Building engine" not in stderr
    assert not list((tmp_path / "out").glob("*.engine"))


# ---------------------------------------------------------------- verify


@pytest.fixture
def built_digits(write_spec: Callable[..., Path], tmp_path: Path) -> tuple[Path, Path]:
    spec = write_spec(_digits_spec("fp16"))
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 0, stderr
    return spec, _one(tmp_path / "out", "*.engine")


@without_gpu
def test_verify_spec_and_engine_update_the_manifest(built_digits: tuple[Path, Path], tmp_path: Path) -> None:
    spec, engine = built_digits
    before = read_manifest(engine)
    report = engine.with_name(f"{before.stem}.accuracy.json")
    report.unlink()
    junit = tmp_path / "verify.xml"
    code, stdout, stderr = cli("verify", spec, "--out", engine.parent, "--json", "--junit", junit)
    assert code == 0, stderr
    (result,) = json.loads(stdout)["results"]
    assert result["status"] == "passed" and result["manifest_updated"] is True
    assert result["accuracy"]["candidate"] == "simulated"
    assert report.is_file()
    assert read_manifest(engine).accuracy == result["accuracy"]
    assert list(_suite_cases(junit)) == [f"accuracy.{before.stem}"]
    code, _, stderr = cli("verify", engine, "--spec", spec)
    assert code == 0, stderr


def test_verify_signed_artifact_writes_only_the_report(built_digits: tuple[Path, Path]) -> None:
    spec, engine = built_digits
    manifest_path = engine.with_name(engine.name.removesuffix(".engine") + ".manifest.json")
    document = json.loads(manifest_path.read_text())
    document["signature"] = {"algorithm": "ed25519", "key_id": "test", "value": "not-checked-by-verify"}
    manifest_path.write_text(json.dumps(document, indent=2))
    signed = manifest_path.read_bytes()
    report = engine.with_name(engine.name.removesuffix(".engine") + ".accuracy.json")
    report.unlink()
    code, stdout, stderr = cli("verify", engine, "--spec", spec, "--json")
    assert code == 0, stderr
    (result,) = json.loads(stdout)["results"]
    assert result["manifest_updated"] is False
    assert manifest_path.read_bytes() == signed
    assert report.is_file()


def test_verify_replaces_a_report_the_signed_manifest_does_not_pin(built_digits: tuple[Path, Path]) -> None:
    """Beside a signed manifest, only the report whose bytes are its ``report_sha256`` is left as it
    is: an edited one is not the signed report, and verify writes its own in its place."""
    spec, engine = built_digits
    manifest_path = engine.with_name(engine.name.removesuffix(".engine") + ".manifest.json")
    document = json.loads(manifest_path.read_text())
    assert document["accuracy"]["report_sha256"]
    document["signature"] = {"algorithm": "ed25519", "key_id": "test", "value": "not-checked-by-verify"}
    manifest_path.write_text(json.dumps(document, indent=2))
    signed = manifest_path.read_bytes()
    report = engine.with_name(engine.name.removesuffix(".engine") + ".accuracy.json")
    edited = report.read_bytes() + b"\n"  # other bytes than the ones signed
    report.write_bytes(edited)
    code, stdout, stderr = cli("verify", engine, "--spec", spec, "--json")
    assert code == 0, stderr
    (result,) = json.loads(stdout)["results"]
    assert result["manifest_updated"] is False and result["report_written"] is True
    assert manifest_path.read_bytes() == signed
    assert report.read_bytes() != edited and json.loads(report.read_text())["passed"] is True  # verify's own


def test_verify_refuses_a_spec_the_engine_was_not_built_from(
    built_digits: tuple[Path, Path], write_spec: Callable[..., Path]
) -> None:
    spec, engine = built_digits
    edited = write_spec(spec.read_text() + "# edited after the build\n", name="edited.yaml")
    code, _, stderr = cli("verify", engine, "--spec", edited)
    assert code == 2
    assert "is not the spec this engine was built from" in stderr
    assert "differs from the one the engine was built from" in stderr
    other_model = write_spec(spec.read_text().replace("digits_cnn.onnx", "digits_cnn_static.onnx"), name="other.yaml")
    code, _, stderr = cli("verify", engine, "--spec", other_model)
    assert code == 2 and "is not the ONNX the engine was built from" in stderr
    code, _, stderr = cli("verify", edited, "--out", engine.parent)
    assert code == 2 and "no engine built from this spec and model" in stderr
    code, _, stderr = cli("verify", engine)
    assert code == 2 and "needs --spec SPEC" in stderr


def test_verify_refuses_calibration_data_the_engine_was_not_calibrated_on(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """verify calibrates again to rebuild the simulated candidate: on other data it would judge
    other scales, and could pass an engine whose own scales fail."""
    train = tmp_path / "train"
    train.mkdir()
    files = sorted((DIGITS / "train").glob("*.npy"))[:2]
    for path in files:
        np.save(train / path.name, np.load(path))
    spec = write_spec(_digits_spec("int8").replace(f"{DIGITS / 'train'}/*.npy", f"{train}/*.npy"))
    out = tmp_path / "out"
    code, _, stderr = cli("build", spec, "--out", out)
    assert code == 0, stderr
    engine = _one(out, "*.engine")
    manifest_before = engine.with_name(engine.name.replace(".engine", ".manifest.json")).read_bytes()
    np.save(train / files[0].name, np.load(files[0]) * 40)
    code, _, stderr = cli("verify", engine, "--spec", spec)
    assert code == 2 and "is not the data the engine was calibrated on" in stderr
    assert engine.with_name(engine.name.replace(".engine", ".manifest.json")).read_bytes() == manifest_before
    np.save(train / files[0].name, np.load(files[0]))  # the data it was calibrated on: verified again
    assert cli("verify", engine, "--spec", spec)[0] == 0


def _renamed_set(document: dict[str, Any], engine: Path, manifest: Path, old: str, new: str) -> tuple[Path, Path]:
    """The artifact set's files renamed (``old`` -> ``new`` in their names) to match an edited
    manifest ``document``, whose engine file it names too: the new engine and manifest paths."""
    document["artifact"]["file"] = document["artifact"]["file"].replace(old, new)
    for path in list(engine.parent.glob(f"*{old}*")):
        path.rename(path.with_name(path.name.replace(old, new)))
    return engine.with_name(engine.name.replace(old, new)), manifest.with_name(manifest.name.replace(old, new))


@pytest.mark.parametrize("edit", ["profiles", "precision", "name", "calibration"])
def test_verify_refuses_a_manifest_edited_after_the_build(built_digits: tuple[Path, Path], edit: str) -> None:
    """An unsigned manifest whose profiles (or, files renamed to match, precision) were edited
    after the build passed verify, which then stamped its verdict on it: serving would plan for a
    batch of 100000 the engine never took. What the spec decided must read as the build wrote it."""
    spec, engine = built_digits
    manifest_path = engine.with_name(engine.name.removesuffix(".engine") + ".manifest.json")
    document = json.loads(manifest_path.read_text())
    if edit == "profiles":
        document["profiles"][0]["input"]["max"] = [100000, 1, 8, 8]
        expected = "its profiles [{'input': {'min': [1, 1, 8, 8], 'opt': [16, 1, 8, 8], 'max': [100000, 1, 8, 8]}}]"
    elif edit == "name":  # another model's name, files renamed to match: registries and serving go by it
        document["name"] = "resnet"
        engine, manifest_path = _renamed_set(document, engine, manifest_path, "digits-", "resnet-")
        expected = f"its name resnet is not what {spec}:1 gave the build (digits)"
    elif edit == "calibration":  # an fp16 engine said to carry INT8 scales
        document["calibration"] = {"algorithm": "entropy", "data_sha256": "0" * 64}
        expected = f"it records a calibration, and {spec}:3 is fp16"
    else:  # an fp16 engine relabelled fp32, under the fp32 name
        document["precision"] = "fp32"
        engine, manifest_path = _renamed_set(document, engine, manifest_path, "-fp16-", "-fp32-")
        expected = "its precision fp32 is not what"
    manifest_path.write_text(json.dumps(document, indent=2))
    edited = manifest_path.read_bytes()
    code, _, stderr = cli("verify", engine, "--spec", spec)
    assert code == 5, stderr
    (line,) = stderr.splitlines()[-1:]
    assert line.startswith(f"error: {manifest_path}: {expected}") and "edited after the build" in line, line
    assert manifest_path.read_bytes() == edited  # no verdict stamped on it


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            "input shape",
            "its io[0] (input 'input') has shape [-1, 1, 16, 16] where model {model} declares [-1, 1, 8, 8]",
        ),
        ("output dtype", "its io[1] (output 'logits') has dtype 'float16' where model {model} declares 'float32'"),
        (
            "output name",
            "its io[1] (output 'probabilities') has name 'probabilities' where model {model} declares 'logits'",
        ),
        ("tensor added", "its io lists 3 tensors where model {model} declares 2"),
        ("tensor removed", "its io lists 1 tensors where model {model} declares 2"),
        ("input mode", "its io[0] (output 'input') has mode 'output' where model {model} declares 'input'"),
    ],
    ids=["input-shape", "output-dtype", "output-name", "tensor-added", "tensor-removed", "input-mode"],
)
def test_verify_refuses_a_manifest_whose_io_was_edited(
    built_digits: tuple[Path, Path], edit: str, expected: str
) -> None:
    """An unsigned manifest whose ``io`` (the inputs and outputs serving plans with: names, dtypes,
    shapes) was edited after the build passed verify, which stamped its verdict on it. What the
    model declares, and TensorRT takes as it is, must read as the build wrote it."""
    spec, engine = built_digits
    manifest_path = engine.with_name(engine.name.removesuffix(".engine") + ".manifest.json")
    document = json.loads(manifest_path.read_text())
    if edit == "input shape":
        document["io"][0]["shape"] = [-1, 1, 16, 16]
    elif edit == "output dtype":
        document["io"][1]["dtype"] = "float16"
    elif edit == "output name":
        document["io"][1]["name"] = "probabilities"
    elif edit == "tensor removed":
        del document["io"][1]
    elif edit == "input mode":
        document["io"][0]["mode"] = "output"
    else:
        document["io"].append({"name": "extra", "mode": "output", "dtype": "float32", "shape": [-1, 10]})
    manifest_path.write_text(json.dumps(document, indent=2))
    edited = manifest_path.read_bytes()
    code, _, stderr = cli("verify", engine, "--spec", spec)
    assert code == 5, stderr
    (line,) = stderr.splitlines()[-1:]
    expected = expected.format(model=DIGITS / "digits_cnn.onnx")
    assert line == (
        f"error: {manifest_path}: {expected}: the manifest was edited after the build, it does not describe the "
        "engine; restore it, or rebuild the engine"
    )
    assert manifest_path.read_bytes() == edited  # no verdict stamped on it


def _io_model(path: Path, kind: str) -> None:
    """A model whose io TensorRT's ONNX parser takes otherwise than it is declared."""
    make, value = onnx.helper.make_node, onnx.helper.make_tensor_value_info
    double, single = onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT
    if kind == "float64":
        nodes = [make("Cast", ["x"], ["y"], to=double)]
        inputs, outputs = [value("x", double, [2, 3])], [value("y", double, [2, 3])]
    elif kind == "empty":
        nodes = [make("Relu", ["x"], ["y"])]
        inputs, outputs = [value("x", single, [0, 3])], [value("y", single, [0, 3])]
    else:  # an input also declared as an output
        nodes = [make("Relu", ["x"], ["y"])]
        inputs, outputs = [value("x", single, [2, 3])], [value("y", single, [2, 3]), value("x", single, [2, 3])]
    graph = onnx.helper.make_graph(nodes, kind, inputs, outputs)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.parametrize(
    ("kind", "io"),
    [
        ("float64", [("x", "input", "float32", [2, 3]), ("y", "output", "float32", [2, 3])]),
        ("empty", [("x", "input", "float32", [0, 3]), ("y", "output", "float32", [0, 3])]),
        (
            "passthrough",
            [
                ("__x", "input", "float32", [2, 3]),
                ("y", "output", "float32", [2, 3]),
                ("x", "output", "float32", [2, 3]),
            ],
        ),
    ],
)
def test_verify_passes_a_genuine_manifest_whose_io_tensorrt_took_otherwise(
    tmp_path: Path, kind: str, io: list[tuple[str, str, str, list[int]]]
) -> None:
    """TensorRT's ONNX parser takes a float64 input or output as float32, keeps a static dim of 0
    (an empty tensor) and names an input that is also an output ``__NAME``: the build records its
    network so, and verify refused that genuine manifest as edited (exit 5). An edit there still is."""
    _io_model(tmp_path / "m.onnx", kind)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: io\nmodel: {tmp_path / 'm.onnx'}\ntargets: ['8.6']\naccuracy: {{enabled: false}}\n")
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 0, stderr
    engine = _one(tmp_path / "out", "*.engine")
    assert [(t.name, t.mode, t.dtype, list(t.shape)) for t in read_manifest(engine).io] == io
    code, _, stderr = cli("verify", engine, "--spec", spec)
    assert code == 0, stderr
    manifest_path = engine.with_name(engine.name.removesuffix(".engine") + ".manifest.json")
    document = json.loads(manifest_path.read_text())
    document["io"][0]["name"] = "z"
    manifest_path.write_text(json.dumps(document, indent=2))
    code, _, stderr = cli("verify", engine, "--spec", spec)
    declared = "'x' (TensorRT's '__x')" if kind == "passthrough" else "'x'"
    assert (
        code == 5
        and f"its io[0] (input 'z') has name 'z' where model {tmp_path / 'm.onnx'} declares {declared}" in stderr
    )


@pytest.mark.parametrize(
    ("edit", "code", "says"),
    [
        ("exclude", 2, "calibrating again gives another exclude (None) than the engine's (['/conv1/Conv'])"),
        ("removed", 5, "{manifest}: it records no calibration, and {spec}:3 is int8: the manifest was edited"),
        ("fp16 section", 5, "{manifest}: it records an fp16 section, and {spec}:3 is int8: the manifest was edited"),
    ],
)
def test_verify_refuses_an_int8_manifest_whose_calibration_was_edited(
    write_spec: Callable[..., Path], tmp_path: Path, edit: str, code: int, says: str
) -> None:
    """Nodes left out of INT8 are part of the graph the gate judges: a manifest that says the build
    excluded others than calibrating again does is not this engine's. ``"calibration": null`` in an
    int8 manifest passed verify, which then skipped its checks of the calibration data and scales
    (nothing recorded to compare with) and stamped its verdict, as did an ``fp16`` section, which
    only an fp16 build writes. Nothing is stamped on any of them."""
    spec = write_spec(_digits_spec("int8"))
    built, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert built == 0, stderr
    engine = _one(tmp_path / "out", "*.engine")
    manifest_path = engine.with_name(engine.name.removesuffix(".engine") + ".manifest.json")
    document = json.loads(manifest_path.read_text())
    if edit == "exclude":
        document["calibration"]["exclude"] = ["/conv1/Conv"]
    elif edit == "removed":
        document["calibration"] = None
    else:  # an int8 engine said to keep nodes of an FP16 graph in FP32
        assert "fp16" not in document
        document["fp16"] = {"keep_fp32": ["/conv1/Conv"], "chosen_by": "spec"}
    manifest_path.write_text(json.dumps(document, indent=2))
    edited = manifest_path.read_bytes()
    verified, _, stderr = cli("verify", engine, "--spec", spec)
    assert verified == code, stderr
    assert says.format(manifest=manifest_path, spec=spec) in stderr
    assert manifest_path.read_bytes() == edited


def test_verify_of_a_damaged_engine_is_refused(built_digits: tuple[Path, Path]) -> None:
    spec, engine = built_digits
    data = bytearray(engine.read_bytes())
    data[-1] ^= 0xFF
    engine.write_bytes(bytes(data))
    code, _, stderr = cli("verify", engine, "--spec", spec)
    assert code == 5 and "engine sha256" in stderr and "differs from the manifest's" in stderr


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (np.zeros(10, np.int64), "hold 10 entries"),
        (np.zeros(512, np.float32), "must be a 1-D integer array (one class per sample), got float32 [512]"),
        (np.zeros((512, 2), np.int64), "must be a 1-D integer array (one class per sample), got int64 [512, 2]"),
        (b"not numpy", "cannot read labels"),
        # accepted before (a task accuracy of 0% on both sides passes): labels of another data set
        (-np.ones(397, np.int64), "hold -1, a class of no classifier output ('logits' (10 classes))"),
        (np.full(397, 1000, np.int64), "hold 1000, a class of no classifier output ('logits' (10 classes))"),
        # the data (397 samples, all read: max_samples is 512) has fewer samples than the labels
        (np.zeros(398, np.int64), "hold 398 entries, but the accuracy data holds 397 samples"),
    ],
    ids=["short", "float", "2-d", "not-npy", "negative", "other-classes", "long"],
)
def test_labels_are_checked_before_the_build(
    write_spec: Callable[..., Path], tmp_path: Path, labels: np.ndarray | bytes, expected: str
) -> None:
    """The README: data and labels files are checked before anything is built (the labels' values
    were read only once the engine was built and the gate's passes had run)."""
    path = tmp_path / "labels.npy"
    if isinstance(labels, bytes):
        path.write_bytes(labels)
    else:
        np.save(path, labels)
    spec = write_spec(_digits_spec("fp16").replace(str(DIGITS / "val-labels.npy"), str(path)))
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 2 and expected in stderr and "Building engine" not in stderr, stderr


@pytest.mark.parametrize(
    ("accuracy", "expected"),
    [
        ("  tolerances: {y: {top1_min: 0.9}}\n", "top1_min for output 'y', which is not a classifier output"),
        (
            "  data: {data}\n  labels: {labels}\n",
            "accuracy.labels needs a classifier output (float [N, C]); outputs: y",
        ),
        ("  tolerances: {y: {match_min: 0.9}}\n", "match_min for output 'y', which is a float output"),
    ],
    ids=["top1_min", "labels", "match_min"],
)
def test_a_classifier_setting_on_outputs_declared_otherwise_is_refused_before_the_build(
    tmp_path: Path, accuracy: str, expected: str
) -> None:
    """y is declared float [4, 3, 5]: no classifier, and not an output ``match_min`` judges, which
    the graph says before anything is built (the refusal came after the TensorRT build, and a
    ``match_min`` on it was accepted and never applied)."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        "rank3",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 3, 5])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 3, 5])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((4, 3, 5), np.float32))
    np.save(tmp_path / "labels.npy", np.zeros(4, np.int64))
    spec = tmp_path / "spec.yaml"
    settings = accuracy.replace("{data}", str(tmp_path / "x.npy")).replace("{labels}", str(tmp_path / "labels.npy"))
    spec.write_text(f"name: rank3\nmodel: {tmp_path / 'm.onnx'}\nprecision: fp16\naccuracy:\n{settings}")
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 2 and expected in stderr and "Building engine" not in stderr, stderr


def test_possible_classifiers_are_those_the_declared_outputs_leave_open() -> None:
    from trtforge.accuracy.inputs import possible_classifiers
    from trtforge.model import ModelInfo, TensorDesc

    shapes = {"logits": ("N", 10), "open": ("N", "C"), "unshaped": (), "one": ("N", 1), "boxes": ("N", 4, 2)}
    outputs = tuple(TensorDesc(name, "float32", shape) for name, shape in shapes.items())
    model = ModelInfo(Path("m.onnx"), (), (*outputs, TensorDesc("cls", "int64", ("N", 10))))
    assert possible_classifiers(model) == ["logits", "open", "unshaped"]


def test_labels_outside_the_classes_the_model_gives_only_as_it_runs_are_refused(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """A class count the graph leaves dynamic is known once the reference has run: labels outside
    it are refused there (exit 2, naming the file), not scored as a 0% task accuracy that passes;
    a labels file longer than the samples read (``max_samples`` below the data's) is the data set's,
    as the samples past it are never opened."""
    from trtforge.accuracy.gate import GateCandidate, run_gate
    from trtforge.accuracy.report import AccuracyReport
    from trtforge.errors import InvalidInputError
    from trtforge.model import inspect_model
    from trtforge.spec import Spec, load_spec

    model = onnx.load(str(DIGITS / "digits_cnn.onnx"))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "classes"
    onnx.save(model, str(tmp_path / "dynamic.onnx"))
    labels = tmp_path / "labels.npy"
    np.save(labels, np.r_[np.load(DIGITS / "val-labels.npy")[:300], [10], np.zeros(96, np.int64)])
    text = _digits_spec("fp32").replace(str(DIGITS / "digits_cnn.onnx"), str(tmp_path / "dynamic.onnx"))
    spec = load_spec(write_spec(text.replace(str(DIGITS / "val-labels.npy"), str(labels))))

    def gate(spec: Spec) -> AccuracyReport:
        return run_gate(
            spec,
            inspect_model(tmp_path / "dynamic.onnx"),
            GateCandidate("simulated", "test", onnx_path=tmp_path / "dynamic.onnx"),
            stem="digits-fp32",
            engine_file=None,
        )

    with pytest.raises(InvalidInputError) as refused:
        gate(spec)
    assert str(refused.value).endswith(
        f"labels {labels} hold 10, a class of no classifier output ('logits' (10 classes)); "
        "give the labels of this data, one class index per sample"
    )
    report = gate(spec.model_copy(update={"accuracy": spec.accuracy.model_copy(update={"max_samples": 300})}))
    task = report.outputs[0].task_accuracy
    assert task is not None and task.samples == 300


def test_labels_judge_the_output_they_fit_beside_other_heads(tmp_path: Path) -> None:
    """A classifier with a second head (4 box values beside 10 logits): labels 0..9 fit the logits
    only, so those get the task accuracy and the box none (the range check refused the model)."""
    from types import SimpleNamespace

    from trtforge.accuracy.gate import evaluate_outputs
    from trtforge.errors import InvalidInputError
    from trtforge.spec import load_spec

    spec_file = tmp_path / "heads.yaml"
    spec_file.write_text(f"name: heads\nmodel: m.onnx\naccuracy: {{labels: {tmp_path / 'l.npy'}}}\n")
    spec = load_spec(spec_file)
    rng = np.random.default_rng(0)
    arrays = {
        name: [rng.normal(size=(8, classes)).astype(np.float32)] for name, classes in (("logits", 10), ("box", 4))
    }
    heads: Any = SimpleNamespace(outputs=[SimpleNamespace(name=name) for name in arrays])  # what evaluate_outputs reads
    labels = np.arange(8) + 2  # 2..9: classes of the logits, not of the 4-value box
    results = {result.name: result for result in evaluate_outputs(spec, heads, arrays, arrays, labels)}
    assert results["logits"].task_accuracy is not None and results["box"].task_accuracy is None
    with pytest.raises(InvalidInputError, match=r"hold 10, a class of no classifier output \('logits' \(10 classes\)"):
        evaluate_outputs(spec, heads, arrays, arrays, labels + 8)


def test_samples_no_profile_accepts_are_dropped_and_counted(write_spec: Callable[..., Path]) -> None:
    from trtforge.accuracy.gate import GateCandidate, run_gate
    from trtforge.model import inspect_model
    from trtforge.spec import load_spec

    text = _digits_spec("fp32").replace("min: [1, 1, 8, 8]", "min: [16, 1, 8, 8]")
    spec = load_spec(write_spec(text))
    report = run_gate(
        spec,
        inspect_model(spec.model_path),
        GateCandidate("simulated", "test", onnx_path=spec.model_path),
        stem="digits-fp32",
        engine_file=None,
    )
    # 397 samples in batches of 64: the last 13 are fewer than the profile's minimum batch of 16
    assert (report.data.samples, report.data.dropped, report.data.batches) == (384, 13, 6)
    assert report.passed and report.outputs[0].task_accuracy is not None
    assert report.outputs[0].task_accuracy.samples == 384
