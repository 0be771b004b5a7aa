"""Items 5 and 11 of the trust review: an interrupt or a kill at any step of a commit leaves the old
engine/manifest pair or the new one, never a mix; the next run removes what dead runs left."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from clitools import as_foreground_job, cli
from models import need_rtx
from registry import DIGITS_ONNX, DIGITS_PROFILE, build_engine
from trust import TrustRecorder, leftovers

from trtforge import artifact
from trtforge.cli.common import INTERRUPTED
from trtforge.digests import sha256_file
from trtforge.manifest import manifest_path_for, read_manifest
from trtforge.publish import load_local_artifact

need_rtx()

#: runs the real CLI in a real process that sends itself a signal (argv[1], SIGKILL by default in
#: KILLER) at the commit step given as argv[2]
SIGNALLER = (
    "import os, signal, sys\n"
    "from trtforge import artifact\n"
    "signum, step = getattr(signal, sys.argv[1]), sys.argv[2]\n"
    "def kill(at):\n"
    "    if at == step:\n"
    "        os.kill(os.getpid(), signum)\n"
    "artifact.on_step = kill\n"
    "from trtforge.cli import app\n"
    "app(sys.argv[3:])\n"
)


def run_signalled(signame: str, step: str, *args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SIGNALLER, signame, step, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=as_foreground_job,
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two engines of one artifact stem (same model, another workspace): the old and the new."""
    root = tmp_path_factory.mktemp("commit-engines")
    old = build_engine(root / "old")
    new = build_engine(root / "new", build="{workspace: 256MiB}")
    assert old.name == new.name and sha256_file(old) != sha256_file(new)
    return old, new


def steps_of(run: Callable[[], object], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The commit steps a run goes through, in order (recorded with the protocol's own hook)."""
    seen: list[str] = []
    monkeypatch.setattr(artifact, "on_step", seen.append)
    run()
    monkeypatch.undo()
    return seen


def holds(folder: Path, engine_name: str) -> str:
    """The sha256 of the consistent pair in ``folder`` (the loader's check refuses a mix)."""
    found = load_local_artifact(folder / engine_name)
    return found.manifest.artifact.sha256


def seed_registry(folder: Path, engine: Path) -> None:
    folder.mkdir(parents=True)
    shutil.copy2(engine, folder / engine.name)
    shutil.copy2(manifest_path_for(engine), manifest_path_for(folder / engine.name))


def publish_cases(
    pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, Path, str]]:
    """Per step of ``publish --force`` of the new engine over the old one: the step, a registry
    holding the old pair, and the sha256 the folder must hold after an interrupt at that step."""
    old, new = pair
    probe = tmp_path / "probe"
    seed_registry(probe, old)
    steps = steps_of(lambda: cli("publish", new, "--to", f"dir://{probe}", "--force"), monkeypatch)
    cases = []
    for index, step in enumerate(steps):
        registry = tmp_path / f"registry{index}"
        seed_registry(registry, old)
        before_commit = index < steps.index("commit")
        cases.append((step, registry, read_manifest(old if before_commit else new).artifact.sha256))
    return cases


def test_publish_force_interrupted_at_every_step(
    pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trust_case: TrustRecorder
) -> None:
    old, new = pair
    cases = publish_cases(pair, tmp_path, monkeypatch)
    steps = [step for step, _, _ in cases]
    assert steps[:3] == [f"backup {old.name}", f"backup {manifest_path_for(old).name}", "journal"]
    assert "commit" in steps and len(steps) == 8
    for step, registry, expected in cases:

        def interrupt(at: str, step: str = step) -> None:
            if at == step:
                raise KeyboardInterrupt

        monkeypatch.setattr(artifact, "on_step", interrupt)
        code, _, err = cli("publish", new, "--to", f"dir://{registry}", "--force")
        monkeypatch.undo()
        record = trust_case(5, f"publish --force to dir:// interrupted at '{step}'", code, err, folders=(registry,))
        assert code == 130 and record.one_line and INTERRUPTED in err
        assert holds(registry, old.name) == expected, f"interrupted at {step}"
        assert record.leftovers == ()
        assert sorted(p.name for p in registry.iterdir()) == sorted(
            [old.name, manifest_path_for(old).name, ".trtforge.lock", artifact.LOCK_DIR]
        )


def test_build_interrupted_at_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trust_case: TrustRecorder
) -> None:
    """engine, manifest and accuracy report of a rebuild: the old set or the new one."""
    spec = tmp_path / "spec.yaml"
    out = tmp_path / "out"

    def write(workspace: str, gate: bool) -> None:
        spec.write_text(
            f"name: digits-cnn\nmodel: {DIGITS_ONNX}\nprecision: fp32\nbackend: tensorrt-rtx\ntargets: ['8.6']\n"
            f"profiles:\n{DIGITS_PROFILE}\naccuracy: {{enabled: {str(gate).lower()}, max_samples: 4}}\n"
            f"build: {{workspace: {workspace}}}\n"
        )

    write("1GiB", gate=True)
    assert cli("build", spec, "--out", out)[0] == 0
    (engine,) = out.glob("*.engine")
    old_set = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    assert len(old_set) == 3  # engine, manifest, accuracy report
    write("256MiB", gate=False)  # the rebuild drops the report: the commit removes it
    scratch = tmp_path / "scratch"
    shutil.copytree(out, scratch)
    steps = steps_of(lambda: cli("build", spec, "--out", scratch), monkeypatch)
    new_set = {p.name: p.read_bytes() for p in scratch.iterdir() if not p.name.startswith(".")}
    assert set(new_set) == {engine.name, manifest_path_for(engine).name}
    assert new_set[engine.name] != old_set[engine.name]
    for index, step in enumerate(steps):
        shutil.rmtree(out)
        out.mkdir()
        for name, data in old_set.items():
            (out / name).write_bytes(data)

        def interrupt(at: str, step: str = step) -> None:
            if at == step:
                raise KeyboardInterrupt

        monkeypatch.setattr(artifact, "on_step", interrupt)
        code, _, err = cli("build", spec, "--out", out)
        monkeypatch.undo()
        record = trust_case(5, f"build interrupted at '{step}'", code, err, folders=(out,))
        assert code == 130 and INTERRUPTED in err
        now = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
        if index < steps.index("commit"):
            assert now == old_set, f"interrupted at {step}"
        else:  # the new set (its manifest carries this run's build time)
            assert set(now) == set(new_set) and now[engine.name] == new_set[engine.name], f"interrupted at {step}"
        load_local_artifact(out / engine.name)  # the loader's check: the manifest describes this engine
        assert record.leftovers == ()


def test_sigkill_at_every_step_then_the_next_run_recovers(
    pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trust_case: TrustRecorder
) -> None:
    """A real process killed with SIGKILL at each step of ``publish --force``; the next publish
    to the registry rolls back or keeps the pair, removes the temporaries and says so."""
    old, new = pair
    other = build_engine(tmp_path / "other", targets=["8.9"])  # another stem: the "next run"
    cases = publish_cases(pair, tmp_path, monkeypatch)
    for step, registry, expected in cases:
        killed = run_signalled("SIGKILL", step, "publish", new, "--to", f"dir://{registry}", "--force")
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        left = leftovers(registry)
        assert left or step == cases[-1][0], f"a kill at {step} leaves temporaries behind"
        code, _, err = cli("publish", other, "--to", f"dir://{registry}")
        record = trust_case(
            5, f"SIGKILL during publish --force at '{step}', then the next publish", code, err, folders=(registry,)
        )
        assert code == 0, err
        assert (f"removed {len(left)} stale temporar" in err) == bool(left) and ("of dead runs" in err) == bool(left)
        assert holds(registry, old.name) == expected, f"killed at {step}"
        assert record.leftovers == ()


@pytest.mark.parametrize(("signame", "exit_code"), [("SIGINT", 130), ("SIGTERM", -signal.SIGTERM)])
def test_a_real_signal_inside_the_commit_window_is_deferred(
    pair: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    trust_case: TrustRecorder,
    signame: str,
    exit_code: int,
) -> None:
    """Ctrl-C or SIGTERM delivered at each step of ``publish --force``: before the commit point the
    old pair stays, after it the new one; the process still ends as the signal says."""
    old, new = pair
    for step, registry, expected in publish_cases(pair, tmp_path, monkeypatch):
        done = run_signalled(signame, step, "publish", new, "--to", f"dir://{registry}", "--force")
        record = trust_case(
            5, f"{signame} during publish --force at '{step}'", done.returncode, done.stderr, folders=(registry,)
        )
        assert done.returncode == exit_code, done.stderr
        if signame == "SIGINT":
            assert record.one_line and INTERRUPTED in done.stderr
        assert holds(registry, old.name) == expected, f"{signame} at {step}"
        assert record.leftovers == ()


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_ci_rolls_back_a_dead_commit_before_calling_anything_unchanged(tmp_path: Path, isolated_cache: Path) -> None:
    """A ci killed after the last rename of a restore from its cache left that set in place and its
    commit open. The next ci called the spec unchanged and left the journal; a later build of
    another artifact into that folder then rolled the spec's engine back to the old build, which ci
    had vouched for."""
    spec, other = tmp_path / "spec.yaml", tmp_path / "other.yaml"
    text = (
        f"name: digits-cnn\nmodel: {DIGITS_ONNX}\nprecision: fp32\nbackend: tensorrt-rtx\ntargets: ['8.6']\n"
        f"profiles:\n{DIGITS_PROFILE}\naccuracy: {{enabled: false}}\n"
    )
    old, new = text, text + "build: {workspace: 256MiB}\n"
    other.write_text(text.replace("digits-cnn", "other"))
    out = tmp_path / "out"
    for version in (new, old):  # both builds in the cache, the old one in --out
        spec.write_text(version)
        assert cli("ci", spec, "--out", out, "--jobs", "1")[0] == 0
    spec.write_text(new)
    (engine,) = out.glob("*.engine")
    killed = run_signalled(
        "SIGKILL", f"rename {manifest_path_for(engine).name}", "ci", spec, "--out", out, "--jobs", "1", timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert any(name.endswith(".journal.tmp") for name in leftovers(out))
    code, _, err = cli("ci", spec, "--out", out, "--jobs", "1")
    assert code == 0 and "1 interrupted commit(s) rolled back" in err and "restored" in err, err
    assert leftovers(out) == ()
    built = sha256_file(engine)
    assert read_manifest(manifest_path_for(engine)).artifact.sha256 == built
    code, _, err = cli("build", other, "--out", out)
    assert code == 0 and "rolled back" not in err, err
    assert sha256_file(engine) == built
    code, _, err = cli("ci", spec, "--out", out, "--jobs", "1")
    assert code == 0 and "unchanged" in err, err


def test_stale_temporaries_are_removed_by_the_next_run(
    tmp_path: Path, isolated_cache: Path, trust_case: TrustRecorder
) -> None:
    """--out after a build killed mid-write, a triton:// repository and the cache: temporaries of
    dead processes go (one info line with their size), a live process's stay."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: digits-cnn\nmodel: {DIGITS_ONNX}\nprecision: fp32\nbackend: tensorrt-rtx\ntargets: ['8.6']\n"
        f"profiles:\n{DIGITS_PROFILE}\naccuracy: {{enabled: false}}\n"
    )
    out = tmp_path / "out"
    (engine_name,) = {p.name for p in (build_engine(tmp_path / "ref").parent).glob("*.engine")}
    killed = run_signalled("SIGKILL", f"rename {engine_name}", "build", spec, "--out", out, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert leftovers(out)  # the journal and the staged manifest of the dead build
    # planted in the cache: a dead process's FP16 graph (1 MB), a live one's, and an old legacy one
    fp16 = isolated_cache / "fp16"
    fp16.mkdir(parents=True)
    dead = fp16 / f".abc.onnx.{dead_pid()}-k1l2m3n4.tmp"
    dead.write_bytes(b"\0" * 1_000_000)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        live = fp16 / f".def.onnx.{sleeper.pid}-p5q6r7s8.tmp"
        live.write_bytes(b"live")
        legacy = fp16 / ".ghi.onnx.t9u0v1w2.tmp"
        legacy.write_bytes(b"old")
        day_ago = time.time() - 25 * 3600
        os.utime(legacy, (day_ago, day_ago))
        code, _, err = cli("build", spec, "--out", out)
        record = trust_case(
            11, "build after a build SIGKILLed mid-commit, stale cache temporaries", code, err, folders=(out,)
        )
        assert code == 0, err
        assert record.leftovers == ()
        assert "removed 4 stale temporaries of dead runs (1.0 MB); 1 interrupted commit(s) rolled back" in err
        assert not dead.exists() and not legacy.exists() and live.exists()
        load_local_artifact(out / engine_name)
    finally:
        sleeper.kill()
        sleeper.wait()

    # triton://: a version staged by a publisher that died, and a plan half-committed in version 1
    engine = out / engine_name
    repository = tmp_path / "models"
    assert cli("publish", engine, "--to", f"triton://{repository}")[0] == 0
    staged = repository / "digits-cnn" / f".2.{dead_pid()}-a1b2c3d4.tmp"
    staged.mkdir()
    (staged / "model.plan").write_bytes(b"\0" * 852_000)
    other = build_engine(tmp_path / "other", targets=["8.9"])
    code, out_text, err = cli("publish", other, "--to", f"triton://{repository}", "--json")
    record = trust_case(11, "triton:// publish after a publisher died mid-version", code, err, folders=(repository,))
    assert code == 0 and json.loads(out_text)["version"] == 1
    assert "removed 1 stale temporary of dead runs (852 kB)" in err
    assert record.leftovers == () and not staged.exists()


# ---------------------------------------------------------------- a full disk


def digits_spec(folder: Path, precision: str = "fp32", gate: bool = False) -> Path:
    """The digits CNN for the CPU (TensorRT-RTX); ``gate``: its accuracy gate on 64 samples."""
    data = DIGITS_ONNX.parent
    accuracy = (
        f"{{data: '{data / 'val'}/*.npy', labels: '{data / 'val-labels.npy'}', max_samples: 64}}"
        if gate
        else "{enabled: false}"
    )
    spec = folder / f"{precision}.yaml"
    spec.write_text(
        f"name: digits-cnn\nmodel: {DIGITS_ONNX}\nprecision: {precision}\nbackend: tensorrt-rtx\ntargets: ['8.6']\n"
        f"profiles:\n{DIGITS_PROFILE}\naccuracy: {accuracy}\n"
    )
    return spec


def test_a_full_out_folder_or_cache_is_one_line_exit_2(
    tmp_path: Path, small_disk: Callable[[str], Path], trust_case: TrustRecorder
) -> None:
    """A real full disk: the engine (446 kB) does not fit a 300 kB --out, the FP16 graph a 64 kB
    cache. Each is exit 2 naming what could not be written and the fix, and leaves nothing."""
    out = small_disk("300k")
    code, _, err = cli("build", digits_spec(tmp_path), "--out", out)
    record = trust_case(5, "build into a full --out", code, err, folders=(out,))
    assert code == 2 and record.one_line, err
    assert f"cannot write {out}: no space left on device; free space on that disk" in err
    assert record.leftovers == () and list(out.iterdir()) == []

    cache = small_disk("64k")
    code, _, err = cli("build", digits_spec(tmp_path, "fp16"), "--out", tmp_path / "out", "--cache-dir", cache)
    record = trust_case(5, "build with a full cache", code, err, folders=(cache, tmp_path / "out"))
    assert code == 2 and record.one_line, err
    assert f"cannot write {cache / 'fp16'}" in err and "no space left on device" in err and "internal" not in err
    assert record.leftovers == ()


def test_a_full_cache_filled_by_the_gate_is_named_not_the_out_folder(
    tmp_path: Path, small_disk: Callable[[str], Path], trust_case: TrustRecorder
) -> None:
    """The FP16 graph (79 kB) fits a 120 kB cache, the gate's emulated one does not; the gate runs
    inside the commit's block: the error names the cache's file, not ``--out`` (which has room)."""
    cache, out = small_disk("120k"), tmp_path / "out"
    code, _, err = cli("build", digits_spec(tmp_path, "fp16", gate=True), "--out", out, "--cache-dir", cache)
    record = trust_case(5, "build whose accuracy gate meets a full cache", code, err, folders=(cache, out))
    assert code == 2 and record.one_line, err
    assert f"cannot write {cache / 'fp16-emulated'}/" in err and "no space left on device" in err
    assert f"cannot write {out}" not in err and record.leftovers == ()


def test_a_full_disk_at_the_journal_keeps_the_old_artifact_and_leaves_no_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trust_case: TrustRecorder
) -> None:
    out = tmp_path / "out"
    spec = digits_spec(tmp_path)
    assert cli("build", spec, "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    write_text = Path.write_text

    def full(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name.startswith(f".{artifact.JOURNAL_BASE}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    code, _, err = cli("build", spec, "--out", out)
    monkeypatch.undo()
    record = trust_case(5, "build whose commit journal meets a full disk", code, err, folders=(out,))
    assert code == 2 and record.one_line and f"cannot write {out}: no space left on device" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert record.leftovers == ()


def test_a_file_size_limit_is_one_line_exit_2_and_keeps_the_old_artifact(
    tmp_path: Path, trust_case: TrustRecorder
) -> None:
    """``ulimit -f`` (RLIMIT_FSIZE) below the engine's size (446 kB): its write fails with EFBIG, as
    one past a file system's largest file (FAT32's 4 GiB) does. It was "internal error (OSError:
    [Errno 27] File too large); please report it", exit 1."""
    out = tmp_path / "out"
    spec = digits_spec(tmp_path)
    assert cli("build", spec, "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    done = subprocess.run(
        [sys.executable, "-m", "trtforge", "build", str(spec), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limited,
    )
    record = trust_case(5, "build over the file size limit (ulimit -f)", done.returncode, done.stderr, folders=(out,))
    assert done.returncode == 2 and record.one_line, done.stderr
    assert f"error: cannot write {out}: file too large; raise the file size limit (ulimit -f)" in done.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


# ---------------------------------------------------------------- a shared folder with the sticky bit

#: the user ``nobody`` (Debian's, and most images'): root runs the CLI as it
NOBODY = 65534

#: A child interpreter started as root: a warm-up build (argv[1], JSON) as root imports what a build
#: needs, and a failed build's report the gate's module (root's interpreter may sit where ``nobody``
#: cannot read), then it gives up root for good and runs each further argv (JSON) as ``nobody``,
#: printing their exit codes as one JSON list.
AS_NOBODY = """
import json, os, sys
import trtforge.accuracy.gate
from trtforge.cli import app
def run(args):
    print("=== trtforge", *args, file=sys.stderr, flush=True)
    try:
        app(args, prog_name="trtforge")
    except SystemExit as done:
        return done.code or 0
    return 0
warm_up, *runs = (json.loads(arg) for arg in sys.argv[1:])
assert run(warm_up) == 0, "the warm-up build as root failed"
try:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
except PermissionError:
    sys.exit(77)
print(json.dumps([run(args) for args in runs]))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run trtforge as another user")
def test_a_shared_folder_with_another_users_artifact_is_one_line_and_left_as_it_was(
    reachable: Path, tmp_path: Path, trust_case: TrustRecorder
) -> None:
    """A folder with the sticky bit (/tmp, a CI runner's shared folder): ``nobody`` may not replace
    root's artifact there (nor back up one it cannot read), nor remove root's temporaries. The build
    over root's artifact was exit 1, "internal error (PermissionError ...)", leaving its journal and
    backups; from then on every build of ``nobody`` into that folder was exit 1 too, its sweep
    failing on that journal, and so it was on any stale temporary of root's. Now: exit 2 naming the
    file, root's set untouched, nothing left; other builds go on; a commit root's killed run left
    open is exit 2 naming its journal. Every build of ``nobody``'s there locks its artifact in the
    lock folder root's first build made, shared as the folder is (it was 0755: exit 2 "cannot lock")."""
    model = reachable / DIGITS_ONNX.name
    shutil.copyfile(DIGITS_ONNX, model)
    specs = {}
    for name in ("digits-cnn", "other"):
        specs[name] = reachable / f"{name}.yaml"
        specs[name].write_text(
            f"name: {name}\nmodel: {model}\nprecision: fp32\nbackend: tensorrt-rtx\ntargets: ['8.6']\n"
            f"profiles:\n{DIGITS_PROFILE}\naccuracy: {{enabled: false}}\n"
        )
    cache = reachable / "cache"
    cache.mkdir()
    os.chown(cache, NOBODY, NOBODY)
    shared, unreadable, planted, killed = (reachable / name for name in ("shared", "unreadable", "planted", "killed"))
    for folder in (shared, unreadable, planted, killed):
        folder.mkdir()
        folder.chmod(0o1777)
        assert cli("build", specs["digits-cnn"], "--out", folder)[0] == 0  # root's artifact, and its lock
    before = {p.name: (p.read_bytes(), p.stat().st_ino) for p in shared.iterdir() if p.is_file()}
    stale = planted / f".x.engine.{dead_pid()}-a1b2c3d4.tmp"  # a dead run of root's left it
    stale.write_bytes(b"half an engine")
    (engine,) = killed.glob("*.engine")
    (unreadable / engine.name).chmod(0o600)
    signalled = run_signalled("SIGKILL", f"rename {engine.name}", "build", specs["digits-cnn"], "--out", killed)
    assert signalled.returncode == -signal.SIGKILL, signalled.stderr
    warm_up = ["build", str(specs["other"]), "--out", str(tmp_path / "warm-up"), "--cache-dir", str(tmp_path)]
    runs = [
        ["build", str(specs["digits-cnn"]), "--out", str(shared)],
        ["build", str(specs["other"]), "--out", str(shared)],
        ["build", str(specs["digits-cnn"]), "--out", str(unreadable)],
        ["build", str(specs["other"]), "--out", str(planted)],
        ["build", str(specs["other"]), "--out", str(killed)],
    ]
    done = subprocess.run(
        [
            sys.executable, "-c", AS_NOBODY, json.dumps(warm_up), *map(json.dumps, runs),
        ],
        env={**os.environ, "HOME": str(cache), "TRTFORGE_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    if done.returncode == 77:
        pytest.skip("root here may not change its user (no CAP_SETUID/CAP_SETGID): nothing runs as nobody")
    assert done.returncode == 0, done.stderr
    errors = {
        index: [line for line in said.splitlines() if not re.match(r"^\d\d:\d\d:\d\d ", line)]
        for index, said in enumerate(done.stderr.split("=== trtforge")[2:])
    }
    assert json.loads(done.stdout) == [2, 0, 2, 0, 2], done.stderr
    for index, folder, reason in ((0, shared, "Operation not permitted"), (2, unreadable, "Permission denied")):
        (refused,) = errors[index][1:]
        record = trust_case(14, f"build over another user's artifact: {reason}", 2, refused, folders=(folder,))
        assert record.one_line and refused == (
            f"error: cannot replace {folder / engine.name} ({reason}: another user's file, or an immutable one); "
            "remove it, or write the artifact to another folder"
        ), done.stderr
    assert {name: ((shared / name).read_bytes(), (shared / name).stat().st_ino) for name in before} == before
    assert stale.read_bytes() == b"half an engine"
    (journal,) = (name for name in leftovers(killed) if name.endswith(".journal.tmp"))
    assert errors[4][1:] == [
        f"error: cannot roll back {killed / journal}, a commit a killed run left open (Operation not permitted: "
        f"another user's files, or immutable ones); run trtforge into {killed} as that user, or once the "
        "files can be changed, to roll it back"
    ], done.stderr


# ---------------------------------------------------------------- a folder at a file's name


def test_a_folder_at_the_manifests_name_is_refused_and_the_folder_still_builds(
    tmp_path: Path, trust_case: TrustRecorder
) -> None:
    """A folder where the build puts its manifest (renamed last: after the engine's) is exit 2
    naming it, with nothing replaced or left behind; the folder's other artifacts still build, and
    the artifact too once the folder is gone."""
    out = tmp_path / "out"
    spec = digits_spec(tmp_path)
    (engine_name,) = {p.name for p in (build_engine(tmp_path / "ref").parent).glob("*.engine")}
    manifest = manifest_path_for(out / engine_name)
    manifest.mkdir(parents=True)
    (manifest / "mine.txt").write_text("mine")
    code, _, err = cli("build", spec, "--out", out)
    record = trust_case(14, "build into --out where a folder has the manifest's name", code, err, folders=(out,))
    assert code == 2 and record.one_line, err
    assert f"cannot write {manifest}: it is a folder; remove it, or write the artifact to another folder" in err
    assert record.leftovers == () and not (out / engine_name).exists()
    assert (manifest / "mine.txt").read_text() == "mine"
    assert cli("build", digits_spec(tmp_path, "fp16"), "--out", out)[0] == 0
    shutil.rmtree(manifest)
    assert cli("build", spec, "--out", out)[0] == 0 and read_manifest(manifest).artifact.file == engine_name


def test_a_file_where_the_locks_go_is_named(tmp_path: Path, trust_case: TrustRecorder) -> None:
    """``.trtforge-locks`` a file: the error said the folder must be writable, which it was."""
    spec = digits_spec(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / artifact.LOCK_DIR).write_text("not a folder")
    code, _, err = cli("build", spec, "--out", out)
    record = trust_case(14, "build into --out where the lock folder is a file", code, err, folders=(tmp_path,))
    assert code == 2 and record.one_line, err
    assert f"{out / artifact.LOCK_DIR} is a file where trtforge keeps its locks; remove it" in err
