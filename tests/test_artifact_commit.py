"""The commit protocol (trtforge.artifact) on plain files, across real processes: concurrent
commits of one artifact take turns, the manifest is renamed last, a temporary whose owner holds
its lock is never swept (whatever its pid means here), and a full disk is the user's error."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from trust import leftovers
from users import CANNOT_DROP, CANNOT_DROP_REASON, FORK, as_user, run_as, run_forked, waits_for_a_lock

from trtforge import artifact, fsutil
from trtforge.artifact import ArtifactWriter, sweep
from trtforge.errors import InvalidInputError, disk_error, unexpected_error

REPO = Path(__file__).resolve().parent.parent
#: one artifact's files, in the order a build stages them (the manifest before the report)
FILES = ("m.engine", "m.manifest.json", "m.accuracy.json")
MANIFEST = "m.manifest.json"


def commit_set(folder: Path, tag: str, on_step: Callable[[str], None] | None = None) -> None:
    """Commit FILES holding ``{name} {tag}`` into ``folder`` (``on_step``: the protocol's hook)."""
    artifact.on_step = on_step or (lambda step: None)
    with ArtifactWriter(folder, "m", "fp32") as writer:
        for name in FILES:
            writer.write(name, f"{name} {tag}".encode())
        writer.commit()


def seed(folder: Path, tag: str = "old") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (folder / name).write_text(f"{name} {tag}")


def held(folder: Path) -> dict[str, str]:
    return {name: (folder / name).read_text() for name in FILES if (folder / name).is_file()}


def whole(tag: str) -> dict[str, str]:
    return {name: f"{name} {tag}" for name in FILES}


def steps_of_a_commit(folder: Path) -> list[str]:
    seen: list[str] = []
    commit_set(folder, "probe", seen.append)
    artifact.on_step = lambda step: None
    return seen


# ---------------------------------------------------------------- two writers, one artifact


def test_two_commits_of_one_artifact_take_turns(tmp_path: Path) -> None:
    """The second commit starts while the first is between its renames; without the artifact's
    lock it would run to its end meanwhile and the first one's remaining renames would leave its
    manifest beside the second one's engine. With it, the folder ends as one whole set."""
    seed(tmp_path)
    first_inside, second_started = FORK.Event(), FORK.Event()

    def first() -> None:
        def pause(step: str) -> None:
            if step == "rename m.engine":
                first_inside.set()
                second_started.wait(10)
                time.sleep(0.5)  # the window the second commit would use without the lock

        commit_set(tmp_path, "first", pause)

    def second() -> None:
        assert first_inside.wait(10)
        second_started.set()
        commit_set(tmp_path, "second")

    assert run_forked(first, second) == [0, 0]
    assert held(tmp_path) == whole("second")
    assert leftovers(tmp_path) == ()


def killed_mid_commit(folder: Path) -> None:
    """``folder`` holds the old set, and a commit of the new one killed after its engine's rename:
    a dead process's journal, with the old engine's backup."""
    seed(folder)

    def killed() -> None:
        commit_set(
            folder, "new", lambda step: os.kill(os.getpid(), signal.SIGKILL) if step == "rename m.engine" else None
        )

    assert run_forked(killed) == [-signal.SIGKILL]
    assert any(path.name.endswith(".journal.tmp") for path in folder.iterdir())


@contextlib.contextmanager
def held_by_another_process(folder: Path, then: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Another process holds the lock of artifact m/fp32 in ``folder`` while the block runs, then
    runs ``then`` still holding it (a commit, or nothing: a writer that gives up) and exits 0."""
    holding, release = FORK.Event(), FORK.Event()

    def writer() -> None:
        with artifact.artifact_lock(folder, "m", "fp32"):
            holding.set()
            release.wait(10)
            then()

    process = FORK.Process(target=writer)
    process.start()
    try:
        assert holding.wait(10)
        yield
    finally:
        release.set()
        process.join(30)
    assert process.exitcode == 0


def test_a_dead_commit_is_not_rolled_back_while_another_writer_holds_its_artifact(tmp_path: Path) -> None:
    """A sweep rolling back a dead commit puts the old files back: while another process commits
    the same artifact, that would mix them with its new ones. The sweep leaves the journal to the
    lock's holder, whose commit rolls it back first, under the lock."""
    killed_mid_commit(tmp_path)
    with held_by_another_process(tmp_path, then=lambda: commit_set(tmp_path, "second")):
        assert sweep(tmp_path).rolled_back == 0  # another process holds m/fp32
    assert held(tmp_path) == whole("second")
    assert leftovers(tmp_path) == ()


def test_a_commit_rolls_back_a_dead_commit_of_its_artifact_before_its_own(tmp_path: Path) -> None:
    """A commit made without a sweep before it (a writer that does not sweep, or one whose sweep
    ran while the dead process still lived): rolled back only later, the dead commit's backup
    would replace the new engine."""
    killed_mid_commit(tmp_path)
    with ArtifactWriter(tmp_path, "m", "fp32") as writer:
        for name in FILES:
            writer.write(name, f"{name} second".encode())
        swept = writer.commit()
    assert swept.rolled_back == 1 and "1 interrupted commit(s) rolled back" in (swept.note or "")
    sweep(tmp_path)
    assert held(tmp_path) == whole("second")
    assert leftovers(tmp_path) == ()


def test_a_journal_is_the_list_every_version_reads_and_its_name_carries_the_lock(tmp_path: Path) -> None:
    """Older trtforge versions read a journal as a list of entries (anything else they drop
    without a rollback): it stays one, and the artifact's lock goes into its name. A journal
    without a lock in its name (an older version's) is still rolled back."""
    killed_mid_commit(tmp_path)
    (journal,) = (path for path in tmp_path.iterdir() if path.name.endswith(".journal.tmp"))
    assert journal.name.startswith(".trtforge-commit@m-fp32.")
    assert isinstance(json.loads(journal.read_text()), list)
    journal.rename(tmp_path / journal.name.replace("@m-fp32", ""))  # as an older version names it
    assert sweep(tmp_path).rolled_back == 1
    assert held(tmp_path) == whole("old") and leftovers(tmp_path) == ()


def test_a_journal_whose_lock_is_held_is_never_rolled_back_whatever_its_pid(tmp_path: Path) -> None:
    """The pid in a journal's name is a hint (another pid namespace, an older version's journal that
    names no artifact lock): while a process holds the journal's own lock, its commit is alive."""
    import fcntl

    killed_mid_commit(tmp_path)
    (journal,) = (path for path in tmp_path.iterdir() if path.name.endswith(".journal.tmp"))
    legacy = journal.rename(tmp_path / journal.name.replace("@m-fp32", ""))  # no artifact lock named
    fd = os.open(legacy, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert sweep(tmp_path).rolled_back == 0 and legacy.exists()
    finally:
        os.close(fd)
    assert sweep(tmp_path).rolled_back == 1
    assert held(tmp_path) == whole("old") and leftovers(tmp_path) == ()


def test_a_temporary_replaced_before_its_lock_is_taken_is_not_owned(tmp_path: Path) -> None:
    """A sweep may remove a new temporary before its maker locks it, and the name be made again
    meanwhile: the maker owns the file it opened, never the one now under the name."""
    path = tmp_path / f".m.engine.{os.getpid()}-tok.tmp"
    path.write_bytes(b"mine")
    fd = os.open(path, os.O_RDWR)
    path.unlink()
    path.write_bytes(b"another")
    assert fsutil._own(path, fd) is False  # and fd is closed
    assert str(path) not in fsutil._owned


def test_a_temporary_without_a_pid_or_a_live_owners_backup_is_judged_by_age_alone(tmp_path: Path) -> None:
    """A legacy temporary (no pid in its name) goes once it is old, never while fresh; a live
    process's backup is a hard link that keeps the old artifact's mtime, so age never sweeps it."""
    day_ago = time.time() - artifact.STALE_AFTER_S - 3600
    fresh_legacy, old_legacy = tmp_path / ".m.engine.abcd1234.tmp", tmp_path / ".m.engine.efgh5678.tmp"
    live_backup = tmp_path / f".m.engine.{os.getpid()}-tok.bak.tmp"
    live_old_temp = tmp_path / f".m.engine.{os.getpid()}-tok.tmp"
    for path in (fresh_legacy, old_legacy, live_backup, live_old_temp):
        path.write_bytes(b"x")
    for path in (old_legacy, live_backup, live_old_temp):
        os.utime(path, (day_ago, day_ago))
    assert sweep(tmp_path).files == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([fresh_legacy.name, live_backup.name])


def test_a_dead_commit_left_to_its_artifacts_writer_keeps_its_backups(tmp_path: Path) -> None:
    """A sweep that leaves a dead commit to the writer holding its artifact's lock must not remove
    that commit's backups as stale temporaries: the writer may end without committing (a failed
    gate, Ctrl-C), and the next sweep's rollback needs them to put the old set back."""
    killed_mid_commit(tmp_path)
    with held_by_another_process(tmp_path):
        assert sweep(tmp_path) == artifact.Swept()
    assert sweep(tmp_path).rolled_back == 1
    assert held(tmp_path) == whole("old") and leftovers(tmp_path) == ()


# ---------------------------------------------------------------- a folder users share


@pytest.mark.parametrize(
    ("folder_mode", "shared"),
    [(0o1777, 0o1777), (0o2775, 0o3775), (0o770, 0o1770), (0o755, None), (0o700, None)],
    ids=["1777", "2775", "0770", "0755", "0700"],
)
def test_the_lock_folder_is_as_shared_as_the_folder_it_is_in(
    tmp_path: Path, folder_mode: int, shared: int | None
) -> None:
    """In a folder users share (/tmp's 1777, a team's setgid 2775) the lock folder was made as the
    umask said (0755, 0700), so no other user could make a lock file there: it now takes the
    folder's own mode and the sticky bit (no user removes a lock file another holds), and its lock
    files are readable (all flock needs) whatever the umask. A folder that is not shared keeps the
    umask's modes."""
    folder = tmp_path / "out"
    folder.mkdir()
    folder.chmod(folder_mode)
    umask = os.umask(0o077)
    try:
        with artifact.artifact_lock(folder, "m", "fp32"):
            pass
    finally:
        os.umask(umask)
    lock = artifact.lock_file(folder, "m", "fp32")
    assert stat.S_IMODE(lock.parent.stat().st_mode) == (shared or 0o700)
    assert stat.S_IMODE(lock.stat().st_mode) == (0o644 if shared else 0o600)
    assert leftovers(folder) == ()


def test_users_sharing_a_sticky_folder_take_turns_on_an_artifacts_lock(
    reachable: Path, nobody: pwd.struct_passwd
) -> None:
    """A folder users share (1777, as /tmp): root's commit made the lock folder 0755 and its lock
    files 0644, so every commit of another user there was exit 2 "cannot lock": it could neither
    make a lock file in that folder nor open root's for writing. Now it makes its own and locks
    root's (read-only: flock needs no more), and the lock still lets one writer in at a time:
    its commit of an artifact whose lock root holds waits for root."""
    shared = reachable / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    commit_set(shared, "root")

    def theirs() -> None:
        for name in ("m", "k"):  # m: root's lock file; k: one of its own, in root's lock folder
            with ArtifactWriter(shared, name, "fp32") as writer:
                writer.write(f"{name}.theirs", b"theirs")
                writer.commit()

    with artifact.artifact_lock(shared, "m", "fp32"):
        process = FORK.Process(target=as_user(nobody, theirs))
        process.start()
        waiting = waits_for_a_lock(process)
        assert not (shared / "m.theirs").exists()
    process.join(30)
    if process.exitcode == CANNOT_DROP:
        pytest.skip(CANNOT_DROP_REASON)
    assert waiting and process.exitcode == 0
    assert {path.name: path.stat().st_uid for path in shared.iterdir() if path.name.endswith(".theirs")} == {
        "m.theirs": nobody.pw_uid,
        "k.theirs": nobody.pw_uid,
    }
    locks = shared / artifact.LOCK_DIR
    assert stat.S_IMODE(locks.stat().st_mode) == 0o1777  # nobody may not remove root's lock file
    assert {path.name: path.stat().st_uid for path in locks.iterdir()} == {
        "m-fp32.lock": 0,
        "k-fp32.lock": nobody.pw_uid,
    }
    assert held(shared) == whole("root") and leftovers(shared) == ()


def refused_as(user: pwd.struct_passwd, target: Callable[[], None]) -> str:
    """The one line ``target``, run as ``user``, is refused with (exit 2)."""
    said = FORK.SimpleQueue()

    def run() -> None:
        try:
            target()
        except InvalidInputError as exc:
            said.put(str(exc))
            sys.exit(2)

    assert run_as(user, run) == 2
    return said.get()


def test_another_users_narrow_lock_folder_is_named_and_its_owners_next_lock_shares_it(
    reachable: Path, nobody: pwd.struct_passwd
) -> None:
    """The 0755 lock folder an older trtforge made in a shared folder: another user's commit there
    is exit 2 saying whose it is and how it gets shared, leaving nothing; the owner's next lock
    there widens it (never another user's folder), then the other user's commit goes through. A
    lock file others may not read (a umask of 077) is named with its fix too."""
    shared = reachable / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    locks = shared / artifact.LOCK_DIR
    locks.mkdir()
    locks.chmod(0o755)
    lock = locks / "m-fp32.lock"
    assert refused_as(nobody, lambda: commit_set(shared, "theirs")) == (
        f"cannot lock {lock} (Permission denied): {locks} is root's and other users may not write it; "
        f"a build of root's into {shared} shares it (or chmod 1777 {locks}), else write to another folder"
    )
    assert sorted(path.name for path in shared.iterdir()) == [artifact.LOCK_DIR]
    with artifact.artifact_lock(shared, "m", "fp32"):
        lock.chmod(0o600)
    assert stat.S_IMODE(locks.stat().st_mode) == 0o1777
    assert refused_as(nobody, lambda: commit_set(shared, "theirs")) == (
        f"cannot lock {lock} (Permission denied): {lock} is root's and other users may not read it; "
        f"ask root to run chmod a+r {lock}, else write to another folder"
    )
    lock.chmod(0o644)
    assert run_as(nobody, lambda: commit_set(shared, "theirs")) == 0
    assert held(shared) == whole("theirs") and leftovers(shared) == ()
    os.chown(locks, nobody.pw_uid, nobody.pw_gid)
    locks.chmod(0o755)
    with artifact.artifact_lock(shared, "m", "fp32"):
        pass
    assert stat.S_IMODE(locks.stat().st_mode) == 0o755
    # the user's own lock file that the user may not read: no "ask nobody to run chmod" to nobody
    os.chown(lock, nobody.pw_uid, nobody.pw_gid)
    lock.chmod(0o200)
    said = refused_as(nobody, lambda: commit_set(shared, "again"))
    assert said.startswith(f"cannot lock {lock} (Permission denied)") and "other users" not in said, said
    assert held(shared) == whole("theirs")


# ---------------------------------------------------------------- a folder at a file's name


def user_folder(path: Path) -> None:
    """A folder of the user's at ``path`` (where a file of the artifact may be), holding a file."""
    path.unlink(missing_ok=True)
    path.mkdir()
    (path / "mine.txt").write_text("mine")


@pytest.mark.parametrize("name", [*FILES, "m.intoto.jsonl"])
def test_a_folder_at_an_artifacts_file_name_is_refused_before_anything_is_replaced(tmp_path: Path, name: str) -> None:
    """A folder where the commit renames a file in (the manifest: after the engine's rename) or
    removes one (the attestation the new set drops): exit 2 naming it, the old set whole, the
    folder untouched, no journal."""
    seed(tmp_path)
    user_folder(tmp_path / name)
    with pytest.raises(InvalidInputError) as raised, ArtifactWriter(tmp_path, "m", "fp32") as writer:
        writer.replace_whole("m")
        for file in FILES:
            writer.write(file, f"{file} new".encode())
        writer.commit()
    assert raised.value.exit_code == 2
    assert str(raised.value) == (
        f"cannot write {tmp_path / name}: it is a folder; remove it, or write the artifact to another folder"
    )
    assert held(tmp_path) == {file: text for file, text in whole("old").items() if file != name}
    assert (tmp_path / name / "mine.txt").read_text() == "mine" and leftovers(tmp_path) == ()


@pytest.mark.parametrize("replacing", [True, False], ids=["over-an-old-set", "a-new-artifact"])
def test_a_sweep_rolls_back_a_dead_commit_around_a_folder_at_its_file_name(tmp_path: Path, replacing: bool) -> None:
    """A dead commit whose manifest's name is now a folder (the journal older versions left when
    their commit ran into one): the sweep rolls the rest back and leaves the folder, and the
    folder's other artifacts still commit; the artifact itself is refused until the folder goes."""
    tmp_path.mkdir(exist_ok=True)
    if replacing:
        seed(tmp_path)

    def killed() -> None:
        commit_set(
            tmp_path, "new", lambda step: os.kill(os.getpid(), signal.SIGKILL) if step == "rename m.engine" else None
        )

    assert run_forked(killed) == [-signal.SIGKILL]
    user_folder(tmp_path / MANIFEST)
    assert sweep(tmp_path).rolled_back == 1
    expected = whole("old") if replacing else {}
    assert held(tmp_path) == {file: text for file, text in expected.items() if file != MANIFEST}
    assert (tmp_path / MANIFEST / "mine.txt").read_text() == "mine" and leftovers(tmp_path) == ()
    with ArtifactWriter(tmp_path, "n", "fp32") as writer:
        writer.write("n.engine", b"n")
        writer.commit()
    assert (tmp_path / "n.engine").read_bytes() == b"n"
    with pytest.raises(InvalidInputError, match="it is a folder"):
        commit_set(tmp_path, "again")


def test_without_flock_a_held_lock_is_reported_busy_not_a_folder_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where there is no flock (Windows) the lock is filelock's, whose Timeout is an OSError: a
    sweep that finds the lock of a dead commit's artifact held leaves it, it does not fail the
    command with "cannot lock ... the folder must be writable"."""
    monkeypatch.setattr(artifact, "fcntl", None)
    lock = artifact.lock_file(tmp_path, "m", "fp32")
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with artifact._holding(lock, wait=True):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert holding.wait(10)
        with artifact._holding(lock, wait=False) as free:
            assert free is False
    finally:
        release.set()
        thread.join(10)
    with artifact._holding(lock, wait=False) as free:
        assert free is True


# ---------------------------------------------------------------- the order of the renames


def test_the_manifest_is_renamed_last(tmp_path: Path) -> None:
    steps = steps_of_a_commit(tmp_path)
    renames = [step for step in steps if step.startswith("rename ")]
    assert sorted(renames) == sorted(f"rename {name}" for name in FILES)
    assert renames[-1] == f"rename {MANIFEST}"


def test_a_kill_at_any_step_never_shows_the_new_manifest_beside_an_old_file(tmp_path: Path) -> None:
    """SIGKILL at each step of a commit: whoever reads the folder before the next run sees the
    new manifest only with every new file (the old manifest pins the old engine, so a new engine
    beside it is refused by its hash); the next run's sweep leaves one whole set."""
    steps = steps_of_a_commit(tmp_path / "probe")
    for index, step in enumerate(steps):
        folder = tmp_path / f"killed-{index}"
        seed(folder)

        def killed(step: str = step, folder: Path = folder) -> None:
            def kill(at: str) -> None:
                if at == step:
                    os.kill(os.getpid(), signal.SIGKILL)

            commit_set(folder, "new", kill)

        assert run_forked(killed) == [-signal.SIGKILL], step
        now = held(folder)
        if now.get(MANIFEST) == f"{MANIFEST} new":
            assert now == whole("new"), f"killed at {step}"
        sweep(folder)
        assert held(folder) in (whole("old"), whole("new")), f"killed at {step}"
        assert held(folder) == (whole("old") if index < steps.index("commit") else whole("new")), step
        assert leftovers(folder) == ()


# ---------------------------------------------------------------- a live writer's temporaries

#: a writer whose temporaries carry a pid that means another process here (or none): as in a
#: container that shares the folder from another pid namespace. It stops inside its commit (after
#: the journal: staged files, backups and the journal are all on disk) until told to go on.
OWNER = """
import sys
from pathlib import Path
from trtforge import artifact, fsutil
folder, pid = Path(sys.argv[1]), sys.argv[2]
fsutil.temp_prefix = lambda base: f".{base}.{pid}-"
def pause(step):
    if step == "journal":
        print("inside", flush=True)
        sys.stdin.readline()
artifact.on_step = pause
with artifact.ArtifactWriter(folder, "m", "fp32") as writer:
    for name in sys.argv[3:]:
        writer.stage(name).write_text(name + " new")
    writer.commit()
"""


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_temporary_whose_owner_holds_its_lock_is_never_swept(tmp_path: Path) -> None:
    """The pid in the names is dead here (the writer's pid in its own namespace): by the pid alone
    the sweep would roll the live commit back and remove its files. The owner's lock says it is
    alive: nothing of it is touched and the commit completes; an unlocked temporary of the same
    pid goes. Killed, the same writer's commit is rolled back by the next sweep at once."""
    pid = dead_pid()
    for ending in ("completes", "is killed"):
        folder = tmp_path / ending.replace(" ", "-")
        seed(folder)
        owner = subprocess.Popen(
            [sys.executable, "-c", OWNER, str(folder), str(pid), *FILES],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert owner.stdin is not None and owner.stdout is not None
            assert owner.stdout.readline() == "inside\n"
            during = {path.name for path in folder.iterdir()}
            assert any(name.endswith(".journal.tmp") and f".{pid}-" in name for name in during), during
            unlocked = folder / f".m.engine.{pid}-abcd1234.tmp"  # the same pid, no lock: judged by the pid
            unlocked.write_text("left by a dead writer")
            assert sweep(folder) == artifact.Swept(files=1, size=21)
            assert {path.name for path in folder.iterdir()} == during  # the live commit, untouched
            if ending == "completes":
                owner.stdin.write("\n")
                owner.stdin.close()
                assert owner.wait(30) == 0
                assert held(folder) == whole("new")
            else:
                owner.kill()
                owner.wait(30)
                assert sweep(folder).rolled_back == 1
                assert held(folder) == whole("old")
            assert leftovers(folder) == ()
        finally:
            if owner.poll() is None:
                owner.kill()
                owner.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a process's state is read from Linux's /proc")
def test_a_zombies_commit_is_rolled_back_and_its_temporaries_go(tmp_path: Path) -> None:
    """A killed writer that nobody reaps (PID 1 of a container without an init) stays a zombie,
    which ``os.kill(pid, 0)`` still finds: it has exited all the same, so the next sweep rolls its
    open commit back and removes its temporaries at once, not after 24 h. The zombie is real: this
    process reaps its child only after the sweep."""

    def killed() -> None:
        commit_set(
            tmp_path, "new", lambda step: os.kill(os.getpid(), signal.SIGKILL) if step == "rename m.engine" else None
        )

    seed(tmp_path)
    writer = FORK.Process(target=killed)
    writer.start()
    pid = writer.pid
    assert pid is not None
    try:
        state = Path(f"/proc/{pid}/stat")
        deadline = time.monotonic() + 30
        while state.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the writer never exited"
            time.sleep(0.01)
        os.kill(pid, 0)  # the probe a zombie answers as if it ran
        assert any(f".{pid}-" in path.name for path in tmp_path.iterdir())
        assert sweep(tmp_path).rolled_back == 1
        assert held(tmp_path) == whole("old") and leftovers(tmp_path) == ()
    finally:
        writer.join()


def test_a_sweep_goes_as_deep_as_asked_and_never_through_a_link(tmp_path: Path) -> None:
    """A dead writer's temporary one folder down goes at depth 2 and stays at depth 1; one in a
    folder reached through a symbolic link stays (it is another folder's to sweep); a hidden file
    that is not a temporary, and the visible entries beside it, stay."""
    pid = dead_pid()
    nested = tmp_path / "digests" / f".entry.json.{pid}-abcd1234.tmp"
    nested.parent.mkdir()
    nested.write_text("left by a dead writer")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    linked = elsewhere / f".other.{pid}-abcd1234.tmp"
    linked.write_text("not this folder's")
    (tmp_path / "linked").symlink_to(elsewhere, target_is_directory=True)
    kept = [tmp_path / ".hidden-but-ours", tmp_path / "digests" / "0123.json"]
    for path in kept:
        path.write_text("{}")

    assert sweep(tmp_path) == artifact.Swept()
    assert nested.exists()
    assert sweep(tmp_path, depth=2) == artifact.Swept(files=1, size=21)
    assert not nested.exists()
    assert linked.exists() and all(path.exists() for path in kept)


# ---------------------------------------------------------------- a full disk

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_staging_is_the_users_error_and_leaves_nothing(tmp_path: Path) -> None:
    seed(tmp_path)
    with pytest.raises(InvalidInputError) as raised, ArtifactWriter(tmp_path, "m", "fp32") as writer:
        writer.stage("m.engine").write_text("half an engine")
        raise ENOSPC  # as a write of the staged engine raises it: a file object names no path
    assert raised.value.exit_code == 2
    assert str(raised.value) == (
        f"cannot write {tmp_path}: no space left on device; "
        "free space on that disk, or write to a folder on another one"
    )
    assert held(tmp_path) == whole("old") and leftovers(tmp_path) == ()


def test_a_full_disk_found_by_a_flush_fails_the_commit_and_keeps_the_old_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``write`` flushes on a thread (NFS and some quotas report a full disk only then): the
    commit waits for it, and its error is the commit's, before anything is replaced."""
    seed(tmp_path)
    real, failed = artifact.fsync_file, []

    def full_on_the_flush_thread(path: Path) -> None:
        if threading.current_thread().name != "trtforge-fsync":
            real(path)
            return
        failed.append(path.name)
        raise ENOSPC

    monkeypatch.setattr(artifact, "fsync_file", full_on_the_flush_thread)
    steps: list[str] = []
    with pytest.raises(InvalidInputError, match="no space left on device"):
        commit_set(tmp_path, "new", steps.append)
    assert failed and "journal" not in steps  # raised by the flush's wait, before the commit began
    assert held(tmp_path) == whole("old") and leftovers(tmp_path) == ()


def test_a_temporary_that_cannot_go_never_hides_the_error_and_loses_its_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discarding a staged file whose removal fails (read-only by now, open elsewhere): the error
    that is discarding it comes through, and the temporary's lock is dropped, so a sweep may take
    it. Staging a name again discards the earlier temporary first."""
    seed(tmp_path)
    real_unlink = Path.unlink

    def refused(self: Path, missing_ok: bool = False) -> None:
        if self.name.endswith(".tmp"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        real_unlink(self, missing_ok=missing_ok)

    with pytest.raises(KeyboardInterrupt), ArtifactWriter(tmp_path, "m", "fp32") as writer:
        writer.write("m.engine", b"first")
        writer.write("m.engine", b"second")
        assert len(leftovers(tmp_path)) == 1  # the first one went before the second was made
        monkeypatch.setattr(Path, "unlink", refused)
        raise KeyboardInterrupt
    monkeypatch.undo()
    (left,) = leftovers(tmp_path)
    assert str(tmp_path / left) not in fsutil._owned  # its lock is dropped
    assert held(tmp_path) == whole("old")


def test_a_full_disk_while_writing_the_journal_leaves_no_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(tmp_path)
    write_text = Path.write_text

    def full(self: Path, *args: object, **kwargs: object) -> int:
        if self.name.startswith(f".{artifact.JOURNAL_BASE}"):
            raise ENOSPC
        return write_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(InvalidInputError, match="no space left on device"):
        commit_set(tmp_path, "new")
    assert held(tmp_path) == whole("old") and leftovers(tmp_path) == ()


def test_a_full_disk_elsewhere_inside_the_block_names_that_file_not_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build's accuracy gate writes the cache inside its commit's block: a full cache disk is
    that file's (``staged_file`` names it), not ``--out``'s, which has room."""
    out, cache = tmp_path / "out", tmp_path / "cache" / "graph.onnx"
    seed(out)
    write_bytes = Path.write_bytes

    def full_cache(self: Path, data: bytes) -> int:
        if self.parent == cache.parent:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a file object's write: no name
        return write_bytes(self, data)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_bytes", full_cache)
    with pytest.raises(InvalidInputError) as raised, ArtifactWriter(out, "m", "fp32") as writer:
        writer.write("m.engine", b"new")
        fsutil.atomic_write_bytes(cache, b"graph")
    assert str(raised.value).startswith(f"cannot write {cache}: no space left on device; free space on that disk")
    assert held(out) == whole("old") and leftovers(tmp_path) == ()


def test_a_disk_error_names_the_file_written_else_the_callers_folder() -> None:
    """The file the error names beats the caller's guess; a copy's (``shutil.copyfile``) names its
    source first, but the full disk is its destination's."""
    unnamed = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    named = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/cache/x.onnx")
    copied = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/registry/m.engine", None, "/out/.m.engine.9-a.tmp")
    assert str(disk_error(unnamed, "/out")).startswith("cannot write /out: ")
    assert str(disk_error(named, "/out")).startswith("cannot write /cache/x.onnx: ")
    assert str(disk_error(copied)).startswith("cannot write /out/.m.engine.9-a.tmp: ")


@pytest.mark.parametrize(
    ("code", "reason", "fix"),
    [
        (errno.ENOSPC, "no space left on device", "free space on that disk"),
        (errno.EDQUOT, "disk quota exceeded", "free space on that disk"),
        (errno.EROFS, "read-only file system", "write to a folder on a writable file system"),
        (errno.EFBIG, "file too large", "raise the file size limit (ulimit -f), or write to a folder on a file system"),
    ],
)
def test_disk_errors_anywhere_are_one_line_user_errors(code: int, reason: str, fix: str) -> None:
    """An OSError the disk raised that no write site turned into a message (the CLI's last
    resort): exit 2 naming the file, never "internal error"."""
    error = unexpected_error(OSError(code, os.strerror(code), "/cache/fp16/x.onnx"), "spec.yaml")
    assert error.exit_code == 2 and "\n" not in str(error)
    assert str(error).startswith(f"spec.yaml: cannot write /cache/fp16/x.onnx: {reason}; {fix}")
    assert disk_error(OSError(errno.EACCES, "Permission denied")) is None
    assert unexpected_error(ValueError("a bug")).exit_code == 1


def _cached(path: Path) -> bool:
    """Whether the first page of ``path`` is in the page cache (a read that may not wait for the
    disk fails with EAGAIN where it is not)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:  # EOPNOTSUPP: this file system cannot say
        pytest.skip(f"preadv(RWF_NOWAIT) is not supported here ({exc.strerror})")
    finally:
        os.close(fd)


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs Linux's preadv(RWF_NOWAIT) to see the page cache")
def test_staging_a_file_gives_back_the_cache_of_the_one_it_replaces_not_its_bytes(tmp_path: Path) -> None:
    """The new engine's pages reuse the old one's (``fsutil.drop_cached_pages``); the old file
    stays whole until the commit, and the commit's result is cached as written."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"x" * 8192)
    fsutil.fsync_file(probe)
    fsutil.drop_cached_pages(probe)
    if _cached(probe):
        pytest.skip("this file system keeps its page cache (tmpfs): nothing to give back")
    commit_set(tmp_path, "old")
    # ext4's journal may hold the fresh file's buffers until its transaction commits, and the kernel
    # keeps pages it cannot release: under other I/O that was 1 run in 40. sync commits it.
    os.sync()
    assert _cached(tmp_path / "m.engine")
    with ArtifactWriter(tmp_path, "m", "fp32") as writer:
        writer.write("m.engine", b"m.engine new")
        assert not _cached(tmp_path / "m.engine") and held(tmp_path) == whole("old")
        writer.commit()
    assert held(tmp_path)["m.engine"] == "m.engine new" and _cached(tmp_path / "m.engine")
    # a link at the final name is left alone: the commit replaces the link, not what it points to
    shared = tmp_path / "shared.engine"
    shared.write_bytes(b"x" * 8192)
    fsutil.fsync_file(shared)
    (tmp_path / "m.engine").unlink()
    (tmp_path / "m.engine").symlink_to(shared)
    with ArtifactWriter(tmp_path, "m", "fp32") as writer:
        writer.write("m.engine", b"m.engine newer")
        assert _cached(shared)
        writer.commit()
    assert shared.read_bytes() == b"x" * 8192 and not (tmp_path / "m.engine").is_symlink()


def test_staging_over_a_fifo_neither_blocks_nor_touches_it(tmp_path: Path) -> None:
    """Opening a FIFO to give its cache back would wait for a writer forever."""
    os.mkfifo(tmp_path / "m.accuracy.json")

    def commit_over_it() -> None:
        with ArtifactWriter(tmp_path, "m", "fp32") as writer:
            writer.write("m.accuracy.json", b"report")
            writer.commit()

    assert run_forked(commit_over_it, timeout=20) == [0]
    assert (tmp_path / "m.accuracy.json").read_bytes() == b"report"


def test_a_file_system_without_flock_still_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Some network and FUSE file systems have no flock: the artifact lock holds nothing there (as
    for temporaries), and the commit goes on instead of failing every build, pull and publish."""
    real = artifact.fcntl.flock

    def no_flock(fd: int, operation: int) -> None:
        if operation == artifact.fcntl.LOCK_EX:
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
        real(fd, operation)

    monkeypatch.setattr(artifact.fcntl, "flock", no_flock)  # the module fsutil uses too
    seed(tmp_path)
    commit_set(tmp_path, "new")
    assert all((tmp_path / name).read_text() == f"{name} new" for name in FILES)
