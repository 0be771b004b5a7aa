"""dir://: a plain directory registry with the build output's layout, never showing half an artifact."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from clitools import cli
from models import conv_net, need_rtx
from registry import build_engine
from users import CANNOT_DROP, CANNOT_DROP_REASON, FORK, as_user, comes_to_open, run_as

from trtforge.artifact import LOCK_DIR
from trtforge.digests import sha256_file
from trtforge.manifest import manifest_path_for, read_manifest
from trtforge.publish import DirLocation, load_local_artifact, local
from trtforge.publish.directory import DirRegistry
from trtforge.publish.local import LOCK_NAME, repository_lock

need_rtx()

CONV_PROFILE = "  - input: {min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}"


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dir-engines")
    return {
        "8.6": build_engine(root / "a", targets=["8.6"]),
        "8.9": build_engine(root / "b", targets=["8.9"]),
        "multi": build_engine(root / "c", targets=["8.6", "8.9", "12.0"]),
    }


def listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_layout_is_the_build_output_layout(engines: dict[str, Path], tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    for engine in engines.values():
        code, out, err = cli("publish", str(engine), "--to", f"dir://{registry}", "--json")
        assert code == 0, err
        assert json.loads(out)["status"] == "published"
    expected = sorted(name for engine in engines.values() for name in (engine.name, manifest_path_for(engine).name))
    assert [name for name in listing(registry) if not name.startswith(".")] == expected
    assert listing(registry) == sorted([*expected, ".trtforge.lock", LOCK_DIR])  # no staged leftovers
    for engine in engines.values():
        assert (registry / engine.name).read_bytes() == engine.read_bytes()
        assert manifest_path_for(registry / engine.name).read_bytes() == manifest_path_for(engine).read_bytes()
        assert (registry / engine.name).stat().st_mode & 0o044 == 0o044, "registry files are readable by others"
    # a build output folder is itself a registry: pull straight from one
    out = tmp_path / "pulled"
    code, stdout, err = cli(
        "pull", f"dir://{engines['8.9'].parent}", "--name", "digits-cnn", "--cc", "8.9", "--out", str(out), "--json"
    )
    assert code == 0, err
    assert Path(json.loads(stdout)["engine"]).name == engines["8.9"].name


def test_same_engine_no_op_other_engine_needs_force(engines: dict[str, Path], tmp_path: Path) -> None:
    registry = f"dir://{tmp_path / 'registry'}"
    engine = engines["8.6"]
    assert cli("publish", str(engine), "--to", registry)[0] == 0
    stamp = (tmp_path / "registry" / engine.name).stat().st_mtime_ns
    code, _, err = cli("publish", str(engine), "--to", registry)
    assert code == 0 and "unchanged" in err and "nothing to do" in err
    assert (tmp_path / "registry" / engine.name).stat().st_mtime_ns == stamp

    other = build_engine(tmp_path / "other", model=conv_net(tmp_path / "conv.onnx", seed=3), profiles=CONV_PROFILE)
    assert other.name == engine.name
    code, _, err = cli("publish", str(other), "--to", registry)
    assert code == 6 and "--force" in err and "Traceback" not in err
    assert sha256_file(tmp_path / "registry" / engine.name) == read_manifest(engine).artifact.sha256
    code, out, err = cli("publish", str(other), "--to", registry, "--force", "--json")
    assert code == 0 and json.loads(out)["status"] == "replaced"
    assert sha256_file(tmp_path / "registry" / engine.name) == read_manifest(other).artifact.sha256
    assert read_manifest(tmp_path / "registry" / engine.name).artifact.sha256 == read_manifest(other).artifact.sha256


def test_a_changed_manifest_around_the_same_engine_is_kept_unless_forced(
    engines: dict[str, Path], tmp_path: Path
) -> None:
    engine = tmp_path / "local" / engines["8.6"].name
    engine.parent.mkdir()
    shutil.copy2(engines["8.6"], engine)
    shutil.copy2(manifest_path_for(engines["8.6"]), manifest_path_for(engine))
    registry = f"dir://{tmp_path / 'registry'}"
    assert cli("publish", str(engine), "--to", registry)[0] == 0
    assert cli("keygen", str(tmp_path / "key"))[0] == 0
    assert cli("sign", str(engine), "--key", str(tmp_path / "key"))[0] == 0
    code, out, _ = cli("publish", str(engine), "--to", registry, "--json")
    assert code == 0 and json.loads(out)["status"] == "unchanged" and "--force" in json.loads(out)["detail"]
    assert read_manifest(tmp_path / "registry" / engine.name).signature is None
    code, out, _ = cli("publish", str(engine), "--to", registry, "--force", "--json")
    assert code == 0 and json.loads(out)["status"] == "replaced"
    assert read_manifest(tmp_path / "registry" / engine.name).signature is not None


def test_pull_by_target_and_nothing_fits(engines: dict[str, Path], tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    for engine in engines.values():
        assert cli("publish", str(engine), "--to", f"dir://{registry}")[0] == 0
    out = tmp_path / "pulled"
    code, stdout, err = cli(
        "pull", f"dir://{registry}", "--name", "digits-cnn", "--cc", "12.0", "--out", str(out), "--json"
    )
    assert code == 0, err
    document = json.loads(stdout)
    assert Path(document["engine"]).name == engines["multi"].name
    assert {Path(e["reference"]).name for e in document["rejected"]} == {engines["8.6"].name, engines["8.9"].name}
    assert sha256_file(out / engines["multi"].name) == read_manifest(engines["multi"]).artifact.sha256

    code, stdout, err = cli(
        "pull", f"dir://{registry}", "--name", "digits-cnn", "--cc", "9.0", "--json", "--out", str(tmp_path / "none")
    )
    assert code == 5
    refusal = json.loads(stdout)
    assert len(refusal["rejected"]) == 3 and "9.0" in err
    # one line, each candidate and why (a line per candidate broke the one-line rule, also in serve's refusal)
    assert err.count("\n") == 1 and err.count(" | ") == 2 and "\\n" not in err, err
    assert (refusal["status"], refusal["exit_code"]) == ("incompatible", 5)
    assert "compute capability 9.0" in refusal["environment"] and refusal["error"] in err
    assert not (tmp_path / "none").exists()
    code, _, err = cli("pull", f"dir://{registry}", "--name", "digits-cnn", "--for-this-machine", "--cc", "8.6")
    assert code == 2 and "exclude each other" in err


@pytest.mark.parametrize(
    "edit",
    [
        lambda doc: doc["gpu"].update(compute_capabilities=["banana"]),
        lambda doc: doc["tensorrt"].update(version="x"),
        lambda doc: doc.update(profiles=[{"input": {}}]),
    ],
    ids=["capability", "version", "profile"],
)
def test_a_manifest_no_build_writes_is_skipped_not_fatal(
    engines: dict[str, Path], tmp_path: Path, edit: Callable[[dict[str, Any]], None]
) -> None:
    """Such a manifest used to pass the schema and crash the rules (exit 1) for every pull of its
    name; it is unreadable now, which a listing skips: the good engine is still pulled."""
    registry = tmp_path / "registry"
    for engine in engines.values():
        assert cli("publish", str(engine), "--to", f"dir://{registry}")[0] == 0
    bad = manifest_path_for(registry / engines["8.6"].name)
    document = json.loads(bad.read_text())
    edit(document)
    bad.write_text(json.dumps(document))
    code, _, err = cli("pull", f"dir://{registry}", "--name", "digits-cnn", "--cc", "8.9", "--out", str(tmp_path / "o"))
    assert code == 0 and "internal error" not in err, err
    code, _, err = cli("check", str(bad), "--cc", "8.6")
    assert code == 2 and "not a trtforge manifest" in err and len(err.strip().splitlines()) == 1, err


def test_damaged_engine_in_the_registry_is_refused_and_nothing_written(
    engines: dict[str, Path], tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    assert cli("publish", str(engines["8.6"]), "--to", f"dir://{registry}")[0] == 0
    stored = registry / engines["8.6"].name
    data = bytearray(stored.read_bytes())
    data[len(data) // 3] ^= 0x10
    stored.write_bytes(bytes(data))
    out = tmp_path / "pulled"
    out.mkdir()
    (out / "keep.txt").write_text("unrelated")
    code, _, err = cli("pull", f"dir://{registry}", "--name", "digits-cnn", "--cc", "8.6", "--out", str(out))
    assert code == 5 and "sha256" in err and "nothing written" in err
    assert listing(out) == ["keep.txt"]
    # the next publish of the good engine sees the damage: it is not "the same content"
    code, _, err = cli("publish", str(engines["8.6"]), "--to", f"dir://{registry}")
    assert code == 6 and "different engine" in err
    assert cli("publish", str(engines["8.6"]), "--to", f"dir://{registry}", "--force")[0] == 0


@pytest.mark.parametrize("kind", ["endless", "larger", "fifo"])
def test_a_registry_engine_is_read_no_further_than_its_manifest_declares(
    engines: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    """/dev/zero behind the engine's name filled the disk: a pull copied until the file ended."""
    registry = tmp_path / "registry"
    assert cli("publish", str(engines["8.6"]), "--to", f"dir://{registry}")[0] == 0
    stored = registry / engines["8.6"].name
    size = stored.stat().st_size
    stored.unlink()
    if kind == "endless":
        stored.symlink_to("/dev/zero")
    elif kind == "larger":
        stored.write_bytes(engines["8.6"].read_bytes() + b"\0" * 4096)
    else:
        os.mkfifo(stored)  # nobody writes: reading it would wait forever
    out = tmp_path / "pulled"
    code, _, err = cli("pull", f"dir://{registry}", "--name", "digits-cnn", "--cc", "8.6", "--out", str(out))
    expected = f"larger than the {size:,} bytes its manifest declares" if kind == "larger" else "not a regular file"
    assert code == 6 and expected in err and "publish the artifact again" in err, err
    assert not out.exists() or listing(out) == []


def test_half_written_artifacts_are_never_candidates(engines: dict[str, Path], tmp_path: Path) -> None:
    """What an interrupted publish can leave: a staged hidden file, an engine whose manifest never came."""
    registry = tmp_path / "registry"
    registry.mkdir()
    engine = engines["8.9"]
    shutil.copy2(engine, registry / f".{engine.name}.abc123.tmp")
    shutil.copy2(manifest_path_for(engine), registry / f".{manifest_path_for(engine).name}.def456.tmp")
    shutil.copy2(engines["8.6"], registry / engines["8.6"].name)  # engine renamed in, manifest not yet
    listing_ = DirRegistry(DirLocation(registry)).candidates("digits-cnn", None)
    assert listing_.candidates == ()
    code, _, err = cli("pull", f"dir://{registry}", "--name", "digits-cnn", "--cc", "8.9", "--out", str(tmp_path / "o"))
    assert code == 5 and "holds: nothing" in err
    # the next publish simply overwrites the orphan
    assert cli("publish", str(engines["8.6"]), "--to", f"dir://{registry}")[0] == 0
    (candidate,) = DirRegistry(DirLocation(registry)).candidates("digits-cnn", None).candidates
    assert Path(candidate.reference).name == engines["8.6"].name


def test_interrupted_publish_leaves_the_registry_as_it_was(
    engines: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C once the engine is renamed in, before the manifest: no half artifact, no staged leftovers."""
    from trtforge import artifact

    registry = tmp_path / "registry"

    def interrupted_after_the_engine(step: str) -> None:
        if step == f"rename {engines['8.6'].name}":
            raise KeyboardInterrupt

    monkeypatch.setattr(artifact, "on_step", interrupted_after_the_engine)
    with pytest.raises(KeyboardInterrupt):
        DirRegistry(DirLocation(registry)).publish(load_local_artifact(engines["8.6"]))
    monkeypatch.undo()
    # the engine renamed in before the interrupt is taken back out: only the registry's locks stay
    assert listing(registry) == sorted([".trtforge.lock", LOCK_DIR])
    assert DirRegistry(DirLocation(registry)).candidates("digits-cnn", None).candidates == ()
    assert cli("publish", str(engines["8.6"]), "--to", f"dir://{registry}")[0] == 0
    assert len(DirRegistry(DirLocation(registry)).candidates("digits-cnn", None).candidates) == 1


def test_missing_or_unusable_registry_directory(engines: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "pulled"
    code, _, err = cli("pull", f"dir://{tmp_path / 'nope'}", "--name", "digits-cnn", "--cc", "8.6", "--out", str(out))
    assert code == 6 and "no such directory" in err and "Traceback" not in err
    assert not out.exists()
    (tmp_path / "file").write_text("x")
    code, _, err = cli("publish", str(engines["8.6"]), "--to", f"dir://{tmp_path / 'file'}")
    assert code == 2 and "is a file" in err
    # a path through that file is the same mistake (it was exit 6, a registry's failure)
    code, _, err = cli("publish", str(engines["8.6"]), "--to", f"dir://{tmp_path / 'file' / 'sub'}")
    assert code == 2 and "part of the path is a file, not a folder" in err and err.count("\n") == 1
    # a file where a folder should be is named as such ("no such directory", "File exists" before)
    code, _, err = cli("pull", f"dir://{tmp_path / 'file'}", "--name", "digits-cnn", "--cc", "8.6", "--out", str(out))
    assert code == 6 and f"dir://{tmp_path / 'file'}: is not a directory" in err
    registry = engines["8.6"].parent
    code, _, err = cli("pull", f"dir://{registry}", "--name", "digits-cnn", "--cc", "8.6", "--out", tmp_path / "file")
    assert code == 2 and f"output directory {tmp_path / 'file'} is a file" in err
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    code, _, err = cli(
        "pull", f"dir://{registry}", "--name", "digits-cnn", "--cc", "8.6", "--out", tmp_path / "dangling"
    )
    assert code == 2 and f"is a link to {tmp_path / 'gone'}, which does not exist" in err
    (tmp_path / "loop").symlink_to("back")
    (tmp_path / "back").symlink_to("loop")
    code, _, err = cli("pull", f"dir://{registry}", "--name", "digits-cnn", "--cc", "8.6", "--out", tmp_path / "loop")
    assert code == 2 and err == (
        f"error: output directory {tmp_path / 'loop'} cannot be read (Too many levels of symbolic links); "
        "pass --out with a writable folder\n"
    )


@pytest.mark.parametrize("scheme", ["dir", "triton"])
def test_insecure_with_a_folder_is_refused(engines: dict[str, Path], tmp_path: Path, scheme: str) -> None:
    """--insecure (plain HTTP) means nothing for a folder: a usage error, one line, nothing written.
    Before: ignored, the engine published (exit 0)."""
    uri = f"{scheme}://{tmp_path / 'registry'}"
    out = tmp_path / "pulled"
    for args in (
        ("publish", engines["8.6"], "--to", uri, "--insecure"),
        ("pull", uri, "--name", "digits-cnn", "--cc", "8.6", "--out", out, "--insecure"),
    ):
        code, _, err = cli(*args)
        assert code == 2 and "--insecure (plain HTTP) is for oci:// registries" in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "registry").exists() and not out.exists()


#: the user and group ``nobody`` (Debian's, and most images'): root runs the CLI as it
NOBODY = 65534

#: A child interpreter started as root that loads the CLI and publishes once into a scratch registry
#: (importing every module the publish path needs: the interpreter and its standard library may sit
#: where ``nobody`` cannot read, e.g. under /root/.pyenv), then gives up root for good (groups, gid,
#: uid) and runs ``trtforge ARGS...`` as ``nobody``.
AS_NOBODY = """
import os, sys
from trtforge.cli import app
warm_engine, warm_registry, uid, *args = sys.argv[1:]
try:
    app(["publish", warm_engine, "--to", f"dir://{warm_registry}"], prog_name="trtforge")
except SystemExit as done:
    assert done.code in (0, None), f"the warm-up publish as root failed: {done.code}"
CANNOT_DROP = 77
try:
    os.setgroups([])
    os.setgid(int(uid))
    os.setuid(int(uid))
except PermissionError:
    sys.exit(CANNOT_DROP)
assert os.getuid() == os.geteuid() == int(uid) and os.getgid() == os.getegid() == int(uid)
app(args, prog_name="trtforge")
"""


def _publish_as_nobody(engine: Path, scratch: Path) -> tuple[int, str, Path]:
    """``trtforge publish`` as ``nobody`` into a folder ``nobody`` owns without write permission
    (mode 0o500, as the non-root test's): (exit code, stderr, the folder). ``scratch`` is a folder
    only root can write, every file ``nobody`` reads in it world-readable."""
    scratch.chmod(0o755)
    source = scratch / "engine"
    source.mkdir(mode=0o755)
    for path in (engine, manifest_path_for(engine)):
        shutil.copyfile(path, source / path.name)
        (source / path.name).chmod(0o644)
    home = scratch / "home"
    cache = home / "cache"
    cache.mkdir(parents=True)
    for folder in (home, cache):
        os.chown(folder, NOBODY, NOBODY)
    locked = scratch / "locked"
    locked.mkdir()
    os.chown(locked, NOBODY, NOBODY)
    locked.chmod(0o500)
    done = subprocess.run(
        [
            sys.executable, "-c", AS_NOBODY, str(source / engine.name), str(scratch / "warm-up"), str(NOBODY),
            "publish", str(source / engine.name), "--to", f"dir://{locked}",
        ],
        cwd=scratch,
        env={**os.environ, "HOME": str(home), "TRTFORGE_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    return done.returncode, done.stderr, locked


def test_a_registry_folder_without_write_permission_is_exit_6(engines: dict[str, Path], tmp_path: Path) -> None:
    """A folder its owner may not write: exit 6 naming the refusal. Root writes into a folder
    whatever its mode, so as root (CI) the CLI runs as ``nobody`` in a folder ``nobody`` owns."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, _, err = cli("publish", str(engines["8.6"]), "--to", f"dir://{locked}")
        assert code == 6 and "Permission denied" in err
        return
    # pytest's own temporary folders are root's alone (0o700): nobody could not reach the engine
    scratch = Path(tempfile.mkdtemp(prefix="trtforge-nobody-"))
    try:
        code, err, locked = _publish_as_nobody(engines["8.6"], scratch)
        if code == 77:
            pytest.skip("root here may not change its user (no CAP_SETUID/CAP_SETGID): nothing runs as nobody")
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert code == 6 and "Traceback" not in err, err
        assert errors == [
            f"error: cannot lock {locked / '.trtforge.lock'}: Permission denied; check the path and its permissions"
        ], err
        assert list(locked.iterdir()) == []  # nothing written, nothing left behind
    finally:
        shutil.rmtree(scratch)


@pytest.mark.parametrize(
    ("folder_mode", "lock_mode"),
    [(0o1777, 0o644), (0o2775, 0o644), (0o755, 0o600), (0o700, 0o600)],
    ids=["1777", "2775", "0755", "0700"],
)
def test_a_registrys_lock_file_is_readable_where_users_share_the_registry(
    tmp_path: Path, folder_mode: int, lock_mode: int
) -> None:
    """``.trtforge.lock`` was made as the umask said (0600 under a umask of 077), so in a registry
    folder users share no other user could lock it. There it is now readable by all (all flock
    needs); a private registry folder keeps the umask's modes."""
    registry = tmp_path / "registry"
    registry.mkdir()
    registry.chmod(folder_mode)
    umask = os.umask(0o077)
    try:
        with repository_lock(registry):
            pass
    finally:
        os.umask(umask)
    assert stat.S_IMODE((registry / LOCK_NAME).stat().st_mode) == lock_mode
    assert listing(registry) == [LOCK_NAME]


def readable_copy(engine: Path, folder: Path) -> Path:
    """``engine`` and its manifest copied into ``folder`` (made), for another user to publish."""
    folder.mkdir()
    for path in (engine, manifest_path_for(engine)):
        shutil.copyfile(path, folder / path.name)
        (folder / path.name).chmod(0o644)
    return folder / engine.name


def publishing(engine: Path, registry: Path, said: Any) -> Callable[[], None]:
    """A forked process's target: ``trtforge publish engine --to dir://registry``, its stderr put
    in the queue ``said``, its exit code the process's."""

    def publish() -> None:
        code, _, err = cli("publish", engine, "--to", f"dir://{registry}")
        said.put(err)
        sys.exit(code)

    return publish


@pytest.mark.parametrize("folder_mode", [0o1777, 0o2775], ids=["1777", "2775"])
def test_users_sharing_a_registry_folder_take_turns_on_its_lock(
    engines: dict[str, Path], reachable: Path, nobody: pwd.struct_passwd, folder_mode: int
) -> None:
    """A registry folder users share (1777 as /tmp, a team's setgid 2775, ``nobody`` in its group):
    root's first publish made ``.trtforge.lock`` 0644, which filelock opens read-write only, so
    every publish of another user there was exit 6 "cannot lock ... Permission denied". Now it locks
    root's lock file read-only (flock needs no more), and publishes still take turns: another
    user's publish while root holds the registry's lock waits for it, then publishes. The child
    forked while root holds the lock does not keep root's lock held through its copy of the
    descriptor (it would wait on itself until the timeout)."""
    registry = reachable / "registry"
    registry.mkdir()
    os.chown(registry, 0, nobody.pw_gid)
    registry.chmod(folder_mode)
    assert cli("publish", engines["8.6"], "--to", f"dir://{registry}")[0] == 0
    theirs = readable_copy(engines["8.9"], reachable / "source")
    said = FORK.SimpleQueue()
    lock = registry / LOCK_NAME
    with repository_lock(registry):
        process = FORK.Process(target=as_user(nobody, publishing(theirs, registry, said)))
        process.start()
        waiting = comes_to_open(process, lock)
        time.sleep(0.3)
        assert not (registry / theirs.name).exists()
    process.join(60)
    if process.exitcode == CANNOT_DROP:
        pytest.skip(CANNOT_DROP_REASON)
    err = "" if said.empty() else said.get()
    assert waiting and process.exitcode == 0, err
    published = [engines["8.6"], theirs]
    assert {name: (registry / name).stat().st_uid for name in listing(registry) if not name.startswith(".")} == {
        name: owner
        for engine, owner in zip(published, (0, nobody.pw_uid), strict=True)
        for name in (engine.name, manifest_path_for(engine).name)
    }
    assert (lock.stat().st_uid, stat.S_IMODE(lock.stat().st_mode)) == (0, 0o644)


def test_another_users_unreadable_registry_lock_is_named_with_its_fix(
    engines: dict[str, Path], reachable: Path, nobody: pwd.struct_passwd
) -> None:
    """The ``.trtforge.lock`` an older trtforge made under a umask of 077 (0600) in a registry
    folder users share: another user's publish was exit 6 "Permission denied; check the path and
    its permissions". Now exit 2 saying whose it is and the fix, nothing written; once root's lock
    file is readable, the publish goes through."""
    registry = reachable / "registry"
    registry.mkdir()
    registry.chmod(0o1777)
    lock = registry / LOCK_NAME
    lock.touch()
    lock.chmod(0o600)
    theirs = readable_copy(engines["8.9"], reachable / "source")
    said = FORK.SimpleQueue()
    assert run_as(nobody, publishing(theirs, registry, said)) == 2
    assert said.get() == (
        f"error: cannot lock {lock} (Permission denied): {lock} is root's and other users may not read it; "
        f"ask root to run chmod a+r {lock}, else write to another folder\n"
    )
    assert listing(registry) == [LOCK_NAME]
    lock.chmod(0o644)
    code = run_as(nobody, publishing(theirs, registry, said))
    assert code == 0, said.get()
    assert (registry / theirs.name).stat().st_uid == nobody.pw_uid


def test_a_publish_waits_for_the_registrys_lock_no_longer_than_its_timeout(
    engines: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another publish holding the registry's lock past the timeout: exit 6 saying so, nothing written."""
    registry = tmp_path / "registry"
    monkeypatch.setattr(local, "LOCK_TIMEOUT_S", 1.0)
    with repository_lock(registry):
        code, _, err = cli("publish", engines["8.6"], "--to", f"dir://{registry}")
    assert code == 6 and err == (
        f"error: {registry}: another publish held {LOCK_NAME} for 1 s; retry when it is done\n"
    )
    assert listing(registry) == [LOCK_NAME]


def test_for_this_machine_needs_a_gpu_or_a_target(engines: dict[str, Path], tmp_path: Path) -> None:
    from trtforge.compat import NO_GPU_MESSAGE
    from trtforge.environment import detect_gpus

    if detect_gpus():
        pytest.skip("this host has a GPU: the no-GPU message does not apply")
    registry = f"dir://{tmp_path / 'registry'}"
    assert cli("publish", str(engines["8.6"]), "--to", registry)[0] == 0
    code, _, err = cli("pull", registry, "--name", "digits-cnn", "--for-this-machine", "--out", str(tmp_path / "o"))
    assert code == 5 and NO_GPU_MESSAGE in err
    assert not (tmp_path / "o").exists()


def test_a_pull_replaces_the_whole_artifact_of_its_stem(engines: dict[str, Path], tmp_path: Path) -> None:
    """The destination held another build of the same stem (its engine gone, its report and
    attestation left): after the pull, nothing there describes another engine than the pulled one."""
    registry = f"dir://{tmp_path / 'registry'}"
    assert cli("publish", str(engines["8.6"]), "--to", registry)[0] == 0
    out = tmp_path / "pulled"
    out.mkdir()
    stem = engines["8.6"].name.removesuffix(".engine")
    stale = [out / f"{stem}.accuracy.json", out / f"{stem}.intoto.jsonl"]
    for path in stale:
        path.write_text("of another build")
    code, _, err = cli("pull", registry, "--name", "digits-cnn", "--cc", "8.6", "--out", out)
    assert code == 0, err
    assert sorted(path.name for path in out.iterdir() if not path.name.startswith(".")) == sorted(
        [f"{stem}.engine", f"{stem}.manifest.json"]
    )


def test_pull_refuses_a_version_without_its_runtime(engines: dict[str, Path], tmp_path: Path) -> None:
    """--trt-version alone was paired with each runtime in turn, so a TensorRT 10.13 target could be
    given a TensorRT-RTX engine's choice as well as an enterprise one (select_artifact refused it)."""
    registry = tmp_path / "registry"
    assert cli("publish", str(engines["8.6"]), "--to", f"dir://{registry}")[0] == 0
    out = tmp_path / "pulled"
    code, _, err = cli("pull", f"dir://{registry}", "--name", "digits-cnn", "--trt-version", "10.13.0.35",
                       "--cc", "8.6", "--out", str(out))  # fmt: skip
    assert code == 2 and "--trt-version 10.13.0.35 without --flavor" in err and err.count("\n") == 1
    assert not out.exists()


def test_pull_asks_for_a_precision_when_several_fit(engines: dict[str, Path], tmp_path: Path) -> None:
    """fp32 and fp16 both fit: pull used to take the newest build (one-second resolution, then the
    file name); now it asks, naming what it found and the flag."""
    registry = f"dir://{tmp_path / 'registry'}"
    fp16 = build_engine(tmp_path / "half", targets=["8.6"], precision="fp16")
    for engine in (engines["8.6"], fp16):
        assert cli("publish", str(engine), "--to", registry)[0] == 0
    out = tmp_path / "pulled"
    code, stdout, err = cli("pull", registry, "--name", "digits-cnn", "--cc", "8.6", "--out", out, "--json")
    assert code == 2 and "compatible engines of 2 precisions fit (fp16, fp32)" in err and "--precision" in err
    assert json.loads(stdout)["exit_code"] == 2 and not out.exists()
    code, _, err = cli("pull", registry, "--name", "digits-cnn", "--cc", "8.6", "--precision", "fp16", "-o", out)
    assert code == 0, err
    assert [path.name for path in out.glob("*.engine")] == [fp16.name]
    code, _, err = cli("pull", registry, "--name", "digits-cnn", "--cc", "8.9", "--out", out / "none")
    assert code == 5 and "none fits" in err  # nothing fits: the precision is no question then


def test_pull_with_a_required_signature_and_no_key_is_a_usage_error(
    engines: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As check: exit 2 before the registry is read (LoadPolicy refuses the policy)."""
    monkeypatch.delenv("TRTFORGE_TRUSTED_KEY", raising=False)
    nowhere = f"dir://{tmp_path / 'nowhere'}"
    code, _, err = cli("pull", nowhere, "--name", "digits-cnn", "--cc", "8.6", "--require-signature")
    assert code == 2 and "no trusted key was given: pass --trusted-key FILE" in err


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but the locks, with its bytes."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and LOCK_DIR not in path.parts and path.name != ".trtforge.lock"
    }


@pytest.mark.parametrize("scheme", ["dir", "triton"])
@pytest.mark.parametrize("replacement", ["another engine", "one byte changed"])
def test_an_engine_replaced_after_it_was_checked_is_refused(
    engines: dict[str, Path], tmp_path: Path, scheme: str, replacement: str
) -> None:
    """A rebuild renaming another engine over the source between ``load_local_artifact``'s check
    and the copy: the copy is hashed as it is made and refused (exit 5), the registry as it was
    (it put that engine beside the old manifest: check and pull refused it, Triton would serve it)."""
    from trtforge.errors import IncompatibleEngineError
    from trtforge.publish import open_registry, parse_location

    source = tmp_path / "out"
    source.mkdir()
    engine = source / engines["8.6"].name
    shutil.copy2(engines["8.6"], engine)
    shutil.copy2(manifest_path_for(engines["8.6"]), manifest_path_for(engine))
    uri = f"{scheme}://{tmp_path / 'registry'}"
    assert cli("publish", engines["8.9"], "--to", uri)[0] == 0  # a registry holding something already
    before = _files(tmp_path / "registry")

    artifact = load_local_artifact(engine)
    rebuilt = source / ".rebuilt.engine"
    if replacement == "another engine":
        shutil.copy2(engines["8.9"], rebuilt)
    else:
        data = bytearray(engine.read_bytes())
        data[len(data) // 2] ^= 0xFF
        rebuilt.write_bytes(data)
    os.replace(rebuilt, engine)
    with pytest.raises(IncompatibleEngineError, match="changed after it was checked") as refused:
        open_registry(parse_location(uri)).publish(artifact)
    assert refused.value.exit_code == 5 and "\n" not in str(refused.value)
    assert _files(tmp_path / "registry") == before
    assert not [p for p in (tmp_path / "registry").rglob("*") if p.name.endswith(".tmp")]


def test_the_manifest_is_read_once_when_the_artifact_is_loaded(engines: dict[str, Path], tmp_path: Path) -> None:
    """What is published is the manifest bytes that were judged with the engine, not the file as it
    is by the time each step reads it again."""
    source = tmp_path / "out"
    source.mkdir()
    engine = source / engines["8.6"].name
    shutil.copy2(engines["8.6"], engine)
    manifest = manifest_path_for(engine)
    shutil.copy2(manifest_path_for(engines["8.6"]), manifest)
    loaded = manifest.read_bytes()
    artifact = load_local_artifact(engine)
    manifest.write_bytes(loaded + b"\n")  # a re-stamp meanwhile: the same manifest, other bytes
    assert artifact.manifest_bytes == loaded
    outcome = DirRegistry(DirLocation(tmp_path / "registry")).publish(artifact)
    assert outcome.status == "published"
    assert manifest_path_for(tmp_path / "registry" / engine.name).read_bytes() == loaded
