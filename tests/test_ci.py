"""`trtforge ci` and `trtforge matrix` on real TensorRT-RTX builds in a temporary project."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
import yaml
from junitparser import JUnitXml
from registry import RunningRegistry, free_port
from typer.testing import CliRunner

from trtforge import __version__
from trtforge.cli import app
from trtforge.keys import SIGNING_KEY_ENV
from trtforge.manifest import read_manifest
from trtforge.signing import generate_keypair

models.need_rtx()

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent
PROFILE = "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [4, 3, 16, 16], max: [8, 3, 16, 16]}\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Three specs: fp32, fp16 and int8 (calibrated on data in the project)."""
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    models.conv_net(root / "conv.onnx")
    rng = np.random.default_rng(0)
    for index in range(2):
        np.save(root / "data" / f"batch{index}.npy", rng.random((8, 3, 16, 16), dtype=np.float32))
    common = f"model: conv.onnx\ntargets: ['8.6']\n{PROFILE}"
    (root / "fp32.yaml").write_text(f"name: conv\nprecision: fp32\n{common}")
    (root / "fp16.yaml").write_text(f"name: conv\nprecision: fp16\n{common}")
    (root / "int8.yaml").write_text(
        f"name: conv\nprecision: int8\n{common}calibration: {{data: data/*.npy, batch_size: 8}}\n"
        "accuracy: {tolerances: {'*': {cosine_min: 0.9, top1_min: 0.5}}}\n"
    )
    (root / "trtforge.yaml").write_text("runners:\n  cpu: [linux, cpu]\n  sm_86: [gpu, rtx3090]\n")
    return root


def _ci(project: Path, out: Path, *extra: str) -> dict:
    result = runner.invoke(app, ["ci", str(project), "--out", str(out), "--json", *extra])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _statuses(document: dict) -> dict[str, str]:
    return {Path(r["spec"]).name: r["status"] for r in document["results"]}


def test_unchanged_rerun_skips_and_changed_data_rebuilds_only_that_spec(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _ci(project, out)
    assert _statuses(first) == {"fp16.yaml": "built", "fp32.yaml": "built", "int8.yaml": "built"}
    second = runner.invoke(app, ["ci", str(project), "--out", str(out), "--json"])
    assert _statuses(json.loads(second.stdout)) == dict.fromkeys(("fp16.yaml", "fp32.yaml", "int8.yaml"), "unchanged")
    assert second.stderr.count("inputs unchanged: skipped") == 3

    np.save(project / "data" / "batch1.npy", np.random.default_rng(5).random((8, 3, 16, 16), dtype=np.float32))
    third = _ci(project, out)
    assert _statuses(third) == {"fp16.yaml": "unchanged", "fp32.yaml": "unchanged", "int8.yaml": "built"}


def test_a_new_way_to_convert_or_emulate_rebuilds_what_the_old_one_made(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An FP16 engine built before trtforge changed how it converts (LogSoftmax kept in FP32) or
    emulates is not that trtforge's engine: with the same inputs, ``ci`` builds it again instead of
    reporting it unchanged (from its build cache or from the replay of an unchanged run)."""
    import trtforge.ci
    import trtforge.rerun

    fp16 = project / "fp16.yaml"
    out = tmp_path / "out"
    assert _statuses(_ci(fp16, out)) == {"fp16.yaml": "built"}
    assert _statuses(_ci(fp16, out)) == {"fp16.yaml": "unchanged"}
    assert _statuses(_ci(fp16, out)) == {"fp16.yaml": "unchanged"}  # answered by the replay
    for module in (trtforge.ci, trtforge.rerun):
        monkeypatch.setattr(module, "GRAPH_REVISIONS", f"{module.GRAPH_REVISIONS} (next)")
    assert _statuses(_ci(fp16, out)) == {"fp16.yaml": "built"}


def test_data_changed_during_the_build_is_not_cached_under_the_key_hashed_before(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calibration data rewritten while the build runs, then put back (a checkout, a sync): the
    engine was calibrated on other bytes than the key hashed, so it is not stored under that key
    (it was, and every later run called it unchanged). Written here at the moment a concurrent
    writer would, inside the build; nothing else is replaced."""
    import trtforge.build

    data = project / "data" / "batch0.npy"
    original = data.read_bytes()
    real_build = trtforge.build.build_spec

    def build_while_data_changes(*args: Any, **kwargs: Any) -> Any:
        np.save(data, np.full((8, 3, 16, 16), 9.0, dtype=np.float32))
        try:
            return real_build(*args, **kwargs)
        finally:
            data.write_bytes(original)

    monkeypatch.setattr(trtforge.build, "build_spec", build_while_data_changes)
    out, cache = tmp_path / "out", tmp_path / "cache"
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(cache))
    first = runner.invoke(app, ["ci", str(project / "int8.yaml"), "--out", str(out), "--json"])
    assert first.exit_code == 0, first.stderr
    assert f"{data} changed during the build: not cached" in first.stderr
    assert not (cache / "builds").is_dir() or not any((cache / "builds").iterdir())
    monkeypatch.setattr(trtforge.build, "build_spec", real_build)
    assert _statuses(_ci(project / "int8.yaml", out)) == {"int8.yaml": "built"}
    assert _statuses(_ci(project / "int8.yaml", out)) == {"int8.yaml": "unchanged"}


def test_workers_whose_ctrl_c_is_ignored_are_stopped_by_sigterm(tmp_path: Path) -> None:
    """A script's background ``trtforge ci &`` ignores Ctrl-C, and so do its workers: stopping them
    with SIGINT (on SIGTERM, as CI systems cancel a job) did nothing until they were killed after
    STOP_GRACE_S. They get SIGTERM, which a worker handles as its Ctrl-C."""
    import multiprocessing

    from trtforge import ci

    context = multiprocessing.get_context("fork")
    handling = context.Event()

    def worker() -> None:
        signal.signal(signal.SIGTERM, ci._terminate_as_interrupt)  # as ci._worker sets it
        try:
            handling.set()
            while True:
                time.sleep(0.01)
        except KeyboardInterrupt:
            os._exit(130)

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process = context.Process(target=worker)
        process.start()
        assert handling.wait(30)
        started = time.monotonic()
        ci._stop([process], ci.CiOptions(out_dir=tmp_path, cache_dir=tmp_path))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert process.exitcode == 130 and time.monotonic() - started < ci.STOP_GRACE_S


def test_ctrl_c_in_a_c_extension_s_import_stops_the_run(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in ``import onnxruntime`` during a spec's build in ``ci``'s own process (``--jobs 1``;
    ImportError raised from the KeyboardInterrupt) was that spec's "internal error", exit 1, and the
    run went on: it stops it, 130."""
    import trtforge.build
    from trtforge.cli.common import INTERRUPTED

    def interrupted_import(*args: Any, **kwargs: Any) -> Any:
        raise ImportError("initialization failed") from KeyboardInterrupt()

    monkeypatch.setattr(trtforge.build, "build_spec", interrupted_import)
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / "cache"))
    result = runner.invoke(app, ["ci", str(project / "fp32.yaml"), "--out", str(tmp_path / "out"), "--jobs", "1"])
    assert (result.exit_code, result.stderr.splitlines()[-1]) == (130, INTERRUPTED), result.stderr


@pytest.mark.parametrize("model", ["missing.onnx", "fifo.onnx"])
def test_a_model_that_is_missing_or_not_a_file_is_the_specs_error(tmp_path: Path, model: str) -> None:
    """Exit 2 at the spec's ``model:`` line, before any file is opened (a FIFO's graph would block)."""
    os.mkfifo(tmp_path / "fifo.onnx")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: m\nprecision: fp32\nmodel: {model}\ntargets: ['8.6']\n{PROFILE}")
    result = runner.invoke(app, ["ci", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.stderr
    assert f"{spec}:3: model {tmp_path / model}:" in result.stderr and "check 'model:' in the spec" in result.stderr


def test_a_build_into_the_folder_its_data_glob_lists_is_cached(project: Path, tmp_path: Path) -> None:
    """``--out`` is the folder a calibration glob lists: the build's own artifact changes that
    folder's stamp, which is no input written (every run warned and built again)."""
    spec = project / "int8.yaml"
    spec.write_text(spec.read_text().replace("data/*.npy", "'*.npy'"))
    for batch in (project / "data").iterdir():
        batch.rename(project / batch.name)
    first = runner.invoke(app, ["ci", str(spec), "--out", str(project), "--json"])
    assert first.exit_code == 0 and "changed during the build" not in first.stderr, first.stderr
    assert _statuses(_ci(spec, project)) == {"int8.yaml": "unchanged"}


def test_a_data_file_added_during_the_build_is_seen(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file the data glob matches, added while the build runs: the build may have read it, the
    key did not hash it (the glob is expanded again after the build)."""
    import trtforge.build

    real_build = trtforge.build.build_spec
    added = project / "data" / "batch9.npy"

    def build_while_data_is_added(*args: Any, **kwargs: Any) -> Any:
        np.save(added, np.ones((8, 3, 16, 16), dtype=np.float32))
        return real_build(*args, **kwargs)

    monkeypatch.setattr(trtforge.build, "build_spec", build_while_data_is_added)
    out, cache = tmp_path / "out", tmp_path / "cache"
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(cache))
    result = runner.invoke(app, ["ci", str(project / "int8.yaml"), "--out", str(out)])
    assert result.exit_code == 0 and f"{added} changed during the build: not cached" in result.stderr
    assert not (cache / "builds").is_dir() or not any((cache / "builds").iterdir())
    monkeypatch.setattr(trtforge.build, "build_spec", real_build)
    assert _statuses(_ci(project / "int8.yaml", out)) == {"int8.yaml": "built"}


def test_a_cache_that_cannot_be_written_costs_the_caching_not_the_build(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``builds`` in the cache folder is a file: the committed build is reported built (exit 0)
    with a warning, not as an internal error (exit 1) of a spec whose artifact is in ``--out``."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "builds").write_text("x")
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(cache))
    out = tmp_path / "out"
    result = runner.invoke(app, ["ci", str(project / "fp32.yaml"), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    assert _statuses(json.loads(result.stdout)) == {"fp32.yaml": "built"}
    assert "conv: not cached (" in result.stderr and "the artifact itself is committed" in result.stderr
    assert next(out.glob("conv-fp32-*.engine")).is_file()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_cache_folder_that_is_a_file_fails_only_the_specs_that_need_it(
    project: Path, tmp_path: Path, jobs: str
) -> None:
    """``--cache-dir`` a file: the fp32 spec builds, with a warning (the cache only saves it time);
    the fp16 and int8 specs, whose precision step keeps its graphs there, are each exit 2 naming it.
    With one job they were exit 1, "internal error (NotADirectoryError ...)"; with more, the whole
    run was exit 2 before any spec, as the workers handed their results back through the cache."""
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["ci", str(project), "--out", str(out), "--jobs", jobs, "--cache-dir", str(cache), "--json"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.stderr
    results = {Path(r["spec"]).name: r for r in json.loads(result.stdout)["results"]}
    assert {name: (r["status"], r["exit_code"]) for name, r in results.items()} == {
        "fp16.yaml": ("failed", 2),
        "fp32.yaml": ("built", 0),
        "int8.yaml": ("failed", 2),
    }
    refused = f"cache directory {cache} is a file; pass --cache-dir with a writable folder"
    assert results["fp16.yaml"]["message"] == results["int8.yaml"]["message"] == refused
    assert "conv: not cached (" in result.stderr and next(out.glob("conv-fp32-*.engine")).is_file()
    assert cache.read_text() == "not a folder"


def test_a_full_cache_folder_costs_the_caching_not_the_build(
    project: Path, tmp_path: Path, small_disk: Callable[[str], Path]
) -> None:
    """A cache folder on a full disk: the build is committed, and reported built with a warning.
    The workers handed their results back through a file in the cache: that write failed, and the
    spec whose artifact was in ``--out`` was exit 1 ("the build process exited with code 1 before
    reporting a result", after the worker's traceback)."""
    cache = small_disk("64k")
    filler = os.open(cache / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError, match="No space left on device"):
            while True:
                os.write(filler, bytes(4096))
    finally:
        os.close(filler)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["ci", str(project / "fp32.yaml"), "--out", str(out), "--jobs", "2", "--cache-dir", str(cache), "--json"]
    )
    assert result.exit_code == 0 and "Traceback" not in result.stderr, result.stderr
    assert _statuses(json.loads(result.stdout)) == {"fp32.yaml": "built"}
    assert "conv: not cached (No space left on device: " in result.stderr, result.stderr
    assert next(out.glob("conv-fp32-*.engine")).is_file()


def test_a_project_below_a_dot_folder_or_named_through_dot_dot_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only folders below the one searched are skipped when hidden: a project under
    ``~/.jenkins/workspace`` or named as ``../configs`` has specs (it had none)."""
    from trtforge.project import discover

    root = tmp_path / ".jenkins" / "workspace" / "project"
    (root / ".hidden").mkdir(parents=True)
    models.conv_net(root / "conv.onnx")
    spec = f"name: conv\nprecision: fp32\nmodel: conv.onnx\ntargets: ['8.6']\n{PROFILE}"
    (root / "fp32.yaml").write_text(spec)
    (root / ".hidden" / "ignored.yaml").write_text(spec)
    assert [path.name for path in discover([root]).specs] == ["fp32.yaml"]
    (root / "sub").mkdir()
    monkeypatch.chdir(root / "sub")
    assert [path.name for path in discover([Path("..")]).specs] == ["fp32.yaml"]


def test_a_replay_from_another_folder_reports_paths_from_that_folder(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record of an unchanged run answers the same command line run from the same folder: its
    report's paths are relative to it (a replay from elsewhere gave paths that were not there).
    Files count as settled at once here: a record is made only of files that had settled."""
    from trtforge import digests

    monkeypatch.setattr(digests, "SETTLE_NS", 0)
    monkeypatch.chdir(tmp_path)
    _ci(project / "fp32.yaml", Path("out"))
    assert _statuses(_ci(project / "fp32.yaml", Path("out"))) == {"fp32.yaml": "unchanged"}  # recorded
    assert list((Path(os.environ["TRTFORGE_CACHE_DIR"]) / "ci-reruns").iterdir())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    (result,) = _ci(project / "fp32.yaml", Path("../out"))["results"]
    assert result["status"] == "unchanged" and Path(result["engine"]).is_file(), result["engine"]


def test_deleted_artifact_is_restored_from_the_cache(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _ci(project, out)
    engine = next(out.glob("conv-fp32-*.engine"))
    engine.unlink()
    assert _statuses(_ci(project, out))["fp32.yaml"] == "restored"
    assert read_manifest(engine).artifact.sha256 and engine.is_file()


def test_a_failed_gate_is_reported_with_its_time_and_verdict(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "fp16.yaml").write_text(
        (project / "fp16.yaml").read_text() + "accuracy: {tolerances: {'*': {max_abs: 1.0e-12}}}\n"
    )
    summary, junit = tmp_path / "summary.md", tmp_path / "junit.xml"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = runner.invoke(
        app, ["ci", str(project / "fp16.yaml"), "--out", str(tmp_path / "out"), "--junit", str(junit)]
    )
    assert result.exit_code == 4, result.stderr
    (suite,) = JUnitXml.fromfile(str(junit))
    build, accuracy = suite
    assert build.time > 0 and not build.result  # the time the build (and its gate) took, not 0.0
    assert [type(r).__name__ for r in accuracy.result] == ["Failure"]
    assert "| conv | failed | failed (" in summary.read_text()  # the candidate judged: the engine or a simulation


@models.without_gpu
def test_simulated_verdicts_say_so_and_what_was_emulated_in_every_ci_report(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed gate's row said "failed" with nothing of the candidate ("passed (simulated)" for a
    pass), ``--json`` gave it no accuracy at all, and no report said what a simulation emulated.
    Each row names its candidate; the table and the step summary end with what each emulated."""
    from trtforge.ci import markdown_cell
    from trtforge.mixedprecision import FP16_STORAGE, INT8_QDQ

    (project / "fp16.yaml").write_text(
        (project / "fp16.yaml").read_text() + "accuracy: {tolerances: {'*': {max_abs: 1.0e-12}}}\n"
    )
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    specs = [str(project / "fp16.yaml"), str(project / "int8.yaml")]
    result = runner.invoke(app, ["ci", *specs, "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 4, result.stderr
    failed, built = json.loads(result.stdout)["results"]
    assert failed["status"] == "failed" and failed["accuracy"]["passed"] is False
    assert failed["accuracy"]["candidate"] == "simulated" and failed["accuracy"]["emulation"] == FP16_STORAGE
    assert failed["accuracy"]["report"].endswith(".rejected.accuracy.json")
    int8_label = built["accuracy"]["emulation"]
    assert int8_label.startswith(INT8_QDQ)
    notes = {
        "fp16.yaml": f"simulated (fp16.yaml): no engine ran; emulated: {FP16_STORAGE}",
        "int8.yaml": f"simulated (int8.yaml): no engine ran; emulated: {int8_label}",
    }
    text = summary.read_text()
    assert "| conv | failed | failed (simulated) |" in text and "| conv | built | passed (simulated) |" in text
    assert all(f"\n- {markdown_cell(note)}\n" in text for note in notes.values()), text
    assert "  failed (simulated)  " in result.stderr and "  passed (simulated)  " in result.stderr
    assert all(note in result.stderr for note in notes.values()), result.stderr


def test_an_edited_manifest_is_never_unchanged_and_sign_keeps_it(project: Path, tmp_path: Path) -> None:
    """ci records the manifest its build wrote: one edited by hand (a GPU list, a build time), or whose accuracy
    summary trtforge verify rewrote, is restored from the cache (ci reports the build's gate), while
    the signature trtforge sign adds is its own."""
    out = tmp_path / "out"
    _ci(project, out)
    engine = next(out.glob("conv-fp32-*.engine"))
    manifest_file = engine.with_name(engine.name.replace(".engine", ".manifest.json"))
    built = manifest_file.read_text()
    document = json.loads(built)
    document["gpu"]["compute_capabilities"] = ["7.5"]  # renames the artifact the manifest describes
    manifest_file.write_text(json.dumps(models.retag(document)))
    result = runner.invoke(app, ["ci", str(project), "--out", str(out), "--json"])
    assert _statuses(json.loads(result.stdout))["fp32.yaml"] == "restored"
    assert "is not the file this manifest describes" in result.stderr and manifest_file.read_text() == built
    document = json.loads(built)
    document["build"]["seconds"] += 1.0
    manifest_file.write_text(json.dumps(document))
    result = runner.invoke(app, ["ci", str(project), "--out", str(out), "--json"])
    assert _statuses(json.loads(result.stdout))["fp32.yaml"] == "restored"
    assert "manifest is not the one its build wrote" in result.stderr and manifest_file.read_text() == built
    time.sleep(1.0)  # the summary's checked_utc is in seconds: verify's is another
    verified = runner.invoke(app, ["verify", str(project / "fp32.yaml"), "--out", str(out), "--json"])
    assert verified.exit_code == 0 and json.loads(verified.stdout)["results"][0]["manifest_updated"] is True
    assert manifest_file.read_text() != built
    assert _statuses(_ci(project, out))["fp32.yaml"] == "restored" and manifest_file.read_text() == built
    keys = tmp_path / "key"
    assert runner.invoke(app, ["keygen", str(keys)]).exit_code == 0
    assert runner.invoke(app, ["sign", str(engine), "--key", str(keys)]).exit_code == 0
    signed = manifest_file.read_text()
    assert signed != built and '"signature"' in signed
    assert _statuses(_ci(project, out))["fp32.yaml"] == "unchanged" and manifest_file.read_text() == signed
    # and the attestation trtforge sign --attest adds: it covers the manifest as it is, and its
    # signer is a key the run trusts (ci restored the unsigned build's set, deleting both); an
    # unsigned run trusts no key of its own (tests/test_ci_attestation.py: without --trusted-key)
    assert runner.invoke(app, ["sign", str(engine), "--key", str(keys), "--attest"]).exit_code == 0
    attested = manifest_file.read_text()
    attestation = engine.with_name(engine.name.replace(".engine", ".intoto.jsonl"))
    assert attestation.is_file()
    trusted = ("--trusted-key", f"{keys}.pub")
    assert _statuses(_ci(project, out, *trusted))["fp32.yaml"] == "unchanged"
    assert manifest_file.read_text() == attested and attestation.is_file()
    attestation.write_text("{}")  # no longer an attestation of this manifest: the build's set comes back
    assert _statuses(_ci(project, out, *trusted))["fp32.yaml"] == "restored" and not attestation.exists()


def test_an_artifact_is_its_records_build_only_where_every_fact_agrees(project: Path, tmp_path: Path) -> None:
    """What makes ci take an artifact for a cached build (``artifact_problem``, ``build_mismatch``):
    a remote entry's key and record are its pusher's word, so each fact of the artifact is compared
    on its own: the record's engine digest, the spec's name and precision, the .onnx, the spec file,
    the TensorRT flavor and version. Any one that differs is named."""
    from trtforge.ci import CacheRecord, artifact_problem, build_inputs, build_key, build_mismatch
    from trtforge.manifest import build_facts_sha256
    from trtforge.spec import load_spec

    spec_path, out = project / "fp32.yaml", tmp_path / "out"
    result = runner.invoke(app, ["build", str(spec_path), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    engine = next(out.glob("*.engine"))
    manifest, spec = read_manifest(engine), load_spec(spec_path)
    inputs = build_inputs(spec, manifest.tensorrt.flavor, manifest.tensorrt.version)
    record = CacheRecord(
        key=build_key(inputs),
        engine=engine.name,
        sha256=manifest.artifact.sha256,
        manifest_facts=build_facts_sha256(manifest),
    )
    assert build_mismatch(manifest, spec, inputs) is None
    assert artifact_problem(engine, spec, inputs, record) is None
    another = record.model_copy(update={"sha256": "0" * 64})
    assert artifact_problem(engine, spec, inputs, another) == (
        f"{engine.name} is another build (its sha256 is not the cached one's)"
    )
    flavor, version = manifest.tensorrt.flavor, manifest.tensorrt.version
    for other_spec, other_inputs, said in (
        (spec.model_copy(update={"name": "other"}), inputs, "its name is 'conv', not 'other'"),
        (spec.model_copy(update={"precision": "fp16"}), inputs, "its precision is 'fp32', not 'fp16'"),
        (spec, {**inputs, "spec": "0" * 64}, "its spec_sha256 is "),
        (spec, {**inputs, "backend": "tensorrt"}, f"its tensorrt flavor is {flavor!r}, not 'tensorrt'"),
        (spec, {**inputs, "backend_version": "0.1"}, f"its tensorrt version is {version!r}, not '0.1'"),
    ):
        found = build_mismatch(manifest, other_spec, other_inputs)
        assert found is not None and found.startswith(said), found
        assert artifact_problem(engine, other_spec, other_inputs, record) == f"{engine.name} is another build ({found})"
    models.conv_net(project / "conv.onnx", seed=1)  # other weights in the .onnx the spec names
    found = build_mismatch(manifest, spec, inputs)
    assert found is not None and found.startswith("its onnx_sha256 is "), found


def test_junit_and_github_step_summary(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "broken.yaml").write_text("name: broken\nmodel: conv.onnx\nprecison: fp16\n")
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    junit = tmp_path / "junit.xml"
    result = runner.invoke(app, ["ci", str(project), "--out", str(tmp_path / "out"), "--junit", str(junit)])
    assert result.exit_code == 2  # the broken spec; the others still build
    cases = [
        (case.classname, case.name, [type(r).__name__ for r in case.result])
        for suite in JUnitXml.fromfile(str(junit))
        for case in suite
    ]
    assert ("broken.broken", "build", ["Error"]) in cases
    assert ("broken.broken", "accuracy", ["Skipped"]) in cases
    assert sum(1 for _, name, results in cases if name == "build" and not results) == 3
    # the fp32 gate compared nothing (identical candidate): skipped, never a plain pass
    assert ("conv.fp32", "accuracy", ["Skipped"]) in cases and ("conv.fp16", "accuracy", []) in cases
    # one model's specs are told apart: its name, then its spec file
    assert {classname for classname, _, _ in cases} == {"broken.broken", "conv.fp16", "conv.fp32", "conv.int8"}
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "### trtforge ci: exit 2" in text
    assert "| broken | failed |" in text


def test_step_summary_cells_render_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A standard Markdown parser (markdown-it-py, GFM tables) reads the summary back: each row has
    five cells, whose rendered text is the message as trtforge wrote it. Before: a '|' in a path
    split its row, '<missing>' was an HTML tag GitHub drops, '*x*' italics."""
    import html
    import re

    from markdown_it import MarkdownIt

    spec = tmp_path / "x|y.yaml"
    spec.write_text('name: ok\nmodel: "<missing>_*x*`a`.onnx"\ntargets: ["8.6"]\n')
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = runner.invoke(app, ["ci", str(spec), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 2, result.stderr
    (row,) = json.loads(result.stdout)["results"]
    markdown = MarkdownIt("commonmark").enable("table")
    tokens = markdown.parse(summary.read_text())
    body = tokens[next(i for i, token in enumerate(tokens) if token.type == "tbody_open") :]
    cells = [token.content for token in body if token.type == "inline"]
    rendered = [html.unescape(re.sub(r"<[^>]*>", "", markdown.renderInline(cell))) for cell in cells]
    assert rendered == ["ok", "failed", "-", row["message"], f"{row['seconds']:.1f}"]
    assert "<missing>_*x*`a`.onnx" in row["message"] and str(spec) in row["message"]


def test_most_severe_exit_code(project: Path, tmp_path: Path) -> None:
    models.unsupported_op(project / "bad.onnx")
    (project / "parser.yaml").write_text("name: parser\nmodel: bad.onnx\n")
    (project / "typo.yaml").write_text("name: typo\nmodel: conv.onnx\nprecison: fp16\n")
    result = runner.invoke(app, ["ci", str(project), "--out", str(tmp_path / "out")])
    assert result.exit_code == 3


@pytest.mark.slow
def test_two_concurrent_runs_share_one_output_folder(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "trtforge", "ci", str(project), "--out", str(out), "--json"]
    first, second = (
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    )
    outputs = [process.communicate(timeout=300) for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    statuses = [sorted(_statuses(json.loads(stdout)).values()) for stdout, _ in outputs]
    assert sorted(statuses[0] + statuses[1]).count("built") == 3  # each spec built exactly once
    engines = sorted(out.glob("*.engine"))
    assert len(engines) == 3
    for engine in engines:
        from trtforge.digests import sha256_file

        assert sha256_file(engine) == read_manifest(engine).artifact.sha256
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_an_unchanged_rerun_refuses_a_signing_key_that_cannot_sign(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept on purpose: ``$TRTFORGE_SIGNING_KEY`` is loaded before the replay, whose record is keyed on
    the key's id, so a job meant to sign whose key went missing or bad fails (exit 2, one line) even
    when nothing would be rebuilt, instead of passing without the key it must sign with."""
    spec, out = project / "fp32.yaml", tmp_path / "out"
    monkeypatch.setenv(SIGNING_KEY_ENV, str(generate_keypair(tmp_path / "ci.key").private_path))
    assert _statuses(_ci(spec, out)) == {"fp32.yaml": "built"}
    assert _statuses(_ci(spec, out)) == {"fp32.yaml": "unchanged"}
    (tmp_path / "bad.key").write_text("not a key")
    for key in (tmp_path / "gone.key", tmp_path / "bad.key"):
        monkeypatch.setenv(SIGNING_KEY_ENV, str(key))
        result = runner.invoke(app, ["ci", str(spec), "--out", str(out)])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("error: ") and str(key) in result.stderr


def test_matrix_for_a_sample_project(tmp_path: Path) -> None:
    root = tmp_path / "specs"
    root.mkdir()
    models.conv_net(root / "conv.onnx")
    (root / "rtx.yaml").write_text(f"name: small\nmodel: conv.onnx\nbackend: tensorrt-rtx\n{PROFILE}")
    (root / "trt.yaml").write_text(
        f"name: big\nmodel: conv.onnx\nprecision: fp16\nbackend: tensorrt\ntargets: [sm_86, '9.0']\n{PROFILE}"
    )
    (root / "trtforge.yaml").write_text("runners:\n  cpu: ubuntu-latest\n  '8.6': [gpu, a10]\n  sm90: [gpu, h100]\n")
    result = runner.invoke(app, ["matrix", str(root), "--format", "github"])
    assert result.exit_code == 0, result.stderr
    include = json.loads(result.stdout)["include"]
    assert [(e["id"], e["backend"], e["gpu"], e["runner"]) for e in include] == [
        ("small-fp32-cpu", "tensorrt-rtx", "cpu", ["ubuntu-latest"]),
        ("big-fp16-sm86", "tensorrt", "8.6", ["gpu", "a10"]),
        ("big-fp16-sm90", "tensorrt", "9.0", ["gpu", "h100"]),
    ]
    # each GPU job builds the spec for its own GPU alone (enterprise TensorRT builds on the GPU it runs on)
    assert [e["ci"] for e in include] == [
        f"trtforge ci {root / 'rtx.yaml'} --backend tensorrt-rtx",
        f"trtforge ci {root / 'trt.yaml'} --backend tensorrt --cc 8.6",
        f"trtforge ci {root / 'trt.yaml'} --backend tensorrt --cc 9.0",
    ]
    # every job installs the trtforge that planned it, with its backend's extra
    assert [e["install"] for e in include] == [
        f"pip install 'trtforge[rtx]=={__version__}'",
        *[f"pip install 'trtforge[tensorrt]=={__version__}' --extra-index-url https://pypi.nvidia.com"] * 2,
    ]
    gitlab = yaml.safe_load(runner.invoke(app, ["matrix", str(root), "--format", "gitlab"]).stdout)
    assert gitlab["build:big-fp16-sm90"]["tags"] == ["gpu", "h100"]
    assert gitlab["build:big-fp16-sm90"]["script"] == [
        f"trtforge ci {root / 'trt.yaml'} --backend tensorrt --cc 9.0 --out out --junit out/junit-big-fp16-sm90.xml"
    ]


def test_matrix_for_github_refuses_more_jobs_than_one_github_matrix_runs(tmp_path: Path) -> None:
    """GitHub Actions runs at most 256 jobs from one matrix and fails the workflow beyond: 257 jobs
    are exit 2 before anything is printed; json and gitlab, which have no such limit, print them."""
    for index in range(257):
        (tmp_path / f"s{index:03d}.yaml").write_text(f"name: m{index}\nmodel: conv.onnx\nbackend: tensorrt-rtx\n")
    result = runner.invoke(app, ["matrix", str(tmp_path), "--format", "github"])
    assert result.exit_code == 2 and result.stdout == "", result.stderr
    assert result.stderr.count("\n") == 1 and "257 jobs" in result.stderr and "at most 256" in result.stderr
    for other in ("json", "gitlab"):
        assert runner.invoke(app, ["matrix", str(tmp_path), "--format", other]).exit_code == 0
    (tmp_path / "s256.yaml").unlink()
    result = runner.invoke(app, ["matrix", str(tmp_path), "--format", "github"])
    assert result.exit_code == 0 and len(json.loads(result.stdout)["include"]) == 256, result.stderr


def test_ci_cc_builds_one_gpu_of_a_specs_targets(project: Path, tmp_path: Path) -> None:
    """What a GPU job of the matrix runs: the spec for that GPU alone (here TensorRT-RTX stands in
    for enterprise TensorRT, which needs the GPU); a GPU the spec does not target is refused."""
    spec = project / "fp32.yaml"
    spec.write_text(spec.read_text().replace("targets: ['8.6']", "targets: ['8.6', '8.9']"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["ci", str(spec), "--out", str(out), "--cc", "sm_89", "--json"])
    assert result.exit_code == 0, result.stderr
    (engine,) = out.glob("*.engine")
    assert "-sm89-" in engine.name and read_manifest(engine).gpu.compute_capabilities == ["8.9"]
    refused = runner.invoke(app, ["ci", str(spec), "--out", str(out), "--cc", "7.5"])
    assert refused.exit_code == 2 and "--cc 7.5 is not among this spec's targets (8.6, 8.9)" in refused.stderr


def test_a_spec_narrowed_to_one_gpu_keeps_its_origin(project: Path) -> None:
    """``for_cc`` narrows with ``model_copy``, which keeps the spec's private origin: its build key
    and error messages still name the spec file and its lines."""
    from trtforge.ci import for_cc
    from trtforge.spec import load_spec

    spec = project / "fp32.yaml"
    spec.write_text(spec.read_text().replace("targets: ['8.6']", "targets: ['8.6', '8.9']"))
    loaded = load_spec(spec)
    narrowed = for_cc(loaded, "sm_89")
    assert narrowed.targets == ["8.9"] and loaded.targets == ["8.6", "8.9"]
    assert narrowed.origin is loaded.origin and narrowed.origin.where("targets") == f"{spec.resolve()}:4"


def test_matrix_names_a_missing_runner(tmp_path: Path) -> None:
    root = tmp_path / "specs"
    root.mkdir()
    (root / "trt.yaml").write_text("name: big\nmodel: conv.onnx\nbackend: tensorrt\ntargets: ['8.9']\n")
    (root / "trtforge.yaml").write_text("runners:\n  '8.6': [gpu]\n")
    result = runner.invoke(app, ["matrix", str(root)])
    assert result.exit_code == 2
    assert "target 8.9 has no runner in trtforge.yaml" in result.stderr


def test_project_file_unknown_key(tmp_path: Path) -> None:
    (tmp_path / "trtforge.yaml").write_text("specs: ['*.yaml']\nrunnners: {}\n")
    result = runner.invoke(app, ["matrix", str(tmp_path)])
    assert result.exit_code == 2 and "did you mean 'runners'" in result.stderr
    assert f"{tmp_path / 'trtforge.yaml'}:2: unknown key 'runnners'" in result.stderr  # file and line
    (tmp_path / "trtforge.yaml").write_text("specs: ['*.yaml']\nruns: {}\nspecs: []\n")
    result = runner.invoke(app, ["matrix", str(tmp_path)])
    assert result.exit_code == 2 and "trtforge.yaml:3: key 'specs' is given twice (first at line 1)" in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Path.glob raised NotImplementedError / ValueError on these: exit 1, an "internal error"
        ("specs: ['*.yaml', '/tmp/x/*.yaml']\n", ":1: key 'specs.1': '/tmp/x/*.yaml' is not a pattern relative"),
        ("specs:\n  - ''\n", ":2: key 'specs.0': '' is not a pattern relative to the project folder"),
        ("specs: ['.']\n", ":1: key 'specs.0': '.' is not a pattern relative to the project folder"),
        ("specs: ['a/**b/*.yaml']\n", ":1: key 'specs.0': 'a/**b/*.yaml' is not a pattern relative to the project"),
        # two spellings of one GPU: the second replaced the first's runners without a word
        (
            "runners:\n  '8.6': [a]\n  cpu: [c]\n  sm86: [b]\n",
            ":4: key 'runners.sm86' is GPU 8.6 again (given as '8.6' at line 2); keep one",
        ),
        (
            "runners:\n  cpu: [c]\n  8.6: [a]\n",
            ":3: YAML reads key 'runners.8.6' as 8.6, not text: put the key in quotes",
        ),
        # the publish job found out; and its URI went unquoted into the job's shell line
        ("runners: {}\npublish_to: ftp://x\n", ":2: key 'publish_to': 'ftp://x': unknown registry scheme"),
        ("publish_to: 'oci://reg/m; echo pwned'\n", ":1: key 'publish_to': 'oci://reg/m; echo pwned': 'm; echo"),
        # taken as an empty project
        ("false\n", ":1: not a mapping: a project file holds settings"),
        ("0\n", ":1: not a mapping: a project file holds settings"),
        # a label no runner carries: the job would wait forever (it was accepted)
        ("runners:\n  '8.6': ''\n", ":2: key 'runners.8.6': a runner label is blank (['']): no runner carries one"),
        ("runners:\n  '8.6': [gpu, '  ']\n", ":2: key 'runners.8.6': a runner label is blank (['gpu', '  '])"),
    ],
)
def test_a_bad_project_file_is_one_line_at_its_line(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "trt.yaml").write_text("name: big\nmodel: conv.onnx\nbackend: tensorrt\ntargets: ['8.6']\n")
    (tmp_path / "trtforge.yaml").write_text(text)
    result = runner.invoke(app, ["matrix", str(tmp_path), "--format", "gitlab"])
    assert result.exit_code == 2 and not result.stdout, result.stderr
    assert result.stderr.startswith(f"error: {tmp_path / 'trtforge.yaml'}{expected}"), result.stderr
    assert result.stderr.count("\n") == 1


def test_matrix_quotes_every_argument_of_its_shell_lines(tmp_path: Path) -> None:
    """A job runs ``ci`` (and GitLab's publish job its loop) as a shell line: a spec file or
    registry path with a space or a ``$`` is one argument, as written, not split or expanded."""
    import shlex

    spec = tmp_path / "my spec$HOME.yaml"
    spec.write_text("name: big\nmodel: conv.onnx\nbackend: tensorrt\ntargets: ['8.6']\n")
    (tmp_path / "trtforge.yaml").write_text("runners: {'8.6': [gpu]}\npublish_to: dir://published models\n")
    result = runner.invoke(app, ["matrix", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    [entry] = json.loads(result.stdout)["entries"]
    assert entry["spec"] == str(spec)
    assert shlex.split(entry["ci"]) == ["trtforge", "ci", str(spec), "--backend", "tensorrt", "--cc", "8.6"]
    gitlab = yaml.safe_load(runner.invoke(app, ["matrix", str(tmp_path), "--format", "gitlab"]).stdout)
    [script] = gitlab["build:big-fp32-sm86"]["script"]
    assert shlex.split(script)[2] == str(spec)
    [publish] = gitlab["publish"]["script"]
    assert "--to 'dir://published models'; done" in publish


def test_matrix_never_lets_ci_read_a_spec_name_as_an_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``-digits.yaml`` quoted is one word, which ``ci`` still read as options (exit 2): it is
    written ``./-digits.yaml``, and that command line builds."""
    import shlex

    monkeypatch.chdir(tmp_path)
    models.conv_net(tmp_path / "conv.onnx")
    (tmp_path / "-digits.yaml").write_text(f"name: small\nmodel: conv.onnx\nbackend: tensorrt-rtx\n{PROFILE}")
    (tmp_path / "trtforge.yaml").write_text("runners: {cpu: [linux]}\n")
    result = runner.invoke(app, ["matrix", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    [entry] = json.loads(result.stdout)["entries"]
    command = shlex.split(entry["ci"])
    assert command[:3] == ["trtforge", "ci", "./-digits.yaml"], entry["ci"]
    built = runner.invoke(app, [*command[1:], "--out", str(tmp_path / "out"), "--json"])
    assert built.exit_code == 0, built.stderr


def test_project_install_replaces_every_jobs_install_command(tmp_path: Path) -> None:
    """trtforge.yaml's ``install:`` (a mirror, a fork) is what every generated job runs, the
    publish job included; a value that is not one command line is refused with its line."""
    models.conv_net(tmp_path / "conv.onnx")
    (tmp_path / "rtx.yaml").write_text(f"name: small\nmodel: conv.onnx\nbackend: tensorrt-rtx\n{PROFILE}")
    mirror = "pip install 'trtforge[rtx]==0.1.0' --index-url https://pypi.example.com/simple"
    project_file = tmp_path / "trtforge.yaml"
    project_file.write_text(f'publish_to: oci://registry.example.com/models\ninstall: "{mirror}"\n')
    github = runner.invoke(app, ["matrix", str(tmp_path), "--format", "github"])
    assert github.exit_code == 0, github.stderr
    assert [entry["install"] for entry in json.loads(github.stdout)["include"]] == [mirror]
    gitlab = yaml.safe_load(runner.invoke(app, ["matrix", str(tmp_path), "--format", "gitlab"]).stdout)
    assert gitlab["build:small-fp32-cpu"]["before_script"] == [mirror]
    assert gitlab["publish"]["before_script"] == [mirror]

    project_file.write_text("specs: ['*.yaml']\ninstall: [pip, install, trtforge]\n")
    result = runner.invoke(app, ["matrix", str(tmp_path)])
    assert result.exit_code == 2 and f"{project_file}:2: key 'install'" in result.stderr
    project_file.write_text("install: |\n  pip install a\n  pip install b\n")
    result = runner.invoke(app, ["matrix", str(tmp_path)])
    assert result.exit_code == 2 and "one command on one line" in result.stderr
    project_file.write_text("instal: pip install trtforge\n")
    result = runner.invoke(app, ["matrix", str(tmp_path)])
    assert result.exit_code == 2 and "did you mean 'install'" in result.stderr


def test_generated_publish_job_pins_this_version(tmp_path: Path) -> None:
    result = runner.invoke(app, ["matrix", str(REPO / "configs"), "--format", "gitlab"])
    assert result.exit_code == 0, result.stderr
    assert yaml.safe_load(result.stdout)["publish"]["before_script"] == [f"pip install 'trtforge=={__version__}'"]


@pytest.mark.parametrize("pipeline", sorted((REPO / "examples" / "ci").glob("*.yml")), ids=lambda p: p.name)
def test_example_pipelines_pin_this_version(pipeline: Path) -> None:
    """An unpinned install would run whatever trtforge is newest when the pipeline runs."""
    import re

    installs = [line for line in pipeline.read_text().splitlines() if "pip install" in line]
    assert installs, "the pipeline installs trtforge"
    for line in installs:
        assert re.search(rf"'trtforge(\[\w+\])?=={re.escape(__version__)}'", line), line


def _commands_in(text: str) -> list[list[str]]:
    import shlex

    found = []
    for line in text.splitlines():
        if "trtforge " not in line or "pip install" in line:
            continue
        fragment = line[line.index("trtforge ") :].split(";")[0].split(">")[0].split(")")[0].strip().strip('"')
        found.append(shlex.split(fragment.replace("${{", "X").replace("}}", "X").replace("$", "X")))
    return found


@pytest.mark.parametrize("pipeline", sorted((REPO / "examples" / "ci").glob("*.yml")), ids=lambda p: p.name)
def test_example_pipelines_parse_and_use_real_commands(pipeline: Path) -> None:
    yaml.safe_load(pipeline.read_text())
    commands = _commands_in(pipeline.read_text())
    assert commands, "the pipeline runs trtforge"
    for argv in commands:
        command = argv[1]
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, f"{pipeline.name}: unknown command {command}"
        for option in (word for word in argv[2:] if word.startswith("--")):
            assert option in result.stdout, f"{pipeline.name}: trtforge {command} has no option {option}"


def test_generated_gitlab_pipeline_uses_real_commands(tmp_path: Path) -> None:
    result = runner.invoke(app, ["matrix", str(REPO / "configs"), "--format", "gitlab"])
    assert result.exit_code == 0, result.stderr
    pipeline = tmp_path / "child.yml"
    pipeline.write_text(result.stdout)
    test_example_pipelines_parse_and_use_real_commands(pipeline)


def _vendor_schema_errors(document: Any, name: str) -> list[str]:
    """What GitLab's or GitHub's own schema for their pipeline files (vendored by check-jsonschema,
    which CI linters run) says is wrong with ``document``."""
    import importlib.resources

    import jsonschema

    schema = json.loads(importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath(name).read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


@pytest.mark.parametrize(
    ("pipeline", "schema"),
    [("github-actions.yml", "github-workflows.json"), ("gitlab-ci.yml", "gitlab-ci.json")],
)
def test_example_pipelines_are_valid_by_their_ci_systems_schemas(pipeline: str, schema: str) -> None:
    from ruamel.yaml import YAML  # YAML 1.2, as GitHub reads a workflow (PyYAML takes its `on:` for True)

    document = YAML(typ="safe").load((REPO / "examples" / "ci" / pipeline).read_text())
    assert _vendor_schema_errors(document, schema) == []


@pytest.mark.parametrize("triton", [None, "24.08"])
def test_generated_gitlab_pipeline_is_valid_by_gitlabs_schema(tmp_path: Path, triton: str | None) -> None:
    """The child pipeline ``matrix --format gitlab`` prints, plain and with a Triton release (the
    jobs then run in its container): valid by GitLab's schema for .gitlab-ci.yml."""
    project = tmp_path / "configs"
    shutil.copytree(REPO / "configs", project)
    for spec in project.glob("digits-*.yaml"):
        spec.write_text(spec.read_text().replace("../calibration", str(REPO / "calibration")))
    (project / "trtforge.yaml").write_text(
        "runners:\n  cpu: [ubuntu-latest]\n  '8.6': [gpu, a]\n  '8.9': [gpu, b]\n  '12.0': [gpu, c]\n"
        "publish_to: oci://registry.example.com/models\n"
    )
    extra = ["--triton", triton] if triton else []
    result = runner.invoke(app, ["matrix", str(project), "--format", "gitlab", *extra])
    assert result.exit_code == 0, result.stderr
    document = yaml.safe_load(result.stdout)
    assert any(name.startswith("build:") for name in document) and "publish" in document
    assert _vendor_schema_errors(document, "gitlab-ci.json") == []


def test_remote_cache_shares_builds_between_runners(
    project: Path, tmp_path: Path, oci_registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = oci_registry.uri("tests/ci-remote-cache")
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / "runner-a-cache"))
    first = runner.invoke(
        app, ["ci", str(project), "--out", str(tmp_path / "runner-a"), "--json", "--remote-cache", remote, "--insecure"]
    )
    assert first.exit_code == 0, first.stderr
    assert set(_statuses(json.loads(first.stdout)).values()) == {"built"}, first.stderr

    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / "runner-b-cache"))
    (tmp_path / "runner-b").mkdir()
    for engine in (tmp_path / "runner-a").glob("*.engine"):  # another build's report of the same stem
        (tmp_path / "runner-b" / engine.name.replace(".engine", ".accuracy.json")).write_text("of another build")
    result = runner.invoke(
        app, ["ci", str(project), "--out", str(tmp_path / "runner-b"), "--json", "--remote-cache", remote, "--insecure"]
    )
    # on a failure, both runners' logs: was the entry never stored (runner A) or not found (runner B)?
    logs = f"runner A:\n{first.stderr}\nrunner B:\n{result.stderr}"
    assert result.exit_code == 0, logs
    assert set(_statuses(json.loads(result.stdout)).values()) == {"restored"}, logs
    assert result.stderr.count("restored from the remote build cache") == 3, logs
    gated = 0
    for engine in (tmp_path / "runner-a").glob("*.engine"):
        copy = tmp_path / "runner-b" / engine.name
        assert copy.read_bytes() == engine.read_bytes()
        assert read_manifest(copy) == read_manifest(engine)
        # the remote entry carries the report too: runner-b has runner-a's, not the other build's
        report = engine.with_name(engine.name.replace(".engine", ".accuracy.json"))
        gated += report.is_file()
        assert report.read_bytes() == copy.with_name(report.name).read_bytes()
    assert gated == 3


def test_remote_cache_down_warns_and_builds_locally(project: Path, tmp_path: Path) -> None:

    dead = f"oci://127.0.0.1:{free_port()}/nothing-here"
    result = runner.invoke(
        app, ["ci", str(project / "fp32.yaml"), "--out", str(tmp_path / "out"), "--remote-cache", dead, "--insecure"]
    )
    assert result.exit_code == 0, result.stderr
    assert "remote cache unavailable" in result.stderr
    assert len(list((tmp_path / "out").glob("*.engine"))) == 1


def _own_model(project: Path, seed: int) -> Path:
    """fp32.yaml of ``project`` on a conv model of its own: a registry keeps one blob per content
    for all its repositories, so the damage one test does must not reach another's engine."""
    models.conv_net(project / "conv.onnx", seed=seed)
    return project / "fp32.yaml"


def _remote_run(spec: Path, tmp_path: Path, name: str, remote: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """``ci`` of ``spec`` as the runner ``name`` (a build cache and --out of its own): its status and stderr."""
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / f"{name}-cache"))
    out = tmp_path / name
    result = runner.invoke(app, ["ci", str(spec), "--out", str(out), "--json", "--remote-cache", remote, "--insecure"])
    assert result.exit_code == 0, result.stderr
    return _statuses(json.loads(result.stdout))[spec.name], result.stderr


def _cache_entry(registry: RunningRegistry, repository: str) -> tuple[str, dict]:
    """The digest and document of the one image manifest the remote cache ``repository`` holds."""
    import requests

    (tag,) = requests.get(f"http://{registry.host}/v2/{repository}/tags/list", timeout=10).json()["tags"]
    response = requests.get(
        f"http://{registry.host}/v2/{repository}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    )
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"], response.json()


def _flip_a_byte(blob: Path) -> None:
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))


@pytest.mark.parametrize(("damage", "seed"), [("engine-lost", 401), ("manifest-layer-damaged", 402)])
def test_a_damaged_remote_entry_is_replaced_and_the_next_runner_restores_it(
    damage: str,
    seed: int,
    project: Path,
    tmp_path: Path,
    oci_registry: RunningRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An entry read and proven damaged (a blob the registry lost: HTTP 404; a layer that is not
    its digest's bytes) stayed so, and every runner paid a download and a build: the build that
    found it replaces it, and says so."""
    spec, repository = _own_model(project, seed), f"tests/ci-repair-{damage}"
    remote = oci_registry.uri(repository)
    assert _remote_run(spec, tmp_path, "a", remote, monkeypatch)[0] == "built"
    digest, image = _cache_entry(oci_registry, repository)
    engine_layer, manifest_layer = image["layers"][:2]
    if damage == "engine-lost":
        oci_registry.blob(engine_layer["digest"]).unlink()
    else:
        _flip_a_byte(oci_registry.blob(manifest_layer["digest"]))
    # the rebuild's manifest must differ from the first (its created_utc counts seconds): the same
    # bytes again would be the damaged blob's digest, which no push replaces (the test below)
    time.sleep(1.1)
    status, stderr = _remote_run(spec, tmp_path, "b", remote, monkeypatch)
    assert status == "built" and "is refused" in stderr and "building locally" in stderr, stderr
    said = [line for line in stderr.splitlines() if "replaced" in line]
    assert len(said) == 1 and "conv: replaced the damaged remote cache entry build-" in said[0], stderr
    assert _cache_entry(oci_registry, repository)[0] != digest
    status, stderr = _remote_run(spec, tmp_path, "c", remote, monkeypatch)
    assert status == "restored" and "restored from the remote build cache" in stderr, stderr


def test_an_engine_blob_the_registry_serves_damaged_is_named_and_pushed_again_once_removed(
    project: Path, tmp_path: Path, oci_registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob damaged in the registry's storage stays whatever is pushed (the registry keeps a blob
    by its digest): a build with that very engine says so, instead of replacing the entry to no
    avail; once the blob is removed there, the next build pushes it again."""
    spec, repository = _own_model(project, 403), "tests/ci-repair-engine-damaged"
    remote = oci_registry.uri(repository)
    assert _remote_run(spec, tmp_path, "a", remote, monkeypatch)[0] == "built"
    digest, image = _cache_entry(oci_registry, repository)
    engine_blob = oci_registry.blob(image["layers"][0]["digest"])
    _flip_a_byte(engine_blob)
    status, stderr = _remote_run(spec, tmp_path, "b", remote, monkeypatch)
    assert status == "built" and "is damaged" in stderr and "replaced" not in stderr, stderr
    said = [line for line in stderr.splitlines() if "could not store the build in the remote cache" in line]
    assert len(said) == 1 and f"the registry serves blob {image['layers'][0]['digest'][:19]}… damaged" in said[0]
    assert "remove that blob from the registry's storage" in said[0]
    assert _cache_entry(oci_registry, repository)[0] == digest
    engine_blob.unlink()  # what the warning asks of the registry's operator
    status, stderr = _remote_run(spec, tmp_path, "c", remote, monkeypatch)
    assert status == "built" and "replaced the damaged remote cache entry" in stderr, stderr
    status, stderr = _remote_run(spec, tmp_path, "d", remote, monkeypatch)
    assert status == "restored", stderr


def test_a_remote_entry_that_could_not_be_read_is_never_replaced(
    project: Path, tmp_path: Path, oci_registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry failing for a moment (HTTP 500 on the entry's manifest) proves nothing about the
    entry: the build it cost pushed over it all the same."""
    from registry import faulty_proxy

    spec, repository = _own_model(project, 404), "tests/ci-unreadable-entry"
    remote = oci_registry.uri(repository)
    assert _remote_run(spec, tmp_path, "a", remote, monkeypatch)[0] == "built"
    digest, _ = _cache_entry(oci_registry, repository)
    failing = {f"GET /v2/{repository}/manifests/": (500, b'{"errors": [{"code": "UNKNOWN"}]}')}
    with faulty_proxy(oci_registry.host, failing, once=True) as proxy:
        status, stderr = _remote_run(spec, tmp_path, "b", f"oci://{proxy}/{repository}", monkeypatch)
    assert status == "built" and "remote cache unavailable" in stderr and "HTTP 500" in stderr, stderr
    assert "holds an entry this run did not prove damaged (another runner's, say): kept" in stderr
    assert "replaced" not in stderr and _cache_entry(oci_registry, repository)[0] == digest
    assert _remote_run(spec, tmp_path, "c", remote, monkeypatch)[0] == "restored"


@pytest.mark.parametrize("fails", ["download", "engine", "store"])
def test_a_full_build_cache_costs_the_remote_restore_only(
    fails: str, project: Path, tmp_path: Path, oci_registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remote entry is downloaded into the build cache's folder, then stored there: a disk that
    fills up meanwhile failed the spec (exit 2, nothing built) in the download, and in the store was
    called a 'corrupt build-cache record'; and 'not cached' named the copy's source in --out."""
    import errno
    import shutil

    from trtforge.digests import sha256_file

    remote = oci_registry.uri(f"tests/ci-full-cache-{fails}")
    spec = str(project / "fp32.yaml")
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / "runner-a-cache"))
    assert (
        runner.invoke(app, ["ci", spec, "--out", str(tmp_path / "a"), "--remote-cache", remote, "--insecure"]).exit_code
        == 0
    )
    cache = tmp_path / "runner-b-cache"
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(cache))
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if fails == "download":
        write_bytes = Path.write_bytes

        def write_into_a_full_cache(path: Path, data: Any) -> int:
            if path.is_relative_to(cache / "builds"):
                raise full  # as a file object's write raises it: no path named
            return write_bytes(path, data)

        monkeypatch.setattr(Path, "write_bytes", write_into_a_full_cache)
    elif fails == "engine":  # the engine blob, streamed into the file the registry's fetch opened
        import io

        import trtforge.publish.oci

        copy_answer = trtforge.publish.oci.copy_answer_at_most

        def into_a_full_disk(response: Any, out: Any, limit: int, what: str) -> None:
            if isinstance(out, io.BytesIO):  # a small answer read into memory (the image manifest)
                return copy_answer(response, out, limit, what)
            raise full

        monkeypatch.setattr(trtforge.publish.oci, "copy_answer_at_most", into_a_full_disk)
    else:
        copy2 = shutil.copy2

        def copy_into_a_full_cache(source: Any, target: Any, **kwargs: Any) -> Any:
            if Path(target).is_relative_to(cache / "builds"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(source), None, str(target))
            return copy2(source, target, **kwargs)

        monkeypatch.setattr(shutil, "copy2", copy_into_a_full_cache)
    out = tmp_path / "b"
    result = runner.invoke(app, ["ci", spec, "--out", str(out), "--json", "--remote-cache", remote, "--insecure"])
    assert result.exit_code == 0, result.stderr
    assert _statuses(json.loads(result.stdout)) == {"fp32.yaml": "built"}
    assert "the build cache cannot hold it (No space left on device: " in result.stderr, result.stderr
    assert "building locally" in result.stderr and "corrupt build-cache record" not in result.stderr
    assert "is refused" not in result.stderr and "pass --out" not in result.stderr  # the disk's, not the entry's
    if fails == "store":
        assert f"not cached (No space left on device: {cache / 'builds'}" in result.stderr, result.stderr
    (engine,) = out.glob("*.engine")
    assert sha256_file(engine) == read_manifest(engine).artifact.sha256


def test_a_full_temporary_folder_costs_the_remote_push_only(
    project: Path, tmp_path: Path, oci_registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The push stages the manifest and report in the temporary folder: a full one failed a spec
    that was built, committed and cached (exit 2, 'failed')."""
    import errno

    write_bytes = Path.write_bytes

    def write_into_a_full_tmp(path: Path, data: Any) -> int:
        if path.parent.name.startswith("trtforge-push-"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a file object's write: no path named
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", write_into_a_full_tmp)
    out = tmp_path / "out"
    remote = oci_registry.uri("tests/ci-full-tmp")
    result = runner.invoke(
        app, ["ci", str(project / "fp32.yaml"), "--out", str(out), "--json", "--remote-cache", remote, "--insecure"]
    )
    assert result.exit_code == 0, result.stderr
    assert _statuses(json.loads(result.stdout)) == {"fp32.yaml": "built"}
    assert "could not store the build in the remote cache (cannot write " in result.stderr, result.stderr
    assert "no space left on device" in result.stderr and "the artifact itself is fine" in result.stderr
    assert len(list(out.glob("*.engine"))) == 1


def test_remote_cache_must_be_oci(project: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["ci", str(project), "--out", str(tmp_path), "--remote-cache", f"dir://{tmp_path}"])
    assert result.exit_code == 2
    assert "use oci://HOST[:PORT]/REPO" in result.stderr


def test_an_empty_remote_cache_is_refused_not_taken_for_none(project: Path, tmp_path: Path) -> None:
    """``--remote-cache "$CACHE"`` with the variable unset built without the remote cache, silently."""
    out = tmp_path / "out"
    result = runner.invoke(app, ["ci", str(project / "fp32.yaml"), "--out", str(out), "--remote-cache", ""])
    assert result.exit_code == 2 and result.stderr == (
        "error: --remote-cache is empty: pass oci://HOST/REPO, or leave the flag out for no remote cache\n"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("report", "name", "says"),
    [
        ("--junit", "fp32.yaml", "is an input of this command"),
        ("--junit", "trtforge.yaml", "is an input of this command"),
        ("--junit", "conv.onnx", "is an input of this command"),
        ("GITHUB_STEP_SUMMARY", "fp32.yaml", "is an input of this command"),
        ("--junit", "fifo", "is a named pipe, not a regular file"),
        ("GITHUB_STEP_SUMMARY", "fifo", "is a named pipe, not a regular file"),
        ("--junit", "conv-fp32.engine", "named like a trtforge artifact file (*.engine)"),
        ("GITHUB_STEP_SUMMARY", "conv.accuracy.json", "named like a trtforge artifact file (*.accuracy.json)"),
    ],
)
def test_a_report_file_ci_would_replace_is_refused_before_anything_is_built(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report: str, name: str, says: str
) -> None:
    """The report written at the end replaced the spec, the project file, the model, a named pipe."""
    path = project / name
    if name == "fifo":
        os.mkfifo(path)
    before = {each.name: (each.lstat().st_ino, each.lstat().st_mtime_ns) for each in project.iterdir()}
    extra = ["--junit", str(path)] if report == "--junit" else []
    if report == "GITHUB_STEP_SUMMARY":
        monkeypatch.setenv(report, str(path))
    out = tmp_path / "out"
    result = runner.invoke(app, ["ci", str(project / "fp32.yaml"), "--out", str(out), *extra])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: {report} {path}") and says in result.stderr
    example = "report.xml" if report == "--junit" else "summary.md"
    assert f"point it at another file, e.g. {project / example}" in result.stderr
    assert {each.name: (each.lstat().st_ino, each.lstat().st_mtime_ns) for each in project.iterdir()} == before
    assert not list(out.glob("*.engine"))


def test_unchanged_rerun_reads_without_waiting_for_the_output_lock(project: Path, tmp_path: Path) -> None:
    """An unchanged spec is answered by reading alone: another pipeline holding the output
    folder's lock (it would be building or restoring there) does not hold this rerun up."""
    from filelock import FileLock

    for other in ("fp16.yaml", "int8.yaml"):
        (project / other).unlink()
    out = tmp_path / "out"
    assert _statuses(_ci(project, out)) == {"fp32.yaml": "built"}
    with FileLock(str(out / ".trtforge-locks" / "conv-fp32.lock")):
        rerun = subprocess.run(
            [sys.executable, "-m", "trtforge", "ci", str(project), "--out", str(out), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert rerun.returncode == 0, rerun.stderr
    assert _statuses(json.loads(rerun.stdout)) == {"fp32.yaml": "unchanged"}


def test_a_spec_without_gate_is_skipped_for_the_reason_the_manifest_gives(tmp_path: Path) -> None:
    """`ci --junit` and `build --junit` give the same reason a manifest records for a gate turned off."""
    root = tmp_path / "project"
    root.mkdir()
    models.conv_net(root / "conv.onnx")
    spec = f"name: nogate\nmodel: conv.onnx\ntargets: ['8.6']\n{PROFILE}accuracy: {{enabled: false}}\n"
    (root / "nogate.yaml").write_text(spec)
    junit, out = tmp_path / "junit.xml", tmp_path / "out"
    result = runner.invoke(app, ["ci", str(root), "--out", str(out), "--junit", str(junit)])
    assert result.exit_code == 0, result.stderr
    reason = read_manifest(next(out.glob("nogate-fp32-*.engine"))).accuracy
    assert reason is not None and reason["skipped"] is True
    skipped = [result.message for suite in JUnitXml.fromfile(str(junit)) for case in suite for result in case.result]
    assert skipped == [reason["reason"]]


def test_the_gates_junit_case_says_what_was_compared() -> None:
    """A gate that compared nothing is a skipped case with its reason, never a plain pass; a pass
    names the candidate and its emulation (a CI reader sees a simulation for what it is)."""
    from trtforge.ci import StepStatus, accuracy_step

    skipped = accuracy_step({"skipped": True, "reason": "accuracy.enabled is false in the spec"})
    assert (skipped.status, skipped.message) == (StepStatus.SKIPPED, "accuracy.enabled is false in the spec")
    identical = accuracy_step({"passed": True, "measured": False, "candidate": "identical", "candidate_reason": "why"})
    assert (identical.status, identical.message) == (StepStatus.SKIPPED, "not measured: why")
    simulated = accuracy_step({"passed": True, "measured": True, "candidate": "simulated", "emulation": "fp16 casts"})
    assert (simulated.status, simulated.message) == (
        StepStatus.PASSED,
        "passed, candidate simulated; emulated: fp16 casts",
    )


def test_a_credential_helper_missing_from_path_is_not_called_a_full_disk(
    project: Path, tmp_path: Path, auth_registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A docker credential helper that is not on PATH is an InvalidInputError from an OSError, as a
    full disk under the engine's download is: it was said as 'the build cache cannot hold it (No
    such file or directory: docker-credential-...)', hiding the helper and its fix."""
    from registry import PASSWORD, USER

    remote = auth_registry.uri("tests/ci-helper-missing")
    spec = str(project / "fp32.yaml")
    docker = tmp_path / "docker"
    docker.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    monkeypatch.setenv("TRTFORGE_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("TRTFORGE_REGISTRY_PASSWORD", PASSWORD)
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / "runner-a-cache"))
    first = runner.invoke(app, ["ci", spec, "--out", str(tmp_path / "a"), "--remote-cache", remote, "--insecure"])
    assert first.exit_code == 0, first.stderr
    monkeypatch.delenv("TRTFORGE_REGISTRY_USERNAME")
    monkeypatch.delenv("TRTFORGE_REGISTRY_PASSWORD")
    (docker / "config.json").write_text(json.dumps({"credHelpers": {auth_registry.host: "trtforge-missing"}}))
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / "runner-b-cache"))
    result = runner.invoke(
        app, ["ci", spec, "--out", str(tmp_path / "b"), "--json", "--remote-cache", remote, "--insecure"]
    )
    assert result.exit_code == 0, result.stderr
    assert "the build cache cannot hold it" not in result.stderr, result.stderr
    assert "is refused (the credential helper docker-credential-trtforge-missing" in result.stderr, result.stderr
    assert "building locally" in result.stderr
