"""Start-up: commands that need no model, array or TensorRT never import onnx, numpy or TensorRT.

Measured with ``python -X importtime`` in a fresh process, so what the command really imports is
seen (an in-process run would inherit the test session's modules)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("onnx", "numpy", "pydantic", "tensorrt", "tensorrt_rtx", "onnxruntime")


def _all_imported(*args: str) -> set[str]:
    """What ``trtforge ARGS`` imports. It must have run (exit 0 and said something): a process that
    stopped before the command imported nothing heavy either, and would pass."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "trtforge", *args],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    timings = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    said = result.stdout + "".join(line for line in result.stderr.splitlines() if not line.startswith("import time:"))
    assert result.returncode == 0 and said.strip(), result.stderr[-3000:]
    return {line.split("|")[-1].strip() for line in timings}


def _imported(*args: str) -> set[str]:
    return {name for name in _all_imported(*args) if name.split(".")[0] in HEAVY}


def _modules_at_exit(*args: str, env: dict[str, str] | None = None) -> set[str]:
    """Every module of a ``trtforge ARGS`` process, read from ``sys.modules`` at exit (``-X importtime``
    leaves out modules it reached through ``importlib.import_module`` inside a package's own import)."""
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('MODULES', *sorted(sys.modules), file=sys.stderr))\n"
        "sys.argv = ['trtforge', *sys.argv[1:]]\n"
        "from trtforge.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return set(done.stderr.split("MODULES", 1)[1].split())


def test_help_imports_no_heavy_library() -> None:
    assert _imported("--help") == set()


@pytest.fixture
def manifest_only(tmp_path: Path) -> Path:
    """An engine file and its manifest (a real engine is not needed to judge `--cc`)."""
    engine = tmp_path / "m-fp32-rtx1.7-sm86-linux_x86_64.engine"
    engine.write_bytes(b"engine bytes")
    from trtforge.digests import sha256_file
    from trtforge.manifest import manifest_path_for

    manifest = {
        "schema": "trtforge/manifest/v1",
        "name": "m",
        "precision": "fp32",
        "tag": "rtx1.7-sm86-linux_x86_64",
        "artifact": {"file": engine.name, "sha256": sha256_file(engine), "size": engine.stat().st_size},
        "source": {"onnx_sha256": "0" * 64, "spec_sha256": "0" * 64},
        "tensorrt": {"flavor": "tensorrt-rtx", "version": "1.7.1.116", "version_compatible": False},
        "gpu": {
            "compute_capabilities": ["8.6"],
            "and_later_from": None,
            "hardware_compatibility": "none",
            "build_device": None,
        },
        "platform": {"os": "linux", "machine": "x86_64"},
        "profiles": [],
        "io": [],
        "calibration": None,
        "accuracy": None,
        "build": {"trtforge_version": "0.1.0", "created_utc": "2025-01-01T00:00:00Z", "seconds": 1.0},
    }
    manifest_path_for(engine).write_text(json.dumps(manifest))
    return engine


@pytest.mark.parametrize("command", [["check", "--cc", "8.6"], ["inspect"]], ids=["check-cc", "inspect"])
def test_check_and_inspect_import_no_onnx_numpy_or_tensorrt(manifest_only: Path, command: list[str]) -> None:
    """They read a manifest (pydantic) and hash a file: nothing else heavy."""
    roots = {name.split(".")[0] for name in _imported(command[0], str(manifest_only), *command[1:])}
    assert roots <= {"pydantic"}


def test_a_build_imports_what_it_uses_only(tmp_path: Path) -> None:
    """A build with the gate off and no signing key: no report models, no signing code or
    cryptography, no onnxruntime or numpy (the model is described from its protobuf)."""
    from models import conv_net, need_rtx

    from trtforge.keys import SIGNING_KEY_ENV

    need_rtx()
    model = conv_net(tmp_path / "conv.onnx")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: conv\nmodel: {model}\nprecision: fp32\ntargets: ['8.6']\n"
        "profiles:\n  - {input: {min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}}\n"
        "accuracy: {enabled: false}\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != SIGNING_KEY_ENV}
    names = _modules_at_exit("build", str(spec), "--out", str(tmp_path / "out"), env=environment)
    assert "trtforge.build" in names and "tensorrt_rtx" in names  # it did build
    unused = {"trtforge.accuracy.report", "trtforge.signing", "cryptography", "onnxruntime", "numpy"}
    assert names & unused == set()


def test_command_modules_name_every_command_of_the_app() -> None:
    """``trtforge COMMAND`` imports only COMMAND_MODULES[COMMAND]: the table must be the app's."""
    import typer

    from trtforge.cli import COMMAND_MODULES, app, make_app

    assert sorted(typer.main.get_command(app).commands) == sorted(COMMAND_MODULES)  # type: ignore[attr-defined]
    for command, module in COMMAND_MODULES.items():
        assert command in typer.main.get_command(make_app([module])).commands  # type: ignore[attr-defined]


def test_a_command_imports_its_own_module_only(manifest_only: Path) -> None:
    """No other command's module (nor NVML: the target's compute capability is given) on its start-up."""
    names = _modules_at_exit("check", str(manifest_only), "--cc", "8.6")
    commands = {name for name in names if name.startswith("trtforge.cli.") and name.endswith("_commands")}
    assert commands == {"trtforge.cli.check_commands"}
    assert "pynvml" not in names


def test_help_lists_every_command() -> None:
    from trtforge.cli import COMMAND_MODULES

    shown = subprocess.run([sys.executable, "-m", "trtforge", "--help"], capture_output=True, text=True, check=True)
    listed = {line.split()[0] for line in shown.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == set(COMMAND_MODULES)


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        ("/usr/bin/trtforge", "paused during start-up: True; resumed: True; frozen: True"),
        ("/tmp/some_test.py", "paused during start-up: False; resumed: True; frozen: False"),
    ],
)
def test_collector_pauses_for_start_up_in_trtforge_own_process_only(program: str, expected: str) -> None:
    """trtforge's own process pauses the cyclic collector while it imports and freezes what the
    imports made once the command starts; a program that imports trtforge.cli keeps its collector."""
    script = (
        "import gc, sys\n"
        f"sys.argv = [{program!r}, 'build', 'spec.yaml']\n"
        "from trtforge.cli import early\n"
        "paused = not gc.isenabled()\n"
        "early.start_command()\n"
        "print(f'paused during start-up: {paused}; resumed: {gc.isenabled()}; frozen: {gc.get_freeze_count() > 0}')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == expected


@pytest.mark.parametrize("started", [False, True])
def test_ctrl_c_during_start_up_exits_130_in_one_line(started: bool) -> None:
    """Ctrl-C while typer and pydantic still import is exit 130 and one line, not a traceback of
    whichever import ran; once the command starts it is a KeyboardInterrupt again (each command
    cleans up on it). The signal is sent by the child itself, at a known point."""
    script = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal\n"
        "sys.argv = ['/usr/bin/trtforge', 'build', 'spec.yaml']\n"
        "from trtforge.cli import early\n" + ("early.start_command()\n" if started else "") + "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "except KeyboardInterrupt:\n"
        "    print('KeyboardInterrupt')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60)
    if started:
        assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "KeyboardInterrupt", "")
    else:
        assert result.returncode == 130 and result.stdout == ""
        assert result.stderr == "interrupted: the command had not started\n"


#: what the children below run first: the profiler their last argument names, ``profiler`` ("function":
#: a ``sys.setprofile`` function; "cProfile": ``python -m cProfile -m trtforge``'s; "none"); each
#: prints at its end whether it is still the one set
_SET_PROFILER = """
import cProfile, sys
profiler = None
if sys.argv[-1] == 'function':
    def profiler(frame, event, arg):
        pass
    sys.setprofile(profiler)
elif sys.argv[-1] == 'cProfile':
    profiler = cProfile.Profile()
    profiler.enable()
"""


#: a child that takes CPython's import lock (``_imp``), waits until the main thread waits for it in
#: ``sys.argv[2]`` (importlib's ``_get_module_lock``, or that lock's weakref callback ``cb``), sends
#: it Ctrl-C there and lets go; the main thread then starts a gate pass that imports a module and
#: waits for it, as an interrupted build does
_CTRL_C_IN_AN_IMPORT = (
    _SET_PROFILER
    + """
import _imp, importlib, signal, sys, threading, time, types
from pathlib import Path
sys.path.insert(0, sys.argv[1])
where = sys.argv[2]
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
sys.argv = ['/usr/bin/trtforge', 'build', 'spec.yaml']
from trtforge.cli import early
from trtforge.accuracy.gate import GatePass
early.start_command()
handshake = sys.modules['handshake'] = types.SimpleNamespace(entered=threading.Event(), go=threading.Event())
held = threading.Event()
main = threading.main_thread()

def ctrl_c_inside():
    if where == 'cb':
        handshake.entered.wait()  # the main thread runs the module's own code: no import lock held
    _imp.acquire_lock()
    try:
        held.set()
        handshake.go.set()
        deadline = time.monotonic() + 20
        while sys._current_frames()[main.ident].f_code.co_name != where and time.monotonic() < deadline:
            time.sleep(0.001)
        signal.pthread_kill(main.ident, signal.SIGINT)
        time.sleep(0.2)  # delivered while the main thread still waits
    finally:
        _imp.release_lock()

sender = threading.Thread(target=ctrl_c_inside)
sender.start()
if where != 'cb':
    held.wait()
outcome = 'not interrupted'
try:
    import first
    for _ in range(100):
        time.sleep(0.001)
except KeyboardInterrupt:
    outcome = 'interrupted'
sender.join()
gate = GatePass(lambda stop: (importlib.import_module('second').outputs, None), 'reference', Path)
gate.close()
print(outcome, gate.outputs()[0], 'profiler kept:', sys.getprofile() is profiler)
"""
)


@pytest.mark.parametrize("profiled", ["none", "function"])
@pytest.mark.parametrize("where", ["_get_module_lock", "cb"])
def test_ctrl_c_inside_the_import_machinery_leaves_no_import_lock_held(
    tmp_path: Path, where: str, profiled: str
) -> None:
    """Ctrl-C landing in importlib between its taking the import lock and the ``try`` that gives
    it back left the lock held by the main thread: a gate pass's import then waited forever, and
    so did the interrupted build, joining that pass (a build hung ~3 times in 100 Ctrl-Cs); landing
    in the lock's weakref callback, it was also dropped (``Exception ignored``) and the build went
    on. Once the command runs, Ctrl-C there is raised at the first instruction outside importlib.
    With a profile function set it lands in that function, called from importlib: raised there, it
    unset the profiler and still broke the import (a hang)."""
    (tmp_path / "first.py").write_text("import handshake\nhandshake.entered.set()\nhandshake.go.wait()\n")
    (tmp_path / "second.py").write_text("outputs = []\n")
    try:
        result = subprocess.run(
            [sys.executable, "-c", _CTRL_C_IN_AN_IMPORT, str(tmp_path), where, profiled],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"hung: the gate pass's import waits for the import lock ({hung.stderr!r})")
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "interrupted [] profiler kept: True", "")


#: a child's meta path finder that sends the child Ctrl-C as the import system looks ``module`` up
_CTRL_C_WHEN_LOOKED_UP = """
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
"""

#: a child that gets Ctrl-C while a C extension's module init runs Python: ``_elementtree``'s
#: init imports ``xml.etree.ElementPath``, whose finding sends it
_CTRL_C_IN_AN_EXTENSION_S_INIT = (
    _SET_PROFILER
    + """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
sys.argv = ['/usr/bin/trtforge', 'build', 'spec.yaml']
from trtforge.cli import early
early.start_command()
"""
    + _CTRL_C_WHEN_LOOKED_UP.format(module="xml.etree.ElementPath")
    + """
outcome = 'not interrupted'
try:
    import _elementtree
    time.sleep(0.01)
except KeyboardInterrupt:
    outcome = 'interrupted'
print(outcome, '_elementtree' in sys.modules, 'profiler kept:', sys.getprofile() is profiler)
"""
)


@pytest.mark.parametrize("profiled", ["none", "function", "cProfile"])
def test_ctrl_c_in_a_c_extension_s_module_init_waits_for_it(profiled: str) -> None:
    """Ctrl-C while a C extension's module init ran Python (onnx's nanobind init creating an enum)
    was raised there: the init failed half-way, and nanobind's C++ exception for it ended the
    process (std::terminate, SIGABRT) instead of exit 130; pybind11's became "initialization
    failed". Once the command runs, it is raised when the init is done. The profiler set before
    (``python -m cProfile``'s, a ``sys.setprofile`` function) is set again: it was unset, as the
    interrupt was raised from the profile function that held it back."""
    result = subprocess.run(
        [sys.executable, "-c", _CTRL_C_IN_AN_EXTENSION_S_INIT, profiled], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "interrupted True profiler kept: True", "")


def test_ctrl_c_held_back_in_an_import_is_raised_before_the_next_c_call_runs() -> None:
    """With no profiler set, a Ctrl-C held back in a C extension's init was raised when the next C
    function was called, before it ran; marked received as the profile function returned instead,
    it waited for that call to end (a ``time.sleep(20)`` first: 20 s before exit 130)."""
    script = _CTRL_C_IN_AN_EXTENSION_S_INIT.replace("time.sleep(0.01)", "sleep(20)").replace(
        "outcome = 'not interrupted'", "outcome, sleep, started = 'not interrupted', time.sleep, time.monotonic()"
    )
    script += "print(time.monotonic() - started < 10)\n"
    result = subprocess.run([sys.executable, "-c", script, "none"], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.split(), result.stderr) == (
        0,
        ["interrupted", "True", "profiler", "kept:", "True", "True"],
        "",
    )


#: a child whose main thread imports a module another thread is importing (and holds, until told):
#: Ctrl-C while it waits for that import, then (``sys.argv[2]`` == "twice") a second one
_CTRL_C_WHILE_AN_IMPORT_WAITS = (
    _SET_PROFILER
    + """
import importlib, signal, sys, threading, time, types
sys.path.insert(0, sys.argv[1])
twice = sys.argv[2] == 'twice'
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
sys.argv = ['/usr/bin/trtforge', 'build', 'spec.yaml']
from trtforge.cli import early
from trtforge.errors import INSIST_AFTER_S
early.start_command()
handshake = sys.modules['handshake'] = types.SimpleNamespace(entered=threading.Event(), go=threading.Event())
importer = threading.Thread(target=importlib.import_module, args=('first',))
importer.start()
handshake.entered.wait()
main = threading.main_thread()
seen = []

def ctrl_c():
    deadline = time.monotonic() + 20
    while sys._current_frames()[main.ident].f_code.co_name != 'acquire' and time.monotonic() < deadline:
        time.sleep(0.001)
    signal.pthread_kill(main.ident, signal.SIGINT)
    time.sleep(0.3)
    seen.append(sys._current_frames()[main.ident].f_code.co_name)  # still waiting: deferred
    if twice:
        signal.pthread_kill(main.ident, signal.SIGINT)  # as ci forwards a terminal's Ctrl-C: the same one
        time.sleep(0.3)
        seen.append(sys._current_frames()[main.ident].f_code.co_name)
        time.sleep(INSIST_AFTER_S)
        signal.pthread_kill(main.ident, signal.SIGINT)  # the user's second Ctrl-C
        time.sleep(0.3)
    handshake.go.set()

sender = threading.Thread(target=ctrl_c)
sender.start()
try:
    import first
    for _ in range(100):
        time.sleep(0.001)
    outcome = 'not interrupted'
except KeyboardInterrupt:
    outcome = 'interrupted once it ended' if handshake.go.is_set() else 'interrupted while the import ran'
sender.join()
print(*seen, outcome, 'profiler kept:', sys.getprofile() is profiler)
"""
)


@pytest.mark.parametrize(
    ("times", "profiled", "expected"),
    [
        ("once", "none", "acquire interrupted once it ended"),
        ("once", "function", "acquire interrupted once it ended"),
        ("twice", "none", "acquire acquire interrupted while the import ran"),
        ("twice", "cProfile", "acquire acquire interrupted while the import ran"),
    ],
)
def test_ctrl_c_while_another_thread_s_import_runs_waits_for_it_unless_repeated(
    tmp_path: Path, times: str, profiled: str, expected: str
) -> None:
    """Ctrl-C while the main thread waits for another thread's import of the same module (inside
    importlib's lock) is raised once that import ends, not lost; the same Ctrl-C again (``ci``
    forwards a terminal's to its workers) waits too, and one ``INSIST_AFTER_S`` later is raised at
    once (an import that never ends must not make Ctrl-C useless). Either way the profiler set
    before is set again (cProfile's, given back as the function it is not, made the insisting
    Ctrl-C a TypeError)."""
    (tmp_path / "first.py").write_text("import handshake\nhandshake.entered.set()\nhandshake.go.wait()\n")
    result = subprocess.run(
        [sys.executable, "-c", _CTRL_C_WHILE_AN_IMPORT_WAITS, str(tmp_path), times, profiled],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, f"{expected} profiler kept: True", "")


@pytest.mark.parametrize(
    ("runs_main", "preset", "expected"),
    [
        (True, None, "scanned: False; setting: __all__"),
        (True, "logfire", "scanned: True; setting: logfire"),  # the user's own choice stands
        (False, None, "scanned: True; setting: None"),
    ],
    ids=["trtforge", "user-setting", "importer"],
)
def test_pydantic_plugins_are_not_looked_for_by_the_cli(runs_main: bool, preset: str | None, expected: str) -> None:
    """pydantic scans every installed distribution's entry points for plugins when a process builds
    its first model; the CLI's ``main`` turns that off, a program that only imports trtforge.cli
    keeps pydantic's default (plugins on), and a user's own setting is kept."""
    script = (
        "import contextlib, os, sys\n"
        "sys.argv = ['trtforge', '--help']\n"
        "from trtforge import cli\n"
        "import pydantic.plugin._loader as loader\n"
        "scans = []\n"
        "loader.entry_points = lambda **selection: scans.append(selection) or []\n"
        f"if {runs_main}:\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):\n"
        "        cli.main()\n"
        "from pydantic import BaseModel\n"
        "class Model(BaseModel):\n"
        "    value: int\n"
        "print(f'scanned: {bool(scans)}; setting: {os.environ.get(\"PYDANTIC_DISABLE_PLUGINS\")}')\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != "PYDANTIC_DISABLE_PLUGINS"}
    if preset is not None:
        environment["PYDANTIC_DISABLE_PLUGINS"] = preset
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=environment)
    assert result.stdout.strip().splitlines()[-1] == expected


def test_the_exit_freezes_what_the_command_made_in_trtforge_own_process_only() -> None:
    """Before the process ends, what the command made is frozen, so finalization's collections
    skip it; a program that imports trtforge.cli keeps its objects collectable."""
    script = (
        "import gc, sys\n"
        "sys.argv = [sys.argv[1], 'build', 'spec.yaml']\n"
        "from trtforge.cli import early\n"
        "early.start_command()\n"
        "made = [[index] for index in range(1000)]\n"
        "before = gc.get_freeze_count()\n"
        "early.exiting()\n"
        "print(gc.get_freeze_count() - before >= len(made))\n"
    )
    for program, frozen in (("trtforge", "True"), ("/tmp/some_test.py", "False")):
        result = subprocess.run([sys.executable, "-c", script, program], capture_output=True, text=True, check=True)
        assert result.stdout.strip() == frozen, program


def test_a_command_runs_with_the_collector_on(tmp_path: Path) -> None:
    """Every command resumes the collector as it starts: a long `serve` or a
    build must not run without it."""
    script = (
        "import gc, sys\n"
        "sys.argv = ['trtforge', 'check', sys.argv[1]]\n"
        "from trtforge.cli import early\n"
        "import trtforge.cli.common as common\n"
        "seen = []\n"
        "common.exits_cleanly(lambda: seen.append(gc.isenabled()))()\n"
        "print(seen)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "missing.engine")], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[True]"


#: ``trtforge ARGS`` in a child whose Ctrl-C arrives while TensorRT-RTX's bindings (a C extension) are
#: being imported, the backend's import under way
_CTRL_C_AS_THE_BACKEND_IMPORTS = (
    """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
"""
    + _CTRL_C_WHEN_LOOKED_UP.format(module="tensorrt_rtx_bindings.tensorrt_rtx")
    + """
sys.argv = ['/usr/bin/trtforge', *sys.argv[1:]]
from trtforge.cli import main
main()
"""
)


def test_ctrl_c_while_the_backend_imports_is_an_interrupt(tmp_path: Path) -> None:
    """Ctrl-C during ``import tensorrt_rtx`` in a build: exit 130 and the one interrupted line, not
    "tensorrt-rtx is installed but does not import" (exit 2), nor a build that goes on."""
    from models import need_rtx

    from trtforge.cli.common import INTERRUPTED

    need_rtx()
    spec = Path(__file__).resolve().parent.parent / "configs" / "digits-fp32.yaml"
    result = subprocess.run(
        [sys.executable, "-c", _CTRL_C_AS_THE_BACKEND_IMPORTS, "build", str(spec), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TRTFORGE_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert (result.returncode, result.stderr.splitlines()[-1:]) == (130, [INTERRUPTED]), result.stderr
    assert "does not import" not in result.stderr and not (tmp_path / "out").exists()


#: a ``sitecustomize`` that has ``python -m trtforge``'s command handle a Ctrl-C raised inside code
#: ``exec()`` ran from a string (as one landing in a dataclass's methods being made), last of all
_CTRL_C_HANDLED_IN_EXEC = """
import trtforge.cli

command = trtforge.cli.main

def main():
    try:
        command()
    finally:
        try:
            exec("raise KeyboardInterrupt")
        except KeyboardInterrupt:
            pass

trtforge.cli.main = main
"""


def test_a_handled_ctrl_c_never_makes_python_m_trtforge_die_of_sigint(tmp_path: Path) -> None:
    """CPython flags a KeyboardInterrupt that leaves string-``exec``'d code as unhandled even where
    it is handled, and under ``python -m`` then kills the process with SIGINT as it exits: an
    interrupted build exited -2, not 130 (about 1 in 20 Ctrl-Cs 0.2-0.3 s into a build), and
    ``--version`` would too. The exit code is trtforge's own."""
    (tmp_path / "sitecustomize.py").write_text(_CTRL_C_HANDLED_IN_EXEC)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "trtforge", "--version"], capture_output=True, text=True, env=env)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout.startswith("trtforge ")
