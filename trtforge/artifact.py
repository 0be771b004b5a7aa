"""The one commit protocol for the files of an artifact (engine, manifest, accuracy report).

Whatever interrupts a commit (Ctrl-C, SIGTERM, an exception, SIGKILL, a power cut), the folder
ends up holding either the whole previous set of files or the whole new one, never a mix.
Build, ``ci``'s cache restore, ``pull`` and the ``dir://`` and ``triton://`` registries all write
through :class:`ArtifactWriter`.

Protocol, once every new file is staged complete and fsynced beside its final name
(``.{name}.{pid}-{token}.tmp``), under the artifact's lock (:func:`artifact_lock`: one commit of
a name and precision at a time in a folder, whichever process or container makes it):

1. back up: each final file that exists is hard-linked to ``.{name}.{pid}-{token}.bak.tmp``
   (the final stays in place, so readers see the old set);
2. journal: ``.trtforge-commit@{name}-{precision}.{pid}-{token}.journal.tmp`` (written atomically;
   its name carries the artifact's lock, :func:`_journal_base`) lists, per final
   name, its staged file and its backup (none when the final did not exist);
3. rename every staged file onto its final name (or remove a final the new set drops), the
   manifest last: a reader that sees the new manifest sees every new file, and until then the
   old manifest, which pins the old engine, refuses the new one beside it;
4. commit point: the journal is removed (one unlink);
5. the backups are removed.

Before step 1 a folder at a final name is refused (the user's error: a commit renames files only,
and never replaces or removes a folder). Before step 4 the change is undone by :func:`rollback`,
which puts every backup back over its final, removes a final that had none, then removes the
journal; it is idempotent, so a rollback cut short is finished by the next one. After step 4 the
new set is in place.

Interrupts: SIGINT and SIGTERM are deferred from step 1 to step 5 (recorded, then raised once the
folder is consistent); one that arrives before the commit point rolls back, so an interrupted run
replaces nothing. Any exception inside the window rolls back too. SIGKILL cannot be deferred:
the next run that writes to the folder calls :func:`sweep`, which rolls back the journal of a
dead process (under its artifact's lock, taken before the journal's own, and not while another
process holds it: that commit's backups are kept for it) and then removes the other temporaries
of dead processes; a commit sweeps its folder under its lock first, so a dead commit of the same
artifact is never rolled back over a newer set. A temporary whose lock
(``flock``, :mod:`trtforge.fsutil`) a process holds is live, whatever its name's pid means here
(a writer in another container's pid namespace); an unlocked one is judged by that pid: gone
(a zombie is: it has exited, unreaped), or taken by a process that started after the temporary
was made (pid reuse), or older than :data:`STALE_AFTER_S`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from trtforge.errors import InvalidInputError, disk_error
from trtforge.fsutil import (  # fcntl: None where there is no flock (Windows)
    TEMP_SUFFIX,
    Owner,
    TempName,
    close_lock,
    discard_temp,
    drop_cached_pages,
    fcntl,
    fsync_dir,
    fsync_file,
    is_folder,
    judging_owner,
    link_temp,
    make_temp,
    make_temp_dir,
    open_lock,
    refuse_folders,
    release_temp,
    rename_temp,
    shared_mode,
    user_name,
    wait_for_lock,
)
from trtforge.jsonsafe import cache_json
from trtforge.manifest import MANIFEST_SUFFIX, artifact_file_names
from trtforge.threads import beside

if TYPE_CHECKING:
    from trtforge.manifest import Manifest

#: the folder of the artifacts' lock files, inside the folder they are committed to
LOCK_DIR = ".trtforge-locks"
LOCK_SUFFIX = ".lock"
JOURNAL_BASE = "trtforge-commit"
JOURNAL_KIND = "journal.tmp"
BACKUP_KIND = "bak.tmp"
#: a temporary older than this is stale even when a process with its owner's pid runs (pid reuse)
STALE_AFTER_S = 24 * 3600.0
_CLOCK_SLACK_S = 5.0  # /proc's boot time is whole seconds, and clocks get stepped
_DEFERRED = (signal.SIGINT, signal.SIGTERM)


def on_step(step: str) -> None:
    """Called between the steps of a commit; does nothing. Tests replace it to interrupt or kill
    the process at each step, which is how the protocol's invariant is proven."""


# ---------------------------------------------------------------- the artifact's lock

#: the artifact locks this process holds: (thread, lock file) -> [descriptor, depth]. A commit
#: inside ``ci``'s hold of the same lock takes it again in the same thread (depth + 1); another
#: thread opens its own descriptor, which flock makes wait like another process.
_held: dict[tuple[int, str], list[int]] = {}
_held_guard = threading.Lock()


def _forget_locks() -> None:
    """In a forked child: a lock the parent holds is not the child's (``fsutil`` closes its
    inherited descriptors, as it does every lock file's it opened)."""
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks)


def lock_file(folder: Path, name: str, precision: str) -> Path:
    """The lock file of artifact ``name``/``precision`` committed to ``folder``."""
    return folder / LOCK_DIR / f"{name}-{precision}{LOCK_SUFFIX}"


@contextlib.contextmanager
def artifact_lock(folder: Path, name: str, precision: str) -> Iterator[None]:
    """One writer at a time of artifact ``name``/``precision`` in ``folder``: an OS file lock,
    ``folder/.trtforge-locks/{name}-{precision}.lock``, which holds across processes and containers
    sharing the folder and dies with its holder. Every commit takes it (build, ``ci``, verify,
    sign, pull, ``dir://``); ``ci`` holds it around a whole build, whose commit takes it again.

    ``flock`` itself, as ``fsutil`` takes it on temporaries, where there is one: the filelock
    package costs 31 ms of imports, a tenth of a small model's whole build."""
    with _holding(lock_file(folder, name, precision), wait=True):
        yield


@contextlib.contextmanager
def _holding(path: Path, wait: bool) -> Iterator[bool]:
    """Hold the lock file ``path`` for the block, reentrant per thread; with ``wait`` off, only if
    no other holder has it (the block gets False, holding nothing, when one has)."""
    if fcntl is None:  # no flock (Windows): filelock's lock, one object per file, which counts holds
        from filelock import FileLock, Timeout

        lock = FileLock(str(path), is_singleton=True)

        def take() -> bool:
            try:
                lock.acquire(timeout=-1 if wait else 0)
            except Timeout:  # an OSError: decided here, before _locked calls it a folder problem
                return False
            return True

        if not _locked(path, take):
            yield False
            return
        try:
            yield True
        finally:
            lock.release()
        return
    key = (threading.get_ident(), os.path.abspath(path))
    with _held_guard:
        held = _held.get(key)
        if held is not None:
            held[1] += 1
    if held is None:
        fd = _locked(path, lambda: _flocked(path, wait))
        if fd is None:
            yield False
            return
        with _held_guard:
            held = _held[key] = [fd, 1]
    try:
        yield True
    finally:
        with _held_guard:
            held[1] -= 1
            if held[1] == 0:
                del _held[key]
                close_lock(held[0])  # releases the flock


def _locked(path: Path, take: Callable[[], Any]) -> Any:
    """``take()`` (the lock) in a folder made for it; a folder that cannot hold it is a user error."""
    try:
        _make_lock_folder(path.parent)
        return take()
    except OSError as exc:
        if path.parent.exists() and not path.parent.is_dir():
            raise InvalidInputError(
                f"cannot lock {path}: {path.parent} is a file where trtforge keeps its locks; remove it"
            ) from exc
        raise (
            _not_shared(path, exc)
            or disk_error(exc, path.parent)
            or InvalidInputError(f"cannot lock {path} ({exc.strerror}); the folder it writes to must be writable")
        ) from exc


def _make_lock_folder(folder: Path) -> None:
    """``folder`` (``.trtforge-locks``), as shared as the folder it is in (``shared_mode``): made
    under a temporary name and renamed in with its mode set, so that another user never finds it
    narrower. This user's own, made narrower (by an older trtforge: 0755 in /tmp), is widened."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    shared = shared_mode(folder.parent.stat().st_mode)
    if not shared:
        folder.mkdir(exist_ok=True)
        return
    try:
        found = folder.lstat()
    except FileNotFoundError:
        staged = make_temp_dir(folder.parent, folder.name)
        try:
            staged.chmod(shared)
            os.rename(staged, folder)  # replaces nothing but an empty folder another run just made
        except OSError:  # another run's came first, or a file is there (said by the caller)
            staged.rmdir()
        finally:
            release_temp(staged)
        return
    mode = stat.S_IMODE(found.st_mode)
    if stat.S_ISDIR(found.st_mode) and found.st_uid == os.geteuid() and mode | shared != mode:
        folder.chmod(mode | shared)


def _not_shared(path: Path, exc: OSError) -> InvalidInputError | None:
    """Another user's lock folder that this user may not write where users share the output
    folder (one an older trtforge made 0755 in /tmp): whose it is and the fix, for the one line.
    None for anything else (another user's unreadable lock file is :func:`fsutil.open_lock`'s)."""
    folder = path.parent
    if not isinstance(exc, PermissionError) or os.path.lexists(path):
        return None
    try:
        shared = shared_mode(folder.parent.stat().st_mode)
        owner = folder.lstat().st_uid
    except OSError:
        return None
    if not shared or owner == os.geteuid():
        return None
    name = user_name(owner)
    return InvalidInputError(
        f"cannot lock {path} ({exc.strerror}): {folder} is {name}'s and other users may not write it; a build "
        f"of {name}'s into {folder.parent} shares it (or chmod {shared:o} {folder}), else write to another folder"
    )


def _flocked(path: Path, wait: bool) -> int | None:
    """A descriptor of ``path`` holding an exclusive flock on it (waited for, or None when another
    holds it and ``wait`` is off). Where the file system has no flock (some network and FUSE ones),
    the descriptor holds nothing and writers are not serialized there, as temporaries on such a
    file system are owned by their pid alone."""
    fd = open_lock(path)
    try:
        wait_for_lock(fd, None if wait else 0)  # False (no flock here): the descriptor holds nothing
    except TimeoutError:
        close_lock(fd)
        return None
    except BaseException:
        close_lock(fd)
        raise
    return fd


@contextlib.contextmanager
def locked_manifest(manifest_path: Path) -> Iterator[Manifest]:
    """The manifest at ``manifest_path``, read again under its artifact's lock, which the block
    holds: what it rewrites beside it (sign, verify) cannot interleave with another commit."""
    from trtforge.manifest import read_manifest

    first = read_manifest(manifest_path)
    with artifact_lock(manifest_path.parent, first.name, first.precision):
        yield read_manifest(manifest_path)


# ---------------------------------------------------------------- signals


class _Interrupted(KeyboardInterrupt):
    """A deferred signal arrived before the commit point: roll back, then deliver it."""


class _Deferral:
    """SIGINT/SIGTERM handlers that only record the signal while the commit window is open;
    on leaving, the first one recorded is delivered as if it came then."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self._previous: dict[int, Any] = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.pending.append(signum)

    def __enter__(self) -> _Deferral:
        if threading.current_thread() is threading.main_thread():
            for signum in _DEFERRED:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self.pending:
            signal.raise_signal(self.pending[0])  # SIGINT raises KeyboardInterrupt here


# ---------------------------------------------------------------- the commit


@dataclass(frozen=True)
class _Entry:
    final: str
    staged: str | None  # None: the new set drops this file
    backup: str | None  # None: no final existed before the commit

    def to_dict(self) -> dict[str, str | None]:
        return {"final": self.final, "staged": self.staged, "backup": self.backup}


def _journal_base(folder: Path, lock: Path) -> str:
    """The journal's name carries its artifact's lock: ``trtforge-commit@{name}-{precision}``, with
    ``@..`` before the lock's name where it is in the folder above (a ``triton://`` model's). Its
    content stays the list of entries every trtforge version reads and rolls back."""
    lock_folder, here = Path(os.path.abspath(lock.parent.parent)), Path(os.path.abspath(folder))
    if lock_folder not in (here, here.parent):
        raise ValueError(f"{lock}: an artifact's lock lives in the folder it is committed to or the one above")
    above = "@.." if lock_folder != here else ""
    return f"{JOURNAL_BASE}{above}@{lock.name.removesuffix(LOCK_SUFFIX)}"


def _journal_lock(journal: Path, base: str) -> Path | None:
    """The lock file a journal's name (``base``) carries; None for one written before journals
    named it (its rollback takes no lock, as then)."""
    head, _, rest = base.partition("@")
    above, _, name = rest.rpartition("@")
    if head != JOURNAL_BASE or not name or above not in ("", ".."):
        return None
    folder = journal.parent.parent if above else journal.parent
    return folder / LOCK_DIR / f"{name}{LOCK_SUFFIX}"


def _write_journal(folder: Path, entries: list[_Entry], lock: Path) -> Path:
    """The journal, renamed into place complete; nothing of it stays when that fails (a full disk).
    Its name carries the artifact's lock file (:func:`_journal_base`), which its rollback takes."""
    staged = make_temp(folder, _journal_base(folder, lock))
    try:
        staged.write_text(json.dumps([entry.to_dict() for entry in entries]))
        fsync_file(staged)
        journal = staged.with_name(staged.name.removesuffix(TEMP_SUFFIX) + "." + JOURNAL_KIND)
        rename_temp(staged, journal)
    except BaseException:
        discard_temp(staged)
        raise
    fsync_dir(folder)
    return journal


def _backup(final: Path) -> str:
    """A second name for ``final``'s bytes: a hard link (instant), or a copy where links fail;
    locked by this process from the moment the name exists, like every temporary."""
    backup = make_temp(final.parent, final.name, "." + BACKUP_KIND)  # reserves a unique name
    discard_temp(backup)
    try:
        link_temp(final, backup)
    except OSError:
        backup = make_temp(final.parent, final.name, "." + BACKUP_KIND)
        try:
            shutil.copy2(final, backup)
            fsync_file(backup)
        except BaseException:
            discard_temp(backup)
            raise
    return backup.name


def _restore(backup: Path, final: Path) -> Swept:
    """``backup`` back under ``final``'s name. rename(2) does nothing when both names are links
    to one file (interrupted before ``final`` was replaced), so that case only drops the backup."""
    try:
        size = backup.lstat().st_size
        if final.exists() and os.path.samefile(backup, final):
            backup.unlink()
        else:
            os.replace(backup, final)
    except FileNotFoundError:  # already put back by an earlier rollback
        return Swept()
    return Swept(1, size)


def rollback(folder: Path, entries: list[_Entry], untouched: Collection[str] = ()) -> Swept:
    """Put the previous set back (idempotent); the caller removes the journal afterwards.
    Returns the temporaries it consumed: backups put back, staged files not renamed in yet.

    ``untouched``: the final names a failed commit knows it never replaced; their backups are
    only dropped, as putting one back would replace a file the commit could not (another user's in
    a folder with the sticky bit) or a file with a copy of itself (a backup copied, not linked).

    A folder at a final name is the user's, never a commit's (it renames files only): it stays,
    and so the file it displaced is not put back. A journal that older versions left at such a
    folder is rolled back all the same, so a sweep never fails on it."""
    removed = Swept()
    for entry in entries:
        final = folder / entry.final
        consumed = [entry.staged]
        if is_folder(final) or entry.final in untouched:
            consumed.append(entry.backup)
        elif entry.backup is not None:
            removed += _restore(folder / entry.backup, final)
        else:
            final.unlink(missing_ok=True)
        for name in consumed:
            size = _remove(folder / name) if name is not None else None
            removed += Swept(1, size) if size is not None else Swept()
    fsync_dir(folder)
    return removed


def _renamed_last(name: str) -> bool:
    """The manifest is renamed last (step 3): it is what a reader trusts the other files by."""
    return name.endswith(MANIFEST_SUFFIX)


def _commit(folder: Path, changes: dict[str, Path | None], lock: Path) -> None:
    """Steps 1 to 5 of the protocol (module docstring) for ``changes``: final name -> staged file;
    ``lock``: the artifact's lock file, which the caller holds."""
    # a folder where the commit puts or removes a file is the user's to move, found before anything
    # is replaced: renaming over it fails halfway, and removing it is not ours
    refuse_folders((folder / name for name in changes), "write the artifact to another folder")
    entries: list[_Entry] = []
    replaced: set[str] = set()
    journal: Path | None = None
    with _Deferral() as deferral:
        try:
            for name, staged in sorted(changes.items(), key=lambda change: _renamed_last(change[0])):
                final = folder / name
                try:
                    backup = _backup(final) if final.is_file() else None
                except PermissionError as exc:  # unreadable to this user: not its to replace
                    raise _refused(final, "replace", exc) from exc
                entries.append(_Entry(name, staged.name if staged else None, backup))
                on_step(f"backup {name}")
            journal = _write_journal(folder, entries, lock)
            on_step("journal")
            for entry in entries:
                _replace(folder, entry)
                replaced.add(entry.final)
                on_step(f"rename {entry.final}")
            fsync_dir(folder)
            if deferral.pending:
                raise _Interrupted  # before the commit point: replace nothing
            journal.unlink()
        except BaseException:
            try:
                # if this fails, the journal stays for the next run's sweep
                rollback(folder, entries, untouched={entry.final for entry in entries} - replaced)
                if journal is not None:
                    journal.unlink(missing_ok=True)
            finally:
                _release(folder, entries, journal)
            raise
        previous = {entry.final: folder / entry.backup for entry in entries if entry.backup is not None}
        try:
            on_step("commit")
            for name, old in previous.items():
                old.unlink(missing_ok=True)
                on_step(f"cleanup {name}")
        finally:
            for old in previous.values():
                old.unlink(missing_ok=True)
            _release(folder, entries, journal)


def _replace(folder: Path, entry: _Entry) -> None:
    """Step 3 for one final name: its staged file renamed onto it, or the final removed."""
    final = folder / entry.final
    try:
        if entry.staged is not None:
            os.replace(folder / entry.staged, final)
        else:
            final.unlink(missing_ok=True)
    except PermissionError as exc:
        raise _refused(final, "replace" if entry.staged is not None else "remove", exc) from exc


def _refused(final: Path, verb: str, exc: PermissionError) -> InvalidInputError:
    """A final file this user may not back up, replace or remove (another user's, in a folder with
    the sticky bit such as /tmp or unreadable to it; an immutable one): the user's to move (exit 2)."""
    return InvalidInputError(
        f"cannot {verb} {final} ({exc.strerror}: another user's file, or an immutable one); "
        "remove it, or write the artifact to another folder"
    )


def _release(folder: Path, entries: list[_Entry], journal: Path | None) -> None:
    """The commit's temporaries are gone (renamed into place, put back or removed): drop their locks."""
    for entry in entries:
        for name in (entry.staged, entry.backup):
            if name is not None:
                release_temp(folder / name)
    if journal is not None:
        release_temp(journal)


class ArtifactWriter:
    """Stage the files of artifact ``name``/``precision`` in ``folder``, then :meth:`commit` them
    together, under :func:`artifact_lock` (in ``lock_folder``, default ``folder``).

    Leaving the ``with`` block without a commit (an error, Ctrl-C) removes what was staged and
    leaves every final file as it was. A write the disk refuses (full, read-only, over quota)
    leaves it as the user's error (exit 2), not a bug's traceback, naming the file the error names
    (the block writes more than the artifact: a build's accuracy gate fills the cache, maybe on
    another disk), else ``folder`` (a write through a file object names none).
    """

    def __init__(self, folder: Path, name: str, precision: str, lock_folder: Path | None = None) -> None:
        self.folder = folder
        self.name = name
        self.precision = precision
        self.lock_folder = lock_folder if lock_folder is not None else folder
        self._changes: dict[str, Path | None] = {}
        self._flushing: dict[str, Callable[[], None]] = {}
        self._whole: str | None = None

    def stage(self, name: str) -> Path:
        """An empty temporary file that becomes ``folder/name`` on commit; write it completely.

        The file it replaces keeps its bytes until the commit but not its page cache: the staged
        file's pages reuse those (``drop_cached_pages``)."""
        self._discard(name)
        drop_cached_pages(self.folder / name)
        staged = make_temp(self.folder, name)
        self._changes[name] = staged
        return staged

    def write(self, name: str, data: bytes | memoryview) -> None:
        """Stage ``name`` with ``data``, bytes in hand. Its flush to disk starts at once, on a thread
        (fsync releases the GIL), so it overlaps what the caller does up to :meth:`commit`, which
        waits for it: a 47 MB engine's fsync takes ~26 ms here."""
        staged = self.stage(name)
        staged.write_bytes(data)
        self._flushing[name] = beside(lambda: fsync_file(staged), "trtforge-fsync", daemon=True)

    def remove(self, name: str) -> None:
        """The commit removes ``folder/name``, if it is there (the rollback restores it)."""
        self._discard(name)
        self._changes[name] = None

    def replace_whole(self, stem: str) -> None:
        """The commit replaces every file of artifact ``stem`` (``manifest.artifact_file_names``):
        those not staged by then are removed, as they describe the engine being replaced (the
        rollback restores them)."""
        self._whole = stem

    def _discard(self, name: str) -> None:
        """Drop what is staged under ``name``. A flush of it that still runs is not waited for: the
        file goes, and the flush's thread (a daemon) holds up nothing, not even the exit. Where the
        file cannot go while the flush holds it open (Windows), it goes once the flush ended; one
        that cannot go at all is a stale temporary for a later sweep, and never hides the error
        that is discarding it."""
        flushing = self._flushing.pop(name, None)
        earlier = self._changes.pop(name, None)
        if earlier is None:
            return
        try:
            discard_temp(earlier)
        except OSError:
            if flushing is not None:
                with contextlib.suppress(Exception):  # its error does not matter: the file goes
                    flushing()
            with contextlib.suppress(OSError):
                discard_temp(earlier)

    def commit(self) -> Swept:
        """Replace the final files with the staged ones, together; returns what the sweep before
        it cleaned up (a dead commit of this artifact since the caller's own sweep: its note is
        the caller's to show)."""
        for name, staged in self._changes.items():
            flushing = self._flushing.get(name)
            if flushing is not None:
                flushing()  # its error is the commit's, raised before anything is replaced
                del self._flushing[name]
            elif staged is not None:
                fsync_file(staged)
        lock = lock_file(self.lock_folder, self.name, self.precision)
        with _holding(lock, wait=True):
            # a dead process's commit of this artifact is rolled back first, under its lock: rolled
            # back after this commit, it would put its old files back over the new set
            swept = sweep(self.folder)
            if self._whole is not None:  # what is there is known only under the lock
                for name in artifact_file_names(self._whole):
                    if name not in self._changes and os.path.lexists(self.folder / name):
                        self._changes[name] = None
            _commit(self.folder, self._changes, lock)
        self._changes = {}
        return swept

    def __enter__(self) -> ArtifactWriter:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for name in list(self._changes):
            self._discard(name)
        full = disk_error(exc, self.folder) if exc is not None else None
        if full is not None:
            raise full from exc


# ---------------------------------------------------------------- the next run


@dataclass(frozen=True)
class Swept:
    """What :func:`sweep` cleaned up: temporaries removed, their bytes, commits rolled back."""

    files: int = 0
    size: int = 0
    rolled_back: int = 0

    def __add__(self, other: Swept) -> Swept:
        return Swept(self.files + other.files, self.size + other.size, self.rolled_back + other.rolled_back)

    @property
    def note(self) -> str | None:
        """The one info line a run prints about it (None when there was nothing to clean)."""
        if not self.files:
            return None
        plural = "y" if self.files == 1 else "ies"
        undone = f"; {self.rolled_back} interrupted commit(s) rolled back" if self.rolled_back else ""
        return f"removed {self.files} stale temporar{plural} of dead runs ({_size(self.size)}){undone}"


def _size(size: int) -> str:
    if size < 1000:
        return f"{size} B"
    scaled, unit = size / 1000, "kB"
    for bigger in ("MB", "GB"):
        if scaled < 1000:
            break
        scaled, unit = scaled / 1000, bigger
    return f"{scaled:.0f} {unit}" if scaled >= 10 else f"{scaled:.1f} {unit}"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs. A zombie does not: it has exited (its locks and files are
    closed) and only waits for its parent to reap it, which a container's PID 1 that is not an
    init may never do; ``os.kill`` succeeds on it all the same. On Windows ``os.kill`` cannot probe
    (it ends the process or signals a console group): every pid counts as alive there, and a
    temporary goes by its age (a commit's backup, whose mtime is the old file's, stays for a
    rollback)."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive unless a zombie
    fields = _proc_stat(pid)
    return fields is None or fields[0] not in _EXITED


#: ``/proc/PID/stat`` states of a process that has exited: zombie, dead
_EXITED = ("Z", "X")


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the process's name, from its state on (Linux); None
    where that cannot be read (no ``/proc``: another system)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _started_at(pid: int) -> float | None:
    """When process ``pid`` started (Linux ``/proc``); None where that cannot be read."""
    fields = _proc_stat(pid)
    if fields is None:
        return None
    try:
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        return int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _stale(path: Path, parsed: TempName, now: float) -> bool:
    """By the pid in its name (no process holds its lock): a dead owner's temporary, or one older
    than the process now holding its pid (pid reuse: its ctime, set when it was created or linked,
    predates that process), or an old one."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    if parsed.pid is None:
        return now - info.st_mtime > STALE_AFTER_S
    if not _alive(parsed.pid):
        return True
    started = _started_at(parsed.pid)
    if started is not None and info.st_ctime < started - _CLOCK_SLACK_S:
        return True
    # a backup is a hard link: its mtime is the old artifact's, so only its owner's death counts
    return parsed.kind != BACKUP_KIND and now - info.st_mtime > STALE_AFTER_S


def _footprint(path: Path) -> int:
    if is_folder(path):
        return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.lstat().st_size


def _remove(path: Path) -> int | None:
    """Remove a temporary (file or folder); its size in bytes, None if another sweep was first or
    it is not this user's to remove (another user's, in a folder with the sticky bit: its owner's
    next run removes it)."""
    try:
        size = _footprint(path)
        if is_folder(path):
            shutil.rmtree(path)
        else:
            path.unlink()
    except (FileNotFoundError, PermissionError):
        return None
    return size


#: a journal lists a few files: far below this
_MAX_JOURNAL_BYTES = 1024 * 1024


def _read_entries(journal: Path) -> list[_Entry]:
    """A journal's entries; none for one that is not ours (a journal is renamed into place complete;
    one nested past Python's recursion limit is not ours either)."""
    try:
        return [_Entry(**item) for item in cache_json(journal.read_bytes(), _MAX_JOURNAL_BYTES)]
    except (OSError, ValueError, TypeError):
        return []


def _recover(journal: Path, parsed: TempName, now: float) -> tuple[Swept, set[str]]:
    """Roll back the interrupted commit a dead process's journal describes; what it rolled back,
    and the names of the commit's temporaries when it is left alone (they are the rollback's to
    consume, not stale files to remove).

    Its artifact's lock first, without waiting, then the journal's own: the order a commit takes
    them, so a commit of that artifact never finds a sweep judging its journal (it would take the
    journal for a live one and commit over it). While another process holds the artifact's lock,
    the journal is left to it: every commit sweeps its folder under its lock first."""
    entries = _read_entries(journal)
    names = {name for entry in entries for name in (entry.staged, entry.backup) if name is not None}
    lock = _journal_lock(journal, parsed.base)
    with _holding(lock, wait=False) if lock is not None else contextlib.nullcontext(True) as free:
        if not free:
            return Swept(), names
        with judging_owner(journal) as owner:
            if owner is Owner.ALIVE or not _stale(journal, parsed, now):
                return Swept(), names
            try:
                removed = rollback(journal.parent, entries)
            except PermissionError as exc:  # the first file it puts back, where that is not ours to touch
                raise InvalidInputError(
                    f"cannot roll back {journal}, a commit a killed run left open ({exc.strerror}: another "
                    f"user's files, or immutable ones); run trtforge into {journal.parent} as that user, or once "
                    "the files can be changed, to roll it back"
                ) from exc
            size = _remove(journal)
    return removed + (Swept(1, size, 1) if size is not None else Swept()), set()


def sweep(folder: Path, depth: int = 1) -> Swept:
    """Clean up after dead runs in ``folder`` (and ``depth - 1`` levels of subfolders): roll back
    their interrupted commits, then remove their temporaries. A live writer's files are kept: one
    whose lock a process holds, and an unlocked one whose pid says so (:func:`_stale`). A stale
    one stays locked by this sweep until it is gone."""
    if depth < 1:
        return Swept()
    now = time.time()
    try:
        # scandir, not iterdir: whether an entry is a folder comes with its name (no stat of each of
        # the digest cache's thousands of entries), and is asked only where a level is left to sweep
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: not entry.name.endswith(JOURNAL_KIND))
    except OSError:  # missing, not a folder, unreadable: nothing of ours to clean
        return Swept()
    swept = Swept()
    kept: set[str] = set()  # the temporaries of commits left to their artifact's writer
    for entry in entries:
        parsed = TempName.parse(entry.name)
        if parsed is None:
            if depth > 1 and entry.is_dir(follow_symlinks=False):
                swept += sweep(Path(entry.path), depth - 1)
            continue
        child = Path(entry.path)
        if parsed.kind == JOURNAL_KIND:  # journals come first
            recovered, left = _recover(child, parsed, now)
            swept, kept = swept + recovered, kept | left
            continue
        if entry.name in kept:
            continue
        with judging_owner(child) as owner:
            if owner is Owner.ALIVE or not _stale(child, parsed, now):
                continue
            size = _remove(child)
            if size is not None:
                swept += Swept(1, size)
    return swept
