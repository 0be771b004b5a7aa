"""``trtforge build`` runs TensorRT in a process forked as it starts (``trtforge.buildworker``):
the same engine and the same errors as a build in trtforge's own process, and no process left
behind however the build ends. Every test runs the real ``trtforge`` program (the build process is
forked only there, never in an in-process CLI run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from models import need_rtx

from trtforge.buildworker import OPT_OUT, wanted
from trtforge.manifest import read_manifest

#: prints, at exit, the pid of each process trtforge forked and whether TensorRT is imported in trtforge's own
PROGRAM = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('TENSORRT', 'tensorrt_rtx' in sys.modules, file=sys.stderr))\n"
    "sys.argv = ['trtforge', *sys.argv[1:]]\n"
    "from trtforge.cli import main\n"
    "main()\n"
)

DEEP_SPEC = (
    "name: deep\nmodel: {models}/deep.onnx\ntargets: ['7.5', '8.0', '8.6', '8.9', '12.0']\nprofiles:\n"
    "  - input: {min: [1, 32, 32, 32], opt: [8, 32, 32, 32], max: [32, 32, 32, 32]}\naccuracy: {enabled: false}\n"
)


def _trtforge(*args: str, in_process: bool = False) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, OPT_OUT: "0" if in_process else "1"}
    return subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True, env=environment)


def _conv_spec(write_spec: Callable[..., Path], model: str = "conv.onnx", extra: str = "") -> Path:
    return write_spec(
        f"name: conv\nmodel: {{models}}/{model}\nprecision: fp32\ntargets: ['8.6']\n"
        "profiles:\n  - {input: {min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}}\n"
        f"accuracy: {{enabled: false}}\n{extra}",
        name="conv.yaml",
    )


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _gone(pid: int, seconds: float = 10.0) -> bool:
    """Whether process ``pid`` ended (reaped, or a zombie nobody waits for) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.02)
    return False


def _start_build(spec: Path, out: Path) -> tuple[subprocess.Popen[str], int]:
    """A ``trtforge build`` whose TensorRT build has started, and its build process's pid."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trtforge", "build", str(spec), "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", OPT_OUT: "1"},
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "steps)" in line:  # TensorRT's first build phase started, in the build process
            break
    (worker,) = _children(process.pid)
    return process, worker


def test_the_build_command_line_alone_forks_a_build_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OPT_OUT, raising=False)
    assert wanted(["trtforge", "build", "a.yaml"]) and wanted(["trtforge", "build", "-o", "build", "a.yaml"])
    assert not wanted(["trtforge", "build", "--help"]) and not wanted(["trtforge", "ci", "build"])
    assert not wanted(["trtforge", "verify", "build"]) and not wanted(["trtforge"])
    monkeypatch.setenv(OPT_OUT, "0")
    assert not wanted(["trtforge", "build", "a.yaml"])


def test_the_build_process_builds_the_engine_trtforge_would(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """Byte for byte the engine of an in-process build, the same manifest facts, and TensorRT
    imported in the build process only."""
    need_rtx()
    spec = _conv_spec(write_spec)
    engines = {}
    for in_process in (False, True):
        out = tmp_path / f"in-process-{in_process}"
        done = _trtforge("build", str(spec), "--out", str(out), in_process=in_process)
        assert done.returncode == 0, done.stderr
        assert f"TENSORRT {in_process}" in done.stderr
        (engine,) = out.glob("*.engine")
        manifest = read_manifest(engine)
        engines[in_process] = (engine.name, engine.read_bytes(), manifest.io, manifest.gpu, manifest.artifact)
    assert engines[False] == engines[True]


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("unsupported.onnx", ""),  # the ONNX parser refuses it: its error, then onnx's checker
        ("conv.onnx", "build: {version_compatible: true}\n"),  # the flavor's refusal (check_targets), exit 2
    ],
)
def test_the_build_process_fails_a_build_as_trtforge_would(
    write_spec: Callable[..., Path], tmp_path: Path, model: str, extra: str
) -> None:
    need_rtx()
    spec = _conv_spec(write_spec, model, extra)
    outcomes = []
    for in_process in (False, True):
        done = _trtforge("build", str(spec), "--out", str(tmp_path / "out"), in_process=in_process)
        error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        outcomes.append((done.returncode, error))
    assert outcomes[0] == outcomes[1] and outcomes[0][0] in (2, 3) and len(outcomes[0][1]) == 1, outcomes
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.engine"))


@pytest.mark.slow
def test_a_build_process_killed_mid_build_fails_that_build_with_exit_3(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """Killed for memory, or TensorRT crashing: trtforge says so (exit 3, the signal named), leaves
    no artifact, and the next spec of the same command builds in trtforge's own process."""
    need_rtx()
    spec = write_spec(DEEP_SPEC)
    second = _conv_spec(write_spec)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "trtforge", "build", str(spec), str(second), "--out", str(out), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", OPT_OUT: "1"},
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "steps)" in line:
            break
    (worker,) = _children(process.pid)
    os.kill(worker, signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 3, stderr
    assert "the process running tensorrt-rtx's build ended (killed by SIGKILL)" in stdout
    assert "Traceback" not in stderr
    assert [path.name.split("-")[0] for path in out.glob("*.engine")] == ["conv"]


@pytest.mark.slow
def test_ctrl_c_during_a_build_ends_the_build_process(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    need_rtx()
    process, worker = _start_build(write_spec(DEEP_SPEC), tmp_path / "out")
    process.send_signal(signal.SIGINT)  # to trtforge alone: the build process must not outlive it
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130, rest
    assert _gone(worker), "the build process outlived an interrupted trtforge"


@pytest.mark.slow
def test_the_build_process_dies_with_trtforge(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """SIGKILL leaves trtforge no chance to end it: the kernel does (PR_SET_PDEATHSIG)."""
    need_rtx()
    process, worker = _start_build(write_spec(DEEP_SPEC), tmp_path / "out")
    process.kill()
    process.communicate(timeout=120)
    assert _gone(worker), "the build process outlived a killed trtforge"
