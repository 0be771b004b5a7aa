"""Real TensorRT-RTX builds through the CLI (CliRunner and subprocess), and every bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clitools import as_foreground_job
from models import need_rtx
from registry import DIGITS_ONNX, DIGITS_PROFILE
from typer.testing import CliRunner

from trtforge.artifact import LOCK_DIR
from trtforge.cli import app
from trtforge.manifest import Manifest, read_manifest

need_rtx()

runner = CliRunner()

REPO = Path(__file__).resolve().parent.parent
CONV_PROFILE = "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [4, 3, 16, 16], max: [8, 3, 16, 16]}\n"
REQUIRED_KEYS = {
    "schema",
    "name",
    "precision",
    "tag",
    "artifact",
    "source",
    "tensorrt",
    "gpu",
    "platform",
    "profiles",
    "io",
    "calibration",
    "accuracy",
    "build",
}


def _build(spec: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["build", str(spec), "--out", str(out), *extra])
    return result.exit_code, result.stdout, result.stderr


def _engines(out: Path) -> list[str]:
    return sorted(path.name for path in out.glob("*.engine")) if out.exists() else []


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_writes_tagged_engine_and_complete_manifest(
    write_spec: Callable[..., Path], tmp_path: Path, precision: str
) -> None:
    spec = write_spec(
        f"name: conv\nmodel: {{models}}/conv.onnx\nprecision: {precision}\ntargets: [sm_89, 8.6]\n" + CONV_PROFILE
    )
    code, stdout, stderr = _build(spec, tmp_path / "out", "--json")
    assert code == 0, stderr
    document = json.loads(stdout)
    engine = Path(document["results"][0]["engine"])
    assert engine.name == f"conv-{precision}-rtx1.7-sm86.sm89-linux_x86_64.engine"
    manifest_file = engine.with_name(engine.name.replace(".engine", ".manifest.json"))
    raw = json.loads(manifest_file.read_text())
    assert set(raw) >= REQUIRED_KEYS
    manifest = read_manifest(engine)
    assert Manifest.model_validate(json.loads(manifest.to_json())) == manifest
    assert manifest.gpu.compute_capabilities == ["8.6", "8.9"]
    assert manifest.gpu.build_device is None
    assert manifest.tensorrt.flavor == "tensorrt-rtx"
    assert manifest.artifact.size == engine.stat().st_size
    assert [t.name for t in manifest.io] == ["input", "logits"]
    assert manifest.io[0].shape == [-1, 3, 16, 16]
    assert manifest.profiles[0]["input"]["opt"] == [4, 3, 16, 16]
    assert [p.name for p in engine.parent.iterdir() if p.name.startswith(".")] == [LOCK_DIR]


def test_two_profiles_and_default_targets(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(
        "name: conv-dyn\nmodel: {models}/conv.onnx\nprofiles:\n"
        "  - input: {min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}\n"
        "  - input: {min: [8, 3, 16, 16], opt: [16, 3, 16, 16], max: [32, 3, 16, 16]}\n"
    )
    code, _, stderr = _build(spec, tmp_path / "out")
    assert code == 0, stderr
    (engine,) = (tmp_path / "out").glob("*.engine")
    manifest = read_manifest(engine)
    assert len(manifest.profiles) == 2
    assert manifest.gpu.compute_capabilities == ["8.0", "8.6", "8.9", "12.0"]
    assert "sm80.sm86.sm89.sm120" in engine.name
    assert "timing cache: n/a on tensorrt-rtx" in stderr


def test_multi_input_model(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(
        "name: two\nmodel: {models}/two_inputs.onnx\ntargets: ['8.6']\nprofiles:\n"
        "  - image: {min: [1, 3, 8, 8], opt: [2, 3, 8, 8], max: [4, 3, 8, 8]}\n"
        "    meta: {min: [1, 4], opt: [2, 4], max: [4, 4]}\n"
    )
    code, _, stderr = _build(spec, tmp_path / "out")
    assert code == 0, stderr
    (engine,) = (tmp_path / "out").glob("*.engine")
    assert [(t.name, t.mode) for t in read_manifest(engine).io] == [
        ("image", "input"),
        ("meta", "input"),
        ("out", "output"),
    ]


def test_static_model_needs_no_profile(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec("name: static\nmodel: {models}/conv_static.onnx\ntargets: ['8.9']\n")
    code, _, stderr = _build(spec, tmp_path / "out")
    assert code == 0, stderr
    assert _engines(tmp_path / "out") == ["static-fp32-rtx1.7-sm89-linux_x86_64.engine"]


def test_inspect_table_and_json(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec("name: conv\nmodel: {models}/conv.onnx\ntargets: ['8.6']\n" + CONV_PROFILE)
    assert _build(spec, tmp_path / "out")[0] == 0
    (engine,) = (tmp_path / "out").glob("*.engine")
    as_json = runner.invoke(app, ["inspect", str(engine), "--json"])
    assert as_json.exit_code == 0
    facts = json.loads(as_json.stdout)
    assert facts["engine"]["matches_manifest"] is True
    assert facts["manifest"]["tag"] == "rtx1.7-sm86-linux_x86_64"
    table = runner.invoke(app, ["inspect", str(engine)])
    assert table.exit_code == 0 and "rtx1.7-sm86-linux_x86_64" in table.stderr
    # at fp32 on this host the gate's candidate is the reference itself: said in words, not "passed True"
    assert "not measured (identical) on " in table.stderr and "of seeded random inputs" in table.stderr
    assert "identical: at fp32 the simulated candidate is the reference's own ONNX" in table.stderr
    assert "passed True" not in table.stderr


@pytest.mark.parametrize(
    ("model_line", "code", "message"),
    [
        ("model: {models}/missing.onnx", 2, "model file not found"),
        ("model: {models}/../spec.yaml", 2, "not an ONNX model"),
        ("model: {models}/unsupported.onnx", 3, "node #0 'fancy' (op FancyOp)"),
    ],
)
def test_bad_models_exit_with_the_documented_code(
    write_spec: Callable[..., Path], model_dir: Path, tmp_path: Path, model_line: str, code: int, message: str
) -> None:
    (model_dir.parent / "spec.yaml").write_text("not: onnx\n")
    spec = write_spec(f"name: bad\n{model_line}\n")
    exit_code, _, stderr = _build(spec, tmp_path / "out")
    assert exit_code == code
    assert message in stderr
    assert "Traceback" not in stderr
    assert _engines(tmp_path / "out") == []
    if "not found" in message:  # the spec's key, at its line
        assert f"check 'model:' at {spec}:2" in stderr


def test_unwritable_output_directory(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    spec = write_spec("name: conv\nmodel: {models}/conv_static.onnx\n")
    code, _, stderr = _build(spec, blocker / "out")
    assert code == 2
    assert f"output directory {blocker / 'out'} cannot be made: {blocker} is a file" in stderr and "--out" in stderr


@pytest.fixture
def append_only(tmp_path: Path) -> Iterator[Path]:
    """A folder with ``chattr +a`` (files may be added to it, never renamed nor removed); skipped
    where that flag cannot be set (not root, a file system without it)."""
    folder = tmp_path / "append-only"
    folder.mkdir()
    done = subprocess.run(["chattr", "+a", str(folder)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot make an append-only folder here (chattr +a): {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-a", str(folder)], check=True)


def test_an_append_only_out_is_refused_and_keeps_no_probe(append_only: Path, tmp_path: Path) -> None:
    """``--out`` append-only: the file made to prove the folder writable could not be removed, so
    it stayed there for good, under an error saying the folder was not writable. Now it is refused
    for what it is before anything is made in it; a new folder made inside one (the flag is not
    inherited) builds, and nothing is left in the append-only folder but that folder."""
    spec = tmp_path / "digits.yaml"
    spec.write_text(
        f"name: digits-cnn\nmodel: {DIGITS_ONNX}\nprecision: fp32\nbackend: tensorrt-rtx\ntargets: ['8.6']\n"
        f"profiles:\n{DIGITS_PROFILE}\naccuracy: {{enabled: false}}\n"
    )
    code, _, stderr = _build(spec, append_only)
    assert code == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"error: output directory {append_only} is append-only (chattr +a): files can be added there but never "
        f"replaced or removed, which every write of trtforge does; pass --out with another folder, or run "
        f"chattr -a {append_only}"
    )
    assert list(append_only.iterdir()) == []
    code, _, stderr = _build(spec, append_only / "out")
    assert code == 0, stderr
    assert [path.name for path in append_only.iterdir()] == ["out"] and _engines(append_only / "out")


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        # root may write anywhere os.access looks: only a write proves it (/proc takes no files)
        (lambda tmp: ["--out", "/proc/trtforge-out"], "output directory /proc/trtforge-out is not writable"),
        (lambda tmp: ["--out", tmp / "file"], "is a file; pass --out with a writable folder"),
        (lambda tmp: ["--out", tmp / "out", "--junit", tmp], "is a folder; point it at a file"),
        (lambda tmp: ["--out", tmp / "out", "--junit", "/proc/j.xml"], "pass --junit with a writable folder"),
    ],
)
def test_an_unusable_out_or_junit_is_refused_before_anything_is_built(
    write_spec: Callable[..., Path], tmp_path: Path, where: Callable[[Path], list[object]], expected: str
) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    spec = write_spec("name: conv\nmodel: {models}/conv_static.onnx\n")
    result = runner.invoke(app, ["build", str(spec), *(str(arg) for arg in where(tmp_path))])
    code, stderr = result.exit_code, result.stderr
    assert code == 2 and expected in stderr and "Traceback" not in stderr
    assert "Building engine" not in stderr and not (tmp_path / "out").exists()


def special_file(path: Path, kind: str) -> Path:
    """A named pipe, or a character device node of our own (1, 3: what /dev/null is) at ``path``:
    never the system's /dev/null, which a report written over it would replace for everyone."""
    if kind == "fifo":
        os.mkfifo(path)
        return path
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root")
    return path


REPLACED_REPORTS = {
    "device": (lambda tmp: special_file(tmp / "dn", "device"), "is a character device, not a regular file"),
    "fifo": (lambda tmp: special_file(tmp / "ff", "fifo"), "is a named pipe, not a regular file"),
    "spec": (lambda tmp: tmp / "spec.yaml", "is an input of this command"),
    "model": (lambda tmp: tmp / "conv.onnx", "is an input of this command"),
    "link to the spec": (lambda tmp: _link(tmp / "j.xml", tmp / "spec.yaml"), "is an input of this command"),
    "link to a device": (
        lambda tmp: _link(tmp / "j.xml", special_file(tmp / "dn", "device")),
        "(a link to ",  # then its target: a character device
    ),
    "engine": (lambda tmp: tmp / "out" / "conv-fp32.engine", "named like a trtforge artifact file (*.engine)"),
    "manifest": (lambda tmp: tmp / "x.manifest.json", "named like a trtforge artifact file (*.manifest.json)"),
    "attestation": (lambda tmp: tmp / "x.intoto.jsonl", "named like a trtforge artifact file (*.intoto.jsonl)"),
}


def _link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


@pytest.mark.parametrize("case", list(REPLACED_REPORTS))
def test_a_junit_path_the_report_would_replace_is_refused_before_anything_is_built(
    model_dir: Path, tmp_path: Path, case: str
) -> None:
    """``--junit`` replaced whatever was at its path: a device node, a named pipe, the spec or its
    model, and the engine just built (``--junit out/NAME.engine`` exited 0, the engine now XML)."""
    shutil.copyfile(model_dir / "conv_static.onnx", tmp_path / "conv.onnx")
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: conv\nmodel: conv.onnx\naccuracy: {enabled: false}\n")
    make, says = REPLACED_REPORTS[case]
    junit = make(tmp_path)
    before = _files(tmp_path)
    code, _, stderr = _build(spec, tmp_path / "out", "--junit", str(junit))
    assert code == 2 and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith(f"error: --junit {junit}") and says in stderr and "point it at another file" in stderr
    assert "Building engine" not in stderr and _files(tmp_path) == before  # nothing replaced, nothing made


@pytest.mark.parametrize("target", ["data/batch0.npy", "labels.npy"])
def test_a_junit_path_that_is_the_accuracy_data_or_labels_is_refused(
    model_dir: Path, tmp_path: Path, target: str
) -> None:
    """The spec's data and labels are its inputs too: --junit on one replaced it with XML."""
    import numpy as np

    shutil.copyfile(model_dir / "conv_static.onnx", tmp_path / "conv.onnx")
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "batch0.npy", np.zeros((2, 3, 16, 16), np.float32))
    np.save(tmp_path / "labels.npy", np.zeros(2, np.int64))
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: conv\nmodel: conv.onnx\naccuracy: {data: data/*.npy, labels: labels.npy}\n")
    before = _files(tmp_path)
    code, _, stderr = _build(spec, tmp_path / "out", "--junit", str(tmp_path / target))
    assert code == 2 and "is an input of this command" in stderr and len(stderr.splitlines()) == 1, stderr
    assert _files(tmp_path) == before


def _files(folder: Path) -> dict[Path, tuple[int, int, int, int]]:
    """Each file below ``folder`` (links not followed): inode, mode, size, mtime."""
    return {
        path: (found.st_ino, found.st_mode, found.st_size, found.st_mtime_ns)
        for path in folder.rglob("*")
        for found in [path.lstat()]
    }


def test_a_junit_path_that_is_the_signing_key_is_refused(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """``--sign-key K --junit K`` replaced the private key with the report."""
    from trtforge.signing import generate_keypair

    key = generate_keypair(tmp_path / "signing-key").private_path
    before = key.read_bytes()
    spec = write_spec("name: conv\nmodel: {models}/conv_static.onnx\naccuracy: {enabled: false}\n")
    code, _, stderr = _build(spec, tmp_path / "out", "--sign-key", str(key), "--junit", str(key))
    assert code == 2 and stderr == (
        f"error: --junit {key} is an input of this command ({key}): the report would replace it; "
        f"point it at another file, e.g. {tmp_path / 'report.xml'}\n"
    )
    assert key.read_bytes() == before and _engines(tmp_path / "out") == []


def test_a_junit_path_that_is_a_link_is_written_through(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """The report goes to the link's target, as a shell's ``>`` writes: the link stays (the atomic
    write replaced the link itself with a file), and its target, not there yet, is made."""
    spec = write_spec("name: conv\nmodel: {models}/conv_static.onnx\naccuracy: {enabled: false}\n")
    (tmp_path / "reports").mkdir()
    link = _link(tmp_path / "junit.xml", Path("reports") / "build.xml")
    code, _, stderr = _build(spec, tmp_path / "out", "--junit", str(link))
    assert code == 0, stderr
    assert link.is_symlink() and os.readlink(link) == str(Path("reports") / "build.xml")
    assert (tmp_path / "reports" / "build.xml").read_text().startswith('<?xml version="1.0"')


def test_rtx_refuses_unsupported_target(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """Named at its line, before the precision step (an fp16 build's overflow guard, conversion)."""
    spec = write_spec("name: conv\nmodel: {models}/conv_static.onnx\nprecision: fp16\ntargets:\n  - '8.6'\n  - '9.0'\n")
    code, _, stderr = _build(spec, tmp_path / "out")
    assert code == 2
    assert f"error: {spec}:6: targets: tensorrt-rtx" in stderr and "cannot compile for 9.0" in stderr
    assert "FP16" not in stderr and "fp16" not in stderr.split("error:")[0]


def test_rtx_refuses_hardware_compatibility(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec("name: c\nmodel: {models}/conv_static.onnx\nbuild: {hardware_compatibility: ampere_plus}\n")
    code, _, stderr = _build(spec, tmp_path / "out")
    assert code == 2 and f"{spec}:3: build.hardware_compatibility" in stderr
    assert "list the GPUs in 'targets:'" in stderr


def test_rtx_refuses_version_compatible_before_the_precision_step(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """TensorRT-RTX engines load only on the release that built them: no engine claims otherwise."""
    spec = write_spec("name: c\nmodel: {models}/conv_static.onnx\nprecision: fp16\nbuild: {version_compatible: true}\n")
    code, _, stderr = _build(spec, tmp_path / "out")
    assert code == 2 and f"error: {spec}:4: build.version_compatible: true is not supported by tensorrt-rtx" in stderr
    assert "the TensorRT-RTX release that built them" in stderr and "backend: tensorrt" in stderr
    assert "FP16" not in stderr and "fp16" not in stderr.split("error:")[0] and not (tmp_path / "out").exists()


def test_spec_error_through_the_cli(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec("name: conv\nmodel: {models}/conv.onnx\nprecison: fp16\n")
    code, _, stderr = _build(spec, tmp_path / "out")
    assert code == 2
    assert stderr.strip() == f"error: {spec}:3: unknown key 'precison' — did you mean 'precision'?"


def test_json_reports_every_spec_and_exits_with_the_most_severe(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    good = write_spec("name: good\nmodel: {models}/conv_static.onnx\ntargets: ['8.6']\n", "good.yaml")
    parser_fails = write_spec("name: bad\nmodel: {models}/unsupported.onnx\n", "bad.yaml")
    unknown_key = write_spec("name: typo\nmodel: x.onnx\nprecison: fp16\n", "typo.yaml")
    result = runner.invoke(
        app, ["build", str(good), str(parser_fails), str(unknown_key), "--out", str(tmp_path / "out"), "--json"]
    )
    assert result.exit_code == 3
    statuses = [(r["status"], r["exit_code"]) for r in json.loads(result.stdout)["results"]]
    assert statuses == [("built", 0), ("failed", 3), ("failed", 2)]


def test_subprocess_help_and_schema() -> None:
    help_run = subprocess.run([sys.executable, "-m", "trtforge", "--help"], capture_output=True, text=True)
    assert help_run.returncode == 0 and "build" in help_run.stdout
    schema = subprocess.run([sys.executable, "-m", "trtforge", "schema"], capture_output=True, text=True)
    assert json.loads(schema.stdout)["title"].startswith("trtforge model spec")


@pytest.mark.slow
def test_ctrl_c_during_build_keeps_the_previous_engine(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(
        "name: deep\nmodel: {models}/deep.onnx\ntargets: ['7.5', '8.0', '8.6', '8.9', '12.0']\nprofiles:\n"
        "  - input: {min: [1, 32, 32, 32], opt: [8, 32, 32, 32], max: [32, 32, 32, 32]}\n"
    )
    out = tmp_path / "out"
    first = subprocess.run(
        [sys.executable, "-m", "trtforge", "build", str(spec), "--out", str(out)], capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    (engine,) = out.glob("*.engine")
    before = engine.read_bytes()
    manifest_before = read_manifest(engine)

    process = subprocess.Popen(
        [sys.executable, "-m", "trtforge", "build", str(spec), "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=as_foreground_job,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "steps)" in line:  # TensorRT's first build phase started
            break
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130, rest
    assert "interrupted" in rest and "Traceback" not in rest
    assert engine.read_bytes() == before
    assert read_manifest(engine) == manifest_before
    stem = engine.name.removesuffix(".engine")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [engine.name, f"{stem}.manifest.json", f"{stem}.accuracy.json", LOCK_DIR]
    )


def test_an_ignored_ctrl_c_stays_ignored_while_tensorrt_builds() -> None:
    """A script's background job (``trtforge build ... &``) has Ctrl-C ignored, and trtforge keeps
    it so; the TensorRT build's own SIGINT hook replaced that, so the terminal's next Ctrl-C (its
    whole process group gets it) cancelled the background build, exit 130."""
    from trtforge.backends.base import _cancel_on_sigint

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _cancel_on_sigint() as cancelled:
            signal.raise_signal(signal.SIGINT)
        assert not cancelled.is_set()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


#: a child that gets Ctrl-C inside ``Thread.start``'s wait for the gate pass it starts (the Nth
#: thread start: 1, the reference's pass; 2, the simulated candidate's), then says which gate
#: passes are still running once the build's context of passes has ended
_CTRL_C_AS_A_PASS_STARTS = """
import signal, sys, threading
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
from trtforge import build
from trtforge.model import inspect_model
from trtforge.precision import Prepared
from trtforge.spec import load_spec

spec = load_spec(Path(sys.argv[1]))
model = inspect_model(spec.model_path)
starts = 0

def ctrl_c_in_start(frame, event, arg):
    global starts
    if event == "call" and frame.f_code is threading.Event.wait.__code__:
        if frame.f_back.f_code is threading.Thread.start.__code__:
            starts += 1
            if starts == int(sys.argv[3]):
                signal.raise_signal(signal.SIGINT)
    return None

sys.settrace(ctrl_c_in_start)
try:
    with build._gate_passes(spec, model, Path(sys.argv[2])) as passes:
        build._start_candidate_pass(passes, spec, model, Prepared(onnx_path=spec.model_path))
    outcome = "not interrupted"
except KeyboardInterrupt:
    outcome = "interrupted"
sys.settrace(None)
print(outcome, [thread.name for thread in threading.enumerate() if thread.name == "trtforge-gate-pass"])
"""


@pytest.mark.parametrize("start", [1, 2], ids=["reference", "candidate"])
def test_ctrl_c_as_a_gate_pass_starts_still_stops_and_joins_it(tmp_path: Path, start: int) -> None:
    """Ctrl-C in ``Thread.start``'s wait for a gate pass's thread left that thread running and
    known to no one: the build unwound without stopping it, and at exit Python 3.11 ended it inside
    onnxruntime's C++ ("terminate called without an active exception", SIGABRT: about 1 Ctrl-C in
    200 of an int8 build). The Ctrl-C now waits until the pass is recorded, so it is stopped and
    joined like the others."""
    result = subprocess.run(
        [sys.executable, "-c", _CTRL_C_AS_A_PASS_STARTS, REPO / "configs" / "digits-fp16.yaml", tmp_path, str(start)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "interrupted []", "")


def test_sigterm_still_cancels_a_ci_worker_s_build_where_ctrl_c_is_ignored() -> None:
    """``ci``'s worker turns SIGTERM into Ctrl-C to cancel its build; where Ctrl-C is ignored (a
    script's background ``trtforge ci &``) and the build leaves it so, SIGTERM reached no hook: the
    build went on until ``ci`` killed the worker, 3 s later (regression of keeping it ignored)."""
    from trtforge.backends.base import _cancel_on_sigint
    from trtforge.ci import _terminate_as_interrupt

    previous = {stop: signal.getsignal(stop) for stop in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt), _cancel_on_sigint() as cancelled:
            signal.raise_signal(signal.SIGTERM)
            assert cancelled.is_set()  # the progress monitor stops the build at its next step
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)


#: a child that gets Ctrl-C as soon as ``staged_file`` has made a temporary for a digest cache
#: entry and hands it out (inside ``with``'s ``__enter__``: no ``finally`` of its own runs then)
_CTRL_C_AS_A_CACHE_ENTRY_IS_STAGED = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
sys.argv = ['/usr/bin/trtforge', *sys.argv[1:]]
from trtforge import fsutil
staging = fsutil.staged_file.__wrapped__.__code__

def tracer(frame, event, arg):
    return handing_out if frame.f_code is staging else None

def handing_out(frame, event, arg):
    if event == "return" and "digests" in str(frame.f_locals.get("final", "")):
        sys.settrace(None)
        signal.raise_signal(signal.SIGINT)
    return handing_out

sys.settrace(tracer)
from trtforge.cli import main
main()
"""


def test_ctrl_c_as_a_cache_entry_is_staged_leaves_no_temporary(tmp_path: Path) -> None:
    """A Ctrl-C right after ``staged_file`` made its temporary, before the ``with`` block owned it,
    left the file in the cache folder (2 interrupted int8 builds in 400) until the next run's sweep:
    a failed command now removes the plain temporaries it still owns before it exits."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    spec = REPO / "configs" / "digits-fp32.yaml"
    result = subprocess.run(
        [sys.executable, "-c", _CTRL_C_AS_A_CACHE_ENTRY_IS_STAGED, "build", str(spec), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TRTFORGE_CACHE_DIR": str(cache)},
    )
    assert result.returncode == 130, result.stderr
    assert (cache / "digests").is_dir()  # the Ctrl-C came as its entry was written
    left = [path for path in [*cache.rglob(".*"), *out.rglob(".*")] if path.name != LOCK_DIR]
    assert left == []


def test_a_failed_command_keeps_a_commit_s_journal_and_backups(tmp_path: Path) -> None:
    """What ``discard_stranded_temps`` leaves: a commit's journal and backups, which the next run's
    recovery needs where a rollback failed; a plain temporary goes, a file or a folder."""
    from trtforge.fsutil import discard_stranded_temps, make_temp, make_temp_dir, release_temp

    plain, folder = make_temp(tmp_path, "engine"), make_temp_dir(tmp_path, "entry")
    kept = [make_temp(tmp_path, "engine", suffix) for suffix in (".journal.tmp", ".bak.tmp")]
    discard_stranded_temps()
    assert not plain.exists() and not folder.exists()
    assert all(path.exists() for path in kept)
    for path in kept:
        release_temp(path)


def test_a_failed_command_leaves_a_live_thread_its_temporaries(tmp_path: Path) -> None:
    """``discard_stranded_temps`` removes the temporaries of the failed command's thread and of
    threads that have ended; one that another thread still writes is that thread's to finish."""
    import threading

    from trtforge.fsutil import discard_stranded_temps, make_temp, release_temp

    made: dict[str, Path] = {}
    writing, done = threading.Event(), threading.Event()

    def work(name: str, wait: bool) -> None:
        made[name] = make_temp(tmp_path, name)
        if wait:
            writing.set()
            done.wait(60)

    ended = threading.Thread(target=work, args=("ended", False))
    ended.start()
    ended.join()
    live = threading.Thread(target=work, args=("live", True))
    live.start()
    assert writing.wait(60)
    mine = make_temp(tmp_path, "mine")
    try:
        discard_stranded_temps()
        assert not mine.exists() and not made["ended"].exists()
        assert made["live"].exists()
    finally:
        done.set()
        live.join()
        release_temp(made["live"])


def test_a_failed_build_leaves_the_emulation_thread_its_cache_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed command removes the temporaries it still owns, but not those of a thread still at
    work: on a GPU host nothing waits for the FP16-storage emulation (the engine is the gate's
    candidate), so a build the backend refuses exits while it writes its ``fp16-emulated/`` entry.
    The failed command removed that entry's temporary under it, and the entry was lost."""
    import threading

    from trtforge import build, fsutil
    from trtforge.errors import BuildError

    cache = tmp_path / "cache"
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(cache))
    staged, finish = threading.Event(), threading.Event()
    flush = fsutil.fsync_file

    def emulation_still_writing(path: Path) -> None:
        if threading.current_thread().name == "trtforge-emulation":
            staged.set()
            assert finish.wait(60)
        flush(path)

    class Refusing:
        def __init__(self, backend: object) -> None:
            self.backend = backend

        def __getattr__(self, name: str) -> object:
            return getattr(self.backend, name)

        def build(self, request: object, monitor: object) -> object:
            assert staged.wait(60)
            raise BuildError("the builder refused the model")

    opened = build.open_backend
    monkeypatch.setattr(fsutil, "fsync_file", emulation_still_writing)
    monkeypatch.setattr(build, "open_backend", lambda flavor: Refusing(opened(flavor)))
    monkeypatch.setattr(build, "_start_candidate_pass", lambda *args: None)  # a GPU host's gate runs the engine
    code, _, err = _build(REPO / "configs" / "digits-fp16.yaml", tmp_path / "out")
    finish.set()
    for thread in threading.enumerate():
        if thread.name == "trtforge-emulation":
            thread.join(60)
    assert code == 3, err
    assert len(list((cache / "fp16-emulated").glob("*.onnx"))) == 1
    assert [path.name for path in (cache / "fp16-emulated").iterdir() if path.name.startswith(".")] == []


def test_invalid_model_the_parser_rejects_is_named_by_the_onnx_checker(tmp_path: Path) -> None:
    """The build describes the model from its protobuf alone (no onnx checker, issue 16); when
    the backend cannot parse it, onnx's checker still says what is wrong, as exit 2."""
    need_rtx()
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["nowhere"], ["y"])],  # reads a tensor nothing produces
        "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "broken.onnx").write_bytes(model.SerializeToString())
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: broken\nmodel: {tmp_path / 'broken.onnx'}\nprecision: fp32\ntargets: ['8.6']\n")
    code, _, stderr = _build(spec, tmp_path / "out")
    assert code == 2, stderr
    assert "invalid ONNX model" in stderr and "Traceback" not in stderr
    assert _engines(tmp_path / "out") == []


PROFILE = "profiles:\n  - input: {min: [1, 1, 8, 8], opt: [1, 1, 8, 8], max: [1, 1, 8, 8]}\n"


@pytest.mark.parametrize(
    "refusal",
    ["", PROFILE + "accuracy: {data: /nonexistent/*.npy}\n"],
    ids=["no profile for a dynamic input", "data glob matching nothing"],
)
def test_a_spec_refused_before_its_build_leaves_no_output_folder(tmp_path: Path, refusal: str) -> None:
    """README: a refused command leaves the disk as it was. build made --out (and its parents)
    before the spec's own checks, so a refused spec left empty folders behind."""
    digits = Path(__file__).resolve().parent.parent / "calibration" / "digits" / "digits_cnn.onnx"
    spec = tmp_path / "refused.yaml"
    spec.write_text(f"name: refused\nmodel: {digits}\ntargets: ['8.6']\n{refusal}")
    out = tmp_path / "made" / "by" / "build"
    result = CliRunner().invoke(app, ["build", str(spec), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "made").exists()
