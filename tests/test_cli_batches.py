"""Batches and defaults (issue 13, items 4 and 8): one bad spec costs only itself in `build SPEC...`
and `ci` (forked workers and the parent alike); every `--json` command prints one document, also
on failure; `ci` and `matrix` find the project without a folder and skip YAML that is not a spec;
`matrix` has a default CPU runner; `ci --jobs` defaults to the CPU cores.

The unexpected exception is real: an `.npz` whose member is compressed with Deflate64 (what
Windows' zip tool writes for large archives) makes Python's zipfile raise NotImplementedError,
which no trtforge error wraps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import models
import numpy as np
import pytest
import yaml
from clitools import cli

models.need_rtx()

REPO = Path(__file__).resolve().parent.parent
STATIC = "profiles:\n  - input: {min: [2, 3, 16, 16], opt: [2, 3, 16, 16], max: [2, 3, 16, 16]}\n"
DEFLATE64 = 9  # a zip compression method Python's zipfile cannot read


def _deflate64_npz(path: Path) -> Path:
    """A valid .npz, its one member marked as Deflate64 (local header and central directory)."""
    np.savez(path, input=np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32))
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.index(signature) + offset
        data[at : at + 2] = DEFLATE64.to_bytes(2, "little")
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def batch(tmp_path: Path) -> tuple[Path, Path]:
    """bad.yaml (its accuracy data raises NotImplementedError when read) and good.yaml."""
    models.conv_net(tmp_path / "conv.onnx")
    _deflate64_npz(tmp_path / "val.npz")
    common = f"model: conv.onnx\ntargets: ['8.6']\n{STATIC}"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: bad\n{common}accuracy: {{data: val.npz}}\n")
    good = tmp_path / "good.yaml"
    good.write_text(f"name: good\n{common}accuracy: {{enabled: false}}\n")
    return bad, good


def test_build_goes_on_after_an_unexpected_exception(batch: tuple[Path, Path], tmp_path: Path) -> None:
    bad, good = batch
    code, stdout, stderr = cli("build", bad, good, "--out", tmp_path / "out", "--json")
    assert code == 1
    first, second = json.loads(stdout)["results"]
    assert first["exit_code"] == 1 and first["spec"] == str(bad)
    assert first["error"].startswith(f"{bad}: internal error (NotImplementedError: ")
    assert second["status"] == "built" and Path(second["engine"]).is_file()
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if "error:" in line] == [
        line for line in stderr.splitlines() if "NotImplementedError" in line
    ]


@pytest.mark.parametrize("command", ["build", "ci"])
def test_a_bug_loading_one_spec_costs_that_spec_only(
    batch: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """The collision check loads every spec first and leaves one that fails to its own build, which
    loads it again: a bug there (not a TrtforgeError) is that spec's internal error, reported, while
    the other spec is built; it neither vanishes nor stops the whole run."""
    import trtforge.build
    import trtforge.spec

    bad, good = batch
    load = trtforge.spec.load_spec

    def buggy(path: Path) -> trtforge.spec.Spec:
        if path.name == bad.name:
            raise KeyError("a bug")
        return load(path)

    monkeypatch.setattr(trtforge.spec, "load_spec", buggy)
    monkeypatch.setattr(trtforge.build, "load_spec", buggy)  # build's batch plan loads through its own name
    extra = ["--jobs", "1"] if command == "ci" else []  # ci: in this process, where the patch is
    code, stdout, stderr = cli(command, bad, good, "--out", tmp_path / "out", "--json", *extra)
    assert code == 1, stderr
    rows = {Path(row["spec"]).name: row for row in json.loads(stdout)["results"]}
    error = rows["bad.yaml"]["error" if command == "build" else "message"]
    assert rows["bad.yaml"]["exit_code"] == 1 and "internal error (KeyError: 'a bug')" in error
    assert rows["good.yaml"]["exit_code"] == 0 and list((tmp_path / "out").glob("good-*.engine"))


@pytest.mark.parametrize("command", ["build", "ci"])
def test_two_specs_that_would_write_one_artifact_are_refused(tmp_path: Path, command: str) -> None:
    """Same name, precision, backend and targets, another opt: the second build replaced the first
    one's engine and both reported it (``ci`` refused them; ``build`` did not)."""
    models.conv_net(tmp_path / "conv.onnx")
    common = "name: conv\nmodel: conv.onnx\ntargets: ['8.6']\naccuracy: {enabled: false}\nprofiles:\n"
    first, second, other = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    first.write_text(common + "  - input: {min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}\n")
    second.write_text(common + "  - input: {min: [1, 3, 16, 16], opt: [4, 3, 16, 16], max: [4, 3, 16, 16]}\n")
    other.write_text(first.read_text().replace("name: conv", "name: other"))
    out = tmp_path / "out"
    args = [first, second, other] if command == "build" else [tmp_path]
    code, stdout, stderr = cli(command, *args, "--out", out, "--json", "--cache-dir", tmp_path / "cache")
    assert code == 2, stderr
    rows = {Path(row["spec"]).name: row for row in json.loads(stdout)["results"]}
    for name in ("a.yaml", "b.yaml"):
        error = rows[name]["error" if command == "build" else "message"]
        assert rows[name]["exit_code"] == 2
        assert "both build conv fp32 for the same backend and targets" in error
        assert "give each spec its own 'name:'" in error
    assert rows["c.yaml"]["exit_code"] == 0
    assert [path.name.split("-")[0] for path in out.glob("*.engine")] == ["other"]


def test_two_specs_that_give_one_matrix_job_are_refused_naming_both(tmp_path: Path) -> None:
    """Same name and precision, one version-compatible: ``ci`` builds both (their artifacts differ),
    but their CI jobs share one id, which names GitLab's job (the second replaced the first) and the
    JUnit file: the refusal named the job only, not the specs to rename."""
    models.conv_net(tmp_path / "conv.onnx")
    common = f"name: conv\nmodel: conv.onnx\n{STATIC}"
    (tmp_path / "a.yaml").write_text(common)
    (tmp_path / "b.yaml").write_text(common + "build: {version_compatible: true}\n")
    for output in ("github", "gitlab"):
        code, stdout, stderr = cli("matrix", tmp_path, "--format", output)
        assert code == 2 and not stdout
        assert stderr == (
            f"error: {tmp_path / 'a.yaml'} and {tmp_path / 'b.yaml'} both give the CI job 'conv-fp32-cpu' "
            "(a job is named name-precision-GPU): give each spec its own 'name:'\n"
        )


@pytest.mark.parametrize(
    "argv",
    [
        ["build", "--out"],
        ["build", "--junit"],
        ["build", "--cache-dir"],
        ["ci", "--out"],
        ["ci", "--junit"],
        ["calibrate", "--out"],
        ["calibrate", "--cache-dir"],
        ["serve", "--pull-dir"],
        ["diagnose", "--out"],
        ["verify", "--junit"],
        ["verify", "--out"],
        ["build", "--sign-key"],
        ["sign", "--key"],
        ["pull", "--out"],
    ],
    ids=" ".join,
)
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """``--out ''`` (an unset shell variable) read as ``.``: build, ci and calibrate wrote into the
    current folder, and ``--junit ''`` was refused as "--junit . is a folder"."""
    monkeypatch.chdir(tmp_path)
    command, flag = argv
    model = REPO / "calibration" / "digits" / "digits_cnn.onnx"
    first = {
        "serve": [model],
        "sign": [tmp_path / "m.engine"],
        "pull": ["dir://registry", "--name", "m"],
    }.get(command, [REPO / "configs" / "digits-int8.yaml"])
    code, _, stderr = cli(command, *first, flag, "")
    assert code == 2 and stderr == f"error: {flag} is empty: pass a path (an empty one is not the current folder)\n"
    assert not list(tmp_path.iterdir())


def _refused_as_an_input(junit: Path, *argv: object) -> None:
    """``argv --junit junit`` refuses the report path as one of the command's inputs, left as it was."""
    before = junit.read_bytes()
    code, _, stderr = cli(*argv, "--junit", junit)
    assert code == 2 and stderr == (
        f"error: --junit {junit} is an input of this command ({junit}): the report would replace it; "
        f"point it at another file, e.g. {junit.parent / 'report.xml'}\n"
    ), stderr
    assert junit.read_bytes() == before


@pytest.mark.parametrize("which", ["engine", "spec", "model"])
def test_verify_refuses_a_junit_that_is_one_of_its_inputs(tmp_path: Path, which: str) -> None:
    """``verify ENGINE --spec SPEC --junit X`` wrote its report over X, whichever input it was (an
    engine's name need not end in .engine)."""
    models.conv_net(tmp_path / "conv.onnx")
    spec = tmp_path / "conv.yaml"
    spec.write_text(f"name: conv\nmodel: conv.onnx\ntargets: ['8.6']\n{STATIC}")
    engine = tmp_path / "conv.plan"
    engine.write_bytes(b"an engine under another name")
    junit = {"engine": engine, "spec": spec, "model": tmp_path / "conv.onnx"}[which]
    _refused_as_an_input(junit, "verify", engine, "--spec", spec)


@pytest.mark.parametrize("which", ["data", "labels", "calibration"])
def test_verify_refuses_a_junit_that_is_the_specs_data(tmp_path: Path, which: str) -> None:
    """``verify SPEC --junit val-labels.npy`` wrote its report over the accuracy labels (and so over
    any data file of the spec): only the spec, the model and the engines were its inputs."""
    models.conv_net(tmp_path / "conv.onnx")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "val.npy", rng.random((2, 3, 16, 16), dtype=np.float32))
    np.save(tmp_path / "train.npy", rng.random((2, 3, 16, 16), dtype=np.float32))
    np.save(tmp_path / "labels.npy", np.zeros(2, np.int64))
    spec = tmp_path / "conv.yaml"
    spec.write_text(
        f"name: conv\nmodel: conv.onnx\nprecision: int8\ntargets: ['8.6']\n{STATIC}"
        "calibration: {data: [train.npy]}\naccuracy: {data: [val.npy], labels: labels.npy}\n"
    )
    engine = tmp_path / "conv.engine"
    engine.write_bytes(b"an engine")
    junit = tmp_path / {"data": "val.npy", "labels": "labels.npy", "calibration": "train.npy"}[which]
    _refused_as_an_input(junit, "verify", engine, "--spec", spec)


@pytest.mark.parametrize("command", ["build", "verify"])
def test_a_junit_that_is_the_models_external_data_is_refused(tmp_path: Path, command: str) -> None:
    """``--junit conv.onnx.data`` wrote the report over the model's weights: the .onnx file was an
    input, the external data file it names was not."""
    models.conv_net(tmp_path / "conv.onnx")
    data = models.externalize(tmp_path / "conv.onnx")
    spec = tmp_path / "conv.yaml"
    spec.write_text(f"name: conv\nmodel: conv.onnx\ntargets: ['8.6']\n{STATIC}")
    first = [spec, "--out", tmp_path / "out"] if command == "build" else [tmp_path / "conv.engine", "--spec", spec]
    if command == "verify":
        (tmp_path / "conv.engine").write_bytes(b"an engine")
    _refused_as_an_input(data, command, *first)


def test_verify_engine_refuses_an_out_it_would_ignore(tmp_path: Path) -> None:
    """``verify ENGINE --spec SPEC --out DIR`` ignored DIR and wrote the report beside the engine:
    --out is where ``verify SPEC`` looks for engines, as --spec with SPEC is refused."""
    models.conv_net(tmp_path / "conv.onnx")
    spec = tmp_path / "conv.yaml"
    spec.write_text(f"name: conv\nmodel: conv.onnx\ntargets: ['8.6']\n{STATIC}")
    code, _, stderr = cli("verify", tmp_path / "conv.engine", "--spec", spec, "--out", tmp_path / "reports")
    assert code == 2 and stderr == (
        f"error: --out {tmp_path / 'reports'}: verify ENGINE writes its report beside the engine; --out is where "
        "verify SPEC looks for engines: drop --out\n"
    )
    assert not (tmp_path / "reports").exists()


def test_verify_spec_names_an_out_that_is_a_file_as_such(tmp_path: Path) -> None:
    """``verify SPEC --out FILE`` said "FILE: no such folder", of a path that is there."""
    models.conv_net(tmp_path / "conv.onnx")
    spec = tmp_path / "conv.yaml"
    spec.write_text(f"name: conv\nmodel: conv.onnx\ntargets: ['8.6']\n{STATIC}")
    code, _, stderr = cli("verify", spec, "--out", tmp_path / "conv.onnx")
    assert code == 2 and stderr.startswith(f"error: {tmp_path / 'conv.onnx'}: not a folder; build first"), stderr


def test_ctrl_c_while_verify_imports_a_c_extension_is_an_interrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C inside ``import onnxruntime`` (pybind11 raises ImportError from the KeyboardInterrupt)
    was one engine's "internal error ... please report it", exit 1: it is an interrupt, exit 130."""
    import trtforge.verify
    from trtforge.cli.common import INTERRUPTED

    def interrupted_import(*args: object, **kwargs: object) -> None:
        raise ImportError("initialization failed") from KeyboardInterrupt()

    models.conv_net(tmp_path / "conv.onnx")
    spec = tmp_path / "conv.yaml"
    spec.write_text(f"name: conv\nmodel: conv.onnx\ntargets: ['8.6']\n{STATIC}")
    monkeypatch.setattr(trtforge.verify, "verify_engine", interrupted_import)
    code, _, stderr = cli("verify", tmp_path / "conv.engine", "--spec", spec)
    assert code == 130 and stderr == f"{INTERRUPTED}\n"


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"XDG_CACHE_HOME": ""}, "home/.cache/trtforge"),
        ({"XDG_CACHE_HOME": "relative"}, "home/.cache/trtforge"),
        ({"XDG_CACHE_HOME": "{tmp}/xdg"}, "xdg/trtforge"),
        ({"TRTFORGE_CACHE_DIR": "", "XDG_CACHE_HOME": "{tmp}/xdg"}, "xdg/trtforge"),
        ({"TRTFORGE_CACHE_DIR": "{tmp}/own"}, "own"),
    ],
)
def test_an_empty_or_relative_cache_variable_is_not_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: str
) -> None:
    """``XDG_CACHE_HOME=''`` (or a relative value) put the cache in ``./trtforge``: the XDG Base
    Directory spec says such a value is to be ignored. An empty TRTFORGE_CACHE_DIR counts as unset."""
    from trtforge.cache import default_cache_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TRTFORGE_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    assert default_cache_dir() == tmp_path / expected


@pytest.mark.parametrize("folder", ["calibration", "fp16", "fp16-emulated", "fp16-guard"])
@pytest.mark.parametrize("command", ["build", "ci", "calibrate"])
def test_a_file_in_the_way_of_a_precision_folder_is_refused_before_any_work(
    tmp_path: Path, isolated_cache: Path, folder: str, command: str
) -> None:
    """A file named like a folder the precision step keeps its graphs in (a damaged cache): the
    build met it halfway (exit 1, "internal error (FileExistsError ...)", after calibrating)."""
    (isolated_cache / folder).write_text("not a folder")
    int8 = folder == "calibration" or command == "calibrate"
    spec = REPO / "configs" / ("digits-int8.yaml" if int8 else "digits-fp16.yaml")
    out = tmp_path / "out"
    code, _, stderr = cli(command, spec, "--out", out) if command != "calibrate" else cli(command, spec)
    if command == "calibrate" and folder != "calibration":  # calibrate keeps nothing in the fp16 folders
        assert code == 0, stderr
        return
    assert code == 2, stderr
    assert f"{isolated_cache / folder} is no folder, and trtforge keeps its {folder} cache there" in stderr
    # ci fails the spec in its job (its reports still go to --out); nothing is calibrated or built
    assert "internal error" not in stderr and not list(out.glob("*.engine")) and not list(out.glob("*.qdq.onnx"))
    assert "calibration: " not in stderr.replace(f"{folder} cache", "")


@pytest.mark.parametrize("command", ["build", "ci"])
def test_a_file_in_the_way_of_a_precision_folder_stops_no_run_that_never_uses_it(
    tmp_path: Path, isolated_cache: Path, command: str
) -> None:
    """An fp32 spec never uses the precision step's folders: its build (and an unchanged ci rerun)
    went on before the refusal of 78bbd34, which made them exit 2 for a folder they never touch."""
    spec, out = REPO / "configs" / "digits-fp32.yaml", tmp_path / "out"
    assert cli(command, spec, "--out", out)[0] == 0
    for folder in ("calibration", "fp16", "fp16-emulated", "fp16-guard"):
        shutil.rmtree(isolated_cache / folder, ignore_errors=True)
        (isolated_cache / folder).write_text("not a folder")
    code, _, stderr = cli(command, spec, "--out", out)
    assert code == 0, stderr


def test_verify_is_not_refused_for_a_cache_folder_it_never_reads(tmp_path: Path, isolated_cache: Path) -> None:
    """verify derives the candidate's graphs in a scratch folder: the cache's fp16/ is none of its business."""
    spec, out = REPO / "configs" / "digits-fp16.yaml", tmp_path / "out"
    assert cli("build", spec, "--out", out)[0] == 0
    shutil.rmtree(isolated_cache / "fp16")
    (isolated_cache / "fp16").write_text("not a folder")
    code, _, stderr = cli("verify", spec, "--out", out)
    assert code == 0, stderr


def test_one_spec_named_twice_is_built_once(tmp_path: Path) -> None:
    """Another spelling of one file was refused as a collision ("give each spec its own name"),
    the same spelling twice built it twice; ci builds it once."""
    models.conv_net(tmp_path / "conv.onnx")
    spec = tmp_path / "a.yaml"
    spec.write_text(f"name: conv\nmodel: conv.onnx\ntargets: ['8.6']\naccuracy: {{enabled: false}}\n{STATIC}")
    spelled = tmp_path / "sub" / ".." / "a.yaml"
    (tmp_path / "sub").mkdir()
    code, stdout, stderr = cli("build", spec, spelled, spec, "--out", tmp_path / "out", "--json")
    assert code == 0, stderr
    assert [row["spec"] for row in json.loads(stdout)["results"]] == [str(spec)]


def test_traceback_only_with_trtforge_debug(
    batch: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad, _ = batch
    code, _, stderr = cli("build", bad, "--out", tmp_path / "out")
    assert code == 1 and "Traceback" not in stderr
    assert f"error: {bad}: internal error (NotImplementedError: " in stderr and "TRTFORGE_DEBUG=1" in stderr
    monkeypatch.setenv("TRTFORGE_DEBUG", "1")
    code, _, stderr = cli("build", bad, "--out", tmp_path / "out")
    assert code == 1 and "Traceback (most recent call last)" in stderr and "zipfile" in stderr


@pytest.mark.parametrize("jobs", ["1", "2"], ids=["parent", "forked-workers"])
def test_ci_reports_every_spec_after_an_unexpected_exception(
    batch: tuple[Path, Path], tmp_path: Path, jobs: str
) -> None:
    """--jobs 1 builds in the parent, --jobs 2 in forked workers: a subprocess, so that the
    workers' stderr (the traceback TRTFORGE_DEBUG asks for) is seen."""
    bad, good = batch
    env = {**os.environ, "TRTFORGE_DEBUG": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "trtforge", "ci", bad, good, "--out", tmp_path / "out", "--jobs", jobs, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 1, run.stderr
    document = json.loads(run.stdout)
    results = {Path(result["spec"]).name: result for result in document["results"]}
    assert results["bad.yaml"]["exit_code"] == 1
    assert "internal error (NotImplementedError: " in results["bad.yaml"]["message"]
    assert results["good.yaml"]["status"] == "built"
    assert "bad: internal error (NotImplementedError" in run.stderr
    assert "Traceback (most recent call last)" in run.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["build", "{tmp}/missing.yaml"],
        ["calibrate", "{tmp}/good.yaml"],
        ["verify", "{tmp}/missing.yaml"],
        ["inspect", "{tmp}/missing.engine"],
        ["check", "{tmp}/missing.engine"],
        ["ci", "{tmp}/missing"],
        ["keygen", "{tmp}/good.yaml"],
        ["sign", "{tmp}/missing.engine", "--key", "{tmp}/missing.pem"],
        ["publish", "{tmp}/missing.engine", "--to", "dir://{tmp}/registry"],
        ["pull", "dir://{tmp}/missing", "--name", "x", "--out", "{tmp}/pulled"],
        ["bench", "{tmp}/missing.onnx"],
    ],
    ids=lambda argv: argv[0],
)
def test_json_failure_prints_one_document(batch: tuple[Path, Path], tmp_path: Path, argv: list[str]) -> None:
    code, stdout, stderr = cli(*(arg.replace("{tmp}", str(tmp_path)) for arg in argv), "--json")
    assert code not in (0, 1), stderr
    document = json.loads(stdout)  # exactly one document: json.loads refuses trailing text
    error = document.get("error")
    if isinstance(error, dict):
        assert error["exit_code"] == code and error["message"] in stderr
    else:
        assert code in {document.get("exit_code"), *(r.get("exit_code") for r in document.get("results", []))}


def _project(root: Path) -> Path:
    """A repository laid out as this one: configs/ holds trtforge.yaml (no runners) and a spec,
    examples/ci/ the CI workflow files, which are not specs."""
    configs = root / "configs"
    configs.mkdir(parents=True)
    models.conv_net(configs / "conv.onnx")
    (configs / "trtforge.yaml").write_text("publish_to: dir://published\n")
    (configs / "conv.yaml").write_text(
        f"name: conv\nmodel: conv.onnx\nbackend: tensorrt-rtx\ntargets: ['8.6']\n{STATIC}accuracy: {{enabled: false}}\n"
    )
    shutil.copytree(REPO / "examples" / "ci", root / "examples" / "ci")
    shutil.copy(REPO / "examples" / "ci" / "github-actions.yml", configs / "workflow.yml")
    return configs


def test_matrix_without_folder_or_runners(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = cli("matrix", "--format", "github")
    assert code == 0, stderr
    [entry] = json.loads(stdout)["include"]
    assert (entry["spec"], entry["backend"], entry["runner"]) == (
        "configs/conv.yaml",
        "tensorrt-rtx",
        ["ubuntu-latest"],
    )
    assert "skipped configs/workflow.yml: a CI workflow file, not a spec" in stderr
    code, stdout, _ = cli("matrix", "--format", "gitlab")
    job = yaml.safe_load(stdout)["build:conv-fp32-cpu"]
    assert code == 0 and "tags" not in job  # GitLab: any runner of the project


def test_matrix_at_this_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    code, stdout, stderr = cli("matrix", "--format", "json")
    assert code == 0, stderr
    specs = {entry["spec"] for entry in json.loads(stdout)["entries"]}
    assert specs and all(spec.startswith("configs/") for spec in specs)


def test_ci_without_folder_builds_the_project_with_a_job_per_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = cli("ci", "--out", "out", "--jobs", "1", "--json")
    assert code == 0, stderr
    document = json.loads(stdout)
    assert [(Path(r["spec"]).name, r["status"]) for r in document["results"]] == [("conv.yaml", "built")]
    assert "skipped configs/workflow.yml" in stderr
    code, stdout, stderr = cli("ci", "--out", "out", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["jobs"] == len(os.sched_getaffinity(0))


def test_insecure_without_a_remote_cache_is_refused(tmp_path: Path) -> None:
    """Plain HTTP for no registry: it was silently ignored, as if the cache were in use."""
    code, _, stderr = cli("ci", REPO / "configs" / "digits-fp32.yaml", "--out", tmp_path / "out", "--insecure")
    assert code == 2 and "--insecure (plain HTTP) is for --remote-cache's oci:// registry" in stderr
    assert not (tmp_path / "out").exists()
